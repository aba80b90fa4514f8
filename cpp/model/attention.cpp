#include "model/attention.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "common/error.h"

namespace decollama {

namespace {

constexpr int64_t kTile = kKVTileTokens;
// Tasks per thread below which the key range is split: enough for dynamic balancing.
constexpr int64_t kTasksPerThread = 4;
constexpr int64_t kMaxInlineMergeRows = 64;

// Folds one tile of scores into a (max, sum, acc) online-softmax state: rescales the state to
// the new max and turns the scores into the tile's unnormalised probabilities (in place).
void online_softmax_step(float* scores, int64_t n, float& max, float& sum, float* acc, int64_t head_dim_v) {
    const float tile_max = *std::max_element(scores, scores + n);
    if (tile_max > max) {
        if (sum > 0.0f) {
            const float r = std::exp(max - tile_max);
            sum *= r;
            for (int64_t d = 0; d < head_dim_v; ++d) acc[d] *= r;
        }
        max = tile_max;
    }
    float tile_sum = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
        scores[j] = std::exp(scores[j] - max);
        tile_sum += scores[j];
    }
    sum += tile_sum;
}

}  // namespace

Attention::Attention(int n_threads, int64_t n_batch, int64_t n_head, int64_t head_dim_v)
    : n_threads_(n_threads), n_batch_(n_batch), n_head_(n_head), head_dim_v_(head_dim_v) {
    // A split run has n_tokens * n_head_kv < target tasks before splitting, so its
    // n_tokens * n_split stays below 2 * target.
    max_split_rows_ = 2 * kTasksPerThread * n_threads;
    probs_.resize(size_t(n_threads * kTile));
    max_.resize(size_t(std::max(n_batch, max_split_rows_) * n_head));
    sum_.resize(max_.size());
    partial_.resize(size_t(max_split_rows_ * n_head * head_dim_v));
}

void Attention::run(const float* q, int64_t n_tokens, int64_t pos0, const KVCache& cache, int64_t layer,
                    int64_t window, float* out, ThreadPool& pool, CpuPath path) {
    if (pool.size() > n_threads_ || n_tokens > n_batch_)
        throw InvalidArgument("attention: more threads or tokens than its buffers were sized for");
    const int64_t n_head_kv = cache.n_head_kv(), n_gqa = n_head_ / n_head_kv;
    const int64_t hd_k = cache.head_dim_k(), hd_v = head_dim_v_;
    const KVScoresFn scores = kv_scores_for(cache.k_format(layer), path);
    const KVAccumulateFn accumulate = kv_accumulate_for(cache.v_format(layer), path);

    const int64_t target = kTasksPerThread * pool.size();
    int64_t n_split = 1;
    if (n_tokens * n_head_kv < target) {
        const int64_t max_tiles = (pos0 + n_tokens + kTile - 1) / kTile;
        n_split = std::min((target + n_tokens * n_head_kv - 1) / (n_tokens * n_head_kv), max_tiles);
    }
    const int64_t n_tasks = n_tokens * n_head_kv * n_split;

    std::atomic<int64_t> next_task{0};
    pool.run([&](int thread, int) {
        float* probs = probs_.data() + thread * kTile;
        for (;;) {
            const int64_t task = next_task.fetch_add(1, std::memory_order_relaxed);
            if (task >= n_tasks) break;
            // Latest tokens first: they see the most keys, so the short ones fill the tail.
            const int64_t i = n_tokens - 1 - task / (n_head_kv * n_split);
            const int64_t g = (task / n_split) % n_head_kv;
            const int64_t split = task % n_split;
            const int64_t pos = pos0 + i;
            const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
            const int64_t first_tile = lo / kTile, n_tiles = pos / kTile - first_tile + 1;
            const int64_t tile_begin = first_tile + split * n_tiles / n_split;
            const int64_t tile_end = first_tile + (split + 1) * n_tiles / n_split;

            const int64_t head0 = g * n_gqa;
            const int64_t state = (i * n_split + split) * n_head_ + head0;
            float* max = max_.data() + state;
            float* sum = sum_.data() + state;
            const auto acc = [&](int64_t h) {
                return n_split == 1 ? out + (i * n_head_ + head0 + h) * hd_v : partial_.data() + (state + h) * hd_v;
            };
            for (int64_t h = 0; h < n_gqa; ++h) {
                max[h] = -std::numeric_limits<float>::infinity();
                sum[h] = 0.0f;
                std::fill(acc(h), acc(h) + hd_v, 0.0f);
            }

            const uint8_t* k_stream = cache.k_stream(layer, g);
            const uint8_t* v_stream = cache.v_stream(layer, g);
            for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
                const int64_t t0 = std::max(lo, tile * kTile);
                const int64_t n = std::min(pos + 1, (tile + 1) * kTile) - t0;
                // Head after head on the same tile: it stays in L1.
                for (int64_t h = 0; h < n_gqa; ++h) {
                    scores(q + (i * n_head_ + head0 + h) * hd_k, k_stream, hd_k, t0, n, probs);
                    online_softmax_step(probs, n, max[h], sum[h], acc(h), hd_v);
                    accumulate(probs, v_stream, hd_v, t0, n, acc(h));
                }
            }
            if (n_split == 1)
                for (int64_t h = 0; h < n_gqa; ++h) {
                    const float inv = 1.0f / sum[h];
                    float* o = acc(h);
                    for (int64_t d = 0; d < hd_v; ++d) o[d] *= inv;
                }
        }
    });
    if (n_split == 1) return;

    // Merge the splits of each (token, head): rescale each to the common max, then normalise.
    const auto merge = [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
            const int64_t i = row / n_head_, h = row % n_head_;
            const auto state = [&](int64_t split) { return size_t((i * n_split + split) * n_head_ + h); };
            float global_max = -std::numeric_limits<float>::infinity();
            for (int64_t s = 0; s < n_split; ++s)
                if (sum_[state(s)] > 0.0f) global_max = std::max(global_max, max_[state(s)]);
            float* o = out + row * hd_v;
            std::fill(o, o + hd_v, 0.0f);
            float total = 0.0f;
            for (int64_t s = 0; s < n_split; ++s) {
                if (!(sum_[state(s)] > 0.0f)) continue;  // a split that got no tile
                const float w = std::exp(max_[state(s)] - global_max);
                total += w * sum_[state(s)];
                const float* part = partial_.data() + state(s) * size_t(hd_v);
                for (int64_t d = 0; d < hd_v; ++d) o[d] += w * part[d];
            }
            const float inv = 1.0f / total;
            for (int64_t d = 0; d < hd_v; ++d) o[d] *= inv;
        }
    };
    // Decode merges a handful of rows: cheaper than waking the pool.
    if (n_tokens * n_head_ <= kMaxInlineMergeRows)
        merge(0, n_tokens * n_head_);
    else
        pool.parallel_for(n_tokens * n_head_, merge);
}

}  // namespace decollama
