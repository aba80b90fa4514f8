#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace decollama::byte_level {

namespace {

// Printable bytes ('!'..'~', U+00A1..U+00AC, U+00AE..U+00FF) stand for themselves; the other 68
// take U+0100, U+0101... in byte order. 256 + 68 code points bound the inverse table.
constexpr uint32_t kAlphabetEnd = 256 + 68;

constexpr bool is_self_mapped(uint32_t b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct Alphabet {
    std::array<uint16_t, 256> to_cp{};
    std::array<int16_t, kAlphabetEnd> to_byte{};
};

constexpr Alphabet make_alphabet() {
    Alphabet a{};
    for (auto& v : a.to_byte) v = -1;
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
        const uint32_t cp = is_self_mapped(b) ? b : next++;
        a.to_cp[b] = static_cast<uint16_t>(cp);
        a.to_byte[cp] = static_cast<int16_t>(b);
    }
    return a;
}

constexpr Alphabet kAlphabet = make_alphabet();

}  // namespace

uint32_t byte_to_codepoint(uint8_t b) { return kAlphabet.to_cp[b]; }

int codepoint_to_byte(uint32_t cp) { return cp < kAlphabetEnd ? kAlphabet.to_byte[cp] : -1; }

void encode(std::string_view bytes, std::string& out) {
    for (const char c : bytes) utf8::append(out, byte_to_codepoint(static_cast<uint8_t>(c)));
}

bool decode(std::string_view spelled, std::string& out) {
    for (size_t pos = 0; pos < spelled.size();) {
        const utf8::DecodedChar c = utf8::decode(spelled, pos);
        const int b = c.status == utf8::DecodeStatus::Valid ? codepoint_to_byte(c.cp) : -1;
        if (b < 0) return false;
        out += static_cast<char>(b);
        pos += c.size;
    }
    return true;
}

}  // namespace decollama::byte_level
