"""The smoothing continuation on the test splits: ``map_joint`` / ``ensemble_joint`` against
``map_joint_smooth`` / ``ensemble_joint_smooth`` (issue 16's figure: MAP and ensemble RMSE within 25% of
NUTS's on Energy and Yacht splits 0–2; Boston 0–2 as the no-regression check).

Every row is a runner cell (:func:`blockbayes.evaluate.evaluate`, seed 0: the same starts for a method and
its smooth variant), one cell per call so that its CPU time (``time.process_time`` around the call: fit and
prediction, one BLAS thread) is its own; the runner's wall ``fit_time_s`` (which charges a fit shared
through the in-process memo to every reuser) is kept beside it. Cells are stored under ``--out`` (a rerun
loads them; their CPU column then comes from the run that computed them, ``records.jsonl``).

RMSE ratio to NUTS against two references: (a) the issue's table / the library cells
(``benchmarks/gibbs_gold.py``'s ``NUTS``) and (b) the 1000 + 1000 NUTS runs of design note 48 (Energy 0
pooled over 3 runs; Energy 1, 2 and Yacht 0–2 one run each); "within 25%" = ratio ≤ 1.25.

Usage::

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 python benchmarks/map_smoothing.py run \\
        --out /work/scratch/smooth16/test --datasets yacht energy boston --splits 0 1 2
    PYTHONPATH=$PWD python benchmarks/map_smoothing.py table --out /work/scratch/smooth16/test
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import blockbayes as bb  # noqa: E402
from blockbayes import evaluate as ev  # noqa: E402
from blockbayes.datasets import Dataset  # noqa: E402

METHODS = ("map_joint", "ensemble_joint", "map_joint_smooth", "ensemble_joint_smooth")
EXTRA = ("map", "ensemble")          # the holdout-noise defaults (Boston's no-regression reading; --methods)
# (b): the 1000 + 1000 NUTS runs (design note 48; RMSE, LL)
NUTS_LONG = {("energy", 0): (0.218, 0.108), ("energy", 1): (0.444, -1.131), ("energy", 2): (0.217, 0.105),
             ("yacht", 0): (0.258, 0.009), ("yacht", 1): (0.191, 0.016), ("yacht", 2): (0.160, 0.007)}
SHORT = {"energy": "Energy", "yacht": "Yacht", "bostonHousing": "Boston", "boston": "Boston"}
TOL = 1.25


def issue_nuts():
    """(a): ``gibbs_gold.NUTS`` (the issue's table; library ``hmc`` cells where it has none)."""
    from gibbs_gold import NUTS
    return NUTS


def _warm(methods):
    """Run each method once on a toy set (in memory), so no imports or first-call costs land in a cell."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(40)
    ds = Dataset(X[:30], y[:30], X[30:], y[30:], name="toy", task="regression", x_mean=np.zeros(2),
                 x_std=np.ones(2), y_mean=0.0, y_std=1.0, info={"standardized": True})
    small = {"max_iter": 20}
    ev.evaluate([dict(method=m, **small, **({"smoothing_iter": 5} if "smooth" in m else {})) for m in methods],
                [ds], progress=False, plots=False, memory="none", warmup=False)


def run(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rec_path = out / "records.jsonl"
    _warm(args.methods)
    for name in args.datasets:
        for split in args.splits:
            for m in args.methods:
                load0 = os.getloadavg()[0]
                t0 = time.process_time()
                w0 = time.perf_counter()
                res = ev.evaluate([m], [name], splits=[split], seeds=[0], out_dir=str(out / "cells"), progress=False,
                                  plots=False, memory="none", warmup=False)
                cpu, wall = time.process_time() - t0, time.perf_counter() - w0
                c = res.cells[0]
                if c["status"] != "ok":
                    print(name, split, m, "ERROR", c.get("error"), flush=True)
                    continue
                d = c["diagnostics"]
                keep = {k: d[k] for k in ("map_iters", "map_iters_mean", "map_smoothing_iters", "delta_y",
                                          "delta_y_joint", "delta_y_mean", "map_restart_objectives",
                                          "map_restart_smoothing_iters", "predictive_noise") if k in d}
                rec = dict(dataset=c["dataset"], split=split, method=m, rmse=c["metrics"]["rmse"], ll=c["metrics"]["ll"],
                           fit_time_s=c["fit_time_s"], computed=bool(res.computed), cpu_s=cpu if res.computed else None,
                           wall_s=wall, load=[load0, os.getloadavg()[0]], diag=keep,
                           when=time.strftime("%H:%M:%S", time.gmtime()))
                with open(rec_path, "a") as f:
                    print(json.dumps(rec, default=float), file=f)
                print(name, split, m, f"{rec['rmse']:.3f} / {rec['ll']:+.3f}",
                      f"cpu {cpu:.1f} s" if res.computed else "(stored)", f"load {load0:.1f}", flush=True)


def _key(ds):
    return {"bostonHousing": "boston"}.get(ds, ds)


def table(args):
    recs = {}
    for line in open(Path(args.out) / "records.jsonl"):
        r = json.loads(line)
        k = (_key(r["dataset"]), r["split"], r["method"])
        if r["computed"] or k not in recs:
            recs[k] = r
    ref_a = issue_nuts()
    sets = [d for d in ("yacht", "energy", "boston") if any(k[0] == d for k in recs)]
    methods = [m for m in METHODS + EXTRA if any(k[2] == m for k in recs)]
    print("RMSE / LL (original units); ratio = RMSE / NUTS RMSE against (a) the issue's table / library cells "
          "and (b) the 1000 + 1000 runs; CPU s per cell (fit + predict, one thread)\n")
    print("| split | NUTS (a) · (b) | " + " | ".join(f"`{m}`" for m in methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    counts = {(m, ref): [0, 0] for m in methods for ref in "ab"}
    for d in sets:
        for s in sorted({k[1] for k in recs if k[0] == d}):
            a = ref_a.get((d, s))
            b = NUTS_LONG.get((d, s))
            head = (f"{a[0]:.3f} / {a[1]:+.2f}" if a else "—") + " · " + (f"{b[0]:.3f} / {b[1]:+.3f}" if b else "—")
            cells = []
            for m in methods:
                r = recs.get((d, s, m))
                if r is None:
                    cells.append("")
                    continue
                txt = f"{r['rmse']:.3f} / {r['ll']:+.2f}"
                rat = []
                for ref, val in (("a", a), ("b", b)):
                    if val is None:
                        continue
                    q = r["rmse"] / val[0]
                    rat.append(f"{ref} ×{q:.2f}" + (" **short**" if q > TOL else ""))
                    if d != "boston":
                        counts[(m, ref)][0] += q <= TOL
                        counts[(m, ref)][1] += 1
                cpu = r["cpu_s"]
                cells.append(txt + (" (" + ", ".join(rat) + ")" if rat else "")
                             + (f"; {cpu:.0f} s" if cpu is not None else ""))
            print(f"| {SHORT.get(d, d)} {s} | {head} | " + " | ".join(cells) + " |")
    print("\nWithin 25% of NUTS's RMSE (Yacht and Energy splits 0–2):")
    for m in methods:
        print(f"  {m}: " + "; ".join(f"reference ({ref}) {counts[(m, ref)][0]} of {counts[(m, ref)][1]}"
                                     for ref in "ab"))
    print("\nload (1-min) at the cells' starts:",
          f"{min(r['load'][0] for r in recs.values()):.1f}–{max(r['load'][0] for r in recs.values()):.1f}")
    for d in sets:
        for s in sorted({k[1] for k in recs if k[0] == d}):
            for m in methods:
                r = recs.get((d, s, m))
                if r and "smooth" in m:
                    print(SHORT.get(d, d), s, m, "stages", r["diag"].get("map_smoothing_iters"),
                          "restart stages", r["diag"].get("map_restart_smoothing_iters"),
                          "Δ_y", r["diag"].get("delta_y", r["diag"].get("delta_y_mean")),
                          "joint", r["diag"].get("delta_y_joint"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--datasets", nargs="+", default=["yacht", "energy", "boston"])
    r.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--methods", nargs="+", default=list(METHODS))
    t = sub.add_parser("table")
    t.add_argument("--out", required=True)
    args = p.parse_args(argv)
    (run if args.cmd == "run" else table)(args)


if __name__ == "__main__":
    main()
