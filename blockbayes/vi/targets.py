"""Local objectives from target representations: Bayesian target propagation (MATH.md §C.7).

In the CAVI row update (C.1) the only information node ``(l, i)`` receives from above is its
target column ``Z̄^{l+1}_{:,i}``: every node solves a Bayesian linear regression of its target on
its inputs. This module makes that a single-pass scheme ("BTP", an iterated-conditional-modes
sweep of the joint (A.0)). Given current weights ``θ`` (the row means, or one draw of ``q``):

1. forward pass ``A^{l+1} = H̃^l W̃^{l⊤}``, ``H^{l+1} = f(A^{l+1})``, ``H^1 = X``;
2. top target ``T^{L+1} = y``;
3. for ``l = L, …, 2``:

   * post-activation target (regularised pseudo-inverse projection of the residual)

     .. math::

        T_X^l = H^l + (T^{l+1} - \\mathbf 1 b^{l⊤} - H^l W^{l⊤}) K_l^⊤,\\qquad
        K_l = Δ_X^l W^{l⊤}(Δ_X^l W^l W^{l⊤} + Δ_Z^{l+1} I)^{-1};

   * pre-activation target ``T^l_{μi} = argmax_z p(z | a = A^l_{μi}, x = T^l_{X,μi})`` of (A.3):
     the better of the two piece modes ``z₊ = max(m₊, 0)`` and ``z₋ = min(m₋, 0)`` (for ReLU
     ``m₋ = a``; for the identity ``T = m₊``);

4. local objective and local posterior of every node (all in parallel, one Cholesky per layer)

   .. math::

      J_{l,i}(\\tilde w) = \\frac{\\lVert T^{l+1}_{:,i} - \\tilde H^l\\tilde w\\rVert^2}{2Δ_Z^{l+1}}
      + \\tfrac12\\tilde w^⊤Λ_l\\tilde w,\\qquad
      q_{l,i} = \\mathcal N\\big(P_l^{-1}\\tilde H^{l⊤}T^{l+1}_{:,i}/Δ_Z^{l+1},\\ P_l^{-1}\\big),\\quad
      P_l = Λ_l + \\tilde H^{l⊤}\\tilde H^l/Δ_Z^{l+1},

and ``θ ←`` the means of ``q``. Assumptions (A1–A4 of §C.7): the ``Δ``'s are given (the noisy
model's own, or target temperatures for a standard network); layers below the current one are
held at their forward values; ReLU targets are conditional *modes*, so a network that fits ``y``
exactly is a fixed point (every target equals its forward value); one top-down pass per iteration,
with no ELBO and no monotonicity claim. For the output layer ``J_{L,i}`` is the exact negative
log conditional posterior; for a linear model (``L = 1``) one iteration gives the exact posterior.
As ``Δ_X/Δ_Z → ∞`` the projection tends to the Moore–Penrose correction
``H + (T − 1b^⊤ − HW^⊤)W^{+⊤}`` (difference target propagation with an exact inverse).

The covariances ``P_l^{-1}`` are conditional ones (inputs held at forward values), like CAVI's:
use them for local uncertainty, not as marginal variances (§C.5).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._backend import backend_name, device_of, namespace
from .._backend import linalg
from .._backend import random as bbr
from ..model import MLP, activate, affine
from ..blocks import augmented_cross, diag_embed
from ..driver import deprecated_names, nonfinite_fields, one_blas_thread, run_kernel
from ..inputs import prepare
from ._common import LOG_2PI, NOISY_VI, check_int, eye, expected_gram, prior_diag
from .result import VIResult

__all__ = ["TargetState", "TargetInfo", "compute_targets", "preactivation_mode", "init", "step", "run"]


class TargetState(NamedTuple):
    """Local posteriors of ``C`` restarts: row means ``(C, d_{l+1}, d_l + 1)`` and shared
    covariances ``(C, d_l + 1, d_l + 1)`` per layer."""

    mean: tuple
    cov: tuple


class TargetInfo(NamedTuple):
    """Per restart ``(C,)``: ``mse`` of the forward output used to build the targets;
    ``objective``: ``Σ_{l,i} J_{l,i}`` at the new means; ``log_joint``: noise-free log posterior
    ``Σ_μ log N(y_μ; F_μ, Δ_y) + log p(W)`` at the new means (the score that picks restarts)."""

    mse: Any
    objective: Any
    log_joint: Any


def _slope(net):
    return {"relu": 0.0, "identity": 1.0}.get(net.activation, net.slope)


def preactivation_mode(a, x, delta_z: float, delta_x: float, slope: float = 0.0):
    """``argmax_z −(z − a)²/(2Δ_Z) − (x − f(z))²/(2Δ_X)`` elementwise, ``f`` two-piece linear with
    negative-side slope ``slope``: the better of ``max(m₊, 0)`` and ``min(m₋, 0)``, with
    ``m_k = (a/Δ_Z + α_k x/Δ_X)/(1/Δ_Z + α_k²/Δ_X)``."""
    xp = namespace(a, x)
    dz, dx, s = float(delta_z), float(delta_x), float(slope)
    zero = xp.zeros((), dtype=a.dtype, device=device_of(a))
    mp = (a / dz + x / dx) / (1.0 / dz + 1.0 / dx)
    mm = (a / dz + s * x / dx) / (1.0 / dz + s * s / dx)
    zp = xp.maximum(mp, zero)
    zm = xp.minimum(mm, zero)
    vp = -(zp - a) ** 2 / (2 * dz) - (x - zp) ** 2 / (2 * dx)
    vm = -(zm - a) ** 2 / (2 * dz) - (x - s * zm) ** 2 / (2 * dx)
    return xp.where(vp >= vm, zp, zm)


def compute_targets(weights, net: MLP, X, y):
    """Forward values and targets of steps 1–3.

    Parameters
    ----------
    weights : sequence of arrays ``(C, d_{l+1}, d_l + 1)``
    X : array, shape (n, d_in)
    y : array, shape (n, d_out)

    Returns
    -------
    H : list
        Forward post-activations ``[X, H^2, …, H^L]`` (``H^l`` of shape ``(C, n, d_l)``).
    A : list
        Forward pre-activations of every layer's output, ``(C, n, d_{l+1})``.
    T : list
        ``T[l]`` is the target of the rows of layer ``l`` (0-based), ``(C, n, d_{l+1})``;
        ``T[L−1] = y``.
    TX : list
        Post-activation targets ``T_X`` of the hidden layers (index ``l − 1`` for layer ``l``).
    """
    xp = namespace(X, y)
    L = net.num_layers
    C = weights[0].shape[0]
    H, A = [X], []
    h = X
    for l, W in enumerate(weights):
        a = affine(h, W)
        A.append(a)
        if l < L - 1:
            h = activate(xp, a, net.activation, net.slope)
            H.append(h)
    T = [None] * L
    TX = [None] * (L - 1)
    T[L - 1] = xp.broadcast_to(y[None, ...], (C,) + tuple(y.shape))
    for l in range(L - 1, 0, -1):
        W = weights[l]
        Ww, b = W[..., :-1], W[..., -1]
        dx = net.delta_x[l - 1]
        dnext = net.delta_y if l == L - 1 else net.delta_z[l]
        resid = T[l] - b[:, None, :] - xp.matmul(H[l], xp.matrix_transpose(Ww))       # (C, n, k)
        k = Ww.shape[-2]
        Mk = dx * xp.matmul(Ww, xp.matrix_transpose(Ww)) + dnext * eye(xp, k, X)
        Kt = dx * linalg.cho_solve(linalg.cholesky(Mk), Ww)                            # K^⊤, (C, k, d)
        tx = H[l] + xp.matmul(resid, Kt)
        TX[l - 1] = tx
        T[l - 1] = preactivation_mode(A[l - 1], tx, net.delta_z[l - 1], dx, _slope(net))
    return H, A, T, TX


def _local_posteriors(net, H, T, X):
    xp = namespace(X)
    n = X.shape[0]
    C = T[0].shape[0]
    means, covs = [], []
    for l in range(net.num_layers):
        delta = net.delta_y if l == net.num_layers - 1 else net.delta_z[l]
        lam = prior_diag(net, l, xp, X)
        Aq = expected_gram(xp, H[l], None, n) + diag_embed(xp, delta * lam)
        k1 = Aq.shape[-1]
        Aq = xp.broadcast_to(Aq, (C, k1, k1))
        R = linalg.cholesky(Aq)
        B = xp.broadcast_to(augmented_cross(xp, H[l], T[l]), (C, k1, T[l].shape[-1]))
        means.append(xp.matrix_transpose(linalg.cho_solve(R, B)))
        I = xp.broadcast_to(eye(xp, k1, X), (C, k1, k1))
        S = delta * linalg.cho_solve(R, I)
        covs.append(0.5 * (S + xp.matrix_transpose(S)))
    return tuple(means), tuple(covs)


def _scores(net, means, H, T, X, y):
    xp = namespace(X)
    n = X.shape[0]
    obj = 0.0
    for l, M in enumerate(means):
        delta = net.delta_y if l == net.num_layers - 1 else net.delta_z[l]
        lam = prior_diag(net, l, xp, X)
        R = T[l] - affine(H[l], M)
        obj = obj + xp.sum(R * R, axis=(-2, -1)) / (2 * delta) + 0.5 * xp.sum(lam * M * M, axis=(-2, -1))
    h = X
    L = net.num_layers
    lj = 0.0
    for l, M in enumerate(means):
        a = affine(h, M)
        lam = prior_diag(net, l, xp, X)
        lj = lj - 0.5 * xp.sum(lam * M * M, axis=(-2, -1)) + 0.5 * M.shape[-2] * (
            xp.sum(xp.log(lam)) - M.shape[-1] * LOG_2PI)
        h = activate(xp, a, net.activation, net.slope) if l < L - 1 else a
    R = y[None, ...] - h
    d = y.shape[-1]
    lj = lj - xp.sum(R * R, axis=(-2, -1)) / (2 * net.delta_y) - 0.5 * n * d * (LOG_2PI + math.log(net.delta_y))
    return obj, lj


def init(rng_key, net: MLP, X, y, *, num_restarts: int = 1, init="prior") -> TargetState:
    """Initial weights: prior draws (``"prior"``) or given per-layer weights; covariances ``Λ^{-1}``."""
    from . import cavi as _cavi

    st = _cavi.init(rng_key, net, X, y, num_restarts=num_restarts, init=init)
    return TargetState(st.mean, st.cov)


def step(state: TargetState, net: MLP, X, y, *, rng_key=None, use: str = "mean") -> tuple[TargetState, TargetInfo]:
    """One BTP iteration (steps 1–4), pure.

    Parameters
    ----------
    state : TargetState
    use : {"mean", "sample"}
        Build the targets from the current row means, or from one draw of ``q`` (needs
        ``rng_key``).
    """
    xp = namespace(X, y)
    if use == "mean":
        weights = state.mean
    elif use == "sample":
        if rng_key is None:
            raise ValueError("use='sample' needs rng_key")
        keys = bbr.split(rng_key, len(state.mean))
        weights = []
        for kk, M, S in zip(keys, state.mean, state.cov):
            E = bbr.normal(kk, tuple(M.shape), like=M)
            weights.append(M + xp.matmul(E, xp.matrix_transpose(linalg.cholesky(S))))
    else:
        raise ValueError(f"use must be 'mean' or 'sample', got {use!r}")
    H, A, T, _ = compute_targets(weights, net, X, y)
    mse = xp.mean((A[-1] - T[-1]) ** 2, axis=(-2, -1))
    means, covs = _local_posteriors(net, H, T, X)
    obj, lj = _scores(net, means, H, T, X, y)
    return TargetState(means, covs), TargetInfo(mse=mse, objective=obj, log_joint=lj)


_init = init  # `run` has an argument called `init`


@deprecated_names(num_iters="num_steps")
@one_blas_thread
def run(net: MLP, X, y, *, num_steps: int = 100, num_restarts: int = 1, use: str = "mean", seed=None,
        device=None, dtype=None, progress: bool = True, init="prior", check_every=None, checkpoint=None,
        checkpoint_every=None, resume=None) -> VIResult:
    """Bayesian target propagation (MATH.md §C.7): iterate targets → local posteriors.

    Parameters
    ----------
    net : MLP
        ``likelihood="gaussian"``; ``Δ_Z, Δ_X`` act as target temperatures.
    X : array, shape (n, d_in)
    y : array, shape (n,) or (n, d_out)
    num_steps : int
        Iterations (deprecated spelling: ``num_iters``).
    num_restarts : int
        Independent restarts (batch axis); ``result.best`` picks the largest final log joint.
    use : {"mean", "sample"}
        See :func:`step`.
    seed, device, dtype, progress, init, check_every, checkpoint, checkpoint_every, resume
        As in :func:`blockbayes.vi.cavi.run`.

    Returns
    -------
    VIResult
        ``method="targets"``, ``cov_kind="shared"`` (the last local posteriors); ``trace``:
        ``"mse"``, ``"objective"``, ``"score"`` (the log joint), each ``(C, num_steps)``.
    """
    check_int("num_steps", num_steps)
    X, y = prepare(net, X, y, device=device, dtype=dtype, task="regression", method=NOISY_VI)
    xp = namespace(X, y)
    k_init, k_run = bbr.split(bbr.key(seed), 2)
    state = _init(k_init, net, X, y, num_restarts=num_restarts, init=init)
    C = state.mean[0].shape[0]
    out = run_kernel(k_run, state, lambda sub, st, t: step(st, net, X, y, rng_key=sub, use=use),
                     num_steps=num_steps,
                     collect=lambda st, info, t: {"mse": info.mse, "objective": info.objective,
                                                  "score": info.log_joint},
                     check=(lambda st, info: nonfinite_fields(xp, st, ("mean", "cov"))) if check_every else None,
                     check_every=check_every, check_what="local posteriors",
                     progress=progress, desc="vi.targets", unit="step", checkpoint=checkpoint,
                     checkpoint_every=checkpoint_every, resume=resume,
                     config=dict(family="vi.targets", widths=list(net.widths), num_restarts=C, use=use,
                                 dtype=str(X.dtype)))
    state = out.state
    for l, (M, S) in enumerate(zip(state.mean, state.cov)):
        if not (bool(xp.all(xp.isfinite(M))) and bool(xp.all(xp.isfinite(S)))):
            raise FloatingPointError(f"target propagation produced non-finite row moments in layer {l + 1}")
    trace = dict(out.traces)
    return VIResult(net=net, method="targets", means=state.mean, covs=state.cov, cov_kind="shared",
                    delta_y=xp.full((C,), net.delta_y, dtype=X.dtype, device=device_of(X)), elbo=None,
                    trace=trace, likelihood="gaussian", model="noisy", final_state=state,
                    config=dict(num_steps=num_steps, num_restarts=C, use=use, backend=backend_name(xp),
                                dtype=str(X.dtype)))
