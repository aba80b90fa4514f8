// Byte-level BPE (tokenizer.ggml.model "gpt2": Llama 3, Qwen2/3, SmolLM): the pre-tokenizer cuts
// text into words; each word's bytes, spelled in GPT-2's byte alphabet, merge pairwise in the
// order tokenizer.ggml.merges ranks them.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/piece_index.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/vocab.h"

namespace decollama {

class BpeTokenizer {
public:
    // Both must outlive the tokenizer. With ignore_merges, a word the vocabulary holds whole is
    // that token without merging (what Llama 3's tokenizer.json asks for). Throws InvalidArgument
    // naming the merge for one that is malformed or names a piece the vocabulary lacks.
    BpeTokenizer(const TokenizerVocab& vocab, const PieceIndex& index, PreTokenizerKind pre, bool ignore_merges);

    // Appends the tokens of text, a stretch holding no special token.
    void encode(std::string_view text, std::vector<int32_t>& out) const;

private:
    void encode_word(std::string_view word, std::vector<int32_t>& out) const;

    struct Merge {
        int32_t rank;    // position in tokenizer.ggml.merges: lower merges first
        int32_t result;  // the id of the merged piece
    };
    static uint64_t pair_key(int32_t left, int32_t right) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
    }

    const TokenizerVocab& vocab_;
    const PieceIndex& index_;
    PreTokenizerKind pre_;
    bool ignore_merges_;
    std::unordered_map<uint64_t, Merge> merges_;  // keyed by pair_key(left id, right id)
    std::array<int32_t, 256> byte_tokens_;        // the id spelling each single byte, -1 when absent
};

}  // namespace decollama
