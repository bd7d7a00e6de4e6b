"""VOGN: Variational Online Gauss–Newton (Khan et al. 2018; Osawa et al. 2019) on the standard MLP.

The same mean-field family as :mod:`.ivon` — ``σ_j² = 1/(λ (s_j + δ_j))``, ``λ = ess`` — but the
curvature is a Gauss–Newton diagonal computed in closed form per layer at the sampled weights
(:func:`blockbayes.nn.backward`) instead of IVON's reparameterisation estimate:

.. math::

    θ &= m + σ ⊙ ε,\\qquad
    \\hat g = \\frac1{|B|}\\sum_{μ∈B} ∇ℓ_μ(θ),\\qquad
    \\hat h = \\frac1{|B|}\\sum_{μ∈B}\\operatorname{diag}\\big(J_μ^\\top ∇^2_F ℓ_μ J_μ\\big)
      \\ (\\texttt{"ggn"})\\ \\text{ or }\\ \\frac1{|B|}\\sum_{μ∈B} (∇ℓ_μ)^2\\ (\\texttt{"ef"}),\\\\
    u &← β_1 u + (1 - β_1)(\\hat g + δ ⊙ m),\\qquad
    s ← β_2 s + (1 - β_2)\\hat h,\\qquad
    m ← m - α_t \\frac{u/(1 - β_1^t)}{s + δ}.

``"ef"`` is Osawa et al.'s per-example squared gradients (their "Gauss–Newton" approximation);
``"ggn"`` (default) is the Gauss–Newton diagonal itself, whose fixed point on a linear-Gaussian
model is the mean-field optimum ``σ_j² = 1/P_jj`` (``P`` the exact posterior precision) —
the "ef" fixed point depends on the residuals instead. Both are ``O(|B| P)`` per draw for
one-output regression (``"ggn"``: ``O(|B| C P)`` for ``C`` softmax classes).

Data-size scaling and tempering as in Osawa et al.: ``ĝ`` and ``ĥ`` are per-example averages, the
precision is ``ess · (s + δ)`` with ``ess = N`` (the posterior) or ``N/τ`` (tempered by ``τ``), and
``δ`` is the prior precision divided by ``N``. Restarts are a leading batch axis.
"""
from __future__ import annotations

from typing import Optional

from .._backend import namespace
from ..model import MLP
from ._common import check_int, check_pos
from ..driver import one_blas_thread
from ._natural import NGInfo, NGState, init_state, noise_update, run_loop, sample_gradients
from .result import VIResult

__all__ = ["VOGNState", "VOGNInfo", "init", "step", "run"]

VOGNState = NGState
VOGNInfo = NGInfo
CURVATURES = ("ggn", "ef")


def init(rng_key, net: MLP, X, *, num_restarts: int = 1, init="prior", hess_init: float = 1.0,
         delta_y: Optional[float] = None) -> NGState:
    """Initial state: means a prior draw (or given weights), ``s = hess_init``, zero momentum."""
    return init_state(rng_key, net, X, num_restarts=num_restarts, init=init, hess_init=hess_init, delta_y=delta_y)


def step(key, state: NGState, net: MLP, X, Y, *, likelihood: str, lr: float, ess: float, weight_decay: tuple,
         beta1: float = 0.9, beta2: float = 0.999, num_mc: int = 1, curvature: str = "ggn",
         learn_noise: bool = False, noise_rate: float = 0.01, eps: Optional[tuple] = None,
         xp=None, layout=None) -> tuple[NGState, NGInfo]:
    """One VOGN step on a minibatch (pure); parameters as :func:`blockbayes.vi.ivon.step` (``eps``: the
    step's standard normals, or ``None`` to draw them from ``key``; ``xp``: the namespace if known;
    ``layout``: flat blocks, as there), plus
    ``curvature`` (``"ggn"`` or ``"ef"``)."""
    if curvature not in CURVATURES:
        raise ValueError(f"curvature must be one of {CURVATURES}, got {curvature!r}")
    if xp is None:
        xp = namespace(X)
    t = state.t + 1
    sd = tuple(1.0 / xp.sqrt(ess * (s + d)) for s, d in zip(state.hess, weight_decay))
    g, _, curv, loss, F = sample_gradients(key, state, net, X, Y, likelihood=likelihood, sd=sd, num_mc=num_mc,
                                           curvature=curvature, eps=eps, xp=xp, layout=layout)
    new_m, new_s, new_u = [], [], []
    deb = 1.0 - beta1 ** t
    for M, s, u, gl, cl, d in zip(state.mean, state.hess, state.momentum, g, curv, weight_decay):
        gbar, cbar = (gl[0, ...], cl[0, ...]) if num_mc == 1 else (xp.mean(gl, axis=0), xp.mean(cl, axis=0))
        u = beta1 * u + (1.0 - beta1) * (gbar + d * M)
        s = beta2 * s + (1.0 - beta2) * cbar
        new_m.append(M - lr * (u / deb) / (s + d))
        new_s.append(s)
        new_u.append(u)
    dy = noise_update(xp, state, F, Y, noise_rate) if learn_noise else state.delta_y
    return (NGState(tuple(new_m), tuple(new_s), tuple(new_u), dy, t),
            NGInfo(loss=loss[0, ...] if num_mc == 1 else xp.mean(loss, axis=0), lr=lr))


_init = init  # `run` has an argument called `init`


@one_blas_thread
def run(net: MLP, X, y, *, num_steps: int = 2000, max_steps: Optional[int] = None, lr: float = 1e-3, ess: Optional[float] = None,
        weight_decay: Optional[float] = None, hess_init: float = 1.0, beta1: float = 0.9, beta2: float = 0.999,
        num_mc: int = 1, batch_size: Optional[int] = None, curvature: str = "ggn", schedule: str = "cosine",
        num_restarts: int = 1, likelihood: Optional[str] = None, learn_noise: bool = False,
        noise_rate: float = 0.01, init="prior", seed=None, device=None, dtype=None,
        progress: bool = True, check_every: Optional[int] = None, checkpoint=None,
        checkpoint_every: Optional[int] = None, resume=None) -> VIResult:
    """Fit a mean-field Gaussian to the standard MLP's posterior with VOGN.

    Parameters as :func:`blockbayes.vi.ivon.run` (``hess_init`` is ``s_0``), plus

    curvature : {"ggn", "ef"}
        Gauss–Newton diagonal (default) or squared per-example gradients (Osawa et al.).

    ``lr`` is the step on the natural-gradient direction ``u/(s + δ)`` (no ``h_0`` rescaling).

    Returns
    -------
    VIResult
        ``method="vogn"``, ``cov_kind="diag"``, ``model="standard"``.
    """
    if schedule not in ("cosine", "constant"):
        raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
    if curvature not in CURVATURES:
        raise ValueError(f"curvature must be one of {CURVATURES}, got {curvature!r}")
    check_pos("lr", lr)
    for nm, b in (("beta1", beta1), ("beta2", beta2)):
        if not 0.0 <= float(b) < 1.0:
            raise ValueError(f"{nm} must lie in [0, 1), got {b!r}")
    check_pos("noise_rate", noise_rate, upper=1.0)
    check_int("num_mc", num_mc)
    opts = dict(lr=lr, beta1=beta1, beta2=beta2, num_mc=num_mc, curvature=curvature, noise_rate=noise_rate)
    return run_loop("vogn", _init, step, net, X, y, num_steps=num_steps, batch_size=batch_size,
                    num_restarts=num_restarts, likelihood=likelihood, learn_noise=learn_noise, ess=ess,
                    weight_decay_value=weight_decay, seed=seed, device=device, dtype=dtype, progress=progress,
                    init=init, hess_init=hess_init, step_options=opts, check_every=check_every,
                    checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume, max_steps=max_steps,
                    config=dict(opts, schedule=schedule, method="vogn"))
