// Q4_K: super-blocks of 256 values = 8 sub-blocks of 32, each with a 6-bit scale and 6-bit min
// (k_quant_scales.h) under fp16 super-scales d and dmin:
//     value = (d * scale[s]) * q - (dmin * min[s]),  q in 0..15.
// The quants come in 4 groups of 32 bytes: group g holds sub-block 2g in its low nibbles and
// sub-block 2g + 1 in its high nibbles. The weights are quantized offline (no quantize_row).
#include "common/fp16.h"
#include "quant/block_structs.h"
#include "quant/scalar_kernels.h"
#include "quant/types/k_quant_scales.h"

namespace decollama {

namespace {

// The 256 codes (0..15) of a super-block in value order.
void unpack_codes(const block_q4_K& b, uint8_t codes[QK_K]) {
    for (int g = 0; g < QK_K / 64; ++g)
        for (int j = 0; j < 32; ++j) {
            codes[64 * g + j] = b.qs[32 * g + j] & 0x0F;
            codes[64 * g + 32 + j] = b.qs[32 * g + j] >> 4;
        }
}

}  // namespace

void dequantize_row_q4_K(const void* src, float* dst, int64_t n) {
    const block_q4_K* b = static_cast<const block_q4_K*>(src);
    uint8_t codes[QK_K];
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_fp32(b[i].d);
        const float dmin = fp16_to_fp32(b[i].dmin);
        const KQuantScales s = unpack_k_quant_scales(b[i].scales);
        unpack_codes(b[i], codes);
        for (int sub = 0; sub < 8; ++sub) {
            const float scale = d * float(s.scale[sub]);
            const float offset = dmin * float(s.min[sub]);
            for (int j = 0; j < 32; ++j, ++dst) *dst = scale * float(codes[32 * sub + j]) - offset;
        }
    }
}

// Per super-block: d_a * (d * sum_s scale[s] * sum(q*q_a) - dmin * sum_s min[s] * sum(q_a)),
// where sum(q_a) of a sub-block is two bsums of the Q8_K activation.
void vec_dot_q4_K_scalar(int64_t n, float* out, const void* w, const void* a) {
    const block_q4_K* x = static_cast<const block_q4_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(a);
    uint8_t codes[QK_K];
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const KQuantScales s = unpack_k_quant_scales(x[i].scales);
        unpack_codes(x[i], codes);
        int32_t scaled_dot = 0, min_term = 0;
        for (int sub = 0; sub < 8; ++sub) {
            int32_t dot = 0;
            for (int j = 0; j < 32; ++j) dot += codes[32 * sub + j] * int32_t(y[i].qs[32 * sub + j]);
            scaled_dot += s.scale[sub] * dot;
            min_term += s.min[sub] * (y[i].bsums[2 * sub] + y[i].bsums[2 * sub + 1]);
        }
        sum += y[i].d * fp16_to_fp32(x[i].d) * float(scaled_dot) -
               y[i].d * fp16_to_fp32(x[i].dmin) * float(min_term);
    }
    *out = sum;
}

}  // namespace decollama
