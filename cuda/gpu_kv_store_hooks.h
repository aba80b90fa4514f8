// Plain C++ side of the quantize-on-write store (cuda/gpu_kv_store.cu) for the bindings and tests:
// the checked KVStoreArgs of one call (shared by gpu_kv_store and its host twin kv_store_on_host),
// and the GPU test hook, defined in the .cu (CUDA builds only).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "kv/kv_cache.h"
#include "kv/kv_format.h"
#include "kv_store_device.h"

namespace decollama::gpu {

// The arguments of one store call on a stream set (base: head 0's stream, heads head_stride bytes
// apart, laid out as `layout`); InvalidArgument when the format has no encoder here or the call
// cannot be stored (see gpu_kv_store in gpu_kv.h).
inline KVStoreArgs kv_store_args(const KVFormat& format, const KVStreamLayout& layout, uint8_t* base,
                                 size_t head_stride, int64_t head_dim, int64_t n_head_kv, const float* rows,
                                 int64_t row_stride, int64_t pos, int64_t n, const float* q, int64_t n_head,
                                 const float* codebooks, const float* metrics) {
    const std::string what = std::string("gpu_kv_store (") + format.name + "): ";
    if (kv_encode_kind(format.name) == KVEncodeKind::Unknown)
        throw InvalidArgument(what + "no GPU encoder for this KV cache format");
    if (head_dim <= 0 || head_dim % format.dim_block != 0 || n_head_kv <= 0)
        throw InvalidArgument(what + "head_dim must be a positive multiple of " + std::to_string(format.dim_block));
    if (pos < 0 || n < 0 || (n > 0 && (rows == nullptr || base == nullptr)) || row_stride < n_head_kv * head_dim)
        throw InvalidArgument(what + "bad positions, rows or row stride");
    if (layout.energy_rows && n > 0 && (q == nullptr || n_head <= 0 || n_head % n_head_kv != 0))
        throw InvalidArgument(what + "these keys need the queries (n_head a multiple of n_head_kv)");
    if (format.codebook_c > 0 && codebooks == nullptr) throw InvalidArgument(what + "needs the codebooks");
    const int64_t S = format.tokens_per_block;
    if (S > 1 && (pos + n) / S > pos / S && layout.ring_rows < S)
        throw InvalidArgument(what + "the ring cannot hold a block");
    KVStoreArgs a;
    a.base = base;
    a.head_stride = head_stride;
    a.blocks = layout.blocks;
    a.sink = layout.sink;
    a.ring = layout.ring;
    a.energy = layout.energy;
    a.ring_rows = layout.ring_rows;
    a.energy_rows = layout.energy_rows;
    a.head_dim = head_dim;
    a.n_head_kv = n_head_kv;
    a.n_sink = format.n_sink;
    a.rows = rows;
    a.row_stride = row_stride;
    a.pos = pos;
    a.n = n;
    a.q = layout.energy_rows ? q : nullptr;
    a.n_head = n_head;
    a.codebooks = format.codebook_c > 0 ? codebooks : nullptr;
    a.metrics = format.codebook_c > 0 ? metrics : nullptr;
    return a;
}

// Host twin of gpu_kv_store on host memory: the kernels' work items in their launch order.
inline void kv_store_host(const KVFormat& format, const KVStoreArgs& a) {
    kv_encode_visit(kv_encode_kind(format.name), [&](auto tag) { kv_store_on_host<typename decltype(tag)::type>(a); });
}

// What gpu_kv_store_test stores: n rows of K and V (KV heads side by side, the projections'
// layout) and, for keys that want them, the n query rows (n_head * head_dim_k each).
struct KVStoreTestInput {
    const float* k = nullptr;
    const float* v = nullptr;
    const float* q = nullptr;
    int64_t n_head = 0;
    std::vector<int64_t> calls;  // rows per store call, in order, from position 0
    const float* k_codebooks = nullptr;  // cq*: per KV head [head_dim / c][256][c]; metrics [head_dim]
    const float* k_metrics = nullptr;
    const float* v_codebooks = nullptr;
    const float* v_metrics = nullptr;
};

// GPU test hook (CUDA builds): a zeroed device copy of `layer` of `cache`'s layout, the input
// stored with one gpu_kv_store call per entry of calls (K and V streams), its bytes downloaded
// into out (cache.layer_bytes(layer) bytes). CudaError (a std::runtime_error) without a GPU.
void gpu_kv_store_test(const KVCache& cache, int64_t layer, const KVStoreTestInput& in, uint8_t* out);

}  // namespace decollama::gpu
