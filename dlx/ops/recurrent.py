"""Recurrent sequences: the whole time loop of a SimpleRNN, LSTM or GRU as one op.

One :class:`RecurrentSequence` Function runs the loop on arrays and its
``backward`` runs backpropagation through time in one reverse loop, so a
sequence costs one autograd node, not one per tiny operation per step.

The input projection is *not* part of the op: the layer computes it for all
time steps with one matrix product (:func:`sequence_projection`: batch-major
input in, time-major ``xproj`` out) and hands the op ``xproj``. What the op
computes per step ``t`` (``hd`` is ``h_{t-1}``, times the recurrent dropout
mask when one is given; ``U`` the recurrent kernel; ``ract``/``act`` the
recurrent and output activations):

- ``rnn``:  ``h = act(xproj[t] + hd @ U)``
- ``lstm``: ``z = xproj[t] + hd @ U``, gates ``i, f, c, o`` (Keras order) as
  ``ract(z_i), ract(z_f), act(z_c), ract(z_o)``; ``c = f*c_{t-1} + i*g``;
  ``h = o*act(c)``
- ``gru`` (gates ``z, r, h``; ``reset_after=True``): ``inner = hd @ U + b_rec``;
  ``z = ract(x_z + inner_z)``; ``r = ract(x_r + inner_r)``;
  ``hh = act(x_h + r*inner_h)``; ``h = z*h_{t-1} + (1 - z)*hh``.
  With ``reset_after=False``: ``hh = act(x_h + (r*hd) @ U_h)`` and no recurrent bias.

Masks (Keras semantics): at a step where ``mask[b, t]`` is False the state of
sample ``b`` is carried unchanged and its output is the carried ``h``.
``go_backwards`` walks the time axis from the end; outputs come in the order
they were computed (reversed), as in Keras.

Shapes (time-major inside the op): ``xproj (T, B, G*u)`` with ``G`` = 1, 4, 3;
``recurrent_kernel (u, G*u)``; ``recurrent_bias (G*u,)`` or None (GRU
``reset_after`` only); ``h0``, ``c0``: ``(B, u)``; ``mask (B, T)`` boolean;
``recurrent_mask (B, u)``. Outputs: the sequence ``(T, B, u)`` when
``return_sequences``, then the last ``h`` (and ``c`` for the LSTM), each ``(B, u)``.

Kernel table: the op first asks ``backend.kernel("<cell>_sequence")`` (names
``rnn_sequence``, ``lstm_sequence``, ``gru_sequence``) for an object with the
same ``forward(spec, xproj, U, rbias, h0, c0)`` / ``backward(spec, saved,
d_seq, d_h, d_c, needs)`` methods as the generic implementations below; its
``forward`` may return None for what it does not support (activation, dtype),
and the generic loop runs instead. ``backward`` returns ``(d_xproj, dU,
d_rbias, d_h0, d_c0)``; an entry whose ``needs`` flag is False may be None (the
NumPy LSTM skips the state-gradient product of the first step when the initial
state needs none). ``backend.kernel("sequence_projection")`` (optional) is the
input projection's: see :class:`SequenceProjection`.
"""

from ..autograd import Function, Tensor
from .activations import (
    ELU,
    SELU,
    Exponential,
    HardSigmoid,
    LeakyReLU,
    ReLU6,
    Sigmoid,
    Softplus,
    Softsign,
    Tanh,
)

# ---------------------------------------------------------------------------
# activations usable inside the fused loop: f(xp, x) and df(xp, x, y)


class _Linear:
    @staticmethod
    def f(xp, x):
        return x

    @staticmethod
    def df(xp, x, y):
        return xp.ones_like(x)


class _Relu:
    @staticmethod
    def f(xp, x):
        return xp.maximum(x, 0.0)

    @staticmethod
    def df(xp, x, y):
        return xp.astype(x > 0, x.dtype)


RECURRENT_ACTIVATIONS = {
    "tanh": Tanh(),
    "sigmoid": Sigmoid(),
    "hard_sigmoid": HardSigmoid(),
    "relu": _Relu(),
    "relu6": ReLU6(),
    "linear": _Linear(),
    "softsign": Softsign(),
    "softplus": Softplus(),
    "elu": ELU(),
    "selu": SELU(),
    "leaky_relu": LeakyReLU(),
    "exponential": Exponential(),
}

CELLS = {"rnn": 1, "lstm": 4, "gru": 3}


class SequenceSpec:
    """What one recurrent loop computes (everything but the differentiable arrays).

    Attributes: ``cell`` ("rnn", "lstm", "gru"), ``activation`` and
    ``recurrent_activation`` (names in ``RECURRENT_ACTIVATIONS``),
    ``go_backwards``, ``return_sequences``, ``reset_after`` (GRU), ``mask``
    (boolean ``(B, T)`` array or None) and ``recurrent_mask`` (``(B, u)``
    dropout mask already scaled by ``1/keep``, or None).
    """

    def __init__(
        self,
        cell,
        activation="tanh",
        recurrent_activation="sigmoid",
        go_backwards=False,
        return_sequences=True,
        reset_after=True,
        mask=None,
        recurrent_mask=None,
    ):
        if cell not in CELLS:
            raise ValueError(
                f"recurrent sequence: unknown cell {cell!r}; choose one of {sorted(CELLS)}"
            )
        for what, name in (
            ("activation", activation),
            ("recurrent_activation", recurrent_activation),
        ):
            if name not in RECURRENT_ACTIVATIONS:
                raise ValueError(
                    f"recurrent sequence: {what} {name!r} is not supported inside the fused loop; "
                    f"choose one of {sorted(RECURRENT_ACTIVATIONS)}"
                )
        self.cell, self.activation, self.recurrent_activation = (
            cell,
            activation,
            recurrent_activation,
        )
        self.go_backwards, self.return_sequences = bool(go_backwards), bool(return_sequences)
        self.reset_after, self.mask, self.recurrent_mask = bool(reset_after), mask, recurrent_mask

    @property
    def gates(self):
        return CELLS[self.cell]

    def order(self, steps):
        return list(range(steps - 1, -1, -1)) if self.go_backwards else list(range(steps))


# ---------------------------------------------------------------------------
# generic implementations (Array API only)


def _step_mask(xp, spec, t, dtype):
    """(boolean (B, 1), float (B, 1)) mask of time ``t``, or (None, None)."""
    if spec.mask is None:
        return None, None
    m = spec.mask[:, t : t + 1]
    return m, xp.astype(m, dtype)


def _matmul_sum(xp, lefts, rights):
    """``sum_k lefts[k].T @ rights[k]`` as one product over all steps."""
    a = xp.stack(lefts, axis=0)
    b = xp.stack(rights, axis=0)
    a = xp.reshape(a, (-1, a.shape[-1]))
    b = xp.reshape(b, (-1, b.shape[-1]))
    return a.T @ b


class GenericRNN:
    """SimpleRNN loop: ``h = act(xproj[t] + hd @ U)``."""

    def forward(self, xp, spec, xproj, U, rbias, h0, c0):
        act = RECURRENT_ACTIVATIONS[spec.activation]
        rm = spec.recurrent_mask
        h, saved, outs = h0, [], []
        for t in spec.order(xproj.shape[0]):
            hd = h if rm is None else h * rm
            a = xproj[t, ...] + hd @ U
            hn = act.f(xp, a)
            m, mf = _step_mask(xp, spec, t, h.dtype)
            saved.append((hd, a, hn, mf))
            h = hn if m is None else xp.where(m, hn, h)
            outs.append(h)
        outputs = (h,)
        if spec.return_sequences:
            outputs = (xp.stack(outs, axis=0),) + outputs
        return outputs, saved

    def backward(self, xp, spec, saved, U, d_seq, d_h, d_c, needs):
        act = RECURRENT_ACTIVATIONS[spec.activation]
        rm = spec.recurrent_mask
        dh = d_h
        das, hds = [], []
        for k in range(len(saved) - 1, -1, -1):
            hd, a, hn, mf = saved[k]
            if d_seq is not None:
                dh = dh + d_seq[k, ...]
            keep = None
            if mf is not None:
                keep = dh * (1 - mf)
                dh = dh * mf
            da = dh * act.df(xp, a, hn)
            dh = da @ U.T
            if rm is not None:
                dh = dh * rm
            if keep is not None:
                dh = dh + keep
            das.append(da)
            hds.append(hd)
        das.reverse()
        hds.reverse()
        dU = _matmul_sum(xp, hds, das) if needs[1] else None
        return _dx(xp, spec, das), dU, None, dh, None


def _dx(xp, spec, per_step):
    """Per-step gradients (processing order) stacked into ``(T, B, G*u)`` in time order."""
    if spec.go_backwards:
        per_step = per_step[::-1]
    return xp.stack(per_step, axis=0)


class GenericLSTM:
    """LSTM loop (gates i, f, c, o)."""

    def forward(self, xp, spec, xproj, U, rbias, h0, c0):
        act = RECURRENT_ACTIVATIONS[spec.activation]
        ract = RECURRENT_ACTIVATIONS[spec.recurrent_activation]
        rm = spec.recurrent_mask
        u = U.shape[0]
        h, c, saved, outs = h0, c0, [], []
        for t in spec.order(xproj.shape[0]):
            hd = h if rm is None else h * rm
            z = xproj[t, ...] + hd @ U
            zi, zf, zg, zo = z[:, :u], z[:, u : 2 * u], z[:, 2 * u : 3 * u], z[:, 3 * u :]
            i, f, g, o = ract.f(xp, zi), ract.f(xp, zf), act.f(xp, zg), ract.f(xp, zo)
            cn = f * c + i * g
            tc = act.f(xp, cn)
            hn = o * tc
            m, mf = _step_mask(xp, spec, t, h.dtype)
            saved.append((hd, c, (zi, zf, zg, zo), (i, f, g, o), cn, tc, mf))
            if m is None:
                h, c = hn, cn
            else:
                h, c = xp.where(m, hn, h), xp.where(m, cn, c)
            outs.append(h)
        outputs = (h, c)
        if spec.return_sequences:
            outputs = (xp.stack(outs, axis=0),) + outputs
        return outputs, saved

    def backward(self, xp, spec, saved, U, d_seq, d_h, d_c, needs):
        act = RECURRENT_ACTIVATIONS[spec.activation]
        ract = RECURRENT_ACTIVATIONS[spec.recurrent_activation]
        rm = spec.recurrent_mask
        dh, dc = d_h, d_c
        dzs, hds = [], []
        for k in range(len(saved) - 1, -1, -1):
            hd, c_prev, (zi, zf, zg, zo), (i, f, g, o), cn, tc, mf = saved[k]
            if d_seq is not None:
                dh = dh + d_seq[k, ...]
            keep_h = keep_c = None
            if mf is not None:
                keep_h, keep_c = dh * (1 - mf), dc * (1 - mf)
                dh, dc = dh * mf, dc * mf
            dc = dc + dh * o * act.df(xp, cn, tc)
            dz = xp.concat(
                [
                    dc * g * ract.df(xp, zi, i),
                    dc * c_prev * ract.df(xp, zf, f),
                    dc * i * act.df(xp, zg, g),
                    dh * tc * ract.df(xp, zo, o),
                ],
                axis=1,
            )
            dc = dc * f
            dh = dz @ U.T
            if rm is not None:
                dh = dh * rm
            if keep_h is not None:
                dh, dc = dh + keep_h, dc + keep_c
            dzs.append(dz)
            hds.append(hd)
        dzs.reverse()
        hds.reverse()
        dU = _matmul_sum(xp, hds, dzs) if needs[1] else None
        return _dx(xp, spec, dzs), dU, None, dh, dc


class GenericGRU:
    """GRU loop (gates z, r, h), ``reset_after`` True (recurrent bias) or False."""

    def forward(self, xp, spec, xproj, U, rbias, h0, c0):
        act = RECURRENT_ACTIVATIONS[spec.activation]
        ract = RECURRENT_ACTIVATIONS[spec.recurrent_activation]
        rm = spec.recurrent_mask
        u = U.shape[0]
        h, saved, outs = h0, [], []
        for t in spec.order(xproj.shape[0]):
            hd = h if rm is None else h * rm
            x = xproj[t, ...]
            if spec.reset_after:
                inner = hd @ U
                if rbias is not None:
                    inner = inner + rbias
                az = x[:, :u] + inner[:, :u]
                ar = x[:, u : 2 * u] + inner[:, u : 2 * u]
                z, r = ract.f(xp, az), ract.f(xp, ar)
                ih = inner[:, 2 * u :]
                ah = x[:, 2 * u :] + r * ih
            else:
                inner = hd @ U[:, : 2 * u]
                az = x[:, :u] + inner[:, :u]
                ar = x[:, u : 2 * u] + inner[:, u:]
                z, r = ract.f(xp, az), ract.f(xp, ar)
                ih = r * hd  # kept for backward: the left factor of the h-gate product
                ah = x[:, 2 * u :] + ih @ U[:, 2 * u :]
            hh = act.f(xp, ah)
            hn = z * h + (1 - z) * hh
            m, mf = _step_mask(xp, spec, t, h.dtype)
            saved.append((hd, h, az, ar, z, r, ih, ah, hh, mf))
            h = hn if m is None else xp.where(m, hn, h)
            outs.append(h)
        outputs = (h,)
        if spec.return_sequences:
            outputs = (xp.stack(outs, axis=0),) + outputs
        return outputs, saved

    def backward(self, xp, spec, saved, U, d_seq, d_h, d_c, needs):
        act = RECURRENT_ACTIVATIONS[spec.activation]
        ract = RECURRENT_ACTIVATIONS[spec.recurrent_activation]
        rm = spec.recurrent_mask
        u = U.shape[0]
        dh = d_h
        dxs, dinners, hds, rhs = [], [], [], []
        for k in range(len(saved) - 1, -1, -1):
            hd, h_prev, az, ar, z, r, ih, ah, hh, mf = saved[k]
            if d_seq is not None:
                dh = dh + d_seq[k, ...]
            keep = None
            if mf is not None:
                keep = dh * (1 - mf)
                dh = dh * mf
            daz = dh * (h_prev - hh) * ract.df(xp, az, z)
            dah = dh * (1 - z) * act.df(xp, ah, hh)
            direct = dh * z
            if spec.reset_after:
                dar = dah * ih * ract.df(xp, ar, r)
                dinner = xp.concat([daz, dar, dah * r], axis=1)
                dhd = dinner @ U.T
                dinners.append(dinner)
            else:
                drh = dah @ U[:, 2 * u :].T
                dar = drh * hd * ract.df(xp, ar, r)
                dzr = xp.concat([daz, dar], axis=1)
                dhd = dzr @ U[:, : 2 * u].T + drh * r
                dinners.append(dzr)
                rhs.append(ih)
            dh = direct + (dhd if rm is None else dhd * rm)
            if keep is not None:
                dh = dh + keep
            dxs.append(xp.concat([daz, dar, dah], axis=1))
            hds.append(hd)
        dxs.reverse()
        dinners.reverse()
        hds.reverse()
        rhs.reverse()
        dU = drb = None
        if needs[1]:
            if spec.reset_after:
                dU = _matmul_sum(xp, hds, dinners)
            else:
                dah_all = [d[:, 2 * u :] for d in dxs]
                dU = xp.concat(
                    [_matmul_sum(xp, hds, dinners), _matmul_sum(xp, rhs, dah_all)], axis=1
                )
        if needs[2] and spec.reset_after:
            drb = xp.sum(xp.stack(dinners, axis=0), axis=(0, 1))
        return _dx(xp, spec, dxs), dU, drb, dh, None


GENERIC = {"rnn": GenericRNN(), "lstm": GenericLSTM(), "gru": GenericGRU()}


# ---------------------------------------------------------------------------
# the Function


class RecurrentSequence(Function):
    """The whole recurrent loop of one layer call; inputs ``(xproj, U, rbias, h0, c0)``
    (``rbias``/``c0`` may be None); see the module docstring for shapes."""

    def __init__(self, spec):
        self.spec = spec

    @property
    def name(self):
        return f"{self.spec.cell}_sequence"

    def forward(self, xproj, U, rbias=None, h0=None, c0=None):
        spec, xp = self.spec, self.xp
        result = None
        kernel = self.backend.kernel(f"{spec.cell}_sequence")
        if kernel is not None:
            result = kernel.forward(spec, xproj, U, rbias, h0, c0)
            self.impl = kernel
        if result is None:
            self.impl = GENERIC[spec.cell]
            result = self.impl.forward(xp, spec, xproj, U, rbias, h0, c0)
        outputs, self.saved = result
        self.U = U
        self.state_like = (tuple(h0.shape), h0.dtype, h0.device)
        if not any(self.needs_input_grad):
            self.saved = None
        return outputs

    def backward(self, *grads):
        spec, xp = self.spec, self.xp
        grads = list(grads)
        d_seq = grads.pop(0) if spec.return_sequences else None
        d_h = grads[0]
        d_c = grads[1] if spec.cell == "lstm" else None
        shape, dtype, device = self.state_like
        if d_h is None:
            d_h = xp.zeros(shape, dtype=dtype, device=device)
        if spec.cell == "lstm" and d_c is None:
            d_c = xp.zeros(shape, dtype=dtype, device=device)
        needs = self.needs_input_grad + (False,) * (5 - len(self.needs_input_grad))
        if isinstance(self.impl, (GenericRNN, GenericLSTM, GenericGRU)):
            out = self.impl.backward(xp, spec, self.saved, self.U, d_seq, d_h, d_c, needs)
        else:
            out = self.impl.backward(spec, self.saved, d_seq, d_h, d_c, needs)
        dx, dU, drb, dh0, dc0 = out
        return (dx, dU, drb, dh0, dc0)[: len(self.inputs)]

    def release(self):
        super().release()
        self.saved = self.U = None


def recurrent_sequence(spec, xproj, recurrent_kernel, recurrent_bias=None, h0=None, c0=None):
    """Run the loop described by ``spec`` (a :class:`SequenceSpec`) and return a tuple
    of Tensors: ``(sequence (T, B, u),)`` when ``spec.return_sequences``, then the
    final ``h`` (and ``c`` for the LSTM). ``h0``/``c0`` default to zeros."""
    xproj_value = xproj.value if isinstance(xproj, Tensor) else xproj
    u = recurrent_kernel.shape[0]
    batch = xproj_value.shape[1]
    expected = u * spec.gates
    if tuple(xproj_value.shape[2:]) != (expected,):
        raise ValueError(
            f"{spec.cell}_sequence: xproj of shape {tuple(xproj_value.shape)} does not match a "
            f"recurrent kernel of shape {tuple(recurrent_kernel.shape)} "
            f"(expected last axis {expected})"
        )
    if h0 is None or (spec.cell == "lstm" and c0 is None):
        from ..backends import backend_of

        xp = backend_of(xproj_value).xp
        zeros = xp.zeros((batch, u), dtype=xproj_value.dtype, device=xproj_value.device)
        h0 = zeros if h0 is None else h0
        if spec.cell == "lstm" and c0 is None:
            c0 = zeros
    if spec.cell == "lstm":
        return RecurrentSequence(spec)(xproj, recurrent_kernel, recurrent_bias, h0, c0)
    return RecurrentSequence(spec)(xproj, recurrent_kernel, recurrent_bias, h0)


def lstm_sequence(xproj, recurrent_kernel, h0=None, c0=None, **options):
    """LSTM loop over time-major ``xproj (T, B, 4u)``; options as :class:`SequenceSpec`."""
    return recurrent_sequence(
        SequenceSpec("lstm", **options), xproj, recurrent_kernel, None, h0, c0
    )


def gru_sequence(xproj, recurrent_kernel, recurrent_bias=None, h0=None, **options):
    """GRU loop over time-major ``xproj (T, B, 3u)``; options as :class:`SequenceSpec`."""
    return recurrent_sequence(
        SequenceSpec("gru", **options), xproj, recurrent_kernel, recurrent_bias, h0
    )


def rnn_sequence(xproj, recurrent_kernel, h0=None, **options):
    """SimpleRNN loop over time-major ``xproj (T, B, u)``; options as :class:`SequenceSpec`."""
    options.setdefault("activation", "tanh")
    return recurrent_sequence(SequenceSpec("rnn", **options), xproj, recurrent_kernel, None, h0)


class SequenceProjection(Function):
    """The input projection of a recurrent layer for all time steps at once.

    ``x (B, T, F)`` batch-major, ``kernel (F, G)``, ``bias (G,)`` or None;
    returns the time-major ``xproj (T, B, G)`` with ``xproj[t] = x[:, t] @ kernel
    + bias``, the layout the sequence ops take. A backend kernel
    ``sequence_projection`` (optional) has ``forward(x, kernel, bias) -> (xproj,
    saved)`` and ``backward(saved, g, needs) -> (dx, dkernel, dbias)``.
    """

    @property
    def name(self):
        return "sequence_projection"

    def forward(self, x, kernel, bias=None):
        impl = self.backend.kernel("sequence_projection")
        if impl is not None:
            self.impl = impl
            xproj, self.saved = impl.forward(x, kernel, bias)
            return xproj
        xp = self.xp
        self.impl = None
        batch, steps, features = x.shape
        x2 = xp.reshape(xp.permute_dims(x, (1, 0, 2)), (steps * batch, features))
        xproj = x2 @ kernel
        if bias is not None:
            xproj = xproj + bias
        self.saved = (x2, kernel, (batch, steps, features))
        return xp.reshape(xproj, (steps, batch, kernel.shape[1]))

    def backward(self, g):
        needs = self.needs_input_grad + (False,) * (3 - len(self.needs_input_grad))
        if self.impl is not None:
            dx, dk, db = self.impl.backward(self.saved, g, needs)
        else:
            xp = self.xp
            x2, kernel, (batch, steps, features) = self.saved
            g2 = xp.reshape(g, (steps * batch, kernel.shape[1]))
            dx = dk = db = None
            if needs[0]:
                dx = xp.reshape(g2 @ kernel.T, (steps, batch, features))
                dx = xp.permute_dims(dx, (1, 0, 2))
            if needs[1]:
                dk = x2.T @ g2
            if needs[2]:
                db = xp.sum(g2, axis=0)
        return (dx, dk, db)[: len(self.inputs)]

    def release(self):
        super().release()
        self.saved = None


def sequence_projection(x, kernel, bias=None):
    """Time-major ``(T, B, G)`` projection of batch-major ``x (B, T, F)``; see
    :class:`SequenceProjection`."""
    if bias is None:
        return SequenceProjection()(x, kernel)
    return SequenceProjection()(x, kernel, bias)


class Flip(Function):
    """Reverse the order of the entries along ``axis`` (e.g. the time axis)."""

    def __init__(self, axis):
        self.axis = axis

    def forward(self, x):
        return self.xp.flip(x, axis=self.axis)

    def backward(self, g):
        return self.xp.flip(g, axis=self.axis)


def flip(x, axis):
    """``x`` with the entries along ``axis`` in reverse order (differentiable)."""
    return Flip(axis)(x)
