"""Rao–Blackwellised block posterior from block-Gibbs draws (MATH.md §C.6b) — the honest default.

Given posterior draws ``(X^{(s)}, Z^{(s)})`` of the auxiliaries (from the block-Gibbs sampler of
:mod:`blockbayes.gibbs`), the conditional of every node row is closed form (A.1):

.. math::

    p(\\tilde w_{l,i}\\mid X^{l(s)}, Z^{l+1(s)}) = \\mathcal N(m^{(s)}_{l,i}, P_l^{(s)-1}),\\quad
    P^{(s)}_l = Λ_l + G^{(s)}_l/Δ,\\quad m^{(s)}_{l,i} = P_l^{(s)-1}\\tilde X^{l(s)⊤}Z^{l+1(s)}_{:,i}/Δ .

The Rao–Blackwellised (Gelfand–Smith) estimate of the marginal of a row is the mixture
``(1/S) Σ_s N(m^{(s)}, P^{(s)-1})``, which converges to the exact marginal. Its moment-matched
Gaussian has

.. math::

    \\bar m_{l,i} = \\overline{m^{(s)}_{l,i}},\\qquad
    S_{l,i} = \\overline{P_l^{(s)-1}} + \\widehat{\\operatorname{Cov}}_s\\big(m^{(s)}_{l,i}\\big),

and the second term is exactly the variance that mean-field CAVI loses (§C.5): CAVI keeps only
(the analogue of) the first. Each row gets its own covariance (``cov_kind="row"``).

The chains are pooled: with ``C`` chains of ``S`` draws each, the mean is the grand mean and the
covariance adds the between-chain spread (law of total variance). Statistics are accumulated in
a single pass (Welford), ``O(d_{l+1} (d_l+1)^2)`` memory per layer, and cost one extra
``O(n d_l^2 + d_l^3 + d_l^2 d_{l+1})`` per retained draw and layer — about one more Gibbs sweep.

By default (``init="cavi"``) the Gibbs chains start from draws of a block-CAVI solution (the best
of a few restarts): MATH.md §C.5 (i) — CAVI as the fast initialiser, Rao–Blackwellised Gibbs as
the uncertainty estimate.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

from .._backend import backend_name, device_of, namespace
from .._backend import linalg
from .._backend import random as bbr
from .. import gibbs as _gibbs
from ..model import MLP, resolve_learn_noise
from ..gibbs.result import GibbsResult
from ..gibbs.conditionals import output_targets
from ..blocks import augmented_cross, augmented_gram, diag_embed
from ..driver import deprecated_names, one_blas_thread, is_kept, run_kernel
from ..inputs import prepare
from ._common import NOISY_VI, check_int, eye
from .result import VIResult

__all__ = ["RBStats", "RBState", "conditional_moments", "init_stats", "accumulate", "finalize", "run"]


class RBStats(NamedTuple):
    """Running statistics per chain (Welford).

    Attributes
    ----------
    count : int
        Number of draws accumulated (per chain).
    mean : tuple of arrays
        Running mean of ``m^{(s)}`` per layer, ``(C, d_{l+1}, d_l + 1)``.
    m2 : tuple of arrays
        Running sum of centred outer products of ``m^{(s)}_{l,i}``, ``(C, d_{l+1}, d_l+1, d_l+1)``.
    cond_cov : tuple of arrays
        Running mean of ``P_l^{(s)-1}``, ``(C, d_l + 1, d_l + 1)``.
    """

    count: int
    mean: tuple
    m2: tuple
    cond_cov: tuple


class RBState(NamedTuple):
    """Final state of :func:`run`: the Gibbs chains, the accumulated statistics and, when
    tempering, the replicas (:class:`blockbayes.gibbs.tempering.TemperingState`; replica 0 is
    ``gibbs``)."""

    gibbs: Any
    stats: RBStats
    tempering: Any = None


def conditional_moments(state, net: MLP, X, y):
    """Per layer ``(m^{(s)}, P^{(s)-1})`` of the row conditionals (A.1) at a Gibbs state.

    The output layer regresses on its targets ``T``: ``y`` (Gaussian), the one-hot labels
    (``"onehot_gaussian"``) or, for the probit likelihoods, the chain's latent utilities
    ``U^{(s)}`` (``state.latent``, ``Δ_y = 1``): given ``U`` the output rows are a Bayesian linear
    regression exactly as in the Gaussian case (docs/block_vi_probit.md).

    Parameters
    ----------
    state : GibbsState
        ``C`` chains; uses ``pre``, ``post``, ``lam_w``, ``lam_b``, ``delta_y`` and ``latent``.
    X : array, shape (n, d_in)
    y : array, shape (n, d_out), or int labels (n,) for the classification likelihoods

    Returns
    -------
    list of (mean, cov)
        ``mean`` ``(C, d_{l+1}, d_l + 1)``, ``cov`` ``(C, d_l + 1, d_l + 1)``, computed as
        ``A = ΔΛ + G = R R^⊤``, ``m^⊤ = A^{-1} X̃^⊤ Z``, ``P^{-1} = Δ A^{-1}``.
    """
    xp = namespace(X)
    L = net.num_layers
    C = state.delta_y.shape[0]
    out = []
    for l in range(L):
        H = X if l == 0 else state.post[l - 1]
        if l == L - 1:
            T = output_targets(net, y, state.latent, C, X)
            delta = state.delta_y
        else:
            T = state.pre[l]
            delta = xp.full((C,), net.delta_z[l], dtype=X.dtype, device=device_of(X))
        d = net.widths[l]
        lam = xp.concat([xp.broadcast_to(state.lam_w[:, l:l + 1], (C, d)), state.lam_b[:, l:l + 1]], axis=-1)
        G = augmented_gram(xp, H)
        A = xp.broadcast_to(G, (C, d + 1, d + 1)) + diag_embed(xp, delta[:, None] * lam)
        R = linalg.cholesky(A)
        k = T.shape[-1]
        B = xp.broadcast_to(augmented_cross(xp, H, T), (C, d + 1, k))
        I = xp.broadcast_to(eye(xp, d + 1, X), (C, d + 1, d + 1))
        sol = linalg.cho_solve(R, xp.concat([B, I], axis=-1))        # one pair of solves for both
        mean = xp.matrix_transpose(sol[..., :k])
        cov = delta[:, None, None] * sol[..., k:]
        out.append((mean, 0.5 * (cov + xp.matrix_transpose(cov))))
    return out


def init_stats(net: MLP, num_chains: int, like) -> RBStats:
    """Empty statistics for ``num_chains`` chains (arrays like ``like``)."""
    xp = namespace(like)
    dt, dev = like.dtype, device_of(like)
    shapes = net.weight_shapes()
    mean = tuple(xp.zeros((num_chains, do, k), dtype=dt, device=dev) for do, k in shapes)
    m2 = tuple(xp.zeros((num_chains, do, k, k), dtype=dt, device=dev) for do, k in shapes)
    cc = tuple(xp.zeros((num_chains, k, k), dtype=dt, device=dev) for _, k in shapes)
    return RBStats(0, mean, m2, cc)


def accumulate(stats: RBStats, state, net: MLP, X, y) -> RBStats:
    """Add one Gibbs state (all chains) to the statistics (pure; Welford update)."""
    cnt = stats.count + 1
    means, m2s, ccs = [], [], []
    for l, (m, P_inv) in enumerate(conditional_moments(state, net, X, y)):
        d1 = m - stats.mean[l]
        mean = stats.mean[l] + d1 / cnt
        d2 = m - mean
        m2 = stats.m2[l] + d1[..., :, None] * d2[..., None, :]
        cc = stats.cond_cov[l] + (P_inv - stats.cond_cov[l]) / cnt
        means.append(mean)
        m2s.append(m2)
        ccs.append(cc)
    return RBStats(cnt, tuple(means), tuple(m2s), tuple(ccs))


def finalize(stats: RBStats):
    """Pooled moment-matched block Gaussians.

    Returns
    -------
    means : tuple of arrays, per layer ``(1, d_{l+1}, d_l + 1)``
    covs : tuple of arrays, per layer ``(1, d_{l+1}, d_l + 1, d_l + 1)``
        ``mean_c(P^{-1}) + mean_c(Cov_s m) + Cov_c(mean_s m)``.
    within : tuple of arrays, per layer ``(1, d_l + 1, d_l + 1)``
        The pooled mean conditional covariance ``overline{P^{(s)-1}}`` alone (what remains
        without the Rao–Blackwell correction).
    """
    if stats.count < 1:
        raise ValueError("no draws accumulated")
    means, covs, within = [], [], []
    for mean_c, m2_c, cc_c in zip(stats.mean, stats.m2, stats.cond_cov):
        xp = namespace(mean_c)
        grand = xp.mean(mean_c, axis=0)
        dev_c = mean_c - grand
        between = xp.mean(dev_c[..., :, None] * dev_c[..., None, :], axis=0)
        within_s = xp.mean(m2_c, axis=0) / stats.count
        cond = xp.mean(cc_c, axis=0)
        cov = cond[None, :, :] + within_s + between
        cov = 0.5 * (cov + xp.matrix_transpose(cov))
        means.append(grand[None, ...])
        covs.append(cov[None, ...])
        within.append(cond[None, ...])
    return tuple(means), tuple(covs), tuple(within)


#: ``(num_warmup, num_samples, num_chains)`` of :func:`run` when not given: untempered, and when
#: replica exchange is on (``tempering="auto"`` turns it on only for tiny problems — at most 16
#: replicas — where a sweep costs a few ms and is call-bound: the replicas and chains run as the
#: chains of one sweep, so 16 chains cost ~1.7× 4). Measured (benchmarks/gibbs_tiny_sd.py, both
#: suite regimes, seeds 0–5, starts prior/zero/CAVI): 4 × (200 + 200) sweeps leave the pooled
#: marginal sds 3–65% off; 16 × (500 + 1500) within 10% on all 36 rows (docs/gibbs-moves.md §4).
DEFAULT_BUDGET = (200, 200, 4)
TEMPERED_BUDGET = (500, 1500, 16)


@deprecated_names(n_samples="num_samples", n_warmup="num_warmup", n_chains="num_chains")
@one_blas_thread
def run(net: MLP, X, y, *, num_samples: Optional[int] = None, num_warmup: Optional[int] = None,
        num_chains: Optional[int] = None, thin: int = 1,
        init=None, cavi_iters: int = 100, cavi_restarts: int = 8, seed=None, device=None, dtype=None,
        progress: bool = True, learn_noise: Optional[bool] = None, learn_prior: bool = False,
        keep_samples: bool = True, check_every=None, checkpoint=None, checkpoint_every=None,
        resume=None, tempering="auto") -> VIResult:
    """Rao–Blackwellised block-Gaussian posterior of the noisy MLP (honest variances).

    Runs ``num_chains`` block-Gibbs chains (:func:`blockbayes.gibbs.step`) and, at every kept
    sweep, adds the row conditionals' means and covariances to the statistics of
    :func:`accumulate`.

    Parameters
    ----------
    net : MLP
        ``likelihood`` ``"gaussian"``, or a classifier (``"probit"``, ``"multinomial_probit"``,
        ``"onehot_gaussian"``): the output rows are then Rao–Blackwellised over the Gibbs chain's
        latent utilities ``U`` (or the one-hot targets), see docs/block_vi_probit.md.
    X : array, shape (n, d_in)
    y : array, shape (n,) or (n, d_out); int class labels (n,) for the classifiers
    num_samples, num_warmup, num_chains, thin : int
        As in :func:`blockbayes.gibbs.run` (``num_samples`` kept sweeps per chain). Not given:
        :data:`DEFAULT_BUDGET` (200 warm-up, 200 kept, 4 chains), or :data:`TEMPERED_BUDGET`
        (500, 1500, 16 chains) when replica exchange runs (``config["tempering"]["active"]``:
        only tiny problems, where sweeps are cheap and 4 × 200 sweeps leave the marginal sds
        10–30% off).
    init : None, {"cavi", "prior", "zero"}, sequence of weights, mapping or GibbsState
        ``None`` (default): ``"cavi"`` for Gaussian regression, ``"prior"`` for the classifiers
        (block CAVI is Gaussian-only). ``"cavi"``: each chain starts from one draw of the best of ``cavi_restarts`` block-CAVI
        restarts (``cavi_iters`` sweeps), with auxiliaries from the noisy forward pass. Anything
        else is passed to :func:`blockbayes.gibbs.init`.
    cavi_iters, cavi_restarts : int
        Settings of the CAVI initialiser.
    seed, device, dtype, progress
        As in :func:`blockbayes.gibbs.run`.
    learn_noise, learn_prior : bool
        Passed to :func:`blockbayes.gibbs.step` (the conditionals then use each draw's own
        ``Δ_y``, ``λ``). ``learn_noise=None`` (default): as :func:`blockbayes.gibbs.run` —
        learned for a Gaussian likelihood whose ``Δ_y`` the caller did not set
        (:func:`blockbayes.model.resolve_learn_noise`, design note 60).
    keep_samples : bool
        Keep the raw Gibbs weight draws as ``result.extras["samples"]`` (a
        :class:`~blockbayes.gibbs.GibbsResult`), for comparison with the block Gaussian.
    check_every : int, optional
        Check the chains for non-finite values every this many sweeps (always after the last).
    checkpoint, checkpoint_every, resume
        Checkpoints of the sweep loop, as in :func:`blockbayes.driver.run_kernel` (the CAVI
        initialiser is redone on resume: it is deterministic given ``seed``).
    tempering : "auto" (default), "on", "off", a ladder of factors, or Tempering
        Replica exchange over ``Δ``, as in :func:`blockbayes.gibbs.run`
        (:mod:`blockbayes.gibbs.tempering`): the statistics are accumulated from replica 0 (the
        net's own ``Δ``) only; ``"auto"`` tempers only where the ladder has at most 16 replicas
        and is otherwise exactly the untempered run. ``config["tempering"]`` says what ran.

    Returns
    -------
    VIResult
        ``method="rao_blackwell"``, one component, ``cov_kind="row"``. ``extras``:
        ``"conditional_covs"`` (per layer ``(1, d_l+1, d_l+1)``, the mean conditional covariance
        alone, i.e. the covariance *without* the Rao–Blackwell correction), ``"samples"`` (if
        kept) and ``"cavi_elbo"`` (the initialiser's ELBOs, ``init="cavi"`` only).
        ``final_state`` is an :class:`RBState` (continue with ``init=result.final_state.gibbs``).
    """
    for name, v, lo in (("num_samples", num_samples, 1), ("num_warmup", num_warmup, 0),
                        ("num_chains", num_chains, 1)):
        if v is not None:
            check_int(name, v, lo)
    for name, v, lo in (("thin", thin, 1), ("cavi_iters", cavi_iters, 1),
                        ("cavi_restarts", cavi_restarts, 1)):
        check_int(name, v, lo)
    learn_noise = resolve_learn_noise(net, learn_noise)
    X, y = prepare(net, X, y, device=device, dtype=dtype, task="noisy", per_chain=False, method=NOISY_VI)
    gaussian = net.likelihood == "gaussian"
    if init is None:
        init = "cavi" if gaussian else "prior"
    if isinstance(init, str) and init == "cavi" and not gaussian:
        raise ValueError(f"init='cavi' needs likelihood='gaussian' (block CAVI is Gaussian-only), got "
                         f"{net.likelihood!r}: start from 'prior', 'zero', given weights or a GibbsState")
    if learn_noise and not gaussian:
        raise ValueError(f"learn_noise is not available for likelihood={net.likelihood!r}")
    xp = namespace(X, y)
    from ..gibbs import tempering as _tp

    tplan = _tp.plan(net, X.shape[0], _tp.Tempering.coerce(tempering), output=not learn_noise)
    budget = TEMPERED_BUDGET if tplan.active else DEFAULT_BUDGET
    num_warmup = budget[0] if num_warmup is None else num_warmup
    num_samples = budget[1] if num_samples is None else num_samples
    num_chains = budget[2] if num_chains is None else num_chains
    root = bbr.key(seed)
    k_cavi, k_draw, k_init, k_run = bbr.split(root, 4)
    cavi_elbo = None
    if isinstance(init, str) and init == "cavi":
        from . import cavi as _cavi

        cres = _cavi.run(net, X, y, num_steps=cavi_iters, num_restarts=cavi_restarts, seed=k_cavi,
                         progress=False)
        cavi_elbo = cres.elbo
        start = cres.sample(num_chains, seed=k_draw)              # per layer (C, d_out, d_in + 1)
        init_arg = start
    else:
        init_arg = init
    tstate = lad = None
    if tplan.active:
        tstate = _tp.init(k_init, net, X, y, tplan.factors, num_chains=num_chains, init=init_arg,
                          output=tplan.output)
        state = tstate.replica(0)
        lad = _tp.ladder(net, X, tplan.factors, num_chains, output=tplan.output, learn_prior=learn_prior)
    else:
        state = _gibbs.init(k_init, net, X, y, num_chains=num_chains, init=init_arg)
    cache = None if tplan.active else _gibbs.precompute(net, X, learn_prior=learn_prior)
    stats = init_stats(net, num_chains, X)
    S, C, L = num_samples, num_chains, net.num_layers
    dt = X.dtype

    def step_fn(sub, carry, sweep):
        tst = carry.tempering
        if tst is not None:
            tst, _ = _tp.step(sub, tst, lad, X, y, warmup=sweep < num_warmup,
                              learn_noise=learn_noise, learn_prior=learn_prior)
            st = tst.replica(0)
        else:
            st, _ = _gibbs.step(sub, carry.gibbs, net, X, y, learn_noise=learn_noise, learn_prior=learn_prior,
                                cache=cache)
        acc = accumulate(carry.stats, st, net, X, y) if is_kept(sweep, num_warmup, thin) else carry.stats
        return RBState(st, acc, tst), None

    def check(carry, info):
        if carry.tempering is not None:
            return _gibbs.first_nonfinite(xp, carry.tempering.state)
        return _gibbs.first_nonfinite(xp, carry.gibbs)

    def collect(carry, info, sweep):
        st = carry.gibbs
        out = {f"w{l}": st.weights[l] for l in range(L)} if keep_samples else {}
        out.update(delta_y=st.delta_y, lam_w=st.lam_w, lam_b=st.lam_b)
        return out

    out = run_kernel(k_run, RBState(state, stats, tstate), step_fn, num_samples=S, num_warmup=num_warmup, thin=thin,
                     collect=collect, check=check,
                     check_every=check_every, check_what="Gibbs chains", progress=progress,
                     desc="vi.rao_blackwell", unit="sweep", checkpoint=checkpoint,
                     checkpoint_every=checkpoint_every, resume=resume,
                     config=dict(family="vi.rao_blackwell", widths=list(net.widths), num_chains=C,
                                 dtype=str(dt), learn_noise=learn_noise, learn_prior=learn_prior,
                                 keep_samples=keep_samples,
                                 **({"tempering": [float(v) for v in tplan.factors]} if tplan.active else {})))
    state, stats, tstate = out.state
    tr, S = out.traces, out.num_kept
    tr_dy = tr["delta_y"]
    tr_lw, tr_lb = tr["lam_w"], tr["lam_b"]
    tr_w = [tr[f"w{l}"] for l in range(L)] if keep_samples else None
    means, covs, within = finalize(stats)
    dy = xp.reshape(xp.mean(tr_dy), (1,))
    samples = None
    if keep_samples:
        samples = GibbsResult(net=net, weights=tuple(tr_w), delta_y=tr_dy, lam_w=tr_lw, lam_b=tr_lb,
                              config=dict(num_samples=S, num_warmup=num_warmup, num_chains=C, thin=thin,
                                          source="vi.rao_blackwell"))
    extras = dict(conditional_covs=within)
    if samples is not None:
        extras["samples"] = samples
    if cavi_elbo is not None:
        extras["cavi_elbo"] = cavi_elbo
    return VIResult(net=net, method="rao_blackwell", means=means, covs=covs, cov_kind="row", delta_y=dy,
                   elbo=None, trace={}, likelihood=net.likelihood, model="noisy",
                   final_state=RBState(state, stats, tstate),
                   config=dict(num_samples=S, num_warmup=num_warmup, num_chains=C, thin=thin,
                               init=init if isinstance(init, str) else "given", cavi_iters=cavi_iters,
                               cavi_restarts=cavi_restarts, learn_noise=learn_noise, learn_prior=learn_prior,
                               backend=backend_name(xp), dtype=str(dt),
                               tempering=_tp.summary(tplan, tstate)),
                    extras=extras)
