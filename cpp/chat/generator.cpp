#include "chat/generator.h"

#include <algorithm>
#include <chrono>

#include "common/error.h"
#include "model/model.h"
#include "tokenizer/token_stream.h"
#include "tokenizer/tokenizer.h"

namespace decollama {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

Generator::Generator(Model& model, const Tokenizer& tokenizer, const SamplerParams& sampling)
    : model_(model),
      tokenizer_(tokenizer),
      sampler_(sampling),
      n_sample_(std::min<int64_t>(model.hparams().n_vocab, tokenizer.n_vocab())),
      logits_(size_t(model.hparams().n_vocab)) {
    validate(sampling);
}

int64_t Generator::n_ctx() const { return model_.n_ctx(); }

void Generator::eval(const std::vector<int32_t>& tokens, bool want_logits) {
    if (tokens.empty()) return;
    const auto t0 = std::chrono::steady_clock::now();
    model_.eval(tokens.data(), int64_t(tokens.size()), want_logits ? LogitsMode::Last : LogitsMode::None,
                logits_.data());
    stats_.prompt_seconds += seconds_since(t0);
    stats_.prompt_tokens += int64_t(tokens.size());
    tokens_.insert(tokens_.end(), tokens.begin(), tokens.end());
    stats_.peak_tokens = std::max(stats_.peak_tokens, n_past());
    have_logits_ = want_logits;
}

Generated Generator::generate(int64_t max_new, const std::vector<int32_t>& extra_eog, TokenStream& stream,
                              const TextSink& emit, const std::function<bool()>& interrupted) {
    if (max_new > 0 && !have_logits_) throw InvalidArgument("generate: no logits to sample from; eval a prompt first");
    const auto t0 = std::chrono::steady_clock::now();
    Generated out;
    bool pending = false;  // out.tokens.back() sampled but not evaluated yet
    for (int64_t i = 0; i < max_new; ++i) {
        if (pending) {
            const int32_t last = out.tokens.back();
            model_.eval(&last, 1, LogitsMode::Last, logits_.data());
            tokens_.push_back(last);
            pending = false;
        }
        if (interrupted()) {
            out.reason = StopReason::Interrupted;
            break;
        }
        const int32_t token = sampler_.sample(logits_.data(), n_sample_, tokens_.data(), int64_t(tokens_.size()));
        if (tokenizer_.is_eog(token) || std::find(extra_eog.begin(), extra_eog.end(), token) != extra_eog.end()) {
            out.reason = StopReason::EndOfGeneration;
            break;
        }
        out.tokens.push_back(token);
        pending = true;
        emit(stream.push(token));
    }
    out.last_pending = pending;
    // The last logits belong to a token before the pending one: stale for sampling.
    have_logits_ = have_logits_ && !pending;
    stats_.peak_tokens = std::max(stats_.peak_tokens, n_past());
    stats_.generated_tokens += int64_t(out.tokens.size());
    stats_.generate_seconds += seconds_since(t0);
    return out;
}

void Generator::reset() {
    model_.reset();
    tokens_.clear();
    have_logits_ = false;
}

}  // namespace decollama
