"""Forward values and gradients of conv, conv_transpose and pooling against
PyTorch (``torch.nn.functional``), layouts transposed; skipped without torch.

PyTorch pads symmetrically, so asymmetric "same" padding is applied by hand
with ``F.pad``; a transposed convolution is PyTorch's full ``conv_transpose``
cropped (or zero-extended) by the pads of the convolution it inverts.
"""

import itertools

import numpy as np
import pytest

import dlx
from dlx import ops
from dlx.ops.convolution import conv_padding, transpose_padding

torch = pytest.importorskip("torch")
F = torch.nn.functional


def _to_torch(x, rank):
    """channels_last host array -> NC* torch tensor requiring grad."""
    return torch.tensor(np.moveaxis(x, -1, 1), requires_grad=True)


def _from_torch(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


def _torch_pad(t, pads):
    flat = []
    for before, after in reversed(pads):
        flat += [before, after]
    return F.pad(t, flat)


def _dlx(fn, arrays, r):
    tensors = [dlx.Tensor(a, requires_grad=True) for a in arrays]
    y = fn(*tensors)
    (y * dlx.asarray(r(y.shape))).sum().backward()
    return dlx.to_numpy(y), [dlx.to_numpy(t.grad) for t in tensors]


def _rand(seed):
    rng = np.random.default_rng(seed)
    return lambda shape: rng.standard_normal(shape)


CONV = [
    (rank, s, d, pad, g)
    for rank, s, d, pad, g in itertools.product(
        (1, 2, 3), (1, 2), (1, 2), ("valid", "same"), (1, 2)
    )
    if not (s > 1 and d > 1)
]


@pytest.mark.parametrize("kernels", [True, False], ids=["kernel", "generic"])
@pytest.mark.parametrize("rank,strides,dilation,padding,groups", CONV)
def test_conv_matches_torch(rank, strides, dilation, padding, groups, kernels):
    dlx.backends.set_kernels_enabled(kernels)
    rand = _rand(rank + 10 * strides)
    spatial, ksize = (6, 5, 4)[:rank], (3, 2, 2)[:rank]
    x, w, b = rand((2,) + spatial + (4,)), rand(ksize + (4 // groups, 6)), rand((6,))
    y, (gx, gw, gb) = _dlx(
        lambda x, w, b: ops.conv(
            x, w, b, strides=strides, padding=padding, dilation_rate=dilation, groups=groups
        ),
        [x, w, b],
        _rand(1),
    )
    xt = _to_torch(x, rank)
    wt = torch.tensor(np.transpose(w, (rank + 1, rank) + tuple(range(rank))), requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    pads = [conv_padding(n, k, strides, dilation, padding) for n, k in zip(spatial, ksize)]
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]
    yt = conv(_torch_pad(xt, pads), wt, bt, stride=strides, dilation=dilation, groups=groups)
    yt.backward(torch.tensor(np.moveaxis(_rand(1)(y.shape), -1, 1)))
    np.testing.assert_allclose(y, _from_torch(yt), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gx, _from_torch(xt.grad), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        gw, np.transpose(wt.grad.numpy(), tuple(range(2, rank + 2)) + (1, 0)), rtol=1e-9, atol=1e-9
    )
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-9, atol=1e-9)


TRANSPOSE = [
    (rank, s, k, pad, op)
    for rank, s, k, pad, op in itertools.product(
        (1, 2, 3), (1, 2, 3), (2, 3), ("valid", "same"), (None, 0)
    )
]


@pytest.mark.parametrize("kernels", [True, False], ids=["kernel", "generic"])
@pytest.mark.parametrize("rank,strides,k,padding,output_padding", TRANSPOSE)
def test_conv_transpose_matches_torch(rank, strides, k, padding, output_padding, kernels):
    dlx.backends.set_kernels_enabled(kernels)
    rand = _rand(rank + 10 * strides + k)
    spatial, ksize = (4, 3, 3)[:rank], (k,) * rank
    x, w, b = rand((2,) + spatial + (3,)), rand(ksize + (5, 3)), rand((5,))
    y, (gx, gw, gb) = _dlx(
        lambda x, w, b: ops.conv_transpose(
            x, w, b, strides=strides, padding=padding, output_padding=output_padding
        ),
        [x, w, b],
        _rand(2),
    )
    xt = _to_torch(x, rank)
    # torch weight (in=C, out=F, *K); ours (*K, F, C)
    wt = torch.tensor(np.transpose(w, (rank + 1, rank) + tuple(range(rank))), requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    convt = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[rank]
    pads = [transpose_padding(k, strides, 1, padding, output_padding) for _ in range(rank)]
    # crop the conv pads (negative = extend with zeros; those cells hold only the bias)
    cropped = convt(xt, wt, None, stride=strides)
    cropped = _torch_pad(cropped, [(-b_, -a_) for b_, a_ in pads])
    yt = cropped + bt.reshape((1, -1) + (1,) * rank)
    yt.backward(torch.tensor(np.moveaxis(_rand(2)(y.shape), -1, 1)))
    np.testing.assert_allclose(y, _from_torch(yt), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gx, _from_torch(xt.grad), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        gw, np.transpose(wt.grad.numpy(), tuple(range(2, rank + 2)) + (1, 0)), rtol=1e-9, atol=1e-9
    )
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-9, atol=1e-9)


POOL = list(itertools.product((1, 2, 3), ("max", "avg"), (2, 3), (1, 2)))


@pytest.mark.parametrize("kernels", [True, False], ids=["kernel", "generic"])
@pytest.mark.parametrize("rank,kind,pool_size,strides", POOL)
def test_pool_valid_matches_torch(rank, kind, pool_size, strides, kernels):
    dlx.backends.set_kernels_enabled(kernels)
    x = _rand(rank + pool_size)((2,) + (7, 6, 5)[:rank] + (3,))
    y, (gx,) = _dlx(
        lambda x: ops.pool(x, kind, (pool_size,) * rank, (strides,) * rank), [x], _rand(3)
    )
    xt = _to_torch(x, rank)
    fn = getattr(F, f"{kind}_pool{rank}d")
    yt = fn(xt, pool_size, strides)
    yt.backward(torch.tensor(np.moveaxis(_rand(3)(y.shape), -1, 1)))
    np.testing.assert_allclose(y, _from_torch(yt), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gx, _from_torch(xt.grad), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernels", [True, False], ids=["kernel", "generic"])
def test_max_pool_ties_follow_torch(kernels):
    """After a ReLU many windows tie at 0: the first cell of the window gets the gradient."""
    dlx.backends.set_kernels_enabled(kernels)
    x = np.maximum(np.round(_rand(5)((2, 6, 6, 3))), 0)
    y, (gx,) = _dlx(lambda x: ops.max_pool(x, (2, 2)), [x], _rand(4))
    xt = _to_torch(x, 2)
    yt = F.max_pool2d(xt, 2)
    yt.backward(torch.tensor(np.moveaxis(_rand(4)(y.shape), -1, 1)))
    np.testing.assert_array_equal(gx, _from_torch(xt.grad))


@pytest.mark.parametrize("kernels", [True, False], ids=["kernel", "generic"])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_same_ignores_padding_like_torch_with_explicit_padding(kind, kernels):
    """Symmetric "same" padding (odd pool, stride 1): torch's padding=1 with
    count_include_pad=False / -inf padding is exactly Keras's rule."""
    dlx.backends.set_kernels_enabled(kernels)
    x = _rand(6)((2, 5, 6, 3)) - 3.0  # all negative: zero padding would win a max
    y, (gx,) = _dlx(lambda x: ops.pool(x, kind, (3, 3), (1, 1), "same"), [x], _rand(7))
    xt = _to_torch(x, 2)
    if kind == "max":
        yt = F.max_pool2d(xt, 3, 1, padding=1)
    else:
        yt = F.avg_pool2d(xt, 3, 1, padding=1, count_include_pad=False)
    yt.backward(torch.tensor(np.moveaxis(_rand(7)(y.shape), -1, 1)))
    np.testing.assert_allclose(y, _from_torch(yt), rtol=1e-12)
    np.testing.assert_allclose(gx, _from_torch(xt.grad), rtol=1e-12, atol=1e-14)
