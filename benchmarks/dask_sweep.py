"""Data-parallel block Gibbs on Dask: ms/sweep, communication per sweep, driver share, scaling.

Usage::

    python benchmarks/dask_sweep.py                       # n = 1e5, 1e6, 1e7 (about 15 min on a quiet 2-core box)
    python benchmarks/dask_sweep.py --sizes 1e5,1e6 --sweeps 2
    python benchmarks/dask_sweep.py --sizes 1e5,1e6,1e7,2e7 --out-of-core 1e7
    PYTHONPATH=. python benchmarks/dask_sweep.py --sizes 1e6 --repeats 3     # this checkout's code

Model as in BENCHMARKS.md: d = 10 inputs, one ReLU hidden layer of K = 50, scalar output,
Δ = 1e-3, λ = fan-in, float32; data from the noisy teacher written as ``.npy`` chunks of 1e6
rows (:func:`blockbayes.distributed.data.write_teacher_student`) and read as Dask arrays by the
workers (never by the driver). For every n it times, in the SAME run:

* ``gibbs.run`` — the single-process sampler with its default scan (only while its in-memory
  state fits, n ≤ ``--gibbs-max``);
* ``blocked`` — :func:`blockbayes.distributed.run` with ``client=None`` (the same blocked scan
  and random streams, one process, no Dask);
* ``dask×1``, ``dask×2`` — a LocalCluster with 1 and 2 worker processes, 1 thread each.

Reported per configuration: ms/sweep (loop time over the timed sweeps, setup excluded), bytes
communicated per sweep (Dask's own count of the bytes every TCP comm writes, summed over the
driver — which hosts the scheduler — and the workers; heartbeats included), the driver's time
share (block-1 draws, reductions), and the ratios the issue asks for. From the 1-worker run at
the largest n it projects ``T(1e9 rows, N workers) = c·1e9/N + t_fixed`` with ``c`` the measured
per-row shard time and ``t_fixed`` the measured per-sweep driver + round-trip time.
Timings on a shared machine are noisy: the 1-minute load average is printed next to them.
``--untrimmed-workers 1`` adds ``dask×1·``: the same cluster with the worker environment variable
``MALLOC_TRIM_THRESHOLD_=65536`` that Dask's nanny sets by default left unset. With it, glibc
trims the heap's top whenever more than 64 kB of it are free (and stops adapting its mmap
threshold), so memory a worker frees and allocates again in a loop (mostly inside the fused
latent kernel) is page-faulted in again each time (docs/distributed.md, Scope and limits).
``--repeats R`` runs the configurations of each n R times in turn; the ratios are then taken
within each repeat (configurations minutes apart at most) and their median reported.

The script only calls public entry points, so it also measures another checkout's code:
``PYTHONPATH=/path/to/other/checkout python benchmarks/dask_sweep.py`` (``python
benchmarks/x.py`` puts ``benchmarks/``, not the current directory, first on ``sys.path``: without
``PYTHONPATH`` it imports the installed ``blockbayes``; the Dask workers inherit ``PYTHONPATH``).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import shutil
import sys
import tempfile
import time

import numpy as np


def _fmt_bytes(b):
    for unit in ("B", "kB", "MB", "GB"):
        if abs(b) < 1024 or unit == "GB":
            return f"{b:.1f} {unit}"
        b /= 1024


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e5,1e6,1e7")
    ap.add_argument("--sweeps", type=int, default=2, help="timed sweeps per configuration (after 1 warm-up sweep)")
    ap.add_argument("--big-sweeps", type=int, default=1, help="timed sweeps at n >= 1e7")
    ap.add_argument("--gibbs-max", type=float, default=1e6, help="largest n for the in-memory gibbs.run")
    ap.add_argument("--blocked-max", type=float, default=1e7, help="largest n for the in-process blocked run")
    ap.add_argument("--out-of-core", type=float, default=1e7, help="latents in .npy memory maps from this n")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--untrimmed-workers", default="",
                    help="worker counts to run again as 'dask×N·' with Dask's MALLOC_TRIM_THRESHOLD_=65536 worker "
                         "environment left unset (glibc's dynamic mmap threshold back on), e.g. '1'")
    ap.add_argument("--repeats", type=int, default=1,
                    help="run the configurations of each n this many times in turn (gibbs.run, blocked, dask×1, "
                         "dask×2, gibbs.run, ...); the figures are medians of the ratios within each repeat")
    ap.add_argument("--idle-probe", type=float, default=3.0,
                    help="seconds of idle cluster traffic measured before each Dask loop (background rate)")
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "bb_distributed_bench"))
    ap.add_argument("--keep", action="store_true", help="keep the data and latent files")
    args = ap.parse_args(argv)

    import blockbayes as bb
    from blockbayes import distributed as dd
    from blockbayes import gibbs
    from blockbayes._backend import recycle
    import dask
    import distributed

    sizes = [int(float(s)) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    untrimmed_workers = [int(w) for w in args.untrimmed_workers.split(",") if w.strip()]
    net = bb.MLP([10, 50, 1], "relu", delta=1e-3)
    os.makedirs(args.dir, exist_ok=True)
    rows = []
    t_bench = time.perf_counter()

    def record(n, config, sweeps, loop, driver, comm, extra="", idle_rate=None):
        ms = 1e3 * loop / sweeps
        net_comm = None if (comm is None or idle_rate is None) else (comm - idle_rate * loop) / sweeps
        rows.append(dict(n=n, rep=rep, config=config, ms=ms, comm=comm / sweeps if comm is not None else None, net_comm=net_comm,
                         share=driver / loop if loop > 0 else 0.0, load=os.getloadavg()[0], extra=extra,
                         sweeps=sweeps, driver_ms=1e3 * driver / sweeps))
        r = rows[-1]
        print(f"  n={n:.0e} #{rep} {config:9s} {ms:10.1f} ms/sweep  comm/sweep "
              f"{_fmt_bytes(r['comm']) if r['comm'] is not None else '-':>9s} "
              f"(net of idle traffic {_fmt_bytes(r['net_comm']) if r['net_comm'] is not None else '-'})  "
              f"driver {100 * r['share']:5.1f}%  "
              f"load {r['load']:.1f} {extra}", flush=True)

    for n in sizes:
        sweeps = args.big_sweeps if n >= 1e7 else args.sweeps
        path = os.path.join(args.dir, f"ts_{n}")
        t0 = time.perf_counter()
        dd.data.write_teacher_student(path, net, n, seed=0, chunk_rows=min(1_000_000, n), dtype="float32")
        Xd, yd, meta = dd.data.open_dataset(path)
        print(f"n = {n:.0e}: data ready in {time.perf_counter() - t0:.1f} s ({Xd.nbytes / 1e9:.2f} GB X); "
              f"{sweeps} timed sweep(s) after 1 warm-up", flush=True)
        ooc = n >= args.out_of_core
        lat_dir = os.path.join(args.dir, f"latents_{n}") if ooc else None
        kw = dict(num_samples=sweeps, num_warmup=1, seed=1, store_log_joint=False, latent_dir=lat_dir,
                  block_rows=65536, return_state=False, progress=False)

        for rep in range(args.repeats):
            if n <= args.gibbs_max:
                X = np.asarray(Xd)
                y = np.asarray(yd)
                rk = bb._backend.random
                state = gibbs.init(rk.key(1), net, X, y)
                cache = gibbs.precompute(net, X)
                key = rk.key(2)
                with recycle.scope():   # as gibbs.run's loop (driver.run_kernel) holds one
                    for i in range(sweeps + 1):
                        if i == 1:
                            t0 = time.perf_counter()
                        key, sub = rk.split(key)
                        state, _ = gibbs.step(sub, state, net, X, y, cache=cache)
                record(n, "gibbs.run", sweeps, time.perf_counter() - t0, 0.0, None, "(gibbs.step, default scan, in memory)")
                del X, y, state
            if n <= args.blocked_max:
                r = dd.run(net, Xd, yd, **kw)
                t = r.config["distributed"]["timings"]
                record(n, "blocked", sweeps, t["timed_loop"], t["timed_driver"], 0,
                       "(in process" + (", latents out of core)" if ooc else ")"))
            for w, untrimmed in [(w, False) for w in workers] + [(w, True) for w in untrimmed_workers]:
                env = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None} if untrimmed else {}
                if untrimmed:   # a nanny also writes its pre-spawn environment into this process's os.environ
                    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
                with dask.config.set(env), distributed.LocalCluster(
                        n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0",
                        memory_limit=0) as cl, distributed.Client(cl) as client:
                    trim = set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values())
                    if untrimmed and trim != {None}:
                        raise RuntimeError(f"the untrimmed workers have MALLOC_TRIM_THRESHOLD_={trim}")
                    r = dd.run(net, Xd, yd, client=client, comm_idle_probe=args.idle_probe, **kw)
                    t = r.config["distributed"]["timings"]
                    record(n, f"dask×{w}" + ("·" if untrimmed else ""), sweeps, t["timed_loop"], t["timed_driver"],
                           t["timed_comm_bytes"], "(latents out of core)" if ooc else "", idle_rate=t["idle_comm_rate"])
        if lat_dir is not None and not args.keep:
            shutil.rmtree(lat_dir, ignore_errors=True)

    # ------------------------------------------------------------------ summary
    def get(n, c):
        """The configuration's median row over the repeats (by ms/sweep), or None."""
        rs = sorted((r for r in rows if r["n"] == n and r["config"] == c), key=lambda r: r["ms"])
        return rs[(len(rs) - 1) // 2] if rs else None

    def ratios(n, c1, c2):
        """``ms(c1) / ms(c2)`` within each repeat (the two ran minutes apart at most)."""
        out = []
        for rep in range(args.repeats):
            a = [r for r in rows if r["n"] == n and r["rep"] == rep and r["config"] == c1]
            b = [r for r in rows if r["n"] == n and r["rep"] == rep and r["config"] == c2]
            if a and b:
                out.append(a[0]["ms"] / b[0]["ms"])
        return out

    def fmt_ratio(rs):
        med = float(np.median(rs))
        return f"{med:.2f}x" + (f" (median; per repeat {', '.join(f'{r:.2f}' for r in rs)})" if len(rs) > 1 else "")

    print("\nsummary (load average 1/5/15 min now: %.1f %.1f %.1f; 2 cores shared with other jobs)" % os.getloadavg())
    print(f"{'n':>8s} {'rep':>3s} {'config':9s} {'ms/sweep':>10s} {'comm/sweep':>11s} {'net of idle':>11s} {'driver':>7s} {'load':>5s}")
    for r in rows:
        print(f"{r['n']:8.0e} {r['rep']:3d} {r['config']:9s} {r['ms']:10.1f} "
              f"{_fmt_bytes(r['comm']) if r['comm'] is not None else '-':>11s} "
              f"{_fmt_bytes(r['net_comm']) if r['net_comm'] is not None else '-':>11s} {100 * r['share']:6.1f}% {r['load']:5.1f}")
    print("\nfigures" + (f" (medians over {args.repeats} repeats)" if args.repeats > 1 else ""))
    rb, rg = ratios(1_000_000, "dask×1", "blocked"), ratios(1_000_000, "dask×1", "gibbs.run")
    if rb:
        print(f"  overhead dask×1 / blocked in process at n=1e6: {fmt_ratio(rb)} (target <= 1.3x)")
    if rg:
        print(f"  overhead dask×1 / gibbs.run (default scan) at n=1e6: {fmt_ratio(rg)} (target <= 1.3x)")
    if 1 in untrimmed_workers:
        for c2 in ("blocked", "gibbs.run"):
            ru = ratios(1_000_000, "dask×1·", c2)
            if ru:
                print(f"  overhead dask×1· (worker without MALLOC_TRIM_THRESHOLD_) / {c2} at n=1e6: {fmt_ratio(ru)}")
    for w in workers:
        comm = [(n, get(n, f"dask×{w}")) for n in sizes]
        comm = [(n, r["comm"], r["net_comm"]) for n, r in comm if r is not None and r["comm"] is not None]
        if comm:
            print(f"  communication per sweep, dask×{w} (total / net of idle background): " + ", ".join(
                f"n={n:.0e}: {_fmt_bytes(c)} / {_fmt_bytes(nc) if nc is not None else '-'}" for n, c, nc in comm))
    for n in sizes:
        rs = ratios(n, "dask×1", "dask×2")
        if rs:
            print(f"  strong scaling 1 -> 2 workers at n={n:.0e}: {fmt_ratio(rs)}"
                  + (" (target >= 1.7x at n >= 1e7)" if n >= 1e7 else ""))
    ones = [get(n, "dask×1") for n in sizes]
    ones = [r for r in ones if r is not None]
    big = max(ones, key=lambda r: r["n"], default=None)
    small = min(ones, key=lambda r: r["n"], default=None)
    if big and small and big["n"] > small["n"]:
        per_row = (big["ms"] - small["ms"]) / (big["n"] - small["n"])          # ms per row per sweep
        fixed = max(small["ms"] - per_row * small["n"], big["driver_ms"])
        print(f"  per-row shard cost {1e6 * per_row:.1f} ns/row/sweep (1 worker, n={small['n']:.0e}..{big['n']:.0e}); "
              f"fixed per-sweep cost {fixed:.1f} ms (driver + round trip)")
        print("  projection to n = 1e9 rows (float32 latents 400 B/row on the workers' disks or RAM):")
        for N in (1, 8, 64, 512):
            T = per_row * 1e9 / N + fixed
            print(f"    N = {N:4d} workers: {T / 1e3:10.2f} s/sweep, {400 * 1e9 / N / 1e9:7.1f} GB latents per worker")
    print(f"\nbenchmark wall time {time.perf_counter() - t_bench:.0f} s")
    if not args.keep:
        shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
