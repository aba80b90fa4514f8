// Decoding of GGUF metadata values (private to the reader).
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "gguf/byte_cursor.h"
#include "gguf/gguf_file.h"

namespace decollama {

// Formats the name of the field being read; only called when an error is thrown.
using FieldName = std::function<std::string()>;

// Nested arrays deeper than this are rejected: real files never nest more than once, and the
// limit keeps the recursion (and the stack) bounded on hostile input.
constexpr int kMaxArrayNesting = 8;

// Counts read from the file pass a minimal-size check, but entries with variable-size encodings
// (strings, arrays, key/values, tensor infos) take far more memory decoded than their minimal
// encoding: reserve at most this many up front and let vectors grow as entries actually decode.
constexpr uint64_t kMaxUpfrontReserve = 4096;
inline size_t upfront_reserve(uint64_t count) { return static_cast<size_t>(std::min(count, kMaxUpfrontReserve)); }

// Reads a uint32 value-type id and validates it.
GGUFValueType read_value_type(ByteCursor& cur, const FieldName& field);

// Reads one value of the given type at the cursor. Array lengths are checked against the bytes
// left (each element has a minimal encoded size) before anything is allocated.
GGUFValue read_value(ByteCursor& cur, GGUFValueType type, const FieldName& field, int depth = 0);

// Fewest bytes one encoded value of this type can take.
uint64_t min_encoded_size(GGUFValueType t);

}  // namespace decollama
