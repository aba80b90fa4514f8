// Row-wise operations of the forward pass on the GPU (nvcc-only header), one kernel each,
// matching cpp/model/ops.h and rope.h on the same inputs. All pointers are device fp32.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "model/hparams.h"

namespace decollama::gpu {

// y row r = x row r / sqrt(mean(x row r ^ 2) + eps) * w, rows of dim values at x + r * x_stride,
// y + r * y_stride (y may alias x). Per-head norms (QK-norm): n_rows = tokens * heads, stride dim.
void gpu_rms_norm(const float* x, int64_t x_stride, const float* w, int64_t n_rows, int64_t dim, float eps, float* y,
                  int64_t y_stride, cudaStream_t stream);

// Rotates the first n_rot values of every head of every token in place: token t's heads at
// x + t * row_stride + h * head_dim, h < n_heads; cos/sin: n_tokens rows of n_rot / 2 (the CPU
// RopeFrequencies tables, uploaded). Same pairing as apply_rope for each layout.
void gpu_rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t row_stride, const float* cos,
              const float* sin, int64_t n_rot, RopeLayout layout, cudaStream_t stream);

// x[i] *= s for i < n.
void gpu_scale(float* x, int64_t n, float s, cudaStream_t stream);
// x[i] += y[i] for i < n.
void gpu_add(float* x, const float* y, int64_t n, cudaStream_t stream);
// x[r * dim + i] += b[i] for r < n_rows, i < dim.
void gpu_add_bias(float* x, const float* b, int64_t n_rows, int64_t dim, cudaStream_t stream);
// gate[i] = act(gate[i]) * up[i] for i < n (silu, or tanh-approximated GELU).
void gpu_glu(float* gate, const float* up, int64_t n, FfnActivation act, cudaStream_t stream);
// x[i] = cap * tanh(x[i] / cap).
void gpu_softcap(float* x, int64_t n, float cap, cudaStream_t stream);

}  // namespace decollama::gpu
