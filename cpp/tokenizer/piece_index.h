// Piece text -> token id, for the lookups every merge step makes. An open-addressing table of
// (hash, id) pairs: one cache line per probe instead of chasing nodes, which is most of the time
// tokenization takes with a 262k vocabulary.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace decollama {

class PieceIndex {
public:
    // Keeps a pointer to tokens, which must outlive the index and not change. A piece listed
    // twice maps to its last id, as in HF tokenizers and llama.cpp.
    explicit PieceIndex(const std::vector<std::string>& tokens);

    // The id of the token spelled exactly so, or -1.
    int32_t find(std::string_view piece) const;

private:
    struct Slot {
        uint32_t hash = 0;
        int32_t id = -1;  // -1: empty
    };
    static uint32_t hash_of(std::string_view piece);

    const std::vector<std::string>* tokens_;
    std::vector<Slot> slots_;  // a power of two, at most half full
    size_t mask_ = 0;
};

}  // namespace decollama
