// AVX-512 (F/BW/VL/DQ) dots of the float types and the 32-value block types, and the AVX-512
// activation quantizers. K-quant dots: dot_kquants_avx512.cpp.
//
// The 32-value block dots put two blocks in one 512-bit register; an odd last block takes
// the 256-bit code of simd_x86.h.

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

// ---- float rows ----------------------------------------------------------------------------

struct LoadF32 {
    const float* p;
    __m512 load16(int64_t i) const { return _mm512_loadu_ps(p + i); }
    __m512 load_masked(int64_t i, __mmask16 m) const { return _mm512_maskz_loadu_ps(m, p + i); }
};
struct LoadF16 {
    const uint16_t* p;
    __m512 load16(int64_t i) const { return _mm512_cvtph_ps(load256(p + i)); }
    __m512 load_masked(int64_t i, __mmask16 m) const { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p + i)); }
};
struct LoadBF16 {
    const uint16_t* p;
    static __m512 widen(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }
    __m512 load16(int64_t i) const { return widen(load256(p + i)); }
    __m512 load_masked(int64_t i, __mmask16 m) const { return widen(_mm256_maskz_loadu_epi16(m, p + i)); }
};

// Four accumulators cover the FMA latency; the last n % 16 values use masked loads, which
// touch no memory past the row.
template <typename Load>
float dot_float_row(int64_t n, Load w, const float* a) {
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    int64_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int k = 0; k < 4; ++k)
            acc[k] = _mm512_fmadd_ps(w.load16(i + 16 * k), _mm512_loadu_ps(a + i + 16 * k), acc[k]);
    for (; i + 16 <= n; i += 16) acc[0] = _mm512_fmadd_ps(w.load16(i), _mm512_loadu_ps(a + i), acc[0]);
    if (i < n) {
        const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
        acc[1] = _mm512_fmadd_ps(w.load_masked(i, m), _mm512_maskz_loadu_ps(m, a + i), acc[1]);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

// ---- 32-value blocks, two per register -----------------------------------------------------

// Two blocks' 32 4-bit codes in value order: bytes 0..31 block x0, 32..63 block x1. Each
// qs is broadcast into two 128-bit lanes and the second lane of each pair shifted to its
// high nibbles.
inline __m512i unpack_nibbles64(const uint8_t* qs0, const uint8_t* qs1) {
    const __m512i both = _mm512_mask_broadcast_i32x4(_mm512_broadcast_i32x4(load128(qs0)), 0xFF00, load128(qs1));
    const __m512i shifted = _mm512_mask_srli_epi16(both, 0xFF00FF00u, both, 4);
    return _mm512_and_si512(shifted, _mm512_set1_epi8(0x0F));
}

// The 5th bits of two q5 blocks: +16 on every code whose qh bit is set.
inline __m512i add_q5_high_bits(__m512i codes, const uint8_t* qh0, const uint8_t* qh1) {
    uint32_t h0, h1;
    std::memcpy(&h0, qh0, 4);
    std::memcpy(&h1, qh1, 4);
    const __mmask64 high = _cvtu64_mask64(uint64_t(h0) | uint64_t(h1) << 32);
    return _mm512_mask_add_epi8(codes, high, codes, _mm512_set1_epi8(16));
}

inline __m512i join(__m256i lo, __m256i hi) { return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1); }

inline __m512i activations64(const int8_t* q0, const int8_t* q1) { return join(load256(q0), load256(q1)); }

// 16 int32 partial sums (8 per block) of sum (u - offset) * s; see dot_u8_offset_s8.
inline __m512i dot_u8_offset_s8(__m512i u, __m512i offset, __m512i s) {
    const __m512i pairs = _mm512_sub_epi16(_mm512_maddubs_epi16(u, s), _mm512_maddubs_epi16(offset, s));
    return _mm512_madd_epi16(pairs, _mm512_set1_epi16(1));
}
inline __m512i dot_u8_s8(__m512i u, __m512i s) {
    return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
}
// |w| * (s * sign(w)); AVX-512 has no vpsignb, so s is negated under the mask w < 0.
// Exact for s in [-127, 127] (see dot_simd.h).
inline __m512i dot_s8_s8(__m512i w, __m512i s) {
    const __m512i s_signed = _mm512_mask_sub_epi8(s, _mm512_movepi8_mask(w), _mm512_setzero_si512(), s);
    return dot_u8_s8(_mm512_abs_epi8(w), s_signed);
}

inline __m512i pair_isum(const block_q4_0& x0, const block_q4_0& x1, const block_q8_0& y0, const block_q8_0& y1) {
    return dot_u8_offset_s8(unpack_nibbles64(x0.qs, x1.qs), _mm512_set1_epi8(8), activations64(y0.qs, y1.qs));
}
inline __m512i pair_isum(const block_q4_1& x0, const block_q4_1& x1, const block_q8_1& y0, const block_q8_1& y1) {
    return dot_u8_s8(unpack_nibbles64(x0.qs, x1.qs), activations64(y0.qs, y1.qs));
}
inline __m512i pair_isum(const block_q5_0& x0, const block_q5_0& x1, const block_q8_0& y0, const block_q8_0& y1) {
    const __m512i codes = add_q5_high_bits(unpack_nibbles64(x0.qs, x1.qs), x0.qh, x1.qh);
    return dot_u8_offset_s8(codes, _mm512_set1_epi8(16), activations64(y0.qs, y1.qs));
}
inline __m512i pair_isum(const block_q5_1& x0, const block_q5_1& x1, const block_q8_1& y0, const block_q8_1& y1) {
    const __m512i codes = add_q5_high_bits(unpack_nibbles64(x0.qs, x1.qs), x0.qh, x1.qh);
    return dot_u8_s8(codes, activations64(y0.qs, y1.qs));
}
inline __m512i pair_isum(const block_q8_0& x0, const block_q8_0& x1, const block_q8_0& y0, const block_q8_0& y1) {
    return dot_s8_s8(activations64(x0.qs, x1.qs), activations64(y0.qs, y1.qs));
}

// Sum over blocks of scale * isum (+ min terms), two blocks per register. Eight blocks at a
// time convert their scales together, and vpermps spreads each pair's two over its halves.
template <typename W, typename A>
float dot_blocks32(int64_t n, const void* wv, const void* av) {
    const W* x = static_cast<const W*>(wv);
    const A* y = static_cast<const A*>(av);
    const int64_t nb = n / 32;
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    __m256 min_acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        const __m256 scales = _mm256_mul_ps(halves8(x + i, &W::d), halves8(y + i, &A::d));
        for (int p = 0; p < 4; ++p) {
            const __m512i pick = join(_mm256_set1_epi32(2 * p), _mm256_set1_epi32(2 * p + 1));
            const __m512 scale = _mm512_permutexvar_ps(pick, _mm512_castps256_ps512(scales));
            const int64_t b = i + 2 * p;
            acc[p & 1] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(pair_isum(x[b], x[b + 1], y[b], y[b + 1])), acc[p & 1]);
        }
        min_acc = chunk_min_terms(x + i, y + i, min_acc);
    }
    float tail_min = 0.0f;
    for (; i + 2 <= nb; i += 2) {
        const __m512 scale = _mm512_insertf32x8(_mm512_set1_ps(block_scale(x[i], y[i])),
                                                _mm256_set1_ps(block_scale(x[i + 1], y[i + 1])), 1);
        acc[0] = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(pair_isum(x[i], x[i + 1], y[i], y[i + 1])), acc[0]);
        tail_min += block_min_term(x[i], y[i]) + block_min_term(x[i + 1], y[i + 1]);
    }
    float sum = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) + hsum(min_acc) + tail_min;
    if (i < nb)
        sum += block_scale(x[i], y[i]) * hsum(_mm256_cvtepi32_ps(block_isum(x[i], y[i]))) + block_min_term(x[i], y[i]);
    return sum;
}

// ---- activation quantizers -----------------------------------------------------------------

// max(acc, |v|) ignoring NaN in v, like std::fmax(acc, std::fabs(v)) (maxps returns its
// second operand when either is NaN).
inline __m512 max_abs(__m512 acc, __m512 v) { return _mm512_max_ps(_mm512_abs_ps(v), acc); }

// std::round exactly (see the AVX2 version): trunc, then one step away from zero where the
// exact fraction is at least one half.
inline __m512 round_half_away(__m512 v) {
    const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __mmask16 away = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    const __m512 one_signed = _mm512_or_ps(_mm512_and_ps(v, _mm512_set1_ps(-0.0f)), _mm512_set1_ps(1.0f));
    return _mm512_mask_add_ps(t, away, t, one_signed);
}

// Clamp to [-127, 127] with NaN -> -127 (the scalar clamp_to_int8_code), then 16 int8.
inline __m128i clamp_code(__m512 r) {
    const __m512 lo = _mm512_max_ps(r, _mm512_set1_ps(-127.0f));  // NaN in r: -127
    return _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(_mm512_min_ps(lo, _mm512_set1_ps(127.0f))));
}

// One q8_0/q8_1 block: d = amax / 127, codes round_half_away(x / d), written to qs.
inline float quantize_block32(const float* x, int8_t* qs) {
    const __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
    const float d = _mm512_reduce_max_ps(max_abs(max_abs(_mm512_setzero_ps(), v0), v1)) / 127.0f;
    const __m512 inverse = _mm512_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    const __m128i c0 = clamp_code(round_half_away(_mm512_mul_ps(v0, inverse)));
    const __m128i c1 = clamp_code(round_half_away(_mm512_mul_ps(v1, inverse)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qs), _mm256_set_m128i(c1, c0));
    return d;
}

}  // namespace

// ---- exported kernels --------------------------------------------------------------------------

void vec_dot_f32_avx512(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_float_row(n, LoadF32{static_cast<const float*>(w)}, static_cast<const float*>(a));
}
void vec_dot_f16_avx512(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_float_row(n, LoadF16{static_cast<const uint16_t*>(w)}, static_cast<const float*>(a));
}
void vec_dot_bf16_avx512(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_float_row(n, LoadBF16{static_cast<const uint16_t*>(w)}, static_cast<const float*>(a));
}

void vec_dot_q4_0_avx512(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_blocks32<block_q4_0, block_q8_0>(n, w, a);
}
void vec_dot_q4_1_avx512(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_blocks32<block_q4_1, block_q8_1>(n, w, a);
}
void vec_dot_q5_0_avx512(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_blocks32<block_q5_0, block_q8_0>(n, w, a);
}
void vec_dot_q5_1_avx512(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_blocks32<block_q5_1, block_q8_1>(n, w, a);
}
void vec_dot_q8_0_avx512(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_blocks32<block_q8_0, block_q8_0>(n, w, a);
}

void quantize_row_q8_0_avx512(const float* src, void* dst, int64_t n) {
    block_q8_0* b = static_cast<block_q8_0*>(dst);
    for (int64_t i = 0; i < n / QK8_0; ++i, src += QK8_0) b[i].d = float_to_half(quantize_block32(src, b[i].qs));
}

void quantize_row_q8_1_avx512(const float* src, void* dst, int64_t n) {
    block_q8_1* b = static_cast<block_q8_1*>(dst);
    for (int64_t i = 0; i < n / QK8_1; ++i, src += QK8_1) {
        const float d = quantize_block32(src, b[i].qs);
        const __m512i codes = _mm512_cvtepi8_epi32(load128(b[i].qs));
        const __m512i codes_hi = _mm512_cvtepi8_epi32(load128(b[i].qs + 16));
        const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(codes, codes_hi));
        b[i].d = float_to_half(d);
        b[i].s = float_to_half(float(sum) * d);
    }
}

// q8_K: the first value of largest magnitude maps to -127, codes round half to even, d =
// 1 / inverse (the scalar quantize_row_q8_K arithmetic).
void quantize_row_q8_K_avx512(const float* src, void* dst, int64_t n) {
    block_q8_K* b = static_cast<block_q8_K*>(dst);
    for (int64_t i = 0; i < n / QK_K; ++i, src += QK_K) {
        __m512 amax_v = _mm512_setzero_ps();
        for (int j = 0; j < QK_K; j += 16) amax_v = max_abs(amax_v, _mm512_loadu_ps(src + j));
        const float amax = _mm512_reduce_max_ps(amax_v);
        if (amax == 0.0f) {  // also all-NaN: the scalar search finds no |x| > 0 either
            b[i].d = 0.0f;
            std::memset(b[i].qs, 0, sizeof(b[i].qs));
            std::memset(b[i].bsums, 0, sizeof(b[i].bsums));
            continue;
        }
        float max = 0.0f;
        const __m512 target = _mm512_set1_ps(amax);
        for (int j = 0; j < QK_K; j += 16) {
            const __mmask16 hit =
                _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(src + j)), target, _CMP_EQ_OQ);
            if (hit != 0) {
                max = src[j + __builtin_ctz(static_cast<unsigned>(hit))];
                break;
            }
        }
        const float inverse = -127.0f / max;
        const __m512 inv = _mm512_set1_ps(inverse);
        for (int j = 0; j < QK_K; j += 16) {
            const __m512 v = _mm512_mul_ps(inv, _mm512_loadu_ps(src + j));
            _mm_storeu_si128(reinterpret_cast<__m128i*>(b[i].qs + j),
                             clamp_code(_mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)));
        }
        q8_K_bsums(b[i].qs, b[i].bsums);
        b[i].d = 1.0f / inverse;
    }
}

}  // namespace decollama
