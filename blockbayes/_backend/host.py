"""Host-side maths: the one door through which algorithm modules reach NumPy and SciPy.

Some work in blockbayes is done on the host in float64 *by design*, whatever backend the data
live on, because it is small and sequential and a device round trip per step would cost more
than the arithmetic:

* optimiser state of a few thousand numbers (the batched L-BFGS two-loop recursion of
  :mod:`blockbayes.laplace.map`, the hyperparameter L-BFGS-B of
  :meth:`blockbayes.laplace.LaplaceResult.optimize_prior_precision`);
* scalar sums of the type-II evidence fixed point (:mod:`blockbayes.laplace.evidence`);
* checkpoint leaves and trace buffers of :mod:`blockbayes.driver` (host copies, written to disk);
* seed derivation and the fit cache of :mod:`blockbayes.point_fit`;
* the summary table of :mod:`blockbayes.gibbs.diagnostics` (quantiles, sorting, NaN-aware
  maxima of a few hundred numbers).

DESIGN.md's rule "algorithm modules never import numpy, cupy, scipy or numba" is kept by
routing these through this module: ``from .._backend.host import np`` states at the import
that the code below runs on the host, and ``tests/test_architecture.py`` (rule d) checks that
no other algorithm module imports an array library directly. Device arrays reach the host only
through :func:`blockbayes._backend.to_numpy`; results go back with
:func:`blockbayes._backend.asarray_like` / ``move_like``.
"""
from __future__ import annotations

import numpy as np

__all__ = ["np", "minimize", "scipy_special", "scipy_stats", "c_einsum", "stacked_solve"]

try:        # what np.einsum(..., optimize=False) calls, without its Python wrapper (~0.7 us a call)
    from numpy._core.multiarray import c_einsum
except ImportError:                     # pragma: no cover - NumPy < 2
    try:
        from numpy.core.multiarray import c_einsum
    except ImportError:
        c_einsum = np.einsum

try:        # the LAPACK gufunc behind np.linalg.solve: stacked_solve(a, b, signature="dd->d")
    from numpy.linalg import _umath_linalg as _uml
    stacked_solve = _uml.solve
except (ImportError, AttributeError):  # pragma: no cover - a NumPy without it: the public function
    def stacked_solve(a, b, signature=None):
        """``np.linalg.solve(a, b)`` (this NumPy has no ``_umath_linalg.solve``)."""
        return np.linalg.solve(a, b)


def minimize(fun, x0, **kwargs):
    """:func:`scipy.optimize.minimize` on host float64 vectors (SciPy imported on first use).

    Parameters and return value are SciPy's: ``fun(x) -> (f, g)`` with ``jac=True``, ``x0`` of
    shape ``(p,)``; returns an ``OptimizeResult``.
    """
    from scipy.optimize import minimize as _minimize

    return _minimize(fun, x0, **kwargs)


def scipy_special():
    """:mod:`scipy.special` (imported on first use, so importing this module stays cheap)."""
    import scipy.special

    return scipy.special


def scipy_stats():
    """:mod:`scipy.stats` (imported on first use)."""
    import scipy.stats

    return scipy.stats
