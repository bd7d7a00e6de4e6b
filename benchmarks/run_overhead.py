"""Per-sweep overhead of the run driver: ``gibbs.run`` against its bare kernel loop, with and
without replica exchange, and the default ``vi.run`` on the issue's tiny net.

The tiny net ``[1, 1, 1]`` on ``n = 6`` points with 4 chains makes a sweep cost almost nothing,
so ``gibbs.run``'s time per sweep minus the bare ``kernel.step`` loop's (same process, same
sweeps, keys split the same way) is what the driver adds: trace writes, finite checks, thinning,
the fused log joint's bookkeeping.

Usage::

    python benchmarks/run_overhead.py                     # this checkout
    python benchmarks/run_overhead.py --compare ../main   # this checkout and another one,
                                                          # interleaved in fresh processes

Prints medians over repeats and the 1-minute load average.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _worker(sweeps: int, repeats: int) -> dict:
    import time

    import numpy as np

    import blockbayes as bb
    from blockbayes._backend import random as bbr
    from blockbayes.gibbs import kernel as K

    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 1))
    y = X ** 2
    net = bb.MLP([1, 1, 1], delta=0.1)
    kw = dict(num_warmup=0, num_chains=4, progress=False, diagnose=False, init="prior")
    bb.gibbs.run(net, X, y, num_samples=50, seed=0, **kw)            # compile / load kernels
    bb.gibbs.run(net, X, y, num_samples=50, seed=0, tempering="off", **kw)
    # the tiny vi.run problem: [1, 1, 1] relu, Δ = 0.01, n = 6, vi.run defaults (CAVI start,
    # 200 + 200 sweeps, tempering auto: 13 replicas)
    rng_v = np.random.default_rng(0)
    Xv, yv = rng_v.standard_normal((6, 1)), rng_v.standard_normal((6, 1))
    net_v = bb.MLP([1, 1, 1], "relu", delta=0.01, prior_prec=1.0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rv = bb.vi.run(net_v, Xv, yv, seed=0, progress=False)
    vi_sweeps = int(rv.config["num_warmup"]) + int(rv.config["num_samples"]) * int(rv.config.get("thin", 1) or 1)
    vi_reps = (rv.config.get("tempering") or {}).get("replicas", 1)
    gibbs_reps = bb.gibbs.run(net, X, y, num_samples=5, seed=0, **kw).config["tempering"]["replicas"]
    run_ms, step_ms, off_ms, vi_s = [], [], [], []
    for r in range(repeats):
        t = time.perf_counter()
        bb.gibbs.run(net, X, y, num_samples=sweeps, seed=r, **kw)
        run_ms.append((time.perf_counter() - t) / sweeps * 1e3)
        t = time.perf_counter()
        bb.gibbs.run(net, X, y, num_samples=sweeps, seed=r, tempering="off", **kw)
        off_ms.append((time.perf_counter() - t) / sweeps * 1e3)
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bb.vi.run(net_v, Xv, yv, seed=r, progress=False)
        vi_s.append(time.perf_counter() - t)
        st = K.init(bbr.key(r), net, X, y, num_chains=4)
        cache = K.precompute(net, X)
        key = bbr.key(r + 100)
        t = time.perf_counter()
        for _ in range(sweeps):
            key, sub = bbr.split(key, 2)
            st, _ = K.step(sub, st, net, X, y, cache=cache, checked=True)
        step_ms.append((time.perf_counter() - t) / sweeps * 1e3)
    return dict(run_ms=statistics.median(run_ms), step_ms=statistics.median(step_ms),
                off_ms=statistics.median(off_ms), vi_s=statistics.median(vi_s), vi_sweeps=vi_sweeps,
                vi_reps=vi_reps, gibbs_reps=gibbs_reps)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweeps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved fresh processes per checkout")
    ap.add_argument("--compare", default=None, help="another checkout to time in the same run")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        print(json.dumps(_worker(a.sweeps, a.repeats)))
        return
    sides = [("this", ROOT)] + ([("compare", os.path.abspath(a.compare))] if a.compare else [])
    res = {name: [] for name, _ in sides}
    for _ in range(a.rounds):
        for name, path in sides:
            env = dict(os.environ, PYTHONPATH=path)
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", "--sweeps", str(a.sweeps),
                                  "--repeats", str(a.repeats)], capture_output=True, text=True, env=env, check=True)
            res[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()[0]
    print(f"# gibbs.run per-sweep overhead, net [1,1,1], n = 6, 4 chains, {a.sweeps} sweeps; load average {load:.2f}")
    print("# gibbs.run: tempering auto (replicas in the column) and 'off'; kernel.step loop: untempered;")
    print("# vi.run: defaults on [1,1,1] relu, Δ = 0.01, n = 6 (CAVI start included), total wall / sweeps")
    print("| checkout | gibbs.run ms/sweep (replicas) | gibbs.run off ms/sweep | kernel.step loop ms/sweep "
          "| driver overhead (off) ms/sweep | vi.run ms/sweep (replicas) | vi.run wall s |")
    print("|---|---|---|---|---|---|---|")
    for name, path in sides:
        med = lambda f: statistics.median(x[f] for x in res[name])
        r, s, o, v = med("run_ms"), med("step_ms"), med("off_ms"), med("vi_s")
        x0 = res[name][0]
        print(f"| {name} ({path}) | {r:.4f} ({x0['gibbs_reps']}) | {o:.4f} | {s:.4f} | {o - s:+.4f} "
              f"| {1e3 * v / x0['vi_sweeps']:.2f} ({x0['vi_reps']}) | {v:.2f} |")
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
