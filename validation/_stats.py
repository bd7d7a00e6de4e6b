"""Calibrated statistics of the Gibbs exactness suite (host NumPy/SciPy, float64).

Every check returns a :class:`blockbayes.testing.Check` (``passed = statistic <= threshold``)
and has a **non-asymptotic** false-failure bound ``delta`` for i.i.d. draws from the reference
law (no CLT):

* :func:`ks_checks_pooled` / :func:`ks_check` — Kolmogorov–Smirnov distance against a continuous
  CDF with the Dvoretzky–Kiefer–Wolfowitz–Massart threshold ``sqrt(ln(2/δ)/(2N))`` (exact for any
  ``N``); optionally inflated by a stated reference error (grid quadrature).
* :func:`two_sample_ks` — ``ε_N(δ/2) + ε_M(δ/2)`` (DKW for each sample, triangle inequality).
* :func:`eb_mean_check` / :func:`eb_paired_check` — empirical Bernstein (Maurer & Pontil 2009,
  Thm 4, two-sided): for i.i.d. ``g_i ∈ [lo, hi]``,
  ``|ḡ − E g| ≤ sqrt(2 V ln(4/δ)/N) + 7 (hi − lo) ln(4/δ) / (3 (N − 1))`` with probability
  ``≥ 1 − δ`` (``V`` the unbiased sample variance). This is the z-test ``|ḡ − E g| ≤ z* sd/√N``
  with ``z* = sqrt(2 ln(4/δ))`` plus an ``O(1/N)`` term, and it is exact. Unbounded quantities
  are tested through bounded transforms (``tanh`` of a standardised value, indicators).
* :func:`binomial_check` — exact two-sided binomial test (``p``-value ``< δ`` fails; the
  statistic is ``−log10 p``), powerful also when the reference probability is ``1e-300``.

Budget (EVALUATION.md §3.2): :data:`DELTA_ITEM` per stochastic pytest item, split by the caller
over Hypothesis examples and statistics (Bonferroni); the conftest refuses to run a tier with more
than ``SUITE_DELTA / DELTA_ITEM`` stochastic items, so a run of either tier has false-failure
probability ``≤ SUITE_DELTA = 1e-6`` for a correct sampler.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from blockbayes.testing import Check

__all__ = ["SUITE_DELTA", "DELTA_ITEM", "MAX_ITEMS", "dkw", "ks_stat", "ks_check", "two_sample_ks",
           "eb_bound", "eb_mean_check", "eb_paired_check", "binomial_check", "whitened_checks",
           "finite_check", "exact_check", "split", "bounded"]

SUITE_DELTA = 1e-6
DELTA_ITEM = 1e-8
MAX_ITEMS = int(round(SUITE_DELTA / DELTA_ITEM))


def dkw(n: int, delta: float) -> float:
    """DKW–Massart: ``P(sup|F_n − F| > ε) ≤ δ`` for ``ε = sqrt(ln(2/δ)/(2n))``."""
    return math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def split(delta: float, m: int) -> float:
    """Bonferroni share of ``delta`` for one of ``m`` statistics."""
    return delta / max(int(m), 1)


def ks_stat(x, cdf) -> float:
    x = np.sort(np.asarray(x, dtype=np.float64).ravel())
    n = x.size
    F = np.asarray(cdf(x), dtype=np.float64)
    if not np.all(np.isfinite(F)):
        raise ValueError("reference CDF returned non-finite values")
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - F), np.max(F - (i - 1) / n)))


def ks_check(name, x, cdf, delta, *, inflate: float = 0.0) -> Check:
    """KS distance to ``cdf`` ≤ DKW threshold (+ ``inflate``, a bound on the reference CDF's own
    error). Non-finite draws fail."""
    x = np.asarray(x, dtype=np.float64).ravel()
    thr = dkw(max(x.size, 1), delta) + inflate
    if x.size == 0 or not np.all(np.isfinite(x)):
        return Check(name, math.inf, thr, False)
    s = ks_stat(x, cdf)
    return Check(name, s, thr, s <= thr)


def two_sample_ks(name, x, y, delta) -> Check:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    thr = dkw(x.size, delta / 2) + dkw(y.size, delta / 2)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return Check(name, math.inf, thr, False)
    s = float(stats.ks_2samp(x, y).statistic)
    return Check(name, s, thr, s <= thr)


def eb_bound(g, lo, hi, delta) -> float:
    """Two-sided empirical-Bernstein radius for the mean of i.i.d. ``g ∈ [lo, hi]``."""
    g = np.asarray(g, dtype=np.float64).ravel()
    n = g.size
    L = math.log(4.0 / delta)
    var = float(np.var(g, ddof=1)) if n > 1 else (hi - lo) ** 2
    return math.sqrt(2.0 * var * L / n) + 7.0 * (hi - lo) * L / (3.0 * (n - 1))


def eb_mean_check(name, g, mean, lo, hi, delta, *, inflate: float = 0.0) -> Check:
    """``|ḡ − mean| ≤ eb_bound + inflate`` (``mean`` exact, or known to ``±inflate``)."""
    g = np.asarray(g, dtype=np.float64).ravel()
    thr = eb_bound(g, lo, hi, delta) + inflate if g.size > 1 else math.inf
    if not np.all(np.isfinite(g)) or np.any(g < lo - 1e-12) or np.any(g > hi + 1e-12):
        return Check(name, math.inf, thr, False)
    s = abs(float(np.mean(g)) - float(mean))
    return Check(name, s, thr, s <= thr)


def eb_paired_check(name, g1, g2, lo, hi, delta) -> Check:
    """Equal means of two samples of ``[lo, hi]``-valued statistics, paired by index.

    The pairs ``(g1_i, g2_i)`` must be i.i.d. across ``i`` with equal marginal means under the
    null (independent simulators, or the two ends of one chain started at an exact draw); then
    ``D_i = g1_i − g2_i ∈ [lo − hi, hi − lo]`` are i.i.d. with mean 0 and the empirical-Bernstein
    radius of ``D̄`` is an exact two-sided test.
    """
    d = np.asarray(g1, dtype=np.float64).ravel() - np.asarray(g2, dtype=np.float64).ravel()
    return eb_mean_check(name, d, 0.0, lo - hi, hi - lo, delta)


def bounded(u):
    """``tanh(u)``: the bounded first-moment test function of a standardised value."""
    return np.tanh(np.asarray(u, dtype=np.float64))


def binomial_check(name, hits: int, n: int, p: float, delta: float) -> Check:
    """Exact two-sided binomial test of ``hits ~ Bin(n, p)``; statistic ``−log10(p-value)``,
    threshold ``−log10(δ)``. ``p`` may be extreme (``1e-300``) — pass the rarer branch."""
    hits, n = int(hits), int(n)
    lo_tail = float(stats.binom.cdf(hits, n, p))
    hi_tail = float(stats.binom.sf(hits - 1, n, p))
    pval = min(1.0, 2.0 * min(lo_tail, hi_tail))
    stat = math.inf if pval <= 0 else -math.log10(pval)
    thr = -math.log10(delta)
    return Check(name, stat, thr, stat <= thr)


_CHI2_TANH = {}


def _chi2_tanh(k: int) -> float:
    """``E tanh(X/(2k))`` for ``X ~ χ²_k`` (adaptive quadrature, ~1e-13)."""
    if k not in _CHI2_TANH:
        from scipy import integrate

        val, err = integrate.quad(lambda t: math.tanh(t / (2 * k)) * stats.chi2.pdf(t, k), 0, np.inf,
                                  epsabs=1e-14, epsrel=1e-13, limit=200)
        _CHI2_TANH[k] = val
    return _CHI2_TANH[k]


def whitened_checks(name, eps, delta, *, rng_seed=0) -> list[Check]:
    """Checks that the rows of ``eps`` ``(N, k)`` are i.i.d. ``N(0, I_k)``.

    KS of each coordinate against ``N(0,1)``, of ``‖ε‖²`` against ``χ²_k``, of three unit
    projections (the all-ones direction and two fixed pseudo-random ones, which see the
    off-diagonal covariance), and empirical-Bernstein checks of ``E tanh(ε_j) = 0`` for each
    coordinate, of ``E tanh(ε_j²/2)`` and ``E tanh(‖ε‖²/2k)`` against their χ² values and of
    ``E tanh(ε_i ε_j) = 0`` for every pair (these see small mean, scale and correlation errors
    better than KS). ``delta`` is split over all of them.
    """
    eps = np.asarray(eps, dtype=np.float64)
    if eps.ndim == 1:
        eps = eps[:, None]
    N, k = eps.shape
    m = 3 * k + 5 + k * (k - 1) // 2
    d = delta / m
    out = [ks_check(f"{name}: whitened[{j}] ~ N(0,1)", eps[:, j], special.ndtr, d) for j in range(k)]
    out += [eb_mean_check(f"{name}: E tanh(whitened[{j}]) = 0", np.tanh(eps[:, j]), 0.0, -1.0, 1.0, d)
            for j in range(k)]
    out += [eb_mean_check(f"{name}: E tanh(whitened[{j}]^2/2)", np.tanh(eps[:, j] ** 2 / 2), _chi2_tanh(1), 0.0, 1.0, d)
            for j in range(k)]
    out += [eb_mean_check(f"{name}: E tanh(whitened[{i}]*whitened[{j}]) = 0", np.tanh(eps[:, i] * eps[:, j]), 0.0, -1.0, 1.0, d)
            for i in range(k) for j in range(i + 1, k)]
    r2 = np.sum(eps ** 2, axis=1)
    out.append(ks_check(f"{name}: |whitened|^2 ~ chi2({k})", r2, lambda t: stats.chi2.cdf(t, k), d))
    out.append(eb_mean_check(f"{name}: E tanh(|whitened|^2/(2k))", np.tanh(r2 / (2 * k)), _chi2_tanh(k), 0.0, 1.0, d))
    rng = np.random.default_rng(rng_seed)
    dirs = [np.ones(k)] + [rng.standard_normal(k) for _ in range(2)]
    for i, u in enumerate(dirs):
        u = u / np.linalg.norm(u)
        out.append(ks_check(f"{name}: projection[{i}] ~ N(0,1)", eps @ u, special.ndtr, d))
    return out


def finite_check(name, *arrays) -> Check:
    """Deterministic: every entry finite (statistic = number of non-finite entries)."""
    bad = sum(int(np.size(a) - np.count_nonzero(np.isfinite(np.asarray(a, dtype=np.float64)))) for a in arrays)
    return Check(name, float(bad), 0.0, bad == 0)


def exact_check(name, err: float, tol: float) -> Check:
    """Deterministic: ``err ≤ tol`` (wiring identities, reference cross-checks)."""
    err = float(err)
    return Check(name, err if math.isfinite(err) else math.inf, tol, bool(err <= tol))


def ratio(c: Check) -> float:
    """``statistic / threshold`` (0 for a passed exact check with threshold 0)."""
    if c.threshold > 0:
        return c.statistic / c.threshold
    return 0.0 if c.passed else math.inf


def worst(checks, n=1):
    """The ``n`` checks with the largest ratio."""
    return sorted(checks, key=ratio, reverse=True)[:n]
