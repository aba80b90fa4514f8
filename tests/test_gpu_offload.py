"""Layer offload on the GPU (n_gpu_layers, llama.cpp's -ngl): whole models, CUDA backend.

The host twin (tests/test_offload.py) already pins the offload program to the CPU model bit for bit
on every machine; here the same program runs over the CUDA kernels. They do not round like the CPU
(fp32 warp dot products in decode, fp16 tensor-core tiles in prefill), so logits are compared with
tolerances against the CPU model with precise (fp32) activations, and perplexity on Gemma 3 270M
against the CPU figure within 0.5% for f16 and every KV format. Skipped without a CUDA build and a
usable GPU (CI)."""
import json

import numpy as np
import pytest

import tiny_models
from decollama import Llama
from decollama._native import core
from gpu_support import needs_gpu

pytestmark = needs_gpu

# GPU vs CPU logits: the worst difference relative to the logits' range, and the share of rows whose
# most likely token agrees (near ties may flip). A quantized KV cache amplifies rounding differences
# (a K value on a q4_0 step edge rounds the other way), so the bound also admits twice what the CPU
# itself shows between its two activation paths (fp32 vs q8 activations) on the same format.
MAX_REL_ERR = 2e-2
MIN_ARGMAX_AGREEMENT = 0.95
PPL_REL_TOL = 0.005


@pytest.fixture(scope="module")
def hd64_path(tmp_path_factory):
    return str(tiny_models.tiny_gguf("llama", "q8_0", tmp_path_factory, head_dim=64))


@pytest.fixture(scope="module")
def codebook_path(hd64_path, tmp_path_factory):
    return tiny_models.tiny_codebook(hd64_path, tmp_path_factory)


@pytest.fixture(scope="module")
def gemma_codebook(gemma_path, tmp_path_factory):
    from decollama.tools import calibrate

    out = tmp_path_factory.mktemp("gpu-gemma-codebook") / "gemma-codebooks.gguf"
    assert calibrate.main(["-m", gemma_path, "-f", str(tiny_models.WIKITEXT), "-o", str(out), "--tokens", "4096",
                           "--ctx", "512", "--iters", "8", "--no-progress"]) == 0
    return str(out)


def tokens(n, n_vocab, seed=0):
    return np.random.default_rng(seed).integers(3, n_vocab, size=n).tolist()


def script(m, toks, n_decode=6):
    """Prefill logits of every row (in n_batch pieces), then a few decode steps: one array each."""
    out = [m.eval(toks[:-n_decode], "all")]
    for t in toks[-n_decode:]:
        out.append(m.eval([t], "last"))
    return out


def differences(got, want):
    """Per step: (max |got - want| / max |want|, share of rows with the same argmax)."""
    out = []
    for a, b in zip(got, want):
        assert a.shape == b.shape, f"shape {a.shape} vs {b.shape}"
        assert np.isfinite(a).all(), "non-finite logits"
        out.append((float(np.abs(a - b).max()) / (float(np.abs(b).max()) + 1e-6),
                    float(np.mean(a.argmax(-1) == b.argmax(-1)))))
    return out


def assert_close(got, want, what, cpu_alt):
    """got (GPU) vs want (CPU, fp32 activations); cpu_alt: the CPU with q8 activations, whose distance
    from want widens the bounds (see MAX_REL_ERR)."""
    for i, ((err, agree), (err0, agree0)) in enumerate(zip(differences(got, want), differences(cpu_alt, want))):
        assert err < max(MAX_REL_ERR, 2 * err0), f"{what}: step {i} max error {err:.3g} of the logits' range " \
                                                 f"(CPU q8 vs fp32 activations: {err0:.3g})"
        assert agree >= min(MIN_ARGMAX_AGREEMENT, agree0 - 0.05), \
            f"{what}: step {i} argmax agrees on {agree:.1%} of rows (CPU paths: {agree0:.1%})"


def gpu_and_cpu_models(path, n_gpu_layers, **kw):
    """(GPU, CPU with fp32 activations, CPU with q8 activations), the offload as asked."""
    gpu = core.Model(path, n_gpu_layers=n_gpu_layers, **kw)
    ref = core.Model(path, precise_activations=True, **kw)
    info = gpu.offload_info
    assert info is not None and info["device"] not in ("", "host twin")
    n_off = ref.n_layer if n_gpu_layers < 0 else min(n_gpu_layers, ref.n_layer)
    assert (info["first_layer"], info["n_layers"]) == (ref.n_layer - n_off, n_off)
    assert info["output"] == (n_gpu_layers < 0 or n_gpu_layers > ref.n_layer)
    assert info["weight_bytes"] > 0 and info["kv_bytes"] > 0
    return gpu, ref, core.Model(path, **kw)


def check(path, n_gpu_layers, n_tokens, what, seed=0, **kw):
    models = gpu_and_cpu_models(path, n_gpu_layers, **kw)
    toks = tokens(n_tokens, models[1].n_vocab, seed)
    got, want, alt = (script(m, toks) for m in models)
    assert_close(got, want, what, alt)


# ------------------------------------------------------------------------------------ tiny models


@pytest.mark.parametrize("arch", ["llama", "gemma3", "qwen3", "qwen2"])
@pytest.mark.parametrize("ngl", [1, -1])
def test_logits_every_family(arch, ngl, tmp_path_factory):
    path = str(tiny_models.tiny_gguf(arch, "f16", tmp_path_factory, head_dim=64))
    check(path, ngl, 120, f"{arch} ngl={ngl}", n_ctx=160, n_threads=2, n_batch=48)


@pytest.mark.parametrize("kv_k,kv_v", [("f16", "f16"), ("f32", "f32"), ("q8_0", "q8_0"), ("q4_0", "q4_0"),
                                       ("deco4", "deco4"), ("deco2", "deco2"), ("had4", "had2"),
                                       ("deco4", "q4_0")])
@pytest.mark.parametrize("kv_window", [0, 24])
def test_logits_every_format(kv_k, kv_v, kv_window, hd64_path):
    # 300 positions: sink, whole 256-position blocks, pending ring rows, fp16 window.
    check(hd64_path, -1, 300, f"{kv_k}/{kv_v} window {kv_window}", seed=1, n_ctx=320, n_threads=2, n_batch=64,
          kv_k=kv_k, kv_v=kv_v, kv_window=kv_window)


@pytest.mark.parametrize("kv", ["cq4", "cq2", "cq1"])
def test_logits_cq(kv, hd64_path, codebook_path):
    check(hd64_path, -1, 120, kv, seed=2, n_ctx=160, n_threads=2, n_batch=32, kv_k=kv, kv_v=kv,
          kv_codebook=codebook_path)


def test_truncate_refill_and_read_kv(hd64_path):
    """Truncate into the fp16 window (the GPU ring refilled from the blocks), then go on; read_kv of an
    offloaded layer copies the GPU's bytes back."""
    kw = dict(n_ctx=640, n_threads=2, n_batch=64, kv_k="deco2", kv_v="deco2", kv_window=40)
    models = gpu_and_cpu_models(hd64_path, 1, **kw)
    toks = tokens(600, models[1].n_vocab, seed=3)
    for m in models:
        m.eval(toks[:560], "none")
    kept = {m.truncate(530) for m in models}
    assert len(kept) == 1
    n = kept.pop()
    got, want, alt = ([m.eval(toks[n:600], "all")] for m in models)
    assert_close(got, want, "after truncate", alt)
    # The cache as decoded: a deco2 step apart where a projection's rounding moved a value over an edge,
    # as between the CPU's two activation paths.
    a, b, c = (m.read_kv(1, "k", 0, 0, 560) for m in models)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= max(0.05 * np.abs(b).max(), 2 * np.abs(c - b).max())


# ----------------------------------------------------------------------------------- Gemma 3 270M


@pytest.mark.parametrize("ngl", [6, -1])
def test_gemma_logits(gemma_path, ngl):
    check(gemma_path, ngl, 300, f"gemma ngl={ngl}", seed=4, n_ctx=512, n_threads=4, n_batch=128)


def test_gemma_generate(gemma_path):
    prompt = "The capital of France is"
    cpu = Llama(gemma_path, n_ctx=256, precise_activations=True).generate(prompt, max_tokens=4, temperature=0)
    llm = Llama(gemma_path, n_ctx=256, n_gpu_layers=-1)
    assert llm._model.offload_info["output"] is True
    got = llm.generate(prompt, max_tokens=4, temperature=0)
    assert got and got == cpu, f"GPU {got!r} vs CPU {cpu!r}"


GEMMA_FORMATS = ["f16", "q8_0", "q4_0", "deco4", "deco2", "had4", "had2", "cq4", "cq2", "cq1"]


def gemma_ppl(gemma_path, capsys, kv, ngl, codebook=None):
    from decollama.tools import perplexity

    argv = ["-m", gemma_path, "-f", str(tiny_models.WIKITEXT), "-c", "512", "--chunks", "8", "--kv", kv,
            "--json", "--no-progress", "-ngl", str(ngl)]
    if codebook:
        argv += ["--kv-codebook", codebook]
    capsys.readouterr()
    assert perplexity.main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ppl"]


@pytest.mark.parametrize("kv", GEMMA_FORMATS)
def test_gemma_perplexity_matches_cpu(kv, gemma_path, capsys, request):
    codebook = request.getfixturevalue("gemma_codebook") if kv.startswith("cq") else None
    cpu = gemma_ppl(gemma_path, capsys, kv, 0, codebook)
    gpu = gemma_ppl(gemma_path, capsys, kv, -1, codebook)
    assert abs(gpu - cpu) <= PPL_REL_TOL * cpu, f"{kv}: GPU PPL {gpu:.4f} vs CPU {cpu:.4f}"
