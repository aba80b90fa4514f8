#!/usr/bin/env python3
"""Run the HF -> GGUF converter from a source checkout: python tools/convert_hf_to_gguf.py HF_DIR -o OUT.gguf

Loads python/decollama/tools/convert_hf_to_gguf.py by path rather than importing the decollama
package, whose __init__ needs the compiled core; the converter itself is pure Python."""
import importlib.util
import pathlib
import sys

_SRC = pathlib.Path(__file__).resolve().parent.parent / "python" / "decollama" / "tools" / "convert_hf_to_gguf.py"
sys.path.insert(0, str(_SRC.parents[2]))  # ../python, for anything the converter may import lazily

_spec = importlib.util.spec_from_file_location("decollama_convert_hf_to_gguf", _SRC)
_mod = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _mod  # dataclasses look their module up there
_spec.loader.exec_module(_mod)

if __name__ == "__main__":
    _mod.main()
