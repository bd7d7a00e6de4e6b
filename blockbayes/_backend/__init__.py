"""Backend layer: the only code in blockbayes that knows NumPy from CuPy from array-api-strict.

Everything else is written against the Python Array API and calls these helpers for what the
standard does not provide (device resolution, host copies, random numbers, triangular solves,
special functions).

Rules (see DESIGN.md):

* ``namespace(*arrays)`` returns the Array-API namespace shared by the arrays; mixing
  namespaces or devices is a ``ValueError``.
* Everything follows ``X``: outputs live in the input's namespace, device and dtype.
* ``device="cuda"`` never falls back to the CPU silently: without CuPy or a GPU it raises
  :class:`BackendUnavailableError` naming the missing piece.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
import array_api_compat

__all__ = [
    "BackendUnavailableError",
    "namespace",
    "fast_namespace",
    "backend_name",
    "is_numpy",
    "is_cupy",
    "resolve_device",
    "to_device",
    "to_numpy",
    "device_of",
    "same_device",
    "asarray_like",
    "move_like",
    "float_dtype",
    "dtype_name",
]


_NUMPY_NS = array_api_compat.array_namespace(np.empty(0))


class BackendUnavailableError(RuntimeError):
    """A requested backend (CuPy, a CUDA device) is not available on this machine."""


def namespace(*arrays: Any):
    """Array-API namespace shared by ``arrays`` (``None`` entries and Python scalars ignored).

    Raises
    ------
    ValueError
        If the arrays come from different array libraries.
    TypeError
        If no array is given.
    """
    arrs = [a for a in arrays if a is not None and not isinstance(a, (int, float, bool, complex))]
    if not arrs:
        raise TypeError("namespace() needs at least one array")
    if all(type(a) is np.ndarray for a in arrs):
        # the common case, NumPy arrays only: array_namespace's answer, without its per-call
        # inspection (~5 µs, called tens of times per sweep)
        return _NUMPY_NS
    try:
        return array_api_compat.array_namespace(*arrs)
    except TypeError as exc:
        kinds = sorted({type(a).__module__.split(".")[0] + "." + type(a).__name__ for a in arrs})
        raise ValueError(
            f"arrays come from different array libraries ({', '.join(kinds)}); "
            "move them to one backend first"
        ) from exc


def fast_namespace(*arrays: Any):
    """:func:`namespace`, except that plain NumPy arrays get NumPy itself when it implements the
    Array API functions on its own (NumPy >= 2.1): the same calls and results without
    ``array_api_compat``'s wrappers, which cost a few microseconds per call — most of a step of a
    small net (an IVON step on a UCI-sized MLP makes ~100 such calls). Look it up once per run,
    not per step.
    """
    xp = namespace(*arrays)
    if array_api_compat.is_numpy_namespace(xp) and hasattr(np, "astype") and hasattr(np, "concat"):
        return np
    return xp


def backend_name(xp) -> str:
    """``"numpy"``, ``"cupy"``, ``"array_api_strict"`` or the namespace's module name."""
    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    if array_api_compat.is_array_api_strict_namespace(xp):
        return "array_api_strict"
    return getattr(xp, "__name__", str(xp))


def is_numpy(xp) -> bool:
    return array_api_compat.is_numpy_namespace(xp)


def is_cupy(xp) -> bool:
    return array_api_compat.is_cupy_namespace(xp)


def _import_cupy():
    try:
        import cupy  # noqa: F401
    except Exception as exc:  # ImportError, or CUDA libraries missing at import
        raise BackendUnavailableError(
            "device='cuda' needs CuPy, which could not be imported "
            f"({type(exc).__name__}: {exc}); install it with `pip install blockbayes[gpu]` "
            "(package cupy-cuda12x) on a machine with an NVIDIA GPU and CUDA driver"
        ) from exc
    return cupy


_DEVICE_RE = re.compile(r"^(cpu|cuda|gpu)(?::(\d+))?$")


def resolve_device(device):
    """Resolve a user ``device`` argument.

    Parameters
    ----------
    device : None, str or device object
        ``None`` (keep the inputs where they are), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (also
        ``"gpu"``), or a CuPy ``Device``.

    Returns
    -------
    (kind, index) : tuple
        ``kind`` is ``None``, ``"cpu"`` or ``"cuda"``; ``index`` the CUDA device number.

    Raises
    ------
    ValueError
        Malformed device string.
    BackendUnavailableError
        CUDA requested without CuPy or without a visible GPU (or the index is out of range).
    """
    if device is None:
        return None, None
    if not isinstance(device, str):
        mod = type(device).__module__
        if mod.startswith("cupy"):
            return "cuda", int(device.id)
        raise ValueError(f"unrecognised device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    m = _DEVICE_RE.match(device.strip().lower())
    if m is None:
        raise ValueError(f"unrecognised device {device!r}; use 'cpu', 'cuda' or 'cuda:N'")
    kind = "cuda" if m.group(1) in ("cuda", "gpu") else "cpu"
    if kind == "cpu":
        if m.group(2) not in (None, "0"):
            raise ValueError(f"device {device!r}: the CPU has no index other than 0")
        return "cpu", None
    index = int(m.group(2) or 0)
    cupy = _import_cupy()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise BackendUnavailableError(
            f"device={device!r}: CuPy is installed but no CUDA device is usable "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    if count == 0:
        raise BackendUnavailableError(f"device={device!r}: CuPy found no CUDA device")
    if index >= count:
        raise BackendUnavailableError(
            f"device={device!r}: only {count} CUDA device(s) visible (indices 0..{count - 1})"
        )
    return "cuda", index


def device_of(x):
    """Device of an array, as reported by array-api-compat."""
    return array_api_compat.device(x)


def same_device(*arrays) -> None:
    """Raise ``ValueError`` unless all arrays live on one device."""
    arrs = [a for a in arrays if a is not None]
    if not arrs:
        return
    devs = [device_of(a) for a in arrs]
    first = devs[0]
    for d in devs[1:]:
        if d != first:
            raise ValueError(f"arrays live on different devices ({first} and {d}); move them to one device first")


def to_numpy(x) -> np.ndarray:
    """Host NumPy copy (or view for NumPy input) of any supported array."""
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__
    if mod.startswith("cupy"):
        return x.get()
    if mod.startswith("array_api_strict"):
        return np.asarray(x._array) if hasattr(x, "_array") else np.asarray(x)
    return np.asarray(x)


def to_device(x, kind, index=None, dtype=None):
    """Move ``x`` to ``kind`` (``None`` keeps it; ``"cpu"`` gives NumPy; ``"cuda"`` gives CuPy).

    ``dtype`` (a NumPy dtype or name) converts on the way. Arrays already in place are returned
    without a copy.
    """
    if kind is None:
        if dtype is None:
            return x
        xp = namespace(x)
        return xp.astype(x, _dtype_in(xp, dtype), copy=False)
    if kind == "cpu":
        arr = to_numpy(x)
        return arr if dtype is None else arr.astype(np.dtype(dtype), copy=False)
    if kind == "cuda":
        cupy = _import_cupy()
        with cupy.cuda.Device(index or 0):
            if type(x).__module__.startswith("cupy") and x.device.id == (index or 0):
                arr = x
            else:
                arr = cupy.asarray(to_numpy(x))
            return arr if dtype is None else arr.astype(np.dtype(dtype), copy=False)
    raise ValueError(f"unknown device kind {kind!r}")


def _dtype_in(xp, dtype):
    return getattr(xp, dtype_name(dtype))


def float_dtype(xp, dtype) -> Any:
    """The namespace's float dtype for a NumPy dtype/name (``float32`` or ``float64``)."""
    name = dtype_name(dtype)
    if name not in ("float32", "float64"):
        raise TypeError(f"dtype must be float32 or float64, got {name}")
    return getattr(xp, name)


def asarray_like(value, like, dtype=None):
    """``value`` as an array in ``like``'s namespace, device and (unless given) dtype."""
    xp = namespace(like)
    return xp.asarray(value, dtype=like.dtype if dtype is None else dtype, device=device_of(like))


def move_like(x, like, dtype=None):
    """``x`` in ``like``'s namespace and on its device: the one cross-backend move.

    No copy when ``x`` is already there. NumPy targets get a host copy (``to_numpy``), CuPy
    targets a transfer to ``like``'s GPU, other namespaces (array-api-strict) ``xp.asarray`` of
    the host copy on ``like``'s device. Python scalars and sequences become arrays.

    Parameters
    ----------
    x : array, scalar or sequence
    like : array
        Gives the namespace and device.
    dtype : optional
        Convert to this dtype (a dtype of ``like``'s namespace, or a NumPy dtype/name); ``None``
        keeps ``x``'s.
    """
    xp = namespace(like)
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        out = xp.asarray(np.asarray(x) if isinstance(x, (list, tuple)) else x, device=device_of(like))
    elif namespace(x) is xp and device_of(x) == device_of(like):
        out = x
    else:
        name = backend_name(xp)
        if name == "numpy":
            out = to_numpy(x)
        elif name == "cupy":
            out = to_device(x, "cuda", like.device.id)
        else:
            out = xp.asarray(to_numpy(x), device=device_of(like))
    if dtype is not None:
        dt = dtype if not isinstance(dtype, (str, np.dtype, type)) else _dtype_in(xp, dtype)
        out = xp.astype(out, dt, copy=False)
    return out


def dtype_name(x) -> str:
    """``"float32"``/``"float64"``/... for an array or a dtype of any supported namespace."""
    dt = x if isinstance(x, (np.dtype, type)) else getattr(x, "dtype", x)
    if isinstance(dt, np.dtype):          # NumPy and CuPy: no conversion (on the sweep path)
        return dt.name
    try:
        return np.dtype(dt).name
    except TypeError:
        return str(dt).split(".")[-1].strip("'>")
