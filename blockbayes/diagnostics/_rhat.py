"""Split and rank-normalised R-hat (Vehtari et al. 2021, ArviZ conventions; formulas in the package
docstring).
"""
from __future__ import annotations

import math

from .._backend import namespace
from ._common import _finish, _median_sorted, _pooled_sorted, _prepare, _split, _z_scale
from ._ess import _nanmax2

__all__ = ["split_chains", "rank_normalize", "rhat"]


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
