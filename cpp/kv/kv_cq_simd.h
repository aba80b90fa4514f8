// Kernels of the CQ formats (cq4 / cq2 / cq1, kv_cq.cpp) shared with their SIMD files
// (kv_cq_avx2.cpp, kv_cq_avx512.cpp), the codebook loader (kv_codebooks.cpp) and the
// calibration k-means (kmeans.cpp).
//
// Layouts (per (layer, K or V, KV head), D = head_dim, c channels per code, G = D / c):
//   codebook    [G][256][c]  fp32   (KVStreamConsts::codebook)
//   codebook_t  [G][c][256]  fp32   (KVStreamConsts::codebook_t: the same, transposed)
//   stream row  G bytes, code of group g at byte g
//   query table [G][256]     fp32   T[g][k] = sum_i q[g c + i] * C[g][k][i]
//
// Distances are exactly the numpy reference's (python/decollama/kv_reference.py, _cq_dist):
// d = 0; for i in order: t = x[i] - C[k][i]; d = d + m[i] * (t * t), fp32, no fused
// multiply-add; the first index wins on ties. Every path gives bit-identical labels, tables and
// scores (per lane the same operations in the same order); accumulate differs only by FMA.
#pragma once
#include <cstdint>

#include "common/cpu_features.h"
#include "kv/kv_format.h"

namespace decollama {

constexpr int64_t kCqCentroids = 256;

// For each of n points x_p = x + p * x_stride (c values): the index of the nearest of K
// centroids, centroid k's channel i at ct[i * ldk + k] (a transposed codebook), in the metric
// m[c]. label[p] gets the index, dist[p] (when not null) its distance.
using CqNearestFn = void (*)(const float* x, int64_t n, int64_t x_stride, int64_t c, const float* ct, int64_t ldk,
                             int64_t K, const float* m, int32_t* label, float* dist);
// The implementation for a path (lower path where a SIMD one is missing).
CqNearestFn cq_nearest_for(CpuPath path);

// [G][256][c] -> [G][c][256].
void cq_transpose_codebook(const float* book, int64_t head_dim, int64_t c, float* book_t);

// The format's encoder on a given path: codes of n rows (row r at rows + r * row_stride) into
// codes[r * G + g]. consts: codebook (or codebook_t) and metric (null: all ones).
void cq_encode(const float* rows, int64_t row_stride, int64_t n, int64_t head_dim, int64_t c,
               const KVStreamConsts& consts, CpuPath path, uint8_t* codes);

#if defined(DECOLLAMA_X86)
void cq_nearest_avx2(const float* x, int64_t n, int64_t x_stride, int64_t c, const float* ct, int64_t ldk, int64_t K,
                     const float* m, int32_t* label, float* dist);
void cq_nearest_avx512(const float* x, int64_t n, int64_t x_stride, int64_t c, const float* ct, int64_t ldk,
                       int64_t K, const float* m, int32_t* label, float* dist);
// Query table (layout above) from the transposed codebook.
void cq_table_avx2(const float* q, int64_t head_dim, int64_t c, const float* book_t, float* table);
void cq_table_avx512(const float* q, int64_t head_dim, int64_t c, const float* book_t, float* table);
// s[j] = sum_g table[g][code[t + j][g]] (g in order) for j < n; G = head_dim / c bytes per row.
void cq_scores_avx2(const float* table, const uint8_t* stream, int64_t G, int64_t t, int64_t n, float* s);
void cq_scores_avx512(const float* table, const uint8_t* stream, int64_t G, int64_t t, int64_t n, float* s);
// out[g c + i] += sum_j p[j] * C[g][code[t + j][g]][i]; c in {2, 4, 8}.
void cq_accumulate_avx2(const float* p, const uint8_t* stream, int64_t head_dim, int64_t c, int64_t t, int64_t n,
                        const float* book, float* out);
void cq_accumulate_avx512(const float* p, const uint8_t* stream, int64_t head_dim, int64_t c, int64_t t, int64_t n,
                          const float* book, float* out);
#endif

}  // namespace decollama
