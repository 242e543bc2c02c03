"""``array_api_strict``: the reference namespace that allows nothing beyond the
standard. Passing the test suite on it proves the generic code keeps to the
standard. It has no kernels by design."""

import numpy as np

from .registry import Backend, BackendUnavailableError


class StrictBackend(Backend):
    def __init__(self):
        try:
            import array_api_strict
        except ImportError as error:
            raise BackendUnavailableError(
                "The 'array_api_strict' backend needs the array-api-strict package "
                "(pip install array-api-strict)."
            ) from error
        super().__init__(
            array_api_strict,
            device=array_api_strict.Device("CPU_DEVICE"),
            array_types=(array_api_strict._array_object.Array,),
        )

    def from_host(self, value):
        value = np.asarray(value)
        if value.dtype == np.float16:
            value = value.astype(np.float32)
        return self.xp.asarray(value)

    def to_numpy(self, array, copy=False):
        return np.from_dlpack(array).copy()
