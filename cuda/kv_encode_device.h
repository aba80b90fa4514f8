// The KV formats' encoders as DL_HD functions: the arithmetic the quantize-on-write kernels
// (cuda/gpu_kv_store.cu) run, compiled by g++ too so host tests check it bit-exactly against the
// CPU encoders (cpp/kv/kv_*.cpp; layouts and rounding rules in cpp/kv/README.md).
// Every operation rounds like the CPU code: products go through mul_rn (never fused into a
// multiply-add, whatever the compiler flags), divisions and square roots are IEEE round-to-nearest.
// One struct per format family:
//   KVEncodeF32 / KVEncodeF16    one value
//   KVEncodeQ8_0 / KVEncodeQ4_0  one 32-value block (llama.cpp's reference quantizers)
//   KVEncodeCQ<c>                one group of c channels: nearest of 256 centroids in the metric
//   KVEncodeDeco<bits, fitted>   a 256-token block: per-channel fit, then row by row transform,
//                                Walsh-Hadamard-64 and the row quantizer (2-bit clip search)
#pragma once
#include <cstdint>
#include <cstring>

#include "device_common.h"

#ifndef DL_UNROLL  // same definition as cuda/gpu_weight_blocks.h
#if defined(__CUDACC__)
#define DL_UNROLL _Pragma("unroll")
#else
#define DL_UNROLL
#endif
#endif

namespace decollama::gpu {

// ---- exactly rounded arithmetic ------------------------------------------------------------------

// a * b rounded to float: a product the compiler may not contract into a multiply-add with the sum
// it feeds (the CPU encoders round every product).
DL_HD float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    float p = a * b;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __asm__("" : "+x"(p));
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__("" : "+w"(p));
#endif
    return p;
#endif
}

DL_HD float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fdiv_rn(a, b);  // IEEE division even under --use_fast_math / -prec-div=false
#else
    return a / b;
#endif
}

DL_HD double ddiv_rn(double a, double b) {
#if defined(__CUDA_ARCH__)
    return __ddiv_rn(a, b);
#else
    return a / b;
#endif
}

DL_HD double dsqrt_rn(double a) {
#if defined(__CUDA_ARCH__)
    return __dsqrt_rn(a);
#else
    return __builtin_sqrt(a);
#endif
}

DL_HD float round_half_even(float v) {  // std::nearbyint in the default rounding mode
#if defined(__CUDA_ARCH__)
    return rintf(v);
#else
    return __builtin_nearbyintf(v);
#endif
}

DL_HD float round_half_away(float v) {  // std::round
#if defined(__CUDA_ARCH__)
    return roundf(v);
#else
    return __builtin_roundf(v);
#endif
}

DL_HD float trunc_f(float v) {
#if defined(__CUDA_ARCH__)
    return truncf(v);
#else
    return __builtin_truncf(v);
#endif
}

DL_HD float ceil_f(float v) {
#if defined(__CUDA_ARCH__)
    return ceilf(v);
#else
    return __builtin_ceilf(v);
#endif
}

// C fmax / fmin / fabs (a NaN operand yields the other one).
DL_HD float fmax_f(float a, float b) {
#if defined(__CUDA_ARCH__)
    return fmaxf(a, b);
#else
    return __builtin_fmaxf(a, b);
#endif
}

DL_HD float fmin_f(float a, float b) {
#if defined(__CUDA_ARCH__)
    return fminf(a, b);
#else
    return __builtin_fminf(a, b);
#endif
}

DL_HD float fabs_f(float v) {
#if defined(__CUDA_ARCH__)
    return fabsf(v);
#else
    return __builtin_fabsf(v);
#endif
}

DL_HD void store_u32(uint8_t* p, uint32_t v) {
    store_u16(p, uint16_t(v & 0xFFFF));
    store_u16(p + 2, uint16_t(v >> 16));
}

// ---- the formats, by name ------------------------------------------------------------------------

enum class KVEncodeKind { F32, F16, Q8_0, Q4_0, Deco4, Deco2, Had4, Had2, Cq4, Cq2, Cq1, Unknown };

// The encoder of a KVFormat row (its name); Unknown for a format without one here.
inline KVEncodeKind kv_encode_kind(const char* name) {
    struct Entry {
        const char* name;
        KVEncodeKind kind;
    };
    static const Entry kEntries[] = {
        {"f32", KVEncodeKind::F32},     {"f16", KVEncodeKind::F16},     {"q8_0", KVEncodeKind::Q8_0},
        {"q4_0", KVEncodeKind::Q4_0},   {"deco4", KVEncodeKind::Deco4}, {"deco2", KVEncodeKind::Deco2},
        {"had4", KVEncodeKind::Had4},   {"had2", KVEncodeKind::Had2},   {"cq4", KVEncodeKind::Cq4},
        {"cq2", KVEncodeKind::Cq2},     {"cq1", KVEncodeKind::Cq1},
    };
    for (const Entry& e : kEntries)
        if (std::strcmp(name, e.name) == 0) return e.kind;
    return KVEncodeKind::Unknown;
}

// ---- f32 / f16: one value ------------------------------------------------------------------------

struct KVEncodeF32 {
    static constexpr bool kIsBlockFormat = false;
    static constexpr int kBytesPerValue = 4;
    DL_HD static void encode(float x, uint8_t* out) { store_u32(out, float_to_bits(x)); }
};

struct KVEncodeF16 {
    static constexpr bool kIsBlockFormat = false;
    static constexpr int kBytesPerValue = 2;
    DL_HD static void encode(float x, uint8_t* out) { store_u16(out, float_to_half(x)); }
};

// ---- q8_0 / q4_0: one 32-value block (cpp/quant/types/q8_0.cpp, q4_0.cpp) ------------------------

constexpr int kQuantBlock = 32;

struct KVEncodeQ8_0 {
    static constexpr bool kIsBlockFormat = false;
    static constexpr int kBlockBytes = 2 + kQuantBlock;  // fp16 d, int8 qs[32]
    // d = amax / 127; q = clamp(round_half_away(x / d)), through the inverse like ggml's reference.
    DL_HD static void encode_block(const float* x, uint8_t* out) {
        float amax = 0.0f;
        for (int j = 0; j < kQuantBlock; ++j) amax = fmax_f(amax, fabs_f(x[j]));
        const float d = div_rn(amax, 127.0f);
        const float inverse = d != 0.0f ? div_rn(1.0f, d) : 0.0f;
        store_u16(out, float_to_half(d));
        for (int j = 0; j < kQuantBlock; ++j) {
            const float r = round_half_away(mul_rn(x[j], inverse));
            out[2 + j] = uint8_t(int8_t(fmin_f(127.0f, fmax_f(-127.0f, r))));
        }
    }
};

struct KVEncodeQ4_0 {
    static constexpr bool kIsBlockFormat = false;
    static constexpr int kBlockBytes = 2 + kQuantBlock / 2;  // fp16 d, nibbles j | j + 16
    // Codes 0..15: trunc(x / d + 8.5) clamped, d = (value of largest magnitude) / -8.
    DL_HD static uint8_t nibble(float x, float inverse) {
        return uint8_t(fmin_f(15.0f, fmax_f(0.0f, trunc_f(mul_rn(x, inverse) + 8.5f))));
    }
    DL_HD static void encode_block(const float* x, uint8_t* out) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < kQuantBlock; ++j)
            if (fabs_f(x[j]) > amax) {  // first of equal magnitudes
                amax = fabs_f(x[j]);
                max = x[j];
            }
        const float d = div_rn(max, -8.0f);
        const float inverse = d != 0.0f ? div_rn(1.0f, d) : 0.0f;
        store_u16(out, float_to_half(d));
        for (int j = 0; j < kQuantBlock / 2; ++j)
            out[2 + j] = uint8_t(nibble(x[j], inverse) | (nibble(x[j + kQuantBlock / 2], inverse) << 4));
    }
};

// ---- cq4 / cq2 / cq1: one group of C channels (cpp/kv/kv_cq.cpp) ---------------------------------

constexpr int kCqCodebookSize = 256;

template <int C>
struct KVEncodeCQ {
    static constexpr bool kIsBlockFormat = false;
    static constexpr int kChannels = C;
    // argmin_k sum_i m[i] * (x[i] - book[k][i])^2, summed over i in order in fp32, first k on ties.
    // x: the group's C values; book: its [256][C] centroids; metric: C weights, null = 1.
    DL_HD static uint8_t encode_group(const float* x, const float* book, const float* metric) {
        float m[C];
        DL_UNROLL
        for (int i = 0; i < C; ++i) m[i] = metric != nullptr ? metric[i] : 1.0f;
        float best = bits_to_float(0x7F800000u);  // +inf
        int best_k = 0;
        for (int k = 0; k < kCqCodebookSize; ++k) {
            const float* ck = book + k * C;
            float d = 0.0f;
            DL_UNROLL
            for (int i = 0; i < C; ++i) {
                const float t = x[i] - ck[i];
                d = d + mul_rn(m[i], mul_rn(t, t));
            }
            if (d < best) {
                best = d;
                best_k = k;
            }
        }
        return uint8_t(best_k);
    }
};

// ---- deco4 / deco2 / had4 / had2: a 256-token block (cpp/kv/kv_deco.cpp) --------------------------

constexpr int64_t kDecoBlockTokens = 256;  // tokens per block: one fit (mean, weights)
constexpr int kDecoGroupSize = 64;         // quant group and Walsh-Hadamard width
constexpr int64_t kDecoSinkRows = 1;       // deco*: position 0 stays fp16, not fitted

// Block layout: mu fp16[D] | w fp16[D] | 256 rows of (d fp16 | dm fp16 | sc u8[G] | mq u8[G] | codes).
DL_HD int64_t deco_groups_of(int64_t head_dim) { return head_dim / kDecoGroupSize; }
DL_HD int64_t deco_header_size(int64_t head_dim) { return head_dim * 4; }
DL_HD int64_t deco_row_size(int64_t head_dim, int bits) {
    return 4 + 2 * deco_groups_of(head_dim) + head_dim * bits / 8;
}
DL_HD int64_t deco_block_size(int64_t head_dim, int bits) {
    return deco_header_size(head_dim) + kDecoBlockTokens * deco_row_size(head_dim, bits);
}

// In-place orthonormal Walsh-Hadamard transform of 64 values (butterflies h = 1 .. 32), * 0.125.
// Butterfly k of level h pairs j = (k / h) * 2h + k % h with j + h, the CPU's order; the flat loops
// have constant trip counts, so nvcc unrolls them and keeps the 64 values in registers.
DL_HD void wht64_inplace(float* v) {
    DL_UNROLL
    for (int level = 0; level < 6; ++level) {
        const int h = 1 << level;
        DL_UNROLL
        for (int k = 0; k < kDecoGroupSize / 2; ++k) {
            const int j = ((k >> level) << (level + 1)) | (k & (h - 1));
            const float a = v[j], b = v[j + h];
            v[j] = a + b;
            v[j + h] = a - b;
        }
    }
    DL_UNROLL
    for (int j = 0; j < kDecoGroupSize; ++j) v[j] = mul_rn(v[j], 0.125f);
}

// 2-bit range clipping factors, tried in this order (first on ties).
DL_HD float deco_clip_factor(int k) {
    switch (k) {
        case 0: return 1.0f;
        case 1: return 0.9f;
        case 2: return 0.8f;
        case 3: return 0.7f;
        case 4: return 0.6f;
        default: return 0.5f;
    }
}
constexpr int kDecoNumClips = 6;

template <int bits, bool fitted>
struct KVEncodeDeco {
    static constexpr bool kIsBlockFormat = true;  // tokens_per_block 256
    static constexpr int kBits = bits;
    static constexpr int L = (1 << bits) - 1;
    static constexpr int kGroupCodeBytes = kDecoGroupSize * bits / 8;

    // Rows [0, skip) of the block starting at t0 are the sink: not fitted, zero bytes.
    DL_HD static int64_t skip_rows(int64_t t0) {
        if (!fitted || t0 >= kDecoSinkRows) return 0;
        const int64_t s = kDecoSinkRows - t0;
        return s < kDecoBlockTokens ? s : kDecoBlockTokens;
    }

    // ---- fit, one channel at a time; x(t) / e(t): row t's value / query energy of the channel ----

    // mu = fp16(sum_t double(x[t]) / n) over t in [skip, 256), the sum sequential.
    template <class Values>
    DL_HD static uint16_t channel_mean(const Values& x, int64_t skip) {
        if (!fitted) return 0;  // fp16 +0
        double acc = 0.0;
        for (int64_t t = skip; t < kDecoBlockTokens; ++t) acc += double(x(t));
        return float_to_half(float(ddiv_rn(acc, double(kDecoBlockTokens - skip))));
    }
    // u = sqrt(sqrt(sum_t double(e[t]))), the sum sequential.
    template <class Energies>
    DL_HD static double channel_u(const Energies& e, int64_t skip) {
        double acc = 0.0;
        for (int64_t t = skip; t < kDecoBlockTokens; ++t) acc += double(e(t));
        return dsqrt_rn(dsqrt_rn(acc));
    }
    // m = sum_c u[c] / D, the sum sequential in c; w = 1 everywhere unless m > 0.
    DL_HD static double mean_u(const double* u, int64_t head_dim) {
        double sum = 0.0;
        for (int64_t c = 0; c < head_dim; ++c) sum += u[c];
        return ddiv_rn(sum, double(head_dim));
    }
    // w = fp16(u / m) floored at 2^-14; 1 without query energy (m not > 0, values, had*).
    DL_HD static uint16_t channel_weight(double u, double m) {
        if (!fitted || !(m > 0.0)) return 0x3C00;  // fp16 1
        const uint16_t h = float_to_half(float(ddiv_rn(u, m)));
        return h < 0x0400 ? uint16_t(0x0400) : h;  // w >= 0: bit order is value order
    }

    // ---- one row: a = H((x - mu) * w) per 64 group, then the quantizer ----

    // Group g's transformed coefficients of row x (x(c): channel c's value).
    template <class Row>
    DL_HD static void group_coefficients(const Row& x, const uint16_t* mu, const uint16_t* w, int64_t g, float* a) {
        DL_UNROLL
        for (int i = 0; i < kDecoGroupSize; ++i) {
            const int64_t c = g * kDecoGroupSize + i;
            a[i] = mul_rn(x(c) - half_to_float(mu[c]), half_to_float(w[c]));
        }
        wht64_inplace(a);
    }

    // lo = min(0, min a), hi = max(0, max a): +0 unless a value is strictly below / above 0.
    DL_HD static void group_range(const float* a, float& lo, float& rng) {
        float l = 0.0f, h = 0.0f;
        DL_UNROLL
        for (int i = 0; i < kDecoGroupSize; ++i) {
            if (a[i] < l) l = a[i];
            if (a[i] > h) h = a[i];
        }
        lo = l;
        rng = h - l;
    }

    // clamp(rint((a + off) / step), 0, L); 0 when step is 0.
    DL_HD static int code_of(float a, float step, float off) {
        if (step == 0.0f) return 0;
        const float r = round_half_even(div_rn(a + off, step));
        return r <= 0.0f ? 0 : r >= float(L) ? L : int(r);
    }

    DL_HD static uint8_t clamp_u8(float v) { return v >= 255.0f ? uint8_t(255) : uint8_t(v); }

    // The group's scale and offset multipliers: 2-bit tries the clip factors, least squared error.
    DL_HD static void group_scales(const float* a, float lo, float rng, float d, float dm, uint8_t& sc, uint8_t& mq) {
        constexpr int n_clip = bits == 2 ? kDecoNumClips : 1;
        float best_err = 0.0f;
#if defined(__CUDACC__)
#pragma unroll 1
#endif
        for (int k = 0; k < n_clip; ++k) {
            const float r = deco_clip_factor(k);
            const float lo_r = mul_rn(lo, r), rng_r = mul_rn(rng, r);
            const float sf = d == 0.0f ? 0.0f : ceil_f(div_rn(div_rn(rng_r, float(L)), d));
            const float mf = dm == 0.0f ? 0.0f : ceil_f(div_rn(0.0f - lo_r, dm));
            const uint8_t sc_k = clamp_u8(sf), mq_k = clamp_u8(mf);
            if (n_clip == 1) {
                sc = sc_k;
                mq = mq_k;
                return;
            }
            const float step = mul_rn(d, float(sc_k)), off = mul_rn(dm, float(mq_k));
            float err = 0.0f;
            DL_UNROLL
            for (int i = 0; i < kDecoGroupSize; ++i) {
                const float e = (mul_rn(step, float(code_of(a[i], step, off))) - off) - a[i];
                err = err + mul_rn(e, e);
            }
            if (k == 0 || err < best_err) {
                best_err = err;
                sc = sc_k;
                mq = mq_k;
            }
        }
    }

    // Encodes one row (deco_row_size bytes at out) from its channel values x(c). Two passes over the
    // groups (the row scale needs every group's range; the coefficients are recomputed, identical),
    // so only one group's 64 coefficients are live at a time.
    template <class Row>
    DL_HD static void encode_row(const Row& x, const uint16_t* mu, const uint16_t* w, int64_t head_dim, uint8_t* out) {
        const int64_t G = deco_groups_of(head_dim);
        float a[kDecoGroupSize];
        float max_rng = 0.0f, max_neg = 0.0f;
        for (int64_t g = 0; g < G; ++g) {
            group_coefficients(x, mu, w, g, a);
            float lo, rng;
            group_range(a, lo, rng);
            if (rng > max_rng) max_rng = rng;
            const float neg = 0.0f - lo;
            if (neg > max_neg) max_neg = neg;
        }
        const uint16_t d16 = float_to_half(div_rn(max_rng, float(L * 255)));
        const uint16_t dm16 = float_to_half(div_rn(max_neg, 255.0f));
        const float d = half_to_float(d16), dm = half_to_float(dm16);
        store_u16(out, d16);
        store_u16(out + 2, dm16);
        uint8_t* sc = out + 4;
        uint8_t* mq = out + 4 + G;
        uint8_t* codes = out + 4 + 2 * G;
        for (int64_t g = 0; g < G; ++g) {
            group_coefficients(x, mu, w, g, a);
            float lo, rng;
            group_range(a, lo, rng);
            uint8_t sc_g = 0, mq_g = 0;
            group_scales(a, lo, rng, d, dm, sc_g, mq_g);
            sc[g] = sc_g;
            mq[g] = mq_g;
            const float step = mul_rn(d, float(sc_g)), off = mul_rn(dm, float(mq_g));
            uint8_t packed[kGroupCodeBytes];
            DL_UNROLL
            for (int i = 0; i < kGroupCodeBytes; ++i) packed[i] = 0;
            DL_UNROLL
            for (int i = 0; i < kDecoGroupSize; ++i) {
                const int code = code_of(a[i], step, off);
                if (bits == 4)
                    packed[i % 32] |= uint8_t(code << (4 * (i / 32)));  // i | i + 32
                else
                    packed[i % 16] |= uint8_t(code << (2 * (i / 16)));  // i | i+16 | i+32 | i+48
            }
            for (int i = 0; i < kGroupCodeBytes; ++i) codes[g * kGroupCodeBytes + i] = packed[i];
        }
    }
};

}  // namespace decollama::gpu
