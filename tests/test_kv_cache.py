"""KV cache formats: the fused attention kernels (scores over stored keys, probability-weighted sums
over stored values, online softmax across tiles, split-K merging) against numpy attention on the
cache as the format decodes it; the stored values against the format's definition; kv_info."""
import numpy as np
import pytest

from decollama._native import core

import tiny_models

FORMATS = ["f32", "f16", "q8_0", "q4_0"]
BITS = {"f32": 32.0, "f16": 16.0, "q8_0": 8.5, "q4_0": 4.5}
ALL_PATHS = ("scalar", "avx2", "avx512")
PATHS = ALL_PATHS[:ALL_PATHS.index(core.system_info()["best_cpu_path"]) + 1]  # what this CPU runs


def scored_query(q, k_format):
    """The query as the key format's scores see it: q8_0 / q4_0 keys take integer dots against
    the query quantized to q8_0 (as llama.cpp does)."""
    return quantize_reference(q, "q8_0") if k_format in ("q8_0", "q4_0") else q


def reference_attention(q, k, v, n_head, n_head_kv, window):
    """Causal attention of the last len(q) positions over k, v (float64)."""
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


def random_qkv(n_q, n_kv, n_head, n_head_kv, head_dim, seed=0):
    rng = np.random.default_rng(seed)
    # q carries the softmax scale, as the model passes it.
    q = (rng.standard_normal((n_q, n_head * head_dim)) / np.sqrt(head_dim)).astype(np.float32)
    k = rng.standard_normal((n_kv, n_head_kv * head_dim)).astype(np.float32)
    v = rng.standard_normal((n_kv, n_head_kv * head_dim)).astype(np.float32)
    return q, k, v


def quantize_reference(x, fmt):
    """What a format stores, decoded (llama.cpp's block math for q8_0/q4_0), per row."""
    if fmt == "f32":
        return x
    if fmt == "f16":
        return x.astype(np.float16).astype(np.float32)
    blocks = x.reshape(-1, 32)
    if fmt == "q8_0":
        d = np.abs(blocks).max(axis=1, keepdims=True) / 127.0
        d16 = d.astype(np.float16).astype(np.float32)
        inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
        q = np.clip(np.trunc(blocks * inv + np.copysign(0.5, blocks * inv)), -128, 127)
        return (q * d16).reshape(x.shape)
    assert fmt == "q4_0"
    idx = np.abs(blocks).argmax(axis=1)
    d = (blocks[np.arange(len(blocks)), idx] / -8.0)[:, None].astype(np.float32)
    d16 = d.astype(np.float16).astype(np.float32)
    inv = np.divide(np.float32(1.0), d, out=np.zeros_like(d), where=d != 0)
    q = np.minimum(15, np.trunc(blocks * inv + np.float32(8.5)).astype(np.int32))
    return ((q - 8) * d16).reshape(x.shape)


@pytest.mark.parametrize("fmt", FORMATS)
def test_stored_values_follow_the_format(fmt):
    _, k, v = random_qkv(1, 70, 2, 2, 64)
    _, k_read, v_read = core.kv_attention(np.zeros((1, 128), np.float32), k, v, 2, 2, kv_k=fmt, kv_v=fmt,
                                          append_batch=13)
    np.testing.assert_allclose(k_read, quantize_reference(k, fmt), rtol=0, atol=1e-6)
    np.testing.assert_allclose(v_read, quantize_reference(v, fmt), rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("n_q, window, append_batch, n_threads", [
    (150, 0, 37, 2),   # prefill: every position attends, appends leave partly filled tiles
    (150, 50, 0, 1),   # sliding window: ranges start inside a tile
    (1, 0, 1, 2),      # decode: the key range is split across threads and merged
    (3, 20, 64, 1),    # a few queries, split, windowed
])
def test_fused_attention_matches_numpy(fmt, path, n_q, window, append_batch, n_threads):
    n_head, n_head_kv, head_dim, n_kv = 4, 2, 64, 150  # tiles of 64 keys: 64 + 64 + 22
    q, k, v = random_qkv(n_q, n_kv, n_head, n_head_kv, head_dim, seed=n_q)
    out, k_read, v_read = core.kv_attention(q, k, v, n_head, n_head_kv, kv_k=fmt, kv_v=fmt, window=window,
                                            cpu_path=path, n_threads=n_threads, append_batch=append_batch)
    ref = reference_attention(scored_query(q, fmt), k_read, v_read, n_head, n_head_kv, window)
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("fmt", ["f32", "f16"])
def test_dense_formats_any_head_dim(fmt, path):
    """Head sizes that are not a multiple of the SIMD width take the tail loops."""
    q, k, v = random_qkv(9, 70, 3, 1, 44, seed=3)
    out, k_read, v_read = core.kv_attention(q, k, v, 3, 1, kv_k=fmt, kv_v=fmt, cpu_path=path, n_threads=2)
    np.testing.assert_allclose(out, reference_attention(q, k_read, v_read, 3, 1, 0), rtol=0, atol=2e-5)


def test_k_and_v_formats_are_independent():
    q, k, v = random_qkv(4, 80, 2, 1, 64, seed=5)
    out, k_read, v_read = core.kv_attention(q, k, v, 2, 1, kv_k="q8_0", kv_v="q4_0", n_threads=2)
    np.testing.assert_allclose(k_read, quantize_reference(k, "q8_0"), atol=1e-6)
    np.testing.assert_allclose(v_read, quantize_reference(v, "q4_0"), atol=1e-6)
    np.testing.assert_allclose(out, reference_attention(scored_query(q, "q8_0"), k_read, v_read, 2, 1, 0), atol=2e-5)


def test_format_errors():
    q, k, v = random_qkv(1, 4, 1, 1, 16)
    with pytest.raises(ValueError, match=r"unknown KV cache format 'q3'.*f16"):
        core.kv_attention(q, k, v, 1, 1, kv_k="q3")
    with pytest.raises(ValueError, match="multiple of 32"):
        core.kv_attention(q, k, v, 1, 1, kv_v="q4_0")
    formats = core.kv_formats()
    assert [f["name"] for f in formats][:len(FORMATS)] == FORMATS
    # attention tiles of 64 keys never straddle a block: blocks divide 64 or are whole tiles
    assert all(64 % f["tokens_per_block"] == 0 or f["tokens_per_block"] % 64 == 0 for f in formats)


# ---- the cache of a model ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gemma_tiny(tmp_path_factory):
    return str(tiny_models.tiny_gguf("gemma3", "f32", tmp_path_factory))  # head_dim 32, 1 KV head, 4 layers


@pytest.mark.parametrize("fmt", FORMATS)
def test_kv_info_bytes(gemma_tiny, fmt):
    m = core.Model(gemma_tiny, n_ctx=96, n_threads=1, kv_k=fmt, kv_v=fmt)
    info = m.kv_info()
    assert info["n_ctx"] == 96
    assert info["bytes_per_token"] * 96 == info["bytes_allocated"]
    assert info["bytes_per_token"] == 2 * 4 * 1 * 32 * BITS[fmt] / 8  # K and V, 4 layers, 1 head of 32
    assert info["k_bits_per_element"] == info["v_bits_per_element"] == BITS[fmt]
    assert [(layer["k"], layer["v"]) for layer in info["layers"]] == [(fmt, fmt)] * 4


def test_kv_formats_per_layer(gemma_tiny):
    m = core.Model(gemma_tiny, n_ctx=64, n_threads=1, kv_k=["q8_0", "f16", "f16", "q4_0"], kv_v="q4_0")
    info = m.kv_info()
    assert [layer["k"] for layer in info["layers"]] == ["q8_0", "f16", "f16", "q4_0"]
    assert info["k_bits_per_element"] == pytest.approx((8.5 + 16 + 16 + 4.5) / 4)
    assert info["bytes_per_token"] * 64 == info["bytes_allocated"]
    with pytest.raises(ValueError, match="one per layer"):
        core.Model(gemma_tiny, n_ctx=64, kv_k=["f16", "f16"])
    with pytest.raises(ValueError, match=r"valid: f32, f16, q8_0, q4_0"):
        core.Model(gemma_tiny, n_ctx=64, kv_v="int4")
