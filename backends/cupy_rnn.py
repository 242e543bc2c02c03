"""CUDA paths of the recurrent sequence ops (``rnn_sequence``, ``lstm_sequence``,
``gru_sequence``; see ``dlx/ops/recurrent.py`` for what they compute and the
``forward``/``backward`` contract).

Per time step: the recurrent product ``hd @ U`` on cuBLAS (``xp.matmul`` into a
preallocated buffer), then ONE fused kernel of ``cuda/recurrent.cu`` for all
gate nonlinearities, the state update, the mask and the recurrent-dropout
product for the next step. Backward per step: one kernel for the gate
pre-activation gradients (and the part of the state gradient that bypasses the
product), then the product with ``U^T``. The GRU with ``reset_after=False``
has a product inside its step, so two kernels each way. The recurrent-kernel
gradient is one product over all steps after the reverse loop
(``stack(hd_t)^T @ stack(dgates_t)``).

Everything is time-major in processing order (reversed for ``go_backwards``):
``H (T+1, B, u)`` with ``H[0] = h0``, gate buffers ``(T, B, G*u)``. Written
against a NumPy-compatible ``xp`` (``cupy`` on a GPU, ``numpy`` under the CPU
emulation of the kernels).

Supported: float32/float64, activations and recurrent activations in
:data:`ACTIVATION_CODES`, masks, ``go_backwards``, ``return_sequences``,
recurrent dropout masks, initial states, GRU with either ``reset_after``.
Anything else makes ``forward`` return None (the generic loop runs).
"""

import numpy as np

SOURCE = "recurrent.cu"
_KERNELS = (
    "rnn_forward_step",
    "rnn_backward_step",
    "lstm_forward_step",
    "lstm_backward_step",
    "gru_forward_step",
    "gru_backward_step",
    "gru_gates_step",
    "gru_update_step",
    "gru_update_backward_step",
    "gru_reset_backward_step",
)
_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
CUDA_SOURCES = {SOURCE: [f"{k}<{t}>" for k in _KERNELS for t in ("float", "double")]}

# the codes of the DLX_ACT_* constants in cuda/recurrent.cu
ACTIVATION_CODES = {"linear": 0, "tanh": 1, "sigmoid": 2, "hard_sigmoid": 3, "relu": 4}

BLOCK = 256
MAX_BLOCKS = 65535


class _Saved:
    """What backward needs from one forward call (arrays in processing order)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


class _Kernels:
    """Typed launchers of the recurrent.cu kernels for one ``xp``/loader."""

    def __init__(self, xp, load):
        self.xp = xp
        self.module = load(SOURCE, CUDA_SOURCES[SOURCE])
        self._functions = {}
        self._dummies = {}

    def supports(self, array):
        return isinstance(array, self.xp.ndarray) and array.dtype in _CTYPES

    def __call__(self, name, dtype, batch, units, *args):
        """Launch ``name<T>`` over ``batch * units`` threads; ``args`` in parameter order,
        with Python ints (passed as int32) and arrays; batch, units come last but one."""
        key = (name, np.dtype(dtype))
        function = self._functions.get(key)
        if function is None:
            expression = f"{name}<{_CTYPES[key[1]]}>"
            function = self._functions[key] = self.module.get_function(expression)
        n = batch * units
        grid = (max(1, min((n + BLOCK - 1) // BLOCK, MAX_BLOCKS)),)
        converted = tuple(np.int32(a) if isinstance(a, (bool, int)) else a for a in args)
        function(grid, (BLOCK,), converted)

    def dummy(self, dtype):
        """A 1-element array passed where an optional input is absent (its flag is 0)."""
        dtype = np.dtype(dtype)
        array = self._dummies.get(dtype)
        if array is None:
            array = self._dummies[dtype] = self.xp.zeros(1, dtype=dtype)
        return array


class _Base:
    """Shared setup of the three cells: dtype checks, masks and the state buffers."""

    cell = None
    gates = 1

    def __init__(self, kernels):
        self.k = kernels
        self.xp = kernels.xp

    def _supported(self, spec, xproj, U, others):
        if not self.k.supports(xproj) or xproj.ndim != 3 or xproj.shape[0] == 0:
            return False
        if spec.activation not in ACTIVATION_CODES:
            return False
        if self.gates > 1 and spec.recurrent_activation not in ACTIVATION_CODES:
            return False
        arrays = [U] + [a for a in others if a is not None]
        if spec.recurrent_mask is not None:
            arrays.append(spec.recurrent_mask)
        return all(isinstance(a, self.xp.ndarray) and a.dtype == xproj.dtype for a in arrays)

    def _setup(self, spec, xproj, h0):
        """(xproj contiguous, processing order of time indices, H, keep masks (T, B) or None,
        rm or None, HD or None)."""
        xp = self.xp
        steps, batch, _ = xproj.shape
        units = h0.shape[1]
        dt = xproj.dtype
        x = xp.ascontiguousarray(xproj)
        H = xp.empty((steps + 1, batch, units), dtype=dt)
        H[0] = h0
        keep = None
        if spec.mask is not None:
            keep = xp.asarray(spec.mask).T
            if spec.go_backwards:
                keep = keep[::-1]
            keep = xp.ascontiguousarray(keep, dtype=dt)
        rm = HD = None
        if spec.recurrent_mask is not None:
            rm = xp.ascontiguousarray(xp.broadcast_to(spec.recurrent_mask, (batch, units)))
            HD = xp.empty((steps + 1, batch, units), dtype=dt)
            xp.multiply(H[0], rm, out=HD[0])
        return x, spec.order(steps), H, keep, rm, HD

    def _flags(self, keep, rm, step, dt):
        """(keep_t, has_keep, rm, has_rm) kernel arguments of one step."""
        dummy = self.k.dummy(dt)
        keep_t = (keep[step], 1) if keep is not None else (dummy, 0)
        rm_arg = (rm, 1) if rm is not None else (dummy, 0)
        return keep_t + rm_arg

    def _grad_inputs(self, d_seq, d_h, H):
        """Contiguous copies of the incoming gradients: (d_seq or None, carry = d_h)."""
        xp = self.xp
        dt = H.dtype
        if d_seq is not None:
            d_seq = xp.ascontiguousarray(d_seq, dtype=dt)
        carry = xp.array(d_h, dtype=dt, copy=True, order="C")
        return d_seq, carry

    def _dseq(self, d_seq, step, dt):
        return (d_seq[step], 1) if d_seq is not None else (self.k.dummy(dt), 0)

    @staticmethod
    def _finish_dh(xp, dh_rec, rm, carry):
        """dh0 = dh_rec * rm + carry (the state gradient out of the first step)."""
        if rm is not None:
            dh_rec = dh_rec * rm
        return dh_rec + carry

    def _time_order(self, spec, per_step):
        return per_step[::-1] if spec.go_backwards else per_step

    @staticmethod
    def _stacked_product(xp, left, right):
        """``sum_t left[t]^T @ right[t]`` as one product: left (T, B, a), right (T, B, c)."""
        return xp.matmul(left.reshape(-1, left.shape[-1]).T, right.reshape(-1, right.shape[-1]))


class RNNSequence(_Base):
    """SimpleRNN: ``h = act(xproj[t] + hd @ U)``."""

    def forward(self, spec, xproj, U, rbias, h0, c0):
        if rbias is not None or not self._supported(spec, xproj, U, (h0,)):
            return None
        xp = self.xp
        x, order, H, keep, rm, HD = self._setup(spec, xproj, h0)
        steps, batch, units = x.shape
        dt = x.dtype
        act = ACTIVATION_CODES[spec.activation]
        U = xp.ascontiguousarray(U)
        A = xp.empty((steps, batch, units), dtype=dt)  # act(pre-activation)
        hd_prev = HD if HD is not None else H
        for k, t in enumerate(order):
            xp.matmul(hd_prev[k], U, out=A[k])
            keep_t, has_keep, rm_arg, has_rm = self._flags(keep, rm, k, dt)
            hd_out = HD[k + 1] if HD is not None else self.k.dummy(dt)
            self.k(
                "rnn_forward_step", dt, batch, units,
                x[t], A[k], H[k], H[k + 1], hd_out, keep_t, has_keep, rm_arg, has_rm,
                batch, units, act,
            )  # fmt: skip
        saved = _Saved(H=H, HD=HD, A=A, U=U, keep=keep, rm=rm)
        outputs = (H[steps],)
        if spec.return_sequences:
            outputs = (H[1:],) + outputs
        return outputs, saved

    def backward(self, spec, s, d_seq, d_h, d_c, needs):
        xp = self.xp
        A, U = s.A, s.U
        steps, batch, units = A.shape
        dt = A.dtype
        act = ACTIVATION_CODES[spec.activation]
        d_seq, carry = self._grad_inputs(d_seq, d_h, s.H)
        UT = xp.ascontiguousarray(U.T)
        dA = xp.empty_like(A)
        dh_rec = xp.zeros((batch, units), dtype=dt)
        for k in range(steps - 1, -1, -1):
            keep_t, has_keep, rm_arg, has_rm = self._flags(s.keep, s.rm, k, dt)
            dseq_k, has_dseq = self._dseq(d_seq, k, dt)
            self.k(
                "rnn_backward_step", dt, batch, units,
                dh_rec, rm_arg, has_rm, carry, dseq_k, has_dseq, keep_t, has_keep,
                A[k], dA[k], batch, units, act,
            )  # fmt: skip
            xp.matmul(dA[k], UT, out=dh_rec)
        dh0 = self._finish_dh(xp, dh_rec, s.rm, carry)
        dU = None
        if needs[1]:
            Hp = s.HD[:-1] if s.HD is not None else s.H[:-1]
            dU = self._stacked_product(xp, Hp, dA)
        return self._time_order(spec, dA), dU, None, dh0, None


class LSTMSequence(_Base):
    """LSTM (gates i, f, c, o); ``A (T, B, 4u)`` keeps the activated gates."""

    gates = 4

    def forward(self, spec, xproj, U, rbias, h0, c0):
        if rbias is not None or not self._supported(spec, xproj, U, (h0, c0)):
            return None
        xp = self.xp
        x, order, H, keep, rm, HD = self._setup(spec, xproj, h0)
        steps, batch, G = x.shape
        units = G // 4
        dt = x.dtype
        act = ACTIVATION_CODES[spec.activation]
        ract = ACTIVATION_CODES[spec.recurrent_activation]
        U = xp.ascontiguousarray(U)
        C = xp.empty((steps + 1, batch, units), dtype=dt)
        C[0] = c0
        A = xp.empty((steps, batch, G), dtype=dt)
        TC = xp.empty((steps, batch, units), dtype=dt)  # act(c) before the mask
        hd_prev = HD if HD is not None else H
        for k, t in enumerate(order):
            xp.matmul(hd_prev[k], U, out=A[k])
            keep_t, has_keep, rm_arg, has_rm = self._flags(keep, rm, k, dt)
            hd_out = HD[k + 1] if HD is not None else self.k.dummy(dt)
            self.k(
                "lstm_forward_step", dt, batch, units,
                x[t], A[k], H[k], C[k], H[k + 1], C[k + 1], TC[k], hd_out,
                keep_t, has_keep, rm_arg, has_rm, batch, units, act, ract,
            )  # fmt: skip
        saved = _Saved(H=H, HD=HD, C=C, A=A, TC=TC, U=U, keep=keep, rm=rm)
        outputs = (H[steps], C[steps])
        if spec.return_sequences:
            outputs = (H[1:],) + outputs
        return outputs, saved

    def backward(self, spec, s, d_seq, d_h, d_c, needs):
        xp = self.xp
        A, U = s.A, s.U
        steps, batch, G = A.shape
        units = G // 4
        dt = A.dtype
        act = ACTIVATION_CODES[spec.activation]
        ract = ACTIVATION_CODES[spec.recurrent_activation]
        d_seq, carry = self._grad_inputs(d_seq, d_h, s.H)
        dc = xp.array(d_c, dtype=dt, copy=True, order="C")
        UT = xp.ascontiguousarray(U.T)
        dZ = xp.empty_like(A)
        dh_rec = xp.zeros((batch, units), dtype=dt)
        for k in range(steps - 1, -1, -1):
            keep_t, has_keep, rm_arg, has_rm = self._flags(s.keep, s.rm, k, dt)
            dseq_k, has_dseq = self._dseq(d_seq, k, dt)
            self.k(
                "lstm_backward_step", dt, batch, units,
                dh_rec, rm_arg, has_rm, carry, dc, dseq_k, has_dseq, keep_t, has_keep,
                A[k], s.C[k], s.TC[k], dZ[k], batch, units, act, ract,
            )  # fmt: skip
            xp.matmul(dZ[k], UT, out=dh_rec)
        dh0 = self._finish_dh(xp, dh_rec, s.rm, carry)
        dU = None
        if needs[1]:
            Hp = s.HD[:-1] if s.HD is not None else s.H[:-1]
            dU = self._stacked_product(xp, Hp, dZ)
        return self._time_order(spec, dZ), dU, None, dh0, dc


class GRUSequence(_Base):
    """GRU (gates z, r, h), ``reset_after`` True (one kernel per step) or False (two)."""

    gates = 3

    def forward(self, spec, xproj, U, rbias, h0, c0):
        if not self._supported(spec, xproj, U, (h0, rbias)):
            return None
        if rbias is not None and (not spec.reset_after or rbias.shape != (xproj.shape[2],)):
            return None
        if spec.reset_after:
            return self._forward_reset_after(spec, xproj, U, rbias, h0)
        return self._forward_reset_before(spec, xproj, U, h0)

    def backward(self, spec, s, d_seq, d_h, d_c, needs):
        if spec.reset_after:
            return self._backward_reset_after(spec, s, d_seq, d_h, needs)
        return self._backward_reset_before(spec, s, d_seq, d_h, needs)

    # -- reset_after=True: inner = hd @ U + b_rec, candidate act(x_h + r * inner_h)

    def _forward_reset_after(self, spec, xproj, U, rbias, h0):
        xp = self.xp
        x, order, H, keep, rm, HD = self._setup(spec, xproj, h0)
        steps, batch, G = x.shape
        units = G // 3
        dt = x.dtype
        act = ACTIVATION_CODES[spec.activation]
        ract = ACTIVATION_CODES[spec.recurrent_activation]
        U = xp.ascontiguousarray(U)
        bias = (xp.ascontiguousarray(rbias), 1) if rbias is not None else (self.k.dummy(dt), 0)
        A = xp.empty((steps, batch, G), dtype=dt)  # z, r, candidate
        IH = xp.empty((steps, batch, units), dtype=dt)  # inner_h (with its bias)
        hd_prev = HD if HD is not None else H
        for k, t in enumerate(order):
            xp.matmul(hd_prev[k], U, out=A[k])
            keep_t, has_keep, rm_arg, has_rm = self._flags(keep, rm, k, dt)
            hd_out = HD[k + 1] if HD is not None else self.k.dummy(dt)
            self.k(
                "gru_forward_step", dt, batch, units,
                x[t], A[k], bias[0], bias[1], H[k], H[k + 1], IH[k], hd_out,
                keep_t, has_keep, rm_arg, has_rm, batch, units, act, ract,
            )  # fmt: skip
        saved = _Saved(H=H, HD=HD, A=A, IH=IH, U=U, keep=keep, rm=rm)
        outputs = (H[steps],)
        if spec.return_sequences:
            outputs = (H[1:],) + outputs
        return outputs, saved

    def _backward_reset_after(self, spec, s, d_seq, d_h, needs):
        xp = self.xp
        A, U = s.A, s.U
        steps, batch, G = A.shape
        units = G // 3
        dt = A.dtype
        act = ACTIVATION_CODES[spec.activation]
        ract = ACTIVATION_CODES[spec.recurrent_activation]
        d_seq, carry = self._grad_inputs(d_seq, d_h, s.H)
        UT = xp.ascontiguousarray(U.T)
        dX = xp.empty_like(A)
        dInner = xp.empty_like(A)
        dh_rec = xp.zeros((batch, units), dtype=dt)
        for k in range(steps - 1, -1, -1):
            keep_t, has_keep, rm_arg, has_rm = self._flags(s.keep, s.rm, k, dt)
            dseq_k, has_dseq = self._dseq(d_seq, k, dt)
            self.k(
                "gru_backward_step", dt, batch, units,
                dh_rec, rm_arg, has_rm, carry, dseq_k, has_dseq, keep_t, has_keep,
                A[k], s.IH[k], s.H[k], dX[k], dInner[k], batch, units, act, ract,
            )  # fmt: skip
            xp.matmul(dInner[k], UT, out=dh_rec)
        dh0 = self._finish_dh(xp, dh_rec, s.rm, carry)
        dU = drb = None
        if needs[1]:
            Hp = s.HD[:-1] if s.HD is not None else s.H[:-1]
            dU = self._stacked_product(xp, Hp, dInner)
        if needs[2]:
            drb = xp.sum(dInner.reshape(-1, G), axis=0)
        return self._time_order(spec, dX), dU, drb, dh0, None

    # -- reset_after=False: candidate act(x_h + (r * hd) @ U_h)

    def _forward_reset_before(self, spec, xproj, U, h0):
        xp = self.xp
        x, order, H, keep, rm, HD = self._setup(spec, xproj, h0)
        steps, batch, G = x.shape
        units = G // 3
        dt = x.dtype
        act = ACTIVATION_CODES[spec.activation]
        ract = ACTIVATION_CODES[spec.recurrent_activation]
        U_zr = xp.ascontiguousarray(U[:, : 2 * units])
        U_h = xp.ascontiguousarray(U[:, 2 * units :])
        ZR = xp.empty((steps, batch, 2 * units), dtype=dt)  # z, r
        HH = xp.empty((steps, batch, units), dtype=dt)  # candidate
        RH = xp.empty((steps, batch, units), dtype=dt)  # r * hd
        hd_prev = HD if HD is not None else H
        for k, t in enumerate(order):
            xp.matmul(hd_prev[k], U_zr, out=ZR[k])
            self.k(
                "gru_gates_step", dt, batch, units,
                x[t], ZR[k], hd_prev[k], RH[k], batch, units, ract,
            )  # fmt: skip
            xp.matmul(RH[k], U_h, out=HH[k])
            keep_t, has_keep, rm_arg, has_rm = self._flags(keep, rm, k, dt)
            hd_out = HD[k + 1] if HD is not None else self.k.dummy(dt)
            self.k(
                "gru_update_step", dt, batch, units,
                x[t], HH[k], ZR[k], H[k], H[k + 1], hd_out, keep_t, has_keep, rm_arg, has_rm,
                batch, units, act,
            )  # fmt: skip
        saved = _Saved(H=H, HD=HD, ZR=ZR, HH=HH, RH=RH, U_zr=U_zr, U_h=U_h, keep=keep, rm=rm)
        outputs = (H[steps],)
        if spec.return_sequences:
            outputs = (H[1:],) + outputs
        return outputs, saved

    def _backward_reset_before(self, spec, s, d_seq, d_h, needs):
        xp = self.xp
        ZR, HH = s.ZR, s.HH
        steps, batch, units = HH.shape
        dt = HH.dtype
        act = ACTIVATION_CODES[spec.activation]
        ract = ACTIVATION_CODES[spec.recurrent_activation]
        d_seq, carry = self._grad_inputs(d_seq, d_h, s.H)
        UzrT = xp.ascontiguousarray(s.U_zr.T)
        UhT = xp.ascontiguousarray(s.U_h.T)
        Hp = s.HD[:-1] if s.HD is not None else s.H[:-1]
        dZR = xp.empty_like(ZR)
        dAH = xp.empty_like(HH)
        drh = xp.empty((batch, units), dtype=dt)
        dh_rec = xp.zeros((batch, units), dtype=dt)
        for k in range(steps - 1, -1, -1):
            keep_t, has_keep, rm_arg, has_rm = self._flags(s.keep, s.rm, k, dt)
            dseq_k, has_dseq = self._dseq(d_seq, k, dt)
            self.k(
                "gru_update_backward_step", dt, batch, units,
                dh_rec, rm_arg, has_rm, carry, dseq_k, has_dseq, keep_t, has_keep,
                ZR[k], HH[k], s.H[k], dZR[k], dAH[k], batch, units, act, ract,
            )  # fmt: skip
            xp.matmul(dAH[k], UhT, out=drh)
            self.k(
                "gru_reset_backward_step", dt, batch, units,
                drh, ZR[k], Hp[k], rm_arg, has_rm, dZR[k], carry, batch, units, ract,
            )  # fmt: skip
            xp.matmul(dZR[k], UzrT, out=dh_rec)
        dh0 = self._finish_dh(xp, dh_rec, s.rm, carry)
        dU = None
        if needs[1]:
            dU = xp.concatenate(
                [self._stacked_product(xp, Hp, dZR), self._stacked_product(xp, s.RH, dAH)],
                axis=1,
            )
        dX = xp.concatenate([dZR, dAH], axis=2)
        return self._time_order(spec, dX), dU, None, dh0, None


def rnn_kernels(xp, load):
    """The kernel-table entries ``{"rnn_sequence", "lstm_sequence", "gru_sequence"}`` for
    arrays of ``xp`` (cupy, or numpy under emulation); ``load(source, name_expressions)``
    returns the compiled ``recurrent.cu``."""
    kernels = _Kernels(xp, load)
    return {
        "rnn_sequence": RNNSequence(kernels),
        "lstm_sequence": LSTMSequence(kernels),
        "gru_sequence": GRUSequence(kernels),
    }
