// Q5_1: 32 values as 5-bit quants with an fp16 scale and an fp16 min, value = d * q + m.
// The low 4 bits are packed as in q4_1 (value j low nibble, j + 16 high nibble of byte j);
// the 5th bits live in qh (q5_high_bits.h).
#include <cmath>

#include "common/fp16.h"
#include "quant/block_structs.h"
#include "quant/scalar_kernels.h"
#include "quant/types/q5_high_bits.h"
#include "quant/types/reference_rounding.h"

namespace decollama {

namespace {

// Codes 0..31 for scaled values in [0, 31]: trunc(v + 0.5), the reference rounding.
uint8_t quantize_code(float v) { return rounding::truncated_code(v + 0.5f, 31.0f); }

// The 5-bit codes (0..31) of value j (first half) and j + 16 (second half), j < 16.
inline int low_half_code(const block_q5_1& b, uint32_t high_bits, int j) {
    return (b.qs[j] & 0x0F) | int((high_bits >> j) & 1u) << 4;
}
inline int high_half_code(const block_q5_1& b, uint32_t high_bits, int j) {
    return (b.qs[j] >> 4) | int((high_bits >> (j + QK5_1 / 2)) & 1u) << 4;
}

}  // namespace

void dequantize_row_q5_1(const void* src, float* dst, int64_t n) {
    const block_q5_1* b = static_cast<const block_q5_1*>(src);
    for (int64_t i = 0; i < n / QK5_1; ++i, dst += QK5_1) {
        const float d = fp16_to_fp32(b[i].d);
        const float m = fp16_to_fp32(b[i].m);
        const uint32_t high_bits = load_q5_high_bits(b[i].qh);
        for (int j = 0; j < QK5_1 / 2; ++j) {
            dst[j] = d * float(low_half_code(b[i], high_bits, j)) + m;
            dst[j + QK5_1 / 2] = d * float(high_half_code(b[i], high_bits, j)) + m;
        }
    }
}

void quantize_row_q5_1(const float* src, void* dst, int64_t n) {
    block_q5_1* b = static_cast<block_q5_1*>(dst);
    for (int64_t i = 0; i < n / QK5_1; ++i, src += QK5_1) {
        float min = src[0], max = src[0];
        for (int j = 1; j < QK5_1; ++j) {
            min = std::fmin(min, src[j]);
            max = std::fmax(max, src[j]);
        }
        const float d = (max - min) / 31.0f;
        const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = fp32_to_fp16(d);
        b[i].m = fp32_to_fp16(min);
        uint32_t high_bits = 0;
        for (int j = 0; j < QK5_1 / 2; ++j) {
            const uint8_t lo = quantize_code((src[j] - min) * inverse);
            const uint8_t hi = quantize_code((src[j + QK5_1 / 2] - min) * inverse);
            b[i].qs[j] = uint8_t((lo & 0x0F) | (hi & 0x0F) << 4);
            high_bits |= uint32_t(lo >> 4) << j | uint32_t(hi >> 4) << (j + QK5_1 / 2);
        }
        store_q5_high_bits(high_bits, b[i].qh);
    }
}

// Against Q8_1: d_w*d_a*sum(q_w*q_a) + m_w*s_a, as for q4_1.
void vec_dot_q5_1_scalar(int64_t n, float* out, const void* w, const void* a) {
    const block_q5_1* x = static_cast<const block_q5_1*>(w);
    const block_q8_1* y = static_cast<const block_q8_1*>(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK5_1; ++i) {
        const uint32_t high_bits = load_q5_high_bits(x[i].qh);
        int32_t sumi = 0;
        for (int j = 0; j < QK5_1 / 2; ++j) {
            sumi += low_half_code(x[i], high_bits, j) * int32_t(y[i].qs[j]);
            sumi += high_half_code(x[i], high_bits, j) * int32_t(y[i].qs[j + QK5_1 / 2]);
        }
        sum += float(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d)) +
               fp16_to_fp32(x[i].m) * fp16_to_fp32(y[i].s);
    }
    *out = sum;
}

}  // namespace decollama
