// Test hooks of the GPU quantize-on-write store (cuda/gpu_kv_store.cu):
//   gpu_host_kv_encode  the DL_HD encoders (cuda/kv_encode_device.h) on the host, on a raw stream:
//                       compared with kv_codec_append, the CPU encoders (every build)
//   gpu_host_kv_store   the store's work items (cuda/kv_store_device.h) on the host, on a one-layer
//                       cache layout: compared with KVCache::store (every build)
//   gpu_kv_store_test   the same through the CUDA kernels (RuntimeError without CUDA or a GPU)
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "cuda/gpu_kv_store_hooks.h"
#include "cuda/kv_encode_device.h"
#include "kv/kv_cache.h"
#include "kv/kv_format.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace decollama::py {

namespace {

using FloatMatrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using FloatArray = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using OptFloatArray = std::optional<FloatArray>;

const float* data_or_null(const OptFloatArray& a) { return a ? a->data() : nullptr; }

// ---- gpu_host_kv_encode --------------------------------------------------------------------------

// Rows [n, D] as tokens [t0, t0 + n) of a stream (whole blocks), through Enc's DL_HD functions in the
// order a kernel's threads would run them.
template <class Enc>
void host_encode(const float* rows, int64_t n, int64_t D, int64_t t0, const float* energy, const float* book,
                 const float* metric, uint8_t* stream) {
    using namespace gpu;
    if constexpr (Enc::kIsBlockFormat) {
        constexpr int bits = Enc::kBits;
        std::vector<uint16_t> mu(static_cast<size_t>(D)), w(static_cast<size_t>(D));
        std::vector<double> u(static_cast<size_t>(D));
        const int64_t rb = deco_row_size(D, bits);
        for (int64_t b = 0; b < n / kDecoBlockTokens; ++b) {
            const float* x = rows + b * kDecoBlockTokens * D;
            const float* e = energy != nullptr ? energy + b * kDecoBlockTokens * D : nullptr;
            const int64_t tb = t0 + b * kDecoBlockTokens, skip = Enc::skip_rows(tb);
            uint8_t* block = stream + (tb / kDecoBlockTokens) * deco_block_size(D, bits);
            for (int64_t c = 0; c < D; ++c) {
                mu[size_t(c)] = Enc::channel_mean([&](int64_t r) { return x[r * D + c]; }, skip);
                if (e) u[size_t(c)] = Enc::channel_u([&](int64_t r) { return e[r * D + c]; }, skip);
            }
            const double m = e ? Enc::mean_u(u.data(), D) : 0.0;
            for (int64_t c = 0; c < D; ++c) {
                w[size_t(c)] = e ? Enc::channel_weight(u[size_t(c)], m) : uint16_t(0x3C00);
                store_u16(block + 2 * c, mu[size_t(c)]);
                store_u16(block + 2 * (D + c), w[size_t(c)]);
            }
            for (int64_t r = 0; r < kDecoBlockTokens; ++r) {
                uint8_t* row = block + deco_header_size(D) + r * rb;
                if (r < skip)
                    std::memset(row, 0, size_t(rb));
                else
                    Enc::encode_row([&](int64_t c) { return x[r * D + c]; }, mu.data(), w.data(), D, row);
            }
        }
    } else {
        const int64_t U = KVRowUnits<Enc>::per_row(D), rb = KVRowUnits<Enc>::row_bytes(D);
        KVStoreArgs a;  // what KVRowUnits reads: the head's codebook and metric
        a.head_dim = D;
        a.codebooks = book;
        a.metrics = metric;
        for (int64_t i = 0; i < n; ++i)
            for (int64_t unit = 0; unit < U; ++unit)
                KVRowUnits<Enc>::encode(a, rows + i * D, 0, unit, stream + (t0 + i) * rb);
    }
}

nb::bytes gpu_host_kv_encode(const std::string& name, const FloatMatrix& rows, int64_t t0, const OptFloatArray& energy,
                             const OptFloatArray& codebook, const OptFloatArray& metric) {
    const KVFormat& f = kv_format(name);
    const int64_t n = int64_t(rows.shape(0)), D = int64_t(rows.shape(1));
    if (D % f.dim_block != 0 || t0 % f.tokens_per_block != 0 || n % f.tokens_per_block != 0 || t0 < 0)
        throw InvalidArgument("gpu_host_kv_encode: head_dim, t0 or row count does not fit the format's blocks");
    if (energy && energy->size() != size_t(n * D)) throw InvalidArgument("gpu_host_kv_encode: energy must match rows");
    if (f.codebook_c > 0 && (!codebook || codebook->size() != size_t(D * 256)))
        throw InvalidArgument("gpu_host_kv_encode: " + name + " needs a codebook of head_dim * 256 floats");
    if (metric && metric->size() != size_t(D)) throw InvalidArgument("gpu_host_kv_encode: metric must hold head_dim");
    std::string raw(kv_stream_bytes(f, D, t0 + n), '\0');
    uint8_t* stream = reinterpret_cast<uint8_t*>(raw.data());
    const bool known = gpu::kv_encode_visit(gpu::kv_encode_kind(f.name), [&](auto tag) {
        host_encode<typename decltype(tag)::type>(rows.data(), n, D, t0, data_or_null(energy), data_or_null(codebook),
                                                  data_or_null(metric), stream);
    });
    if (!known) throw InvalidArgument("gpu_host_kv_encode: no GPU encoder for KV format '" + name + "'");
    return nb::bytes(raw.data(), raw.size());
}

// ---- one-layer store cases -----------------------------------------------------------------------

// A one-layer CPU cache (zeroed, so bytes no call writes compare equal) and the rows to store in it.
struct LayerCase {
    int64_t n = 0, n_head = 0, n_head_kv = 0, hd_k = 0, hd_v = 0;
    std::vector<int64_t> calls;
    std::vector<float> consts_store;  // codebooks and metrics the CPU cache points into
    std::unique_ptr<KVCache> cache;
    gpu::KVStoreTestInput input;
};

void add_stream_consts(const KVFormat& f, int64_t H, int64_t hd, const OptFloatArray& book, const OptFloatArray& metric,
                       const char* which, std::vector<float>& store, std::vector<std::pair<size_t, size_t>>& at) {
    if (f.codebook_c == 0) {
        for (int64_t h = 0; h < H; ++h) at.push_back({SIZE_MAX, SIZE_MAX});
        return;
    }
    const size_t per_head = size_t(hd * 256);
    if (!book || book->size() != size_t(H) * per_head)
        throw InvalidArgument(std::string(which) + "_codebook: expected n_head_kv * head_dim * 256 floats for " + f.name);
    if (metric && metric->size() != size_t(H * hd))
        throw InvalidArgument(std::string(which) + "_metric: expected n_head_kv * head_dim floats");
    for (int64_t h = 0; h < H; ++h) {
        const size_t b = store.size();
        store.insert(store.end(), book->data() + size_t(h) * per_head, book->data() + size_t(h + 1) * per_head);
        const size_t m = store.size();
        if (metric)
            store.insert(store.end(), metric->data() + h * hd, metric->data() + (h + 1) * hd);
        else
            store.insert(store.end(), size_t(hd), 1.0f);
        at.push_back({b, m});
    }
}

std::unique_ptr<LayerCase> layer_case(const std::string& kv_k, const std::string& kv_v, const FloatMatrix& k,
                                      const FloatMatrix& v, const OptFloatArray& q, int64_t n_head, int64_t n_head_kv,
                                      int64_t n_ctx, int64_t kv_window, const std::vector<int64_t>& calls,
                                      const OptFloatArray& k_codebook, const OptFloatArray& k_metric,
                                      const OptFloatArray& v_codebook, const OptFloatArray& v_metric) {
    auto lc = std::make_unique<LayerCase>();
    const KVFormat& kf = kv_format(kv_k);
    const KVFormat& vf = kv_format(kv_v);
    lc->n = int64_t(k.shape(0));
    if (n_head_kv <= 0 || n_head <= 0 || n_head % n_head_kv != 0 || k.shape(1) % size_t(n_head_kv) != 0 ||
        v.shape(1) % size_t(n_head_kv) != 0 || int64_t(v.shape(0)) != lc->n)
        throw InvalidArgument("gpu kv store hook: head counts do not divide the row widths");
    lc->n_head = n_head;
    lc->n_head_kv = n_head_kv;
    lc->hd_k = int64_t(k.shape(1)) / n_head_kv;
    lc->hd_v = int64_t(v.shape(1)) / n_head_kv;
    if (q && q->size() != size_t(lc->n * n_head * lc->hd_k))
        throw InvalidArgument("gpu kv store hook: q must hold n rows of n_head * head_dim_k");
    if (kf.wants_query_energy && !q) throw InvalidArgument("gpu kv store hook: " + kv_k + " keys need q");
    const std::vector<int64_t> call_rows = calls.empty() ? std::vector<int64_t>{lc->n} : calls;
    int64_t total = 0;
    for (int64_t c : call_rows) {
        if (c <= 0) throw InvalidArgument("gpu kv store hook: calls must be positive row counts");
        total += c;
    }
    if (total != lc->n) throw InvalidArgument("gpu kv store hook: calls must add up to the rows");
    lc->calls = call_rows;
    std::vector<std::pair<size_t, size_t>> at;
    add_stream_consts(kf, n_head_kv, lc->hd_k, k_codebook, k_metric, "k", lc->consts_store, at);
    add_stream_consts(vf, n_head_kv, lc->hd_v, v_codebook, v_metric, "v", lc->consts_store, at);
    KVCacheOptions options;
    options.window = kv_window;
    if (kf.codebook_c > 0 || vf.codebook_c > 0)
        for (const auto& [b, m] : at)
            options.consts.push_back(b == SIZE_MAX ? KVStreamConsts{}
                                                   : KVStreamConsts{lc->consts_store.data() + b,
                                                                    lc->consts_store.data() + m});
    lc->cache = std::make_unique<KVCache>(n_ctx, n_head_kv, lc->hd_k, lc->hd_v,
                                          std::vector<KVLayerFormats>{{&kf, &vf}}, options);
    std::memset(lc->cache->data(), 0, lc->cache->bytes_allocated());
    gpu::KVStoreTestInput& in = lc->input;
    in.k = k.data();
    in.v = v.data();
    in.q = kf.wants_query_energy ? data_or_null(q) : nullptr;
    in.n_head = n_head;
    in.calls = call_rows;
    in.k_codebooks = data_or_null(k_codebook);
    in.k_metrics = data_or_null(k_metric);
    in.v_codebooks = data_or_null(v_codebook);
    in.v_metrics = data_or_null(v_metric);
    return lc;
}

// KVCache::store of the case's rows, call by call; the layer's bytes.
nb::bytes cpu_store(LayerCase& lc) {
    ThreadPool pool(1);
    int64_t pos = 0;
    for (int64_t c : lc.calls) {
        lc.cache->store(0, pos, c, lc.input.k + pos * lc.n_head_kv * lc.hd_k, lc.input.v + pos * lc.n_head_kv * lc.hd_v,
                        lc.input.q ? lc.input.q + pos * lc.n_head * lc.hd_k : nullptr, lc.n_head, pool);
        pos += c;
    }
    return nb::bytes(reinterpret_cast<const char*>(lc.cache->data() + lc.cache->layer_offset(0)),
                     lc.cache->layer_bytes(0));
}

// The host twin of gpu_kv_store on a zeroed copy of the layer's bytes, call by call.
nb::bytes host_twin_store(const LayerCase& lc) {
    const KVCache& cache = *lc.cache;
    std::string bytes(cache.layer_bytes(0), '\0');
    int64_t pos = 0;
    for (int64_t c : lc.calls) {
        for (KVKind kind : {KVKind::K, KVKind::V}) {
            const bool is_k = kind == KVKind::K;
            const int64_t hd = is_k ? lc.hd_k : lc.hd_v;
            const KVFormat& f = cache.format(0, kind);
            const float* rows = (is_k ? lc.input.k : lc.input.v) + pos * lc.n_head_kv * hd;
            const float* q = is_k && lc.input.q ? lc.input.q + pos * lc.n_head * hd : nullptr;
            const gpu::KVStoreArgs a = gpu::kv_store_args(
                f, cache.stream_layout(0, kind),
                reinterpret_cast<uint8_t*>(bytes.data()) + cache.kind_offset_in_layer(0, kind),
                cache.head_stride(0, kind), hd, lc.n_head_kv, rows, lc.n_head_kv * hd, pos, c, q, lc.n_head,
                is_k ? lc.input.k_codebooks : lc.input.v_codebooks, is_k ? lc.input.k_metrics : lc.input.v_metrics);
            gpu::kv_store_host(f, a);
        }
        pos += c;
    }
    return nb::bytes(bytes.data(), bytes.size());
}

nb::tuple gpu_host_kv_store(const std::string& kv_k, const std::string& kv_v, const FloatMatrix& k,
                            const FloatMatrix& v, const OptFloatArray& q, int64_t n_head, int64_t n_head_kv,
                            int64_t n_ctx, int64_t kv_window, const std::vector<int64_t>& calls,
                            const OptFloatArray& k_codebook, const OptFloatArray& k_metric,
                            const OptFloatArray& v_codebook, const OptFloatArray& v_metric) {
    auto lc = layer_case(kv_k, kv_v, k, v, q, n_head, n_head_kv, n_ctx, kv_window, calls, k_codebook, k_metric,
                         v_codebook, v_metric);
    nb::bytes twin = host_twin_store(*lc);
    return nb::make_tuple(twin, cpu_store(*lc));
}

nb::tuple gpu_kv_store_test(const std::string& kv_k, const std::string& kv_v, const FloatMatrix& k,
                            const FloatMatrix& v, const OptFloatArray& q, int64_t n_head, int64_t n_head_kv,
                            int64_t n_ctx, int64_t kv_window, const std::vector<int64_t>& calls,
                            const OptFloatArray& k_codebook, const OptFloatArray& k_metric,
                            const OptFloatArray& v_codebook, const OptFloatArray& v_metric) {
#ifndef DECOLLAMA_WITH_CUDA
    throw std::runtime_error("decollama was built without CUDA");
#else
    auto lc = layer_case(kv_k, kv_v, k, v, q, n_head, n_head_kv, n_ctx, kv_window, calls, k_codebook, k_metric,
                         v_codebook, v_metric);
    std::string bytes(lc->cache->layer_bytes(0), '\0');
    {
        nb::gil_scoped_release no_gil;
        gpu::gpu_kv_store_test(*lc->cache, 0, lc->input, reinterpret_cast<uint8_t*>(bytes.data()));
    }
    return nb::make_tuple(nb::bytes(bytes.data(), bytes.size()), cpu_store(*lc));
#endif
}

#define DECOLLAMA_STORE_ARGS_DOC                                                                                 \
    "kv_k / kv_v: formats of a one-layer cache of n_ctx positions, n_head_kv heads, kv_window; k, v: float32 [n, "  \
    "n_head_kv * head_dim] stored from position 0 in calls of the given row counts (empty: one call); q: [n, "        \
    "n_head * head_dim_k] (keys that fit to queries); codebooks [n_head_kv, head_dim / c, 256, c], metrics "          \
    "[n_head_kv, head_dim]. Returns (bytes under test, bytes KVCache::store wrote) of the layer, both zeroed first."

}  // namespace

void bind_gpu_kv_store(nb::module_& m) {
    m.def("gpu_host_kv_encode", &gpu_host_kv_encode, "format"_a, "rows"_a, "t0"_a = 0, "energy"_a = nb::none(),
          "codebook"_a = nb::none(), "metric"_a = nb::none(),
          "Test hook: the GPU encoders' DL_HD block math on the host (cuda/kv_encode_device.h), as kv_codec_append "
          "takes it: rows float32 [n, D] as tokens [t0, t0 + n) of a fresh stream -> the stream bytes.");
    m.def("gpu_host_kv_store", &gpu_host_kv_store, "kv_k"_a, "kv_v"_a, "k"_a, "v"_a, "q"_a = nb::none(),
          "n_head"_a = 1, "n_head_kv"_a = 1, "n_ctx"_a = 1024, "kv_window"_a = 0, "calls"_a = std::vector<int64_t>{},
          "k_codebook"_a = nb::none(), "k_metric"_a = nb::none(), "v_codebook"_a = nb::none(),
          "v_metric"_a = nb::none(),
          "Test hook: gpu_kv_store's work items run on the host (cuda/kv_store_device.h). " DECOLLAMA_STORE_ARGS_DOC);
    m.def("gpu_kv_store_test", &gpu_kv_store_test, "kv_k"_a, "kv_v"_a, "k"_a, "v"_a, "q"_a = nb::none(),
          "n_head"_a = 1, "n_head_kv"_a = 1, "n_ctx"_a = 1024, "kv_window"_a = 0, "calls"_a = std::vector<int64_t>{},
          "k_codebook"_a = nb::none(), "k_metric"_a = nb::none(), "v_codebook"_a = nb::none(),
          "v_metric"_a = nb::none(),
          "Test hook: gpu_kv_store on the GPU (RuntimeError without CUDA or a GPU). " DECOLLAMA_STORE_ARGS_DOC);
}

}  // namespace decollama::py
