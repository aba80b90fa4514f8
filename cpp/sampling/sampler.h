// Token sampling from one row of logits, in the order of llama.cpp's default chain:
// penalties -> top-k -> top-p -> min-p -> temperature -> draw. top-p and min-p therefore see
// the temperature-1 distribution; temperature <= 0 picks the arg-max after the penalties.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace decollama {

struct SamplerParams {
    float temperature = 0.8f;        // <= 0: greedy
    int32_t top_k = 40;              // 0: off
    float top_p = 0.95f;             // (0, 1]; 1: off
    float min_p = 0.05f;             // [0, 1]; 0: off
    float repeat_penalty = 1.0f;     // > 0; 1: off
    float presence_penalty = 0.0f;   // subtracted once from every token seen in the window
    float frequency_penalty = 0.0f;  // subtracted once per occurrence in the window
    int32_t penalty_last_n = 64;     // window of past tokens the penalties look at; -1: all, 0: off
    uint64_t seed = 0;
};

// Throws InvalidArgument naming the first bad field.
void validate(const SamplerParams& p);

class Sampler {
public:
    explicit Sampler(const SamplerParams& params);

    const SamplerParams& params() const { return params_; }
    void reseed(uint64_t seed);

    // Draws one token id. history holds the tokens so far (prompt included), oldest first;
    // only its last penalty_last_n entries matter. Consumes RNG state unless greedy.
    int32_t sample(const float* logits, int64_t n_vocab, const int32_t* history, int64_t n_history);

    // The distribution sample() draws from, over the whole vocabulary (zeros for the tokens the
    // chain removed; one-hot when greedy). Leaves the RNG untouched.
    std::vector<float> probs(const float* logits, int64_t n_vocab, const int32_t* history,
                             int64_t n_history);

private:
    struct Candidate {
        int32_t id;
        float logit;
    };

    // Runs the chain up to and including temperature; leaves the survivors in cand_ with their
    // final probabilities in prob_. Returns true when the result is a single greedy pick.
    bool run_chain(const float* logits, int64_t n_vocab, const int32_t* history, int64_t n_history);

    void apply_penalties(const int32_t* history, int64_t n_history);
    void sort_top(size_t k);  // cand_[0..k) = the k best, sorted descending
    void apply_top_k();
    void apply_top_p();
    void apply_min_p();
    void softmax(float temperature);  // fills prob_ for cand_

    SamplerParams params_;
    std::mt19937_64 rng_;
    // Scratch reused across calls so a decode loop does not allocate per token.
    std::vector<Candidate> cand_;
    std::vector<float> prob_;
    std::vector<std::pair<int32_t, int32_t>> counts_;  // (token, occurrences) in the window
    size_t n_sorted_ = 0;  // cand_[0..n_sorted_) is known sorted descending
};

}  // namespace decollama
