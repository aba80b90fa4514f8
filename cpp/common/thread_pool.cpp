#include "common/thread_pool.h"

#include <chrono>

#include "common/cpu_features.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define DECOLLAMA_PAUSE() _mm_pause()
#else
#define DECOLLAMA_PAUSE() ((void)0)
#endif

namespace decollama {

namespace {
// How long an idle worker spins before it sleeps on the condition variable.
constexpr auto kSpinTime = std::chrono::microseconds(2000);
}  // namespace

ThreadPool::ThreadPool(int n_threads) {
    n_threads_ = n_threads > 0 ? n_threads : physical_core_count();
    workers_.reserve(size_t(n_threads_ - 1));
    for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stop_.store(true);
        generation_.fetch_add(1);
    }
    wake_.notify_all();
    for (auto& t : workers_) t.join();
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
    if (n_threads_ == 1) {
        fn(0, 1);
        return;
    }
    job_ = &fn;
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    {
        // Publishing under the mutex pairs with the sleeper's predicate check: no lost wake-up.
        std::lock_guard<std::mutex> lock(mutex_);
        generation_.fetch_add(1, std::memory_order_release);
    }
    if (sleepers_.load() > 0) wake_.notify_all();
    fn(0, n_threads_);
    // Yield now and then: when the machine is oversubscribed the worker we wait for may need
    // this very core, and pure spinning would starve it for a whole scheduler slice.
    for (int spins = 1; pending_.load(std::memory_order_acquire) != 0; ++spins) {
        DECOLLAMA_PAUSE();
        if (spins % 256 == 0) std::this_thread::yield();
    }
    job_ = nullptr;
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn) {
    if (n <= 0) return;
    run([&](int index, int count) {
        const int64_t chunk = (n + count - 1) / count;
        const int64_t begin = int64_t(index) * chunk;
        const int64_t end = begin + chunk < n ? begin + chunk : n;
        if (begin < end) fn(begin, end);
    });
}

void ThreadPool::worker_loop(int index) {
    uint64_t seen = 0;
    for (;;) {
        // Spin for a while, then sleep until the generation changes.
        auto start = std::chrono::steady_clock::now();
        uint64_t gen;
        int spins = 0;
        while ((gen = generation_.load(std::memory_order_acquire)) == seen) {
            DECOLLAMA_PAUSE();
            if (++spins % 256 == 0) std::this_thread::yield();  // see run(): oversubscription
            if (spins % 1024 == 0 && std::chrono::steady_clock::now() - start > kSpinTime) {
                std::unique_lock<std::mutex> lock(mutex_);
                sleepers_.fetch_add(1);
                wake_.wait(lock, [&] { return generation_.load() != seen; });
                sleepers_.fetch_sub(1);
                start = std::chrono::steady_clock::now();
            }
        }
        seen = gen;
        if (stop_.load()) return;
        (*job_)(index, n_threads_);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
}

}  // namespace decollama
