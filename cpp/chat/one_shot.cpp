#include "chat/one_shot.h"

#include <algorithm>
#include <string>

#include "common/error.h"
#include "tokenizer/token_stream.h"
#include "tokenizer/tokenizer.h"

namespace decollama {

OneShotResult run_one_shot(Generator& generator, const Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                           int64_t n_predict, const std::vector<int32_t>& extra_eog, const TextSink& emit,
                           const std::function<bool()>& interrupted, bool verbose, std::ostream& log) {
    const int64_t n_prompt = int64_t(prompt.size());
    if (n_prompt == 0) throw InvalidArgument("the prompt is empty (no tokens to evaluate)");
    if (n_prompt > generator.n_ctx())
        throw InvalidArgument("the prompt is " + std::to_string(n_prompt) + " tokens, longer than the context (" +
                              std::to_string(generator.n_ctx()) + " tokens, -c)");
    if (verbose) log << "[eval " << n_prompt << " tokens]\n";
    generator.eval(prompt, true);

    const int64_t room = generator.n_ctx() - n_prompt + 1;  // the last new token is never evaluated
    const int64_t max_new = n_predict < 0 ? room : std::min(n_predict, room);
    TokenStream stream(tokenizer);
    // Shown the prompt's last token first, the stream keeps the answer's leading space.
    if (tokenizer.add_space_prefix()) stream.push(prompt.back());
    const Generated g = generator.generate(max_new, extra_eog, stream, emit, interrupted);
    emit(stream.flush());

    OneShotResult result;
    result.reason = g.reason;
    result.context_full = g.reason == StopReason::Limit && (n_predict < 0 || n_predict > room);
    return result;
}

}  // namespace decollama
