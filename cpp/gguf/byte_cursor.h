// Bounds-checked little-endian reads over an in-memory byte range (private to the GGUF reader).
// Every read checks the remaining length first; a short read throws GGUFError naming the field.
// Field names are passed as callables so they are only formatted when an error is thrown.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "common/error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host (GGUF files are little-endian)"
#endif

namespace decollama {

class ByteCursor {
public:
    ByteCursor(const uint8_t* data, uint64_t size, const std::string& path)
        : data_(data), size_(size), path_(path) {}

    uint64_t position() const { return pos_; }
    uint64_t remaining() const { return size_ - pos_; }
    uint64_t size() const { return size_; }
    const std::string& path() const { return path_; }

    // Throws unless n more bytes are available.
    template <class FieldFn>
    void require(uint64_t n, const FieldFn& field) const {
        if (n > remaining())
            throw GGUFError(path_, field(),
                            "truncated: needs " + std::to_string(n) + " bytes at offset " +
                                std::to_string(pos_) + " but the file ends at " + std::to_string(size_));
    }

    template <class T, class FieldFn>
    T read(const FieldFn& field) {
        static_assert(std::is_arithmetic<T>::value, "scalar reads only");
        require(sizeof(T), field);
        return read_unchecked<T>();
    }

    // The caller has already called require() for these bytes (bulk array reads).
    template <class T>
    T read_unchecked() {
        T v;
        std::memcpy(&v, data_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }

    // A GGUF string: uint64 byte length, then the bytes (no terminator).
    template <class LengthFieldFn>
    std::string read_string(const LengthFieldFn& length_field) {
        const uint64_t n = read<uint64_t>(length_field);
        require(n, length_field);
        std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
        pos_ += n;
        return s;
    }

private:
    const uint8_t* data_;
    uint64_t size_;
    uint64_t pos_ = 0;
    const std::string& path_;
};

}  // namespace decollama
