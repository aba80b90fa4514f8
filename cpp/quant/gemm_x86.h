// Multi-row x multi-token dot tiles (GemmTileFn, weight_types.h) shared by gemm_avx2.cpp and
// gemm_avx512.cpp. Include ONLY from those files (internal linkage, ISA flags: simd_x86.h).
//
// A tile unpacks each weight block once and multiplies it with the block of every token of
// the tile, instead of once per (row, token) dot: prefill reuses the unpacked codes T times.
// Decode (T = 1) is bound by streaming the weights and goes row by row (see dispatch_tile);
// it still gains the cheaper scale handling and, with VNNI, the one-instruction block dot.
// All vectors are 256-bit: AVX-512 on Zen 4 gains nothing from 512-bit ops here, but its
// 32 registers hold a 4 x 4 tile's accumulators.
//
// Integer sums stay exact per block exactly as in the one-row dots; only the float summation
// order across blocks differs.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "quant/block_structs.h"
#include "quant/simd_x86.h"

namespace decollama {
namespace {  // NOLINT(build/namespaces): internal linkage, see simd_x86.h

// The fp16 scale at p in all 8 lanes.
inline __m256 broadcast_half(const uint16_t& h) {
    return _mm256_cvtph_ps(_mm_set1_epi16(static_cast<short>(h)));
}

// The horizontal sum in store_hsum4's order, ((0+1)+(2+3)) + ((4+5)+(6+7)): a row's result
// then does not depend on whether it ran in a group of four, so a token's logits are the same
// bits in prefill and in decode.
inline float hsum_tile(__m256 v) {
    const __m256 s = _mm256_hadd_ps(v, v);
    const __m256 q = _mm256_hadd_ps(s, s);
    return _mm_cvtss_f32(_mm_add_ss(_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1)));
}

// y[0..3] = horizontal sums of v[0..3].
inline void store_hsum4(const __m256 v[4], float* y) {
    const __m256 s01 = _mm256_hadd_ps(v[0], v[1]);  // [0a 0b 1a 1b | 0c 0d 1c 1d]
    const __m256 s23 = _mm256_hadd_ps(v[2], v[3]);
    const __m256 s = _mm256_hadd_ps(s01, s23);      // [0 1 2 3 | 0 1 2 3] partial
    _mm_storeu_ps(y, _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
}

// ---- 32-value blocks with q8_0 activations (q4_0, q5_0, q8_0) -----------------------------
// A kernel policy K supplies:
//   using Block;                              the weight block
//   static __m256i codes(const Block&);       the block's 32 codes as the kernel's dot wants them
//   static __m256i token_term(__m256i a);     per-token term, computed once per block and token
//   static __m256i isum(__m256i codes, __m256i a, __m256i term);  8 int32 partial sums of
//                                             the block's exact integer dot

template <class K, int R, int T>
void tile_blocks32(int64_t nb, const uint8_t* w, size_t w_stride, const uint8_t* a, size_t a_stride, float* y,
                   int64_t y_stride) {
    using W = typename K::Block;
    __m256 acc[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
        __m256i av[T], term[T];
        __m256 da[T];
        for (int t = 0; t < T; ++t) {
            const block_q8_0& yb = reinterpret_cast<const block_q8_0*>(a + size_t(t) * a_stride)[b];
            av[t] = load256(yb.qs);
            term[t] = K::token_term(av[t]);
            da[t] = broadcast_half(yb.d);
        }
        for (int r = 0; r < R; ++r) {
            const W& xb = reinterpret_cast<const W*>(w + size_t(r) * w_stride)[b];
            const __m256i codes = K::codes(xb);
            const __m256 dw = broadcast_half(xb.d);
            for (int t = 0; t < T; ++t) {
                const __m256 s = _mm256_mul_ps(_mm256_cvtepi32_ps(K::isum(codes, av[t], term[t])), da[t]);
                acc[r][t] = _mm256_fmadd_ps(s, dw, acc[r][t]);
            }
        }
    }
    for (int t = 0; t < T; ++t) {
        if constexpr (R == 4) {
            const __m256 v[4] = {acc[0][t], acc[1][t], acc[2][t], acc[3][t]};
            store_hsum4(v, y + t * y_stride);
        } else {
            for (int r = 0; r < R; ++r) y[t * y_stride + r] = hsum_tile(acc[r][t]);
        }
    }
}

// ---- K-quants with q8_K activations: one row at a time, T tokens share its unpacked codes ---

// int16 scale k of the 8 in s16 (both lanes holding the same 8), in every int16 of both lanes.
inline __m256i tile_broadcast_scale(__m256i s16, int k) {
    const int lo = 2 * k, hi = 2 * k + 1;
    return _mm256_shuffle_epi8(s16, _mm256_set1_epi16(static_cast<short>(lo | hi << 8)));
}

// int16 scale 2k in the low lane and 2k + 1 in the high lane (s16: the same 8 in both lanes).
inline __m256i tile_broadcast_scale_pair(__m256i s16, int k) {
    const short lo = static_cast<short>((4 * k) | (4 * k + 1) << 8);
    const short hi = static_cast<short>((4 * k + 2) | (4 * k + 3) << 8);
    return _mm256_shuffle_epi8(s16,
                               _mm256_setr_epi16(lo, lo, lo, lo, lo, lo, lo, lo, hi, hi, hi, hi, hi, hi, hi, hi));
}

template <int T>
void tile_q4_K_row(int64_t nsb, const block_q4_K* x, const uint8_t* a, size_t a_stride, float* y, int64_t y_stride) {
    __m256 acc[T];
    __m128 min_acc[T];
    for (int t = 0; t < T; ++t) {
        acc[t] = _mm256_setzero_ps();
        min_acc[t] = _mm_setzero_ps();
    }
    const __m256i low_nibble = _mm256_set1_epi8(0x0F);
    for (int64_t i = 0; i < nsb; ++i) {
        const block_q4_K& xb = x[i];
        const block_q8_K* yb[T];
        for (int t = 0; t < T; ++t) yb[t] = reinterpret_cast<const block_q8_K*>(a + size_t(t) * a_stride) + i;
        const __m128i scales_mins = unpack_k_scales_mins(xb.scales);
        const __m256i scales16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scales_mins));
        __m256i sumi[T];
        for (int t = 0; t < T; ++t) sumi[t] = _mm256_setzero_si256();
        for (int g = 0; g < 4; ++g) {
            const __m256i q = load256(xb.qs + 32 * g);
            const __m256i lo = _mm256_and_si256(q, low_nibble);
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), low_nibble);
            const __m256i s_lo = tile_broadcast_scale(scales16, 2 * g);
            const __m256i s_hi = tile_broadcast_scale(scales16, 2 * g + 1);
            for (int t = 0; t < T; ++t) {
                const __m256i p_lo = _mm256_maddubs_epi16(lo, load256(yb[t]->qs + 64 * g));
                const __m256i p_hi = _mm256_maddubs_epi16(hi, load256(yb[t]->qs + 64 * g + 32));
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_add_epi32(_mm256_madd_epi16(p_lo, s_lo),
                                                                     _mm256_madd_epi16(p_hi, s_hi)));
            }
        }
        const float dx = half_to_float(xb.d), dminx = half_to_float(xb.dmin);
        for (int t = 0; t < T; ++t) {
            const float d = yb[t]->d;
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * dx), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
            min_acc[t] = _mm_fmadd_ps(_mm_set1_ps(d * dminx),
                                      _mm_cvtepi32_ps(k_min_products(scales_mins, yb[t]->bsums)), min_acc[t]);
        }
    }
    for (int t = 0; t < T; ++t) y[t * y_stride] = hsum(acc[t]) - hsum(min_acc[t]);
}

template <int T>
void tile_q6_K_row(int64_t nsb, const block_q6_K* x, const uint8_t* a, size_t a_stride, float* y, int64_t y_stride) {
    __m256 acc[T];
    for (int t = 0; t < T; ++t) acc[t] = _mm256_setzero_ps();
    const __m256i low_nibble = _mm256_set1_epi8(0x0F);
    const __m256i bits45 = _mm256_set1_epi8(0x30);
    for (int64_t i = 0; i < nsb; ++i) {
        const block_q6_K& xb = x[i];
        const block_q8_K* yb[T];
        for (int t = 0; t < T; ++t) yb[t] = reinterpret_cast<const block_q8_K*>(a + size_t(t) * a_stride) + i;
        const __m256i scales = _mm256_cvtepi8_epi16(load128(xb.scales));  // 16 int16
        __m256i sumi[T];
        // Codes are q + 32: subtract 32 * sum_s scale[s] * bsums[s] once per super-block.
        for (int t = 0; t < T; ++t)
            sumi[t] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                       _mm256_slli_epi32(_mm256_madd_epi16(scales, load256(yb[t]->bsums)), 5));
        for (int h = 0; h < 2; ++h) {
            const __m256i half_scales =
                h == 0 ? _mm256_permute2x128_si256(scales, scales, 0x00) : _mm256_permute2x128_si256(scales, scales, 0x11);
            const uint8_t* ql = xb.ql + 64 * h;
            const __m256i ql0 = load256(ql), ql1 = load256(ql + 32), qh = load256(xb.qh + 32 * h);
            const __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(ql0, low_nibble), _mm256_and_si256(_mm256_slli_epi16(qh, 4), bits45)),
                _mm256_or_si256(_mm256_and_si256(ql1, low_nibble), _mm256_and_si256(_mm256_slli_epi16(qh, 2), bits45)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low_nibble), _mm256_and_si256(qh, bits45)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low_nibble),
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2), bits45)),
            };
            for (int k = 0; k < 4; ++k) {
                const __m256i s = tile_broadcast_scale_pair(half_scales, k);
                for (int t = 0; t < T; ++t) {
                    const __m256i p = _mm256_maddubs_epi16(q[k], load256(yb[t]->qs + 128 * h + 32 * k));
                    sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, s));
                }
            }
        }
        const float dx = half_to_float(xb.d);
        for (int t = 0; t < T; ++t)
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(yb[t]->d * dx), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
    }
    for (int t = 0; t < T; ++t) y[t * y_stride] = hsum(acc[t]);
}

// ---- float rows (f32 / f16 weights, f32 activations) ---------------------------------------

template <class Load, int R, int T>
void tile_float(int64_t n, const uint8_t* w, size_t w_stride, const uint8_t* a, size_t a_stride, float* y,
                int64_t y_stride) {
    __m256 acc[R][T];
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 av[T];
        for (int t = 0; t < T; ++t) av[t] = _mm256_loadu_ps(reinterpret_cast<const float*>(a + size_t(t) * a_stride) + i);
        for (int r = 0; r < R; ++r) {
            const __m256 wv = Load::load8(w + size_t(r) * w_stride, i);
            for (int t = 0; t < T; ++t) acc[r][t] = _mm256_fmadd_ps(wv, av[t], acc[r][t]);
        }
    }
    for (int t = 0; t < T; ++t) {
        const float* at = reinterpret_cast<const float*>(a + size_t(t) * a_stride);
        for (int r = 0; r < R; ++r) {
            float s = hsum(acc[r][t]);
            for (int64_t j = i; j < n; ++j) s += Load::load1(w + size_t(r) * w_stride, j) * at[j];
            y[t * y_stride + r] = s;
        }
    }
}

struct TileLoadF32 {
    static __m256 load8(const uint8_t* row, int64_t i) { return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i); }
    static float load1(const uint8_t* row, int64_t i) { return reinterpret_cast<const float*>(row)[i]; }
};
struct TileLoadF16 {
    static __m256 load8(const uint8_t* row, int64_t i) {
        return _mm256_cvtph_ps(load128(reinterpret_cast<const uint16_t*>(row) + i));
    }
    static float load1(const uint8_t* row, int64_t i) { return half_to_float(reinterpret_cast<const uint16_t*>(row)[i]); }
};

// ---- dispatch of a (n_rows <= 4) x (n_tokens <= 4) tile onto fixed-size instances -----------

// Calls Fn::template run<R, T>(...) over the tile: rows in fours (else one by one), tokens in
// groups of at most TMax. A single token (decode) goes one row at a time: its weights stream
// from DRAM, and four interleaved row streams ran 2-2.5x slower than one sequential sweep on
// Zen 4 (prefetching the next rows recovered only half of that).
template <class Fn, int TMax, class... Args>
void dispatch_tile(int n_rows, int n_tokens, const uint8_t* w, size_t w_stride, const uint8_t* a, size_t a_stride,
                   float* y, int64_t y_stride, Args... args) {
    auto rows = [&](auto r_const, const uint8_t* wr, float* yr) {
        constexpr int R = decltype(r_const)::value;
        for (int t0 = 0; t0 < n_tokens; t0 += TMax) {
            const uint8_t* at = a + size_t(t0) * a_stride;
            float* yt = yr + t0 * y_stride;
            switch (std::min(TMax, n_tokens - t0)) {
                case 1: Fn::template run<R, 1>(args..., wr, w_stride, at, a_stride, yt, y_stride); break;
                case 2: if constexpr (TMax >= 2) Fn::template run<R, 2>(args..., wr, w_stride, at, a_stride, yt, y_stride); break;
                case 3: if constexpr (TMax >= 3) Fn::template run<R, 3>(args..., wr, w_stride, at, a_stride, yt, y_stride); break;
                default: if constexpr (TMax >= 4) Fn::template run<R, 4>(args..., wr, w_stride, at, a_stride, yt, y_stride); break;
            }
        }
    };
    if (n_rows == 4 && n_tokens > 1) {
        rows(std::integral_constant<int, 4>{}, w, y);
    } else {
        for (int r = 0; r < n_rows; ++r) rows(std::integral_constant<int, 1>{}, w + size_t(r) * w_stride, y + r);
    }
}

template <class K>
struct Blocks32Tile {
    template <int R, int T>
    static void run(int64_t n, const uint8_t* w, size_t ws, const uint8_t* a, size_t as, float* y, int64_t ys) {
        tile_blocks32<K, R, T>(n / 32, w, ws, a, as, y, ys);
    }
};

template <class Load>
struct FloatTile {
    template <int R, int T>
    static void run(int64_t n, const uint8_t* w, size_t ws, const uint8_t* a, size_t as, float* y, int64_t ys) {
        tile_float<Load, R, T>(n, w, ws, a, as, y, ys);
    }
};

// K-quant tiles go one row at a time (R is always handled as rows of 1 by the caller).
template <int T, class Block, class RowFn>
void k_tile_rows(RowFn row_fn, int64_t n, const void* w, size_t w_stride, const void* a, size_t a_stride, float* y,
                 int64_t y_stride, int n_rows) {
    for (int r = 0; r < n_rows; ++r)
        row_fn(n / QK_K, reinterpret_cast<const Block*>(static_cast<const uint8_t*>(w) + size_t(r) * w_stride),
               static_cast<const uint8_t*>(a), a_stride, y + r, y_stride);
}

template <template <int> class RowKernel, class Block>
void k_tile(int64_t n, const void* w, size_t w_stride, const void* a, size_t a_stride, float* y, int64_t y_stride,
            int n_rows, int n_tokens) {
    const uint8_t* ab = static_cast<const uint8_t*>(a);
    for (int t0 = 0; t0 < n_tokens; t0 += 4) {
        const void* at = ab + size_t(t0) * a_stride;
        float* yt = y + t0 * y_stride;
        switch (std::min(4, n_tokens - t0)) {
            case 1: k_tile_rows<1, Block>(RowKernel<1>::run, n, w, w_stride, at, a_stride, yt, y_stride, n_rows); break;
            case 2: k_tile_rows<2, Block>(RowKernel<2>::run, n, w, w_stride, at, a_stride, yt, y_stride, n_rows); break;
            case 3: k_tile_rows<3, Block>(RowKernel<3>::run, n, w, w_stride, at, a_stride, yt, y_stride, n_rows); break;
            default: k_tile_rows<4, Block>(RowKernel<4>::run, n, w, w_stride, at, a_stride, yt, y_stride, n_rows); break;
        }
    }
}

template <int T>
struct Q4KRow {
    static void run(int64_t nsb, const block_q4_K* x, const uint8_t* a, size_t as, float* y, int64_t ys) {
        tile_q4_K_row<T>(nsb, x, a, as, y, ys);
    }
};
template <int T>
struct Q6KRow {
    static void run(int64_t nsb, const block_q6_K* x, const uint8_t* a, size_t as, float* y, int64_t ys) {
        tile_q6_K_row<T>(nsb, x, a, as, y, ys);
    }
};

}  // namespace
}  // namespace decollama
