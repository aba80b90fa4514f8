// The generated Unicode class table (unicode_tables.cpp, written by tools/gen_unicode_tables.py).
// Use codepoint_class.h to query it.
#pragma once
#include <cstddef>
#include <cstdint>

namespace decollama::unicode {

// Flags byte of a table entry: the low three bits hold the major general category, bit 3 the
// White_Space property. Values mirrored in tools/gen_unicode_tables.py.
enum class MajorCategory : uint8_t {
    Other = 0,        // C*: controls, format, surrogates, private use, unassigned
    Letter = 1,       // L*
    Mark = 2,         // M*
    Number = 3,       // N*
    Punctuation = 4,  // P*
    Symbol = 5,       // S*
    Separator = 6,    // Z*
};
constexpr uint8_t kCategoryMask = 0x07;
constexpr uint8_t kWhitespaceBit = 0x08;

// An inclusive range of code points sharing one flags byte. Sorted, disjoint; code points in no
// range have flags 0 (Other, not whitespace).
struct CodepointRange {
    uint32_t first;
    uint32_t last;
    uint8_t flags;
};

extern const CodepointRange kCodepointRanges[];
extern const size_t kCodepointRangeCount;

}  // namespace decollama::unicode
