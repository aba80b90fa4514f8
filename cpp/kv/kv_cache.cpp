#include "kv/kv_cache.h"

#include <algorithm>
#include <string>

#include "common/error.h"

namespace decollama {

namespace {

void check_fits(const KVFormat& f, int64_t head_dim, const char* what) {
    if (head_dim % f.dim_block != 0)
        throw InvalidArgument(std::string("KV cache format ") + f.name + " needs a " + what +
                              " head size that is a multiple of " + std::to_string(f.dim_block) + ", the model's is " +
                              std::to_string(head_dim));
}

}  // namespace

KVCache::KVCache(int64_t n_ctx, int64_t n_head_kv, int64_t head_dim_k, int64_t head_dim_v,
                 std::vector<KVLayerFormats> formats)
    : n_ctx_(n_ctx),
      n_head_kv_(n_head_kv),
      head_dim_k_(head_dim_k),
      head_dim_v_(head_dim_v),
      formats_(std::move(formats)) {
    if (n_ctx <= 0) throw InvalidArgument("n_ctx must be > 0");
    for (const KVLayerFormats& lf : formats_) {
        check_fits(*lf.k, head_dim_k, "key");
        check_fits(*lf.v, head_dim_v, "value");
        const LayerLayout l{bytes_, kv_stream_bytes(*lf.k, head_dim_k, n_ctx),
                            kv_stream_bytes(*lf.v, head_dim_v, n_ctx)};
        layouts_.push_back(l);
        bytes_ += size_t(n_head_kv) * (l.k_stream_bytes + l.v_stream_bytes);
    }
    base_.reset(new uint8_t[bytes_]);
}

void KVCache::store(int64_t layer, int64_t pos, int64_t n, const float* k, const float* v, ThreadPool& pool) {
    if (n <= 0) return;
    const KVFormat& kf = k_format(layer);
    const KVFormat& vf = v_format(layer);
    const int64_t first_tile = pos / kKVTileTokens;
    const int64_t n_tiles = (pos + n - 1) / kKVTileTokens - first_tile + 1;
    // Task = (K or V, head, tile).
    const auto store_range = [&](int64_t begin, int64_t end) {
        for (int64_t task = begin; task < end; ++task) {
            const int64_t tile = first_tile + task % n_tiles, h = task / n_tiles % n_head_kv_;
            const int64_t t0 = std::max(pos, tile * kKVTileTokens);
            const int64_t t1 = std::min(pos + n, (tile + 1) * kKVTileTokens);
            if (task < n_tiles * n_head_kv_)
                kf.append(k + (t0 - pos) * n_head_kv_ * head_dim_k_ + h * head_dim_k_, n_head_kv_ * head_dim_k_,
                          t1 - t0, k_stream(layer, h), head_dim_k_, t0);
            else
                vf.append(v + (t0 - pos) * n_head_kv_ * head_dim_v_ + h * head_dim_v_, n_head_kv_ * head_dim_v_,
                          t1 - t0, v_stream(layer, h), head_dim_v_, t0);
        }
    };
    const int64_t n_tasks = 2 * n_head_kv_ * n_tiles;
    if (n < kKVTileTokens)  // decode: a few rows, not worth waking the pool
        store_range(0, n_tasks);
    else
        pool.parallel_for(n_tasks, store_range);
}

double KVCache::layer_bytes_per_token(int64_t layer) const {
    const KVFormat& kf = k_format(layer);
    const KVFormat& vf = v_format(layer);
    return double(n_head_kv_) * (double(kf.block_bytes(head_dim_k_)) / double(kf.tokens_per_block) +
                                 double(vf.block_bytes(head_dim_v_)) / double(vf.tokens_per_block));
}

double KVCache::bytes_per_token() const {
    double total = 0.0;
    for (int64_t il = 0; il < n_layer(); ++il) total += layer_bytes_per_token(il);
    return total;
}

}  // namespace decollama
