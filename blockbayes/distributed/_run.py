"""The blocked-scan run loop (driver), for the in-process and the Dask engines."""
from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from typing import Optional

import numpy as np

from .._backend import random as bbr
from ..gibbs import Hyperprior, NonFiniteStateError, GibbsState
from ..model import MLP, resolve_learn_noise
from ..gibbs.result import GibbsResult
from . import _random as rnd
from ._driver import draw_block, log_joint_from_stats, prior_weights
from ._engine import DaskEngine, InProcessEngine, live_workers, row_ranges
from ._shard import tree_sum

__all__ = ["run", "step", "reduce_stats", "RunTimings"]


def reduce_stats(parts):
    """Sum the shards' statistics (pairwise tree in shard order: deterministic rounding)."""
    return tree_sum(parts)


class RunTimings(dict):
    """Wall-clock split of a run (seconds): ``total``, ``loop``, ``driver`` (block-1 draws,
    reductions, checkpoints), ``shards`` (waiting for the shards' half sweeps), ``sweeps``;
    ``comm_bytes`` (bytes written by Dask's TCP comms during the sweeps, driver/scheduler process
    and workers; 0 in process); and the same over all sweeps but the first (``timed_sweeps``,
    ``timed_loop``, ``timed_driver``, ``timed_comm_bytes``), which excludes first-call effects."""


def _check_int(name, v, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")


def _validate(net, X, y, dtype):
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a blockbayes.MLP, got {type(net).__name__}")
    if net.likelihood != "gaussian":
        raise ValueError(f"blockbayes.distributed supports likelihood='gaussian' only, got {net.likelihood!r}")
    for name, arr in (("X", X), ("y", y)):
        if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
            raise TypeError(f"{name} must be a NumPy or Dask array, got {type(arr).__name__}")
    if len(X.shape) != 2 or X.shape[1] != net.d_in:
        raise ValueError(f"X must have shape (n, {net.d_in}), got {tuple(X.shape)}")
    if X.shape[0] < 1:
        raise ValueError("X has no rows (n = 0); need at least one data point")
    ys = tuple(y.shape)
    if not (ys == (X.shape[0],) and net.d_out == 1) and ys != (X.shape[0], net.d_out):
        raise ValueError(f"y must have shape (n, {net.d_out})" + (" or (n,)" if net.d_out == 1 else "")
                         + f" with n = {X.shape[0]}, got {ys}")
    dt = np.dtype(dtype if dtype is not None else X.dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    for name, arr in (("X", X), ("y", y)):
        if isinstance(arr, np.ndarray) and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
    return dt


def _chunk_edges(X):
    chunks = getattr(X, "chunks", None)
    if chunks is None or not isinstance(chunks, tuple) or not chunks or not isinstance(chunks[0], tuple):
        return None
    return np.cumsum((0,) + tuple(chunks[0]))


def _sum_grams(grams):
    return reduce_stats([dict(G=[g], B=[], tt=np.zeros(1), xr=np.zeros(1), sse=None) for g in grams])["G"][0]


def step(rng_key, state: GibbsState, net: MLP, X, y, *, num_shards: int = 1, learn_noise=False,
         learn_prior=False, hyperprior: Hyperprior = Hyperprior(), post_method="auto", block_rows=65536,
         compute_log_joint=False, client=None):
    """One blocked-scan sweep (pure: returns a new state), the same numbers as one sweep of
    :func:`run` with key ``fold_in(run_key, sweep)``.

    Block 2 (all latents | all weights, row-local, on ``num_shards`` row shards), one reduction,
    block 1 (``λ | W``, ``Δ_y | W^L, latents``, all ``W^l | latents``) — see docs/distributed.md.

    Parameters
    ----------
    rng_key : key
    state : GibbsState
        NumPy arrays, ``C`` chains (``latent`` must be None: Gaussian likelihood).
    net : MLP
    X : NumPy array, shape (n, d_in)
    y : NumPy array, shape (n, d_out) or (C, n, d_out) (one target set per chain)
    num_shards, block_rows : int
        Layout (does not change the result beyond float rounding).
    learn_noise, learn_prior, hyperprior, post_method : as in :func:`blockbayes.gibbs.step`.
    compute_log_joint : bool
    client : distributed.Client, optional
        Run the half sweep on Dask actors (the state's latents are shipped to them and back:
        for validation of the distributed path on small problems, not for speed).

    Returns
    -------
    (GibbsState, log_joint or None)
    """
    dt = np.asarray(state.weights[0]).dtype
    C, N = state.delta_y.shape[0], X.shape[0]
    if y.ndim == 1:
        y = y[:, None]
    k_lat, k_drv, k_rec = rnd.step_keys(rng_key)
    ranges = row_ranges(N, num_shards)
    shard_kw = dict(num_chains=C, dtype=dt.name, block_rows=block_rows, post_method=post_method)
    engine = (InProcessEngine(net, X, y, ranges, shard_kw) if client is None
              else DaskEngine(client, net, X, y, ranges, shard_kw))
    try:
        lat = [([Z[:, a:b] for Z in state.pre], [H[:, a:b] for H in state.post]) for a, b in ranges]
        engine.call_each("set_latents", lat)
        G0 = _sum_grams(engine.call("data_gram"))
        weights = [np.asarray(W, dtype=np.float64) for W in state.weights]
        dy = np.asarray(state.delta_y, dtype=np.float64)
        stats = reduce_stats(engine.sweep(weights, dy, k_lat, k_rec, learn_noise, 1000))
        weights, lam_w, lam_b, dy = draw_block(k_drv, net, stats, G0, weights, np.asarray(state.lam_w, np.float64),
                                               np.asarray(state.lam_b, np.float64), dy, N, learn_noise=learn_noise,
                                               learn_prior=learn_prior, hyperprior=hyperprior, dtype=dt)
        lj = log_joint_from_stats(net, stats, G0, weights, lam_w, lam_b, dy, N) if compute_log_joint else None
        got = engine.call("get_latents")
    finally:
        engine.close()
    pre = tuple(np.concatenate([g[0][h] for g in got], axis=1) for h in range(net.num_layers - 1))
    post = tuple(np.concatenate([g[1][h] for g in got], axis=1) for h in range(net.num_layers - 1))
    new = GibbsState(tuple(W.astype(dt) for W in weights), pre, post, lam_w.astype(dt), lam_b.astype(dt),
                     dy.astype(dt), None)
    return new, lj


def _ckpt_path(directory):
    return os.path.join(directory, "driver.npz")


def _resume_dir(resume, checkpoint_dir):
    """The checkpoint directory to continue from (``None``: a fresh run).

    ``resume`` is that directory (or its ``driver.npz``), like the run driver's ``resume=path``;
    ``resume=True`` (the old spelling: continue from ``checkpoint_dir``) warns."""
    if resume is None or resume is False:
        return None
    if resume is True:
        if checkpoint_dir is None:
            raise ValueError("resume=True needs checkpoint_dir (or pass the checkpoint directory: "
                             "resume=path)")
        warnings.warn("blockbayes.distributed.run(): resume=True is deprecated, pass the checkpoint "
                      "directory: resume=checkpoint_dir", DeprecationWarning, stacklevel=3)
        return os.fspath(checkpoint_dir)
    if not isinstance(resume, (str, os.PathLike)):
        raise TypeError(f"resume must be a checkpoint directory (str or path) or None, got {type(resume).__name__}")
    path = os.fspath(resume)
    if os.path.basename(path) == "driver.npz":
        path = os.path.dirname(path) or "."
    if not os.path.exists(_ckpt_path(path)):
        raise FileNotFoundError(f"no blockbayes.distributed checkpoint in {path!r} (expected {_ckpt_path(path)!r})")
    return path


_DRIVER_KEYS = ("sweep", "kept", "total", "shape", "k_run", "lam_w", "lam_b", "delta_y")


def _save_driver(directory, d):
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, "driver.tmp.npz")
    np.savez(tmp, **d)
    os.replace(tmp, _ckpt_path(directory))


def run(net: MLP, X, y, *, num_samples: int, num_warmup: int = 0, num_chains: int = 1, thin: int = 1,
        seed=None, dtype=None, init="prior", learn_noise: Optional[bool] = None, learn_prior: bool = False,
        hyperprior: Hyperprior = Hyperprior(), store_log_joint: bool = True, post_method: str = "auto",
        client=None, num_shards: Optional[int] = None, block_rows: int = 65536,
        latent_dir: Optional[str] = None, in_memory: bool = True,
        checkpoint_dir: Optional[str] = None, checkpoint_every: int = 0, resume=None,
        recover_tries: int = 1000, return_state: Optional[bool] = None, progress: bool = True,
        timeout: float = 600.0, comm_idle_probe: float = 0.0, worker_malloc: str = "tuned",
        _after_sweep=None) -> GibbsResult:
    """Data-parallel blocked-scan block Gibbs (docs/distributed.md), in process or on Dask.

    One sweep: every shard redraws its rows' latents given all weights (row-local, block 2)
    and returns the sufficient statistics ``X̃^{l⊤}X̃^l``, ``X̃^{l⊤}T^l`` (+ residual sums);
    the driver tree-sums them (one reduction of ``O(Σ_l d_l(d_l + d_{l+1}))`` numbers),
    draws all hyperparameters and weights (block 1) and broadcasts them. Randomness is keyed by
    ``(seed, sweep, global row)``, so every layout — any ``num_shards``, in process or on any
    number of Dask workers, any ``block_rows`` — gives the same chain up to the float rounding
    of the reductions.

    Parameters
    ----------
    net : MLP
        ``likelihood="gaussian"``; any depth, ``"relu"``, ``"leaky_relu"`` or ``"identity"``.
    X : NumPy or Dask array, shape (n, d_in)
        With ``client``, a Dask array is read by the workers (each its own rows); it is never
        gathered on the driver.
    y : NumPy or Dask array, shape (n, d_out) or (n,)
    num_samples, num_warmup, num_chains, thin, seed, init, learn_noise, learn_prior, hyperprior,
    store_log_joint, post_method
        As in :func:`blockbayes.gibbs.run` (``init``: ``"prior"``, ``"zero"`` or per-layer
        weights; the auxiliaries come from the noisy forward pass, keyed by row). The noise rule
        is :func:`blockbayes.gibbs.run`'s (``learn_noise=None``: learned when the net leaves
        ``Δ_y`` at its default, design note 60); the counts and the start keep their explicit
        defaults here (one chain, no warm-up, ``init="prior"``): four chains of 2000 sweeps are
        no cheap default on data beyond one process.
    dtype : None, "float32" or "float64"
        Shard arithmetic dtype (default: ``X``'s); the driver works in float64.
    client : distributed.Client, optional
        ``None`` runs the shards in this process (the same blocked scan, same numbers).
    num_shards : int, optional
        Default: the number of Dask workers (one actor each), or 1 in process.
    block_rows : int
        Rows per block of a shard's loop (bounds working memory; does not change the chain).
    latent_dir : str, optional
        Keep the latents in ``.npy`` memory maps here (out of core; on each worker's disk).
    in_memory : bool
        Shards copy their rows of ``X``/``y`` into memory once (default), else re-read them
        from the source every sweep.
    checkpoint_dir, checkpoint_every : str, int
        Every ``checkpoint_every`` sweeps write the driver state (weights, hyperparameters, run
        key, sweep, traces) and each shard's latents there (a directory: the shards write their
        own files, so the run driver's one-file checkpoint does not apply).
    resume : path, optional
        Continue from the checkpoint directory ``resume`` (same data, shard layout and settings;
        it may also be ``checkpoint_dir``, which then keeps being written): the continuation is
        bit-identical to the uninterrupted run. ``resume=True`` (continue from ``checkpoint_dir``)
        is the deprecated spelling (``DeprecationWarning``).
    recover_tries : int
        Rejection tries per row when a lost shard's latents are redrawn.
    return_state : bool, optional
        Gather the latents into ``result.final_state`` (default: in process only).
    timeout : float
        Seconds to wait for a shard's half sweep before it counts as lost.
    progress : bool
        A tqdm progress bar over the sweeps (as :func:`blockbayes.gibbs.run`).
    comm_idle_probe : float
        With Dask, measure the cluster's background traffic (heartbeats) over this many idle
        seconds before the loop; ``timings["idle_comm_rate"]`` (bytes/s) then lets a benchmark
        separate the sweep's own traffic from the time-proportional background.
    worker_malloc : {"tuned", "as_is"}
        With Dask: ``"tuned"`` (default) sets glibc's mmap and trim thresholds on the workers
        that hold shards back to the large-block behaviour (:func:`._engine.tune_malloc`; Dask's
        nanny's ``MALLOC_TRIM_THRESHOLD_`` makes every block above 128 kB be mapped and faulted
        in afresh, ~1.6× the sweep at n = 10⁶); ``"as_is"`` leaves the workers' allocator alone.

    Returns
    -------
    GibbsResult
        As from :func:`blockbayes.gibbs.run` (NumPy arrays); ``config["distributed"]`` holds the
        layout, the timings (:class:`RunTimings`) and any recovery events.
    """
    for name, v, lo in (("num_samples", num_samples, 1), ("num_warmup", num_warmup, 0),
                        ("num_chains", num_chains, 1), ("thin", thin, 1), ("block_rows", block_rows, 1),
                        ("checkpoint_every", checkpoint_every, 0), ("recover_tries", recover_tries, 1)):
        _check_int(name, v, lo)
    learn_noise = resolve_learn_noise(net, learn_noise)
    dt = _validate(net, X, y, dtype)
    resume_dir = _resume_dir(resume, checkpoint_dir)
    if checkpoint_every and checkpoint_dir is None:
        raise ValueError("checkpoint_every needs checkpoint_dir")
    N = int(X.shape[0])
    C, S, L = num_chains, num_samples, net.num_layers
    if num_shards is None:
        num_shards = len(live_workers(client)) if client is not None else 1
    _check_int("num_shards", num_shards, 1)
    ranges = row_ranges(N, num_shards, _chunk_edges(X))
    shard_kw = dict(num_chains=C, dtype=dt.name, block_rows=block_rows, latent_dir=latent_dir,
                    in_memory=in_memory, post_method=post_method)
    root = bbr.key(seed)
    k_init, k_run = bbr.split(root, 2)
    t_start = time.perf_counter()
    engine = (InProcessEngine(net, X, y, ranges, shard_kw) if client is None
              else DaskEngine(client, net, X, y, ranges, shard_kw, timeout=timeout, worker_malloc=worker_malloc))
    bar = None
    try:
        G0 = _sum_grams(engine.call("data_gram"))
        total = num_warmup + S * thin
        tr_w = [np.zeros((C, S) + s, dtype=dt) for s in net.weight_shapes()]
        tr_dy = np.zeros((C, S), dtype=dt)
        tr_lw = np.zeros((C, S, L), dtype=dt)
        tr_lb = np.zeros((C, S, L), dtype=dt)
        tr_lj = np.zeros((C, S), dtype=dt) if store_log_joint else None
        kept, start = 0, 0
        if resume_dir is not None:
            with np.load(_ckpt_path(resume_dir), allow_pickle=False) as f:
                if any(k not in f.files for k in _DRIVER_KEYS):
                    raise ValueError(f"{_ckpt_path(resume_dir)!r} is not a blockbayes.distributed checkpoint")
                start, kept = int(f["sweep"]), int(f["kept"])
                if int(f["total"]) != total or tuple(f["shape"]) != (N, C, S) or not np.array_equal(f["k_run"], k_run):
                    raise ValueError("the checkpoint was written by a run with other settings (seed, sizes)")
                weights = [f[f"w{l}"] for l in range(L)]
                lam_w, lam_b, delta_y = f["lam_w"], f["lam_b"], f["delta_y"]
                for l in range(L):
                    tr_w[l][...] = f[f"tr_w{l}"]
                tr_dy[...], tr_lw[...], tr_lb[...] = f["tr_dy"], f["tr_lw"], f["tr_lb"]
                if tr_lj is not None:
                    tr_lj[...] = f["tr_lj"]
            engine.call("load", resume_dir, start)
        else:
            if isinstance(init, str):
                if init == "prior":
                    weights = [w.astype(np.float64) for w in prior_weights(k_init, net, C, dt)]
                elif init == "zero":
                    weights = [np.zeros((C,) + s) for s in net.weight_shapes()]
                else:
                    raise ValueError(f"init must be 'prior', 'zero' or a sequence of weights; got {init!r}")
            elif isinstance(init, Sequence) and len(init) == L:
                weights = []
                for l, (W, s) in enumerate(zip(init, net.weight_shapes())):
                    W = np.asarray(W, dtype=dt).astype(np.float64)
                    if W.shape == s:
                        W = np.broadcast_to(W, (C,) + s).copy()
                    if W.shape != (C,) + s or not np.all(np.isfinite(W)):
                        raise ValueError(f"init weights[{l}] must be finite with shape {s} or {(C,) + s}")
                    weights.append(W)
            else:
                raise ValueError(f"init must be 'prior', 'zero' or a sequence of {L} weight arrays")
            lam_w = np.tile(np.asarray(net.lam_w, dtype=dt).astype(np.float64), (C, 1))
            lam_b = np.tile(np.asarray(net.lam_b, dtype=dt).astype(np.float64), (C, 1))
            delta_y = np.full(C, np.asarray(net.delta_y, dtype=dt).astype(np.float64))
            engine.call("init_latents", weights, rnd.fold_in(k_init, 7), True, init == "zero")
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=start, desc="gibbs[blocked]", unit="sweep", leave=False)
        idle_rate = None
        if comm_idle_probe > 0 and client is not None:
            b0 = engine.comm_bytes()
            tp = time.perf_counter()
            time.sleep(comm_idle_probe)
            idle_rate = (engine.comm_bytes() - b0) / (time.perf_counter() - tp)
        t_drv = t_shard = 0.0
        per_sweep = []
        bytes0 = engine.comm_bytes()
        bytes1 = None
        t_loop = time.perf_counter()
        for sweep in range(start, total):
            k_lat, k_drv, k_rec = rnd.sweep_keys(k_run, sweep)
            t0 = time.perf_counter()
            parts = engine.sweep(weights, delta_y, k_lat, k_rec, learn_noise, recover_tries)
            t1 = time.perf_counter()
            stats = reduce_stats(parts)
            weights, lam_w, lam_b, delta_y = draw_block(
                k_drv, net, stats, G0, weights, lam_w, lam_b, delta_y, N, learn_noise=learn_noise,
                learn_prior=learn_prior, hyperprior=hyperprior, dtype=dt)
            bad = [f"weights of layer {l + 1}" for l, W in enumerate(weights) if not np.all(np.isfinite(W))]
            bad += [nm for nm, v in (("lam_w", lam_w), ("lam_b", lam_b), ("delta_y", delta_y)) if not np.all(np.isfinite(v))]
            if bad or not all(np.all(np.isfinite(g)) for g in stats["B"]):
                raise NonFiniteStateError(f"the sampler state became non-finite at sweep {sweep + 1} (of {total}) in: "
                                          + ("; ".join(bad) or "the latents' statistics"))
            keep = sweep >= num_warmup and (sweep - num_warmup) % thin == thin - 1
            if keep:
                for l in range(L):
                    tr_w[l][:, kept] = weights[l]
                tr_dy[:, kept], tr_lw[:, kept], tr_lb[:, kept] = delta_y, lam_w, lam_b
                if tr_lj is not None:
                    tr_lj[:, kept] = log_joint_from_stats(net, stats, G0, weights, lam_w, lam_b, delta_y, N)
                kept += 1
            if checkpoint_every and (sweep + 1) % checkpoint_every == 0:
                engine.call("save", checkpoint_dir, sweep + 1)
                d = dict(sweep=sweep + 1, kept=kept, total=total, shape=np.array([N, C, S]), k_run=k_run,
                         lam_w=lam_w, lam_b=lam_b, delta_y=delta_y, tr_dy=tr_dy, tr_lw=tr_lw, tr_lb=tr_lb,
                         **{f"w{l}": W for l, W in enumerate(weights)}, **{f"tr_w{l}": t for l, t in enumerate(tr_w)})
                if tr_lj is not None:
                    d["tr_lj"] = tr_lj
                _save_driver(checkpoint_dir, d)
                for fn in os.listdir(checkpoint_dir):
                    if fn.startswith("latents_") and not fn.startswith(f"latents_{sweep + 1}_"):
                        os.remove(os.path.join(checkpoint_dir, fn))
            t2 = time.perf_counter()
            t_shard += t1 - t0
            t_drv += t2 - t1
            per_sweep.append((t1 - t0, t2 - t1))
            if sweep == start and total - start > 1:
                bytes1 = engine.comm_bytes()
            if bar is not None:
                bar.update(1)
            if _after_sweep is not None:
                _after_sweep(sweep)
        loop = time.perf_counter() - t_loop
        comm = engine.comm_bytes() - bytes0
        if return_state is None:
            return_state = client is None
        final = None
        if return_state:
            lat = engine.call("get_latents")
            pre = tuple(np.concatenate([p[0][h] for p in lat], axis=1) for h in range(L - 1))
            post = tuple(np.concatenate([p[1][h] for p in lat], axis=1) for h in range(L - 1))
            final = GibbsState(tuple(W.astype(dt) for W in weights), pre, post, lam_w.astype(dt),
                               lam_b.astype(dt), delta_y.astype(dt), None)
        timed = per_sweep[1:] if len(per_sweep) > 1 else per_sweep
        timings = RunTimings(total=time.perf_counter() - t_start, loop=loop, driver=t_drv, shards=t_shard,
                             sweeps=total - start, comm_bytes=comm, timed_sweeps=len(timed),
                             timed_loop=sum(a + b for a, b in timed), timed_driver=sum(b for _, b in timed),
                             timed_comm_bytes=(comm + bytes0 - bytes1) if bytes1 is not None else comm,
                             idle_comm_rate=idle_rate)
        info = dict(engine="dask" if client is not None else "in-process", ranges=ranges, timings=timings,
                    recovered_shards=engine.recovered,
                    recovery_events=list(getattr(engine, "events", [])),
                    worker_malloc_tuned={str(k): bool(v) for k, v in getattr(engine, "malloc_tuned", {}).items()},
                    resumed_from=start if resume_dir is not None else None)
    finally:
        if bar is not None:
            bar.close()
        engine.close()
    return GibbsResult(net=net, weights=tuple(tr_w), delta_y=tr_dy, lam_w=tr_lw, lam_b=tr_lb, log_joint=tr_lj,
                       final_state=final,
                       config=dict(num_samples=S, num_warmup=num_warmup, num_chains=C, thin=thin,
                                   learn_noise=learn_noise, learn_prior=learn_prior, backend="numpy",
                                   dtype=dt.name, scan="blocked", distributed=info))
