// q4_0 KV format, llama.cpp's cache type of the same name: 32-element blocks along head_dim,
// an fp16 scale and 32 4-bit quants around 8 each (4.5 bits/element). Byte i of a block holds
// element i in its low nibble and element i + 16 in its high nibble.
#include "common/fp16.h"
#include "kv/kv_format.h"
#include "kv/kv_simd.h"
#include "quant/block_structs.h"
#include "quant/scalar_kernels.h"

namespace decollama {

namespace {

constexpr int kHalf = QK4_0 / 2;

size_t block_bytes(int64_t head_dim) { return size_t(head_dim / QK4_0) * sizeof(block_q4_0); }

const block_q4_0* token_row(const uint8_t* stream, int64_t head_dim, int64_t t) {
    return reinterpret_cast<const block_q4_0*>(stream) + t * (head_dim / QK4_0);
}

void append(const float* rows, int64_t row_stride, int64_t n, uint8_t* stream, int64_t head_dim, int64_t t) {
    for (int64_t i = 0; i < n; ++i)
        quantize_row_q4_0(rows + i * row_stride, stream + size_t(t + i) * block_bytes(head_dim), head_dim);
}

void read(const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out) {
    dequantize_row_q4_0(token_row(stream, head_dim, t), out, n * head_dim);
}

void scores_scalar(const float* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s) {
    const block_q4_0* k = token_row(stream, head_dim, t);
    const int64_t n_blocks = head_dim / QK4_0;
    for (int64_t j = 0; j < n; ++j) {
        float sum = 0.0f;
        for (int64_t b = 0; b < n_blocks; ++b, ++k) {
            const float* qb = q + b * QK4_0;
            float block_sum = 0.0f;
            for (int i = 0; i < kHalf; ++i)
                block_sum += qb[i] * float((k->qs[i] & 0x0F) - 8) + qb[i + kHalf] * float((k->qs[i] >> 4) - 8);
            sum += fp16_to_fp32(k->d) * block_sum;
        }
        s[j] = sum;
    }
}

void accumulate_scalar(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out) {
    const block_q4_0* v = token_row(stream, head_dim, t);
    const int64_t n_blocks = head_dim / QK4_0;
    for (int64_t j = 0; j < n; ++j)
        for (int64_t b = 0; b < n_blocks; ++b, ++v) {
            const float w = p[j] * fp16_to_fp32(v->d);
            float* ob = out + b * QK4_0;
            for (int i = 0; i < kHalf; ++i) {
                ob[i] += w * float((v->qs[i] & 0x0F) - 8);
                ob[i + kHalf] += w * float((v->qs[i] >> 4) - 8);
            }
        }
}

}  // namespace

extern const KVFormat kKVFormatQ4_0 = {
    "q4_0", /*dim_block=*/QK4_0, /*tokens_per_block=*/1, block_bytes, append, read,
    {scores_scalar, DECOLLAMA_KV_SIMD(kv_q4_0_scores)},
    {accumulate_scalar, DECOLLAMA_KV_SIMD(kv_q4_0_accumulate)},
};

}  // namespace decollama
