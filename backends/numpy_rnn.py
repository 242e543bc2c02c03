"""NumPy fast paths of the recurrent sequence ops (``lstm_sequence``, ``gru_sequence``,
``rnn_sequence``; see ``dlx/ops/recurrent.py`` for what they compute).

Same math as the generic loops, arranged for a CPU: every step writes into
preallocated time-major buffers with ``out=`` arguments (no temporaries). The
LSTM keeps its gates gate-major (``(T, 4, B, u)``) so every per-step operation
is on contiguous ``(B, u)`` blocks, gets all four gates from one
``1 / (1 + exp(-s z))`` (``tanh x = 2 sigmoid(2x) - 1`` for the cell gate; the
factor ``-s`` folded into the recurrent kernel and the inputs once per call),
and computes the gate derivative factors for all steps at once before the
reverse loop. BLAS is held to one thread inside the loops (threadpoolctl, when
installed): the products there are too small to gain from a second thread and
can stall for milliseconds waiting for one on a busy machine. Each kernel
handles ``tanh``/``sigmoid`` activations in float32/float64 and returns None
otherwise, so the generic loop runs.
"""

import numpy as np

from .blas_threads import blas_controllers, one_thread_if_small, single_threaded_product
from .buffer_pool import pooled

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _loop_blas(batch, units):
    """One BLAS thread for the per-step products of a loop when they are small
    (``batch * units^2`` up to 2^20 multiply-adds per gate), else leave BLAS alone."""
    return one_thread_if_small(batch * units * units)


def _supported(spec, xproj, need_sigmoid=True):
    if xproj.dtype not in _FLOATS or not isinstance(xproj, np.ndarray):
        return False
    if spec.activation != "tanh":
        return False
    return spec.recurrent_activation == "sigmoid" or not need_sigmoid


def _time_major_input(spec, xproj, scale=None):
    """A C-contiguous copy of ``xproj`` in processing order (times ``scale``)."""
    source = xproj[::-1] if spec.go_backwards else xproj
    out = pooled(source.shape, xproj.dtype)
    if scale is None:
        np.copyto(out, source)
    else:
        np.multiply(source, scale, out=out)
    return out


def _step_masks(spec, dtype):
    """(keep (T, B, 1) bool, carry (T, B, 1) bool, keep as float) in processing order, or Nones."""
    if spec.mask is None:
        return None, None, None
    mask = np.asarray(spec.mask).T[:, :, None]
    if spec.go_backwards:
        mask = mask[::-1]
    mask = np.ascontiguousarray(mask)
    return mask, ~mask, mask.astype(dtype)


def _finish_dx(spec, dz):
    return dz[::-1] if spec.go_backwards else dz


class _Saved:
    __slots__ = ("H", "HD", "C", "A", "TC", "U", "keep", "carry", "keepf", "rm", "extra")


class LSTMSequence:
    """LSTM, gate-major inside: ``A (T, 4, B, u)`` holds i, f, g, o after activation.

    Gate-major blocks keep every per-step operation on contiguous ``(B, u)``
    arrays, and split the recurrent product into four ``(B, u) @ (u, u)``
    products, which OpenBLAS runs single-threaded (a small product split over
    two threads of a busy 2-core machine can be ten times slower).
    """

    def forward(self, spec, xproj, U, rbias, h0, c0):
        if not _supported(spec, xproj):
            return None
        with _loop_blas(xproj.shape[1], U.shape[0]):
            return self._forward(spec, xproj, U, h0, c0)

    def _forward(self, spec, xproj, U, h0, c0):
        T, B, G = xproj.shape
        u = G // 4
        dt = xproj.dtype
        # every gate as 1 / (1 + exp(-s z)): s = 1 for the sigmoid gates, 2 for g
        # (tanh x = 2 sigmoid(2x) - 1); the factor -s is folded into the inputs and U once
        scale = np.array([-1.0, -1.0, -2.0, -1.0], dt)[:, None, None]
        source = xproj[::-1] if spec.go_backwards else xproj
        XP = pooled((T, 4, B, u), dt)
        np.copyto(XP, source.reshape(T, B, 4, u).transpose(0, 2, 1, 3))
        np.negative(XP, out=XP)  # then scale (T, 4, 1, 1): contiguous (B, u) blocks
        XP[:, 2] *= 2.0
        U4 = U.reshape(u, 4, u).transpose(1, 0, 2) * scale
        H = pooled((T + 1, B, u), dt)
        H[0] = h0
        C = pooled((T + 1, B, u), dt)
        C[0] = c0
        A = pooled((T, 4, B, u), dt)
        TC = pooled((T, B, u), dt)
        tmp = pooled((B, u), dt)
        keep, carry, keepf = _step_masks(spec, dt)
        rm = spec.recurrent_mask
        HD = pooled((T, B, u), dt) if rm is not None else None
        errors = np.seterr(over="ignore")  # exp(large) = inf gives the right limit 0
        try:
            for t in range(T):
                z = A[t]
                hp = H[t]
                if rm is not None:
                    np.multiply(hp, rm, out=HD[t])
                    hp = HD[t]
                np.matmul(hp, U4, out=z)
                z += XP[t]
                np.exp(z, out=z)
                z += 1.0
                np.reciprocal(z, out=z)
                i, f, g, o = z[0], z[1], z[2], z[3]
                g *= 2.0
                g -= 1.0
                c = C[t + 1]
                np.multiply(f, C[t], out=c)
                np.multiply(i, g, out=tmp)
                c += tmp
                np.tanh(c, out=TC[t])
                np.multiply(o, TC[t], out=H[t + 1])
                if carry is not None:
                    np.copyto(H[t + 1], H[t], where=carry[t])
                    np.copyto(c, C[t], where=carry[t])
        finally:
            np.seterr(**errors)
        saved = _Saved()
        saved.H, saved.HD, saved.C, saved.A, saved.TC, saved.U = H, HD, C, A, TC, U
        saved.keep, saved.carry, saved.keepf, saved.rm = keep, carry, keepf, rm
        outputs = (H[T], C[T])
        if spec.return_sequences:
            outputs = (H[1:],) + outputs
        return outputs, saved

    def backward(self, spec, s, d_seq, d_h, d_c, needs):
        with _loop_blas(s.H.shape[1], s.U.shape[0]):
            return self._backward(spec, s, d_seq, d_h, d_c, needs)

    def _backward(self, spec, s, d_seq, d_h, d_c, needs):
        A, TC, C, U = s.A, s.TC, s.C, s.U
        T, _, B, u = A.shape
        dt = A.dtype
        i, f, g, o = A[:, 0], A[:, 1], A[:, 2], A[:, 3]
        # Q: what multiplies (dc, dc, dc, dh) to give dz, for all steps at once
        Q = pooled((T, 4, B, u), dt)
        np.subtract(1.0, A, out=Q)
        Q *= A  # sigmoid'(z) = y (1 - y)
        np.multiply(g, g, out=Q[:, 2])
        np.subtract(1.0, Q[:, 2], out=Q[:, 2])  # tanh'(z) = 1 - y^2
        Q[:, 0] *= g
        Q[:, 1] *= C[:-1]
        Q[:, 2] *= i
        Q[:, 3] *= TC
        OT = pooled((T, B, u), dt)  # o * (1 - tanh(c)^2): dh -> dc
        np.multiply(TC, TC, out=OT)
        np.subtract(1.0, OT, out=OT)
        OT *= o
        V = np.ascontiguousarray(U.reshape(u, 4, u).transpose(1, 2, 0))  # V[k] = U_k^T
        dZ = pooled((T, 4, B, u), dt)
        dh = np.array(d_h, dtype=dt, copy=True)
        dc = np.array(d_c, dtype=dt, copy=True)
        tmp = pooled((B, u), dt)
        back = pooled((4, B, u), dt)
        keep_h = pooled((B, u), dt) if s.keep is not None else None
        keep_c = pooled((B, u), dt) if s.keep is not None else None
        # the recurrent-kernel gradient: one product over all steps with BLAS held to one
        # thread (threadpoolctl), else summed step by step from (u, u) products, which
        # OpenBLAS runs single-threaded anyway (see single_threaded_product)
        Hp = s.HD if s.HD is not None else s.H[:-1]
        per_step = needs[1] and not blas_controllers()
        dU4 = np.zeros((4, u, u), dt) if per_step else None
        dU_step = pooled((4, u, u), dt)
        for t in range(T - 1, -1, -1):
            if d_seq is not None:
                dh += d_seq[t]
            if keep_h is not None:
                m = s.keepf[t]
                np.multiply(dh, 1.0 - m, out=keep_h)
                np.multiply(dc, 1.0 - m, out=keep_c)
                dh *= m
                dc *= m
            np.multiply(dh, OT[t], out=tmp)
            dc += tmp
            q, dz = Q[t], dZ[t]
            np.multiply(dc, q[0], out=dz[0])
            np.multiply(dc, q[1], out=dz[1])
            np.multiply(dc, q[2], out=dz[2])
            np.multiply(dh, q[3], out=dz[3])
            dc *= f[t]
            if dU4 is not None:
                np.matmul(Hp[t].T, dz, out=dU_step)
                dU4 += dU_step
            np.matmul(dz, V, out=back)
            np.add.reduce(back, axis=0, out=dh)
            if s.rm is not None:
                dh *= s.rm
            if keep_h is not None:
                dh += keep_h
                dc += keep_c
        dx = pooled((T, B, 4 * u), dt)
        np.copyto(dx.reshape(T, B, 4, u), dZ.transpose(0, 2, 1, 3))
        dU = None
        if per_step:
            dU = np.ascontiguousarray(dU4.transpose(1, 0, 2)).reshape(u, 4 * u)
        elif needs[1]:
            dU = single_threaded_product(Hp.reshape(T * B, u).T, dx.reshape(T * B, 4 * u))
        return _finish_dx(spec, dx), dU, None, dh, dc


class GRUSequence:
    """GRU, both ``reset_after`` variants."""

    def forward(self, spec, xproj, U, rbias, h0, c0):
        with _loop_blas(xproj.shape[1], U.shape[0]):
            return self._forward(spec, xproj, U, rbias, h0, c0)

    def _forward(self, spec, xproj, U, rbias, h0, c0):
        if not _supported(spec, xproj):
            return None
        T, B, G = xproj.shape
        u = G // 3
        dt = xproj.dtype
        XP = _time_major_input(spec, xproj)
        H = pooled((T + 1, B, u), dt)
        H[0] = h0
        ZR = pooled((T, B, 2 * u), dt)  # z, r after the sigmoid
        HH = pooled((T, B, u), dt)  # candidate after tanh
        IH = pooled((T, B, u), dt)  # reset_after: inner_h; else r * hd
        inner = pooled((B, G if spec.reset_after else 2 * u), dt)
        keep, carry, keepf = _step_masks(spec, dt)
        rm = spec.recurrent_mask
        HD = pooled((T, B, u), dt) if rm is not None else None
        U_zr, U_h = U[:, : 2 * u], U[:, 2 * u :]
        for t in range(T):
            hp = H[t]
            if rm is not None:
                np.multiply(hp, rm, out=HD[t])
                hp = HD[t]
            x = XP[t]
            zr = ZR[t]
            if spec.reset_after:
                np.matmul(hp, U, out=inner)
                if rbias is not None:
                    inner += rbias
                np.add(x[:, : 2 * u], inner[:, : 2 * u], out=zr)
                _sigmoid(zr)
                np.copyto(IH[t], inner[:, 2 * u :])
                np.multiply(zr[:, u:], IH[t], out=HH[t])
            else:
                np.matmul(hp, U_zr, out=inner)
                np.add(x[:, : 2 * u], inner, out=zr)
                _sigmoid(zr)
                np.multiply(zr[:, u:], hp, out=IH[t])
                np.matmul(IH[t], U_h, out=HH[t])
            hh = HH[t]
            hh += x[:, 2 * u :]
            np.tanh(hh, out=hh)
            # h = hh + z * (h_prev - hh)
            h = H[t + 1]
            np.subtract(H[t], hh, out=h)
            h *= zr[:, :u]
            h += hh
            if carry is not None:
                np.copyto(h, H[t], where=carry[t])
        s = _Saved()
        s.H, s.HD, s.A, s.TC, s.U, s.extra = H, HD, ZR, HH, U, IH
        s.keep, s.carry, s.keepf, s.rm = keep, carry, keepf, rm
        outputs = (H[T],)
        if spec.return_sequences:
            outputs = (H[1:],) + outputs
        return outputs, s

    def backward(self, spec, s, d_seq, d_h, d_c, needs):
        with _loop_blas(s.H.shape[1], s.U.shape[0]):
            return self._backward(spec, s, d_seq, d_h, d_c, needs)

    def _backward(self, spec, s, d_seq, d_h, d_c, needs):
        ZR, HH, IH, H, U = s.A, s.TC, s.extra, s.H, s.U
        T, B, u2 = ZR.shape
        u = u2 // 2
        dt = ZR.dtype
        z, r = ZR[:, :, :u], ZR[:, :, u:]
        # for all steps: dz factor (h_prev - hh) z (1 - z), dah factor (1 - z)(1 - hh^2)
        FZ = np.subtract(H[:-1], HH, out=pooled(HH.shape, dt))
        FZ *= z
        FZ *= 1.0 - z
        FH = np.multiply(HH, HH, out=pooled(HH.shape, dt))
        np.subtract(1.0, FH, out=FH)
        FH *= 1.0 - z
        FR = np.subtract(1.0, r, out=pooled(HH.shape, dt))
        FR *= r
        if spec.reset_after:
            FR *= IH
        else:
            FR *= s.HD if s.HD is not None else H[:-1]
        dX = pooled((T, B, 3 * u), dt)
        dinner = pooled((T, B, 3 * u), dt) if spec.reset_after else None
        dh = np.array(d_h, dtype=dt, copy=True)
        keep_h = pooled((B, u), dt) if s.keep is not None else None
        tmp = pooled((B, u), dt)
        drh = pooled((B, u), dt)
        UT, UzrT, UhT = U.T, U[:, : 2 * u].T, U[:, 2 * u :].T
        for t in range(T - 1, -1, -1):
            if d_seq is not None:
                dh += d_seq[t]
            if keep_h is not None:
                m = s.keepf[t]
                np.multiply(dh, 1.0 - m, out=keep_h)
                dh *= m
            dx = dX[t]
            np.multiply(dh, FZ[t], out=dx[:, :u])
            np.multiply(dh, FH[t], out=dx[:, 2 * u :])
            if spec.reset_after:
                np.multiply(dx[:, 2 * u :], FR[t], out=dx[:, u : 2 * u])
                di = dinner[t]
                di[:, : 2 * u] = dx[:, : 2 * u]
                np.multiply(dx[:, 2 * u :], r[t], out=di[:, 2 * u :])
                dh *= z[t]
                np.matmul(di, UT, out=tmp)
            else:
                np.matmul(dx[:, 2 * u :], UhT, out=drh)
                np.multiply(drh, FR[t], out=dx[:, u : 2 * u])
                np.matmul(dx[:, : 2 * u], UzrT, out=tmp)
                drh *= r[t]
                tmp += drh
                dh *= z[t]
            if s.rm is not None:
                tmp *= s.rm
            dh += tmp
            if keep_h is not None:
                dh += keep_h
        dU = drb = None
        Hp = s.HD if s.HD is not None else H[:-1]
        Hp2 = Hp.reshape(T * B, u)
        if needs[1]:
            if spec.reset_after:
                dU = Hp2.T @ dinner.reshape(T * B, 3 * u)
            else:
                dU = pooled((u, 3 * u), dt)
                dX2 = dX.reshape(T * B, 3 * u)
                np.matmul(Hp2.T, dX2[:, : 2 * u], out=dU[:, : 2 * u])
                np.matmul(IH.reshape(T * B, u).T, dX2[:, 2 * u :], out=dU[:, 2 * u :])
        if needs[2] and spec.reset_after:
            drb = dinner.reshape(T * B, 3 * u).sum(axis=0)
        return _finish_dx(spec, dX), dU, drb, dh, None


class RNNSequence:
    """SimpleRNN with ``tanh``."""

    def forward(self, spec, xproj, U, rbias, h0, c0):
        with _loop_blas(xproj.shape[1], U.shape[0]):
            return self._forward(spec, xproj, U, rbias, h0, c0)

    def _forward(self, spec, xproj, U, rbias, h0, c0):
        if not _supported(spec, xproj, need_sigmoid=False):
            return None
        T, B, u = xproj.shape
        dt = xproj.dtype
        XP = _time_major_input(spec, xproj)
        H = pooled((T + 1, B, u), dt)
        H[0] = h0
        keep, carry, keepf = _step_masks(spec, dt)
        rm = spec.recurrent_mask
        HD = pooled((T, B, u), dt) if rm is not None else None
        A = pooled((T, B, u), dt)  # tanh outputs before masking
        for t in range(T):
            hp = H[t]
            if rm is not None:
                np.multiply(hp, rm, out=HD[t])
                hp = HD[t]
            a = A[t]
            np.matmul(hp, U, out=a)
            a += XP[t]
            np.tanh(a, out=a)
            if carry is None:
                H[t + 1] = a
            else:
                np.copyto(H[t + 1], a)
                np.copyto(H[t + 1], H[t], where=carry[t])
        s = _Saved()
        s.H, s.HD, s.A, s.U = H, HD, A, U
        s.keep, s.carry, s.keepf, s.rm = keep, carry, keepf, rm
        outputs = (H[T],)
        if spec.return_sequences:
            outputs = (H[1:],) + outputs
        return outputs, s

    def backward(self, spec, s, d_seq, d_h, d_c, needs):
        with _loop_blas(s.H.shape[1], s.U.shape[0]):
            return self._backward(spec, s, d_seq, d_h, d_c, needs)

    def _backward(self, spec, s, d_seq, d_h, d_c, needs):
        A, U = s.A, s.U
        T, B, u = A.shape
        dt = A.dtype
        F = np.multiply(A, A, out=pooled(A.shape, dt))
        np.subtract(1.0, F, out=F)
        dA = pooled((T, B, u), dt)
        dh = np.array(d_h, dtype=dt, copy=True)
        keep_h = pooled((B, u), dt) if s.keep is not None else None
        UT = U.T
        for t in range(T - 1, -1, -1):
            if d_seq is not None:
                dh += d_seq[t]
            if keep_h is not None:
                m = s.keepf[t]
                np.multiply(dh, 1.0 - m, out=keep_h)
                dh *= m
            np.multiply(dh, F[t], out=dA[t])
            np.matmul(dA[t], UT, out=dh)
            if s.rm is not None:
                dh *= s.rm
            if keep_h is not None:
                dh += keep_h
        dU = None
        if needs[1]:
            Hp = s.HD if s.HD is not None else s.H[:-1]
            dU = Hp.reshape(T * B, u).T @ dA.reshape(T * B, u)
        return _finish_dx(spec, dA), dU, None, dh, None


def _sigmoid(x):
    """In place: ``x = 1 / (1 + exp(-x))`` (float32 exp is faster than tanh here)."""
    np.negative(x, out=x)
    errors = np.seterr(over="ignore")  # exp(large) = inf gives the right limit 0
    np.exp(x, out=x)
    np.seterr(**errors)
    x += 1.0
    np.reciprocal(x, out=x)


class SequenceProjection:
    """``sequence_projection``: time-major ``x @ kernel + bias`` into a pooled buffer.

    The time-major copy of the input is free for a stacked recurrent layer (its
    input is the previous layer's time-major output seen batch-major) and small
    for the first layer (``features`` columns).
    """

    def forward(self, x, kernel, bias):
        B, T, F = x.shape
        G = kernel.shape[1]
        xt = x.transpose(1, 0, 2)
        if not xt.flags.c_contiguous:
            xt = _copy(xt)
        x2 = xt.reshape(T * B, F)
        y = pooled((T, B, G), x.dtype)
        np.matmul(x2, kernel, out=y.reshape(T * B, G))
        if bias is not None:
            y += bias
        return y, (x2, kernel, (B, T, F))

    def backward(self, saved, g, needs):
        x2, kernel, (B, T, F) = saved
        G = kernel.shape[1]
        g2 = np.ascontiguousarray(g).reshape(T * B, G)
        dx = dk = db = None
        if needs[0]:
            dx = pooled((T, B, F), g2.dtype)
            np.matmul(g2, kernel.T, out=dx.reshape(T * B, F))
            dx = dx.transpose(1, 0, 2)
        if needs[1]:
            dk = x2.T @ g2
        if needs[2]:
            db = np.add.reduce(g2, axis=0)
        return dx, dk, db


def _copy(a):
    out = pooled(a.shape, a.dtype)
    np.copyto(out, a)
    return out


RNN_KERNELS = {
    "sequence_projection": SequenceProjection(),
    "lstm_sequence": LSTMSequence(),
    "gru_sequence": GRUSequence(),
    "rnn_sequence": RNNSequence(),
}
