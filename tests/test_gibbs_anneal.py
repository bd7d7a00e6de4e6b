"""``AnnealedDelta(output=True)``: the output noise ``Δ_y`` annealed with the hidden ``Δ`` during
warm-up only (blockbayes/gibbs/anneal.py, design note 41).

- the schedule's values (geometric, exact target from sweep ``T_a`` on, ``Δ_y`` untouched by
  ``output=False``) and its errors (``learn_noise``, probit);
- inside ``gibbs.run``: the sweep and every move (joint HMC, unit redraw) see the sweep's ``Δ``
  (``Δ_y`` in the state, hidden ``Δ`` in the net), the target's from ``T_a`` on, and the kept
  ``delta_y`` trace is the net's;
- exactness: the kept sweeps of an annealed run are bit for bit those of the unannealed sampler
  resumed from the annealed run's end-of-warm-up state (checkpoint), with broken twins — ``Δ_y``
  left hot for the first kept sweep, the annealing continuing into the sampling phase — caught
  by the same comparison;
- the warning when a move's averaged-mass window starts before the annealing ends.

Deterministic (bitwise comparisons; no false failures)."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
from _helpers import sine_data

import blockbayes as bb
from blockbayes import driver, gibbs
from blockbayes._backend import random as bbr
from blockbayes.gibbs import kernel as K
from blockbayes.gibbs.anneal import AnnealedDelta
from blockbayes.gibbs.hmc import JointHMCMove
from blockbayes.gibbs.moves import ComposedMove
from blockbayes.gibbs.redraw import UnitRedrawMove


def _net(dy=1e-3):
    return bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta={"Z": 1e-3, "X": 1e-3, "y": dy})


# ------------------------------------------------------------------------------------ values

def test_output_schedule_values():
    net = _net()
    sch = AnnealedDelta(start=0.1, fraction=0.5, output=True)
    assert sch.annealing_sweeps(100) == 50 and sch.annealing_sweeps(7) == 4
    assert sch.delta_y_at(net, 0, 100) == pytest.approx(0.1)
    assert sch.delta_y_at(net, 25, 100) == pytest.approx(1e-2)            # geometric midpoint of 1e-1 … 1e-3
    assert sch.delta_y_at(net, 49, 100) > 1e-3
    for t in (50, 51, 100, 10_000):                                        # exactly the net's from T_a on
        assert sch.delta_y_at(net, t, 100) == net.delta_y
        assert sch.net_at(net, t, 100) is net
    assert sch.net_at(net, 10, 100).delta_y == sch.delta_y_at(net, 10, 100)
    assert sch.net_at(net, 10, 100).delta_z == sch.deltas_at(net, 10, 100)[0]
    off = AnnealedDelta(start=0.1, fraction=0.5)                            # the former schedule: Δ_y alone
    assert off.delta_y_at(net, 0, 100) == net.delta_y and off.net_at(net, 0, 100).delta_y == net.delta_y
    hot = _net(dy=0.5)                                                      # Δ_y* above Δ_0: left alone
    assert sch.delta_y_at(hot, 0, 100) == 0.5


def test_state_at_puts_back_the_inits_delta_y_bitwise():
    X, y = sine_data()
    net = _net()
    sch = AnnealedDelta(start=0.1, fraction=1.0, output=True)
    st = gibbs.init(bbr.key(0), net, X, y, num_chains=3, init="prior")
    hot = sch.state_at(st, net, 2, 10)
    assert np.all(hot.delta_y == np.float64(sch.delta_y_at(net, 2, 10)))
    back = sch.state_at(hot, net, 10, 10)                                    # sweep T_a
    assert back.delta_y.dtype == st.delta_y.dtype and np.array_equal(back.delta_y, st.delta_y)
    assert sch.state_at(hot, net, 11, 10) is hot                            # after T_a: untouched
    assert AnnealedDelta(start=0.1).state_at(hot, net, 0, 10) is hot          # output off: untouched


def test_output_schedule_errors():
    X, y = sine_data()
    kw = dict(num_samples=2, num_warmup=4, progress=False, diagnose=False, init="prior")
    with pytest.raises(ValueError, match="learn_noise"):
        gibbs.run(_net(), X, y, learn_noise=True, schedule=AnnealedDelta(output=True), **kw)
    gibbs.run(_net(), X, y, learn_noise=True, schedule=AnnealedDelta(output=False), **kw)    # hidden only: fine
    probit = bb.MLP([3, 4, 1], "relu", likelihood="probit", delta={"Z": 1e-3, "X": 1e-3, "y": 1.0})
    yc = (y[:, 0] > 0).astype(int)
    with pytest.raises(ValueError, match="Δ_y = 1"):
        gibbs.run(probit, X, yc, schedule=AnnealedDelta(output=True), **kw)
    with pytest.raises(ValueError, match="output"):
        AnnealedDelta(output=1).validate()


# ------------------------------------------------------------------ what the sweep and moves see

class _HMCRec(JointHMCMove):
    seen = []

    def step(self, key, mstate, state, net, X, y, *, warmup=False, final_warmup=False):
        _HMCRec.seen.append(("hmc", warmup, net.delta_z[0], np.asarray(state.delta_y).copy()))
        return JointHMCMove.step(self, key, mstate, state, net, X, y, warmup=warmup, final_warmup=final_warmup)


class _RedrawRec(UnitRedrawMove):
    seen = []

    def step(self, key, mstate, state, net, X, y, *, warmup=False, final_warmup=False):
        _RedrawRec.seen.append(("redraw", warmup, net.delta_z[0], np.asarray(state.delta_y).copy()))
        return UnitRedrawMove.step(self, key, mstate, state, net, X, y, warmup=warmup, final_warmup=final_warmup)


def test_sweep_and_moves_see_the_sweeps_delta(monkeypatch):
    """Every sweep ``t`` and both moves after it see ``Δ_y(t)`` in the state and ``Δ_Z(t)`` in the
    net; from ``T_a`` on exactly the net's values (the run's own net object); the kept ``delta_y``
    trace is the net's."""
    X, y = sine_data()
    net = _net()
    W, S = 12, 4
    sch = AnnealedDelta(start=0.1, fraction=0.5, output=True)
    Ta = sch.annealing_sweeps(W)
    seen = []
    real = K.step

    def rec(key, state, net_s, *a, **kw):
        seen.append((net_s, net_s.delta_z[0], np.asarray(state.delta_y).copy()))
        return real(key, state, net_s, *a, **kw)

    monkeypatch.setattr(K, "step", rec)
    _HMCRec.seen, _RedrawRec.seen = [], []
    mv = ComposedMove((_HMCRec(leapfrog=2, average_from=0.5, terminal=0.2), _RedrawRec(proposals=1)))
    r = gibbs.run(net, X, y, num_warmup=W, num_samples=S, num_chains=2, seed=3, progress=False, diagnose=False,
                  init="prior", moves=mv, schedule=sch, tempering="off", learn_noise=False)
    assert len(seen) == W + S and len(_HMCRec.seen) == W + S and len(_RedrawRec.seen) == W + S
    for t, (net_s, dz, dy) in enumerate(seen):
        want_y = sch.delta_y_at(net, t, W)
        assert np.all(dy == want_y) and dz == sch.deltas_at(net, t, W)[0][0]
        for rows in (_HMCRec.seen, _RedrawRec.seen):
            assert rows[t][1] == (t < W) and rows[t][2] == dz and np.all(rows[t][3] == want_y)
        if t >= Ta:
            assert net_s is net and np.all(dy == net.delta_y)
        else:
            assert dy[0] > net.delta_y
    assert np.all(np.asarray(r.delta_y) == net.delta_y)


# ----------------------------------------------------------------------- exactness of kept sweeps

class _HotFirstKept(AnnealedDelta):
    """Broken twin: ``Δ_y`` is put back one sweep late, so the first kept sweep runs hot."""

    def state_at(self, state, net, sweep, num_warmup):
        Ta = self.annealing_sweeps(num_warmup)
        if sweep == Ta:
            return AnnealedDelta.state_at(self, state, net, Ta - 1, num_warmup)
        return AnnealedDelta.state_at(self, state, net, sweep - (sweep == Ta + 1), num_warmup)


class _IntoSampling(AnnealedDelta):
    """Broken twin: the annealing lasts two sweeps past the end of warm-up."""

    def annealing_sweeps(self, num_warmup):
        return num_warmup + 2


def _kept_vs_unannealed(tmp_path, monkeypatch, schedule):
    """``(annealed run, the unannealed sampler resumed from its end-of-warm-up checkpoint)``: both
    results, same seed, same moves (the resumed run carries the moves' frozen kernels)."""
    X, y = sine_data(n=30)
    net = _net()
    W, S = 10, 5
    kw = dict(num_warmup=W, num_samples=S, num_chains=2, seed=11, progress=False, diagnose=False, init="prior",
              tempering="off", moves=ComposedMove((JointHMCMove(leapfrog=3, average_from=0.8, terminal=0.2),
                                                   UnitRedrawMove(proposals=1))))
    ck, ckW = tmp_path / "ck.npz", tmp_path / "ck_warmup_end.npz"
    real = driver._save_checkpoint

    def keep_warmup_end(path, **k):
        real(path, **k)
        if k["num_done"] == W:
            shutil.copy(path, ckW)

    monkeypatch.setattr(driver, "_save_checkpoint", keep_warmup_end)
    annealed = gibbs.run(net, X, y, schedule=schedule, checkpoint=ck, checkpoint_every=W, **kw)
    monkeypatch.setattr(driver, "_save_checkpoint", real)
    # the unannealed sampler: a schedule whose Δ_0 lies below every Δ* changes nothing (checked
    # against schedule=None below); the driver resumes it only with the same config keys
    cold = AnnealedDelta(start=1e-9, fraction=1.0, output=True)
    resumed = gibbs.run(net, X, y, schedule=cold, resume=ckW, **kw)
    return annealed, resumed


def _same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a.weights, b.weights)) and np.array_equal(a.delta_y, b.delta_y)


def test_cold_schedule_is_the_unannealed_sampler():
    X, y = sine_data(n=30)
    kw = dict(num_warmup=6, num_samples=4, num_chains=2, seed=2, progress=False, diagnose=False, init="prior",
              tempering="off", moves=UnitRedrawMove(proposals=1))
    a = gibbs.run(_net(), X, y, schedule=None, **kw)
    b = gibbs.run(_net(), X, y, schedule=AnnealedDelta(start=1e-9, fraction=1.0, output=True), **kw)
    c = gibbs.run(_net(), X, y, schedule=AnnealedDelta(start=0.1, fraction=1.0, output=True), **kw)
    assert _same(a, b) and not _same(a, c)


@pytest.mark.parametrize("cls, exact", [(AnnealedDelta, True), (_HotFirstKept, False), (_IntoSampling, False)])
def test_kept_sweeps_are_the_unannealed_samplers(tmp_path, monkeypatch, cls, exact):
    """With ``fraction = 1`` (annealing up to the last warm-up sweep) the kept samples equal, bit
    for bit, those of the unannealed sampler resumed from the annealed run's state after warm-up;
    both twins fail the same comparison."""
    annealed, resumed = _kept_vs_unannealed(tmp_path, monkeypatch, cls(start=0.1, fraction=1.0, output=True))
    assert _same(annealed, resumed) is exact


# ----------------------------------------------------------------------------- windows warning

def test_warns_when_the_mass_average_starts_while_annealing():
    X, y = sine_data(n=30)
    kw = dict(num_warmup=10, num_samples=2, progress=False, diagnose=False, init="prior",
              schedule=AnnealedDelta(start=0.1, fraction=0.8, output=True))
    with pytest.warns(UserWarning, match="average_from") as rec:
        gibbs.run(_net(), X, y, moves=ComposedMove((JointHMCMove(leapfrog=2, average_from=0.5), UnitRedrawMove())), **kw)
    assert any(w.filename == __file__ for w in rec)                       # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        gibbs.run(_net(), X, y, moves=JointHMCMove(leapfrog=2, average_from=0.8), **kw)
        # average_from = fraction where round and ceiling differ (x.4): no warning either
        for W, f in ((7, 0.2), (655, 555 / 655), (13, 0.42)):
            assert JointHMCMove(average_from=f).schedule(W).average_start >= AnnealedDelta(fraction=f).annealing_sweeps(W) - 1
        gibbs.run(_net(), X, y, moves=JointHMCMove(leapfrog=2, average_from=0.42),
                  **dict(kw, num_warmup=13, schedule=AnnealedDelta(start=0.1, fraction=0.42, output=True)))
