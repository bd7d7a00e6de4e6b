"""Sort-based statistics the Array API lacks: running max/min, runs of ties, average ranks.

The standard has ``sort``/``argsort`` and ``cumulative_sum`` but no ``rankdata`` and no running
maximum; these helpers supply them for every backend (NumPy, CuPy, array-api-strict) with
Array-API calls only. Shared by :mod:`blockbayes.diagnostics` (rank normalisation) and
:mod:`blockbayes.metrics` (ROC curves, Mann–Whitney AUROC).
"""
from __future__ import annotations

from . import device_of

__all__ = ["cumulative_extreme", "tie_bounds", "average_ranks"]


def cumulative_extreme(xp, a, op):
    """Inclusive running ``op`` (``xp.maximum`` or ``xp.minimum``) along axis 0.

    Hillis–Steele doubling scan: ``ceil(log2 n)`` elementwise passes, Array API only (the
    standard has ``cumulative_sum`` but no running max/min).
    """
    n = a.shape[0]
    shift = 1
    while shift < n:
        a = xp.concat([a[:shift, ...], op(a[shift:, ...], a[:-shift, ...])], axis=0)
        shift *= 2
    return a


def tie_bounds(xp, s):
    """For ``s`` sorted along axis 0, the first and last index of each entry's run of ties.

    Returns two integer arrays of ``s.shape``: ``first[i]`` and ``last[i]`` are the smallest and
    largest ``j`` with ``s[j] == s[i]`` (within the same column).
    """
    n = s.shape[0]
    dev = device_of(s)
    shape_idx = (n,) + (1,) * (s.ndim - 1)
    idx = xp.reshape(xp.arange(n, dtype=xp.int64, device=dev), shape_idx)
    idx = idx + xp.zeros(s.shape, dtype=xp.int64, device=dev)
    if n == 1:
        return idx, idx
    true_row = xp.ones((1,) + tuple(s.shape[1:]), dtype=xp.bool, device=dev)
    differs = s[1:, ...] != s[:-1, ...]
    if bool(xp.all(differs)):  # no ties (the usual case for continuous draws): skip the scans
        return idx, idx
    is_first = xp.concat([true_row, differs], axis=0)
    is_last = xp.concat([differs, true_row], axis=0)
    first = cumulative_extreme(xp, xp.where(is_first, idx, xp.zeros_like(idx)), xp.maximum)
    # running minimum from the right == flipped running maximum of (n-1-index)
    rev = xp.flip(xp.where(is_last, (n - 1) - idx, xp.zeros_like(idx)), axis=0)
    last = (n - 1) - xp.flip(cumulative_extreme(xp, rev, xp.maximum), axis=0)
    return first, last


def average_ranks(xp, x):
    """Average ranks (1-based, ties averaged, as ``scipy.stats.rankdata``) along axis 0."""
    # stability is irrelevant: tied entries all receive their group's average rank, and the
    # inverse permutation sorts distinct keys (unstable sorts are ~2x faster in NumPy)
    order = xp.argsort(x, axis=0, stable=False)
    s = xp.take_along_axis(x, order, axis=0)
    first, last = tie_bounds(xp, s)
    dt = x.dtype if xp.isdtype(x.dtype, "real floating") else xp.float64
    r_sorted = xp.astype(first + last, dt) / 2 + 1
    inverse = xp.argsort(order, axis=0, stable=False)
    return xp.take_along_axis(r_sorted, inverse, axis=0)
