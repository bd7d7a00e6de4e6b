"""Fit time of ``vi_ivon`` / ``vi_vogn`` against 5 MAP fits (the ``ensemble``), timed in the same run.

Usage::

    python benchmarks/ivon_fit_time.py [--datasets yacht,bostonHousing] [--split 0] [--uci-overrides]

Registry defaults of every method (``--uci-overrides``: with ``benchmarks/uci_table.py``'s per-dataset
overrides, i.e. the settings the UCI table runs, e.g. Protein's 64300 IVON steps and 300 L-BFGS
iterations per MAP fit on Naval/Protein), one thread, the methods of one dataset interleaved (so load
changes hit all of them; ``--repeats``: alternating order); prints wall and process CPU times, the ratios
to the ensemble and the 1-minute load average. CPU time is the less load-sensitive of the two on a
shared machine (wall time also counts the time other processes hold the core).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import blockbayes as bb  # noqa: E402
from blockbayes import point_fit  # noqa: E402
from blockbayes.evaluate import get_method  # noqa: E402
from blockbayes.evaluate._methods import Arch  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="yacht,bostonHousing")
    ap.add_argument("--methods", default="vi_ivon,ensemble,vi_vogn")
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--uci-overrides", action="store_true", help="apply uci_table.DATASET_OVERRIDES")
    ap.add_argument("--repeats", type=int, default=1,
                    help="fits per method and dataset, the methods' order reversed every other repeat; the "
                         "table gives the sums over repeats (wall and process CPU time)")
    a = ap.parse_args(argv)
    over = {}
    if a.uci_overrides:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from uci_table import DATASET_OVERRIDES as over  # noqa: E402
    # warm-up: one small fit of every method first, so that no timed fit pays for first-call imports
    # (SciPy, threadpoolctl, Numba caches), which would otherwise land on the first dataset's first method
    import numpy as np  # noqa: E402

    rng = np.random.default_rng(0)
    Xw, yw = rng.normal(size=(64, 3)), rng.normal(size=64)
    for m in a.methods.split(","):
        meth = get_method(m)
        small = {"options": {"max_steps": 20}} if m in ("vi_ivon", "vi_vogn") else {}
        meth.fit(Arch(3, (5,), "regression"), Xw, yw, seed=0, **meth.options(small))
    names = a.methods.split(",")
    print(f"| dataset | n_train | " + " | ".join(f"{m} (s)" for m in names) +
          " | vi_ivon steps | ratio vi_ivon / ensemble | " + " | ".join(f"{m} CPU (s)" for m in names) +
          " | CPU-time ratio | repeats | load (1 min) |")
    print("|---|---|" + "---|" * (2 * len(names) + 5))
    for ds in a.datasets.split(","):
        d = bb.datasets.uci(ds, a.split)
        arch = Arch(d.X_train.shape[1], (bb.datasets.uci_info(ds).n_hidden,), "regression")
        wall, cpu, steps = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0), "–"
        for r in range(a.repeats):
            for m in (names if r % 2 == 0 else names[::-1]):
                meth = get_method(m)
                point_fit.clear_cache()          # MAP fits are memoised per process: time every fit afresh
                t0, c0 = time.perf_counter(), time.process_time()
                p = meth.fit(arch, d.X_train, d.y_train, seed=0, **meth.options(over.get(ds, {}).get(m)))
                wall[m] += time.perf_counter() - t0
                cpu[m] += time.process_time() - c0
                if m == "vi_ivon":
                    steps = p.diagnostics["steps"]
        r_w = wall.get("vi_ivon", float("nan")) / wall.get("ensemble", float("nan"))
        r_c = cpu.get("vi_ivon", float("nan")) / cpu.get("ensemble", float("nan"))
        print(f"| {ds} | {d.X_train.shape[0]} | " + " | ".join(f"{wall[m]:.1f}" for m in names) +
              f" | {steps} | {r_w:.2f} | " + " | ".join(f"{cpu[m]:.1f}" for m in names) +
              f" | {r_c:.2f} | {a.repeats} | {os.getloadavg()[0]:.1f} |", flush=True)

if __name__ == "__main__":
    main()
