"""The compiled CPU kernels: ``backends/cpu/*.cpp`` built into one shared library.

NumPy cannot fuse: an optimizer step or a pooling backward written with ufuncs
makes a full pass over memory per operation, and on a 2-core machine those
passes, not the arithmetic, are most of a training step. The sources in
``backends/cpu/`` do such work in one pass. Each is compiled on first use by
the host C++ compiler (``$CXX``, else ``g++``) with ``-O3 -march=native`` (without
``-march=native`` when the compiler refuses it), cached on disk by content
hash under ``$DLX_CPU_KERNEL_CACHE`` (default ``~/.cache/dlx/cpu_kernels``),
and called through ``ctypes``, which releases the GIL during the call.

Nothing depends on them: :func:`library` returns ``None`` when there is no
compiler, the build fails, or ``DLX_KERNELS=numpy`` asks for the NumPy fast
paths alone, and every compiled kernel then falls back to its NumPy version
(:func:`status` says which case holds). Each source is a library of its own, so
one that fails to build leaves the others working. Each source exports plain ``extern "C"``
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

from .host_arrays import address
from .host_compiler import HostBuildError, build_shared_library, cache_dir, compiler_name

SOURCE_DIR = Path(__file__).resolve().parent / "cpu"
# No -ffast-math: NaN and inf must pass through as the NumPy kernels pass them.
OPTIONS = (
    "-std=c++17",
    "-O3",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-ffp-contract=off",  # no fused multiply-adds: round as NumPy does, step by step
    "-fopenmp-simd",
    "-shared",
    "-fPIC",
    "-Wall",
)

# for this machine's vector units; a compiler that refuses it builds without
TUNING = ("-march=native",)

_LOCK = threading.RLock()  # re-entered: loading a kernel library loads the thread pool
_STATE = {}  # source stem -> (CDLL or None, status text)
_WARNED = []  # one warning per process, not one per source


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
    """The stems of ``backends/cpu/*.cpp`` (``"optimizers"``, ...)."""
    return sorted(p.stem for p in SOURCE_DIR.glob("*.cpp"))


def build(source):
    """Path of the library of ``backends/cpu/<source>.cpp`` (built now when not cached);
    raises :class:`HostBuildError`."""
    path = SOURCE_DIR / f"{source}.cpp"
    if not path.is_file():
        raise FileNotFoundError(f"no CPU kernel source {path.name} in {SOURCE_DIR}")

    def attempt(tuning):
        return build_shared_library(
            f"cpu-{source}",
            f'// machine {_machine()}\n#include "{path}"\n',
            [compiler_name(), *OPTIONS, *tuning, f"-I{SOURCE_DIR}"],
            sorted(p for p in SOURCE_DIR.iterdir() if p.is_file()),
            cache_dir("cpu_kernels", "DLX_CPU_KERNEL_CACHE"),
            f"the CPU kernels of {path.name}",
        )

    try:
        return attempt(TUNING)
    except HostBuildError as tuned_error:
        if not TUNING:
            raise
        try:
            return attempt(())
        except HostBuildError:
            raise tuned_error from None


def library(source):
    """The loaded ``ctypes.CDLL`` of one source, or ``None`` when compiled kernels are off
    or it cannot be built (a warning says why, once per process)."""
    found = _STATE.get(source)
    if found is None:
        with _LOCK:
            found = _STATE.get(source)
            if found is None:
                found = _STATE[source] = _load(source)
    return found[0]


def _load(source):
    if not enabled():
        return None, f"off (DLX_KERNELS={os.environ.get('DLX_KERNELS')})"
    try:
        path = build(source)
        lib = ctypes.CDLL(str(path))
        if source == POOL_SOURCE:
            lib.dlx_thread_pool_resize(ctypes.c_int(pool_threads()))
        _connect(lib)
        return lib, f"compiled: {path}"
    except (HostBuildError, OSError) as error:
        if not _WARNED:
            _WARNED.append(True)
            warnings.warn(
                f"dlx: compiled CPU kernels unavailable, using the NumPy ones (slower): {error}",
                RuntimeWarning,
                stacklevel=4,
            )
        return None, f"unavailable: {error}"


POOL_SOURCE = "thread_pool"


def pool_threads():
    """The threads of dlx's pool, the caller's included: ``$DLX_NUM_THREADS``, else the cores
    this process may run on."""
    wanted = os.environ.get("DLX_NUM_THREADS", "").strip()
    if wanted:
        try:
            return max(1, int(wanted))
        except ValueError:
            raise ValueError(f"DLX_NUM_THREADS must be a whole number, not {wanted!r}") from None
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _connect(lib):
    """Hand a kernel library the thread pool and NumPy's BLAS (see ``cpu/parallel.h``)."""
    connect = getattr(lib, "dlx_connect", None)
    if connect is None:
        return
    from .blas_threads import openblas_symbol

    pool = library(POOL_SOURCE)
    parallel_for = threads = None
    if pool is not None:
        parallel_for = ctypes.cast(pool.dlx_parallel_for, ctypes.c_void_p).value
        threads = pool.dlx_thread_pool_size()
    connect.argtypes = [ctypes.c_void_p, ctypes.c_int] + [ctypes.c_void_p] * 4
    connect.restype = None
    connect(
        parallel_for,
        threads or 1,
        openblas_symbol("cblas_sgemm"),
        openblas_symbol("cblas_dgemm"),
        openblas_symbol("openblas_set_num_threads"),
        openblas_symbol("openblas_get_num_threads"),
    )


def status():
    """``{source: "compiled: <path>" | "off (...)" | "unavailable: <why>"}``, building
    what is not built yet."""
    for source in sources():
        library(source)
    return {source: _STATE[source][1] for source in sources()}


def warmup():
    """Build and load every source now; returns :func:`status`."""
    return status()


def reset():
    """Forget the loaded libraries so the next :func:`library` call looks again (tests)."""
    with _LOCK:
        _STATE.clear()
        _WARNED.clear()


def function(source, name, *argtypes):
    """The C function ``name`` exported by ``<source>.cpp``, with its argument types, or
    ``None`` without that library or when this build lacks it (some kernels exist only for
    some instruction sets)."""
    lib = library(source)
    f = None if lib is None else getattr(lib, name, None)
    if f is None:
        return None
    f.argtypes = argtypes
    f.restype = None
    return f


pointer = address  # the address of an array's first element (as ``ctypes`` takes a ``void*``)
