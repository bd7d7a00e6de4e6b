"""Explicit random keys and per-backend draws.

A *key* is a host NumPy array of two ``uint64`` words. Users pass ``seed=`` (``None``, an int, a
:class:`numpy.random.SeedSequence` or a key); algorithms split keys at the top of each step and use
each key exactly once (:func:`split`). There is no hidden global state.

Draws are reproducible for a given backend and library version; across backends they agree in
distribution only. The fused kernels take the key's two words and derive their uniforms from a
counter-based hash (see :mod:`blockbayes.kernels`), so they need no generator object at all.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import backend_name, device_of, dtype_name, namespace

__all__ = ["key", "split", "key_words", "normal", "uniform", "standard_gamma", "is_key", "choice"]

_MASK64 = (1 << 64) - 1


def is_key(obj) -> bool:
    """Whether ``obj`` is a key (host uint64 array of shape ``(2,)``)."""
    return isinstance(obj, np.ndarray) and obj.dtype == np.uint64 and obj.shape == (2,)


def key(seed=None) -> np.ndarray:
    """Make a key from ``seed``.

    Parameters
    ----------
    seed : None, int, numpy.random.SeedSequence or key
        ``None`` draws fresh OS entropy (the only non-reproducible choice).

    Returns
    -------
    numpy.ndarray, shape (2,), dtype uint64
    """
    if is_key(seed):
        return seed.copy()
    if isinstance(seed, np.random.SeedSequence):
        ss = seed
    elif seed is None or isinstance(seed, (int, np.integer)):
        if seed is not None and int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        ss = np.random.SeedSequence(None if seed is None else int(seed))
    else:
        raise TypeError(f"seed must be None, a non-negative int, a SeedSequence or a key; got {type(seed).__name__}")
    return ss.generate_state(2, dtype=np.uint64)


def split(k: np.ndarray, num: int = 2) -> tuple[np.ndarray, ...]:
    """Split a key into ``num`` independent keys (the input key must not be used again)."""
    if not is_key(k):
        raise TypeError("split() expects a key made by blockbayes._backend.random.key")
    state = np.random.SeedSequence([int(k[0]), int(k[1])]).generate_state(2 * num, dtype=np.uint64)
    return tuple(state.reshape(num, 2))


def key_words(k: np.ndarray) -> tuple[int, int]:
    """The key's two 64-bit words as Python ints (what the fused kernels take)."""
    return int(k[0]), int(k[1])


def _seed_int(k: np.ndarray) -> int:
    return (int(k[0]) << 64) | int(k[1])


def _np_generator(k):
    return np.random.Generator(np.random.Philox(key=_seed_int(k)))


def _cupy_rs(k):
    import cupy

    return cupy.random.RandomState(int(k[0]) ^ (int(k[1]) >> 1))


def _finish(arr_np, like, dtype):
    """Put a host draw into ``like``'s namespace/device."""
    xp = namespace(like)
    return xp.asarray(arr_np, dtype=dtype, device=device_of(like))


def _draw(k, shape, like, dtype, np_method: str, cupy_method: str):
    """One host/CuPy generator draw of ``shape`` in ``like``'s namespace, device and dtype."""
    xp = namespace(like)
    dtype = like.dtype if dtype is None else dtype
    name = backend_name(xp)
    dname = dtype_name(dtype)
    if name == "cupy":
        import cupy

        with device_of(like):
            return getattr(_cupy_rs(k), cupy_method)(size=shape, dtype=cupy.dtype(dname))
    out = getattr(_np_generator(k), np_method)(shape, dtype=np.dtype(dname))
    return out if name == "numpy" else _finish(out, like, dtype)


def normal(k, shape, *, like, dtype=None) -> Any:
    """Standard normal draws of ``shape`` in ``like``'s namespace, device and dtype (or ``dtype``)."""
    return _draw(k, shape, like, dtype, "standard_normal", "standard_normal")


def uniform(k, shape, *, like, dtype=None) -> Any:
    """Uniform draws on [0, 1) of ``shape`` in ``like``'s namespace, device and dtype."""
    return _draw(k, shape, like, dtype, "random", "random_sample")


def standard_gamma(k, shape_param, *, like) -> Any:
    """Gamma(shape_param, 1) draws, elementwise in ``shape_param`` (an array of ``like``'s kind)."""
    xp = namespace(like)
    name = backend_name(xp)
    if name == "cupy":
        with device_of(like):
            return _cupy_rs(k).standard_gamma(shape_param).astype(like.dtype, copy=False)
    from . import to_numpy

    draw = _np_generator(k).standard_gamma(to_numpy(shape_param).astype(np.float64))
    return xp.asarray(draw, dtype=like.dtype, device=device_of(like))


def choice(k, total: int, num: int) -> np.ndarray:
    """``num`` distinct indices from ``range(total)``, sorted, as a host int64 array (uniform
    without replacement; for selecting samples or minibatches)."""
    return np.sort(_np_generator(k).choice(total, num, replace=False))
