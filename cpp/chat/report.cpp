#include "chat/report.h"

#include <cstdio>
#include <vector>

#include "chat/generator.h"
#include "kv/kv_format.h"
#include "model/model.h"

namespace decollama {

namespace {

std::string printf_string(const char* fmt, double a) {
    char buf[64];
    std::snprintf(buf, sizeof buf, fmt, a);
    return buf;
}

std::string bytes(double n) {
    if (n >= 1024.0 * 1024.0 * 1024.0) return printf_string("%.2f GiB", n / (1024.0 * 1024.0 * 1024.0));
    if (n >= 1024.0 * 1024.0) return printf_string("%.2f MiB", n / (1024.0 * 1024.0));
    if (n >= 1024.0) return printf_string("%.1f KiB", n / 1024.0);
    return printf_string("%.0f B", n);
}

// Layer formats as runs in layer order: "f16" when uniform, else "f16 x6, q4_0 x12".
std::string format_runs(const std::vector<std::string>& names) {
    std::string out;
    for (size_t i = 0; i < names.size();) {
        size_t j = i;
        while (j < names.size() && names[j] == names[i]) ++j;
        if (!out.empty()) out += ", ";
        out += names[i];
        if (j - i != names.size()) out += " x" + std::to_string(j - i);
        i = j;
    }
    return out;
}

std::string rate(int64_t tokens, double seconds) {
    return seconds > 0.0 ? printf_string("%.1f tok/s", double(tokens) / seconds) : std::string("- tok/s");
}

}  // namespace

KVMemory kv_memory(const Model& model) {
    const KVCache& cache = model.kv_cache();
    const KVFormat& f16 = kv_format("f16");
    std::vector<std::string> k_names, v_names;
    KVMemory kv;
    for (int64_t il = 0; il < cache.n_layer(); ++il) {
        k_names.emplace_back(cache.k_format(il).name);
        v_names.emplace_back(cache.v_format(il).name);
        const double k_bits = kv_bits_per_element(f16, cache.head_dim_k()) * double(cache.head_dim_k());
        const double v_bits = kv_bits_per_element(f16, cache.head_dim_v()) * double(cache.head_dim_v());
        kv.f16_bytes_per_token += double(cache.n_head_kv()) * (k_bits + v_bits) / 8.0;
    }
    kv.k_formats = format_runs(k_names);
    kv.v_formats = format_runs(v_names);
    kv.bytes_per_token = cache.bytes_per_token();
    kv.n_tokens = model.n_past();
    kv.n_ctx = cache.n_ctx();
    kv.bytes_allocated = cache.bytes_allocated();
    kv.window = cache.window();
    return kv;
}

std::string describe_kv(const KVMemory& kv) {
    const double used = kv.bytes_per_token * double(kv.n_tokens), f16 = kv.f16_bytes_per_token * double(kv.n_tokens);
    std::string out = "KV cache: K " + kv.k_formats + ", V " + kv.v_formats + "\n";
    if (kv.window > 0) out += "  fp16 window: the newest " + std::to_string(kv.window) + " positions\n";
    out += "  bytes per token: " + printf_string("%.0f", kv.bytes_per_token) + " (f16: " +
           printf_string("%.0f", kv.f16_bytes_per_token) + ")\n";
    out += "  in use: " + std::to_string(kv.n_tokens) + " of " + std::to_string(kv.n_ctx) + " tokens, " + bytes(used) +
           " (f16 would use " + bytes(f16) + ")\n";
    out += "  allocated for the full context: " + bytes(double(kv.bytes_allocated)) + "\n";
    return out;
}

std::string summarize_kv(const KVMemory& kv, int64_t n_tokens) {
    const std::string window = kv.window > 0 ? ", fp16 window " + std::to_string(kv.window) : "";
    return "KV cache (K " + kv.k_formats + ", V " + kv.v_formats + window + "): " + std::to_string(n_tokens) + " tokens, " +
           bytes(kv.bytes_per_token * double(n_tokens)) + "; f16 would use " +
           bytes(kv.f16_bytes_per_token * double(n_tokens));
}

std::string summarize_speed(const GenerationStats& s) {
    return "prompt: " + std::to_string(s.prompt_tokens) + " tokens in " + printf_string("%.2f s", s.prompt_seconds) +
           " (" + rate(s.prompt_tokens, s.prompt_seconds) + "); decode: " + std::to_string(s.generated_tokens) +
           " tokens in " + printf_string("%.2f s", s.generate_seconds) + " (" +
           rate(s.generated_tokens, s.generate_seconds) + ")";
}

}  // namespace decollama
