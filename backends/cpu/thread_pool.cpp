// dlx's one thread pool for the compiled CPU kernels (see parallel.h for how kernels use it).
//
// Why not OpenBLAS's threads or OpenMP: after a product, OpenBLAS keeps its second thread
// busy-waiting for the next one, so elementwise work on a second thread of our own only
// competes with it. One pool that runs both the products (each part a one-thread BLAS call)
// and the memory-bound kernels keeps every core on dlx's work.
//
// A region is cut into parts (at most one per thread); the caller and the workers claim
// parts from one atomic ticket, so the caller runs any part a worker has not claimed yet
// (a worker whose core is busy elsewhere, or that is asleep, delays nothing), then waits
// only for the parts already running. Workers wait for a new ticket first spinning (a
// training step calls kernels every few microseconds), then, after kSpinMicroseconds
// without work, asleep on a condition variable, so an idle process uses no CPU. One
// region runs at a time: a call made while another runs (a second Python thread, or a
// kernel inside a part) runs in line on its caller.
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

// The ticket: region number (high 32 bits), its part count (next 16) and the next part
// to claim (low 16). A claim is one compare-and-swap; a worker late for a region finds a
// newer number (or no part left) and takes nothing from it.
using ticket_t = std::uint64_t;
constexpr ticket_t region_of(ticket_t t) { return t >> 32; }
constexpr int parts_of(ticket_t t) { return int((t >> 16) & 0xffff); }
constexpr int next_of(ticket_t t) { return int(t & 0xffff); }

struct Pool {
    int threads = 1;  // wanted, caller included
    int started = 1;  // running, caller included
    std::atomic<bool> busy{false};
    std::atomic<ticket_t> ticket{0};
    std::atomic<int> done{0};  // parts of the region finished
    std::atomic<int> sleepers{0};
    std::mutex lock;
    std::condition_variable wake;
    // the region now running; written before its ticket is published
    parallel_body body = nullptr;
    void* context = nullptr;
    index_t n = 0;
};

// Never destroyed: workers may still wait on its condition variable at exit.
Pool& pool() {
    static Pool* made = new Pool();
    return *made;
}

// Claim and run parts of region ``region`` until none is left; returns how many ran.
int run_parts(Pool& p, ticket_t region) {
    int ran = 0;
    ticket_t t = p.ticket.load(std::memory_order_acquire);
    while (region_of(t) == region && next_of(t) < parts_of(t)) {
        if (!p.ticket.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel)) continue;
        const int part = next_of(t), parts = parts_of(t);
        const index_t begin = p.n * part / parts, end = p.n * (part + 1) / parts;
        if (begin < end) p.body(p.context, begin, end);
        p.done.fetch_add(1, std::memory_order_acq_rel);
        ++ran;
        t = p.ticket.load(std::memory_order_acquire);
    }
    return ran;
}

void worker(ticket_t seen) {
    Pool& p = pool();
    for (;;) {
        auto since = std::chrono::steady_clock::now();
        ticket_t t;
        for (int spins = 0; region_of(t = p.ticket.load(std::memory_order_acquire)) ==
                            region_of(seen);
             ++spins) {
            DLX_PAUSE();
            if ((spins & 255) == 255 &&
                std::chrono::steady_clock::now() - since >
                    std::chrono::microseconds(kSpinMicroseconds)) {
                std::unique_lock<std::mutex> hold(p.lock);
                p.sleepers.fetch_add(1);
                p.wake.wait(hold, [&] { return region_of(p.ticket.load()) != region_of(seen); });
                p.sleepers.fetch_sub(1);
                since = std::chrono::steady_clock::now();
            }
        }
        seen = t;
        run_parts(p, region_of(t));
    }
}

// A forked child has none of the parent's threads.
void forget_workers_after_fork() {
    Pool& p = pool();
    new (&p.lock) std::mutex();
    new (&p.wake) std::condition_variable();
    p.started = 1;
    p.sleepers.store(0);
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
    while (p.started < p.threads) {
        std::thread(dlx_cpu::worker, p.ticket.load()).detach();
        ++p.started;
    }
    p.body = body;
    p.context = context;
    p.n = n;
    p.done.store(0, std::memory_order_relaxed);
    const dlx_cpu::ticket_t region = dlx_cpu::region_of(p.ticket.load()) + 1;
    p.ticket.store((region << 32) | (dlx_cpu::ticket_t(parts) << 16), std::memory_order_seq_cst);
    if (p.sleepers.load() > 0) {
        std::lock_guard<std::mutex> hold(p.lock);
        p.wake.notify_all();
    }
    dlx_cpu::run_parts(p, region);
    for (int spins = 0; p.done.load(std::memory_order_acquire) < parts; ++spins) {
        // a claimed part is running on a worker; give its core back now and then in case
        // that worker shares ours
        if ((spins & 1023) == 1023) {
            std::this_thread::yield();
        } else {
            DLX_PAUSE();
        }
    }
    p.busy.store(false, std::memory_order_release);
}
