"""Prediction cost of the shared predictive layer against the hand-written NumPy it replaced.

Before issue 11, ``evaluate``'s ``ensemble`` method computed its mixture predictive in NumPy
(stack the members' forward passes, mixture moments, ``logsumexp`` over members); it now asks an
:class:`~blockbayes.point.EnsemblePosterior` (:mod:`blockbayes.predictive`). Both are timed in the
same process (min and median of ``--repeat`` calls), with the 1-minute load average, and their results compared.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/predict_paths.py   # M = 5 members, widths 8-50-1, n = 10000
    python benchmarks/predict_paths.py --n 100000 --members 10
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np

import blockbayes as bb
from blockbayes.model import forward
from blockbayes.point import EnsemblePosterior, PointPosterior


def old_numpy(nets_w_dy, X, y):
    """The pre-issue-11 evaluate code (blockbayes/evaluate/_methods.py, _fit_ensemble): its
    ``predict`` and ``lpd`` each ran the members' forward passes, as the runner calls both."""
    dys = np.array([d for _, _, d in nets_w_dy])

    def member_means():
        return np.stack([forward(net, tuple(w), X)[:, 0] for net, w, _ in nets_w_dy])

    M = member_means()
    mean = M.mean(axis=0)
    var = np.maximum((M ** 2 + dys[:, None]).mean(axis=0) - mean ** 2, 1e-300)
    M = member_means()
    lp = -0.5 * (np.log(2 * math.pi * dys[:, None]) + (y[None, :] - M) ** 2 / dys[:, None])
    mx = lp.max(axis=0)
    return mean, var, mx + np.log(np.mean(np.exp(lp - mx), axis=0))


def new_layer(ens, X, y):
    m, v = ens.predict(X)
    return m[:, 0], v[:, 0], ens.log_predictive_density(X, y, reduce=False)


def timed(fn, repeat):
    """(min, median) seconds over ``repeat`` calls, and the last output."""
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return (ts[0], ts[len(ts) // 2]), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--width", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=11)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    net = bb.MLP([8, a.width, 1], prior_prec=1.0, delta=0.1)
    members = []
    for m in range(a.members):
        W = tuple(rng.normal(size=s) / math.sqrt(s[1]) for s in net.weight_shapes())
        members.append((net, W, 0.05 + 0.01 * m))
    ens = EnsemblePosterior.from_points([PointPosterior(net=n_, weights=w, delta_y=d) for n_, w, d in members])
    X = rng.normal(size=(a.n, 8))
    y = rng.normal(size=a.n)
    t_old, o = timed(lambda: old_numpy(members, X, y), a.repeat)
    t_new, n_ = timed(lambda: new_layer(ens, X, y), a.repeat)
    rel = max(float(np.max(np.abs(np.asarray(x) - np.asarray(z)) / np.maximum(np.abs(np.asarray(z)), 1e-300)))
              for x, z in zip(n_, o))
    print(f"ensemble predictive, M = {a.members}, widths 8-{a.width}-1, n = {a.n}; {a.repeat} calls each; "
          f"load average (1 min) {os.getloadavg()[0]:.2f}")
    print("| path | predict + LPD, min (ms) | median (ms) |")
    print("|---|---|---|")
    print(f"| NumPy as in evaluate before issue 11 | {1e3 * t_old[0]:.1f} | {1e3 * t_old[1]:.1f} |")
    print(f"| EnsemblePosterior (blockbayes.predictive) | {1e3 * t_new[0]:.1f} | {1e3 * t_new[1]:.1f} |")
    print(f"ratio new/old: min {t_new[0] / t_old[0]:.2f}, median {t_new[1] / t_old[1]:.2f}; "
          f"largest relative difference of mean, var, lpd: {rel:.1e}")


if __name__ == "__main__":
    main()
