// AVX2 dots of the float types and the 32-value block types, and the AVX2 activation
// quantizers. K-quant dots: dot_kquants_avx2.cpp.
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
    __m256 load8(int64_t i) const { return _mm256_loadu_ps(p + i); }
    float load1(int64_t i) const { return p[i]; }
};
struct LoadF16 {
    const uint16_t* p;
    __m256 load8(int64_t i) const { return _mm256_cvtph_ps(load128(p + i)); }
    float load1(int64_t i) const { return half_to_float(p[i]); }
};
struct LoadBF16 {
    const uint16_t* p;
    __m256 load8(int64_t i) const {
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load128(p + i)), 16));
    }
    float load1(int64_t i) const {
        const uint32_t bits = uint32_t(p[i]) << 16;
        float f;
        std::memcpy(&f, &bits, 4);
        return f;
    }
};

// Four independent accumulators cover the FMA latency; the tail (n need not be a multiple
// of anything for float rows) goes 8 at a time, then one by one.
template <typename Load>
float dot_float_row(int64_t n, Load w, const float* a) {
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; ++k)
            acc[k] = _mm256_fmadd_ps(w.load8(i + 8 * k), _mm256_loadu_ps(a + i + 8 * k), acc[k]);
    for (; i + 8 <= n; i += 8) acc[0] = _mm256_fmadd_ps(w.load8(i), _mm256_loadu_ps(a + i), acc[0]);
    float sum = hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; ++i) sum += w.load1(i) * a[i];
    return sum;
}

// ---- 32-value blocks -----------------------------------------------------------------------

// Sum over blocks of scale * isum (+ min terms). Eight blocks at a time convert their
// scales together; two float accumulators let consecutive blocks' FMAs overlap.
template <typename W, typename A>
float dot_blocks32(int64_t n, const void* wv, const void* av) {
    const W* x = static_cast<const W*>(wv);
    const A* y = static_cast<const A*>(av);
    const int64_t nb = n / 32;
    __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    __m256 min_acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= nb; i += 8) {
        const __m256 scales = _mm256_mul_ps(halves8(x + i, &W::d), halves8(y + i, &A::d));
        for (int k = 0; k < 8; ++k) {
            const __m256 scale = _mm256_permutevar8x32_ps(scales, _mm256_set1_epi32(k));
            acc[k & 1] = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(block_isum(x[i + k], y[i + k])), acc[k & 1]);
        }
        min_acc = chunk_min_terms(x + i, y + i, min_acc);
    }
    float tail_min = 0.0f;
    for (; i < nb; ++i) {
        acc[i & 1] = _mm256_fmadd_ps(_mm256_set1_ps(block_scale(x[i], y[i])),
                                     _mm256_cvtepi32_ps(block_isum(x[i], y[i])), acc[i & 1]);
        tail_min += block_min_term(x[i], y[i]);
    }
    return hsum(_mm256_add_ps(acc[0], acc[1])) + hsum(min_acc) + tail_min;
}

// ---- activation quantizers -----------------------------------------------------------------

// (No namespace-scope vector constants: their initializers would run AVX code at load time.)
inline __m256 sign_bit() { return _mm256_set1_ps(-0.0f); }
inline __m256 abs_ps(__m256 v) { return _mm256_andnot_ps(sign_bit(), v); }

// max(acc, |v|) ignoring NaN in v, like std::fmax(acc, std::fabs(v)): maxps returns its
// second operand when either is NaN.
inline __m256 max_abs(__m256 acc, __m256 v) { return _mm256_max_ps(abs_ps(v), acc); }

inline float hmax(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

// std::round (half away from zero), exactly: v - trunc(v) is exact, and only a fraction of
// at least one half moves the result away from zero. (Adding 0.5 and truncating is not
// exact: 0.49999997f + 0.5f rounds up to 1.)
inline __m256 round_half_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 away = _mm256_cmp_ps(abs_ps(_mm256_sub_ps(v, t)), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one_signed = _mm256_or_ps(_mm256_and_ps(v, sign_bit()), _mm256_set1_ps(1.0f));
    return _mm256_add_ps(t, _mm256_and_ps(away, one_signed));
}

// Clamp to [-127, 127] with NaN -> -127, the scalar clamp_to_int8_code, then int32.
inline __m256i clamp_code(__m256 r) {
    const __m256 lo = _mm256_max_ps(r, _mm256_set1_ps(-127.0f));  // NaN in r: -127
    return _mm256_cvtps_epi32(_mm256_min_ps(lo, _mm256_set1_ps(127.0f)));
}

// 32 int32 codes (4 registers) -> 32 int8 in value order. packs works within 128-bit lanes,
// so the 4-value dwords come out as 0,2,4,6,1,3,5,7 and one permute restores the order.
inline __m256i pack_codes32(__m256i c0, __m256i c1, __m256i c2, __m256i c3) {
    const __m256i w01 = _mm256_packs_epi32(c0, c1);
    const __m256i w23 = _mm256_packs_epi32(c2, c3);
    const __m256i b = _mm256_packs_epi16(w01, w23);
    return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// One q8_0/q8_1 block: scale d = amax / 127 and codes round_half_away(x / d) (the scalar
// symmetric_scale_127 arithmetic). Returns the codes; d through *d.
inline __m256i quantize_block32(const float* x, float* d) {
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        amax = max_abs(amax, v[k]);
    }
    *d = hmax(amax) / 127.0f;
    const __m256 inverse = _mm256_set1_ps(*d != 0.0f ? 1.0f / *d : 0.0f);
    __m256i c[4];
    for (int k = 0; k < 4; ++k) c[k] = clamp_code(round_half_away(_mm256_mul_ps(v[k], inverse)));
    return pack_codes32(c[0], c[1], c[2], c[3]);
}

inline int32_t sum_codes32(__m256i codes) {
    const __m256i s = dot_u8_s8(_mm256_set1_epi8(1), codes);
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    t = _mm_add_epi32(t, _mm_unpackhi_epi64(t, t));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 1));
    return _mm_cvtsi128_si32(t);
}

}  // namespace

// ---- exported kernels --------------------------------------------------------------------------

void vec_dot_f32_avx2(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_float_row(n, LoadF32{static_cast<const float*>(w)}, static_cast<const float*>(a));
}
void vec_dot_f16_avx2(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_float_row(n, LoadF16{static_cast<const uint16_t*>(w)}, static_cast<const float*>(a));
}
void vec_dot_bf16_avx2(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_float_row(n, LoadBF16{static_cast<const uint16_t*>(w)}, static_cast<const float*>(a));
}

void vec_dot_q4_0_avx2(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_blocks32<block_q4_0, block_q8_0>(n, w, a);
}
void vec_dot_q4_1_avx2(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_blocks32<block_q4_1, block_q8_1>(n, w, a);
}
void vec_dot_q5_0_avx2(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_blocks32<block_q5_0, block_q8_0>(n, w, a);
}
void vec_dot_q5_1_avx2(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_blocks32<block_q5_1, block_q8_1>(n, w, a);
}
void vec_dot_q8_0_avx2(int64_t n, float* out, const void* w, const void* a) {
    *out = dot_blocks32<block_q8_0, block_q8_0>(n, w, a);
}

void quantize_row_q8_0_avx2(const float* src, void* dst, int64_t n) {
    block_q8_0* b = static_cast<block_q8_0*>(dst);
    for (int64_t i = 0; i < n / QK8_0; ++i, src += QK8_0) {
        float d;
        const __m256i codes = quantize_block32(src, &d);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(b[i].qs), codes);
        b[i].d = float_to_half(d);
    }
}

void quantize_row_q8_1_avx2(const float* src, void* dst, int64_t n) {
    block_q8_1* b = static_cast<block_q8_1*>(dst);
    for (int64_t i = 0; i < n / QK8_1; ++i, src += QK8_1) {
        float d;
        const __m256i codes = quantize_block32(src, &d);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(b[i].qs), codes);
        b[i].d = float_to_half(d);
        b[i].s = float_to_half(float(sum_codes32(codes)) * d);
    }
}

// q8_K: the first value of largest magnitude maps to -127, codes round half to even
// (cvtps2dq in the default rounding mode, as the scalar nearbyint), d = 1 / inverse.
void quantize_row_q8_K_avx2(const float* src, void* dst, int64_t n) {
    block_q8_K* b = static_cast<block_q8_K*>(dst);
    for (int64_t i = 0; i < n / QK_K; ++i, src += QK_K) {
        __m256 amax_v = _mm256_setzero_ps();
        for (int j = 0; j < QK_K; j += 8) amax_v = max_abs(amax_v, _mm256_loadu_ps(src + j));
        const float amax = hmax(amax_v);
        if (amax == 0.0f) {  // also all-NaN: the scalar search finds no |x| > 0 either
            b[i].d = 0.0f;
            std::memset(b[i].qs, 0, sizeof(b[i].qs));
            std::memset(b[i].bsums, 0, sizeof(b[i].bsums));
            continue;
        }
        // The sign comes from the first element reaching amax, as the scalar scan keeps it.
        float max = 0.0f;
        const __m256 target = _mm256_set1_ps(amax);
        for (int j = 0; j < QK_K; j += 8) {
            const int hit = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(src + j)), target, _CMP_EQ_OQ));
            if (hit != 0) {
                max = src[j + __builtin_ctz(static_cast<unsigned>(hit))];
                break;
            }
        }
        const float inverse = -127.0f / max;
        const __m256 inv = _mm256_set1_ps(inverse);
        for (int j = 0; j < QK_K; j += 32) {
            __m256i c[4];
            for (int k = 0; k < 4; ++k) {
                const __m256 v = _mm256_mul_ps(inv, _mm256_loadu_ps(src + j + 8 * k));
                c[k] = clamp_code(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
            }
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(b[i].qs + j), pack_codes32(c[0], c[1], c[2], c[3]));
        }
        q8_K_bsums(b[i].qs, b[i].bsums);
        b[i].d = 1.0f / inverse;
    }
}

}  // namespace decollama
