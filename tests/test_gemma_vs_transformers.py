"""Gemma 3 270M Q4_K_M against HF transformers loading the same GGUF (it dequantizes the weights
and runs fp32 activations) on the first 512 tokens of wikitext-2 test.

With precise_activations the only differences left are fp32 summation order: same argmax
everywhere, logits within a few 1e-4. The default path quantizes activations to q8_* like
llama.cpp: a few argmax flips on near ties, the chunk's perplexity within a fraction of a percent.
Measured (x86 AVX-512, 2 threads): precise 512/512 same argmax, max |diff| 2.0e-4, mean 5.5e-6;
default 495/512 (96.7%), max |diff| 5.3, mean 0.20, PPL 14.510 vs 14.542 (-0.22%)."""
import os

import numpy as np
import pytest

from decollama._native import core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_TOKENS = 512
# Precise bounds: about 10x the measured differences.
PRECISE_MAX_ABS = 2e-3
PRECISE_MEAN_ABS = 5e-5

pytestmark = pytest.mark.slow


class Reference:
    def __init__(self, ids: np.ndarray, logits: np.ndarray):
        self.ids, self.logits = ids, logits


def first_tokens(gemma_path: str) -> np.ndarray:
    # A 16 KiB prefix holds far more than 512 tokens: its first 512 are those of the whole file.
    with open(os.path.join(ROOT, "tests", "data", "wiki.test.raw"), encoding="utf-8") as f:
        text = f.read(16384)
    ids = core.Tokenizer(gemma_path).tokenize(text, add_bos=True)[:N_TOKENS]
    assert len(ids) == N_TOKENS
    return np.asarray(ids, dtype=np.int32)


@pytest.fixture(scope="module")
def reference(gemma_path) -> Reference:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    ids = first_tokens(gemma_path)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gemma_path), gguf_file=os.path.basename(gemma_path), dtype=torch.float32,
        attn_implementation="eager").eval()
    with torch.no_grad():
        logits = hf(torch.from_numpy(ids.astype(np.int64))[None]).logits[0].float().numpy()
    del hf  # 1 GiB of fp32 weights
    return Reference(ids, logits)


def decollama_logits(gemma_path: str, ids: np.ndarray, precise: bool) -> np.ndarray:
    # f32 KV: transformers keeps keys and values in fp32 too.
    m = core.Model(gemma_path, n_ctx=N_TOKENS, n_threads=0, kv_k="f32", kv_v="f32",
                   precise_activations=precise)
    assert m.precise_activations == precise
    return m.eval(ids, logits="all")


def mean_nll(logits: np.ndarray, ids: np.ndarray) -> float:
    """Mean -log p(ids[i + 1] | ..ids[i]) in float64, 64 rows at a time (a row is 1 MiB)."""
    total = 0.0
    for i in range(0, len(ids) - 1, 64):
        x = logits[i:min(i + 64, len(ids) - 1)].astype(np.float64)
        top = x.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.exp(x - top).sum(axis=1))
        total += float((lse - x[np.arange(len(x)), ids[i + 1:i + 1 + len(x)]]).sum())
    return total / (len(ids) - 1)


def test_precise_activations_match_transformers(gemma_path, reference):
    logits = decollama_logits(gemma_path, reference.ids, precise=True)
    assert logits.shape == reference.logits.shape
    agreement = np.mean(logits.argmax(axis=1) == reference.logits.argmax(axis=1))
    diff = np.abs(logits - reference.logits)
    assert agreement >= 0.99, agreement
    assert diff.max() <= PRECISE_MAX_ABS, diff.max()
    assert diff.mean() <= PRECISE_MEAN_ABS, diff.mean()


def test_quantized_activations_stay_close_to_transformers(gemma_path, reference):
    logits = decollama_logits(gemma_path, reference.ids, precise=False)
    agreement = np.mean(logits.argmax(axis=1) == reference.logits.argmax(axis=1))
    assert agreement >= 0.95, agreement
    ppl = np.exp(mean_nll(logits, reference.ids))
    ppl_ref = np.exp(mean_nll(reference.logits, reference.ids))
    assert abs(ppl / ppl_ref - 1) <= 0.01, (ppl, ppl_ref)
