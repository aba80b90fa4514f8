// Q5_K: q4_K with a 5th bit per quant:
//     value = (d * scale[s]) * q - (dmin * min[s]),  q in 0..31.
// The low 4 bits are packed as in q4_K; bit s of qh[j] is the 5th bit of value j of
// sub-block s. The weights are quantized offline (no quantize_row).
#include "quant/block_structs.h"
#include "quant/scalar_kernels.h"
#include "quant/types/k_quant_scale_min.h"

namespace decollama {

namespace {

// The 256 codes (0..31) of a super-block in value order.
void unpack_codes(const block_q5_K& b, uint8_t codes[QK_K]) {
    for (int g = 0; g < QK_K / 64; ++g)
        for (int j = 0; j < 32; ++j) {
            const int lo_sub = 2 * g, hi_sub = 2 * g + 1;
            codes[64 * g + j] = uint8_t((b.qs[32 * g + j] & 0x0F) | ((b.qh[j] >> lo_sub) & 1) << 4);
            codes[64 * g + 32 + j] = uint8_t((b.qs[32 * g + j] >> 4) | ((b.qh[j] >> hi_sub) & 1) << 4);
        }
}

}  // namespace

void dequantize_row_q5_K(const void* src, float* dst, int64_t n) {
    dequantize_row_k_scale_min<block_q5_K, unpack_codes>(src, dst, n);
}

void vec_dot_q5_K_scalar(int64_t n, float* out, const void* w, const void* a) {
    vec_dot_k_scale_min<block_q5_K, unpack_codes>(n, out, w, a);
}

}  // namespace decollama
