"""Unit tests of the gibbs add-ons: MAP starts, function-space diagnostics, non-centred move
(gradient and Gauss–Newton against finite differences), annealed warm-up. Deterministic; the
exactness of the move is tested in validation/test_gibbs_moves.py."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import sine_data

import blockbayes as bb
from blockbayes import gibbs
from blockbayes._backend import random as bbr
from blockbayes.gibbs.anneal import AnnealedDelta
from blockbayes.gibbs.diagnostics import ConvergenceWarning, default_probe, function_summary
from blockbayes.gibbs.moves import (NonCentredMove, frozen_noises, gauss_newton_precision, log_target_and_grad)


@pytest.mark.parametrize("widths, activation", [([3, 4, 1], "relu"), ([3, 4, 3, 2], "leaky_relu"),
                                                ([3, 2, 2], "identity")])
def test_gradient_and_gauss_newton_match_finite_differences(widths, activation):
    X, y = sine_data()
    y = np.repeat(y, widths[-1], axis=1)
    net = bb.MLP(widths, activation, slope=0.2, prior_prec=1.0, delta={"Z": 1e-2, "X": 1e-2, "y": 0.1})
    st = gibbs.init(bbr.key(1), net, X, y, num_chains=2)
    T = gibbs.output_targets(net, y, None, 2, X)
    rng = np.random.default_rng(2)
    for l in range(net.num_layers - 1):
        xi, eta = frozen_noises(st, net, X, l)
        W = st.weights[l]
        lp, g, pre, post, out = log_target_and_grad(W, st, net, X, T, l, xi, eta)
        # the frozen-noise forward pass at the current weights reproduces the state's latents
        for j, m in enumerate(range(l, net.num_layers - 1)):
            np.testing.assert_allclose(pre[j], st.pre[m], atol=1e-12)
            np.testing.assert_allclose(post[j], st.post[m], atol=1e-12)
        E = rng.standard_normal(W.shape)
        eps = 1e-6
        f = lambda A: log_target_and_grad(A, st, net, X, T, l, xi, eta)[0]
        fd = (f(W + eps * E) - f(W - eps * E)) / (2 * eps)
        np.testing.assert_allclose(np.sum(g * E, axis=(1, 2)), fd, rtol=1e-6, atol=1e-5)
        P = W[0].size
        J = np.zeros((2, out[0].size, P))
        for i in range(P):
            D = np.zeros(P)
            D[i] = eps
            D = D.reshape(W.shape[1:])
            o1 = log_target_and_grad(W + D, st, net, X, T, l, xi, eta)[4]
            o2 = log_target_and_grad(W - D, st, net, X, T, l, xi, eta)[4]
            J[:, :, i] = ((o1 - o2) / (2 * eps)).reshape(2, -1)
        GN = np.einsum("cni,cnj->cij", J, J) / 0.1 + np.eye(P)
        full = gauss_newton_precision(st, net, X, l, chunk=7)
        np.testing.assert_allclose(full[:, 0], GN, rtol=1e-6, atol=1e-6 * np.abs(GN).max())
        rows = gauss_newton_precision(st, net, X, l, blocks="rows", chunk=7)
        k, b = W.shape[1], W.shape[2]
        for i in range(k):
            np.testing.assert_allclose(rows[:, i], full[:, 0, i * b:(i + 1) * b, i * b:(i + 1) * b], rtol=1e-10,
                                       atol=1e-10 * np.abs(GN).max())


def test_run_with_move_schedule_and_summary(tmp_path):
    X, y = sine_data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = gibbs.run(net, X, y, num_samples=20, num_warmup=30, num_chains=2, seed=0, progress=False,
                      moves=NonCentredMove(steps=3, refresh_every=10), schedule=AnnealedDelta(start=0.1), probe=8,
                      init="prior", learn_noise=False)
        r_rows = gibbs.run(net, X, y, num_samples=20, num_warmup=30, num_chains=2, seed=0, progress=False,
                           moves=NonCentredMove(steps=3, precond="rows"), diagnose=False, init="prior",
                           learn_noise=False)
        assert 0 < r_rows.config["moves"]["accept"][0] <= 1
        r2 = gibbs.run(net, X, y, num_samples=20, num_warmup=30, num_chains=2, seed=0, progress=False,
                       moves=NonCentredMove(steps=3, refresh_every=10), schedule=AnnealedDelta(start=0.1), probe=8,
                      init="prior", learn_noise=False)
    for a, b in zip(r.weights, r2.weights):
        np.testing.assert_array_equal(a, b)                      # reproducible with the seed
    # the stored log joint is that of the state after the move
    np.testing.assert_allclose(r.log_joint[:, -1], gibbs.log_joint(r.final_state, net, X, y), rtol=1e-10)
    s = r.summary()
    assert s.names[:8] == [f"f[{p}]" for p in range(8)] and s.names[-1] == "log_joint"
    assert np.isfinite(s.max_rhat) and r.config["wall_time_s"] > 0
    assert "r_hat" in str(s) and "n_eff/s" in str(s)
    st = s.function_stats()                                      # the probe rows only, not the log joint
    rh, ess = np.asarray(s.columns["r_hat"])[:8], np.asarray(s.columns["n_eff"])[:8]
    assert st == {"max_rhat": float(np.max(rh)), "median_rhat": float(np.median(rh)), "min_ess": float(np.min(ess))}
    r.save(tmp_path / "r.npz")
    back = bb.posterior.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(back.probe, r.probe)
    np.testing.assert_allclose(function_summary(back).columns["mean"], s.columns["mean"])


def test_unmixed_run_warns_and_single_chain_summary():
    X, y = sine_data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta={"Z": 1e-4, "X": 1e-4, "y": 0.01})
    with pytest.warns(ConvergenceWarning, match="not mixed.*JointHMCMove"):
        gibbs.run(net, X, y, num_samples=10, num_warmup=0, num_chains=2, seed=0, progress=False, init="zero",
                  learn_noise=False)
    # a run that already has moves is told to run longer, not pointed at the move it has
    with pytest.warns(ConvergenceWarning, match="not mixed") as rec:
        gibbs.run(net, X, y, num_samples=10, num_warmup=4, num_chains=2, seed=0, progress=False, init="zero",
                  moves=NonCentredMove(steps=1), learn_noise=False)
    msg = str(rec[0].message)
    assert "run longer" in msg and "JointHMCMove" not in msg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = gibbs.run(net, X, y, num_samples=10, num_warmup=0, num_chains=1, seed=0, progress=False, diagnose=False,
                      init="prior", learn_noise=False)
    assert np.isfinite(r.summary().max_rhat)                      # split halves of the one chain
    P = default_probe(X, 5)
    np.testing.assert_array_equal(P, X[[0, 10, 20, 29, 39]])


def test_map_starts():
    X, y = sine_data()
    net = bb.MLP([3, 6, 1], "relu", prior_prec=1.0, delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    st_map = gibbs.run(net, X, y, num_samples=4, num_chains=3, seed=0, progress=False, init="map", learn_noise=True,
                       diagnose=False, num_warmup=0)
    st_sh = gibbs.run(net, X, y, num_samples=4, num_chains=3, seed=0, progress=False, init="map_shared", diagnose=False,
                      num_warmup=0, learn_noise=False)
    from blockbayes.gibbs.starts import map_starts

    w, dy, info = map_starts(bbr.key(3), net, X, y, num_chains=3, kind="ensemble", learn_noise=True)
    assert info["map_fits"] == 3 and dy.shape == (3,) and np.all(dy < 0.1)
    assert w[0].shape == (3, 6, 4) and not np.allclose(w[0][0], w[0][1])     # distinct fits
    F = bb.model.forward(net, tuple(W[0] for W in w), X)
    assert np.mean((F - y) ** 2) < 0.1                                         # a fit, not a prior draw
    w, dy, info = map_starts(bbr.key(3), net, X, y, num_chains=3, kind="map_shared")
    assert info["map_fits"] == 1 and dy is None and np.allclose(w[0][0], w[0][2])
    assert st_map.weights[0].shape == (3, 4, 6, 4) and st_sh.weights[0].shape == (3, 4, 6, 4)
    with pytest.raises(ValueError, match="kind"):
        map_starts(bbr.key(3), net, X, y, num_chains=3, kind="mode")


def test_map_starts_learn_noise_are_joint_fits():
    """With ``learn_noise`` each chain starts from the joint (weights, Δ_y) MAP under the sampler's
    noise hyperprior: chain c's weights and Δ_y are exactly ``map_fit(..., learn_noise=True)``
    with chain c's key, and a different hyperprior gives a different Δ_y (the prior is passed on);
    without ``learn_noise`` the fit is at the model's fixed Δ_y (``map_fit`` without noise)."""
    from blockbayes import laplace
    from blockbayes.gibbs.starts import JOINT_MAX_ITER, map_starts

    X, y = sine_data()
    net = bb.MLP([3, 6, 1], "relu", prior_prec=1.0, delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    w, dy, info = map_starts(bbr.key(5), net, X, y, num_chains=2, kind="map", learn_noise=True,
                             noise_prior=(1.0, 1e-2))
    keys = bbr.split(bbr.key(5), 2)
    for c in range(2):
        wc, ic = laplace.map_fit(net, X, y, seed=keys[c], learn_noise=True, noise_prior=(1.0, 1e-2), tol=1e-6,
                                 ftol=0.0, max_iter=JOINT_MAX_ITER, progress=False, return_info=True)
        assert all(np.array_equal(W[c], Wc) for W, Wc in zip(w, wc))
        assert float(dy[c]) == pytest.approx(max(float(ic["delta_y"]), 1e-6), rel=1e-12)
    _, dy_b, _ = map_starts(bbr.key(5), net, X, y, num_chains=2, kind="map", learn_noise=True,
                            noise_prior=(1.0, 10.0))
    assert np.all(np.asarray(dy_b) > np.asarray(dy))        # a heavier rate on 1/Δ_y: a larger Δ̂_y
    w0, dy0, _ = map_starts(bbr.key(5), net, X, y, num_chains=2, kind="map", learn_noise=False)
    wf = laplace.map_fit(net, X, y, seed=keys[0], max_iter=1000, progress=False)
    assert dy0 is None and all(np.array_equal(W[0], Wf) for W, Wf in zip(w0, wf))


def test_default_start_is_map():
    """``gibbs.run``'s default start is ``init="map"`` (issue 15): without ``init`` the run is
    bitwise the ``init="map"`` run, its first kept sample is near the MAP fits (not a prior
    draw), and ``init="prior"`` still gives prior starts."""
    import inspect

    assert inspect.signature(gibbs.run).parameters["init"].default == "map"
    X, y = sine_data()
    net = bb.MLP([3, 6, 1], "relu", prior_prec=1.0, delta={"Z": 1e-3, "X": 1e-3, "y": 0.01})
    kw = dict(num_samples=3, num_warmup=0, num_chains=2, seed=5, progress=False, learn_noise=True, diagnose=False)
    d = gibbs.run(net, X, y, **kw)
    m = gibbs.run(net, X, y, init="map", **kw)
    p = gibbs.run(net, X, y, init="prior", **kw)
    for a, b in zip(d.weights, m.weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(d.delta_y, m.delta_y)

    def mse(r):       # training MSE of the first kept sample of each chain, noise-free forward pass
        return [float(np.mean((bb.model.forward(net, tuple(W[c, 0] for W in r.weights), X) - y) ** 2))
                for c in range(2)]

    assert max(mse(d)) < 0.1 < min(mse(p))

def test_annealed_delta_schedule():
    net = bb.MLP([3, 4, 4, 1], "relu", delta={"Z": [1e-4, 0.5], "X": 1e-4, "y": 0.1})
    sch = AnnealedDelta(start=1e-1, fraction=0.5)
    dz0, dx0 = sch.deltas_at(net, 0, 100)
    assert dz0 == (1e-1, 0.5) and dx0 == (1e-1, 1e-1)           # a layer above start is left alone
    dz, _ = sch.deltas_at(net, 25, 100)
    assert dz[0] == pytest.approx(1e-1 * (1e-3) ** 0.5)
    assert sch.net_at(net, 50, 100) is net and sch.net_at(net, 150, 100) is net
    assert sch.net_at(net, 10, 100).delta_z[0] > net.delta_z[0]
    with pytest.raises(ValueError):
        AnnealedDelta(start=-1.0).deltas_at(net, 0, 10)


def test_move_bad_layers():
    X, y = sine_data()
    net = bb.MLP([3, 4, 1], "relu")
    st = gibbs.init(bbr.key(0), net, X, y, num_chains=1)
    with pytest.raises(ValueError, match="moved layers"):
        NonCentredMove(layers=(1,)).init(st, net, X, y)
    with pytest.raises(ValueError, match="steps"):
        NonCentredMove(steps=0).init(st, net, X, y)


# ------------------------------------------------------------------------- schedule: the cached Gram

def _annealed_run(seed=2):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, 3))
    y = np.sin(X[:, :1]) + 0.1 * rng.standard_normal((40, 1))
    net = bb.MLP([3, 6, 1], delta=1e-2)
    res = gibbs.run(net, X, y, num_samples=3, num_warmup=6, num_chains=2, seed=seed, progress=False,
                    diagnose=False, schedule=AnnealedDelta(start=0.3, fraction=1.0), init="prior", learn_noise=False)
    return np.concatenate([np.asarray(w).ravel() for w in res.weights])


def test_schedule_refactors_each_delta_from_the_runs_gram(monkeypatch):
    """Under an annealed Δ the run reuses its first-layer Gram (data only) and re-factors
    ``G + Δ_Z Λ`` for every new Δ: bitwise the run that recomputes everything each sweep.
    The same comparison rejects a broken twin that keeps the target net's Cholesky factor
    through the annealing (a cache not invalidated when Δ changes). Deterministic."""
    from blockbayes.gibbs import kernel as K

    ours = _annealed_run()
    real = K.precompute
    calls = []

    def recompute_all(net, X, **kw):          # the former code: no Gram handed over
        calls.append(kw.get("gram") is not None)
        kw.pop("gram", None)
        return real(net, X, **kw)

    monkeypatch.setattr(K, "precompute", recompute_all)
    fresh = _annealed_run()
    assert any(calls), "the run handed its Gram to the per-Δ factorisations"
    np.testing.assert_array_equal(ours, fresh)
    target = {}

    def stale(net, X, **kw):                  # broken twin: the first (target-net) cache for every Δ
        if "c" not in target:
            target["c"] = real(net, X, **kw)
        return target["c"]

    monkeypatch.setattr(K, "precompute", stale)
    assert not np.array_equal(ours, _annealed_run())


def test_precompute_gram_must_fit_thesine_data():
    X = np.ones((5, 3))
    net = bb.MLP([3, 2, 1], delta=1e-2)
    with pytest.raises(ValueError, match="augmented Gram"):
        gibbs.kernel.precompute(net, X, gram=np.eye(3))
