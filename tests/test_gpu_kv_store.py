"""GPU quantize-on-write of every KV format (cuda/gpu_kv_store.cu) against the CPU cache.

Host (every build): the encoders' DL_HD block math (cuda/kv_encode_device.h, gpu_host_kv_encode)
gives exactly the bytes of the CPU encoders (kv_codec_append), and the store's work items
(cuda/kv_store_device.h, gpu_host_kv_store: the kernels' bodies run in loops) give exactly the layer
bytes KVCache::store writes: sink rows, fp16 ring (wrap, newest window), query-energy rows, blocks
compressed when they fill, across calls. GPU (needs_gpu): the same layer bytes through the kernels."""
import numpy as np
import pytest

from decollama._native import core
from gpu_support import needs_gpu

S1_FORMATS = ["f16", "f32", "q8_0", "q4_0"]
DECO = {"deco4": 4, "deco2": 2, "had4": 4, "had2": 2}
CQ = {"cq4": 2, "cq2": 4, "cq1": 8}
ALL_FORMATS = S1_FORMATS + list(DECO) + list(CQ)


def test_every_cache_format_has_a_gpu_encoder():
    names = {f["name"] for f in core.kv_formats()}
    assert names == set(ALL_FORMATS)


# ------------------------------------------------------------------ inputs

def kv_rows(n, D, seed, outliers=6, zero_rows=(), sink_scale=80.0):
    """Gaussian rows with outlier channels (large scale and offset), a large row 0 (attention sink),
    some all-zero rows, exact ties inside 32-blocks and a few tiny / subnormal-range values."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D)).astype(np.float32)
    ch = rng.choice(D, min(outliers, D), replace=False)
    x[:, ch] = x[:, ch] * 12 + rng.uniform(-30, 30, len(ch)).astype(np.float32)
    if n:
        x[0] = rng.standard_normal(D).astype(np.float32) * sink_scale
    for r in zero_rows:
        if r < n:
            x[r] = 0.0
    if n > 3:
        x[3, :2] = [5.0, -5.0]  # q4_0: equal magnitudes, the first one sets the sign
        x[3, 4] = 1e-6
    return x


def query_energy(n, D, seed, heads=3, zero_channels=2):
    rng = np.random.default_rng(seed)
    chan = np.exp(rng.normal(0, 1.5, D)).astype(np.float32)
    q = (rng.standard_normal((heads, n, D)) * np.sqrt(chan)).astype(np.float32)
    q[:, :, :zero_channels] = 0.0  # channels without energy: w floored at 2^-14
    e = q[0] * q[0]
    for h in range(1, heads):
        e = e + q[h] * q[h]
    return e.astype(np.float32)


def make_book(D, c, seed, n_head=None):
    """Codebook [G, 256, c] (or [n_head, G, 256, c]) with duplicated centroids (ties: first index),
    and a metric with a zero channel."""
    rng = np.random.default_rng(seed)
    shape = (D // c, 256, c) if n_head is None else (n_head, D // c, 256, c)
    book = rng.standard_normal(shape).astype(np.float32) * 2
    book[..., 200:210, :] = book[..., 10:20, :]
    metric = rng.uniform(0.25, 2.0, shape[:-3] + (D,)).astype(np.float32)
    metric[..., 3] = 0.0
    return book, metric


def first_difference(a, b):
    a, b = np.frombuffer(a, np.uint8), np.frombuffer(b, np.uint8)
    if a.shape != b.shape:
        return f"sizes {a.size} != {b.size}"
    bad = np.flatnonzero(a != b)
    return None if bad.size == 0 else f"{bad.size} bytes differ, first at {bad[0]}"


# ------------------------------------------------------------------ host: the encoders

@pytest.mark.parametrize("fmt", S1_FORMATS)
@pytest.mark.parametrize("D", [32, 96, 256])
def test_host_encode_plain_formats(fmt, D):
    x = kv_rows(70, D, seed=D, zero_rows=(5, 6))
    x[7] = np.float32(3e-39)  # subnormal row
    for t0 in (0, 9):
        gpu = core.gpu_host_kv_encode(fmt, x, t0=t0)
        cpu = core.kv_codec_append(fmt, x, t0=t0)
        assert first_difference(gpu, cpu) is None, (fmt, D, t0)


@pytest.mark.parametrize("fmt", list(CQ))
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("with_metric", [True, False])
def test_host_encode_cq(fmt, D, with_metric):
    c = CQ[fmt]
    book, metric = make_book(D, c, seed=c + D)
    x = kv_rows(50, D, seed=3, zero_rows=(4,)) * np.float32(0.3)
    # rows that are centroids, so distances tie exactly with the duplicated ones
    x[10] = book[:, 205, :].reshape(D)
    x[11] = book[:, 15, :].reshape(D)
    m = metric if with_metric else None
    gpu = core.gpu_host_kv_encode(fmt, x, t0=3, codebook=book, metric=m)
    cpu = core.kv_codec_append(fmt, x, t0=3, codebook=book, metric=m)
    assert first_difference(gpu, cpu) is None
    codes = np.frombuffer(gpu, np.uint8).reshape(-1, D // c)
    assert not np.any((codes >= 200) & (codes < 210)), "ties must pick the first centroid"


@pytest.mark.parametrize("fmt", list(DECO))
@pytest.mark.parametrize("D", [64, 128, 256, 512])
def test_host_encode_deco_blocks(fmt, D):
    """Blocks at t0 = 0 (sink row skipped by deco*) and later blocks, fp16 rows like the ring's, keys
    (query energy with zero channels) and values (no energy)."""
    n = 512
    x = kv_rows(n, D, seed=D + 1, zero_rows=(17, 300)).astype(np.float16).astype(np.float32)
    x[300:302] = x[300:302] + 40.0  # a row far from the block mean
    e = query_energy(n, D, seed=D + 2)
    for t0 in (0, 256):
        for energy in (e, None):
            gpu = core.gpu_host_kv_encode(fmt, x, t0=t0, energy=energy)
            cpu = core.kv_codec_append(fmt, x, t0=t0, energy=energy)
            assert first_difference(gpu, cpu) is None, (fmt, D, t0, energy is None)


@pytest.mark.parametrize("fmt", list(DECO))
def test_host_encode_deco_edge_blocks(fmt):
    D = 128
    zeros = np.zeros((256, D), np.float32)
    # all-zero block: d = dm = 0, every code 0; zero energy: w = 1
    for energy in (np.zeros((256, D), np.float32), None):
        assert first_difference(core.gpu_host_kv_encode(fmt, zeros, energy=energy),
                                core.kv_codec_append(fmt, zeros, energy=energy)) is None
    # unrounded fp32 rows, constant rows, one-sided groups, huge and tiny values
    rng = np.random.default_rng(5)
    x = rng.standard_normal((256, D)).astype(np.float32)
    x[:, :64] = np.abs(x[:, :64]) + 3.0
    x[20] = 7.0
    x[21] = 0.0
    x[22, :8] = 6e4
    x[23] *= 1e-5
    e = np.abs(rng.standard_normal((256, D))).astype(np.float32) * 1e-3
    e[:, 5] = 0.0
    e[:, 6] = 1e30
    for t0 in (0, 512):
        assert first_difference(core.gpu_host_kv_encode(fmt, x, t0=t0, energy=e),
                                core.kv_codec_append(fmt, x, t0=t0, energy=e)) is None


def test_host_encode_errors():
    x = np.zeros((4, 64), np.float32)
    with pytest.raises(ValueError, match="unknown KV cache format"):
        core.gpu_host_kv_encode("q3_nope", x)
    with pytest.raises(ValueError):
        core.gpu_host_kv_encode("deco4", x)  # not a whole block
    with pytest.raises(ValueError, match="codebook"):
        core.gpu_host_kv_encode("cq4", x)


# ------------------------------------------------------------------ the store: one layer, many calls

PAIRS = [("f16", "f32"), ("q8_0", "q4_0"), ("deco4", "deco2"), ("had4", "had2"), ("deco2", "q8_0"),
         ("cq4", "cq2"), ("cq1", "deco4"), ("q4_0", "had4"), ("f32", "cq1")]
CALLS = {
    "prefill": [600],              # blocks compressed from the input, ring overwritten within the call
    "split": [260, 340],           # block 1 starts in the ring of call 1, whose slots call 2 overwrites
    "mixed": [1, 100, 155, 1, 1, 300, 1, 41],  # the sink alone, a block boundary hit exactly
    "decode": [1] * 300,           # token by token across the first block
}


def store_case(kv_k, kv_v, calls, window, n_head_kv=2, n_gqa=2, hd_k=128, hd_v=64, n_ctx=1024, seed=0):
    n = sum(calls)
    n_head = n_head_kv * n_gqa
    k = np.concatenate([kv_rows(n, hd_k, seed + 10 + h, zero_rows=(9, 270)) for h in range(n_head_kv)], axis=1)
    v = np.concatenate([kv_rows(n, hd_v, seed + 20 + h, zero_rows=(11,)) for h in range(n_head_kv)], axis=1)
    rng = np.random.default_rng(seed + 30)
    chan = np.exp(rng.normal(0, 1.2, hd_k)).astype(np.float32)
    q = (rng.standard_normal((n, n_head, hd_k)) * np.sqrt(chan)).astype(np.float32)
    q[:, :, 0] = 0.0  # a channel without query energy
    kw = dict(q=q.reshape(n, -1), n_head=n_head, n_head_kv=n_head_kv, n_ctx=n_ctx, kv_window=window, calls=calls)
    for which, fmt, hd, s in (("k", kv_k, hd_k, 41), ("v", kv_v, hd_v, 42)):
        if fmt in CQ:
            book, metric = make_book(hd, CQ[fmt], seed=s, n_head=n_head_kv)
            kw[which + "_codebook"], kw[which + "_metric"] = book, metric
    return (kv_k, kv_v, k, v), kw


@pytest.mark.parametrize("kv_k,kv_v", PAIRS)
@pytest.mark.parametrize("calls", list(CALLS))
@pytest.mark.parametrize("window", [0, 100])
def test_host_store_matches_cpu_cache(kv_k, kv_v, calls, window):
    args, kw = store_case(kv_k, kv_v, CALLS[calls], window)
    twin, cpu = core.gpu_host_kv_store(*args, **kw)
    assert first_difference(twin, cpu) is None


@pytest.mark.parametrize("kv_k,kv_v", [("deco4", "had2"), ("cq2", "q4_0"), ("f16", "deco2")])
def test_host_store_small_ctx_and_mha(kv_k, kv_v):
    """n_ctx below a block (no block ever completes, ring = n_ctx rounded up), one query head per
    KV head, head_dim 64, window larger than the context."""
    args, kw = store_case(kv_k, kv_v, [3, 60, 1, 1, 100], window=512, n_head_kv=3, n_gqa=1, hd_k=64,
                          hd_v=64, n_ctx=165)
    twin, cpu = core.gpu_host_kv_store(*args, **kw)
    assert first_difference(twin, cpu) is None


def test_host_store_errors():
    args, kw = store_case("deco4", "f16", [10], 0)
    kw.pop("q")
    with pytest.raises(ValueError, match="need q"):
        core.gpu_host_kv_store(*args, **kw)
    args, kw = store_case("f16", "f16", [10], 0)
    kw["calls"] = [4, 4]
    with pytest.raises(ValueError, match="add up"):
        core.gpu_host_kv_store(*args, **kw)


# ------------------------------------------------------------------ GPU

def test_gpu_hook_without_gpu_raises():
    info = core.system_info()
    if info["cuda_compiled"] and info["gpus"]:
        pytest.skip("a GPU is present: the GPU tests below run instead")
    args, kw = store_case("f16", "f16", [4], 0)
    with pytest.raises(RuntimeError, match="without CUDA" if not info["cuda_compiled"] else "GPU"):
        core.gpu_kv_store_test(*args, **kw)


class TestGpu:
    """Layer bytes written by the CUDA kernels."""
    pytestmark = needs_gpu

    @pytest.mark.parametrize("kv_k,kv_v", PAIRS)
    @pytest.mark.parametrize("calls", list(CALLS))
    @pytest.mark.parametrize("window", [0, 100])
    def test_gpu_store_matches_cpu_cache(self, kv_k, kv_v, calls, window):
        args, kw = store_case(kv_k, kv_v, CALLS[calls], window)
        gpu, cpu = core.gpu_kv_store_test(*args, **kw)
        assert first_difference(gpu, cpu) is None

    @pytest.mark.parametrize("kv_k,kv_v", [("deco4", "had2"), ("deco2", "deco4"), ("cq4", "q8_0")])
    @pytest.mark.parametrize("hd", [256, 512])
    def test_gpu_store_large_heads(self, kv_k, kv_v, hd):
        """head_dim above the thread block (512: two channels per fit thread) and GQA 4."""
        args, kw = store_case(kv_k, kv_v, [300, 1, 211, 1], 0, n_head_kv=2, n_gqa=4, hd_k=hd, hd_v=hd)
        gpu, cpu = core.gpu_kv_store_test(*args, **kw)
        assert first_difference(gpu, cpu) is None

    def test_gpu_store_errors(self):
        args, kw = store_case("deco4", "f16", [10], 0)
        kw.pop("q")
        with pytest.raises(ValueError):
            core.gpu_kv_store_test(*args, **kw)
