"""Weight block types: the traits table, dequantize/quantize rows against gguf-py, the
activation quantizers (q8_0, q8_1, q8_K) against numpy references written here, and every dot
kernel of every CPU path against a float64 dot of the dequantized operands."""
import platform

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGML_QUANT_SIZES
from gguf import quants as gguf_quants

from decollama._native import core

WEIGHT_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_K", "q5_K", "q6_K"]
QUANTIZABLE = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]
K_QUANTS = ["q4_K", "q5_K", "q6_K"]
ACTIVATION_TYPE = {
    "f32": "f32", "f16": "f32", "bf16": "f32",
    "q4_0": "q8_0", "q5_0": "q8_0", "q8_0": "q8_0", "q4_1": "q8_1", "q5_1": "q8_1",
    "q4_K": "q8_K", "q5_K": "q8_K", "q6_K": "q8_K",
}
PATHS = ["scalar", "avx2", "avx512"]
# Byte offsets of the fp16 super-scales inside a K-quant block (d, dmin; q6_K has only d).
K_QUANT_SCALE_OFFSETS = {"q4_K": (0, 2), "q5_K": (0, 2), "q6_K": (208,)}


def ggml_type(name: str) -> GGMLQuantizationType:
    return GGMLQuantizationType[name.upper()]  # "q4_K" -> Q4_K


def block_size(name: str) -> int:
    return GGML_QUANT_SIZES[ggml_type(name)][0]


def block_bytes(name: str) -> int:
    return GGML_QUANT_SIZES[ggml_type(name)][1]


def type_rows() -> dict:
    return {r["name"]: r for r in core.weight_types()}


def path_supported(path: str) -> bool:
    return PATHS.index(path) <= PATHS.index(core.system_info()["best_cpu_path"])


def require_path(path: str) -> None:
    """Skip a path only where this CPU cannot run it. A missing kernel for a supported path is
    a failure: core.vec_dot / core.matmul raise ValueError instead of falling back."""
    if not path_supported(path):
        pytest.skip(f"this CPU lacks {path}")


# ---- random inputs -------------------------------------------------------------------------


def random_floats(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gaussian values with varied per-block magnitude, plus the edge blocks a quantizer must
    get right: all zeros, a constant, and a tie of +-max (the first one must win)."""
    x = rng.standard_normal(n).astype(np.float32)
    magnitudes = np.float32(10.0) ** rng.uniform(-3, 2, -(-n // 32)).astype(np.float32)
    x *= np.repeat(magnitudes, 32)[:n]
    if n >= 128:
        x[0:32] = 0.0
        x[32:64] = np.float32(0.75)
        x[64:96] = rng.uniform(-1, 1, 32).astype(np.float32)
        x[64 + 3], x[64 + 17] = np.float32(2.5), np.float32(-2.5)
    return x


def random_k_quant_row(rng: np.random.Generator, name: str, n: int) -> np.ndarray:
    """Random K-quant blocks (no quantizer here): random quant and scale bytes, small finite
    positive fp16 super-scales."""
    n_blocks = n // 256
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes(name)), dtype=np.uint8)
    for offset in K_QUANT_SCALE_OFFSETS[name]:
        scale = rng.uniform(1e-4, 1e-2, n_blocks).astype(np.float16)
        blocks[:, offset:offset + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(-1)


def gguf_quantize(x: np.ndarray, name: str) -> np.ndarray:
    return np.ascontiguousarray(gguf_quants.quantize(x, ggml_type(name))).view(np.uint8).reshape(-1)


def gguf_dequantize(data: np.ndarray, name: str) -> np.ndarray:
    return np.asarray(gguf_quants.dequantize(data, ggml_type(name)), dtype=np.float32).reshape(-1)


def random_weight_row(rng: np.random.Generator, name: str, n: int) -> np.ndarray:
    if name in K_QUANTS:
        return random_k_quant_row(rng, name, n)
    return gguf_quantize(random_floats(rng, n), name)


# ---- numpy references of the activation quantizers ------------------------------------------


def _round_half_away(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float64)  # exact: floor(|v| + 0.5) cannot round up in float64
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _symmetric_q8(x: np.ndarray):
    blocks = x.reshape(-1, 32).astype(np.float32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    inverse = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    q = _round_half_away(blocks * inverse).astype(np.int8)
    return d, q


def ref_quantize_q8_0(x: np.ndarray) -> np.ndarray:
    d, q = _symmetric_q8(x)
    return np.concatenate([d.astype(np.float16).view(np.uint8), q.view(np.uint8)], axis=1).reshape(-1)


def ref_quantize_q8_1(x: np.ndarray) -> np.ndarray:
    d, q = _symmetric_q8(x)
    s = (q.astype(np.int32).sum(axis=1, keepdims=True).astype(np.float32) * d).astype(np.float16)
    return np.concatenate([d.astype(np.float16).view(np.uint8), s.view(np.uint8), q.view(np.uint8)],
                          axis=1).reshape(-1)


def ref_quantize_q8_K(x: np.ndarray) -> np.ndarray:
    blocks = x.reshape(-1, 256).astype(np.float32)
    n_blocks = blocks.shape[0]
    first_max = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=1)[:, None], axis=1)
    zero = first_max == 0
    inverse = np.divide(np.float32(-127), first_max, out=np.zeros_like(first_max), where=~zero)
    q = np.minimum(np.rint(inverse * blocks), 127).astype(np.int8)  # rint: half to even
    bsums = q.reshape(n_blocks, 16, 16).astype(np.int16).sum(axis=2, dtype=np.int16)
    d = np.divide(np.float32(1), inverse, out=np.zeros_like(inverse), where=~zero).astype(np.float32)
    return np.concatenate([d.view(np.uint8), q.view(np.uint8), bsums.view(np.uint8)], axis=1).reshape(-1)


def ref_dequantize_activation(data: np.ndarray, name: str) -> np.ndarray:
    """float64 values of a q8_0 / q8_1 / q8_K row."""
    if name == "q8_K":
        blocks = data.reshape(-1, 292)
        d = blocks[:, :4].copy().view(np.float32).astype(np.float64)
        return (d * blocks[:, 4:260].view(np.int8)).reshape(-1)
    header = {"q8_0": 2, "q8_1": 4}[name]
    blocks = data.reshape(-1, header + 32)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float64)
    return (d * blocks[:, header:].view(np.int8)).reshape(-1)


REF_ACTIVATION_QUANTIZERS = {"q8_0": ref_quantize_q8_0, "q8_1": ref_quantize_q8_1, "q8_K": ref_quantize_q8_K}


def activation_reference(x: np.ndarray, weight_type: str) -> np.ndarray:
    """float64 activation values the dot of weight_type actually sees."""
    act = ACTIVATION_TYPE[weight_type]
    if act == "f32":
        return x.astype(np.float64)
    return ref_dequantize_activation(REF_ACTIVATION_QUANTIZERS[act](x), act)


def reference_matmul(w: np.ndarray, weight_type: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """y[t, o] = float64 dot of dequantized weight row o with the dequantized activation row t
    (x: [n_tokens, n_in]), and sum |products| per entry (the scale of its rounding error).

    q4_1/q5_1 dots take the weights' min term from the activation's stored block sum
    s = fp16(d * sum(q)), whose fp16 rounding is part of the Q8_1 format (ggml's too); the
    reference uses the stored s as well, or it would measure that rounding, not the kernel."""
    n_tokens, n_in = x.shape
    w64 = gguf_dequantize(w, weight_type).astype(np.float64).reshape(-1, n_in)
    a64 = activation_reference(x.reshape(-1), weight_type).reshape(n_tokens, n_in)
    y = a64 @ w64.T
    if ACTIVATION_TYPE[weight_type] == "q8_1":
        act = ref_quantize_q8_1(x.reshape(-1)).reshape(n_tokens, -1, 36)
        d_a = act[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float64)
        s_a = act[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float64)
        sum_q = act[..., 4:].view(np.int8).astype(np.int64).sum(axis=-1)
        blocks = w.reshape(w64.shape[0], -1, block_bytes(weight_type))
        m_w = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float64)
        y += (s_a - d_a * sum_q) @ m_w.T
    return y, np.abs(a64) @ np.abs(w64).T


# ---- the table ----------------------------------------------------------------------------


def table_name(qt: GGMLQuantizationType) -> str:
    """gguf-py's enum name in the table's spelling: "Q4_K" -> "q4_K", "BF16" -> "bf16"."""
    return qt.name[:-1].lower() + "K" if qt.name.endswith("_K") else qt.name.lower()


def test_table_geometry_matches_gguf():
    rows = type_rows()
    for qt, (size, nbytes) in GGML_QUANT_SIZES.items():
        row = rows.get(table_name(qt))
        if row is None:
            continue  # a type gguf-py knows but this table does not (newer formats)
        if qt == GGMLQuantizationType.Q8_1:
            # gguf-py keeps ggml's old q8_1 (float d and s: 40 bytes); ggml's block is now two
            # fp16 (36 bytes). It is an activation format only: no GGUF stores it.
            assert (row["block_size"], row["block_bytes"]) == (32, 36)
            continue
        assert row["type_id"] == int(qt), qt.name
        assert (row["block_size"], row["block_bytes"]) == (size, nbytes), qt.name


def test_table_kernels_and_activation_types():
    rows = type_rows()
    for name in WEIGHT_TYPES:
        assert rows[name]["has_kernels"], name
        assert rows[name]["can_dequantize"], name
        assert rows[name]["vec_dot_type"] == ACTIVATION_TYPE[name], name
        assert rows[name]["can_quantize"] == (name in QUANTIZABLE), name
    for name in ("q8_1", "q8_K"):
        assert not rows[name]["has_kernels"] and rows[name]["vec_dot_type"] is None
        assert rows[name]["can_quantize"] and rows[name]["can_dequantize"]
    assert not rows["q2_K"]["has_kernels"] and not rows["q2_K"]["can_dequantize"]


def test_vec_dot_paths_reported_only_for_the_weight_types():
    rows = type_rows()
    # x86-64 builds carry every SIMD kernel whether or not this CPU can run it.
    expected = PATHS if platform.machine().lower() in ("x86_64", "amd64") else ["scalar"]
    for name in WEIGHT_TYPES:
        assert rows[name]["vec_dot_paths"] == expected, name
    for name in ("q8_1", "q8_K"):
        assert rows[name]["vec_dot_paths"] == [], name


# ---- dequantize / quantize against gguf-py ------------------------------------------------


@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_dequantize_row_matches_gguf(name):
    rng = np.random.default_rng(1)
    n = 256 * 12
    data = random_weight_row(rng, name, n)
    expected = gguf_dequantize(data, name)
    got = core.dequantize_row(name, data, n)
    assert got.dtype == np.float32 and got.shape == (n,)
    assert np.abs(expected).max() > 0
    # Same float operations in the same order: bit-exact (well within 1e-6 * max|x|).
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", QUANTIZABLE)
def test_quantize_row_matches_gguf_bit_exactly(name):
    rng = np.random.default_rng(2)
    x = random_floats(rng, 32 * 97)
    got = core.quantize_row(name, x)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, gguf_quantize(x, name))


@pytest.mark.parametrize("name", QUANTIZABLE)
def test_quantize_dequantize_round_trip_error_is_bounded(name):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(32 * 64).astype(np.float32)
    back = core.dequantize_row(name, core.quantize_row(name, x), x.size)
    bits = {"q4_0": 4, "q4_1": 4, "q5_0": 5, "q5_1": 5, "q8_0": 8, "f16": 11, "bf16": 8, "f32": 24}[name]
    block_max = np.abs(x.reshape(-1, 32)).max(axis=1).repeat(32)
    # Half a step, or a full one where the top code clips; 5% for the fp16-rounded scale.
    assert np.all(np.abs(back - x) <= block_max * 2.0 ** (1 - bits) * 1.05 + 1e-7)


def test_bf16_and_f16_special_values():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, 65504.0, 70000.0, 3.3895e38], dtype=np.float32)
    for name in ("f16", "bf16"):
        with np.errstate(over="ignore", invalid="ignore"):
            expected = gguf_quantize(x, name)
        np.testing.assert_array_equal(core.quantize_row(name, x), expected)


# ---- activation quantizers against the numpy references ------------------------------------


@pytest.mark.parametrize("name", ["q8_0", "q8_1", "q8_K"])
def test_activation_quantizer_matches_numpy_reference(name):
    rng = np.random.default_rng(4)
    x = random_floats(rng, 256 * 9)
    x[256:512] = 0.0  # a whole zero q8_K block
    x[512 + 7] = -np.abs(x[512:768]).max() * 2  # a negative extreme flips the q8_K scale's sign
    got = core.quantize_row(name, x)
    np.testing.assert_array_equal(got, REF_ACTIVATION_QUANTIZERS[name](x))
    np.testing.assert_array_equal(core.dequantize_row(name, got, x.size),
                                  ref_dequantize_activation(got, name).astype(np.float32))


def test_q8_0_activation_reference_agrees_with_gguf():
    x = random_floats(np.random.default_rng(5), 32 * 40)
    np.testing.assert_array_equal(ref_quantize_q8_0(x), gguf_quantize(x, "q8_0"))


def test_q8_K_rounds_half_to_even():
    # The first extreme, -127, gives the inverse scale -127 / -127 = 1: q = rint(x), halves to even.
    x = np.zeros(256, dtype=np.float32)
    x[0] = -127.0
    x[1:6] = [0.5, 1.5, 2.5, -0.5, 127.0]
    block = core.quantize_row("q8_K", x)
    assert block[:4].view(np.float32)[0] == 1.0
    assert list(block[4:10].view(np.int8)) == [-127, 0, 2, 2, 0, 127]


# ---- dot kernels, every type x every path ------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_vec_dot_matches_float64_reference(name, path):
    require_path(path)
    rng = np.random.default_rng(6)
    # Odd block counts (and an odd length for the float types) leave tails for SIMD loops.
    n = {1: 1003, 32: 32 * 37, 256: 256 * 5}[block_size(name)]
    for trial in range(4):
        w = random_weight_row(rng, name, n)
        x = rng.standard_normal(n).astype(np.float32) * np.float32(10.0 ** rng.uniform(-2, 2))
        got = core.vec_dot(name, w, x, path)
        exact, magnitude = (float(v[0, 0]) for v in reference_matmul(w, name, x[None, :]))
        assert abs(got - exact) <= 1e-3 * abs(exact) + 1e-5 * magnitude, (trial, got, exact)
        # Against the unquantized activation: only the activation quantization error remains.
        w64 = gguf_dequantize(w, name).astype(np.float64)
        float_dot = float(np.dot(w64, x.astype(np.float64)))
        assert abs(got - float_dot) <= 2e-2 * float(np.abs(w64 * x).sum()), (trial, got, float_dot)


@pytest.mark.parametrize("path", ["avx2", "avx512"])
@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_simd_dot_agrees_with_scalar(name, path):
    """Same integer math per block: only the float summation order may differ."""
    require_path(path)
    rng = np.random.default_rng(7)
    n = {1: 515, 32: 32 * 9, 256: 256 * 3}[block_size(name)]
    for _ in range(8):
        w = random_weight_row(rng, name, n)
        x = rng.standard_normal(n).astype(np.float32)
        scalar = core.vec_dot(name, w, x, "scalar")
        simd = core.vec_dot(name, w, x, path)
        magnitude = float(np.abs(gguf_dequantize(w, name).astype(np.float64) * x).sum())
        assert abs(simd - scalar) <= 1e-5 * magnitude


# ---- bad input -----------------------------------------------------------------------------


def test_bad_arguments_raise_value_error():
    x = np.zeros(64, dtype=np.float32)
    q = core.quantize_row("q8_0", x)
    with pytest.raises(ValueError, match="unknown weight type"):
        core.dequantize_row("q9_9", q, 64)
    with pytest.raises(ValueError, match="bytes"):
        core.dequantize_row("q8_0", q[:-1], 64)
    with pytest.raises(ValueError, match="multiple of the block size"):
        core.dequantize_row("q8_0", q, 63)
    with pytest.raises(ValueError, match="multiple of the block size"):
        core.quantize_row("q4_0", x[:40])
    with pytest.raises(ValueError, match="no quantizer"):
        core.quantize_row("q4_K", np.zeros(256, dtype=np.float32))
    with pytest.raises(ValueError, match="cannot be dequantized"):
        core.dequantize_row("q2_K", np.zeros(84, dtype=np.uint8), 256)
    with pytest.raises(ValueError, match="unknown CPU kernel path"):
        core.vec_dot("q8_0", q, x, "avx3")
    with pytest.raises(ValueError, match="bytes"):
        core.vec_dot("q8_0", q, x[:32], "scalar")
    with pytest.raises(ValueError, match="no dot product kernels"):
        core.vec_dot("q8_K", np.zeros(292, dtype=np.uint8), np.zeros(256, dtype=np.float32), "scalar")
    if not path_supported("avx512"):
        with pytest.raises(ValueError, match="does not support"):
            core.vec_dot("q8_0", q, x, "avx512")
