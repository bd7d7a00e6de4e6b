"""Cost per element of the ReLU pre-activation kernel (``blockbayes.kernels.relu_preact``).

Realistic regime of a Gibbs sweep: ``Δ_Z = Δ_X = 1e-3``, ``a ~ N(0, 1)``,
``x = relu(a) + sqrt(Δ_X)·noise``, 5·10⁵ elements. Prints the median (and min) of several
repeats in ns per element for the reference kernel on NumPy and for the Numba kernel with one
thread and with all threads, in float32 and float64, plus the 1-minute load average (the
machines are shared: compare ratios within one run).

Usage::

    python benchmarks/kernel_relu.py [--n 500000] [--repeats 7]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np


def _time(fn, repeats):
    fn()  # warm-up (compile / cache load)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--ref-repeats", type=int, default=3)
    args = ap.parse_args(argv)

    from blockbayes import kernels
    from blockbayes._backend.random import key
    from blockbayes.kernels import cpu

    n = args.n
    delta = 1e-3
    rng = np.random.default_rng(0)
    a64 = rng.standard_normal(n)
    x64 = np.maximum(a64, 0.0) + np.sqrt(delta) * rng.standard_normal(n)
    k = key(0)
    nthreads = cpu.get_num_threads()
    rows = []
    for dtype in (np.float32, np.float64):
        a = a64.astype(dtype)
        x = x64.astype(dtype)

        def run(impl):
            return lambda: kernels.relu_preact(k, a, x, delta, delta, impl=impl)

        med, best = _time(run("reference"), args.ref_repeats)
        rows.append(("reference (numpy)", np.dtype(dtype).name, 1, med, best))
        for threads in sorted({1, nthreads}):
            cpu.set_num_threads(threads)
            med, best = _time(run("cpu"), args.repeats)
            rows.append(("cpu (numba)", np.dtype(dtype).name, threads, med, best))
        cpu.set_num_threads(nthreads)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"relu_preact, n = {n:,}, Δ_Z = Δ_X = {delta:g}, a ~ N(0,1), x = relu(a) + noise; "
          f"load average (1 min) {load:.2f}, {os.cpu_count()} CPUs")
    print(f"{'implementation':<20} {'dtype':<8} {'threads':>7} "
          f"{'ns/elem (median)':>17} {'ns/elem (min)':>14}")
    for name, dt, th, med, best in rows:
        print(f"{name:<20} {dt:<8} {th:>7} {med / n * 1e9:>17.1f} {best / n * 1e9:>14.1f}")


if __name__ == "__main__":
    main()
