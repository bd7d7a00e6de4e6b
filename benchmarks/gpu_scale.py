"""Scale points of the block-Gibbs sweep on one device: ms/sweep against the memory floor.

Usage::

    python benchmarks/gpu_scale.py --device cuda [--out DIR]      # the issue's points (H200)
    python benchmarks/gpu_scale.py --device cpu --small            # the same code path, small sizes

Tables (markdown on stdout; the same numbers as JSON lines in ``DIR/gpu_scale.jsonl``):

1. the device: name, memory, and the *measured* copy bandwidth ``B`` (a large device-to-device
   copy, bytes read + written over the best of 10 copies);
2. per-call cost of the sweep's primitives (random draws, Cholesky, batched triangular solves,
   fused kernels; on a GPU also cuRAND generator creation, XORWOW against Philox): small sizes,
   so these are launch and synchronisation costs — what a latency-bound sweep pays;
3. the scale points of issue 14, float32, one chain, Δ = 1e-3, teacher data drawn on the device:
   (d, K, n) = (50, 50, 10⁴); 784-12-10 multinomial probit at n = 6·10⁴; d = 512, K = 256,
   n = 10⁶; d = 10, K = 50 at n = 10⁸ or the largest n that fits. For each: ms/sweep (median,
   min), the bytes the sweep must move (:func:`_devtools.sweep_bytes`), the floor
   ``bytes / B``, the ratio, the peak memory held (CuPy pool high-water mark; ``tracemalloc`` on
   the CPU) and the device memory in use.

The n that fits: peak bytes per row are measured (problem set-up plus two sweeps at two sizes,
difference over the row difference), then ``n = 0.85 · free / bytes_per_row`` (capped at the
asked n) is what runs; the table states both. In ``--small`` mode the sizes shrink so the whole
script runs in seconds on a CPU (tests/test_gpu_benchmarks.py runs it).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _devtools as D  # noqa: E402

GB = 1e9

POINTS = {   # name: (d, K, n, classes)
    "50-50-1e4": (50, 50, 10_000, 0),
    "784-12-10 probit 6e4": (784, 12, 60_000, 10),
    "512-256-1 n=1e6": (512, 256, 1_000_000, 0),
    "10-50-1 n=1e8": (10, 50, 100_000_000, 0),
}
SMALL = {
    "50-50-1e4": (50, 50, 1_000, 0),
    "784-12-10 probit 6e4": (784, 12, 2_000, 10),
    "512-256-1 n=1e6": (64, 32, 5_000, 0),
    "10-50-1 n=1e8": (10, 50, 20_000, 0),
}
BIG = "10-50-1 n=1e8"


def emit(out, rec):
    if out is not None:
        out.write(json.dumps(rec) + "\n")
        out.flush()


def device_table(be, out, small):
    name = "cpu"
    if be.kind == "cuda":
        props = be.xp.cuda.runtime.getDeviceProperties(be.xp.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    free, total = D.free_memory(be)
    nbytes = (64 << 20) if small else (4 << 30)
    bw = D.copy_bandwidth(be, min(nbytes, max(free // 8, 1 << 20)))
    print(f"# device {name}: memory free {free / GB:.1f} GB of {total / GB:.1f} GB; "
          f"copy bandwidth (read + write) {bw / GB:.0f} GB/s over {nbytes / GB:.2f} GB; load {D.load()}")
    emit(out, dict(table="device", name=name, free=free, total=total, bandwidth=bw, copy_bytes=nbytes))
    return bw


def latency_table(be, out, repeats=5, inner=20):
    """Per-call cost of the primitives one sweep calls (small sizes: launch/sync bound on a GPU)."""
    from blockbayes import kernels
    from blockbayes._backend import linalg, random as bbr

    xp = be.xp
    like = be.like.astype("float32")
    rng = np.random.default_rng(0)
    C, k, m = 16, 13, 1000
    G = rng.standard_normal((C, k, 3 * k)).astype(np.float32)
    P = xp.asarray(G @ np.swapaxes(G, -1, -2) + 3 * k * np.eye(k, dtype=np.float32))
    R = linalg.cholesky(P)
    B = xp.asarray(rng.standard_normal((C, k, m)).astype(np.float32))
    A = xp.asarray(rng.standard_normal(4096).astype(np.float32))
    Xp = xp.asarray(np.abs(rng.standard_normal(4096)).astype(np.float32))
    key = bbr.key(0)
    sd1, zero1 = xp.ones(1, dtype=np.float32), xp.zeros(1, dtype=np.float32)
    side1 = xp.zeros(1, dtype=bool)
    rows = [
        ("random.normal, 4096 draws", lambda: bbr.normal(key, (4096,), like=like)),
        ("linalg.cholesky, 1 x 13x13", lambda: linalg.cholesky(P[0])),
        (f"linalg.cholesky, {C} x 13x13", lambda: linalg.cholesky(P)),
        (f"linalg.solve_triangular, {C} x (13x13, 13x{m})", lambda: linalg.solve_triangular(R, B, lower=True)),
        ("kernels.relu_preact, 4096", lambda: kernels.relu_preact(key, A, Xp, 1e-3, 1e-3)),
        ("kernels.truncated_normal, 4096, scalar sd/bound/side", lambda: kernels.truncated_normal(key, A, 1.0, 0.0, False)),
        ("kernels.truncated_normal, 4096, device sd/bound/side",
         lambda: kernels.truncated_normal(key, A, sd1, zero1, side1)),
    ]
    if be.kind == "cuda":
        import cupy
        from cupy.cuda import curand

        rows.append(("cupy RandomState(XORWOW) new + 4096 normals",
                     lambda: cupy.random.RandomState(7).standard_normal(4096, dtype=cupy.float32)))
        rows.append(("cupy RandomState(Philox) new + 4096 normals",
                     lambda: cupy.random.RandomState(7, method=curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)
                     .standard_normal(4096, dtype=cupy.float32)))
        Rf = R.reshape(-1, k, k)
        Bf = B.reshape(-1, k, m)

        def loop():
            import cupyx.scipy.linalg as csl

            for i in range(C):
                csl.solve_triangular(Rf[i], Bf[i], lower=True)
        rows.append((f"cupyx solve_triangular looped over {C} matrices (the old path)", loop))
    print(f"\n## per-call cost of the sweep's primitives (median of {repeats} x {inner} calls, device synchronised)")
    print("| primitive | us/call (median) | min |")
    print("|---|---|---|")
    for name, fn in rows:
        try:
            med, mn = D.time_ms(fn, be.sync, repeats=repeats, inner=inner, warmup=2)
        except Exception as exc:          # report, do not stop the run
            print(f"| {name} | failed: {type(exc).__name__}: {str(exc)[:80]} | |")
            continue
        print(f"| {name} | {med * 1e3:.1f} | {mn * 1e3:.1f} |", flush=True)
        emit(out, dict(table="latency", primitive=name, us_median=med * 1e3, us_min=mn * 1e3))


def measure_bytes_per_row(be, d, K, n0, classes=0):
    """(bytes per row, fixed bytes) of problem set-up + 2 sweeps, from peaks at n0 and 2·n0.

    A first round at a small n (not measured) keeps one-time allocations — kernel compilation,
    library handles, caches — out of the difference."""
    peaks = []
    for n in (min(n0, 256), n0, 2 * n0):
        with D.MemoryMeter(be) as mm:
            prob = D.make_problem(be, d, K, n, classes=classes)
            one = D.sweep_timer(be, prob)
            one()
            one()
            be.sync()
            del prob, one
        peaks.append(mm.peak)
    peaks = peaks[1:]
    per_row = (peaks[1] - peaks[0]) / n0
    fixed = max(0.0, peaks[0] - per_row * n0)
    return per_row, fixed, peaks


def run_point(be, name, d, K, n, classes, bw, out, *, dtype="float32", budget_s=20.0, note=""):
    itemsize = np.dtype(dtype).itemsize
    with D.MemoryMeter(be) as mm:
        t0 = time.perf_counter()
        prob = D.make_problem(be, d, K, n, classes=classes, dtype=dtype)
        setup_s = time.perf_counter() - t0
        one = D.sweep_timer(be, prob)
        t0 = time.perf_counter()
        one()                                   # warm-up: kernel compilation, cuBLAS handles
        be.sync()
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        one()
        be.sync()
        t1 = time.perf_counter() - t0
        reps = max(1, min(7, int(budget_s / max(t1, 1e-4) / 5)))
        inner = max(1, min(50, int(0.2 / max(t1, 1e-4))))
        med, mn = D.time_ms(one, be.sync, repeats=reps, inner=inner, warmup=0)
        used = D.device_memory_used(be)
        finite = all(bool(be.xp.all(be.xp.isfinite(W))) for W in one.box["state"].weights)
        del prob, one
    widths = [d, K, classes or 1]
    lik = "multinomial_probit" if classes else "gaussian"
    nbytes = D.sweep_bytes(widths, n, itemsize, lik)
    floor_ms = nbytes / bw * 1e3
    rec = dict(table="scale", point=name, d=d, K=K, n=n, classes=classes, dtype=dtype, ms=med, ms_min=mn,
               repeats=reps, inner=inner, first_sweep_s=first, setup_s=setup_s, sweep_bytes=nbytes,
               floor_ms=floor_ms, ratio=med / floor_ms, peak_bytes=mm.peak, finite=finite, note=note, **used)
    dev_used = f"{used['device_used'] / GB:.2f}" if used["device_used"] >= 0 else "n/a"
    print(f"| {name} | {d}-{K}-{classes or 1} | {n:,} | {med:.3f} | {mn:.3f} | {nbytes / GB:.3f} | {floor_ms:.3f} | "
          f"{med / floor_ms:.1f} | {mm.peak / GB:.2f} | {dev_used} | "
          f"{'yes' if finite else 'NO'} | {note} |", flush=True)
    emit(out, rec)
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="small sizes (CPU dry run of the same path)")
    ap.add_argument("--points", default="all", help="comma-separated point names, or 'all'")
    ap.add_argument("--max-n", type=float, default=None, help="n asked at the last point (default 1e8; --small 2e4)")
    ap.add_argument("--out", default=os.environ.get("OUT") or None, help="folder for gpu_scale.jsonl")
    ap.add_argument("--no-latency", action="store_true")
    args = ap.parse_args(argv)
    be = D.backend(args.device)
    pts = SMALL if args.small else POINTS
    names = list(pts) if args.points == "all" else [p.strip() for p in args.points.split(",")]
    out = None
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        out = open(os.path.join(args.out, "gpu_scale.jsonl"), "a")
    try:
        bw = device_table(be, out, args.small)
        if not args.no_latency:
            latency_table(be, out)
        print("\n## scale points (float32, 1 chain, Δ = 1e-3; floor = sweep bytes / measured copy bandwidth)")
        print("| point | widths | n | ms/sweep (median) | min | sweep GB | floor ms | ratio | peak GB held | device GB used | finite | note |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for name in names:
            d, K, n, classes = pts[name]
            note = ""
            if name == BIG:
                asked = int(args.max_n if args.max_n else n)
                n0 = 2_000 if args.small else 1_000_000
                per_row, fixed, peaks = measure_bytes_per_row(be, d, K, n0, classes)
                free, _ = D.free_memory(be)
                fit = D.fit_rows(free, per_row, fixed)
                n = min(asked, fit)
                note = (f"asked {asked:.0e}; {per_row:.0f} B/row measured (peaks {peaks[0] / GB:.3f}, {peaks[1] / GB:.3f} GB "
                        f"at n={n0:,}, {2 * n0:,}); fits {fit:,} in 0.85 x {free / GB:.1f} GB free")
                emit(out, dict(table="fit", asked=asked, bytes_per_row=per_row, fixed=fixed, free=free, fit=fit, n=n))
            for attempt in range(3):
                err = None
                try:
                    run_point(be, name, d, K, n, classes, bw, out, note=note)
                except Exception as exc:       # out of memory at the largest point: shrink, say so
                    err = (type(exc).__name__, str(exc))
                if err is None:
                    break
                gc.collect()                   # the failed attempt's arrays, held by the traceback until now
                if be.kind == "cuda":
                    be.xp.get_default_memory_pool().free_all_blocks()
                if "OutOfMemory" not in err[0] or attempt == 2:
                    print(f"| {name} | {d}-{K}-{classes or 1} | {n:,} | failed: {err[0]}: {err[1][:160]} |", flush=True)
                    emit(out, dict(table="scale", point=name, n=n, error=f"{err[0]}: {err[1]}"))
                    break
                n = int(n * 0.7)
                note += f"; out of memory, retried at n={n:,}"
        print(f"\n# load average at end {D.load()}")
    finally:
        if out is not None:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
