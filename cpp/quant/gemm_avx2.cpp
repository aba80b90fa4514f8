// AVX2 gemm tiles (GemmTileFn): the kernels of gemm_x86.h with maddubs-based block dots.
// 16 registers: the 32-value block tiles take at most 4 rows x 2 tokens at a time.
#include <immintrin.h>

#include <cstdint>

#include "quant/dot_simd.h"
#include "quant/gemm_x86.h"

namespace decollama {

namespace {

// Codes u of a block stand for u - offset; the per-token term is offset * a as int16 pair
// sums, subtracted before widening (exact: see dot_u8_offset_s8 in simd_x86.h).
template <class B, int kOffset>
struct OffsetCodes {
    using Block = B;
    static __m256i token_term(__m256i a) { return _mm256_maddubs_epi16(_mm256_set1_epi8(kOffset), a); }
    static __m256i isum(__m256i codes, __m256i a, __m256i term) {
        return _mm256_madd_epi16(_mm256_sub_epi16(_mm256_maddubs_epi16(codes, a), term), _mm256_set1_epi16(1));
    }
};

struct Q4_0 : OffsetCodes<block_q4_0, 8> {
    static __m256i codes(const block_q4_0& x) { return unpack_nibbles32(x.qs); }
};
struct Q5_0 : OffsetCodes<block_q5_0, 16> {
    static __m256i codes(const block_q5_0& x) { return _mm256_or_si256(unpack_nibbles32(x.qs), q5_high_bits32(x.qh)); }
};
// Signed weights: |w| * (a * sign(w)), no per-token term (a is never -128, see dot_simd.h).
struct Q8_0 {
    using Block = block_q8_0;
    static __m256i codes(const block_q8_0& x) { return load256(x.qs); }
    static __m256i token_term(__m256i) { return _mm256_setzero_si256(); }
    static __m256i isum(__m256i codes, __m256i a, __m256i) { return dot_s8_s8(codes, a); }
};

template <class K>
void blocks32(int64_t n, const void* w, size_t ws, const void* a, size_t as, float* y, int64_t ys, int rows,
              int tokens) {
    dispatch_tile<Blocks32Tile<K>, 2>(rows, tokens, static_cast<const uint8_t*>(w), ws,
                                      static_cast<const uint8_t*>(a), as, y, ys, n);
}

template <class Load>
void floats(int64_t n, const void* w, size_t ws, const void* a, size_t as, float* y, int64_t ys, int rows,
            int tokens) {
    dispatch_tile<FloatTile<Load>, 2>(rows, tokens, static_cast<const uint8_t*>(w), ws,
                                      static_cast<const uint8_t*>(a), as, y, ys, n);
}

}  // namespace

#define DECOLLAMA_TILE_ARGS \
    int64_t n, const void *w, size_t ws, const void *a, size_t as, float *y, int64_t ys, int rows, int tokens
#define DECOLLAMA_TILE_CALL n, w, ws, a, as, y, ys, rows, tokens

void gemm_tile_f32_avx2(DECOLLAMA_TILE_ARGS) { floats<TileLoadF32>(DECOLLAMA_TILE_CALL); }
void gemm_tile_f16_avx2(DECOLLAMA_TILE_ARGS) { floats<TileLoadF16>(DECOLLAMA_TILE_CALL); }
void gemm_tile_q4_0_avx2(DECOLLAMA_TILE_ARGS) { blocks32<Q4_0>(DECOLLAMA_TILE_CALL); }
void gemm_tile_q5_0_avx2(DECOLLAMA_TILE_ARGS) { blocks32<Q5_0>(DECOLLAMA_TILE_CALL); }
void gemm_tile_q8_0_avx2(DECOLLAMA_TILE_ARGS) { blocks32<Q8_0>(DECOLLAMA_TILE_CALL); }
void gemm_tile_q4_K_avx2(DECOLLAMA_TILE_ARGS) { k_tile<Q4KRow, block_q4_K>(DECOLLAMA_TILE_CALL); }
void gemm_tile_q6_K_avx2(DECOLLAMA_TILE_ARGS) { k_tile<Q6KRow, block_q6_K>(DECOLLAMA_TILE_CALL); }

}  // namespace decollama
