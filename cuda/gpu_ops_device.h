// Per-element math of the row-wise forward-pass kernels (cuda/gpu_ops.cu), written once as DL_HD
// functions: the kernels run them on the GPU, and the host-side tests compile the same source with
// g++ and compare it with cpp/model/ops.cpp and rope.cpp.
//
// Every formula repeats the CPU one operation for operation. Where the CPU computes a*b + c, the
// product goes through mul_no_fma so that nvcc (fmad on by default) cannot fuse it: rms_norm and
// rope then round exactly like the CPU, and the activations differ from it only by the device
// expf / tanhf (at most 2 ulp each, CUDA programming guide) against glibc's.
#pragma once
#include <math.h>

#include <cstdint>

#include "device_common.h"
#include "model/hparams.h"

namespace decollama::gpu {

// a * b rounded on its own: never contracted into an FMA with a following add on the device. The
// host build has no FMA in baseline x86-64 code, so a plain product rounds the same way there.
DL_HD float mul_no_fma(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

// ---- RMSNorm ----------------------------------------------------------------------------------
// The CPU accumulates x^2 in double; a float's square is exact in double, so a parallel sum in
// any order differs from the serial one only by double roundings, far below float resolution.
DL_HD double square_as_double(float v) { return double(v) * double(v); }

// 1 / sqrt(mean(x^2) + eps) from the row's sum of squares, as cpp/model/ops.cpp rounds it.
DL_HD float rms_inv_from_sum_sq(double sum_sq, int64_t n, float eps) {
    return float(1.0 / sqrt(sum_sq / double(n) + double(eps)));
}

// One output of the norm: (x * inv_rms) * w, in the CPU's order.
DL_HD float rms_norm_value(float x, float inv_rms, float w) { return mul_no_fma(mul_no_fma(x, inv_rms), w); }

// ---- RoPE -------------------------------------------------------------------------------------
// Which two values of a head pair i (< n_rot / 2) rotates: Normal (2i, 2i + 1), NeoX
// (i, i + n_rot / 2); cos/sin index i for both.
struct RopePair {
    int64_t first;
    int64_t second;
};

DL_HD RopePair rope_pair(int64_t i, int64_t n_rot, RopeLayout layout) {
    if (layout == RopeLayout::Normal) return {2 * i, 2 * i + 1};
    return {i, i + n_rot / 2};
}

// (a, b) <- (a cos - b sin, a sin + b cos).
DL_HD void rope_rotate(float& a, float& b, float cos_v, float sin_v) {
    const float x0 = a, x1 = b;
    a = mul_no_fma(x0, cos_v) - mul_no_fma(x1, sin_v);
    b = mul_no_fma(x0, sin_v) + mul_no_fma(x1, cos_v);
}

// ---- gated FFN activations --------------------------------------------------------------------
// silu(g) * u = g / (1 + exp(-g)) * u.
DL_HD float silu_glu_value(float g, float u) { return g / (1.0f + expf(-g)) * u; }

// gelu_tanh(g) * u with 0.5 g (1 + tanh(c)) = g / (1 + exp(-2c)), c = sqrt(2/pi) (g + 0.044715 g^3):
// the CPU's one-expf form; exp overflowing to inf for very negative g gives the limit 0.
DL_HD float gelu_tanh_glu_value(float g, float u) {
    constexpr float kTwoSqrt2OverPi = 2.0f * 0.7978845608028654f;
    constexpr float kCubic = 0.044715f;
    const float cubic = mul_no_fma(mul_no_fma(mul_no_fma(kCubic, g), g), g);
    return g / (1.0f + expf(mul_no_fma(-kTwoSqrt2OverPi, g + cubic))) * u;
}

DL_HD float glu_value(float g, float u, FfnActivation act) {
    return act == FfnActivation::SiLU ? silu_glu_value(g, u) : gelu_tanh_glu_value(g, u);
}

// ---- logit soft-capping -----------------------------------------------------------------------
// cap * tanh(x * (1 / cap)); the caller computes inv_cap = 1.0f / cap once, as the CPU does.
DL_HD float softcap_value(float x, float cap, float inv_cap) { return cap * tanhf(x * inv_cap); }

}  // namespace decollama::gpu
