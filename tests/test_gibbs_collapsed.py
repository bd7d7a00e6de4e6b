"""The partially collapsed node-row move (:mod:`blockbayes.gibbs.collapsed`).

Deterministic checks here: the collapsed density against adaptive quadrature, what the move
changes, a run with it, errors. Exactness (Geweke, tiny-net grid, broken twins) is in
validation/test_gibbs_moves.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

import blockbayes as bb
from blockbayes import gibbs
from blockbayes._backend import random as bbr
from blockbayes.gibbs.collapsed import (CollapsedRowMove, collapsed_log_lik, collapsed_row_log_target,
                                        collapsed_rows)

CASES = [(0.3, 0.5, 0.05, 0.05), (-0.4, 0.1, 0.1, 0.02), (0.0, -0.3, 0.01, 0.2), (1.0, 1.1, 1e-3, 1e-3),
         (-2.0, 0.03, 1e-3, 1e-3), (0.05, -0.02, 1e-4, 1e-4)]


def _quad_log_density(a, x, dz, dx, f):
    sd = math.sqrt(dz)
    g = lambda z: stats.norm.pdf(z, a, sd) * stats.norm.pdf(x, f(z), math.sqrt(dx))
    pts = [0.0] if abs(a) < 12 * sd else None
    return math.log(integrate.quad(g, a - 12 * sd, a + 12 * sd, points=pts, limit=500, epsabs=0, epsrel=1e-12)[0])


@pytest.mark.parametrize("activation, slope", [("relu", 0.0), ("leaky_relu", 0.2), ("identity", 0.0)])
@pytest.mark.parametrize("a, x, dz, dx", CASES)
def test_collapsed_density_matches_quadrature(activation, slope, a, x, dz, dx):
    f = {"relu": lambda z: max(z, 0.0), "leaky_relu": lambda z: z if z > 0 else slope * z,
         "identity": lambda z: z}[activation]
    if activation == "identity" and (a, x) == (-2.0, 0.03):
        pytest.skip("density below float64's range (quadrature underflows)")
    ours = float(collapsed_log_lik(np.array([a]), np.array([x]), dz, dx, activation, slope)[0])
    assert ours == pytest.approx(_quad_log_density(a, x, dz, dx, f), rel=1e-9, abs=1e-9)


def test_collapsed_density_finite_far_out():
    """Far from the data (MATH.md A.3a's float64 failure cases) the log density stays finite."""
    A = np.array([40.0, -40.0, 40.0, -1e3])
    X = np.array([-100.0, 5.0, 1e-3, 1e3])
    for act in ("relu", "leaky_relu"):
        v = collapsed_log_lik(A, X, 1e-3, 1e-3, act, 0.1)
        assert np.all(np.isfinite(v))


def _state(widths, activation="relu", n=40, C=3, seed=0):
    net = bb.MLP(list(widths), activation, delta={"Z": 1e-2, "X": 1e-2, "y": 1e-1})
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, widths[0]))
    y = rng.standard_normal((n, 1))
    st = gibbs.init(bbr.key(seed), net, X, y, num_chains=C, init="prior")
    return net, X, y, st


@pytest.mark.parametrize("widths, activation, l", [((3, 5, 1), "relu", 0), ((2, 4, 3, 1), "leaky_relu", 1),
                                                   ((2, 4, 3, 1), "identity", 0)])
def test_move_changes_only_its_rows_and_their_preactivations(widths, activation, l):
    net, X, y, st = _state(widths, activation)
    new, rate = collapsed_rows(bbr.key(1), st, net, X, l, 3, np.full(3, 0.5))
    assert rate.shape == (3,) and np.all((rate >= 0) & (rate <= 1))
    for m in range(net.num_layers):
        if m != l:
            np.testing.assert_array_equal(new.weights[m], st.weights[m])
    for m in range(net.num_layers - 1):
        np.testing.assert_array_equal(new.post[m], st.post[m])
        if m != l:
            np.testing.assert_array_equal(new.pre[m], st.pre[m])
    assert not np.array_equal(new.pre[l], st.pre[l])            # Z^{l+1} redrawn from (A.3)
    assert np.any(new.weights[l] != st.weights[l])              # something accepted at h = 0.5


def test_log_target_is_prior_plus_collapsed_likelihood():
    net, X, y, st = _state((3, 5, 1))
    lam = np.concatenate([np.broadcast_to(st.lam_w[:, :1], (3, 3)), st.lam_b[:, :1]], axis=-1)
    W = st.weights[0]
    got = collapsed_row_log_target(W, X, st.post[0], lam, 1e-2, 1e-2, "relu")
    A = np.einsum("nd,ckd->cnk", X, W[..., :-1]) + W[:, None, :, -1]
    ref = (collapsed_log_lik(A, st.post[0], 1e-2, 1e-2, "relu").sum(axis=1)
           - 0.5 * np.sum(lam[:, None, :] * W ** 2, axis=-1))
    np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_run_with_the_move_and_its_summary():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 2))
    y = np.sin(X[:, :1]) + 0.1 * rng.standard_normal((60, 1))
    net = bb.MLP([2, 6, 1], delta=1e-3)
    r = gibbs.run(net, X, y, num_samples=30, num_warmup=30, num_chains=2, moves=CollapsedRowMove(proposals=2),
                  seed=0, progress=False, init="prior", diagnose=False)
    s = r.config["moves"]
    assert s["move"] == "collapsed rows" and s["layers"] == [0] and s["proposals"] == 2
    assert 0.0 < s["accept"][0] < 1.0
    assert np.all(np.isfinite(np.asarray(r.predict(X)[0])))
    r2 = gibbs.run(net, X, y, num_samples=30, num_warmup=30, num_chains=2, moves=CollapsedRowMove(proposals=2),
                   seed=0, progress=False, init="prior", diagnose=False)
    np.testing.assert_array_equal(np.asarray(r.weights[0]), np.asarray(r2.weights[0]))    # same seed, same draws


@pytest.mark.parametrize("kw, msg", [(dict(proposals=0), "proposals"), (dict(proposals=True), "proposals"),
                                     (dict(target_accept=1.0), "target_accept"), (dict(init_step=-1.0), "init_step"),
                                     (dict(init_step=float("nan")), "init_step"), (dict(layers=(1,)), "layers"),
                                     (dict(layers=(True,)), "layers")])
def test_errors(kw, msg):
    net = bb.MLP([2, 4, 1])
    with pytest.raises(ValueError, match=msg if msg != "layers" else "moved layers"):
        CollapsedRowMove(**kw).validate(net)


def test_needs_a_hidden_layer():
    with pytest.raises(ValueError, match="hidden layer"):
        CollapsedRowMove().validate(bb.MLP([2, 1]))
