"""Shared pieces of :mod:`blockbayes.datasets`: the :class:`Dataset` result, standardisation,
dtype/device handling and nested stratified subsets."""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._backend import resolve_device, to_device

__all__ = ["Dataset", "DataFormatError", "nested_order"]


class DataFormatError(ValueError):
    """A dataset file exists but its content is malformed (non-numeric, ragged, NaN, bad indices)."""


class Dataset(NamedTuple):
    """A train/test split with the metadata needed to report metrics in original units.

    Every loader in :mod:`blockbayes.datasets` returns one. It is a :class:`typing.NamedTuple`, so
    ``X_train, y_train, X_test, y_test = data[:4]`` works.

    Attributes
    ----------
    X_train, X_test : array, shape (n, d)
        Inputs, float32 or float64, NumPy by default or on the requested ``device``. Standardised
        with training statistics when the loader was asked to (see ``x_mean``/``x_std``).
    y_train, y_test : array
        Regression: float targets of shape ``(n,)`` (``(n, d_out)`` for a multi-output teacher),
        standardised with the training mean and standard deviation when asked to.
        Classification: integer labels (``int64``) of shape ``(n,)`` in ``0 .. n_classes - 1``.
    name : str
        Canonical dataset name (e.g. ``"bostonHousing"``, ``"digits"``, ``"teacher_student"``).
    task : {"regression", "classification"}
    n_classes : int or None
        Number of classes for classification, ``None`` for regression.
    x_mean, x_std : numpy.ndarray, shape (d,)
        Host (NumPy, float64) statistics that were subtracted from / divided into the inputs:
        ``X_std = (X_raw - x_mean) / x_std``. Zeros and ones when nothing was standardised.
        Constant training columns get ``x_std = 1`` (they become exactly 0).
    y_mean, y_std : float or None
        Regression only: ``y_std_units = (y_raw - y_mean) / y_std``; ``0.0`` and ``1.0`` when the
        targets were not standardised. ``None`` for classification. Predictions map back with
        :meth:`unstandardize_y`, predictive standard deviations with :meth:`unstandardize_scale`,
        and log densities of standardised targets convert by subtracting ``log(y_std)``.
    split : int or None
        Split number for benchmark splits (UCI), else ``None``.
    info : dict
        Loader-specific extras (source path, split source, constant columns, sizes, ...).
    """

    X_train: Any
    y_train: Any
    X_test: Any
    y_test: Any
    name: str
    task: str
    n_classes: int | None = None
    x_mean: np.ndarray | None = None
    x_std: np.ndarray | None = None
    y_mean: float | None = None
    y_std: float | None = None
    split: int | None = None
    info: dict | None = None

    @property
    def n_train(self) -> int:
        """Number of training points."""
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test points."""
        return int(self.X_test.shape[0])

    @property
    def n_features(self) -> int:
        """Input dimension ``d``."""
        return int(self.X_train.shape[1])

    def unstandardize_y(self, y):
        """Map standardised targets or predictive means back to original units.

        Parameters
        ----------
        y : array or float
            Values on the standardised scale (any array library; arithmetic only).

        Returns
        -------
        array or float
            ``y * y_std + y_mean``.

        Raises
        ------
        TypeError
            For a classification dataset (labels are never standardised).
        """
        if self.task != "regression":
            raise TypeError(f"{self.name} is a classification dataset; its labels are not standardised")
        return y * self.y_std + self.y_mean

    def unstandardize_scale(self, s):
        """Map a standard deviation (or RMSE) on the standardised scale to original units: ``s * y_std``."""
        if self.task != "regression":
            raise TypeError(f"{self.name} is a classification dataset; its labels are not standardised")
        return s * self.y_std


def check_float_dtype(dtype) -> np.dtype:
    """``np.dtype`` for ``"float32"``/``"float64"`` (or the dtypes); anything else is a TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from exc
    if dt.name not in ("float32", "float64"):
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dt.name}")
    return dt


def check_count(name: str, value, *, minimum: int = 0) -> int:
    """A non-negative (or ``>= minimum``) Python int from an int-like ``value``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def standardize(X_train, X_test, y_train=None, y_test=None):
    """Standardise with training statistics (host NumPy, float64).

    Inputs: ``(X - mean) / std`` per column with ``std`` the population standard deviation
    (``ddof=0``, as in Gal's ``net.py``); a column that is constant on the training set gets
    ``std = 1`` and ``mean`` equal to its value, so it becomes exactly zero. Targets (when given):
    ``(y - mean) / std`` with the training mean and standard deviation (``std = 1`` if constant).

    Returns
    -------
    X_train, X_test, y_train, y_test, x_mean, x_std, y_mean, y_std
    """
    X_train = np.asarray(X_train, dtype=np.float64)
    X_test = np.asarray(X_test, dtype=np.float64)
    d = X_train.shape[1]
    if X_train.shape[0] == 0:
        x_mean, x_std = np.zeros(d), np.ones(d)
    else:
        x_mean = X_train.mean(axis=0)
        x_std = X_train.std(axis=0)
        const = np.ptp(X_train, axis=0) == 0
        x_mean[const] = X_train[0, const]
        x_std[const | (x_std == 0)] = 1.0
    Xtr = (X_train - x_mean) / x_std
    Xte = (X_test - x_mean) / x_std
    if y_train is None:
        return Xtr, Xte, None, None, x_mean, x_std, None, None
    y_train = np.asarray(y_train, dtype=np.float64)
    y_test = np.asarray(y_test, dtype=np.float64)
    if y_train.shape[0] == 0:
        y_mean, y_std = 0.0, 1.0
    else:
        y_mean = float(y_train.mean())
        y_std = float(y_train.std())
        if np.ptp(y_train) == 0 or y_std == 0:
            y_mean, y_std = float(y_train.flat[0]), 1.0
    return Xtr, Xte, (y_train - y_mean) / y_std, (y_test - y_mean) / y_std, x_mean, x_std, y_mean, y_std


def place(arrays, dtype: np.dtype, device):
    """Cast host arrays (floats to ``dtype``, integers to int64) and move them to ``device``.

    ``device=None`` or ``"cpu"`` gives NumPy arrays; ``"cuda"``/``"cuda:N"`` gives CuPy arrays
    (a clear :class:`~blockbayes._backend.BackendUnavailableError` without CuPy or a GPU).
    """
    kind, index = resolve_device(device)
    out = []
    for a in arrays:
        a = np.asarray(a)
        a = a.astype(np.int64 if a.dtype.kind in "iub" else dtype, copy=False)
        a = np.ascontiguousarray(a)
        out.append(a if kind in (None, "cpu") else to_device(a, kind, index))
    return out


def nested_order(y=None, *, n=None, seed=0, stratify=True) -> np.ndarray:
    """A random permutation whose every prefix is (as nearly as possible) class-balanced.

    Taking ``order[:m]`` for growing ``m`` gives *nested* training subsets, as the
    data-efficiency protocol (EVALUATION.md §1.5) asks for, stratified by class.

    Parameters
    ----------
    y : array-like of int, shape (n,), optional
        Labels to stratify by. Omit (and pass ``n``) for a plain random permutation.
    n : int, optional
        Length when ``y`` is not given.
    seed : int
        Seed of the permutation (NumPy ``Generator(PCG64)``; the global RNG is untouched).
    stratify : bool
        ``False`` ignores the labels.

    Returns
    -------
    numpy.ndarray of int64
        Indices into ``y``. Within each class the order is a uniform random permutation; the
        classes are interleaved so that after ``m`` indices class ``c`` has been drawn
        ``round(m · n_c / n)`` times, up to one.
    """
    rng = np.random.default_rng(seed)
    if y is None:
        if n is None:
            raise TypeError("nested_order needs y or n")
        return rng.permutation(check_count("n", n)).astype(np.int64)
    y = np.asarray(y)
    perm = rng.permutation(y.shape[0])
    if not stratify:
        return perm.astype(np.int64)
    ys = y[perm]
    position = np.empty(y.shape[0], dtype=np.float64)
    offsets = rng.random(y.shape[0]) * 0.5  # tie-breaking between classes at equal positions
    for c in np.unique(ys):
        members = np.flatnonzero(ys == c)
        position[members] = (np.arange(members.size) + 0.25 + offsets[members]) / members.size
    return perm[np.argsort(position, kind="stable")].astype(np.int64)
