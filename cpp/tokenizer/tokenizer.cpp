#include "tokenizer/tokenizer.h"

#include <iterator>
#include <optional>
#include <utility>

#include "common/error.h"
#include "gguf/gguf_file.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/piece_index.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/special_token_matcher.h"
#include "tokenizer/spm_tokenizer.h"

namespace decollama {

namespace {

// Texts of end-of-turn tokens, most specific first: the first one the vocabulary holds as a
// Control token is the EOT token when the metadata names none (the texts llama.cpp recognises).
constexpr std::string_view kEndOfTurnTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "<EOT>", "_<EOT>",
    "<\xEF\xBD\x9C" "end\xE2\x96\x81of\xE2\x96\x81sentence\xEF\xBD\x9C>",  // DeepSeek: <｜end▁of▁sentence｜>
    "<end_of_utterance>", "<|endoftext|>",
};

// Further texts that end generation without being the end-of-turn token.
constexpr std::string_view kEndOfGenerationTexts[] = {
    "<|eom_id|>", "<|end_of_text|>", "<|return|>", "<|call|>", "</s>",
};

// Types whose text shows only when special tokens are rendered.
bool renders_only_as_special(TokenType t) {
    return t == TokenType::Control || t == TokenType::Unknown || t == TokenType::Unused;
}

// The byte a SentencePiece <0xXX> token stands for, or -1 when its text is not of that form.
int parse_byte_token(std::string_view text) {
    if (text.size() != 6 || text.substr(0, 3) != "<0x" || text[5] != '>') return -1;
    int value = 0;
    for (const char c : text.substr(3, 2)) {
        value *= 16;
        if (c >= '0' && c <= '9') {
            value += c - '0';
        } else if (c >= 'A' && c <= 'F') {
            value += c - 'A' + 10;
        } else if (c >= 'a' && c <= 'f') {
            value += c - 'a' + 10;
        } else {
            return -1;
        }
    }
    return value;
}

TokenizerVocab validated(TokenizerVocab vocab) {
    vocab.validate();
    return vocab;
}

}  // namespace

struct Tokenizer::State {
    explicit State(TokenizerVocab v)
        : vocab(validated(std::move(v))), index(vocab.tokens), specials(vocab), sentencepiece(vocab.model == "llama") {
        std::optional<PreTokenizerKind> pre_kind;
        if (sentencepiece) {
            spm = std::make_unique<SpmTokenizer>(vocab, index);
        } else {
            pre_kind = pre_tokenizer_from_name(vocab.pre);
            // llama.cpp takes whole-word matches for Llama 3 vocabularies, as their tokenizer.json
            // ("ignore_merges": true) asks.
            bpe = std::make_unique<BpeTokenizer>(vocab, index, *pre_kind, *pre_kind == PreTokenizerKind::Llama3);
        }

        const bool bos_by_default = sentencepiece || pre_kind == PreTokenizerKind::Llama3;
        add_bos = vocab.bos_id >= 0 && vocab.add_bos.value_or(bos_by_default);
        add_eos = vocab.add_eos.value_or(false);
        add_space_prefix = sentencepiece && vocab.add_space_prefix.value_or(true);

        eot_id = vocab.eot_id;
        for (size_t k = 0; eot_id < 0 && k < std::size(kEndOfTurnTexts); ++k) eot_id = find_control(kEndOfTurnTexts[k]);

        end_of_generation.assign(vocab.tokens.size(), false);
        for (const int32_t id : {vocab.eos_id, eot_id, vocab.eom_id}) {
            if (id >= 0) end_of_generation[id] = true;
        }
        for (const std::string_view text : kEndOfTurnTexts) {
            if (const int32_t id = find_control(text); id >= 0) end_of_generation[id] = true;
        }
        for (const std::string_view text : kEndOfGenerationTexts) {
            if (const int32_t id = find_control(text); id >= 0) end_of_generation[id] = true;
        }
    }

    // The id of a Control token spelled so, or -1. llama.cpp also takes a token of another type
    // and retypes it Control; we leave such tokens alone: the file says they are text. (Gemma 3's
    // "</s>" is a user-defined token, the HTML tag closing "<s>", and must not end generation.)
    int32_t find_control(std::string_view text) const {
        const int32_t id = index.find(text);
        return id >= 0 && type_of(id) == TokenType::Control ? id : -1;
    }

    TokenType type_of(int32_t id) const { return vocab.types.empty() ? TokenType::Normal : vocab.types[id]; }

    void check(int32_t id) const {
        if (id < 0 || static_cast<size_t>(id) >= vocab.tokens.size()) {
            throw InvalidArgument("token id " + std::to_string(id) + " is outside the vocabulary of " +
                                  std::to_string(vocab.tokens.size()) + " tokens");
        }
    }

    // Declaration order matters: index and the engines hold references to vocab and index.
    const TokenizerVocab vocab;
    const PieceIndex index;
    const SpecialTokenMatcher specials;
    const bool sentencepiece;
    std::unique_ptr<const SpmTokenizer> spm;
    std::unique_ptr<const BpeTokenizer> bpe;
    int32_t eot_id = -1;
    bool add_bos = false;
    bool add_eos = false;
    bool add_space_prefix = false;
    std::vector<bool> end_of_generation;  // by id
};

Tokenizer::Tokenizer(const GGUFFile& file) : Tokenizer(load_tokenizer_vocab(file)) {}

Tokenizer::Tokenizer(TokenizerVocab vocab) : state_(std::make_unique<const State>(std::move(vocab))) {}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int32_t> Tokenizer::tokenize(std::string_view text, bool add_bos, bool parse_special) const {
    const State& s = *state_;
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 2);
    if (add_bos && s.vocab.bos_id >= 0) out.push_back(s.vocab.bos_id);

    size_t raw_begin = 0;
    const auto encode_raw = [&](size_t raw_end) {
        if (raw_end == raw_begin) return;
        const std::string_view raw = text.substr(raw_begin, raw_end - raw_begin);
        if (s.sentencepiece) {
            // SentencePiece puts its dummy prefix once, at the start of the input; so do
            // transformers (Metaspace, prepend_scheme "first"). llama.cpp also puts one after
            // every special token; we follow the reference the models were trained with.
            s.spm->encode(raw, s.add_space_prefix && raw_begin == 0, out);
        } else {
            s.bpe->encode(raw, out);
        }
    };
    for (size_t pos = 0; pos < text.size();) {
        if (const auto match = s.specials.longest_at(text, pos, parse_special)) {
            encode_raw(pos);
            out.push_back(match->id);
            pos += match->size;
            raw_begin = pos;
        } else {
            ++pos;
        }
    }
    encode_raw(text.size());
    return out;
}

std::string Tokenizer::token_to_piece(int32_t id, bool render_special) const {
    const State& s = *state_;
    s.check(id);
    const std::string& text = s.vocab.tokens[id];
    const TokenType type = s.type_of(id);
    if (renders_only_as_special(type)) return render_special ? text : std::string();
    // User-defined tokens are stored as the text they match (llama.cpp's converter writes them so).
    if (type == TokenType::UserDefined) return text;

    if (s.sentencepiece) {
        if (type == TokenType::Byte) {
            if (const int b = parse_byte_token(text); b >= 0) return std::string(1, static_cast<char>(b));
        }
        std::string piece;
        piece.reserve(text.size());
        for (size_t pos = 0; pos < text.size();) {
            if (text.compare(pos, 3, "\xE2\x96\x81") == 0) {
                piece += ' ';
                pos += 3;
            } else {
                piece += text[pos++];
            }
        }
        return piece;
    }
    std::string bytes;
    // A normal token outside the byte alphabet is not byte-level spelled: its text is its bytes.
    return byte_level::decode(text, bytes) ? bytes : text;
}

std::string Tokenizer::detokenize(const std::vector<int32_t>& ids, bool render_special) const {
    std::string out;
    bool first_piece = true;
    for (const int32_t id : ids) {
        std::string piece = token_to_piece(id, render_special);
        if (piece.empty()) continue;
        if (first_piece && state_->add_space_prefix && piece[0] == ' ') piece.erase(0, 1);
        first_piece = false;
        out += piece;
    }
    return out;
}

int32_t Tokenizer::n_vocab() const { return static_cast<int32_t>(state_->vocab.tokens.size()); }
const std::string& Tokenizer::model() const { return state_->vocab.model; }
const std::string& Tokenizer::pre() const { return state_->vocab.pre; }
int32_t Tokenizer::bos_id() const { return state_->vocab.bos_id; }
int32_t Tokenizer::eos_id() const { return state_->vocab.eos_id; }
int32_t Tokenizer::eot_id() const { return state_->eot_id; }
bool Tokenizer::add_bos() const { return state_->add_bos; }
bool Tokenizer::add_eos() const { return state_->add_eos; }
bool Tokenizer::add_space_prefix() const { return state_->add_space_prefix; }

bool Tokenizer::is_eog(int32_t id) const {
    state_->check(id);
    return state_->end_of_generation[id];
}

int32_t Tokenizer::token_id(std::string_view piece) const { return state_->index.find(piece); }
const TokenizerVocab& Tokenizer::vocab() const { return state_->vocab; }

}  // namespace decollama
