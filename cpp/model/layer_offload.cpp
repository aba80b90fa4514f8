#include "model/layer_offload.h"

#include "common/error.h"
#if defined(DECOLLAMA_WITH_CUDA)
#include "cuda/gpu_offload.h"
#endif

namespace decollama {

std::unique_ptr<LayerOffload> make_layer_offload(const HParams& hp, const ModelWeights& w, KVCache& cache,
                                                 ThreadPool& pool, CpuPath path, const OffloadOptions& options) {
    if (options.backend == OffloadBackend::HostTwin) return make_host_twin_offload(hp, w, cache, pool, path, options);
#if defined(DECOLLAMA_WITH_CUDA)
    return gpu::make_cuda_offload(hp, w, cache, pool, options);
#else
    throw InvalidArgument("this build of decollama has no CUDA backend (rebuild with DECOLLAMA_CUDA=ON and nvcc)");
#endif
}

}  // namespace decollama
