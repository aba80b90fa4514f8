// A conversation kept in the model's KV cache. Each turn evaluates only what the cache lacks:
// the rendered text of the new user message (the difference between the template's rendering
// with it and without it) — never the history again. The answer's own tokens stay as generated,
// and every turn, finished, cut at the token limit or interrupted, is closed with the template's
// end-of-turn text so the cache always holds a well-formed conversation.
#pragma once
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "chat/chat_template.h"
#include "chat/generator.h"

namespace decollama {

struct ChatOptions {
    std::string system_prompt;  // "": none
    int64_t n_predict = -1;     // tokens per answer; < 0: until the end of the turn
    // When a message or an answer does not fit: drop the oldest turns (the system prompt stays)
    // and evaluate the kept conversation again. Otherwise the turn ends with ContextFull.
    bool ctx_shift = false;
    bool verbose = false;       // "[eval N tokens]" on the log for every batch evaluated
};

enum class TurnEnd {
    EndOfTurn,    // the model ended its answer
    Length,       // n_predict tokens
    Interrupted,
    ContextFull,  // the message was not taken (nothing changed) or the answer filled the context
};

class ChatSession {
public:
    // generator, tokenizer and log must outlive the session; the generator's cache must be empty.
    ChatSession(Generator& generator, const Tokenizer& tokenizer, ChatTemplate chat, ChatOptions options,
                std::ostream& log);

    // Adds the user's message, evaluates it and streams the answer to emit. interrupted() is
    // polled between tokens. Throws InvalidArgument when the template rejects the conversation.
    TurnEnd respond(const std::string& user_text, const TextSink& emit, const std::function<bool()>& interrupted);

    // Forgets the conversation (the system prompt stays) and empties the cache.
    void reset();

    const std::vector<ChatMessage>& messages() const { return messages_; }
    const ChatTemplate& chat_template() const { return chat_; }

private:
    // Evaluates from scratch the conversation less its oldest turns, followed by partial_answer
    // (the answer being generated). False, with nothing changed, when no turn can go or the
    // rest still does not fit.
    bool shift_context(const std::string& partial_answer);
    // Puts the pending token and the end-of-turn text in the cache; records the answer.
    void close_turn(const std::vector<int32_t>& answer, bool last_pending);
    void eval(const std::vector<int32_t>& tokens, bool want_logits, const char* what);
    int64_t first_turn() const { return options_.system_prompt.empty() ? 0 : 1; }

    Generator& gen_;
    const Tokenizer& tokenizer_;
    ChatTemplate chat_;
    ChatOptions options_;
    std::ostream& log_;
    std::vector<int32_t> end_of_turn_tokens_;  // closes an answer in the cache
    std::vector<int32_t> end_of_turn_ids_;     // sampled, they end an answer
    std::vector<ChatMessage> messages_;        // what the cache holds: system, then the turns
    std::string rendered_;                     // the template's text for what the cache holds
};

}  // namespace decollama
