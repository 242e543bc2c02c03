"""Model files: save / load_model / save_weights / load_weights, the zip layout,
portability between backends, and the refusal of truncated, foreign and crafted files."""

import io
import json
import os
import struct
import zipfile

import numpy as np
import pytest

import dlx
from dlx import layers
from dlx.models.saving import FORMAT_VERSION, ModelFileError


def data(n=48, features=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = rng.integers(0, classes, size=n)
    return x, y


def mlp(features=6, classes=3):
    return dlx.Sequential(
        [
            layers.Dense(8, activation="relu", input_shape=(features,)),
            layers.Dropout(0.25),
            layers.Dense(classes, activation="softmax"),
        ]
    )


def functional(features=6, classes=3):
    inp = layers.Input((features,), name="features")
    a = layers.Dense(5, activation="tanh", name="left")(inp)
    b = layers.Dense(5, activation="relu", name="right")(inp)
    merged = layers.Concatenate()([a, layers.Add()([a, b])])
    hidden = layers.Dropout(0.1)(merged)
    out = layers.Dense(classes, activation="softmax", name="head")(hidden)
    return dlx.Model(inp, out, name="two_branch")


def assert_same_weights(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("build", [mlp, functional], ids=["sequential", "functional"])
def test_round_trip_rebuilds_architecture_weights_and_optimizer(backend, tmp_path, build):
    x, y = data()
    model = build()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    path = tmp_path / "model.dlx"
    model.save(path)
    loaded = dlx.load_model(path)
    assert type(loaded) is type(model) and loaded.name == model.name
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert_same_weights(model, loaded)
    np.testing.assert_array_equal(dlx.to_numpy(model.predict(x)), dlx.to_numpy(loaded.predict(x)))
    assert loaded.optimizer.iterations == model.optimizer.iterations == 6
    for va, vb in zip(model.trainable_weights, loaded.trainable_weights):
        for name in ("m", "v"):
            np.testing.assert_array_equal(
                dlx.to_numpy(model.optimizer.slots(va)[name]),
                dlx.to_numpy(loaded.optimizer.slots(vb)[name]),
            )
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    assert loaded.initial_epoch == 2


def test_file_is_a_zip_of_json_and_npy_only(tmp_path):
    x, y = data()
    model = mlp()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "m.dlx"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        assert names == {
            "dlx_format.json",
            "config.json",
            "weights.json",
            "weights.npz",
            "optimizer.json",
            "optimizer.npz",
            "training.json",
        }
        fmt = json.loads(archive.read("dlx_format.json"))
        assert fmt["format"] == "dlx-model" and fmt["version"] == FORMAT_VERSION
        config = json.loads(archive.read("config.json"))
        assert config["class_name"] == "Sequential"
        assert [l["class_name"] for l in config["config"]["layers"]] == [
            "Dense",
            "Dropout",
            "Dense",
        ]
        training = json.loads(archive.read("training.json"))
        assert training["compile"]["loss"] == "sparse_categorical_crossentropy"
        assert training["epoch"] == 1 and training["random_state"]["bit_generator"] == "PCG64"
        npz = np.load(io.BytesIO(archive.read("weights.npz")), allow_pickle=False)
        assert sorted(npz.files) == ["w0", "w1", "w2", "w3"]
        np.testing.assert_array_equal(npz["w0"], model.get_weights()[0])
        raw = b"".join(archive.read(n) for n in names)
    assert b"pickle" not in raw.lower() and b"\x80\x04\x95" not in raw  # no pickle protocol 4


def test_saved_on_one_backend_loads_on_the_other(tmp_path):
    x, y = data()
    dlx.set_backend("array_api_strict")
    dlx.set_seed(3)
    model = mlp()
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "strict.dlx")
    expected = dlx.to_numpy(model.predict(x))
    dlx.set_backend("numpy")
    loaded = dlx.load_model(tmp_path / "strict.dlx")
    assert isinstance(loaded.weights[0].value, np.ndarray)
    np.testing.assert_allclose(dlx.to_numpy(loaded.predict(x)), expected, rtol=1e-6, atol=1e-7)
    loaded.fit(x, y, epochs=1, verbose=0)  # optimizer state arrived on numpy too


def test_save_weights_and_load_weights(backend, tmp_path):
    x, _ = data()
    model = functional()
    model.save_weights(tmp_path / "w.dlx")
    other = functional()
    assert not np.array_equal(other.get_weights()[0], model.get_weights()[0])
    other.load_weights(tmp_path / "w.dlx")
    assert_same_weights(model, other)
    with pytest.raises(ModelFileError, match="holds only weights"):
        dlx.load_model(tmp_path / "w.dlx")
    # a full model file also provides weights
    model.save(tmp_path / "full.dlx")
    third = functional()
    third.load_weights(tmp_path / "full.dlx")
    assert_same_weights(model, third)


def test_mismatched_architecture_is_an_error_and_loads_nothing(tmp_path):
    model = mlp()
    model.save_weights(tmp_path / "w.dlx")
    wider = dlx.Sequential(
        [
            layers.Dense(9, activation="relu", input_shape=(6,)),
            layers.Dense(3, activation="softmax"),
        ]
    )
    before = wider.get_weights()
    with pytest.raises(ModelFileError, match=r"shape \(6, 8\).*shape \(6, 9\)"):
        wider.load_weights(tmp_path / "w.dlx")
    for a, b in zip(before, wider.get_weights()):
        np.testing.assert_array_equal(a, b)
    deeper = dlx.Sequential([layers.Dense(8, input_shape=(6,)), layers.Dense(8), layers.Dense(3)])
    with pytest.raises(ModelFileError, match="holds 4 weights but model .* has 6"):
        deeper.load_weights(tmp_path / "w.dlx")


def test_subclassed_model_saves_weights_only_and_says_so(tmp_path):
    class Net(dlx.Model):
        def __init__(self):
            super().__init__()
            self.hidden = layers.Dense(4, activation="relu")
            self.out = layers.Dense(2)

        def call(self, x, training=False):
            return self.out(self.hidden(x))

    x, _ = data()
    net = Net()
    net(x)
    with pytest.warns(UserWarning, match="subclassed"):
        net.save(tmp_path / "net.dlx")
    with pytest.raises(ValueError, match="load_weights"):
        dlx.load_model(tmp_path / "net.dlx")
    again = Net()
    with pytest.raises(ValueError, match="not built"):
        again.load_weights(tmp_path / "net.dlx")
    again(x)
    again.load_weights(tmp_path / "net.dlx")
    np.testing.assert_array_equal(dlx.to_numpy(again(x).value), dlx.to_numpy(net(x).value))


def test_custom_layer_registered_with_the_decorator(tmp_path):
    @dlx.register_serializable
    class Scale(layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def build(self, input_shape):
            self.gain = self.add_weight("gain", (input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.gain * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    x, _ = data()
    model = dlx.Sequential([layers.Dense(4, input_shape=(6,)), Scale(3.0)])
    model.save(tmp_path / "custom.dlx")
    loaded = dlx.load_model(tmp_path / "custom.dlx")
    assert isinstance(loaded.layers[1], Scale) and loaded.layers[1].factor == 3.0
    np.testing.assert_array_equal(dlx.to_numpy(loaded.predict(x)), dlx.to_numpy(model.predict(x)))


def test_unknown_custom_layer_names_the_decorator(tmp_path):
    class Unregistered(layers.Layer):
        def call(self, x):
            return x

    model = dlx.Sequential([layers.Dense(2, input_shape=(3,)), Unregistered()])
    model.save(tmp_path / "u.dlx")
    with pytest.raises(ModelFileError, match="register_serializable"):
        dlx.load_model(tmp_path / "u.dlx")
    loaded = dlx.load_model(tmp_path / "u.dlx", custom_objects={"Unregistered": Unregistered})
    assert isinstance(loaded.layers[1], Unregistered)


def _models_with_other_layers():
    """Models using the conv, recurrent and normalization layers, when they exist."""
    builders = {}

    def conv():
        return dlx.Sequential(
            [
                layers.Conv2D(3, (3, 3), padding="same", activation="relu", input_shape=(6, 6, 2)),
                layers.BatchNormalization(),
                layers.MaxPooling2D((2, 2)),
                layers.Flatten(),
                layers.Dense(2),
            ]
        )

    def recurrent():
        inp = layers.Input((5,), dtype="int32")
        e = layers.Embedding(10, 4)(inp)
        h = layers.LSTM(3, return_sequences=True)(e)
        h = layers.GRU(3)(h)
        h = layers.LayerNormalization()(h)
        return dlx.Model(inp, layers.Dense(2)(h))

    builders["conv_bn"] = (conv, lambda rng: rng.normal(size=(4, 6, 6, 2)).astype("float32"))
    builders["embedding_lstm_gru"] = (recurrent, lambda rng: rng.integers(0, 10, size=(4, 5)))
    return builders


@pytest.mark.parametrize("name", sorted(_models_with_other_layers()))
def test_round_trip_with_other_layers(tmp_path, name):
    build, make_x = _models_with_other_layers()[name]
    try:
        model = build()
    except (AttributeError, NotImplementedError) as error:  # layer not there yet
        pytest.skip(f"{name}: {error}")
    x = make_x(np.random.default_rng(0))
    model.save(tmp_path / "m.dlx")
    loaded = dlx.load_model(tmp_path / "m.dlx")
    assert_same_weights(model, loaded)
    np.testing.assert_array_equal(dlx.to_numpy(loaded.predict(x)), dlx.to_numpy(model.predict(x)))


def test_overwrite_false_refuses_an_existing_file(tmp_path):
    model = mlp()
    model.save(tmp_path / "m.dlx")
    with pytest.raises(FileExistsError):
        model.save(tmp_path / "m.dlx", overwrite=False)


def test_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    model = mlp()
    path = tmp_path / "m.dlx"
    model.save(path)
    before = path.read_bytes()
    import dlx.models.saving as saving

    def broken(arrays, label):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(saving, "_npz_bytes", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        model.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.dlx"]  # the temporary file was removed


# -- untrusted files -------------------------------------------------------------------
@pytest.fixture(scope="module")
def valid_file(tmp_path_factory):
    dlx.set_backend("numpy")
    dlx.set_seed(0)
    x, y = data(16, 4, 2)
    model = dlx.Sequential([layers.Dense(3, input_shape=(4,)), layers.Dense(2)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path_factory.mktemp("valid") / "valid.dlx"
    model.save(path)
    return path.read_bytes()


def entries_of(blob):
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def repack(entries, names=None):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name if names is None else names.get(name, name), content)
    return buffer.getvalue()


def load_bytes(tmp_path, blob, **kwargs):
    path = tmp_path / "candidate.dlx"
    path.write_bytes(blob)
    return dlx.load_model(path, **kwargs)


def test_valid_fixture_loads(tmp_path, valid_file):
    load_bytes(tmp_path, valid_file)


@pytest.mark.parametrize("cut", [0, 1, 10, 100, 0.5, -22, -1])
def test_truncated_file(tmp_path, valid_file, cut):
    end = int(len(valid_file) * cut) if isinstance(cut, float) else cut
    with pytest.raises(ModelFileError, match="candidate.dlx"):
        load_bytes(tmp_path, valid_file[:end])


def test_foreign_files(tmp_path, valid_file):
    with pytest.raises(ModelFileError, match="not a dlx model file"):
        load_bytes(tmp_path, b"\x80\x04\x95 a pickle, never unpickled")
    with pytest.raises(ModelFileError, match="not a dlx model file"):
        load_bytes(tmp_path, b"\x89HDF\r\n\x1a\n keras h5")
    buffer = io.BytesIO()
    np.savez(buffer, a=np.ones(3))  # a zip, but not ours
    with pytest.raises(ModelFileError, match="unexpected entry 'a.npy'"):
        load_bytes(tmp_path, buffer.getvalue())
    with pytest.raises(ModelFileError, match="no dlx_format.json"):
        load_bytes(tmp_path, repack({"config.json": b"{}"}))
    with pytest.raises(FileNotFoundError):
        dlx.load_model(tmp_path / "missing.dlx")


@pytest.mark.parametrize(
    "version, message",
    [
        (FORMAT_VERSION + 1, "newer dlx"),
        (0, "unsupported format version 0"),
        ("1", "not an integer"),
    ],
)
def test_wrong_version(tmp_path, valid_file, version, message):
    entries = entries_of(valid_file)
    fmt = json.loads(entries["dlx_format.json"])
    fmt["version"] = version
    entries["dlx_format.json"] = json.dumps(fmt).encode()
    with pytest.raises(ModelFileError, match=message):
        load_bytes(tmp_path, repack(entries))


@pytest.mark.parametrize(
    "bad_name",
    [
        "../evil.json",
        "/etc/passwd",
        "weights/../../x",
        "C:/windows.json",
        "a\\..\\b",
        "./config.json",
    ],
)
def test_unsafe_entry_names_are_refused(tmp_path, valid_file, bad_name):
    entries = entries_of(valid_file)
    entries[bad_name] = b"{}"
    with pytest.raises(ModelFileError, match="unsafe entry name|unexpected entry"):
        load_bytes(tmp_path, repack(entries))
    assert not (tmp_path.parent / "evil.json").exists()


def test_unexpected_and_duplicate_entries(tmp_path, valid_file):
    entries = entries_of(valid_file)
    with pytest.raises(ModelFileError, match="unexpected entry 'run_me.py'"):
        load_bytes(tmp_path, repack({**entries, "run_me.py": b"import os"}))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
        with pytest.warns(UserWarning, match="Duplicate"):
            archive.writestr("config.json", b"{}")
    with pytest.raises(ModelFileError, match="duplicate entry 'config.json'"):
        load_bytes(tmp_path, buffer.getvalue())


def _declare_size(blob, entry, size):
    """Rewrite the uncompressed size the central directory declares for ``entry``."""
    data = bytearray(blob)
    start = 0
    while True:
        at = data.index(b"PK\x01\x02", start)
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        name = bytes(data[at + 46 : at + 46 + name_length]).decode()
        if name == entry:
            struct.pack_into("<I", data, at + 24, size)
            return bytes(data)
        start = at + 4


def test_huge_declared_sizes_are_refused_before_reading(tmp_path, valid_file):
    with pytest.raises(ModelFileError, match="config.json' declares 4000000000 bytes"):
        load_bytes(tmp_path, _declare_size(valid_file, "config.json", 4_000_000_000))
    with pytest.raises(ModelFileError, match="weights.npz' declares 3000000 bytes, over the limit"):
        load_bytes(tmp_path, _declare_size(valid_file, "weights.npz", 3_000_000), max_bytes=2**20)


def test_nested_npz_is_validated_too(tmp_path, valid_file):
    entries = entries_of(valid_file)
    inner = entries_of(entries["weights.npz"])
    # an object array inside would need pickle: refused
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    poisoned = repack({**inner, "w0.npy": buffer.getvalue()})
    with pytest.raises(ModelFileError, match="not a plain number type"):
        load_bytes(tmp_path, repack({**entries, "weights.npz": poisoned}))
    # an array header that claims more data than there is
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.zeros((4, 3), "float32"))
    header = buffer.getvalue().replace(b"(4, 3)", b"(9, 9)")
    with pytest.raises(ModelFileError, match=r"needs 324 bytes but the entry holds 48"):
        load_bytes(
            tmp_path, repack({**entries, "weights.npz": repack({**inner, "w0.npy": header})})
        )
    with pytest.raises(ModelFileError, match="unsafe entry name"):
        load_bytes(
            tmp_path, repack({**entries, "weights.npz": repack({**inner, "../w9.npy": b""})})
        )
    with pytest.raises(ModelFileError, match="lacks arrays"):
        load_bytes(
            tmp_path,
            repack(
                {
                    **entries,
                    "weights.npz": repack({k: v for k, v in inner.items() if k != "w1.npy"}),
                }
            ),
        )


def test_config_naming_a_non_layer_is_refused(tmp_path, valid_file):
    entries = entries_of(valid_file)
    for class_name in ("InputSpec", "Input", "__class__", "os.system", "SymbolicTensor"):
        config = json.loads(entries["config.json"])
        config["config"]["layers"][0]["class_name"] = class_name
        blob = repack({**entries, "config.json": json.dumps(config).encode()})
        with pytest.raises(ModelFileError, match="unknown layer class"):
            load_bytes(tmp_path, blob)


def test_weights_that_disagree_with_the_manifest(tmp_path, valid_file):
    entries = entries_of(valid_file)
    manifest = json.loads(entries["weights.json"])
    manifest[0]["shape"] = [5, 3]
    with pytest.raises(ModelFileError, match="weights.json says shape"):
        load_bytes(tmp_path, repack({**entries, "weights.json": json.dumps(manifest).encode()}))
    config = json.loads(entries["config.json"])
    config["config"]["layers"][0]["config"]["units"] = 7
    with pytest.raises(ModelFileError, match="architectures differ"):
        load_bytes(tmp_path, repack({**entries, "config.json": json.dumps(config).encode()}))


def test_zero_dimensional_weights_keep_their_shape(tmp_path):
    class Scalar(layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight("scale", (), initializer="ones")

        def call(self, x):
            return x * self.scale

    model = dlx.Sequential([layers.Dense(2, input_shape=(3,)), Scalar()])
    model.set_weights([w + 0.5 for w in model.get_weights()])
    model.save(tmp_path / "s.dlx")
    loaded = dlx.load_model(tmp_path / "s.dlx", custom_objects={"Scalar": Scalar})
    assert loaded.get_weights()[2].shape == ()
    assert_same_weights(model, loaded)


def test_compile_settings_that_cannot_be_named_are_left_out_with_a_warning(tmp_path):
    x, y = data()

    def my_loss(y_true, y_pred):
        return dlx.losses.get("sparse_categorical_crossentropy")(y_true, y_pred)

    model = mlp()
    model.compile(optimizer="adam", loss=my_loss)
    model.fit(x, y, epochs=1, verbose=0)
    with pytest.warns(UserWarning, match="compile\\(\\) settings are not saved"):
        model.save(tmp_path / "m.dlx")
    loaded = dlx.load_model(tmp_path / "m.dlx")
    assert not loaded.compiled and loaded.optimizer.iterations == model.optimizer.iterations
    loaded.compile(optimizer=loaded.optimizer, loss=my_loss)  # continues with the saved moments
    loaded.fit(x, y, epochs=1, verbose=0)


def test_include_optimizer_false_and_compile_false(tmp_path):
    x, y = data()
    model = mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "bare.dlx", include_optimizer=False)
    with zipfile.ZipFile(tmp_path / "bare.dlx") as archive:
        assert "optimizer.json" not in archive.namelist()
    assert not dlx.load_model(tmp_path / "bare.dlx").compiled
    model.save(tmp_path / "full.dlx")
    assert dlx.load_model(tmp_path / "full.dlx", compile=False).optimizer is None


def test_unknown_loss_name_in_training_json(tmp_path, valid_file):
    entries = entries_of(valid_file)
    training = json.loads(entries["training.json"])
    training["compile"]["loss"] = "quadratic_wishes"
    with pytest.raises(ModelFileError, match="compile settings are invalid.*quadratic_wishes"):
        load_bytes(tmp_path, repack({**entries, "training.json": json.dumps(training).encode()}))


def test_functional_graphs_nested_models_shared_layers_dict_inputs_outputs(tmp_path):
    # nested models as layers
    seq = dlx.Sequential([layers.Dense(4, input_shape=(3,)), layers.Dense(2)])
    inner_in = layers.Input((2,))
    inner = dlx.Model(inner_in, layers.Dense(2, activation="tanh")(inner_in), name="inner")
    inp = layers.Input((3,))
    shared = layers.Dense(2, name="shared")
    h = inner(seq(inp))
    out = layers.Add()([shared(h), shared(shared(h))])  # one layer called three times
    model = dlx.Model(inp, out)
    model.save(tmp_path / "nested.dlx")
    loaded = dlx.load_model(tmp_path / "nested.dlx")
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    np.testing.assert_array_equal(dlx.to_numpy(loaded.predict(x)), dlx.to_numpy(model.predict(x)))
    assert len(loaded.weights) == len(model.weights) == 4 + 2 + 2
    # dict inputs and outputs, loss weights per output
    a, b = layers.Input((3,), name="a"), layers.Input((2,), name="b")
    h = layers.Concatenate()([a, b])
    io_model = dlx.Model({"a": a, "b": b}, {"y1": layers.Dense(1)(h), "y2": layers.Dense(2)(h)})
    io_model.compile("adam", {"y1": "mse", "y2": "mae"}, loss_weights={"y1": 1.0, "y2": 0.5})
    xs = {"a": np.ones((4, 3), "float32"), "b": np.ones((4, 2), "float32")}
    ys = {"y1": np.ones((4, 1), "float32"), "y2": np.zeros((4, 2), "float32")}
    io_model.fit(xs, ys, verbose=0)
    io_model.save(tmp_path / "io.dlx")
    io_loaded = dlx.load_model(tmp_path / "io.dlx")
    predicted = io_loaded.predict(xs)
    assert sorted(predicted) == ["y1", "y2"]
    assert io_loaded.evaluate(xs, ys, verbose=0) == io_model.evaluate(xs, ys, verbose=0)
