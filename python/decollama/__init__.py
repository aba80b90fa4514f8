"""decollama: a llama.cpp-style LLM inference runtime with low-bit KV-cache block formats."""
from ._native import core as _core
from .gguf_file import GGUFError, GGUFFile, TensorInfo
from .llama import Llama

# A constant of the core: importing reads neither DECOLLAMA_CPU nor the GPUs. (A core built before
# it existed still answers through system_info().)
__version__ = getattr(_core, "__version__", None) or _core.system_info()["version"]


def system_info() -> dict:
    """Version, compiler, CPU features, the CPU kernel path in use (DECOLLAMA_CPU=scalar|avx2|avx512
    forces one; an unknown or unsupported value raises ValueError), whether CUDA was compiled in
    and the GPUs seen."""
    return _core.system_info()


__all__ = ["GGUFFile", "GGUFError", "Llama", "TensorInfo", "system_info", "__version__"]
