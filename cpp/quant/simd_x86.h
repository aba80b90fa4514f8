// 256-bit helpers shared by the AVX2 and AVX-512 kernel files. Include ONLY from *_avx2.cpp /
// *_avx512.cpp (they need at least AVX2+FMA+F16C).
//
// Everything here has internal linkage on purpose: the same inline function compiled with
// different ISA flags in two files would be one symbol to the linker, which may keep the
// AVX-512 copy for the AVX2 caller. For the same reason the kernel files call no inline
// function of the shared headers (fp16.h...): F16C intrinsics convert halves instead.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/block_structs.h"

namespace decollama {
namespace {  // NOLINT(build/namespaces): see above

inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

// Round to nearest even, as fp32_to_fp16: for every input, NaN included, the bits agree.
inline uint16_t float_to_half(float f) {
    return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

inline float hsum(__m128 v) {
    v = _mm_add_ps(v, _mm_movehl_ps(v, v));
    v = _mm_add_ss(v, _mm_movehdup_ps(v));
    return _mm_cvtss_f32(v);
}

inline float hsum(__m256 v) {
    return hsum(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1)));
}

inline __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }
inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

// ---- integer dot products of 32 int8 activations -----------------------------------------
// maddubs multiplies unsigned by signed bytes and adds adjacent pairs into int16: exact as
// long as a pair cannot pass 32767, which every caller's value ranges guarantee.

// 8 int32 lanes, each the sum of 4 adjacent products u * s. u <= 127: any s is exact.
inline __m256i dot_u8_s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// As dot_u8_s8 for codes u - offset: the offset is subtracted from the int16 pair sums, so
// s = -128 stays exact (unlike the abs/sign trick). Needs (max(u) + offset) * 256 < 32768.
inline __m256i dot_u8_offset_s8(__m256i u, __m256i offset, __m256i s) {
    const __m256i pairs = _mm256_sub_epi16(_mm256_maddubs_epi16(u, s), _mm256_maddubs_epi16(offset, s));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
}

// Signed w (any int8) times s in [-127, 127]: |w| * (s * sign(w)). s = -128 would not negate.
inline __m256i dot_s8_s8(__m256i w, __m256i s) {
    return dot_u8_s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(s, w));
}

// ---- unpacking the 32-value blocks -------------------------------------------------------

// The 32 4-bit codes of q4_0/q4_1/q5_*: value j < 16 is the low nibble of qs[j], value
// j + 16 its high nibble.
inline __m256i unpack_nibbles32(const uint8_t* qs) {
    const __m128i x = load128(qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(x, 4), x), _mm256_set1_epi8(0x0F));
}

// 0x10 in byte j where bit j of the q5 high-bit word is set.
inline __m256i q5_high_bits32(const uint8_t qh[4]) {
    uint32_t bits;
    std::memcpy(&bits, qh, 4);
    // Byte j takes the qh byte holding its bit (j / 8), then tests bit j % 8.
    const __m256i spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(static_cast<int>(bits)),
        _mm256_setr_epi64x(0x0000000000000000, 0x0101010101010101, 0x0202020202020202,
                           0x0303030303030303));
    const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

// ---- one 32-value block: the integer sum of products as 8 int32 partial sums -------------
// (the AVX2 loops, and the odd last block of the 2-blocks-per-register AVX-512 loops)

inline __m256i block_isum(const block_q4_0& x, const block_q8_0& y) {
    return dot_u8_offset_s8(unpack_nibbles32(x.qs), _mm256_set1_epi8(8), load256(y.qs));
}
inline __m256i block_isum(const block_q4_1& x, const block_q8_1& y) {
    return dot_u8_s8(unpack_nibbles32(x.qs), load256(y.qs));
}
inline __m256i block_isum(const block_q5_0& x, const block_q8_0& y) {
    const __m256i codes = _mm256_or_si256(unpack_nibbles32(x.qs), q5_high_bits32(x.qh));
    return dot_u8_offset_s8(codes, _mm256_set1_epi8(16), load256(y.qs));
}
inline __m256i block_isum(const block_q5_1& x, const block_q8_1& y) {
    const __m256i codes = _mm256_or_si256(unpack_nibbles32(x.qs), q5_high_bits32(x.qh));
    return dot_u8_s8(codes, load256(y.qs));
}
inline __m256i block_isum(const block_q8_0& x, const block_q8_0& y) {
    return dot_s8_s8(load256(x.qs), load256(y.qs));
}

// The fp16 field `f` (d, m or s) of 8 consecutive blocks as 8 floats: one conversion for
// eight blocks instead of one per block.
template <typename B>
inline __m256 halves8(const B* b, uint16_t B::*f) {
    return _mm256_cvtph_ps(_mm_setr_epi16(static_cast<short>(b[0].*f), static_cast<short>(b[1].*f),
                                          static_cast<short>(b[2].*f), static_cast<short>(b[3].*f),
                                          static_cast<short>(b[4].*f), static_cast<short>(b[5].*f),
                                          static_cast<short>(b[6].*f), static_cast<short>(b[7].*f)));
}

// acc + m * s of 8 blocks for the types with a min; acc unchanged for the others.
inline __m256 chunk_min_terms(const block_q4_1* x, const block_q8_1* y, __m256 acc) {
    return _mm256_fmadd_ps(halves8(x, &block_q4_1::m), halves8(y, &block_q8_1::s), acc);
}
inline __m256 chunk_min_terms(const block_q5_1* x, const block_q8_1* y, __m256 acc) {
    return _mm256_fmadd_ps(halves8(x, &block_q5_1::m), halves8(y, &block_q8_1::s), acc);
}
template <typename W, typename A>
inline __m256 chunk_min_terms(const W*, const A*, __m256 acc) { return acc; }

// The weight-scale times activation-scale of a block, and (blocks with a min) m * s.
template <typename W, typename A>
inline float block_scale(const W& x, const A& y) { return half_to_float(x.d) * half_to_float(y.d); }
inline float block_min_term(const block_q4_1& x, const block_q8_1& y) {
    return half_to_float(x.m) * half_to_float(y.s);
}
inline float block_min_term(const block_q5_1& x, const block_q8_1& y) {
    return half_to_float(x.m) * half_to_float(y.s);
}
template <typename W, typename A>
inline float block_min_term(const W&, const A&) { return 0.0f; }

// ---- K-quants --------------------------------------------------------------------------------

// The 8 scales (bytes 0..7) and 8 mins (bytes 8..15) of a q4_K/q5_K super-block, unpacked
// four at a time in 32-bit words (layout: quant/types/k_quant_scales.h).
inline __m128i unpack_k_scales_mins(const uint8_t packed[K_SCALE_SIZE]) {
    uint32_t w[3];
    std::memcpy(w, packed, sizeof(w));
    const uint32_t scales_lo = w[0] & 0x3F3F3F3Fu;
    const uint32_t mins_lo = w[1] & 0x3F3F3F3Fu;
    const uint32_t scales_hi = (w[2] & 0x0F0F0F0Fu) | ((w[0] >> 2) & 0x30303030u);
    const uint32_t mins_hi = ((w[2] >> 4) & 0x0F0F0F0Fu) | ((w[1] >> 2) & 0x30303030u);
    return _mm_setr_epi32(static_cast<int>(scales_lo), static_cast<int>(scales_hi),
                          static_cast<int>(mins_lo), static_cast<int>(mins_hi));
}

// sum_s mins[s] * (bsums[2s] + bsums[2s+1]) as 4 int32 partial sums; mins in bytes 8..15.
inline __m128i k_min_products(__m128i scales_mins, const int16_t bsums[QK_K / 16]) {
    const __m128i sub_sums = _mm_hadd_epi16(load128(bsums), load128(bsums + 8));  // |.| <= 4096
    const __m128i mins = _mm_cvtepu8_epi16(_mm_unpackhi_epi64(scales_mins, scales_mins));
    return _mm_madd_epi16(mins, sub_sums);
}

// The bsums of a q8_K block from its 256 codes: sums of each 16.
inline void q8_K_bsums(const int8_t qs[QK_K], int16_t bsums[QK_K / 16]) {
    const __m256i ones8 = _mm256_set1_epi8(1);
    __m256i quads[8];  // quads[r] lane k: sum of codes 32r + 4k .. +3
    for (int r = 0; r < 8; ++r) quads[r] = dot_u8_s8(ones8, load256(qs + 32 * r));
    // Two rounds of in-lane hadd: lane 0 ends with groups 0,2,4,6 (r = 0..3) and lane 1 with
    // groups 1,3,5,7, because register r holds group 2r in its low and 2r+1 in its high lane.
    const __m256i h01 = _mm256_hadd_epi32(quads[0], quads[1]);
    const __m256i h23 = _mm256_hadd_epi32(quads[2], quads[3]);
    const __m256i h45 = _mm256_hadd_epi32(quads[4], quads[5]);
    const __m256i h67 = _mm256_hadd_epi32(quads[6], quads[7]);
    const __m256i g_lo = _mm256_hadd_epi32(h01, h23);  // [g0 g2 g4 g6 | g1 g3 g5 g7]
    const __m256i g_hi = _mm256_hadd_epi32(h45, h67);  // [g8 ... g14 | g9 ... g15]
    const __m256i packed = _mm256_packs_epi32(g_lo, g_hi);  // [even groups | odd groups]
    const __m128i even = _mm256_castsi256_si128(packed);
    const __m128i odd = _mm256_extracti128_si256(packed, 1);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bsums), _mm_unpacklo_epi16(even, odd));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(bsums + 8), _mm_unpackhi_epi16(even, odd));
}

}  // namespace
}  // namespace decollama
