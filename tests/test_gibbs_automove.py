"""``gibbs.run(moves="auto")``: the rule of :mod:`blockbayes.gibbs.automove` and its wiring."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import gibbs
from blockbayes.gibbs import automove
from blockbayes.gibbs.automove import (AUTO_MAX_WORK, AUTO_MIN_WARMUP, GN_UNIT_WEIGHT, gauss_newton_count,
                                       move_work, resolve_moves)
from blockbayes.gibbs.diagnostics import ConvergenceWarning, _advice
from blockbayes.gibbs.hmc import JointHMCMove, num_params
from blockbayes.gibbs.moves import NonCentredMove


def _net(widths=(3, 10, 1)):
    return bb.MLP(list(widths), "relu", delta={"Z": 1e-2, "X": 1e-2, "y": 0.1})


def _resolve(moves="auto", net=None, n=100, **kw):
    args = dict(num_chains=2, num_warmup=AUTO_MIN_WARMUP, num_samples=100, thin=1, tempering_active=False,
                schedule=None)
    args.update(kw)
    return resolve_moves(moves, _net() if net is None else net, n, **args)


def test_work_formula():
    net = _net((13, 50, 1))
    P = num_params(net)
    assert P == 13 * 50 + 50 + 50 + 1
    mv = JointHMCMove()
    G = gauss_newton_count(mv, 1500)
    w = move_work(net, 455, num_chains=2, num_warmup=1500, sweeps=2000)
    assert w == pytest.approx(2 * 2000 * 32 * (455 * P + P * P) + GN_UNIT_WEIGHT * 2 * G * (455 * P * P + P ** 3))
    # more rows, chains, sweeps or outputs cost more
    assert move_work(net, 456, num_chains=2, num_warmup=1500, sweeps=2000) > w
    assert move_work(_net((13, 50, 3)), 455, num_chains=2, num_warmup=1500, sweeps=2000) > w


@pytest.mark.parametrize("W", [0, 1, 2, 3, 7, 10, 60, 200, 333])
def test_gauss_newton_count_is_what_the_move_computes(W, monkeypatch):
    """The count of the estimate equals the Gauss-Newton matrices a real run computes."""
    from blockbayes.gibbs import hmc

    calls = []
    real = hmc.joint_gauss_newton_precision
    monkeypatch.setattr(hmc, "joint_gauss_newton_precision", lambda *a, **k: calls.append(1) or real(*a, **k))
    mv = JointHMCMove(leapfrog=1, refresh_every=5, average_every=3)
    X, y = _data(12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gibbs.run(bb.MLP([3, 2, 1], "relu"), X, y, num_samples=3, num_warmup=W, num_chains=1, seed=0,
                  progress=False, init="prior", tempering="off", moves=mv, diagnose=False, learn_noise=False)
    assert len(calls) == gauss_newton_count(mv, W)


def test_auto_adds_the_joint_hmc_move_when_affordable():
    a = _resolve()
    assert isinstance(a.moves, JointHMCMove) and a.moves == JointHMCMove()
    assert a.requested == "auto" and not a.declined_for_cost
    s = a.summary()
    assert s["chosen"] == "JointHMCMove" and s["work"] == a.work and s["max_work"] == AUTO_MAX_WORK


@pytest.mark.parametrize("kw, reason", [
    (dict(tempering_active=True), "replica exchange"),
    (dict(schedule=object()), "schedule"),
    (dict(num_warmup=AUTO_MIN_WARMUP - 1), "num_warmup"),
])
def test_auto_adds_nothing_where_the_move_cannot_adapt_or_replicas_run(kw, reason):
    a = _resolve(**kw)
    assert a.moves is None and reason in a.reason and not a.declined_for_cost


def test_auto_declines_over_the_work_cap_and_at_the_cap_boundary():
    net = _net()
    kw = dict(num_chains=2, num_warmup=AUTO_MIN_WARMUP, sweeps=AUTO_MIN_WARMUP + 100)
    lo, hi = 1, 10 ** 9
    while hi - lo > 1:                                   # the largest n under the cap (work grows with n)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if move_work(net, mid, **kw) <= AUTO_MAX_WORK else (lo, mid)
    assert _resolve(net=net, n=lo).moves is not None
    over = _resolve(net=net, n=lo + 1)
    assert over.moves is None and over.declined_for_cost and "estimated work" in over.reason
    # thinning counts: the kept sweeps are S · thin
    assert _resolve(net=net, n=lo, thin=2).moves is None


def test_reference_run_is_the_default_run():
    from blockbayes.gibbs.sampler import DEFAULT_COUNTS

    S, C = DEFAULT_COUNTS
    assert automove.REFERENCE_RUN == dict(num_chains=C, num_warmup=S, sweeps=2 * S)


def _largest_n_under_cap(net, **kw):
    lo, hi = 1, 10 ** 9
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if move_work(net, mid, **kw) <= AUTO_MAX_WORK else (lo, mid)
    return lo


def test_a_larger_budget_keeps_the_move_where_the_default_run_has_it():
    """Design note 64: on data where the default run's move fits the cap, asking for more samples, warm-up,
    chains or thinning never removes it; over the reference cap the requested run's own work decides."""
    net = _net()
    n_ref = _largest_n_under_cap(net, **automove.REFERENCE_RUN)
    big = dict(num_chains=16, num_warmup=4000, num_samples=4000, thin=2)
    a = _resolve(net=net, n=n_ref, **big)
    assert isinstance(a.moves, JointHMCMove) and not a.declined_for_cost
    assert a.work > AUTO_MAX_WORK >= a.reference_work and "default run" in a.reason
    assert a.summary()["reference_work"] == a.reference_work
    # one row more and the reference run is over the cap too: the big budget is declined for cost
    over = _resolve(net=net, n=n_ref + 1, **big)
    assert over.moves is None and over.declined_for_cost and over.reference_work > AUTO_MAX_WORK
    # ... while a short run on the same data still gets the move on its own work
    short = _resolve(net=net, n=n_ref + 1)
    assert isinstance(short.moves, JointHMCMove) and short.work <= AUTO_MAX_WORK < short.reference_work
    # monotone: at every n, if a budget gets the move, every larger budget does at or under n_ref
    for n in (10, 1000, n_ref):
        for kw in (dict(), dict(num_samples=10 ** 5), dict(num_chains=64), dict(thin=50)):
            assert _resolve(net=net, n=n, **kw).moves is not None


def test_auto_keeps_to_the_gaussian_likelihood():
    for lik, d_out in (("probit", 1), ("multinomial_probit", 3), ("onehot_gaussian", 3)):
        a = _resolve(net=bb.MLP([3, 4, d_out], "relu", likelihood=lik), n=50)
        assert a.moves is None and "likelihood" in a.reason and not a.declined_for_cost


def test_auto_declines_above_the_dense_mass_limit():
    net = _net((60, 70, 1))              # 4341 weights > 4000
    a = _resolve(net=net, n=10)
    assert a.moves is None and a.declined_for_cost and "max_params" in a.reason


def test_explicit_values_pass_through():
    mv = NonCentredMove(steps=2)
    assert _resolve(mv).moves is mv and _resolve(mv).requested == "given"
    assert _resolve(None).moves is None
    assert _resolve("none").moves is None
    # "hmc" adds the move even where "auto" would not
    assert isinstance(_resolve("hmc", n=10**9).moves, JointHMCMove)
    with pytest.raises(ValueError, match="moves must be"):
        _resolve("fast")


def test_run_rejects_a_bad_string_before_any_fit(monkeypatch):
    called = []
    monkeypatch.setattr("blockbayes.gibbs.starts.map_starts", lambda *a, **k: called.append(1))
    X = np.zeros((10, 2))
    with pytest.raises(ValueError, match="moves must be"):
        gibbs.run(_net((2, 3, 1)), X, np.zeros(10), num_samples=2, moves="HMC",
                  num_warmup=0, num_chains=1, learn_noise=False)
    assert not called


def _data(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    return X, np.sin(X[:, 0]) + 0.1 * rng.normal(size=n)


def _run(moves, W, S=20, **kw):
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        kw.setdefault("init", "prior")
        return gibbs.run(_net(), X, y, num_samples=S, num_warmup=W, num_chains=2, seed=3, progress=False,
                         tempering="off", moves=moves, **kw)


def test_default_is_auto_and_resolves_to_the_same_samples_as_the_explicit_move():
    W = AUTO_MIN_WARMUP
    a = _run("auto", W)
    b = _run(JointHMCMove(), W)
    assert a.config["moves_auto"]["chosen"] == "JointHMCMove"
    assert b.config["moves_auto"]["requested"] == "given"
    assert a.config["moves"] == b.config["moves"]
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
    import inspect

    assert inspect.signature(gibbs.run).parameters["moves"].default == "auto"


def test_auto_below_the_warmup_threshold_is_the_sweep_alone_bitwise():
    a = _run("auto", 20)
    b = _run(None, 20)
    assert a.config["moves_auto"]["chosen"] == "none" and "moves" not in a.config
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(np.asarray(wa), np.asarray(wb))
    np.testing.assert_array_equal(np.asarray(a.log_joint), np.asarray(b.log_joint))


def test_advice_names_the_reason_auto_declined():
    cost = type("R", (), {"config": {"moves_auto": {"requested": "auto", "chosen": "none",
                                                     "reason": "cost: estimated work 1e+12 > 1.5e+11"}}})()
    assert "moves='hmc'" in _advice(cost) and "estimated work" in _advice(cost)
    short = type("R", (), {"config": {"moves_auto": {"requested": "auto", "chosen": "none",
                                                      "reason": "num_warmup=50 < 200 (the move adapts)"}}})()
    assert "more warm-up" in _advice(short)
    moved = type("R", (), {"config": {"moves": {"move": "joint"}, "moves_auto": {"requested": "auto"}}})()
    assert _advice(moved).startswith("run longer (more warm-up")


def test_runner_gibbs_row_keeps_the_sweep_alone_and_gibbs_auto_takes_the_default(monkeypatch):
    """The `gibbs` row of bb.evaluate is the cheap row measured without moves; the default must not
    change it (gibbs_gold is the row with the HMC move)."""
    seen = {}
    real = gibbs.run

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    from blockbayes.evaluate import _methods as M

    monkeypatch.setattr(gibbs, "run", spy)
    X, y = _data(40)
    g = M.get_method("gibbs")
    g.fit(M.Arch(3, (4,), "regression"), X, y, seed=0,
          **g.options(dict(num_warmup=AUTO_MIN_WARMUP, num_samples=2, thin=1, num_chains=2, init="zero")))
    assert "moves" in seen and seen["moves"] is None
    # gibbs_auto: the same row with the library default, and the decision in its diagnostics
    ga = M.get_method("gibbs_auto")
    assert ga.options({}) == g.options({})          # same settings (and so the same budget) as gibbs
    p = ga.fit(M.Arch(3, (4,), "regression"), X, y, seed=0,
               **ga.options(dict(num_warmup=AUTO_MIN_WARMUP, num_samples=2, thin=1, num_chains=2, init="zero")))
    assert seen["moves"] == "auto"
    assert p.diagnostics["moves_chosen"] == "JointHMCMove" and 0.0 <= p.diagnostics["move_accept"][0] <= 1.0



def test_auto_move_runs_in_float32_and_keeps_the_dtype():
    """A default float32 regression run now gets the move: it must run (dense mass Cholesky in float32)
    and return float32 samples. Measured on Boston / Yacht / Energy split 0 in float32 (session 18):
    acceptance 0.56-0.76, no failure."""
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = gibbs.run(_net(), X.astype(np.float32), y.astype(np.float32), num_samples=10,
                      num_warmup=AUTO_MIN_WARMUP, num_chains=2, seed=1, progress=False, learn_noise=True)
    assert r.config["moves_auto"]["chosen"] == "JointHMCMove"
    assert all(np.asarray(w).dtype == np.float32 and np.all(np.isfinite(np.asarray(w))) for w in r.weights)
    assert 0.0 < r.config["moves"]["accept"][0] <= 1.0
