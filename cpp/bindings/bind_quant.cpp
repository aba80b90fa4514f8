// Python surface of the weight block types and the matmul, for tests and tools: every kernel
// is reachable per CPU path, so each path can be checked against the numpy references.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "common/cpu_features.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "quant/matmul.h"
#include "quant/weight_types.h"

namespace nb = nanobind;

namespace decollama::py {

namespace {

using ByteArray = nb::ndarray<const uint8_t, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using FloatVector = nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>;
using FloatMatrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;

// GGML type ids are small; the table answers for every id below this.
constexpr uint32_t kTypeIdLimit = 256;
// More threads than this is a caller mistake, not a machine.
constexpr int kMaxThreads = 1024;

// A heap buffer that becomes a numpy array's memory (the array frees it).
template <class T>
class NumpyBuffer {
public:
    explicit NumpyBuffer(size_t n) : data_(new T[n]) {}
    T* data() { return data_.get(); }

    nb::ndarray<nb::numpy, T> to_numpy(std::initializer_list<size_t> shape) {
        nb::capsule owner(data_.get(), [](void* p) noexcept { delete[] static_cast<T*>(p); });
        return nb::ndarray<nb::numpy, T>(data_.release(), shape, owner);
    }

private:
    std::unique_ptr<T[]> data_;
};

const WeightTypeTraits& type_by_name(const std::string& name) {
    const WeightTypeTraits* t = find_weight_type(name.c_str());
    if (t == nullptr) throw InvalidArgument("unknown weight type '" + name + "'");
    return *t;
}

const WeightTypeTraits& activation_type(const WeightTypeTraits& t) {
    return *find_weight_type(static_cast<uint32_t>(t.vec_dot_type));
}

bool has_vec_dot(const WeightTypeTraits& t) { return t.vec_dot[int(CpuPath::Scalar)] != nullptr; }

void check_row_length(const WeightTypeTraits& t, int64_t n) {
    if (n < 0 || n % t.block_size != 0)
        throw InvalidArgument(std::string(t.name) + ": row length " + std::to_string(n) +
                              " is not a multiple of the block size " + std::to_string(t.block_size));
}

void check_byte_count(const WeightTypeTraits& t, size_t got, size_t expected, const char* what) {
    if (got != expected)
        throw InvalidArgument(std::string(t.name) + ": " + what + " holds " + std::to_string(got) +
                              " bytes, expected " + std::to_string(expected));
}

// The dot kernel of exactly this path (no fallback), which this CPU must be able to run.
VecDotFn kernel_of_path(const WeightTypeTraits& t, const std::string& path_name) {
    if (!has_vec_dot(t)) throw InvalidArgument(std::string(t.name) + " has no dot product kernels");
    const CpuPath path = cpu_path_from_name(path_name);
    if (!cpu_path_supported(path, detect_cpu_features()))
        throw InvalidArgument("this CPU does not support the " + path_name + " kernel path");
    const VecDotFn fn = t.vec_dot[int(path)];
    if (fn == nullptr) throw InvalidArgument(std::string(t.name) + " has no " + path_name + " dot kernel");
    return fn;
}

nb::list weight_types() {
    nb::list out;
    for (uint32_t id = 0; id < kTypeIdLimit; ++id) {
        const WeightTypeTraits* t = find_weight_type(id);
        if (t == nullptr) continue;
        nb::dict d;
        d["name"] = t->name;
        d["type_id"] = id;
        d["block_size"] = t->block_size;
        d["block_bytes"] = t->block_bytes;
        d["has_kernels"] = has_vec_dot(*t);
        d["vec_dot_type"] = has_vec_dot(*t) ? nb::object(nb::str(activation_type(*t).name)) : nb::none();
        d["can_dequantize"] = t->dequantize_row != nullptr;
        d["can_quantize"] = t->quantize_row != nullptr;
        nb::list paths;
        for (int p = 0; p < kNumCpuPaths; ++p)
            if (t->vec_dot[p] != nullptr) paths.append(cpu_path_name(CpuPath(p)));
        d["vec_dot_paths"] = paths;
        nb::list tile_paths;
        for (int p = 0; p < kNumCpuPaths; ++p)
            if (t->gemm_tile[p] != nullptr) tile_paths.append(cpu_path_name(CpuPath(p)));
        d["gemm_tile_paths"] = tile_paths;
        out.append(d);
    }
    return out;
}

nb::ndarray<nb::numpy, float> dequantize_row(const std::string& type_name, const ByteArray& data, int64_t n) {
    const WeightTypeTraits& t = type_by_name(type_name);
    if (t.dequantize_row == nullptr) throw InvalidArgument(std::string(t.name) + " cannot be dequantized");
    check_row_length(t, n);
    check_byte_count(t, data.size(), row_bytes(t, n), "data");
    NumpyBuffer<float> out{size_t(n)};
    {
        nb::gil_scoped_release no_gil;
        t.dequantize_row(data.data(), out.data(), n);
    }
    return out.to_numpy({size_t(n)});
}

nb::ndarray<nb::numpy, uint8_t> quantize_row(const std::string& type_name, const FloatVector& x) {
    const WeightTypeTraits& t = type_by_name(type_name);
    if (t.quantize_row == nullptr) throw InvalidArgument(std::string(t.name) + " has no quantizer");
    const int64_t n = int64_t(x.shape(0));
    check_row_length(t, n);
    const size_t bytes = row_bytes(t, n);
    NumpyBuffer<uint8_t> out{bytes};
    {
        nb::gil_scoped_release no_gil;
        t.quantize_row(x.data(), out.data(), n);
    }
    return out.to_numpy({bytes});
}

float vec_dot(const std::string& type_name, const ByteArray& w, const FloatVector& x, const std::string& path) {
    const WeightTypeTraits& t = type_by_name(type_name);
    const VecDotFn dot = kernel_of_path(t, path);
    const int64_t n = int64_t(x.shape(0));
    check_row_length(t, n);
    check_byte_count(t, w.size(), row_bytes(t, n), "weight row");
    const WeightTypeTraits& act = activation_type(t);
    float result = 0.0f;
    nb::gil_scoped_release no_gil;
    if (act.type == GGMLType::F32) {
        dot(n, &result, w.data(), x.data());
    } else {
        std::vector<uint8_t> quantized(row_bytes(act, n));
        act.quantize_row(x.data(), quantized.data(), n);
        dot(n, &result, w.data(), quantized.data());
    }
    return result;
}

nb::ndarray<nb::numpy, float> matmul_binding(const std::string& type_name, const ByteArray& w, int64_t n_out,
                                             int64_t n_in, const FloatMatrix& x, const std::string& path,
                                             int n_threads, bool precise) {
    const WeightTypeTraits& t = type_by_name(type_name);
    kernel_of_path(t, path);  // this exact path must have its kernel: no silent fallback
    check_row_length(t, n_in);
    if (n_in == 0 || n_out < 0) throw InvalidArgument("matmul: n_in must be > 0 and n_out >= 0");
    if (int64_t(x.shape(1)) != n_in)
        throw InvalidArgument("matmul: x has " + std::to_string(x.shape(1)) + " columns, expected n_in = " +
                              std::to_string(n_in));
    // Division, not n_out * row bytes: a huge n_out must not wrap around to a matching size.
    const size_t weight_row_bytes = row_bytes(t, n_in);
    if (w.size() % weight_row_bytes != 0 || int64_t(w.size() / weight_row_bytes) != n_out)
        throw InvalidArgument(std::string(t.name) + ": weight matrix holds " + std::to_string(w.size()) +
                              " bytes, expected n_out = " + std::to_string(n_out) + " rows of " +
                              std::to_string(weight_row_bytes));
    if (n_threads < 0 || n_threads > kMaxThreads)
        throw InvalidArgument("matmul: n_threads must be in [0, " + std::to_string(kMaxThreads) +
                              "] (0: physical cores)");
    const int64_t n_tokens = int64_t(x.shape(0));
    NumpyBuffer<float> y{size_t(n_tokens * n_out)};
    {
        nb::gil_scoped_release no_gil;
        ThreadPool pool(n_threads);
        MatmulScratch scratch;
        const WeightView view{w.data(), t.type, n_in, n_out};
        matmul(view, x.data(), n_tokens, y.data(), pool, cpu_path_from_name(path), scratch,
               precise ? ActivationPrecision::Fp32 : ActivationPrecision::Quantized);
    }
    return y.to_numpy({size_t(n_tokens), size_t(n_out)});
}

// Y = x @ W.T by the tile kernel of exactly this path (no fallback), in tiles of
// kGemmTileRows x kGemmTileTokens from the origin (partial ones at the edges): the test hook
// comparing each tile kernel with its scalar reference.
nb::ndarray<nb::numpy, float> gemm_tile_binding(const std::string& type_name, const ByteArray& w, int64_t n_out,
                                                int64_t n_in, const FloatMatrix& x, const std::string& path_name) {
    const WeightTypeTraits& t = type_by_name(type_name);
    kernel_of_path(t, path_name);  // checks the CPU supports the path
    const GemmTileFn tile = t.gemm_tile[int(cpu_path_from_name(path_name))];
    if (tile == nullptr) throw InvalidArgument(std::string(t.name) + " has no " + path_name + " gemm tile");
    check_row_length(t, n_in);
    if (n_in == 0 || n_out < 0 || int64_t(x.shape(1)) != n_in)
        throw InvalidArgument("gemm_tile: x must have n_in > 0 columns and n_out >= 0");
    const size_t w_stride = row_bytes(t, n_in);
    check_byte_count(t, w.size(), size_t(n_out) * w_stride, "weight matrix");
    const int64_t n_tokens = int64_t(x.shape(0));
    const WeightTypeTraits& act = activation_type(t);
    NumpyBuffer<float> y{size_t(n_tokens * n_out)};
    {
        nb::gil_scoped_release no_gil;
        const size_t a_stride = act.type == GGMLType::F32 ? size_t(n_in) * sizeof(float) : row_bytes(act, n_in);
        std::vector<uint8_t> converted;
        const uint8_t* a = reinterpret_cast<const uint8_t*>(x.data());
        if (act.type != GGMLType::F32) {
            converted.resize(size_t(n_tokens) * a_stride);
            for (int64_t i = 0; i < n_tokens; ++i)
                act.quantize_row(x.data() + i * n_in, converted.data() + size_t(i) * a_stride, n_in);
            a = converted.data();
        }
        for (int64_t i = 0; i < n_tokens; i += kGemmTileTokens)
            for (int64_t o = 0; o < n_out; o += kGemmTileRows)
                tile(n_in, w.data() + size_t(o) * w_stride, w_stride, a + size_t(i) * a_stride, a_stride,
                     y.data() + i * n_out + o, n_out, int(std::min<int64_t>(kGemmTileRows, n_out - o)),
                     int(std::min<int64_t>(kGemmTileTokens, n_tokens - i)));
    }
    return y.to_numpy({size_t(n_tokens), size_t(n_out)});
}

}  // namespace

void bind_quant(nb::module_& m) {
    m.def("weight_types", &weight_types,
          "Every GGML type id known: name, type_id, block_size, block_bytes, has_kernels (usable as a "
          "matmul weight), vec_dot_type, can_dequantize, can_quantize, vec_dot_paths, gemm_tile_paths.");
    m.def("dequantize_row", &dequantize_row, nb::arg("type_name"), nb::arg("data"), nb::arg("n"),
          "n float32 values from the blocks in data (uint8).");
    m.def("quantize_row", &quantize_row, nb::arg("type_name"), nb::arg("x"),
          "Blocks (uint8) of x with ggml's reference rounding.");
    m.def("vec_dot", &vec_dot, nb::arg("type_name"), nb::arg("w"), nb::arg("x"), nb::arg("path"),
          "dot(weight row w, x) with x quantized to the type's vec_dot_type, by the kernel of exactly "
          "this path ('scalar', 'avx2', 'avx512'); ValueError if the CPU or the table lacks it.");
    m.def("matmul", &matmul_binding, nb::arg("type_name"), nb::arg("w"), nb::arg("n_out"), nb::arg("n_in"),
          nb::arg("x"), nb::arg("path"), nb::arg("n_threads") = 0, nb::arg("precise") = false,
          "y[n_tokens, n_out] = x[n_tokens, n_in] @ W.T for W given as n_out rows of blocks. precise: x stays "
          "fp32 and W is dequantized a row tile at a time (f32 kernels) instead of x quantized to W's "
          "vec_dot_type.");
    m.def("gemm_tile", &gemm_tile_binding, nb::arg("type_name"), nb::arg("w"), nb::arg("n_out"), nb::arg("n_in"),
          nb::arg("x"), nb::arg("path"),
          "As matmul, single-threaded, by the gemm tile kernel of exactly this path; ValueError where "
          "the table has none.");
}

}  // namespace decollama::py
