"""The literal call `gibbs.run(bb.MLP([d, 50, 1]), X, y)`, then `gibbs.extend` of the same chains, on gold cells.

For each Gal split given: the default call (4 chains from joint MAP fits, 1000 warm-up + 1000 kept sweeps,
`moves="auto"`), then ``--steps`` extensions of ``--extend`` kept sweeps each (design note 66). After the call and
after every extension: test RMSE and mean test log-likelihood in original units, their ratio / difference to
issue 15's NUTS reference (`benchmarks/gibbs_gold.py`'s ``NUTS`` table; the figure: RMSE within ×1.15, LL within
0.1 nats, below NUTS's 100–210 s), the max and median R-hat of the test outputs over the chains, and the
cumulative wall-clock (MAP fits included). Every row after the first holds all samples so far, so the rows of one
split are one set of chains sampled longer — the same samples as a call with that many kept sweeps and 1000
warm-up sweeps.

    PYTHONPATH=$PWD BLOCKBAYES_UCI_ROOT=../shared/data/uci OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        python benchmarks/gibbs_extend.py --cells yacht:0 energy:0 energy:2 --extend 1000 --steps 3
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

import numpy as np

import blockbayes as bb
from blockbayes import gibbs
from blockbayes.evaluate.reference import prediction_diagnostics
from blockbayes.gibbs.diagnostics import ConvergenceWarning


def scores(r, data):
    """(RMSE, LL, max R-hat, median R-hat) of ``r`` on the split's test set, original units."""
    Xte, yte = data[2], data[3]
    scale = float(data.y_std)
    m, _ = r.predict(Xte)
    rmse = float(np.sqrt(np.mean((np.asarray(m)[:, 0] - np.asarray(yte).reshape(-1)) ** 2))) * scale
    ll = float(r.log_predictive_density(Xte, yte)) - math.log(scale)
    F = np.asarray(r.predict_samples(Xte))
    d = prediction_diagnostics(F.reshape(F.shape[0], F.shape[1], -1))
    return rmse, ll, d.get("rhat_pred_max", float("nan")), d.get("rhat_pred_median", float("nan"))


def cell(name, split, *, seed, extend, steps):
    """Rows ``(kept per chain, RMSE, LL, max R̂, median R̂, seconds)`` of one split."""
    data = bb.datasets.uci(name, split)
    Xtr, ytr = data[0], data[1]
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        r = gibbs.run(bb.MLP([Xtr.shape[1], 50, 1]), Xtr, ytr, seed=seed, progress=False)
        wall = time.perf_counter() - t0
        rows.append((r.num_samples, *scores(r, data), wall))
        for _ in range(steps):
            t0 = time.perf_counter()
            r = gibbs.extend(r, extend, progress=False)
            wall += time.perf_counter() - t0
            rows.append((r.num_samples, *scores(r, data), wall))
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", nargs="+", default=["yacht:0", "energy:0", "energy:2"], help="dataset:split")
    ap.add_argument("--extend", type=int, default=1000, help="kept sweeps per extension")
    ap.add_argument("--steps", type=int, default=3, help="extensions after the default call")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(__file__))
    from gibbs_gold import LL_TOL, NUTS, RMSE_TOL

    print(f"gibbs.run(bb.MLP([d, 50, 1]), X, y, seed={a.seed}) then gibbs.extend(r, {a.extend}) x {a.steps}; "
          f"figure: RMSE <= x{RMSE_TOL} NUTS, LL >= NUTS - {LL_TOL}; load avg {os.getloadavg()[0]:.2f}")
    print(f"{'cell':>10} {'kept':>5} {'RMSE':>8} {'LL':>8} {'xNUTS':>6} {'dLL':>7} {'max R̂':>7} {'med R̂':>7} "
          f"{'wall s':>7} {'figure':>6}")
    for spec in a.cells:
        name, split = spec.split(":")
        split = int(split)
        ref = NUTS.get((name, split))
        for kept, rmse, ll, rmax, rmed, wall in cell(name, split, seed=a.seed, extend=a.extend, steps=a.steps):
            if ref is not None:
                ratio, dll = rmse / ref[0], ll - ref[1]
                met = "met" if ratio <= RMSE_TOL and dll >= -LL_TOL else "short"
                extra = f"{ratio:6.2f} {dll:+7.3f}"
            else:
                extra, met = f"{'':>6} {'':>7}", "–"
            print(f"{spec:>10} {kept:5d} {rmse:8.4f} {ll:+8.3f} {extra} {rmax:7.3f} {rmed:7.3f} {wall:7.1f} {met:>6}"
                  f"  (load {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
