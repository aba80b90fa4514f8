// GPUs visible to the CUDA runtime. Safe to call without a GPU or driver: returns an empty list.
#pragma once
#include <string>
#include <vector>

namespace decollama::cuda {

struct GpuInfo {
    int index = 0;
    std::string name;
    int compute_major = 0, compute_minor = 0;
    size_t total_memory = 0;
};

std::vector<GpuInfo> list_devices();
// Why no device is usable ("no CUDA driver", "no GPU"...), or "" when at least one is.
std::string unavailable_reason();

}  // namespace decollama::cuda
