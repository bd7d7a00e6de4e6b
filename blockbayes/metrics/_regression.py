"""Regression metrics: RMSE, Gaussian (mixture) log-likelihood, PIT, interval coverage, CRPS
(EVALUATION.md §1.1).
"""
from __future__ import annotations

import math

from .._backend import device_of, namespace
from .._backend import special as _special
from ._checks import (
    _0d, _DEFAULT_LEVELS, _arr, _broadcast_to, _float_dtype, _gauss_logpdf, _levels_array,
    _log_y_scale, _logsumexp, _no_nan, _nonempty, _positive, _prep_regression, _reduce,
    _sum_outputs)

__all__ = [
    "rmse", "gaussian_log_likelihood", "log_predictive_gaussian_mixture", "pit_gaussian",
    "pit_gaussian_mixture", "interval_coverage", "coverage_gaussian",
    "coverage_gaussian_mixture", "crps_gaussian", "crps_ensemble"
]


def rmse(y, mean, *, y_scale=None):
    """Root mean squared error ``sqrt(mean_i (y_i − ŷ_i)²)`` over all entries.

    For a sampled posterior pass the MC-averaged predictive mean ``ŷ_i = (1/S) Σ_s f_s(x_i)``
    (Gal's convention).

    Parameters
    ----------
    y, mean : array, shape (n,) or (n, d)
    y_scale : float or array of shape (d,), optional
        Standard deviation(s) σ_y used to standardise ``y``; errors are multiplied by it to
        report the RMSE in original units.

    Returns
    -------
    0-d array
    """
    xp, y, mean, _, dt = _prep_regression(y, mean, None)
    err = y - mean
    if y_scale is not None:
        s = _arr(xp, y_scale, dt, device_of(y))
        _positive(xp, s, "y_scale")
        err = err * _broadcast_to(xp, s, tuple(y.shape[1:]), "y_scale")
    return _0d(xp, xp.sqrt(xp.mean(err ** 2)))


def gaussian_log_likelihood(y, mean, var, *, y_scale=None, reduction="mean"):
    """Gaussian test log-likelihood, mean over points.

    ``LL_i = Σ_d log N(y_id | μ_id, v_id) − Σ_d log σ_y,d`` and ``LL = (1/n) Σ_i LL_i``.

    Parameters
    ----------
    y, mean : array, shape (n,) or (n, d)
    var : float or array broadcastable to ``y.shape``
        Predictive variances (in the same units as ``y``).
    y_scale : float or array of shape (d,), optional
        σ_y when ``y``, ``mean`` and ``var`` are in standardised units: subtracting
        ``log σ_y`` reports the density in original units (EVALUATION.md §1.1).
    reduction : {"mean", "sum", "none"}
        ``"none"`` returns the per-point ``LL_i`` (shape ``(n,)``).

    Returns
    -------
    0-d array (or ``(n,)`` for ``reduction="none"``); higher is better (``NLL = −LL``).
    """
    xp, y, mean, var, dt = _prep_regression(y, mean, var)
    ll = _sum_outputs(xp, _gauss_logpdf(xp, y, mean, var), 1)
    if y_scale is not None:
        ll = ll - _log_y_scale(xp, y_scale, tuple(y.shape[1:]), dt, device_of(y))
    return _reduce(xp, ll, reduction)


def log_predictive_gaussian_mixture(y, means, variances, *, y_scale=None, reduction="mean"):
    """Log predictive density of an equally weighted Gaussian mixture (sample average).

    ``log p̂(y_i) = logsumexp_s Σ_d log N(y_id | μ_sid, v_sid) − log S − Σ_d log σ_y,d``, then
    the mean over points. This is the sampled-posterior test log-likelihood: ``means`` are
    ``f_s(x_i)`` and ``variances`` the per-sample noise variances ``τ_s⁻¹`` (or predictive
    variances of ensemble members). With ``S = 1`` it equals :func:`gaussian_log_likelihood`.

    Parameters
    ----------
    y : array, shape (n,) or (n, d)
    means : array, shape (S, *y.shape)
    variances : float or array broadcastable to ``means.shape``
        e.g. shape ``(S, 1)`` (``(S, 1, 1)`` with outputs) for one noise variance per sample.
    y_scale : float or array of shape (d,), optional
        σ_y for standardised targets (see :func:`gaussian_log_likelihood`).
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    0-d array (or ``(n,)`` for ``reduction="none"``)
    """
    xp, y, means, var, dt = _prep_regression(y, means, variances, samples=True)
    s = means.shape[0]
    lp = _sum_outputs(xp, _gauss_logpdf(xp, y[None, ...], means, var), 2)  # (S, n)
    ll = _logsumexp(xp, lp, axis=0) - math.log(s)
    if y_scale is not None:
        ll = ll - _log_y_scale(xp, y_scale, tuple(y.shape[1:]), dt, device_of(y))
    return _reduce(xp, ll, reduction)


def pit_gaussian(y, mean, var):
    """Probability integral transform ``u = Φ((y − μ)/σ)`` of a Gaussian predictive.

    Parameters
    ----------
    y, mean : array, shape (n,) or (n, d)
    var : float or array broadcastable to ``y.shape``

    Returns
    -------
    array, shape y.shape
        Uniform(0, 1) for a calibrated predictive.
    """
    xp, y, mean, var, _ = _prep_regression(y, mean, var)
    return _special.ndtr((y - mean) / xp.sqrt(var))


def pit_gaussian_mixture(y, means, variances):
    """PIT of an equally weighted Gaussian mixture: ``u = (1/S) Σ_s Φ((y − μ_s)/σ_s)``.

    Parameters
    ----------
    y : array, shape (n,) or (n, d)
    means : array, shape (S, *y.shape)
    variances : float or array broadcastable to ``means.shape``

    Returns
    -------
    array, shape y.shape
    """
    xp, y, means, var, _ = _prep_regression(y, means, variances, samples=True)
    return xp.mean(_special.ndtr((y[None, ...] - means) / xp.sqrt(var)), axis=0)


def interval_coverage(pit_values, levels=_DEFAULT_LEVELS):
    """Empirical coverage of central predictive intervals, from PIT values.

    ``y`` lies in the central ``p``-interval ``[F⁻¹((1 − p)/2), F⁻¹((1 + p)/2)]`` of a continuous
    predictive ``F`` iff ``(1 − p)/2 ≤ u ≤ (1 + p)/2`` with ``u = F(y)``. The coverage is the
    fraction of entries (all points and outputs) for which this holds; calibrated → ``≈ p``.

    Parameters
    ----------
    pit_values : array
        PIT values, e.g. from :func:`pit_gaussian` or :func:`pit_gaussian_mixture`.
    levels : sequence of float in (0, 1)
        Default ``(0.5, 0.6, 0.7, 0.8, 0.9, 0.95)``.

    Returns
    -------
    array, shape (len(levels),)
    """
    xp = namespace(pit_values)
    u = xp.astype(pit_values, _float_dtype(xp, pit_values))
    _nonempty(u, "pit_values")
    _no_nan(xp, u, "pit_values")
    lv = _levels_array(xp, levels, u.dtype, device_of(u))
    flat = xp.reshape(u, (-1, 1))
    inside = (flat >= (1 - lv) / 2) & (flat <= (1 + lv) / 2)
    return xp.mean(xp.astype(inside, u.dtype), axis=0)


def coverage_gaussian(y, mean, var, levels=_DEFAULT_LEVELS):
    """Coverage of central Gaussian intervals ``μ ± Φ⁻¹((1 + p)/2) σ`` at each level ``p``.

    Computed on the z-scale (``|y − μ|/σ ≤ Φ⁻¹((1 + p)/2)``), exact also far in the tails.

    Parameters
    ----------
    y, mean : array, shape (n,) or (n, d)
    var : float or array broadcastable to ``y.shape``
    levels : sequence of float in (0, 1)

    Returns
    -------
    array, shape (len(levels),)
    """
    xp, y, mean, var, dt = _prep_regression(y, mean, var)
    lv = _levels_array(xp, levels, dt, device_of(y))
    zq = _special.ndtri((1 + lv) / 2)
    z = xp.reshape(xp.abs(y - mean) / xp.sqrt(var), (-1, 1))
    return xp.mean(xp.astype(z <= zq, dt), axis=0)


def coverage_gaussian_mixture(y, means, variances, levels=_DEFAULT_LEVELS):
    """Coverage of the central intervals of an equally weighted Gaussian mixture.

    Uses :func:`interval_coverage` on :func:`pit_gaussian_mixture` (the mixture quantiles have
    no closed form; the PIT criterion is exact for a continuous CDF).

    Parameters
    ----------
    y : array, shape (n,) or (n, d)
    means : array, shape (S, *y.shape)
    variances : float or array broadcastable to ``means.shape``
    levels : sequence of float in (0, 1)

    Returns
    -------
    array, shape (len(levels),)
    """
    return interval_coverage(pit_gaussian_mixture(y, means, variances), levels)


def crps_gaussian(y, mean, var, *, reduction="mean"):
    """Continuous ranked probability score of a Gaussian predictive (closed form).

    ``CRPS(N(μ, σ²), y) = σ [z (2Φ(z) − 1) + 2φ(z) − 1/√π]``, ``z = (y − μ)/σ``
    (Gneiting & Raftery 2007). Lower is better; same units as ``y``.

    Parameters
    ----------
    y, mean : array, shape (n,) or (n, d)
    var : float or array broadcastable to ``y.shape``
    reduction : {"mean", "sum", "none"}
        Over all entries; ``"none"`` returns shape ``y.shape``.

    Returns
    -------
    0-d array (or ``y.shape``)
    """
    xp, y, mean, var, _ = _prep_regression(y, mean, var)
    sd = xp.sqrt(var)
    z = (y - mean) / sd
    pdf = xp.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    c = sd * (z * (2 * _special.ndtr(z) - 1) + 2 * pdf - 1 / math.sqrt(math.pi))
    return _reduce(xp, c, reduction)


def crps_ensemble(y, samples, *, fair=False, reduction="mean"):
    """CRPS of a sample / ensemble predictive, energy form, ``O(S log S)`` by sorting.

    ``CRPS = (1/S) Σ_s |x_s − y| − (1/(2S²)) Σ_{s,s'} |x_s − x_s'|`` and the pair sum is
    evaluated on the sorted members ``x_(1) ≤ … ≤ x_(S)`` as
    ``Σ_{s,s'} |x_s − x_s'| = 2 Σ_i (2i − S − 1) x_(i)``. ``fair=True`` uses the unbiased
    ``1/(2S(S − 1))`` normalisation of the second term (needs ``S ≥ 2``).

    Parameters
    ----------
    y : array, shape (n,) or (n, d)
    samples : array, shape (S, *y.shape)
        Predictive samples (ensemble members) per entry.
    fair : bool
    reduction : {"mean", "sum", "none"}
        Over all entries; ``"none"`` returns shape ``y.shape``.

    Returns
    -------
    0-d array (or ``y.shape``)
    """
    xp, y, x, _, dt = _prep_regression(y, samples, None, samples=True)
    s = x.shape[0]
    if fair and s < 2:
        raise ValueError("fair CRPS needs at least 2 samples")
    term1 = xp.mean(xp.abs(x - y[None, ...]), axis=0)
    xs = xp.sort(x, axis=0)
    w = 2.0 * xp.arange(1, s + 1, dtype=dt, device=device_of(y)) - s - 1
    w = xp.reshape(w, (s,) + (1,) * y.ndim)
    pair = xp.sum(w * xs, axis=0)  # = ½ Σ_{s,s'} |x_s − x_s'|
    denom = s * (s - 1) if fair else s * s
    return _reduce(xp, term1 - pair / denom, reduction)
