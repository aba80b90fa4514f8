// Scalar dequantize and dot shared by the "scale and min" K-quants (q4_K, q5_K): they differ only
// in how a super-block's 256 codes are unpacked, which each type passes in as Unpack.
//     value = (d * scale[s]) * q - (dmin * min[s])
#pragma once
#include <cstdint>

#include "common/fp16.h"
#include "quant/block_structs.h"
#include "quant/types/k_quant_scales.h"

namespace decollama {

template <typename Block, void (*Unpack)(const Block&, uint8_t*)>
void dequantize_row_k_scale_min(const void* src, float* dst, int64_t n) {
    const Block* b = static_cast<const Block*>(src);
    uint8_t codes[QK_K];
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_fp32(b[i].d);
        const float dmin = fp16_to_fp32(b[i].dmin);
        const KQuantScales s = unpack_k_quant_scales(b[i].scales);
        Unpack(b[i], codes);
        for (int sub = 0; sub < 8; ++sub) {
            const float scale = d * float(s.scale[sub]);
            const float offset = dmin * float(s.min[sub]);
            for (int j = 0; j < 32; ++j, ++dst) *dst = scale * float(codes[32 * sub + j]) - offset;
        }
    }
}

// Per super-block: d_a * (d * sum_s scale[s] * sum(q*q_a) - dmin * sum_s min[s] * sum(q_a)),
// where sum(q_a) of a sub-block is two bsums of the Q8_K activation.
template <typename Block, void (*Unpack)(const Block&, uint8_t*)>
void vec_dot_k_scale_min(int64_t n, float* out, const void* w, const void* a) {
    const Block* x = static_cast<const Block*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(a);
    uint8_t codes[QK_K];
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const KQuantScales s = unpack_k_quant_scales(x[i].scales);
        Unpack(x[i], codes);
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
