"""Loading the CUDA sources in ``backends/cuda/`` -- on a GPU, or emulated on the CPU.

``load_module(source_name, name_expressions)`` returns a module whose
``get_function(name_expression)`` is a kernel called as a ``cupy.RawKernel`` is:
``kernel(grid, block, args)`` with ``grid``/``block`` tuples of ints and ``args``
a tuple of arrays and NumPy scalars of the exact parameter types
(``np.int32(n)``, ``np.float32(x)``, ...), in parameter order.

* On a GPU (``emulate=False``) the source is compiled by NVRTC through
  ``cupy.RawModule(code=..., name_expressions=...)`` on first use and cached for
  the process (CuPy also caches the binary on disk).
* With ``emulate=True`` the same source is compiled by the host C++ compiler
  (``g++``, or ``$CXX``) against ``cuda/emulation/cuda_emulation.h`` into a shared
  library, cached by content hash under ``$DLX_CUDA_EMULATION_CACHE`` (default
  ``~/.cache/dlx/cuda_emulation``), and each launch runs the whole grid on the
  calling CPU thread (see that header for what kernels may and may not do). The
  arguments are checked against the kernel's real parameter types -- dtype of
  each array, exact width of each scalar, C-contiguity -- so a mistake that
  would corrupt memory on the GPU fails loudly in CPU tests instead.

:func:`nvcc_compile_command` gives the command the build test uses to compile a
source for real GPU architectures.
"""

import ctypes
import threading
from pathlib import Path

import numpy as np

from .host_compiler import HostBuildError, build_shared_library, cache_dir, compiler_name

SOURCE_DIR = Path(__file__).resolve().parent / "cuda"
# No -std: the sources are C++11 (tests compile them as C++14, the oldest NVRTC
# default CuPy supports), and CuPy may add a standard option of its own.
NVRTC_OPTIONS = (f"-I{SOURCE_DIR}",)

_MODULES = {}  # (source_name, name_expressions, emulate) -> module
_LOCK = threading.Lock()


class CudaBuildError(RuntimeError):
    """A CUDA source failed to compile (the compiler's messages are in the text)."""


def source_path(source_name):
    """``backends/cuda/<source_name>`` (an absolute path is taken as it is: tests use that)."""
    path = SOURCE_DIR / source_name
    if not path.is_file():
        raise FileNotFoundError(f"no CUDA source {source_name!r} in {SOURCE_DIR}")
    return path


def load_module(source_name, name_expressions, *, emulate=False):
    """The compiled module of ``backends/cuda/<source_name>`` (cached per process)."""
    key = (source_name, tuple(name_expressions), bool(emulate))
    with _LOCK:
        module = _MODULES.get(key)
        if module is None:
            factory = EmulatedModule if emulate else CupyModule
            module = _MODULES[key] = factory(source_name, key[1])
    return module


# ---------------------------------------------------------------------------
# GPU: NVRTC through CuPy


class CupyModule:
    """``cupy.RawModule`` over one source, compiled on the first ``get_function``."""

    def __init__(self, source_name, name_expressions):
        self.source_name = source_name
        self.name_expressions = name_expressions
        self._raw = None

    def get_function(self, name_expression):
        if self._raw is None:
            import cupy

            code = source_path(self.source_name).read_text()
            self._raw = cupy.RawModule(
                code=code, options=NVRTC_OPTIONS, name_expressions=self.name_expressions
            )
        return self._raw.get_function(name_expression)


# ---------------------------------------------------------------------------
# CPU: g++ with the emulation header


def _emulation_wrapper(source_name, name_expressions):
    """C++ that includes the source and exports a launcher and a signature per kernel."""
    lines = [f'#include "{source_path(source_name)}"', ""]
    for i, name in enumerate(name_expressions):
        lines += [
            f'extern "C" void dlx_launch_{i}(const unsigned int* grid, '
            "const unsigned int* block, void** args) {",
            f"  dlx_emulation::launch(&{name}, grid, block, args);",
            "}",
            f'extern "C" const char* dlx_signature_{i}() {{',
            f"  static const std::string names = dlx_emulation::signature(&{name});",
            "  return names.c_str();",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _all_sources():
    """Every file in the source folder, so a changed header invalidates the cache."""
    return sorted(p for p in SOURCE_DIR.rglob("*") if p.is_file())


def emulation_library(source_name, name_expressions):
    """Path of the shared library built from one source (compiled when not cached)."""
    command = [compiler_name(), "-std=c++17", "-O2", "-shared", "-fPIC", "-Wall", f"-I{SOURCE_DIR}"]
    try:
        return build_shared_library(
            Path(source_name).stem,
            _emulation_wrapper(source_name, name_expressions),
            command,
            _all_sources(),
            cache_dir("cuda_emulation", "DLX_CUDA_EMULATION_CACHE"),
            f"{source_name} for emulation",
        )
    except HostBuildError as error:
        raise CudaBuildError(str(error)) from None


class EmulatedModule:
    """One source compiled by g++; kernels run on the CPU."""

    def __init__(self, source_name, name_expressions):
        self.source_name = source_name
        self.name_expressions = name_expressions
        self._library = ctypes.CDLL(str(emulation_library(source_name, name_expressions)))
        self._kernels = {}

    def get_function(self, name_expression):
        kernel = self._kernels.get(name_expression)
        if kernel is None:
            try:
                index = self.name_expressions.index(name_expression)
            except ValueError:
                raise KeyError(
                    f"{name_expression!r} is not among the name expressions of "
                    f"{self.source_name}: {list(self.name_expressions)}"
                ) from None
            kernel = self._kernels[name_expression] = EmulatedKernel(
                name_expression, self._library, index
            )
        return kernel


_SCALAR_TYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "bool": np.bool_,
    "uint8": np.uint8,
}


class EmulatedKernel:
    """A kernel of an :class:`EmulatedModule`, called like ``cupy.RawKernel``."""

    def __init__(self, name, library, index):
        self.name = name
        self._launch = getattr(library, f"dlx_launch_{index}")
        self._launch.restype = None
        self._launch.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        describe = getattr(library, f"dlx_signature_{index}")
        describe.restype = ctypes.c_char_p
        self.parameters = describe().decode().rstrip(",").split(",")

    def _argument(self, position, parameter, value):
        """A host array holding the parameter's value (for an array: its data pointer)."""
        where = f"{self.name}: argument {position}"
        if parameter.startswith("*"):
            wanted = np.dtype(_SCALAR_TYPES[parameter[1:]])
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{where} must be an array of {wanted}, got {type(value).__name__}")
            if value.dtype != wanted:
                raise TypeError(f"{where} must be an array of {wanted}, got {value.dtype}")
            if not value.flags.c_contiguous:
                raise ValueError(f"{where} must be C-contiguous (shape {value.shape})")
            return np.array(value.ctypes.data, dtype=np.uintp)
        wanted = _SCALAR_TYPES[parameter]
        if type(value) is not wanted:
            raise TypeError(
                f"{where} must be a NumPy {np.dtype(wanted)} scalar, "
                f"got {type(value).__name__} {value!r}"
            )
        return np.array(value, dtype=wanted)

    def __call__(self, grid, block, args, shared_mem=0):
        if shared_mem:
            raise ValueError(f"{self.name}: the emulation has no shared memory")
        if len(args) != len(self.parameters):
            raise TypeError(
                f"{self.name} takes {len(self.parameters)} arguments "
                f"({', '.join(self.parameters)}), got {len(args)}"
            )
        grid = (tuple(grid) + (1, 1, 1))[:3]
        block = (tuple(block) + (1, 1, 1))[:3]
        if min(grid + block) < 1:
            raise ValueError(f"{self.name}: empty launch grid={grid} block={block}")
        holders = [self._argument(i, p, a) for i, (p, a) in enumerate(zip(self.parameters, args))]
        pointers = (ctypes.c_void_p * len(holders))(*[h.ctypes.data for h in holders])
        grid_array = (ctypes.c_uint * 3)(*grid)
        block_array = (ctypes.c_uint * 3)(*block)
        self._launch(grid_array, block_array, pointers)


# ---------------------------------------------------------------------------
# nvcc, for the build test


def nvcc_compile_command(source_name, name_expressions, output, arch="sm_90"):
    """The nvcc command that compiles the given template instances of one source to
    a cubin for ``arch``, and the text of the instantiation file it compiles.

    Returns ``(command, text)``: write ``text`` to ``output.with_suffix(".cu")``,
    then run ``command``.
    """
    text = [f'#include "{source_path(source_name)}"', "void* dlx_instances[] = {"]
    text += [f"    (void*)&{name}," for name in name_expressions]
    text += ["};", ""]
    output = Path(output)
    command = [
        "nvcc",
        "-std=c++17",
        "-cubin",
        f"-arch={arch}",
        f"-I{SOURCE_DIR}",
        str(output.with_suffix(".cu")),
        "-o",
        str(output),
    ]
    return command, "\n".join(text)
