"""Calibrated statistical checks for samplers (host NumPy/SciPy; used by tests and validation).

Every check takes an explicit false-failure probability ``delta`` and is exact or conservative
for a correct sampler drawing i.i.d. samples (EVALUATION.md §3.2):

* :func:`dkw_epsilon` — Dvoretzky–Kiefer–Wolfowitz–Massart: ``P(sup|F_N − F| > ε) ≤ 2 e^{−2Nε²}``,
  so ``ε = sqrt(ln(2/δ) / (2N))`` bounds a KS distance with failure probability ``δ`` (exact,
  any ``N``, continuous ``F``).
* :func:`z_threshold` — two-sided normal quantile with Bonferroni over ``m`` statistics
  (asymptotic, CLT): ``z* = Φ⁻¹(1 − δ/(2m))``.
* :func:`binomial_threshold` — Hoeffding bound on a sample proportion: ``|p̂ − p| ≤ sqrt(ln(2/δ)/(2N))``.

Each returns a :class:`Check` (name, statistic, threshold, passed) so suites can print a table
and assert on it.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

# Host NumPy/SciPy on purpose: these are the statistical checks of the test and validation
# suites, run on host copies of draws (KS distances, quantiles, whitening by a host Cholesky),
# reached through the one host door (_backend.host) like every other host-side module.
from ._backend.host import np, scipy_special, scipy_stats

special, stats = scipy_special(), scipy_stats()

__all__ = ["Check", "dkw_epsilon", "z_threshold", "ks_check", "two_sample_ks_check", "mean_check",
           "proportion_check", "whiten", "gaussian_checks", "assert_checks"]


class Check(NamedTuple):
    """One statistical check: ``passed = statistic <= threshold``."""

    name: str
    statistic: float
    threshold: float
    passed: bool

    @property
    def ratio(self) -> float:
        return self.statistic / self.threshold if self.threshold > 0 else math.inf


def dkw_epsilon(n: int, delta: float) -> float:
    """KS distance exceeded with probability at most ``delta`` by ``n`` i.i.d. draws (DKW–Massart)."""
    if n < 1 or not 0 < delta < 1:
        raise ValueError("need n >= 1 and 0 < delta < 1")
    return math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def z_threshold(delta: float, m: int = 1) -> float:
    """``Φ⁻¹(1 − δ/(2m))``: two-sided z threshold, Bonferroni over ``m`` statistics."""
    return float(-special.ndtri(delta / (2.0 * m)))


def ks_statistic(x: np.ndarray, cdf: Callable[[np.ndarray], np.ndarray]) -> float:
    """``sup_t |F_N(t) − F(t)|`` for draws ``x`` against a continuous CDF."""
    x = np.sort(np.asarray(x, dtype=np.float64).ravel())
    n = x.size
    F = np.asarray(cdf(x), dtype=np.float64)
    if not np.all(np.isfinite(F)):
        raise ValueError("reference CDF returned non-finite values")
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - F), np.max(F - (i - 1) / n)))


def ks_check(name, x, cdf, delta) -> Check:
    """KS distance of ``x`` to ``cdf`` against the DKW threshold (false failure ≤ ``delta``)."""
    x = np.asarray(x)
    if not np.all(np.isfinite(x)):
        return Check(name, math.inf, dkw_epsilon(max(x.size, 1), delta), False)
    stat = ks_statistic(x, cdf)
    thr = dkw_epsilon(x.size, delta)
    return Check(name, stat, thr, stat <= thr)


def two_sample_ks_check(name, x, y, delta) -> Check:
    """Two-sample KS distance between independent i.i.d. samples of one law.

    Threshold ``ε_x + ε_y`` with each one-sample DKW bound at ``δ/2`` (triangle inequality
    through the common CDF): false failure ≤ ``delta``.
    """
    x = np.sort(np.asarray(x, dtype=np.float64).ravel())
    y = np.sort(np.asarray(y, dtype=np.float64).ravel())
    thr = dkw_epsilon(x.size, delta / 2) + dkw_epsilon(y.size, delta / 2)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        return Check(name, math.inf, thr, False)
    stat = float(stats.ks_2samp(x, y).statistic)
    return Check(name, stat, thr, stat <= thr)


def mean_check(name, x, mean, sd, z) -> Check:
    """``|x̄ − mean| / (sd/√N) ≤ z`` for i.i.d. draws with known mean and sd (CLT)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    stat = abs(float(np.mean(x)) - mean) / (sd / math.sqrt(x.size))
    return Check(name, stat if math.isfinite(stat) else math.inf, z, stat <= z)


def proportion_check(name, hits, n, p, delta) -> Check:
    """Hoeffding: ``|hits/n − p| ≤ sqrt(ln(2/δ)/(2n))`` (exact bound, false failure ≤ ``delta``)."""
    stat = abs(hits / n - p)
    thr = math.sqrt(math.log(2.0 / delta) / (2.0 * n))
    return Check(name, stat, thr, stat <= thr)


def whiten(draws: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """``ε = R^⊤(w − m)`` with ``P = R R^⊤``: standard normal for exact draws of ``N(m, P^{-1})``.

    ``draws`` ``(N, k)``, ``mean`` ``(k,)``, ``precision`` ``(k, k)``.
    """
    R = np.linalg.cholesky(precision)
    return (np.asarray(draws) - mean) @ R


def gaussian_checks(name, draws, mean, precision, delta) -> list[Check]:
    """Exactness checks of i.i.d. draws against ``N(mean, precision^{-1})``.

    Whitened coordinates ``ε_k`` (KS against ``N(0,1)`` each), ``‖ε‖²`` (KS against ``χ²_k``),
    and a random unit projection; ``delta`` is split evenly (Bonferroni) over ``k + 2`` checks.
    """
    eps = whiten(draws, mean, precision)
    N, k = eps.shape
    m = k + 2
    d = delta / m
    out = [ks_check(f"{name}: whitened[{j}] ~ N(0,1)", eps[:, j], stats.norm.cdf, d) for j in range(k)]
    out.append(ks_check(f"{name}: |whitened|^2 ~ chi2({k})", np.sum(eps ** 2, axis=1),
                        lambda t: stats.chi2.cdf(t, k), d))
    u = np.cos(np.arange(1, k + 1) * 1.2345)
    u /= np.linalg.norm(u)
    out.append(ks_check(f"{name}: projection ~ N(0,1)", eps @ u, stats.norm.cdf, d))
    return out


def assert_checks(checks, *, expect_pass: bool = True) -> None:
    """Assert all checks pass (or, for a broken twin, that at least one fails); message lists them."""
    table = "\n".join(f"  {'ok ' if c.passed else 'BAD'} {c.name}: {c.statistic:.4g} vs {c.threshold:.4g}" for c in checks)
    if expect_pass:
        assert all(c.passed for c in checks), "statistical check failed:\n" + table
    else:
        assert not all(c.passed for c in checks), "broken twin was NOT caught:\n" + table
