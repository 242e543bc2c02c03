"""Read weights saved by Keras 3 (``keras_model.save_weights("x.weights.h5")``, or the
``model.weights.h5`` inside a ``.keras`` archive of ``keras_model.save``) into a dlx model of
the same architecture (``pip install "dlx[keras_weights]"`` for h5py).

Keras 3 layout (``keras.src.saving.saving_lib.H5IOStore``): one HDF5 group per layer
under ``layers/``, named not by the layer's name but by its class name in snake case,
numbered per class in the order of ``model.layers`` (``dense``, ``dense_1``, ...). A
layer's own variables are the datasets ``vars/0``, ``vars/1``, ... in the order of
``layer.weights``; sublayers are groups below it: a recurrent layer's weights are in
``cell/vars``, MultiHeadAttention's in ``query_dense``/``key_dense``/``value_dense``/
``output_dense``, Bidirectional's in ``forward_layer``/``backward_layer``,
TimeDistributed's in ``layer``, a nested model's in ``layers/...``.

dlx layers use Keras's class names, weight order and shapes, so the mapping goes by
layer order: the dlx model's layers are walked in order and named the way Keras
names them, and each layer's arrays are checked against its weights' shapes. Every
array is checked before any is assigned: a mismatch is an error naming the layer and
both shapes, and nothing is loaded.

Host boundary: arrays are read as host NumPy and handed to ``set_weights``.
"""

import os
import re

import numpy as np


class KerasWeightsError(ValueError):
    """A Keras weights file that does not fit the model (or is not a Keras 3 file)."""


def _import_h5py():
    try:
        import h5py
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Reading Keras .weights.h5 files needs h5py: pip install 'dlx[keras_weights]'"
        ) from error
    return h5py


def keras_snake_case(name):
    """Keras's ``naming.to_snake_case`` (``Conv2D`` -> ``conv2d``, ``LSTM`` -> ``lstm``)."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique(name, used):
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _child(group, key, path, layer, what):
    if key not in group:
        have = sorted(group.keys()) if hasattr(group, "keys") else []
        raise KerasWeightsError(
            f"{path!r}: no weights for layer '{layer.name}' ({type(layer).__name__}): expected "
            f"the group '{group.name.rstrip('/')}/{key}' ({what}); the file has {have}. Is it a "
            f"Keras 3 .weights.h5 file of the same architecture?"
        )
    return group[key]


def _vars(group):
    """The datasets ``vars/0, vars/1, ...`` of a group, in numeric order."""
    if "vars" not in group:
        return []
    vars_group = group["vars"]
    keys = sorted(vars_group.keys(), key=lambda k: int(k) if k.isdigit() else 1 << 30)
    return [vars_group[k] for k in keys]


def _all_arrays(group):
    """Own vars, then every subgroup (sorted, as Keras walks them), recursively."""
    out = _vars(group)
    for key in sorted(group.keys()):
        if key != "vars" and hasattr(group[key], "keys"):
            out.extend(_all_arrays(group[key]))
    return out


_SUBGROUPS = {
    "SimpleRNN": ["cell"],
    "LSTM": ["cell"],
    "GRU": ["cell"],
    "MultiHeadAttention": ["query_dense", "key_dense", "value_dense", "output_dense"],
}


def _layer_arrays(layer, group, path):
    """The arrays of ``layer`` (in ``layer.weights`` order) from its Keras group."""
    kind = type(layer).__name__
    if kind == "Bidirectional":
        return _layer_arrays(
            layer.forward_layer, _child(group, "forward_layer", path, layer, "forward"), path
        ) + _layer_arrays(
            layer.backward_layer, _child(group, "backward_layer", path, layer, "backward"), path
        )
    if kind == "TimeDistributed":
        return _layer_arrays(layer.layer, _child(group, "layer", path, layer, "wrapped"), path)
    if kind in _SUBGROUPS:
        arrays = _vars(group)
        for key in _SUBGROUPS[kind]:
            arrays.extend(_vars(_child(group, key, path, layer, "a sublayer's weights")))
        return arrays
    return _all_arrays(group)


def keras_layer_order(model):
    """``model.layers`` in the order Keras 3 gives them for the same architecture.

    A Sequential's order is its own. A functional model's is Keras's
    (``keras.src.ops.function.map_graph``): layers sorted by decreasing depth (the
    longest path to an output), ties broken by the order a depth-first walk from the
    outputs first meets them. It decides which Keras group (``dense``, ``dense_1``,
    ...) belongs to which layer."""
    if not getattr(model, "_functional", False) or hasattr(model, "_layers"):
        return list(model.layers)

    def node_of(tensor):
        # (key, layer, parent tensors) of the call that made ``tensor``
        if tensor.node is None:
            return ("input", id(tensor)), tensor.input_layer, []
        return ("call", id(tensor.node)), tensor.node.layer, tensor.node.input_tensors

    finished, order, indices, parents = set(), [], {}, {}

    def visit(tensor):
        key, layer, inputs = node_of(tensor)
        if key in finished:
            return
        indices.setdefault(id(layer), (len(indices), layer))
        for t in inputs:
            visit(t)
        finished.add(key)
        parents[key] = [node_of(t)[0] for t in inputs]
        order.append((key, layer))

    for out in model.outputs:
        visit(out)
    node_depth, layer_depth = {}, {}
    for key, layer in reversed(order):
        depth = max(node_depth.setdefault(key, 0), layer_depth.get(id(layer), 0))
        layer_depth[id(layer)] = depth
        node_depth[key] = depth
        for parent in parents[key]:
            node_depth[parent] = max(depth + 1, node_depth.get(parent, 0))
    for t in model.inputs:  # inputs no output depends on come first among depth 0
        if id(t.input_layer) not in layer_depth:
            layer_depth[id(t.input_layer)] = 0
            indices[id(t.input_layer)] = (-1, t.input_layer)
    ranked = sorted(indices.values(), key=lambda item: (-layer_depth[id(item[1])], item[0]))
    return [layer for _, layer in ranked]


def _keras_class_name(layer):
    # a functional dlx.Model is Keras's class Functional (keras.Model(inputs, outputs))
    if type(layer).__name__ == "Model" and getattr(layer, "_functional", False):
        return "Functional"
    return type(layer).__name__


def _collect(model, group, path, out):
    """Append ``(layer, arrays)`` for every layer with weights of ``model`` (in order)."""
    from ..models.model import Model

    layers_group = _child(group, "layers", path, model, "the model's layers")
    used = {}
    # like Keras's model.layers: a Sequential's leaves out its InputLayer, a functional's not
    for layer in keras_layer_order(model):
        key = _unique(keras_snake_case(_keras_class_name(layer)), used)
        if not layer.weights:
            continue
        sub = _child(layers_group, key, path, layer, "its place in the model's layer order")
        if isinstance(layer, Model):
            _collect(layer, sub, path, out)
        else:
            out.append((layer, _layer_arrays(layer, sub, path)))


def _check(layer, arrays, path):
    weights = layer.weights
    current = layer.get_weights()
    if len(arrays) != len(weights):
        raise KerasWeightsError(
            f"{path!r}: layer '{layer.name}' ({type(layer).__name__}) has {len(weights)} weights "
            f"{[tuple(w.shape) for w in weights]} but the file holds {len(arrays)} arrays "
            f"{[tuple(a.shape) for a in arrays]} for it: the architectures differ; nothing "
            f"was loaded"
        )
    for w, a in zip(weights, arrays):
        if tuple(a.shape) != tuple(w.shape):
            raise KerasWeightsError(
                f"{path!r}: layer '{layer.name}' ({type(layer).__name__}) weight {w.name!r} has "
                f"shape {tuple(w.shape)} but the file's array has shape {tuple(a.shape)}: the "
                f"architectures differ; nothing was loaded"
            )
    return [np.asarray(a[()], dtype=c.dtype) for a, c in zip(arrays, current)]


MAX_ARCHIVE_ENTRY_BYTES = 8 * 2**30


def is_keras_weights_file(path):
    """Whether ``path`` names a Keras 3 weights file: ``*.weights.h5`` (unless it is a dlx
    zip file under that name), or a ``*.keras`` zip archive of Keras (a dlx model file saved
    under a ``.keras`` name is not one)."""
    import zipfile

    path = str(path)
    if path.endswith(".weights.h5"):
        return not (os.path.isfile(path) and zipfile.is_zipfile(path))
    if not path.endswith(".keras") or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    return "model.weights.h5" in names and "dlx_format.json" not in names


def _keras_archive_weights(path):
    """The ``model.weights.h5`` entry of a Keras 3 ``.keras`` archive, in memory (nothing
    else of the archive is read; its config is never executed)."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            try:
                info = archive.getinfo("model.weights.h5")
            except KeyError:
                raise KerasWeightsError(
                    f"{path!r} is a zip archive without 'model.weights.h5': not a Keras 3 "
                    f".keras file (entries: {archive.namelist()[:8]})"
                ) from None
            if info.file_size > MAX_ARCHIVE_ENTRY_BYTES:
                raise KerasWeightsError(
                    f"{path!r}: model.weights.h5 claims {info.file_size} bytes, over the "
                    f"{MAX_ARCHIVE_ENTRY_BYTES}-byte limit"
                )
            return io.BytesIO(archive.read(info))
    except zipfile.BadZipFile as error:
        raise KerasWeightsError(f"{path!r} is not a Keras 3 .keras archive: {error}") from error


def load_keras_weights(model, filepath):
    """Set ``model``'s weights from a Keras 3 ``.weights.h5`` file, or the weights of a
    ``.keras`` model archive (all or nothing).

    The dlx model must have the Keras model's architecture: its layers with weights,
    in order, of the same types and shapes."""
    h5py = _import_h5py()
    path = os.fspath(filepath)
    if not model.built:
        raise ValueError(
            f"load_weights({path!r}): model '{model.name}' is not built yet; call it on a batch "
            f"(or give input_shape) before loading weights"
        )
    if not getattr(model, "_functional", False) and not hasattr(model, "_layers"):
        raise KerasWeightsError(
            f"load_weights({path!r}): model '{model.name}' is subclassed; Keras weight files "
            f"can be read into Sequential and functional models"
        )
    source = _keras_archive_weights(path) if path.endswith(".keras") else path
    try:
        handle = h5py.File(source, "r")
    except OSError as error:
        raise KerasWeightsError(f"{path!r} is not a readable HDF5 file: {error}") from error
    with handle as f:
        if "layers" not in f:
            legacy = "layer_names" in f.attrs or "model_weights" in f
            raise KerasWeightsError(
                f"{path!r} is not a Keras 3 .weights.h5 file (no 'layers' group)"
                + (
                    "; it looks like a Keras 2 (legacy HDF5) file, which is not supported"
                    if legacy
                    else ""
                )
            )
        assignments = []
        _collect(model, f, path, assignments)
        used = {ds.name for _, arrays in assignments for ds in arrays}
        stored = []
        f["layers"].visititems(
            lambda name, obj: stored.append(obj.name) if isinstance(obj, h5py.Dataset) else None
        )
        unused = sorted(set(stored) - used)
        if unused:
            raise KerasWeightsError(
                f"{path!r} holds weights that no layer of model '{model.name}' takes: "
                f"{unused[:8]}{' ...' if len(unused) > 8 else ''}: the architectures differ; "
                f"nothing was loaded"
            )
        checked = [(layer, _check(layer, arrays, path)) for layer, arrays in assignments]
    for layer, arrays in checked:
        layer.set_weights(arrays)
    return model


# ---------------------------------------------------------------------------
# writing: the same layout, so Keras 3 loads dlx weights


def _layer_entries(layer, prefix):
    """``[(group path, arrays)]`` of ``layer`` in Keras's layout (the reader's mirror)."""
    kind = type(layer).__name__
    if kind == "Bidirectional":
        return _layer_entries(layer.forward_layer, f"{prefix}/forward_layer") + _layer_entries(
            layer.backward_layer, f"{prefix}/backward_layer"
        )
    if kind == "TimeDistributed":
        return _layer_entries(layer.layer, f"{prefix}/layer")
    weights = layer.get_weights()
    if kind in ("SimpleRNN", "LSTM", "GRU"):
        return [(f"{prefix}/cell", weights)]
    if kind == "MultiHeadAttention":
        per = 2 if layer.use_bias else 1
        keys = ["query_dense", "key_dense", "value_dense", "output_dense"]
        return [(f"{prefix}/{k}", weights[i * per : (i + 1) * per]) for i, k in enumerate(keys)]
    return [(prefix, weights)]


def _model_entries(model, prefix, out):
    from ..models.model import Model

    used = {}
    for layer in keras_layer_order(model):
        key = _unique(keras_snake_case(_keras_class_name(layer)), used)
        if not layer.weights:
            continue
        if isinstance(layer, Model):
            _model_entries(layer, f"{prefix}/{key}/layers", out)
        else:
            out.extend(_layer_entries(layer, f"{prefix}/{key}"))


def writes_keras_format(model, filepath):
    """Whether ``model.save_weights(filepath)`` writes Keras's layout: for ``*.weights.h5``
    names (Keras 3's required suffix), Sequential and functional models, with h5py installed
    (otherwise the dlx format is written, which ``load_weights`` reads back as well)."""
    if not str(os.fspath(filepath)).endswith(".weights.h5"):
        return False
    if not (getattr(model, "_functional", False) or hasattr(model, "_layers")):
        return False
    try:
        import h5py  # noqa: F401
    except ImportError:
        return False
    return True


def save_keras_weights(model, filepath):
    """Write ``model``'s weights as Keras 3 ``save_weights`` does (``.weights.h5``), so that
    ``keras_model.load_weights(filepath)`` loads them into the same architecture in Keras.
    The file is written to a temporary name and renamed (a crash never leaves a torn file)."""
    h5py = _import_h5py()
    path = os.fspath(filepath)
    if not model.built:
        raise ValueError(
            f"save_weights({path!r}): model '{model.name}' is not built yet; call it on a batch "
            f"(or give input_shape) before saving weights"
        )
    entries = []
    _model_entries(model, "layers", entries)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with h5py.File(tmp, "w") as f:
            f.create_group("vars")
            f["vars"].attrs["name"] = model.name
            for group, arrays in entries:
                g = f.require_group(f"{group}/vars")
                for i, a in enumerate(arrays):
                    g.create_dataset(str(i), data=np.asarray(a))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
