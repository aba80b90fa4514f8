// Scores of keys stored as rows of a weight block type (q8_0, q4_0) against a query prepared
// in the type's activation format: one call of the quant library's dot kernel per key, its
// SIMD versions included. The query is quantized like a matmul activation, as llama.cpp does
// for quantized keys.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kv/kv_format.h"
#include "quant/dot_simd.h"
#include "quant/scalar_kernels.h"
#include "quant/weight_types.h"

namespace decollama {

template <VecDotFn dot, size_t (*row_bytes)(int64_t)>
void dot_scores(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s) {
    const size_t row = row_bytes(head_dim);
    for (int64_t j = 0; j < n; ++j) dot(head_dim, s + j, stream + size_t(t + j) * row, q);
}

// The SIMD slots of a scores row: {kv_plain_scores<dot_scores<scalar dot>>, DECOLLAMA_KV_DOT_SCORES(q8_0, rb)}.
#if defined(DECOLLAMA_X86)
#define DECOLLAMA_KV_DOT_SCORES(type, row_bytes)                     \
    kv_plain_scores<dot_scores<vec_dot_##type##_avx2, row_bytes>>, \
        kv_plain_scores<dot_scores<vec_dot_##type##_avx512, row_bytes>>
#else
#define DECOLLAMA_KV_DOT_SCORES(type, row_bytes) nullptr, nullptr
#endif

}  // namespace decollama
