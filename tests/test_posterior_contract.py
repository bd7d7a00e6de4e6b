"""The result contract: every family's posterior answers the same interface the same way.

One suite, parametrised over Gibbs samples, block VI (CAVI, mean-field), Laplace in each of its
four structures, a MAP point and a deep ensemble, regression and classification: predict shapes;
the log predictive density against a brute-force computation (an explicit loop over the weight
draws in NumPy, then a log-sum-exp); the ``.npz`` round trip (bitwise) through the kind registry
of :func:`blockbayes.posterior.load`; ``to_numpy``; array-api-strict inputs and results; a clear
error for foreign files; the ArviZ export read back through ``arviz.summary``.

All checks are deterministic equalities (no statistical tolerance): the brute force uses the
same weight draws as the result (``sample`` with the same ``seed``), so agreement is to float64
rounding (rtol 1e-9).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy.special import log_ndtr, logsumexp

import blockbayes as bb
from blockbayes.point import EnsemblePosterior, PointPosterior

# the tiny Gibbs fixtures are far too short to mix; that is not what this suite checks
pytestmark = pytest.mark.filterwarnings("ignore:the chains have not mixed")

S_MC = 40          # Monte Carlo draws of the distribution-valued results (VI, Laplace "nn")
SEED = 3


# ----------------------------------------------------------------------------------- data
def _data(n=30, task="reg", K=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    if task == "reg":
        return X, np.sin(X[:, 0]) + 0.5 * X[:, 1] + 0.1 * rng.normal(size=n)
    score = X @ rng.normal(size=(2, K))
    return X, np.argmax(score + 0.3 * rng.normal(size=score.shape), axis=1).astype(np.int64)


def _map(net, X, y, seed=0):
    return bb.laplace.map_fit(net, X, y, seed=seed, max_iter=60, progress=False)


# ----------------------------------------------------------------------------------- builders
# Each builder returns (result, X, y, kw): kw are the prediction keywords that make the
# result's predictive use exactly the draws of `draws(result, kw)` below.
def _gibbs_reg(asarray):
    X, y = _data()
    res = bb.gibbs.run(bb.MLP([2, 4, 1]), asarray(X), asarray(y), num_samples=6, num_warmup=4, num_chains=2,
                       seed=0, learn_noise=True, progress=False, init="prior")
    return res, X, y, {}


def _gibbs_probit(asarray):
    X, y = _data(task="cls", K=2)
    res = bb.gibbs.run(bb.MLP([2, 4, 1], likelihood="probit"), asarray(X), asarray(y), num_samples=6, num_warmup=4,
                       num_chains=2, seed=0, progress=False, init="prior", learn_noise=False)
    return res, X, y, {}


def _vi_cavi(asarray):
    X, y = _data()
    res = bb.vi.cavi.run(bb.MLP([2, 4, 1], delta={"Z": 1e-2, "X": 1e-2, "y": 0.1}), asarray(X), asarray(y),
                         num_steps=3, num_restarts=2, seed=0, progress=False)
    return res, X, y, dict(num_samples=S_MC, seed=SEED)


def _vi_mf_cat(asarray):
    X, y = _data(task="cls", K=3)
    res = bb.vi.mean_field.run(bb.MLP([2, 4, 3], likelihood="multinomial_probit"), asarray(X), asarray(y),
                               num_steps=20, seed=0, progress=False)
    return res, X, y, dict(num_samples=S_MC, seed=SEED)


def _laplace(structure, task, subset="all"):
    def build(asarray):
        X, y, net = _std_problem(task, K=2)
        W = _map(net, X, y)
        la = bb.laplace.fit(net, tuple(asarray(w) for w in W), asarray(X), asarray(y), subset=subset,
                            structure=structure)
        return la, X, y, dict(kind="nn", num_samples=S_MC, seed=SEED)
    return build


def _std_problem(task, K):
    """Data and a standard-net MLP: regression, or K-class labels (K = 2: one logistic output)."""
    if task == "reg":
        X, y = _data()
        return X, y, bb.MLP([2, 4, 1], prior_prec=1.0, delta=0.1)
    X, y = _data(task="cls", K=K)
    lik = "probit" if K == 2 else "multinomial_probit"
    return X, y, bb.MLP([2, 4, 1 if K == 2 else K], likelihood=lik, prior_prec=1.0)


def _point(task):
    def build(asarray):
        X, y, net = _std_problem(task, K=3)
        W = _map(net, X, y)
        return PointPosterior(net=net, weights=tuple(asarray(w) for w in W), delta_y=0.2), X, y, {}
    return build


def _ensemble(task):
    def build(asarray):
        X, y, net = _std_problem(task, K=2)
        members = [PointPosterior(net=net, weights=tuple(asarray(w) for w in _map(net, X, y, seed=s)),
                                  delta_y=0.1 + 0.05 * s) for s in range(3)]
        return EnsemblePosterior.from_points(members), X, y, {}
    return build


CASES = {
    "gibbs_reg": _gibbs_reg,
    "gibbs_probit": _gibbs_probit,
    "vi_cavi": _vi_cavi,
    "vi_mf_categorical": _vi_mf_cat,
    "laplace_kfac_reg": _laplace("kfac", "reg"),
    "laplace_diag_reg": _laplace("diag", "reg"),
    "laplace_block_reg": _laplace("block", "reg"),
    "laplace_full_lastlayer_reg": _laplace("full", "reg", subset="last_layer"),
    "laplace_kfac_bernoulli": _laplace("kfac", "cls"),
    "point_reg": _point("reg"),
    "point_categorical": _point("cls"),
    "ensemble_reg": _ensemble("reg"),
    "ensemble_bernoulli": _ensemble("cls"),
}
# one case per family on array-api-strict (the rest of the families' strict support is tested in their files)
STRICT_CASES = ["gibbs_reg", "vi_cavi", "laplace_block_reg", "point_reg", "ensemble_bernoulli"]

_CACHE: dict = {}


def _get(name, backend="numpy"):
    key = (name, backend)
    if key not in _CACHE:
        if backend == "numpy":
            asarray = np.asarray
        else:
            xps = pytest.importorskip("array_api_strict")
            asarray = xps.asarray
        _CACHE[key] = CASES[name](asarray)
    return _CACHE[key]


# ----------------------------------------------------------------------------------- brute force
def _h(a):
    return np.asarray(bb._backend.to_numpy(a), dtype=np.float64)


def _draws(res, kw):
    """The weight draws (per draw a tuple of per-layer (d, k) arrays) and noise variances the
    result's predictive uses, read back through the public ``sample``."""
    if isinstance(res, bb.gibbs.GibbsResult):
        W = [_h(w) for w in res.sample()]
        dy = _h(res.delta_y).reshape(-1)
    elif isinstance(res, (PointPosterior, EnsemblePosterior)):
        W = [_h(w) for w in res.sample()] if isinstance(res, EnsemblePosterior) else [_h(w)[None] for w in res.weights]
        dy = np.broadcast_to(_h(res.delta_y), (W[0].shape[0],))
    elif isinstance(res, bb.vi.result.VIResult):
        W = [_h(w) for w in res.sample(kw["num_samples"], seed=kw["seed"])]
        dy = np.full(W[0].shape[0], _h(res.delta_y)[res.best])
    else:   # Laplace, kind="nn"
        W = [_h(w) for w in res.sample(kw["num_samples"], seed=kw["seed"])]
        dy = np.full(W[0].shape[0], float(res.delta_y))
    return [tuple(w[s] for w in W) for s in range(W[0].shape[0])], dy


def _forward(net, weights, X):
    H = X
    for l, W in enumerate(weights):
        H = H @ W[:, :-1].T + W[:, -1]
        if l < len(weights) - 1:
            H = np.maximum(H, 0.0) if net.activation == "relu" else H
    return H


def _log_density(lik, F, y, dy):
    """log p(y_i | f_i) for one draw, shape (n,)."""
    if lik == "gaussian":
        r = y.reshape(F.shape) - F
        return np.sum(-0.5 * r * r / dy - 0.5 * np.log(2 * math.pi * dy), axis=1)
    idx = np.arange(F.shape[0])
    if lik == "bernoulli":
        lp = np.stack([-np.logaddexp(0, F[:, 0]), -np.logaddexp(0, -F[:, 0])], axis=1)
    elif lik == "categorical":
        lp = F - logsumexp(F, axis=1, keepdims=True)
    elif lik == "probit":
        lp = np.stack([log_ndtr(-F[:, 0]), log_ndtr(F[:, 0])], axis=1)
    else:  # pragma: no cover
        raise AssertionError(lik)
    return lp[idx, y]


def _brute_lpd(res, X, y, kw):
    draws, dy = _draws(res, kw)
    per = np.stack([_log_density(res.likelihood, _forward(res.net, w, X), y, dy[s]) for s, w in enumerate(draws)])
    return logsumexp(per, axis=0) - math.log(len(draws))


# ----------------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name", list(CASES))
def test_predict_shapes(name):
    res, X, y, kw = _get(name)
    n = X.shape[0]
    if res.is_classifier:
        p = _h(res.predict_proba(X, **kw))
        assert p.shape == (n, res.num_classes)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
        assert np.all(p >= 0)
        with pytest.raises(ValueError):
            res.predict_proba(X[:, :1])
    else:
        m, v = res.predict(X, **kw)
        assert _h(m).shape == (n, res.net.d_out) and _h(v).shape == (n, res.net.d_out)
        assert np.all(np.isfinite(_h(m))) and np.all(_h(v) > 0)
        with pytest.raises(ValueError, match="regression"):
            res.predict_proba(X)
    lpd = res.log_predictive_density(X, y, reduce=False, **kw)
    assert _h(lpd).shape == (n,)
    np.testing.assert_allclose(_h(res.log_predictive_density(X, y, **kw)), _h(lpd).mean(), rtol=1e-12)
    np.testing.assert_allclose(_h(res.log_predictive_density(X, y, reduce="sum", **kw)), _h(lpd).sum(), rtol=1e-12)
    W = res.sample(2, seed=0)
    assert [tuple(w.shape) for w in W] == [(2,) + s for s in res.net.weight_shapes()]


@pytest.mark.parametrize("name", list(CASES))
def test_lpd_equals_brute_force(name):
    res, X, y, kw = _get(name)
    got = _h(res.log_predictive_density(X, y, reduce=False, **kw))
    np.testing.assert_allclose(got, _brute_lpd(res, X, y, kw), rtol=1e-9, atol=1e-12)


def test_brute_force_catches_a_broken_predictive():
    """The brute force is not vacuous: dropping the logsumexp (averaging log densities instead, a
    classic bug) or using the wrong noise is caught."""
    res, X, y, kw = _get("gibbs_reg")
    draws, dy = _draws(res, kw)
    per = np.stack([_log_density("gaussian", _forward(res.net, w, X), y, dy[s]) for s, w in enumerate(draws)])
    got = _h(res.log_predictive_density(X, y, reduce=False))
    assert not np.allclose(got, per.mean(axis=0), rtol=1e-9)
    res2, X2, y2, kw2 = _get("ensemble_reg")
    d2, dy2 = _draws(res2, kw2)
    per2 = np.stack([_log_density("gaussian", _forward(res2.net, w, X2), y2, dy2.mean()) for w in d2])
    assert not np.allclose(_h(res2.log_predictive_density(X2, y2, reduce=False)),
                           logsumexp(per2, axis=0) - math.log(len(d2)), rtol=1e-9)


def _npz_contents(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("name", list(CASES))
def test_save_load_round_trip_is_bitwise(name, tmp_path):
    res, X, y, kw = _get(name)
    p1, p2 = tmp_path / "a.npz", tmp_path / "b.npz"
    res.save(p1)
    back = bb.posterior.load(p1)
    assert type(back) is type(res)
    back.save(p2)
    a, b = _npz_contents(p1), _npz_contents(p2)
    assert sorted(a) == sorted(b)
    for k in a:
        if k == "meta":
            assert json.loads(str(a[k])) == json.loads(str(b[k]))
        else:
            assert a[k].dtype == b[k].dtype
            np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(_h(back.log_predictive_density(X, y, reduce=False, **kw)),
                                  _h(res.log_predictive_density(X, y, reduce=False, **kw)))
    assert type(res).load(p1).__class__ is type(res)


@pytest.mark.parametrize("name", list(CASES))
def test_to_numpy(name):
    res, X, y, kw = _get(name)
    h = res.to_numpy()
    assert type(h) is type(res)
    assert all(isinstance(w, np.ndarray) for w in h.sample(2, seed=1))
    np.testing.assert_array_equal(_h(h.log_predictive_density(X, y, reduce=False, **kw)),
                                  _h(res.log_predictive_density(X, y, reduce=False, **kw)))


@pytest.mark.parametrize("name", STRICT_CASES)
def test_array_api_strict(name):
    """A result fitted on array-api-strict arrays predicts in that namespace, matches its own brute
    force, and a numpy result accepts array-api-strict inputs."""
    xps = pytest.importorskip("array_api_strict")
    res, X, y, kw = _get(name, "strict")
    lpd = res.log_predictive_density(xps.asarray(X), xps.asarray(y), reduce=False, **kw)
    assert type(lpd).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(_h(lpd), _brute_lpd(res, X, y, kw), rtol=1e-9, atol=1e-12)
    if res.is_classifier:
        out = res.predict_proba(xps.asarray(X))
    else:
        out = res.predict(xps.asarray(X), **kw)[1]
    assert type(out).__module__.startswith("array_api_strict")
    rn, Xn, yn, kwn = _get(name)
    np.testing.assert_array_equal(_h(rn.log_predictive_density(xps.asarray(Xn), xps.asarray(yn), reduce=False, **kwn)),
                                  _h(rn.log_predictive_density(Xn, yn, reduce=False, **kwn)))


def test_foreign_or_corrupt_files_are_clear_errors(tmp_path):
    res = _get("point_reg")[0]
    good = tmp_path / "good.npz"
    res.save(good)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, a=np.arange(3))
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, meta=np.array([{"kind": "GibbsResult"}], dtype=object))
    npy = tmp_path / "plain.npy"
    np.save(npy, np.arange(3))
    text = tmp_path / "text.npz"
    text.write_text("hello")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:200])
    badmeta = tmp_path / "badmeta.npz"
    np.savez(badmeta, meta=np.asarray("{not json"))
    unknown = tmp_path / "unknown.npz"
    np.savez(unknown, meta=np.asarray(json.dumps({"kind": "Nope", "net": {}})))
    for path in (foreign, pickled, npy, text, truncated, badmeta, unknown):
        with pytest.raises(ValueError, match="not a blockbayes result file"):
            bb.posterior.load(path)
    with pytest.raises(ValueError, match="not a blockbayes result file"):
        PointPosterior.load(foreign)
    with pytest.raises(ValueError, match="does not hold a GibbsResult"):
        bb.gibbs.GibbsResult.load(good)
    with pytest.raises(FileNotFoundError):
        bb.posterior.load(tmp_path / "missing.npz")


@pytest.mark.parametrize("name", ["gibbs_reg", "gibbs_probit", "vi_cavi", "laplace_kfac_reg", "point_reg",
                                  "ensemble_bernoulli"])
def test_to_arviz_round_trip(name):
    az = pytest.importorskip("arviz")
    res, X, y, kw = _get(name)
    idata = res.to_arviz(X, y, num_samples=S_MC, seed=SEED)
    assert {"posterior", "log_likelihood", "observed_data"} <= set(idata.groups())
    draws, dy = _draws(res, dict(num_samples=S_MC, seed=SEED))
    W1 = np.stack([w[0] for w in draws])
    C, D = idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]
    assert C * D == len(draws)
    with warnings.catch_warnings():
        if C * D == 1:   # a point mass: ArviZ's sd of one draw divides by zero degrees of freedom
            warnings.simplefilter("ignore", RuntimeWarning)
        summ = az.summary(idata, var_names=["W_1"], kind="stats")
    np.testing.assert_allclose(summ["mean"].to_numpy(), np.round(W1.mean(axis=0).reshape(-1), 3), atol=1e-3)
    ll = idata.log_likelihood["y"].to_numpy()
    assert ll.shape == (C, D, X.shape[0])
    lpd_kw = kw if kw.get("kind") != "glm" else {}
    if isinstance(res, bb.laplace.LaplaceResult):
        lpd_kw = dict(kind="nn", num_samples=S_MC, seed=SEED)
    elif isinstance(res, bb.vi.result.VIResult):
        lpd_kw = dict(num_samples=S_MC, seed=SEED)
    np.testing.assert_allclose(logsumexp(ll.reshape(C * D, -1), axis=0) - math.log(C * D),
                               _h(res.log_predictive_density(X, y, reduce=False, **lpd_kw)), rtol=1e-9)
    if isinstance(res, bb.gibbs.GibbsResult):
        assert "lp" in idata.sample_stats
        np.testing.assert_array_equal(idata.sample_stats["lp"].to_numpy(), _h(res.log_joint))


def test_deprecated_keywords_warn_and_agree():
    la, X, y, _ = _get("laplace_kfac_reg")
    with pytest.warns(DeprecationWarning, match="deprecated") as rec:
        old = la.log_predictive_density(X, y, pred_type="nn", n_samples=S_MC, seed=SEED)
    assert {"'pred_type'", "'n_samples'"} <= {str(w.message).split()[3] for w in rec}
    np.testing.assert_array_equal(_h(old), _h(la.log_predictive_density(X, y, kind="nn", num_samples=S_MC, seed=SEED)))
    with pytest.warns(DeprecationWarning, match="'n'"):
        a = la.sample(n=3, seed=0)
    np.testing.assert_array_equal(_h(a[0]), _h(la.sample(3, seed=0)[0]))
    g = _get("gibbs_reg")[0]
    with pytest.warns(DeprecationWarning, match="'num'"):
        b = g.sample(num=2, seed=1)
    np.testing.assert_array_equal(_h(b[0]), _h(g.sample(2, seed=1)[0]))
    with pytest.raises(TypeError, match="unexpected keyword"):
        la.predict(X, n_sample=3)


def test_posterior_imports_no_family():
    """posterior.py reaches the families only through the registry (no import circle)."""
    code = ("import sys, blockbayes.posterior; "
            "bad = [m for m in ('blockbayes.vi', 'blockbayes.laplace', 'blockbayes.gibbs', 'blockbayes.point') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(CASES))
def test_load_to_cuda_predicts_the_same(name, tmp_path):
    """``load(path, device="cuda")``: predictions in CuPy equal the brute force on the GPU result's own
    draws, and the host predictions where no random draw enters (random draws differ across backends)."""
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no usable CUDA device ({exc})")
    res, X, y, kw = _get(name)
    res.save(tmp_path / "r.npz")
    gpu = bb.posterior.load(tmp_path / "r.npz", device="cuda")
    lpd = gpu.log_predictive_density(X, y, reduce=False, **kw)
    assert isinstance(lpd, cupy.ndarray)
    if "seed" not in kw:
        np.testing.assert_allclose(_h(lpd), _h(res.log_predictive_density(X, y, reduce=False, **kw)), rtol=1e-9,
                                   atol=1e-12)
    np.testing.assert_allclose(_h(lpd), _brute_lpd(gpu, X, y, kw), rtol=1e-9, atol=1e-12)


def test_load_imports_the_family_on_demand(tmp_path):
    """A fresh process that imported only blockbayes.posterior loads every kind (the registry
    imports the result's module on first use)."""
    paths = []
    for name in ("vi_cavi", "laplace_kfac_reg", "point_reg", "ensemble_reg", "gibbs_reg"):
        p = tmp_path / f"{name}.npz"
        _get(name)[0].save(p)
        paths.append(str(p))
    code = ("import sys, blockbayes.posterior as P; "
            f"print(' '.join(type(P.load(p)).__name__ for p in {paths!r}))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    assert out == ["VIResult", "LaplaceResult", "PointPosterior", "EnsemblePosterior", "GibbsResult"]


def test_float32_results_predict_in_float32():
    """Everything follows the result: float32 samples give float32 predictions, equal to the
    float64 brute force on the same draws to float32 rounding (rtol 1e-4 over 30 points and 12
    draws: a few hundred ulps of the log-sum-exp of O(1) terms)."""
    X, y = _data()
    g = bb.gibbs.run(bb.MLP([2, 4, 1]), X, y, num_samples=6, num_warmup=4, num_chains=2, seed=0, dtype="float32",
                     progress=False, init="prior", learn_noise=False)
    Xs, ys, net = _std_problem("reg", K=2)
    p = PointPosterior(net=net, weights=tuple(np.asarray(w, dtype=np.float32) for w in _map(net, Xs, ys)), delta_y=0.2)
    for res in (g, p):
        m, v = res.predict(X)
        lpd = res.log_predictive_density(X, y, reduce=False)
        assert m.dtype == v.dtype == lpd.dtype == np.float32
        np.testing.assert_allclose(lpd, _brute_lpd(res, X, y, {}), rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------- the conventions
ABSTRACT = ("predict", "predict_proba", "log_predictive_density", "sample", "to_numpy", "_anchor", "_payload",
            "_from_file", "_arviz_draws")
RESULT_CLASSES = ("gibbs.GibbsResult", "vi.VIResult", "laplace.LaplaceResult", "point.PointPosterior",
                  "point.EnsemblePosterior")


def _result_class(dotted):
    mod, name = dotted.split(".")
    return getattr(getattr(bb, mod) if mod != "point" else __import__("blockbayes.point", fromlist=["x"]), name)


def _subclass(missing=None):
    from blockbayes.posterior import Posterior

    ns = {}
    for name in ABSTRACT:
        if name != missing:
            def fn(self, *a, **k):
                return None
            ns[name] = classmethod(fn) if name == "_from_file" else fn
    return type("Custom", (Posterior,), ns)


def test_the_interface_is_abstract():
    """Every protocol method of Posterior is abstract: a result lacking one cannot be built."""
    from blockbayes.posterior import Posterior

    assert set(Posterior.__abstractmethods__) == set(ABSTRACT)
    _subclass()()                                   # complete: fine
    for name in ABSTRACT:
        with pytest.raises(TypeError, match=name):
            _subclass(name)()
    mixture_base = PointPosterior.__mro__[1]           # the point/ensemble base adds its own
    assert "_stack" in mixture_base.__abstractmethods__
    with pytest.raises(TypeError, match="_stack"):
        type("NoStack", (mixture_base,), {k: v for k, v in vars(_subclass()).items() if k in ABSTRACT})()


@pytest.mark.parametrize("cls", RESULT_CLASSES)
def test_signatures_follow_the_convention(cls):
    """num_samples=None everywhere; predictions default to seed=0, ``sample`` to seed=None."""
    import inspect

    c = _result_class(cls)
    for meth in ("predict", "predict_proba", "log_predictive_density", "to_arviz"):
        p = inspect.signature(getattr(c, meth)).parameters
        assert p["num_samples"].default is None, (cls, meth)
        assert p["seed"].default == 0 and p["seed"].default is not False, (cls, meth)
    p = inspect.signature(c.sample).parameters
    assert p["num_samples"].default is None and p["seed"].default is None, cls


def _num_stored(res):
    if isinstance(res, bb.gibbs.GibbsResult):
        return res.num_chains * res.num_samples
    if isinstance(res, EnsemblePosterior):
        return res.num_members
    return 1


@pytest.mark.parametrize("name", list(CASES))
def test_predict_returns_the_observation_moments(name):
    """Regression: the predictive moments of y; classifiers: the moments of the one-hot label,
    ``(p, p(1 − p))`` with one column P(y = 1) for the one-output links; always ``(n, d_out)``."""
    res, X, y, kw = _get(name)
    m, v = res.predict(X, **kw)
    assert _h(m).shape == _h(v).shape == (X.shape[0], res.net.d_out)
    if res.is_classifier:
        p = _h(res.predict_proba(X, **kw))
        if res.likelihood in ("bernoulli", "probit"):
            p = p[:, 1:]
        np.testing.assert_array_equal(_h(m), p)
        np.testing.assert_array_equal(_h(v), p * (1.0 - p))


@pytest.mark.parametrize("name", list(CASES))
def test_default_num_samples_and_seed(name):
    """``num_samples=None`` is ``default_num_samples`` (every stored draw when that is None) and the
    predictions' default seed is 0: two default calls agree bitwise, and equal the explicit call."""
    res, X, y, kw = _get(name)
    base = {k: v for k, v in kw.items() if k not in ("num_samples", "seed")}
    dflt = _h(res.log_predictive_density(X, y, reduce=False, **base))
    np.testing.assert_array_equal(dflt, _h(res.log_predictive_density(X, y, reduce=False, **base)))
    explicit = dict(base, seed=0)
    if res.default_num_samples is not None:
        explicit["num_samples"] = res.default_num_samples
    np.testing.assert_array_equal(dflt, _h(res.log_predictive_density(X, y, reduce=False, **explicit)))
    assert res.sample()[0].shape[0] == (res.default_num_samples or _num_stored(res))
    if res.default_num_samples is not None:
        # not vacuous: these predictives do draw, so another seed gives other numbers
        assert not np.array_equal(dflt, _h(res.log_predictive_density(X, y, reduce=False, **dict(base, seed=1))))


def test_gibbs_classifier_latent_moments_stay_reachable():
    """``predict(latent=True)``: the mixture moments of the latent Gaussian output (what a Gibbs
    classifier's ``predict`` returned before the common convention)."""
    res, X, y, kw = _get("gibbs_probit")
    m, v = res.predict(X, latent=True)
    F = _h(res.predict_samples(X)).reshape(-1, X.shape[0], 1)
    dy = _h(res.delta_y).reshape(-1)
    np.testing.assert_allclose(_h(m), F.mean(axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(_h(v), F.var(axis=0) + dy.mean(), rtol=1e-10)


def test_one_file_layer_for_results_and_checkpoints(tmp_path):
    """Results and run checkpoints are written and read by blockbayes._backend.io: each refuses
    the other's file with its own "not a blockbayes ..." message, and the metadata name is reserved."""
    from blockbayes._backend.io import NotABlockbayesFile, load_npz, save_npz
    from blockbayes.driver import load_checkpoint

    res = _get("point_reg")[0]
    path = tmp_path / "r.npz"
    res.save(path)
    with pytest.raises(ValueError, match="not a blockbayes checkpoint file"):
        load_checkpoint(path)
    arrays, meta = load_npz(path)
    assert meta["kind"] == "PointPosterior" and set(arrays) == {f"weights_{l}" for l in range(res.net.num_layers)}
    with pytest.raises(ValueError, match="reserved"):
        save_npz(tmp_path / "x.npz", {"meta": np.zeros(1)}, {})
    save_npz(tmp_path / "c.npz", {"a": np.arange(3)}, {"format": "other"}, meta_key="__meta__", atomic=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz", "r.npz"]      # no temporary left
    with pytest.raises(NotABlockbayesFile, match="not a blockbayes result file"):
        bb.posterior.load(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="not a blockbayes checkpoint file"):
        load_checkpoint(tmp_path / "c.npz")
