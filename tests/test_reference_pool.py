"""``reference.pooled_predictive``: the equal-weight mixture of several sampler runs' predictives.

Pure NumPy (no numpyro needed). Deterministic: every comparison is against a hand-written loop over
draws at rtol 1e-10, so the false-failure probability is 0 (floating-point rounding is ~1e-15).
Each check is also run on a deliberately broken twin to show that it fails there.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from blockbayes.evaluate import reference


def _runs(seed=0, shapes=((2, 3), (2, 3), (1, 6)), n=4):
    rng = np.random.default_rng(seed)
    F = [rng.normal(size=(*s, n)) for s in shapes]
    d = [rng.uniform(0.05, 0.5, size=s) for s in shapes]
    y = rng.normal(size=n)
    return F, d, y


def _hand(F_runs, d_runs, y):
    """Loop over runs, draws and points: p_i = (1/R) Σ_r (1/S_r) Σ_s N(y_i; F_rs(x_i), Δ_rs)."""
    R, n = len(F_runs), len(y)
    mean, lpd = np.zeros(n), np.zeros(n)
    for i in range(n):
        p, m = 0.0, 0.0
        for F, d in zip(F_runs, d_runs):
            f, v = F.reshape(-1, n)[:, i], d.reshape(-1)
            p += sum(math.exp(-(y[i] - fs) ** 2 / (2 * vs)) / math.sqrt(2 * math.pi * vs) for fs, vs in zip(f, v)) / len(f) / R
            m += float(np.mean(f)) / R
        mean[i], lpd[i] = m, math.log(p)
    return mean, lpd


def _matches_hand(fn, F, d, y) -> bool:
    pp = fn(F, d, y)
    m, l = _hand(F, d, y)
    return bool(np.allclose(pp.mean, m, rtol=1e-10, atol=0) and np.allclose(pp.lpd, l, rtol=1e-10, atol=0))


def _broken_concatenated(F_runs, d_runs, y=None):
    """Broken twin: one mixture over all draws of all runs (weights runs by their draw counts)."""
    F = np.concatenate([np.asarray(f).reshape(-1, np.shape(f)[-1]) for f in F_runs])
    d = np.concatenate([np.asarray(v).reshape(-1) for v in d_runs])
    return reference.pooled_predictive([F], [d], y)


def _broken_log_average(F_runs, d_runs, y=None):
    """Broken twin: runs pooled by averaging their log densities (a geometric, not arithmetic, mean)."""
    pp = reference.pooled_predictive(F_runs, d_runs, y)
    return pp._replace(lpd=pp.run_lpd.mean(axis=0))


def test_pooled_predictive_equals_the_hand_computed_mixture():
    # equal draw counts (6 per run, differently split into chains): also the mixture over all draws
    F, d, y = _runs()
    assert _matches_hand(reference.pooled_predictive, F, d, y)
    assert _matches_hand(_broken_concatenated, F, d, y)        # equal counts: the two readings agree
    assert not _matches_hand(_broken_log_average, F, d, y)
    # unequal draw counts: each run keeps weight 1/R, which the all-draws mixture does not
    F2, d2, y2 = _runs(seed=1, shapes=((2, 3), (4, 5)))
    assert _matches_hand(reference.pooled_predictive, F2, d2, y2)
    assert not _matches_hand(_broken_concatenated, F2, d2, y2)
    # one run, (draws, n) layout: the single run's own mixture; per-run fields line up
    pp = reference.pooled_predictive([F[0][0]], [d[0][0]], y)
    m, l = _hand([F[0][0]], [d[0][0]], y)
    np.testing.assert_allclose(pp.lpd, l, rtol=1e-10)
    np.testing.assert_allclose(pp.run_lpd[0], l, rtol=1e-10)
    np.testing.assert_allclose(pp.run_mean[0], m, rtol=1e-10)


def test_pooled_predictive_is_stable_far_from_the_draws():
    # y 60 sd from every draw: the densities underflow to 0 in a plain sum, log-sum-exp does not
    F = [np.zeros((2, 3, 1)), np.full((2, 3, 1), 0.5)]
    d = [np.full((2, 3), 0.01), np.full((2, 3), 0.02)]
    y = np.array([6.0])
    pp = reference.pooled_predictive(F, d, y)
    l1 = -0.5 * math.log(2 * math.pi * 0.01) - 36.0 / 0.02
    l2 = -0.5 * math.log(2 * math.pi * 0.02) - 5.5 ** 2 / 0.04
    hi = max(l1, l2)
    want = hi + math.log(0.5 * math.exp(l1 - hi) + 0.5 * math.exp(l2 - hi))
    assert np.isfinite(pp.lpd[0])
    np.testing.assert_allclose(pp.lpd[0], want, rtol=1e-12)
    assert reference.pooled_predictive(F, d).lpd is None


def test_pooled_predictive_rejects_bad_input():
    F, d, y = _runs()
    with pytest.raises(ValueError, match="one delta_y per run"):
        reference.pooled_predictive(F, d[:2], y)
    with pytest.raises(ValueError, match="leading"):
        reference.pooled_predictive([F[0]], [d[0][:, :2]], y)
    with pytest.raises(ValueError, match="same 4 points"):
        reference.pooled_predictive([F[0], F[1][..., :3]], d[:2], y)
    with pytest.raises(ValueError, match="positive"):
        reference.pooled_predictive([F[0]], [-d[0]], y)
    with pytest.raises(ValueError, match="y must have 4"):
        reference.pooled_predictive(F, d, y[:3])
