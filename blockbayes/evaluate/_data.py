"""Dataset specifications of :mod:`blockbayes.evaluate`: names -> loaders, splits, nested subsets.

A dataset is given as

* a name: a UCI benchmark name or alias (``"boston"``, ``"concrete"``, ``"uci:yacht"``, ...), a
  scikit-learn bundled set (``"digits"``, ``"iris"``, ``"sklearn:wine"``, ...), ``"mnist1d"`` or
  ``"teacher_student"``;
* a mapping ``{"name": ..., **options}`` with loader options (``root`` for UCI, ``test_fraction``
  for scikit-learn sets, ``d``/``n_train``/``n_test``/``delta``/``teacher_hidden`` for
  teacher–student) and protocol options ``hidden`` (hidden widths of the network: an int or a
  list) and ``splits`` (overriding the run's);
* a :class:`~blockbayes.datasets.Dataset` (one fixed split).

"Split" means the benchmark split for UCI (Gal's splits, ``0 .. n_splits-1``) and the seed of the
train/test split (or of the teacher) for the other sources.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = ["DataSpec", "resolve_dataset", "dataset_names", "subset_dataset"]

_SKLEARN = ("digits", "breast_cancer", "iris", "wine", "diabetes")
_SPECIAL = ("mnist1d", "teacher_student")


def dataset_names() -> tuple:
    """Known dataset names (UCI canonical names, scikit-learn bundled sets, mnist1d, teacher_student)."""
    from ..datasets import uci_names

    return tuple(uci_names()) + _SKLEARN + _SPECIAL


@dataclass
class DataSpec:
    """A resolved dataset: how to load split ``s`` and what network to use on it."""

    name: str                 # display / file name
    source: str               # "uci" | "sklearn" | "mnist1d" | "teacher_student" | "object"
    loader_options: dict = field(default_factory=dict)
    hidden: Optional[tuple] = None
    splits: Any = None        # per-dataset override of the run's splits
    n_splits: Optional[int] = None
    dataset: Any = None       # for source="object"

    def config(self) -> dict:
        """What enters the cell hash (the loader options, source and network, not the splits)."""
        opts = {k: (str(v) if k == "root" else v) for k, v in self.loader_options.items() if k != "root"}
        d = {"name": self.name, "source": self.source, "loader": opts,
             "hidden": list(self.hidden) if self.hidden else None}
        if self.source == "object":
            d["fingerprint"] = _fingerprint(self.dataset)
        return d

    def default_splits(self) -> list:
        return list(range(self.n_splits)) if self.n_splits else [0]

    def resolve_splits(self, splits) -> list:
        """``None`` -> the protocol's splits; an int ``k`` -> the first ``k``; a list -> those."""
        s = self.splits if self.splits is not None else splits
        if s is None:
            return self.default_splits()
        if isinstance(s, bool):
            raise TypeError("splits must be None, an int or a list of ints")
        if isinstance(s, (int, np.integer)):
            k = int(s)
            if k < 1:
                raise ValueError(f"splits must be >= 1, got {k}")
            if self.n_splits is not None:
                k = min(k, self.n_splits)
            return list(range(k))
        out = [int(v) for v in s]
        if self.n_splits is not None:
            bad = [v for v in out if not 0 <= v < self.n_splits]
            if bad:
                raise ValueError(f"{self.name} has splits 0..{self.n_splits - 1}; got {bad}")
        if self.source == "object" and out != [0]:
            raise ValueError("a Dataset object is one fixed split: use splits=[0]")
        return out

    def load(self, split: int):
        """The :class:`~blockbayes.datasets.Dataset` of split ``split`` (standardised, float64, host)."""
        from .. import datasets

        o = dict(self.loader_options)
        if self.source == "uci":
            return datasets.uci(self.name, split, **o)
        if self.source == "sklearn":
            return datasets.sklearn_dataset(self.name, seed=split, **o)
        if self.source == "mnist1d":
            return datasets.mnist1d(**o)
        if self.source == "teacher_student":
            from ..model import MLP

            d = int(o.get("d", 10))
            th = o.get("teacher_hidden", 10)
            th = [th] if isinstance(th, int) else list(th)
            net = MLP([d, *th, 1], "relu", delta=float(o.get("delta", 1e-2)))
            data, _ = datasets.teacher_student(net, int(o.get("n_train", 1000)), int(o.get("n_test", 1000)),
                                               seed=split, return_aux=False)
            return data
        if self.source == "object":
            return self.dataset
        raise AssertionError(self.source)

    @property
    def task(self) -> str:
        """``"regression"`` or ``"classification"`` (known without loading)."""
        if self.source == "object":
            return self.dataset.task
        if self.source in ("uci", "teacher_student") or self.name == "diabetes":
            return "regression"
        return "classification"

    def hidden_for(self, data) -> tuple:
        if self.hidden:
            return tuple(self.hidden)
        if self.source == "uci":
            h = (data.info or {}).get("n_hidden")
            if h:
                return (int(h),)
        return (50,)


def _fingerprint(data) -> str:
    h = hashlib.sha1()
    for a in data[:4]:
        a = np.ascontiguousarray(np.asarray(a))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _as_hidden(h):
    if h is None:
        return None
    if isinstance(h, (int, np.integer)):
        return (int(h),)
    return tuple(int(v) for v in h)


def resolve_dataset(spec) -> DataSpec:
    """A :class:`DataSpec` from a name, a mapping or a Dataset; clear errors for unknown names."""
    from .. import datasets

    if isinstance(spec, datasets.Dataset):
        return DataSpec(name=spec.name, source="object", dataset=spec, n_splits=1)
    if isinstance(spec, DataSpec):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise TypeError(f"a dataset must be a name, a mapping or a Dataset, got {type(spec).__name__}")
    opts = dict(spec)
    if "name" not in opts:
        raise ValueError(f"a dataset mapping needs a 'name' entry, got {sorted(opts)}")
    raw = str(opts.pop("name"))
    hidden = _as_hidden(opts.pop("hidden", None))
    splits = opts.pop("splits", None)
    prefix, sep, rest = raw.partition(":")
    kind = prefix.lower() if sep else None
    name = rest if sep else raw
    low = name.lower()
    if kind in (None, "sklearn") and low in _SKLEARN:
        return DataSpec(name=low, source="sklearn", loader_options=opts, hidden=hidden, splits=splits)
    if kind is None and low in _SPECIAL:
        src = low
        n_splits = 1 if src == "mnist1d" else None
        return DataSpec(name=low, source=src, loader_options=opts, hidden=hidden, splits=splits, n_splits=n_splits)
    if kind in (None, "uci"):
        try:
            info = datasets.uci_info(name, root=opts.get("root"))
        except (ValueError, TypeError):
            info = None
        if info is not None:
            if info.path is None:
                raise FileNotFoundError(
                    f"UCI dataset {info.name!r} is known but its files were not found; pass "
                    f"{{'name': {raw!r}, 'root': FOLDER}} or set ${datasets.UCI_ENV_VAR}; available here: "
                    f"{', '.join(datasets.uci_names(available=True, root=opts.get('root'))) or 'none'}")
            return DataSpec(name=info.name, source="uci", loader_options=opts, hidden=hidden, splits=splits,
                            n_splits=info.n_splits)
    raise ValueError(f"unknown dataset {raw!r}; known: {', '.join(dataset_names())} "
                     "(prefix 'uci:' or 'sklearn:' to disambiguate), or pass a Dataset object")


def subset_dataset(data, idx: np.ndarray):
    """Training subset ``idx`` of ``data`` (test set unchanged), re-standardised on the subset.

    When the loader standardised the data (``data.info["standardized"]``), inputs and (for
    regression) targets of the subset are standardised again with the subset's own statistics, so a method trained on ``n`` points sees exactly what it would see had it only
    been given those ``n`` points. ``y_mean``/``y_std`` of the result map back to the original
    units (composition of both affine maps). Returns the full dataset when ``idx`` covers it.
    """
    from ..datasets import standardize

    n = data.n_train
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size == n and np.array_equal(np.sort(idx), np.arange(n)):
        return data
    Xtr = np.asarray(data.X_train)[idx]
    Xte = np.asarray(data.X_test)
    ytr = np.asarray(data.y_train)[idx]
    yte = np.asarray(data.y_test)
    if not (data.info or {}).get("standardized", False):
        return data._replace(X_train=Xtr, y_train=ytr)
    if data.task == "regression":
        Xtr, Xte, ytr2, yte2, _, _, m, s = standardize(Xtr, Xte, ytr, yte)
        y_mean = data.y_mean + data.y_std * m
        y_std = data.y_std * s
        return data._replace(X_train=Xtr.astype(data.X_train.dtype), X_test=Xte.astype(data.X_test.dtype),
                             y_train=ytr2.astype(data.y_train.dtype), y_test=yte2.astype(data.y_test.dtype),
                             y_mean=float(y_mean), y_std=float(y_std))
    Xtr, Xte, *_ = standardize(Xtr, Xte)
    return data._replace(X_train=Xtr.astype(data.X_train.dtype), X_test=Xte.astype(data.X_test.dtype),
                         y_train=ytr)


def stable_hash(obj) -> str:
    """SHA-1 of the canonical JSON of ``obj`` (first 12 hex digits)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def json_default(o):
    """``json.dump(default=)`` hook: NumPy scalars/arrays to Python, paths and the rest to str."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def read_config_file(path) -> dict:
    """The dict of a ``.toml`` or ``.json`` experiment config file (``blockbayes eval``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for another suffix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} not found")
    text = path.read_text()
    if path.suffix.lower() == ".toml":
        import tomllib

        return tomllib.loads(text)
    if path.suffix.lower() == ".json":
        return json.loads(text)
    raise ValueError(f"config file must end in .toml or .json, got {path.name!r}")
