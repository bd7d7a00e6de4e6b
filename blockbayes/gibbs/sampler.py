"""The stateful driver of the Gibbs family: :func:`run` (device, loop, progress, samples)."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

from .._backend import backend_name, device_of, fast_namespace, namespace
from .._backend import linalg
from .._backend import random as bbr
from .._backend.threads import default_kernel_threads, thread_limits
from ..driver import check_count, deprecated_names, is_kept, run_kernel
from ..inputs import prepare
from ..model import MLP, resolve_learn_noise
from .result import GibbsResult
from . import kernel as _k
from .automove import check_moves_name, resolve_moves
from .kernel import Hyperprior

__all__ = ["run", "extend", "Continuation", "SweepLoop", "resolve_defaults", "resolve_counts", "data_hidden_delta",
           "DEFAULT_COUNTS", "TEMPERED_COUNTS", "TEMPERED_WARMUP"]

DEFAULT_COUNTS = (1000, 4)
"""``(num_samples, num_chains)`` of :func:`run` when not given and replica exchange is off (design note 60)."""

TEMPERED_COUNTS = (1500, 16)
"""``(num_samples, num_chains)`` of :func:`run` when not given and ``tempering`` resolves on for the net
as given — the tiny problems (at most 16 replicas), where a sweep is call-bound and 16 chains cost
~1.7× 4. Warm-up then defaults to 500 (a third of the kept sweeps), the budget of ``vi.run``'s
tempered default (:data:`blockbayes.vi.rao_blackwell.TEMPERED_BUDGET`). Why (design note 62;
docs/gibbs-moves.md §6 "Session 22"): on the tiny-net grid 4 × (1000 + 1000) left 3 of 9 rows'
pooled marginal sds more than 10 % from exact at seed 0 (13 %, 13 %, 16 %)."""

TEMPERED_WARMUP = 500
"""Warm-up sweeps of the tempered default (:data:`TEMPERED_COUNTS`) when ``num_warmup`` is not given."""


@deprecated_names(n_samples="num_samples", n_warmup="num_warmup", n_chains="num_chains")
def run(net: MLP, X, y, *, num_samples: Optional[int] = None, num_warmup: Optional[int] = None,
        num_chains: Optional[int] = None,
        thin: int = 1, seed=None, device=None, dtype=None, progress: bool = True, init="map",
        learn_noise: Optional[bool] = None, learn_prior: bool = False, hyperprior: Hyperprior = Hyperprior(),
        store_log_joint: bool = True, post_method: str = "auto", check_every: int = 1,
        num_threads: Optional[int] = None, blas_threads: Optional[int] = 1, moves="auto", schedule=None,
        tempering="auto", diagnose: bool = True, probe=None, checkpoint=None,
        checkpoint_every: Optional[int] = None, resume=None) -> GibbsResult:
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
    num_samples : int or None
        Samples kept per chain (after thinning). Default (``None``): 1000, or 1500 when replica
        exchange runs (``tempering`` resolves on for the net as given: tiny problems only).
    num_warmup : int or None
        Sweeps discarded first (the moves adapt there). Default (``None``): as many as the kept
        sweeps, ``num_samples · thin`` — 1000 with the other defaults; 500 when replica exchange
        runs and neither count was given.
    num_chains : int or None
        Independent chains, run in parallel as a leading batch axis. Default (``None``): 4, so
        that the end-of-run R-hat compares chains that started apart (each from its own MAP fit);
        16 when replica exchange runs (:data:`TEMPERED_COUNTS`, design note 62).

        Why these defaults (design note 60; ``benchmarks/gibbs_defaults.py``): before them a call
        that set nothing ran one chain without warm-up at the MLP's fixed ``Δ_y = 1e-3``, which
        the joint HMC move could not join (it adapts in warm-up): measured on split 0 of five
        UCI sets, docs/gibbs-moves.md §6 "Session 21".
    thin : int
        Keep every ``thin``-th sweep after warm-up.
    seed : None, int, SeedSequence or key
        Same seed (and backend, library version, thread settings) ⇒ bitwise the same samples,
        whatever ran before in the process.
    checkpoint, checkpoint_every, resume
        ``checkpoint=path``: write the chains' state, the RNG key and the samples so far every
        ``checkpoint_every`` sweeps (atomically) and at the end or on Ctrl-C; ``resume=path`` (with
        otherwise the same call) continues such a run and returns exactly the uninterrupted
        run's samples (:func:`blockbayes.driver.run_kernel`). Ctrl-C during the sweeps returns
        the samples so far as a valid result (``config["interrupted"]``), with a
        :class:`~blockbayes.driver.RunInterrupted` warning.
    device : None, "cpu", "cuda" or "cuda:N"
        Where to compute; ``None`` keeps the inputs' device. ``"cuda"`` moves ``X`` and ``y`` once
        (needs CuPy and a GPU; otherwise :class:`~blockbayes._backend.BackendUnavailableError`).
        Results stay on the compute device (``result.to_numpy()`` brings them to the host).
    dtype : None, "float32" or "float64"
        Compute dtype; default: ``X``'s.
    progress : bool
        Show a tqdm progress bar.
    init : "map" (default), "ensemble", "map_shared", "prior", "zero", weights or GibbsState
        ``"map"`` / ``"ensemble"`` (synonyms, the default): each chain from its own MAP fit of the
        standard net (full-batch L-BFGS, :func:`blockbayes.laplace.map_fit`), auxiliaries by the
        noisy forward pass; with ``learn_noise`` the fit is the joint MAP of the weights and ``Δ_y``
        under ``hyperprior`` (its first :data:`~blockbayes.gibbs.starts.JOINT_PREFIT_ITER` L-BFGS
        iterations at the fixed noise ``0.01 · var(y)``, design note 63) and the chain starts at its
        ``Δ̂_y``. ``"map_shared"``: one fit for all chains. ``"map_evidence"`` (``learn_noise`` only): each
        joint fit carried on to the Laplace-evidence noise. See :mod:`blockbayes.gibbs.starts`. Anything
        else goes to :func:`init` (``"prior"``: weights drawn from the prior, the default until
        issue 15; ``"zero"``; given weights; a ``GibbsState``). The default is MAP because, in
        the budgets people run, chains started from the prior stay far from where MAP-started
        ones go (measured test RMSE and log-likelihood in docs/gibbs-moves.md, "Default start");
        the fits cost seconds on UCI-sized data. The start changes only where the chains begin,
        not what is sampled; checks that need a start drawn from the prior (stationary-start
        exactness tests) pass ``init="prior"``.
    learn_noise : bool or None
        Sample ``Δ_y`` (conjugate Gamma, ``hyperprior``; see :func:`step`). Default (``None``):
        ``True`` when the likelihood is Gaussian and the net's ``Δ_y`` is its default
        (``MLP.delta_y_given`` false: ``bb.MLP(widths)``), ``False`` when the caller set ``Δ_y``
        (``delta=1e-2`` or ``delta={"y": …}``) or the likelihood fixes it. A noise the user did
        not choose is learned, a noise the user wrote down is kept. ``result.config["learn_noise"]``
        records the value used. With learned noise and a MAP start, hidden ``Δ_Z, Δ_X`` that the
        caller did not set (``bb.MLP(widths)``) follow the fits' noise level,
        ``clip(0.02 · median Δ̂_y, 1e-6, 1e-3)`` (:func:`data_hidden_delta`, design note 61):
        ``result.net`` is the net sampled, ``result.config["hidden_delta"]`` says what was used.
    learn_prior, hyperprior : see :func:`step`
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
        BLAS/LAPACK threads during the whole run, from the first BLAS call to the last (default 1;
        ``None`` leaves the library's setting). Float32 samples depend on it — measured: 2
        threads instead of 1 moved the weights by 5e-5 after 20 sweeps — so with ``None`` the same
        seed gives the same samples only under the same process-wide BLAS setting.
        The sweep's matrix products have one small dimension, where threaded BLAS gains little
        and, measured here (2 cores, OpenBLAS), made a (50, 50, 1e4) sweep 2.4× slower
        (40.7 vs 16.8 ms) and stalls ~20× when the cores are busy.
    moves : "auto" (default), "hmc", "none", None or a move object
        Extra exact moves after every sweep, e.g. :class:`blockbayes.gibbs.hmc.JointHMCMove` (joint
        non-centred HMC on all weights: mixes the network function where the sweep alone does not)
        or :class:`blockbayes.gibbs.moves.NonCentredMove`, :class:`~blockbayes.gibbs.UnitRedrawMove`,
        :class:`~blockbayes.gibbs.CollapsedRowMove` (partially collapsed node rows; measured, not in
        ``"auto"``: docs/gibbs-moves.md §3d), several through :class:`~blockbayes.gibbs.ComposedMove`;
        adapted during warm-up only. ``"auto"`` adds ``JointHMCMove()`` when it is affordable and can
        adapt — Gaussian likelihood, no replica exchange or schedule, ``num_warmup >= 200``, at most
        4000 weights, estimated work (:func:`blockbayes.gibbs.automove.move_work`: leapfrog passes over the rows,
        dense mass products, warm-up mass computations) at most 4e11 units (~3 min of move on one
        core) for this call or for the default call on the same data (so a larger budget never
        loses the move the default gets; design note 64) — and nothing otherwise
        (:mod:`blockbayes.gibbs.automove`; measured: the issue-15 user path's max R-hat of the probe
        outputs 1.79–2.04 without, 1.007–1.13 with, at 5–8× the wall-clock; the five small UCI sets
        get the move, Naval, Protein and classification do not).
        ``"hmc"``: ``JointHMCMove()`` whatever the cost; ``"none"`` / ``None``: the sweep alone.
        ``result.config["moves_auto"]`` records the decision.
    schedule : optional
        A warm-up schedule of the noise, e.g. :class:`blockbayes.gibbs.anneal.AnnealedDelta`
        (``Δ_Z, Δ_X`` — and with ``output=True`` the chains' ``Δ_y`` — lowered to the net's values
        during warm-up; every kept sample is drawn at the net's ``Δ``). The sweep and every move
        see the sweep's ``Δ`` (the annealed net, and ``Δ_y`` in the state). A move whose
        adaptation averages over warm-up states (:class:`~blockbayes.gibbs.hmc.JointHMCMove`'s
        averaged mass) should start averaging after the annealing (``average_from >= fraction``;
        a :class:`UserWarning` says so otherwise): a Gauss–Newton matrix taken at a hot ``Δ_y`` is
        ``Δ_y/Δ_y*`` times too soft for the target.
    tempering : "auto" (default), "on", "off", a ladder of factors, or Tempering
        Replica exchange over the noise (:mod:`blockbayes.gibbs.tempering`): replica ``k`` sweeps
        the posterior with every hidden ``Δ_Z, Δ_X`` — and ``Δ_y`` unless ``learn_noise`` or a
        probit likelihood — times ``t_k``, adjacent replicas swap states with the exact
        Metropolis ratio, and only replica 0 (the net's own ``Δ``) is kept. The ladder is
        computed from the number of noisy variables ``N = n (2 Σ d_hidden + d_out)`` (spacing
        ``r ≈ 1 + √(2.8/N)``, up to ``Δ = 1``); the ``M`` replicas run as the ``M·C`` chains of
        one sweep (the arithmetic of ``M`` sweeps, the calls of one). ``"auto"`` tempers only when
        ``M ≤ 16`` (tiny nets, few data: where single chains get trapped, e.g. a dead hidden
        unit) and is free otherwise (the run is then exactly the untempered one); ``"on"``
        always; a sequence ``(1, t_1, …)`` gives the ladder. ``result.config["tempering"]``
        says what ran (ladder, cost, swap acceptance per pair). Moves act on replica 0 only;
        not combinable with ``schedule``.
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
    for name, v, lo in (("num_samples", num_samples, 1), ("thin", thin, 1), ("num_chains", num_chains, 1),
                        ("check_every", check_every, 1)):
        if v is not None or name in ("thin", "check_every"):
            check_count(name, v, lo)
    learn_noise = resolve_learn_noise(net, learn_noise)
    num_samples, num_warmup, num_chains = resolve_counts(
        net, _num_rows(X), num_samples=num_samples, num_warmup=num_warmup, num_chains=num_chains, thin=thin,
        learn_noise=learn_noise, tempering=tempering, schedule=schedule)
    check_count("num_warmup", num_warmup, 0)
    if learn_noise and net.likelihood in ("probit", "multinomial_probit"):
        raise ValueError(f"learn_noise is not available for likelihood={net.likelihood!r}: Δ_y = 1 is fixed")
    check_moves_name(moves)             # before any MAP fit
    if schedule is not None and hasattr(schedule, "check"):
        schedule.check(net, learn_noise=learn_noise)
    # the thread settings hold for the whole run (start, precomputation, sweeps, last log joint):
    # float32 samples depend on the BLAS thread count (measured: 2 threads instead of 1 moved
    # the weights by 5e-5 after 20 sweeps), so none of the run's BLAS calls may see whatever
    # setting an earlier call or library left behind
    limits = thread_limits(default_kernel_threads() if num_threads is None else num_threads, blas_threads)
    try:
        return _run(net, X, y, num_samples=num_samples, num_warmup=num_warmup, num_chains=num_chains,
                    thin=thin, seed=seed, device=device, dtype=dtype, progress=progress, init=init,
                    learn_noise=learn_noise, learn_prior=learn_prior, hyperprior=hyperprior,
                    store_log_joint=store_log_joint, post_method=post_method, check_every=check_every,
                    moves=moves, schedule=schedule, tempering=tempering, diagnose=diagnose, probe=probe,
                    checkpoint=checkpoint,
                    checkpoint_every=checkpoint_every, resume=resume, threads=(num_threads, blas_threads))
    finally:
        limits()


def _num_rows(X) -> int:
    """Rows of ``X`` before :func:`blockbayes.inputs.prepare` (which checks it properly)."""
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) >= 1:
        return int(shape[0])
    try:
        return len(X)
    except TypeError:
        return 0


def resolve_counts(net: MLP, n: int, *, num_samples: Optional[int], num_warmup: Optional[int],
                   num_chains: Optional[int], thin: int, learn_noise: bool, tempering="auto",
                   schedule=None) -> tuple[int, int, int]:
    """``(num_samples, num_warmup, num_chains)`` of a :func:`run` call with its ``None`` counts filled.

    When replica exchange would run for the net *as given* (:func:`blockbayes.gibbs.tempering.plan`
    on ``n`` rows; off with a ``schedule``, as in :func:`run`), the defaults are
    :data:`TEMPERED_COUNTS` and, if neither ``num_samples`` nor ``num_warmup`` was given,
    :data:`TEMPERED_WARMUP`; otherwise :data:`DEFAULT_COUNTS`. A warm-up still unset is
    ``num_samples · thin`` (:func:`resolve_defaults`' rule). Given counts pass through. (The hidden-Δ
    rule of :func:`data_hidden_delta` can only lower ``Δ``, which only lengthens the ladder, so a run
    the plan here calls untempered stays untempered; the converse costs at most extra chains.)
    """
    if num_samples is not None and num_chains is not None:
        return num_samples, _default_warmup(num_samples, thin, num_warmup), num_chains
    from . import tempering as _tp

    tcfg = _tp.Tempering.coerce(tempering)
    tempered = (schedule is None or tcfg.mode != "auto") and n > 0 and \
        _tp.plan(net, n, tcfg, output=not learn_noise).active
    s_def, c_def = TEMPERED_COUNTS if tempered else DEFAULT_COUNTS
    if tempered and num_samples is None and num_warmup is None:
        num_warmup = TEMPERED_WARMUP
    num_samples = s_def if num_samples is None else num_samples
    return num_samples, _default_warmup(num_samples, thin, num_warmup), c_def if num_chains is None else num_chains


def _default_warmup(num_samples: int, thin: int, num_warmup: Optional[int]) -> int:
    """``num_warmup``, or ``num_samples · thin`` when it is ``None`` (design note 60)."""
    return int(num_samples) * int(thin) if num_warmup is None else num_warmup


def resolve_defaults(net: MLP, *, num_samples: int, thin: int, num_warmup: Optional[int],
                     learn_noise: Optional[bool]) -> tuple[int, bool]:
    """``(num_warmup, learn_noise)`` of a :func:`run` call, its ``None`` defaults resolved (design note 60).

    ``num_warmup=None`` → ``num_samples · thin`` (as many warm-up sweeps as kept ones);
    ``learn_noise=None`` → ``True`` for a Gaussian likelihood whose ``Δ_y`` the caller did not set
    (``net.delta_y_given`` false), else ``False`` (:func:`blockbayes.model.resolve_learn_noise`).
    Given values pass through.

    Raises
    ------
    TypeError
        ``learn_noise`` neither ``None`` nor a bool.
    """
    return _default_warmup(num_samples, thin, num_warmup), resolve_learn_noise(net, learn_noise)


def data_hidden_delta(net: MLP, map_dy, *, schedule=None) -> tuple[MLP, dict]:
    """The net a :func:`run` samples, with its hidden ``Δ`` set from the MAP starts' noise when the
    caller did not set them (design note 61); returns ``(net, config record)``.

    When the chains start from joint (weights, ``Δ_y``) MAP fits (``map_dy``, shape ``(C,)``, not
    ``None``: a MAP ``init`` with learned noise), the caller left ``Δ_Z`` and ``Δ_X`` at their
    default (``net.delta_hidden_given`` false) and no warm-up ``schedule`` anneals towards the
    net's ``Δ``, every hidden ``Δ_Z = Δ_X`` becomes

        clip(0.02 · median_c Δ̂_y,c,  1e-6,  1e-3)

    (:func:`blockbayes.gibbs.starts.hidden_delta`, the rule of the gold recipes), in the units of
    the ``y`` given. Why: the default ``1e-3`` lets the per-point latents carry signal the network
    should wherever the output noise is not well above it (docs/gibbs-moves.md §5); measured on
    split 0 of Yacht and Energy, the default call went from test RMSE / LL 0.510 / −0.585 and
    0.357 / −0.381 to 0.247 / +0.010 and 0.259 / −0.069 (NUTS, the issue-15 reference: 0.24 / +0.03,
    0.22 / +0.09), while the noisy sets, where the rule gives 5e-4 – 1e-3, stayed within their
    noise (docs/gibbs-moves.md §6 "Session 21"). Otherwise ``net`` is returned as it is. The record
    (``result.config["hidden_delta"]``) says which.
    """
    from .starts import HIDDEN_RULE, hidden_delta

    if map_dy is None or net.delta_hidden_given or schedule is not None or net.num_layers < 2:
        why = ("given by the caller" if net.delta_hidden_given else "no hidden layer" if net.num_layers < 2
               else "a schedule anneals to the net's Δ" if schedule is not None
               else "no joint MAP starts (a MAP init with learned noise) to set it from")
        return net, dict(rule="net", value=[float(v) for v in net.delta_z], reason=why)
    d = hidden_delta(map_dy, **HIDDEN_RULE)
    delta = {"Z": d, "X": d, **({"y": net.delta_y} if net.delta_y_given else {})}
    new = net.replace(delta=delta)
    return new, dict(rule="map_noise", value=[float(v) for v in new.delta_z], **HIDDEN_RULE,
                     reason="hidden Δ not given: ratio × the median MAP Δ̂_y, clipped to [floor, cap]")


class GibbsCarry(NamedTuple):
    """What :func:`run` carries from sweep to sweep: the chains' state, the moves' state (or
    ``None``), the partial log joint of the last kept sweep awaiting its first term (or ``None``)
    and, when tempering, the replicas (:class:`~blockbayes.gibbs.tempering.TemperingState`, whose
    replica 0 is ``state``; else ``None``)."""

    state: _k.GibbsState
    moves: Any
    pending: Any
    tempering: Any = None


class SweepLoop(NamedTuple):
    """Everything :func:`run` hands the driver besides the carry and the key: the pure sweep
    (``step_fn``), its trace hooks and settings. Kept by a result (:class:`Continuation`) so that
    :func:`extend` runs the same sweeps on."""

    step_fn: Any
    collect: Any
    check: Any
    on_step: Any
    keys_per_step: int
    num_warmup: int
    thin: int
    check_every: int
    config: dict
    fused_lj: bool
    store_log_joint: bool
    net: MLP
    X: Any
    y: Any
    moves: Any
    threads: tuple
    describe: Any


class Continuation(NamedTuple):
    """Where a finished :func:`run` left its chains, for :func:`extend` (in memory only: not
    saved by :meth:`GibbsResult.save`, dropped by :meth:`GibbsResult.to_numpy`).

    Attributes
    ----------
    carry : GibbsCarry
        The chains' state, the moves' adapted state (step sizes, masses), the replicas.
    key : key
        The run's RNG key after its last sweep.
    num_done : int
        Sweeps done, warm-up included: the next sweep's index.
    loop : SweepLoop
    """

    carry: Any
    key: Any
    num_done: int
    loop: SweepLoop


def _sample(loop: SweepLoop, carry, key, *, num_samples: int, first_step: int, progress: bool, checkpoint,
            checkpoint_every, resume):
    """Run ``loop``'s sweeps from ``carry`` and ``key``: the driver call of :func:`run` and
    :func:`extend`; returns the driver's :class:`~blockbayes.driver.RunOutput` with the traces'
    last log joint completed."""
    net, X, y = loop.net, loop.X, loop.y
    with linalg.deferred_checks():
        # the finite check every check_every sweeps replaces the per-Cholesky sync of the CuPy path
        out = run_kernel(key, carry, loop.step_fn, num_samples=num_samples, num_warmup=loop.num_warmup,
                         thin=loop.thin, collect=loop.collect, check=loop.check, check_every=loop.check_every,
                         check_what="sampler state",
                         check_hint="Check the data scale and Δ/prior settings (e.g. Δ too small for float32).",
                         progress=progress, desc="gibbs", unit="sweep", on_step=loop.on_step,
                         keys_per_step=loop.keys_per_step, checkpoint=checkpoint,
                         checkpoint_every=checkpoint_every, resume=resume, config=loop.config,
                         first_step=first_step)
    k = out.num_kept
    if loop.fused_lj and loop.store_log_joint and out.state.pending is not None:
        # the last kept sweep had no next sweep to complete its log joint
        lj = _lj_trace(out.traces)[:, :k]
        lj[:, k - 1] = _k.log_joint(out.state.state, net, X, y)
        out.traces["log_joint"] = lj
    return out


def _lj_trace(traces):
    """The fused log-joint trace, allocated like the ``delta_y`` trace (shape ``(C, S)``) at first use."""
    if "log_joint" not in traces:
        dy = traces["delta_y"]
        traces["log_joint"] = namespace(dy).zeros(dy.shape, dtype=dy.dtype, device=device_of(dy))
    return traces["log_joint"]


def _run(net, X, y, *, num_samples, num_warmup, num_chains, thin, seed, device, dtype, progress, init,
         learn_noise, learn_prior, hyperprior, store_log_joint, post_method, check_every, moves, schedule,
         tempering, diagnose, probe, checkpoint, checkpoint_every, resume, threads=(None, 1)) -> GibbsResult:
    import time as _time

    from . import tempering as _tp

    t_start = _time.perf_counter()
    X, y = prepare(net, X, y, device=device, dtype=dtype, num_chains=num_chains)
    xp = namespace(X, y)
    root = bbr.key(seed)
    k_init, k_run = bbr.split(root, 2)
    map_dy = None
    if isinstance(init, str) and init in ("map", "ensemble", "map_shared", "map_evidence"):
        from . import starts as _starts

        k_map, k_init = bbr.split(k_init, 2)
        init, map_dy, _ = _starts.map_starts(k_map, net, X, y, num_chains=num_chains, kind=init,
                                             learn_noise=learn_noise, prefit=_starts.JOINT_PREFIT_ITER,
                                             noise_prior=(hyperprior.noise_shape, hyperprior.noise_rate))
    net, hidden_cfg = data_hidden_delta(net, map_dy, schedule=schedule)
    tcfg = _tp.Tempering.coerce(tempering)
    if schedule is not None and tcfg.mode == "auto":
        tplan = _tp.TemperingPlan(False, (1.0,), _tp.noisy_count(net, X.shape[0]), None, None,
                                  "auto: off with a schedule")
    else:
        tplan = _tp.plan(net, X.shape[0], tcfg, output=not learn_noise)
    if tplan.active and schedule is not None:
        raise ValueError("tempering and schedule cannot be combined (the ladder is over the net's Δ)")
    auto = resolve_moves(moves, net, X.shape[0], num_chains=num_chains, num_warmup=num_warmup,
                         num_samples=num_samples, thin=thin, tempering_active=tplan.active, schedule=schedule)
    moves = auto.moves
    tstate = lad = None
    if tplan.active:
        # every replica from the same start (a random one drawn independently per replica)
        tstate = _tp.init(k_init, net, X, y, tplan.factors, num_chains=num_chains, init=init, output=tplan.output)
        if map_dy is not None:      # learn_noise (Δ_y not tempered): every replica starts at the MAP Δ̂_y
            M = len(tplan.factors)
            tstate = tstate._replace(state=tstate.state._replace(delta_y=xp.concat([map_dy] * M, axis=0)))
        state = tstate.replica(0)
        lad = _tp.ladder(net, X, tplan.factors, num_chains, output=tplan.output, learn_prior=learn_prior)
    else:
        state = _k.init(k_init, net, X, y, num_chains=num_chains, init=init)
        if map_dy is not None:
            state = state._replace(delta_y=map_dy)
    cache = None if tplan.active else _k.precompute(net, X, learn_prior=learn_prior)
    C, S, L = num_chains, num_samples, net.num_layers
    dt = X.dtype
    probe_X = probe if hasattr(probe, "shape") else None
    if probe_X is None:
        from .diagnostics import default_probe

        probe_X = default_probe(X, 32 if probe is None else int(probe))
    if schedule is not None and moves is not None:
        _warn_windows_before_annealing_end(moves, schedule, num_warmup)
    mstate = moves.init(state, net, X, y, num_warmup=num_warmup) if moves is not None else None
    # log joint from the latent passes' sums, completed one sweep later; a move or a swap after the
    # sweep changes the state those sums describe, so with either it is computed directly
    fused_lj = L > 1 and moves is None and not tplan.active
    store_direct = store_log_joint and not fused_lj

    def step_fn(keys, carry, sweep):
        sub = keys[0] if moves is not None else keys
        keep = is_kept(sweep, num_warmup, thin)
        net_s, cache_s, state = net, cache, carry.state
        if schedule is not None:
            net_s = schedule.net_at(net, sweep, num_warmup)
            # a new hidden Δ: a new Cholesky factor of the first layer, from the run's Gram (fixed
            # data); a new Δ_y alone (output annealing) leaves the hidden layers' factor as it is
            hidden_same = (tuple(net_s.delta_z) == tuple(net.delta_z)
                           and tuple(net_s.delta_x) == tuple(net.delta_x))
            cache_s = cache if hidden_same else _k.precompute(
                net_s, X, learn_prior=learn_prior, gram=None if cache is None else cache.gram0)
            if hasattr(schedule, "state_at"):      # Δ_y of the sweep (and back to the net's at T_a)
                state = schedule.state_at(state, net, sweep, num_warmup)
        tst = carry.tempering
        if tst is not None:
            tst, info = _tp.step(sub, tst, lad, X, y, warmup=sweep < num_warmup,
                                 log_joint=keep and store_log_joint and moves is None,
                                 learn_noise=learn_noise, learn_prior=learn_prior, hyperprior=hyperprior,
                                 post_method=post_method, checked=True)
            state = tst.replica(0)
        else:
            state, info = _k.step(sub, state, net_s, X, y, learn_noise=learn_noise, learn_prior=learn_prior,
                                  hyperprior=hyperprior, cache=cache_s,
                                  compute_log_joint=keep and store_direct and moves is None,
                                  post_method=post_method, checked=True)
        mst = carry.moves
        if moves is not None:
            state, mst = moves.step(keys[1], mst, state, net_s, X, y, warmup=sweep < num_warmup,
                                    final_warmup=sweep == num_warmup - 1)
            if tst is not None:
                tst = tst.with_replica(0, state)
        if moves is not None and keep and store_log_joint:
            info = info._replace(log_joint=_k.log_joint(state, net, X, y))
        pending = info.log_joint_partial if (keep and store_log_joint and fused_lj) else None
        return GibbsCarry(state, mst, pending, tst), (info, carry.pending)

    def on_step(sweep, carry, info_prev, traces, kept):
        # the previous kept sweep's log joint: its partial sum plus this sweep's first term
        info, prev = info_prev
        if prev is not None:
            _lj_trace(traces)[:, kept - 1] = prev + info.first_term_prev

    wnames = [f"w{l}" for l in range(L)]

    def collect(carry, info_prev, sweep):
        info = info_prev[0]
        st = carry.state
        out = dict(zip(wnames, st.weights))
        out.update(delta_y=st.delta_y, lam_w=st.lam_w, lam_b=st.lam_b)
        if store_direct:
            out["log_joint"] = info.log_joint
        # fused: written by the next sweep's on_step (or after the loop)
        return out

    def check(carry, info_prev):
        info = info_prev[0]
        # one reduction (one device sync): the partial log joint sums every weight, precision
        # and latent array of the new state, so it is finite iff they are
        if fused_lj and bool(xp.all(xp.isfinite(info.log_joint_partial + info.first_term_prev))):
            return []
        if carry.tempering is not None:
            bad = []
            # all replicas at once: one sync (NumPy's own namespace for NumPy arrays: ~20 calls)
            if not _k.first_nonfinite(fxp, carry.tempering.state):
                return bad
            for k, r in enumerate(carry.tempering.replicas):
                bad += [b if k == 0 else f"{b} (replica {k}, Δ × {tplan.factors[k]:.3g})" for b in _k.first_nonfinite(xp, r)]
            return bad
        return _k.first_nonfinite(xp, carry.state)

    fxp = fast_namespace(X, y)

    def describe(carry) -> dict:
        # the config entries that depend on the carry (acceptance, swap rates) or on the run's decisions
        d = {}
        if moves is not None and hasattr(moves, "summary"):
            d["moves"] = moves.summary(carry.moves)
        d.update(moves_auto=auto.summary(), hidden_delta=hidden_cfg, tempering=_tp.summary(tplan, carry.tempering))
        return d

    loop = SweepLoop(step_fn, collect, check, on_step, 2 if moves is not None else 1, num_warmup, thin,
                     check_every,
                     dict(family="gibbs", widths=list(net.widths), num_chains=C, dtype=str(dt),
                          learn_noise=learn_noise, learn_prior=learn_prior, store_log_joint=store_log_joint,
                          moves=moves is not None, schedule=schedule is not None,
                          **({"tempering": [float(v) for v in tplan.factors]} if tplan.active else {})),
                     fused_lj, store_log_joint, net, X, y, moves, tuple(threads), describe)
    out = _sample(loop, GibbsCarry(state, mstate, None, tstate), k_run, num_samples=S, first_step=0,
                  progress=progress, checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume)
    carry, traces, k = out.state, out.traces, out.num_kept
    state = carry.state
    result = GibbsResult(net=net, weights=tuple(traces[f"w{l}"] for l in range(L)), delta_y=traces["delta_y"],
                         lam_w=traces["lam_w"], lam_b=traces["lam_b"],
                         log_joint=traces.get("log_joint") if store_log_joint else None, final_state=state,
                         config=dict(num_samples=k, num_warmup=num_warmup, num_chains=C, thin=thin,
                                     learn_noise=learn_noise, learn_prior=learn_prior,
                                     backend=backend_name(xp), dtype=str(dt),
                                     wall_time_s=_time.perf_counter() - t_start),
                         probe=probe_X,
                         continuation=Continuation(carry._replace(pending=None), out.key, out.num_done, loop))
    if out.interrupted:
        result.config.update(interrupted=True, num_samples_requested=S, sweeps_done=out.num_done)
    result.config.update(describe(carry))
    if diagnose:
        from .diagnostics import warn_if_unmixed

        # frames: warn_if_unmixed, _run, run, the deprecated_names wrapper, then the caller
        warn_if_unmixed(result, stacklevel=5)
    return result


def extend(result: GibbsResult, num_samples: int, *, progress: bool = True, diagnose: bool = True,
           checkpoint=None, checkpoint_every: Optional[int] = None, resume=None) -> GibbsResult:
    """Continue a finished :func:`run`'s chains by ``num_samples`` more kept samples each.

    The chains go on from where the run left them — their state, the moves' adapted step sizes
    and masses, the replicas of replica exchange, the RNG key — with no new MAP fit and no new
    warm-up, and the new samples are appended to the old ones. So ``extend(run(..., num_warmup=W,
    num_samples=S1), S2)`` holds bitwise the weights, noise and prior samples of ``run(...,
    num_warmup=W, num_samples=S1 + S2)`` (same seed; the ``moves="auto"`` decision and the
    defaults that depend on ``num_samples`` aside: give ``num_warmup`` and ``moves``), only
    its log joint at sweep ``S1`` may differ in the last bits (computed directly at the end of
    the first call instead of fused into the next sweep). This is the step to take when the
    end-of-run :class:`~blockbayes.gibbs.diagnostics.ConvergenceWarning` says the chains have not
    mixed and the remedy is more sweeps: ``result = bb.gibbs.extend(result, 1000)``.

    Parameters
    ----------
    result : GibbsResult
        The result of :func:`run` or of an earlier :func:`extend` (an interrupted one too: the
        chains go on from the last completed sweep). A result loaded from disk or converted by
        :meth:`GibbsResult.to_numpy` keeps only ``final_state`` and cannot be extended: restart
        from it with ``run(result.net, X, y, init=result.final_state)`` (a new warm-up).
    num_samples : int
        New samples per chain (``num_samples · thin`` sweeps, the run's ``thin``).
    progress, diagnose : bool
        As in :func:`run`; the diagnostics and the warning are of all samples, old and new.
    checkpoint, checkpoint_every, resume
        As in :func:`run`, for the extension's sweeps (``resume`` continues an interrupted
        ``extend`` of the same result).

    Returns
    -------
    GibbsResult
        All samples, per layer ``(num_chains, S_old + num_samples, d_{l+1}, d_l + 1)``, on the run's
        device and dtype; ``config["extensions"]`` lists each extension (samples, first sweep,
        seconds), ``config["wall_time_s"]`` is the total, ``config["interrupted"]`` is set only when
        this extension was interrupted (Ctrl-C). ``result`` itself is not changed.

    Raises
    ------
    ValueError
        ``result`` has no continuation, or ``num_samples`` is not a positive int.
    """
    import time as _time

    cont = getattr(result, "continuation", None)
    if not isinstance(result, GibbsResult) or cont is None:
        raise ValueError("extend needs the GibbsResult returned by gibbs.run or gibbs.extend in this process; a "
                         "result loaded from disk or converted by to_numpy() keeps only final_state: restart from "
                         "it with gibbs.run(result.net, X, y, init=result.final_state) (a new warm-up)")
    S = check_count("num_samples", num_samples)
    loop = cont.loop
    num_threads, blas_threads = loop.threads
    limits = thread_limits(default_kernel_threads() if num_threads is None else num_threads, blas_threads)
    t_start = _time.perf_counter()
    try:
        out = _sample(loop, cont.carry, cont.key, num_samples=S, first_step=cont.num_done, progress=progress,
                      checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume)
    finally:
        limits()
    tr = out.traces
    xp = namespace(result.delta_y)

    def cat(old, new):
        return xp.concat([old, new], axis=1)

    L = len(result.weights)
    log_joint = None
    if result.log_joint is not None and "log_joint" in tr:
        log_joint = cat(result.log_joint, tr["log_joint"])
    seconds = _time.perf_counter() - t_start
    cfg = dict(result.config)
    # "interrupted" describes the result as a whole: the last piece decides (the earlier ones are continued)
    for k in ("interrupted", "num_samples_requested", "sweeps_done"):
        cfg.pop(k, None)
    if out.interrupted:
        cfg.update(interrupted=True, num_samples_requested=result.num_samples + S, sweeps_done=out.num_done)
    cfg["extensions"] = list(cfg.get("extensions", [])) + [
        dict(num_samples=out.num_kept, requested=S, first_sweep=cont.num_done, wall_time_s=seconds,
             **({"interrupted": True} if out.interrupted else {}))]
    cfg.update(num_samples=result.num_samples + out.num_kept,
               wall_time_s=float(cfg.get("wall_time_s", 0.0)) + seconds, **loop.describe(out.state))
    new = GibbsResult(net=result.net, weights=tuple(cat(result.weights[l], tr[f"w{l}"]) for l in range(L)),
                      delta_y=cat(result.delta_y, tr["delta_y"]), lam_w=cat(result.lam_w, tr["lam_w"]),
                      lam_b=cat(result.lam_b, tr["lam_b"]), log_joint=log_joint, final_state=out.state.state,
                      config=cfg, probe=result.probe,
                      continuation=Continuation(out.state._replace(pending=None), out.key, out.num_done, loop))
    if diagnose:
        from .diagnostics import warn_if_unmixed

        # frames: warn_if_unmixed, extend, then the caller
        warn_if_unmixed(new, stacklevel=3)
    return new


def _warn_windows_before_annealing_end(moves, schedule, num_warmup):
    """Warn when a move's averaging window (:meth:`JointHMCMove.schedule`) starts more than one
    sweep before the schedule's annealing ends: the averaged mass would mix Gauss–Newton matrices
    of hot ``Δ``."""
    import warnings

    if not hasattr(schedule, "annealing_sweeps"):
        return
    Ta = schedule.annealing_sweeps(num_warmup)
    for m in getattr(moves, "moves", (moves,)):
        windows = getattr(m, "schedule", None)
        if not callable(windows):
            continue
        a = windows(num_warmup).average_start
        # one sweep of slack: the windows round (average_from · W), the schedule takes the ceiling
        # of (fraction · W), so average_from = fraction may place them one sweep apart
        if a < Ta - 1 and a < windows(num_warmup).terminal_start:
            warnings.warn(f"{type(m).__name__} averages its mass from warm-up sweep {a}, before the annealing "
                          f"ends at sweep {Ta}: the averaged mass mixes hot-Δ states (set average_from >= "
                          f"the schedule's fraction, here {schedule.fraction:g})", UserWarning, stacklevel=5)
