// f32 KV format: every token is head_dim floats, stored exactly (32 bits/element). The
// reference the compressed formats are measured against.
#include <cstring>

#include "kv/kv_format.h"
#include "kv/kv_simd.h"

namespace decollama {

namespace {

const float* token_row(const uint8_t* stream, int64_t head_dim, int64_t t) {
    return reinterpret_cast<const float*>(stream) + t * head_dim;
}

size_t block_bytes(int64_t head_dim) { return size_t(head_dim) * sizeof(float); }

void append(const float* rows, int64_t row_stride, int64_t n, uint8_t* stream, int64_t head_dim, int64_t t) {
    for (int64_t i = 0; i < n; ++i)
        std::memcpy(stream + size_t(t + i) * block_bytes(head_dim), rows + i * row_stride, block_bytes(head_dim));
}

void read(const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out) {
    std::memcpy(out, token_row(stream, head_dim, t), size_t(n) * block_bytes(head_dim));
}

void scores_scalar(const void* query, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s) {
    const float* q = static_cast<const float*>(query);
    const float* k = token_row(stream, head_dim, t);
    for (int64_t j = 0; j < n; ++j, k += head_dim) {
        float sum = 0.0f;
        for (int64_t d = 0; d < head_dim; ++d) sum += q[d] * k[d];
        s[j] = sum;
    }
}

void accumulate_scalar(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out) {
    const float* v = token_row(stream, head_dim, t);
    for (int64_t j = 0; j < n; ++j, v += head_dim)
        for (int64_t d = 0; d < head_dim; ++d) out[d] += p[j] * v[d];
}

}  // namespace

extern const KVFormat kKVFormatF32 = {
    "f32", /*dim_block=*/1, /*tokens_per_block=*/1, block_bytes, kv_plain_append<append>, kv_plain_read<read>, nullptr, nullptr,
    {kv_plain_scores<scores_scalar>, DECOLLAMA_KV_SIMD_PLAIN(scores, kv_f32_scores)},
    {kv_plain_accumulate<accumulate_scalar>, DECOLLAMA_KV_SIMD_PLAIN(accumulate, kv_f32_accumulate)},
    /*n_sink=*/0, /*wants_query_energy=*/false, /*codebook_c=*/0,
    {kv_scores_multi_loop<kv_plain_scores<scores_scalar>>, DECOLLAMA_KV_SIMD_PLAIN(scores_multi, kv_f32_scores_multi)},
    {kv_accumulate_multi_loop<kv_plain_accumulate<accumulate_scalar>>,
     DECOLLAMA_KV_SIMD_PLAIN(accumulate_multi, kv_f32_accumulate_multi)},
};

}  // namespace decollama
