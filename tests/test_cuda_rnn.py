"""The CUDA recurrent-step kernels (``backends/cuda/recurrent.cu`` driven by
``backends/cupy_rnn.py``) compute what the generic recurrent loops compute.

Everything here runs on the CPU: the same .cu source is compiled by g++ against
the project's CUDA emulation header, and the glue runs with ``xp = numpy``.

* Op level: ``RecurrentSequence`` with the CUDA kernel objects installed in the
  numpy backend's kernel table, against the same op with the kernel table off
  (the generic Array API loop): outputs and the gradients of every input, for
  each cell, masks, ``go_backwards``, ``return_sequences``, recurrent dropout
  masks and several activations, in float64 (tight) and float32 (rtol 1e-5);
  launches with fewer threads than cells (grid-stride loops); what falls back.
* Layer level, on the ``cuda_emulation`` backend (NumPy arrays, the GPU kernel
  table): float64 finite-difference gradient checks of SimpleRNN, LSTM, GRU
  (both ``reset_after``) and Bidirectional layers, dropout and recurrent dropout
  against the numpy backend, and the ``lstm_train`` workload training with the
  numpy backend's losses. A spy asserts the CUDA kernels ran (no silent fallback).
"""

import functools
import itertools
import os
import re
import shutil

import numpy as np
import pytest
from cuda_emulation import emulated_backend  # noqa: F401 (fixture)
from dlx.backends import cupy_rnn
from helpers import check_gradients, check_layer_gradients, to_host

import dlx
from dlx import layers, losses
from dlx.ops.recurrent import GENERIC, RecurrentSequence, SequenceSpec, recurrent_sequence

pytestmark = pytest.mark.usefixtures("kernels_on")  # also under DLX_KERNELS=generic

KERNEL_NAMES = ("rnn_sequence", "lstm_sequence", "gru_sequence")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}


@pytest.fixture(scope="module")
def cuda_rnn():
    """``{"rnn_sequence": ..., ...}`` from ``rnn_kernels`` on NumPy with the g++ loader."""
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("the CUDA emulation needs a C++ compiler (g++ or $CXX) on the PATH")
    from dlx.backends.cuda_modules import load_module

    return cupy_rnn.rnn_kernels(np, functools.partial(load_module, emulate=True))


@pytest.fixture
def installed(cuda_rnn, monkeypatch):
    """The numpy backend with the CUDA kernels in its table (restored afterwards)."""
    backend = dlx.set_backend("numpy")
    for name in KERNEL_NAMES:
        monkeypatch.setitem(backend.kernels, name, cuda_rnn[name])
    return cuda_rnn


def _run_op(
    cell,
    use_kernels,
    dtype,
    *,
    mask=False,
    recurrent_dropout=False,
    loss_on=None,
    seed=1,
    scale=1.0,
    **options,
):
    """Forward and backward of one op; returns ([outputs..., grads...], impl)."""
    dlx.backends.set_kernels_enabled(use_kernels)
    rng = np.random.default_rng(seed)
    steps, batch, units = 5, 3, 4
    gates = GATES[cell]

    def tensor(shape, scale=1.0):
        return dlx.Tensor((rng.standard_normal(shape) * scale).astype(dtype), requires_grad=True)

    xproj = tensor((steps, batch, gates * units), scale)
    u = tensor((units, gates * units), 0.5)
    with_bias = cell == "gru" and options.get("reset_after", True)
    rbias = tensor((gates * units,)) if with_bias else None
    h0 = tensor((batch, units))
    c0 = tensor((batch, units)) if cell == "lstm" else None
    step_mask = rng.random((batch, steps)) > 0.3
    step_mask[0] = False  # one sample fully masked: its state is carried throughout
    dropout_mask = ((rng.random((batch, units)) > 0.3) / 0.7).astype(dtype)
    spec = SequenceSpec(
        cell,
        mask=dlx.asarray(step_mask) if mask else None,
        recurrent_mask=dlx.asarray(dropout_mask) if recurrent_dropout else None,
        **options,
    )
    function = RecurrentSequence(spec)
    inputs = [xproj, u, rbias, h0] + ([c0] if cell == "lstm" else [])
    outs = function(*inputs)
    used = outs if loss_on is None else [outs[i] for i in loss_on]
    total = sum((o * dlx.asarray(rng.standard_normal(o.shape).astype(dtype))).sum() for o in used)
    total.backward()
    values = [to_host(o) for o in outs] + [to_host(t.grad) for t in inputs if t is not None]
    return values, function.impl


def _tolerances(dtype):
    return {"rtol": 1e-12, "atol": 1e-12} if dtype == "float64" else {"rtol": 1e-5, "atol": 1e-6}


def _assert_matches_generic(cell, dtype, **options):
    fast, impl = _run_op(cell, True, dtype, **options)
    assert impl is not GENERIC[cell], "the CUDA kernel fell back to the generic loop"
    assert type(impl).__module__ == cupy_rnn.__name__
    slow, impl = _run_op(cell, False, dtype, **options)
    assert impl is GENERIC[cell]
    assert len(fast) == len(slow)
    for i, (a, b) in enumerate(zip(fast, slow)):
        assert a.shape == b.shape and a.dtype == b.dtype, i
        np.testing.assert_allclose(a, b, err_msg=f"output/gradient {i}", **_tolerances(dtype))


# -- every cell under every combination of the loop options ------------------------------

VARIANTS = [
    ("rnn", {}),
    ("lstm", {}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}),
]
OPTION_GRID = [
    {"go_backwards": gb, "mask": m, "return_sequences": rs, "recurrent_dropout": rd}
    for gb, m, rs, rd in itertools.product((False, True), repeat=4)
]


def _case_id(options):
    on = [k for k, v in options.items() if v]
    return "+".join(on) or "plain"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("options", OPTION_GRID, ids=_case_id)
@pytest.mark.parametrize(
    "cell, cell_options", VARIANTS, ids=["rnn", "lstm", "gru_reset_after", "gru_reset_before"]
)
def test_kernel_matches_generic(installed, cell, cell_options, options, dtype):
    _assert_matches_generic(cell, dtype, **cell_options, **options)


# (cell, options, scale of the input projection: 3 reaches the flat parts of hard_sigmoid
# and relu6 and the saturated ones of sigmoid and tanh)
ACTIVATION_CASES = [
    ("rnn", {"activation": "relu"}, 3.0),
    ("rnn", {"activation": "linear"}, 1.0),
    ("rnn", {"activation": "sigmoid"}, 3.0),
    ("rnn", {"activation": "hard_sigmoid"}, 3.0),
    ("rnn", {"activation": "relu6"}, 6.0),
    ("lstm", {"recurrent_activation": "hard_sigmoid"}, 3.0),
    ("lstm", {"activation": "relu", "recurrent_activation": "sigmoid"}, 3.0),
    ("lstm", {"activation": "linear", "recurrent_activation": "tanh"}, 1.0),
    ("lstm", {"activation": "softsign", "recurrent_activation": "hard_sigmoid"}, 3.0),
    ("gru", {"recurrent_activation": "hard_sigmoid", "reset_after": True}, 3.0),
    ("gru", {"activation": "relu", "reset_after": False}, 3.0),
    ("gru", {"activation": "exponential", "recurrent_activation": "softsign"}, 1.0),
    (
        "gru",
        {"activation": "relu6", "recurrent_activation": "hard_sigmoid", "reset_after": False},
        6.0,
    ),
    (
        "gru",
        {"activation": "sigmoid", "recurrent_activation": "sigmoid", "reset_after": False},
        3.0,
    ),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell, options, scale", ACTIVATION_CASES)
def test_kernel_activations_match_generic(installed, cell, options, scale, dtype):
    _assert_matches_generic(cell, dtype, mask=True, go_backwards=True, scale=scale, **options)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_loss_on_the_sequence_only(installed, cell):
    """No gradient arrives for the final state(s): the op hands the kernel zeros."""
    _assert_matches_generic(cell, "float64", mask=True, loss_on=[0])


def test_lstm_loss_on_the_final_cell_state_only(installed):
    _assert_matches_generic("lstm", "float64", return_sequences=False, loss_on=[1])


def test_gru_reset_after_without_recurrent_bias(installed):
    def run(use_kernels):
        dlx.backends.set_kernels_enabled(use_kernels)
        rng = np.random.default_rng(3)
        x = dlx.Tensor(rng.standard_normal((4, 2, 9)), requires_grad=True)
        u = dlx.Tensor(rng.standard_normal((3, 9)) * 0.5, requires_grad=True)
        spec = SequenceSpec("gru", go_backwards=True)
        seq, h = recurrent_sequence(spec, x, u)  # h0 defaults to zeros
        ((seq * seq).sum() + h.sum()).backward()
        return [to_host(seq), to_host(h), to_host(x.grad), to_host(u.grad)]

    for a, b in zip(run(True), run(False)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_only_the_input_needs_a_gradient(installed):
    """needs = (True, False, ...): no recurrent-kernel gradient is computed."""
    results = []
    for use_kernels in (True, False):
        dlx.backends.set_kernels_enabled(use_kernels)
        rng = np.random.default_rng(4)
        x = dlx.Tensor(rng.standard_normal((3, 2, 8)), requires_grad=True)
        u = dlx.Tensor(rng.standard_normal((2, 8)))
        (c,) = recurrent_sequence(SequenceSpec("lstm", return_sequences=False), x, u)[1:]
        (c * c).sum().backward()
        assert u.grad is None
        results.append(to_host(x.grad))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12, atol=1e-12)


def test_unsupported_inputs_fall_back(installed):
    """forward returns None for what the kernels do not cover, and the op still runs."""
    lstm = installed["lstm_sequence"]
    x, u = np.zeros((2, 1, 8)), np.zeros((2, 8))
    h = np.zeros((1, 2))
    assert lstm.forward(SequenceSpec("lstm", activation="softplus"), x, u, None, h, h) is None
    assert lstm.forward(SequenceSpec("lstm", recurrent_activation="elu"), x, u, None, h, h) is None
    half = x.astype(np.float16)
    h16 = h.astype(np.float16)
    assert lstm.forward(SequenceSpec("lstm"), half, u.astype(np.float16), None, h16, h16) is None
    # mixed dtypes are left to the generic loop's promotion rules
    assert lstm.forward(SequenceSpec("lstm"), x.astype(np.float32), u, None, h, h) is None
    rnn = installed["rnn_sequence"]
    selu = SequenceSpec("rnn", activation="selu")
    assert rnn.forward(selu, x[..., :2], u[:, :2], None, h, None) is None
    gru = installed["gru_sequence"]
    # reset_after=False has no recurrent bias
    before = SequenceSpec("gru", reset_after=False)
    assert gru.forward(before, x[..., :6], u[:, :6], np.zeros(6), h, None) is None
    # through the op: an unsupported activation runs the generic loop, same numbers
    rng = np.random.default_rng(5)
    xs, us = rng.standard_normal((3, 2, 8)), rng.standard_normal((2, 8))
    function = RecurrentSequence(SequenceSpec("lstm", activation="softplus"))
    outs = function(xs, us, None, np.zeros((2, 2)), np.zeros((2, 2)))
    assert function.impl is GENERIC["lstm"]
    assert outs[0].shape == (3, 2, 2)


@pytest.mark.parametrize("cell, cell_options", VARIANTS, ids=["rnn", "lstm", "gru_ra", "gru_rb"])
def test_grid_stride_loops_cover_every_state(installed, monkeypatch, cell, cell_options):
    """Launches with fewer threads than (batch, unit) cells: each thread takes several."""
    monkeypatch.setattr(cupy_rnn, "BLOCK", 4)
    monkeypatch.setattr(cupy_rnn, "MAX_BLOCKS", 1)
    _assert_matches_generic(cell, "float64", mask=True, recurrent_dropout=True, **cell_options)


def test_activation_codes_match_the_cuda_source():
    from dlx.backends.cuda_modules import source_path

    text = source_path(cupy_rnn.SOURCE).read_text()
    defined = {
        name.lower(): int(code) for name, code in re.findall(r"#define DLX_ACT_(\w+) (\d+)", text)
    }
    assert defined == cupy_rnn.ACTIVATION_CODES


def test_cuda_sources_list_every_kernel_for_both_dtypes():
    names = cupy_rnn.CUDA_SOURCES["recurrent.cu"]
    for kernel in cupy_rnn._KERNELS:
        assert f"{kernel}<float>" in names and f"{kernel}<double>" in names


# -- real layers on the cuda_emulation backend ------------------------------------------

B, T, F, U = 2, 3, 2, 2
MASK = np.array([[True, False, True], [True, True, False]])
LAYER_CELLS = {"lstm": layers.LSTM, "gru": layers.GRU, "rnn": layers.SimpleRNN}
SEQUENCE_CLASSES = {
    "rnn": cupy_rnn.RNNSequence,
    "lstm": cupy_rnn.LSTMSequence,
    "gru": cupy_rnn.GRUSequence,
}


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts, per cell, the forward calls the CUDA kernels handled (did not return None)."""
    calls = dict.fromkeys(SEQUENCE_CLASSES, 0)
    for cell, cls in SEQUENCE_CLASSES.items():
        original = cls.forward

        def forward(self, *args, cell=cell, original=original):
            result = original(self, *args)
            calls[cell] += result is not None
            return result

        monkeypatch.setattr(cls, "forward", forward)
    return calls


def _x(shape=(B, T, F), seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _layer(cls, **kwargs):
    kwargs.setdefault("bias_initializer", "random_normal")
    return cls(U, dtype="float64", **kwargs)


LAYER_GRAD_CASES = [
    ("lstm", {"return_sequences": True}, True),
    ("lstm", {"go_backwards": True, "return_state": True}, True),
    ("gru", {"return_sequences": True}, True),
    ("gru", {"go_backwards": True, "return_state": True}, False),
    ("gru", {"reset_after": False, "return_sequences": True}, True),
    ("gru", {"reset_after": False, "go_backwards": True, "return_state": True}, True),
    ("rnn", {"return_sequences": True, "go_backwards": True}, True),
    ("rnn", {"return_state": True, "activation": "relu"}, False),
    ("lstm", {"activation": "softsign", "recurrent_activation": "hard_sigmoid"}, True),
]


@pytest.mark.parametrize("cell, options, masked", LAYER_GRAD_CASES)
@pytest.mark.usefixtures("emulated_backend")
def test_layer_gradients_on_emulated_cuda(kernel_calls, cell, options, masked):
    dlx.set_floatx("float64")
    layer = _layer(LAYER_CELLS[cell], **options)
    kwargs = {"mask": dlx.asarray(MASK)} if masked else {}
    check_layer_gradients(layer, _x(), **kwargs)
    assert kernel_calls[cell] > 0


@pytest.mark.usefixtures("emulated_backend")
def test_initial_state_gradients_on_emulated_cuda(kernel_calls):
    dlx.set_floatx("float64")
    lstm = _layer(layers.LSTM, return_sequences=True)
    lstm(dlx.Tensor(_x()))
    check_gradients(
        lambda x, h, c: lstm(x, initial_state=[h, c]), [_x(), _x((B, U), 1), _x((B, U), 2)]
    )
    gru = _layer(layers.GRU, return_state=True)
    gru(dlx.Tensor(_x()))
    check_gradients(lambda x, h: gru(x, initial_state=h), [_x(), _x((B, U), 3)])
    assert kernel_calls["lstm"] > 0 and kernel_calls["gru"] > 0


@pytest.mark.parametrize("inner", ["lstm", "gru", "rnn"])
@pytest.mark.usefixtures("emulated_backend")
def test_bidirectional_gradients_on_emulated_cuda(kernel_calls, inner):
    dlx.set_floatx("float64")
    layer = layers.Bidirectional(_layer(LAYER_CELLS[inner], return_sequences=True), dtype="float64")
    check_layer_gradients(layer, _x(), mask=dlx.asarray(MASK))
    assert kernel_calls[inner] > 0


def _lstm_train_losses(backend, steps, batch=64):
    """The lstm_train workload of WORKLOADS.md: LSTM(64, return_sequences) -> LSTM(64) ->
    Dense(10), softmax cross-entropy, Adam; the loss of each training step."""
    dlx.set_backend(backend)
    dlx.set_seed(0)
    model = dlx.Sequential(
        [
            layers.LSTM(64, return_sequences=True, input_shape=(28, 28)),
            layers.LSTM(64),
            layers.Dense(10),
        ]
    )
    model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = dlx.asarray(rng.random((batch, 28, 28), dtype=np.float32))
    y = dlx.asarray(rng.integers(0, 10, batch))
    return [float(model.train_on_batch(x, y)) for _ in range(steps)]


@pytest.mark.usefixtures("emulated_backend")
def test_lstm_train_workload_matches_numpy(kernel_calls):
    emulated = _lstm_train_losses("cuda_emulation", steps=4)
    assert kernel_calls["lstm"] >= 8  # two LSTM layers per step
    reference = _lstm_train_losses("numpy", steps=4)
    assert emulated[-1] < emulated[0]  # it trains
    np.testing.assert_allclose(emulated, reference, rtol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_recurrent_dropout_layer_matches_numpy(kernel_calls, cell):
    """Training-mode dropout and recurrent dropout (same seed, so the same masks) give the
    numpy backend's outputs and gradients on the cuda_emulation backend."""

    def run(backend):
        dlx.set_backend(backend)
        dlx.set_seed(3)
        layer = LAYER_CELLS[cell](
            3, dropout=0.2, recurrent_dropout=0.4, return_sequences=True, dtype="float64"
        )
        x = dlx.Tensor(_x((4, 5, 2), seed=4), requires_grad=True)
        mask = dlx.asarray(_x((4, 5), seed=5) > -0.5)
        y = layer(x, training=True, mask=mask)
        (y * dlx.asarray(_x(tuple(y.shape), seed=6))).sum().backward()
        with dlx.no_grad():
            undropped = to_host(layer(x, training=False, mask=mask))
        assert np.abs(to_host(y) - undropped).max() > 1e-3  # the masks were applied
        grads = [to_host(w.grad) for w in layer.trainable_weights]
        return [to_host(y), to_host(x.grad)] + grads

    emulated = run("cuda_emulation")
    assert kernel_calls[cell] == 2
    reference = run("numpy")
    for a, b in zip(emulated, reference):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
