// Optimizer updates in one pass over memory (NumPy needs one pass per operation).
#include "common.h"

namespace dlx_cpu {

// Keras's Adam, in place, in the order of operations of the NumPy kernel
// (backends/numpy_kernels.py:adam_update), so both round alike:
//   m += (g - m) * one_minus_beta_1;  v += (g*g - v) * one_minus_beta_2;
//   w -= (m / (sqrt(v) + epsilon)) * alpha
template <typename T>
void adam(T* w, const T* g, T* m, T* v, index_t n, T alpha, T one_minus_beta_1,
          T one_minus_beta_2, T epsilon) {
#pragma omp simd
    for (index_t i = 0; i < n; ++i) {
        const T gi = g[i];
        const T mi = m[i] + (gi - m[i]) * one_minus_beta_1;
        const T vi = v[i] + (gi * gi - v[i]) * one_minus_beta_2;
        m[i] = mi;
        v[i] = vi;
        w[i] -= (mi / (std::sqrt(vi) + epsilon)) * alpha;
    }
}

}  // namespace dlx_cpu

#define DLX_ADAM(T, suffix)                                                              \
    extern "C" void dlx_adam_##suffix(T* w, const T* g, T* m, T* v, dlx_cpu::index_t n, \
                                      double alpha, double one_minus_beta_1,             \
                                      double one_minus_beta_2, double epsilon) {         \
        dlx_cpu::adam<T>(w, g, m, v, n, T(alpha), T(one_minus_beta_1),                   \
                         T(one_minus_beta_2), T(epsilon));                               \
    }
DLX_ADAM(float, f32)
DLX_ADAM(double, f64)
#undef DLX_ADAM
