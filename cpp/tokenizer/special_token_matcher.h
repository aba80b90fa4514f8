// Finds the control and user-defined tokens written in a text, which are matched whole before
// the model splits the rest.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/vocab.h"

namespace decollama {

class SpecialTokenMatcher {
public:
    // Takes the vocabulary's Control, Unknown and UserDefined tokens with non-empty text.
    explicit SpecialTokenMatcher(const TokenizerVocab& vocab);

    struct Match {
        int32_t id;
        size_t size;  // bytes
    };

    // The longest token spelled at text[pos] (pos < text.size()), or none. UserDefined tokens
    // always count; Control and Unknown ones only when parse_control is set.
    std::optional<Match> longest_at(std::string_view text, size_t pos, bool parse_control) const;

private:
    // A byte trie: node 0 is the root; edges are keyed by (node << 8 | byte).
    struct Node {
        int32_t token = -1;         // the token spelled by the path to here, or -1
        bool needs_parse_control = false;
    };
    std::vector<Node> nodes_;
    std::unordered_map<uint64_t, uint32_t> edges_;
    std::array<bool, 256> first_bytes_{};  // bytes some token starts with: a cheap first test
};

}  // namespace decollama
