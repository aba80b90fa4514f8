"""GPU weight matrices (cuda/gpu_weight_blocks.h, cuda/gpu_matmul.cu).

Host part (every build, CI): the kernels' own block dequantizers, run on the CPU through
core.gpu_host_dequantize, equal the CPU dequantizers bit for bit and gguf-py's, on quantized rows
and on random block bytes (every code pattern, negative / subnormal / zero fp16 scales); the tensor-core
path's per-token power-of-two activation scale (core.gpu_host_activation_scales: the same DL_HD
code) keeps every row's fp16 values <= 2^14 and is 1 on rows already below.

GPU part (skips without a GPU): core.gpu_matmul against numpy on the CPU-dequantized weights for
the decode kernel (fp32, n_tokens <= core.gpu_decode_max_tokens()) and the tensor-core one (fp16
operands, fp32 accumulation), on shapes with edges in every dimension, and on activations past
fp16's range (1e5 - 1e6, the scaled path); core.gpu_embed against the
CPU-dequantized rows."""
import numpy as np
import pytest

from decollama._native import core
from gpu_support import gpu_available, needs_gpu
from test_weight_types import block_bytes, block_size, gguf_dequantize, random_floats, random_weight_row

GPU_TYPES = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_K", "q5_K", "q6_K"]
PLAIN = ["f32", "f16", "bf16"]
# Byte offsets of the fp16 fields (scales, mins) inside one block.
HALF_FIELDS = {
    "q4_0": (0,), "q4_1": (0, 2), "q5_0": (0,), "q5_1": (0, 2), "q8_0": (0,),
    "q4_K": (0, 2), "q5_K": (0, 2), "q6_K": (208,),
}


def random_halves(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite fp16 values of both signs over the whole range: normals, subnormals and zeros."""
    bits = rng.integers(0, 0x7C00, size=n, dtype=np.uint16)  # exponent < 31: finite
    bits |= rng.integers(0, 2, size=n, dtype=np.uint16) << 15
    bits[rng.random(n) < 0.05] = 0
    return bits.view(np.float16)


def random_block_bytes(rng: np.random.Generator, name: str, n: int, small_scales: bool = False) -> np.ndarray:
    """A row of n values as random block bytes: every quant and packed-scale bit pattern; the fp16
    fields finite (small_scales: modest positive ones, so values stay well inside fp16 range)."""
    n_blocks = n // block_size(name)
    blocks = rng.integers(0, 256, size=(n_blocks, block_bytes(name)), dtype=np.uint8)
    for offset in HALF_FIELDS[name]:
        if small_scales:
            h = rng.uniform(1e-4, 1e-2, n_blocks).astype(np.float16)
        else:
            h = random_halves(rng, n_blocks)
        blocks[:, offset:offset + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    return blocks.reshape(-1)


def cpu_dequantize(name: str, data: np.ndarray, n: int) -> np.ndarray:
    return core.dequantize_row(name, data, n)


def bits(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float32).view(np.uint32)


# ---- host: the DL_HD dequantizers (every build) ---------------------------------------------


def test_gpu_weight_types_are_every_cpu_kernel_type():
    assert sorted(core.gpu_weight_types()) == sorted(GPU_TYPES)
    cpu = {r["name"] for r in core.weight_types() if r["has_kernels"]}
    assert set(GPU_TYPES) == cpu


@pytest.mark.parametrize("name", GPU_TYPES)
def test_host_dequantize_equals_cpu_and_gguf_on_quantized_rows(name):
    rng = np.random.default_rng(11)
    n = 256 * 8
    for _ in range(3):
        data = random_weight_row(rng, name, n)  # gguf-py quantizer, random K-quant blocks
        got = core.gpu_host_dequantize(name, data, n)
        assert got.dtype == np.float32 and got.shape == (n,)
        assert np.abs(got).max() > 0
        np.testing.assert_array_equal(bits(got), bits(cpu_dequantize(name, data, n)))
        np.testing.assert_array_equal(got, gguf_dequantize(data, name))


@pytest.mark.parametrize("name", [t for t in GPU_TYPES if t not in PLAIN])
def test_host_dequantize_equals_cpu_on_random_block_bytes(name):
    rng = np.random.default_rng(12)
    n = 256 * 64
    data = random_block_bytes(rng, name, n)
    got = core.gpu_host_dequantize(name, data, n)
    expected = cpu_dequantize(name, data, n)
    np.testing.assert_array_equal(bits(got), bits(expected))
    # gguf-py agrees wherever it is exact (all-finite inputs: every value here).
    np.testing.assert_array_equal(got, gguf_dequantize(data, name))


@pytest.mark.parametrize("name", ["f16", "bf16"])
def test_host_dequantize_every_16_bit_pattern(name):
    """All 65536 encodings, NaN and infinities included, convert to the CPU's exact bits."""
    data = np.arange(65536, dtype=np.uint16).view(np.uint8)
    got = core.gpu_host_dequantize(name, data, 65536)
    np.testing.assert_array_equal(bits(got), bits(cpu_dequantize(name, data, 65536)))


@pytest.mark.parametrize("n", [1, 5, 31, 33, 37, 100])
@pytest.mark.parametrize("name", PLAIN)
def test_host_dequantize_plain_rows_of_any_length(name, n):
    rng = np.random.default_rng(n)
    data = core.quantize_row(name, rng.standard_normal(n).astype(np.float32))
    got = core.gpu_host_dequantize(name, data, n)
    np.testing.assert_array_equal(bits(got), bits(cpu_dequantize(name, data, n)))


def test_host_dequantize_f32_is_a_bit_copy():
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 2**32, size=96, dtype=np.uint32)
    got = core.gpu_host_dequantize("f32", raw.view(np.uint8), 96)
    np.testing.assert_array_equal(bits(got), raw)


def test_host_dequantize_bad_arguments():
    with pytest.raises(ValueError, match="q2_K"):
        core.gpu_host_dequantize("q2_K", np.zeros(84, np.uint8), 256)
    with pytest.raises(ValueError, match="unknown"):
        core.gpu_host_dequantize("q9_9", np.zeros(18, np.uint8), 32)
    with pytest.raises(ValueError):
        core.gpu_host_dequantize("q4_0", np.zeros(18, np.uint8), 33)  # not whole blocks
    with pytest.raises(ValueError):
        core.gpu_host_dequantize("q4_K", np.zeros(144, np.uint8), 128)
    with pytest.raises(ValueError):
        core.gpu_host_dequantize("q4_0", np.zeros(17, np.uint8), 32)  # wrong byte count
    with pytest.raises(ValueError):
        core.gpu_host_dequantize("f16", np.zeros(6, np.uint8), 4)


# ---- host: the per-token activation scale of the tensor-core path (every build) -------------

BOUND = 2.0**14


def expected_scale(m: float) -> float:
    """2^-k for the smallest k >= 0 with m * 2^-k <= 2^14 (1 for NaN / inf / small m), exactly."""
    if not np.isfinite(m) or m <= BOUND:
        return 1.0
    f, e = np.frexp(np.float64(m))  # m = f * 2^e, 0.5 <= f < 1
    ceil_log2 = int(e) - 1 if f == 0.5 else int(e)
    return 2.0 ** -(ceil_log2 - 14)


def check_scales(x: np.ndarray):
    m, s, inv = core.gpu_host_activation_scales(x)
    assert m.dtype == s.dtype == inv.dtype == np.float32 and m.shape == s.shape == inv.shape == (x.shape[0],)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(m, np.nanmax(np.where(np.isnan(x), 0, np.abs(x)), axis=1, initial=0))
    m64, s64 = m.astype(np.float64), s.astype(np.float64)
    frac, _ = np.frexp(s64)
    assert np.all(frac == 0.5) and np.all(s64 <= 1.0), "s is a power of two <= 1"
    np.testing.assert_array_equal(s64 * inv.astype(np.float64), 1.0)  # 1 / s exact
    finite = np.isfinite(m64)
    assert np.all(m64[finite] * s64[finite] <= BOUND)
    assert np.all(s64[~finite] == 1.0) and np.all(s64[m64 <= BOUND] == 1.0)
    big = finite & (m64 > BOUND)
    assert np.all(m64[big] * s64[big] > BOUND / 2), "the smallest k"
    np.testing.assert_array_equal(s64, [expected_scale(v) for v in m64])
    rows_ok = np.isfinite(x).all(axis=1)
    scaled = (x[rows_ok] * s[rows_ok, None]).astype(np.float16)
    assert np.all(np.isfinite(scaled)) and np.abs(scaled.astype(np.float64)).max(initial=0) <= BOUND
    return m, s, inv


def test_activation_scale_representative_values():
    f32 = np.finfo(np.float32)
    denormal = np.float32(1e-40)
    values = [0.0, 1e-30, float(denormal), 1.0, 2.0**14, 2.0**14 * (1 + 2.0**-23), 2.0**15, 65504.0, 1e5,
              1e6, 1e9, -1e5, -1e9, float(f32.max), -float(f32.max)]
    x = np.array([[v, -0.5 * v, 0.25, -3.0e-3] for v in values], dtype=np.float32)
    m, s, _ = check_scales(x)
    expected = {0.0: 1, 1e-30: 1, 1.0: 1, 2.0**14: 1, 2.0**15: 0.5, 65504.0: 0.25, 1e5: 2.0**-3, 1e9: 2.0**-16}
    for v, e in expected.items():
        assert s[values.index(v)] == e, (v, s[values.index(v)])
    assert s[values.index(2.0**14 * (1 + 2.0**-23))] == 0.5  # just above the bound
    assert s[values.index(float(denormal))] == 1 and m[values.index(-1e5)] == np.float32(1e5)
    assert s[values.index(-1e9)] == 2.0**-16 and s[values.index(float(f32.max))] == 2.0**-114


def test_activation_scale_random_magnitudes():
    rng = np.random.default_rng(21)
    mags = 10.0 ** rng.uniform(-45, 38.5, size=(2000, 1))
    x = np.clip(rng.standard_normal((2000, 16)) * mags, -3e38, 3e38).astype(np.float32)
    x[:, 3] = np.float32(rng.choice([65504, 16384, 32768, 1e5], size=2000))  # exact powers / fp16 max
    check_scales(x)


def test_activation_scale_non_finite_rows():
    nan, inf = np.float32(np.nan), np.float32(np.inf)
    x = np.array([[nan, 1e5, 1.0, 2.0],       # NaN skipped: scaled for 1e5, NaN stays NaN
                  [nan, nan, nan, nan],      # m = 0, s = 1
                  [inf, 1e5, 1.0, 2.0],      # inf: s = 1, the row as it is
                  [-inf, 3.0, nan, 1.0],
                  [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    m, s, inv = check_scales(x)
    np.testing.assert_array_equal(m, [1e5, 0, inf, inf, 0])
    np.testing.assert_array_equal(s, [2.0**-3, 1, 1, 1, 1])
    np.testing.assert_array_equal(inv, [8, 1, 1, 1, 1])
    assert core.gpu_activation_scale_bound() == BOUND


def test_gpu_calls_raise_runtime_error_without_a_gpu():
    if gpu_available():
        pytest.skip("a GPU is available")
    w = np.zeros(18, np.uint8)
    with pytest.raises(RuntimeError, match="CUDA|GPU"):
        core.gpu_matmul("q4_0", w, 32, 1, np.zeros((1, 32), np.float32))
    with pytest.raises(RuntimeError, match="CUDA|GPU"):
        core.gpu_embed("q4_0", w, 32, np.zeros(1, np.int32))


# ---- GPU: kernels against numpy ------------------------------------------------------------


N_TOKENS = [1, 3, 8, 9, 33, 130]


def weights(name: str, n_in: int, n_out: int, seed: int):
    """(bytes, dequantized [n_out, n_in] float32) of a random matrix of moderate values."""
    rng = np.random.default_rng(seed)
    n = n_in * n_out
    if name in PLAIN:
        data = core.quantize_row(name, (rng.standard_normal(n) * 0.5).astype(np.float32))
    elif name in HALF_FIELDS and name.endswith("K"):
        data = random_block_bytes(rng, name, n, small_scales=True)
    else:
        data = core.quantize_row(name, random_floats(rng, n))
    return data, cpu_dequantize(name, data, n).reshape(n_out, n_in)


def check_matmul(name, n_in, n_out, n_tokens, seed, misalign=False):
    data, w = weights(name, n_in, n_out, seed)
    x = np.random.default_rng(seed + 1).standard_normal((n_tokens, n_in)).astype(np.float32)
    y = core.gpu_matmul(name, data, n_in, n_out, x, misalign=misalign)
    assert y.dtype == np.float32 and y.shape == (n_tokens, n_out)
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    exact = x64 @ w64.T
    magnitude = np.abs(x64) @ np.abs(w64).T + 1e-30  # error scale of each entry
    if n_tokens <= core.gpu_decode_max_tokens():
        # fp32 products and sums: only the summation order differs.
        err = np.abs(y - exact) / magnitude
        assert err.max() <= 1e-4, (name, err.max())
    else:
        # fp16 operands on the tensor cores, fp32 accumulation: tight against the fp16-rounded
        # operands, loose against the exact product.
        rounded = x.astype(np.float16).astype(np.float64) @ w.astype(np.float16).astype(np.float64).T
        err = np.abs(y - rounded) / magnitude
        assert err.max() <= 1e-4, (name, "vs fp16-rounded", err.max())
        err = np.abs(y - exact) / magnitude
        assert err.max() <= 1e-2, (name, "vs exact", err.max())


def shapes(name: str):
    """(n_in, n_out): n_out off every tile multiple; n_in with a partial last k step where blocks
    allow (32-value types: an odd count of sub-blocks), and for plain rows a length that is no
    multiple of 32 (nor of 4: unaligned activation rows)."""
    if name in PLAIN:
        return [(416, 67), (100, 5), (37, 70)]
    if block_size(name) == 32:
        return [(416, 67), (32, 3)]
    return [(768, 67), (256, 130)]


@needs_gpu
@pytest.mark.parametrize("n_tokens", N_TOKENS)
@pytest.mark.parametrize("name", GPU_TYPES)
def test_gpu_matmul_matches_numpy(name, n_tokens):
    for i, (n_in, n_out) in enumerate(shapes(name)):
        check_matmul(name, n_in, n_out, n_tokens, seed=100 * i + n_tokens)


@needs_gpu
@pytest.mark.parametrize("n_tokens", [1, 33])
@pytest.mark.parametrize("name", [t for t in GPU_TYPES if t not in PLAIN])
def test_gpu_matmul_unaligned_blocks(name, n_tokens):
    """Weights one byte past an aligned address: the kernels must use byte loads for blocks."""
    check_matmul(name, 256 * 2, 19, n_tokens, seed=7, misalign=True)


@needs_gpu
@pytest.mark.parametrize("name", ["f16", "q8_0", "q4_K", "q6_K"])
def test_gpu_matmul_larger(name):
    """Several tiles in every dimension and a long k loop."""
    for n_tokens in (4, 200):
        check_matmul(name, 2048, 300, n_tokens, seed=5)


@needs_gpu
def test_gpu_decode_prefill_boundary():
    """The last decode size and the first prefill size agree within the fp16 error."""
    m = core.gpu_decode_max_tokens()
    assert m >= 1
    data, _ = weights("q4_0", 512, 40, 3)
    x = np.random.default_rng(4).standard_normal((m + 1, 512)).astype(np.float32)
    decode = core.gpu_matmul("q4_0", data, 512, 40, x[:m])
    prefill = core.gpu_matmul("q4_0", data, 512, 40, x)
    scale = np.abs(decode).max()
    assert np.abs(prefill[:m] - decode).max() <= 1e-2 * scale


@needs_gpu
def test_gpu_matmul_empty_and_bad_arguments():
    data, _ = weights("q8_0", 64, 3, 1)
    assert core.gpu_matmul("q8_0", data, 64, 3, np.zeros((0, 64), np.float32)).shape == (0, 3)
    assert core.gpu_matmul("q8_0", np.zeros(0, np.uint8), 64, 0, np.zeros((2, 64), np.float32)).shape == (2, 0)
    with pytest.raises(ValueError, match="q2_K"):
        core.gpu_matmul("q2_K", np.zeros(84, np.uint8), 256, 1, np.zeros((1, 256), np.float32))
    with pytest.raises(ValueError):
        core.gpu_matmul("q8_0", data, 64, 4, np.zeros((1, 64), np.float32))  # bytes for 3 rows
    with pytest.raises(ValueError):
        core.gpu_matmul("q8_0", data, 64, 3, np.zeros((1, 32), np.float32))  # x columns
    with pytest.raises(ValueError):
        core.gpu_matmul("f32", np.zeros(128, np.uint8), 32, 1, np.zeros((1, 32), np.float32), misalign=True)


@needs_gpu
@pytest.mark.parametrize("name", GPU_TYPES)
def test_gpu_embed_matches_cpu_rows(name):
    n_in = 37 if name in PLAIN else 2 * block_size(name) + (32 if block_size(name) == 32 else 0)
    n_rows = 50
    data, table = weights(name, n_in, n_rows, 9)
    tokens = np.array([0, 49, 7, 7, 23, 1, 49], dtype=np.int32)
    for scale in (1.0, 0.37):
        x = core.gpu_embed(name, data, n_in, tokens, scale)
        assert x.dtype == np.float32 and x.shape == (len(tokens), n_in)
        expected = np.float32(scale) * table[tokens]
        # Bit-exact but for a fused multiply-add in the K-quants' scale * q - offset.
        np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
        if name in PLAIN or name in ("q4_0", "q5_0", "q8_0", "q6_K"):
            np.testing.assert_array_equal(x, expected)


@needs_gpu
def test_gpu_embed_bad_tokens():
    data, _ = weights("q4_0", 32, 4, 1)
    with pytest.raises(ValueError):
        core.gpu_embed("q4_0", data, 32, np.array([4], np.int32))
    with pytest.raises(ValueError):
        core.gpu_embed("q4_0", data, 32, np.array([-1], np.int32))
    assert core.gpu_embed("q4_0", data, 32, np.zeros(0, np.int32)).shape == (0, 32)


@needs_gpu
@pytest.mark.parametrize("name", ["f16", "q8_0", "q4_K", "q6_K"])
def test_gpu_prefill_activations_beyond_fp16(name):
    """Rows of 1e5 - 1e6 (inf in fp16 unscaled) through the tensor-core path: finite, and as close to
    numpy as the fp16 rounding of the scaled operands allows; small rows in the same tiles are
    unaffected; a row holding inf gives non-finite outputs in that row only."""
    n_in, n_out, n_tokens = 512, 67, 75  # two token tiles, a partial output tile
    assert n_tokens > core.gpu_decode_max_tokens()
    data, w = weights(name, n_in, n_out, 31)
    rng = np.random.default_rng(32)
    x = rng.standard_normal((n_tokens, n_in)).astype(np.float32)
    big = [0, 5, 63, 64, 70]
    x[big] *= np.float32(rng.uniform(1e5, 1e6, size=(len(big), 1)) / 3)  # |x| up to ~5e6
    x[10, 17] = 7.5e5  # one spike in an otherwise small row
    x[66] = rng.uniform(-1e6, 1e6, n_in)
    with np.errstate(over="ignore"):
        assert not np.isfinite(x.astype(np.float16)).all()  # unscaled fp16 would overflow
    y = core.gpu_matmul(name, data, n_in, n_out, x)
    assert np.isfinite(y).all()

    _, s, inv = core.gpu_host_activation_scales(x)
    assert (s[big] < 1).all() and s[10] < 1 and s[66] < 1 and s[1] == 1
    w64, x64 = w.astype(np.float64), x.astype(np.float64)
    magnitude = np.abs(x64) @ np.abs(w64).T + 1e-30
    xs = (x * s[:, None]).astype(np.float16).astype(np.float64)
    rounded = (xs @ w.astype(np.float16).astype(np.float64).T) * inv[:, None].astype(np.float64)
    err = np.abs(y - rounded) / magnitude
    assert err.max() <= 1e-4, ("vs fp16-rounded scaled operands", err.max())
    err = np.abs(y - x64 @ w64.T) / magnitude
    assert err.max() <= 1e-2, ("vs exact", err.max())

    x[40, 3] = np.inf
    y2 = core.gpu_matmul(name, data, n_in, n_out, x)
    assert not np.isfinite(y2[40]).any()
    rest = np.arange(n_tokens) != 40
    np.testing.assert_array_equal(y2[rest], y[rest])
