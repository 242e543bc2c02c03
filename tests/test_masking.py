"""Masking layer and mask propagation through wrappers."""

import numpy as np
import pytest
from helpers import to_host

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
