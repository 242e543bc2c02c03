// Softmax cross-entropy against integer labels (backends/cpu_kernels.py:
// sparse_softmax_cross_entropy), forward and backward, each one pass over the logits.
// NumPy needs some ten calls for the same (max, subtract, exp, sum, divide, log, gather...):
// for mlp_train's 128 x 10 logits those calls cost more than all the arithmetic.
//
// Labels are int64. A label outside [0, classes) is never used as an index: the forward
// reports the first row that has one, and the caller raises.
#include "gate_math.h"
#include "parallel.h"

DLX_EXPORT_CONNECT

namespace dlx_cpu {

inline float exp_of(float x) { return gate::exp_f32(x); }
inline double exp_of(double x) { return std::exp(x); }

// rows per part: a part should hold some thousands of elements before it is worth a thread
inline index_t rows_per_part(index_t classes) {
    const index_t rows = (index_t(1) << 14) / (classes > 0 ? classes : 1);
    return rows > 0 ? rows : 1;
}

// loss[r] = log(sum_j exp(x[r, j] - max_r)) - (x[r, label[r]] - max_r) and the softmax
// p[r, :] = exp(x[r, :] - max_r) / sum, for logits x (rows, classes). Returns -1, or the
// first row whose label is out of range (then nothing is computed).
//
// The exponentials run as one flat loop over a part's rows: a loop over one row of a
// classifier's few classes (10 for digits) is shorter than a vector, so the compiler's
// vector loop would never run and every exponential would be a scalar call.
template <typename T>
index_t sparse_softmax_cross_entropy(index_t rows, index_t classes, const T* logits,
                                     const std::int64_t* labels, T* loss, T* probabilities) {
    for (index_t r = 0; r < rows; ++r) {
        if (labels[r] < 0 || labels[r] >= classes) return r;
    }
    // per-row loops: vectorized for long rows; for short ones the vector set-up costs more
    const bool long_rows = classes >= 16;
    parallel_for(rows, rows_per_part(classes), [&](index_t begin, index_t end) {
        for (index_t r = begin; r < end; ++r) {  // p = x - max
            const T* x = logits + r * classes;
            T* p = probabilities + r * classes;
            T top = x[0];
            if (long_rows) {
#pragma omp simd reduction(max : top)
                for (index_t j = 1; j < classes; ++j) top = x[j] > top ? x[j] : top;
#pragma omp simd
                for (index_t j = 0; j < classes; ++j) p[j] = x[j] - top;  // NaN and inf pass
            } else {
                for (index_t j = 1; j < classes; ++j) top = x[j] > top ? x[j] : top;
                for (index_t j = 0; j < classes; ++j) p[j] = x[j] - top;
            }
            loss[r] = -p[labels[r]];
        }
        T* flat = probabilities + begin * classes;
        const index_t count = (end - begin) * classes;
#pragma omp simd
        for (index_t i = 0; i < count; ++i) flat[i] = exp_of(flat[i]);
        for (index_t r = begin; r < end; ++r) {  // p /= sum, loss += log(sum)
            T* p = probabilities + r * classes;
            T sum = 0;
            if (long_rows) {
#pragma omp simd reduction(+ : sum)
                for (index_t j = 0; j < classes; ++j) sum += p[j];
            } else {
                for (index_t j = 0; j < classes; ++j) sum += p[j];
            }
            loss[r] += std::log(sum);
            const T scale = T(1) / sum;
            for (index_t j = 0; j < classes; ++j) p[j] *= scale;
        }
    });
    return -1;
}

// grad[r, :] = g[r] * (p[r, :] - one_hot(label[r])); ``g_stride`` is 0 when one g (a mean's
// gradient over the count) applies to every row. Labels were checked by the forward.
template <typename T>
void sparse_softmax_cross_entropy_backward(index_t rows, index_t classes, const T* g,
                                           index_t g_stride, const T* probabilities,
                                           const std::int64_t* labels, T* grad) {
    parallel_for(rows, rows_per_part(classes), [&](index_t begin, index_t end) {
        for (index_t r = begin; r < end; ++r) {
            const T gr = g[r * g_stride];
            const T* p = probabilities + r * classes;
            T* out = grad + r * classes;
#pragma omp simd
            for (index_t j = 0; j < classes; ++j) out[j] = p[j] * gr;
            out[labels[r]] = (p[labels[r]] - T(1)) * gr;
        }
    });
}

}  // namespace dlx_cpu

// bad_row[0] is set to -1, or to the first sample whose label is out of range.
#define DLX_LOSSES(T, suffix)                                                                  \
    extern "C" void dlx_sparse_softmax_cross_entropy_##suffix(                                 \
        dlx_cpu::index_t rows, dlx_cpu::index_t classes, const T* logits,                      \
        const std::int64_t* labels, T* loss, T* probabilities, dlx_cpu::index_t* bad_row) {    \
        *bad_row = dlx_cpu::sparse_softmax_cross_entropy<T>(rows, classes, logits, labels,     \
                                                            loss, probabilities);              \
    }                                                                                          \
    extern "C" void dlx_sparse_softmax_cross_entropy_backward_##suffix(                        \
        dlx_cpu::index_t rows, dlx_cpu::index_t classes, const T* g, dlx_cpu::index_t g_stride, \
        const T* probabilities, const std::int64_t* labels, T* grad) {                         \
        dlx_cpu::sparse_softmax_cross_entropy_backward<T>(rows, classes, g, g_stride,          \
                                                          probabilities, labels, grad);        \
    }
DLX_LOSSES(float, f32)
DLX_LOSSES(double, f64)
#undef DLX_LOSSES
