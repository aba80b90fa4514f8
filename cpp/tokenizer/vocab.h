// A tokenizer's vocabulary and settings as GGUF metadata states them (tokenizer.ggml.*), before
// any index is built. Tokenizer takes one, from a GGUF file or filled in memory.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace decollama {

class GGUFFile;

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : int32_t {
    Undefined = 0,
    Normal = 1,
    Unknown = 2,
    Control = 3,      // <bos>, <|im_start|>: matched in text only when asked to parse specials
    UserDefined = 4,  // always matched whole in text, before the model runs
    Unused = 5,
    Byte = 6,         // <0x41>: SentencePiece byte fallback
};

struct TokenizerVocab {
    // tokenizer.ggml.model: "llama" (SentencePiece BPE, score-ranked merges) or "gpt2" (byte-level
    // BPE, rank-ordered merges).
    std::string model;
    // tokenizer.ggml.pre: the pre-tokenizer of a "gpt2" vocabulary; unused by "llama".
    std::string pre = "default";
    std::vector<std::string> tokens;
    std::vector<float> scores;        // one per token, or empty (all 0)
    std::vector<TokenType> types;     // one per token, or empty (all Normal)
    std::vector<std::string> merges;  // "left right", best first; "gpt2" only

    int32_t bos_id = -1;  // -1: none
    int32_t eos_id = -1;
    int32_t eot_id = -1;  // -1: found by text among known end-of-turn tokens
    int32_t eom_id = -1;
    int32_t unk_id = -1;

    // Absent: the model's default (Tokenizer documents them).
    std::optional<bool> add_bos;
    std::optional<bool> add_eos;
    std::optional<bool> add_space_prefix;

    // What is wrong with the vocabulary, if anything: sizes that disagree, ids out of range, an
    // unknown model or token type. `field` is the tokenizer.ggml.* key at fault.
    struct Problem {
        std::string field;
        std::string reason;
    };
    std::optional<Problem> find_problem() const;

    // Throws InvalidArgument("<field>: <reason>") for the problem find_problem() reports.
    void validate() const;
};

// Reads tokenizer.ggml.* from the file. A missing, mistyped or inconsistent field throws GGUFError.
TokenizerVocab load_tokenizer_vocab(const GGUFFile& file);

}  // namespace decollama
