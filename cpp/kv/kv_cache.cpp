#include "kv/kv_cache.h"

#include <algorithm>
#include <string>

#include "common/error.h"
#include "common/fp16.h"

namespace decollama {

namespace {

constexpr size_t kStreamAlign = 64;

size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

void check_fits(const KVFormat& f, int64_t head_dim, const char* what) {
    if (head_dim % f.dim_block != 0)
        throw InvalidArgument(std::string("KV cache format ") + f.name + " needs a " + what +
                              " head size that is a multiple of " + std::to_string(f.dim_block) + ", the model's is " +
                              std::to_string(head_dim));
    const int64_t s = f.tokens_per_block;
    if (s <= 0 || (kKVTileTokens % s != 0 && s % kKVTileTokens != 0))
        throw InvalidArgument(std::string("KV cache format ") + f.name + ": tokens_per_block must divide or be a " +
                              "multiple of the attention tile");
}

int64_t ring_rows_for(const KVFormat& f, int64_t window) {
    const int64_t pending = f.tokens_per_block > 1 ? f.tokens_per_block : 0;
    return int64_t(round_up(size_t(std::max(window, pending)), size_t(kKVTileTokens)));
}

void to_fp16(const float* src, int64_t n, uint16_t* dst) {
    for (int64_t i = 0; i < n; ++i) dst[i] = fp32_to_fp16(src[i]);
}

void from_fp16(const uint16_t* src, int64_t n, float* dst) {
    for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(src[i]);
}

}  // namespace

KVCache::KVCache(int64_t n_ctx, int64_t n_head_kv, int64_t head_dim_k, int64_t head_dim_v,
                 std::vector<KVLayerFormats> formats, KVCacheOptions options)
    : n_ctx_(n_ctx),
      n_head_kv_(n_head_kv),
      head_dim_k_(head_dim_k),
      head_dim_v_(head_dim_v),
      window_(options.window),
      track_query_energy_(options.track_query_energy),
      formats_(std::move(formats)),
      consts_(std::move(options.consts)) {
    if (n_ctx <= 0) throw InvalidArgument("n_ctx must be > 0");
    if (window_ < 0) throw InvalidArgument("kv_window must be >= 0, got " + std::to_string(window_));
    if (!consts_.empty() && consts_.size() != formats_.size() * 2 * size_t(n_head_kv))
        throw InvalidArgument("KV cache: one set of stream constants per layer, K/V and KV head expected");
    size_t offset = 0;
    for (size_t il = 0; il < formats_.size(); ++il) {
        const KVLayerFormats& lf = formats_[il];
        check_fits(*lf.k, head_dim_k, "key");
        check_fits(*lf.v, head_dim_v, "value");
        LayerLayout l{};
        for (KVKind kind : {KVKind::K, KVKind::V}) {
            const KVFormat& f = kind == KVKind::K ? *lf.k : *lf.v;
            const int64_t hd = kind == KVKind::K ? head_dim_k : head_dim_v;
            if (f.codebook_c > 0)
                for (int64_t h = 0; h < n_head_kv; ++h)
                    if (consts_.empty() || consts_[(il * 2 + size_t(kind)) * size_t(n_head_kv) + size_t(h)].codebook ==
                                               nullptr)
                        throw InvalidArgument(std::string("KV cache format ") + f.name +
                                              " needs a codebook (kv_codebook=...) with layer " + std::to_string(il) +
                                              (kind == KVKind::K ? " keys" : " values"));
            StreamLayout s{};
            s.ring_rows = std::min(ring_rows_for(f, window_), int64_t(round_up(size_t(n_ctx), size_t(kKVTileTokens))));
            s.energy_rows = kind == KVKind::K && f.wants_query_energy && s.ring_rows > 0;
            size_t at = 0;
            s.energy = at;  // floats first: the stream start is aligned
            at += s.energy_rows ? size_t(s.ring_rows * hd) * sizeof(float) : 0;
            s.ring = at;
            at += size_t(s.ring_rows * hd) * sizeof(uint16_t);
            s.sink = at;
            at += size_t(f.n_sink * hd) * sizeof(uint16_t);
            s.blocks = at;
            at += size_t(n_ctx / f.tokens_per_block) * f.block_bytes(hd);  // whole blocks only
            (kind == KVKind::K ? l.k : l.v) = s;
            (kind == KVKind::K ? l.k_stride : l.v_stride) = round_up(at, kStreamAlign);
        }
        layer_offset_.push_back(offset);
        layouts_.push_back(l);
        offset += size_t(n_head_kv) * (l.k_stride + l.v_stride);
    }
    bytes_ = offset;
    base_.reset(new uint8_t[bytes_]);
    ring_lo_.assign(formats_.size() * 2, 0);
    if (track_query_energy_) query_energy_.assign(formats_.size() * size_t(n_head_kv * head_dim_k), 0.0);
    n_stored_.assign(formats_.size(), 0);
}

const KVStreamConsts& KVCache::consts(int64_t layer, KVKind kind, int64_t head) const {
    static const KVStreamConsts kNone{};  // immutable
    if (consts_.empty()) return kNone;
    return consts_[(size_t(layer) * 2 + size_t(kind)) * size_t(n_head_kv_) + size_t(head)];
}

int64_t KVCache::committed(int64_t layer, KVKind kind, int64_t n) const {
    const int64_t s = format(layer, kind).tokens_per_block;
    return n / s * s;
}

int64_t KVCache::first_ring(int64_t layer, KVKind kind, int64_t n) const {
    const KVFormat& f = format(layer, kind);
    return kv_first_ring(n, f.n_sink, f.tokens_per_block, window_);
}

KVStreamView KVCache::view(int64_t layer, KVKind kind, int64_t head, int64_t n) const {
    const StreamLayout& s = layout(layer, kind);
    const uint8_t* base = stream_base(layer, kind, head);
    KVStreamView v;
    v.format = &format(layer, kind);
    v.blocks = base + s.blocks;
    v.sink = reinterpret_cast<const uint16_t*>(base + s.sink);
    v.ring = reinterpret_cast<const uint16_t*>(base + s.ring);
    v.ring_rows = s.ring_rows;
    v.n_sink = std::min(n, v.format->n_sink);
    v.first_ring = first_ring(layer, kind, n);
    v.consts = consts(layer, kind, head);
    return v;
}

void KVCache::store_stream(int64_t layer, KVKind kind, int64_t head, int64_t pos, int64_t n, const float* rows,
                           int64_t row_stride, const float* q, int64_t n_head, std::vector<float>& scratch) {
    const KVFormat& f = format(layer, kind);
    const StreamLayout& s = layout(layer, kind);
    const int64_t hd = head_dim(kind);
    uint8_t* base = stream_base(layer, kind, head);
    uint16_t* ring = reinterpret_cast<uint16_t*>(base + s.ring);
    uint16_t* sink = reinterpret_cast<uint16_t*>(base + s.sink);
    float* energy = reinterpret_cast<float*>(base + s.energy);
    const int64_t R = s.ring_rows, S = f.tokens_per_block;
    const KVStreamConsts& c = consts(layer, kind, head);

    for (int64_t t = pos; t < std::min(pos + n, f.n_sink); ++t) to_fp16(rows + (t - pos) * row_stride, hd, sink + t * hd);

    if (S == 1) {  // compressed from the fp32 rows, like llama.cpp; the ring keeps the newest R
        f.append(rows, row_stride, n, base + s.blocks, hd, pos, nullptr, c);
        for (int64_t t = std::max(pos, pos + n - R); t < pos + n; ++t)
            to_fp16(rows + (t - pos) * row_stride, hd, ring + (t % R) * hd);
        return;
    }
    // Block formats: rows go through the ring (fp16) and a block is compressed from there
    // when it fills, so prefill and decode compress the same values.
    const int64_t n_gqa = n_head / n_head_kv_;
    scratch.resize(size_t(2 * S * hd));
    float* block_rows = scratch.data();
    float* block_energy = scratch.data() + S * hd;
    for (int64_t t = pos; t < pos + n; ++t) {
        to_fp16(rows + (t - pos) * row_stride, hd, ring + (t % R) * hd);
        if (s.energy_rows) {
            float* e = energy + (t % R) * hd;
            const float* qt = q + (t - pos) * n_head * hd + head * n_gqa * hd;
            for (int64_t d = 0; d < hd; ++d) e[d] = qt[d] * qt[d];
            for (int64_t h = 1; h < n_gqa; ++h)
                for (int64_t d = 0; d < hd; ++d) e[d] += qt[h * hd + d] * qt[h * hd + d];
        }
        if ((t + 1) % S != 0) continue;
        const int64_t t0 = t + 1 - S;
        for (int64_t r = 0; r < S; ++r) {
            from_fp16(ring + ((t0 + r) % R) * hd, hd, block_rows + r * hd);
            if (s.energy_rows) std::copy_n(energy + ((t0 + r) % R) * hd, hd, block_energy + r * hd);
        }
        f.append(block_rows, hd, S, base + s.blocks, hd, t0, s.energy_rows ? block_energy : nullptr, c);
    }
}

void KVCache::store(int64_t layer, int64_t pos, int64_t n, const float* k, const float* v, const float* q,
                    int64_t n_head, ThreadPool& pool) {
    if (n <= 0) return;
    if (pos != n_stored_[size_t(layer)])
        throw InvalidArgument("KV cache: store at position " + std::to_string(pos) + " but " +
                              std::to_string(n_stored_[size_t(layer)]) + " are stored (truncate first)");
    if (pos + n > n_ctx_) throw InvalidArgument("KV cache: positions beyond n_ctx");
    if (!is_external(layer) && wants_queries(layer) && q == nullptr) throw InvalidArgument("KV cache: this key format needs the queries");
    if (track_query_energy_ && !is_external(layer)) {
        const int64_t n_gqa = n_head / n_head_kv_;
        for (int64_t t = 0; t < n; ++t)
            for (int64_t h = 0; h < n_head; ++h) {
                double* e = query_energy_.data() + size_t((layer * n_head_kv_ + h / n_gqa) * head_dim_k_);
                const float* qh = q + (t * n_head + h) * head_dim_k_;
                for (int64_t d = 0; d < head_dim_k_; ++d) e[d] += double(qh[d]) * double(qh[d]);
            }
    }
    // Task = (K or V, head): a stream's rows are written in order (its ring is reused).
    const auto store_range = [&](int64_t begin, int64_t end) {
        std::vector<float> scratch;
        for (int64_t task = begin; task < end; ++task) {
            const KVKind kind = task < n_head_kv_ ? KVKind::K : KVKind::V;
            const int64_t h = task % n_head_kv_, hd = head_dim(kind);
            const float* rows = (kind == KVKind::K ? k : v) + h * hd;
            store_stream(layer, kind, h, pos, n, rows, n_head_kv_ * hd, q, n_head, scratch);
        }
    };
    const int64_t n_tasks = is_external(layer) ? 0 : 2 * n_head_kv_;
    const bool blocky = k_format(layer).tokens_per_block > 1 || v_format(layer).tokens_per_block > 1;
    if (n_tasks == 0) {
        // external layer: its owner writes the bytes
    } else if (n < 16 && !blocky)  // decode: a few rows, not worth waking the pool
        store_range(0, n_tasks);
    else
        pool.parallel_for(n_tasks, store_range);
    n_stored_[size_t(layer)] = pos + n;
    for (KVKind kind : {KVKind::K, KVKind::V}) {
        int64_t& lo = ring_lo_[size_t(layer) * 2 + size_t(kind)];
        lo = std::max(lo, pos + n - layout(layer, kind).ring_rows);
    }
}

void KVCache::refill_ring(int64_t layer, KVKind kind, int64_t first, int64_t end) {
    if (first >= end) return;
    const StreamLayout& sl = layout(layer, kind);
    const int64_t hd = head_dim(kind);
    std::vector<float> rows(size_t((end - first) * hd));
    for (int64_t h = 0; h < n_head_kv_; ++h) {
        uint8_t* base = stream_base(layer, kind, h);
        format(layer, kind).read(base + sl.blocks, hd, first, end - first, rows.data(), consts(layer, kind, h));
        uint16_t* ring = reinterpret_cast<uint16_t*>(base + sl.ring);
        for (int64_t t = first; t < end; ++t) to_fp16(rows.data() + (t - first) * hd, hd, ring + (t % sl.ring_rows) * hd);
    }
}

int64_t KVCache::truncate(int64_t n) {
    n = std::max<int64_t>(0, n);
    int64_t kept = n;
    for (int64_t il = 0; il < n_layer(); ++il) {
        kept = std::min(kept, n_stored_[size_t(il)]);
        for (KVKind kind : {KVKind::K, KVKind::V}) {
            // Inside a compressed block: back to its start (its fit saw later rows).
            const int64_t s = format(il, kind).tokens_per_block;
            if (s > 1 && kept < committed(il, kind, n_stored_[size_t(il)])) kept = kept / s * s;
        }
    }
    if (kept == 0) std::fill(query_energy_.begin(), query_energy_.end(), 0.0);
    for (int64_t il = 0; il < n_layer(); ++il) {
        n_stored_[size_t(il)] = std::min(n_stored_[size_t(il)], kept);
        for (KVKind kind : {KVKind::K, KVKind::V}) {
            int64_t& lo = ring_lo_[size_t(il) * 2 + size_t(kind)];
            const int64_t need = first_ring(il, kind, kept);
            // Ring rows read after the truncation: [need, kept); valid ones: [lo, kept).
            const int64_t end = std::min(lo, kept);
            if (need >= end) {
                lo = std::min(lo, kept);
                continue;
            }
            // Window rows overwritten in the ring: decode them from the blocks (they were
            // compressed when written).
            if (is_external(il)) {
                if (refill_) refill_(refill_ctx_, il, kind, need, end);
            } else {
                refill_ring(il, kind, need, end);
            }
            lo = need;
        }
    }
    return kept;
}

void KVCache::read(int64_t layer, KVKind kind, int64_t head, int64_t t, int64_t n, float* out) const {
    const KVStreamView v = view(layer, kind, head, n_stored_[size_t(layer)]);
    const int64_t hd = head_dim(kind);
    for (int64_t p = t; p < t + n; ++p) {
        float* o = out + (p - t) * hd;
        if (p < v.n_sink)
            from_fp16(v.sink + p * hd, hd, o);
        else if (p >= v.first_ring)
            from_fp16(v.ring + (p % v.ring_rows) * hd, hd, o);
        else
            v.format->read(v.blocks, hd, p, 1, o, v.consts);
    }
}

double KVCache::bytes_in_use(int64_t layer, KVKind kind, int64_t n) const {
    const KVFormat& f = format(layer, kind);
    const StreamLayout& s = layout(layer, kind);
    const int64_t hd = head_dim(kind);
    const double blocks = double(n / f.tokens_per_block) * double(f.block_bytes(hd));
    const double sink = double(std::min(n, f.n_sink) * hd) * 2.0;
    const int64_t ring_rows = n - first_ring(layer, kind, n);
    const double ring = double(ring_rows * hd) * (2.0 + (s.energy_rows ? 4.0 : 0.0));
    return double(n_head_kv_) * (blocks + sink + ring);
}

double KVCache::layer_bytes_per_token(int64_t layer) const {
    const LayerLayout& l = layouts_[size_t(layer)];
    return double(n_head_kv_) * double(l.k_stride + l.v_stride) / double(n_ctx_);
}

}  // namespace decollama
