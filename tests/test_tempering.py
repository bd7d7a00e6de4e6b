"""Unit tests of replica exchange over Δ (blockbayes.gibbs.tempering) and its hooks in gibbs.run / vi.run.

Exactness (Geweke on the product joint, the tiny-net grids, broken swaps) is in
validation/test_tempering.py.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import gibbs
from blockbayes._backend import random as bbr
from blockbayes.gibbs import tempering as T
from blockbayes.gibbs.anneal import AnnealedDelta
from blockbayes.gibbs.diagnostics import ConvergenceWarning


def _tiny(delta=0.01, n=8, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(-1.6, 1.6, n)[:, None]
    y = np.maximum(1.2 * x + 0.3, 0) - 0.2 + 0.1 * rng.standard_normal((n, 1))
    net = bb.MLP([1, 1, 1], "relu", prior_prec=1.0, delta={"Z": delta, "X": delta, "y": delta})
    return net, x, y


def test_ladder_rule():
    # acceptance 2Φ(−√(m/2)) = a  ⇔  m = 2 Φ^{-1}(a/2)²;  N (r−1)²/(2r) = m
    for N in (16, 160, 10 ** 6):
        r = T.ladder_ratio(N, 0.4)
        m = N * (r - 1) ** 2 / (2 * r)
        assert abs(2 * 0.5 * math.erfc(math.sqrt(m / 2) / math.sqrt(2)) - 0.4) < 1e-9
    # the rule r ≈ 1 + √(2/N) is the m = 1 ladder (acceptance 0.48)
    assert abs(T.ladder_ratio(10 ** 6, 0.4795) - (1 + math.sqrt(2e-6))) < 1e-5
    net, x, y = _tiny()
    p = T.plan(net, 8)
    assert p.active and p.noisy == 8 * (2 + 1) and p.output and p.factors[0] == 1.0 and abs(p.factors[-1] - 100.0) < 1e-9
    ratios = np.diff(np.log(p.factors))
    assert np.all(ratios <= math.log(p.ratio) + 1e-12) and len(p.factors) == p.needed
    # (50, 50, 1e4)-like problem: thousands of replicas, auto is off
    big = bb.MLP([50, 50, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.01})
    pb = T.plan(big, 10 ** 4)
    assert not pb.active and pb.needed > 1000 and "max_replicas" in pb.reason
    assert T.plan(big, 10 ** 4, T.Tempering("on")).active
    # no hidden layer, or Δ already at the top: nothing to temper
    assert not T.plan(bb.MLP([3, 1], "identity"), 10).active
    assert not T.plan(_tiny(delta=2.0)[0], 8).active
    assert T.plan(net, 8, T.Tempering.coerce([1, 2, 4])).factors == (1.0, 2.0, 4.0)
    assert T.plan(net, 8, output=False).noisy == 16                 # learn_noise: Δ_y not tempered
    assert not T.plan(net, 8, T.Tempering.coerce("off")).active


@pytest.mark.parametrize("bad", ["sometimes", [2, 4], [1, 1, 2], [1, float("nan")], T.Tempering(top=-1.0),
                                 T.Tempering(swap_accept=1.0), T.Tempering(max_replicas=0)])
def test_bad_settings(bad):
    with pytest.raises(ValueError):
        T.Tempering.coerce(bad)


def test_swap_exchanges_whole_states_per_chain():
    net, x, y = _tiny(delta=0.2)
    nets = T.replica_nets(net, (1.0, 1.0))          # identical targets: log α = 0, every swap accepted
    assert nets[0] is net
    a = gibbs.init(bbr.key(1), net, x, y, num_chains=3, init="prior")
    b = gibbs.init(bbr.key(2), net, x, y, num_chains=3, init="prior")
    lad = T.ladder(net, x, (1.0, 1.0), 3)
    both = T.stack_replicas((a, b))
    st, probs = T.swap(bbr.key(0), both, lad, x, y, parity=0)
    a2, b2 = T.chain_slice(st, 0, 3), T.chain_slice(st, 3, 6)
    np.testing.assert_array_equal(probs, np.ones((1, 3)))
    for u, v in zip(a2.weights + a2.pre + a2.post, b.weights + b.pre + b.post):
        np.testing.assert_array_equal(u, v)
    st, probs = T.swap(bbr.key(0), both, lad, x, y, parity=1)     # no odd pair with M = 2
    a3 = T.chain_slice(st, 0, 3)
    np.testing.assert_array_equal(probs, np.zeros((1, 3)))
    np.testing.assert_array_equal(a3.weights[0], a.weights[0])
    # the ratio is the difference of the log joints under the two nets
    hot = T.replica_nets(net, (1.0, 3.0))
    la = T.swap_log_ratio(a, b, hot[0], hot[1], x, y)
    lj = gibbs.log_joint
    ref = lj(b, hot[0], x, y) + lj(a, hot[1], x, y) - lj(a, hot[0], x, y) - lj(b, hot[1], x, y)
    np.testing.assert_allclose(la, ref, rtol=1e-12, atol=1e-9)


def test_off_is_the_untempered_run():
    # where auto chooses off, the run is bitwise the tempering="off" run (no extra keys, no cost)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = np.sin(X[:, :1])
    net = bb.MLP([3, 8, 1], "relu", prior_prec=1.0, delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    kw = dict(num_samples=5, num_warmup=5, num_chains=2, seed=3, progress=False, init="prior", diagnose=False)
    r0 = gibbs.run(net, X, y, tempering="off", **kw)
    r1 = gibbs.run(net, X, y, **kw)
    assert not r1.config["tempering"]["active"] and r1.config["tempering"]["replicas_needed"] > 16
    for a, b in zip(r0.weights, r1.weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r0.log_joint, r1.log_joint)


def test_run_tempered_reports_and_reproduces():
    net, x, y = _tiny()
    kw = dict(num_samples=30, num_warmup=20, num_chains=2, seed=5, progress=False, init="prior", diagnose=False)
    r = gibbs.run(net, x, y, **kw)
    r2 = gibbs.run(net, x, y, **kw)
    cfg = r.config["tempering"]
    assert cfg["active"] and cfg["replicas"] == len(cfg["factors"]) == cfg["replicas_needed"]
    assert len(cfg["swap_accept"]) == cfg["replicas"] - 1 and all(0 <= a <= 1 for a in cfg["swap_accept"])
    assert cfg["delta_y_tempered"]
    # Δ_y tempered: a parameter of each replica, never swapped — the kept chain has the user's Δ_y
    np.testing.assert_array_equal(r.delta_y, np.full((2, 30), net.delta_y))
    for a, b in zip(r.weights, r2.weights):
        np.testing.assert_array_equal(a, b)
    assert r.weights[0].shape == (2, 30, 1, 2)
    # the kept chain is replica 0 and its log joint is under the user's net
    np.testing.assert_allclose(r.log_joint[:, -1], gibbs.log_joint(r.final_state, net, x, y), rtol=1e-10)
    rl = gibbs.run(net, x, y, tempering=[1.0, 2.0], learn_noise=True, learn_prior=True, **kw)
    assert rl.config["tempering"]["factors"] == [1.0, 2.0] and np.all(np.isfinite(rl.delta_y))
    assert not rl.config["tempering"]["delta_y_tempered"]
    with pytest.raises(ValueError, match="schedule"):
        gibbs.run(net, x, y, tempering="on", schedule=AnnealedDelta(start=0.5), **kw)
    ra = gibbs.run(net, x, y, schedule=AnnealedDelta(start=0.5), **kw)        # auto steps aside
    assert not ra.config["tempering"]["active"]


def test_run_tempered_with_moves_and_resume(tmp_path):
    from blockbayes.gibbs.moves import NonCentredMove

    net, x, y = _tiny(delta=0.05)
    kw = dict(num_samples=10, num_warmup=6, num_chains=2, seed=2, progress=False, init="prior", diagnose=False,
              tempering=[1.0, 2.0, 4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = gibbs.run(net, x, y, moves=NonCentredMove(steps=2), **kw)
    assert r.config["tempering"]["active"] and "accept" in r.config["moves"]
    full = gibbs.run(net, x, y, **kw)
    ck = tmp_path / "ck.npz"
    part = gibbs.run(net, x, y, checkpoint=ck, checkpoint_every=4, **kw)
    res = gibbs.run(net, x, y, resume=ck, **kw)
    for a, b in zip(full.weights, res.weights):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(full.weights, part.weights):
        np.testing.assert_array_equal(a, b)


def test_vi_run_inherits_tempering():
    net, x, y = _tiny(delta=0.05)
    r = bb.vi.run(net, x, y, num_samples=10, num_warmup=5, num_chains=2, seed=0, progress=False)
    assert r.config["tempering"]["active"] and r.final_state.tempering is not None
    off = bb.vi.run(net, x, y, num_samples=10, num_warmup=5, num_chains=2, seed=0, progress=False, tempering="off")
    assert not off.config["tempering"]["active"] and off.final_state.tempering is None
    assert np.all(np.isfinite(r.covs[0])) and np.all(np.isfinite(off.covs[0]))


def _replica_setup(output=True, widths=(2, 3, 1), factors=(1.0, 2.0, 5.0), C=3, seed=0, act="relu"):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((7, widths[0]))
    y = rng.standard_normal((7, widths[-1]))
    net = bb.MLP(list(widths), act, slope=0.1 if act == "leaky_relu" else 0.01, prior_prec=1.0,
                 delta={"Z": 0.05, "X": 0.02, "y": 0.1})
    tst = T.init(bbr.key(seed), net, X, y, factors, num_chains=C, init="prior", output=output)
    return net, X, y, tst, T.replica_nets(net, factors, output)


@pytest.mark.parametrize("latent_pass", ["fused", "separate"])
@pytest.mark.parametrize("act", ["relu", "identity"])
def test_batched_step_is_each_replicas_step(monkeypatch, latent_pass, act):
    """One kernel.step of all M·C chains with per-chain Δ (delta_scale) gives the chains of replica
    k exactly what kernel.step under replica k's net (shared Δ) gives them, same key, same M·C
    chains (measured bit for bit; asserted to 1e-12 relative): the per-chain Δ reach every
    conditional, the cached first-layer Cholesky factors and the fused log joint."""
    from blockbayes.gibbs import kernel as K

    monkeypatch.setattr(K, "LATENT_PASS", latent_pass)
    factors = (1.0, 2.0, 5.0)
    net, X, y, tst, nets = _replica_setup(act=act, factors=factors)
    C, M = 3, len(factors)
    lad = T.ladder(net, X, factors, C, output=True)
    key = bbr.key(42)
    sb, ib = K.step(key, tst.state, net, X, y, cache=lad.cache, delta_scale=lad.scale, checked=True)
    for k, nk in enumerate(nets):
        sk, ik = K.step(key, tst.state, nk, X, y, cache=K.precompute(nk, X), checked=True)
        rows = slice(k * C, (k + 1) * C)
        for a, b in zip(sb.weights + sb.pre + sb.post, sk.weights + sk.pre + sk.post):
            np.testing.assert_allclose(a[rows], b[rows], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ib.log_joint_partial[rows], ik.log_joint_partial[rows], rtol=1e-12)
        np.testing.assert_allclose(ib.first_term_prev[rows], ik.first_term_prev[rows], rtol=1e-12)
        np.testing.assert_allclose(K.log_joint(sb, net, X, y, delta_scale=lad.scale)[rows],
                                   K.log_joint(sb, nk, X, y)[rows], rtol=1e-12)
    # learned hyperparameters: no cached factor, the per-chain Cholesky in the row sampler
    sl, _ = K.step(key, tst.state, net, X, y, learn_prior=True, delta_scale=lad.scale)
    for k, nk in enumerate(nets):
        sk, _ = K.step(key, tst.state, nk, X, y, learn_prior=True)
        rows = slice(k * C, (k + 1) * C)
        for a, b in zip(sl.weights + sl.pre, sk.weights + sk.pre):
            np.testing.assert_allclose(a[rows], b[rows], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="delta_scale"):
        K.step(key, tst.state, net, X, y, delta_scale=lad.scale[:-1])


@pytest.mark.parametrize("output", [True, False])
def test_pair_log_ratios_are_the_swap_ratio(output):
    """The batched swap's log α of every adjacent pair (one replica_terms pass over all chains)
    equals the definition from four full log joints (swap_log_ratio) to rounding."""
    factors = (1.0, 2.0, 5.0, 9.0)
    net, X, y, tst, nets = _replica_setup(output=output, factors=factors, widths=(2, 3, 2, 1), C=4)
    if not output:      # Δ_y a state variable (learned): a different value per chain and replica
        tst = tst._replace(state=tst.state._replace(delta_y=0.05 + np.arange(16) / 10.0))
    lad = T.ladder(net, X, factors, 4, output=output)
    M, C = len(factors), 4
    terms = T.replica_terms(tst.state, net, X, y)
    terms = T.ReplicaTerms(tuple(v.reshape(M, C) for v in terms.q_z), tuple(v.reshape(M, C) for v in terms.q_x),
                           terms.q_y.reshape(M, C), terms.delta_y.reshape(M, C))
    la = T.pair_log_ratios(terms, lad.levels, net, X.shape[0])
    reps = tst.replicas if output else T.TemperingState(tst.state, tst.accept_sum, tst.proposed, 0).replicas
    for k in range(M - 1):
        ref = T.swap_log_ratio(reps[k], reps[k + 1], nets[k], nets[k + 1], X, y, output)
        np.testing.assert_allclose(la[k], ref, rtol=1e-10, atol=1e-8)
