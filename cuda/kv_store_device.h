// The work items of the quantize-on-write store (gpu_kv_store, cuda/gpu_kv_store.cu) as DL_HD
// functions: the kernels run them one thread per item, and the host twin kv_store_on_host() runs
// the same items in loops, so host tests check the whole store (offsets, sink, ring wrap, energy
// rows, block sources) against KVCache::store_stream without a GPU.
//
// What one call stores, per head h of a stream set (same bytes as KVCache::store_stream):
//   sink      positions [pos, min(pos + n, n_sink)) as fp16
//   ring      the newest min(n, R) positions as fp16 in slot t % R (the older ones of the call
//             would be overwritten in the CPU's row-by-row order anyway), keys of deco* with their
//             query energies e[c] = sum over the head's query heads of q^2 (fp32, in order)
//   blocks    tokens_per_block 1: every row encoded from its fp32 values;
//             deco*/had*: every block completed by the call, compressed from fp16-rounded rows.
// Block sources: a completed block's positions >= pos come from this call's input (rounded to
// fp16, energies recomputed from q: the values the ring would hold), earlier ones from the ring,
// which still holds them (fewer than 256 <= R rows back). Compression therefore runs before the
// call's ring writes, which may overwrite those slots.
#pragma once
#include <cstdint>
#include <vector>

#include "kv_encode_device.h"

namespace decollama::gpu {

// One store call on one stream set; pointers are device memory in kernels, host memory on the host.
struct KVStoreArgs {
    uint8_t* base = nullptr;  // head 0's stream; head h at base + h * head_stride
    uint64_t head_stride = 0;
    uint64_t blocks = 0, sink = 0, ring = 0, energy = 0;  // KVStreamLayout offsets in a stream
    int64_t ring_rows = 0;
    bool energy_rows = false;
    int64_t head_dim = 0, n_head_kv = 0, n_sink = 0;
    const float* rows = nullptr;  // token i, head h at rows + i * row_stride + h * head_dim
    int64_t row_stride = 0;
    int64_t pos = 0, n = 0;
    const float* q = nullptr;  // n rows of n_head * head_dim (energy_rows only)
    int64_t n_head = 0;
    const float* codebooks = nullptr;  // cq*: per head [head_dim / c][256][c]
    const float* metrics = nullptr;    // cq*: per head [head_dim]; null = 1

    DL_HD uint8_t* stream(int64_t h) const { return base + uint64_t(h) * head_stride; }
    DL_HD int64_t n_gqa() const { return n_head / n_head_kv; }
    DL_HD int64_t sink_count() const {
        const int64_t end = pos + n < n_sink ? pos + n : n_sink;
        return end > pos ? end - pos : 0;
    }
    DL_HD int64_t ring_count() const { return ring_rows <= 0 ? 0 : n < ring_rows ? n : ring_rows; }
    // This call's input value (fp32) of position t >= pos.
    DL_HD float input(int64_t t, int64_t h, int64_t c) const {
        return rows[(t - pos) * row_stride + h * head_dim + c];
    }
    // e[c] of position t >= pos for KV head h: q0^2, then += qj^2 over its query heads in order.
    DL_HD float input_energy(int64_t t, int64_t h, int64_t c) const {
        const float* qh = q + (t - pos) * n_head * head_dim + h * n_gqa() * head_dim + c;
        float e = mul_rn(qh[0], qh[0]);
        for (int64_t j = 1; j < n_gqa(); ++j) e = e + mul_rn(qh[j * head_dim], qh[j * head_dim]);
        return e;
    }
};

// ---- sink and ring rows: one item per (row, head, channel) ---------------------------------------

DL_HD int64_t kv_store_fp16_items(const KVStoreArgs& a) {
    return (a.sink_count() + a.ring_count()) * a.n_head_kv * a.head_dim;
}

DL_HD void kv_store_fp16_item(const KVStoreArgs& a, int64_t idx) {
    const int64_t c = idx % a.head_dim, h = idx / a.head_dim % a.n_head_kv, r = idx / (a.head_dim * a.n_head_kv);
    uint8_t* s = a.stream(h);
    if (r < a.sink_count()) {
        const int64_t t = a.pos + r;
        reinterpret_cast<uint16_t*>(s + a.sink)[t * a.head_dim + c] = float_to_half(a.input(t, h, c));
        return;
    }
    const int64_t t = a.pos + a.n - a.ring_count() + (r - a.sink_count());
    const int64_t slot = t % a.ring_rows;
    reinterpret_cast<uint16_t*>(s + a.ring)[slot * a.head_dim + c] = float_to_half(a.input(t, h, c));
    if (a.energy_rows) reinterpret_cast<float*>(s + a.energy)[slot * a.head_dim + c] = a.input_energy(t, h, c);
}

// ---- tokens_per_block 1: one item per (token, head, unit) from the fp32 rows ----------------------

// The units a row is encoded in (values, 32-value blocks, CQ groups) and their bytes.
template <class Enc>
struct KVRowUnits;

template <>
struct KVRowUnits<KVEncodeF32> {
    DL_HD static int64_t per_row(int64_t head_dim) { return head_dim; }
    DL_HD static int64_t row_bytes(int64_t head_dim) { return head_dim * 4; }
    DL_HD static void encode(const KVStoreArgs& a, const float* x, int64_t, int64_t u, uint8_t* row) {
        KVEncodeF32::encode(x[u], row + u * 4);
    }
};

template <>
struct KVRowUnits<KVEncodeF16> {
    DL_HD static int64_t per_row(int64_t head_dim) { return head_dim; }
    DL_HD static int64_t row_bytes(int64_t head_dim) { return head_dim * 2; }
    DL_HD static void encode(const KVStoreArgs& a, const float* x, int64_t, int64_t u, uint8_t* row) {
        KVEncodeF16::encode(x[u], row + u * 2);
    }
};

template <>
struct KVRowUnits<KVEncodeQ8_0> {
    DL_HD static int64_t per_row(int64_t head_dim) { return head_dim / kQuantBlock; }
    DL_HD static int64_t row_bytes(int64_t head_dim) { return per_row(head_dim) * KVEncodeQ8_0::kBlockBytes; }
    DL_HD static void encode(const KVStoreArgs& a, const float* x, int64_t, int64_t u, uint8_t* row) {
        KVEncodeQ8_0::encode_block(x + u * kQuantBlock, row + u * KVEncodeQ8_0::kBlockBytes);
    }
};

template <>
struct KVRowUnits<KVEncodeQ4_0> {
    DL_HD static int64_t per_row(int64_t head_dim) { return head_dim / kQuantBlock; }
    DL_HD static int64_t row_bytes(int64_t head_dim) { return per_row(head_dim) * KVEncodeQ4_0::kBlockBytes; }
    DL_HD static void encode(const KVStoreArgs& a, const float* x, int64_t, int64_t u, uint8_t* row) {
        KVEncodeQ4_0::encode_block(x + u * kQuantBlock, row + u * KVEncodeQ4_0::kBlockBytes);
    }
};

template <int C>
struct KVRowUnits<KVEncodeCQ<C>> {
    DL_HD static int64_t per_row(int64_t head_dim) { return head_dim / C; }
    DL_HD static int64_t row_bytes(int64_t head_dim) { return head_dim / C; }
    DL_HD static void encode(const KVStoreArgs& a, const float* x, int64_t h, int64_t g, uint8_t* row) {
        const float* book = a.codebooks + (h * a.head_dim + g * C) * kCqCodebookSize;  // [G][256][C] per head
        const float* metric = a.metrics != nullptr ? a.metrics + h * a.head_dim + g * C : nullptr;
        row[g] = KVEncodeCQ<C>::encode_group(x + g * C, book, metric);
    }
};

template <class Enc>
DL_HD int64_t kv_store_unit_items(const KVStoreArgs& a) {
    return a.n * a.n_head_kv * KVRowUnits<Enc>::per_row(a.head_dim);
}

// Item order: unit fastest (neighbouring threads write neighbouring bytes); CQ puts the token
// fastest instead, so a warp's threads read the same centroids (one group of one head).
template <class Enc>
DL_HD void kv_store_unit_item(const KVStoreArgs& a, int64_t idx, bool token_fastest) {
    const int64_t U = KVRowUnits<Enc>::per_row(a.head_dim);
    int64_t i, h, u;
    if (token_fastest) {
        i = idx % a.n;
        u = idx / a.n % U;
        h = idx / (a.n * U);
    } else {
        u = idx % U;
        h = idx / U % a.n_head_kv;
        i = idx / (U * a.n_head_kv);
    }
    const float* x = a.rows + i * a.row_stride + h * a.head_dim;
    uint8_t* row = a.stream(h) + a.blocks + uint64_t(a.pos + i) * uint64_t(KVRowUnits<Enc>::row_bytes(a.head_dim));
    KVRowUnits<Enc>::encode(a, x, h, u, row);
}

// ---- deco* / had*: one task per (completed block, head), in four phases --------------------------

// Blocks [first, end) complete during the call: position 256 b + 255 lies in [pos, pos + n).
DL_HD int64_t kv_store_first_block(const KVStoreArgs& a) { return a.pos / kDecoBlockTokens; }
DL_HD int64_t kv_store_end_block(const KVStoreArgs& a) { return (a.pos + a.n) / kDecoBlockTokens; }

template <class Enc>
struct KVStoreDecoBlock {
    static constexpr int bits = Enc::kBits;
    const KVStoreArgs& a;
    int64_t b, h;

    DL_HD int64_t t0() const { return b * kDecoBlockTokens; }
    DL_HD int64_t skip() const { return Enc::skip_rows(t0()); }
    DL_HD uint8_t* block() const { return a.stream(h) + a.blocks + uint64_t(b * deco_block_size(a.head_dim, bits)); }
    // Position t's fp16-rounded value: the ring's row (earlier calls) or this call's input.
    DL_HD float value(int64_t t, int64_t c) const {
        if (t >= a.pos) return half_to_float(float_to_half(a.input(t, h, c)));
        const uint16_t* ring = reinterpret_cast<const uint16_t*>(a.stream(h) + a.ring);
        return half_to_float(ring[(t % a.ring_rows) * a.head_dim + c]);
    }
    DL_HD float energy(int64_t t, int64_t c) const {
        if (t >= a.pos) return a.input_energy(t, h, c);
        const float* e = reinterpret_cast<const float*>(a.stream(h) + a.energy);
        return e[(t % a.ring_rows) * a.head_dim + c];
    }

    struct ChannelValues {  // row r of the block, channel c
        const KVStoreDecoBlock* task;
        int64_t c;
        DL_HD float operator()(int64_t r) const { return task->value(task->t0() + r, c); }
    };
    struct ChannelEnergies {
        const KVStoreDecoBlock* task;
        int64_t c;
        DL_HD float operator()(int64_t r) const { return task->energy(task->t0() + r, c); }
    };
    struct RowValues {  // channel c of row r
        const KVStoreDecoBlock* task;
        int64_t r;
        DL_HD float operator()(int64_t c) const { return task->value(task->t0() + r, c); }
    };

    // Phase 1, per channel: mu[c] (fp16 bits) and, with query energies, u[c].
    DL_HD void fit_channel(int64_t c, uint16_t* mu, double* u) const {
        mu[c] = Enc::channel_mean(ChannelValues{this, c}, skip());
        if (a.energy_rows) u[c] = Enc::channel_u(ChannelEnergies{this, c}, skip());
    }
    // Phase 2, once: m = mean of u (0 without energies: w = 1).
    DL_HD double mean_u(const double* u) const { return a.energy_rows ? Enc::mean_u(u, a.head_dim) : 0.0; }
    // Phase 3, per channel: w[c], and the block header's mu[c], w[c].
    DL_HD void weight_channel(int64_t c, const double* u, double m, const uint16_t* mu, uint16_t* w) const {
        w[c] = a.energy_rows ? Enc::channel_weight(u[c], m) : uint16_t(0x3C00);
        store_u16(block() + 2 * c, mu[c]);
        store_u16(block() + 2 * (a.head_dim + c), w[c]);
    }
    // Phase 4, per row: the encoded row, or zero bytes for the sink row.
    DL_HD void encode_row(int64_t r, const uint16_t* mu, const uint16_t* w) const {
        const int64_t rb = deco_row_size(a.head_dim, bits);
        uint8_t* row = block() + deco_header_size(a.head_dim) + r * rb;
        if (r < skip()) {
            for (int64_t i = 0; i < rb; ++i) row[i] = 0;
            return;
        }
        Enc::encode_row(RowValues{this, r}, mu, w, a.head_dim, row);
    }
};

// ---- dispatch by format --------------------------------------------------------------------------

template <class Enc>
struct KVEncodeTag {
    using type = Enc;
};

// Calls fn(KVEncodeTag<Enc>{}) with the encoder of kind; false for Unknown.
template <class Fn>
bool kv_encode_visit(KVEncodeKind kind, Fn&& fn) {
    switch (kind) {
        case KVEncodeKind::F32: fn(KVEncodeTag<KVEncodeF32>{}); return true;
        case KVEncodeKind::F16: fn(KVEncodeTag<KVEncodeF16>{}); return true;
        case KVEncodeKind::Q8_0: fn(KVEncodeTag<KVEncodeQ8_0>{}); return true;
        case KVEncodeKind::Q4_0: fn(KVEncodeTag<KVEncodeQ4_0>{}); return true;
        case KVEncodeKind::Deco4: fn(KVEncodeTag<KVEncodeDeco<4, true>>{}); return true;
        case KVEncodeKind::Deco2: fn(KVEncodeTag<KVEncodeDeco<2, true>>{}); return true;
        case KVEncodeKind::Had4: fn(KVEncodeTag<KVEncodeDeco<4, false>>{}); return true;
        case KVEncodeKind::Had2: fn(KVEncodeTag<KVEncodeDeco<2, false>>{}); return true;
        case KVEncodeKind::Cq4: fn(KVEncodeTag<KVEncodeCQ<2>>{}); return true;
        case KVEncodeKind::Cq2: fn(KVEncodeTag<KVEncodeCQ<4>>{}); return true;
        case KVEncodeKind::Cq1: fn(KVEncodeTag<KVEncodeCQ<8>>{}); return true;
        default: return false;
    }
}

template <class Enc>
struct KVIsCQ {
    static constexpr bool value = false;
};
template <int C>
struct KVIsCQ<KVEncodeCQ<C>> {
    static constexpr bool value = true;
};

// The host twin of gpu_kv_store: the same items, in loops, in the kernels' launch order.
template <class Enc>
void kv_store_on_host(const KVStoreArgs& a) {
    if constexpr (Enc::kIsBlockFormat) {
        std::vector<uint16_t> mu(size_t(a.head_dim)), w(size_t(a.head_dim));
        std::vector<double> u(size_t(a.head_dim));
        for (int64_t b = kv_store_first_block(a); b < kv_store_end_block(a); ++b)
            for (int64_t h = 0; h < a.n_head_kv; ++h) {
                const KVStoreDecoBlock<Enc> task{a, b, h};
                for (int64_t c = 0; c < a.head_dim; ++c) task.fit_channel(c, mu.data(), u.data());
                const double m = task.mean_u(u.data());
                for (int64_t c = 0; c < a.head_dim; ++c) task.weight_channel(c, u.data(), m, mu.data(), w.data());
                for (int64_t r = 0; r < kDecoBlockTokens; ++r) task.encode_row(r, mu.data(), w.data());
            }
    } else {
        const int64_t items = kv_store_unit_items<Enc>(a);
        for (int64_t i = 0; i < items; ++i) kv_store_unit_item<Enc>(a, i, KVIsCQ<Enc>::value);
    }
    const int64_t items = kv_store_fp16_items(a);
    for (int64_t i = 0; i < items; ++i) kv_store_fp16_item(a, i);
}

}  // namespace decollama::gpu
