// dlx's one thread pool for the compiled CPU kernels (see parallel.h for how kernels use it).
//
// Why not OpenBLAS's threads or OpenMP: after a product, OpenBLAS keeps its second thread
// busy-waiting for the next one, so elementwise work on a second thread of our own only
// competes with it. One pool that runs both the products (each part a one-thread BLAS call)
// and the memory-bound kernels keeps every core on dlx's work.
//
// The caller runs part 0 itself; workers 1..n-1 wait for a new generation number, first
// spinning (a training step calls kernels every few microseconds), then, after
// kSpinMicroseconds without work, asleep on a condition variable, so an idle process
// uses no CPU. One parallel region runs at a time: a call made while another runs (a
// second Python thread, or a kernel inside a part) runs in line on its caller.
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "parallel.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DLX_PAUSE() _mm_pause()
#else
#define DLX_PAUSE() std::this_thread::yield()
#endif

namespace dlx_cpu {
namespace {

constexpr int kMaxThreads = 256;
constexpr int kSpinMicroseconds = 300;

struct Pool {
    int threads = 1;   // wanted, caller included
    int started = 1;   // running, caller included
    std::atomic<bool> busy{false};
    std::atomic<std::uint64_t> generation{0};
    std::atomic<int> pending{0};
    std::atomic<int> sleepers{0};
    std::mutex lock;
    std::condition_variable wake;
    // the region now running
    parallel_body body = nullptr;
    void* context = nullptr;
    index_t n = 0;
    int parts = 1;
};

// Never destroyed: workers may still wait on its condition variable at exit.
Pool& pool() {
    static Pool* made = new Pool();
    return *made;
}

void run_part(Pool& p, int part) {
    const index_t begin = p.n * part / p.parts, end = p.n * (part + 1) / p.parts;
    if (begin < end) p.body(p.context, begin, end);
}

void worker(int index, std::uint64_t seen) {
    Pool& p = pool();
    for (;;) {
        auto since = std::chrono::steady_clock::now();
        for (int spins = 0; p.generation.load(std::memory_order_acquire) == seen; ++spins) {
            DLX_PAUSE();
            if ((spins & 255) == 255 &&
                std::chrono::steady_clock::now() - since >
                    std::chrono::microseconds(kSpinMicroseconds)) {
                std::unique_lock<std::mutex> hold(p.lock);
                p.sleepers.fetch_add(1);
                p.wake.wait(hold, [&] {
                    return p.generation.load(std::memory_order_acquire) != seen;
                });
                p.sleepers.fetch_sub(1);
                break;
            }
        }
        seen = p.generation.load(std::memory_order_acquire);
        if (index < p.parts) run_part(p, index);
        p.pending.fetch_sub(1, std::memory_order_acq_rel);
    }
}

void start_workers(Pool& p) {
    while (p.started < p.threads) {
        std::thread(worker, p.started, p.generation.load()).detach();
        ++p.started;
    }
}

// A forked child has none of the parent's threads.
void forget_workers_after_fork() {
    Pool& p = pool();
    new (&p.lock) std::mutex();
    new (&p.wake) std::condition_variable();
    p.started = 1;
    p.sleepers.store(0);
    p.pending.store(0);
    p.busy.store(false);
}

}  // namespace
}  // namespace dlx_cpu

using dlx_cpu::index_t;

// Use ``threads`` threads (the caller's included) from the next region on; fewer than
// before leaves the extra workers idle.
extern "C" void dlx_thread_pool_resize(int threads) {
    static bool fork_handler = (pthread_atfork(nullptr, nullptr, dlx_cpu::forget_workers_after_fork), true);
    (void)fork_handler;
    dlx_cpu::Pool& p = dlx_cpu::pool();
    p.threads = threads < 1 ? 1 : threads > dlx_cpu::kMaxThreads ? dlx_cpu::kMaxThreads : threads;
}

extern "C" int dlx_thread_pool_size() { return dlx_cpu::pool().threads; }

// Run body(context, begin, end) over [0, n) in up to size() parts of at least ``grain``.
extern "C" void dlx_parallel_for(dlx_cpu::parallel_body body, void* context, index_t n,
                                 index_t grain) {
    dlx_cpu::Pool& p = dlx_cpu::pool();
    index_t parts = grain > 0 ? n / grain : n;
    if (parts > p.threads) parts = p.threads;
    bool expected = false;
    if (parts < 2 || !p.busy.compare_exchange_strong(expected, true)) {
        if (n > 0) body(context, 0, n);
        return;
    }
    if (p.started < p.threads) dlx_cpu::start_workers(p);
    if (parts > p.started) parts = p.started;
    p.body = body;
    p.context = context;
    p.n = n;
    p.parts = int(parts);
    p.pending.store(p.started - 1, std::memory_order_relaxed);
    p.generation.fetch_add(1, std::memory_order_acq_rel);
    if (p.sleepers.load() > 0) {
        std::lock_guard<std::mutex> hold(p.lock);
        p.wake.notify_all();
    }
    dlx_cpu::run_part(p, 0);
    while (p.pending.load(std::memory_order_acquire) > 0) DLX_PAUSE();
    p.busy.store(false, std::memory_order_release);
}
