// GPT-2's byte-level alphabet: a reversible map from the 256 byte values to printable code points,
// in which byte-level BPE vocabularies spell their tokens ("Ġthe" is " the").
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace decollama::byte_level {

// The code point that stands for byte b.
uint32_t byte_to_codepoint(uint8_t b);

// The byte that code point cp stands for, or -1 when cp is not in the alphabet.
int codepoint_to_byte(uint32_t cp);

// Appends the alphabet spelling of raw bytes.
void encode(std::string_view bytes, std::string& out);

// Appends the bytes a spelled token stands for. False (out partly written) when the text holds a
// code point outside the alphabet or is not valid UTF-8.
bool decode(std::string_view spelled, std::string& out);

}  // namespace decollama::byte_level
