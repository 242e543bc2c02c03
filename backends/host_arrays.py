"""What the compiled CPU kernels ask of the NumPy arrays handed to them: whether an
array is plain (a C-contiguous ``np.ndarray`` of one dtype) and the address of its
first element, which ``ctypes`` passes as a ``void*``.

A training step hands some forty arrays to C, so the address is read the fast way:
an ndarray object starts with the Python object header, then its ``char *data``
(NumPy's ``PyArrayObject_fields``), so the address is one machine word at
``id(array) + object.__basicsize__``: 0.2 us, against 1-2 us for
``array.__array_interface__["data"][0]``, which builds a dict each time. That layout
is checked on sample arrays at import, and where it does not hold (another Python,
another NumPy) or for anything but an exact ``np.ndarray``, the interface is used.
"""

import ctypes

import numpy as np


def plain(dtype, *arrays):
    """Whether every array is a C-contiguous ``np.ndarray`` of ``dtype``."""
    return all(type(a) is np.ndarray and a.dtype == dtype and a.flags.c_contiguous for a in arrays)


def _interface_address(array):
    return array.__array_interface__["data"][0]


_DATA_OFFSET = object.__basicsize__  # the object header, then PyArrayObject's data pointer
_read_word = ctypes.c_void_p.from_address


def _header_address(array, _ndarray=np.ndarray, _offset=_DATA_OFFSET, _read=_read_word):
    if type(array) is not _ndarray:  # only an ndarray has that layout
        return _interface_address(array)
    return _read(id(array) + _offset).value


def _layout_holds():
    base = np.arange(24.0).reshape(4, 6)
    samples = (base, base[1:, 2:], base.T, np.zeros((), np.float32), np.ones(5, np.int64)[3:])
    try:
        return all(_header_address(a) == _interface_address(a) for a in samples)
    except (ValueError, OverflowError, TypeError):
        return False


# address(array): the address of ``array``'s first element, an int (``ctypes`` takes it as a void*)
address = _header_address if _layout_holds() else _interface_address
