"""Helpers shared by several test modules: :func:`load_benchmark` imports a script of
``benchmarks/`` as a module (``benchmarks/`` is put on ``sys.path`` first so that the script's own
``import _devtools`` works); :func:`sine_data` is the small regression set of the move tests;
:func:`njit_twin` recompiles a Numba kernel with some globals replaced (the broken twins)."""
from __future__ import annotations

import importlib.util
import itertools
import os
import sys
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py``, executed afresh under the module name ``name``."""
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sine_data(n: int = 40, d: int = 3, seed: int = 0):
    """``X ~ N(0, I)`` of shape ``(n, d)`` and ``y = sin(X[:, :1]) + 0.1 ε``, shape ``(n, 1)``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = np.sin(X[:, :1]) + 0.1 * rng.standard_normal((n, 1))
    return X, y


_TWIN_IDS = itertools.count()


def njit_twin(fn, **globals_):
    """A recompiled copy of the Numba function ``fn`` with some of its globals replaced (the
    deliberately broken twins of the kernel tests; nothing is cached).

    The copy gets its own ``__qualname__`` (``<name>__twin<k>``). Numba names a compiled
    function's symbol by its qualified name and a per-process counter; a kernel loaded later
    from the disk cache carries symbols named in another process, so a twin under the original
    name can collide with one of them, and the cached kernel then links the twin's code
    (design note 47, "Noticed": a parallel kernel drew a broken twin's numbers)."""
    from numba import njit

    py = fn.py_func
    g = dict(py.__globals__)
    g.update(globals_)
    twin = types.FunctionType(py.__code__, g, py.__name__, py.__defaults__, py.__closure__)
    twin.__qualname__ = f"{py.__qualname__}__twin{next(_TWIN_IDS)}"
    return njit(nogil=True, error_model="numpy")(twin)


def small_regression(seed=0, n=40, widths=(2, 6, 1), noise=0.1):
    """``(net, X, y)``: a ReLU ``MLP(widths)`` (fan-in prior, Δ = 0.3) and ``y = sin(2x₁) + x₂²/2 +
    noise·ε`` at ``n`` standard-normal inputs, ``y`` of shape ``(n, 1)`` (the MAP / ensemble tests)."""
    import blockbayes as bb

    rng = np.random.default_rng(seed)
    net = bb.MLP(list(widths), "relu", prior_prec="fan_in", delta=0.3)
    X = rng.normal(size=(n, widths[0]))
    y = np.sin(2 * X[:, :1]) + X[:, 1:2] ** 2 / 2 + noise * rng.normal(size=(n, 1))
    return net, X, y


def fail_gibbs_step(monkeypatch, at: int, exc):
    """Patch ``blockbayes.gibbs.kernel.step`` to raise ``exc`` (class or instance) on its ``at``-th call
    (1-based: the sweep ``at − 1``), e.g. ``KeyboardInterrupt`` for Ctrl-C mid-run; returns a function
    that puts the real step back (the ``monkeypatch`` fixture also does at teardown)."""
    import blockbayes as bb

    real = bb.gibbs.kernel.step
    calls = [0]

    def failing(*a, **k):
        calls[0] += 1
        if calls[0] == at:
            raise exc
        return real(*a, **k)

    monkeypatch.setattr(bb.gibbs.kernel, "step", failing)
    return lambda: monkeypatch.setattr(bb.gibbs.kernel, "step", real)
