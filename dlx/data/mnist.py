"""MNIST and Fashion-MNIST from the standard IDX files (the host boundary).

An IDX file (LeCun's format) is: two zero bytes, a type code (0x08 uint8,
0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of
dimensions, each dimension as a big-endian uint32, then the values big-endian
in C order. :func:`read_idx` reads one (gzipped or not) and checks that the
data has exactly the declared size; :func:`write_idx` writes one.

:func:`load_mnist` / :func:`load_fashion_mnist` read the four files
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each ``.gz`` or
not) from a cache folder -- ``cache_dir``, else ``$DLX_DATA/<name>``, else
``~/.dlx/datasets/<name>`` -- and, when a file is missing and ``download`` is
true, fetch it from the known mirrors, check its MD5 and store it there
(written crash-safely). Without network and without the files they raise a
``FileNotFoundError`` that says where to put them.
"""

import gzip
import hashlib
import os
import struct
import urllib.error
import urllib.request

import numpy as np

from ..io import atomic_write

_IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {np.dtype(v).newbyteorder("=").str: k for k, v in _IDX_TYPES.items()}
DEFAULT_MAX_BYTES = 2**31

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DATASETS = {
    "mnist": {
        "mirrors": (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
    "fashion_mnist": {
        "mirrors": (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
}


class IDXError(ValueError):
    """An IDX file is truncated, has trailing bytes or an invalid header."""


def _open(path):
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # noqa: SIM115


def _read_exactly(handle, count, path, what):
    chunks, left = [], count
    while left:
        chunk = handle.read(min(left, 1 << 24))
        if not chunk:
            raise IDXError(
                f"{os.fspath(path)!r}: truncated IDX file: {what} needs {count} bytes, "
                f"got {count - left}"
            )
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_idx(path, max_bytes=DEFAULT_MAX_BYTES):
    """The array stored in IDX file ``path`` (gzipped or not), in native byte order.

    Raises :class:`IDXError` (a ValueError) for a bad magic number or type code, a
    declared size over ``max_bytes``, truncated data or trailing bytes.
    """
    name = os.fspath(path)
    try:
        with _open(path) as handle:
            header = _read_exactly(handle, 4, path, "the header")
            if header[:2] != b"\x00\x00":
                raise IDXError(
                    f"{name!r}: not an IDX file (first bytes {header[:2]!r}, want 00 00)"
                )
            code, ndim = header[2], header[3]
            if code not in _IDX_TYPES:
                raise IDXError(
                    f"{name!r}: unknown IDX type code 0x{code:02X}; known codes are "
                    f"{', '.join(f'0x{c:02X}' for c in _IDX_TYPES)}"
                )
            shape = struct.unpack(f">{ndim}I", _read_exactly(handle, 4 * ndim, path, "the shape"))
            dtype = _IDX_TYPES[code]
            size = dtype.itemsize
            for s in shape:
                size *= s
            if size > max_bytes:
                raise IDXError(
                    f"{name!r}: declares shape {shape} ({size} bytes), over max_bytes={max_bytes}"
                )
            data = _read_exactly(handle, size, path, f"shape {shape} of {dtype.name}")
            if handle.read(1):
                raise IDXError(f"{name!r}: trailing bytes after the {shape} array")
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        if isinstance(error, FileNotFoundError):
            raise
        raise IDXError(f"{name!r}: cannot read IDX data ({error})") from error
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def write_idx(path, array, compress=None):
    """Write ``array`` (uint8, int8, int16, int32, float32 or float64) as an IDX file.

    Gzipped when ``compress`` is true, or by default when ``path`` ends in ``.gz``.
    """
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("=").str)
    if code is None:
        raise ValueError(f"write_idx: dtype {array.dtype} has no IDX type code")
    if array.ndim > 255:
        raise ValueError(f"write_idx: {array.ndim} dimensions, IDX allows at most 255")
    payload = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    payload += np.ascontiguousarray(array, dtype=_IDX_TYPES[code]).tobytes()
    if compress is None:
        compress = os.fspath(path).endswith(".gz")
    if compress:
        payload = gzip.compress(payload, mtime=0)
    with atomic_write(path, "wb") as handle:
        handle.write(payload)


def default_cache_dir(name):
    root = os.environ.get("DLX_DATA") or os.path.join(os.path.expanduser("~"), ".dlx", "datasets")
    return os.path.join(root, name)


def _md5(path):
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(name, filename, folder, timeout):
    spec = DATASETS[name]
    target = os.path.join(folder, filename)
    errors = []
    for mirror in spec["mirrors"]:
        url = mirror + filename
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                data = response.read()
        except (urllib.error.URLError, OSError, ValueError) as error:
            errors.append(f"{url}: {error}")
            continue
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest != spec["md5"][filename]:
            errors.append(f"{url}: MD5 {digest} != {spec['md5'][filename]}")
            continue
        os.makedirs(folder, exist_ok=True)
        with atomic_write(target, "wb") as handle:
            handle.write(data)
        return target
    raise FileNotFoundError(
        f"{name}: could not download {filename} ({'; '.join(errors)}). Put the IDX files in "
        f"{folder!r} by hand (or pass cache_dir=)."
    )


def _find(name, base, folder, download, timeout):
    for candidate in (base + ".gz", base):
        path = os.path.join(folder, candidate)
        if os.path.exists(path):
            return path
    if download:
        return _download(name, base + ".gz", folder, timeout)
    raise FileNotFoundError(
        f"{name}: {base}(.gz) is not in {folder!r}; put the four IDX files there "
        f"({', '.join(_FILES.values())}) or call with download=True"
    )


def load_idx_dataset(
    name, cache_dir=None, download=True, normalize=False, image_shape=None, timeout=60
):
    """``(x_train, y_train), (x_test, y_test)`` of an MNIST-like dataset in IDX files.

    Images are uint8 ``(n, 28, 28)`` (Keras's layout), or float32 in [0, 1] when
    ``normalize``; ``image_shape`` reshapes each image (e.g. ``(28, 28, 1)`` for
    Conv2D, ``(784,)`` for an MLP). Labels are uint8.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown IDX dataset {name!r}; known are {sorted(DATASETS)}")
    folder = os.fspath(cache_dir) if cache_dir is not None else default_cache_dir(name)
    arrays = {
        key: read_idx(_find(name, base, folder, download, timeout)) for key, base in _FILES.items()
    }
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim < 2 or labels.ndim != 1 or len(images) != len(labels):
            raise IDXError(
                f"{name} ({folder!r}): {split} images of shape {images.shape} do not match "
                f"labels of shape {labels.shape}"
            )
    out = []
    for split in ("train", "test"):
        x = arrays[f"{split}_images"]
        if normalize:
            x = x.astype(np.float32) / np.float32(255.0)
        if image_shape is not None:
            x = x.reshape((len(x),) + tuple(image_shape))
        out.append((x, arrays[f"{split}_labels"]))
    return tuple(out)


def load_mnist(cache_dir=None, download=True, normalize=False, image_shape=None):
    """MNIST handwritten digits: 60,000 train and 10,000 test 28x28 images (see
    :func:`load_idx_dataset` for the arguments and the cache folder)."""
    return load_idx_dataset("mnist", cache_dir, download, normalize, image_shape)


def load_fashion_mnist(cache_dir=None, download=True, normalize=False, image_shape=None):
    """Fashion-MNIST: 60,000 train and 10,000 test 28x28 images of 10 clothing classes."""
    return load_idx_dataset("fashion_mnist", cache_dir, download, normalize, image_shape)


__all__ = [
    "IDXError",
    "load_fashion_mnist",
    "load_idx_dataset",
    "load_mnist",
    "read_idx",
    "write_idx",
]
