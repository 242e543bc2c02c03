"""Training curves with matplotlib (optional: ``pip install "dlx[plot]"``).

:func:`plot_history` draws one panel per quantity -- the loss first, then each
metric -- with the training curve and, when logged, the validation curve
(``val_<name>``). Given a path it writes an image file (PNG, SVG, PDF... by
extension) crash-safely and without needing a display.
"""

import io
import math
import os

from .io import write_bytes_atomic


def _require_matplotlib():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "plot_history needs matplotlib, an optional dependency of dlx: "
            'pip install matplotlib (or pip install "dlx[plot]")'
        ) from error
    return matplotlib


def _as_dict(history):
    """``history`` as ``{name: [values per epoch]}`` plus the epoch numbers (1-based)."""
    if hasattr(history, "history") and isinstance(history.history, dict):
        logs, epochs = history.history, list(getattr(history, "epoch", []) or [])
    elif isinstance(history, dict):
        logs, epochs = history, []
    else:
        raise TypeError(
            f"plot_history: expected a History (from fit) or a dict of lists, got "
            f"{type(history).__name__}"
        )
    logs = {str(k): [float(v) for v in values] for k, values in logs.items()}
    if not logs:
        raise ValueError("plot_history: the history is empty (did fit run any epoch?)")
    length = max(len(v) for v in logs.values())
    if len(epochs) != length:
        epochs = list(range(length))
    return logs, [e + 1 for e in epochs]


def plot_history(history, path=None, metrics=None, title=None, dpi=100):
    """Draw loss and metric curves (train and validation) of ``history``.

    Args:
        history: the :class:`~dlx.callbacks.History` returned by ``fit`` or its
            ``.history`` dict.
        path: if given, save the figure there (format from the extension) and close it.
        metrics: names to draw (default: every logged quantity that is not ``val_*``,
            loss first; ``learning_rate`` is drawn too when it was logged).
        title: a title above the panels.

    Returns the matplotlib Figure (closed when saved to ``path``).
    """
    _require_matplotlib()
    from matplotlib.figure import Figure  # no pyplot: works without a display
    from matplotlib.ticker import MaxNLocator

    logs, epochs = _as_dict(history)
    if metrics is None:
        names = [k for k in logs if not k.startswith("val_")]
        names.sort(key=lambda k: (k != "loss", list(logs).index(k)))
        if not names:  # only validation values logged
            names = [k.removeprefix("val_") for k in logs]
    else:
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        unknown = [n for n in names if n not in logs and f"val_{n}" not in logs]
        if unknown:
            raise ValueError(f"plot_history: {unknown} not logged; logged are {sorted(logs)}")
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    figure = Figure(figsize=(4.5 * columns, 3.4 * rows), dpi=dpi)
    for i, name in enumerate(names):
        axes = figure.add_subplot(rows, columns, i + 1)
        for key, label, style in ((name, "train", "-"), (f"val_{name}", "validation", "--")):
            values = logs.get(key)
            if values:
                axes.plot(
                    epochs[: len(values)], values, style, marker="o", markersize=3, label=label
                )
        axes.set_title(name)
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(True, alpha=0.3)
        if f"val_{name}" in logs:
            axes.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    if path is not None:
        path = os.fspath(path)
        extension = os.path.splitext(path)[1].lstrip(".").lower() or "png"
        buffer = io.BytesIO()
        figure.savefig(buffer, format=extension)
        write_bytes_atomic(path, buffer.getvalue())
    return figure


__all__ = ["plot_history"]
