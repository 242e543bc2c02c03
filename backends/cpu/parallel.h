// What a kernel source needs to run on dlx's thread pool (thread_pool.cpp) and to call the
// BLAS products that NumPy's OpenBLAS provides.
//
// Each kernel library gets the pool and the BLAS from Python once it is loaded, through
// the dlx_connect() that DLX_EXPORT_CONNECT defines (backends/cpu_library.py calls it).
// Unconnected, parallel_for runs in line and gemm needs a BLAS pointer passed in.
#pragma once

#include "common.h"

namespace dlx_cpu {

using parallel_body = void (*)(void* context, index_t begin, index_t end);
using parallel_for_fn = void (*)(parallel_body body, void* context, index_t n, index_t grain);
using blas_threads_set_fn = void (*)(int);
using blas_threads_get_fn = int (*)();

struct Connections {
    parallel_for_fn parallel_for = nullptr;
    int threads = 1;
    void* sgemm = nullptr;  // cblas_sgemm with 64-bit integers
    void* dgemm = nullptr;
    blas_threads_set_fn blas_set_threads = nullptr;
    blas_threads_get_fn blas_get_threads = nullptr;
};

inline Connections& connections() {
    static Connections made;
    return made;
}

inline int pool_threads() { return connections().parallel_for ? connections().threads : 1; }

// body(begin, end) over [0, n), in parts of at least ``grain`` on the pool's threads.
template <typename Body>
void parallel_for(index_t n, index_t grain, const Body& body) {
    const Connections& c = connections();
    if (c.parallel_for == nullptr || c.threads < 2 || n < 2 * (grain > 0 ? grain : 1)) {
        if (n > 0) body(index_t(0), n);
        return;
    }
    c.parallel_for(
        [](void* context, index_t begin, index_t end) {
            (*static_cast<const Body*>(context))(begin, end);
        },
        const_cast<Body*>(&body), n, grain);
}

// OpenBLAS held to one thread while the pool splits a product (OpenBLAS's own threads
// would otherwise be asked for by each part at once).
class OneBlasThread {
  public:
    OneBlasThread() {
        const Connections& c = connections();
        if (c.blas_get_threads && c.blas_set_threads) {
            previous_ = c.blas_get_threads();
            if (previous_ != 1) c.blas_set_threads(1);
        }
    }
    ~OneBlasThread() {
        if (previous_ > 1) connections().blas_set_threads(previous_);
    }
    OneBlasThread(const OneBlasThread&) = delete;
    OneBlasThread& operator=(const OneBlasThread&) = delete;

  private:
    int previous_ = 1;
};

template <typename T>
using cblas_gemm_fn = void (*)(int, int, int, index_t, index_t, index_t, T, const T*, index_t,
                               const T*, index_t, T, T*, index_t);

template <typename T>
inline void* blas_gemm() {
    return sizeof(T) == 4 ? connections().sgemm : connections().dgemm;
}

// Row-major C(M, N) = alpha * op(A) @ op(B) + beta * C through the BLAS, on this thread.
template <typename T>
inline void gemm_in_line(void* f, bool trans_a, bool trans_b, index_t M, index_t N, index_t K,
                         T alpha, const T* A, index_t lda, const T* B, index_t ldb, T beta, T* C,
                         index_t ldc) {
    constexpr int row_major = 101, no_trans = 111, trans = 112;
    reinterpret_cast<cblas_gemm_fn<T>>(f)(row_major, trans_a ? trans : no_trans,
                                          trans_b ? trans : no_trans, M, N, K, alpha, A, lda, B,
                                          ldb, beta, C, ldc);
}

// The same product split over the pool: by columns of C when A is the smaller operand
// (each part then packs all of A and its share of B), else by rows. ``f`` may be null
// to use the connected BLAS. Products under ``kSplitMultiplyAdds`` run in line.
constexpr index_t kSplitMultiplyAdds = index_t(1) << 17;

template <typename T>
void gemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A,
          index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc, void* f = nullptr) {
    if (f == nullptr) f = blas_gemm<T>();
    if (M <= 0 || N <= 0) return;
    const int threads = pool_threads();
    OneBlasThread one_thread;
    if (threads < 2 || M * N * K < kSplitMultiplyAdds) {
        gemm_in_line<T>(f, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    constexpr index_t block = 16;  // one AVX-512 register of floats
    if (M <= N) {
        parallel_for((N + block - 1) / block, 1, [&](index_t begin, index_t end) {
            const index_t j0 = begin * block, j1 = end * block < N ? end * block : N;
            const T* Bj = trans_b ? B + j0 * ldb : B + j0;
            gemm_in_line<T>(f, trans_a, trans_b, M, j1 - j0, K, alpha, A, lda, Bj, ldb, beta,
                            C + j0, ldc);
        });
    } else {
        parallel_for((M + block - 1) / block, 1, [&](index_t begin, index_t end) {
            const index_t i0 = begin * block, i1 = end * block < M ? end * block : M;
            const T* Ai = trans_a ? A + i0 : A + i0 * lda;
            gemm_in_line<T>(f, trans_a, trans_b, i1 - i0, N, K, alpha, Ai, lda, B, ldb, beta,
                            C + i0 * ldc, ldc);
        });
    }
}

}  // namespace dlx_cpu

// Defines the library's dlx_connect(), which Python calls once after loading it.
#define DLX_EXPORT_CONNECT                                                                    \
    extern "C" void dlx_connect(dlx_cpu::parallel_for_fn parallel_for, int threads,            \
                                void* sgemm, void* dgemm, void* blas_set, void* blas_get) {    \
        dlx_cpu::Connections& c = dlx_cpu::connections();                                      \
        c.parallel_for = parallel_for;                                                         \
        c.threads = threads;                                                                   \
        c.sgemm = sgemm;                                                                       \
        c.dgemm = dgemm;                                                                       \
        c.blas_set_threads = reinterpret_cast<dlx_cpu::blas_threads_set_fn>(blas_set);         \
        c.blas_get_threads = reinterpret_cast<dlx_cpu::blas_threads_get_fn>(blas_get);         \
    }
