// Q8_0: 32 int8 quants and one fp16 scale per block, value = d * q. Weight type and the
// activation format of the symmetric 32-blocks (q4_0, q5_0, q8_0). Q8_1, the activation
// format of the blocks with a min (q4_1, q5_1), is the same block plus s = d * sum(q).
#include <cmath>

#include "common/fp16.h"
#include "quant/block_structs.h"
#include "quant/scalar_kernels.h"
#include "quant/types/reference_rounding.h"

namespace decollama {

namespace {

// The scale that maps the block's largest magnitude to 127, and its inverse (0 for a zero
// block). Same float operations as ggml's reference so the fp16 scale and quants match it.
struct SymmetricScale {
    float d, inverse;
};

static_assert(QK8_0 == QK8_1, "q8_0 and q8_1 share the block scale rule");

SymmetricScale symmetric_scale_127(const float* x) {
    float amax = 0.0f;
    for (int j = 0; j < QK8_0; ++j) amax = std::fmax(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    return {d, d != 0.0f ? 1.0f / d : 0.0f};
}

}  // namespace

// ---- Q8_0 -----------------------------------------------------------------------------------

void dequantize_row_q8_0(const void* src, float* dst, int64_t n) {
    const block_q8_0* b = static_cast<const block_q8_0*>(src);
    for (int64_t i = 0; i < n / QK8_0; ++i, dst += QK8_0) {
        const float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK8_0; ++j) dst[j] = float(b[i].qs[j]) * d;
    }
}

void quantize_row_q8_0(const float* src, void* dst, int64_t n) {
    block_q8_0* b = static_cast<block_q8_0*>(dst);
    for (int64_t i = 0; i < n / QK8_0; ++i, src += QK8_0) {
        const SymmetricScale s = symmetric_scale_127(src);
        b[i].d = fp32_to_fp16(s.d);
        for (int j = 0; j < QK8_0; ++j) b[i].qs[j] = rounding::round_half_away(src[j] * s.inverse);
    }
}

void vec_dot_q8_0_scalar(int64_t n, float* out, const void* w, const void* a) {
    const block_q8_0* x = static_cast<const block_q8_0*>(w);
    const block_q8_0* y = static_cast<const block_q8_0*>(a);
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK8_0; ++i) {
        int32_t sumi = 0;
        for (int j = 0; j < QK8_0; ++j) sumi += int32_t(x[i].qs[j]) * int32_t(y[i].qs[j]);
        sum += float(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d));
    }
    *out = sum;
}

// ---- Q8_1 (activations only) ------------------------------------------------------------------

void dequantize_row_q8_1(const void* src, float* dst, int64_t n) {
    const block_q8_1* b = static_cast<const block_q8_1*>(src);
    for (int64_t i = 0; i < n / QK8_1; ++i, dst += QK8_1) {
        const float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK8_1; ++j) dst[j] = float(b[i].qs[j]) * d;
    }
}

void quantize_row_q8_1(const float* src, void* dst, int64_t n) {
    block_q8_1* b = static_cast<block_q8_1*>(dst);
    for (int64_t i = 0; i < n / QK8_1; ++i, src += QK8_1) {
        const SymmetricScale s = symmetric_scale_127(src);
        int32_t sum = 0;
        for (int j = 0; j < QK8_1; ++j) {
            b[i].qs[j] = rounding::round_half_away(src[j] * s.inverse);
            sum += b[i].qs[j];
        }
        b[i].d = fp32_to_fp16(s.d);
        // The unrounded d, as ggml: s carries the block sum for the weights' min term.
        b[i].s = fp32_to_fp16(float(sum) * s.d);
    }
}

}  // namespace decollama
