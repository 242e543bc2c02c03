"""Holding NumPy's BLAS to one thread around small matrix products.

A product big enough for OpenBLAS to split over its threads waits for the
second thread; on a busy 2-core machine that wait measured 0.7 ms or 55 ms at
random, while small products (recurrent steps, per-layer weight gradients of a
small network) gain little from a second thread. ``threadpoolctl`` (optional;
scikit-learn brings it) switches the thread count; without it everything here
is a no-op.
"""

import contextlib

_CONTROLLERS = []  # the BLAS controllers, found on first use


def blas_controllers():
    """threadpoolctl's controllers of the loaded BLAS libraries, or () when unavailable."""
    if not _CONTROLLERS:
        try:
            from threadpoolctl import ThreadpoolController

            found = tuple(c for c in ThreadpoolController().lib_controllers if c.user_api == "blas")
        except Exception:  # not installed, or no BLAS it can drive
            found = ()
        _CONTROLLERS.append(found)
    return _CONTROLLERS[0]


class OneBlasThread:
    """``with OneBlasThread():`` holds BLAS to one thread (a no-op without threadpoolctl)."""

    def __enter__(self):
        self.controllers = blas_controllers()
        self.previous = [c.num_threads for c in self.controllers]
        for c, n in zip(self.controllers, self.previous):
            if n != 1:
                c.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        for c, n in zip(self.controllers, self.previous):
            if n != 1:
                c.set_num_threads(n)


def one_thread_if_small(multiply_adds, limit=1 << 20):
    """One BLAS thread for products of up to ``limit`` multiply-adds, else leave BLAS alone."""
    return OneBlasThread() if multiply_adds <= limit else contextlib.nullcontext()


_SYMBOLS = {}  # name -> address in NumPy's OpenBLAS, or 0


def _openblas_paths():
    """Paths of the loaded OpenBLAS libraries: threadpoolctl's, else (without it, on Linux)
    those in this process's memory map, where NumPy's import has put its own."""
    paths = [
        c.filepath for c in blas_controllers() if getattr(c, "internal_api", None) == "openblas"
    ]
    if not blas_controllers():
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    path = line.split()[-1]
                    if "openblas" in path.rsplit("/", 1)[-1] and path not in paths:
                        paths.append(path)
        except OSError:
            pass
    return paths


def openblas_symbol(name):
    """The address of ``name`` (``"cblas_sgemm"``, ``"openblas_set_num_threads"``, ...) in the
    64-bit-integer OpenBLAS that NumPy's wheels bundle (``scipy_<name>64_`` or ``<name>64_``),
    or None: another BLAS, or a build with 32-bit integers, whose functions the compiled
    kernels must not call."""
    if name not in _SYMBOLS:
        import ctypes

        found = 0
        for path in _openblas_paths():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for symbol in (f"scipy_{name}64_", f"{name}64_"):
                f = getattr(lib, symbol, None)
                if f is not None:
                    found = ctypes.cast(f, ctypes.c_void_p).value or 0
                    break
            if found:
                break
        _SYMBOLS[name] = found
    return _SYMBOLS[name] or None
