// The KV-cache format traits table: one row per storage format of cached keys or values.
//
// The cache keeps, per layer and KV head, one "stream" for K and one for V: the tokens of that
// head in position order, laid out as the format decides. Attention touches a stream only
// through the row's fused kernels, which read the stored blocks directly (no fp32 copy of the
// cache):
//   scores     s[j]  = q · k[t + j]              for a tile of keys
//   accumulate out  += sum_j p[j] * v[t + j]     for a tile of values
// Before scoring, a format may turn each query into its own representation (prepare_query),
// once per query head and attention task: int8 blocks for integer dots against q8_0 / q4_0
// keys, a query rotated into a fitted basis, a table of query-centroid products...
//
// Kernels take absolute token ranges. A format may group tokens (tokens_per_block > 1, e.g.
// per-channel scales over 32 tokens): a range may then start or end inside a block (sliding
// windows, the newest tokens, appends of one token), but never crosses a multiple of
// kKVTileTokens, which every tokens_per_block divides. append may rewrite positions written
// before (after a truncate). Adding a format = one kv_<name>.cpp (+ SIMD kernels in
// kv_avx2.cpp / kv_avx512.cpp) and one row in kv_format.cpp.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/cpu_features.h"

namespace decollama {

// Keys / values per attention tile.
constexpr int64_t kKVTileTokens = 64;

// Stores n rows (row i at rows + i * row_stride) as tokens [t, t + n) of a stream.
using KVAppendFn = void (*)(const float* rows, int64_t row_stride, int64_t n, uint8_t* stream, int64_t head_dim,
                            int64_t t);
// Decodes tokens [t, t + n) of a stream into out (n rows of head_dim): tests and inspection.
using KVReadFn = void (*)(const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out);
// Writes what scores() reads for query q (fp32, softmax scale included).
using KVPrepareQueryFn = void (*)(const float* q, int64_t head_dim, CpuPath path, uint8_t* out);
// s[j] = q · k[t + j] for j < n; q as prepare_query left it, or the fp32 query without one.
using KVScoresFn = void (*)(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,
                            float* s);
// out[d] += sum_j p[j] * v[t + j][d] for j < n.
using KVAccumulateFn = void (*)(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,
                                float* out);

struct KVFormat {
    const char* name;
    int64_t dim_block;         // head_dim must be a multiple of this (quant block along head_dim)
    int64_t tokens_per_block;  // storage granularity along tokens; divides kKVTileTokens
    // Bytes of tokens_per_block tokens of one head; even, so streams packed back to back keep
    // their fp16 fields 2-byte aligned.
    size_t (*block_bytes)(int64_t head_dim);
    KVAppendFn append;
    KVReadFn read;
    KVPrepareQueryFn prepare_query;           // nullptr: scores() reads the fp32 query
    size_t (*query_bytes)(int64_t head_dim);  // bytes prepare_query writes
    KVScoresFn scores[kNumCpuPaths];          // per CpuPath; null falls back to a lower path
    KVAccumulateFn accumulate[kNumCpuPaths];
};

// Row by name, nullptr when unknown.
const KVFormat* find_kv_format(const std::string& name);
// Row by name; InvalidArgument listing the valid names when unknown.
const KVFormat& kv_format(const std::string& name);
std::vector<std::string> kv_format_names();

// Bytes of a stream holding n tokens (whole blocks).
size_t kv_stream_bytes(const KVFormat& f, int64_t head_dim, int64_t n_tokens);
// Bytes of the query scores() reads (prepared, or fp32).
size_t kv_query_bytes(const KVFormat& f, int64_t head_dim);
// Storage bits per cached element.
double kv_bits_per_element(const KVFormat& f, int64_t head_dim);
// The kernels for a path, falling back to lower paths where a SIMD kernel is missing.
KVScoresFn kv_scores_for(const KVFormat& f, CpuPath path);
KVAccumulateFn kv_accumulate_for(const KVFormat& f, CpuPath path);

}  // namespace decollama
