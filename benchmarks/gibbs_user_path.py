"""The user path of issue 15 on shared UCI sets: which start should `gibbs.run` default to?

Settings a new user would pick (issue 15, "Why"): 50 ReLU units, fan-in prior, Δ_Z = Δ_X = 1e-3
(the MLP default), ``learn_noise=True``, ``learn_prior`` as given, 2 chains, 1500 warm-up + 500
sweeps, Gal split ``--split``. Variants: ``default`` (neither ``init`` nor ``moves`` given:
``gibbs.run``'s defaults, ``init="map"`` since issue 15 and ``moves="auto"`` since session 18),
``none`` (the default start, ``moves=None``: the sweep alone, the default before session 18), and, all
with the sweep alone as when they were measured: ``init="prior"`` (the default before issue 15),
``init="map"`` (each chain from its own MAP fit); then ``init="map"`` + non-centred moves, ``init="map"`` + the joint non-centred HMC move
(``map+hmc``, ``JointHMCMove(leapfrog=--leapfrog)``), and the recipes ``gold`` / ``gold_hmc`` of
:mod:`blockbayes.gibbs.presets` (their own chains, sweeps and hidden Δ; context, not the user path). Reported in original units: test RMSE
and mean test log-likelihood, max function-space R-hat on the 32 default probes, wall-clock
seconds (MAP fits included), mean Δ_y, the median R-hat and the smallest bulk ESS of the probe outputs and
that ESS per wall-clock second, and the mean learned λ_W per layer. ``--reference`` adds the
evaluate runner's ``ensemble`` and ``map`` cells on the same split (``bb.evaluate.compare``: 5 / 1
L-BFGS fits, 50 units, λ = fan-in, Δ_y from a 10% holdout) and each variant's RMSE ratio to the
ensemble.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/gibbs_user_path.py --datasets boston yacht energy \
        --variants default prior --reference
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
from blockbayes.gibbs.hmc import JointHMCMove
from blockbayes.gibbs.moves import NonCentredMove

VARIANTS = {
    "default": dict(),
    "none": dict(moves=None),
    # the variants measured before session 18 keep the sweep alone (moves=None), as they ran then
    "prior": dict(init="prior", moves=None),
    "map": dict(init="map", moves=None),
    "map_evidence": dict(init="map_evidence", moves=None),
    "map+move": dict(init="map", moves=NonCentredMove(steps=5)),
    "prior+move": dict(init="prior", moves=NonCentredMove(steps=5)),
    "map+hmc": dict(init="map", moves="hmc"),
}
#: Variants that run a named recipe of :mod:`blockbayes.gibbs.presets` with the recipe's own settings.
PRESETS = ("gold", "gold_hmc")


def one(name, split, variant, *, learn_prior, warmup, samples, chains, seed, delta=1e-3, steps=5, leapfrog=32):
    data = bb.datasets.uci(name, split)
    Xtr, ytr, Xte, yte = data[:4]
    net = bb.MLP([Xtr.shape[1], 50, 1], "relu", prior_prec="fan_in", delta={"Z": delta, "X": delta, "y": 0.1})
    opts = dict(VARIANTS.get(variant, {}))
    if opts.get("moves") == "hmc":
        opts["moves"] = JointHMCMove(leapfrog=leapfrog)
    elif "moves" in opts and opts["moves"] is not None:
        opts["moves"] = NonCentredMove(steps=steps)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if variant in PRESETS:  # a named recipe: its own chains, sweeps and hidden Δ (not the user path's)
            r = getattr(gibbs.presets, variant)().run(net, Xtr, ytr, seed=seed)
        else:
            r = gibbs.run(net, Xtr, ytr, num_samples=samples, num_warmup=warmup, num_chains=chains, seed=seed,
                          learn_noise=True, learn_prior=learn_prior, progress=False, **opts)
    wall = time.perf_counter() - t0
    m, _ = r.predict(Xte)
    rmse = float(np.sqrt(np.mean((np.asarray(m)[:, 0] - np.asarray(yte).reshape(-1)) ** 2))) * data.y_std
    ll = float(r.log_predictive_density(Xte, yte)) - math.log(data.y_std)
    s = r.summary()
    dy = float(np.mean(np.asarray(r.delta_y))) * data.y_std ** 2
    lam = "/".join(f"{float(np.mean(np.asarray(r.lam_w)[..., l])):.3g}" for l in range(net.num_layers))
    st = s.function_stats()
    return rmse, ll, s.max_rhat, wall, dy, lam, st["median_rhat"], st["min_ess"]


def reference(name, split, seed):
    """The evaluate runner's ensemble and map cells on the same split (original units)."""
    t = bb.evaluate.compare(["ensemble", "map"], name, split=split, seed=seed)
    bad = [f"{r['method']}: {r.get('status')} {r.get('error')}" for r in t if "rmse" not in r]
    if bad:
        raise RuntimeError(f"runner cells failed on {name}: {bad}")
    return {r["method"]: (r["rmse"], r["ll"], r["fit_time_s"]) for r in t}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["boston", "yacht", "energy"])
    ap.add_argument("--variants", nargs="+", default=["prior", "map", "map+move"], choices=[*VARIANTS, *PRESETS])
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--learn-prior", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1500)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--delta", type=float, default=1e-3, help="Δ_Z = Δ_X")
    ap.add_argument("--steps", type=int, default=5, help="MALA steps per sweep of the move variants")
    ap.add_argument("--leapfrog", type=int, default=32, help="leapfrog steps of the map+hmc variant (JointHMCMove)")
    ap.add_argument("--reference", action="store_true", help="also run the runner's ensemble and map cells")
    a = ap.parse_args(argv)
    print(f"user path: 50 ReLU units, Δ_Z=Δ_X={a.delta:g}, move steps {a.steps}, learn_noise, learn_prior={bool(a.learn_prior)}, {a.chains} chains, "
          f"{a.warmup}+{a.samples} sweeps, split {a.split}; load avg (1 min) {os.getloadavg()[0]:.2f}")
    print(f"{'dataset':>10} {'init':>11} {'RMSE':>8} {'test LL':>8} {'max R̂(f)':>10} {'wall s':>8} {'mean Δ_y':>9} "
          f"{'RMSE/ens':>8} {'med R̂(f)':>9} {'min ESS(f)':>10} {'ESS/s':>7}  mean λ_W per layer")
    for name in a.datasets:
        ref = reference(name, a.split, a.seed) if a.reference else {}
        for m, (rmse, ll, wall) in ref.items():
            print(f"{name:>10} {m:>11} {rmse:8.4g} {ll:8.3f} {'':>10} {wall:8.1f}  (runner cell; load {os.getloadavg()[0]:.2f})",
                  flush=True)
        for v in a.variants:
            rmse, ll, rh, wall, dy, lam, rmed, ess = one(
                name, a.split, v, learn_prior=bool(a.learn_prior), warmup=a.warmup, samples=a.samples,
                chains=a.chains, seed=a.seed, delta=a.delta, steps=a.steps, leapfrog=a.leapfrog)
            ratio = f"{rmse / ref['ensemble'][0]:8.3f}" if "ensemble" in ref else f"{'':>8}"
            print(f"{name:>10} {v:>11} {rmse:8.4g} {ll:8.3f} {rh:10.3f} {wall:8.1f} {dy:9.3g} {ratio} {rmed:9.3f} "
                  f"{ess:10.1f} {ess / wall:7.2f}  {lam}  (load {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
