"""Milliseconds per block-Gibbs sweep, against the published implementation and the matmul floor.

Usage::

    python benchmarks/gibbs_sweep.py                 # CPU table (1 and 2 threads), scaling in n
    python benchmarks/gibbs_sweep.py --quick         # fewer repeats, no n = 1e6
    python benchmarks/gibbs_sweep.py --device cuda   # the same table on a GPU (backend swap)

Model as in BENCHMARKS.md: one ReLU hidden layer, scalar output, Δ_Z = Δ_X = Δ_y = 1e-3,
λ = fan-in, data from a teacher. Each configuration runs in a fresh subprocess with
``NUMBA_NUM_THREADS`` / ``OMP_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` set, so thread counts are
real (BLAS is kept at one thread, as `gibbs.run` does by default: threaded OpenBLAS made the
sweep 2.4x slower here; ``BLOCKBAYES_BENCH_BLAS_THREADS=same`` gives BLAS the same count). Reported: median (and min) ms per sweep over repeats, the *matmul floor* (the sweep's GEMMs
and Cholesky factorisations timed alone, same threads, same dtype) and the ratio, and the
published PyTorch figure (float32, one thread) with our speed-up. Timings on shared 2-core
machines are noisy: the 1-minute load average is printed with the table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

PUBLISHED_MS = {(20, 10, 1000): 2.08, (50, 10, 2084): 3.78, (50, 10, 10000): 20.8, (50, 50, 10000): 97.8}
SIZES = [(20, 10, 1000), (50, 10, 2084), (50, 10, 10000), (50, 50, 10000)]


def worker(d, K, n, dtype, device, repeats, sweeps, classes=0):
    import numpy as np

    import blockbayes as bb
    from blockbayes import gibbs
    from blockbayes._backend import linalg, namespace, random as bbr, resolve_device, to_device

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)).astype(dtype)
    W1 = rng.standard_normal((K, d)) / np.sqrt(d)
    v = rng.standard_normal(K) / np.sqrt(K)
    y = (np.maximum(X @ W1.T, 0) @ v + np.sqrt(1e-3) * rng.standard_normal(n)).astype(dtype)
    if classes:
        V = rng.standard_normal((K, classes)) / np.sqrt(K)
        y = np.argmax(np.maximum(X @ W1.T, 0) @ V + rng.standard_normal((n, classes)), axis=1)
    kind, idx = resolve_device(device)
    if kind is not None:
        X, y = to_device(X, kind, idx), to_device(y, kind, idx)
    xp = namespace(X)
    if classes:
        net = bb.MLP([d, K, classes], "relu", delta=1e-3, likelihood="multinomial_probit")
        y2 = y
    else:
        net = bb.MLP([d, K, 1], "relu", delta=1e-3)
        y2 = xp.reshape(y, (n, 1))
    state = gibbs.init(bbr.key(0), net, X, y2, num_chains=1)
    cache = gibbs.precompute(net, X)
    key = bbr.key(1)
    sync = (lambda: __import__("cupy").cuda.Device().synchronize()) if kind == "cuda" else (lambda: None)
    for _ in range(3):  # compile / warm caches
        key, sub = bbr.split(key)
        state, _ = gibbs.step(sub, state, net, X, y2, cache=cache)
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(sweeps):
            key, sub = bbr.split(key)
            state, _ = gibbs.step(sub, state, net, X, y2, cache=cache)
        sync()
        times.append((time.perf_counter() - t) / sweeps * 1e3)
    # matmul floor: the GEMMs and factorisations one sweep must do, alone
    H = state.post[0][0]
    Z = state.pre[0][0]
    Wt = xp.asarray(rng.standard_normal((d, K)).astype(dtype), device=X.device) if kind == "cuda" else rng.standard_normal((d, K)).astype(dtype)
    G = xp.matmul(xp.matrix_transpose(H), H) + xp.eye(K, dtype=H.dtype, device=bb._backend.device_of(H))
    floor = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(sweeps):
            xp.matmul(xp.matrix_transpose(H), H)        # output-layer Gram   O(n K^2)
            xp.matmul(xp.matrix_transpose(H), Z[:, :max(classes, 1)])   # output-layer cross O(n K C)
            xp.matmul(H, Wt[:K, :max(classes, 1)])      # X-update residual   O(n K C)
            xp.matmul(X, Wt)                            # A = X W^T           O(n d K)
            xp.matmul(xp.matrix_transpose(X), Z)        # first-layer cross   O(n d K)
            linalg.cholesky(G)                          # (K+1)^3 (the first layer's is cached per run)
        sync()
        floor.append((time.perf_counter() - t) / sweeps * 1e3)
    return dict(ms=float(np.median(times)), ms_min=float(np.min(times)), floor=float(np.median(floor)))


def run_sub(d, K, n, dtype, device, threads, repeats, sweeps, classes=0):
    env = dict(os.environ)
    env["NUMBA_NUM_THREADS"] = str(threads)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads if os.environ.get("BLOCKBAYES_BENCH_BLAS_THREADS") == "same" else 1)
    cmd = [sys.executable, __file__, "--worker", json.dumps([d, K, n, dtype, device, repeats, sweeps, classes])]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--only", default="sweep,mnist,scaling", help="comma-separated tables to run")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*json.loads(args.worker))))
        return
    threads = [int(t) for t in args.threads.split(",")] if args.device == "cpu" else [os.cpu_count()]
    repeats = 3 if args.quick else 7
    print(f"# blockbayes Gibbs sweep, device={args.device}, load average {os.getloadavg()[0]:.2f}")
    print("| d | K | n | dtype | threads | ms/sweep (median) | min | matmul floor | ratio to floor | published (fp32, 1 thr) | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    only = set(args.only.split(","))
    for d, K, n in (SIZES if "sweep" in only else []):
        for dtype in ("float32", "float64"):
            for th in threads:
                sweeps = max(3, int(2e6 / (n * K)))
                r = run_sub(d, K, n, dtype, args.device, th, repeats, sweeps)
                pub = PUBLISHED_MS.get((d, K, n))
                sp = f"{pub / r['ms']:.1f}x" if pub and dtype == "float32" and th == 1 else ""
                print(f"| {d} | {K} | {n} | {dtype} | {th} | {r['ms']:.2f} | {r['ms_min']:.2f} | {r['floor']:.2f} | "
                      f"{r['ms'] / r['floor']:.2f} | {pub if pub else ''} | {sp} |", flush=True)
    print()
    print("## MNIST-shaped multinomial probit (784 inputs, 12 ReLU units, 10 classes, Gaussian inputs)")
    print("| n | dtype | threads | ms/sweep (median) | min | matmul floor | published (fp32, 1 thr) | speed-up |")
    print("|---|---|---|---|---|---|---|---|")
    for n, pub in (((10_000, 28.0), (60_000, 184.0)) if "mnist" in only else ()):
        for dtype in ("float32", "float64"):
            for th in threads:
                r = run_sub(784, 12, n, dtype, args.device, th, repeats, max(3, int(3e6 / (n * 12))), classes=10)
                sp = f"{pub / r['ms']:.1f}x" if dtype == "float32" and th == 1 else ""
                print(f"| {n} | {dtype} | {th} | {r['ms']:.2f} | {r['ms_min']:.2f} | {r['floor']:.2f} | {pub} | {sp} |", flush=True)
    print()
    print("## scaling in n at (d, K) = (50, 50)")
    print("| n | dtype | threads | ms/sweep | t(n)/t(n/10) |")
    print("|---|---|---|---|---|")
    ns = [10_000, 100_000] + ([] if args.quick else [1_000_000])
    for dtype in (("float32", "float64") if "scaling" in only else ()):
        for th in threads:
            prev = None
            for n in ns:
                r = run_sub(50, 50, n, dtype, args.device, th, 3, max(2, int(1e6 / n)))
                ratio = f"{r['ms'] / prev:.2f}" if prev else ""
                print(f"| {n} | {dtype} | {th} | {r['ms']:.2f} | {ratio} |", flush=True)
                prev = r["ms"]
    print(f"\n# load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
