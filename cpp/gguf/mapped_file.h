// A whole file mapped read-only into memory (RAII: unmapped on destruction).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace decollama {

class MappedFile {
public:
    // Throws GGUFError(path, "open", reason) when the file cannot be opened, is not a regular
    // file or cannot be mapped. An empty file maps to {nullptr, 0}.
    explicit MappedFile(const std::string& path);
    ~MappedFile();
    MappedFile(const MappedFile&) = delete;
    MappedFile& operator=(const MappedFile&) = delete;

    const uint8_t* data() const { return data_; }
    size_t size() const { return size_; }

private:
    const uint8_t* data_ = nullptr;
    size_t size_ = 0;
};

}  // namespace decollama
