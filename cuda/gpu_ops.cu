// Row-wise forward-pass kernels (gpu_ops.h). The per-element math is gpu_ops_device.h, shared with
// the host-side tests; this file only decides how rows and elements map onto threads.
#include <algorithm>
#include <string>
#include <vector>

#include "common/error.h"
#include "cuda_devices.h"
#include "gpu_check.h"
#include "gpu_ops.h"
#include "gpu_ops_device.h"
#include "gpu_ops_hooks.h"

namespace decollama::gpu {

namespace {

constexpr int kWarp = 32;
constexpr int kMaxRmsThreads = 1024;
constexpr int kElementwiseThreads = 256;
// Grid-stride loops cover the rest: more blocks than this only adds scheduling overhead.
constexpr long long kMaxBlocks = 1 << 16;

unsigned capped_grid(long long n, int threads) {
    return unsigned(std::min(blocks_for(n, threads), kMaxBlocks));  // capped before narrowing
}

void require(bool ok, const char* op, const std::string& what) {
    if (!ok) throw InvalidArgument(std::string(op) + ": " + what);
}

// ---- rms_norm: one block per row ------------------------------------------------------------

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024), the same value returned to
// every thread. Fixed order: a run gives the same bits every time.
__device__ double block_sum(double v) {
    __shared__ double warp_sums[kMaxRmsThreads / kWarp];
    __shared__ double total;
    for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    const int warp = int(threadIdx.x) / kWarp, lane = int(threadIdx.x) % kWarp;
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    if (warp == 0) {
        const int n_warps = int(blockDim.x) / kWarp;
        double s = lane < n_warps ? warp_sums[lane] : 0.0;
        for (int offset = kWarp / 2; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

// y may alias x: each thread rewrites only the elements it read itself.
__global__ void rms_norm_kernel(const float* x, int64_t x_stride, const float* w, int64_t n_rows, int64_t dim,
                                float eps, float* y, int64_t y_stride) {
    for (int64_t row = blockIdx.x; row < n_rows; row += gridDim.x) {
        const float* xr = x + row * x_stride;
        float* yr = y + row * y_stride;
        double sum_sq = 0.0;
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum_sq += square_as_double(xr[i]);
        const float inv_rms = rms_inv_from_sum_sq(block_sum(sum_sq), dim, eps);
        for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yr[i] = rms_norm_value(xr[i], inv_rms, w[i]);
    }
}

// ---- rope: one thread per rotated pair ------------------------------------------------------

__global__ void rope_kernel(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t row_stride,
                            const float* cos, const float* sin, int64_t n_rot, RopeLayout layout) {
    const int64_t n_pairs = n_rot / 2;
    const int64_t total = n_tokens * n_heads * n_pairs;
    for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
         idx += int64_t(gridDim.x) * blockDim.x) {
        const int64_t pair = idx % n_pairs;
        const int64_t token_head = idx / n_pairs;
        const int64_t head = token_head % n_heads;
        const int64_t token = token_head / n_heads;
        float* h = x + token * row_stride + head * head_dim;
        const RopePair p = rope_pair(pair, n_rot, layout);
        const int64_t t = token * n_pairs + pair;
        rope_rotate(h[p.first], h[p.second], cos[t], sin[t]);
    }
}

// ---- elementwise: grid-stride -----------------------------------------------------------------

#define DL_GRID_STRIDE(i, n) \
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

__global__ void scale_kernel(float* x, int64_t n, float s) {
    DL_GRID_STRIDE(i, n) x[i] *= s;
}

__global__ void add_kernel(float* x, const float* y, int64_t n) {
    DL_GRID_STRIDE(i, n) x[i] += y[i];
}

__global__ void add_bias_kernel(float* x, const float* b, int64_t n, int64_t dim) {
    DL_GRID_STRIDE(i, n) x[i] += b[i % dim];
}

__global__ void glu_kernel(float* gate, const float* up, int64_t n, FfnActivation act) {
    DL_GRID_STRIDE(i, n) gate[i] = glu_value(gate[i], up[i], act);
}

__global__ void softcap_kernel(float* x, int64_t n, float cap, float inv_cap) {
    DL_GRID_STRIDE(i, n) x[i] = softcap_value(x[i], cap, inv_cap);
}

#undef DL_GRID_STRIDE

}  // namespace

// ---- launchers ----------------------------------------------------------------------------------

void gpu_rms_norm(const float* x, int64_t x_stride, const float* w, int64_t n_rows, int64_t dim, float eps, float* y,
                  int64_t y_stride, cudaStream_t stream) {
    require(n_rows >= 0 && dim >= 0, "gpu_rms_norm", "negative size");
    require(x_stride >= dim && y_stride >= dim, "gpu_rms_norm", "row stride shorter than dim");
    if (n_rows == 0 || dim == 0) return;
    // In place is safe (each block reads its rows before writing them); other overlaps race.
    const float *x_end = x + (n_rows - 1) * x_stride + dim, *y_end = y + (n_rows - 1) * y_stride + dim;
    require(y == x ? y_stride == x_stride : (y_end <= x || x_end <= y), "gpu_rms_norm",
            "y overlaps x other than in place");
    // Enough threads for one element each up to 1024 (a decode step is a single row: one block).
    const int threads = int(std::min<int64_t>((dim + kWarp - 1) / kWarp * kWarp, kMaxRmsThreads));
    const unsigned blocks = unsigned(std::min<int64_t>(n_rows, kMaxBlocks));
    rms_norm_kernel<<<blocks, threads, 0, stream>>>(x, x_stride, w, n_rows, dim, eps, y, y_stride);
    DL_CUDA_CHECK_LAUNCH();
}

void gpu_rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t row_stride, const float* cos,
              const float* sin, int64_t n_rot, RopeLayout layout, cudaStream_t stream) {
    require(n_tokens >= 0 && n_heads >= 0 && head_dim >= 0 && n_rot >= 0, "gpu_rope", "negative size");
    require(n_rot <= head_dim, "gpu_rope", "n_rot " + std::to_string(n_rot) + " > head_dim " + std::to_string(head_dim));
    require(row_stride >= n_heads * head_dim, "gpu_rope", "row stride shorter than the heads");
    const int64_t total = n_tokens * n_heads * (n_rot / 2);
    if (total == 0) return;
    rope_kernel<<<capped_grid(total, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(
        x, n_tokens, n_heads, head_dim, row_stride, cos, sin, n_rot, layout);
    DL_CUDA_CHECK_LAUNCH();
}

void gpu_scale(float* x, int64_t n, float s, cudaStream_t stream) {
    if (n <= 0) return;
    scale_kernel<<<capped_grid(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(x, n, s);
    DL_CUDA_CHECK_LAUNCH();
}

void gpu_add(float* x, const float* y, int64_t n, cudaStream_t stream) {
    if (n <= 0) return;
    add_kernel<<<capped_grid(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(x, y, n);
    DL_CUDA_CHECK_LAUNCH();
}

void gpu_add_bias(float* x, const float* b, int64_t n_rows, int64_t dim, cudaStream_t stream) {
    require(n_rows >= 0 && dim >= 0, "gpu_add_bias", "negative size");
    const int64_t n = n_rows * dim;
    if (n == 0) return;
    add_bias_kernel<<<capped_grid(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(x, b, n, dim);
    DL_CUDA_CHECK_LAUNCH();
}

void gpu_glu(float* gate, const float* up, int64_t n, FfnActivation act, cudaStream_t stream) {
    if (n <= 0) return;
    glu_kernel<<<capped_grid(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(gate, up, n, act);
    DL_CUDA_CHECK_LAUNCH();
}

void gpu_softcap(float* x, int64_t n, float cap, cudaStream_t stream) {
    require(cap != 0.0f, "gpu_softcap", "cap must be nonzero");
    if (n <= 0) return;
    softcap_kernel<<<capped_grid(n, kElementwiseThreads), kElementwiseThreads, 0, stream>>>(x, n, cap, 1.0f / cap);
    DL_CUDA_CHECK_LAUNCH();
}

// ---- test hooks (gpu_ops_hooks.h) ---------------------------------------------------------------

namespace {

// Without a GPU or driver the first CUDA call would fail with a less telling error; say why here.
void require_gpu() {
    const std::string why = cuda::unavailable_reason();
    if (!why.empty()) throw CudaError("no usable GPU for the CUDA kernels: " + why);
}

template <class T>
DeviceBuffer<T> uploaded(const T* host, size_t n) {
    DeviceBuffer<T> d(n);
    d.upload(host, n);
    return d;
}

// Waits for the default stream, so a kernel fault is reported against the op that ran.
void finish() { DL_CUDA_CHECK(cudaDeviceSynchronize()); }

}  // namespace

void host_gpu_rms_norm(const float* x, int64_t x_stride, const float* w, int64_t n_rows, int64_t dim, float eps,
                       float* y, int64_t y_stride, bool in_place) {
    require_gpu();
    require(n_rows >= 0 && dim >= 0 && x_stride >= dim && y_stride >= dim, "gpu_rms_norm", "bad shape");
    DeviceBuffer<float> dx = uploaded(x, size_t(n_rows * x_stride));
    DeviceBuffer<float> dw = uploaded(w, size_t(dim));
    if (in_place) {
        gpu_rms_norm(dx.data(), x_stride, dw.data(), n_rows, dim, eps, dx.data(), x_stride, nullptr);
        finish();
        dx.download(y, size_t(n_rows * x_stride));
        return;
    }
    DeviceBuffer<float> dy = uploaded(static_cast<const float*>(y), size_t(n_rows * y_stride));
    gpu_rms_norm(dx.data(), x_stride, dw.data(), n_rows, dim, eps, dy.data(), y_stride, nullptr);
    finish();
    dy.download(y, size_t(n_rows * y_stride));
}

void host_gpu_rope(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim, int64_t row_stride,
                   const float* cos, const float* sin, int64_t n_rot, RopeLayout layout) {
    require_gpu();
    require(n_tokens >= 0 && n_rot >= 0, "gpu_rope", "negative size");
    const size_t n_x = size_t(n_tokens * row_stride), n_table = size_t(n_tokens * (n_rot / 2));
    DeviceBuffer<float> dx = uploaded(static_cast<const float*>(x), n_x);
    DeviceBuffer<float> dcos = uploaded(cos, n_table);
    DeviceBuffer<float> dsin = uploaded(sin, n_table);
    gpu_rope(dx.data(), n_tokens, n_heads, head_dim, row_stride, dcos.data(), dsin.data(), n_rot, layout, nullptr);
    finish();
    dx.download(x, n_x);
}

void host_gpu_scale(float* x, int64_t n, float s) {
    require_gpu();
    DeviceBuffer<float> dx = uploaded(static_cast<const float*>(x), size_t(std::max<int64_t>(n, 0)));
    gpu_scale(dx.data(), n, s, nullptr);
    finish();
    dx.download(x, dx.size());
}

void host_gpu_add(float* x, const float* y, int64_t n) {
    require_gpu();
    const size_t count = size_t(std::max<int64_t>(n, 0));
    DeviceBuffer<float> dx = uploaded(static_cast<const float*>(x), count);
    DeviceBuffer<float> dy = uploaded(y, count);
    gpu_add(dx.data(), dy.data(), n, nullptr);
    finish();
    dx.download(x, count);
}

void host_gpu_add_bias(float* x, const float* b, int64_t n_rows, int64_t dim) {
    require_gpu();
    require(n_rows >= 0 && dim >= 0, "gpu_add_bias", "negative size");
    DeviceBuffer<float> dx = uploaded(static_cast<const float*>(x), size_t(n_rows * dim));
    DeviceBuffer<float> db = uploaded(b, size_t(dim));
    gpu_add_bias(dx.data(), db.data(), n_rows, dim, nullptr);
    finish();
    dx.download(x, dx.size());
}

void host_gpu_glu(float* gate, const float* up, int64_t n, FfnActivation act) {
    require_gpu();
    const size_t count = size_t(std::max<int64_t>(n, 0));
    DeviceBuffer<float> dg = uploaded(static_cast<const float*>(gate), count);
    DeviceBuffer<float> du = uploaded(up, count);
    gpu_glu(dg.data(), du.data(), n, act, nullptr);
    finish();
    dg.download(gate, count);
}

void host_gpu_softcap(float* x, int64_t n, float cap) {
    require_gpu();
    DeviceBuffer<float> dx = uploaded(static_cast<const float*>(x), size_t(std::max<int64_t>(n, 0)));
    gpu_softcap(dx.data(), n, cap, nullptr);
    finish();
    dx.download(x, dx.size());
}

}  // namespace decollama::gpu
