// Y = X · Wᵀ for a weight matrix in any supported block type, multithreaded.
#pragma once
#include <cstdint>
#include <vector>

#include "common/cpu_features.h"
#include "common/thread_pool.h"
#include "quant/weight_types.h"

namespace decollama {

// A weight matrix as it lies in the GGUF mapping: n_out rows of n_in values each.
struct WeightView {
    const void* data = nullptr;
    GGMLType type = GGMLType::F32;
    int64_t n_in = 0;   // ne[0]: values per row (the reduction dimension)
    int64_t n_out = 0;  // ne[1]: rows
};

// Scratch space reused across calls (quantized activations) so decode allocates nothing.
struct MatmulScratch {
    std::vector<uint8_t> act;
};

// y[t * n_out + o] = dot(W row o, x[t * n_in ...]) for t in [0, n_tokens).
// Activations are converted once per call to W's vec_dot_type; matrix-vector (n_tokens == 1)
// and matrix-matrix (tiles of rows x tokens, so a weight tile is reused from cache) share it.
void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            CpuPath path, MatmulScratch& scratch);

}  // namespace decollama
