"""``model.summary()``: layers, output shapes and parameter counts."""

import math


def _count(weights):
    return sum(math.prod(w.shape) for w in weights)


def _shape_text(shape):
    if shape is None:
        return "?"
    if isinstance(shape, list):
        return ", ".join(_shape_text(s) for s in shape)
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


def print_summary(model, line_length=None, print_fn=None):
    print_fn = print_fn or print
    rows = []
    functional = getattr(model, "_functional", False)
    if functional:
        for t in model.inputs:
            rows.append((f"{t.name} (InputLayer)", _shape_text(t.shape), "0", ""))
        for node in model._nodes:
            layer = node.layer
            outs = [t for t in model._node_output_map.get(id(node), [])] if hasattr(model, "_node_output_map") else []
            shape = _shape_text([t.shape for t in outs]) if outs else "?"
            connected = ", ".join(t.name for t in node.input_tensors)
            rows.append((f"{layer.name} ({type(layer).__name__})", shape, f"{layer.count_params():,}", connected))
    else:
        shapes = getattr(model, "output_shapes", {})
        for layer in model.layers:
            shape = shapes.get(layer.name)
            rows.append((f"{layer.name} ({type(layer).__name__})", _shape_text(shape),
                         f"{layer.count_params():,}" if layer.built else "0 (unbuilt)", ""))
    headers = ("Layer (type)", "Output Shape", "Param #") + (("Connected to",) if functional else ())
    widths = [max(len(headers[i]), *(len(r[i]) for r in rows)) + 3 for i in range(len(headers))] if rows else [
        len(h) + 3 for h in headers
    ]
    width = line_length or sum(widths)
    print_fn(f'Model: "{model.name}"')
    print_fn("_" * width)
    print_fn("".join(h.ljust(w) for h, w in zip(headers, widths)))
    print_fn("=" * width)
    for i, r in enumerate(rows):
        print_fn("".join(c.ljust(w) for c, w in zip(r, widths)))
        print_fn(("_" if i < len(rows) - 1 else "=") * width if i < len(rows) - 1 else "=" * width)
    total = _count(model.weights)
    trainable = _count(model.trainable_weights)
    print_fn(f"Total params: {total:,}")
    print_fn(f"Trainable params: {trainable:,}")
    print_fn(f"Non-trainable params: {total - trainable:,}")
    print_fn("_" * width)
