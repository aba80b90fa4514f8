// The decoding loop shared by the chat and one-shot modes: a model whose KV cache this object
// mirrors token by token, a sampler, and timings split like llama.cpp's report (prompt tokens
// evaluated in batches, generated tokens one at a time).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "sampling/sampler.h"

namespace decollama {

class Model;
class Tokenizer;
class TokenStream;

using TextSink = std::function<void(const std::string&)>;

struct GenerationStats {
    int64_t prompt_tokens = 0;
    double prompt_seconds = 0.0;
    int64_t generated_tokens = 0;
    double generate_seconds = 0.0;  // sampling and one-token evaluations
    int64_t peak_tokens = 0;        // the most positions the cache has held
};

enum class StopReason {
    EndOfGeneration,  // the model ended its turn (the token is neither kept nor evaluated)
    Limit,            // max_new tokens generated
    Interrupted,
};

struct Generated {
    StopReason reason = StopReason::Limit;
    std::vector<int32_t> tokens;
    // tokens.back() is not in the cache yet: generation stopped at the limit right after it was
    // sampled (as Llama.generate stops; no logits are needed after the last token).
    bool last_pending = false;
};

class Generator {
public:
    // The model and tokenizer must outlive the generator; the model's cache is assumed empty.
    Generator(Model& model, const Tokenizer& tokenizer, const SamplerParams& sampling);

    // Appends tokens to the cache in batches; with want_logits the next generate() samples from
    // the last one's. Throws InvalidArgument when they do not fit (the cache is unchanged).
    void eval(const std::vector<int32_t>& tokens, bool want_logits);

    // Samples up to max_new tokens after the last evaluated one, passing each through stream to
    // emit. Stops early at an end-of-generation token (the vocabulary's or one of extra_eog) or
    // when interrupted() turns true (checked before each token). The sampler sees the whole
    // cache as history, as Llama.generate does.
    Generated generate(int64_t max_new, const std::vector<int32_t>& extra_eog, TokenStream& stream,
                       const TextSink& emit, const std::function<bool()>& interrupted);

    void reset();  // empties the cache

    const std::vector<int32_t>& tokens() const { return tokens_; }  // the cache, oldest first
    int64_t n_past() const { return int64_t(tokens_.size()); }
    int64_t n_ctx() const;
    const GenerationStats& stats() const { return stats_; }
    const Model& model() const { return model_; }

private:
    Model& model_;
    const Tokenizer& tokenizer_;
    Sampler sampler_;
    int64_t n_sample_;  // rows past the tokenizer's vocabulary (padding) are never sampled
    std::vector<int32_t> tokens_;
    std::vector<float> logits_;
    bool have_logits_ = false;
    GenerationStats stats_;
};

}  // namespace decollama
