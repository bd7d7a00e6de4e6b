"""The invariance study: where mean-field VI fails and block methods do not.

Usage (one command reproduces docs/invariances.md and its plots)::

    nice -n 19 python benchmarks/invariances.py                 # full grid (~25 min on a busy 2-core box)
    python benchmarks/invariances.py --quick                    # smoke run (tiny grid)
    python benchmarks/invariances.py --report-only              # re-render from results/invariances

Teacher–student regression (EVALUATION.md §1.3 style): a teacher ``MLP([5, 4, 1])`` drawn from the
fan-in prior, noise-free hidden layers, output noise ``Δ_y = 0.05``; ``n`` training points and
2000 test points, inputs ``N(0, I)``. Students: one hidden ReLU layer of width ``H``. For each
``(n, H)``:

* MAP, the 5-member ensemble and block Gibbs (the ``bb.evaluate`` methods, same settings as the
  UCI table), and four VI posteriors: mean-field Bayes-by-backprop (``vi_mf``), IVON (``vi_ivon``),
  VOGN (``vi_vogn``) — each with the registry defaults — and block VI (Rao–Blackwellised block
  posterior of the noisy network from one MAP start, as ``vi_block``);
* train and test RMSE and mean log predictive density;
* for every VI posterior: the invariance gap ``G(q) = E_q[log q − log q̄]`` over the ``H!`` hidden-unit
  permutations (exact enumeration, ``H ≤ 8``; :func:`blockbayes.vi.symmetry.invariance_gap`), and
  the share of hidden units whose ``q`` has collapsed to the prior (marginal KL to the prior below
  0.1 nats per parameter; :func:`blockbayes.vi.symmetry.collapsed_share`);
* the symmetry-aware variant: ``q̄``, ``q`` symmetrised over the group. Its gap is 0 and its ELBO
  is ``ELBO(q) + G(q)``; its predictive is exactly ``q``'s (``F_{πw} = F_w``).
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import blockbayes as bb  # noqa: E402
from blockbayes.evaluate import get_method  # noqa: E402
from blockbayes.evaluate._methods import Arch  # noqa: E402
from blockbayes.vi import symmetry  # noqa: E402

D_IN, TEACHER_H, DELTA_Y, N_TEST = 5, 4, 0.05, 2000
BASELINES = {"map": {}, "ensemble": {}, "gibbs": dict(num_warmup=300, num_samples=100, thin=3, num_chains=4)}
VI = ("vi_mf", "vi_ivon", "vi_vogn", "vi_block")
ALL = tuple(BASELINES) + VI


def teacher_data(n, seed):
    net = bb.MLP([D_IN, TEACHER_H, 1], "relu", delta={"y": DELTA_Y})
    data, _ = bb.datasets.teacher_student(net, n, N_TEST, seed=seed, noisy=False, return_aux=False)
    return data


def fit_vi(name, X, y, H, seed):
    """The VI posterior ``q`` (a VIResult) with the settings of the registry method ``name``."""
    std = bb.MLP([D_IN, H, 1], "relu", delta={"y": 0.1})
    if name == "vi_mf":
        return bb.vi.run(std, X, y, method="mean_field", learn_noise=True, seed=seed, progress=False)
    if name in ("vi_ivon", "vi_vogn"):
        o = get_method(name).defaults
        n = X.shape[0]
        bs = min(o["batch_size"], n)
        return bb.vi.run(bb.MLP([D_IN, H, 1], "relu", delta={"y": o["delta_y"]}), X, y, method=o["vi_method"],
                         num_steps=o["epochs"] * (n // bs), batch_size=bs, lr=o["lr"], hess_init=o["hess_init"],
                         beta2=o["beta2"], learn_noise=True, seed=seed, progress=False,
                         max_steps=(o.get("options") or {}).get("max_steps"))
    if name == "vi_block":
        w, _ = bb.laplace.map_fit(std, X, y, seed=seed, progress=False, return_info=True)
        noisy = bb.MLP([D_IN, H, 1], "relu", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
        init = [np.repeat(np.asarray(a)[None], 4, axis=0) for a in w]
        return bb.vi.run(noisy, X, y, method="rao_blackwell", init=init, num_warmup=100, num_samples=100,
                         learn_noise=True, seed=seed, progress=False)
    raise ValueError(name)


def metrics_of(predict, lpd, data):
    out = {}
    for part, X, y in (("train", data.X_train, data.y_train), ("test", data.X_test, data.y_test)):
        m, _ = predict(X)
        out[f"{part}_rmse"] = float(np.sqrt(np.mean((np.ravel(m) - np.ravel(y)) ** 2)))
        out[f"{part}_ll"] = float(np.mean(lpd(X, y)))
    return out


def run_cell(name, data, H, seed):
    t0 = time.perf_counter()
    X, y = data.X_train, data.y_train
    if name in BASELINES:
        m = get_method(name)
        p = m.fit(Arch(D_IN, (H,), "regression"), X, y, seed=seed, **m.options(BASELINES[name]))
        rec = metrics_of(p.predict, p.lpd, data)
    else:
        q = fit_vi(name, X, y, H, seed)
        rec = metrics_of(lambda Z: q.predict(Z, num_samples=300, seed=1),
                         lambda Z, t: q.log_predictive_density(Z, t, reduce=False, num_samples=300, seed=1), data)
        rec["collapsed"] = symmetry.collapsed_share(q)
        m_out = np.abs(np.asarray(q.means[1][q.best, 0, :-1])) * math.sqrt(q.net.lam_w[1])
        rec["pruned"] = float(np.mean(m_out < 0.2))          # outgoing mean below 0.2 prior sd
        rec["unit_kl_in"] = sorted(float(v) for v in np.asarray(symmetry.unit_kl(q, part="in")))
        if H <= symmetry.MAX_ENUMERATED_WIDTH:
            g = symmetry.invariance_gap(q, num_samples=100 if H <= 7 else 30, seed=2)
            rec.update(gap=g.gap, gap_se=g.se, log_group=g.log_group)
        rec["delta_y"] = float(np.ravel(q.delta_y)[q.best])
    rec["time_s"] = time.perf_counter() - t0
    return rec


def plots(rows, ns, widths, img: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img.mkdir(parents=True, exist_ok=True)
    files = []
    fig, axes = plt.subplots(1, len(ns), figsize=(5 * len(ns), 3.6), squeeze=False)
    for ax, n in zip(axes[0], ns):
        for name in VI:
            pts = [(H, rows[(n, H, name)]["gap"] / rows[(n, H, name)]["log_group"]) for H in widths
                   if (n, H, name) in rows and "gap" in rows[(n, H, name)]]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_title(f"invariance gap / log H!  (n = {n})")
        ax.set_xlabel("hidden width H")
        ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img / "invariances_gap.png", dpi=110)
    files.append("invariances_gap.png")
    plt.close(fig)
    for metric, lab in (("test_ll", "test log predictive density"), ("train_rmse", "train RMSE"),
                        ("test_rmse", "test RMSE"), ("collapsed", "share of collapsed hidden units"),
                        ("pruned", "share of pruned hidden units")):
        fig, axes = plt.subplots(1, len(ns), figsize=(5 * len(ns), 3.6), squeeze=False)
        for ax, n in zip(axes[0], ns):
            for name in ALL:
                pts = [(H, rows[(n, H, name)][metric]) for H in widths
                       if (n, H, name) in rows and metric in rows[(n, H, name)]]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=name, linestyle="--" if name in BASELINES else "-")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{lab} (n = {n})")
            ax.set_xlabel("hidden width H")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(img / f"invariances_{metric}.png", dpi=110)
        files.append(f"invariances_{metric}.png")
        plt.close(fig)
    return files


def render(rows, ns, widths, doc: Path, cmd: str):
    L = ["# Invariances: where mean-field VI fails and block methods do not", "",
         f"Generated by `{cmd}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
         "(do not edit by hand; the discussion below the tables is written by hand in the script's "
         "`DISCUSSION`).", "",
         "## Setting", "",
         f"Teacher `MLP([{D_IN}, {TEACHER_H}, 1])` from the fan-in prior, noise-free hidden layer, output noise "
         f"Δ_y = {DELTA_Y}; n training points and {N_TEST} test points (one teacher, seed 0). Students: one hidden "
         "ReLU layer of width H, fan-in prior. Methods as in `bb.evaluate` (registry defaults; Gibbs: 4 chains "
         "from MAP fits, 300 warm-up + 100×3 sweeps; block VI: Rao–Blackwellised block posterior of 4 chains "
         "from one MAP fit, 100 + 100 sweeps, Δ_Z = Δ_X = 1e-3). One seed per cell.", "",
         "The invariance gap G(q) = E_q[log q(w) − log q̄(w)], q̄ the mixture of q over all H! permutations of "
         "the hidden units, enumerated exactly (H ≤ 8); 0 ≤ G ≤ log H!, and ELBO(q̄) = ELBO(q) + G(q). "
         "Shown as G / log H! (1: the H! copies of q do not overlap; 0: q is itself invariant). "
         "Collapsed: share of hidden units whose incoming row's marginal KL to the prior is below 0.1 nats per "
         "parameter (the unit's q has returned to the prior); pruned: share whose outgoing mean is below 0.2 "
         "prior standard deviations (the unit is switched off; its outgoing weight is then pinned near 0 with a "
         "small variance, since any weight there adds output noise at every data point).", ""]
    for n in ns:
        L += [f"## n = {n}", "",
              "| H | method | train RMSE | test RMSE | train LL | test LL | G (nats) | G / log H! | collapsed | pruned | time (s) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for H in widths:
            for name in ALL:
                r = rows.get((n, H, name))
                if r is None:
                    continue
                gap = f"{r['gap']:.2f}±{r['gap_se']:.2f}" if "gap" in r else "–"
                rel = f"{r['gap'] / r['log_group']:.2f}" if "gap" in r and r["log_group"] > 0 else "–"
                col = f"{r['collapsed']:.2f}" if "collapsed" in r else "–"
                pr = f"{r['pruned']:.2f}" if "pruned" in r else "–"
                L.append(f"| {H} | {name} | {r['train_rmse']:.3f} | {r['test_rmse']:.3f} | {r['train_ll']:.3f} | "
                         f"{r['test_ll']:.3f} | {gap} | {rel} | {col} | {pr} | {r['time_s']:.0f} |")
        L.append("")
    L += ["## Plots", ""]
    for f in ("invariances_gap.png", "invariances_test_ll.png", "invariances_train_rmse.png",
              "invariances_test_rmse.png", "invariances_collapsed.png", "invariances_pruned.png"):
        L.append(f"![{f}](img/{f})")
    L += ["", "## Symmetry-aware variant: q̄ (q symmetrised over the permutation group)", "",
          "q̄ closes the gap by construction: G(q̄) = 0 and ELBO(q̄) = ELBO(q) + G(q), i.e. the bound improves "
          "by exactly the G column above. But F_{πw} = F_w, so every prediction of q̄ equals q's: the "
          "rows above are unchanged. Symmetrising after the fit therefore cannot repair underfitting; only "
          "an objective that rewards symmetry breaking *during* the fit (maximising ELBO(q̄) instead of "
          "ELBO(q)) could change which q is found. That was not run here.", ""]
    L += DISCUSSION
    doc.write_text("\n".join(L) + "\n")


DISCUSSION = """## Reading (written after the run of 2026-12-03; one teacher, one seed per cell)

* **Who breaks the symmetry.** IVON (registry defaults: h0 = 10, β2 = 0.9999, so its variance stays
  near the small initial one) and block VI keep every hidden unit distinct: G = log H! exactly
  (their curve hides under block VI's in the gap plot), i.e. their q gives up the full log H! nats
  that q̄ would recover. Mean-field Bayes-by-backprop and VOGN — the two methods that head for the
  mean-field ELBO optimum — fall below log H!: at H = 8, G / log H! = 0.63 (vi_mf) and
  0.73 (VOGN) at n = 100, 0.71 and 0.49 at n = 400. The gap drops because units become
  interchangeable: *pruned* units (outgoing mean ≈ 0, incoming row back at the prior) are nearly
  identical, and permuting identical units does not change q.
* **Pruning grows with width.** vi_mf prunes 50–81% of the units from H = 4 on at n = 100 (and
  its incoming rows collapse to the prior: 25–78% collapsed), VOGN 25–91% over both n (its outgoing
  means go to 0, but its incoming rows sit at ≈ 0.5 nats per parameter from the prior: at n = 100
  the 500-epoch budget is 1500 steps and 0.999^1500 = 22% of s0 = 1 is still in s, so σ² is held
  at ≈ 0.2 of the prior variance — a step-budget artefact, not a fixed point), IVON 0–50% and
  block VI 0–50% (the 50% at H = 32, where the teacher has only 4 units; IVON's 50% is one of two
  units at H = 2, n = 400).
* **Underfitting.** For H ≥ 8 the pruning methods have the highest training error: at n = 100
  train RMSE 0.20–0.21 for vi_mf and VOGN against 0.16–0.19 for MAP, the ensemble, Gibbs, IVON
  and block VI; at n = 400, 0.225–0.228 against 0.205–0.221 (at H ≤ 4 the order is mixed: MAP
  found a poor optimum at n = 100, H = 4). With a width-4 teacher and Δ_y = 0.05 (noise sd
  0.224) this underfitting costs little on the test set: at n = 100, H ≥ 8, the pruned fits even
  have the best test RMSE (0.232–0.237 vs 0.242–0.264; the full-width fits overfit 100 points),
  and at n = 400 every method's test RMSE is within 0.012 of the noise floor (0.226–0.235). The teacher here is too
  small for underfitting to hurt — a wider teacher (or UCI, where VOGN's validation LL trails
  IVON's by 0.01–0.72 nats, docs/data/vi_natural_tuning.md) is where it shows.
* **The symmetry-aware variant (q̄) does not change this.** q̄ closes the gap (G = 0) and raises the
  ELBO by G, up to log 8! = 10.6 nats at H = 8 — but its predictive equals q's, so all the rows
  above stand. Maximising ELBO(q̄) during the fit (which would reward distinct, unpruned units by
  up to log H! nats) is the experiment that could change the fitted q; it was not run.
* **Scope.** Exact enumeration limits G to H ≤ 8; pruning/collapse shares are reported for all
  widths. One teacher and one seed per cell: differences below ≈ 0.01 in RMSE are noise.
""".split("\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="100,400")
    ap.add_argument("--widths", default="2,4,8,16,32")
    ap.add_argument("--methods", default=",".join(ALL))
    ap.add_argument("--out", default=str(ROOT / "results" / "invariances"))
    ap.add_argument("--doc", default=str(ROOT / "docs" / "invariances.md"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.ns, a.widths = "60", "2,3"
        a.out = str(Path(a.out) / "quick")
        a.doc = str(Path(a.out) / "invariances.md")
    ns = [int(v) for v in a.ns.split(",")]
    widths = [int(v) for v in a.widths.split(",")]
    methods = a.methods.split(",")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for n in ns:
        data = teacher_data(n, seed=0)
        for H in widths:
            for name in methods:
                f = out / f"n{n}_H{H}_{name}.json"
                if f.exists():
                    rows[(n, H, name)] = json.loads(f.read_text())
                    continue
                if a.report_only:
                    continue
                try:
                    rec = run_cell(name, data, H, seed=0)
                except Exception as exc:                  # report, never lose the whole study
                    print(f"[invariances] n={n} H={H} {name}: FAILED {type(exc).__name__}: {exc}", flush=True)
                    continue
                f.write_text(json.dumps(rec))
                rows[(n, H, name)] = rec
                print(f"[invariances] n={n} H={H} {name}: " + ", ".join(
                    f"{k}={v:.3g}" for k, v in rec.items() if isinstance(v, float)), flush=True)
    doc = Path(a.doc)
    try:
        plots(rows, ns, widths, doc.parent / "img")
    except ImportError as exc:
        print(f"[invariances] plots skipped ({exc})")
    cmd = "python benchmarks/invariances.py" + (" --quick" if a.quick else "")
    render(rows, ns, widths, doc, cmd)
    print(f"[invariances] wrote {doc}")


if __name__ == "__main__":
    main()
