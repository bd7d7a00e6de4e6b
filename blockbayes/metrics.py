"""Evaluation metrics for Bayesian predictive distributions (EVALUATION.md §1.1–1.4, §1.6).

Conventions
-----------
* Written against the Python Array API: inputs may be NumPy, CuPy or array-api-strict arrays
  (one namespace per call); the normal CDF/quantile come from :mod:`blockbayes._backend.special`.
* **Results are arrays** in the inputs' namespace and device, with the inputs' floating dtype
  (``float64`` when no input is floating). Scalar metrics are **0-d arrays**: call ``float()``
  for a Python number. Per-point values are returned with ``reduction="none"``.
* ``n`` is the number of test points (the leading axis of ``y``/``labels``), ``K`` the number of
  classes, ``S`` the number of posterior samples or ensemble members (always the *leading* axis
  of sample-shaped arrays), ``d`` an optional number of regression outputs.
* Classification probabilities have shape ``(n, K)``; a 1-D array of shape ``(n,)`` means binary
  ``P(y = 1)`` and is expanded to ``[1 − p, p]`` (except by :func:`brier`, see there). Rows must
  lie in ``[0, 1]`` and sum to one within ``1e-6`` (``1e-4`` for ``float32``). Average
  *probabilities* (not logits) over samples: :func:`bma_probs`, :func:`bma_log_probs`.
* Argmax ties are broken towards the lowest class index.
* Invalid input raises ``ValueError`` with the reason: empty input, mismatched shapes, NaN (and,
  for regression quantities, infinite) values, non-positive variances, probabilities outside
  ``[0, 1]`` or not summing to one, labels outside ``0..K−1``.
"""
from __future__ import annotations

import math

from ._backend import device_of, namespace
from ._backend import special as _special
from .diagnostics import _average_ranks, _tie_bounds

__all__ = [
    # regression
    "rmse",
    "gaussian_log_likelihood",
    "log_predictive_gaussian_mixture",
    "pit_gaussian",
    "pit_gaussian_mixture",
    "interval_coverage",
    "coverage_gaussian",
    "coverage_gaussian_mixture",
    "crps_gaussian",
    "crps_ensemble",
    # classification
    "bma_probs",
    "bma_log_probs",
    "accuracy",
    "nll",
    "nll_from_logits",
    "brier",
    "ece",
    "mce",
    "reliability_diagram",
    "predictive_entropy",
    "mutual_information",
    # OOD detection
    "auroc",
    "aupr",
    "fpr_at_tpr",
    "fpr_at_95_tpr",
    # agreement with a reference posterior
    "agreement",
    "total_variation",
]

_LOG_2PI = math.log(2.0 * math.pi)
_DEFAULT_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


# ----------------------------------------------------------------------------------------------
# validation and small helpers
# ----------------------------------------------------------------------------------------------

def _float_dtype(xp, *arrays):
    fl = [a.dtype for a in arrays if a is not None and hasattr(a, "dtype")
          and xp.isdtype(a.dtype, "real floating")]
    return xp.result_type(*fl) if fl else xp.float64


def _arr(xp, v, dtype, dev):
    """``v`` (array or Python scalar) as an array of ``dtype`` on ``dev``."""
    if hasattr(v, "shape") and hasattr(v, "dtype"):
        return v if v.dtype == dtype else xp.astype(v, dtype)
    return xp.asarray(v, dtype=dtype, device=dev)


def _no_nan(xp, x, what):
    if bool(xp.any(xp.isnan(x))):
        raise ValueError(f"{what} contains NaN")


def _finite(xp, x, what):
    _no_nan(xp, x, what)
    if not bool(xp.all(xp.isfinite(x))):
        raise ValueError(f"{what} contains infinite values")


def _nonempty(x, what, axis=0):
    if x.ndim == 0:
        raise ValueError(f"{what} must have at least one dimension")
    if x.shape[axis] == 0 or x.size == 0:
        raise ValueError(f"{what} is empty")


def _same_shape(a, b, na, nb):
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"shape mismatch: {na} has shape {tuple(a.shape)}, {nb} {tuple(b.shape)}")


def _broadcast_to(xp, v, shape, what):
    try:
        return xp.broadcast_to(v, shape)
    except Exception as exc:  # ValueError (numpy), others for other libraries
        raise ValueError(f"{what} of shape {tuple(v.shape)} does not broadcast to {shape}") from exc


def _positive(xp, v, what):
    _finite(xp, v, what)
    if bool(xp.any(v <= 0)):
        raise ValueError(f"{what} must be positive")


def _0d(xp, v):
    """A true 0-d array (NumPy reductions return NumPy scalars)."""
    return xp.asarray(v)


def _reduce(xp, v, reduction):
    if reduction == "mean":
        return _0d(xp, xp.mean(v))
    if reduction == "sum":
        return _0d(xp, xp.sum(v))
    if reduction == "none":
        return v
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _prob_atol(xp, dtype):
    return 1e-4 if dtype == xp.float32 else 1e-6


def _check_probs(xp, p, what="probs"):
    """Validate probabilities of shape (..., K): finite, in [0, 1], rows summing to 1."""
    _no_nan(xp, p, what)
    tol = _prob_atol(xp, p.dtype)
    if bool(xp.any(p < -tol)) or bool(xp.any(p > 1 + tol)):
        raise ValueError(f"{what} must lie in [0, 1]")
    dev = xp.max(xp.abs(xp.sum(p, axis=-1) - 1))
    if float(dev) > tol:
        raise ValueError(
            f"{what} rows must sum to 1 (max deviation {float(dev):.3g} > tolerance {tol:g}); "
            "pass probabilities, or use nll_from_logits / bma_log_probs for logits"
        )


def _probs2d(xp, probs, what="probs"):
    """(n, K) float probabilities from (n, K) or binary (n,) input; validated."""
    if probs.ndim not in (1, 2):
        raise ValueError(f"{what} must have shape (n, K) or (n,) (binary), got {tuple(probs.shape)}")
    _nonempty(probs, what)
    p = xp.astype(probs, _float_dtype(xp, probs))
    if p.ndim == 1:
        _no_nan(xp, p, what)
        tol = _prob_atol(xp, p.dtype)
        if bool(xp.any(p < -tol)) or bool(xp.any(p > 1 + tol)):
            raise ValueError(f"binary {what} must lie in [0, 1]")
        p = xp.stack([1 - p, p], axis=1)
    else:
        if p.shape[1] < 2:
            raise ValueError(f"{what} needs at least 2 classes (columns), got {p.shape[1]}")
        _check_probs(xp, p, what)
    return p


def _labels(xp, labels, n, k):
    """Validated int64 labels of shape (n,) with values in 0..k-1."""
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if xp.isdtype(labels.dtype, "bool"):
        lab = xp.astype(labels, xp.int64)
    elif xp.isdtype(labels.dtype, "integral"):
        lab = xp.astype(labels, xp.int64)
    elif xp.isdtype(labels.dtype, "real floating"):
        _no_nan(xp, labels, "labels")
        if not bool(xp.all(labels == xp.round(labels))):
            raise ValueError("labels must be integers (class indices)")
        lab = xp.astype(labels, xp.int64)
    else:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if bool(xp.any(lab < 0)) or bool(xp.any(lab >= k)):
        raise ValueError(f"labels must lie in 0..{k - 1} (got values outside that range)")
    return lab


def _argmax_rows(xp, p):
    return xp.argmax(p, axis=-1)


def _logsumexp(xp, a, axis, keepdims=False):
    """log Σ exp(a) along ``axis``, stable; −inf where every term is −inf."""
    m = xp.max(a, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, xp.zeros_like(m))
    s = xp.sum(xp.exp(a - m), axis=axis, keepdims=True)
    pos = s > 0
    out = xp.where(pos, xp.log(xp.where(pos, s, xp.ones_like(s))) + m, xp.full_like(s, -math.inf))
    return out if keepdims else xp.squeeze(out, axis=axis)


def _log_softmax(xp, logits):
    return logits - _logsumexp(xp, logits, axis=-1, keepdims=True)


def _check_logits(xp, logits, what="logits"):
    _no_nan(xp, logits, what)
    if bool(xp.any(logits == math.inf)):
        raise ValueError(f"{what} contains +inf")


def _gauss_logpdf(xp, y, mean, var):
    return -0.5 * _LOG_2PI - 0.5 * xp.log(var) - 0.5 * (y - mean) ** 2 / var


def _prep_regression(y, mean, var, *, samples=False):
    """Validate (y, mean(s), variance(s)); return xp, y, mean, var (broadcast), dtype."""
    xp = namespace(y, mean, var)
    dt = _float_dtype(xp, y, mean, var)
    dev = device_of(y)
    y = _arr(xp, y, dt, dev)
    mean = _arr(xp, mean, dt, dev)
    _nonempty(y, "y")
    name = "means" if samples else "mean"
    if samples:
        if mean.ndim != y.ndim + 1 or tuple(mean.shape[1:]) != tuple(y.shape):
            raise ValueError(f"means must have shape (S, *y.shape) = (S, {', '.join(map(str, y.shape))}), "
                             f"got {tuple(mean.shape)}")
        if mean.shape[0] == 0:
            raise ValueError("means has no samples (S = 0)")
    else:
        _same_shape(y, mean, "y", "mean")
    _finite(xp, y, "y")
    _finite(xp, mean, name)
    if var is not None:
        vname = "variances" if samples else "var"
        var = _arr(xp, var, dt, dev)
        _positive(xp, var, vname)
        var = _broadcast_to(xp, var, tuple(mean.shape), vname)
    return xp, y, mean, var, dt


def _sum_outputs(xp, v, lead):
    """Sum over the output axes after the first ``lead`` axes (per-point joint density)."""
    if v.ndim > lead:
        return xp.sum(v, axis=tuple(range(lead, v.ndim)))
    return v


def _log_y_scale(xp, y_scale, out_shape, dt, dev):
    """Σ_d log σ_y,d for one point (0-d array) from a scalar or per-output scale."""
    s = _arr(xp, y_scale, dt, dev)
    _positive(xp, s, "y_scale")
    s = _broadcast_to(xp, s, out_shape, "y_scale")
    return xp.sum(xp.log(s)) if s.ndim else xp.log(s)


# ----------------------------------------------------------------------------------------------
# regression
# ----------------------------------------------------------------------------------------------

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


def _levels_array(xp, levels, dt, dev):
    lv = [float(v) for v in levels]
    if not lv or not all(0.0 < v < 1.0 for v in lv):
        raise ValueError(f"levels must be a non-empty sequence in (0, 1), got {levels!r}")
    return xp.asarray(lv, dtype=dt, device=dev)


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


# ----------------------------------------------------------------------------------------------
# classification
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# OOD detection (OOD = positive class; larger score = more OOD)
# ----------------------------------------------------------------------------------------------

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
    r = _average_ranks(xp, xp.concat([a, b]))
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
    _, last = _tie_bounds(xp, s_sorted)
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


# ----------------------------------------------------------------------------------------------
# agreement with a reference predictive (Izmailov et al. 2021)
# ----------------------------------------------------------------------------------------------

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
