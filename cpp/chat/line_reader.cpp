#include "chat/line_reader.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "chat/interrupt.h"

namespace decollama {

LineReader::LineReader(int fd, const InterruptHandler& interrupt) : fd_(fd), interrupt_(interrupt) {}

ReadStatus LineReader::read_line(std::string& line) {
    for (;;) {
        const size_t newline = buffer_.find('\n');
        if (newline != std::string::npos) {
            line = buffer_.substr(0, newline);
            buffer_.erase(0, newline + 1);
            return ReadStatus::Line;
        }
        if (at_eof_) {
            if (buffer_.empty()) return ReadStatus::EndOfInput;
            line = std::move(buffer_);
            buffer_.clear();
            return ReadStatus::Line;
        }
        {
            // SIGINT stays pending between the flag check and ppoll(), which unblocks it atomically.
            ScopedSignalBlock block(SIGINT);
            if (interrupt_.requested()) return ReadStatus::Interrupted;
            pollfd pfd{fd_, POLLIN, 0};
            const sigset_t wait_mask = block.unblocked_mask();
            if (ppoll(&pfd, 1, nullptr, &wait_mask) < 0) {
                if (errno == EINTR) continue;
                throw std::runtime_error(std::string("cannot wait for input: ") + std::strerror(errno));
            }
        }
        char chunk[4096];
        const ssize_t n = read(fd_, chunk, sizeof chunk);
        if (n > 0) {
            buffer_.append(chunk, size_t(n));
        } else if (n == 0 || errno == EIO) {  // EIO: the terminal hung up
            at_eof_ = true;
        } else if (errno != EINTR && errno != EAGAIN) {
            throw std::runtime_error(std::string("cannot read input: ") + std::strerror(errno));
        }
    }
}

}  // namespace decollama
