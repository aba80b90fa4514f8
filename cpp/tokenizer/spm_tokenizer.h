// SentencePiece BPE (tokenizer.ggml.model "llama": Llama 2, Gemma): spaces become U+2581 "▁",
// then adjacent pieces merge, best score first, as long as the merged piece is in the
// vocabulary; characters no token spells fall back to <0xXX> byte tokens.
#pragma once
#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/piece_index.h"
#include "tokenizer/vocab.h"

namespace decollama {

class SpmTokenizer {
public:
    // Both must outlive the tokenizer.
    SpmTokenizer(const TokenizerVocab& vocab, const PieceIndex& index);

    // Appends the tokens of text, a stretch holding no special token. With space_prefix, a "▁"
    // goes in front first (SentencePiece's dummy prefix).
    void encode(std::string_view text, bool space_prefix, std::vector<int32_t>& out) const;

private:
    // The id of a piece merges may produce or keep: a Normal or UserDefined token (what
    // SentencePiece's own piece table holds), else -1.
    int32_t mergeable_id(std::string_view piece) const;
    void append_byte_fallback(std::string_view character, std::vector<int32_t>& out) const;

    const TokenizerVocab& vocab_;
    const PieceIndex& index_;
    std::array<int32_t, 256> byte_tokens_;  // <0xXX> ids, -1 when absent
};

}  // namespace decollama
