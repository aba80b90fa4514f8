"""Gemm tiles (the gemm_tile slot of the traits table): every SIMD tile kernel against its
scalar reference (one vec_dot per entry) and against float64 numpy, on tile shapes from 1 x 1
to 4 x 4 with partial edges; matmul built from the same tiles agrees with them bit for bit."""
import numpy as np
import pytest

from decollama._native import core
from test_weight_types import PATHS, WEIGHT_TYPES, random_weight_row, reference_matmul, require_path

N_IN = 512  # a multiple of every block size


def tile_paths(name: str) -> list:
    return {r["name"]: r["gemm_tile_paths"] for r in core.weight_types()}[name]


def problem(name: str, n_out: int, n_tokens: int, seed: int):
    rng = np.random.default_rng(seed)
    w = random_weight_row(rng, name, n_out * N_IN)
    x = rng.standard_normal((n_tokens, N_IN)).astype(np.float32)
    return w, x


def test_every_computable_type_has_a_scalar_reference_tile():
    for r in core.weight_types():
        if r["has_kernels"]:
            assert "scalar" in r["gemm_tile_paths"], r["name"]
        else:
            assert r["gemm_tile_paths"] == [], r["name"]


def test_the_model_types_have_simd_tiles():
    for name in ["f32", "f16", "q4_0", "q5_0", "q8_0", "q4_K", "q6_K"]:
        assert {"avx2", "avx512"} <= set(tile_paths(name)), name


@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_scalar_tile_is_one_vec_dot_per_entry(name):
    w, x = problem(name, 6, 5, 1)
    y = core.gemm_tile(name, w, 6, N_IN, x, "scalar")
    rows = w.reshape(6, -1)
    expected = np.array([[core.vec_dot(name, rows[o], x[t], "scalar") for o in range(6)] for t in range(5)],
                        dtype=np.float32)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("shape", [(1, 1), (4, 1), (3, 2), (4, 4), (9, 7), (16, 5)])
@pytest.mark.parametrize("path", [p for p in PATHS if p != "scalar"])
@pytest.mark.parametrize("name", WEIGHT_TYPES)
def test_simd_tile_matches_scalar_reference_and_numpy(name, path, shape):
    require_path(path)
    if path not in tile_paths(name):
        pytest.skip(f"{name} has no {path} tile")
    n_out, n_tokens = shape
    w, x = problem(name, n_out, n_tokens, 7 + n_out * 10 + n_tokens)
    y = core.gemm_tile(name, w, n_out, N_IN, x, path)
    ref = core.gemm_tile(name, w, n_out, N_IN, x, "scalar")
    expected, magnitude = reference_matmul(w, name, x)
    # Integer block sums are exact in both: only float summation order may differ.
    assert np.all(np.abs(y - ref) <= 1e-6 * magnitude + 1e-30), np.max(np.abs(y - ref) / magnitude)
    assert np.all(np.abs(y - expected) <= 1e-3 * np.abs(expected) + 1e-5 * magnitude)


@pytest.mark.parametrize("name", ["q8_0", "q5_0", "q4_0"])
def test_block_tiles_exact_on_extreme_codes(name):
    """Largest-magnitude activations and weights: the VNNI/maddubs offsets must not saturate."""
    n_out, n_tokens = 4, 4
    x = np.full((n_tokens, N_IN), 1.0, np.float32)
    x[1] = -1.0
    x[2, ::2] = -1.0
    x[3] = np.linspace(-1, 1, N_IN, dtype=np.float32)
    w_float = np.where(np.arange(n_out * N_IN) % 3 == 0, -1.0, 1.0).astype(np.float32)
    w = core.quantize_row(name, w_float)
    ref = core.gemm_tile(name, w, n_out, N_IN, x, "scalar")
    for path in ["avx2", "avx512"]:
        if path in tile_paths(name) and core.system_info()["best_cpu_path"] in (path, "avx512"):
            y = core.gemm_tile(name, w, n_out, N_IN, x, path)
            np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("path", [p for p in PATHS if p != "scalar"])
@pytest.mark.parametrize("name", ["f32", "f16", "q4_0", "q5_0", "q8_0", "q4_K", "q6_K"])
def test_matmul_is_built_from_the_tiles(name, path):
    """matmul's tiles start at multiples of 4 rows and tokens, as gemm_tile's: equal bit for bit,
    whatever the thread count."""
    require_path(path)
    n_out, n_tokens = 37, 11
    w, x = problem(name, n_out, n_tokens, 3)
    y_tiles = core.gemm_tile(name, w, n_out, N_IN, x, path)
    for threads in (1, 3):
        np.testing.assert_array_equal(core.matmul(name, w, n_out, N_IN, x, path, threads), y_tiles)


@pytest.mark.parametrize("path", [p for p in PATHS if p != "scalar"])
@pytest.mark.parametrize("name", ["f32", "f16", "q4_0", "q5_0", "q8_0", "q4_K", "q6_K"])
def test_entries_do_not_depend_on_the_tile_shape(name, path):
    """One token at a time (decode) gives the same bits as a batch (prefill): a model's logits
    must not change with how its tokens were batched."""
    require_path(path)
    n_out, n_tokens = 13, 6
    w, x = problem(name, n_out, n_tokens, 5)
    batch = core.matmul(name, w, n_out, N_IN, x, path, 2)
    one_by_one = np.concatenate([core.matmul(name, w, n_out, N_IN, x[t:t + 1], path, 2) for t in range(n_tokens)])
    np.testing.assert_array_equal(batch, one_by_one)
    rows = w.reshape(n_out, -1)
    single_rows = np.concatenate([core.gemm_tile(name, rows[o], 1, N_IN, x, path) for o in range(n_out)], axis=1)
    np.testing.assert_array_equal(batch, single_rows)
