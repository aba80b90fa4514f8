// One prompt, one answer, as Llama.generate / create_chat_completion produce it: the prompt's
// tokens evaluated at once, then up to n_predict tokens sampled.
#pragma once
#include <cstdint>
#include <functional>
#include <ostream>
#include <vector>

#include "chat/generator.h"

namespace decollama {

struct OneShotResult {
    StopReason reason = StopReason::Limit;
    bool context_full = false;  // stopped because the context had no room for more tokens
};

// Evaluates prompt into the generator's empty cache and streams the continuation to emit:
// at most n_predict tokens (< 0: until an end-of-generation token or the context is full; the
// last token needs no room, as in Llama.generate). verbose writes "[eval N tokens]" to log.
// Throws InvalidArgument when the prompt is empty or longer than the context.
OneShotResult run_one_shot(Generator& generator, const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                           int64_t n_predict, const std::vector<int32_t>& extra_eog, const TextSink& emit,
                           const std::function<bool()>& interrupted, bool verbose, std::ostream& log);

}  // namespace decollama
