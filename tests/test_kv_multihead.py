"""Multi-query KV kernels (KVFormat::scores_multi / accumulate_multi, cpp/kv/kv_format.h): all query
heads of a KV head in one call, each key unpacked / converted once for all of them.

- kernels: on every CPU path this machine runs, the multi kernel of a format equals its single-query
  kernel called head by head (within 1e-6 of the magnitudes, and in fact exactly: the SIMD multi
  kernels keep each head's arithmetic in the single kernel's order; the scalar ones are loops over
  the scalar single kernels). Formats without multi kernels (q8_0, q4_0) fall back to that loop.
- attention: kv_attention (multi kernels) gives what kv_attention_single_query (the single kernels
  looped over heads) gives, and both match numpy attention over the cache as read (1e-4), for
  n_head / n_head_kv = 4 / 1 and 8 / 2, sink, blocks, ring, windows and split-K decode."""
import numpy as np
import pytest

from decollama._native import core

ALL_PATHS = ("scalar", "avx2", "avx512")
PATHS = ALL_PATHS[:ALL_PATHS.index(core.system_info()["best_cpu_path"]) + 1]  # what this CPU runs
FORMATS = {f["name"]: f for f in core.kv_formats()}
WITH_MULTI = ["f32", "f16", "deco4", "deco2", "had4", "had2"]  # formats with multi-query kernels
WITHOUT_MULTI = ["q8_0", "q4_0"]  # attention loops their single-query kernels
S = 256


def fmt_info(name):
    if name not in FORMATS:
        pytest.skip(f"KV format {name} is not in this core")
    return FORMATS[name]


def f16(x):
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def kv_rows(n, D, seed, mean=0.0):
    """Gaussian rows with a few offset outlier channels and a large attention-sink row 0 (fp16)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D)).astype(np.float32) + np.float32(mean)
    ch = rng.choice(D, 4, replace=False)
    x[:, ch] = x[:, ch] * 10 + rng.uniform(-20, 20, 4).astype(np.float32)
    x[0] = rng.standard_normal(D).astype(np.float32) * 60
    return f16(x)


def query_energy(n, D, seed, heads=4):
    rng = np.random.default_rng(seed)
    chan = np.exp(rng.normal(0, 1.5, D)).astype(np.float32)
    q = (rng.standard_normal((heads, n, D)) * np.sqrt(chan)).astype(np.float32)
    return (q.astype(np.float32) ** 2).sum(axis=0, dtype=np.float32)


def stream(name, D, n_tokens, seed):
    """A raw stream of n_tokens tokens of the format, and its rows as decoded."""
    f = fmt_info(name)
    x = kv_rows(n_tokens, D, seed, mean=1.0)
    e = query_energy(n_tokens, D, seed + 1) if f["wants_query_energy"] else None
    raw = core.kv_codec_append(name, x, 0, e)
    return raw, core.kv_codec_read(name, raw, D, 0, n_tokens).astype(np.float64)


# ------------------------------------------------------------------ kernels: multi == single per head
RANGES = [(0, 64), (1, 63), (130, 7), (255, 1), (256, 64), (300, 20), (509, 3)]
HEADS = [1, 3, 4, 7, 8, 9, 12]  # chunks of 4 (AVX2) and 8 (AVX-512) heads and their remainders


def check_multi(name, D, path, n_tokens=2 * S):
    raw, dec = stream(name, D, n_tokens, seed=D)
    rng = np.random.default_rng(D + len(name))
    for t, n in RANGES:
        if t + n > n_tokens:
            continue
        keys = dec[t:t + n]
        for n_q in HEADS:
            q = (rng.standard_normal((n_q, D)) * np.exp(rng.normal(0, 1, D))).astype(np.float32)
            s, used = core.kv_codec_attend_multi(name, "scores", raw, q, D, t, n, cpu_path=path)
            assert used == (name in WITH_MULTI)
            assert s.shape == (n_q, n)
            single = np.stack([core.kv_codec_attend(name, "scores", raw, q[h], D, t, n, cpu_path=path)
                               for h in range(n_q)])
            bound = 1e-6 * (np.abs(q).astype(np.float64) @ np.abs(keys).T)
            assert np.all(np.abs(s - single) <= bound), (name, D, path, t, n, n_q)
            np.testing.assert_array_equal(s, single, err_msg=f"scores {name} D={D} {path} t={t} n={n} n_q={n_q}")

            p = rng.random((n_q, n)).astype(np.float32)
            p[rng.random((n_q, n)) < 0.3] *= 1e-3
            acc, used = core.kv_codec_attend_multi(name, "accumulate", raw, p, D, t, n, cpu_path=path)
            assert used == (name in WITH_MULTI)
            assert acc.shape == (n_q, D)
            single = np.stack([core.kv_codec_attend(name, "accumulate", raw, p[h], D, t, n, cpu_path=path)
                               for h in range(n_q)])
            bound = 1e-6 * (p.astype(np.float64) @ np.abs(keys)).max(axis=1, keepdims=True)
            assert np.all(np.abs(acc - single) <= bound), (name, D, path, t, n, n_q)
            np.testing.assert_array_equal(acc, single, err_msg=f"accumulate {name} D={D} {path} t={t} n={n} n_q={n_q}")


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("name", ["deco4", "deco2"])
# 64: one group; 256: Gemma's (packed scales); 512: more groups than a packed row; 1088: heap scratch
@pytest.mark.parametrize("D", [64, 256, 512, 1088])
def test_deco_multi_equals_single(name, D, path):
    if path not in PATHS:
        pytest.skip(f"this CPU does not run the {path} kernels")
    check_multi(name, D, path)


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("name", ["had4", "had2"])
def test_hadamard_multi_equals_single(name, path):
    if path not in PATHS:
        pytest.skip(f"this CPU does not run the {path} kernels")
    check_multi(name, 256, path)


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("name", ["f16", "f32"])
@pytest.mark.parametrize("D", [44, 64, 256])  # 44: the SIMD tails
def test_dense_multi_equals_single(name, D, path):
    if path not in PATHS:
        pytest.skip(f"this CPU does not run the {path} kernels")
    check_multi(name, D, path, n_tokens=320)


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("name", WITHOUT_MULTI)
def test_formats_without_multi_fall_back(name, path):
    if path not in PATHS:
        pytest.skip(f"this CPU does not run the {path} kernels")
    check_multi(name, 64, path, n_tokens=320)


def test_multi_hook_errors():
    raw, _ = stream("f16", 64, 128, seed=1)
    with pytest.raises(ValueError, match="across a tile"):
        core.kv_codec_attend_multi("f16", "scores", raw, np.zeros((2, 64), np.float32), 64, 60, 8)
    with pytest.raises(ValueError, match=r"\[n_q, head_dim\]"):
        core.kv_codec_attend_multi("f16", "scores", raw, np.zeros((2, 32), np.float32), 64, 0, 8)
    with pytest.raises(ValueError, match=r"\[n_q, n\]"):
        core.kv_codec_attend_multi("f16", "accumulate", raw, np.zeros((2, 9), np.float32), 64, 0, 8)
    with pytest.raises(ValueError, match="op must be"):
        core.kv_codec_attend_multi("f16", "both", raw, np.zeros((2, 8), np.float32), 64, 0, 8)


# ------------------------------------------------------------------ attention: unchanged by the multi kernels
def q8_0_query(q):
    """The query as q8_0 / q4_0 keys score it: quantized to q8_0 blocks of 32 (llama.cpp)."""
    b = q.reshape(-1, 32).astype(np.float32)
    d = np.abs(b).max(axis=1, keepdims=True) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    codes = np.clip(np.trunc(b * inv + np.copysign(np.float32(0.5), b * inv)), -128, 127)
    return (codes * f16(d)).reshape(q.shape)


def reference_attention(q, k, v, n_head, n_head_kv, window=0, q_ring=None, ring_start=None):
    """Causal softmax attention of the last len(q) positions over k, v (float64). q_ring: the
    queries that score keys from ring_start on (fp16 ring rows read the fp32 query)."""
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
            if q_ring is not None:
                r = max(ring_start - lo, 0)
                s[r:] = keys[r:] @ q_ring[i, h * hd_k:(h + 1) * hd_k].astype(np.float64)
            p = np.exp(s - s.max())
            out[i, h * hd_v:(h + 1) * hd_v] = (p / p.sum()) @ values
    return out


def attention_inputs(n_kv, n_head, n_head_kv, D, seed):
    rng = np.random.default_rng(seed)
    k = np.concatenate([kv_rows(n_kv, D, seed=seed + h) for h in range(n_head_kv)], axis=1)
    v = np.concatenate([kv_rows(n_kv, D, seed=seed + 50 + h, mean=0.5) for h in range(n_head_kv)], axis=1)
    chan = np.exp(rng.normal(0, 1, D)).astype(np.float32)
    q_cache = (rng.standard_normal((n_kv, n_head, D)) * chan / np.sqrt(D) / 4).astype(np.float32)
    return k, v, q_cache.reshape(n_kv, n_head * D)


PAIRS = [("f16", "f16"), ("deco4", "deco4"), ("deco2", "deco2"), ("q8_0", "q8_0"), ("q4_0", "q4_0"),
         ("deco4", "f16"), ("f16", "deco2"), ("q8_0", "deco4"), ("had4", "had2"), ("f32", "q4_0")]


@pytest.mark.parametrize("kv_k,kv_v", PAIRS)
@pytest.mark.parametrize("n_head,n_head_kv", [(4, 1), (8, 2)])
@pytest.mark.parametrize("n_kv,n_q,window,kv_window,n_threads", [
    (600, 1, 0, 0, 2),     # decode: split key range, sink + 2 blocks + ring
    (600, 5, 0, 100, 1),   # a few queries, the newest 100 positions from the ring
    (333, 1, 150, 0, 2),   # sliding window starting inside a tile and a block
])
def test_attention_unchanged(kv_k, kv_v, n_head, n_head_kv, n_kv, n_q, window, kv_window, n_threads):
    fmt_info(kv_k), fmt_info(kv_v)
    D = 256
    k, v, q_cache = attention_inputs(n_kv, n_head, n_head_kv, D, seed=n_kv + n_head)
    q = q_cache[n_kv - n_q:]
    for path in PATHS:
        kw = dict(kv_k=kv_k, kv_v=kv_v, window=window, cpu_path=path, n_threads=n_threads, kv_window=kv_window,
                  q_cache=q_cache)
        out, k_read, v_read = core.kv_attention(q, k, v, n_head, n_head_kv, **kw)
        single, k_read1, v_read1 = core.kv_attention_single_query(q, k, v, n_head, n_head_kv, **kw)
        np.testing.assert_array_equal(k_read, k_read1)
        np.testing.assert_array_equal(v_read, v_read1)
        np.testing.assert_array_equal(out, single, err_msg=f"{path}: multi-query kernels changed the output")
        if kv_k in ("q8_0", "q4_0"):  # integer dots against the q8_0 query, but not on fp16 ring rows
            ref = reference_attention(q8_0_query(q), k_read, v_read, n_head, n_head_kv, window, q_ring=q,
                                      ring_start=n_kv - kv_window if kv_window else n_kv)
        else:
            ref = reference_attention(q, k_read, v_read, n_head, n_head_kv, window)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=path)
