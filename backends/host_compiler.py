"""Building a shared library with the host C++ compiler, cached on disk by content.

Two users: the CUDA emulation (``cuda_modules``: the CUDA sources compiled for
the CPU in tests) and the compiled CPU kernels (``cpu_library``). The cache key
is a hash of the compiler command and every source file, so an edited header
rebuilds; a library is written under a temporary name and renamed into place,
so processes that build at the same time never load a half-written file.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


class HostBuildError(RuntimeError):
    """The host C++ compiler is missing or failed (its messages are in the text)."""


def compiler_name():
    """``$CXX`` when set, else ``g++``, else ``c++``."""
    chosen = os.environ.get("CXX")
    if chosen:
        return chosen
    return "g++" if shutil.which("g++") or not shutil.which("c++") else "c++"


def cache_dir(folder, variable):
    """``$<variable>``, else ``~/.cache/dlx/<folder>`` when it can be created, else a
    per-user folder in the system's temporary directory."""
    root = os.environ.get(variable)
    if root:
        return Path(root)
    home = Path.home() / ".cache" / "dlx" / folder
    try:
        home.mkdir(parents=True, exist_ok=True)
        if os.access(home, os.W_OK):
            return home
    except OSError:
        pass
    return Path(tempfile.gettempdir()) / f"dlx-{folder}-{os.getuid()}"


def build_shared_library(stem, main_source, command, inputs, cache, what):
    """Path of ``<cache>/<stem>-<hash>.so`` built from ``main_source`` (C++ text).

    ``command``: the compiler and its options (source and output are appended);
    ``inputs``: files the source includes, hashed into the key; ``what``: how an
    error names the thing being built.
    """
    digest = hashlib.sha256(main_source.encode() + "\0".join(command).encode())
    for path in inputs:
        digest.update(str(path).encode() + b"\0" + Path(path).read_bytes())
    library = Path(cache) / f"{stem}-{digest.hexdigest()[:20]}.so"
    if library.exists():
        return library
    if shutil.which(command[0]) is None:
        raise HostBuildError(f"{what} needs a C++ compiler; {command[0]!r} not found")
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as work:
        source = Path(work) / f"{stem}.cpp"
        source.write_text(main_source)
        built = Path(work) / library.name
        result = subprocess.run(
            [*command, str(source), "-o", str(built)], capture_output=True, text=True
        )
        if result.returncode != 0:
            raise HostBuildError(f"{command[0]} could not compile {what}:\n{result.stderr}")
        os.replace(built, library)
    return library
