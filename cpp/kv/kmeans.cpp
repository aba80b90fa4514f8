#include "kv/kmeans.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "common/error.h"
#include "kv/kv_cq_simd.h"

namespace decollama {

namespace {

constexpr int64_t kChunk = 1024;  // points per assignment task

struct SplitMix64 {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
    int64_t below(int64_t n) { return int64_t(next() % uint64_t(n)); }
};

// Keeps a product out of a fused multiply-add (see kv_cq.cpp); baseline x86-64 has no FMA.
inline float no_fuse(float v) {
#if defined(__GNUC__) && defined(__x86_64__) && defined(__FMA__)
    __asm__("" : "+x"(v));
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__("" : "+w"(v));
#endif
    return v;
}

// k-means++ seeding. Xt: the points transposed, [c][n] (the distance loop runs over points).
void init_plus_plus(const float* X, const std::vector<float>& Xt, int64_t n, int64_t c, int64_t k, const float* m,
                    SplitMix64& rng, float* C) {
    constexpr int64_t kBlock = 256;  // points per partial sum (sampling scans blocks, then points)
    const int64_t n_blocks = (n + kBlock - 1) / kBlock;
    std::vector<float> D(static_cast<size_t>(n), std::numeric_limits<float>::infinity());
    std::vector<double> block_sum(static_cast<size_t>(n_blocks));
    int64_t pick = rng.below(n);
    for (int64_t j = 0;; ++j) {
        std::copy_n(X + pick * c, c, C + j * c);
        if (j + 1 == k) break;
        // D = min(D, distance to the new centroid), summed per block. Channel-outer loops over
        // a block's points vectorise; each point's distance still adds channels in order.
        const float* cj = C + j * c;
        double total = 0.0;
        for (int64_t b = 0; b < n_blocks; ++b) {
            const int64_t p0 = b * kBlock, np = std::min(n, p0 + kBlock) - p0;
            float d[kBlock];
            for (int64_t p = 0; p < np; ++p) {
                const float t = Xt[size_t(p0 + p)] - cj[0];
                d[p] = m[0] * (t * t);
            }
            for (int64_t i = 1; i < c; ++i) {
                const float* xi = Xt.data() + i * n + p0;
                const float ci = cj[i], mi = m[i];
                for (int64_t p = 0; p < np; ++p) {
                    const float t = xi[p] - ci;
                    d[p] = d[p] + no_fuse(mi * (t * t));
                }
            }
            float* Db = D.data() + p0;
            for (int64_t p = 0; p < np; ++p) Db[p] = std::min(Db[p], d[p]);
            double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // 8 running sums: no latency chain
            int64_t p = 0;
            for (; p + 8 <= np; p += 8)
                for (int l = 0; l < 8; ++l) part[l] += double(Db[p + l]);
            for (; p < np; ++p) part[p % 8] += double(Db[p]);
            const double sum = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
            block_sum[size_t(b)] = sum;
            total += sum;
        }
        if (!(total > 0.0)) {  // every point sits on a chosen centroid
            pick = rng.below(n);
            continue;
        }
        double r = rng.uniform() * total;
        pick = -1;
        for (int64_t b = 0; b < n_blocks && pick < 0; ++b) {
            if (r >= block_sum[size_t(b)] && b + 1 < n_blocks) {
                r -= block_sum[size_t(b)];
                continue;
            }
            const int64_t p1 = std::min(n, (b + 1) * kBlock);
            for (int64_t p = b * kBlock; p < p1; ++p) {
                if (D[size_t(p)] > 0.0f) pick = p;  // the last point with weight, if rounding runs past the end
                if (r < double(D[size_t(p)])) break;
                r -= double(D[size_t(p)]);
            }
        }
        if (pick < 0) pick = rng.below(n);  // unreachable with total > 0; stay safe
    }
}

}  // namespace

KMeansResult kmeans(const float* X, int64_t n, int64_t c, int64_t k, int64_t iters, const float* metric, uint64_t seed,
                    ThreadPool& pool, CpuPath path) {
    if (n < 1 || c < 1) throw InvalidArgument("kmeans: X must hold at least one point of at least one channel");
    if (k < 1 || k > std::numeric_limits<int32_t>::max())
        throw InvalidArgument("kmeans: k must be >= 1, got " + std::to_string(k));
    if (iters < 0) throw InvalidArgument("kmeans: iters must be >= 0, got " + std::to_string(iters));
    for (int64_t p = 0; p < n; ++p)
        for (int64_t i = 0; i < c; ++i)
            if (!std::isfinite(X[p * c + i]))
                throw InvalidArgument("kmeans: X[" + std::to_string(p) + ", " + std::to_string(i) + "] is not finite");
    std::vector<float> m(size_t(c), 1.0f);
    if (metric != nullptr)
        for (int64_t i = 0; i < c; ++i) {
            if (!std::isfinite(metric[i]) || metric[i] < 0.0f)
                throw InvalidArgument("kmeans: metric[" + std::to_string(i) + "] must be finite and >= 0");
            m[size_t(i)] = metric[i];
        }

    std::vector<float> Xt(size_t(n * c));
    for (int64_t p = 0; p < n; ++p)
        for (int64_t i = 0; i < c; ++i) Xt[size_t(i * n + p)] = X[p * c + i];

    KMeansResult res;
    res.centroids.resize(size_t(k * c));
    float* C = res.centroids.data();
    SplitMix64 rng{seed};
    init_plus_plus(X, Xt, n, c, k, m.data(), rng, C);

    const CqNearestFn nearest = cq_nearest_for(path);
    std::vector<float> Ct(static_cast<size_t>(k * c)), dist(static_cast<size_t>(n));
    std::vector<int32_t> labels(static_cast<size_t>(n), -1), previous(static_cast<size_t>(n));
    std::vector<double> sums(static_cast<size_t>(k * c));
    std::vector<int64_t> count(static_cast<size_t>(k));
    std::vector<int64_t> order;
    const int64_t n_chunks = (n + kChunk - 1) / kChunk;
    bool reseeded = false;

    const auto assign = [&]() {
        for (int64_t kk = 0; kk < k; ++kk)
            for (int64_t i = 0; i < c; ++i) Ct[size_t(i * k + kk)] = C[kk * c + i];
        previous.swap(labels);
        const auto run = [&](int64_t begin, int64_t end) {
            for (int64_t ch = begin; ch < end; ++ch) {
                const int64_t p0 = ch * kChunk, np = std::min(kChunk, n - p0);
                nearest(X + p0 * c, np, c, c, Ct.data(), k, k, m.data(), labels.data() + p0, dist.data() + p0);
            }
        };
        if (n_chunks > 1 && pool.size() > 1)
            pool.parallel_for(n_chunks, run);
        else
            run(0, n_chunks);
        ++res.iterations;
        return !reseeded && previous == labels;
    };

    bool updated_since_assign = true;
    for (int64_t it = 0; it < iters; ++it) {
        if (assign()) {
            res.converged = true;
            updated_since_assign = false;
            break;
        }
        std::fill(sums.begin(), sums.end(), 0.0);
        std::fill(count.begin(), count.end(), 0);
        for (int64_t p = 0; p < n; ++p) {
            const int64_t l = labels[size_t(p)];
            ++count[size_t(l)];
            for (int64_t i = 0; i < c; ++i) sums[size_t(l * c + i)] += double(X[p * c + i]);
        }
        reseeded = false;
        int64_t next_far = 0;
        for (int64_t kk = 0; kk < k; ++kk) {
            if (count[size_t(kk)] > 0) {
                for (int64_t i = 0; i < c; ++i)
                    C[kk * c + i] = float(sums[size_t(kk * c + i)] / double(count[size_t(kk)]));
                continue;
            }
            if (order.empty()) {  // points by distance to their centroid, farthest first
                order.resize(size_t(n));
                for (int64_t p = 0; p < n; ++p) order[size_t(p)] = p;
                std::stable_sort(order.begin(), order.end(),
                                 [&](int64_t a, int64_t b) { return dist[size_t(a)] > dist[size_t(b)]; });
            }
            const int64_t p = order[size_t(next_far % n)];
            ++next_far;
            std::copy_n(X + p * c, c, C + kk * c);
            reseeded = true;
        }
        order.clear();
        updated_since_assign = true;
    }
    if (updated_since_assign) res.converged = assign();  // distances to the returned centroids
    double objective = 0.0;
    for (float d : dist) objective += double(d);
    res.objective = objective;
    return res;
}

}  // namespace decollama
