// Optimizer updates in one pass over memory (NumPy needs one pass per operation), split
// over dlx's thread pool.
#include "parallel.h"

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

DLX_EXPORT_CONNECT

namespace dlx_cpu {

// Subnormal numbers flushed to zero (inputs and results) for the life of the object, on this
// thread. Why: a slot that only decays (Adam's m for a unit whose gradient is always zero:
// m *= 0.9 per step) reaches the subnormal range after some 800 steps, and from then on every
// operation on it takes a microcode assist: mlp_train's Adam step went from 0.19 to 3.4 ms.
// Flushed, such a slot becomes 0 a little earlier, which changes no update by more than the
// smallest normal float; TensorFlow flushes subnormals on the CPU by default too.
class FlushSubnormals {
  public:
#if defined(__SSE__)
    FlushSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushToZero | kZeroInputs); }
    ~FlushSubnormals() { _mm_setcsr(saved_); }

  private:
    static constexpr unsigned kFlushToZero = 0x8000, kZeroInputs = 0x0040;
    unsigned saved_;
#endif
};

}  // namespace dlx_cpu

namespace dlx_cpu {

// Keras's Adam, in place, in the order of operations of the NumPy kernel
// (backends/numpy_kernels.py:adam_update), so both round alike:
//   m += (g - m) * one_minus_beta_1;  v += (g*g - v) * one_minus_beta_2;
//   w -= (m / (sqrt(v) + epsilon)) * alpha
// elements per part: below this a hand-over to another thread costs more than it saves
constexpr index_t kGrain = index_t(1) << 14;

template <typename T>
void adam_serial(T* w, const T* g, T* m, T* v, index_t n, T alpha, T one_minus_beta_1,
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

// adam_serial() on ``count`` variables, ``w[k]`` ... of ``sizes[k]`` elements each, with
// their elements, all taken together, split over the pool.
template <typename T>
void adam_many(index_t count, const index_t* sizes, T* const* w, const T* const* g, T* const* m,
               T* const* v, T alpha, T one_minus_beta_1, T one_minus_beta_2, T epsilon) {
    index_t total = 0;
    for (index_t k = 0; k < count; ++k) total += sizes[k];
    parallel_for(total, kGrain, [&](index_t begin, index_t end) {
        FlushSubnormals flush;
        index_t offset = 0;
        for (index_t k = 0; k < count && offset < end; offset += sizes[k], ++k) {
            const index_t lo = begin > offset ? begin - offset : 0;
            const index_t hi = end - offset < sizes[k] ? end - offset : sizes[k];
            if (lo < hi) {
                adam_serial<T>(w[k] + lo, g[k] + lo, m[k] + lo, v[k] + lo, hi - lo, alpha,
                               one_minus_beta_1, one_minus_beta_2, epsilon);
            }
        }
    });
}

}  // namespace dlx_cpu

#define DLX_ADAM(T, suffix)                                                              \
    extern "C" void dlx_adam_##suffix(T* w, const T* g, T* m, T* v, dlx_cpu::index_t n, \
                                      double alpha, double one_minus_beta_1,             \
                                      double one_minus_beta_2, double epsilon) {         \
        dlx_cpu::adam_many<T>(1, &n, &w, &g, &m, &v, T(alpha), T(one_minus_beta_1),       \
                              T(one_minus_beta_2), T(epsilon));                          \
    }
DLX_ADAM(float, f32)
DLX_ADAM(double, f64)
#undef DLX_ADAM

// adam_many() on ``count`` variables in one call: ``w[k]``, ``g[k]``, ``m[k]``, ``v[k]`` point to
// ``sizes[k]`` elements each (one Python-to-C crossing per step instead of one per variable).
#define DLX_ADAM_MANY(T, suffix)                                                               \
    extern "C" void dlx_adam_many_##suffix(dlx_cpu::index_t count, const dlx_cpu::index_t* sizes, \
                                           T* const* w, const T* const* g, T* const* m,        \
                                           T* const* v, double alpha, double one_minus_beta_1, \
                                           double one_minus_beta_2, double epsilon) {          \
        dlx_cpu::adam_many<T>(count, sizes, w, g, m, v, T(alpha), T(one_minus_beta_1),         \
                              T(one_minus_beta_2), T(epsilon));                                \
    }
DLX_ADAM_MANY(float, f32)
DLX_ADAM_MANY(double, f64)
#undef DLX_ADAM_MANY

namespace dlx_cpu {

// Keras's SGD with momentum, in place, in the order of operations of
// dlx/optimizers/sgd.py:  m = m * momentum - lr * g;  w += m
// (Nesterov: w += momentum * m - lr * g).
template <typename T>
void sgd_momentum_serial(T* w, const T* g, T* m, index_t n, T lr, T momentum, bool nesterov) {
    if (nesterov) {
#pragma omp simd
        for (index_t i = 0; i < n; ++i) {
            const T step = lr * g[i];
            const T mi = m[i] * momentum - step;
            m[i] = mi;
            w[i] += momentum * mi - step;
        }
    } else {
#pragma omp simd
        for (index_t i = 0; i < n; ++i) {
            const T mi = m[i] * momentum - lr * g[i];
            m[i] = mi;
            w[i] += mi;
        }
    }
}

// Keras's RMSprop (not centered), in place, in the order of operations of
// dlx/optimizers/rmsprop.py:  v = v * rho + one_minus_rho * (g * g);
// increment = lr * g / sqrt(v + epsilon);  momentum: m = m * momentum + increment, w -= m;
// else w -= increment.  ``m`` is null without momentum.
template <typename T>
void rmsprop_serial(T* w, const T* g, T* v, T* m, index_t n, T lr, T rho, T one_minus_rho,
                    T epsilon, T momentum) {
    if (m != nullptr) {
#pragma omp simd
        for (index_t i = 0; i < n; ++i) {
            const T gi = g[i];
            const T vi = v[i] * rho + one_minus_rho * (gi * gi);
            v[i] = vi;
            const T mi = m[i] * momentum + (lr * gi) / std::sqrt(vi + epsilon);
            m[i] = mi;
            w[i] -= mi;
        }
    } else {
#pragma omp simd
        for (index_t i = 0; i < n; ++i) {
            const T gi = g[i];
            const T vi = v[i] * rho + one_minus_rho * (gi * gi);
            v[i] = vi;
            w[i] -= (lr * gi) / std::sqrt(vi + epsilon);
        }
    }
}

template <typename T>
void sgd_momentum(T* w, const T* g, T* m, index_t n, T lr, T momentum, bool nesterov) {
    parallel_for(n, kGrain, [&](index_t begin, index_t end) {
        FlushSubnormals flush;
        sgd_momentum_serial<T>(w + begin, g + begin, m + begin, end - begin, lr, momentum,
                               nesterov);
    });
}

template <typename T>
void rmsprop(T* w, const T* g, T* v, T* m, index_t n, T lr, T rho, T one_minus_rho, T epsilon,
             T momentum) {
    parallel_for(n, kGrain, [&](index_t begin, index_t end) {
        FlushSubnormals flush;
        rmsprop_serial<T>(w + begin, g + begin, v + begin, m ? m + begin : nullptr, end - begin,
                          lr, rho, one_minus_rho, epsilon, momentum);
    });
}

}  // namespace dlx_cpu

#define DLX_SGD_RMSPROP(T, suffix)                                                             \
    extern "C" void dlx_sgd_momentum_##suffix(T* w, const T* g, T* m, dlx_cpu::index_t n,      \
                                              double lr, double momentum, int nesterov) {      \
        dlx_cpu::sgd_momentum<T>(w, g, m, n, T(lr), T(momentum), nesterov != 0);               \
    }                                                                                          \
    extern "C" void dlx_rmsprop_##suffix(T* w, const T* g, T* v, T* m, dlx_cpu::index_t n,     \
                                         double lr, double rho, double one_minus_rho,          \
                                         double epsilon, double momentum) {                    \
        dlx_cpu::rmsprop<T>(w, g, v, m, n, T(lr), T(rho), T(one_minus_rho), T(epsilon),        \
                            T(momentum));                                                      \
    }
DLX_SGD_RMSPROP(float, f32)
DLX_SGD_RMSPROP(double, f64)
#undef DLX_SGD_RMSPROP
