"""Export dlx models to ONNX (``pip install "dlx[onnx]"``).

``dlx.onnx.export(model, "model.onnx", input_shape=(28, 28, 1))`` writes an ONNX
model of a Sequential or functional model; ONNX Runtime (or any ONNX consumer)
then computes what ``model.predict`` computes. Each layer type has a small
converter (:data:`CONVERTERS`, keyed by the layer's class name); a layer without
one raises :class:`UnsupportedLayerError` naming it. The ``onnx`` package is
imported only when :func:`export` runs, so importing dlx never needs it.
"""

from .export import (
    CONVERTERS,
    DEFAULT_OPSET,
    ExportContext,
    UnsupportedLayerError,
    Value,
    export,
    register_converter,
)

__all__ = [
    "CONVERTERS",
    "DEFAULT_OPSET",
    "ExportContext",
    "UnsupportedLayerError",
    "Value",
    "export",
    "register_converter",
]
