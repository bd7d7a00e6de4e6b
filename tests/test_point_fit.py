"""map_fit's noise options and the point / ensemble builders of blockbayes.point_fit (issue 11).

All checks are deterministic (fixed seeds, exact equalities of the same float operations); no
statistical tolerance is involved.
"""
import numpy as np
import pytest

import blockbayes as bb
from blockbayes import point_fit
from blockbayes.point import EnsemblePosterior, PointPosterior


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(n)
    return X, y


NET = bb.MLP([3, 4, 1], prior_prec="fan_in", delta={"y": 0.1})
KW = dict(max_iter=40, progress=False, return_info=True)


def _same(a, b):
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_map_fit_noise_float_fixed_and_joint_are_the_old_spellings():
    X, y = _data()
    w, i = bb.laplace.map_fit(NET, X, y, seed=1, noise=0.3, **KW)
    w0, i0 = bb.laplace.map_fit(NET, X, y, seed=1, delta_y=0.3, **KW)
    _same(w, w0)
    assert i["delta_y"] == i0["delta_y"] == 0.3
    w, i = bb.laplace.map_fit(NET, X, y, seed=1, noise="fixed", **KW)
    _same(w, bb.laplace.map_fit(NET, X, y, seed=1, **KW)[0])
    assert i["delta_y"] == NET.delta_y
    w, i = bb.laplace.map_fit(NET, X, y, seed=1, noise="joint", **KW)
    w0, i0 = bb.laplace.map_fit(NET, X, y, seed=1, learn_noise=True, **KW)
    _same(w, w0)
    assert i["delta_y"] == i0["delta_y"] != NET.delta_y


def test_map_fit_noise_holdout_is_fit_split_mse_refit():
    """noise='holdout': fit on perm[n_val:], Δ_y = held-out MSE, refit on all points from that fit."""
    X, y = _data()
    w, i = bb.laplace.map_fit(NET, X, y, seed=2, noise="holdout", holdout=0.25, split_seed=5, **KW)
    perm = np.random.default_rng(5).permutation(40)
    tr, va = perm[10:], perm[:10]
    w0, i0 = bb.laplace.map_fit(NET, X[tr], y[tr], seed=2, **KW)
    F = np.asarray(bb.model.forward(NET, w0, X[va]))[:, 0]
    dy = float(max(np.mean((F - y[va]) ** 2), 1e-6))
    w1, i1 = bb.laplace.map_fit(NET, X, y, seed=2, init=w0, delta_y=dy, **KW)
    _same(w, w1)
    assert i["delta_y"] == dy and i["holdout_fit"]["num_val"] == 10
    assert i["holdout_fit"]["num_iter"] == i0["num_iter"] and i["num_iter"] == i1["num_iter"]
    # "train": the training MSE of the fit, no refit
    w, i = bb.laplace.map_fit(NET, X, y, seed=2, noise="train", **KW)
    _same(w, bb.laplace.map_fit(NET, X, y, seed=2, **KW)[0])
    F = np.asarray(bb.model.forward(NET, w, X))[:, 0]
    assert i["delta_y"] == float(max(np.mean((F - y) ** 2), 1e-6))


def test_map_fit_noise_errors():
    X, y = _data()
    with pytest.raises(ValueError, match="noise must be"):
        bb.laplace.map_fit(NET, X, y, noise="cross", progress=False)
    with pytest.raises(ValueError, match="not both"):
        bb.laplace.map_fit(NET, X, y, noise="joint", learn_noise=True, progress=False)
    with pytest.raises(ValueError, match="holdout must lie"):
        bb.laplace.map_fit(NET, X, y, noise="holdout", holdout=1.0, progress=False)
    with pytest.raises(ValueError, match="more training points"):
        bb.laplace.map_fit(NET, X[:2], y[:2], noise="holdout", holdout=0.5, progress=False)
    netc = bb.MLP([3, 4, 3], likelihood="multinomial_probit")
    with pytest.raises(ValueError, match="gaussian"):
        bb.laplace.map_fit(netc, X, np.arange(40) % 3, noise="holdout", progress=False)
    with pytest.raises(ValueError, match="map_ensemble takes"):
        bb.laplace.map_ensemble(NET, X, y, members=2, noise="holdout", progress=False)


def test_map_ensemble_noise_joint_is_learn_noise():
    X, y = _data()
    w, i = bb.laplace.map_ensemble(NET, X, y, members=2, seed=3, noise="joint", **KW)
    w0, i0 = bb.laplace.map_ensemble(NET, X, y, members=2, seed=3, learn_noise=True, **KW)
    _same(w, w0)
    np.testing.assert_array_equal(i["delta_y"], i0["delta_y"])


def test_map_posterior_seeds_noise_and_cache():
    X, y = _data()
    point_fit.clear_cache()
    p = point_fit.map_posterior(NET, X, y, seed=7, noise="holdout", max_iter=40, cache=True)
    assert isinstance(p, PointPosterior) and p.delta_y == p.config["delta_y"] == p.net.delta_y
    w, i = bb.laplace.map_fit(NET, X, y, seed=point_fit.derived_seed(7, 0), noise="holdout",
                              split_seed=point_fit.derived_seed(7, 7), max_iter=40, progress=False, return_info=True)
    _same(p.weights, w)
    assert p.config["map_iters"] == i["num_iter"] + i["holdout_fit"]["num_iter"] and not p.config.get("map_reused")
    q = point_fit.map_posterior(NET, X, y, seed=7, noise="holdout", max_iter=40, cache=True)
    assert q.config["map_reused"] and q.config["map_time_s"] == p.config["map_time_s"]
    _same(q.weights, p.weights)
    r = point_fit.map_posterior(NET, X, y, seed=7, noise="holdout", max_iter=41, cache=True)   # other settings
    assert not r.config.get("map_reused")
    m, v = p.predict(X)
    np.testing.assert_array_equal(np.asarray(m), np.asarray(bb.model.forward(NET, w, X)))
    np.testing.assert_array_equal(np.asarray(v), np.full((40, 1), p.delta_y))
    j = point_fit.map_posterior(NET, X, y, seed=7, noise="joint", restarts=2, max_iter=40)
    assert len(j.config["map_restart_objectives"]) == 2 and j.delta_y == j.config["delta_y"]
    with pytest.raises(ValueError, match="noise must be"):
        point_fit.map_posterior(NET, X, y, seed=7, noise="validation")
    c = point_fit.map_posterior(bb.MLP([3, 4, 3], likelihood="multinomial_probit"), X, np.arange(40) % 3,
                                seed=1, max_iter=20)
    assert c.likelihood == "categorical" and c.delta_y == 1.0 and "delta_y" not in c.config
    point_fit.clear_cache()


def test_ensemble_posterior_members_and_predictions():
    """The per-member builder is the mixture of map_posterior fits with seeds [seed, 100 + k]; the
    batched joint builder holds map_ensemble's members; predictions are the mixture's."""
    X, y = _data()
    ens = point_fit.ensemble_posterior(NET, X, y, members=3, seed=4, noise="holdout", max_iter=30)
    assert isinstance(ens, EnsemblePosterior) and ens.num_members == 3 and len(ens.config["members"]) == 3
    pts = [point_fit.map_posterior(NET, X, y, seed=point_fit.derived_seed(4, 100 + k), noise="holdout", max_iter=30)
           for k in range(3)]
    ref = EnsemblePosterior.from_points(pts)
    _same(ens.weights, ref.weights)
    _same(ens.predict(X), ref.predict(X))
    _same([ens.log_predictive_density(X, y, reduce=False)], [ref.log_predictive_density(X, y, reduce=False)])
    F = np.stack([np.asarray(bb.model.forward(NET, p.weights, X)) for p in pts])
    np.testing.assert_allclose(np.asarray(ens.predict(X)[0]), F.mean(0), rtol=1e-12)
    joint = point_fit.ensemble_posterior(NET, X, y, members=2, seed=4, noise="joint", max_iter=30)
    W, info = bb.laplace.map_ensemble(NET, X, y, members=2, seed=point_fit.derived_seed(4, 100), learn_noise=True,
                                      max_iter=30, progress=False, return_info=True)
    _same(joint.weights, W)
    np.testing.assert_array_equal(np.asarray(joint.delta_y), info["delta_y"])
    assert [c["delta_y"] for c in joint.config["members"]] == list(info["delta_y"])
    with pytest.raises(ValueError, match="method='lbfgs'"):
        point_fit.ensemble_posterior(NET, X, y, members=2, noise="joint", method="adam")


def test_chain_starts():
    X, y = _data()
    ens = point_fit.ensemble_posterior(NET, X, y, members=2, seed=1, noise="fixed", max_iter=10)
    w = point_fit.chain_starts(ens, 2, output_scale=2.0)
    assert [a.shape for a in w] == [(2, 4, 4), (2, 1, 5)]
    np.testing.assert_array_equal(w[0], np.asarray(ens.weights[0]))
    np.testing.assert_array_equal(w[1], np.asarray(ens.weights[1]) / 2.0)
    one = point_fit.ensemble_posterior(NET, X, y, members=1, seed=1, noise="fixed", max_iter=10)
    w = point_fit.chain_starts(one, 3)
    assert w[0].shape == (3, 4, 4) and np.array_equal(w[0][2], w[0][0])
    with pytest.raises(ValueError, match="cannot start"):
        point_fit.chain_starts(ens, 3)
    # stacked weights and a target array: cast to its dtype first, then scaled; repeated as copies
    X32 = X.astype(np.float32)
    w = point_fit.chain_starts(one.weights, 3, output_scale=2.0, like=X32)
    assert [a.dtype for a in w] == [np.float32, np.float32] and w[1].shape == (3, 1, 5)
    np.testing.assert_array_equal(w[1][2], np.asarray(one.weights[1][0]).astype(np.float32) / np.float32(2.0))
    w[0][0, 0, 0] = 123.0
    assert w[0][1, 0, 0] != 123.0                                  # a copy per chain, not a broadcast view
