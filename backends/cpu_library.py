"""The compiled CPU kernels: ``backends/cpu/*.cpp`` built into one shared library.

NumPy cannot fuse: an optimizer step or a pooling backward written with ufuncs
makes a full pass over memory per operation, and on a 2-core machine those
passes, not the arithmetic, are most of a training step. The sources in
``backends/cpu/`` do such work in one pass. They are compiled on first use by
the host C++ compiler (``$CXX``, else ``g++``) with ``-O3 -march=native``, cached
on disk by content hash under ``$DLX_CPU_KERNEL_CACHE`` (default
``~/.cache/dlx/cpu_kernels``), and called through ``ctypes``, which releases
the GIL during the call.

Nothing depends on them: :func:`library` returns ``None`` when there is no
compiler, the build fails, or ``DLX_KERNELS=numpy`` asks for the NumPy fast
paths alone, and every compiled kernel then falls back to its NumPy version
(:func:`status` says which case holds). Each source exports plain ``extern "C"``
functions, one per dtype (``dlx_<name>_f32`` / ``_f64``), taking pointers to
C-contiguous arrays and sizes; the Python side checks layouts before calling.
"""

import ctypes
import hashlib
import os
import platform
import threading
import warnings
from pathlib import Path

from .host_compiler import HostBuildError, build_shared_library, cache_dir, compiler_name

SOURCE_DIR = Path(__file__).resolve().parent / "cpu"
# No -ffast-math: NaN and inf must pass through as the NumPy kernels pass them.
OPTIONS = (
    "-std=c++17",
    "-O3",
    "-march=native",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-ffp-contract=off",  # no fused multiply-adds: round as NumPy does, step by step
    "-fopenmp-simd",
    "-shared",
    "-fPIC",
    "-Wall",
)

_LOCK = threading.Lock()
_STATE = {}  # "library": CDLL or None, "status": str


def enabled():
    """False when ``DLX_KERNELS`` is ``numpy`` (NumPy fast paths only) or ``generic``."""
    return os.environ.get("DLX_KERNELS", "").lower() not in ("numpy", "generic")


def _machine():
    """What ``-march=native`` compiles for, so a cache shared by several machines stays apart."""
    description = platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith(("model name", "flags", "Features")):
                    description += line
                    if line.startswith(("flags", "Features")):
                        break
    except OSError:
        pass
    return hashlib.sha256(description.encode()).hexdigest()[:16]


def sources():
    return sorted(SOURCE_DIR.glob("*.cpp"))


def build():
    """Path of the compiled library (built now when not cached); raises :class:`HostBuildError`."""
    main = f"// machine {_machine()}\n" + "".join(f'#include "{p}"\n' for p in sources())
    return build_shared_library(
        "cpu_kernels",
        main,
        [compiler_name(), *OPTIONS, f"-I{SOURCE_DIR}"],
        sorted(p for p in SOURCE_DIR.iterdir() if p.is_file()),
        cache_dir("cpu_kernels", "DLX_CPU_KERNEL_CACHE"),
        "the CPU kernels",
    )


def library():
    """The loaded ``ctypes.CDLL``, or ``None`` when compiled kernels are off or unavailable."""
    if "library" in _STATE:
        return _STATE["library"]
    with _LOCK:
        if "library" not in _STATE:
            _STATE["library"], _STATE["status"] = _load()
    return _STATE["library"]


def _load():
    if not enabled():
        return None, f"off (DLX_KERNELS={os.environ.get('DLX_KERNELS')})"
    try:
        path = build()
        return ctypes.CDLL(str(path)), f"compiled: {path}"
    except (HostBuildError, OSError) as error:
        warnings.warn(
            f"dlx: the compiled CPU kernels are unavailable, using the NumPy ones "
            f"(slower): {error}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None, f"unavailable: {error}"


def status():
    """``compiled: <path>``, ``off (...)`` or ``unavailable: <why>``."""
    library()
    return _STATE["status"]


def reset():
    """Forget the loaded library so the next :func:`library` call looks again (tests)."""
    with _LOCK:
        _STATE.clear()


def function(name, *argtypes):
    """The exported C function ``name`` with its argument types, or ``None`` without a library."""
    lib = library()
    if lib is None:
        return None
    f = getattr(lib, name)
    f.argtypes = argtypes
    f.restype = None
    return f


def pointer(array):
    """The address of an array's first element (as ``ctypes`` takes a ``void*``)."""
    return array.__array_interface__["data"][0]
