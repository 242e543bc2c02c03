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
// valid cells, the average divides by their count.

#include "common.cuh"

// One thread per output cell. NaN propagates: a window holding NaN gives NaN.
// arg is written only when write_arg is non-zero.
template <typename T>
__global__ void max_pool_forward(const T* __restrict__ x, T* __restrict__ y, int* __restrict__ arg,
                                 int write_arg, int N, int D, int H, int W, int C, int OD, int OH,
                                 int OW, int KD, int KH, int KW, int SD, int SH, int SW, int PD,
                                 int PH, int PW) {
  const long long total = (long long)N * OD * OH * OW * C;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (long long)blockDim.x * gridDim.x) {
    long long r = i / C;
    const int c = (int)(i - r * C);
    const int ow = (int)(r % OW);
    r /= OW;
    const int oh = (int)(r % OH);
    r /= OH;
    const int od = (int)(r % OD);
    const long long n = r / OD;
    const int d0 = od * SD - PD, h0 = oh * SH - PH, w0 = ow * SW - PW;
    T best = dlx_lowest<T>();
    int best_k = -1;
    for (int kd = 0; kd < KD; ++kd) {
      const int id = d0 + kd;
      if (id < 0 || id >= D) continue;
      for (int kh = 0; kh < KH; ++kh) {
        const int ih = h0 + kh;
        if (ih < 0 || ih >= H) continue;
        for (int kw = 0; kw < KW; ++kw) {
          const int iw = w0 + kw;
          if (iw < 0 || iw >= W) continue;
          const T value = x[(((n * D + id) * H + ih) * W + iw) * C + c];
          // strictly greater keeps the first maximum; the first NaN wins for good
          if (best_k < 0 || value > best || (value != value && best == best)) {
            best = value;
            best_k = (kd * KH + kh) * KW + kw;
          }
        }
      }
    }
    y[i] = best;
    if (write_arg) arg[i] = best_k;
  }
}

// The first and last window along one axis that contain padded index p.
__device__ __forceinline__ int first_window(int p, int S, int K) {
  return p - K + 1 > 0 ? (p - K + S) / S : 0;
}
__device__ __forceinline__ int last_window(int p, int S, int O) {
  return p / S < O - 1 ? p / S : O - 1;
}

// Gather form of the max-pooling gradient: each input cell sums the gradients
// of the windows that contain it and chose it as their maximum. One thread per
// input cell, no atomics.
template <typename T>
__global__ void max_pool_backward(const T* __restrict__ g, const int* __restrict__ arg,
                                  T* __restrict__ gx, int N, int D, int H, int W, int C, int OD,
                                  int OH, int OW, int KD, int KH, int KW, int SD, int SH, int SW,
                                  int PD, int PH, int PW) {
  const long long total = (long long)N * D * H * W * C;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (long long)blockDim.x * gridDim.x) {
    long long r = i / C;
    const int c = (int)(i - r * C);
    const int iw = (int)(r % W);
    r /= W;
    const int ih = (int)(r % H);
    r /= H;
    const int id = (int)(r % D);
    const long long n = r / D;
    // windows o with o*S - P <= i <= o*S - P + K - 1
    const int pd = id + PD, ph = ih + PH, pw = iw + PW;
    const int od_lo = first_window(pd, SD, KD), oh_lo = first_window(ph, SH, KH),
              ow_lo = first_window(pw, SW, KW);
    const int od_hi = last_window(pd, SD, OD), oh_hi = last_window(ph, SH, OH),
              ow_hi = last_window(pw, SW, OW);
    T sum = T(0);
    for (int od = od_lo; od <= od_hi; ++od)
      for (int oh = oh_lo; oh <= oh_hi; ++oh)
        for (int ow = ow_lo; ow <= ow_hi; ++ow) {
          const long long o = (((n * OD + od) * OH + oh) * OW + ow) * C + c;
          const int k = ((pd - od * SD) * KH + (ph - oh * SH)) * KW + (pw - ow * SW);
          if (arg[o] == k) sum += g[o];
        }
    gx[i] = sum;
  }
}

// Number of valid cells of window o along one axis.
__device__ __forceinline__ int valid_extent(int o, int S, int P, int K, int size) {
  const int start = o * S - P;
  const int lo = start > 0 ? start : 0;
  const int hi = start + K < size ? start + K : size;
  return hi - lo;
}

// One thread per output cell: the sum of the window's valid cells over their count.
template <typename T>
__global__ void avg_pool_forward(const T* __restrict__ x, T* __restrict__ y, int N, int D, int H,
                                 int W, int C, int OD, int OH, int OW, int KD, int KH, int KW,
                                 int SD, int SH, int SW, int PD, int PH, int PW) {
  const long long total = (long long)N * OD * OH * OW * C;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (long long)blockDim.x * gridDim.x) {
    long long r = i / C;
    const int c = (int)(i - r * C);
    const int ow = (int)(r % OW);
    r /= OW;
    const int oh = (int)(r % OH);
    r /= OH;
    const int od = (int)(r % OD);
    const long long n = r / OD;
    const int d0 = od * SD - PD, h0 = oh * SH - PH, w0 = ow * SW - PW;
    T sum = T(0);
    for (int id = d0 > 0 ? d0 : 0; id < d0 + KD && id < D; ++id)
      for (int ih = h0 > 0 ? h0 : 0; ih < h0 + KH && ih < H; ++ih)
        for (int iw = w0 > 0 ? w0 : 0; iw < w0 + KW && iw < W; ++iw)
          sum += x[(((n * D + id) * H + ih) * W + iw) * C + c];
    const int count = valid_extent(od, SD, PD, KD, D) * valid_extent(oh, SH, PH, KH, H) *
                      valid_extent(ow, SW, PW, KW, W);
    y[i] = sum / T(count);
  }
}

// Gather form of the average-pooling gradient: each input cell sums g / count
// over the windows that contain it.
template <typename T>
__global__ void avg_pool_backward(const T* __restrict__ g, T* __restrict__ gx, int N, int D,
                                  int H, int W, int C, int OD, int OH, int OW, int KD, int KH,
                                  int KW, int SD, int SH, int SW, int PD, int PH, int PW) {
  const long long total = (long long)N * D * H * W * C;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (long long)blockDim.x * gridDim.x) {
    long long r = i / C;
    const int c = (int)(i - r * C);
    const int iw = (int)(r % W);
    r /= W;
    const int ih = (int)(r % H);
    r /= H;
    const int id = (int)(r % D);
    const long long n = r / D;
    const int pd = id + PD, ph = ih + PH, pw = iw + PW;
    const int od_lo = first_window(pd, SD, KD), oh_lo = first_window(ph, SH, KH),
              ow_lo = first_window(pw, SW, KW);
    const int od_hi = last_window(pd, SD, OD), oh_hi = last_window(ph, SH, OH),
              ow_hi = last_window(pw, SW, OW);
    T sum = T(0);
    for (int od = od_lo; od <= od_hi; ++od) {
      const int cd = valid_extent(od, SD, PD, KD, D);
      for (int oh = oh_lo; oh <= oh_hi; ++oh) {
        const int cdh = cd * valid_extent(oh, SH, PH, KH, H);
        for (int ow = ow_lo; ow <= ow_hi; ++ow) {
          const int count = cdh * valid_extent(ow, SW, PW, KW, W);
          sum += g[(((n * OD + od) * OH + oh) * OW + ow) * C + c] / T(count);
        }
      }
    }
    gx[i] = sum;
  }
}
