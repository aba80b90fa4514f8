"""The KV cache around the formats (cpp/kv/README.md): fp16 sink rows, the fp16 ring (rows of blocks
not full yet and the newest kv_window positions) and the format's blocks; which of them attention
reads; the bytes they take; decode against prefill, truncate and reset on a tiny model.

Every expectation is derived here from the README's rules with numpy, not from the core:
  first_ring(n) = max(min(n, n_sink), min(n // S * S, n - kv_window))
  positions [0, n_sink) are read from the sink, [n_sink, first_ring) from the blocks, the rest
  from the ring, R = round_up(max(kv_window, S if S > 1 else 0), 64) rows of fp16.
Block formats that are not in the core (deco4 / deco2 / had4 / had2) are skipped with a message;
codebook formats (cq*) are left to their own tests."""
import numpy as np
import pytest

from decollama._native import core

import tiny_models

FORMATS = {f["name"]: f for f in core.kv_formats()}
S1_FORMATS = ["f32", "f16", "q8_0", "q4_0"]  # one token per block, no sink
BLOCK_FORMATS = ["deco4", "deco2", "had4", "had2"]  # 256 tokens per block (deco*: BOS sink, fitted keys)


def fmt_info(name):
    if name not in FORMATS:
        pytest.skip(f"KV format {name} is not in this core yet (kv_formats: {', '.join(FORMATS)})")
    return FORMATS[name]


def round_up(x, a):
    return (x + a - 1) // a * a


def ring_rows(f, kv_window, n_ctx=None):
    s = f["tokens_per_block"]
    r = round_up(max(kv_window, s if s > 1 else 0), 64)
    return r if n_ctx is None else min(r, round_up(n_ctx, 64))  # never more rows than the context


def first_ring(f, n, kv_window):
    """First position attention reads from the ring with n positions stored."""
    s = f["tokens_per_block"]
    return max(min(n, f["n_sink"]), min(n // s * s, n - kv_window))


def fp16(x):
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def dequantize(x, fmt):
    """What an S = 1 format stores, decoded (llama.cpp's q8_0 / q4_0 block math), row by row."""
    x = np.asarray(x, np.float32)
    if fmt == "f32":
        return x.copy()
    if fmt == "f16":
        return fp16(x)
    b = x.reshape(-1, 32)
    if fmt == "q8_0":
        d = np.abs(b).max(axis=1, keepdims=True) / np.float32(127)
        inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
        codes = np.clip(np.trunc(b * inv + np.copysign(np.float32(0.5), b * inv)), -128, 127)
        return (codes * fp16(d)).reshape(x.shape)
    assert fmt == "q4_0"
    m = b[np.arange(len(b)), np.abs(b).argmax(axis=1)][:, None]
    d = m / np.float32(-8)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    codes = np.minimum(15, np.trunc(b * inv + np.float32(8.5))).astype(np.int32)
    return ((codes - 8) * fp16(d)).reshape(x.shape)


def scored_query(q, k_fmt):
    """The query the K format's block kernels score with: q8_0 / q4_0 keys take integer dots against
    the query in q8_0; sink and ring rows (fp16) are always scored with the fp32 query."""
    return dequantize(q, "q8_0") if k_fmt in ("q8_0", "q4_0") else q


def attention_reference(q, k, v, n_head, n_head_kv, window, q_blocks, block_lo, block_hi):
    """float64 causal attention of the last len(q) positions over the rows as read; keys in
    [block_lo, block_hi) are scored with q_blocks (the format's prepared query), the others with q."""
    n_q, n_kv = len(q), len(k)
    hd_k, hd_v = k.shape[1] // n_head_kv, v.shape[1] // n_head_kv
    out = np.zeros((n_q, n_head * hd_v))
    from_blocks = (np.arange(n_kv) >= block_lo) & (np.arange(n_kv) < block_hi)
    for i in range(n_q):
        pos = n_kv - n_q + i
        lo = max(0, pos - window + 1) if window > 0 else 0
        for h in range(n_head):
            g = h // (n_head // n_head_kv)
            keys = k[lo:pos + 1, g * hd_k:(g + 1) * hd_k].astype(np.float64)
            values = v[lo:pos + 1, g * hd_v:(g + 1) * hd_v].astype(np.float64)
            qa = q[i, h * hd_k:(h + 1) * hd_k].astype(np.float64)
            qb = q_blocks[i, h * hd_k:(h + 1) * hd_k].astype(np.float64)
            s = np.where(from_blocks[lo:pos + 1], keys @ qb, keys @ qa)
            p = np.exp(s - s.max())
            out[i, h * hd_v:(h + 1) * hd_v] = (p / p.sum()) @ values
    return out


def assert_rel(actual, expected, rel, what=""):
    err = np.abs(np.asarray(actual, np.float64) - expected).max()
    scale = np.abs(expected).max()
    assert err <= rel * scale, f"{what}: max error {err:.3g} > {rel:g} * max |ref| {scale:.3g}"


def random_qkv(n_q, n_kv, n_head, n_head_kv, head_dim, seed=0):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((n_q, n_head * head_dim)) / np.sqrt(head_dim)).astype(np.float32)  # scale folded in
    k = rng.standard_normal((n_kv, n_head_kv * head_dim)).astype(np.float32)
    v = rng.standard_normal((n_kv, n_head_kv * head_dim)).astype(np.float32)
    q_cache = (rng.standard_normal((n_kv, n_head * head_dim)) / np.sqrt(head_dim)).astype(np.float32)
    return q, k, v, q_cache


def hook_kwargs(fmt, q_cache):
    """kv_attention arguments a format needs (fitted keys take the queries of every position)."""
    return {"q_cache": q_cache} if FORMATS[fmt]["wants_query_energy"] else {}


# ---- 1. window semantics on a one-layer cache (kv_attention) -------------------------------------

@pytest.mark.parametrize("fmt", S1_FORMATS)
@pytest.mark.parametrize("kv_window", [1, 40, 64, 100, 149, 150, 400])
def test_window_rows_are_fp16_older_rows_the_format(fmt, kv_window):
    n_kv, n_head, n_head_kv, hd = 150, 4, 2, 64
    q, k, v, _ = random_qkv(1, n_kv, n_head, n_head_kv, hd, seed=kv_window)
    _, k0, v0 = core.kv_attention(q, k, v, n_head, n_head_kv, kv_k=fmt, kv_v=fmt, append_batch=7)
    _, kw, vw = core.kv_attention(q, k, v, n_head, n_head_kv, kv_k=fmt, kv_v=fmt, append_batch=7,
                                  kv_window=kv_window)
    r = first_ring(FORMATS[fmt], n_kv, kv_window)
    assert r == max(0, n_kv - kv_window)
    for name, x, read0, readw in (("k", k, k0, kw), ("v", v, v0, vw)):
        np.testing.assert_allclose(read0, dequantize(x, fmt), rtol=0, atol=1e-6, err_msg=f"{name}: the format")
        np.testing.assert_array_equal(readw[:r], read0[:r], err_msg=f"{name}: rows before the window")
        np.testing.assert_array_equal(readw[r:], fp16(x[r:]), err_msg=f"{name}: window rows are fp16")


ATTENTION_CASES = [
    # n_q, n_head, n_head_kv, window, append_batch, n_threads
    (150, 4, 2, 0, 0, 2),    # prefill, GQA, all at once
    (150, 4, 2, 0, 1, 2),    # prefill, token by token appends
    (150, 4, 1, 30, 37, 2),  # prefill, MQA, sliding window inside tiles
    (1, 4, 2, 0, 1, 3),      # decode: the key range split across threads and merged
    (1, 8, 2, 50, 0, 3),     # decode, sliding window, 4 query heads per KV head
    (5, 4, 4, 70, 64, 1),    # a few queries, no grouping
]


@pytest.mark.parametrize("fmt", ["f16", "q8_0", "q4_0"])
@pytest.mark.parametrize("kv_window", [0, 1, 64, 100, 400])
@pytest.mark.parametrize("n_q, n_head, n_head_kv, window, append_batch, n_threads", ATTENTION_CASES)
def test_fused_attention_reads_blocks_then_ring(fmt, kv_window, n_q, n_head, n_head_kv, window, append_batch,
                                                n_threads):
    n_kv, hd = 150, 64
    q, k, v, _ = random_qkv(n_q, n_kv, n_head, n_head_kv, hd, seed=n_q + kv_window)
    out, kr, vr = core.kv_attention(q, k, v, n_head, n_head_kv, kv_k=fmt, kv_v=fmt, window=window,
                                    n_threads=n_threads, append_batch=append_batch, kv_window=kv_window)
    r = first_ring(FORMATS[fmt], n_kv, kv_window)
    np.testing.assert_array_equal(kr[r:], fp16(k[r:]))
    ref = attention_reference(q, kr, vr, n_head, n_head_kv, window, scored_query(q, fmt), 0, r)
    assert_rel(out, ref, 1e-4, f"{fmt} kv_window={kv_window}")


@pytest.mark.parametrize("fmt", S1_FORMATS)
@pytest.mark.parametrize("kv_window", [0, 64, 100])
def test_append_batch_does_not_change_what_attention_sees(fmt, kv_window):
    n_kv, n_head, n_head_kv, hd = 150, 4, 2, 64
    q, k, v, _ = random_qkv(3, n_kv, n_head, n_head_kv, hd, seed=11)
    runs = [core.kv_attention(q, k, v, n_head, n_head_kv, kv_k=fmt, kv_v=fmt, append_batch=b, kv_window=kv_window,
                              n_threads=2) for b in (0, 1, 37)]
    for out, kr, vr in runs[1:]:
        np.testing.assert_array_equal(kr, runs[0][1])
        np.testing.assert_array_equal(vr, runs[0][2])
        np.testing.assert_array_equal(out[-1], runs[0][0][-1])


@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
@pytest.mark.parametrize("kv_window", [0, 64, 300])
def test_block_format_sink_ring_and_blocks(fmt, kv_window):
    """Block formats: the sink and the ring rows are the fp16 inputs, complete blocks are compressed
    (the same blocks whatever the window and however the rows were appended), attention matches
    numpy on the rows as read."""
    f = fmt_info(fmt)
    s, sink = f["tokens_per_block"], f["n_sink"]
    n_head, n_head_kv, hd = 4, 2, 64
    n_kv = 2 * s + 88  # two complete blocks and a pending one
    q, k, v, q_cache = random_qkv(n_kv, n_kv, n_head, n_head_kv, hd, seed=3)
    kw = hook_kwargs(fmt, q_cache)
    base = core.kv_attention(q[-1:], k, v, n_head, n_head_kv, kv_k=fmt, kv_v=fmt, **kw)
    r = first_ring(f, n_kv, kv_window)
    for batch in (0, 1, 100):
        _, kr, vr = core.kv_attention(q[-1:], k, v, n_head, n_head_kv, kv_k=fmt, kv_v=fmt, append_batch=batch,
                                      kv_window=kv_window, **kw)
        for name, x, read, read0 in (("k", k, kr, base[1]), ("v", v, vr, base[2])):
            np.testing.assert_array_equal(read[:sink], fp16(x[:sink]), err_msg=f"{name}: sink rows")
            np.testing.assert_array_equal(read[r:], fp16(x[r:]), err_msg=f"{name}: ring rows")
            np.testing.assert_array_equal(read[sink:r], read0[sink:r], err_msg=f"{name}: blocks")
            assert np.abs(read[sink:r] - fp16(x[sink:r])).max() > 1e-3, f"{name}: blocks are not compressed"
    for n_q, window, n_threads in ((n_kv, 0, 2), (1, 0, 3), (40, 100, 2)):
        out, kr, vr = core.kv_attention(q[-n_q:], k, v, n_head, n_head_kv, kv_k=fmt, kv_v=fmt, window=window,
                                        n_threads=n_threads, append_batch=64, kv_window=kv_window, **kw)
        ref = attention_reference(q[-n_q:], kr, vr, n_head, n_head_kv, window, q[-n_q:], 0, 0)
        assert_rel(out, ref, 1e-4, f"{fmt} n_q={n_q} window={window}")


# ---- 2. memory ----------------------------------------------------------------------------------

def block_bytes(name, d, s):
    """Bytes of one block of s tokens of one head of d channels (README layouts)."""
    g = d // 64
    return {
        "f32": lambda: 4 * d,
        "f16": lambda: 2 * d,
        "q8_0": lambda: 34 * d // 32,
        "q4_0": lambda: 18 * d // 32,
        "deco4": lambda: 4 * d + s * (4 + 2 * g + 32 * g),
        "deco2": lambda: 4 * d + s * (4 + 2 * g + 16 * g),
        "had4": lambda: 4 * d + s * (4 + 2 * g + 32 * g),  # deco's layout, mu = 0, w = 1
        "had2": lambda: 4 * d + s * (4 + 2 * g + 16 * g),
    }[name]()


LAYOUT_FORMATS = ["f32", "f16", "q8_0", "q4_0", "deco4", "deco2", "had4", "had2"]


def stream_bytes(name, kind, d, n_ctx, kv_window):
    f = FORMATS[name]
    s, r = f["tokens_per_block"], ring_rows(f, kv_window, n_ctx)
    energy = 4 * r * d if kind == "k" and f["wants_query_energy"] and r > 0 else 0
    return round_up(energy + 2 * r * d + 2 * f["n_sink"] * d + (n_ctx // s) * block_bytes(name, d, s), 64)


def stream_bytes_in_use(name, kind, d, n, kv_window):
    f = FORMATS[name]
    s, r = f["tokens_per_block"], ring_rows(f, kv_window)
    energy = kind == "k" and f["wants_query_energy"] and r > 0
    ring = n - first_ring(f, n, kv_window)
    return (n // s) * block_bytes(name, d, s) + min(n, f["n_sink"]) * 2 * d + ring * d * (2 + (4 if energy else 0))


def test_every_codebook_free_format_has_a_layout_here():
    for f in FORMATS.values():
        if f["codebook_c"] == 0:
            assert f["name"] in LAYOUT_FORMATS, f"add the README layout of {f['name']} to block_bytes()"
            s = f["tokens_per_block"]
            assert f["bits_per_element_256"] == 8 * block_bytes(f["name"], 256, s) / (s * 256)
    expected = {"deco4": (1, True, 4.5), "deco2": (1, True, 2.5), "had4": (0, False, 4.5), "had2": (0, False, 2.5)}
    for name, (sink, energy, bits) in expected.items():
        if name in FORMATS:
            f = FORMATS[name]
            assert (f["tokens_per_block"], f["n_sink"], f["wants_query_energy"]) == (256, sink, energy)
            assert f["bits_per_element_256"] == bits


def tiny_llama(tmp_path_factory, n_layer):
    """A tiny Llama with head_dim 64 (deco* needs a multiple of 64), 4 heads, 2 KV heads."""
    d = tmp_path_factory.mktemp(f"tiny-llama64-{n_layer}")
    ck = tiny_models.make_tiny_checkpoint("llama", d / "hf", head_dim=64, num_hidden_layers=n_layer)
    return str(tiny_models.convert(ck, d / "model.gguf", "f32"))


@pytest.fixture(scope="module")
def llama2l(tmp_path_factory):
    return tiny_llama(tmp_path_factory, 2)


@pytest.fixture(scope="module")
def llama1l(tmp_path_factory):
    """One layer: a position's keys and values depend on its token only, so decode and prefill store
    the same rows and compare exactly wherever their reads coincide."""
    return tiny_llama(tmp_path_factory, 1)


def tokens(n, seed=0):
    return np.random.default_rng(seed).integers(0, 600, n).tolist()  # below every tiny vocabulary


def check_in_use(m, k_names, v_names, kv_window):
    info = m.kv_info()
    n, n_layer, n_head_kv, d = m.n_past, m.n_layer, m.n_head_kv, m.head_dim
    at = n if n > 0 else m.n_ctx  # per-layer bits: at n_ctx while empty
    per_k = [n_head_kv * stream_bytes_in_use(k_names[il], "k", d, at, kv_window) for il in range(n_layer)]
    per_v = [n_head_kv * stream_bytes_in_use(v_names[il], "v", d, at, kv_window) for il in range(n_layer)]
    for il, layer in enumerate(info["layers"]):
        assert layer["k_bits_per_element"] == pytest.approx(8 * per_k[il] / (at * d * n_head_kv), rel=1e-12)
        assert layer["v_bits_per_element"] == pytest.approx(8 * per_v[il] / (at * d * n_head_kv), rel=1e-12)
    assert info["k_bits_per_element"] == pytest.approx(np.mean([8 * b / (at * d * n_head_kv) for b in per_k]))
    assert info["v_bits_per_element"] == pytest.approx(np.mean([8 * b / (at * d * n_head_kv) for b in per_v]))
    elements = n_layer * n_head_kv * 2 * d
    if n > 0:
        assert info["bytes_in_use"] == pytest.approx(sum(per_k) + sum(per_v), rel=1e-12)
        assert info["bits_per_element"] == pytest.approx(8 * (sum(per_k) + sum(per_v)) / (n * elements), rel=1e-12)
    else:
        assert info["bytes_in_use"] == 0
        assert info["bits_per_element"] == pytest.approx(8 * info["bytes_per_token"] / elements, rel=1e-12)


@pytest.mark.parametrize("fmt", LAYOUT_FORMATS)
@pytest.mark.parametrize("kv_window", [0, 100])
def test_bytes_allocated_and_in_use(llama2l, fmt, kv_window):
    fmt_info(fmt)
    n_ctx = 601  # not a multiple of 64 (stream rounding) nor of 256 (whole blocks only)
    m = core.Model(llama2l, n_ctx=n_ctx, n_threads=2, kv_k=fmt, kv_v=fmt, kv_window=kv_window)
    n_layer, n_head_kv, d = m.n_layer, m.n_head_kv, m.head_dim
    info = m.kv_info()
    per_layer = n_head_kv * (stream_bytes(fmt, "k", d, n_ctx, kv_window) + stream_bytes(fmt, "v", d, n_ctx, kv_window))
    assert info["window"] == kv_window
    assert info["bytes_allocated"] == n_layer * per_layer
    assert info["bytes_per_token"] == info["bytes_allocated"] / n_ctx
    for layer in info["layers"]:
        assert layer["bytes_per_token"] == per_layer / n_ctx
        s = FORMATS[fmt]["tokens_per_block"]
        assert layer["k_nominal_bits"] == layer["v_nominal_bits"] == 8 * block_bytes(fmt, d, s) / (s * d)
    names = [fmt] * n_layer
    check_in_use(m, names, names, kv_window)
    toks = tokens(n_ctx)
    for n in (1, 99, 255, 256, 300, 513, n_ctx):
        m.eval(toks[m.n_past:n], logits="none")
        assert m.n_past == n
        check_in_use(m, names, names, kv_window)


def test_mixed_formats_per_layer_and_kind(llama2l):
    k_names = ["q4_0", "deco4" if "deco4" in FORMATS else "f16"]
    v_names = ["deco2" if "deco2" in FORMATS else "f32", "q8_0"]
    n_ctx, kv_window = 300, 40
    m = core.Model(llama2l, n_ctx=n_ctx, n_threads=2, kv_k=k_names, kv_v=v_names, kv_window=kv_window)
    d, n_head_kv = m.head_dim, m.n_head_kv
    expected = sum(n_head_kv * (stream_bytes(k, "k", d, n_ctx, kv_window) + stream_bytes(v, "v", d, n_ctx, kv_window))
                   for k, v in zip(k_names, v_names))
    assert m.kv_info()["bytes_allocated"] == expected
    m.eval(tokens(270), logits="none")
    check_in_use(m, k_names, v_names, kv_window)


# ---- 3. the cache of a model: decode vs prefill, truncate, reset ------------------------------------

def read_all(m, layer, kind, n):
    return np.concatenate([m.read_kv(layer, kind, h, 0, n) for h in range(m.n_head_kv)], axis=1)


def decode_logits(m, toks):
    return np.concatenate([m.eval([t]) for t in toks])


def same_reads(f, n, p, kv_window):
    """Whether the query at position p reads the same rows from the same places in a prefill of n
    positions as in decode (p + 1 stored)."""
    return min(first_ring(f, n, kv_window), p + 1) == first_ring(f, p + 1, kv_window)


FORMAT_CASES = [(f, w) for f in S1_FORMATS + BLOCK_FORMATS for w in (0, 64)]


@pytest.mark.parametrize("fmt, kv_window", FORMAT_CASES)
def test_decode_matches_prefill_where_reads_coincide(llama1l, fmt, kv_window):
    f = fmt_info(fmt)
    n = 600 if f["tokens_per_block"] > 1 else 200
    toks = tokens(n, seed=1)
    m = core.Model(llama1l, n_ctx=640, n_threads=2, kv_k=fmt, kv_v=fmt, kv_window=kv_window)
    prefill = m.eval(toks, logits="all")
    rows = {(kind, h): m.read_kv(0, kind, h, 0, n) for kind in "kv" for h in range(m.n_head_kv)}
    m.reset()
    decode = decode_logits(m, toks)
    for (kind, h), read in rows.items():  # one layer: the same inputs, stored alike
        np.testing.assert_array_equal(m.read_kv(0, kind, h, 0, n), read, err_msg=f"{kind} head {h}")
    positions = [p for p in range(n) if same_reads(f, n, p, kv_window)]
    assert positions[-1] == n - 1
    if kv_window == 0:
        s = f["tokens_per_block"]
        assert positions[-(n % s) - 1] == n // s * s - 1  # from the last block boundary on
    assert_rel(decode[positions], prefill[positions], 1e-4, f"{fmt} positions {positions[:3]}...")


@pytest.fixture(scope="module")
def gemma_tiny(tmp_path_factory):
    return str(tiny_models.tiny_gguf("gemma3", "f32", tmp_path_factory))  # sliding layers (window 8), MQA


@pytest.mark.parametrize("arch", ["llama2l", "gemma_tiny"])
@pytest.mark.parametrize("fmt", S1_FORMATS)
def test_decode_matches_prefill_two_layers(request, arch, fmt):
    """kv_window = 0 only: with a window, a prefill's queries read the blocks below n - kv_window
    (n = the batch's end) where decode read the fp16 ring, so earlier positions' outputs, hence
    the second layer's rows, differ (the one-layer test above covers the window)."""
    toks = tokens(200, seed=2)
    m = core.Model(request.getfixturevalue(arch), n_ctx=256, n_threads=2, kv_k=fmt, kv_v=fmt)
    prefill = m.eval(toks, logits="all")
    m.reset()
    decode = decode_logits(m, toks)
    assert_rel(decode[-1], prefill[-1], 1e-4, fmt)


@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
def test_block_format_decode_after_blockwise_prefill_two_layers(llama2l, fmt):
    """Two layers: a prefill commits its complete blocks before its queries attend, so a position
    reads its own block compressed where decode read it in fp16 (the first layer's outputs, hence
    the second layer's blocks, differ: by design). Evaluating block by block sees exactly what one
    prefill sees, and decode after the last block boundary then matches it."""
    s = fmt_info(fmt)["tokens_per_block"]
    n = 2 * s + 88
    toks = tokens(n, seed=2)
    m = core.Model(llama2l, n_ctx=n, n_threads=2, kv_k=fmt, kv_v=fmt)
    prefill = m.eval(toks, logits="all")
    rows = {kind: read_all(m, 1, kind, n) for kind in "kv"}
    m.reset()
    blockwise = np.concatenate([m.eval(toks[:s], logits="all"), m.eval(toks[s:2 * s], logits="all")])
    decode = decode_logits(m, toks[2 * s:])
    assert_rel(blockwise, prefill[:2 * s], 1e-4, f"{fmt} block by block")
    assert_rel(decode, prefill[2 * s:], 1e-4, f"{fmt} decode after the blocks")
    for kind in "kv":  # the second layer's rows as read (a batch of 512 rows vs 256: fp16 ulps)
        assert_rel(read_all(m, 1, kind, n), rows[kind], 1e-3, f"layer 1 {kind}")


@pytest.mark.parametrize("fmt", ["f32", "q8_0", "q4_0"] + BLOCK_FORMATS)
@pytest.mark.parametrize("n, kv_window", [(60, 64), (100, 100), (200, 256)])
def test_window_covering_everything_is_the_f16_cache(llama2l, fmt, n, kv_window):
    """With every position inside the window (and, for block formats, no complete block), every
    row is read in fp16: the logits are those of an f16 cache, prefill and decode alike."""
    f = fmt_info(fmt)
    if n >= f["tokens_per_block"] > 1:
        pytest.skip("a complete block is compressed")
    toks = tokens(n, seed=3)
    ref = core.Model(llama2l, n_ctx=256, n_threads=2, kv_k="f16", kv_v="f16").eval(toks, logits="all")
    m = core.Model(llama2l, n_ctx=256, n_threads=2, kv_k=fmt, kv_v=fmt, kv_window=kv_window)
    assert_rel(m.eval(toks, logits="all"), ref, 1e-4, "prefill")
    m.reset()
    assert_rel(decode_logits(m, toks), ref, 1e-4, "decode")


@pytest.mark.parametrize("fmt", ["q8_0", "q4_0", "f32"])
@pytest.mark.parametrize("kv_window", [0, 64, 100])
def test_model_window_rows_and_truncate(llama1l, fmt, kv_window):
    """Model level: the newest kv_window rows as read are the f16 cache's rows, the older ones the
    format's; truncate(n) keeps n and refills the window rows the ring no longer holds from the
    blocks (fp16 of the format's rows); a batch evaluated again gives a fresh run's logits."""
    f = FORMATS[fmt]
    n, cut = 200, 151
    toks = tokens(n, seed=4)

    def model(name, w):
        return core.Model(llama1l, n_ctx=256, n_threads=2, kv_k=name, kv_v=name, kv_window=w)

    runs = {}
    for name, w in (("f16", 0), (fmt, 0)):
        mm = model(name, w)
        mm.eval(toks, logits="none")
        runs[name, w] = {kind: read_all(mm, 0, kind, n) for kind in "kv"}
    half = runs["f16", 0]          # fp16 of the rows (one layer: the same rows whatever the format)
    quant = runs[fmt, 0]           # the format's rows
    m = model(fmt, kv_window)
    m.eval(toks, logits="none")
    r = first_ring(f, n, kv_window)
    for kind in "kv":
        read = read_all(m, 0, kind, n)
        np.testing.assert_array_equal(read[:r], quant[kind][:r], err_msg=f"{kind}: before the window")
        np.testing.assert_array_equal(read[r:], half[kind][r:], err_msg=f"{kind}: window")

    assert m.truncate(cut) == cut and m.n_past == cut
    need = first_ring(f, cut, kv_window)
    ring_lo = max(0, n - ring_rows(f, kv_window))  # oldest position the ring still held
    refilled = slice(need, max(need, min(ring_lo, cut)))
    kept_ring = slice(max(need, ring_lo), cut)
    for kind in "kv":
        read = read_all(m, 0, kind, cut)
        np.testing.assert_array_equal(read[:need], quant[kind][:need], err_msg=f"{kind}: blocks")
        np.testing.assert_array_equal(read[refilled], fp16(quant[kind][refilled]), err_msg=f"{kind}: refilled")
        np.testing.assert_array_equal(read[kept_ring], half[kind][kept_ring], err_msg=f"{kind}: ring")

    again = m.eval(toks[cut:], logits="all")
    fresh = model(fmt, kv_window)
    fresh.eval(toks[:cut], logits="none")
    assert_rel(again, fresh.eval(toks[cut:], logits="all"), 1e-4, "evaluated again")
    assert m.truncate(n + 10) == n  # nothing to drop


@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
@pytest.mark.parametrize("kv_window", [0, 64])
def test_block_format_truncate(llama1l, fmt, kv_window):
    f = fmt_info(fmt)
    s = f["tokens_per_block"]
    n = 2 * s + 88
    toks = tokens(n, seed=5)

    def model():
        return core.Model(llama1l, n_ctx=n + 40, n_threads=2, kv_k=fmt, kv_v=fmt, kv_window=kv_window)

    m = model()
    m.eval(toks, logits="none")
    before = {kind: read_all(m, 0, kind, n) for kind in "kv"}
    assert m.truncate(n - 11) == n - 11  # in the pending block: kept as asked
    assert m.truncate(2 * s) == 2 * s    # a block boundary
    assert m.truncate(s + 44) == s       # inside a compressed block: back to its start
    assert m.n_past == s
    need = first_ring(f, s, kv_window)
    for kind in "kv":
        read = read_all(m, 0, kind, s)
        np.testing.assert_array_equal(read[:need], before[kind][:need], err_msg=f"{kind}: sink and blocks")
        np.testing.assert_array_equal(read[need:], fp16(before[kind][need:s]), err_msg=f"{kind}: refilled")
    again = m.eval(toks[s:], logits="all")
    fresh = model()
    fresh.eval(toks[:s], logits="none")
    assert_rel(again, fresh.eval(toks[s:], logits="all"), 1e-4, "evaluated again")
    assert m.truncate(s - 1) == 0  # inside the first block
    assert m.n_past == 0


@pytest.mark.parametrize("fmt, kv_window", FORMAT_CASES)
def test_reset_clears(llama2l, fmt, kv_window):
    fmt_info(fmt)
    toks = tokens(300, seed=6)
    m = core.Model(llama2l, n_ctx=320, n_threads=2, kv_k=fmt, kv_v=fmt, kv_window=kv_window)
    first = m.eval(toks, logits="all")
    m.reset()
    assert m.n_past == 0
    info = m.kv_info()
    assert info["n_past"] == 0 and info["bytes_in_use"] == 0
    fresh = core.Model(llama2l, n_ctx=320, n_threads=2, kv_k=fmt, kv_v=fmt, kv_window=kv_window)
    np.testing.assert_array_equal(m.eval(toks[:20], logits="all"), fresh.eval(toks[:20], logits="all"))
    m.reset()
    np.testing.assert_array_equal(m.eval(toks, logits="all"), first)


# ---- 4. errors ----------------------------------------------------------------------------------

def test_negative_kv_window_is_rejected(llama2l):
    with pytest.raises(ValueError, match="kv_window"):
        core.Model(llama2l, n_ctx=64, kv_window=-1)
    q, k, v, _ = random_qkv(1, 8, 2, 1, 64)
    with pytest.raises(ValueError, match="kv_window"):
        core.kv_attention(q, k, v, 2, 1, kv_window=-1)


@pytest.mark.parametrize("fmt, kv_window", FORMAT_CASES)
def test_evaluating_past_n_ctx_is_an_error(llama2l, fmt, kv_window):
    fmt_info(fmt)
    n_ctx = 300  # block formats: one complete block, 44 positions pending
    toks = tokens(n_ctx + 5, seed=7)
    m = core.Model(llama2l, n_ctx=n_ctx, n_threads=2, kv_k=fmt, kv_v=fmt, kv_window=kv_window)
    with pytest.raises(ValueError, match="n_ctx"):
        m.eval(toks, logits="none")
    assert m.n_past == 0
    last = m.eval(toks[:n_ctx])
    with pytest.raises(ValueError, match="n_ctx"):
        m.eval(toks[n_ctx:n_ctx + 1])
    assert m.n_past == n_ctx
    with pytest.raises(ValueError):
        m.read_kv(0, "k", 0, n_ctx - 1, 2)
    with pytest.raises(ValueError):
        m.truncate(-1)
    m.truncate(n_ctx - 1)
    m.eval(toks[m.n_past:n_ctx - 1], logits="none")
    np.testing.assert_allclose(m.eval(toks[n_ctx - 1:n_ctx]), last, rtol=0, atol=1e-4 * np.abs(last).max())


@pytest.mark.parametrize("fmt", BLOCK_FORMATS)
def test_block_format_context_shorter_than_a_block(llama2l, fmt):
    """n_ctx below one block: no block is allocated, everything is read from the sink and the ring
    (the f16 cache's logits)."""
    fmt_info(fmt)
    toks = tokens(100, seed=8)
    m = core.Model(llama2l, n_ctx=100, n_threads=2, kv_k=fmt, kv_v=fmt)
    ref = core.Model(llama2l, n_ctx=100, n_threads=2).eval(toks, logits="all")
    assert_rel(m.eval(toks, logits="all"), ref, 1e-4, fmt)


def test_window_beyond_the_context_is_capped(tmp_path_factory):
    """A kv_window larger than n_ctx allocates a ring of at most round_up(n_ctx, 64) rows."""
    path = str(tiny_models.tiny_gguf("llama", "f32", tmp_path_factory))
    small = core.Model(path, n_ctx=64, n_threads=1, kv_k="f32", kv_v="f16", kv_window=64)
    huge = core.Model(path, n_ctx=64, n_threads=1, kv_k="f32", kv_v="f16", kv_window=10 ** 12)
    assert huge.kv_info()["bytes_allocated"] == small.kv_info()["bytes_allocated"]
    np.testing.assert_array_equal(small.eval(list(range(1, 40)), logits="last"),
                                  huge.eval(list(range(1, 40)), logits="last"))
