// AVX2 and AVX-512 dot products for every computable weight type, and SIMD quantizers for the
// activation formats (q8_0, q8_1, q8_K).
//
// Every vec_dot_* has the VecDotFn contract of weight_types.h: n is a multiple of the block
// size, w holds the weight blocks, a the activation in the row's vec_dot_type, and nothing
// past the n values is read. Results equal the scalar kernels up to float rounding: block
// sums are exact in integers, only the float accumulation across blocks is reordered.
//
// One precondition, of the q8_0 dot only: no activation quant is -128. Both sides are signed
// there, so it uses |w| * (a * sign(w)), and -128 cannot be negated; quantize_row_q8_0 never
// produces it (|q| <= 127 by construction). Weights may hold any value their format allows,
// and every other dot is exact for any activation byte.
//
// The *_avx2 functions need AVX2+FMA+F16C, the *_avx512 ones AVX-512 F/BW/VL/DQ too (exactly
// what cpu_path_supported() checks). They exist only in x86-64 builds (DECOLLAMA_X86).
#pragma once
#include <cstdint>

#include "common/cpu_features.h"
#include "quant/ggml_type.h"
#include "quant/weight_types.h"

namespace decollama {

#if defined(DECOLLAMA_X86)

#define DECOLLAMA_DECLARE_SIMD_DOT(t)                                               \
    void vec_dot_##t##_avx2(int64_t n, float* out, const void* w, const void* a);   \
    void vec_dot_##t##_avx512(int64_t n, float* out, const void* w, const void* a);

DECOLLAMA_DECLARE_SIMD_DOT(f32)
DECOLLAMA_DECLARE_SIMD_DOT(f16)
DECOLLAMA_DECLARE_SIMD_DOT(bf16)
DECOLLAMA_DECLARE_SIMD_DOT(q4_0)
DECOLLAMA_DECLARE_SIMD_DOT(q4_1)
DECOLLAMA_DECLARE_SIMD_DOT(q5_0)
DECOLLAMA_DECLARE_SIMD_DOT(q5_1)
DECOLLAMA_DECLARE_SIMD_DOT(q8_0)
DECOLLAMA_DECLARE_SIMD_DOT(q4_K)
DECOLLAMA_DECLARE_SIMD_DOT(q5_K)
DECOLLAMA_DECLARE_SIMD_DOT(q6_K)
#undef DECOLLAMA_DECLARE_SIMD_DOT

// Activation quantizers (QuantizeRowFn), bit-identical to the scalar quantize_row_q8_* for
// finite input; n is a multiple of the block size.
void quantize_row_q8_0_avx2(const float* src, void* dst, int64_t n);
void quantize_row_q8_0_avx512(const float* src, void* dst, int64_t n);
void quantize_row_q8_1_avx2(const float* src, void* dst, int64_t n);
void quantize_row_q8_1_avx512(const float* src, void* dst, int64_t n);
void quantize_row_q8_K_avx2(const float* src, void* dst, int64_t n);
void quantize_row_q8_K_avx512(const float* src, void* dst, int64_t n);

// Gemm tiles (GemmTileFn). The *_avx512 tiles of the 32-value blocks dispatch to the VNNI
// kernel where the CPU has avx512vnni, else to the AVX2 one (512-bit blocks gain nothing on the
// CPUs measured); the others are the 256-bit kernels with AVX-512's 32 registers.
#define DECOLLAMA_DECLARE_GEMM_TILE(t, isa)                                                              \
    void gemm_tile_##t##_##isa(int64_t n, const void* w, size_t w_stride, const void* a, size_t a_stride, \
                               float* y, int64_t y_stride, int n_rows, int n_tokens);
#define DECOLLAMA_DECLARE_GEMM_TILES(t) DECOLLAMA_DECLARE_GEMM_TILE(t, avx2) DECOLLAMA_DECLARE_GEMM_TILE(t, avx512)
DECOLLAMA_DECLARE_GEMM_TILES(f32)
DECOLLAMA_DECLARE_GEMM_TILES(f16)
DECOLLAMA_DECLARE_GEMM_TILES(q4_0)
DECOLLAMA_DECLARE_GEMM_TILES(q5_0)
DECOLLAMA_DECLARE_GEMM_TILES(q8_0)
DECOLLAMA_DECLARE_GEMM_TILES(q4_K)
DECOLLAMA_DECLARE_GEMM_TILES(q6_K)
DECOLLAMA_DECLARE_GEMM_TILE(q4_0, avx512vnni)
DECOLLAMA_DECLARE_GEMM_TILE(q5_0, avx512vnni)
DECOLLAMA_DECLARE_GEMM_TILE(q8_0, avx512vnni)
#undef DECOLLAMA_DECLARE_GEMM_TILES
#undef DECOLLAMA_DECLARE_GEMM_TILE

// The two SIMD slots of a traits row's vec_dot initializer: {scalar, DECOLLAMA_SIMD_DOTS(t)}.
#define DECOLLAMA_SIMD_DOTS(t) vec_dot_##t##_avx2, vec_dot_##t##_avx512
// ... and of its gemm_tile initializer.
#define DECOLLAMA_SIMD_TILES(t) gemm_tile_##t##_avx2, gemm_tile_##t##_avx512

#else

#define DECOLLAMA_SIMD_DOTS(t) nullptr, nullptr
#define DECOLLAMA_SIMD_TILES(t) nullptr, nullptr

#endif  // DECOLLAMA_X86

// The fastest quantizer of activation format `t` (Q8_0, Q8_1 or Q8_K) that `path` may run:
// a SIMD one where there is one, else the scalar quantize_row of t's traits row.
// Throws InvalidArgument for a format without a quantizer.
QuantizeRowFn activation_quantizer(GGMLType t, CpuPath path);

}  // namespace decollama
