"""decollama-perplexity and decollama-bench, run as a user runs them (subprocess) on a tiny converted
model: the perplexity equals a transformers computation of the same convention on the HF checkpoint,
the JSON is complete and consistent, user errors exit non-zero with a message, the bench prints its
table. Speeds are not asserted: they are benchmark results, not test outcomes."""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from tiny_models import WIKITEXT, tiny_checkpoint, tiny_gguf

import decollama

CTX = 32
CHUNKS = 4



def run_tool(name: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m decollama.tools.<name> ...` with the decollama (and core) this test imported."""
    env = dict(os.environ)
    package_parent = str(pathlib.Path(decollama.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([package_parent, env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", f"decollama.tools.{name}", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_gguf("gemma3", "f32", tmp_path_factory)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> pathlib.Path:
    """A few thousand characters of wikitext, bytes as they are (CRLF line ends)."""
    if WIKITEXT.is_file():
        data = WIKITEXT.read_bytes()[:6000]
        data = data[:data.rfind(b"\n") + 1]  # whole lines, never a split UTF-8 sequence
    else:
        data = ("The quick brown fox jumps over the lazy dog.\r\n" * 120).encode()
    path = tmp_path_factory.mktemp("text") / "text.raw"
    path.write_bytes(data)
    return path


def reference_perplexity(checkpoint, text: str, ctx: int, n_chunks: int):
    """llama.cpp's convention written out with transformers: BOS over the first token of each chunk,
    NLL of tokens ctx/2 + 1 .. ctx - 1, population variance of the NLL for the standard error."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    tok = transformers.AutoTokenizer.from_pretrained(checkpoint)
    ids = tok(text, add_special_tokens=True)["input_ids"]
    assert ids[0] == tok.bos_token_id
    model = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, torch_dtype=torch.float32,
                                                              attn_implementation="eager").eval()
    first = ctx // 2
    n_chunks = min(n_chunks, len(ids) // ctx)
    nll = []
    with torch.no_grad():
        for i in range(n_chunks):
            chunk = list(ids[i * ctx:(i + 1) * ctx])
            chunk[0] = tok.bos_token_id
            logits = model(torch.tensor([chunk])).logits[0].double()
            logp = torch.log_softmax(logits[first:ctx - 1], dim=-1)
            nll += (-logp[torch.arange(ctx - 1 - first), torch.tensor(chunk[first + 1:])]).tolist()
    nll = torch.tensor(nll, dtype=torch.float64)
    ppl = math.exp(nll.mean().item())
    var = (nll * nll).mean().item() - nll.mean().item() ** 2
    return ppl, ppl * math.sqrt(var / (len(nll) - 1)), len(ids), len(nll)


@pytest.mark.parametrize("keep_crlf", [False, True], ids=["universal-newlines", "keep-crlf"])
def test_perplexity_matches_transformers(tiny, text_file, tmp_path_factory, keep_crlf):
    flags = ["--keep-crlf"] if keep_crlf else []
    out = run_tool("perplexity", "-m", tiny, "-f", text_file, "--ctx", CTX, "--chunks", CHUNKS, "--json",
                   "--threads", 2, "--no-progress", *flags)
    got = json.loads(out.stdout)
    text = text_file.read_bytes().decode("utf-8")
    assert "\r\n" in text  # the fixture keeps WikiText's CRLF line ends, so the two modes differ
    if not keep_crlf:
        text = text.replace("\r\n", "\n")
    checkpoint = tiny_checkpoint("gemma3", tmp_path_factory)
    ppl, stderr, n_tokens, n_scored = reference_perplexity(checkpoint, text, CTX, CHUNKS)
    assert got["tokens"] == n_tokens
    assert got["tokens_scored"] == n_scored
    assert got["ppl"] == pytest.approx(ppl, rel=1e-3)
    assert got["ppl_stderr"] == pytest.approx(stderr, rel=1e-3)


def test_perplexity_json_fields(tiny, text_file):
    got = json.loads(run_tool("perplexity", "-m", tiny, "-f", text_file, "--ctx", CTX, "--chunks", 2,
                              "--kv-k", "q8_0", "--kv-v", "f16", "--json", "--no-progress").stdout)
    for key in ("ppl", "ppl_stderr", "tokens_scored", "chunks", "ctx", "kv_k", "kv_v",
                "kv_bits_per_element", "seconds"):
        assert key in got, key
    assert (got["chunks"], got["ctx"], got["kv_k"], got["kv_v"]) == (2, CTX, "q8_0", "f16")
    assert got["tokens_scored"] == got["chunks"] * (CTX // 2 - 1)
    assert got["ppl"] > 1.0 and got["ppl_stderr"] > 0.0  # a random model: both large
    assert 8.5 < got["kv_bits_per_element"] < 16.0  # between q8_0 and f16: one cache of each
    assert got["seconds"] >= 0.0


def test_perplexity_text_output_and_clamped_chunks(tiny, text_file):
    out = run_tool("perplexity", "-m", tiny, "-f", text_file, "--ctx", CTX, "--chunks", 100000)
    assert "warning" in out.stderr and "--chunks 100000" in out.stderr
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("PPL = ")]
    assert len(line) == 1 and "±" in line[0]


@pytest.mark.parametrize("args, message", [
    (["-m", "/nonexistent/model.gguf"], "model file not found"),
    (["-f", "/nonexistent/text.raw"], "text file not found"),
    (["--kv", "q3_bogus"], "q3_bogus"),
    (["--ctx", 100000], "needs at least"),
])
def test_perplexity_user_errors(tiny, text_file, args, message):
    base = {"-m": tiny, "-f": text_file}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = [x for kv in base.items() for x in kv] + ["--ctx", CTX] * ("--ctx" not in base) + ["--no-progress"]
    proc = run_tool("perplexity", *argv, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_table(tiny):
    out = run_tool("bench", "-m", tiny, "--depth", 16, "--gen", 4, "--kv", "f16,q8_0", "--repeats", 1,
                   "--threads", 2)
    table = [ln for ln in out.stdout.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["KV (K/V)", "depth", "KV bytes/token", "prompt tok/s", "decode tok/s"]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table[2:]]
    assert [(r[0], r[1]) for r in rows] == [("f16", "16"), ("q8_0", "16")]
    assert all(float(c) > 0 for r in rows for c in r[2:])


def test_bench_json_and_vs_llama_cpp(tiny):
    proc = run_tool("bench", "-m", tiny, "--depth", 8, "--gen", 2, "--repeats", 1, "--vs-llama-cpp", "--json")
    got = json.loads(proc.stdout)
    (row,) = got["rows"]
    assert (row["depth"], row["gen"], row["kv_k"], row["kv_v"]) == (8, 2, "f16", "f16")
    assert row["kv_bytes_per_token"] > 0
    if got["vs_llama_cpp"]:
        assert row["llama_cpp_decode_tok_s"] > 0 and row["decode_ratio"] > 0
    else:
        assert "llama-cpp-python is not installed" in proc.stderr


def test_bench_depth_beyond_context(tiny):
    proc = run_tool("bench", "-m", tiny, "--depth", 64, "--gen", 4, "--ctx", 32, check=False)
    assert proc.returncode != 0 and "does not fit" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_tool("bench", "-m", tiny, "--depth", 10**7, check=False)
    assert proc.returncode != 0 and "context length" in proc.stderr


# ---- KV options and KL divergence (--kld-base / --kld) -------------------------------------------

def perplexity_json(tiny, text_file, *args) -> dict:
    return json.loads(run_tool("perplexity", "-m", tiny, "-f", text_file, "--ctx", CTX, "--chunks", CHUNKS,
                               "--threads", 2, "--no-progress", "--json", *args).stdout)


@pytest.fixture(scope="module")
def kld_base(tiny, text_file, tmp_path_factory):
    """An f16 base file, and the JSON of the run that wrote it."""
    path = tmp_path_factory.mktemp("kld") / "f16.npz"
    return path, perplexity_json(tiny, text_file, "--kv", "f16", "--kld-base", path)


def test_kld_base_file(tiny, text_file, kld_base):
    path, made = kld_base
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"][()]))
        n = made["tokens_scored"]
        assert z["top_idx"].shape == z["top_logit"].shape == (n, meta["top_k"])
        assert z["tail_idx"].shape == (n, meta["tail_samples"])
        assert z["top_idx"].dtype == np.int32 and z["lse"].dtype == np.float64
        assert (z["top_logit"] <= 0).all() and (z["top_logit"][:, 0] == 0).all()  # logit - max, most probable first
        assert ((z["tail"] >= 0) & (z["tail"] < 1)).all()
        assert math.exp(z["nll"].mean()) == pytest.approx(made["ppl"], rel=1e-12)
    assert (meta["ctx"], meta["chunks"], meta["kv"], meta["scored"]) == (CTX, CHUNKS, "f16", made["tokens_scored"])
    # The logits path scores exactly what nll() scores.
    plain = perplexity_json(tiny, text_file, "--kv", "f16")
    assert made["ppl"] == pytest.approx(plain["ppl"], rel=1e-6)


def test_kld_same_format_is_zero(tiny, text_file, kld_base):
    path, made = kld_base
    got = perplexity_json(tiny, text_file, "--kv", "f16", "--kld", path)["kld"]
    assert got["positions"] == made["tokens_scored"]
    assert abs(got["kld_mean"]) < 1e-12 and got["kld_max"] < 1e-12
    assert got["top1_agreement"] == 1.0
    assert got["ppl"] == pytest.approx(got["ppl_base"], rel=1e-12)
    assert got["ppl_base"] == pytest.approx(made["ppl"], rel=1e-12)


def test_kld_q4_0_vs_f16(tiny, text_file, kld_base):
    path, made = kld_base
    out = perplexity_json(tiny, text_file, "--kv", "q4_0", "--kld", path)
    got = out["kld"]
    assert got["kld_mean"] > 1e-7 and got["kld_stderr"] > 0 and got["kld_max"] >= got["kld_p99"] >= 0
    assert 0.0 < got["top1_agreement"] <= 1.0
    assert got["ppl"] == pytest.approx(out["ppl"], rel=1e-12)
    assert got["ppl_base"] == pytest.approx(made["ppl"], rel=1e-12)
    assert got["ppl_ratio"] == pytest.approx(out["ppl"] / made["ppl"], rel=1e-9)
    # Text output: llama.cpp-style lines.
    text = run_tool("perplexity", "-m", tiny, "-f", text_file, "--kv", "q4_0", "--kld", path, "--no-progress").stdout
    assert "Mean KLD" in text and "Same top-1" in text and "PPL(Q)/PPL(base)" in text


def test_kld_lumped_tail_is_a_lower_bound(tiny, text_file, tmp_path):
    """--kld-tail-samples 0: the rest of the vocabulary as one bucket, never above the estimate that
    keeps the whole vocabulary exactly (top-k = n_vocab)."""
    lumped, exact = tmp_path / "lumped.npz", tmp_path / "exact.npz"
    perplexity_json(tiny, text_file, "--kld-base", lumped, "--kld-top-k", 8, "--kld-tail-samples", 0)
    perplexity_json(tiny, text_file, "--kld-base", exact, "--kld-top-k", 100000)
    low = perplexity_json(tiny, text_file, "--kv", "q4_0", "--kld", lumped)["kld"]
    full = perplexity_json(tiny, text_file, "--kv", "q4_0", "--kld", exact)["kld"]
    assert "lower bound" in low["estimator"]
    assert 0 <= low["kld_mean"] <= full["kld_mean"] * (1 + 1e-9)


@pytest.mark.parametrize("args, message", [
    (["--ctx", CTX * 2], "ctx 64 (this run) vs 32 (base)"),
    (["--chunks", CHUNKS - 1], "chunks 3 (this run) vs 4 (base)"),
    (["--keep-crlf"], "does not match this run"),
])
def test_kld_base_mismatch(tiny, text_file, kld_base, args, message):
    path, _ = kld_base
    base_args = {"--ctx": CTX, "--chunks": CHUNKS}
    for flag, value in zip(args[::2], args[1::2]):
        base_args[flag] = value
    argv = [x for kv in base_args.items() for x in kv] + [a for a in args if a == "--keep-crlf"]
    proc = run_tool("perplexity", "-m", tiny, "-f", text_file, *argv, "--kld", path, "--no-progress", check=False)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_kld_base_renamed_model_and_bad_files(tiny, text_file, kld_base, tmp_path):
    path, _ = kld_base
    other = tmp_path / "other.gguf"
    other.write_bytes(pathlib.Path(tiny).read_bytes())
    # The same bytes under another name are the same model.
    run_tool("perplexity", "-m", other, "-f", text_file, "--ctx", CTX, "--kld", path, "--no-progress")
    proc = run_tool("perplexity", "-m", other, "-f", text_file, "--kld", tmp_path / "missing.npz", check=False)
    assert proc.returncode == 2 and "--kld base file not found" in proc.stderr
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a numpy file")
    proc = run_tool("perplexity", "-m", tiny, "-f", text_file, "--kld", junk, check=False)
    assert proc.returncode == 2 and "is not a decollama-perplexity --kld-base file" in proc.stderr
    proc = run_tool("perplexity", "-m", tiny, "-f", text_file, "--kld", path, "--kld-base", junk, check=False)
    assert proc.returncode == 2 and "not allowed with argument" in proc.stderr


def test_kld_base_other_model(tmp_path_factory, text_file, kld_base):
    path, _ = kld_base
    other = tiny_gguf("gemma3", "f16", tmp_path_factory)  # same vocabulary, other weights
    proc = run_tool("perplexity", "-m", other, "-f", text_file, "--kld", path, "--no-progress", check=False)
    assert proc.returncode == 2 and "model tiny-gemma3-f16.gguf differs from the base's tiny-gemma3-f32.gguf" \
        in proc.stderr, proc.stderr


def test_perplexity_kv_spec_forms(tiny, text_file):
    got = perplexity_json(tiny, text_file, "--kv", "k:q8_0,v:q4_0")
    assert (got["kv_k"], got["kv_v"], got["kv_bits_per_element"]) == ("q8_0", "q4_0", 6.5)
    got = perplexity_json(tiny, text_file, "--kv", "q4_0/q8_0")
    assert (got["kv_k"], got["kv_v"]) == ("q4_0", "q8_0")
    proc = run_tool("perplexity", "-m", tiny, "-f", text_file, "--kv", "x:q8_0", check=False)
    assert proc.returncode == 2 and "expected k:FORMAT,v:FORMAT" in proc.stderr


@pytest.mark.parametrize("flag, value", [("--kv-window", "8"), ("--kv-codebook", None)])
def test_perplexity_kv_window_and_codebook(tiny, text_file, tmp_path, flag, value):
    """Passed to the core when given; a core without such settings says so (no traceback)."""
    if value is None:
        value = tmp_path / "codebook.gguf"
        value.write_bytes(b"GGUF")
    proc = run_tool("perplexity", "-m", tiny, "-f", text_file, "--ctx", CTX, "--chunks", 2, flag, value,
                    "--json", "--no-progress", check=False)
    if proc.returncode != 0:
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        if "not supported yet" not in proc.stderr:  # a core that has it may reject this fake codebook
            assert flag == "--kv-codebook", proc.stderr
    proc = run_tool("perplexity", "-m", tiny, "-f", text_file, "--kv-codebook", tmp_path / "none.gguf", check=False)
    assert proc.returncode == 2 and "codebook file not found" in proc.stderr


def test_bench_decode_at_depths(tiny):
    out = run_tool("bench", "-m", tiny, "--depths", "8,80", "--kv-list", "q8_0,k:q8_0,v:q4_0", "--gen", 3,
                   "--threads", 2).stdout
    assert "f16 added as the reference" in out and "depth 64" in out
    table = [ln for ln in out.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[:6] == ["KV", "depth", "KV MiB", "decode tok/s", "ms/token", "vs f16"]
    assert header[6].startswith("attention ms/token") and "64" in header[6]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table[2:]]
    assert [(r[0], r[1]) for r in rows] == [("f16", "8"), ("f16", "80"), ("q8_0", "8"), ("q8_0", "80"),
                                            ("k:q8_0,v:q4_0", "8"), ("k:q8_0,v:q4_0", "80")]
    mib = {(r[0], r[1]): float(r[2]) for r in rows}
    assert mib[("f16", "80")] == pytest.approx(10 * mib[("f16", "8")], rel=0.05)
    assert mib[("q8_0", "80")] < mib[("f16", "80")]
    assert all(float(r[3]) > 0 and float(r[4]) > 0 and float(r[5]) > 0 for r in rows)
    assert [r[5] for r in rows if r[0] == "f16"] == ["1.00", "1.00"]


def test_bench_decode_at_depths_json(tiny):
    got = json.loads(run_tool("bench", "-m", tiny, "--depths", 16, "--gen", 2, "--json").stdout)
    (row,) = got["rows"]
    assert (row["kv"], row["depth"], row["vs_f16"]) == ("f16", 16, 1.0)
    assert got["n_ctx"] >= 64 + 2 and got["baseline_depth"] == 64
    assert row["kv_mib"] > 0 and row["decode_tok_s"] > 0 and row["attention_ms"] is not None
    proc = run_tool("bench", "-m", tiny, "--depths", 64, "--gen", 4, "--ctx", 32, check=False)
    assert proc.returncode == 2 and "does not fit" in proc.stderr
