"""Time per L-BFGS iteration of our MAP fit against scikit-learn's MLPRegressor/MLPClassifier, side by side.

Usage::

    python benchmarks/map_vs_sklearn.py                # every UCI set found, 1 thread
    python benchmarks/map_vs_sklearn.py --sets yacht,energy --iters 300 --repeats 3

For each UCI set (split 0 of the Gal splits, standardised with training statistics) both fit the same
network (one hidden layer of ReLU units, 50; protein 100; squared error with an L2 penalty) by
full-batch L-BFGS from their own random start, forced to the same iteration budget (sklearn:
``max_iter=K, tol=0, max_fun=10·K``; ours: ``map_fit(max_iter=K, tol=1e-12, ftol=0)``). A fit may
end early (ours when no descent step is left on a kink of the ReLU objective); the comparison is
therefore **time per iteration** (fit time / iterations done), and the objective evaluations per
iteration are printed next to it. The two run interleaved in the same process, each repeated, best
time kept; times are **CPU seconds of this process** (``time.process_time``; both sides run on one
thread, and on a shared 2-core machine wall-clock ratios swing by 2x with the neighbours' load); the
1-minute load average is printed with the table (ratios from one run only).

A classification table does the same against ``MLPClassifier(solver="lbfgs")`` (softmax output,
log loss; ours: the categorical likelihood of a ``multinomial_probit`` net, which the MAP fit
trains with softmax) on data sets scikit-learn ships (offline): ``wine`` (n = 178, 13-50-3) and
``digits`` (n = 1797, 64-50-10), features standardised, all points used. There scikit-learn stops
before ``K`` however ``tol`` is set (``MLPClassifier`` leaves SciPy's default ``ftol`` of L-BFGS-B in
place, and the log loss flattens), so each of our fits is asked for the iterations scikit-learn's fit
of the same repeat did (equal counts; "iterations asked" shows the count of the best sklearn repeat).

A further table times the deep ensemble: 5 members fitted as one batched problem
(:func:`blockbayes.laplace.map_ensemble`) against 5 sequential :func:`~blockbayes.laplace.map_fit`
calls, per member-iteration.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import blockbayes as bb  # noqa: E402
from blockbayes import evaluate as ev  # noqa: E402


def _ours(net, X, y, K, seed):
    t = time.process_time()
    _, info = bb.laplace.map_fit(net, X, y, seed=seed, max_iter=K, tol=1e-12, ftol=0.0, progress=False,
                                 return_info=True)
    return time.process_time() - t, info["num_iter"], info["num_fev"]


def _sklearn(h, X, y, K, seed, classifier=False):
    """scikit-learn's MLPRegressor (or MLPClassifier) fit by L-BFGS with K iterations at most:
    (CPU seconds, iterations done, None)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    model = MLPClassifier if classifier else MLPRegressor
    m = model(hidden_layer_sizes=(h,), activation="relu", solver="lbfgs", alpha=1e-4, max_iter=K, tol=0.0,
              max_fun=10 * K, random_state=seed)
    t = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m.fit(X, y)
    return time.process_time() - t, int(m.n_iter_), None


def _class_data(name):
    """``(X, y)`` of a classification set bundled with scikit-learn, features standardised."""
    from sklearn import datasets

    X, y = {"wine": datasets.load_wine, "digits": datasets.load_digits}[name](return_X_y=True)
    sd = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return np.ascontiguousarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)


def _side_by_side(fit_ours, fit_sk, repeats, match=False):
    """Best (CPU s per iteration, iterations, evaluations) of each side over ``repeats`` interleaved runs
    (``fit(r, K)``; ``match``: scikit-learn first, and ours then asked for the iterations it did)."""
    best = {"ours": None, "sk": None}
    for r in range(repeats):
        K = None
        for side, fit in ((("sk", fit_sk), ("ours", fit_ours)) if match else (("ours", fit_ours), ("sk", fit_sk))):
            t, it, fev = fit(r, K)
            if match:
                K = it
            per = t / max(it, 1)
            if best[side] is None or per < best[side][0]:
                best[side] = (per, it, fev)
    return best["ours"], best["sk"]


def _ens_batched(net, X, y, K, M):
    t = time.process_time()
    _, info = bb.laplace.map_ensemble(net, X, y, members=M, seed=0, max_iter=K, tol=1e-12, ftol=0.0,
                                      progress=False, return_info=True)
    return time.process_time() - t, sum(i["num_iter"] for i in info["members"])


def _ens_sequential(net, X, y, K, M):
    t = time.process_time()
    its = 0
    for k in bb.laplace.member_keys(0, M):
        _, info = bb.laplace.map_fit(net, X, y, seed=k, max_iter=K, tol=1e-12, ftol=0.0, progress=False,
                                     return_info=True)
        its += info["num_iter"]
    return time.process_time() - t, its


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default=None, help="comma list of UCI sets (default: all found)")
    ap.add_argument("--iters", type=int, default=300, help="L-BFGS iterations (small sets)")
    ap.add_argument("--iters-large", type=int, default=60, help="L-BFGS iterations (naval, protein)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--class-sets", default="wine,digits",
                    help="comma list of classification sets (wine, digits; empty: none)")
    args = ap.parse_args(argv)
    from blockbayes._backend.threads import thread_limits

    thread_limits(num_threads=args.threads, blas_threads=args.threads)
    sets = args.sets.split(",") if args.sets else list(bb.datasets.uci_names(available=True))
    rows, erows = [], []
    for name in sets:
        info = bb.datasets.uci_info(name)
        data = ev.resolve_dataset(info.name).load(0)
        X, y = np.ascontiguousarray(data.X_train), np.ascontiguousarray(data.y_train)
        h = info.n_hidden or 50
        large = X.shape[0] > 5000
        K = args.iters_large if large else args.iters
        net = bb.MLP([X.shape[1], h, 1], "relu", prior_prec="fan_in", delta={"y": 0.01})
        _ours(net, X[:64], y[:64], 3, 0)                    # warm caches / imports
        _sklearn(h, X[:64], y[:64], 3, 0)
        o, s_ = _side_by_side(lambda r, _: _ours(net, X, y, K, r), lambda r, _: _sklearn(h, X, y, K, r), args.repeats)
        rows.append((info.name, X.shape[0], X.shape[1], h, K, o, s_))
        print(f"[map_vs_sklearn] {info.name}: ours {o[0] * 1e3:.3f} ms/it, sklearn {s_[0] * 1e3:.3f} ms/it",
              file=sys.stderr)
        if not large:
            eb = es = None
            for r in range(max(1, args.repeats - 1)):
                tb, ib = _ens_batched(net, X, y, K, args.members)
                ts, is_ = _ens_sequential(net, X, y, K, args.members)
                eb = min(eb or np.inf, tb / max(ib, 1))
                es = min(es or np.inf, ts / max(is_, 1))
            erows.append((info.name, X.shape[0], eb, es))
    crows = []
    for name in [c for c in (args.class_sets or "").split(",") if c]:
        X, y = _class_data(name)
        h, K, C = 50, args.iters, int(y.max()) + 1
        net = bb.MLP([X.shape[1], h, C], "relu", likelihood="multinomial_probit", prior_prec="fan_in")
        _ours(net, X[:64], y[:64], 3, 0)
        _sklearn(h, X[:64], y[:64], 3, 0, classifier=True)
        o, s_ = _side_by_side(lambda r, k: _ours(net, X, y, k, r), lambda r, _: _sklearn(h, X, y, K, r, classifier=True),
                              args.repeats, match=True)
        crows.append((name, X.shape[0], X.shape[1], h, C, s_[1], o, s_))
        print(f"[map_vs_sklearn] {name} (classification): ours {o[0] * 1e3:.3f} ms/it, sklearn {s_[0] * 1e3:.3f} ms/it",
              file=sys.stderr)
    load = os.getloadavg()[0]
    print(f"\nMAP by L-BFGS, CPU time per iteration (best of {args.repeats}, same process, interleaved), "
          f"{args.threads} thread(s); 1-min load average {load:.2f}\n")
    print("| set | n | d | hidden | iterations asked | ours ms/it (its done, fev) | sklearn ms/it (its done) | ours / sklearn |")
    print("|---|---|---|---|---|---|---|---|")
    for name, n, d, h, K, o, s in rows:
        print(f"| {name} | {n} | {d} | {h} | {K} | {o[0] * 1e3:.3f} ({o[1]}, {o[2]}) | {s[0] * 1e3:.3f} ({s[1]}) | "
              f"{o[0] / s[0]:.2f} |")
    if crows:
        print(f"\nClassification (softmax, log loss) against MLPClassifier, CPU time per iteration (best of "
              f"{args.repeats}, interleaved)\n")
        print("| set | n | d | hidden | classes | iterations asked | ours ms/it (its done, fev) | sklearn ms/it (its done) "
              "| ours / sklearn |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, n, d, h, C, K, o, s in crows:
            print(f"| {name} | {n} | {d} | {h} | {C} | {K} | {o[0] * 1e3:.3f} ({o[1]}, {o[2]}) | {s[0] * 1e3:.3f} ({s[1]}) "
                  f"| {o[0] / s[0]:.2f} |")
    if erows:
        print(f"\nEnsemble of {args.members}: time per member-iteration, one batched problem vs sequential fits\n")
        print("| set | n | batched ms/member-it | sequential ms/member-it | batched / sequential |")
        print("|---|---|---|---|---|")
        for name, n, b, s in erows:
            print(f"| {name} | {n} | {b * 1e3:.3f} | {s * 1e3:.3f} | {b / s:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
