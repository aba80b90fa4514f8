// AVX2 kernels of the CQ formats (see kv_cq_simd.h): 8 centroids (encoder, k-means, query
// table) or 8 keys (scores) per vector, in the scalar kernels' order of operations per lane.
// GCC 12's headers raise false -W(maybe-)uninitialized warnings on gathers (GCC PR 105593).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <limits>

#include "kv/kv_cq_simd.h"

namespace decollama {

namespace {

constexpr int64_t K256 = kCqCentroids;

// The compiler may not fuse a product hidden behind this into the add that consumes it
// (GCC contracts _mm256_add_ps(a, _mm256_mul_ps(b, c)) into an FMA): the reference rounds both.
inline __m256 opaque(__m256 v) {
    __asm__("" : "+v"(v));
    return v;
}

inline __m256i iota8() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }

// Lanes [0, n) set (n <= 8), as an integer vector mask.
inline __m256i first_lanes(int64_t n) { return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), iota8()); }

template <int C>
void nearest(const float* x, int64_t n, int64_t x_stride, int64_t c_rt, const float* ct, int64_t ldk, int64_t K,
             const float* m, int32_t* label, float* dist) {
    constexpr int kR = C == 0 || C >= 4 ? 2 : 4;  // chunks of 8 centroids in flight (no register spills)
    const int64_t c = C > 0 ? C : c_rt;
    const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
    const __m256i iota = iota8();
    for (int64_t p = 0; p < n; ++p, x += x_stride) {
        __m256 best = inf;
        __m256 best_k = _mm256_setzero_ps();  // int32 lanes, blended as floats
        int64_t kb = 0;
        for (; kb + 8 * kR <= K; kb += 8 * kR) {
            __m256 d[kR];
            {  // i = 0: d = 0 + prod = prod
                const __m256 xi = _mm256_set1_ps(x[0]), mi = _mm256_set1_ps(m[0]);
                for (int r = 0; r < kR; ++r) {
                    const __m256 t = _mm256_sub_ps(xi, _mm256_loadu_ps(ct + kb + 8 * r));
                    d[r] = _mm256_mul_ps(mi, _mm256_mul_ps(t, t));
                }
            }
            for (int64_t i = 1; i < c; ++i) {
                const __m256 xi = _mm256_set1_ps(x[i]), mi = _mm256_set1_ps(m[i]);
                const float* row = ct + i * ldk + kb;
                for (int r = 0; r < kR; ++r) {
                    const __m256 t = _mm256_sub_ps(xi, _mm256_loadu_ps(row + 8 * r));
                    d[r] = _mm256_add_ps(d[r], opaque(_mm256_mul_ps(mi, _mm256_mul_ps(t, t))));
                }
            }
            for (int r = 0; r < kR; ++r) {
                const __m256 lt = _mm256_cmp_ps(d[r], best, _CMP_LT_OQ);
                best = _mm256_blendv_ps(best, d[r], lt);
                const __m256i k = _mm256_add_epi32(iota, _mm256_set1_epi32(int(kb + 8 * r)));
                best_k = _mm256_blendv_ps(best_k, _mm256_castsi256_ps(k), lt);
            }
        }
        for (; kb < K; kb += 8) {
            const __m256i valid = first_lanes(K - kb);
            __m256 d = _mm256_setzero_ps();
            for (int64_t i = 0; i < c; ++i) {
                const __m256 t = _mm256_sub_ps(_mm256_set1_ps(x[i]), _mm256_maskload_ps(ct + i * ldk + kb, valid));
                const __m256 prod = opaque(_mm256_mul_ps(_mm256_set1_ps(m[i]), _mm256_mul_ps(t, t)));
                d = i == 0 ? prod : _mm256_add_ps(d, prod);
            }
            d = _mm256_blendv_ps(inf, d, _mm256_castsi256_ps(valid));
            const __m256 lt = _mm256_cmp_ps(d, best, _CMP_LT_OQ);
            best = _mm256_blendv_ps(best, d, lt);
            const __m256i k = _mm256_add_epi32(iota, _mm256_set1_epi32(int(kb)));
            best_k = _mm256_blendv_ps(best_k, _mm256_castsi256_ps(k), lt);
        }
        // Each lane kept its first minimum; the lowest index among the lanes at the minimum
        // is the first index overall.
        alignas(32) float v[8];
        alignas(32) int32_t k[8];
        _mm256_store_ps(v, best);
        _mm256_store_si256(reinterpret_cast<__m256i*>(k), _mm256_castps_si256(best_k));
        float bv = v[0];
        int32_t bk = k[0];
        for (int l = 1; l < 8; ++l)
            if (v[l] < bv || (v[l] == bv && k[l] < bk)) {
                bv = v[l];
                bk = k[l];
            }
        label[p] = bk;
        if (dist != nullptr) dist[p] = bv;
    }
}

template <int C>
void table(const float* q, int64_t head_dim, const float* book_t, float* out) {
    const int64_t G = head_dim / C;
    for (int64_t g = 0; g < G; ++g) {
        const float* cg = book_t + g * C * K256;
        for (int64_t kb = 0; kb < K256; kb += 32) {
            __m256 acc[4];
            for (int r = 0; r < 4; ++r) acc[r] = _mm256_setzero_ps();
            for (int i = 0; i < C; ++i) {
                const __m256 qi = _mm256_set1_ps(q[g * C + i]);
                for (int r = 0; r < 4; ++r)
                    acc[r] = _mm256_add_ps(acc[r], opaque(_mm256_mul_ps(qi, _mm256_loadu_ps(cg + i * K256 + kb + 8 * r))));
            }
            for (int r = 0; r < 4; ++r) _mm256_storeu_ps(out + g * K256 + kb + 8 * r, acc[r]);
        }
    }
}

// The 8 centroid values of groups [g0, g0 + 8 / C) for the codes of one row.
template <int C>
__m256 centroids8(const float* book, const uint8_t* row, int64_t g0);

template <>
__m256 centroids8<8>(const float* book, const uint8_t* row, int64_t g0) {
    return _mm256_loadu_ps(book + (g0 * K256 + row[g0]) * 8);
}

template <>
__m256 centroids8<4>(const float* book, const uint8_t* row, int64_t g0) {
    const __m128 lo = _mm_loadu_ps(book + (g0 * K256 + row[g0]) * 4);
    const __m128 hi = _mm_loadu_ps(book + ((g0 + 1) * K256 + row[g0 + 1]) * 4);
    return _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
}

template <>
__m256 centroids8<2>(const float* book, const uint8_t* row, int64_t g0) {
    // A pair of floats is one double: centroid (g, k) is double g * 256 + k.
    int32_t four;
    std::copy_n(row + g0, 4, reinterpret_cast<uint8_t*>(&four));
    const __m128i codes = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(four));
    const __m128i base = _mm_mullo_epi32(_mm_add_epi32(_mm_setr_epi32(0, 1, 2, 3), _mm_set1_epi32(int(g0))),
                                         _mm_set1_epi32(int(K256)));
    return _mm256_castpd_ps(_mm256_i32gather_pd(reinterpret_cast<const double*>(book), _mm_add_epi32(base, codes), 8));
}

template <int C, int R>
void accumulate_chunk(const float* p, const uint8_t* codes, int64_t G, int64_t n, const float* book, int64_t d0,
                      float* out) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_loadu_ps(out + d0 + 8 * r);
    for (int64_t j = 0; j < n; ++j) {
        const __m256 pj = _mm256_set1_ps(p[j]);
        const uint8_t* row = codes + j * G;
        for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(pj, centroids8<C>(book, row, (d0 + 8 * r) / C), acc[r]);
    }
    for (int r = 0; r < R; ++r) _mm256_storeu_ps(out + d0 + 8 * r, acc[r]);
}

template <int C>
void accumulate(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, const float* book,
                float* out) {
    const int64_t G = head_dim / C;
    const uint8_t* codes = stream + t * G;
    int64_t d = 0;
    for (; d + 32 <= head_dim; d += 32) accumulate_chunk<C, 4>(p, codes, G, n, book, d, out);
    for (; d + 8 <= head_dim; d += 8) accumulate_chunk<C, 1>(p, codes, G, n, book, d, out);
    for (; d < head_dim; d += C)  // a head_dim that is not a multiple of 8
        for (int64_t j = 0; j < n; ++j) {
            const float* v = book + ((d / C) * K256 + codes[j * G + d / C]) * C;
            for (int i = 0; i < C; ++i) out[d + i] += p[j] * v[i];
        }
}

}  // namespace

void cq_nearest_avx2(const float* x, int64_t n, int64_t x_stride, int64_t c, const float* ct, int64_t ldk, int64_t K,
                     const float* m, int32_t* label, float* dist) {
    switch (c) {
        case 1: return nearest<1>(x, n, x_stride, c, ct, ldk, K, m, label, dist);
        case 2: return nearest<2>(x, n, x_stride, c, ct, ldk, K, m, label, dist);
        case 4: return nearest<4>(x, n, x_stride, c, ct, ldk, K, m, label, dist);
        case 8: return nearest<8>(x, n, x_stride, c, ct, ldk, K, m, label, dist);
        default: return nearest<0>(x, n, x_stride, c, ct, ldk, K, m, label, dist);
    }
}

void cq_table_avx2(const float* q, int64_t head_dim, int64_t c, const float* book_t, float* out) {
    switch (c) {
        case 2: return table<2>(q, head_dim, book_t, out);
        case 4: return table<4>(q, head_dim, book_t, out);
        case 8: return table<8>(q, head_dim, book_t, out);
        default: break;
    }
}

void cq_scores_avx2(const float* table, const uint8_t* stream, int64_t G, int64_t t, int64_t n, float* s) {
    const uint8_t* codes = stream + t * G;
    const __m256i row_offset = _mm256_mullo_epi32(iota8(), _mm256_set1_epi32(int(G)));
    const __m256i byte = _mm256_set1_epi32(0xFF);
    for (int64_t j0 = 0; j0 < n; j0 += 8) {
        const int64_t nn = std::min<int64_t>(8, n - j0);
        const __m256i live = first_lanes(nn);
        const __m256 live_f = _mm256_castsi256_ps(live);
        const uint8_t* rows = codes + j0 * G;
        __m256 acc = _mm256_setzero_ps();
        int64_t g = 0;
        for (; g + 4 <= G; g += 4) {
            // Codes g .. g + 3 of 8 keys, one 32-bit word per key.
            const __m256i w = _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), reinterpret_cast<const int*>(rows + g),
                                                          row_offset, live, 1);
            for (int b = 0; b < 4; ++b) {
                const __m256i idx = _mm256_and_si256(_mm256_srli_epi32(w, 8 * b), byte);
                acc = _mm256_add_ps(acc, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), table + (g + b) * K256, idx,
                                                                  live_f, 4));
            }
        }
        for (; g < G; ++g) {
            alignas(32) int32_t idx[8] = {0};
            for (int64_t j = 0; j < nn; ++j) idx[j] = rows[j * G + g];
            acc = _mm256_add_ps(acc, _mm256_mask_i32gather_ps(_mm256_setzero_ps(), table + g * K256,
                                                              _mm256_load_si256(reinterpret_cast<const __m256i*>(idx)),
                                                              live_f, 4));
        }
        _mm256_maskstore_ps(s + j0, live, acc);
    }
}

void cq_accumulate_avx2(const float* p, const uint8_t* stream, int64_t head_dim, int64_t c, int64_t t, int64_t n,
                        const float* book, float* out) {
    switch (c) {
        case 2: return accumulate<2>(p, stream, head_dim, t, n, book, out);
        case 4: return accumulate<4>(p, stream, head_dim, t, n, book, out);
        case 8: return accumulate<8>(p, stream, head_dim, t, n, book, out);
        default: break;
    }
}

}  // namespace decollama
