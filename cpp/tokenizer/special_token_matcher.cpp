#include "tokenizer/special_token_matcher.h"

namespace decollama {

namespace {

uint64_t edge_key(uint32_t node, uint8_t byte) { return (static_cast<uint64_t>(node) << 8) | byte; }

}  // namespace

SpecialTokenMatcher::SpecialTokenMatcher(const TokenizerVocab& vocab) : nodes_(1) {
    for (size_t id = 0; id < vocab.types.size(); ++id) {
        const TokenType type = vocab.types[id];
        const bool control = type == TokenType::Control || type == TokenType::Unknown;
        if (!control && type != TokenType::UserDefined) continue;
        const std::string& text = vocab.tokens[id];
        if (text.empty()) continue;

        uint32_t node = 0;
        for (const char c : text) {
            const auto [it, inserted] = edges_.try_emplace(edge_key(node, static_cast<uint8_t>(c)),
                                                          static_cast<uint32_t>(nodes_.size()));
            if (inserted) nodes_.emplace_back();
            node = it->second;
        }
        // Two tokens spelled alike: the later id wins, as in PieceIndex.
        nodes_[node].token = static_cast<int32_t>(id);
        nodes_[node].needs_parse_control = control;
        first_bytes_[static_cast<uint8_t>(text[0])] = true;
    }
}

std::optional<SpecialTokenMatcher::Match> SpecialTokenMatcher::longest_at(std::string_view text, size_t pos,
                                                                          bool parse_control) const {
    if (!first_bytes_[static_cast<uint8_t>(text[pos])]) return std::nullopt;
    std::optional<Match> best;
    uint32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
        const auto it = edges_.find(edge_key(node, static_cast<uint8_t>(text[i])));
        if (it == edges_.end()) break;
        node = it->second;
        const Node& n = nodes_[node];
        if (n.token >= 0 && (parse_control || !n.needs_parse_control)) best = Match{n.token, i + 1 - pos};
    }
    return best;
}

}  // namespace decollama
