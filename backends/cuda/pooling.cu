// N-D max and average pooling for the cupy backend (glue: backends/cupy_conv.py).
//
// Arrays are channels_last and C-contiguous; 1D and 2D pooling run as 3D with
// leading size-1 axes (window 1, stride 1, no padding there):
//
//   x  (N, D, H, W, C)     input (gx, its gradient, has the same shape)
//   y  (N, OD, OH, OW, C)  output (g, its gradient, likewise)
//   arg                    per output cell, the row-major index kd*KH*KW + kh*KW + kw
//                          inside its window of the first maximal valid cell
//
// Window o along an axis covers input cells o*S - P .. o*S - P + K - 1; cells
// outside [0, size) are padding and ignored (Keras semantics): max is over the
// valid cells, the average divides by their count. P >= 0.
//
// One thread per output cell forward, one per input cell backward (gather: no
// two threads write one cell, no atomics, deterministic). Consecutive threads
// handle consecutive channels, so every access is coalesced. Flat indices are
// 32-bit ints when they fit (cheaper division), 64-bit otherwise.

#include "common.cuh"

struct PoolShape {
  int N, D, H, W, C;  // input
  int OD, OH, OW;     // output
  int KD, KH, KW;     // window
  int SD, SH, SW;     // strides
  int PD, PH, PW;     // padding before
};

// True when flat indices of x and y (plus one grid stride) fit in an int.
__device__ __forceinline__ bool pool_fits_int(const PoolShape& s) {
  const long long x_size = (long long)s.N * s.D * s.H * s.W * s.C;
  const long long y_size = (long long)s.N * s.OD * s.OH * s.OW * s.C;
  const long long largest = x_size > y_size ? x_size : y_size;
  return largest + (long long)blockDim.x * gridDim.x < 2147483647LL;
}

// Number of valid cells of window o along one axis.
__device__ __forceinline__ int valid_extent(int o, int S, int P, int K, int size) {
  const int start = o * S - P;
  const int lo = start > 0 ? start : 0;
  const int hi = start + K < size ? start + K : size;
  return hi - lo;
}

// The first and last window along one axis that contain padded index p.
__device__ __forceinline__ int first_window(int p, int S, int K) {
  return p - K + 1 > 0 ? (p - K + S) / S : 0;
}
__device__ __forceinline__ int last_window(int p, int S, int O) {
  return p / S < O - 1 ? p / S : O - 1;
}

// Splits flat index i of an (N, A, B, Cc, C) array into (n, a, b, cc, c).
template <typename I>
__device__ __forceinline__ I split(I i, int A, int B, int Cc, int C, int& a, int& b, int& cc,
                                   int& c) {
  I r = i / C;
  c = (int)(i - r * C);
  cc = (int)(r % Cc);
  r /= Cc;
  b = (int)(r % B);
  r /= B;
  a = (int)(r % A);
  return r / A;
}

// NaN propagates: a window holding NaN gives NaN (its first NaN is the argmax).
template <typename T, typename I>
__device__ __forceinline__ void max_forward_cells(const T* __restrict__ x, T* __restrict__ y,
                                                  int* __restrict__ arg, int write_arg,
                                                  const PoolShape& s, I total) {
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (I)blockDim.x * gridDim.x) {
    int od, oh, ow, c;
    const I n = split(i, s.OD, s.OH, s.OW, s.C, od, oh, ow, c);
    const int d0 = od * s.SD - s.PD, h0 = oh * s.SH - s.PH, w0 = ow * s.SW - s.PW;
    T best = dlx_lowest<T>();
    int best_k = -1;
    for (int kd = 0; kd < s.KD; ++kd) {
      const int id = d0 + kd;
      if (id < 0 || id >= s.D) continue;
      for (int kh = 0; kh < s.KH; ++kh) {
        const int ih = h0 + kh;
        if (ih < 0 || ih >= s.H) continue;
        for (int kw = 0; kw < s.KW; ++kw) {
          const int iw = w0 + kw;
          if (iw < 0 || iw >= s.W) continue;
          const T value = x[(((n * s.D + id) * s.H + ih) * s.W + iw) * s.C + c];
          // strictly greater keeps the first maximum; the first NaN wins for good
          if (best_k < 0 || value > best || (value != value && best == best)) {
            best = value;
            best_k = (kd * s.KH + kh) * s.KW + kw;
          }
        }
      }
    }
    y[i] = best;
    if (write_arg) arg[i] = best_k;
  }
}

// y = the maximum of each window; arg (written when write_arg is non-zero, else
// a 1-element dummy) the index of its first maximal valid cell.
template <typename T>
__global__ void max_pool_forward(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ arg,
                                 int write_arg, int N, int D, int H, int W, int C, int OD, int OH,
                                 int OW, int KD, int KH, int KW, int SD, int SH, int SW, int PD,
                                 int PH, int PW) {
  const PoolShape s = {N, D, H, W, C, OD, OH, OW, KD, KH, KW, SD, SH, SW, PD, PH, PW};
  const long long total = (long long)N * OD * OH * OW * C;
  if (pool_fits_int(s))
    max_forward_cells<T, int>(x, y, arg, write_arg, s, (int)total);
  else
    max_forward_cells<T, long long>(x, y, arg, write_arg, s, total);
}

template <typename T, typename I>
__device__ __forceinline__ void max_backward_cells(const T* __restrict__ g,
                                                   const int* __restrict__ arg,
                                                   const T* __restrict__ y, int relu,
                                                   T* __restrict__ gx, const PoolShape& s,
                                                   I total) {
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (I)blockDim.x * gridDim.x) {
    int id, ih, iw, c;
    const I n = split(i, s.D, s.H, s.W, s.C, id, ih, iw, c);
    const int pd = id + s.PD, ph = ih + s.PH, pw = iw + s.PW;
    const int od_hi = last_window(pd, s.SD, s.OD), oh_hi = last_window(ph, s.SH, s.OH),
              ow_hi = last_window(pw, s.SW, s.OW);
    T sum = T(0);
    for (int od = first_window(pd, s.SD, s.KD); od <= od_hi; ++od)
      for (int oh = first_window(ph, s.SH, s.KH); oh <= oh_hi; ++oh)
        for (int ow = first_window(pw, s.SW, s.KW); ow <= ow_hi; ++ow) {
          const I o = (((n * s.OD + od) * s.OH + oh) * s.OW + ow) * s.C + c;
          const int k = ((pd - od * s.SD) * s.KH + (ph - oh * s.SH)) * s.KW + (pw - ow * s.SW);
          if (arg[o] == k && (!relu || y[o] > T(0))) sum += g[o];
        }
    gx[i] = sum;
  }
}

// Gather form of the max-pooling gradient: each input cell sums the gradients
// of the windows that contain it and chose it as their maximum. With relu
// non-zero, only windows whose output y is > 0 count: the gradient through a
// ReLU applied before the pool, folded in (y is read only then).
template <typename T>
__global__ void max_pool_backward(const T* __restrict__ g, const int* __restrict__ arg,
                                  const T* __restrict__ y, int relu, T* __restrict__ gx, int N,
                                  int D, int H, int W, int C, int OD, int OH, int OW, int KD,
                                  int KH, int KW, int SD, int SH, int SW, int PD, int PH, int PW) {
  const PoolShape s = {N, D, H, W, C, OD, OH, OW, KD, KH, KW, SD, SH, SW, PD, PH, PW};
  const long long total = (long long)N * D * H * W * C;
  if (pool_fits_int(s))
    max_backward_cells<T, int>(g, arg, y, relu, gx, s, (int)total);
  else
    max_backward_cells<T, long long>(g, arg, y, relu, gx, s, total);
}

template <typename T, typename I>
__device__ __forceinline__ void avg_forward_cells(const T* __restrict__ x, T* __restrict__ y,
                                                  const PoolShape& s, I total) {
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (I)blockDim.x * gridDim.x) {
    int od, oh, ow, c;
    const I n = split(i, s.OD, s.OH, s.OW, s.C, od, oh, ow, c);
    const int d0 = od * s.SD - s.PD, h0 = oh * s.SH - s.PH, w0 = ow * s.SW - s.PW;
    T sum = T(0);
    for (int id = d0 > 0 ? d0 : 0; id < d0 + s.KD && id < s.D; ++id)
      for (int ih = h0 > 0 ? h0 : 0; ih < h0 + s.KH && ih < s.H; ++ih)
        for (int iw = w0 > 0 ? w0 : 0; iw < w0 + s.KW && iw < s.W; ++iw)
          sum += x[(((n * s.D + id) * s.H + ih) * s.W + iw) * s.C + c];
    const int count = valid_extent(od, s.SD, s.PD, s.KD, s.D) *
                      valid_extent(oh, s.SH, s.PH, s.KH, s.H) *
                      valid_extent(ow, s.SW, s.PW, s.KW, s.W);
    y[i] = sum / T(count);
  }
}

// y = the sum of each window's valid cells over their count.
template <typename T>
__global__ void avg_pool_forward(const T* __restrict__ x, T* __restrict__ y, int N, int D, int H,
                                 int W, int C, int OD, int OH, int OW, int KD, int KH, int KW,
                                 int SD, int SH, int SW, int PD, int PH, int PW) {
  const PoolShape s = {N, D, H, W, C, OD, OH, OW, KD, KH, KW, SD, SH, SW, PD, PH, PW};
  const long long total = (long long)N * OD * OH * OW * C;
  if (pool_fits_int(s))
    avg_forward_cells<T, int>(x, y, s, (int)total);
  else
    avg_forward_cells<T, long long>(x, y, s, total);
}

template <typename T, typename I>
__device__ __forceinline__ void avg_backward_cells(const T* __restrict__ g, T* __restrict__ gx,
                                                   const PoolShape& s, I total) {
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (I)blockDim.x * gridDim.x) {
    int id, ih, iw, c;
    const I n = split(i, s.D, s.H, s.W, s.C, id, ih, iw, c);
    const int pd = id + s.PD, ph = ih + s.PH, pw = iw + s.PW;
    const int od_hi = last_window(pd, s.SD, s.OD), oh_hi = last_window(ph, s.SH, s.OH),
              ow_hi = last_window(pw, s.SW, s.OW);
    T sum = T(0);
    for (int od = first_window(pd, s.SD, s.KD); od <= od_hi; ++od) {
      const int cd = valid_extent(od, s.SD, s.PD, s.KD, s.D);
      for (int oh = first_window(ph, s.SH, s.KH); oh <= oh_hi; ++oh) {
        const int cdh = cd * valid_extent(oh, s.SH, s.PH, s.KH, s.H);
        for (int ow = first_window(pw, s.SW, s.KW); ow <= ow_hi; ++ow) {
          const int count = cdh * valid_extent(ow, s.SW, s.PW, s.KW, s.W);
          sum += g[(((n * s.OD + od) * s.OH + oh) * s.OW + ow) * s.C + c] / T(count);
        }
      }
    }
    gx[i] = sum;
  }
}

// Gather form of the average-pooling gradient: each input cell sums g / count
// over the windows that contain it.
template <typename T>
__global__ void avg_pool_backward(const T* __restrict__ g, T* __restrict__ gx, int N, int D,
                                  int H, int W, int C, int OD, int OH, int OW, int KD, int KH,
                                  int KW, int SD, int SH, int SW, int PD, int PH, int PW) {
  const PoolShape s = {N, D, H, W, C, OD, OH, OW, KD, KH, KW, SD, SH, SW, PD, PH, PW};
  const long long total = (long long)N * D * H * W * C;
  if (pool_fits_int(s))
    avg_backward_cells<T, int>(g, gx, s, (int)total);
  else
    avg_backward_cells<T, long long>(g, gx, s, total);
}
