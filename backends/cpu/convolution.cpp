// Convolutions on dlx's thread pool (see backends/cpu_conv.py): the forward and the input
// gradient as one parallel region each, every part taking its own blocks of rows or samples
// through im2col, a one-thread BLAS product (parallel.h:gemm_in_line) and bias + ReLU (or
// col2im) while they are in its cache; the weight gradient as a product split over the pool;
// for single-channel input (K = Kp columns, too few for OpenBLAS to reach its rate) the
// forward product with im2col fused into it, and on AVX-512 the float32 weight gradient, as
// register-blocked loops. im2col, col2im, bias + ReLU and the ReLU gradient are also exported
// alone, for the NumPy products where no BLAS is connected.
//
// Every array is channels_last and C-contiguous. 1D and 2D convolutions arrive as 3D ones
// with leading spatial axes of size 1 (kernel 1, stride 1, dilation 1, no padding).
// The geometry is one int64 array:
//   [n, c, in_z, in_y, in_x, out_z, out_y, out_x, k_z, k_y, k_x,
//    stride_z, stride_y, stride_x, dilation_z, dilation_y, dilation_x, pad_z, pad_y, pad_x]
// where pad_* is the zero count before each axis (negative: that many cells cropped).
// Input cell i meets output cell o and kernel offset k when i = o * stride + k * dilation - pad.
#include <algorithm>
#include <atomic>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "parallel.h"

DLX_EXPORT_CONNECT

namespace dlx_cpu {

// Per-part slices of one scratch buffer of pool_threads() slices (allocated by the caller):
// each part of a parallel region claims the next free one.
template <typename T>
class PartScratch {
  public:
    PartScratch(T* base, index_t size) : base_(base), size_(size) {}
    T* claim() { return base_ + next_.fetch_add(1, std::memory_order_relaxed) * size_; }

  private:
    T* base_;
    index_t size_;
    std::atomic<index_t> next_{0};
};

// Multiply-adds below which a region runs in line: a hand-over to the other thread costs
// a few microseconds.
constexpr index_t kInLineWork = index_t(1) << 16;

// body(state, b) for the blocks b in [0, blocks) over the pool, with state = start() once
// per part (its scratch). The parts claim the blocks one at a time, so a thread that starts
// late (its core busy with another process) leaves its share to the others instead of
// holding the region up. In line below 2 * grain blocks.
template <typename Start, typename Body>
void each_block(index_t blocks, index_t grain, const Start& start, const Body& body) {
    if (blocks <= 0) return;
    const index_t parts =
        blocks < 2 * grain ? 1 : std::min<index_t>(pool_threads(), blocks / grain);
    std::atomic<index_t> next{0};
    parallel_for(parts, 1, [&](index_t p0, index_t p1) {
        for (index_t p = p0; p < p1; ++p) {  // more than one: in line
            auto state = start();
            for (index_t b = next.fetch_add(1, std::memory_order_relaxed); b < blocks;
                 b = next.fetch_add(1, std::memory_order_relaxed)) {
                body(state, b);
            }
        }
    });
}

struct ConvGeometry {
    index_t n, c, in[3], out[3], k[3], s[3], d[3], pad[3];
    explicit ConvGeometry(const index_t* g) : n(g[0]), c(g[1]) {
        for (int a = 0; a < 3; ++a) {
            in[a] = g[2 + a];
            out[a] = g[5 + a];
            k[a] = g[8 + a];
            s[a] = g[11 + a];
            d[a] = g[14 + a];
            pad[a] = g[17 + a];
        }
    }
    index_t kernel_cells() const { return k[0] * k[1] * k[2]; }
};

template <typename T>
inline void copy_or_zero(T* dst, const T* src, index_t count) {
    if (src != nullptr) {
        std::memcpy(dst, src, sizeof(T) * count);
    } else {
        std::memset(dst, 0, sizeof(T) * count);
    }
}

// Rows [r0, r1) of the columns (N * O, Kp * C), row-major, into cols (r1 - r0, Kp * C):
// row (n, o), column (k, ch) = x[n, o * s + k * d - pad, ch], or 0 outside x.
template <typename T>
void im2col_rows(const T* x, T* cols, const index_t* geometry, index_t r0, index_t r1) {
    const ConvGeometry g(geometry);
    const index_t c = g.c, run = g.k[2] * c, kpc = g.kernel_cells() * c;
    // the output cell of row r0, then counted up row by row
    index_t ox = r0 % g.out[2], rest = r0 / g.out[2];
    index_t oy = rest % g.out[1];
    rest /= g.out[1];
    index_t oz = rest % g.out[0], n = rest / g.out[0];
    for (index_t r = r0; r < r1; ++r) {
        T* dst = cols + (r - r0) * kpc;
        const T* xn = x + n * g.in[0] * g.in[1] * g.in[2] * c;
        const index_t x0 = ox * g.s[2] - g.pad[2];
        const bool whole_run = g.d[2] == 1 && x0 >= 0 && x0 + g.k[2] <= g.in[2];
        for (index_t kz = 0; kz < g.k[0]; ++kz) {
            const index_t iz = oz * g.s[0] + kz * g.d[0] - g.pad[0];
            for (index_t ky = 0; ky < g.k[1]; ++ky, dst += run) {
                const index_t iy = oy * g.s[1] + ky * g.d[1] - g.pad[1];
                if (iz < 0 || iz >= g.in[0] || iy < 0 || iy >= g.in[1]) {
                    std::memset(dst, 0, sizeof(T) * run);
                    continue;
                }
                const T* line = xn + (iz * g.in[1] + iy) * g.in[2] * c;
                if (whole_run) {
                    std::memcpy(dst, line + x0 * c, sizeof(T) * run);
                    continue;
                }
                for (index_t kx = 0; kx < g.k[2]; ++kx) {
                    const index_t ix = x0 + kx * g.d[2];
                    const bool inside = ix >= 0 && ix < g.in[2];
                    copy_or_zero(dst + kx * c, inside ? line + ix * c : nullptr, c);
                }
            }
        }
        if (++ox == g.out[2]) {
            ox = 0;
            if (++oy == g.out[1]) {
                oy = 0;
                if (++oz == g.out[0]) {
                    oz = 0;
                    ++n;
                }
            }
        }
    }
}

// Single-channel input, one row per kernel offset: columns [r0, r1) of the transposed
// columns (Kp + ones, N * O) into cols, whose rows are ``stride`` elements apart (cols[0] is
// column r0): row k, column (n, o) = x[n, o * s + k * d - pad] or 0; with ones, a last row
// of ones.
template <typename T>
void im2col_offsets(const T* x, T* cols, const index_t* geometry, index_t ones, index_t r0,
                    index_t r1, index_t stride) {
    const ConvGeometry g(geometry);
    const index_t sx = g.s[2], width = g.out[2];
    index_t k = 0;
    for (index_t kz = 0; kz < g.k[0]; ++kz) {
        for (index_t ky = 0; ky < g.k[1]; ++ky) {
            for (index_t kx = 0; kx < g.k[2]; ++kx, ++k) {
                // output columns ox in [lo, hi) read inside x along the last axis
                const index_t shift = kx * g.d[2] - g.pad[2];  // ix = ox * sx + shift
                index_t lo = shift >= 0 ? 0 : (-shift + sx - 1) / sx;
                index_t hi = g.in[2] - shift <= 0 ? 0 : (g.in[2] - shift - 1) / sx + 1;
                lo = std::min(lo, width);
                hi = std::max(lo, std::min(hi, width));
                T* row = cols + k * stride;
                // one output line (n, oz, oy) at a time, the first and last ones partly
                for (index_t r = r0; r < r1;) {
                    const index_t line_index = r / width, begin = r % width;
                    const index_t end = std::min(width, begin + (r1 - r));
                    T* dst = row + (r - r0);  // dst[j]: output column ox = begin + j
                    const index_t oy = line_index % g.out[1], rest = line_index / g.out[1];
                    const index_t oz = rest % g.out[0], n = rest / g.out[0];
                    r += end - begin;
                    const index_t iz = oz * g.s[0] + kz * g.d[0] - g.pad[0];
                    const index_t iy = oy * g.s[1] + ky * g.d[1] - g.pad[1];
                    if (iz < 0 || iz >= g.in[0] || iy < 0 || iy >= g.in[1]) {
                        std::memset(dst, 0, sizeof(T) * (end - begin));
                        continue;
                    }
                    const T* line = x + ((n * g.in[0] + iz) * g.in[1] + iy) * g.in[2];
                    const index_t a = std::max(begin, std::min(lo, end));
                    const index_t b = std::max(a, std::min(hi, end));
                    for (index_t ox = begin; ox < a; ++ox) dst[ox - begin] = T(0);
                    if (sx == 1) {
                        std::memcpy(dst + (a - begin), line + (a + shift), sizeof(T) * (b - a));
                    } else {
#pragma omp simd
                        for (index_t ox = a; ox < b; ++ox) dst[ox - begin] = line[ox * sx + shift];
                    }
                    for (index_t ox = b; ox < end; ++ox) dst[ox - begin] = T(0);
                }
            }
        }
    }
    if (ones) {
        T* row = cols + k * stride;
        for (index_t j = 0; j < r1 - r0; ++j) row[j] = T(1);
    }
}

// Rows [0, rows) of y (rows, F) = the product of the transposed single-channel columns
// (cols[k * stride + r] for kernel offset k < kp) with w (kp, F), + bias, then max(y, 0)
// when relu. F is a constant, so R rows of accumulators stay in registers and every
// column value is broadcast once; the sum runs over k ascending and the bias comes last (as
// the row of ones of the NumPy kernel's product).
template <typename T, index_t F>
void single_channel_rows(const T* cols, index_t stride, index_t kp, const T* w, const T* bias,
                         T* y, index_t rows, index_t relu, bool /*stream*/) {
    constexpr index_t R = 4;
    index_t r = 0;
    for (; r + R <= rows; r += R) {
        T acc[R][F];
        for (index_t i = 0; i < R; ++i) {
            const T v = cols[r + i];
#pragma omp simd
            for (index_t j = 0; j < F; ++j) acc[i][j] = v * w[j];
        }
        for (index_t k = 1; k < kp; ++k) {
            const T* wk = w + k * F;
            for (index_t i = 0; i < R; ++i) {
                const T v = cols[k * stride + r + i];
#pragma omp simd
                for (index_t j = 0; j < F; ++j) acc[i][j] += v * wk[j];
            }
        }
        for (index_t i = 0; i < R; ++i) {
            T* row = y + (r + i) * F;
            if (bias != nullptr) {
#pragma omp simd
                for (index_t j = 0; j < F; ++j) acc[i][j] += bias[j];
            }
            if (relu) {
#pragma omp simd
                for (index_t j = 0; j < F; ++j) row[j] = acc[i][j] < T(0) ? T(0) : acc[i][j];
            } else {
#pragma omp simd
                for (index_t j = 0; j < F; ++j) row[j] = acc[i][j];
            }
        }
    }
    for (; r < rows; ++r) {
        T acc[F];
#pragma omp simd
        for (index_t j = 0; j < F; ++j) acc[j] = cols[r] * w[j];
        for (index_t k = 1; k < kp; ++k) {
            const T v = cols[k * stride + r];
#pragma omp simd
            for (index_t j = 0; j < F; ++j) acc[j] += v * w[k * F + j];
        }
        if (bias != nullptr) {
#pragma omp simd
            for (index_t j = 0; j < F; ++j) acc[j] += bias[j];
        }
        T* row = y + r * F;
#pragma omp simd
        for (index_t j = 0; j < F; ++j) row[j] = relu && acc[j] < T(0) ? T(0) : acc[j];
    }
}


#if defined(__AVX512F__)
// single_channel_rows for float on AVX-512: R rows of F / 16 registers each, fused
// multiply-adds (one rounding per term: within rtol 1e-5 of the NumPy kernel's product, which
// OpenBLAS computes with them too).
template <index_t F>
void single_channel_rows_avx512(const float* cols, index_t stride, index_t kp, const float* w,
                                const float* bias, float* y, index_t rows, index_t relu,
                                bool stream) {
    constexpr index_t V = F / 16, R = 4;
    const __m512 zero = _mm512_setzero_ps();
    auto finish = [&](__m512 a, index_t j, float* row) {
        if (bias != nullptr) a = _mm512_add_ps(a, _mm512_loadu_ps(bias + 16 * j));
        // max(a, 0) with a NaN passing: 0 only where a < 0
        if (relu) a = _mm512_mask_mov_ps(a, _mm512_cmp_ps_mask(a, zero, _CMP_LT_OQ), zero);
        if (stream) {
            _mm512_stream_ps(row + 16 * j, a);
        } else {
            _mm512_storeu_ps(row + 16 * j, a);
        }
    };
    index_t r = 0;
    for (; r + R <= rows; r += R) {
        __m512 acc[R][V];
        for (index_t i = 0; i < R; ++i) {
            const __m512 v = _mm512_set1_ps(cols[r + i]);
            for (index_t j = 0; j < V; ++j) {
                acc[i][j] = _mm512_mul_ps(v, _mm512_loadu_ps(w + 16 * j));
            }
        }
        for (index_t k = 1; k < kp; ++k) {
            __m512 wk[V];
            for (index_t j = 0; j < V; ++j) wk[j] = _mm512_loadu_ps(w + k * F + 16 * j);
            for (index_t i = 0; i < R; ++i) {
                const __m512 v = _mm512_set1_ps(cols[k * stride + r + i]);
                for (index_t j = 0; j < V; ++j) acc[i][j] = _mm512_fmadd_ps(v, wk[j], acc[i][j]);
            }
        }
        for (index_t i = 0; i < R; ++i) {
            for (index_t j = 0; j < V; ++j) finish(acc[i][j], j, y + (r + i) * F);
        }
    }
    for (; r < rows; ++r) {
        __m512 acc[V];
        const __m512 v = _mm512_set1_ps(cols[r]);
        for (index_t j = 0; j < V; ++j) acc[j] = _mm512_mul_ps(v, _mm512_loadu_ps(w + 16 * j));
        for (index_t k = 1; k < kp; ++k) {
            const __m512 vk = _mm512_set1_ps(cols[k * stride + r]);
            for (index_t j = 0; j < V; ++j) {
                acc[j] = _mm512_fmadd_ps(vk, _mm512_loadu_ps(w + k * F + 16 * j), acc[j]);
            }
        }
        for (index_t j = 0; j < V; ++j) finish(acc[j], j, y + r * F);
    }
}

template <>
void single_channel_rows<float, 16>(const float* cols, index_t stride, index_t kp,
                                    const float* w, const float* bias, float* y, index_t rows,
                                    index_t relu, bool stream) {
    single_channel_rows_avx512<16>(cols, stride, kp, w, bias, y, rows, relu, stream);
}
template <>
void single_channel_rows<float, 32>(const float* cols, index_t stride, index_t kp,
                                    const float* w, const float* bias, float* y, index_t rows,
                                    index_t relu, bool stream) {
    single_channel_rows_avx512<32>(cols, stride, kp, w, bias, y, rows, relu, stream);
}
template <>
void single_channel_rows<float, 64>(const float* cols, index_t stride, index_t kp,
                                    const float* w, const float* bias, float* y, index_t rows,
                                    index_t relu, bool stream) {
    single_channel_rows_avx512<64>(cols, stride, kp, w, bias, y, rows, relu, stream);
}
// The weight gradient of a single-channel convolution: out (kp, 32) += cols (kp, rows) @
// g (rows, f), columns [j0, j0 + 32) of g, for KB of the kp rows from row k0 (cols' rows
// ``stride`` apart); rows of g in chunks of 256 summed in registers, then added to out
// (blocked as OpenBLAS blocks its sums).
template <index_t KB>
void single_channel_weight_grad_block(const float* cols, index_t stride, const float* g,
                                      float* out, index_t rows, index_t f, index_t k0,
                                      index_t j0) {
    constexpr index_t CHUNK = 256;
    for (index_t r0 = 0; r0 < rows; r0 += CHUNK) {
        const index_t r1 = std::min(rows, r0 + CHUNK);
        __m512 acc[KB][2];
        for (index_t k = 0; k < KB; ++k) acc[k][0] = acc[k][1] = _mm512_setzero_ps();
        for (index_t r = r0; r < r1; ++r) {
            const __m512 g0 = _mm512_loadu_ps(g + r * f + j0);
            const __m512 g1 = _mm512_loadu_ps(g + r * f + j0 + 16);
            for (index_t k = 0; k < KB; ++k) {
                const __m512 v = _mm512_set1_ps(cols[(k0 + k) * stride + r]);
                acc[k][0] = _mm512_fmadd_ps(v, g0, acc[k][0]);
                acc[k][1] = _mm512_fmadd_ps(v, g1, acc[k][1]);
            }
        }
        for (index_t k = 0; k < KB; ++k) {
            float* row = out + (k0 + k) * f + j0;
            _mm512_storeu_ps(row, _mm512_add_ps(_mm512_loadu_ps(row), acc[k][0]));
            _mm512_storeu_ps(row + 16, _mm512_add_ps(_mm512_loadu_ps(row + 16), acc[k][1]));
        }
    }
}

// Rows of g per partial sum of the single-channel weight gradient: a fixed size, so the
// sums (partials added in order) come out the same however many threads share them.
constexpr index_t kWeightGradRows = 4096;

// out (kp, f) = cols (kp, m) @ g (m, f) for f a multiple of 32 (float on AVX-512 only):
// partial sums over blocks of kWeightGradRows rows of g, split over the pool, each into
// its slice of ``partials`` ((m / kWeightGradRows rounded up) * kp * f), then added in
// block order.
inline void single_channel_weight_grad_f32(const float* cols, const float* g, float* out,
                                           index_t kp, index_t m, index_t f, float* partials) {
    const index_t blocks = (m + kWeightGradRows - 1) / kWeightGradRows;
    each_block(blocks, 1, [] { return 0; }, [&](int, index_t b) {
        const index_t r0 = b * kWeightGradRows, rows = std::min(m - r0, kWeightGradRows);
        float* part = blocks == 1 ? out : partials + b * kp * f;
        std::memset(part, 0, sizeof(float) * kp * f);
        for (index_t j0 = 0; j0 + 32 <= f; j0 += 32) {
            for (index_t k0 = 0; k0 < kp; k0 += 12) {
                switch (std::min<index_t>(12, kp - k0)) {
#define DLX_CASE(KB)                                                                         \
    case KB:                                                                                 \
        single_channel_weight_grad_block<KB>(cols + r0, m, g + r0 * f, part, rows, f, k0, j0); \
        break;
                    DLX_CASE(1) DLX_CASE(2) DLX_CASE(3) DLX_CASE(4) DLX_CASE(5) DLX_CASE(6)
                    DLX_CASE(7) DLX_CASE(8) DLX_CASE(9) DLX_CASE(10) DLX_CASE(11) DLX_CASE(12)
#undef DLX_CASE
                }
            }
        }
    });
    if (blocks == 1) return;
    const index_t size = kp * f;
    std::memcpy(out, partials, sizeof(float) * size);
    for (index_t b = 1; b < blocks; ++b) {
        const float* part = partials + b * size;
#pragma omp simd
        for (index_t i = 0; i < size; ++i) out[i] += part[i];
    }
}
#endif

// y (rows, f) = a (rows, k) @ w (k, f), + bias, then max(y, 0) when relu, as one thread's
// register-blocked product where it has one (float on AVX-512, f a multiple of 16); false
// where not (then the BLAS). a[i, t] lies at a[i * a_row + t * a_term] (a row-major matrix
// or the transpose of one).
template <typename T>
bool product_rows(const T*, index_t, index_t, index_t, index_t, const T*, index_t, T*, const T*,
                  index_t) {
    return false;
}

#if defined(__AVX512F__)
// Rows of w per pass: a 144 x 64 panel of w (36 KiB) stays in the L1 cache.
constexpr index_t kProductDepth = 144;

// R rows of y, columns [0, 16 V) (y and w rows ``f`` apart), over the terms [k0, k1):
// acc = 0 (first) or y, then acc += a[k] * w[k] term after term (fused multiply-adds, k
// ascending: the sums of OpenBLAS's kernels, one rounding per term, however the terms are
// split into passes); in the last pass + bias and the ReLU, as bias_relu() after the BLAS.
template <int V, int R>
inline void product_tile(const float* a, index_t a_row, index_t a_term, const float* w,
                         index_t f, float* y, index_t k0, index_t k1, bool first, bool last,
                         const float* bias, index_t relu) {
    __m512 acc[R][V];
    for (int i = 0; i < R; ++i) {
        for (int j = 0; j < V; ++j) {
            acc[i][j] = first ? _mm512_setzero_ps() : _mm512_loadu_ps(y + i * f + 16 * j);
        }
    }
    for (index_t k = k0; k < k1; ++k) {
        __m512 wk[V];
        for (int j = 0; j < V; ++j) wk[j] = _mm512_loadu_ps(w + k * f + 16 * j);
        for (int i = 0; i < R; ++i) {
            const __m512 v = _mm512_set1_ps(a[i * a_row + k * a_term]);
            for (int j = 0; j < V; ++j) acc[i][j] = _mm512_fmadd_ps(v, wk[j], acc[i][j]);
        }
    }
    const __m512 zero = _mm512_setzero_ps();
    for (int i = 0; i < R; ++i) {
        for (int j = 0; j < V; ++j) {
            __m512 out = acc[i][j];
            if (last && bias != nullptr) out = _mm512_add_ps(out, _mm512_loadu_ps(bias + 16 * j));
            // max(out, 0) with a NaN passing: 0 only where out < 0
            if (last && relu) {
                out = _mm512_mask_mov_ps(out, _mm512_cmp_ps_mask(out, zero, _CMP_LT_OQ), zero);
            }
            _mm512_storeu_ps(y + i * f + 16 * j, out);
        }
    }
}

// Columns [0, 16 V) of y: passes of kProductDepth terms over all rows, R rows at a time
// (R V accumulators, V rows of w and a broadcast in the 32 registers).
template <int V>
void product_panel(const float* a, index_t a_row, index_t a_term, index_t rows, index_t k,
                   const float* w, index_t f, float* y, const float* bias, index_t relu) {
    constexpr int R = V == 4 ? 6 : V == 3 ? 8 : V == 2 ? 12 : 24;
    for (index_t k0 = 0; k0 < k; k0 += kProductDepth) {
        const index_t k1 = std::min(k, k0 + kProductDepth);
        const bool first = k0 == 0, last = k1 == k;
        index_t r = 0;
        for (; r + R <= rows; r += R) {
            product_tile<V, R>(a + r * a_row, a_row, a_term, w, f, y + r * f, k0, k1, first,
                               last, bias, relu);
        }
        for (; r < rows; ++r) {
            product_tile<V, 1>(a + r * a_row, a_row, a_term, w, f, y + r * f, k0, k1, first,
                               last, bias, relu);
        }
    }
}

template <>
inline bool product_rows<float>(const float* a, index_t a_row, index_t a_term, index_t rows,
                                index_t k, const float* w, index_t f, float* y,
                                const float* bias, index_t relu) {
    if (f % 16 != 0 || k == 0) return false;
    for (index_t j0 = 0; j0 < f; j0 += 64) {
        const float* wj = w + j0;
        float* yj = y + j0;
        const float* bj = bias != nullptr ? bias + j0 : nullptr;
        switch (std::min<index_t>(4, (f - j0) / 16)) {
            case 4: product_panel<4>(a, a_row, a_term, rows, k, wj, f, yj, bj, relu); break;
            case 3: product_panel<3>(a, a_row, a_term, rows, k, wj, f, yj, bj, relu); break;
            case 2: product_panel<2>(a, a_row, a_term, rows, k, wj, f, yj, bj, relu); break;
            default: product_panel<1>(a, a_row, a_term, rows, k, wj, f, yj, bj, relu); break;
        }
    }
    return true;
}
#endif

// The whole forward of a single-channel convolution with f filters (16, 32 or 64; others do
// nothing): y (M, f) = columns @ w (Kp, f) + bias, ReLU'd when relu, in blocks of ``block``
// rows split over the pool, each im2col'd (im2col_offsets) and multiplied while in the
// cache. keep: cols is the whole transposed columns (Kp [+ ones], M), written for the weight
// gradient; otherwise pool_threads() scratch slices of (Kp, block). stream: y goes out with
// non-temporal stores.
template <typename T>
void single_channel_forward(const T* x, T* cols, const index_t* geometry, index_t ones,
                            const T* w, const T* bias, T* y, index_t f, index_t relu,
                            index_t keep, index_t block, index_t stream) {
    const ConvGeometry g(geometry);
    const index_t kp = g.kernel_cells(), m = g.n * g.out[0] * g.out[1] * g.out[2];
    if (f != 16 && f != 32 && f != 64) return;
    // an output far larger than the cache goes to memory anyway: non-temporal stores skip
    // reading it in first (AVX-512 float only; y must then be 64-byte aligned)
    const bool nt = stream && reinterpret_cast<std::uintptr_t>(y) % 64 == 0 && f % 16 == 0;
    const index_t blocks = (m + block - 1) / block;
    PartScratch<T> scratch(cols, kp * block);
    const index_t grain = std::max<index_t>(1, kInLineWork / (block * kp * f));
    auto start = [&] { return keep ? nullptr : scratch.claim(); };
    each_block(blocks, grain, start, [&](T* own, index_t b) {
        const index_t r0 = b * block, r1 = std::min(m, r0 + block);
        T* at = keep ? cols + r0 : own;
        const index_t stride = keep ? m : block;
        im2col_offsets(x, at, geometry, keep ? ones : 0, r0, r1, stride);
        T* out = y + r0 * f;
        if (f == 16) {
            single_channel_rows<T, 16>(at, stride, kp, w, bias, out, r1 - r0, relu, nt);
        } else if (f == 32) {
            single_channel_rows<T, 32>(at, stride, kp, w, bias, out, r1 - r0, relu, nt);
        } else {
            single_channel_rows<T, 64>(at, stride, kp, w, bias, out, r1 - r0, relu, nt);
        }
#if defined(__AVX512F__)
        if (nt) _mm_sfence();  // each thread orders its own streamed stores
#endif
    });
}

// The input gradient from the columns' gradient dcols (N * O, Kp * C), for samples [n0, n1)
// of gx (N, *in, C); dcols starts with row (n0, 0). gx = 0, then every output cell adds its
// row's kernel offsets into the input cells they met. The output cells go in reverse
// (row-major) order, so each input cell receives its terms in row-major kernel-offset order,
// the order of the NumPy kernel's window additions, while dcols is read front to back
// (backwards) rather than gathered from rows far apart.
template <typename T>
void col2im(const T* dcols, T* gx, const index_t* geometry, index_t n0, index_t n1) {
    const ConvGeometry g(geometry);
    const index_t c = g.c, kpc = g.kernel_cells() * c;
    const index_t in_cells = g.in[0] * g.in[1] * g.in[2];
    std::memset(gx + n0 * in_cells * c, 0, sizeof(T) * (n1 - n0) * in_cells * c);
    const T* src = dcols + (n1 - n0) * g.out[0] * g.out[1] * g.out[2] * kpc;
    for (index_t n = n1 - 1; n >= n0; --n) {
        T* gn = gx + n * in_cells * c;
        for (index_t oz = g.out[0] - 1; oz >= 0; --oz) {
            for (index_t oy = g.out[1] - 1; oy >= 0; --oy) {
                for (index_t ox = g.out[2] - 1; ox >= 0; --ox) {
                    src -= kpc;
                    const T* part = src;
                    for (index_t kz = 0; kz < g.k[0]; ++kz) {
                        const index_t iz = oz * g.s[0] + kz * g.d[0] - g.pad[0];
                        const bool z_inside = iz >= 0 && iz < g.in[0];
                        for (index_t ky = 0; ky < g.k[1]; ++ky) {
                            const index_t iy = oy * g.s[1] + ky * g.d[1] - g.pad[1];
                            if (!z_inside || iy < 0 || iy >= g.in[1]) {
                                part += g.k[2] * c;
                                continue;
                            }
                            T* line = gn + (iz * g.in[1] + iy) * g.in[2] * c;
                            for (index_t kx = 0; kx < g.k[2]; ++kx, part += c) {
                                const index_t ix = ox * g.s[2] + kx * g.d[2] - g.pad[2];
                                if (ix < 0 || ix >= g.in[2]) continue;
                                T* cell = line + ix * c;
#pragma omp simd
                                for (index_t ch = 0; ch < c; ++ch) cell[ch] += part[ch];
                            }
                        }
                    }
                }
            }
        }
    }
}

// y (M, F) in place: y + bias (when given), then max(y, 0) when relu (NaN passes).
template <typename T>
void bias_relu(T* y, const T* bias, index_t m, index_t f, index_t relu) {
    if (bias != nullptr) {
        for (index_t i = 0; i < m; ++i) {
            T* row = y + i * f;
            if (relu) {
#pragma omp simd
                for (index_t j = 0; j < f; ++j) {
                    const T v = row[j] + bias[j];
                    row[j] = v < T(0) ? T(0) : v;
                }
            } else {
#pragma omp simd
                for (index_t j = 0; j < f; ++j) row[j] += bias[j];
            }
        }
    } else if (relu) {
        const index_t size = m * f;
#pragma omp simd
        for (index_t i = 0; i < size; ++i) y[i] = y[i] < T(0) ? T(0) : y[i];
    }
}

// out = g where y > 0, else 0 (the generic where: a NaN or inf in g where y <= 0 gives 0).
template <typename T>
void relu_grad(const T* g, const T* y, T* out, index_t size) {
#pragma omp simd
    for (index_t i = 0; i < size; ++i) out[i] = y[i] > T(0) ? g[i] : T(0);
}


// Elements per part of the memory-bound loops: below this a hand-over to another thread
// costs more than it saves.
constexpr index_t kGrain = index_t(1) << 14;

inline index_t rows_grain(index_t row_size) {
    return std::max<index_t>(1, kGrain / std::max<index_t>(1, row_size));
}

// The column layouts of conv_forward (backends/cpu_conv.py says which).
enum ColumnLayout : index_t {
    kRows = 0,     // (M, Kp * C) rows, as im2col_rows writes them
    kOffsets = 1,  // single-channel: transposed (Kp [+ ones], M), as im2col_offsets writes
    kView = 2,     // 1x1 kernels, stride 1, no padding: x itself, (M, C)
};

// The forward of a convolution: y (M, F) = columns (M, width) @ w (width, F), + bias, then
// max(y, 0) when relu, in blocks of ``block`` rows split over the pool. Each part im2cols
// a block, multiplies it at once (one BLAS thread per part) and adds bias + ReLU to its rows
// while they are in its cache; the product of each row is the one the whole product gives.
// keep: cols is the whole columns in ``layout`` (kept for the weight gradient; with kOffsets
// and ones, its last row holds ones); otherwise pool_threads() scratch slices of
// block * width. kView reads x and leaves cols alone. fast: rows-layout products with
// product_rows() where it has one (else the BLAS's).
template <typename T>
void conv_forward(const T* x, T* cols, const index_t* geometry, index_t layout, index_t ones,
                  const T* w, const T* bias, T* y, index_t f, index_t relu, index_t keep,
                  index_t block, index_t fast) {
    const ConvGeometry g(geometry);
    const index_t m = g.n * g.out[0] * g.out[1] * g.out[2];
    const index_t width = layout == kView      ? g.c
                          : layout == kOffsets ? g.kernel_cells() + ones
                                               : g.kernel_cells() * g.c;
    void* product = blas_gemm<T>();
    const index_t blocks = (m + block - 1) / block;
    PartScratch<T> scratch(cols, block * width);
    OneBlasThread one_thread;
    const index_t grain = std::max<index_t>(1, kInLineWork / (block * width * f));
    auto start = [&] { return keep || layout == kView ? nullptr : scratch.claim(); };
    each_block(blocks, grain, start, [&](T* own, index_t b) {
        const index_t r0 = b * block, r1 = std::min(m, r0 + block), rows = r1 - r0;
        T* out = y + r0 * f;
        if (layout != kOffsets) {
            const T* at = x + r0 * width;
            if (layout == kRows) {
                T* made = keep ? cols + r0 * width : own;
                im2col_rows(x, made, geometry, r0, r1);
                at = made;
            }
            if (fast && product_rows<T>(at, width, 1, rows, width, w, f, out, bias, relu)) {
                return;
            }
            gemm_in_line<T>(product, false, false, rows, f, width, T(1), at, width, w, f,
                            T(0), out, f);
        } else {
            T* at = keep ? cols + r0 : own;
            const index_t stride = keep ? m : block;
            im2col_offsets(x, at, geometry, ones, r0, r1, stride);
            gemm_in_line<T>(product, true, false, rows, f, width, T(1), at, stride, w, f,
                            T(0), out, f);
        }
        bias_relu(out, bias, rows, f, relu);
    });
}

// The input gradient gx (N, *in, C) of a convolution from g (N, *g_out, F) and w (Kp * C, F),
// in blocks of ``samples`` samples split over the pool: each part multiplies a block's rows
// of g by w.T into its own columns' gradient (rows, Kp * C) and adds them into gx (col2im)
// at once. The geometry's output size may be smaller than g_out (trailing all-zero slices
// cropped): each block's rows are then first copied into the part's scratch. scratch:
// pool_threads() slices of samples * O * (Kp * C, + F when cropped). wt, w's transpose
// (F, Kp * C), when given: the products by product_rows() where it has one.
template <typename T>
void conv_input_grad(const T* gy, const T* w, const T* wt, T* gx, const index_t* geometry,
                     const index_t* g_out, index_t f, index_t samples, T* scratch) {
    const ConvGeometry g(geometry);
    const index_t kpc = g.kernel_cells() * g.c;
    const index_t cells = g.out[0] * g.out[1] * g.out[2];
    const index_t g_cells = g_out[0] * g_out[1] * g_out[2];
    const bool crop = g_cells != cells;
    const index_t block_rows = samples * cells, line = g.out[2] * f;
    PartScratch<T> parts(scratch, block_rows * (kpc + (crop ? f : 0)));
    void* product = blas_gemm<T>();
    const index_t blocks = (g.n + samples - 1) / samples;
    OneBlasThread one_thread;
    const index_t grain = std::max<index_t>(1, kInLineWork / (block_rows * kpc * f));
    each_block(blocks, grain, [&] { return parts.claim(); }, [&](T* dcols, index_t b) {
        T* cropped = dcols + block_rows * kpc;
        const index_t n0 = b * samples, n1 = std::min(g.n, n0 + samples);
        const T* a = gy + n0 * g_cells * f;
        if (crop) {
            T* dst = cropped;
            for (index_t n = n0; n < n1; ++n) {
                for (index_t oz = 0; oz < g.out[0]; ++oz) {
                    for (index_t oy = 0; oy < g.out[1]; ++oy, dst += line) {
                        const index_t at = ((n * g_out[0] + oz) * g_out[1] + oy) * g_out[2];
                        std::memcpy(dst, gy + at * f, sizeof(T) * line);
                    }
                }
            }
            a = cropped;
        }
        const index_t rows = (n1 - n0) * cells;
        if (wt == nullptr || !product_rows<T>(a, f, 1, rows, f, wt, kpc, dcols, nullptr, 0)) {
            gemm_in_line<T>(product, false, true, rows, kpc, f, T(1), a, f, w, f, T(0), dcols,
                            kpc);
        }
        col2im(dcols, gx, geometry, n0, n1);
    });
}

// gb (F) = the sum of rows [r0, r1) of g (M, F), row after row.
template <typename T>
void column_sums(const T* g, index_t f, index_t r0, index_t r1, T* gb) {
    std::memcpy(gb, g + r0 * f, sizeof(T) * f);
    for (index_t r = r0 + 1; r < r1; ++r) {
        const T* row = g + r * f;
#pragma omp simd
        for (index_t j = 0; j < f; ++j) gb[j] += row[j];
    }
}

// dL/dw (width, F) of a convolution = columns.T @ g (M, F), the columns as (M, width), or
// with ``transposed`` as their transpose (width, M) (the single-channel layout), and when
// ``gb`` is not null the bias gradient gb (F) = the column sums of g. With ``partials``
// (blocks * (width [+ 1]) * F, blocks = M / ``rows`` rounded up): one product (and column
// sum) per block of ``rows`` rows of g into its own partial sums, the blocks claimed by the
// pool's parts, then the partials added in block order; without: one product split over
// the pool by rows of the result.
template <typename T>
void conv_weight_grad(const T* cols, const T* g, T* out, index_t width, index_t m, index_t f,
                      index_t transposed, index_t rows, T* partials, T* gb) {
    if (partials == nullptr || rows >= m) {
        if (transposed) {
            gemm<T>(false, false, width, f, m, T(1), cols, m, g, f, T(0), out, f);
        } else {
            gemm<T>(true, false, width, f, m, T(1), cols, width, g, f, T(0), out, f);
        }
        if (gb != nullptr) column_sums(g, f, 0, m, gb);
        return;
    }
    void* product = blas_gemm<T>();
    const index_t blocks = (m + rows - 1) / rows, size = width * f;
    const index_t slot = size + (gb != nullptr ? f : 0);
    OneBlasThread one_thread;
    const index_t grain = std::max<index_t>(1, kInLineWork / (rows * size));
    each_block(blocks, grain, [] { return 0; }, [&](int, index_t b) {
        const index_t r0 = b * rows, count = std::min(m - r0, rows);
        T* part = partials + b * slot;
        if (transposed) {
            gemm_in_line<T>(product, false, false, width, f, count, T(1), cols + r0, m,
                            g + r0 * f, f, T(0), part, f);
        } else {
            gemm_in_line<T>(product, true, false, width, f, count, T(1), cols + r0 * width,
                            width, g + r0 * f, f, T(0), part, f);
        }
        if (gb != nullptr) column_sums(g, f, r0, r0 + count, part + size);
    });
    std::memcpy(out, partials, sizeof(T) * size);
    if (gb != nullptr) std::memcpy(gb, partials + size, sizeof(T) * f);
    for (index_t b = 1; b < blocks; ++b) {
        const T* part = partials + b * slot;
#pragma omp simd
        for (index_t i = 0; i < size; ++i) out[i] += part[i];
        if (gb != nullptr) {
#pragma omp simd
            for (index_t j = 0; j < f; ++j) gb[j] += part[size + j];
        }
    }
}

// The helpers alone (for the NumPy products), split over the pool.

template <typename T>
void im2col_rows_split(const T* x, T* cols, const index_t* geometry, index_t r0, index_t r1) {
    const ConvGeometry g(geometry);
    const index_t kpc = g.kernel_cells() * g.c;
    parallel_for(r1 - r0, rows_grain(kpc), [&](index_t a, index_t b) {
        im2col_rows(x, cols + a * kpc, geometry, r0 + a, r0 + b);
    });
}

template <typename T>
void im2col_offsets_split(const T* x, T* cols, const index_t* geometry, index_t ones, index_t r0,
                          index_t r1, index_t stride) {
    const ConvGeometry g(geometry);
    parallel_for(r1 - r0, rows_grain(g.kernel_cells() + ones), [&](index_t a, index_t b) {
        im2col_offsets(x, cols + a, geometry, ones, r0 + a, r0 + b, stride);
    });
}

template <typename T>
void col2im_split(const T* dcols, T* gx, const index_t* geometry, index_t n0, index_t n1) {
    const ConvGeometry g(geometry);
    const index_t sample = g.out[0] * g.out[1] * g.out[2] * g.kernel_cells() * g.c;
    parallel_for(n1 - n0, rows_grain(sample), [&](index_t a, index_t b) {
        col2im(dcols + a * sample, gx, geometry, n0 + a, n0 + b);
    });
}

template <typename T>
void bias_relu_split(T* y, const T* bias, index_t m, index_t f, index_t relu) {
    parallel_for(m, rows_grain(f), [&](index_t a, index_t b) {
        bias_relu(y + a * f, bias, b - a, f, relu);
    });
}

template <typename T>
void relu_grad_split(const T* g, const T* y, T* out, index_t size) {
    parallel_for(size, kGrain, [&](index_t a, index_t b) {
        relu_grad(g + a, y + a, out + a, b - a);
    });
}

}  // namespace dlx_cpu

#define DLX_CONVOLUTION(T, suffix)                                                           \
    extern "C" void dlx_im2col_rows_##suffix(const T* x, T* cols, const dlx_cpu::index_t* g,  \
                                             dlx_cpu::index_t r0, dlx_cpu::index_t r1) {     \
        dlx_cpu::im2col_rows_split<T>(x, cols, g, r0, r1);                                         \
    }                                                                                        \
    extern "C" void dlx_im2col_offsets_##suffix(const T* x, T* cols, const dlx_cpu::index_t* g, \
                                                dlx_cpu::index_t ones, dlx_cpu::index_t r0,  \
                                                dlx_cpu::index_t r1, dlx_cpu::index_t stride) { \
        dlx_cpu::im2col_offsets_split<T>(x, cols, g, ones, r0, r1, stride);                        \
    }                                                                                        \
    extern "C" void dlx_col2im_##suffix(const T* dcols, T* gx, const dlx_cpu::index_t* g,    \
                                        dlx_cpu::index_t n0, dlx_cpu::index_t n1) {          \
        dlx_cpu::col2im_split<T>(dcols, gx, g, n0, n1);                                            \
    }                                                                                        \
    extern "C" void dlx_bias_relu_##suffix(T* y, const T* bias, dlx_cpu::index_t m,          \
                                           dlx_cpu::index_t f, dlx_cpu::index_t relu) {      \
        dlx_cpu::bias_relu_split<T>(y, bias, m, f, relu);                                          \
    }                                                                                        \
    extern "C" void dlx_relu_grad_##suffix(const T* g, const T* y, T* out,                   \
                                           dlx_cpu::index_t size) {                          \
        dlx_cpu::relu_grad_split<T>(g, y, out, size);                                              \
    }                                                                                        \
    extern "C" void dlx_single_channel_forward_##suffix(                                     \
        const T* x, T* cols, const dlx_cpu::index_t* g, dlx_cpu::index_t ones, const T* w,   \
        const T* bias, T* y, dlx_cpu::index_t f, dlx_cpu::index_t relu,                      \
        dlx_cpu::index_t keep, dlx_cpu::index_t block, dlx_cpu::index_t stream) {            \
        dlx_cpu::single_channel_forward<T>(x, cols, g, ones, w, bias, y, f, relu, keep,       \
                                           block, stream);                                   \
    }                                                                                        \
    extern "C" void dlx_conv_forward_##suffix(                                               \
        const T* x, T* cols, const dlx_cpu::index_t* g, dlx_cpu::index_t layout,             \
        dlx_cpu::index_t ones, const T* w, const T* bias, T* y, dlx_cpu::index_t f,          \
        dlx_cpu::index_t relu, dlx_cpu::index_t keep, dlx_cpu::index_t block,                \
        dlx_cpu::index_t fast) {                                                             \
        dlx_cpu::conv_forward<T>(x, cols, g, layout, ones, w, bias, y, f, relu, keep, block,  \
                                 fast);                                                      \
    }                                                                                        \
    extern "C" void dlx_conv_input_grad_##suffix(                                            \
        const T* gy, const T* w, const T* wt, T* gx, const dlx_cpu::index_t* g,              \
        const dlx_cpu::index_t* g_out, dlx_cpu::index_t f, dlx_cpu::index_t samples,         \
        T* scratch) {                                                                        \
        dlx_cpu::conv_input_grad<T>(gy, w, wt, gx, g, g_out, f, samples, scratch);           \
    }                                                                                        \
    extern "C" void dlx_conv_weight_grad_##suffix(                                           \
        const T* cols, const T* g, T* out, dlx_cpu::index_t width, dlx_cpu::index_t m,       \
        dlx_cpu::index_t f, dlx_cpu::index_t transposed, dlx_cpu::index_t rows, T* partials,  \
        T* gb) {                                                                             \
        dlx_cpu::conv_weight_grad<T>(cols, g, out, width, m, f, transposed, rows, partials,   \
                                     gb);                                                    \
    }                                                                                        \
    /* setup[0] = the parts a region may have (slices of a scratch buffer), setup[1] = 1 */ \
    /* when a BLAS is connected for T (written, not returned: test spies wrap calls) */      \
    extern "C" void dlx_conv_setup_##suffix(dlx_cpu::index_t* setup) {                      \
        setup[0] = dlx_cpu::pool_threads();                                                  \
        setup[1] = dlx_cpu::blas_gemm<T>() != nullptr;                                       \
    }
DLX_CONVOLUTION(float, f32)
#if defined(__AVX512F__)
extern "C" void dlx_single_channel_weight_grad_f32(const float* cols, const float* g, float* out,
                                                   dlx_cpu::index_t kp, dlx_cpu::index_t m,
                                                   dlx_cpu::index_t f, float* partials) {
    dlx_cpu::single_channel_weight_grad_f32(cols, g, out, kp, m, f, partials);
}
#endif
DLX_CONVOLUTION(double, f64)
#undef DLX_CONVOLUTION
