// Fused per-step kernels of the recurrent sequence ops (SimpleRNN, LSTM, GRU).
//
// What they compute is defined by dlx/ops/recurrent.py; the glue that runs the
// time loop is backends/cupy_rnn.py. Per time step the glue does the recurrent
// matrix product on cuBLAS (xp.matmul) and ONE kernel here does everything
// elementwise around it: the gate nonlinearities, the state update, the mask
// (carry the state of sample b where keep[b] == 0) and, when a recurrent
// dropout mask is given, the dropped state hd = h * rm that the next step's
// product reads. Backward mirrors this: one kernel per step turns the state
// gradient into the gate pre-activation gradients (and the part of the state
// gradient that bypasses the recurrent product, "carry"), then the glue
// multiplies by U^T. The GRU with reset_after=False needs a product in the
// middle of its step, so it has two kernels per step each way.
//
// Layouts (row-major, one time step): state arrays (B, u); gate arrays
// (B, G*u) with gate k of unit j of sample b at b*G*u + k*u + j (Keras gate
// order: LSTM i, f, c, o; GRU z, r, h). One thread per (b, j), grid-stride;
// each thread reads and writes only its own (b, j) cells, so in-place updates
// are safe in any thread order.
//
// Optional inputs come with a flag (has_keep, has_rm, has_dseq, has_bias);
// when a flag is 0 the pointer is a 1-element dummy and is not read.
// keep: (B,) of 0/1 (nonzero = the step is not masked for that sample).
// Activation codes (backends/cupy_rnn.py ACTIVATION_CODES) below.
#include "common.cuh"

#define DLX_ACT_LINEAR 0
#define DLX_ACT_TANH 1
#define DLX_ACT_SIGMOID 2
#define DLX_ACT_HARD_SIGMOID 3
#define DLX_ACT_RELU 4
#define DLX_ACT_RELU6 5
#define DLX_ACT_SOFTSIGN 6
#define DLX_ACT_EXPONENTIAL 7

// f(x), written as the generic activations compute it (NaN propagates).
template <typename T>
__device__ __forceinline__ T rnn_activate(int kind, T x) {
  switch (kind) {
    case DLX_ACT_TANH:
      return tanh(x);
    case DLX_ACT_SIGMOID: {
      T z = exp(-fabs(x));
      return x >= T(0) ? T(1) / (T(1) + z) : z / (T(1) + z);
    }
    case DLX_ACT_HARD_SIGMOID: {
      T v = x / T(6) + T(0.5);
      return v < T(0) ? T(0) : (v > T(1) ? T(1) : v);
    }
    case DLX_ACT_RELU:
      return x < T(0) ? T(0) : x;
    case DLX_ACT_RELU6:
      return x < T(0) ? T(0) : (x > T(6) ? T(6) : x);
    case DLX_ACT_SOFTSIGN:
      return x / (T(1) + fabs(x));
    case DLX_ACT_EXPONENTIAL:
      return exp(x);
    default:
      return x;
  }
}

// f'(x) expressed through y = f(x) (every supported activation allows this).
template <typename T>
__device__ __forceinline__ T rnn_activation_grad(int kind, T y) {
  switch (kind) {
    case DLX_ACT_TANH:
      return T(1) - y * y;
    case DLX_ACT_SIGMOID:
      return y * (T(1) - y);
    case DLX_ACT_HARD_SIGMOID:  // 1/6 inside (-3, 3), i.e. where 0 < y < 1
      return (y > T(0) && y < T(1)) ? T(1) / T(6) : T(0);
    case DLX_ACT_RELU:
      return y > T(0) ? T(1) : T(0);
    case DLX_ACT_RELU6:
      return (y > T(0) && y < T(6)) ? T(1) : T(0);
    case DLX_ACT_SOFTSIGN: {  // 1 / (1 + |x|)^2 = (1 - |y|)^2
      T d = T(1) - fabs(y);
      return d * d;
    }
    case DLX_ACT_EXPONENTIAL:
      return y;
    default:
      return T(1);
  }
}

#define DLX_FOR_EACH_STATE(i, n)                                             \
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
       i += (long long)blockDim.x * gridDim.x)

// The state gradient arriving at a step: the product part (times the dropout
// mask), the carried part and the sequence output's gradient. Then the mask:
// on a masked step all of it is carried on (returned through *keep_part) and
// nothing reaches the cell.
template <typename T>
__device__ __forceinline__ T rnn_incoming_grad(long long i, long long b, const T* dh_rec,
                                               const T* rm, int has_rm, const T* carry,
                                               const T* dseq, int has_dseq, const T* keep,
                                               int has_keep, T* keep_part) {
  T dh = has_rm ? dh_rec[i] * rm[i] : dh_rec[i];
  dh = dh + carry[i];
  if (has_dseq) dh = dh + dseq[i];
  *keep_part = T(0);
  if (has_keep && keep[b] == T(0)) {
    *keep_part = dh;
    dh = T(0);
  }
  return dh;
}

// ---------------------------------------------------------------------------
// SimpleRNN: h = act(x + hd @ U)

// a: (B, u) in: hd @ U, out: act(x + hd @ U) (kept for backward).
template <typename T>
__global__ void rnn_forward_step(const T* x, T* a, const T* h_prev, T* h_out, T* hd_out,
                                 const T* keep, int has_keep, const T* rm, int has_rm,
                                 int batch, int units, int act) {
  long long n = (long long)batch * units;
  DLX_FOR_EACH_STATE(i, n) {
    long long b = i / units;
    T y = rnn_activate(act, x[i] + a[i]);
    a[i] = y;
    T h = (has_keep && keep[b] == T(0)) ? h_prev[i] : y;
    h_out[i] = h;
    if (has_rm) hd_out[i] = h * rm[i];
  }
}

// carry: (B, u) in: the gradient part carried past the previous (later) step,
// out: the part carried past this one. da: (B, u) gradient of the pre-activation.
template <typename T>
__global__ void rnn_backward_step(const T* dh_rec, const T* rm, int has_rm, T* carry,
                                  const T* dseq, int has_dseq, const T* keep, int has_keep,
                                  const T* a, T* da, int batch, int units, int act) {
  long long n = (long long)batch * units;
  DLX_FOR_EACH_STATE(i, n) {
    long long b = i / units;
    T keep_part;
    T dh = rnn_incoming_grad(i, b, dh_rec, rm, has_rm, carry, dseq, has_dseq, keep,
                             has_keep, &keep_part);
    da[i] = dh * rnn_activation_grad(act, a[i]);
    carry[i] = keep_part;
  }
}

// ---------------------------------------------------------------------------
// LSTM: gates i, f, g, o; c = f*c_prev + i*g; h = o*act(c)

// z: (B, 4u) in: hd @ U, out: the activated gates (i, f, g, o) kept for backward.
// c_out/h_out: the (mask-carried) new state; tc_out: act(c) before the mask.
template <typename T>
__global__ void lstm_forward_step(const T* x, T* z, const T* h_prev, const T* c_prev, T* h_out,
                                  T* c_out, T* tc_out, T* hd_out, const T* keep, int has_keep,
                                  const T* rm, int has_rm, int batch, int units, int act,
                                  int ract) {
  long long n = (long long)batch * units;
  DLX_FOR_EACH_STATE(i, n) {
    long long b = i / units;
    int j = (int)(i % units);
    long long g0 = b * 4LL * units + j;
    T gi = rnn_activate(ract, x[g0] + z[g0]);
    T gf = rnn_activate(ract, x[g0 + units] + z[g0 + units]);
    T gg = rnn_activate(act, x[g0 + 2 * units] + z[g0 + 2 * units]);
    T go = rnn_activate(ract, x[g0 + 3 * units] + z[g0 + 3 * units]);
    z[g0] = gi;
    z[g0 + units] = gf;
    z[g0 + 2 * units] = gg;
    z[g0 + 3 * units] = go;
    T c = gf * c_prev[i] + gi * gg;
    T tc = rnn_activate(act, c);
    tc_out[i] = tc;
    T h = go * tc;
    if (has_keep && keep[b] == T(0)) {
      h = h_prev[i];
      c = c_prev[i];
    }
    h_out[i] = h;
    c_out[i] = c;
    if (has_rm) hd_out[i] = h * rm[i];
  }
}

// carry_h/dc: (B, u) in: the h-gradient part carried past the later step and the
// c gradient; out: the same for the earlier step. dz: (B, 4u) gate pre-activation
// gradients.
template <typename T>
__global__ void lstm_backward_step(const T* dh_rec, const T* rm, int has_rm, T* carry_h, T* dc,
                                   const T* dseq, int has_dseq, const T* keep, int has_keep,
                                   const T* gates, const T* c_prev, const T* tc, T* dz,
                                   int batch, int units, int act, int ract) {
  long long n = (long long)batch * units;
  DLX_FOR_EACH_STATE(i, n) {
    long long b = i / units;
    int j = (int)(i % units);
    T keep_h;
    T dh = rnn_incoming_grad(i, b, dh_rec, rm, has_rm, carry_h, dseq, has_dseq, keep,
                             has_keep, &keep_h);
    T dcv = dc[i];
    T keep_c = T(0);
    if (has_keep && keep[b] == T(0)) {
      keep_c = dcv;
      dcv = T(0);
    }
    long long g0 = b * 4LL * units + j;
    T gi = gates[g0], gf = gates[g0 + units], gg = gates[g0 + 2 * units];
    T go = gates[g0 + 3 * units];
    T tci = tc[i];
    dcv = dcv + dh * go * rnn_activation_grad(act, tci);
    dz[g0] = dcv * gg * rnn_activation_grad(ract, gi);
    dz[g0 + units] = dcv * c_prev[i] * rnn_activation_grad(ract, gf);
    dz[g0 + 2 * units] = dcv * gi * rnn_activation_grad(act, gg);
    dz[g0 + 3 * units] = dh * tci * rnn_activation_grad(ract, go);
    dc[i] = dcv * gf + keep_c;
    carry_h[i] = keep_h;
  }
}

// ---------------------------------------------------------------------------
// GRU, reset_after=True: inner = hd @ U + b_rec; z, r = ract(x_zr + inner_zr);
// hh = act(x_h + r * inner_h); h = z*h_prev + (1-z)*hh

// g: (B, 3u) in: hd @ U, out: (z, r, hh) kept for backward; ih_out: inner_h (B, u).
template <typename T>
__global__ void gru_forward_step(const T* x, T* g, const T* bias, int has_bias, const T* h_prev,
                                 T* h_out, T* ih_out, T* hd_out, const T* keep, int has_keep,
                                 const T* rm, int has_rm, int batch, int units, int act,
                                 int ract) {
  long long n = (long long)batch * units;
  DLX_FOR_EACH_STATE(i, n) {
    long long b = i / units;
    int j = (int)(i % units);
    long long g0 = b * 3LL * units + j;
    T iz = g[g0], ir = g[g0 + units], ih = g[g0 + 2 * units];
    if (has_bias) {
      iz = iz + bias[j];
      ir = ir + bias[j + units];
      ih = ih + bias[j + 2 * units];
    }
    T z = rnn_activate(ract, x[g0] + iz);
    T r = rnn_activate(ract, x[g0 + units] + ir);
    T hh = rnn_activate(act, x[g0 + 2 * units] + r * ih);
    g[g0] = z;
    g[g0 + units] = r;
    g[g0 + 2 * units] = hh;
    ih_out[i] = ih;
    T hp = h_prev[i];
    T h = z * hp + (T(1) - z) * hh;
    if (has_keep && keep[b] == T(0)) h = hp;
    h_out[i] = h;
    if (has_rm) hd_out[i] = h * rm[i];
  }
}

// carry: as for the SimpleRNN. dx: (B, 3u) gradient of x (z, r, h);
// dinner: (B, 3u) gradient of inner = hd @ U + b_rec.
template <typename T>
__global__ void gru_backward_step(const T* dh_rec, const T* rm, int has_rm, T* carry,
                                  const T* dseq, int has_dseq, const T* keep, int has_keep,
                                  const T* g, const T* ih, const T* h_prev, T* dx, T* dinner,
                                  int batch, int units, int act, int ract) {
  long long n = (long long)batch * units;
  DLX_FOR_EACH_STATE(i, n) {
    long long b = i / units;
    int j = (int)(i % units);
    T keep_part;
    T dh = rnn_incoming_grad(i, b, dh_rec, rm, has_rm, carry, dseq, has_dseq, keep,
                             has_keep, &keep_part);
    long long g0 = b * 3LL * units + j;
    T z = g[g0], r = g[g0 + units], hh = g[g0 + 2 * units];
    T daz = dh * (h_prev[i] - hh) * rnn_activation_grad(ract, z);
    T dah = dh * (T(1) - z) * rnn_activation_grad(act, hh);
    T dar = dah * ih[i] * rnn_activation_grad(ract, r);
    dx[g0] = daz;
    dx[g0 + units] = dar;
    dx[g0 + 2 * units] = dah;
    dinner[g0] = daz;
    dinner[g0 + units] = dar;
    dinner[g0 + 2 * units] = dah * r;
    carry[i] = dh * z + keep_part;
  }
}

// ---------------------------------------------------------------------------
// GRU, reset_after=False: z, r = ract(x_zr + hd @ U_zr); hh = act(x_h + (r*hd) @ U_h).
// Forward: gates kernel, then the glue's product (r*hd) @ U_h, then the update kernel.

// zr: (B, 2u) in: hd @ U_zr, out: (z, r); rh_out: r * hd (B, u).
template <typename T>
__global__ void gru_gates_step(const T* x, T* zr, const T* hd, T* rh_out, int batch, int units,
                               int ract) {
  long long n = (long long)batch * units;
  DLX_FOR_EACH_STATE(i, n) {
    long long b = i / units;
    int j = (int)(i % units);
    long long x0 = b * 3LL * units + j;
    long long g0 = b * 2LL * units + j;
    T z = rnn_activate(ract, x[x0] + zr[g0]);
    T r = rnn_activate(ract, x[x0 + units] + zr[g0 + units]);
    zr[g0] = z;
    zr[g0 + units] = r;
    rh_out[i] = r * hd[i];
  }
}

// hh: (B, u) in: (r*hd) @ U_h, out: the candidate act(x_h + (r*hd) @ U_h).
template <typename T>
__global__ void gru_update_step(const T* x, T* hh, const T* zr, const T* h_prev, T* h_out,
                                T* hd_out, const T* keep, int has_keep, const T* rm, int has_rm,
                                int batch, int units, int act) {
  long long n = (long long)batch * units;
  DLX_FOR_EACH_STATE(i, n) {
    long long b = i / units;
    int j = (int)(i % units);
    T c = rnn_activate(act, x[b * 3LL * units + 2 * units + j] + hh[i]);
    hh[i] = c;
    T z = zr[b * 2LL * units + j];
    T hp = h_prev[i];
    T h = z * hp + (T(1) - z) * c;
    if (has_keep && keep[b] == T(0)) h = hp;
    h_out[i] = h;
    if (has_rm) hd_out[i] = h * rm[i];
  }
}

// Backward, first kernel: dzr's z part and dah (B, u); carry gets the direct
// path dh*z (plus what the mask carries). The glue then forms drh = dah @ U_h^T.
template <typename T>
__global__ void gru_update_backward_step(const T* dh_rec, const T* rm, int has_rm, T* carry,
                                         const T* dseq, int has_dseq, const T* keep,
                                         int has_keep, const T* zr, const T* hh,
                                         const T* h_prev, T* dzr, T* dah, int batch, int units,
                                         int act, int ract) {
  long long n = (long long)batch * units;
  DLX_FOR_EACH_STATE(i, n) {
    long long b = i / units;
    int j = (int)(i % units);
    T keep_part;
    T dh = rnn_incoming_grad(i, b, dh_rec, rm, has_rm, carry, dseq, has_dseq, keep,
                             has_keep, &keep_part);
    long long g0 = b * 2LL * units + j;
    T z = zr[g0], c = hh[i];
    dzr[g0] = dh * (h_prev[i] - c) * rnn_activation_grad(ract, z);
    dah[i] = dh * (T(1) - z) * rnn_activation_grad(act, c);
    carry[i] = dh * z + keep_part;
  }
}

// Backward, second kernel: from drh = dah @ U_h^T, dzr's r part, and the part of
// the hd gradient through r*hd (times the dropout mask) added to carry. The
// glue then forms dzr @ U_zr^T, the next step's dh_rec.
template <typename T>
__global__ void gru_reset_backward_step(const T* drh, const T* zr, const T* hd, const T* rm,
                                        int has_rm, T* dzr, T* carry, int batch, int units,
                                        int ract) {
  long long n = (long long)batch * units;
  DLX_FOR_EACH_STATE(i, n) {
    long long b = i / units;
    int j = (int)(i % units);
    long long g0 = b * 2LL * units + j;
    T r = zr[g0 + units];
    T d = drh[i];
    dzr[g0 + units] = d * hd[i] * rnn_activation_grad(ract, r);
    T through = d * r;
    carry[i] = carry[i] + (has_rm ? through * rm[i] : through);
  }
}
