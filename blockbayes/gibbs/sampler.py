"""The stateful driver of the Gibbs family: :func:`run` (device, loop, progress, samples)."""
from __future__ import annotations

from typing import Optional

from .._backend import backend_name, device_of, namespace, resolve_device, to_device
from .._backend import linalg
from .._backend import random as bbr
from .._backend.threads import default_kernel_threads, thread_limits
from ..inputs import validate_data
from ..model import MLP
from ..posterior import GibbsResult
from . import kernel as _k
from .kernel import Hyperprior

__all__ = ["run"]


def run(net: MLP, X, y, *, num_samples: int, num_warmup: int = 0, num_chains: int = 1, thin: int = 1,
        seed=None, device=None, dtype=None, progress: bool = True, init="prior",
        learn_noise: bool = False, learn_prior: bool = False, hyperprior: Hyperprior = Hyperprior(),
        store_log_joint: bool = True, post_method: str = "auto", check_every: int = 1,
        num_threads: Optional[int] = None, blas_threads: Optional[int] = 1, moves=None, schedule=None,
        diagnose: bool = True, probe=None) -> GibbsResult:
    """Run block-Gibbs chains on the noisy-MLP posterior and collect weight samples.

    Parameters
    ----------
    net : MLP
    X : array, shape (n, d_in)
        Inputs (NumPy, CuPy or any Array-API array). Not modified.
    y : array, shape (n,), (n, d_out) or (num_chains, n, d_out)
        Regression targets (the last form gives each chain its own targets), or integer class
        labels ``0..K-1`` of shape ``(n,)`` for ``likelihood="probit"`` (K = 2),
        ``"multinomial_probit"`` and ``"onehot_gaussian"`` (K = d_out). Not modified.
    num_samples : int
        Samples kept per chain (after thinning).
    num_warmup : int
        Sweeps discarded first.
    num_chains : int
        Independent chains, run in parallel as a leading batch axis.
    thin : int
        Keep every ``thin``-th sweep after warm-up.
    seed : None, int, SeedSequence or key
        Same seed (and backend, library version) ⇒ same samples.
    device : None, "cpu", "cuda" or "cuda:N"
        Where to compute; ``None`` keeps the inputs' device. ``"cuda"`` moves ``X`` and ``y`` once
        (needs CuPy and a GPU; otherwise :class:`~blockbayes._backend.BackendUnavailableError`).
        Results stay on the compute device (``result.to_numpy()`` brings them to the host).
    dtype : None, "float32" or "float64"
        Compute dtype; default: ``X``'s.
    progress : bool
        Show a tqdm progress bar.
    init : see :func:`init`; also ``"map"`` / ``"ensemble"`` (each chain from its own MAP fit of
        the standard net, auxiliaries by the noisy forward pass; with ``learn_noise`` the starting
        ``Δ_y`` is the fit's training MSE) and ``"map_shared"`` (one fit for all chains); see
        :mod:`blockbayes.gibbs.starts`.
    learn_noise, learn_prior, hyperprior : see :func:`step`
    store_log_joint : bool
        Record ``log p(W̃, Z, X, y)`` at every kept sample.
    post_method : {"auto", "cholesky", "matheron"}
    check_every : int
        Check the state for non-finite values every this many sweeps (a device sync on GPUs).
    num_threads : int, optional
        Threads of the fused Numba kernels (``None``: all usable cores but one, at least one —
        :func:`blockbayes._backend.threads.default_kernel_threads`; a parallel pass that needs
        every core stalls behind any other busy process). Small passes run on one thread anyway.
    blas_threads : int, optional
        BLAS/LAPACK threads during the run (default 1; ``None`` leaves the library's setting).
        The sweep's matrix products have one small dimension, where threaded BLAS gains little
        and, measured here (2 cores, OpenBLAS), made a (50, 50, 1e4) sweep 2.4× slower
        (40.7 vs 16.8 ms) and stalls ~20× when the cores are busy.
    moves : optional
        Extra exact moves after every sweep, e.g. :class:`blockbayes.gibbs.moves.NonCentredMove`
        (non-centred layer moves that mix at small ``Δ_Z, Δ_X``; adapted during warm-up only).
    schedule : optional
        A warm-up schedule of the hidden-layer noise, e.g.
        :class:`blockbayes.gibbs.anneal.AnnealedDelta` (``Δ`` lowered to the net's values during
        warm-up; every kept sample is drawn at the net's ``Δ``).
    diagnose : bool
        After the run, compute the function-space diagnostics (:meth:`GibbsResult.summary`) and
        warn with the worst rows when some R-hat exceeds 1.01
        (:class:`blockbayes.gibbs.diagnostics.ConvergenceWarning`).
    probe : None, int or array of shape (P, d_in)
        Probe inputs of the diagnostics (stored as ``result.probe``): an array, or the number of
        training inputs to take at evenly spaced indices (default 32).

    Returns
    -------
    GibbsResult
        ``weights[l]`` of shape ``(num_chains, num_samples, d_{l+1}, d_l + 1)`` (bias last), the
        per-sample ``delta_y``, ``lam_w``, ``lam_b`` and ``log_joint``.

    Raises
    ------
    NonFiniteStateError
        If the state turns non-finite; the message names the block(s) and the sweep.
    """
    for name, v, lo in (("num_samples", num_samples, 1), ("num_warmup", num_warmup, 0),
                        ("num_chains", num_chains, 1), ("thin", thin, 1), ("check_every", check_every, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if learn_noise and net.likelihood in ("probit", "multinomial_probit"):
        raise ValueError(f"learn_noise is not available for likelihood={net.likelihood!r}: Δ_y = 1 is fixed")
    kind, index = resolve_device(device)
    if kind is not None:
        X = to_device(X, kind, index)
        y = to_device(y, kind, index)
    X, y = validate_data(net, X, y, dtype=dtype, num_chains=num_chains)
    xp = namespace(X, y)
    root = bbr.key(seed)
    k_init, k_run = bbr.split(root, 2)
    map_dy = None
    if isinstance(init, str) and init in ("map", "ensemble", "map_shared"):
        from .starts import map_starts

        k_map, k_init = bbr.split(k_init, 2)
        init, map_dy, _ = map_starts(k_map, net, X, y, num_chains=num_chains, kind=init, learn_noise=learn_noise)
    state = _k.init(k_init, net, X, y, num_chains=num_chains, init=init)
    if map_dy is not None:
        state = state._replace(delta_y=map_dy)
    cache = _k.precompute(net, X, learn_prior=learn_prior)
    C, S, L = num_chains, num_samples, net.num_layers
    dev, dt = device_of(X), X.dtype
    tr_w = [xp.zeros((C, S) + s, dtype=dt, device=dev) for s in net.weight_shapes()]
    tr_dy = xp.zeros((C, S), dtype=dt, device=dev)
    tr_lw = xp.zeros((C, S, L), dtype=dt, device=dev)
    tr_lb = xp.zeros((C, S, L), dtype=dt, device=dev)
    tr_lj = xp.zeros((C, S), dtype=dt, device=dev) if store_log_joint else None
    total = num_warmup + S * thin
    probe_X = probe if hasattr(probe, "shape") else None
    if probe_X is None:
        from .diagnostics import default_probe

        probe_X = default_probe(X, 32 if probe is None else int(probe))
    mstate = moves.init(state, net, X, y) if moves is not None else None
    net_s, cache_s = net, cache
    import time as _time

    t_start = _time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="gibbs", unit="sweep", leave=False)
    key = k_run
    kept = 0
    # log joint from the latent passes' sums, completed one sweep later; a move after the sweep
    # changes the state those sums describe, so with moves it is computed directly
    fused_lj = L > 1 and moves is None
    pending = None      # (trace index, partial log joint) awaiting the next sweep's first term
    limits = thread_limits(default_kernel_threads() if num_threads is None else num_threads, blas_threads)
    restore_checks = linalg.defer_checks()   # the finite check every check_every sweeps replaces
    #                                          the per-Cholesky sync of the CuPy path
    try:
        for sweep in range(total):
            key, sub = bbr.split(key, 2)
            keep = sweep >= num_warmup and (sweep - num_warmup) % thin == thin - 1
            if schedule is not None:
                net_s = schedule.net_at(net, sweep, num_warmup)
                cache_s = cache if net_s is net else _k.precompute(net_s, X, learn_prior=learn_prior)
            state, info = _k.step(sub, state, net_s, X, y, learn_noise=learn_noise, learn_prior=learn_prior,
                               hyperprior=hyperprior, cache=cache_s,
                               compute_log_joint=keep and store_log_joint and not fused_lj and moves is None,
                               post_method=post_method, checked=True)
            if pending is not None:
                tr_lj[:, pending[0]] = pending[1] + info.first_term_prev
                pending = None
            if moves is not None:
                key, sub = bbr.split(key, 2)
                state, mstate = moves.step(sub, mstate, state, net_s, X, y, warmup=sweep < num_warmup,
                                           final_warmup=sweep == num_warmup - 1)
                if keep and store_log_joint:
                    info = info._replace(log_joint=_k.log_joint(state, net, X, y))
            if (sweep + 1) % check_every == 0 or sweep == total - 1:
                # one reduction (one device sync): the partial log joint sums every weight,
                # precision and latent array of the new state, so it is finite iff they are
                witness = (info.log_joint_partial + info.first_term_prev) if fused_lj else None
                bad = ([] if witness is not None and bool(xp.all(xp.isfinite(witness)))
                       else _k.first_nonfinite(xp, state))
                if bad:
                    raise _k.NonFiniteStateError(
                        f"the sampler state became non-finite at sweep {sweep + 1} (of {total}) in: "
                        + "; ".join(bad) + ". Check the data scale and Δ/prior settings "
                        "(e.g. Δ too small for float32).")
            if keep:
                for l in range(L):
                    tr_w[l][:, kept, ...] = state.weights[l]
                tr_dy[:, kept] = state.delta_y
                tr_lw[:, kept, ...] = state.lam_w
                tr_lb[:, kept, ...] = state.lam_b
                if tr_lj is not None:
                    if fused_lj:
                        pending = (kept, info.log_joint_partial)
                    else:
                        tr_lj[:, kept] = info.log_joint
                kept += 1
            if bar is not None:
                bar.update(1)
        if pending is not None:
            tr_lj[:, pending[0]] = _k.log_joint(state, net, X, y)
    finally:
        if bar is not None:
            bar.close()
        limits()
        restore_checks()
    result = GibbsResult(net=net, weights=tuple(tr_w), delta_y=tr_dy, lam_w=tr_lw, lam_b=tr_lb,
                         log_joint=tr_lj, final_state=state,
                         config=dict(num_samples=S, num_warmup=num_warmup, num_chains=C, thin=thin,
                                     learn_noise=learn_noise, learn_prior=learn_prior,
                                     backend=backend_name(xp), dtype=str(dt),
                                     wall_time_s=_time.perf_counter() - t_start),
                         probe=probe_X)
    if moves is not None and hasattr(moves, "summary"):
        result.config["moves"] = moves.summary(mstate)
    if diagnose:
        from .diagnostics import warn_if_unmixed

        warn_if_unmixed(result)
    return result
