"""Edge cases of the AVX2 / AVX-512 dot kernels (cpp/quant/dot_*avx*.cpp) against the scalar
kernel and an exact float64 reference: one-block rows, float rows of every tail length,
extreme codes, extreme fp16 scales, extreme activations, and rows that end right at an
unreadable page (a kernel reading past its row crashes the test)."""
import ctypes
import mmap
import sys

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGML_QUANT_SIZES
from gguf import quants as gguf_quants

from decollama._native import core

WEIGHT_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_K", "q5_K", "q6_K"]
SIMD_PATHS = ["avx2", "avx512"]
PATHS = ["scalar"] + SIMD_PATHS
ACTIVATION = {r["name"]: r["vec_dot_type"] for r in core.weight_types() if r["has_kernels"]}
# Byte offsets of each block's fp16 fields (d, and m / dmin where the type has one).
HALF_FIELDS = {
    "q8_0": (0,), "q4_0": (0,), "q5_0": (0,), "q4_1": (0, 2), "q5_1": (0, 2),
    "q4_K": (0, 2), "q5_K": (0, 2), "q6_K": (208,),
}


def geometry(name):
    size, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType[name.upper()]]
    return size, nbytes


def runnable(path):
    """The CPU supports the path and the table has its kernels."""
    if PATHS.index(path) > PATHS.index(core.system_info()["best_cpu_path"]):
        return False
    return any(path in r["vec_dot_paths"] for r in core.weight_types())


RUNNABLE_SIMD_PATHS = [p for p in SIMD_PATHS if runnable(p)]


def skip_unless_runnable(path):
    if not runnable(path):
        pytest.skip(f"no runnable {path} kernels (CPU or table)")


def dequantize(name, data, n):
    return np.asarray(gguf_quants.dequantize(data, GGMLQuantizationType[name.upper()]),
                      dtype=np.float64).reshape(-1)[:n]


def reference(name, w, x):
    """(exact dot of what the kernel sees, sum of |terms|). For q4_1 / q5_1 the kernel uses the
    activation's fp16 s = d * sum(q) for the weights' min, not the sum of dequantized values."""
    n = x.size
    w64 = dequantize(name, w, n)
    act = ACTIVATION[name]
    if act == "f32":
        a64 = x.astype(np.float64)
        return float(np.dot(w64, a64)), float(np.abs(w64 * a64).sum())
    q = core.quantize_row(act, x)
    a64 = core.dequantize_row(act, q, n).astype(np.float64)
    exact, magnitude = float(np.dot(w64, a64)), float(np.abs(w64 * a64).sum())
    if act == "q8_1":
        _, nbytes = geometry(name)
        m = w.reshape(-1, nbytes)[:, 2:4].copy().view(np.float16).astype(np.float64).ravel()
        s = q.reshape(-1, 36)[:, 2:4].copy().view(np.float16).astype(np.float64).ravel()
        block_sums = a64.reshape(-1, 32).sum(axis=1)
        exact += float(np.dot(m, s - block_sums))
        magnitude += float(np.abs(m * s).sum())
    return exact, magnitude


def check_all_paths(name, w, x, tol=1e-5):
    exact, magnitude = reference(name, w, x)
    magnitude = max(magnitude, 1e-30)
    scalar = core.vec_dot(name, w, x, "scalar")
    assert abs(scalar - exact) <= tol * magnitude, ("scalar", scalar, exact)
    for path in RUNNABLE_SIMD_PATHS:
        got = core.vec_dot(name, w, x, path)
        assert abs(got - exact) <= tol * magnitude, (path, got, exact)
        # Same integer block sums; only the float summation order differs.
        assert abs(got - scalar) <= 2 * tol * magnitude, (path, got, scalar)


def random_blocks(rng, name, n_blocks, scale_bits=None):
    """Random bytes everywhere, then sane (or the given) fp16 bit patterns in the half fields."""
    size, nbytes = geometry(name)
    blocks = rng.integers(0, 256, size=(n_blocks, nbytes), dtype=np.uint8)
    for off in HALF_FIELDS[name]:
        if scale_bits is None:
            h = rng.uniform(-0.05, 0.05, n_blocks).astype(np.float16).view(np.uint16)
        else:
            h = rng.choice(np.asarray(scale_bits, dtype=np.uint16), n_blocks)
        blocks[:, off:off + 2] = h.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def float_row(rng, name, n):
    """n random f32 / f16 / bf16 weights as bytes (bf16: the f32 bits truncated)."""
    v = rng.uniform(-1, 1, n).astype(np.float32)
    if name == "f16":
        return v.astype(np.float16).view(np.uint8)
    if name == "bf16":
        return (v.view(np.uint32) >> 16).astype(np.uint16).view(np.uint8)
    return v.view(np.uint8)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", [t for t in WEIGHT_TYPES if geometry(t)[0] > 1])
def test_single_block_row(name, path):
    skip_unless_runnable(path)
    rng = np.random.default_rng(10)
    size, _ = geometry(name)
    for _ in range(20):
        w = random_blocks(rng, name, 1).reshape(-1)
        x = rng.standard_normal(size).astype(np.float32)
        exact, magnitude = reference(name, w, x)
        assert abs(core.vec_dot(name, w, x, path) - exact) <= 1e-5 * max(magnitude, 1e-30)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["f32", "f16", "bf16"])
def test_float_rows_of_every_tail_length(name, path):
    skip_unless_runnable(path)
    rng = np.random.default_rng(11)
    for n in list(range(1, 70)) + [127, 128, 129, 1000, 1023]:
        w = float_row(rng, name, n)
        x = rng.standard_normal(n).astype(np.float32)
        exact, magnitude = reference(name, w, x)
        assert abs(core.vec_dot(name, w, x, path) - exact) <= 1e-5 * magnitude, n


@pytest.mark.parametrize("name", [t for t in WEIGHT_TYPES if geometry(t)[0] > 1])
def test_extreme_codes(name):
    """Quant bytes from {0x00, 0xFF, 0x0F, 0xF0, 0x80, 0x7F}: every code at its minimum or
    maximum (-8/+7 nibbles, all 5th/6th bits set or clear, q8_0 -128/+127, K-quant 6-bit scales
    and mins at 0/63, q6_K scales at -128/127)."""
    rng = np.random.default_rng(12)
    size, _ = geometry(name)
    for n_blocks in (1, 2, 3, 8):
        blocks = random_blocks(rng, name, n_blocks)
        extremes = np.array([0x00, 0xFF, 0x0F, 0xF0, 0x80, 0x7F], dtype=np.uint8)
        mask = np.ones(blocks.shape[1], dtype=bool)
        for off in HALF_FIELDS[name]:
            mask[off:off + 2] = False
        blocks[:, mask] = rng.choice(extremes, size=(n_blocks, int(mask.sum())))
        x = rng.standard_normal(size * n_blocks).astype(np.float32)
        check_all_paths(name, blocks.reshape(-1), x)
        check_all_paths(name, blocks.reshape(-1), -x)


@pytest.mark.parametrize("name", [t for t in WEIGHT_TYPES if geometry(t)[0] > 1])
def test_extreme_fp16_scales(name):
    rng = np.random.default_rng(13)
    size, _ = geometry(name)
    largest = [0x7BFF, 0xFBFF]          # +-65504
    subnormal = [0x0001, 0x8001, 0x03FF, 0x0200]
    for bits in (largest, subnormal, largest + subnormal + [0x0000, 0x3C00]):
        blocks = random_blocks(rng, name, 7, scale_bits=bits)
        x = rng.standard_normal(size * 7).astype(np.float32)
        check_all_paths(name, blocks.reshape(-1), x)


@pytest.mark.parametrize("name", [t for t in WEIGHT_TYPES if geometry(t)[0] > 1])
def test_extreme_activations(name):
    """An outlier per block (most codes round to 0), constant blocks (all codes +-127), a block
    of zeros, and block magnitudes spanning 1e-6 .. 1e4 (the fp16 activation scales' range)."""
    rng = np.random.default_rng(14)
    size, _ = geometry(name)
    n = size * 6
    w = random_blocks(rng, name, 6).reshape(-1)
    x = rng.standard_normal(n).astype(np.float32) * 1e-3
    x[::size] = 1e3
    check_all_paths(name, w, x)
    x = np.full(n, -0.5, dtype=np.float32)
    x[size:2 * size] = 0.0
    check_all_paths(name, w, x)
    x = rng.standard_normal(n).astype(np.float32)
    x *= np.repeat(np.float32(10.0) ** np.linspace(-6, 4, n // 32).astype(np.float32), 32)
    check_all_paths(name, w, x)


def _guarded_buffer(nbytes):
    """A writable numpy uint8 view of nbytes that ends exactly where an inaccessible page starts."""
    page = mmap.PAGESIZE
    pages = (nbytes + page - 1) // page + 1
    buf = mmap.mmap(-1, pages * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(ctypes.c_void_p(addr + (pages - 1) * page), page, 0) != 0:
        pytest.skip("mprotect failed")
    end = (pages - 1) * page
    return buf, np.frombuffer(buf, dtype=np.uint8, count=nbytes, offset=end - nbytes)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs mprotect")
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_no_read_past_the_row(name, path):
    skip_unless_runnable(path)
    rng = np.random.default_rng(15)
    size, _ = geometry(name)
    for n in ([1, 3, 15, 17, 33, 1003] if size == 1 else [size, 3 * size]):
        w_src = float_row(rng, name, n) if size == 1 else random_blocks(rng, name, n // size).reshape(-1)
        keep, w = _guarded_buffer(w_src.size)
        w[:] = w_src
        x_src = rng.standard_normal(n).astype(np.float32)
        keep_x, x_bytes = _guarded_buffer(x_src.nbytes)  # f32 activations are read in place
        x_bytes[:] = x_src.view(np.uint8)
        x = x_bytes.view(np.float32)
        exact, magnitude = reference(name, w, x)
        assert abs(core.vec_dot(name, w, x, path) - exact) <= 1e-5 * magnitude
        del w, x, x_bytes
        keep.close()
        keep_x.close()
