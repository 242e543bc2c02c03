"""Fuzzing the model loader: mutated valid files may only fail with ModelFileError.

Two levels: raw byte mutations of the whole file (mostly stopped by the zip
structure and CRCs), and mutations of one entry's content repacked into a
well-formed zip (reaching the JSON, .npy and config parsers behind the CRCs).
"""

import io
import json
import os
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dlx
from dlx import layers
from dlx.models.saving import ModelFileError

SETTINGS = settings(
    max_examples=int(os.environ.get("DLX_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize="DLX_FUZZ_EXAMPLES" not in os.environ,
)


def _valid_file():
    dlx.set_backend("numpy")
    dlx.set_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.integers(0, 2, size=16)
    inp = layers.Input((4,))
    h = layers.Dense(3, activation="relu")(inp)
    h = layers.Dropout(0.5)(h)
    out = layers.Dense(2, activation="softmax")(layers.Concatenate()([h, inp]))
    model = dlx.Model(inp, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        model.save(f"{folder}/m.dlx")
        with open(f"{folder}/m.dlx", "rb") as handle:
            return handle.read()


VALID = _valid_file()
with zipfile.ZipFile(io.BytesIO(VALID)) as _archive:
    ENTRIES = {name: _archive.read(name) for name in _archive.namelist()}


def _try_load(tmp_path, blob):
    path = tmp_path / "fuzzed.dlx"
    path.write_bytes(blob)
    try:
        model = dlx.load_model(path, max_bytes=2**24)
    except ModelFileError as error:
        assert "fuzzed.dlx" in str(error)
        return None
    return model


def _mutate(data, edits, cut):
    data = bytearray(data)
    for position, value in edits:
        if data:
            data[position % len(data)] = value
    if cut is not None and data:
        data = data[: cut % (len(data) + 1)]
    return bytes(data)


edits = st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=8)


@SETTINGS
@given(edits=edits, cut=st.none() | st.integers(0, 2**31))
def test_byte_mutations_of_the_whole_file(tmp_path, edits, cut):
    _try_load(tmp_path, _mutate(VALID, edits, cut))


@SETTINGS
@given(
    entry=st.sampled_from(sorted(ENTRIES)),
    edits=edits,
    cut=st.none() | st.integers(0, 2**31),
)
def test_mutations_of_one_entry_in_a_well_formed_zip(tmp_path, entry, edits, cut):
    entries = dict(ENTRIES)
    entries[entry] = _mutate(entries[entry], edits, cut)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    _try_load(tmp_path, buffer.getvalue())


def _json_values():
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-5, 5)
        | st.floats(allow_nan=True)
        | st.text(max_size=5)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=6,
    )


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


JSON_ENTRIES = {n: json.loads(c) for n, c in ENTRIES.items() if n.endswith(".json")}
JSON_PATHS = [(n, p) for n, value in JSON_ENTRIES.items() for p in _paths(value) if p]


@SETTINGS
@given(target=st.sampled_from(JSON_PATHS), value=_json_values())
def test_json_values_replaced_by_arbitrary_json(tmp_path, target, value):
    name, path = target
    document = json.loads(json.dumps(JSON_ENTRIES[name]))
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    entries = dict(ENTRIES)
    entries[name] = json.dumps(document).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for entry, content in entries.items():
            archive.writestr(entry, content)
    model = _try_load(tmp_path, buffer.getvalue())
    if model is not None:  # a change the loader accepts must still give a working model
        model.predict(np.zeros((2, 4), "float32"))


@pytest.mark.parametrize("depth", [10_000, 100_000])
def test_deeply_nested_json_is_an_error_not_a_crash(tmp_path, depth):
    entries = dict(ENTRIES)
    entries["config.json"] = b"[" * depth + b"]" * depth
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    assert _try_load(tmp_path, buffer.getvalue()) is None
