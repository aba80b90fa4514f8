// Incremental detokenization for streaming generation: tokens go in one at a time and only
// complete UTF-8 comes out, so a character split across tokens (byte-fallback emoji, byte-level
// BPE pieces) appears once whole.
#pragma once
#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"

namespace decollama {

class TokenStream {
public:
    // The tokenizer must outlive the stream.
    explicit TokenStream(const Tokenizer& tokenizer, bool render_special = false);

    // The text that token completes: valid UTF-8, possibly empty. A partial character at the end
    // is held back; an ill-formed sequence comes out as U+FFFD. Throws InvalidArgument for an id
    // out of range (the stream is unchanged).
    std::string push(int32_t id);

    // Whatever is held back, as U+FFFD, and a fresh start (the next push is a first token again).
    std::string flush();

    const Tokenizer& tokenizer() const { return tokenizer_; }

private:
    const Tokenizer& tokenizer_;
    bool render_special_;
    bool at_start_ = true;  // no non-empty piece yet: the dummy-prefix space is still to strip
    std::string pending_;   // bytes not emitted yet: at most a partial character
};

}  // namespace decollama
