"""Cholesky factorisation and triangular solves, batched over leading axes, per backend.

The Array API has ``linalg.cholesky`` but no triangular solve; SciPy (NumPy arrays), cupyx
(CuPy arrays) supply it. array-api-strict arrays are solved on the host and returned in their
namespace (it is a test backend).
"""
from __future__ import annotations

import numpy as np

from . import backend_name, device_of, namespace, to_numpy

__all__ = ["cholesky", "solve_triangular", "cho_solve", "NotPositiveDefiniteError"]


class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """A matrix that must be symmetric positive definite is not (numerically)."""


def cholesky(A):
    """Lower Cholesky factor ``R`` with ``A = R R^T``, batched over leading axes.

    Raises
    ------
    NotPositiveDefiniteError
        If the factorisation fails or produces non-finite entries.
    """
    xp = namespace(A)
    name = backend_name(xp)
    try:
        R = xp.linalg.cholesky(A)
    except Exception as exc:  # numpy LinAlgError; cupy raises on error only if configured
        raise NotPositiveDefiniteError(f"Cholesky factorisation failed: {exc}") from exc
    if name == "cupy":
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
            return _substitution(R, B, lower=lower, trans=trans)
        return sl.solve_triangular(R, B, lower=lower, trans=1 if trans else 0, check_finite=False)
    if name == "cupy":
        return _cupy_solve_triangular(R, B, lower=lower, trans=trans)
    import scipy.linalg as sl

    X = sl.solve_triangular(to_numpy(R), to_numpy(B), lower=lower, trans=1 if trans else 0, check_finite=False)
    return xp.asarray(X, dtype=B.dtype, device=device_of(B))


#: whether cupyx's ``solve_triangular`` takes batches (one cuBLAS ``trsmBatched`` call); learnt
#: at the first batched call (older CuPy accepts 2-D matrices only)
_CUPY_BATCHED = None


def _cupy_solve_triangular(R, B, *, lower, trans):
    """CuPy: one batched cuBLAS call where this CuPy has it, else one call per matrix."""
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
    out = cupy.empty_like(Bf)
    for i in range(Rf.shape[0]):
        out[i] = csl.solve_triangular(Rf[i], Bf[i], lower=lower, trans=tr, check_finite=False)
    return out.reshape(lead + B.shape[-2:])


_SUBSTITUTION_MAX_K = 16
_SUBSTITUTION_MIN_BATCH = 64


def _substitution(R, B, *, lower, trans):
    """Forward/back substitution over the small dimension ``k``, vectorised over the batch.

    SciPy solves a batch one matrix at a time (microseconds of overhead each); for many small
    systems (thousands of chains, ``k ≤ 16``) ``k`` vectorised row updates are far cheaper.
    Same arithmetic as the textbook algorithm; NumPy arrays only.
    """
    import numpy as np

    T = np.swapaxes(R, -1, -2) if trans else R
    low = lower != trans            # the effective triangle of op(R)
    B = np.broadcast_to(B, np.broadcast_shapes(T.shape[:-2], B.shape[:-2]) + B.shape[-2:])
    X = np.empty(B.shape, dtype=np.result_type(T, B))
    k = T.shape[-1]
    order = range(k) if low else range(k - 1, -1, -1)
    for i in order:
        acc = B[..., i, :]
        if low and i > 0:
            acc = acc - np.einsum("...j,...jm->...m", T[..., i, :i], X[..., :i, :])
        elif not low and i < k - 1:
            acc = acc - np.einsum("...j,...jm->...m", T[..., i, i + 1:], X[..., i + 1:, :])
        X[..., i, :] = acc / T[..., i, i][..., None]
    return X


def cho_solve(R, B):
    """Solve ``(R R^T) X = B`` given the lower Cholesky factor ``R``."""
    C = solve_triangular(R, B, lower=True, trans=False)
    return solve_triangular(R, C, lower=True, trans=True)
