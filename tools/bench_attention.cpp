// Decode attention time per token per KV format and depth: Attention::run for one query token
// over a cache of `depth` positions (store time excluded), median over repeats.
//
// The cache has --layers layers (default 18, Gemma 3 270M's); each repeat runs attention on every
// layer in turn and reports the mean per layer, so a layer's K/V has left the CPU caches when it is
// read again (as in a forward pass), unless it all fits (small depths or --layers 1).
//
//   cmake --build build --target decollama_core
//   g++ -O2 -std=c++17 -Icpp tools/bench_attention.cpp build/libdecollama_core.a -lpthread -o /tmp/bench_attention
//   /tmp/bench_attention [--threads 1] [--layers 18] [--reps 30] [--head 4] [--head-kv 1] [--dim 256]
//                        [--path avx512] [--formats f16,q8_0,q4_0,deco4,deco2] [--depths 512,4096,16384]
//                        [--single]   (loop the single-query kernels: Attention::set_multi_query(false))
//
// Build with -DBENCH_NO_MULTI_TOGGLE against a core that predates set_multi_query.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/cpu_features.h"
#include "common/thread_pool.h"
#include "kv/kv_cache.h"
#include "kv/kv_format.h"
#include "model/attention.h"

using namespace decollama;

namespace {

std::vector<std::string> split(const std::string& s) {
    std::vector<std::string> out;
    std::stringstream ss(s);
    for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    int threads = 1, layers = 18, reps = 30;
    int64_t n_head = 4, n_head_kv = 1, dim = 256;
    bool single = false;
    std::string path_name, formats = "f16,q8_0,q4_0,deco4,deco2", depths = "512,4096,16384";
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        const auto next = [&]() -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "%s needs a value\n", a.c_str());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--threads") threads = std::stoi(next());
        else if (a == "--layers") layers = std::stoi(next());
        else if (a == "--reps") reps = std::stoi(next());
        else if (a == "--head") n_head = std::stoll(next());
        else if (a == "--head-kv") n_head_kv = std::stoll(next());
        else if (a == "--dim") dim = std::stoll(next());
        else if (a == "--path") path_name = next();
        else if (a == "--formats") formats = next();
        else if (a == "--depths") depths = next();
        else if (a == "--single") single = true;
        else {
            std::fprintf(stderr, "unknown argument %s\n", a.c_str());
            return 2;
        }
    }
    const CpuPath path = path_name.empty() ? default_cpu_path() : cpu_path_from_name(path_name);
    ThreadPool pool(threads);
    std::mt19937 rng(1234);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::printf("# path %s, threads %d, layers %d, n_head %lld, n_head_kv %lld, head_dim %lld, %s kernels\n",
                cpu_path_name(path), threads, layers, (long long)n_head, (long long)n_head_kv, (long long)dim,
                single ? "single-query" : "multi-query");
    std::printf("format\tdepth\tus_per_token_per_layer\n");
    for (const std::string& name : split(formats)) {
        const KVFormat& f = kv_format(name);
        for (const std::string& ds : split(depths)) {
            const int64_t depth = std::stoll(ds);
            const int64_t n_ctx = depth + 1;
            KVCache cache(n_ctx, n_head_kv, dim, dim, std::vector<KVLayerFormats>(size_t(layers), {&f, &f}));
            // Prefill in chunks (random rows; the query energies for fitted formats).
            const int64_t chunk = 512;
            std::vector<float> k(size_t(chunk * n_head_kv * dim)), v(k.size()), q(size_t(chunk * n_head * dim));
            for (int l = 0; l < layers; ++l)
                for (int64_t t = 0; t < n_ctx; t += chunk) {
                    const int64_t n = std::min(chunk, n_ctx - t);
                    for (float& x : k) x = normal(rng);
                    for (float& x : v) x = normal(rng);
                    for (float& x : q) x = normal(rng) * 0.0625f;
                    cache.store(l, t, n, k.data(), v.data(), q.data(), n_head, pool);
                }
            Attention attention(cache, pool.size(), 1, n_head);
#ifndef BENCH_NO_MULTI_TOGGLE
            attention.set_multi_query(!single);
#endif
            std::vector<float> query(size_t(n_head * dim)), out(size_t(n_head * dim));
            for (float& x : query) x = normal(rng) * 0.0625f;
            std::vector<double> times;
            for (int r = 0; r < reps + 2; ++r) {
                const auto t0 = std::chrono::steady_clock::now();
                for (int l = 0; l < layers; ++l) attention.run(query.data(), 1, depth, l, 0, out.data(), pool, path);
                const auto t1 = std::chrono::steady_clock::now();
                if (r >= 2) times.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / layers);
            }
            std::sort(times.begin(), times.end());
            std::printf("%s\t%lld\t%.1f\n", name.c_str(), (long long)depth, times[times.size() / 2]);
            std::fflush(stdout);
        }
    }
    return 0;
}
