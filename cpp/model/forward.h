// The transformer forward pass of one batch of tokens (llama, qwen2, qwen3, gemma3): fp32
// activations, weights read in their GGUF types through matmul, K/V stored in the cache as the
// layers go. All buffers are sized for n_batch tokens at construction.
#pragma once
#include <cstdint>
#include <vector>

#include "common/cpu_features.h"
#include "common/thread_pool.h"
#include "kv/kv_cache.h"
#include "model/attention.h"
#include "model/hparams.h"
#include "model/model_weights.h"
#include "model/rope.h"
#include "quant/matmul.h"

namespace decollama {

class Forward {
public:
    // hp, w and cache must outlive this. precision: how every matmul meets quantized weights.
    // n_layers: the layers this forward runs, [0, n_layers) (the rest are offloaded); -1: all.
    Forward(const HParams& hp, const ModelWeights& w, KVCache& cache, int n_threads, int64_t n_batch,
            ActivationPrecision precision = ActivationPrecision::Quantized, int64_t n_layers = -1);

    // Runs n <= n_batch tokens (ids already validated) at positions pos0.. through its layers,
    // storing their keys and values in the cache. With every layer: leaves the final-normed
    // hidden states of rows [first_output, n) for logits(); the last layer computes no more than
    // the keys and values of the rows before first_output (n: no outputs at all). With fewer:
    // leaves the residual stream of all n rows in hidden() for the offloaded layers.
    void run(const int32_t* tokens, int64_t n, int64_t pos0, int64_t first_output, ThreadPool& pool, CpuPath path);

    // The n_batch rows of n_embd the layers work on: the residual stream, final-normed after
    // run() with every layer. logits() reads it, so offloaded layers may write final rows here.
    float* hidden() { return x_.data(); }

    // Logits of rows [row_begin, row_end) of the last run (within [first_output, n)), one
    // n_vocab row each.
    void logits(int64_t row_begin, int64_t row_end, float* out, ThreadPool& pool, CpuPath path);

private:
    // Rows [r0, n) go through the layer; rows before r0 only store their keys and values.
    void attention_block(int64_t il, int64_t r0, int64_t n, int64_t pos0, ThreadPool& pool, CpuPath path);
    void ffn_block(int64_t il, int64_t r0, int64_t n, ThreadPool& pool, CpuPath path);
    // Biases, QK-norm and RoPE of row t's k and v (and q: with_q, scaled for the softmax).
    void finish_qkv_row(int64_t il, int64_t t, bool with_q);
    // y = x · wᵀ for n rows, with this forward's scratch and precision.
    void project(const WeightView& w, const float* x, int64_t n, float* y, ThreadPool& pool, CpuPath path) {
        matmul(w, x, n, y, pool, path, matmul_scratch_, precision_);
    }

    const HParams& hp_;
    const ModelWeights& w_;
    KVCache& cache_;
    int64_t n_batch_;
    ActivationPrecision precision_;
    int64_t n_layers_;
    RopeFrequencies rope_global_, rope_local_;
    // Activations, n_batch rows each: residual stream, normed input / projection output, q, k,
    // v, attention output, FFN gate and up.
    std::vector<float> x_, h_, q_, k_, v_, attn_, gate_, up_;
    // cos/sin tables of the batch per frequency set.
    std::vector<float> cos_global_, sin_global_, cos_local_, sin_local_;
    Attention attention_;
    MatmulScratch matmul_scratch_;
};

}  // namespace decollama
