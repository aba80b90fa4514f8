// CUDA error checks and RAII device memory (nvcc-only header). Every CUDA call that can fail
// goes through DL_CUDA_CHECK, which throws decollama::gpu::CudaError naming the call, file and
// line: the bindings turn it into a Python RuntimeError.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

namespace decollama::gpu {

class CudaError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

inline void cuda_check(cudaError_t err, const char* what, const char* file, int line) {
    if (err == cudaSuccess) return;
    // Clears a recoverable error so later calls report their own; a fault in a kernel (illegal
    // address, ...) cannot be cleared: the context is lost and every later call fails.
    cudaGetLastError();
    throw CudaError(std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
                    "): " + cudaGetErrorString(err));
}

#define DL_CUDA_CHECK(call) ::decollama::gpu::cuda_check((call), #call, __FILE__, __LINE__)
// After a kernel launch: launch-configuration errors surface here, not at the next sync.
#define DL_CUDA_CHECK_LAUNCH() ::decollama::gpu::cuda_check(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

// n elements of T in device memory, freed on destruction; move-only.
template <class T>
class DeviceBuffer {
public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t n) { resize(n); }
    ~DeviceBuffer() { release(); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
    DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
        if (this != &o) {
            release();
            p_ = std::exchange(o.p_, nullptr);
            n_ = std::exchange(o.n_, 0);
        }
        return *this;
    }

    // Reallocates (contents lost) when n differs from the current size.
    void resize(size_t n) {
        if (n == n_) return;
        release();
        if (n > 0) DL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p_), n * sizeof(T)));
        n_ = n;
    }
    void upload(const T* host, size_t n, size_t at = 0) {
        if (n) DL_CUDA_CHECK(cudaMemcpy(p_ + at, host, n * sizeof(T), cudaMemcpyHostToDevice));
    }
    void download(T* host, size_t n, size_t at = 0) const {
        if (n) DL_CUDA_CHECK(cudaMemcpy(host, p_ + at, n * sizeof(T), cudaMemcpyDeviceToHost));
    }
    T* data() { return p_; }
    const T* data() const { return p_; }
    size_t size() const { return n_; }

private:
    void release() noexcept {
        if (p_) cudaFree(p_);
        p_ = nullptr;
        n_ = 0;
    }
    T* p_ = nullptr;
    size_t n_ = 0;
};

// Blocks of `threads` covering n items.
inline long long blocks_for(long long n, int threads) { return (n + threads - 1) / threads; }
inline unsigned grid_for(long long n, int threads) { return unsigned(blocks_for(n, threads)); }

}  // namespace decollama::gpu
