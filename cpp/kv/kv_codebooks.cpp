#include "kv/kv_codebooks.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "common/error.h"
#include "gguf/gguf_file.h"
#include "kv/kv_cq_simd.h"
#include "quant/scalar_kernels.h"

namespace decollama {

namespace {

constexpr int64_t kCentroids = 256;
const char* const kArch = "decollama.kv_codebooks";

std::string kind_name(KVKind kind) { return kind == KVKind::K ? "k" : "v"; }

}  // namespace

KVCodebooks::KVCodebooks(const std::string& path, int64_t n_layer, int64_t n_head_kv, int64_t head_dim_k,
                         int64_t head_dim_v)
    : path_(path), n_head_kv_(n_head_kv), head_dim_k_(head_dim_k), head_dim_v_(head_dim_v) {
    const GGUFFile f(path);
    if (f.architecture() != kArch)
        throw GGUFError(path, "general.architecture",
                        "is '" + f.architecture() + "', not a KV codebook file ('" + kArch + "', from decollama-calibrate)");
    const std::string p = std::string(kArch) + ".";
    const std::pair<const char*, int64_t> expect[] = {
        {"n_layer", n_layer}, {"n_head_kv", n_head_kv}, {"head_dim_k", head_dim_k}, {"head_dim_v", head_dim_v}};
    for (const auto& [field, want] : expect) {
        const int64_t got = int64_t(f.get_uint(p + field));
        if (got != want)
            throw GGUFError(path, p + field,
                            "is " + std::to_string(got) + " but the model has " + std::to_string(want) +
                                " (codebooks calibrated for another model)");
    }
    for (const GGUFTensorInfo& t : f.tensors()) {
        int64_t il = -1, c = -1;
        char kind = 0;
        char tail[16] = {0};
        if (std::sscanf(t.name.c_str(), "cq.%ld.%c.%15s", &il, &kind, tail) != 3 || (kind != 'k' && kind != 'v') ||
            il < 0 || il >= n_layer)
            throw GGUFError(path, "tensor " + t.name, "unexpected tensor in a codebook file");
        const KVKind kk = kind == 'k' ? KVKind::K : KVKind::V;
        const int64_t hd = kk == KVKind::K ? head_dim_k : head_dim_v;
        const std::string tail_s(tail);
        std::vector<int64_t> want;  // GGML order
        if (tail_s == "metric") {
            c = 0;
            want = {hd, n_head_kv};
        } else if (tail_s.size() > 1 && tail_s[0] == 'c') {
            c = std::atol(tail_s.c_str() + 1);
            if (c <= 0 || hd % c != 0) throw GGUFError(path, "tensor " + t.name, "channels per code do not divide head_dim");
            want = {c, kCentroids, hd / c, n_head_kv};
        } else {
            throw GGUFError(path, "tensor " + t.name, "unexpected tensor in a codebook file");
        }
        if (t.shape != want) throw GGUFError(path, "tensor " + t.name, "has the wrong shape for this model");
        if (t.type != GGMLType::F32 && t.type != GGMLType::F16)
            throw GGUFError(path, "tensor " + t.name, "must be F32 or F16");
        std::vector<float> values(size_t(t.n_elements()));
        if (t.type == GGMLType::F32)
            dequantize_row_f32(t.data, values.data(), t.n_elements());
        else
            dequantize_row_f16(t.data, values.data(), t.n_elements());
        for (float v : values)
            if (!std::isfinite(v)) throw GGUFError(path, "tensor " + t.name, "holds a non-finite value");
        if (c > 0) {
            std::vector<float>& t_values = transposed_[Key{il, int(kk), c}];
            t_values.resize(values.size());
            const size_t per_head = size_t(hd * kCentroids);
            for (int64_t h = 0; h < n_head_kv; ++h)
                cq_transpose_codebook(values.data() + size_t(h) * per_head, hd, c, t_values.data() + size_t(h) * per_head);
        }
        tables_[Key{il, int(kk), c}] = std::move(values);
    }
}

const std::vector<float>& KVCodebooks::table(const std::map<Key, std::vector<float>>& tables, int64_t layer,
                                             KVKind kind, int64_t c) const {
    const auto it = tables.find(Key{layer, int(kind), c});
    if (it == tables.end()) {
        const std::string name = "cq." + std::to_string(layer) + "." + kind_name(kind) + "." +
                                 (c == 0 ? std::string("metric") : "c" + std::to_string(c));
        throw InvalidArgument("KV codebook file " + path_ + " has no tensor " + name +
                              (c == 0 ? std::string() : " (calibrate with --channels " + std::to_string(c) + ")"));
    }
    return it->second;
}

const float* KVCodebooks::codebook(int64_t layer, KVKind kind, int64_t head, int64_t c) const {
    const int64_t hd = kind == KVKind::K ? head_dim_k_ : head_dim_v_;
    return table(tables_, layer, kind, c).data() + size_t(head * hd * kCentroids);
}

const float* KVCodebooks::codebook_t(int64_t layer, KVKind kind, int64_t head, int64_t c) const {
    const int64_t hd = kind == KVKind::K ? head_dim_k_ : head_dim_v_;
    return table(transposed_, layer, kind, c).data() + size_t(head * hd * kCentroids);
}

const float* KVCodebooks::metric(int64_t layer, KVKind kind, int64_t head) const {
    const int64_t hd = kind == KVKind::K ? head_dim_k_ : head_dim_v_;
    return table(tables_, layer, kind, 0).data() + size_t(head * hd);
}

size_t KVCodebooks::bytes(int64_t c) const {
    size_t total = 0;
    for (const auto& [key, values] : tables_)
        if (std::get<2>(key) == c || std::get<2>(key) == 0) total += values.size() * sizeof(float);
    for (const auto& [key, values] : transposed_)
        if (std::get<2>(key) == c) total += values.size() * sizeof(float);
    return total;
}

}  // namespace decollama
