"""Block VI family: shapes, dtypes, backends, errors, reproducibility, result surface, and the exact
special cases of every method (linear model, target-scheme properties, hand-written gradients).

The exactness suite (CAVI = exact posterior on the linear model, ELBO ascent after every block,
the ReLU factor against quadrature, the tiny-net variance table) is validation/test_vi_exact.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import vi
from blockbayes._backend import random as bbr
from blockbayes.vi import cavi, mean_field, rao_blackwell, sampled, targets

pytestmark = pytest.mark.usefixtures("one_blas_thread")   # BLAS on one thread (conftest.py)


def _data(n=25, d=3, seed=0, dtype=np.float64, d_out=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    W = rng.standard_normal((d, d_out))
    y = (np.tanh(X @ W) + 0.1 * rng.standard_normal((n, d_out))).astype(dtype)
    return X, (y[:, 0] if d_out == 1 else y)


NETS = [
    bb.MLP([3, 1], "identity", delta=0.05),
    bb.MLP([3, 4, 1], "relu", delta=0.05),
    bb.MLP([3, 4, 2, 2], "leaky_relu", slope=0.1, delta={"Z": 0.05, "X": 0.02, "y": 0.1}),
    bb.MLP([3, 3, 2, 1], "identity", delta=0.05),
]
IDS = [f"{n.activation}-{'x'.join(map(str, n.widths))}" for n in NETS]


def _y_for(net, y):
    return y if net.d_out == 1 else np.stack([y, -y], axis=1)[:, : net.d_out]


# ------------------------------------------------------------------------------- the ReLU factor

def test_relu_factor_finite_and_consistent_over_extreme_regimes():
    a = np.linspace(-40, 40, 81)
    out = []
    for dz in (1e-4, 1e-2, 1.0):
        for ratio in (1e-4, 1e-2, 1.0, 1e2, 1e4):
            dx = dz * ratio
            A, Xv = np.meshgrid(a * math.sqrt(dz), np.linspace(-100, 100, 41) * math.sqrt(dz))
            for s in (0.0, 0.1, 1.0):
                m = vi.relu_factor(A, Xv, dz, dx, s)
                for name in m._fields:
                    assert np.all(np.isfinite(getattr(m, name))), (name, dz, ratio, s)
                assert np.all(m.var >= 0) and np.all(m.f_var >= 0)
                assert np.all((m.prob_pos >= 0) & (m.prob_pos <= 1))
                out.append(m)
    # identity: the factor is the Gaussian N(m+, s+^2) exactly
    dz, dx = 0.3, 0.2
    A = np.linspace(-3, 3, 7)
    Xv = np.linspace(2, -2, 7)
    m = vi.relu_factor(A, Xv, dz, dx, 1.0)
    s2 = dz * dx / (dz + dx)
    np.testing.assert_allclose(m.mean, (dx * A + dz * Xv) / (dx + dz), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.var, s2, rtol=1e-12)
    np.testing.assert_allclose(m.entropy, 0.5 * np.log(2 * np.pi * np.e * s2), rtol=1e-12)


def test_relu_factor_float32_and_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    a = np.linspace(-3, 3, 11)
    x = np.linspace(2, -1, 11)
    ref = vi.relu_factor(a, x, 0.1, 0.05)
    m32 = vi.relu_factor(a.astype(np.float32), x.astype(np.float32), 0.1, 0.05)
    assert m32.mean.dtype == np.float32
    np.testing.assert_allclose(m32.entropy, ref.entropy, rtol=1e-4, atol=1e-5)
    ms = vi.relu_factor(xps.asarray(a), xps.asarray(x), 0.1, 0.05)
    assert bb._backend.namespace(ms.mean) is xps
    np.testing.assert_allclose(np.asarray(ms.var._array), ref.var, rtol=1e-12)


def test_inverse_mills_tails():
    t = np.array([-1e3, -40.0, -5.0, 0.0, 5.0, 40.0, 1e3])
    r = vi.inverse_mills(t)
    assert np.all(np.isfinite(r)) and np.all(r >= 0)
    np.testing.assert_allclose(r[0], 1e3 + 1e-3, rtol=1e-9)         # r(t) ≈ -t - 1/t
    assert r[-1] == 0.0
    np.testing.assert_allclose(r[3], math.sqrt(2 / math.pi), rtol=1e-14)


# ------------------------------------------------------------------------------- CAVI

@pytest.mark.parametrize("net", NETS, ids=IDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cavi_shapes_dtypes_no_mutation(net, dtype):
    X, y = _data(dtype=dtype)
    y = _y_for(net, y)
    X0, y0 = X.copy(), y.copy()
    res = cavi.run(net, X, y, num_steps=6, num_restarts=2, seed=0, progress=False)
    assert np.array_equal(X, X0) and np.array_equal(y, y0)
    assert res.method == "cavi" and res.cov_kind == "shared" and res.num_components == 2
    for M, S, (do, di) in zip(res.means, res.covs, net.weight_shapes()):
        assert M.shape == (2, do, di) and S.shape == (2, di, di)
        assert M.dtype == dtype and S.dtype == dtype
        assert np.all(np.isfinite(M)) and np.all(np.linalg.eigvalsh(S.astype(np.float64)) > 0)
    assert res.elbo.shape == (2,) and res.trace["elbo"].shape == (2, 6)
    st = res.final_state
    for xi, Sg, h in zip(st.post_mean, st.post_cov, net.widths[1:-1]):
        assert xi.shape == (2, X.shape[0], h) and Sg.shape == (2, h, h)
    mean, var = res.predict(X[:5], num_samples=50)
    assert mean.shape == (5, net.d_out) and var.shape == (5, net.d_out) and mean.dtype == dtype
    assert np.all(var > 0)
    lpd = res.log_predictive_density(X, y, num_samples=50)
    assert lpd.shape == () and np.isfinite(lpd)


def test_cavi_step_is_pure_and_deterministic():
    X, y = _data()
    net = NETS[2]
    y = _y_for(net, y)
    s0 = cavi.init(bbr.key(1), net, X, y, num_restarts=2)
    copies = [np.array(a, copy=True) for grp in s0 for a in grp]
    s1, i1 = cavi.step(s0, net, X, y)
    s2, i2 = cavi.step(s0, net, X, y)
    for a, b in zip([a for grp in s0 for a in grp], copies):
        assert np.array_equal(a, b)
    np.testing.assert_array_equal(i1.elbo, i2.elbo)
    for a, b in zip(s1.mean, s2.mean):
        np.testing.assert_array_equal(a, b)


def test_cavi_seed_reproducible_and_restarts_differ():
    X, y = _data()
    net = NETS[1]
    a = cavi.run(net, X, y, num_steps=5, num_restarts=3, seed=4, progress=False)
    b = cavi.run(net, X, y, num_steps=5, num_restarts=3, seed=4, progress=False)
    c = cavi.run(net, X, y, num_steps=5, num_restarts=3, seed=5, progress=False)
    np.testing.assert_array_equal(a.means[0], b.means[0])
    assert not np.array_equal(a.means[0], c.means[0])
    assert not np.allclose(a.means[0][0], a.means[0][1])


def test_cavi_tol_stops_early_and_progress_bar_runs():
    X, y = _data()
    res = cavi.run(NETS[0], X, y, num_steps=50, tol=1e-12, seed=0, progress=True)
    assert res.config["sweeps"] == 2            # linear model: exact after one sweep, no change after
    tr = res.trace["elbo"][0]
    assert abs(tr[-1] - tr[-2]) <= 1e-12 * (1 + abs(tr[-1]))
    res = cavi.run(NETS[1], X, y, num_steps=12, tol=1e-12, seed=0, progress=True)
    assert res.config["sweeps"] == 12


def test_cavi_array_api_strict_backend():
    xps = pytest.importorskip("array_api_strict")
    X, y = _data()
    net = NETS[2]
    y = _y_for(net, y)
    ref = cavi.run(net, X, y, num_steps=3, num_restarts=2, seed=0, progress=False)
    res = cavi.run(net, xps.asarray(X), xps.asarray(y), num_steps=3, num_restarts=2, seed=0, progress=False)
    assert bb._backend.namespace(res.means[0]) is xps
    for a, b in zip(ref.means, res.means):
        np.testing.assert_allclose(np.asarray(b._array), a, rtol=1e-10, atol=1e-12)
    mean, var = res.predict(xps.asarray(X[:3]), num_samples=20)
    assert bb._backend.namespace(mean) is xps and mean.shape == (3, 2)


def test_cavi_init_from_weights_and_state():
    X, y = _data()
    net = NETS[1]
    W = tuple(np.zeros(s) + 0.1 for s in net.weight_shapes())
    st = cavi.init(bbr.key(0), net, X, y, num_restarts=2, init=W)
    np.testing.assert_array_equal(st.mean[0][1], W[0])
    res = cavi.run(net, X, y, num_steps=2, init=st, progress=False)
    res2 = cavi.run(net, X, y, num_steps=1, init=res.final_state, progress=False)
    assert res2.trace["elbo"][0, 0] >= res.trace["elbo"][0, -1] - 1e-9


# ------------------------------------------------------------------------------- input errors

@pytest.mark.parametrize("method", ["cavi", "rao_blackwell", "sampled", "targets"])
def test_bad_input_errors(method):
    X, y = _data()
    net = NETS[1]
    kw = dict(method=method, progress=False)
    with pytest.raises(TypeError):
        vi.run("not a net", X, y, **kw)
    with pytest.raises(ValueError, match="columns"):
        vi.run(net, X[:, :2], y, **kw)
    with pytest.raises(ValueError, match="rows"):
        vi.run(net, X, y[:-1], **kw)
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        vi.run(net, Xn, y, **kw)
    with pytest.raises(TypeError, match="float"):
        vi.run(net, X.astype(np.int64), y, **kw)
    if method == "rao_blackwell":   # classifiers are supported (tests/test_vi_classification.py); CAVI starts are not
        with pytest.raises(ValueError, match="Gaussian-only"):
            vi.run(bb.MLP([3, 4, 1], likelihood="probit"), X, (y > 0).astype(np.int64), init="cavi", **kw)
    else:
        with pytest.raises(NotImplementedError, match="Gaussian regression"):
            vi.run(bb.MLP([3, 4, 1], likelihood="probit"), X, (y > 0).astype(np.float64), **kw)


def test_bad_options():
    X, y = _data()
    net = NETS[1]
    with pytest.raises(ValueError, match="method"):
        vi.run(net, X, y, method="svgd")
    with pytest.raises(ValueError, match="num_steps"):
        cavi.run(net, X, y, num_steps=0)
    with pytest.raises(ValueError, match="init"):
        cavi.run(net, X, y, init="zeros", progress=False)
    with pytest.raises(ValueError, match="kappa"):
        sampled.run(net, X, y, kappa=0.4, progress=False)
    with pytest.raises(ValueError, match="use"):
        targets.run(net, X, y, use="median", progress=False)
    with pytest.raises(ValueError, match="schedule"):
        mean_field.run(net, X, y, schedule="linear", progress=False)
    with pytest.raises(ValueError, match="device"):
        cavi.run(net, X, y, device="tpu")


def test_cuda_request_without_gpu_is_a_clear_error():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a GPU is present: the no-GPU error path is not reachable")
    except Exception:
        pass
    X, y = _data()
    with pytest.raises(bb._backend.BackendUnavailableError):
        cavi.run(NETS[1], X, y, device="cuda", progress=False)


@pytest.mark.gpu
def test_cupy_results_stay_on_the_gpu_and_match_numpy():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            pytest.skip("no CUDA device")
    except Exception:
        pytest.skip("no CUDA device")
    X, y = _data()
    net = NETS[2]
    y = _y_for(net, y)
    ref = cavi.run(net, X, y, num_steps=5, num_restarts=2, seed=0, progress=False)
    res = cavi.run(net, X, y, num_steps=5, num_restarts=2, seed=0, device="cuda", progress=False)
    assert isinstance(res.means[0], cupy.ndarray)
    for a, b in zip(ref.means, res.means):
        np.testing.assert_allclose(cupy.asnumpy(b), a, rtol=1e-8, atol=1e-10)
    m, v = res.predict(cupy.asarray(X[:3]), num_samples=20)
    assert isinstance(m, cupy.ndarray) and m.shape == (3, 2)
    rb = rao_blackwell.run(net, X, y, num_samples=5, num_warmup=2, num_chains=2, cavi_iters=3,
                           cavi_restarts=2, seed=0, device="cuda", progress=False)
    assert isinstance(rb.covs[0], cupy.ndarray) and bool(cupy.all(cupy.isfinite(rb.covs[0])))
    mf = mean_field.run(net, X, y, num_steps=5, seed=0, device="cuda", progress=False)
    assert isinstance(mf.means[0], cupy.ndarray)
    sp = sampled.run(net, X, y, num_steps=2, num_draws=2, cavi_iters=2, seed=0, device="cuda", progress=False)
    tp = targets.run(net, X, y, num_steps=2, seed=0, device="cuda", progress=False)
    assert isinstance(sp.means[0], cupy.ndarray) and isinstance(tp.means[0], cupy.ndarray)


# ------------------------------------------------------------------------------- result surface

def test_result_sample_predict_save_load(tmp_path):
    X, y = _data()
    net = NETS[2]
    y = _y_for(net, y)
    res = cavi.run(net, X, y, num_steps=10, num_restarts=3, seed=0, progress=False)
    W = res.sample(4000, seed=1)
    assert [w.shape for w in W] == [(4000,) + s for s in net.weight_shapes()]
    b = res.best
    assert b == int(np.argmax(res.elbo))
    # draws have the right moments (loose, deterministic seed): row covariance of layer 0
    emp = np.cov(W[0][:, 1, :].T)
    np.testing.assert_allclose(emp, res.covs[0][b], atol=6 * np.max(np.diag(res.covs[0][b])) / math.sqrt(4000) * 3)
    np.testing.assert_allclose(W[0].mean(0), res.means[0][b], atol=5 * math.sqrt(np.max(np.diag(res.covs[0][b]))) / 50)
    # same seed -> same draws; mixture splits evenly over components
    np.testing.assert_array_equal(res.sample(10, seed=3)[1], res.sample(10, seed=3)[1])
    mix = res.sample(9, seed=0, components="mixture")
    assert mix[0].shape[0] == 9
    with pytest.raises(ValueError):
        res.sample(5, components=7)
    with pytest.raises(ValueError):
        res.sample(0)
    m1, v1 = res.predict(X[:4], seed=2, num_samples=200)
    m2, v2 = res.predict(X[:4], seed=2, num_samples=200)
    np.testing.assert_array_equal(m1, m2)
    _, vg = res.predict(X[:4], kind="generative", seed=2, num_samples=200)
    assert np.all(vg > 0)
    lpd = res.log_predictive_density(X, y, reduce=False, num_samples=100)
    assert lpd.shape == (X.shape[0],)
    with pytest.raises(vi.NotAClassifierError):
        res.predict_proba(X)
    with pytest.raises(NotImplementedError):      # also catchable as the Gibbs result's error
        res.predict_proba(X)
    sd = res.marginal_sd()
    assert sd[1].shape == (3,) + net.weight_shapes()[1]
    path = tmp_path / "cavi.npz"
    res.save(path)
    back = vi.load(path)
    assert back.method == "cavi" and back.net == net and back.cov_kind == "shared"
    for a, c in zip(res.means, back.means):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(back.trace["elbo"], res.trace["elbo"])
    np.testing.assert_array_equal(back.predict(X[:4], seed=2, num_samples=200)[0], m1)
    with pytest.raises(ValueError):
        bb.vi.VIResult.load(path).__class__(net=net, method="x", means=res.means, covs=res.covs,
                                             cov_kind="full", delta_y=res.delta_y)


# ------------------------------------------------------------------------------- Rao–Blackwell

def _linear_exact(X, y, lam_w, lam_b, delta):
    n, d = X.shape
    Xt = np.hstack([X, np.ones((n, 1))])
    lam = np.r_[np.full(d, lam_w), lam_b]
    P = np.diag(lam) + Xt.T @ Xt / delta
    S = np.linalg.inv(P)
    return (S @ Xt.T @ y / delta).T, S


def test_rao_blackwell_on_the_linear_model_is_exact():
    """L = 1: the row conditional does not depend on any auxiliary, so every draw's conditional is
    the exact posterior, Cov_s(m) = 0, and the Rao–Blackwell Gaussian is exact."""
    X, y = _data()
    Y = np.stack([y, 2 * y], axis=1)
    net = bb.MLP([3, 2], "identity", prior_prec=[(2.0, 0.5)], delta={"y": 0.1})
    res = rao_blackwell.run(net, X, Y, num_samples=5, num_warmup=1, num_chains=2, init="prior", seed=0,
                            progress=False)
    m, S = _linear_exact(X, Y, 2.0, 0.5, 0.1)
    np.testing.assert_allclose(res.means[0][0], m, rtol=1e-10, atol=1e-12)
    for i in range(2):
        np.testing.assert_allclose(res.covs[0][0, i], S, rtol=1e-10, atol=1e-14)
    assert res.cov_kind == "row" and res.num_components == 1


def test_rao_blackwell_statistics_match_direct_formula():
    """Welford accumulation == mean of covariances + covariance of means over the stored states."""
    from blockbayes import gibbs

    X, y = _data()
    net = NETS[1]
    y2 = y[:, None]
    st = gibbs.init(bbr.key(0), net, X, y2, num_chains=3)
    stats = rao_blackwell.init_stats(net, 3, X)
    ms, cs = [], []
    key = bbr.key(1)
    for _ in range(6):
        key, sub = bbr.split(key)
        st, _ = gibbs.step(sub, st, net, X, y2)
        stats = rao_blackwell.accumulate(stats, st, net, X, y2)
        cm = rao_blackwell.conditional_moments(st, net, X, y2)
        ms.append([c[0] for c in cm])
        cs.append([c[1] for c in cm])
    means, covs, within = rao_blackwell.finalize(stats)
    for l in range(2):
        M = np.stack([m[l] for m in ms])                     # (S, C, k, k1)
        Mf = M.reshape(-1, *M.shape[2:])
        grand = Mf.mean(0)
        D = Mf - grand
        cov_m = np.einsum("sij,sik->ijk", D, D) / Mf.shape[0]
        cond = np.stack([c[l] for c in cs]).mean((0, 1))
        np.testing.assert_allclose(means[l][0], grand, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(covs[l][0], cond[None] + cov_m, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(within[l][0], cond, rtol=1e-10)


def test_rao_blackwell_run_surface_and_default_method():
    X, y = _data()
    net = NETS[1]
    res = vi.run(net, X, y, num_samples=8, num_warmup=4, num_chains=2, cavi_iters=5, cavi_restarts=2,
                 seed=0, progress=False)
    assert res.method == "rao_blackwell"
    assert res.covs[0].shape == (1,) + (4, 4, 4)
    g = res.extras["samples"]
    assert g.weights[0].shape == (2, 8, 4, 4)
    for l in range(2):
        # the corrected covariance dominates the conditional one
        diff = res.covs[l][0] - res.extras["conditional_covs"][l][0][None]
        assert np.all(np.linalg.eigvalsh(diff) > -1e-12)
    m, v = res.predict(X[:3], num_samples=30)
    assert m.shape == (3, 1) and np.all(v > 0)


# ------------------------------------------------------------------------------- sample-based

def test_sampled_on_the_linear_model_is_exact():
    """L = 1: η(X, Z) is constant, so the averaged natural parameters equal the exact ones at
    every step (ρ_0 = 1)."""
    X, y = _data()
    net = bb.MLP([3, 1], "identity", prior_prec=[(2.0, 0.5)], delta={"y": 0.1})
    res = sampled.run(net, X, y, num_steps=3, num_draws=2, init="prior", seed=0, progress=False)
    m, S = _linear_exact(X, y[:, None], 2.0, 0.5, 0.1)
    np.testing.assert_allclose(res.means[0][0], m, rtol=1e-10)
    np.testing.assert_allclose(res.covs[0][0], S, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("net", NETS[1:3], ids=IDS[1:3])
def test_sampled_shapes_and_positive_definite(net):
    X, y = _data()
    y = _y_for(net, y)
    res = sampled.run(net, X, y, num_steps=4, num_draws=3, num_restarts=2, cavi_iters=3, seed=0,
                      progress=False)
    for S in res.covs:
        assert np.all(np.linalg.eigvalsh(S) > 0)
    assert res.trace["change"].shape == (2, 4)
    np.testing.assert_allclose(res.trace["rho"][0], [(t + 1) ** -0.7 for t in range(4)])
    st = res.final_state
    assert st.pre[0].shape == (6, X.shape[0], net.widths[1])


def test_sampled_num_draws_and_its_deprecated_spelling():
    """Draws per iteration are ``num_draws`` (``num_samples`` means samples kept everywhere else);
    the old spelling warns and gives the same run."""
    X, y = _data()
    net = bb.MLP([3, 4, 1], delta=0.05)
    new = sampled.run(net, X, y, num_steps=2, num_draws=2, init="prior", seed=0, progress=False)
    with pytest.warns(DeprecationWarning, match="'num_samples' is deprecated, use 'num_draws'"):
        old = sampled.run(net, X, y, num_steps=2, num_samples=2, init="prior", seed=0, progress=False)
    for a, b in zip(old.means, new.means):
        np.testing.assert_array_equal(a, b)
    assert new.config["num_draws"] == 2 and "num_samples" not in new.config
    with pytest.raises(TypeError, match="both 'num_draws'"):
        sampled.run(net, X, y, num_steps=1, num_draws=2, num_samples=2, progress=False)


# ------------------------------------------------------------------------------- target scheme

def test_targets_linear_model_one_iteration_is_exact():
    X, y = _data()
    net = bb.MLP([3, 1], "identity", prior_prec=[(2.0, 0.5)], delta={"y": 0.1})
    res = targets.run(net, X, y, num_steps=1, seed=0, progress=False)
    m, S = _linear_exact(X, y[:, None], 2.0, 0.5, 0.1)
    np.testing.assert_allclose(res.means[0][0], m, rtol=1e-10)
    np.testing.assert_allclose(res.covs[0][0], S, rtol=1e-10)


@pytest.mark.parametrize("activation,slope", [("relu", 0.0), ("leaky_relu", 0.2), ("identity", 1.0)])
def test_targets_fixed_point_when_output_fits(activation, slope):
    """(P2): if the forward output equals the top target, every target equals its forward value."""
    rng = np.random.default_rng(3)
    net = bb.MLP([3, 5, 4, 2], activation, slope=slope if activation == "leaky_relu" else 0.01, delta=0.05)
    X = rng.standard_normal((30, 3))
    W = tuple(rng.standard_normal((2,) + s) for s in net.weight_shapes())
    F = bb.model.forward(net, tuple(w[0] for w in W), X)
    H, A, T, TX = targets.compute_targets(W, net, X, F)
    np.testing.assert_allclose(T[-1][0], A[-1][0], atol=1e-12)
    for l in range(net.num_layers - 1):
        np.testing.assert_allclose(T[l][0], A[l][0], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(TX[l][0], H[l + 1][0], rtol=1e-10, atol=1e-10)


def test_targets_pseudo_inverse_limit():
    """(P1): as Δ_X/Δ_Z → ∞ the post-activation target is H + R W^{+⊤} (min-norm correction)."""
    rng = np.random.default_rng(4)
    net = bb.MLP([3, 5, 2], "relu", delta={"Z": 1e-9, "X": 1.0, "y": 1e-9})
    X = rng.standard_normal((10, 3))
    y = rng.standard_normal((10, 2))
    W = tuple(rng.standard_normal((1,) + s) for s in net.weight_shapes())
    H, A, T, TX = targets.compute_targets(W, net, X, y)
    Ww, b = W[1][0, :, :-1], W[1][0, :, -1]
    R = y - b - H[1][0] @ Ww.T
    np.testing.assert_allclose(TX[0][0], H[1][0] + R @ np.linalg.pinv(Ww).T, rtol=1e-6, atol=1e-7)


def test_preactivation_mode_is_the_argmax():
    a = np.linspace(-2, 2, 9)
    x = np.linspace(1.5, -1.5, 9)
    for s in (0.0, 0.3, 1.0):
        z = targets.preactivation_mode(a, x, 0.1, 0.05, s)
        grid = np.linspace(-5, 5, 200001)[:, None]
        f = np.where(grid >= 0, grid, s * grid)
        val = -(grid - a) ** 2 / 0.2 - (x - f) ** 2 / 0.1
        np.testing.assert_allclose(z, grid[np.argmax(val, axis=0), 0], atol=1e-4)


def test_targets_run_surface_and_best_by_score():
    X, y = _data()
    net = NETS[1]
    res = targets.run(net, X, y, num_steps=8, num_restarts=3, seed=0, progress=False)
    assert res.trace["score"].shape == (3, 8) and res.trace["mse"].shape == (3, 8)
    assert res.best == int(np.argmax(res.trace["score"][:, -1]))
    r2 = targets.run(net, X, y, num_steps=3, use="sample", seed=0, progress=False)
    assert np.all(np.isfinite(r2.means[0]))


# ------------------------------------------------------------------------------- mean-field baseline

@pytest.mark.parametrize("lik,d_out", [("gaussian", 2), ("bernoulli", 1), ("categorical", 3)])
def test_mean_field_gradients_match_finite_differences(lik, d_out):
    """The reparameterised gradient with fixed noise is the exact gradient of the MC ELBO."""
    rng = np.random.default_rng(0)
    net = bb.MLP([3, 4, d_out], "leaky_relu", slope=0.1, prior_prec=[(2.0, 0.5), (1.0, 3.0)],
                 delta={"y": 0.3})
    X = rng.standard_normal((12, 3))
    if lik == "gaussian":
        Y = rng.standard_normal((12, d_out))
    elif lik == "bernoulli":
        Y = (rng.random((12, 1)) > 0.5).astype(float)
    else:
        Y = np.eye(d_out)[rng.integers(0, d_out, 12)]
    st = mean_field.init(bbr.key(0), net, X, num_restarts=2, init_sd=0.3)
    key = bbr.key(7)
    kw = dict(likelihood=lik, num_mc=2, scale=1.7, learn_noise=(lik == "gaussian"))
    f0, grads = mean_field.elbo_gradients(key, st, net, X, Y, **kw)
    L = net.num_layers
    params = list(st.mu) + list(st.rho) + [st.log_delta]
    h = 1e-6
    for p_idx, P in enumerate(params):
        if p_idx == 2 * L and lik != "gaussian":
            continue
        flat = np.ravel(P)
        for j in rng.choice(flat.size, size=min(5, flat.size), replace=False):
            def at(eps):
                Q = np.array(P, copy=True)
                np.ravel(Q)[j] += eps
                ps = list(params)
                ps[p_idx] = Q
                s2 = st._replace(mu=tuple(ps[:L]), rho=tuple(ps[L:2 * L]), log_delta=ps[-1])
                return mean_field.elbo_gradients(key, s2, net, X, Y, **kw)[0]
            fd = (at(h) - at(-h)) / (2 * h)                    # d ELBO, per restart
            g = -np.ravel(grads[p_idx])[j]
            c = np.unravel_index(j, P.shape)[0] if P.ndim > 1 else j
            np.testing.assert_allclose(g, fd[c], rtol=2e-5, atol=2e-6)


def test_mean_field_regression_and_classification_surface():
    X, y = _data(n=40)
    net = bb.MLP([3, 6, 1], "relu", delta=0.05)
    res = mean_field.run(net, X, y, num_steps=150, lr=2e-2, num_restarts=2, seed=0, progress=False)
    tr = res.trace["elbo"]
    assert tr.shape == (2, 150) and np.all(tr[:, -10:].mean(1) > tr[:, :10].mean(1))
    assert res.model == "standard" and res.cov_kind == "diag"
    m, v = res.predict(X[:5], num_samples=64)
    assert m.shape == (5, 1) and np.all(v > 0)
    with pytest.raises(ValueError, match="generative"):
        res.predict(X[:5], kind="generative")
    rl = mean_field.run(net, X, y, num_steps=30, learn_noise=True, batch_size=16, seed=0, progress=False)
    assert rl.delta_y.shape == (1,) and rl.delta_y[0] != net.delta_y
    labels = (y > np.median(y)).astype(np.int64)
    cn = bb.MLP([3, 6, 1], "relu", likelihood="probit")
    rc = mean_field.run(cn, X, labels, num_steps=60, seed=0, progress=False)
    p = rc.predict_proba(X[:7], num_samples=32)
    assert p.shape == (7, 2) and np.allclose(p.sum(1), 1)
    lpd = rc.log_predictive_density(X, labels, num_samples=32)
    assert np.isfinite(lpd) and lpd < 0
    y3 = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    mc = mean_field.run(bb.MLP([3, 5, 3], "relu", likelihood="multinomial_probit"), X, y3, num_steps=40,
                        seed=0, progress=False)
    assert mc.likelihood == "categorical"
    p3 = mc.predict_proba(X[:4], num_samples=16)
    assert p3.shape == (4, 3) and np.allclose(p3.sum(1), 1)
    with pytest.raises(ValueError):
        mc.log_predictive_density(X, y3 + 3)
