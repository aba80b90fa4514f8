// Weight matrices on the GPU (nvcc-only header): Y = X · Wᵀ for every weight type the CPU
// computes with (f32, f16, bf16, q4_0, q4_1, q5_0, q5_1, q8_0, q4_K, q5_K, q6_K), the blocks
// read as they lie in the GGUF (byte-identical copy on the device) and dequantized in
// registers / shared memory. Few tokens (decode): one warp per output row, fp32 activations.
// Many (prefill): tiles dequantized to fp16 in shared memory and multiplied on tensor cores
// (WMMA, fp32 accumulate). One kernel table per weight type: gpu_weight_blocks.h.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "gpu_tensors.h"
#include "quant/ggml_type.h"

namespace decollama::gpu {

// Whether the GPU kernels handle this weight type.
bool gpu_supports_weight(GGMLType type);

// y[t * n_out + o] = dot(W row o, x[t * n_in ...]) for t < n_tokens; x, y device fp32.
void gpu_matmul(const GpuMatrix& w, const float* x, int64_t n_tokens, float* y, cudaStream_t stream);

// x[t * n_in ...] = scale * row tokens[t] of the table (dequantized); tokens device int32,
// already validated.
void gpu_embed(const GpuMatrix& table, const int32_t* tokens, int64_t n_tokens, float scale, float* x,
               cudaStream_t stream);

}  // namespace decollama::gpu
