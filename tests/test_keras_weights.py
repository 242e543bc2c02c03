"""model.load_weights("x.weights.h5"): weights saved by Keras 3, mapped by layer order.

Most tests write files with h5py in Keras 3's layout (``layers/<snake_case class>[_n]/
vars/<i>``, recurrent weights under ``cell/``, attention under ``query_dense`` ...);
where Keras is installed, the last tests save real files with Keras and compare
predictions of the same architecture in both libraries.
"""

import numpy as np
import pytest

import dlx
from dlx import layers

h5py = pytest.importorskip("h5py")

from dlx.interop.keras_h5 import KerasWeightsError, keras_snake_case  # noqa: E402


def write_keras_file(path, entries):
    """``entries``: ``{"layers/dense/vars": [arrays], ...}`` -> an HDF5 file in Keras's layout."""
    with h5py.File(path, "w") as f:
        f.create_group("vars")
        for group, arrays in entries.items():
            g = f.require_group(group)
            for i, a in enumerate(arrays):
                g.create_dataset(str(i), data=a)


def rand(*shape, seed=0):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(np.float32)


def test_snake_case_is_keras_naming():
    assert keras_snake_case("Conv2D") == "conv2d"
    assert keras_snake_case("Conv2DTranspose") == "conv2d_transpose"
    assert keras_snake_case("LSTM") == "lstm"
    assert keras_snake_case("SimpleRNN") == "simple_rnn"
    assert keras_snake_case("MultiHeadAttention") == "multi_head_attention"
    assert keras_snake_case("BatchNormalization") == "batch_normalization"


def sequential_model():
    return dlx.Sequential(
        [
            layers.Input((6, 6, 2)),
            layers.Conv2D(3, 3, activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(5, activation="relu"),
            layers.Dropout(0.2),
            layers.Dense(2),
        ]
    )


def sequential_entries():
    # h5py lists groups alphabetically: dense_1 before dense would not matter, names decide
    return {
        "layers/conv2d/vars": [rand(3, 3, 2, 3), rand(3)],
        "layers/batch_normalization/vars": [rand(3), rand(3), rand(3), np.abs(rand(3)) + 0.5],
        "layers/max_pooling2d/vars": [],
        "layers/flatten/vars": [],
        "layers/dense/vars": [rand(12, 5), rand(5)],
        "layers/dropout/vars": [],
        "layers/dense_1/vars": [rand(5, 2), rand(2)],
    }


def test_sequential_weights_by_layer_order(tmp_path):
    path = tmp_path / "cnn.weights.h5"
    entries = sequential_entries()
    write_keras_file(path, entries)
    model = sequential_model()
    model.load_weights(path)
    weights = model.get_weights()
    expected = [a for arrays in entries.values() for a in arrays]
    assert len(weights) == len(expected)
    for w, e in zip(weights, expected):
        np.testing.assert_array_equal(w, e)


def test_more_than_ten_layers_of_a_kind(tmp_path):
    # dense_10 sorts before dense_2 in the file: mapping goes by Keras's names, not file order
    model = dlx.Sequential([layers.Input((3,))] + [layers.Dense(3) for _ in range(12)])
    entries = {}
    for i in range(12):
        key = "dense" if i == 0 else f"dense_{i}"
        entries[f"layers/{key}/vars"] = [rand(3, 3, seed=i), rand(3, seed=i)]
    write_keras_file(tmp_path / "deep.weights.h5", entries)
    model.load_weights(tmp_path / "deep.weights.h5")
    for i, layer in enumerate(model.layers):
        np.testing.assert_array_equal(layer.get_weights()[0], rand(3, 3, seed=i))


def test_recurrent_attention_and_wrappers(tmp_path):
    inp = layers.Input((5, 4))
    x = layers.Bidirectional(layers.LSTM(3, return_sequences=True))(inp)
    x = layers.TimeDistributed(layers.Dense(4))(x)
    x = layers.MultiHeadAttention(2, 3)(x, x)
    x = layers.LayerNormalization()(x)
    x = layers.GRU(2, return_sequences=True)(x)
    x = layers.SimpleRNN(3)(x)
    inner = dlx.Sequential([layers.Input((3,)), layers.Dense(2), layers.Dense(1)])
    i2 = layers.Input((3,))
    head = dlx.Model(i2, layers.Dense(1)(i2))  # Keras names a functional sub-model "functional"
    model = dlx.Model(inp, [inner(x), head(x)])
    mha = [rand(4, 2, 3), rand(2, 3)]
    entries = {
        "layers/input_layer/vars": [],
        "layers/bidirectional/forward_layer/cell/vars": [rand(4, 12), rand(3, 12), rand(12)],
        "layers/bidirectional/backward_layer/cell/vars": [
            rand(4, 12, seed=1),
            rand(3, 12, seed=1),
            rand(12, seed=1),
        ],
        "layers/time_distributed/layer/vars": [rand(6, 4), rand(4)],
        "layers/multi_head_attention/query_dense/vars": mha,
        "layers/multi_head_attention/key_dense/vars": [a + 1 for a in mha],
        "layers/multi_head_attention/value_dense/vars": [a + 2 for a in mha],
        "layers/multi_head_attention/output_dense/vars": [rand(2, 3, 4), rand(4)],
        "layers/layer_normalization/vars": [rand(4), rand(4)],
        "layers/gru/cell/vars": [rand(4, 6), rand(2, 6), rand(2, 6)],
        "layers/simple_rnn/cell/vars": [rand(2, 3), rand(3, 3), rand(3)],
        "layers/sequential/layers/dense/vars": [rand(3, 2), rand(2)],
        "layers/sequential/layers/dense_1/vars": [rand(2, 1), rand(1)],
        "layers/functional/layers/dense/vars": [rand(3, 1, seed=7), rand(1, seed=7)],
    }
    write_keras_file(tmp_path / "mix.weights.h5", entries)
    model.load_weights(tmp_path / "mix.weights.h5")
    expected = [a for arrays in entries.values() for a in arrays]
    got = model.get_weights()
    assert [w.shape for w in got] == [e.shape for e in expected]
    for w, e in zip(got, expected):
        np.testing.assert_array_equal(w, e)


def branching(L, Input, Model):
    inp, inp2 = Input((4,), name="in1"), Input((4,), name="in2")
    a = L.Dense(3, name="a")(inp)
    b = L.Dense(4, name="b")(inp2)
    c = L.Dense(5, name="c")(b)
    d = L.Dense(3, name="d")(inp)
    e = L.Concatenate(name="e")([c, a, d])
    f = L.Dense(2, name="f")(e)
    g = L.Dense(2, name="g")(a)
    return Model([inp, inp2], [g, f])


def test_functional_layer_order_is_keras_order():
    from dlx.interop.keras_h5 import keras_layer_order

    model = branching(layers, layers.Input, dlx.Model)
    # what Keras 3's model.layers gives for the same graph (deepest first, then DFS order)
    assert [l.name for l in keras_layer_order(model)] == [
        "in2",
        "in1",
        "b",
        "a",
        "c",
        "d",
        "e",
        "g",
        "f",
    ]


def test_shape_mismatch_names_layer_and_both_shapes_and_loads_nothing(tmp_path):
    entries = sequential_entries()
    entries["layers/dense_1/vars"] = [rand(5, 3), rand(3)]
    write_keras_file(tmp_path / "bad.weights.h5", entries)
    model = sequential_model()
    before = model.get_weights()
    with pytest.raises(KerasWeightsError, match=r"'dense.*\(Dense\).*\(5, 2\).*\(5, 3\)"):
        model.load_weights(tmp_path / "bad.weights.h5")
    for w, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(w, b)


def test_missing_layer_count_mismatch_and_extra_weights(tmp_path):
    entries = sequential_entries()
    del entries["layers/dense_1/vars"]
    write_keras_file(tmp_path / "missing.weights.h5", entries)
    with pytest.raises(KerasWeightsError, match=r"\(Dense\).*layers/dense_1"):
        sequential_model().load_weights(tmp_path / "missing.weights.h5")

    entries = sequential_entries()
    entries["layers/dense/vars"] = entries["layers/dense/vars"][:1]
    write_keras_file(tmp_path / "count.weights.h5", entries)
    with pytest.raises(KerasWeightsError, match=r"has 2 weights .* holds 1 arrays"):
        sequential_model().load_weights(tmp_path / "count.weights.h5")

    entries = sequential_entries()
    entries["layers/dense_2/vars"] = [rand(2, 2), rand(2)]
    write_keras_file(tmp_path / "extra.weights.h5", entries)
    with pytest.raises(KerasWeightsError, match=r"no layer .* takes.*dense_2"):
        sequential_model().load_weights(tmp_path / "extra.weights.h5")


def test_keras_archive_and_dlx_file_named_keras(tmp_path):
    import zipfile

    write_keras_file(tmp_path / "inner.h5", sequential_entries())
    with zipfile.ZipFile(tmp_path / "model.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
        archive.writestr("config.json", "{}")  # never read
        archive.write(tmp_path / "inner.h5", "model.weights.h5")
    model = sequential_model()
    model.load_weights(tmp_path / "model.keras")
    np.testing.assert_array_equal(
        model.get_weights()[0], sequential_entries()["layers/conv2d/vars"][0]
    )
    # a dlx file that happens to be called .keras still loads as a dlx file
    model.save_weights(tmp_path / "dlx_weights.keras")
    other = sequential_model()
    other.load_weights(tmp_path / "dlx_weights.keras")
    np.testing.assert_array_equal(other.get_weights()[0], model.get_weights()[0])
    with zipfile.ZipFile(tmp_path / "empty.keras", "w") as archive:
        archive.writestr("metadata.json", "{}")
    with pytest.raises(KerasWeightsError, match="model.weights.h5"):
        from dlx.interop.keras_h5 import load_keras_weights

        load_keras_weights(model, tmp_path / "empty.keras")


def test_save_weights_h5_round_trip_in_keras_layout(tmp_path):
    write_keras_file(tmp_path / "in.weights.h5", sequential_entries())
    model = sequential_model()
    model.load_weights(tmp_path / "in.weights.h5")
    model.save_weights(tmp_path / "out.weights.h5")
    with h5py.File(tmp_path / "out.weights.h5") as f:  # Keras's groups, not a dlx zip
        np.testing.assert_array_equal(
            f["layers/dense_1/vars/0"][()], model.layers[-1].get_weights()[0]
        )
    other = sequential_model()
    other.load_weights(tmp_path / "out.weights.h5")
    for a, b in zip(other.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_foreign_files_are_refused(tmp_path):
    with h5py.File(tmp_path / "legacy.weights.h5", "w") as f:
        f.attrs["layer_names"] = [b"dense"]
        f.create_group("dense")
    with pytest.raises(KerasWeightsError, match="Keras 2"):
        sequential_model().load_weights(tmp_path / "legacy.weights.h5")
    (tmp_path / "junk.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(KerasWeightsError, match="HDF5"):
        sequential_model().load_weights(tmp_path / "junk.weights.h5")


def test_unbuilt_model_is_an_error(tmp_path):
    write_keras_file(tmp_path / "w.weights.h5", {"layers/dense/vars": [rand(3, 2), rand(2)]})
    with pytest.raises(ValueError, match="not built"):
        dlx.Sequential([layers.Dense(2)]).load_weights(tmp_path / "w.weights.h5")


# ---------------------------------------------------------------------------
# against Keras itself


def _randomize_keras(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        new = [(rng.standard_normal(w.shape) * 0.5).astype(np.float32) for w in weights]
        if type(layer).__name__ == "BatchNormalization":
            new[-1] = np.abs(new[-1]) + 0.5
        layer.set_weights(new)


def _compare(keras_model, dlx_model, x, tmp_path, name, whole_model=False):
    _randomize_keras(keras_model)
    if whole_model:  # model.save: a .keras zip archive with model.weights.h5 inside
        path = tmp_path / f"{name}.keras"
        keras_model.save(str(path))
    else:
        path = tmp_path / f"{name}.weights.h5"
        keras_model.save_weights(str(path))
    dlx_model.load_weights(path)
    expected = keras_model.predict(x, verbose=0)
    got = dlx_model.predict(x, verbose=0)
    expected = expected if isinstance(expected, list) else [expected]
    got = got if isinstance(got, list) else [got]
    for g, e in zip(got, expected):
        np.testing.assert_allclose(dlx.to_numpy(g), np.asarray(e), rtol=1e-4, atol=1e-5)


def test_keras_cnn_file_gives_keras_predictions(keras, tmp_path):
    K = keras.layers
    km = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            K.Conv2D(4, 3, padding="same", activation="relu"),
            K.BatchNormalization(),
            K.MaxPooling2D(),
            K.Conv2DTranspose(3, 2, strides=2),
            K.Flatten(),
            K.Dense(6, activation="gelu"),
            K.Dense(3, activation="softmax"),
        ]
    )
    dm = dlx.Sequential(
        [
            layers.Input((8, 8, 2)),
            layers.Conv2D(4, 3, padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(),
            layers.Conv2DTranspose(3, 2, strides=2),
            layers.Flatten(),
            layers.Dense(6, activation="gelu"),
            layers.Dense(3, activation="softmax"),
        ]
    )
    x = np.random.default_rng(1).standard_normal((4, 8, 8, 2)).astype(np.float32)
    _compare(km, dm, x, tmp_path, "cnn")
    _compare(km, dm, x, tmp_path, "cnn_model", whole_model=True)


def test_keras_sequence_model_file_gives_keras_predictions(keras, tmp_path):
    K = keras.layers

    def build(L, Input, Model):
        inp = Input((6,))
        x = L.Embedding(20, 8)(inp)
        x = L.LSTM(5, return_sequences=True)(x)
        x = L.Bidirectional(L.GRU(3, return_sequences=True))(x)
        x = L.TimeDistributed(L.Dense(8))(x)
        a = L.MultiHeadAttention(2, 4)(x, x)
        x = L.LayerNormalization()(L.Add()([x, a]))
        x = L.SimpleRNN(4)(x)
        return Model(inp, L.Dense(2)(x))

    km = build(K, keras.Input, keras.Model)
    dm = build(layers, layers.Input, dlx.Model)
    x = np.random.default_rng(2).integers(0, 20, (3, 6)).astype(np.float32)
    _compare(km, dm, x, tmp_path, "seq")


def test_keras_branching_functional_file(keras, tmp_path):
    km = branching(keras.layers, keras.Input, keras.Model)
    dm = branching(layers, layers.Input, dlx.Model)
    rng = np.random.default_rng(4)
    x = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2)]
    _compare(km, dm, x, tmp_path, "branching")


def test_keras_nested_models_file(keras, tmp_path):
    def build(L, Input, Model, Sequential):
        inp = Input((4,))
        sub_in = Input((4,))
        sub = Model(sub_in, L.Dense(3, activation="tanh")(L.Dense(5)(sub_in)))
        seq = Sequential([Input((3,)), L.Dense(2)])
        return Model(inp, seq(sub(L.Dense(4)(inp))))

    km = build(keras.layers, keras.Input, keras.Model, keras.Sequential)
    dm = build(layers, layers.Input, dlx.Model, dlx.Sequential)
    x = np.random.default_rng(6).standard_normal((3, 4)).astype(np.float32)
    _compare(km, dm, x, tmp_path, "nested")


def test_dlx_weights_load_into_keras(keras, tmp_path):
    dm = branching(layers, layers.Input, dlx.Model)
    rng = np.random.default_rng(8)
    dm.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in dm.get_weights()])
    dm.save_weights(tmp_path / "dlx.weights.h5")
    km = branching(keras.layers, keras.Input, keras.Model)
    km.load_weights(str(tmp_path / "dlx.weights.h5"))
    x = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(2)]
    for g, e in zip(dm.predict(x, verbose=0), km.predict(x, verbose=0)):
        np.testing.assert_allclose(dlx.to_numpy(g), np.asarray(e), rtol=1e-4, atol=1e-5)

    # recurrent, attention and wrapped layers too
    def build(L, Input, Model):
        inp = Input((5, 4))
        x = L.Bidirectional(L.GRU(3, return_sequences=True))(inp)
        x = L.TimeDistributed(L.Dense(4))(x)
        x = L.MultiHeadAttention(2, 3)(x, x)
        return Model(inp, L.LSTM(2)(L.LayerNormalization()(x)))

    dm, km = build(layers, layers.Input, dlx.Model), build(keras.layers, keras.Input, keras.Model)
    dm.set_weights(
        [rng.standard_normal(w.shape).astype(np.float32) * 0.5 for w in dm.get_weights()]
    )
    dm.save_weights(tmp_path / "seq.weights.h5")
    km.load_weights(str(tmp_path / "seq.weights.h5"))
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    np.testing.assert_allclose(
        dlx.to_numpy(dm.predict(x, verbose=0)), km.predict(x, verbose=0), rtol=1e-4, atol=1e-5
    )
