"""Scaled dot-product attention as one fused Function.

Layout (PyTorch's ``scaled_dot_product_attention``): ``query (..., Tq, Dk)``,
``key (..., Tk, Dk)``, ``value (..., Tk, Dv)`` -> ``(..., Tq, Dv)``; the leading
axes (batch, heads) are shared. ``mask`` is boolean (True = attend) and broadcasts
to the scores' shape ``(..., Tq, Tk)``; ``is_causal`` keeps key ``j`` for query
``i`` only when ``j <= i`` (top-left aligned, as Keras and PyTorch).

Masked scores are replaced by ``-1e9`` (Keras's "large negative") and the
probabilities of masked keys are set to exactly zero after the softmax, as Keras's
MultiHeadAttention does: a query whose keys are all masked gets all-zero
probabilities and a zero output (PyTorch would give NaN).

The backend kernel ``"scaled_dot_product_attention"``, when registered, is called
as ``kernel(query, key, value, mask, scale)`` (``mask`` a boolean array or None,
causal mask already folded in) and returns ``(output, probabilities)`` or None
to defer to the generic code.
"""

import math

from ..autograd import Function, Tensor, as_backend_array
from ._util import sum_to_shape

LARGE_NEGATIVE = -1e9


def _softmax(xp, s):
    s = s - xp.max(s, axis=-1, keepdims=True)
    e = xp.exp(s)
    return e / xp.sum(e, axis=-1, keepdims=True)


class ScaledDotProductAttention(Function):
    """``softmax(q @ k^T * scale masked) [dropout] @ v``; outputs ``(output, probabilities)``.

    ``probabilities`` (..., Tq, Tk) are taken before dropout (as Keras's
    MultiHeadAttention returns them).
    """

    def __init__(self, mask=None, scale=None, dropout_rate=0.0):
        self.mask = mask
        self.scale = scale
        self.dropout_rate = float(dropout_rate)

    def forward(self, q, k, v):
        xp = self.xp
        self.q, self.k, self.v = q, k, v
        scale = self.scale if self.scale is not None else 1.0 / math.sqrt(q.shape[-1])
        self.scale_used = scale
        result = None
        kernel = self.backend.kernel("scaled_dot_product_attention")
        if kernel is not None:
            result = kernel(q, k, v, self.mask, scale)
        if result is not None:
            out, probs = result
        else:
            scores = (q @ xp.matrix_transpose(k)) * scale
            if self.mask is not None:
                scores = xp.where(self.mask, scores, LARGE_NEGATIVE)
            probs = _softmax(xp, scores)
            if self.mask is not None:
                probs = xp.where(self.mask, probs, 0.0)
            out = None
        self.probs = probs
        self.keep = None
        if self.dropout_rate > 0:
            keep_p = 1.0 - self.dropout_rate
            self.keep = (
                self.backend.random_bits(tuple(probs.shape), keep_p, dtype=probs.dtype) / keep_p
            )
            out = (probs * self.keep) @ v
        elif out is None:
            out = probs @ v
        self.out_shape = tuple(out.shape)
        return out, probs

    def backward(self, g_out, g_probs):
        xp, q, k, v, p = self.xp, self.q, self.k, self.v, self.probs
        need_q, need_k, need_v = self.needs_input_grad
        dropped = p if self.keep is None else p * self.keep
        gq = gk = gv = None
        if g_out is None:  # only the probabilities were used
            g_out = xp.zeros(self.out_shape, dtype=p.dtype, device=p.device)
        if need_v:
            gv = sum_to_shape(xp, xp.matrix_transpose(dropped) @ g_out, tuple(v.shape))
        if need_q or need_k:
            dp = g_out @ xp.matrix_transpose(v)
            if self.keep is not None:
                dp = dp * self.keep
            if g_probs is not None:
                dp = dp + g_probs
            ds = p * (dp - xp.sum(dp * p, axis=-1, keepdims=True))
            if self.mask is not None:
                ds = xp.where(self.mask, ds, 0.0)
            ds = ds * self.scale_used
            if need_q:
                gq = sum_to_shape(xp, ds @ k, tuple(q.shape))
            if need_k:
                gk = sum_to_shape(xp, xp.matrix_transpose(ds) @ q, tuple(k.shape))
        return gq, gk, gv

    def release(self):
        super().release()
        self.q = self.k = self.v = self.probs = self.keep = self.mask = None


def causal_mask(xp, tq, tk, device=None):
    """Boolean ``(tq, tk)``: True where key ``j <= i`` for query ``i``."""
    rows = xp.reshape(xp.arange(tq, device=device), (tq, 1))
    cols = xp.reshape(xp.arange(tk, device=device), (1, tk))
    return rows >= cols


def _broadcast_shape(a, b):
    """NumPy broadcasting of two shapes, or None when they do not broadcast."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x != y and x != 1 and y != 1:
            return None
        out.append(max(x, y) if x != 1 and y != 1 else (y if x == 1 else x))
    return tuple(reversed(out))


def prepare_mask(mask, scores_shape, like, where="scaled_dot_product_attention", name="mask"):
    """``mask`` (Tensor, array, host data; bool or 0/1) as a boolean array of ``like``'s
    backend; raises ValueError naming ``where`` and both shapes unless it broadcasts
    to ``scores_shape``."""
    if mask is None:
        return None
    value = mask.value if isinstance(mask, Tensor) else as_backend_array(mask)
    xp = like.xp if isinstance(like, Tensor) else None
    if xp is None:
        from ..backends import backend_of

        xp = backend_of(like).xp
    if tuple(value.shape) != tuple(scores_shape) and (
        len(value.shape) > len(scores_shape)
        or _broadcast_shape(tuple(value.shape), tuple(scores_shape)) != tuple(scores_shape)
    ):
        raise ValueError(
            f"{where}: {name} of shape {tuple(value.shape)} does not broadcast to the attention "
            f"scores' shape {tuple(scores_shape)} (..., query length, key length)"
        )
    if value.dtype != xp.bool:
        value = value != 0
    return value


def scaled_dot_product_attention(
    query,
    key,
    value,
    mask=None,
    is_causal=False,
    scale=None,
    dropout_rate=0.0,
    training=False,
    return_scores=False,
):
    """Attention of ``query`` over ``key``/``value``.

    Shapes: query ``(..., Tq, Dk)``, key ``(..., Tk, Dk)``, value ``(..., Tk, Dv)``;
    ``mask`` broadcasts to ``(..., Tq, Tk)`` (True = attend); ``scale`` defaults to
    ``1/sqrt(Dk)``; dropout on the probabilities only when ``training``.
    Returns ``(..., Tq, Dv)``, and the probabilities ``(..., Tq, Tk)`` too with
    ``return_scores``.
    """
    qs, ks, vs = (tuple(t.shape) for t in (query, key, value))
    if len(qs) < 2 or len(ks) < 2 or len(vs) < 2:
        raise ValueError(
            f"scaled_dot_product_attention: query, key and value need at least 2 dimensions "
            f"(..., length, features), got {qs}, {ks}, {vs}"
        )
    if qs[-1] != ks[-1] or ks[-2] != vs[-2] or qs[:-2] != ks[:-2] or ks[:-2] != vs[:-2]:
        raise ValueError(
            f"scaled_dot_product_attention: incompatible shapes query {qs}, key {ks}, value {vs}: "
            f"query and key need the same feature size, key and value the same length, and all "
            f"three the same leading (batch, heads) axes"
        )
    if not 0 <= dropout_rate < 1:
        raise ValueError(
            f"scaled_dot_product_attention: dropout_rate must be in [0, 1), got {dropout_rate}"
        )
    scores_shape = qs[:-1] + (ks[-2],)
    first = query if isinstance(query, Tensor) else Tensor(query)
    mask = prepare_mask(mask, scores_shape, first)
    if is_causal:
        xp = first.xp
        causal = causal_mask(xp, qs[-2], ks[-2], device=first.value.device)
        mask = causal if mask is None else xp.logical_and(mask, causal)
    fn = ScaledDotProductAttention(mask, scale, dropout_rate if training else 0.0)
    out, probs = fn(query, key, value)
    return (out, probs) if return_scores else out
