// cq4 / cq2 / cq1 KV formats: Coupled Quantization. c contiguous channels of a row share one
// 8-bit code, the index of the nearest of 256 centroids (per layer, K or V, KV head and group
// of c channels) in a per-channel metric; cq4 = 2 channels per code (4 bits per element), cq2
// = 4 (2 bits), cq1 = 8 (1 bit). Keys are stored after RoPE; codebooks come from
// decollama-calibrate (kv_codebooks.h). Layout and kernels: kv_cq_simd.h, cpp/kv/README.md.
#include <algorithm>
#include <limits>
#include <vector>

#include "common/error.h"
#include "kv/kv_cq_simd.h"
#include "kv/kv_format.h"

namespace decollama {

namespace {

// Keeps a product out of a fused multiply-add with the sum it feeds (the reference rounds
// both). Baseline x86-64 has no FMA, so only other targets need the barrier.
inline float no_fuse(float v) {
#if defined(__GNUC__) && defined(__x86_64__) && defined(__FMA__)
    __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__("" : "+w"(v));
#endif
    return v;
}

void nearest_scalar(const float* x, int64_t n, int64_t x_stride, int64_t c, const float* ct, int64_t ldk, int64_t K,
                    const float* m, int32_t* label, float* dist) {
    for (int64_t p = 0; p < n; ++p, x += x_stride) {
        float best = std::numeric_limits<float>::infinity();
        int32_t best_k = 0;
        for (int64_t k = 0; k < K; ++k) {
            float d = 0.0f;
            for (int64_t i = 0; i < c; ++i) {
                const float t = x[i] - ct[i * ldk + k];
                d = d + no_fuse(m[i] * (t * t));
            }
            if (d < best) {
                best = d;
                best_k = int32_t(k);
            }
        }
        label[p] = best_k;
        if (dist != nullptr) dist[p] = best;
    }
}

// The path the encoder runs on (every path gives the same codes; this one is the fastest,
// or DECOLLAMA_CPU's).
CpuPath encode_path() {
    static const CpuPath path = [] {
        try {
            return default_cpu_path();
        } catch (const InvalidArgument&) {
            return best_cpu_path(detect_cpu_features());
        }
    }();
    return path;
}

// consts.codebook_t, or a transposed copy in `local` when the caller has none.
const float* transposed(const KVStreamConsts& consts, int64_t head_dim, int64_t c, std::vector<float>& local) {
    if (consts.codebook_t != nullptr) return consts.codebook_t;
    local.resize(size_t(head_dim * kCqCentroids));
    cq_transpose_codebook(consts.codebook, head_dim, c, local.data());
    return local.data();
}

void encode_rows(const float* rows, int64_t row_stride, int64_t n, int64_t head_dim, int64_t c,
                 const KVStreamConsts& consts, CpuPath path, uint8_t* codes) {
    constexpr int64_t kRows = 64;  // rows per pass over a group's centroids (they stay in L1)
    const int64_t G = head_dim / c;
    std::vector<float> local_t, ones;
    const float* ct = transposed(consts, head_dim, c, local_t);
    const float* metric = consts.metric;
    if (metric == nullptr) {
        ones.assign(size_t(head_dim), 1.0f);
        metric = ones.data();
    }
    const CqNearestFn nearest = cq_nearest_for(path);
    int32_t labels[kRows];
    for (int64_t r0 = 0; r0 < n; r0 += kRows) {
        const int64_t nr = std::min(kRows, n - r0);
        for (int64_t g = 0; g < G; ++g) {
            nearest(rows + r0 * row_stride + g * c, nr, row_stride, c, ct + g * c * kCqCentroids, kCqCentroids,
                    kCqCentroids, metric + g * c, labels, nullptr);
            for (int64_t j = 0; j < nr; ++j) codes[(r0 + j) * G + g] = uint8_t(labels[j]);
        }
    }
}

void table_scalar(const float* q, int64_t head_dim, int64_t c, const float* ct, float* table) {
    const int64_t G = head_dim / c;
    for (int64_t g = 0; g < G; ++g)
        for (int64_t k = 0; k < kCqCentroids; ++k) {
            float s = 0.0f;
            for (int64_t i = 0; i < c; ++i) s = s + no_fuse(q[g * c + i] * ct[(g * c + i) * kCqCentroids + k]);
            table[g * kCqCentroids + k] = s;
        }
}

template <int C>
size_t block_bytes(int64_t head_dim) {
    return size_t(head_dim / C);
}

template <int C>
void append(const float* rows, int64_t row_stride, int64_t n, uint8_t* stream, int64_t head_dim, int64_t t,
            const float*, const KVStreamConsts& consts) {
    encode_rows(rows, row_stride, n, head_dim, C, consts, encode_path(), stream + t * (head_dim / C));
}

template <int C>
void read(const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out, const KVStreamConsts& consts) {
    const int64_t G = head_dim / C;
    const uint8_t* codes = stream + t * G;
    for (int64_t j = 0; j < n; ++j)
        for (int64_t g = 0; g < G; ++g)
            std::copy_n(consts.codebook + (g * kCqCentroids + codes[j * G + g]) * C, C, out + j * head_dim + g * C);
}

template <int C>
size_t query_bytes(int64_t head_dim) {
    return size_t(head_dim / C * kCqCentroids) * sizeof(float);
}

template <int C>
void prepare_query(const float* q, int64_t head_dim, CpuPath path, uint8_t* out, const KVStreamConsts& consts) {
    std::vector<float> local_t;
    const float* ct = transposed(consts, head_dim, C, local_t);
    float* table = reinterpret_cast<float*>(out);
#if defined(DECOLLAMA_X86)
    if (path == CpuPath::AVX512) return cq_table_avx512(q, head_dim, C, ct, table);
    if (path == CpuPath::AVX2) return cq_table_avx2(q, head_dim, C, ct, table);
#endif
    table_scalar(q, head_dim, C, ct, table);
}

template <int C>
void scores_scalar(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s,
                   const KVStreamConsts&) {
    const float* table = static_cast<const float*>(q);
    const int64_t G = head_dim / C;
    const uint8_t* codes = stream + t * G;
    for (int64_t j = 0; j < n; ++j, codes += G) {
        float sum = 0.0f;
        for (int64_t g = 0; g < G; ++g) sum += table[g * kCqCentroids + codes[g]];
        s[j] = sum;
    }
}

template <int C>
void accumulate_scalar(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out,
                       const KVStreamConsts& consts) {
    const int64_t G = head_dim / C;
    const uint8_t* codes = stream + t * G;
    for (int64_t j = 0; j < n; ++j, codes += G)
        for (int64_t g = 0; g < G; ++g) {
            const float* v = consts.codebook + (g * kCqCentroids + codes[g]) * C;
            for (int i = 0; i < C; ++i) out[g * C + i] += p[j] * v[i];
        }
}

#if defined(DECOLLAMA_X86)
template <int C>
void scores_avx2(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s,
                 const KVStreamConsts&) {
    cq_scores_avx2(static_cast<const float*>(q), stream, head_dim / C, t, n, s);
}
template <int C>
void scores_avx512(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s,
                   const KVStreamConsts&) {
    cq_scores_avx512(static_cast<const float*>(q), stream, head_dim / C, t, n, s);
}
template <int C>
void accumulate_avx2(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out,
                     const KVStreamConsts& consts) {
    cq_accumulate_avx2(p, stream, head_dim, C, t, n, consts.codebook, out);
}
template <int C>
void accumulate_avx512(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out,
                       const KVStreamConsts& consts) {
    cq_accumulate_avx512(p, stream, head_dim, C, t, n, consts.codebook, out);
}
#define DECOLLAMA_CQ_SIMD(kind, C) kind##_avx2<C>, kind##_avx512<C>
#else
#define DECOLLAMA_CQ_SIMD(kind, C) nullptr, nullptr
#endif

template <int C>
constexpr KVFormat cq_format(const char* name) {
    return KVFormat{name,
                    /*dim_block=*/C,
                    /*tokens_per_block=*/1,
                    block_bytes<C>,
                    append<C>,
                    read<C>,
                    prepare_query<C>,
                    query_bytes<C>,
                    {scores_scalar<C>, DECOLLAMA_CQ_SIMD(scores, C)},
                    {accumulate_scalar<C>, DECOLLAMA_CQ_SIMD(accumulate, C)},
                    /*n_sink=*/1,
                    /*wants_query_energy=*/false,
                    /*codebook_c=*/C};
}

}  // namespace

CqNearestFn cq_nearest_for(CpuPath path) {
#if defined(DECOLLAMA_X86)
    if (path == CpuPath::AVX512) return cq_nearest_avx512;
    if (path == CpuPath::AVX2) return cq_nearest_avx2;
#endif
    return nearest_scalar;
}

void cq_transpose_codebook(const float* book, int64_t head_dim, int64_t c, float* book_t) {
    const int64_t G = head_dim / c;
    for (int64_t g = 0; g < G; ++g)
        for (int64_t k = 0; k < kCqCentroids; ++k)
            for (int64_t i = 0; i < c; ++i)
                book_t[(g * c + i) * kCqCentroids + k] = book[(g * kCqCentroids + k) * c + i];
}

void cq_encode(const float* rows, int64_t row_stride, int64_t n, int64_t head_dim, int64_t c,
               const KVStreamConsts& consts, CpuPath path, uint8_t* codes) {
    encode_rows(rows, row_stride, n, head_dim, c, consts, path, codes);
}

extern const KVFormat kKVFormatCq4 = cq_format<2>("cq4");
extern const KVFormat kKVFormatCq2 = cq_format<4>("cq2");
extern const KVFormat kKVFormatCq1 = cq_format<8>("cq1");

}  // namespace decollama
