#!/usr/bin/env python3
"""Run decollama-kv-report from a source checkout: python tools/kv_report.py --help
(DECOLLAMA_CORE=build/.../_core*.so points it at a development build of the extension)."""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "python"))

from decollama.tools.kv_report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
