// Q6_K: super-blocks of 256 values = 16 sub-blocks of 16, each with an int8 scale under an
// fp16 super-scale d:  value = (d * scale[s]) * (q - 32),  q in 0..63.
// Layout, per half h of 128 values (ql[64h..], qh[32h..]), value r of the half (r < 128):
//   low 4 bits: ql[64h + r % 64], low nibble for r < 64, high nibble otherwise;
//   high 2 bits: bits 2*(r / 32) .. +1 of qh[32h + r % 32].
// The weights are quantized offline (no quantize_row).
#include "common/fp16.h"
#include "quant/block_structs.h"
#include "quant/scalar_kernels.h"

namespace decollama {

namespace {

// The 256 signed codes (-32..31) of a super-block in value order.
void unpack_codes(const block_q6_K& b, int8_t codes[QK_K]) {
    for (int h = 0; h < 2; ++h) {
        const uint8_t* ql = b.ql + 64 * h;
        const uint8_t* qh = b.qh + 32 * h;
        int8_t* c = codes + 128 * h;
        for (int j = 0; j < 32; ++j) {
            c[j] = int8_t(((ql[j] & 0x0F) | ((qh[j] >> 0) & 3) << 4) - 32);
            c[j + 32] = int8_t(((ql[j + 32] & 0x0F) | ((qh[j] >> 2) & 3) << 4) - 32);
            c[j + 64] = int8_t(((ql[j] >> 4) | ((qh[j] >> 4) & 3) << 4) - 32);
            c[j + 96] = int8_t(((ql[j + 32] >> 4) | ((qh[j] >> 6) & 3) << 4) - 32);
        }
    }
}

}  // namespace

void dequantize_row_q6_K(const void* src, float* dst, int64_t n) {
    const block_q6_K* b = static_cast<const block_q6_K*>(src);
    int8_t codes[QK_K];
    for (int64_t i = 0; i < n / QK_K; ++i) {
        const float d = fp16_to_fp32(b[i].d);
        unpack_codes(b[i], codes);
        for (int sub = 0; sub < QK_K / 16; ++sub) {
            const float scale = d * float(b[i].scales[sub]);
            for (int j = 0; j < 16; ++j, ++dst) *dst = scale * float(codes[16 * sub + j]);
        }
    }
}

void vec_dot_q6_K_scalar(int64_t n, float* out, const void* w, const void* a) {
    const block_q6_K* x = static_cast<const block_q6_K*>(w);
    const block_q8_K* y = static_cast<const block_q8_K*>(a);
    int8_t codes[QK_K];
    float sum = 0.0f;
    for (int64_t i = 0; i < n / QK_K; ++i) {
        unpack_codes(x[i], codes);
        int32_t scaled_dot = 0;
        for (int sub = 0; sub < QK_K / 16; ++sub) {
            int32_t dot = 0;
            for (int j = 0; j < 16; ++j) dot += int32_t(codes[16 * sub + j]) * int32_t(y[i].qs[16 * sub + j]);
            scaled_dot += int32_t(x[i].scales[sub]) * dot;
        }
        sum += y[i].d * fp16_to_fp32(x[i].d) * float(scaled_dot);
    }
    *out = sum;
}

}  // namespace decollama
