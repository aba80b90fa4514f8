"""deco4 / deco2 KV formats (cpp/kv/kv_deco*.cpp) against the numpy reference of the layout
(python/decollama/kv_reference.py) and the spec (cpp/kv/README.md): encoded bytes bit-exact, decoded
rows, the fused scores / accumulate kernels on every CPU path this machine runs, and the cache's
attention over deco keys and values (sink row, compressed blocks, fp16 ring)."""
import importlib.util
import pathlib

import numpy as np
import pytest

from decollama._native import core

_P = pathlib.Path(__file__).resolve().parent.parent / "python" / "decollama" / "kv_reference.py"
_spec = importlib.util.spec_from_file_location("kv_reference_for_deco", _P)
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)

FORMATS = {"deco4": 4, "deco2": 2}
ALL_PATHS = ("scalar", "avx2", "avx512")
PATHS = ALL_PATHS[:ALL_PATHS.index(core.system_info()["best_cpu_path"]) + 1]  # what this CPU runs
S = 256


def kv_rows(n, D, seed, n_outliers=6, mean=0.0):
    """Gaussian rows with outlier channels (large scale and offset) and a large attention-sink row 0,
    fp16-rounded like the cache's ring."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, D)).astype(np.float32) + np.float32(mean)
    ch = rng.choice(D, n_outliers, replace=False)
    x[:, ch] = x[:, ch] * 12 + rng.uniform(-30, 30, n_outliers).astype(np.float32)
    x[0] = rng.standard_normal(D).astype(np.float32) * 80
    return R.f16(x)


def query_energy(n, D, seed, heads=4):
    """Per-row query energies of `heads` query heads with very uneven channel scales."""
    rng = np.random.default_rng(seed)
    chan = np.exp(rng.normal(0, 1.5, D)).astype(np.float32)
    q = (rng.standard_normal((heads, n, D)) * np.sqrt(chan)).astype(np.float32)
    return R.query_energy_rows(q)


def block(raw, D, bits, b):
    bb = R.deco_block_bytes(D, bits)
    return np.frombuffer(raw, np.uint8)[b * bb:(b + 1) * bb]


def test_registered():
    rows = {f["name"]: f for f in core.kv_formats()}
    for name, bits in FORMATS.items():
        f = rows[name]
        assert (f["dim_block"], f["tokens_per_block"], f["n_sink"]) == (64, 256, 1)
        assert f["wants_query_energy"] and f["codebook_c"] == 0
        assert f["bits_per_element_256"] == (4.5 if bits == 4 else 2.5)
        assert R.deco_block_bytes(256, bits) == (36864 if bits == 4 else 20480)


# ------------------------------------------------------------------ encode: bytes equal the reference
@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("D", [64, 128, 256, 1088])
@pytest.mark.parametrize("energy", [False, True])
@pytest.mark.parametrize("t0", [0, 256])
def test_encode_bit_exact(name, D, energy, t0):
    bits = FORMATS[name]
    x = kv_rows(S, D, seed=D + t0 + bits)
    e = query_energy(S, D, seed=D + 7) if energy else None
    raw = core.kv_codec_append(name, x, t0, e)
    assert len(raw) == (t0 // S + 1) * R.deco_block_bytes(D, bits)
    ref = R.deco_encode_block(x, e, bits, n_skip=1 if t0 == 0 else 0)
    got = block(raw, D, bits, t0 // S)
    head = 4 * D
    np.testing.assert_array_equal(got[:head], ref[:head], err_msg="header (mu, w)")
    np.testing.assert_array_equal(got, ref, err_msg="rows (d, dm, sc, mq, codes)")
    if t0 == 0:  # the sink row: zero bytes
        assert not got[head:head + R.deco_row_bytes(D, bits)].any()
    else:  # block 0 of the stream untouched
        assert not block(raw, D, bits, 0).any()
    # decoded rows: the reference decode, within 1e-6 of each row's scale
    dec = core.kv_codec_read(name, raw, D, t0, S)
    rdec = R.deco_decode_block(ref, D, bits)
    scale = np.abs(rdec).max(axis=1, keepdims=True)
    assert np.all(np.abs(dec - rdec) <= 1e-6 * scale)


@pytest.mark.parametrize("name", FORMATS)
def test_encode_several_blocks_and_edge_rows(name):
    """Two blocks in one append (block 1 fitted without a sink row), with rows the quantizer must
    treat exactly: all zero, equal to the mean, one-signed groups, a single spike; energies with
    all-zero channels (w floored at 2^-14) and an all-zero energy block (w = 1)."""
    bits, D = FORMATS[name], 128
    x = kv_rows(2 * S, D, seed=11)
    x[5] = 0
    x[6] = x[7] = 0.25                    # identical rows
    x[8, :64] = np.abs(x[8, :64]) + 1     # a group of positive values
    x[9, 64:] = -np.abs(x[9, 64:]) - 1    # a group of negative values
    x[10] = 0
    x[10, 3] = 1000.0                     # a spike
    x[300:310] = 0
    e = query_energy(2 * S, D, seed=3)
    e[:, 17] = 0                          # a channel no query looks at
    e[S:] = 0                             # block 1: no energy at all
    raw = core.kv_codec_append(name, x, 0, e)
    for b in range(2):
        ref = R.deco_encode_block(x[b * S:(b + 1) * S], e[b * S:(b + 1) * S], bits, n_skip=1 if b == 0 else 0)
        np.testing.assert_array_equal(block(raw, D, bits, b), ref, err_msg=f"block {b}")
    _, w0 = R.deco_read_header(block(raw, D, bits, 0), D)
    _, w1 = R.deco_read_header(block(raw, D, bits, 1), D)
    assert w0[17] == np.float16(2.0 ** -14)
    assert np.all(w1 == np.float16(1.0))
    dec = core.kv_codec_read(name, raw, D, 0, 2 * S)
    rdec = np.concatenate([R.deco_decode_block(block(raw, D, bits, b), D, bits) for b in range(2)])
    scale = np.abs(rdec).max(axis=1, keepdims=True)
    assert np.all(np.abs(dec - rdec) <= 1e-6 * scale)
    # read of a range that crosses the block boundary
    np.testing.assert_array_equal(core.kv_codec_read(name, raw, D, 250, 12), dec[250:262])


# ------------------------------------------------------------------ fused kernels on every path
RANGES = [(0, 64), (1, 63), (64, 64), (130, 7), (255, 1), (256, 64), (300, 20), (383, 1), (448, 64), (509, 3)]


@pytest.mark.parametrize("name", FORMATS)
# 512 and up: more groups than one 8-wide chunk of scales; 1088: scratch on the heap
@pytest.mark.parametrize("D", [64, 192, 256, 512, 640, 1088])
@pytest.mark.parametrize("path", ALL_PATHS)
def test_scores_and_accumulate(name, D, path):
    if path not in PATHS:
        pytest.skip(f"this CPU does not run the {path} kernels")
    bits = FORMATS[name]
    rng = np.random.default_rng(D + bits)
    x = kv_rows(2 * S, D, seed=D, mean=2.0)
    e = query_energy(2 * S, D, seed=D + 1)
    raw = core.kv_codec_append(name, x, 0, e)
    dec = core.kv_codec_read(name, raw, D, 0, 2 * S).astype(np.float64)
    for t, n in RANGES:
        keys = dec[t:t + n]
        q = (rng.standard_normal(D) * np.exp(rng.normal(0, 1, D))).astype(np.float32)
        s = core.kv_codec_attend(name, "scores", raw, q, D, t, n, cpu_path=path)
        ref = keys @ q
        bound = 1e-5 * (np.abs(keys) @ np.abs(q))
        assert s.shape == (n,)
        assert np.all(np.abs(s - ref) <= bound), (t, n, np.max(np.abs(s - ref) / bound) * 1e-5)
        # the float64 fused oracle of the reference agrees too
        ref64 = R.deco_scores(q, block(raw, D, bits, t // S), D, bits, t % S, n)
        assert np.all(np.abs(ref64 - ref) <= bound)

        p = rng.random(n).astype(np.float32)
        p[rng.random(n) < 0.3] *= 1e-3   # softmax-like spread
        acc = core.kv_codec_attend(name, "accumulate", raw, p, D, t, n, cpu_path=path)
        ref = p.astype(np.float64) @ keys
        bound = 1e-5 * (p.astype(np.float64) @ np.abs(keys)).max()
        assert acc.shape == (D,)
        assert np.all(np.abs(acc - ref) <= bound), (t, n, np.max(np.abs(acc - ref)) / bound * 1e-5)


# ------------------------------------------------------------------ attention through the cache
def reference_attention(q, k, v, n_head, n_head_kv):
    """Causal softmax attention of the last len(q) positions over k, v (float64)."""
    n_q, n_kv = len(q), len(k)
    hd_k, hd_v = k.shape[1] // n_head_kv, v.shape[1] // n_head_kv
    out = np.zeros((n_q, n_head * hd_v))
    for i in range(n_q):
        pos = n_kv - n_q + i
        for h in range(n_head):
            g = h // (n_head // n_head_kv)
            keys = k[:pos + 1, g * hd_k:(g + 1) * hd_k].astype(np.float64)
            values = v[:pos + 1, g * hd_v:(g + 1) * hd_v].astype(np.float64)
            s = keys @ q[i, h * hd_k:(h + 1) * hd_k].astype(np.float64)
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


@pytest.mark.parametrize("kv_k,kv_v", [("deco4", "deco4"), ("deco2", "deco2"), ("deco4", "f16"), ("f16", "deco2")])
@pytest.mark.parametrize("n_kv,n_q", [(300, 1), (600, 1), (300, 300), (600, 37)])
@pytest.mark.parametrize("n_head,n_head_kv,D", [(4, 1, 256), (4, 2, 64)])
def test_attention(kv_k, kv_v, n_kv, n_q, n_head, n_head_kv, D):
    k, v, q_cache = attention_inputs(n_kv, n_head, n_head_kv, D, seed=n_kv + D)
    q = q_cache[n_kv - n_q:]
    for path in PATHS:
        out, k_read, v_read = core.kv_attention(q, k, v, n_head, n_head_kv, kv_k=kv_k, kv_v=kv_v, cpu_path=path,
                                                q_cache=q_cache)
        ref = reference_attention(q, k_read, v_read, n_head, n_head_kv)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max(), err_msg=path)
    # What attention read: sink row and ring rows in fp16, complete blocks as the reference encodes
    # them from the fp16 rows and the KV head's query energies (its query heads, in order).
    n_gqa = n_head // n_head_kv
    committed = n_kv // S * S
    for kind, fmt, rows, read in (("k", kv_k, k, k_read), ("v", kv_v, v, v_read)):
        for g in range(n_head_kv):
            x = R.f16(rows[:, g * D:(g + 1) * D])
            got = read[:, g * D:(g + 1) * D]
            if fmt == "f16":
                np.testing.assert_array_equal(got, x)
                continue
            bits = FORMATS[fmt]
            np.testing.assert_array_equal(got[0], x[0], err_msg="sink row")
            np.testing.assert_array_equal(got[committed:], x[committed:], err_msg="ring rows")
            heads = q_cache.reshape(n_kv, n_head, D)[:, g * n_gqa:(g + 1) * n_gqa].transpose(1, 0, 2)
            e = R.query_energy_rows(heads) if kind == "k" else None
            for b in range(n_kv // S):
                blk = R.deco_encode_block(x[b * S:(b + 1) * S], None if e is None else e[b * S:(b + 1) * S], bits,
                                          n_skip=1 if b == 0 else 0)
                dec = R.deco_decode_block(blk, D, bits)
                lo = 1 if b == 0 else 0
                want = dec[lo:]
                have = got[b * S + lo:(b + 1) * S]
                assert np.all(np.abs(have - want) <= 1e-6 * np.abs(want).max(axis=1, keepdims=True)), (kind, g, b)


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("n_kv", [300, 600])
def test_attention_append_batch(name, n_kv):
    """Token-by-token decode and one prefill compress the same fp16 rows: the last query's output is
    identical, and so is everything attention reads."""
    n_head, n_head_kv, D = 4, 2, 64
    k, v, q_cache = attention_inputs(n_kv, n_head, n_head_kv, D, seed=5)
    q = q_cache[-1:]
    outs = [core.kv_attention(q, k, v, n_head, n_head_kv, kv_k=name, kv_v=name, q_cache=q_cache, append_batch=b)
            for b in (1, 0, 100)]
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ had4 / had2: the data-free baselines
@pytest.mark.parametrize("name,bits", [("had4", 4), ("had2", 2)])
@pytest.mark.parametrize("t0", [0, 256])
def test_hadamard_baseline_bit_exact(name, bits, t0):
    """The same layout and quantizer as deco at the same bits, with mu = 0, w = 1 and no sink row."""
    f = {f["name"]: f for f in core.kv_formats()}[name]
    assert (f["tokens_per_block"], f["n_sink"], f["wants_query_energy"]) == (256, 0, False)
    assert f["bits_per_element_256"] == (4.5 if bits == 4 else 2.5)
    D = 256
    x = kv_rows(S, D, seed=11 + t0)
    raw = core.kv_codec_append(name, x, t0, query_energy(S, D, seed=3))  # energy ignored
    ref = R.deco_encode_block(x, None, bits, fitted=False)
    np.testing.assert_array_equal(block(raw, D, bits, t0 // S), ref)
    dec = core.kv_codec_read(name, raw, D, t0, S)
    np.testing.assert_allclose(dec, R.deco_decode_block(ref, D, bits), rtol=0, atol=1e-6 * np.abs(dec).max())
    # the fit is what deco adds: on rows with offset outlier channels it must cut the error
    fitted = core.kv_codec_read("deco" + str(bits), core.kv_codec_append("deco" + str(bits), x, t0), D, t0, S)
    err = lambda d: np.linalg.norm(d[1:] - x[1:]) / np.linalg.norm(x[1:])  # noqa: E731
    assert err(fitted) < 0.8 * err(dec)
