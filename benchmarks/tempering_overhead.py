"""Cost of ``tempering="auto"`` where it is not needed: a (50, 50, 1) ReLU net on n = 1e4 points at
Δ = 1e-3, where the ladder rule asks for thousands of replicas and auto must choose "off".

Times ``gibbs.run(..., tempering="off")`` and the default ``"auto"`` in the same process,
alternating (``--reps`` pairs, median), and checks that the samples are bitwise the same.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/tempering_overhead.py
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import blockbayes as bb
from blockbayes import gibbs
from blockbayes.gibbs import tempering as T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--sweeps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((a.n, 50))
    y = np.sin(X[:, :1]) + 0.1 * rng.standard_normal((a.n, 1))
    net = bb.MLP([50, 50, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 1e-2})
    p = T.plan(net, a.n)
    print(f"(50, 50, 1), n = {a.n}, Δ = 1e-3: N = {p.noisy}, r = {p.ratio:.5f}, replicas needed {p.needed}; "
          f"auto active: {p.active} ({p.reason}); load avg {os.getloadavg()[0]:.2f}")
    kw = dict(num_samples=a.sweeps, num_warmup=0, num_chains=2, seed=1, progress=False, init="prior", diagnose=False)
    gibbs.run(net, X, y, **dict(kw, num_samples=2))          # compile / warm caches
    times = {"off": [], "auto": []}
    res = {}
    for _ in range(a.reps):
        for mode in ("off", "auto"):
            t0 = time.perf_counter()
            res[mode] = gibbs.run(net, X, y, tempering=mode, **kw)
            times[mode].append(time.perf_counter() - t0)
    same = all(np.array_equal(u, v) for u, v in zip(res["off"].weights, res["auto"].weights))
    t_off, t_auto = np.median(times["off"]), np.median(times["auto"])
    print(f"| tempering | median wall s ({a.reps} runs of {a.sweeps} sweeps, 2 chains) | per sweep ms |")
    print("|---|---|---|")
    for m, t in (("off", t_off), ("auto", t_auto)):
        print(f"| {m} | {t:.3f} | {1000 * t / a.sweeps:.1f} |")
    print(f"auto / off = {t_auto / t_off:.3f}; samples bitwise equal: {same}; load avg {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
