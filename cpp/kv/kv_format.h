// The KV-cache format traits table: one row per storage format of cached keys or values.
//
// The cache keeps, per layer and KV head, one "stream" for K and one for V: the tokens of that
// head in position order, laid out as the format decides. Attention touches a stream only
// through the row's fused kernels, which read the stored blocks directly (no fp32 copy of the
// cache):
//   scores     s[j]  = q · k[t + j]              for a tile of keys
//   accumulate out  += sum_j p[j] * v[t + j]     for a tile of values
// and, optionally, the same for all query heads of a KV head in one call (scores_multi /
// accumulate_multi: each key unpacked once for the heads; without them attention loops the
// single-query kernels over the heads).
// Before scoring, a format may turn each query into its own representation (prepare_query),
// once per query head and attention task: int8 blocks for integer dots against q8_0 / q4_0
// keys, a query rotated into a fitted basis, a table of query-centroid products...
//
// Kernels take absolute token ranges inside one kKVTileTokens tile. A format may group tokens
// (tokens_per_block > 1: deco* fits a basis per 256 tokens); the cache then hands it whole
// blocks and keeps the newest rows in its fp16 ring until their block fills (kv_cache.h).
// append may rewrite positions written before (after a truncate). Adding a format = one
// kv_<name>.cpp (+ SIMD kernels in kv_avx2.cpp / kv_avx512.cpp) and one row in kv_format.cpp.
// Layouts: cpp/kv/README.md.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/cpu_features.h"

namespace decollama {

enum class KVKind { K = 0, V = 1 };

// Keys / values per attention tile.
constexpr int64_t kKVTileTokens = 64;

// Per-stream constants a format may read (model data, not per-token storage): the CQ codebook
// of this (layer, K or V, KV head) as [head_dim / c][256][c] fp32, and its encode metric
// [head_dim]. Null members for formats without one. codebook_t: optional transposed copy of
// the codebook, [head_dim / c][c][256] (KVCodebooks keeps one), which the CQ encoder and query
// tables read with SIMD across centroids; when null they transpose a copy per call.
struct KVStreamConsts {
    const float* codebook = nullptr;
    const float* metric = nullptr;
    const float* codebook_t = nullptr;
};

// Stores n rows (row i at rows + i * row_stride) as tokens [t, t + n) of a stream. For
// formats with tokens_per_block S > 1, t and n are multiples of S (whole blocks, rows
// fp16-rounded by the cache); rows below the format's n_sink are not to be fitted.
// energy: per row, per channel, the query energy of that position (see kv_cache.h), row i at
// energy + i * head_dim; null for values or formats that do not want it.
using KVAppendFn = void (*)(const float* rows, int64_t row_stride, int64_t n, uint8_t* stream, int64_t head_dim,
                            int64_t t, const float* energy, const KVStreamConsts& consts);
// Decodes tokens [t, t + n) of a stream into out (n rows of head_dim): tests and inspection.
using KVReadFn = void (*)(const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out,
                          const KVStreamConsts& consts);
// Writes what scores() reads for query q (fp32, softmax scale included).
using KVPrepareQueryFn = void (*)(const float* q, int64_t head_dim, CpuPath path, uint8_t* out,
                                  const KVStreamConsts& consts);
// s[j] = q · k[t + j] for j < n; q as prepare_query left it, or the fp32 query without one.
// [t, t + n) lies inside one kKVTileTokens tile.
using KVScoresFn = void (*)(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s,
                            const KVStreamConsts& consts);
// out[d] += sum_j p[j] * v[t + j][d] for j < n.
using KVAccumulateFn = void (*)(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,
                                float* out, const KVStreamConsts& consts);
// Several query heads on the same keys (the query heads of one KV head, GQA): what n_q calls of
// the single-query kernels compute, with every key unpacked / converted once for all of them.
//   scores:     s[h * s_stride + j] = q_h · k[t + j], q_h at (const uint8_t*)q + h * q_stride
//               (as prepare_query left it, or fp32), for h < n_q, j < n
//   accumulate: out[h * out_stride + d] += sum_j p[h * p_stride + j] * v[t + j][d]
// The SIMD ones keep each head's arithmetic in the single kernel's order (equal results).
using KVScoresMultiFn = void (*)(const void* q, size_t q_stride, int64_t n_q, const uint8_t* stream, int64_t head_dim,
                                 int64_t t, int64_t n, float* s, int64_t s_stride, const KVStreamConsts& consts);
using KVAccumulateMultiFn = void (*)(const float* p, int64_t p_stride, int64_t n_q, const uint8_t* stream,
                                     int64_t head_dim, int64_t t, int64_t n, float* out, int64_t out_stride,
                                     const KVStreamConsts& consts);

struct KVFormat {
    const char* name;
    int64_t dim_block;         // head_dim must be a multiple of this (quant block along head_dim)
    int64_t tokens_per_block;  // storage granularity along tokens; a multiple or divisor of kKVTileTokens
    // Bytes of tokens_per_block tokens of one head; even, so streams packed back to back keep
    // their fp16 fields 2-byte aligned.
    size_t (*block_bytes)(int64_t head_dim);
    KVAppendFn append;
    KVReadFn read;
    KVPrepareQueryFn prepare_query;           // nullptr: scores() reads the fp32 query
    size_t (*query_bytes)(int64_t head_dim);  // bytes prepare_query writes
    KVScoresFn scores[kNumCpuPaths];          // per CpuPath; null falls back to a lower path
    KVAccumulateFn accumulate[kNumCpuPaths];
    int64_t n_sink = 0;               // first positions the cache keeps in fp16 (attention sinks)
    bool wants_query_energy = false;  // keys are fitted to the queries' per-channel energy
    int64_t codebook_c = 0;           // CQ: channels per code (codebook required); 0: none
    // Optional multi-query kernels per CpuPath (null: attention loops the single-query ones). A
    // path uses one when it is not below the path its single kernel comes from (kv_*_multi_for).
    KVScoresMultiFn scores_multi[kNumCpuPaths] = {};
    KVAccumulateMultiFn accumulate_multi[kNumCpuPaths] = {};
};

// Adapters for formats without per-stream constants or query energy: their kernels keep the
// short signatures and are wrapped into the table's.
using KVPlainScoresFn = void (*)(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,
                                 float* s);
using KVPlainAccumulateFn = void (*)(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n,
                                     float* out);
template <void (*fn)(const float*, int64_t, int64_t, uint8_t*, int64_t, int64_t)>
void kv_plain_append(const float* rows, int64_t row_stride, int64_t n, uint8_t* stream, int64_t head_dim, int64_t t,
                     const float*, const KVStreamConsts&) {
    fn(rows, row_stride, n, stream, head_dim, t);
}
template <void (*fn)(const uint8_t*, int64_t, int64_t, int64_t, float*)>
void kv_plain_read(const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out, const KVStreamConsts&) {
    fn(stream, head_dim, t, n, out);
}
template <void (*fn)(const float*, int64_t, CpuPath, uint8_t*)>
void kv_plain_prepare_query(const float* q, int64_t head_dim, CpuPath path, uint8_t* out, const KVStreamConsts&) {
    fn(q, head_dim, path, out);
}
template <KVPlainScoresFn fn>
void kv_plain_scores(const void* q, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* s,
                     const KVStreamConsts&) {
    fn(q, stream, head_dim, t, n, s);
}
template <KVPlainAccumulateFn fn>
void kv_plain_accumulate(const float* p, const uint8_t* stream, int64_t head_dim, int64_t t, int64_t n, float* out,
                         const KVStreamConsts&) {
    fn(p, stream, head_dim, t, n, out);
}
using KVPlainScoresMultiFn = void (*)(const void* q, size_t q_stride, int64_t n_q, const uint8_t* stream,
                                      int64_t head_dim, int64_t t, int64_t n, float* s, int64_t s_stride);
using KVPlainAccumulateMultiFn = void (*)(const float* p, int64_t p_stride, int64_t n_q, const uint8_t* stream,
                                          int64_t head_dim, int64_t t, int64_t n, float* out, int64_t out_stride);
template <KVPlainScoresMultiFn fn>
void kv_plain_scores_multi(const void* q, size_t q_stride, int64_t n_q, const uint8_t* stream, int64_t head_dim,
                           int64_t t, int64_t n, float* s, int64_t s_stride, const KVStreamConsts&) {
    fn(q, q_stride, n_q, stream, head_dim, t, n, s, s_stride);
}
template <KVPlainAccumulateMultiFn fn>
void kv_plain_accumulate_multi(const float* p, int64_t p_stride, int64_t n_q, const uint8_t* stream, int64_t head_dim,
                               int64_t t, int64_t n, float* out, int64_t out_stride, const KVStreamConsts&) {
    fn(p, p_stride, n_q, stream, head_dim, t, n, out, out_stride);
}

// Multi-query kernels that are literally loops over a single-query kernel (the scalar slots:
// the reference the SIMD multi kernels are tested against).
template <KVScoresFn fn>
void kv_scores_multi_loop(const void* q, size_t q_stride, int64_t n_q, const uint8_t* stream, int64_t head_dim,
                          int64_t t, int64_t n, float* s, int64_t s_stride, const KVStreamConsts& consts) {
    for (int64_t h = 0; h < n_q; ++h)
        fn(static_cast<const uint8_t*>(q) + size_t(h) * q_stride, stream, head_dim, t, n, s + h * s_stride, consts);
}
template <KVAccumulateFn fn>
void kv_accumulate_multi_loop(const float* p, int64_t p_stride, int64_t n_q, const uint8_t* stream, int64_t head_dim,
                              int64_t t, int64_t n, float* out, int64_t out_stride, const KVStreamConsts& consts) {
    for (int64_t h = 0; h < n_q; ++h) fn(p + h * p_stride, stream, head_dim, t, n, out + h * out_stride, consts);
}

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
// The multi-query kernel for a path: the highest one at or below it, unless a single-query
// kernel of a higher path exists (then nullptr: loop that one, kv_scores_for).
KVScoresMultiFn kv_scores_multi_for(const KVFormat& f, CpuPath path);
KVAccumulateMultiFn kv_accumulate_multi_for(const KVFormat& f, CpuPath path);

}  // namespace decollama
