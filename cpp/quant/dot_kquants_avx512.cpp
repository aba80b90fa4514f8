// AVX-512 (F/BW/VL/DQ) dots of the K-quants with Q8_K activations: 64 codes per register,
// int32 sums per super-block, one float FMA per 256 values.

// GCC 12's AVX-512 headers raise false -W(maybe-)uninitialized warnings (GCC PR 105593);
// set before the header so they are silenced where they are reported.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

#include "quant/block_structs.h"
#include "quant/dot_simd.h"
#include "quant/simd_x86.h"

namespace decollama {

namespace {

inline __m512i join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

// 32 bytes in both halves, the high half shifted right by `shift` bits per 16-bit lane: the
// broadcast is a plain load, cheaper than building the halves separately and inserting.
inline __m512i halves_shifted(const uint8_t* p, unsigned shift) {
    const __m512i both = _mm512_broadcast_i64x4(load256(p));
    return _mm512_mask_srli_epi16(both, 0xFFFF0000u, both, shift);
}

// 16 int32 -> 8: the two 256-bit halves added.
inline __m256i fold(__m512i v) {
    return _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
}

// vpermw indexes for q6_K: 128-bit lane t of the register holding values 64k .. 64k + 63 of
// half h is sub-block 8h + 4k + t, so row 2h + k spreads scale 8h + 4k + t over lane t.
struct Q6KScalePick {
    alignas(64) int16_t idx[4][32];
};
constexpr Q6KScalePick make_q6_K_scale_pick() {
    Q6KScalePick p{};
    for (int r = 0; r < 4; ++r)
        for (int j = 0; j < 32; ++j) p.idx[r][j] = static_cast<int16_t>(4 * r + j / 8);
    return p;
}
constexpr Q6KScalePick kQ6KScalePick = make_q6_K_scale_pick();

// One q4_K / q5_K super-block: group g of 32 quant bytes becomes one register of 64 codes,
// sub-block 2g (low nibbles) in the low half and 2g + 1 (high nibbles) in the high half,
// matching 64 consecutive Q8_K quants. q5_K (kHighBits) adds the 5th bits: bit 2g of qh[j]
// for the low half, 2g + 1 for the high half.
template <bool kHighBits, typename Block>
inline __m256 k_superblock(const Block& x, const block_q8_K& y, __m256 acc, __m128* min_acc) {
    const __m128i scales_mins = unpack_k_scales_mins(x.scales);
    // The 8 int16 scales in every 128-bit lane; shuffle g puts scale 2g in the low half and
    // 2g + 1 in the high half.
    const __m512i scales16 = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(scales_mins));
    const __m512i low_nibble = _mm512_set1_epi8(0x0F);
    const __m512i bit4 = _mm512_set1_epi8(0x10);
    // Bit 0 of each byte: the low half's bit 2g, the high half's 2g + 1 after 2g shifts;
    // bits shifted in from the neighbouring byte reach bit 0 only after 8.
    __m512i hb = _mm512_setzero_si512();
    if constexpr (kHighBits) hb = halves_shifted(x.qh, 1);
    __m512i sumi = _mm512_setzero_si512();
    for (int g = 0; g < 4; ++g) {
        __m512i codes = _mm512_and_si512(halves_shifted(x.qs + 32 * g, 4), low_nibble);
        if constexpr (kHighBits) {
            codes = _mm512_or_si512(codes, _mm512_and_si512(_mm512_slli_epi16(hb, 4), bit4));
            hb = _mm512_srli_epi16(hb, 2);
        }
        const short lo = static_cast<short>((4 * g) | (4 * g + 1) << 8);      // int16 2g
        const short hi = static_cast<short>((4 * g + 2) | (4 * g + 3) << 8);  // int16 2g + 1
        const __m512i pick = join(_mm256_set1_epi16(lo), _mm256_set1_epi16(hi));
        const __m512i p = _mm512_maddubs_epi16(codes, _mm512_loadu_si512(y.qs + 64 * g));
        sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p, _mm512_shuffle_epi8(scales16, pick)));
    }
    const float d = y.d * half_to_float(x.d);
    const float dmin = y.d * half_to_float(x.dmin);
    *min_acc = _mm_fmadd_ps(_mm_set1_ps(dmin), _mm_cvtepi32_ps(k_min_products(scales_mins, y.bsums)), *min_acc);
    return _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(fold(sumi)), acc);
}

}  // namespace

void vec_dot_q4_K_avx512(int64_t n, float* out, const void* w, const void* a) {
    const block_q4_K* x = static_cast<const block_q4_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(a);
    __m256 acc = _mm256_setzero_ps();
    __m128 min_acc = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i)
        acc = k_superblock<false>(x[i], y[i], acc, &min_acc);
    *out = hsum(acc) - hsum(min_acc);
}

void vec_dot_q5_K_avx512(int64_t n, float* out, const void* w, const void* a) {
    const block_q5_K* x = static_cast<const block_q5_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(a);
    __m256 acc = _mm256_setzero_ps();
    __m128 min_acc = _mm_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i)
        acc = k_superblock<true>(x[i], y[i], acc, &min_acc);
    *out = hsum(acc) - hsum(min_acc);
}

// q6_K: per half of 128 values, ql[0..63] is one register whose low nibbles are values 0..63
// and high nibbles values 64..127; qh[0..31] supplies bits 4-5 of value r from bits
// 2 * (r / 32). Codes stay unsigned (0..63) for maddubs and the -32 comes off once per
// super-block as 32 * sum_s scale[s] * bsums[s].
void vec_dot_q6_K_avx512(int64_t n, float* out, const void* w, const void* a) {
    const block_q6_K* x = static_cast<const block_q6_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(a);
    const __m512i low_nibble = _mm512_set1_epi8(0x0F);
    const __m512i bits45 = _mm512_set1_epi8(0x30);
    __m512i pick[4];
    for (int r = 0; r < 4; ++r) pick[r] = _mm512_load_si512(kQ6KScalePick.idx[r]);
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const __m256i scales = _mm256_cvtepi8_epi16(load128(x[i].scales));
        const __m512i scales512 = _mm512_castsi256_si512(scales);
        const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(scales, load256(y[i].bsums)), 5);
        __m512i sumi = _mm512_setzero_si512();
        for (int h = 0; h < 2; ++h) {
            const __m512i ql = _mm512_loadu_si512(x[i].ql + 64 * h);
            // Low half: qh bits 0-1 (values 0..31) and, from the upper half, bits 2-3 (32..63);
            // after the nibble swap the same register gives bits 4-5 and 6-7.
            const __m512i qh2 = halves_shifted(x[i].qh + 32 * h, 2);
            const __m512i lo = _mm512_or_si512(_mm512_and_si512(ql, low_nibble),
                                               _mm512_and_si512(_mm512_slli_epi16(qh2, 4), bits45));
            const __m512i hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low_nibble),
                                               _mm512_and_si512(qh2, bits45));
            const int8_t* q8 = y[i].qs + 128 * h;
            const __m512i p_lo = _mm512_maddubs_epi16(lo, _mm512_loadu_si512(q8));
            const __m512i p_hi = _mm512_maddubs_epi16(hi, _mm512_loadu_si512(q8 + 64));
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p_lo, _mm512_permutexvar_epi16(pick[2 * h], scales512)));
            sumi = _mm512_add_epi32(sumi, _mm512_madd_epi16(p_hi, _mm512_permutexvar_epi16(pick[2 * h + 1], scales512)));
        }
        const __m256i total = _mm256_sub_epi32(fold(sumi), offset);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(y[i].d * half_to_float(x[i].d)), _mm256_cvtepi32_ps(total), acc);
    }
    *out = hsum(acc);
}

}  // namespace decollama
