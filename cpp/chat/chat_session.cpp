#include "chat/chat_session.h"

#include <algorithm>

#include "common/error.h"
#include "tokenizer/token_stream.h"
#include "tokenizer/tokenizer.h"

namespace decollama {

namespace {

bool starts_with(const std::string& text, const std::string& prefix) {
    return text.size() >= prefix.size() && text.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

ChatSession::ChatSession(Generator& generator, const Tokenizer& tokenizer, ChatTemplate chat, ChatOptions options,
                         std::ostream& log)
    : gen_(generator),
      tokenizer_(tokenizer),
      chat_(std::move(chat)),
      options_(std::move(options)),
      log_(log),
      end_of_turn_tokens_(tokenizer.tokenize(chat_.end_of_turn(), false, /*parse_special=*/true)),
      end_of_turn_ids_(end_of_turn_ids(tokenizer, chat_)) {
    reset();
}

void ChatSession::reset() {
    gen_.reset();
    messages_.clear();
    if (!options_.system_prompt.empty()) messages_.push_back({"system", options_.system_prompt});
    rendered_.clear();
}

void ChatSession::eval(const std::vector<int32_t>& tokens, bool want_logits, const char* what) {
    if (options_.verbose) log_ << "[eval " << tokens.size() << " tokens" << what << "]\n";
    gen_.eval(tokens, want_logits);
}

TurnEnd ChatSession::respond(const std::string& user_text, const TextSink& emit,
                             const std::function<bool()>& interrupted) {
    messages_.push_back({"user", user_text});
    std::string prompt;
    try {
        prompt = chat_.render(messages_, /*add_generation_prompt=*/true);
    } catch (...) {
        messages_.pop_back();
        throw;
    }
    // Only the text past what the cache holds is new. The built-in templates only ever append;
    // should a rendering rewrite earlier text, the conversation is evaluated again from scratch.
    const bool continues = gen_.n_past() > 0 && starts_with(prompt, rendered_);
    const std::vector<int32_t> delta =
        continues ? tokenizer_.tokenize(prompt.substr(rendered_.size()), false, /*parse_special=*/true)
                  : tokenize_chat_prompt(tokenizer_, chat_, prompt);
    // Room for the message, one answer token and the end of the turn.
    const int64_t needed = (continues ? gen_.n_past() : 0) + int64_t(delta.size() + end_of_turn_tokens_.size()) + 1;
    if (needed > gen_.n_ctx()) {
        if (!options_.ctx_shift || !shift_context("")) {
            messages_.pop_back();
            log_ << "[context full: the message needs " << delta.size() << " tokens and " << gen_.n_past() << " of "
                 << gen_.n_ctx() << " are in use; /reset starts over"
                 << (options_.ctx_shift ? "" : ", --ctx-shift drops old turns instead") << "]\n";
            return TurnEnd::ContextFull;
        }
    } else {
        if (!continues) gen_.reset();
        eval(delta, true, "");
        rendered_ = prompt;
    }

    TokenStream stream(tokenizer_);
    // A fresh stream drops the first piece's leading space (the SentencePiece dummy prefix);
    // showing it the prompt's last token first keeps the answer's own leading space.
    if (tokenizer_.add_space_prefix()) stream.push(gen_.tokens().back());
    std::vector<int32_t> answer;
    bool last_pending = false;
    TurnEnd end;
    for (;;) {
        const int64_t room = gen_.n_ctx() - gen_.n_past() - int64_t(end_of_turn_tokens_.size());
        const int64_t budget =
            options_.n_predict < 0 ? room : std::min<int64_t>(room, options_.n_predict - int64_t(answer.size()));
        const Generated g = gen_.generate(budget, end_of_turn_ids_, stream, emit, interrupted);
        answer.insert(answer.end(), g.tokens.begin(), g.tokens.end());
        last_pending = g.last_pending;
        if (g.reason == StopReason::EndOfGeneration) {
            end = TurnEnd::EndOfTurn;
        } else if (g.reason == StopReason::Interrupted) {
            end = TurnEnd::Interrupted;
        } else if (options_.n_predict >= 0 && int64_t(answer.size()) >= options_.n_predict) {
            end = TurnEnd::Length;
        } else {
            std::string so_far;
            for (int32_t t : answer) so_far += tokenizer_.token_to_piece(t);
            if (options_.ctx_shift && shift_context(so_far)) continue;
            end = TurnEnd::ContextFull;
            log_ << "\n[context full: " << gen_.n_ctx() << " tokens; the answer stops here; /reset starts over"
                 << (options_.ctx_shift ? "" : ", --ctx-shift drops old turns instead") << "]\n";
        }
        break;
    }
    emit(stream.flush());
    close_turn(answer, last_pending);
    return end;
}

bool ChatSession::shift_context(const std::string& partial_answer) {
    std::vector<ChatMessage> kept = messages_;  // ends with the user message being answered
    auto tokens_of = [&] {
        return tokenize_chat_prompt(tokenizer_, chat_, chat_.render(kept, true) + partial_answer);
    };
    // Drop whole (user, assistant) pairs, oldest first, until at most half the context is used:
    // room for this answer and the next turns before shifting again.
    std::vector<int32_t> tokens;
    int64_t dropped = 0;
    while (int64_t(kept.size()) - first_turn() >= 3 && (dropped == 0 || int64_t(tokens.size()) > gen_.n_ctx() / 2)) {
        kept.erase(kept.begin() + first_turn(), kept.begin() + first_turn() + 2);
        ++dropped;
        tokens = tokens_of();
    }
    const int64_t fits = gen_.n_ctx() - int64_t(end_of_turn_tokens_.size()) - 1;
    if (dropped == 0 || int64_t(tokens.size()) > fits) return false;
    log_ << "[context full: dropped the " << dropped << " oldest turn" << (dropped > 1 ? "s" : "")
         << ", evaluating the " << tokens.size() << " tokens kept]\n";
    gen_.reset();
    eval(tokens, true, ": context shift");
    messages_ = std::move(kept);
    rendered_ = chat_.render(messages_, true);
    return true;
}

void ChatSession::close_turn(const std::vector<int32_t>& answer, bool last_pending) {
    std::vector<int32_t> closing;
    closing.reserve(end_of_turn_tokens_.size() + 1);
    if (last_pending) closing.push_back(answer.back());
    for (int32_t t : end_of_turn_tokens_) closing.push_back(t);
    eval(closing, false, ": end of turn");
    // The answer as the model wrote it (pieces, not a re-tokenization): the template renders it
    // only to find where the next message's text begins.
    std::string content;
    for (int32_t t : answer) content += tokenizer_.token_to_piece(t);
    messages_.push_back({"assistant", std::move(content)});
    rendered_ = chat_.render(messages_, false);
}

}  // namespace decollama
