"""Effective sample sizes: bulk, tail and mean ESS by FFT autocovariances and Geyer's initial
monotone sequence.
"""
from __future__ import annotations

import math

from .._backend import device_of, namespace
from .._backend.ranks import cumulative_extreme
from ._common import (
    _as_float, _finish, _next_fast_len, _pooled_sorted, _prepare, _quantile_sorted,
    _resolution, _split, _z_scale)

__all__ = ["autocovariance", "ess", "ess_bulk", "ess_tail", "ess_mean"]


def _ess_core(xp, x):
    """ESS of (M, N, P) arrays (ArviZ ``_ess`` vectorised over P; see the package docstring)."""
    m, n, p = x.shape
    dev = device_of(x)
    dt = x.dtype
    s_total = m * n
    const = (xp.max(x, axis=(0, 1)) - xp.min(x, axis=(0, 1))) < _resolution(xp, dt)
    acov = autocovariance(x, axis=1)  # (M, N, P)
    chain_mean = xp.mean(x, axis=1)
    mean_var = xp.mean(acov[:, 0, :], axis=0) * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if m > 1:
        var_plus = var_plus + xp.var(chain_mean, axis=0, correction=1)
    bad = const | (var_plus <= 0)
    vp = xp.where(bad, xp.ones_like(var_plus), var_plus)
    rho = 1.0 - (mean_var - xp.mean(acov, axis=0)) / vp  # (N, P)
    rho = xp.concat([xp.ones((1, p), dtype=dt, device=dev), rho[1:, :]], axis=0)

    k_max = max(0, (n - 3) // 2)  # pairs k = 1..k_max can be examined (lag 2k-1 < N-3)
    even = rho[0:2 * k_max + 1:2, :]  # rho_{2k},   k = 0..k_max
    odd = rho[1:2 * k_max + 2:2, :]  # rho_{2k+1}, k = 0..k_max
    pairs = even + odd
    if k_max > 0:
        stop = ~(pairs[:k_max, :] > 0)
        first_stop = xp.argmax(xp.astype(stop, xp.int32), axis=0)
        k_last = xp.where(xp.any(stop, axis=0), xp.astype(first_stop, xp.int64),
                          xp.full((p,), k_max, dtype=xp.int64, device=dev))
    else:
        k_last = xp.zeros((p,), dtype=xp.int64, device=dev)
    mono = cumulative_extreme(xp, pairs, xp.minimum)  # Geyer's initial monotone sequence
    k_idx = xp.reshape(xp.arange(k_max + 1, dtype=xp.int64, device=dev), (k_max + 1, 1))
    zero = xp.zeros_like(pairs)
    summed = xp.sum(xp.where(k_idx < k_last, mono, zero), axis=0)
    at_last = k_idx == k_last
    even_last = xp.sum(xp.where(at_last, even, zero), axis=0)
    pair_last = xp.sum(xp.where(at_last, pairs, zero), axis=0)
    # ArviZ adds rho_{2K} when positive; a non-positive one survives only if its pair was stored
    extra = xp.where((even_last > 0) | (pair_last >= 0), even_last, xp.zeros_like(even_last))
    tau = -1.0 + 2.0 * summed + extra
    tau = xp.maximum(tau, xp.asarray(1.0 / math.log10(s_total), dtype=dt, device=dev))
    out = s_total / tau
    return xp.where(const, xp.full_like(out, float(s_total)), out)


def autocovariance(x, axis=-1):
    """Biased autocovariance at every lag along ``axis``, via the FFT.

    ``γ̂_t = (1/n) Σ_{i=0}^{n−1−t} (x_i − x̄)(x_{i+t} − x̄)`` for ``t = 0..n−1``, computed as the
    inverse real FFT of ``|F|²`` with zero padding to an FFT-friendly length ``≥ 2n``.

    Parameters
    ----------
    x : array
        Real input (integers are promoted to ``float64``).
    axis : int
        The time axis.

    Returns
    -------
    array, same shape and floating dtype as ``x``
    """
    xp = namespace(x)
    x = _as_float(xp, x)
    axis = axis % x.ndim
    n = int(x.shape[axis])
    m = _next_fast_len(2 * n)
    xc = x - xp.mean(x, axis=axis, keepdims=True)
    f = xp.fft.rfft(xc, n=m, axis=axis)
    c = xp.fft.irfft(f * xp.conj(f), n=m, axis=axis)
    sl = tuple(slice(0, n) if d == axis else slice(None) for d in range(x.ndim))
    return xp.astype(c[sl], x.dtype) / n


def _nanmax2(xp, a, b):
    # Python's max(a, b) in ArviZ returns NaN only when the bulk value is NaN; both are NaN
    # together (zero within-chain variance) so an elementwise maximum is equivalent.
    return xp.where(xp.isnan(a) | xp.isnan(b), a + b, xp.maximum(a, b))


def ess(draws, *, method="bulk", prob=(0.05, 0.95)):
    """Effective sample size.

    Parameters
    ----------
    draws : array, shape (M, N, *param_shape)
        ``M >= 1`` chains of ``N >= 4`` draws.
    method : {"bulk", "tail", "mean", "quantile"}
        ``"bulk"``: ESS of the rank-normalised split chains (:func:`ess_bulk`). ``"tail"``: the
        minimum of the quantile ESS at ``prob`` (:func:`ess_tail`). ``"mean"``: ESS of the raw
        split chains (:func:`ess_mean`). ``"quantile"``: ESS of ``1[θ ≤ q_prob]`` for a single
        ``prob``.
    prob : float or (float, float)
        Quantile level(s) for ``"tail"`` (default ``(0.05, 0.95)``; a single ``p`` means
        ``(p, 1 − p)`` sorted) and ``"quantile"`` (a float).

    Returns
    -------
    array, shape param_shape
    """
    if method == "bulk":
        return ess_bulk(draws)
    if method == "tail":
        return ess_tail(draws, prob=prob)
    if method == "mean":
        return ess_mean(draws)
    if method == "quantile":
        if not isinstance(prob, (int, float)):
            raise ValueError("method='quantile' needs a single float prob")
        xp, x, ps = _prepare(draws)
        return _finish(xp, _ess_quantile(xp, x, float(prob)), ps)
    raise ValueError(f"method must be 'bulk', 'tail', 'mean' or 'quantile', got {method!r}")


def ess_bulk(draws):
    """Bulk-ESS: ESS of the rank-normalised split chains, ``ESS(z(split θ))``.

    Parameters
    ----------
    draws : array, shape (M, N, *param_shape)

    Returns
    -------
    array, shape param_shape
    """
    xp, x, ps = _prepare(draws)
    return _finish(xp, _ess_core(xp, _z_scale(xp, _split(xp, x))), ps)


def _ess_quantile(xp, x, p):
    q = _quantile_sorted(xp, _pooled_sorted(xp, x), p)
    ind = xp.astype(x <= q, x.dtype)
    return _ess_core(xp, _split(xp, ind))


def ess_tail(draws, *, prob=(0.05, 0.95)):
    """Tail-ESS: ``min(ESS(1[split θ ≤ q_{p₁}]), ESS(1[split θ ≤ q_{p₂}]))``.

    Parameters
    ----------
    draws : array, shape (M, N, *param_shape)
    prob : (float, float) or float
        Quantile levels ``(p₁, p₂)``, default ``(0.05, 0.95)``; a single ``p`` means
        ``sorted((p, 1 − p))``. The quantiles ``q`` are NumPy-"linear" quantiles of all draws.

    Returns
    -------
    array, shape param_shape
    """
    if isinstance(prob, (int, float)):
        prob = tuple(sorted((float(prob), 1.0 - float(prob))))
    if len(prob) != 2 or not all(0.0 < float(p) < 1.0 for p in prob):
        raise ValueError(f"prob must be two levels in (0, 1), got {prob!r}")
    xp, x, ps = _prepare(draws)
    lo = _ess_quantile(xp, x, float(prob[0]))
    hi = _ess_quantile(xp, x, float(prob[1]))
    return _finish(xp, xp.minimum(lo, hi), ps)


def ess_mean(draws):
    """ESS of the mean: ESS of the (not rank-normalised) split chains.

    Parameters
    ----------
    draws : array, shape (M, N, *param_shape)

    Returns
    -------
    array, shape param_shape
    """
    xp, x, ps = _prepare(draws)
    return _finish(xp, _ess_core(xp, _split(xp, x)), ps)
