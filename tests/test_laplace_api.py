"""blockbayes.laplace: public surface, input checking, backends, dtypes, no input mutation."""
from __future__ import annotations

import numpy as np
import pytest

import blockbayes as bb
from blockbayes.laplace import LaplaceResult

STRUCTS = ["diag", "kfac", "full", "block"]


pytestmark = pytest.mark.usefixtures("one_blas_thread")   # BLAS on one thread (conftest.py)


def _reg(seed=0, n=24, widths=(2, 5, 1)):
    rng = np.random.default_rng(seed)
    net = bb.MLP(list(widths), "relu", prior_prec=1.0, delta=0.1)
    X = rng.normal(size=(n, widths[0]))
    y = np.sin(2 * X[:, :1]) + 0.3 * rng.normal(size=(n, 1))
    if widths[-1] > 1:
        y = np.repeat(y, widths[-1], axis=1)
    return net, X, y


def _cls(seed=0, n=30, C=3):
    rng = np.random.default_rng(seed)
    net = bb.MLP([2, 5, C], "relu", likelihood="multinomial_probit", prior_prec=1.0)
    X = rng.normal(size=(n, 2))
    y = (np.argmax(X @ rng.normal(size=(2, C)) + 0.3 * rng.normal(size=(n, C)), axis=1)).astype(np.int64)
    return net, X, y


@pytest.fixture(scope="module")
def reg_map():
    net, X, y = _reg()
    W = bb.laplace.map_fit(net, X, y, seed=0, progress=False)
    return net, X, y, W


@pytest.fixture(scope="module")
def cls_map():
    net, X, y = _cls()
    W = bb.laplace.map_fit(net, X, y, seed=0, progress=False)
    return net, X, y, W


# ---------------------------------------------------------------------------- MAP training
def test_map_lbfgs_reaches_a_stationary_point_on_a_smooth_problem():
    rng = np.random.default_rng(1)
    net = bb.MLP([3, 4, 2], "identity", prior_prec=1.0, delta=0.5)
    X = rng.normal(size=(40, 3))
    y = X @ rng.normal(size=(3, 2)) + 0.3 * rng.normal(size=(40, 2))
    W, info = bb.laplace.map_fit(net, X, y, seed=0, tol=1e-10, progress=False, return_info=True)
    _, g = bb.laplace.neg_log_posterior(net, W, X, y)
    assert max(np.abs(x).max() for x in g) < 1e-6 * X.shape[0]
    assert all(w.shape == s for w, s in zip(W, net.weight_shapes()))
    assert info["num_iter"] > 0 and len(info["history"]) == info["num_iter"]
    h = info["history"]
    assert all(b <= a + 1e-12 * abs(a) for a, b in zip(h[:-1], h[1:]))     # monotone line search


@pytest.mark.parametrize("make", [_reg, _cls])
def test_map_adam_decreases_the_objective(make):
    net, X, y = make()
    W0 = bb.laplace.init_weights(net, seed=3, like=X)
    E0 = float(bb.laplace.neg_log_posterior(net, W0, X, y, grad=False))
    W, info = bb.laplace.map_fit(net, X, y, method="adam", init=W0, num_epochs=60, batch_size=8, lr=2e-2,
                                 seed=0, progress=False, return_info=True)
    E1 = float(bb.laplace.neg_log_posterior(net, W, X, y, grad=False))
    assert E1 < E0 - 0.1 * abs(E0)
    assert info["num_iter"] == 60 * -(-X.shape[0] // 8)
    W2 = bb.laplace.map_fit(net, X, y, method="adam", init=W0, num_epochs=60, batch_size=8, lr=2e-2, seed=0, progress=False)
    for a, b in zip(W, W2):                           # reproducible
        np.testing.assert_array_equal(a, b)


def test_map_fit_seed_reproducible_and_progress_bar(capsys):
    net, X, y = _reg()
    a = bb.laplace.map_fit(net, X, y, seed=5, progress=False, max_iter=20)
    b = bb.laplace.map_fit(net, X, y, seed=5, progress=True, max_iter=20)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert "MAP" in capsys.readouterr().err


# ---------------------------------------------------------------------------- fit & result surface
@pytest.mark.parametrize("structure", STRUCTS)
@pytest.mark.parametrize("subset", ["all", "last_layer"])
def test_regression_surface(reg_map, structure, subset):
    net, X, y, W = reg_map
    la = bb.laplace.fit(net, W, X, y, subset=subset, structure=structure)
    assert isinstance(la, LaplaceResult) and la.likelihood == "gaussian"
    assert la.layers == ((0, 1) if subset == "all" else (1,))
    Xn = X[:7]
    mean, var = la.predict(Xn)
    assert mean.shape == (7, 1) and var.shape == (7, 1)
    assert np.all(var > la.delta_y)
    m2, v2 = la.predict(Xn, include_noise=False)
    np.testing.assert_allclose(v2 + la.delta_y, var, rtol=1e-12)
    m3, v3 = la(Xn)                                  # laplace-torch style: f-variance only
    np.testing.assert_allclose(v3, v2)
    mn, vn = la.predict(Xn, kind="nn", num_samples=300, seed=1)
    assert mn.shape == (7, 1) and np.all(vn > la.delta_y)
    lpd = la.log_predictive_density(X, y)
    assert lpd.shape == () and np.isfinite(lpd)
    assert la.log_predictive_density(X, y, reduce=False).shape == (X.shape[0],)
    assert np.isfinite(la.log_predictive_density(X, y, kind="nn", link="mc", num_samples=50, seed=0))
    draws = la.sample(5, seed=2)
    assert [d.shape for d in draws] == [(5,) + w.shape for w in W]
    np.testing.assert_array_equal(la.sample(5, seed=2)[-1], draws[-1])
    assert la.mean is la.weights
    lml = la.log_marginal_likelihood()
    assert lml.shape == () and np.isfinite(lml)
    assert "LaplaceResult" in repr(la)


def test_sample_moments_match_the_posterior(reg_map):
    net, X, y, W = reg_map
    for structure in STRUCTS:
        la = bb.laplace.fit(net, W, X, y, subset="all", structure=structure)
        S = la.posterior_covariance()
        draws = la.sample(20000, seed=11)
        flat = np.concatenate([d.reshape(20000, -1) for d in draws], axis=1)
        sd = np.sqrt(np.diag(S))
        z = (flat.mean(0) - np.concatenate([w.ravel() for w in W])) / (sd / np.sqrt(20000))
        assert np.abs(z).max() < 5.0              # Bonferroni over ≤ 30 params at ~1e-6 each
        np.testing.assert_allclose(flat.var(0), np.diag(S), rtol=0.06)


@pytest.mark.parametrize("structure", STRUCTS)
def test_classification_surface(cls_map, structure):
    net, X, y, W = cls_map
    la = bb.laplace.fit(net, W, X, y, subset="all", structure=structure)
    assert la.likelihood == "categorical"
    for kw in (dict(), dict(link="mc", num_samples=200, seed=0), dict(kind="nn", link="mc", num_samples=50, seed=0)):
        p = la.predict_proba(X[:6], **kw)
        assert p.shape == (6, 3) and np.all(p > 0)
        np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-12)
    f, v = la.predict(X[:6])                      # one-hot label moments
    np.testing.assert_allclose(f, la.predict_proba(X[:6]))
    np.testing.assert_allclose(v, f * (1 - f))
    mu, cov = la.predict_f(X[:6])                 # latent logits
    assert mu.shape == (6, 3) and cov.shape == (6, 3, 3) and np.all(np.linalg.eigvalsh(cov) > 0)
    lpd = la.log_predictive_density(X, y)
    assert np.isfinite(lpd) and lpd < 0
    # probit link shrinks towards uniform relative to the MAP softmax
    F = bb.model.forward(net, W, X[:6])
    pmap = np.exp(F) / np.exp(F).sum(1, keepdims=True)
    p = la.predict_proba(X[:6])
    assert np.all(p.max(1) <= pmap.max(1) + 1e-12)


def test_bernoulli_surface():
    rng = np.random.default_rng(4)
    net = bb.MLP([2, 4, 1], "relu", likelihood="probit", prior_prec=1.0)
    X = rng.normal(size=(30, 2))
    y = (X[:, 0] - X[:, 1] + 0.3 * rng.normal(size=30) > 0).astype(np.int64)
    W = bb.laplace.map_fit(net, X, y, seed=0, progress=False)
    la = bb.laplace.fit(net, W, X, y, structure="full", subset="all")
    assert la.likelihood == "bernoulli"
    p = la.predict_proba(X)
    assert p.shape == (30, 2)
    m, v = la.predict(X)
    assert m.shape == (30, 1)
    np.testing.assert_allclose(m[:, 0], p[:, 1])
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert np.mean((p[:, 1] > 0.5) == y) > 0.8
    pm = la.predict_proba(X, link="mc", num_samples=4000, seed=0)
    np.testing.assert_allclose(pm, p, atol=0.03)   # probit approximation of the logistic-normal integral


@pytest.mark.parametrize("structure", STRUCTS)
@pytest.mark.parametrize("method", ["marglik", "mackay"])
@pytest.mark.parametrize("prior_structure", ["scalar", "layerwise"])
def test_prior_optimisation_increases_evidence(reg_map, structure, method, prior_structure):
    net, X, y, W = reg_map
    la = bb.laplace.fit(net, W, X, y, subset="all", structure=structure)
    before = float(la.log_marginal_likelihood())
    out = la.optimize_prior_precision(method=method, prior_structure=prior_structure)
    assert out is la
    after = float(la.log_marginal_likelihood())
    assert after > before
    assert la.info["prior_optimization"]["log_marglik_after"] == pytest.approx(after)
    if prior_structure == "scalar":
        vals = {v for pair in la.prior_precision for v in pair}
        assert len(vals) == 1
    assert la.delta_y != pytest.approx(0.1)      # the noise was tuned too


def test_prior_optimisation_classification(cls_map):
    net, X, y, W = cls_map
    la = bb.laplace.fit(net, W, X, y, subset="last_layer", structure="kfac")
    before = float(la.log_marginal_likelihood())
    la.optimize_prior_precision(prior_structure="layerwise")
    assert float(la.log_marginal_likelihood()) > before
    assert la.prior_precision[0] == (1.0, 1.0)   # inactive layer untouched
    with pytest.raises(ValueError):
        la.optimize_prior_precision(optimize_noise=True)


def test_log_marginal_likelihood_setters(reg_map):
    net, X, y, W = reg_map
    la = bb.laplace.fit(net, W, X, y, subset="all", structure="kfac")
    a = float(la.log_marginal_likelihood(prior_prec=3.0, sigma_noise=0.5))
    assert la.prior_precision == ((3.0, 3.0), (3.0, 3.0)) and la.delta_y == pytest.approx(0.25)
    b = float(bb.laplace.fit(net, W, X, y, subset="all", structure="kfac", prior_precision=3.0,
                             delta_y=0.25).log_marginal_likelihood())
    assert a == pytest.approx(b, rel=1e-12)
    with pytest.raises(ValueError):
        la.log_marginal_likelihood(sigma_noise=-1.0)


def test_block_result_and_sample_variant(reg_map):
    net, X, y, W = reg_map
    bl = bb.laplace.block(net, X, y, init=W, num_steps=10, progress=False)
    assert bl.structure == "block" and bl.subset == "all" and bl.info["variant"] == "mode"
    for key in ("objective", "grad_norm", "num_sweeps", "converged", "message", "damping", "backtracks"):
        assert key in bl.info
    bs = bb.laplace.block(net, X, y, init=W, num_steps=2, samples=3, sample_sweeps=3, seed=0, progress=False)
    assert bs.info["variant"] == "sample" and len(bs.info["sample_objective"]) == 3
    bs2 = bb.laplace.block(net, X, y, init=W, num_steps=2, samples=3, sample_sweeps=3, seed=0, progress=False)
    for a, b in zip(bs.mean, bs2.mean):
        np.testing.assert_array_equal(a, b)
    # other layers at samples instead of the mode changes both mean and blocks
    assert max(np.abs(a - b).max() for a, b in zip(bs.mean, bl.mean)) > 1e-6
    assert np.abs(bs.posterior_precision() - bl.posterior_precision()).max() > 1e-6
    m, v = bs.predict(X[:4])
    assert np.all(np.isfinite(m)) and np.all(v > 0)


def test_to_numpy_copy(reg_map):
    net, X, y, W = reg_map
    la = bb.laplace.fit(net, W, X, y, subset="all", structure="kfac")
    h = la.to_numpy()
    assert isinstance(h.mean[0], np.ndarray) and h.mean[0] is not la.mean[0]
    np.testing.assert_allclose(h.predict(X[:3])[1], la.predict(X[:3])[1])


# ---------------------------------------------------------------------------- inputs
def test_inputs_are_not_mutated(reg_map, cls_map):
    for net, X, y, W in (reg_map, cls_map):
        Xc, yc, Wc = X.copy(), y.copy(), tuple(w.copy() for w in W)
        bb.laplace.map_fit(net, X, y, init=W, max_iter=5, progress=False)
        bb.laplace.map_fit(net, X, y, init=W, method="adam", num_epochs=1, progress=False)
        for s in STRUCTS:
            la = bb.laplace.fit(net, W, X, y, subset="all", structure=s)
            la.predict(X)
            la.log_predictive_density(X, y)
            la.optimize_prior_precision()
        bb.laplace.block(net, X, y, init=W, num_steps=2, samples=2, sample_sweeps=1, progress=False)
        np.testing.assert_array_equal(X, Xc)
        np.testing.assert_array_equal(y, yc)
        for a, b in zip(W, Wc):
            np.testing.assert_array_equal(a, b)


def test_bad_inputs_raise_clear_errors(reg_map, cls_map):
    net, X, y, W = reg_map
    with pytest.raises(ValueError, match="structure"):
        bb.laplace.fit(net, W, X, y, structure="kron")
    with pytest.raises(ValueError, match="subset"):
        bb.laplace.fit(net, W, X, y, subset="first_layer")
    with pytest.raises(ValueError, match="likelihood"):
        bb.laplace.fit(net, W, X, y, likelihood="poisson")
    with pytest.raises(ValueError, match="kfac_bias"):
        bb.laplace.fit(net, W, X, y, kfac_bias="maybe")
    with pytest.raises(ValueError, match="shape"):
        bb.laplace.fit(net, W, X[:, :1], y)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        bb.laplace.fit(net, W, Xn, y)
    yn = y.copy()
    yn[1] = np.inf
    with pytest.raises(ValueError, match="NaN"):
        bb.laplace.map_fit(net, X, yn)
    with pytest.raises(ValueError, match="rows"):
        bb.laplace.fit(net, W, X, y[:-1])
    with pytest.raises(ValueError, match="shape"):
        bb.laplace.fit(net, (W[0][:, :-1], W[1]), X, y)
    with pytest.raises(ValueError, match="layers"):
        bb.laplace.fit(net, W[:1], X, y)
    with pytest.raises(TypeError):
        bb.laplace.fit(net, W, X.astype(np.int64), y)
    with pytest.raises(TypeError):
        bb.laplace.fit("net", W, X, y)
    with pytest.raises(ValueError, match="not both"):
        bb.laplace.fit(net, W, X, y, delta_y=0.1, sigma_noise=0.3)
    with pytest.raises(ValueError):
        bb.laplace.fit(net, W, X, y, prior_precision=-1.0)
    with pytest.raises(ValueError, match="method"):
        bb.laplace.map_fit(net, X, y, method="sgd")
    with pytest.raises(ValueError, match="bernoulli"):
        bb.laplace.fit(bb.MLP([2, 5, 2], "relu"), (np.zeros((5, 3)), np.zeros((2, 6))), X, np.zeros(24, int), likelihood="bernoulli")
    la = bb.laplace.fit(net, W, X, y)
    with pytest.raises(ValueError, match="pred_type"):
        la.predict(X, kind="mean")
    with pytest.raises(ValueError, match="classification"):
        la.predict_proba(X)
    with pytest.raises(ValueError, match="prior_structure"):
        la.optimize_prior_precision(prior_structure="diag")
    with pytest.raises(ValueError, match="method"):
        la.optimize_prior_precision(method="gridsearch")
    with pytest.raises(ValueError, match="shape"):
        la.predict(X[:, :1])
    netc, Xc, yc, Wc = cls_map
    bad = yc.copy()
    bad[0] = 3
    with pytest.raises(ValueError, match="labels"):
        bb.laplace.fit(netc, Wc, Xc, bad)
    with pytest.raises(ValueError, match="labels"):
        bb.laplace.fit(netc, Wc, Xc, -np.ones_like(yc))
    with pytest.raises(ValueError, match="integer"):
        bb.laplace.fit(netc, Wc, Xc, yc + 0.5)
    lac = bb.laplace.fit(netc, Wc, Xc, yc)
    with pytest.raises(ValueError, match="link"):
        lac.predict_proba(Xc, link="bridge")
    with pytest.raises(ValueError, match="nn"):
        lac.predict_proba(Xc, kind="nn", link="probit")
    with pytest.raises(ValueError):
        bb.laplace.block(net, X, y, damping=-1.0)
    with pytest.raises(ValueError):
        bb.laplace.block(net, X, y, samples=2, step_size=1.5)


# ---------------------------------------------------------------------------- backends / dtypes
def test_array_api_strict_end_to_end():
    xps = pytest.importorskip("array_api_strict")
    net, X, y = _cls(n=20)
    Xs, ys = xps.asarray(X), xps.asarray(y)
    W = bb.laplace.map_fit(net, Xs, ys, seed=0, max_iter=30, progress=False)
    Wn = bb.laplace.map_fit(net, X, y, seed=0, max_iter=30, progress=False)
    assert all(type(w).__module__.startswith("array_api_strict") for w in W)
    for a, b in zip(W, Wn):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-8, atol=1e-10)
    for s in STRUCTS:
        la = bb.laplace.fit(net, W, Xs, ys, subset="all", structure=s)
        lan = bb.laplace.fit(net, Wn, X, y, subset="all", structure=s)
        p = la.predict_proba(Xs[:5, :])
        assert type(p).__module__.startswith("array_api_strict")
        np.testing.assert_allclose(np.asarray(p), lan.predict_proba(X[:5]), rtol=1e-6)
        np.testing.assert_allclose(float(la.log_marginal_likelihood()), float(lan.log_marginal_likelihood()), rtol=1e-6)
        la.sample(2, seed=0)
        la.predict_proba(Xs[:3, :], link="mc", seed=0)
    bl = bb.laplace.block(net, Xs, ys, num_steps=2, samples=2, sample_sweeps=1, seed=0, progress=False)
    assert type(bl.mean[0]).__module__.startswith("array_api_strict")
    net_r, Xr, yr = _reg(n=12)
    la = bb.laplace.fit(net_r, bb.laplace.init_weights(net_r, seed=0, like=xps.asarray(Xr)), xps.asarray(Xr),
                        xps.asarray(yr), subset="all", structure="block").optimize_prior_precision()
    m, v = la.predict(xps.asarray(Xr))
    assert type(v).__module__.startswith("array_api_strict")


def test_float32_follows_the_input():
    net, X, y = _reg()
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    W = bb.laplace.map_fit(net, X32, y32, seed=0, progress=False)
    assert all(w.dtype == np.float32 for w in W)
    for s in STRUCTS:
        la = bb.laplace.fit(net, W, X32, y32, subset="all", structure=s)
        m, v = la.predict(X32)
        assert m.dtype == np.float32 and v.dtype == np.float32
        assert la.sample(2, seed=0)[0].dtype == np.float32
        assert np.isfinite(float(la.log_marginal_likelihood()))
    bl = bb.laplace.block(net, X32, y32, init=W, num_steps=3, progress=False)
    assert bl.mean[0].dtype == np.float32
