// _core.Tokenizer and _core.TokenStream: text <-> token ids for a GGUF model's vocabulary.
// Long texts tokenize without the GIL.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include "bindings/bindings.h"
#include "common/error.h"
#include "gguf/gguf_file.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/token_stream.h"
#include "tokenizer/tokenizer.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace decollama::py {

namespace {

// Below this many bytes, releasing and retaking the GIL costs more than it frees.
constexpr size_t kReleaseGilBytes = 4096;

// Python ints of any size come in; ids that do not fit an int32 are out of range like any other.
int32_t to_token_id(const Tokenizer& t, int64_t id) {
    if (id < 0 || id >= t.n_vocab()) {
        throw InvalidArgument("token id " + std::to_string(id) + " is outside the vocabulary of " +
                              std::to_string(t.n_vocab()) + " tokens");
    }
    return static_cast<int32_t>(id);
}

std::vector<int32_t> tokenize_maybe_without_gil(const Tokenizer& t, std::string_view text, bool add_bos, bool special) {
    if (text.size() < kReleaseGilBytes) return t.tokenize(text, add_bos, special);
    nb::gil_scoped_release release;
    return t.tokenize(text, add_bos, special);
}

std::string_view utf8_view(const nb::str& text) {
    Py_ssize_t size = 0;
    const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);  // lone surrogates: UnicodeEncodeError
    if (data == nullptr) throw nb::python_error();
    return {data, static_cast<size_t>(size)};
}

nb::bytes as_bytes(const std::string& s) { return nb::bytes(s.data(), s.size()); }

TokenType to_token_type(int64_t t) {
    if (t < 0 || t > static_cast<int64_t>(TokenType::Byte)) {
        throw InvalidArgument("token_types: unknown token type " + std::to_string(t));
    }
    return static_cast<TokenType>(t);
}

}  // namespace

void bind_tokenizer(nb::module_& m) {
    m.def("pre_tokenize",
          [](const std::string& pre, const nb::str& text) {
              const PreTokenizerKind kind = pre_tokenizer_from_name(pre);
              std::vector<std::string_view> words;
              pre_tokenize(kind, utf8_view(text), words);
              // Words end on character boundaries of valid UTF-8, so each is valid UTF-8 too.
              return std::vector<std::string>(words.begin(), words.end());
          },
          "pre"_a, "text"_a,
          "The words a byte-level BPE pre-tokenizer (a tokenizer.ggml.pre name) splits text into.");

    nb::class_<Tokenizer>(m, "Tokenizer",
        "Text <-> token ids for the vocabulary of a GGUF file (tokenizer.ggml.*): SentencePiece BPE "
        "(model 'llama': Gemma, Llama 2) or byte-level BPE (model 'gpt2': Llama 3, Qwen2/3, SmolLM).")
        .def("__init__",
             [](Tokenizer* self, const std::string& gguf_path) {
                 nb::gil_scoped_release release;
                 const GGUFFile file(gguf_path);
                 new (self) Tokenizer(file);
             },
             "gguf_path"_a)
        .def_static("from_vocab",
             [](const std::string& model, std::vector<std::string> tokens, std::vector<float> scores,
                const std::vector<int64_t>& token_types, std::vector<std::string> merges, const std::string& pre,
                int32_t bos_id, int32_t eos_id, int32_t eot_id, int32_t unk_id, std::optional<bool> add_bos,
                std::optional<bool> add_space_prefix) {
                 TokenizerVocab v;
                 v.model = model;
                 v.pre = pre;
                 v.tokens = std::move(tokens);
                 v.scores = std::move(scores);
                 for (const int64_t t : token_types) v.types.push_back(to_token_type(t));
                 v.merges = std::move(merges);
                 v.bos_id = bos_id;
                 v.eos_id = eos_id;
                 v.eot_id = eot_id;
                 v.unk_id = unk_id;
                 v.add_bos = add_bos;
                 v.add_space_prefix = add_space_prefix;
                 return Tokenizer(std::move(v));
             },
             "model"_a, "tokens"_a, "scores"_a = std::vector<float>{}, "token_types"_a = std::vector<int64_t>{},
             "merges"_a = std::vector<std::string>{}, "pre"_a = "default", "bos_id"_a = -1, "eos_id"_a = -1,
             "eot_id"_a = -1, "unk_id"_a = -1, "add_bos"_a = nb::none(), "add_space_prefix"_a = nb::none(),
             "A tokenizer from an in-memory vocabulary, the fields named as in tokenizer.ggml.* "
             "(token_types: llama.cpp's values, 1 normal ... 6 byte).")
        .def("tokenize",
             [](const Tokenizer& t, const nb::str& text, bool add_bos, bool special) {
                 return tokenize_maybe_without_gil(t, utf8_view(text), add_bos, special);
             },
             "text"_a, "add_bos"_a = true, "special"_a = false,
             "Token ids of text. special=True matches control tokens written in the text "
             "('<start_of_turn>') as single tokens; user-defined tokens are always matched.")
        .def("tokenize",
             [](const Tokenizer& t, const nb::bytes& text, bool add_bos, bool special) {
                 return tokenize_maybe_without_gil(t, std::string_view(text.c_str(), text.size()), add_bos, special);
             },
             "text"_a, "add_bos"_a = true, "special"_a = false,
             "The same for raw bytes, which need not be valid UTF-8.")
        .def("detokenize",
             [](const Tokenizer& t, const std::vector<int64_t>& tokens, bool special) {
                 std::vector<int32_t> ids;
                 ids.reserve(tokens.size());
                 for (const int64_t id : tokens) ids.push_back(to_token_id(t, id));
                 return as_bytes(t.detokenize(ids, special));
             },
             "tokens"_a, "special"_a = false,
             "The bytes the tokens stand for; control tokens are left out unless special=True.")
        .def("token_to_piece",
             [](const Tokenizer& t, int64_t token, bool special) {
                 return as_bytes(t.token_to_piece(to_token_id(t, token), special));
             },
             "token"_a, "special"_a = false)
        .def("is_eog", [](const Tokenizer& t, int64_t token) { return t.is_eog(to_token_id(t, token)); }, "token"_a,
             "Whether token ends generation (EOS, EOT and the other end-of-generation tokens).")
        .def("token_id", [](const Tokenizer& t, const std::string& piece) { return t.token_id(piece); }, "piece"_a,
             "The id of the token spelled exactly so in the vocabulary ('▁the', 'Ġthe'), or -1.")
        .def_prop_ro("n_vocab", &Tokenizer::n_vocab)
        .def_prop_ro("bos_id", &Tokenizer::bos_id)
        .def_prop_ro("eos_id", &Tokenizer::eos_id)
        .def_prop_ro("eot_id", &Tokenizer::eot_id)
        .def_prop_ro("add_bos", &Tokenizer::add_bos)
        .def_prop_ro("add_eos", &Tokenizer::add_eos)
        .def_prop_ro("add_space_prefix", &Tokenizer::add_space_prefix)
        .def_prop_ro("model", &Tokenizer::model)
        .def_prop_ro("pre", &Tokenizer::pre)
        .def("__repr__", [](const Tokenizer& t) {
            return "<Tokenizer model=" + t.model() + " pre=" + t.pre() + " n_vocab=" + std::to_string(t.n_vocab()) + ">";
        });

    nb::class_<TokenStream>(m, "TokenStream",
        "Streaming detokenizer: push() one token at a time and get only complete UTF-8 text back; "
        "flush() at the end returns what is held back (invalid bytes as U+FFFD).")
        .def(nb::init<const Tokenizer&, bool>(), "tokenizer"_a, "special"_a = false, nb::keep_alive<1, 2>())
        .def("push", [](TokenStream& s, int64_t token) { return s.push(to_token_id(s.tokenizer(), token)); }, "token"_a)
        .def("flush", &TokenStream::flush);
}

}  // namespace decollama::py
