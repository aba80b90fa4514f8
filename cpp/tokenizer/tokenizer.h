// Text <-> token ids for the vocabulary a GGUF file describes: SentencePiece BPE ("llama") or
// byte-level BPE ("gpt2"), with the special tokens, BOS and end-of-generation tokens of its
// metadata. Immutable once built: every member is const and safe to call from several threads.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/vocab.h"

namespace decollama {

class GGUFFile;

class Tokenizer {
public:
    // Throws GGUFError for malformed tokenizer metadata, InvalidArgument for a pre-tokenizer or
    // merge it cannot use.
    explicit Tokenizer(const GGUFFile& file);
    // Throws InvalidArgument when vocab.validate() would.
    explicit Tokenizer(TokenizerVocab vocab);
    ~Tokenizer();
    // A moved-from Tokenizer may only be destroyed or assigned to.
    Tokenizer(Tokenizer&&) noexcept;
    Tokenizer& operator=(Tokenizer&&) noexcept;

    // The ids of text, which may be any bytes (ill-formed UTF-8 too). add_bos prepends BOS when
    // the vocabulary has one. UserDefined tokens written in the text are always matched whole;
    // Control ones ("<start_of_turn>", "<|im_start|>") only with parse_special, and are plain
    // text otherwise. Where two such tokens could start, the leftmost wins, then the longest.
    std::vector<int32_t> tokenize(std::string_view text, bool add_bos, bool parse_special) const;

    // The bytes token id stands for: "▁" is a space and <0xXX> its byte (SentencePiece), the
    // byte alphabet is undone (byte-level BPE); Control, Unknown and Unused tokens are "" unless
    // render_special, which gives their text. Throws InvalidArgument for an id out of range.
    std::string token_to_piece(int32_t id, bool render_special = false) const;

    // The pieces of ids joined, less the space the SentencePiece dummy prefix put in front of the
    // first one (as transformers' decode does). Bytes, not necessarily valid UTF-8.
    std::string detokenize(const std::vector<int32_t>& ids, bool render_special = false) const;

    int32_t n_vocab() const;
    const std::string& model() const;  // tokenizer.ggml.model
    const std::string& pre() const;    // tokenizer.ggml.pre
    int32_t bos_id() const;            // -1: none
    int32_t eos_id() const;
    // End of turn: tokenizer.ggml.eot_token_id, else a token with a known end-of-turn text
    // (<end_of_turn>, <|eot_id|>, <|im_end|>...), else -1.
    int32_t eot_id() const;
    // Whether tokenize(text) adds BOS by default: tokenizer.ggml.add_bos_token, else true for
    // SentencePiece and Llama 3 vocabularies (as in llama.cpp); false without a BOS token.
    bool add_bos() const;
    // tokenizer.ggml.add_eos_token. tokenize() never appends EOS; callers that want it read this.
    bool add_eos() const;
    // Whether SentencePiece text gets the dummy "▁" prefix: tokenizer.ggml.add_space_prefix, else
    // true. Always false for byte-level BPE.
    bool add_space_prefix() const;
    // End of generation: EOS, EOT, EOM and tokens with a known end-of-generation text, as
    // llama.cpp defines them. Throws InvalidArgument for an id out of range.
    bool is_eog(int32_t id) const;
    // The id of the token spelled exactly so in the vocabulary ("▁the", "Ġthe", "<|im_end|>"), or -1.
    int32_t token_id(std::string_view piece) const;
    const TokenizerVocab& vocab() const;

private:
    struct State;
    std::unique_ptr<const State> state_;
};

}  // namespace decollama
