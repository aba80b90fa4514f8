// KV-cache calibration and CQ kernels: _core.kmeans (decollama-calibrate's codebooks), and test
// hooks for the CQ encoder and nearest-centroid kernel on one CPU path.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "common/cpu_features.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "kv/kmeans.h"
#include "kv/kv_cq_simd.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace decollama::py {

namespace {

using FloatMatrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using FloatArray = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;

template <class T>
nb::ndarray<nb::numpy, T> owned_array(std::unique_ptr<T[]> data, std::initializer_list<size_t> shape) {
    nb::capsule owner(data.get(), [](void* p) noexcept { delete[] static_cast<T*>(p); });
    return nb::ndarray<nb::numpy, T>(data.release(), shape, owner);
}

CpuPath checked_path(const std::string& cpu_path) {
    if (cpu_path.empty()) return default_cpu_path();
    const CpuPath path = cpu_path_from_name(cpu_path);
    if (!cpu_path_supported(path, detect_cpu_features()))
        throw InvalidArgument("cpu_path '" + cpu_path + "' is not supported by this CPU");
    return path;
}

// One pool for threaded kmeans calls (a calibration makes thousands), rebuilt when the thread
// count changes; such calls from several Python threads take turns. n_threads=1 calls run on
// the calling thread and in parallel with each other.
std::mutex pool_mutex;
std::unique_ptr<ThreadPool> shared_pool;

nb::ndarray<nb::numpy, float> kmeans_py(const FloatMatrix& X, int64_t k, int64_t iters,
                                        const std::optional<FloatArray>& metric, uint64_t seed, int n_threads,
                                        const std::string& cpu_path) {
    const int64_t n = int64_t(X.shape(0)), c = int64_t(X.shape(1));
    if (metric && int64_t(metric->size()) != c)
        throw InvalidArgument("kmeans: metric must hold one weight per column of X (" + std::to_string(c) + ")");
    if (n_threads < 0) throw InvalidArgument("kmeans: n_threads must be >= 0");
    const CpuPath path = checked_path(cpu_path);
    KMeansResult r;
    {
        nb::gil_scoped_release no_gil;
        const int want = n_threads > 0 ? n_threads : physical_core_count();
        const float* m = metric ? metric->data() : nullptr;
        if (want == 1) {
            ThreadPool single(1);  // no worker threads
            r = kmeans(X.data(), n, c, k, iters, m, seed, single, path);
        } else {
            std::lock_guard<std::mutex> lock(pool_mutex);
            if (!shared_pool || shared_pool->size() != want) shared_pool = std::make_unique<ThreadPool>(want);
            r = kmeans(X.data(), n, c, k, iters, m, seed, *shared_pool, path);
        }
    }
    std::unique_ptr<float[]> out(new float[r.centroids.size()]);
    std::copy(r.centroids.begin(), r.centroids.end(), out.get());
    return owned_array(std::move(out), {size_t(k), size_t(c)});
}

// Test hook: the cq encoder on one path. rows [n, D], codebook [G, 256, c] -> codes uint8 [n, G].
nb::ndarray<nb::numpy, uint8_t> cq_encode_py(const FloatMatrix& rows, const FloatArray& codebook,
                                             const std::optional<FloatArray>& metric, const std::string& cpu_path) {
    const int64_t n = int64_t(rows.shape(0)), D = int64_t(rows.shape(1));
    if (codebook.ndim() != 3 || codebook.shape(1) != size_t(kCqCentroids) ||
        int64_t(codebook.shape(0) * codebook.shape(2)) != D)
        throw InvalidArgument("cq_encode: codebook must be [head_dim / c, 256, c] for rows of head_dim values");
    const int64_t c = int64_t(codebook.shape(2)), G = D / c;
    if (metric && int64_t(metric->size()) != D) throw InvalidArgument("cq_encode: metric must hold head_dim values");
    const CpuPath path = checked_path(cpu_path);
    std::unique_ptr<uint8_t[]> codes(new uint8_t[size_t(std::max<int64_t>(1, n * G))]);
    KVStreamConsts consts;
    consts.codebook = codebook.data();
    consts.metric = metric ? metric->data() : nullptr;
    {
        nb::gil_scoped_release no_gil;
        cq_encode(rows.data(), D, n, D, c, consts, path, codes.get());
    }
    return owned_array(std::move(codes), {size_t(n), size_t(G)});
}

// Test hook: nearest of k centroids [k, c] for points [n, c] on one path -> (labels int32, distances).
nb::tuple cq_nearest_py(const FloatMatrix& X, const FloatMatrix& centroids, const std::optional<FloatArray>& metric,
                        const std::string& cpu_path) {
    const int64_t n = int64_t(X.shape(0)), c = int64_t(X.shape(1)), k = int64_t(centroids.shape(0));
    if (int64_t(centroids.shape(1)) != c || k < 1) throw InvalidArgument("cq_nearest: centroids must be [k >= 1, c]");
    if (metric && int64_t(metric->size()) != c) throw InvalidArgument("cq_nearest: metric must hold c values");
    const CpuPath path = checked_path(cpu_path);
    std::vector<float> ct(size_t(k * c)), m(size_t(c), 1.0f);
    for (int64_t kk = 0; kk < k; ++kk)
        for (int64_t i = 0; i < c; ++i) ct[size_t(i * k + kk)] = centroids.data()[kk * c + i];
    if (metric) std::copy_n(metric->data(), c, m.begin());
    std::unique_ptr<int32_t[]> labels(new int32_t[size_t(std::max<int64_t>(1, n))]);
    std::unique_ptr<float[]> dist(new float[size_t(std::max<int64_t>(1, n))]);
    cq_nearest_for(path)(X.data(), n, c, c, ct.data(), k, k, m.data(), labels.get(), dist.get());
    return nb::make_tuple(owned_array(std::move(labels), {size_t(n)}), owned_array(std::move(dist), {size_t(n)}));
}

}  // namespace

void bind_kv(nb::module_& m) {
    m.def("kmeans", &kmeans_py, "X"_a, "k"_a = 256, "iters"_a = 20, "metric"_a = nb::none(), "seed"_a = 0,
          "n_threads"_a = 0, "cpu_path"_a = "",
          "k-means of the rows of X (float32 [N, c]) in the CQ metric sum_i metric[i] (x_i - C_i)^2 (metric None: "
          "all 1) -> centroids float32 [k, c]. k-means++ init from `seed`, at most `iters` Lloyd iterations (stops "
          "when no assignment changes), empty clusters re-seeded with the farthest points; the result does not "
          "depend on n_threads (0: physical cores) or cpu_path ('': default). See cpp/kv/kmeans.h.");
    m.def("cq_encode", &cq_encode_py, "rows"_a, "codebook"_a, "metric"_a = nb::none(), "cpu_path"_a = "",
          "Test hook: the cq formats' encoder on one CPU path. rows float32 [n, D], codebook [D / c, 256, c], metric "
          "[D] (None: 1) -> codes uint8 [n, D / c].");
    m.def("cq_nearest", &cq_nearest_py, "X"_a, "centroids"_a, "metric"_a = nb::none(), "cpu_path"_a = "",
          "Test hook: the nearest-centroid kernel of the cq encoder and kmeans on one CPU path. X [n, c], "
          "centroids [k, c] -> (labels int32 [n], distances float32 [n]).");
}

}  // namespace decollama::py
