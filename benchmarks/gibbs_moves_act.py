"""Autocorrelation time of predictions: plain Gibbs vs Gibbs + non-centred layer moves (ASIS) vs
Gibbs + partially collapsed node rows (``--collapsed K``: :class:`~blockbayes.gibbs.collapsed.CollapsedRowMove`
with ``K`` proposals per row after every sweep).

The problem of issue 15: a 20-10-1 ReLU teacher drawn from the fan-in prior, n = 1000 inputs
N(0, I), Δ_y fixed, Δ_Z = Δ_X = Δ; chains start at the teacher with its own latents (an exact
posterior draw), so there is no burn-in bias and the autocorrelation time measures mixing only.
Both samplers get the same warm-up (the move adapts its step and preconditioner there) and the
same number of kept sweeps, in the same process; the table reports, over 10 test inputs, the
median integrated autocorrelation time τ = C·S / ESS_bulk of the network output (in sweeps),
the median bulk ESS, ESS per second, max R-hat and the move's acceptance rate.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/gibbs_moves_act.py --delta 1e-4 --sweeps 4000
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/gibbs_moves_act.py --delta 1e-2 1e-3 1e-4 --steps --collapsed 4 16
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np

import blockbayes as bb
from blockbayes import diagnostics, gibbs
from blockbayes.gibbs.diagnostics import ConvergenceWarning
from blockbayes.gibbs.collapsed import CollapsedRowMove
from blockbayes.gibbs.moves import NonCentredMove


def problem(seed, n, delta, delta_y, n_test=10):
    rng = np.random.default_rng(seed)
    net = bb.MLP([20, 10, 1], "relu", prior_prec="fan_in", delta={"Z": delta, "X": delta, "y": delta_y})
    W1 = rng.standard_normal((10, 21)) / np.sqrt(20)
    W2 = rng.standard_normal((1, 11)) / np.sqrt(10)
    X = rng.standard_normal((n, 20))
    Z = X @ W1[:, :-1].T + W1[:, -1] + np.sqrt(delta) * rng.standard_normal((n, 10))
    H = np.maximum(Z, 0) + np.sqrt(delta) * rng.standard_normal((n, 10))
    y = H @ W2[:, :-1].T + W2[:, -1] + np.sqrt(delta_y) * rng.standard_normal((n, 1))
    Xt = rng.standard_normal((n_test, 20))
    return net, X, y, Xt, {"weights": (W1, W2), "pre": (Z,), "post": (H,)}


def measure(net, X, y, Xt, start, *, chains, warmup, sweeps, seed, moves):
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = gibbs.run(net, X, y, num_samples=sweeps, num_warmup=warmup, num_chains=chains, seed=seed, init=start,
                      progress=False, moves=moves, store_log_joint=False, diagnose=False, learn_noise=False)
    wall = time.perf_counter() - t0
    F = np.asarray(r.predict_samples(Xt))[..., 0]            # (C, S, n_test)
    ess = np.asarray(diagnostics.ess_bulk(F))
    tau = chains * sweeps / ess
    rh = np.asarray(diagnostics.rhat(F))
    acc = r.config.get("moves", {}).get("accept", [float("nan")])[0]
    return dict(tau=float(np.median(tau)), ess=float(np.median(ess)), ess_s=float(np.median(ess)) / wall,
                rhat=float(np.max(rh)), wall=wall, accept=acc)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--delta", type=float, nargs="+", default=[1e-4])
    ap.add_argument("--delta-y", type=float, default=1e-2)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--sweeps", type=int, default=4000)
    ap.add_argument("--steps", type=int, nargs="*", default=[10], help="NC-MALA steps per sweep, one arm each")
    ap.add_argument("--collapsed", type=int, nargs="*", default=[], help="collapsed-row proposals per row, one arm each")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(f"20-10-1 ReLU teacher, n={a.n}, Δ_y={a.delta_y}, {a.chains} chains from the teacher, "
          f"{a.warmup} warm-up + {a.sweeps} kept sweeps; load avg (1 min) {os.getloadavg()[0]:.2f}")
    print(f"{'Δ_Z=Δ_X':>9} {'sampler':>22} {'τ (sweeps)':>11} {'ESS':>8} {'ESS/s':>8} {'max R̂':>7} {'accept':>7} {'wall s':>8}")
    for delta in a.delta:
        net, X, y, Xt, start = problem(a.seed, a.n, delta, a.delta_y)
        variants = ([("plain Gibbs", None)] + [(f"Gibbs + NC-MALA x{k}", NonCentredMove(steps=k)) for k in a.steps]
                    + [(f"Gibbs + collapsed x{k}", CollapsedRowMove(proposals=k)) for k in a.collapsed])
        for name, mv in variants:
            m = measure(net, X, y, Xt, start, chains=a.chains, warmup=a.warmup, sweeps=a.sweeps, seed=a.seed, moves=mv)
            acc = "" if mv is None else f"{m.get('accept', float('nan')):.2f}"
            print(f"{delta:9.0e} {name:>22} {m['tau']:11.1f} {m['ess']:8.1f} {m['ess_s']:8.2f} {m['rhat']:7.3f} "
                  f"{acc:>7} {m['wall']:8.1f}", flush=True)


if __name__ == "__main__":
    main()
