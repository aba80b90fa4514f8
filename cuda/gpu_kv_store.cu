// Quantize-on-write of every KV format on the GPU (gpu_kv_store, cuda/gpu_kv.h): the bytes
// KVCache::store_stream writes, for all heads of a stream set in each launch. The work items and
// the encoders' arithmetic are DL_HD functions (kv_store_device.h, kv_encode_device.h) that host
// tests check bit-exactly against the CPU; this file only launches them. Compiled with
// --fmad=false (CMakeLists.txt); the encoders also round products / divisions / square roots
// explicitly (__fmul_rn, __fdiv_rn, __ddiv_rn, __dsqrt_rn), so no flag changes their bits.
//
// Launches per call, in stream order:
//   deco*/had*  deco_block_kernel: one thread block per (completed block, head), 256 threads:
//               thread c fits channel c (sequential double sums over the block's rows, exactly
//               the CPU's order), thread 0 the mean of u, then thread r encodes row r
//               (Hadamard-64 in registers, one group at a time). Runs before the ring writes:
//               it reads earlier calls' rows from the ring, which this call may overwrite.
//   others      unit_kernel: one thread per (token, head, unit): value (f16/f32), 32-value
//               block (q8_0/q4_0) or group of c channels (cq*, token fastest: a warp shares a
//               codebook group).
//   all         fp16_rows_kernel: one thread per (row, head, channel) of the sink rows and the
//               newest ring rows (with the query energies of deco* keys).
#include <algorithm>
#include <string>

#include "common/error.h"
#include "cuda_devices.h"
#include "gpu_kv.h"
#include "gpu_kv_store_hooks.h"
#include "kv_store_device.h"

namespace decollama::gpu {

namespace {

constexpr int kItemThreads = 256;
constexpr int kDecoThreads = 256;
constexpr int64_t kMaxItemBlocks = 1 << 20;  // grid-stride loops cover the rest

unsigned item_blocks(int64_t items) {
    return unsigned(std::min<int64_t>((items + kItemThreads - 1) / kItemThreads, kMaxItemBlocks));
}

__global__ void fp16_rows_kernel(KVStoreArgs a, int64_t items) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < items; i += int64_t(gridDim.x) * blockDim.x)
        kv_store_fp16_item(a, i);
}

template <class Enc>
__global__ void unit_kernel(KVStoreArgs a, int64_t items) {
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < items; i += int64_t(gridDim.x) * blockDim.x)
        kv_store_unit_item<Enc>(a, i, KVIsCQ<Enc>::value);
}

// Block first_block + blockIdx.x of head blockIdx.y. Shared: u double[D], mu and w fp16[D].
template <class Enc>
__global__ void __launch_bounds__(kDecoThreads) deco_block_kernel(KVStoreArgs a, int64_t first_block) {
    extern __shared__ double shared_u[];
    __shared__ double m;
    const int64_t D = a.head_dim;
    double* u = shared_u;
    uint16_t* mu = reinterpret_cast<uint16_t*>(u + D);
    uint16_t* w = mu + D;
    const KVStoreDecoBlock<Enc> task{a, first_block + blockIdx.x, blockIdx.y};
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) task.fit_channel(c, mu, u);
    __syncthreads();
    if (threadIdx.x == 0) m = task.mean_u(u);
    __syncthreads();
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) task.weight_channel(c, u, m, mu, w);
    __syncthreads();
    for (int64_t r = threadIdx.x; r < kDecoBlockTokens; r += blockDim.x) task.encode_row(r, mu, w);
}

template <class Enc>
void launch_store(const KVStoreArgs& a, cudaStream_t stream) {
    if constexpr (Enc::kIsBlockFormat) {
        const int64_t first = kv_store_first_block(a), blocks = kv_store_end_block(a) - first;
        if (blocks > 0) {
            const size_t shared = size_t(a.head_dim) * (sizeof(double) + 2 * sizeof(uint16_t));
            deco_block_kernel<Enc><<<dim3(unsigned(blocks), unsigned(a.n_head_kv)), kDecoThreads, shared, stream>>>(
                a, first);
            DL_CUDA_CHECK_LAUNCH();
        }
    } else {
        const int64_t items = kv_store_unit_items<Enc>(a);
        if (items > 0) {
            unit_kernel<Enc><<<item_blocks(items), kItemThreads, 0, stream>>>(a, items);
            DL_CUDA_CHECK_LAUNCH();
        }
    }
    const int64_t items = kv_store_fp16_items(a);
    if (items > 0) {
        fp16_rows_kernel<<<item_blocks(items), kItemThreads, 0, stream>>>(a, items);
        DL_CUDA_CHECK_LAUNCH();
    }
}

}  // namespace

void gpu_kv_store(const GpuStreamSet& set, const float* rows, int64_t row_stride, int64_t pos, int64_t n,
                  const float* q, int64_t n_head, cudaStream_t stream) {
    if (set.format == nullptr) throw InvalidArgument("gpu_kv_store: stream set without a format");
    const KVStoreArgs a = kv_store_args(*set.format, set.layout, set.base, set.head_stride, set.head_dim,
                                        set.n_head_kv, rows, row_stride, pos, n, q, n_head, set.codebooks,
                                        set.metrics);
    if (n == 0) return;
    kv_encode_visit(kv_encode_kind(set.format->name),
                    [&](auto tag) { launch_store<typename decltype(tag)::type>(a, stream); });
}

// ---- test hook -----------------------------------------------------------------------------------

namespace {

template <class T>
DeviceBuffer<T> device_copy(const T* host, size_t n) {
    DeviceBuffer<T> d;
    if (host == nullptr || n == 0) return d;
    d.resize(n);
    d.upload(host, n);
    return d;
}

}  // namespace

void gpu_kv_store_test(const KVCache& cache, int64_t layer, const KVStoreTestInput& in, uint8_t* out) {
    const std::string reason = cuda::unavailable_reason();
    if (!reason.empty()) throw CudaError("gpu_kv_store_test: no usable GPU (" + reason + ")");
    int64_t n = 0;
    for (int64_t c : in.calls) n += c;
    const int64_t H = cache.n_head_kv(), hd_k = cache.head_dim_k(), hd_v = cache.head_dim_v();
    DeviceBuffer<uint8_t> bytes(cache.layer_bytes(layer));
    DL_CUDA_CHECK(cudaMemset(bytes.data(), 0, bytes.size()));
    DeviceBuffer<float> k = device_copy(in.k, size_t(n * H * hd_k));
    DeviceBuffer<float> v = device_copy(in.v, size_t(n * H * hd_v));
    DeviceBuffer<float> q = device_copy(in.q, size_t(n * in.n_head * hd_k));
    DeviceBuffer<float> k_books = device_copy(in.k_codebooks, size_t(H * hd_k * 256));
    DeviceBuffer<float> k_metrics = device_copy(in.k_metrics, size_t(H * hd_k));
    DeviceBuffer<float> v_books = device_copy(in.v_codebooks, size_t(H * hd_v * 256));
    DeviceBuffer<float> v_metrics = device_copy(in.v_metrics, size_t(H * hd_v));
    GpuStreamSet sets[2];
    for (KVKind kind : {KVKind::K, KVKind::V}) {
        GpuStreamSet& s = sets[int(kind)];
        s.format = &cache.format(layer, kind);
        s.base = bytes.data() + cache.kind_offset_in_layer(layer, kind);
        s.head_stride = cache.head_stride(layer, kind);
        s.layout = cache.stream_layout(layer, kind);
        s.head_dim = kind == KVKind::K ? hd_k : hd_v;
        s.n_head_kv = H;
        s.codebooks = kind == KVKind::K ? k_books.data() : v_books.data();
        s.metrics = kind == KVKind::K ? k_metrics.data() : v_metrics.data();
    }
    int64_t pos = 0;
    for (int64_t c : in.calls) {
        const float* qc = q.data() != nullptr ? q.data() + pos * in.n_head * hd_k : nullptr;
        gpu_kv_store(sets[0], k.data() + pos * H * hd_k, H * hd_k, pos, c, qc, in.n_head, nullptr);
        gpu_kv_store(sets[1], v.data() + pos * H * hd_v, H * hd_v, pos, c, nullptr, in.n_head, nullptr);
        pos += c;
    }
    DL_CUDA_CHECK(cudaDeviceSynchronize());
    bytes.download(out, bytes.size());
}

}  // namespace decollama::gpu
