"""The textbook backpropagation example of a 2-2-1 sigmoid network, by hand.

W1 = [[0.1, 0.2], [0.3, 0.4]], b1 = [0.5, 0.6], W2 = [[0.7, 0.8]], b2 = [0.9],
x = [1, 2], y = 1, loss = 1/2 (y - a2)^2. The textbook prints z1 = [1.1, 1.7];
the correct arithmetic is z1 = 0.1*1 + 0.2*2 + 0.5 = 1.0 and 0.3*1 + 0.4*2 + 0.6 = 1.7.
"""

import math

import numpy as np
import pytest

import dlx
from dlx import layers


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


# hand-derived values (no NumPy in the derivation)
Z1 = [1.0, 1.7]
A1 = [sigmoid(1.0), sigmoid(1.7)]
Z2 = 0.7 * A1[0] + 0.8 * A1[1] + 0.9
A2 = sigmoid(Z2)
DELTA2 = (A2 - 1.0) * A2 * (1 - A2)  # dL/dz2
DELTA1 = [DELTA2 * 0.7 * A1[0] * (1 - A1[0]), DELTA2 * 0.8 * A1[1] * (1 - A1[1])]
GRAD_W1 = [[DELTA1[0] * 1, DELTA1[0] * 2], [DELTA1[1] * 1, DELTA1[1] * 2]]  # rows: hidden unit
GRAD_W2 = [DELTA2 * A1[0], DELTA2 * A1[1]]


def test_hand_values():
    assert Z1 == [1.0, 1.7]
    assert abs(A1[0] - 0.7310585786) < 1e-9 and abs(A1[1] - 0.8455347349) < 1e-9
    assert abs(Z2 - 2.0881687930) < 1e-9 and abs(A2 - 0.8897479187) < 1e-9


def test_network_reproduces_the_worked_example(backend):
    hidden = layers.Dense(2, activation="sigmoid", dtype="float64")
    output = layers.Dense(1, activation="sigmoid", dtype="float64")
    model = dlx.Sequential([layers.Input((2,)), hidden, output])
    # Keras kernels are (in, out): the transpose of the textbook's W (out, in)
    hidden.set_weights([np.array([[0.1, 0.2], [0.3, 0.4]]).T, np.array([0.5, 0.6])])
    output.set_weights([np.array([[0.7, 0.8]]).T, np.array([0.9])])

    x = dlx.Tensor(np.array([[1.0, 2.0]]))
    z1 = dlx.ops.linear(x, hidden.kernel, hidden.bias)
    np.testing.assert_allclose(dlx.to_numpy(z1), [Z1], rtol=1e-12)
    a2 = model(x)
    np.testing.assert_allclose(dlx.to_numpy(a2), [[A2]], rtol=1e-12)

    loss = 0.5 * ((1.0 - a2) ** 2).sum()
    loss.backward()
    np.testing.assert_allclose(dlx.to_numpy(hidden.kernel.grad), np.array(GRAD_W1).T, rtol=1e-10)
    np.testing.assert_allclose(dlx.to_numpy(hidden.bias.grad), DELTA1, rtol=1e-10)
    np.testing.assert_allclose(dlx.to_numpy(output.kernel.grad), np.array([GRAD_W2]).T, rtol=1e-10)
    np.testing.assert_allclose(dlx.to_numpy(output.bias.grad), [DELTA2], rtol=1e-10)


def test_one_sgd_step_moves_weights_downhill(backend):
    hidden = layers.Dense(2, activation="sigmoid", dtype="float64")
    output = layers.Dense(1, activation="sigmoid", dtype="float64")
    model = dlx.Sequential([layers.Input((2,)), hidden, output])
    hidden.set_weights([np.array([[0.1, 0.2], [0.3, 0.4]]).T, np.array([0.5, 0.6])])
    output.set_weights([np.array([[0.7, 0.8]]).T, np.array([0.9])])
    model.compile(optimizer=dlx.optimizers.SGD(learning_rate=0.5), loss="mse")
    model.train_on_batch(np.array([[1.0, 2.0]]), np.array([[1.0]]))
    # mse = (y - a2)^2 is twice the textbook's loss, so its gradient is twice as large
    np.testing.assert_allclose(output.get_weights()[1], [0.9 - 0.5 * 2 * DELTA2], rtol=1e-10)
    assert output.get_weights()[0][0, 0] == pytest.approx(0.7 - 0.5 * 2 * GRAD_W2[0], rel=1e-10)
