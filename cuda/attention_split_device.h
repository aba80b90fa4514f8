// The DL_HD pieces of split-K (flash-decoding) attention over the KV cache, shared by the CUDA
// kernels (cuda/gpu_attention.cu) and the host emulation the CPU-only tests run
// (_core.gpu_host_attention): which keys a query sees, how its key range is cut into chunks of
// 256-position tiles, where a position is read (sink / format blocks / ring, as
// KVStreamView::for_each_part splits it), the per-lane part of a key's score, the softmax
// rescale and the log-sum-exp merge of the chunks.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kv/kv_cache.h"
#include "kv_device_formats.h"

namespace decollama::gpu {

// Positions per tile: one deco block, so a tile's block rows share one basis; a multiple of the
// ring's 64-row granularity.
constexpr int kAttnTile = 256;
// Query heads per KV head one CUDA block serves (registers per thread scale with it).
constexpr int kMaxGqa = 16;
// Lanes over head_dim in a key's score (a warp).
constexpr int kScoreLanes = 32;

// How a run's key ranges are split: chunk c of query token i covers tiles
// [first_tile(i) + c * chunk_tiles, first_tile(i) + (c + 1) * chunk_tiles) of its range.
struct SplitPlan {
    int64_t pos0 = 0, n_tokens = 0, attn_window = 0;
    int64_t chunk_tiles = 1;  // tiles per chunk
    int64_t n_chunks = 1;     // chunks per query token (1: no merge, the kernel normalises)
};

// Keys [lo, hi] query token i (position pos0 + i) sees: causal, sliding window when > 0.
DL_HD void query_keys(const SplitPlan& p, int64_t i, int64_t* lo, int64_t* hi) {
    *hi = p.pos0 + i;
    *lo = p.attn_window > 0 ? (*hi - p.attn_window + 1 > 0 ? *hi - p.attn_window + 1 : 0) : 0;
}

// Tiles [*begin, *end) of chunk c of query token i; empty (begin >= end) past its last tile.
DL_HD void chunk_tiles(const SplitPlan& p, int64_t i, int64_t c, int64_t* begin, int64_t* end) {
    int64_t lo, hi;
    query_keys(p, i, &lo, &hi);
    const int64_t first = lo / kAttnTile, last = hi / kAttnTile;
    *begin = first + c * p.chunk_tiles;
    const int64_t e = *begin + p.chunk_tiles;
    *end = e < last + 1 ? e : last + 1;
}

// Plans a run: chunks of whole tiles, at most max_chunks per query token.
inline SplitPlan make_split_plan(int64_t pos0, int64_t n_tokens, int64_t attn_window, int64_t max_chunks) {
    SplitPlan p;
    p.pos0 = pos0;
    p.n_tokens = n_tokens;
    p.attn_window = attn_window;
    int64_t max_tiles = 1;  // the most tiles any of the queries touches
    for (int64_t i = 0; i < n_tokens; ++i) {
        int64_t lo, hi;
        query_keys(p, i, &lo, &hi);
        max_tiles = std::max(max_tiles, hi / kAttnTile - lo / kAttnTile + 1);
    }
    max_chunks = std::max<int64_t>(1, max_chunks);
    p.chunk_tiles = (max_tiles + max_chunks - 1) / max_chunks;
    p.n_chunks = (max_tiles + p.chunk_tiles - 1) / p.chunk_tiles;
    return p;
}

// Chunks per query token at most (decode): longer contexts get longer chunks, so the scratch
// of partial states stays bounded.
constexpr int64_t kMaxChunks = 128;
// Chunks per query token a full batch (prefill) is sized for: its tokens already fill the GPU.
constexpr int64_t kBatchChunks = 4;

// Partial states per query head the scratch of a GpuAttention for n_batch tokens over n_ctx
// positions holds, and the chunks per query token a run of n_tokens gets from them.
inline int64_t split_rows_per_head(int64_t n_batch, int64_t n_ctx) {
    const int64_t ctx_tiles = (n_ctx + kAttnTile - 1) / kAttnTile;
    return std::max(std::min(kMaxChunks, ctx_tiles), n_batch * std::min(kBatchChunks, ctx_tiles));
}
inline int64_t split_max_chunks(int64_t rows_per_head, int64_t n_tokens) {
    return std::max<int64_t>(1, std::min(kMaxChunks, rows_per_head / std::max<int64_t>(1, n_tokens)));
}

// One layer's K or V streams as a kernel reads them with n_stored positions in the cache.
struct SplitStream {
    const uint8_t* base = nullptr;  // head 0's stream
    size_t head_stride = 0;
    size_t sink = 0, ring = 0, blocks = 0;  // offsets inside a stream (KVStreamLayout)
    int64_t ring_rows = 0, n_sink = 0, first_ring = 0;
    int head_dim = 0, variant = 0;
    const float* codebooks = nullptr;  // cq*: per head [head_dim / c][256][c], back to back
};

// The stream set's reading state for n_stored positions (the same split as KVCache::view).
inline SplitStream split_stream(const KVFormat& f, const GpuKvFormatRow& row, const uint8_t* base, size_t head_stride,
                                const KVStreamLayout& layout, int64_t head_dim, const float* codebooks,
                                int64_t n_stored, int64_t cache_window) {
    SplitStream s;
    s.base = base;
    s.head_stride = head_stride;
    s.sink = layout.sink;
    s.ring = layout.ring;
    s.blocks = layout.blocks;
    s.ring_rows = layout.ring_rows;
    s.n_sink = std::min(n_stored, f.n_sink);
    s.first_ring = kv_first_ring(n_stored, f.n_sink, f.tokens_per_block, cache_window);
    s.head_dim = int(head_dim);
    s.variant = row.variant;
    s.codebooks = codebooks;
    return s;
}

// One KV head's stream: its parts and the format's geometry.
struct HeadStream {
    const uint8_t* sink;
    const uint8_t* blocks;
    const uint8_t* ring;
    int64_t ring_rows, n_sink, first_ring;
    KvStreamGeometry geometry;
};

DL_HD HeadStream head_stream(const SplitStream& s, int64_t head) {
    const uint8_t* base = s.base + size_t(head) * s.head_stride;
    HeadStream h;
    h.sink = base + s.sink;
    h.blocks = base + s.blocks;
    h.ring = base + s.ring;
    h.ring_rows = s.ring_rows;
    h.n_sink = s.n_sink;
    h.first_ring = s.first_ring;
    h.geometry.head_dim = s.head_dim;
    h.geometry.variant = s.variant;
    h.geometry.codebook = s.codebooks ? s.codebooks + size_t(head) * size_t(s.head_dim) * 256 : nullptr;
    return h;
}

// Where position t is read: an fp16 sink / ring row, or a row of the format's blocks.
struct KeyRow {
    const uint8_t* row;
    bool fp16;
};

template <class F>
DL_HD KeyRow locate(const HeadStream& s, int64_t t) {
    if (t < s.n_sink) return {Fp16Rows::row(s.sink, s.geometry.head_dim, t), true};
    if (t < s.first_ring) return {F::row(s.blocks, s.geometry, t), false};
    return {Fp16Rows::row(s.ring, s.geometry.head_dim, t % s.ring_rows), true};
}

template <class F>
DL_HD float row_value(const KeyRow& r, const KvStreamGeometry& g, int e) {
    return r.fp16 ? Fp16Rows::value(r.row, e) : F::value(r.row, g, e);
}

// The format-block positions [*b0, *b1) of keys [t0, t1) (empty when b0 >= b1).
DL_HD void block_part(const HeadStream& s, int64_t t0, int64_t t1, int64_t* b0, int64_t* b1) {
    *b0 = t0 > s.n_sink ? t0 : s.n_sink;
    *b1 = t1 < s.first_ring ? t1 : s.first_ring;
}

// Lane `lane` of a key's score: part[h] = sum over e = lane, lane + 32, ... of q_h[e] * k[e] for
// the n_q query heads (q_h at q + h * head_dim). Format rows of a block-basis format read the
// prepared queries (q_basis), fp16 rows the fp32 ones.
template <class F>
DL_HD void score_lane(const KeyRow& r, const KvStreamGeometry& g, const float* q, const float* q_basis, int n_q,
                      int lane, float* part) {
    const float* qs = (F::kBlockBasis && !r.fp16) ? q_basis : q;
    const int D = g.head_dim;
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
    for (int h = 0; h < kMaxGqa; ++h) part[h] = 0.0f;
    for (int e = lane; e < D; e += kScoreLanes) {
        const float v = row_value<F>(r, g, e);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
        for (int h = 0; h < kMaxGqa; ++h)
            if (h < n_q) part[h] += qs[h * D + e] * v;
    }
}

// ---- softmax state -----------------------------------------------------------------------------

// Factor that moves a state at max `old_max` to `new_max` (>= old_max); 0 for an empty state.
DL_HD float softmax_rescale(float old_max, float new_max) {
    return old_max == -INFINITY ? 0.0f : expf(old_max - new_max);
}

// Element e of the merged output of n_chunks partial states of one (token, head): ml[2c] = max,
// ml[2c + 1] = sum of exp, acc[c * head_dim + e] unnormalised outputs; states with sum 0 (no
// keys in that chunk) are skipped. Log-sum-exp combine.
DL_HD float merge_element(const float* ml, const float* acc, int64_t n_chunks, int head_dim, int e) {
    float m = -INFINITY;
    for (int64_t c = 0; c < n_chunks; ++c)
        if (ml[2 * c + 1] > 0.0f && ml[2 * c] > m) m = ml[2 * c];
    float total = 0.0f, o = 0.0f;
    for (int64_t c = 0; c < n_chunks; ++c) {
        if (!(ml[2 * c + 1] > 0.0f)) continue;
        const float w = expf(ml[2 * c] - m);
        total += w * ml[2 * c + 1];
        o += w * acc[c * head_dim + e];
    }
    return o / total;
}

}  // namespace decollama::gpu
