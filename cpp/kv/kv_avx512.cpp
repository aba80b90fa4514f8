// AVX-512 attention kernels of the KV formats (see kv_simd.h): the AVX2 ones at 16 lanes.
// GCC 12's AVX-512 headers raise false -W(maybe-)uninitialized warnings (GCC PR 105593).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>

#include "kv/kv_simd.h"
#include "quant/block_structs.h"

namespace decollama {

namespace {

// ---- dense formats: f16 and f32 -------------------------------------------------------------

__m512 load16(const uint16_t* p) { return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
__m512 load16(const float* p) { return _mm512_loadu_ps(p); }
float to_f32(uint16_t h) { return _cvtsh_ss(h); }
float to_f32(float x) { return x; }

// K keys per pass share each load of q.
template <class T, int K>
void dense_scores_keys(const float* q, const T* k, int64_t head_dim, float* s) {
    __m512 acc[K];
    for (int r = 0; r < K; ++r) acc[r] = _mm512_setzero_ps();
    int64_t d = 0;
    for (; d + 16 <= head_dim; d += 16) {
        const __m512 qv = load16(q + d);
        for (int r = 0; r < K; ++r) acc[r] = _mm512_fmadd_ps(qv, load16(k + r * head_dim + d), acc[r]);
    }
    for (int r = 0; r < K; ++r) {
        float sum = _mm512_reduce_add_ps(acc[r]);
        for (int64_t e = d; e < head_dim; ++e) sum += q[e] * to_f32(k[r * head_dim + e]);
        s[r] = sum;
    }
}

template <class T>
void dense_scores(const float* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s) {
    const T* k = reinterpret_cast<const T*>(stream) + t * head_dim;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) dense_scores_keys<T, 4>(q, k + j * head_dim, head_dim, s + j);
    for (; j < n; ++j) dense_scores_keys<T, 1>(q, k + j * head_dim, head_dim, s + j);
}

// out[0, 16R) += sum_j p[j] v[j][0, 16R): R accumulators stay in registers over the tile.
template <class T, int R>
void dense_accumulate_chunk(const float* p, const T* v, int64_t head_dim, int64_t n, float* out) {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = load16(out + 16 * r);
    for (int64_t j = 0; j < n; ++j, v += head_dim) {
        const __m512 pj = _mm512_set1_ps(p[j]);
        for (int r = 0; r < R; ++r) acc[r] = _mm512_fmadd_ps(pj, load16(v + 16 * r), acc[r]);
    }
    for (int r = 0; r < R; ++r) _mm512_storeu_ps(out + 16 * r, acc[r]);
}

template <class T>
void dense_accumulate(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out) {
    const T* v = reinterpret_cast<const T*>(stream) + t * head_dim;
    int64_t d = 0;
    for (; d + 64 <= head_dim; d += 64) dense_accumulate_chunk<T, 4>(p, v + d, head_dim, n, out + d);
    for (; d + 16 <= head_dim; d += 16) dense_accumulate_chunk<T, 1>(p, v + d, head_dim, n, out + d);
    for (; d < head_dim; ++d)
        for (int64_t j = 0; j < n; ++j) out[d] += p[j] * to_f32(v[j * head_dim + d]);
}

// ---- dense formats, several query heads per call -------------------------------------------
// Each head's arithmetic is the single-query kernels' (same FMA chain over d, same reduction):
// equal results; every key chunk is loaded and converted once for all heads.

constexpr int kMaxHeads = 8;  // heads per pass: K keys x kMaxHeads accumulators stay in registers

// s[h * s_stride + r] for K keys from k on and NH heads (qh[h]).
template <class T, int K, int NH>
void dense_scores_multi_keys(const float* const* qh, const T* k, int64_t head_dim, float* s, int64_t s_stride) {
    __m512 acc[K][NH];
    for (int r = 0; r < K; ++r)
        for (int h = 0; h < NH; ++h) acc[r][h] = _mm512_setzero_ps();
    int64_t d = 0;
    for (; d + 16 <= head_dim; d += 16) {
        __m512 kv[K];
        for (int r = 0; r < K; ++r) kv[r] = load16(k + r * head_dim + d);
        for (int h = 0; h < NH; ++h) {
            const __m512 qv = _mm512_loadu_ps(qh[h] + d);
            for (int r = 0; r < K; ++r) acc[r][h] = _mm512_fmadd_ps(qv, kv[r], acc[r][h]);
        }
    }
    for (int h = 0; h < NH; ++h)
        for (int r = 0; r < K; ++r) {
            float sum = _mm512_reduce_add_ps(acc[r][h]);
            for (int64_t e = d; e < head_dim; ++e) sum += qh[h][e] * to_f32(k[r * head_dim + e]);
            s[h * s_stride + r] = sum;
        }
}

template <class T, int NH>
void dense_scores_multi_heads(const float* const* qh, const T* k, int64_t head_dim, int64_t n, float* s,
                              int64_t s_stride) {
    constexpr int K = NH <= 4 ? 4 : 2;
    int64_t j = 0;
    for (; j + K <= n; j += K) dense_scores_multi_keys<T, K, NH>(qh, k + j * head_dim, head_dim, s + j, s_stride);
    for (; j < n; ++j) dense_scores_multi_keys<T, 1, NH>(qh, k + j * head_dim, head_dim, s + j, s_stride);
}

template <class T>
void dense_scores_multi(const void* q, size_t q_stride, int64_t n_q, const uint8_t* stream, int64_t head_dim,
                        int64_t t, int64_t n, float* s, int64_t s_stride) {
    const T* k = reinterpret_cast<const T*>(stream) + t * head_dim;
    for (int64_t h0 = 0; h0 < n_q; h0 += kMaxHeads) {
        const float* qh[kMaxHeads];
        const int nh = int(std::min<int64_t>(kMaxHeads, n_q - h0));
        for (int h = 0; h < nh; ++h)
            qh[h] = reinterpret_cast<const float*>(static_cast<const uint8_t*>(q) + size_t(h0 + h) * q_stride);
        float* sh = s + h0 * s_stride;
        switch (nh) {
            case 1: dense_scores_multi_heads<T, 1>(qh, k, head_dim, n, sh, s_stride); break;
            case 2: dense_scores_multi_heads<T, 2>(qh, k, head_dim, n, sh, s_stride); break;
            case 3: dense_scores_multi_heads<T, 3>(qh, k, head_dim, n, sh, s_stride); break;
            case 4: dense_scores_multi_heads<T, 4>(qh, k, head_dim, n, sh, s_stride); break;
            case 5: dense_scores_multi_heads<T, 5>(qh, k, head_dim, n, sh, s_stride); break;
            case 6: dense_scores_multi_heads<T, 6>(qh, k, head_dim, n, sh, s_stride); break;
            case 7: dense_scores_multi_heads<T, 7>(qh, k, head_dim, n, sh, s_stride); break;
            default: dense_scores_multi_heads<T, 8>(qh, k, head_dim, n, sh, s_stride); break;
        }
    }
}

// out_h[0, 16R) += sum_j p_h[j] v[j][0, 16R) for NH heads: R x NH accumulators over the tile.
template <class T, int R, int NH>
void dense_accumulate_multi_chunk(const float* const* ph, const T* v, int64_t head_dim, int64_t n, float* const* oh) {
    __m512 acc[NH][R];
    for (int h = 0; h < NH; ++h)
        for (int r = 0; r < R; ++r) acc[h][r] = _mm512_loadu_ps(oh[h] + 16 * r);
    for (int64_t j = 0; j < n; ++j, v += head_dim) {
        __m512 x[R];
        for (int r = 0; r < R; ++r) x[r] = load16(v + 16 * r);
        for (int h = 0; h < NH; ++h) {
            const __m512 pj = _mm512_set1_ps(ph[h][j]);
            for (int r = 0; r < R; ++r) acc[h][r] = _mm512_fmadd_ps(pj, x[r], acc[h][r]);
        }
    }
    for (int h = 0; h < NH; ++h)
        for (int r = 0; r < R; ++r) _mm512_storeu_ps(oh[h] + 16 * r, acc[h][r]);
}

template <class T, int NH>
void dense_accumulate_multi_heads(const float* const* ph, const T* v, int64_t head_dim, int64_t n, float* const* oh) {
    constexpr int R = NH <= 4 ? 4 : 2;
    float* o[NH];
    int64_t d = 0;
    for (; d + 16 * R <= head_dim; d += 16 * R) {
        for (int h = 0; h < NH; ++h) o[h] = oh[h] + d;
        dense_accumulate_multi_chunk<T, R, NH>(ph, v + d, head_dim, n, o);
    }
    for (; d + 16 <= head_dim; d += 16) {
        for (int h = 0; h < NH; ++h) o[h] = oh[h] + d;
        dense_accumulate_multi_chunk<T, 1, NH>(ph, v + d, head_dim, n, o);
    }
    for (int h = 0; h < NH; ++h)
        for (int64_t e = d; e < head_dim; ++e)
            for (int64_t j = 0; j < n; ++j) oh[h][e] += ph[h][j] * to_f32(v[j * head_dim + e]);
}

template <class T>
void dense_accumulate_multi(const float* p, int64_t p_stride, int64_t n_q, const uint8_t* stream, int64_t head_dim,
                            int64_t t, int64_t n, float* out, int64_t out_stride) {
    const T* v = reinterpret_cast<const T*>(stream) + t * head_dim;
    for (int64_t h0 = 0; h0 < n_q; h0 += kMaxHeads) {
        const float* ph[kMaxHeads];
        float* oh[kMaxHeads];
        const int nh = int(std::min<int64_t>(kMaxHeads, n_q - h0));
        for (int h = 0; h < nh; ++h) {
            ph[h] = p + (h0 + h) * p_stride;
            oh[h] = out + (h0 + h) * out_stride;
        }
        switch (nh) {
            case 1: dense_accumulate_multi_heads<T, 1>(ph, v, head_dim, n, oh); break;
            case 2: dense_accumulate_multi_heads<T, 2>(ph, v, head_dim, n, oh); break;
            case 3: dense_accumulate_multi_heads<T, 3>(ph, v, head_dim, n, oh); break;
            case 4: dense_accumulate_multi_heads<T, 4>(ph, v, head_dim, n, oh); break;
            case 5: dense_accumulate_multi_heads<T, 5>(ph, v, head_dim, n, oh); break;
            case 6: dense_accumulate_multi_heads<T, 6>(ph, v, head_dim, n, oh); break;
            case 7: dense_accumulate_multi_heads<T, 7>(ph, v, head_dim, n, oh); break;
            default: dense_accumulate_multi_heads<T, 8>(ph, v, head_dim, n, oh); break;
        }
    }
}

// ---- values in 32-element blocks with an fp16 scale (q8_0, q4_0) ----------------------------
// (their keys are scored by the quant library's integer dots: kv_dot_scores.h)

void decode_block(const block_q8_0& b, __m512 x[2]) {
    for (int r = 0; r < 2; ++r) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16 * r));
        x[r] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
    }
}

void decode_block(const block_q4_0& b, __m512 x[2]) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
    const __m128i mask = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
    x[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(_mm_and_si128(bytes, mask), eight)));
    x[1] = _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(bytes, 4), mask), eight)));
}

template <class Block>
void block32_accumulate(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out) {
    const int64_t n_blocks = head_dim / 32;
    const Block* v = reinterpret_cast<const Block*>(stream) + t * n_blocks;
    for (int64_t b = 0; b < n_blocks; ++b) {
        __m512 acc0 = _mm512_loadu_ps(out + 32 * b), acc1 = _mm512_loadu_ps(out + 32 * b + 16);
        for (int64_t j = 0; j < n; ++j) {
            const Block& blk = v[j * n_blocks + b];
            __m512 x[2];
            decode_block(blk, x);
            const __m512 w = _mm512_set1_ps(p[j] * to_f32(blk.d));
            acc0 = _mm512_fmadd_ps(w, x[0], acc0);
            acc1 = _mm512_fmadd_ps(w, x[1], acc1);
        }
        _mm512_storeu_ps(out + 32 * b, acc0);
        _mm512_storeu_ps(out + 32 * b + 16, acc1);
    }
}

}  // namespace

void kv_f32_scores_avx512(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s) {
    dense_scores<float>(static_cast<const float*>(q), stream, head_dim, t, n, s);
}

void kv_f32_accumulate_avx512(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,
                          float* out) {
    dense_accumulate<float>(p, stream, head_dim, t, n, out);
}

void kv_f16_scores_avx512(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s) {
    dense_scores<uint16_t>(static_cast<const float*>(q), stream, head_dim, t, n, s);
}

void kv_f16_accumulate_avx512(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,
                          float* out) {
    dense_accumulate<uint16_t>(p, stream, head_dim, t, n, out);
}

void kv_f32_scores_multi_avx512(const void* q, size_t q_stride, int64_t n_q, const uint8_t* stream,
                                int64_t head_dim, int64_t t, int64_t n, float* s, int64_t s_stride) {
    dense_scores_multi<float>(q, q_stride, n_q, stream, head_dim, t, n, s, s_stride);
}

void kv_f32_accumulate_multi_avx512(const float* p, int64_t p_stride, int64_t n_q, const uint8_t* stream,
                                    int64_t head_dim, int64_t t, int64_t n, float* out, int64_t out_stride) {
    dense_accumulate_multi<float>(p, p_stride, n_q, stream, head_dim, t, n, out, out_stride);
}

void kv_f16_scores_multi_avx512(const void* q, size_t q_stride, int64_t n_q, const uint8_t* stream,
                                int64_t head_dim, int64_t t, int64_t n, float* s, int64_t s_stride) {
    dense_scores_multi<uint16_t>(q, q_stride, n_q, stream, head_dim, t, n, s, s_stride);
}

void kv_f16_accumulate_multi_avx512(const float* p, int64_t p_stride, int64_t n_q, const uint8_t* stream,
                                    int64_t head_dim, int64_t t, int64_t n, float* out, int64_t out_stride) {
    dense_accumulate_multi<uint16_t>(p, p_stride, n_q, stream, head_dim, t, n, out, out_stride);
}

void kv_q8_0_accumulate_avx512(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,
                               float* out) {
    block32_accumulate<block_q8_0>(p, stream, head_dim, t, n, out);
}

void kv_q4_0_accumulate_avx512(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,
                               float* out) {
    block32_accumulate<block_q4_0>(p, stream, head_dim, t, n, out);
}

}  // namespace decollama
