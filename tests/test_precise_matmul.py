"""matmul with precise=True (ActivationPrecision::Fp32): quantized weights are dequantized a row
tile at a time and dotted with the fp32 activations by the f32 kernels, so the result is the
float64 product of the dequantized weights and the unquantized activations up to fp32
summation error; weights already dotted in fp32 (f32, f16, bf16) are unaffected."""
import numpy as np
import pytest

from decollama._native import core
from test_weight_types import (
    ACTIVATION_TYPE, PATHS, WEIGHT_TYPES, gguf_dequantize, random_weight_row, require_path)

N_IN = 512  # a multiple of every block size
QUANTIZED = [name for name in WEIGHT_TYPES if ACTIVATION_TYPE[name] != "f32"]
FLOAT_WEIGHTS = [name for name in WEIGHT_TYPES if ACTIVATION_TYPE[name] == "f32"]
REL_TOL = 1e-5


def problem(seed: int, name: str, n_out: int, n_tokens: int):
    rng = np.random.default_rng(seed)
    w = random_weight_row(rng, name, n_out * N_IN)
    x = rng.standard_normal((n_tokens, N_IN)).astype(np.float32)
    return w, x


def assert_fp32_product(y: np.ndarray, w: np.ndarray, name: str, x: np.ndarray) -> None:
    """|y - W·x| <= REL_TOL * sum |w_i x_i| per entry: relative to the dot's own scale, since
    a plain relative error is meaningless where the products cancel."""
    w64 = gguf_dequantize(w, name).astype(np.float64).reshape(-1, N_IN)
    x64 = x.astype(np.float64)
    expected, magnitude = x64 @ w64.T, np.abs(x64) @ np.abs(w64).T
    assert y.shape == expected.shape and y.dtype == np.float32
    rel = np.abs(y - expected) / np.maximum(magnitude, 1e-30)
    assert rel.max() <= REL_TOL, (np.unravel_index(rel.argmax(), rel.shape), rel.max())


@pytest.mark.parametrize("n_tokens", [1, 5, 70])  # 70: more than one token block of 64
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", QUANTIZED)
def test_precise_matmul_is_the_fp32_product_of_the_dequantized_weights(name, path, n_tokens):
    require_path(path)
    n_out = 37  # odd: a partial row tile and a partial gemm tile
    w, x = problem(100 + n_tokens, name, n_out, n_tokens)
    assert_fp32_product(core.matmul(name, w, n_out, N_IN, x, path, 2, precise=True), w, name, x)


@pytest.mark.parametrize("name", QUANTIZED)
def test_precise_is_closer_than_quantized_activations(name):
    """The default path quantizes x to q8_*: measurably further from the fp32 product."""
    n_out, n_tokens = 64, 8
    w, x = problem(200, name, n_out, n_tokens)
    path = core.system_info()["best_cpu_path"]
    w64 = gguf_dequantize(w, name).astype(np.float64).reshape(-1, N_IN)
    expected = x.astype(np.float64) @ w64.T
    err_precise = np.abs(core.matmul(name, w, n_out, N_IN, x, path, 2, precise=True) - expected).max()
    err_quantized = np.abs(core.matmul(name, w, n_out, N_IN, x, path, 2) - expected).max()
    assert err_precise * 10 < err_quantized


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", FLOAT_WEIGHTS)
def test_precise_changes_nothing_for_float_weights(name, path):
    require_path(path)
    n_out, n_tokens = 21, 6
    w, x = problem(300, name, n_out, n_tokens)
    np.testing.assert_array_equal(core.matmul(name, w, n_out, N_IN, x, path, 2, precise=True),
                                  core.matmul(name, w, n_out, N_IN, x, path, 2))


@pytest.mark.parametrize("name", ["q4_K", "q6_K", "q8_0"])
def test_precise_is_independent_of_the_thread_count(name):
    """Each thread dequantizes into its own scratch rows: any thread count gives the same bits."""
    n_out, n_tokens = 101, 130
    w, x = problem(400, name, n_out, n_tokens)
    path = core.system_info()["best_cpu_path"]
    y1 = core.matmul(name, w, n_out, N_IN, x, path, 1, precise=True)
    assert_fp32_product(y1, w, name, x)
    for n_threads in (2, 3, 0):
        np.testing.assert_array_equal(core.matmul(name, w, n_out, N_IN, x, path, n_threads, precise=True), y1)
