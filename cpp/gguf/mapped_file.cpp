#include "gguf/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace decollama {

namespace {

// Closes the descriptor on every path out of the constructor; the mapping outlives it.
class FileDescriptor {
public:
    explicit FileDescriptor(int fd) : fd_(fd) {}
    ~FileDescriptor() {
        if (fd_ >= 0) ::close(fd_);
    }
    FileDescriptor(const FileDescriptor&) = delete;
    FileDescriptor& operator=(const FileDescriptor&) = delete;
    int get() const { return fd_; }

private:
    int fd_;
};

}  // namespace

MappedFile::MappedFile(const std::string& path) {
    FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) throw GGUFError(path, "open", std::strerror(errno));

    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw GGUFError(path, "open", std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw GGUFError(path, "open", "not a regular file");
    if (st.st_size == 0) return;  // mmap rejects length 0; the parser reports the truncation
    if (static_cast<unsigned long long>(st.st_size) > SIZE_MAX)
        throw GGUFError(path, "open", "file too large to map");

    const size_t size = static_cast<size_t>(st.st_size);
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (p == MAP_FAILED) throw GGUFError(path, "mmap", std::strerror(errno));
    data_ = static_cast<const uint8_t*>(p);
    size_ = size;
}

MappedFile::~MappedFile() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

}  // namespace decollama
