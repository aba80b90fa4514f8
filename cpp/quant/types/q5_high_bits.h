// The 5th bit of each of the 32 quants of a q5_0 / q5_1 block: bit j of the little-endian
// 32-bit word qh[0..3] belongs to value j.
#pragma once
#include <cstdint>

namespace decollama {

inline uint32_t load_q5_high_bits(const uint8_t qh[4]) {
    return uint32_t(qh[0]) | uint32_t(qh[1]) << 8 | uint32_t(qh[2]) << 16 | uint32_t(qh[3]) << 24;
}

inline void store_q5_high_bits(uint32_t bits, uint8_t qh[4]) {
    for (int k = 0; k < 4; ++k) qh[k] = uint8_t(bits >> (8 * k));
}

}  // namespace decollama
