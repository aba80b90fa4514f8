// What the chat tool tells the user about memory and speed: the KV cache's formats and bytes
// (against what f16 would take), and prompt / generation throughput.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace decollama {

class Model;
struct GenerationStats;

struct KVMemory {
    std::string k_formats, v_formats;  // "f16", or per layer in runs: "f16 x6, q4_0 x12"
    double bytes_per_token = 0.0;      // all layers, K and V
    double f16_bytes_per_token = 0.0;  // the same cache in f16
    int64_t n_tokens = 0;              // positions filled now
    int64_t n_ctx = 0;
    size_t bytes_allocated = 0;        // reserved for n_ctx positions
    int64_t window = 0;                // newest positions also kept in fp16 (--kv-window)
};

KVMemory kv_memory(const Model& model);

// Several lines for /kv.
std::string describe_kv(const KVMemory& kv);
// One line: the bytes n_tokens positions take, and the f16 figure.
std::string summarize_kv(const KVMemory& kv, int64_t n_tokens);
// One line: prompt (batched) and decode (one token at a time) tokens, seconds and tok/s.
std::string summarize_speed(const GenerationStats& stats);

}  // namespace decollama
