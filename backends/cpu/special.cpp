// Special functions the Array API standard lacks (backends/cpu_kernels.py:erf): the C
// library's, elementwise over the pool. dlx/ops/special.py's portable erf needs some 230
// array operations (a series evaluated in float64); libm's erf is one call per element and
// accurate to an ulp or so, in float32 as in float64.
#include "parallel.h"

DLX_EXPORT_CONNECT

namespace dlx_cpu {

inline float erf_of(float x) { return std::erf(x); }
inline double erf_of(double x) { return std::erf(x); }

template <typename T>
void erf(const T* x, T* y, index_t n) {
    parallel_for(n, index_t(1) << 14, [&](index_t begin, index_t end) {
        for (index_t i = begin; i < end; ++i) y[i] = erf_of(x[i]);
    });
}

}  // namespace dlx_cpu

#define DLX_SPECIAL(T, suffix)                                                                 \
    extern "C" void dlx_erf_##suffix(const T* x, T* y, dlx_cpu::index_t n) {                   \
        dlx_cpu::erf<T>(x, y, n);                                                              \
    }
DLX_SPECIAL(float, f32)
DLX_SPECIAL(double, f64)
#undef DLX_SPECIAL
