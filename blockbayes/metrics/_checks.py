"""Input validation and small Array-API helpers shared by the metrics (conventions in the package
docstring).
"""
from __future__ import annotations

import math

from .._backend import device_of, namespace

_LOG_2PI = math.log(2.0 * math.pi)


_DEFAULT_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


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


def _levels_array(xp, levels, dt, dev):
    lv = [float(v) for v in levels]
    if not lv or not all(0.0 < v < 1.0 for v in lv):
        raise ValueError(f"levels must be a non-empty sequence in (0, 1), got {levels!r}")
    return xp.asarray(lv, dtype=dt, device=dev)
