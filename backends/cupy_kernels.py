"""The kernel table of the GPU backends: hand-written CUDA kernels plus their glue.

The glue modules (``cupy_conv``: ``conv``, ``conv_transpose``, ``pool``;
``cupy_rnn``: ``rnn_sequence``, ``lstm_sequence``, ``gru_sequence``) are written
against a NumPy-compatible module ``xp`` and a source loader, so the same glue
runs on CuPy with NVRTC-compiled kernels (the ``cupy`` backend) and on NumPy
with the kernels compiled by g++ through the emulation header (the
``cuda_emulation`` backend, for CPU-only test runs).
"""

import importlib

GLUE_MODULES = ("cupy_conv", "cupy_rnn")
_FACTORIES = {"cupy_conv": "conv_kernels", "cupy_rnn": "rnn_kernels"}


def _glue(name):
    return importlib.import_module(f"{__package__}.{name}")


def cuda_sources():
    """``{source file: [name expressions]}`` of every kernel the glue launches."""
    sources = {}
    for name in GLUE_MODULES:
        for source, expressions in _glue(name).CUDA_SOURCES.items():
            sources.setdefault(source, [])
            sources[source] += [e for e in expressions if e not in sources[source]]
    return sources


def cuda_kernels(xp, load):
    """``{op name: kernel object}`` for a backend whose arrays belong to ``xp``.

    ``load(source_name, name_expressions)`` returns a compiled module
    (:func:`backends.cuda_modules.load_module` with or without emulation).
    """
    table = {}
    for name in GLUE_MODULES:
        table.update(getattr(_glue(name), _FACTORIES[name])(xp, load))
    return table


def compile_all(load):
    """Compile every source now (``warmup``); returns ``{source: number of kernels}``."""
    compiled = {}
    for source, expressions in cuda_sources().items():
        module = load(source, expressions)
        for expression in expressions:
            module.get_function(expression)
        compiled[source] = len(expressions)
    return compiled
