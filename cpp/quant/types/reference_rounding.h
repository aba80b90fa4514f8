// The rounding rules of ggml's reference quantizers (quantize_row_*_ref). Results must match
// them bit for bit, so every quantizer picks its scale and rounds its codes through these.
#pragma once
#include <cmath>
#include <cstdint>

namespace decollama::rounding {

// The value of largest magnitude, sign kept; the first one on ties (ggml and numpy argmax).
inline float signed_absmax(const float* x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; ++j)
        if (std::fabs(x[j]) > amax) {
            amax = std::fabs(x[j]);
            max = x[j];
        }
    return max;
}

// trunc(v) clamped to [0, max_code]: the unsigned codes of q4_0/q4_1/q5_0/q5_1, where the
// caller has already added the offset (+ 0.5 or + half the range + 0.5). NaN becomes 0.
inline uint8_t truncated_code(float v, float max_code) {
    return static_cast<uint8_t>(std::fmin(max_code, std::fmax(0.0f, std::trunc(v))));
}

// The int8 codes of q8_0/q8_1/q8_K, whose scale maps the block's extreme value to +-127:
// finite inputs never leave [-127, 127] after rounding; the clamp (NaN -> -127) only keeps
// non-finite input from an undefined float-to-int conversion.
inline int8_t clamp_to_int8_code(float rounded) {
    return static_cast<int8_t>(std::fmin(127.0f, std::fmax(-127.0f, rounded)));
}

// Round half away from zero (C roundf, gguf-py np_roundf), for q8_0/q8_1.
inline int8_t round_half_away(float v) { return clamp_to_int8_code(std::round(v)); }

// Round half to even (ggml's nearest_int; rint in the default FP environment), for q8_K.
inline int8_t round_half_even(float v) { return clamp_to_int8_code(std::nearbyint(v)); }

}  // namespace decollama::rounding
