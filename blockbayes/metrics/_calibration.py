"""Calibration: reliability diagram, expected and maximum calibration error (EVALUATION.md §1.3).
"""
from __future__ import annotations

import math

from .._backend import device_of, namespace
from ._checks import _0d, _argmax_rows, _labels, _probs2d

__all__ = ["reliability_diagram", "ece", "mce"]


def _binning(probs, labels, n_bins):
    xp = namespace(probs, labels)
    n_bins = int(n_bins)
    if n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    p = _probs2d(xp, probs)
    lab = _labels(xp, labels, p.shape[0], p.shape[1])
    dt, dev = p.dtype, device_of(p)
    conf = xp.max(p, axis=1)
    correct = xp.astype(_argmax_rows(xp, p) == lab, dt)
    edges = xp.linspace(0.0, 1.0, n_bins + 1, dtype=dt, device=dev)
    # bin m (0-based) is (edges[m], edges[m+1]]: index = #interior edges strictly below conf
    idx = xp.sum(xp.astype(xp.reshape(conf, (-1, 1)) > xp.reshape(edges[1:n_bins], (1, -1)), xp.int64),
                 axis=1)
    member = xp.astype(
        xp.reshape(idx, (-1, 1)) == xp.reshape(xp.arange(n_bins, dtype=xp.int64, device=dev), (1, -1)), dt
    )  # (n, M)
    count = xp.sum(member, axis=0)
    sum_conf = xp.sum(member * xp.reshape(conf, (-1, 1)), axis=0)
    sum_acc = xp.sum(member * xp.reshape(correct, (-1, 1)), axis=0)
    return xp, edges, count, sum_conf, sum_acc, p.shape[0]


def reliability_diagram(probs, labels, n_bins=15):
    """Per-bin confidence, accuracy and count for a top-label reliability diagram.

    Bins are ``n_bins`` equal-width intervals ``B_m = ((m−1)/M, m/M]`` (``m = 1..M``) of the
    top-label confidence ``conf_i = max_k p(k|x_i)``; ``acc(B_m)`` is the fraction of correct
    top-1 predictions in the bin and ``conf(B_m)`` the mean confidence.

    Parameters
    ----------
    probs : array, shape (n, K) or (n,)
    labels : integer array, shape (n,)
    n_bins : int
        Number of bins ``M`` (default 15, as Guo et al. 2017).

    Returns
    -------
    dict of arrays, each of shape (n_bins,)
        ``"bin_lower"``, ``"bin_upper"``, ``"confidence"``, ``"accuracy"`` (NaN for empty bins)
        and ``"count"`` (int64).
    """
    xp, edges, count, sum_conf, sum_acc, _ = _binning(probs, labels, n_bins)
    nonempty = count > 0
    safe = xp.where(nonempty, count, xp.ones_like(count))
    nan = xp.full_like(count, math.nan)
    return {
        "bin_lower": edges[:-1],
        "bin_upper": edges[1:],
        "confidence": xp.where(nonempty, sum_conf / safe, nan),
        "accuracy": xp.where(nonempty, sum_acc / safe, nan),
        "count": xp.astype(count, xp.int64),
    }


def ece(probs, labels, n_bins=15):
    """Expected calibration error, top-label, equal-width bins.

    ``ECE = Σ_m (|B_m|/n) |acc(B_m) − conf(B_m)|`` with ``M = n_bins`` bins
    ``B_m = {i : conf_i ∈ ((m−1)/M, m/M]}`` of ``conf_i = max_k p(k|x_i)`` (Naeini et al. 2015;
    Guo et al. 2017, whose reference uses ``M = 15``). Lies in ``[0, 1]``. Always report ``M``
    and the binning scheme with the number.

    Parameters
    ----------
    probs : array, shape (n, K) or (n,)
    labels : integer array, shape (n,)
    n_bins : int
        Default 15.

    Returns
    -------
    0-d array
    """
    xp, _, _, sum_conf, sum_acc, n = _binning(probs, labels, n_bins)
    return _0d(xp, xp.sum(xp.abs(sum_acc - sum_conf)) / n)


def mce(probs, labels, n_bins=15):
    """Maximum calibration error ``max_m |acc(B_m) − conf(B_m)|`` over non-empty bins.

    Same bins as :func:`ece` (``n_bins`` equal-width ``((m−1)/M, m/M]`` bins of the top-label
    confidence, default 15).

    Returns
    -------
    0-d array
    """
    xp, _, count, sum_conf, sum_acc, _ = _binning(probs, labels, n_bins)
    nonempty = count > 0
    safe = xp.where(nonempty, count, xp.ones_like(count))
    gap = xp.where(nonempty, xp.abs(sum_acc - sum_conf) / safe, xp.zeros_like(count))
    return _0d(xp, xp.max(gap))
