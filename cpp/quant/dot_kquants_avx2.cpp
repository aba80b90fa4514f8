// AVX2 dots of the K-quants (q4_K, q5_K, q6_K) with Q8_K activations. Per super-block all
// products and sub-block scales stay in int32; one float FMA per 256 values.
#include <immintrin.h>

#include <cstdint>

#include "quant/block_structs.h"
#include "quant/dot_simd.h"
#include "quant/simd_x86.h"

namespace decollama {

namespace {

// int16 scale k of the 8 in s16 (both lanes holding the same 8), in every int16 of both lanes.
inline __m256i broadcast_scale(__m256i s16, int k) {
    const int lo = 2 * k, hi = 2 * k + 1;
    return _mm256_shuffle_epi8(s16, _mm256_set1_epi16(static_cast<short>(lo | hi << 8)));
}

// int16 scale 2k in the low lane and 2k + 1 in the high lane (s16: the same 8 in both lanes).
inline __m256i broadcast_scale_pair(__m256i s16, int k) {
    const short lo = static_cast<short>((4 * k) | (4 * k + 1) << 8);
    const short hi = static_cast<short>((4 * k + 2) | (4 * k + 3) << 8);
    return _mm256_shuffle_epi8(s16, _mm256_setr_epi16(lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi));
}

// One q4_K / q5_K super-block: acc += d * sum_s scale[s] * dot_s as floats, and
// *min_acc += dmin * sum_s min[s] * bsum_s. Group g of 32 quant bytes holds sub-block 2g in
// its low nibbles and 2g + 1 in its high nibbles; q5_K (kHighBits) adds 5th bits from qh.
template <bool kHighBits, typename Block>
inline __m256 k_superblock(const Block& x, const block_q8_K& y, __m256 acc, __m128* min_acc) {
    const __m128i scales_mins = unpack_k_scales_mins(x.scales);
    const __m256i scales16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scales_mins));
    const __m256i low_nibble = _mm256_set1_epi8(0x0F);
    const __m256i bit4 = _mm256_set1_epi8(0x10);
    __m256i hb = _mm256_setzero_si256();
    if constexpr (kHighBits) hb = load256(x.qh);
    __m256i sumi = _mm256_setzero_si256();
    for (int g = 0; g < 4; ++g) {
        const __m256i q = load256(x.qs + 32 * g);
        __m256i lo = _mm256_and_si256(q, low_nibble);
        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low_nibble);
        if constexpr (kHighBits) {
            // Bit 2g of qh[j] is the 5th bit of value j of sub-block 2g, bit 2g + 1 of 2g + 1:
            // after 2g shifts they sit at bits 0 and 1. Bits shifted in from the neighbouring
            // byte would reach bit 1 only after 7 shifts; at most 6 are made.
            lo = _mm256_or_si256(lo, _mm256_and_si256(_mm256_slli_epi16(hb, 4), bit4));
            hi = _mm256_or_si256(hi, _mm256_and_si256(_mm256_slli_epi16(hb, 3), bit4));
            hb = _mm256_srli_epi16(hb, 2);
        }
        const __m256i p_lo = _mm256_maddubs_epi16(lo, load256(y.qs + 64 * g));
        const __m256i p_hi = _mm256_maddubs_epi16(hi, load256(y.qs + 64 * g + 32));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p_lo, broadcast_scale(scales16, 2 * g)));
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p_hi, broadcast_scale(scales16, 2 * g + 1)));
    }
    const float d = y.d * half_to_float(x.d);
    const float dmin = y.d * half_to_float(x.dmin);
    *min_acc = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k_min_products(scales_mins, y.bsums)), *min_acc);
    return _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
}

}  // namespace

void vec_dot_q4_K_avx2(int64_t n, float* out, const void* w, const void* a) {
    const block_q4_K* x = static_cast<const block_q4_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(a);
    __m256 acc = _mm256_setzero_ps();
    __m128 min_acc = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i)
        acc = k_superblock<false>(x[i], y[i], acc, &min_acc);
    *out = hsum(acc) - hsum(min_acc);
}

void vec_dot_q5_K_avx2(int64_t n, float* out, const void* w, const void* a) {
    const block_q5_K* x = static_cast<const block_q5_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(a);
    __m256 acc = _mm256_setzero_ps();
    __m128 min_acc = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i)
        acc = k_superblock<true>(x[i], y[i], acc, &min_acc);
    *out = hsum(acc) - hsum(min_acc);
}

// q6_K: codes q in 0..63 stand for q - 32. The dot runs on the unsigned q (maddubs needs an
// unsigned side) and subtracts 32 * sum_s scale[s] * bsums[s] once per super-block.
void vec_dot_q6_K_avx2(int64_t n, float* out, const void* w, const void* a) {
    const block_q6_K* x = static_cast<const block_q6_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(a);
    const __m256i low_nibble = _mm256_set1_epi8(0x0F);
    const __m256i bits45 = _mm256_set1_epi8(0x30);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const __m256i scales = _mm256_cvtepi8_epi16(load128(x[i].scales));  // 16 int16
        const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(scales, load256(y[i].bsums)), 5);
        __m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(), offset);
        // Each half's 8 scales in both lanes; q[k] spans sub-blocks 2k (low lane) and 2k + 1.
        const __m256i half_scales[2] = {_mm256_permute2x128_si256(scales, scales, 0x00),
                                        _mm256_permute2x128_si256(scales, scales, 0x11)};
        for (int h = 0; h < 2; ++h) {
            const uint8_t* ql = x[i].ql + 64 * h;
            const int8_t* q8 = y[i].qs + 128 * h;
            const __m256i ql0 = load256(ql), ql1 = load256(ql + 32), qh = load256(x[i].qh + 32 * h);
            // Value r of the half: low 4 bits from ql (nibble r / 64), top 2 from qh bits
            // 2 * (r / 32); the per-byte shifts of epi16 lanes are safe under the masks.
            const __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(ql0, low_nibble), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45)),
                _mm256_or_si256(_mm256_and_si256(ql1, low_nibble), _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low_nibble), _mm256_and_si256(qh, bits45)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low_nibble),
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45)),
            };
            for (int k = 0; k < 4; ++k) {
                const __m256i p = _mm256_maddubs_epi16(q[k], load256(q8 + 32 * k));
                sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, broadcast_scale_pair(half_scales[h], k)));
            }
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[i].d * half_to_float(x[i].d)), _mm256_cvtepi32_ps(sumi), acc);
    }
    *out = hsum(acc);
}

}  // namespace decollama
