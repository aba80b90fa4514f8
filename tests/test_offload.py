"""Layer offload (n_gpu_layers, llama.cpp's -ngl) without a GPU: the host twin.

The offloaded layers run one program (cuda/offload_runner.h) over a backend: the CUDA kernels, or
the host twin, which runs it on host memory with the CPU kernels and the GPU KV store's host twin.
Model(..., n_gpu_layers=N, offload_backend="host-twin") must therefore give the plain CPU model's
logits exactly: any slip in what the program decides (which rows the last layer computes, offsets
into the cache, ring and sink rows, the host cache's bookkeeping, the handover of the residual
stream for partial offload, the output head) shows up as a difference. Checked for every
architecture family, every KV format, several batches, decode, nll, truncate with the fp16 window
(the offload's ring refill) and read_kv of offloaded layers. Then the errors: no CUDA / no GPU,
bad values, what the GPU kernels do not take. The GPU itself: tests/test_gpu_offload.py."""
import numpy as np
import pytest

import tiny_models
from decollama import Llama
from decollama._native import core
from gpu_support import gpu_available

TWIN = dict(offload_backend="host-twin")


@pytest.fixture(scope="module")
def hd64_path(tmp_path_factory):
    """Llama 3 style, 2 layers, 4 query / 2 KV heads of size 64: every KV format fits."""
    return str(tiny_models.tiny_gguf("llama", "f32", tmp_path_factory, head_dim=64))


@pytest.fixture(scope="module")
def qwen2_hd32_path(tmp_path_factory):
    """Qwen2 (q/k/v biases), head size 32."""
    return str(tiny_models.tiny_gguf("qwen2", "q8_0", tmp_path_factory, head_dim=32))


@pytest.fixture(scope="module")
def codebook_path(hd64_path, tmp_path_factory):
    return tiny_models.tiny_codebook(hd64_path, tmp_path_factory)


def tokens(n, n_vocab, seed=0):
    return np.random.default_rng(seed).integers(3, n_vocab, size=n).tolist()


def run_script(m, toks):
    """Logits of a prompt in several batches, a few decode steps, then nll over a second pass."""
    out = [m.eval(toks[:-4], "all")]
    for t in toks[-4:]:
        out.append(m.eval([t], "last"))
    m.reset()
    out.append(m.nll(toks, 3)[None, :])
    return out


def assert_same(a, b, what):
    for i, (x, y) in enumerate(zip(a, b)):
        assert x.shape == y.shape, f"{what}: step {i} shape"
        assert np.array_equal(x, y), f"{what}: step {i} differs by {np.abs(x - y).max()}"


@pytest.mark.parametrize("arch,outtype", [("llama", "hd64"), ("gemma3", "f32"), ("qwen3", "f32"), ("qwen2", "q8_0")])
def test_twin_equals_cpu_every_family(arch, outtype, hd64_path, qwen2_hd32_path, tmp_path_factory):
    path = {"llama": hd64_path, "qwen2": qwen2_hd32_path}.get(arch) or str(tiny_models.tiny_gguf(arch, outtype,
                                                                                               tmp_path_factory))
    kw = dict(n_ctx=96, n_threads=2, n_batch=16)
    ref = core.Model(path, **kw)
    toks = tokens(40, ref.n_vocab)
    want = run_script(ref, toks)
    n_layer = ref.n_layer
    for ngl in (1, n_layer, n_layer + 1, -1):
        m = core.Model(path, n_gpu_layers=ngl, **kw, **TWIN)
        info = m.offload_info
        assert info["device"] == "host twin"
        n_off = n_layer if ngl < 0 else min(ngl, n_layer)
        assert (info["first_layer"], info["n_layers"]) == (n_layer - n_off, n_off)
        assert info["output"] == (ngl < 0 or ngl > n_layer)
        assert m.n_gpu_layers == info["n_layers"]
        assert_same(run_script(m, toks), want, f"{arch} ngl={ngl}")


FORMATS = [("f32", "f32"), ("q8_0", "q4_0"), ("deco4", "deco2"), ("deco2", "f16"), ("had4", "had2"),
           ("q4_0", "deco4")]


@pytest.mark.parametrize("kv_k,kv_v", FORMATS)
@pytest.mark.parametrize("kv_window", [0, 24])
def test_twin_equals_cpu_every_format(kv_k, kv_v, kv_window, hd64_path):
    # 300 positions: sink, whole 256-position blocks, pending ring rows; batches of 64.
    kw = dict(n_ctx=320, n_threads=2, n_batch=64, kv_k=kv_k, kv_v=kv_v, kv_window=kv_window)
    ref = core.Model(hd64_path, **kw)
    m = core.Model(hd64_path, n_gpu_layers=-1, **kw, **TWIN)
    assert m.offload_info["kv_bytes"] >= ref.kv_info()["bytes_allocated"] // 2 > 0
    toks = tokens(300, ref.n_vocab, seed=1)
    assert_same(run_script(m, toks), run_script(ref, toks), f"{kv_k}/{kv_v} window {kv_window}")


@pytest.mark.parametrize("kv", ["cq4", "cq2", "cq1"])
def test_twin_equals_cpu_cq(kv, hd64_path, codebook_path):
    kw = dict(n_ctx=128, n_threads=2, n_batch=32, kv_k=kv, kv_v=kv, kv_codebook=codebook_path)
    ref = core.Model(hd64_path, **kw)
    m = core.Model(hd64_path, n_gpu_layers=1, **kw, **TWIN)
    toks = tokens(100, ref.n_vocab, seed=2)
    assert_same(run_script(m, toks), run_script(ref, toks), kv)


@pytest.mark.parametrize("kv", ["deco2", "q4_0"])
def test_twin_truncate_and_read_kv(kv, hd64_path):
    """Truncating into the fp16 window refills its ring from the blocks (the offload's refill_ring);
    read_kv of an offloaded layer reads the backend's bytes."""
    kw = dict(n_ctx=640, n_threads=2, n_batch=64, kv_k=kv, kv_v=kv, kv_window=40)
    ref = core.Model(hd64_path, **kw)
    m = core.Model(hd64_path, n_gpu_layers=1, **kw, **TWIN)
    toks = tokens(600, ref.n_vocab, seed=3)
    for model in (ref, m):
        model.eval(toks[:560], "none")
    for layer in range(ref.n_layer):
        for kind in ("k", "v"):
            assert np.array_equal(m.read_kv(layer, kind, 1, 0, 560), ref.read_kv(layer, kind, 1, 0, 560))
    kept = [model.truncate(530) for model in (ref, m)]
    assert kept[0] == kept[1]
    n = kept[0]
    a = ref.eval(toks[n:600], "all")
    b = m.eval(toks[n:600], "all")
    assert np.array_equal(a, b)
    assert np.array_equal(m.read_kv(1, "k", 0, 500, 100), ref.read_kv(1, "k", 0, 500, 100))


class _TwinCore:
    """decollama's core as a CUDA build with a GPU whose offload is the host twin: what Llama does
    with n_gpu_layers, checked on any machine."""

    def __getattr__(self, name):
        return getattr(core, name)

    @staticmethod
    def system_info():
        return dict(core.system_info(), cuda_compiled=True, gpus=[{"name": "twin"}])

    @staticmethod
    def Model(*args, **kwargs):
        return core.Model(*args, **kwargs, **TWIN)


def test_llama_passes_n_gpu_layers(hd64_path, monkeypatch, capsys):
    import decollama.llama as llama_module

    want = Llama(hd64_path, n_ctx=64, n_threads=1).generate("The capital of France is", max_tokens=8,
                                                            temperature=0)
    monkeypatch.setattr(llama_module, "_core", _TwinCore())
    llm = Llama(hd64_path, n_ctx=64, n_threads=1, n_gpu_layers=-1, verbose=True)
    assert "offloaded layers 0-1 and the output head to host twin" in capsys.readouterr().err
    assert llm._model.offload_info["n_layers"] == 2
    assert llm.generate("The capital of France is", max_tokens=8, temperature=0) == want
    assert Llama(hd64_path, n_ctx=64, n_threads=1, n_gpu_layers=1)._model.offload_info["first_layer"] == 1


# ---------------------------------------------------------------------------------------- errors


@pytest.mark.skipif(gpu_available(), reason="checks the messages of a machine without a usable GPU")
def test_no_gpu_errors(hd64_path):
    info = core.system_info()
    want = "no CUDA backend" if not info["cuda_compiled"] else "no usable GPU"
    for ngl in (1, -1):
        with pytest.raises(ValueError, match=f"n_gpu_layers={ngl}: .*{want}.*n_gpu_layers=0"):
            Llama(hd64_path, n_ctx=32, n_threads=1, n_gpu_layers=ngl)
        with pytest.raises(ValueError, match=f"n_gpu_layers={ngl}: .*{want}"):
            core.Model(hd64_path, n_ctx=32, n_threads=1, n_gpu_layers=ngl)
    Llama(hd64_path, n_ctx=32, n_threads=1, n_gpu_layers=0)  # the CPU is always there


def test_bad_values(hd64_path):
    with pytest.raises(ValueError, match="n_gpu_layers must be >= -1"):
        Llama(hd64_path, n_ctx=32, n_threads=1, n_gpu_layers=-2)
    with pytest.raises(ValueError, match="n_gpu_layers"):
        Llama(hd64_path, n_ctx=32, n_threads=1, n_gpu_layers="all")
    with pytest.raises(ValueError, match="n_gpu_layers must be >= -1"):
        core.Model(hd64_path, n_ctx=32, n_gpu_layers=-5, **TWIN)
    with pytest.raises(ValueError, match="offload_backend must be 'cuda' or 'host-twin'"):
        core.Model(hd64_path, n_ctx=32, n_gpu_layers=1, offload_backend="metal")


def test_what_the_gpu_kernels_do_not_take(tmp_path_factory, hd64_path):
    small_heads = str(tiny_models.tiny_gguf("llama", "f32", tmp_path_factory))  # head size 16
    with pytest.raises(ValueError, match=r"n_gpu_layers=1: offload of layers 1-1: .*head sizes that are multiples "
                                         r"of 32.*this model has 16; use n_gpu_layers=0"):
        core.Model(small_heads, n_ctx=32, n_gpu_layers=1, **TWIN)
    with pytest.raises(ValueError, match="query-energy tracking"):
        core.Model(hd64_path, n_ctx=32, n_gpu_layers=1, track_query_energy=True, **TWIN)
    assert core.Model(hd64_path, n_ctx=32, n_gpu_layers=0).offload_info is None


def test_tools_take_ngl(hd64_path, capsys):
    from decollama.tools import bench, perplexity

    with pytest.raises(SystemExit):
        bench.parse_args(["-m", hd64_path, "-ngl", "-3"])
    assert "expected an integer >= -1" in capsys.readouterr().err
    assert bench.parse_args(["-m", hd64_path, "-ngl", "-1"]).n_gpu_layers == -1
    assert bench.parse_args(["-m", hd64_path, "--n-gpu-layers", "7"]).n_gpu_layers == 7
    if not gpu_available():
        with pytest.raises(SystemExit) as e:
            perplexity.main(["-m", hd64_path, "-f", str(tiny_models.WIKITEXT), "-c", "64", "--chunks", "1",
                             "-ngl", "1", "--no-progress"])
        assert e.value.code == 2 and "n_gpu_layers=1: no" in capsys.readouterr().err
        with pytest.raises(SystemExit) as e:
            bench.main(["-m", hd64_path, "--gpu-attention", "--depths", "256"])
        assert e.value.code == 2 and "--gpu-attention: " in capsys.readouterr().err
