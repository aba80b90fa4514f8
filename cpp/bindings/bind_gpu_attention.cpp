// Test hooks of the GPU split-K attention (cuda/gpu_attention.cu) on a one-layer KVCache filled
// by the CPU writer:
//   gpu_host_attention   every build: the kernels' structure (chunks of 256-position tiles, a warp's
//                        lanes per key score, per-tile softmax fold, deco basis per block, chunk
//                        merge) emulated on the host with the same DL_HD functions
//   gpu_attention_test   CUDA builds with a GPU: the kernels on a device copy of the cache
//   gpu_attention_bench  decode attention timed on the GPU, bytes read and bandwidth
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "common/cpu_features.h"
#include "common/error.h"
#include "common/thread_pool.h"
#include "cuda/attention_split_device.h"
#include "cuda/kv_device_formats.h"
#include "kv/kv_cache.h"
#if defined(DECOLLAMA_WITH_CUDA)
#include "cuda/gpu_attention_hooks.h"
#endif

namespace nb = nanobind;
using namespace nb::literals;

namespace decollama::py {

namespace {

using FloatMatrix = nb::ndarray<const float, nb::ndim<2>, nb::c_contig, nb::device::cpu>;
using FloatArray = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using OptFloatArray = std::optional<FloatArray>;

template <class T>
nb::ndarray<nb::numpy, T> owned_array(std::vector<T> v, std::initializer_list<size_t> shape) {
    std::unique_ptr<T[]> data(new T[std::max<size_t>(1, v.size())]);
    std::copy(v.begin(), v.end(), data.get());
    nb::capsule owner(data.get(), [](void* p) noexcept { delete[] static_cast<T*>(p); });
    return nb::ndarray<nb::numpy, T>(data.release(), shape, owner);
}

// ---- the host emulation of the kernels -----------------------------------------------------------

// What __shfl_xor_sync sums leave in lane 0 for per-lane values v[32].
float lane_tree_sum(float* v) {
    for (int off = 16; off > 0; off /= 2) {
        float w[gpu::kScoreLanes];
        for (int l = 0; l < gpu::kScoreLanes; ++l) w[l] = v[l] + v[l ^ off];
        std::copy_n(w, gpu::kScoreLanes, v);
    }
    return v[0];
}

struct EmulationArgs {
    const float* q;
    gpu::SplitPlan plan;
    gpu::SplitStream k, v;
    int64_t n_head, n_head_kv;
};

// The Hadamard stages over n_rows rows of D floats, as block_wht64 runs them.
void host_wht64(float* y, int n_rows, int D) {
    for (int h = 1; h < gpu::DecoKv::kGroup; h *= 2)
        for (int x = 0; x < n_rows * D / 2; ++x) gpu::wht64_butterfly(y + (x / (D / 2)) * D, h, x % (D / 2));
}

// split_attention<KF, VF> for one (query token i, KV head g, chunk c): writes the normalised
// output (one chunk) or the partial state.
template <class KF, class VF>
void emulate_block(const EmulationArgs& a, int64_t i, int64_t g, int64_t c, float* out, float* partial, float* ml) {
    using namespace gpu;
    const int hd_k = a.k.head_dim, hd_v = a.v.head_dim;
    const int n_gqa = int(a.n_head / a.n_head_kv);
    const int64_t n_chunks = a.plan.n_chunks;
    int64_t tile_begin, tile_end;
    chunk_tiles(a.plan, i, c, &tile_begin, &tile_end);
    const int64_t state0 = (i * a.n_head + g * n_gqa) * n_chunks + c;
    if (tile_begin >= tile_end) {
        for (int h = 0; h < n_gqa; ++h) {
            ml[2 * (state0 + h * n_chunks)] = -INFINITY;
            ml[2 * (state0 + h * n_chunks) + 1] = 0.0f;
        }
        return;
    }
    int64_t lo, hi;
    query_keys(a.plan, i, &lo, &hi);
    const HeadStream ks = head_stream(a.k, g), vs = head_stream(a.v, g);
    const float* sq = a.q + (i * a.n_head + g * n_gqa) * hd_k;
    std::vector<float> sbuf(size_t(n_gqa * std::max(hd_k, hd_v))), sp(size_t(n_gqa * kAttnTile));
    std::vector<float> s_max(size_t(n_gqa), -INFINITY), s_sum(size_t(n_gqa), 0.0f), s_bias(size_t(n_gqa), 0.0f);
    std::vector<float> acc(size_t(n_gqa * hd_v), 0.0f), acc_basis(acc.size(), 0.0f);
    float lanes[kScoreLanes];

    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
        const int64_t t0 = std::max(lo, tile * kAttnTile), t1 = std::min(hi + 1, (tile + 1) * kAttnTile);
        const int n = int(t1 - t0);
        if constexpr (KF::kBlockBasis) {
            int64_t b0, b1;
            block_part(ks, t0, t1, &b0, &b1);
            if (b0 < b1) {
                const uint8_t* block = KF::block(ks.blocks, ks.geometry, b0);
                for (int x = 0; x < n_gqa * hd_k; ++x) sbuf[size_t(x)] = KF::prepare_scale(block, hd_k, x % hd_k, sq[x]);
                for (int h = 0; h < n_gqa; ++h) {
                    for (int l = 0; l < kScoreLanes; ++l) {
                        lanes[l] = 0.0f;
                        for (int e = l; e < hd_k; e += kScoreLanes) lanes[l] += sq[h * hd_k + e] * KF::mean(block, e);
                    }
                    s_bias[size_t(h)] = lane_tree_sum(lanes);
                }
                host_wht64(sbuf.data(), n_gqa, hd_k);
            }
        }
        for (int j = 0; j < n; ++j) {
            const KeyRow r = locate<KF>(ks, t0 + j);
            float part[kScoreLanes][kMaxGqa];
            for (int l = 0; l < kScoreLanes; ++l) score_lane<KF>(r, ks.geometry, sq, sbuf.data(), n_gqa, l, part[l]);
            const bool basis = KF::kBlockBasis && !r.fp16;
            for (int h = 0; h < n_gqa; ++h) {
                for (int l = 0; l < kScoreLanes; ++l) lanes[l] = part[l][h];
                const float s = lane_tree_sum(lanes);
                sp[size_t(h * kAttnTile + j)] = basis ? s + s_bias[size_t(h)] : s;
            }
        }
        int64_t vb0 = 0, vb1 = 0;
        if constexpr (VF::kBlockBasis) block_part(vs, t0, t1, &vb0, &vb1);
        std::vector<float> scale(static_cast<size_t>(n_gqa)), psum(static_cast<size_t>(n_gqa));
        for (int h = 0; h < n_gqa; ++h) {
            float* s = sp.data() + h * kAttnTile;
            const float m = *std::max_element(s, s + n);
            const float old_max = s_max[size_t(h)], new_max = std::max(old_max, m);
            float sums[kScoreLanes] = {}, psums[kScoreLanes] = {};
            for (int j = 0; j < n; ++j) {
                const float p = std::exp(s[j] - new_max);
                s[j] = p;
                sums[j % kScoreLanes] += p;
                if (t0 + j >= vb0 && t0 + j < vb1) psums[j % kScoreLanes] += p;
            }
            scale[size_t(h)] = softmax_rescale(old_max, new_max);
            s_sum[size_t(h)] = s_sum[size_t(h)] * scale[size_t(h)] + lane_tree_sum(sums);
            s_max[size_t(h)] = new_max;
            psum[size_t(h)] = lane_tree_sum(psums);
        }
        for (int h = 0; h < n_gqa; ++h)
            for (int e = 0; e < hd_v; ++e) acc[size_t(h * hd_v + e)] *= scale[size_t(h)];
        for (int j = 0; j < n; ++j) {
            const KeyRow r = locate<VF>(vs, t0 + j);
            float* dst = (VF::kBlockBasis && !r.fp16) ? acc_basis.data() : acc.data();
            for (int e = 0; e < hd_v; ++e) {
                const float v = row_value<VF>(r, vs.geometry, e);
                for (int h = 0; h < n_gqa; ++h) dst[h * hd_v + e] += sp[size_t(h * kAttnTile + j)] * v;
            }
        }
        if constexpr (VF::kBlockBasis) {
            if (vb0 < vb1) {
                std::copy(acc_basis.begin(), acc_basis.end(), sbuf.begin());
                std::fill(acc_basis.begin(), acc_basis.end(), 0.0f);
                host_wht64(sbuf.data(), n_gqa, hd_v);
                const uint8_t* block = VF::block(vs.blocks, vs.geometry, vb0);
                for (int h = 0; h < n_gqa; ++h)
                    for (int e = 0; e < hd_v; ++e)
                        acc[size_t(h * hd_v + e)] += VF::finalize(block, hd_v, e, sbuf[size_t(h * hd_v + e)], psum[size_t(h)]);
            }
        }
    }
    for (int h = 0; h < n_gqa; ++h) {
        for (int e = 0; e < hd_v; ++e) {
            if (n_chunks == 1)
                out[(i * a.n_head + g * n_gqa + h) * hd_v + e] = acc[size_t(h * hd_v + e)] / s_sum[size_t(h)];
            else
                partial[(state0 + h * n_chunks) * hd_v + e] = acc[size_t(h * hd_v + e)];
        }
        if (n_chunks > 1) {
            ml[2 * (state0 + h * n_chunks)] = s_max[size_t(h)];
            ml[2 * (state0 + h * n_chunks) + 1] = s_sum[size_t(h)];
        }
    }
}

// Both kernels of a run, emulated: the grid of split_attention, then merge_chunks.
template <class KF, class VF>
void emulate_run(const EmulationArgs& a, float* out) {
    const int64_t n_chunks = a.plan.n_chunks, rows = a.plan.n_tokens * a.n_head;
    const int hd_v = a.v.head_dim;
    std::vector<float> partial(size_t(rows * n_chunks * hd_v)), ml(size_t(rows * n_chunks * 2));
    for (int64_t i = 0; i < a.plan.n_tokens; ++i)
        for (int64_t g = 0; g < a.n_head_kv; ++g)
            for (int64_t c = 0; c < n_chunks; ++c) emulate_block<KF, VF>(a, i, g, c, out, partial.data(), ml.data());
    if (n_chunks == 1) return;
    for (int64_t row = 0; row < rows; ++row)
        for (int e = 0; e < hd_v; ++e)
            out[row * hd_v + e] = gpu::merge_element(ml.data() + 2 * row * n_chunks,
                                                     partial.data() + row * n_chunks * hd_v, n_chunks, hd_v, e);
}

// The device copies of a layer's cq codebooks: per head back to back.
std::vector<float> codebooks(const KVCache& cache, int64_t layer, KVKind kind) {
    std::vector<float> books;
    if (cache.format(layer, kind).codebook_c == 0) return books;
    const int64_t hd = kind == KVKind::K ? cache.head_dim_k() : cache.head_dim_v();
    for (int64_t h = 0; h < cache.n_head_kv(); ++h) {
        const float* b = cache.stream_consts(layer, kind, h).codebook;
        books.insert(books.end(), b, b + hd * 256);
    }
    return books;
}

// max_chunks 0: as a GpuAttention sized for n_tokens x n_stored would split.
int64_t effective_max_chunks(int64_t max_chunks, int64_t n_tokens, int64_t n_stored) {
    if (max_chunks > 0) return std::min(max_chunks, gpu::kMaxChunks);
    return gpu::split_max_chunks(gpu::split_rows_per_head(n_tokens, n_stored), n_tokens);
}

std::vector<float> host_split_attention(const KVCache& cache, int64_t layer, const float* q, int64_t n_tokens,
                                        int64_t pos0, int64_t n_head, int64_t attn_window, int64_t max_chunks,
                                        int64_t* n_chunks) {
    const KVFormat& kf = cache.k_format(layer);
    const KVFormat& vf = cache.v_format(layer);
    const gpu::GpuKvFormatRow& krow = gpu::gpu_kv_format(kf.name);
    const gpu::GpuKvFormatRow& vrow = gpu::gpu_kv_format(vf.name);
    if (n_head % cache.n_head_kv() != 0 || n_head / cache.n_head_kv() > gpu::kMaxGqa)
        throw InvalidArgument("gpu_host_attention: n_head must be a multiple of n_head_kv, at most " +
                              std::to_string(gpu::kMaxGqa) + " query heads per KV head");
    const int64_t n_stored = pos0 + n_tokens;
    const std::vector<float> k_books = codebooks(cache, layer, KVKind::K), v_books = codebooks(cache, layer, KVKind::V);
    const uint8_t* base = cache.data() + cache.layer_offset(layer);
    EmulationArgs a{};
    a.q = q;
    a.plan = gpu::make_split_plan(pos0, n_tokens, attn_window, effective_max_chunks(max_chunks, n_tokens, n_stored));
    a.k = gpu::split_stream(kf, krow, base + cache.kind_offset_in_layer(layer, KVKind::K),
                            cache.head_stride(layer, KVKind::K), cache.stream_layout(layer, KVKind::K),
                            cache.head_dim_k(), k_books.empty() ? nullptr : k_books.data(), n_stored, cache.window());
    a.v = gpu::split_stream(vf, vrow, base + cache.kind_offset_in_layer(layer, KVKind::V),
                            cache.head_stride(layer, KVKind::V), cache.stream_layout(layer, KVKind::V),
                            cache.head_dim_v(), v_books.empty() ? nullptr : v_books.data(), n_stored, cache.window());
    a.n_head = n_head;
    a.n_head_kv = cache.n_head_kv();
    std::vector<float> out(size_t(n_tokens * n_head * cache.head_dim_v()));
    gpu::with_kv_family(krow.family, [&](auto k_family) {
        gpu::with_kv_family(vrow.family, [&](auto v_family) {
            emulate_run<decltype(k_family), decltype(v_family)>(a, out.data());
        });
    });
    *n_chunks = a.plan.n_chunks;
    return out;
}

// ---- a one-layer cache filled by the CPU writer ----------------------------------------------

// The cache and the stream constants it points into (codebooks [n_head_kv, G, 256, c], metrics
// [n_head_kv, D]; metric None: 1).
struct HookCache {
    std::vector<float> store;
    std::unique_ptr<KVCache> cache;
};

// A codebook / metric array as the hooks take it: data and size (null when absent).
struct ConstArray {
    const float* data = nullptr;
    size_t size = 0;
};

ConstArray const_array(const OptFloatArray& a) { return a ? ConstArray{a->data(), a->size()} : ConstArray{}; }

void add_consts(const KVFormat& f, int64_t n_head_kv, int64_t hd, ConstArray book, ConstArray metric,
                const char* which, std::vector<float>& store, std::vector<std::pair<size_t, size_t>>& offsets) {
    for (int64_t h = 0; h < n_head_kv; ++h) {
        if (f.codebook_c == 0) {
            offsets.push_back({SIZE_MAX, SIZE_MAX});
            continue;
        }
        const size_t per_head = size_t(hd * 256);
        if (book.data == nullptr || book.size != size_t(n_head_kv) * per_head)
            throw InvalidArgument(std::string(which) + "_codebook: expected n_head_kv * head_dim * 256 floats for " +
                                  f.name);
        if (metric.data != nullptr && metric.size != size_t(n_head_kv * hd))
            throw InvalidArgument(std::string(which) + "_metric: expected n_head_kv * head_dim floats");
        const size_t at = store.size();
        store.insert(store.end(), book.data + size_t(h) * per_head, book.data + size_t(h + 1) * per_head);
        const size_t mat = store.size();
        if (metric.data != nullptr)
            store.insert(store.end(), metric.data + h * hd, metric.data + (h + 1) * hd);
        else
            store.insert(store.end(), size_t(hd), 1.0f);
        offsets.push_back({at, mat});
    }
}

// Stores k and v (n_kv rows, heads side by side) append_batch rows at a time (0: all at once);
// q_cache: the queries of every position, for key formats fitted to them.
HookCache fill_cache(const float* k, const float* v, int64_t n_kv, int64_t n_head, int64_t n_head_kv, int64_t hd_k,
                     int64_t hd_v, const std::string& kv_k, const std::string& kv_v, int64_t append_batch,
                     int64_t kv_window, const float* q_cache, ConstArray k_codebook, ConstArray k_metric,
                     ConstArray v_codebook, ConstArray v_metric, ThreadPool& pool) {
    const KVFormat& kf = kv_format(kv_k);
    const KVFormat& vf = kv_format(kv_v);
    if (kf.wants_query_energy && q_cache == nullptr) throw InvalidArgument(kv_k + " keys need q_cache");
    HookCache hc;
    std::vector<std::pair<size_t, size_t>> offsets;
    add_consts(kf, n_head_kv, hd_k, k_codebook, k_metric, "k", hc.store, offsets);
    add_consts(vf, n_head_kv, hd_v, v_codebook, v_metric, "v", hc.store, offsets);
    KVCacheOptions options;
    options.window = kv_window;
    if (kf.codebook_c > 0 || vf.codebook_c > 0)
        for (const auto& [book, metric] : offsets)
            options.consts.push_back(book == SIZE_MAX ? KVStreamConsts{}
                                                      : KVStreamConsts{hc.store.data() + book, hc.store.data() + metric});
    hc.cache = std::make_unique<KVCache>(n_kv, n_head_kv, hd_k, hd_v, std::vector<KVLayerFormats>{{&kf, &vf}}, options);
    const int64_t batch = append_batch > 0 ? append_batch : n_kv;
    for (int64_t t = 0; t < n_kv; t += batch) {
        const int64_t n = std::min(batch, n_kv - t);
        hc.cache->store(0, t, n, k + t * n_head_kv * hd_k, v + t * n_head_kv * hd_v,
                        q_cache ? q_cache + t * n_head * hd_k : nullptr, n_head, pool);
    }
    return hc;
}

// The cache as attention reads it: [n_kv, n_head_kv * head_dim] for K or V.
std::vector<float> read_back(const KVCache& cache, KVKind kind) {
    const int64_t n = cache.n_stored(), hkv = cache.n_head_kv();
    const int64_t hd = kind == KVKind::K ? cache.head_dim_k() : cache.head_dim_v();
    std::vector<float> rows(size_t(n * hd)), out(size_t(n * hkv * hd));
    for (int64_t h = 0; h < hkv; ++h) {
        cache.read(0, kind, h, 0, n, rows.data());
        for (int64_t t = 0; t < n; ++t) std::copy_n(rows.data() + t * hd, hd, out.data() + (t * hkv + h) * hd);
    }
    return out;
}

enum class Runner { Host, Gpu };

// Fills a one-layer cache with k, v and attends with the last len(q) positions' queries; returns
// (out, k as read, v as read, chunks per query token).
nb::tuple attention_hook(Runner runner, const FloatMatrix& q, const FloatMatrix& k, const FloatMatrix& v,
                         int64_t n_head, int64_t n_head_kv, const std::string& kv_k, const std::string& kv_v,
                         int64_t window, int64_t append_batch, int64_t kv_window, const OptFloatArray& q_cache,
                         const OptFloatArray& k_codebook, const OptFloatArray& k_metric,
                         const OptFloatArray& v_codebook, const OptFloatArray& v_metric, int64_t max_chunks) {
#if !defined(DECOLLAMA_WITH_CUDA)
    if (runner == Runner::Gpu) throw std::runtime_error("decollama was built without CUDA");
#endif
    const int64_t n_q = int64_t(q.shape(0)), n_kv = int64_t(k.shape(0));
    if (n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv != 0 || q.shape(1) % size_t(n_head) != 0 ||
        k.shape(1) % size_t(n_head_kv) != 0 || v.shape(1) % size_t(n_head_kv) != 0)
        throw InvalidArgument("gpu attention hook: head counts do not divide the row widths");
    const int64_t hd_k = int64_t(k.shape(1)) / n_head_kv, hd_v = int64_t(v.shape(1)) / n_head_kv;
    if (int64_t(v.shape(0)) != n_kv || int64_t(q.shape(1)) != n_head * hd_k || n_q > n_kv || n_q == 0 ||
        append_batch < 0 || max_chunks < 0)
        throw InvalidArgument("gpu attention hook: inconsistent shapes or arguments");
    if (q_cache && q_cache->size() != size_t(n_kv * n_head * hd_k))
        throw InvalidArgument("gpu attention hook: q_cache must hold n_kv query rows");
    gpu::gpu_kv_format(kv_k), gpu::gpu_kv_format(kv_v);  // unsupported formats fail before the work
    std::vector<float> out, k_read, v_read;
    int64_t n_chunks = 0;
    {
        nb::gil_scoped_release no_gil;
        ThreadPool pool(1);
        HookCache hc = fill_cache(k.data(), v.data(), n_kv, n_head, n_head_kv, hd_k, hd_v, kv_k, kv_v, append_batch,
                                  kv_window, q_cache ? q_cache->data() : nullptr, const_array(k_codebook),
                                  const_array(k_metric), const_array(v_codebook), const_array(v_metric), pool);
        if (runner == Runner::Host) {
            out = host_split_attention(*hc.cache, 0, q.data(), n_q, n_kv - n_q, n_head, window, max_chunks, &n_chunks);
        } else {
#if defined(DECOLLAMA_WITH_CUDA)
            gpu::GpuAttentionResult r =
                gpu::gpu_attention_test(*hc.cache, 0, q.data(), n_q, n_kv - n_q, n_head, window, max_chunks);
            out = std::move(r.out);
            n_chunks = r.n_chunks;
#endif
        }
        k_read = read_back(*hc.cache, KVKind::K);
        v_read = read_back(*hc.cache, KVKind::V);
    }
    return nb::make_tuple(owned_array(std::move(out), {size_t(n_q), size_t(n_head * hd_v)}),
                          owned_array(std::move(k_read), {size_t(n_kv), size_t(n_head_kv * hd_k)}),
                          owned_array(std::move(v_read), {size_t(n_kv), size_t(n_head_kv * hd_v)}), n_chunks);
}

nb::tuple gpu_host_attention(const FloatMatrix& q, const FloatMatrix& k, const FloatMatrix& v, int64_t n_head,
                             int64_t n_head_kv, const std::string& kv_k, const std::string& kv_v, int64_t window,
                             int64_t append_batch, int64_t kv_window, const OptFloatArray& q_cache,
                             const OptFloatArray& k_codebook, const OptFloatArray& k_metric,
                             const OptFloatArray& v_codebook, const OptFloatArray& v_metric, int64_t max_chunks) {
    return attention_hook(Runner::Host, q, k, v, n_head, n_head_kv, kv_k, kv_v, window, append_batch, kv_window,
                          q_cache, k_codebook, k_metric, v_codebook, v_metric, max_chunks);
}

nb::tuple gpu_attention_test(const FloatMatrix& q, const FloatMatrix& k, const FloatMatrix& v, int64_t n_head,
                             int64_t n_head_kv, const std::string& kv_k, const std::string& kv_v, int64_t window,
                             int64_t append_batch, int64_t kv_window, const OptFloatArray& q_cache,
                             const OptFloatArray& k_codebook, const OptFloatArray& k_metric,
                             const OptFloatArray& v_codebook, const OptFloatArray& v_metric, int64_t max_chunks) {
    return attention_hook(Runner::Gpu, q, k, v, n_head, n_head_kv, kv_k, kv_v, window, append_batch, kv_window,
                          q_cache, k_codebook, k_metric, v_codebook, v_metric, max_chunks);
}

// Decode attention at `depth` over a synthetic cache (random rows through the CPU writer, random
// cq codebooks), timed on the GPU.
nb::dict gpu_attention_bench(const std::string& kv_k, const std::string& kv_v, int64_t depth, int64_t n_head,
                             int64_t n_head_kv, int64_t head_dim, int iters, int64_t kv_window) {
#if !defined(DECOLLAMA_WITH_CUDA)
    throw std::runtime_error("decollama was built without CUDA");
#else
    if (depth <= 0 || n_head <= 0 || n_head_kv <= 0 || n_head % n_head_kv != 0 || head_dim <= 0 || iters <= 0)
        throw InvalidArgument("gpu_attention_bench: depth, heads, head_dim and iters must be > 0");
    gpu::gpu_kv_format(kv_k), gpu::gpu_kv_format(kv_v);
    gpu::GpuAttentionBenchResult r;
    {
        nb::gil_scoped_release no_gil;
        std::mt19937 gen(1234);
        std::normal_distribution<float> normal(0.0f, 1.0f);
        const auto randn = [&](size_t n, float scale) {
            std::vector<float> x(n);
            for (float& e : x) e = normal(gen) * scale;
            return x;
        };
        const std::vector<float> k = randn(size_t(depth * n_head_kv * head_dim), 1.0f);
        const std::vector<float> v = randn(size_t(depth * n_head_kv * head_dim), 1.0f);
        const std::vector<float> q_cache = randn(size_t(depth * n_head * head_dim), 1.0f / std::sqrt(float(head_dim)));
        const std::vector<float> book = randn(size_t(n_head_kv * head_dim * 256), 1.0f);
        const ConstArray books{book.data(), book.size()};
        ThreadPool pool(0);
        HookCache hc = fill_cache(k.data(), v.data(), depth, n_head, n_head_kv, head_dim, head_dim, kv_k, kv_v, 4096,
                                  kv_window, q_cache.data(), books, {}, books, {}, pool);
        r = gpu::gpu_attention_bench(*hc.cache, q_cache.data() + (depth - 1) * n_head * head_dim, n_head, iters);
    }
    nb::dict d;
    d["median_us"] = r.median_us;
    d["bytes_read"] = r.bytes_read;
    d["gbps"] = r.gbps;
    d["peak_gbps"] = r.peak_gbps;
    return d;
#endif
}

}  // namespace

void bind_gpu_attention(nb::module_& m) {
    m.def("gpu_host_attention", &gpu_host_attention, "q"_a, "k"_a, "v"_a, "n_head"_a, "n_head_kv"_a,
          "kv_k"_a = "f16", "kv_v"_a = "f16", "window"_a = 0, "append_batch"_a = 0, "kv_window"_a = 0,
          "q_cache"_a = nb::none(), "k_codebook"_a = nb::none(), "k_metric"_a = nb::none(),
          "v_codebook"_a = nb::none(), "v_metric"_a = nb::none(), "max_chunks"_a = 0,
          "Test hook (every build): the GPU split-K attention's kernels emulated on the host with their DL_HD "
          "functions, over a one-layer cache holding k and v (as kv_attention); the queries are the last len(q) "
          "positions. max_chunks 0: the split GpuAttention picks. Returns (out, k as read, v as read, chunks per "
          "query token).");
    m.def("gpu_attention_test", &gpu_attention_test, "q"_a, "k"_a, "v"_a, "n_head"_a, "n_head_kv"_a,
          "kv_k"_a = "f16", "kv_v"_a = "f16", "window"_a = 0, "append_batch"_a = 0, "kv_window"_a = 0,
          "q_cache"_a = nb::none(), "k_codebook"_a = nb::none(), "k_metric"_a = nb::none(),
          "v_codebook"_a = nb::none(), "v_metric"_a = nb::none(), "max_chunks"_a = 0,
          "Test hook: gpu_host_attention's inputs through the CUDA kernels on a device copy of the cache "
          "(RuntimeError without CUDA or a GPU). Returns (out, k as read, v as read, chunks per query token).");
    m.def("gpu_attention_bench", &gpu_attention_bench, "kv_k"_a, "kv_v"_a, "depth"_a, "n_head"_a = 4,
          "n_head_kv"_a = 1, "head_dim"_a = 256, "iters"_a = 50, "kv_window"_a = 0,
          "Decode attention (1 query token at position depth - 1) over a synthetic one-layer cache of `depth` "
          "positions, timed with CUDA events -> dict(median_us, bytes_read (compressed K and V bytes read), gbps, "
          "peak_gbps (2 * memory clock * bus width / 8)). RuntimeError without CUDA or a GPU.");
}

}  // namespace decollama::py
