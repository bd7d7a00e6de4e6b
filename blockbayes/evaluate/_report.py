"""Aggregation and output of :mod:`blockbayes.evaluate`: summary statistics, CSV, JSON, Markdown
and (optional, matplotlib Agg) plots."""
from __future__ import annotations

import csv
import json
import math
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ._data import json_default as _json_default

__all__ = ["summarize", "markdown", "write_reports", "learning_curve_area", "effective_data_ratio",
           "effective_data_ratio_curve", "effective_data_ratios", "aulc", "METRIC_INFO"]

# name -> (heading, higher is better)
METRIC_INFO = {
    "rmse": ("test RMSE (original units)", False),
    "ll": ("test log-likelihood (original units)", True),
    "crps": ("CRPS (original units, Gaussian moment match)", False),
    "cov95": ("95% interval coverage", None),
    "accuracy": ("accuracy", True),
    "nll": ("NLL (mean −log p̄(y|x))", False),
    "brier": ("Brier (sum over classes)", False),
    "ece": ("ECE (top-label, equal-width bins)", False),
    "mce": ("MCE", False),
}


def _size_key(s):
    return math.inf if s == "full" else float(s)


def _stat(values) -> dict:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "se": None, "sd": None, "n": 0}
    sd = float(v.std(ddof=1)) if v.size > 1 else None
    return {"mean": float(v.mean()), "se": sd / math.sqrt(v.size) if sd is not None else None, "sd": sd,
            "n": int(v.size)}


def summarize(cells) -> list:
    """Mean ± standard error (``sd/√k``, ddof 1) over splits × seeds per (dataset, method, size)."""
    groups = OrderedDict()
    for c in cells:
        groups.setdefault((c["dataset"], c["method"], c["size"]), []).append(c)
    out = []
    for (ds, meth, size), cs in groups.items():
        ok = [c for c in cs if c.get("status") == "ok"]
        names = []
        for c in ok:
            for k in c["metrics"]:
                if k not in names:
                    names.append(k)
        row = {"dataset": ds, "method": meth, "size": size, "count": len(ok), "failed": len(cs) - len(ok),
               "n_train": int(np.median([c["n_train"] for c in cs])), "metrics": names,
               "splits": sorted({c["split"] for c in ok}), "seeds": sorted({c["seed"] for c in ok})}
        for k in names:
            row[k] = _stat([c["metrics"].get(k) for c in ok])
        for k in ("fit_time_s", "predict_time_s", "wall_time_s", "peak_mem_mb"):
            row[k] = _stat([c.get(k) for c in ok])
        out.append(row)
    out.sort(key=lambda r: (r["dataset"], _size_key(r["size"])))
    return out


def _pm(st, digits) -> str:
    if st is None or st["mean"] is None:
        return "–"
    m = st["mean"]
    fmt = (lambda x: f"{x:.{digits}f}") if abs(m) < 1e4 else (lambda x: f"{x:.3g}")
    if abs(m) < 10 ** -digits and m != 0:
        fmt = lambda x: f"{x:.2e}"   # noqa: E731
    if st["se"] is None:
        return fmt(m)
    return f"{fmt(m)} ± {fmt(st['se'])}"


def markdown(summary, *, title=None, digits: int = 3, metrics=None) -> str:
    """Markdown tables: one per metric, rows dataset × size, one column per method (mean ± SE)."""
    lines = []
    if title:
        lines += [f"# {title}", ""]
    if not summary:
        return "\n".join(lines + ["(no results)"])
    methods = []
    for r in summary:
        if r["method"] not in methods:
            methods.append(r["method"])
    names = []
    for r in summary:
        for k in r["metrics"]:
            if k not in names:
                names.append(k)
    if metrics is not None:
        names = [k for k in metrics if k in names]
    rows = OrderedDict()
    for r in summary:
        rows.setdefault((r["dataset"], r["size"], r["n_train"]), {})[r["method"]] = r
    lines.append("Mean ± standard error (sd/√k over k = splits × seeds); k per cell in the last table.")
    lines.append("")
    for k in names + ["fit_time_s", "peak_mem_mb", "count"]:
        head = METRIC_INFO.get(k, (k, None))
        heading = {"fit_time_s": "fit time (s)", "peak_mem_mb": "peak memory (MiB)", "count": "k (cells ok / failed)"}.get(k, head[0])
        better = "" if head[1] is None else (" — higher is better" if head[1] else " — lower is better")
        lines += [f"### {heading}{better}", "", "| dataset | n_train | " + " | ".join(methods) + " |",
                  "|---|---|" + "---|" * len(methods)]
        for (ds, size, n), by in rows.items():
            cells = []
            for m in methods:
                r = by.get(m)
                if r is None:
                    cells.append("–")
                elif k == "count":
                    cells.append(f"{r.get('count', '–')}" + (f" / {r['failed']}" if r.get("failed") else ""))
                else:
                    cells.append(_pm(r.get(k), digits if k != "fit_time_s" else 1))
            lines.append(f"| {ds} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    aulc = {k: learning_curve_area(summary, k) for k in names}
    if any(aulc.values()):
        lines += ["### Area under the learning curve (mean of the metric over log n)", "",
                  "| dataset | metric | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
        for k, by in aulc.items():
            for ds in dict.fromkeys(d for d, _ in by):
                lines.append(f"| {ds} | {k} | " + " | ".join(
                    f"{by[(ds, m)]:.{digits}f}" if (ds, m) in by else "–" for m in methods) + " |")
        lines.append("")
    return "\n".join(lines)


_CELL_COLUMNS = ["dataset", "method", "method_name", "split", "seed", "size", "n_train", "n_test", "status"]


def _flat_cells(cells):
    metric_names, diag_names = [], []
    for c in cells:
        for k in (c.get("metrics") or {}):
            if k not in metric_names:
                metric_names.append(k)
        for k, v in (c.get("diagnostics") or {}).items():
            if isinstance(v, (int, float, bool)) and k not in diag_names:
                diag_names.append(k)
    cols = _CELL_COLUMNS + metric_names + ["fit_time_s", "predict_time_s", "wall_time_s", "peak_mem_mb",
                                           "mem_mode"] + [f"diag_{k}" for k in diag_names] + ["hash", "error"]
    rows = []
    for c in cells:
        r = {k: c.get(k) for k in _CELL_COLUMNS}
        r.update({k: (c.get("metrics") or {}).get(k) for k in metric_names})
        for k in ("fit_time_s", "predict_time_s", "wall_time_s", "peak_mem_mb", "mem_mode", "hash", "error"):
            r[k] = c.get(k)
        d = c.get("diagnostics") or {}
        r.update({f"diag_{k}": d.get(k) for k in diag_names})
        rows.append(r)
    return cols, rows


def _write_csv(path: Path, cols, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})


def _summary_rows(summary):
    base = ["dataset", "method", "size", "n_train", "count", "failed"]
    cols = list(base)
    rows = []
    for s in summary:
        r = {k: s[k] for k in base}
        for k in list(s["metrics"]) + ["fit_time_s", "peak_mem_mb"]:
            st = s.get(k) or {}
            r[k] = st.get("mean")
            r[f"{k}_se"] = st.get("se")
            for c in (k, f"{k}_se"):
                if c not in cols:
                    cols.append(c)
        rows.append(r)
    return cols, rows


def write_reports(res, out: Path, *, plots=True, title=None) -> dict:
    """``cells.csv``, ``summary.csv``, ``results.json``, ``summary.md`` and plots under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    cols, rows = _flat_cells(res.cells)
    paths["cells_csv"] = out / "cells.csv"
    _write_csv(paths["cells_csv"], cols, rows)
    scols, srows = _summary_rows(res.summary)
    paths["summary_csv"] = out / "summary.csv"
    _write_csv(paths["summary_csv"], scols, srows)
    paths["json"] = out / "results.json"
    slim = [{k: v for k, v in c.items() if k != "traces"} for c in res.cells]
    with open(paths["json"], "w") as f:
        json.dump({"config": res.config, "summary": res.summary, "cells": slim,
                   "computed": res.computed, "cached": res.cached, "failed": res.failed},
                  f, indent=1, default=_json_default)
    paths["markdown"] = out / "summary.md"
    paths["markdown"].write_text(markdown(res.summary, title=title or "blockbayes evaluation") + "\n")
    if plots:
        try:
            paths.update(_plots(res, out))
        except ImportError as exc:
            warnings.warn(f"plots skipped: {exc}", RuntimeWarning, stacklevel=2)
    return {k: str(v) for k, v in paths.items()}


def _plots(res, out: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    paths = {}
    pdir = out / "plots"
    pdir.mkdir(exist_ok=True)
    datasets = []
    for s in res.summary:
        if s["dataset"] not in datasets:
            datasets.append(s["dataset"])
    for ds in datasets:
        rows = [s for s in res.summary if s["dataset"] == ds and s["count"] > 0]
        sizes = sorted({s["n_train"] for s in rows})
        names = [k for k in ("rmse", "ll", "accuracy", "nll", "ece") if any(k in s["metrics"] for s in rows)]
        if len(sizes) > 1 and names:
            fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
            for ax, k in zip(axes[0], names):
                for m in dict.fromkeys(s["method"] for s in rows):
                    pts = sorted((s["n_train"], s[k]["mean"], s[k]["se"] or 0.0) for s in rows
                                 if s["method"] == m and k in s["metrics"] and s[k]["mean"] is not None)
                    if pts:
                        x, y, e = map(np.asarray, zip(*pts))
                        ax.errorbar(x, y, yerr=e, marker="o", ms=3, capsize=2, label=m)
                ax.set_xscale("log")
                ax.set_xticks(sizes, [str(v) for v in sizes])      # the grid itself, no log-formatter clutter
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                ax.tick_params(axis="x", labelsize=7)
                ax.set_xlabel("training points n")
                ax.set_title(METRIC_INFO.get(k, (k,))[0], fontsize=9)
            axes[0][0].legend(fontsize=7)
            fig.suptitle(f"{ds}: learning curves (mean ± SE)", fontsize=10)
            fig.tight_layout()
            p = pdir / f"learning_curves_{ds}.png"
            fig.savefig(p, dpi=110)
            plt.close(fig)
            paths[f"learning_curves_{ds}"] = p
        # reliability diagrams at the largest size, pooled over splits and seeds
        cells = [c for c in res.cells if c["dataset"] == ds and c.get("status") == "ok" and "reliability" in c]
        if cells:
            nmax = max(c["n_train"] for c in cells)
            methods = list(dict.fromkeys(c["method"] for c in cells))
            fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods), 3.2), squeeze=False)
            for ax, m in zip(axes[0], methods):
                cnt = conf = acc = None
                for c in cells:
                    if c["method"] != m or c["n_train"] != nmax:
                        continue
                    r = c["reliability"]
                    k = np.asarray(r["count"], dtype=float)
                    cf = np.nan_to_num(np.asarray(r["confidence"], dtype=float))
                    ac = np.nan_to_num(np.asarray(r["accuracy"], dtype=float))
                    cnt = k if cnt is None else cnt + k
                    conf = k * cf if conf is None else conf + k * cf
                    acc = k * ac if acc is None else acc + k * ac
                M = cnt.size
                nz = cnt > 0
                centres = (np.arange(M) + 0.5) / M
                ax.bar(centres[nz], acc[nz] / cnt[nz], width=1 / M, edgecolor="k", alpha=0.7, label="accuracy")
                ax.plot(conf[nz] / cnt[nz], acc[nz] / cnt[nz], "o", ms=3, color="C3", label="(conf, acc)")
                ax.plot([0, 1], [0, 1], "k--", lw=0.8)
                ax.set_xlim(0, 1)
                ax.set_ylim(0, 1)
                ax.set_title(m, fontsize=9)
                ax.set_xlabel("confidence")
                ax2 = ax.twinx()
                ax2.step(centres, cnt / cnt.sum(), where="mid", color="0.5", lw=0.8)
                ax2.set_ylim(0, 1)
                ax2.set_yticks([])
            axes[0][0].set_ylabel("accuracy")
            fig.suptitle(f"{ds}: reliability (n = {nmax}, {M} equal-width bins, pooled)", fontsize=10)
            fig.tight_layout()
            p = pdir / f"reliability_{ds}.png"
            fig.savefig(p, dpi=110)
            plt.close(fig)
            paths[f"reliability_{ds}"] = p
        # traces of the first cell (smallest split and seed, largest size) of each method with traces
        tcells = [c for c in res.cells if c["dataset"] == ds and c.get("status") == "ok" and c.get("traces")]
        for m in dict.fromkeys(c["method"] for c in tcells):
            cs = sorted((c for c in tcells if c["method"] == m), key=lambda c: (c["split"], c["seed"], -c["n_train"]))
            c = cs[0]
            names = list(c["traces"])
            fig, axes = plt.subplots(len(names), 1, figsize=(6, 1.8 * len(names)), squeeze=False, sharex=True)
            for ax, k in zip(axes[:, 0], names):
                for i, tr in enumerate(c["traces"][k]):
                    ax.plot(tr, lw=0.7, label=f"chain {i}")
                ax.set_ylabel(k, fontsize=8)
                if k.startswith(("delta", "lam")):
                    ax.set_yscale("log")
            axes[-1, 0].set_xlabel("kept sample (thinned for plotting)")
            fig.suptitle(f"{ds} / {m}: split {c['split']}, seed {c['seed']}, n = {c['n_train']}", fontsize=9)
            fig.tight_layout()
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in m)
            p = pdir / f"traces_{ds}_{safe}.png"
            fig.savefig(p, dpi=100)
            plt.close(fig)
            paths[f"traces_{ds}_{m}"] = p
    return paths


def _curve(ns, values):
    ns = np.asarray(ns, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if ns.shape != v.shape or ns.ndim != 1:
        raise ValueError(f"sizes and values must be 1-D of one length, got {ns.shape} and {v.shape}")
    if np.any(ns <= 0) or not np.all(np.isfinite(ns)):
        raise ValueError("sizes must be positive and finite")
    o = np.argsort(ns)
    ns, v = ns[o], v[o]
    if np.any(np.diff(ns) == 0):
        raise ValueError("sizes must be distinct")
    return ns, v


def aulc(ns, values) -> float:
    """Area under a learning curve on the log-n axis, normalised by the log range.

    ``AULC = Σ_k ½ (m_k + m_{k+1}) (log n_{k+1} − log n_k) / (log n_K − log n_1)``: the mean of the
    metric over the log grid (trapezoid rule). Needs at least two sizes and finite values.
    """
    ns, v = _curve(ns, values)
    if ns.size < 2:
        raise ValueError("AULC needs at least two sizes")
    if not np.all(np.isfinite(v)):
        raise ValueError("AULC needs finite metric values")
    x = np.log(ns)
    return float(np.sum(0.5 * (v[1:] + v[:-1]) * np.diff(x)) / (x[-1] - x[0]))



def learning_curve_area(summary, metric: str) -> dict:
    """Area under the learning curve on a log-n axis, per (dataset, method).

    ``AULC = (1/(log n_max − log n_min)) ∫ m(n) d log n`` by the trapezoid rule over the sizes run
    (the mean of the metric over the log grid, EVALUATION.md §1.5). Needs at least two sizes.
    """
    curves = {}
    for r in summary:
        st = r.get(metric)
        if st and st.get("mean") is not None:
            curves.setdefault((r["dataset"], r["method"]), {})[r["n_train"]] = st["mean"]
    out = {}
    for k, pts in curves.items():
        if len(pts) < 2:
            continue
        ns = sorted(pts)
        vals = [pts[m] for m in ns]
        out[k] = aulc(ns, vals) if np.all(np.isfinite(vals)) else float("nan")
    return out


def _reach(ns, v, target, higher):
    """Smallest n (linear in log n between sizes) at which the curve reaches ``target``; bound flag."""
    sign = 1.0 if higher else -1.0
    good = sign * v >= sign * target
    if good[0]:
        return float(ns[0]), "<="
    for i in range(1, ns.size):
        if good[i]:
            v0, v1 = v[i - 1], v[i]
            t = (target - v0) / (v1 - v0)
            x = math.log(ns[i - 1]) + t * (math.log(ns[i]) - math.log(ns[i - 1]))
            return float(math.exp(x)), "="
    return float(ns[-1]), ">"


def effective_data_ratio_curve(ns, values, base_ns, base_values, *, higher_is_better: bool) -> list:
    """The effective data ratio of a method against a baseline at each of the method's sizes.

    **The one definition** used by every report (docs/evaluation.md, docs/data_efficiency.md):

    .. math::

        r(n) = n_B\big(m(n)\big) / n ,

    where ``m(n)`` is the method's mean test metric at ``n`` training points and ``n_B(v)`` the
    smallest training size at which the baseline's curve — linear in ``log n`` between the sizes
    it was run at — is as good as ``v``. ``r(n) > 1``: the baseline needs ``r`` times more data than
    the method to match the method's metric at ``n`` (the method is more data-efficient).

    Parameters
    ----------
    ns, values : sequence, shape (K,)
        The method's sizes and mean metric.
    base_ns, base_values : sequence, shape (K_B,)
        The baseline's.
    higher_is_better : bool
        Direction of the metric (accuracy, log-likelihood: True; NLL, ECE, RMSE: False).

    Returns
    -------
    list of (n, ratio, bound)
        ``bound`` is ``"="`` (interpolated), ``"<="`` (the baseline is already as good at its
        smallest size, so the ratio is at most this) or ``">"`` (the baseline never reaches the
        method's value within its sizes: the ratio exceeds this).
    """
    ns, v = _curve(ns, values)
    bn, bv = _curve(base_ns, base_values)
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(bv))):
        raise ValueError("effective_data_ratio needs finite metric values")
    out = []
    for n, val in zip(ns, v):
        nb, bound = _reach(bn, bv, float(val), bool(higher_is_better))
        out.append((int(n) if float(n).is_integer() else float(n), nb / float(n), bound))
    return out


def _summary_curve(summary, metric, method, dataset):
    return sorted((r["n_train"], r[metric]["mean"]) for r in summary
                  if r["dataset"] == dataset and r["method"] == method and r.get(metric)
                  and r[metric]["mean"] is not None)


def _direction(metric):
    higher = METRIC_INFO.get(metric, (None, None))[1]
    if higher is None:
        raise ValueError(f"metric {metric!r} has no better direction")
    return higher


def effective_data_ratios(summary, metric: str, method: str, baseline: str, dataset: str) -> list:
    """:func:`effective_data_ratio_curve` of ``method`` against ``baseline`` from a summary
    (:func:`summarize`): ``[(n, r(n), bound), ...]`` at each of the method's sizes."""
    higher = _direction(metric)
    a, b = _summary_curve(summary, metric, method, dataset), _summary_curve(summary, metric, baseline, dataset)
    if not a or not b:
        raise ValueError(f"no {metric!r} curve for {method!r} or {baseline!r} on {dataset!r}")
    return effective_data_ratio_curve(*zip(*a), *zip(*b), higher_is_better=higher)


def effective_data_ratio(summary, metric: str, method: str, baseline: str, dataset: str):
    """``n*/n_full``: the fraction of the baseline's largest training size at which ``method``
    reaches the baseline's metric there (EVALUATION.md §1.5).

    Not a second definition: it is :func:`effective_data_ratio_curve` with the roles swapped,
    read at the baseline's largest size ``N``, ``n*/N = r_{baseline vs method}(N)``, i.e. the
    reciprocal reading "the method needs ``n*/N`` of the data". Returns ``None`` when the
    method's curve never reaches it (bound ``">"``) and the smallest-size ratio (an upper bound,
    ``"<="``) when reached already there.
    """
    higher = _direction(metric)
    a, b = _summary_curve(summary, metric, method, dataset), _summary_curve(summary, metric, baseline, dataset)
    if not a or not b:
        raise ValueError(f"no {metric!r} curve for {method!r} or {baseline!r} on {dataset!r}")
    n_full, ratio, bound = effective_data_ratio_curve(*zip(*b), *zip(*a), higher_is_better=higher)[-1]
    return None if bound == ">" else ratio
