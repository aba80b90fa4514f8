"""Marks for tests that launch CUDA kernels: they run only where this build has the CUDA
backend and the machine a usable GPU, and skip cleanly everywhere else (CI has no GPU)."""
import pytest

import decollama


def gpu_available() -> bool:
    info = decollama.system_info()
    return bool(info["cuda_compiled"] and info["gpus"])


def _skip_reason() -> str:
    info = decollama.system_info()
    if not info["cuda_compiled"]:
        return "built without the CUDA backend"
    return "no usable GPU: " + (info.get("gpu_unavailable_reason") or "none found")


class _Marks(list):
    """Marks usable both ways: `pytestmark = needs_gpu` (a list) and `@needs_gpu` on one test."""

    def __call__(self, fn):
        for mark in self:
            fn = mark(fn)
        return fn


needs_gpu = _Marks([pytest.mark.cuda, pytest.mark.skipif(not gpu_available(), reason=_skip_reason())])
