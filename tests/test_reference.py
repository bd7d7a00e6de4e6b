"""The NUTS reference (``hmc`` in blockbayes.evaluate; optional extra ``reference``)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import evaluate as ev

numpyro = pytest.importorskip("numpyro")
from blockbayes.evaluate import reference  # noqa: E402


def _toy(n=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 2))
    y = np.tanh(X[:, 0]) + 0.1 * rng.normal(size=n)
    return X, y


@pytest.mark.slow          # JAX compiles one model per variant: ~1 min of CPU on a shared 2-core machine
def test_nuts_shapes_layout_and_info():
    X, y = _toy()
    net = bb.MLP([2, 3, 1], "relu", prior_prec="fan_in", delta={"y": 0.1})
    r = reference.nuts(net, X, y, num_warmup=30, num_samples=20, num_chains=2, seed=1, max_tree_depth=4)
    assert [w.shape for w in r.weights] == [(2, 20, 3, 3), (2, 20, 1, 4)]
    assert r.delta_y.shape == (2, 20) and np.all(r.delta_y > 0)
    assert r.info["num_chains"] == 2 and 0 <= r.info["frac_max_tree_depth"] <= 1
    # the returned layout is ours: forward_samples equals bb.model.forward draw by draw
    F = reference.forward_samples(net, r.weights, X)
    np.testing.assert_allclose(F[1, 7], np.asarray(bb.model.forward(net, tuple(w[1, 7] for w in r.weights), X)),
                               rtol=1e-12)
    fixed = reference.nuts(net, X, y, learn_noise=False, num_warmup=10, num_samples=5, num_chains=1, seed=1,
                           max_tree_depth=3)
    assert np.all(fixed.delta_y == 0.1)
    noisy = reference.nuts(net.replace(delta={"Z": 0.05, "X": 0.05, "y": 0.05}), X, y, noisy=True, learn_noise=False,
                           num_warmup=10, num_samples=5, num_chains=1, seed=1, max_tree_depth=3)
    assert noisy.info["noisy"] and noisy.weights[0].shape == (1, 5, 3, 3)


def test_nuts_rejects_bad_input():
    X, y = _toy()
    net = bb.MLP([2, 3, 1], "relu")
    with pytest.raises(ValueError, match="shape"):
        reference.nuts(net, X[:, :1], y)
    with pytest.raises(ValueError, match="num_chains"):
        reference.nuts(net, X, y, num_chains=0)
    with pytest.raises(ValueError, match="gaussian"):
        reference.nuts(bb.MLP([2, 3, 1], "relu", likelihood="probit"), X, (y > 0).astype(int))
    y2 = y.copy()
    y2[0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        reference.nuts(net, X, y2)


def test_prediction_diagnostics_flag_unmixed_chains():
    rng = np.random.default_rng(0)
    good = rng.normal(size=(4, 200, 5))
    bad = good + np.arange(4)[:, None, None]          # chains in different places
    dg, db = reference.prediction_diagnostics(good), reference.prediction_diagnostics(bad)
    assert dg["rhat_pred_max"] < 1.05 and dg["rhat_pred_share_1.1"] == 1.0
    assert db["rhat_pred_max"] > 1.5 and db["rhat_pred_share_1.1"] == 0.0


@pytest.mark.slow
def test_hmc_method_through_the_runner(tmp_path):
    X, y = _toy(16)
    m = ev.get_method("hmc")
    arch = ev.Arch(2, (3,), "regression")
    p = m.fit(arch, X, y, seed=0, **m.options(dict(num_warmup=30, num_samples=20, num_chains=2, max_tree_depth=4)))
    mean, var = p.predict(X)
    assert mean.shape == (16,) and np.all(var > 0)
    lpd = p.lpd(X, y)
    assert lpd.shape == (16,) and np.all(np.isfinite(lpd))
    assert "rhat_pred_max" in p.diagnostics and "frac_max_tree_depth" in p.diagnostics
    with pytest.raises(ValueError, match="no option"):
        m.options({"chains": 2})


_FRESH_PROCESS = r"""
import os, sys
os.environ.pop("XLA_FLAGS", None)
from blockbayes import evaluate as ev
from blockbayes.evaluate import reference
names = ev.available_methods()
ev.get_method("hmc")
ok = reference.available()
print("hmc" in names, ok, "jax" in sys.modules, "numpyro" in sys.modules)
reference._import(1)
print(os.environ.get("XLA_FLAGS", ""))
"""


def test_availability_checks_leave_jax_unimported_so_the_thread_option_applies():
    """``available_methods()`` / ``get_method("hmc")`` / ``reference.available()`` must not import JAX:
    its CPU thread pools are fixed at first import, so an availability check that imports it makes
    ``nuts(threads=...)`` (and the runner's ``threads`` option) silently do nothing. Run in a fresh
    interpreter; deterministic (no false failures). Caught: the previous checks, which imported
    ``numpyro`` (and with it ``jax``) to see whether it was installed."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in __import__("os").environ.items() if k != "XLA_FLAGS"})
    assert out.returncode == 0, out.stderr[-2000:]
    first, flags = out.stdout.strip().splitlines()[-2:]
    assert first == "True True False False", first
    assert "intra_op_parallelism_threads=1" in flags and "--xla_cpu_multi_thread_eigen=false" in flags, flags
