"""Fixtures of tests/: the backend × device × dtype matrix.

``backend`` runs a test once per combination that this machine has:

=====================  ===================  ==================  ================================
namespace              device               dtypes              skipped when
=====================  ===================  ==================  ================================
NumPy                  cpu                  float32, float64    never
array-api-strict       CPU_DEVICE, device1  float32, float64    ``array_api_strict`` missing
CuPy                   cuda:0               float32, float64    no CuPy or no CUDA device (gpu)
=====================  ===================  ==================  ================================

array-api-strict's second device (``device1``) is the CPU stand-in for "not the default
device": arrays there cannot be combined with default-device arrays, so a function that creates
an array without ``device=`` fails on it. Each parameter is a :class:`Backend` with helpers to
make inputs from NumPy and to read results back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest


@dataclass(frozen=True)
class Backend:
    """One cell of the matrix: ``xp`` the namespace, ``device`` a device of it, ``dtype`` its
    float dtype; ``rtol`` a rounding-level tolerance for that dtype."""

    name: str
    xp: Any
    device: Any
    dtype_name: str

    @property
    def dtype(self):
        return getattr(self.xp, self.dtype_name)

    @property
    def rtol(self) -> float:
        return 1e-5 if self.dtype_name == "float32" else 1e-12

    def asarray(self, a, dtype=None):
        """NumPy (or nested sequence) ``a`` on this backend's device; floats in its dtype."""
        a = np.asarray(a)
        if dtype is None and np.issubdtype(a.dtype, np.floating):
            dtype = self.dtype
        if self.name == "cupy":
            out = self.xp.asarray(a)
            return out if dtype is None else out.astype(dtype)
        return self.xp.asarray(a, dtype=dtype, device=self.device)

    def to_numpy(self, a):
        from blockbayes._backend import to_numpy

        return np.asarray(to_numpy(a))


def _cuda_reason():
    try:
        import cupy
    except Exception as exc:  # pragma: no cover - depends on the machine
        return f"CuPy not importable ({type(exc).__name__})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "no CUDA device"
    except Exception as exc:  # pragma: no cover - depends on the machine
        return f"no usable CUDA device ({exc})"
    return None


_CELLS = [("numpy", "cpu", "float64"), ("numpy", "cpu", "float32"),
          ("array_api_strict", "CPU_DEVICE", "float64"), ("array_api_strict", "CPU_DEVICE", "float32"),
          ("array_api_strict", "device1", "float64"),
          ("cupy", "cuda:0", "float64"), ("cupy", "cuda:0", "float32")]


@pytest.fixture(params=[pytest.param(c, id="-".join(c), marks=[pytest.mark.gpu] if c[0] == "cupy" else [])
                        for c in _CELLS])
def backend(request) -> Backend:
    name, dev, dt = request.param
    if name == "numpy":
        import array_api_compat.numpy as xp

        return Backend(name, xp, "cpu", dt)
    if name == "array_api_strict":
        xp = pytest.importorskip("array_api_strict")
        return Backend(name, xp, xp.Device(dev), dt)
    reason = _cuda_reason()
    if reason:
        pytest.skip(reason)
    import cupy

    return Backend(name, cupy, cupy.cuda.Device(0), dt)
