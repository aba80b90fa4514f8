// Portable (scalar) kernels of every weight type decollama computes with, one family per file
// in cpp/quant/types/. They fill the Scalar slots of the traits table in weight_types.cpp and
// are the reference the SIMD dots (dot_simd.h) are tested against.
//
// Signatures follow weight_types.h:
//   dequantize_row_<t>(src blocks, dst floats, n)      n a multiple of the block size
//   quantize_row_<t>(src floats, dst blocks, n)        reference rounding, bit-exact with ggml
//   vec_dot_<t>_scalar(n, out, w blocks, a blocks)     a in the row's vec_dot_type
// The quantized dots are integer inside a block, then scaled once per block (or sub-block):
// exactly the arithmetic a SIMD kernel performs, so only the float summation order differs.
#pragma once
#include <cstdint>

namespace decollama {

// ---- float types: activations stay F32 -----------------------------------------------------
void dequantize_row_f32(const void* src, float* dst, int64_t n);
void quantize_row_f32(const float* src, void* dst, int64_t n);
void vec_dot_f32_scalar(int64_t n, float* out, const void* w, const void* a);

void dequantize_row_f16(const void* src, float* dst, int64_t n);
void quantize_row_f16(const float* src, void* dst, int64_t n);
void vec_dot_f16_scalar(int64_t n, float* out, const void* w, const void* a);

void dequantize_row_bf16(const void* src, float* dst, int64_t n);
void quantize_row_bf16(const float* src, void* dst, int64_t n);
void vec_dot_bf16_scalar(int64_t n, float* out, const void* w, const void* a);

// ---- 32-value blocks: activations in Q8_0 (symmetric) or Q8_1 (with min) ------------------
void dequantize_row_q4_0(const void* src, float* dst, int64_t n);
void quantize_row_q4_0(const float* src, void* dst, int64_t n);
void vec_dot_q4_0_scalar(int64_t n, float* out, const void* w, const void* a);  // a: q8_0

void dequantize_row_q4_1(const void* src, float* dst, int64_t n);
void quantize_row_q4_1(const float* src, void* dst, int64_t n);
void vec_dot_q4_1_scalar(int64_t n, float* out, const void* w, const void* a);  // a: q8_1

void dequantize_row_q5_0(const void* src, float* dst, int64_t n);
void quantize_row_q5_0(const float* src, void* dst, int64_t n);
void vec_dot_q5_0_scalar(int64_t n, float* out, const void* w, const void* a);  // a: q8_0

void dequantize_row_q5_1(const void* src, float* dst, int64_t n);
void quantize_row_q5_1(const float* src, void* dst, int64_t n);
void vec_dot_q5_1_scalar(int64_t n, float* out, const void* w, const void* a);  // a: q8_1

void dequantize_row_q8_0(const void* src, float* dst, int64_t n);
void quantize_row_q8_0(const float* src, void* dst, int64_t n);
void vec_dot_q8_0_scalar(int64_t n, float* out, const void* w, const void* a);  // a: q8_0

// Activation-only: q8_0 plus s = d * sum(qs) per block.
void dequantize_row_q8_1(const void* src, float* dst, int64_t n);
void quantize_row_q8_1(const float* src, void* dst, int64_t n);

// ---- 256-value super-blocks: activations in Q8_K ------------------------------------------
void dequantize_row_q4_K(const void* src, float* dst, int64_t n);
void vec_dot_q4_K_scalar(int64_t n, float* out, const void* w, const void* a);

void dequantize_row_q5_K(const void* src, float* dst, int64_t n);
void vec_dot_q5_K_scalar(int64_t n, float* out, const void* w, const void* a);

void dequantize_row_q6_K(const void* src, float* dst, int64_t n);
void vec_dot_q6_K_scalar(int64_t n, float* out, const void* w, const void* a);

// Activation-only: float scale, int8 quants and the sum of every 16 quants (bsums).
void dequantize_row_q8_K(const void* src, float* dst, int64_t n);
void quantize_row_q8_K(const float* src, void* dst, int64_t n);

}  // namespace decollama
