"""Evaluation framework: run inference methods side by side on benchmark data.

:func:`evaluate` runs a grid of methods × datasets × training-set sizes × splits × seeds, records
test metrics in original units (regression: RMSE, log-likelihood, CRPS, 95 % coverage;
classification: accuracy, NLL, Brier, ECE, MCE), wall time and peak memory, and writes CSV, JSON,
Markdown and plots. Finished cells are stored under ``out_dir`` keyed by a hash of their full
configuration, so an interrupted or widened run recomputes only what is new.

>>> import blockbayes as bb                                                            # doctest: +SKIP
>>> res = bb.evaluate.evaluate(["gibbs", "map"], ["boston"], splits=2, out_dir="results/demo")  # doctest: +SKIP
>>> print(res.to_markdown())                                                           # doctest: +SKIP
>>> bb.evaluate.compare(["gibbs", "ensemble"], bb.datasets.uci("yacht", 0))            # doctest: +SKIP

Methods are plug-ins (:func:`register_method`); the built-ins are ``"gibbs"`` (block Gibbs on the
noisy MLP), ``"map"``, ``"ensemble"``, ``"laplace"``/``"laplace_diag"``/``"laplace_kfac"``/
``"laplace_full"``/``"laplace_block"``/``"laplace_ll"``, ``"laplace_iterative"`` and the VI family
(``"vi_block"`` Rao–Blackwellised block VI, ``"vi_cavi"``, ``"vi_mf"`` mean-field VI of the
standard MLP) — each available when its module is (:func:`available_methods`) — and the reference
``"hmc"``: NUTS (NumPyro, optional extra ``reference``) on the same standard BNN, or with
``noisy=True`` on the noisy network (:mod:`blockbayes.evaluate.reference`).

Conventions: regression metrics are in original units (``rmse × σ_y``, ``ll = mean lpd − log σ_y``);
peak memory is the peak resident set during the cell by default (``memory="peak_rss"``, no
allocation hooks, so fit times are not inflated; see :func:`evaluate`); each method is
warmed up once per process so that imports and JIT compilation are not charged to a cell.

A run can be described by a dict or a TOML/JSON file (:func:`load_config`, :func:`run_config`,
``blockbayes eval CONFIG``)::

    out_dir = "results/boston"
    datasets = ["boston", {name = "yacht", splits = 5}]
    splits = 3
    seeds = [0]
    train_sizes = [32, 64, 128, "full"]

    [[methods]]
    method = "gibbs"
    num_warmup = 500

    [[methods]]
    method = "ensemble"
    label = "DE-5"
"""
from __future__ import annotations

import os
from pathlib import Path

from . import _methods
from ._data import DataSpec, dataset_names, read_config_file, resolve_dataset, subset_dataset
from ._methods import (Arch, Method, MethodUnavailableError, Predictor, available_methods, get_method,
                       method_names, register_method)
from ._report import (effective_data_ratio, effective_data_ratio_curve, effective_data_ratios, learning_curve_area,
                      markdown, summarize)
from ._runner import (CLASSIFICATION_METRICS, PROTOCOL_VERSION, REGRESSION_METRICS, EvaluationResult, Table,
                      compare, evaluate, score)

__all__ = ["evaluate", "compare", "score", "EvaluationResult", "Table", "Method", "Predictor", "Arch",
           "register_method", "get_method", "method_names", "available_methods", "MethodUnavailableError",
           "DataSpec", "resolve_dataset", "dataset_names", "subset_dataset", "summarize", "markdown",
           "learning_curve_area", "effective_data_ratio", "effective_data_ratio_curve", "effective_data_ratios",
           "load_config", "run_config", "main", "REGRESSION_METRICS", "CLASSIFICATION_METRICS",
           "PROTOCOL_VERSION"]

_CONFIG_KEYS = {"methods", "datasets", "train_sizes", "splits", "seeds", "out_dir", "memory", "plots",
                "progress", "on_error", "retry_errors", "ece_bins", "markdown_title"}


def load_config(config) -> dict:
    """A run configuration from a dict, or a ``.toml`` / ``.json`` file.

    Keys: ``methods`` and ``datasets`` (required) and the keyword arguments of :func:`evaluate`
    (``train_sizes``, ``splits``, ``seeds``, ``out_dir``, ``memory``, ``plots``, ``progress``,
    ``on_error``, ``retry_errors``, ``ece_bins``, ``markdown_title``). Unknown keys are an error.
    A relative ``out_dir`` in a file is taken relative to the current directory.
    """
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        cfg = read_config_file(path)
    elif isinstance(config, dict):
        cfg = dict(config)
    else:
        raise TypeError(f"config must be a dict or a path, got {type(config).__name__}")
    unknown = sorted(set(cfg) - _CONFIG_KEYS)
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown}; allowed: {sorted(_CONFIG_KEYS)}")
    for k in ("methods", "datasets"):
        if k not in cfg:
            raise ValueError(f"config needs a {k!r} entry")
    return cfg


def run_config(config, **overrides) -> EvaluationResult:
    """:func:`evaluate` with the settings of :func:`load_config` (``overrides`` win)."""
    cfg = load_config(config)
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    methods = cfg.pop("methods")
    datasets = cfg.pop("datasets")
    return evaluate(methods, datasets, **cfg)


def main(argv=None) -> int:
    """``blockbayes eval CONFIG [--out-dir DIR] [--no-progress] [--no-plots] [--list]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="blockbayes eval", description="run an evaluation grid from a TOML/JSON config")
    ap.add_argument("config", nargs="?", help="TOML or JSON file (see blockbayes.evaluate)")
    ap.add_argument("--out-dir", default=None, help="override the config's out_dir")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--list", action="store_true", help="list methods and datasets and exit")
    args = ap.parse_args(argv)
    if args.list or not args.config:
        for name in method_names():
            m = _methods._REGISTRY[name]
            print(f"{name:18s} {'available' if m.available() else 'unavailable':11s} {m.description}")
        print("datasets:", ", ".join(dataset_names()))
        return 0 if args.list else 2
    res = run_config(args.config, out_dir=args.out_dir, progress=False if args.no_progress else None,
                     plots=False if args.no_plots else None)
    print(res.to_markdown())
    print(f"\n{res.computed} cells computed, {res.cached} loaded, {res.failed} failed")
    for k, v in res.paths.items():
        print(f"  {k}: {v}")
    return 0 if res.failed == 0 else 1
