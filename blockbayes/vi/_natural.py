"""Shared pieces of the natural-gradient mean-field methods (IVON, VOGN) of the standard MLP.

Both fit ``q(θ) = Π_j N(θ_j; m_j, σ_j²)`` with ``σ_j² = 1/(ess·(h_j + δ_j))``: ``h`` a running
estimate of the per-example average curvature of the loss, ``δ`` the weight decay (prior
precision divided by the training-set size ``N``) and ``ess`` the effective sample size
(``ess = N``: the Bayesian posterior; ``ess = N/τ``: the tempered posterior ``p(θ|D)^{1/τ}``).
The losses are **per-example averages** over a minibatch (``ĝ = (1/|B|) Σ_{μ∈B} ∇ℓ_μ``), as in the
papers and in ``ivon-opt``. Restarts are a leading batch axis ``C`` of every array; the Monte
Carlo draws of one step another (``K``), folded into ``C`` for the forward/backward pass of
:mod:`blockbayes.nn`.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

from .. import nn
from .._backend import backend_name, device_of, dtype_name, fast_namespace, namespace
from .._backend import random as bbr
from ..driver import nonfinite_fields, run_kernel
from ..inputs import prepare, resolve_likelihood
from ..model import MLP, chain_weights
from ._common import check_int, check_pos
from .result import VIResult


class NGState(NamedTuple):
    """State of ``C`` restarts of IVON or VOGN.

    Attributes
    ----------
    mean : tuple of arrays
        ``m`` per layer, ``(C, d_{l+1}, d_l + 1)`` (bias last).
    hess : tuple of arrays
        The curvature estimate ``h`` (IVON) / ``s`` (VOGN), same shapes; ``σ² = 1/(ess (h + δ))``.
    momentum : tuple of arrays
        Gradient momentum, same shapes.
    delta_y : array, shape (C,)
        Gaussian output-noise variance (constant unless learned).
    t : int
        Steps done.
    """

    mean: tuple
    hess: tuple
    momentum: tuple
    delta_y: Any
    t: int


class NGInfo(NamedTuple):
    """``loss``: the step's minibatch mean loss per example at the sampled weights (MC average),
    shape ``(C,)``; ``lr``: the step size used."""

    loss: Any
    lr: float


def weight_decay(net: MLP, n: int, xp, like, value=None) -> tuple:
    """Per-layer weight decay ``δ_l``, shape ``(1, 1, d_l + 1)``: ``value`` (a float for every weight),
    or the prior precision of the :class:`MLP` divided by ``n`` (so that ``ess = n`` is Bayes)."""
    out = []
    for l in range(net.num_layers):
        if value is None:
            v = net.prior_precision_vector(l, xp, dtype=like.dtype, device=device_of(like)) / float(n)
        else:
            v = xp.full((net.widths[l] + 1,), float(value), dtype=like.dtype, device=device_of(like))
        out.append(xp.reshape(v, (1, 1, -1)))
    return tuple(out)


def init_state(rng_key, net: MLP, X, *, num_restarts: int = 1, init="prior", hess_init: float = 1.0,
               delta_y: Optional[float] = None) -> NGState:
    """Initial state: means a draw from the prior ``N(0, Λ^{-1})`` (``"prior"``; LeCun-normal for the
    fan-in prior, biases included) or given weights; ``h = hess_init``; zero momentum."""
    xp = namespace(X)
    C = check_int("num_restarts", num_restarts)
    hess_init = check_pos("hess_init", hess_init)
    dev = device_of(X)
    if isinstance(init, str):
        if init != "prior":
            raise ValueError(f"init must be 'prior' or a sequence of weights, got {init!r}")
        keys = bbr.split(rng_key, net.num_layers)
        mean = []
        for l, shp in enumerate(net.weight_shapes()):
            sd = 1.0 / xp.sqrt(net.prior_precision_vector(l, xp, dtype=X.dtype, device=dev))
            mean.append(bbr.normal(keys[l], (C,) + shp, like=X) * sd[None, None, :])
        mean = tuple(mean)
    else:
        mean = chain_weights(net, init, C, X)
    hess = tuple(xp.full(m.shape, hess_init, dtype=X.dtype, device=dev) for m in mean)
    mom = tuple(xp.zeros_like(m) for m in mean)
    dy = check_pos("delta_y", net.delta_y if delta_y is None else delta_y)
    return NGState(mean, hess, mom, xp.full((C,), dy, dtype=X.dtype, device=dev), 0)


class FlatLayout:
    """The per-layer blocks ``(..., d_{l+1}, d_l + 1)`` of the MLP side by side in one flat array
    ``(..., P)``, ``P = Σ_l d_{l+1}(d_l + 1)`` (layer 1 first, each block row-major).

    IVON's and VOGN's updates are elementwise in every weight, so they can run on the flat arrays:
    one NumPy call per operation for all layers instead of one per layer (half the calls of a
    two-layer step, where each call on a few hundred numbers costs about its overhead). The result
    is the same, element by element. :func:`run_loop` carries the state in this layout; the
    per-layer blocks are views (:meth:`split`).
    """

    def __init__(self, shapes):
        self.shapes = tuple(tuple(int(v) for v in s) for s in shapes)
        self.bounds, off = [], 0
        for s in self.shapes:
            self.bounds.append((off, off + math.prod(s)))
            off += math.prod(s)
        self.size = off

    def split(self, flat, xp) -> tuple:
        """Per-layer views ``(..., d_{l+1}, d_l + 1)`` of ``flat`` ``(..., P)``."""
        lead = tuple(flat.shape[:-1])
        return tuple(xp.reshape(flat[..., a:b], lead + s) for (a, b), s in zip(self.bounds, self.shapes))

    def join(self, blocks, xp):
        """The flat array ``(..., P)`` of per-layer blocks ``(..., d_{l+1}, d_l + 1)`` (a copy); blocks
        that broadcast over the rows (weight decay ``(..., 1, d_l + 1)``) are expanded first."""
        lead = tuple(blocks[0].shape[:-2])
        return xp.concat([xp.reshape(b if tuple(b.shape[-2:]) == s else xp.broadcast_to(b, lead + s), lead + (-1,))
                          for b, s in zip(blocks, self.shapes)], axis=-1)

    def flatten_state(self, state: NGState, xp) -> NGState:
        """``state`` with ``mean``, ``hess`` and ``momentum`` each one flat block ``(C, P)``."""
        return state._replace(mean=(self.join(state.mean, xp),), hess=(self.join(state.hess, xp),),
                              momentum=(self.join(state.momentum, xp),))

    def unflatten_state(self, state: NGState, xp) -> NGState:
        """The per-layer state of a flat one (views)."""
        return state._replace(mean=self.split(state.mean[0], xp), hess=self.split(state.hess[0], xp),
                              momentum=self.split(state.momentum[0], xp))


def sample_gradients(key, state: NGState, net: MLP, X, Y, *, likelihood: str, sd: tuple, num_mc: int,
                     curvature: Optional[str] = None, eps: Optional[tuple] = None, xp=None,
                     layout: Optional[FlatLayout] = None):
    """Draw ``θ = m + σ ε`` (``num_mc`` per restart) and differentiate the minibatch mean loss there.

    ``ε`` is drawn from ``key`` (one key per layer), or given as ``eps``: per layer standard normals
    of shape ``(num_mc, C, d_{l+1}, d_l + 1)`` (what :func:`run_loop` draws for many steps at once).
    ``xp``: the arrays' namespace if known (:func:`blockbayes._backend.fast_namespace`; default: looked up).
    ``layout``: the state's blocks, ``sd`` and ``eps`` are single flat blocks ``(C, P)`` /
    ``(num_mc, C, P)`` of this :class:`FlatLayout` (one draw from ``key`` when ``eps`` is ``None``), and so
    are the returned ``g``, ``noise`` and ``curv`` (``(K, C, P)``).

    Returns
    -------
    g : tuple of arrays ``(K, C, d_{l+1}, d_l + 1)``
        ``∇ (1/|B|) Σ_μ ℓ_μ(θ)`` per draw.
    noise : tuple of arrays, same shapes
        ``θ − m = σ ε``.
    curv : tuple or None
        ``(1/|B|) Σ_μ`` of the per-example curvature diagonal (``"ggn"`` or ``"ef"``), same shapes.
    loss : array, shape (K, C)
        Mean loss per example.
    F : array, shape (K, C, |B|, d_out)
    """
    if xp is None:
        xp = namespace(X)
    L = net.num_layers
    C = state.mean[0].shape[0]
    K = num_mc
    m = X.shape[0]
    if eps is None:
        if layout is not None:
            eps = (bbr.normal(key, (K,) + tuple(state.mean[0].shape), like=state.mean[0]),)
        else:
            keys = bbr.split(key, L)
            eps = tuple(bbr.normal(keys[l], (K,) + tuple(M.shape), like=M) for l, M in enumerate(state.mean))
    noise, theta = [], []
    for l, (M, s) in enumerate(zip(state.mean, sd)):
        e = eps[l]
        z = s[None, ...] * e
        noise.append(z)
        theta.append(xp.reshape(M[None, ...] + z, (K * C,) + tuple(M.shape[1:])))
    if layout is not None:
        theta = layout.split(theta[0], xp)
    dy = state.delta_y if K == 1 else xp.reshape(xp.broadcast_to(state.delta_y[None, :], (K, C)), (K * C,))
    E, grads, curv, F = nn.value_and_grad(net, theta, X, Y, likelihood=likelihood, delta_y=dy,
                                          curvature=curvature, xp=xp)
    if layout is not None:
        g = (layout.join(tuple(xp.reshape(gr, (K, C) + s) for gr, s in zip(grads, layout.shapes)), xp) / m,)
        cv = None if curv is None else \
            (layout.join(tuple(xp.reshape(c, (K, C) + s) for c, s in zip(curv, layout.shapes)), xp) / m,)
    else:
        g = tuple(xp.reshape(gr, (K,) + tuple(M.shape)) / m for gr, M in zip(grads, state.mean))
        cv = None if curv is None else tuple(xp.reshape(c, (K,) + tuple(M.shape)) / m
                                             for c, M in zip(curv, state.mean))
    return g, tuple(noise), cv, xp.reshape(E, (K, C)) / m, xp.reshape(F, (K, C) + tuple(F.shape[1:]))


def noise_update(xp, state: NGState, F, Y, rate: float):
    """``Δ_y ← (1 − ρ) Δ_y + ρ · mean((y − F_θ)²)`` over the batch, outputs and draws: a stochastic
    fixed-point iteration for the ELBO's optimal noise ``Δ_y* = E_q ‖y − F_θ(x)‖²/(N d_out)``."""
    r = F - Y[None, None, ...]
    msr = xp.mean(r * r, axis=(0, 2, 3))
    return (1.0 - rate) * state.delta_y + rate * msr


def lr_at(t: int, num_steps: int, lr: float, schedule: str) -> float:
    """Step size at step ``t``: ``"constant"`` or ``"cosine"`` (decays to 0 at the end, as in the
    IVON paper's recipes)."""
    if schedule == "constant":
        return lr
    frac = min(t / max(num_steps, 1), 1.0)
    return lr * 0.5 * (1.0 + math.cos(math.pi * frac))


def kl_to_prior(xp, mean, var, prior_prec) -> Any:
    """``KL(q ‖ p)`` per restart for diagonal ``q`` and ``p = N(0, diag(λ)^{-1})``, shape ``(C,)``:
    ``½ Σ_j (λ_j σ_j² + λ_j m_j² − 1 − log(λ_j σ_j²))``."""
    kl = 0.0
    for M, V, lam in zip(mean, var, prior_prec):
        a = lam * V
        kl = kl + 0.5 * xp.sum(a + lam * M * M - 1.0 - xp.log(a), axis=(-2, -1))
    return kl


NOISE_CHUNK_STEPS = 256
NOISE_CHUNK_NUMBERS = 1 << 20


def noise_chunk(num_mc: int, mean: tuple) -> int:
    """Steps whose standard normals :func:`run_loop` draws at once: ``NOISE_CHUNK_STEPS``, fewer for big
    nets so that one chunk holds at most ``NOISE_CHUNK_NUMBERS`` numbers (≥ 1 step)."""
    per_step = num_mc * sum(int(math.prod(M.shape)) for M in mean)
    return max(1, min(NOISE_CHUNK_STEPS, NOISE_CHUNK_NUMBERS // max(per_step, 1)))


def run_loop(method: str, init_fn, step_fn, net: MLP, X, y, *, num_steps: int, batch_size, num_restarts: int,
             likelihood, learn_noise: bool, ess, weight_decay_value, seed, device, dtype, progress: bool,
             init, hess_init: float, step_options: dict, config: dict, check_every=None, checkpoint=None,
             checkpoint_every=None, resume=None, max_steps=None) -> VIResult:
    """The stateful driver shared by :func:`blockbayes.vi.ivon.run` and :func:`blockbayes.vi.vogn.run`:
    moves the data once, runs epochs of shuffled minibatches (the last short batch dropped when
    ``batch_size`` does not divide ``n``), and returns a :class:`VIResult` with ``cov_kind="diag"``,
    ``σ² = 1/(ess (h + δ))``. ``max_steps`` (optional) caps ``num_steps``: a caller that sizes the
    run in epochs gets ``min(num_steps, max_steps)`` steps (the step-size schedule spans those).

    The randomness is drawn for :func:`noise_chunk` steps at once: the driver splits keys at every
    ``chunk``-th step only (``run_kernel(key_every=chunk)``: a key split costs about as much as a small
    net's step), and that step draws the standard normals ``ε`` of the weight draws of the next
    ``chunk`` steps (one draw per layer) and the shuffles of the epochs that start among them (one
    draw). They are handed to ``step`` (as ``eps``) and used in order: the same distribution as
    drawing them step by step, without a generator set-up per step and layer. Both are carried in the
    loop state, so a resumed run continues with the same draws. An epoch's shuffled data are gathered
    once (the minibatches are then contiguous slices), and the steps get the namespace looked up once
    (:func:`blockbayes._backend.fast_namespace`: NumPy itself for NumPy arrays)."""
    check_int("num_steps", num_steps)
    if max_steps is not None:
        num_steps = min(num_steps, check_int("max_steps", max_steps))
    check_int("num_restarts", num_restarts)
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a blockbayes.MLP, got {type(net).__name__}")
    lik = resolve_likelihood(net, likelihood, learn_noise=learn_noise)
    X, Y = prepare(net, X, y, device=device, dtype=dtype, task="standard", likelihood=lik)
    xp = namespace(X)
    fxp = fast_namespace(X)
    n = X.shape[0]
    if batch_size is None:
        batch_size = n
    check_int("batch_size", batch_size)
    batch_size = min(batch_size, n)
    ess = float(n) if ess is None else check_pos("ess", ess)
    wd = weight_decay(net, n, xp, X, None if weight_decay_value is None else
                      check_pos("weight_decay", weight_decay_value, allow_zero=True))
    k_init, k_run = bbr.split(bbr.key(seed), 2)
    state = init_fn(k_init, net, X, num_restarts=num_restarts, init=init, hess_init=hess_init)
    per_epoch = n // batch_size
    extra = {k: v for k, v in step_options.items() if k != "lr"}
    num_mc = int(step_options.get("num_mc", 1))
    chunk = noise_chunk(num_mc, state.mean)
    layout = FlatLayout(net.weight_shapes())
    wd_flat = (layout.join(wd, xp),)                     # (1, P): broadcasts over the restarts
    if batch_size < n:                                   # a chunk's shuffles: at most ~NOISE_CHUNK_NUMBERS indices
        chunk = max(1, min(chunk, (NOISE_CHUNK_NUMBERS * per_epoch) // n))

    lr0, sched = step_options["lr"], config["schedule"]
    step_kw = dict(extra, likelihood=lik, ess=ess, weight_decay=wd_flat, learn_noise=learn_noise, xp=fxp,
                   layout=layout)
    gathered = {}                                        # epoch -> its shuffled data (not carried: a cache)

    def draw_chunk(keys, t, st):
        """At a chunk's first step ``t``: the standard normals of its steps and the shuffles of the
        epochs that start in ``[t, t + chunk)`` (epoch ``e`` starts at step ``e · per_epoch``)."""
        k_b, k_s = keys
        M = st.mean[0]                                   # the flat means (C, P)
        buf = (bbr.normal(k_s, (chunk, num_mc) + tuple(M.shape), like=M),)
        perms = None
        if batch_size < n:
            e0, e1 = -(-t // per_epoch), -(-(t + chunk) // per_epoch)
            if e1 > e0:
                perms = xp.argsort(bbr.uniform(k_b, (e1 - e0, n), like=X), axis=1)
        return buf, perms

    def step_ng(keys, carry, t):
        st, perm, buf, perms = carry
        c = t % chunk
        if c == 0:
            buf, perms = draw_chunk(keys, t, st)
        eps = (buf[0][c, ...],)
        if batch_size == n:
            Xb, Yb = X, Y
        else:
            e, j = divmod(t, per_epoch)
            if j == 0:                                   # a fresh shuffle every epoch
                perm = perms[e - (-(-(t - c) // per_epoch)), :]
            data = gathered.get(e)
            if data is None:
                gathered.clear()
                data = gathered[e] = (xp.take(X, perm, axis=0), xp.take(Y, perm, axis=0))
            Xb, Yb = data[0][j * batch_size:(j + 1) * batch_size, :], data[1][j * batch_size:(j + 1) * batch_size, :]
        st, info = step_fn(None, st, net, Xb, Yb, lr=lr_at(t, num_steps, lr0, sched), eps=eps, **step_kw)
        return (st, perm, buf, perms), info

    def collect(carry, info, t):
        return {"loss": info.loss, "delta_y": carry[0].delta_y} if learn_noise else {"loss": info.loss}

    out = run_kernel(k_run, (layout.flatten_state(state, xp), None, None, None), step_ng, num_steps=num_steps,
                     collect=collect,
                     keys_per_step=2, key_mode="fan", key_every=chunk, progress=progress, desc=f"vi.{method}", unit="step",
                     check=(lambda carry, info: nonfinite_fields(xp, layout.unflatten_state(carry[0], xp),
                                                                 ("mean", "hess", "delta_y")))
                     if check_every else None, check_every=check_every, check_what=f"{method} state",
                     postfix=lambda carry, info: {"loss": f"{float(xp.min(info.loss)):.4g}"}, postfix_every=50,
                     checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                     config=dict(config, family=f"vi.{method}", widths=list(net.widths), batch_size=batch_size,
                                 noise_chunk=chunk,
                                 num_restarts=num_restarts, learn_noise=learn_noise, ess=ess, dtype=dtype_name(X)))
    state = layout.unflatten_state(out.state[0], xp)
    num_steps_done = out.num_kept
    var = tuple(1.0 / (ess * (h + d)) for h, d in zip(state.hess, wd))
    for l, (M, V) in enumerate(zip(state.mean, var)):
        if not (bool(xp.all(xp.isfinite(M))) and bool(xp.all(xp.isfinite(V))) and bool(xp.all(V > 0))):
            raise FloatingPointError(f"{method} diverged (non-finite or non-positive parameters in layer {l + 1}); "
                                     "lower lr, raise hess_init or check the data scale")
    tr = out.traces["loss"]
    tail = max(1, num_steps_done // 10)
    # ELBO estimate for choosing among restarts: −n·(tail-average minibatch loss) − KL(q ‖ p), p the
    # net's prior (precision n·δ when δ comes from it).
    prior = tuple(float(n) * d for d in wd)
    elbo = -float(n) * xp.mean(tr[:, -tail:], axis=-1) - kl_to_prior(xp, state.mean, var, prior)
    trace = {"loss": tr}
    if learn_noise:
        trace["delta_y"] = out.traces["delta_y"]
    cfg = dict(config, num_steps=num_steps, noise_chunk=chunk, batch_size=batch_size, num_restarts=num_restarts, ess=ess,
               weight_decay=weight_decay_value, learn_noise=learn_noise, hess_init=hess_init,
               backend=backend_name(xp), dtype=dtype_name(X), n=n)
    if out.interrupted:
        cfg.update(interrupted=True, num_steps_done=num_steps_done)
    return VIResult(net=net, method=method, means=tuple(state.mean), covs=var, cov_kind="diag",
                    delta_y=state.delta_y, elbo=elbo, trace=trace, likelihood=lik, model="standard",
                    final_state=state, config=cfg)
