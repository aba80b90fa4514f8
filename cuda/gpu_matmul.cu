// Weight-matrix kernels: Y = X · Wᵀ and embedding lookup for every type in GpuWeightBlockList
// (gpu_weight_blocks.h), reading the GGUF blocks as they lie in device memory.
//
//   decode  (n_tokens <= kDecodeTokens): one warp per output row; lane l dequantizes sub-blocks
//           l, l + 32, ... of the row into registers and dots each with every token's fp32
//           activations, so the weights are read once for all tokens; warp-shuffle reduction.
//   prefill (more tokens): a block computes a 64 x 64 tile of Y (tokens x rows); per 64-wide k
//           step it dequantizes 64 rows x 64 values of W and converts 64 tokens x 64 values of X
//           to fp16 in shared memory, and 4 warps (32 x 32 each) multiply them with WMMA
//           16x16x16 (fp16 in, fp32 accumulate). Edges (rows, tokens, k) are zero-filled.
//           fp16 overflow: each token row t of X is multiplied by a power of two s_t before the
//           conversion (max |x_t * s_t| <= 2^14, gpu_activation_scale.h) and its fp32 outputs by
//           1 / s_t, both exact; s_t = 1 for rows already small, so those are unchanged.
//   embed:  one block per token, threads over the row's sub-blocks.
//
// Kernel instantiations: 3 per weight type (decode, prefill, embed).
#include <cuda_fp16.h>
#include <mma.h>

#include <array>
#include <string>
#include <vector>

#include "common/error.h"
#include "gpu_activation_scale.h"
#include "gpu_check.h"
#include "gpu_matmul.h"
#include "gpu_matmul_hooks.h"
#include "gpu_weight_blocks.h"
#include "quant/weight_types.h"

namespace decollama::gpu {

namespace {

constexpr int kWarp = 32;

// ---- decode: matrix-vector for a few tokens --------------------------------------------------

constexpr int kDecodeTokens = 8;  // accumulators per lane; more tokens go to the prefill kernel
constexpr int kDecodeWarps = 4;   // output rows per block

// dot(v, x[0..31]); x 16-byte aligned when vec4.
__device__ __forceinline__ float dot32(const float v[32], const float* x, bool vec4) {
    float s = 0.0f;
    if (vec4) {
        const float4* p = reinterpret_cast<const float4*>(x);
#pragma unroll
        for (int j = 0; j < 8; ++j) {
            const float4 a = __ldg(p + j);
            s += v[4 * j] * a.x + v[4 * j + 1] * a.y + v[4 * j + 2] * a.z + v[4 * j + 3] * a.w;
        }
    } else {
#pragma unroll
        for (int j = 0; j < 32; ++j) s += v[j] * __ldg(x + j);
    }
    return s;
}

// vec4: x is 16-byte aligned and n_in % 4 == 0, so every sub-block of x is float4-aligned.
template <class W>
__global__ void __launch_bounds__(kDecodeWarps* kWarp)
    matmul_decode_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_in, int64_t n_out,
                         const float* __restrict__ x, int n_tokens, float* __restrict__ y, bool vec4) {
    const int lane = threadIdx.x % kWarp;
    const int64_t o = int64_t(blockIdx.x) * kDecodeWarps + threadIdx.x / kWarp;
    if (o >= n_out) return;  // the whole warp leaves together: the shuffles below stay full-warp
    const uint8_t* row = w + o * row_bytes;

    float acc[kDecodeTokens];
#pragma unroll
    for (int t = 0; t < kDecodeTokens; ++t) acc[t] = 0.0f;

    const int64_t n_sub = n_in / 32;
    for (int64_t s = lane; s < n_sub; s += kWarp) {
        float v[32];
        dequant_sub<W>(row, s, v);
#pragma unroll
        for (int t = 0; t < kDecodeTokens; ++t)
            if (t < n_tokens) acc[t] += dot32(v, x + t * n_in + s * 32, vec4);
    }
    if constexpr (W::plain) {  // rows of plain values need not be whole sub-blocks: < 32 left
        const int64_t k = n_sub * 32 + lane;
        if (k < n_in) {
            const float v = W::value(row, k);
#pragma unroll
            for (int t = 0; t < kDecodeTokens; ++t)
                if (t < n_tokens) acc[t] += v * x[t * n_in + k];
        }
    }

#pragma unroll
    for (int t = 0; t < kDecodeTokens; ++t) {
        if (t >= n_tokens) break;
        float s = acc[t];
#pragma unroll
        for (int off = kWarp / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (lane == 0) y[t * n_out + o] = s;
    }
}

// ---- prefill: tensor-core tiles --------------------------------------------------------------

constexpr int kTileOut = 64, kTileTok = 64, kTileK = 64;
constexpr int kPrefillThreads = 128;  // 4 warps, each 32 tokens x 32 rows of the tile
// Row pitches of the shared tiles, padded so the WMMA loads of consecutive rows fall in different
// banks (WMMA needs multiples of 8 halves / 4 floats).
constexpr int kLdH = kTileK + 8;     // halves
constexpr int kLdC = kTileOut + 4;   // floats
constexpr int kStageBytes = (kTileOut + kTileTok) * kLdH * 2;
constexpr int kOutBytes = kTileTok * kLdC * 4;
constexpr int kPrefillSmem = kStageBytes > kOutBytes ? kStageBytes : kOutBytes;
static_assert(kPrefillThreads == kTileOut * (kTileK / 32), "one dequantized sub-block per thread and k step");
static_assert(kPrefillSmem + kTileTok * sizeof(ActivationScale) <= 48 * 1024, "static shared memory");

// Sub-block at value k of a row, zeros past n_in (only plain rows end inside a sub-block).
template <class W>
__device__ __forceinline__ void load_sub_guarded(const uint8_t* row, int64_t k, int64_t n_in, float v[32]) {
    if constexpr (W::plain) {
        if (k + 32 > n_in) {
#pragma unroll
            for (int j = 0; j < 32; ++j) v[j] = k + j < n_in ? W::value(row, k + j) : 0.0f;
            return;
        }
    }
    dequant_sub<W>(row, k / 32, v);
}

// max |x| of the activation row xr[0 .. n_in) over the lanes of a warp (every lane gets it);
// vec4: xr is 16-byte aligned and n_in % 4 == 0.
__device__ __forceinline__ float warp_row_abs_max(const float* __restrict__ xr, int64_t n_in, bool vec4) {
    const int lane = threadIdx.x % kWarp;
    float m = 0.0f;
    if (vec4) {
        const float4* p = reinterpret_cast<const float4*>(xr);
        for (int64_t i = lane; i < n_in / 4; i += kWarp) {
            const float4 a = __ldg(p + i);
            m = abs_max_update(abs_max_update(m, a.x), a.y);
            m = abs_max_update(abs_max_update(m, a.z), a.w);
        }
    } else {
        for (int64_t i = lane; i < n_in; i += kWarp) m = abs_max_update(m, __ldg(xr + i));
    }
#pragma unroll
    for (int off = kWarp / 2; off > 0; off /= 2) m = abs_max_update(m, __shfl_xor_sync(0xffffffffu, m, off));
    return m;
}

// vec4: as in the decode kernel (x 16-byte aligned, n_in % 4 == 0), for the scale prologue.
template <class W>
__global__ void __launch_bounds__(kPrefillThreads)
    matmul_prefill_kernel(const uint8_t* __restrict__ w, size_t row_bytes, int64_t n_in, int64_t n_out,
                          const float* __restrict__ x, int64_t n_tokens, float* __restrict__ y, bool vec4) {
    using namespace nvcuda;
    __shared__ __align__(128) unsigned char smem[kPrefillSmem];
    half* ws = reinterpret_cast<half*>(smem);  // [kTileOut][kLdH]: W rows (B, col-major k x out)
    half* xs = ws + kTileOut * kLdH;           // [kTileTok][kLdH]: X rows (A, row-major tok x k)
    float* cs = reinterpret_cast<float*>(smem);  // [kTileTok][kLdC], after the k loop
    __shared__ ActivationScale row_scale[kTileTok];  // s_t and 1 / s_t of the tile's token rows

    const int tid = threadIdx.x, warp = tid / kWarp;
    const int64_t o0 = int64_t(blockIdx.x) * kTileOut, t0 = int64_t(blockIdx.y) * kTileTok;
    const int warp_tok = (warp / 2) * 32, warp_out = (warp % 2) * 32;

    // Prologue: the fp16 scale of each of the tile's 64 token rows, one warp per row. Done here
    // rather than by a separate kernel into a scale buffer: gpu_matmul has no scratch (a
    // cudaMalloc per call is slow and synchronizes), it needs no second launch, and
    // it stays stream-safe. The price is one more pass over the tile's activation rows per block
    // (vectorized, mostly L2 hits since every block column reads the same rows), beside the
    // k loop's dequantization and WMMA work; the decode kernel (fp32) needs no scale.
    for (int tt = warp; tt < kTileTok; tt += kPrefillThreads / kWarp) {
        const int64_t t = t0 + tt;
        const float m = t < n_tokens ? warp_row_abs_max(x + t * n_in, n_in, vec4) : 0.0f;
        if (tid % kWarp == 0) row_scale[tt] = activation_scale(m);
    }
    __syncthreads();

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    // This thread's weight sub-block in every k step: row wr, values wk .. wk + 31 of the step.
    const int wr = tid / 2, wk = (tid % 2) * 32;
    const bool w_row_ok = o0 + wr < n_out;
    const uint8_t* w_row = w + (o0 + wr) * int64_t(row_bytes);

    for (int64_t k0 = 0; k0 < n_in; k0 += kTileK) {
        {
            float v[32];
            const int64_t k = k0 + wk;
            if (w_row_ok && k < n_in) {
                load_sub_guarded<W>(w_row, k, n_in, v);
            } else {
#pragma unroll
                for (int j = 0; j < 32; ++j) v[j] = 0.0f;
            }
            half2* dst = reinterpret_cast<half2*>(ws + wr * kLdH + wk);
#pragma unroll
            for (int j = 0; j < 16; ++j) dst[j] = __floats2half2_rn(v[2 * j], v[2 * j + 1]);
        }
        // Activations: consecutive threads read consecutive values of a token row (coalesced).
#pragma unroll 4
        for (int i = tid; i < kTileTok * kTileK; i += kPrefillThreads) {
            const int tt = i / kTileK, kk = i % kTileK;
            const int64_t t = t0 + tt, k = k0 + kk;
            const float v = t < n_tokens && k < n_in ? __ldg(x + t * n_in + k) * row_scale[tt].scale : 0.0f;
            xs[tt * kLdH + kk] = __float2half_rn(v);  // |v| <= 2^14 unless the row holds inf / NaN
        }
        __syncthreads();

#pragma unroll
        for (int kk = 0; kk < kTileK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> a[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> b[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], xs + (warp_tok + 16 * i) * kLdH + kk, kLdH);
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], ws + (warp_out + 16 * j) * kLdH + kk, kLdH);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
        __syncthreads();  // the tiles are refilled (or reused as cs) next
    }

#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
            wmma::store_matrix_sync(cs + (warp_tok + 16 * i) * kLdC + warp_out + 16 * j, acc[i][j], kLdC,
                                    wmma::mem_row_major);
    __syncthreads();
    // Consecutive threads write consecutive outputs of a token row (coalesced).
    for (int i = tid; i < kTileTok * kTileOut; i += kPrefillThreads) {
        const int tt = i / kTileOut, oo = i % kTileOut;
        const int64_t t = t0 + tt, o = o0 + oo;
        if (t < n_tokens && o < n_out) y[t * n_out + o] = cs[tt * kLdC + oo] * row_scale[tt].inverse;
    }
}

// ---- embedding -------------------------------------------------------------------------------

constexpr int kEmbedThreads = 128;

template <class W>
__global__ void __launch_bounds__(kEmbedThreads)
    embed_kernel(const uint8_t* __restrict__ table, size_t row_bytes, int64_t n_in,
                 const int32_t* __restrict__ tokens, float scale, float* __restrict__ x, bool vec4) {
    const int64_t t = blockIdx.x;
    const uint8_t* row = table + int64_t(tokens[t]) * int64_t(row_bytes);
    float* out = x + t * n_in;
    const int64_t n_sub = n_in / 32;
    for (int64_t s = threadIdx.x; s < n_sub; s += kEmbedThreads) {
        float v[32];
        dequant_sub<W>(row, s, v);
        float* dst = out + s * 32;
        if (vec4) {
#pragma unroll
            for (int j = 0; j < 8; ++j)
                reinterpret_cast<float4*>(dst)[j] =
                    make_float4(scale * v[4 * j], scale * v[4 * j + 1], scale * v[4 * j + 2], scale * v[4 * j + 3]);
        } else {
#pragma unroll
            for (int j = 0; j < 32; ++j) dst[j] = scale * v[j];
        }
    }
    if constexpr (W::plain) {
        const int64_t k = n_sub * 32 + threadIdx.x;
        if (k < n_in) out[k] = scale * W::value(row, k);
    }
}

// ---- dispatch --------------------------------------------------------------------------------

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <class W>
void launch_matmul(const GpuMatrix& w, const float* x, int64_t n_tokens, float* y, cudaStream_t stream) {
    const bool vec4 = aligned16(x) && w.n_in % 4 == 0;
    if (n_tokens <= kDecodeTokens) {
        matmul_decode_kernel<W><<<grid_for(w.n_out, kDecodeWarps), kDecodeWarps * kWarp, 0, stream>>>(
            w.data, w.row_bytes, w.n_in, w.n_out, x, int(n_tokens), y, vec4);
    } else {
        const dim3 grid(grid_for(w.n_out, kTileOut), grid_for(n_tokens, kTileTok));
        matmul_prefill_kernel<W><<<grid, kPrefillThreads, 0, stream>>>(w.data, w.row_bytes, w.n_in, w.n_out, x,
                                                                        n_tokens, y, vec4);
    }
    DL_CUDA_CHECK_LAUNCH();
}

template <class W>
void launch_embed(const GpuMatrix& table, const int32_t* tokens, int64_t n_tokens, float scale, float* x,
                  cudaStream_t stream) {
    const bool vec4 = aligned16(x) && table.n_in % 4 == 0;
    embed_kernel<W><<<unsigned(n_tokens), kEmbedThreads, 0, stream>>>(table.data, table.row_bytes, table.n_in,
                                                                      tokens, scale, x, vec4);
    DL_CUDA_CHECK_LAUNCH();
}

// One row per weight type, generated from GpuWeightBlockList.
struct KernelRow {
    GGMLType type;
    bool (*valid_n_in)(int64_t);
    size_t (*row_bytes)(int64_t);
    bool plain;
    void (*matmul)(const GpuMatrix&, const float*, int64_t, float*, cudaStream_t);
    void (*embed)(const GpuMatrix&, const int32_t*, int64_t, float, float*, cudaStream_t);
};

template <class W>
constexpr KernelRow kernel_row() {
    return {W::type, &valid_row_length<W>, &row_bytes_of<W>, W::plain, &launch_matmul<W>, &launch_embed<W>};
}

template <class... W>
constexpr std::array<KernelRow, sizeof...(W)> make_kernel_table(BlockList<W...>) {
    return {kernel_row<W>()...};
}

constexpr auto kKernels = make_kernel_table(GpuWeightBlockList{});

std::string type_name(GGMLType type) {
    const WeightTypeTraits* t = find_weight_type(static_cast<uint32_t>(type));
    return t ? std::string(t->name) : "type id " + std::to_string(static_cast<uint32_t>(type));
}

const KernelRow* find_row(GGMLType type) {
    for (const KernelRow& r : kKernels)
        if (r.type == type) return &r;
    return nullptr;
}

const KernelRow& row_for(GGMLType type) {
    const KernelRow* r = find_row(type);
    if (r == nullptr) throw InvalidArgument("weight type " + type_name(type) + " is not supported by the GPU kernels");
    return *r;
}

// n_in, n_out and row_bytes of a matrix agree with its type.
const KernelRow& checked_row(const GpuMatrix& w, const char* what) {
    const KernelRow& r = row_for(w.type);
    if (!r.valid_n_in(w.n_in))
        throw InvalidArgument(std::string(what) + ": " + type_name(w.type) + " rows of " + std::to_string(w.n_in) +
                              " values are not whole blocks");
    if (w.n_out < 0) throw InvalidArgument(std::string(what) + ": n_out < 0");
    if (w.row_bytes != r.row_bytes(w.n_in))
        throw InvalidArgument(std::string(what) + ": row_bytes " + std::to_string(w.row_bytes) + " != " +
                              std::to_string(r.row_bytes(w.n_in)) + " for " + std::to_string(w.n_in) + " " +
                              type_name(w.type) + " values");
    return r;
}

void require_gpu() {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        cudaGetLastError();
        throw CudaError(std::string("no usable GPU: ") + cudaGetErrorString(err));
    }
    if (n == 0) throw CudaError("no usable GPU: no CUDA device found");
}

}  // namespace

bool gpu_supports_weight(GGMLType type) { return find_row(type) != nullptr; }

void gpu_matmul(const GpuMatrix& w, const float* x, int64_t n_tokens, float* y, cudaStream_t stream) {
    const KernelRow& r = checked_row(w, "gpu_matmul");
    if (n_tokens < 0) throw InvalidArgument("gpu_matmul: n_tokens < 0");
    if (n_tokens == 0 || w.n_out == 0) return;
    if (w.data == nullptr || x == nullptr || y == nullptr) throw InvalidArgument("gpu_matmul: null pointer");
    if (n_tokens > kDecodeTokens && grid_for(n_tokens, kTileTok) > 65535u)
        throw InvalidArgument("gpu_matmul: " + std::to_string(n_tokens) + " tokens exceed one launch");
    r.matmul(w, x, n_tokens, y, stream);
}

void gpu_embed(const GpuMatrix& table, const int32_t* tokens, int64_t n_tokens, float scale, float* x,
               cudaStream_t stream) {
    const KernelRow& r = checked_row(table, "gpu_embed");
    if (n_tokens < 0 || n_tokens > 0x7fffffff) throw InvalidArgument("gpu_embed: bad n_tokens");
    if (n_tokens == 0) return;
    if (table.data == nullptr || tokens == nullptr || x == nullptr) throw InvalidArgument("gpu_embed: null pointer");
    r.embed(table, tokens, n_tokens, scale, x, stream);
}

// ---- test hooks ------------------------------------------------------------------------------

std::vector<float> gpu_test_matmul(GGMLType type, const uint8_t* w, int64_t n_in, int64_t n_out, const float* x,
                                   int64_t n_tokens, bool misalign) {
    const KernelRow& r = row_for(type);
    if (!r.valid_n_in(n_in) || n_out < 0 || n_tokens < 0)
        throw InvalidArgument("gpu_test_matmul: bad geometry for " + type_name(type));
    if (misalign && r.plain)
        throw InvalidArgument("gpu_test_matmul: " + type_name(type) + " rows must be aligned (misalign is for blocks)");
    require_gpu();
    const size_t row_bytes = r.row_bytes(n_in), w_bytes = row_bytes * size_t(n_out);
    const size_t offset = misalign ? 1 : 0;
    DeviceBuffer<uint8_t> dw(w_bytes + offset);
    DeviceBuffer<float> dx(size_t(n_tokens * n_in)), dy(size_t(n_tokens * n_out));
    dw.upload(w, w_bytes, offset);
    dx.upload(x, dx.size());
    const GpuMatrix m{dw.data() + offset, type, n_in, n_out, row_bytes};
    gpu_matmul(m, dx.data(), n_tokens, dy.data(), nullptr);
    DL_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> out(dy.size());
    dy.download(out.data(), out.size());
    return out;
}

std::vector<float> gpu_test_embed(GGMLType type, const uint8_t* table, int64_t n_in, int64_t n_rows,
                                  const int32_t* tokens, int64_t n_tokens, float scale) {
    const KernelRow& r = row_for(type);
    if (!r.valid_n_in(n_in) || n_rows < 0 || n_tokens < 0)
        throw InvalidArgument("gpu_test_embed: bad geometry for " + type_name(type));
    for (int64_t t = 0; t < n_tokens; ++t)
        if (tokens[t] < 0 || tokens[t] >= n_rows)
            throw InvalidArgument("gpu_test_embed: token " + std::to_string(tokens[t]) + " outside the table");
    require_gpu();
    const size_t row_bytes = r.row_bytes(n_in);
    DeviceBuffer<uint8_t> dt(row_bytes * size_t(n_rows));
    DeviceBuffer<int32_t> dtok(static_cast<size_t>(n_tokens));
    DeviceBuffer<float> dx(size_t(n_tokens * n_in));
    dt.upload(table, dt.size());
    dtok.upload(tokens, dtok.size());
    const GpuMatrix m{dt.data(), type, n_in, n_rows, row_bytes};
    gpu_embed(m, dtok.data(), n_tokens, scale, dx.data(), nullptr);
    DL_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<float> out(dx.size());
    dx.download(out.data(), out.size());
    return out;
}

int gpu_matmul_decode_max_tokens() { return kDecodeTokens; }

}  // namespace decollama::gpu
