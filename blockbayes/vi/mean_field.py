"""Mean-field Gaussian VI on the standard (noise-free) MLP — the "existing VI" baseline.

Bayes-by-backprop (Graves 2011; Blundell et al. 2015) with hand-written gradients:

.. math::

    q(θ) = \\prod_j \\mathcal N(θ_j; μ_j, σ_j^2),\\qquad
    \\mathcal L(q) = \\mathbb E_q\\Big[\\sum_μ \\log p(y_μ\\mid F_θ(x_μ))\\Big] - \\mathrm{KL}(q\\,\\Vert\\,p),

for the noise-free network ``F_θ`` of MATH.md §D.1 and the prior ``p(w̃_{l,i}) = N(0, Λ_l^{-1})``
of the :class:`~blockbayes.MLP`. The parameters are *prior-standardised* (non-centred): with
``s_j = λ_j^{-1/2}`` the prior sd,

.. math::

    θ_j = s_j\\,(\\tilde μ_j + \\tilde σ_j ε_j),\\quad \\tilde σ_j = \\operatorname{softplus}(\\tilde ρ_j),\\quad
    \\mathrm{KL} = \\sum_j \\tfrac12\\big(\\tilde σ_j^2 + \\tilde μ_j^2 - 1 - \\log\\tilde σ_j^2\\big),

so every coordinate has unit prior scale whatever ``λ`` is (a prior precision of ``10^{12}`` pins
a weight without stiffening the optimiser). The reparameterised gradients are

.. math::

    ∇_{\\tilde μ_j} = s_j\\,\\overline{g_j} + \\tilde μ_j,\\qquad
    ∇_{\\tilde ρ_j} = \\operatorname{sigmoid}(\\tilde ρ_j)\\big(s_j\\,\\overline{g_j ε_j} + \\tilde σ_j - 1/\\tilde σ_j\\big)

(of ``−𝓛``), with ``g = ∇_θ Σ_μ ℓ(y_μ, F_θ(x_μ))`` from one hand-written backward pass
(:func:`blockbayes.nn.value_and_grad`, shared with Laplace, IVON and VOGN) batched over every
Monte Carlo draw of every restart, and bars averaging over ``num_mc`` draws; minibatches scale
the data term by ``n/|B|``. Adam with a cosine learning-rate decay. Cost per step ``O(num_mc · |B| · P)``.

Likelihoods: ``"gaussian"`` (variance ``Δ_y``, optionally learned as a point estimate),
``"bernoulli"`` (logistic) and ``"categorical"`` (softmax), resolved from the net as the Laplace
family does.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

from .. import nn
from .._backend import backend_name, device_of, dtype_name, namespace
from .._backend import random as bbr
from ..driver import nonfinite_fields, one_blas_thread, run_kernel
from ..inputs import prepare, resolve_likelihood
from ..model import MLP
from ..nn import softplus
from ._common import check_int, check_pos, prior_diag
from .result import VIResult

__all__ = ["MFState", "MFInfo", "init", "step", "run", "elbo_gradients"]


class MFState(NamedTuple):
    """Optimiser state of ``C`` restarts.

    Attributes
    ----------
    mu, rho : tuple of arrays
        Standardised means ``μ̃`` and ``ρ̃`` (``σ̃ = softplus(ρ̃)``) per layer, ``(C, d_{l+1}, d_l + 1)``.
    log_delta : array, shape (C,)
        ``log Δ_y`` (Gaussian likelihood; constant unless learned).
    adam_m, adam_v : tuple
        Adam moments, matching ``mu + rho + (log_delta,)``.
    t : int
        Steps done.
    """

    mu: tuple
    rho: tuple
    log_delta: Any
    adam_m: tuple
    adam_v: tuple
    t: int


class MFInfo(NamedTuple):
    """``elbo``: the step's Monte Carlo ELBO estimate, shape ``(C,)``; ``lr``: step size."""

    elbo: Any
    lr: float


def _sigmoid(xp, x):
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _prior_sd(net, xp, like):
    return [1.0 / xp.sqrt(prior_diag(net, l, xp, like)) for l in range(net.num_layers)]


def init(rng_key, net: MLP, X, *, num_restarts: int = 1, init="prior", init_sd: float = 1e-2) -> MFState:
    """Initial state: ``μ̃`` a prior draw (``"prior"``) or given weights / prior sd; ``σ̃ = init_sd``."""
    xp = namespace(X)
    C = num_restarts
    ps = _prior_sd(net, xp, X)
    if isinstance(init, str):
        if init != "prior":
            raise ValueError(f"init must be 'prior' or a sequence of weights, got {init!r}")
        keys = bbr.split(rng_key, net.num_layers)
        mu = tuple(bbr.normal(keys[l], (C,) + s, like=X) for l, s in enumerate(net.weight_shapes()))
    else:
        from ..model import chain_weights

        W = chain_weights(net, init, C, X)
        mu = tuple(w / p for w, p in zip(W, ps))
    r0 = math.log(math.expm1(init_sd))
    rho = tuple(xp.full(m.shape, r0, dtype=X.dtype, device=device_of(X)) for m in mu)
    log_delta = xp.full((C,), math.log(net.delta_y), dtype=X.dtype, device=device_of(X))
    zeros = tuple(xp.zeros_like(a) for a in mu + rho + (log_delta,))
    return MFState(mu, rho, log_delta, zeros, zeros, 0)


def elbo_gradients(key, state: MFState, net: MLP, X, Y, *, likelihood: str, num_mc: int = 1,
                   scale: float = 1.0, learn_noise: bool = False):
    """Monte Carlo ELBO estimate and gradients of ``−𝓛`` (see the module docstring).

    The ``num_mc`` draws of the ``C`` restarts are one batch of ``S = num_mc · C`` networks for
    :func:`blockbayes.nn.value_and_grad` (draw-major: member ``j C + c`` is draw ``j`` of
    restart ``c``): one batched forward/backward pass, no host round trip.

    Parameters
    ----------
    X : array, shape (m, d_in)
        A (mini)batch.
    Y : array, shape (m, d_out) or (m, 1)
        Encoded targets (floats; one-hot for ``"categorical"``).
    scale : float
        ``n/m``: the data term's minibatch factor.

    Returns
    -------
    elbo : array, shape (C,)
    grads : tuple
        Gradients matching ``mu + rho + (log_delta,)``.
    """
    xp = namespace(X)
    L = net.num_layers
    C = state.mu[0].shape[0]
    S = num_mc * C
    ps = _prior_sd(net, xp, X)
    sig = tuple(softplus(xp, r) for r in state.rho)
    keys = bbr.split(key, L)
    eps = [bbr.normal(keys[l], (num_mc,) + tuple(m.shape), like=m) for l, m in enumerate(state.mu)]
    m = X.shape[0]
    d_out = Y.shape[1]
    # θ_{j,c} = s (μ̃_c + σ̃_c ε_{j,c}), flattened to (S, d_{l+1}, d_l + 1)
    W = [xp.reshape(ps[l] * (state.mu[l] + sig[l] * eps[l]), (S,) + tuple(state.mu[l].shape[1:]))
         for l in range(L)]
    dys = xp.exp(state.log_delta)                                                   # (C,)
    dy_members = xp.reshape(xp.broadcast_to(dys, (num_mc, C)), (S,))
    E, grads, _, _ = nn.value_and_grad(net, W, X, Y, likelihood=likelihood, delta_y=dy_members)
    E = xp.reshape(E * scale, (num_mc, C))                                          # scale · Σ_μ ℓ
    nll = xp.sum(E, axis=0) / num_mc
    if learn_noise:
        # d/d log Δ of scale·Σℓ = −scale·SSE/(2Δ) + scale·m·d_out/2
        log_norm = scale * 0.5 * m * d_out * xp.log(2 * math.pi * dys)
        g_del = xp.sum(-(E - log_norm) + scale * 0.5 * m * d_out, axis=0) / num_mc
    else:
        g_del = xp.zeros((C,), dtype=X.dtype, device=device_of(X))
    kl = 0.0
    g_mu, g_rho = [], []
    for l in range(L):
        gw = ps[l] * xp.reshape(grads[l] * scale, (num_mc,) + tuple(state.mu[l].shape)) / num_mc
        mu, s, r = state.mu[l], sig[l], state.rho[l]
        kl = kl + 0.5 * xp.sum(s * s + mu * mu - 1.0 - 2.0 * xp.log(s), axis=(-2, -1))
        g_mu.append(xp.sum(gw, axis=0) + mu)
        sg = _sigmoid(xp, r)
        g_rho.append(sg * xp.sum(gw * eps[l], axis=0) + sg * s - sg / s)
    return -(nll + kl), tuple(g_mu) + tuple(g_rho) + (g_del,)


def _lr_at(t, num_steps, lr, schedule):
    if schedule == "constant":
        return lr
    frac = min(t / max(num_steps - 1, 1), 1.0)
    return lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * frac)))


def step(key, state: MFState, net: MLP, X, Y, *, likelihood: str, lr: float, num_mc: int = 1,
         scale: float = 1.0, learn_noise: bool = False, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> tuple[MFState, MFInfo]:
    """One Adam step on ``−𝓛`` (pure)."""
    xp = namespace(X)
    value, grads = elbo_gradients(key, state, net, X, Y, likelihood=likelihood, num_mc=num_mc, scale=scale,
                                  learn_noise=learn_noise)
    params = state.mu + state.rho + (state.log_delta,)
    t = state.t + 1
    new_p, new_m, new_v = [], [], []
    for p, gr, mm, vv in zip(params, grads, state.adam_m, state.adam_v):
        mm = b1 * mm + (1 - b1) * gr
        vv = b2 * vv + (1 - b2) * gr * gr
        mh = mm / (1 - b1 ** t)
        vh = vv / (1 - b2 ** t)
        new_p.append(p - lr * mh / (xp.sqrt(vh) + eps))
        new_m.append(mm)
        new_v.append(vv)
    L = len(state.mu)
    log_delta = new_p[-1] if learn_noise else state.log_delta
    return (MFState(tuple(new_p[:L]), tuple(new_p[L:2 * L]), log_delta, tuple(new_m), tuple(new_v), t),
            MFInfo(elbo=value, lr=lr))


_init = init  # `run` has an argument called `init`


@one_blas_thread
def run(net: MLP, X, y, *, num_steps: int = 2000, lr: float = 1e-2, num_mc: int = 1,
        batch_size: Optional[int] = None, num_restarts: int = 1, likelihood: Optional[str] = None,
        learn_noise: bool = False, schedule: str = "cosine", init_sd: float = 1e-2, init="prior",
        seed=None, device=None, dtype=None, progress: bool = True, check_every: Optional[int] = None,
        checkpoint=None, checkpoint_every: Optional[int] = None, resume=None) -> VIResult:
    """Mean-field Gaussian VI (Bayes-by-backprop) on the standard MLP.

    Parameters
    ----------
    net : MLP
        Architecture, activation and prior ``Λ``; ``net.delta_y`` is the Gaussian noise variance.
    X : array, shape (n, d_in)
    y : array
        Regression targets ``(n,)``/``(n, d_out)``, or integer labels ``(n,)`` for classifiers.
    num_steps : int
        Adam steps.
    lr : float
        Adam step size (decayed to ``lr/100`` by the cosine ``schedule``; ``"constant"`` keeps it).
    num_mc : int
        Reparameterised draws per step.
    batch_size : int, optional
        Minibatch size (``None``: full batch). Batches are drawn without replacement per step.
    num_restarts : int
        Independent restarts; ``result.best`` is the one with the largest final ELBO estimate
        (mean of the last 10% of steps).
    likelihood : {None, "gaussian", "bernoulli", "categorical"}
        ``None`` resolves from ``net.likelihood`` as the Laplace family does
        (``"probit"`` → ``"bernoulli"``, multinomial → ``"categorical"``).
    learn_noise : bool
        Gaussian only: fit ``log Δ_y`` by gradient ascent on the ELBO (a point estimate).
    schedule : {"cosine", "constant"}
    init_sd : float
        Initial ``σ̃`` (as a fraction of the prior sd).
    init : "prior" or sequence of per-layer weights
        Initial means (standardised by the prior sd internally).
    seed, device, dtype, progress
        As elsewhere (the data pass :func:`blockbayes.inputs.prepare`, ``task="standard"``).
    check_every : int, optional
        Check ``μ̃``, ``ρ̃`` and ``log Δ_y`` for non-finite values every this many steps (a device
        sync; ``None``: only the final check).
    checkpoint, checkpoint_every, resume
        Checkpoints of the step loop (:func:`blockbayes.driver.run_kernel`): resuming gives the
        same fit as the uninterrupted run. Ctrl-C ends the loop early with a
        :class:`~blockbayes.driver.RunInterrupted` warning and returns the fit so far
        (``config["interrupted"]``, ``config["num_steps_done"]``).

    Returns
    -------
    VIResult
        ``method="mean_field"``, ``cov_kind="diag"``, ``model="standard"`` (predictions with the
        noise-free network only); ``trace["elbo"]`` ``(C, num_steps)`` Monte Carlo estimates,
        ``elbo`` their final average; ``delta_y`` per restart.
    """
    check_int("num_steps", num_steps)
    check_int("num_mc", num_mc)
    check_int("num_restarts", num_restarts)
    lr = check_pos("lr", lr)
    init_sd = check_pos("init_sd", init_sd)
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    lik = resolve_likelihood(net, likelihood, learn_noise=learn_noise)
    X, Y = prepare(net, X, y, device=device, dtype=dtype, task="standard", likelihood=lik)
    xp = namespace(X)
    n = X.shape[0]
    if batch_size is not None:
        check_int("batch_size", batch_size)
        batch_size = min(batch_size, n)
    k_init, k_run = bbr.split(bbr.key(seed), 2)
    state = _init(k_init, net, X, num_restarts=num_restarts, init=init, init_sd=init_sd)

    def step_mf(keys, st, t):
        k_b, k_s = keys
        if batch_size is None or batch_size == n:
            Xb, Yb, scale = X, Y, 1.0
        else:
            idx_x = xp.asarray(bbr.choice(k_b, n, batch_size), device=device_of(X))
            Xb, Yb, scale = xp.take(X, idx_x, axis=0), xp.take(Y, idx_x, axis=0), n / batch_size
        return step(k_s, st, net, Xb, Yb, likelihood=lik, lr=_lr_at(t, num_steps, lr, schedule),
                    num_mc=num_mc, scale=scale, learn_noise=learn_noise)

    out = run_kernel(k_run, state, step_mf, num_steps=num_steps,
                     collect=lambda st, info, t: {"elbo": info.elbo},
                     keys_per_step=2, key_mode="fan", progress=progress, desc="vi.mean_field", unit="step",
                     check=(lambda st, info: nonfinite_fields(xp, st, ("mu", "rho", "log_delta")))
                     if check_every else None, check_every=check_every, check_what="mean-field state",
                     check_hint="lower lr or check the data scale",
                     postfix=lambda st, info: {"elbo": f"{float(xp.max(info.elbo)):.4g}"}, postfix_every=50,
                     checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                     config=dict(family="vi.mean_field", widths=list(net.widths), likelihood=lik, lr=lr,
                                 num_mc=num_mc, batch_size=batch_size, num_restarts=num_restarts,
                                 learn_noise=learn_noise, schedule=schedule, init_sd=init_sd,
                                 dtype=dtype_name(X)))
    state = out.state
    num_steps_done = out.num_kept
    ps = _prior_sd(net, xp, X)
    means = tuple(p * m for p, m in zip(ps, state.mu))
    var = tuple((p * softplus(xp, r)) ** 2 for p, r in zip(ps, state.rho))
    for l, (M, V) in enumerate(zip(means, var)):
        if not (bool(xp.all(xp.isfinite(M))) and bool(xp.all(xp.isfinite(V)))):
            raise FloatingPointError(f"mean-field VI diverged (non-finite parameters in layer {l + 1}); "
                                     "lower lr or check the data scale")
    tr = out.traces["elbo"]
    tail = max(1, num_steps_done // 10)
    final = xp.mean(tr[:, -tail:], axis=-1)
    cfg = dict(num_steps=num_steps, lr=lr, num_mc=num_mc, batch_size=batch_size, num_restarts=num_restarts,
               learn_noise=learn_noise, schedule=schedule, init_sd=init_sd, backend=backend_name(xp),
               dtype=dtype_name(X))
    if out.interrupted:
        cfg.update(interrupted=True, num_steps_done=num_steps_done)
    return VIResult(net=net, method="mean_field", means=means, covs=var, cov_kind="diag",
                    delta_y=xp.exp(state.log_delta), elbo=final, trace={"elbo": tr}, likelihood=lik,
                    model="standard", final_state=state, config=cfg)
