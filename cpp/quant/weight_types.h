// The weight block-type traits table: one row per GGML type id.
//
// Every type a GGUF may hold has a row with its geometry (so the reader can validate tensor
// sizes); the types decollama computes with also carry kernels. Adding a type = one file in
// cpp/quant/types/ with its scalar kernels + one row in weight_types.cpp (+ SIMD dots in
// dot_avx2.cpp / dot_avx512.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

#include "common/cpu_features.h"
#include "quant/ggml_type.h"

namespace decollama {

// Dequantize n values (n a multiple of block_size) from blocks at src into dst.
using DequantizeRowFn = void (*)(const void* src, float* dst, int64_t n);
// Quantize n floats into blocks (reference rounding, as ggml's quantize_row_*_ref).
using QuantizeRowFn = void (*)(const float* src, void* dst, int64_t n);
// *out = dot(weights w, activation a) over n values; w holds blocks of this type, a holds
// blocks of the row's vec_dot_type (already quantized / converted by the caller).
using VecDotFn = void (*)(int64_t n, float* out, const void* w, const void* a);
// A tile of dots: y[t * y_stride + r] = dot(weight row r, activation row t) for r < n_rows,
// t < n_tokens (each in [1, kGemmTileRows / kGemmTileTokens]). Rows lie w_stride bytes apart,
// activation rows (in the vec_dot_type) a_stride bytes apart. A tile unpacks each weight block
// once for all its tokens and shares each activation block between its rows.
using GemmTileFn = void (*)(int64_t n, const void* w, size_t w_stride, const void* a, size_t a_stride, float* y,
                            int64_t y_stride, int n_rows, int n_tokens);
constexpr int kGemmTileRows = 4, kGemmTileTokens = 4;

struct WeightTypeTraits {
    const char* name;          // "q4_K", "f16"... lower-case like gguf-py's GGMLQuantizationType names
    GGMLType type;
    int64_t block_size;        // values per block
    size_t block_bytes;        // bytes per block
    DequantizeRowFn dequantize_row;  // nullptr: geometry known, computation not supported
    QuantizeRowFn quantize_row;      // nullptr where quantizing makes no sense here
    GGMLType vec_dot_type;           // format the activation row must be in for vec_dot
    VecDotFn vec_dot[kNumCpuPaths];  // per CpuPath; a null entry falls back to the next lower path
    // Per CpuPath, optional: null where the type has no tile kernel of that path (the scalar
    // slot, where set, is the reference: one vec_dot per entry).
    GemmTileFn gemm_tile[kNumCpuPaths];
};

// Row for a type id, or nullptr when the id is not a GGML type.
const WeightTypeTraits* find_weight_type(uint32_t type_id);
// Row for a type, throwing InvalidArgument when it has no kernels.
const WeightTypeTraits& weight_type(GGMLType t);
// Row by name ("q8_0", "Q8_0" and "q8_0" both accepted), nullptr when unknown.
const WeightTypeTraits* find_weight_type(const char* name);

// Bytes of a row of n values; n must be a multiple of block_size.
inline size_t row_bytes(const WeightTypeTraits& t, int64_t n) {
    return size_t(n / t.block_size) * t.block_bytes;
}

// The dot kernel for a path, falling back to lower paths where a SIMD kernel is missing.
VecDotFn vec_dot_for(const WeightTypeTraits& t, CpuPath path);
// The tile kernel for a path, or nullptr where a one-row dot of a higher path exists (a SIMD
// vec_dot beats a lower path's tile): the highest path <= `path` with either kernel decides.
GemmTileFn gemm_tile_for(const WeightTypeTraits& t, CpuPath path);

}  // namespace decollama
