// AVX-512 VNNI gemm tiles of the 32-value blocks (q4_0, q5_0, q8_0): vpdpbusd multiplies
// unsigned codes by the signed activations and adds four products into int32 without
// saturating, so a (row, token) block pair costs one instruction before its float FMA.
// Only called where cpuid reports avx512vnni (the dispatchers in dot_simd.cpp).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512vnni"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx512vnni")
#if __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "quant/dot_simd.h"
#include "quant/gemm_x86.h"

namespace decollama {

namespace {

// Codes u stand for u - offset. The per-token term -offset * sum(a) seeds the accumulator, so
// isum is a single vpdpbusd.
template <class B, int kOffset>
struct OffsetCodes {
    using Block = B;
    static __m256i token_term(__m256i a) {
        const __m256i zero = _mm256_setzero_si256();
        return _mm256_sub_epi32(zero, _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(static_cast<char>(kOffset)), a));
    }
    static __m256i isum(__m256i codes, __m256i a, __m256i term) { return _mm256_dpbusd_epi32(term, codes, a); }
};

struct Q4_0 : OffsetCodes<block_q4_0, 8> {
    static __m256i codes(const block_q4_0& x) { return unpack_nibbles32(x.qs); }
};
struct Q5_0 : OffsetCodes<block_q5_0, 16> {
    static __m256i codes(const block_q5_0& x) {
        uint32_t bits;
        std::memcpy(&bits, x.qh, 4);
        const __m256i low = unpack_nibbles32(x.qs);
        return _mm256_mask_add_epi8(low, _cvtu32_mask32(bits), low, _mm256_set1_epi8(16));
    }
};
// Signed weights w become w + 128 (flipping the sign bit), exact for every int8 activation.
struct Q8_0 : OffsetCodes<block_q8_0, 128> {
    static __m256i codes(const block_q8_0& x) { return _mm256_xor_si256(load256(x.qs), _mm256_set1_epi8(-128)); }
};

template <class K>
void blocks32(int64_t n, const void* w, size_t ws, const void* a, size_t as, float* y, int64_t ys, int rows,
              int tokens) {
    dispatch_tile<Blocks32Tile<K>, 4>(rows, tokens, static_cast<const uint8_t*>(w), ws,
                                      static_cast<const uint8_t*>(a), as, y, ys, n);
}

}  // namespace

#define DECOLLAMA_TILE_ARGS \
    int64_t n, const void *w, size_t ws, const void *a, size_t as, float *y, int64_t ys, int rows, int tokens
#define DECOLLAMA_TILE_CALL n, w, ws, a, as, y, ys, rows, tokens

void gemm_tile_q4_0_avx512vnni(DECOLLAMA_TILE_ARGS) { blocks32<Q4_0>(DECOLLAMA_TILE_CALL); }
void gemm_tile_q5_0_avx512vnni(DECOLLAMA_TILE_ARGS) { blocks32<Q5_0>(DECOLLAMA_TILE_CALL); }
void gemm_tile_q8_0_avx512vnni(DECOLLAMA_TILE_ARGS) { blocks32<Q8_0>(DECOLLAMA_TILE_CALL); }

}  // namespace decollama

#if defined(__clang__)
#pragma clang attribute pop
#endif
