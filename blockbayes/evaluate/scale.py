"""Evaluation at scale: datasets × log-spaced training sizes × methods × splits under a per-cell
budget, one command (``blockbayes eval CONFIG``), a Markdown report with plots.

What it adds to :func:`blockbayes.evaluate.evaluate`:

* **Budgets** (:mod:`._budget`): every cell runs in a worker process and is killed when it
  exceeds its wall-clock or memory budget; it is then recorded as ``over_budget`` and the larger
  sizes of the same method, dataset, split and seed are recorded as skipped ("over budget at
  n = …"). Nothing crashes the run. ``jobs`` workers run cells in parallel.
* **Data at any size, offline**: :func:`mnist1d_stream` (the ``mnist1d`` package's templates and
  ``transform``, a fixed seed per chunk of 10,000 signals, so the first ``n`` signals are the same
  for every ``n``), teacher–student data from a noisy-MLP teacher (regression or multinomial-probit
  classification), and every dataset :func:`~blockbayes.evaluate.resolve_dataset` knows (UCI,
  scikit-learn sets) with nested class-stratified subsets.
* **OOD detection**: MNIST-1D signals generated with a stronger shift/scale/noise/shear than the
  training data (:data:`MNIST1D_SHIFT`), held-out classes (``{"name": "digits", "heldout": [5, …]}``)
  or inputs scaled by a factor; AUROC of the predictive entropy (classification) or predictive
  variance (regression), OOD as the positive class (:func:`blockbayes.metrics.auroc`).
* **Summaries**: :func:`aulc` (area under the learning curve on log n), :func:`effective_data_ratio`
  (against MAP, at every size), :func:`cost_slope` (log–log slope of cost in n).

Definitions
-----------
``AULC = (1 / (log n_K − log n_1)) ∫ m(n) d log n`` (trapezoid rule over the sizes run): the mean
of the metric over the log grid.

Effective data ratio of a method at size ``n`` against a baseline: ``r(n) = n_B(m(n)) / n`` where
``m(n)`` is the method's mean metric at ``n`` and ``n_B(v)`` the smallest training size at which the
baseline's curve — linear in ``log n`` between the sizes run — reaches ``v`` (is as good or better).
``r > 1``: the baseline needs ``r`` times more data for the method's quality at ``n``. Bounds: when
the baseline is already at least as good at its smallest size, ``r ≤ n_B,1 / n``; when it never
reaches ``v``, ``r ≥ n_B,K / n`` (reported as ``> …``).

Cost slope: least-squares slope ``b`` of ``log cost = a + b log n`` over the sizes a method finished
within budget (``b ≈ 1``: linear in n).

Config (TOML or JSON; see ``benchmarks/configs/eval_scale.toml``)::

    title = "Evaluation at scale"
    out_dir = "results/eval_scale"          # cells (resumable), data cache, worker logs
    doc = "docs/evaluation.md"              # the report; plots go to img_dir
    img_dir = "docs/img"
    sizes = {min = 1000, max = 1000000, per_decade = 2}     # or a list of ints
    splits = 1
    seeds = [0]
    baseline = "map"
    reliability_sizes = [1000, 10000, 100000]
    jobs = 1
    nice = 19

    [budget]
    wall_s = 300          # per cell, fit + predict
    mem_mb = 3000         # per cell, growth of the worker's resident set
    predict_factor = 2.0  # skip a cell whose time, extrapolated from the last two sizes, exceeds 2 × wall_s

    [[datasets]]
    name = "mnist1d"
    hidden = [32]

    [[methods]]
    method = "map"
"""
from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ._data import read_config_file, resolve_dataset, stable_hash, subset_dataset
from ._report import _curve, aulc, effective_data_ratio_curve

__all__ = ["aulc", "effective_data_ratio", "cost_slope", "log_grid", "mnist1d_stream", "MNIST1D_SHIFT",
           "load_scale_config", "run_scale", "collect", "write_report", "main", "Source", "SCALE_VERSION"]

SCALE_VERSION = 1
_CHUNK = 10_000

#: Multipliers of the mnist1d generator's arguments for the shifted (OOD) signals: scale jitter
#: 0.4 → 1.2, correlated noise 0.25 → 0.75, iid noise 0.02 → 0.2, shear 0.75 → 2.25, padding
#: (dilation) range widened; the translation range is already the full signal.
MNIST1D_SHIFT = {"scale_coeff": 3.0, "corr_noise_scale": 3.0, "iid_noise_scale": 10.0, "shear_scale": 3.0}


# =================================================================================== summaries

def log_grid(lo: float, hi: float, per_decade: int = 1) -> list:
    """Integer sizes ``round(10^(log10 lo + k / per_decade))`` from ``lo`` to ``hi`` inclusive.

    >>> log_grid(1000, 100000, 2)
    [1000, 3162, 10000, 31623, 100000]
    """
    lo, hi, per_decade = float(lo), float(hi), int(per_decade)
    if not (lo >= 1 and hi >= lo and per_decade >= 1):
        raise ValueError(f"need 1 <= lo <= hi and per_decade >= 1, got {lo}, {hi}, {per_decade}")
    k = int(math.floor(per_decade * math.log10(hi / lo) + 1e-9))
    out = [int(round(10 ** (math.log10(lo) + i / per_decade))) for i in range(k + 1)]
    return sorted(set(out))


#: The effective data ratio ``r(n) = n_B(m(n))/n`` (one definition, shared with the
#: data-efficiency report): :func:`blockbayes.evaluate._report.effective_data_ratio_curve`.
effective_data_ratio = effective_data_ratio_curve


def cost_slope(ns, costs) -> tuple:
    """Least-squares slope and intercept of ``log cost = a + b log n`` (natural logs): ``(b, a)``.

    Needs at least two sizes with positive finite cost (others are an error, not dropped).
    """
    ns, c = _curve(ns, costs)
    if ns.size < 2:
        raise ValueError("a cost slope needs at least two sizes")
    if np.any(~np.isfinite(c)) or np.any(c <= 0):
        raise ValueError("costs must be positive and finite")
    b, a = np.polyfit(np.log(ns), np.log(c), 1)
    return float(b), float(a)


# =================================================================================== MNIST-1D stream

_GEN_LOCK = threading.Lock()


def _mnist1d_modules():
    import importlib

    try:
        data_mod = importlib.import_module("mnist1d.data")
        tr_mod = importlib.import_module("mnist1d.transform")
    except ImportError as exc:
        raise ImportError("the MNIST-1D stream needs the optional package 'mnist1d' (pip install mnist1d)") from exc
    return data_mod, tr_mod


def _mnist1d_args(shift: Optional[dict]):
    data_mod, _ = _mnist1d_modules()
    args = data_mod.get_dataset_args()
    for k, f in (shift or {}).items():
        if not hasattr(args, k):
            raise ValueError(f"mnist1d has no generator argument {k!r}")
        if k == "max_translation":
            setattr(args, k, int(round(getattr(args, k) * float(f))))
        else:
            setattr(args, k, getattr(args, k) * float(f))
    return args


def _mnist1d_chunk(seed: int, stream: int, chunk: int, shift: Optional[dict], size: int = _CHUNK):
    """Raw (unnormalised) signals ``(size, 40)`` and labels of one chunk, deterministic in its ids."""
    data_mod, tr_mod = _mnist1d_modules()
    args = _mnist1d_args(shift)
    templates = data_mod.get_templates()
    if size % 10:
        raise ValueError(f"chunk_size must be a multiple of 10, got {size}")
    key = [int(seed), int(stream), int(chunk), 1301] + ([] if size == _CHUNK else [int(size)])
    ss = np.random.SeedSequence(key)
    labels = np.random.default_rng(ss).permutation(np.repeat(np.arange(10), size // 10))
    with _GEN_LOCK:                   # transform() draws from the global numpy generator
        state = np.random.get_state()
        try:
            np.random.seed(int(ss.generate_state(1)[0]))
            xs = np.empty((size, args.final_seq_length), dtype=np.float64)
            for i, lab in enumerate(labels):
                x, _ = tr_mod.transform(templates["x"][lab], templates["t"], args)
                xs[i] = x
        finally:
            np.random.set_state(state)
    return xs, labels.astype(np.int64)


def mnist1d_stream(n: int, *, seed: int = 0, stream: str = "train", shift: Optional[dict] = None,
                   cache_dir=None, chunk_size: int = _CHUNK):
    """The first ``n`` signals of an endless MNIST-1D stream, generated offline.

    Signals come from the ``mnist1d`` package's templates and ``transform`` (pad, dilate, scale,
    translate, correlated and iid noise, shear, subsample to 40), chunk ``c`` of 10,000 signals
    (1,000 per class, in random order) with the global NumPy generator seeded from
    ``SeedSequence([seed, stream id, c, 1301])`` (saved and restored around the call). The signals
    are then centred and scaled with constants computed once from chunk 0 of the *training*
    stream of ``seed`` (so every size, the test and the shifted streams share one affine map,
    as the package's own normalisation of a whole dataset would). Nothing is downloaded: only
    ``get_dataset_args``, ``get_templates`` and ``transform`` are called.

    Parameters
    ----------
    n : int
        Number of signals (``>= 1``). The first ``n`` are the same for every ``n``: nested sizes.
    seed : int
        Generation seed of the stream family.
    stream : {"train", "test", "ood"}
        Independent streams: training, test, and the shifted test stream.
    shift : dict, optional
        Multipliers of the generator's arguments (``scale_coeff``, ``corr_noise_scale``,
        ``iid_noise_scale``, ``shear_scale``, ``max_translation``, ...); ``stream="ood"`` defaults
        to :data:`MNIST1D_SHIFT`.
    cache_dir : path, optional
        Chunks are stored there (float32 ``.npz``) and reused; generation takes ~0.4 ms per signal.
    chunk_size : int
        Signals per seeded chunk (a multiple of 10); part of the stream's definition (a different
        chunk size gives a different stream). The default, 10,000, is what the scale runner uses.

    Returns
    -------
    (X, y) : float64 array (n, 40), int64 array (n,)
    """
    if int(n) < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    sid = {"train": 0, "test": 1, "ood": 2}.get(stream)
    if sid is None:
        raise ValueError(f"stream must be 'train', 'test' or 'ood', got {stream!r}")
    if stream == "ood" and shift is None:
        shift = dict(MNIST1D_SHIFT)
    n, cs = int(n), int(chunk_size)
    mu, sd = _mnist1d_norm(seed, cache_dir, cs)
    xs, ys = [], []
    for c in range(-(-n // cs)):
        x, y = _cached_chunk(seed, sid, c, shift, cache_dir, cs)
        xs.append(x)
        ys.append(y)
    X = np.concatenate(xs)[:n].astype(np.float64)
    return (X - mu) / sd, np.concatenate(ys)[:n]


def _cached_chunk(seed, sid, c, shift, cache_dir, size=_CHUNK):
    if cache_dir is None:
        return _mnist1d_chunk(seed, sid, c, shift, size)
    key = stable_hash({"seed": int(seed), "stream": sid, "shift": shift or {}, "chunk": int(size), "v": 1})
    path = Path(cache_dir) / "mnist1d" / key / f"chunk_{c:05d}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return z["x"], z["y"]
        except (OSError, ValueError, KeyError):
            pass
    x, y = _mnist1d_chunk(seed, sid, c, shift, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
    np.savez(tmp, x=x.astype(np.float32), y=y)
    os.replace(tmp, path)
    with np.load(path) as z:                  # what every later call sees (float32-rounded)
        return z["x"], z["y"]


def _mnist1d_norm(seed, cache_dir, size=_CHUNK):
    x, _ = _cached_chunk(seed, 0, 0, None, cache_dir, size)
    x = np.asarray(x, dtype=np.float64)
    return float(x.mean()), float(x.std())


# =================================================================================== data sources

@dataclass
class Source:
    """A dataset of the scale runner: how to get ``n`` training points, the test set and OOD inputs.

    ``kind``: ``"mnist1d"`` (:func:`mnist1d_stream`; options ``seed``, ``n_test``, ``n_ood``,
    ``shift``), ``"teacher_student"`` (options ``d``, ``teacher_hidden``, ``delta``,
    ``likelihood`` = ``"gaussian"`` or ``"multinomial_probit"``, ``n_classes``, ``n_test``;
    ``ood_scale``), or ``"spec"``: any name :func:`~blockbayes.evaluate.resolve_dataset` knows
    (UCI, scikit-learn sets), with ``heldout`` (classes kept out of training and used as OOD) or
    ``ood_scale`` (test inputs times this factor as OOD).
    """

    name: str
    kind: str
    options: dict = field(default_factory=dict)
    hidden: tuple = (50,)
    splits: Optional[list] = None
    sizes: Optional[list] = None       # overrides the run's sizes for this dataset
    budget: Optional[dict] = None      # overrides entries of the run's budget for this dataset

    def config(self) -> dict:
        return {"name": self.name, "kind": self.kind, "options": self.options, "hidden": list(self.hidden)}

    @classmethod
    def from_config(cls, d) -> "Source":
        if isinstance(d, str):
            d = {"name": d}
        d = dict(d)
        if "name" not in d:
            raise ValueError(f"a dataset entry needs a 'name', got {sorted(d)}")
        name = str(d.pop("name"))
        hidden = d.pop("hidden", None)
        splits = d.pop("splits", None)
        sizes = d.pop("sizes", None)
        budget = d.pop("budget", None)
        kind = d.pop("kind", None)
        label = d.pop("label", None)
        opts = d.pop("options", {}) or {}
        opts = {**opts, **d}
        if kind is None:
            kind = name if name in ("mnist1d", "teacher_student") else "spec"
        if kind not in ("mnist1d", "teacher_student", "spec"):
            raise ValueError(f"unknown dataset kind {kind!r}")
        if kind == "spec":
            spec_name = opts.pop("spec_name", name)
            spec = resolve_dataset({"name": spec_name, **{k: v for k, v in opts.items()
                                                          if k not in ("heldout", "ood_scale")}})
            opts["spec_name"] = spec_name
            if label is None and name == spec_name:
                name = spec.name
        if kind == "teacher_student":
            lik = opts.get("likelihood", "gaussian")
            if lik not in ("gaussian", "multinomial_probit"):
                raise ValueError(f"teacher_student likelihood must be 'gaussian' or 'multinomial_probit', got {lik!r}")
        if kind == "mnist1d":
            bad = sorted(set(opts) - {"seed", "n_test", "n_ood", "shift"})
            if bad:
                raise ValueError(f"mnist1d options {bad} unknown; allowed: seed, n_test, n_ood, shift")
        if hidden is None:
            hidden = (50,)
        hidden = (int(hidden),) if isinstance(hidden, (int, np.integer)) else tuple(int(h) for h in hidden)
        if splits is not None and not isinstance(splits, (int, list)):
            raise ValueError("a dataset's splits must be an int or a list")
        if sizes is not None:
            sizes = _parse_sizes(sizes)
        if budget is not None:
            bad = sorted(set(budget) - {"wall_s", "mem_mb"})
            if bad or any(float(v) <= 0 for v in budget.values()):
                raise ValueError(f"a dataset's budget may set positive wall_s and mem_mb only, got {budget}")
            budget = {k: float(v) for k, v in budget.items()}
        return cls(name=str(label or name), kind=kind, options=opts, hidden=hidden,
                   splits=list(range(splits)) if isinstance(splits, int) else splits, sizes=sizes, budget=budget)

    @property
    def task(self) -> str:
        if self.kind == "mnist1d":
            return "classification"
        if self.kind == "teacher_student":
            return "regression" if self.options.get("likelihood", "gaussian") == "gaussian" else "classification"
        return self._spec().task

    def _spec(self):
        o = {k: v for k, v in self.options.items() if k not in ("heldout", "ood_scale", "spec_name")}
        return resolve_dataset({"name": self.options["spec_name"], **o})

    def resolve_splits(self, splits) -> list:
        if self.splits is not None:
            return list(self.splits)
        if self.kind == "spec":
            return self._spec().resolve_splits(splits)
        if splits is None:
            return [0]
        return list(range(splits)) if isinstance(splits, int) else [int(s) for s in splits]

    def n_available(self, split) -> Optional[int]:
        """Training points available (``None``: any number)."""
        if self.kind != "spec":
            return None
        return self._load_spec(split)[0].n_train

    # -- loading ---------------------------------------------------------------------------------
    def _load_spec(self, split):
        data = self._spec().load(split)
        ood = None
        held = self.options.get("heldout")
        if held:
            if data.task != "classification":
                raise ValueError("heldout classes need a classification dataset")
            held = sorted(int(c) for c in held)
            keep = [c for c in range(data.n_classes) if c not in held]
            remap = np.full(data.n_classes, -1)
            remap[keep] = np.arange(len(keep))
            ytr, yte = np.asarray(data.y_train), np.asarray(data.y_test)
            mtr, mte = remap[ytr] >= 0, remap[yte] >= 0
            ood = np.asarray(data.X_test)[~mte]
            data = data._replace(X_train=np.asarray(data.X_train)[mtr], y_train=remap[ytr[mtr]],
                                 X_test=np.asarray(data.X_test)[mte], y_test=remap[yte[mte]], n_classes=len(keep))
        return data, ood

    def prepare(self, split, n, cache_dir) -> None:
        """Generate (and cache) what a cell of size ``n`` needs, outside any budget."""
        if self.kind == "mnist1d":
            o = self.options
            s = int(o.get("seed", 0))
            mnist1d_stream(int(n), seed=s, stream="train", cache_dir=cache_dir)
            mnist1d_stream(int(o.get("n_test", 10_000)), seed=s, stream="test", cache_dir=cache_dir)
            mnist1d_stream(int(o.get("n_ood", 10_000)), seed=s, stream="ood", shift=o.get("shift"), cache_dir=cache_dir)
        elif self.kind == "teacher_student":
            self._teacher(split, n, cache_dir)

    def _teacher(self, split, n, cache_dir):
        from .. import datasets
        from ..model import MLP

        o = self.options
        d = int(o.get("d", 10))
        th = o.get("teacher_hidden", 10)
        th = [th] if isinstance(th, int) else list(th)
        lik = o.get("likelihood", "gaussian")
        d_out = 1 if lik == "gaussian" else int(o.get("n_classes", 10))
        n_test = int(o.get("n_test", 10_000))
        # the training set is always generated at max_n, so that every size is a prefix of one set
        n_gen = max(int(n), int(o.get("max_n", n)))
        key = stable_hash({"opts": o, "split": split, "n": n_gen})
        path = Path(cache_dir) / "teacher" / f"{key}.npz" if cache_dir is not None else None
        if path is not None and path.is_file():
            with np.load(path) as z:
                return z["X"], z["y"], z["Xt"], z["yt"]
        net = MLP([d, *th, d_out], "relu", likelihood=lik, delta=float(o.get("delta", 1e-2)))
        data, _ = datasets.teacher_student(net, n_gen, n_test, seed=int(split), return_aux=False)
        arrs = tuple(np.asarray(a) for a in data[:4])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.stem + f".tmp{os.getpid()}.npz")
            np.savez(tmp, X=arrs[0], y=arrs[1], Xt=arrs[2], yt=arrs[3])
            os.replace(tmp, path)
        return arrs

    def load(self, split, seed, n, cache_dir):
        """``(Dataset with n training points, OOD inputs or None)``."""
        from .. import datasets

        o = self.options
        if self.kind == "mnist1d":
            s = int(o.get("seed", 0))
            X, y = mnist1d_stream(int(n), seed=s, stream="train", cache_dir=cache_dir)
            Xt, yt = mnist1d_stream(int(o.get("n_test", 10_000)), seed=s, stream="test", cache_dir=cache_dir)
            Xo, _ = mnist1d_stream(int(o.get("n_ood", 10_000)), seed=s, stream="ood", shift=o.get("shift"),
                                   cache_dir=cache_dir)
            D = X.shape[1]
            data = datasets.Dataset(X, y, Xt, yt, name=self.name, task="classification", n_classes=10,
                                    x_mean=np.zeros(D), x_std=np.ones(D), info={"standardized": False})
            return data, Xo
        if self.kind == "teacher_student":
            X, y, Xt, yt = self._teacher(split, n, cache_dir)
            X, y = X[:int(n)], y[:int(n)]
            D = X.shape[1]
            reg = self.task == "regression"
            if reg:
                y, yt = np.asarray(y, np.float64).reshape(-1), np.asarray(yt, np.float64).reshape(-1)
            data = datasets.Dataset(np.asarray(X, np.float64), y, np.asarray(Xt, np.float64), yt, name=self.name,
                                    task=self.task, n_classes=None if reg else int(o.get("n_classes", 10)),
                                    x_mean=np.zeros(D), x_std=np.ones(D), y_mean=0.0 if reg else None,
                                    y_std=1.0 if reg else None, info={"standardized": False})
            Xo = np.asarray(Xt, np.float64) * float(o.get("ood_scale", 3.0))
            return data, Xo
        full, ood = self._load_spec(split)
        if int(n) < full.n_train:
            order = datasets.nested_order(np.asarray(full.y_train) if full.task == "classification" else None,
                                          n=None if full.task == "classification" else full.n_train, seed=seed)
            data = subset_dataset(full, order[:int(n)])
            if ood is not None and (full.info or {}).get("standardized"):
                # the subset is re-standardised on itself: map the OOD inputs with the same affine map
                from ..datasets import standardize

                _, ood, *_ = standardize(np.asarray(full.X_train)[order[:int(n)]], np.asarray(ood))
        else:
            data = full
        if ood is None and "ood_scale" in o:
            ood = np.asarray(data.X_test) * float(o["ood_scale"])
        return data, ood


# =================================================================================== config

def _parse_sizes(sizes) -> list:
    if isinstance(sizes, dict):
        bad = sorted(set(sizes) - {"min", "max", "per_decade"})
        if bad or not {"min", "max"} <= set(sizes):
            raise ValueError("sizes as a table needs min and max (and optionally per_decade)")
        return log_grid(sizes["min"], sizes["max"], sizes.get("per_decade", 1))
    if isinstance(sizes, list) and sizes and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                                                 for s in sizes):
        return sorted(set(int(s) for s in sizes))
    raise ValueError(f"sizes must be a non-empty list of positive ints or {{min, max, per_decade}}, got {sizes!r}")


_KEYS = {"title", "out_dir", "doc", "img_dir", "sizes", "splits", "seeds", "baseline", "reliability_sizes",
         "jobs", "nice", "threads", "budget", "datasets", "methods", "plugins", "ece_bins", "kind", "notes"}
_BUDGET_KEYS = {"wall_s", "mem_mb", "predict_factor", "warmup_s"}


def load_scale_config(config) -> dict:
    """A validated scale configuration from a dict or a ``.toml``/``.json`` file.

    Returns a dict with ``sizes`` (sorted ints), ``budget`` (``wall_s``, ``mem_mb``,
    ``predict_factor``, ``warmup_s``), ``datasets`` (:class:`Source` objects), ``methods``
    (``(label, name, options)`` with the registry defaults filled in), and the rest with defaults.
    Unknown keys, unknown methods and malformed entries are a :class:`ValueError`.
    """
    from . import _methods

    base = None
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        cfg = read_config_file(path)
        base = str(path)
    elif isinstance(config, dict):
        cfg = json.loads(json.dumps(config))
    else:
        raise TypeError(f"config must be a dict or a path, got {type(config).__name__}")
    unknown = sorted(set(cfg) - _KEYS)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; allowed: {sorted(_KEYS)}")
    for k in ("datasets", "methods", "sizes"):
        if k not in cfg:
            raise ValueError(f"config needs a {k!r} entry")
    import importlib

    for p in cfg.get("plugins", []) or []:
        importlib.import_module(p)
    sizes = _parse_sizes(cfg["sizes"])
    budget = dict(cfg.get("budget") or {})
    bad = sorted(set(budget) - _BUDGET_KEYS)
    if bad:
        raise ValueError(f"unknown budget key(s) {bad}; allowed: {sorted(_BUDGET_KEYS)}")
    wall = float(budget.get("wall_s", 600))
    mem = budget.get("mem_mb", None)
    if wall <= 0 or (mem is not None and float(mem) <= 0):
        raise ValueError("budget wall_s and mem_mb must be positive")
    pf = budget.get("predict_factor", None)
    if pf is not None and float(pf) < 1:
        raise ValueError("budget predict_factor must be >= 1 (or omitted)")
    budget = {"wall_s": wall, "mem_mb": None if mem is None else float(mem),
              "predict_factor": None if pf is None else float(pf),
              "warmup_s": float(budget.get("warmup_s", max(wall, 120.0)))}
    if not isinstance(cfg["datasets"], list) or not cfg["datasets"]:
        raise ValueError("datasets must be a non-empty list")
    sources = [Source.from_config(d) for d in cfg["datasets"]]
    if not isinstance(cfg["methods"], list) or not cfg["methods"]:
        raise ValueError("methods must be a non-empty list")
    methods = []
    for m in cfg["methods"]:
        m = {"method": m} if isinstance(m, str) else dict(m)
        if "method" not in m:
            raise ValueError(f"a method entry needs a 'method' name, got {sorted(m)}")
        name = m.pop("method")
        label = str(m.pop("label", name))
        by = m.pop("by_dataset", {}) or {}
        only = m.pop("datasets", None)
        if only is not None and (not isinstance(only, list) or not all(isinstance(x, str) for x in only)):
            raise ValueError("a method's 'datasets' must be a list of dataset names")
        if name not in _methods.method_names():
            raise ValueError(f"unknown method {name!r}; registered: {', '.join(_methods.method_names())}")
        meth = _methods._REGISTRY[name]
        opts = meth.options(m)
        by = {ds: meth.options({**m, **o}) for ds, o in by.items()}
        methods.append({"label": label, "method": name, "options": opts, "by_dataset": by, "datasets": only,
                        "tasks": tuple(meth.tasks)})
    labels = [m["label"] for m in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"method labels must be distinct, got {labels}")
    out = {
        "title": str(cfg.get("title", "Evaluation at scale")),
        "out_dir": str(cfg.get("out_dir", "results/eval_scale")),
        "doc": cfg.get("doc"),
        "img_dir": str(cfg.get("img_dir", "docs/img")),
        "sizes": sizes, "splits": cfg.get("splits", 1), "seeds": cfg.get("seeds", [0]),
        "baseline": cfg.get("baseline", "map"),
        "reliability_sizes": [int(s) for s in cfg.get("reliability_sizes", [])],
        "jobs": int(cfg.get("jobs", 1)), "nice": int(cfg.get("nice", 0)), "threads": cfg.get("threads", 1),
        "budget": budget, "datasets": sources, "methods": methods,
        "plugins": list(cfg.get("plugins", []) or []), "ece_bins": int(cfg.get("ece_bins", 15)),
        "notes": str(cfg.get("notes", "")), "config_path": base,
    }
    seeds = out["seeds"]
    out["seeds"] = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if out["jobs"] < 1:
        raise ValueError("jobs must be >= 1")
    return out


# =================================================================================== cells (worker side)

_DATA_CACHE: dict = {}
_WARMED: set = set()


def _data_for(p):
    key = stable_hash({"src": p["source"], "split": p["split"], "seed": p["seed"], "n": p["n"]})
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        src = Source.from_config({**p["source"], "options": p["source"]["options"]})
        _DATA_CACHE[key] = src.load(p["split"], p["seed"], p["n"], p["cache_dir"])
    return _DATA_CACHE[key]


def _prepare_cell(p):
    """Load the cell's data and warm the method up once per worker (neither is charged to the cell)."""
    from . import _methods
    from ._methods import Arch

    data, _ = _data_for(p)
    if p["label"] in _WARMED:
        return
    _WARMED.add(p["label"])
    meth = _methods.get_method(p["method"])
    m = min(32, data.n_train)
    arch = Arch(d_in=data.n_features, hidden=tuple(p["source"]["hidden"]), task=data.task, n_classes=data.n_classes)
    import warnings

    from .. import metrics
    from ._runner import score

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = data._replace(X_train=data.X_train[:m], y_train=data.y_train[:m], X_test=data.X_test[:m],
                              y_test=data.y_test[:m])
        pred = meth.fit(arch, small.X_train, small.y_train, seed=0, **p["options"])
        score(pred, small, ece_bins=p["ece_bins"])          # imports and first calls of the scoring path
        if data.task == "classification":
            metrics.auroc(metrics.predictive_entropy(pred.predict_proba(small.X_test)), np.arange(3.0))
        else:
            metrics.auroc(pred.predict(small.X_test)[1], np.arange(3.0))


def run_cell(p) -> dict:
    """One cell in a worker: fit, score (:func:`~blockbayes.evaluate.score`) and OOD AUROC."""
    from .. import metrics
    from . import _methods
    from ._methods import Arch
    from ._runner import score

    data, ood = _data_for(p)
    meth = _methods.get_method(p["method"])
    arch = Arch(d_in=data.n_features, hidden=tuple(p["source"]["hidden"]), task=data.task, n_classes=data.n_classes)
    mseed = int(np.random.SeedSequence([int(p["seed"]), int(p["split"]), SCALE_VERSION]).generate_state(1)[0])
    import tracemalloc

    tracemalloc.start()
    tracemalloc.reset_peak()
    heap0 = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    pred = meth.fit(arch, data.X_train, data.y_train, seed=mseed, **p["options"])
    t1 = time.perf_counter()
    sc = score(pred, data, ece_bins=p["ece_bins"])
    out = dict(sc["metrics"])
    if ood is not None:
        if data.task == "regression":
            _, v_in = pred.predict(data.X_test)
            _, v_out = pred.predict(ood)
            s_in, s_out = np.asarray(v_in, np.float64), np.asarray(v_out, np.float64)
        else:
            pin = np.asarray(pred.predict_proba(data.X_test), np.float64)
            pout = np.asarray(pred.predict_proba(ood), np.float64)
            s_in = np.asarray(metrics.predictive_entropy(pin / pin.sum(1, keepdims=True)))
            s_out = np.asarray(metrics.predictive_entropy(pout / pout.sum(1, keepdims=True)))
        out["ood_auroc"] = float(metrics.auroc(s_in, s_out))
    t2 = time.perf_counter()
    heap = (tracemalloc.get_traced_memory()[1] - heap0) / 2 ** 20
    tracemalloc.stop()
    owed = float(getattr(pred, "extra_time_s", 0.0) or 0.0)
    diag = {k: v for k, v in (pred.diagnostics or {}).items() if isinstance(v, (int, float, bool, str))}
    rec = {"metrics": out, "fit_time_s": t1 - t0 + owed, "predict_time_s": t2 - t1, "wall_time_s": t2 - t0 + owed,
           "peak_mem_mb": max(0.0, heap), "mem_mode": "tracemalloc",
           "n_train": data.n_train, "n_test": data.n_test, "n_ood": None if ood is None else int(len(ood)),
           "widths": arch.widths, "diagnostics": diag}
    if "reliability" in sc:
        rec["reliability"] = sc["reliability"]
    return rec


run_cell.prepare = _prepare_cell


# =================================================================================== scheduler (parent)

def _cell_path(out: Path, ds, label, split, seed, n, h) -> Path:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label)
    return out / "cells" / ds / safe / f"s{split}_r{seed}_n{n}_{h}.json"


def _write_json(path: Path, obj) -> None:
    from ._runner import _json_default

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)
    os.replace(tmp, path)


def _plan(cfg) -> list:
    """Every cell of the grid: dicts with the chain key, size, hash, path and payload."""
    out_dir = Path(cfg["out_dir"])
    cells = []
    for src in cfg["datasets"]:
        splits = src.resolve_splits(cfg["splits"])
        for split in splits:
            n_av = src.n_available(split)
            sizes = list(src.sizes or cfg["sizes"])
            if n_av is not None:
                sizes = sorted({s for s in sizes if s < n_av} | {n_av})
            if src.kind == "teacher_student":
                src.options.setdefault("max_n", max(sizes))
            for seed in cfg["seeds"]:
                for m in cfg["methods"]:
                    if src.task not in m.get("tasks", (src.task,)):
                        continue                # e.g. vi_block (regression only) on a classification set
                    if m.get("datasets") is not None and src.name not in m["datasets"]:
                        continue
                    opts = m["by_dataset"].get(src.name, m["options"])
                    for n in sizes:
                        key = {"v": SCALE_VERSION, "method": m["method"], "options": opts, "data": src.config(),
                               "split": split, "seed": seed, "n": n, "ece_bins": cfg["ece_bins"]}
                        h = stable_hash(key)
                        payload = {"source": src.config(), "split": split, "seed": seed, "n": n,
                                   "method": m["method"], "label": m["label"], "options": opts,
                                   "cache_dir": str(out_dir / "data"), "ece_bins": cfg["ece_bins"]}
                        payload["_budget"] = {**{k: cfg["budget"][k] for k in ("wall_s", "mem_mb")},
                                              **(src.budget or {})}
                        cells.append({"chain": (src.name, m["label"], split, seed), "n": n, "hash": h,
                                      "path": _cell_path(out_dir, src.name, m["label"], split, seed, n, h),
                                      "payload": payload, "source": src, "method": m})
    return cells


def _reusable(rec, h, budget) -> bool:
    """An ``ok`` record, or an ``over_budget`` one under a budget at least as large as ``budget``."""
    if rec is None or rec.get("hash") != h:
        return False
    if rec.get("status") == "ok":
        return True
    if rec.get("status") == "over_budget" and rec.get("reason") in ("time", "memory"):
        b = rec.get("budget") or {}
        if rec["reason"] == "time":
            return budget["wall_s"] <= float(b.get("wall_s", 0))
        return budget["mem_mb"] is not None and budget["mem_mb"] <= float(b.get("mem_mb") or 0)
    return False


def _base_record(c) -> dict:
    src, m, p = c["source"], c["method"], c["payload"]
    return {"dataset": src.name, "method": m["label"], "method_name": m["method"], "split": p["split"],
            "seed": p["seed"], "size": p["n"], "n_train": p["n"], "task": src.task, "hidden": list(src.hidden),
            "options": p["options"], "hash": c["hash"]}


def run_scale(config, *, jobs: Optional[int] = None, out_dir=None, progress: bool = True, compute: bool = True,
              log=print) -> dict:
    """Run (or resume) every cell of a scale config; returns ``{"cells": [...], "computed": k, ...}``.

    Finished cells (``ok``, and ``over_budget`` under a budget at least as large as now) are
    loaded from ``out_dir`` and not recomputed; error records are retried. Cells of one method,
    dataset, split and seed run in increasing size; after an over-budget cell the larger sizes
    are recorded as ``skipped`` (not stored, re-derived on every call). With
    ``budget.predict_factor`` set, a cell whose fit time extrapolated from the last two sizes
    (log–log) exceeds ``predict_factor × wall_s`` is recorded as ``over_budget`` with
    ``reason="predicted"`` without running (not stored either).
    """
    from ._budget import run_pool

    cfg = config if isinstance(config, dict) and "budget" in config and isinstance(config.get("datasets", [None])[0], Source) \
        else load_scale_config(config)
    if out_dir is not None:
        cfg = dict(cfg, out_dir=str(out_dir))
    if jobs is not None:
        cfg = dict(cfg, jobs=int(jobs))
    budget = cfg["budget"]
    plan = _plan(cfg)
    out = Path(cfg["out_dir"])
    (out / "logs").mkdir(parents=True, exist_ok=True)
    records = {}
    cached = 0
    for i, c in enumerate(plan):
        rec = None
        if c["path"].is_file():
            try:
                rec = json.loads(c["path"].read_text())
            except (OSError, json.JSONDecodeError):
                rec = None
        if _reusable(rec, c["hash"], c["payload"]["_budget"]):
            records[i] = rec
            cached += 1
    chains = {}
    for i, c in enumerate(plan):
        chains.setdefault(c["chain"], []).append(i)
    for v in chains.values():
        v.sort(key=lambda i: plan[i]["n"])
    running = set()
    stats = {"computed": 0, "over_budget": 0, "failed": 0, "skipped": 0, "predicted": 0}
    t_start = time.perf_counter()

    def derive(i):
        """Skipped / predicted-over-budget records from the chain's earlier cells (or None)."""
        c = plan[i]
        idx = chains[c["chain"]]
        prev = [records.get(j) for j in idx if plan[j]["n"] < c["n"]]
        for r in prev:
            if r is not None and r.get("status") in ("over_budget", "skipped"):
                n0 = r.get("over_budget_at", r["size"])
                return {**_base_record(c), "status": "skipped", "over_budget_at": n0,
                        "error": f"over budget at n = {n0}"}
        if any(r is None for r in prev):
            return None                         # an earlier size is still to run (or missing)
        pf = budget["predict_factor"]
        ok = [r for r in prev if r is not None and r.get("status") == "ok" and r.get("fit_time_s", 0) > 0]
        if pf is not None and len(ok) >= 2:
            a, b = ok[-2], ok[-1]
            slope = max(1.0, math.log(b["fit_time_s"] / a["fit_time_s"]) / math.log(b["size"] / a["size"]))
            pred = b["fit_time_s"] * (c["n"] / b["size"]) ** slope
            wall = c["payload"]["_budget"]["wall_s"]
            if pred > pf * wall:
                return {**_base_record(c), "status": "over_budget", "reason": "predicted", "predicted_s": pred,
                        "budget": c["payload"]["_budget"], "over_budget_at": c["n"],
                        "error": f"predicted fit time {pred:.0f} s > {pf:g} × budget {wall:g} s "
                                 f"(slope max(1, {slope:.2f}) from n = {a['size']}, {b['size']})"}
        return None

    def next_cell():
        if not compute:
            return "done"
        pending = False
        best = None
        for v in chains.values():
            for i in v:
                if i in records:
                    continue
                if i in running:
                    pending = True
                    break
                d = derive(i)
                if d is not None:
                    records[i] = d
                    stats["skipped" if d["status"] == "skipped" else "predicted"] += 1
                    continue
                if any(j in running for j in v):
                    pending = True
                    break
                if best is None or plan[i]["n"] < plan[best]["n"]:
                    best = i
                break
        if best is None:
            return None if pending or running else "done"
        c = plan[best]
        t = time.perf_counter()
        c["source"].prepare(c["payload"]["split"], c["n"], c["payload"]["cache_dir"])
        if time.perf_counter() - t > 5:
            log(f"  data for {c['source'].name} n = {c['n']} prepared in {time.perf_counter() - t:.0f} s")
        running.add(best)
        return best, c["payload"]

    def on_result(i, res):
        running.discard(i)
        c = plan[i]
        rec = {**_base_record(c), **res, "budget": c["payload"]["_budget"],
               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "load_avg_1min": os.getloadavg()[0]}
        if rec["status"] == "over_budget":
            rec["over_budget_at"] = c["n"]
            stats["over_budget"] += 1
        elif rec["status"] == "ok":
            stats["computed"] += 1
        else:
            stats["failed"] += 1
        records[i] = rec
        _write_json(c["path"], rec)
        if progress:
            el = time.perf_counter() - t_start
            msg = (f"[{el:7.0f} s] {rec['dataset']} {rec['method']:>14s} n = {c['n']:>8d}: {rec['status']}"
                   f" ({rec.get('cell_wall_s', 0):.1f} s")
            if rec.get("peak_mem_mb") is not None:
                msg += f", {rec['peak_mem_mb']:.0f} MiB"
            msg += ")"
            if rec["status"] == "ok":
                msg += " " + " ".join(f"{k}={v:.3f}" for k, v in rec["metrics"].items() if k in
                                      ("accuracy", "nll", "ece", "rmse", "ll", "ood_auroc"))
            elif rec.get("error"):
                msg += " " + rec["error"][:160]
            log(msg, flush=True) if log is print else log(msg)

    if compute:
        run_pool(next_cell, on_result, target="blockbayes.evaluate.scale:run_cell", jobs=cfg["jobs"],
                 wall_s=budget["wall_s"], mem_mb=budget["mem_mb"], warmup_s=budget["warmup_s"],
                 plugins=cfg["plugins"], nice=cfg["nice"], threads=cfg["threads"], log_dir=str(out / "logs"))
    else:
        for v in chains.values():
            for i in v:
                if i not in records:
                    d = derive(i)
                    if d is not None:
                        records[i] = d
    cells = [records[i] for i in range(len(plan)) if i in records]
    return {"cells": cells, "config": cfg, "cached": cached, "missing": len(plan) - len(cells), **stats,
            "elapsed_s": time.perf_counter() - t_start}


def collect(config, out_dir=None) -> dict:
    """The cells already stored (no computing): :func:`run_scale` with ``compute=False``."""
    return run_scale(config, out_dir=out_dir, compute=False, progress=False)


# =================================================================================== report

def _higher(metric):
    from ._report import METRIC_INFO

    if metric == "ood_auroc":
        return True
    return METRIC_INFO.get(metric, (None, None))[1]


def scale_summary(cells, baseline="map") -> dict:
    """Per (dataset, method): largest n within budget, what stopped it, cost slopes, AULC and
    effective data ratios; plus the mean/SE summary of :func:`~blockbayes.evaluate.summarize`."""
    from ._report import summarize

    ok_cells = [c for c in cells if c.get("status") == "ok"]
    summary = summarize([{**c, "size": c["size"]} for c in cells if c.get("status") in ("ok", "error")])
    out = {"summary": summary, "methods": {}}
    keys = list(dict.fromkeys((c["dataset"], c["method"]) for c in cells))
    curves = {}
    for s in summary:
        if s["count"] > 0:
            curves.setdefault((s["dataset"], s["method"]), []).append(s)
    for ds, m in keys:
        cs = [c for c in cells if c["dataset"] == ds and c["method"] == m]
        ok = sorted({c["size"] for c in cs if c.get("status") == "ok"})
        stop = sorted((c for c in cs if c.get("status") in ("over_budget",)), key=lambda c: c["size"])
        err = sorted((c for c in cs if c.get("status") == "error"), key=lambda c: c["size"])
        row = {"largest_n": ok[-1] if ok else None, "sizes_ok": ok,
               "stopped": None, "errors": [(c["size"], c.get("error")) for c in err]}
        if stop:
            s0 = stop[0]
            row["stopped"] = {"n": s0["size"], "reason": s0.get("reason"), "error": s0.get("error")}
        rows = sorted(curves.get((ds, m), []), key=lambda r: r["n_train"])
        ns = [r["n_train"] for r in rows]
        for cost in ("fit_time_s", "peak_mem_mb"):
            pts = [(r["n_train"], r[cost]["mean"]) for r in rows if r[cost]["mean"] and r[cost]["mean"] > 0]
            if len(pts) >= 2:
                b, a = cost_slope(*zip(*pts))
                row[f"slope_{cost}"] = b
                row[f"fit_{cost}"] = (b, a)
                row[f"slope_{cost}_last2"] = cost_slope(*zip(*pts[-2:]))[0]
        row["aulc"] = {}
        if len(rows) >= 2:
            for k in rows[0]["metrics"]:
                vals = [r[k]["mean"] for r in rows if k in r]
                if len(vals) == len(rows) and all(v is not None for v in vals):
                    row["aulc"][k] = aulc(ns, vals)
        row["curve"] = {k: [(r["n_train"], r[k]["mean"]) for r in rows if k in r and r[k]["mean"] is not None]
                        for k in (rows[0]["metrics"] if rows else [])}
        out["methods"][(ds, m)] = row
    for (ds, m), row in out["methods"].items():
        b = out["methods"].get((ds, baseline))
        row["edr"] = {}
        if b is None:
            continue
        for k, pts in row["curve"].items():
            h = _higher(k)
            bp = b["curve"].get(k) or []
            if h is None or not pts or not bp:
                continue
            row["edr"][k] = effective_data_ratio(*zip(*pts), *zip(*bp), higher_is_better=h)
    del ok_cells
    return out


def _fmt_n(n) -> str:
    if n is None:
        return "–"
    n = int(n)
    e = math.log10(n)
    if abs(e - round(e)) < 1e-9:
        return f"10^{int(round(e))}"
    return f"{n:,}"


def _fmt_edr(t) -> str:
    _, r, bound = t
    s = f"{r:.2f}" if r < 100 else f"{r:.0f}"
    return {"=": s, "<=": f"≤ {s}", ">": f"> {s}"}[bound]


def write_report(res, *, doc=None, img_dir=None, command=None) -> dict:
    """Write the Markdown report (``doc``) and its PNG plots (``img_dir/eval_*.png``)."""
    from ._report import METRIC_INFO, markdown

    cfg = res["config"]
    cells = res["cells"]
    doc = Path(doc or cfg["doc"] or Path(cfg["out_dir"]) / "evaluation.md")
    img = Path(img_dir or cfg["img_dir"])
    img.mkdir(parents=True, exist_ok=True)
    doc.parent.mkdir(parents=True, exist_ok=True)
    S = scale_summary(cells, cfg["baseline"])
    paths = {}
    try:
        paths.update(_plots(cells, S, cfg, img))
    except ImportError as exc:   # matplotlib missing
        paths["plots_skipped"] = str(exc)
    b = cfg["budget"]
    L = [f"# {cfg['title']}", "",
         f"Generated by `{command or 'blockbayes eval ' + str(cfg.get('config_path'))}` on "
         f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; do not edit by hand (rerun the command: finished "
         "cells are reused, so this regenerates the report in seconds).", ""]
    if cfg.get("notes"):
        L += [cfg["notes"].strip(), ""]
    L += ["## Protocol", "",
          f"- **Budget per cell** (fit + prediction + scoring of one method at one size): "
          f"{b['wall_s']:g} s wall clock, "
          + (f"{b['mem_mb']:g} MiB growth of the worker's resident set" if b["mem_mb"] else "no memory limit")
          + ". A cell over budget is killed and recorded as *over budget at n*; the larger sizes of that method are "
            "then not run"
          + (f"; a cell whose fit time, extrapolated log–log from the last two sizes (slope ≥ 1), exceeds "
             f"{b['predict_factor']:g} × the budget is recorded as *over budget (predicted)* without running"
             if b["predict_factor"] else "") + ".",
          f"- Cells run in worker processes (`jobs = {cfg['jobs']}`, `nice {cfg['nice']}`, "
          f"{cfg['threads']} BLAS/OpenMP/Numba thread each) on a {os.cpu_count()}-core machine shared with other work; "
          "data generation and one warm-up fit per method and worker (imports, JIT) are not charged. Wall times "
          "therefore include contention: the 1-min load average at the end of each cell is stored with it"
          + (lambda la: f" (this report's cells: {min(la):.1f}–{max(la):.1f}, median {float(np.median(la)):.1f})."
             if la else ".")([c["load_avg_1min"] for c in cells if c.get("load_avg_1min") is not None]),
          f"- **Sizes** (unless a dataset sets its own): {', '.join(_fmt_n(s) for s in cfg['sizes'])} (nested: each size's training set contains the "
          f"smaller ones); seeds {cfg['seeds']}; splits {cfg['splits']}.",
          "- **Metrics**: accuracy, NLL (mean −log p̄(y|x)), Brier (sum over classes), ECE/MCE "
          f"({cfg['ece_bins']} equal-width bins, top label), RMSE/LL/CRPS in original units for regression; "
          "**OOD AUROC** of the predictive entropy (classification) or predictive variance (regression), OOD = positive; "
          "fit time (s) and peak memory (MiB: the peak of Python-heap allocations traced by `tracemalloc` during fit and "
          "prediction, which includes NumPy buffers and excludes BLAS/Numba workspaces; the memory *budget* is enforced "
          "on the worker's resident set instead, and its high-water-mark growth is stored per cell as "
          "`peak_rss_growth_mb`).",
          "- **AULC**: mean of the metric over the log-n grid (trapezoid rule on log n, normalised by the log range), "
          "over the sizes the method reached.",
          f"- **Effective data ratio** against `{cfg['baseline']}` at size n: r(n) = n_B(m(n)) / n, where m(n) is the "
          f"method's mean metric at n and n_B(v) the smallest size at which `{cfg['baseline']}`'s curve (linear in "
          f"log n between its sizes) reaches v. r > 1: `{cfg['baseline']}` needs r times more data for the method's "
          f"quality at n. `≤ r`: `{cfg['baseline']}` is already that good at its smallest size; `> r`: "
          f"`{cfg['baseline']}` never reaches it within its sizes. Where `{cfg['baseline']}`'s own curve has flattened "
          f"(or got slightly worse at a larger n), n_B is the first size that reached the plateau, so r < 1 there even "
          f"for `{cfg['baseline']}` itself: the ratio is informative only where the baseline still improves with n. "
          f"One definition for every report (`blockbayes.evaluate.effective_data_ratio_curve`; docs/data_efficiency.md "
          f"uses the same function).",
          "- **Cost slope**: least-squares slope b of log(fit time) = a + b log n over the sizes finished within "
          "budget (b = 1: linear in n); *last 2* is the slope between the two largest sizes, less affected by "
          "fixed costs at small n.", ""]
    L += ["## Datasets and methods", ""]
    for src in cfg["datasets"]:
        L.append(f"- **{src.name}** ({src.kind}, {src.task}): options `{json.dumps(src.options)}`, "
                 f"hidden widths {list(src.hidden)}" + (f", OOD: {_ood_desc(src)}" if _ood_desc(src) else "")
                 + (f"; sizes {', '.join(_fmt_n(n) for n in src.sizes)}" if src.sizes else "")
                 + (f"; budget override {src.budget}" if src.budget else "") + ".")
    L.append("")
    for m in cfg["methods"]:
        L.append(f"- **{m['label']}** (`{m['method']}`): `{json.dumps(m['options'], default=str)}`"
                 + (f"; per dataset: `{json.dumps(m['by_dataset'], default=str)}`" if m["by_dataset"] else "")
                 + (f"; run on {', '.join(m['datasets'])} only" if m.get("datasets") else ""))
    L.append("")
    datasets = list(dict.fromkeys(c["dataset"] for c in cells))
    for ds in datasets:
        methods = list(dict.fromkeys(c["method"] for c in cells if c["dataset"] == ds))
        L += [f"## {ds}", "", "### Scale: largest n within budget, cost slopes, effective data ratio", ""]
        key = "nll" if any(c.get("task") == "classification" for c in cells if c["dataset"] == ds) else "ll"
        acc = "accuracy" if key == "nll" else "rmse"
        L += [f"| method | largest n within budget | stopped at | fit-time slope (all / last 2) | "
              f"peak-memory slope | EDR vs {cfg['baseline']} ({key}) at each n | EDR ({acc}) at each n |",
              "|---|---|---|---|---|---|---|"]
        for m in methods:
            r = S["methods"][(ds, m)]
            st = r["stopped"]
            stop = "–" if st is None else (f"over budget at n = {_fmt_n(st['n'])} ({st['reason']}"
                                          + (f": {st['error']}" if st.get("error") and st["reason"] == "predicted" else "")
                                          + ")")
            if r["errors"]:
                stop += "; errors at n = " + ", ".join(_fmt_n(n) for n, _ in r["errors"])
            sl = (f"{r['slope_fit_time_s']:.2f} / {r['slope_fit_time_s_last2']:.2f}"
                  if "slope_fit_time_s" in r else "–")
            sm = f"{r['slope_peak_mem_mb']:.2f}" if "slope_peak_mem_mb" in r else "–"
            e1 = ", ".join(f"{_fmt_n(t[0])}: {_fmt_edr(t)}" for t in r["edr"].get(key, [])) or "–"
            e2 = ", ".join(f"{_fmt_n(t[0])}: {_fmt_edr(t)}" for t in r["edr"].get(acc, [])) or "–"
            L.append(f"| {m} | {_fmt_n(r['largest_n'])} | {stop} | {sl} | {sm} | {e1} | {e2} |")
        L.append("")
        rows = [s for s in S["summary"] if s["dataset"] == ds]
        names = list(dict.fromkeys(k for s in rows for k in s["metrics"]))
        if names:
            L += ["### Area under the learning curve (over the sizes each method reached)", "",
                  "| method | sizes | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
            for m in methods:
                r = S["methods"][(ds, m)]
                if r["aulc"]:
                    L.append(f"| {m} | {_fmt_n(r['sizes_ok'][0])}–{_fmt_n(r['sizes_ok'][-1])} | "
                             + " | ".join(f"{r['aulc'][k]:.3f}" if k in r["aulc"] else "–" for k in names) + " |")
            L.append("")
        for k in ("curves", "reliability", "cost"):
            p = paths.get(f"{k}_{ds}")
            if p:
                rel = os.path.relpath(p, doc.parent)
                L += [f"![{ds} {k}]({rel})", ""]
        md = markdown(rows, metrics=[k for k in names])
        cut = md.find("### Area under the learning curve")
        if cut > 0:                                          # already given above, over the same sizes
            md = md[:cut].rstrip()
        L += ["### Tables (mean ± SE over splits × seeds)", "", md.replace("\n### ", "\n#### "), ""]
        over = [c for c in cells if c["dataset"] == ds and c.get("status") in ("over_budget", "error")]
        if over:
            L += ["### Cells over budget or failed", "", "| method | n | status | reason |", "|---|---|---|---|"]
            for c in sorted(over, key=lambda c: (c["method"], c["size"])):
                L.append(f"| {c['method']} | {_fmt_n(c['size'])} | {c['status']} | "
                         f"{c.get('reason', '')}: {(c.get('error') or '').splitlines()[0][:200] if c.get('error') else ''} |")
            L.append("")
    text = "\n".join(L).rstrip() + "\n"
    doc.write_text(text)
    paths["doc"] = str(doc)
    del METRIC_INFO
    return paths


def _ood_desc(src) -> str:
    o = src.options
    if src.kind == "mnist1d":
        sh = o.get("shift") or MNIST1D_SHIFT
        return ("MNIST-1D test stream generated with the generator's arguments multiplied by "
                + ", ".join(f"{k} × {v:g}" for k, v in sh.items()) + f" ({int(o.get('n_ood', 10000))} signals)")
    if o.get("heldout"):
        return f"test inputs of the held-out classes {o['heldout']} (trained on the others)"
    if src.kind == "teacher_student" or "ood_scale" in o:
        return f"test inputs × {float(o.get('ood_scale', 3.0)):g}"
    return ""


def _plots(cells, S, cfg, img: Path) -> dict:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ._report import METRIC_INFO

    paths = {}
    datasets = list(dict.fromkeys(c["dataset"] for c in cells))
    for ds in datasets:
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in ds)
        rows = [s for s in S["summary"] if s["dataset"] == ds and s["count"] > 0]
        methods = list(dict.fromkeys(c["method"] for c in cells if c["dataset"] == ds))
        colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
        names = [k for k in ("accuracy", "nll", "ece", "brier", "rmse", "ll", "crps", "ood_auroc")
                 if any(k in s["metrics"] for s in rows)]
        if rows and names:
            fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.3), squeeze=False)
            for ax, k in zip(axes[0], names):
                for m in methods:
                    pts = sorted((s["n_train"], s[k]["mean"], s[k]["se"] or 0.0) for s in rows
                                 if s["method"] == m and k in s["metrics"] and s[k]["mean"] is not None)
                    if pts:
                        x, y, e = map(np.asarray, zip(*pts))
                        ax.errorbar(x, y, yerr=e, marker="o", ms=3, capsize=2, label=m, color=colors[m])
                ax.set_xscale("log")
                ax.set_xlabel("training points n")
                ax.set_title({"ood_auroc": "OOD AUROC"}.get(k, METRIC_INFO.get(k, (k,))[0]), fontsize=9)
                ax.grid(alpha=0.3)
            axes[0][0].legend(fontsize=7)
            fig.suptitle(f"{ds}: learning curves", fontsize=10)
            fig.tight_layout()
            p = img / f"eval_{safe}_curves.png"
            fig.savefig(p, dpi=100)
            plt.close(fig)
            paths[f"curves_{ds}"] = str(p)
        # reliability diagrams: methods × sizes (pooled over splits and seeds)
        rc = [c for c in cells if c["dataset"] == ds and c.get("status") == "ok" and c.get("reliability")]
        if rc:
            have = sorted({c["size"] for c in rc})
            want = cfg.get("reliability_sizes") or have[:: max(1, len(have) // 3)][:3]
            sizes = [s for s in want if s in have] or have[:3]
            rmeth = [m for m in methods if any(c["method"] == m for c in rc)]
            fig, axes = plt.subplots(len(sizes), len(rmeth), figsize=(2.4 * len(rmeth), 2.4 * len(sizes)),
                                     squeeze=False, sharex=True, sharey=True)
            for i, n in enumerate(sizes):
                for j, m in enumerate(rmeth):
                    ax = axes[i][j]
                    cnt = conf = acc = None
                    for c in rc:
                        if c["method"] != m or c["size"] != n:
                            continue
                        r = c["reliability"]
                        k = np.asarray(r["count"], dtype=float)
                        cf = np.nan_to_num(np.asarray([np.nan if v is None else v for v in r["confidence"]], float))
                        ac = np.nan_to_num(np.asarray([np.nan if v is None else v for v in r["accuracy"]], float))
                        cnt = k if cnt is None else cnt + k
                        conf = k * cf if conf is None else conf + k * cf
                        acc = k * ac if acc is None else acc + k * ac
                    ax.plot([0, 1], [0, 1], "k--", lw=0.7)
                    if cnt is None:
                        ax.text(0.5, 0.5, "not reached", ha="center", va="center", fontsize=8, color="0.4")
                    else:
                        M = cnt.size
                        nz = cnt > 0
                        centres = (np.arange(M) + 0.5) / M
                        ax.bar(centres[nz], acc[nz] / cnt[nz], width=1 / M, edgecolor="k", lw=0.3, alpha=0.7,
                               color=colors[m])
                        ax.plot(conf[nz] / cnt[nz], acc[nz] / cnt[nz], "o", ms=2, color="k")
                        ax.step(centres, cnt / cnt.sum(), where="mid", color="0.5", lw=0.7)
                    ax.set_xlim(0, 1)
                    ax.set_ylim(0, 1)
                    if i == 0:
                        ax.set_title(m, fontsize=8)
                    if j == 0:
                        ax.set_ylabel(f"n = {_fmt_n(n)}\naccuracy", fontsize=8)
                    if i == len(sizes) - 1:
                        ax.set_xlabel("confidence", fontsize=8)
                    ax.tick_params(labelsize=6)
            fig.suptitle(f"{ds}: reliability diagrams ({cfg['ece_bins']} equal-width bins)\nbars = accuracy, "
                         "dots = (mean confidence, accuracy), grey = fraction of points)", fontsize=8)
            fig.tight_layout()
            p = img / f"eval_{safe}_reliability.png"
            fig.savefig(p, dpi=100)
            plt.close(fig)
            paths[f"reliability_{ds}"] = str(p)
        # cost vs n, log-log, with the fitted slope per method
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), squeeze=False)
        any_pts = False
        for ax, cost, title in ((axes[0][0], "fit_time_s", "fit time (s)"), (axes[0][1], "peak_mem_mb", "peak memory (MiB)")):
            for m in methods:
                pts = sorted((s["n_train"], s[cost]["mean"]) for s in rows
                             if s["method"] == m and s[cost]["mean"] and s[cost]["mean"] > 0)
                if not pts:
                    continue
                any_pts = True
                x, y = map(np.asarray, zip(*pts))
                r = S["methods"][(ds, m)]
                lab = m
                if f"fit_{cost}" in r:
                    b, a = r[f"fit_{cost}"]
                    xx = np.array([x[0], x[-1]], float)
                    ax.plot(xx, np.exp(a) * xx ** b, "-", lw=0.8, color=colors[m])
                    lab = f"{m} (slope {b:.2f})"
                ax.plot(x, y, "o", ms=4, color=colors[m], label=lab)
                st = r["stopped"]
                if st is not None and cost == "fit_time_s":
                    ax.plot([st["n"]], [cfg["budget"]["wall_s"]], "x", ms=7, color=colors[m])
            if cost == "fit_time_s":
                ax.axhline(cfg["budget"]["wall_s"], color="k", lw=0.6, ls=":")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("training points n")
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=6)
        fig.suptitle(f"{ds}: cost vs n (log–log; line = least-squares fit; × = over budget at that n, "
                     f"dotted = the {cfg['budget']['wall_s']:g} s budget)", fontsize=8)
        fig.tight_layout()
        if any_pts:
            p = img / f"eval_{safe}_cost.png"
            fig.savefig(p, dpi=100)
            paths[f"cost_{ds}"] = str(p)
        plt.close(fig)
    return paths


# =================================================================================== command

def is_scale_config(path) -> bool:
    """Whether a config file is a scale config (it has a ``budget`` table or ``kind = "scale"``)."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            cfg = tomllib.loads(p.read_text())
        elif p.suffix.lower() == ".json":
            cfg = json.loads(p.read_text())
        else:
            return False
    except Exception:   # noqa: BLE001 - the real loader reports the error
        return False
    return isinstance(cfg, dict) and ("budget" in cfg or cfg.get("kind") == "scale")


def main(argv=None) -> int:
    """``blockbayes eval CONFIG [--jobs J] [--out-dir DIR] [--doc FILE] [--img-dir DIR] [--report-only]``."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="blockbayes eval", description="evaluation at scale from a TOML/JSON config "
                                 "(datasets × sizes × methods × splits under a per-cell budget)")
    ap.add_argument("config")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (cells in parallel)")
    ap.add_argument("--out-dir", default=None, help="override the config's out_dir (cells, data cache, logs)")
    ap.add_argument("--doc", default=None, help="override the config's report path")
    ap.add_argument("--img-dir", default=None, help="override the config's plot folder")
    ap.add_argument("--report-only", action="store_true", help="only collect stored cells and write the report")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    import signal

    def _term(signum, frame):             # `timeout`/kill: stop the workers (finally blocks), keep finished cells
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, _term)
    except ValueError:                    # not the main thread
        pass
    cfg = load_scale_config(args.config)
    if args.doc:
        cfg["doc"] = args.doc
    if args.img_dir:
        cfg["img_dir"] = args.img_dir
    res = run_scale(cfg, jobs=args.jobs, out_dir=args.out_dir, compute=not args.report_only, progress=not args.quiet)
    cmd = "blockbayes eval " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only")
    paths = write_report(res, command=cmd)
    print(f"{res['computed']} cells computed, {res['cached']} loaded, {res['over_budget']} over budget, "
          f"{res['predicted']} predicted over budget, {res['skipped']} skipped after an over-budget size, "
          f"{res['failed']} failed, {res['missing']} missing ({res['elapsed_s']:.0f} s)")
    for k, v in paths.items():
        print(f"  {k}: {v}")
    return 0 if res["failed"] == 0 else 1
