"""Block-Gibbs classification on real data: accuracy, NLL and ECE of the posterior predictive.

Usage::

    python benchmarks/classification_real.py [--warmup 1500] [--samples 300] [--chains 4]

Data: scikit-learn's bundled ``digits`` (10 classes, 64 features) and ``breast_cancer``
(2 classes, 30 features), and MNIST-1D (package ``mnist1d``, procedurally generated offline;
40 features, 10 classes; skipped if the package is missing). Inputs standardised with training
statistics. Model: one ReLU hidden layer, multinomial probit (10 classes) or binary probit,
λ = fan-in with ``learn_prior=True`` (``--learn-prior 0``: fixed), Δ_Z = Δ_X = ``--delta``; chains start
where ``--init`` says (default: ``gibbs.run``'s default, ``"map"``; ``--init prior`` for prior draws), with the
moves ``--moves`` says (default: ``gibbs.run``'s default, ``"auto"``; ``--moves none`` for the sweep alone).
Metrics from :mod:`blockbayes.metrics` (ECE: 15 equal-width bins, top-label).

Issue 15's digits setting (library defaults: 64-32-10 ReLU, Δ = 1e-3, λ fixed, 2 chains,
300 warm-up + 200 sweeps, 70/30 stratified split)::

    python benchmarks/classification_real.py --only digits --hidden 32 --delta 1e-3 --learn-prior 0 \
        --chains 2 --warmup 300 --samples 200 --thin 1 --test-fraction 0.3 --init prior map
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import blockbayes as bb
from blockbayes import datasets, gibbs, metrics


def run_one(name, data, hidden, args, init=None, moves="auto"):
    K = data.n_classes
    lik = "probit" if K == 2 else "multinomial_probit"
    net = bb.MLP([data.X_train.shape[1], hidden, 1 if K == 2 else K], "relu", likelihood=lik,
                 delta={"Z": args.delta, "X": args.delta})
    kw = {} if init is None else dict(init=init)
    kw["moves"] = moves
    t = time.perf_counter()
    res = gibbs.run(net, data.X_train, data.y_train, num_samples=args.samples, num_warmup=args.warmup,
                    num_chains=args.chains, thin=args.thin, seed=args.seed, learn_prior=bool(args.learn_prior),
                    progress=not args.no_progress, num_threads=args.threads, **kw)
    wall = time.perf_counter() - t
    p = res.predict_proba(data.X_test)
    yt = data.y_test
    return dict(name=name, n_train=len(data.y_train), n_test=len(yt), K=K, hidden=hidden,
                moves=res.config["moves_auto"]["chosen"], acc=float(metrics.accuracy(p, yt)), nll=float(metrics.nll(p, yt)),
                ece=float(metrics.ece(p, yt, n_bins=15)), brier=float(metrics.brier(p, yt)), wall=wall)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warmup", type=int, default=1500)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--thin", type=int, default=2)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=50)
    ap.add_argument("--delta", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--learn-prior", type=int, default=1)
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--init", nargs="+", default=[None], help="gibbs.run init values to compare (default: its default)")
    ap.add_argument("--moves", nargs="+", default=["auto"], choices=("auto", "none", "hmc"),
                    help="gibbs.run moves values to compare (default: its default, 'auto')")
    ap.add_argument("--only", default=None, help="comma-separated subset of digits,breast_cancer,mnist1d")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args()
    sets = []
    only = set(args.only.split(",")) if args.only else None
    for name in ("digits", "breast_cancer"):
        if only is None or name in only:
            sets.append((name, datasets.sklearn_dataset(name, seed=args.seed, test_fraction=args.test_fraction)))
    if only is None or "mnist1d" in only:
        try:
            sets.append(("mnist1d", datasets.mnist1d(seed=args.seed, standardize=True)))
        except ImportError as exc:
            print(f"# mnist1d skipped: {exc}")
    print(f"# Gibbs classification: {args.chains} chains x ({args.warmup} warm-up + {args.samples} x thin {args.thin}), "
          f"Δ_Z = Δ_X = {args.delta:g}, hidden {args.hidden} ReLU, learn_prior={bool(args.learn_prior)}, "
          f"test fraction {args.test_fraction:g}")
    print("| data | init | moves (chosen) | n_train | n_test | classes | accuracy | NLL | ECE (15 bins) | Brier | wall (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, data in sets:
        for init in args.init:
            for mv in args.moves:
                r = run_one(name, data, args.hidden, args, init=init, moves=mv)
                print(f"| {name} | {init or 'default'} | {mv} ({r['moves']}) | {r['n_train']} | {r['n_test']} | {r['K']} | "
                      f"{r['acc']:.4f} | {r['nll']:.4f} | {r['ece']:.4f} | {r['brier']:.4f} | {r['wall']:.1f} |",
                      flush=True)


if __name__ == "__main__":
    main()
