// Matrix products for the Dense layer (backends/cpu_kernels.py:matmul), split over dlx's
// thread pool with the BLAS on one thread per part (parallel.h:gemm).
#include <algorithm>

#include "parallel.h"

DLX_EXPORT_CONNECT

// Row-major C(M, N) = op(A) @ op(B) + beta * C; op transposes when trans_* is nonzero.
#define DLX_MATMUL(T, suffix)                                                                 \
    extern "C" void dlx_matmul_##suffix(int trans_a, int trans_b, dlx_cpu::index_t M,          \
                                        dlx_cpu::index_t N, dlx_cpu::index_t K, const T* A,    \
                                        dlx_cpu::index_t lda, const T* B, dlx_cpu::index_t ldb, \
                                        double beta, T* C, dlx_cpu::index_t ldc) {             \
        dlx_cpu::gemm<T>(trans_a != 0, trans_b != 0, M, N, K, T(1), A, lda, B, ldb, T(beta), C, \
                         ldc);                                                                 \
    }
DLX_MATMUL(float, f32)
DLX_MATMUL(double, f64)
#undef DLX_MATMUL

namespace dlx_cpu {

// The Dense layer's forward: y(M, N) = x(M, K) @ w(K, N) + bias, then ReLU when ``relu``.
// Each part of the product adds the bias and applies the ReLU to its own block of y while
// it is in cache. ``bias`` may be null.
template <typename T>
void linear_forward(index_t M, index_t N, index_t K, const T* x, const T* w, const T* bias,
                    bool relu, T* y) {
    void* f = blas_gemm<T>();
    OneBlasThread one_thread;
    auto block = [&](index_t i0, index_t i1, index_t j0, index_t j1) {
        for (index_t i = i0; i < i1; ++i) {
            T* row = y + i * N;
            if (bias != nullptr) {
                std::memcpy(row + j0, bias + j0, sizeof(T) * (j1 - j0));
            }
        }
        gemm_in_line<T>(f, false, false, i1 - i0, j1 - j0, K, T(1), x + i0 * K, K, w + j0, N,
                        bias != nullptr ? T(1) : T(0), y + i0 * N + j0, N);
        if (relu) {
            for (index_t i = i0; i < i1; ++i) {
                T* row = y + i * N;
#pragma omp simd
                for (index_t j = j0; j < j1; ++j) row[j] = row[j] < T(0) ? T(0) : row[j];  // NaN stays
            }
        }
    };
    constexpr index_t unit = 16;
    if (pool_threads() < 2 || M * N * K < kSplitMultiplyAdds) {
        block(0, M, 0, N);
    } else if (M <= N) {
        parallel_for((N + unit - 1) / unit, 1, [&](index_t begin, index_t end) {
            block(0, M, begin * unit, end * unit < N ? end * unit : N);
        });
    } else {
        parallel_for((M + unit - 1) / unit, 1, [&](index_t begin, index_t end) {
            block(begin * unit, end * unit < M ? end * unit : M, 0, N);
        });
    }
}

// Both products of a Dense backward take M * N * K multiply-adds. From this size on they run
// side by side, each on its own threads (half the pool), instead of one after the other, each
// split over the whole pool: a product cut in two runs less efficiently than a whole one (each
// part packs its own panels; mlp_train's 128 x 512 x 256 products run 10-15% slower split in
// two than the two whole products side by side).
constexpr index_t kSideBySideMultiplyAdds = index_t(1) << 20;

// C(M, N) = op(A) @ op(B) cut like gemm() cuts it, block ``block`` of ``blocks``, on this
// thread: by columns of C when M <= N, else by rows, in multiples of 16.
template <typename T>
void gemm_block(index_t block, index_t blocks, bool trans_a, bool trans_b, index_t M, index_t N,
                index_t K, const T* A, index_t lda, const T* B, index_t ldb, T* C, index_t ldc) {
    constexpr index_t unit = 16;
    void* f = blas_gemm<T>();
    const bool by_columns = M <= N;
    const index_t units = ((by_columns ? N : M) + unit - 1) / unit;
    const index_t u0 = units * block / blocks, u1 = units * (block + 1) / blocks;
    const index_t extent = by_columns ? N : M;
    const index_t i0 = u0 * unit, i1 = u1 * unit < extent ? u1 * unit : extent;
    if (i0 >= i1) return;
    if (by_columns) {
        gemm_in_line<T>(f, trans_a, trans_b, M, i1 - i0, K, T(1), A, lda,
                        trans_b ? B + i0 * ldb : B + i0, ldb, T(0), C + i0, ldc);
    } else {
        gemm_in_line<T>(f, trans_a, trans_b, i1 - i0, N, K, T(1), trans_a ? A + i0 : A + i0 * lda,
                        lda, B, ldb, T(0), C + i0 * ldc, ldc);
    }
}

// gx(M, K) = gm @ w.T and gw(K, N) = x.T @ gm as one region: the first half of the pool's
// parts compute blocks of gx, the second half blocks of gw (one whole product each on two
// threads).
template <typename T>
void input_and_weight_grads_side_by_side(index_t M, index_t N, index_t K, const T* x, const T* w,
                                         const T* gm, T* gx, T* gw) {
    OneBlasThread one_thread;
    const index_t blocks = pool_threads() / 2;  // per product
    parallel_for(2 * blocks, 1, [&](index_t begin, index_t end) {
        for (index_t unit = begin; unit < end; ++unit) {
            if (unit < blocks) {
                gemm_block<T>(unit, blocks, false, true, M, K, N, gm, N, w, N, gx, K);
            } else {
                gemm_block<T>(unit - blocks, blocks, true, false, K, N, M, x, K, gm, N, gw, N);
            }
        }
    });
}

// The Dense layer's backward, given dL/dy g(M, N) and, for a fused ReLU, its output y:
//   gm = g where y > 0 (g itself without ReLU), written to ``masked``;
//   gb(N) = column sums of gm (row by row, as NumPy's sum over axis 0 adds them);
//   gx(M, K) = gm @ w.T;  gw(K, N) = x.T @ gm.
// Any of gb, gx, gw may be null (not wanted); ``masked`` may be g when y is null.
template <typename T>
void linear_backward(index_t M, index_t N, index_t K, const T* g, const T* y, const T* x,
                     const T* w, T* masked, T* gx, T* gw, T* gb) {
    if (y != nullptr || gb != nullptr) {
        constexpr index_t unit = 16;
        parallel_for((N + unit - 1) / unit, M * N >= (index_t(1) << 15) ? 1 : (N + unit) / unit,
                     [&](index_t begin, index_t end) {
                         const index_t j0 = begin * unit, j1 = end * unit < N ? end * unit : N;
                         if (gb != nullptr) std::fill(gb + j0, gb + j1, T(0));
                         for (index_t i = 0; i < M; ++i) {
                             const T* gi = g + i * N;
                             T* mi = masked + i * N;
                             if (y != nullptr) {
                                 const T* yi = y + i * N;
#pragma omp simd
                                 for (index_t j = j0; j < j1; ++j) {
                                     mi[j] = yi[j] > T(0) ? gi[j] : T(0);
                                 }
                             }
                             if (gb != nullptr) {
#pragma omp simd
                                 for (index_t j = j0; j < j1; ++j) gb[j] += mi[j];
                             }
                         }
                     });
    }
    if (gx != nullptr && gw != nullptr && pool_threads() >= 2 &&
        M * N * K >= kSideBySideMultiplyAdds) {
        input_and_weight_grads_side_by_side<T>(M, N, K, x, w, masked, gx, gw);
        return;
    }
    if (gx != nullptr) gemm<T>(false, true, M, K, N, T(1), masked, N, w, N, T(0), gx, K);
    if (gw != nullptr) gemm<T>(true, false, K, N, M, T(1), x, K, masked, N, T(0), gw, N);
}

}  // namespace dlx_cpu

#define DLX_LINEAR(T, suffix)                                                                 \
    extern "C" void dlx_linear_forward_##suffix(dlx_cpu::index_t M, dlx_cpu::index_t N,        \
                                                dlx_cpu::index_t K, const T* x, const T* w,    \
                                                const T* bias, int relu, T* y) {               \
        dlx_cpu::linear_forward<T>(M, N, K, x, w, bias, relu != 0, y);                         \
    }                                                                                          \
    extern "C" void dlx_linear_backward_##suffix(                                              \
        dlx_cpu::index_t M, dlx_cpu::index_t N, dlx_cpu::index_t K, const T* g, const T* y,    \
        const T* x, const T* w, T* masked, T* gx, T* gw, T* gb) {                              \
        dlx_cpu::linear_backward<T>(M, N, K, g, y, x, w, masked, gx, gw, gb);                  \
    }
DLX_LINEAR(float, f32)
DLX_LINEAR(double, f64)
#undef DLX_LINEAR
