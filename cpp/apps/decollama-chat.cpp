// decollama-chat: chat with a GGUF model in the terminal, in the manner of llama.cpp's llama-cli.
// Interactive by default; -p PROMPT answers once (chat template applied, or --no-chat for plain
// completion) and prints only the answer. Exit status: 0 done, 1 error, 2 bad command line,
// 130 a one-shot answer stopped by Ctrl-C. This file parses the command line; cpp/chat/chat_tool.cpp
// does the work.
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <limits>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include "chat/chat_tool.h"
#include "kv/kv_format.h"

namespace {

using namespace decollama;

constexpr const char* kProg = kChatToolName;

// The command line: what to run, or --help / --version.
struct Options {
    ChatToolOptions run;
    bool help = false, version = false;
    // --kv sets both halves (or each, in its k:/v: form); --kv-k / --kv-v override one, in any order.
    std::vector<std::string> kv_k{"f16"}, kv_v{"f16"}, kv_k_flag, kv_v_flag;
};

// ---- values ----------------------------------------------------------------------------------

constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();

int64_t to_int(const std::string& flag, const std::string& v, int64_t lo, int64_t hi = kNoLimit) {
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno == ERANGE)
        throw UsageError(flag + ": expected an integer, got '" + v + "'");
    if (x < lo || x > hi)
        throw UsageError(flag + " must be " +
                         (hi == kNoLimit ? ">= " + std::to_string(lo)
                                         : "in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]") +
                         ", got " + v);
    return x;
}

bool any_number(double) { return true; }
bool positive(double x) { return x > 0; }
bool probability(double x) { return x >= 0 && x <= 1; }
bool nonzero_probability(double x) { return x > 0 && x <= 1; }

// A finite number for which ok(x) holds; `expected` says which ones do.
float to_float(const std::string& flag, const std::string& v, bool (*ok)(double), const char* expected) {
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !std::isfinite(x) || !ok(x))
        throw UsageError(flag + " must be " + expected + ", got '" + v + "'");
    return float(x);
}

// -1 (nullopt: a random seed) or an unsigned 64-bit integer.
std::optional<uint64_t> to_seed(const std::string& flag, const std::string& v) {
    if (v == "-1") return std::nullopt;
    char* end = nullptr;
    errno = 0;
    const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
    if (v.empty() || v[0] == '-' || *end != '\0' || errno == ERANGE)
        throw UsageError(flag + ": expected -1 or an integer >= 0, got '" + v + "'");
    return x;
}

std::string known_kv_formats() {
    std::string known;
    for (const std::string& n : kv_format_names()) known += (known.empty() ? "" : ", ") + n;
    return known;
}

std::string checked_kv_format(const std::string& flag, const std::string& name) {
    if (!find_kv_format(name))
        throw UsageError(flag + ": unknown KV-cache format '" + name + "' (known: " + known_kv_formats() + ")");
    return name;
}

std::vector<std::string> split_commas(const std::string& v) {
    std::vector<std::string> parts;
    for (size_t start = 0;;) {
        const size_t comma = v.find(',', start);
        parts.push_back(v.substr(start, comma - start));
        if (comma == std::string::npos) return parts;
        start = comma + 1;
    }
}

// One format, or a comma list with one per layer.
std::vector<std::string> kv_formats(const std::string& flag, const std::string& v) {
    std::vector<std::string> names = split_commas(v);
    for (const std::string& n : names) checked_kv_format(flag, n);
    return names;
}

// --kv: FMT or FMT,FMT,... (one per layer) for K and V; or k:FMT,v:FMT for each (a missing half
// is f16), as Llama(kv="k:deco4,v:deco2").
void set_kv(Options& o, const std::string& flag, const std::string& v) {
    if (v.find(':') == std::string::npos) {
        o.kv_k = o.kv_v = kv_formats(flag, v);
        return;
    }
    if (v.rfind("auto:", 0) == 0)
        throw UsageError(flag + ": 'auto:<bits>' is a Python API choice (Llama(kv=\"auto:4\"), "
                         "decollama.kv_config.plan_auto); pass the formats it chose with --kv-k/--kv-v");
    std::optional<std::string> k, v_name;
    for (const std::string& part : split_commas(v)) {
        const size_t colon = part.find(':');
        const std::string key = colon == std::string::npos ? "" : part.substr(0, colon);
        if (key != "k" && key != "v")
            throw UsageError(flag + ": in '" + v + "' every comma-separated part must be k:FORMAT or v:FORMAT, got '" +
                             part + "'");
        std::optional<std::string>& slot = key == "k" ? k : v_name;
        if (slot) throw UsageError(flag + ": '" + key + "' is given twice in '" + v + "'");
        const std::string name = part.substr(colon + 1);
        if (name.empty()) throw UsageError(flag + ": '" + key + ":' names no format in '" + v + "'");
        slot = checked_kv_format(flag, name);
    }
    o.kv_k = {k.value_or("f16")};
    o.kv_v = {v_name.value_or("f16")};
}

// ---- flags -----------------------------------------------------------------------------------

struct Flag {
    std::vector<std::string> names;
    const char* metavar;  // nullptr: a switch
    const char* help;     // nullptr: hidden
    std::function<void(Options&, const std::string& flag, const std::string& value)> set;
};

const std::vector<Flag>& flags() {
    static const std::vector<Flag> table = {
        {{"-m", "--model"}, "FILE", "GGUF model file",
         [](Options& o, auto&, auto& v) { o.run.model = v; }},
        {{"-p", "--prompt"}, "TEXT", "answer TEXT once and exit (stdout: only the answer; stats: stderr)",
         [](Options& o, auto&, auto& v) { o.run.prompt = v; }},
        {{"-s", "--system", "-sys", "--system-prompt"}, "TEXT", "system prompt",
         [](Options& o, auto&, auto& v) { o.run.system = v; }},
        {{"--no-chat"}, nullptr, "with -p: plain completion of the prompt (BOS added, no chat template)",
         [](Options& o, auto&, auto&) { o.run.no_chat = true; }},
        {{"--chat-template"}, "NAME", "chat format instead of the model's: gemma, llama-3, llama-2, mistral, chatml",
         [](Options& o, auto&, auto& v) { o.run.chat_template = v; }},
        {{"-n", "--n-predict"}, "N", "tokens per answer, -1: until the end of the turn (default -1)",
         [](Options& o, auto& f, auto& v) { o.run.n_predict = to_int(f, v, -1); }},
        {{"-c", "--ctx-size"}, "N", "context size in tokens, 0: the model's training context (default 4096)",
         [](Options& o, auto& f, auto& v) { o.run.n_ctx = to_int(f, v, 0); }},
        {{"--ctx-shift"}, nullptr, "when the context is full, drop the oldest turns (system prompt kept)",
         [](Options& o, auto&, auto&) { o.run.ctx_shift = true; }},
        {{"-t", "--threads"}, "N", "CPU threads, 0: physical cores (default 0)",
         [](Options& o, auto& f, auto& v) { o.run.n_threads = int(to_int(f, v, 0, 4096)); }},
        {{"-b", "--batch-size"}, "N", "prompt tokens per forward pass (default 512)",
         [](Options& o, auto& f, auto& v) { o.run.n_batch = to_int(f, v, 1); }},
        {{"-ngl", "--n-gpu-layers", "--gpu-layers"}, "N", "layers on the GPU, the last N (-1 or > n_layer: all and the output head; default 0)",
         [](Options& o, auto& f, auto& v) { o.run.n_gpu_layers = int(to_int(f, v, -1, 1 << 20)); }},
        {{"--kv"}, "FMT",
         "KV-cache format for K and V (default f16); a comma list gives one per layer; k:FMT,v:FMT sets K and V "
         "apart (a missing half is f16)",
         [](Options& o, auto& f, auto& v) { set_kv(o, f, v); }},
        {{"--kv-k"}, "FMT", "K-cache format, or a comma list with one per layer (overrides --kv)",
         [](Options& o, auto& f, auto& v) { o.kv_k_flag = kv_formats(f, v); }},
        {{"--kv-v"}, "FMT", "V-cache format, or a comma list with one per layer (overrides --kv)",
         [](Options& o, auto& f, auto& v) { o.kv_v_flag = kv_formats(f, v); }},
        {{"--kv-window"}, "N", "newest N positions kept (and read) in fp16 on top of any KV format (default 0)",
         [](Options& o, auto& f, auto& v) { o.run.kv_window = to_int(f, v, 0); }},
        {{"--kv-codebook"}, "FILE", "codebook GGUF from decollama-calibrate, needed by the cq KV formats",
         [](Options& o, auto&, auto& v) { o.run.kv_codebook = v; }},
        {{"--temp"}, "T", "temperature, <= 0: greedy (default 0.8)",
         [](Options& o, auto& f, auto& v) { o.run.sampling.temperature = to_float(f, v, any_number, "a number"); }},
        {{"--top-k"}, "N", "top-k, 0: off (default 40)",
         [](Options& o, auto& f, auto& v) { o.run.sampling.top_k = int32_t(to_int(f, v, 0, INT32_MAX)); }},
        {{"--top-p"}, "P", "top-p in (0, 1], 1: off (default 0.95)",
         [](Options& o, auto& f, auto& v) { o.run.sampling.top_p = to_float(f, v, nonzero_probability, "in (0, 1]"); }},
        {{"--min-p"}, "P", "min-p in [0, 1], 0: off (default 0.05)",
         [](Options& o, auto& f, auto& v) { o.run.sampling.min_p = to_float(f, v, probability, "in [0, 1]"); }},
        {{"--repeat-penalty"}, "X", "repetition penalty, 1: off (default 1.0)",
         [](Options& o, auto& f, auto& v) { o.run.sampling.repeat_penalty = to_float(f, v, positive, "> 0"); }},
        {{"--repeat-last-n"}, "N", "tokens the penalty looks back at, -1: all (default 64)",
         [](Options& o, auto& f, auto& v) { o.run.sampling.penalty_last_n = int32_t(to_int(f, v, -1, INT32_MAX)); }},
        {{"--seed"}, "N", "sampling seed, -1: random (default -1)",
         [](Options& o, auto& f, auto& v) { o.run.seed = to_seed(f, v); }},
        {{"-v", "--verbose"}, nullptr, "model details, and \"[eval N tokens]\" per evaluation, on stderr",
         [](Options& o, auto&, auto&) { o.run.verbose = true; }},
        {{"--version"}, nullptr, "print the version and exit", [](Options& o, auto&, auto&) { o.version = true; }},
        {{"-h", "--help"}, nullptr, "this help", [](Options& o, auto&, auto&) { o.help = true; }},
        // Test hook: renders the NUL-separated role/content pairs on stdin with the model's chat
        // template, with ("gen") or without ("nogen") the generation prompt, and exits.
        {{"--print-prompt"}, "MODE", nullptr,
         [](Options& o, auto& f, auto& v) {
             if (v != "gen" && v != "nogen") throw UsageError(f + " must be gen or nogen");
             o.run.print_prompt = v;
         }},
    };
    return table;
}

void print_help(std::ostream& out) {
    out << "usage: " << kProg << " -m MODEL.gguf [options]\n\n"
        << "Chat with a model in the terminal; with -p, answer one prompt and exit.\n"
        << "In the chat: /reset, /kv, /help, /quit. Ctrl-C stops an answer; Ctrl-C at the prompt or Ctrl-D exits.\n\n";
    for (const Flag& f : flags()) {
        if (!f.help) continue;
        std::string names;
        for (const std::string& n : f.names) names += (names.empty() ? "" : ", ") + n;
        if (f.metavar) names += std::string(" ") + f.metavar;
        constexpr size_t kColumn = 30;
        out << "  " << names;
        if (names.size() < kColumn) out << std::string(kColumn - names.size(), ' ');
        else out << "\n" << std::string(kColumn + 2, ' ');
        out << f.help << "\n";
    }
    std::string formats;
    for (const std::string& n : kv_format_names()) formats += (formats.empty() ? "" : ", ") + n;
    out << "\nKV-cache formats: " << formats << "\n";
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i], value;
        bool inline_value = false;
        if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos) {
            value = arg.substr(arg.find('=') + 1);
            arg = arg.substr(0, arg.find('='));
            inline_value = true;
        }
        const Flag* flag = nullptr;
        for (const Flag& f : flags())
            for (const std::string& n : f.names)
                if (n == arg) flag = &f;
        if (!flag) throw UsageError("unknown argument '" + std::string(argv[i]) + "'");
        if (flag->metavar && !inline_value) {
            if (i + 1 >= argc) throw UsageError(arg + " needs a value (" + flag->metavar + ")");
            value = argv[++i];
        } else if (!flag->metavar && inline_value) {
            throw UsageError(arg + " takes no value");
        }
        flag->set(o, arg, value);
    }
    if (o.help || o.version) return o;
    o.run.kv = {"f16"};
    o.run.kv_k = o.kv_k_flag.empty() ? o.kv_k : o.kv_k_flag;
    o.run.kv_v = o.kv_v_flag.empty() ? o.kv_v : o.kv_v_flag;
    if (!o.run.kv_codebook || o.run.kv_codebook->empty())
        for (const auto* names : {&o.run.kv_k, &o.run.kv_v})
            for (const std::string& n : *names)
                if (find_kv_format(n)->codebook_c > 0)
                    throw UsageError("the " + n + " KV format needs --kv-codebook FILE (make one with "
                                     "decollama-calibrate -m MODEL -f TEXT -o FILE)");
    const ChatToolOptions& r = o.run;
    if (r.model.empty()) throw UsageError("no model: pass -m FILE.gguf");
    if (r.no_chat && !r.prompt && r.print_prompt.empty()) throw UsageError("--no-chat needs -p PROMPT");
    if (r.no_chat && (!r.system.empty() || !r.chat_template.empty() || !r.print_prompt.empty()))
        throw UsageError("--no-chat does not go with --system, --chat-template or --print-prompt");
    if (r.prompt && r.prompt->empty()) throw UsageError("-p: the prompt is empty");
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        const Options o = parse(argc, argv);
        if (o.help) {
            print_help(std::cout);
            return 0;
        }
        if (o.version) {
            std::cout << kProg << " " << DECOLLAMA_VERSION << "\n";
            return 0;
        }
        return run_chat_tool(o.run);
    } catch (const UsageError& e) {
        std::cerr << kProg << ": error: " << e.what() << " (see --help)\n";
        return 2;
    } catch (const std::bad_alloc&) {
        std::cerr << kProg << ": error: out of memory (a smaller context, -c, needs less)\n";
        return 1;
    } catch (const std::exception& e) {  // GGUFError, InvalidArgument, I/O: the message says it all
        std::cerr << kProg << ": error: " << e.what() << "\n";
        return 1;
    }
}
