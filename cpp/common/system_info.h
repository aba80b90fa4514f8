// What this build and this machine offer: reported by decollama.system_info().
#pragma once
#include <string>
#include <vector>

namespace decollama {

struct GpuSummary {
    std::string name;
    int compute_major = 0, compute_minor = 0;
    size_t total_memory = 0;
};

struct SystemInfo {
    std::string version;
    std::string compiler;
    std::vector<std::string> cpu_features;
    std::string cpu_path;        // the path default_cpu_path() picks (DECOLLAMA_CPU honoured)
    std::string best_cpu_path;   // the best this CPU supports
    int physical_cores = 1;
    bool cuda_compiled = false;
    std::vector<GpuSummary> gpus;
    std::string gpu_unavailable_reason;  // "" when a GPU is usable or CUDA is not compiled in
};

SystemInfo system_info();

}  // namespace decollama
