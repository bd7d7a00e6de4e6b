"""Datasets generated or shipped by other packages: scikit-learn's bundled sets and MNIST-1D."""
from __future__ import annotations

import functools
import importlib
import random
import threading

import numpy as np

from ._base import Dataset, check_count, check_float_dtype, nested_order, place
from ._base import standardize as _standardize

__all__ = ["sklearn_dataset", "SKLEARN_DATASETS", "mnist1d"]

# name: (loader, task, loader keyword arguments)
_SKLEARN = {
    "digits": ("load_digits", "classification", {}),
    "breast_cancer": ("load_breast_cancer", "classification", {}),
    "iris": ("load_iris", "classification", {}),
    "wine": ("load_wine", "classification", {}),
    "diabetes": ("load_diabetes", "regression", {"scaled": False}),
}

#: Names accepted by :func:`sklearn_dataset`.
SKLEARN_DATASETS = tuple(_SKLEARN)


def _finish(name, task, Xtr, ytr, Xte, yte, standardize, dtype, device, n_classes=None, info=None):
    D = Xtr.shape[1]
    if task == "regression":
        if standardize:
            Xtr, Xte, ytr, yte, x_mean, x_std, y_mean, y_std = _standardize(Xtr, Xte, ytr, yte)
        else:
            x_mean, x_std, y_mean, y_std = np.zeros(D), np.ones(D), 0.0, 1.0
    else:
        if standardize:
            Xtr, Xte, _, _, x_mean, x_std, _, _ = _standardize(Xtr, Xte)
        else:
            x_mean, x_std = np.zeros(D), np.ones(D)
        y_mean = y_std = None
        ytr, yte = np.asarray(ytr, dtype=np.int64), np.asarray(yte, dtype=np.int64)
    arrays = place([Xtr, ytr, Xte, yte], dtype, device)
    info = dict(info or {}, standardized=bool(standardize))
    return Dataset(*arrays, name=name, task=task, n_classes=n_classes, x_mean=x_mean, x_std=x_std,
                   y_mean=y_mean, y_std=y_std, split=None, info=info)


def sklearn_dataset(name: str, *, test_fraction: float = 0.2, seed: int = 0, standardize: bool = True,
                    dtype="float64", device=None) -> Dataset:
    """A train/test split of one of scikit-learn's bundled (offline) datasets.

    Parameters
    ----------
    name : {"digits", "breast_cancer", "iris", "wine", "diabetes"}
        ``digits`` (1797 × 64, 10 classes), ``breast_cancer`` (569 × 30, 2 classes), ``iris``
        (150 × 4, 3 classes), ``wine`` (178 × 13, 3 classes) or ``diabetes`` (442 × 10,
        regression; the raw, unscaled features).
    test_fraction : float
        Fraction of points in the test set, in ``(0, 1)``.
    seed : int
        Seed of the split (``sklearn.model_selection.train_test_split(random_state=seed)``);
        stratified by class for classification.
    standardize : bool
        Standardise X with training statistics (constant columns, e.g. in digits, get std 1), and
        for diabetes also y.
    dtype : {"float64", "float32"}
    device : None, "cpu", "cuda" or "cuda:N"

    Returns
    -------
    Dataset
        Labels are ``int64`` in ``0 .. n_classes - 1``.

    Raises
    ------
    ValueError
        Unknown name or ``test_fraction`` outside ``(0, 1)``.
    ImportError
        scikit-learn is not installed (it is an optional dependency: ``blockbayes[eval]``).
    """
    if not isinstance(name, str) or name.lower() not in _SKLEARN:
        raise ValueError(f"unknown sklearn dataset {name!r}; choose from {', '.join(_SKLEARN)}")
    name = name.lower()
    test_fraction = float(test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    dt = check_float_dtype(dtype)
    try:
        skd = importlib.import_module("sklearn.datasets")
        skm = importlib.import_module("sklearn.model_selection")
    except ImportError as exc:
        raise ImportError("sklearn_dataset needs scikit-learn (pip install scikit-learn, "
                          "or install blockbayes[eval])") from exc
    loader, task, kwargs = _SKLEARN[name]
    X, y = getattr(skd, loader)(return_X_y=True, **kwargs)
    X = np.asarray(X, dtype=np.float64)
    idx = np.arange(X.shape[0])
    classification = task == "classification"
    tr, te = skm.train_test_split(idx, test_size=test_fraction, random_state=seed, shuffle=True,
                                  stratify=y if classification else None)
    n_classes = int(np.unique(y).size) if classification else None
    info = {"source": f"sklearn.datasets.{loader}", "seed": seed, "test_fraction": test_fraction,
            "train_index": tr, "test_index": te}
    return _finish(name, task, X[tr], y[tr], X[te], y[te], standardize, dt, device, n_classes, info)


# ------------------------------------------------------------------------------------------ MNIST-1D

_GLOBAL_RNG_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _mnist1d_raw(num_samples: int, generation_seed: int, shuffle_seq: bool):
    try:
        data_mod = importlib.import_module("mnist1d.data")
    except ImportError as exc:
        raise ImportError(
            "mnist1d() needs the optional package 'mnist1d' (pip install mnist1d); importing it also "
            f"needs matplotlib and requests ({type(exc).__name__}: {exc})") from exc
    args = data_mod.get_dataset_args()
    args.num_samples = num_samples
    args.seed = generation_seed
    args.shuffle_seq = bool(shuffle_seq)
    # make_dataset reseeds and consumes the *global* numpy and `random` generators: restore them
    with _GLOBAL_RNG_LOCK:
        np_state = np.random.get_state()
        py_state = random.getstate()
        try:
            d = data_mod.make_dataset(args)
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
    out = tuple(np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test"))
    for a in out:
        a.setflags(write=False)
    return out


def mnist1d(*, n_train: int | None = None, seed: int = 0, num_samples: int = 5000,
            generation_seed: int = 42, shuffle_seq: bool = False, standardize: bool = False,
            dtype="float64", device=None) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated procedurally by the optional ``mnist1d`` package.

    With the defaults the result equals the official ``mnist1d_data.pkl``: 4000 training and 1000
    test signals of length 40, 10 classes (EVALUATION.md §2.1). Nothing is downloaded
    (``make_dataset`` is called, never ``get_dataset``), and the global ``numpy.random`` and
    ``random`` states, which the package reseeds, are saved and restored around the call.
    Generated sets are cached in memory (generation takes about 2 s for 5000 samples).

    Parameters
    ----------
    n_train : int, optional
        Use a class-stratified random subset of this many training points (``None``: all). The
        subsets are nested: for a fixed ``seed``, a smaller ``n_train`` gives a subset of a larger
        one (:func:`nested_order`). The test set is always the full one.
    seed : int
        Seed of the training subset (unused when ``n_train`` is ``None``).
    num_samples : int
        Total number of signals generated (``>= 10``); 80 % of them are the training set.
    generation_seed : int
        The package's generation seed; 42 reproduces the official dataset.
    shuffle_seq : bool
        The package's spatially shuffled variant.
    standardize : bool
        Standardise X per feature with training statistics. Off by default: the package already
        centres the signals and scales them to unit overall standard deviation, and the reference
        accuracies are for that scaling.
    dtype : {"float64", "float32"}
    device : None, "cpu", "cuda" or "cuda:N"

    Returns
    -------
    Dataset
        ``task="classification"``, ``n_classes=10``, integer labels.

    Raises
    ------
    ImportError
        The ``mnist1d`` package (or matplotlib/requests, which it imports) is missing.
    ValueError
        ``n_train`` larger than the generated training set.
    """
    num_samples = check_count("num_samples", num_samples, minimum=10)
    generation_seed = check_count("generation_seed", generation_seed)
    dt = check_float_dtype(dtype)
    x, y, x_test, y_test = _mnist1d_raw(num_samples, generation_seed, bool(shuffle_seq))
    index = None
    if n_train is not None:
        n_train = check_count("n_train", n_train, minimum=1)
        if n_train > y.shape[0]:
            raise ValueError(f"n_train={n_train} exceeds the {y.shape[0]} generated training points; "
                             "raise num_samples")
        index = nested_order(y, seed=seed)[:n_train]
        x, y = x[index], y[index]
    info = {"source": "mnist1d.data.make_dataset", "num_samples": num_samples,
            "generation_seed": generation_seed, "shuffle_seq": bool(shuffle_seq),
            "seed": seed if n_train is not None else None, "train_index": index}
    return _finish("mnist1d", "classification", x, y, x_test, y_test, standardize, dt, device, 10, info)
