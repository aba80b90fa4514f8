#include "model/ops.h"

#include <algorithm>
#include <cmath>

#include "quant/weight_types.h"

namespace decollama {

void rms_norm(const float* x, const float* w, int64_t n, float eps, float* out) {
    double sum_sq = 0.0;
    for (int64_t i = 0; i < n; ++i) sum_sq += double(x[i]) * x[i];
    const float inv_rms = float(1.0 / std::sqrt(sum_sq / double(n) + double(eps)));
    for (int64_t i = 0; i < n; ++i) out[i] = x[i] * inv_rms * w[i];
}

void add_in_place(float* x, const float* b, int64_t n) {
    for (int64_t i = 0; i < n; ++i) x[i] += b[i];
}

void silu_glu(const float* gate, const float* up, int64_t n, float* out) {
    for (int64_t i = 0; i < n; ++i) {
        const float g = gate[i];
        out[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
}

void gelu_tanh_glu(const float* gate, const float* up, int64_t n, float* out) {
    // 0.5 g (1 + tanh(u)) = g / (1 + exp(-2u)): one expf instead of tanhf (which costs an
    // expm1f and more); exp overflowing to inf for very negative g gives the right limit, 0.
    constexpr float kTwoSqrt2OverPi = 2.0f * 0.7978845608028654f;
    constexpr float kCubic = 0.044715f;
    for (int64_t i = 0; i < n; ++i) {
        const float g = gate[i];
        out[i] = g / (1.0f + std::exp(-kTwoSqrt2OverPi * (g + kCubic * g * g * g))) * up[i];
    }
}

void softcap(float* x, int64_t n, float cap) {
    const float inv_cap = 1.0f / cap;
    for (int64_t i = 0; i < n; ++i) x[i] = cap * std::tanh(x[i] * inv_cap);
}

double log_sum_exp(const float* x, int64_t n) {
    const float max = *std::max_element(x, x + n);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += double(std::exp(x[i] - max));
    return double(max) + std::log(sum);
}

void embed_tokens(const WeightView& token_embd, const int32_t* tokens, int64_t n_tokens, float scale,
                  float* out) {
    const WeightTypeTraits& t = weight_type(token_embd.type);
    const size_t row = row_bytes(t, token_embd.n_in);
    const auto* base = static_cast<const uint8_t*>(token_embd.data);
    for (int64_t i = 0; i < n_tokens; ++i) {
        float* dst = out + i * token_embd.n_in;
        t.dequantize_row(base + size_t(tokens[i]) * row, dst, token_embd.n_in);
        if (scale != 1.0f)
            for (int64_t j = 0; j < token_embd.n_in; ++j) dst[j] *= scale;
    }
}

}  // namespace decollama
