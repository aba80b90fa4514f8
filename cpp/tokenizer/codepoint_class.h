// Unicode classes of a code point, as the pre-tokenizer regexes use them (\p{L}, \p{N}, \s...).
#pragma once
#include <cstdint>

#include "tokenizer/unicode_tables.h"

namespace decollama::unicode {

class CodepointClass {
public:
    CodepointClass() = default;
    explicit CodepointClass(uint8_t flags) : flags_(flags) {}

    MajorCategory category() const { return static_cast<MajorCategory>(flags_ & kCategoryMask); }
    bool is_letter() const { return category() == MajorCategory::Letter; }
    bool is_number() const { return category() == MajorCategory::Number; }
    bool is_punctuation() const { return category() == MajorCategory::Punctuation; }
    bool is_whitespace() const { return (flags_ & kWhitespaceBit) != 0; }  // White_Space, i.e. \s

private:
    uint8_t flags_ = 0;
};

// Any value is accepted: code points past U+10FFFF or in no range are Other, not whitespace.
CodepointClass classify(uint32_t cp);

}  // namespace decollama::unicode
