"""Cholesky factorisation and triangular solves, batched over leading axes, per backend.

The Array API has ``linalg.cholesky`` but no triangular solve. Single matrices go to SciPy
(NumPy arrays) or cupyx (CuPy arrays). Batches of small systems are solved by forward/back
substitution written against the Array API (:func:`substitution`: ``k`` vectorised row updates,
any backend, no host round trip); CuPy uses one batched cuBLAS call where its cupyx takes
batches, else the substitution. array-api-strict (a test backend) goes through the substitution
too.

Sync-forcing checks: cuSOLVER reports a failed Cholesky through NaNs, so on CuPy
:func:`cholesky` checks the factor (one device→host sync) unless ``check=False``. A run loop
that checks its state every ``check_every`` sweeps passes ``check=False`` or runs under
:func:`defer_checks` / :func:`deferred_checks` (``gibbs.run`` does) so a sweep does not sync;
the NaNs then surface at the next finite check. NumPy raises at the factorisation itself (no
sync to save).
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from . import backend_name, device_of, namespace

__all__ = ["cholesky", "solve_triangular", "cho_solve", "substitution", "defer_checks",
           "deferred_checks", "NotPositiveDefiniteError"]

_CHECKS = threading.local()


class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """A matrix that must be symmetric positive definite is not (numerically)."""


def defer_checks():
    """From now on (this thread) :func:`cholesky` skips its sync-forcing finite check unless
    called with ``check=True``; returns the function that restores the previous setting.

    For run loops that check their state every ``check_every`` sweeps instead (the style of
    :func:`blockbayes._backend.threads.thread_limits`). Nests; numerics are unchanged.
    """
    depth = getattr(_CHECKS, "depth", 0)
    _CHECKS.depth = depth + 1

    def restore():
        _CHECKS.depth = depth

    return restore


@contextlib.contextmanager
def deferred_checks():
    """:func:`defer_checks` for the duration of a ``with`` block."""
    restore = defer_checks()
    try:
        yield
    finally:
        restore()


def cholesky(A, *, check=None):
    """Lower Cholesky factor ``R`` with ``A = R R^T``, batched over leading axes.

    Parameters
    ----------
    A : array, shape (..., k, k)
    check : bool, optional
        Verify that the factor is finite (CuPy only: one device sync; other backends raise at
        the factorisation). ``None``: check unless inside :func:`deferred_checks`.

    Raises
    ------
    NotPositiveDefiniteError
        If the factorisation fails or (when checked) produces non-finite entries.
    """
    xp = namespace(A)
    try:
        R = xp.linalg.cholesky(A)
    except Exception as exc:  # numpy LinAlgError; cupy raises on error only if configured
        raise NotPositiveDefiniteError(f"Cholesky factorisation failed: {exc}") from exc
    if check is None:
        check = getattr(_CHECKS, "depth", 0) == 0
    if check and backend_name(xp) == "cupy":
        # cuSOLVER reports failure through NaNs rather than exceptions
        if not bool(xp.all(xp.isfinite(R))):
            raise NotPositiveDefiniteError("Cholesky factorisation failed (matrix not positive definite)")
    return R


def solve_triangular(R, B, *, lower=True, trans=False):
    """Solve ``op(R) X = B`` for triangular ``R`` (batched over leading axes).

    Parameters
    ----------
    R : array, shape (..., k, k)
        Triangular factor.
    B : array, shape (..., k, m)
        Right-hand sides (same leading axes as ``R``).
    lower : bool
        Whether ``R`` is lower triangular.
    trans : bool
        Solve ``R^T X = B`` instead of ``R X = B``.
    """
    xp = namespace(R, B)
    name = backend_name(xp)
    if name == "numpy":
        import scipy.linalg as sl

        k = R.shape[-1]
        batch = 1
        for s in R.shape[:-2]:
            batch *= s
        if R.ndim > 2 and k <= _SUBSTITUTION_MAX_K and batch >= _SUBSTITUTION_MIN_BATCH:
            return substitution(R, B, lower=lower, trans=trans)
        return sl.solve_triangular(R, B, lower=lower, trans=1 if trans else 0, check_finite=False)
    if name == "cupy":
        return _cupy_solve_triangular(R, B, lower=lower, trans=trans)
    return substitution(R, B, lower=lower, trans=trans)


#: whether cupyx's ``solve_triangular`` takes batches (one cuBLAS ``trsmBatched`` call); learnt
#: at the first batched call (older CuPy accepts 2-D matrices only)
_CUPY_BATCHED = None


def _cupy_solve_triangular(R, B, *, lower, trans):
    """CuPy: one batched cuBLAS call where this CuPy has it, else the Array-API substitution
    (``k`` kernel launches for the whole batch, not one solve per matrix)."""
    global _CUPY_BATCHED
    import cupy
    import cupyx.scipy.linalg as csl

    tr = 1 if trans else 0
    if R.ndim == 2:
        return csl.solve_triangular(R, B, lower=lower, trans=tr, check_finite=False)
    lead = R.shape[:-2]
    Rf = R.reshape((-1,) + R.shape[-2:])
    Bf = B.reshape((-1,) + B.shape[-2:])
    if _CUPY_BATCHED is not False and Rf.shape[0] > 1:
        try:
            out = csl.solve_triangular(cupy.ascontiguousarray(Rf), Bf, lower=lower, trans=tr, check_finite=False)
            _CUPY_BATCHED = True
            return out.reshape(lead + B.shape[-2:])
        except (ValueError, np.linalg.LinAlgError):   # "array must be two-dimensional"
            if _CUPY_BATCHED:
                raise
            _CUPY_BATCHED = False
    return substitution(R, B, lower=lower, trans=trans)


_SUBSTITUTION_MAX_K = 16
#: batches of at least this many small (k ≤ 16) triangles are solved by the vectorised
#: substitution (k array passes for the whole batch) instead of SciPy, which loops over the batch
#: in Python (~20 µs per matrix: with 16 chains, vi.run's Rao–Blackwell statistics of the tiny net
#: spent ~1 ms per kept sweep there; session 7: 64 → 4)
_SUBSTITUTION_MIN_BATCH = 4


def substitution(R, B, *, lower=True, trans=False):
    """Solve ``op(R) X = B`` by forward/back substitution, vectorised over the batch.

    Written against the Array API (any backend, results in ``B``'s namespace and device):
    ``k`` row updates ``x_i = (b_i − Σ_{j<i} T_{ij} x_j) / T_{ii}`` (lower; the mirror image for
    upper) with ``T = op(R)``, each one vectorised over every leading axis and right-hand side.
    The textbook algorithm's arithmetic; for many small systems (thousands of chains,
    ``k ≤ 16``) far cheaper than one library call per matrix.

    Parameters
    ----------
    R : array, shape (..., k, k)
        Triangular factor (leading axes broadcast against ``B``'s).
    B : array, shape (..., k, m)
    lower : bool
        Whether ``R`` is lower triangular.
    trans : bool
        Solve ``R^T X = B``.

    Returns
    -------
    X : array, shape (broadcast leading axes, k, m)
    """
    xp = namespace(R, B)
    T = xp.matrix_transpose(R) if trans else R
    low = lower != trans            # the effective triangle of op(R)
    dt = xp.result_type(T.dtype, B.dtype)
    lead = tuple(np.broadcast_shapes(tuple(T.shape[:-2]), tuple(B.shape[:-2])))
    T = xp.astype(xp.broadcast_to(T, lead + tuple(T.shape[-2:])), dt, copy=False)
    B = xp.astype(xp.broadcast_to(B, lead + tuple(B.shape[-2:])), dt, copy=False)
    k = T.shape[-1]
    X = xp.zeros(B.shape, dtype=dt, device=device_of(B))
    for i in (range(k) if low else range(k - 1, -1, -1)):
        acc = B[..., i, :]
        j0, j1 = (0, i) if low else (i + 1, k)
        if j1 > j0:   # Σ_j T_ij x_j as a (1, |j|) @ (|j|, m) product per batch member
            acc = acc - xp.matmul(T[..., i:i + 1, j0:j1], X[..., j0:j1, :])[..., 0, :]
        X[..., i, :] = acc / T[..., i, i][..., None]
    return X


def cho_solve(R, B):
    """Solve ``(R R^T) X = B`` given the lower Cholesky factor ``R``."""
    C = solve_triangular(R, B, lower=True, trans=False)
    return solve_triangular(R, C, lower=True, trans=True)
