// The host twin of the CUDA offload: OffloadRunner's program (cuda/offload_runner.h) over host
// memory and the CPU kernels. Its "device" buffers are host vectors and its KV store is the GPU
// store's host twin (kv_store_host, the kernels' work items on the CPU); attention copies the
// layer's bytes into the host cache and runs the CPU Attention on them. Run against the plain CPU
// model it must give the same logits, which checks everything the program decides (rows,
// offsets, strides, the cache's bookkeeping and layout, partial offload) without a GPU.
#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "cuda/gpu_kv_store_hooks.h"
#include "cuda/offload_runner.h"
#include "model/attention.h"
#include "model/layer_offload.h"
#include "model/ops.h"
#include "model/rope.h"
#include "quant/matmul.h"

namespace decollama {

namespace {

template <class T>
class HostBuffer {
public:
    void resize(size_t n) { v_.assign(n, T{}); }
    T* data() { return v_.empty() ? nullptr : v_.data(); }
    const T* data() const { return v_.empty() ? nullptr : v_.data(); }
    size_t size() const { return v_.size(); }
    void upload(const T* host, size_t n, size_t at = 0) { std::copy_n(host, n, v_.data() + at); }
    void download(T* host, size_t n, size_t at = 0) const { std::copy_n(v_.data() + at, n, host); }

private:
    std::vector<T> v_;
};

class HostTwinBackend {
public:
    template <class T>
    using Buffer = HostBuffer<T>;

    HostTwinBackend(KVCache& cache, ThreadPool& pool, CpuPath path, int64_t n_batch, int64_t n_head, bool precise)
        : cache_(&cache),
          pool_(&pool),
          path_(path),
          precision_(precise ? ActivationPrecision::Fp32 : ActivationPrecision::Quantized),
          attention_(std::make_unique<Attention>(cache, pool.size(), n_batch, n_head)),
          scratch_(std::make_unique<MatmulScratch>()) {}

    std::string device_name() const { return "host twin"; }
    bool supports_weight(GGMLType) const { return true; }  // the model's loader checked them
    void check_memory(size_t, const std::string&) const {}
    void zero(void* p, size_t bytes) { std::memset(p, 0, bytes); }

    void rms_norm(const float* x, int64_t xs, const float* w, int64_t rows, int64_t dim, float eps, float* y,
                  int64_t ys) {
        for (int64_t r = 0; r < rows; ++r) decollama::rms_norm(x + r * xs, w, dim, eps, y + r * ys);
    }
    void rope(float* x, int64_t n, int64_t heads, int64_t hd, int64_t stride, const float* cos, const float* sin,
              int64_t n_rot, RopeLayout layout) {
        const int64_t n_pairs = n_rot / 2;
        for (int64_t t = 0; t < n; ++t)
            for (int64_t h = 0; h < heads; ++h)
                apply_rope(x + t * stride + h * hd, cos + t * n_pairs, sin + t * n_pairs, n_rot, layout);
    }
    void scale(float* x, int64_t n, float s) {
        for (int64_t i = 0; i < n; ++i) x[i] *= s;
    }
    void add(float* x, const float* y, int64_t n) { add_in_place(x, y, n); }
    void add_bias(float* x, const float* b, int64_t rows, int64_t dim) {
        for (int64_t r = 0; r < rows; ++r) add_in_place(x + r * dim, b, dim);
    }
    void glu(float* gate, const float* up, int64_t n, FfnActivation act) {
        if (act == FfnActivation::GeluTanh)
            gelu_tanh_glu(gate, up, n, gate);
        else
            silu_glu(gate, up, n, gate);
    }
    void softcap(float* x, int64_t n, float cap) { decollama::softcap(x, n, cap); }
    void matmul(const gpu::GpuMatrix& w, const float* x, int64_t n, float* y) {
        decollama::matmul(WeightView{w.data, w.type, w.n_in, w.n_out}, x, n, y, *pool_, path_, *scratch_, precision_);
    }
    void kv_store(const gpu::GpuStreamSet& s, const float* rows, int64_t stride, int64_t pos, int64_t n,
                  const float* q, int64_t n_head) {
        if (n == 0) return;
        gpu::kv_store_host(*s.format, gpu::kv_store_args(*s.format, s.layout, s.base, s.head_stride, s.head_dim,
                                                         s.n_head_kv, rows, stride, pos, n, q, n_head, s.codebooks,
                                                         s.metrics));
    }
    void attention(int64_t layer, const uint8_t* layer_bytes, size_t n_bytes, const gpu::GpuStreamSet&,
                   const gpu::GpuStreamSet&, int64_t /*cache_window*/, const float* q, int64_t n, int64_t pos0,
                   int64_t /*n_head*/, int64_t attn_window, float* out) {
        std::memcpy(cache_->data() + cache_->layer_offset(layer), layer_bytes, n_bytes);
        attention_->run(q, n, pos0, layer, attn_window, out, *pool_, path_);
    }

private:
    KVCache* cache_;
    ThreadPool* pool_;
    CpuPath path_;
    ActivationPrecision precision_;
    std::unique_ptr<Attention> attention_;
    std::unique_ptr<MatmulScratch> scratch_;
};

}  // namespace

std::unique_ptr<LayerOffload> make_host_twin_offload(const HParams& hp, const ModelWeights& w, KVCache& cache,
                                                     ThreadPool& pool, CpuPath path, const OffloadOptions& options) {
    gpu::check_offload_geometry(hp, cache, options);
    return std::make_unique<gpu::OffloadRunner<HostTwinBackend>>(
        HostTwinBackend(cache, pool, path, options.n_batch, hp.n_head, options.precise_activations), hp, w, cache,
        pool, options);
}

}  // namespace decollama
