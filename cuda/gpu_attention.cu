// Split-K (flash-decoding) attention over the GPU KV cache, reading every format's compressed
// blocks directly (no full-precision copy of the cache is ever written).
//
// Kernel 1, split_attention<K family, V family>: grid (chunk, KV head, query token); one CUDA
// block serves all query heads of its KV head (GQA) on one chunk of the token's key range,
// tile by tile (kAttnTile = 256 positions, one deco block):
//   prepare   deco keys: q'' = H(q / w) * 0.125 per query head in shared memory (threads over
//             elements, one __syncthreads per Hadamard stage) and the bias q . mu (warp per head)
//   scores    a warp per key: lanes over head_dim read the row once and dot it with every query
//             head; shuffle sums; s[h][j] in shared memory
//   softmax   a warp per head: tile max, rescale factor of the running state, p = exp(s - max),
//             the tile's sum (and, deco values, the sum of p over block rows)
//   values    threads over head_dim_v (<= 2 elements each), every head in registers: rescale,
//             then p * row for each key; deco values accumulate p * a^ in the block's Hadamard
//             domain and are finalized once per tile (shared-memory transform, / w, + p_sum mu)
// A block whose chunk holds no key of its token (causal prefill, short ranges) writes an empty
// state. With one chunk per token the kernel normalises into out; otherwise it writes (max,
// sum, unnormalised out) per (token, head, chunk) and kernel 2, merge_chunks, combines them
// (log-sum-exp). Prefill runs the same kernel with one block per query token: a chunk is
// re-read by every query token (first version; the reads mostly hit L2).
// The math per row / element is in DL_HD functions (kv_device_formats.h,
// attention_split_device.h) that the CPU-only tests run in a host emulation of this structure.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention_split_device.h"
#include "cuda_devices.h"
#include "gpu_attention_hooks.h"
#include "gpu_check.h"
#include "gpu_kv.h"
#include "kv_device_formats.h"

namespace decollama::gpu {

namespace {

constexpr int kMaxValueSlots = 2;  // head_dim_v elements per thread
constexpr int kMaxThreads = 256;
constexpr int kMaxHeadDim = kMaxValueSlots * kMaxThreads;
constexpr int kDefaultSharedBytes = 48 * 1024;

struct SplitArgs {
    const float* q;
    float* out;
    float* partial;  // per (token, head, chunk): head_dim_v unnormalised outputs
    float* ml;       // per (token, head, chunk): max, sum
    SplitPlan plan;
    SplitStream k, v;
    int n_head, n_gqa;
};

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) x += __shfl_xor_sync(0xFFFFFFFFu, x, off);
    return x;
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) x = fmaxf(x, __shfl_xor_sync(0xFFFFFFFFu, x, off));
    return x;
}

// The Hadamard transform of n_rows rows of D floats in shared memory, all threads.
__device__ void block_wht64(float* y, int n_rows, int D) {
    const int pairs = D / 2;
    for (int h = 1; h < DecoKv::kGroup; h *= 2) {
        for (int x = threadIdx.x; x < n_rows * pairs; x += blockDim.x) wht64_butterfly(y + (x / pairs) * D, h, x % pairs);
        __syncthreads();
    }
}

size_t split_shared_bytes(int n_gqa, int hd_k, int hd_v) {
    return sizeof(float) * size_t(n_gqa) * (size_t(hd_k) + size_t(std::max(hd_k, hd_v)) + kAttnTile + 5);
}

template <class KF, class VF>
__global__ void __launch_bounds__(kMaxThreads) split_attention(SplitArgs a) {
    extern __shared__ float smem[];
    const int hd_k = a.k.head_dim, hd_v = a.v.head_dim, n_gqa = a.n_gqa;
    const int B = blockDim.x, tid = threadIdx.x, lane = tid % 32, warp = tid / 32, n_warps = B / 32;
    const int64_t c = blockIdx.x, g = blockIdx.y, i = blockIdx.z;
    const int64_t n_chunks = a.plan.n_chunks;
    float* sq = smem;                                // fp32 queries [n_gqa][hd_k]
    float* sbuf = sq + n_gqa * hd_k;                 // deco: prepared queries / value transform
    float* sp = sbuf + n_gqa * max(hd_k, hd_v);      // scores, then probabilities [n_gqa][tile]
    float* s_max = sp + n_gqa * kAttnTile;           // running state per head
    float* s_sum = s_max + n_gqa;
    float* s_scale = s_sum + n_gqa;                  // this tile's rescale of the state
    float* s_psum = s_scale + n_gqa;                 // deco values: sum of p over block rows
    float* s_bias = s_psum + n_gqa;                  // deco keys: q . mu

    int64_t tile_begin, tile_end;
    chunk_tiles(a.plan, i, c, &tile_begin, &tile_end);
    const int64_t state0 = (i * a.n_head + g * n_gqa) * n_chunks + c;  // head h: + h * n_chunks
    if (tile_begin >= tile_end) {  // no key of this token in the chunk
        if (tid < n_gqa) {
            a.ml[2 * (state0 + tid * n_chunks)] = -INFINITY;
            a.ml[2 * (state0 + tid * n_chunks) + 1] = 0.0f;
        }
        return;
    }
    int64_t lo, hi;
    query_keys(a.plan, i, &lo, &hi);
    const HeadStream ks = head_stream(a.k, g), vs = head_stream(a.v, g);
    const float* q = a.q + (i * a.n_head + g * n_gqa) * hd_k;
    for (int x = tid; x < n_gqa * hd_k; x += B) sq[x] = q[x];
    if (tid < n_gqa) {
        s_max[tid] = -INFINITY;
        s_sum[tid] = 0.0f;
    }
    float acc[kMaxValueSlots][kMaxGqa], acc_basis[kMaxValueSlots][kMaxGqa];
#pragma unroll
    for (int k = 0; k < kMaxValueSlots; ++k)
#pragma unroll
        for (int h = 0; h < kMaxGqa; ++h) acc[k][h] = acc_basis[k][h] = 0.0f;
    __syncthreads();

    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
        const int64_t t0 = max(lo, tile * kAttnTile), t1 = min(hi + 1, (tile + 1) * kAttnTile);
        const int n = int(t1 - t0);
        if constexpr (KF::kBlockBasis) {
            int64_t b0, b1;
            block_part(ks, t0, t1, &b0, &b1);
            if (b0 < b1) {  // the query in this block's basis
                const uint8_t* block = KF::block(ks.blocks, ks.geometry, b0);
                for (int x = tid; x < n_gqa * hd_k; x += B) sbuf[x] = KF::prepare_scale(block, hd_k, x % hd_k, sq[x]);
                for (int h = warp; h < n_gqa; h += n_warps) {
                    float s = 0.0f;
                    for (int e = lane; e < hd_k; e += 32) s += sq[h * hd_k + e] * KF::mean(block, e);
                    s = warp_sum(s);
                    if (lane == 0) s_bias[h] = s;
                }
                __syncthreads();
                block_wht64(sbuf, n_gqa, hd_k);
            }
        }
        // Scores: a warp per key, each row read once for every query head.
        for (int j = warp; j < n; j += n_warps) {
            const KeyRow r = locate<KF>(ks, t0 + j);
            float part[kMaxGqa];
            score_lane<KF>(r, ks.geometry, sq, sbuf, n_gqa, lane, part);
            const bool basis = KF::kBlockBasis && !r.fp16;
#pragma unroll
            for (int h = 0; h < kMaxGqa; ++h)
                if (h < n_gqa) {
                    const float s = warp_sum(part[h]);
                    if (lane == 0) sp[h * kAttnTile + j] = basis ? s + s_bias[h] : s;
                }
        }
        __syncthreads();
        // Softmax: a warp per head folds the tile into the running (max, sum).
        int64_t vb0 = 0, vb1 = 0;
        if constexpr (VF::kBlockBasis) block_part(vs, t0, t1, &vb0, &vb1);
        for (int h = warp; h < n_gqa; h += n_warps) {
            float* s = sp + h * kAttnTile;
            float m = -INFINITY;
            for (int j = lane; j < n; j += 32) m = fmaxf(m, s[j]);
            m = warp_max(m);
            const float old_max = s_max[h], new_max = fmaxf(old_max, m);
            float sum = 0.0f, psum = 0.0f;
            for (int j = lane; j < n; j += 32) {
                const float p = expf(s[j] - new_max);
                s[j] = p;
                sum += p;
                if (t0 + j >= vb0 && t0 + j < vb1) psum += p;
            }
            sum = warp_sum(sum);
            psum = warp_sum(psum);
            if (lane == 0) {
                const float scale = softmax_rescale(old_max, new_max);
                s_scale[h] = scale;
                s_sum[h] = s_sum[h] * scale + sum;
                s_max[h] = new_max;
                s_psum[h] = psum;
            }
        }
        __syncthreads();
        // Values: threads over head_dim_v, every query head in registers.
#pragma unroll
        for (int k = 0; k < kMaxValueSlots; ++k)
#pragma unroll
            for (int h = 0; h < kMaxGqa; ++h)
                if (h < n_gqa) acc[k][h] *= s_scale[h];
        for (int j = 0; j < n; ++j) {
            const KeyRow r = locate<VF>(vs, t0 + j);
            const bool basis = VF::kBlockBasis && !r.fp16;
#pragma unroll
            for (int k = 0; k < kMaxValueSlots; ++k) {
                const int e = tid + k * B;
                if (e >= hd_v) continue;
                const float v = row_value<VF>(r, vs.geometry, e);
#pragma unroll
                for (int h = 0; h < kMaxGqa; ++h)
                    if (h < n_gqa) {
                        const float p = sp[h * kAttnTile + j];
                        if (basis)
                            acc_basis[k][h] += p * v;
                        else
                            acc[k][h] += p * v;
                    }
            }
        }
        if constexpr (VF::kBlockBasis) {
            if (vb0 < vb1) {  // back from the block's basis, once per block
#pragma unroll
                for (int k = 0; k < kMaxValueSlots; ++k)
#pragma unroll
                    for (int h = 0; h < kMaxGqa; ++h)
                        if (h < n_gqa && tid + k * B < hd_v) {
                            sbuf[h * hd_v + tid + k * B] = acc_basis[k][h];
                            acc_basis[k][h] = 0.0f;
                        }
                __syncthreads();
                block_wht64(sbuf, n_gqa, hd_v);
                const uint8_t* block = VF::block(vs.blocks, vs.geometry, vb0);
#pragma unroll
                for (int k = 0; k < kMaxValueSlots; ++k)
#pragma unroll
                    for (int h = 0; h < kMaxGqa; ++h) {
                        const int e = tid + k * B;
                        if (h < n_gqa && e < hd_v)
                            acc[k][h] += VF::finalize(block, hd_v, e, sbuf[h * hd_v + e], s_psum[h]);
                    }
            }
        }
        __syncthreads();  // sp, sbuf and the state are rewritten by the next tile
    }

#pragma unroll
    for (int k = 0; k < kMaxValueSlots; ++k)
#pragma unroll
        for (int h = 0; h < kMaxGqa; ++h) {
            const int e = tid + k * B;
            if (h >= n_gqa || e >= hd_v) continue;
            if (n_chunks == 1)
                a.out[(i * a.n_head + g * n_gqa + h) * hd_v + e] = acc[k][h] / s_sum[h];
            else
                a.partial[(state0 + h * n_chunks) * hd_v + e] = acc[k][h];
        }
    if (n_chunks > 1 && tid < n_gqa) {
        a.ml[2 * (state0 + tid * n_chunks)] = s_max[tid];
        a.ml[2 * (state0 + tid * n_chunks) + 1] = s_sum[tid];
    }
}

// One block per (token, head) row: the log-sum-exp combine of its chunks.
__global__ void merge_chunks(const float* partial, const float* ml, float* out, int64_t n_chunks, int hd_v) {
    const int64_t row = blockIdx.x;
    for (int e = threadIdx.x; e < hd_v; e += blockDim.x)
        out[row * hd_v + e] = merge_element(ml + 2 * row * n_chunks, partial + row * n_chunks * hd_v, n_chunks, hd_v, e);
}

// The checks and launches of one run; partial / ml hold rows_per_head partial states per head.
// Returns the chunks per query token it used.
int64_t launch_split_attention(const GpuStreamSet& k, const GpuStreamSet& v, int64_t cache_window, const float* q,
                            int64_t n_tokens, int64_t pos0, int64_t n_head, int64_t attn_window, float* out,
                            float* partial, float* ml, int64_t rows_per_head, int64_t max_chunks, int smem_limit,
                            cudaStream_t stream) {
    if (k.format == nullptr || v.format == nullptr) throw InvalidArgument("GPU attention: stream set without a format");
    const GpuKvFormatRow& krow = gpu_kv_format(k.format->name);
    const GpuKvFormatRow& vrow = gpu_kv_format(v.format->name);
    if (n_tokens <= 0) return 0;
    if (k.n_head_kv <= 0 || k.n_head_kv != v.n_head_kv || n_head % k.n_head_kv != 0)
        throw InvalidArgument("GPU attention: n_head must be a multiple of the KV heads of both stream sets");
    const int64_t n_gqa = n_head / k.n_head_kv;
    if (n_gqa > kMaxGqa)
        throw InvalidArgument("GPU attention: at most " + std::to_string(kMaxGqa) + " query heads per KV head, got " +
                              std::to_string(n_gqa));
    for (int64_t hd : {k.head_dim, v.head_dim})
        if (hd <= 0 || hd % 32 != 0 || hd > kMaxHeadDim)
            throw InvalidArgument("GPU attention: head_dim must be a multiple of 32 up to " +
                                  std::to_string(kMaxHeadDim) + ", got " + std::to_string(hd));
    if ((krow.family == GpuKvFamily::Cq && k.codebooks == nullptr) ||
        (vrow.family == GpuKvFamily::Cq && v.codebooks == nullptr))
        throw InvalidArgument("GPU attention: cq streams need their device codebooks");
    if (pos0 < 0 || n_tokens > 65535) throw InvalidArgument("GPU attention: pos0 < 0 or more than 65535 query tokens");

    const int64_t n_stored = pos0 + n_tokens;
    SplitArgs a{};
    a.q = q;
    a.out = out;
    a.partial = partial;
    a.ml = ml;
    a.plan = make_split_plan(pos0, n_tokens, attn_window,
                             std::min(max_chunks, split_max_chunks(rows_per_head, n_tokens)));
    a.k = split_stream(*k.format, krow, k.base, k.head_stride, k.layout, k.head_dim, k.codebooks, n_stored,
                       cache_window);
    a.v = split_stream(*v.format, vrow, v.base, v.head_stride, v.layout, v.head_dim, v.codebooks, n_stored,
                       cache_window);
    a.n_head = int(n_head);
    a.n_gqa = int(n_gqa);

    const int threads = v.head_dim <= 128 ? 128 : kMaxThreads;
    const size_t smem = split_shared_bytes(int(n_gqa), int(k.head_dim), int(v.head_dim));
    if (smem > size_t(smem_limit))
        throw InvalidArgument("GPU attention: " + std::to_string(smem) + " bytes of shared memory needed, the device " +
                              "allows " + std::to_string(smem_limit));
    const dim3 grid(unsigned(a.plan.n_chunks), unsigned(k.n_head_kv), unsigned(n_tokens));
    with_kv_family(krow.family, [&](auto kf) {
        with_kv_family(vrow.family, [&](auto vf) {
            const auto kernel = split_attention<decltype(kf), decltype(vf)>;
            if (smem > size_t(kDefaultSharedBytes))
                DL_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
            kernel<<<grid, threads, smem, stream>>>(a);
            DL_CUDA_CHECK_LAUNCH();
        });
    });
    if (a.plan.n_chunks > 1) {
        merge_chunks<<<unsigned(n_tokens * n_head), unsigned(std::min<int64_t>(v.head_dim, kMaxThreads)), 0, stream>>>(
            partial, ml, out, a.plan.n_chunks, int(v.head_dim));
        DL_CUDA_CHECK_LAUNCH();
    }
    return a.plan.n_chunks;
}

int shared_memory_limit() {
    int device = 0, optin = 0;
    DL_CUDA_CHECK(cudaGetDevice(&device));
    DL_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    return std::max(optin, kDefaultSharedBytes);
}

}  // namespace

struct GpuAttention::Scratch {
    int64_t n_batch, n_head, n_ctx, hd_k, hd_v, rows_per_head;
    int smem_limit;
    DeviceBuffer<float> partial, ml;
};

GpuAttention::GpuAttention(int64_t n_batch, int64_t n_head, int64_t n_ctx, int64_t head_dim_k, int64_t head_dim_v) {
    if (n_batch <= 0 || n_head <= 0 || n_ctx <= 0 || head_dim_k <= 0 || head_dim_v <= 0)
        throw InvalidArgument("GpuAttention: n_batch, n_head, n_ctx and head dims must be > 0");
    auto s = std::make_unique<Scratch>();
    s->n_batch = n_batch;
    s->n_head = n_head;
    s->n_ctx = n_ctx;
    s->hd_k = head_dim_k;
    s->hd_v = head_dim_v;
    s->rows_per_head = split_rows_per_head(n_batch, n_ctx);
    s->smem_limit = shared_memory_limit();
    s->partial.resize(size_t(n_head * s->rows_per_head * head_dim_v));
    s->ml.resize(size_t(n_head * s->rows_per_head * 2));
    scratch_ = std::move(s);
}

GpuAttention::~GpuAttention() = default;

void GpuAttention::run(const GpuStreamSet& k, const GpuStreamSet& v, int64_t cache_window, const float* q,
                       int64_t n_tokens, int64_t pos0, int64_t n_head, int64_t attn_window, float* out,
                       cudaStream_t stream) {
    const Scratch& s = *scratch_;
    if (n_tokens > s.n_batch || n_head > s.n_head || pos0 + n_tokens > s.n_ctx || k.head_dim != s.hd_k ||
        v.head_dim != s.hd_v)
        throw InvalidArgument("GpuAttention::run: tokens, heads, positions or head dims beyond what it was sized for");
    launch_split_attention(k, v, cache_window, q, n_tokens, pos0, n_head, attn_window, out, scratch_->partial.data(),
                           scratch_->ml.data(), s.rows_per_head, kMaxChunks, s.smem_limit, stream);
}

// ---- test and benchmark hooks ------------------------------------------------------------------

namespace {

void require_gpu() {
    const std::string why = cuda::unavailable_reason();
    if (!why.empty()) throw std::runtime_error("no usable GPU for the CUDA attention: " + why);
}

// One layer of a CPU cache on the device, with the cq codebooks of its streams.
struct DeviceLayer {
    DeviceBuffer<uint8_t> bytes;
    DeviceBuffer<float> k_books, v_books;
    GpuStreamSet k, v;

    DeviceLayer(const KVCache& cache, int64_t layer) {
        const size_t n = cache.layer_bytes(layer);
        bytes.resize(n);
        bytes.upload(cache.data() + cache.layer_offset(layer), n);
        k = stream_set(cache, layer, KVKind::K, k_books);
        v = stream_set(cache, layer, KVKind::V, v_books);
    }

    GpuStreamSet stream_set(const KVCache& cache, int64_t layer, KVKind kind, DeviceBuffer<float>& books) {
        GpuStreamSet s;
        s.format = &cache.format(layer, kind);
        s.base = bytes.data() + cache.kind_offset_in_layer(layer, kind);
        s.head_stride = cache.head_stride(layer, kind);
        s.layout = cache.stream_layout(layer, kind);
        s.head_dim = kind == KVKind::K ? cache.head_dim_k() : cache.head_dim_v();
        s.n_head_kv = cache.n_head_kv();
        if (s.format->codebook_c > 0) {
            const size_t per_head = size_t(s.head_dim) * 256;
            books.resize(per_head * size_t(s.n_head_kv));
            for (int64_t h = 0; h < s.n_head_kv; ++h)
                books.upload(cache.stream_consts(layer, kind, h).codebook, per_head, size_t(h) * per_head);
            s.codebooks = books.data();
        }
        return s;
    }
};

}  // namespace

GpuAttentionResult gpu_attention_test(const KVCache& cache, int64_t layer, const float* q, int64_t n_tokens,
                                      int64_t pos0, int64_t n_head, int64_t attn_window, int64_t max_chunks) {
    require_gpu();
    const int64_t hd_k = cache.head_dim_k(), hd_v = cache.head_dim_v(), n_stored = pos0 + n_tokens;
    DeviceLayer dev(cache, layer);
    DeviceBuffer<float> dq(size_t(n_tokens * n_head * hd_k)), dout(size_t(n_tokens * n_head * hd_v));
    dq.upload(q, dq.size());
    GpuAttentionResult r;
    if (max_chunks <= 0) {
        GpuAttention attention(n_tokens, n_head, n_stored, hd_k, hd_v);
        attention.run(dev.k, dev.v, cache.window(), dq.data(), n_tokens, pos0, n_head, attn_window, dout.data(), nullptr);
        r.n_chunks = make_split_plan(pos0, n_tokens, attn_window,
                                     split_max_chunks(split_rows_per_head(n_tokens, n_stored), n_tokens))
                         .n_chunks;
    } else {
        const int64_t rows_per_head = n_tokens * max_chunks;
        DeviceBuffer<float> partial(size_t(n_head * rows_per_head * hd_v)), ml(size_t(n_head * rows_per_head * 2));
        r.n_chunks = launch_split_attention(dev.k, dev.v, cache.window(), dq.data(), n_tokens, pos0, n_head,
                                            attn_window, dout.data(), partial.data(), ml.data(), rows_per_head,
                                            max_chunks, shared_memory_limit(), nullptr);
        DL_CUDA_CHECK(cudaDeviceSynchronize());
    }
    DL_CUDA_CHECK(cudaDeviceSynchronize());
    r.out.resize(dout.size());
    dout.download(r.out.data(), r.out.size());
    return r;
}

GpuAttentionBenchResult gpu_attention_bench(const KVCache& cache, const float* q, int64_t n_head, int iters) {
    require_gpu();
    const int64_t depth = cache.n_stored(), hd_k = cache.head_dim_k(), hd_v = cache.head_dim_v();
    if (depth <= 0 || iters <= 0) throw InvalidArgument("gpu_attention_bench: an empty cache or no iterations");
    DeviceLayer dev(cache, 0);
    DeviceBuffer<float> dq(size_t(n_head * hd_k)), dout(size_t(n_head * hd_v));
    dq.upload(q, dq.size());
    GpuAttention attention(1, n_head, cache.n_ctx(), hd_k, hd_v);
    cudaStream_t stream;
    DL_CUDA_CHECK(cudaStreamCreate(&stream));
    cudaEvent_t start, stop;
    DL_CUDA_CHECK(cudaEventCreate(&start));
    DL_CUDA_CHECK(cudaEventCreate(&stop));
    std::vector<float> times;
    try {
        for (int w = 0; w < 3; ++w)
            attention.run(dev.k, dev.v, cache.window(), dq.data(), 1, depth - 1, n_head, 0, dout.data(), stream);
        for (int it = 0; it < iters; ++it) {
            DL_CUDA_CHECK(cudaEventRecord(start, stream));
            attention.run(dev.k, dev.v, cache.window(), dq.data(), 1, depth - 1, n_head, 0, dout.data(), stream);
            DL_CUDA_CHECK(cudaEventRecord(stop, stream));
            DL_CUDA_CHECK(cudaEventSynchronize(stop));
            float ms = 0;
            DL_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
            times.push_back(ms * 1000.0f);
        }
    } catch (...) {
        cudaEventDestroy(start);
        cudaEventDestroy(stop);
        cudaStreamDestroy(stream);
        throw;
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaStreamDestroy(stream);
    std::sort(times.begin(), times.end());

    GpuAttentionBenchResult r;
    r.median_us = times[times.size() / 2];
    for (KVKind kind : {KVKind::K, KVKind::V}) {
        const KVFormat& f = cache.format(0, kind);
        const int64_t hd = kind == KVKind::K ? hd_k : hd_v, S = f.tokens_per_block;
        const int64_t n_sink = std::min(depth, f.n_sink), first_ring = cache.first_ring(0, kind, depth);
        // Whole blocks up to first_ring (deco reads a block's header with its rows), fp16 rows.
        const double blocks = S > 1 ? double(first_ring / S) * double(f.block_bytes(hd))
                                    : double(first_ring - n_sink) * double(f.block_bytes(hd));
        const double fp16_rows = double(n_sink + depth - first_ring) * double(hd) * 2.0;
        r.bytes_read += double(cache.n_head_kv()) * (blocks + fp16_rows);
    }
    r.gbps = r.bytes_read / (r.median_us * 1e-6) / 1e9;
    int device = 0, clock_khz = 0, bus_bits = 0;
    DL_CUDA_CHECK(cudaGetDevice(&device));
    DL_CUDA_CHECK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device));
    DL_CUDA_CHECK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device));
    r.peak_gbps = 2.0 * double(clock_khz) * 1e3 * double(bus_bits) / 8.0 / 1e9;
    return r;
}

}  // namespace decollama::gpu
