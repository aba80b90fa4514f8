"""matmul: every weight type x CPU path against float64 numpy references (random matrices and
real Gemma tensors), element-exact agreement with the path's vec_dot, thread-count
independence, and argument validation."""
import numpy as np
import pytest

from decollama._native import core
from decollama.gguf_file import GGUFFile
from test_weight_types import (
    PATHS, WEIGHT_TYPES, path_supported, random_weight_row, reference_matmul, require_path)

N_IN = 512  # a multiple of every block size (256 for the K-quants)


def random_problem(rng: np.random.Generator, name: str, n_out: int, n_tokens: int, n_in: int = N_IN):
    w = random_weight_row(rng, name, n_out * n_in)  # n_out rows, back to back
    x = rng.standard_normal((n_tokens, n_in)).astype(np.float32)
    return w, x


def assert_close_to_reference(y: np.ndarray, w: np.ndarray, name: str, x: np.ndarray) -> None:
    expected, magnitude = reference_matmul(w, name, x)
    assert y.shape == expected.shape and y.dtype == np.float32
    err = np.abs(y - expected)
    bound = 1e-3 * np.abs(expected) + 1e-5 * magnitude
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (worst, y[worst], expected[worst])


def best_path() -> str:
    return core.system_info()["best_cpu_path"]


@pytest.mark.parametrize("n_tokens", [1, 3, 17])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_matmul_matches_numpy(name, path, n_tokens):
    require_path(path)
    rng = np.random.default_rng(10 + n_tokens)
    n_out = 37  # odd: a partial row tile
    w, x = random_problem(rng, name, n_out, n_tokens)
    y = core.matmul(name, w, n_out, N_IN, x, path, 2)
    assert_close_to_reference(y, w, name, x)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_matmul_equals_vec_dot_of_the_same_path(name, path):
    """Tiling and threading only choose which kernel runs where: every entry equals the single
    dot of that row and token (the SIMD activation quantizers match the scalar ones) up to the
    float summation order of a gemm tile, and exactly where the path has no tile kernel or is
    the scalar one (whose tile is one vec_dot per entry)."""
    require_path(path)
    rng = np.random.default_rng(20)
    n_out, n_tokens = 19, 5
    w, x = random_problem(rng, name, n_out, n_tokens)
    y = core.matmul(name, w, n_out, N_IN, x, path, 3)
    rows = w.reshape(n_out, -1)
    expected = np.array([[core.vec_dot(name, rows[o], x[t], path) for o in range(n_out)]
                         for t in range(n_tokens)], dtype=np.float32)
    tiles = {r["name"]: r["gemm_tile_paths"] for r in core.weight_types()}[name]
    if path == "scalar" or path not in tiles:
        np.testing.assert_array_equal(y, expected)
    else:
        _, magnitude = reference_matmul(w, name, x)
        np.testing.assert_array_less(np.abs(y - expected), 1e-6 * magnitude + 1e-30)


@pytest.mark.parametrize("name", ["q4_K", "q8_0", "f16"])
def test_many_tokens_span_several_token_blocks_and_threads(name):
    """130 tokens: several token blocks, parallel activation conversion; any thread count
    gives the same bits."""
    rng = np.random.default_rng(30)
    n_out, n_tokens = 101, 130
    w, x = random_problem(rng, name, n_out, n_tokens)
    path = best_path()
    y1 = core.matmul(name, w, n_out, N_IN, x, path, 1)
    assert_close_to_reference(y1, w, name, x)
    for n_threads in (2, 3, 0):
        np.testing.assert_array_equal(core.matmul(name, w, n_out, N_IN, x, path, n_threads), y1)


def test_empty_shapes():
    w, x = random_problem(np.random.default_rng(40), "q8_0", 4, 2)
    assert core.matmul("q8_0", w, 4, N_IN, x[:0], "scalar", 1).shape == (0, 4)
    assert core.matmul("q8_0", w[:0], 0, N_IN, x, "scalar", 1).shape == (2, 0)


def test_bad_arguments_raise_value_error():
    w, x = random_problem(np.random.default_rng(41), "q4_0", 4, 2)
    with pytest.raises(ValueError, match="expected n_out"):
        core.matmul("q4_0", w, 5, N_IN, x, "scalar", 1)
    with pytest.raises(ValueError, match="expected n_out"):
        core.matmul("q4_0", w[:-1], 4, N_IN, x, "scalar", 1)
    with pytest.raises(ValueError, match="columns"):
        core.matmul("q4_0", w, 4, N_IN, x[:, :256], "scalar", 1)
    with pytest.raises(ValueError, match="multiple of the block size"):
        core.matmul("q4_0", w, 4, N_IN + 1, x, "scalar", 1)
    with pytest.raises(ValueError, match="n_threads"):
        core.matmul("q4_0", w, 4, N_IN, x, "scalar", -1)
    with pytest.raises(ValueError, match="unknown CPU kernel path"):
        core.matmul("q4_0", w, 4, N_IN, x, "neon", 1)
    with pytest.raises(ValueError, match="no dot product kernels"):
        core.matmul("q2_K", np.zeros(84 * 2 * 4, dtype=np.uint8), 4, N_IN, x, "scalar", 1)
    if not path_supported("avx512"):
        with pytest.raises(ValueError, match="does not support"):
            core.matmul("q4_0", w, 4, N_IN, x, "avx512", 1)


# ---- real Gemma 3 tensors ------------------------------------------------------------------


def gemma_matrices(path: str) -> dict:
    """One tensor of each weight type the model holds: name -> (type name, bytes, n_out, n_in);
    only the first 1024 rows of the 262144-row token embedding.

    The bytes come from decollama's GGUF reader (tested against gguf-py on its own):
    gguf.GGUFReader spends tens of seconds on this file's 262k-entry vocabulary. The reference
    is still gguf-py's dequantization of those bytes."""
    picked = {}
    with GGUFFile(path) as f:
        for name, info in f.tensors.items():
            if len(info.shape) != 2 or info.type in {p[0] for p in picked.values()}:
                continue
            (rows, n_in), n_out = info.shape, min(info.shape[0], 1024)
            data = f.raw(name)
            picked[name] = (info.type, np.array(data[:n_out * (data.size // rows)]), n_out, n_in)
    return picked


def test_matmul_on_real_gemma_tensors(gemma_path):
    matrices = gemma_matrices(gemma_path)
    assert {"q4_K", "q6_K", "q5_0", "q8_0"} <= {m[0] for m in matrices.values()}
    rng = np.random.default_rng(50)
    for tensor_name, (type_name, w, n_out, n_in) in matrices.items():
        x = rng.standard_normal((3, n_in)).astype(np.float32)
        for path in dict.fromkeys(["scalar", best_path()]):
            y = core.matmul(type_name, w, n_out, n_in, x, path, 0)
            assert_close_to_reference(y, w, type_name, x)
