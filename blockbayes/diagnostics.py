"""MCMC convergence diagnostics: rank-normalised split R-hat, bulk/tail ESS, MCSE, summaries.

Everything follows Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization,
folding, and localization: an improved R-hat for assessing convergence of MCMC", *Bayesian
Analysis* 16(2), with the exact conventions of ArviZ (``arviz_stats.base.diagnostics``), which
these functions reproduce to floating-point round-off (see ``tests/test_diagnostics.py``).

Conventions
-----------
* Draws have shape ``(chains, draws, *param_shape)``; every statistic is vectorised over the
  parameters and returned with shape ``param_shape`` (a 0-d array for a scalar parameter).
* Results are arrays in the input's namespace, device and floating dtype (integer or boolean
  draws are promoted to ``float64``). Call ``float()`` on a 0-d result for a Python number.
* Inputs with NaN or infinite values raise ``ValueError``; so do fewer than 4 draws per chain,
  and fewer than 2 chains for R-hat.
* Written against the Python Array API (``xp.fft``, ``xp.sort``/``xp.argsort``); the inverse
  normal CDF comes from :mod:`blockbayes._backend.special`. The only host computations are the
  Beta quantile in :func:`mcse_quantile` (a handful of scalars per parameter) and the text
  rendering in :func:`format_summary`.

Formulas (``M`` chains of ``2N`` draws; ``S`` pooled draws)
-----------------------------------------------------------
Split
    each chain is cut into its first ``N`` and last ``N`` draws (the middle draw is dropped
    when the length is odd), giving ``M' = 2M`` chains of length ``N``.
Rank normalisation
    ``z = Φ⁻¹((r − 3/8) / (S + 1/4))`` with ``r`` the average ranks of all ``S = M'N`` pooled
    draws (ties get their average rank; Blom's offset 3/8).
Basic R-hat of an ``(M', N)`` array
    ``B = N var_m(θ̄_m)``, ``W = mean_m s_m²`` (both with ddof 1),
    ``R̂ = sqrt((B/W + N − 1)/N) = sqrt(var⁺/W)`` with ``var⁺ = (N−1)/N W + B/N``.
Rank-normalised split R-hat
    ``max(R̂(z(split θ)), R̂(z(|split θ − median(split θ)|)))`` (bulk and folded/tail).
ESS of an ``(M', N)`` array
    per-chain autocovariances ``γ̂_{t,m}`` by FFT (biased, divided by ``N``);
    ``W = mean_m γ̂_{0,m} N/(N−1)``; ``var⁺ = W (N−1)/N + var_m(θ̄_m)`` (second term only for
    ``M' > 1``); ``ρ̂_t = 1 − (W − mean_m γ̂_{t,m}) / var⁺`` and ``ρ̂_0 = 1``.
    Geyer's initial positive sequence sums the pairs ``P_k = ρ̂_{2k} + ρ̂_{2k+1}`` while they stay
    positive (at most up to lag ``N − 3``), made monotone by a running minimum;
    ``τ̂ = −1 + 2 Σ_{k<K} P_k + ρ̂_{2K}`` where ``ρ̂_{2K}`` (the even autocorrelation of the first
    pair not summed) is added when positive, as ArviZ does; ``τ̂ ≥ 1/log₁₀(S)`` caps the ESS at
    ``S log₁₀ S`` for antithetic chains; ``ESS = S/τ̂``. An array whose range is below the dtype's
    resolution has ``ESS = S``.
Bulk-ESS
    ESS of ``z(split θ)``.
Tail-ESS
    ``min(ESS(1[split θ ≤ q_{p₁}]), ESS(1[split θ ≤ q_{p₂}]))``, ``(p₁, p₂) = (0.05, 0.95)``,
    with ``q`` the (linearly interpolated, NumPy "linear") quantiles of all draws.
MCSE of the mean
    ``sd(θ) / sqrt(ESS_mean)`` with ``ESS_mean`` the ESS of the (not rank-normalised) split
    chains and ``sd`` the pooled standard deviation (ddof 1).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from ._backend import device_of, namespace, to_numpy
from ._backend import special as _special

__all__ = [
    "split_chains",
    "rank_normalize",
    "autocovariance",
    "rhat",
    "ess",
    "ess_bulk",
    "ess_tail",
    "ess_mean",
    "mcse_mean",
    "mcse_quantile",
    "summary",
    "format_summary",
    "stationary_band",
    "thermalisation_time",
]


# ----------------------------------------------------------------------------------------------
# small Array-API helpers (also used by blockbayes.metrics)
# ----------------------------------------------------------------------------------------------

def _as_float(xp, x):
    """``x`` as a real floating array (integers and booleans become ``float64``)."""
    if xp.isdtype(x.dtype, "real floating"):
        return x
    if xp.isdtype(x.dtype, "complex floating"):
        raise TypeError("complex input is not supported")
    return xp.astype(x, xp.float64)


def _check_finite(xp, x, what="input"):
    if not bool(xp.all(xp.isfinite(x))):
        if bool(xp.any(xp.isnan(x))):
            raise ValueError(f"{what} contains NaN")
        raise ValueError(f"{what} contains infinite values")


def _cumulative_extreme(xp, a, op):
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


def _tie_bounds(xp, s):
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
    first = _cumulative_extreme(xp, xp.where(is_first, idx, xp.zeros_like(idx)), xp.maximum)
    # running minimum from the right == flipped running maximum of (n-1-index)
    rev = xp.flip(xp.where(is_last, (n - 1) - idx, xp.zeros_like(idx)), axis=0)
    last = (n - 1) - xp.flip(_cumulative_extreme(xp, rev, xp.maximum), axis=0)
    return first, last


def _average_ranks(xp, x):
    """Average ranks (1-based, ties averaged, as ``scipy.stats.rankdata``) along axis 0."""
    # stability is irrelevant: tied entries all receive their group's average rank, and the
    # inverse permutation sorts distinct keys (unstable sorts are ~2x faster in NumPy)
    order = xp.argsort(x, axis=0, stable=False)
    s = xp.take_along_axis(x, order, axis=0)
    first, last = _tie_bounds(xp, s)
    dt = x.dtype if xp.isdtype(x.dtype, "real floating") else xp.float64
    r_sorted = xp.astype(first + last, dt) / 2 + 1
    inverse = xp.argsort(order, axis=0, stable=False)
    return xp.take_along_axis(r_sorted, inverse, axis=0)


def _quantile_sorted(xp, s, q):
    """Quantile ``q`` (a Python float) of ``s`` sorted along axis 0, NumPy's "linear" method.

    Type 7 of Hyndman & Fan: virtual index ``h = (n − 1) q``, linear interpolation between the
    neighbours, evaluated exactly as :func:`numpy.quantile` does (``b − (b − a)(1 − γ)`` when
    ``γ ≥ 0.5``) so that results match NumPy bit for bit.
    """
    n = s.shape[0]
    h = n * q + (1.0 - q) - 1.0  # numpy's _compute_virtual_index with alpha = beta = 1
    if h >= n - 1:
        return s[n - 1, ...]
    if h < 0:
        return s[0, ...]
    lo = math.floor(h)
    g = h - lo
    a = s[lo, ...]
    b = s[lo + 1, ...]
    d = b - a
    if g >= 0.5:
        return b - d * (1.0 - g)
    return a + d * g


def _median_sorted(xp, s):
    """Median of ``s`` sorted along axis 0 (the mean of the two middle values for even n)."""
    n = s.shape[0]
    return (s[(n - 1) // 2, ...] + s[n // 2, ...]) / 2


def _resolution(xp, dtype) -> float:
    """NumPy's ``finfo(dtype).resolution`` (``10**-precision``; 1e-15 for float64, 1e-6 for
    float32), which the Array API's ``finfo`` lacks."""
    return 10.0 ** -math.floor(-math.log10(float(xp.finfo(dtype).eps)))


def _next_fast_len(n: int) -> int:
    """Smallest ``2^a 3^b 5^c >= n`` (an FFT-friendly length for every backend)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


# ----------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------

def _prepare(draws, *, min_chains=1, what="draws"):
    """Validate ``(chains, draws, *param_shape)`` input; return ``xp, x (M, N, P), param_shape``."""
    xp = namespace(draws)
    if draws.ndim < 2:
        raise ValueError(
            f"{what} must have shape (chains, draws, *param_shape); got shape {tuple(draws.shape)}"
        )
    x = _as_float(xp, draws)
    m, n = int(x.shape[0]), int(x.shape[1])
    if m < min_chains:
        raise ValueError(f"{what}: this diagnostic needs at least {min_chains} chains, got {m}")
    if n < 4:
        raise ValueError(f"{what}: at least 4 draws per chain are needed, got {n}")
    param_shape = tuple(int(d) for d in x.shape[2:])
    p = math.prod(param_shape)
    if p == 0:
        raise ValueError(f"{what} has an empty parameter shape {param_shape}")
    _check_finite(xp, x, what)
    return xp, xp.reshape(x, (m, n, p)), param_shape


def _finish(xp, v, param_shape):
    return xp.reshape(v, param_shape)


def _split(xp, x):
    """(M, N, P) -> (2M, N//2, P): first and last halves of each chain."""
    half = x.shape[1] // 2
    return xp.concat([x[:, :half, ...], x[:, x.shape[1] - half:, ...]], axis=0)


def _z_scale(xp, x):
    """Rank-normalise (M, N, P) pooling the M*N draws of each parameter."""
    m, n, p = x.shape
    s = m * n
    r = _average_ranks(xp, xp.reshape(x, (s, p)))
    u = (r - 0.375) / (s + 0.25)
    return xp.reshape(_special.ndtri(u), (m, n, p))


def _pooled_sorted(xp, x):
    m, n, p = x.shape
    return xp.sort(xp.reshape(x, (m * n, p)), axis=0)


def _rhat_core(xp, x):
    """Basic R-hat of (M, N, P) arrays, NaN where the within-chain variance is zero."""
    n = x.shape[1]
    chain_mean = xp.mean(x, axis=1)
    chain_var = xp.var(x, axis=1, correction=1)
    between = n * xp.var(chain_mean, axis=0, correction=1)
    within = xp.mean(chain_var, axis=0)
    ok = within > 0
    w_safe = xp.where(ok, within, xp.ones_like(within))
    r = xp.sqrt((between / w_safe + n - 1) / n)
    return xp.where(ok, r, xp.full_like(r, math.nan))


def _ess_core(xp, x):
    """ESS of (M, N, P) arrays (ArviZ ``_ess`` vectorised over P; see the module docstring)."""
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
    mono = _cumulative_extreme(xp, pairs, xp.minimum)  # Geyer's initial monotone sequence
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


# ----------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------

def split_chains(draws):
    """Split every chain into its first and last halves.

    Parameters
    ----------
    draws : array, shape (M, N, *param_shape)

    Returns
    -------
    array, shape (2M, N // 2, *param_shape)
        ``concat([draws[:, :N//2], draws[:, N - N//2:]])`` along the chain axis; for odd ``N``
        the middle draw is dropped.
    """
    xp = namespace(draws)
    if draws.ndim < 2:
        raise ValueError("draws must have shape (chains, draws, *param_shape)")
    return _split(xp, draws)


def rank_normalize(draws):
    """Rank-normalised draws ``z = Φ⁻¹((r − 3/8)/(S + 1/4))`` pooled over chains and draws.

    Parameters
    ----------
    draws : array, shape (M, N, *param_shape)

    Returns
    -------
    array, same shape
        Normal scores of the average ranks ``r`` of the ``S = M N`` draws of each parameter.
    """
    xp, x, ps = _prepare(draws, min_chains=1)
    return xp.reshape(_z_scale(xp, x), tuple(draws.shape[:2]) + ps)


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


def rhat(draws, *, method="rank"):
    """Split R-hat, rank-normalised by default (Vehtari et al. 2021).

    Parameters
    ----------
    draws : array, shape (M, N, *param_shape)
        ``M >= 2`` chains of ``N >= 4`` draws.
    method : {"rank", "bulk", "folded", "split"}
        ``"rank"`` (default): ``max`` of the bulk and folded values, the recommended
        diagnostic (converged when ``< 1.01``). ``"bulk"``: ``R̂(z(split θ))``. ``"folded"``:
        ``R̂(z(|split θ − median|))``. ``"split"``: classic split R-hat on the raw draws.

    Returns
    -------
    array, shape param_shape
        NaN for a parameter that is constant within every (split) chain.

    Raises
    ------
    ValueError
        Fewer than 2 chains or 4 draws, or non-finite draws.
    """
    if method not in ("rank", "bulk", "folded", "split"):
        raise ValueError(f"method must be 'rank', 'bulk', 'folded' or 'split', got {method!r}")
    xp, x, ps = _prepare(draws, min_chains=2)
    sx = _split(xp, x)
    if method == "split":
        return _finish(xp, _rhat_core(xp, sx), ps)
    out = None
    if method in ("rank", "bulk"):
        out = _rhat_core(xp, _z_scale(xp, sx))
    if method in ("rank", "folded"):
        med = _median_sorted(xp, _pooled_sorted(xp, sx))
        folded = _rhat_core(xp, _z_scale(xp, xp.abs(sx - med)))
        out = folded if out is None else _nanmax2(xp, out, folded)
    return _finish(xp, out, ps)


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


def mcse_mean(draws):
    """Monte Carlo standard error of the posterior mean, ``sd(θ)/sqrt(ESS_mean)``.

    ``sd`` is the standard deviation (ddof 1) of all pooled draws and ``ESS_mean`` is
    :func:`ess_mean`.

    Parameters
    ----------
    draws : array, shape (M, N, *param_shape)

    Returns
    -------
    array, shape param_shape
    """
    xp, x, ps = _prepare(draws)
    m, n, p = x.shape
    sd = xp.std(xp.reshape(x, (m * n, p)), axis=0, correction=1)
    return _finish(xp, sd / xp.sqrt(_ess_core(xp, _split(xp, x))), ps)


def mcse_quantile(draws, prob):
    """Monte Carlo standard error of the ``prob`` quantile (ArviZ's ``mcse(method="quantile")``).

    With ``E = ESS(1[split θ ≤ q_prob])``, the ``Beta(E p + 1, E (1 − p) + 1)`` quantiles at
    ``Φ(∓1) = 0.1586553, 0.8413447`` give fractional order statistics ``a₁, a₂``; with the
    pooled sorted draws ``θ_(0) ≤ … ≤ θ_(S−1)`` the result is
    ``(θ_(⌈min(a₂ S − 1, S − 1)⌉) − θ_(⌊max(a₁ S − 1, 0)⌋)) / 2``.

    The Beta quantile is not in the Array API or the backend layer; it is evaluated on the host
    with :func:`scipy.special.betaincinv` on the ``P`` per-parameter ESS values (a documented
    host fallback; the draws themselves never leave the device).

    Parameters
    ----------
    draws : array, shape (M, N, *param_shape)
    prob : float in (0, 1)

    Returns
    -------
    array, shape param_shape
    """
    import numpy as np
    from scipy.special import betaincinv

    prob = float(prob)
    if not 0.0 < prob < 1.0:
        raise ValueError(f"prob must lie in (0, 1), got {prob}")
    xp, x, ps = _prepare(draws)
    m, n, p = x.shape
    dev = device_of(x)
    s = _pooled_sorted(xp, x)
    q = _quantile_sorted(xp, s, prob)
    e = to_numpy(_ess_core(xp, _split(xp, xp.astype(x <= q, x.dtype)))).astype(np.float64)
    size = m * n
    with np.errstate(invalid="ignore"):
        a1 = betaincinv(e * prob + 1, e * (1 - prob) + 1, 0.1586553)
        a2 = betaincinv(e * prob + 1, e * (1 - prob) + 1, 0.8413447)
    i1 = np.floor(np.fmax(a1 * size - 1, 0)).astype(np.int64)
    i2 = np.ceil(np.fmin(a2 * size - 1, size - 1)).astype(np.int64)
    idx1 = xp.reshape(xp.asarray(i1, dtype=xp.int64, device=dev), (1, p))
    idx2 = xp.reshape(xp.asarray(i2, dtype=xp.int64, device=dev), (1, p))
    th1 = xp.take_along_axis(s, idx1, axis=0)[0, :]
    th2 = xp.take_along_axis(s, idx2, axis=0)[0, :]
    return _finish(xp, (th2 - th1) / 2, ps)


# ----------------------------------------------------------------------------------------------
# summary table
# ----------------------------------------------------------------------------------------------

_SUMMARY_COLUMNS = ("mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "rhat")


def _labels(name, shape):
    if not shape:
        return [name]
    import itertools

    return [f"{name}[{', '.join(str(i) for i in idx)}]"
            for idx in itertools.product(*(range(d) for d in shape))]


def summary(draws, *, prob=(0.05, 0.95)):
    """Posterior summary table: mean, sd, mcse_mean, ess_bulk, ess_tail, rhat per scalar.

    Parameters
    ----------
    draws : array or mapping of str to array
        One array of shape ``(M, N, *param_shape)`` (named ``"x"``) or a mapping
        ``name -> array`` of such arrays (same namespace and chain/draw counts not required
        across entries). Every scalar component becomes one row, labelled ``name[i, j]``
        (row-major order).
    prob : (float, float)
        Quantile levels for ``ess_tail``.

    Returns
    -------
    dict
        ``"name"``: list of ``P`` row labels; ``"mean"``, ``"sd"`` (pooled, ddof 1),
        ``"mcse_mean"``, ``"ess_bulk"``, ``"ess_tail"``, ``"rhat"`` (rank-normalised split
        R-hat): arrays of shape ``(P,)`` in the inputs' namespace and device (a common floating
        dtype). ``rhat`` is NaN for entries with a single chain (R-hat needs ``M >= 2``).

    See Also
    --------
    format_summary : the table as text.
    """
    items = list(draws.items()) if isinstance(draws, Mapping) else [("x", draws)]
    if not items:
        raise ValueError("summary() needs at least one array of draws")
    names: list[str] = []
    cols: dict[str, list[Any]] = {c: [] for c in _SUMMARY_COLUMNS}
    xp = None
    for name, arr in items:
        xp_i, x, ps = _prepare(arr, what=f"draws[{name!r}]")
        if xp is None:
            xp = xp_i
        elif xp_i is not xp:
            namespace(items[0][1], arr)  # raises a clear ValueError for mixed libraries
        m, n, p = x.shape
        pooled = xp.reshape(x, (m * n, p))
        sx = _split(xp, x)
        cols["mean"].append(xp.mean(pooled, axis=0))
        cols["sd"].append(xp.std(pooled, axis=0, correction=1))
        cols["mcse_mean"].append(cols["sd"][-1] / xp.sqrt(_ess_core(xp, sx)))
        cols["ess_bulk"].append(_ess_core(xp, _z_scale(xp, sx)))
        cols["ess_tail"].append(xp.minimum(_ess_quantile(xp, x, float(prob[0])),
                                           _ess_quantile(xp, x, float(prob[1]))))
        if m >= 2:
            bulk = _rhat_core(xp, _z_scale(xp, sx))
            med = _median_sorted(xp, _pooled_sorted(xp, sx))
            cols["rhat"].append(_nanmax2(xp, bulk, _rhat_core(xp, _z_scale(xp, xp.abs(sx - med)))))
        else:
            cols["rhat"].append(xp.full((p,), math.nan, dtype=x.dtype, device=device_of(x)))
        names.extend(_labels(str(name), ps))
    dt = xp.result_type(*[c.dtype for c in cols["mean"]])
    table: dict[str, Any] = {"name": names}
    for c in _SUMMARY_COLUMNS:
        table[c] = xp.concat([xp.astype(a, dt) for a in cols[c]], axis=0)
    return table


def format_summary(table, *, digits=3):
    """Render a :func:`summary` table as fixed-width text.

    Parameters
    ----------
    table : dict
        Output of :func:`summary`.
    digits : int
        Significant digits for mean, sd and mcse_mean; ESS is printed as an integer and R-hat
        with 3 decimals.

    Returns
    -------
    str
    """
    import numpy as np

    names = list(table["name"])
    cols = {c: np.asarray(to_numpy(table[c]), dtype=np.float64) for c in _SUMMARY_COLUMNS}

    def fmt(c, v):
        if not np.isfinite(v):
            return "nan"
        if c in ("ess_bulk", "ess_tail"):
            return f"{v:.0f}"
        if c == "rhat":
            return f"{v:.3f}"
        return f"{v:.{digits}g}"

    rows = [[fmt(c, cols[c][i]) for c in _SUMMARY_COLUMNS] for i in range(len(names))]
    w_name = max([len(n) for n in names] + [4])
    widths = [max([len(c)] + [len(r[j]) for r in rows]) for j, c in enumerate(_SUMMARY_COLUMNS)]
    head = " " * w_name + "  " + "  ".join(c.rjust(w) for c, w in zip(_SUMMARY_COLUMNS, widths))
    lines = [head]
    for nm, r in zip(names, rows):
        lines.append(nm.ljust(w_name) + "  " + "  ".join(v.rjust(w) for v, w in zip(r, widths)))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# thermalisation helpers
# ----------------------------------------------------------------------------------------------

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
