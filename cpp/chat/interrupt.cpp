#include "chat/interrupt.h"

#include <pthread.h>

#include <stdexcept>

namespace decollama {

namespace {

// The one piece of global mutable state: a signal handler cannot reach anything else safely,
// and sig_atomic_t is the type it may write (C++17 [support.signal]).
volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_sigint(int) { g_interrupted = 1; }

}  // namespace

InterruptHandler::InterruptHandler() {
    g_interrupted = 0;
    struct sigaction action {};
    action.sa_handler = on_sigint;
    sigemptyset(&action.sa_mask);
    // Interrupted writes to the terminal resume; waiting for input uses ppoll(), which a signal
    // always interrupts.
    action.sa_flags = SA_RESTART;
    if (sigaction(SIGINT, &action, &previous_) != 0) throw std::runtime_error("cannot install the SIGINT handler");
}

InterruptHandler::~InterruptHandler() { sigaction(SIGINT, &previous_, nullptr); }

bool InterruptHandler::requested() const { return g_interrupted != 0; }

void InterruptHandler::clear() { g_interrupted = 0; }

ScopedSignalBlock::ScopedSignalBlock(int signal) : signal_(signal) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signal);
    pthread_sigmask(SIG_BLOCK, &set, &previous_);
}

ScopedSignalBlock::~ScopedSignalBlock() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }

sigset_t ScopedSignalBlock::unblocked_mask() const {
    sigset_t mask = previous_;
    sigdelset(&mask, signal_);
    return mask;
}

}  // namespace decollama
