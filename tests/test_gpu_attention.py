"""GPU split-K attention (cuda/gpu_attention.cu) over every KV format's compressed blocks.

Host (every build): _core.gpu_host_attention runs the kernels' structure on the CPU with their DL_HD
functions (chunks of 256-position tiles, a warp's lanes per key score, per-tile softmax fold, deco
basis per block, log-sum-exp merge of the chunks); it must equal the CPU attention (kv_attention) and
a float64 numpy attention over the cache as stored, for decode and causal prefill, several chunks,
sliding windows, GQA, sink and ring rows (kv_window, ring wrap).
GPU (CUDA build with a GPU): _core.gpu_attention_test on the same grid equals the host emulation
and the reference; errors without CUDA / a GPU are RuntimeErrors."""
import numpy as np
import pytest

from decollama._native import core

from gpu_support import gpu_available, needs_gpu


CQ = {"cq4": 2, "cq2": 4, "cq1": 8}
PAIRS = [("f16", "f16"), ("f32", "f32"), ("q8_0", "q8_0"), ("q4_0", "q4_0"), ("deco4", "deco4"),
         ("deco2", "deco2"), ("had4", "had2"), ("cq4", "cq4"), ("cq2", "cq2"), ("cq1", "cq1"),
         ("deco4", "f16"), ("f16", "deco2"), ("q8_0", "cq2"), ("cq4", "deco4")]
# n_kv, n_q, attention window, kv_window (ring rows), append_batch, max_chunks (0: as GpuAttention)
CASES = {
    "decode": (700, 1, 0, 0, 0, 0),                   # sink + blocks + pending ring rows, 3 chunks
    "decode_long_chunks": (1100, 1, 0, 0, 0, 2),      # 5 tiles in 2 chunks of up to 3 tiles
    "decode_ring_wrap": (700, 1, 0, 100, 0, 0),       # newest 100 from the ring, wrapped
    "prefill": (530, 40, 0, 0, 0, 0),                 # causal, queries across a tile edge, empty chunks
    "prefill_window_ring": (650, 9, 0, 300, 0, 0),    # ring of 320 / 512 rows, one chunk per tile
    "sliding_window": (900, 4, 300, 0, 0, 0),         # window starting inside a tile and a block
    "window_one_chunk": (900, 5, 200, 64, 0, 1),      # window + ring, no merge
    "decode_appended": (520, 1, 0, 0, 37, 0),         # the cache written 37 rows at a time
}


def f16(x):
    return x.astype(np.float16).astype(np.float32)


def make_book(D, c, seed, n_head_kv):
    rng = np.random.default_rng(seed)
    book = rng.standard_normal((n_head_kv, D // c, 256, c)).astype(np.float32)
    metric = rng.uniform(0.25, 2.0, (n_head_kv, D)).astype(np.float32)
    return book, metric


def inputs(n_kv, n_head, n_head_kv, D, seed):
    rng = np.random.default_rng(seed)
    k = (rng.standard_normal((n_kv, n_head_kv * D)) * np.exp(rng.normal(0, 0.5, n_head_kv * D))).astype(np.float32)
    v = (rng.standard_normal((n_kv, n_head_kv * D)) + 0.5).astype(np.float32)
    chan = np.exp(rng.normal(0, 1, D)).astype(np.float32)
    q_cache = (rng.standard_normal((n_kv, n_head, D)) * chan / np.sqrt(D) / 4).astype(np.float32)
    return k, v, q_cache.reshape(n_kv, n_head * D)


def reference_attention(q, k, v, n_head, n_head_kv, window=0):
    """Causal softmax attention of the last len(q) positions over k, v (float64)."""
    n_q, n_kv = len(q), len(k)
    hd_k, hd_v = k.shape[1] // n_head_kv, v.shape[1] // n_head_kv
    out = np.zeros((n_q, n_head * hd_v))
    for i in range(n_q):
        pos = n_kv - n_q + i
        lo = max(0, pos - window + 1) if window > 0 else 0
        for h in range(n_head):
            g = h // (n_head // n_head_kv)
            keys = k[lo:pos + 1, g * hd_k:(g + 1) * hd_k].astype(np.float64)
            values = v[lo:pos + 1, g * hd_v:(g + 1) * hd_v].astype(np.float64)
            s = keys @ q[i, h * hd_k:(h + 1) * hd_k].astype(np.float64)
            p = np.exp(s - s.max())
            out[i, h * hd_v:(h + 1) * hd_v] = (p / p.sum()) @ values
    return out


def case_kwargs(kv_k, kv_v, n_head_kv, D, q_cache, window, kv_window, append_batch):
    kw = dict(kv_k=kv_k, kv_v=kv_v, window=window, kv_window=kv_window, append_batch=append_batch, q_cache=q_cache)
    if kv_k in CQ:
        kw["k_codebook"], kw["k_metric"] = make_book(D, CQ[kv_k], 11, n_head_kv)
    if kv_v in CQ:
        kw["v_codebook"], kw["v_metric"] = make_book(D, CQ[kv_v], 12, n_head_kv)
    return kw


def check_against_references(run, kv_k, kv_v, n_head, n_head_kv, case, D=256):
    n_kv, n_q, window, kv_window, append_batch, max_chunks = CASES[case]
    k, v, q_cache = inputs(n_kv, n_head, n_head_kv, D, seed=n_kv + n_q + n_head_kv)
    q = q_cache[n_kv - n_q:]
    kw = case_kwargs(kv_k, kv_v, n_head_kv, D, q_cache, window, kv_window, append_batch)
    out, k_read, v_read, n_chunks = run(q, k, v, n_head, n_head_kv, max_chunks=max_chunks, **kw)
    ref = reference_attention(q, k_read, v_read, n_head, n_head_kv, window)
    tol = dict(rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(out, ref, err_msg=f"{kv_k}/{kv_v} {case}: vs numpy", **tol)
    # The CPU attention reads the same cache; q8_0 / q4_0 keys score a q8_0-quantized query there.
    if kv_k not in ("q8_0", "q4_0"):
        cpu, _, _ = core.kv_attention(q, k, v, n_head, n_head_kv, **kw)
        np.testing.assert_allclose(out, cpu, err_msg=f"{kv_k}/{kv_v} {case}: vs kv_attention", **tol)
    return out, n_chunks


# ------------------------------------------------------------------------------ host emulation (CI)


@pytest.mark.parametrize("kv_k,kv_v", PAIRS)
@pytest.mark.parametrize("n_head,n_head_kv", [(4, 1), (4, 2)])
@pytest.mark.parametrize("case", CASES)
def test_host_emulation_matches_cpu_attention(kv_k, kv_v, n_head, n_head_kv, case):
    _, n_chunks = check_against_references(core.gpu_host_attention, kv_k, kv_v, n_head, n_head_kv, case)
    expected_chunks = {"decode": 3, "decode_long_chunks": 2, "decode_ring_wrap": 3, "prefill": 3,
                       "window_one_chunk": 1}
    if case in expected_chunks:
        assert n_chunks == expected_chunks[case]


@pytest.mark.parametrize("kv_k,kv_v", [("f16", "f16"), ("q8_0", "q4_0"), ("cq1", "cq4")])
@pytest.mark.parametrize("D", [64, 96, 512])
def test_host_emulation_head_dims(kv_k, kv_v, D):
    n_kv, n_head, n_head_kv = 600, 8, 2
    k, v, q_cache = inputs(n_kv, n_head, n_head_kv, D, seed=D)
    q = q_cache[-3:]
    kw = case_kwargs(kv_k, kv_v, n_head_kv, D, q_cache, 0, 40, 0)
    out, k_read, v_read, _ = core.gpu_host_attention(q, k, v, n_head, n_head_kv, **kw)
    ref = reference_attention(q, k_read, v_read, n_head, n_head_kv)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.mark.parametrize("kv_k,kv_v", [("deco4", "deco2"), ("f16", "q8_0")])
def test_chunking_does_not_change_the_result(kv_k, kv_v):
    """One chunk per query (no merge) or up to 8: the same attention up to float rounding."""
    n_kv, n_q, n_head, n_head_kv, D = 2100, 3, 4, 1, 256
    k, v, q_cache = inputs(n_kv, n_head, n_head_kv, D, seed=5)
    q = q_cache[-n_q:]
    outs = {}
    for max_chunks in (1, 3, 8, 9):
        out, _, _, n_chunks = core.gpu_host_attention(q, k, v, n_head, n_head_kv, kv_k=kv_k, kv_v=kv_v,
                                                      q_cache=q_cache, max_chunks=max_chunks)
        outs[n_chunks] = out
    assert sorted(outs) == [1, 3, 5, 9]  # 9 tiles: 1, 3 of 3, 5 of 2 (8 allowed), 9 of 1
    for n_chunks, out in outs.items():
        np.testing.assert_allclose(out, outs[1], rtol=1e-5, atol=1e-6, err_msg=f"{n_chunks} chunks")


def test_gemma_like_decode_at_depth():
    """Gemma 3 270M attention shape (4 query heads on 1 KV head, head_dim 256) at depth 4096."""
    n_kv, n_head, n_head_kv, D = 4096, 4, 1, 256
    k, v, q_cache = inputs(n_kv, n_head, n_head_kv, D, seed=7)
    for kv_k, kv_v in (("deco4", "deco4"), ("cq2", "cq2")):
        kw = case_kwargs(kv_k, kv_v, n_head_kv, D, q_cache, 0, 0, 0)
        out, k_read, v_read, n_chunks = core.gpu_host_attention(q_cache[-1:], k, v, n_head, n_head_kv, **kw)
        assert n_chunks == 16
        ref = reference_attention(q_cache[-1:], k_read, v_read, n_head, n_head_kv)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_host_errors():
    q = np.zeros((1, 64), np.float32)
    k = np.zeros((4, 64), np.float32)
    with pytest.raises(ValueError, match="not supported by the GPU attention"):
        core.gpu_host_attention(q, k, k, 1, 1, kv_k="nope")
    with pytest.raises(ValueError, match="query heads per KV head"):
        core.gpu_host_attention(np.zeros((1, 17 * 64), np.float32), k, k, 17, 1)
    with pytest.raises(ValueError, match="codebook"):
        core.gpu_host_attention(q, k, k, 1, 1, kv_k="cq2")


def test_gpu_hooks_raise_without_a_gpu():
    if gpu_available():
        pytest.skip("a GPU is available")
    q = np.zeros((1, 64), np.float32)
    k = np.zeros((4, 64), np.float32)
    cuda = core.system_info()["cuda_compiled"]
    with pytest.raises(RuntimeError, match="no usable GPU" if cuda else "built without CUDA"):
        core.gpu_attention_test(q, k, k, 1, 1)
    with pytest.raises(RuntimeError, match="no usable GPU" if cuda else "built without CUDA"):
        core.gpu_attention_bench("f16", "f16", 512, 4, 1, 64, 2)


# ------------------------------------------------------------------------------ GPU


@needs_gpu
@pytest.mark.parametrize("kv_k,kv_v", PAIRS)
@pytest.mark.parametrize("n_head,n_head_kv", [(4, 1), (4, 2)])
@pytest.mark.parametrize("case", CASES)
def test_gpu_matches_cpu_attention(kv_k, kv_v, n_head, n_head_kv, case):
    out, n_chunks = check_against_references(core.gpu_attention_test, kv_k, kv_v, n_head, n_head_kv, case)
    host, n_chunks_host = check_against_references(core.gpu_host_attention, kv_k, kv_v, n_head, n_head_kv, case)
    assert n_chunks == n_chunks_host
    np.testing.assert_allclose(out, host, rtol=1e-5, atol=1e-5 * np.abs(host).max())


@needs_gpu
@pytest.mark.parametrize("kv_k,kv_v", [("f16", "f16"), ("q8_0", "q4_0"), ("cq1", "cq4"), ("deco2", "deco4")])
@pytest.mark.parametrize("D,n_head,n_head_kv", [(64, 8, 2), (128, 16, 1), (512, 8, 1)])
def test_gpu_head_dims_and_groups(kv_k, kv_v, D, n_head, n_head_kv):
    n_kv = 800
    k, v, q_cache = inputs(n_kv, n_head, n_head_kv, D, seed=D)
    q = q_cache[-5:]
    kw = case_kwargs(kv_k, kv_v, n_head_kv, D, q_cache, 0, 40, 0)
    out, k_read, v_read, _ = core.gpu_attention_test(q, k, v, n_head, n_head_kv, **kw)
    ref = reference_attention(q, k_read, v_read, n_head, n_head_kv)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@needs_gpu
def test_gpu_bench_reports_bandwidth():
    r = core.gpu_attention_bench("deco4", "deco4", 4096, 4, 1, 256, 5)
    assert set(r) == {"median_us", "bytes_read", "gbps", "peak_gbps"}
    assert r["median_us"] > 0 and r["peak_gbps"] > 100
    # 16 blocks of K and V (36,864 B each) + 1 sink row
    assert r["bytes_read"] == pytest.approx(2 * (16 * 36864 + 256 * 2))
