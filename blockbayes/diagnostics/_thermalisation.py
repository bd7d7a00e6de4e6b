"""Thermalisation helpers: the stationary band of a trace and the first time a trace stays inside
it.
"""
from __future__ import annotations

import math

from .._backend import device_of, namespace
from ._common import _as_float, _check_finite, _quantile_sorted

__all__ = ["stationary_band", "thermalisation_time"]


def stationary_band(trace, q=(0.05, 0.95), *, axis=None):
    """Quantile band of a (stationary) trace, e.g. the test MSE of an informed chain.

    Parameters
    ----------
    trace : array
        Values of a scalar statistic along the sweeps (any shape).
    q : (float, float)
        Lower and upper quantile levels, NumPy "linear" interpolation.
    axis : int or None
        ``None`` (default) pools all entries; an integer takes the quantiles along that axis
        (e.g. ``axis=-1`` for one band per chain of a ``(chains, sweeps)`` trace).

    Returns
    -------
    (low, high) : tuple of arrays
        0-d arrays for ``axis=None``, otherwise ``trace``'s shape without ``axis``; in the
        trace's namespace, device and floating dtype.
    """
    xp = namespace(trace)
    x = _as_float(xp, trace)
    lo_q, hi_q = float(q[0]), float(q[1])
    if not 0.0 <= lo_q <= hi_q <= 1.0:
        raise ValueError(f"q must satisfy 0 <= q[0] <= q[1] <= 1, got {q!r}")
    if x.size == 0:
        raise ValueError("trace is empty")
    _check_finite(xp, x, "trace")
    if axis is None:
        s = xp.sort(xp.reshape(x, (-1,)))
    else:
        s = xp.sort(xp.moveaxis(x, axis, 0), axis=0)
    return _quantile_sorted(xp, s, lo_q), _quantile_sorted(xp, s, hi_q)


def thermalisation_time(trace, band_low, band_high, window, *, min_inside=1.0):
    """First sweep from which a trace stays inside a stationary band for a whole window.

    Definition: with ``T`` sweeps ``x_0, …, x_{T−1}`` (the last axis of ``trace``) and
    ``inside_s = 1[band_low ≤ x_s ≤ band_high]``, the thermalisation time is

    ``τ = min { t ∈ {0, …, T − window} : Σ_{s=t}^{t+window−1} inside_s ≥ ⌈min_inside · window⌉ }``,

    i.e. the first sweep index from which the next ``window`` sweeps (``t`` included) all lie in
    the band (``min_inside=1``, the default) or at least a fraction ``min_inside`` of them do.
    ``τ = −1`` when no such ``t`` exists. Indices count from 0: add the sweep number of
    ``trace[..., 0]`` to convert to sweep numbers.

    Typical use: ``band_low, band_high = stationary_band(informed_trace)`` from a chain started at
    a good solution (after its own burn-in), then ``thermalisation_time(cold_trace, ...)`` for a
    chain started from zero weights. Note that a stationary trace with a central 90% band leaves
    the band about 10% of the time, so with ``min_inside=1`` long windows also delay ``τ`` for an
    already-stationary chain; choose a wider band or ``min_inside < 1`` accordingly.

    Parameters
    ----------
    trace : array, shape (..., T)
        One trace per leading index (e.g. ``(chains, T)``).
    band_low, band_high : float or array
        Band edges, broadcastable to ``trace.shape[:-1]``.
    window : int
        Window length ``1 <= window <= T``.
    min_inside : float in (0, 1]
        Fraction of the window that must be inside the band.

    Returns
    -------
    array of int64, shape trace.shape[:-1]
        ``τ`` per trace (a 0-d array for a 1-D trace), ``−1`` where the trace never settles.
    """
    xp = namespace(trace, band_low, band_high)
    x = _as_float(xp, trace)
    if x.ndim < 1:
        raise ValueError("trace must have at least one dimension (sweeps last)")
    t_len = int(x.shape[-1])
    window = int(window)
    if not 1 <= window <= t_len:
        raise ValueError(f"window must be in [1, {t_len}] (the trace length), got {window}")
    if not 0.0 < float(min_inside) <= 1.0:
        raise ValueError(f"min_inside must lie in (0, 1], got {min_inside}")
    _check_finite(xp, x, "trace")
    dev = device_of(x)
    lo = xp.asarray(band_low, dtype=x.dtype, device=dev) if not hasattr(band_low, "shape") else band_low
    hi = xp.asarray(band_high, dtype=x.dtype, device=dev) if not hasattr(band_high, "shape") else band_high
    lo = xp.reshape(lo, tuple(lo.shape) + (1,)) if lo.ndim else lo
    hi = xp.reshape(hi, tuple(hi.shape) + (1,)) if hi.ndim else hi
    if bool(xp.any(lo > hi)):
        raise ValueError("band_low must not exceed band_high")
    inside = xp.astype((x >= lo) & (x <= hi), xp.int64)
    lead = tuple(x.shape[:-1])
    c = xp.cumulative_sum(inside, axis=-1, include_initial=True)  # (..., T+1)
    counts = c[..., window:] - c[..., :t_len - window + 1]  # (..., T-window+1)
    need = math.ceil(float(min_inside) * window - 1e-12)
    ok = counts >= need
    first = xp.argmax(xp.astype(ok, xp.int32), axis=-1)
    res = xp.where(xp.any(ok, axis=-1), xp.astype(first, xp.int64),
                   xp.full(lead, -1, dtype=xp.int64, device=dev))
    return res
