"""Where the exactness suite runs the sampler: ``BLOCKBAYES_TEST_DEVICE`` (or ``pytest --device``).

The checks of this suite build their inputs and compute their references on the host (NumPy,
SciPy, mpmath). To run the *sampler* on another backend without rewriting every check, the suite
installs a thin shim around the public entry points of :mod:`blockbayes.gibbs`
(:data:`ENTRY_POINTS`): a call that receives host NumPy arrays moves them to the device once,
runs the library function there unchanged, and brings every array of the result back to the
host. Calls that already receive device arrays (the conditionals that ``gibbs.step`` calls
inside a sweep) pass straight through, so a sweep runs on the device from end to end and only
its inputs and outputs cross the bus. Random keys (host ``uint64`` arrays of shape ``(2,)``)
stay on the host, as the library expects.

Host-side replacements that a check patches into :mod:`blockbayes.gibbs` (the broken twins of
:mod:`._twins`, the Geweke twins, the frozen-weights ``sample_rows``) are NumPy code; they are
wrapped with :func:`host_call`, which brings device arguments to the host and returns the
result on the device of the arguments. Their power against a planted bug is a property of the
statistics, not of the backend; running them this way keeps the rest of the sweep on the device.

Devices
-------
``"cpu"`` (default)
    Nothing is patched: the suite runs on NumPy as it always did.
``"cuda"``
    CuPy on the current GPU. Without CuPy or a usable GPU every test of the suite is skipped
    with the reason (``validation/conftest.py``).
``"array_api_strict"``
    The CPU twin of the mechanism: the sampler runs on array-api-strict arrays (reference
    kernels, host linear algebra). It exercises the shim end to end on a machine without a GPU
    (``tests/test_validation_device.py``).
"""
from __future__ import annotations

import functools
import os

import numpy as np

ENV = "BLOCKBAYES_TEST_DEVICE"
DEVICES = ("cpu", "cuda", "array_api_strict")

#: the public functions of :mod:`blockbayes.gibbs` that the suite calls (directly or through
#: ``step``/``run``) and that the shim moves to the device
ENTRY_POINTS = ("init", "step", "run", "precompute", "log_joint", "sample_rows", "sample_post",
                "sample_pre", "sample_latent", "sample_precision")


def current() -> str:
    """The device named by ``BLOCKBAYES_TEST_DEVICE`` (``"cpu"`` when unset).

    Raises
    ------
    ValueError
        For a name other than :data:`DEVICES` (``"gpu"`` is read as ``"cuda"``).
    """
    name = os.environ.get(ENV, "cpu").strip().lower() or "cpu"
    if name == "gpu":
        name = "cuda"
    if name not in DEVICES:
        raise ValueError(f"{ENV}={name!r}: use one of {DEVICES}")
    return name


def unavailable_reason(name: str):
    """``None`` if device ``name`` can run here, else why not (for a clean skip)."""
    if name == "cpu":
        return None
    if name == "array_api_strict":
        try:
            import array_api_strict  # noqa: F401
        except ImportError as exc:
            return f"array-api-strict is not installed ({exc})"
        return None
    try:
        import cupy
    except Exception as exc:  # ImportError, or CUDA libraries missing at import
        return f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy found no CUDA device"
    except Exception as exc:
        return f"no usable CUDA device ({type(exc).__name__}: {exc})"
    return None


# ----------------------------------------------------------------------------- array moves

def _is_key(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == np.uint64 and x.shape == (2,)


def _is_host(x) -> bool:
    return isinstance(x, np.ndarray) and not _is_key(x)


def _is_device(x, name) -> bool:
    mod = type(x).__module__
    return (name == "cuda" and mod.startswith("cupy")) or (name == "array_api_strict" and mod.startswith("array_api_strict"))


def _to_device(x, name):
    if name == "cuda":
        import cupy

        return cupy.asarray(x)
    import array_api_strict as xs

    return xs.asarray(np.ascontiguousarray(x))


def _map(obj, leaf, pred):
    """Apply ``leaf`` to every array in ``obj`` (tuples, lists, NamedTuples, dicts) where ``pred``."""
    if pred(obj):
        return leaf(obj)
    if isinstance(obj, tuple):
        items = [_map(v, leaf, pred) for v in obj]
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
    if isinstance(obj, list):
        return [_map(v, leaf, pred) for v in obj]
    if isinstance(obj, dict):
        return {k: _map(v, leaf, pred) for k, v in obj.items()}
    return obj


def _any(obj, pred) -> bool:
    if pred(obj):
        return True
    if isinstance(obj, (tuple, list)):
        return any(_any(v, pred) for v in obj)
    if isinstance(obj, dict):
        return any(_any(v, pred) for v in obj.values())
    return False


def to_host(obj):
    """Every array in ``obj`` as NumPy (result objects with ``to_numpy()`` converted whole)."""
    from blockbayes._backend import to_numpy

    def leaf(x):
        return x.to_numpy() if hasattr(x, "to_numpy") and not isinstance(x, np.ndarray) else to_numpy(x)

    def pred(x):
        mod = type(x).__module__
        return hasattr(x, "to_numpy") and not isinstance(x, np.ndarray) or mod.startswith(("cupy", "array_api_strict"))

    return _map(obj, leaf, pred)


def to_device(obj, name):
    """Every host NumPy array in ``obj`` (keys excepted) moved to device ``name``."""
    return _map(obj, lambda x: _to_device(x, name), _is_host)


def on_device(fn, name):
    """``fn`` run on device ``name`` when called with host arrays; results back on the host."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if not (_any(args, _is_host) or _any(kwargs, _is_host)):
            return fn(*args, **kwargs)           # already on the device (a call inside a sweep)
        out = fn(*to_device(args, name), **to_device(kwargs, name))
        return to_host(out)

    wrapper.__bb_device_shim__ = fn
    return wrapper


def host_call(fn):
    """A host (NumPy) replacement callable from a sweep that runs on the device.

    Device arguments are brought to the host, ``fn`` runs there, and its array results go back to
    the device the arguments came from. On the CPU (no device arguments) ``fn`` is called as is.
    """
    name = current()
    if name == "cpu":
        return fn

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        on_dev = _any(args, lambda x: _is_device(x, name)) or _any(kwargs, lambda x: _is_device(x, name))
        out = fn(*to_host(args), **to_host(kwargs))
        return to_device(out, name) if on_dev else out

    return wrapper


def follow(value, like):
    """``value`` (host array) moved to ``like``'s device when ``like`` lives on the test device."""
    name = current()
    if name != "cpu" and _is_device(like, name):
        return to_device(value, name)
    return value


class Shim:
    """Context manager: patch :data:`ENTRY_POINTS` of :mod:`blockbayes.gibbs` for device ``name``."""

    def __init__(self, name):
        self.name = name
        self._old = {}

    def __enter__(self):
        from blockbayes import gibbs

        if self.name == "cpu":
            return self
        for attr in ENTRY_POINTS:
            fn = getattr(gibbs, attr)
            self._old[attr] = fn
            setattr(gibbs, attr, on_device(fn, self.name))
        return self

    def __exit__(self, *exc):
        from blockbayes import gibbs

        for attr, fn in self._old.items():
            setattr(gibbs, attr, fn)
        self._old.clear()
        return False
