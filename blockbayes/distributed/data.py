"""Out-of-core data: teacher-student sets of any size written as ``.npy`` chunks on disk.

Layout of a data directory::

    meta.json              n, chunk_rows, widths, dtype, seed, net settings
    teacher.npz            the teacher's weights w0, w1, ... (bias last)
    X_00000.npy, y_00000.npy, X_00001.npy, ...

Chunk ``i`` is a deterministic function of ``(seed, i)`` only, so chunks can be written (or
re-written) independently, and the data set does not depend on the order of writing.
:func:`open_dataset` returns lazy Dask arrays (one Dask chunk per file, memory-mapped reads),
which :func:`blockbayes.distributed.run` hands to the workers without gathering them.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from .._backend import random as bbr
from ..model import MLP

__all__ = ["write_teacher_student", "open_dataset", "teacher_weights"]


def teacher_weights(net: MLP, seed):
    """Teacher weights drawn from the prior of ``net`` (float64, per layer ``(d_{l+1}, d_l + 1)``)."""
    keys = bbr.split(bbr.split(bbr.key(seed), 2)[0], net.num_layers)
    out = []
    for l, s in enumerate(net.weight_shapes()):
        lam = net.prior_precision_vector(l, np, dtype=np.float64, device="cpu")
        out.append(bbr.normal(keys[l], s, like=np.zeros(1)) / np.sqrt(lam))
    return out


def _chunk(net, weights, seed, i, rows, dtype):
    rng = np.random.Generator(np.random.Philox(key=np.random.SeedSequence([int(seed), 1, i]).generate_state(2)))
    X = rng.standard_normal((rows, net.d_in))
    H = X
    for l, W in enumerate(weights):
        A = H @ W[:, :-1].T + W[:, -1]
        if l == net.num_layers - 1:
            y = A + math.sqrt(net.delta_y) * rng.standard_normal(A.shape)
        else:
            Z = A + math.sqrt(net.delta_z[l]) * rng.standard_normal(A.shape)
            F = np.maximum(Z, 0) if net.activation == "relu" else (
                Z if net.activation == "identity" else np.where(Z >= 0, Z, net.slope * Z))
            H = F + math.sqrt(net.delta_x[l]) * rng.standard_normal(F.shape)
    return X.astype(dtype), y.astype(dtype)


def write_teacher_student(path, net: MLP, n: int, *, seed: int = 0, chunk_rows: int = 1_000_000,
                          dtype="float32", overwrite: bool = False):
    """Write ``n`` rows of teacher-student data (noisy teacher of MATH.md §A.0) as chunks.

    Inputs ``x ~ N(0, I)``; hidden ``Z = X̃W̃ᵀ + √Δ_Z ξ``, ``X = f(Z) + √Δ_X η``; outputs
    ``y = X̃^L W̃^{L⊤} + √Δ_y ε`` with the teacher drawn from ``net``'s prior. Memory is
    ``O(chunk_rows · max width)`` whatever ``n``.

    Returns the directory path. Existing complete data with the same metadata is reused
    unless ``overwrite``.
    """
    n, chunk_rows = int(n), int(chunk_rows)
    if n < 1 or chunk_rows < 1:
        raise ValueError(f"n and chunk_rows must be positive, got {n}, {chunk_rows}")
    if net.likelihood != "gaussian":
        raise ValueError("write_teacher_student writes regression data (likelihood='gaussian')")
    dtype = np.dtype(dtype).name
    meta = dict(n=n, chunk_rows=chunk_rows, widths=list(net.widths), activation=net.activation,
                slope=net.slope, dtype=dtype, seed=int(seed), delta=[list(net.delta_z), list(net.delta_x), net.delta_y],
                lam=[list(net.lam_w), list(net.lam_b)], complete=True)
    mpath = os.path.join(path, "meta.json")
    if not overwrite and os.path.exists(mpath):
        with open(mpath) as f:
            if json.load(f) == meta:
                return path
    os.makedirs(path, exist_ok=True)
    weights = teacher_weights(net, seed)
    np.savez(os.path.join(path, "teacher.npz"), **{f"w{l}": W for l, W in enumerate(weights)})
    for i, r0 in enumerate(range(0, n, chunk_rows)):
        X, y = _chunk(net, weights, seed, i, min(chunk_rows, n - r0), dtype)
        np.save(os.path.join(path, f"X_{i:05d}.npy"), X)
        np.save(os.path.join(path, f"y_{i:05d}.npy"), y)
    with open(mpath, "w") as f:
        json.dump(meta, f)
    return path


def open_dataset(path):
    """``(X, y, meta)``: lazy Dask arrays over the chunk files (memory-mapped reads) and the
    metadata dict (with the teacher weights under ``"teacher"``)."""
    import dask
    import dask.array as da

    with open(os.path.join(path, "meta.json")) as f:
        meta = json.load(f)
    n, cr, dt = meta["n"], meta["chunk_rows"], np.dtype(meta["dtype"])
    d_in, d_out = meta["widths"][0], meta["widths"][-1]
    load = dask.delayed(lambda p: np.load(p, mmap_mode="r"), pure=True)
    Xs, ys = [], []
    for i, r0 in enumerate(range(0, n, cr)):
        m = min(cr, n - r0)
        Xs.append(da.from_delayed(load(os.path.join(path, f"X_{i:05d}.npy")), (m, d_in), dtype=dt))
        ys.append(da.from_delayed(load(os.path.join(path, f"y_{i:05d}.npy")), (m, d_out), dtype=dt))
    with np.load(os.path.join(path, "teacher.npz")) as f:
        meta["teacher"] = [f[f"w{l}"] for l in range(len(meta["widths"]) - 1)]
    return da.concatenate(Xs, axis=0), da.concatenate(ys, axis=0), meta
