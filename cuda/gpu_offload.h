// The CUDA backend of LayerOffload (cpp/model/layer_offload.h), in plain C++ for the core's
// g++-compiled sources; defined in gpu_offload.cu (CUDA builds only).
#pragma once
#include <memory>

#include "model/layer_offload.h"

namespace decollama::gpu {

// InvalidArgument without a usable GPU (naming why), for what the kernels do not handle, or when
// the weights, KV cache and scratch do not fit in the GPU's free memory.
std::unique_ptr<LayerOffload> make_cuda_offload(const HParams& hp, const ModelWeights& w, KVCache& cache,
                                                ThreadPool& pool, const OffloadOptions& options);

}  // namespace decollama::gpu
