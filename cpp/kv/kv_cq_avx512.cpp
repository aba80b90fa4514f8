// AVX-512 kernels of the CQ formats (see kv_cq_simd.h): 16 centroids (encoder, k-means, query
// table) or 16 keys (scores) per vector, in the scalar kernels' order of operations per lane.
// GCC 12's AVX-512 headers raise false -W(maybe-)uninitialized warnings (GCC PR 105593).
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
// (GCC contracts _mm512_add_ps(a, _mm512_mul_ps(b, c)) into an FMA): the reference rounds both.
inline __m512 opaque(__m512 v) {
    __asm__("" : "+v"(v));
    return v;
}

// (A function, not a namespace-scope constant: its initializer would run AVX-512 code at load
// time on every CPU.)
inline __m512i iota16() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }

// C > 0: c known at compile time; C == 0: c at run time.
template <int C>
void nearest(const float* x, int64_t n, int64_t x_stride, int64_t c_rt, const float* ct, int64_t ldk, int64_t K,
             const float* m, int32_t* label, float* dist) {
    constexpr int kR = C == 0 || C >= 4 ? 2 : 4;  // chunks of 16 centroids in flight (no register spills)
    const int64_t c = C > 0 ? C : c_rt;
    const __m512 inf = _mm512_set1_ps(std::numeric_limits<float>::infinity());
    const __m512i kIota = iota16();
    for (int64_t p = 0; p < n; ++p, x += x_stride) {
        __m512 best = inf;
        __m512i best_k = _mm512_setzero_si512();
        int64_t kb = 0;
        for (; kb + 16 * kR <= K; kb += 16 * kR) {
            __m512 d[kR];
            {  // i = 0: d = 0 + prod = prod
                const __m512 xi = _mm512_set1_ps(x[0]), mi = _mm512_set1_ps(m[0]);
                for (int r = 0; r < kR; ++r) {
                    const __m512 t = _mm512_sub_ps(xi, _mm512_loadu_ps(ct + kb + 16 * r));
                    d[r] = _mm512_mul_ps(mi, _mm512_mul_ps(t, t));
                }
            }
            for (int64_t i = 1; i < c; ++i) {
                const __m512 xi = _mm512_set1_ps(x[i]), mi = _mm512_set1_ps(m[i]);
                const float* row = ct + i * ldk + kb;
                for (int r = 0; r < kR; ++r) {
                    const __m512 t = _mm512_sub_ps(xi, _mm512_loadu_ps(row + 16 * r));
                    d[r] = _mm512_add_ps(d[r], opaque(_mm512_mul_ps(mi, _mm512_mul_ps(t, t))));
                }
            }
            for (int r = 0; r < kR; ++r) {
                const __mmask16 lt = _mm512_cmp_ps_mask(d[r], best, _CMP_LT_OQ);
                best = _mm512_mask_mov_ps(best, lt, d[r]);
                best_k = _mm512_mask_mov_epi32(best_k, lt, _mm512_add_epi32(kIota, _mm512_set1_epi32(int(kb + 16 * r))));
            }
        }
        for (; kb < K; kb += 16) {
            const __mmask16 valid = K - kb >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - kb)) - 1);
            __m512 d = _mm512_setzero_ps();
            for (int64_t i = 0; i < c; ++i) {
                const __m512 t = _mm512_sub_ps(_mm512_set1_ps(x[i]), _mm512_maskz_loadu_ps(valid, ct + i * ldk + kb));
                const __m512 prod = opaque(_mm512_mul_ps(_mm512_set1_ps(m[i]), _mm512_mul_ps(t, t)));
                d = i == 0 ? prod : _mm512_add_ps(d, prod);
            }
            d = _mm512_mask_mov_ps(inf, valid, d);
            const __mmask16 lt = _mm512_cmp_ps_mask(d, best, _CMP_LT_OQ);
            best = _mm512_mask_mov_ps(best, lt, d);
            best_k = _mm512_mask_mov_epi32(best_k, lt, _mm512_add_epi32(kIota, _mm512_set1_epi32(int(kb))));
        }
        // best holds no NaN (a NaN distance never compares less): the lowest index among the
        // lanes at the minimum is the first index overall (each lane kept its first minimum).
        const float v = _mm512_reduce_min_ps(best);
        const __mmask16 at_min = _mm512_cmp_ps_mask(best, _mm512_set1_ps(v), _CMP_EQ_OQ);
        label[p] = _mm512_mask_reduce_min_epi32(at_min, best_k);
        if (dist != nullptr) dist[p] = v;
    }
}

template <int C>
void table(const float* q, int64_t head_dim, const float* book_t, float* out) {
    const int64_t G = head_dim / C;
    for (int64_t g = 0; g < G; ++g) {
        const float* cg = book_t + g * C * K256;
        for (int64_t kb = 0; kb < K256; kb += 64) {
            __m512 acc[4];
            for (int r = 0; r < 4; ++r) acc[r] = _mm512_setzero_ps();
            for (int i = 0; i < C; ++i) {
                const __m512 qi = _mm512_set1_ps(q[g * C + i]);
                for (int r = 0; r < 4; ++r)
                    acc[r] = _mm512_add_ps(acc[r], opaque(_mm512_mul_ps(qi, _mm512_loadu_ps(cg + i * K256 + kb + 16 * r))));
            }
            for (int r = 0; r < 4; ++r) _mm512_storeu_ps(out + g * K256 + kb + 16 * r, acc[r]);
        }
    }
}

// The 16 centroid values of groups [g0, g0 + 16 / C) for the codes of one row.
template <int C>
__m512 centroids16(const float* book, const uint8_t* row, int64_t g0);

template <>
__m512 centroids16<8>(const float* book, const uint8_t* row, int64_t g0) {
    const __m256 lo = _mm256_loadu_ps(book + (g0 * K256 + row[g0]) * 8);
    const __m256 hi = _mm256_loadu_ps(book + ((g0 + 1) * K256 + row[g0 + 1]) * 8);
    return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
}

template <>
__m512 centroids16<4>(const float* book, const uint8_t* row, int64_t g0) {
    __m512 v = _mm512_castps128_ps512(_mm_loadu_ps(book + (g0 * K256 + row[g0]) * 4));
    v = _mm512_insertf32x4(v, _mm_loadu_ps(book + ((g0 + 1) * K256 + row[g0 + 1]) * 4), 1);
    v = _mm512_insertf32x4(v, _mm_loadu_ps(book + ((g0 + 2) * K256 + row[g0 + 2]) * 4), 2);
    return _mm512_insertf32x4(v, _mm_loadu_ps(book + ((g0 + 3) * K256 + row[g0 + 3]) * 4), 3);
}

template <>
__m512 centroids16<2>(const float* book, const uint8_t* row, int64_t g0) {
    // A pair of floats is one double: centroid (g, k) is double g * 256 + k.
    const __m256i codes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(row + g0)));
    const __m256i base = _mm256_mullo_epi32(
        _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(int(g0))), _mm256_set1_epi32(int(K256)));
    return _mm512_castpd_ps(_mm512_i32gather_pd(_mm256_add_epi32(base, codes), reinterpret_cast<const double*>(book), 8));
}

template <int C, int R>
void accumulate_chunk(const float* p, const uint8_t* codes, int64_t G, int64_t n, const float* book, int64_t d0,
                      float* out) {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_loadu_ps(out + d0 + 16 * r);
    for (int64_t j = 0; j < n; ++j) {
        const __m512 pj = _mm512_set1_ps(p[j]);
        const uint8_t* row = codes + j * G;
        for (int r = 0; r < R; ++r)
            acc[r] = _mm512_fmadd_ps(pj, centroids16<C>(book, row, (d0 + 16 * r) / C), acc[r]);
    }
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(out + d0 + 16 * r, acc[r]);
}

template <int C>
void accumulate(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, const float* book,
                float* out) {
    const int64_t G = head_dim / C;
    const uint8_t* codes = stream + t * G;
    int64_t d = 0;
    for (; d + 64 <= head_dim; d += 64) accumulate_chunk<C, 4>(p, codes, G, n, book, d, out);
    for (; d + 16 <= head_dim; d += 16) accumulate_chunk<C, 1>(p, codes, G, n, book, d, out);
    for (; d < head_dim; d += C)  // a head_dim that is not a multiple of 16
        for (int64_t j = 0; j < n; ++j) {
            const float* v = book + ((d / C) * K256 + codes[j * G + d / C]) * C;
            for (int i = 0; i < C; ++i) out[d + i] += p[j] * v[i];
        }
}

}  // namespace

void cq_nearest_avx512(const float* x, int64_t n, int64_t x_stride, int64_t c, const float* ct, int64_t ldk,
                       int64_t K, const float* m, int32_t* label, float* dist) {
    switch (c) {
        case 1: return nearest<1>(x, n, x_stride, c, ct, ldk, K, m, label, dist);
        case 2: return nearest<2>(x, n, x_stride, c, ct, ldk, K, m, label, dist);
        case 4: return nearest<4>(x, n, x_stride, c, ct, ldk, K, m, label, dist);
        case 8: return nearest<8>(x, n, x_stride, c, ct, ldk, K, m, label, dist);
        default: return nearest<0>(x, n, x_stride, c, ct, ldk, K, m, label, dist);
    }
}

void cq_table_avx512(const float* q, int64_t head_dim, int64_t c, const float* book_t, float* out) {
    switch (c) {
        case 2: return table<2>(q, head_dim, book_t, out);
        case 4: return table<4>(q, head_dim, book_t, out);
        case 8: return table<8>(q, head_dim, book_t, out);
        default: break;
    }
}

void cq_scores_avx512(const float* table, const uint8_t* stream, int64_t G, int64_t t, int64_t n, float* s) {
    const uint8_t* codes = stream + t * G;
    const __m512i row_offset = _mm512_mullo_epi32(iota16(), _mm512_set1_epi32(int(G)));
    const __m512i byte = _mm512_set1_epi32(0xFF);
    for (int64_t j0 = 0; j0 < n; j0 += 16) {
        const int64_t nn = std::min<int64_t>(16, n - j0);
        const __mmask16 live = nn == 16 ? __mmask16(0xFFFF) : __mmask16((1u << nn) - 1);
        const uint8_t* rows = codes + j0 * G;
        __m512 acc = _mm512_setzero_ps();
        int64_t g = 0;
        for (; g + 4 <= G; g += 4) {
            // Codes g .. g + 3 of 16 keys, one 32-bit word per key.
            const __m512i w = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, row_offset, rows + g, 1);
            for (int b = 0; b < 4; ++b) {
                const __m512i idx = _mm512_and_si512(_mm512_srli_epi32(w, 8 * b), byte);
                acc = _mm512_add_ps(acc, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, idx,
                                                                  table + (g + b) * K256, 4));
            }
        }
        for (; g < G; ++g) {
            alignas(64) int32_t idx[16] = {0};
            for (int64_t j = 0; j < nn; ++j) idx[j] = rows[j * G + g];
            acc = _mm512_add_ps(acc, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), live, _mm512_load_si512(idx),
                                                              table + g * K256, 4));
        }
        _mm512_mask_storeu_ps(s + j0, live, acc);
    }
}

void cq_accumulate_avx512(const float* p, const uint8_t* stream, int64_t head_dim, int64_t c, int64_t t, int64_t n,
                          const float* book, float* out) {
    switch (c) {
        case 2: return accumulate<2>(p, stream, head_dim, t, n, book, out);
        case 4: return accumulate<4>(p, stream, head_dim, t, n, book, out);
        case 8: return accumulate<8>(p, stream, head_dim, t, n, book, out);
        default: break;
    }
}

}  // namespace decollama
