// F32, F16 and BF16 weights: plain float rows; their dots take F32 activations as they are.
#include <cstring>

#include "common/fp16.h"
#include "quant/scalar_kernels.h"

namespace decollama {

namespace {

// Independent partial sums let the compiler keep several multiply-adds in flight (and use
// SSE lanes); the tail and the final tree reduction keep the result independent of n % kLanes
// up to rounding.
constexpr int kLanes = 16;

template <class LoadWeight>
float dot_with_f32(int64_t n, LoadWeight load_weight, const float* a) {
    float acc[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; ++l) acc[l] += load_weight(i + l) * a[i + l];
    float tail = 0.0f;
    for (; i < n; ++i) tail += load_weight(i) * a[i];
    for (int width = kLanes / 2; width > 0; width /= 2)
        for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
    return acc[0] + tail;
}

}  // namespace

// ---- F32 ------------------------------------------------------------------------------------

void dequantize_row_f32(const void* src, float* dst, int64_t n) {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
}

void quantize_row_f32(const float* src, void* dst, int64_t n) {
    std::memcpy(dst, src, size_t(n) * sizeof(float));
}

void vec_dot_f32_scalar(int64_t n, float* out, const void* w, const void* a) {
    const float* wf = static_cast<const float*>(w);
    *out = dot_with_f32(n, [wf](int64_t i) { return wf[i]; }, static_cast<const float*>(a));
}

// ---- F16 ------------------------------------------------------------------------------------

void dequantize_row_f16(const void* src, float* dst, int64_t n) {
    const uint16_t* h = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(h[i]);
}

void quantize_row_f16(const float* src, void* dst, int64_t n) {
    uint16_t* h = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_fp16(src[i]);
}

void vec_dot_f16_scalar(int64_t n, float* out, const void* w, const void* a) {
    const uint16_t* h = static_cast<const uint16_t*>(w);
    *out = dot_with_f32(n, [h](int64_t i) { return fp16_to_fp32(h[i]); }, static_cast<const float*>(a));
}

// ---- BF16 -----------------------------------------------------------------------------------

void dequantize_row_bf16(const void* src, float* dst, int64_t n) {
    const uint16_t* h = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(h[i]);
}

void quantize_row_bf16(const float* src, void* dst, int64_t n) {
    uint16_t* h = static_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_bf16(src[i]);
}

void vec_dot_bf16_scalar(int64_t n, float* out, const void* w, const void* a) {
    const uint16_t* h = static_cast<const uint16_t*>(w);
    *out = dot_with_f32(n, [h](int64_t i) { return bf16_to_fp32(h[i]); }, static_cast<const float*>(a));
}

}  // namespace decollama
