// Exception types thrown by the core; the bindings map each to a Python exception class.
#pragma once
#include <stdexcept>
#include <string>

namespace decollama {

// Any malformed or unsupported GGUF content. The message always names the file, the field
// and the reason: "<path>: <field>: <reason>". Python: decollama.GGUFError (a ValueError).
class GGUFError : public std::runtime_error {
public:
    GGUFError(const std::string& path, const std::string& field, const std::string& reason)
        : std::runtime_error(path + ": " + field + ": " + reason) {}
};

// A bad argument from the caller (unknown format name, prompt longer than the context...).
// Python: ValueError.
class InvalidArgument : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

}  // namespace decollama
