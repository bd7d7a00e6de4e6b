"""Host file I/O of blockbayes: ``.npz`` archives of named arrays plus JSON metadata, no pickle.

The one place that writes and reads the files of results (``Posterior.save`` / ``load``) and of
run checkpoints (:mod:`blockbayes.driver`), so that the families and result modules never touch
NumPy's file functions themselves. A file is an ``.npz`` archive: every array by name (host NumPy
copies of whatever backend the caller holds) and one 0-d string entry holding the metadata as
JSON. Reading uses ``allow_pickle=False``; anything that is not such an archive (a corrupt or
truncated file, pickled data, a foreign ``.npz``, an ``.npy``, unreadable metadata) is a
:class:`NotABlockbayesFile` error (a ``ValueError``) whose message says
``"<path> is not a <what> (<why>)"`` instead of NumPy's pickle or zip message.
"""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from . import to_numpy

__all__ = ["save_npz", "load_npz", "host_copy", "jsonable", "NotABlockbayesFile"]


class NotABlockbayesFile(ValueError):
    """The file is not one blockbayes wrote (corrupt, foreign, pickled or without metadata)."""


def host_copy(x) -> np.ndarray:
    """An independent host NumPy copy of the array ``x`` (any backend)."""
    return np.array(to_numpy(x), copy=True)


def jsonable(obj):
    """``obj`` with tuples as lists, arrays and NumPy scalars as (nested) Python lists/numbers,
    and anything else not JSON-able as its ``repr``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return jsonable(np.asarray(to_numpy(obj)).tolist())
    return repr(obj)


def save_npz(path, arrays: dict, meta: dict, *, meta_key: str = "meta", atomic: bool = False) -> None:
    """Write ``arrays`` (name → array of any backend, stored as host copies) and ``meta`` (a JSON-able
    dict, stored as one 0-d string entry ``meta_key``) to the ``.npz`` file ``path``.

    ``atomic=False`` writes through :func:`numpy.savez` (which appends ``.npz`` to a path without
    it); ``atomic=True`` writes ``path`` exactly, to a temporary file first, synced and renamed
    over the old one (a reader never sees a half-written file: the checkpoints).
    """
    if meta_key in arrays:
        raise ValueError(f"array name {meta_key!r} is reserved for the metadata")
    out = {k: to_numpy(v) for k, v in arrays.items()}
    out[meta_key] = np.asarray(json.dumps(meta))
    if not atomic:
        np.savez(path, **out)
        return
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, **out)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_npz(path, *, meta_key: str = "meta", what: str = "blockbayes result file"):
    """Read a file written by :func:`save_npz`: ``(dict name -> host ndarray, meta dict)``.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    NotABlockbayesFile
        ``"<path> is not a <what> (<why>)"`` for a corrupt or truncated archive, pickled data, a
        foreign ``.npz`` (no ``meta_key`` entry), an ``.npy`` file or metadata that is not a JSON
        object.
    """
    def bad(why):
        return NotABlockbayesFile(f"{os.fspath(path)} is not a {what} ({why})")

    try:
        f = np.load(path, allow_pickle=False)
        if not hasattr(f, "files"):                       # an .npy file: a plain array
            raise bad("not an .npz archive")
        with f:
            if meta_key not in f.files:
                raise bad(f"no {meta_key!r} entry")
            arrays = {k: f[k] for k in f.files}
    except NotABlockbayesFile:
        raise
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise bad(f"{type(exc).__name__}: {exc}") from None
    try:
        meta = json.loads(str(arrays.pop(meta_key)[()]))
    except (TypeError, ValueError, IndexError) as exc:
        raise bad(f"unreadable metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise bad("metadata is not a JSON object")
    return arrays, meta
