// The 12 packed bytes of 6-bit sub-block scales and mins shared by q4_K and q5_K.
//
// Sub-blocks 0..3 keep their scale and min in the low 6 bits of bytes 0..3 and 4..7; sub-blocks
// 4..7 keep their low 4 bits in the nibbles of bytes 8..11 (scale low, min high) and their top
// 2 bits in the spare top bits of bytes 0..3 (scale) and 4..7 (min).
#pragma once
#include <cstdint>

#include "quant/block_structs.h"

namespace decollama {

struct KQuantScales {
    uint8_t scale[8];  // 0..63, multiplied by the super-block d
    uint8_t min[8];    // 0..63, multiplied by the super-block dmin
};

inline KQuantScales unpack_k_quant_scales(const uint8_t packed[K_SCALE_SIZE]) {
    KQuantScales s;
    for (int j = 0; j < 4; ++j) {
        s.scale[j] = packed[j] & 0x3F;
        s.min[j] = packed[j + 4] & 0x3F;
        s.scale[j + 4] = uint8_t((packed[j + 8] & 0x0F) | ((packed[j] >> 6) << 4));
        s.min[j + 4] = uint8_t((packed[j + 8] >> 4) | ((packed[j + 4] >> 6) << 4));
    }
    return s;
}

}  // namespace decollama
