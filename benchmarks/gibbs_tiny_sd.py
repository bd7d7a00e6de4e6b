"""Pooled marginal sds of the [1, 1, 1] tiny net (MATH.md §E.2) against the exact values, with
default settings: ``gibbs.run`` and the default ``vi.run`` (Rao–Blackwellised Gibbs), from
``init="prior"``, ``"zero"`` and each one's default start, untempered (``tempering="off"``) and
with the default ``tempering="auto"`` (replica exchange over Δ, blockbayes.gibbs.tempering).

Problems (``--problem``):

* ``relu-suite``, ``leaky-suite`` — the validation suite's two tiny-net families (§E.2,
  ``validation.gibbs_checks.tiny_problem`` defaults: Δ_Z = Δ_X = 0.2, Δ_y = 0.1, λ = 1, n = 8);
* ``relu-0.01`` — the issue-15 regime: the same data generator at Δ_Z = Δ_X = Δ_y = 0.01.

Reference ("exact"): the grid quadrature of the suite (G = 41) and, independently, self-normalised
importance sampling of the collapsed posterior ``p(θ | y)`` (closed-form per-datum likelihood of
§E.2) with the grid's cell envelope as the proposal (``--is-draws`` draws; its ESS is printed). At
Δ = 0.01 the G = 41 grid is not converged (its cells are wider than the posterior's features and
it misses a second mode), so the IS value is the reference there; in the suite regime they agree.

gibbs.run: 4 chains, 1000 warm-up + 2000 sweeps (the issue's budget; ``--gibbs-budget library``: its own
defaults, nothing set). vi.run: its defaults
(4 chains × (200 + 200) sweeps untempered, 16 × (500 + 1500) when tempering; ``--vi-budget``,
``--vi-chains`` override them); its sds are the block Gaussian's (``covs``). Per row: the
sd of every weight with the % deviation from the reference, the worst |deviation|, max R-hat
(function space, gibbs.run only), tempering replicas and wall-clock.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/gibbs_tiny_sd.py --problem relu-suite
"""
from __future__ import annotations

import argparse
import math
import os
import time
import warnings

import numpy as np

import blockbayes as bb
from blockbayes import gibbs
from blockbayes.gibbs.diagnostics import ConvergenceWarning
from validation import _refs as R
from validation import gibbs_checks as G

PROBLEMS = {"relu-suite": ("relu", {}), "leaky-suite": ("leaky_relu", {}),
            "relu-0.01": ("relu", dict(dz=0.01, dx=0.01, dy=0.01))}


def is_reference(grid, N, seed=0, batch=200000, safety=32.0):
    """Self-normalised IS of the collapsed posterior with the grid's cell envelope as proposal.
    Returns ``(mean (4,), sd (4,), ESS)``."""
    rng = np.random.default_rng(seed)
    Gn = grid.axes[0].size
    lp = grid.logp - grid.logmax
    cmax = lp[:-1, :-1, :-1, :-1]
    for corner in range(1, 16):
        sl = tuple(slice(1, None) if (corner >> j) & 1 else slice(None, -1) for j in range(4))
        cmax = np.maximum(cmax, lp[sl])
    logq = (cmax + math.log(safety)).ravel()
    w = np.exp(logq - logq.max())
    w /= w.sum()
    logw_cell = np.log(np.maximum(w, 1e-300))
    vol = float(np.prod(grid.h))
    lo = np.array([ax[0] for ax in grid.axes])
    th_all, lw_all = [], []
    for s in range(0, N, batch):
        m = min(batch, N - s)
        cell = rng.choice(w.size, size=m, p=w)
        idx = np.stack(np.unravel_index(cell, (Gn - 1,) * 4), axis=1)
        th = lo + (idx + rng.random((m, 4))) * grid.h
        lw = R.tiny_logpost(th, *grid.args) - (logw_cell[cell] - math.log(vol))
        th_all.append(th)
        lw_all.append(lw)
    th = np.concatenate(th_all)
    lw = np.concatenate(lw_all)
    wt = np.exp(lw - lw.max())
    wt /= wt.sum()
    mean = wt @ th
    sd = np.sqrt(wt @ (th - mean) ** 2)
    return mean, sd, float(1.0 / np.sum(wt ** 2))


def weights_of(r):
    return np.stack([r.weights[0][..., 0, 0], r.weights[0][..., 0, 1], r.weights[1][..., 0, 0],
                     r.weights[1][..., 0, 1]], -1).reshape(-1, 4)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", choices=list(PROBLEMS), default="relu-suite")
    ap.add_argument("--methods", nargs="+", default=["gibbs", "vi"], choices=["gibbs", "vi"])
    ap.add_argument("--inits", nargs="+", default=["prior", "zero", "default"])
    ap.add_argument("--tempering", nargs="+", default=["off", "auto"])
    ap.add_argument("--is-draws", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gibbs-budget", default="issue",
                    help="gibbs.run's counts: 'issue' = 4 chains x (1000 + 2000) (issue 15's budget); 'library' = "
                         "nothing set, gibbs.run's own defaults; or 'W,S,C' (warm-up, kept, chains)")
    ap.add_argument("--vi-budget", nargs=2, type=int, default=None, metavar=("WARMUP", "SAMPLES"),
                    help="vi.run's num_warmup and num_samples (default: its own defaults)")
    ap.add_argument("--vi-chains", type=int, default=None, help="vi.run's num_chains (default: its own)")
    a = ap.parse_args()
    act, kw = PROBLEMS[a.problem]
    net, s, x, y, (dz, dx, dy), prec, fine, coarse, outside = G.tiny_reference(act, **kw)
    X, Y = x[:, None], y[:, None]
    m_is, sd_is, ess = is_reference(fine, a.is_draws)
    print(f"# {a.problem}: [1,1,1] {act}, n={x.size}, Δ_Z={dz:g} Δ_X={dx:g} Δ_y={dy:g}, λ=1; "
          f"load avg {os.getloadavg()[0]:.2f}")
    print("# grid G=41 sd: " + "  ".join(f"{p}={v:.4f}" for p, v in zip(G.PARAMS, fine.sd))
          + f"   (G=31: " + " ".join(f"{v:.4f}" for v in coarse.sd) + ")")
    print(f"# IS sd (ESS {ess:.0f} of {a.is_draws}): " + "  ".join(f"{p}={v:.4f}" for p, v in zip(G.PARAMS, sd_is)))
    grid_ok = np.max(np.abs(np.asarray(fine.sd) / sd_is - 1)) < 0.02
    ref = np.asarray(fine.sd) if grid_ok else sd_is
    print(f"# reference: {'grid G=41 (agrees with IS within 2%)' if grid_ok else 'IS (grid off by > 2%)'}")
    print("| method | init | tempering | " + " | ".join(G.PARAMS) + " | worst | max R-hat(f) | replicas | wall s |")
    print("|---" * (8 + len(G.PARAMS)) + "|")
    for method in a.methods:
        for init in a.inits:
            for temp in a.tempering:
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    if method == "gibbs":
                        ikw = {} if init == "default" else dict(init=init)
                        if a.gibbs_budget == "issue":
                            ikw.update(num_samples=2000, num_warmup=1000, num_chains=4)
                        elif a.gibbs_budget != "library":
                            wb, sb, cb = (int(v) for v in a.gibbs_budget.split(","))
                            ikw.update(num_warmup=wb, num_samples=sb, num_chains=cb)
                        r = gibbs.run(net, X, Y, seed=a.seed, progress=False, tempering=temp, **ikw)
                        sd = weights_of(r).std(0)
                        rhat = f"{r.summary().max_rhat:.3f}"
                        tcfg = r.config["tempering"]
                    else:
                        ikw = {} if init == "default" else dict(init=init)
                        if a.vi_budget:
                            ikw.update(num_warmup=a.vi_budget[0], num_samples=a.vi_budget[1])
                        if a.vi_chains:
                            ikw.update(num_chains=a.vi_chains)
                        r = bb.vi.run(net, X, Y, seed=a.seed, progress=False, tempering=temp, **ikw)
                        sd = np.array([math.sqrt(float(r.covs[0][0, 0, 0, 0])), math.sqrt(float(r.covs[0][0, 0, 1, 1])),
                                       math.sqrt(float(r.covs[1][0, 0, 0, 0])), math.sqrt(float(r.covs[1][0, 0, 1, 1]))])
                        rhat = "–"
                        tcfg = r.config["tempering"]
                wall = time.perf_counter() - t0
                dev = sd / ref - 1
                iname = init if init != "default" else ("default (map)" if method == "gibbs" else "default (cavi)")
                print(f"| {method} | {iname} | {temp} | "
                      + " | ".join(f"{v:.3f} ({100 * e:+.0f}%)" for v, e in zip(sd, dev))
                      + f" | {100 * np.max(np.abs(dev)):.0f}% | {rhat} | {tcfg['replicas']} | {wall:.1f} |", flush=True)


if __name__ == "__main__":
    main()
