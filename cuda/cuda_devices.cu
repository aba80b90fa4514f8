#include <cuda_runtime.h>

#include "cuda_devices.h"

namespace decollama::cuda {

std::vector<GpuInfo> list_devices() {
    std::vector<GpuInfo> out;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the "no driver" error, so the next launch check reports its own
        return out;
    }
    for (int i = 0; i < n; ++i) {
        cudaDeviceProp p{};
        if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
            cudaGetLastError();  // likewise: not a later kernel launch's error
            continue;
        }
        out.push_back({i, p.name, p.major, p.minor, p.totalGlobalMem});
    }
    return out;
}

std::string unavailable_reason() {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return cudaGetErrorString(err);
    }
    return n == 0 ? "no CUDA device found" : "";
}

}  // namespace decollama::cuda
