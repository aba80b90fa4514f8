#include "tokenizer/piece_index.h"

namespace decollama {

PieceIndex::PieceIndex(const std::vector<std::string>& tokens) {
    ids_.reserve(tokens.size());
    for (size_t i = 0; i < tokens.size(); ++i) ids_[tokens[i]] = static_cast<int32_t>(i);
}

}  // namespace decollama
