// Rotary position embedding: per-pair frequencies fixed at load, cos/sin tables built once
// per batch and shared by every layer using the same frequency set.
#pragma once
#include <cstdint>
#include <vector>

#include "model/hparams.h"

namespace decollama {

class RopeFrequencies {
public:
    // freq_factors: n_rot/2 divisors of the frequencies (llama3 scaling), or empty.
    RopeFrequencies(const RopeParams& p, int64_t n_rot, const std::vector<float>& freq_factors);

    int64_t n_pairs() const { return int64_t(inv_freq_.size()); }

    // cos/sin[t * n_pairs + i] for positions pos0 + t, t in [0, n), YaRN magnitude included.
    void tables(int64_t pos0, int64_t n, float* cos, float* sin) const;

private:
    std::vector<double> inv_freq_;  // extrapolated (unscaled) angle per unit position
    std::vector<double> ramp_;      // YaRN: weight of the extrapolated angle per pair (0 without YaRN)
    double freq_scale_ = 1.0;
    double mscale_ = 1.0;
};

// Rotates the first n_rot values of one head in place with one position's cos/sin row.
void apply_rope(float* head, const float* cos, const float* sin, int64_t n_rot, RopeLayout layout);

}  // namespace decollama
