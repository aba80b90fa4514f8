// Test hooks of the row-wise GPU ops (cuda/gpu_ops.h) with host arrays in and out, callable from
// plain C++ (the bindings): each uploads its inputs, runs the kernel on the default stream, waits
// and downloads. Only in a CUDA build (DECOLLAMA_WITH_CUDA). Without a usable GPU every hook throws
// std::runtime_error (decollama::gpu::CudaError) naming the reason, before touching any memory.
#pragma once
#include <cstdint>

#include "model/hparams.h"

namespace decollama::gpu {

// x: n_rows rows at stride x_stride; y: n_rows rows at stride y_stride, updated in place (values
// past dim in each row keep what y held). in_place: runs with y == x (x_stride), the result
// downloaded into y, which must then hold n_rows * x_stride values.
void host_gpu_rms_norm(const float* x, int64_t x_stride, const float* w, int64_t n_rows, int64_t dim, float eps,
                       float* y, int64_t y_stride, bool in_place);

// x: n_tokens rows of row_stride values, rotated in place; cos/sin: n_tokens * (n_rot / 2).
void host_gpu_rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t row_stride,
                   const float* cos, const float* sin, int64_t n_rot, RopeLayout layout);

void host_gpu_scale(float* x, int64_t n, float s);
void host_gpu_add(float* x, const float* y, int64_t n);
void host_gpu_add_bias(float* x, const float* b, int64_t n_rows, int64_t dim);
void host_gpu_glu(float* gate, const float* up, int64_t n, FfnActivation act);
void host_gpu_softcap(float* x, int64_t n, float cap);

}  // namespace decollama::gpu
