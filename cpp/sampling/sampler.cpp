#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

#include "common/error.h"

namespace decollama {

namespace {

std::string num(double v) {
    std::ostringstream os;
    os << v;
    return os.str();
}

// Strictly better first; equal logits by lower id so every step is deterministic.
struct Better {
    template <class C>
    bool operator()(const C& a, const C& b) const {
        return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
    }
};

}  // namespace

void validate(const SamplerParams& p) {
    auto fail = [](const std::string& name, const std::string& rule, double v) {
        throw InvalidArgument(name + " must be " + rule + ", got " + num(v));
    };
    if (!std::isfinite(p.temperature))
        fail("temperature", "a finite number", p.temperature);
    if (p.top_k < 0) fail("top_k", ">= 0 (0 turns it off)", p.top_k);
    if (!(p.top_p > 0.0f && p.top_p <= 1.0f)) fail("top_p", "in (0, 1]", p.top_p);
    if (!(p.min_p >= 0.0f && p.min_p <= 1.0f)) fail("min_p", "in [0, 1]", p.min_p);
    if (!(p.repeat_penalty > 0.0f) || std::isinf(p.repeat_penalty))
        fail("repeat_penalty", "a finite number > 0 (1 turns it off)", p.repeat_penalty);
    if (!std::isfinite(p.presence_penalty)) fail("presence_penalty", "finite", p.presence_penalty);
    if (!std::isfinite(p.frequency_penalty)) fail("frequency_penalty", "finite", p.frequency_penalty);
    if (p.penalty_last_n < -1) fail("penalty_last_n", ">= -1 (-1: whole history, 0: off)", p.penalty_last_n);
}

Sampler::Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {
    validate(params_);
}

void Sampler::reseed(uint64_t seed) {
    params_.seed = seed;
    rng_.seed(seed);
}

void Sampler::apply_penalties(const int32_t* history, int64_t n_history) {
    const SamplerParams& p = params_;
    if (p.penalty_last_n == 0 || n_history <= 0) return;
    if (p.repeat_penalty == 1.0f && p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f) return;

    const int64_t n = p.penalty_last_n < 0 ? n_history : std::min<int64_t>(n_history, p.penalty_last_n);
    const int32_t* window = history + (n_history - n);
    // Count occurrences by sorting a copy of the window: no hash map, no per-call allocation
    // once the scratch has grown.
    counts_.clear();
    for (int64_t i = 0; i < n; ++i) counts_.push_back({window[i], 0});
    std::sort(counts_.begin(), counts_.end());
    size_t out = 0;
    for (size_t i = 0; i < counts_.size();) {
        size_t j = i;
        while (j < counts_.size() && counts_[j].first == counts_[i].first) ++j;
        counts_[out++] = {counts_[i].first, static_cast<int32_t>(j - i)};
        i = j;
    }
    counts_.resize(out);

    // cand_ is still indexed by token id here.
    for (const auto& [tok, count] : counts_) {
        float& l = cand_[static_cast<size_t>(tok)].logit;
        // Dividing a negative logit would raise it, so those are multiplied instead.
        l = l <= 0.0f ? l * p.repeat_penalty : l / p.repeat_penalty;
        l -= static_cast<float>(count) * p.frequency_penalty + p.presence_penalty;
    }
}

void Sampler::sort_top(size_t k) {
    k = std::min(k, cand_.size());
    if (k <= n_sorted_) return;
    // The head [0, n_sorted_) is already in place; select the next k - n_sorted_ from the rest
    // (linear) and sort only those, so growing the head step by step stays cheap.
    const auto first = cand_.begin() + static_cast<std::ptrdiff_t>(n_sorted_);
    const auto mid = cand_.begin() + static_cast<std::ptrdiff_t>(k);
    if (k - n_sorted_ <= 256) {
        std::partial_sort(first, mid, cand_.end(), Better{});  // a heap pass: best for small k
    } else {
        if (mid != cand_.end()) std::nth_element(first, mid, cand_.end(), Better{});
        std::sort(first, mid, Better{});
    }
    n_sorted_ = k;
}

void Sampler::apply_top_k() {
    const auto k = static_cast<size_t>(params_.top_k);
    if (k == 0 || k >= cand_.size()) return;
    sort_top(k);
    cand_.resize(k);
}

void Sampler::apply_top_p() {
    const double p = params_.top_p;
    if (p >= 1.0 || cand_.size() <= 1) return;
    float max_logit = -std::numeric_limits<float>::infinity();
    for (const Candidate& c : cand_) max_logit = std::max(max_logit, c.logit);
    double total = 0.0;
    for (const Candidate& c : cand_) total += std::exp(static_cast<double>(c.logit) - max_logit);

    // Smallest prefix of the descending order whose mass reaches p. The mass usually sits in a
    // few dozen tokens, so sort a growing head instead of the whole vocabulary.
    double cum = 0.0;
    size_t i = 0;
    for (size_t chunk = std::max<size_t>(n_sorted_, 64);; chunk *= 8) {
        sort_top(chunk);
        for (; i < n_sorted_; ++i) {
            cum += std::exp(static_cast<double>(cand_[i].logit) - max_logit) / total;
            if (cum >= p) {
                cand_.resize(i + 1);
                n_sorted_ = i + 1;
                return;
            }
        }
        if (n_sorted_ == cand_.size()) return;  // rounding left the sum just short of p: keep all
    }
}

void Sampler::apply_min_p() {
    const float p = params_.min_p;
    if (p <= 0.0f || cand_.size() <= 1) return;
    float max_logit = -std::numeric_limits<float>::infinity();
    for (const Candidate& c : cand_) max_logit = std::max(max_logit, c.logit);
    // prob >= p * max_prob  <=>  logit >= max_logit + log(p)
    const float threshold = max_logit + std::log(p);
    // Removal keeps the relative order, so what survives of the sorted head is still a sorted head.
    size_t kept_sorted = 0;
    size_t out = 0;
    for (size_t i = 0; i < cand_.size(); ++i) {
        if (cand_[i].logit >= threshold) {
            if (i < n_sorted_) ++kept_sorted;
            cand_[out++] = cand_[i];
        }
    }
    cand_.resize(out);
    n_sorted_ = kept_sorted;
}

void Sampler::softmax(float temperature) {
    float max_logit = -std::numeric_limits<float>::infinity();
    for (const Candidate& c : cand_) max_logit = std::max(max_logit, c.logit);
    if (max_logit == -std::numeric_limits<float>::infinity())
        throw InvalidArgument("every logit is -inf: there is no token to sample");
    prob_.resize(cand_.size());
    double total = 0.0;
    const double inv_t = 1.0 / static_cast<double>(temperature);
    for (size_t i = 0; i < cand_.size(); ++i) {
        const double e = std::exp((static_cast<double>(cand_[i].logit) - max_logit) * inv_t);
        prob_[i] = static_cast<float>(e);
        total += e;
    }
    for (float& q : prob_) q = static_cast<float>(q / total);
}

bool Sampler::run_chain(const float* logits, int64_t n_vocab, const int32_t* history, int64_t n_history) {
    if (n_vocab <= 0) throw InvalidArgument("logits must not be empty");
    if (n_history < 0) throw InvalidArgument("history length must be >= 0");
    for (int64_t i = 0; i < n_history; ++i) {
        if (history[i] < 0 || history[i] >= n_vocab)
            throw InvalidArgument("history token " + std::to_string(history[i]) + " at position " +
                                  std::to_string(i) + " is outside the vocabulary of " +
                                  std::to_string(n_vocab));
    }
    cand_.resize(static_cast<size_t>(n_vocab));
    for (int64_t i = 0; i < n_vocab; ++i) {
        if (std::isnan(logits[i]))
            throw InvalidArgument("logits contain NaN (token " + std::to_string(i) + ")");
        cand_[static_cast<size_t>(i)] = {static_cast<int32_t>(i), logits[i]};
    }
    n_sorted_ = 0;

    apply_penalties(history, n_history);

    if (params_.temperature <= 0.0f) {
        const auto best = std::min_element(cand_.begin(), cand_.end(), Better{});
        if (best->logit == -std::numeric_limits<float>::infinity())
            throw InvalidArgument("every logit is -inf: there is no token to sample");
        cand_[0] = *best;
        cand_.resize(1);
        prob_.assign(1, 1.0f);
        return true;
    }

    apply_top_k();
    apply_top_p();
    apply_min_p();
    softmax(params_.temperature);
    return false;
}

int32_t Sampler::sample(const float* logits, int64_t n_vocab, const int32_t* history, int64_t n_history) {
    if (run_chain(logits, n_vocab, history, n_history)) return cand_[0].id;
    // 53 random bits -> a double in [0, 1): the same draw on every platform, unlike
    // std::uniform_real_distribution whose algorithm is left to the library.
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    double cum = 0.0;
    size_t last_nonzero = 0;
    for (size_t i = 0; i < cand_.size(); ++i) {
        if (prob_[i] <= 0.0f) continue;
        last_nonzero = i;
        cum += prob_[i];
        if (u < cum) return cand_[i].id;
    }
    return cand_[last_nonzero].id;  // the float sum fell just short of u
}

std::vector<float> Sampler::probs(const float* logits, int64_t n_vocab, const int32_t* history,
                                  int64_t n_history) {
    run_chain(logits, n_vocab, history, n_history);
    std::vector<float> out(static_cast<size_t>(n_vocab), 0.0f);
    for (size_t i = 0; i < cand_.size(); ++i) out[static_cast<size_t>(cand_[i].id)] = prob_[i];
    return out;
}

}  // namespace decollama
