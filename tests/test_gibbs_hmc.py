"""Unit tests of the joint non-centred HMC move (:mod:`blockbayes.gibbs.hmc`): gradient and
Gauss–Newton mass matrix against finite differences, the frozen-noise forward pass, leapfrog
reversibility, run integration and errors. Deterministic; exactness is tested in
validation/test_gibbs_moves.py (Geweke, tiny-net grid, broken twins)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import gibbs
from blockbayes._backend import random as bbr
from blockbayes.gibbs.diagnostics import ConvergenceWarning
from blockbayes.gibbs.hmc import (JointHMCMove, flatten_weights, joint_forward, joint_gauss_newton_precision,
                                  joint_log_target_and_grad, prior_precision_vector, unflatten_weights)
from blockbayes.gibbs.moves import frozen_noises


def _data(n=40, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, :1]) + 0.1 * rng.standard_normal((n, 1))
    return X, y


@pytest.mark.parametrize("widths, activation", [([3, 4, 1], "relu"), ([3, 4, 3, 2], "leaky_relu"),
                                                ([3, 2, 2], "identity"), ([3, 2], "relu")])
def test_joint_gradient_and_gauss_newton_match_finite_differences(widths, activation):
    X, y = _data()
    y = np.repeat(y, widths[-1], axis=1)
    net = bb.MLP(widths, activation, slope=0.2, prior_prec=1.0, delta={"Z": 1e-2, "X": 1e-2, "y": 0.1})
    C = 2
    st = gibbs.init(bbr.key(1), net, X, y, num_chains=C, init="prior")
    # distinct per-layer precisions, so a prior term on the wrong layer would show
    st = st._replace(lam_w=st.lam_w * np.arange(1, net.num_layers + 1), lam_b=st.lam_b * 0.5)
    T = gibbs.output_targets(net, y, None, C, X)
    xi, eta = frozen_noises(st, net, X, 0)
    Ws = st.weights
    pre, post, _ = joint_forward(Ws, net, X, xi, eta)
    for m in range(net.num_layers - 1):                       # the forward pass reproduces the latents
        np.testing.assert_allclose(pre[m], st.pre[m], atol=1e-12)
        np.testing.assert_allclose(post[m], st.post[m], atol=1e-12)
    shapes = [W.shape[1:] for W in Ws]
    theta = flatten_weights(Ws)
    for a, b in zip(unflatten_weights(theta, shapes), Ws):
        np.testing.assert_array_equal(a, b)
    args = (shapes, net, X, T, xi, eta, prior_precision_vector(st, net), st.delta_y)
    lp, gf, _ = joint_log_target_and_grad(theta, *args)
    P = theta.shape[1]
    rng = np.random.default_rng(3)
    eps = 1e-6
    f = lambda th: joint_log_target_and_grad(th, *args)[0]
    for _ in range(3):
        E = rng.standard_normal(theta.shape)
        fd = (f(theta + eps * E) - f(theta - eps * E)) / (2 * eps)
        np.testing.assert_allclose(np.sum(gf * E, axis=1), fd, rtol=1e-6, atol=1e-5)
    # Gauss–Newton: J of the network output over all weights by central differences
    out = lambda th: joint_forward(unflatten_weights(th, shapes), net, X, xi, eta)[2]
    J = np.zeros((C, out(theta)[0].size, P))
    for i in range(P):
        D = np.zeros(P)
        D[i] = eps
        J[:, :, i] = ((out(theta + D) - out(theta - D)) / (2 * eps)).reshape(C, -1)
    lam = np.concatenate([np.concatenate([np.full((C, W.shape[1], W.shape[2] - 1), st.lam_w[:, l][:, None, None]),
                                          np.broadcast_to(st.lam_b[:, l][:, None, None], (C, W.shape[1], 1))],
                                         axis=-1).reshape(C, -1) for l, W in enumerate(Ws)], axis=1)
    GN = np.einsum("cni,cnj->cij", J, J) / st.delta_y[:, None, None] + lam[:, :, None] * np.eye(P)
    got = joint_gauss_newton_precision(st, net, X, chunk=7)
    np.testing.assert_allclose(got, GN, rtol=1e-6, atol=1e-6 * np.abs(GN).max())
    # the per-layer diagonal block is the existing per-layer matrix
    from blockbayes.gibbs.moves import gauss_newton_precision
    if net.num_layers > 1:
        P0 = Ws[0][0].size
        np.testing.assert_allclose(got[:, :P0, :P0], gauss_newton_precision(st, net, X, 0)[:, 0], rtol=1e-10,
                                   atol=1e-10 * np.abs(GN).max())


def test_leapfrog_is_reversible_and_moves_all_layers():
    """One trajectory forward, momentum flipped, the same trajectory back returns to the start
    (the property the MH accept relies on); an accepted move changes every layer and its latents
    are those of the frozen-noise forward pass."""
    from blockbayes.gibbs import hmc

    X, y = _data()
    net = bb.MLP([3, 4, 2, 1], "relu", prior_prec=1.0, delta={"Z": 1e-4, "X": 1e-4, "y": 1.0})
    st = gibbs.init(bbr.key(2), net, X, y, num_chains=3, init="prior")
    T = gibbs.output_targets(net, y, None, 3, X)
    move = JointHMCMove(leapfrog=7, jitter=0.0, init_step=0.05)
    ms = move.init(st, net, X, y)
    xi, eta = frozen_noises(st, net, X, 0)
    shapes = [W.shape[1:] for W in st.weights]
    args = (shapes, net, X, T, xi, eta, prior_precision_vector(st, net), st.delta_y)

    def traj(theta, p, eps):
        _, g, _ = joint_log_target_and_grad(theta, *args)
        p = p + 0.5 * eps * g
        for s in range(7):
            theta = theta + eps * np.einsum("cij,cj->ci", ms.inv_mass, p)
            _, g, _ = joint_log_target_and_grad(theta, *args)
            p = p + (0.5 if s == 6 else 1.0) * eps * g
        return theta, p

    th0 = flatten_weights(st.weights)
    p0 = np.random.default_rng(0).standard_normal(th0.shape)
    th1, p1 = traj(th0, p0, 0.05)
    th2, p2 = traj(th1, -p1, 0.05)
    np.testing.assert_allclose(th2, th0, atol=1e-9)
    np.testing.assert_allclose(-p2, p0, atol=1e-7)
    new, rate = hmc.hmc_trajectories(bbr.key(4), st, net, X, T, ms.chol, ms.inv_mass, np.full(3, 0.02), 7, 3, 0.2)
    assert np.all((rate >= 0) & (rate <= 1)) and rate.max() > 0.5
    moved = [~np.all(a == b, axis=(1, 2)) for a, b in zip(new.weights, st.weights)]
    assert np.any(np.all(moved, axis=0))                       # some chain moved every layer at once
    xi1, eta1 = frozen_noises(new, net, X, 0)
    for a, b in zip(xi1 + eta1, xi + eta):
        np.testing.assert_allclose(a, b, atol=1e-10)             # the noises stayed frozen


def test_run_with_joint_hmc_learn_noise_and_probit():
    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta={"Z": 1e-5, "X": 1e-5, "y": 0.1})
    kw = dict(num_samples=15, num_warmup=30, num_chains=2, seed=0, progress=False, init="prior", diagnose=False)
    r = gibbs.run(net, X, y, moves=JointHMCMove(leapfrog=5, refresh_every=10), learn_noise=True, **kw)
    r2 = gibbs.run(net, X, y, moves=JointHMCMove(leapfrog=5, refresh_every=10), learn_noise=True, **kw)
    for a, b in zip(r.weights, r2.weights):
        np.testing.assert_array_equal(a, b)                     # reproducible with the seed
    cfg = r.config["moves"]
    assert cfg["move"] == "joint non-centred HMC" and 0 < cfg["accept"][0] <= 1
    assert np.std(r.delta_y) > 0                                 # Δ_y Gibbs-updated between moves
    np.testing.assert_allclose(r.log_joint[:, -1], gibbs.log_joint(r.final_state, net, X, y), rtol=1e-10)
    lab = (y[:, 0] > 0).astype(int)
    pnet = bb.MLP([3, 4, 2], "relu", prior_prec=1.0, likelihood="multinomial_probit",
                  delta={"Z": 1e-3, "X": 1e-3})
    rp = gibbs.run(pnet, X, lab, moves=JointHMCMove(leapfrog=5), **kw)
    assert 0 < rp.config["moves"]["accept"][0] <= 1


def test_joint_hmc_errors():
    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0)
    st = gibbs.init(bbr.key(0), net, X, y, num_chains=1, init="prior")
    with pytest.raises(ValueError, match="max_params"):
        JointHMCMove(max_params=10).init(st, net, X, y)
    for bad in (dict(leapfrog=0), dict(jitter=1.0), dict(target_accept=1.0), dict(init_step=-1.0),
                dict(trajectories=1.5)):
        with pytest.raises(ValueError):
            JointHMCMove(**bad).validate()
