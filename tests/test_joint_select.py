"""``noise="joint_select"`` of :mod:`blockbayes.point_fit` (issue 16): joint-noise MAP candidates
fitted on a ``1 − holdout`` part, selected by their held-out MSE, refitted on all points."""
import numpy as np
import pytest

import blockbayes as bb
from blockbayes import point_fit
from blockbayes.laplace import map_fit
from blockbayes.model import forward


def _data(n=120, noise=0.2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, 1))
    y = np.sin(2 * X[:, 0]) + noise * rng.normal(size=n)
    return X, y


_KW = dict(noise="joint_select", starts=4, max_iter=600, refit_iter=200, holdout=0.25)


def test_selection_split_and_refit_are_what_the_docs_say():
    X, y = _data()
    net = bb.MLP([1, 20, 1], "relu", prior_prec="fan_in", delta=1.0)
    point_fit.clear_cache()
    p = point_fit.map_posterior(net, X, y, seed=3, **_KW)
    c = p.config
    n_val = round(0.25 * len(y))
    perm = np.random.default_rng(point_fit.derived_seed(3, 7)).permutation(len(y))
    va, tr = perm[:n_val], perm[n_val:]
    mses, objs, refits = [], [], []
    for k in range(4):                      # each candidate, independently re-derived
        w, _ = map_fit(net, X[tr], y[tr], seed=point_fit.derived_seed(3, 200 + k), noise="joint", max_iter=600,
                       tol=1e-7, progress=False, return_info=True)
        F = np.asarray(forward(net, w, X[va])).reshape(-1)
        mses.append(float(np.mean((F - y[va]) ** 2)))
        wr, ir = map_fit(net, X, y, init=w, noise="joint", max_iter=200, tol=1e-7, progress=False, return_info=True)
        objs.append(ir["objective"])
        refits.append((wr, ir))
    np.testing.assert_allclose(c["select_holdout_mse"], mses, rtol=1e-12)
    np.testing.assert_allclose(c["select_objectives"], objs, rtol=1e-12)
    k = int(np.argmin(objs))
    assert c["select_best"] == k
    assert p.delta_y == pytest.approx(mses[k], rel=1e-12) and p.net.delta_y == p.delta_y
    for a, b in zip(p.weights, refits[k][0]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert c["delta_y_joint"] == pytest.approx(refits[k][1]["delta_y"])


def test_ensemble_keeps_the_best_candidates_and_shares_them_with_the_map():
    X, y = _data(seed=1)
    net = bb.MLP([1, 20, 1], "relu", prior_prec="fan_in", delta=1.0)
    point_fit.clear_cache()
    p = point_fit.map_posterior(net, X, y, seed=5, cache=True, **_KW)
    e = point_fit.ensemble_posterior(net, X, y, seed=5, members=3, cache=True, **_KW)
    sel = e.config["select"]
    assert sel["select_reused"] and sel["select_time_s"] == 0.0 and sel["select_owed_s"] > 0
    mse = np.asarray(p.config["select_holdout_mse"])
    order = [int(k) for k in np.argsort(mse, kind="stable")[:3]]
    assert [m["candidate"] for m in e.config["members"]] == order
    np.testing.assert_array_equal(np.asarray(e.delta_y), mse[order])
    if p.config["select_best"] in order:                    # the MAP's refit is that member
        j = order.index(p.config["select_best"])
        for a, b in zip(e.weights, p.weights):
            np.testing.assert_array_equal(np.asarray(a)[j], np.asarray(b))
    point_fit.clear_cache()


def test_heldout_noise_is_not_below_the_true_noise():
    """Statistical claim: the predictive ``Δ_y`` (the selected candidate's held-out MSE) does not
    undershoot the true noise variance σ², unlike a training-data estimate of an interpolating net.

    The candidates are fitted on the other rows, so given them the held-out residuals are
    ``a_i + σ ε_i`` with ``ε_i`` iid N(0, 1) independent of the ``a_i``: each candidate's
    ``n_val·MSE/σ²`` is non-central χ²_{n_val}, stochastically larger than the central one, and the
    minimum over ``K`` candidates is below ``σ² q/n_val`` with probability at most ``K·F_{χ²}(q)``.
    ``q`` is set so that this bound is 1e-3 per seed; 3 seeds: false-failure probability ≤ 3e-3.
    Broken twin: the joint mode's own noise estimate ``Δ̂_y = (SSE/2 + b)/(n/2 + a)`` of the kept
    (lowest-objective) refit — the ``noise="joint"`` predictive, from the training residuals of a net
    that interpolates — falls below the bound on every seed."""
    from scipy.stats import chi2

    sigma2, K, holdout, n = 0.04, 3, 0.5, 40
    n_val = round(holdout * n)
    q = chi2.ppf(1e-3 / K, n_val)
    floor = sigma2 * q / n_val
    net = bb.MLP([10, 50, 1], "relu", prior_prec="fan_in", delta=1.0)   # 601 weights, 20 fitting rows
    twin_fails = 0
    for seed in range(3):
        rng = np.random.default_rng(10 + seed)
        X = rng.normal(size=(n, 10))
        y = np.sin(X[:, :3] @ np.array([1.0, 0.5, -0.5])) + np.sqrt(sigma2) * rng.normal(size=n)
        cand = point_fit.joint_select_candidates(net, X, y, seed=seed, starts=K, holdout=holdout, max_iter=600,
                                                 refit_iter=500)
        # every candidate's held-out MSE (the MAP's Δ_y and each ensemble member's are among them)
        assert np.min(cand["holdout_mse"]) >= floor, (seed, cand["holdout_mse"], floor)
        k = int(np.argmin(cand["objective"]))
        twin = cand["refit_info"][k]["delta_y"]      # broken twin: the kept joint mode's own Δ̂_y
        twin_fails += twin < floor
    assert twin_fails == 3


def test_bad_input():
    X, y = _data(n=40)
    net = bb.MLP([1, 5, 1], "relu", prior_prec="fan_in", delta=1.0)
    with pytest.raises(ValueError, match="starts"):
        point_fit.map_posterior(net, X, y, seed=0, **dict(_KW, starts=0))
    with pytest.raises(ValueError, match="members"):
        point_fit.ensemble_posterior(net, X, y, seed=0, members=5, **_KW)
    with pytest.raises(ValueError, match="holdout"):
        point_fit.map_posterior(net, X, y, seed=0, **dict(_KW, holdout=1.5))
    with pytest.raises(ValueError, match="lbfgs"):
        point_fit.map_posterior(net, X, y, seed=0, method="adam", **_KW)
    clf = bb.MLP([1, 5, 2], "relu", likelihood="multinomial_probit", prior_prec="fan_in")
    with pytest.raises(ValueError, match="gaussian"):
        point_fit.map_posterior(clf, X, (y > 0).astype(int), seed=0, **_KW)


def test_registered_methods():
    from blockbayes.evaluate import get_method

    for name, members in (("map_joint_select", None), ("ensemble_joint_select", 5)):
        o = get_method(name).options({})
        assert o["noise"] == "joint_select" and o["starts"] == 8 and o["holdout"] == 0.1
        assert o.get("members") == members
