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
ACTIVATION_CODES = {
    "linear": 0,
    "tanh": 1,
    "sigmoid": 2,
    "hard_sigmoid": 3,
    "relu": 4,
    "relu6": 5,
    "softsign": 6,
    "exponential": 7,
}

BLOCK = 256
MAX_BLOCKS = 65535


class _Saved:
    """What one loop needs (and backward keeps): arrays in processing order and the
    per-call kernel arguments."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


class _Kernels:
    """The compiled recurrent.cu for one ``xp``/loader, and launchers of its kernels."""

    def __init__(self, xp, load):
        self.xp = xp
        self._load = load
        self._module = None  # loaded (compiled) on the first launch
        self._functions = {}
        self._dummies = {}

    def supports(self, array):
        return isinstance(array, self.xp.ndarray) and array.dtype in _CTYPES

    def launcher(self, name, dtype, threads):
        """``launch(*args)`` running ``name<T>`` over ``threads`` threads (grid-stride);
        ``args`` in parameter order: arrays, ``np.int32`` scalars."""
        key = (name, np.dtype(dtype))
        function = self._functions.get(key)
        if function is None:
            if self._module is None:
                self._module = self._load(SOURCE, CUDA_SOURCES[SOURCE])
            expression = f"{name}<{_CTYPES[key[1]]}>"
            function = self._functions[key] = self._module.get_function(expression)
        grid = (max(1, min((threads + BLOCK - 1) // BLOCK, MAX_BLOCKS)),)
        block = (BLOCK,)

        def launch(*args):
            function(grid, block, args)

        return launch

    def dummy(self, dtype):
        """A 1-element array passed where an optional input is absent (its flag is 0)."""
        dtype = np.dtype(dtype)
        array = self._dummies.get(dtype)
        if array is None:
            array = self._dummies[dtype] = self.xp.zeros(1, dtype=dtype)
        return array


def _i32(value):
    return np.int32(value)


class _Base:
    """Shared by the three cells: support checks, the state buffers, the mask and
    dropout arguments, the incoming gradients and the stacked weight gradient."""

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

    def _loop(self, spec, xproj, h0):
        """The buffers and per-call kernel arguments of a forward loop.

        ``H (T+1, B, u)`` with ``H[0] = h0``; with a recurrent dropout mask ``rm`` also
        ``HD (T+1, B, u)``, the dropped states ``H * rm`` that the products read
        (``hd_in``: HD or H); ``hd_out[k]``: where step k writes its dropped state (a
        dummy without dropout); ``keep[k]``: the step mask ``(B,)`` of 0/1 (a dummy
        without a mask); ``order``: the time index of each processing step.
        """
        xp = self.xp
        steps, batch, _ = xproj.shape
        units = h0.shape[1]
        dt = xproj.dtype
        dummy = self.k.dummy(dt)
        H = xp.empty((steps + 1, batch, units), dtype=dt)
        H[0] = h0
        keep = [dummy] * steps
        if spec.mask is not None:
            mask = xp.asarray(spec.mask).T
            mask = xp.ascontiguousarray(mask[::-1] if spec.go_backwards else mask, dtype=dt)
            keep = list(mask)
        rm, HD, hd_out = dummy, None, [dummy] * steps
        if spec.recurrent_mask is not None:
            rm = xp.ascontiguousarray(xp.broadcast_to(spec.recurrent_mask, (batch, units)))
            HD = xp.empty((steps + 1, batch, units), dtype=dt)
            xp.multiply(H[0], rm, out=HD[0])
            hd_out = list(HD[1:])
        return _Saved(
            x=xp.ascontiguousarray(xproj),
            order=spec.order(steps),
            steps=steps,
            dtype=dt,
            H=H,
            HD=HD,
            hd_in=HD if HD is not None else H,
            hd_out=hd_out,
            keep=keep,
            has_keep=_i32(spec.mask is not None),
            rm=rm,
            has_rm=_i32(HD is not None),
            threads=batch * units,
            batch=_i32(batch),
            units=_i32(units),
            act=_i32(ACTIVATION_CODES[spec.activation]),
            ract=_i32(ACTIVATION_CODES.get(spec.recurrent_activation, 0)),
        )

    def _outputs(self, spec, s, *states):
        """(sequence (T, B, u) when return_sequences, final h, other final states...).
        Also drops the loop's input, which backward does not read."""
        s.x = None
        outputs = (s.H[s.steps],) + states
        if spec.return_sequences:
            outputs = (s.H[1:],) + outputs
        return outputs

    def _incoming(self, s, d_seq, d_h):
        """Backward start: (per-step sequence gradients or dummies, has_dseq, carry = a
        copy of d_h, dh_rec = zeros). Each step's kernel takes the state gradient as
        ``dh_rec * rm + carry + d_seq[k]``."""
        xp = self.xp
        dt = s.dtype
        shape = tuple(s.H.shape[1:])
        dseq = [self.k.dummy(dt)] * s.steps
        if d_seq is not None:
            dseq = list(xp.ascontiguousarray(d_seq, dtype=dt))
        carry = xp.array(d_h, dtype=dt, copy=True, order="C")
        return dseq, _i32(d_seq is not None), carry, xp.zeros(shape, dtype=dt)

    def _first_state_grad(self, s, dh_rec, carry):
        """The gradient of h0: what the first step sends back, ``dh_rec * rm + carry``."""
        if s.HD is not None:
            dh_rec = dh_rec * s.rm
        return dh_rec + carry

    def _read_states(self, s):
        """The states the recurrent products read, ``(T, B, u)`` (dropped if dropout)."""
        return s.hd_in[:-1]

    @staticmethod
    def _time_order(spec, per_step):
        return per_step[::-1] if spec.go_backwards else per_step

    def _stacked_product(self, left, right):
        """``sum_t left[t]^T @ right[t]`` as one product: left (T, B, a), right (T, B, c)."""
        a = left.reshape(-1, left.shape[-1])
        return self.xp.matmul(a.T, right.reshape(-1, right.shape[-1]))


class RNNSequence(_Base):
    """SimpleRNN: ``h = act(xproj[t] + hd @ U)``; ``A (T, B, u)`` keeps the activations."""

    def forward(self, spec, xproj, U, rbias, h0, c0):
        if rbias is not None or not self._supported(spec, xproj, U, (h0,)):
            return None
        xp = self.xp
        s = self._loop(spec, xproj, h0)
        s.U = xp.ascontiguousarray(U)
        s.A = xp.empty(s.H[1:].shape, dtype=s.dtype)
        H, A, x = s.H, s.A, s.x
        step = self.k.launcher("rnn_forward_step", s.dtype, s.threads)
        for k, t in enumerate(s.order):
            xp.matmul(s.hd_in[k], s.U, out=A[k])
            step(
                x[t], A[k], H[k], H[k + 1], s.hd_out[k], s.keep[k], s.has_keep, s.rm, s.has_rm,
                s.batch, s.units, s.act,
            )  # fmt: skip
        return self._outputs(spec, s), s

    def backward(self, spec, s, d_seq, d_h, d_c, needs):
        xp = self.xp
        dseq, has_dseq, carry, dh_rec = self._incoming(s, d_seq, d_h)
        UT = xp.ascontiguousarray(s.U.T)
        dA = xp.empty_like(s.A)
        step = self.k.launcher("rnn_backward_step", s.dtype, s.threads)
        for k in range(s.steps - 1, -1, -1):
            step(
                dh_rec, s.rm, s.has_rm, carry, dseq[k], has_dseq, s.keep[k], s.has_keep,
                s.A[k], dA[k], s.batch, s.units, s.act,
            )  # fmt: skip
            xp.matmul(dA[k], UT, out=dh_rec)
        dU = self._stacked_product(self._read_states(s), dA) if needs[1] else None
        return self._time_order(spec, dA), dU, None, self._first_state_grad(s, dh_rec, carry), None


class LSTMSequence(_Base):
    """LSTM (gates i, f, c, o): ``A (T, B, 4u)`` keeps the activated gates, ``C (T+1, B, u)``
    the cell states, ``TC (T, B, u)`` act(c) before the mask."""

    gates = 4

    def forward(self, spec, xproj, U, rbias, h0, c0):
        if rbias is not None or not self._supported(spec, xproj, U, (h0, c0)):
            return None
        xp = self.xp
        s = self._loop(spec, xproj, h0)
        s.U = xp.ascontiguousarray(U)
        s.C = xp.empty_like(s.H)
        s.C[0] = c0
        s.A = xp.empty(s.x.shape, dtype=s.dtype)
        s.TC = xp.empty(s.H[1:].shape, dtype=s.dtype)
        H, C, A, TC, x = s.H, s.C, s.A, s.TC, s.x
        step = self.k.launcher("lstm_forward_step", s.dtype, s.threads)
        for k, t in enumerate(s.order):
            xp.matmul(s.hd_in[k], s.U, out=A[k])
            step(
                x[t], A[k], H[k], C[k], H[k + 1], C[k + 1], TC[k], s.hd_out[k],
                s.keep[k], s.has_keep, s.rm, s.has_rm, s.batch, s.units, s.act, s.ract,
            )  # fmt: skip
        return self._outputs(spec, s, C[s.steps]), s

    def backward(self, spec, s, d_seq, d_h, d_c, needs):
        xp = self.xp
        dseq, has_dseq, carry, dh_rec = self._incoming(s, d_seq, d_h)
        dc = xp.array(d_c, dtype=s.dtype, copy=True, order="C")
        UT = xp.ascontiguousarray(s.U.T)
        dZ = xp.empty_like(s.A)
        step = self.k.launcher("lstm_backward_step", s.dtype, s.threads)
        for k in range(s.steps - 1, -1, -1):
            step(
                dh_rec, s.rm, s.has_rm, carry, dc, dseq[k], has_dseq, s.keep[k], s.has_keep,
                s.A[k], s.C[k], s.TC[k], dZ[k], s.batch, s.units, s.act, s.ract,
            )  # fmt: skip
            xp.matmul(dZ[k], UT, out=dh_rec)
        dU = self._stacked_product(self._read_states(s), dZ) if needs[1] else None
        dh0 = self._first_state_grad(s, dh_rec, carry)
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

    # -- reset_after=True: inner = hd @ U + b_rec, candidate act(x_h + r * inner_h);
    #    A (T, B, 3u) keeps z, r and the candidate, IH (T, B, u) inner_h with its bias

    def _forward_reset_after(self, spec, xproj, U, rbias, h0):
        xp = self.xp
        s = self._loop(spec, xproj, h0)
        s.U = xp.ascontiguousarray(U)
        bias = xp.ascontiguousarray(rbias) if rbias is not None else self.k.dummy(s.dtype)
        has_bias = _i32(rbias is not None)
        s.A = xp.empty(s.x.shape, dtype=s.dtype)
        s.IH = xp.empty(s.H[1:].shape, dtype=s.dtype)
        H, A, IH, x = s.H, s.A, s.IH, s.x
        step = self.k.launcher("gru_forward_step", s.dtype, s.threads)
        for k, t in enumerate(s.order):
            xp.matmul(s.hd_in[k], s.U, out=A[k])
            step(
                x[t], A[k], bias, has_bias, H[k], H[k + 1], IH[k], s.hd_out[k],
                s.keep[k], s.has_keep, s.rm, s.has_rm, s.batch, s.units, s.act, s.ract,
            )  # fmt: skip
        return self._outputs(spec, s), s

    def _backward_reset_after(self, spec, s, d_seq, d_h, needs):
        xp = self.xp
        dseq, has_dseq, carry, dh_rec = self._incoming(s, d_seq, d_h)
        UT = xp.ascontiguousarray(s.U.T)
        dX = xp.empty_like(s.A)
        dInner = xp.empty_like(s.A)
        step = self.k.launcher("gru_backward_step", s.dtype, s.threads)
        for k in range(s.steps - 1, -1, -1):
            step(
                dh_rec, s.rm, s.has_rm, carry, dseq[k], has_dseq, s.keep[k], s.has_keep,
                s.A[k], s.IH[k], s.H[k], dX[k], dInner[k], s.batch, s.units, s.act, s.ract,
            )  # fmt: skip
            xp.matmul(dInner[k], UT, out=dh_rec)
        dU = self._stacked_product(self._read_states(s), dInner) if needs[1] else None
        drb = xp.sum(dInner.reshape(-1, dInner.shape[-1]), axis=0) if needs[2] else None
        dh0 = self._first_state_grad(s, dh_rec, carry)
        return self._time_order(spec, dX), dU, drb, dh0, None

    # -- reset_after=False: candidate act(x_h + (r * hd) @ U_h); ZR (T, B, 2u) keeps z, r,
    #    HH (T, B, u) the candidate, RH (T, B, u) r * hd (the left factor of its product)

    def _forward_reset_before(self, spec, xproj, U, h0):
        xp = self.xp
        s = self._loop(spec, xproj, h0)
        u = int(s.units)
        s.U_zr = xp.ascontiguousarray(U[:, : 2 * u])
        s.U_h = xp.ascontiguousarray(U[:, 2 * u :])
        s.ZR = xp.empty((s.steps, int(s.batch), 2 * u), dtype=s.dtype)
        s.HH = xp.empty(s.H[1:].shape, dtype=s.dtype)
        s.RH = xp.empty(s.H[1:].shape, dtype=s.dtype)
        H, ZR, HH, RH, x, hd_in = s.H, s.ZR, s.HH, s.RH, s.x, s.hd_in
        gates = self.k.launcher("gru_gates_step", s.dtype, s.threads)
        update = self.k.launcher("gru_update_step", s.dtype, s.threads)
        for k, t in enumerate(s.order):
            xp.matmul(hd_in[k], s.U_zr, out=ZR[k])
            gates(x[t], ZR[k], hd_in[k], RH[k], s.batch, s.units, s.ract)
            xp.matmul(RH[k], s.U_h, out=HH[k])
            update(
                x[t], HH[k], ZR[k], H[k], H[k + 1], s.hd_out[k], s.keep[k], s.has_keep,
                s.rm, s.has_rm, s.batch, s.units, s.act,
            )  # fmt: skip
        return self._outputs(spec, s), s

    def _backward_reset_before(self, spec, s, d_seq, d_h, needs):
        xp = self.xp
        dseq, has_dseq, carry, dh_rec = self._incoming(s, d_seq, d_h)
        UzrT = xp.ascontiguousarray(s.U_zr.T)
        UhT = xp.ascontiguousarray(s.U_h.T)
        hd = self._read_states(s)
        dZR = xp.empty_like(s.ZR)
        dAH = xp.empty_like(s.HH)
        drh = xp.empty_like(dh_rec)
        update = self.k.launcher("gru_update_backward_step", s.dtype, s.threads)
        reset = self.k.launcher("gru_reset_backward_step", s.dtype, s.threads)
        for k in range(s.steps - 1, -1, -1):
            update(
                dh_rec, s.rm, s.has_rm, carry, dseq[k], has_dseq, s.keep[k], s.has_keep,
                s.ZR[k], s.HH[k], s.H[k], dZR[k], dAH[k], s.batch, s.units, s.act, s.ract,
            )  # fmt: skip
            xp.matmul(dAH[k], UhT, out=drh)
            reset(drh, s.ZR[k], hd[k], s.rm, s.has_rm, dZR[k], carry, s.batch, s.units, s.ract)
            xp.matmul(dZR[k], UzrT, out=dh_rec)
        dU = None
        if needs[1]:
            parts = [self._stacked_product(hd, dZR), self._stacked_product(s.RH, dAH)]
            dU = xp.concatenate(parts, axis=1)
        dX = xp.concatenate([dZR, dAH], axis=2)
        dh0 = self._first_state_grad(s, dh_rec, carry)
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
