"""Row-wise GPU ops of the forward pass (cuda/gpu_ops.h): rms_norm, rope, scale, add, add_bias, glu,
softcap.

Host tests (every build): the kernels' DL_HD math (cuda/gpu_ops_device.h, through the gpu_host_*
hooks) against the CPU ops of cpp/model/ops.cpp and rope.cpp (cpu_* hooks) and against numpy
formulas. GPU tests (class TestOnGpu, skipped without a GPU): each kernel against the CPU op."""
import numpy as np
import pytest

import decollama
from decollama._native import core
from gpu_support import gpu_available, needs_gpu

LAYOUTS = ["normal", "neox"]
ACTIVATIONS = ["silu", "gelu_tanh"]
F32_EPS = float(np.finfo(np.float32).eps)


def rope_tables(n_tokens: int, n_rot: int, pos0: int = 0, base: float = 10000.0):
    """cos/sin (n_tokens, n_rot / 2) as RopeFrequencies builds them (no scaling): double angles,
    rounded once to float."""
    i = np.arange(n_rot // 2, dtype=np.float64)
    inv_freq = base ** (-2.0 * i / n_rot)
    theta = np.arange(pos0, pos0 + n_tokens, dtype=np.float64)[:, None] * inv_freq[None, :]
    return np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)


def rope_pair_indices(n_rot: int, layout: str):
    i = np.arange(n_rot // 2)
    return (2 * i, 2 * i + 1) if layout == "normal" else (i, i + n_rot // 2)


def numpy_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, n_rot: int, layout: str) -> np.ndarray:
    """x (tokens, heads, head_dim) rotated in float64."""
    a, b = rope_pair_indices(n_rot, layout)
    y = x.astype(np.float64)
    c, s = cos.astype(np.float64)[:, None, :], sin.astype(np.float64)[:, None, :]
    x0, x1 = y[..., a].copy(), y[..., b].copy()
    y[..., a] = x0 * c - x1 * s
    y[..., b] = x0 * s + x1 * c
    return y


def numpy_rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    x64 = x.astype(np.float64)
    return x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + eps) * w.astype(np.float64)


def numpy_glu(gate: np.ndarray, up: np.ndarray, act: str) -> np.ndarray:
    g, u = gate.astype(np.float64), up.astype(np.float64)
    with np.errstate(over="ignore"):
        if act == "silu":
            return g / (1.0 + np.exp(-g)) * u
        # 0.5 g (1 + tanh(c)) written as g / (1 + exp(-2c)): the same value, without the float64
        # cancellation of 1 + tanh(c) for very negative c.
        c = np.sqrt(2.0 / np.pi) * (g + 0.044715 * g**3)
        return g / (1.0 + np.exp(-2.0 * c)) * u


def glu_inputs(rng: np.random.Generator, n: int):
    """Random gates plus the edges: zero, tiny, huge of both signs (exp overflowing to inf)."""
    edges = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-3, -1e-3, 5.0, -5.0, 20.0, -20.0, 88.0, -88.0, 89.0, -89.0,
                      100.0, -100.0, 1e4, -1e4, 1e30, -3e38], dtype=np.float32)
    gate = np.concatenate([edges, (rng.standard_normal(n) * 4).astype(np.float32)])
    up = rng.standard_normal(gate.size).astype(np.float32)
    return gate, up


def max_ulps(got: np.ndarray, want: np.ndarray) -> int:
    """Largest distance in float32 units in the last place (sign-magnitude bits made monotonic)."""
    def ordered(a):
        bits = np.ascontiguousarray(a, dtype=np.float32).view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)
    assert got.shape == want.shape
    return int(np.max(np.abs(ordered(got) - ordered(want)), initial=0))


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float, atol: float = 0.0) -> None:
    assert got.shape == want.shape and got.dtype == np.float32
    want64 = want.astype(np.float64)
    err = np.abs(got.astype(np.float64) - want64)
    bound = rtol * np.abs(want64) + atol
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else None
    assert np.all(err <= bound), (worst, got[worst], want[worst])


# ---- host: DL_HD math vs the CPU ops and numpy ----------------------------------------------------

RMS_DIMS = [1, 2, 7, 31, 32, 33, 128, 257, 1000, 4097, 8192, 12288]


@pytest.mark.parametrize("dim", RMS_DIMS)
def test_host_rms_norm_matches_cpu_and_numpy(dim):
    rng = np.random.default_rng(dim)
    x = (rng.standard_normal((5, dim)) * rng.uniform(0.01, 100, (5, 1))).astype(np.float32)
    w = rng.standard_normal(dim).astype(np.float32)
    got = core.gpu_host_rms_norm(x, w, 1e-6)
    # Same serial double sum and the same float roundings as the CPU: identical bits.
    np.testing.assert_array_equal(got, core.cpu_rms_norm(x, w, 1e-6))
    assert_close(got, numpy_rms_norm(x, w, 1e-6).astype(np.float32), rtol=3 * F32_EPS)


def test_host_rms_norm_zero_rows_and_padded_stride():
    rng = np.random.default_rng(1)
    dim, stride = 40, 45
    x = rng.standard_normal((3, stride)).astype(np.float32)
    x[1, :dim] = 0.0  # all zeros: eps keeps it finite, the output is zeros
    w = rng.standard_normal(dim).astype(np.float32)
    got = core.gpu_host_rms_norm(x, w, 1e-5)
    np.testing.assert_array_equal(got, core.cpu_rms_norm(x, w, 1e-5))
    np.testing.assert_array_equal(got[:, dim:], x[:, dim:])  # past dim: untouched
    np.testing.assert_array_equal(got[1, :dim], 0.0)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n_tokens,n_heads,head_dim,n_rot", [
    (1, 1, 2, 2), (3, 5, 64, 64), (7, 3, 128, 128), (4, 2, 128, 64), (5, 3, 80, 32), (2, 4, 96, 0), (6, 1, 10, 6)])
def test_host_rope_matches_cpu_and_numpy(layout, n_tokens, n_heads, head_dim, n_rot):
    rng = np.random.default_rng(n_tokens * 1000 + head_dim + n_rot)
    x = rng.standard_normal((n_tokens, n_heads, head_dim)).astype(np.float32)
    cos, sin = rope_tables(n_tokens, n_rot, pos0=17)
    got = core.gpu_host_rope(x, cos, sin, n_rot, layout)
    np.testing.assert_array_equal(got, core.cpu_rope(x, cos, sin, n_rot, layout))
    np.testing.assert_array_equal(got[..., n_rot:], x[..., n_rot:])  # past n_rot: untouched
    # float products rounded, then one rounding of the difference: within a few eps of the scale.
    want = numpy_rope(x, cos, sin, n_rot, layout)
    assert np.max(np.abs(got - want), initial=0.0) <= 4 * F32_EPS * np.max(np.abs(x))


def test_host_rope_layouts_pair_different_values():
    """A head 0..7 with a quarter turn on pair 0 only: normal swaps x0/x1, NeoX x0/x2 (n_rot 4)."""
    x = np.arange(8, dtype=np.float32).reshape(1, 1, 8)
    cos = np.array([[0.0, 1.0]], dtype=np.float32)
    sin = np.array([[1.0, 0.0]], dtype=np.float32)
    normal = core.gpu_host_rope(x, cos, sin, 4, "normal")[0, 0]
    neox = core.gpu_host_rope(x, cos, sin, 4, "neox")[0, 0]
    np.testing.assert_array_equal(normal, [-1, 0, 2, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(neox, [-2, 1, 0, 3, 4, 5, 6, 7])


def test_host_rope_row_stride_form():
    """(tokens, row_stride) with the heads at the start of each row, as q sits in a fused qkv row."""
    rng = np.random.default_rng(3)
    n_tokens, n_heads, head_dim, n_rot, row_stride = 4, 3, 16, 8, 3 * 16 + 11
    x = rng.standard_normal((n_tokens, row_stride)).astype(np.float32)
    cos, sin = rope_tables(n_tokens, n_rot)
    for layout in LAYOUTS:
        got = core.gpu_host_rope(x, cos, sin, n_rot, layout, n_heads=n_heads, head_dim=head_dim)
        heads = x[:, :n_heads * head_dim].reshape(n_tokens, n_heads, head_dim)
        want = core.cpu_rope(heads, cos, sin, n_rot, layout).reshape(n_tokens, -1)
        np.testing.assert_array_equal(got[:, :n_heads * head_dim], want)
        np.testing.assert_array_equal(got[:, n_heads * head_dim:], x[:, n_heads * head_dim:])


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_host_glu_matches_cpu_and_numpy(act):
    rng = np.random.default_rng(5)
    gate, up = glu_inputs(rng, 10001)
    got = core.gpu_host_glu(gate, up, act)
    # Same formula, same glibc expf on the host: identical bits.
    np.testing.assert_array_equal(got, core.cpu_glu(gate, up, act))
    assert np.all(np.isfinite(got))
    # The float formula against float64 (gelu's exp argument carries |arg| * eps relative error).
    assert_close(got, numpy_glu(gate, up, act).astype(np.float32), rtol=2e-5, atol=1e-30)


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_host_glu_limits(act):
    gate = np.array([-1e4, -3e38, 0.0, 1e4, 3e37], dtype=np.float32)
    up = np.full(gate.size, 2.0, dtype=np.float32)
    got = core.gpu_host_glu(gate, up, act)
    np.testing.assert_array_equal(got[:3], 0.0)  # exp overflows to inf: the limit 0, not NaN
    np.testing.assert_array_equal(got[3:], gate[3:] * 2.0)


@pytest.mark.parametrize("cap", [30.0, 50.0, 1.0, 0.5])
def test_host_softcap_matches_cpu_and_numpy(cap):
    rng = np.random.default_rng(int(cap * 10))
    x = np.concatenate([rng.standard_normal(4099) * cap * 2, [0.0, -0.0, 1e-30, 3e38, -3e38]]).astype(np.float32)
    got = core.gpu_host_softcap(x, cap)
    np.testing.assert_array_equal(got, core.cpu_softcap(x, cap))
    want = (cap * np.tanh(x.astype(np.float64) / cap)).astype(np.float32)
    assert_close(got, want, rtol=4 * F32_EPS, atol=1e-37)
    assert np.all(np.abs(got) <= cap)


def test_host_hooks_reject_bad_arguments():
    x = np.zeros((2, 3, 8), dtype=np.float32)
    cos, sin = rope_tables(2, 8)
    with pytest.raises(ValueError, match="layout"):
        core.gpu_host_rope(x, cos, sin, 8, "gptj")
    with pytest.raises(ValueError, match="n_rot"):
        core.gpu_host_rope(x, *rope_tables(2, 10), 10, "neox")
    with pytest.raises(ValueError, match="cos and sin"):
        core.gpu_host_rope(x, *rope_tables(3, 8), 8, "neox")
    with pytest.raises(ValueError, match="activation"):
        core.gpu_host_glu(np.zeros(4, np.float32), np.zeros(4, np.float32), "relu")
    with pytest.raises(ValueError, match="sizes"):
        core.gpu_host_glu(np.zeros(4, np.float32), np.zeros(5, np.float32), "silu")
    with pytest.raises(ValueError, match="longer"):
        core.gpu_host_rms_norm(np.zeros((2, 4), np.float32), np.ones(5, np.float32), 1e-6)
    # The GPU hooks check their arguments first, in every build.
    with pytest.raises(ValueError, match="layout"):
        core.gpu_rope(x, cos, sin, 8, "gptj")


@pytest.mark.skipif(gpu_available(), reason="a GPU is available")
def test_gpu_hooks_raise_runtime_error_without_gpu():
    """No GPU (or no CUDA in this build): a clear RuntimeError, never a crash."""
    x = np.ones((2, 8), dtype=np.float32)
    cos, sin = rope_tables(2, 8)
    expected = "no usable GPU" if decollama.system_info()["cuda_compiled"] else "built without CUDA"
    calls = [
        lambda: core.gpu_rms_norm(x, np.ones(8, np.float32), 1e-6),
        lambda: core.gpu_rope(x.reshape(2, 1, 8), cos, sin, 8, "neox"),
        lambda: core.gpu_scale(x, 2.0),
        lambda: core.gpu_add(x, x),
        lambda: core.gpu_add_bias(x, np.ones(8, np.float32)),
        lambda: core.gpu_glu(x, x, "silu"),
        lambda: core.gpu_softcap(x, 30.0),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match=expected):
            call()


# ---- GPU: each kernel against the CPU op ----------------------------------------------------------
# The kernels avoid fused multiply-adds where the CPU has a*b + c (gpu_ops_device.h), so rms_norm and
# rope are expected to match bit for bit; the bounds below still allow ~1e-6 relative. glu and
# softcap differ by the device expf / tanhf (2 ulp).


class TestOnGpu:
    pytestmark = needs_gpu

    @pytest.mark.parametrize("n_rows", [1, 5])
    @pytest.mark.parametrize("dim", RMS_DIMS)
    def test_rms_norm(self, dim, n_rows):
        rng = np.random.default_rng(dim + n_rows)
        x = (rng.standard_normal((n_rows, dim)) * rng.uniform(0.01, 100, (n_rows, 1))).astype(np.float32)
        w = rng.standard_normal(dim).astype(np.float32)
        want = core.cpu_rms_norm(x, w, 1e-6)
        assert_close(core.gpu_rms_norm(x, w, 1e-6), want, rtol=1e-6)
        assert_close(core.gpu_rms_norm(x, w, 1e-6, in_place=True), want, rtol=1e-6)

    def test_rms_norm_strides_and_aliasing(self):
        rng = np.random.default_rng(11)
        dim, x_stride, y_stride = 200, 213, 256
        x = rng.standard_normal((9, x_stride)).astype(np.float32)
        w = rng.standard_normal(dim).astype(np.float32)
        want = core.cpu_rms_norm(x, w, 1e-5)
        out = core.gpu_rms_norm(x, w, 1e-5, y_stride=y_stride)
        assert out.shape == (9, y_stride)
        assert_close(out[:, :dim], want[:, :dim], rtol=1e-6)
        np.testing.assert_array_equal(out[:, dim:], 0.0)  # y past dim: untouched (zeros)
        in_place = core.gpu_rms_norm(x, w, 1e-5, in_place=True)
        assert_close(in_place[:, :dim], want[:, :dim], rtol=1e-6)
        np.testing.assert_array_equal(in_place[:, dim:], x[:, dim:])

    def test_rms_norm_many_rows(self):
        """More rows than blocks in the grid (per-head norms of a long prompt): grid-stride rows."""
        rng = np.random.default_rng(12)
        x = rng.standard_normal((70001, 16)).astype(np.float32)
        w = rng.standard_normal(16).astype(np.float32)
        assert_close(core.gpu_rms_norm(x, w, 1e-6), core.cpu_rms_norm(x, w, 1e-6), rtol=1e-6)

    @pytest.mark.parametrize("layout", LAYOUTS)
    @pytest.mark.parametrize("n_tokens,n_heads,head_dim,n_rot", [
        (1, 1, 2, 2), (3, 5, 64, 64), (7, 3, 128, 128), (4, 2, 128, 64), (5, 3, 80, 32), (33, 7, 256, 256),
        (6, 1, 10, 6), (2, 4, 96, 0)])
    def test_rope(self, layout, n_tokens, n_heads, head_dim, n_rot):
        rng = np.random.default_rng(n_tokens + head_dim + n_rot)
        x = rng.standard_normal((n_tokens, n_heads, head_dim)).astype(np.float32)
        cos, sin = rope_tables(n_tokens, n_rot, pos0=1000)
        got = core.gpu_rope(x, cos, sin, n_rot, layout)
        want = core.cpu_rope(x, cos, sin, n_rot, layout)
        assert_close(got, want, rtol=1e-6, atol=1e-6 * float(np.max(np.abs(x))))
        np.testing.assert_array_equal(got[..., n_rot:], x[..., n_rot:])

    @pytest.mark.parametrize("layout", LAYOUTS)
    def test_rope_row_stride(self, layout):
        rng = np.random.default_rng(13)
        n_tokens, n_heads, head_dim, n_rot, row_stride = 9, 4, 64, 32, 4 * 64 + 2 * 2 * 64
        x = rng.standard_normal((n_tokens, row_stride)).astype(np.float32)
        cos, sin = rope_tables(n_tokens, n_rot)
        got = core.gpu_rope(x, cos, sin, n_rot, layout, n_heads=n_heads, head_dim=head_dim)
        want = core.cpu_rope(x, cos, sin, n_rot, layout, n_heads=n_heads, head_dim=head_dim)
        assert_close(got, want, rtol=1e-6, atol=1e-6 * float(np.max(np.abs(x))))
        np.testing.assert_array_equal(got[:, n_heads * head_dim:], x[:, n_heads * head_dim:])

    @pytest.mark.parametrize("act", ACTIVATIONS)
    def test_glu(self, act):
        gate, up = glu_inputs(np.random.default_rng(14), 100003)
        assert_close(core.gpu_glu(gate, up, act), core.cpu_glu(gate, up, act), rtol=1e-6, atol=1e-30)

    @pytest.mark.parametrize("cap", [30.0, 50.0, 0.5])
    def test_softcap(self, cap):
        rng = np.random.default_rng(15)
        x = np.concatenate([rng.standard_normal(50001) * cap * 2, [0.0, 3e38, -3e38]]).astype(np.float32)
        got = core.gpu_softcap(x, cap)
        assert_close(got, core.cpu_softcap(x, cap), rtol=1e-6, atol=1e-37)
        assert np.all(np.abs(got) <= cap)

    @pytest.mark.parametrize("n", [1, 255, 257, 100003, (1 << 24) + 13])
    def test_scale_add(self, n):
        """float32 products and sums round the same everywhere: exact. The largest n needs more
        elements than the grid has threads (grid-stride)."""
        rng = np.random.default_rng(16)
        x = rng.standard_normal(n).astype(np.float32)
        y = rng.standard_normal(n).astype(np.float32)
        np.testing.assert_array_equal(core.gpu_scale(x, 0.125), x * np.float32(0.125))
        np.testing.assert_array_equal(core.gpu_scale(x, 1.7), x * np.float32(1.7))
        np.testing.assert_array_equal(core.gpu_add(x, y), x + y)

    @pytest.mark.parametrize("n_rows,dim", [(1, 1), (3, 7), (17, 896), (5, 4097)])
    def test_add_bias(self, n_rows, dim):
        rng = np.random.default_rng(n_rows * dim)
        x = rng.standard_normal((n_rows, dim)).astype(np.float32)
        b = rng.standard_normal(dim).astype(np.float32)
        np.testing.assert_array_equal(core.gpu_add_bias(x, b), x + b[None, :])

    def test_empty_inputs(self):
        empty = np.zeros(0, dtype=np.float32)
        assert core.gpu_scale(empty, 2.0).size == 0
        assert core.gpu_glu(empty, empty, "silu").size == 0
        assert core.gpu_softcap(empty, 30.0).size == 0
        assert core.gpu_rms_norm(np.zeros((0, 8), np.float32), np.ones(8, np.float32), 1e-6).shape == (0, 8)
        x = np.zeros((0, 2, 8), dtype=np.float32)
        assert core.gpu_rope(x, *rope_tables(0, 8), 8, "neox").shape == (0, 2, 8)
