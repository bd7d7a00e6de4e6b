"""Tests for blockbayes.metrics: oracles (scikit-learn, SciPy, closed forms), invariants
(Hypothesis), backend agreement (NumPy vs array-api-strict) and input validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

from blockbayes import metrics as M

sk = pytest.importorskip("sklearn.metrics")
xs = pytest.importorskip("array_api_strict")

HYP = settings(max_examples=30, deadline=None)


def softmax(z):
    return special.softmax(z, axis=-1)


def f(x):
    return float(np.asarray(x._array if hasattr(x, "_array") else x))


@pytest.fixture
def clf():
    rng = np.random.default_rng(0)
    n, k, s = 300, 5, 6
    logits = rng.normal(size=(s, n, k)) * 2.5
    probs = softmax(logits)
    y = rng.integers(0, k, n)
    return logits, probs, probs.mean(0), y


# ---------------------------------------------------------------------------------- oracles

def test_classification_against_sklearn(clf):
    logits, probs, pbar, y = clf
    k = pbar.shape[1]
    assert f(M.accuracy(pbar, y)) == pytest.approx(sk.accuracy_score(y, pbar.argmax(1)), abs=1e-15)
    assert f(M.nll(pbar, y)) == pytest.approx(sk.log_loss(y, pbar, labels=range(k)), rel=1e-12)
    assert f(M.nll_from_logits(logits, y)) == pytest.approx(sk.log_loss(y, pbar, labels=range(k)), rel=1e-12)
    assert f(M.brier(pbar, y)) == pytest.approx(
        sk.brier_score_loss(y, pbar, labels=range(k), scale_by_half=False), rel=1e-12)


def test_binary_conventions_against_sklearn():
    rng = np.random.default_rng(1)
    p = rng.uniform(0.01, 0.99, 200)
    y = rng.integers(0, 2, 200)
    assert f(M.brier(p, y)) == pytest.approx(sk.brier_score_loss(y, p), rel=1e-12)
    two = np.stack([1 - p, p], 1)
    assert f(M.brier(two, y)) == pytest.approx(2 * f(M.brier(p, y)), rel=1e-12)
    assert f(M.nll(p, y)) == pytest.approx(sk.log_loss(y, p), rel=1e-12)
    assert f(M.accuracy(p, y)) == pytest.approx(sk.accuracy_score(y, (p > 0.5).astype(int)))


def test_nll_from_logits_single_model_against_scipy(clf):
    logits, _, _, y = clf
    z = logits[0]
    ref = np.mean(special.logsumexp(z, axis=1) - z[np.arange(len(y)), y])
    assert f(M.nll_from_logits(z, y)) == pytest.approx(ref, rel=1e-13)
    per = M.nll_from_logits(z, y, reduction="none")
    assert per.shape == (len(y),)
    assert f(M.nll_from_logits(z, y, reduction="sum")) == pytest.approx(ref * len(y), rel=1e-12)


def test_bma_log_probs_matches_log_mean_probs(clf):
    logits, probs, pbar, _ = clf
    np.testing.assert_allclose(M.bma_log_probs(logits), np.log(pbar), rtol=1e-12)
    np.testing.assert_allclose(M.bma_probs(probs), pbar, rtol=1e-14)


def _guo_ece(probs, labels, n_bins):
    """Straight port of gpleiss/temperature_scaling _ECELoss (loops, (lower, upper] bins)."""
    conf = probs.max(1)
    acc = probs.argmax(1) == labels
    edges = np.linspace(0, 1, n_bins + 1)
    e, gaps = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inb = (conf > lo) & (conf <= hi)
        if inb.mean() > 0:
            gap = abs(conf[inb].mean() - acc[inb].mean())
            e += gap * inb.mean()
            gaps.append(gap)
    return e, max(gaps)


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_mce_against_loop_reference(clf, n_bins):
    _, _, pbar, y = clf
    e, m = _guo_ece(pbar, y, n_bins)
    assert f(M.ece(pbar, y, n_bins)) == pytest.approx(e, abs=1e-13)
    assert f(M.mce(pbar, y, n_bins)) == pytest.approx(m, abs=1e-13)


def test_ece_bin_edges_are_lower_open_upper_closed():
    # confidences exactly on edges 0.2 and 0.6 (M = 5) belong to the lower bin
    p = np.array([[0.2, 0.2, 0.2, 0.2, 0.2], [0.6, 0.4, 0, 0, 0], [0.61, 0.39, 0, 0, 0]])
    rd = M.reliability_diagram(p, np.array([0, 0, 1]), n_bins=5)
    np.testing.assert_array_equal(rd["count"], [1, 0, 1, 1, 0])
    np.testing.assert_allclose(rd["confidence"][[0, 2, 3]], [0.2, 0.6, 0.61])
    np.testing.assert_allclose(rd["accuracy"][[0, 2, 3]], [1.0, 1.0, 0.0])
    assert np.isnan(rd["accuracy"][1]) and np.isnan(rd["confidence"][4])
    np.testing.assert_allclose(rd["bin_upper"], [0.2, 0.4, 0.6, 0.8, 1.0])


def test_regression_log_likelihoods_against_scipy():
    rng = np.random.default_rng(2)
    s, n, d = 8, 40, 3
    y = rng.normal(size=(n, d))
    mu = rng.normal(size=(s, n, d))
    v = rng.uniform(0.3, 2.0, size=(s, 1, 1))
    lp = stats.norm.logpdf(y, mu, np.sqrt(v)).sum(-1)
    ref = np.mean(special.logsumexp(lp, axis=0) - np.log(s))
    assert f(M.log_predictive_gaussian_mixture(y, mu, v)) == pytest.approx(ref, rel=1e-13)
    sc = np.array([2.0, 0.5, 3.0])
    assert f(M.log_predictive_gaussian_mixture(y, mu, v, y_scale=sc)) == pytest.approx(
        ref - np.log(sc).sum(), rel=1e-13)
    # single Gaussian, per-point sum over outputs, y_scale as a scalar
    ref1 = stats.norm.logpdf(y, mu[0], np.sqrt(v[0])).sum(-1).mean() - d * np.log(2.0)
    assert f(M.gaussian_log_likelihood(y, mu[0], v[0], y_scale=2.0)) == pytest.approx(ref1, rel=1e-13)
    # Gal's homoscedastic formula (EVALUATION.md §1.1) with T stochastic passes and precision tau
    tau, yy, preds = 4.0, y[:, 0], mu[:, :, 0]
    gal = np.mean(special.logsumexp(-tau / 2 * (yy - preds) ** 2, axis=0) - np.log(s)
                  - 0.5 * np.log(2 * np.pi) + 0.5 * np.log(tau))
    assert f(M.log_predictive_gaussian_mixture(yy, preds, 1 / tau)) == pytest.approx(gal, rel=1e-13)


def test_rmse():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    m = np.array([1.5, 2.0, 2.0, 4.0])
    assert f(M.rmse(y, m)) == pytest.approx(math.sqrt((0.25 + 1) / 4))
    assert f(M.rmse(y, m, y_scale=3.0)) == pytest.approx(3 * math.sqrt((0.25 + 1) / 4))


@pytest.mark.parametrize("mu,sd,y", [(0.0, 1.0, 0.3), (1.0, 0.2, -0.5), (-2.0, 3.0, 4.0)])
def test_crps_gaussian_against_numerical_integration(mu, sd, y):
    cdf = lambda x: stats.norm.cdf(x, mu, sd)  # noqa: E731
    lo, hi = mu - 40 * sd, mu + 40 * sd
    a = integrate.quad(lambda x: cdf(x) ** 2, lo, y, epsabs=1e-13, limit=200)[0]
    b = integrate.quad(lambda x: (1 - cdf(x)) ** 2, y, hi, epsabs=1e-13, limit=200)[0]
    assert f(M.crps_gaussian(np.array([y]), np.array([mu]), sd ** 2)) == pytest.approx(a + b, rel=1e-8)


@given(s=st.integers(1, 12), n=st.integers(1, 5), seed=st.integers(0, 2 ** 32 - 1),
       discrete=st.booleans())
@HYP
def test_crps_ensemble_against_bruteforce(s, n, seed, discrete):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(s, n))
    y = rng.normal(size=n)
    if discrete:  # ties among members and with y
        x, y = np.round(x), np.round(y)
    t1 = np.abs(x - y).mean(0)
    pair = np.abs(x[:, None] - x[None]).sum((0, 1))
    np.testing.assert_allclose(M.crps_ensemble(y, x, reduction="none"), t1 - pair / (2 * s * s),
                               rtol=1e-12, atol=1e-12)
    if s >= 2:
        np.testing.assert_allclose(M.crps_ensemble(y, x, fair=True, reduction="none"),
                                   t1 - pair / (2 * s * (s - 1)), rtol=1e-12, atol=1e-12)


def test_crps_ensemble_converges_to_gaussian():
    rng = np.random.default_rng(3)
    y = np.array([0.3, -1.0, 2.0])
    x = rng.normal(size=(20000, 3))
    assert f(M.crps_ensemble(y, x, fair=True)) == pytest.approx(f(M.crps_gaussian(y, 0 * y, 1.0)), abs=0.01)


def test_pit_and_coverage():
    rng = np.random.default_rng(4)
    n = 20000
    mu, sd = rng.normal(size=n), rng.uniform(0.5, 2, n)
    y = mu + sd * rng.normal(size=n)
    u = M.pit_gaussian(y, mu, sd ** 2)
    np.testing.assert_allclose(u, stats.norm.cdf(y, mu, sd), rtol=1e-12)
    levels = (0.5, 0.8, 0.95)
    cov = M.coverage_gaussian(y, mu, sd ** 2, levels)
    np.testing.assert_allclose(cov, M.interval_coverage(u, levels), atol=1e-12)
    # binomial sd <= 0.0036 at n = 20000: 0.02 is > 5 sd (fixed seed)
    np.testing.assert_allclose(cov, levels, atol=0.02)
    # mixture with identical components equals the single Gaussian
    means = np.stack([mu, mu, mu])
    np.testing.assert_allclose(M.pit_gaussian_mixture(y, means, sd ** 2), u, rtol=1e-12)
    np.testing.assert_allclose(M.coverage_gaussian_mixture(y, means, sd ** 2, levels), cov)
    # an overconfident predictive under-covers
    assert np.all(np.asarray(M.coverage_gaussian(y, mu, 0.25 * sd ** 2, levels)) < np.asarray(levels) - 0.1)


def test_ood_against_sklearn_fixed():
    rng = np.random.default_rng(5)
    si = np.round(rng.normal(size=300), 1)
    so = np.round(rng.normal(0.8, 1, size=200), 1)
    yt = np.r_[np.zeros(300), np.ones(200)]
    sc = np.r_[si, so]
    assert f(M.auroc(si, so)) == pytest.approx(sk.roc_auc_score(yt, sc), rel=1e-13)
    assert f(M.aupr(si, so)) == pytest.approx(sk.average_precision_score(yt, sc), rel=1e-12)
    assert f(M.aupr(si, so, positive="in")) == pytest.approx(sk.average_precision_score(1 - yt, -sc), rel=1e-12)
    fpr, tpr, _ = sk.roc_curve(yt, sc, drop_intermediate=False)
    assert f(M.fpr_at_95_tpr(si, so)) == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-15)


score_lists = st.lists(st.integers(-20, 20), min_size=1, max_size=40)


@given(a=score_lists, b=score_lists, level=st.sampled_from([0.5, 0.9, 0.95, 1.0]))
@HYP
def test_ood_against_sklearn_with_ties(a, b, level):
    si, so = np.array(a) / 4.0, np.array(b) / 4.0
    yt = np.r_[np.zeros(len(a)), np.ones(len(b))]
    sc = np.r_[si, so]
    assert f(M.auroc(si, so)) == pytest.approx(sk.roc_auc_score(yt, sc), abs=1e-12)
    assert f(M.aupr(si, so)) == pytest.approx(sk.average_precision_score(yt, sc), abs=1e-12)
    fpr, tpr, _ = sk.roc_curve(yt, sc, drop_intermediate=False)
    assert f(M.fpr_at_tpr(si, so, level)) == pytest.approx(fpr[np.argmax(tpr >= level)], abs=1e-15)


@given(a=score_lists, b=score_lists)
@HYP
def test_auroc_monotone_invariance_and_symmetry(a, b):
    si, so = np.array(a) / 4.0, np.array(b) / 4.0
    base = f(M.auroc(si, so))
    assert f(M.auroc(np.exp(si / 10), np.exp(so / 10))) == pytest.approx(base, abs=1e-14)
    assert f(M.auroc(3 * si - 7, 3 * so - 7)) == pytest.approx(base, abs=1e-14)
    assert f(M.auroc(-si, -so)) == pytest.approx(1 - base, abs=1e-14)
    assert 0.0 <= base <= 1.0


# ---------------------------------------------------------------------------------- invariants

def _probs_strategy():
    return st.tuples(st.integers(1, 60), st.integers(2, 6), st.integers(0, 2 ** 32 - 1),
                     st.floats(0.1, 20.0))


@given(_probs_strategy(), st.integers(1, 20))
@HYP
def test_ece_and_brier_ranges(params, n_bins):
    n, k, seed, scale = params
    rng = np.random.default_rng(seed)
    p = softmax(rng.normal(size=(n, k)) * scale)
    y = rng.integers(0, k, n)
    e, m = f(M.ece(p, y, n_bins)), f(M.mce(p, y, n_bins))
    assert 0.0 <= e <= m + 1e-12 <= 1.0 + 1e-12
    b = f(M.brier(p, y))
    assert 0.0 <= b <= 2.0
    rd = M.reliability_diagram(p, y, n_bins)
    assert int(np.sum(rd["count"])) == n
    tv = f(M.total_variation(p, softmax(rng.normal(size=(n, k)))))
    assert 0.0 <= tv <= 1.0


def test_brier_extremes():
    y = np.array([0, 1])
    assert f(M.brier(np.array([[0.0, 1.0], [1.0, 0.0]]), y)) == 2.0
    assert f(M.brier(np.array([[1.0, 0.0], [0.0, 1.0]]), y)) == 0.0


@given(_probs_strategy(), st.integers(1, 6))
@HYP
def test_bma_of_identical_samples_is_single_model(params, s):
    n, k, seed, scale = params
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    y = rng.integers(0, k, n)
    zs = np.broadcast_to(z, (s, n, k))
    np.testing.assert_allclose(M.bma_log_probs(zs), special.log_softmax(z, -1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(M.bma_probs(softmax(zs)), softmax(z), rtol=1e-12, atol=1e-15)
    assert f(M.nll_from_logits(zs, y)) == pytest.approx(f(M.nll_from_logits(z, y)), rel=1e-12, abs=1e-12)
    yr = rng.normal(size=n)
    mu = rng.normal(size=n)
    assert f(M.log_predictive_gaussian_mixture(yr, np.broadcast_to(mu, (s, n)), 0.5)) == pytest.approx(
        f(M.gaussian_log_likelihood(yr, mu, 0.5)), rel=1e-12)
    assert np.all(np.asarray(M.mutual_information(softmax(zs))) <= 1e-12)


@given(st.integers(2, 8), st.integers(1, 20), st.integers(0, 2 ** 32 - 1))
@HYP
def test_permutation_invariance_over_samples(s, n, seed):
    rng = np.random.default_rng(seed)
    perm = rng.permutation(s)
    z = rng.normal(size=(s, n, 3)) * 3
    np.testing.assert_allclose(M.bma_log_probs(z[perm]), M.bma_log_probs(z), rtol=1e-12, atol=1e-12)
    y = rng.normal(size=n)
    mu = rng.normal(size=(s, n))
    v = rng.uniform(0.2, 2, size=(s, 1))
    assert f(M.log_predictive_gaussian_mixture(y, mu[perm], v[perm])) == pytest.approx(
        f(M.log_predictive_gaussian_mixture(y, mu, v)), rel=1e-12)
    assert f(M.crps_ensemble(y, mu[perm])) == pytest.approx(f(M.crps_ensemble(y, mu)), rel=1e-12, abs=1e-14)
    np.testing.assert_allclose(M.pit_gaussian_mixture(y, mu[perm], v[perm]),
                               M.pit_gaussian_mixture(y, mu, v), rtol=1e-12)


def test_stability_at_extreme_logits():
    z = np.array([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4], [-1e300, 0.0, 5.0]])
    y = np.array([1, 0, 0])
    per = np.asarray(M.nll_from_logits(z, y, reduction="none"))
    assert np.all(np.isfinite(per))
    np.testing.assert_allclose(per, [1e4, 1e4 + math.log(2), 1e300], rtol=1e-12)
    zs = np.stack([z, z - 5e3])  # shifting logits of one sample changes nothing
    np.testing.assert_allclose(M.nll_from_logits(zs, y, reduction="none"), per, rtol=1e-12)
    # -inf logits (masked classes) are allowed
    zm = np.array([[0.0, -np.inf], [-np.inf, 2.0]])
    np.testing.assert_allclose(M.nll_from_logits(zm, np.array([0, 1]), reduction="none"), [0.0, 0.0])
    # BMA over samples with wildly different scales
    lp = np.asarray(M.bma_log_probs(np.stack([z, -z])))
    assert np.all(np.isfinite(lp[:, 1])) and np.allclose(special.logsumexp(lp, axis=1), 0.0)
    # mixture log density far in the tail (every component underflows in linear space)
    v = M.log_predictive_gaussian_mixture(np.array([1e3]), np.array([[0.0], [1.0]]), 1e-2)
    assert np.isfinite(f(v)) and f(v) < -4e7
    # probabilities that are exactly 0 give a finite (clipped) NLL
    assert np.isfinite(f(M.nll(np.array([[1.0, 0.0]]), np.array([1]))))


def test_agreement_and_tv_values():
    p = np.array([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5]])
    q = np.array([[0.6, 0.4], [0.9, 0.1], [0.5, 0.5]])
    assert f(M.agreement(p, q)) == pytest.approx(2 / 3)
    assert f(M.total_variation(p, q)) == pytest.approx((0.1 + 0.5 + 0.0) / 3)
    assert f(M.agreement(p, p)) == 1.0 and f(M.total_variation(p, p)) == 0.0


def test_entropy_and_mutual_information():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(M.predictive_entropy(p), [math.log(2), 0.0])
    # two confident but disagreeing members: MI = log 2
    ps = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    np.testing.assert_allclose(M.mutual_information(ps), [math.log(2)])


# ---------------------------------------------------------------------------------- backends

def _strict(a):
    if isinstance(a, np.ndarray):
        return xs.asarray(a)
    return a


def _np(a):
    if hasattr(a, "_array"):
        return np.asarray(a._array)
    if isinstance(a, dict):
        return {k: _np(v) for k, v in a.items()}
    return np.asarray(a)


def _cases():
    rng = np.random.default_rng(7)
    n, k, s = 50, 4, 5
    logits = rng.normal(size=(s, n, k)) * 2
    probs = softmax(logits)
    pbar = probs.mean(0)
    lab = rng.integers(0, k, n)
    y = rng.normal(size=n)
    mu = rng.normal(size=(s, n))
    v = rng.uniform(0.2, 2, size=(s, 1))
    si, so = np.round(rng.normal(size=30), 1), np.round(rng.normal(1, 1, size=25), 1)
    return [
        (M.rmse, (y, mu[0])),
        (M.gaussian_log_likelihood, (y, mu[0], v[0])),
        (M.log_predictive_gaussian_mixture, (y, mu, v)),
        (M.pit_gaussian, (y, mu[0], v[0])),
        (M.pit_gaussian_mixture, (y, mu, v)),
        (M.coverage_gaussian, (y, mu[0], v[0])),
        (M.coverage_gaussian_mixture, (y, mu, v)),
        (M.crps_gaussian, (y, mu[0], v[0])),
        (M.crps_ensemble, (y, mu)),
        (M.bma_probs, (probs,)),
        (M.bma_log_probs, (logits,)),
        (M.accuracy, (pbar, lab)),
        (M.nll, (pbar, lab)),
        (M.nll_from_logits, (logits, lab)),
        (M.brier, (pbar, lab)),
        (M.ece, (pbar, lab)),
        (M.mce, (pbar, lab)),
        (M.reliability_diagram, (pbar, lab, 7)),
        (M.predictive_entropy, (pbar,)),
        (M.mutual_information, (probs,)),
        (M.auroc, (si, so)),
        (M.aupr, (si, so)),
        (M.fpr_at_95_tpr, (si, so)),
        (M.agreement, (pbar, probs[0])),
        (M.total_variation, (pbar, probs[0])),
    ]


@pytest.mark.parametrize("fn,args", _cases(), ids=lambda v: getattr(v, "__name__", ""))
def test_numpy_and_array_api_strict_agree(fn, args):
    ref = fn(*args)
    out = fn(*[_strict(a) for a in args])
    if isinstance(ref, dict):
        for key in ref:
            assert type(out[key]).__module__.startswith("array_api_strict")
            np.testing.assert_allclose(_np(out[key]), _np(ref[key]), rtol=1e-12, atol=1e-14)
    else:
        assert type(out).__module__.startswith("array_api_strict")
        np.testing.assert_allclose(_np(out), _np(ref), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fn,args", _cases(), ids=lambda v: getattr(v, "__name__", ""))
def test_float32_is_preserved(fn, args):
    args32 = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64 else a for a in args]
    out = fn(*args32)
    vals = out.values() if isinstance(out, dict) else [out]
    for v in vals:
        if np.asarray(v).dtype.kind == "f":
            assert np.asarray(v).dtype == np.float32
    ref = fn(*args)
    if not isinstance(ref, dict):
        np.testing.assert_allclose(np.asarray(out, dtype=np.float64), ref, rtol=2e-4, atol=2e-5)


def test_scalars_are_0d_arrays(clf):
    _, _, pbar, y = clf
    out = M.nll(pbar, y)
    assert isinstance(out, np.ndarray) and out.ndim == 0
    out = M.ece(xs.asarray(pbar), xs.asarray(y))
    assert out.ndim == 0 and out.dtype == xs.float64


# ---------------------------------------------------------------------------------- validation

def test_validation_errors():
    p = np.array([[0.2, 0.8], [0.5, 0.5]])
    y = np.array([1, 0])
    with pytest.raises(ValueError, match="shape"):
        M.accuracy(p, np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="sum to 1"):
        M.nll(np.array([[0.2, 0.7], [0.5, 0.5]]), y)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.brier(np.array([[1.2, -0.2], [0.5, 0.5]]), y)
    with pytest.raises(ValueError, match="NaN"):
        M.ece(np.array([[np.nan, 1.0], [0.5, 0.5]]), y)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        M.nll(p, np.array([2, 0]))
    with pytest.raises(ValueError, match=r"0\.\.1"):
        M.accuracy(p, np.array([-1, 0]))
    with pytest.raises(ValueError, match="integer"):
        M.accuracy(p, np.array([0.5, 0.0]))
    with pytest.raises(ValueError, match="empty"):
        M.accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="empty"):
        M.rmse(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match="non-empty"):
        M.auroc(np.zeros(0), np.ones(3))
    with pytest.raises(ValueError, match="NaN"):
        M.auroc(np.array([np.nan]), np.ones(3))
    with pytest.raises(ValueError, match="shape mismatch"):
        M.rmse(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        M.crps_gaussian(np.array([np.nan]), np.zeros(1), 1.0)
    with pytest.raises(ValueError, match="positive"):
        M.gaussian_log_likelihood(np.zeros(2), np.zeros(2), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="broadcast"):
        M.log_predictive_gaussian_mixture(np.zeros(3), np.zeros((2, 3)), np.ones(2))
    with pytest.raises(ValueError, match=r"\(S, "):
        M.log_predictive_gaussian_mixture(np.zeros(3), np.zeros((2, 4)), 1.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        M.total_variation(p, np.array([[0.2, 0.3, 0.5]]))
    with pytest.raises(ValueError, match="logits"):
        M.nll_from_logits(np.array([[np.inf, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match="n_bins"):
        M.ece(p, y, n_bins=0)
    with pytest.raises(ValueError, match="reduction"):
        M.nll(p, y, reduction="avg")
    with pytest.raises(ValueError, match="levels"):
        M.interval_coverage(np.array([0.5]), levels=(1.5,))
    with pytest.raises(ValueError, match="different array libraries"):
        M.nll(xs.asarray(p), y)


def test_inputs_are_not_mutated(clf):
    logits, probs, pbar, y = clf
    copies = [a.copy() for a in (logits, probs, pbar, y)]
    M.nll_from_logits(logits, y)
    M.ece(pbar, y)
    M.bma_probs(probs)
    M.brier(pbar, y)
    for a, b in zip((logits, probs, pbar, y), copies):
        np.testing.assert_array_equal(a, b)


def test_every_scalar_metric_is_a_0d_ndarray_on_numpy():
    for fn, args in _cases():
        out = fn(*args)
        if not isinstance(out, dict) and np.ndim(out) == 0:
            assert isinstance(out, np.ndarray), fn.__name__


def _cupy_or_skip():
    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # CUDA driver missing
        pytest.skip(f"no usable CUDA device ({exc})")
    return cp


@pytest.mark.gpu
@pytest.mark.parametrize("fn,args", _cases(), ids=lambda v: getattr(v, "__name__", ""))
def test_cupy_agrees_with_numpy(fn, args):
    cp = _cupy_or_skip()
    ref = fn(*args)
    out = fn(*[cp.asarray(a) if isinstance(a, np.ndarray) else a for a in args])
    refs = ref if isinstance(ref, dict) else {"v": ref}
    outs = out if isinstance(out, dict) else {"v": out}
    for key in refs:
        assert isinstance(outs[key], cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(outs[key]), np.asarray(refs[key]), rtol=1e-10, atol=1e-12)
