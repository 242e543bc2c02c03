"""Compiling CUDA sources the way the GPU backend does, on a machine without a GPU.

* :func:`nvcc_cubins`: ``nvcc`` (on the PATH where the CUDA toolkit is installed)
  compiles the named template instances to a cubin per architecture.
* :func:`nvrtc_compile`: NVRTC -- the compiler ``cupy.RawModule`` uses at run
  time -- called through ctypes, from the ``nvidia-cuda-nvrtc`` wheel or a
  system library. It needs no GPU either.
"""

import ctypes
import ctypes.util
import re
import shutil
import subprocess
from pathlib import Path

from dlx.backends.cuda_modules import NVRTC_OPTIONS, nvcc_compile_command, source_path

ARCHITECTURES = ("sm_80", "sm_90")


def nvcc_cubins(source, name_expressions, workdir):
    """``{arch: number of kernels in the cubin}`` (raises with nvcc's messages on failure)."""
    counts = {}
    for arch in ARCHITECTURES:
        output = Path(workdir) / f"{Path(source).stem}-{arch}.cubin"
        command, text = nvcc_compile_command(source, name_expressions, output, arch)
        output.with_suffix(".cu").write_text(text)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise AssertionError(f"nvcc {arch} failed on {source}:\n{result.stderr}")
        # each kernel is a ".text.<mangled name>" section of the cubin's ELF
        counts[arch] = len(set(re.findall(rb"\.text\.(\w+)", output.read_bytes())))
    return counts


def have_nvcc():
    return shutil.which("nvcc") is not None


def _nvrtc_library():
    candidates = []
    try:
        import nvidia

        for base in nvidia.__path__:
            candidates += sorted(Path(base).glob("cu*/lib/libnvrtc.so.*"))
    except ImportError:
        pass
    candidates = [p for p in candidates if ".alt." not in p.name and "builtins" not in p.name]
    system = ctypes.util.find_library("nvrtc")
    for candidate in [*map(str, candidates), system]:
        if candidate:
            try:
                # NVRTC dlopens its builtins library by name: load it first, from beside it
                for builtins in sorted(Path(candidate).parent.glob("libnvrtc-builtins.so.*")):
                    if ".alt." not in builtins.name:
                        ctypes.CDLL(str(builtins), mode=ctypes.RTLD_GLOBAL)
                return ctypes.CDLL(candidate)
            except OSError:
                continue
    return None


_NVRTC = []


def nvrtc():
    """The NVRTC library (ctypes), or None when neither the wheel nor a system copy is there."""
    if not _NVRTC:
        _NVRTC.append(_nvrtc_library())
    return _NVRTC[0]


def nvrtc_compile(source, name_expressions, arch="sm_90", extra_options=()):
    """Compile like ``cupy.RawModule(code, options, name_expressions)``; returns the
    lowered (mangled) name of each expression. Raises with NVRTC's log on failure."""
    lib = nvrtc()
    code = source_path(source).read_text().encode()
    program = ctypes.c_void_p()

    def check(status, what):
        if status != 0:
            lib.nvrtcGetErrorString.restype = ctypes.c_char_p
            raise AssertionError(f"{what}: {lib.nvrtcGetErrorString(status).decode()}")

    check(
        lib.nvrtcCreateProgram(
            ctypes.byref(program), code, Path(source).name.encode(), 0, None, None
        ),
        "nvrtcCreateProgram",
    )
    try:
        for name in name_expressions:
            check(lib.nvrtcAddNameExpression(program, name.encode()), f"add {name}")
        options = [*NVRTC_OPTIONS, *extra_options, f"--gpu-architecture={arch}"]
        array = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        status = lib.nvrtcCompileProgram(program, len(options), array)
        if status != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(program, log)
            raise AssertionError(f"NVRTC failed on {source}:\n{log.value.decode()}")
        lowered = {}
        for name in name_expressions:
            mangled = ctypes.c_char_p()
            check(
                lib.nvrtcGetLoweredName(program, name.encode(), ctypes.byref(mangled)),
                f"lowered name of {name}",
            )
            lowered[name] = mangled.value.decode()
        return lowered
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))
