// f16 KV format: every token is head_dim IEEE halves (round to nearest even), 16 bits/element.
#include "common/fp16.h"
#include "kv/kv_format.h"
#include "kv/kv_simd.h"

namespace decollama {

namespace {

const uint16_t* token_row(const uint8_t* stream, int64_t head_dim, int64_t t) {
    return reinterpret_cast<const uint16_t*>(stream) + t * head_dim;
}

size_t block_bytes(int64_t head_dim) { return size_t(head_dim) * sizeof(uint16_t); }

void append(const float* rows, int64_t row_stride, int64_t n, uint8_t* stream, int64_t head_dim, int64_t t) {
    uint16_t* dst = reinterpret_cast<uint16_t*>(stream) + t * head_dim;
    for (int64_t i = 0; i < n; ++i, dst += head_dim)
        for (int64_t d = 0; d < head_dim; ++d) dst[d] = fp32_to_fp16(rows[i * row_stride + d]);
}

void read(const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out) {
    const uint16_t* src = token_row(stream, head_dim, t);
    for (int64_t i = 0; i < n * head_dim; ++i) out[i] = fp16_to_fp32(src[i]);
}

void scores_scalar(const void* query, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s) {
    const float* q = static_cast<const float*>(query);
    const uint16_t* k = token_row(stream, head_dim, t);
    for (int64_t j = 0; j < n; ++j, k += head_dim) {
        float sum = 0.0f;
        for (int64_t d = 0; d < head_dim; ++d) sum += q[d] * fp16_to_fp32(k[d]);
        s[j] = sum;
    }
}

void accumulate_scalar(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out) {
    const uint16_t* v = token_row(stream, head_dim, t);
    for (int64_t j = 0; j < n; ++j, v += head_dim)
        for (int64_t d = 0; d < head_dim; ++d) out[d] += p[j] * fp16_to_fp32(v[d]);
}

}  // namespace

extern const KVFormat kKVFormatF16 = {
    "f16", /*dim_block=*/1, /*tokens_per_block=*/1, block_bytes, kv_plain_append<append>, kv_plain_read<read>, nullptr, nullptr,
    {kv_plain_scores<scores_scalar>, DECOLLAMA_KV_SIMD_PLAIN(scores, kv_f16_scores)},
    {kv_plain_accumulate<accumulate_scalar>, DECOLLAMA_KV_SIMD_PLAIN(accumulate, kv_f16_accumulate)},
    /*n_sink=*/0, /*wants_query_energy=*/false, /*codebook_c=*/0,
    {kv_scores_multi_loop<kv_plain_scores<scores_scalar>>, DECOLLAMA_KV_SIMD_PLAIN(scores_multi, kv_f16_scores_multi)},
    {kv_accumulate_multi_loop<kv_plain_accumulate<accumulate_scalar>>,
     DECOLLAMA_KV_SIMD_PLAIN(accumulate_multi, kv_f16_accumulate_multi)},
};

}  // namespace decollama
