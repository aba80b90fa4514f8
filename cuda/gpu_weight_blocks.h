// Dequantizers of the GGUF weight blocks, as the GPU kernels run them (DL_HD: nvcc compiles them
// for host and device, g++ for the host-side tests that check them against the CPU dequantizers
// in cpp/quant/types/). One traits struct per weight type:
//     type          the GGML type id
//     block_values  values per block (32 for f32/f16/bf16: a "block" of 32 plain values)
//     block_bytes   bytes per block, as in the GGUF
//     plain         one value per element (f32/f16/bf16): rows of any length, value() per element
//     dequant32(block, sub, out)  values 32*sub .. 32*sub+31 of the block, in value order
// The kernels walk a row in 32-value sub-blocks: sub-block s of a row lies in block
// s / (block_values / 32) at sub-block s % (block_values / 32) (dequant_sub below).
//
// Expressions follow the CPU dequantizers operation for operation (same products, same order),
// so without fused multiply-adds (host builds) the results are bit-identical; device code may
// fuse scale * q - offset, which changes the last bit at most.
//
// Alignment: quantized blocks are read with byte loads (blocks of 18/22/34/210 bytes leave
// fields unaligned); f32 rows must be 4-byte aligned and f16/bf16 rows 2-byte aligned (true of
// GGUF tensor data, aligned to 32, and of cudaMalloc).
//
// Adding a type: one struct here + one entry in GpuWeightBlockList (the GPU kernel table and the
// host-side test hook are generated from that list).
#pragma once
#include <cstdint>
#include <cstring>

#include "device_common.h"
#include "quant/ggml_type.h"

// Unrolls the fixed 16/32-step loops under nvcc, so a sub-block's 32 values stay in registers.
#if defined(__CUDACC__)
#define DL_UNROLL _Pragma("unroll")
#else
#define DL_UNROLL
#endif

namespace decollama::gpu {

// ---- element loads ---------------------------------------------------------------------------

// 4-byte aligned float / 2-byte aligned u16 (plain weight rows).
DL_HD float load_f32_aligned(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<const float*>(p);
#else
    float f;
    std::memcpy(&f, p, 4);
    return f;
#endif
}

DL_HD uint16_t load_u16_aligned(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
    return *reinterpret_cast<const uint16_t*>(p);
#else
    return load_u16(p);
#endif
}

// Unaligned little-endian 32-bit word (q5_0 / q5_1 high bits).
DL_HD uint32_t load_u32(const uint8_t* p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// ---- plain types: 32 elements per "block" ----------------------------------------------------

struct WF32 {
    static constexpr GGMLType type = GGMLType::F32;
    static constexpr int block_values = 32, block_bytes = 128;
    static constexpr bool plain = true;
    DL_HD static float value(const uint8_t* row, int64_t i) { return load_f32_aligned(row + 4 * i); }
    DL_HD static void dequant32(const uint8_t* block, int /*sub*/, float out[32]) {
        DL_UNROLL
        for (int j = 0; j < 32; ++j) out[j] = load_f32_aligned(block + 4 * j);
    }
};

struct WF16 {
    static constexpr GGMLType type = GGMLType::F16;
    static constexpr int block_values = 32, block_bytes = 64;
    static constexpr bool plain = true;
    DL_HD static float value(const uint8_t* row, int64_t i) { return half_to_float(load_u16_aligned(row + 2 * i)); }
    DL_HD static void dequant32(const uint8_t* block, int /*sub*/, float out[32]) {
        DL_UNROLL
        for (int j = 0; j < 32; ++j) out[j] = half_to_float(load_u16_aligned(block + 2 * j));
    }
};

struct WBF16 {
    static constexpr GGMLType type = GGMLType::BF16;
    static constexpr int block_values = 32, block_bytes = 64;
    static constexpr bool plain = true;
    DL_HD static float value(const uint8_t* row, int64_t i) { return bf16_to_float(load_u16_aligned(row + 2 * i)); }
    DL_HD static void dequant32(const uint8_t* block, int /*sub*/, float out[32]) {
        DL_UNROLL
        for (int j = 0; j < 32; ++j) out[j] = bf16_to_float(load_u16_aligned(block + 2 * j));
    }
};

// ---- 32-value blocks -------------------------------------------------------------------------
// Byte j of qs holds value j (low nibble) and value j + 16 (high nibble); the 5th bit of value j
// (q5_*) is bit j of the little-endian word qh.

// d (fp16) | qs[16]: value = d * (q - 8)
struct WQ4_0 {
    static constexpr GGMLType type = GGMLType::Q4_0;
    static constexpr int block_values = 32, block_bytes = 18;
    static constexpr bool plain = false;
    DL_HD static void dequant32(const uint8_t* block, int /*sub*/, float out[32]) {
        const float d = load_half(block);
        const uint8_t* qs = block + 2;
        DL_UNROLL
        for (int j = 0; j < 16; ++j) {
            out[j] = d * float((qs[j] & 0x0F) - 8);
            out[j + 16] = d * float((qs[j] >> 4) - 8);
        }
    }
};

// d, m (fp16) | qs[16]: value = d * q + m
struct WQ4_1 {
    static constexpr GGMLType type = GGMLType::Q4_1;
    static constexpr int block_values = 32, block_bytes = 20;
    static constexpr bool plain = false;
    DL_HD static void dequant32(const uint8_t* block, int /*sub*/, float out[32]) {
        const float d = load_half(block), m = load_half(block + 2);
        const uint8_t* qs = block + 4;
        DL_UNROLL
        for (int j = 0; j < 16; ++j) {
            out[j] = d * float(qs[j] & 0x0F) + m;
            out[j + 16] = d * float(qs[j] >> 4) + m;
        }
    }
};

// d (fp16) | qh[4] | qs[16]: value = d * (q - 16), q 5 bits
struct WQ5_0 {
    static constexpr GGMLType type = GGMLType::Q5_0;
    static constexpr int block_values = 32, block_bytes = 22;
    static constexpr bool plain = false;
    DL_HD static void dequant32(const uint8_t* block, int /*sub*/, float out[32]) {
        const float d = load_half(block);
        const uint32_t qh = load_u32(block + 2);
        const uint8_t* qs = block + 6;
        DL_UNROLL
        for (int j = 0; j < 16; ++j) {
            const int lo = (qs[j] & 0x0F) | int((qh >> j) & 1u) << 4;
            const int hi = (qs[j] >> 4) | int((qh >> (j + 16)) & 1u) << 4;
            out[j] = d * float(lo - 16);
            out[j + 16] = d * float(hi - 16);
        }
    }
};

// d, m (fp16) | qh[4] | qs[16]: value = d * q + m, q 5 bits
struct WQ5_1 {
    static constexpr GGMLType type = GGMLType::Q5_1;
    static constexpr int block_values = 32, block_bytes = 24;
    static constexpr bool plain = false;
    DL_HD static void dequant32(const uint8_t* block, int /*sub*/, float out[32]) {
        const float d = load_half(block), m = load_half(block + 2);
        const uint32_t qh = load_u32(block + 4);
        const uint8_t* qs = block + 8;
        DL_UNROLL
        for (int j = 0; j < 16; ++j) {
            const int lo = (qs[j] & 0x0F) | int((qh >> j) & 1u) << 4;
            const int hi = (qs[j] >> 4) | int((qh >> (j + 16)) & 1u) << 4;
            out[j] = d * float(lo) + m;
            out[j + 16] = d * float(hi) + m;
        }
    }
};

// d (fp16) | qs[32] int8: value = q * d
struct WQ8_0 {
    static constexpr GGMLType type = GGMLType::Q8_0;
    static constexpr int block_values = 32, block_bytes = 34;
    static constexpr bool plain = false;
    DL_HD static void dequant32(const uint8_t* block, int /*sub*/, float out[32]) {
        const float d = load_half(block);
        DL_UNROLL
        for (int j = 0; j < 32; ++j) out[j] = float(int8_t(block[2 + j])) * d;
    }
};

// ---- K-quants: 256-value super-blocks --------------------------------------------------------

// Scale and min (6 bits each) of sub-block s of q4_K / q5_K from the 12 packed bytes:
// s < 4 in the low 6 bits of bytes s and s + 4; s >= 4 in the nibbles of byte s + 4 (low 4 bits)
// and the top 2 bits of bytes s - 4 (scale) and s (min).
DL_HD void k_scale_min(const uint8_t* packed, int s, int& scale, int& min) {
    if (s < 4) {
        scale = packed[s] & 0x3F;
        min = packed[s + 4] & 0x3F;
    } else {
        scale = (packed[s + 4] & 0x0F) | ((packed[s - 4] >> 6) << 4);
        min = (packed[s + 4] >> 4) | ((packed[s] >> 6) << 4);
    }
}

// d, dmin (fp16) | scales[12] | qs[128]: value = (d * scale[s]) * q - dmin * min[s], q 4 bits.
// Sub-blocks 2g and 2g + 1 share qs[32g .. 32g + 31] (low / high nibbles).
struct WQ4_K {
    static constexpr GGMLType type = GGMLType::Q4_K;
    static constexpr int block_values = 256, block_bytes = 144;
    static constexpr bool plain = false;
    DL_HD static void dequant32(const uint8_t* block, int sub, float out[32]) {
        int sc, mn;
        k_scale_min(block + 4, sub, sc, mn);
        const float scale = load_half(block) * float(sc);
        const float offset = load_half(block + 2) * float(mn);
        const uint8_t* qs = block + 16 + 32 * (sub / 2);
        const int shift = 4 * (sub & 1);
        DL_UNROLL
        for (int j = 0; j < 32; ++j) out[j] = scale * float((qs[j] >> shift) & 0x0F) - offset;
    }
};

// d, dmin (fp16) | scales[12] | qh[32] | qs[128]: q4_K plus a 5th bit, bit `sub` of qh[j].
struct WQ5_K {
    static constexpr GGMLType type = GGMLType::Q5_K;
    static constexpr int block_values = 256, block_bytes = 176;
    static constexpr bool plain = false;
    DL_HD static void dequant32(const uint8_t* block, int sub, float out[32]) {
        int sc, mn;
        k_scale_min(block + 4, sub, sc, mn);
        const float scale = load_half(block) * float(sc);
        const float offset = load_half(block + 2) * float(mn);
        const uint8_t* qh = block + 16;
        const uint8_t* qs = block + 48 + 32 * (sub / 2);
        const int shift = 4 * (sub & 1);
        DL_UNROLL
        for (int j = 0; j < 32; ++j) {
            const int q = ((qs[j] >> shift) & 0x0F) | ((qh[j] >> sub) & 1) << 4;
            out[j] = scale * float(q) - offset;
        }
    }
};

// ql[128] | qh[64] | scales[16] int8 | d (fp16): value = (d * scale[16-value sub-block]) * (q - 32),
// q 6 bits. Per half h (128 values) and quarter p = sub % 4 of it: the low 4 bits are the low
// (p < 2) or high (p >= 2) nibbles of ql[64h + 32 (p & 1) + j], the top 2 bits are bits 2p, 2p + 1
// of qh[32h + j].
struct WQ6_K {
    static constexpr GGMLType type = GGMLType::Q6_K;
    static constexpr int block_values = 256, block_bytes = 210;
    static constexpr bool plain = false;
    DL_HD static void dequant32(const uint8_t* block, int sub, float out[32]) {
        const int h = sub / 4, p = sub % 4;
        const uint8_t* ql = block + 64 * h + 32 * (p & 1);
        const uint8_t* qh = block + 128 + 32 * h;
        const int8_t* scales = reinterpret_cast<const int8_t*>(block + 192);
        const float d = load_half(block + 208);
        const float scale_lo = d * float(scales[2 * sub]), scale_hi = d * float(scales[2 * sub + 1]);
        const int ql_shift = p < 2 ? 0 : 4;
        DL_UNROLL
        for (int j = 0; j < 32; ++j) {
            const int q = ((ql[j] >> ql_shift) & 0x0F) | ((qh[j] >> (2 * p)) & 3) << 4;
            out[j] = (j < 16 ? scale_lo : scale_hi) * float(q - 32);
        }
    }
};

// ---- rows ------------------------------------------------------------------------------------

// Sub-block s (32 values: s*32 .. s*32+31) of a row.
template <class W>
DL_HD void dequant_sub(const uint8_t* row, int64_t s, float out[32]) {
    constexpr int subs = W::block_values / 32;
    W::dequant32(row + (s / subs) * W::block_bytes, int(s % subs), out);
}

// Row geometry: plain rows hold any number of values, block rows whole blocks.
template <class W>
constexpr bool valid_row_length(int64_t n) {
    return n > 0 && (W::plain || n % W::block_values == 0);
}
template <class W>
constexpr size_t row_bytes_of(int64_t n) {
    return W::plain ? size_t(n) * (W::block_bytes / 32) : size_t(n / W::block_values) * W::block_bytes;
}

// Host: n values of a row (the test hook's dequantizer).
template <class W>
inline void dequantize_row_host(const uint8_t* row, int64_t n, float* out) {
    const int64_t full = n / 32;
    for (int64_t s = 0; s < full; ++s) dequant_sub<W>(row, s, out + 32 * s);
    if constexpr (W::plain)
        for (int64_t i = full * 32; i < n; ++i) out[i] = W::value(row, i);
}

// ---- compile-time dispatch -------------------------------------------------------------------

template <class... W>
struct BlockList {};

// Every weight type the GPU kernels handle.
using GpuWeightBlockList = BlockList<WF32, WF16, WBF16, WQ4_0, WQ4_1, WQ5_0, WQ5_1, WQ8_0, WQ4_K, WQ5_K, WQ6_K>;

// Calls f(W{}) with the traits of `type`; false (f not called) when no GPU traits exist for it.
template <class F, class... W>
bool visit_block_list(GGMLType type, F&& f, BlockList<W...>) {
    bool found = false;
    ((!found && W::type == type ? (f(W{}), found = true) : false), ...);
    return found;
}

template <class F>
bool visit_weight_blocks(GGMLType type, F&& f) {
    return visit_block_list(type, f, GpuWeightBlockList{});
}

}  // namespace decollama::gpu
