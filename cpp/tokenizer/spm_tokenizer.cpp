#include "tokenizer/spm_tokenizer.h"

#include <cstdint>
#include <cstdio>
#include <queue>
#include <string>

#include "tokenizer/utf8.h"

namespace decollama {

namespace {

constexpr std::string_view kSpaceMark = "\xE2\x96\x81";  // U+2581, SentencePiece's stand-in for ' '

constexpr size_t kNone = SIZE_MAX;  // no neighbour

// A piece of the text being merged; the live ones form a doubly linked list.
struct Symbol {
    size_t begin;
    size_t size;  // 0 once merged into its left neighbour
    size_t prev;
    size_t next;
};

// Merging the symbols at `left` and its right neighbour, whose sizes add up to `size`, would
// make a token of this score. Stale once either symbol has changed: sizes only grow, so an
// unchanged sum means both are as they were.
struct Candidate {
    float score;
    size_t left;
    size_t right;
    size_t size;
};

// Best score first; on ties the leftmost pair, as SentencePiece does.
struct WorseCandidate {
    bool operator()(const Candidate& a, const Candidate& b) const {
        if (a.score != b.score) return a.score < b.score;
        return a.left > b.left;
    }
};

}  // namespace

SpmTokenizer::SpmTokenizer(const TokenizerVocab& vocab, const PieceIndex& index) : vocab_(vocab), index_(index) {
    for (int b = 0; b < 256; ++b) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", b);
        const int32_t id = index_.find(name);
        const bool is_byte = id >= 0 && (vocab_.types.empty() || vocab_.types[id] == TokenType::Byte);
        byte_tokens_[b] = is_byte ? id : -1;
    }
}

int32_t SpmTokenizer::mergeable_id(std::string_view piece) const {
    const int32_t id = index_.find(piece);
    if (id < 0 || vocab_.types.empty()) return id;
    const TokenType t = vocab_.types[id];
    return (t == TokenType::Normal || t == TokenType::UserDefined || t == TokenType::Undefined) ? id : -1;
}

void SpmTokenizer::append_byte_fallback(std::string_view character, std::vector<int32_t>& out) const {
    for (const char c : character) {
        if (byte_tokens_[static_cast<uint8_t>(c)] < 0) {
            // No byte token for some byte: the character as a whole is unknown (dropped when the
            // vocabulary has no unknown token either).
            if (vocab_.unk_id >= 0) out.push_back(vocab_.unk_id);
            return;
        }
    }
    for (const char c : character) out.push_back(byte_tokens_[static_cast<uint8_t>(c)]);
}

void SpmTokenizer::encode(std::string_view raw, bool space_prefix, std::vector<int32_t>& out) const {
    std::string text;
    text.reserve(raw.size() + 8);
    if (space_prefix) text += kSpaceMark;
    for (const char c : raw) {
        if (c == ' ') {
            text += kSpaceMark;
        } else {
            text += c;
        }
    }
    if (text.empty()) return;

    // One symbol per character; an ill-formed byte sequence is a character of its own, which
    // only byte fallback can spell.
    std::vector<Symbol> symbols;
    symbols.reserve(text.size());
    for (size_t pos = 0; pos < text.size();) {
        const size_t size = utf8::decode(text, pos).size;
        const size_t index = symbols.size();
        symbols.push_back({pos, size, index == 0 ? kNone : index - 1, index + 1});
        pos += size;
    }
    symbols.back().next = kNone;

    std::priority_queue<Candidate, std::vector<Candidate>, WorseCandidate> queue;
    const auto consider = [&](size_t left, size_t right) {
        if (left == kNone || right == kNone) return;
        const size_t size = symbols[left].size + symbols[right].size;
        const int32_t id = mergeable_id(std::string_view(text).substr(symbols[left].begin, size));
        if (id < 0) return;
        const float score = vocab_.scores.empty() ? 0.0f : vocab_.scores[id];
        queue.push({score, left, right, size});
    };
    for (size_t i = 1; i < symbols.size(); ++i) consider(i - 1, i);

    while (!queue.empty()) {
        const Candidate c = queue.top();
        queue.pop();
        Symbol& left = symbols[c.left];
        Symbol& right = symbols[c.right];
        if (left.size == 0 || right.size == 0 || left.size + right.size != c.size) continue;

        left.size += right.size;
        right.size = 0;
        left.next = right.next;
        if (right.next != kNone) symbols[right.next].prev = c.left;
        consider(left.prev, c.left);
        consider(c.left, left.next);
    }

    for (size_t i = 0; i != kNone; i = symbols[i].next) {
        const std::string_view piece = std::string_view(text).substr(symbols[i].begin, symbols[i].size);
        // Every merged piece is a token; only a lone character can be missing from the vocabulary.
        const int32_t id = mergeable_id(piece);
        if (id >= 0) {
            out.push_back(id);
        } else {
            append_byte_fallback(piece, out);
        }
    }
}

}  // namespace decollama
