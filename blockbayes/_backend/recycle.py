"""Large host arrays recycled across sweeps instead of mapped afresh each time.

A sweep at large ``n`` allocates a few arrays of hundreds of MB (the pre-activation means, the
new post- and pre-activations) and drops as many of the previous sweep's. The C allocator maps
every block above its mmap threshold (at most 32 MiB in glibc) afresh and unmaps it on free, so
each sweep pays the kernel's page faults and zeroing of every new page: at (50, 50, 10⁶) float32
~0.3 s of system time per ~1.2 s sweep, the whole of the sweep's departure from linear cost in
``n`` (measured: 1874 faults, ``clear_page`` ~30 % of the profile; none at ``n = 10⁵``, whose
arrays the allocator keeps).

:func:`empty` hands out views of pooled raw buffers instead. A raw buffer is free exactly when
nothing but the pool refers to it: every NumPy view of it (any view of a view, too) holds a
reference to the buffer itself (NumPy collapses ``base`` to the array that owns the memory),
and so does anything exporting its memory (a memoryview, a Numba call in flight). CPython's
reference count therefore says exactly when the memory can be handed out again; a buffer some
caller still holds (a kept state, a trace) is never touched. At most ``_MAX_FREE`` free buffers
are kept (the rest are dropped to the allocator), and :func:`release` drops them all.

Pooling is **scoped**: :func:`empty` recycles only inside a :func:`scope` (entered by
:func:`blockbayes.driver.run_kernel` around every sampling or fitting loop, and held by a
distributed shard for its lifetime); elsewhere it is ``np.empty``. When the outermost scope
exits, the spare buffers go back to the allocator, so no memory is held after a run returns.
A hand-written loop over ``gibbs.step`` gets the same behaviour inside ``with recycle.scope():``.
"""
from __future__ import annotations

import contextlib
import sys
import threading

import numpy as np

__all__ = ["empty", "release", "scope", "enter", "exit", "MIN_BYTES"]

#: arrays below this size come from ``np.empty`` (the allocator keeps those blocks itself)
MIN_BYTES = 32 << 20
#: free buffers kept in the pool at most (the sweep's working set is ~5 arrays of one size)
_MAX_FREE = 8

_lock = threading.Lock()
_pool: list = []          # raw uint8 buffers; a buffer is in use while anything else refers to it


_depth = 0                # scopes entered and not yet exited (all threads together)


def enter() -> None:
    """Enter a pooling scope (:func:`scope` without the ``with``); pair with :func:`exit`."""
    global _depth
    with _lock:
        _depth += 1


def exit() -> None:  # noqa: A001 - the pair of enter()
    """Leave a pooling scope; leaving the outermost one releases the spare buffers."""
    global _depth
    with _lock:
        if _depth <= 0:
            raise RuntimeError("recycle.exit() without a matching enter()")
        _depth -= 1
        last = _depth == 0
    if last:
        release()


@contextlib.contextmanager
def scope():
    """Recycle large buffers inside the block; release the spare ones when the outermost
    scope ends."""
    enter()
    try:
        yield
    finally:
        exit()


#: references to a free pooled buffer seen by ``sys.getrefcount(name)`` in a loop over the pool:
#: the pool's list, the loop's name and getrefcount's argument
_FREE_REFS = 3


def empty(shape, dtype):
    """``np.empty(shape, dtype)`` (C order), from a recycled buffer when it is large.

    Parameters
    ----------
    shape : tuple of int
    dtype : NumPy dtype

    Returns
    -------
    numpy.ndarray
        Uninitialised, C-contiguous, writeable. Below :data:`MIN_BYTES`, or outside every
        :func:`scope`, a plain ``np.empty``; otherwise a view of a pooled buffer of exactly that many bytes that no live object refers
        to (a new one if none is free).
    """
    dt = dtype if isinstance(dtype, np.dtype) else np.dtype(dtype)
    nbytes = dt.itemsize
    for s in shape:
        nbytes *= s
    if nbytes < MIN_BYTES or _depth == 0:   # the common small case: no more than np.empty's cost
        return np.empty(shape, dtype=dt)
    shape = tuple(int(s) for s in shape)
    nbytes = int(nbytes)
    raw = None
    with _lock:
        n_free = 0
        for i in range(len(_pool) - 1, -1, -1):
            cand = _pool[i]
            if sys.getrefcount(cand) > _FREE_REFS:
                del cand
                continue
            if raw is None and cand.nbytes == nbytes:
                raw = cand
            else:
                n_free += 1
                if n_free > _MAX_FREE:
                    del _pool[i]            # beyond the cap: back to the allocator
            del cand
        if raw is None:
            raw = np.empty(nbytes, dtype=np.uint8)
            _pool.append(raw)
        out = raw.view(dt).reshape(shape)   # holds a reference to raw from here on
    return out


def release() -> int:
    """Drop every free pooled buffer (returns how many); buffers in use stay with their owners."""
    with _lock:
        keep = []
        b = None
        for b in _pool:
            if sys.getrefcount(b) > _FREE_REFS:
                keep.append(b)
        del b
        n = len(_pool) - len(keep)
        _pool[:] = keep
    return n
