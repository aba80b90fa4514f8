// Q4_1: 32 values as 4-bit quants with an fp16 scale and an fp16 min, value = d * q + m.
// Byte j holds value j in its low nibble and value j + 16 in its high nibble.
#include <cmath>

#include "common/fp16.h"
#include "quant/block_structs.h"
#include "quant/scalar_kernels.h"
#include "quant/types/reference_rounding.h"

namespace decollama {

namespace {

// Codes 0..15 for scaled values in [0, 15]: trunc(v + 0.5), the reference rounding.
uint8_t quantize_nibble(float v) { return rounding::truncated_code(v + 0.5f, 15.0f); }

}  // namespace

void dequantize_row_q4_1(const void* src, float* dst, int64_t n) {
    const block_q4_1* b = static_cast<const block_q4_1*>(src);
    for (int64_t i = 0; i < n / QK4_1; ++i, dst += QK4_1) {
        const float d = fp16_to_fp32(b[i].d);
        const float m = fp16_to_fp32(b[i].m);
        for (int j = 0; j < QK4_1 / 2; ++j) {
            dst[j] = d * float(b[i].qs[j] & 0x0F) + m;
            dst[j + QK4_1 / 2] = d * float(b[i].qs[j] >> 4) + m;
        }
    }
}

void quantize_row_q4_1(const float* src, void* dst, int64_t n) {
    block_q4_1* b = static_cast<block_q4_1*>(dst);
    for (int64_t i = 0; i < n / QK4_1; ++i, src += QK4_1) {
        float min = src[0], max = src[0];
        for (int j = 1; j < QK4_1; ++j) {
            min = std::fmin(min, src[j]);
            max = std::fmax(max, src[j]);
        }
        const float d = (max - min) / 15.0f;
        const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = fp32_to_fp16(d);
        b[i].m = fp32_to_fp16(min);
        for (int j = 0; j < QK4_1 / 2; ++j)
            b[i].qs[j] = uint8_t(quantize_nibble((src[j] - min) * inverse) |
                                 (quantize_nibble((src[j + QK4_1 / 2] - min) * inverse) << 4));
    }
}

// Against Q8_1: sum(d_w*q_w + m_w)(d_a*q_a) = d_w*d_a*sum(q_w*q_a) + m_w*s_a with s_a = d_a*sum(q_a).
void vec_dot_q4_1_scalar(int64_t n, float* out, const void* w, const void* a) {
    const block_q4_1* x = static_cast<const block_q4_1*>(w);
    const block_q8_1* y = static_cast<const block_q8_1*>(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_1; ++i) {
        int32_t sumi = 0;
        for (int j = 0; j < QK4_1 / 2; ++j) {
            sumi += (x[i].qs[j] & 0x0F) * int32_t(y[i].qs[j]);
            sumi += (x[i].qs[j] >> 4) * int32_t(y[i].qs[j + QK4_1 / 2]);
        }
        sum += float(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d)) +
               fp16_to_fp32(x[i].m) * fp16_to_fp32(y[i].s);
    }
    *out = sum;
}

}  // namespace decollama
