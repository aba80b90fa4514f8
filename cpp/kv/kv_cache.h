// The KV cache: per layer, one K and one V stream per KV head, each in that layer's formats
// (K and V chosen independently, per layer). Token t of a stream is position t; the model
// tracks how many positions are filled.
#pragma once
#include <cstddef>
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

class KVCache {
public:
    // One formats entry per layer. InvalidArgument when a head_dim does not fit a format's block.
    KVCache(int64_t n_ctx, int64_t n_head_kv, int64_t head_dim_k, int64_t head_dim_v,
            std::vector<KVLayerFormats> formats);

    int64_t n_ctx() const { return n_ctx_; }
    int64_t n_layer() const { return int64_t(formats_.size()); }
    int64_t n_head_kv() const { return n_head_kv_; }
    int64_t head_dim_k() const { return head_dim_k_; }
    int64_t head_dim_v() const { return head_dim_v_; }
    const KVFormat& k_format(int64_t layer) const { return *formats_[size_t(layer)].k; }
    const KVFormat& v_format(int64_t layer) const { return *formats_[size_t(layer)].v; }

    uint8_t* k_stream(int64_t layer, int64_t head) { return base_.get() + k_offset(layer, head); }
    uint8_t* v_stream(int64_t layer, int64_t head) { return base_.get() + v_offset(layer, head); }
    const uint8_t* k_stream(int64_t layer, int64_t head) const { return base_.get() + k_offset(layer, head); }
    const uint8_t* v_stream(int64_t layer, int64_t head) const { return base_.get() + v_offset(layer, head); }

    // Stores positions [pos, pos + n) of one layer: k rows of n_head_kv * head_dim_k values,
    // v rows of n_head_kv * head_dim_v (head after head, the projections' layout). Batches are
    // spread over the pool in whole attention tiles, so no block has two writers.
    void store(int64_t layer, int64_t pos, int64_t n, const float* k, const float* v, ThreadPool& pool);

    size_t bytes_allocated() const { return bytes_; }
    // Nominal bytes one position takes over all layers, heads, K and V.
    double bytes_per_token() const;
    double layer_bytes_per_token(int64_t layer) const;

private:
    // Bytes of one layer: its n_head_kv K streams, then its n_head_kv V streams.
    struct LayerLayout {
        size_t offset, k_stream_bytes, v_stream_bytes;
    };
    size_t k_offset(int64_t layer, int64_t head) const {
        const LayerLayout& l = layouts_[size_t(layer)];
        return l.offset + size_t(head) * l.k_stream_bytes;
    }
    size_t v_offset(int64_t layer, int64_t head) const {
        const LayerLayout& l = layouts_[size_t(layer)];
        return l.offset + size_t(n_head_kv_) * l.k_stream_bytes + size_t(head) * l.v_stream_bytes;
    }

    int64_t n_ctx_, n_head_kv_, head_dim_k_, head_dim_v_;
    std::vector<KVLayerFormats> formats_;
    std::vector<LayerLayout> layouts_;
    size_t bytes_ = 0;
    std::unique_ptr<uint8_t[]> base_;  // uninitialised: pages are touched as positions fill
};

}  // namespace decollama
