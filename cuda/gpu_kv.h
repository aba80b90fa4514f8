// The KV cache of GPU layers (nvcc-only header): every stream keeps exactly the bytes and
// offsets the CPU KVCache gives it (cpp/kv/kv_cache.h, cpp/kv/README.md): sink rows, the fp16
// ring (with query energies for deco keys), the format's blocks. So a GPU layer copied back to
// the host reads with the CPU code, and tests compare GPU-written bytes with CPU-written ones.
//   gpu_kv_store    quantize-on-write: rows in, stream bytes out (cuda/gpu_kv_store.cu)
//   GpuAttention    split-K (flash-decoding) attention reading the blocks directly, decode and
//                   prefill (cuda/gpu_attention.cu)
// Format kernels live behind one device traits struct per format (cuda/kv_device_formats.h).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "gpu_check.h"
#include "gpu_tensors.h"
#include "kv/kv_cache.h"
#include "kv/kv_format.h"

namespace decollama::gpu {

// Stores positions [pos, pos + n) of every head of a stream set, with the same bytes as
// KVCache::store_stream: token i, head h at rows + i * row_stride + h * head_dim (device fp32).
// Sink rows fp16; formats with tokens_per_block 1 encode every row into the blocks and keep the
// newest ring_rows in the ring; block formats put rows (and, keys of deco*, the query energy
// e[c] = sum over the head's query heads of q^2, from q: n rows of n_head * head_dim, scaled,
// after RoPE) into the ring and compress each block that fills. pos = positions stored before.
void gpu_kv_store(const GpuStreamSet& set, const float* rows, int64_t row_stride, int64_t pos, int64_t n,
                  const float* q, int64_t n_head, cudaStream_t stream);

// Causal attention over GPU streams, the same function as Attention::run (cpp/model/attention.h):
//   out[i][h] = sum_j softmax_j(q[i][h] · k_j) v_j, j in [lo, pos0 + i], lo = 0 or
//   pos0 + i - attn_window + 1 when attn_window > 0,
// q rows n_head * head_dim_k (softmax scale folded in), out rows n_head * head_dim_v, device.
// Keys and values are read where the cache keeps them with n_stored = pos0 + n_tokens:
// positions < n_sink from the sink, [n_sink, first_ring) from the blocks, the rest from the ring
// (kv_first_ring with cache_window). Scratch (split-K partial states) is sized at construction.
class GpuAttention {
public:
    GpuAttention(int64_t n_batch, int64_t n_head, int64_t n_ctx, int64_t head_dim_k, int64_t head_dim_v);
    ~GpuAttention();
    GpuAttention(const GpuAttention&) = delete;
    GpuAttention& operator=(const GpuAttention&) = delete;

    void run(const GpuStreamSet& k, const GpuStreamSet& v, int64_t cache_window, const float* q, int64_t n_tokens,
             int64_t pos0, int64_t n_head, int64_t attn_window, float* out, cudaStream_t stream);

private:
    struct Scratch;
    std::unique_ptr<Scratch> scratch_;
};

}  // namespace decollama::gpu
