"""Compiled CPU kernels of the recurrent sequence ops (``backends/cpu/recurrent.cpp``).

The NumPy kernels (``numpy_rnn.py``) spend a time step on one small product
``hd @ U`` and a dozen ufunc calls over ``(B, G*u)`` arrays, one memory pass
each. Here everything but the product -- gate activations (vectorized float
sigmoid/tanh, ``cpu/gate_math.h``), the state update, masks, recurrent dropout,
and in the backward loop the assembly of the state gradient and the gate
gradients -- is one C++ pass per step. The products stay in OpenBLAS: each
forward or backward loop is one C++ call that calls NumPy's own OpenBLAS
``cblas_?gemm`` between the steps (:func:`blas_gemm` finds its address through
threadpoolctl), so no Python runs between steps; without that address the loops
run from Python, ``np.matmul`` and one C++ call per step.

The loops run on dlx's thread pool (``cpu/parallel.h``), split by batch rows: the
rows of a batch are independent through the whole sequence, so each thread runs
every step of its rows with no synchronisation between steps (and a row's
arithmetic, hence every result, is the same for any number of threads). The
recurrent-kernel gradient ``sum_t hd_t^T dZ_t`` follows in the same C++ call as
one product over all steps, split over the pool by columns, and the input
projection (``sequence_projection``: its product, bias and gradients) is split
over the pool too.

Buffers (time-major, in processing order, i.e. reversed for ``go_backwards``):
``H (T+1, B, u)`` the states (``H[0] = h0``), ``HD (T+1, B, u)`` the states
times the recurrent dropout mask (only with one), and per cell

- LSTM: ``A (T, B, 4u)`` the activated gates ``i, f, g, o`` (Keras order: the
  product ``hd @ U`` is written there and activated in place), ``C (T+1, B, u)``
  the cells, ``TC (T, B, u)`` ``tanh`` of the unmasked new cell;
- GRU ``reset_after``: ``A (T, B, 3u)`` ``z, r`` and ``ih = (hd @ U)_h + b_h``,
  ``HH (T, B, u)`` the candidate; without ``reset_after``: ``A (T, B, 2u)`` ``z,
  r``, ``RH (T, B, u)`` ``r * hd`` and ``HH``;
- SimpleRNN: ``A (T, B, u)`` the ``tanh`` outputs.

The Python step loops sum the recurrent-kernel gradient in chunks of steps,
beside the loop on the worker thread when ``USE_WORKER`` is set (off by default).
What is not handled here
(other activations or dtypes, array types other than ``np.ndarray``, non-contiguous
``xproj``, no compiler) runs the NumPy kernel (``super()``).
"""

import ctypes

import numpy as np

from .blas_threads import openblas_symbol
from .buffer_pool import pooled
from .host_arrays import address as p
from .host_arrays import plain
from .numpy_rnn import (
    GRUSequence,
    LSTMSequence,
    RNNSequence,
    SequenceProjection,
    _copy,
    _finish_dx,
    _KernelGradient,
    _loop_blas,
    _loop_worker,
    _supported,
)

_P = ctypes.c_void_p
_I = ctypes.c_int64
_SOURCE = "recurrent"

# argument types of the exported functions (recurrent.cpp)
_SIGNATURES = {
    "sigmoid": (_P, _P, _I),
    "tanh": (_P, _P, _I),
    "rnn_finish_dh": (_P, _P, _P, _P, _P, _I),
    "lstm_forward_step": (_P,) * 10 + (_I, _I),
    "lstm_backward_step": (_P, _I) + (_P,) * 9 + (_I, _I),
    "gru_forward_step": (_P,) * 9 + (_I, _I),
    "gru_gates_step": (_P,) * 4 + (_I, _I),
    "gru_candidate_step": (_P,) * 8 + (_I, _I),
    "gru_backward_step": (_P, _I) + (_P,) * 6 + (_I,) + (_P,) * 5 + (_I, _I),
    "gru_reset_step": (_P,) * 5 + (_I, _I),
    "rnn_forward_step": (_P,) * 7 + (_I, _I),
    "rnn_backward_step": (_P, _I) + (_P,) * 6 + (_I, _I),
    "lstm_forward_loop": (_P, _I, _P, _I) + (_P,) * 8 + (_I, _I),
    "lstm_backward_loop": (_P, _I, _I) + (_P,) * 13 + (_I, _I),
    "gru_forward_loop": (_P, _I, _P, _I) + (_P,) * 10 + (_I, _I),
    "gru_backward_loop": (_P, _I) + (_P,) * 19 + (_I, _I),
    "rnn_forward_loop": (_P, _I, _P, _I) + (_P,) * 6 + (_I, _I),
    "rnn_backward_loop": (_P, _I) + (_P,) * 10 + (_I, _I),
    "rnn_projection_forward": (_P, _I, _I, _I) + (_P,) * 4,
    "rnn_projection_backward": (_P, _I, _I, _I) + (_P,) * 6,
}


def blas_gemm(dtype):
    """The address of ``cblas_sgemm``/``cblas_dgemm`` (64-bit integers) of the OpenBLAS that
    NumPy uses, or None (then the loops run step by step from Python)."""
    dtype = np.dtype(dtype)
    letter = "s" if dtype == np.float32 else "d" if dtype == np.float64 else None
    return openblas_symbol(f"cblas_{letter}gemm") if letter else None


def function(name, dtype):
    """``dlx_<name>_<f32|f64>`` of ``recurrent.cpp``, or None (then fall back)."""
    from . import cpu_kernels  # not at the top: cpu_kernels imports this module

    return cpu_kernels.compiled(_SOURCE, name, dtype, *_SIGNATURES[name])


def _with_gemm(name, dtype):
    """``(function(name), blas_gemm)`` for a compiled loop, or ``(None, None)`` (then the loop
    runs step by step from Python, or the NumPy kernel runs)."""
    f, gemm = function(name, dtype), blas_gemm(dtype)
    return (f, gemm) if f is not None and gemm is not None else (None, None)


def _opt(array):
    """The address of ``array``, or None."""
    return None if array is None else p(array)


def gate_function(name, x):
    """``sigmoid``/``tanh`` of a float32/float64 array through the compiled gate math (tests);
    None without the library."""
    x = np.ascontiguousarray(x)
    f = function(name, x.dtype)
    if f is None:
        return None
    y = np.empty_like(x)
    f(p(x), p(y), x.size)
    return y


class _Rows:
    """Addresses of the ``(B, width)`` rows of a C-contiguous ``(n, B, width)`` buffer."""

    __slots__ = ("base", "stride")

    def __init__(self, array):
        self.base = p(array)
        self.stride = array.strides[0]

    def __getitem__(self, t):
        return self.base + t * self.stride


def _compiled_inputs(spec, xproj, U, states, need_sigmoid=True):
    """Whether the compiled step functions take this call (else the NumPy kernel runs)."""
    if not _supported(spec, xproj, need_sigmoid) or xproj.shape[0] == 0:
        return False
    dt = xproj.dtype
    if not plain(dt, xproj) or not isinstance(U, np.ndarray) or U.dtype != dt:
        return False  # U only enters the products, in any layout
    return all(isinstance(s, np.ndarray) for s in states if s is not None)


def _masks(spec, dt, B):
    """(keep (T, B) of 0/1 in processing order, recurrent mask (B, u)) as C-contiguous
    arrays of ``dt``, or Nones."""
    keep = None
    if spec.mask is not None:
        mask = np.asarray(spec.mask).T
        if spec.go_backwards:
            mask = mask[::-1]
        keep = np.ascontiguousarray(mask, dtype=dt)
    rm = spec.recurrent_mask
    if rm is not None:
        rm = np.ascontiguousarray(rm, dtype=dt)
    return keep, rm


def _time_rows(spec, xproj):
    """Rows of ``xproj`` in processing order: ``rows[t]`` is the address of step ``t``'s rows."""
    rows = _Rows(xproj)
    if spec.go_backwards:
        rows.base += (xproj.shape[0] - 1) * rows.stride
        rows.stride = -rows.stride
    return rows


def _state(value, shape, dt):
    out = np.empty(shape, dt)
    np.copyto(out, value, casting="unsafe")
    return out


class _Saved:
    """What the compiled loops keep for backward."""

    __slots__ = ("H", "HD", "C", "A", "TC", "HH", "RH", "U", "keep", "rm", "rbias")


# Whether the Python step loops (no BLAS address) sum the recurrent-kernel gradient on the
# worker thread beside the loop, as the NumPy kernels do. Off: on the 2-core machine
# lstm_train measured 10.3 ms without the worker and 12.7 ms with it, idle (2026-12-02), and
# 3-5% slower with it under load -- OpenBLAS's own second thread already holds the other
# core. Results are the same either way: the chunks are summed in the same order. The
# compiled loops use dlx's thread pool instead.
USE_WORKER = False


def _worker(T, B, u, G):
    return _loop_worker(T, B, u, G) if USE_WORKER else None


def _c(a):
    """``a`` C-contiguous: the per-step products run 15-20% faster with a C-contiguous right
    operand (a layer's recurrent kernel is often a transposed view), for one copy per call."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _recurrent_inputs(s):
    """``hd`` of every step (T, B, u): the states times the dropout mask when there is one."""
    T = s.A.shape[0]
    return s.HD[:T] if s.HD is not None else s.H[:T]


def _gradient_input(d, T, B, u, dt):
    """The incoming sequence gradient as a C-contiguous ``(T, B, u)`` array of ``dt``, or None."""
    if d is None:
        return None
    if plain(dt, d) and d.shape == (T, B, u):
        return d
    return _state(d, (T, B, u), dt)


def _state_buffers(T, B, u, dt, h0, rm):
    """``(H, HD, Hd)`` of a forward loop: the states ``H (T+1, B, u)`` from ``h0``; with a
    recurrent dropout mask ``rm`` also ``HD``, the states times it (else None); ``Hd`` the
    one the products read."""
    H = pooled((T + 1, B, u), dt)
    np.copyto(H[0], h0, casting="unsafe")
    if rm is None:
        return H, None, H
    HD = pooled((T + 1, B, u), dt)
    np.multiply(H[0], rm, out=HD[0])
    return H, HD, HD


class _CompiledBackward:
    """The backward of the compiled sequence classes: their own saved state goes through the
    compiled loop, a saved state of the NumPy forward (it fell back) through the NumPy class."""

    def backward(self, spec, s, d_seq, d_h, d_c, needs):
        if not isinstance(s, _Saved):
            return super().backward(spec, s, d_seq, d_h, d_c, needs)
        return self._compiled_backward(spec, s, d_seq, d_h, d_c, needs)


def _outputs(spec, H, *cell):
    """``(H[1:] if return_sequences, the last state, *cell)``; ``H (T+1, B, u)`` the states."""
    last = (H[-1],) + cell
    return (H[1:],) + last if spec.return_sequences else last


class CompiledLSTMSequence(_CompiledBackward, LSTMSequence):
    """``lstm_sequence`` with the gate math of each step compiled (see the module docstring)."""

    def forward(self, spec, xproj, U, rbias, h0, c0):
        if not _compiled_inputs(spec, xproj, U, (h0, c0)):
            return super().forward(spec, xproj, U, rbias, h0, c0)
        step = function("lstm_forward_step", xproj.dtype)
        if step is None or function("lstm_backward_step", xproj.dtype) is None:
            return super().forward(spec, xproj, U, rbias, h0, c0)
        return self._compiled_forward(step, spec, xproj, U, h0, c0)

    def _compiled_forward(self, step, spec, xproj, U, h0, c0):
        T, B, G = xproj.shape
        u = G // 4
        dt = xproj.dtype
        keep, rm = _masks(spec, dt, B)
        H, HD, Hd = _state_buffers(T, B, u, dt, h0, rm)
        C = pooled((T + 1, B, u), dt)
        np.copyto(C[0], c0, casting="unsafe")
        A = pooled((T, B, G), dt)
        TC = pooled((T, B, u), dt)
        Uc = _c(U)
        x, h, c, a, tc = _time_rows(spec, xproj), _Rows(H), _Rows(C), _Rows(A), _Rows(TC)
        hd = _Rows(HD) if HD is not None else None
        k = _Rows(keep) if keep is not None else None
        prm = _opt(rm)
        loop, gemm = _with_gemm("lstm_forward_loop", dt)
        if loop is not None:
            loop(
                gemm, T, x[0], x.stride // dt.itemsize, p(Uc), h[0], c[0], a[0], tc[0],
                k[0] if k is not None else None, prm, hd[0] if hd is not None else None, B, u,
            )  # fmt: skip
        else:
            with _loop_blas(B, u):
                for t in range(T):
                    np.matmul(Hd[t], Uc, out=A[t])
                    step(
                        a[t], x[t], h[t], c[t], h[t + 1], c[t + 1], tc[t],
                        k[t] if k is not None else None, prm,
                        hd[t + 1] if hd is not None else None, B, u,
                    )  # fmt: skip
        s = _Saved()
        s.H, s.HD, s.C, s.A, s.TC, s.U, s.keep, s.rm = H, HD, C, A, TC, U, keep, rm
        return _outputs(spec, H, C[T]), s

    def _compiled_backward(self, spec, s, d_seq, d_h, d_c, needs):
        A, U = s.A, s.U
        T, B, G = A.shape
        u = G // 4
        dt = A.dtype
        d_seq = _gradient_input(d_seq, T, B, u, dt)
        dh = _state(d_h, (B, u), dt)
        dc = _state(d_c, (B, u), dt)
        keep_h = np.empty((B, u), dt) if s.keep is not None else None
        dZ = pooled((T, B, G), dt)
        UT = _c(U.T)
        wants_state = needs[3] or needs[4]
        loop, gemm = _with_gemm("lstm_backward_loop", dt)
        if loop is None:
            with _loop_blas(B, u):
                dU = self._step_backward(s, d_seq, dh, dc, keep_h, dZ, UT, wants_state, needs)
        else:
            dU = np.empty((u, G), dt) if needs[1] else None
            loop(
                gemm, T, wants_state, _opt(d_seq), _opt(s.rm), _opt(keep_h), p(dh), p(dc),
                p(A), p(s.C), p(s.TC), _opt(s.keep), p(dZ), p(UT),
                p(_recurrent_inputs(s)), _opt(dU), B, u,
            )  # fmt: skip
        if not wants_state:  # the first layer's zero initial state
            return _finish_dx(spec, dZ), dU, None, None, None
        return _finish_dx(spec, dZ), dU, None, dh, dc

    def _step_backward(self, s, d_seq, dh, dc, keep_h, dZ, UT, wants_state, needs):
        """The loop from Python, a C++ call per step; returns the recurrent-kernel gradient."""
        T, B, G = dZ.shape
        u = G // 4
        step = function("lstm_backward_step", dZ.dtype)
        a, c, tc, dz = _Rows(s.A), _Rows(s.C), _Rows(s.TC), _Rows(dZ)
        q = _Rows(d_seq) if d_seq is not None else None
        k = _Rows(s.keep) if s.keep is not None else None
        prm, pdh, pdc, pkh = _opt(s.rm), p(dh), p(dc), _opt(keep_h)
        kernel_grad = _KernelGradient(_recurrent_inputs(s), dZ, needs[1], _worker(T, B, u, G))
        for t in range(T - 1, -1, -1):
            step(
                pdh, t == T - 1, q[t] if q is not None else None, prm, pkh, pdc,
                a[t], c[t], tc[t], k[t] if k is not None else None, dz[t], B, u,
            )  # fmt: skip
            if t == 0 and not wants_state:  # the first layer's zero initial state
                kernel_grad.step_done(t)
                return kernel_grad.result()
            np.matmul(dZ[t], UT, out=dh)
            kernel_grad.step_done(t)
        function("rnn_finish_dh", dZ.dtype)(pdh, None, prm, None, pkh, B * u)
        return kernel_grad.result()


class CompiledGRUSequence(_CompiledBackward, GRUSequence):
    """``gru_sequence`` (both ``reset_after`` variants) with the gate math of each step
    compiled (see the module docstring)."""

    def forward(self, spec, xproj, U, rbias, h0, c0):
        dt = xproj.dtype
        if not _compiled_inputs(spec, xproj, U, (h0,)) or (
            rbias is not None and not isinstance(rbias, np.ndarray)
        ):
            return super().forward(spec, xproj, U, rbias, h0, c0)
        names = (
            ("gru_forward_step",) if spec.reset_after else ("gru_gates_step", "gru_candidate_step")
        )
        steps = [function(n, dt) for n in names + ("gru_backward_step", "gru_reset_step")]
        if any(f is None for f in steps):
            return super().forward(spec, xproj, U, rbias, h0, c0)
        return self._compiled_forward(steps, spec, xproj, U, rbias, h0)

    def _compiled_forward(self, steps, spec, xproj, U, rbias, h0):
        T, B, G = xproj.shape
        u = G // 3
        dt = xproj.dtype
        after = spec.reset_after
        keep, rm = _masks(spec, dt, B)
        H, HD, Hd = _state_buffers(T, B, u, dt, h0, rm)
        A = pooled((T, B, G if after else 2 * u), dt)
        HH = pooled((T, B, u), dt)
        RH = None
        x, h, a, hh = _time_rows(spec, xproj), _Rows(H), _Rows(A), _Rows(HH)
        hd = _Rows(HD) if HD is not None else None
        k = _Rows(keep) if keep is not None else None
        prm = _opt(rm)
        rb = None
        if after and rbias is not None:
            rb = np.ascontiguousarray(rbias, dtype=dt).reshape(G)
        prb = _opt(rb)
        if after:
            Uc, U_h = _c(U), None
        else:
            Uc, U_h = _c(U[:, : 2 * u]), _c(U[:, 2 * u :])
            RH = pooled((T, B, u), dt)
        loop, gemm = _with_gemm("gru_forward_loop", dt)
        if loop is not None:
            loop(
                gemm, T, x[0], x.stride // dt.itemsize, p(Uc), _opt(U_h), prb, h[0], a[0],
                hh[0], _opt(RH), k[0] if k is not None else None, prm,
                hd[0] if hd is not None else None, B, u,
            )  # fmt: skip
        elif after:
            step = steps[0]
            with _loop_blas(B, u):
                for t in range(T):
                    np.matmul(Hd[t], Uc, out=A[t])
                    step(
                        a[t], x[t], prb, h[t], hh[t], h[t + 1],
                        k[t] if k is not None else None, prm,
                        hd[t + 1] if hd is not None else None, B, u,
                    )  # fmt: skip
        else:
            gates, candidate = steps[0], steps[1]
            rh, hdr = _Rows(RH), hd if hd is not None else h
            with _loop_blas(B, u):
                for t in range(T):
                    np.matmul(Hd[t], Uc, out=A[t])
                    gates(a[t], x[t], hdr[t], rh[t], B, u)
                    np.matmul(RH[t], U_h, out=HH[t])
                    candidate(
                        hh[t], x[t], a[t], h[t], h[t + 1], k[t] if k is not None else None,
                        prm, hd[t + 1] if hd is not None else None, B, u,
                    )  # fmt: skip
        s = _Saved()
        s.H, s.HD, s.A, s.HH, s.RH, s.U = H, HD, A, HH, RH, U
        s.keep, s.rm = keep, rm
        return _outputs(spec, H), s

    def _compiled_backward(self, spec, s, d_seq, d_h, d_c, needs):
        A, U = s.A, s.U
        T, B, S = A.shape
        u = U.shape[0]
        dt = A.dtype
        after = spec.reset_after
        d_seq = _gradient_input(d_seq, T, B, u, dt)
        dh = _state(d_h, (B, u), dt)
        direct = np.empty((B, u), dt)
        keep_h = np.empty((B, u), dt) if s.keep is not None else None
        DI = pooled((T, B, 3 * u), dt)  # what multiplies U^T (reset_after), else dz, dr, dah
        DX = pooled((T, B, 3 * u), dt) if after else DI
        loop, gemm = _with_gemm("gru_backward_loop", dt)
        if loop is None:
            with _loop_blas(B, u):
                return self._step_backward(spec, s, d_seq, dh, direct, keep_h, DI, DX, needs)
        if after:
            UT, UhT = _c(U.T), None
        else:
            UT, UhT = _c(U[:, : 2 * u].T), _c(U[:, 2 * u :].T)
        scratch = np.empty((2, B, u), dt)  # extra, drh (without reset_after)
        dU = np.empty((u, 3 * u), dt) if needs[1] else None
        drb = np.empty(3 * u, dt) if after and needs[2] else None
        loop(
            gemm, T, _opt(d_seq), _opt(s.rm), _opt(keep_h), p(dh), p(direct),
            p(scratch[0]), p(scratch[1]), p(A), p(s.H), _opt(s.HD), p(s.HH), _opt(s.RH),
            _opt(s.keep), p(DI), p(DX), p(UT), _opt(UhT), _opt(dU), _opt(drb), B, u,
        )  # fmt: skip
        return _finish_dx(spec, DX), dU, drb, dh, None

    def _step_backward(self, spec, s, d_seq, dh, direct, keep_h, DI, DX, needs):
        """The loop from Python, a C++ call per step (or two without ``reset_after``)."""
        A, U = s.A, s.U
        T, B, S = A.shape
        u = U.shape[0]
        dt = A.dtype
        after = spec.reset_after
        step = function("gru_backward_step", dt)
        Hd = _recurrent_inputs(s)
        worker = _worker(T, B, u, 3 * u)
        if after:
            grads = [_KernelGradient(Hd, DI, needs[1], worker)]
        else:
            grads = [
                _KernelGradient(Hd, DI[:, :, : 2 * u], needs[1], worker),
                _KernelGradient(s.RH, DI[:, :, 2 * u :], needs[1], worker),
            ]
        a, h, hh, di, dx = _Rows(A), _Rows(s.H), _Rows(s.HH), _Rows(DI), _Rows(DX)
        q = _Rows(d_seq) if d_seq is not None else None
        k = _Rows(s.keep) if s.keep is not None else None
        prm, pdh, pdir, pkh = _opt(s.rm), p(dh), p(direct), _opt(keep_h)
        matmul = np.matmul
        if after:
            UT = _c(U.T)
            for t in range(T - 1, -1, -1):
                step(
                    pdh, t == T - 1, q[t] if q is not None else None, prm, pkh, pdir, None,
                    a[t], S, h[t], hh[t], k[t] if k is not None else None, di[t], dx[t], B, u,
                )  # fmt: skip
                matmul(DI[t], UT, out=dh)
                grads[0].step_done(t)
            pextra = None
        else:
            reset = function("gru_reset_step", dt)
            UzrT, UhT = _c(U[:, : 2 * u].T), _c(U[:, 2 * u :].T)
            extra = np.empty((B, u), dt)
            drh = np.empty((B, u), dt)
            pextra, pdrh = p(extra), p(drh)
            hdr = _Rows(Hd)
            for t in range(T - 1, -1, -1):
                step(
                    pdh, t == T - 1, q[t] if q is not None else None, prm, pkh, pdir, pextra,
                    a[t], S, h[t], hh[t], k[t] if k is not None else None, di[t], None, B, u,
                )  # fmt: skip
                matmul(DI[t, :, 2 * u :], UhT, out=drh)
                reset(pdrh, a[t], hdr[t], di[t], pextra, B, u)
                matmul(DI[t, :, : 2 * u], UzrT, out=dh)
                for grad in grads:
                    grad.step_done(t)
        function("rnn_finish_dh", dt)(pdh, pextra, prm, pdir, pkh, B * u)
        dU = drb = None
        if needs[1]:
            parts = [grad.result() for grad in grads]
            dU = parts[0] if after else np.concatenate(parts, axis=1)
        if after and needs[2]:
            drb = np.add.reduce(DI.reshape(T * B, 3 * u), axis=0)
        return _finish_dx(spec, DX), dU, drb, dh, None


class CompiledRNNSequence(_CompiledBackward, RNNSequence):
    """``rnn_sequence`` (``tanh``) with the activation and masks of each step compiled."""

    def forward(self, spec, xproj, U, rbias, h0, c0):
        dt = xproj.dtype
        if not _compiled_inputs(spec, xproj, U, (h0,), need_sigmoid=False):
            return super().forward(spec, xproj, U, rbias, h0, c0)
        step = function("rnn_forward_step", dt)
        if step is None or function("rnn_backward_step", dt) is None:
            return super().forward(spec, xproj, U, rbias, h0, c0)
        return self._compiled_forward(step, spec, xproj, U, h0)

    def _compiled_forward(self, step, spec, xproj, U, h0):
        T, B, u = xproj.shape
        dt = xproj.dtype
        keep, rm = _masks(spec, dt, B)
        H, HD, Hd = _state_buffers(T, B, u, dt, h0, rm)
        A = pooled((T, B, u), dt)
        x, h, a = _time_rows(spec, xproj), _Rows(H), _Rows(A)
        hd = _Rows(HD) if HD is not None else None
        k = _Rows(keep) if keep is not None else None
        prm = _opt(rm)
        Uc = _c(U)
        loop, gemm = _with_gemm("rnn_forward_loop", dt)
        if loop is not None:
            loop(
                gemm, T, x[0], x.stride // dt.itemsize, p(Uc), h[0], a[0],
                k[0] if k is not None else None, prm, hd[0] if hd is not None else None, B, u,
            )  # fmt: skip
        else:
            with _loop_blas(B, u):
                for t in range(T):
                    np.matmul(Hd[t], Uc, out=A[t])
                    step(
                        a[t], x[t], h[t], h[t + 1], k[t] if k is not None else None, prm,
                        hd[t + 1] if hd is not None else None, B, u,
                    )  # fmt: skip
        s = _Saved()
        s.H, s.HD, s.A, s.U, s.keep, s.rm = H, HD, A, U, keep, rm
        return _outputs(spec, H), s

    def _compiled_backward(self, spec, s, d_seq, d_h, d_c, needs):
        A, U = s.A, s.U
        T, B, u = A.shape
        dt = A.dtype
        d_seq = _gradient_input(d_seq, T, B, u, dt)
        dh = _state(d_h, (B, u), dt)
        keep_h = np.empty((B, u), dt) if s.keep is not None else None
        dA = pooled((T, B, u), dt)
        UT = _c(U.T)
        loop, gemm = _with_gemm("rnn_backward_loop", dt)
        if loop is not None:
            dU = np.empty((u, u), dt) if needs[1] else None
            loop(
                gemm, T, _opt(d_seq), _opt(s.rm), _opt(keep_h), p(dh), p(A), _opt(s.keep),
                p(dA), p(UT), p(_recurrent_inputs(s)), _opt(dU), B, u,
            )  # fmt: skip
            return _finish_dx(spec, dA), dU, None, dh, None
        step = function("rnn_backward_step", dt)
        kernel_grad = _KernelGradient(_recurrent_inputs(s), dA, needs[1], _worker(T, B, u, u))
        a, da = _Rows(A), _Rows(dA)
        q = _Rows(d_seq) if d_seq is not None else None
        k = _Rows(s.keep) if s.keep is not None else None
        prm, pdh, pkh = _opt(s.rm), p(dh), _opt(keep_h)
        with _loop_blas(B, u):
            for t in range(T - 1, -1, -1):
                step(
                    pdh, t == T - 1, q[t] if q is not None else None, prm, pkh, a[t],
                    k[t] if k is not None else None, da[t], B, u,
                )  # fmt: skip
                np.matmul(dA[t], UT, out=dh)
                kernel_grad.step_done(t)
            dU = kernel_grad.result()
        function("rnn_finish_dh", dt)(pdh, None, prm, None, pkh, B * u)
        return _finish_dx(spec, dA), dU, None, dh, None


class CompiledSequenceProjection(SequenceProjection):
    """``sequence_projection`` as one compiled call each way (``recurrent.cpp``), split over
    dlx's pool: forward the time-major product and bias; backward the column sums (bias
    gradient), ``g @ kernel^T`` and ``x^T @ g``, the products and sums of the NumPy kernel.
    Without the library or the BLAS address, or for arrays it does not take, the NumPy
    kernel runs."""

    def forward(self, x, kernel, bias):
        dt = x.dtype
        f, gemm = _with_gemm("rnn_projection_forward", dt)
        if (
            f is None
            or type(x) is not np.ndarray
            or x.ndim != 3
            or not plain(dt, kernel)
            or (bias is not None and not plain(dt, bias))
            or 0 in x.shape
            or 0 in kernel.shape
        ):
            return super().forward(x, kernel, bias)
        B, T, F = x.shape
        G = kernel.shape[1]
        xt = x.transpose(1, 0, 2)
        if not xt.flags.c_contiguous:
            xt = _copy(xt)
        x2 = xt.reshape(T * B, F)
        y = pooled((T, B, G), dt)
        f(gemm, T * B, G, F, p(x2), p(kernel), _opt(bias), p(y))
        return y, (x2, kernel, (B, T, F))

    def backward(self, saved, g, needs):
        x2, kernel, (B, T, F) = saved
        dt = x2.dtype
        f, gemm = _with_gemm("rnn_projection_backward", dt)
        if (
            f is None
            or type(g) is not np.ndarray
            or g.dtype != dt
            or not plain(dt, x2, kernel)
            or 0 in x2.shape
            or 0 in kernel.shape
        ):
            return super().backward(saved, g, needs)
        G = kernel.shape[1]
        g2 = np.ascontiguousarray(g).reshape(T * B, G)
        dx = pooled((T, B, F), dt) if needs[0] else None
        dk = np.empty((F, G), dt) if needs[1] else None
        db = np.empty(G, dt) if needs[2] else None
        f(gemm, T * B, G, F, p(g2), p(x2), p(kernel), _opt(dx), _opt(dk), _opt(db))
        return (dx.transpose(1, 0, 2) if dx is not None else None), dk, db


CPU_RNN_KERNELS = {
    "sequence_projection": CompiledSequenceProjection(),
    "lstm_sequence": CompiledLSTMSequence(),
    "gru_sequence": CompiledGRUSequence(),
    "rnn_sequence": CompiledRNNSequence(),
}
