#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace decollama {

namespace {

// YaRN: the pair index at which a frequency completes n_rotations over the original context.
double yarn_corr_dim(int64_t n_rot, int64_t n_ctx_orig, double n_rotations, double base) {
    return double(n_rot) * std::log(double(n_ctx_orig) / (n_rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
}

}  // namespace

RopeFrequencies::RopeFrequencies(const RopeParams& p, int64_t n_rot, const std::vector<float>& freq_factors)
    : freq_scale_(p.freq_scale), mscale_(p.attn_factor) {
    const int64_t n_pairs = n_rot / 2;
    inv_freq_.resize(size_t(n_pairs));
    ramp_.assign(size_t(n_pairs), 0.0);
    for (int64_t i = 0; i < n_pairs; ++i) {
        inv_freq_[size_t(i)] = std::pow(p.freq_base, -2.0 * double(i) / double(n_rot));
        if (p.use_freq_factors && !freq_factors.empty()) inv_freq_[size_t(i)] /= double(freq_factors[size_t(i)]);
    }
    if (p.ext_factor > 0.0) {
        // Pairs rotating fast (below `low`) keep the extrapolated angle, slow ones (above
        // `high`) are interpolated, with a linear ramp between.
        const double low = std::max(0.0, std::floor(yarn_corr_dim(n_rot, p.n_ctx_orig, p.beta_fast, p.freq_base)));
        const double high =
            std::min(double(n_rot - 1), std::ceil(yarn_corr_dim(n_rot, p.n_ctx_orig, p.beta_slow, p.freq_base)));
        for (int64_t i = 0; i < n_pairs; ++i) {
            const double y = (double(i) - low) / std::max(0.001, high - low);
            ramp_[size_t(i)] = (1.0 - std::clamp(y, 0.0, 1.0)) * p.ext_factor;
        }
    }
}

void RopeFrequencies::tables(int64_t pos0, int64_t n, float* cos, float* sin) const {
    const int64_t n_pairs = this->n_pairs();
    for (int64_t t = 0; t < n; ++t) {
        const double pos = double(pos0 + t);
        for (int64_t i = 0; i < n_pairs; ++i) {
            const double extrapolated = pos * inv_freq_[size_t(i)];
            const double interpolated = extrapolated * freq_scale_;
            const double r = ramp_[size_t(i)];
            const double theta = interpolated * (1.0 - r) + extrapolated * r;
            cos[t * n_pairs + i] = float(std::cos(theta) * mscale_);
            sin[t * n_pairs + i] = float(std::sin(theta) * mscale_);
        }
    }
}

void apply_rope(float* head, const float* cos, const float* sin, int64_t n_rot, RopeLayout layout) {
    const int64_t n_pairs = n_rot / 2;
    // Normal pairs (2i, 2i+1); NeoX pairs (i, i + n_rot/2).
    const int64_t stride = layout == RopeLayout::Normal ? 2 : 1;
    const int64_t offset = layout == RopeLayout::Normal ? 1 : n_pairs;
    for (int64_t i = 0; i < n_pairs; ++i) {
        float& a = head[i * stride];
        float& b = head[i * stride + offset];
        const float x0 = a, x1 = b;
        a = x0 * cos[i] - x1 * sin[i];
        b = x0 * sin[i] + x1 * cos[i];
    }
}

}  // namespace decollama
