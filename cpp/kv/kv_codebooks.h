// CQ codebooks: model data for the cq* KV formats, read from the GGUF decollama-calibrate
// writes (layout in python/decollama/tools/calibrate.py):
//   general.architecture = "decollama.kv_codebooks"
//   decollama.kv_codebooks.{n_layer, n_head_kv, head_dim_k, head_dim_v}   uint32
//   tensor cq.<layer>.<k|v>.c<c>     F16/F32, numpy shape [n_head_kv, head_dim / c, 256, c]
//   tensor cq.<layer>.<k|v>.metric   F32, numpy shape [n_head_kv, head_dim] (encode metric)
// Loaded once into fp32; the cache's streams point into it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "kv/kv_format.h"

namespace decollama {

class KVCodebooks {
public:
    // GGUFError naming the file, field and reason when the file is not a codebook GGUF or does
    // not match the model's shape.
    KVCodebooks(const std::string& path, int64_t n_layer, int64_t n_head_kv, int64_t head_dim_k, int64_t head_dim_v);

    const std::string& path() const { return path_; }
    // [head_dim / c][256][c] of (layer, kind, head); InvalidArgument naming the file when the
    // file has no codebook for c channels per code there.
    const float* codebook(int64_t layer, KVKind kind, int64_t head, int64_t c) const;
    // The same codebook transposed, [head_dim / c][c][256] (the CQ encoder and query tables
    // read it across centroids).
    const float* codebook_t(int64_t layer, KVKind kind, int64_t head, int64_t c) const;
    // [head_dim] encode metric of (layer, kind, head).
    const float* metric(int64_t layer, KVKind kind, int64_t head) const;
    // The constants of one stream of a format with c channels per code.
    KVStreamConsts consts(int64_t layer, KVKind kind, int64_t head, int64_t c) const {
        return KVStreamConsts{codebook(layer, kind, head, c), metric(layer, kind, head), codebook_t(layer, kind, head, c)};
    }
    // fp32 bytes of the loaded codebooks (and their transposed copies) and metrics used by
    // formats with c channels per code.
    size_t bytes(int64_t c) const;

private:
    using Key = std::tuple<int64_t, int, int64_t>;  // layer, kind, c (0 = metric)
    const std::vector<float>& table(const std::map<Key, std::vector<float>>& tables, int64_t layer, KVKind kind,
                                    int64_t c) const;
    std::string path_;
    int64_t n_head_kv_, head_dim_k_, head_dim_v_;
    std::map<Key, std::vector<float>> tables_;
    std::map<Key, std::vector<float>> transposed_;  // codebooks only
};

}  // namespace decollama
