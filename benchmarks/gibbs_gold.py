"""Issue 15's gold-standard figure: Gibbs against NUTS on Yacht, Energy, Boston, Concrete (Gal splits).

The figure: on each split, Gibbs test LL within 0.1 nats of NUTS's and RMSE within 15%, at a
wall-clock below NUTS's (100–210 s per split in the issue). One row per (set, split): our test
RMSE / mean test log-likelihood (original units, the mixture predictive over every kept sample of
every chain, noise-free network, per-sample Δ_y), the NUTS reference, the RMSE ratio, ΔLL, met or
short, our wall-clock (MAP fits + sweeps, as ``result.config["wall_time_s"]``) and the process's
CPU time over the same span (one BLAS/OpenMP thread: what the wall-clock would be on an idle
core; the shared machine's load inflates the wall-clock, not the CPU time), the max
function-space R-hat over the 32 default probes, the mean learned Δ_y (original units), the move's
acceptance and the 1-min load average.

Model: 50 ReLU units, fan-in prior precisions, ``learn_noise=True`` (Gamma(1, 1e-2) on 1/Δ_y, as the
NUTS reference), ``Δ_Z = Δ_X = --delta``; chains from their own joint (weights, Δ_y) MAP fits
(``init="map"``); optional non-centred MALA move (``--steps`` > 0, :class:`NonCentredMove`).
``--inner`` scores on an inner validation split of the training rows instead (the last
``--inner`` fraction of a fixed permutation, seed 12345), to choose settings without looking at the
test split; NUTS columns are then blank.

``--preset gold_hmc``: the gold recipe with :class:`~blockbayes.gibbs.hmc.JointHMCMove` (joint
non-centred HMC on all weight matrices, dense Gauss–Newton mass) after every sweep
(``--leapfrog``, ``--trajectories``, ``--prior-mass``, ``--explore-leapfrog`` override its defaults); the ``acc``
column is then its mean ``min(1, α)`` after warm-up.

NUTS references (4 chains, NumPyro, same model): the issue-15 table (Boston 0–2, Concrete 0,
Yacht 0–2, Energy 0) and, for Energy 1–2, one 4 × (1000 + 1000) run each (design note 48; until
session 13 the library's 4 × (100 + 100) NUTS cells of docs/uci_reference.md stood in). Concrete 1–2 have no issue-table NUTS reference; the library's ``hmc`` cells stand in.

``--start-from-npz PATH`` (with ``--preset gold`` / ``gold_hmc``): start chain ``c`` from draw
``--draw`` (default the last) of chain ``c`` of a NUTS run saved by ``benchmarks/nuts_reference_spread.py
run --save-weights`` (``W0, W1, …`` of shape ``(chains, draws, d_out, d_in + 1)``, ``delta_y``
``(chains, draws)``, the runner's standardised units) instead of the MAP fits, through
``GoldPreset.run(start=(weights, delta_y))``: the draws' ``Δ_y`` take the MAP ``Δ̂_y``'s role (the
rule sets ``Δ_Z = Δ_X`` from their median, the chains start at their mean); everything else is the
preset's. The file must be of the same set and split, with ``--chains`` chains. ``--trace`` adds,
from the kept draws' test predictions, the per-chain test RMSE of each chain's mean (and the NUTS
file's, and of its start draws), the RMSE / LL of the running mixture after the first ``k`` kept
sweeps, and R-hat / bulk ESS of the test predictions (``reference.prediction_diagnostics``, as the
NUTS runs report them).

Start and warm-up arms of session 14 (docs/gibbs-moves.md §6, all measured and not adopted):
``--map-smoothing B1 B2 …`` (``GoldPreset(map_smoothing=…)``: each MAP start through the softplus
continuation, ``--map-smoothing-iter`` iterations per stage); ``--anneal START FRACTION`` (the hidden
``Δ_Z = Δ_X`` annealed in warm-up, ``AnnealedDelta(START, FRACTION)``); ``--temper-output START SWEEPS``
(:func:`tempered_start`: the preset's run from states after SWEEPS tempered-likelihood sweeps of its own
MAP fits); ``--adam-starts EPOCHS`` (:func:`adam_start`: chains from minibatch-Adam fits at the MAP fits'
``Δ̂_y``; a test-split diagnostic only). Session 15: ``--start-prior-scale S`` (:func:`prior_scaled_start`:
chains from joint MAP fits under the prior precisions × S, sampled under the unchanged prior).

``--reference PATH``: also score every cell against the NUTS reference pooled over several
independent runs (the JSON written by ``benchmarks/nuts_reference_spread.py report --json``; its
``"dataset/split"`` entries' ``"pooled"`` RMSE / LL); the table above stays the first reading and
is printed beside it (``pool``, ``p.ratio``, ``p.ΔLL``, ``p.met`` columns; blank where the file has
no entry for the cell).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 nice -n 19 python benchmarks/gibbs_gold.py \\
        --datasets yacht energy boston concrete --splits 0 1 2
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings

import numpy as np

import blockbayes as bb
from blockbayes import gibbs
from blockbayes.gibbs.diagnostics import ConvergenceWarning
from blockbayes.gibbs import starts as _starts
from blockbayes.gibbs.moves import NonCentredMove
from blockbayes.gibbs.hmc import JointHMCMove
from blockbayes.gibbs.anneal import AnnealedDelta
from blockbayes._backend import random as bbr
from blockbayes.gibbs.moves import ComposedMove
from blockbayes.gibbs.redraw import UnitRedrawMove

# (RMSE, LL, source); NUTS on the standard BNN, fan-in priors, Gamma(1, 1e-2) noise hyperprior
NUTS = {
    ("boston", 0): (2.35, -2.30, "issue"), ("boston", 1): (2.57, -2.37, "issue"),
    ("boston", 2): (2.30, -2.30, "issue"), ("concrete", 0): (5.29, -3.06, "issue"),
    ("yacht", 0): (0.24, 0.03, "issue"), ("yacht", 1): (0.22, -0.03, "issue"),
    ("yacht", 2): (0.20, -0.00, "issue"), ("energy", 0): (0.22, 0.09, "issue"),
    # no issue entry: one 4 x (1000 + 1000) NUTS run each (design note 48; lead, session 13,
    # nuts_reference_spread.py run --num-warmup 1000 --num-samples 1000, docs/gibbs-moves.md §6); until
    # session 13 the library's 4 x (100 + 100) cells stood in (0.445 / -0.985, 0.282 / -0.144)
    ("energy", 1): (0.444, -1.131, "nuts 1000+1000"), ("energy", 2): (0.217, 0.105, "nuts 1000+1000"),
    # the library's `hmc` method at its defaults (4 chains x (100 + 100)), session 9:
    # uci_table.py --methods hmc --datasets concrete --splits 3 --only-splits 1,2
    ("concrete", 1): (4.973, -3.012, "lib hmc"), ("concrete", 2): (4.828, -2.977, "lib hmc"),
}
RMSE_TOL, LL_TOL = 1.15, 0.1


def load_reference(path):
    """``{(dataset, split): (RMSE, LL, "pooled k runs")}`` from a nuts_reference_spread.py JSON."""
    with open(path) as f:
        raw = json.load(f)
    out = {}
    for key, v in raw.items():
        if key.startswith("_"):          # "_budgets": runs at other budgets, not the pooled reference
            continue
        ds, sp = key.split("/")
        out[(ds, int(sp))] = (float(v["pooled"][0]), float(v["pooled"][1]), f"pooled {v['runs']} runs")
    return out


def figure(rmse, ll, ref):
    """(ratio, ΔLL, met) of one cell against one reference ``(RMSE, LL, ...)``."""
    ratio, dll = rmse / ref[0], ll - ref[1]
    return ratio, dll, bool(ratio <= RMSE_TOL and dll >= -LL_TOL)

_MAP_TIME = [0.0]
_MAP_ITERS = [0]       # 0: map_starts' own default (JOINT_MAX_ITER)
_map_starts = _starts.map_starts


def _timed_map_starts(*args, **kw):
    """``map_starts`` with its wall-clock recorded (the sampler imports it at call time)."""
    t0 = time.perf_counter()
    if _MAP_ITERS[0]:
        kw["max_iter"] = _MAP_ITERS[0]
    try:
        return _map_starts(*args, **kw)
    finally:
        _MAP_TIME[0] += time.perf_counter() - t0


_starts.map_starts = _timed_map_starts


def inner_split(Xtr, ytr, frac, seed=12345):
    """Hold out the last ``frac`` of a fixed permutation of the training rows."""
    n = Xtr.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(frac * n)))
    tr, va = perm[:-k], perm[-k:]
    return Xtr[tr], ytr[tr], Xtr[va], ytr[va]


def npz_start(path, name, split, chains, draw=-1):
    """``(weights, delta_y)`` of draw ``draw`` of every chain of a saved NUTS run (``nuts_reference_spread.py
    run --save-weights``): per layer ``W<l>[:, draw]`` of shape ``(chains, d_out, d_in + 1)``, and
    ``delta_y[:, draw]`` of shape ``(chains,)``; the file must be of ``name`` / ``split`` with ``chains`` chains."""
    z = np.load(path)
    if "W0" not in z.files:
        raise ValueError(f"{path} holds no weights (run nuts_reference_spread.py with --save-weights)")
    ds, sp = str(z["dataset"]), int(z["split"])
    if bb.datasets.uci_info(ds).name != bb.datasets.uci_info(name).name or sp != split:
        raise ValueError(f"{path} is {ds} split {sp}, not {name} split {split}")
    L = sum(1 for k in z.files if k.startswith("W") and k[1:].isdigit())
    weights = tuple(np.asarray(z[f"W{l}"], dtype=np.float64)[:, draw] for l in range(L))
    dy = np.asarray(z["delta_y"], dtype=np.float64)[:, draw]
    if weights[0].shape[0] != chains:
        raise ValueError(f"{path} has {weights[0].shape[0]} chains, the run {chains}")
    return weights, dy


TRACE_AT = (1, 10, 50, 100, 250, 500, 1000)


def trace(net, weights, delta_y, Xte, yte, y_std, start_npz=None, draw=-1):
    """Test-set diagnostics of the kept draws (original units): per-chain RMSE of each chain's mean
    prediction, RMSE / LL of the running mixture over the first ``k`` kept sweeps of every chain
    (``k`` in :data:`TRACE_AT`), R-hat / bulk ESS of the test predictions; with ``start_npz``, the
    NUTS file's per-chain RMSE (chain means) and its start draws' RMSE."""
    from blockbayes.evaluate import reference

    W = tuple(np.asarray(w, dtype=np.float64) for w in weights)
    F = reference.forward_samples(net, W, Xte)[..., 0]                        # (C, S, n)
    dy = np.asarray(delta_y, dtype=np.float64)                                # (C, S)
    y = np.asarray(yte, dtype=np.float64).reshape(-1)
    rm = lambda m: float(np.sqrt(np.mean((m - y) ** 2))) * y_std              # noqa: E731
    out = dict(chain_rmse=[rm(F[c].mean(axis=0)) for c in range(F.shape[0])],
               first_draw_rmse=[rm(F[c, 0]) for c in range(F.shape[0])], running=[])
    for k in TRACE_AT:
        if k > F.shape[1]:
            break
        pp = reference.pooled_predictive([F[:, :k]], [dy[:, :k]], y)
        out["running"].append((k, rm(pp.mean), float(np.mean(pp.lpd)) - math.log(y_std)))
    out.update(reference.prediction_diagnostics(F))
    if start_npz:
        z = np.load(start_npz)
        out["nuts_chain_rmse"] = [float(np.sqrt(np.mean((m - y * y_std) ** 2))) for m in z["chain_means"]]
        out["nuts_start_rmse"] = [rm(z["F"][c, draw]) for c in range(z["F"].shape[0])]
    return out


def one(name, split, *, chains, warmup, samples, delta, steps, seed, inner, learn_prior=False, preset=None,
        ratio=None, hmc=None, redraw=0, map_fits=None, floor=None, start_npz=None, draw=-1, want_trace=False,
        map_smoothing=None, map_smoothing_iter=5000, anneal=None, temper=None, adam_epochs=0,
        prior_scale=None):
    if (temper or adam_epochs or prior_scale) and (start_npz or map_fits or map_smoothing or preset != "gold_hmc"
                                                   or sum(map(bool, (temper, adam_epochs, prior_scale))) > 1):
        raise ValueError("--temper-output / --adam-starts / --start-prior-scale need --preset gold_hmc and make "
                         "their own starts: not with each other, --start-from-npz, --map-fits or --map-smoothing")
    data = bb.datasets.uci(name, split)
    Xtr, ytr, Xte, yte = (np.asarray(a) for a in data[:4])
    if inner:
        if start_npz:
            raise ValueError("--start-from-npz starts from draws fitted to the whole training split; not with --inner")
        Xtr, ytr, Xte, yte = inner_split(Xtr, ytr, inner)
    start = None
    if start_npz:
        if preset not in ("gold", "gold_hmc"):
            raise ValueError("--start-from-npz needs --preset gold or gold_hmc")
        start = npz_start(start_npz, name, split, chains, draw)
    net = bb.MLP([Xtr.shape[1], 50, 1], "relu", prior_prec="fan_in", delta={"Z": delta, "X": delta, "y": 0.1})
    moves = NonCentredMove(steps=steps) if steps > 0 else None
    if preset == "gold_hmc":
        moves = JointHMCMove(**(hmc or {}))
        if redraw:
            moves = ComposedMove((moves, UnitRedrawMove(proposals=redraw)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _MAP_TIME[0] = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        if preset in ("gold", "gold_hmc"):
            p = gibbs.presets.gold(num_chains=chains, num_warmup=warmup, num_samples=samples, moves=moves,
                                   map_max_iter=_MAP_ITERS[0] or None, map_fits=map_fits,
                                   map_smoothing=tuple(map_smoothing) if map_smoothing else None,
                                   map_smoothing_iter=map_smoothing_iter,
                                   **({} if ratio is None else {"ratio": ratio}),
                                   **({} if floor is None else {"floor": floor}))
            ratio = p.ratio
            if adam_epochs:
                start = adam_start(net, Xtr, ytr, seed=seed, chains=chains, epochs=adam_epochs)
            if prior_scale:
                start = prior_scaled_start(net, Xtr, ytr, seed=seed, chains=chains, scale=prior_scale)
            if temper:
                start = tempered_start(net, Xtr, ytr, seed=seed, chains=chains, temper=temper, hmc=hmc)
            sched = {} if not anneal else {"schedule": AnnealedDelta(start=anneal[0], fraction=anneal[1])}
            r = p.run(net, Xtr, ytr, seed=seed, learn_prior=learn_prior, start=start, **sched)
            delta = r.config["preset"]["hidden_delta"]
        else:
            r = gibbs.run(net, Xtr, ytr, num_samples=samples, num_warmup=warmup, num_chains=chains, seed=seed,
                          init="map", learn_noise=True, learn_prior=learn_prior, moves=moves, progress=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    m, _ = r.predict(Xte)
    rmse = float(np.sqrt(np.mean((np.asarray(m)[:, 0] - yte.reshape(-1)) ** 2))) * data.y_std
    ll = float(r.log_predictive_density(Xte, yte)) - math.log(data.y_std)
    tr = trace(r.net, r.weights, r.delta_y, Xte, yte, float(data.y_std), start_npz, draw) if want_trace else None
    mcfg = r.config.get("moves")
    acc = mcfg.get("accept") if isinstance(mcfg, dict) else None
    if isinstance(mcfg, dict) and mcfg.get("move") == "composed":
        acc = mcfg["components"][0].get("accept")        # the HMC move's; the redraw's stays in "move"
    return dict(dataset=name, split=split, preset=preset, ratio=ratio if preset else None, rmse=rmse, ll=ll, wall_s=wall, cpu_s=cpu, map_s=(r.config.get("preset") or {}).get("map_time_s", _MAP_TIME[0]), rhat_f=float(r.summary().max_rhat),
                delta_y=float(np.mean(np.asarray(r.delta_y))) * data.y_std ** 2, accept=acc, move=mcfg,
                chains=chains, warmup=warmup, samples=samples, delta=delta, steps=steps, seed=seed,
                inner=inner, load=os.getloadavg()[0], map_fits=map_fits,
                chosen_fits=(r.config.get("preset") or {}).get("chosen_fits"),
                map_objectives=(r.config.get("preset") or {}).get("map_objectives"),
                start_npz=start_npz, draw=draw if start_npz else None,
                map_smoothing=list(map_smoothing) if map_smoothing else None,
                map_smoothing_iter=map_smoothing_iter if map_smoothing else None,
                anneal=list(anneal) if anneal else None, temper=list(temper) if temper else None,
                adam_epochs=adam_epochs or None, prior_scale=prior_scale,
                start_delta_y=None if start is None else [float(v) for v in start[1]], trace=tr)


def _preset_fits(net, X, y, *, seed, chains):
    """``(X, y, weights, Δ̂_y)``: the data as the preset prepares them and the joint MAP fits
    ``GoldPreset.run`` would start from at ``seed`` (its key ``split(split(key(seed), 2)[0], 2)[0]``)."""
    Xp, yp = bb.inputs.prepare(net, X, y, num_chains=chains)
    k_map = bbr.split(bbr.split(bbr.key(seed), 2)[0], 2)[0]
    w, dy, _ = _starts.map_starts(k_map, net, Xp, yp, num_chains=chains, kind="map",
                                  max_iter=_MAP_ITERS[0] or None, learn_noise=True, noise_prior=(1.0, 1e-2))
    return Xp, yp, w, dy


def tempered_start(net, X, y, *, seed, chains, temper, hmc=None):
    """Starts of the tempered-output arm (``--temper-output START SWEEPS``), for ``GoldPreset.run(start=)``.

    The preset's own joint MAP fits (the key ``GoldPreset.run`` derives from ``seed``), then ``SWEEPS``
    sweeps of ``gibbs.run`` with the joint HMC move at a *fixed* ``Δ_y`` annealed geometrically from
    ``START`` (standardised units) to the fits' mean ``Δ̂_y`` over the first 80 % of them
    (``AnnealedDelta(START, 0.8, output=True)``, ``learn_noise=False``; the hidden ``Δ_Z = Δ_X`` fall
    with it to the preset's rule), the move's mass averaged from 80 % on. Its last states and the fits'
    ``Δ̂_y`` are returned, so the main run is the preset's from these weights (rule, ``Δ_y`` start and
    sampler stream as from its MAP fits). A tempered likelihood lets the chains cross between basins
    the MAP fits pin them in; the kept samples come only from the main run, which is the exact sampler.
    """
    T0, sweeps = float(temper[0]), int(temper[1])
    Xp, yp, w, dy = _preset_fits(net, X, y, seed=seed, chains=chains)
    d = gibbs.presets.hidden_delta(dy)
    net1 = net.replace(delta={"Z": d, "X": d, "y": float(np.mean(np.asarray(dy)))})
    r1 = gibbs.run(net1, Xp, yp, num_samples=1, num_warmup=sweeps, num_chains=chains, seed=seed + 10_000,
                   init=w, learn_noise=False, schedule=AnnealedDelta(start=T0, fraction=0.8, output=True),
                   moves=JointHMCMove(**{**(hmc or {}), "average_from": 0.8}), progress=False)
    return tuple(np.asarray(W) for W in r1.final_state.weights), np.asarray(dy)


def prior_scaled_start(net, X, y, *, seed, chains, scale):
    """Starts of the weak-prior arm (``--start-prior-scale S``), for ``GoldPreset.run(start=)``.

    The preset's own joint MAP fits give ``Δ̂_y`` (so the hidden-noise rule and the ``Δ_y`` start are
    the preset's); the weights are joint MAP fits of the same standard net with every prior precision
    multiplied by ``S`` (key ``seed + 30000``). NUTS's draws sit at larger weights than the fan-in
    MAP fits (½Σλw² 400–470 against 260–295 on Energy, design note 51) and fit the training rows
    better; a weaker prior lands the starts nearer those basins. The chains then sample the posterior
    of the unchanged prior: only the starts change.
    """
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"--start-prior-scale must be a positive finite number, got {scale!r}")
    Xp, yp, _, dy = _preset_fits(net, X, y, seed=seed, chains=chains)
    weak = net.replace(prior_prec=[(lw * scale, lb * scale) for lw, lb in zip(net.lam_w, net.lam_b)])
    w, _, _ = _starts.map_starts(bbr.key(seed + 30_000), weak, Xp, yp, num_chains=chains, kind="map",
                                 max_iter=_MAP_ITERS[0] or None, learn_noise=True, noise_prior=(1.0, 1e-2))
    return tuple(np.asarray(W) for W in w), np.asarray(dy)


def adam_start(net, X, y, *, seed, chains, epochs, batch_size=32, lr=1e-2):
    """Starts of the minibatch-Adam arm (``--adam-starts EPOCHS``), for ``GoldPreset.run(start=)``.

    The preset's own joint MAP fits (the key ``GoldPreset.run`` derives from ``seed``) give ``Δ̂_y``
    (so the rule and the ``Δ_y`` start are the preset's); the weights are ``chains`` fits of the
    standard net at the fixed ``Δ_y = mean Δ̂_y`` by plain minibatch Adam (``laplace.map_fit(method="adam",
    batch_size=32, lr=1e-2)``, ``EPOCHS`` epochs, no decay) from fresh inits (key ``seed + 20000``):
    minibatch noise ends in different, typically wider basins than full-batch L-BFGS.
    """
    from blockbayes import laplace

    Xp, yp, _, dy = _preset_fits(net, X, y, seed=seed, chains=chains)
    dyv = float(np.mean(np.asarray(dy)))
    fits = [laplace.map_fit(net, Xp, yp, method="adam", seed=k, delta_y=dyv, num_epochs=int(epochs),
                            batch_size=batch_size, lr=lr, progress=False)
            for k in bbr.split(bbr.key(seed + 20_000), chains)]
    return tuple(np.stack([np.asarray(f[l]) for f in fits]) for l in range(net.num_layers)), np.asarray(dy)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["yacht", "energy", "boston", "concrete"])
    ap.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--delta", type=float, default=1e-5, help="Δ_Z = Δ_X")
    ap.add_argument("--steps", type=int, default=0, help="NC-MALA steps per sweep (0: no move)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--inner", type=float, default=0.0, help="score on this fraction of the training rows instead")
    ap.add_argument("--map-iters", type=int, default=0, help="L-BFGS iterations per MAP start (0: default)")
    ap.add_argument("--preset", choices=["gold", "gold_hmc"], default=None,
                    help="gibbs.presets.gold(): Δ_Z = Δ_X from the MAP noise (--delta ignored); gold_hmc: the "
                         "same with the joint non-centred HMC move (JointHMCMove) after every sweep")
    ap.add_argument("--leapfrog", type=int, default=None, help="gold_hmc: leapfrog steps per trajectory")
    ap.add_argument("--trajectories", type=int, default=None, help="gold_hmc: trajectories per sweep")
    ap.add_argument("--prior-mass", type=float, default=None, help="gold_hmc: s in the mass s·Λ + GN")
    ap.add_argument("--average-from", type=float, default=None,
                    help="gold_hmc: warm-up fraction after which the mass is the averaged GN (1: single-state)")
    ap.add_argument("--terminal", type=float, default=None, help="gold_hmc: terminal step-size-only warm-up fraction")
    ap.add_argument("--explore-leapfrog", type=int, default=None, metavar="K",
                    help="gold_hmc: leapfrog steps of the warm-up sweeps before the terminal window "
                         "(JointHMCMove.explore_leapfrog; kept sweeps keep --leapfrog)")
    ap.add_argument("--redraw", type=int, default=0,
                    help="gold_hmc: also UnitRedrawMove(proposals=R) after the HMC move (ComposedMove); 0: none")
    ap.add_argument("--map-fits", type=int, default=None,
                    help="--preset gold/gold_hmc: start the chains from the best --chains of this many MAP fits "
                         "(lowest MAP objective; default: one fit per chain)")
    ap.add_argument("--ratio", type=float, default=None,
                    help="--preset gold: Δ_Z = Δ_X = ratio × median Δ̂_y (default: the preset's)")
    ap.add_argument("--floor", type=float, default=None,
                    help="--preset gold: the hidden-noise rule's floor (default: the preset's)")
    ap.add_argument("--start-from-npz", default=None, metavar="PATH",
                    help="--preset gold/gold_hmc: start chain c from draw --draw of chain c of this saved NUTS run "
                         "(nuts_reference_spread.py run --save-weights) instead of the MAP fits; one set/split")
    ap.add_argument("--map-smoothing", type=float, nargs="+", default=None, metavar="BETA",
                    help="--preset gold/gold_hmc: a softplus smoothing continuation before each MAP start "
                         "(GoldPreset.map_smoothing, e.g. 8 32 128 512)")
    ap.add_argument("--map-smoothing-iter", type=int, default=5000,
                    help="--map-smoothing: L-BFGS iterations per stage")
    ap.add_argument("--anneal", type=float, nargs=2, default=None, metavar=("START", "FRACTION"),
                    help="--preset gold/gold_hmc: AnnealedDelta(start, fraction) warm-up of the hidden Δ_Z = Δ_X "
                         "(standardised units) down to the rule's Δ (Δ_y is learned, so it is not annealed)")
    ap.add_argument("--temper-output", type=float, nargs=2, default=None, metavar=("START", "SWEEPS"),
                    help="--preset gold_hmc: before the preset's run, SWEEPS sweeps from its MAP fits at a fixed Δ_y "
                         "annealed from START (standardised) to the fits' Δ̂_y (tempered_start); the run starts there")
    ap.add_argument("--start-prior-scale", type=float, default=None, metavar="S",
                    help="--preset gold_hmc: start the chains from joint MAP fits with every prior precision × S "
                         "(prior_scaled_start); the chains sample under the unchanged prior")
    ap.add_argument("--adam-starts", type=int, default=0, metavar="EPOCHS",
                    help="--preset gold_hmc: start the chains from minibatch-Adam fits (adam_start; EPOCHS epochs) "
                         "at the MAP fits' Δ̂_y instead of the L-BFGS fits")
    ap.add_argument("--draw", type=int, default=-1, help="--start-from-npz: which draw of each chain (default last)")
    ap.add_argument("--trace", action="store_true",
                    help="print per-chain test RMSE, the running mixture's RMSE / LL and test-prediction R-hat / ESS")
    ap.add_argument("--out", default=None, help="append one JSON line per cell here")
    ap.add_argument("--reference", default=None,
                    help="also score against this pooled NUTS reference (nuts_reference_spread.py report --json); "
                         "the issue's table stays the first reading")
    a = ap.parse_args(argv)
    if a.start_from_npz and (len(a.datasets) != 1 or len(a.splits) != 1):
        ap.error("--start-from-npz is for one set and one split (--datasets D --splits S)")
    _MAP_ITERS[0] = a.map_iters
    pooled = load_reference(a.reference) if a.reference else None
    hmc = {k: v for k, v in dict(leapfrog=a.leapfrog, trajectories=a.trajectories, prior_mass=a.prior_mass,
                                     average_from=a.average_from, terminal=a.terminal,
                                     explore_leapfrog=a.explore_leapfrog).items()
           if v is not None}
    print(f"gold: 50 ReLU, fan-in λ, learn_noise, init='map' (joint MAP), Δ_Z=Δ_X={'by the preset rule' if a.preset else f'{a.delta:g}'}, "
          f"{a.chains} chains, {a.warmup}+{a.samples} sweeps, move steps {a.steps}, preset {a.preset}{f' {JointHMCMove(**hmc)}' if a.preset == 'gold_hmc' else ''}{f' + UnitRedrawMove(proposals={a.redraw})' if a.redraw else ''}{f', starts: best {a.chains} of {a.map_fits} MAP fits' if a.map_fits else ''}{f' ratio {a.ratio or gibbs.presets.GoldPreset().ratio:g}' if a.preset else ''}{f' floor {a.floor:g}' if a.floor else ''}{f', starts: NUTS draws {a.draw} of {a.start_from_npz}' if a.start_from_npz else ''}{f', MAP smoothing β={a.map_smoothing} × {a.map_smoothing_iter} its' if a.map_smoothing else ''}{f', AnnealedDelta(start={a.anneal[0]:g}, fraction={a.anneal[1]:g})' if a.anneal else ''}{f', tempered-output start (Δ_y from {a.temper_output[0]:g}, {int(a.temper_output[1])} sweeps)' if a.temper_output else ''}{f', Adam starts ({a.adam_starts} epochs)' if a.adam_starts else ''}{f', starts at prior × {a.start_prior_scale:g}' if a.start_prior_scale else ''}, seed {a.seed}, MAP its {a.map_iters or 'default'}"
          f"{f', INNER validation {a.inner:g} of train' if a.inner else ', TEST split'}; "
          f"load avg (1 min) {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{'set':>9} {'sp':>2} {'RMSE':>7} {'LL':>7} {'NUTS':>13} {'ratio':>6} {'ΔLL':>6} {'met':>5} "
          f"{'wall s':>7} {'CPU s':>6} {'MAP s':>6} {'Δ_Z=Δ_X':>8} {'R̂(f)':>6} {'Δ_y':>8} {'acc':>5} {'load':>5}"
          + (f" {'pool':>13} {'p.ratio':>7} {'p.ΔLL':>6} {'p.met':>5}" if pooled is not None else ""))
    for name in a.datasets:
        for split in a.splits:
            c = one(name, split, chains=a.chains, warmup=a.warmup, samples=a.samples, delta=a.delta,
                    steps=a.steps, seed=a.seed, inner=a.inner, preset=a.preset, ratio=a.ratio, hmc=hmc,
                    redraw=a.redraw, map_fits=a.map_fits, floor=a.floor, start_npz=a.start_from_npz, draw=a.draw,
                    want_trace=a.trace, map_smoothing=a.map_smoothing, map_smoothing_iter=a.map_smoothing_iter,
                    anneal=a.anneal, temper=a.temper_output, adam_epochs=a.adam_starts, prior_scale=a.start_prior_scale)
            ref = None if a.inner else NUTS.get((name, split))
            if ref is not None:
                ratio, dll, met = figure(c["rmse"], c["ll"], ref)
                c.update(nuts_rmse=ref[0], nuts_ll=ref[1], nuts_source=ref[2], ratio=ratio, dll=dll, met=met)
                refs = f"{ref[0]:.3g}/{ref[1]:+.2f}"
                cols = f"{ratio:6.3f} {dll:+6.2f} {'met' if met else 'SHORT':>5}"
            else:
                refs, cols = "–", f"{'':>6} {'':>6} {'':>5}"
            acc = f"{float(np.mean(c['accept'])):5.2f}" if c["accept"] is not None else f"{'':>5}"
            pcols = ""
            if pooled is not None:
                pref = None if a.inner else pooled.get((name, split))
                if pref is not None:
                    pr, pd, pm = figure(c["rmse"], c["ll"], pref)
                    c.update(pooled_rmse=pref[0], pooled_ll=pref[1], pooled_source=pref[2], pooled_ratio=pr,
                             pooled_dll=pd, pooled_met=pm)
                    pcols = f" {f'{pref[0]:.3f}/{pref[1]:+.3f}':>13} {pr:7.3f} {pd:+6.2f} {'met' if pm else 'SHORT':>5}"
                else:
                    pcols = f" {'–':>13} {'':>7} {'':>6} {'':>5}"
            print(f"{name:>9} {split:2d} {c['rmse']:7.3f} {c['ll']:+7.3f} {refs:>13} {cols} {c['wall_s']:7.1f} {c['cpu_s']:6.1f} {c['map_s']:6.1f} {c['delta']:8.2g} "
                  f"{c['rhat_f']:6.2f} {c['delta_y']:8.3g} {acc} {c['load']:5.2f}{pcols}", flush=True)
            if c["trace"] is not None:
                t = c["trace"]
                print(f"   trace: start {'NUTS ' + a.start_from_npz + f' draw {a.draw}' if a.start_from_npz else 'MAP'}"
                      + (f" (start Δ_y {', '.join(f'{v:.3g}' for v in c['start_delta_y'])} std units)"
                         if c["start_delta_y"] else ""), flush=True)
                print(f"   per-chain RMSE of chain means: {' '.join(f'{v:.3f}' for v in t['chain_rmse'])}; "
                      f"of each chain's first kept draw: {' '.join(f'{v:.3f}' for v in t['first_draw_rmse'])}")
                if "nuts_chain_rmse" in t:
                    print(f"   NUTS file: per-chain RMSE of chain means {' '.join(f'{v:.3f}' for v in t['nuts_chain_rmse'])}; "
                          f"of the start draws {' '.join(f'{v:.3f}' for v in t['nuts_start_rmse'])}")
                print("   running mixture (first k kept sweeps of every chain) k: RMSE / LL  "
                      + ", ".join(f"{k}: {r_:.3f} / {l_:+.3f}" for k, r_, l_ in t["running"]))
                print(f"   test predictions: R-hat max {t.get('rhat_pred_max', float('nan')):.3f}, median "
                      f"{t.get('rhat_pred_median', float('nan')):.3f}; bulk ESS min {t.get('ess_bulk_pred_min', float('nan')):.1f}, "
                      f"median {t.get('ess_bulk_pred_median', float('nan')):.1f}", flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(json.dumps(c, default=float) + "\n")


if __name__ == "__main__":
    main()
