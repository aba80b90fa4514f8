// Q4_0: 32 values as 4-bit quants around 8 with one fp16 scale, value = d * (q - 8).
// Byte j holds value j in its low nibble and value j + 16 in its high nibble.
#include "common/fp16.h"
#include "quant/block_structs.h"
#include "quant/scalar_kernels.h"
#include "quant/types/reference_rounding.h"

namespace decollama {

namespace {

// Codes 0..15 for scaled values in [-8, 8]: trunc(v + 8.5), the reference rounding.
uint8_t quantize_nibble(float v) { return rounding::truncated_code(v + 8.5f, 15.0f); }

}  // namespace

void dequantize_row_q4_0(const void* src, float* dst, int64_t n) {
    const block_q4_0* b = static_cast<const block_q4_0*>(src);
    for (int64_t i = 0; i < n / QK4_0; ++i, dst += QK4_0) {
        const float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK4_0 / 2; ++j) {
            dst[j] = d * float((b[i].qs[j] & 0x0F) - 8);
            dst[j + QK4_0 / 2] = d * float((b[i].qs[j] >> 4) - 8);
        }
    }
}

void quantize_row_q4_0(const float* src, void* dst, int64_t n) {
    block_q4_0* b = static_cast<block_q4_0*>(dst);
    for (int64_t i = 0; i < n / QK4_0; ++i, src += QK4_0) {
        // The extreme value maps to -8 so the full signed range [-8, 7] is used.
        const float d = rounding::signed_absmax(src, QK4_0) / -8.0f;
        const float inverse = d != 0.0f ? 1.0f / d : 0.0f;
        b[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK4_0 / 2; ++j)
            b[i].qs[j] = uint8_t(quantize_nibble(src[j] * inverse) |
                                 (quantize_nibble(src[j + QK4_0 / 2] * inverse) << 4));
    }
}

void vec_dot_q4_0_scalar(int64_t n, float* out, const void* w, const void* a) {
    const block_q4_0* x = static_cast<const block_q4_0*>(w);
    const block_q8_0* y = static_cast<const block_q8_0*>(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK4_0; ++i) {
        int32_t sumi = 0;
        for (int j = 0; j < QK4_0 / 2; ++j) {
            sumi += ((x[i].qs[j] & 0x0F) - 8) * int32_t(y[i].qs[j]);
            sumi += ((x[i].qs[j] >> 4) - 8) * int32_t(y[i].qs[j + QK4_0 / 2]);
        }
        sum += float(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d));
    }
    *out = sum;
}

}  // namespace decollama
