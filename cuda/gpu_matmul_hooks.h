// Test hooks of the GPU weight kernels (gpu_matmul.cu), in plain C++ so the bindings compile
// them without CUDA headers. Each copies its inputs to fresh device buffers, runs the kernel on
// the default stream, waits and copies the result back. Without a usable GPU they throw
// CudaError (a std::runtime_error) saying so; an unsupported type or bad geometry throws
// InvalidArgument.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "quant/ggml_type.h"

namespace decollama::gpu {

// y[n_tokens * n_out] = x[n_tokens, n_in] @ Wᵀ, W given as n_out rows of GGUF blocks (host
// memory). misalign: place the weights 1 byte past an aligned address on the device (quantized
// types only: checks that no kernel relies on block alignment).
std::vector<float> gpu_test_matmul(GGMLType type, const uint8_t* w, int64_t n_in, int64_t n_out, const float* x,
                                   int64_t n_tokens, bool misalign = false);

// x[n_tokens * n_in]: scale * row tokens[t] of a table of n_rows rows (tokens in [0, n_rows)).
std::vector<float> gpu_test_embed(GGMLType type, const uint8_t* table, int64_t n_in, int64_t n_rows,
                                  const int32_t* tokens, int64_t n_tokens, float scale);

// The largest n_tokens gpu_matmul runs with the decode (matrix-vector) kernel; above, the
// tensor-core one.
int gpu_matmul_decode_max_tokens();

}  // namespace decollama::gpu
