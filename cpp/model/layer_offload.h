// The last layers of a model (and optionally its output head) run by another backend, llama.cpp's
// -ngl: the CUDA backend on a GPU (cuda/gpu_offload.cu), or its host twin (host_offload.cpp), the
// same layer program (cuda/offload_runner.h) on host memory with the CPU kernels, which tests the
// program's bookkeeping on machines without a GPU. The offloaded layers' KV cache bytes live with
// the backend in the CPU KVCache's layout (KVCache::set_external_layers); the CPU layers and the
// token embedding stay on the host.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "common/cpu_features.h"
#include "common/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/hparams.h"
#include "model/model_weights.h"

namespace decollama {

enum class OffloadBackend { Cuda, HostTwin };

struct OffloadOptions {
    int64_t first_layer = 0;  // layers [first_layer, n_layer) are offloaded
    bool output = false;      // the final norm's rows and the output head too
    int64_t n_batch = 512;
    OffloadBackend backend = OffloadBackend::Cuda;
    bool precise_activations = false;  // host twin: the model's matmul precision (the GPU's is fixed)
};

// What an offload holds, for kv_info / verbose output.
struct OffloadInfo {
    std::string device;         // "NVIDIA H100 80GB HBM3 (GPU 0)", "host twin"
    int64_t first_layer = 0, n_layers = 0;
    bool output = false;
    size_t weight_bytes = 0, kv_bytes = 0, scratch_bytes = 0;
};

class LayerOffload {
public:
    virtual ~LayerOffload() = default;

    // Runs the offloaded layers on n tokens at positions pos0..: hidden holds their residual
    // stream after the host's layers (n rows of n_embd, host memory). Leaves the final-normed
    // rows [first_output, n) with the backend (the last layer computes only those rows).
    virtual void run(const float* hidden, int64_t n, int64_t pos0, int64_t first_output) = 0;
    // Logits of rows [row_begin, row_end) of the last run (needs OffloadOptions::output), or the
    // final-normed hidden rows themselves (n_embd each), into host memory.
    virtual void logits(int64_t row_begin, int64_t row_end, float* out) = 0;
    virtual void final_hidden(int64_t row_begin, int64_t row_end, float* out) = 0;
    // The bytes of an offloaded layer's KV streams copied into the host cache (read_kv).
    virtual void copy_layer_to_host(int64_t layer) = 0;
    // KVCache::RefillFn: positions [first, end) of a layer's K or V decoded from its blocks back
    // into its fp16 ring, as KVCache::truncate does for host layers.
    virtual void refill_ring(int64_t layer, KVKind kind, int64_t first, int64_t end) = 0;
    virtual OffloadInfo info() const = 0;
};

// The offload the options ask for. InvalidArgument when it cannot be built: a build without
// CUDA, no usable GPU (naming why), a weight type, head size or KV format the GPU kernels do not
// handle, not enough free GPU memory. The references must outlive the offload.
std::unique_ptr<LayerOffload> make_layer_offload(const HParams& hp, const ModelWeights& w, KVCache& cache,
                                                 ThreadPool& pool, CpuPath path, const OffloadOptions& options);

// The host twin (host_offload.cpp).
std::unique_ptr<LayerOffload> make_host_twin_offload(const HParams& hp, const ModelWeights& w, KVCache& cache,
                                                     ThreadPool& pool, CpuPath path, const OffloadOptions& options);

}  // namespace decollama
