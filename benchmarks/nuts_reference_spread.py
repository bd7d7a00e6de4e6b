"""The NUTS reference's own run-to-run spread, and a reference pooled over independent runs (issue 15).

Two 4-chain NUTS runs of the same model disagree by more than the gold figure's tolerance
(Energy 0: the issue's table 0.22 / +0.09, the library's ``hmc`` cell 0.245 / −0.046). This script
runs the library's ``hmc`` cell — exactly the runner's path, :func:`blockbayes.evaluate.evaluate`
with the method options of ``benchmarks/uci_table.py`` (4 chains × (100 warm-up + 100 draws), max
tree depth 10, target acceptance 0.8, one XLA thread) — at several runner seeds, and keeps every
draw's noise-free test prediction so that runs can be pooled later without rerunning.

``run``: one process, one cell at a time; per (dataset, split, seed) an ``.npz`` in ``--out-dir``
holding ``F`` (chains, draws, n_test: the network output of every draw, standardised units),
``delta_y`` (chains, draws; standardised), ``y_test`` (standardised), ``y_std``, the per-point
predictive mean and log predictive density of the run (original units), the per-chain means, the
runner's own RMSE / LL for the cell, the NUTS info and the process CPU / wall seconds.
Runner seed ``r`` is ``bb.evaluate(..., seeds=[r])``: seed 0 is the cell of docs/uci_reference.md.
``--save-weights`` also keeps every draw's weights (``W0, W1, …``, ``(chains, draws, d_out, d_in + 1)``, bias
last) and ``widths``: ``benchmarks/gibbs_gold.py --start-from-npz`` starts Gibbs chains from them (session 14).

``report``: per run RMSE / LL / max R-hat(F) / CPU s; the spread across runs (sd of LL and RMSE,
ddof 1); the pooled reference = the mixture over all runs' draws (per-point density averaged over
runs with equal weights — every run has the same number of draws — RMSE of the averaged mean) and
the R-hat of F across all chains of all runs. ``--json PATH`` writes the pooled cells in the format
``benchmarks/gibbs_gold.py --reference PATH`` reads (also the single runs, for scoring against each).
Runs at another budget (``run --num-warmup W --num-samples S``; files ``..._w<W>n<S>.npz``) are
printed in their own rows and kept out of the pooled file.

``score``: the ``gold_hmc_long()`` test cells of docs/gibbs-moves.md §6 (``GOLD_LONG``, seeds 0–2)
against (a) ``gibbs_gold.NUTS`` (the issue's table; the library's cells where it has none), (b)
each single run of the file, (c) the pooled reference, and how often the figure is met under each.

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 python \\
        benchmarks/nuts_reference_spread.py run --dataset energy --split 0 --seeds 0 1 2 3 \\
        --out-dir /work/scratch/nuts15
    PYTHONPATH=$PWD python benchmarks/nuts_reference_spread.py report --out-dir /work/scratch/nuts15 \\
        --json /work/scratch/nuts15/pooled_reference.json
    PYTHONPATH=$PWD python benchmarks/nuts_reference_spread.py score \
        --json /work/scratch/nuts15/pooled_reference.json
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import sys
import time

import numpy as np

import blockbayes as bb
from blockbayes.evaluate import reference

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gibbs_gold import NUTS, figure  # noqa: E402  (the figure's reference table and test)

# the runner's `hmc` cell of benchmarks/uci_table.py (docs/uci_reference.md)
HMC_CELL = {"method": "hmc", "label": "hmc", "num_warmup": 100, "num_samples": 100, "num_chains": 4}
# the issue-15 table (4 chains, NumPyro, same model): the entries of gibbs_gold.py's default reference
# whose source is the issue
ISSUE = {k: v[:2] for k, v in NUTS.items() if v[2] == "issue"}


# gold_hmc_long() test cells (RMSE, LL) by (dataset, split, gibbs seed): docs/gibbs-moves.md §6,
# "The test split with `gold_hmc_long()`" (raw /work/scratch/gold15d/test_lf64_*)
GOLD_LONG = {
    ("yacht", 0, 0): (0.267, -0.009), ("yacht", 1, 0): (0.179, -0.019), ("yacht", 2, 0): (0.156, -0.003),
    ("energy", 0, 0): (0.260, -0.058), ("energy", 1, 0): (0.442, -1.029), ("energy", 2, 0): (0.271, -0.091),
    ("yacht", 0, 1): (0.258, -0.025), ("yacht", 1, 1): (0.239, -0.025), ("yacht", 2, 1): (0.175, -0.029),
    ("energy", 0, 1): (0.242, -0.017), ("energy", 1, 1): (0.441, -1.131), ("energy", 2, 1): (0.266, -0.064),
    ("yacht", 0, 2): (0.213, 0.025), ("yacht", 1, 2): (0.279, -0.084), ("yacht", 2, 2): (0.131, 0.031),
    ("energy", 0, 2): (0.257, -0.052), ("energy", 1, 2): (0.439, -0.975), ("energy", 2, 2): (0.281, -0.106),
}


def run_path(out_dir, dataset, split, seed, budget=(100, 100)):
    """``nuts_<set>_s<split>_r<seed>.npz``; a budget other than the runner's (100 + 100) adds ``_w<warm-up>n<draws>``."""
    tag = "" if tuple(budget) == (100, 100) else f"_w{budget[0]}n{budget[1]}"
    return os.path.join(out_dir, f"nuts_{dataset}_s{split}_r{seed}{tag}.npz")


def pin_after_start(cpu):
    """Import JAX as the runner does (its ``requires="numpyro"`` check imports it before
    ``reference.nuts`` could set XLA_FLAGS, so the runner's ``threads=1`` never applies), create the
    CPU client — its Eigen pool is sized by the CPUs this process may use (2 here) — and only then
    pin every thread to ``cpu``. Measured (session 13): on Energy the floating-point result depends
    on the CPUs the process may use — Energy 2, runner seed 0: unpinned 0.282 / −0.144 (the cell of
    docs/uci_reference.md, to the digit), pinned after the client started 0.281 / −0.135, pinned
    from the start (a 1-thread pool) 0.261 / −0.088; Yacht's cells reproduce either way. Each is a
    valid run of the same model (NUTS at the maximum tree depth amplifies a rounding difference
    into a different chain); only the unpinned one is the runner's cell."""
    import numpyro  # noqa: F401
    import jax

    jax.devices()
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {int(cpu)})
        except OSError:
            pass
    return thread_names()


def thread_names():
    """``{thread name: count}`` of this process (``tf_XLAEigen``: the XLA CPU pool's threads)."""
    names = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                n = f.read().strip()
            names[n] = names.get(n, 0) + 1
        except OSError:
            pass
    return names


def run_one(dataset, split, seed, out_dir, budget=(100, 100), save_weights=False):
    """One runner cell of ``hmc`` at runner seed ``seed`` (``budget``: warm-up and draws per chain);
    its draws are captured from :func:`reference.nuts` (the runner's own call) and saved with the
    runner's scores. ``save_weights``: also every draw's weights, ``W<l>`` of shape
    ``(chains, draws, d_{l+1}, d_l + 1)`` (bias last, the layout of ``gibbs.run``'s ``init``
    arrays), and ``widths`` (``gibbs_gold.py --start-from-npz`` starts chains from them)."""
    from blockbayes import evaluate as ev

    captured = []
    orig = reference.nuts

    def capture(*args, **kw):
        res = orig(*args, **kw)
        captured.append((res, dict(kw)))
        return res

    name = bb.datasets.uci_info(dataset).name
    data = bb.datasets.uci(name, split)
    reference.nuts = capture
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        cellspec = dict(HMC_CELL, num_warmup=int(budget[0]), num_samples=int(budget[1]))
        er = ev.evaluate([cellspec], [name], splits=[split], seeds=[seed], out_dir=None, memory="none",
                         plots=False, progress=False, on_error="raise", warmup=False)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        reference.nuts = orig
    (cell,) = er.cells
    res, kw = captured[-1]
    net_widths = [data.X_train.shape[1], *([int(data.info["n_hidden"])] if (data.info or {}).get("n_hidden") else [50]), 1]
    net = bb.MLP(net_widths, "relu", likelihood="gaussian", prior_prec="fan_in")
    F = reference.forward_samples(net, res.weights, data.X_test)[..., 0]            # (C, S, n)
    y = np.asarray(data.y_test, dtype=np.float64).reshape(-1)
    s = float(data.y_std)
    pp = reference.pooled_predictive([F], [res.delta_y], y)
    diag = reference.prediction_diagnostics(F)
    np.savez_compressed(
        run_path(out_dir, dataset, split, seed, budget), F=F, delta_y=np.asarray(res.delta_y), y_test=y, y_std=s,
        mean=pp.mean * s, lpd=pp.lpd - math.log(s), chain_means=F.mean(axis=1) * s,
        runner_rmse=cell["metrics"]["rmse"], runner_ll=cell["metrics"]["ll"], nuts_seed=int(kw["seed"]),
        cpu_s=cpu, wall_s=wall, load=os.getloadavg()[0],
        info=json.dumps(res.info), diag=json.dumps(diag), xla_pool=thread_names().get("tf_XLAEigen", 0), xla_flags=os.environ.get("XLA_FLAGS", ""),
        dataset=dataset, split=split, seed=seed, finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **({f"W{l}": np.asarray(w) for l, w in enumerate(res.weights)} if save_weights else {}),
        **({"widths": np.asarray(net_widths)} if save_weights else {}))
    rmse = float(np.sqrt(np.mean((pp.mean - y) ** 2))) * s
    ll = float(np.mean(pp.lpd)) - math.log(s)
    print(f"{dataset:>7} {split:2d} r{seed} {budget[0]}+{budget[1]} runner {cell['metrics']['rmse']:.3f} / {cell['metrics']['ll']:+.3f}  "
          f"own {rmse:.4f} / {ll:+.4f}  R̂(F) max {diag.get('rhat_pred_max', float('nan')):.3f}  "
          f"max-depth {res.info['frac_max_tree_depth']:.2f}  CPU {cpu:.0f} s  wall {wall:.0f} s  "
          f"load {os.getloadavg()[0]:.2f}  XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)


def load_runs(out_dir):
    runs = {}
    for p in sorted(glob.glob(os.path.join(out_dir, "nuts_*_s*_r*.npz"))):
        m = re.match(r"nuts_([a-z]+)_s(\d+)_r(\d+)(_w\d+n\d+)?\.npz", os.path.basename(p))
        z = np.load(p)
        runs.setdefault((m.group(1), int(m.group(2)), m.group(4) or ""), []).append((int(m.group(3)), z))
    return runs


def report(out_dir, json_path=None):
    runs = load_runs(out_dir)
    out = {}
    print(f"NUTS reference spread: runs in {out_dir} (runner `hmc` cell: 4 chains × (100 + 100), max tree depth 10)")
    print(f"{'set':>7} {'sp':>2} {'run':>5} {'RMSE':>7} {'LL':>7} {'R̂(F)max':>8} {'R̂(F)med':>8} {'depth':>5} {'CPU s':>6} {'load':>5}")
    for (ds, sp, tag), lst in sorted(runs.items()):
        lst.sort(key=lambda t: t[0])
        y, s = lst[0][1]["y_test"], float(lst[0][1]["y_std"])
        singles = {}
        for seed, z in lst:
            diag, info = json.loads(str(z["diag"])), json.loads(str(z["info"]))
            rmse, ll = float(z["runner_rmse"]), float(z["runner_ll"])
            singles[seed] = (rmse, ll)
            print(f"{ds:>7} {sp:2d} {'r' + str(seed):>5} {rmse:7.3f} {ll:+7.3f} {diag['rhat_pred_max']:8.3f} "
                  f"{diag['rhat_pred_median']:8.3f} {info['frac_max_tree_depth']:5.2f} {float(z['cpu_s']):6.0f} "
                  f"{float(z['load']):5.2f}")
        rm = np.array([v[0] for v in singles.values()])
        lls = np.array([v[1] for v in singles.values()])
        pp = reference.pooled_predictive([z["F"] for _, z in lst], [z["delta_y"] for _, z in lst], y)
        prmse = float(np.sqrt(np.mean((pp.mean - y) ** 2))) * s
        pll = float(np.mean(pp.lpd)) - math.log(s)
        Fall = np.concatenate([z["F"] for _, z in lst], axis=0)
        dall = reference.prediction_diagnostics(Fall)
        k = len(lst)
        sd = (f"sd over {k} runs: RMSE {rm.std(ddof=1):.3f}, LL {lls.std(ddof=1):.3f} "
              f"(range {rm.min():.3f}–{rm.max():.3f}, {lls.min():+.3f}–{lls.max():+.3f})") if k > 1 else "one run"
        print(f"{ds:>7} {sp:2d} {'pool':>5} {prmse:7.3f} {pll:+7.3f} {dall['rhat_pred_max']:8.3f} "
              f"{dall['rhat_pred_median']:8.3f} {'':>5} {'':>6} {'':>5}   ({4 * k} chains; {sd})")
        if (ds, sp) in ISSUE:
            r0, l0 = ISSUE[(ds, sp)]
            print(f"{ds:>7} {sp:2d} {'issue':>5} {r0:7.3f} {l0:+7.3f}   (the issue-15 table)")
        entry = {"pooled": [prmse, pll], "pooled_rhat_f_max": dall["rhat_pred_max"], "runs": k,
                 "single": {str(r): list(v) for r, v in singles.items()}}
        if tag:          # another budget: printed, and kept under "_budgets", not as the pooled reference
            print(f"{ds:>7} {sp:2d} {'':>5} (runs above: budget {tag[2:]})")
            out.setdefault("_budgets", {})[f"{ds}/{sp}/{tag[2:]}"] = entry
            continue
        entry.update(sd_rmse=float(rm.std(ddof=1)) if k > 1 else None,
                     sd_ll=float(lls.std(ddof=1)) if k > 1 else None)
        out[f"{ds}/{sp}"] = entry
    if json_path:
        with open(json_path, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {json_path}")
    return out


def score(pooled_json):
    """The gold_hmc_long cells against (a) gibbs_gold.py's default table, (b) each single NUTS run,
    (c) the pooled reference; counts of cells where the figure is met under each reading."""
    with open(pooled_json) as f:
        ref = json.load(f)
    print(f"gold_hmc_long() test cells (docs/gibbs-moves.md §6) against three readings of the NUTS reference; "
          f"figure: RMSE ×≤1.15 and ΔLL ≥ −0.1")
    print(f"{'cell':>10} {'seed':>4} {'RMSE / LL':>15} | {'table (gibbs_gold.NUTS)':>33} | "
          f"{'single NUTS runs r0, r1, ...: ratio/ΔLL met':<60} | {'pooled':>30}")
    tally = {"table": [0, 0], "pooled": [0, 0], "single": [0, 0], "all_single": [0, 0], "any_single": [0, 0],
             "other_budget": [0, 0], "other_budget_pooled": [0, 0]}
    budgets = ref.get("_budgets", {})
    for (ds, sp, gs), (rm, ll) in sorted(GOLD_LONG.items(), key=lambda t: (t[0][0], t[0][1], t[0][2])):
        key = f"{ds}/{sp}"
        if key not in ref:
            continue
        t = NUTS[(ds, sp)]
        tr, td, tm = figure(rm, ll, t)
        tally["table"][0] += tm
        tally["table"][1] += 1
        singles = []
        for r, v in sorted(ref[key]["single"].items(), key=lambda kv: int(kv[0])):
            sr, sd, sm = figure(rm, ll, v)
            singles.append((r, sr, sd, sm))
            tally["single"][0] += sm
            tally["single"][1] += 1
        tally["all_single"][0] += all(x[3] for x in singles)
        tally["any_single"][0] += any(x[3] for x in singles)
        tally["all_single"][1] += 1
        tally["any_single"][1] += 1
        pr, pd, pm = figure(rm, ll, ref[key]["pooled"])
        tally["pooled"][0] += pm
        tally["pooled"][1] += 1
        ss = " ".join(f"{x[1]:.2f}/{x[2]:+.2f}{'' if x[3] else '*'}" for x in singles)
        extra = []
        for bkey, b in sorted(budgets.items()):
            if not bkey.startswith(key + "/"):
                continue
            for r, v in sorted(b["single"].items(), key=lambda kv: int(kv[0])):
                br, bd, bm = figure(rm, ll, v)
                tally["other_budget"][0] += bm
                tally["other_budget"][1] += 1
                extra.append(f"{bkey.split('/')[-1]} r{r} {v[0]:.3f}/{v[1]:+.3f}: {br:.2f}/{bd:+.2f} {'met' if bm else 'SHORT'}")
            if b["runs"] > 1:
                br, bd, bm = figure(rm, ll, b["pooled"])
                tally["other_budget_pooled"][0] += bm
                tally["other_budget_pooled"][1] += 1
                extra.append(f"{bkey.split('/')[-1]} pooled {b['pooled'][0]:.3f}/{b['pooled'][1]:+.3f}: "
                             f"{br:.2f}/{bd:+.2f} {'met' if bm else 'SHORT'}")
        print(f"{ds + ' ' + str(sp):>10} {gs:4d} {rm:7.3f}/{ll:+.3f} | {t[0]:.3f}/{t[1]:+.3f} ({t[2]:>13}) "
              f"{tr:.2f}/{td:+.2f} {'met' if tm else 'SHORT':>5} | {ss:<60} | "
              f"{ref[key]['pooled'][0]:.3f}/{ref[key]['pooled'][1]:+.3f} {pr:.2f}/{pd:+.2f} {'met' if pm else 'SHORT':>5}"
              + (" | " + "; ".join(extra) if extra else ""))
    print("(* = short against that single run)")
    for k, (m, n) in tally.items():
        label = {"table": "the default table (issue's; library cells where the issue has none)",
                 "single": "single NUTS runs (cell × run pairs)", "all_single": "every single run at once",
                 "any_single": "at least one single run", "pooled": "the pooled reference",
                 "other_budget": "single runs at another budget (cell × run pairs)",
                 "other_budget_pooled": "runs at another budget pooled (where ≥ 2)"}[k]
        print(f"met against {label}: {m} of {n}")
    return tally


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--dataset", required=True)
    r.add_argument("--split", type=int, required=True)
    r.add_argument("--seeds", type=int, nargs="+", required=True)
    r.add_argument("--out-dir", default="/work/scratch/nuts15")
    r.add_argument("--force", action="store_true", help="rerun cells whose npz exists")
    r.add_argument("--pin", type=int, default=None,
                   help="pin every thread to this CPU after the JAX client is created (keeps the runner's "
                        "2-thread XLA pool on this 2-core machine; see pin_after_start)")
    r.add_argument("--num-warmup", type=int, default=100, help="per chain (the runner's hmc cell: 100)")
    r.add_argument("--num-samples", type=int, default=100, help="per chain (the runner's hmc cell: 100)")
    r.add_argument("--save-weights", action="store_true",
                   help="also save every draw's weights (W0, W1, ...; for gibbs_gold.py --start-from-npz)")
    p = sub.add_parser("report")
    p.add_argument("--out-dir", default="/work/scratch/nuts15")
    p.add_argument("--json", default=None)
    q = sub.add_parser("score")
    q.add_argument("--json", default="/work/scratch/nuts15/pooled_reference.json")
    a = ap.parse_args(argv)
    if a.cmd == "score":
        score(a.json)
        return 0
    if a.cmd == "run":
        os.makedirs(a.out_dir, exist_ok=True)
        print(f"blockbayes from {bb.__file__}; load {os.getloadavg()[0]:.2f}", flush=True)
        budget = (a.num_warmup, a.num_samples)
        if a.pin is not None:
            print(f"pinned to CPU {a.pin} after the JAX client started; threads {pin_after_start(a.pin)}", flush=True)
        for seed in a.seeds:
            if os.path.exists(run_path(a.out_dir, a.dataset, a.split, seed, budget)) and not a.force:
                print(f"skip {a.dataset} {a.split} r{seed}: exists", flush=True)
                continue
            run_one(a.dataset, a.split, seed, a.out_dir, budget, save_weights=a.save_weights)
    else:
        report(a.out_dir, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
