"""The run driver (blockbayes.driver.run_kernel), the input gate (blockbayes.inputs.prepare),
checkpoint/resume, Ctrl-C, the keyword vocabulary and run-to-run reproducibility.

All tests are deterministic (bitwise or exact comparisons): no false-failure bound applies."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import NamedTuple

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import driver
from blockbayes._backend import BackendUnavailableError
from blockbayes._backend import random as bbr
from blockbayes.driver import NonFiniteStateError, RunInterrupted, run_kernel
from blockbayes.inputs import prepare
from tests._helpers import fail_gibbs_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Toy(NamedTuple):
    x: object           # (C, 2) random walk
    n: int              # steps done


def _toy_step(key, st, t):
    x = st.x + bbr.normal(key, st.x.shape, like=st.x)
    return Toy(x, st.n + 1), {"t": t}


def _toy0(C=3):
    return Toy(np.zeros((C, 2)), 0)


def _collect(st, info, t):
    return {"x": st.x, "t": float(info["t"])}


def _data(n=24, d=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.sin(X[:, :1]) + 0.1 * rng.standard_normal((n, 1))


# ----------------------------------------------------------------------------- the driver

def test_warmup_thinning_and_trace_shapes():
    out = run_kernel(bbr.key(0), _toy0(), _toy_step, num_samples=4, num_warmup=3, thin=2,
                     collect=_collect, progress=False)
    assert out.num_done == 3 + 4 * 2 and out.num_kept == 4 and not out.interrupted
    assert out.traces["x"].shape == (3, 4, 2) and out.traces["t"].shape == (4,)
    # kept steps (0-based) after 3 warm-up steps, every 2nd: 4, 6, 8, 10
    np.testing.assert_array_equal(out.traces["t"], [4.0, 6.0, 8.0, 10.0])
    assert out.state.n == 11
    np.testing.assert_array_equal(out.traces["x"][:, -1], out.state.x)
    # optimiser mode: every step kept
    out = run_kernel(bbr.key(0), _toy0(), _toy_step, num_steps=5, collect=_collect, progress=True)
    np.testing.assert_array_equal(out.traces["t"], np.arange(5.0))


def test_keys_are_split_as_the_hand_written_loops_did():
    seen = []
    run_kernel(bbr.key(7), _toy0(), lambda k, s, t: (seen.append(k) or s, None), num_steps=3, progress=False)
    key, ref = bbr.key(7), []
    for _ in range(3):
        key, sub = bbr.split(key, 2)
        ref.append(sub)
    assert all(np.array_equal(a, b) for a, b in zip(seen, ref))
    seen.clear()
    run_kernel(bbr.key(7), _toy0(), lambda k, s, t: (seen.append(k) or s, None), num_steps=2, keys_per_step=2,
               key_mode="fan", progress=False)
    key = bbr.key(7)
    for got in seen:
        key, a, b = bbr.split(key, 3)
        assert np.array_equal(got[0], a) and np.array_equal(got[1], b)


def _raise(exc):
    raise exc


def test_key_every_splits_keys_at_every_kth_step_only(tmp_path):
    """``key_every=k``: steps 0, k, 2k, ... get the keys a ``key_every=1`` run gives its steps 0, 1, 2, ...;
    the others ``None``; a resumed run continues the same stream. Twin: a step that expects a key at
    every step sees ``None`` (so the option is not a no-op)."""
    seen = []
    run_kernel(bbr.key(7), _toy0(), lambda k, s, t: (seen.append(k) or s, None), num_steps=7, keys_per_step=2,
               key_mode="fan", key_every=3, progress=False)
    ref = []
    run_kernel(bbr.key(7), _toy0(), lambda k, s, t: (ref.append(k) or s, None), num_steps=3, keys_per_step=2,
               key_mode="fan", progress=False)
    assert [k is None for k in seen] == [False, True, True, False, True, True, False]
    for got, want in zip(seen[::3], ref):
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])

    def step(key, st, t):
        x = st.x if key is None else st.x + bbr.normal(key, st.x.shape, like=st.x)
        return Toy(x, st.n + 1), {"t": t}

    kw = dict(num_steps=8, key_every=3, collect=_collect, progress=False)
    full = run_kernel(bbr.key(3), _toy0(), step, **kw)
    path = tmp_path / "k.ckpt"
    with pytest.raises(_Crash):                                  # the 6th step fails; checkpoint after 4
        run_kernel(bbr.key(3), _toy0(), lambda k, st, t: _raise(_Crash) if t == 5 else step(k, st, t),
                   checkpoint=path, checkpoint_every=4, **kw)
    res = run_kernel(bbr.key(3), _toy0(), step, resume=path, **kw)
    np.testing.assert_array_equal(res.state.x, full.state.x)
    np.testing.assert_array_equal(res.traces["x"], full.traces["x"])
    with pytest.raises(ValueError, match="another run"):         # key_every is part of the run's identity
        run_kernel(bbr.key(3), _toy0(), step, resume=path, **dict(kw, key_every=2))
    with pytest.raises(ValueError, match="key_every"):
        run_kernel(bbr.key(3), _toy0(), step, num_steps=2, key_every=0, progress=False)
    with pytest.raises(TypeError):
        run_kernel(bbr.key(3), _toy0(), _toy_step, num_steps=2, key_every=2, progress=False)


def test_check_every_names_the_nonfinite_block_and_step():
    def step(key, st, t):
        a = np.full(2, np.nan) if t == 2 else np.zeros(2)
        return {"a": np.zeros(2), "bad block": a}, None

    def check(st, info):
        return driver.nonfinite_blocks(np, st)

    with pytest.raises(NonFiniteStateError, match=r"step 3 \(of 10\) in: bad block$"):
        run_kernel(None, {}, step, num_steps=10, check=check, check_every=1, progress=False)
    # checked every 5 steps only: the NaN of step 3 is gone by step 5 and is not seen
    out = run_kernel(None, {}, step, num_steps=10, check=check, check_every=5, progress=False)
    assert out.num_done == 10
    with pytest.raises(ValueError, match="check_every"):
        run_kernel(None, {}, step, num_steps=2, check=check, check_every=0, progress=False)


def test_families_check_every_names_blocks():
    X, y = _data()
    net = bb.MLP([2, 4, 1], delta=0.05)
    Xbig = X * 1e200                        # overflows: the first check must name the blocks
    with np.errstate(all="ignore"):
        with pytest.raises(NonFiniteStateError, match=r"step 1 \(of 3\) in: mean of layer 1"):
            bb.vi.ivon.run(net, Xbig, y, num_steps=3, seed=0, check_every=1, progress=False)
        with pytest.raises(FloatingPointError):
            bb.vi.ivon.run(net, Xbig, y, num_steps=3, seed=0, progress=False)   # final check only
        with pytest.raises(NonFiniteStateError, match=r"step 1 \(of 3\) in: mu of layer 1"):
            bb.vi.mean_field.run(net, Xbig, y, num_steps=3, seed=0, check_every=1, progress=False)
        with pytest.raises(FloatingPointError, match="mean-field VI diverged"):
            bb.vi.mean_field.run(net, Xbig, y, num_steps=3, seed=0, progress=False)   # final check only


def test_keyboard_interrupt_returns_the_samples_so_far():
    def step(key, st, t):
        if t == 7:
            raise KeyboardInterrupt
        return _toy_step(key, st, t)

    with pytest.warns(RunInterrupted, match="interrupted at step 8 of 12; returning the 2 kept samples"):
        out = run_kernel(bbr.key(0), _toy0(), step, num_samples=5, num_warmup=2, thin=2, collect=_collect,
                         progress=False)
    full = run_kernel(bbr.key(0), _toy0(), _toy_step, num_samples=5, num_warmup=2, thin=2, collect=_collect,
                      progress=False)
    # kept steps 3 and 5 (warm-up 2, thin 2); step 7 never completed
    assert out.interrupted and out.num_kept == 2 and out.num_done == 7
    np.testing.assert_array_equal(out.traces["x"], full.traces["x"][:, :2])
    # nothing kept yet: the interrupt propagates
    with pytest.raises(KeyboardInterrupt):
        run_kernel(bbr.key(0), _toy0(), step, num_samples=2, num_warmup=9, collect=_collect, progress=False)


class _Crash(Exception):
    pass


def test_checkpoint_resume_is_bitwise(tmp_path):
    path = tmp_path / "run.ckpt"
    full = run_kernel(bbr.key(3), _toy0(), _toy_step, num_samples=6, num_warmup=2, thin=2, collect=_collect,
                      progress=False)

    def crashing(key, st, t):
        if t == 9:
            raise _Crash
        return _toy_step(key, st, t)

    with pytest.raises(_Crash):
        run_kernel(bbr.key(3), _toy0(), crashing, num_samples=6, num_warmup=2, thin=2, collect=_collect,
                   progress=False, checkpoint=path, checkpoint_every=4)
    assert path.exists() and not [p for p in os.listdir(tmp_path) if ".tmp" in p]
    ck = driver.load_checkpoint(path)
    assert ck["meta"]["num_done"] == 8 and ck["meta"]["num_kept"] == 3
    res = run_kernel(bbr.key(3), _toy0(), _toy_step, num_samples=6, num_warmup=2, thin=2, collect=_collect,
                     progress=False, resume=path)
    assert res.num_done == full.num_done and res.state.n == full.state.n == 14
    for k in ("x", "t"):
        np.testing.assert_array_equal(res.traces[k], full.traces[k])
    np.testing.assert_array_equal(res.state.x, full.state.x)
    assert np.array_equal(res.key, full.key)
    # another run's checkpoint is refused, naming what differs
    with pytest.raises(ValueError, match="num_samples"):
        run_kernel(bbr.key(3), _toy0(), _toy_step, num_samples=7, num_warmup=2, thin=2, collect=_collect,
                   progress=False, resume=path)
    bad = tmp_path / "bad.npz"
    np.savez(bad, a=np.zeros(2))
    with pytest.raises(ValueError, match="not a blockbayes checkpoint"):
        run_kernel(bbr.key(3), _toy0(), _toy_step, num_steps=2, progress=False, resume=bad)


def test_ctrl_c_anywhere_in_a_step_leaves_a_resumable_checkpoint(tmp_path):
    """An interrupt after the step function returned (here: while its values are collected)
    must not commit that step: the checkpoint written on Ctrl-C resumes bit-exactly."""
    path = tmp_path / "c.ckpt"
    full = run_kernel(bbr.key(5), _toy0(), _toy_step, num_samples=6, num_warmup=1, collect=_collect,
                      progress=False)
    calls = [0]

    def collect(st, info, t):
        calls[0] += 1
        if calls[0] == 4:
            raise KeyboardInterrupt
        return _collect(st, info, t)

    with pytest.warns(RunInterrupted):
        part = run_kernel(bbr.key(5), _toy0(), _toy_step, num_samples=6, num_warmup=1, collect=collect,
                          progress=False, checkpoint=path, checkpoint_every=100)
    assert part.num_kept == 3 and part.num_done == 4 and part.state.n == 4
    res = run_kernel(bbr.key(5), _toy0(), _toy_step, num_samples=6, num_warmup=1, collect=_collect,
                     progress=False, resume=path)
    np.testing.assert_array_equal(res.traces["x"], full.traces["x"])
    np.testing.assert_array_equal(res.state.x, full.state.x)


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_gibbs_resume_equals_uninterrupted_run(tmp_path, monkeypatch, backend):
    X, y = _data()
    if backend != "numpy":
        xps = pytest.importorskip(backend)
        X, y = xps.asarray(X), xps.asarray(y)
    net = bb.MLP([2, 4, 3, 1], delta=0.05)
    kw = dict(num_samples=5, num_warmup=2, num_chains=2, thin=2, seed=11, progress=False, diagnose=False, init="prior")
    full = bb.gibbs.run(net, X, y, **kw)
    path = tmp_path / "g.ckpt"
    restore = fail_gibbs_step(monkeypatch, 8, _Crash)
    with pytest.raises(_Crash):
        bb.gibbs.run(net, X, y, checkpoint=path, checkpoint_every=3, **kw)
    restore()
    # the checkpoint after sweep 6 holds a kept sweep whose log joint is completed by sweep 7
    assert driver.load_checkpoint(path)["meta"]["num_done"] == 6
    res = bb.gibbs.run(net, X, y, resume=path, **kw)
    assert type(res.weights[0]) is type(full.weights[0])
    h = bb._backend.to_numpy
    for a, b in zip(res.weights, full.weights):
        np.testing.assert_array_equal(h(a), h(b))
    for f in ("delta_y", "lam_w", "lam_b", "log_joint"):
        np.testing.assert_array_equal(h(getattr(res, f)), h(getattr(full, f)))


@pytest.mark.parametrize("method", ["ivon", "cavi", "mean_field"])
def test_vi_resume_equals_uninterrupted_run(tmp_path, monkeypatch, method):
    X, y = _data(n=30)
    net = bb.MLP([2, 5, 1], delta=0.05)
    mod = getattr(bb.vi, method)
    kw = dict(num_steps=9, seed=2, progress=False)
    if method == "ivon":
        kw.update(batch_size=8, num_restarts=2, learn_noise=True)     # epoch shuffles live in the carry
    if method == "mean_field":
        kw.update(batch_size=8, num_restarts=2, num_mc=2, learn_noise=True)   # minibatch keys, Adam moments
    full = mod.run(net, X, y, **kw)
    path = tmp_path / f"{method}.ckpt"
    owner = bb.vi._natural if method == "ivon" else mod
    real = bb.vi.ivon.step if method == "ivon" else mod.step
    calls = [0]

    def crashing(*a, **k):
        calls[0] += 1
        if calls[0] == 7:
            raise _Crash
        return real(*a, **k)

    if method == "ivon":
        monkeypatch.setattr(bb.vi.ivon, "step", crashing)
    else:
        monkeypatch.setattr(owner, "step", crashing)
    with pytest.raises(_Crash):
        mod.run(net, X, y, checkpoint=path, checkpoint_every=4, **kw)
    monkeypatch.undo()
    res = mod.run(net, X, y, resume=path, **kw)
    for a, b in zip(res.means, full.means):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(res.covs, full.covs):
        np.testing.assert_array_equal(a, b)
    for k in full.trace:
        np.testing.assert_array_equal(res.trace[k], full.trace[k])
    np.testing.assert_array_equal(res.delta_y, full.delta_y)


def test_mean_field_ctrl_c_returns_the_fit_so_far(monkeypatch):
    X, y = _data()
    net = bb.MLP([2, 4, 1], delta=0.05)
    kw = dict(num_steps=8, num_restarts=2, seed=3, progress=False)
    full = bb.vi.mean_field.run(net, X, y, **kw)
    mod = bb.vi.mean_field
    real = mod.step
    calls = [0]

    def interrupting(*a, **k):
        calls[0] += 1
        if calls[0] == 6:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(mod, "step", interrupting)
    with pytest.warns(RunInterrupted, match="returning the 5 kept samples"):
        res = bb.vi.mean_field.run(net, X, y, **kw)
    assert res.config["interrupted"] and res.config["num_steps_done"] == 5
    assert res.trace["elbo"].shape == (2, 5)
    np.testing.assert_array_equal(res.trace["elbo"], full.trace["elbo"][:, :5])
    np.testing.assert_array_equal(res.elbo, np.mean(full.trace["elbo"][:, 4:5], axis=-1))
    mean, var = res.predict(X[:3])
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(var))


def test_gibbs_ctrl_c_returns_a_valid_truncated_result(monkeypatch):
    X, y = _data()
    net = bb.MLP([2, 4, 1], delta=0.05)
    full = bb.gibbs.run(net, X, y, num_samples=8, num_warmup=1, num_chains=2, seed=4, progress=False, diagnose=False,
                        init="prior", learn_noise=False)
    fail_gibbs_step(monkeypatch, 6, KeyboardInterrupt)
    with pytest.warns(RunInterrupted, match="returning the 4 kept samples"):
        res = bb.gibbs.run(net, X, y, num_samples=8, num_warmup=1, num_chains=2, seed=4, progress=False,
                           diagnose=False, init="prior", learn_noise=False)
    assert res.config["interrupted"] and res.config["num_samples"] == 4
    assert res.weights[0].shape == (2, 4) + net.weight_shapes()[0]
    np.testing.assert_array_equal(res.weights[1], full.weights[1][:, :4])
    np.testing.assert_array_equal(res.log_joint[:, :3], full.log_joint[:, :3])
    # the last kept sweep had no next sweep to complete its fused log joint: computed directly
    # (the uninterrupted run summed the same terms in another order)
    np.testing.assert_allclose(res.log_joint[:, 3], full.log_joint[:, 3], rtol=1e-12)
    mean, var = res.predict(X[:5])
    assert np.all(np.isfinite(mean)) and np.all(np.isfinite(var))


# ----------------------------------------------------------------------------- vocabulary

def test_deprecated_spellings_warn_and_agree():
    X, y = _data()
    net = bb.MLP([2, 4, 1], delta=0.05)
    ref = bb.vi.cavi.run(net, X, y, num_steps=3, seed=0, progress=False)
    with pytest.warns(DeprecationWarning, match="'num_iters' is deprecated, use 'num_steps'"):
        old = bb.vi.cavi.run(net, X, y, num_iters=3, seed=0, progress=False)
    np.testing.assert_array_equal(old.means[0], ref.means[0])
    with pytest.raises(TypeError, match="both 'num_steps'"):
        bb.vi.cavi.run(net, X, y, num_steps=3, num_iters=3, progress=False)
    for fn, kw in ((bb.vi.targets.run, dict(num_iters=1)), (bb.vi.sampled.run, dict(num_iters=1, init="prior")),
                   (bb.gibbs.run, dict(n_samples=1, diagnose=False)),
                   (bb.laplace.block, dict(num_sweeps=1))):
        with pytest.warns(DeprecationWarning, match="deprecated"):
            fn(net, X, y, progress=False, **kw)


def test_run_defaults_follow_the_vocabulary():
    import inspect

    for fn in (bb.gibbs.run, bb.vi.rao_blackwell.run, bb.vi.cavi.run, bb.vi.sampled.run, bb.vi.targets.run,
               bb.vi.ivon.run, bb.vi.vogn.run, bb.vi.mean_field.run):
        p = inspect.signature(fn).parameters
        assert p["seed"].default is None and p["progress"].default is True, fn
        for kw in ("device", "dtype", "check_every", "checkpoint", "checkpoint_every", "resume"):
            assert kw in p, (fn, kw)
        assert "num_iters" not in p and "n_samples" not in p, fn
    for fn in (bb.laplace.fit, bb.laplace.map_fit, bb.laplace.map_ensemble, bb.laplace.block):
        p = inspect.signature(fn).parameters
        assert "device" in p and "dtype" in p, fn


# ----------------------------------------------------------------------------- input gate

def test_standard_runs_share_the_gate(monkeypatch):
    """IVON, VOGN and mean-field VI check their inputs in one place: the likelihood (with the
    learn_noise rule) in inputs.resolve_likelihood, the data in inputs.prepare(task="standard")."""
    from blockbayes import inputs

    X, y = _data()
    netc = bb.MLP([2, 4, 3], likelihood="multinomial_probit")
    with pytest.raises(ValueError, match="learn_noise applies to the Gaussian likelihood only"):
        inputs.resolve_likelihood(netc, None, learn_noise=True)
    assert inputs.resolve_likelihood(bb.MLP([2, 4, 1]), None, learn_noise=True) == "gaussian"
    labels = (X[:, 0] > 0).astype(int)
    for mod in (bb.vi.mean_field, bb.vi.ivon, bb.vi.vogn):
        with pytest.raises(ValueError, match="learn_noise applies to the Gaussian likelihood only"):
            mod.run(netc, X, labels, num_steps=1, learn_noise=True, progress=False)
    seen = []
    real = inputs.prepare

    def spy(*a, **k):
        seen.append(k.get("task"))
        return real(*a, **k)

    import blockbayes.vi._natural as nat
    monkeypatch.setattr(bb.vi.mean_field, "prepare", spy)
    monkeypatch.setattr(nat, "prepare", spy)
    net = bb.MLP([2, 4, 1], delta=0.05)
    for mod in (bb.vi.mean_field, bb.vi.ivon, bb.vi.vogn):
        mod.run(net, X, y, num_steps=1, progress=False)
        with pytest.raises(ValueError, match="NaN"):
            mod.run(net, np.where(X > 1, np.nan, X), y, num_steps=1, progress=False)
    assert seen == ["standard"] * 6

def test_prepare_moves_converts_and_checks():
    X, y = _data()
    net = bb.MLP([2, 4, 1])
    Xp, yp = prepare(net, X, y[:, 0], dtype="float32")
    assert Xp.dtype == np.float32 and yp.dtype == np.float32 and yp.shape == (24, 1)
    with pytest.raises(ValueError, match="shape"):
        prepare(net, X[:, 0], y)
    with pytest.raises(ValueError, match="d_in = 2"):
        prepare(net, np.ones((24, 3)), y)
    with pytest.raises(ValueError, match="rows"):
        prepare(net, X, y[:-1])
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        prepare(net, Xn, y)
    with pytest.raises(ValueError, match="y contains NaN"):
        prepare(net, X, np.full_like(y, np.inf))
    with pytest.raises(TypeError, match="MLP"):
        prepare("net", X, y)
    with pytest.raises(ValueError, match="task"):
        prepare(net, X, y, task="nope")
    with pytest.raises(ValueError, match="NaN"):
        prepare(net, Xn, y, task="standard")


def test_prepare_classification_labels():
    X, _ = _data()
    netc = bb.MLP([2, 4, 3], likelihood="multinomial_probit")
    lab = np.arange(24) % 3
    Xp, yp = prepare(netc, X, lab)
    assert yp.dtype == np.int64 and yp.shape == (24,)
    with pytest.raises(TypeError, match="integer class labels"):
        prepare(netc, X, lab.astype(float))
    with pytest.raises(ValueError, match="0..2"):
        prepare(netc, X, lab + 1)
    with pytest.raises(NotImplementedError, match="Gaussian regression only"):
        prepare(netc, X, lab, task="regression", method="CAVI")
    _, Y = prepare(netc, X, lab, task="standard")       # softmax net: one-hot float targets
    assert Y.shape == (24, 3) and Y.dtype == X.dtype and np.all(Y.sum(axis=1) == 1)
    with pytest.raises(ValueError, match="labels must lie"):
        prepare(netc, X, lab + 1, task="standard")


def test_prepare_devices():
    X, y = _data()
    net = bb.MLP([2, 4, 1])
    try:
        import cupy  # noqa: F401
    except Exception:
        with pytest.raises(BackendUnavailableError):
            prepare(net, X, y, device="cuda")
    with pytest.raises(ValueError, match="device"):
        prepare(net, X, y, device="tpu")
    xps = pytest.importorskip("array_api_strict")
    Xs, ys = xps.asarray(X), xps.asarray(y)
    Xh, yh = prepare(net, Xs, ys, device="cpu")          # moved to the host: NumPy
    assert isinstance(Xh, np.ndarray) and isinstance(yh, np.ndarray)
    devs = [d for d in getattr(xps, "__array_namespace_info__")().devices()]
    if len(devs) < 2:
        pytest.skip("array-api-strict has a single device")
    y2 = xps.asarray(y, device=devs[1])
    with pytest.raises(ValueError, match="different devices"):
        prepare(net, xps.asarray(X, device=devs[0]), y2)


def test_laplace_takes_device_and_dtype():
    X, y = _data()
    net = bb.MLP([2, 4, 1], delta=0.05)
    W = bb.laplace.map_fit(net, X, y, seed=0, max_iter=20, dtype="float32", progress=False)
    assert all(w.dtype == np.float32 for w in W)
    la = bb.laplace.fit(net, W, X, y, structure="diag", dtype="float32")       # float64 X, float32 fit
    assert all(w.dtype == np.float32 for w in la.weights)
    W64 = bb.laplace.map_fit(net, X, y, seed=0, max_iter=20, progress=False)
    la = bb.laplace.fit(net, W64, X, y, structure="diag", dtype="float32")
    assert all(w.dtype == np.float32 for w in la.weights)
    bl = bb.laplace.block(net, X, y, init=W64, num_steps=2, dtype="float32", progress=False)
    assert all(w.dtype == np.float32 for w in bl.weights)
    xps = pytest.importorskip("array_api_strict")
    Wh = bb.laplace.map_fit(net, xps.asarray(X), xps.asarray(y), seed=0, max_iter=20, device="cpu",
                            progress=False)
    assert all(isinstance(w, np.ndarray) for w in Wh)
    np.testing.assert_allclose(Wh[0], W64[0], rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- reproducibility

_TWICE = textwrap.dedent("""
    import numpy as np, blockbayes as bb
    import scipy.linalg  # noqa: F401  (both BLAS libraries loaded, so the limits reach them)
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 3)).astype(np.float32)
    y = (np.sin(X[:, :1]) + 0.1 * rng.standard_normal((400, 1))).astype(np.float32)
    net = bb.MLP([3, 16, 16, 1], delta=1e-2)
    kw = dict(num_samples=20, num_chains=2, seed=5, progress=False, diagnose=False)
    a = bb.gibbs.run(net, X, y, **kw)
    # whatever ran before: another call, and a different BLAS thread setting left behind
    bb.gibbs.run(net, X, y, **dict(kw, seed=6))
    with threadpool_limits(2, user_api="blas"):
        b = bb.gibbs.run(net, X, y, **kw)
    same = all(np.array_equal(u, v) for u, v in zip(a.weights, b.weights))
    same = same and np.array_equal(a.log_joint, b.log_joint) and np.array_equal(a.delta_y, b.delta_y)
    # a VI run called directly: its sweeps' BLAS calls must not follow the process setting
    # (broken twin: before every VI run held one BLAS thread, 2 threads moved these means by ~1e-4)
    X = rng.standard_normal((1000, 10)).astype(np.float32)
    y = (np.sin(X[:, :1]) + 0.1 * rng.standard_normal((1000, 1))).astype(np.float32)
    net = bb.MLP([10, 50, 50, 1], delta=1e-3)
    kw = dict(num_samples=4, num_warmup=2, num_chains=2, init="prior", seed=5, progress=False)
    with threadpool_limits(1, user_api="blas"):
        c = bb.vi.rao_blackwell.run(net, X, y, **kw)
    with threadpool_limits(2, user_api="blas"):
        d = bb.vi.rao_blackwell.run(net, X, y, **kw)
    same_vi = all(np.array_equal(u, v) for u, v in zip(c.means, d.means))
    print("SAME" if same else "DIFFERENT", "SAME" if same_vi else "DIFFERENT")
""")


_MAP_TWICE = textwrap.dedent("""
    import numpy as np, blockbayes as bb
    import scipy.linalg  # noqa: F401  (both BLAS libraries loaded, so the limits reach them)
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1000, 10)).astype(np.float32)
    y = (np.sin(X[:, :1]) + 0.1 * rng.standard_normal((1000, 1))).astype(np.float32)
    net = bb.MLP([10, 50, 50, 1], delta=1e-3)
    kw = dict(seed=5, max_iter=30, restarts=2, progress=False)
    # a MAP fit called directly, under two process BLAS settings: it holds one BLAS thread
    with threadpool_limits(1, user_api="blas"):
        a = bb.laplace.map_fit(net, X, y, **kw)
    with threadpool_limits(2, user_api="blas"):
        b = bb.laplace.map_fit(net, X, y, **kw)
    with threadpool_limits(2, user_api="blas"):
        c = bb.laplace.map_ensemble(net, X, y, members=2, seed=5, max_iter=20, progress=False)
    with threadpool_limits(1, user_api="blas"):
        d = bb.laplace.map_ensemble(net, X, y, members=2, seed=5, max_iter=20, progress=False)
    same = all(np.array_equal(u, v) for u, v in zip(a, b))
    same_ens = all(np.array_equal(u, v) for u, v in zip(c, d))
    print("SAME" if same else "DIFFERENT", "SAME" if same_ens else "DIFFERENT")
""")


def test_map_fit_float32_same_seed_whatever_the_process_blas_setting():
    # Honest note: on the machine this was written on (OpenBLAS 0.3.31, 2 cores) main's map_fit
    # (no thread limit) also gives SAME here: the MAP fit's BLAS calls did not follow the thread
    # count, so this test guards the property rather than catching a known broken twin.
    pytest.importorskip("threadpoolctl")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _MAP_TWICE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "SAME SAME", out.stdout + out.stderr
    # the limit is held for the fit's duration and restored afterwards
    from threadpoolctl import threadpool_info

    def blas():
        return [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]

    before = blas()
    seen = []
    real = bb.laplace.map._fit_lbfgs_batch

    def spy(*a, **k):
        seen.append([n for _, n in blas()])
        return real(*a, **k)

    X, y = _data()
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(bb.laplace.map, "_fit_lbfgs_batch", spy)
        bb.laplace.map_fit(bb.MLP([2, 3, 1]), X, y, seed=0, max_iter=2, progress=False)
        bb.laplace.map_ensemble(bb.MLP([2, 3, 1]), X, y, members=2, seed=0, max_iter=2, progress=False)
    finally:
        mp.undo()
    assert len(seen) == 2 and all(set(s) == {1} for s in seen if s), seen
    assert blas() == before


def test_same_seed_same_samples_in_a_fresh_process():
    pytest.importorskip("threadpoolctl")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _TWICE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "SAME SAME", out.stdout + out.stderr


def test_block_laplace_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    X, y = _data(n=30)
    net = bb.MLP([2, 4, 3, 1], delta=0.05)
    full = bb.laplace.block(net, X, y, num_steps=6, seed=1, progress=False)
    path = tmp_path / "bl.ckpt"
    mod = sys.modules["blockbayes.laplace.iterative"]
    real = mod.objective
    calls = [0]

    def crashing(*a, **k):
        calls[0] += 1
        if calls[0] == 14:
            raise _Crash
        return real(*a, **k)

    monkeypatch.setattr(mod, "objective", crashing)
    with pytest.raises(_Crash):
        bb.laplace.block(net, X, y, num_steps=6, seed=1, progress=False, checkpoint=path, checkpoint_every=2)
    monkeypatch.undo()
    done = driver.load_checkpoint(path)["meta"]["num_done"]
    assert 0 < done < 6
    res = bb.laplace.block(net, X, y, num_steps=6, seed=1, progress=False, resume=path)
    for a, b in zip(res.weights, full.weights):
        np.testing.assert_array_equal(a, b)
    assert res.info["objective"] == full.info["objective"] and res.info["damping"] == full.info["damping"]
