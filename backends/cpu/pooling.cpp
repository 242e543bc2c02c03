// Max and average pooling, 1-D to 3-D, channels_last, in one pass over memory, the images
// split over dlx's thread pool (parallel.h).
//
// The NumPy kernel (backends/numpy_conv.py:NumpyPool) makes a pass per window offset and,
// in the max backward, compares x with y again; here every window is read once and the
// forward records the offset of each window's first maximum (hits), so the backward only
// reads g and the hits. Rounding follows the NumPy kernel: the same order of additions,
// the same divisions, and the same treatment of NaN, padding and ties.
#include <algorithm>
#include <limits>
#include <vector>

#include "parallel.h"

DLX_EXPORT_CONNECT

namespace dlx_cpu {

// hits, one byte per window and channel: the kernel offset (row-major) of the window's
// first maximum in the low 7 bits, kNoHit for none (the maximum is NaN, or the first cell,
// padding, is -inf as every valid one is), and kPositive set where the maximum is > 0 (what
// a ReLU before the pool passes back) so that the backward need not read y.
constexpr std::uint8_t kNoHit = 127, kOffsetBits = 127, kPositive = 128;

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

// Calls f(out, n, d, h, w) for every window of images [n0, n1): out = its row in y (N, *out)
// and the spans of its valid cells; windows of each image in row-major order, or in reverse
// with `reverse`.
template <typename F>
void each_window(const Geometry& g, index_t n0, index_t n1, bool reverse, F&& f) {
    std::vector<Span> spans[3];
    for (int a = 0; a < 3; ++a) {
        for (index_t o = 0; o < g.out[a]; ++o) spans[a].push_back(span(g, a, o));
    }
    for (index_t n = n0; n < n1; ++n) {
        for (index_t i = 0; i < g.out[0]; ++i) {
            const index_t od = reverse ? g.out[0] - 1 - i : i;
            for (index_t j = 0; j < g.out[1]; ++j) {
                const index_t oh = reverse ? g.out[1] - 1 - j : j;
                const index_t row = (n * g.out[0] + od) * g.out[1] + oh;
                for (index_t l = 0; l < g.out[2]; ++l) {
                    const index_t ow = reverse ? g.out[2] - 1 - l : l;
                    f(row * g.out[2] + ow, n, spans[0][od], spans[1][oh], spans[2][ow]);
                }
            }
        }
    }
}

// Row of input cell (n, d, h, w) (d, h, w: kernel offsets of the window of spans sd, sh, sw).
inline index_t cell(const Geometry& g, index_t n, const Span& sd, index_t kd, const Span& sh,
                    index_t kh, const Span& sw, index_t kw) {
    return ((n * g.in[0] + sd.start + kd) * g.in[1] + sh.start + kh) * g.in[2] + sw.start + kw;
}

inline index_t valid_cells(const Span& sd, const Span& sh, const Span& sw) {
    return (sd.hi - sd.lo) * (sh.hi - sh.lo) * (sw.hi - sw.lo);
}

// body(n0, n1) over the images split over the pool, at least about 2^14 elements of x and
// y per part (below that a hand-over to another thread costs more than it saves). Every
// image's windows run on one thread in their order: the results do not depend on the split.
template <typename Body>
void each_image_range(const Geometry& g, const Body& body) {
    const index_t cells = (g.in[0] * g.in[1] * g.in[2] + g.out[0] * g.out[1] * g.out[2]) * g.c;
    parallel_for(g.n, std::max<index_t>(1, (index_t(1) << 14) / std::max<index_t>(1, cells)),
                 body);
}

// The valid cells of each window in row-major kernel order: their first elements in x
// (cell * c) and their kernel offsets (as T: compared with T values in the same vectors).
// Windows clear of the padding take one precomputed list of offsets.
template <typename T>
class WindowCells {
  public:
    explicit WindowCells(const Geometry& g)
        : g_(g), size_(g.k[0] * g.k[1] * g.k[2]), step_(size_), all_(size_), rows_(size_),
          offsets_(size_) {
        index_t j = 0;
        for (index_t kd = 0; kd < g.k[0]; ++kd) {
            for (index_t kh = 0; kh < g.k[1]; ++kh) {
                for (index_t kw = 0; kw < g.k[2]; ++kw, ++j) {
                    step_[j] = ((kd * g.in[1] + kh) * g.in[2] + kw) * g.c;
                    all_[j] = T(j);
                }
            }
        }
    }

    // Fills rows() and offsets() for one window; returns the number of its valid cells.
    index_t operator()(index_t n, const Span& sd, const Span& sh, const Span& sw) {
        const Geometry& g = g_;
        if (sd.lo == 0 && sh.lo == 0 && sw.lo == 0 && sd.hi == g.k[0] && sh.hi == g.k[1] &&
            sw.hi == g.k[2]) {
            const index_t base = cell(g, n, sd, 0, sh, 0, sw, 0) * g.c;
            for (index_t j = 0; j < size_; ++j) rows_[j] = base + step_[j];
            offsets = all_.data();
            return size_;
        }
        index_t m = 0;
        for (index_t kd = sd.lo; kd < sd.hi; ++kd) {
            for (index_t kh = sh.lo; kh < sh.hi; ++kh) {
                for (index_t kw = sw.lo; kw < sw.hi; ++kw, ++m) {
                    rows_[m] = cell(g, n, sd, kd, sh, kh, sw, kw) * g.c;
                    offsets_[m] = T((kd * g.k[1] + kh) * g.k[2] + kw);
                }
            }
        }
        offsets = offsets_.data();
        return m;
    }

    const index_t* rows() const { return rows_.data(); }
    const T* offsets = nullptr;

  private:
    const Geometry& g_;
    index_t size_;
    std::vector<index_t> step_;
    std::vector<T> all_;
    std::vector<index_t> rows_;
    std::vector<T> offsets_;
};

// 32-byte vectors of T (GCC/Clang vector extensions), their comparison masks (integers of
// the same width), and as many bytes as lanes.
template <typename T>
struct Vec;
template <>
struct Vec<float> {
    typedef float type __attribute__((vector_size(32)));
    typedef std::int32_t mask __attribute__((vector_size(32)));
    typedef std::uint8_t bytes __attribute__((vector_size(8)));
};
template <>
struct Vec<double> {
    typedef double type __attribute__((vector_size(32)));
    typedef std::int64_t mask __attribute__((vector_size(32)));
    typedef std::uint8_t bytes __attribute__((vector_size(4)));
};

template <typename V, typename T>
inline V load(const T* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
}

// U vectors of channels of one window, their running maxima and hit offsets in registers.
template <typename T, bool keep, int U>
inline void max_channels(const T* __restrict__ x, const index_t* r, const T* k, index_t m,
                         bool padded, T* __restrict__ yr, std::uint8_t* __restrict__ hr) {
    using V = typename Vec<T>::type;
    using M = typename Vec<T>::mask;
    constexpr int L = sizeof(V) / sizeof(T);
    const M no_hit = M{} + kNoHit;
    V best[U];
    M at[U];
    for (int u = 0; u < U; ++u) {
        best[u] = padded ? V{} - std::numeric_limits<T>::infinity() : load<V>(x + r[0] + u * L);
        at[u] = padded ? no_hit : M{};
    }
    for (index_t j = padded ? 0 : 1; j < m; ++j) {
        const T* xr = x + r[j];
        const M kj = M{} + static_cast<std::int32_t>(k[j]);
        for (int u = 0; u < U; ++u) {
            // take v when it is larger, or NaN, unless the maximum is NaN already
            const V v = load<V>(xr + u * L), b = best[u];
            const M take = ((v <= b) == 0) & (b == b);
            best[u] = take ? v : b;
            if (keep) at[u] = take ? kj : at[u];
        }
    }
    for (int u = 0; u < U; ++u) {
        std::memcpy(yr + u * L, &best[u], sizeof(V));
        if (keep) {
            const V b = best[u];
            const M h = (b != b ? no_hit : at[u]) | ((b > T(0)) & kPositive);
            using B = typename Vec<T>::bytes;
            const B packed = __builtin_convertvector(h, B);
            std::memcpy(hr + u * L, &packed, L);
        }
    }
}

// y = the maximum of each window (NaN when it holds one, as np.maximum gives; padded cells
// count as -inf); hits (with `keep`) = the offset of the first cell equal to it.
template <typename T, bool keep>
void max_forward_windows(const Geometry& g, index_t n0, index_t n1, const T* __restrict__ x,
                         T* __restrict__ y, std::uint8_t* __restrict__ hits) {
    constexpr index_t W = 2 * sizeof(typename Vec<T>::type) / sizeof(T);  // two vectors
    const index_t c = g.c;
    WindowCells<T> cells(g);
    std::vector<T> scratch(c);  // the offsets as T while a window is scanned
    T* __restrict__ at = scratch.data();
    const T no_hit = T(kNoHit), inf = std::numeric_limits<T>::infinity();
    each_window(g, n0, n1, false, [&](index_t out, index_t n, Span sd, Span sh, Span sw) {
        const index_t m = cells(n, sd, sh, sw);
        const index_t* r = cells.rows();
        const T* k = cells.offsets;
        // offset 0 in the padding: -inf, and the NumPy kernel's hit there (lost)
        const bool padded = sd.lo > 0 || sh.lo > 0 || sw.lo > 0;
        T* __restrict__ yr = y + out * c;
        std::uint8_t* __restrict__ hr = keep ? hits + out * c : nullptr;
        index_t i0 = 0;
        for (; i0 + W <= c; i0 += W) {
            max_channels<T, keep, 2>(x + i0, r, k, m, padded, yr + i0, keep ? hr + i0 : nullptr);
        }
        if (i0 == c) return;
        // the last channels, cell after cell
        if (padded) {
#pragma omp simd
            for (index_t i = i0; i < c; ++i) {
                yr[i] = -inf;
                if (keep) at[i] = no_hit;
            }
        } else {
            const T* x0 = x + r[0];
#pragma omp simd
            for (index_t i = i0; i < c; ++i) {
                yr[i] = x0[i];
                if (keep) at[i] = T(0);
            }
        }
        for (index_t j = padded ? 0 : 1; j < m; ++j) {
            const T* xr = x + r[j];
            const T kj = k[j];
#pragma omp simd
            for (index_t i = i0; i < c; ++i) {
                const T v = xr[i], b = yr[i];
                const bool take = !(v <= b) && b == b;
                yr[i] = take ? v : b;
                if (keep) at[i] = take ? kj : at[i];
            }
        }
        if (keep) {
#pragma omp simd
            for (index_t i = i0; i < c; ++i) {
                const std::uint8_t offset = static_cast<std::uint8_t>(at[i]);
                hr[i] = (yr[i] != yr[i] ? kNoHit : offset) | (yr[i] > T(0) ? kPositive : 0);
            }
        }
    });
}

template <typename T>
void max_pool_forward(const T* x, T* y, std::uint8_t* hits, const index_t* geometry) {
    const Geometry g(geometry);
    each_image_range(g, [&](index_t n0, index_t n1) {
        if (hits) {
            max_forward_windows<T, true>(g, n0, n1, x, y, hits);
        } else {
            max_forward_windows<T, false>(g, n0, n1, x, y, hits);
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
void max_backward_windows(const Geometry& g, index_t n0, index_t n1, const T* __restrict__ gy,
                          const std::uint8_t* __restrict__ hits, T* __restrict__ gx) {
    const index_t c = g.c;
    WindowCells<T> cells(g);
    std::vector<T> scratch(2 * c);  // a window's hit offsets and gradients
    T* __restrict__ at = scratch.data();
    T* __restrict__ gw = at + c;
    // overlapping windows: adding in reverse window order adds into each cell in the
    // order of the NumPy kernel (one pass per kernel offset, offsets in row-major order)
    each_window(g, n0, n1, mode == 2, [&](index_t out, index_t n, Span sd, Span sh, Span sw) {
        const index_t m = cells(n, sd, sh, sw);
        const index_t* r = cells.rows();
        const T* k = cells.offsets;
        const T* gr = gy + out * c;
        const std::uint8_t* hr = hits + out * c;
#pragma omp simd
        for (index_t i = 0; i < c; ++i) {
            const bool blocked = relu && !(hr[i] & kPositive);
            at[i] = blocked ? T(kNoHit) : T(hr[i] & kOffsetBits);
            gw[i] = (blocked && !keep_g) ? T(0) : gr[i];
        }
        for (index_t j = 0; j < m; ++j) {
            T* __restrict__ xr = gx + r[j];
            const T kj = k[j];
#pragma omp simd
            for (index_t i = 0; i < c; ++i) {
                const bool hit = at[i] == kj;
                if (mode == 0) {
                    xr[i] = hit ? gw[i] : T(0);
                } else if (mode == 1) {
                    xr[i] = gw[i] * (hit ? T(1) : T(0));
                } else {
                    xr[i] += hit ? gw[i] : T(0);
                }
            }
        }
    });
}

template <typename T, bool relu, bool keep_g>
void max_backward_mode(const Geometry& g, index_t n0, index_t n1, const T* gy,
                       const std::uint8_t* hits, T* gx, index_t flags) {
    if (flags & kOverlap) {
        max_backward_windows<T, relu, keep_g, 2>(g, n0, n1, gy, hits, gx);
    } else if (flags & kMultiply) {
        max_backward_windows<T, relu, keep_g, 1>(g, n0, n1, gy, hits, gx);
    } else {
        max_backward_windows<T, relu, keep_g, 0>(g, n0, n1, gy, hits, gx);
    }
}

// gx of images [n0, n1) = 0
template <typename T>
void zero_images(const Geometry& g, T* gx, index_t n0, index_t n1) {
    const index_t image = g.in[0] * g.in[1] * g.in[2] * g.c;
    std::fill(gx + n0 * image, gx + n1 * image, T(0));
}

// gx (N, *in, C) = the gradient of max pooling for gy (N, *out, C), from the forward's hits.
template <typename T>
void max_pool_backward(const T* gy, const std::uint8_t* hits, T* gx,
                       const index_t* geometry, index_t flags) {
    const Geometry g(geometry);
    each_image_range(g, [&](index_t n0, index_t n1) {
        if (flags & kZeroFill) zero_images(g, gx, n0, n1);
        if (!(flags & kRelu)) {
            max_backward_mode<T, false, false>(g, n0, n1, gy, hits, gx, flags);
        } else if (flags & kKeepG) {
            max_backward_mode<T, true, true>(g, n0, n1, gy, hits, gx, flags);
        } else {
            max_backward_mode<T, true, false>(g, n0, n1, gy, hits, gx, flags);
        }
    });
}

// avg_pool_forward for images [n0, n1)
template <typename T>
void avg_forward_images(const Geometry& g, index_t n0, index_t n1, const T* x, T* y,
                        index_t tiles) {
    const index_t c = g.c;
    std::vector<T> scratch(tiles ? 2 * c : 0);
    T* t1 = scratch.data();
    T* t2 = t1 + (tiles ? c : 0);
    each_window(g, n0, n1, false, [&](index_t out, index_t n, Span sd, Span sh, Span sw) {
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

// avg_pool_backward for images [n0, n1), without the zero fill
template <typename T>
void avg_backward_images(const Geometry& g, index_t n0, index_t n1, const T* gy, T* gx,
                         bool overlap) {
    const index_t c = g.c;
    std::vector<T> share(c);
    T* sr = share.data();
    each_window(g, n0, n1, overlap, [&](index_t out, index_t n, Span sd, Span sh, Span sw) {
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

// y = the mean of the valid cells of each window. The sum runs over the kernel offsets in
// row-major order, or with `tiles` (strides == pool_size, no padding) axis by axis, the
// first axis innermost, as the NumPy kernel's _pool_tiles adds.
template <typename T>
void avg_pool_forward(const T* x, T* y, const index_t* geometry, index_t tiles) {
    const Geometry g(geometry);
    each_image_range(g, [&](index_t n0, index_t n1) {
        avg_forward_images(g, n0, n1, x, y, tiles);
    });
}

// gx (N, *in, C) = the gradient of average pooling: g / (valid cells) into each valid cell,
// written (disjoint windows) or added (overlapping: kOverlap, in the NumPy kernel's order).
template <typename T>
void avg_pool_backward(const T* gy, T* gx, const index_t* geometry, index_t flags) {
    const Geometry g(geometry);
    each_image_range(g, [&](index_t n0, index_t n1) {
        if (flags & kZeroFill) zero_images(g, gx, n0, n1);
        avg_backward_images(g, n0, n1, gy, gx, flags & kOverlap);
    });
}

}  // namespace dlx_cpu

#define DLX_POOLING(T, suffix)                                                                 \
    extern "C" void dlx_max_pool_forward_##suffix(const T* x, T* y, std::uint8_t* hits,       \
                                                  const dlx_cpu::index_t* geometry) {          \
        dlx_cpu::max_pool_forward<T>(x, y, hits, geometry);                                    \
    }                                                                                          \
    extern "C" void dlx_max_pool_backward_##suffix(const T* gy, const std::uint8_t* hits, T* gx, \
                                                   const dlx_cpu::index_t* geometry,           \
                                                   dlx_cpu::index_t flags) {                   \
        dlx_cpu::max_pool_backward<T>(gy, hits, gx, geometry, flags);                          \
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
