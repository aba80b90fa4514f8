// AVX-512 gemm tiles (GemmTileFn) without VNNI: the 256-bit kernels of gemm_x86.h, compiled
// where 32 vector registers hold a 4 x 4 float tile. The VNNI block tiles: gemm_vnni_avx512.cpp.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ == 12
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

#include "quant/dot_simd.h"
#include "quant/gemm_x86.h"

namespace decollama {

namespace {

template <class Load>
void floats(int64_t n, const void* w, size_t ws, const void* a, size_t as, float* y, int64_t ys, int rows,
            int tokens) {
    dispatch_tile<FloatTile<Load>, 4>(rows, tokens, static_cast<const uint8_t*>(w), ws,
                                      static_cast<const uint8_t*>(a), as, y, ys, n);
}

}  // namespace

#define DECOLLAMA_TILE_ARGS \
    int64_t n, const void *w, size_t ws, const void *a, size_t as, float *y, int64_t ys, int rows, int tokens
#define DECOLLAMA_TILE_CALL n, w, ws, a, as, y, ys, rows, tokens

void gemm_tile_f32_avx512(DECOLLAMA_TILE_ARGS) { floats<TileLoadF32>(DECOLLAMA_TILE_CALL); }
void gemm_tile_f16_avx512(DECOLLAMA_TILE_ARGS) { floats<TileLoadF16>(DECOLLAMA_TILE_CALL); }
void gemm_tile_q4_K_avx512(DECOLLAMA_TILE_ARGS) { k_tile<Q4KRow, block_q4_K>(DECOLLAMA_TILE_CALL); }
void gemm_tile_q6_K_avx512(DECOLLAMA_TILE_ARGS) { k_tile<Q6KRow, block_q6_K>(DECOLLAMA_TILE_CALL); }

}  // namespace decollama
