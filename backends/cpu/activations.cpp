// ReLU and its gradient as standalone ops (an Activation("relu") layer, or a ReLU after a
// normalization), elementwise over the pool (backends/cpu_kernels.py:relu, relu_grad).
// NumPy takes one pass for maximum(x, 0) but two for the gradient's mask; both are memory
// bound, so the second core pays here.
#include "parallel.h"

DLX_EXPORT_CONNECT

namespace dlx_cpu {

constexpr index_t kElementsPerPart = index_t(1) << 15;

// y = max(x, 0) as NumPy's maximum(x, 0.0) gives it: NaN stays NaN, -0.0 becomes 0.0.
template <typename T>
void relu(const T* x, T* y, index_t n) {
    parallel_for(n, kElementsPerPart, [&](index_t begin, index_t end) {
#pragma omp simd
        for (index_t i = begin; i < end; ++i) y[i] = x[i] <= T(0) ? T(0) : x[i];
    });
}

// out = g where y > 0, else 0 (the generic ``where(y > 0, g, 0)``).
template <typename T>
void relu_grad(const T* g, const T* y, T* out, index_t n) {
    parallel_for(n, kElementsPerPart, [&](index_t begin, index_t end) {
#pragma omp simd
        for (index_t i = begin; i < end; ++i) {
            const T gi = g[i];  // read either way: a select, not a branch the data decides
            out[i] = y[i] > T(0) ? gi : T(0);
        }
    });
}

}  // namespace dlx_cpu

#define DLX_ACTIVATIONS(T, suffix)                                                             \
    extern "C" void dlx_relu_##suffix(const T* x, T* y, dlx_cpu::index_t n) {                  \
        dlx_cpu::relu<T>(x, y, n);                                                             \
    }                                                                                          \
    extern "C" void dlx_relu_grad_##suffix(const T* g, const T* y, T* out,                     \
                                           dlx_cpu::index_t n) {                               \
        dlx_cpu::relu_grad<T>(g, y, out, n);                                                   \
    }
DLX_ACTIVATIONS(float, f32)
DLX_ACTIVATIONS(double, f64)
#undef DLX_ACTIVATIONS
