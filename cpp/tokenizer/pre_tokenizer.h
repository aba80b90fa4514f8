// Pre-tokenizers of byte-level BPE vocabularies: split text into the words BPE merges within.
// Each is a hand-written scanner equivalent to the split regex the model was trained with
// (applied with HF tokenizers' "isolated" behaviour), so no regex engine is involved.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace decollama {

enum class PreTokenizerKind {
    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    Gpt2,
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*
    // |\s*[\r\n]+|\s+(?!\S)|\s+
    Llama3,
    // Llama3's expression with \p{N} in place of \p{N}{1,3}.
    Qwen2,
    // Every \p{N} on its own, then Gpt2 within the rest (HF: Digits(individual_digits) + ByteLevel).
    SmolLM,
};

// The kind a tokenizer.ggml.pre name selects. Throws InvalidArgument, naming it and listing the
// known names, for any other.
PreTokenizerKind pre_tokenizer_from_name(const std::string& name);

// Appends the words of text to words, in order; together they cover text exactly. Views point
// into text. Ill-formed UTF-8 is accepted: each ill-formed subpart counts as one U+FFFD.
void pre_tokenize(PreTokenizerKind kind, std::string_view text, std::vector<std::string_view>& words);

}  // namespace decollama
