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

// How a quantized weight meets the activations.
enum class ActivationPrecision {
    // Activations quantized to the weight type's vec_dot_type, integer dots (llama.cpp's way, fast).
    Quantized,
    // Activations stay fp32: each weight row tile is dequantized into per-thread scratch and
    // dotted by the f32 kernels. Matches a dequantize-then-fp32 reference (transformers) closely.
    Fp32,
};

// Scratch space reused across calls so decode allocates nothing.
struct MatmulScratch {
    std::vector<uint8_t> act;           // quantized activations (Quantized)
    std::vector<float> weight_rows;     // one dequantized row tile per thread (Fp32)
};

// y[t * n_out + o] = dot(W row o, x[t * n_in ...]) for t in [0, n_tokens).
// Activations are converted once per call to W's vec_dot_type (or, with Fp32, the weights are
// dequantized a row tile at a time); matrix-vector (n_tokens == 1) and matrix-matrix (tiles of
// rows x tokens, so a weight tile is reused from cache) share it. Weights whose vec_dot_type is
// F32 (f32, f16, bf16) already meet fp32 activations: precision changes nothing for them.
void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y, ThreadPool& pool,
            CpuPath path, MatmulScratch& scratch,
            ActivationPrecision precision = ActivationPrecision::Quantized);

}  // namespace decollama
