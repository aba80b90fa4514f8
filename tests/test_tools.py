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
