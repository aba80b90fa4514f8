#include "tokenizer/bpe_tokenizer.h"

#include <cstdint>
#include <queue>

#include "common/error.h"
#include "tokenizer/byte_level.h"

namespace decollama {

namespace {

constexpr size_t kNone = SIZE_MAX;  // no neighbour

// A run of bytes of the word, holding token `id`; the live ones form a doubly linked list.
struct Symbol {
    int32_t id;  // -1: a byte the vocabulary cannot spell, which never merges
    bool alive;
    size_t prev;
    size_t next;
};

// Merging the symbol at `left` with its right neighbour, as they were when queued.
struct Candidate {
    int32_t rank;
    size_t left;
    size_t right;
    int32_t left_id;
    int32_t right_id;
    int32_t result;
};

// Lowest rank first; on ties (the same pair in several places) the leftmost.
struct WorseCandidate {
    bool operator()(const Candidate& a, const Candidate& b) const {
        if (a.rank != b.rank) return a.rank > b.rank;
        return a.left > b.left;
    }
};

}  // namespace

BpeTokenizer::BpeTokenizer(const TokenizerVocab& vocab, const PieceIndex& index, PreTokenizerKind pre,
                           bool ignore_merges)
    : vocab_(vocab), index_(index), pre_(pre), ignore_merges_(ignore_merges) {
    std::string spelled;
    for (int b = 0; b < 256; ++b) {
        const char byte = static_cast<char>(b);
        spelled.clear();
        byte_level::encode(std::string_view(&byte, 1), spelled);
        byte_tokens_[b] = index_.find(spelled);
    }

    merges_.reserve(vocab.merges.size());
    for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
        const std::string& merge = vocab.merges[rank];
        const auto fail = [&](const std::string& why) {
            throw InvalidArgument("tokenizer.ggml.merges: merge " + std::to_string(rank) + " '" + merge + "' " + why);
        };
        const size_t space = merge.find(' ');
        if (space == std::string::npos || space == 0 || space + 1 == merge.size()) fail("is not 'left right'");
        const std::string_view left(merge.data(), space);
        const std::string_view right(merge.data() + space + 1, merge.size() - space - 1);
        const int32_t left_id = index_.find(left);
        const int32_t right_id = index_.find(right);
        const int32_t result = index_.find(std::string(left) + std::string(right));
        if (left_id < 0 || right_id < 0 || result < 0) fail("names a piece that is not in the vocabulary");
        // A pair listed twice keeps its first, better rank.
        merges_.try_emplace(pair_key(left_id, right_id), Merge{static_cast<int32_t>(rank), result});
    }
}

void BpeTokenizer::encode(std::string_view text, std::vector<int32_t>& out) const {
    std::vector<std::string_view> words;
    pre_tokenize(pre_, text, words);
    for (const std::string_view word : words) encode_word(word, out);
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
    if (ignore_merges_) {
        std::string spelled;
        byte_level::encode(word, spelled);
        if (const int32_t id = index_.find(spelled); id >= 0) {
            out.push_back(id);
            return;
        }
    }

    std::vector<Symbol> symbols;
    symbols.reserve(word.size());
    for (size_t i = 0; i < word.size(); ++i) {
        symbols.push_back({byte_tokens_[static_cast<uint8_t>(word[i])], true, i == 0 ? kNone : i - 1, i + 1});
    }
    if (symbols.empty()) return;
    symbols.back().next = kNone;

    std::priority_queue<Candidate, std::vector<Candidate>, WorseCandidate> queue;
    const auto consider = [&](size_t left, size_t right) {
        if (left == kNone || right == kNone) return;
        const int32_t left_id = symbols[left].id;
        const int32_t right_id = symbols[right].id;
        if (left_id < 0 || right_id < 0) return;
        const auto it = merges_.find(pair_key(left_id, right_id));
        if (it != merges_.end()) queue.push({it->second.rank, left, right, left_id, right_id, it->second.result});
    };
    for (size_t i = 1; i < symbols.size(); ++i) consider(i - 1, i);

    while (!queue.empty()) {
        const Candidate c = queue.top();
        queue.pop();
        Symbol& left = symbols[c.left];
        Symbol& right = symbols[c.right];
        // Stale when either side has merged since: a dead symbol, a new neighbour or a new id.
        if (!left.alive || !right.alive || left.next != c.right || left.id != c.left_id || right.id != c.right_id) {
            continue;
        }
        left.id = c.result;
        right.alive = false;
        left.next = right.next;
        if (right.next != kNone) symbols[right.next].prev = c.left;
        consider(left.prev, c.left);
        consider(c.left, left.next);
    }

    for (size_t i = 0; i != kNone; i = symbols[i].next) {
        if (symbols[i].id >= 0) {
            out.push_back(symbols[i].id);
        } else if (vocab_.unk_id >= 0) {
            out.push_back(vocab_.unk_id);
        }
    }
}

}  // namespace decollama
