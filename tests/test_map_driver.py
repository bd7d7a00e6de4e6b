"""The MAP optimisers on the one run driver (issue 11): L-BFGS iterations and Adam epochs are steps
of blockbayes.driver.run_kernel — early stop once every member has stopped, per-member stopping
kept, Ctrl-C returns the iterates so far, finite checks name the block. Deterministic checks only.
"""
import warnings

import numpy as np
import pytest

import blockbayes as bb
from blockbayes.driver import NonFiniteStateError, RunInterrupted
from blockbayes.laplace.map import LBFGSState, lbfgs_batched, lbfgs_step


def _quad(scales):
    """f_m(x) = ½ Σ_p s_{m,p} x_p² per member (different conditioning per member)."""
    calls = []

    def fun(x, idx):
        calls.append(len(idx))
        s = scales[idx]
        return 0.5 * np.sum(s * x * x, axis=1), s * x

    return fun, calls


def test_lbfgs_stops_when_every_member_has_stopped():
    rng = np.random.default_rng(0)
    scales = np.stack([np.ones(6), np.logspace(0, 3, 6)])
    fun, calls = _quad(scales)
    x0 = rng.normal(size=(2, 6))
    steps = []
    res = lbfgs_batched(fun, x0, max_iter=500, gtol=1e-10, callback=lambda x, f, g, nit: steps.append(1))
    assert list(res["status"]) == [0, 0]
    assert res["num_iter"][0] < res["num_iter"][1] < 500        # per-member stopping kept
    # the driver's stop rule ended the run with the slower member (no idle steps up to max_iter)
    assert len(steps) == res["num_iter"][1]
    assert sum(calls) == int(np.sum(res["num_fev"]))
    assert [len(h) for h in res["history"]] == list(res["num_iter"])
    # member 0 alone: the same iterates (its stop did not depend on member 1)
    one = lbfgs_batched(_quad(scales[:1])[0], x0[:1], max_iter=500, gtol=1e-10)
    np.testing.assert_array_equal(one["x"][0], res["x"][0])
    assert one["history"][0] == res["history"][0]


def test_lbfgs_iteration_limit_and_converged_start():
    scales = np.stack([np.logspace(0, 4, 8)])
    fun, _ = _quad(scales)
    res = lbfgs_batched(fun, np.ones((1, 8)), max_iter=3, gtol=1e-12)
    assert res["status"][0] == 2 and res["num_iter"][0] == 3 and res["message"][0] == "iteration limit reached"
    done = lbfgs_batched(fun, np.zeros((1, 8)), max_iter=3, gtol=1e-12)     # converged at the start
    assert done["status"][0] == 0 and done["num_iter"][0] == 0 and done["history"] == [[]]


def test_lbfgs_step_leaves_the_input_state():
    scales = np.stack([np.logspace(0, 2, 4)] * 2)
    fun, _ = _quad(scales)
    x = np.ones((2, 4))
    f, g = fun(x, np.arange(2))
    st = LBFGSState(x=x, f=f, g=g, S=np.zeros((2, 3, 4)), Yh=np.zeros((2, 3, 4)), cnt=np.zeros(2, dtype=np.int64),
                    nit=np.zeros(2, dtype=np.int64), nfev=np.ones(2, dtype=np.int64),
                    status=np.array([-1, 0], dtype=np.int64))
    before = [np.array(a, copy=True) for a in st]
    new = lbfgs_step(fun, st, gtol=1e-12, ftol=0.0)
    for name, a, b in zip(LBFGSState._fields, st, before):
        if name not in ("S", "Yh"):                              # the pair buffers are updated in place
            np.testing.assert_array_equal(a, b)                 # the rest of the input state is untouched
    assert new.nit[0] == 1 and new.nit[1] == 0                    # a stopped member stays as it is
    np.testing.assert_array_equal(new.x[1], x[1])


def test_lbfgs_ctrl_c_returns_the_iterates_so_far():
    scales = np.stack([np.logspace(0, 4, 8)] * 2)
    base, _ = _quad(scales)
    n = [0]

    def fun(x, idx):
        n[0] += 1
        if n[0] == 6:
            raise KeyboardInterrupt
        return base(x, idx)

    with pytest.warns(RunInterrupted, match="interrupted"):
        res = lbfgs_batched(fun, np.ones((2, 8)), max_iter=100, gtol=1e-12)
    assert list(res["status"]) == [4, 4] and res["message"][0] == "interrupted (Ctrl-C)"
    full = lbfgs_batched(base, np.ones((2, 8)), max_iter=int(res["num_iter"][0]), gtol=1e-12)
    np.testing.assert_array_equal(res["x"], full["x"])          # the completed iterations, exactly


def test_map_fit_progress_and_callback():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((30, 2))
    y = X[:, 0] + 0.1 * rng.standard_normal(30)
    net = bb.MLP([2, 3, 1], delta={"y": 0.1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w1 = bb.laplace.map_fit(net, X, y, seed=0, max_iter=20, progress=True)
    w0 = bb.laplace.map_fit(net, X, y, seed=0, max_iter=20, progress=False)
    for a, b in zip(w0, w1):
        np.testing.assert_array_equal(a, b)                     # the bar does not touch the iterates
    seen = []
    fun, _ = _quad(np.stack([np.logspace(0, 2, 3)]))
    res = lbfgs_batched(fun, np.ones((1, 3)), max_iter=50, gtol=1e-12, callback=lambda x, f, g, nit: seen.append(int(nit[0])))
    assert seen == list(range(1, int(res["num_iter"][0]) + 1))


def test_adam_on_the_driver_checks_every_epoch():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 3))
    y = X[:, 0] + 0.1 * rng.standard_normal(40)
    net = bb.MLP([3, 4, 1], delta={"y": 0.1})
    w, info = bb.laplace.map_fit(net, X, y, method="adam", seed=0, num_epochs=4, batch_size=16, progress=False,
                                 return_info=True)
    assert info["num_iter"] == 4 * 3 and len(info["history"]) == 4 and info["converged"]
    with np.errstate(all="ignore"):
        with pytest.raises(NonFiniteStateError, match=r"epoch 1 \(of 4\) in: W of layer 1.*Adam diverged"):
            bb.laplace.map_fit(net, X * 1e200, y, method="adam", seed=0, num_epochs=4, progress=False)
