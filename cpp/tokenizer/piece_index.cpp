#include "tokenizer/piece_index.h"

#include <functional>

namespace decollama {

uint32_t PieceIndex::hash_of(std::string_view piece) {
    const uint64_t h = std::hash<std::string_view>{}(piece);
    return static_cast<uint32_t>(h ^ (h >> 32));
}

PieceIndex::PieceIndex(const std::vector<std::string>& tokens) : tokens_(&tokens) {
    size_t capacity = 16;
    while (capacity < 2 * tokens.size()) capacity *= 2;
    slots_.resize(capacity);
    mask_ = capacity - 1;
    for (size_t id = 0; id < tokens.size(); ++id) {
        const uint32_t h = hash_of(tokens[id]);
        for (size_t i = h & mask_;; i = (i + 1) & mask_) {
            Slot& s = slots_[i];
            if (s.id < 0 || (s.hash == h && tokens[s.id] == tokens[id])) {
                s = {h, static_cast<int32_t>(id)};
                break;
            }
        }
    }
}

int32_t PieceIndex::find(std::string_view piece) const {
    const uint32_t h = hash_of(piece);
    for (size_t i = h & mask_;; i = (i + 1) & mask_) {
        const Slot& s = slots_[i];
        if (s.id < 0) return -1;
        if (s.hash == h && (*tokens_)[s.id] == piece) return s.id;
    }
}

}  // namespace decollama
