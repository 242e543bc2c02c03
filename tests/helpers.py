"""Test helpers: finite-difference gradient checks, host conversions, spies on compiled kernels."""

import collections

import numpy as np

import dlx


def to_host(x):
    return dlx.to_numpy(x)


def numeric_gradient(fn, arrays, index, eps=1e-6):
    """Central differences of ``fn(*arrays)`` (a float) with respect to ``arrays[index]``."""
    base = [np.array(a, dtype=np.float64, copy=True, order="C") for a in arrays]
    target = base[index]
    grad = np.zeros_like(target)
    flat, gflat = target.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + eps
        plus = fn(*base)
        flat[i] = original - eps
        minus = fn(*base)
        flat[i] = original
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def check_gradients(fn, arrays, wrt=None, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0):
    """Compare autograd gradients of ``fn`` with central differences, in float64.

    ``fn`` takes Tensors and returns a Tensor (or a list of Tensors); the
    scalar checked is ``sum(output * R)`` with a fixed random ``R`` so every
    output element matters. ``wrt`` selects which inputs to check (default all).
    Returns the analytic gradients (host arrays).
    """
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    wrt = range(len(arrays)) if wrt is None else wrt
    weights = {}

    def scalar_of(outputs):
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        total = 0.0
        for i, out in enumerate(outputs):
            if i not in weights:
                weights[i] = rng.standard_normal(tuple(out.shape))
            total = total + (out * dlx.asarray(weights[i], dtype=out.dtype)).sum()
        return total

    tensors = [dlx.Tensor(a, requires_grad=i in wrt) for i, a in enumerate(arrays)]
    scalar_of(fn(*tensors)).backward()
    analytic = [to_host(t.grad) if t.grad is not None else None for t in tensors]

    def value(*host_arrays):
        with dlx.no_grad():
            outputs = fn(*[dlx.Tensor(a) for a in host_arrays])
            return float(to_host(scalar_of(outputs).value))

    for i in wrt:
        numeric = numeric_gradient(value, arrays, i, eps)
        assert analytic[i] is not None, f"input {i} received no gradient"
        np.testing.assert_allclose(
            analytic[i], numeric, rtol=rtol, atol=atol, err_msg=f"gradient of input {i}"
        )
    return analytic


def check_layer_gradients(layer, x, rtol=1e-5, atol=1e-7, training=False, **call_kwargs):
    """Gradient check of a float64 layer with respect to its input and every trainable weight."""
    x = np.asarray(x, dtype=np.float64)
    layer(dlx.Tensor(x), training=training, **call_kwargs)  # build
    weights = layer.trainable_weights
    initial = [to_host(w.value) for w in weights]

    # check the input gradient with weights fixed, then each weight through a wrapper
    check_gradients(
        lambda xt: layer(xt, training=training, **call_kwargs), [x], rtol=rtol, atol=atol
    )
    for index, w in enumerate(weights):

        def with_weight(wt, w=w):
            saved = w.value
            w.value = wt.value
            try:
                out = layer(dlx.Tensor(x), training=training, **call_kwargs)
            finally:
                w.value = saved
            return out

        # analytic gradient of the weight through the Variable itself
        w.grad = None
        rng = np.random.default_rng(1)
        out = layer(dlx.Tensor(x), training=training, **call_kwargs)
        outs = out if isinstance(out, (list, tuple)) else [out]
        r = [rng.standard_normal(tuple(o.shape)) for o in outs]
        total = sum((o * dlx.asarray(ri, dtype=o.dtype)).sum() for o, ri in zip(outs, r))
        total.backward()
        analytic = to_host(w.grad)
        w.grad = None

        def value(host_w, w=w, r=r):
            with dlx.no_grad():
                out = with_weight(dlx.Tensor(host_w))
                outs = out if isinstance(out, (list, tuple)) else [out]
                return float(sum(float((to_host(o.value) * ri).sum()) for o, ri in zip(outs, r)))

        numeric = numeric_gradient(value, [initial[index]], 0)
        np.testing.assert_allclose(
            analytic, numeric, rtol=rtol, atol=atol, err_msg=f"gradient of weight {w.name}"
        )


def count_compiled_calls(monkeypatch, source, key=lambda name, args: name):
    """The compiled kernels on, and a Counter, filled as they run, of the calls to the
    functions of ``backends/cpu/<source>.cpp`` (by ``key(name, args)``)."""
    from dlx.backends import cpu_kernels

    monkeypatch.delenv("DLX_KERNELS", raising=False)
    dlx.backends.set_kernels_enabled(True)  # the autouse fixture restores it
    cpu_kernels.forget()
    counter = collections.Counter()
    real = cpu_kernels.compiled

    def spy(source_name, name, dtype, *argtypes):
        found = real(source_name, name, dtype, *argtypes)
        if found is None or source_name != source:
            return found

        def counted(*args):
            counter[key(name, args)] += 1
            return found(*args)

        return counted

    monkeypatch.setattr(cpu_kernels, "compiled", spy)
    return counter
