"""Backend swap: the same sampler code on the CPU (NumPy + Numba) and on a GPU (CuPy), same seeds.

Usage::

    python benchmarks/backend_swap.py --device cuda [--out DIR]   # CPU against the GPU
    python benchmarks/backend_swap.py --device cpu --small         # dry run, both sides on the CPU

Three tables (markdown on stdout, JSON lines in ``DIR/backend_swap.jsonl``):

1. **Counter-based kernels, to rounding.** ``kernels.relu_preact`` and
   ``kernels.truncated_normal`` with the same key on the same inputs: host (Numba, ``impl="cpu"``)
   against the device (``impl="cuda"``; in the CPU dry run the Array-API ``"reference"``). The
   kernels derive every uniform from the key and the element's index, so the two must agree to
   rounding: the table gives sign disagreements, the largest difference over a rounding-level
   tolerance (``1e-12·scale``, plus 2 float32 spacings in float32; scale ``|z| + √Δ_Z + 2(|a| + |x|)``,
   a bound on the draw's own scale) and the share of bit-identical draws.
2. **Whole sweeps, in distribution.** ``C`` chains start from one host state, copied to each
   backend, and run ``S`` sweeps of ``gibbs.step`` with the same seed. The Gaussian and Gamma
   draws come from each backend's own generator (NumPy Philox against cuRAND), so the states are
   equal in distribution only: the chains of one backend are i.i.d. draws of ``K^S(x₀, ·)``, and
   a two-sample KS test per statistic (Bonferroni, false failure ≤ ``δ = 1e-3`` in all) compares
   the two backends. (In the CPU dry run the second side uses seed + 1, so the test compares
   different draws, as it will on a GPU.)
3. **Speed.** ms/sweep on the CPU (a subprocess with ``--cpu-threads`` Numba and BLAS threads;
   default 2, the project's 2-core machine class — but it is the device host's CPU, say so when
   quoting) against the device, in the same run: (50, 50, 10⁴), 784-12-10 multinomial probit at
   n = 6·10⁴ and d = 512, K = 256 at n = 10⁶ (the "≥ 20× the 2-core CPU" figure). float32.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _devtools as D  # noqa: E402

SPEED = [("50-50-1e4", 50, 50, 10_000, 0), ("784-12-10 probit 6e4", 784, 12, 60_000, 10),
         ("512-256-1 n=1e6", 512, 256, 1_000_000, 0)]
SPEED_SMALL = [("50-50-1e4", 50, 50, 1_000, 0), ("784-12-10 probit 6e4", 784, 12, 2_000, 10),
               ("512-256-1 n=1e6", 64, 32, 5_000, 0)]
TARGETS = {"512-256-1 n=1e6": "≥ 20x", "784-12-10 probit 6e4": "GPU ≤ 2 ms"}


def emit(out, rec):
    if out is not None:
        out.write(json.dumps(rec) + "\n")
        out.flush()


def to_dev(be, a):
    from blockbayes._backend import to_device

    return a if be.kind == "cpu" else to_device(a, "cuda")


def host(a):
    from blockbayes._backend import to_numpy

    return np.asarray(to_numpy(a))


# --------------------------------------------------------------------------- 1. kernels

def kernel_table(be, out, N):
    from blockbayes import kernels
    from blockbayes._backend import random as bbr

    dev_impl = "cuda" if be.kind == "cuda" else "reference"
    rng = np.random.default_rng(0)
    print(f"\n## counter-based kernels, host (Numba) against {dev_impl}, same key, {N:,} elements")
    print("| kernel | dtype | Δ_Z, Δ_X | sign disagreements | max diff / tolerance | bit-identical | verdict |")
    print("|---|---|---|---|---|---|---|")
    cases = []
    for dz, dx in ((1e-3, 1e-3), (1e-6, 1e-2)):
        a = rng.standard_normal(N) * math.sqrt(dz) * 3
        x = np.where(rng.random(N) < 0.5, 0.0, np.abs(rng.standard_normal(N))) * math.sqrt(dx) * 3
        cases.append(("relu_preact", (dz, dx), a, x))
    cases.append(("truncated_normal", None, rng.standard_normal(N) * 3, rng.random(N) < 0.5))
    ok_all = True
    for dtype in ("float32", "float64"):
        for i, (kname, deltas, a, x) in enumerate(cases):
            key = bbr.key(100 + i)
            if kname == "relu_preact":
                A, Xp = a.astype(dtype), x.astype(dtype)
                zh = kernels.relu_preact(key, A, Xp, *deltas, impl="cpu")
                zd = host(kernels.relu_preact(key, to_dev(be, A), to_dev(be, Xp), *deltas, impl=dev_impl))
                scale = np.abs(zh.astype(float)) + math.sqrt(deltas[0]) + 2 * (np.abs(a) + np.abs(x))
            else:
                M, up = a.astype(dtype), x
                zh = kernels.truncated_normal(key, M, 0.5, 0.0, up, impl="cpu")
                zd = host(kernels.truncated_normal(key, to_dev(be, M), 0.5, 0.0, to_dev(be, up), impl=dev_impl))
                scale = np.abs(zh.astype(float)) + 0.5 + 2 * np.abs(a)
            tol = 1e-12 * scale
            if dtype == "float32":
                tol = tol + 2.0 * np.spacing(np.abs(zh)).astype(np.float64)
            diff = np.abs(zh.astype(float) - zd.astype(float))
            signs = int(np.sum(np.signbit(zh) != np.signbit(zd)))
            worst = float(np.max(diff / tol))
            same = float(np.mean(zh == zd))
            ok = signs == 0 and worst <= 1.0 and bool(np.all(np.isfinite(zd)))
            ok_all &= ok
            dl = f"{deltas[0]:g}, {deltas[1]:g}" if deltas else "sd 0.5, bound 0"
            print(f"| {kname} | {dtype} | {dl} | {signs} | {worst:.3g} | {same:.4f} | "
                  f"{'equal to rounding' if ok else 'DIFFERENT'} |", flush=True)
            emit(out, dict(table="kernels", kernel=kname, dtype=dtype, deltas=deltas, impl=dev_impl, n=N,
                           sign_disagreements=signs, max_over_tol=worst, bit_identical=same, ok=ok))
    return ok_all


# --------------------------------------------------------------------------- 2. distribution

def chain_stats(st, lj):
    """Per-chain scalars compared across backends (host arrays)."""
    W1, W2 = host(st.weights[0]), host(st.weights[1])
    Z, Xp = host(st.pre[0]), host(st.post[0])
    return {"W1[0,0]": W1[:, 0, 0], "b1[0]": W1[:, 0, -1], "W2[0,0]": W2[:, 0, 0], "b2": W2[:, 0, -1],
            "mean Z": Z.mean(axis=(1, 2)), "mean X": Xp.mean(axis=(1, 2)), "log joint": host(lj)}


def distribution_table(be, out, C, S, delta=1e-3, broken=None):
    """Table 2; ``broken`` (tests only) maps the device side's state after every sweep — a planted
    error the KS comparison must catch."""
    import blockbayes as bb
    from blockbayes import gibbs
    from blockbayes._backend import random as bbr
    from blockbayes.testing import two_sample_ks_check

    rng = np.random.default_rng(1)
    n, d, K = 40, 4, 6
    X = rng.standard_normal((n, d))
    y = np.maximum(X @ rng.standard_normal((d, K)) / 2, 0) @ rng.standard_normal((K, 1)) / 2 + 0.2 * rng.standard_normal((n, 1))
    net = bb.MLP([d, K, 1], "relu", delta=0.05)
    s1 = gibbs.init(bbr.key(3), net, X, y, num_chains=1)
    start = gibbs.GibbsState(tuple(np.repeat(W, C, axis=0) for W in s1.weights), tuple(np.repeat(Z, C, axis=0) for Z in s1.pre),
                             tuple(np.repeat(H, C, axis=0) for H in s1.post), np.repeat(s1.lam_w, C, axis=0),
                             np.repeat(s1.lam_b, C, axis=0), np.repeat(s1.delta_y, C, axis=0))
    sides = {}
    for side, kind in (("cpu", "cpu"), ("device", be.kind)):
        mv = (lambda a: a) if kind == "cpu" else (lambda a: to_dev(be, a))
        st = gibbs.GibbsState(*[tuple(mv(a) for a in v) if isinstance(v, tuple) else mv(v) for v in start[:6]], None)
        Xs, ys = mv(X), mv(y)
        seed = 11 if (side == "cpu" or be.kind == "cuda") else 12       # dry run: a different stream
        key = bbr.key(seed)
        lj = None
        for s in range(S):
            key, sub = bbr.split(key)
            st, info = gibbs.step(sub, st, net, Xs, ys, compute_log_joint=(s == S - 1))
            if broken is not None and side == "device":
                st = broken(st)
            lj = info.log_joint
        sides[side] = chain_stats(st, lj)
    stats_a, stats_b = sides["cpu"], sides["device"]
    m = len(stats_a)
    print(f"\n## whole sweeps in distribution: {C} chains x {S} sweeps from one state, CPU against "
          f"{be.kind}; two-sample KS, Bonferroni over {m}, false failure <= {delta:g}")
    print("| statistic | KS distance | threshold | CPU mean | device mean | pass |")
    print("|---|---|---|---|---|---|")
    ok_all = True
    for k in stats_a:
        c = two_sample_ks_check(k, stats_a[k], stats_b[k], delta / m)
        ok_all &= c.passed
        print(f"| {k} | {c.statistic:.4f} | {c.threshold:.4f} | {np.mean(stats_a[k]):.4g} | {np.mean(stats_b[k]):.4g} | "
              f"{'yes' if c.passed else 'NO'} |", flush=True)
        emit(out, dict(table="distribution", stat=k, ks=c.statistic, threshold=c.threshold, passed=c.passed, C=C, S=S))
    return ok_all


# --------------------------------------------------------------------------- 3. speed

def worker(device, d, K, n, classes, sweeps):
    """ms/sweep of one configuration (run in a subprocess for the CPU side, threads fixed)."""
    be = D.backend(device)
    prob = D.make_problem(be, d, K, n, classes=classes)
    one = D.sweep_timer(be, prob)
    med, mn = D.time_ms(one, be.sync, repeats=max(1, sweeps), inner=1, warmup=1)
    return dict(ms=med, ms_min=mn)


def run_worker(device, d, K, n, classes, sweeps, threads):
    env = dict(os.environ)
    if threads:
        for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps([device, d, K, n, classes, sweeps])]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def speed_table(be, out, points, cpu_threads, cpu_sweeps, dev_sweeps):
    import platform

    cpu_name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu_name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu_name)
    except OSError:
        pass
    print(f"\n## speed, same run: CPU ({cpu_name}, {cpu_threads} Numba + BLAS threads, subprocess) against "
          f"{be.kind}; float32, 1 chain; load {D.load()}")
    print("| point | widths | n | CPU ms/sweep | device ms/sweep | speed-up | target |")
    print("|---|---|---|---|---|---|---|")
    for name, d, K, n, classes in points:
        cpu = run_worker("cpu", d, K, n, classes, cpu_sweeps, cpu_threads)
        dev = run_worker(be.kind, d, K, n, classes, dev_sweeps, None)
        sp = cpu["ms"] / dev["ms"]
        print(f"| {name} | {d}-{K}-{classes or 1} | {n:,} | {cpu['ms']:.2f} | {dev['ms']:.3f} | {sp:.1f}x | "
              f"{TARGETS.get(name, '')} |", flush=True)
        emit(out, dict(table="speed", point=name, d=d, K=K, n=n, classes=classes, cpu_ms=cpu["ms"], cpu_ms_min=cpu["ms_min"],
                       device_ms=dev["ms"], device_ms_min=dev["ms_min"], speedup=sp, cpu_threads=cpu_threads,
                       cpu=cpu_name, device=be.kind))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="small sizes (CPU dry run of the same path)")
    ap.add_argument("--only", default="kernels,distribution,speed")
    ap.add_argument("--cpu-threads", type=int, default=2)
    ap.add_argument("--cpu-sweeps", type=int, default=2)
    ap.add_argument("--out", default=os.environ.get("OUT") or None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return 0
    be = D.backend(args.device)
    only = set(args.only.split(","))
    out = None
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        out = open(os.path.join(args.out, "backend_swap.jsonl"), "a")
    ok = True
    try:
        print(f"# backend swap: CPU against {be.kind}{' (dry run: both sides on the CPU)' if be.kind == 'cpu' else ''}")
        if "kernels" in only:
            ok &= kernel_table(be, out, 20_000 if args.small else 1_000_000)
        if "distribution" in only:
            ok &= distribution_table(be, out, 300 if args.small else 4000, 4 if args.small else 10)
        if "speed" in only:
            speed_table(be, out, SPEED_SMALL if args.small else SPEED, args.cpu_threads, args.cpu_sweeps,
                        3 if args.small else 10)
        print(f"\n# load average at end {D.load()}; equality checks {'passed' if ok else 'FAILED'}")
    finally:
        if out is not None:
            out.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
