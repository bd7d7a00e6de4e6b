"""Unit tests of the joint non-centred HMC move (:mod:`blockbayes.gibbs.hmc`): gradient and
Gauss–Newton mass matrix against finite differences, the frozen-noise forward pass, leapfrog
reversibility, run integration and errors. Deterministic; exactness is tested in
validation/test_gibbs_moves.py (Geweke, tiny-net grid, broken twins)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import sine_data

import blockbayes as bb
from blockbayes import gibbs
from blockbayes._backend import random as bbr
from blockbayes.gibbs.diagnostics import ConvergenceWarning
from blockbayes.gibbs.hmc import (JointHMCMove, flatten_weights, joint_forward, joint_gauss_newton_precision,
                                  joint_log_target_and_grad, prior_precision_vector, unflatten_weights)
from blockbayes.gibbs.moves import frozen_noises


@pytest.mark.parametrize("widths, activation", [([3, 4, 1], "relu"), ([3, 4, 3, 2], "leaky_relu"),
                                                ([3, 2, 2], "identity"), ([3, 2], "relu")])
def test_joint_gradient_and_gauss_newton_match_finite_differences(widths, activation):
    X, y = sine_data()
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

    X, y = sine_data()
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


def _mixed_problem(seed=2):
    from blockbayes.gibbs import hmc

    X, y = sine_data()
    net = bb.MLP([3, 4, 2, 1], "relu", prior_prec=1.0, delta={"Z": 1e-4, "X": 1e-4, "y": 1.0})
    st = gibbs.init(bbr.key(seed), net, X, y, num_chains=3, init="prior")
    T = gibbs.output_targets(net, y, None, 3, X)
    ms = JointHMCMove(leapfrog=7, jitter=0.0, init_step=0.05).init(st, net, X, y)
    xi, eta = frozen_noises(st, net, X, 0)
    lam = prior_precision_vector(st, net)
    dyn = hmc.prepare_dynamics(net, X, T, xi, eta, lam, st.delta_y, ms.inv_mass, "mixed")
    return hmc, st, dyn, flatten_weights(st.weights)


def test_held_drift_matrix_follows_the_mass():
    """``JointHMCState.drift`` is ``M⁻¹`` rounded to float32 whenever the mass changes (init and the
    warm-up refreshes), ``None`` for ``precision="float64"``; the drift it gives equals the one
    rounded at call time, bit for bit, in float64."""
    from blockbayes.gibbs import hmc

    X, y = sine_data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    st = gibbs.init(bbr.key(1), net, X, y, num_chains=2, init="prior")
    move = JointHMCMove(leapfrog=3, refresh_every=2, average_from=1.0, terminal=0.0)
    ms = move.init(st, net, X, y, num_warmup=6)
    assert JointHMCMove(precision="float64").init(st, net, X, y).drift is None
    changed = 0
    for k in range(5):
        old = ms.inv_mass
        st, ms = move.step(bbr.key(10 + k), ms, st, net, X, y, warmup=True)
        changed += ms.inv_mass is not old
        np.testing.assert_array_equal(ms.drift, ms.inv_mass.astype(np.float32))
    assert changed >= 2                                              # the refreshes did happen
    v = np.random.default_rng(0).standard_normal((2, ms.inv_mass.shape[-1]))
    T = gibbs.output_targets(net, y, None, 2, X)
    xi, eta = frozen_noises(st, net, X, 0)
    args = (net, X, T, xi, eta, prior_precision_vector(st, net), st.delta_y, ms.inv_mass, "mixed")
    held = hmc.prepare_dynamics(*args, drift=ms.drift).drift(v)
    assert held.dtype == np.float64
    np.testing.assert_array_equal(held, hmc.prepare_dynamics(*args).drift(v))


def test_mixed_precision_dynamics_float64_at_the_ends():
    """``precision="mixed"``: the interior force and the drift are the float32 ones (close to, not
    equal to, float64); the end point's ``log π`` and force are the float64 target's exactly, and so
    are the accept's kinetic energies (``dyn.inv_mass`` is the float64 operator)."""
    hmc, st, dyn, th0 = _mixed_problem()
    lp, g, _ = dyn.target(th0)
    lpi, gi, _ = dyn.interior(th0)
    assert not np.array_equal(gi, g)
    np.testing.assert_allclose(gi, g, rtol=0, atol=1e-5 * np.abs(g).max())
    p0 = np.random.default_rng(0).standard_normal(th0.shape)
    eps = np.full(3, 0.05)
    H0 = hmc.kinetic(p0, dyn.inv_mass) - lp
    thK, lpK, gK, pK, _, div = hmc.leapfrog(dyn, th0, lp, g, p0, eps, 7, H0)
    assert not div.any()
    lpx, gx, _ = dyn.target(thK)
    np.testing.assert_array_equal(lpK, lpx)
    np.testing.assert_array_equal(gK, gx)
    A = dyn.inv_mass(p0)
    assert not np.array_equal(dyn.drift(p0), A)
    np.testing.assert_allclose(dyn.drift(p0), A, rtol=0, atol=1e-6 * np.abs(A).max())
    with pytest.raises(ValueError, match="precision must be one of"):
        JointHMCMove(precision="float32").validate()


@pytest.mark.parametrize("symmetric", [True, False])
def test_mixed_rule_is_reversible_for_any_interior_force(symmetric):
    """The exactness argument of ``prepare_dynamics``: with the exact force at both ends and ANY
    deterministic force inside (here half the gradient, to make a wrong rule visible), a trajectory
    run back from its end with the momentum flipped returns to its start. The broken rule — the
    interior force also at the start, the exact one at the end — is not reversible, and the test
    sees it (``symmetric=False`` must fail the round trip by far more than rounding)."""
    hmc, st, dyn, th0 = _mixed_problem()

    def half(theta):
        lp, g, sse = dyn.target(theta)
        return lp, 0.5 * g, sse

    dyn = dyn._replace(interior=half)
    p0 = np.random.default_rng(1).standard_normal(th0.shape)
    eps = np.full(3, 0.05)
    lp, g, _ = dyn.target(th0)
    g_start = g if symmetric else half(th0)[1]
    H0 = np.full(3, np.inf)                                        # no divergence freeze here
    thK, lpK, gK, pK, _, div = hmc.leapfrog(dyn, th0, lp, g_start, p0, eps, 7, H0)
    thB, _, _, pB, _, divB = hmc.leapfrog(dyn, thK, lpK, gK, -pK, eps, 7, H0)
    assert not (div.any() or divB.any()) and np.abs(thK - th0).max() > 1e-3      # it did move
    err = max(np.abs(thB - th0).max() / np.abs(th0).max(), np.abs(-pB - p0).max() / np.abs(p0).max())
    if symmetric:
        assert err < 1e-9
    else:
        assert err > 1e-4


def test_mixed_precision_leapfrog_on_every_backend(backend):
    """The mixed and float64 dynamics on every backend of the matrix (the reference kernels run there,
    the GPU's path; the Numba kernels on NumPy): one trajectory from the same start lands where the
    NumPy float64 trajectory does, to float32 rounding for the mixed rule (and to the backend dtype's
    rounding for float64), on the backend's device and dtype, with the end's log π exact for its dtype."""
    from blockbayes.gibbs import hmc

    X0, y0 = sine_data()
    net = bb.MLP([3, 4, 2, 1], "relu", prior_prec=1.0, delta={"Z": 1e-3, "X": 1e-3, "y": 0.5})
    st0 = gibbs.init(bbr.key(2), net, X0, y0, num_chains=2, init="prior")
    ms0 = JointHMCMove().init(st0, net, X0, y0)
    th0 = flatten_weights(st0.weights)
    p0 = np.random.default_rng(3).standard_normal(th0.shape)
    eps = np.full(2, 0.05)

    def run(xp_arr, precision):
        X, y = xp_arr(X0), xp_arr(y0)
        st = st0._replace(**{f: (tuple(xp_arr(a) for a in getattr(st0, f)) if isinstance(getattr(st0, f), tuple)
                                 else xp_arr(getattr(st0, f)))
                             for f in ("weights", "pre", "post", "delta_y", "lam_w", "lam_b")})
        T = gibbs.output_targets(net, y, None, 2, X)
        xi, eta = frozen_noises(st, net, X, 0)
        dyn = hmc.prepare_dynamics(net, X, T, xi, eta, prior_precision_vector(st, net), st.delta_y,
                                   xp_arr(ms0.inv_mass), precision)
        th = xp_arr(th0)
        lp, g, _ = dyn.target(th)
        H0 = hmc.kinetic(xp_arr(p0), dyn.inv_mass) - lp
        thK, lpK, _, _, _, div = hmc.leapfrog(dyn, th, lp, g, xp_arr(p0), xp_arr(eps), 7, H0)
        return thK, lpK, div, dyn

    want, lp_want, _, _ = run(np.asarray, "float64")
    for precision in ("mixed", "float64"):
        thK, lpK, div, dyn = run(backend.asarray, precision)
        assert thK.dtype == backend.dtype and not bool(backend.to_numpy(div).any())
        got = backend.to_numpy(thK)
        tol = 1e-4 if (precision == "mixed" or backend.dtype_name == "float32") else 1e-10
        np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())
        np.testing.assert_array_equal(backend.to_numpy(lpK), backend.to_numpy(dyn.target(thK)[0]))
        if precision == "mixed" and backend.dtype_name == "float64":      # the interior really is float32
            assert not np.array_equal(backend.to_numpy(dyn.interior(thK)[1]), backend.to_numpy(dyn.target(thK)[1]))


def test_run_with_joint_hmc_learn_noise_and_probit():
    X, y = sine_data()
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
    X, y = sine_data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0)
    st = gibbs.init(bbr.key(0), net, X, y, num_chains=1, init="prior")
    with pytest.raises(ValueError, match="max_params"):
        JointHMCMove(max_params=10).init(st, net, X, y)
    for bad in (dict(leapfrog=0), dict(jitter=1.0), dict(target_accept=1.0), dict(init_step=-1.0),
                dict(trajectories=1.5), dict(average_from=1.5), dict(terminal=1.0), dict(average_every=0)):
        with pytest.raises(ValueError):
            JointHMCMove(**bad).validate()
    with pytest.raises(ValueError, match="num_warmup"):
        JointHMCMove().init(st, net, X, y, num_warmup=-1)


def _warm_up(move, W, seed=3, C=2, record=None):
    """Run ``W`` warm-up calls of the move alone (no sweep) on a small net; returns the pieces.

    ``record``: list that receives ``(sweeps after the call, state, mstate)`` of every call."""
    X, y = sine_data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta={"Z": 1e-4, "X": 1e-4, "y": 0.05})
    st = gibbs.init(bbr.key(seed), net, X, y, num_chains=C, init="prior")
    ms = move.init(st, net, X, y, num_warmup=W)
    key = bbr.key(seed + 1)
    for i in range(W):
        key, k = bbr.split(key)
        st, ms = move.step(k, ms, st, net, X, y, warmup=True, final_warmup=i == W - 1)
        if record is not None:
            record.append((i + 1, st, ms))
    return net, X, y, st, ms, key


def _kernel_fixed_after_warmup(move, W=12, kept=6):
    """True when the kept calls leave the mass and the step size bitwise unchanged (the exactness
    condition of an adaptive kernel: every kept sample from ONE fixed kernel)."""
    net, X, y, st, ms, key = _warm_up(move, W)
    frozen = (np.array(ms.chol), np.array(ms.inv_mass), np.array(ms.log_step))
    for _ in range(kept):
        key, k = bbr.split(key)
        st, ms = move.step(k, ms, st, net, X, y, warmup=False)
        now = (np.array(ms.chol), np.array(ms.inv_mass), np.array(ms.log_step))
        if not all(np.array_equal(a, b) for a, b in zip(frozen, now)):
            return False
    return ms.sampled == kept


class _AdaptsWhileSampling(JointHMCMove):
    """Broken twin: keeps adapting (step size and the mass windows) after warm-up."""

    def step(self, key, mstate, state, net, X, y, *, warmup=False, final_warmup=False):
        return JointHMCMove.step(self, key, mstate, state, net, X, y, warmup=True, final_warmup=False)


def test_kernel_is_fixed_after_warmup_and_the_check_catches_adaptation_while_sampling():
    """Exactness needs every kept sample to come from one fixed kernel: after warm-up the mass and
    the step size must not change. The check fails for a twin that keeps adapting (deterministic:
    its Robbins–Monro step moves ``log h`` unless the acceptance is exactly 0.8)."""
    for kw in (dict(), dict(average_from=1.0, terminal=0.0), dict(average_from=0.0, terminal=0.5)):
        move = JointHMCMove(leapfrog=3, refresh_every=2, average_every=2, **kw)
        assert _kernel_fixed_after_warmup(move), kw
        assert not _kernel_fixed_after_warmup(_AdaptsWhileSampling(leapfrog=3, refresh_every=2, average_every=2, **kw)), kw


def test_warmup_windows_average_the_gauss_newton_mass_and_the_terminal_step():
    """W = 40, average_from 0.5, terminal 0.15, average_every 5: terminal window [34, 40), the
    Gauss–Newton matrices at the states after calls 20, 25 and 30 averaged into the kept mass
    ``s Λ + mean GN``; the kept ``log h`` is the mean of the iterates of calls 38–40 (the window's
    second half, sweep indices 37–39)."""
    move = JointHMCMove(leapfrog=3, refresh_every=10)
    sch = move.schedule(40)
    assert (sch.average_start, sch.terminal_start, sch.mean_start) == (20, 34, 37)
    rec = []
    net, X, y, st, ms, _ = _warm_up(move, 40, record=rec)
    assert ms.gn_count == 3 and ms.gn_sum is None and ms.log_step_count == 3
    gns = [joint_gauss_newton_precision(s, net, X, prior_scale=0.0) for n, s, _ in rec if n in (20, 25, 30)]
    lam = prior_precision_vector(st, net)
    M = np.mean(gns, axis=0) + 100.0 * lam[..., :, None] * np.eye(lam.shape[-1])
    np.testing.assert_allclose(np.einsum("cij,cjk->cik", ms.inv_mass, M), np.broadcast_to(np.eye(M.shape[-1]), M.shape),
                               atol=1e-8)
    # iterates of sweeps 37, 38 (recorded after calls 38, 39) and 39 (Robbins–Monro, gain restarted
    # at the window's start 34: 1/sqrt(1 + 5/10)); the kept log h is their mean
    it = {n: np.array(m.log_step) for n, _, m in rec if n in (38, 39)}
    it40 = it[39] + (rec[-1][2].accept - 0.8) / np.sqrt(1.5)
    np.testing.assert_allclose(ms.log_step, (it[38] + it[39] + it40) / 3, rtol=1e-12)
    assert not np.allclose(ms.log_step, it40)
    # mass unchanged over the terminal window
    for n, _, m in rec:
        if n >= 31:
            np.testing.assert_array_equal(m.inv_mass, ms.inv_mass)


def test_without_num_warmup_the_single_state_rule_is_kept():
    """``init`` without ``num_warmup`` (direct use of the move) = ``average_from=1, terminal=0``:
    single-state refreshes every ``refresh_every`` calls, the last iterate's ``h``."""
    X, y = sine_data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta={"Z": 1e-4, "X": 1e-4, "y": 0.05})
    out = []
    for move, W in ((JointHMCMove(leapfrog=3, refresh_every=4), None),
                    (JointHMCMove(leapfrog=3, refresh_every=4, average_from=1.0, terminal=0.0), 10)):
        st = gibbs.init(bbr.key(5), net, X, y, num_chains=2, init="prior")
        ms = move.init(st, net, X, y, num_warmup=W)
        key = bbr.key(6)
        for i in range(10):
            key, k = bbr.split(key)
            st, ms = move.step(k, ms, st, net, X, y, warmup=True, final_warmup=i == 9)
        out.append(ms)
    np.testing.assert_array_equal(out[0].inv_mass, out[1].inv_mass)
    np.testing.assert_array_equal(out[0].log_step, out[1].log_step)
    assert out[0].gn_count == out[1].gn_count == 0


def _gradients_per_call(move, W, kept, monkeypatch, run=False):
    """Gradient evaluations of each call of the move: ``W`` warm-up calls then ``kept`` kept ones.

    Counts the calls of the prepared target (:func:`joint_target`) inside each ``hmc_trajectories``
    call (one trajectory per call: 1 at the start + the leapfrog steps). ``run``: through
    ``gibbs.run`` (which passes ``num_warmup`` and the flags) instead of calling the move directly."""
    from blockbayes.gibbs import hmc as H

    n = [0]
    counts = []
    prepare, traj = H.joint_target, H.hmc_trajectories

    def counting_grad(*a, **k):
        target = prepare(*a, **k)

        def counted(theta):
            n[0] += 1
            return target(theta)

        return counted

    def recording_traj(*a, **k):
        n0 = n[0]
        out = traj(*a, **k)
        counts.append(n[0] - n0)
        return out

    monkeypatch.setattr(H, "joint_target", counting_grad)
    monkeypatch.setattr(H, "hmc_trajectories", recording_traj)
    X, y = sine_data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta={"Z": 1e-4, "X": 1e-4, "y": 0.05})
    if run:
        gibbs.run(net, X, y, num_chains=2, num_warmup=W, num_samples=kept, init="prior", seed=2, moves=move,
                  progress=False, diagnose=False, learn_noise=False)
    else:
        _, X, y, st, ms, key = _warm_up(move, W)
        for _ in range(kept):
            key, k = bbr.split(key)
            st, ms = move.step(k, ms, st, net, X, y, warmup=False)
    return counts


class _ExploresWhileSampling(JointHMCMove):
    """Broken twin: the long trajectory in every sweep, the kept ones included."""

    def trajectory_length(self, mstate, warmup):
        return self.explore_leapfrog


class _ExploresThroughTheTerminalWindow(JointHMCMove):
    """Broken twin: the long trajectory in the whole warm-up (the step size then never sees ``leapfrog``)."""

    def trajectory_length(self, mstate, warmup):
        return self.explore_leapfrog if warmup else self.leapfrog


def test_explore_leapfrog_only_before_the_terminal_window(monkeypatch):
    """``explore_leapfrog=7``, ``leapfrog=2``, W = 20 (terminal window [17, 20)): the warm-up calls
    0–16 take 1 + 7 gradients, the terminal window and the kept calls 1 + 2 — directly and through
    ``gibbs.run``. Two broken twins (long trajectories in the kept sweeps; through the terminal
    window) give other counts and fail the check."""
    kw = dict(leapfrog=2, refresh_every=5, average_every=2, explore_leapfrog=7)
    assert JointHMCMove(**kw).schedule(20).terminal_start == 17
    want = [8] * 17 + [3] * 3 + [3] * 4
    assert _gradients_per_call(JointHMCMove(**kw), 20, 4, monkeypatch) == want
    assert _gradients_per_call(JointHMCMove(**kw), 20, 4, monkeypatch, run=True) == want
    assert _gradients_per_call(JointHMCMove(**{**kw, "explore_leapfrog": None}), 20, 4, monkeypatch) == [3] * 24
    assert _gradients_per_call(_ExploresWhileSampling(**kw), 20, 4, monkeypatch) != want
    assert _gradients_per_call(_ExploresThroughTheTerminalWindow(**kw), 20, 4, monkeypatch) != want


def test_explore_leapfrog_equal_to_leapfrog_is_bitwise_the_default():
    """``explore_leapfrog = leapfrog`` runs the default kernel bitwise (same keys, same steps), and
    the kernel is fixed after a warm-up with exploration."""
    out = []
    for ex in (None, 3):
        move = JointHMCMove(leapfrog=3, refresh_every=4, average_every=2, explore_leapfrog=ex)
        _, _, _, st, ms, _ = _warm_up(move, 16)
        out.append((st, ms))
    (s0, m0), (s1, m1) = out
    for a, b in zip(s0.weights + (m0.inv_mass, m0.log_step), s1.weights + (m1.inv_mass, m1.log_step)):
        np.testing.assert_array_equal(a, b)
    move = JointHMCMove(leapfrog=3, refresh_every=2, average_every=2, explore_leapfrog=9)
    assert _kernel_fixed_after_warmup(move)
    assert move.summary(m1)["explore_leapfrog"] == 9 and "explore_leapfrog" not in JointHMCMove().summary(m0)


def test_explore_leapfrog_errors():
    X, y = sine_data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0)
    st = gibbs.init(bbr.key(0), net, X, y, num_chains=1, init="prior")
    for bad in (0, -3, 1.5, True, "8"):
        with pytest.raises(ValueError, match="explore_leapfrog must be an int >= 1 or None"):
            JointHMCMove(explore_leapfrog=bad).validate()
    with pytest.raises(ValueError, match="needs num_warmup"):
        JointHMCMove(explore_leapfrog=8).init(st, net, X, y)
    with pytest.raises(ValueError, match="non-empty terminal window"):
        JointHMCMove(explore_leapfrog=8, terminal=0.0).init(st, net, X, y, num_warmup=10)
    JointHMCMove(explore_leapfrog=8).init(st, net, X, y, num_warmup=10)
    JointHMCMove(explore_leapfrog=8, terminal=0.0).init(st, net, X, y, num_warmup=0)


def test_gold_benchmark_passes_explore_leapfrog(monkeypatch):
    """benchmarks/gibbs_gold.py ``--explore-leapfrog K`` reaches the JointHMCMove settings of each cell
    (``one(..., hmc=...)``); without the flag the key is absent (the move's default ``None``)."""
    from _helpers import load_benchmark

    gg = load_benchmark("gibbs_gold")
    seen = []

    class _Stop(Exception):
        pass

    def fake_one(name, split, **kw):
        seen.append(kw["hmc"])
        raise _Stop

    monkeypatch.setattr(gg, "one", fake_one)
    base = ["--preset", "gold_hmc", "--leapfrog", "64", "--datasets", "energy", "--splits", "0"]
    for extra in (["--explore-leapfrog", "256"], []):
        with pytest.raises(_Stop):
            gg.main(base + extra)
    assert seen == [{"leapfrog": 64, "explore_leapfrog": 256}, {"leapfrog": 64}]
    assert JointHMCMove(**seen[0]).explore_leapfrog == 256 and JointHMCMove(**seen[1]).explore_leapfrog is None
