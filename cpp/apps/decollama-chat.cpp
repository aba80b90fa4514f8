// decollama-chat: chat with a GGUF model in the terminal, in the manner of llama.cpp's llama-cli.
// Interactive by default; -p PROMPT answers once (chat template applied, or --no-chat for plain
// completion) and prints only the answer. Exit status: 0 done, 1 error, 2 bad command line,
// 130 a one-shot answer stopped by Ctrl-C.
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "chat/chat_repl.h"
#include "chat/chat_session.h"
#include "chat/chat_template.h"
#include "chat/generator.h"
#include "chat/interrupt.h"
#include "chat/one_shot.h"
#include "chat/report.h"
#include "common/error.h"
#include "common/system_info.h"
#include "gguf/gguf_file.h"
#include "kv/kv_format.h"
#include "model/hparams.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace {

using namespace decollama;

constexpr const char* kProg = "decollama-chat";

// A mistake on the command line: one line on stderr, exit status 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct Options {
    std::string model;
    std::optional<std::string> prompt;  // one-shot mode
    std::string system, chat_template;
    bool no_chat = false, ctx_shift = false, verbose = false, help = false, version = false;
    int64_t n_predict = -1, n_ctx = 4096, n_batch = 512;
    int n_threads = 0, n_gpu_layers = 0;
    std::vector<std::string> kv{"f16"}, kv_k, kv_v;
    std::optional<int64_t> kv_window;
    std::optional<std::string> kv_codebook;
    SamplerParams sampling;
    bool random_seed = true;
    std::string print_prompt;  // test hook: "gen" | "nogen"
};

// ---- values ----------------------------------------------------------------------------------

int64_t to_int(const std::string& flag, const std::string& v, int64_t lo, int64_t hi) {
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno == ERANGE)
        throw UsageError(flag + ": expected an integer, got '" + v + "'");
    if (x < lo || x > hi)
        throw UsageError(flag + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + v);
    return x;
}

float to_float(const std::string& flag, const std::string& v, double lo, double hi) {
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(x >= lo && x <= hi))  // NaN fails too
        throw UsageError(flag + " must be a number in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                         "], got '" + v + "'");
    return float(x);
}

std::vector<std::string> kv_formats(const std::string& flag, const std::string& v) {
    std::vector<std::string> names;
    for (size_t start = 0;;) {
        const size_t comma = v.find(',', start);
        names.push_back(v.substr(start, comma - start));
        if (!find_kv_format(names.back())) {
            std::string known;
            for (const std::string& n : kv_format_names()) known += (known.empty() ? "" : ", ") + n;
            throw UsageError(flag + ": unknown KV-cache format '" + names.back() + "' (known: " + known + ")");
        }
        if (comma == std::string::npos) return names;
        start = comma + 1;
    }
}

// --kv-window / --kv-codebook reach ModelOptions once the cache has such settings; detected at
// compile time so this file needs no edit when they land. Until then, giving them is an error.
template <class T, class = void>
struct HasKVWindow : std::false_type {};
template <class T>
struct HasKVWindow<T, std::void_t<decltype(std::declval<T&>().kv_window = int64_t())>> : std::true_type {};
template <class T, class = void>
struct HasKVCodebook : std::false_type {};
template <class T>
struct HasKVCodebook<T, std::void_t<decltype(std::declval<T&>().kv_codebook = std::string())>> : std::true_type {};

template <class O>
void set_kv_window(O& o, int64_t window) {
    if constexpr (HasKVWindow<O>::value) o.kv_window = window;
    else throw UsageError("--kv-window is not supported yet by this build");
}
template <class O>
void set_kv_codebook(O& o, const std::string& path) {
    if constexpr (HasKVCodebook<O>::value) o.kv_codebook = path;
    else throw UsageError("--kv-codebook is not supported yet by this build");
}

// ---- flags -----------------------------------------------------------------------------------

struct Flag {
    std::vector<std::string> names;
    const char* metavar;  // nullptr: a switch
    const char* help;     // nullptr: hidden
    std::function<void(Options&, const std::string& flag, const std::string& value)> set;
};

const std::vector<Flag>& flags() {
    constexpr int64_t kMax = int64_t(1) << 40;
    static const std::vector<Flag> table = {
        {{"-m", "--model"}, "FILE", "GGUF model file",
         [](Options& o, auto&, auto& v) { o.model = v; }},
        {{"-p", "--prompt"}, "TEXT", "answer TEXT once and exit (stdout: only the answer; stats: stderr)",
         [](Options& o, auto&, auto& v) { o.prompt = v; }},
        {{"-s", "--system", "-sys", "--system-prompt"}, "TEXT", "system prompt",
         [](Options& o, auto&, auto& v) { o.system = v; }},
        {{"--no-chat"}, nullptr, "with -p: plain completion of the prompt (BOS added, no chat template)",
         [](Options& o, auto&, auto&) { o.no_chat = true; }},
        {{"--chat-template"}, "NAME", "chat format instead of the model's: gemma, llama-3, llama-2, mistral, chatml",
         [](Options& o, auto&, auto& v) { o.chat_template = v; }},
        {{"-n", "--n-predict"}, "N", "tokens per answer, -1: until the end of the turn (default -1)",
         [](Options& o, auto& f, auto& v) { o.n_predict = to_int(f, v, -1, kMax); }},
        {{"-c", "--ctx-size"}, "N", "context size in tokens, 0: the model's training context (default 4096)",
         [](Options& o, auto& f, auto& v) { o.n_ctx = to_int(f, v, 0, kMax); }},
        {{"--ctx-shift"}, nullptr, "when the context is full, drop the oldest turns (system prompt kept)",
         [](Options& o, auto&, auto&) { o.ctx_shift = true; }},
        {{"-t", "--threads"}, "N", "CPU threads, 0: physical cores (default 0)",
         [](Options& o, auto& f, auto& v) { o.n_threads = int(to_int(f, v, 0, 4096)); }},
        {{"-b", "--batch-size"}, "N", "prompt tokens per forward pass (default 512)",
         [](Options& o, auto& f, auto& v) { o.n_batch = to_int(f, v, 1, kMax); }},
        {{"-ngl", "--n-gpu-layers", "--gpu-layers"}, "N", "layers on the GPU; only 0 in this version (default 0)",
         [](Options& o, auto& f, auto& v) { o.n_gpu_layers = int(to_int(f, v, -1, 1 << 20)); }},
        {{"--kv"}, "FMT", "KV-cache format for K and V (default f16); a comma list gives one per layer",
         [](Options& o, auto& f, auto& v) { o.kv = kv_formats(f, v); }},
        {{"--kv-k"}, "FMT", "K-cache format (overrides --kv)",
         [](Options& o, auto& f, auto& v) { o.kv_k = kv_formats(f, v); }},
        {{"--kv-v"}, "FMT", "V-cache format (overrides --kv)",
         [](Options& o, auto& f, auto& v) { o.kv_v = kv_formats(f, v); }},
        {{"--kv-window"}, "N", "recent tokens the KV format keeps at full precision (when supported)",
         [](Options& o, auto& f, auto& v) { o.kv_window = to_int(f, v, 0, kMax); }},
        {{"--kv-codebook"}, "FILE", "codebook for the KV format (when supported)",
         [](Options& o, auto&, auto& v) { o.kv_codebook = v; }},
        {{"--temp"}, "T", "temperature, <= 0: greedy (default 0.8)",
         [](Options& o, auto& f, auto& v) { o.sampling.temperature = to_float(f, v, -1e9, 1e9); }},
        {{"--top-k"}, "N", "top-k, 0: off (default 40)",
         [](Options& o, auto& f, auto& v) { o.sampling.top_k = int32_t(to_int(f, v, 0, INT32_MAX)); }},
        {{"--top-p"}, "P", "top-p in (0, 1], 1: off (default 0.95)",
         [](Options& o, auto& f, auto& v) { o.sampling.top_p = to_float(f, v, 1e-9, 1.0); }},
        {{"--min-p"}, "P", "min-p in [0, 1], 0: off (default 0.05)",
         [](Options& o, auto& f, auto& v) { o.sampling.min_p = to_float(f, v, 0.0, 1.0); }},
        {{"--repeat-penalty"}, "X", "repetition penalty, 1: off (default 1.0)",
         [](Options& o, auto& f, auto& v) { o.sampling.repeat_penalty = to_float(f, v, 1e-9, 1e9); }},
        {{"--repeat-last-n"}, "N", "tokens the penalty looks back at, -1: all (default 64)",
         [](Options& o, auto& f, auto& v) { o.sampling.penalty_last_n = int32_t(to_int(f, v, -1, INT32_MAX)); }},
        {{"--seed"}, "N", "sampling seed, -1: random (default -1)",
         [](Options& o, auto& f, auto& v) {
             o.random_seed = v == "-1";
             if (o.random_seed) return;
             if (v.empty() || v[0] == '-') throw UsageError(f + ": expected -1 or an integer >= 0, got '" + v + "'");
             char* end = nullptr;
             errno = 0;
             o.sampling.seed = std::strtoull(v.c_str(), &end, 10);
             if (*end != '\0' || errno == ERANGE) throw UsageError(f + ": expected -1 or an integer >= 0, got '" + v + "'");
         }},
        {{"-v", "--verbose"}, nullptr, "model details, and \"[eval N tokens]\" per evaluation, on stderr",
         [](Options& o, auto&, auto&) { o.verbose = true; }},
        {{"--version"}, nullptr, "print the version and exit", [](Options& o, auto&, auto&) { o.version = true; }},
        {{"-h", "--help"}, nullptr, "this help", [](Options& o, auto&, auto&) { o.help = true; }},
        // Test hook: renders the NUL-separated role/content pairs on stdin with the model's chat
        // template, with ("gen") or without ("nogen") the generation prompt, and exits.
        {{"--print-prompt"}, "MODE", nullptr,
         [](Options& o, auto& f, auto& v) {
             if (v != "gen" && v != "nogen") throw UsageError(f + " must be gen or nogen");
             o.print_prompt = v;
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
        out << "  " << names << std::string(names.size() < 30 ? 30 - names.size() : 1, ' ') << f.help << "\n";
    }
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
    if (o.model.empty()) throw UsageError("no model: pass -m FILE.gguf");
    if (o.no_chat && !o.prompt && o.print_prompt.empty()) throw UsageError("--no-chat needs -p PROMPT");
    if (o.no_chat && (!o.system.empty() || !o.chat_template.empty() || !o.print_prompt.empty()))
        throw UsageError("--no-chat does not go with --system, --chat-template or --print-prompt");
    if (o.prompt && o.prompt->empty()) throw UsageError("-p: the prompt is empty");
    return o;
}

// ---- running ---------------------------------------------------------------------------------

void check_gpu_layers(int n_gpu_layers) {
    if (n_gpu_layers == 0) return;
    const SystemInfo info = system_info();
    const std::string what = "-ngl " + std::to_string(n_gpu_layers) + ": ";
    if (!info.cuda_compiled)
        throw std::runtime_error(what + "this build of decollama has no GPU support (built without CUDA); use -ngl 0");
    if (info.gpus.empty())
        throw std::runtime_error(what + "no usable GPU on this machine (" +
                                 (info.gpu_unavailable_reason.empty() ? "no CUDA device found"
                                                                      : info.gpu_unavailable_reason) +
                                 "); use -ngl 0");
    throw std::runtime_error(what + "GPU offload is not available in this version yet; use -ngl 0");
}

void check_model_file(const std::string& path) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) throw std::runtime_error("model file not found: " + path);
    if (!S_ISREG(st.st_mode)) throw std::runtime_error("model path is not a file: " + path);
}

int print_prompt(const Options& o, const ChatTemplate& chat) {
    const std::string input(std::istreambuf_iterator<char>(std::cin), {});
    std::vector<std::string> fields;
    for (size_t start = 0; start < input.size();) {
        size_t nul = input.find('\0', start);
        if (nul == std::string::npos) nul = input.size();
        fields.push_back(input.substr(start, nul - start));
        start = nul + 1;
    }
    if (fields.size() % 2 != 0) throw UsageError("--print-prompt: stdin must hold role\\0content\\0 pairs");
    std::vector<ChatMessage> messages;
    for (size_t i = 0; i < fields.size(); i += 2) messages.push_back({fields[i], fields[i + 1]});
    std::cout << chat.render(messages, o.print_prompt == "gen") << std::flush;
    return 0;
}

ModelOptions model_options(const Options& o, const GGUFFile& file) {
    ModelOptions m;
    m.n_ctx = o.n_ctx > 0 ? o.n_ctx : read_hparams(file).n_ctx_train;
    m.n_threads = o.n_threads;
    m.n_batch = o.n_batch;
    m.kv_k = o.kv_k.empty() ? o.kv : o.kv_k;
    m.kv_v = o.kv_v.empty() ? o.kv : o.kv_v;
    if (o.kv_window) set_kv_window(m, *o.kv_window);
    if (o.kv_codebook) set_kv_codebook(m, *o.kv_codebook);
    return m;
}

// At exit: throughput, and the KV memory at the cache's fullest (a /reset may have emptied it).
void print_stats(const Generator& gen) {
    std::cerr << kProg << ": " << summarize_speed(gen.stats()) << "\n"
              << kProg << ": " << summarize_kv(kv_memory(gen.model()), gen.stats().peak_tokens) << "\n";
}

int run(const Options& o) {
    check_gpu_layers(o.n_gpu_layers);
    check_model_file(o.model);
    const GGUFFile file(o.model);
    const Tokenizer tokenizer(file);
    std::optional<ChatTemplate> chat;
    if (!o.no_chat) chat = chat_template_for(file, tokenizer, o.chat_template);
    if (!o.print_prompt.empty()) return print_prompt(o, *chat);

    SamplerParams sampling = o.sampling;
    if (o.random_seed) sampling.seed = (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
    validate(sampling);
    const ModelOptions mo = model_options(o, file);
    std::unique_ptr<Model> model;
    {
        // The worker threads start here and inherit the block: SIGINT then always reaches the
        // main thread, whose wait for input it must interrupt.
        ScopedSignalBlock block(SIGINT);
        model = std::make_unique<Model>(o.model, mo);
    }
    Generator gen(*model, tokenizer, sampling);
    if (o.verbose) {
        const HParams& hp = model->hparams();
        std::cerr << kProg << ": " << o.model << ": " << hp.arch_name << ", " << hp.n_layer << " layers, n_embd "
                  << hp.n_embd << ", n_vocab " << hp.n_vocab << ", n_ctx " << model->n_ctx() << ", " << model->n_threads()
                  << " threads, " << cpu_path_name(model->cpu_path()) << " kernels"
                  << (chat ? std::string(", chat template ") + chat_family_name(chat->family()) : std::string()) << "\n";
    }
    InterruptHandler interrupt;
    const auto emit = [](const std::string& text) {
        if (!text.empty()) std::cout << text << std::flush;
    };
    const auto interrupted = [&interrupt] { return interrupt.requested(); };

    if (o.prompt) {
        std::vector<int32_t> prompt, extra_eog;
        if (chat) {
            std::vector<ChatMessage> messages;
            if (!o.system.empty()) messages.push_back({"system", o.system});
            messages.push_back({"user", *o.prompt});
            prompt = tokenize_chat_prompt(tokenizer, *chat, chat->render(messages, true));
            extra_eog = end_of_turn_ids(tokenizer, *chat);
        } else {
            prompt = tokenizer.tokenize(*o.prompt, tokenizer.add_bos(), /*parse_special=*/false);
        }
        const OneShotResult r =
            run_one_shot(gen, tokenizer, prompt, o.n_predict, extra_eog, emit, interrupted, o.verbose, std::cerr);
        std::cout << "\n" << std::flush;
        print_stats(gen);
        if (r.context_full) {
            std::cerr << kProg << ": error: the context is full (" << gen.n_ctx()
                      << " tokens, -c); the answer was cut short\n";
            return 1;
        }
        return r.reason == StopReason::Interrupted ? 130 : 0;
    }

    ChatOptions co;
    co.system_prompt = o.system;
    co.n_predict = o.n_predict;
    co.ctx_shift = o.ctx_shift;
    co.verbose = o.verbose;
    ChatSession session(gen, tokenizer, *chat, co, std::cerr);
    const KVMemory kv = kv_memory(*model);
    std::cerr << kProg << ": " << o.model << " (" << model->hparams().arch_name << "), chat template "
              << chat_family_name(chat->family()) << ", n_ctx " << model->n_ctx() << ", KV K " << kv.k_formats
              << " / V " << kv.v_formats << "\n"
              << "/help lists the commands; Ctrl-C stops an answer; Ctrl-D or Ctrl-C at the prompt exits\n";
    run_chat_repl(session, *model, interrupt, std::cout, std::cerr);
    print_stats(gen);
    return 0;
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
        return run(o);
    } catch (const UsageError& e) {
        std::cerr << kProg << ": error: " << e.what() << " (see --help)\n";
        return 2;
    } catch (const std::exception& e) {  // GGUFError, InvalidArgument, I/O: the message says it all
        std::cerr << kProg << ": error: " << e.what() << "\n";
        return 1;
    }
}
