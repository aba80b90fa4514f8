// UTF-8 decoding and encoding that accept any byte string. Ill-formed input is never an error:
// each maximal ill-formed subpart (Unicode 15, section 3.9, "U+FFFD substitution of maximal
// subparts", the policy of Python's errors="replace") decodes as one U+FFFD.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace decollama::utf8 {

constexpr uint32_t kReplacementChar = 0xFFFD;

enum class DecodeStatus : uint8_t {
    Valid,      // a complete, well-formed sequence
    Invalid,    // an ill-formed subpart that no following byte can repair
    Truncated,  // a well-formed prefix cut off by the end of the input
};

struct DecodedChar {
    uint32_t cp;    // the code point; kReplacementChar unless status is Valid
    uint32_t size;  // bytes consumed, >= 1
    DecodeStatus status;
};

// Decodes the sequence starting at text[pos]; pos must be < text.size().
DecodedChar decode(std::string_view text, size_t pos);

// Appends the UTF-8 encoding of cp; surrogates and values past U+10FFFF append U+FFFD.
void append(std::string& out, uint32_t cp);

// The text with every ill-formed subpart (a truncated tail included) replaced by U+FFFD.
std::string sanitize(std::string_view text);

}  // namespace decollama::utf8
