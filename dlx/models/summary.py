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
        # Keras's "Connected to": name[call index of that layer][output index] per input tensor
        call_index, calls_seen = {}, {}
        for node in model._nodes:
            call_index[id(node)] = calls_seen.get(id(node.layer), 0)
            calls_seen[id(node.layer)] = call_index[id(node)] + 1

        def source(t):
            if t.node is None:
                return f"{t.name}[0][0]"
            return f"{t.node.layer.name}[{call_index.get(id(t.node), 0)}][{t.index}]"

        for t in model.inputs:
            rows.append((f"{t.name} (InputLayer)", _shape_text(t.shape), "0", ""))
        for node in model._nodes:
            layer = node.layer
            outs = sorted(model._node_output_map.get(id(node), []), key=lambda t: t.index)
            shape = _shape_text([t.shape for t in outs]) if outs else "?"
            connected = ", ".join(source(t) for t in node.input_tensors)
            params = f"{layer.count_params():,}" if call_index[id(node)] == 0 else "(shared)"
            rows.append((f"{layer.name} ({type(layer).__name__})", shape, params, connected))
    else:
        shapes = getattr(model, "output_shapes", {})
        for layer in model.layers:
            shape = shapes.get(layer.name)
            rows.append(
                (
                    f"{layer.name} ({type(layer).__name__})",
                    _shape_text(shape),
                    f"{layer.count_params():,}" if layer.built else "0 (unbuilt)",
                    "",
                )
            )
    headers = ("Layer (type)", "Output Shape", "Param #") + (
        ("Connected to",) if functional else ()
    )
    widths = (
        [max(len(headers[i]), *(len(r[i]) for r in rows)) + 3 for i in range(len(headers))]
        if rows
        else [len(h) + 3 for h in headers]
    )
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
