// decollama-chat's work once its command line is parsed: load the model, then answer one prompt
// or run the interactive chat, and report speed and KV memory at exit.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "sampling/sampler.h"

namespace decollama {

inline constexpr const char* kChatToolName = "decollama-chat";

// A mistake on the command line: reported as one line, exit status 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct ChatToolOptions {
    std::string model;
    std::optional<std::string> prompt;  // one-shot mode
    std::string system, chat_template;  // chat_template: a family name overriding the model's
    bool no_chat = false, ctx_shift = false, verbose = false;
    int64_t n_predict = -1, n_ctx = 4096, n_batch = 512;  // n_ctx 0: the model's training context
    int n_threads = 0, n_gpu_layers = 0;
    std::vector<std::string> kv{"f16"}, kv_k, kv_v;  // kv_k / kv_v empty: kv
    std::optional<int64_t> kv_window;
    std::optional<std::string> kv_codebook;
    SamplerParams sampling;        // its seed comes from `seed`
    std::optional<uint64_t> seed;  // nullopt: random
    std::string print_prompt;      // test hook: "gen" | "nogen" renders the messages on stdin
};

// Returns the exit status: 0, 1 when a one-shot answer filled the context, 130 when Ctrl-C
// stopped it. Throws UsageError, GGUFError, InvalidArgument... for the caller to report.
int run_chat_tool(const ChatToolOptions& options);

}  // namespace decollama
