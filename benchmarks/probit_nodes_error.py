"""Error of the multinomial-probit predictive with fewer Gauss–Hermite nodes (issue 13).

``p(c|a) = ∫ φ(t) Π_{c'≠c} Φ(a_c − a_{c'} + t) dt`` is integrated with ``nodes`` Gauss–Hermite
nodes (cost ``O(S n K² nodes)``). This script fits block Gibbs on MNIST-1D (``--n`` training
signals, hidden width 32, 1 chain, MAP-free prior start) and block VI (the Rao–Blackwellised block
Gaussian of the same chain), then compares the predictive on ``--n-test`` test and as many OOD
signals with ``nodes`` in {4, 8, 16, 32} against 96 nodes: max |Δp|, and the change of NLL,
accuracy, ECE (15 bins) and OOD AUROC. Prints a table and the 1-min load.

    nice -n 19 python benchmarks/probit_nodes_error.py --n 3000 --n-test 2000
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import blockbayes as bb  # noqa: E402
from blockbayes import gibbs, metrics  # noqa: E402
from blockbayes.evaluate import scale  # noqa: E402
from blockbayes.vi import rao_blackwell  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--sweeps", type=int, default=150)
    ap.add_argument("--draws", type=int, default=10)
    ap.add_argument("--cache", default=None)
    a = ap.parse_args(argv)
    X, y = scale.mnist1d_stream(a.n, seed=0, stream="train", cache_dir=a.cache)
    Xt, yt = scale.mnist1d_stream(a.n_test, seed=0, stream="test", cache_dir=a.cache)
    Xo, _ = scale.mnist1d_stream(a.n_test, seed=0, stream="ood", shift=scale.MNIST1D_SHIFT, cache_dir=a.cache)
    X, Xt, Xo = (np.asarray(v, dtype=np.float64) for v in (X, Xt, Xo))
    y, yt = np.asarray(y, dtype=np.int64), np.asarray(yt, dtype=np.int64)
    net = bb.MLP([40, 32, 10], "relu", likelihood="multinomial_probit", delta={"Z": 1e-3, "X": 1e-3})
    t0 = time.time()
    res = rao_blackwell.run(net, X, y, num_samples=a.draws, num_warmup=a.sweeps - a.draws, num_chains=1, thin=1,
                            init="prior", seed=0, progress=False, tempering="off")
    fit_s = time.time() - t0
    posts = {"gibbs": res.extras["samples"], "vi_block": res.as_samples(a.draws, seed=4)}
    Xall = np.concatenate([Xt, Xo])
    print(f"MNIST-1D n = {a.n}, {a.sweeps} sweeps ({fit_s:.0f} s), {a.draws} draws, "
          f"{a.n_test} test + {a.n_test} OOD signals")
    print("| method | nodes | predict s | max abs Δp (vs 96) | ΔNLL | Δaccuracy | ΔECE | ΔOOD AUROC |")
    print("|---|---|---|---|---|---|---|---|")
    for name, post in posts.items():
        ref = None
        rows = []
        for nodes in (96, 32, 16, 8, 4):
            t = time.time()
            p = np.asarray(post.predict_proba(Xall, nodes=nodes))
            dt = time.time() - t
            pt, po = p[: len(Xt)], p[len(Xt):]
            nll = float(-np.mean(np.log(np.maximum(pt[np.arange(len(yt)), yt], 1e-300))))
            acc = float(np.mean(np.argmax(pt, 1) == yt))
            ece = float(metrics.ece(pt, yt, n_bins=15))
            au = float(metrics.auroc(metrics.predictive_entropy(pt), metrics.predictive_entropy(po)))
            if ref is None:
                ref = (p, nll, acc, ece, au)
                rows.append(f"| {name} | 96 (reference) | {dt:.1f} | – | NLL {nll:.4f} | acc {acc:.4f} | "
                            f"ECE {ece:.4f} | AUROC {au:.4f} |")
                continue
            rows.append(f"| {name} | {nodes} | {dt:.1f} | {np.max(np.abs(p - ref[0])):.2e} | {nll - ref[1]:+.2e} | "
                        f"{acc - ref[2]:+.2e} | {ece - ref[3]:+.2e} | {au - ref[4]:+.2e} |")
        print("\n".join(rows))
    print(f"1-min load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
