"""``gibbs.ComposedMove``: the components applied in order with split keys, bit for bit; through
``gibbs.run`` with the joint HMC move and the unit redraw; errors. Deterministic (no false
failures). Exactness of the composition follows from each component's (validated in
validation/test_gibbs_moves.py): a product of π-invariant kernels is π-invariant."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import sine_data

import blockbayes as bb
from blockbayes import gibbs
from blockbayes._backend import random as bbr
from blockbayes.gibbs.diagnostics import ConvergenceWarning
from blockbayes.gibbs.hmc import JointHMCMove
from blockbayes.gibbs.moves import ComposedMove, NonCentredMove
from blockbayes.gibbs.redraw import UnitRedrawMove


class _SameKeyComposed(ComposedMove):
    """Broken twin: every component gets the sweep's key itself (correlated draws across moves)."""

    def step(self, key, mstate, state, net, X, y, *, warmup=False, final_warmup=False):
        out = []
        for m, ms in zip(self.moves, mstate):
            state, ms = m.step(key, ms, state, net, X, y, warmup=warmup, final_warmup=final_warmup)
            out.append(ms)
        return state, tuple(out)


def _by_hand(parts, key, st, net, X, y):
    keys = bbr.split(key, len(parts))
    states = []
    for i, m in enumerate(parts):
        ms = m.init(st, net, X, y)
        st, ms = m.step(keys[i], ms, st, net, X, y)
        states.append(ms)
    return st


@pytest.mark.parametrize("cls, same", [(ComposedMove, True), (_SameKeyComposed, False)])
def test_components_in_order_with_split_keys(cls, same):
    """The composed step is the components' steps in order, component i on key split(key, k)[i]
    (bitwise); the same-key twin is not (the test of the twin asserts the difference)."""
    X, y = sine_data(n=30)
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta=1e-2)
    st = gibbs.init(bbr.key(1), net, X, y, num_chains=2, init="prior")
    parts = (NonCentredMove(steps=2), UnitRedrawMove(proposals=2))
    mv = cls(parts)
    new, ms = mv.step(bbr.key(5), mv.init(st, net, X, y), st, net, X, y)
    ref = _by_hand(parts, bbr.key(5), st, net, X, y)
    assert _same_state(new, ref) is same


def _leaves(x):
    if x is None:
        return []
    if isinstance(x, (tuple, list)):
        return [v for e in x for v in _leaves(e)]
    return [np.asarray(x)]


def _same_state(a, b):
    la, lb = _leaves(tuple(a)), _leaves(tuple(b))
    assert len(la) == len(lb) > 0
    return all(u.shape == v.shape and np.array_equal(u, v) for u, v in zip(la, lb))


def test_run_with_hmc_and_redraw():
    """The planted-teacher recipe through ``gibbs.run``: both components report; finite log joint."""
    X, y = sine_data(n=30)
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = gibbs.run(net, X, y, num_samples=6, num_warmup=8, num_chains=2, seed=0, init="zero",
                        learn_noise=True, progress=False,
                        moves=gibbs.ComposedMove((JointHMCMove(leapfrog=4), UnitRedrawMove(proposals=1))))
    s = res.config["moves"]
    assert s["move"] == "composed"
    assert [c["move"] for c in s["components"]] == ["joint non-centred HMC", "unit prior redraw"]
    assert all(0.0 <= c["accept"][0] <= 1.0 for c in s["components"])
    assert np.all(np.isfinite(res.log_joint))


def test_errors():
    X, y = sine_data(n=30)
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta=1e-2)
    st = gibbs.init(bbr.key(1), net, X, y, num_chains=1, init="prior")
    for bad in ((), (UnitRedrawMove(),), UnitRedrawMove(), (UnitRedrawMove(), "hmc"),
                (UnitRedrawMove(), ComposedMove((UnitRedrawMove(), UnitRedrawMove())))):
        with pytest.raises(ValueError, match="ComposedMove|not a move"):
            ComposedMove(bad).init(st, net, X, y)


def _follows_protocol(cls) -> bool:
    """What :func:`blockbayes.gibbs.run` calls on a move: ``init(state, net, X, y, num_warmup=…)``,
    ``step(key, mstate, state, net, X, y, warmup=…, final_warmup=…)`` and ``summary(mstate)``."""
    import inspect

    try:
        init = inspect.signature(cls.init).parameters
        step = inspect.signature(cls.step).parameters
        summ = inspect.signature(cls.summary).parameters
    except (AttributeError, TypeError, ValueError):
        return False
    kw = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return ("num_warmup" in init and init["num_warmup"].kind in kw
            and all(k in step and step[k].kind in kw for k in ("warmup", "final_warmup")) and len(summ) == 2)


class _OldInit(UnitRedrawMove):
    """Twin: a move whose ``init`` predates ``num_warmup`` (the session-10 merge break)."""

    def init(self, state, net, X, y):  # noqa: D102
        return super().init(state, net, X, y)


@pytest.mark.parametrize("cls", [NonCentredMove, JointHMCMove, UnitRedrawMove, ComposedMove])
def test_every_move_takes_what_run_passes(cls):
    """Each exported move has the signature ``gibbs.run`` calls; the twin without ``num_warmup`` fails."""
    assert _follows_protocol(cls)
    assert not _follows_protocol(_OldInit)
