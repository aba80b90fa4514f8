// Lines from the terminal (or a pipe) for the interactive chat, with Ctrl-C seen while waiting:
// the wait is a ppoll() that SIGINT always interrupts, without the race of checking a flag and
// then blocking in read().
#pragma once
#include <string>

namespace decollama {

class InterruptHandler;

enum class ReadStatus { Line, EndOfInput, Interrupted };

class LineReader {
public:
    // fd stays owned by the caller; the handler must outlive the reader.
    LineReader(int fd, const InterruptHandler& interrupt);

    // The next line, without its '\n' (a last line without one counts too). Interrupted when
    // SIGINT arrived before a whole line did; what was typed so far stays buffered. Throws
    // std::runtime_error when the input cannot be read.
    ReadStatus read_line(std::string& line);

private:
    int fd_;
    const InterruptHandler& interrupt_;
    std::string buffer_;
    bool at_eof_ = false;
};

}  // namespace decollama
