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

Layout (every public name is re-exported here)
----------------------------------------------
``_rhat`` split chains, rank normalisation, R-hat; ``_ess`` autocovariance and the ESS family;
``_mcse`` MCSE of mean and quantiles; ``_summary`` summary table; ``_thermalisation`` stationary
band and thermalisation time; ``_common`` input handling. Ranks and running extremes come from
:mod:`blockbayes._backend.ranks` (shared with :mod:`blockbayes.metrics`).
"""
from ._rhat import split_chains, rank_normalize, rhat
from ._ess import autocovariance, ess, ess_bulk, ess_tail, ess_mean
from ._mcse import mcse_mean, mcse_quantile
from ._summary import summary, format_summary
from ._thermalisation import stationary_band, thermalisation_time

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
