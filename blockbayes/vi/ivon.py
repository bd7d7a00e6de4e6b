"""IVON: Improved Variational Online Newton (Shen et al. 2024) on the standard MLP.

Mean-field Gaussian ``q(θ) = Π_j N(m_j, σ_j²)``, ``σ_j² = 1/(λ (h_j + δ_j))`` with ``λ = ess``
(effective sample size; ``ess = N`` the posterior, smaller values temper it) and ``δ`` the weight
decay (by default the :class:`~blockbayes.MLP` prior precision divided by ``N``). One step
(Shen et al. 2024, Algorithm 1; the update of the authors' ``ivon-opt``):

.. math::

    θ &= m + σ ⊙ ε,\\quad ε \\sim \\mathcal N(0, I)\\quad(\\text{num\\_mc draws, averaged}),\\\\
    \\hat g &= ∇ \\bar ℓ_B(θ),\\qquad \\hat h = \\hat g ⊙ \\frac{θ - m}{σ^2}
        \\quad(\\text{reparameterisation / Price estimate of } \\mathbb E_q[\\operatorname{diag}∇^2\\bar ℓ]),\\\\
    g &← β_1 g + (1 - β_1) \\hat g,\\\\
    h &← β_2 h + (1 - β_2) \\hat h + \\tfrac12 (1 - β_2)^2 \\frac{(h - \\hat h)^2}{h + δ}
        \\quad(\\text{positivity-preserving: } h + δ > 0 \\text{ stays true}),\\\\
    m &← m - α_t\\, \\operatorname{clip}_ρ\\Big(\\frac{g/(1 - β_1^t) + δ ⊙ m}{h + δ}\\Big),
        \\qquad α_t = α (h_0 + δ) \\text{ with } \\texttt{rescale\\_lr},

``\\bar ℓ_B`` the minibatch **mean** loss per example. The ``h`` update is the Riemannian-gradient
step with the second-order retraction that keeps ``h + δ`` positive (Lin et al. 2020). Gradients
come from one hand-written batched backward pass of :mod:`blockbayes.nn` for all draws and
restarts together; cost per step ``O(num_mc · C · |B| · P)``.

Prediction: ``σ² = 1/(ess (h + δ))`` goes into a :class:`VIResult` (``cov_kind="diag"``), whose
``predict`` averages many draws from ``q`` (1 MC draw per training step, many at prediction).
"""
from __future__ import annotations

import math
from typing import Optional

from .._backend import namespace
from ..model import MLP
from ._common import check_pos
from ..driver import one_blas_thread
from ._natural import NGInfo, NGState, init_state, noise_update, run_loop, sample_gradients
from .result import VIResult

__all__ = ["IVONState", "IVONInfo", "init", "step", "run", "hessian_estimate"]

IVONState = NGState
IVONInfo = NGInfo


def init(rng_key, net: MLP, X, *, num_restarts: int = 1, init="prior", hess_init: float = 1.0,
         delta_y: Optional[float] = None) -> NGState:
    """Initial state of ``num_restarts`` restarts: means a prior draw (or given weights), ``h = hess_init``,
    zero momentum, ``Δ_y = net.delta_y`` (or ``delta_y``)."""
    return init_state(rng_key, net, X, num_restarts=num_restarts, init=init, hess_init=hess_init, delta_y=delta_y)


def hessian_estimate(g, noise, hess, wd, ess):
    """The reparameterisation estimate ``ĥ = ĝ ⊙ (θ − m)/σ² = ĝ ⊙ noise · ess (h + δ)``.

    ``E[ĥ] = E_q[diag ∇²ℓ̄]`` (Price's theorem; Bonnet for the gradient). ``g`` and ``noise`` have a
    leading draw axis ``K`` that is averaged.
    """
    gn = g[0, ...] * noise[0, ...] if g.shape[0] == 1 else namespace(g).mean(g * noise, axis=0)
    return gn * (ess * (hess + wd))


def step(key, state: NGState, net: MLP, X, Y, *, likelihood: str, lr: float, ess: float, weight_decay: tuple,
         beta1: float = 0.9, beta2: float = 0.99999, hess_init: float = 1.0, num_mc: int = 1,
         clip_radius: float = math.inf, rescale_lr: bool = True, debias: bool = True,
         learn_noise: bool = False, noise_rate: float = 0.01, eps: Optional[tuple] = None,
         xp=None, layout=None) -> tuple[NGState, NGInfo]:
    """One IVON step on a minibatch (pure).

    Parameters
    ----------
    key : key
    state : IVONState
    X : array, shape (m, d_in)
    Y : array, shape (m, C)
        Encoded targets (:func:`blockbayes.nn.encode_targets`).
    likelihood : {"gaussian", "categorical", "bernoulli"}
    lr, ess, beta1, beta2, hess_init, clip_radius, rescale_lr, debias
        As in the module docstring (``ivon-opt``'s names and defaults).
    weight_decay : tuple of arrays
        ``δ`` per layer, broadcastable to the weights (see :func:`blockbayes.vi._natural.weight_decay`).
    num_mc : int
        Draws per step (averaged).
    learn_noise : bool
        Gaussian: update ``Δ_y`` towards the mean squared residual at the draws (rate ``noise_rate``).
    eps : tuple of arrays, optional
        The step's standard normals ``ε`` per layer, ``(num_mc, C, d_{l+1}, d_l + 1)``; ``None``: drawn
        from ``key`` (:func:`blockbayes.vi._natural.sample_gradients`).
    xp : namespace, optional
        The arrays' namespace, when the caller has looked it up once for many steps
        (:func:`blockbayes._backend.fast_namespace`); default: looked up. The same arithmetic.
    layout : blockbayes.vi._natural.FlatLayout, optional
        The state's ``mean``, ``hess`` and ``momentum``, ``weight_decay`` and ``eps`` are each one flat
        block (``(C, P)``, ``(1, P)``, ``(num_mc, C, P)``) of this layout, as
        :func:`blockbayes.vi._natural.run_loop` carries them: the elementwise update then runs on all
        layers at once (the same numbers as the per-layer update, element by element).

    Returns
    -------
    state : IVONState
    info : IVONInfo
    """
    if xp is None:
        xp = namespace(X)
    t = state.t + 1
    hd = tuple(h + d for h, d in zip(state.hess, weight_decay))
    sd = tuple(1.0 / xp.sqrt(ess * v) for v in hd)
    g, noise, _, loss, F = sample_gradients(key, state, net, X, Y, likelihood=likelihood, sd=sd, num_mc=num_mc,
                                            eps=eps, xp=xp, layout=layout)
    new_m, new_h, new_g = [], [], []
    lr_eff_base = lr
    for M, h, mom, gl, nz, d, v in zip(state.mean, state.hess, state.momentum, g, noise, weight_decay, hd):
        gbar = gl[0, ...] if num_mc == 1 else xp.mean(gl, axis=0)
        hhat = hessian_estimate(gl, nz, h, d, ess)
        mom = beta1 * mom + (1.0 - beta1) * gbar
        h2 = beta2 * h + (1.0 - beta2) * hhat + (0.5 * (1.0 - beta2) ** 2) * (h - hhat) ** 2 / v
        deb = (1.0 - beta1 ** t) if debias else 1.0
        upd = (mom / deb + d * M) / (h2 + d)
        if math.isfinite(clip_radius):
            upd = xp.clip(upd, -clip_radius, clip_radius)
        alpha = lr_eff_base * (hess_init + d) if rescale_lr else lr_eff_base
        new_m.append(M - alpha * upd)
        new_h.append(h2)
        new_g.append(mom)
    dy = noise_update(xp, state, F, Y, noise_rate) if learn_noise else state.delta_y
    return (NGState(tuple(new_m), tuple(new_h), tuple(new_g), dy, t),
            NGInfo(loss=loss[0, ...] if num_mc == 1 else xp.mean(loss, axis=0), lr=lr))


_init = init  # `run` has an argument called `init`


@one_blas_thread
def run(net: MLP, X, y, *, num_steps: int = 2000, max_steps: Optional[int] = None, lr: float = 0.1, ess: Optional[float] = None,
        weight_decay: Optional[float] = None, hess_init: float = 1.0, beta1: float = 0.9, beta2: float = 0.99999,
        num_mc: int = 1, batch_size: Optional[int] = None, clip_radius: float = math.inf,
        rescale_lr: bool = True, debias: bool = True, schedule: str = "cosine", num_restarts: int = 1,
        likelihood: Optional[str] = None, learn_noise: bool = False, noise_rate: float = 0.01, init="prior",
        seed=None, device=None, dtype=None, progress: bool = True, check_every: Optional[int] = None,
        checkpoint=None, checkpoint_every: Optional[int] = None, resume=None) -> VIResult:
    """Fit a mean-field Gaussian to the standard MLP's posterior with IVON.

    Parameters
    ----------
    net : MLP
        Architecture, activation, prior (``weight_decay`` defaults to ``Λ/N``) and ``delta_y``
        (the starting Gaussian noise variance).
    X : array, shape (n, d_in)
    y : array
        Regression targets ``(n,)``/``(n, d_out)`` or integer labels ``(n,)``.
    num_steps : int
        Optimiser steps (each on one minibatch).
    max_steps : int, optional
        Cap on ``num_steps`` (``min(num_steps, max_steps)`` steps): lets a caller that sizes the run in
        epochs bound it on large data sets (``bb.evaluate``'s ``vi_ivon``: ``options={"max_steps": ...}``).
    lr : float
        Step size ``α`` (with ``rescale_lr`` multiplied by ``h_0 + δ``, as ``ivon-opt`` does).
    ess : float, optional
        Effective sample size ``λ`` (default ``n``: the Bayesian posterior; ``n/τ``: tempered).
    weight_decay : float, optional
        ``δ`` for every weight (default: the net's prior precision / ``n``).
    hess_init : float
        ``h_0``: sets the initial ``σ² = 1/(ess (h_0 + δ))``.
    beta1, beta2 : float
        Momentum and curvature averaging.
    num_mc : int
        Draws per step (1 is the paper's recipe).
    batch_size : int, optional
        Minibatch size (``None``: full batch); shuffled every epoch.
    clip_radius : float
        Elementwise clip of the preconditioned step (``inf``: none).
    rescale_lr, debias : bool
        ``ivon-opt``'s options (on by default there too).
    schedule : {"cosine", "constant"}
        Step size decay to 0 over ``num_steps`` (cosine) or constant.
    num_restarts : int
        Independent restarts, a batch axis; ``result.best`` has the largest ELBO estimate.
    likelihood : str, optional
        As :func:`blockbayes.nn.resolve_likelihood`.
    learn_noise, noise_rate
        Gaussian: learn ``Δ_y`` (see :func:`step`).
    init : "prior" or sequence of per-layer weights
    seed, device, dtype, progress
        As elsewhere.
    check_every : int, optional
        Check the means, curvatures and noise for non-finite values every this many steps (a
        device sync; ``None``: only the final check).
    checkpoint, checkpoint_every, resume
        Checkpoints of the step loop (:func:`blockbayes.driver.run_kernel`): resuming gives the
        same fit as the uninterrupted run.

    Returns
    -------
    VIResult
        ``method="ivon"``, ``cov_kind="diag"``, ``model="standard"``; ``trace["loss"]`` ``(C, T)``;
        ``elbo`` an estimate ``−n·(tail mean loss) − KL(q‖p)`` per restart.
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    check_pos("lr", lr)
    for nm, b in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= float(b) < 1.0:
            raise ValueError(f"{nm} must lie in [0, 1), got {b!r}")
    check_pos("clip_radius", clip_radius) if math.isfinite(clip_radius) else None
    check_pos("noise_rate", noise_rate, upper=1.0)
    from ._common import check_int

    check_int("num_mc", num_mc)
    opts = dict(lr=lr, beta1=beta1, beta2=beta2, hess_init=hess_init, num_mc=num_mc, clip_radius=clip_radius,
                rescale_lr=rescale_lr, debias=debias, noise_rate=noise_rate)
    return run_loop("ivon", _init, step, net, X, y, num_steps=num_steps, batch_size=batch_size,
                    num_restarts=num_restarts, likelihood=likelihood, learn_noise=learn_noise, ess=ess,
                    weight_decay_value=weight_decay, seed=seed, device=device, dtype=dtype, progress=progress,
                    init=init, hess_init=hess_init, step_options=opts, check_every=check_every,
                    checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume, max_steps=max_steps,
                    config=dict(opts, schedule=schedule, method="ivon"))
