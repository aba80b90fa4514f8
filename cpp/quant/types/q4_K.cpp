// Q4_K: super-blocks of 256 values = 8 sub-blocks of 32, each with a 6-bit scale and 6-bit min
// (k_quant_scales.h) under fp16 super-scales d and dmin:
//     value = (d * scale[s]) * q - (dmin * min[s]),  q in 0..15.
// The quants come in 4 groups of 32 bytes: group g holds sub-block 2g in its low nibbles and
// sub-block 2g + 1 in its high nibbles. The weights are quantized offline (no quantize_row).
#include "quant/block_structs.h"
#include "quant/scalar_kernels.h"
#include "quant/types/k_quant_scale_min.h"

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
    dequantize_row_k_scale_min<block_q4_K, unpack_codes>(src, dst, n);
}

void vec_dot_q4_K_scalar(int64_t n, float* out, const void* w, const void* a) {
    vec_dot_k_scale_min<block_q4_K, unpack_codes>(n, out, w, a);
}

}  // namespace decollama
