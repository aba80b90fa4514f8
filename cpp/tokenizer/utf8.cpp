#include "tokenizer/utf8.h"

namespace decollama::utf8 {

namespace {

// Well-formed sequences (Unicode Table 3-7): the lead byte fixes the length and the range the
// second byte may take (excluding overlongs, surrogates and values past U+10FFFF); every later
// byte is 80..BF.
struct LeadByte {
    uint8_t size;  // 0: never a lead byte
    uint8_t second_lo;
    uint8_t second_hi;
};

LeadByte lead_byte(uint8_t b) {
    if (b < 0x80) return {1, 0, 0};
    if (b >= 0xC2 && b <= 0xDF) return {2, 0x80, 0xBF};
    if (b == 0xE0) return {3, 0xA0, 0xBF};
    if (b == 0xED) return {3, 0x80, 0x9F};
    if (b >= 0xE1 && b <= 0xEF) return {3, 0x80, 0xBF};
    if (b == 0xF0) return {4, 0x90, 0xBF};
    if (b >= 0xF1 && b <= 0xF3) return {4, 0x80, 0xBF};
    if (b == 0xF4) return {4, 0x80, 0x8F};
    return {0, 0, 0};
}

}  // namespace

DecodedChar decode(std::string_view text, size_t pos) {
    const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
    const uint8_t b0 = byte(pos);
    const LeadByte lead = lead_byte(b0);
    if (lead.size == 1) return {b0, 1, DecodeStatus::Valid};
    if (lead.size == 0) return {kReplacementChar, 1, DecodeStatus::Invalid};

    uint32_t cp = b0 & (0xFF >> (lead.size + 1));
    for (uint32_t k = 1; k < lead.size; ++k) {
        if (pos + k >= text.size()) return {kReplacementChar, k, DecodeStatus::Truncated};
        const uint8_t b = byte(pos + k);
        const uint8_t lo = k == 1 ? lead.second_lo : 0x80;
        const uint8_t hi = k == 1 ? lead.second_hi : 0xBF;
        if (b < lo || b > hi) return {kReplacementChar, k, DecodeStatus::Invalid};
        cp = (cp << 6) | (b & 0x3F);
    }
    return {cp, lead.size, DecodeStatus::Valid};
}

void append(std::string& out, uint32_t cp) {
    if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) cp = kReplacementChar;
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

std::string sanitize(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
        const DecodedChar c = decode(text, pos);
        if (c.status == DecodeStatus::Valid) {
            out.append(text.substr(pos, c.size));
        } else {
            append(out, kReplacementChar);
        }
        pos += c.size;
    }
    return out;
}

}  // namespace decollama::utf8
