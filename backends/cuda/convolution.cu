// N-D convolution helpers for the cupy backend (glue: backends/cupy_conv.py).
//
// Every array is channels_last and C-contiguous. 1D and 2D convolutions are
// run as 3D ones with leading size-1 spatial axes (kernel 1, stride 1,
// dilation 1, no padding there), so one kernel serves every rank:
//
//   x     (N, D, H, W, C)               the input (or, for col2im, its gradient)
//   cols  (G, M, KD*KH*KW, C/G)         the im2col matrix, one (M, Kp*Cg) block per group,
//                                       M = N*OD*OH*OW output positions (row-major),
//                                       kernel offsets row-major, then the group's channels
//
// Padding: output position o along an axis reads input index o*S - P + k*Dil;
// indices outside [0, size) read as zero. P may be negative (cropping) and the
// far side needs no count: it follows from the output size. The matrix
// products between these kernels run on cuBLAS (xp.matmul in the glue).
//
// im2col and col2im index with 32-bit ints when every flat index fits (integer
// division, which these kernels do a lot of, is several times cheaper on
// 32 bits) and with 64-bit ones otherwise.

#include "common.cuh"

struct ConvShape {
  int N, D, H, W, C;     // input
  int OD, OH, OW;       // output positions
  int KD, KH, KW;       // kernel
  int SD, SH, SW;       // strides
  int DD, DH, DW;       // dilation
  int PD, PH, PW;       // padding before (negative: cropping)
  int G, Cg, Kp;        // groups, channels per group, kernel offsets
  long long M;          // output positions in all
};

__device__ __forceinline__ ConvShape conv_shape(int N, int D, int H, int W, int C, int OD, int OH,
                                                int OW, int KD, int KH, int KW, int SD, int SH,
                                                int SW, int DD, int DH, int DW, int PD, int PH,
                                                int PW, int G) {
  ConvShape s = {N,  D,  H,  W,  C,  OD, OH, OW, KD, KH, KW, SD,     SH,           SW,
                 DD, DH, DW, PD, PH, PW, G,  C / G, KD * KH * KW, (long long)N * OD * OH * OW};
  return s;
}

// True when flat indices up to `largest` (plus one grid stride) fit in an int.
__device__ __forceinline__ bool fits_int(long long largest) {
  return largest + (long long)blockDim.x * gridDim.x < 2147483647LL;
}

// cols[g][m][k][cg] = x[n, od*SD - PD + kd*DD, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW, g*Cg + cg]
// (zero outside x), for every flat column index i < total, with index type I.
template <typename T, typename I>
__device__ __forceinline__ void im2col_cells(const T* __restrict__ x, T* __restrict__ cols,
                                             const ConvShape& s, I total) {
  const I row = (I)s.Kp * s.Cg;  // entries per (group, output position)
  const I M = (I)s.M;
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (I)blockDim.x * gridDim.x) {
    const I gm = i / row;
    int r = (int)(i - gm * row);
    const int cg = r % s.Cg;
    r /= s.Cg;
    const int kw = r % s.KW;
    r /= s.KW;
    const int kh = r % s.KH;
    const int kd = r / s.KH;
    const int g = (int)(gm / M);
    I m = gm - (I)g * M;
    const int ow = (int)(m % s.OW);
    m /= s.OW;
    const int oh = (int)(m % s.OH);
    m /= s.OH;
    const int od = (int)(m % s.OD);
    const I n = m / s.OD;
    const int id = od * s.SD - s.PD + kd * s.DD;
    const int ih = oh * s.SH - s.PH + kh * s.DH;
    const int iw = ow * s.SW - s.PW + kw * s.DW;
    T value = T(0);
    if (id >= 0 && id < s.D && ih >= 0 && ih < s.H && iw >= 0 && iw < s.W)
      value = x[(((n * s.D + id) * s.H + ih) * s.W + iw) * s.C + g * s.Cg + cg];
    cols[i] = value;
  }
}

// One thread per column entry: consecutive threads read consecutive channels
// and write consecutive entries.
template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols, int N, int D, int H, int W,
                       int C, int OD, int OH, int OW, int KD, int KH, int KW, int SD, int SH,
                       int SW, int DD, int DH, int DW, int PD, int PH, int PW, int G) {
  const ConvShape s =
      conv_shape(N, D, H, W, C, OD, OH, OW, KD, KH, KW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G);
  const long long total = s.M * s.Kp * C;
  const long long x_size = (long long)N * D * H * W * C;
  if (fits_int(total > x_size ? total : x_size))
    im2col_cells<T, int>(x, cols, s, (int)total);
  else
    im2col_cells<T, long long>(x, cols, s, total);
}

// x[n, id, ih, iw, c] = the sum of every column entry im2col would have read
// from that cell (zero if none), for every flat input index i < total.
template <typename T, typename I>
__device__ __forceinline__ void col2im_cells(const T* __restrict__ cols, T* __restrict__ x,
                                             const ConvShape& s, I total) {
  const I group_size = (I)s.M * s.Kp * s.Cg;
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (I)blockDim.x * gridDim.x) {
    I r = i / s.C;
    const int c = (int)(i - r * s.C);
    const int iw = (int)(r % s.W);
    r /= s.W;
    const int ih = (int)(r % s.H);
    r /= s.H;
    const int id = (int)(r % s.D);
    const I n = r / s.D;
    const int g = c / s.Cg;
    const T* group = cols + (I)g * group_size + (c - g * s.Cg);
    T sum = T(0);
    for (int kd = 0; kd < s.KD; ++kd) {
      const int td = id + s.PD - kd * s.DD;  // = od * SD for the output that meets this cell
      if (td < 0) break;                     // decreases with kd
      if (td % s.SD) continue;
      const int od = td / s.SD;
      if (od >= s.OD) continue;
      for (int kh = 0; kh < s.KH; ++kh) {
        const int th = ih + s.PH - kh * s.DH;
        if (th < 0) break;
        if (th % s.SH) continue;
        const int oh = th / s.SH;
        if (oh >= s.OH) continue;
        for (int kw = 0; kw < s.KW; ++kw) {
          const int tw = iw + s.PW - kw * s.DW;
          if (tw < 0) break;
          if (tw % s.SW) continue;
          const int ow = tw / s.SW;
          if (ow >= s.OW) continue;
          const I m = ((n * s.OD + od) * s.OH + oh) * s.OW + ow;
          const int k = (kd * s.KH + kh) * s.KW + kw;
          sum += group[(m * s.Kp + k) * s.Cg];
        }
      }
    }
    x[i] = sum;
  }
}

// The adjoint of im2col, as a gather: one thread per input cell, so no two
// threads write the same place (no atomics, deterministic).
template <typename T>
__global__ void col2im(const T* __restrict__ cols, T* __restrict__ x, int N, int D, int H, int W,
                       int C, int OD, int OH, int OW, int KD, int KH, int KW, int SD, int SH,
                       int SW, int DD, int DH, int DW, int PD, int PH, int PW, int G) {
  const ConvShape s =
      conv_shape(N, D, H, W, C, OD, OH, OW, KD, KH, KW, SD, SH, SW, DD, DH, DW, PD, PH, PW, G);
  const long long total = (long long)N * D * H * W * C;
  const long long cols_size = s.M * s.Kp * C;
  if (fits_int(total > cols_size ? total : cols_size))
    col2im_cells<T, int>(cols, x, s, (int)total);
  else
    col2im_cells<T, long long>(cols, x, s, total);
}

// Forward epilogue: y[m, g*Fg + f] = act(src[g, m, f] + bias[g*Fg + f]) with act
// the identity or ReLU (NaN stays NaN, as with a maximum). Puts grouped products
// (G, M, Fg) back in channels_last order; with G == 1 src may be y itself (each
// thread reads and writes one cell). bias is read only when has_bias is non-zero.
template <typename T, typename I>
__device__ __forceinline__ void bias_act_cells(const T* src, const T* bias, T* y, I M, int G,
                                               int Fg, int has_bias, int relu) {
  const int F = G * Fg;
  const I total = M * F;
  for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (I)blockDim.x * gridDim.x) {
    T value;
    int c = 0;
    if (G == 1) {
      value = src[i];
      if (has_bias) c = (int)(i % F);
    } else {
      const I m = i / F;
      c = (int)(i - m * F);
      const int g = c / Fg;
      value = src[((I)g * M + m) * Fg + (c - g * Fg)];
    }
    if (has_bias) value += bias[c];
    if (relu && value < T(0)) value = T(0);
    y[i] = value;
  }
}

template <typename T>
__global__ void bias_act(const T* src, const T* bias, T* y, long long M, int G, int Fg,
                         int has_bias, int relu) {
  if (fits_int(M * G * Fg))
    bias_act_cells<T, int>(src, bias, y, (int)M, G, Fg, has_bias, relu);
  else
    bias_act_cells<T, long long>(src, bias, y, M, G, Fg, has_bias, relu);
}

// Gradient through a fused ReLU: out = g where y > 0, else 0.
template <typename T>
__global__ void relu_mask(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ out,
                          long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x)
    out[i] = y[i] > T(0) ? g[i] : T(0);
}
