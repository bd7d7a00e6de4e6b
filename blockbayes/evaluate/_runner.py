"""The experiment runner: methods × datasets × training-set sizes × splits × seeds -> cells.

A *cell* is one fit and one evaluation: (method, dataset, split, seed, training size). Each cell
is written to ``out_dir/cells/<dataset>/<method label>/`` as a JSON file whose name carries a hash
of everything that determines it (method name and resolved options, dataset source, loader options
and network, split, seed, size, ECE bins, protocol version). A later call with the same
``out_dir`` loads finished cells instead of recomputing them, so a run can be interrupted and
resumed, or widened (more splits, sizes, methods) at the cost of the new cells only.
"""
from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
import tracemalloc
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ._budget import peak_rss_mb, reset_peak_rss, rss_mb
from ._data import DataSpec, resolve_dataset, stable_hash, subset_dataset
from ._data import json_default as _json_default
from ._methods import Arch, Method, get_method

__all__ = ["evaluate", "compare", "EvaluationResult", "Table", "score", "PROTOCOL_VERSION",
           "REGRESSION_METRICS", "CLASSIFICATION_METRICS"]

PROTOCOL_VERSION = 1
REGRESSION_METRICS = ("rmse", "ll", "crps", "cov95")
CLASSIFICATION_METRICS = ("accuracy", "nll", "brier", "ece", "mce")
_MEMORY_MODES = ("peak_rss", "tracemalloc", "rss", "none")


# ----------------------------------------------------------------------------------- results

class Table(list):
    """A list of row dicts with :meth:`to_markdown` (what :func:`compare` returns)."""

    def __init__(self, rows=(), columns=None):
        super().__init__(rows)
        self.columns = list(columns) if columns else (list(rows[0]) if rows else [])

    def to_markdown(self, digits: int = 3) -> str:
        cols = self.columns
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self:
            lines.append("| " + " | ".join(_fmt(r.get(c), digits) for c in cols) + " |")
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()


def _fmt(v, digits=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) >= 1e4 or (v != 0 and abs(v) < 1e-3) else f"{v:.{digits}f}"
    return str(v)


@dataclass
class EvaluationResult:
    """What :func:`evaluate` returns.

    Attributes
    ----------
    cells : list of dict
        One record per cell of the grid (computed now or loaded): ``dataset``, ``method`` (label),
        ``method_name``, ``split``, ``seed``, ``size`` (``"full"`` or an int), ``n_train``,
        ``n_test``, ``status`` (``"ok"``/``"error"``), ``metrics`` (original units), ``fit_time_s``,
        ``predict_time_s``, ``wall_time_s``, ``peak_mem_mb``, ``mem_mode``, ``diagnostics``,
        ``traces``, ``reliability`` (classification), ``options``, ``hash``.
    summary : list of dict
        Mean, standard error (sd/√k, ddof = 1) and count k over splits × seeds, per dataset,
        method and size.
    computed, cached, failed, missing : int
        Cells computed by this call, loaded from ``out_dir``, failed (recorded; recomputed by a
        later call unless ``retry_errors=False``), and skipped because ``compute=False``.
    paths : dict
        Files written (``cells_csv``, ``summary_csv``, ``json``, ``markdown``, plots).
    """

    cells: list
    summary: list
    computed: int = 0
    cached: int = 0
    failed: int = 0
    paths: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    missing: int = 0

    def to_markdown(self, **kw) -> str:
        from ._report import markdown

        return markdown(self.summary, **kw)

    def table(self, dataset: Optional[str] = None, size="full") -> Table:
        """Summary rows of one dataset (default: the first) at one size as a :class:`Table`."""
        rows = [r for r in self.summary if (dataset is None or r["dataset"] == dataset) and r["size"] == size]
        if dataset is None and rows:
            rows = [r for r in rows if r["dataset"] == rows[0]["dataset"]]
        return _summary_table(rows)


def _summary_table(rows) -> Table:
    out = []
    for r in rows:
        row = {"method": r["method"], "k": r["count"]}
        for m in r["metrics"]:
            row[m] = r[m]["mean"]
            row[f"{m}_se"] = r[m]["se"]
        row["fit_time_s"] = r["fit_time_s"]["mean"]
        row["peak_mem_mb"] = r["peak_mem_mb"]["mean"] if r["peak_mem_mb"]["mean"] is not None else None
        out.append(row)
    cols = []
    for row in out:
        for c in row:
            if c not in cols:
                cols.append(c)
    return Table(out, cols)


# ----------------------------------------------------------------------------------- scoring

def score(predictor, data, *, ece_bins: int = 15) -> dict:
    """Test metrics of a fitted :class:`~blockbayes.evaluate.Predictor` in original units.

    Regression (``data`` standardised with ``y_mean``, ``y_std``): ``rmse = σ_y · sqrt(mean (y − μ)²)``
    on the predictive mean; ``ll = mean_i lpd_i − log σ_y`` with ``lpd_i`` the method's own log
    predictive density of the standardised target; ``crps`` of the moment-matched Gaussian
    ``N(μ, v)`` times ``σ_y``; ``cov95`` the coverage of its central 95 % interval.
    Classification: ``accuracy``, ``nll`` (mean −log p̄(y|x)), ``brier`` (multiclass sum over
    classes, in [0, 2]), ``ece`` and ``mce`` (top-label, ``ece_bins`` equal-width bins
    ``((m−1)/M, m/M]``), and the reliability-diagram bins.
    """
    from .. import metrics

    if data.task == "regression":
        y = np.asarray(data.y_test, dtype=np.float64)
        mean, var = predictor.predict(data.X_test)
        mean = np.asarray(mean, dtype=np.float64).reshape(y.shape)
        var = np.asarray(var, dtype=np.float64).reshape(y.shape)
        lpd = np.asarray(predictor.lpd(data.X_test, data.y_test), dtype=np.float64).reshape(y.shape)
        s = float(data.y_std)
        out = {"rmse": float(metrics.rmse(y, mean)) * s,
               "ll": float(np.mean(lpd)) - math.log(s),
               "crps": float(metrics.crps_gaussian(y, mean, var)) * s,
               "cov95": float(metrics.coverage_gaussian(y, mean, var, levels=[0.95])[0])}
        return {"metrics": out}
    labels = np.asarray(data.y_test, dtype=np.int64)
    p = np.asarray(predictor.predict_proba(data.X_test), dtype=np.float64)
    p = np.clip(p, 0.0, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    out = {"accuracy": float(metrics.accuracy(p, labels)), "nll": float(metrics.nll(p, labels)),
           "brier": float(metrics.brier(p, labels)), "ece": float(metrics.ece(p, labels, n_bins=ece_bins)),
           "mce": float(metrics.mce(p, labels, n_bins=ece_bins))}
    rd = metrics.reliability_diagram(p, labels, n_bins=ece_bins)
    rel = {k: [None if (isinstance(v, float) and not math.isfinite(v)) else v
               for v in np.asarray(rd[k]).tolist()] for k in ("confidence", "accuracy", "count")}
    return {"metrics": out, "reliability": rel}


# ----------------------------------------------------------------------------------- memory

class _Meter:
    """Wall time and peak memory of a block.

    ``mode``: ``"peak_rss"`` (the resident high-water mark reset at entry and read at exit, minus
    the resident set at entry; falls back to ``"rss"`` where the reset is impossible, and
    :attr:`mode_used` says which ran), ``"tracemalloc"``, ``"rss"`` (growth of the process's
    lifetime ``ru_maxrss``: a lower bound) or ``"none"``. Only ``"tracemalloc"`` hooks allocations
    (and so slows allocation-heavy Python loops several-fold: measured 2–5× on L-BFGS MAP fits and
    IVON); the others cost a system call at entry and exit.
    """

    def __init__(self, mode):
        self.mode = mode
        self.mode_used = mode
        self.peak_mb = None

    def __enter__(self):
        if self.mode == "tracemalloc":
            self._started = not tracemalloc.is_tracing()
            if self._started:
                tracemalloc.start()
            tracemalloc.reset_peak()
            self._base = tracemalloc.get_traced_memory()[0]
        elif self.mode == "peak_rss":
            self._base = rss_mb()
            if self._base is None or not reset_peak_rss():
                self.mode_used = "rss"
        if self.mode_used == "rss":
            self._base = _maxrss_mb()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        if self.mode == "tracemalloc":
            peak = tracemalloc.get_traced_memory()[1]
            if self._started:
                tracemalloc.stop()
            self.peak_mb = max(0.0, (peak - self._base) / 2 ** 20)
        elif self.mode_used == "peak_rss":
            hwm = peak_rss_mb()
            self.peak_mb = None if hwm is None else max(0.0, hwm - self._base)
        elif self.mode_used == "rss":
            self.peak_mb = max(0.0, _maxrss_mb() - self._base)
        return False


def _maxrss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 2 ** 20 if sys.platform == "darwin" else r / 1024   # bytes on macOS, KiB on Linux


# ----------------------------------------------------------------------------------- the grid

def _normalise_methods(methods) -> tuple:
    """``([(label, Method, options)], {label: {dataset: options}})`` from names, mappings or Method
    objects; unique labels. A mapping's ``"by_dataset"`` entry (``{dataset name: {option: value}}``)
    overrides its options on those datasets; the overrides are resolved (and checked) here."""
    if isinstance(methods, (str, dict, Method)):
        methods = [methods]
    out, by_ds = [], {}
    for m in methods:
        if isinstance(m, str):
            meth = get_method(m)
            out.append((m, meth, meth.options()))
        elif isinstance(m, Method):
            out.append((m.name, m, m.options()))
        elif isinstance(m, dict):
            d = dict(m)
            name = d.pop("method", None) or d.pop("name", None)
            if name is None:
                raise ValueError(f"a method mapping needs a 'method' (or 'name') entry, got {sorted(m)}")
            label = str(d.pop("label", name))
            over = d.pop("by_dataset", None) or {}
            if not isinstance(over, dict) or not all(isinstance(v, dict) for v in over.values()):
                raise TypeError(f"'by_dataset' of method {label!r} must map dataset names to option mappings")
            meth = get_method(name)
            out.append((label, meth, meth.options(d)))
            if over:
                by_ds[label] = {str(ds): meth.options({**d, **o}) for ds, o in over.items()}
        else:
            raise TypeError(f"a method must be a name, a mapping or a Method, got {type(m).__name__}")
    labels = [o[0] for o in out]
    dup = sorted({l for l in labels if labels.count(l) > 1})
    if dup:
        raise ValueError(f"duplicate method labels {dup}: give each configuration a distinct 'label'")
    if not out:
        raise ValueError("no methods given")
    return out, by_ds


def _normalise_sizes(train_sizes) -> list:
    if train_sizes is None:
        return ["full"]
    if isinstance(train_sizes, (int, str)):
        train_sizes = [train_sizes]
    out = []
    for s in train_sizes:
        if s == "full" or s is None:
            out.append("full")
        elif isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 2:
            out.append(int(s))
        else:
            raise ValueError(f"train sizes must be ints >= 2 or 'full', got {s!r}")
    return sorted(set(out), key=lambda v: math.inf if v == "full" else v)


def _normalise_seeds(seeds) -> list:
    if seeds is None:
        return [0]
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        return list(range(int(seeds))) if seeds > 0 else [0]
    return [int(s) for s in seeds]


def _cell_path(out_dir: Path, ds: str, label: str, split, seed, size, h) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
    return out_dir / "cells" / ds / safe / f"s{split}_r{seed}_n{size}_{h}.json"


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)
    os.replace(tmp, path)


def evaluate(methods, datasets, *, train_sizes=None, splits=None, seeds=None, out_dir=None,
             memory: str = "peak_rss", plots: bool = True, progress: bool = True,
             on_error: str = "record", retry_errors: bool = True, ece_bins: int = 15,
             markdown_title: Optional[str] = None, compute: bool = True,
             warmup: bool = True) -> EvaluationResult:
    """Run every method on every dataset, training size, split and seed; resumable.

    Parameters
    ----------
    methods : sequence
        Registry names (``"gibbs"``, ``"map"``, ``"ensemble"``, ``"laplace_kfac"``, ...; see
        :func:`available_methods`), mappings ``{"method": name, "label": str, **options}`` (the
        label names the column; options override the method's defaults), or
        :class:`~blockbayes.evaluate.Method` objects. A mapping may carry
        ``"by_dataset": {dataset name: {option: value}}``: options for those datasets only (e.g.
        fewer Gibbs sweeps on the largest set); the name is the resolved dataset's name
        (``"naval-propulsion-plant"``), and the cell's hash records the options it ran with.
    datasets : sequence
        Names, mappings or :class:`~blockbayes.datasets.Dataset` objects (see
        :mod:`blockbayes.evaluate._data`): e.g. ``["boston", {"name": "protein", "splits": 2}]``.
    train_sizes : None or sequence of int / "full"
        Training-set sizes of the data-efficiency curve. Subsets are *nested* prefixes of a random
        order of the training split (class-stratified for classification,
        :func:`~blockbayes.datasets.nested_order` with the cell's seed); the test set is fixed.
        Each subset is re-standardised on itself. Sizes at least the training split's size mean
        the full split. ``None``: the full training split only.
    splits : None, int or sequence of int
        Benchmark splits (UCI) or split seeds (other sources). ``None``: all of the protocol's
        splits (20 for UCI, 5 for protein; one otherwise); ``k``: the first ``k``.
    seeds : None, int or sequence of int
        Repeats: each seed gives a new subset order and new method randomness. ``k``: ``0..k-1``.
    out_dir : path or None
        Where cells and reports go; ``None`` keeps everything in memory (nothing resumable).
    memory : {"peak_rss", "tracemalloc", "rss", "none"}
        Peak memory of fit + predict. ``"peak_rss"`` (default): the peak resident set of the
        process during the cell above its resident set at the start (Linux: the kernel's
        high-water mark ``VmHWM``, reset at the start of the cell through
        ``/proc/self/clear_refs``; covers NumPy, BLAS and Numba buffers alike, costs two system
        calls and nothing per allocation; where the reset is impossible it falls back to
        ``"rss"`` and the cell's ``mem_mode`` says so). ``"tracemalloc"``: the peak of Python-heap
        allocations traced by :mod:`tracemalloc` above the level at the start of the cell
        (includes NumPy buffers, excludes Numba/BLAS-internal workspaces and GPU memory); it hooks
        every allocation, which slows allocation-heavy Python loops several-fold (measured 2–5×
        on L-BFGS MAP fits and IVON), so the fit times of such cells are not comparable with
        untraced ones. ``"rss"``: the increase of the process's maximum resident set size
        (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) over the cell, a lower bound because that
        high-water mark never decreases (0 for a cell that stays below an earlier peak).
        ``"none"``: not measured. Not part of a cell's hash.
    plots : bool
        Write PNG learning curves, reliability diagrams and trace plots (needs matplotlib;
        skipped with a warning without it).
    progress : bool
        A tqdm bar over cells.
    on_error : {"record", "raise"}
        ``"record"``: a failing cell is recorded with ``status="error"`` and its message, and the
        run goes on; ``"raise"``: re-raise.
    retry_errors : bool
        Recompute cells recorded as errors by an earlier call (else keep the error record).
    ece_bins : int
        ``M`` of ECE/MCE and of the reliability diagrams.
    markdown_title : str, optional
        Heading of the Markdown report.
    warmup : bool
        Before the first cell a method computes in this process, fit it once (unrecorded) on the
        first 16 training points of that cell's data, so that imports and Numba JIT compilation
        are not charged to the first cell's time and memory.
    compute : bool
        ``False``: only collect the cells already stored in ``out_dir`` (a report of a run still
        in progress); missing cells are skipped and counted in ``result.missing``.

    Returns
    -------
    EvaluationResult
    """
    if memory not in _MEMORY_MODES:
        raise ValueError(f"memory must be one of {_MEMORY_MODES}, got {memory!r}")
    if on_error not in ("record", "raise"):
        raise ValueError(f"on_error must be 'record' or 'raise', got {on_error!r}")
    mlist, by_dataset = _normalise_methods(methods)
    if isinstance(datasets, (str, dict)) or hasattr(datasets, "X_train"):
        datasets = [datasets]
    specs = [resolve_dataset(d) for d in datasets]
    if not specs:
        raise ValueError("no datasets given")
    sizes = _normalise_sizes(train_sizes)
    seed_list = _normalise_seeds(seeds)
    split_lists = [spec.resolve_splits(splits) for spec in specs]
    for spec in specs:
        for label, meth, _ in mlist:
            if spec.task not in meth.tasks:
                raise ValueError(f"method {label!r} ({meth.name}) does not support {spec.task} "
                                 f"(dataset {spec.name!r}); it supports {', '.join(meth.tasks)}")
    out = Path(out_dir) if out_dir is not None else None

    total = sum(len(sl) for sl in split_lists) * len(seed_list) * len(sizes) * len(mlist)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="evaluate", unit="cell")
    cells, computed, cached, failed, missing = [], 0, 0, 0, 0
    warmed = set()
    try:
        for spec, split_list in zip(specs, split_lists):
            for split in split_list:
                data_full = None
                for seed in seed_list:
                    for size in sizes:
                        for label, meth, opts in mlist:
                            opts = by_dataset.get(label, {}).get(spec.name, opts)
                            key = {"version": PROTOCOL_VERSION, "method": meth.name, "options": opts,
                                   "data": spec.config(), "split": split, "seed": seed, "size": size,
                                   "ece_bins": ece_bins}
                            h = stable_hash(key)
                            path = _cell_path(out, spec.name, label, split, seed, size, h) if out else None
                            rec = None
                            if path is not None and path.is_file():
                                try:
                                    rec = json.loads(path.read_text())
                                except (OSError, json.JSONDecodeError):
                                    rec = None
                                if rec is not None and (rec.get("hash") != h or
                                                        (rec.get("status") != "ok" and retry_errors)):
                                    rec = None
                            if rec is not None:
                                rec["method"] = label
                                cached += 1
                            elif not compute:
                                missing += 1
                                if bar is not None:
                                    bar.update(1)
                                continue
                            else:
                                if bar is not None:
                                    bar.set_postfix_str(f"{spec.name} {label} split {split} n={size}")
                                if data_full is None:
                                    data_full = spec.load(split)
                                if warmup and (meth.name, label, data_full.task) not in warmed:
                                    warmed.add((meth.name, label, data_full.task))
                                    _warm_up(meth, opts, spec, data_full)
                                rec = _run_cell(meth, label, opts, spec, data_full, split, seed, size, h,
                                                memory, ece_bins, on_error)
                                if rec["status"] == "ok":
                                    computed += 1
                                else:
                                    failed += 1
                                if path is not None:
                                    _write_json(path, rec)
                            cells.append(rec)
                            if bar is not None:
                                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    from ._report import summarize, write_reports

    summary = summarize(cells)
    config = {"methods": [{"label": l, "method": m.name, "options": o,
                           **({"by_dataset": by_dataset[l]} if l in by_dataset else {})} for l, m, o in mlist],
              "datasets": [s.config() for s in specs], "splits": dict(zip([s.name for s in specs], split_lists)),
              "seeds": seed_list, "train_sizes": sizes, "memory": memory, "ece_bins": ece_bins,
              "protocol_version": PROTOCOL_VERSION}
    res = EvaluationResult(cells=cells, summary=summary, computed=computed, cached=cached, failed=failed,
                           config=config, missing=missing)
    if out is not None:
        res.paths = write_reports(res, out, plots=plots, title=markdown_title)
    return res


def _run_cell(meth: Method, label, opts, spec: DataSpec, data_full, split, seed, size, h, memory, ece_bins,
              on_error) -> dict:
    from ..datasets import nested_order

    n_full = data_full.n_train
    eff = n_full if size == "full" else min(int(size), n_full)
    if eff < n_full:
        order = nested_order(np.asarray(data_full.y_train) if data_full.task == "classification" else None,
                             n=None if data_full.task == "classification" else n_full, seed=seed)
        data = subset_dataset(data_full, order[:eff])
    else:
        data = data_full
    arch = Arch(d_in=data.n_features, hidden=spec.hidden_for(data_full), task=data.task,
                n_classes=data.n_classes)
    if data.task not in meth.tasks:
        raise ValueError(f"method {meth.name!r} does not support {data.task} ({spec.name})")
    rec = {"dataset": spec.name, "method": label, "method_name": meth.name, "split": split, "seed": seed,
           "size": size, "n_train": data.n_train, "n_test": data.n_test, "task": data.task,
           "widths": arch.widths, "options": opts, "hash": h, "mem_mode": memory,
           "y_std": float(data.y_std) if data.task == "regression" else None,
           "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    method_seed = int(np.random.SeedSequence([int(seed), int(split), PROTOCOL_VERSION]).generate_state(1)[0])
    try:
        with _Meter(memory) as total:
            with _Meter("none") as tf:
                pred = meth.fit(arch, data.X_train, data.y_train, seed=method_seed, **opts)
            with _Meter("none") as tp:
                sc = score(pred, data, ece_bins=ece_bins)
        owed = float(getattr(pred, "extra_time_s", 0.0) or 0.0)
        rec.update(status="ok", metrics=sc["metrics"], fit_time_s=tf.seconds + owed, predict_time_s=tp.seconds,
                   wall_time_s=total.seconds + owed, peak_mem_mb=total.peak_mb, mem_mode=total.mode_used,
                   diagnostics=dict(pred.diagnostics or {}), traces=dict(pred.traces or {}))
        if "reliability" in sc:
            rec["reliability"] = sc["reliability"]
        bad = [k for k, v in sc["metrics"].items() if not math.isfinite(v)]
        if bad:
            rec["warning"] = f"non-finite metrics {bad}"
    except Exception as exc:   # noqa: BLE001 - recorded, and re-raised on request
        if on_error == "raise":
            raise
        warnings.warn(f"{label} on {spec.name} split {split} seed {seed} n={size} failed: "
                      f"{type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}")
    return rec


def _warm_up(meth: Method, opts, spec: DataSpec, data) -> None:
    """One unrecorded fit + prediction on the first 16 training points (imports, JIT compilation)."""
    m = min(16, data.n_train)
    Xw, yw = data.X_train[:m], data.y_train[:m]
    arch = Arch(d_in=data.n_features, hidden=spec.hidden_for(data), task=data.task, n_classes=data.n_classes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pred = meth.fit(arch, Xw, yw, seed=0, **opts)
            if data.task == "regression":
                pred.predict(Xw)
                pred.lpd(Xw, yw)
            else:
                pred.predict_proba(Xw)
    except Exception:   # noqa: BLE001 - a warm-up failure is not a result; the real cell reports
        pass


def compare(methods, data, *, split: int = 0, seed: int = 0, train_size=None, out_dir=None,
            progress: bool = False, memory: str = "peak_rss", **kw) -> Table:
    """Side-by-side table of several methods on one dataset (one split, one seed).

    Parameters
    ----------
    methods : sequence
        As for :func:`evaluate` (names, mappings with options and a ``label``, Method objects).
    data : str, mapping or Dataset
        One dataset (a :class:`~blockbayes.datasets.Dataset` is used as given).
    split, seed : int
    train_size : int or None
        Train on a nested subset of this size (``None``: the whole training split).
    out_dir : path or None
        Persist (and reuse) the cells there; ``None``: in memory.

    Returns
    -------
    Table
        One row per method: ``method``, the metrics in original units (regression: ``rmse``,
        ``ll``, ``crps``, ``cov95``; classification: ``accuracy``, ``nll``, ``brier``, ``ece``,
        ``mce``), ``fit_time_s``, ``peak_mem_mb``, ``status``. ``print(table)`` or
        ``table.to_markdown()`` gives Markdown.
    """
    res = evaluate(methods, [data], train_sizes=None if train_size is None else [train_size], splits=[split],
                   seeds=[seed], out_dir=out_dir, progress=progress, memory=memory, plots=False, **kw)
    rows = []
    for c in res.cells:
        row = {"method": c["method"], "n_train": c["n_train"]}
        row.update(c.get("metrics") or {})
        row.update(fit_time_s=c.get("fit_time_s"), peak_mem_mb=c.get("peak_mem_mb"), status=c["status"])
        if c["status"] != "ok":
            row["error"] = c.get("error")
        rows.append(row)
    cols = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return Table(rows, cols)
