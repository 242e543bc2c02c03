// Batch normalization over the rows of x (rows, C), channels last, and layer normalization of
// each row (backends/cpu_normalization.py): the training forward and its backward, each in two
// passes over x where NumPy makes some ten.
//
//   forward:  mean = mean of the rows, var = mean((x - mean)^2) (biased, as Keras and PyTorch
//             normalize), inv = 1 / sqrt(var + eps), y = (x - mean) * inv * gamma + beta
//   backward: xhat = (x - mean) * inv (recomputed, not stored), sg = sum of g, sgx = sum of
//             g * xhat over the rows; gx = inv * gamma * (g - sg / rows - xhat * sgx / rows),
//             dgamma = sgx, dbeta = sg
//
// Sums over rows are taken in blocks of rows (column_sums), each block summed in double and
// the block sums added in block order: the result does not depend on the thread count.
#include <algorithm>
#include <vector>

#include "parallel.h"

DLX_EXPORT_CONNECT

namespace dlx_cpu {

constexpr index_t kRowsPerBlock = 256;  // rows per part of the elementwise passes
constexpr index_t kMaxSumBlocks = 1024;  // bounds the partial sums' memory: blocks x C doubles

// Per-channel sums over the rows in blocks: partial[b * C + c] = sum over the rows of block b
// of term(row, c), then total[c] = the partials added in block order. The blocks depend on
// ``rows`` alone (256 rows, more when there would be over kMaxSumBlocks), never on the threads.
template <typename T, typename Term>
void column_sums(index_t rows, index_t C, const Term& term, double* total) {
    const index_t per_block = std::max(kRowsPerBlock, (rows + kMaxSumBlocks - 1) / kMaxSumBlocks);
    const index_t blocks = (rows + per_block - 1) / per_block;
    std::vector<double> partial(static_cast<size_t>(blocks * C), 0.0);
    parallel_for(blocks, 1, [&](index_t begin, index_t end) {
        for (index_t b = begin; b < end; ++b) {
            double* sums = partial.data() + b * C;
            const index_t r1 = std::min((b + 1) * per_block, rows);
            for (index_t r = b * per_block; r < r1; ++r) term(r, sums);
        }
    });
    for (index_t c = 0; c < C; ++c) total[c] = 0.0;
    for (index_t b = 0; b < blocks; ++b) {
        for (index_t c = 0; c < C; ++c) total[c] += partial[b * C + c];
    }
}

template <typename T>
void batch_norm_forward(index_t rows, index_t C, const T* x, const T* gamma, const T* beta,
                        double epsilon, T* y, T* mean_out, T* var_out, T* inv_out) {
    std::vector<double> sums(static_cast<size_t>(C)), squares(static_cast<size_t>(C));
    column_sums<T>(
        rows, C,
        [&](index_t r, double* s) {
            const T* xr = x + r * C;
            for (index_t c = 0; c < C; ++c) s[c] += double(xr[c]);
        },
        sums.data());
    std::vector<T> mean(static_cast<size_t>(C));
    for (index_t c = 0; c < C; ++c) mean[c] = T(sums[c] / double(rows));
    column_sums<T>(
        rows, C,
        [&](index_t r, double* s) {
            const T* xr = x + r * C;
            for (index_t c = 0; c < C; ++c) {
                const double d = double(xr[c]) - double(mean[c]);
                s[c] += d * d;
            }
        },
        squares.data());
    // y = ((x - mean) * inv) * gamma + beta, rounded step by step as the generic op rounds
    // (a gamma of 1 and a beta of 0 change nothing)
    std::vector<T> inv(static_cast<size_t>(C)), scale(static_cast<size_t>(C)),
        shift(static_cast<size_t>(C));
    for (index_t c = 0; c < C; ++c) {
        const double var = squares[c] / double(rows);
        inv[c] = T(1.0 / std::sqrt(var + epsilon));
        mean_out[c] = mean[c];
        var_out[c] = T(var);
        inv_out[c] = inv[c];
        scale[c] = gamma != nullptr ? gamma[c] : T(1);
        shift[c] = beta != nullptr ? beta[c] : T(0);
    }
    parallel_for(rows, kRowsPerBlock, [&](index_t begin, index_t end) {
        for (index_t r = begin; r < end; ++r) {
            const T* xr = x + r * C;
            T* yr = y + r * C;
#pragma omp simd
            for (index_t c = 0; c < C; ++c) {
                yr[c] = ((xr[c] - mean[c]) * inv[c]) * scale[c] + shift[c];
            }
        }
    });
}

// Any of gx, dgamma, dbeta may be null (not wanted).
template <typename T>
void batch_norm_backward(index_t rows, index_t C, const T* g, const T* x, const T* mean,
                         const T* inv, const T* gamma, T* gx, T* dgamma, T* dbeta) {
    std::vector<double> both(static_cast<size_t>(2 * C));  // sum g, then sum g * xhat
    column_sums<T>(
        rows, 2 * C,
        [&](index_t r, double* s) {
            const T* gr = g + r * C;
            const T* xr = x + r * C;
            for (index_t c = 0; c < C; ++c) {
                const T xhat = (xr[c] - mean[c]) * inv[c];
                s[c] += double(gr[c]);
                s[C + c] += double(gr[c]) * double(xhat);
            }
        },
        both.data());
    const double* sum_g = both.data();
    const double* sum_gx = both.data() + C;
    for (index_t c = 0; c < C; ++c) {
        if (dbeta != nullptr) dbeta[c] = T(sum_g[c]);
        if (dgamma != nullptr) dgamma[c] = T(sum_gx[c]);
    }
    if (gx == nullptr) return;
    std::vector<T> scale(static_cast<size_t>(C)), mean_g(static_cast<size_t>(C)),
        mean_gx(static_cast<size_t>(C));
    for (index_t c = 0; c < C; ++c) {
        scale[c] = gamma != nullptr ? inv[c] * gamma[c] : inv[c];
        mean_g[c] = T(sum_g[c] / double(rows));
        mean_gx[c] = T(sum_gx[c] / double(rows));
    }
    parallel_for(rows, kRowsPerBlock, [&](index_t begin, index_t end) {
        for (index_t r = begin; r < end; ++r) {
            const T* gr = g + r * C;
            const T* xr = x + r * C;
            T* out = gx + r * C;
#pragma omp simd
            for (index_t c = 0; c < C; ++c) {
                const T xhat = (xr[c] - mean[c]) * inv[c];
                out[c] = scale[c] * (gr[c] - mean_g[c] - xhat * mean_gx[c]);
            }
        }
    });
}

// Layer normalization of each row of x (rows, C) over its C elements:
//   mean_r, var_r (biased), inv_r = 1 / sqrt(var_r + eps), y = ((x - mean_r) * inv_r) * gamma + beta
// ``mean`` and ``inv`` (rows) are kept for the backward.
template <typename T>
void layer_norm_forward(index_t rows, index_t C, const T* x, const T* gamma, const T* beta,
                        double epsilon, T* y, T* mean, T* inv) {
    parallel_for(rows, kRowsPerBlock, [&](index_t begin, index_t end) {
        for (index_t r = begin; r < end; ++r) {
            const T* xr = x + r * C;
            // vector sums: their order is fixed by the build, not by the thread count
            double sum = 0.0;
#pragma omp simd reduction(+ : sum)
            for (index_t c = 0; c < C; ++c) sum += double(xr[c]);
            const T m = T(sum / double(C));
            double squares = 0.0;
#pragma omp simd reduction(+ : squares)
            for (index_t c = 0; c < C; ++c) {
                const double d = double(xr[c]) - double(m);
                squares += d * d;
            }
            const T k = T(1.0 / std::sqrt(squares / double(C) + epsilon));
            mean[r] = m;
            inv[r] = k;
            T* yr = y + r * C;
#pragma omp simd
            for (index_t c = 0; c < C; ++c) {
                const T v = (xr[c] - m) * k;
                yr[c] = (gamma != nullptr ? v * gamma[c] : v) + (beta != nullptr ? beta[c] : T(0));
            }
        }
    });
}

// gx = inv_r * (dxhat - mean_c(dxhat) - xhat * mean_c(dxhat * xhat)) with dxhat = g * gamma,
// per row; dgamma = sum over rows of g * xhat, dbeta = sum over rows of g. Any output may be null.
template <typename T>
void layer_norm_backward(index_t rows, index_t C, const T* g, const T* x, const T* mean,
                         const T* inv, const T* gamma, T* gx, T* dgamma, T* dbeta) {
    if (gx != nullptr) {
        parallel_for(rows, kRowsPerBlock, [&](index_t begin, index_t end) {
            for (index_t r = begin; r < end; ++r) {
                const T* gr = g + r * C;
                const T* xr = x + r * C;
                const T m = mean[r], k = inv[r];
                double sum_d = 0.0, sum_dx = 0.0;
#pragma omp simd reduction(+ : sum_d, sum_dx)
                for (index_t c = 0; c < C; ++c) {
                    const T xhat = (xr[c] - m) * k;
                    const T d = gamma != nullptr ? gr[c] * gamma[c] : gr[c];
                    sum_d += double(d);
                    sum_dx += double(d) * double(xhat);
                }
                const T mean_d = T(sum_d / double(C)), mean_dx = T(sum_dx / double(C));
                T* out = gx + r * C;
#pragma omp simd
                for (index_t c = 0; c < C; ++c) {
                    const T xhat = (xr[c] - m) * k;
                    const T d = gamma != nullptr ? gr[c] * gamma[c] : gr[c];
                    out[c] = k * (d - mean_d - xhat * mean_dx);
                }
            }
        });
    }
    if (dgamma == nullptr && dbeta == nullptr) return;
    std::vector<double> sums(static_cast<size_t>(2 * C));  // sum g * xhat, then sum g
    column_sums<T>(
        rows, 2 * C,
        [&](index_t r, double* s) {
            const T* gr = g + r * C;
            const T* xr = x + r * C;
            const T m = mean[r], k = inv[r];
            for (index_t c = 0; c < C; ++c) {
                s[c] += double(gr[c]) * double((xr[c] - m) * k);
                s[C + c] += double(gr[c]);
            }
        },
        sums.data());
    for (index_t c = 0; c < C; ++c) {
        if (dgamma != nullptr) dgamma[c] = T(sums[c]);
        if (dbeta != nullptr) dbeta[c] = T(sums[C + c]);
    }
}

}  // namespace dlx_cpu

#define DLX_BATCH_NORM(T, suffix)                                                              \
    extern "C" void dlx_batch_norm_forward_##suffix(                                           \
        dlx_cpu::index_t rows, dlx_cpu::index_t C, const T* x, const T* gamma, const T* beta,  \
        double epsilon, T* y, T* mean, T* var, T* inv) {                                       \
        dlx_cpu::batch_norm_forward<T>(rows, C, x, gamma, beta, epsilon, y, mean, var, inv);   \
    }                                                                                          \
    extern "C" void dlx_batch_norm_backward_##suffix(                                          \
        dlx_cpu::index_t rows, dlx_cpu::index_t C, const T* g, const T* x, const T* mean,      \
        const T* inv, const T* gamma, T* gx, T* dgamma, T* dbeta) {                            \
        dlx_cpu::batch_norm_backward<T>(rows, C, g, x, mean, inv, gamma, gx, dgamma, dbeta);   \
    }
#define DLX_LAYER_NORM(T, suffix)                                                              \
    extern "C" void dlx_layer_norm_forward_##suffix(                                           \
        dlx_cpu::index_t rows, dlx_cpu::index_t C, const T* x, const T* gamma, const T* beta,  \
        double epsilon, T* y, T* mean, T* inv) {                                               \
        dlx_cpu::layer_norm_forward<T>(rows, C, x, gamma, beta, epsilon, y, mean, inv);        \
    }                                                                                          \
    extern "C" void dlx_layer_norm_backward_##suffix(                                          \
        dlx_cpu::index_t rows, dlx_cpu::index_t C, const T* g, const T* x, const T* mean,      \
        const T* inv, const T* gamma, T* gx, T* dgamma, T* dbeta) {                            \
        dlx_cpu::layer_norm_backward<T>(rows, C, g, x, mean, inv, gamma, gx, dgamma, dbeta);   \
    }
DLX_LAYER_NORM(float, f32)
DLX_LAYER_NORM(double, f64)
#undef DLX_LAYER_NORM
DLX_BATCH_NORM(float, f32)
DLX_BATCH_NORM(double, f64)
#undef DLX_BATCH_NORM
