"""GGUF files: metadata, tensor infos and dequantization, all parsed and computed in C++."""
from ._native import core as _core

GGUFError = _core.GGUFError
