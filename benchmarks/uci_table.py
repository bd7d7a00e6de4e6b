"""The UCI regression table: blockbayes methods on the Gal/PBP splits next to published numbers.

Usage::

    python benchmarks/uci_table.py --splits 1            # measure: one split per dataset and method
    nohup nice -n 19 python benchmarks/uci_table.py --splits 5 &   # a longer (resumable) run
    python benchmarks/uci_table.py --report-only          # write docs/uci.md from what is finished

Protocol (EVALUATION.md §1.1): the standard splits (20; protein 5), one hidden layer of 50 ReLU
units (protein 100), X and y standardised with training statistics, RMSE and test log-likelihood
reported in original units, mean ± standard error over splits. Every cell (method × dataset ×
split) is stored under ``--out`` (default ``results/uci``) by :func:`blockbayes.evaluate.evaluate`,
so an interrupted run resumes, and ``--splits`` can be raised later at the cost of the new splits
only. The Markdown table (``--doc``; default ``docs/uci.md`` for the default ``--out``, else ``OUT/page.md``) states exactly which splits and
settings produced each number; a partial run is never labelled as the full protocol.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import blockbayes as bb  # noqa: E402
from blockbayes import evaluate as ev  # noqa: E402

# EVALUATION.md §1.1 (Gal & Ghahramani 2016 Table 1; DropoutUncertaintyExps README; Lakshminarayanan
# et al. 2017 Table 1, NLL sign-flipped). Columns: VI, PBP, Dropout (paper), Dropout 2018, Deep Ens.
PUBLISHED_COLUMNS = ("VI", "PBP", "Dropout (paper)", "Dropout 2018", "Deep Ens.")
PUBLISHED_RMSE = {
    "bostonHousing": ("4.32±0.29", "3.01±0.18", "2.97±0.85", "2.90±0.18", "3.28±1.00"),
    "concrete": ("7.19±0.12", "5.67±0.09", "5.23±0.53", "4.82±0.16", "6.03±0.58"),
    "energy": ("2.65±0.08", "1.80±0.05", "1.66±0.19", "0.54±0.06", "2.09±0.29"),
    "kin8nm": ("0.10±0.00", "0.10±0.00", "0.10±0.00", "0.08±0.00", "0.09±0.00"),
    "naval-propulsion-plant": ("0.01±0.00", "0.01±0.00", "0.01±0.00", "0.00±0.00", "0.00±0.00"),
    "power-plant": ("4.33±0.04", "4.12±0.03", "4.02±0.18", "4.01±0.04", "4.11±0.17"),
    "protein-tertiary-structure": ("4.84±0.03", "4.73±0.01", "4.36±0.04", "4.27±0.02", "4.71±0.06"),
    "wine-quality-red": ("0.65±0.01", "0.64±0.01", "0.62±0.04", "0.62±0.01", "0.64±0.04"),
    "yacht": ("6.89±0.67", "1.02±0.05", "1.11±0.38", "0.67±0.05", "1.58±0.48"),
}
PUBLISHED_LL = {
    "bostonHousing": ("−2.90±0.07", "−2.57±0.09", "−2.46±0.25", "−2.40±0.04", "−2.41±0.25"),
    "concrete": ("−3.39±0.02", "−3.16±0.02", "−3.04±0.09", "−2.93±0.02", "−3.06±0.18"),
    "energy": ("−2.39±0.03", "−2.04±0.02", "−1.99±0.09", "−1.21±0.01", "−1.38±0.22"),
    "kin8nm": ("0.90±0.01", "0.90±0.01", "0.95±0.03", "1.14±0.01", "1.20±0.02"),
    "naval-propulsion-plant": ("3.73±0.12", "3.73±0.01", "3.80±0.05", "4.45±0.00", "5.63±0.05"),
    "power-plant": ("−2.89±0.01", "−2.84±0.01", "−2.80±0.05", "−2.80±0.01", "−2.79±0.04"),
    "protein-tertiary-structure": ("−2.99±0.01", "−2.97±0.00", "−2.89±0.01", "−2.87±0.00", "−2.83±0.02"),
    "wine-quality-red": ("−0.98±0.01", "−0.97±0.01", "−0.93±0.06", "−0.93±0.01", "−0.94±0.12"),
    "yacht": ("−3.43±0.16", "−1.63±0.02", "−1.55±0.12", "−1.25±0.01", "−1.18±0.21"),
}
SHORT = {"bostonHousing": "Boston", "concrete": "Concrete", "energy": "Energy", "kin8nm": "Kin8nm",
         "naval-propulsion-plant": "Naval", "power-plant": "Power", "protein-tertiary-structure": "Protein",
         "wine-quality-red": "Wine (red)", "yacht": "Yacht"}

# Method settings of this table (what the header reports). Gibbs and block VI run the noisy MLP
# with Δ_Z = Δ_X = 1e-3 and learned output noise; their chains start from MAP fits (Gibbs: one
# per chain — the ensemble's members —, block VI: one shared fit, since a Rao–Blackwellised
# posterior averages over its chains and must stay in one mode).
METHODS = {
    "map": {"method": "map"},
    "laplace_kfac": {"method": "laplace_kfac"},
    "laplace_diag": {"method": "laplace_diag"},
    "ensemble": {"method": "ensemble", "members": 5},
    # the strong point estimates of issue 16 (joint noise, L-BFGS to a gradient tolerance): opt-in
    "map_joint": {"method": "map_joint"},
    # the same, its starts those of ensemble_joint (one shared fit; issue 16, session 8): opt-in
    "map_joint_shared": {"method": "map_joint_shared"},
    "ensemble_joint": {"method": "ensemble_joint", "members": 5},
    # type-II noise from the Laplace evidence (MacKay; blockbayes.laplace.evidence_fit): opt-in
    "map_evidence": {"method": "map_evidence"},
    "ensemble_evidence": {"method": "ensemble_evidence", "members": 5},
    # joint noise, candidate starts selected on a 10% holdout (issue 16, session 6): opt-in
    "map_joint_select": {"method": "map_joint_select"},
    "ensemble_joint_select": {"method": "ensemble_joint_select", "members": 5},
    # anchored (randomize-then-optimize) joint-noise ensemble (issue 16, session 13): opt-in
    "ensemble_anchored": {"method": "ensemble_anchored", "members": 5},
    # the joint rows after a softplus smoothing continuation (issue 16, session 14, design note 50): opt-in
    "map_joint_smooth": {"method": "map_joint_smooth"},
    "ensemble_joint_smooth": {"method": "ensemble_joint_smooth", "members": 5},
    # the plain joint fits with a calibrated predictive noise (issue 16, session 17, design note 55): opt-in
    "map_joint_mackay": {"method": "map_joint_mackay"},
    "ensemble_joint_mackay": {"method": "ensemble_joint_mackay", "members": 5},
    "map_joint_holdout": {"method": "map_joint_holdout"},
    "ensemble_joint_holdout": {"method": "ensemble_joint_holdout", "members": 5},
    "vi_mf": {"method": "vi_mf"},
    "gibbs": {"method": "gibbs", "num_warmup": 300, "num_samples": 100, "thin": 3, "num_chains": 4,
              "delta_z": 1e-3, "delta_x": 1e-3, "init": "map"},
    # the same row with gibbs.run's default moves="auto" (session 18, design note 56): opt-in
    "gibbs_auto": {"method": "gibbs_auto", "num_warmup": 300, "num_samples": 100, "thin": 3, "num_chains": 4,
                   "delta_z": 1e-3, "delta_x": 1e-3, "init": "map"},
    # the gold recipe of issue 15 (gibbs.presets.gold_hmc_long: hidden Δ from the MAP fits' noise, joint
    # HMC move, 4 chains × (500 + 500)): opt-in
    "gibbs_gold": {"method": "gibbs_gold"},
    # the same recipe's starts and hidden-Δ rule without the HMC move, at the runner gibbs row's 300 + 300
    # sweeps (a Gibbs row priced for the figure's 2× the ensemble's wall-clock): opt-in
    "gibbs_rule": {"method": "gibbs_gold", "preset": "gold", "num_warmup": 300, "num_samples": 300},
    # gibbs.run(net, X, y) with nothing set but the seed: every library default (design notes 60, 61): opt-in
    "gibbs_default": {"method": "gibbs_default"},
    # the same call continued by gibbs.extend(result, 1000): what a user does after the end-of-run warning: opt-in
    "gibbs_default_ext": {"method": "gibbs_default", "extend": 1000},
    "vi_block": {"method": "vi_block", "options": {"num_warmup": 100, "num_samples": 100}},
    "vi_ivon": {"method": "vi_ivon"},
    "vi_vogn": {"method": "vi_vogn"},
    # the reference (issue 16): NUTS on the standard BNN, same prior and noise hyperprior; the budget
    # (4 chains x (100 warm-up + 100 draws), every transition at the maximum tree depth of 10 on
    # Energy and Yacht) is what fits 2-3 minutes per split on this machine.
    "hmc": {"method": "hmc", "num_warmup": 100, "num_samples": 100, "num_chains": 4},
}


def _default_row(label):
    """The default row an opt-in point-estimate row is judged against for no regression (issue 16):
    ``map_*`` against ``map``, ``ensemble_*`` against ``ensemble``; ``None`` for every other row."""
    for base in ("map", "ensemble"):
        if label.startswith(base + "_"):
            return base
    return None


# Every variant of the MAP / ensemble (``map_*``, ``ensemble_*``), the reference and the gold Gibbs rows are opt-in
# (--methods); the default table runs the rest.
DEFAULT_METHODS = tuple(m for m in METHODS if _default_row(m) is None and m not in ("hmc", "gibbs_gold", "gibbs_rule", "gibbs_auto",
                                                                                          "gibbs_default", "gibbs_default_ext"))

# The two large sets get a cheaper budget so that the whole table fits a 2-core afternoon: fewer
# L-BFGS iterations for every MAP fit (shared by MAP, Laplace, the ensemble and the MAP starts)
# and fewer sweeps. Reported in the header next to the settings.
_BIG_MAP = {"max_iter": 300}
_BIG_START = {"init": {"map": _BIG_MAP}}
DATASET_OVERRIDES = {
    "naval-propulsion-plant": {
        "map": _BIG_MAP, "laplace_kfac": _BIG_MAP, "laplace_diag": _BIG_MAP, "ensemble": _BIG_MAP,
        "gibbs": {"num_warmup": 200, "num_samples": 50, "thin": 4, "dtype": "float32", **_BIG_START},
        "vi_block": {"options": {"num_warmup": 50, "num_samples": 50}, "init": {"map_shared": _BIG_MAP}},
        "vi_mf": {"options": {"num_steps": 1000}},
        "vi_vogn": {"epochs": 50},
    },
    "protein-tertiary-structure": {
        "map": _BIG_MAP, "laplace_kfac": _BIG_MAP, "laplace_diag": _BIG_MAP, "ensemble": _BIG_MAP,
        "gibbs": {"num_warmup": 100, "num_samples": 50, "thin": 2, "num_chains": 2, "dtype": "float32",
                  **_BIG_START},
        "vi_block": {"options": {"num_warmup": 50, "num_samples": 50, "num_chains": 2},
                     "init": {"map_shared": _BIG_MAP}},
        "vi_mf": {"options": {"num_steps": 1000}},
        # IVON: 50 epochs (64300 steps) instead of the registry's 20000 steps (16 epochs here): on
        # Protein's inner validation split 60000 steps beat 20000 (val LL -1.093 vs -1.128; docs/
        # ivon_vogn.md), i.e. the budget max(20000 steps, 50 epochs), which differs from the
        # registry default on Protein only.
        "vi_ivon": {"epochs": 50, "options": {}}, "vi_vogn": {"epochs": 20},
    },
}
for _over in DATASET_OVERRIDES.values():        # gibbs_auto runs the gibbs row's budget on the large sets too
    _over["gibbs_auto"] = _over["gibbs"]


def method_configs(names):
    out = []
    for n in names:
        if n not in METHODS:
            raise SystemExit(f"unknown method {n!r}; choose from {', '.join(METHODS)}")
        cfg = dict(METHODS[n], label=n)
        over = {ds: o[n] for ds, o in DATASET_OVERRIDES.items() if n in o}
        if over:
            cfg["by_dataset"] = over
        if cfg["method"] not in ev.available_methods("regression"):
            print(f"[uci_table] skipping {n}: not available in this installation", file=sys.stderr)
            continue
        out.append(cfg)
    return out


def describe(cfg) -> str:
    m = ev.get_method(cfg["method"])
    opts = m.options({k: v for k, v in cfg.items() if k not in ("method", "label", "by_dataset")})
    if cfg["method"] in ("gibbs", "gibbs_auto"):
        sweeps = opts["num_warmup"] + opts["num_samples"] * opts["thin"]
        prior = "layer-wise λ learned (Gamma hyperprior)" if opts["learn_prior"] else f"prior λ = {opts['prior_prec']} (fixed)"
        return (f"block Gibbs, noisy MLP Δ_Z = Δ_X = {opts['delta_z']:g}, Δ_y learned (Gamma hyperprior), "
                f"{prior}, {opts['num_chains']} chains "
                + ("from MAP fits (one per chain: the ensemble's members), " if opts["init"] == "map"
                   else f"from init='{opts['init']}', ") +
                f"{opts['num_warmup']} warm-up + {opts['num_samples']}×{opts['thin']} sweeps per chain "
                f"({sweeps} sweeps, {opts['num_chains'] * opts['num_samples']} samples kept); "
                f"predictive: noise-free network + Δ_y per sample"
                + ("; moves='auto' (gibbs.run's default: the joint non-centred HMC move, 32 leapfrog steps, "
                   "where blockbayes.gibbs.automove adds it; the cell's diagnostics say which)"
                   if cfg["method"] == "gibbs_auto" else "; the sweep alone (moves=None)"))
    if cfg["method"] == "gibbs_default":
        ext = opts.get("extend")
        return ("block Gibbs as a user's first call gets it, `gibbs.run(MLP(widths), X, y, seed=…)`: 4 chains, each "
                "from its own joint-noise MAP fit, 1000 warm-up + 1000 kept sweeps, Δ_y learned, hidden Δ_Z = Δ_X "
                "from the fits' noise (design note 61), prior λ = fan-in (fixed), moves='auto' (the joint HMC move "
                "where affordable; the cell says which); the MAP fits are in the fit time; predictive: noise-free "
                "network + Δ_y per sample"
                + (f"; then `gibbs.extend(result, {ext})`: the same chains {ext} kept sweeps further (moves' "
                   f"adaptation kept; {1000 + ext} samples per chain, its sweeps in the fit time)" if ext else ""))
    if cfg["method"] == "gibbs_gold":
        p = getattr(bb.gibbs.presets, opts["preset"])(**{k: opts[k] for k in ("num_warmup", "num_samples", "num_chains")
                                                        if opts[k] is not None})
        mv = "no extra move" if p.moves is None else repr(p.moves)
        return (f"block Gibbs by the recipe `gibbs.presets.{opts['preset']}`: {p.num_chains} chains, each from its own "
                f"joint-noise MAP fit, hidden Δ_Z = Δ_X = clip({p.ratio:g} × median Δ̂_y, {p.floor:g}, {p.cap:g}) "
                f"(standardised), Δ_y learned, prior λ = {opts['prior_prec']} (fixed), {mv}, "
                f"{p.num_warmup} warm-up + {p.num_samples} kept sweeps per chain; predictive: noise-free network "
                f"+ Δ_y per sample")
    if (cfg["method"] in ("map", "ensemble") or _default_row(cfg["method"])) and opts.get("noise") == "joint":
        ens = cfg["method"].startswith("ensemble")
        anch = (", each member's weight prior centred at its own draw θ₀ ~ N(0, Λ⁻¹) and started there "
                "(anchored, randomize-then-optimize" + (f"; targets + N(0, {opts['target_noise']})"
                                                          if opts.get("target_noise") is not None else "") + ")"
                if opts.get("anchored") else "")
        lead = (f"{opts['members']} MAP fits (one batched L-BFGS problem, one start each{anch})" if ens
                else f"MAP (best objective of {opts['restarts']} starts, one batched L-BFGS problem"
                + (": the ensemble's members, one shared fit)" if opts.get("restart_seeds") == "ensemble" else ")"))
        smooth = opts.get("smoothing")
        pre = ("" if not smooth else
               f", each start first through a softplus smoothing continuation (β = "
               f"{', '.join(f'{b:g}' for b in smooth)}, ≤ {opts['smoothing_iter']} L-BFGS its per stage)")
        pn = opts.get("predictive_noise", "joint")
        noise = {"joint": "Δ_y", "holdout": f"Δ_y = held-out MSE of a{' smooth' if smooth else ''} joint fit on 90%",
                 "evidence": "Δ_y by one MacKay evidence update at the weights"}.get(pn, pn)
        return (f"{lead}{pre}: weights and noise variance jointly (MAP of (θ, log Δ_y), 1/Δ_y ~ Gamma"
                f"{tuple(opts['noise_prior'])}, weight prior λ = fan-in), L-BFGS until max|∇E/n| ≤ {opts['tol']:g}, "
                f"no further decrease, or {opts['max_iter']} iterations"
                + (f"; Gaussian-mixture predictive ({noise} per member)" if ens and pn != "joint"
                   else "; Gaussian-mixture predictive" if ens else f"; predictive N(F(x), {noise})"))
    if opts.get("noise") == "joint_select":
        ens = cfg["method"].startswith("ensemble")
        lead = (f"{opts['starts']} joint-noise MAP fits (MAP of (θ, log Δ_y), 1/Δ_y ~ Gamma{tuple(opts['noise_prior'])}, "
                f"weight prior λ = fan-in; L-BFGS until max|∇E/n| ≤ {opts['tol']:g}, no further decrease, or "
                f"{opts['max_iter']} iterations) on {1 - opts['holdout']:.0%} of the training split, scored by their "
                f"MSE on the other {opts['holdout']:.0%}, refitted on all of it (≤ {opts['refit_iter']} its); ")
        return lead + (f"the {opts['members']} with the smallest held-out MSE, Gaussian-mixture predictive with "
                       "Δ_y per member = its held-out MSE" if ens else
                       "the refit with the lowest objective, predictive N(F(x), Δ_y = its held-out MSE)")
    if opts.get("noise") == "evidence":
        ens = cfg["method"].startswith("ensemble")
        ev_ = opts["evidence"]
        prior = "layerwise λ by the evidence too" if ev_.get("learn_prior") else "weight prior λ = fan-in (fixed)"
        lead = ("MAP" if not ens else f"{opts['members']} MAP fits (one batched L-BFGS problem) at the type-II "
                "hyperparameters of the single fit")
        return (f"{lead}: noise variance by the Laplace evidence (MacKay's fixed point Δ_y = (SSE/2 + b)/((n − γ)/2 + a), "
                f"γ = effective number of parameters of the {ev_.get('structure', 'auto')} GGN Laplace, "
                f"1/Δ_y ~ Gamma{tuple(opts['noise_prior'])}), {prior}, start Δ_y = {opts['delta_y']:g}, "
                f"warm-started L-BFGS refits (≤ {ev_.get('max_iter', 2000)} its each) until |Δ log Δ_y| ≤ "
                f"{ev_.get('rtol', 1e-2):g}, final fit ≤ {opts['max_iter']} its, max|∇E/n| ≤ {opts['tol']:g}"
                + ("; Gaussian-mixture predictive" if ens else "; predictive N(F(x), Δ_y)"))
    if cfg["method"] in ("map", "ensemble"):
        lead = f"{opts['members']} MAP fits" if cfg["method"] == "ensemble" else "MAP"
        return (f"{lead} (L-BFGS ≤ {opts['max_iter']} its, weight decay λ = fan-in), noise Δ_y = MSE on a "
                f"{opts['holdout']:.0%} holdout of the training split, then refit on all of it"
                + ("; Gaussian-mixture predictive" if cfg["method"] == "ensemble" else ""))
    if cfg["method"] == "hmc":
        return (f"**reference**: NUTS (NumPyro) on the {'noisy' if opts['noisy'] else 'standard'} BNN, same "
                f"architecture, weight prior λ = {opts['prior_prec']}, 1/Δ_y ~ Gamma{tuple(opts['noise_prior'])} "
                f"(the hyperprior of gibbs), non-centred weights, {opts['num_chains']} chains × "
                f"({opts['num_warmup']} warm-up + {opts['num_samples']} draws), max tree depth "
                f"{opts['max_tree_depth']}, target acceptance {opts['target_accept']}; predictive: mixture of "
                f"N(F(x; θ_s), Δ_y,s) over all draws")
    if cfg["method"].startswith("laplace"):
        return (f"{opts['structure']} GGN Laplace ({opts['subset']} layers) at the holdout-noise MAP, "
                f"λ ({opts['prior_structure']}) and Δ_y tuned by the evidence ({opts['tune']}), "
                f"{opts['pred_type']} predictive")
    if cfg["method"] == "vi_mf":
        steps = opts["options"].get("num_steps", 2000)
        return (f"mean-field Gaussian VI of the standard MLP (Bayes by backprop, hand-written gradients), "
                f"{steps} full-batch Adam steps, fan-in prior, Δ_y learned as a point estimate; "
                f"{opts['num_pred_samples']} predictive samples")
    if cfg["method"] in ("vi_ivon", "vi_vogn"):
        name = "IVON (Shen et al. 2024; Price Hessian estimate)" if cfg["method"] == "vi_ivon" else \
            "VOGN (Osawa et al. 2019; Gauss-Newton diagonal)"
        cap = (opts.get("options") or {}).get("max_steps")
        budget = f"{opts['epochs']} epochs" if cap is None else f"min({opts['epochs']} epochs, {cap} steps)"
        return (f"{name}, mean-field Gaussian of the standard MLP, {budget} of minibatches of "
                f"{opts['batch_size']} (cosine decay), lr {opts['lr']:g}, h0 {opts['hess_init']:g}, β2 {opts['beta2']:g}, "
                f"ess = n/{opts['tempering']:g}, weight decay = fan-in prior / n, Δ_y learned from the residuals at the "
                f"sampled weights, 1 MC draw per step, {opts['num_restarts']} restart(s); "
                f"{opts['num_pred_samples']} predictive samples")
    if cfg["method"] == "vi_block":
        o = opts["options"]
        return (f"block-Gaussian VI of the noisy MLP (Rao-Blackwellised block posterior of "
                f"{o.get('num_chains', 4)} Gibbs chains, all started from one MAP fit, "
                f"{o.get('num_warmup', 200)} warm-up + {o.get('num_samples', 200)} accumulated sweeps), "
                f"Δ_Z = Δ_X = {opts['delta_z']:g}, Δ_y learned; {opts['num_pred_samples']} predictive samples")
    return m.description


def pm(st, digits=2):
    if st is None or st.get("mean") is None:
        return "–"
    m, se = st["mean"], st.get("se")
    if 0 < abs(m) < 0.01:
        return f"{m:.1e}" if se is None else f"{m:.1e}±{se:.0e}"
    d = digits if abs(m) >= 0.05 else 3
    return f"{m:.{d}f}" if se is None else f"{m:.{d}f}±{se:.{d}f}"


def render(res, methods, datasets, splits_req, doc: Path, elapsed_note: str = "") -> str:
    summ = {(s["dataset"], s["method"]): s for s in res.summary}
    labels = [m["label"] for m in methods]
    lines = ["# UCI regression benchmark (Gal/PBP splits)", "",
             "Generated by `benchmarks/uci_table.py` (do not edit by hand) on "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    lines += ["## What was run", "",
              "Protocol of EVALUATION.md §1.1: Gal's train/test splits, one hidden layer of ReLU units "
              "(50; protein 100), X and y standardised with training-split statistics, RMSE of the "
              "predictive mean and test log-likelihood (mean over test points of the log predictive "
              "density, minus log σ_y) in **original units**. No hyperparameter was tuned on test data.", ""]
    lines.append("**Splits actually run** (ours; k = number of splits averaged, out of the protocol's):")
    lines.append("")
    lines.append("| dataset | N | hidden | protocol splits | " + " | ".join(f"k ({l})" for l in labels) + " |")
    lines.append("|---|---|---|---|" + "---|" * len(labels))
    partial = False
    for ds in datasets:
        info = bb.datasets.uci_info(ds)
        ks = []
        for l in labels:
            s = summ.get((ds, l))
            k = s["count"] if s else 0
            if k < info.n_splits:
                partial = True
            txt = f"{k} of {info.n_splits}"
            missing = sorted(set(range(info.n_splits)) - set(s["splits"] if s else []))
            if s and missing and k:
                txt += f" (not finished: split{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))})"
            ks.append(txt)
        lines.append(f"| {SHORT.get(ds, ds)} | {info.N} | {info.n_hidden} | {info.n_splits} | " + " | ".join(ks) + " |")
    lines.append("")
    if partial:
        lines.append("**Not every cell of the protocol ran**: where k is below the protocol's number of "
                     "splits, our mean ± SE is over the k splits that finished (failed splits are named with "
                     "their error) and is not exactly comparable with the published 20-split (protein 5-split) "
                     "averages.")
        lines.append("")
    lines.append("Method settings:")
    lines.append("")
    for m in methods:
        lines.append(f"- **{m['label']}**: {describe(m)}.")
    lines.append("")
    over = [(ds, lab, o) for ds in datasets for lab, o in DATASET_OVERRIDES.get(ds, {}).items()
            if lab in labels]
    if over:
        lines.append("Cheaper settings on the large sets (overrides of the above, to fit the run on 2 cores):")
        lines.append("")
        for ds in datasets:
            items = [f"{lab}: " + ", ".join(f"{k}={v}" for k, v in o.items())
                     for d2, lab, o in over if d2 == ds]
            if items:
                lines.append(f"- **{SHORT.get(ds, ds)}** — " + "; ".join(items) + ".")
        lines.append("")
    lines.append((f"Requested: {splits_req}. " if splits_req else "") + elapsed_note)
    lines.append("")
    lines += ["**± conventions differ.** Ours: standard error over splits (sd/√k, ddof 1). PBP, VI and "
              "Dropout 2018: standard errors. Dropout (paper): standard deviations (the repository's README "
              "later divided them by √20). Deep ensembles: unverified convention (values similar in size "
              "to standard deviations). Deep Ens. LL = −NLL. Published columns are quoted from "
              "EVALUATION.md §1.1; kin8nm and power-plant are not available offline and are not run.", ""]
    pub_hdr = " | ".join(f"{c}†" for c in PUBLISHED_COLUMNS)
    for title, metric, pub in (("Test RMSE (original units, lower is better)", "rmse", PUBLISHED_RMSE),
                               ("Test log-likelihood (original units, higher is better)", "ll", PUBLISHED_LL)):
        lines += [f"## {title}", "", "| dataset | " + " | ".join(labels) + " | " + pub_hdr + " |",
                  "|---|" + "---|" * (len(labels) + len(PUBLISHED_COLUMNS))]
        for ds in datasets:
            ours = []
            for l in labels:
                s = summ.get((ds, l))
                cell = pm(s.get(metric) if s else None)
                if s and s["count"]:
                    cell += f" (k={s['count']})"
                ours.append(cell)
            lines.append(f"| {SHORT.get(ds, ds)} | " + " | ".join(ours) + " | " + " | ".join(pub.get(ds, ("–",) * 5)) + " |")
        lines.append("")
    lines.append("† published, 20 splits (protein 5), see conventions above.")
    lines.append("")
    modes = sorted({str(c.get("mem_mode", "tracemalloc")) for c in res.cells if c.get("status") == "ok"})
    mem_txt = {"peak_rss": "the peak resident set size of the process during the cell above its size at the "
                           "cell's start (kernel high-water mark reset per cell; includes BLAS/Numba buffers)",
               "tracemalloc": "peak traced memory (tracemalloc: Python/NumPy heap above the cell's start; "
                              "excludes Numba/BLAS workspaces)",
               "rss": "the growth of the process's peak resident set size during the cell (`--memory rss`; "
                      "0 when an earlier cell of the process had already reached a higher peak)",
               "none": "no memory measurement (`--memory none`)"}
    lines += ["## Cost (ours)", "", "Mean fit wall time per split in seconds on a shared 2-core CPU (timings "
              "are inflated and noisy under load), and " + "; ".join(mem_txt.get(m, m) for m in modes or
                                                                     ["tracemalloc"]) + ".", "",
              "| dataset | " + " | ".join(f"{l} time (s)" for l in labels) + " | " + " | ".join(f"{l} MiB" for l in labels) + " |",
              "|---|" + "---|" * (2 * len(labels))]
    for ds in datasets:
        t = [pm(summ[(ds, l)]["fit_time_s"], 1) if (ds, l) in summ and summ[(ds, l)]["count"] else "–" for l in labels]
        mem = [pm(summ[(ds, l)]["peak_mem_mb"], 1) if (ds, l) in summ and summ[(ds, l)]["count"] else "–" for l in labels]
        lines.append(f"| {SHORT.get(ds, ds)} | " + " | ".join(t) + " | " + " | ".join(mem) + " |")
    lines.append("")
    diag_rows = []
    for ds in datasets:
        for lab in labels:
            cs = [c for c in res.cells if c["dataset"] == ds and c["method"] == lab
                  and c.get("method_name") == "gibbs" and c.get("status") == "ok"]
            r = [c["diagnostics"].get("rhat_delta_y") for c in cs]
            r = [v for v in r if v is not None and math.isfinite(v)]
            if r:
                e = [c["diagnostics"].get("ess_bulk_delta_y") or float("nan") for c in cs]
                lj = [c["diagnostics"].get("rhat_log_joint") for c in cs]
                lj = [v for v in lj if v is not None and math.isfinite(v)]
                ok = sum(v <= 1.1 for v in r)
                diag_rows.append(f"| {SHORT.get(ds, ds)} | {lab} | {len(r)} | {min(r):.3f} | {sorted(r)[len(r) // 2]:.3f} | "
                                 f"{max(r):.3f} | {ok} of {len(r)} | {min(e):.0f} | "
                                 + (f"{min(lj):.3f}–{max(lj):.3f}" if lj else "–") + " |")
    if diag_rows:
        lines += ["## Gibbs convergence check", "", "Rank-normalised split R-hat and bulk ESS of the learned "
                  "output-noise variance Δ_y across the chains of each split (kept samples only), and R-hat of "
                  "the log joint density. The chains start from different MAP fits, so R-hat above 1.01 mostly "
                  "says that the chains still sit in different modes (different Δ_y) — the Gibbs numbers are "
                  "then those of a mixture over those modes, not of a converged posterior. That is the honest "
                  "reading for most splits here.", "",
                  "| dataset | method | splits | min R-hat(Δ_y) | median | max | splits with R-hat ≤ 1.1 | "
                  "min bulk ESS(Δ_y) | R-hat(log joint) range |", "|---|---|---|---|---|---|---|---|---|",
                  *diag_rows, ""]
    lines += sampler_figure_section(res, labels, datasets)
    lines += baseline_section(res, labels, datasets)
    lines += reference_sections(res, labels, datasets)
    lines += per_split_reference_section(res, labels, datasets)
    lines += ["## Reproduce", "", "```", "python benchmarks/uci_table.py --splits K      # resumable; cells in results/uci/cells",
              "python benchmarks/uci_table.py --splits K --report-only", "```", "",
              "Per-split numbers: `results/uci/cells.csv`; per-cell JSON (metrics, timings, diagnostics, "
              "Gibbs traces): `results/uci/cells/<dataset>/<method>/`.", ""]
    text = "\n".join(lines)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return text


REF = "hmc"
BASE = "ensemble"
SAMPLERS = ("gibbs", "gibbs_auto", "gibbs_gold", "gibbs_default")


def sampler_figure_section(res, labels, datasets) -> list:
    """Issue 15's UCI figure for each Gibbs row: function-space R-hat of the test predictions
    (per split, the max and the median over test points), and LL / wall-clock against ``ensemble``
    paired over the splits where both finished."""
    ok = [c for c in res.cells if c.get("status") == "ok"]
    base = {(c["dataset"], c["split"], c["seed"]): c for c in ok if c["method"] == BASE}
    rows, tally = [], []
    for lab in labels:
        for ds in datasets:
            cs = sorted((c for c in ok if c["method"] == lab and c["dataset"] == ds
                         and c.get("method_name") in SAMPLERS), key=lambda c: c["split"])
            rmax = [c["diagnostics"].get("rhat_pred_max") for c in cs]
            rmax = [v for v in rmax if v is not None and math.isfinite(v)]
            if not rmax:
                continue
            rmed = [c["diagnostics"]["rhat_pred_median"] for c in cs if c["diagnostics"].get("rhat_pred_median") is not None]
            ess = [c["diagnostics"]["ess_bulk_pred_min"] for c in cs if c["diagnostics"].get("ess_bulk_pred_min") is not None]
            pairs = [(c, base[k]) for c in cs if (k := (c["dataset"], c["split"], c["seed"])) in base]
            dll = [c["metrics"]["ll"] - b["metrics"]["ll"] for c, b in pairs]
            tr = (sum(c["fit_time_s"] for c, _ in pairs) / sum(b["fit_time_s"] for _, b in pairs)) if pairs else None
            win = None if not dll else float(np.mean(dll)) >= 0
            tally.append((lab, ds, win, tr, float(np.median(rmax)), sum(v <= 1.1 for v in rmax), len(rmax)))
            rows.append(f"| {SHORT.get(ds, ds)} | {lab} | {', '.join(str(c['split']) for c in cs)} | "
                        f"{float(np.median(rmax)):.3f} | {max(rmax):.3f} | {sum(v <= 1.1 for v in rmax)} of {len(rmax)} | "
                        + (f"{float(np.median(rmed)):.3f}" if rmed else "–") + " | " + (f"{min(ess):.0f}" if ess else "–")
                        + " | " + _pm_list(dll) + " | " + (f"{sum(v >= 0 for v in dll)} of {len(dll)}" if dll else "–")
                        + " | " + (f"{tr:.2f}" if tr is not None else "–") + " |")
    if not rows:
        return []
    lines = ["## Gibbs against issue 15's UCI figure", "",
             "Function-space convergence: for each split, the rank-normalised split R-hat of the noise-free test "
             "prediction F(x_i) across the chains, at every test point; a split's **max R-hat(F)** is the worst test "
             "point (the strict reading of the figure), its median the typical one. The figure asks for a median over "
             "splits ≤ 1.05 and ≥ 18 of 20 splits ≤ 1.1, Gibbs LL ≥ the ensemble's on ≥ 5 of 7 sets, at ≤ 2× its "
             "wall-clock. ΔLL = LL(row) − LL(ensemble), paired over the splits where both finished (mean ± SE); "
             "time ratio = Σ fit time (row) / Σ fit time (ensemble) over those splits, both including MAP fits.", "",
             "| dataset | method | splits | median over splits of max R-hat(F) | worst | splits with max R-hat(F) ≤ 1.1 | "
             "median over splits of median R-hat(F) | min bulk ESS(F) | ΔLL vs ensemble | splits LL ≥ ensemble | "
             "time ratio |", "|---|---|---|---|---|---|---|---|---|---|---|", *rows, ""]
    for lab in dict.fromkeys(t[0] for t in tally):
        t = [x for x in tally if x[0] == lab]
        wins = [x for x in t if x[2] is not None]
        lines.append(f"- **{lab}**: LL ≥ the ensemble's (mean over paired splits) on {sum(x[2] for x in wins)} of "
                     f"{len(wins)} sets; time ratio ≤ 2 on {sum(x[3] is not None and x[3] <= 2 for x in t)} of {len(t)}; "
                     f"median over splits of max R-hat(F) ≤ 1.05 on {sum(x[4] <= 1.05 for x in t)} of {len(t)} sets; "
                     f"splits with max R-hat(F) ≤ 1.1: {sum(x[5] for x in t)} of {sum(x[6] for x in t)}.")
    lines.append("")
    return lines


def reference_sections(res, labels, datasets) -> list:
    """The NUTS reference: its convergence per dataset and every method's paired distance to it."""
    if REF not in labels:
        return []
    ok = [c for c in res.cells if c.get("status") == "ok"]
    ref = {(c["dataset"], c["split"], c["seed"]): c for c in ok if c["method"] == REF}
    if not ref:
        return []
    lines = ["## The reference: NUTS on the standard BNN", "",
             "`hmc` is NUTS (NumPyro, float64, JAX on the CPU) on the same network, weight prior and noise "
             "hyperprior as the other methods: a gold standard for what *this model* predicts, computed here "
             "rather than quoted. It is only a reference where it mixes: the R-hat of its test predictions "
             "(rank-normalised split R-hat of F(x_i) per test point, across the chains) is stated per dataset "
             "below, next to the share of transitions that hit the maximum tree depth (where it is 100%, no "
             "transition finished its trajectory: the posterior is too ill-conditioned for the step budget). "
             "A max R-hat above 1.1 means that at least one test point's prediction has not converged across the "
             "chains: the row is kept and marked, not dropped.", "",
             "| dataset | splits | max R-hat(F) | median R-hat(F) | test points with R-hat ≤ 1.1 | min bulk ESS(F) | "
             "max-depth share | divergences | R-hat(Δ_y) max | sampling time per split (s) | mixes? |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for ds in datasets:
        cs = sorted((c for (d, _, _), c in ref.items() if d == ds), key=lambda c: c["split"])
        if not cs:
            continue
        D = [c["diagnostics"] for c in cs]

        def col(k):
            return [d.get(k) for d in D if d.get(k) is not None and math.isfinite(d.get(k))]

        rmax, rmed, share, ess = col("rhat_pred_max"), col("rhat_pred_median"), col("rhat_pred_share_1.1"), col("ess_bulk_pred_min")
        depth, div, rdy, tt = col("frac_max_tree_depth"), col("num_divergent"), col("rhat_delta_y"), col("sample_time_s")
        mixes = "yes" if rmax and max(rmax) <= 1.1 else ("**no** (R-hat > 1.1)" if rmax else "–")
        lines.append(f"| {SHORT.get(ds, ds)} | {', '.join(str(c['split']) for c in cs)} | "
                     + (f"{max(rmax):.3f}" if rmax else "–") + " | " + (f"{float(np.median(rmed)):.3f}" if rmed else "–")
                     + " | " + (f"{min(share):.0%}–{max(share):.0%}" if share else "–") + " | "
                     + (f"{min(ess):.0f}" if ess else "–") + " | " + (f"{np.mean(depth):.0%}" if depth else "–") + " | "
                     + (f"{int(sum(div))}" if div else "–") + " | " + (f"{max(rdy):.3f}" if rdy else "–") + " | "
                     + (f"{np.mean(tt):.0f}" if tt else "–") + f" | {mixes} |")
    lines += ["", "### Distance to the reference (paired over the splits where both ran)", "",
              "ΔLL = LL(method) − LL(NUTS) (original units; negative: worse than the reference) and the RMSE "
              "ratio RMSE(method)/RMSE(NUTS), each the mean over the splits where both the method and NUTS "
              "finished (k of them), ± standard error over those splits.", "",
              "| dataset | " + " | ".join(f"{l} ΔLL" for l in labels if l != REF) + " | "
              + " | ".join(f"{l} RMSE ratio" for l in labels if l != REF) + " |",
              "|---|" + "---|" * (2 * (len(labels) - 1))]
    for ds in datasets:
        dll, rr = [], []
        for l in labels:
            if l == REF:
                continue
            pairs = [(c, ref[(c["dataset"], c["split"], c["seed"])]) for c in ok
                     if c["method"] == l and c["dataset"] == ds and (c["dataset"], c["split"], c["seed"]) in ref]
            a = [c["metrics"]["ll"] - r["metrics"]["ll"] for c, r in pairs]
            b = [c["metrics"]["rmse"] / r["metrics"]["rmse"] for c, r in pairs]
            dll.append(_pm_list(a))
            rr.append(_pm_list(b))
        if any(v != "–" for v in dll + rr):
            lines.append(f"| {SHORT.get(ds, ds)} | " + " | ".join(dll) + " | " + " | ".join(rr) + " |")
    lines.append("")
    return lines


#: Issue 16's figure: a method's test RMSE within this factor of NUTS's, split by split.
REF_RMSE_WITHIN = 1.25


def per_split_reference_section(res, labels, datasets) -> list:
    """Every method against NUTS split by split: RMSE / LL, the RMSE ratio (met when ≤ 1.25, issue 16's
    figure) and ΔLL, with a tally per method over the splits where both ran."""
    if REF not in labels:
        return []
    ok = [c for c in res.cells if c.get("status") == "ok"]
    ref = {(c["dataset"], c["split"], c["seed"]): c for c in ok if c["method"] == REF}
    others = [l for l in labels if l != REF]
    if not ref or not others:
        return []
    cell = {(c["method"], c["dataset"], c["split"], c["seed"]): c for c in ok}
    lines = ["### Per split against the reference", "",
             f"RMSE / LL (original units), then RMSE(method)/RMSE(NUTS) — *met* when ≤ {REF_RMSE_WITHIN:g} (issue 16's "
             "figure) — and ΔLL = LL(method) − LL(NUTS). NUTS's own max R-hat(F) is in brackets: where it exceeds "
             "1.1 the reference has not mixed and the ratio carries its Monte Carlo error.", "",
             "| set, split | NUTS RMSE / LL (max R-hat F) | " + " | ".join(others) + " |",
             "|---|---|" + "---|" * len(others)]
    met = {l: [0, 0] for l in others}
    for ds in datasets:
        for key in sorted((k for k in ref if k[0] == ds), key=lambda k: (k[1], k[2])):
            r = ref[key]
            rm = r["diagnostics"].get("rhat_pred_max")
            row = [f"{SHORT.get(ds, ds)} {key[1]}",
                   f"{r['metrics']['rmse']:.4g} / {r['metrics']['ll']:.3f}"
                   + (f" ({rm:.2f})" if rm is not None and math.isfinite(rm) else "")]
            for l in others:
                c = cell.get((l,) + key)
                if c is None:
                    row.append("–")
                    continue
                ratio = c["metrics"]["rmse"] / r["metrics"]["rmse"]
                ok_ = ratio <= REF_RMSE_WITHIN
                met[l][0] += ok_
                met[l][1] += 1
                row.append(f"{c['metrics']['rmse']:.4g} / {c['metrics']['ll']:.3f}: ×{ratio:.2f} "
                           + ("met" if ok_ else "**short**") + f", ΔLL {c['metrics']['ll'] - r['metrics']['ll']:+.2f}")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "Within " + f"{REF_RMSE_WITHIN:g}× NUTS's RMSE: "
              + "; ".join(f"{l} {m} of {n}" for l, (m, n) in met.items() if n) + ".", ""]
    return lines


def baseline_section(res, labels, datasets) -> list:
    """Each opt-in MAP / ensemble row against its default row (``map``, ``ensemble``), paired over the
    splits where both finished: ΔLL and RMSE ratio (mean ± SE), how many splits are no worse, the time
    ratio, and a **regression** flag where the paired mean is worse by more than two standard errors."""
    ok = [c for c in res.cells if c.get("status") == "ok"]
    cell = {(c["method"], c["dataset"], c["split"], c["seed"]): c for c in ok}
    rows, worse = [], {}
    for lab in labels:
        base = _default_row(lab)
        if base is None or base not in labels:
            continue
        for ds in datasets:
            pairs = [(c, b) for (m, d, sp, se), c in cell.items() if m == lab and d == ds
                     and (b := cell.get((base, d, sp, se))) is not None]
            if not pairs:
                continue
            dll = np.array([c["metrics"]["ll"] - b["metrics"]["ll"] for c, b in pairs])
            rr = np.array([c["metrics"]["rmse"] / b["metrics"]["rmse"] for c, b in pairs])
            k = len(pairs)
            se = (lambda v: float(np.std(v, ddof=1) / math.sqrt(k)) if k > 1 else float("inf"))
            flags = []
            if dll.mean() < -2 * se(dll):
                flags.append("LL")
            if rr.mean() > 1 + 2 * se(rr):
                flags.append("RMSE")
            worse.setdefault(lab, []).append((ds, flags))
            tr = sum(c["fit_time_s"] for c, _ in pairs) / max(sum(b["fit_time_s"] for _, b in pairs), 1e-12)
            rows.append(f"| {SHORT.get(ds, ds)} | {lab} vs {base} | {k} | {_pm_list(list(dll))} | "
                        f"{int(np.sum(dll >= 0))} of {k} | {_pm_list(list(rr))} | {int(np.sum(rr <= 1))} of {k} | "
                        f"{tr:.1f} | " + (("**" + ", ".join(flags) + "**") if flags else "no") + " |")
    if not rows:
        return []
    lines = ["## The opt-in point estimates against the default rows (no-regression check)", "",
             "Each opt-in MAP row against `map`, each opt-in ensemble row against `ensemble`, paired over the splits "
             "where both finished: ΔLL = LL(row) − LL(default) and RMSE(row)/RMSE(default), mean ± standard error "
             "over those splits; time ratio = Σ fit time (row) / Σ fit time (default). *Regression*: the paired mean "
             "is worse than the default's by more than two standard errors (ΔLL < −2 SE, or RMSE ratio > 1 + 2 SE).",
             "", "| dataset | row | k | ΔLL | splits LL ≥ default | RMSE ratio | splits RMSE ≤ default | time ratio | "
             "regression? |", "|---|---|---|---|---|---|---|---|---|", *rows, ""]
    for lab, v in worse.items():
        bad = [f"{SHORT.get(d, d)} ({', '.join(f)})" for d, f in v if f]
        lines.append(f"- **{lab}**: " + (f"regresses on {len(bad)} of {len(v)} sets: {'; '.join(bad)}." if bad
                                         else f"no regression on any of the {len(v)} sets."))
    lines.append("")
    return lines


def _pm_list(v) -> str:
    v = [x for x in v if x is not None and math.isfinite(x)]
    if not v:
        return "–"
    m = float(np.mean(v))
    if len(v) == 1:
        return f"{m:.2f} (k=1)"
    se = float(np.std(v, ddof=1) / math.sqrt(len(v)))
    return f"{m:.2f}±{se:.2f} (k={len(v)})"


def parse_only(text):
    """``"10-19"`` -> ``[10, ..., 19]``; ``"3,5"`` -> ``[3, 5]``; ``None`` -> ``None``."""
    if not text:
        return None
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b) + 1) if b else [int(a)])
    return out


DEFAULT_OUT = ROOT / "results" / "uci"


def doc_path(out, doc=None) -> Path:
    """The page a run writes: ``doc`` if given; ``docs/uci.md`` when ``out`` is the default results
    directory; else ``out/page.md`` (session 18: a run into a scratch directory had overwritten
    docs/uci.md with a three-split page)."""
    if doc is not None:
        return Path(doc)
    if Path(out).resolve() == DEFAULT_OUT.resolve():
        return ROOT / "docs" / "uci.md"
    return Path(out) / "page.md"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--splits", default="1", help="number of splits per dataset (first k), or 'all'")
    ap.add_argument("--only-splits", default=None,
                    help="compute only these splits, e.g. '10-19' or '3,5' (to share one dataset between "
                         "processes); the report still covers --splits")
    ap.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma list from {', '.join(METHODS)}")
    ap.add_argument("--datasets", default=None, help="comma list (default: every UCI set found)")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--doc", default=None,
                    help="page to write (default: docs/uci.md for the default --out, else OUT/page.md, so a "
                         "partial run into another directory never overwrites the repository's page)")
    ap.add_argument("--report-only", action="store_true", help="render from finished cells, compute nothing")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS and Numba threads per process (default 1: run several processes on "
                         "disjoint --datasets instead; threaded BLAS made MAP fits 2-3x slower here)")
    ap.add_argument("--memory", default="peak_rss", choices=("peak_rss", "tracemalloc", "rss", "none"),
                    help="peak-memory measurement of each cell (not part of the cell's key); peak_rss "
                         "(default): peak resident set, no cost; tracemalloc slows allocation-heavy Python "
                         "loops such as IVON's 4-5x")
    ap.add_argument("--order", default="cost", choices=("cost", "name"),
                    help="dataset order (cost: smallest first, so partial runs cover the cheap sets)")
    args = ap.parse_args(argv)
    args.doc = str(doc_path(args.out, args.doc))
    from blockbayes._backend.threads import thread_limits

    thread_limits(num_threads=args.threads, blas_threads=args.threads)
    methods = method_configs([m for m in args.methods.split(",") if m])
    if args.datasets:
        datasets = [bb.datasets.uci_info(d).name for d in args.datasets.split(",")]
    else:
        datasets = list(bb.datasets.uci_names(available=True))
    if not datasets:
        print("no UCI data found (../shared/data/uci or $BLOCKBAYES_UCI_ROOT)", file=sys.stderr)
        return 2
    if args.order == "cost":
        datasets.sort(key=lambda d: bb.datasets.uci_info(d).N * (bb.datasets.uci_info(d).n_hidden or 50))
    splits = None if args.splits == "all" else int(args.splits)
    t0 = time.time()
    res = None
    # datasets one at a time, so that the report is refreshed after each
    for i, ds in enumerate(datasets):
        if not args.report_only:
            ev.evaluate(methods, [ds], splits=parse_only(args.only_splits) or splits, out_dir=args.out,
                        progress=not args.no_progress, memory=args.memory,
                        plots=False, markdown_title=f"UCI {ds}")
            done = ev.evaluate(methods, datasets, splits=splits, out_dir=args.out, progress=False, plots=False,
                               compute=False, markdown_title="UCI regression")
            render(done, methods, datasets, "all protocol splits" if splits is None else f"first {splits} split(s) per dataset",
                   Path(args.doc), f"Run in progress ({i + 1}/{len(datasets)} datasets done)." if i + 1 < len(datasets) else "")
    res = ev.evaluate(methods, datasets, splits=splits, out_dir=args.out, progress=False, plots=True, compute=False,
                      markdown_title="UCI regression")
    req = None if args.report_only else ("all protocol splits" if splits is None else f"first {splits} split(s) per dataset")
    text = render(res, methods, datasets, req, Path(args.doc),
                  "" if req else f"Collected from the finished cells in {args.out}; the k above are exact.")
    print(text)
    print(f"\n[uci_table] {res.cached} cells found, {res.missing} missing; {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
