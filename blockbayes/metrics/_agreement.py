"""Agreement with a reference predictive (Izmailov et al. 2021; EVALUATION.md §1.6): top-1
agreement and total variation.
"""
from __future__ import annotations


from .._backend import namespace
from ._checks import _0d, _argmax_rows, _probs2d, _reduce, _same_shape

__all__ = ["agreement", "total_variation"]


def _pair(p, q):
    xp = namespace(p, q)
    _same_shape(p, q, "p", "q")
    pp = _probs2d(xp, p, "p")
    qq = _probs2d(xp, q, "q")
    dt = xp.result_type(pp.dtype, qq.dtype)
    return xp, xp.astype(pp, dt), xp.astype(qq, dt)


def agreement(p, q):
    """Top-1 agreement ``(1/n) Σ_i 1[argmax_k p(k|x_i) = argmax_k q(k|x_i)]``.

    Parameters
    ----------
    p, q : array, shape (n, K) (or binary (n,))
        Two predictive distributions, e.g. an approximation and the HMC reference.

    Returns
    -------
    0-d array
    """
    xp, pp, qq = _pair(p, q)
    return _0d(xp, xp.mean(xp.astype(_argmax_rows(xp, pp) == _argmax_rows(xp, qq), pp.dtype)))


def total_variation(p, q, *, reduction="mean"):
    """Total variation distance ``(1/n) Σ_i ½ Σ_k |p(k|x_i) − q(k|x_i)|``, in ``[0, 1]``.

    Parameters
    ----------
    p, q : array, shape (n, K) (or binary (n,))
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    0-d array (or ``(n,)``)
    """
    xp, pp, qq = _pair(p, q)
    return _reduce(xp, 0.5 * xp.sum(xp.abs(pp - qq), axis=1), reduction)
