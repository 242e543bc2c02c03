"""Model files: ``model.save`` / ``dlx.load_model`` / ``save_weights`` / ``load_weights``.

A dlx model file (``.dlx``; any name works) is one zip archive holding only
JSON and NumPy ``.npy`` data -- nothing is pickled and nothing in it is ever
executed or extracted to disk:

``dlx_format.json``
    ``{"format": "dlx-model", "version": 1, "contents": "model" | "weights",
    "dlx_version": ..., "model_class": ...}``.
``config.json``
    The architecture: ``{"class_name": "Sequential" | "Model" | ..., "config": ...}``
    (a Sequential lists its layer configs and input shape; a functional Model
    lists its layers and the graph of calls). Absent for subclassed models,
    whose architecture is Python code: their files hold weights and training
    state only, to be loaded with ``model.load_weights``.
``weights.json`` / ``weights.npz``
    The weights in Keras order (``model.get_weights()``, host NumPy arrays):
    the JSON lists ``{"name", "shape", "dtype"}`` per weight, the npz holds
    ``w0.npy``, ``w1.npy``, ... . Host arrays make files portable: saved on
    CuPy, loaded on NumPy and vice versa.
``optimizer.json`` / ``optimizer.npz`` (when compiled)
    The optimizer's class and config, its ``iterations`` and, per trainable
    weight, the names of its slot arrays (``s<i>_<slot>.npy`` in the npz).
``training.json``
    ``{"compile": {"loss", "metrics", "loss_weights"} | null, "epoch": completed
    epochs, "random_state": the host generator's state}`` -- with the optimizer
    state this lets ``fit(..., initial_epoch=model.initial_epoch)`` continue
    exactly as an uninterrupted run would.

Files are written with :func:`dlx.io.atomic_write` (temporary file, fsync,
rename), so a crash never leaves a torn file. Reading validates every entry
name, size and compression method before decompressing anything, parses
``.npy`` headers itself (``allow_pickle`` never enters the picture), and turns
every problem into :class:`ModelFileError` (a ``ValueError``) that names the
file and what is wrong.
"""

import io
import json
import math
import os
import re
import warnings
import zipfile
import zlib

import numpy as np

from .. import losses as losses_module
from .. import metrics as metrics_module
from .. import optimizers as optimizers_module
from ..backends import get_random_state, set_random_state
from ..io import atomic_write
from .serialization import deserialize_layer, serialize_layer

FORMAT_NAME = "dlx-model"
FORMAT_VERSION = 1
FORMAT_ENTRY = "dlx_format.json"
JSON_ENTRIES = ("dlx_format.json", "config.json", "weights.json", "optimizer.json", "training.json")
NPZ_ENTRIES = ("weights.npz", "optimizer.npz")
ALLOWED_ENTRIES = frozenset(JSON_ENTRIES + NPZ_ENTRIES)
# Upper bounds checked against the sizes a zip *declares*, before reading.
MAX_JSON_BYTES = 64 * 2**20
DEFAULT_MAX_BYTES = 8 * 2**30
MAX_ARRAYS = 1_000_000
_NUMERIC_KINDS = "biuf"
_ARRAY_NAME = re.compile(r"^[A-Za-z0-9_]{1,128}$")


class ModelFileError(ValueError):
    """A model/weights file is truncated, corrupted, of another version, not a dlx file,
    or (for ``load_weights``) does not match the model."""


# =========================================================================== writing
def _check_overwrite(path, overwrite):
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{os.fspath(path)!r} exists and overwrite=False")


def _npz_bytes(arrays, label):
    """``{name: host array}`` as the bytes of an uncompressed ``.npz`` (no pickle)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            array = np.asarray(array)  # (ascontiguousarray would make 0-d arrays 1-d)
            if array.dtype.kind not in _NUMERIC_KINDS or array.dtype.fields is not None:
                raise TypeError(
                    f"{label}: array {name!r} has dtype {array.dtype}; only numbers are saved"
                )
            with archive.open(f"{name}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, array, allow_pickle=False)
    return buffer.getvalue()


def _weights_entries(model):
    weights = model.weights
    values = model.get_weights()
    manifest = [
        {"name": w.name or f"weight_{i}", "shape": list(v.shape), "dtype": str(v.dtype)}
        for i, (w, v) in enumerate(zip(weights, values))
    ]
    arrays = {f"w{i}": v for i, v in enumerate(values)}
    return manifest, arrays


def _serialize_compile_spec(spec, what):
    if spec is None or isinstance(spec, (str, int, float, bool)):
        return spec
    if isinstance(spec, dict):
        return {str(k): _serialize_compile_spec(v, what) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return [_serialize_compile_spec(v, what) for v in spec]
    if isinstance(spec, losses_module.Loss):
        return losses_module.serialize(spec)
    if isinstance(spec, metrics_module.Metric):
        cls = getattr(metrics_module, type(spec).__name__, None)
        if cls is type(spec):
            return {"class_name": type(spec).__name__, "config": spec.get_config()}
    raise ValueError(f"{what} {spec!r} cannot be saved by name")


def _compile_config(model):
    try:
        config = {
            "loss": _serialize_compile_spec(getattr(model, "_loss_spec", None), "loss"),
            "metrics": _serialize_compile_spec(getattr(model, "_metric_spec", None), "metric"),
            "loss_weights": _serialize_compile_spec(
                getattr(model, "_loss_weight_spec", None), "loss weight"
            ),
        }
        json.dumps(config)
        return config
    except (ValueError, TypeError) as error:
        warnings.warn(
            f"Model '{model.name}': its compile() settings are not saved ({error}); call "
            f"compile() again after loading. Weights and optimizer state are saved.",
            stacklevel=4,
        )
        return None


def _optimizer_entries(model):
    optimizer = model.optimizer
    variables = model.trainable_weights
    state = optimizer.get_state(variables)
    slot_names = [sorted(optimizer.slots(v)) for v in variables]
    arrays = {}
    for i, (names, values) in enumerate(zip(slot_names, state["slots"])):
        for name, value in zip(names, values):
            if not _ARRAY_NAME.match(name):
                raise ValueError(f"{type(optimizer).__name__}: slot name {name!r} cannot be saved")
            arrays[f"s{i}_{name}"] = variables[i].backend.to_numpy(value)
    config = {
        "class_name": type(optimizer).__name__,
        "config": optimizer.get_config(),
        "iterations": int(state["iterations"]),
        "slots": slot_names,
        "variables": [v.name for v in variables],
    }
    json.dumps(config)
    return config, arrays


def _is_savable_architecture(model):
    from .sequential import Sequential

    return isinstance(model, Sequential) or getattr(model, "_functional", False)


def _write_archive(path, entries):
    """Write ``{entry name: bytes}`` as one zip, crash-safely."""
    with atomic_write(path, "wb") as handle:
        with zipfile.ZipFile(handle, "w") as archive:
            for name, data in entries.items():
                method = zipfile.ZIP_STORED if name.endswith(".npz") else zipfile.ZIP_DEFLATED
                archive.writestr(
                    zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)),
                    data,
                    compress_type=method,
                )


def _json_bytes(value):
    return json.dumps(value, indent=1, allow_nan=True).encode("utf-8")


def _format_entry(contents, model):
    from .. import __version__

    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "contents": contents,
        "dlx_version": __version__,
        "model_class": type(model).__name__,
    }


def _require_built(model, what):
    if not model.built or (not model.weights and not _is_savable_architecture(model)):
        raise ValueError(
            f"{what}: model '{model.name}' is not built yet (it has no weights); call it on a "
            f"batch or fit it first"
        )


def save_model(model, filepath, overwrite=True, include_optimizer=True):
    """Write ``model`` to ``filepath`` (one zip; see the module docstring)."""
    filepath = os.fspath(filepath)
    _check_overwrite(filepath, overwrite)
    _require_built(model, "save")
    entries = {}
    if _is_savable_architecture(model):
        entries["config.json"] = _json_bytes(serialize_layer(model))
        contents = "model"
    else:
        warnings.warn(
            f"Model '{model.name}' is a subclassed {type(model).__name__}: its architecture is "
            f"Python code, so {filepath!r} holds only its weights and training state. Rebuild "
            f"the model in code and call model.load_weights({filepath!r}).",
            stacklevel=3,
        )
        contents = "weights"
    manifest, arrays = _weights_entries(model)
    entries["weights.json"] = _json_bytes(manifest)
    entries["weights.npz"] = _npz_bytes(arrays, "weights")
    training = {
        "compile": None,
        "epoch": int(getattr(model, "_completed_epochs", 0) or 0),
        "random_state": get_random_state(),
    }
    if include_optimizer and getattr(model, "compiled", False) and model.optimizer is not None:
        training["compile"] = _compile_config(model)
        optimizer_config, slot_arrays = _optimizer_entries(model)
        entries["optimizer.json"] = _json_bytes(optimizer_config)
        entries["optimizer.npz"] = _npz_bytes(slot_arrays, "optimizer")
    entries["training.json"] = _json_bytes(training)
    entries = {FORMAT_ENTRY: _json_bytes(_format_entry(contents, model)), **entries}
    _write_archive(filepath, entries)


def save_weights(model, filepath, overwrite=True):
    """Write only ``model``'s weights to ``filepath`` (a zip with weights.json/.npz; a
    ``.weights.h5`` name gets Keras 3's layout, see dlx.interop.keras_h5)."""
    filepath = os.fspath(filepath)
    _check_overwrite(filepath, overwrite)
    _require_built(model, "save_weights")
    from ..interop.keras_h5 import save_keras_weights, writes_keras_format

    if writes_keras_format(model, filepath):
        save_keras_weights(model, filepath)
        return
    manifest, arrays = _weights_entries(model)
    _write_archive(
        filepath,
        {
            FORMAT_ENTRY: _json_bytes(_format_entry("weights", model)),
            "weights.json": _json_bytes(manifest),
            "weights.npz": _npz_bytes(arrays, "weights"),
        },
    )


# =========================================================================== reading
def _fail(path, message):
    raise ModelFileError(f"{path!r}: {message}")


def _check_entry_name(path, name):
    if (
        not name
        or name.startswith(("/", "\\"))
        or "\\" in name
        or "\x00" in name
        or re.match(r"^[A-Za-z]:", name)
        or any(part in ("..", ".") for part in name.split("/"))
    ):
        _fail(path, f"unsafe entry name {name!r} (absolute path or '..'); refusing to read it")


def _check_infos(path, infos, allowed, max_bytes, what="entry"):
    """Validate names, methods and declared sizes of zip members before reading any."""
    seen, total = set(), 0
    for info in infos:
        name = info.filename
        _check_entry_name(path, name)
        if name in seen:
            _fail(path, f"duplicate {what} {name!r}")
        seen.add(name)
        if name not in allowed:
            _fail(path, f"unexpected {what} {name!r}; a dlx file holds only {sorted(allowed)}")
        if info.flag_bits & 0x1:
            _fail(path, f"{what} {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            _fail(path, f"{what} {name!r} uses unsupported compression method {info.compress_type}")
        limit = MAX_JSON_BYTES if name.endswith(".json") else max_bytes
        if info.file_size > limit:
            _fail(
                path, f"{what} {name!r} declares {info.file_size} bytes, over the limit of {limit}"
            )
        total += info.file_size
        if total > max_bytes:
            _fail(path, f"the entries declare {total} bytes in all, over the limit of {max_bytes}")
    return seen


# What zipfile and zlib raise on a truncated or tampered archive: each becomes a
# ModelFileError naming the file.
CORRUPT_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    KeyError,
    IndexError,
    ValueError,
    TypeError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
    MemoryError,
)


def _read_entries(path, max_bytes):
    """``{entry name: bytes}`` of a validated dlx archive."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file: {path!r}")
    if os.path.isdir(path):
        _fail(path, "is a directory, not a dlx model file")
    size = os.path.getsize(path)
    if size > max_bytes + 2**20:
        _fail(path, f"the file has {size} bytes, over the limit of {max_bytes} (max_bytes=)")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise ModelFileError(f"{path!r}: cannot be read ({error})") from error
    if not data.startswith(b"PK"):
        _fail(
            path,
            "is not a dlx model file (not a zip archive; it may be truncated or another format)",
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            names = _check_infos(path, infos, ALLOWED_ENTRIES, max_bytes)
            if FORMAT_ENTRY not in names:
                _fail(path, f"is not a dlx model file (no {FORMAT_ENTRY})")
            return {info.filename: archive.read(info) for info in infos}
    except ModelFileError:
        raise
    except CORRUPT_ZIP_ERRORS as error:
        raise ModelFileError(
            f"{path!r}: is not a readable dlx model file (truncated or corrupted zip: {error})"
        ) from error


def _parse_json(path, entries, name, required=True):
    if name not in entries:
        if required:
            _fail(path, f"has no {name}")
        return None
    try:
        return json.loads(entries[name].decode("utf-8"))
    except (ValueError, RecursionError) as error:
        raise ModelFileError(f"{path!r}: {name} is not valid JSON ({error})") from error


def _check_format(path, fmt, contents=None):
    if not isinstance(fmt, dict) or fmt.get("format") != FORMAT_NAME:
        _fail(path, f"is not a dlx model file ({FORMAT_ENTRY} does not say format {FORMAT_NAME!r})")
    version = fmt.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        _fail(path, f"format version {version!r} is not an integer")
    if version > FORMAT_VERSION:
        _fail(
            path,
            f"format version {version} was written by a newer dlx; this dlx reads "
            f"version {FORMAT_VERSION}. Upgrade dlx to load it.",
        )
    if version != FORMAT_VERSION:
        _fail(
            path, f"unsupported format version {version} (this dlx reads version {FORMAT_VERSION})"
        )
    if fmt.get("contents") not in ("model", "weights"):
        _fail(path, f"unknown contents {fmt.get('contents')!r} in {FORMAT_ENTRY}")


def _read_npy(path, label, raw):
    """One ``.npy`` member: header parsed and checked against the data size, numbers only."""
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            _fail(path, f"{label}: unsupported .npy version {version}")
    except ModelFileError:
        raise
    except (
        ValueError,
        TypeError,
        SyntaxError,
        RecursionError,
        MemoryError,
        OverflowError,
    ) as error:
        raise ModelFileError(f"{path!r}: {label} has a corrupted array header ({error})") from error
    if (
        dtype.hasobject
        or dtype.fields is not None
        or dtype.subdtype is not None
        or (dtype.kind not in _NUMERIC_KINDS)
    ):
        _fail(path, f"{label}: dtype {dtype} is not a plain number type")
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        _fail(path, f"{label}: bad shape {shape!r}")
    count = math.prod(shape)
    offset = stream.tell()
    if count * dtype.itemsize != len(raw) - offset:
        _fail(
            path,
            f"{label}: shape {tuple(shape)} of {dtype} needs {count * dtype.itemsize} "
            f"bytes but the entry holds {len(raw) - offset}",
        )
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    array = array.reshape(shape, order="F" if fortran else "C")
    return np.array(array, dtype=dtype.newbyteorder("="), order="C")


def _read_npz(path, entries, entry, expected_names, max_bytes):
    """The arrays ``expected_names`` of npz ``entry``; any other or missing member is an error."""
    if entry not in entries:
        _fail(path, f"has no {entry}")
    allowed = {f"{n}.npy" for n in expected_names}
    label = f"{entry}"
    try:
        with zipfile.ZipFile(io.BytesIO(entries[entry])) as archive:
            infos = archive.infolist()
            names = _check_infos(path, infos, allowed, max_bytes, what=f"{entry} member")
            missing = allowed - names
            if missing:
                _fail(path, f"{label} lacks arrays {sorted(missing)[:5]}")
            raw = {info.filename[:-4]: archive.read(info) for info in infos}
    except ModelFileError:
        raise
    except CORRUPT_ZIP_ERRORS as error:
        raise ModelFileError(f"{path!r}: {entry} is corrupted ({error})") from error
    return {name: _read_npy(path, f"{entry}/{name}.npy", raw[name]) for name in expected_names}


def _read_weights(path, entries, max_bytes):
    """``(manifest, arrays)`` of a checked file: shapes and dtypes agree with weights.json."""
    manifest = _parse_json(path, entries, "weights.json")
    if not isinstance(manifest, list) or len(manifest) > MAX_ARRAYS:
        _fail(path, "weights.json must be a list of {name, shape, dtype}")
    for i, item in enumerate(manifest):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("shape"), list)
            and all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in item["shape"]
            )
            and isinstance(item.get("dtype"), str)
        ):
            _fail(path, f"weights.json entry {i} is malformed: {item!r:.200}")
    arrays = _read_npz(
        path, entries, "weights.npz", [f"w{i}" for i in range(len(manifest))], max_bytes
    )
    values = []
    for i, item in enumerate(manifest):
        array = arrays[f"w{i}"]
        if list(array.shape) != item["shape"] or str(array.dtype) != item["dtype"]:
            _fail(
                path,
                f"weight {item['name']!r}: weights.json says shape {item['shape']} "
                f"{item['dtype']} but weights.npz holds {list(array.shape)} {array.dtype}",
            )
        values.append(array)
    return manifest, values


def _assign_weights(model, path, manifest, values):
    """Set every weight of ``model``; any difference in count or shape is an error."""
    weights = model.weights
    if len(weights) != len(values):
        saved = [f"{m['name']} {tuple(m['shape'])}" for m in manifest]
        have = [f"{w.name} {w.shape}" for w in weights]
        raise ModelFileError(
            f"{path!r} holds {len(values)} weights but model '{model.name}' has {len(weights)}: "
            f"the architectures differ (saved: {saved[:8]}{' ...' if len(saved) > 8 else ''}; "
            f"model: {have[:8]}{' ...' if len(have) > 8 else ''})"
        )
    for w, m, v in zip(weights, manifest, values):
        if tuple(v.shape) != tuple(w.shape):
            raise ModelFileError(
                f"{path!r}: saved weight {m['name']!r} has shape {tuple(v.shape)} but model "
                f"'{model.name}' weight {w.name!r} has shape {w.shape}: the architectures differ; "
                f"nothing was loaded"
            )
    model.set_weights(values)


def load_weights(model, filepath, max_bytes=DEFAULT_MAX_BYTES):
    """Set ``model``'s weights from a file of ``save_weights`` or ``save`` (all or nothing).
    Files of Keras 3 (``save_weights``: ``.weights.h5``; ``save``: ``.keras``) are read by
    dlx.interop.keras_h5."""
    path = os.fspath(filepath)
    from ..interop.keras_h5 import is_keras_weights_file, load_keras_weights

    if is_keras_weights_file(path):
        load_keras_weights(model, path)
        return
    entries = _read_entries(path, max_bytes)
    _check_format(path, _parse_json(path, entries, FORMAT_ENTRY))
    manifest, values = _read_weights(path, entries, max_bytes)
    if not model.built or (not model.weights and values):
        raise ValueError(
            f"load_weights({path!r}): model '{model.name}' is not built yet; call it on a batch "
            f"(or give input_shape) before loading weights"
        )
    _assign_weights(model, path, manifest, values)


def _metric_from_spec(spec):
    if isinstance(spec, list):
        return [_metric_from_spec(s) for s in spec]
    if isinstance(spec, dict) and "class_name" in spec:
        cls = getattr(metrics_module, str(spec["class_name"]), None)
        if not (isinstance(cls, type) and issubclass(cls, metrics_module.Metric)):
            raise ValueError(f"unknown metric class {spec['class_name']!r}")
        return cls(**dict(spec.get("config") or {}))
    if isinstance(spec, dict):
        return {k: _metric_from_spec(v) for k, v in spec.items()}
    return spec


def _loss_from_spec(spec):
    if isinstance(spec, list):
        return [_loss_from_spec(s) for s in spec]
    if isinstance(spec, dict) and "class_name" in spec:
        return losses_module.get(spec)
    if isinstance(spec, dict):
        return {k: _loss_from_spec(v) for k, v in spec.items()}
    return spec


def _check_compile_names(config):
    """Resolve every loss and metric named in the compile settings now, not at fit time."""

    def leaves(spec):
        if isinstance(spec, dict) and "class_name" not in spec:
            return [leaf for value in spec.values() for leaf in leaves(value)]
        if isinstance(spec, list):
            return [leaf for value in spec for leaf in leaves(value)]
        return [spec]

    for spec in leaves(config.get("loss")):
        if spec is not None:
            losses_module.get(spec)
    for spec in leaves(config.get("metrics")):
        if spec is not None:
            metrics_module.get(_metric_from_spec(spec))


def _optimizer_from_config(path, config, custom_objects):
    from .serialization import _CUSTOM

    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        _fail(path, "optimizer.json must name the optimizer class")
    name = config["class_name"]
    cls = (
        (custom_objects or {}).get(name)
        or _CUSTOM.get(name)
        or optimizers_module.ALIASES.get(name.lower())
    )
    if not (isinstance(cls, type) and issubclass(cls, optimizers_module.Optimizer)):
        _fail(
            path,
            f"unknown optimizer class {name!r} (register a custom one with "
            f"@dlx.register_serializable)",
        )
    inner = config.get("config")
    if not isinstance(inner, dict):
        _fail(path, "optimizer.json 'config' must be a dict")
    return cls.from_config(inner)


def _restore_optimizer(path, model, entries, custom_objects, max_bytes):
    config = _parse_json(path, entries, "optimizer.json")
    optimizer = _optimizer_from_config(path, config, custom_objects)
    variables = model.trainable_weights
    slots = config.get("slots")
    iterations = config.get("iterations")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
        _fail(path, f"optimizer.json: bad iterations {iterations!r}")
    if not isinstance(slots, list) or not all(
        isinstance(s, list) and all(isinstance(n, str) and _ARRAY_NAME.match(n) for n in s)
        for s in slots
    ):
        _fail(path, "optimizer.json: 'slots' must be a list of lists of slot names")
    if len(slots) != len(variables):
        _fail(
            path,
            f"optimizer state covers {len(slots)} trainable weights but model "
            f"'{model.name}' has {len(variables)}",
        )
    names = [f"s{i}_{n}" for i, s in enumerate(slots) for n in s]
    arrays = _read_npz(path, entries, "optimizer.npz", names, max_bytes)
    state_slots = []
    for i, (v, slot_names) in enumerate(zip(variables, slots)):
        expected = sorted(optimizer.slots(v))
        if sorted(slot_names) != expected:
            _fail(
                path,
                f"optimizer state of weight {v.name!r} has slots {slot_names}; "
                f"{type(optimizer).__name__} uses {expected}",
            )
        row = []
        for n in slot_names:
            a = arrays[f"s{i}_{n}"]
            if tuple(a.shape) != v.shape:
                _fail(
                    path,
                    f"optimizer slot {n!r} of weight {v.name!r} has shape {a.shape}, "
                    f"the weight {v.shape}",
                )
            row.append(a)
        state_slots.append(row)
    optimizer.set_state({"iterations": iterations, "slots": state_slots}, variables)
    return optimizer


def _read_training(path, entries):
    training = _parse_json(path, entries, "training.json", required=False)
    if training is None:
        return {}
    if not isinstance(training, dict):
        _fail(path, "training.json must be a dict")
    epoch = training.get("epoch", 0)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        _fail(path, f"training.json: bad epoch {epoch!r}")
    return training


def load_model(
    filepath,
    custom_objects=None,
    compile=True,
    restore_random_state=True,
    max_bytes=DEFAULT_MAX_BYTES,
):
    """Rebuild the model saved by ``model.save(filepath)``.

    The architecture comes from config.json, then the weights are set; when the
    file has optimizer state and ``compile``, the model is compiled with the
    saved loss/metrics and its optimizer continues from the saved iterations
    and slots. ``model.initial_epoch`` is the number of epochs completed when
    it was saved; with ``restore_random_state`` the host random generator is
    restored too, so ``fit(..., initial_epoch=model.initial_epoch)`` continues
    exactly like the uninterrupted run. Files larger than ``max_bytes`` (or
    declaring larger entries) are refused.

    Raises :class:`ModelFileError` (a ValueError) for a file that is not a
    readable dlx model of this format version, and ValueError for a subclassed
    model's file (load it with ``model.load_weights``).
    """
    path = os.fspath(filepath)
    entries = _read_entries(path, max_bytes)
    fmt = _parse_json(path, entries, FORMAT_ENTRY)
    _check_format(path, fmt)
    if fmt.get("contents") != "model" or "config.json" not in entries:
        raise ModelFileError(
            f"{path!r} holds only weights (model class {fmt.get('model_class')!r}): "
            f"{'a subclassed model is Python code; ' if fmt.get('contents') == 'model' else ''}"
            f"build the model in code and call model.load_weights({path!r})"
        )
    config = _parse_json(path, entries, "config.json")
    manifest, values = _read_weights(path, entries, max_bytes)
    training = _read_training(path, entries)
    if not isinstance(config, dict):
        _fail(path, "config.json must be a dict")
    try:
        model = deserialize_layer(config, custom_objects)
    except Exception as error:  # untrusted config: any failure to build means a bad file
        raise ModelFileError(
            f"{path!r}: config.json does not describe a model dlx can build: "
            f"{type(error).__name__}: {error}"
        ) from error
    if not hasattr(model, "fit"):
        _fail(path, f"config.json describes a {type(model).__name__} layer, not a model")
    if not model.built and values:
        _fail(
            path, "config.json has no input shape, so the model cannot be built to load its weights"
        )
    _assign_weights(model, path, manifest, values)
    compile_config = training.get("compile")
    if compile and "optimizer.json" in entries:
        try:
            optimizer = _restore_optimizer(path, model, entries, custom_objects, max_bytes)
        except ModelFileError:
            raise
        except Exception as error:  # untrusted optimizer config or state
            raise ModelFileError(
                f"{path!r}: optimizer state cannot be restored: {error}"
            ) from error
        if isinstance(compile_config, dict):
            try:
                _check_compile_names(compile_config)
                model.compile(
                    optimizer=optimizer,
                    loss=_loss_from_spec(compile_config.get("loss")),
                    metrics=_metric_from_spec(compile_config.get("metrics")),
                    loss_weights=compile_config.get("loss_weights"),
                )
            except Exception as error:  # untrusted compile settings
                raise ModelFileError(
                    f"{path!r}: training.json compile settings are invalid: {error}"
                ) from error
        else:
            model.optimizer = optimizer
    model.initial_epoch = int(training.get("epoch", 0))
    model._completed_epochs = model.initial_epoch
    if restore_random_state and training.get("random_state") is not None:
        try:
            set_random_state(training["random_state"])
        except ValueError as error:
            raise ModelFileError(f"{path!r}: training.json random_state: {error}") from error
    return model


__all__ = ["ModelFileError", "load_model", "load_weights", "save_model", "save_weights"]
