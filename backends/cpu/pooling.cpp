// Max and average pooling, 1-D to 3-D, channels_last, in one pass over memory.
//
// The NumPy kernel (backends/numpy_conv.py:NumpyPool) makes a pass per window offset and,
// in the max backward, compares x with y again; here every window is read once and the
// forward records the offset of each window's first maximum (hits), so the backward only
// reads g and the hits. Rounding follows the NumPy kernel: the same order of additions,
// the same divisions, and the same treatment of NaN, padding and ties.
#include <algorithm>
#include <limits>
#include <vector>

#include "common.h"

namespace dlx_cpu {

// A hit offset that marks a window without a hit: its maximum is NaN, or it lies in the
// padding (a window whose valid cells are all -inf and whose first cell is padded).
constexpr std::uint8_t kNoHit = 255;

// geometry: int64[17] = n, c, in[3], out[3], k[3], s[3], pad[3] (padding before), spatial
// axes in order; 1-D and 2-D pooling come with leading axes of size 1.
struct Geometry {
    index_t n, c, in[3], out[3], k[3], s[3], pad[3];
    explicit Geometry(const index_t* g) : n(g[0]), c(g[1]) {
        for (int a = 0; a < 3; ++a) {
            in[a] = g[2 + a];
            out[a] = g[5 + a];
            k[a] = g[8 + a];
            s[a] = g[11 + a];
            pad[a] = g[14 + a];
        }
    }
};

// Kernel offsets [lo, hi) of one window along one axis whose cells lie in the input;
// start: the input index of offset 0 (negative in the padding).
struct Span {
    index_t lo, hi, start;
};

inline Span span(const Geometry& g, int a, index_t o) {
    const index_t start = o * g.s[a] - g.pad[a];
    return {start < 0 ? -start : 0, std::min(g.k[a], g.in[a] - start), start};
}

// Calls f(out, n, d, h, w) for every window: out = its row in y (N, *out) and the spans of
// its valid cells; windows of each image in row-major order, or in reverse with `reverse`.
template <typename F>
void each_window(const Geometry& g, bool reverse, F&& f) {
    const index_t per_image = g.out[0] * g.out[1] * g.out[2];
    for (index_t n = 0; n < g.n; ++n) {
        for (index_t i = 0; i < per_image; ++i) {
            const index_t j = reverse ? per_image - 1 - i : i;
            const index_t ow = j % g.out[2], oh = (j / g.out[2]) % g.out[1];
            const index_t od = j / (g.out[2] * g.out[1]);
            f(n * per_image + j, n, span(g, 0, od), span(g, 1, oh), span(g, 2, ow));
        }
    }
}

// Row of input cell (n, d, h, w) (d, h, w: kernel offsets of the window of spans sd, sh, sw).
inline index_t cell(const Geometry& g, index_t n, const Span& sd, index_t kd, const Span& sh,
                    index_t kh, const Span& sw, index_t kw) {
    return ((n * g.in[0] + sd.start + kd) * g.in[1] + sh.start + kh) * g.in[2] + sw.start + kw;
}

inline std::uint8_t offset(const Geometry& g, index_t kd, index_t kh, index_t kw) {
    return static_cast<std::uint8_t>((kd * g.k[1] + kh) * g.k[2] + kw);
}

inline index_t valid_cells(const Span& sd, const Span& sh, const Span& sw) {
    return (sd.hi - sd.lo) * (sh.hi - sh.lo) * (sw.hi - sw.lo);
}

// y = the maximum of each window (NaN when it holds one, as np.maximum gives; padded cells
// count as -inf); hits (may be null) = the offset of the first cell equal to it.
template <typename T>
void max_pool_forward(const T* x, T* y, std::uint8_t* hits, const index_t* geometry) {
    const Geometry g(geometry);
    const index_t c = g.c;
    // the offsets as T while a window is scanned: compare and select stay one vector width
    std::vector<T> scratch(hits ? c : 0);
    T* best = scratch.data();
    each_window(g, false, [&](index_t out, index_t n, Span sd, Span sh, Span sw) {
        T* yr = y + out * c;
        bool first = sd.lo == 0 && sh.lo == 0 && sw.lo == 0;
        if (!first) {  // offset 0 is padding: -inf, and the hit of the NumPy kernel (lost)
            std::fill(yr, yr + c, -std::numeric_limits<T>::infinity());
            if (hits) std::fill(best, best + c, T(kNoHit));
        }
        for (index_t kd = sd.lo; kd < sd.hi; ++kd) {
            for (index_t kh = sh.lo; kh < sh.hi; ++kh) {
                for (index_t kw = sw.lo; kw < sw.hi; ++kw) {
                    const T* xr = x + cell(g, n, sd, kd, sh, kh, sw, kw) * c;
                    if (first) {
                        std::copy(xr, xr + c, yr);
                        if (hits) std::fill(best, best + c, T(0));
                        first = false;
                        continue;
                    }
                    // take v when it is larger, or NaN, unless the maximum is NaN already
                    if (hits) {
                        const T k = T(offset(g, kd, kh, kw));
#pragma omp simd
                        for (index_t i = 0; i < c; ++i) {
                            const T v = xr[i], m = yr[i];
                            const bool take = !(v <= m) && m == m;
                            yr[i] = take ? v : m;
                            best[i] = take ? k : best[i];
                        }
                    } else {
#pragma omp simd
                        for (index_t i = 0; i < c; ++i) {
                            const T v = xr[i], m = yr[i];
                            yr[i] = (!(v <= m) && m == m) ? v : m;
                        }
                    }
                }
            }
        }
        if (hits) {
            std::uint8_t* hr = hits + out * c;
#pragma omp simd
            for (index_t i = 0; i < c; ++i) {
                hr[i] = yr[i] != yr[i] ? kNoHit : static_cast<std::uint8_t>(best[i]);
            }
        }
    });
}

enum MaxBackwardFlags : index_t {
    kRelu = 1,       // the gradient also passes the ReLU that made x: none where y <= 0
    kMultiply = 2,   // cells write g * hit (g * 0 where no hit), as np.multiply(g, hit)
    kKeepG = 4,      // with kRelu: windows where y <= 0 have no hit (g * 0), not g = 0
    kOverlap = 8,    // windows overlap: add into gx, windows in reverse order
    kZeroFill = 16,  // some cells of gx lie in no window (or windows overlap): zero gx first
};

template <typename T, bool relu, bool keep_g, int mode>  // mode: 0 select, 1 multiply, 2 add
inline void max_cell(T* xr, const T* gr, const T* yr, const std::uint8_t* hr, std::uint8_t k,
                     index_t c) {
#pragma omp simd
    for (index_t i = 0; i < c; ++i) {
        const bool blocked = relu && !(yr[i] > T(0));
        const bool hit = hr[i] == k && !blocked;
        const T gi = (blocked && !keep_g) ? T(0) : gr[i];
        if (mode == 0) {
            xr[i] = hit ? gi : T(0);
        } else if (mode == 1) {
            xr[i] = gi * (hit ? T(1) : T(0));
        } else {
            xr[i] += hit ? gi : T(0);
        }
    }
}

template <typename T, bool relu, bool keep_g, int mode>
void max_backward_windows(const Geometry& g, const T* gy, const T* y, const std::uint8_t* hits,
                          T* gx) {
    const index_t c = g.c;
    // overlapping windows: adding in reverse window order adds into each cell in the
    // order of the NumPy kernel (one pass per kernel offset, offsets in row-major order)
    each_window(g, mode == 2, [&](index_t out, index_t n, Span sd, Span sh, Span sw) {
        const T* gr = gy + out * c;
        const T* yr = y + out * c;
        const std::uint8_t* hr = hits + out * c;
        for (index_t kd = sd.lo; kd < sd.hi; ++kd) {
            for (index_t kh = sh.lo; kh < sh.hi; ++kh) {
                for (index_t kw = sw.lo; kw < sw.hi; ++kw) {
                    T* xr = gx + cell(g, n, sd, kd, sh, kh, sw, kw) * c;
                    max_cell<T, relu, keep_g, mode>(xr, gr, yr, hr, offset(g, kd, kh, kw), c);
                }
            }
        }
    });
}

template <typename T, bool relu, bool keep_g>
void max_backward_mode(const Geometry& g, const T* gy, const T* y, const std::uint8_t* hits,
                       T* gx, index_t flags) {
    if (flags & kOverlap) {
        max_backward_windows<T, relu, keep_g, 2>(g, gy, y, hits, gx);
    } else if (flags & kMultiply) {
        max_backward_windows<T, relu, keep_g, 1>(g, gy, y, hits, gx);
    } else {
        max_backward_windows<T, relu, keep_g, 0>(g, gy, y, hits, gx);
    }
}

// gx (N, *in, C) = the gradient of max pooling for gy (N, *out, C), from the forward's hits.
template <typename T>
void max_pool_backward(const T* gy, const T* y, const std::uint8_t* hits, T* gx,
                       const index_t* geometry, index_t flags) {
    const Geometry g(geometry);
    if (flags & kZeroFill) {
        std::fill(gx, gx + g.n * g.in[0] * g.in[1] * g.in[2] * g.c, T(0));
    }
    if (!(flags & kRelu)) {
        max_backward_mode<T, false, false>(g, gy, y, hits, gx, flags);
    } else if (flags & kKeepG) {
        max_backward_mode<T, true, true>(g, gy, y, hits, gx, flags);
    } else {
        max_backward_mode<T, true, false>(g, gy, y, hits, gx, flags);
    }
}

// y = the mean of the valid cells of each window. The sum runs over the kernel offsets in
// row-major order, or with `tiles` (strides == pool_size, no padding) axis by axis, the
// first axis innermost, as the NumPy kernel's _pool_tiles adds.
template <typename T>
void avg_pool_forward(const T* x, T* y, const index_t* geometry, index_t tiles) {
    const Geometry g(geometry);
    const index_t c = g.c;
    std::vector<T> scratch(tiles ? 2 * c : 0);
    T* t1 = scratch.data();
    T* t2 = t1 + (tiles ? c : 0);
    each_window(g, false, [&](index_t out, index_t n, Span sd, Span sh, Span sw) {
        T* yr = y + out * c;
        if (tiles) {
            for (index_t kw = 0; kw < g.k[2]; ++kw) {
                for (index_t kh = 0; kh < g.k[1]; ++kh) {
                    const T* xr = x + cell(g, n, sd, 0, sh, kh, sw, kw) * c;
                    std::copy(xr, xr + c, t1);
                    for (index_t kd = 1; kd < g.k[0]; ++kd) {
                        xr = x + cell(g, n, sd, kd, sh, kh, sw, kw) * c;
#pragma omp simd
                        for (index_t i = 0; i < c; ++i) t1[i] += xr[i];
                    }
                    if (kh == 0) {
                        std::copy(t1, t1 + c, t2);
                    } else {
#pragma omp simd
                        for (index_t i = 0; i < c; ++i) t2[i] += t1[i];
                    }
                }
                if (kw == 0) {
                    std::copy(t2, t2 + c, yr);
                } else {
#pragma omp simd
                    for (index_t i = 0; i < c; ++i) yr[i] += t2[i];
                }
            }
        } else {
            bool first = true;
            for (index_t kd = sd.lo; kd < sd.hi; ++kd) {
                for (index_t kh = sh.lo; kh < sh.hi; ++kh) {
                    for (index_t kw = sw.lo; kw < sw.hi; ++kw) {
                        const T* xr = x + cell(g, n, sd, kd, sh, kh, sw, kw) * c;
                        if (first) {
                            std::copy(xr, xr + c, yr);
                            first = false;
                        } else {
#pragma omp simd
                            for (index_t i = 0; i < c; ++i) yr[i] += xr[i];
                        }
                    }
                }
            }
        }
        const T count = T(valid_cells(sd, sh, sw));
#pragma omp simd
        for (index_t i = 0; i < c; ++i) yr[i] /= count;
    });
}

// gx (N, *in, C) = the gradient of average pooling: g / (valid cells) into each valid cell,
// written (disjoint windows) or added (overlapping: kOverlap, in the NumPy kernel's order).
template <typename T>
void avg_pool_backward(const T* gy, T* gx, const index_t* geometry, index_t flags) {
    const Geometry g(geometry);
    const index_t c = g.c;
    const bool overlap = flags & kOverlap;
    if (flags & kZeroFill) {
        std::fill(gx, gx + g.n * g.in[0] * g.in[1] * g.in[2] * c, T(0));
    }
    std::vector<T> share(c);
    T* sr = share.data();
    each_window(g, overlap, [&](index_t out, index_t n, Span sd, Span sh, Span sw) {
        const T* gr = gy + out * c;
        const T count = T(valid_cells(sd, sh, sw));
#pragma omp simd
        for (index_t i = 0; i < c; ++i) sr[i] = gr[i] / count;
        for (index_t kd = sd.lo; kd < sd.hi; ++kd) {
            for (index_t kh = sh.lo; kh < sh.hi; ++kh) {
                for (index_t kw = sw.lo; kw < sw.hi; ++kw) {
                    T* xr = gx + cell(g, n, sd, kd, sh, kh, sw, kw) * c;
                    if (overlap) {
#pragma omp simd
                        for (index_t i = 0; i < c; ++i) xr[i] += sr[i];
                    } else {
                        std::copy(sr, sr + c, xr);
                    }
                }
            }
        }
    });
}

}  // namespace dlx_cpu

#define DLX_POOLING(T, suffix)                                                                 \
    extern "C" void dlx_max_pool_forward_##suffix(const T* x, T* y, std::uint8_t* hits,       \
                                                  const dlx_cpu::index_t* geometry) {          \
        dlx_cpu::max_pool_forward<T>(x, y, hits, geometry);                                    \
    }                                                                                          \
    extern "C" void dlx_max_pool_backward_##suffix(const T* gy, const T* y,                    \
                                                   const std::uint8_t* hits, T* gx,            \
                                                   const dlx_cpu::index_t* geometry,           \
                                                   dlx_cpu::index_t flags) {                   \
        dlx_cpu::max_pool_backward<T>(gy, y, hits, gx, geometry, flags);                       \
    }                                                                                          \
    extern "C" void dlx_avg_pool_forward_##suffix(const T* x, T* y,                            \
                                                  const dlx_cpu::index_t* geometry,            \
                                                  dlx_cpu::index_t tiles) {                    \
        dlx_cpu::avg_pool_forward<T>(x, y, geometry, tiles);                                   \
    }                                                                                          \
    extern "C" void dlx_avg_pool_backward_##suffix(const T* gy, T* gx,                         \
                                                   const dlx_cpu::index_t* geometry,           \
                                                   dlx_cpu::index_t flags) {                   \
        dlx_cpu::avg_pool_backward<T>(gy, gx, geometry, flags);                                \
    }
DLX_POOLING(float, f32)
DLX_POOLING(double, f64)
#undef DLX_POOLING
