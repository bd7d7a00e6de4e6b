"""The exactness suite's device selection (``validation/_device.py``), tested through its CPU twin.

``BLOCKBAYES_TEST_DEVICE=array_api_strict`` runs the sampler on array-api-strict arrays through
the same shim that ``cuda`` uses for CuPy; these tests check that the sampler really runs on the
other backend, that results come back as host arrays equal to the NumPy run (same keys: the
generator draws are the same host draws, and the counter-based kernels agree to rounding), that
NumPy replacements patched into a device sweep see host arrays, and that ``--device cuda``
skips cleanly without CuPy or a GPU. Deterministic; seconds.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import gibbs, kernels
from blockbayes._backend import random as bbr

from validation import _device

pytest.importorskip("array_api_strict")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def strict_env(monkeypatch):
    monkeypatch.setenv(_device.ENV, "array_api_strict")
    return "array_api_strict"


def _problem(C=3, n=12):
    rng = np.random.default_rng(0)
    net = bb.MLP([3, 4, 1], "relu", delta=0.1)
    X = rng.standard_normal((n, 3))
    y = rng.standard_normal((n, 1))
    state = gibbs.init(bbr.key(0), net, X, y, num_chains=C)
    return net, X, y, state


def test_current_reads_the_environment(monkeypatch):
    monkeypatch.delenv(_device.ENV, raising=False)
    assert _device.current() == "cpu"
    monkeypatch.setenv(_device.ENV, "GPU")
    assert _device.current() == "cuda"
    monkeypatch.setenv(_device.ENV, "tpu")
    with pytest.raises(ValueError, match="BLOCKBAYES_TEST_DEVICE"):
        _device.current()


def test_shim_runs_the_sweep_on_the_device_and_returns_host_arrays(strict_env, monkeypatch):
    net, X, y, state = _problem()
    ref, _ = gibbs.step(bbr.key(5), state, net, X, y)          # plain NumPy run
    seen = []
    orig_pass, orig_rows = kernels.latent_pass, kernels.gaussian_rows

    def spy_pass(key, Z, *a, **k):          # the fused X/Z pass of every hidden layer
        seen.append(type(Z).__module__)
        return orig_pass(key, Z, *a, **k)

    def spy_rows(key, B, *a, **k):          # the node-row draws of every layer
        seen.append(type(B).__module__)
        return orig_rows(key, B, *a, **k)

    monkeypatch.setattr(kernels, "latent_pass", spy_pass)
    monkeypatch.setattr(kernels, "gaussian_rows", spy_rows)
    with _device.Shim("array_api_strict"):
        assert hasattr(gibbs.step, "__bb_device_shim__")
        new, info = gibbs.step(bbr.key(5), state, net, X, y, compute_log_joint=True)
    assert not hasattr(gibbs.step, "__bb_device_shim__")       # restored
    assert seen and all(m.startswith("array_api_strict") for m in seen)
    for a, b in zip(new.weights + new.pre + new.post, ref.weights + ref.pre + ref.post):
        assert isinstance(a, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
    assert isinstance(info.log_joint, np.ndarray)
    for a in state.weights:                                     # inputs untouched, still host
        assert isinstance(a, np.ndarray)


def test_shim_run_returns_a_host_result(strict_env):
    net, X, y, _ = _problem()
    with _device.Shim("array_api_strict"):
        res = gibbs.run(net, X, y, num_samples=3, num_chains=2, seed=1, progress=False, init="prior",
                        num_warmup=0, learn_noise=False)
    assert isinstance(res.weights[0], np.ndarray) and res.weights[0].shape == (2, 3, 4, 4)
    ref = gibbs.run(net, X, y, num_samples=3, num_chains=2, seed=1, progress=False, init="prior",
                    num_warmup=0, learn_noise=False)
    np.testing.assert_allclose(res.weights[1], ref.weights[1], rtol=1e-9, atol=1e-9)


def test_host_replacement_sees_host_arrays_inside_a_device_sweep(strict_env, monkeypatch):
    net, X, y, state = _problem()
    kinds = []
    orig = gibbs.sample_pre

    def numpy_pre(key, A, Xpost, dz, dx, activation, slope):
        kinds.append((type(A), type(Xpost)))
        return np.maximum(np.asarray(A), 0.0)                   # NumPy-only code

    monkeypatch.setattr(gibbs.kernel, "LATENT_PASS", "separate")       # step draws Z through sample_pre
    with _device.Shim("array_api_strict"):
        monkeypatch.setattr(gibbs.kernel, "sample_pre", _device.host_call(numpy_pre))
        new, _ = gibbs.step(bbr.key(2), state, net, X, y)
        monkeypatch.setattr(gibbs.kernel, "sample_pre", orig)
    assert kinds == [(np.ndarray, np.ndarray)]
    assert isinstance(new.pre[0], np.ndarray) and np.all(new.pre[0] >= 0)


def test_host_call_and_follow_are_identities_on_the_cpu(monkeypatch):
    monkeypatch.delenv(_device.ENV, raising=False)
    f = lambda a: a  # noqa: E731
    assert _device.host_call(f) is f
    a = np.ones(3)
    assert _device.follow(a, a) is a
    with _device.Shim("cpu"):
        assert not hasattr(gibbs.step, "__bb_device_shim__")


def test_keys_stay_on_the_host(strict_env):
    k = bbr.key(3)
    moved = _device.to_device((k, np.ones(2)), "array_api_strict")
    assert moved[0] is k and type(moved[1]).__module__.startswith("array_api_strict")


def test_cuda_without_a_gpu_skips_the_suite_cleanly():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            pytest.skip("a GPU is present: the cuda device is available here")
    except Exception:
        pass
    assert _device.unavailable_reason("cuda") is not None
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop(_device.ENV, None)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--device", "cuda",
                          "-rs", "validation/test_gibbs_families.py::test_tiny_likelihood_closed_form"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "1 skipped" in out.stdout and "BLOCKBAYES_TEST_DEVICE=cuda" in out.stdout
