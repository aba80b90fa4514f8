"""decollama-kv-report on a tiny converted model: one table row per format with the f16 reference
first, KL divergence 0 for f16 and > 0 for q4_0, the plot written when matplotlib is there, the
llama.cpp section when llama-cpp-python is; and the format-list parsing."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tiny_models import WIKITEXT, tiny_gguf

import decollama
from decollama.tools import _cli, kv_report, perplexity

CTX = 32
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def run_tool(name: str, *args, check: bool = True) -> subprocess.CompletedProcess:
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
    data = WIKITEXT.read_bytes()[:6000] if WIKITEXT.is_file() else b"The quick brown fox jumps over the lazy dog.\n" * 120
    path = tmp_path_factory.mktemp("text") / "text.raw"
    path.write_bytes(data[:data.rfind(b"\n") + 1])
    return path


def table_rows(markdown: str, header_start: str) -> tuple:
    lines = markdown.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| " + header_start))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))))
    return header, rows


def test_kv_report(tiny, text_file, tmp_path):
    md, png, js, base = tmp_path / "report.md", tmp_path / "report.png", tmp_path / "report.json", tmp_path / "f16.npz"
    plot = ["--plot", png] if HAVE_MATPLOTLIB else []
    proc = run_tool("kv_report", "-m", tiny, "-f", text_file, "--formats", "f16,q8_0,q4_0,k:q8_0,v:q4_0",
                    "--ctx", CTX, "--chunks", 3, "--threads", 2, "-o", md, "--json", js, "--save-base", base,
                    "--llama-cpp", "--no-progress", *plot)
    text = md.read_text(encoding="utf-8")
    assert text in proc.stdout
    header, rows = table_rows(text, "format")
    assert header == ["format", "K bits", "V bits", "bits/element", "PPL", "ΔPPL %", "mean KLD",
                      "top-1 agreement", "seconds"]
    assert [r["format"] for r in rows] == ["f16", "q8_0", "q4_0", "k:q8_0,v:q4_0"]
    by = {r["format"]: r for r in rows}
    assert (by["k:q8_0,v:q4_0"]["K bits"], by["k:q8_0,v:q4_0"]["V bits"]) == ("8.50", "4.50")
    assert [by[f]["bits/element"] for f in ("f16", "q8_0", "q4_0", "k:q8_0,v:q4_0")] == \
        ["16.000", "8.500", "4.500", "6.500"]
    assert by["f16"]["mean KLD"].startswith("0.000000") and by["f16"]["top-1 agreement"] == "100.00 %"

    got = json.loads(js.read_text())
    kld = {r["format"]: r["kld_mean"] for r in got["rows"]}
    assert kld["f16"] == 0 and kld["q4_0"] > 0 and kld["q8_0"] >= 0
    assert got["positions"] == 3 * (CTX // 2 - 1)
    # The saved base is a --kld-base file: perplexity --kld on q4_0 gives the report's figure.
    out = json.loads(run_tool("perplexity", "-m", tiny, "-f", text_file, "--kv", "q4_0", "--kld", base,
                              "--threads", 2, "--json", "--no-progress").stdout)
    assert out["chunks"] == 3 and out["kld"]["kld_mean"] == pytest.approx(kld["q4_0"], rel=1e-9)

    if HAVE_MATPLOTLIB:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if importlib.util.find_spec("llama_cpp") is not None:
        assert "## llama.cpp" in text
        _, llama_rows = table_rows(text.split("## llama.cpp", 1)[1], "format")
        assert [r["format"] for r in llama_rows] == ["f16", "q8_0", "q4_0"]
        assert "llama.cpp f16 against decollama f16" in text
    else:
        assert "--llama-cpp skipped" in proc.stderr


def test_kv_report_errors(tiny, text_file, tmp_path):
    proc = run_tool("kv_report", "-m", tiny, "-f", text_file, "--formats", "q8_0,q3_bogus", "--ctx", CTX,
                    check=False)
    assert proc.returncode == 2 and "q3_bogus" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_tool("kv_report", "-m", tiny, "-f", text_file, "--ctx", CTX, "-o", tmp_path / "no" / "r.md",
                    check=False)
    assert proc.returncode == 2 and "no such directory" in proc.stderr


def test_split_kv_list():
    assert perplexity.split_kv_list("f16, q8_0,k:deco4,v:deco2,auto:3,q8_0/q4_0") == \
        ["f16", "q8_0", "k:deco4,v:deco2", "auto:3", "q8_0/q4_0"]
    assert perplexity.split_kv_list("v:q4_0,k:q8_0,k:q4_0;v:f16,q8_0,q8_0") == \
        ["v:q4_0,k:q8_0", "k:q4_0", "v:f16", "q8_0"]
    assert perplexity.parse_kv_spec("k:deco4,v:deco2") == ("deco4", "deco2", None)
    assert perplexity.parse_kv_spec("v:q4_0") == ("f16", "q4_0", None)
    assert perplexity.parse_kv_spec("auto:2.5") == (None, None, "auto:2.5")
    for bad in ("auto:x", "k:", "k:a,k:b", "q8_0/"):
        with pytest.raises(_cli.UsageError):
            perplexity.parse_kv_spec(bad)
    with pytest.raises(_cli.UsageError):
        perplexity.kv_config("auto:3", kv_k="q8_0")


def test_core_kwargs_only_when_given():
    class FakeModel:
        def __init__(self):
            pass
    FakeModel.__init__.__doc__ = "__init__(self, path: str, n_ctx: int = 4096, kv_k: str = 'f16', kv_v: str = 'f16')"

    class OldCore:
        Model = FakeModel

    assert perplexity.core_model_kwargs(OldCore, perplexity.KVConfig("q8_0", "q4_0")) == {"kv_k": "q8_0", "kv_v": "q4_0"}
    with pytest.raises(_cli.UsageError, match="--kv-window is not supported yet"):
        perplexity.core_model_kwargs(OldCore, perplexity.KVConfig(window=16))

    class NewModel:
        def __init__(self):
            pass
    NewModel.__init__.__doc__ = ("__init__(self, path: str, n_ctx: int = 4096, kv_k: str = 'f16', kv_v: str = 'f16', "
                                 "kv: str = '', kv_window: int = 0, kv_codebook: str = '')")

    class NewCore:
        Model = NewModel

    assert perplexity.core_model_kwargs(NewCore, perplexity.KVConfig(None, None, "auto:3", 16, "cb.gguf")) == \
        {"kv": "auto:3", "kv_window": 16, "kv_codebook": "cb.gguf"}
    assert perplexity.core_model_kwargs(NewCore, perplexity.KVConfig(window=0)) == \
        {"kv_k": "f16", "kv_v": "f16", "kv_window": 0}


def test_plot_needs_matplotlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(_cli.UsageError, match="--plot needs matplotlib"):
        kv_report.need_matplotlib()
