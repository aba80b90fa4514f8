"""The KV-cache settings of the public API: Llama(kv=, kv_k=, kv_v=, kv_window=, kv_codebook=),
kv="auto:<bits>" (decollama.kv_config.plan_auto) and decollama-chat's --kv flags. Tiny converted
models: the Llama-3 style one (head size 16: only f32/f16 fit), Gemma 3 (head size 32, one KV
head, 4 layers) and a Llama with head size 64, where every format fits (deco needs 64). Formats
the core does not have yet (kv_formats()) are skipped, not failed."""
from __future__ import annotations

import os
import pathlib
import subprocess

import numpy as np
import pytest

from decollama import Llama, kv_config
from decollama._native import core

tiny_models = pytest.importorskip("tiny_models")

FORMATS = [f["name"] for f in core.kv_formats()]
INFO = {f["name"]: f for f in core.kv_formats()}
CQ = [n for n in ("cq4", "cq2", "cq1") if n in INFO]
PROMPT = "The quick brown fox"


def need(*names):
    missing = [n for n in names if n not in INFO]
    if missing:
        pytest.skip(f"this core has no {', '.join(missing)} KV format yet")


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return str(tiny_models.tiny_gguf("llama", "f32", tmp_path_factory))  # head size 16


@pytest.fixture(scope="module")
def gemma_tiny_path(tmp_path_factory):
    return str(tiny_models.tiny_gguf("gemma3", "f32", tmp_path_factory))  # head size 32, 4 layers


@pytest.fixture(scope="module")
def hd64_path(tmp_path_factory):
    """Llama 3 style, 2 layers, 4 query / 2 KV heads of size 64: every format fits."""
    return str(tiny_models.tiny_gguf("llama", "f32", tmp_path_factory, head_dim=64))


@pytest.fixture(scope="module")
def codebook_path(hd64_path, tmp_path_factory):
    """A cq codebook for hd64_path from decollama-calibrate (a few seconds on 512 tokens)."""
    if not CQ:
        pytest.skip("this core has no cq KV formats yet")
    return tiny_models.tiny_codebook(hd64_path, tmp_path_factory)


def layer_formats(llm):
    return [(layer["k"], layer["v"]) for layer in llm.kv_info()["layers"]]


# ---- the kv= string -------------------------------------------------------------------------------

@pytest.mark.parametrize("kv, expected", [
    ("f16", ("f16", "f16", None)),
    ("q8_0", ("q8_0", "q8_0", None)),
    ("k:q8_0,v:q4_0", ("q8_0", "q4_0", None)),
    ("v:q4_0,k:f32", ("f32", "q4_0", None)),
    (" k:q8_0 , v:f32 ", ("q8_0", "f32", None)),
    ("k:q8_0", ("q8_0", "f16", None)),   # the missing half is f16
    ("v:q4_0", ("f16", "q4_0", None)),
    ("auto:4", (None, None, 4.0)),
    ("auto:2.75", (None, None, 2.75)),
])
def test_kv_string_forms(kv, expected):
    assert kv_config.parse_kv(kv) == expected


@pytest.mark.parametrize("kv, message", [
    ("f17", "unknown KV-cache format 'f17'"),
    ("k:bogus", "unknown KV-cache format 'bogus'"),
    ("k:q8_0,k:f16", "'k' is given twice"),
    ("v:f16,v:f16", "'v' is given twice"),
    ("x:f16", "must be 'k:FORMAT' or 'v:FORMAT', got 'x:f16'"),
    ("q8_0,f16", "must be 'k:FORMAT' or 'v:FORMAT', got 'q8_0'"),
    ("k:q8_0,", "got ''"),
    ("k:", "'k:' names no format"),
    ("auto", "'auto:<average bits per element>'"),
    ("autox:3", "'auto:<average bits per element>'"),
    ("auto:", "positive number of bits"),
    ("auto:-2", "positive number of bits"),
    ("auto:0", "positive number of bits"),
    ("auto:nan", "positive number of bits"),
    ("auto:four", "positive number of bits"),
    (3, "kv must be a string"),
    (["f16", "f16"], "per-layer lists go in kv_k / kv_v"),
])
def test_bad_kv_strings_name_the_problem(tiny_path, kv, message):
    with pytest.raises(ValueError, match="kv") as e:
        Llama(tiny_path, n_ctx=64, n_threads=1, kv=kv)
    assert message in str(e.value)


def test_unknown_names_list_the_valid_ones(tiny_path):
    for kwargs, param in [({"kv": "bogus"}, "kv"), ({"kv_k": "bogus"}, "kv_k"), ({"kv_v": "bogus"}, "kv_v"),
                          ({"kv_k": ["f16", "bogus"]}, "kv_k[1]")]:
        with pytest.raises(ValueError) as e:
            Llama(tiny_path, n_ctx=64, n_threads=1, **kwargs)
        msg = str(e.value)
        assert msg.startswith(param) and "'bogus'" in msg, msg
        assert all(name in msg for name in FORMATS), msg


def test_core_errors_name_the_arguments(tiny_path):
    """A format that cannot hold the model's head size: the core's message, with the arguments."""
    with pytest.raises(ValueError) as e:
        Llama(tiny_path, n_ctx=64, n_threads=1, kv="k:q8_0")
    assert "kv='k:q8_0'" in str(e.value) and "multiple of 32" in str(e.value) and "16" in str(e.value)
    with pytest.raises(ValueError) as e:  # a per-layer list of the wrong length
        Llama(tiny_path, n_ctx=64, n_threads=1, kv_k=["f16"] * 3)
    assert "kv_k" in str(e.value) and "expected 1 or 2" in str(e.value)


def test_kv_k_and_kv_v_override_their_half(hd64_path):
    llm = Llama(hd64_path, n_ctx=64, n_threads=1, kv="k:q8_0,v:q4_0", kv_v="f32")
    assert layer_formats(llm) == [("q8_0", "f32")] * 2
    llm = Llama(hd64_path, n_ctx=64, n_threads=1, kv="q4_0", kv_k="f16")
    assert layer_formats(llm) == [("f16", "q4_0")] * 2
    assert llm.kv_plan is None


def test_per_layer_lists(hd64_path):
    llm = Llama(hd64_path, n_ctx=64, n_threads=1, kv_k=["q8_0", "f16"], kv_v=("f32", "q4_0"))
    assert layer_formats(llm) == [("q8_0", "f32"), ("f16", "q4_0")]
    with pytest.raises(ValueError, match="kv_v: the per-layer list is empty"):
        Llama(hd64_path, n_ctx=64, n_threads=1, kv_v=[])
    with pytest.raises(ValueError, match=r"kv_k\[0\]: a KV-cache format name must be a string"):
        Llama(hd64_path, n_ctx=64, n_threads=1, kv_k=[8, "f16"])


def test_type_k_type_v_aliases(hd64_path):
    llm = Llama(hd64_path, n_ctx=64, n_threads=1, type_k=8, type_v="q4_0")  # ggml id 8 = q8_0
    assert layer_formats(llm) == [("q8_0", "q4_0")] * 2
    with pytest.raises(ValueError, match="not both"):
        Llama(hd64_path, n_ctx=64, n_threads=1, kv_k="f16", type_k="f16")
    with pytest.raises(ValueError, match="type_v=99"):
        Llama(hd64_path, n_ctx=64, n_threads=1, type_v=99)


def test_kv_window_passes_through(hd64_path):
    for window in (0, 64, 100):
        llm = Llama(hd64_path, n_ctx=256, n_threads=1, kv="q8_0", kv_window=window)
        assert llm.kv_info()["window"] == window
    for bad in (-1, 1.5, True, "64"):
        with pytest.raises(ValueError, match="kv_window"):
            Llama(hd64_path, n_ctx=64, n_threads=1, kv_window=bad)


def test_kv_window_keeps_the_newest_rows_exact(hd64_path):
    """With a window, the newest positions read back as fp16 rows even in a 4-bit format."""
    ref = Llama(hd64_path, n_ctx=128, n_threads=1, kv="f16")
    win = Llama(hd64_path, n_ctx=128, n_threads=1, kv="q4_0", kv_window=16)
    tokens = ref.tokenize(PROMPT * 8)[:80]
    ref.eval(tokens, logits="none")
    win.eval(tokens, logits="none")
    exact = ref._model.read_kv(0, "k", 0, 0, 80)  # layer 0: its input does not depend on the cache
    stored = win._model.read_kv(0, "k", 0, 0, 80)
    np.testing.assert_array_equal(stored[-16:], exact[-16:])
    assert not np.array_equal(stored[:-16], exact[:-16])


def test_kv_codebook_errors(hd64_path, tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        Llama(hd64_path, n_ctx=64, n_threads=1, kv_codebook=tmp_path / "nope.gguf")
    assert "nope.gguf" in str(e.value) and "kv_codebook" in str(e.value)
    with pytest.raises(ValueError, match="kv_codebook .* is not a file"):
        Llama(hd64_path, n_ctx=64, n_threads=1, kv_codebook=tmp_path)
    with pytest.raises(ValueError, match="not a KV codebook file"):  # the model is no codebook
        Llama(hd64_path, n_ctx=64, n_threads=1, kv_codebook=hd64_path)
    for cq in CQ:
        for kwargs in ({"kv": cq}, {"kv": f"k:q8_0,v:{cq}"}, {"kv_k": cq}):
            with pytest.raises(ValueError, match="decollama-calibrate") as e:
                Llama(hd64_path, n_ctx=64, n_threads=1, **kwargs)
            assert cq in str(e.value) and "kv_codebook" in str(e.value)


# ---- generation with every format, prefix reuse ----------------------------------------------------

@pytest.mark.parametrize("fmt", FORMATS)
def test_generation_with_each_format(hd64_path, fmt, request):
    """A prompt past one 256-token block, so block formats compress one, then greedy tokens; K and
    V apart too."""
    kwargs = {}
    if INFO[fmt]["codebook_c"] > 0:
        kwargs["kv_codebook"] = request.getfixturevalue("codebook_path")
    prompt = " ".join([PROMPT + " jumps over the lazy dog."] * 14)
    for kv in (fmt, f"k:{fmt}", f"v:{fmt}"):
        llm = Llama(hd64_path, n_ctx=512, n_threads=1, kv=kv, **kwargs)
        assert len(llm.tokenize(prompt)) > 300
        out = llm.create_completion(prompt, max_tokens=8, temperature=0)
        assert out["usage"]["completion_tokens"] > 0
        assert isinstance(out["choices"][0]["text"], str)
        assert llm.n_tokens == out["usage"]["prompt_tokens"] + out["usage"]["completion_tokens"] - 1


class TruncateSpy:
    """Wraps _core.Model and records truncate(n) -> kept."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def truncate(self, n):
        kept = self.inner.truncate(n)
        self.calls.append((n, kept))
        return kept

    def __getattr__(self, name):
        return getattr(self.inner, name)


def chunked_reference(path, kv, text, kept):
    """A fresh model that evaluates the first `kept` tokens of text, then generates from text: the
    same evaluation batches as a model that reused `kept` cached positions. (A prefill batch commits
    the blocks it completes before its queries attend, so with a block format the batching, and not
    only the tokens, decides what attention saw.)"""
    llm = Llama(path, n_ctx=1024, n_threads=1, kv=kv)
    if kept:
        llm.eval(llm.tokenize(text)[:kept], logits="none")
    return llm


@pytest.mark.parametrize("kv", ["deco4", "k:deco4,v:deco2", "k:q8_0,v:deco2", "q8_0"])
def test_prefix_reuse_with_block_formats(hd64_path, kv):
    """Prompts sharing 500+ tokens, generated one after the other: the second reuses the cache up
    to the last complete block before the divergence (truncate keeps fewer than asked), evaluates
    the rest, and gives the text and logits of a fresh model evaluating the same tokens."""
    need(*(part.split(":")[-1] for part in kv.split(",")))
    block = max(INFO[p.split(":")[-1]]["tokens_per_block"] for p in kv.split(","))
    base = " ".join(["the quick brown fox jumps over the lazy dog"] * 40)
    first, second = base + " and then it ran", base[:len(base) * 3 // 4] + " suddenly a bird sang"
    llm = Llama(hd64_path, n_ctx=1024, n_threads=1, kv=kv)
    llm._model = spy = TruncateSpy(llm._model)
    n_common = len(llm.tokenize(base[:len(base) * 3 // 4])) - 1
    assert n_common > 512
    for i, text in enumerate([first, second, first, second]):
        out = llm.generate(text, max_tokens=10, temperature=0)
        asked, kept = spy.calls[-1]
        if i == 0:
            assert kept == asked == 0
        else:
            assert asked >= n_common
            # After `first` (928 + 9 tokens) the block holding position `asked` is complete and goes;
            # after `second` (703 + 9) it is still open and the cache keeps all it is asked to.
            assert kept == (asked // block * block if text is second else asked), (i, asked, kept)
        ref = chunked_reference(hd64_path, kv, text, kept)
        assert ref.generate(text, max_tokens=10, temperature=0) == out
        np.testing.assert_array_equal(ref.logits, llm.logits)
        if block == 1:  # without blocks the batching does not matter: a plain fresh model agrees
            fresh = Llama(hd64_path, n_ctx=1024, n_threads=1, kv=kv)
            assert fresh.generate(text, max_tokens=10, temperature=0) == out
    assert any(kept < asked for asked, kept in spy.calls) == (block > 1)


# ---- kv="auto:<bits>" ------------------------------------------------------------------------------

def average_bits(plan):
    m = plan.measurement
    total = sum(m.bits[k]["k"] * m.k_elements + m.bits[v]["v"] * m.v_elements for k, v in zip(plan.k, plan.v))
    return total / (m.n_layer * (m.k_elements + m.v_elements))


@pytest.mark.parametrize("model", ["hd64_path", "gemma_tiny_path"])
def test_auto_plan_respects_the_budget(model, request):
    path = request.getfixturevalue(model)
    candidates = kv_config.default_candidates()
    m = kv_config.measure(path, n_threads=1)
    cheapest = {kind: min(b[kind] for b in m.bits.values() if kind in b) for kind in ("k", "v")}
    floor = (cheapest["k"] * m.k_elements + cheapest["v"] * m.v_elements) / (m.k_elements + m.v_elements)
    previous_error = None
    for budget in sorted({floor, 3, 4, 5, 6, 9, 12, 16, 32}):
        if budget < floor:
            with pytest.raises(ValueError, match="need .* bits per element"):
                kv_config.plan_auto(path, budget, n_threads=1)
            continue
        plan = kv_config.plan_auto(path, budget, n_threads=1)
        assert len(plan.k) == len(plan.v) == m.n_layer
        assert set(plan.k) | set(plan.v) <= set(candidates) <= set(FORMATS)
        assert plan.bits == pytest.approx(average_bits(plan)) and plan.bits <= budget + 1e-9
        if previous_error is not None:
            assert plan.error <= previous_error + 1e-12  # more bits never predict more error
        previous_error = plan.error
    assert kv_config.plan_auto(path, 16, n_threads=1).k == ["f16"] * m.n_layer  # room for the best everywhere
    head = 32 if model == "gemma_tiny_path" else 64
    for f in m.bits:
        assert head % INFO[f]["dim_block"] == 0  # formats that cannot hold the head size are skipped


def test_auto_plan_in_llama(hd64_path):
    need("deco4", "deco2")
    llm = Llama(hd64_path, n_ctx=300, n_threads=1, kv="auto:4")
    plan = llm.kv_plan
    assert isinstance(plan, kv_config.KVPlan) and plan.budget == 4 and plan.bits <= 4
    assert layer_formats(llm) == list(zip(plan.k, plan.v))
    info = llm.kv_info()
    nominal = [(layer["k_nominal_bits"] + layer["v_nominal_bits"]) / 2 for layer in info["layers"]]
    assert np.mean(nominal) == pytest.approx(plan.bits)  # equal K and V head sizes
    assert llm.generate(PROMPT, max_tokens=4, temperature=0) is not None
    assert "KV plan" in str(plan) and plan.as_dict()["k"] == plan.k
    with pytest.raises(ValueError, match="chooses the K and V formats itself"):
        Llama(hd64_path, n_ctx=64, n_threads=1, kv="auto:4", kv_k="f16")
    with pytest.raises(ValueError, match="ask for at least that"):
        Llama(hd64_path, n_ctx=64, n_threads=1, kv="auto:1")


def test_auto_measurement_equals_isolated_model_passes(hd64_path, request):
    """The default measurement (exact rows through a one-layer cache of each format) gives what a
    model pass with the format on that layer alone stores."""
    kwargs = {"kv_codebook": request.getfixturevalue("codebook_path")} if CQ else {}
    fast = kv_config.measure(hd64_path, n_threads=1, **kwargs)
    slow = kv_config.measure(hd64_path, n_threads=1, method="model", **kwargs)
    assert fast.method == "cache" and slow.method == "model"
    assert fast.bits == slow.bits
    for f in fast.errors:
        for kind in ("k", "v"):
            np.testing.assert_allclose(fast.errors[f][kind], slow.errors[f][kind], rtol=1e-5, atol=1e-12)
    assert kv_config.measure(hd64_path, n_threads=1, **kwargs) is fast  # cached


def test_auto_skips_formats_the_core_lacks(hd64_path, monkeypatch):
    """Before a format lands (or on a core without it) the plan chooses among the others."""
    have = kv_config.formats()
    monkeypatch.setattr(kv_config, "formats", lambda: {n: f for n, f in have.items() if not n.startswith("deco")})
    assert kv_config.default_candidates() == ["f16", "q8_0"]
    plan = kv_config.plan_auto(hd64_path, 10, n_threads=1)
    assert set(plan.candidates) == {"f16", "q8_0"} and set(plan.k) | set(plan.v) <= {"f16", "q8_0"}
    with pytest.raises(ValueError, match=r"need 8\.500 bits"):
        kv_config.plan_auto(hd64_path, 4, n_threads=1)


def test_auto_with_codebook_adds_the_cq_formats(hd64_path, codebook_path):
    plan = kv_config.plan_auto(hd64_path, 1.5, kv_codebook=codebook_path, n_threads=1)
    assert set(CQ) <= set(plan.candidates)
    assert plan.bits <= 1.5 and set(plan.k) | set(plan.v) <= set(plan.candidates)
    llm = Llama(hd64_path, n_ctx=64, n_threads=1, kv="auto:2", kv_codebook=codebook_path)
    assert llm.kv_info()["codebook_file"] == codebook_path
    assert llm.generate(PROMPT, max_tokens=4, temperature=0) is not None


def test_greedy_allocation_rule():
    """On made-up errors: the largest weighted decrease per bit first (keys weigh 0.5), within the budget."""
    m = kv_config.KVMeasurement(
        n_layer=2, n_tokens=512, k_elements=64, v_elements=64, method="cache",
        bits={"a": {"k": 2.0, "v": 2.0}, "b": {"k": 4.0, "v": 4.0}, "c": {"k": 16.0, "v": 16.0}},
        errors={"a": {"k": [1.0, 0.3], "v": [0.4, 0.2]},
                "b": {"k": [0.1, 0.1], "v": [0.1, 0.1]},
                "c": {"k": [0.0, 0.0], "v": [0.0, 0.0]}})
    assert kv_config.allocate(m, 2)[:3] == (["a", "a"], ["a", "a"], 2.0)
    # One 2-bit upgrade affordable (2.5 average): K0 gains 0.5 * 0.9 = 0.45 > V0 0.3 > V1 0.1 > K1 0.1.
    assert kv_config.allocate(m, 2.5)[:2] == (["b", "a"], ["a", "a"])
    # Two: then V0 (0.3).
    assert kv_config.allocate(m, 3)[:2] == (["b", "a"], ["b", "a"])
    k, v, bits, error = kv_config.allocate(m, 16)
    assert (k, v, bits, error) == (["c", "c"], ["c", "c"], 16.0, 0.0)
    with pytest.raises(ValueError, match="need 2.000 bits"):
        kv_config.allocate(m, 1.9)


@pytest.mark.slow
def test_auto_gives_keys_more_bits_on_gemma(gemma_path):
    """On a real model keys matter more than values: the plan gives them at least as many bits."""
    budgets = [3, 5] if {"deco4", "deco2"} <= set(FORMATS) else [10, 12]
    for budget in budgets:
        plan = kv_config.plan_auto(gemma_path, budget, n_threads=2)
        m = plan.measurement
        k_bits = np.mean([m.bits[f]["k"] for f in plan.k])
        v_bits = np.mean([m.bits[f]["v"] for f in plan.v])
        assert plan.bits <= budget and k_bits >= v_bits, (budget, plan.k, plan.v)


# ---- decollama-chat ---------------------------------------------------------------------------------

def _chat_binary():
    env = os.environ.get("DECOLLAMA_CHAT_BIN")
    import decollama

    path = pathlib.Path(env) if env else pathlib.Path(decollama.__file__).resolve().parent / "bin" / "decollama-chat"
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


CHAT = _chat_binary()
needs_chat = pytest.mark.skipif(CHAT is None, reason="no decollama-chat binary (set DECOLLAMA_CHAT_BIN)")


def run_chat(*args):
    proc = subprocess.run([CHAT, *map(str, args)], capture_output=True, timeout=120)
    # The tiny models write any bytes: decode as Llama does, without newline translation.
    proc.stdout = proc.stdout.decode("utf-8", "replace")
    proc.stderr = proc.stderr.decode("utf-8", "replace")
    return proc


@needs_chat
def test_chat_kv_window_and_kv_string(hd64_path):
    prompt = "The quick brown fox"
    proc = run_chat("-m", hd64_path, "-c", 128, "-t", 1, "--kv", "k:q8_0,v:q4_0", "--kv-window", 16, "--no-chat",
                    "-p", prompt, "-n", 8, "--temp", 0)
    assert proc.returncode == 0, proc.stderr
    assert "KV cache (K q8_0, V q4_0, fp16 window 16)" in proc.stderr
    ref = Llama(hd64_path, n_ctx=128, n_threads=1, kv="k:q8_0,v:q4_0", kv_window=16)
    assert proc.stdout[:-1] == ref.generate(prompt, max_tokens=8, temperature=0)
    # --kv-k overrides the K half whichever comes first
    proc = run_chat("-m", hd64_path, "-c", 64, "-t", 1, "--kv-k", "f32", "--kv", "k:q8_0,v:q4_0", "--no-chat",
                    "-p", prompt, "-n", 1)
    assert proc.returncode == 0 and "KV cache (K f32, V q4_0)" in proc.stderr, proc.stderr


@needs_chat
@pytest.mark.parametrize("args, message", [
    (["--kv", "k:bogus"], "unknown KV-cache format 'bogus'"),
    (["--kv", "k:f16,k:q8_0"], "'k' is given twice"),
    (["--kv", "x:f16"], "must be k:FORMAT or v:FORMAT"),
    (["--kv", "q8_0,v:f16"], "must be k:FORMAT or v:FORMAT"),
    (["--kv", "k:"], "names no format"),
    (["--kv", "auto:4"], "Python API"),
    (["--kv-window", "-1"], "--kv-window must be >= 0"),
    (["--kv-window", "many"], "--kv-window: expected an integer"),
] + [(["--kv", f"v:{cq}"], "needs --kv-codebook") for cq in CQ])
def test_chat_bad_kv_flags_exit_2(hd64_path, args, message):
    proc = run_chat("-m", hd64_path, *args, "-p", "hi")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr


@needs_chat
def test_chat_kv_codebook(hd64_path, tmp_path, request):
    proc = run_chat("-m", hd64_path, "--kv-codebook", tmp_path / "nope.gguf", "-p", "hi")
    assert proc.returncode == 1 and "nope.gguf" in proc.stderr and "not found" in proc.stderr
    if CQ:
        book = request.getfixturevalue("codebook_path")
        proc = run_chat("-m", hd64_path, "-c", 64, "-t", 1, "--kv", CQ[0], "--kv-codebook", book, "--no-chat",
                        "-p", "The quick", "-n", 4, "--temp", 0)
        assert proc.returncode == 0, proc.stderr
        ref = Llama(hd64_path, n_ctx=64, n_threads=1, kv=CQ[0], kv_codebook=book)
        assert proc.stdout[:-1] == ref.generate("The quick", max_tokens=4, temperature=0)
