#include "tokenizer/pre_tokenizer.h"

#include <cstdint>

#include "common/error.h"
#include "tokenizer/codepoint_class.h"
#include "tokenizer/utf8.h"

namespace decollama {

namespace {

struct NamedKind {
    const char* name;
    PreTokenizerKind kind;
};

// The tokenizer.ggml.pre names llama.cpp's converter writes for each split expression, plus
// "gpt2". "default" is what the converter writes for a BPE vocabulary it does not recognise;
// GPT-2's expression is then the one HF's ByteLevel pre-tokenizer applies.
constexpr NamedKind kNames[] = {
    {"gpt2", PreTokenizerKind::Gpt2},        {"gpt-2", PreTokenizerKind::Gpt2},
    {"phi-2", PreTokenizerKind::Gpt2},       {"default", PreTokenizerKind::Gpt2},
    {"llama-bpe", PreTokenizerKind::Llama3}, {"llama3", PreTokenizerKind::Llama3},
    {"llama-v3", PreTokenizerKind::Llama3},  {"qwen2", PreTokenizerKind::Qwen2},
    {"deepseek-r1-qwen", PreTokenizerKind::Qwen2}, {"smollm", PreTokenizerKind::SmolLM},
};

// The text decoded once, so the scanners can look ahead by code points.
class CodepointText {
public:
    explicit CodepointText(std::string_view text) {
        cps_.reserve(text.size());
        classes_.reserve(text.size());
        offsets_.reserve(text.size() + 1);
        for (size_t pos = 0; pos < text.size();) {
            const utf8::DecodedChar c = utf8::decode(text, pos);
            cps_.push_back(c.cp);
            classes_.push_back(unicode::classify(c.cp));
            offsets_.push_back(pos);
            pos += c.size;
        }
        offsets_.push_back(text.size());
    }

    size_t size() const { return cps_.size(); }
    size_t byte_offset(size_t i) const { return offsets_[i]; }

    // Out-of-range positions answer false, which is what the regex lookaheads need at the end.
    bool is(size_t i, uint32_t cp) const { return i < size() && cps_[i] == cp; }
    bool letter(size_t i) const { return i < size() && classes_[i].is_letter(); }
    bool number(size_t i) const { return i < size() && classes_[i].is_number(); }
    bool space(size_t i) const { return i < size() && classes_[i].is_whitespace(); }
    bool newline(size_t i) const { return is(i, '\r') || is(i, '\n'); }
    // [^\s\p{L}\p{N}]
    bool other(size_t i) const { return i < size() && !space(i) && !letter(i) && !number(i); }
    uint32_t at(size_t i) const { return i < size() ? cps_[i] : 0; }

    template <typename Pred>
    size_t skip(size_t i, Pred pred) const {
        while (pred(i)) ++i;
        return i;
    }

private:
    std::vector<uint32_t> cps_;
    std::vector<unicode::CodepointClass> classes_;
    std::vector<size_t> offsets_;
};

// Simple case folding of the letters the contraction alternatives use: ASCII capitals, and
// U+017F LATIN SMALL LETTER LONG S, which folds to 's'.
uint32_t fold_case(uint32_t cp) {
    if (cp >= 'A' && cp <= 'Z') return cp + ('a' - 'A');
    if (cp == 0x017F) return 's';
    return cp;
}

// 's|'t|'re|'ve|'m|'ll|'d at i, case-insensitively when asked: the end, or i when none matches.
size_t match_contraction(const CodepointText& t, size_t i, bool ignore_case) {
    if (!t.is(i, '\'')) return i;
    const auto c = [&](size_t k) { return ignore_case ? fold_case(t.at(k)) : t.at(k); };
    const uint32_t c1 = c(i + 1);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return i + 2;
    const uint32_t c2 = c(i + 2);
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return i + 3;
    return i;
}

// \s+(?!\S)|\s+ at i, where t.space(i): a whitespace run gives its last character to the word
// that follows, unless the run is a single character or ends the text.
size_t match_whitespace_tail(const CodepointText& t, size_t i) {
    const size_t end = t.skip(i, [&](size_t k) { return t.space(k); });
    if (end < t.size() && end - i >= 2) return end - 1;
    return end;
}

size_t scan_gpt2(const CodepointText& t, size_t i) {
    if (size_t e = match_contraction(t, i, false); e != i) return e;
    const size_t body = t.is(i, ' ') ? i + 1 : i;  // the optional leading space
    if (t.letter(body)) return t.skip(body, [&](size_t k) { return t.letter(k); });
    if (t.number(body)) return t.skip(body, [&](size_t k) { return t.number(k); });
    if (t.other(body)) return t.skip(body, [&](size_t k) { return t.other(k); });
    return match_whitespace_tail(t, i);
}

size_t scan_llama3(const CodepointText& t, size_t i, size_t max_digits) {
    if (size_t e = match_contraction(t, i, true); e != i) return e;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (t.letter(i)) return t.skip(i, [&](size_t k) { return t.letter(k); });
    if (!t.newline(i) && !t.number(i) && t.letter(i + 1))
        return t.skip(i + 1, [&](size_t k) { return t.letter(k); });
    // \p{N}{1,max_digits}
    if (t.number(i)) {
        size_t e = i;
        while (e - i < max_digits && t.number(e)) ++e;
        return e;
    }
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    const size_t body = t.is(i, ' ') && t.other(i + 1) ? i + 1 : i;
    if (t.other(body)) {
        const size_t e = t.skip(body, [&](size_t k) { return t.other(k); });
        return t.skip(e, [&](size_t k) { return t.newline(k); });
    }
    // Only whitespace is left. \s*[\r\n]+ ends the match after the run's last line break.
    const size_t run_end = t.skip(i, [&](size_t k) { return t.space(k); });
    for (size_t k = run_end; k > i; --k) {
        if (t.newline(k - 1)) return k;
    }
    return match_whitespace_tail(t, i);
}

template <typename Scanner>
void split_with(const CodepointText& t, std::string_view text, Scanner scan, std::vector<std::string_view>& words) {
    for (size_t i = 0; i < t.size();) {
        const size_t e = scan(i);
        words.push_back(text.substr(t.byte_offset(i), t.byte_offset(e) - t.byte_offset(i)));
        i = e;
    }
}

void split_gpt2(std::string_view text, std::vector<std::string_view>& words) {
    const CodepointText t(text);
    split_with(t, text, [&](size_t i) { return scan_gpt2(t, i); }, words);
}

// HF splits the digits off first and then applies the GPT-2 expression to each remaining piece on
// its own, so no lookahead crosses a digit: each digit-free stretch is scanned as a text of its own.
void split_smollm(std::string_view text, std::vector<std::string_view>& words) {
    const CodepointText t(text);
    for (size_t i = 0; i < t.size();) {
        const size_t e = t.number(i) ? i + 1 : t.skip(i, [&](size_t k) { return k < t.size() && !t.number(k); });
        const std::string_view piece = text.substr(t.byte_offset(i), t.byte_offset(e) - t.byte_offset(i));
        if (t.number(i)) {
            words.push_back(piece);
        } else {
            split_gpt2(piece, words);
        }
        i = e;
    }
}

}  // namespace

PreTokenizerKind pre_tokenizer_from_name(const std::string& name) {
    for (const NamedKind& n : kNames) {
        if (name == n.name) return n.kind;
    }
    std::string known;
    for (const NamedKind& n : kNames) known += std::string(known.empty() ? "" : ", ") + n.name;
    throw InvalidArgument("tokenizer.ggml.pre: unsupported pre-tokenizer '" + name + "' (supported: " + known + ")");
}

void pre_tokenize(PreTokenizerKind kind, std::string_view text, std::vector<std::string_view>& words) {
    switch (kind) {
        case PreTokenizerKind::Gpt2:
            split_gpt2(text, words);
            return;
        case PreTokenizerKind::SmolLM:
            split_smollm(text, words);
            return;
        case PreTokenizerKind::Llama3:
        case PreTokenizerKind::Qwen2: {
            const CodepointText t(text);
            const size_t max_digits = kind == PreTokenizerKind::Llama3 ? 3 : 1;
            split_with(t, text, [&](size_t i) { return scan_llama3(t, i, max_digits); }, words);
            return;
        }
    }
}

}  // namespace decollama
