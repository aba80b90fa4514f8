// Test hooks of the GPU weight kernels. gpu_host_dequantize runs the kernels' DL_HD block
// dequantizers (cuda/gpu_weight_blocks.h) on the CPU in every build, gpu_host_activation_scales
// the prefill kernel's per-token fp16 scale choice (cuda/gpu_activation_scale.h); gpu_matmul / gpu_embed
// launch the CUDA kernels (cuda/gpu_matmul.cu) and raise RuntimeError in a build without CUDA or
// on a machine without a usable GPU.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "common/error.h"
#include "cuda/gpu_activation_scale.h"
#include "cuda/gpu_weight_blocks.h"
#include "quant/weight_types.h"
#ifdef DECOLLAMA_WITH_CUDA
#include "cuda/gpu_matmul_hooks.h"
#endif

namespace nb = nanobind;

namespace decollama::py {

namespace {

using ByteArray = nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using FloatMatrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using IntVector = nb::ndarray<const int32_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;

nb::ndarray<nb::numpy, float> to_numpy(std::vector<float> values, std::initializer_list<size_t> shape) {
    auto* owned = new std::vector<float>(std::move(values));
    owned->reserve(1);  // a non-null data pointer for empty results
    nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<float>*>(p); });
    return nb::ndarray<nb::numpy, float>(owned->data(), shape, owner);
}

// A GPU weight type by name ("q4_K", "Q4_K"...): InvalidArgument when unknown or unsupported.
GGMLType gpu_type_by_name(const std::string& name) {
    const WeightTypeTraits* t = find_weight_type(name.c_str());
    if (t == nullptr) throw InvalidArgument("unknown weight type '" + name + "'");
    if (!gpu::visit_weight_blocks(t->type, [](auto) {}))
        throw InvalidArgument(std::string("weight type ") + t->name + " is not supported by the GPU kernels");
    return t->type;
}

// Bytes of one row of n values, checking n is a valid row length for the type.
size_t gpu_row_bytes(const std::string& name, GGMLType type, int64_t n) {
    size_t bytes = 0;
    bool valid = false;
    gpu::visit_weight_blocks(type, [&](auto w) {
        using W = decltype(w);
        valid = gpu::valid_row_length<W>(n);
        if (valid) bytes = gpu::row_bytes_of<W>(n);
    });
    if (!valid) throw InvalidArgument(name + ": " + std::to_string(n) + " values are not a row of whole blocks");
    return bytes;
}

void check_bytes(const std::string& name, size_t got, size_t expected, const char* what) {
    if (got != expected)
        throw InvalidArgument(name + ": " + what + " holds " + std::to_string(got) + " bytes, expected " +
                              std::to_string(expected));
}

nb::list gpu_weight_types() {
    nb::list out;
    for (uint32_t id = 0; id < 256; ++id) {
        const WeightTypeTraits* t = find_weight_type(id);
        if (t != nullptr && gpu::visit_weight_blocks(t->type, [](auto) {})) out.append(t->name);
    }
    return out;
}

nb::ndarray<nb::numpy, float> gpu_host_dequantize(const std::string& name, const ByteArray& data, int64_t n) {
    const GGMLType type = gpu_type_by_name(name);
    check_bytes(name, data.size(), gpu_row_bytes(name, type, n), "data");
    std::vector<float> out(static_cast<size_t>(n));
    gpu::visit_weight_blocks(type, [&](auto w) {
        using W = decltype(w);
        gpu::dequantize_row_host<W>(data.data(), n, out.data());
    });
    return to_numpy(std::move(out), {size_t(n)});
}

// Per row of x: (max |x|, s, 1 / s) as the prefill kernel computes them (same DL_HD code).
nb::tuple gpu_host_activation_scales(const FloatMatrix& x) {
    const size_t n_tokens = x.shape(0), n_in = x.shape(1);
    std::vector<float> m(n_tokens), s(n_tokens), inv(n_tokens);
    for (size_t t = 0; t < n_tokens; ++t) {
        float row_max = 0.0f;
        for (size_t k = 0; k < n_in; ++k) row_max = gpu::abs_max_update(row_max, x.data()[t * n_in + k]);
        const gpu::ActivationScale a = gpu::activation_scale(row_max);
        m[t] = row_max;
        s[t] = a.scale;
        inv[t] = a.inverse;
    }
    return nb::make_tuple(to_numpy(std::move(m), {n_tokens}), to_numpy(std::move(s), {n_tokens}),
                          to_numpy(std::move(inv), {n_tokens}));
}

[[noreturn]] void no_cuda() { throw std::runtime_error("decollama was built without CUDA"); }

nb::ndarray<nb::numpy, float> gpu_matmul(const std::string& name, const ByteArray& w, int64_t n_in, int64_t n_out,
                                         const FloatMatrix& x, bool misalign) {
#ifdef DECOLLAMA_WITH_CUDA
    const GGMLType type = gpu_type_by_name(name);
    const size_t row_bytes = gpu_row_bytes(name, type, n_in);
    if (n_out < 0) throw InvalidArgument("gpu_matmul: n_out < 0");
    if (int64_t(x.shape(1)) != n_in)
        throw InvalidArgument("gpu_matmul: x has " + std::to_string(x.shape(1)) + " columns, expected n_in = " +
                              std::to_string(n_in));
    // Division, not n_out * row bytes: a huge n_out must not wrap around to a matching size.
    if (w.size() % row_bytes != 0 || int64_t(w.size() / row_bytes) != n_out)
        throw InvalidArgument(name + ": weight matrix holds " + std::to_string(w.size()) + " bytes, expected " +
                              std::to_string(n_out) + " rows of " + std::to_string(row_bytes));
    const int64_t n_tokens = int64_t(x.shape(0));
    std::vector<float> y;
    {
        nb::gil_scoped_release no_gil;
        y = gpu::gpu_test_matmul(type, w.data(), n_in, n_out, x.data(), n_tokens, misalign);
    }
    return to_numpy(std::move(y), {size_t(n_tokens), size_t(n_out)});
#else
    no_cuda();
#endif
}

nb::ndarray<nb::numpy, float> gpu_embed(const std::string& name, const ByteArray& table, int64_t n_in,
                                        const IntVector& tokens, float scale) {
#ifdef DECOLLAMA_WITH_CUDA
    const GGMLType type = gpu_type_by_name(name);
    const size_t row_bytes = gpu_row_bytes(name, type, n_in);
    if (table.size() % row_bytes != 0)
        throw InvalidArgument(name + ": table holds " + std::to_string(table.size()) +
                              " bytes, not whole rows of " + std::to_string(row_bytes));
    const int64_t n_rows = int64_t(table.size() / row_bytes), n_tokens = int64_t(tokens.shape(0));
    for (int64_t t = 0; t < n_tokens; ++t)
        if (tokens.data()[t] < 0 || tokens.data()[t] >= n_rows)
            throw InvalidArgument("gpu_embed: token " + std::to_string(tokens.data()[t]) + " is outside the " +
                                  std::to_string(n_rows) + " rows of the table");
    std::vector<float> x;
    {
        nb::gil_scoped_release no_gil;
        x = gpu::gpu_test_embed(type, table.data(), n_in, n_rows, tokens.data(), n_tokens, scale);
    }
    return to_numpy(std::move(x), {size_t(n_tokens), size_t(n_in)});
#else
    no_cuda();
#endif
}

int gpu_decode_max_tokens() {
#ifdef DECOLLAMA_WITH_CUDA
    return gpu::gpu_matmul_decode_max_tokens();
#else
    no_cuda();
#endif
}

}  // namespace

void bind_gpu_weights(nb::module_& m) {
    m.def("gpu_weight_types", &gpu_weight_types, "Names of the weight types the GPU matmul kernels handle.");
    m.def("gpu_host_dequantize", &gpu_host_dequantize, nb::arg("type_name"), nb::arg("data"), nb::arg("n"),
          "n float32 values of a row of blocks (uint8), dequantized on the CPU by the GPU kernels' own block "
          "code (every build).");
    m.def("gpu_host_activation_scales", &gpu_host_activation_scales, nb::arg("x"),
          "(m, s, inv), float32 arrays with one entry per row of x[n_tokens, n_in] (float32): m = max |x_t| "
          "(NaN skipped), s = 2^-k the power-of-two scale the tensor-core matmul applies to the row before "
          "converting it to fp16 (m * s <= gpu_activation_scale_bound(); 1 when already below or m = inf), "
          "inv = 1 / s. CPU, every build.");
    m.def("gpu_activation_scale_bound", []() { return gpu::kActivationScaleBound; },
          "The bound of max |x * s| on the fp16 activations of the tensor-core matmul (2^14).");
    m.def("gpu_matmul", &gpu_matmul, nb::arg("type_name"), nb::arg("w"), nb::arg("n_in"), nb::arg("n_out"),
          nb::arg("x"), nb::arg("misalign") = false,
          "y[n_tokens, n_out] = x[n_tokens, n_in] @ W.T on the GPU, W given as n_out rows of blocks (uint8); "
          "misalign places a quantized W one byte past an aligned address. RuntimeError without CUDA or GPU.");
    m.def("gpu_embed", &gpu_embed, nb::arg("type_name"), nb::arg("table"), nb::arg("n_in"), nb::arg("tokens"),
          nb::arg("scale") = 1.0f,
          "x[n_tokens, n_in] = scale * rows `tokens` (int32) of the table (uint8 rows of blocks) on the GPU. "
          "RuntimeError without CUDA or GPU.");
    m.def("gpu_decode_max_tokens", &gpu_decode_max_tokens,
          "The largest n_tokens gpu_matmul runs with the matrix-vector (decode) kernel.");
}

}  // namespace decollama::py
