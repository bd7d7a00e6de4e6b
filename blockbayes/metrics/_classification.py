"""Classification metrics: Bayesian model averages, accuracy, NLL, Brier score, predictive entropy
and mutual information (EVALUATION.md §1.2).
"""
from __future__ import annotations

import math

from .._backend import device_of, namespace
from ._checks import (
    _0d, _argmax_rows, _check_logits, _check_probs, _float_dtype, _labels, _log_softmax,
    _logsumexp, _nonempty, _probs2d, _reduce)

__all__ = [
    "bma_probs", "bma_log_probs", "accuracy", "nll", "nll_from_logits", "brier",
    "predictive_entropy", "mutual_information"
]


def bma_probs(probs):
    """Bayesian model average ``p̄(k|x_i) = (1/S) Σ_s p_s(k|x_i)``.

    Parameters
    ----------
    probs : array, shape (S, n, K)
        Per-sample class probabilities.

    Returns
    -------
    array, shape (n, K)
    """
    xp = namespace(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs must have shape (S, n, K), got {tuple(probs.shape)}")
    _nonempty(probs, "probs")
    p = xp.astype(probs, _float_dtype(xp, probs))
    _check_probs(xp, p)
    return xp.mean(p, axis=0)


def bma_log_probs(logits):
    """Log of the Bayesian model average from per-sample logits, stably.

    ``log p̄(k|x_i) = logsumexp_s log_softmax(logits_s)_k − log S``: probabilities (not
    logits) are averaged, in log space.

    Parameters
    ----------
    logits : array, shape (S, n, K)
        Unnormalised per-sample log-probabilities (``−inf`` allowed, not NaN or ``+inf``).

    Returns
    -------
    array, shape (n, K)
        Normalised log-probabilities.
    """
    xp = namespace(logits)
    if logits.ndim != 3:
        raise ValueError(f"logits must have shape (S, n, K), got {tuple(logits.shape)}")
    _nonempty(logits, "logits")
    z = xp.astype(logits, _float_dtype(xp, logits))
    _check_logits(xp, z)
    return _logsumexp(xp, _log_softmax(xp, z), axis=0) - math.log(z.shape[0])


def accuracy(probs, labels):
    """Top-1 accuracy ``(1/n) Σ_i 1[argmax_k p(k|x_i) = y_i]``.

    Parameters
    ----------
    probs : array, shape (n, K) or (n,)
        Class probabilities (a binary ``(n,)`` array is ``P(y = 1)``; ``p = 0.5`` predicts
        class 0).
    labels : integer array, shape (n,)

    Returns
    -------
    0-d array
    """
    xp = namespace(probs, labels)
    p = _probs2d(xp, probs)
    lab = _labels(xp, labels, p.shape[0], p.shape[1])
    return _0d(xp, xp.mean(xp.astype(_argmax_rows(xp, p) == lab, p.dtype)))


def nll(probs, labels, *, eps=None, reduction="mean"):
    """Negative log-likelihood ``−(1/n) Σ_i log max(p(y_i|x_i), eps)`` from probabilities.

    Parameters
    ----------
    probs : array, shape (n, K) or (n,)
        Predictive (e.g. BMA) probabilities.
    labels : integer array, shape (n,)
    eps : float, optional
        Lower clip for the probability of the true class, so that ``p = 0`` gives a finite
        loss. Default: the smallest normal number of the dtype (``≈ 2.2e-308`` in float64,
        i.e. no clipping for any representable positive probability; scikit-learn's
        ``log_loss`` clips at machine epsilon instead, which differs only when
        ``p(y_i) < 2.2e-16``). Use :func:`nll_from_logits` for logits.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    0-d array (or ``(n,)``)
    """
    xp = namespace(probs, labels)
    p = _probs2d(xp, probs)
    lab = _labels(xp, labels, p.shape[0], p.shape[1])
    py = xp.take_along_axis(p, xp.reshape(lab, (-1, 1)), axis=1)[:, 0]
    floor = xp.finfo(p.dtype).smallest_normal if eps is None else float(eps)
    if not floor > 0:
        raise ValueError("eps must be positive")
    py = xp.clip(py, floor, 1.0)
    return _reduce(xp, -xp.log(py), reduction)


def nll_from_logits(logits, labels, *, reduction="mean"):
    """Negative log-likelihood from logits via logsumexp (stable for any logit magnitude).

    ``NLL_i = logsumexp_k z_ik − z_{i y_i}`` for logits of shape ``(n, K)``; for per-sample
    logits of shape ``(S, n, K)`` the Bayesian model average is used:
    ``NLL_i = −log p̄(y_i|x_i)`` with ``log p̄`` from :func:`bma_log_probs`.

    Parameters
    ----------
    logits : array, shape (n, K) or (S, n, K)
    labels : integer array, shape (n,)
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    0-d array (or ``(n,)``)
    """
    xp = namespace(logits, labels)
    if logits.ndim == 3:
        logp = bma_log_probs(logits)
    elif logits.ndim == 2:
        _nonempty(logits, "logits")
        z = xp.astype(logits, _float_dtype(xp, logits))
        _check_logits(xp, z)
        logp = _log_softmax(xp, z)
    else:
        raise ValueError(f"logits must have shape (n, K) or (S, n, K), got {tuple(logits.shape)}")
    lab = _labels(xp, labels, logp.shape[0], logp.shape[1])
    ly = xp.take_along_axis(logp, xp.reshape(lab, (-1, 1)), axis=1)[:, 0]
    return _reduce(xp, -ly, reduction)


def brier(probs, labels, *, reduction="mean"):
    """Brier score.

    Multiclass, probabilities of shape ``(n, K)`` (any ``K ≥ 2``):
    ``(1/n) Σ_i Σ_k (p_ik − 1[y_i = k])²``, in ``[0, 2]`` (not divided by ``K``; equals
    ``sklearn.metrics.brier_score_loss(..., scale_by_half=False)``).

    Binary, ``(n,)`` probabilities of class 1: ``(1/n) Σ_i (p_i − y_i)²``, in ``[0, 1]``
    (scikit-learn's binary convention; it is *half* the two-column multiclass value).

    Parameters
    ----------
    probs : array, shape (n, K) or (n,)
    labels : integer array, shape (n,)
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    0-d array (or ``(n,)``)
    """
    xp = namespace(probs, labels)
    p = _probs2d(xp, probs)
    n, k = p.shape
    lab = _labels(xp, labels, n, k)
    onehot = xp.astype(
        xp.reshape(lab, (-1, 1)) == xp.reshape(xp.arange(k, dtype=xp.int64, device=device_of(p)), (1, -1)),
        p.dtype,
    )
    b = xp.sum((p - onehot) ** 2, axis=1)
    if probs.ndim == 1:
        b = b / 2
    return _reduce(xp, b, reduction)


def _entropy(xp, p):
    pos = p > 0
    return -xp.sum(xp.where(pos, p * xp.log(xp.where(pos, p, xp.ones_like(p))), xp.zeros_like(p)), axis=-1)


def predictive_entropy(probs):
    """Predictive entropy ``H[p̄_i] = −Σ_k p̄_ik log p̄_ik`` (with ``0 log 0 = 0``), an OOD score.

    Parameters
    ----------
    probs : array, shape (n, K) or (n,)

    Returns
    -------
    array, shape (n,)
    """
    xp = namespace(probs)
    return _entropy(xp, _probs2d(xp, probs))


def mutual_information(probs):
    """Mutual information (BALD) ``I_i = H[p̄_i] − (1/S) Σ_s H[p_si]``, the epistemic OOD score.

    Parameters
    ----------
    probs : array, shape (S, n, K)
        Per-sample class probabilities.

    Returns
    -------
    array, shape (n,)
        Non-negative up to round-off (clipped at 0).
    """
    xp = namespace(probs)
    pbar = bma_probs(probs)
    p = xp.astype(probs, pbar.dtype)
    mi = _entropy(xp, pbar) - xp.mean(_entropy(xp, p), axis=0)
    return xp.maximum(mi, xp.zeros_like(mi))
