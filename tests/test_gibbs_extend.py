"""``gibbs.extend``: continuing a finished run's chains (moves' adaptation, replicas and RNG key kept).

The central property is exact: ``extend(run(W, S1), S2)`` holds bitwise the samples of ``run(W, S1 + S2)``
with the same seed. All tests are deterministic (bitwise or exact comparisons): no false-failure bound
applies. Each comparison is shown to be able to fail by a twin that breaks one ingredient of the
continuation (the RNG key, the moves' adapted state, the sweep index).
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import driver
from blockbayes._backend import random as bbr
from blockbayes._backend import to_numpy
from blockbayes.driver import RunInterrupted, run_kernel
from blockbayes.gibbs.anneal import AnnealedDelta
from blockbayes.gibbs.diagnostics import ConvergenceWarning
from tests._helpers import fail_gibbs_step


def _data(n=40, d=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.sin(X[:, :1]) + 0.1 * rng.normal(size=(n, 1))
    return X, y


def _same_samples(a, b, *, lj_skip=None):
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(to_numpy(wa), to_numpy(wb))
    for f in ("delta_y", "lam_w", "lam_b"):
        np.testing.assert_array_equal(to_numpy(getattr(a, f)), to_numpy(getattr(b, f)))
    la, lb = to_numpy(a.log_joint), to_numpy(b.log_joint)
    if lj_skip is not None:
        # the first call's last log joint is computed directly, the longer run's fused into the
        # next sweep: equal up to rounding there, bitwise elsewhere
        np.testing.assert_allclose(la[:, lj_skip], lb[:, lj_skip], rtol=1e-12)
        la, lb = np.delete(la, lj_skip, axis=1), np.delete(lb, lj_skip, axis=1)
    np.testing.assert_array_equal(la, lb)


# --------------------------------------------------------------------------------- the driver

def _walk_step(key, state, t):
    x = state + bbr.normal(key, state.shape, like=state)
    return x, None


def test_driver_first_step_continues_a_finished_run():
    kw = dict(num_warmup=3, thin=2, collect=lambda s, i, t: {"x": s}, progress=False)
    full = run_kernel(bbr.key(5), np.zeros((2, 3)), _walk_step, num_samples=7, **kw)
    head = run_kernel(bbr.key(5), np.zeros((2, 3)), _walk_step, num_samples=4, **kw)
    tail = run_kernel(head.key, head.state, _walk_step, num_samples=3, first_step=head.num_done, **kw)
    assert tail.num_done == full.num_done and tail.num_kept == 3
    np.testing.assert_array_equal(np.concatenate([head.traces["x"], tail.traces["x"]], axis=1), full.traces["x"])
    # twin: the same continuation from the run's first key draws other samples
    wrong = run_kernel(bbr.key(5), head.state, _walk_step, num_samples=3, first_step=head.num_done, **kw)
    assert not np.array_equal(wrong.traces["x"], full.traces["x"][:, 4:])


def test_driver_first_step_inside_warmup_is_refused():
    with pytest.raises(ValueError, match="first_step"):
        run_kernel(bbr.key(0), np.zeros(2), _walk_step, num_samples=2, num_warmup=5, first_step=3, progress=False)


# --------------------------------------------------------------------------------- gibbs.extend

CASES = {
    "sweep": dict(moves=None),
    "hmc": dict(moves="hmc"),
    "thin_prior": dict(moves=None, thin=2, learn_prior=True),
    "tempered": dict(moves=None, tempering="on"),
    "annealed": dict(moves=None, learn_noise=False),          # schedule set below
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_extend_equals_the_longer_run(case):
    X, y = _data()
    net = bb.MLP([2, 5, 1])
    kw = dict(seed=3, num_warmup=200 if case == "hmc" else 20, num_chains=2, progress=False, diagnose=False,
              **CASES[case])
    if case == "tempered":
        net = bb.MLP([2, 3, 1], delta=0.05)
    if case == "annealed":          # Δ (hidden and output) lowered during warm-up: the extension samples at the net's
        kw["schedule"] = AnnealedDelta(start=0.1, fraction=0.8, output=True)
        net = bb.MLP([2, 5, 1], delta=0.01)
    first = bb.gibbs.run(net, X, y, num_samples=6, **kw)
    longer = bb.gibbs.run(net, X, y, num_samples=15, **kw)
    ext = bb.gibbs.extend(first, 4, progress=False, diagnose=False)
    ext = bb.gibbs.extend(ext, 5, progress=False, diagnose=False)            # chained
    assert ext.num_samples == 15 and ext.config["num_samples"] == 15
    _same_samples(ext, longer, lj_skip=[5, 9])
    np.testing.assert_array_equal(ext.final_state.weights[0], longer.final_state.weights[0])
    assert [e["num_samples"] for e in ext.config["extensions"]] == [4, 5]
    assert ext.config["extensions"][0]["first_sweep"] == first.continuation.num_done
    assert ext.config["wall_time_s"] >= first.config["wall_time_s"]
    if case == "hmc":
        assert ext.config["moves"] == longer.config["moves"]
    if case == "tempered":
        assert ext.config["tempering"] == longer.config["tempering"]


def test_extend_keeps_the_moves_adaptation():
    """Twin: continuing with the moves re-initialised (what ``init=result.final_state`` with a new
    warm-up amounts to) does not reproduce the longer run — the test can fail."""
    X, y = _data()
    net = bb.MLP([2, 5, 1])
    kw = dict(seed=4, num_warmup=200, num_chains=2, moves="hmc", progress=False, diagnose=False)
    first = bb.gibbs.run(net, X, y, num_samples=3, **kw)
    longer = bb.gibbs.run(net, X, y, num_samples=8, **kw)
    cont = first.continuation
    loop = cont.loop
    fresh = loop.moves.init(cont.carry.state, loop.net, loop.X, loop.y, num_warmup=loop.num_warmup)
    reset = cont._replace(carry=cont.carry._replace(moves=fresh))
    broken = dataclasses.replace(first, continuation=reset)
    twin = bb.gibbs.extend(broken, 5, progress=False, diagnose=False)
    assert not np.array_equal(twin.weights[0][:, 3:], longer.weights[0][:, 3:])
    _same_samples(bb.gibbs.extend(first, 5, progress=False, diagnose=False), longer, lj_skip=[2])


def test_extend_does_not_change_its_input_and_repeats():
    X, y = _data()
    net = bb.MLP([2, 5, 1])
    first = bb.gibbs.run(net, X, y, num_samples=5, num_warmup=10, num_chains=2, seed=1, progress=False,
                         diagnose=False)
    w0 = first.weights[0].copy()
    a = bb.gibbs.extend(first, 6, progress=False, diagnose=False)
    b = bb.gibbs.extend(first, 6, progress=False, diagnose=False)
    _same_samples(a, b)
    np.testing.assert_array_equal(first.weights[0], w0)
    assert first.num_samples == 5 and "extensions" not in first.config


def test_extend_after_ctrl_c_continues_the_interrupted_chains(monkeypatch):
    X, y = _data()
    net = bb.MLP([2, 5, 1])
    kw = dict(seed=2, num_warmup=10, num_chains=2, moves=None, progress=False, diagnose=False)
    full = bb.gibbs.run(net, X, y, num_samples=12, **kw)
    restore = fail_gibbs_step(monkeypatch, 17, KeyboardInterrupt)      # in sweep 17: 6 kept sweeps completed
    with pytest.warns(RunInterrupted):
        part = bb.gibbs.run(net, X, y, num_samples=12, **kw)
    restore()
    assert part.config["interrupted"] and part.num_samples == 6
    rest = bb.gibbs.extend(part, 6, progress=False, diagnose=False)
    _same_samples(rest, full, lj_skip=[5])
    assert "interrupted" not in rest.config and rest.config["num_samples"] == 12    # whole again


def test_extend_checkpoint_resume(tmp_path, monkeypatch):
    X, y = _data()
    net = bb.MLP([2, 5, 1])
    first = bb.gibbs.run(net, X, y, num_samples=4, num_warmup=6, num_chains=2, seed=8, moves=None, progress=False,
                         diagnose=False)
    whole = bb.gibbs.extend(first, 9, progress=False, diagnose=False)
    path = tmp_path / "ext.ckpt"

    class Crash(RuntimeError):
        pass

    restore = fail_gibbs_step(monkeypatch, 6, Crash)
    with pytest.raises(Crash):
        bb.gibbs.extend(first, 9, progress=False, diagnose=False, checkpoint=path, checkpoint_every=2)
    restore()
    assert driver.load_checkpoint(path)["meta"]["num_done"] == 10 + 4
    again = bb.gibbs.extend(first, 9, progress=False, diagnose=False, resume=path)
    _same_samples(again, whole)


def test_extend_backend_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    X, y = _data()
    net = bb.MLP([2, 4, 1])
    kw = dict(seed=6, num_warmup=5, num_chains=2, moves=None, progress=False, diagnose=False)
    longer = bb.gibbs.run(net, xps.asarray(X), xps.asarray(y), num_samples=7, **kw)
    ext = bb.gibbs.extend(bb.gibbs.run(net, xps.asarray(X), xps.asarray(y), num_samples=3, **kw), 4,
                          progress=False, diagnose=False)
    assert type(ext.weights[0]) is type(longer.weights[0])
    _same_samples(ext, longer, lj_skip=[2])


def test_extend_warns_at_the_callers_line_when_unmixed():
    X, y = _data()
    net = bb.MLP([2, 5, 1])
    first = bb.gibbs.run(net, X, y, num_samples=3, num_warmup=0, num_chains=2, seed=0, init="prior", moves=None,
                         progress=False, diagnose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bb.gibbs.extend(first, 3, progress=False)
    hits = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert hits and hits[0].filename == __file__
    assert "bb.gibbs.extend(result, num_samples)" in str(hits[0].message)


def test_extend_refuses_what_it_cannot_continue(tmp_path):
    X, y = _data()
    net = bb.MLP([2, 4, 1])
    res = bb.gibbs.run(net, X, y, num_samples=2, num_warmup=2, num_chains=1, seed=0, progress=False, diagnose=False)
    with pytest.raises(ValueError, match="init=result.final_state"):
        bb.gibbs.extend(res.to_numpy(), 3)
    path = tmp_path / "r.npz"
    res.save(path)
    with pytest.raises(ValueError, match="loaded from disk"):
        bb.gibbs.extend(bb.posterior.load(path), 3)
    with pytest.raises(ValueError, match="GibbsResult"):
        bb.gibbs.extend(object(), 3)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_samples"):
            bb.gibbs.extend(res, bad)
    assert res.to_numpy().continuation is None
    import pickle

    back = pickle.loads(pickle.dumps(res))                 # picklable as before; the continuation stays behind
    assert back.continuation is None and res.continuation is not None
    np.testing.assert_array_equal(back.weights[0], res.weights[0])
    with pytest.raises(ValueError, match="init=result.final_state"):
        bb.gibbs.extend(back, 3)
