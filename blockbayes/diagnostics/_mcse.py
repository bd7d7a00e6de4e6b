"""Monte Carlo standard errors of the mean and of quantiles."""
from __future__ import annotations

from .._backend import device_of, to_numpy
from ._common import _finish, _pooled_sorted, _prepare, _quantile_sorted, _split
from ._ess import _ess_core

__all__ = ["mcse_mean", "mcse_quantile"]


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
    from .._backend.host import np, scipy_special

    betaincinv = scipy_special().betaincinv

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
