// k-means for CQ codebooks (decollama-calibrate): n points of c channels into k centroids in
// the CQ metric sum_i m[i] (x_i - C_i)^2, the distance the cq* encoders use (kv_cq_simd.h),
// so calibration and encoding agree on every nearest centroid.
//
// - init: k-means++ (D^2 sampling in the metric) from a splitmix64 stream seeded with `seed`:
//   the first centroid is a uniform random point, each next one a point drawn with probability
//   proportional to its distance to the nearest centroid chosen so far (uniform when every
//   point coincides with a chosen centroid, e.g. fewer distinct points than k).
// - Lloyd iterations: assign every point to its nearest centroid (first index on ties; SIMD,
//   split over the pool's threads), stop when no assignment changed; otherwise each centroid
//   with members becomes float(sequential double sum of its points in point order / count).
//   The metric does not enter the update (a diagonal metric's weighted mean is the plain mean).
// - empty clusters are re-seeded deterministically: in increasing cluster index, each takes
//   the not yet taken point farthest from its centroid (ties: lower point index), and the
//   iteration does not count as converged.
// The result depends on (X, k, iters, metric, seed) only: not on the thread count or path.
#pragma once
#include <cstdint>
#include <vector>

#include "common/cpu_features.h"
#include "common/thread_pool.h"

namespace decollama {

struct KMeansResult {
    std::vector<float> centroids;  // [k][c]
    int64_t iterations = 0;        // assignment passes run (convergence check included)
    bool converged = false;
    double objective = 0.0;        // sum of the point distances at the last assignment
};

// X: n points of c floats (row p at X + p * c). metric: c weights >= 0, or null (all 1).
// InvalidArgument for empty input, k < 1, iters < 0, non-finite points or a bad metric.
KMeansResult kmeans(const float* X, int64_t n, int64_t c, int64_t k, int64_t iters, const float* metric, uint64_t seed,
                    ThreadPool& pool, CpuPath path);

}  // namespace decollama
