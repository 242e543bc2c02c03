"""Addresses of NumPy arrays for the compiled kernels (backends/host_arrays.py)."""

import ctypes
import platform

import numpy as np
import pytest
from dlx.backends import cpu_library, host_arrays


def _interface(a):
    return a.__array_interface__["data"][0]


@pytest.mark.skipif(platform.python_implementation() != "CPython", reason="CPython's layout")
def test_the_fast_reader_is_in_use_here():
    # CPython with NumPy 2: the object header, then the data pointer
    assert host_arrays.address is host_arrays._header_address
    assert cpu_library.pointer is host_arrays.address


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.zeros((3, 4), np.float32),
        lambda: np.arange(30.0).reshape(5, 6)[2:, 1:],  # a view into the middle
        lambda: np.arange(30.0).reshape(5, 6).T,
        lambda: np.zeros((), np.int64),
        lambda: np.zeros((0, 5)),
        lambda: np.frombuffer(bytearray(64), np.float64)[3:],  # memory NumPy does not own
        lambda: np.ones(7, np.uint8)[::2],
    ],
)
def test_address_is_the_first_element(make):
    a = make()
    assert host_arrays.address(a) == _interface(a)


def test_other_objects_take_the_array_interface():
    class Sub(np.ndarray):
        pass

    sub = np.arange(6.0).view(Sub)[2:]
    masked = np.ma.masked_array(np.arange(4.0))
    assert host_arrays.address(sub) == _interface(sub)
    assert host_arrays.address(masked) == _interface(masked)


def test_the_address_reaches_c():
    a = np.array([1.5, 2.5, 3.5])
    assert ctypes.c_double.from_address(host_arrays.address(a[1:])).value == 2.5


def test_a_layout_that_does_not_hold_falls_back(monkeypatch):
    # as if the data pointer sat one word further on: the check at import must see it
    reader = host_arrays._header_address
    offset = host_arrays._DATA_OFFSET + 8
    monkeypatch.setattr(host_arrays, "_header_address", lambda a: reader(a, _offset=offset))
    assert not host_arrays._layout_holds()
    monkeypatch.undo()
    assert host_arrays._layout_holds()


def test_plain():
    a = np.zeros((2, 3), np.float32)
    assert host_arrays.plain(np.float32, a, a[1:])
    assert not host_arrays.plain(np.float32, a.T)
    assert not host_arrays.plain(np.float64, a)
    assert not host_arrays.plain(np.float32, [0.0])
