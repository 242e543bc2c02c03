// One time step of the recurrent sequence ops (LSTM, GRU, SimpleRNN; dlx/ops/recurrent.py)
// after its recurrent matrix product: the gate math of a step in one pass, where NumPy
// makes a dozen; and whole loops of steps, split over dlx's thread pool by batch rows, with
// the products in NumPy's OpenBLAS (see "Whole loops" below), and the input projection of
// all steps.
//
// Layouts (all C-contiguous, one step's rows): gates and products (B, G*u) in Keras gate
// order (LSTM i, f, c, o; GRU z, r, h); states (B, u); `keep` (B,) the step's mask as
// 0/1 (nullptr: no mask); `rm` (B, u) the recurrent dropout mask (nullptr: none). Masks
// follow the generic op: the forward selects the carried state, the backward multiplies
// by the mask and by 1 - mask (so NaN and inf propagate as there).
//
// Backward steps begin by assembling the state gradient `dh` of the step from what the
// previous (later) step left: `dh` holds that step's product with U^T (`first`: the
// incoming gradient as it is), and, as the generic op does,
//   dh = direct + (raw + extra) * rm + keep_h, then dh += d_seq[t]
// where `direct` (GRU: dh * z), `extra` (GRU without reset_after: drh * r) and `keep_h`
// (masked steps: the part of dh carried past the step) were written by that step.
#include "gate_math.h"
#include "parallel.h"

DLX_EXPORT_CONNECT

namespace dlx_cpu {

// The state gradient entering a backward step, in place over one row of n entries (see the
// file comment); null pointers: terms that do not occur. Loops of their own: inside the gate
// loops these loop-invariant branches stop GCC's vectorizer.
template <typename T>
void assemble(T* dh, bool first, const T* extra, const T* rm, const T* direct,
              const T* keep_h, const T* dseq, index_t n) {
    if (!first) {
        if (extra) {
#pragma omp simd
            for (index_t j = 0; j < n; ++j) dh[j] = dh[j] + extra[j];
        }
        if (rm) {
#pragma omp simd
            for (index_t j = 0; j < n; ++j) dh[j] = dh[j] * rm[j];
        }
        if (direct) {
#pragma omp simd
            for (index_t j = 0; j < n; ++j) dh[j] = direct[j] + dh[j];
        }
        if (keep_h) {
#pragma omp simd
            for (index_t j = 0; j < n; ++j) dh[j] = dh[j] + keep_h[j];
        }
    }
    if (dseq) {
#pragma omp simd
        for (index_t j = 0; j < n; ++j) dh[j] = dh[j] + dseq[j];
    }
}

// The gradient of the initial state after the last backward step (n = B * u entries).
template <typename T>
void finish_dh(T* dh, const T* extra, const T* rm, const T* direct, const T* keep_h,
               index_t n) {
    assemble<T>(dh, false, extra, rm, direct, keep_h, nullptr, n);
}

// Elementwise gate functions (tests compare them with NumPy's).
template <typename T>
void sigmoid(const T* x, T* y, index_t n) {
#pragma omp simd
    for (index_t j = 0; j < n; ++j) y[j] = gate::sigmoid(x[j]);
}

template <typename T>
void tanh(const T* x, T* y, index_t n) {
#pragma omp simd
    for (index_t j = 0; j < n; ++j) y[j] = gate::tanh(x[j]);
}

// ---------------------------------------------------------------------------------------
// LSTM

// gates (B, 4u): in, hd @ U; out, the activated gates i, f, g, o. x: the step's xproj rows
// (B, 4u). Writes c = f*c_prev + i*g, tc = tanh(c) (unmasked: backward needs them), and h,
// c masked; hd_next = h * rm when rm is given.
template <typename T>
void lstm_forward_step(T* gates, const T* x, const T* h_prev, const T* c_prev, T* h, T* c,
                       T* tc, const T* keep, const T* rm, T* hd_next, index_t B, index_t u) {
    for (index_t b = 0; b < B; ++b) {
        T* g = gates + b * 4 * u;
        const T* xb = x + b * 4 * u;
        const index_t s = b * u;
        const T km = keep ? keep[b] : T(1);  // a float (a bool here stops vectorization)
#pragma omp simd
        for (index_t j = 0; j < u; ++j) {
            const T i = gate::sigmoid(xb[j] + g[j]);
            const T f = gate::sigmoid(xb[u + j] + g[u + j]);
            const T gg = gate::tanh(xb[2 * u + j] + g[2 * u + j]);
            const T o = gate::sigmoid(xb[3 * u + j] + g[3 * u + j]);
            g[j] = i;
            g[u + j] = f;
            g[2 * u + j] = gg;
            g[3 * u + j] = o;
            const T cn = f * c_prev[s + j] + i * gg;
            const T t = gate::tanh(cn);
            tc[s + j] = t;
            const T hn = o * t;
            h[s + j] = km != T(0) ? hn : h_prev[s + j];
            c[s + j] = km != T(0) ? cn : c_prev[s + j];
        }
        if (rm) {
#pragma omp simd
            for (index_t j = 0; j < u; ++j) hd_next[s + j] = h[s + j] * rm[j + s];
        }
    }
}

// dh (B, u): in, the previous step's product (see assemble). dc (B, u): in/out, the cell
// gradient. keep_h (B, u): in/out when keep is given. gates, c_prev, tc: the step's saved
// values. dz (B, 4u): out, the gradient of the pre-activations (= of xproj's rows).
template <typename T, bool masked>
inline void lstm_backward_row(T* dh, bool first, const T* dseq, const T* rm, T* keep_h, T* dc,
                              const T* g, const T* c_prev, const T* tc, T m, T* d, index_t u) {
    assemble<T>(dh, first, nullptr, rm, nullptr, keep_h, dseq, u);
#pragma omp simd
    for (index_t j = 0; j < u; ++j) {
        T dhj = dh[j];
        T dcj = dc[j];
        T kc = T(0);
        if (masked) {
            keep_h[j] = dhj * (T(1) - m);
            kc = dcj * (T(1) - m);
            dhj = dhj * m;
            dcj = dcj * m;
        }
        const T i = g[j], f = g[u + j], gg = g[2 * u + j], o = g[3 * u + j];
        const T t = tc[j];
        dcj = dcj + dhj * o * (T(1) - t * t);
        d[j] = dcj * gg * (i * (T(1) - i));
        d[u + j] = dcj * c_prev[j] * (f * (T(1) - f));
        d[2 * u + j] = dcj * i * (T(1) - gg * gg);
        d[3 * u + j] = dhj * t * (o * (T(1) - o));
        dcj = dcj * f;
        dc[j] = masked ? dcj + kc : dcj;
    }
}

// dh (B, u): in, the previous step's product (see assemble). dc (B, u): in/out, the cell
// gradient. keep_h (B, u): in/out when keep is given. gates, c_prev, tc: the step's saved
// values. dz (B, 4u): out, the gradient of the pre-activations (= of xproj's rows).
template <typename T>
void lstm_backward_step(T* dh, bool first, const T* dseq, const T* rm, T* keep_h, T* dc,
                        const T* gates, const T* c_prev, const T* tc, const T* keep, T* dz,
                        index_t B, index_t u) {
    for (index_t b = 0; b < B; ++b) {
        const index_t s = b * u;
        const T* r = rm ? rm + s : nullptr;
        const T* q = dseq ? dseq + s : nullptr;
        if (keep) {
            lstm_backward_row<T, true>(dh + s, first, q, r, keep_h + s, dc + s,
                                       gates + b * 4 * u, c_prev + s, tc + s, keep[b],
                                       dz + b * 4 * u, u);
        } else {
            lstm_backward_row<T, false>(dh + s, first, q, r, nullptr, dc + s, gates + b * 4 * u,
                                        c_prev + s, tc + s, T(1), dz + b * 4 * u, u);
        }
    }
}

// ---------------------------------------------------------------------------------------
// GRU

// reset_after: inner (B, 3u): in, hd @ U; out, z, r and ih = (hd @ U)_h + b_h. rbias (3u)
// or null. hh (B, u): out, the candidate.
template <typename T>
void gru_forward_step(T* inner, const T* x, const T* rbias, const T* h_prev, T* hh, T* h,
                      const T* keep, const T* rm, T* hd_next, index_t B, index_t u) {
    for (index_t b = 0; b < B; ++b) {
        T* a = inner + b * 3 * u;
        const T* xb = x + b * 3 * u;
        const index_t s = b * u;
        const T km = keep ? keep[b] : T(1);  // a float (a bool here stops vectorization)
#pragma omp simd
        for (index_t j = 0; j < u; ++j) {
            T iz = a[j], ir = a[u + j], ih = a[2 * u + j];
            if (rbias) {
                iz = iz + rbias[j];
                ir = ir + rbias[u + j];
                ih = ih + rbias[2 * u + j];
            }
            const T z = gate::sigmoid(xb[j] + iz);
            const T r = gate::sigmoid(xb[u + j] + ir);
            const T c = gate::tanh(xb[2 * u + j] + r * ih);
            a[j] = z;
            a[u + j] = r;
            a[2 * u + j] = ih;
            hh[s + j] = c;
            const T hn = z * h_prev[s + j] + (T(1) - z) * c;
            h[s + j] = km != T(0) ? hn : h_prev[s + j];
        }
        if (rm) {
#pragma omp simd
            for (index_t j = 0; j < u; ++j) hd_next[s + j] = h[s + j] * rm[j + s];
        }
    }
}

// Without reset_after, first half: zr (B, 2u): in, hd @ U[:, :2u]; out, z, r. rh (B, u):
// out, r * hd (the left factor of the candidate's product).
template <typename T>
void gru_gates_step(T* zr, const T* x, const T* hd, T* rh, index_t B, index_t u) {
    for (index_t b = 0; b < B; ++b) {
        T* a = zr + b * 2 * u;
        const T* xb = x + b * 3 * u;
        const index_t s = b * u;
#pragma omp simd
        for (index_t j = 0; j < u; ++j) {
            const T z = gate::sigmoid(xb[j] + a[j]);
            const T r = gate::sigmoid(xb[u + j] + a[u + j]);
            a[j] = z;
            a[u + j] = r;
            rh[s + j] = r * hd[s + j];
        }
    }
}

// Without reset_after, second half: hh (B, u): in, (r * hd) @ U[:, 2u:]; out, the candidate.
template <typename T>
void gru_candidate_step(T* hh, const T* x, const T* zr, const T* h_prev, T* h, const T* keep,
                        const T* rm, T* hd_next, index_t B, index_t u) {
    for (index_t b = 0; b < B; ++b) {
        const T* a = zr + b * 2 * u;
        const T* xb = x + b * 3 * u;
        const index_t s = b * u;
        const T km = keep ? keep[b] : T(1);  // a float (a bool here stops vectorization)
#pragma omp simd
        for (index_t j = 0; j < u; ++j) {
            const T c = gate::tanh(xb[2 * u + j] + hh[s + j]);
            hh[s + j] = c;
            const T z = a[j];
            const T hn = z * h_prev[s + j] + (T(1) - z) * c;
            h[s + j] = km != T(0) ? hn : h_prev[s + j];
        }
        if (rm) {
#pragma omp simd
            for (index_t j = 0; j < u; ++j) hd_next[s + j] = h[s + j] * rm[j + s];
        }
    }
}

template <typename T, bool masked, bool after>
inline void gru_backward_row(T* dh, bool first, const T* dseq, const T* rm, T* keep_h,
                             T* direct, const T* extra, const T* a, const T* h_prev,
                             const T* hh, T m, T* d, T* dx, index_t u) {
    assemble<T>(dh, first, extra, rm, direct, keep_h, dseq, u);
#pragma omp simd
    for (index_t j = 0; j < u; ++j) {
        T dhj = dh[j];
        if (masked) {
            keep_h[j] = dhj * (T(1) - m);
            dhj = dhj * m;
        }
        const T z = a[j];
        const T c = hh[j];
        const T daz = dhj * (h_prev[j] - c) * (z * (T(1) - z));
        const T dah = dhj * (T(1) - z) * (T(1) - c * c);
        direct[j] = dhj * z;
        d[j] = daz;
        if (after) {
            const T r = a[u + j];
            const T dar = dah * a[2 * u + j] * (r * (T(1) - r));
            d[u + j] = dar;
            d[2 * u + j] = dah * r;
            dx[j] = daz;
            dx[u + j] = dar;
            dx[2 * u + j] = dah;
        } else {
            d[2 * u + j] = dah;
        }
    }
}

// Backward, first part (both variants). a (B, S): the step's saved z, r (and ih with
// reset_after, S = 3u; S = 2u without). Writes into di (B, 3u) daz, and with reset_after
// also dar and dah * r (what multiplies U^T), else dah in the last block; dx (B, 3u), with
// reset_after only: daz, dar, dah. direct (B, u): in, the previous step's dh * z; out, this
// step's. extra: the previous step's drh * r (GRU without reset_after; else null).
template <typename T>
void gru_backward_step(T* dh, bool first, const T* dseq, const T* rm, T* keep_h,
                       T* direct, const T* extra, const T* a, index_t S, const T* h_prev,
                       const T* hh, const T* keep, T* di, T* dx, index_t B, index_t u) {
    const bool after = S == 3 * u;
    for (index_t b = 0; b < B; ++b) {
        const index_t s = b * u;
        const T* r = rm ? rm + s : nullptr;
        const T* q = dseq ? dseq + s : nullptr;
        const T* e = extra ? extra + s : nullptr;
        T* kh = keep ? keep_h + s : nullptr;
        const T m = keep ? keep[b] : T(1);
        T* d = di + b * 3 * u;
        const T* ab = a + b * S;
        if (after) {
            T* x = dx + b * 3 * u;
            if (keep)
                gru_backward_row<T, true, true>(dh + s, first, q, r, kh, direct + s, e, ab,
                                                h_prev + s, hh + s, m, d, x, u);
            else
                gru_backward_row<T, false, true>(dh + s, first, q, r, kh, direct + s, e, ab,
                                                 h_prev + s, hh + s, m, d, x, u);
        } else {
            if (keep)
                gru_backward_row<T, true, false>(dh + s, first, q, r, kh, direct + s, e, ab,
                                                 h_prev + s, hh + s, m, d, nullptr, u);
            else
                gru_backward_row<T, false, false>(dh + s, first, q, r, kh, direct + s, e, ab,
                                                  h_prev + s, hh + s, m, d, nullptr, u);
        }
    }
}

// Without reset_after, second part: drh (B, u) = dah @ U[:, 2u:]^T; writes dar into di's
// middle block and extra = drh * r.
template <typename T>
void gru_reset_step(const T* drh, const T* zr, const T* hd, T* di, T* extra, index_t B,
                    index_t u) {
    for (index_t b = 0; b < B; ++b) {
        const T* a = zr + b * 2 * u;
        T* d = di + b * 3 * u;
        const index_t s = b * u;
#pragma omp simd
        for (index_t j = 0; j < u; ++j) {
            const T r = a[u + j];
            d[u + j] = drh[s + j] * hd[s + j] * (r * (T(1) - r));
            extra[s + j] = drh[s + j] * r;
        }
    }
}

// ---------------------------------------------------------------------------------------
// SimpleRNN (tanh)

// a (B, u): in, hd @ U; out, tanh(x + hd @ U).
template <typename T>
void rnn_forward_step(T* a, const T* x, const T* h_prev, T* h, const T* keep, const T* rm,
                      T* hd_next, index_t B, index_t u) {
    for (index_t b = 0; b < B; ++b) {
        const index_t s = b * u;
        const T km = keep ? keep[b] : T(1);  // a float (a bool here stops vectorization)
#pragma omp simd
        for (index_t j = 0; j < u; ++j) {
            const T y = gate::tanh(x[s + j] + a[s + j]);
            a[s + j] = y;
            h[s + j] = km != T(0) ? y : h_prev[s + j];
        }
        if (rm) {
#pragma omp simd
            for (index_t j = 0; j < u; ++j) hd_next[s + j] = h[s + j] * rm[j + s];
        }
    }
}

template <typename T>
void rnn_backward_step(T* dh, bool first, const T* dseq, const T* rm, T* keep_h,
                       const T* a, const T* keep, T* da, index_t B, index_t u) {
    for (index_t b = 0; b < B; ++b) {
        const index_t s = b * u;
        const T m = keep ? keep[b] : T(1);
        const T* r = rm ? rm + s : nullptr;
        const T* q = dseq ? dseq + s : nullptr;
        assemble<T>(dh + s, first, nullptr, r, nullptr, keep ? keep_h + s : nullptr, q, u);
#pragma omp simd
        for (index_t j = 0; j < u; ++j) {
            T dhj = dh[s + j];
            if (keep) {
                keep_h[s + j] = dhj * (T(1) - m);
                dhj = dhj * m;
            }
            const T y = a[s + j];
            da[s + j] = dhj * (T(1) - y * y);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Whole loops, the products through the BLAS's cblas_?gemm whose address the caller passes
// (NumPy's own OpenBLAS, ILP64: the products are the ones np.matmul computes; no Python
// between the steps).
//
// The rows of a batch are independent through a whole sequence, so each loop is split over
// dlx's pool by batch rows: a part runs every step of its rows (products of M = its rows),
// with no synchronisation between steps. cblas_?gemm computes each row of a product alike
// for any number of rows (NumPy's matmul would not: it sends a one-row product to gemv),
// so results do not depend on the number of threads. The products over all steps and rows
// (weight gradients) follow as one product split over the pool (parallel.h gemm).

// C (M, N; rows N apart) = A (M, K; rows lda apart, default K) @ B (K, N), B C-contiguous
template <typename T>
inline void step_gemm(void* f, index_t M, index_t N, index_t K, const T* A, const T* B, T* C,
                      index_t lda = 0) {
    gemm_in_line<T>(f, false, false, M, N, K, T(1), A, lda ? lda : K, B, N, T(0), C, N);
}

// Multiply-adds that make a part worth handing to another thread (a few microseconds).
constexpr index_t kPartWork = index_t(1) << 18;

// body(b0, b1) over the rows [0, B) of a loop of ``steps`` (rows, K) @ (K, N) products, in
// parts of at least kPartWork multiply-adds and two rows; OpenBLAS on one thread (two
// threads call it at once).
template <typename Body>
void over_rows(index_t B, index_t steps, index_t K, index_t N, const Body& body) {
    const index_t per_row = steps * K * N > 0 ? steps * K * N : 1;
    const index_t grain = kPartWork / per_row > 2 ? kPartWork / per_row : 2;
    OneBlasThread one_thread;
    parallel_for(B, grain, body);
}

// Column sums of D (M, N; rows ldd apart) into out (N), row after row (the order of NumPy's
// sum over axis 0), split over the pool by columns.
template <typename T>
void column_sums(index_t M, index_t N, const T* D, index_t ldd, T* out) {
    constexpr index_t unit = 16;
    const index_t blocks = (N + unit - 1) / unit;
    parallel_for(blocks, M * N >= (index_t(1) << 15) ? 1 : blocks, [&](index_t begin, index_t end) {
        const index_t j0 = begin * unit, j1 = end * unit < N ? end * unit : N;
        for (index_t j = j0; j < j1; ++j) out[j] = T(0);
        for (index_t i = 0; i < M; ++i) {
            const T* row = D + i * ldd;
#pragma omp simd
            for (index_t j = j0; j < j1; ++j) out[j] += row[j];
        }
    });
}

// The recurrent-kernel gradient dU (u, N; rows ldu apart) = Hd^T @ D: Hd (M, u) the
// recurrent inputs of all steps, D (M, N; rows ldd apart) what multiplied U, M = steps * B.
template <typename T>
inline void weight_gradient(void* f, index_t M, index_t u, index_t N, const T* Hd, const T* D,
                            index_t ldd, T* dU, index_t ldu) {
    gemm<T>(true, false, u, N, M, T(1), Hd, u, D, ldd, T(0), dU, ldu, f);
}

// The forward loop over `steps` steps: x the first processed step's xproj rows, x_step the
// distance to the next (negative for go_backwards); U (u, 4u); H, C (steps + 1, B, u) with
// H[0], C[0] (and HD[0] with dropout) set; A (steps, B, 4u), TC (steps, B, u); keep
// (steps, B) or null; HD (steps + 1, B, u) or null (no dropout).
template <typename T>
void lstm_forward_loop(void* gemm_f, index_t steps, const T* x, index_t x_step, const T* U,
                       T* H, T* C, T* A, T* TC, const T* keep, const T* rm, T* HD, index_t B,
                       index_t u) {
    const index_t s = B * u, g = B * 4 * u;
    over_rows(B, steps, u, 4 * u, [&](index_t b0, index_t b1) {
        const index_t n = b1 - b0, r = b0 * u, q = b0 * 4 * u;
        for (index_t t = 0; t < steps; ++t) {
            step_gemm<T>(gemm_f, n, 4 * u, u, (HD ? HD : H) + t * s + r, U, A + t * g + q);
            lstm_forward_step<T>(A + t * g + q, x + t * x_step + q, H + t * s + r,
                                 C + t * s + r, H + (t + 1) * s + r, C + (t + 1) * s + r,
                                 TC + t * s + r, keep ? keep + t * B + b0 : nullptr,
                                 rm ? rm + r : nullptr, HD ? HD + (t + 1) * s + r : nullptr, n,
                                 u);
        }
    });
}

// The backward loop: dh, dc (B, u) the incoming state gradients, out the initial state's
// (unless !wants_state: then the last product is skipped and they are left half done);
// dseq (steps, B, u) or null; keep_h (B, u) scratch when keep is given; dZ (steps, B, 4u)
// out; UT (4u, u) = U^T, C-contiguous. dU (u, 4u) or null: out, the recurrent-kernel
// gradient sum_t Hd[t]^T dZ[t], Hd (steps, B, u) the recurrent inputs of the forward.
template <typename T>
void lstm_backward_loop(void* gemm_f, index_t steps, bool wants_state, const T* dseq,
                        const T* rm, T* keep_h, T* dh, T* dc, const T* A, const T* C,
                        const T* TC, const T* keep, T* dZ, const T* UT, const T* Hd, T* dU,
                        index_t B, index_t u) {
    const index_t s = B * u, g = B * 4 * u;
    over_rows(B, steps, 4 * u, u, [&](index_t b0, index_t b1) {
        const index_t n = b1 - b0, r = b0 * u, q = b0 * 4 * u;
        const T* rmr = rm ? rm + r : nullptr;
        T* kh = keep_h ? keep_h + r : nullptr;
        for (index_t t = steps - 1; t >= 0; --t) {
            lstm_backward_step<T>(dh + r, t == steps - 1, dseq ? dseq + t * s + r : nullptr, rmr,
                                  kh, dc + r, A + t * g + q, C + t * s + r, TC + t * s + r,
                                  keep ? keep + t * B + b0 : nullptr, dZ + t * g + q, n, u);
            if (t == 0 && !wants_state) return;
            step_gemm<T>(gemm_f, n, u, 4 * u, dZ + t * g + q, UT, dh + r);
        }
        finish_dh<T>(dh + r, nullptr, rmr, nullptr, keep ? kh : nullptr, n * u);
    });
    if (dU) weight_gradient<T>(gemm_f, steps * B, u, 4 * u, Hd, dZ, 4 * u, dU, 4 * u);
}


// GRU and SimpleRNN loops, as the LSTM's (buffers as in backends/cpu_rnn.py). GRU: U is
// (u, 3u) with reset_after, else Uzr (u, 2u) and Uh (u, u); A (steps, B, 3u or 2u), HH, RH
// (steps, B, u; RH without reset_after only).
template <typename T>
void gru_forward_loop(void* gemm_f, index_t steps, const T* x, index_t x_step, const T* U,
                      const T* Uh, const T* rbias, T* H, T* A, T* HH, T* RH, const T* keep,
                      const T* rm, T* HD, index_t B, index_t u) {
    const index_t s = B * u;
    const bool after = Uh == nullptr;
    const index_t S = after ? 3 * u : 2 * u;
    over_rows(B, steps, u, 3 * u, [&](index_t b0, index_t b1) {
        const index_t n = b1 - b0, r = b0 * u;
        const T* rmr = rm ? rm + r : nullptr;
        for (index_t t = 0; t < steps; ++t) {
            const T* hd = (HD ? HD : H) + t * s + r;
            T* a = A + t * B * S + b0 * S;
            const T* xt = x + t * x_step + b0 * 3 * u;
            const T* k = keep ? keep + t * B + b0 : nullptr;
            T* hd_next = HD ? HD + (t + 1) * s + r : nullptr;
            step_gemm<T>(gemm_f, n, S, u, hd, U, a);
            if (after) {
                gru_forward_step<T>(a, xt, rbias, H + t * s + r, HH + t * s + r,
                                    H + (t + 1) * s + r, k, rmr, hd_next, n, u);
            } else {
                gru_gates_step<T>(a, xt, hd, RH + t * s + r, n, u);
                step_gemm<T>(gemm_f, n, u, u, RH + t * s + r, Uh, HH + t * s + r);
                gru_candidate_step<T>(HH + t * s + r, xt, a, H + t * s + r, H + (t + 1) * s + r,
                                      k, rmr, hd_next, n, u);
            }
        }
    });
}

// dh (B, u): in, the incoming gradient; out, the initial state's. direct, extra, drh (B, u)
// and keep_h (with keep) scratch; DI (steps, B, 3u) and, with reset_after, DX (steps, B, 3u)
// out. UT: U^T (3u, u) with reset_after, else UzrT (2u, u) and UhT (u, u). dU (u, 3u) or
// null: out, the recurrent-kernel gradient (Hd^T DI; without reset_after Hd^T DI[:, :2u]
// and RH^T DI[:, 2u:]). drb (3u) or null: out, the recurrent-bias gradient (reset_after:
// the column sums of DI).
template <typename T>
void gru_backward_loop(void* gemm_f, index_t steps, const T* dseq, const T* rm, T* keep_h,
                       T* dh, T* direct, T* extra, T* drh, const T* A, const T* H, const T* HD,
                       const T* HH, const T* RH, const T* keep, T* DI, T* DX, const T* UT,
                       const T* UhT, T* dU, T* drb, index_t B, index_t u) {
    const index_t s = B * u, g = B * 3 * u;
    const bool after = UhT == nullptr;
    const index_t S = after ? 3 * u : 2 * u;
    over_rows(B, steps, 3 * u, u, [&](index_t b0, index_t b1) {
        const index_t n = b1 - b0, r = b0 * u, q = b0 * 3 * u;
        const T* rmr = rm ? rm + r : nullptr;
        T* kh = keep ? keep_h + r : nullptr;
        for (index_t t = steps - 1; t >= 0; --t) {
            const T* a = A + t * B * S + b0 * S;
            T* di = DI + t * g + q;
            gru_backward_step<T>(dh + r, t == steps - 1, dseq ? dseq + t * s + r : nullptr, rmr,
                                 kh, direct + r, after ? nullptr : extra + r, a, S,
                                 H + t * s + r, HH + t * s + r,
                                 keep ? keep + t * B + b0 : nullptr, di,
                                 after ? DX + t * g + q : nullptr, n, u);
            if (after) {
                step_gemm<T>(gemm_f, n, u, 3 * u, di, UT, dh + r);
            } else {
                step_gemm<T>(gemm_f, n, u, u, di + 2 * u, UhT, drh + r, 3 * u);
                gru_reset_step<T>(drh + r, a, (HD ? HD : H) + t * s + r, di, extra + r, n, u);
                step_gemm<T>(gemm_f, n, u, 2 * u, di, UT, dh + r, 3 * u);
            }
        }
        finish_dh<T>(dh + r, after ? nullptr : extra + r, rmr, direct + r, kh, n * u);
    });
    if (dU) {
        const T* Hd = HD ? HD : H;
        if (after) {
            weight_gradient<T>(gemm_f, steps * B, u, 3 * u, Hd, DI, 3 * u, dU, 3 * u);
        } else {
            weight_gradient<T>(gemm_f, steps * B, u, 2 * u, Hd, DI, 3 * u, dU, 3 * u);
            weight_gradient<T>(gemm_f, steps * B, u, u, RH, DI + 2 * u, 3 * u, dU + 2 * u,
                               3 * u);
        }
    }
    if (drb) column_sums<T>(steps * B, 3 * u, DI, 3 * u, drb);
}

template <typename T>
void rnn_forward_loop(void* gemm_f, index_t steps, const T* x, index_t x_step, const T* U,
                      T* H, T* A, const T* keep, const T* rm, T* HD, index_t B, index_t u) {
    const index_t s = B * u;
    over_rows(B, steps, u, u, [&](index_t b0, index_t b1) {
        const index_t n = b1 - b0, r = b0 * u;
        for (index_t t = 0; t < steps; ++t) {
            step_gemm<T>(gemm_f, n, u, u, (HD ? HD : H) + t * s + r, U, A + t * s + r);
            rnn_forward_step<T>(A + t * s + r, x + t * x_step + r, H + t * s + r,
                                H + (t + 1) * s + r, keep ? keep + t * B + b0 : nullptr,
                                rm ? rm + r : nullptr, HD ? HD + (t + 1) * s + r : nullptr, n,
                                u);
        }
    });
}

template <typename T>
void rnn_backward_loop(void* gemm_f, index_t steps, const T* dseq, const T* rm, T* keep_h,
                       T* dh, const T* A, const T* keep, T* dA, const T* UT, const T* Hd, T* dU,
                       index_t B, index_t u) {
    const index_t s = B * u;
    over_rows(B, steps, u, u, [&](index_t b0, index_t b1) {
        const index_t n = b1 - b0, r = b0 * u;
        const T* rmr = rm ? rm + r : nullptr;
        T* kh = keep_h ? keep_h + r : nullptr;
        for (index_t t = steps - 1; t >= 0; --t) {
            rnn_backward_step<T>(dh + r, t == steps - 1, dseq ? dseq + t * s + r : nullptr, rmr,
                                 kh, A + t * s + r, keep ? keep + t * B + b0 : nullptr,
                                 dA + t * s + r, n, u);
            step_gemm<T>(gemm_f, n, u, u, dA + t * s + r, UT, dh + r);
        }
        finish_dh<T>(dh + r, nullptr, rmr, nullptr, keep ? kh : nullptr, n * u);
    });
    if (dU) weight_gradient<T>(gemm_f, steps * B, u, u, Hd, dA, u, dU, u);
}

// ---------------------------------------------------------------------------------------
// The input projection of all steps (sequence_projection), time-major rows:
// forward y (M, N) = x (M, K) @ kernel (K, N) + bias, bias (N) or null; the product first,
// then the bias, as NumPy's kernel adds them. Split over the pool by blocks of rows, each
// part adding the bias to its block while it is in cache.
template <typename T>
void projection_forward(void* f, index_t M, index_t N, index_t K, const T* x, const T* kernel,
                        const T* bias, T* y) {
    constexpr index_t unit = 16;
    auto block = [&](index_t i0, index_t i1) {
        gemm_in_line<T>(f, false, false, i1 - i0, N, K, T(1), x + i0 * K, K, kernel, N, T(0),
                        y + i0 * N, N);
        if (bias) {
            for (index_t i = i0; i < i1; ++i) {
                T* row = y + i * N;
#pragma omp simd
                for (index_t j = 0; j < N; ++j) row[j] = row[j] + bias[j];
            }
        }
    };
    OneBlasThread one_thread;
    // whole blocks, the last part taking the rest
    const index_t blocks = M / unit > 1 ? M / unit : 1;
    const index_t grain = kPartWork / (unit * N * K > 0 ? unit * N * K : 1);
    parallel_for(blocks, grain > 1 ? grain : 1, [&](index_t begin, index_t end) {
        block(begin * unit, end == blocks ? M : end * unit);
    });
}

// backward, given g (M, N): dx (M, K) = g @ kernel^T, dk (K, N) = x^T @ g, db (N) the column
// sums of g; each may be null (not wanted).
template <typename T>
void projection_backward(void* f, index_t M, index_t N, index_t K, const T* g, const T* x,
                         const T* kernel, T* dx, T* dk, T* db) {
    if (db) column_sums<T>(M, N, g, N, db);
    if (dx) gemm<T>(false, true, M, K, N, T(1), g, N, kernel, N, T(0), dx, K, f);
    if (dk) gemm<T>(true, false, K, N, M, T(1), x, K, g, N, T(0), dk, N, f);
}

}  // namespace dlx_cpu

using dlx_cpu::index_t;

#define DLX_RECURRENT(T, suffix)                                                               \
    extern "C" void dlx_sigmoid_##suffix(const T* x, T* y, index_t n) {                        \
        dlx_cpu::sigmoid<T>(x, y, n);                                                          \
    }                                                                                          \
    extern "C" void dlx_tanh_##suffix(const T* x, T* y, index_t n) { dlx_cpu::tanh<T>(x, y, n); } \
    extern "C" void dlx_rnn_finish_dh_##suffix(T* dh, const T* extra, const T* rm,             \
                                               const T* direct, const T* keep_h, index_t n) {  \
        dlx_cpu::finish_dh<T>(dh, extra, rm, direct, keep_h, n);                               \
    }                                                                                          \
    extern "C" void dlx_lstm_forward_step_##suffix(                                            \
        T* gates, const T* x, const T* h_prev, const T* c_prev, T* h, T* c, T* tc,             \
        const T* keep, const T* rm, T* hd_next, index_t B, index_t u) {                        \
        dlx_cpu::lstm_forward_step<T>(gates, x, h_prev, c_prev, h, c, tc, keep, rm, hd_next,  \
                                      B, u);                                                   \
    }                                                                                          \
    extern "C" void dlx_lstm_backward_step_##suffix(                                           \
        T* dh, index_t first, const T* dseq, const T* rm, T* keep_h, T* dc,              \
        const T* gates, const T* c_prev, const T* tc, const T* keep, T* dz, index_t B,         \
        index_t u) {                                                                           \
        dlx_cpu::lstm_backward_step<T>(dh, first != 0, dseq, rm, keep_h, dc, gates, c_prev,   \
                                       tc, keep, dz, B, u);                                    \
    }                                                                                          \
    extern "C" void dlx_lstm_forward_loop_##suffix(                                            \
        void* gemm, index_t steps, const T* x, index_t x_step, const T* U, T* H, T* C, T* A,   \
        T* TC, const T* keep, const T* rm, T* HD, index_t B, index_t u) {                      \
        dlx_cpu::lstm_forward_loop<T>(gemm, steps, x, x_step, U, H, C, A, TC, keep, rm, HD, B, \
                                      u);                                                      \
    }                                                                                          \
    extern "C" void dlx_lstm_backward_loop_##suffix(                                           \
        void* gemm, index_t steps, index_t wants_state, const T* dseq, const T* rm, T* keep_h, \
        T* dh, T* dc, const T* A, const T* C, const T* TC, const T* keep, T* dZ, const T* UT,  \
        const T* Hd, T* dU, index_t B, index_t u) {                                            \
        dlx_cpu::lstm_backward_loop<T>(gemm, steps, wants_state != 0, dseq, rm, keep_h, dh, dc, \
                                       A, C, TC, keep, dZ, UT, Hd, dU, B, u);                  \
    }                                                                                          \
    extern "C" void dlx_gru_forward_loop_##suffix(                                             \
        void* gemm, index_t steps, const T* x, index_t x_step, const T* U, const T* Uh,        \
        const T* rbias, T* H, T* A, T* HH, T* RH, const T* keep, const T* rm, T* HD,           \
        index_t B, index_t u) {                                                                \
        dlx_cpu::gru_forward_loop<T>(gemm, steps, x, x_step, U, Uh, rbias, H, A, HH, RH, keep, \
                                     rm, HD, B, u);                                            \
    }                                                                                          \
    extern "C" void dlx_gru_backward_loop_##suffix(                                            \
        void* gemm, index_t steps, const T* dseq, const T* rm, T* keep_h, T* dh, T* direct,    \
        T* extra, T* drh, const T* A, const T* H, const T* HD, const T* HH, const T* RH,       \
        const T* keep, T* DI, T* DX, const T* UT, const T* UhT, T* dU, T* drb, index_t B,      \
        index_t u) {                                                                           \
        dlx_cpu::gru_backward_loop<T>(gemm, steps, dseq, rm, keep_h, dh, direct, extra, drh,  \
                                      A, H, HD, HH, RH, keep, DI, DX, UT, UhT, dU, drb, B, u); \
    }                                                                                          \
    extern "C" void dlx_rnn_forward_loop_##suffix(void* gemm, index_t steps, const T* x,       \
                                                  index_t x_step, const T* U, T* H, T* A,      \
                                                  const T* keep, const T* rm, T* HD,           \
                                                  index_t B, index_t u) {                      \
        dlx_cpu::rnn_forward_loop<T>(gemm, steps, x, x_step, U, H, A, keep, rm, HD, B, u);     \
    }                                                                                          \
    extern "C" void dlx_rnn_backward_loop_##suffix(                                            \
        void* gemm, index_t steps, const T* dseq, const T* rm, T* keep_h, T* dh, const T* A,   \
        const T* keep, T* dA, const T* UT, const T* Hd, T* dU, index_t B, index_t u) {         \
        dlx_cpu::rnn_backward_loop<T>(gemm, steps, dseq, rm, keep_h, dh, A, keep, dA, UT, Hd,  \
                                      dU, B, u);                                               \
    }                                                                                          \
    extern "C" void dlx_rnn_projection_forward_##suffix(void* gemm, index_t M, index_t N,      \
                                                        index_t K, const T* x,                 \
                                                        const T* kernel, const T* bias, T* y) { \
        dlx_cpu::projection_forward<T>(gemm, M, N, K, x, kernel, bias, y);                     \
    }                                                                                          \
    extern "C" void dlx_rnn_projection_backward_##suffix(void* gemm, index_t M, index_t N,     \
                                                         index_t K, const T* g, const T* x,    \
                                                         const T* kernel, T* dx, T* dk,        \
                                                         T* db) {                              \
        dlx_cpu::projection_backward<T>(gemm, M, N, K, g, x, kernel, dx, dk, db);              \
    }                                                                                          \
    extern "C" void dlx_gru_forward_step_##suffix(T* inner, const T* x, const T* rbias,        \
                                                  const T* h_prev, T* hh, T* h, const T* keep, \
                                                  const T* rm, T* hd_next, index_t B,          \
                                                  index_t u) {                                 \
        dlx_cpu::gru_forward_step<T>(inner, x, rbias, h_prev, hh, h, keep, rm, hd_next, B, u); \
    }                                                                                          \
    extern "C" void dlx_gru_gates_step_##suffix(T* zr, const T* x, const T* hd, T* rh,         \
                                                index_t B, index_t u) {                        \
        dlx_cpu::gru_gates_step<T>(zr, x, hd, rh, B, u);                                       \
    }                                                                                          \
    extern "C" void dlx_gru_candidate_step_##suffix(T* hh, const T* x, const T* zr,            \
                                                    const T* h_prev, T* h, const T* keep,      \
                                                    const T* rm, T* hd_next, index_t B,        \
                                                    index_t u) {                               \
        dlx_cpu::gru_candidate_step<T>(hh, x, zr, h_prev, h, keep, rm, hd_next, B, u);         \
    }                                                                                          \
    extern "C" void dlx_gru_backward_step_##suffix(                                            \
        T* dh, index_t first, const T* dseq, const T* rm, T* keep_h, T* direct,          \
        const T* extra, const T* a, index_t S, const T* h_prev, const T* hh, const T* keep,    \
        T* di, T* dx, index_t B, index_t u) {                                                  \
        dlx_cpu::gru_backward_step<T>(dh, first != 0, dseq, rm, keep_h, direct, extra, a, S,  \
                                      h_prev, hh, keep, di, dx, B, u);                         \
    }                                                                                          \
    extern "C" void dlx_gru_reset_step_##suffix(const T* drh, const T* zr, const T* hd, T* di, \
                                                T* extra, index_t B, index_t u) {              \
        dlx_cpu::gru_reset_step<T>(drh, zr, hd, di, extra, B, u);                              \
    }                                                                                          \
    extern "C" void dlx_rnn_forward_step_##suffix(T* a, const T* x, const T* h_prev, T* h,     \
                                                  const T* keep, const T* rm, T* hd_next,      \
                                                  index_t B, index_t u) {                      \
        dlx_cpu::rnn_forward_step<T>(a, x, h_prev, h, keep, rm, hd_next, B, u);                \
    }                                                                                          \
    extern "C" void dlx_rnn_backward_step_##suffix(T* dh, index_t first, const T* dseq,  \
                                                   const T* rm, T* keep_h, const T* a,         \
                                                   const T* keep, T* da, index_t B,            \
                                                   index_t u) {                                \
        dlx_cpu::rnn_backward_step<T>(dh, first != 0, dseq, rm, keep_h, a, keep, da, B, u);    \
    }
DLX_RECURRENT(float, f32)
DLX_RECURRENT(double, f64)
#undef DLX_RECURRENT
