"""Loads the compiled core. DECOLLAMA_CORE=/path/to/_core*.so points at a development build
(cmake -B build/dev && cmake --build build/dev) instead of the installed one."""
import importlib.util
import os
import sys


def _load():
    path = os.environ.get("DECOLLAMA_CORE")
    if path:
        spec = importlib.util.spec_from_file_location("decollama._core", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"DECOLLAMA_CORE={path}: not a loadable extension module")
        mod = importlib.util.module_from_spec(spec)
        sys.modules["decollama._core"] = mod
        spec.loader.exec_module(mod)
        return mod
    from . import _core

    return _core


core = _load()
