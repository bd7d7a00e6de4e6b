"""Tests for blockbayes.diagnostics: R-hat / ESS / MCSE behaviour on known chains, exact
agreement with ArviZ (optional), invariants, backends, summaries and thermalisation helpers.

Statistical checks use fixed seeds, so each is deterministic; the tolerances are chosen from
the estimator's spread measured over 20 seeds (quoted per test) and sit beyond 5 of its
standard deviations, i.e. a correct implementation fails for a new seed with probability
well below 1e-6 under a normal approximation.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockbayes import diagnostics as D

xs = pytest.importorskip("array_api_strict")

HYP = settings(max_examples=25, deadline=None)


def ar1(rng, rho, m, n, p):
    """Stationary AR(1) chains x_t = rho x_{t-1} + e_t, unit innovations, shape (m, n, p)."""
    e = rng.normal(size=(m, n, p))
    x = np.empty_like(e)
    x[:, 0] = e[:, 0] / math.sqrt(1 - rho ** 2)
    for t in range(1, n):
        x[:, t] = rho * x[:, t - 1] + e[:, t]
    return x


# ---------------------------------------------------------------------------------- behaviour

def test_rhat_near_one_for_iid_draws():
    x = np.random.default_rng(0).normal(size=(4, 1000, 10))
    r = np.asarray(D.rhat(x))
    assert r.shape == (10,)
    assert np.all(r < 1.01) and np.all(r > 0.99)


def test_rhat_detects_shifted_chain_and_scale_difference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 500, 3))
    x[0] += 2.0
    assert np.all(np.asarray(D.rhat(x)) > 1.1)
    # a chain with a different scale: the bulk R-hat misses it, the folded (tail) one does not
    y = rng.normal(size=(4, 1000, 2))
    y[1] *= 4.0
    bulk, folded = np.asarray(D.rhat(y, method="bulk")), np.asarray(D.rhat(y, method="folded"))
    assert np.all(bulk < 1.02) and np.all(folded > 1.1)
    np.testing.assert_allclose(D.rhat(y), np.maximum(bulk, folded))


def test_split_rhat_detects_within_chain_trend():
    # every chain drifts the same way: chain means agree, only splitting reveals it
    rng = np.random.default_rng(2)
    trend = np.linspace(0, 3, 400)[None, :, None]
    x = rng.normal(size=(4, 400, 2)) + trend
    assert np.all(np.asarray(D.rhat(x, method="split")) > 1.1)
    assert np.all(np.asarray(D.rhat(x)) > 1.1)
    # the broken twin, R-hat on whole (unsplit) chains, does not see it
    from blockbayes.diagnostics._rhat import _rhat_core

    assert np.all(np.asarray(_rhat_core(np, x)) < 1.02)


def test_ess_close_to_s_for_iid():
    # ESS/S over 20 parameters: measured mean 0.985, sd of the 20-param mean 0.007 (20 seeds)
    x = np.random.default_rng(3).normal(size=(4, 2000, 20))
    s = 8000
    for fn in (D.ess_bulk, D.ess_mean, D.ess_tail):
        r = np.asarray(fn(x)) / s
        assert abs(r.mean() - 1) < 0.06, fn.__name__
        assert np.all(r > 0.7) and np.all(r < 1.3)
    mc = np.asarray(D.mcse_mean(x))
    np.testing.assert_allclose(mc, x.reshape(-1, 20).std(0, ddof=1) / math.sqrt(s), rtol=0.2)


@pytest.mark.parametrize("rho,tol", [(0.5, 0.06), (0.9, 0.15), (-0.3, 0.06)])
def test_ess_of_ar1_matches_analytic(rho, tol):
    # analytic ESS = S (1 - rho)/(1 + rho); sd of the 20-parameter mean of ESS/ESS_true over 20
    # seeds: 0.013 (rho=0.5), 0.028 (0.9), 0.012 (-0.3)
    x = ar1(np.random.default_rng(4), rho, 4, 2000, 20)
    true = 8000 * (1 - rho) / (1 + rho)
    for fn in (D.ess_bulk, D.ess_mean):
        r = np.asarray(fn(x)) / true
        assert abs(r.mean() - 1) < tol, (fn.__name__, r.mean())


def test_ess_antithetic_cap():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(2, 600, 3))
    a[:, 1::2] = -a[:, ::2]
    s = 1200
    e = np.asarray(D.ess_mean(a))
    assert np.all(e > s) and np.all(e <= s * math.log10(s) + 1e-9)


def test_constant_parameter():
    x = np.ones((3, 50, 2))
    np.testing.assert_array_equal(D.ess_bulk(x), [150.0, 150.0])
    np.testing.assert_array_equal(D.ess_tail(x), [150.0, 150.0])
    assert np.all(np.isnan(np.asarray(D.rhat(x))))


def test_autocovariance_against_direct_sum():
    x = np.random.default_rng(6).normal(size=(3, 37))
    c = np.asarray(D.autocovariance(x, axis=-1))
    xc = x - x.mean(-1, keepdims=True)
    ref = np.stack([(xc[:, : 37 - t] * xc[:, t:]).sum(-1) / 37 for t in range(37)], -1)
    np.testing.assert_allclose(c, ref, atol=1e-13)


def test_mcse_quantile_reasonable():
    x = np.random.default_rng(7).normal(size=(4, 1000, 2))
    m = np.asarray(D.mcse_quantile(x, 0.5))
    # iid: MCSE of the median ~ sqrt(pi/2) / sqrt(S)
    np.testing.assert_allclose(m, math.sqrt(math.pi / 2) / math.sqrt(4000), rtol=0.35)


# ---------------------------------------------------------------------------------- ArviZ

def _arviz_cases():
    rng = np.random.default_rng(10)
    yield "iid", rng.normal(size=(4, 300, 5))
    yield "ar1", ar1(rng, 0.9, 4, 400, 4)
    yield "random_walk", np.cumsum(rng.normal(size=(3, 301, 4)), axis=1)
    y = rng.normal(size=(4, 200, 3))
    y[0] += 2
    yield "shifted", y
    yield "discrete", rng.integers(0, 3, size=(4, 100, 5)).astype(float)
    a = rng.normal(size=(2, 600, 3))
    a[:, 1::2] = -a[:, ::2]
    yield "antithetic", a
    yield "tiny", rng.normal(size=(2, 5, 3))
    yield "heavy_tail", rng.standard_cauchy(size=(4, 500, 3))


def test_cross_check_against_arviz_stats():
    pytest.importorskip("arviz_stats")
    from arviz_stats.base import array_stats

    worst = {}
    for name, x in _arviz_cases():
        xa = np.moveaxis(x, (0, 1), (-2, -1))  # arviz: (*params, chain, draw)
        pairs = {
            "rhat": (D.rhat(x), array_stats.rhat(xa, method="rank")),
            "ess_bulk": (D.ess_bulk(x), array_stats.ess(xa, method="bulk")),
            "ess_tail": (D.ess_tail(x), array_stats.ess(xa, method="tail", prob=(0.05, 0.95))),
            "ess_mean": (D.ess_mean(x), array_stats.ess(xa, method="mean")),
            "mcse_mean": (D.mcse_mean(x), array_stats.mcse(xa, method="mean")),
            "mcse_q90": (D.mcse_quantile(x, 0.9), array_stats.mcse(xa, method="quantile", prob=0.9)),
        }
        for key, (ours, ref) in pairs.items():
            ours, ref = np.asarray(ours), np.asarray(ref)
            assert ours.shape == ref.shape
            scale = np.where(ref == 0, 1.0, np.abs(ref))
            rel = float(np.max(np.abs(ours - ref) / scale))
            worst[key] = max(worst.get(key, 0.0), rel)
            assert rel < 1e-12, (name, key, rel)
    print("max relative difference vs arviz-stats:", worst)


# ---------------------------------------------------------------------------------- invariants

@given(st.integers(0, 2 ** 32 - 1), st.integers(2, 4), st.integers(4, 60))
@HYP
def test_rank_diagnostics_invariant_under_monotone_transform(seed, m, n):
    x = np.random.default_rng(seed).normal(size=(m, n, 2))
    np.testing.assert_allclose(D.rhat(np.exp(x), method="bulk"), D.rhat(x, method="bulk"), rtol=1e-12)
    np.testing.assert_allclose(D.ess_bulk(3 * x ** 3 + 1), D.ess_bulk(x), rtol=1e-12)


@given(st.integers(0, 2 ** 32 - 1), st.integers(2, 5), st.integers(4, 60))
@HYP
def test_chain_permutation_invariance(seed, m, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, n, 2)) + rng.normal(size=(m, 1, 1))
    perm = rng.permutation(m)
    for fn in (D.rhat, D.ess_bulk, D.ess_tail, D.ess_mean, D.mcse_mean):
        np.testing.assert_allclose(fn(x[perm]), fn(x), rtol=1e-10)


def test_vectorised_over_param_shape():
    x = np.random.default_rng(11).normal(size=(3, 80, 2, 3)).cumsum(1)
    out = np.asarray(D.ess_bulk(x))
    assert out.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert float(D.ess_bulk(x[:, :, i, j])) == pytest.approx(out[i, j], rel=1e-12)
    assert np.asarray(D.rhat(x[..., 0, 0])).shape == ()


# ---------------------------------------------------------------------------------- backends

def _np(a):
    return np.asarray(a._array) if hasattr(a, "_array") else np.asarray(a)


@pytest.mark.parametrize("name", ["rhat", "ess_bulk", "ess_tail", "ess_mean", "mcse_mean", "rank_normalize",
                                  "split_chains", "autocovariance"])
def test_numpy_and_array_api_strict_agree(name):
    x = np.random.default_rng(12).normal(size=(3, 41, 2)).cumsum(1)
    fn = getattr(D, name)
    ref = fn(x)
    out = fn(xs.asarray(x))
    assert type(out).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(_np(out), _np(ref), rtol=1e-12, atol=1e-13)


def test_mcse_quantile_strict_and_float32():
    x = np.random.default_rng(13).normal(size=(3, 60, 2))
    np.testing.assert_allclose(_np(D.mcse_quantile(xs.asarray(x), 0.2)), D.mcse_quantile(x, 0.2), rtol=1e-12)
    out = D.ess_bulk(x.astype(np.float32))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, D.ess_bulk(x), rtol=1e-3)
    assert D.rhat(x.astype(np.float32)).dtype == np.float32
    assert D.ess_bulk(np.ones((2, 10), dtype=np.int32)).dtype == np.float64


# ---------------------------------------------------------------------------------- validation

def test_validation_errors():
    x = np.random.default_rng(14).normal(size=(2, 10))
    with pytest.raises(ValueError, match="at least 2 chains"):
        D.rhat(x[:1])
    with pytest.raises(ValueError, match="4 draws"):
        D.ess_bulk(x[:, :3])
    with pytest.raises(ValueError, match="chains, draws"):
        D.ess_bulk(x[0])
    bad = x.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        D.rhat(bad)
    bad[0, 3] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        D.ess_mean(bad)
    with pytest.raises(ValueError, match="method"):
        D.rhat(x, method="nope")
    with pytest.raises(ValueError, match="prob"):
        D.ess_tail(x, prob=(0.1, 1.5))
    # one chain is fine for ESS
    assert np.isfinite(float(D.ess_bulk(x[:1])))


# ---------------------------------------------------------------------------------- summary

def test_summary_table_and_text():
    rng = np.random.default_rng(15)
    draws = {"w": rng.normal(size=(4, 200, 2, 2)), "sigma": np.exp(rng.normal(size=(4, 200)))}
    tab = D.summary(draws)
    assert tab["name"] == ["w[0, 0]", "w[0, 1]", "w[1, 0]", "w[1, 1]", "sigma"]
    for col in ("mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "rhat"):
        assert np.asarray(tab[col]).shape == (5,)
    np.testing.assert_allclose(tab["ess_bulk"][:4], np.asarray(D.ess_bulk(draws["w"])).ravel())
    np.testing.assert_allclose(tab["rhat"][4], D.rhat(draws["sigma"]))
    np.testing.assert_allclose(tab["mcse_mean"][4], D.mcse_mean(draws["sigma"]))
    np.testing.assert_allclose(tab["ess_tail"][:4], np.asarray(D.ess_tail(draws["w"])).ravel())
    np.testing.assert_allclose(tab["mean"][4], draws["sigma"].mean())
    text = D.format_summary(tab)
    lines = text.splitlines()
    assert len(lines) == 6 and "ess_bulk" in lines[0] and lines[5].startswith("sigma")
    one = D.summary(rng.normal(size=(1, 50)))
    assert one["name"] == ["x"] and np.isnan(one["rhat"][0])
    assert "nan" in D.format_summary(one)
    strict = D.summary({"a": xs.asarray(draws["sigma"])})
    np.testing.assert_allclose(_np(strict["ess_bulk"]), tab["ess_bulk"][4:], rtol=1e-12)


# ---------------------------------------------------------------------------------- thermalisation

def test_stationary_band_matches_numpy_quantile():
    t = np.random.default_rng(16).normal(size=(3, 501))
    lo, hi = D.stationary_band(t)
    assert float(lo) == np.quantile(t, 0.05) and float(hi) == np.quantile(t, 0.95)
    lo, hi = D.stationary_band(t, q=(0.1, 0.7), axis=-1)
    np.testing.assert_array_equal(lo, np.quantile(t, 0.1, axis=-1))
    np.testing.assert_array_equal(hi, np.quantile(t, 0.7, axis=-1))


def test_thermalisation_time_definition():
    trace = np.array([9.0, 8.0, 1.5, 1.2, 5.0, 1.1, 1.3, 1.4, 1.0, 1.2])
    # inside [1, 2]: indices 2, 3, 5, 6, 7, 8, 9
    assert int(D.thermalisation_time(trace, 1.0, 2.0, 1)) == 2
    assert int(D.thermalisation_time(trace, 1.0, 2.0, 2)) == 2
    assert int(D.thermalisation_time(trace, 1.0, 2.0, 3)) == 5
    assert int(D.thermalisation_time(trace, 1.0, 2.0, 5)) == 5
    assert int(D.thermalisation_time(trace, 1.0, 2.0, 6)) == -1
    assert int(D.thermalisation_time(trace, 1.0, 2.0, 3, min_inside=2 / 3)) == 1  # [8, 1.5, 1.2]
    # batched over chains, per-chain bands
    tr = np.stack([trace, trace[::-1]])
    out = D.thermalisation_time(tr, np.array([1.0, 0.0]), np.array([2.0, 10.0]), 3)
    np.testing.assert_array_equal(out, [5, 0])
    assert out.dtype == np.int64
    out_s = D.thermalisation_time(xs.asarray(tr), 1.0, 2.0, 3)
    np.testing.assert_array_equal(_np(out_s), [5, 0])  # reversed trace starts inside
    with pytest.raises(ValueError, match="window"):
        D.thermalisation_time(trace, 1.0, 2.0, 11)


def test_thermalisation_of_cold_chain_against_informed_band():
    # an exponentially relaxing "test MSE" trace enters the informed chain's band
    rng = np.random.default_rng(17)
    informed = 1.0 + 0.05 * rng.normal(size=2000)
    lo, hi = D.stationary_band(informed, q=(0.001, 0.999))
    cold = 1.0 + 10 * np.exp(-np.arange(400) / 20.0) + 0.05 * rng.normal(size=400)
    tau = int(D.thermalisation_time(cold, lo, hi, 50))
    # deterministic part below the band half-width (~0.15) after t = 20 log(10/0.15) ~ 84
    assert 60 <= tau <= 130


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["rhat", "ess_bulk", "ess_tail", "ess_mean", "mcse_mean", "mcse_quantile"])
def test_cupy_agrees_with_numpy(name):
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # CUDA driver missing
        pytest.skip(f"no usable CUDA device ({exc})")
    x = np.random.default_rng(18).normal(size=(4, 300, 3)).cumsum(1)
    fn = getattr(D, name)
    args = (0.3,) if name == "mcse_quantile" else ()
    out = fn(cp.asarray(x), *args)
    assert isinstance(out, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(out), fn(x, *args), rtol=1e-9)
