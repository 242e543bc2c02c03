"""Interoperability with other libraries: Keras 3 weight files (:mod:`.keras_h5`).

DLPack exchange lives in the backends (``Backend.from_dlpack``, ``dlx.from_dlpack``)
and ONNX export in :mod:`dlx.onnx`. Nothing here is imported by ``import dlx``.
"""
