// q8_0 KV format, llama.cpp's cache type of the same name: each token row is cut into
// 32-element blocks along head_dim, each an fp16 scale and 32 int8 quants (8.5 bits/element).
// Keys are scored by integer dots against the query quantized to q8_0.
#include "common/fp16.h"
#include "kv/kv_dot_scores.h"
#include "kv/kv_format.h"
#include "kv/kv_simd.h"
#include "quant/block_structs.h"
#include "quant/scalar_kernels.h"

namespace decollama {

namespace {

size_t block_bytes(int64_t head_dim) { return size_t(head_dim / QK8_0) * sizeof(block_q8_0); }

const block_q8_0* token_row(const uint8_t* stream, int64_t head_dim, int64_t t) {
    return reinterpret_cast<const block_q8_0*>(stream) + t * (head_dim / QK8_0);
}

void append(const float* rows, int64_t row_stride, int64_t n, uint8_t* stream, int64_t head_dim, int64_t t) {
    for (int64_t i = 0; i < n; ++i)
        quantize_row_q8_0(rows + i * row_stride, stream + size_t(t + i) * block_bytes(head_dim), head_dim);
}

void read(const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out) {
    dequantize_row_q8_0(token_row(stream, head_dim, t), out, n * head_dim);
}

size_t query_bytes(int64_t head_dim) { return block_bytes(head_dim); }

void prepare_query(const float* q, int64_t head_dim, CpuPath path, uint8_t* out) {
    activation_quantizer(GGMLType::Q8_0, path)(q, out, head_dim);
}

void accumulate_scalar(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out) {
    const block_q8_0* v = token_row(stream, head_dim, t);
    const int64_t n_blocks = head_dim / QK8_0;
    for (int64_t j = 0; j < n; ++j)
        for (int64_t b = 0; b < n_blocks; ++b, ++v) {
            const float w = p[j] * fp16_to_fp32(v->d);
            for (int i = 0; i < QK8_0; ++i) out[b * QK8_0 + i] += w * float(v->qs[i]);
        }
}

}  // namespace

extern const KVFormat kKVFormatQ8_0 = {
    "q8_0", /*dim_block=*/QK8_0, /*tokens_per_block=*/1, block_bytes, kv_plain_append<append>, kv_plain_read<read>,
    kv_plain_prepare_query<prepare_query>, query_bytes,
    {kv_plain_scores<dot_scores<vec_dot_q8_0_scalar, block_bytes>>, DECOLLAMA_KV_DOT_SCORES(q8_0, block_bytes)},
    {kv_plain_accumulate<accumulate_scalar>, DECOLLAMA_KV_SIMD_PLAIN(accumulate, kv_q8_0_accumulate)},
};

}  // namespace decollama
