// The KV cache: per layer, one K and one V stream per KV head, each in that layer's formats
// (K and V chosen independently, per layer). Token t of a stream is position t; the model
// tracks how many positions are filled.
//
// Around each format's own storage the cache keeps fp16 sink rows (the format's first n_sink
// positions) and an fp16 ring of the newest rows: the rows of a block not yet full (formats
// that compress S > 1 tokens at once) and the newest `window` tokens. Attention reads a stream
// through view(): sink, then the format's blocks, then the ring. Layout notes: cpp/kv/README.md.
#pragma once
#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "common/thread_pool.h"
#include "kv/kv_format.h"

namespace decollama {

struct KVLayerFormats {
    const KVFormat* k;
    const KVFormat* v;
};

// What attention needs to read one stream of n stored positions.
struct KVStreamView {
    const KVFormat* format;
    const uint8_t* blocks;      // the format's storage, absolute token indices
    const uint16_t* sink;       // n_sink fp16 rows
    const uint16_t* ring;       // ring_rows fp16 rows, position t in row t % ring_rows
    int64_t ring_rows;
    int64_t n_sink;             // positions [0, n_sink) read from sink
    int64_t first_ring;         // positions [n_sink, first_ring) from blocks, [first_ring, n) from ring
    KVStreamConsts consts;

    // Splits positions [t0, t1) of one attention tile by where they are read and calls
    // fn(fp16, data, t, n, offset) for each part: fp16 = sink or ring rows (data + t * head_dim
    // halves), else the format's blocks at absolute t; offset = first position - t0.
    template <class Fn>
    void for_each_part(int64_t t0, int64_t t1, int64_t head_dim, Fn&& fn) const {
        int64_t a = t0;
        if (a < n_sink) {
            const int64_t e = std::min(t1, n_sink);
            fn(true, reinterpret_cast<const uint8_t*>(sink), a, e - a, a - t0);
            a = e;
        }
        if (a < t1 && a < first_ring) {
            const int64_t e = std::min(t1, first_ring);
            fn(false, blocks, a, e - a, a - t0);
            a = e;
        }
        // A tile never wraps the ring: ring_rows is a multiple of the tile.
        if (a < t1) fn(true, reinterpret_cast<const uint8_t*>(ring + (a % ring_rows) * head_dim), int64_t(0), t1 - a, a - t0);
    }
};

// Where one stream's parts lie, as byte offsets from the stream's start (the same in every head
// of a layer's K or V): query energy rows (fp32), the fp16 ring, fp16 sink rows, the blocks.
struct KVStreamLayout {
    size_t blocks, sink, ring, energy;
    int64_t ring_rows;
    bool energy_rows;  // the ring carries per-row query energies (keys of deco*)
};

// Positions [first_ring, n) of a stream with n stored are read from the ring: the ones past the
// complete blocks and the newest `window`, never the sink.
inline int64_t kv_first_ring(int64_t n, int64_t n_sink, int64_t tokens_per_block, int64_t window) {
    const int64_t sink = std::min(n, n_sink);
    return std::max(sink, std::min(n / tokens_per_block * tokens_per_block, n - window));
}

struct KVCacheOptions {
    int64_t window = 0;  // newest positions read from the fp16 ring (every format)
    // Per (layer, K or V, KV head), index (layer * 2 + kind) * n_head_kv + head; empty when no
    // format needs constants. Not owned: must outlive the cache.
    std::vector<KVStreamConsts> consts;
    // Sum, per (layer, KV head, channel), the squared queries of every stored position
    // (calibration: the k-means metric of CQ keys).
    bool track_query_energy = false;
};

class KVCache {
public:
    // One formats entry per layer. InvalidArgument when a head_dim does not fit a format's
    // block or a format needs constants that are missing.
    KVCache(int64_t n_ctx, int64_t n_head_kv, int64_t head_dim_k, int64_t head_dim_v,
            std::vector<KVLayerFormats> formats, KVCacheOptions options = {});

    int64_t n_ctx() const { return n_ctx_; }
    int64_t n_layer() const { return int64_t(formats_.size()); }
    int64_t n_head_kv() const { return n_head_kv_; }
    int64_t head_dim_k() const { return head_dim_k_; }
    int64_t head_dim_v() const { return head_dim_v_; }
    int64_t window() const { return window_; }
    const KVFormat& k_format(int64_t layer) const { return *formats_[size_t(layer)].k; }
    const KVFormat& v_format(int64_t layer) const { return *formats_[size_t(layer)].v; }
    const KVFormat& format(int64_t layer, KVKind kind) const {
        return kind == KVKind::K ? k_format(layer) : v_format(layer);
    }
    bool tracks_query_energy() const { return track_query_energy_; }
    bool wants_queries(int64_t layer) const { return track_query_energy_ || k_format(layer).wants_query_energy; }
    // With track_query_energy: sum over stored positions and the KV head's query heads of q^2,
    // head_dim_k values (cleared with the cache).
    const double* query_energy(int64_t layer, int64_t head) const {
        return query_energy_.data() + size_t((layer * n_head_kv_ + head) * head_dim_k_);
    }

    // Stores positions [pos, pos + n) of one layer: k rows of n_head_kv * head_dim_k values,
    // v rows of n_head_kv * head_dim_v (head after head, the projections' layout). q: the n
    // query rows (n_head * head_dim_k each, after RoPE) when wants_queries(layer), else null.
    // pos must equal the number of positions stored (append only; truncate() first).
    void store(int64_t layer, int64_t pos, int64_t n, const float* k, const float* v, const float* q, int64_t n_head,
               ThreadPool& pool);

    // The stream as attention reads it with n positions stored.
    KVStreamView view(int64_t layer, KVKind kind, int64_t head, int64_t n) const;

    // Forgets positions >= n and returns how many are kept: n, or less where a block format
    // cannot reopen a compressed block exactly (then a block boundary); the caller evaluates
    // the difference again. Window rows no longer in the ring are refilled from the blocks.
    int64_t truncate(int64_t n);
    void clear() { truncate(0); }
    // Positions stored in layer 0 (every layer once a forward pass is complete).
    int64_t n_stored() const { return n_stored_.empty() ? 0 : n_stored_[0]; }

    // Decodes positions [t, t + n) of a stream as attention sees them (tests, calibration).
    void read(int64_t layer, KVKind kind, int64_t head, int64_t t, int64_t n, float* out) const;

    // ---- layout, for a device copy of some layers (the GPU keeps the same bytes) ----
    const KVStreamLayout& stream_layout(int64_t layer, KVKind kind) const { return layout(layer, kind); }
    // Byte offset of a layer's streams from data(), and their size: K heads then V heads.
    size_t layer_offset(int64_t layer) const { return layer_offset_[size_t(layer)]; }
    size_t layer_bytes(int64_t layer) const {
        const LayerLayout& l = layouts_[size_t(layer)];
        return size_t(n_head_kv_) * (l.k_stride + l.v_stride);
    }
    // Offset of head 0's stream inside its layer, and the bytes between heads.
    size_t kind_offset_in_layer(int64_t layer, KVKind kind) const {
        return kind == KVKind::K ? 0 : layouts_[size_t(layer)].k_stride * size_t(n_head_kv_);
    }
    size_t head_stride(int64_t layer, KVKind kind) const {
        const LayerLayout& l = layouts_[size_t(layer)];
        return kind == KVKind::K ? l.k_stride : l.v_stride;
    }
    uint8_t* data() { return base_.get(); }
    const uint8_t* data() const { return base_.get(); }
    const KVStreamConsts& stream_consts(int64_t layer, KVKind kind, int64_t head) const {
        return consts(layer, kind, head);
    }
    int64_t first_ring(int64_t layer, KVKind kind, int64_t n) const;
    // Layers >= first are stored and read elsewhere (a device copy of their bytes): store() only
    // advances their bookkeeping, and truncate() hands their ring refills to `refill` instead of
    // writing them (refill(layer, kind, first, end): rows [first, end) must be decoded from the
    // blocks back into the ring). Their host bytes are valid only where the owner copied them back.
    using RefillFn = void (*)(void* ctx, int64_t layer, KVKind kind, int64_t first, int64_t end);
    void set_external_layers(int64_t first, RefillFn refill, void* ctx) {
        first_external_ = first;
        refill_ = refill;
        refill_ctx_ = ctx;
    }
    bool is_external(int64_t layer) const { return layer >= first_external_; }
    // Decodes positions [first, end) of every head's K or V stream of a layer from its blocks
    // into its fp16 ring, on the host bytes (truncate's refill; an external layer's owner calls
    // it on a host copy of the layer's bytes).
    void refill_ring(int64_t layer, KVKind kind, int64_t first, int64_t end);

    size_t bytes_allocated() const { return bytes_; }
    // bytes_allocated() / n_ctx: what one position costs at full context, ring and sink included.
    double bytes_per_token() const { return double(bytes_) / double(n_ctx_); }
    // Bytes that hold the first n positions: compressed blocks in use, sink rows, and the ring
    // rows read as fp16 (pending block rows, window) with their query energies.
    double bytes_in_use(int64_t layer, KVKind kind, int64_t n) const;
    double layer_bytes_per_token(int64_t layer) const;

private:
    using StreamLayout = KVStreamLayout;
    struct LayerLayout {
        StreamLayout k, v;
        size_t k_stride, v_stride;  // bytes per head
    };
    const StreamLayout& layout(int64_t layer, KVKind kind) const {
        const LayerLayout& l = layouts_[size_t(layer)];
        return kind == KVKind::K ? l.k : l.v;
    }
    uint8_t* stream_base(int64_t layer, KVKind kind, int64_t head) const {
        const LayerLayout& l = layouts_[size_t(layer)];
        const size_t in_layer = kind == KVKind::K ? size_t(head) * l.k_stride
                                                  : l.k_stride * size_t(n_head_kv_) + size_t(head) * l.v_stride;
        return base_.get() + layer_offset_[size_t(layer)] + in_layer;
    }
    int64_t head_dim(KVKind kind) const { return kind == KVKind::K ? head_dim_k_ : head_dim_v_; }
    const KVStreamConsts& consts(int64_t layer, KVKind kind, int64_t head) const;
    // Positions of a stream in complete blocks (compressed) with n stored.
    int64_t committed(int64_t layer, KVKind kind, int64_t n) const;
    void store_stream(int64_t layer, KVKind kind, int64_t head, int64_t pos, int64_t n, const float* rows,
                      int64_t row_stride, const float* q, int64_t n_head, std::vector<float>& scratch);

    int64_t n_ctx_, n_head_kv_, head_dim_k_, head_dim_v_, window_;
    bool track_query_energy_;
    std::vector<double> query_energy_;
    std::vector<KVLayerFormats> formats_;
    std::vector<KVStreamConsts> consts_;
    std::vector<LayerLayout> layouts_;
    std::vector<size_t> layer_offset_;
    std::vector<int64_t> ring_lo_;   // per (layer, kind): lowest position whose ring row is valid
    std::vector<int64_t> n_stored_;  // per layer
    size_t bytes_ = 0;
    int64_t first_external_ = INT64_MAX;
    RefillFn refill_ = nullptr;
    void* refill_ctx_ = nullptr;
    std::unique_ptr<uint8_t[]> base_;  // uninitialised: pages are touched as positions fill
};

}  // namespace decollama
