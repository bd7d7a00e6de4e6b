"""The planted-teacher benchmark's arms (benchmarks/gibbs_thermalisation.py): the ``hmc`` arm's
wiring (delay, annealed Δ seen by the sweep and the move, hits counted only at Δ*) and a smoke run
of ``main`` with every zero-start arm. No timing is asserted; the figure is in docs/gibbs-moves.md.
Seconds (the teachers are Piccioli's size, n = 2084, with 2 seeds)."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from _helpers import BENCH, ROOT, load_benchmark

from blockbayes.gibbs.hmc import JointHMCMove
from blockbayes.gibbs.redraw import UnitRedrawMove


_load = load_benchmark


T = _load("gibbs_thermalisation")


def test_annealed_delta_schedule():
    d, d0 = 1e-4, 1e-2
    assert T.annealed_delta(d, d0, 0.0, 10.0) == pytest.approx(d0)
    assert T.annealed_delta(d, d0, 5.0, 10.0) == pytest.approx(1e-3)          # geometric midpoint
    assert T.annealed_delta(d, d0, 10.0, 10.0) == d
    assert T.annealed_delta(d, d0, 99.0, 10.0) == d
    assert T.annealed_delta(d, None, 0.0, 10.0) == d                          # off
    assert T.annealed_delta(d, 1e-5, 0.0, 10.0) == d                          # start below Δ*: off
    assert T.annealed_delta(d, d0, 0.0, 0.0) == d


class _Recorder(JointHMCMove):
    """The real move, recording the Δ's it is called with (``step`` stays the library's)."""

    def init(self, state, net, X, y):
        _Recorder.seen.append(("init", float(net.delta_z[0]), float(np.max(state.delta_y)), float(np.min(state.delta_y))))
        return JointHMCMove.init(self, state, net, X, y)

    def step(self, key, mstate, state, net, X, y, *, warmup=False, final_warmup=False):
        _Recorder.seen.append(("step", float(net.delta_z[0]), float(np.max(state.delta_y)), float(np.min(state.delta_y))))
        return JointHMCMove.step(self, key, mstate, state, net, X, y, warmup=warmup, final_warmup=final_warmup)


class _RedrawRecorder(UnitRedrawMove):
    """The real redraw move, recording the Δ's its steps are called with."""

    def step(self, key, mstate, state, net, X, y, *, warmup=False, final_warmup=False):
        _RedrawRecorder.seen.append((float(net.delta_z[0]), float(np.max(state.delta_y)), float(np.min(state.delta_y))))
        return UnitRedrawMove.step(self, key, mstate, state, net, X, y, warmup=warmup, final_warmup=final_warmup)


def _problem(delta, C=2):
    X, y, Xt, ft = T.teachers(3, C, delta)
    return T.planted_net(delta), X, y, Xt, ft


def test_hmc_arm_delay_and_annealed_delta_reach_the_move():
    delta = 1e-3
    net, X, y, Xt, ft = _problem(delta)
    _Recorder.seen = []
    mv = _Recorder(leapfrog=2, refresh_every=3)
    r = T.run_arm(net, X, y, Xt, ft, delta, moves=mv, budget=1e9, every=1, seed=0, delay=2, anneal=1e-1,
                  anneal_duration=1e9, max_sweeps=6)
    assert r["sweeps"] == 6
    seen = _Recorder.seen
    assert seen[0][0] == "init" and [s[0] for s in seen[1:]] == ["step"] * 4        # 2 delayed sweeps
    for kind, dz, dy_max, dy_min in seen:
        # the sweep's net and the state's Δ_y follow the schedule together (still ≈ Δ_0: the
        # annealing lasts 1e9 s), never the target Δ*
        assert dz == dy_max == dy_min
        assert 1e-1 / 1.01 < dz <= 1e-1
    # no hit can be counted before the annealing reaches Δ*
    assert r["hits"] == 0 and math.isnan(r["t_med"]) and r["delta_end"] > delta


def test_hmc_arm_counts_hits_at_target_delta():
    """From the teachers' own weights (MSE 0 ≤ 3Δ) every chain is a hit at the first check once
    Δ = Δ*; with an annealing that never ends (Δ_0 = 1.001 Δ*, so the chains stay at the teacher),
    none is."""
    delta = 1e-3
    net, X, y, Xt, ft = _problem(delta)
    C = y.shape[0]
    rng = np.random.default_rng(3)            # teachers(3, ...) draws X, Xt, then the weights
    rng.standard_normal((2084, 50)), rng.standard_normal((2000, 50))
    W1 = rng.standard_normal((C, 10, 51)) / np.sqrt(50)
    W2 = rng.standard_normal((C, 1, 11)) / np.sqrt(10)
    assert np.allclose(T.test_mse((W1, W2), Xt, ft), 0.0)
    mv = JointHMCMove(leapfrog=2)
    r = T.run_arm(net, X, y, Xt, ft, delta, moves=mv, budget=1e9, every=1, seed=0, start_weights=(W1, W2),
                  max_sweeps=2)
    assert r["hits"] == C and r["end"] == C
    r = T.run_arm(net, X, y, Xt, ft, delta, moves=mv, budget=1e9, every=1, seed=0, start_weights=(W1, W2),
                  anneal=1.001 * delta, anneal_duration=1e9, max_sweeps=2)
    assert r["hits"] == 0 and r["end"] == C    # still at the teacher, but Δ ≠ Δ*: not counted


def test_main_smoke_all_zero_start_arms(capsys, tmp_path):
    out = tmp_path / "mse.npz"
    T.main(["--delta", "1e-3", "--seeds", "2", "--budget", "0.5", "--arms", "plain", "nc", "hmc", "--leapfrog", "2",
            "--hmc-anneal", "1e-2", "--hmc-delay", "1", "--dump", str(out)])
    text = capsys.readouterr().out
    rows = [ln for ln in text.splitlines() if ln.lstrip().startswith("1e-03")]
    assert len(rows) == 3
    assert "joint HMC x2 +ann" in rows[2]
    d = np.load(out)
    assert sorted(f for f in d.files if "_W" not in f) == ["hmc_0.001", "nc_0.001", "plain_0.001"]
    assert d["hmc_0.001"].shape == (2,) and d["hmc_0.001_W0"].shape == (2, 10, 51) and d["plain_0.001_W1"].shape == (2, 1, 11)


def test_main_smoke_map_start_arms(capsys):
    T.main(["--delta", "1e-3", "--seeds", "2", "--budget", "0.5", "--arms", "map", "maphmc", "--leapfrog", "2",
            "--map-restarts", "1", "--map-iter", "3"])
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.lstrip().startswith("1e-03")]
    assert len(rows) == 2 and "MAP (best of 1) + HMC x2" in rows[1] and " acc " in rows[1]


def test_hmc_arm_redraw_follows_delay_and_annealed_delta(capsys):
    delta = 1e-3
    net, X, y, Xt, ft = _problem(delta)
    _RedrawRecorder.seen = []
    r = T.run_arm(net, X, y, Xt, ft, delta, moves=JointHMCMove(leapfrog=2), budget=1e9, every=1, seed=0, delay=2,
                  anneal=1e-1, anneal_duration=1e9, max_sweeps=5, redraw=_RedrawRecorder(proposals=2))
    assert len(_RedrawRecorder.seen) == 3                                   # 2 delayed sweeps
    for dz, dy_max, dy_min in _RedrawRecorder.seen:
        assert dz == dy_max == dy_min and 1e-1 / 1.01 < dz <= 1e-1
    assert 0.0 <= r["redraw_accept"] <= 1.0
    T.main(["--delta", "1e-3", "--seeds", "2", "--budget", "0.5", "--arms", "hmc", "--leapfrog", "2", "--redraw", "1"])
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.lstrip().startswith("1e-03")]
    assert len(rows) == 1 and "+rd1" in rows[0] and " rd " in rows[0]


def test_run_arm_plan():
    W, frac, S, avg, term = T.run_plan(925, 0.6, 100, 10)
    assert (W, S) == (655, 27) and W + S * 10 == 925
    assert frac == avg == 555 / 655 and term == 50 / 655
    from blockbayes.gibbs.anneal import AnnealedDelta
    assert AnnealedDelta(fraction=frac).annealing_sweeps(W) == 555          # annealing ends where averaging starts
    assert JointHMCMove(average_from=avg, terminal=term).schedule(W).average_start == 555
    with pytest.raises(ValueError, match="no kept sample"):
        T.run_plan(100, 0.6, 100, 10)


def _teacher_weights(C):
    rng = np.random.default_rng(3)            # teachers(3, ...) draws X, Xt, then the weights
    rng.standard_normal((2084, 50)), rng.standard_normal((2000, 50))
    return rng.standard_normal((C, 10, 51)) / np.sqrt(50), rng.standard_normal((C, 1, 11)) / np.sqrt(10)


@pytest.mark.parametrize("batched", [False, True])
def test_run_arm_judges_each_seed_on_its_own_teacher(batched):
    """From each seed's own teacher weights, with a Δ_0 barely above Δ* (the chains stay there),
    every seed is a hit on its kept samples, one call per seed or batched; from the seeds' teachers
    swapped, none is (a seed judged against another seed's teacher would pass one of the two)."""
    delta = 1e-3
    net, X, y, Xt, ft = _problem(delta)
    W1, W2 = _teacher_weights(2)
    kw = dict(total=30, anneal=1.001 * delta, anneal_frac=0.5, settle=4, thin=5, leapfrog=2, redraw=1, seed=0,
              batched=batched)
    r = T.run_recipe_arm(net, X, y, Xt, ft, delta, start_weights=(W1, W2), **kw)
    assert r["hits"] == 2 and r["end"] == 2 and r["sweeps"] == 29 and r["calls"] == (1 if batched else 2)
    assert r["weights"][0].shape == (2, 10, 51) and 0.0 <= r["accept"] <= 1.0
    r = T.run_recipe_arm(net, X, y, Xt, ft, delta, start_weights=(W1[::-1], W2[::-1]), **kw)
    assert r["hits"] == 0


def test_main_smoke_run_arm(capsys, tmp_path):
    out = tmp_path / "run.npz"
    T.main(["--delta", "1e-3", "--seeds", "2", "--arms", "run", "--leapfrog", "2", "--hmc-anneal", "1e-2",
            "--redraw", "1", "--run-sweeps", "30", "--run-settle", "4", "--run-thin", "5", "--dump", str(out)])
    text = capsys.readouterr().out
    rows = [ln for ln in text.splitlines() if ln.lstrip().startswith("1e-03")]
    assert len(rows) == 1 and "gibbs.run recipe" in rows[0] and "cpu" in rows[0] and "2 calls" in rows[0]
    assert "AnnealedDelta(start=0.01" in text and "output=True" in text
    d = np.load(out)
    assert d["run_0.001"].shape == (2,) and d["run_0.001_W0"].shape == (2, 10, 51)
