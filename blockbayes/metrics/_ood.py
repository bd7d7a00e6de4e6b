"""Out-of-distribution detection: AUROC, AUPR, FPR at a given TPR (EVALUATION.md §1.4).

OOD inputs are the positive class; a larger score means more OOD."""
from __future__ import annotations

import math

from .._backend import device_of, namespace
from .._backend.ranks import average_ranks, tie_bounds
from ._checks import _0d, _float_dtype, _no_nan

__all__ = ["auroc", "aupr", "fpr_at_tpr", "fpr_at_95_tpr"]


def _ood_inputs(scores_in, scores_out):
    xp = namespace(scores_in, scores_out)
    a = xp.reshape(scores_in, (-1,))
    b = xp.reshape(scores_out, (-1,))
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("scores_in and scores_out must both be non-empty")
    dt = _float_dtype(xp, a, b)
    a = xp.astype(a, dt)
    b = xp.astype(b, dt)
    _no_nan(xp, a, "scores_in")
    _no_nan(xp, b, "scores_out")
    return xp, a, b, dt


def auroc(scores_in, scores_out):
    """Area under the ROC curve for separating OOD (positive) from in-distribution inputs.

    ``AUROC = (1/(n_in n_out)) Σ_{i∈in} Σ_{j∈out} (1[s_j > s_i] + ½ 1[s_j = s_i])``, the
    Mann–Whitney U statistic, computed from average ranks in ``O(n log n)``. Ties count ½, which
    equals ``sklearn.metrics.roc_auc_score`` (trapezoidal ROC). Invariant under strictly
    increasing transforms of the scores; ``auroc(−s) = 1 − auroc(s)``.

    Parameters
    ----------
    scores_in : array
        Scores of in-distribution inputs (flattened), larger = more OOD.
    scores_out : array
        Scores of OOD inputs (flattened).

    Returns
    -------
    0-d array
    """
    xp, a, b, dt = _ood_inputs(scores_in, scores_out)
    n_in, n_out = a.shape[0], b.shape[0]
    r = average_ranks(xp, xp.concat([a, b]))
    r = xp.astype(r, xp.float64)
    u = xp.sum(r[n_in:]) - n_out * (n_out + 1) / 2.0
    return _0d(xp, xp.astype(u / (float(n_in) * float(n_out)), dt))


def _descending_curve(xp, a, b):
    """Sorted-descending cumulative TP/FP counts evaluated at the end of each tie group."""
    n_in, n_out = a.shape[0], b.shape[0]
    dev = device_of(a)
    s = xp.concat([a, b])
    pos = xp.concat([xp.zeros((n_in,), dtype=xp.float64, device=dev),
                     xp.ones((n_out,), dtype=xp.float64, device=dev)])
    order = xp.argsort(s, descending=True, stable=True)
    s_sorted = xp.take(s, order)
    pos_sorted = xp.take(pos, order)
    _, last = tie_bounds(xp, s_sorted)
    tp = xp.take(xp.cumulative_sum(pos_sorted), last)
    fp = xp.astype(last + 1, xp.float64) - tp
    is_end = last == xp.arange(s.shape[0], dtype=xp.int64, device=dev)
    return pos_sorted, tp, fp, is_end


def aupr(scores_in, scores_out, *, positive="out"):
    """Area under the precision–recall curve (average precision, as scikit-learn).

    ``AP = Σ_k (R_k − R_{k−1}) P_k`` over the distinct score thresholds in decreasing order
    (step function, no interpolation), which equals ``sklearn.metrics.average_precision_score``.

    Parameters
    ----------
    scores_in, scores_out : array
        Scores, larger = more OOD.
    positive : {"out", "in"}
        ``"out"`` (default, "AUPR-Out"): OOD inputs are the positive class. ``"in"``
        ("AUPR-In"): in-distribution inputs are positive and scores are negated.

    Returns
    -------
    0-d array
    """
    xp, a, b, dt = _ood_inputs(scores_in, scores_out)
    if positive == "in":
        a, b = -b, -a
    elif positive != "out":
        raise ValueError(f"positive must be 'out' or 'in', got {positive!r}")
    pos_sorted, tp, fp, _ = _descending_curve(xp, a, b)
    precision = tp / (tp + fp)
    ap = xp.sum(pos_sorted * precision) / b.shape[0]
    return _0d(xp, xp.astype(ap, dt))


def fpr_at_tpr(scores_in, scores_out, tpr=0.95):
    """False-positive rate at the first threshold whose true-positive rate reaches ``tpr``.

    Thresholds ``t`` run over the distinct scores in decreasing order; an input is flagged OOD
    when its score is ``≥ t``. ``TPR(t)`` is the flagged fraction of OOD inputs and ``FPR(t)``
    that of in-distribution inputs; the result is ``FPR`` at the largest ``t`` with
    ``TPR(t) ≥ tpr`` (= ``fpr[argmax(tpr_curve >= tpr)]`` on scikit-learn's
    ``roc_curve(drop_intermediate=False)``). Lower is better.

    Parameters
    ----------
    scores_in, scores_out : array
        Scores, larger = more OOD.
    tpr : float in (0, 1]

    Returns
    -------
    0-d array
    """
    tpr = float(tpr)
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must lie in (0, 1], got {tpr}")
    xp, a, b, dt = _ood_inputs(scores_in, scores_out)
    _, tp, fp, is_end = _descending_curve(xp, a, b)
    ok = is_end & (tp / b.shape[0] >= tpr)
    fpr = xp.min(xp.where(ok, fp, xp.full_like(fp, math.inf))) / a.shape[0]
    return _0d(xp, xp.astype(fpr, dt))


def fpr_at_95_tpr(scores_in, scores_out):
    """:func:`fpr_at_tpr` at ``tpr=0.95`` (the usual "FPR95")."""
    return fpr_at_tpr(scores_in, scores_out, 0.95)
