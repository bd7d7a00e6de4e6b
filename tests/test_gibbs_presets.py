"""Wiring of ``gibbs.presets.gold()`` (issue 15's gold-standard recipe). No timed assertions; the
recipe's measured quality is in docs/gibbs-moves.md §6 and benchmarks/gibbs_gold.py."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import gibbs
from blockbayes._backend import random as bbr
from blockbayes.gibbs.diagnostics import ConvergenceWarning
from blockbayes.gibbs.presets import GoldPreset, gold, hidden_delta
from blockbayes.gibbs.starts import map_starts


def _data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = np.sin(X[:, 0]) + 0.3 * X[:, 1] + 0.05 * rng.normal(size=n)
    return X, y


def test_hidden_delta_rule():
    assert hidden_delta([1e-4, 3e-4, 2e-4]) == pytest.approx(4e-6)           # 0.02 × median
    assert hidden_delta([1e-4, 3e-4]) == pytest.approx(4e-6)                  # even count: mean of the middle two
    assert hidden_delta([0.5, 0.2]) == 1e-3                                   # capped at the MLP default
    assert hidden_delta([2e-4], ratio=0.1) == pytest.approx(2e-5)
    assert hidden_delta([1e-9]) == 1e-6                                       # floored
    assert hidden_delta(np.array([4e-3]), ratio=0.5, cap=1.0) == pytest.approx(2e-3)
    for bad in ([], [0.0], [float("nan")], [-1.0]):
        with pytest.raises(ValueError):
            hidden_delta(bad)
    with pytest.raises(ValueError):
        hidden_delta([1e-3], ratio=0.0)
    with pytest.raises(ValueError):
        hidden_delta([1e-3], floor=1e-2, cap=1e-3)


def test_gold_preset_is_the_documented_gibbs_run():
    """The preset = MAP starts with learn_noise, Δ_Z = Δ_X by the rule, then gibbs.run from those
    weights with learn_noise: bitwise the hand-written equivalent, reproducible by seed."""
    X, y = _data()
    net = bb.MLP([3, 6, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    p = gold(num_chains=2, num_warmup=3, num_samples=4, map_max_iter=40)
    assert isinstance(p, GoldPreset) and p.ratio == 0.02 and p.cap == 1e-3 and p.moves is None
    assert gold() == GoldPreset() and (gold().num_chains, gold().num_warmup, gold().num_samples) == (4, 1000, 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = p.run(net, X, y, seed=7)
        r2 = p.run(net, X, y, seed=7)
        k_map = bbr.split(bbr.split(bbr.key(7), 2)[0], 2)[0]       # gibbs.run(init="map")'s MAP key
        Xp, yp = bb.inputs.prepare(net, X, y, num_chains=2)
        w, dy, _ = map_starts(k_map, net, Xp, yp, num_chains=2, kind="map", max_iter=40, learn_noise=True)
        d = hidden_delta(dy)
        ref = gibbs.run(net.replace(delta={"Z": d, "X": d, "y": float(np.mean(np.asarray(dy)))}), Xp, yp,
                        num_samples=4, num_warmup=3, num_chains=2, seed=7, init=w, learn_noise=True,
                        progress=False)
    cfg = r.config["preset"]
    assert cfg["name"] == "gold" and cfg["hidden_delta"] == pytest.approx(d)
    assert np.allclose(cfg["delta_y_hat"], np.asarray(dy))
    assert r.net.delta_z == (d,) and r.net.delta_x == (d,)
    assert r.config["total_wall_time_s"] >= cfg["map_time_s"] > 0
    for a, b, c in zip(r.weights, ref.weights, r2.weights):
        assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a), np.asarray(c))
    assert np.array_equal(np.asarray(r.delta_y), np.asarray(ref.delta_y))
    assert r.weights[0].shape == (2, 4, 6, 4)


def test_gold_preset_bad_use():
    X, y = _data()
    with pytest.raises(ValueError, match="regression"):
        gold().run(bb.MLP([3, 4, 1], likelihood="probit"), X, (y > 0).astype(np.int64))
    with pytest.raises(ValueError, match="preset sets"):
        gold().run(bb.MLP([3, 4, 1]), X, y, init="prior")


def test_map_evidence_starts_are_evidence_fits_from_the_joint_maps():
    """``init="map_evidence"``: chain c = evidence_fit warm-started at chain c's joint MAP fit
    (Δ_y started at var(y)), its Δ_y the evidence one; needs learn_noise and a Gaussian net."""
    from blockbayes import laplace
    from blockbayes.gibbs.starts import map_starts

    X, y = _data()
    net = bb.MLP([3, 6, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    Xp, yp = bb.inputs.prepare(net, X, y, num_chains=2)
    w, dy, _ = map_starts(bbr.key(3), net, Xp, yp, num_chains=2, kind="map_evidence", max_iter=60, learn_noise=True)
    wj, dyj, _ = map_starts(bbr.key(3), net, Xp, yp, num_chains=2, kind="map", max_iter=60, learn_noise=True)
    for c in range(2):
        we, ie = laplace.evidence_fit(net, Xp, yp, init=[W[c] for W in wj], delta_y=float(np.var(np.asarray(yp))),
                                      max_outer=10, max_iter=500, progress=False)
        assert all(np.allclose(W[c], Wc, rtol=1e-10, atol=1e-12) for W, Wc in zip(w, we))
        assert float(dy[c]) == pytest.approx(max(float(ie["delta_y"]), 1e-6), rel=1e-10)
    assert not np.allclose(np.asarray(dy), np.asarray(dyj))
    with pytest.raises(ValueError, match="learn_noise"):
        gibbs.run(net, X, y, num_samples=2, num_chains=2, init="map_evidence", progress=False,
                  num_warmup=0, learn_noise=False)


def test_gold_hmc_preset_adds_the_joint_move():
    from blockbayes.gibbs.hmc import JointHMCMove
    from blockbayes.gibbs.presets import gold_hmc

    assert gold_hmc() == GoldPreset(moves=JointHMCMove()) and gold_hmc(moves=None) == gold()
    X, y = _data()
    net = bb.MLP([3, 6, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = gold_hmc(num_chains=2, num_warmup=4, num_samples=3, map_max_iter=40,
                     moves=JointHMCMove(leapfrog=3)).run(net, X, y, seed=1)
    assert r.config["preset"]["name"] == "gold+JointHMCMove"
    assert r.config["moves"]["move"] == "joint non-centred HMC" and r.weights[0].shape == (2, 3, 6, 4)


def test_select_fits_takes_the_lowest_objectives_in_index_order():
    from blockbayes.gibbs.presets import select_fits

    assert select_fits([3.0, 1.0, 2.0, 0.5], 2) == (1, 3)
    assert select_fits([3.0, 1.0, 2.0, 0.5], 4) == (0, 1, 2, 3)
    assert select_fits([1.0, 1.0, 0.0], 2) == (0, 2)                          # tie: the lower index
    assert select_fits([-5.0, float("inf"), -7.0], 1) == (2,)
    for bad in (0, 4, 1.0, True):
        with pytest.raises(ValueError):
            select_fits([1.0, 2.0, 3.0], bad)
    with pytest.raises(ValueError):
        select_fits([1.0, float("nan")], 1)


def _best_of(objectives, C):
    """The rule written out independently: argsort (stable), first C, back in index order."""
    return sorted(np.argsort(np.asarray(objectives), kind="stable")[:C].tolist())


@pytest.mark.parametrize("pick", ["lowest", "first_c_twin"])
def test_gold_preset_map_fits_starts_from_the_best_fits(pick):
    """``map_fits=K``: K fits (the first C = the default's fits), chains from the C lowest
    objectives — bitwise the hand-written run. The twin that ignores the objectives (first C
    fits) is shown to differ on this seed (its selection is not the identity here)."""
    X, y = _data(n=40, seed=3)
    net = bb.MLP([3, 6, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    C, K = 2, 5
    p = gold(num_chains=C, num_warmup=3, num_samples=4, map_max_iter=40, map_fits=K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = p.run(net, X, y, seed=16)
        k_map = bbr.split(bbr.split(bbr.key(16), 2)[0], 2)[0]
        Xp, yp = bb.inputs.prepare(net, X, y, num_chains=C)
        w, dy, info = map_starts(k_map, net, Xp, yp, num_chains=K, kind="map", max_iter=40, learn_noise=True)
        w_c, dy_c, _ = map_starts(k_map, net, Xp, yp, num_chains=C, kind="map", max_iter=40, learn_noise=True)
        idx = _best_of(info["map_objectives"], C) if pick == "lowest" else list(range(C))
        assert idx != list(range(C)) or pick != "lowest"     # the seed makes the selection non-trivial
        wsel = [np.asarray(W)[idx] for W in w]
        dsel = np.asarray(dy)[idx]
        d = hidden_delta(dsel)
        ref = gibbs.run(net.replace(delta={"Z": d, "X": d, "y": float(np.mean(dsel))}), Xp, yp,
                        num_samples=4, num_warmup=3, num_chains=C, seed=16, init=tuple(wsel), learn_noise=True,
                        progress=False)
    # fits 0 … C−1 of K are the default's fits (split(key, K)[:C] == split(key, C))
    assert all(np.array_equal(np.asarray(a)[:C], np.asarray(b)) for a, b in zip(w, w_c))
    assert r.config["preset"]["chosen_fits"] == _best_of(info["map_objectives"], C)
    assert r.config["preset"]["map_objectives"] == pytest.approx(info["map_objectives"], rel=0, abs=0)
    same = all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(r.weights, ref.weights))
    assert same == (pick == "lowest")


def test_gold_preset_map_fits_none_or_num_chains_is_the_default_and_bad_values_raise():
    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = gold(num_chains=2, num_warmup=2, num_samples=2, map_max_iter=20).run(net, X, y, seed=4)
        b = gold(num_chains=2, num_warmup=2, num_samples=2, map_max_iter=20, map_fits=2).run(net, X, y, seed=4)
    assert all(np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(a.weights, b.weights))
    assert a.config["preset"]["chosen_fits"] == [0, 1] and len(a.config["preset"]["map_objectives"]) == 2
    for bad in (1, 2.0, True, -3):
        with pytest.raises(ValueError, match="map_fits"):
            gold(num_chains=2, num_warmup=2, num_samples=2, map_fits=bad).run(net, X, y, seed=4)


def test_map_starts_reports_each_fits_objective():
    from blockbayes import laplace

    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    Xp, yp = bb.inputs.prepare(net, X, y, num_chains=3)
    k = bbr.key(2)
    _, _, info = map_starts(k, net, Xp, yp, num_chains=3, kind="map", max_iter=30, learn_noise=True)
    for c, kc in enumerate(bbr.split(k, 3)):
        _, i = laplace.map_fit(net, Xp, yp, seed=kc, max_iter=30, progress=False, return_info=True,
                               learn_noise=True, noise_prior=(1.0, 1e-2), tol=1e-6, ftol=0.0)
        assert info["map_objectives"][c] == i["objective"]


def test_gold_hmc_long_is_gold_hmc_at_500_500_with_64_leapfrog_steps():
    from blockbayes.gibbs.hmc import JointHMCMove
    from blockbayes.gibbs.presets import gold_hmc, gold_hmc_long

    p = gold_hmc_long()
    assert p == GoldPreset(num_warmup=500, num_samples=500, moves=JointHMCMove(leapfrog=64))
    assert p == gold_hmc(num_warmup=500, num_samples=500, moves=JointHMCMove(leapfrog=64))
    assert p != gold_hmc(num_warmup=500, num_samples=500)                # the 32-step setting differs
    assert gold_hmc_long(num_chains=2).num_chains == 2 and gold_hmc_long(num_chains=2).moves.leapfrog == 64
    X, y = _data()
    net = bb.MLP([3, 6, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = gold_hmc_long(num_chains=2, num_warmup=3, num_samples=2, map_max_iter=30).run(net, X, y, seed=2)
    assert r.config["moves"]["leapfrog"] == 64 and r.config["preset"]["name"] == "gold+JointHMCMove"


def test_gold_benchmark_composes_the_redraw_and_passes_map_fits(monkeypatch):
    """benchmarks/gibbs_gold.py: ``redraw=R`` runs ComposedMove((JointHMCMove, UnitRedrawMove(R)))
    and reports the HMC move's acceptance; ``map_fits`` reaches the preset (chosen fits recorded)."""
    from collections import namedtuple

    from blockbayes.gibbs import starts as _starts
    from tests._helpers import load_benchmark

    monkeypatch.setattr(_starts, "map_starts", _starts.map_starts)      # the script wraps it; undone after
    gg = load_benchmark("gibbs_gold")
    D = namedtuple("D", "X_train y_train X_test y_test y_std")
    X, y = _data(n=36, seed=5)
    monkeypatch.setattr(gg.bb.datasets, "uci", lambda name, split: D(X[:30], y[:30], X[30:], y[30:], 2.0))
    kw = dict(chains=2, warmup=2, samples=4, delta=1e-3, steps=0, seed=0, inner=0.0, preset="gold_hmc",
              hmc={"leapfrog": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        c = gg.one("toy", 0, redraw=1, map_fits=3, **kw)
        c0 = gg.one("toy", 0, **kw)
    assert c["move"]["move"] == "composed"
    hmc_sum, rd_sum = c["move"]["components"]
    assert hmc_sum["move"] == "joint non-centred HMC" and rd_sum["move"] == "unit prior redraw"
    assert c["accept"] == hmc_sum["accept"] and rd_sum["proposals"] == 1
    assert len(c["map_objectives"]) == 3 and c["chosen_fits"] == _best_of(c["map_objectives"], 2)
    assert c0["move"]["move"] == "joint non-centred HMC" and c0["chosen_fits"] == [0, 1]


def test_gold_preset_given_start_replaces_the_map_fits_chain_by_chain():
    """``start=(weights, Δ_y)`` takes the MAP fits' place: given the very fits the default makes, the run
    is the default bitwise (same sampler stream); the same starts with the chains swapped — a start
    that ignored which chain gets which weights would not notice — give other samples, and chain c of
    the swapped run is chain c of a hand-written ``gibbs.run`` from chain (1−c)'s fit."""
    X, y = _data()
    net = bb.MLP([3, 6, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    p = gold(num_chains=2, num_warmup=3, num_samples=4, map_max_iter=40)
    k_map = bbr.split(bbr.split(bbr.key(7), 2)[0], 2)[0]
    Xp, yp = bb.inputs.prepare(net, X, y, num_chains=2)
    w, dy, _ = map_starts(k_map, net, Xp, yp, num_chains=2, kind="map", max_iter=40, learn_noise=True)
    w, dy = tuple(np.asarray(a) for a in w), np.asarray(dy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = p.run(net, X, y, seed=7)
        g = p.run(net, X, y, seed=7, start=(w, dy))
        swapped = p.run(net, X, y, seed=7, start=(tuple(a[::-1] for a in w), dy[::-1]))
        d = hidden_delta(dy)
        ref = gibbs.run(net.replace(delta={"Z": d, "X": d, "y": float(np.mean(dy))}), Xp, yp, num_samples=4,
                        num_warmup=3, num_chains=2, seed=7, init=tuple(a[::-1] for a in w), learn_noise=True,
                        progress=False)
    assert r.config["preset"]["start"] == "map" and g.config["preset"]["start"] == "given"
    assert g.config["preset"]["hidden_delta"] == r.config["preset"]["hidden_delta"]
    for a, b, s, h in zip(r.weights, g.weights, swapped.weights, ref.weights):
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(s))
        assert np.array_equal(np.asarray(s), np.asarray(h))
    assert np.array_equal(np.asarray(r.delta_y), np.asarray(g.delta_y))


def test_map_starts_smoothing_is_map_fits_smoothing_per_chain():
    """``map_starts(smoothing=β…)``: chain c's start is ``map_fit(seed=split(key, C)[c], smoothing=β…)``
    (the joint fit's keywords otherwise unchanged); ``smoothing=None`` is the plain start bitwise, and a
    smoothed start differs from it (the continuation ran)."""
    from blockbayes import laplace

    X, y = _data()
    net = bb.MLP([3, 5, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    Xp, yp = bb.inputs.prepare(net, X, y, num_chains=2)
    k = bbr.key(4)
    kw = dict(num_chains=2, kind="map", max_iter=40, learn_noise=True)
    w0, dy0, _ = map_starts(k, net, Xp, yp, **kw)
    wn, dyn, _ = map_starts(k, net, Xp, yp, smoothing=None, **kw)
    assert all(np.array_equal(a, b) for a, b in zip(w0, wn)) and np.array_equal(dy0, dyn)
    ws, dys, info = map_starts(k, net, Xp, yp, smoothing=(4.0, 16.0), smoothing_iter=30, **kw)
    for c, kc in enumerate(bbr.split(k, 2)):
        wf, i = laplace.map_fit(net, Xp, yp, seed=kc, max_iter=40, progress=False, return_info=True,
                                learn_noise=True, noise_prior=(1.0, 1e-2), tol=1e-6, ftol=0.0,
                                smoothing=(4.0, 16.0), smoothing_iter=30)
        assert all(np.array_equal(W[c], Wf) for W, Wf in zip(ws, wf))
        assert float(dys[c]) == max(float(i["delta_y"]), 1e-6)
        assert info["map_objectives"][c] == i["objective"]
    assert not all(np.allclose(a, b) for a, b in zip(w0, ws))


def test_gold_preset_map_smoothing_reaches_map_starts():
    """``GoldPreset(map_smoothing=…)`` passes the schedule and its iteration cap to ``map_starts``;
    the default passes ``None`` (the plain fits)."""
    from blockbayes.gibbs import starts

    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec="fan_in")
    seen = []
    real = starts.map_starts

    def spy(*a, **kw):
        seen.append((kw.get("smoothing"), kw.get("smoothing_iter")))
        return real(*a, **kw)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mp = pytest.MonkeyPatch()
        mp.setattr(starts, "map_starts", spy)
        try:
            gold(num_chains=2, num_warmup=1, num_samples=1, map_max_iter=20).run(net, X, y, seed=0)
            gold(num_chains=2, num_warmup=1, num_samples=1, map_max_iter=20, map_smoothing=(4.0,),
                 map_smoothing_iter=15).run(net, X, y, seed=0)
        finally:
            mp.undo()
    assert seen == [(None, 5000), ((4.0,), 15)]


def test_gold_preset_given_start_bad_use():
    X, y = _data()
    net = bb.MLP([3, 6, 1], "relu", prior_prec="fan_in")
    w = (np.zeros((2, 6, 4)), np.zeros((2, 1, 7)))
    p = gold(num_chains=2, num_warmup=1, num_samples=1)
    for start, msg in (((w[:1], [0.1, 0.1]), "2 weight arrays"), (((w[0][:1], w[1]), [0.1, 0.1]), "shape"),
                       (((w[0] + np.nan, w[1]), [0.1, 0.1]), "finite"), ((w, [0.1]), "2 positive"),
                       ((w, [0.1, 0.0]), "2 positive"), ((w,), "pair")):
        with pytest.raises(ValueError, match=msg):
            p.run(net, X, y, start=start)
    with pytest.raises(ValueError, match="map_fits"):
        gold(num_chains=2, map_fits=3).run(net, X, y, start=(w, [0.1, 0.1]))
    with pytest.raises(ValueError, match="map_smoothing"):
        gold(num_chains=2, map_smoothing=(8.0, 32.0)).run(net, X, y, start=(w, [0.1, 0.1]))


def test_gold_benchmark_starts_each_chain_from_its_npz_draw(monkeypatch, tmp_path):
    """benchmarks/gibbs_gold.py ``--start-from-npz``: chain c starts at draw ``draw`` of chain c of the
    saved run (weights and Δ_y), bitwise the preset run with ``start=(W[:, draw], Δ_y[:, draw])``; another
    draw gives other samples; a file of another set is refused."""
    from collections import namedtuple

    from blockbayes.gibbs import starts as _starts
    from blockbayes.gibbs.hmc import JointHMCMove
    from tests._helpers import load_benchmark

    monkeypatch.setattr(_starts, "map_starts", _starts.map_starts)      # the script wraps it; undone after
    gg = load_benchmark("gibbs_gold")
    D = namedtuple("D", "X_train y_train X_test y_test y_std")
    X, y = _data(n=36, seed=5)
    monkeypatch.setattr(gg.bb.datasets, "uci", lambda name, split: D(X[:30], y[:30], X[30:], y[30:], 2.0))
    monkeypatch.setattr(gg.bb.datasets, "uci_info", lambda name: namedtuple("I", "name")(name))
    rng = np.random.default_rng(0)
    C, S = 2, 3
    W0, W1 = rng.normal(size=(C, S, 50, 4)) * 0.5, rng.normal(size=(C, S, 1, 51)) * 0.2
    dys = rng.uniform(0.05, 0.2, size=(C, S))
    path = tmp_path / "nuts_toy.npz"
    np.savez(path, W0=W0, W1=W1, delta_y=dys, dataset="toy", split=0, F=rng.normal(size=(C, S, 6)),
             chain_means=rng.normal(size=(C, 6)))
    kw = dict(chains=C, warmup=2, samples=4, delta=1e-3, steps=0, seed=4, inner=0.0, preset="gold_hmc",
              hmc={"leapfrog": 2})
    net = bb.MLP([3, 50, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        c = gg.one("toy", 0, start_npz=str(path), draw=1, want_trace=True, **kw)
        c_last = gg.one("toy", 0, start_npz=str(path), **kw)
        ref = gold(num_chains=C, num_warmup=2, num_samples=4, moves=JointHMCMove(leapfrog=2)).run(
            net, X[:30], y[:30], seed=4, start=((W0[:, 1], W1[:, 1]), dys[:, 1]))
    m = np.asarray(ref.predict(X[30:])[0])[:, 0]
    assert c["rmse"] == float(np.sqrt(np.mean((m - y[30:]) ** 2))) * 2.0
    assert c["start_delta_y"] == list(dys[:, 1]) and c_last["start_delta_y"] == list(dys[:, -1])
    assert c["delta"] == hidden_delta(dys[:, 1]) and c["rmse"] != c_last["rmse"]
    assert len(c["trace"]["chain_rmse"]) == C and c["trace"]["running"][0][0] == 1 and c_last["trace"] is None
    monkeypatch.setattr(gg.bb.datasets, "uci_info", lambda name: namedtuple("I", "name")(name + "x" * (name != "toy")))
    with pytest.raises(ValueError, match="not other split 0"):
        gg.one("other", 0, start_npz=str(path), **kw)


def test_gold_benchmark_tempered_start_begins_at_the_presets_own_fits():
    """benchmarks/gibbs_gold.py ``tempered_start``: the MAP fits are the preset's own (same key: their
    ``Δ̂_y`` equal ``GoldPreset.run``'s ``delta_y_hat`` bitwise), the tempered sweeps move the weights
    away from those fits, and the arm refuses other start options."""
    from tests._helpers import load_benchmark

    gg = load_benchmark("gibbs_gold")
    X, y = _data(n=40)
    net = bb.MLP([3, 5, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        w, dy = gg.tempered_start(net, X, y, seed=3, chains=2, temper=(0.1, 10), hmc=dict(leapfrog=4))
        r = gold(num_chains=2, num_warmup=1, num_samples=1).run(net, X, y, seed=3)
    assert [float(v) for v in dy] == r.config["preset"]["delta_y_hat"]
    Xp, yp = bb.inputs.prepare(net, X, y, num_chains=2)
    k_map = bbr.split(bbr.split(bbr.key(3), 2)[0], 2)[0]
    wm, _, _ = map_starts(k_map, net, Xp, yp, num_chains=2, kind="map", learn_noise=True)
    assert all(a.shape == np.asarray(b).shape and not np.allclose(a, np.asarray(b)) for a, b in zip(w, wm))
    for bad in (dict(map_fits=6), dict(map_smoothing=[8.0])):
        with pytest.raises(ValueError, match="temper-output / --adam-starts"):
            gg.one("yacht", 0, chains=2, warmup=1, samples=1, delta=1e-3, steps=0, seed=0, inner=0.0,
                   preset="gold_hmc", temper=(0.1, 5), **bad)


def _benchmark_start(arm, **kw):
    """``(gg, net, X, y, weights, Δ̂_y)`` of the gibbs_gold.py start ``arm`` at seed 5, 2 chains, after
    checking that its ``Δ̂_y`` are the preset's own fits' (bitwise)."""
    from tests._helpers import load_benchmark

    gg = load_benchmark("gibbs_gold")
    X, y = _data(n=40)
    net = bb.MLP([3, 5, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        w, dy = getattr(gg, arm)(net, X, y, seed=5, chains=2, **kw)
        r = gold(num_chains=2, num_warmup=1, num_samples=1).run(net, X, y, seed=5)
    assert [float(v) for v in dy] == r.config["preset"]["delta_y_hat"]
    return gg, net, X, y, w, dy


def test_gold_benchmark_adam_start_fits_adam_at_the_presets_noise():
    """benchmarks/gibbs_gold.py ``adam_start``: ``Δ̂_y`` are the preset's own fits' (bitwise), chain c's
    weights are ``map_fit(method="adam", seed=split(key(seed + 20000), C)[c], delta_y=mean Δ̂_y)``, and
    the arm refuses to combine with the tempered one."""
    from blockbayes import laplace

    gg, net, X, y, w, dy = _benchmark_start("adam_start", epochs=3)
    Xp, yp = bb.inputs.prepare(net, X, y, num_chains=2)
    for c, k in enumerate(bbr.split(bbr.key(5 + 20_000), 2)):
        wf = laplace.map_fit(net, Xp, yp, method="adam", seed=k, delta_y=float(np.mean(dy)), num_epochs=3,
                             batch_size=32, lr=1e-2, progress=False)
        assert all(np.array_equal(W[c], np.asarray(Wf)) for W, Wf in zip(w, wf))
    with pytest.raises(ValueError, match="not with each other"):
        gg.one("yacht", 0, chains=2, warmup=1, samples=1, delta=1e-3, steps=0, seed=0, inner=0.0,
               preset="gold_hmc", temper=(0.1, 5), adam_epochs=3)


def test_gold_benchmark_prior_scaled_start_fits_under_the_weaker_prior():
    """benchmarks/gibbs_gold.py ``prior_scaled_start``: ``Δ̂_y`` are the preset's own fits' (bitwise), the
    weights are the joint MAP fits of the net with every prior precision × S at ``key(seed + 30000)``,
    they are not the preset's fits, and a non-positive scale raises."""
    from blockbayes.gibbs import starts

    gg, net, X, y, w, dy = _benchmark_start("prior_scaled_start", scale=0.3)
    Xp, yp = bb.inputs.prepare(net, X, y, num_chains=2)
    weak = net.replace(prior_prec=[(0.3 * a, 0.3 * b) for a, b in zip(net.lam_w, net.lam_b)])
    assert weak.lam_w == tuple(0.3 * a for a in net.lam_w)
    wf, _, _ = starts.map_starts(bbr.key(5 + 30_000), weak, Xp, yp, num_chains=2, kind="map", learn_noise=True,
                                 noise_prior=(1.0, 1e-2))
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(w, wf))
    _, _, wp, _ = gg._preset_fits(net, X, y, seed=5, chains=2)
    assert not all(np.allclose(a, np.asarray(b)) for a, b in zip(w, wp))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="start-prior-scale"):
            gg.prior_scaled_start(net, X, y, seed=5, chains=2, scale=bad)
    with pytest.raises(ValueError, match="not with each other"):
        gg.one("yacht", 0, chains=2, warmup=1, samples=1, delta=1e-3, steps=0, seed=0, inner=0.0,
               preset="gold_hmc", adam_epochs=3, prior_scale=0.3)
