"""decollama.Llama, the llama-cpp-python-style API, on tiny converted models (Llama 3 style for
generation: its untied output layer gives varied text; Gemma 3 for its chat tokens) and on the real
Gemma 3 270M. References: a hand-written eval/argmax loop over _core.Model, numpy log-softmax, and the
families' documented chat formats."""
import errno
import json

import numpy as np
import pytest

import decollama
from decollama import Llama
from decollama._native import core
from gpu_support import gpu_available

tiny_models = pytest.importorskip("tiny_models")

PROMPT = "The quick brown fox"


def tiny(arch, tmp_path_factory):
    return str(tiny_models.tiny_gguf(arch, "f32", tmp_path_factory))


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return tiny("llama", tmp_path_factory)


@pytest.fixture(scope="module")
def gemma_tiny_path(tmp_path_factory):
    return tiny("gemma3", tmp_path_factory)


@pytest.fixture(scope="module")
def llm(tiny_path):
    return Llama(tiny_path, n_ctx=256, n_threads=1)


@pytest.fixture(scope="module")
def gemma_tiny(gemma_tiny_path):
    return Llama(gemma_tiny_path, n_ctx=256, n_threads=1)


class CountingModel:
    """Wraps _core.Model and counts the tokens handed to eval()."""

    def __init__(self, inner):
        self.inner = inner
        self.evaluated = 0

    def eval(self, tokens, logits="last"):
        self.evaluated += len(tokens)
        return self.inner.eval(tokens, logits=logits)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def manual_greedy(path, prompt_tokens, n, n_ctx=256):
    """Generated token ids from a plain eval/argmax loop over the core objects."""
    model, tok = core.Model(path, n_ctx=n_ctx, n_threads=1), core.Tokenizer(path)
    row = model.eval(prompt_tokens, logits="last")[-1]
    out = []
    for _ in range(n):
        t = int(np.argmax(row))
        if tok.is_eog(t):
            break
        out.append(t)
        row = model.eval([t], logits="last")[-1]
    return out


def continuation(tokenizer, prompt, tokens):
    """The text tokens add after prompt: the difference of two whole detokenizations (so a
    SentencePiece word-start space is kept), broken UTF-8 replaced."""
    head, full = tokenizer.detokenize(prompt), tokenizer.detokenize(prompt + tokens)
    assert full.startswith(head)
    return full[len(head):].decode("utf-8", "replace")


# ---- generation --------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "llama2", "gemma3"])
def test_greedy_generate_equals_manual_argmax_loop(arch, tmp_path_factory):
    path = tiny(arch, tmp_path_factory)
    llm = Llama(path, n_ctx=256, n_threads=1)
    prompt_tokens = llm.tokenize(PROMPT)
    want = manual_greedy(path, prompt_tokens, 24)
    text = llm.generate(PROMPT, max_tokens=24, temperature=0)
    assert text == continuation(core.Tokenizer(path), prompt_tokens, want)
    # The cache holds the prompt and every generated token but the last (never evaluated).
    assert list(llm.input_ids) == prompt_tokens + want[:-1]
    assert llm.generate(PROMPT, max_tokens=24, temperature=0) == text  # again, through the reused cache
    assert llm.generate(prompt_tokens, max_tokens=24, temperature=0) == text  # token-id prompt


def test_greedy_ignores_the_seed(llm):
    texts = {llm.generate(PROMPT, max_tokens=12, temperature=0, seed=s) for s in range(4)}
    assert len(texts) == 1


def test_seeded_sampling_is_reproducible(llm):
    kw = dict(max_tokens=24, temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    a = llm.generate(PROMPT, seed=7, **kw)
    assert llm.generate(PROMPT, seed=7, **kw) == a
    assert len({llm.generate(PROMPT, seed=s, **kw) for s in range(8, 12)} | {a}) > 1
    llm.set_seed(7)
    assert llm.generate(PROMPT, **kw) == a  # the instance seed is what seed=None uses
    llm.set_seed(0)


def test_stream_pieces_join_to_the_text(llm):
    kw = dict(max_tokens=40, temperature=0.9, seed=3)
    text = llm.generate(PROMPT, **kw)
    pieces = list(llm.generate(PROMPT, stream=True, **kw))
    assert all(isinstance(p, str) and p for p in pieces)
    assert "".join(pieces) == text


def gpt2_byte_piece(b):
    """The vocabulary spelling of byte b in byte-level BPE (GPT-2's printable byte mapping)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    if b in printable:
        return chr(b)
    return chr(256 + [c for c in range(256) if c not in printable].index(b))


@pytest.mark.parametrize("arch", ["llama", "gemma3"])  # byte-level BPE; SentencePiece byte fallback
def test_stream_yields_whole_characters(arch, tmp_path_factory):
    # Force a reply spelled byte by byte: each character must come out once, whole.
    llm = Llama(tiny(arch, tmp_path_factory), n_ctx=64, n_threads=1)
    chars = ["👋", "é", "日", "!"]
    spell = gpt2_byte_piece if arch == "llama" else (lambda b: f"<0x{b:02X}>")
    script = [llm._tokenizer.token_id(spell(b)) for c in chars for b in c.encode()]
    assert min(script) >= 0
    llm._model = Scripted(llm._model, script, llm.n_vocab())
    pieces = list(llm.generate(PROMPT, max_tokens=len(script), temperature=0, stream=True))
    assert pieces == chars


def stop_cases(text):
    """Stop strings cut out of a known continuation: inside tokens, across tokens, at the end."""
    assert len(text) > 8
    mid = len(text) // 2
    return [text[mid:mid + 4], text[mid - 1:mid + 1], text[3:9], text[-2:]]


def test_stop_strings_cut_the_text_and_never_leak(llm):
    kw = dict(max_tokens=40, temperature=0.9, seed=11)
    full = llm.generate(PROMPT, **kw)
    for stop in stop_cases(full):
        want = full[:full.index(stop)]
        assert llm.generate(PROMPT, stop=stop, **kw) == want
        pieces = list(llm.generate(PROMPT, stop=[stop], stream=True, **kw))
        assert "".join(pieces) == want, stop
        out = llm(PROMPT, stop=stop, **kw)
        assert out["choices"][0]["text"] == want and out["choices"][0]["finish_reason"] == "stop"


def test_earliest_stop_wins_and_near_misses_pass(llm):
    kw = dict(max_tokens=40, temperature=0.9, seed=11)
    full = llm.generate(PROMPT, **kw)
    a, b = full[5:8], full[15:18]
    assert llm.generate(PROMPT, stop=[b, a], **kw) == full[:full.index(a)]
    # A stop string whose beginning occurs but never its end: held back text comes out in the end.
    near = full[-3:] + "\u2603never"
    assert "".join(llm.generate(PROMPT, stop=near, stream=True, **kw)) == full
    assert llm.generate(PROMPT, stop=[""], **kw) == full  # empty stop strings are ignored


def test_an_interleaved_stream_fails_loudly(llm):
    first = llm.generate(PROMPT, max_tokens=10, temperature=0, stream=True)
    next(first)
    llm.generate("Something else", max_tokens=3, temperature=0)
    with pytest.raises(RuntimeError, match="interrupted"):
        list(first)


class Scripted(CountingModel):
    """Biases the logits so the k-th generated token is script[k] (the last one repeats)."""

    def __init__(self, inner, script, n_vocab):
        super().__init__(inner)
        self.script, self.n_vocab, self.step = script, n_vocab, 0

    def eval(self, tokens, logits="last"):
        out = super().eval(tokens, logits)
        out[..., self.script[min(self.step, len(self.script) - 1)]] += 1e4
        self.step += 1
        return out


def biased(inner, token, n_vocab):
    """Forces token to win at every step."""
    return Scripted(inner, [token], n_vocab)


def test_max_tokens_and_context_limits(tiny_path):
    llm = Llama(tiny_path, n_ctx=32, n_threads=1)
    prompt = llm.tokenize(PROMPT)
    llm._model = biased(llm._model, llm.tokenize("x", add_bos=False)[0], llm.n_vocab())
    out = llm(PROMPT, max_tokens=0, temperature=0)  # <= 0: until the context is full
    assert out["choices"][0]["finish_reason"] == "length"
    assert len(prompt) + out["usage"]["completion_tokens"] == 32 + 1  # the last token needs no slot
    assert llm.n_tokens == 32
    out = llm(PROMPT, max_tokens=3, temperature=0)
    assert out["usage"]["completion_tokens"] == 3 and out["choices"][0]["text"] == "xxx"


def test_eos_ends_generation(tiny_path):
    llm = Llama(tiny_path, n_ctx=128, n_threads=1)
    llm._model = biased(llm._model, llm.token_eos(), llm.n_vocab())
    assert llm._tokenizer.is_eog(llm.token_eos())
    out = llm(PROMPT, max_tokens=5, temperature=0.8)
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["choices"][0]["text"] == "" and out["usage"]["completion_tokens"] == 0


# ---- prompt-prefix reuse -----------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["llama", "gemma3"])  # gemma3: sliding-window layers (window 8)
def test_prefix_reuse_evaluates_only_the_new_tokens(arch, tmp_path_factory):
    path = tiny(arch, tmp_path_factory)
    llm = Llama(path, n_ctx=256, n_threads=1)
    counter = llm._model = CountingModel(llm._model)
    fresh = core.Model(path, n_ctx=256, n_threads=1)

    def assert_logits_as_if_fresh(tokens):
        fresh.reset()
        np.testing.assert_allclose(llm.logits[-1], fresh.eval(tokens, logits="last")[-1], rtol=1e-5, atol=1e-5)

    first = llm.tokenize(PROMPT)
    llm.generate(PROMPT, max_tokens=1, temperature=0)
    assert counter.evaluated == len(first) and llm.n_tokens == len(first)

    longer = PROMPT + " jumps over the lazy dog, then over the fence"
    second = llm.tokenize(longer)
    common = next(i for i, (a, b) in enumerate(zip(first + [-1], second)) if a != b)
    counter.evaluated = 0
    llm.generate(longer, max_tokens=1, temperature=0)
    assert counter.evaluated == len(second) - common  # only the new prompt tail
    assert_logits_as_if_fresh(second)
    reused = llm.generate(longer, max_tokens=6, temperature=0)
    assert reused == Llama(path, n_ctx=256, n_threads=1).generate(longer, max_tokens=6, temperature=0)

    # The same prompt again: only its last token is re-evaluated (for its logits).
    counter.evaluated = 0
    llm.generate(longer, max_tokens=1, temperature=0)
    assert counter.evaluated == 1

    # A prompt that parts ways early: the cache is cut back to the common prefix.
    counter.evaluated = 0
    other_text = PROMPT + " sleeps"
    other = llm.tokenize(other_text)
    llm.generate(other_text, max_tokens=1, temperature=0)
    shared = next(i for i, (a, b) in enumerate(zip(second, other + [-1])) if a != b)
    assert counter.evaluated == len(other) - shared and llm.n_tokens == len(other)
    assert_logits_as_if_fresh(other)


# ---- OpenAI-shaped results ---------------------------------------------------------------------

def test_completion_dict_shape(llm):
    out = llm(PROMPT, max_tokens=5, temperature=0)
    assert set(out) == {"id", "object", "created", "model", "choices", "usage"}
    assert out["object"] == "text_completion" and out["id"].startswith("cmpl-")
    assert isinstance(out["created"], int) and out["model"] == llm.model_path
    (choice,) = out["choices"]
    assert set(choice) == {"text", "index", "logprobs", "finish_reason"}
    assert choice["index"] == 0 and choice["logprobs"] is None and choice["finish_reason"] in ("stop", "length")
    assert choice["text"] == llm.generate(PROMPT, max_tokens=5, temperature=0)
    usage = out["usage"]
    assert usage["prompt_tokens"] == len(llm.tokenize(PROMPT))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    json.dumps(out)  # plain JSON types only


def test_completion_stream_chunks(llm):
    kw = dict(max_tokens=12, temperature=0.8, seed=5)
    whole = llm.create_completion(PROMPT, **kw)
    chunks = list(llm.create_completion(PROMPT, stream=True, **kw))
    assert all(c["object"] == "text_completion" and c["id"] == chunks[0]["id"] for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["usage"] == whole["usage"]


def test_echo_puts_the_prompt_first(llm):
    out = llm(PROMPT, max_tokens=4, temperature=0, echo=True)
    assert out["choices"][0]["text"] == PROMPT + llm.generate(PROMPT, max_tokens=4, temperature=0)


def log_softmax(row):
    x = row.astype(np.float64) - row.max()
    return x - np.log(np.exp(x).sum())


def test_logprobs_match_numpy(llm, tiny_path):
    out = llm(PROMPT, max_tokens=6, temperature=0, logprobs=3)
    lp = out["choices"][0]["logprobs"]
    n = len(lp["tokens"])
    assert n == out["usage"]["completion_tokens"] and n > 0
    assert all(len(v) == n for v in lp.values())
    # Greedy: each chosen token is the most likely one. (Top entries are keyed by text, so two
    # byte tokens that both print as U+FFFD share a key: at most 3.)
    for chosen, top in zip(lp["token_logprobs"], lp["top_logprobs"]):
        assert 1 <= len(top) <= 3 and chosen == pytest.approx(max(top.values()))
    # The first step from an independent forward pass and numpy's log-softmax.
    model = core.Model(tiny_path, n_ctx=256, n_threads=1)
    ref = log_softmax(model.eval(llm.tokenize(PROMPT), logits="last")[-1])
    assert lp["token_logprobs"][0] == pytest.approx(ref.max(), abs=1e-5)
    top3 = np.sort(ref)[::-1][:3]
    assert all(np.isclose(top3, v, atol=1e-5).any() for v in lp["top_logprobs"][0].values())
    assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"])


def test_echo_logprobs_cover_the_prompt(llm, tiny_path):
    out = llm(PROMPT, max_tokens=3, temperature=0, logprobs=1, echo=True)
    lp = out["choices"][0]["logprobs"]
    prompt = llm.tokenize(PROMPT)
    assert len(lp["tokens"]) == len(prompt) + out["usage"]["completion_tokens"]
    assert lp["token_logprobs"][0] is None
    model = core.Model(tiny_path, n_ctx=256, n_threads=1)
    rows = model.eval(prompt, logits="all")
    want = [log_softmax(rows[i])[prompt[i + 1]] for i in range(len(prompt) - 1)]
    np.testing.assert_allclose(lp["token_logprobs"][1:len(prompt)], want, atol=1e-5)


@pytest.mark.parametrize("which", ["llm", "gemma_tiny"])
def test_chat_completion_shape_and_stream(which, request):
    llm = request.getfixturevalue(which)
    messages = [{"role": "user", "content": "Hello there"}]
    out = llm.create_chat_completion(messages, max_tokens=8, temperature=0)
    assert out["object"] == "chat.completion" and out["id"].startswith("chatcmpl-")
    (choice,) = out["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    prompt = llm.apply_chat_template(messages)
    assert out["usage"]["prompt_tokens"] == len(llm.tokenize(prompt, add_bos=False, special=True))

    chunks = list(llm.create_chat_completion(messages, max_tokens=8, temperature=0, stream=True))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    last = chunks[-1]["choices"][0]
    assert last["delta"] == {} and last["finish_reason"] == choice["finish_reason"]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == choice["message"]["content"]


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_chat_uses_the_file_template_and_a_single_bos(arch, tmp_path_factory):
    # The tiny GGUFs carry their tokenizers' templates; transformers renders them the same way.
    from transformers import AutoTokenizer

    llm = Llama(tiny(arch, tmp_path_factory), n_ctx=128, n_threads=1)
    hf = AutoTokenizer.from_pretrained(str(tiny_models.tiny_checkpoint(arch, tmp_path_factory)))
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"},
                {"role": "user", "content": "Bye"}]
    assert llm.apply_chat_template(messages) == hf.apply_chat_template(messages, tokenize=False,
                                                                       add_generation_prompt=True)
    tokens = llm.tokenize(llm.apply_chat_template(messages), add_bos=False, special=True)
    assert tokens[0] == llm.token_bos() and tokens[1] != llm.token_bos()
    assert tokens == hf(hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                        add_special_tokens=False)["input_ids"]


def test_chat_stops_at_end_of_turn(gemma_tiny_path):
    # <end_of_turn> is what a Gemma reply ends with: the reply stops there, without its text.
    llm = Llama(gemma_tiny_path, n_ctx=128, n_threads=1)
    (eot,) = llm.tokenize("<end_of_turn>", add_bos=False, special=True)
    llm._model = biased(llm._model, eot, llm.n_vocab())
    out = llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=5)
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["choices"][0]["message"]["content"] == "" and out["usage"]["completion_tokens"] == 0


# ---- tokens and low-level calls ----------------------------------------------------------------

def test_tokenize_detokenize_and_facts(gemma_tiny):
    llm = gemma_tiny
    ids = llm.tokenize(PROMPT)
    assert ids == llm.tokenize(PROMPT.encode()) and ids[0] == llm.token_bos()
    assert llm.tokenize(PROMPT, add_bos=False) == ids[1:]
    assert isinstance(llm.detokenize(ids), bytes) and llm.detokenize(ids).decode() == PROMPT
    assert llm.tokenize("<start_of_turn>", add_bos=False, special=True) != \
        llm.tokenize("<start_of_turn>", add_bos=False, special=False)
    assert llm.n_ctx() == 256 and llm.n_vocab() == 640 and llm.token_eos() == 1 and llm.token_bos() == 2
    assert llm.detokenize([llm.token_bos()]) == b"" and llm.detokenize([llm.token_bos()], special=True) == b"<bos>"
    assert llm.metadata["general.architecture"] == "gemma3"
    assert llm.kv_info()["n_ctx"] == 256


def test_eval_logits_and_reset(llm, tiny_path):
    llm.reset()
    assert llm.n_tokens == 0
    ids = llm.tokenize(PROMPT)
    rows = llm.eval(ids, logits="all")
    assert rows.shape == (len(ids), llm.n_vocab()) and rows.dtype == np.float32
    np.testing.assert_array_equal(llm.logits, rows)
    assert llm.n_tokens == len(ids)
    ref = core.Model(tiny_path, n_ctx=256, n_threads=1).eval(ids, logits="all")
    np.testing.assert_allclose(rows, ref, rtol=1e-5, atol=1e-5)
    llm.reset()
    assert llm.n_tokens == 0 and len(llm.input_ids) == 0


# ---- errors ------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.gguf"
    with pytest.raises(FileNotFoundError) as e:
        Llama(path)
    assert e.value.errno == errno.ENOENT and str(path) in str(e.value)
    with pytest.raises(ValueError, match="not a file"):
        Llama(tmp_path)


def test_invalid_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOTAGGUF" + bytes(64))
    with pytest.raises(decollama.GGUFError, match=str(bad)):
        Llama(bad)


def test_kv_formats_reach_the_cache(gemma_tiny_path):
    llm = Llama(gemma_tiny_path, n_ctx=64, kv="q8_0", kv_v="f16")
    assert {(layer["k"], layer["v"]) for layer in llm.kv_info()["layers"]} == {("q8_0", "f16")}
    with pytest.raises(ValueError, match="bogus"):
        Llama(gemma_tiny_path, kv="bogus")


@pytest.mark.skipif(gpu_available(), reason="checks the error of a machine without a usable GPU")
def test_gpu_layers_without_a_usable_gpu(tiny_path):
    with pytest.raises(ValueError, match="n_gpu_layers=1"):
        Llama(tiny_path, n_gpu_layers=1)


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_ctx=0), "n_ctx"), (dict(n_batch=0), "n_batch"), (dict(n_threads=0), "n_threads"),
    (dict(seed=-2), "seed"), (dict(n_ctx="big"), "n_ctx"), (dict(chat_format="vicuna"), "chat format"),
])
def test_bad_constructor_parameters(tiny_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Llama(tiny_path, **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    (dict(top_p=1.5), "top_p"), (dict(top_k=-1), "top_k"), (dict(temperature=float("nan")), "temperature"),
    (dict(min_p=2.0), "min_p"), (dict(repeat_penalty=0.0), "repeat_penalty"), (dict(max_tokens="5"), "max_tokens"),
    (dict(stop=[3]), "stop"), (dict(seed=2**64), "seed"),
])
def test_bad_generation_parameters(llm, kwargs, match):
    with pytest.raises(ValueError, match=match):
        llm.generate(PROMPT, **kwargs)
    with pytest.raises(ValueError, match=match):
        llm(PROMPT, stream=True, **kwargs)  # raised at the call, not at the first chunk


def test_prompt_longer_than_the_context(tiny_path):
    llm = Llama(tiny_path, n_ctx=16, n_threads=1)
    long_prompt = " ".join(["fox"] * 40)
    n = len(llm.tokenize(long_prompt))
    with pytest.raises(ValueError, match=f"{n} tokens.*n_ctx=16"):
        llm.generate(long_prompt)
    with pytest.raises(ValueError, match="n_ctx=16"):
        llm.create_chat_completion([{"role": "user", "content": long_prompt}], stream=True)
    with pytest.raises(ValueError, match="n_ctx=16"):
        llm.eval(list(range(17)))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.generate([5, 10_000])
    with pytest.raises(ValueError, match="empty"):
        llm.generate([])


# ---- the real model ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gemma(gemma_path):
    return Llama(gemma_path, n_ctx=512, n_threads=2)


@pytest.mark.slow
def test_gemma_greedy_matches_manual_loop(gemma, gemma_path):
    prompt = "The capital of France is"
    tokens = gemma.tokenize(prompt)
    want = manual_greedy(gemma_path, tokens, 8, n_ctx=512)
    text = gemma.generate(prompt, max_tokens=8, temperature=0)
    assert text == continuation(core.Tokenizer(gemma_path), tokens, want)
    assert len(text) > 8


@pytest.mark.slow
def test_gemma_chat_uses_the_builtin_template(gemma, gemma_path):
    messages = [{"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "What is the capital of France?"}]
    prompt = gemma.apply_chat_template(messages)
    assert prompt == ("<bos><start_of_turn>user\nAnswer in one word.\n\nWhat is the capital of France?"
                      "<end_of_turn>\n<start_of_turn>model\n")
    tokens = gemma.tokenize(prompt, add_bos=False, special=True)
    assert tokens.count(gemma.token_bos()) == 1 and tokens[0] == gemma.token_bos()
    start_of_turn = gemma.tokenize("<start_of_turn>", add_bos=False, special=True)
    assert len(start_of_turn) == 1 and tokens.count(start_of_turn[0]) == 2

    out = gemma.create_chat_completion(messages, max_tokens=8, temperature=0)
    assert out["usage"]["prompt_tokens"] == len(tokens)
    want = manual_greedy(gemma_path, tokens, 8, n_ctx=512)  # stops at <end_of_turn> (an EOG token)
    assert out["choices"][0]["message"]["content"] == continuation(core.Tokenizer(gemma_path), tokens, want)
    assert out["usage"]["completion_tokens"] == len(want)
    assert out["choices"][0]["finish_reason"] == ("stop" if len(want) < 8 else "length")
