"""Choose the predictive noise of the smoothing-continuation MAP and ensemble on Gal's *inner validation
splits* only (``bb.datasets.uci(name, split, validation=True)``: the training split cut into fit and
validation parts; the test split is never read).

Fits (one per split, the settings of the runner methods ``map_joint_smooth`` / ``ensemble_joint_smooth``):
50 ReLU units, fan-in prior, joint noise under ``1/Δ_y ~ Gamma(1, 1e-2)``, the continuation
β = 8, 32, 128, 512 (≤ 5000 L-BFGS iterations each, ``max|∇E_β/n| ≤ 1e-6``), then the ReLU fit to
``max|∇E/n| ≤ 1e-6`` / no decrease / 20000 iterations; MAP = best objective of 3 starts, ensemble = 5
members; runner seed 0. The weights are the same for every candidate noise; only the predictive ``Δ_y``
differs:

* ``joint``    — each fit's own ``Δ̂_y``;
* ``holdout``  — the held-out MSE of one smooth joint fit on 90 % (``point_fit.joint_holdout_noise``,
  the same continuation; every member the same ``Δ_y``);
* ``evidence`` — one MacKay update at each fit's weights (``laplace.evidence_noise``).

Rule fixed before the run: for the MAP and for the ensemble separately, the candidate with the highest
mean validation log-likelihood over Yacht and Energy inner splits 0–2 (ties within 0.01 nats go to the
cheaper one: joint, then evidence, then holdout). RMSE does not depend on the choice.

``--plain`` (session 17): the same candidates for the fits *without* the continuation — the settings of
``map_joint`` (best objective of 3 starts) and ``ensemble_joint`` (5 members) — and the pilot of
``holdout`` without it too. Rule fixed before that run (design note 55): the candidate with the highest
mean validation LL over the inner splits 0–2 of Yacht, Energy, Boston, Concrete and Wine (the noisy sets
are where the joint noise overfits), same tie-break.

Usage::

    PYTHONPATH=$PWD python benchmarks/map_smoothing_validation.py run [--plain] OUT.jsonl yacht:0 energy:1 ...
    PYTHONPATH=$PWD python benchmarks/map_smoothing_validation.py table OUT.jsonl
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

import blockbayes as bb
from blockbayes import point_fit
from blockbayes.laplace import evidence_noise
from blockbayes.model import MLP
from blockbayes.point import EnsemblePosterior, PointPosterior

SMOOTH = dict(smoothing=(8.0, 32.0, 128.0, 512.0), smoothing_iter=5000, smoothing_tol=1e-6)
COMMON = dict(noise="joint", max_iter=20000, tol=1e-6, ftol=0.0, noise_prior=(1.0, 1e-2))
CANDIDATES = ("joint", "holdout", "evidence")


def _metrics(post, ds):
    mean, _ = post.predict(ds.X_test)
    F = np.asarray(mean).reshape(-1)
    rmse = float(np.sqrt(np.mean((F - ds.y_test) ** 2)) * ds.y_std)
    ll = float(post.log_predictive_density(ds.X_test, ds.y_test)) - float(np.log(ds.y_std))
    return rmse, ll


def run(out_path, jobs, plain=False):
    smooth = {} if plain else SMOOTH
    out = open(out_path, "a")
    for job in jobs:
        name, split = job.split(":")
        ds = bb.datasets.uci(name, int(split), validation=True)
        X, y = ds.X_train, ds.y_train
        seed = point_fit.derived_seed(0, 0)      # a fixed integer seed (as the runner derives one)
        net = MLP([X.shape[1], 50, 1], "relu", likelihood="gaussian", prior_prec="fan_in", delta={"y": 0.1})
        t0 = time.process_time()
        pilot = point_fit.joint_holdout_noise(net, X, y, seed=seed, holdout=0.1, max_iter=20000, tol=1e-6, ftol=0.0,
                                              **smooth)
        t_pilot = time.process_time() - t0
        t0 = time.process_time()
        p = point_fit.map_posterior(net, X, y, seed=seed, restarts=3, **COMMON, **smooth)
        t_map = time.process_time() - t0
        t0 = time.process_time()
        e = point_fit.ensemble_posterior(net, X, y, seed=seed, members=5, **COMMON, **smooth)
        t_ens = time.process_time() - t0
        t0 = time.process_time()
        ev_map = evidence_noise(net, p.weights, X, y, delta_y=p.delta_y)
        ev_ens = [evidence_noise(net, tuple(W[k] for W in e.weights), X, y, delta_y=float(e.delta_y[k]))
                  for k in range(5)]
        t_ev = time.process_time() - t0
        dys = {"map": {"joint": float(p.delta_y), "holdout": pilot["delta_y"], "evidence": ev_map["delta_y"]},
               "ens": {"joint": [float(v) for v in e.delta_y], "holdout": [pilot["delta_y"]] * 5,
                       "evidence": [r["delta_y"] for r in ev_ens]}}
        rec = dict(ds=name, split=int(split), plain=bool(plain), n=int(X.shape[0]), cpu_s=dict(pilot=t_pilot, map=t_map, ens=t_ens, evidence=t_ev),
                   pilot_dy_joint=pilot["delta_y_joint"], gamma_map=ev_map["gamma"],
                   gamma_ens=[r["gamma"] for r in ev_ens], dy=dys, load=os.getloadavg()[0],
                   map_stages=p.config.get("map_smoothing_iters"), map_objectives=p.config.get("map_restart_objectives"),
                   ens_stages=[m.get("map_smoothing_iters") for m in e.config["members"]])
        for c in CANDIDATES:
            pm = PointPosterior(net=point_fit.with_noise(net, dys["map"][c]), weights=p.weights,
                                delta_y=dys["map"][c], likelihood="gaussian")
            em = EnsemblePosterior(net=net, weights=e.weights, delta_y=np.asarray(dys["ens"][c]), likelihood="gaussian")
            rec[f"map_{c}"] = _metrics(pm, ds)
            rec[f"ens_{c}"] = _metrics(em, ds)
        print(json.dumps(rec), file=out, flush=True)
        print(name, split, {k: [round(v, 3) for v in rec[k]] for k in rec if k.startswith(("map_", "ens_"))
                            and isinstance(rec[k], tuple)}, {k: round(v, 1) for k, v in rec["cpu_s"].items()},
              flush=True)


def table(path):
    recs = [json.loads(l) for l in open(path)]
    recs.sort(key=lambda r: (r["ds"], r["split"]))
    print("| val split | " + " | ".join(f"{w} {c}" for w in ("MAP", "ensemble") for c in CANDIDATES) + " |")
    print("|---" * (1 + 2 * len(CANDIDATES)) + "|")
    for r in recs:
        cells = [f"{r[f'{w}_{c}'][0]:.3f} / {r[f'{w}_{c}'][1]:+.2f}" for w in ("map", "ens") for c in CANDIDATES]
        print(f"| {r['ds'].capitalize()} {r['split']} | " + " | ".join(cells) + " |")
    for w in ("map", "ens"):
        means = {c: float(np.mean([r[f"{w}_{c}"][1] for r in recs])) for c in CANDIDATES}
        best = max(means.values())
        pick = next(c for c in CANDIDATES if means[c] >= best - 0.01)
        print(f"{w}: mean validation LL " + ", ".join(f"{c} {v:+.3f}" for c, v in means.items())
              + f"  (n = {len(recs)}) -> {pick}")
    for r in recs:
        print(r["ds"], r["split"], "Δ_y joint MAP %.2e holdout %.2e evidence %.2e (γ %.0f of n %d); cpu %s; stages %s"
              % (r["dy"]["map"]["joint"], r["dy"]["map"]["holdout"], r["dy"]["map"]["evidence"], r["gamma_map"],
                 r["n"], {k: round(v) for k, v in r["cpu_s"].items()}, r["map_stages"]))


if __name__ == "__main__":
    if sys.argv[1] == "run":
        rest = sys.argv[2:]
        plain = "--plain" in rest
        rest = [a for a in rest if a != "--plain"]
        run(rest[0], rest[1:], plain=plain)
    elif sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        raise SystemExit(__doc__)
