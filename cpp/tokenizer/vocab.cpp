#include "tokenizer/vocab.h"

#include <climits>
#include <utility>

#include "common/error.h"
#include "gguf/gguf_file.h"

namespace decollama {

namespace {

using Problem = TokenizerVocab::Problem;

std::optional<Problem> check_id(int32_t id, size_t n_tokens, const char* field) {
    if (id < -1 || (id >= 0 && static_cast<size_t>(id) >= n_tokens)) {
        return Problem{field, "token id " + std::to_string(id) + " is outside the vocabulary of " +
                                  std::to_string(n_tokens) + " tokens"};
    }
    return std::nullopt;
}

int32_t read_id(const GGUFFile& file, const char* key) {
    const int64_t id = file.get_int(key, -1);
    if (id < -1 || id > INT32_MAX) throw GGUFError(file.path(), key, "token id " + std::to_string(id) + " out of range");
    return static_cast<int32_t>(id);
}

std::optional<bool> read_flag(const GGUFFile& file, const char* key) {
    if (!file.has(key)) return std::nullopt;
    return file.get_bool(key);
}

}  // namespace

std::optional<Problem> TokenizerVocab::find_problem() const {
    if (model != "llama" && model != "gpt2") {
        return Problem{"tokenizer.ggml.model", "unsupported tokenizer model '" + model + "' (supported: llama, gpt2)"};
    }
    if (tokens.empty()) return Problem{"tokenizer.ggml.tokens", "the vocabulary is empty"};
    if (tokens.size() > static_cast<size_t>(INT32_MAX)) {
        return Problem{"tokenizer.ggml.tokens", "more tokens than a 32-bit id can name"};
    }
    if (!scores.empty() && scores.size() != tokens.size()) {
        return Problem{"tokenizer.ggml.scores",
                       std::to_string(scores.size()) + " scores for " + std::to_string(tokens.size()) + " tokens"};
    }
    if (!types.empty() && types.size() != tokens.size()) {
        return Problem{"tokenizer.ggml.token_type",
                       std::to_string(types.size()) + " types for " + std::to_string(tokens.size()) + " tokens"};
    }
    for (size_t i = 0; i < types.size(); ++i) {
        const auto t = static_cast<int32_t>(types[i]);
        if (t < 0 || t > static_cast<int32_t>(TokenType::Byte)) {
            return Problem{"tokenizer.ggml.token_type",
                           "token " + std::to_string(i) + " has unknown type " + std::to_string(t)};
        }
    }
    for (const auto& [id, field] : {std::pair{bos_id, "tokenizer.ggml.bos_token_id"},
                                    std::pair{eos_id, "tokenizer.ggml.eos_token_id"},
                                    std::pair{eot_id, "tokenizer.ggml.eot_token_id"},
                                    std::pair{eom_id, "tokenizer.ggml.eom_token_id"},
                                    std::pair{unk_id, "tokenizer.ggml.unknown_token_id"}}) {
        if (auto p = check_id(id, tokens.size(), field)) return p;
    }
    return std::nullopt;
}

void TokenizerVocab::validate() const {
    if (const auto p = find_problem()) throw InvalidArgument(p->field + ": " + p->reason);
}

TokenizerVocab load_tokenizer_vocab(const GGUFFile& file) {
    TokenizerVocab v;
    v.model = file.get_string("tokenizer.ggml.model");
    v.pre = file.get_string("tokenizer.ggml.pre", "default");
    v.tokens = file.get_string_array("tokenizer.ggml.tokens");
    if (file.has("tokenizer.ggml.scores")) v.scores = file.get_float_array("tokenizer.ggml.scores");
    if (file.has("tokenizer.ggml.token_type")) {
        for (const int64_t t : file.get_int_array("tokenizer.ggml.token_type")) {
            if (t < 0 || t > static_cast<int64_t>(TokenType::Byte)) {
                throw GGUFError(file.path(), "tokenizer.ggml.token_type", "unknown token type " + std::to_string(t));
            }
            v.types.push_back(static_cast<TokenType>(t));
        }
    }
    if (file.has("tokenizer.ggml.merges")) v.merges = file.get_string_array("tokenizer.ggml.merges");
    v.bos_id = read_id(file, "tokenizer.ggml.bos_token_id");
    v.eos_id = read_id(file, "tokenizer.ggml.eos_token_id");
    v.eot_id = read_id(file, "tokenizer.ggml.eot_token_id");
    v.eom_id = read_id(file, "tokenizer.ggml.eom_token_id");
    v.unk_id = read_id(file, "tokenizer.ggml.unknown_token_id");
    v.add_bos = read_flag(file, "tokenizer.ggml.add_bos_token");
    v.add_eos = read_flag(file, "tokenizer.ggml.add_eos_token");
    v.add_space_prefix = read_flag(file, "tokenizer.ggml.add_space_prefix");
    if (const auto p = v.find_problem()) throw GGUFError(file.path(), p->field, p->reason);
    return v;
}

}  // namespace decollama
