"""decollama.system_info(): its keys and values, and DECOLLAMA_CPU=scalar|avx2|avx512 forcing the
kernel path. The variable is read in a fresh interpreter each time (subprocess), as a user sets it."""
import json
import os
import subprocess
import sys

import pytest

import decollama

PATHS = ["scalar", "avx2", "avx512"]
KNOWN_FEATURES = {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512vnni"}


def run_python(code: str, cpu: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ)  # keeps DECOLLAMA_CORE / PYTHONPATH of a development run
    env.pop("DECOLLAMA_CPU", None)
    if cpu is not None:
        env["DECOLLAMA_CPU"] = cpu
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def info_with(cpu: str | None) -> dict:
    r = run_python("import json, decollama; print(json.dumps(decollama.system_info()))", cpu)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def error_with(cpu: str) -> str:
    """system_info() under DECOLLAMA_CPU=cpu raises ValueError; its message. Importing still works."""
    code = ("import decollama\n"
            "try:\n    decollama.system_info()\nexcept ValueError as e:\n    print('ValueError:', e)\n"
            "else:\n    print('no error')")
    r = run_python(code, cpu)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_keys_and_values():
    info = decollama.system_info()
    assert set(info) == {"version", "compiler", "cpu_features", "cpu_path", "best_cpu_path", "physical_cores",
                         "cuda_compiled", "gpus", "gpu_unavailable_reason"}
    assert info["version"] == decollama.__version__ and info["version"]
    assert isinstance(info["compiler"], str) and info["compiler"].strip()
    assert set(info["cpu_features"]) <= KNOWN_FEATURES
    assert info["best_cpu_path"] in PATHS
    assert info["cpu_path"] in PATHS
    assert PATHS.index(info["cpu_path"]) <= PATHS.index(info["best_cpu_path"])
    assert isinstance(info["physical_cores"], int) and 1 <= info["physical_cores"] <= (os.cpu_count() or 1)
    assert isinstance(info["cuda_compiled"], bool)
    assert isinstance(info["gpus"], list)
    for g in info["gpus"]:
        assert set(g) == {"name", "compute_capability", "total_memory"}
        assert g["total_memory"] > 0 and "." in g["compute_capability"]


def test_best_path_follows_the_cpu_features():
    info = decollama.system_info()
    f = set(info["cpu_features"])
    avx2 = {"avx2", "fma", "f16c"} <= f
    avx512 = avx2 and {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= f
    assert info["best_cpu_path"] == ("avx512" if avx512 else "avx2" if avx2 else "scalar")


def test_gpu_report_is_consistent_with_the_build():
    info = decollama.system_info()
    if not info["cuda_compiled"]:
        assert info["gpus"] == [] and info["gpu_unavailable_reason"] == ""
    elif info["gpus"]:
        assert info["gpu_unavailable_reason"] == ""
    else:  # a CUDA build on a machine without a usable GPU says why
        assert info["gpu_unavailable_reason"]


def test_unset_or_empty_means_the_best_path():
    for value in (None, ""):
        info = info_with(value)
        assert info["cpu_path"] == info["best_cpu_path"]


@pytest.mark.parametrize("path", PATHS)
def test_decollama_cpu_forces_each_path(path):
    best = decollama.system_info()["best_cpu_path"]
    if PATHS.index(path) <= PATHS.index(best):
        info = info_with(path)
        assert info["cpu_path"] == path and info["best_cpu_path"] == best
    else:  # a path this CPU cannot run is an error, not a silent fallback
        message = error_with(path)
        assert message.startswith("ValueError:"), message
        assert f"DECOLLAMA_CPU={path}" in message and "does not support" in message


@pytest.mark.parametrize("value", ["bogus", "AVX2", "sse4"])
def test_invalid_value_is_a_clear_error(value):
    message = error_with(value)
    assert message.startswith("ValueError:"), message
    assert f"DECOLLAMA_CPU={value}" in message
    assert "valid: scalar, avx2, avx512" in message
