"""CQ KV formats (cq4 / cq2 / cq1) and their calibration: the native encoder bit-exact with the numpy
reference (python/decollama/kv_reference.py) on every CPU path, exact reads, fused scores / accumulate
on every path, fused attention against numpy, k-means against the reference's, and the codebook GGUF
from decollama-calibrate (round trip through a tiny model, errors)."""
import importlib.util
import pathlib

import numpy as np
import pytest

from decollama._native import core

import tiny_models

_P = pathlib.Path(__file__).resolve().parent.parent / "python" / "decollama" / "kv_reference.py"
_spec = importlib.util.spec_from_file_location("kv_reference_for_cq", _P)
R = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(R)

CQ = {"cq4": 2, "cq2": 4, "cq1": 8}
ALL_PATHS = ("scalar", "avx2", "avx512")
PATHS = ALL_PATHS[:ALL_PATHS.index(core.system_info()["best_cpu_path"]) + 1]  # what this CPU runs


def make_book(D, c, seed=0, n_head=None):
    """Codebook [G, 256, c] (or [n_head, G, 256, c]) with duplicated centroids (ties: first index wins),
    and a metric [D] (or [n_head, D]) with a zero channel."""
    rng = np.random.default_rng(seed)
    shape = (D // c, 256, c) if n_head is None else (n_head, D // c, 256, c)
    book = rng.standard_normal(shape).astype(np.float32)
    book[..., 200:210, :] = book[..., 10:20, :]
    metric = rng.uniform(0.25, 2.0, shape[:-3] + (D,)).astype(np.float32)
    metric[..., 3] = 0.0
    return book, metric


def rows_for(book, n, seed=1):
    """Rows: random, plus rows that are centroids (exact ties with their duplicates)."""
    rng = np.random.default_rng(seed)
    G, _, c = book.shape
    X = rng.standard_normal((n, G * c)).astype(np.float32)
    for r in range(0, n, 7):
        X[r] = np.concatenate([book[g, (r + 3 * g) % 256] for g in range(G)])
    return X


# ------------------------------------------------------------------------------ format table


def test_rows_registered():
    rows = {f["name"]: f for f in core.kv_formats()}
    for name, c in CQ.items():
        f = rows[name]
        assert (f["dim_block"], f["tokens_per_block"], f["n_sink"], f["codebook_c"]) == (c, 1, 1, c)
        assert not f["wants_query_energy"]
        assert f["bits_per_element_256"] == 8.0 / c


# ------------------------------------------------------------------------------ encode / read


@pytest.mark.parametrize("fmt", CQ)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("D", [256, 48])
def test_encode_bit_exact(fmt, path, D):
    c = CQ[fmt]
    book, metric = make_book(D, c, seed=D + c)
    X = rows_for(book, 150)
    want = R.cq_encode(X, book, metric)
    assert np.array_equal(core.cq_encode(X, book, metric, cpu_path=path), want)
    assert np.array_equal(core.cq_encode(X, book, None, cpu_path=path), R.cq_encode(X, book, np.ones(D, np.float32)))
    assert not np.isin(want, np.arange(200, 210)).any()  # duplicates of 10..19: the first index wins


@pytest.mark.parametrize("fmt", CQ)
def test_stream_append_and_read(fmt):
    c = CQ[fmt]
    D = 64
    book, metric = make_book(D, c, seed=c)
    X = rows_for(book, 40)
    raw = core.kv_codec_append(fmt, X, t0=5, codebook=book, metric=metric)
    codes = R.cq_encode(X, book, metric)
    assert len(raw) == (5 + 40) * D // c
    assert raw[5 * D // c:] == codes.tobytes()
    out = core.kv_codec_read(fmt, raw, D, 5, 40, codebook=book, metric=metric)
    assert np.array_equal(out, R.cq_decode(codes, book))


@pytest.mark.parametrize("c", [1, 2, 3, 8])
@pytest.mark.parametrize("K", [1, 7, 37, 256])
@pytest.mark.parametrize("path", PATHS)
def test_nearest_kernel(c, K, path):
    """The kernel the encoder and k-means share: any c, any number of centroids (SIMD tails)."""
    rng = np.random.default_rng(c * 1000 + K)
    C = rng.standard_normal((K, c)).astype(np.float32)
    if K > 4:
        C[K - 1] = C[1]
    X = rng.standard_normal((300, c)).astype(np.float32)
    X[::5] = C[rng.integers(0, K, 60)]
    m = rng.uniform(0.5, 2.0, c).astype(np.float32)
    labels, dist = core.cq_nearest(X, C, m, cpu_path=path)
    want = R.cq_encode(X, C[None], m)[:, 0]
    assert np.array_equal(labels, want)
    d = ((X[:, None, :] - C[None]) ** 2 * m).sum(-1)
    np.testing.assert_allclose(dist, d[np.arange(300), labels], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ fused kernels


@pytest.mark.parametrize("fmt", CQ)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("D", [256, 48, 16])
def test_scores_and_accumulate(fmt, path, D):
    c = CQ[fmt]
    book, metric = make_book(D, c, seed=3 * D + c)
    X = rows_for(book, 128, seed=D)
    raw = core.kv_codec_append(fmt, X, codebook=book, metric=metric)
    codes = R.cq_encode(X, book, metric)
    rng = np.random.default_rng(D)
    q = (rng.standard_normal(D) / np.sqrt(D)).astype(np.float32)
    decoded = R.cq_decode(codes, book).astype(np.float64)
    for t, n in [(0, 64), (64 + 5, 37), (127, 1), (3, 20)]:
        s = core.kv_codec_attend(fmt, "scores", raw, q, D, t, n, cpu_path=path, codebook=book, metric=metric)
        want = R.cq_scores(R.cq_query_table(q, book), codes[t:t + n])
        scale = np.abs(decoded[t:t + n]) @ np.abs(q).astype(np.float64)
        assert np.all(np.abs(s - want) <= 1e-5 * scale + 1e-7), (t, n)
        p = rng.uniform(0, 1, n).astype(np.float32)
        acc = core.kv_codec_attend(fmt, "accumulate", raw, p, D, t, n, cpu_path=path, codebook=book, metric=metric)
        want_acc = p.astype(np.float64) @ decoded[t:t + n]
        acc_scale = p.astype(np.float64) @ np.abs(decoded[t:t + n])
        assert np.all(np.abs(acc - want_acc) <= 1e-5 * acc_scale + 1e-7), (t, n)


def reference_attention(q, k, v, n_head, n_head_kv):
    """Causal attention of the last len(q) positions over k, v (float64)."""
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


@pytest.mark.parametrize("kv_k,kv_v", [("cq4", "cq4"), ("cq2", "cq2"), ("cq1", "cq1"), ("cq2", "f16"),
                                       ("f16", "cq1")])
@pytest.mark.parametrize("n_q,append_batch", [(150, 0), (1, 1), (9, 13)])
@pytest.mark.parametrize("path", PATHS)
def test_kv_attention_matches_numpy(kv_k, kv_v, n_q, append_batch, path):
    n_head, n_head_kv, D, n_kv = 4, 2, 64, 150  # GQA: 2 query heads per KV head
    rng = np.random.default_rng(n_q)
    q = (rng.standard_normal((n_q, n_head * D)) / np.sqrt(D)).astype(np.float32)
    k = rng.standard_normal((n_kv, n_head_kv * D)).astype(np.float32)
    v = rng.standard_normal((n_kv, n_head_kv * D)).astype(np.float32)
    kw = {}
    if kv_k in CQ:
        kw["k_codebook"], kw["k_metric"] = make_book(D, CQ[kv_k], seed=11, n_head=n_head_kv)
    if kv_v in CQ:
        kw["v_codebook"], kw["v_metric"] = make_book(D, CQ[kv_v], seed=12, n_head=n_head_kv)
    out, k_read, v_read = core.kv_attention(q, k, v, n_head, n_head_kv, kv_k=kv_k, kv_v=kv_v, cpu_path=path,
                                            n_threads=2, append_batch=append_batch, **kw)
    ref = reference_attention(q, k_read, v_read, n_head, n_head_kv)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)
    for fmt, x, read, book, metric in ((kv_k, k, k_read, kw.get("k_codebook"), kw.get("k_metric")),
                                       (kv_v, v, v_read, kw.get("v_codebook"), kw.get("v_metric"))):
        if fmt not in CQ:
            continue
        np.testing.assert_array_equal(read[0], x[0].astype(np.float16).astype(np.float32))  # sink row, fp16
        for h in range(n_head_kv):
            xs = x[1:, h * D:(h + 1) * D]
            want = R.cq_decode(R.cq_encode(xs, book[h], metric[h]), book[h])
            np.testing.assert_array_equal(read[1:, h * D:(h + 1) * D], want)


def test_missing_codebook_in_kv_attention():
    q = np.zeros((1, 64), np.float32)
    k = np.zeros((4, 64), np.float32)
    with pytest.raises(ValueError, match="codebook"):
        core.kv_attention(q, k, k, 1, 1, kv_k="cq2", kv_v="f16")


# ------------------------------------------------------------------------------ k-means


def objective(X, C, m):
    labels = R.cq_encode(X, C[None], m)[:, 0]
    return float((((X - C[labels]).astype(np.float64) ** 2) * m).sum())


def test_kmeans_recovers_clusters():
    rng = np.random.default_rng(0)
    centers = rng.uniform(-10, 10, (8, 4)).astype(np.float32)
    X = np.concatenate([c + 0.05 * rng.standard_normal((150, 4)) for c in centers]).astype(np.float32)
    X = X[rng.permutation(len(X))]
    m = np.array([1.0, 0.5, 2.0, 1.0], np.float32)
    C = core.kmeans(X, k=8, iters=30, metric=m, seed=1)
    assert C.shape == (8, 4) and C.dtype == np.float32
    # every true center found, each by one centroid
    nearest = np.abs(centers[:, None] - C[None]).max(-1).argmin(1)
    assert sorted(nearest) == list(range(8))
    assert np.abs(centers - C[nearest]).max() < 0.05
    ref_C, _ = R.kmeans_reference(X, 8, 30, m)
    assert objective(X, C, m) <= 1.03 * objective(X, ref_C, m)


@pytest.mark.parametrize("c", [2, 8])
def test_kmeans_objective_close_to_reference(c):
    rng = np.random.default_rng(c)
    X = (rng.standard_normal((3000, c)) * rng.uniform(0.5, 3, c)).astype(np.float32)
    m = rng.uniform(0.3, 2, c).astype(np.float32)
    C = core.kmeans(X, k=32, iters=25, metric=m, seed=0)
    ref_C, _ = R.kmeans_reference(X, 32, 25, m)
    assert objective(X, C, m) <= 1.03 * objective(X, ref_C, m)


def test_kmeans_deterministic_across_threads_and_paths():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((5000, 4)).astype(np.float32)
    runs = [core.kmeans(X, 64, 10, None, 7, n, p) for n in (1, 2, 3) for p in PATHS]
    for C in runs[1:]:
        assert np.array_equal(C, runs[0])
    assert not np.array_equal(core.kmeans(X, 64, 10, None, 8), runs[0])  # the seed matters


def test_kmeans_edge_cases():
    X = np.array([[0.0, 1.0], [0.0, 1.0], [2.0, 2.0]], np.float32)
    C = core.kmeans(X, k=5, iters=5)  # fewer distinct points than centroids: repeats
    assert C.shape == (5, 2)
    assert {tuple(r) for r in C} == {(0.0, 1.0), (2.0, 2.0)}
    with pytest.raises(ValueError, match="finite"):
        core.kmeans(np.array([[np.nan, 0.0]], np.float32), k=1)
    with pytest.raises(ValueError, match="metric"):
        core.kmeans(X, k=2, metric=np.ones(3, np.float32))
    with pytest.raises(ValueError, match="metric"):
        core.kmeans(X, k=2, metric=np.array([1.0, -1.0], np.float32))
    with pytest.raises(ValueError, match="k must"):
        core.kmeans(X, k=0)


# ------------------------------------------------------------------------------ calibration


@pytest.fixture(scope="module")
def gemma_tiny(tmp_path_factory):
    pytest.importorskip("transformers")
    return str(tiny_models.tiny_gguf("gemma3", "f32", tmp_path_factory))


def calibrate(argv):
    from decollama.tools import calibrate as cal

    return cal.main([str(a) for a in argv])


@pytest.fixture(scope="module")
def tiny_books(gemma_tiny, tmp_path_factory):
    """Weighted codebooks (c = 2, 4) and plain ones (c = 4) of the tiny Gemma 3."""
    d = tmp_path_factory.mktemp("cq-books")
    common = ["-m", gemma_tiny, "-f", tiny_models.WIKITEXT, "--tokens", 700, "--ctx", 64, "--offset-tokens",
              2000, "--iters", 8, "-t", 2, "--no-progress"]
    weighted, plain = d / "weighted.gguf", d / "plain.gguf"
    assert calibrate(common + ["-o", weighted, "--channels", "2,4"]) == 0
    assert calibrate(common + ["-o", plain, "--channels", "4", "--no-weighted"]) == 0
    return str(weighted), str(plain)


def test_codebook_file_layout(tiny_books):
    import gguf

    weighted, plain = tiny_books
    r = gguf.GGUFReader(weighted)
    fields = {k: f.contents() for k, f in r.fields.items()}
    assert fields["general.architecture"] == "decollama.kv_codebooks"
    p = "decollama.kv_codebooks."
    assert (fields[p + "n_layer"], fields[p + "n_head_kv"], fields[p + "head_dim_k"], fields[p + "head_dim_v"]) \
        == (4, 1, 32, 32)
    assert fields[p + "channels"] == [2, 4] and fields[p + "weighted"] is True
    assert (fields[p + "token_offset"], fields[p + "token_count"]) == (2000, 700)
    assert fields[p + "source_model"].startswith("tiny-gemma3")
    tensors = {t.name: t for t in r.tensors}
    assert len(tensors) == 4 * 2 * 3
    t = tensors["cq.2.k.c4"]
    assert t.data.shape == (1, 8, 256, 4) and t.tensor_type == gguf.GGMLQuantizationType.F16
    mk = np.asarray(tensors["cq.0.k.metric"].data)
    assert mk.shape == (1, 32) and abs(mk.mean() - 1) < 1e-5 and mk.std() > 0.01  # query-weighted
    assert np.array_equal(np.asarray(tensors["cq.0.v.metric"].data), np.ones((1, 32), np.float32))
    pr = {t.name: t for t in gguf.GGUFReader(plain).tensors}
    assert np.array_equal(np.asarray(pr["cq.0.k.metric"].data), np.ones((1, 32), np.float32))
    assert "cq.0.k.c2" not in pr


def test_model_runs_with_codebooks(gemma_tiny, tiny_books):
    weighted, _ = tiny_books
    tokens = list(range(3, 90))
    m = core.Model(gemma_tiny, n_ctx=128, kv_k="cq2", kv_v="cq4", kv_codebook=weighted)
    logits = m.eval(tokens, logits="all")
    assert np.isfinite(logits).all()
    info = m.kv_info()
    assert info["codebook_bytes"] > 0 and info["codebook_file"] == weighted
    assert info["layers"][0]["k"] == "cq2" and info["layers"][0]["v"] == "cq4"
    # stored keys are centroids of the file's codebook (rows after the fp16 sink)
    import gguf

    t = {x.name: np.asarray(x.data) for x in gguf.GGUFReader(weighted).tensors}
    book = t["cq.1.k.c4"][0].astype(np.float32)
    k = m.read_kv(1, "k", 0, 1, 20)
    for g in range(book.shape[0]):
        seg = k[:, 4 * g:4 * g + 4]
        assert (seg[:, None, :] == book[g][None]).all(-1).any(-1).all()
    # close to the fp32 cache (random tiny model: loose)
    ref = core.Model(gemma_tiny, n_ctx=128, kv_k="f32", kv_v="f32").eval(tokens, logits="all")
    assert np.corrcoef(logits.ravel(), ref.ravel())[0, 1] > 0.9
    # decode token by token after prefill
    m.reset()
    m.eval(tokens[:40])
    for tok in tokens[40:50]:
        assert np.isfinite(m.eval([tok])).all()


def test_codebook_errors(gemma_tiny, tiny_books, tmp_path_factory):
    weighted, plain = tiny_books
    with pytest.raises(ValueError, match="kv_codebook"):
        core.Model(gemma_tiny, n_ctx=64, kv_k="cq2")
    with pytest.raises(ValueError) as e:  # a model GGUF is not a codebook file
        core.Model(gemma_tiny, n_ctx=64, kv_k="cq2", kv_codebook=gemma_tiny)
    assert gemma_tiny in str(e.value) and "general.architecture" in str(e.value)
    llama = str(tiny_models.tiny_gguf("llama", "f32", tmp_path_factory))  # 2 layers, 2 KV heads, head size 16
    with pytest.raises(ValueError) as e:
        core.Model(llama, n_ctx=64, kv_k="cq2", kv_codebook=weighted)
    assert weighted in str(e.value) and "decollama.kv_codebooks.n_" in str(e.value)
    with pytest.raises(ValueError, match="--channels 2"):  # the plain file has c = 4 only
        core.Model(gemma_tiny, n_ctx=64, kv_k="cq4", kv_codebook=plain)
    with pytest.raises(ValueError, match="not-there"):
        core.Model(gemma_tiny, n_ctx=64, kv_k="cq2", kv_codebook=str(tmp_path_factory.mktemp("x") / "not-there.gguf"))


def test_calibrate_usage_errors(gemma_tiny, tmp_path, capsys):
    base = ["-f", tiny_models.WIKITEXT, "-o", tmp_path / "out.gguf", "--no-progress"]
    cases = [
        (["-m", tmp_path / "missing.gguf"] + base, "model file not found"),
        (["-m", gemma_tiny, "-f", tmp_path / "missing.txt", "-o", tmp_path / "o.gguf"], "text file not found"),
        (["-m", gemma_tiny, "-f", tiny_models.WIKITEXT, "-o", tmp_path / "no-dir" / "o.gguf"], "does not exist"),
        (["-m", gemma_tiny] + base + ["--channels", "3"], "choose from 2"),
        (["-m", gemma_tiny] + base + ["--offset-tokens", 10_000_000], "runs past its end"),
        (["-m", gemma_tiny] + base + ["--tokens", 0], "at least 1"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as e:
            calibrate(argv)
        assert e.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out.gguf").exists()


def test_calibrate_help_names_the_default_offset(capsys):
    with pytest.raises(SystemExit):
        calibrate(["--help"])
    out = capsys.readouterr().out
    assert "100000" in out and "20,480" in out
