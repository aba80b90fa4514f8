// Per-token power-of-two scale of the activations fed to the fp16 tensor-core matmul
// (gpu_matmul.cu, prefill kernel). fp32 activations above 65504 (Gemma-style FFN-down inputs)
// would become inf in fp16; instead each token row t is multiplied by s_t = 2^-k before the
// conversion and its fp32 result by 1 / s_t = 2^k afterwards. Both are exact (powers of two),
// so a row that needs no scaling (s_t = 1) gives the same bits as without this, and a scaled row
// keeps every mantissa bit fp16 keeps (only values below 2^-14 of the scaled row, i.e. < m * 2^-28,
// fall into fp16 subnormals: negligible next to the row's largest term).
//
// Non-finite rows: the max skips NaN (a > m is false for NaN), so a NaN entry neither blocks nor
// drives the scale and stays NaN through scaling and conversion; a row holding +-inf has m = inf
// and gets s = 1: it is converted as before (inf stays inf), and its outputs are inf / NaN as the
// fp32 product would be.
//
// DL_HD: the kernel and the host-side tests (core.gpu_host_activation_scales) run this code.
#pragma once
#include <cstdint>

#include "device_common.h"

namespace decollama::gpu {

// Largest |x * s| the scaled activations reach: 2^14, a margin of 4x below fp16's 65504. Products
// with fp16 weights and their fp32 partial sums are then far from any overflow before the exact
// rescale by 1 / s.
constexpr float kActivationScaleBound = 16384.0f;  // 2^14
constexpr int kActivationScaleBoundLog2 = 14;

struct ActivationScale {
    float scale;    // s = 2^-k, k >= 0
    float inverse;  // 1 / s = 2^k, exact
};

// Running max |x| of a row: start from 0.0f; NaN entries are skipped (comparisons with NaN are
// false), +-inf makes it inf.
DL_HD float abs_max_update(float m, float v) {
    const float a = v < 0.0f ? -v : v;
    return a > m ? a : m;
}

// 2^e as a float for -126 <= e <= 127 (normal range), from the exponent bits.
DL_HD float pow2_float(int e) { return bits_to_float(uint32_t(e + 127) << 23); }

// The smallest k >= 0 with m * 2^-k <= 2^14, for m = max |x| of a row; 0 when m <= 2^14, when m is
// inf, or NaN (see above). At most 128 - 14 = 114 (m near FLT_MAX), so 2^-k and 2^k are normal.
DL_HD int activation_scale_exponent(float m) {
    if (!(m > kActivationScaleBound)) return 0;  // small, zero, subnormal, NaN
    const uint32_t b = float_to_bits(m);
    const int biased = int((b >> 23) & 0xFFu);
    if (biased == 0xFF) return 0;  // inf: leave the row as it is
    // m > 2^14 is normal: m = 1.f * 2^e with e = biased - 127, and ceil(log2 m) = e, or e + 1
    // when the mantissa is non-zero.
    const int e = biased - 127;
    const int ceil_log2 = e + ((b & 0x7FFFFFu) != 0u ? 1 : 0);
    return ceil_log2 - kActivationScaleBoundLog2;
}

DL_HD ActivationScale activation_scale(float m) {
    const int k = activation_scale_exponent(m);
    return {pow2_float(-k), pow2_float(k)};
}

}  // namespace decollama::gpu
