// The offloaded layers on the GPU: OffloadRunner's program (offload_runner.h) over the CUDA
// kernels. Everything runs on the legacy default stream, so the synchronous copies of
// DeviceBuffer order themselves with the kernels; the logits download is the only wait per batch
// (and the hidden-state upload, from pageable memory).
#include <cuda_runtime.h>

#include <memory>
#include <string>

#include "common/error.h"
#include "cuda_devices.h"
#include "gpu_check.h"
#include "gpu_kv.h"
#include "gpu_matmul.h"
#include "gpu_offload.h"
#include "gpu_ops.h"
#include "offload_runner.h"

namespace decollama::gpu {

namespace {

constexpr cudaStream_t kStream = nullptr;
// Left free for the CUDA context, kernels' local memory and other processes.
constexpr size_t kMemoryReserve = size_t(256) << 20;

class CudaBackend {
public:
    template <class T>
    using Buffer = DeviceBuffer<T>;

    CudaBackend(const HParams& hp, int64_t n_batch, int64_t n_ctx)
        : attention_(std::make_unique<GpuAttention>(n_batch, hp.n_head, n_ctx, hp.head_dim_k, hp.head_dim_v)) {
        DL_CUDA_CHECK(cudaGetDevice(&device_));
        cudaDeviceProp p{};
        DL_CUDA_CHECK(cudaGetDeviceProperties(&p, device_));
        name_ = std::string(p.name) + " (GPU " + std::to_string(device_) + ")";
    }

    std::string device_name() const { return name_; }
    bool supports_weight(GGMLType t) const { return gpu_supports_weight(t); }
    void check_memory(size_t bytes, const std::string& what) const {
        size_t free = 0, total = 0;
        DL_CUDA_CHECK(cudaMemGetInfo(&free, &total));
        if (bytes + kMemoryReserve > free)
            throw InvalidArgument(what + " needs " + std::to_string(bytes >> 20) + " MiB of GPU memory, " + name_ +
                                  " has " + std::to_string(free >> 20) + " MiB free (of " +
                                  std::to_string(total >> 20) + "); offload fewer layers or lower n_ctx");
    }
    void zero(void* p, size_t bytes) {
        if (bytes) DL_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, kStream));
    }

    void rms_norm(const float* x, int64_t xs, const float* w, int64_t rows, int64_t dim, float eps, float* y,
                  int64_t ys) {
        gpu_rms_norm(x, xs, w, rows, dim, eps, y, ys, kStream);
    }
    void rope(float* x, int64_t n, int64_t heads, int64_t hd, int64_t stride, const float* cos, const float* sin,
              int64_t n_rot, RopeLayout layout) {
        gpu_rope(x, n, heads, hd, stride, cos, sin, n_rot, layout, kStream);
    }
    void scale(float* x, int64_t n, float s) { gpu_scale(x, n, s, kStream); }
    void add(float* x, const float* y, int64_t n) { gpu_add(x, y, n, kStream); }
    void add_bias(float* x, const float* b, int64_t rows, int64_t dim) { gpu_add_bias(x, b, rows, dim, kStream); }
    void glu(float* gate, const float* up, int64_t n, FfnActivation act) { gpu_glu(gate, up, n, act, kStream); }
    void softcap(float* x, int64_t n, float cap) { gpu_softcap(x, n, cap, kStream); }
    void matmul(const GpuMatrix& w, const float* x, int64_t n, float* y) { gpu_matmul(w, x, n, y, kStream); }
    void kv_store(const GpuStreamSet& set, const float* rows, int64_t stride, int64_t pos, int64_t n, const float* q,
                  int64_t n_head) {
        gpu_kv_store(set, rows, stride, pos, n, q, n_head, kStream);
    }
    void attention(int64_t /*layer*/, const uint8_t* /*layer_bytes*/, size_t /*n_bytes*/, const GpuStreamSet& k,
                   const GpuStreamSet& v, int64_t cache_window, const float* q, int64_t n, int64_t pos0,
                   int64_t n_head, int64_t attn_window, float* out) {
        attention_->run(k, v, cache_window, q, n, pos0, n_head, attn_window, out, kStream);
    }

private:
    std::unique_ptr<GpuAttention> attention_;
    int device_ = 0;
    std::string name_;
};

}  // namespace

std::unique_ptr<LayerOffload> make_cuda_offload(const HParams& hp, const ModelWeights& w, KVCache& cache,
                                                ThreadPool& pool, const OffloadOptions& options) {
    const std::string why = cuda::unavailable_reason();
    if (!why.empty()) throw InvalidArgument("no usable GPU (" + why + ")");
    check_offload_geometry(hp, cache, options);
    return std::make_unique<OffloadRunner<CudaBackend>>(CudaBackend(hp, options.n_batch, cache.n_ctx()), hp, w, cache,
                                                        pool, options);
}

}  // namespace decollama::gpu
