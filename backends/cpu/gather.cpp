// The gradient of a gather of rows (backends/cpu_kernels.py:take_backward; an Embedding's
// lookup): out(rows, width) = zeros, then out[index[i]] += g[i] for every i in order.
// Split over the pool by ranges of output rows; each part reads every index and adds those
// of its rows, in the order of the indices, so the sums do not depend on the thread count.
#include <cstring>

#include "parallel.h"

DLX_EXPORT_CONNECT

namespace dlx_cpu {

// Indices are in [0, rows) (the caller checked).
template <typename T>
void take_rows_backward(index_t count, index_t width, const std::int64_t* indices, const T* g,
                        index_t rows, T* out) {
    const index_t grain = (index_t(1) << 14) / (width > 0 ? width : 1) + 1;
    parallel_for(rows, grain, [&](index_t begin, index_t end) {
        std::memset(out + begin * width, 0, sizeof(T) * (end - begin) * width);
        for (index_t i = 0; i < count; ++i) {
            const index_t row = indices[i];
            if (row < begin || row >= end) continue;
            T* o = out + row * width;
            const T* gi = g + i * width;
#pragma omp simd
            for (index_t c = 0; c < width; ++c) o[c] += gi[c];
        }
    });
}

}  // namespace dlx_cpu

#define DLX_GATHER(T, suffix)                                                                  \
    extern "C" void dlx_take_rows_backward_##suffix(dlx_cpu::index_t count,                    \
                                                    dlx_cpu::index_t width,                    \
                                                    const std::int64_t* indices, const T* g,   \
                                                    dlx_cpu::index_t rows, T* out) {           \
        dlx_cpu::take_rows_backward<T>(count, width, indices, g, rows, out);                   \
    }
DLX_GATHER(float, f32)
DLX_GATHER(double, f64)
#undef DLX_GATHER
