#include "tokenizer/token_stream.h"

#include "tokenizer/utf8.h"

namespace decollama {

TokenStream::TokenStream(const Tokenizer& tokenizer, bool render_special)
    : tokenizer_(tokenizer), render_special_(render_special) {}

std::string TokenStream::push(int32_t id) {
    std::string piece = tokenizer_.token_to_piece(id, render_special_);
    if (piece.empty()) return {};
    // The same leading-space rule as Tokenizer::detokenize, so the stream adds up to it.
    if (at_start_ && tokenizer_.add_space_prefix() && piece[0] == ' ') piece.erase(0, 1);
    at_start_ = false;
    pending_ += piece;

    std::string out;
    size_t pos = 0;
    while (pos < pending_.size()) {
        const utf8::DecodedChar c = utf8::decode(pending_, pos);
        if (c.status == utf8::DecodeStatus::Truncated) break;  // the next token may complete it
        if (c.status == utf8::DecodeStatus::Valid) {
            out.append(pending_, pos, c.size);
        } else {
            utf8::append(out, utf8::kReplacementChar);
        }
        pos += c.size;
    }
    pending_.erase(0, pos);
    return out;
}

std::string TokenStream::flush() {
    std::string out = utf8::sanitize(pending_);
    pending_.clear();
    at_start_ = true;
    return out;
}

}  // namespace decollama
