"""What `gibbs.run(net, X, y)` gives a user who sets nothing (design note 60).

The net is ``bb.MLP([d, 50, 1])`` — every library default: ReLU units, fan-in prior, Gaussian
likelihood, ``Δ`` at its default — on Gal split ``--split`` of each shared UCI set, standardised
as the protocol does (``--raw``: the data as loaded, unstandardised). Arms:

``v0``
    The defaults before design note 60, spelled out: ``num_samples=1000`` (required then),
    ``num_warmup=0``, ``num_chains=1``, ``learn_noise=False`` (``Δ_y`` fixed at the MLP's
    default ``1e-3``).
``defaults``
    ``gibbs.run(net, X, y, seed=…, progress=False)`` and nothing else: whatever the library's
    defaults are when the script runs.
``emulated``
    Note 60's defaults spelled out (``num_samples=1000``, ``num_warmup=1000``, ``num_chains=4``,
    ``learn_noise=True``), to measure them on code that predates them.
``hidden_rule``
    The defaults with the hidden noise set from the MAP starts' noise level instead of the MLP's
    ``1e-3``: :class:`blockbayes.gibbs.presets.GoldPreset` with ``moves="auto"`` (4 chains from
    joint MAP fits, ``Δ_Z = Δ_X = clip(0.02 · median Δ̂_y, 1e-6, 1e-3)``, 1000 + 1000 sweeps) — a
    candidate default for nets whose hidden ``Δ`` the caller did not set.

Reported in original units: test RMSE, mean test log-likelihood, max and median R-hat of the 32
probe outputs, the smallest bulk ESS of the probe outputs, wall-clock seconds (MAP fits
included), the chains and sweeps that ran, whether ``moves="auto"`` added the joint HMC move, and
with ``--reference`` the evaluate runner's ``ensemble`` cell on the same split and each arm's
RMSE ratio to it.

    PYTHONPATH=$PWD BLOCKBAYES_UCI_ROOT=../shared/data/uci OMP_NUM_THREADS=1 \
        python benchmarks/gibbs_defaults.py --datasets yacht energy boston concrete wine --arms v0 defaults --reference
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
from blockbayes.gibbs.diagnostics import ConvergenceWarning

ARMS = {
    "v0": dict(num_samples=1000, num_warmup=0, num_chains=1, learn_noise=False),
    "defaults": dict(),
    "emulated": dict(num_samples=1000, num_warmup=1000, num_chains=4, learn_noise=True),
    "hidden_rule": None,
    "no_prefit": dict(),      # the defaults with the joint MAP starts' fixed-noise pre-fit off (before note 63)
}


def one(name, split, arm, *, seed, raw):
    """One arm on one split; returns a dict of the table's columns."""
    data = bb.datasets.uci(name, split, standardize=not raw)
    Xtr, ytr, Xte, yte = data[:4]
    net = bb.MLP([Xtr.shape[1], 50, 1])
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if arm == "hidden_rule":
            r = gibbs.presets.GoldPreset(moves="auto").run(net, Xtr, ytr, seed=seed)
        elif arm == "no_prefit":
            from blockbayes.gibbs import starts as _starts

            saved, _starts.JOINT_PREFIT_ITER = _starts.JOINT_PREFIT_ITER, 0
            try:
                r = gibbs.run(net, Xtr, ytr, seed=seed, progress=False)
            finally:
                _starts.JOINT_PREFIT_ITER = saved
        else:
            r = gibbs.run(net, Xtr, ytr, seed=seed, progress=False, **ARMS[arm])
    wall = time.perf_counter() - t0
    hidden = float(r.net.delta_z[0])
    m, _ = r.predict(Xte)
    scale = float(data.y_std)
    rmse = float(np.sqrt(np.mean((np.asarray(m)[:, 0] - np.asarray(yte).reshape(-1)) ** 2))) * scale
    ll = float(r.log_predictive_density(Xte, yte)) - math.log(scale)
    st = r.summary().function_stats()
    C, S = np.asarray(r.weights[0]).shape[:2]
    cfg = r.config
    moved = (cfg.get("moves_auto") or {}).get("chosen", "?")
    return dict(rmse=rmse, ll=ll, max_rhat=r.summary().max_rhat, med_rhat=st["median_rhat"], min_ess=st["min_ess"],
                wall=wall, hidden=hidden, runs=f"{C}x({cfg.get('num_warmup', '?')}+{S})",
                noise="learned" if cfg.get("learn_noise") else "fixed", move=moved)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["yacht", "energy", "boston", "concrete", "wine"])
    ap.add_argument("--arms", nargs="+", default=["v0", "defaults"], choices=list(ARMS))
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--raw", action="store_true", help="unstandardised data (as loaded)")
    ap.add_argument("--reference", action="store_true", help="also run the runner's ensemble cell (standardised)")
    a = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(__file__))
    from gibbs_user_path import reference

    print(f"gibbs.run(bb.MLP([d, 50, 1]), X, y, ...) on split {a.split}, {'raw' if a.raw else 'standardised'} data, "
          f"seed {a.seed}; load avg (1 min) {os.getloadavg()[0]:.2f}")
    print(f"{'dataset':>10} {'arm':>9} {'RMSE':>9} {'test LL':>8} {'max R̂(f)':>9} {'med R̂(f)':>9} {'min ESS':>8} "
          f"{'wall s':>7} {'RMSE/ens':>8} {'chains x (warm-up + kept)':>26} {'Δ_y':>8} {'move':>13} {'Δ_Z=Δ_X':>8}")
    for name in a.datasets:
        ref = reference(name, a.split, a.seed)["ensemble"] if a.reference else None
        if ref is not None:
            print(f"{name:>10} {'ensemble':>9} {ref[0]:9.4g} {ref[1]:8.3f} {'':>9} {'':>9} {'':>8} {ref[2]:7.1f}  "
                  f"(runner cell; load {os.getloadavg()[0]:.2f})", flush=True)
        for arm in a.arms:
            o = one(name, a.split, arm, seed=a.seed, raw=a.raw)
            ratio = f"{o['rmse'] / ref[0]:8.3f}" if ref is not None else f"{'':>8}"
            print(f"{name:>10} {arm:>9} {o['rmse']:9.4g} {o['ll']:8.3f} {o['max_rhat']:9.3f} {o['med_rhat']:9.3f} "
                  f"{o['min_ess']:8.1f} {o['wall']:7.1f} {ratio} {o['runs']:>26} {o['noise']:>8} {o['move']:>13} "
                  f"{o['hidden']:8.2g}  "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)


if __name__ == "__main__":
    main()
