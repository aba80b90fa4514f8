// Block layouts of the GGML weight types, byte-compatible with ggml (and thus every GGUF).
// Sizes are pinned by static_assert: a layout change is a format break.
#pragma once
#include <cstddef>
#include <cstdint>

namespace decollama {

constexpr int QK4_0 = 32, QK4_1 = 32, QK5_0 = 32, QK5_1 = 32, QK8_0 = 32, QK8_1 = 32;
constexpr int QK_K = 256;          // super-block of the K-quants
constexpr int K_SCALE_SIZE = 12;   // 8 6-bit scales + 8 6-bit mins of Q4_K/Q5_K

struct block_q4_0 { uint16_t d; uint8_t qs[QK4_0 / 2]; };
struct block_q4_1 { uint16_t d, m; uint8_t qs[QK4_1 / 2]; };
struct block_q5_0 { uint16_t d; uint8_t qh[4]; uint8_t qs[QK5_0 / 2]; };
struct block_q5_1 { uint16_t d, m; uint8_t qh[4]; uint8_t qs[QK5_1 / 2]; };
struct block_q8_0 { uint16_t d; int8_t qs[QK8_0]; };
// Activation format for q4_1/q5_1: s = d * sum(qs) folds the weights' min into one multiply.
struct block_q8_1 { uint16_t d, s; int8_t qs[QK8_1]; };

struct block_q4_K {
    uint16_t d, dmin;              // super-block scales for the 6-bit scales and mins
    uint8_t scales[K_SCALE_SIZE];  // 8 sub-blocks of 32: 6-bit scale + 6-bit min each, packed
    uint8_t qs[QK_K / 2];          // 4-bit quants
};
struct block_q5_K {
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];          // 5th bit of each quant
    uint8_t qs[QK_K / 2];
};
struct block_q6_K {
    uint8_t ql[QK_K / 2];          // low 4 bits
    uint8_t qh[QK_K / 4];          // high 2 bits
    int8_t scales[QK_K / 16];      // 16 sub-blocks of 16, 8-bit scales
    uint16_t d;
};
// Activation format for the K-quants: float scale, and the sum of each 16 quants so the
// mins of Q4_K/Q5_K cost one multiply per 16 values.
struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
};

static_assert(sizeof(block_q4_0) == 18, "q4_0 block");
static_assert(sizeof(block_q4_1) == 20, "q4_1 block");
static_assert(sizeof(block_q5_0) == 22, "q5_0 block");
static_assert(sizeof(block_q5_1) == 24, "q5_1 block");
static_assert(sizeof(block_q8_0) == 34, "q8_0 block");
static_assert(sizeof(block_q8_1) == 36, "q8_1 block");
static_assert(sizeof(block_q4_K) == 144, "q4_K block");
static_assert(sizeof(block_q5_K) == 176, "q5_K block");
static_assert(sizeof(block_q6_K) == 210, "q6_K block");
static_assert(sizeof(block_q8_K) == 292, "q8_K block");

}  // namespace decollama
