// Causal multi-head attention over the KV cache, flash-attention style: keys and values are
// visited in tiles through the formats' fused kernels with an online softmax, so the cache is
// never expanded to fp32. The query heads sharing a KV head (GQA) read each tile together;
// with few query tokens (decode) the key range is split across threads and the partial
// softmax states merged.
#pragma once
#include <cstdint>
#include <vector>

#include "common/cpu_features.h"
#include "common/thread_pool.h"
#include "kv/kv_cache.h"

namespace decollama {

class Attention {
public:
    // Attends over `cache` (which must outlive this). Buffers for up to n_batch query tokens
    // and the cache's formats are sized here, so run() allocates nothing.
    Attention(const KVCache& cache, int n_threads, int64_t n_batch, int64_t n_head);

    // For query token i (position pos0 + i) and head h:
    //   out[i][h] = sum_j softmax_j(q[i][h] · k_j) v_j over cached positions j in [lo, pos0 + i],
    // lo = 0, or pos0 + i - window + 1 when window > 0. q rows hold n_head * head_dim_k values
    // already multiplied by the softmax scale; out rows n_head * head_dim_v. Positions up to
    // pos0 + n_tokens - 1 must already be stored in `layer` of the cache.
    void run(const float* q, int64_t n_tokens, int64_t pos0, int64_t layer, int64_t window, float* out,
             ThreadPool& pool, CpuPath path);

    // Whether run() uses the formats' multi-query kernels (all query heads of a KV head per
    // kernel call; the default) or loops their single-query kernels (tests, benchmarks).
    void set_multi_query(bool on) { multi_query_ = on; }

private:
    const KVCache& cache_;
    int n_threads_;
    int64_t n_batch_, n_head_;
    int64_t max_split_rows_;          // token x split rows the partial buffers hold
    size_t query_bytes_;              // room for one prepared query of any of the cache's K formats
    std::vector<uint8_t> queries_;    // per thread: the prepared queries of one KV head's query heads
    std::vector<float> probs_;        // per thread: one tile of scores, then probabilities, per query head
    bool multi_query_ = true;
    const KVFormat* f16_;  // sink and ring rows, looked up once
    std::vector<float> max_, sum_;    // per (token, split, head): running max and sum of exp
    std::vector<float> partial_;      // per (token, split, head): unnormalised output (split runs only)
};

}  // namespace decollama
