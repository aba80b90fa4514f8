// Test and benchmark entry points of the GPU attention (cuda/gpu_attention.cu), as plain C++ so
// the g++-compiled bindings can call them in a CUDA build. Each copies one layer of a CPU-filled
// KVCache to the device (the bytes the GPU cache keeps are the CPU ones, cuda/gpu_kv.h) and runs
// GpuAttention there. Without a usable GPU they throw std::runtime_error saying why.
#pragma once
#include <cstdint>
#include <vector>

#include "kv/kv_cache.h"

namespace decollama::gpu {

struct GpuAttentionResult {
    std::vector<float> out;  // n_tokens rows of n_head * head_dim_v
    int64_t n_chunks = 0;    // chunks per query token the run used
};

// Attention of n_tokens queries q (host, rows of n_head * head_dim_k, scale folded in) at
// positions pos0.. over layer `layer` of `cache` (pos0 + n_tokens positions stored), with the
// cache's window for its ring. max_chunks 0: a GpuAttention sized for n_tokens x n_stored picks
// the split; > 0: at most that many chunks per query token.
GpuAttentionResult gpu_attention_test(const KVCache& cache, int64_t layer, const float* q, int64_t n_tokens,
                                      int64_t pos0, int64_t n_head, int64_t attn_window, int64_t max_chunks);

struct GpuAttentionBenchResult {
    double median_us = 0;   // one decode attention call (1 query token, every head)
    double bytes_read = 0;  // compressed K and V bytes a call reads (blocks, sink and ring rows)
    double gbps = 0;        // bytes_read / median time
    double peak_gbps = 0;   // the device's DRAM bandwidth: 2 * memory clock * bus width / 8
};

// Times decode attention (query at the last stored position) over layer 0 of `cache` with
// cudaEvents, iters calls after a warm-up; q: one row of n_head * head_dim_k.
GpuAttentionBenchResult gpu_attention_bench(const KVCache& cache, const float* q, int64_t n_head, int iters);

}  // namespace decollama::gpu
