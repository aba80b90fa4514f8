#include "kv/kv_format.h"

#include "common/error.h"

namespace decollama {

// One row per format, defined in its kv_<name>.cpp.
extern const KVFormat kKVFormatF32;
extern const KVFormat kKVFormatF16;
extern const KVFormat kKVFormatQ8_0;
extern const KVFormat kKVFormatQ4_0;
extern const KVFormat kKVFormatCq4;
extern const KVFormat kKVFormatCq2;
extern const KVFormat kKVFormatCq1;
extern const KVFormat kKVFormatDeco4;
extern const KVFormat kKVFormatDeco2;
extern const KVFormat kKVFormatHad4;
extern const KVFormat kKVFormatHad2;

namespace {

const KVFormat* const kKVFormats[] = {&kKVFormatF32, &kKVFormatF16, &kKVFormatQ8_0, &kKVFormatQ4_0,
                                      &kKVFormatDeco4, &kKVFormatDeco2,
                                      &kKVFormatHad4, &kKVFormatHad2,
                                      &kKVFormatCq4, &kKVFormatCq2, &kKVFormatCq1};

}  // namespace

const KVFormat* find_kv_format(const std::string& name) {
    for (const KVFormat* f : kKVFormats)
        if (name == f->name) return f;
    return nullptr;
}

std::vector<std::string> kv_format_names() {
    std::vector<std::string> names;
    for (const KVFormat* f : kKVFormats) names.emplace_back(f->name);
    return names;
}

const KVFormat& kv_format(const std::string& name) {
    if (const KVFormat* f = find_kv_format(name)) return *f;
    std::string valid;
    for (const std::string& n : kv_format_names()) valid += (valid.empty() ? "" : ", ") + n;
    throw InvalidArgument("unknown KV cache format '" + name + "' (valid: " + valid + ")");
}

size_t kv_stream_bytes(const KVFormat& f, int64_t head_dim, int64_t n_tokens) {
    const int64_t n_blocks = (n_tokens + f.tokens_per_block - 1) / f.tokens_per_block;
    return size_t(n_blocks) * f.block_bytes(head_dim);
}

size_t kv_query_bytes(const KVFormat& f, int64_t head_dim) {
    return f.prepare_query != nullptr ? f.query_bytes(head_dim) : size_t(head_dim) * sizeof(float);
}

double kv_bits_per_element(const KVFormat& f, int64_t head_dim) {
    return 8.0 * double(f.block_bytes(head_dim)) / double(f.tokens_per_block * head_dim);
}

KVScoresFn kv_scores_for(const KVFormat& f, CpuPath path) {
    for (int p = int(path); p >= 0; --p)
        if (f.scores[p] != nullptr) return f.scores[p];
    return nullptr;
}

KVAccumulateFn kv_accumulate_for(const KVFormat& f, CpuPath path) {
    for (int p = int(path); p >= 0; --p)
        if (f.accumulate[p] != nullptr) return f.accumulate[p];
    return nullptr;
}

KVScoresMultiFn kv_scores_multi_for(const KVFormat& f, CpuPath path) {
    for (int p = int(path); p >= 0; --p) {
        if (f.scores_multi[p] != nullptr) return f.scores_multi[p];
        if (f.scores[p] != nullptr) return nullptr;
    }
    return nullptr;
}

KVAccumulateMultiFn kv_accumulate_multi_for(const KVFormat& f, CpuPath path) {
    for (int p = int(path); p >= 0; --p) {
        if (f.accumulate_multi[p] != nullptr) return f.accumulate_multi[p];
        if (f.accumulate[p] != nullptr) return nullptr;
    }
    return nullptr;
}

}  // namespace decollama
