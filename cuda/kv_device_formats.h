// The KV formats as the GPU attention kernels read them: one traits struct per format family
// with DL_HD functions (the CUDA kernels and the host-side test emulation run the same source).
// Every family answers, for one stream:
//   row(blocks, s, t)   the stored row of position t (inside the format's blocks)
//   value(row, s, e)    element e of that row in the format's score domain: the dequantized
//                       value (f16 / f32 / q8_0 / q4_0 / cq), or, for deco*, the transformed
//                       coefficient a^ = step_g * code - off_g of the block's Hadamard basis
// and kBlockBasis says whether rows live in a per-block basis (deco*: mean mu, channel weights
// w, Walsh-Hadamard transform per 64 channels; cpp/kv/README.md). For those the kernel
//   - prepares each query per block: q'' = H(q / w) * 0.125 (prepare_scale, then
//     wht64_butterfly stages) and the bias q . mu, so that q . x^ = q . mu + sum_e q''[e] a^[e];
//   - accumulates p * a^ per block and finalizes once per block:
//     out += H(sum p a^) * 0.125 / w + (sum p) mu.
// Sink and ring rows are fp16 in every format (Fp16Rows) and score with the fp32 query.
// Formats are grouped in families whose members differ by one runtime `variant` (element bytes,
// bits, channels per code), so the kernels are instantiated per (K family, V family) only.
// Adding a format = a row in kGpuKvFormats (an existing family) or one family struct + its case
// in with_kv_family.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "common/error.h"
#include "device_common.h"

namespace decollama::gpu {

// What the device functions need of one stream besides its bytes.
struct KvStreamGeometry {
    int head_dim = 0;
    int variant = 0;                   // the family's member: see kGpuKvFormats
    const float* codebook = nullptr;   // cq*: this head's [head_dim / c][256][c] fp32
};

// Sink and ring rows: head_dim IEEE halves per position.
struct Fp16Rows {
    static DL_HD const uint8_t* row(const uint8_t* base, int head_dim, int64_t r) {
        return base + size_t(r) * size_t(head_dim) * 2;
    }
    static DL_HD float value(const uint8_t* row, int e) {
        return half_to_float(reinterpret_cast<const uint16_t*>(row)[e]);
    }
};

// f16 (variant 2) and f32 (variant 4): rows of head_dim plain values.
struct DenseKv {
    static constexpr bool kBlockBasis = false;
    static DL_HD const uint8_t* row(const uint8_t* blocks, const KvStreamGeometry& s, int64_t t) {
        return blocks + size_t(t) * size_t(s.head_dim) * size_t(s.variant);
    }
    static DL_HD float value(const uint8_t* row, const KvStreamGeometry& s, int e) {
        return s.variant == 4 ? reinterpret_cast<const float*>(row)[e]
                              : half_to_float(reinterpret_cast<const uint16_t*>(row)[e]);
    }
};

// q8_0 (variant 8) and q4_0 (variant 4), llama.cpp's blocks of 32 along head_dim: fp16 scale,
// then 32 int8 quants (34 B) or 16 bytes of nibbles around 8, byte i = element i | i + 16 (18 B).
struct GgmlKv {
    static constexpr bool kBlockBasis = false;
    static DL_HD size_t block_bytes(int variant) { return variant == 8 ? 34 : 18; }
    static DL_HD const uint8_t* row(const uint8_t* blocks, const KvStreamGeometry& s, int64_t t) {
        return blocks + size_t(t) * size_t(s.head_dim / 32) * block_bytes(s.variant);
    }
    static DL_HD float value(const uint8_t* row, const KvStreamGeometry& s, int e) {
        const uint8_t* b = row + size_t(e / 32) * block_bytes(s.variant);
        const float d = load_half(b);
        const int i = e % 32;
        if (s.variant == 8) return d * float(int8_t(b[2 + i]));
        const uint8_t byte = b[2 + (i % 16)];
        return d * float((i < 16 ? (byte & 0x0F) : (byte >> 4)) - 8);
    }
};

// deco4 / had4 (variant 4), deco2 / had2 (variant 2): blocks of 256 tokens,
//   header mu fp16[D] | w fp16[D], then rows d fp16 | dm fp16 | sc u8[G] | mq u8[G] | codes,
// G = D / 64; 4-bit group: 32 bytes, byte i = element i | i + 32 << 4; 2-bit group: 16 bytes,
// byte i = elements i, i + 16, i + 32, i + 48 in bit pairs 0-1 .. 6-7.
struct DecoKv {
    static constexpr bool kBlockBasis = true;
    static constexpr int kTokens = 256;
    static constexpr int kGroup = 64;
    static DL_HD size_t row_bytes(int head_dim, int bits) {
        return 4 + 2 * size_t(head_dim / kGroup) + size_t(head_dim * bits / 8);
    }
    static DL_HD size_t block_bytes(int head_dim, int bits) {
        return size_t(head_dim) * 4 + size_t(kTokens) * row_bytes(head_dim, bits);
    }
    static DL_HD const uint8_t* block(const uint8_t* blocks, const KvStreamGeometry& s, int64_t t) {
        return blocks + size_t(t / kTokens) * block_bytes(s.head_dim, s.variant);
    }
    static DL_HD const uint8_t* row(const uint8_t* blocks, const KvStreamGeometry& s, int64_t t) {
        return block(blocks, s, t) + size_t(s.head_dim) * 4 + size_t(t % kTokens) * row_bytes(s.head_dim, s.variant);
    }
    static DL_HD float mean(const uint8_t* block, int e) { return half_to_float(reinterpret_cast<const uint16_t*>(block)[e]); }
    static DL_HD float weight(const uint8_t* block, int head_dim, int e) {
        return half_to_float(reinterpret_cast<const uint16_t*>(block)[head_dim + e]);
    }
    // a^ = step_g * code - off_g, step = d * sc[g], off = dm * mq[g].
    static DL_HD float value(const uint8_t* row, const KvStreamGeometry& s, int e) {
        const int G = s.head_dim / kGroup, g = e / kGroup, i = e % kGroup;
        const float d = load_half(row), dm = load_half(row + 2);
        const uint8_t* codes = row + 4 + 2 * G + g * (kGroup * s.variant / 8);
        const int code = s.variant == 4 ? (codes[i % 32] >> (4 * (i / 32))) & 15 : (codes[i % 16] >> (2 * (i / 16))) & 3;
        return d * float(row[4 + g]) * float(code) - dm * float(row[4 + G + g]);
    }
    // First step of the block's query: q / w (then the Hadamard stages, * 0.125 in the last).
    static DL_HD float prepare_scale(const uint8_t* block, int head_dim, int e, float q) {
        return q / weight(block, head_dim, e);
    }
    // out[e] += H(acc)[e] * 0.125 / w[e] + p_sum * mu[e]; y = the transformed accumulator.
    static DL_HD float finalize(const uint8_t* block, int head_dim, int e, float y, float p_sum) {
        return y / weight(block, head_dim, e) + p_sum * mean(block, e);
    }
};

// cq4 / cq2 / cq1 (variant c = 2 / 4 / 8 channels per 8-bit code): row = D / c codes; element e
// is C[g][code_g][e % c], g = e / c. Scores and values read the centroids directly (the same sum
// as the CPU's per-query table T[g][k] = q_g . C[g][k], summed per element instead of per group).
struct CqKv {
    static constexpr bool kBlockBasis = false;
    static DL_HD const uint8_t* row(const uint8_t* blocks, const KvStreamGeometry& s, int64_t t) {
        return blocks + size_t(t) * size_t(s.head_dim / s.variant);
    }
    static DL_HD float value(const uint8_t* row, const KvStreamGeometry& s, int e) {
        const int g = e / s.variant;
        return s.codebook[(size_t(g) * 256 + row[g]) * size_t(s.variant) + size_t(e % s.variant)];
    }
};

// One stage of the orthonormal Walsh-Hadamard transform of every 64 channels (cpp/kv/README.md
// order: h = 1, 2, ..., 32): butterfly `pair` in [0, D / 2) of stage h; the last stage applies
// the 0.125 normalisation. Pairs of a stage are disjoint, so threads may run them in parallel.
DL_HD void wht64_butterfly(float* y, int h, int pair) {
    const int j = (pair / h) * 2 * h + pair % h;
    const float a = y[j], b = y[j + h];
    const float scale = h == 32 ? 0.125f : 1.0f;
    y[j] = (a + b) * scale;
    y[j + h] = (a - b) * scale;
}

// ---- the format table ------------------------------------------------------------------------

enum class GpuKvFamily { Dense, Ggml, Deco, Cq };

struct GpuKvFormatRow {
    const char* name;   // the CPU row's name (kv_format.cpp)
    GpuKvFamily family;
    int variant;
};

inline constexpr GpuKvFormatRow kGpuKvFormats[] = {
    {"f32", GpuKvFamily::Dense, 4},  {"f16", GpuKvFamily::Dense, 2}, {"q8_0", GpuKvFamily::Ggml, 8},
    {"q4_0", GpuKvFamily::Ggml, 4},  {"deco4", GpuKvFamily::Deco, 4}, {"deco2", GpuKvFamily::Deco, 2},
    {"had4", GpuKvFamily::Deco, 4},  {"had2", GpuKvFamily::Deco, 2}, {"cq4", GpuKvFamily::Cq, 2},
    {"cq2", GpuKvFamily::Cq, 4},     {"cq1", GpuKvFamily::Cq, 8},
};

// The GPU row of a CPU format name; InvalidArgument naming it when the GPU cannot read it.
inline const GpuKvFormatRow& gpu_kv_format(const std::string& name) {
    for (const GpuKvFormatRow& r : kGpuKvFormats)
        if (name == r.name) return r;
    throw InvalidArgument("KV cache format '" + name + "' is not supported by the GPU attention");
}

// Calls fn(Family{}) with the family's traits struct (compile-time dispatch).
template <class Fn>
decltype(auto) with_kv_family(GpuKvFamily family, Fn&& fn) {
    switch (family) {
        case GpuKvFamily::Dense: return fn(DenseKv{});
        case GpuKvFamily::Ggml: return fn(GgmlKv{});
        case GpuKvFamily::Deco: return fn(DecoKv{});
        case GpuKvFamily::Cq: break;
    }
    return fn(CqKv{});
}

}  // namespace decollama::gpu
