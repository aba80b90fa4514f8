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
// Decode merges a handful of (token, head) rows: cheaper than waking the pool.
constexpr int64_t kMaxInlineMergeRows = 64;
// Prepared queries start on cache lines (and so suit any element type).
constexpr size_t kQueryAlign = 64;

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

// Everything one run shares between its threads. Pool jobs capture only a pointer to it, so
// std::function keeps them inline: no allocation per call.
struct AttentionJob {
    const float* q;
    float* out;
    const KVCache* cache;
    int64_t layer, n_tokens, pos0, window;
    int64_t n_stored;  // positions in the cache: pos0 + n_tokens
    CpuPath path;
    KVPrepareQueryFn prepare_query;  // nullptr: scores read the fp32 query
    KVScoresFn scores;               // the K format's, on its blocks
    KVAccumulateFn accumulate;       // the V format's, on its blocks
    KVScoresFn f16_scores;           // sink and ring rows
    KVAccumulateFn f16_accumulate;
    // The same for all query heads of a KV head at once; nullptr: loop the single-query ones.
    KVScoresMultiFn scores_multi;
    KVAccumulateMultiFn accumulate_multi;
    KVScoresMultiFn f16_scores_multi;
    KVAccumulateMultiFn f16_accumulate_multi;
    int64_t n_head, n_head_kv, n_gqa, hd_k, hd_v;
    int64_t n_split, n_tasks;
    uint8_t* queries;    // n_gqa prepared queries per thread
    size_t query_bytes;  // stride of the prepared queries
    float* probs;        // n_gqa x kTile floats per thread (head h's tile at h * kTile)
    float* max;      // per (token, split, head)
    float* sum;
    float* partial;  // per (token, split, head) x hd_v, when n_split > 1
    std::atomic<int64_t> next_task{0};

    int64_t state(int64_t i, int64_t split, int64_t h) const { return (i * n_split + split) * n_head + h; }

    float* accumulator(int64_t i, int64_t split, int64_t h) const {
        return n_split == 1 ? out + (i * n_head + h) * hd_v : partial + state(i, split, h) * hd_v;
    }

    void run_tasks(int thread) {
        for (int64_t task = next_task.fetch_add(1, std::memory_order_relaxed); task < n_tasks;
             task = next_task.fetch_add(1, std::memory_order_relaxed)) {
            // Latest tokens first: they see the most keys, so the short ones fill the tail.
            const int64_t i = n_tokens - 1 - task / (n_head_kv * n_split);
            run_task(i, (task / n_split) % n_head_kv, task % n_split,
                     queries + size_t(thread * n_gqa) * query_bytes, probs + thread * n_gqa * kTile);
        }
    }

    // s[h * kTile + j] = q_h · k[a + j] for the n_gqa query heads (q_h at q + h * q_stride).
    static void scores_heads(KVScoresFn single, KVScoresMultiFn multi, int64_t n_gqa, const void* q,
                             size_t q_stride, const uint8_t* stream, int64_t hd, int64_t a, int64_t n, float* s,
                             const KVStreamConsts& consts) {
        if (multi != nullptr) {
            multi(q, q_stride, n_gqa, stream, hd, a, n, s, kTile, consts);
            return;
        }
        for (int64_t h = 0; h < n_gqa; ++h)
            single(static_cast<const uint8_t*>(q) + size_t(h) * q_stride, stream, hd, a, n, s + h * kTile, consts);
    }

    // acc_h += sum_j p[h * kTile + j] v[a + j] for the n_gqa query heads (acc_h at acc + h * acc_stride).
    static void accumulate_heads(KVAccumulateFn single, KVAccumulateMultiFn multi, int64_t n_gqa, const float* p,
                                 const uint8_t* stream, int64_t hd, int64_t a, int64_t n, float* acc,
                                 int64_t acc_stride, const KVStreamConsts& consts) {
        if (multi != nullptr) {
            multi(p, kTile, n_gqa, stream, hd, a, n, acc, acc_stride, consts);
            return;
        }
        for (int64_t h = 0; h < n_gqa; ++h) single(p + h * kTile, stream, hd, a, n, acc + h * acc_stride, consts);
    }

    // Scores of keys [t0, t1) (one tile) for every query head of the KV head, s[h * kTile + j]:
    // sink and ring rows are fp16, the rest the format's blocks. query: the prepared (or fp32)
    // queries, query_stride bytes apart; q32: the fp32 ones, hd_k floats apart.
    void tile_scores(const KVStreamView& kv, const void* query, size_t query_stride, const float* q32, int64_t t0,
                     int64_t t1, float* s) const {
        static const KVStreamConsts kNone{};
        kv.for_each_part(t0, t1, hd_k, [&](bool fp16, const uint8_t* data, int64_t t, int64_t n, int64_t off) {
            if (fp16)
                scores_heads(f16_scores, f16_scores_multi, n_gqa, q32, size_t(hd_k) * sizeof(float), data, hd_k, t,
                             n, s + off, kNone);
            else
                scores_heads(scores, scores_multi, n_gqa, query, query_stride, data, hd_k, t, n, s + off, kv.consts);
        });
    }

    // acc_h += the tile's probabilities p[h * kTile + j] times values [t0, t1), every query head.
    void tile_accumulate(const KVStreamView& vv, const float* p, int64_t t0, int64_t t1, float* acc,
                         int64_t acc_stride) const {
        static const KVStreamConsts kNone{};
        vv.for_each_part(t0, t1, hd_v, [&](bool fp16, const uint8_t* data, int64_t t, int64_t n, int64_t off) {
            if (fp16)
                accumulate_heads(f16_accumulate, f16_accumulate_multi, n_gqa, p + off, data, hd_v, t, n, acc,
                                 acc_stride, kNone);
            else
                accumulate_heads(accumulate, accumulate_multi, n_gqa, p + off, data, hd_v, t, n, acc, acc_stride,
                                 vv.consts);
        });
    }

    // Query token i, the query heads of KV head g, split `split` of the key range.
    void run_task(int64_t i, int64_t g, int64_t split, uint8_t* prepared, float* tile_probs) const {
        const int64_t pos = pos0 + i;
        const int64_t lo = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
        const int64_t first_tile = lo / kTile, n_tiles = pos / kTile - first_tile + 1;
        const int64_t tile_begin = first_tile + split * n_tiles / n_split;
        const int64_t tile_end = first_tile + (split + 1) * n_tiles / n_split;
        const int64_t head0 = g * n_gqa;
        const auto fp32_query = [&](int64_t h) { return q + (i * n_head + h) * hd_k; };
        const auto prepared_query = [&](int64_t h) { return prepared + size_t(h - head0) * query_bytes; };
        // The query heads' queries as the K format's scores read them, and their stride.
        const void* queries_k = prepare_query ? static_cast<const void*>(prepared) : fp32_query(head0);
        const size_t queries_k_stride = prepare_query ? query_bytes : size_t(hd_k) * sizeof(float);
        const KVStreamView kv = cache->view(layer, KVKind::K, g, n_stored);
        for (int64_t h = head0; h < head0 + n_gqa; ++h) {
            if (prepare_query) prepare_query(fp32_query(h), hd_k, path, prepared_query(h), kv.consts);
            max[state(i, split, h)] = -std::numeric_limits<float>::infinity();
            sum[state(i, split, h)] = 0.0f;
            std::fill_n(accumulator(i, split, h), hd_v, 0.0f);
        }
        const KVStreamView vv = cache->view(layer, KVKind::V, g, n_stored);
        // The query heads' accumulators are hd_v floats apart (accumulator()).
        float* acc0 = accumulator(i, split, head0);
        const int64_t acc_stride = n_gqa > 1 ? accumulator(i, split, head0 + 1) - acc0 : hd_v;
        for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
            const int64_t t0 = std::max(lo, tile * kTile);
            const int64_t t1 = std::min(pos + 1, (tile + 1) * kTile);
            // All query heads of the KV head on the same tile: each key is unpacked once for
            // them (multi-query kernels), and the tile stays in L1.
            tile_scores(kv, queries_k, queries_k_stride, fp32_query(head0), t0, t1, tile_probs);
            for (int64_t h = head0; h < head0 + n_gqa; ++h)
                online_softmax_step(tile_probs + (h - head0) * kTile, t1 - t0, max[state(i, split, h)],
                                    sum[state(i, split, h)], accumulator(i, split, h), hd_v);
            tile_accumulate(vv, tile_probs, t0, t1, acc0, acc_stride);
        }
        if (n_split == 1)
            for (int64_t h = head0; h < head0 + n_gqa; ++h) {
                const float inv = 1.0f / sum[state(i, 0, h)];
                float* o = accumulator(i, 0, h);
                for (int64_t d = 0; d < hd_v; ++d) o[d] *= inv;
            }
    }

    // Rows (token, head) in [begin, end): rescale each split to the common max, then normalise.
    void merge(int64_t begin, int64_t end) const {
        for (int64_t row = begin; row < end; ++row) {
            const int64_t i = row / n_head, h = row % n_head;
            float global_max = -std::numeric_limits<float>::infinity();
            for (int64_t s = 0; s < n_split; ++s)
                if (sum[state(i, s, h)] > 0.0f) global_max = std::max(global_max, max[state(i, s, h)]);
            float* o = out + row * hd_v;
            std::fill_n(o, hd_v, 0.0f);
            float total = 0.0f;
            for (int64_t s = 0; s < n_split; ++s) {
                if (!(sum[state(i, s, h)] > 0.0f)) continue;  // a split that got no tile
                const float w = std::exp(max[state(i, s, h)] - global_max);
                total += w * sum[state(i, s, h)];
                const float* part = accumulator(i, s, h);
                for (int64_t d = 0; d < hd_v; ++d) o[d] += w * part[d];
            }
            const float inv = 1.0f / total;
            for (int64_t d = 0; d < hd_v; ++d) o[d] *= inv;
        }
    }
};

}  // namespace

Attention::Attention(const KVCache& cache, int n_threads, int64_t n_batch, int64_t n_head)
    : cache_(cache), n_threads_(n_threads), n_batch_(n_batch), n_head_(n_head), f16_(&kv_format("f16")) {
    // A split run has n_tokens * n_head_kv < target tasks before splitting, so its
    // n_tokens * n_split stays below 2 * target.
    max_split_rows_ = 2 * kTasksPerThread * n_threads;
    query_bytes_ = 0;
    for (int64_t il = 0; il < cache.n_layer(); ++il)
        query_bytes_ = std::max(query_bytes_, kv_query_bytes(cache.k_format(il), cache.head_dim_k()));
    query_bytes_ = (query_bytes_ + kQueryAlign - 1) / kQueryAlign * kQueryAlign;
    queries_.resize(size_t(n_threads) * size_t(n_head / cache.n_head_kv()) * query_bytes_);
    probs_.resize(size_t(n_threads) * size_t(n_head / cache.n_head_kv()) * size_t(kTile));
    max_.resize(size_t(std::max(n_batch, max_split_rows_) * n_head));
    sum_.resize(max_.size());
    partial_.resize(size_t(max_split_rows_ * n_head * cache.head_dim_v()));
}

void Attention::run(const float* q, int64_t n_tokens, int64_t pos0, int64_t layer, int64_t window, float* out,
                    ThreadPool& pool, CpuPath path) {
    if (pool.size() > n_threads_ || n_tokens > n_batch_)
        throw InvalidArgument("attention: more threads or tokens than its buffers were sized for");
    AttentionJob job;
    job.q = q;
    job.out = out;
    job.cache = &cache_;
    job.layer = layer;
    job.n_tokens = n_tokens;
    job.pos0 = pos0;
    job.window = window;
    job.path = path;
    job.prepare_query = cache_.k_format(layer).prepare_query;
    job.scores = kv_scores_for(cache_.k_format(layer), path);
    job.accumulate = kv_accumulate_for(cache_.v_format(layer), path);
    job.f16_scores = kv_scores_for(*f16_, path);
    job.f16_accumulate = kv_accumulate_for(*f16_, path);
    job.scores_multi = multi_query_ ? kv_scores_multi_for(cache_.k_format(layer), path) : nullptr;
    job.accumulate_multi = multi_query_ ? kv_accumulate_multi_for(cache_.v_format(layer), path) : nullptr;
    job.f16_scores_multi = multi_query_ ? kv_scores_multi_for(*f16_, path) : nullptr;
    job.f16_accumulate_multi = multi_query_ ? kv_accumulate_multi_for(*f16_, path) : nullptr;
    job.n_stored = pos0 + n_tokens;
    job.n_head = n_head_;
    job.n_head_kv = cache_.n_head_kv();
    job.n_gqa = n_head_ / job.n_head_kv;
    job.hd_k = cache_.head_dim_k();
    job.hd_v = cache_.head_dim_v();
    job.queries = queries_.data();
    job.query_bytes = query_bytes_;
    job.probs = probs_.data();
    job.max = max_.data();
    job.sum = sum_.data();
    job.partial = partial_.data();

    // Too few (token, KV head) tasks for the threads (decode): split the key range too.
    const int64_t target = kTasksPerThread * pool.size();
    const int64_t n_units = n_tokens * job.n_head_kv;
    job.n_split = 1;
    if (n_units < target) {
        const int64_t max_tiles = (pos0 + n_tokens + kTile - 1) / kTile;
        job.n_split = std::min((target + n_units - 1) / n_units, max_tiles);
    }
    job.n_tasks = n_units * job.n_split;

    pool.run([&job](int thread, int) { job.run_tasks(thread); });
    if (job.n_split == 1) return;
    const int64_t rows = n_tokens * n_head_;
    if (rows <= kMaxInlineMergeRows)
        job.merge(0, rows);
    else
        pool.parallel_for(rows, [&job](int64_t begin, int64_t end) { job.merge(begin, end); });
}

}  // namespace decollama
