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

#include "common.cuh"

// cols[g][m][k][cg] = x[n, od*SD - PD + kd*DD, oh*SH - PH + kh*DH, ow*SW - PW + kw*DW, g*Cg + cg]
// (zero outside x). One thread per column entry: consecutive threads read
// consecutive channels and write consecutive entries.
template <typename T>
__global__ void im2col(const T* __restrict__ x, T* __restrict__ cols, int N, int D, int H, int W,
                       int C, int OD, int OH, int OW, int KD, int KH, int KW, int SD, int SH,
                       int SW, int DD, int DH, int DW, int PD, int PH, int PW, int G) {
  const int Cg = C / G;
  const int row = KD * KH * KW * Cg;  // entries per (group, output position)
  const long long M = (long long)N * OD * OH * OW;
  const long long total = (long long)G * M * row;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (long long)blockDim.x * gridDim.x) {
    const long long gm = i / row;
    int r = (int)(i - gm * row);
    const int cg = r % Cg;
    r /= Cg;
    const int kw = r % KW;
    r /= KW;
    const int kh = r % KH;
    const int kd = r / KH;
    const int g = (int)(gm / M);
    long long m = gm - (long long)g * M;
    const int ow = (int)(m % OW);
    m /= OW;
    const int oh = (int)(m % OH);
    m /= OH;
    const int od = (int)(m % OD);
    const long long n = m / OD;
    const int id = od * SD - PD + kd * DD;
    const int ih = oh * SH - PH + kh * DH;
    const int iw = ow * SW - PW + kw * DW;
    T value = T(0);
    if (id >= 0 && id < D && ih >= 0 && ih < H && iw >= 0 && iw < W)
      value = x[(((n * D + id) * H + ih) * W + iw) * C + g * Cg + cg];
    cols[i] = value;
  }
}

// The adjoint of im2col, as a gather: x[n, id, ih, iw, c] = the sum of every
// column entry im2col would have read from that cell (zero if none). One
// thread per input cell, so no two threads write the same place.
template <typename T>
__global__ void col2im(const T* __restrict__ cols, T* __restrict__ x, int N, int D, int H, int W,
                       int C, int OD, int OH, int OW, int KD, int KH, int KW, int SD, int SH,
                       int SW, int DD, int DH, int DW, int PD, int PH, int PW, int G) {
  const int Cg = C / G;
  const int Kp = KD * KH * KW;
  const long long M = (long long)N * OD * OH * OW;
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
    const int g = c / Cg;
    const int cg = c - g * Cg;
    const T* group = cols + (long long)g * M * Kp * Cg + cg;
    T sum = T(0);
    for (int kd = 0; kd < KD; ++kd) {
      const int td = id + PD - kd * DD;  // = od * SD for the output that meets this cell
      if (td < 0) break;                 // decreases with kd
      if (td % SD) continue;
      const int od = td / SD;
      if (od >= OD) continue;
      for (int kh = 0; kh < KH; ++kh) {
        const int th = ih + PH - kh * DH;
        if (th < 0) break;
        if (th % SH) continue;
        const int oh = th / SH;
        if (oh >= OH) continue;
        for (int kw = 0; kw < KW; ++kw) {
          const int tw = iw + PW - kw * DW;
          if (tw < 0) break;
          if (tw % SW) continue;
          const int ow = tw / SW;
          if (ow >= OW) continue;
          const long long m = ((n * OD + od) * OH + oh) * OW + ow;
          const int k = (kd * KH + kh) * KW + kw;
          sum += group[(m * Kp + k) * Cg];
        }
      }
    }
    x[i] = sum;
  }
}

// Forward epilogue: y[m, g*Fg + f] = act(src[g, m, f] + bias[g*Fg + f]) with act
// the identity or ReLU. Puts grouped products (G, M, Fg) back in channels_last
// order; with G == 1 src may be y itself (each thread reads and writes one cell).
// bias is read only when has_bias is non-zero.
template <typename T>
__global__ void bias_act(const T* src, const T* bias, T* y, long long M, int G, int Fg,
                         int has_bias, int relu) {
  const int F = G * Fg;
  const long long total = M * F;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (long long)blockDim.x * gridDim.x) {
    const long long m = i / F;
    const int c = (int)(i - m * F);
    const int g = c / Fg;
    T value = src[((long long)g * M + m) * Fg + (c - g * Fg)];
    if (has_bias) value += bias[c];
    if (relu && !(value > T(0))) value = value != value ? value : T(0);  // keeps NaN
    y[i] = value;
  }
}

// Gradient through a fused ReLU: out = g where y > 0, else 0.
template <typename T>
__global__ void relu_mask(const T* __restrict__ g, const T* __restrict__ y, T* __restrict__ out,
                          long long n) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)blockDim.x * gridDim.x)
    out[i] = y[i] > T(0) ? g[i] : T(0);
}
