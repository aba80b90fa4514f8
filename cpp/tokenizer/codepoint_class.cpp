#include "tokenizer/codepoint_class.h"

#include <algorithm>
#include <array>

namespace decollama::unicode {

namespace {

uint8_t lookup(uint32_t cp) {
    const CodepointRange* begin = kCodepointRanges;
    const CodepointRange* end = kCodepointRanges + kCodepointRangeCount;
    // The first range whose last code point is >= cp; cp lies in it only if it starts at or before cp.
    const CodepointRange* r = std::lower_bound(
        begin, end, cp, [](const CodepointRange& range, uint32_t value) { return range.last < value; });
    return (r != end && r->first <= cp) ? r->flags : 0;
}

// ASCII dominates most text; a direct table spares the binary search there.
std::array<uint8_t, 128> make_ascii_flags() {
    std::array<uint8_t, 128> table{};
    for (uint32_t cp = 0; cp < table.size(); ++cp) table[cp] = lookup(cp);
    return table;
}

}  // namespace

CodepointClass classify(uint32_t cp) {
    static const std::array<uint8_t, 128> ascii = make_ascii_flags();
    return CodepointClass(cp < ascii.size() ? ascii[cp] : lookup(cp));
}

}  // namespace decollama::unicode
