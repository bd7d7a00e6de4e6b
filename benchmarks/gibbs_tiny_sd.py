"""Pooled marginal sds of the [1, 1, 1] tiny net (validation grid, MATH.md §E.2) against the exact
grid values: plain Gibbs vs Gibbs + non-centred move, from ``init="prior"`` and from zero.

The issue-15 regime: n = 6, Δ_Z = Δ_X = Δ_y = 0.01, λ = 1; 4 chains, 1000 warm-up + 2000 sweeps.
Needs the validation package (run from the repository root).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/gibbs_tiny_sd.py
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from blockbayes import gibbs
from blockbayes.gibbs.diagnostics import ConvergenceWarning
from blockbayes.gibbs.moves import NonCentredMove
from validation import gibbs_checks as G


def main():
    dz = dx = dy = 0.01
    net, s, x, y, _, prec, fine, coarse, outside = G.tiny_reference("relu", dz=dz, dx=dx, dy=dy)
    print(f"[1,1,1] ReLU, n={x.size}, Δ=0.01 all, λ=1; 4 chains, 1000+2000 sweeps; load avg {os.getloadavg()[0]:.2f}")
    print("exact sd (grid): " + "  ".join(f"{p}={fine.sd[j]:.3f}" for j, p in enumerate(G.PARAMS)))
    X, Y = x[:, None], y[:, None]
    for init in ("prior", "zero"):
        for name, mv in (("plain", None), ("+NC-MALA x10", NonCentredMove(steps=10))):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                r = gibbs.run(net, X, Y, num_samples=2000, num_warmup=1000, num_chains=4, seed=0, init=init,
                              moves=mv, progress=False)
            th = np.stack([r.weights[0][..., 0, 0], r.weights[0][..., 0, 1], r.weights[1][..., 0, 0],
                           r.weights[1][..., 0, 1]], -1).reshape(-1, 4)
            sd = th.std(0)
            rel = sd / np.asarray(fine.sd) - 1
            print(f"init={init:5s} {name:13s} sd: " + "  ".join(f"{p}={v:.3f} ({100 * e:+.0f}%)" for p, v, e in
                                                           zip(G.PARAMS, sd, rel))
                  + f"   max R-hat(f) {r.summary().max_rhat:.3f}", flush=True)


if __name__ == "__main__":
    main()
