"""Masking layer and mask propagation through wrappers."""

import numpy as np
import pytest
from helpers import check_layer_gradients, to_host

import dlx
from dlx import layers


def _padded():
    x = np.random.default_rng(0).standard_normal((2, 5, 3)).astype("float32")
    x[0, 3:] = 0.0
    x[1, 1] = 0.0
    return x, np.array([[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]], bool)


def test_masking_output_and_mask(backend):
    x, mask = _padded()
    x[0, 4] = -1.0  # a step equal to mask_value=-1 everywhere
    x[0, 4, :] = -1.0
    layer = layers.Masking(mask_value=-1.0)
    out = layer(x)
    expected_mask = np.any(x != -1.0, axis=-1)
    np.testing.assert_array_equal(to_host(out.mask), expected_mask)
    np.testing.assert_array_equal(to_host(out), x * expected_mask[..., None])


def test_masking_gradient_passes_unmasked_steps(backend):
    dlx.set_floatx("float64")
    x, mask = _padded()
    xt = dlx.Tensor(x.astype("float64"), requires_grad=True)
    out = layers.Masking(dtype="float64")(xt)
    out.sum().backward()
    np.testing.assert_array_equal(
        to_host(xt.grad), np.broadcast_to(mask[..., None], x.shape).astype(float)
    )


@pytest.mark.parametrize("cell", [layers.LSTM, layers.GRU, layers.SimpleRNN])
def test_masking_then_recurrent_matches_truncated(backend, cell):
    x, mask = _padded()
    model = dlx.Sequential([layers.Input((5, 3)), layers.Masking(), cell(4, return_sequences=True)])
    seq = to_host(model.predict_on_batch(x))
    rnn = model.layers[-1]
    short = to_host(rnn(x[:1, :3]))
    np.testing.assert_allclose(seq[0, :3], short[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(seq[0, 3], seq[0, 2])
    np.testing.assert_array_equal(seq[1, 1], seq[1, 0])


def test_mask_through_bidirectional_and_time_distributed(backend):
    x, mask = _padded()
    masked = layers.Masking()(x)
    bi = layers.Bidirectional(layers.LSTM(2, return_sequences=True))(masked)
    np.testing.assert_array_equal(to_host(bi.mask), mask)
    td = layers.TimeDistributed(layers.Dense(3))(bi)
    np.testing.assert_array_equal(to_host(td.mask), mask)
    last = layers.GRU(2)(td)
    assert last.mask is None
    # the backward direction of a padded sample starts at its last real step
    fwd_bwd = layers.Bidirectional(layers.SimpleRNN(2, return_sequences=True), merge_mode=None)
    f, b = fwd_bwd(masked)
    b = to_host(b)
    short = to_host(fwd_bwd.backward_layer(x[:1, :3]))[:, ::-1]
    np.testing.assert_allclose(b[0, :3], short[0], rtol=1e-5, atol=1e-6)


def _nested_padded():
    """(batch=2, outer=3, inner=4, features=2) with each inner sequence padded at its end."""
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 2))
    lengths = np.array([[4, 2, 1], [3, 0, 4]])
    mask = np.arange(4)[None, None, :] < lengths[..., None]
    return x * mask[..., None], mask, lengths


@pytest.mark.parametrize("return_sequences", [False, True])
def test_time_distributed_passes_the_mask_to_the_wrapped_layer(backend, return_sequences):
    """A recurrent layer over inner sequences sees their mask, folded to (batch*outer, inner)."""
    dlx.set_floatx("float64")
    x, mask, lengths = _nested_padded()
    lstm = layers.LSTM(3, return_sequences=return_sequences, dtype="float64")
    td = layers.TimeDistributed(lstm, dtype="float64")
    out = td(dlx.Tensor(x), mask=dlx.asarray(mask))
    out_host = to_host(out)
    for b in range(2):
        for t in range(3):
            n = lengths[b, t]
            if n == 0:
                continue
            alone = to_host(lstm(dlx.Tensor(x[b : b + 1, t, :n])))[0]
            if return_sequences:  # padded steps repeat the last real output
                np.testing.assert_allclose(out_host[b, t, :n], alone, rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(out_host[b, t, n:], alone[-1:].repeat(4 - n, 0))
            else:
                np.testing.assert_allclose(out_host[b, t], alone, rtol=1e-10, atol=1e-12)
    # the output mask: the LSTM's own (the inner mask) unfolded, or any step of it
    expected = mask if return_sequences else mask.any(axis=-1)
    np.testing.assert_array_equal(to_host(out.mask), expected)


def test_time_distributed_mask_gradients(backend):
    dlx.set_floatx("float64")
    x, mask, _ = _nested_padded()
    td = layers.TimeDistributed(layers.GRU(2, dtype="float64"), dtype="float64")
    check_layer_gradients(td, x, mask=dlx.asarray(mask))


def test_time_distributed_mask_shape_error():
    x, mask, _ = _nested_padded()
    td = layers.TimeDistributed(layers.LSTM(2))
    with pytest.raises(ValueError, match=r"TimeDistributed .*mask of shape \(3, 2\).*\(2, 3\)"):
        td(x.astype("float32"), mask=mask[:, :, 0].T)
