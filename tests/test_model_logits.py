"""The forward pass against transformers: tiny random checkpoints of every supported architecture,
converted to f32 GGUF, must give transformers' fp32 eager logits on the same token ids, in batched
prefill and token by token; plus the evaluation API (nll, truncate, errors) and a smoke test on the
real Gemma 3 270M GGUF."""
import numpy as np
import pytest

from decollama._native import core

import tiny_models

ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma3"]
N_TOKENS = 100  # > gemma3's tiny window (8) and > one attention tile (64)
N_BATCH = 32    # prefill runs in 4 batches
ATOL = 1e-3


class Reference:
    def __init__(self, gguf: str, ids: list, logits: np.ndarray):
        self.gguf, self.ids, self.logits = gguf, ids, logits


@pytest.fixture(scope="module", params=ARCHS)
def reference(request, tmp_path_factory):
    """(f32 GGUF path, token ids, transformers logits) of one architecture."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    arch = request.param
    checkpoint = tiny_models.tiny_checkpoint(arch, tmp_path_factory)
    gguf = str(tiny_models.tiny_gguf(arch, "f32", tmp_path_factory))
    hf = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    n_vocab = hf.config.get_text_config().vocab_size
    ids = np.random.default_rng(1).integers(0, n_vocab, N_TOKENS).tolist()
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].float().numpy()
    return Reference(gguf, ids, logits)


def load(ref: Reference, **kw) -> "core.Model":
    kw = {"n_ctx": 128, "n_threads": 2, "n_batch": N_BATCH, "kv_k": "f32", "kv_v": "f32", **kw}
    return core.Model(ref.gguf, **kw)


def test_prefill_matches_transformers(reference):
    logits = load(reference).eval(reference.ids, logits="all")
    assert logits.shape == reference.logits.shape and logits.dtype == np.float32
    np.testing.assert_allclose(logits, reference.logits, rtol=0, atol=ATOL)


def test_decode_matches_transformers(reference):
    m = load(reference)
    logits = np.concatenate([m.eval([t]) for t in reference.ids])
    assert m.n_past == N_TOKENS
    np.testing.assert_allclose(logits, reference.logits, rtol=0, atol=ATOL)


def test_scalar_kernels_match_transformers(reference):
    m = load(reference, cpu_path="scalar", n_threads=1)
    assert m.cpu_path == "scalar" and m.n_threads == 1
    np.testing.assert_allclose(m.eval(reference.ids, logits="all"), reference.logits, rtol=0, atol=ATOL)


def test_f16_cache_stays_close(reference):
    """f16 keys and values: only the cache rounding separates the logits from transformers."""
    logits = load(reference, kv_k="f16", kv_v="f16").eval(reference.ids, logits="all")
    np.testing.assert_allclose(logits, reference.logits, rtol=0, atol=2e-2)


def test_prompt_reuse_with_truncate(reference):
    m = load(reference)
    m.eval(reference.ids[:70], logits="none")
    m.truncate(40)
    assert m.n_past == 40
    np.testing.assert_allclose(m.eval(reference.ids[40:], logits="all"), reference.logits[40:], rtol=0, atol=ATOL)
    m.reset()
    np.testing.assert_allclose(m.eval(reference.ids[:5], logits="last"), reference.logits[4:5], rtol=0, atol=ATOL)


@pytest.mark.parametrize("first", [10, 50, 99])  # in the first batch, in a later one, none left
def test_nll_is_the_log_softmax_of_the_logits(reference, first):
    nll = load(reference).nll(np.asarray(reference.ids, dtype=np.int32), first)
    z = reference.logits.astype(np.float64)
    log_probs = z - z.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    expected = -log_probs[np.arange(first, N_TOKENS - 1), reference.ids[first + 1:]]
    assert nll.dtype == np.float64 and nll.shape == (N_TOKENS - 1 - first,)
    np.testing.assert_allclose(nll, expected, rtol=0, atol=ATOL)


# Checkpoint variants that exercise metadata the default tiny configs leave out.
VARIANTS = {
    "llama3-rope": ("llama", {"rope_parameters": {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    "linear-rope": ("llama", {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}}),
    "yarn-rope": ("qwen2", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1000000.0, "factor": 4.0,
                                                "original_max_position_embeddings": 64}}),
    "gemma3-linear-rope": ("gemma3", {"rope_parameters": {
        "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}}),
    "gemma3-softcap": ("gemma3", {"final_logit_softcapping": 2.5}),
    "gemma3-query-scalar": ("gemma3", {"query_pre_attn_scalar": 24}),  # != head_dim: attention.scale
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_match_transformers(variant, tmp_path):
    """rope_freqs (llama3), linear and YaRN rope scaling, final logit softcapping and an explicit
    attention scale, all from the GGUF metadata."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    arch, overrides = VARIANTS[variant]
    checkpoint = tiny_models.make_tiny_checkpoint(arch, tmp_path / "hf", **overrides)
    gguf = tiny_models.convert(checkpoint, tmp_path / "model.gguf", "f32")
    hf = transformers.AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32,
                                                           attn_implementation="eager").eval()
    ids = np.random.default_rng(2).integers(0, hf.config.get_text_config().vocab_size, N_TOKENS).tolist()
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits[0].numpy()
    logits = load(Reference(str(gguf), ids, expected)).eval(ids, logits="all")
    np.testing.assert_allclose(logits, expected, rtol=0, atol=ATOL)


# ---- the evaluation API --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return str(tiny_models.tiny_gguf("llama", "f32", tmp_path_factory))


def test_properties(tiny_llama):
    m = core.Model(tiny_llama, n_ctx=64, n_threads=1)
    assert (m.architecture, m.n_vocab, m.n_embd, m.n_layer) == ("llama", 768, 64, 2)
    assert (m.n_head, m.n_head_kv, m.head_dim, m.n_ctx, m.n_past, m.n_threads) == (4, 2, 16, 64, 0, 1)
    assert m.cpu_path in ("scalar", "avx2", "avx512")
    assert core.Model(tiny_llama, n_ctx=64).n_threads >= 1  # 0: physical cores


def test_logits_modes_and_token_containers(tiny_llama):
    m = core.Model(tiny_llama, n_ctx=64, n_threads=1)
    ids = [5, 17, 300, 2]
    assert m.eval(ids, logits="none").shape == (0, 768) and m.n_past == 4
    m.reset()
    last = m.eval(np.asarray(ids, dtype=np.int64), logits="last")
    m.reset()
    every = m.eval(np.asarray(ids, dtype=np.int32), logits="all")
    assert last.shape == (1, 768) and every.shape == (4, 768)
    np.testing.assert_array_equal(last[0], every[-1])
    assert m.eval((), logits="all").shape == (0, 768)


def test_bad_input_leaves_the_state_alone(tiny_llama):
    m = core.Model(tiny_llama, n_ctx=16, n_threads=1)
    m.eval([1, 2, 3], logits="none")
    with pytest.raises(ValueError, match=r"token id 768 at index 1 is out of range \[0, 768\)"):
        m.eval([1, 768])
    with pytest.raises(ValueError, match="out of range"):
        m.eval([-1])
    with pytest.raises(ValueError, match="out of range"):
        m.eval([2**40])
    with pytest.raises(ValueError, match=r"n_past \(3\) \+ 14 tokens exceeds n_ctx \(16\)"):
        m.eval(list(range(14)))
    with pytest.raises(ValueError, match="logits must be"):
        m.eval([1], logits="first")
    with pytest.raises(ValueError, match="no tokens"):
        m.eval([])
    with pytest.raises(ValueError, match="first must be"):
        m.nll([1, 2, 3], 3)
    for not_tokens in (7, "abc", [1.5], np.zeros((2, 2), np.int32)):
        with pytest.raises(TypeError):
            m.eval(not_tokens)
    with pytest.raises(ValueError, match="truncate"):
        m.truncate(-1)
    assert m.n_past == 3
    m.eval(list(range(13)), logits="none")  # exactly fills the context
    assert m.n_past == 16


def test_bad_options(tiny_llama):
    with pytest.raises(ValueError, match="n_ctx"):
        core.Model(tiny_llama, n_ctx=0)
    with pytest.raises(ValueError, match="n_batch"):
        core.Model(tiny_llama, n_batch=0)
    with pytest.raises(ValueError, match="CPU kernel path .neon."):
        core.Model(tiny_llama, cpu_path="neon")
    with pytest.raises(ValueError, match="multiple of 32"):
        core.Model(tiny_llama, kv_k="q8_0")  # head_dim 16
    with pytest.raises(ValueError, match="No such file|not found|cannot open|open"):
        core.Model(tiny_llama + ".missing")


# ---- the reference model -------------------------------------------------------------------------

GEMMA_PROMPT = [2, 818, 5279, 529, 7001, 563, 9079, 236761, 669, 5279, 529, 9405, 563, 15687, 236761, 669,
                5279, 529, 11702, 563]  # "<bos>The capital of France is Paris. ... of Italy is"


def test_gemma_smoke(gemma_path):
    m = core.Model(gemma_path, n_ctx=64, n_threads=2)
    shape = (m.architecture, m.n_vocab, m.n_layer, m.n_head, m.n_head_kv, m.head_dim)
    assert shape == ("gemma3", 262144, 18, 4, 1, 256)
    assert m.kv_info()["bytes_per_token"] == 18 * 1024  # 18 layers x (K + V) x 256 halves
    prefill = m.eval(GEMMA_PROMPT, logits="all")
    assert np.isfinite(prefill).all()
    assert prefill[-1].argmax() == 13706  # "▁Rome"
    m.reset()
    decode = np.concatenate([m.eval([t]) for t in GEMMA_PROMPT])
    # Tight on purpose: Gemma amplifies any rounding difference between the one-token and the
    # batched kernels (through 18 layers of 8-bit activations) to whole logits.
    scale = np.abs(prefill).max(axis=1, keepdims=True)
    assert (np.abs(decode - prefill) / scale).max() < 1e-3
