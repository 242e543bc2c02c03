"""Crash-safe file writing (the host boundary: plain bytes, no arrays).

:func:`atomic_write` writes to a temporary file next to the target, flushes and
``fsync``s it, renames it over the target with ``os.replace`` (atomic on POSIX
and Windows) and finally ``fsync``s the folder, so the rename itself survives a
power cut. A process killed at any moment leaves either the previous file or
the new one at ``path``, never a torn mixture; at worst a stray
``.<name>.tmp-*`` file stays behind in the folder.
"""

import contextlib
import os
import tempfile

TEMP_MARKER = ".tmp-"


def _fsync_directory(folder):
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None, newline=None):
    """Context manager yielding a file object whose contents replace ``path`` on success.

    On an exception inside the block the temporary file is removed and ``path``
    is left as it was. ``mode`` is ``"wb"`` or ``"w"`` (text, with ``encoding``).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"atomic_write: {path!r} is a directory, not a file path")
    fd, temp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}{TEMP_MARKER}", dir=folder)
    try:
        if mode == "w":
            handle = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline=newline)
        else:
            handle = os.fdopen(fd, "wb")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file with mode 0600; give it the usual permissions
        umask = os.umask(0)
        os.umask(umask)
        with contextlib.suppress(OSError):
            os.chmod(temp, 0o666 & ~umask)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_directory(folder)


def write_bytes_atomic(path, data):
    """Replace ``path`` with ``data`` (bytes) crash-safely; see :func:`atomic_write`."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


__all__ = ["atomic_write", "write_bytes_atomic"]
