// Piece text -> token id, for the lookups every merge step makes.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace decollama {

class PieceIndex {
public:
    // Keys are views into tokens, which must outlive the index and not change. A piece listed
    // twice maps to its last id, as in HF tokenizers and llama.cpp.
    explicit PieceIndex(const std::vector<std::string>& tokens);

    // The id of the token spelled exactly so, or -1.
    int32_t find(std::string_view piece) const {
        const auto it = ids_.find(piece);
        return it == ids_.end() ? -1 : it->second;
    }

private:
    std::unordered_map<std::string_view, int32_t> ids_;
};

}  // namespace decollama
