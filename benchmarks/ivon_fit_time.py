"""Fit time of ``vi_ivon`` / ``vi_vogn`` against 5 MAP fits (the ``ensemble``), timed in the same run.

Usage::

    python benchmarks/ivon_fit_time.py [--datasets yacht,bostonHousing] [--split 0] [--uci-overrides]

Registry defaults of every method (``--uci-overrides``: with ``benchmarks/uci_table.py``'s per-dataset
overrides, i.e. the settings the UCI table runs, e.g. Protein's 64300 IVON steps and 300 L-BFGS
iterations per MAP fit on Naval/Protein), one thread, the methods of one dataset interleaved (so load
changes hit all of them); prints wall times, the ratio to the ensemble and the 1-minute load average.
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
from blockbayes.evaluate import get_method  # noqa: E402
from blockbayes.evaluate._methods import Arch  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="yacht,bostonHousing")
    ap.add_argument("--methods", default="vi_ivon,ensemble,vi_vogn")
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--uci-overrides", action="store_true", help="apply uci_table.DATASET_OVERRIDES")
    a = ap.parse_args(argv)
    over = {}
    if a.uci_overrides:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from uci_table import DATASET_OVERRIDES as over  # noqa: E402
    print(f"| dataset | n_train | " + " | ".join(f"{m} (s)" for m in a.methods.split(",")) +
          " | vi_ivon steps | ratio vi_ivon / ensemble | load (1 min) |")
    print("|---|---|" + "---|" * (len(a.methods.split(",")) + 3))
    for ds in a.datasets.split(","):
        d = bb.datasets.uci(ds, a.split)
        arch = Arch(d.X_train.shape[1], (bb.datasets.uci_info(ds).n_hidden,), "regression")
        t, steps = {}, "–"
        for m in a.methods.split(","):
            meth = get_method(m)
            t0 = time.perf_counter()
            p = meth.fit(arch, d.X_train, d.y_train, seed=0, **meth.options(over.get(ds, {}).get(m)))
            t[m] = time.perf_counter() - t0
            if m == "vi_ivon":
                steps = p.diagnostics["steps"]
        r = t.get("vi_ivon", float("nan")) / t.get("ensemble", float("nan"))
        print(f"| {ds} | {d.X_train.shape[0]} | " + " | ".join(f"{t[m]:.1f}" for m in a.methods.split(",")) +
              f" | {steps} | {r:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
