#include "common/system_info.h"

#include "common/cpu_features.h"
#ifdef DECOLLAMA_WITH_CUDA
#include "cuda_devices.h"
#endif

namespace decollama {

SystemInfo system_info() {
    SystemInfo info;
    info.version = DECOLLAMA_VERSION;
    info.compiler = DECOLLAMA_COMPILER;
    const CpuFeatures f = detect_cpu_features();
    info.cpu_features = f.names();
    info.best_cpu_path = cpu_path_name(best_cpu_path(f));
    info.cpu_path = cpu_path_name(default_cpu_path());
    info.physical_cores = physical_core_count();
#ifdef DECOLLAMA_WITH_CUDA
    info.cuda_compiled = true;
    for (const auto& g : cuda::list_devices())
        info.gpus.push_back({g.name, g.compute_major, g.compute_minor, g.total_memory});
    info.gpu_unavailable_reason = cuda::unavailable_reason();
#endif
    return info;
}

}  // namespace decollama
