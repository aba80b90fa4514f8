// Test hooks of the row-wise GPU ops (cuda/gpu_ops.h), three per op:
//   cpu_*       the CPU ops of cpp/model/ops.h and rope.h, the reference;
//   gpu_host_*  the kernels' DL_HD math (cuda/gpu_ops_device.h) run on the CPU, every build;
//   gpu_*       the CUDA kernels; RuntimeError in a build without CUDA or without a usable GPU.
// Layouts are named "normal" / "neox", activations "silu" / "gelu_tanh".
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "common/error.h"
#include "cuda/gpu_ops_device.h"
#include "model/hparams.h"
#include "model/ops.h"
#include "model/rope.h"
#if defined(DECOLLAMA_WITH_CUDA)
#include "cuda/gpu_ops_hooks.h"
#endif

namespace nb = nanobind;

namespace decollama::py {

namespace {

using FloatArray = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using FloatVector = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using FloatMatrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using FloatCube = nb::ndarray<const float, nb::ndim<3>, nb::c_contig, nb::device::cpu>;
using NumpyFloats = nb::ndarray<nb::numpy, float>;

// A float array of a given shape, owned by the numpy array it becomes; starts as a copy of `init`
// (same element count) or zeros.
class OutArray {
public:
    OutArray(std::initializer_list<size_t> shape, const float* init = nullptr) : shape_(shape) {
        size_t n = 1;
        for (size_t d : shape_) n *= d;
        n_ = n;
        data_.reset(new float[std::max<size_t>(n, 1)]());
        if (init != nullptr && n > 0) std::memcpy(data_.get(), init, n * sizeof(float));
    }
    template <class... Constraints>
    explicit OutArray(const nb::ndarray<const float, Constraints...>& like) : n_(like.size()) {
        for (size_t i = 0; i < like.ndim(); ++i) shape_.push_back(size_t(like.shape(i)));
        data_.reset(new float[std::max<size_t>(n_, 1)]);
        if (n_ > 0) std::memcpy(data_.get(), like.data(), n_ * sizeof(float));
    }
    float* data() { return data_.get(); }
    int64_t size() const { return int64_t(n_); }

    NumpyFloats release() {
        nb::capsule owner(data_.get(), [](void* p) noexcept { delete[] static_cast<float*>(p); });
        return NumpyFloats(data_.release(), shape_.size(), shape_.data(), owner);
    }

private:
    std::vector<size_t> shape_;
    size_t n_ = 0;
    std::unique_ptr<float[]> data_;
};

void require(bool ok, const std::string& what) {
    if (!ok) throw InvalidArgument(what);
}

RopeLayout rope_layout_from_name(const std::string& name) {
    if (name == "normal") return RopeLayout::Normal;
    if (name == "neox") return RopeLayout::NeoX;
    throw InvalidArgument("unknown RoPE layout '" + name + "' (normal, neox)");
}

FfnActivation activation_from_name(const std::string& name) {
    if (name == "silu") return FfnActivation::SiLU;
    if (name == "gelu_tanh") return FfnActivation::GeluTanh;
    throw InvalidArgument("unknown activation '" + name + "' (silu, gelu_tanh)");
}

int64_t dim_of(const FloatVector& w, int64_t row_length) {
    const int64_t dim = int64_t(w.shape(0));
    require(dim <= row_length, "norm weight longer than the rows of x");
    return dim;
}

void check_same_size(const FloatArray& a, const FloatArray& b, const char* what) {
    require(a.size() == b.size(), std::string(what) + ": arrays of different sizes");
}

// Heads of a rope call: x is (tokens, heads, head_dim), or (tokens, row_stride) with the heads at
// the start of each row when n_heads and head_dim are given.
struct RopeShape {
    int64_t n_tokens, n_heads, head_dim, row_stride;
};

RopeShape rope_shape(const FloatArray& x, int64_t n_heads, int64_t head_dim) {
    if (x.ndim() == 3 && n_heads == 0 && head_dim == 0) {
        const auto h = int64_t(x.shape(1)), d = int64_t(x.shape(2));
        return {int64_t(x.shape(0)), h, d, h * d};
    }
    require(x.ndim() == 2 && n_heads > 0 && head_dim > 0,
            "rope: x must be (tokens, heads, head_dim), or (tokens, row_stride) with n_heads and head_dim");
    require(n_heads * head_dim <= int64_t(x.shape(1)), "rope: heads do not fit in a row of x");
    return {int64_t(x.shape(0)), n_heads, head_dim, int64_t(x.shape(1))};
}

void check_rope_tables(const RopeShape& s, const FloatMatrix& cos, const FloatMatrix& sin, int64_t n_rot) {
    require(n_rot >= 0 && n_rot <= s.head_dim, "rope: n_rot must be in [0, head_dim]");
    const auto rows = size_t(s.n_tokens), cols = size_t(n_rot / 2);
    require(cos.shape(0) == rows && cos.shape(1) == cols && sin.shape(0) == rows && sin.shape(1) == cols,
            "rope: cos and sin must be (tokens, n_rot / 2)");
}

// Walks every head of a rope call, rotate(head, token) for each.
template <class Rotate>
void for_each_head(float* x, const RopeShape& s, Rotate&& rotate) {
    for (int64_t t = 0; t < s.n_tokens; ++t)
        for (int64_t h = 0; h < s.n_heads; ++h) rotate(x + t * s.row_stride + h * s.head_dim, t);
}

// ---- cpu_*: the reference ops ----------------------------------------------------------------

NumpyFloats cpu_rms_norm(const FloatMatrix& x, const FloatVector& w, float eps) {
    const auto n_rows = int64_t(x.shape(0)), stride = int64_t(x.shape(1));
    const int64_t dim = dim_of(w, stride);
    OutArray y({size_t(n_rows), size_t(stride)}, x.data());
    for (int64_t r = 0; r < n_rows; ++r) rms_norm(x.data() + r * stride, w.data(), dim, eps, y.data() + r * stride);
    return y.release();
}

NumpyFloats cpu_rope(const FloatArray& x, const FloatMatrix& cos, const FloatMatrix& sin, int64_t n_rot,
                     const std::string& layout_name, int64_t n_heads, int64_t head_dim) {
    const RopeShape s = rope_shape(x, n_heads, head_dim);
    check_rope_tables(s, cos, sin, n_rot);
    const RopeLayout layout = rope_layout_from_name(layout_name);
    const int64_t n_pairs = n_rot / 2;
    OutArray y(x);
    for_each_head(y.data(), s, [&](float* head, int64_t t) {
        apply_rope(head, cos.data() + t * n_pairs, sin.data() + t * n_pairs, n_rot, layout);
    });
    return y.release();
}

NumpyFloats cpu_glu(const FloatArray& gate, const FloatArray& up, const std::string& act) {
    check_same_size(gate, up, "glu");
    OutArray y(gate);
    if (activation_from_name(act) == FfnActivation::SiLU)
        silu_glu(gate.data(), up.data(), y.size(), y.data());
    else
        gelu_tanh_glu(gate.data(), up.data(), y.size(), y.data());
    return y.release();
}

NumpyFloats cpu_softcap(const FloatArray& x, float cap) {
    OutArray y(x);
    softcap(y.data(), y.size(), cap);
    return y.release();
}

// ---- gpu_host_*: the kernels' DL_HD math on the CPU ---------------------------------------------

// The kernel's math row by row; the kernel sums the squares in a block-parallel order instead of
// this serial one (both in double).
NumpyFloats gpu_host_rms_norm(const FloatMatrix& x, const FloatVector& w, float eps) {
    using namespace gpu;
    const auto n_rows = int64_t(x.shape(0)), stride = int64_t(x.shape(1));
    const int64_t dim = dim_of(w, stride);
    OutArray y({size_t(n_rows), size_t(stride)}, x.data());
    for (int64_t r = 0; r < n_rows; ++r) {
        const float* xr = x.data() + r * stride;
        double sum_sq = 0.0;
        for (int64_t i = 0; i < dim; ++i) sum_sq += square_as_double(xr[i]);
        const float inv_rms = rms_inv_from_sum_sq(sum_sq, dim, eps);
        for (int64_t i = 0; i < dim; ++i) y.data()[r * stride + i] = rms_norm_value(xr[i], inv_rms, w.data()[i]);
    }
    return y.release();
}

NumpyFloats gpu_host_rope(const FloatArray& x, const FloatMatrix& cos, const FloatMatrix& sin, int64_t n_rot,
                          const std::string& layout_name, int64_t n_heads, int64_t head_dim) {
    const RopeShape s = rope_shape(x, n_heads, head_dim);
    check_rope_tables(s, cos, sin, n_rot);
    const RopeLayout layout = rope_layout_from_name(layout_name);
    const int64_t n_pairs = n_rot / 2;
    OutArray y(x);
    for_each_head(y.data(), s, [&](float* head, int64_t t) {
        for (int64_t i = 0; i < n_pairs; ++i) {
            const gpu::RopePair p = gpu::rope_pair(i, n_rot, layout);
            gpu::rope_rotate(head[p.first], head[p.second], cos.data()[t * n_pairs + i], sin.data()[t * n_pairs + i]);
        }
    });
    return y.release();
}

NumpyFloats gpu_host_glu(const FloatArray& gate, const FloatArray& up, const std::string& act_name) {
    check_same_size(gate, up, "glu");
    const FfnActivation act = activation_from_name(act_name);
    OutArray y(gate);
    for (int64_t i = 0; i < y.size(); ++i) y.data()[i] = gpu::glu_value(y.data()[i], up.data()[i], act);
    return y.release();
}

NumpyFloats gpu_host_softcap(const FloatArray& x, float cap) {
    require(cap != 0.0f, "softcap: cap must be nonzero");
    const float inv_cap = 1.0f / cap;
    OutArray y(x);
    for (int64_t i = 0; i < y.size(); ++i) y.data()[i] = gpu::softcap_value(y.data()[i], cap, inv_cap);
    return y.release();
}

// ---- gpu_*: the CUDA kernels --------------------------------------------------------------------

#if defined(DECOLLAMA_WITH_CUDA)
#define DL_GPU_OP(...) __VA_ARGS__
#else
// Argument checks still run, so a bad call fails the same way in both builds.
#define DL_GPU_OP(...) throw std::runtime_error("decollama was built without CUDA")
#endif

// x: (rows, x_stride) with dim = len(w) <= x_stride. Returns (rows, y_stride or x_stride): in
// place, x with the first dim values of each row normalized; else zeros past dim.
NumpyFloats gpu_rms_norm_py(const FloatMatrix& x, const FloatVector& w, float eps, bool in_place, int64_t y_stride) {
    const auto n_rows = int64_t(x.shape(0)), x_stride = int64_t(x.shape(1));
    [[maybe_unused]] const int64_t dim = dim_of(w, x_stride);
    if (in_place || y_stride == 0) y_stride = x_stride;
    require(y_stride >= dim, "gpu_rms_norm: y_stride shorter than dim");
    OutArray y({size_t(n_rows), size_t(y_stride)});
    DL_GPU_OP(gpu::host_gpu_rms_norm(x.data(), x_stride, w.data(), n_rows, dim, eps, y.data(), y_stride, in_place));
    return y.release();
}

NumpyFloats gpu_rope_py(const FloatArray& x, const FloatMatrix& cos, const FloatMatrix& sin, int64_t n_rot,
                        const std::string& layout_name, int64_t n_heads, int64_t head_dim) {
    const RopeShape s = rope_shape(x, n_heads, head_dim);
    check_rope_tables(s, cos, sin, n_rot);
    [[maybe_unused]] const RopeLayout layout = rope_layout_from_name(layout_name);
    OutArray y(x);
    DL_GPU_OP(gpu::host_gpu_rope(y.data(), s.n_tokens, s.n_heads, s.head_dim, s.row_stride, cos.data(), sin.data(),
                                 n_rot, layout));
    return y.release();
}

NumpyFloats gpu_scale_py(const FloatArray& x, float s) {
    OutArray y(x);
    DL_GPU_OP(gpu::host_gpu_scale(y.data(), y.size(), s));
    return y.release();
}

NumpyFloats gpu_add_py(const FloatArray& x, const FloatArray& other) {
    check_same_size(x, other, "add");
    OutArray y(x);
    DL_GPU_OP(gpu::host_gpu_add(y.data(), other.data(), y.size()));
    return y.release();
}

NumpyFloats gpu_add_bias_py(const FloatMatrix& x, const FloatVector& b) {
    require(b.shape(0) == x.shape(1), "add_bias: bias length differs from the rows of x");
    OutArray y(x);
    DL_GPU_OP(gpu::host_gpu_add_bias(y.data(), b.data(), int64_t(x.shape(0)), int64_t(x.shape(1))));
    return y.release();
}

NumpyFloats gpu_glu_py(const FloatArray& gate, const FloatArray& up, const std::string& act_name) {
    check_same_size(gate, up, "glu");
    [[maybe_unused]] const FfnActivation act = activation_from_name(act_name);
    OutArray y(gate);
    DL_GPU_OP(gpu::host_gpu_glu(y.data(), up.data(), y.size(), act));
    return y.release();
}

NumpyFloats gpu_softcap_py(const FloatArray& x, float cap) {
    require(cap != 0.0f, "softcap: cap must be nonzero");
    OutArray y(x);
    DL_GPU_OP(gpu::host_gpu_softcap(y.data(), y.size(), cap));
    return y.release();
}

#undef DL_GPU_OP

}  // namespace

void bind_gpu_ops(nb::module_& m) {
    using namespace nb::literals;
    m.def("cpu_rms_norm", &cpu_rms_norm, "x"_a, "w"_a, "eps"_a,
          "Reference rms_norm (cpp/model/ops.h) of the first len(w) values of each row of x.");
    m.def("cpu_rope", &cpu_rope, "x"_a, "cos"_a, "sin"_a, "n_rot"_a, "layout"_a, "n_heads"_a = 0, "head_dim"_a = 0,
          "Reference apply_rope on every head: x (tokens, heads, head_dim), or (tokens, row_stride) with "
          "n_heads and head_dim; cos/sin (tokens, n_rot / 2).");
    m.def("cpu_glu", &cpu_glu, "gate"_a, "up"_a, "act"_a, "Reference silu_glu / gelu_tanh_glu.");
    m.def("cpu_softcap", &cpu_softcap, "x"_a, "cap"_a, "Reference softcap.");

    m.def("gpu_host_rms_norm", &gpu_host_rms_norm, "x"_a, "w"_a, "eps"_a,
          "The rms_norm kernel's DL_HD math on the CPU.");
    m.def("gpu_host_rope", &gpu_host_rope, "x"_a, "cos"_a, "sin"_a, "n_rot"_a, "layout"_a, "n_heads"_a = 0,
          "head_dim"_a = 0, "The rope kernel's DL_HD math on the CPU (arguments as cpu_rope).");
    m.def("gpu_host_glu", &gpu_host_glu, "gate"_a, "up"_a, "act"_a, "The glu kernel's DL_HD math on the CPU.");
    m.def("gpu_host_softcap", &gpu_host_softcap, "x"_a, "cap"_a, "The softcap kernel's DL_HD math on the CPU.");

    m.def("gpu_rms_norm", &gpu_rms_norm_py, "x"_a, "w"_a, "eps"_a, "in_place"_a = false, "y_stride"_a = 0,
          "rms_norm kernel on x (rows, x_stride), dim = len(w). Returns (rows, y_stride or x_stride): in place "
          "(y aliasing x) the rest of each row is x's, else zeros.");
    m.def("gpu_rope", &gpu_rope_py, "x"_a, "cos"_a, "sin"_a, "n_rot"_a, "layout"_a, "n_heads"_a = 0,
          "head_dim"_a = 0, "rope kernel (arguments as cpu_rope).");
    m.def("gpu_scale", &gpu_scale_py, "x"_a, "s"_a, "scale kernel: x * s.");
    m.def("gpu_add", &gpu_add_py, "x"_a, "y"_a, "add kernel: x + y.");
    m.def("gpu_add_bias", &gpu_add_bias_py, "x"_a, "b"_a, "add_bias kernel: each row of x (rows, dim) + b.");
    m.def("gpu_glu", &gpu_glu_py, "gate"_a, "up"_a, "act"_a, "glu kernel: act(gate) * up.");
    m.def("gpu_softcap", &gpu_softcap_py, "x"_a, "cap"_a, "softcap kernel: cap * tanh(x / cap).");
}

}  // namespace decollama::py
