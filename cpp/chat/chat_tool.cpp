#include "chat/chat_tool.h"

#include <sys/stat.h>

#include <csignal>
#include <iostream>
#include <iterator>
#include <memory>
#include <random>
#include <utility>

#include "chat/chat_repl.h"
#include "chat/chat_session.h"
#include "chat/chat_template.h"
#include "chat/generator.h"
#include "chat/interrupt.h"
#include "chat/one_shot.h"
#include "chat/report.h"
#include "common/system_info.h"
#include "gguf/gguf_file.h"
#include "model/hparams.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace decollama {

namespace {

constexpr const char* kProg = kChatToolName;

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
}

void check_file(const std::string& path, const char* what) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) throw std::runtime_error(std::string(what) + " file not found: " + path);
    if (!S_ISREG(st.st_mode)) throw std::runtime_error(std::string(what) + " path is not a file: " + path);
}

int print_prompt(const ChatToolOptions& o, const ChatTemplate& chat) {
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

ModelOptions model_options(const ChatToolOptions& o, const GGUFFile& file) {
    ModelOptions m;
    m.n_ctx = o.n_ctx > 0 ? o.n_ctx : read_hparams(file).n_ctx_train;
    m.n_threads = o.n_threads;
    m.n_batch = o.n_batch;
    m.kv_k = o.kv_k.empty() ? o.kv : o.kv_k;
    m.kv_v = o.kv_v.empty() ? o.kv : o.kv_v;
    if (o.kv_window) m.kv_window = *o.kv_window;
    if (o.kv_codebook) m.kv_codebook = *o.kv_codebook;
    m.n_gpu_layers = o.n_gpu_layers;
    return m;
}

// At exit: throughput, and the KV memory at the cache's fullest (a /reset may have emptied it).
void print_stats(const Generator& gen) {
    std::cerr << kProg << ": " << summarize_speed(gen.stats()) << "\n"
              << kProg << ": " << summarize_kv(kv_memory(gen.model()), gen.stats().peak_tokens) << "\n";
}

void print_stdout(const std::string& text) {
    if (!text.empty()) std::cout << text << std::flush;
}

// -p: the answer on stdout, as Llama.generate (--no-chat) or create_chat_completion gives it.
int answer_once(const ChatToolOptions& o, Generator& gen, const Tokenizer& tokenizer,
                const std::optional<ChatTemplate>& chat, const InterruptHandler& interrupt) {
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
    const OneShotResult r = run_one_shot(gen, tokenizer, prompt, o.n_predict, extra_eog, print_stdout,
                                         [&] { return interrupt.requested(); }, o.verbose, std::cerr);
    std::cout << "\n" << std::flush;
    print_stats(gen);
    if (r.context_full) {
        std::cerr << kProg << ": error: the context is full (" << gen.n_ctx()
                  << " tokens, -c); the answer was cut short\n";
        return 1;
    }
    return r.reason == StopReason::Interrupted ? 130 : 0;
}

int chat_interactively(const ChatToolOptions& o, Generator& gen, const Tokenizer& tokenizer, const ChatTemplate& chat,
                       InterruptHandler& interrupt) {
    ChatOptions co;
    co.system_prompt = o.system;
    co.n_predict = o.n_predict;
    co.ctx_shift = o.ctx_shift;
    co.verbose = o.verbose;
    ChatSession session(gen, tokenizer, chat, co, std::cerr);
    const Model& model = gen.model();
    const KVMemory kv = kv_memory(model);
    std::cerr << kProg << ": " << o.model << " (" << model.hparams().arch_name << "), chat template "
              << chat_family_name(chat.family()) << ", n_ctx " << model.n_ctx() << ", KV K " << kv.k_formats
              << " / V " << kv.v_formats << "\n"
              << "/help lists the commands; Ctrl-C stops an answer; Ctrl-D or Ctrl-C at the prompt exits\n";
    run_chat_repl(session, model, interrupt, std::cout, std::cerr);
    print_stats(gen);
    return 0;
}

}  // namespace

int run_chat_tool(const ChatToolOptions& o) {
    check_gpu_layers(o.n_gpu_layers);
    check_file(o.model, "model");
    if (o.kv_codebook) check_file(*o.kv_codebook, "KV codebook (--kv-codebook)");
    const GGUFFile file(o.model);
    const Tokenizer tokenizer(file);
    std::optional<ChatTemplate> chat;
    if (!o.no_chat) chat = chat_template_for(file, tokenizer, o.chat_template);
    if (!o.print_prompt.empty()) return print_prompt(o, *chat);

    SamplerParams sampling = o.sampling;
    sampling.seed = o.seed ? *o.seed : (uint64_t(std::random_device{}()) << 32) ^ std::random_device{}();
    validate(sampling);
    const ModelOptions mo = model_options(o, file);
    std::unique_ptr<Model> model;
    {
        // The worker threads start here and inherit the block: SIGINT then always reaches the
        // main thread, whose wait for input it must interrupt.
        ScopedSignalBlock block(SIGINT);
        model = std::make_unique<Model>(o.model, mo);
    }
    if (o.verbose) {
        const HParams& hp = model->hparams();
        std::cerr << kProg << ": " << o.model << ": " << hp.arch_name << ", " << hp.n_layer << " layers, n_embd "
                  << hp.n_embd << ", n_vocab " << hp.n_vocab << ", n_ctx " << model->n_ctx() << ", "
                  << model->n_threads() << " threads, " << cpu_path_name(model->cpu_path()) << " kernels\n";
        if (const LayerOffload* off = model->offload()) {
            const OffloadInfo i = off->info();
            std::cerr << kProg << ": layers " << i.first_layer << "-" << i.first_layer + i.n_layers - 1
                      << (i.output ? " and the output head" : "") << " on " << i.device << ": weights "
                      << (i.weight_bytes >> 20) << " MiB, KV " << (i.kv_bytes >> 20) << " MiB, scratch "
                      << (i.scratch_bytes >> 20) << " MiB\n";
        }
    }
    Generator gen(*model, tokenizer, sampling);
    InterruptHandler interrupt;
    return o.prompt ? answer_once(o, gen, tokenizer, chat, interrupt)
                    : chat_interactively(o, gen, tokenizer, *chat, interrupt);
}

}  // namespace decollama
