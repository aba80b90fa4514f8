// Q8_K: the activation format of the K-quant dots. Per 256 values: a float scale d, int8
// quants (value = d * q) and bsums, the sum of each 16 quants, so a weight's per-sub-block
// min costs one multiply instead of 16.
#include <cstring>

#include "quant/block_structs.h"
#include "quant/scalar_kernels.h"
#include "quant/types/reference_rounding.h"

namespace decollama {

void dequantize_row_q8_K(const void* src, float* dst, int64_t n) {
    const block_q8_K* b = static_cast<const block_q8_K*>(src);
    for (int64_t i = 0; i < n / QK_K; ++i, dst += QK_K)
        for (int j = 0; j < QK_K; ++j) dst[j] = b[i].d * float(b[i].qs[j]);
}

// ggml's reference: the value of largest magnitude maps to -127 (so q stays in [-127, 127]),
// codes round half to even, and d = 1 / inverse scale.
void quantize_row_q8_K(const float* src, void* dst, int64_t n) {
    block_q8_K* b = static_cast<block_q8_K*>(dst);
    for (int64_t i = 0; i < n / QK_K; ++i, src += QK_K) {
        const float max = rounding::signed_absmax(src, QK_K);
        if (max == 0.0f) {
            b[i].d = 0.0f;
            std::memset(b[i].qs, 0, sizeof(b[i].qs));
            std::memset(b[i].bsums, 0, sizeof(b[i].bsums));
            continue;
        }
        const float inverse = -127.0f / max;
        for (int j = 0; j < QK_K; ++j)
            b[i].qs[j] = rounding::round_half_even(inverse * src[j]);
        for (int g = 0; g < QK_K / 16; ++g) {
            int sum = 0;
            for (int j = 0; j < 16; ++j) sum += b[i].qs[16 * g + j];
            b[i].bsums[g] = int16_t(sum);
        }
        b[i].d = 1.0f / inverse;
    }
}

}  // namespace decollama
