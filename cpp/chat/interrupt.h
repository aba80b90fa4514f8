// Ctrl-C for the interactive tools: SIGINT stops the current answer instead of the program.
// The handler only raises a flag; the generation loop polls it between tokens and the line
// reader wakes up on it while waiting for input.
#pragma once
#include <csignal>

namespace decollama {

// Installs the SIGINT handler for its lifetime and restores the previous one afterwards. One
// at a time: the flag it sets is process-wide, as signal dispositions are.
class InterruptHandler {
public:
    InterruptHandler();
    ~InterruptHandler();
    InterruptHandler(const InterruptHandler&) = delete;
    InterruptHandler& operator=(const InterruptHandler&) = delete;

    // Whether SIGINT arrived since the last clear().
    bool requested() const;
    void clear();

private:
    struct sigaction previous_;
};

// Blocks a signal in the calling thread for its lifetime. Threads started meanwhile inherit the
// mask: create the model's worker pool under one so that SIGINT always reaches the main thread,
// the one that waits for input and must see EINTR.
class ScopedSignalBlock {
public:
    explicit ScopedSignalBlock(int signal);
    ~ScopedSignalBlock();
    ScopedSignalBlock(const ScopedSignalBlock&) = delete;
    ScopedSignalBlock& operator=(const ScopedSignalBlock&) = delete;

    // The mask from before, without the signal: for ppoll() to wait with it deliverable.
    sigset_t unblocked_mask() const;

private:
    int signal_;
    sigset_t previous_;
};

}  // namespace decollama
