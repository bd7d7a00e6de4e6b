"""The Gaussian MAP objective through the fused Numba pass against the NumPy path it replaced.

Since session 20 (design note 59) :func:`blockbayes.laplace.map_fit` evaluates the plain Gaussian
objective — every regression MAP fit, ensemble member and ``gibbs.run(init="map")`` start of the
library's defaults — with :func:`blockbayes.kernels.network_target`: one pass over the rows per
evaluation, no ``(M, n, width)`` temporaries. The ``numpy`` arm patches that path off (the
objective of :meth:`blockbayes.laplace.map._Objective._host_call`, which every fit used before);
both arms run in the same process, alternating, one thread.

Table 1, time per L-BFGS iteration: ``map_fit`` on split 0 of each UCI set (50 ReLU units,
fan-in prior, the noise learned jointly) forced to ``--iters`` iterations (``tol=1e-12``,
``ftol=0``; a fit that stops early on a kink is timed per iteration done). Table 2, the MAP starts of
``gibbs.run`` as its defaults run them (:func:`blockbayes.gibbs.starts.map_starts`, ``--chains``
fits of at most 3000 iterations, joint noise): wall-clock per arm and each arm's fits' mean
objective (the two arms round differently, so on a non-convex objective their L-BFGS paths part
after many iterations; the objectives show that neither ends worse).

    PYTHONPATH=$PWD BLOCKBAYES_UCI_ROOT=../shared/data/uci OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        NUMBA_NUM_THREADS=1 python benchmarks/map_fused.py [--datasets yacht boston wine-quality-red] \
        [--iters 500] [--chains 4] [--reps 3]

Sets missing under the UCI root are skipped. No assertions: tables.
"""
from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

import blockbayes as bb
from _devtools import uci_available
from blockbayes._backend import random as bbr
from blockbayes.gibbs.starts import map_starts
from blockbayes.laplace import map as MP

ARMS = ("fused", "numpy")


@contextlib.contextmanager
def arm(name):
    """``numpy``: the fused objective switched off (the NumPy path of every fit before session 20)."""
    orig = MP._fused_gaussian_objective
    if name == "numpy":
        MP._fused_gaussian_objective = lambda *a: None
    try:
        yield
    finally:
        MP._fused_gaussian_objective = orig


def _data(name):
    d = bb.datasets.uci(name, 0)
    X = np.asarray(d[0], dtype=np.float64)
    y = np.asarray(d[1], dtype=np.float64).reshape(-1, 1)
    net = bb.MLP([X.shape[1], 50, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    return net, X, y


def per_iteration(name, iters, reps):
    net, X, y = _data(name)
    out = {k: [] for k in ARMS}
    its = {}
    for k in ARMS:                      # compile and warm both paths first
        with arm(k):
            bb.laplace.map_fit(net, X, y, seed=0, max_iter=5, learn_noise=True, progress=False)
    for _ in range(reps):
        for k in ARMS:
            with arm(k):
                t = time.process_time()
                _, info = bb.laplace.map_fit(net, X, y, seed=0, max_iter=iters, tol=1e-12, ftol=0.0, learn_noise=True,
                                             progress=False, return_info=True)
                dt = time.process_time() - t
            its[k] = int(info["num_iter"])
            out[k].append(dt / max(its[k], 1))
    return X.shape[0], {k: min(v) * 1e3 for k, v in out.items()}, its


def starts(name, chains, reps):
    net, X, y = _data(name)
    walls = {k: [] for k in ARMS}
    obj = {}
    for _ in range(reps):
        for k in ARMS:
            with arm(k):
                t = time.perf_counter()
                _, _, info = map_starts(bbr.key(0), net, X, y, num_chains=chains, learn_noise=True)
                walls[k].append(time.perf_counter() - t)
            obj[k] = (float(np.mean(info["map_objectives"])), info["map_iters"])
    return walls, obj


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["yacht", "energy", "boston", "concrete", "wine-quality-red"])
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-starts", action="store_true")
    a = ap.parse_args(argv)
    names = uci_available(a.datasets)
    print(f"\n| set | n | fused ms / iteration | numpy ms / iteration | numpy / fused | iterations fused / numpy |")
    print("|---|---|---|---|---|---|")
    for name in names:
        n, t, its = per_iteration(name, a.iters, a.reps)
        print(f"| {name} | {n} | {t['fused']:.3f} | {t['numpy']:.3f} | {t['numpy'] / t['fused']:.2f} | "
              f"{its['fused']} / {its['numpy']} |", flush=True)
    if a.skip_starts:
        return
    print(f"\n| set | MAP starts ({a.chains} fits): fused wall s (each rep) | numpy wall s (each rep) | median ratio | "
          "mean objective fused / numpy | iterations fused / numpy |")
    print("|---|---|---|---|---|---|")
    for name in names:
        w, obj = starts(name, a.chains, a.reps)
        fmt = lambda v: " / ".join(f"{x:.2f}" for x in v)
        ratio = np.median(w["numpy"]) / np.median(w["fused"])
        print(f"| {name} | {fmt(w['fused'])} | {fmt(w['numpy'])} | {ratio:.2f} | "
              f"{obj['fused'][0]:.4f} / {obj['numpy'][0]:.4f} | {obj['fused'][1]} / {obj['numpy'][1]} |", flush=True)


if __name__ == "__main__":
    main()
