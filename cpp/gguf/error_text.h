// Text of file content quoted in error messages (private to the reader).
#pragma once
#include <cstdio>
#include <string>

namespace decollama {

// A name from the file, quoted for an error message: bytes outside printable ASCII are escaped
// (messages must stay valid UTF-8 for Python) and long names are shortened.
inline std::string quote_name(const std::string& name) {
    constexpr size_t kMaxShown = 80;
    std::string out = "'";
    for (size_t i = 0; i < name.size() && i < kMaxShown; ++i) {
        const unsigned char c = static_cast<unsigned char>(name[i]);
        if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    if (name.size() > kMaxShown) out += "...";
    return out + "'";
}

}  // namespace decollama
