"""Block coordinate-ascent VI (CAVI) on the noisy MLP (MATH.md §C.1–C.4).

Variational family (C.1), with ``C`` independent restarts as a leading axis::

    q = Π_{l,i} N(w̃_{l,i}; m_{l,i}, S_l) · Π_{l≥2,μ} N(x^l_μ; ξ^l_μ, Σ^l) · Π_{l≥2,μ,i} q(z^l_{μi})

a full Gaussian per node row (covariance shared by the rows of a layer, as CAVI makes it), a full
Gaussian per data point and hidden layer for the post-activations, and the two-piece
truncated-Gaussian factor (C.3) for each pre-activation. Every update is closed form ("Gibbs with
expectations"):

* rows (C.1): ``S_l = (Λ_l + E[G_l]/Δ)^{-1}``, ``m_{l,i} = S_l Ξ̃^{l⊤} Z̄^{l+1}_{:,i}/Δ`` with
  ``E[G_l] = Ξ̃^{l⊤}Ξ̃^l + n (Σ^l ⊕ 0)``;
* post-activations (C.2): ``Σ^l = (I/Δ_X + E[W^⊤W]/Δ')^{-1}``,
  ``ξ^l_μ = Σ^l (E f(z^l_μ)/Δ_X + (M_W^⊤ z̄^{l+1}_μ − E[W^⊤ b])/Δ')``;
* pre-activations (C.3): ``q(z) ∝ exp(−(z − ā)²/(2Δ_Z) − (x̄ − f(z))²/(2Δ_X))`` with
  ``ā = ξ̃^{l−1}_μ · m_{l−1,i}``, ``x̄ = ξ^l_{μi}`` (moments in :func:`~blockbayes.vi.relu_factor`).

One sweep goes from the output to the input: ``W^L, X^L, Z^L, W^{L−1}, …, W^1`` (``L + 2(L−1)``
block updates). Each block update maximises the ELBO (C.4) exactly in its block, so the ELBO never
decreases; :func:`step` can record it after every block (``trace_blocks=True``).

**Read MATH.md §C.5 before using the variances.** Because ``q`` separates the weights from the
auxiliaries, ``S_l`` is the posterior covariance of a row *given* the auxiliaries: it shrinks like
``Δ_Z/n`` however uncertain the weights really are. Use :func:`blockbayes.vi.rao_blackwell.run`
(the default of :func:`blockbayes.vi.run`) for honest variances; CAVI is a fast point estimator
and initialiser.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

from .._backend import backend_name, device_of, namespace
from .._backend import linalg
from .._backend import random as bbr
from ..model import MLP, activate, affine
from ..blocks import augmented_cross, diag_embed
from ..driver import deprecated_names, one_blas_thread, nonfinite_blocks, run_kernel
from ..inputs import prepare
from ._common import (LOG_2PI, NOISY_VI, check_int, check_pos, diagonal, expected_gram, eye, logdet_spd,
                      prior_diag)
from ._factor import FactorMoments, relu_factor
from .result import VIResult

__all__ = ["CAVIState", "CAVIInfo", "init", "step", "elbo", "run", "update_rows", "update_post",
           "update_pre", "factor_moments", "num_blocks"]


class CAVIState(NamedTuple):
    """Variational parameters of ``C`` restarts (all arrays on one device, in the data's dtype).

    Attributes
    ----------
    mean : tuple of arrays
        Row means per layer ``l = 1..L``, shape ``(C, d_{l+1}, d_l + 1)``, bias last.
    cov : tuple of arrays
        Row covariance ``S_l`` shared by the rows of a layer, shape ``(C, d_l + 1, d_l + 1)``.
    post_mean : tuple of arrays
        ``ξ^l`` for the hidden layers ``l = 2..L``, shape ``(C, n, d_l)``.
    post_cov : tuple of arrays
        ``Σ^l`` shared by the data points, shape ``(C, d_l, d_l)``.
    pre_a, pre_x : tuple of arrays
        Parameters ``(ā, x̄)`` of the pre-activation factors, shape ``(C, n, d_l)`` each.
    """

    mean: tuple
    cov: tuple
    post_mean: tuple
    post_cov: tuple
    pre_a: tuple
    pre_x: tuple


class CAVIInfo(NamedTuple):
    """Diagnostics of one sweep.

    Attributes
    ----------
    elbo : array, shape (C,)
        ELBO (C.4) after the sweep.
    block_elbo : array of shape (C, num_blocks) or None
        ELBO after every block update of the sweep (``trace_blocks=True``), in update order.
    """

    elbo: Any
    block_elbo: Any


def num_blocks(net: MLP) -> int:
    """Block updates per sweep: ``L`` row blocks + ``2(L − 1)`` auxiliary blocks."""
    return net.num_layers + 2 * (net.num_layers - 1)


def _slope(net: MLP) -> float:
    return {"relu": 0.0, "identity": 1.0}.get(net.activation, net.slope)


def factor_moments(state: CAVIState, net: MLP, h: int) -> FactorMoments:
    """Moments of the pre-activation factors of hidden layer index ``h`` (``Z^{h+2}``)."""
    return relu_factor(state.pre_a[h], state.pre_x[h], net.delta_z[h], net.delta_x[h], _slope(net))


def _inputs(state, X, l):
    """``(Ξ^l, Σ^l)``: the layer's inputs (the data for ``l = 0``, ``Σ = None``)."""
    if l == 0:
        return X, None
    return state.post_mean[l - 1], state.post_cov[l - 1]


def _targets(state, net, y, l, moments):
    """``(Z̄^{l+1}, Var Z^{l+1} or None, Δ)`` of layer ``l``'s rows."""
    if l == net.num_layers - 1:
        return y, None, net.delta_y
    zm = moments[l]
    return zm.mean, zm.var, net.delta_z[l]


# --------------------------------------------------------------------------- block updates

def update_rows(state: CAVIState, net: MLP, X, y, l: int, moments=None) -> CAVIState:
    """CAVI update (C.1) of all rows of layer ``l`` (0-based; maps layer ``l+1`` to ``l+2``).

    ``S = Δ (ΔΛ + E[G])^{-1}``, ``M̃^⊤ = (ΔΛ + E[G])^{-1} Ξ̃^⊤ Z̄`` by one Cholesky of the scaled
    precision ``ΔΛ + E[G]`` (shape ``(C, d_l + 1, d_l + 1)``) and triangular solves; cost
    ``O(n d_l² + n d_l d_{l+1} + d_l³)``.
    """
    xp = namespace(X)
    moments = moments if moments is not None else {}
    if l < net.num_layers - 1 and l not in moments:
        moments[l] = factor_moments(state, net, l)
    C = state.mean[0].shape[0]
    n = X.shape[0]
    Xi, Sig = _inputs(state, X, l)
    T, _, delta = _targets(state, net, y, l, moments)
    lam = prior_diag(net, l, xp, X)
    A = expected_gram(xp, Xi, Sig, n) + diag_embed(xp, delta * lam)
    k1 = A.shape[-1]
    A = xp.broadcast_to(A, (C, k1, k1))
    R = linalg.cholesky(A)
    B = augmented_cross(xp, Xi, T)
    B = xp.broadcast_to(B, (C,) + tuple(B.shape[-2:]))
    Mt = linalg.cho_solve(R, B)
    I = xp.broadcast_to(eye(xp, k1, X), (C, k1, k1))
    S = delta * linalg.cho_solve(R, I)
    S = 0.5 * (S + xp.matrix_transpose(S))
    mean = list(state.mean)
    cov = list(state.cov)
    mean[l] = xp.matrix_transpose(Mt)
    cov[l] = S
    return state._replace(mean=tuple(mean), cov=tuple(cov))


def update_post(state: CAVIState, net: MLP, X, y, h: int, moments=None) -> CAVIState:
    """CAVI update (C.2) of the post-activations ``X^{h+2}`` (hidden index ``h``).

    With ``(M_W, m_b, S)`` the moments of the rows of the layer above (index ``h + 1``):
    ``E[W^⊤W] = M_W^⊤M_W + d' S^{ww}``, ``E[W^⊤b] = M_W^⊤m_b + d' S^{wb}``; one Cholesky of
    ``Δ_X Σ^{-1} = I + (Δ_X/Δ') E[W^⊤W]`` and solves with ``n`` right-hand sides.
    """
    xp = namespace(X)
    moments = moments if moments is not None else {}
    for j in (h, h + 1):
        if j < net.num_layers - 1 and j not in moments:
            moments[j] = factor_moments(state, net, j)
    l = h + 1
    M, S = state.mean[l], state.cov[l]
    k = M.shape[-2]
    Mw, mb = M[..., :-1], M[..., -1]
    Sww, Swb = S[..., :-1, :-1], S[..., :-1, -1]
    EWW = xp.matmul(xp.matrix_transpose(Mw), Mw) + k * Sww
    EWb = xp.matmul(xp.matrix_transpose(Mw), mb[..., None])[..., 0] + k * Swb      # (C, d)
    T, _, delta_next = _targets(state, net, y, l, moments)
    dx = net.delta_x[h]
    ratio = dx / delta_next
    d = Mw.shape[-1]
    C = M.shape[0]
    Q = eye(xp, d, M) + ratio * EWW
    R = linalg.cholesky(Q)
    rhs = moments[h].f_mean + ratio * (xp.matmul(T, Mw) - EWb[:, None, :])           # (C, n, d)
    xi = xp.matrix_transpose(linalg.cho_solve(R, xp.matrix_transpose(rhs)))
    I = xp.broadcast_to(eye(xp, d, M), (C, d, d))
    Sig = dx * linalg.cho_solve(R, I)
    Sig = 0.5 * (Sig + xp.matrix_transpose(Sig))
    pm, pc = list(state.post_mean), list(state.post_cov)
    pm[h], pc[h] = xi, Sig
    return state._replace(post_mean=tuple(pm), post_cov=tuple(pc))


def update_pre(state: CAVIState, net: MLP, X, y, h: int, moments=None) -> CAVIState:
    """CAVI update (C.3) of the pre-activation factors of hidden index ``h``:
    ``ā = ξ̃^{below} m^⊤`` (rows of layer ``h``), ``x̄ = ξ^{h+2}``. Cost ``O(n d_{h} d_{h+1})``."""
    Xi, _ = _inputs(state, X, h)
    a = affine(Xi, state.mean[h])
    pa, px = list(state.pre_a), list(state.pre_x)
    pa[h], px[h] = a, state.post_mean[h]
    new = state._replace(pre_a=tuple(pa), pre_x=tuple(px))
    if moments is not None:
        moments[h] = factor_moments(new, net, h)
    return new


# --------------------------------------------------------------------------- ELBO

def elbo(state: CAVIState, net: MLP, X, y, moments=None):
    """Closed-form ELBO (MATH.md (C.4)) of every restart, shape ``(C,)``.

    .. math::

        \\mathcal L = \\sum_l d_{l+1}\\big[\\tfrac12\\log|Λ_lS_l| + \\tfrac{d_l+1}2\\big]
        - \\tfrac12\\sum_{l,i}(m_{l,i}^⊤Λ_lm_{l,i} + \\operatorname{tr}Λ_lS_l)
        - \\sum_l\\Big[\\tfrac{nd_{l+1}}2\\log 2πΔ_Z^{l+1} + \\frac{R_Z^{l+1}}{2Δ_Z^{l+1}}\\Big]
        - \\sum_{l≥2}\\Big[\\tfrac{nd_l}2\\log 2πΔ_X^l + \\frac{R_X^l}{2Δ_X^l}\\Big]
        + \\sum_{l≥2}\\tfrac n2\\log|2πeΣ^l| + \\sum_{l≥2,μ,i} H[q(z^l_{μi})]

    with the expected squared residuals written without cancelling terms:
    ``R_Z = ‖Z̄ − Ξ̃M̃^⊤‖² + Σ Var z + n tr(Σ M_W^⊤M_W) + d_{l+1} tr(E[G] S)`` and
    ``R_X = ‖ξ − E f(z)‖² + n tr Σ + Σ Var f(z)`` (for ``l = L``, ``Z̄ = y`` and ``Var z = 0``).
    """
    xp = namespace(X)
    L = net.num_layers
    n = X.shape[0]
    moments = {} if moments is None else moments
    for h in range(L - 1):
        if h not in moments:
            moments[h] = factor_moments(state, net, h)
    total = 0.0
    for l in range(L):
        M, S = state.mean[l], state.cov[l]
        k, k1 = M.shape[-2], M.shape[-1]
        lam = prior_diag(net, l, xp, X)
        logdet_S = logdet_spd(S)
        kl = k * (0.5 * (xp.sum(xp.log(lam)) + logdet_S) + 0.5 * k1) \
            - 0.5 * (xp.sum(lam * M * M, axis=(-2, -1)) + k * xp.sum(lam * diagonal(xp, S), axis=-1))
        Xi, Sig = _inputs(state, X, l)
        T, varT, delta = _targets(state, net, y, l, moments)
        pred = affine(Xi, M)
        Rz = xp.sum((T - pred) ** 2, axis=(-2, -1))
        if varT is not None:
            Rz = Rz + xp.sum(varT, axis=(-2, -1))
        EG = expected_gram(xp, Xi, Sig, n)
        Rz = Rz + k * xp.sum(EG * S, axis=(-2, -1))
        if Sig is not None:
            Mw = M[..., :-1]
            Rz = Rz + n * xp.sum(Sig * xp.matmul(xp.matrix_transpose(Mw), Mw), axis=(-2, -1))
        total = total + kl - 0.5 * n * k * (LOG_2PI + math.log(delta)) - Rz / (2.0 * delta)
        if l < L - 1:
            zm = moments[l]
            xi, Sg = state.post_mean[l], state.post_cov[l]
            d = xi.shape[-1]
            dx = net.delta_x[l]
            Rx = (xp.sum((xi - zm.f_mean) ** 2, axis=(-2, -1)) + n * xp.sum(diagonal(xp, Sg), axis=-1)
                  + xp.sum(zm.f_var, axis=(-2, -1)))
            total = total - 0.5 * n * d * (LOG_2PI + math.log(dx)) - Rx / (2.0 * dx)
            total = total + 0.5 * n * (d * (LOG_2PI + 1.0) + logdet_spd(Sg)) + xp.sum(zm.entropy, axis=(-2, -1))
    return total


# --------------------------------------------------------------------------- init / step

def init(rng_key, net: MLP, X, y, *, num_restarts: int = 1, init="prior") -> CAVIState:
    """Initial variational parameters of ``num_restarts`` restarts.

    Parameters
    ----------
    rng_key : key
    net : MLP
    X : array, shape (n, d_in)
    y : array, shape (n, d_out)
    num_restarts : int
    init : {"prior"}, sequence of arrays, or CAVIState
        ``"prior"``: row means drawn from the prior (one draw per restart), ``S_l = Λ_l^{-1}``.
        A sequence of per-layer weights ``(d_out, d_in + 1)`` or ``(C, d_out, d_in + 1)``: those
        means. A :class:`CAVIState` is returned as is (continue a run). The auxiliaries start at
        the noise-free forward pass of the means: ``ā = X̃ M̃^⊤``, ``ξ = x̄ = f(ā)``,
        ``Σ = Δ_X I``.
    """
    if isinstance(init, CAVIState):
        return init
    xp = namespace(X, y)
    check_int("num_restarts", num_restarts)
    C, L = num_restarts, net.num_layers
    if isinstance(init, str):
        if init != "prior":
            raise ValueError(f"init must be 'prior', a sequence of weights or a CAVIState; got {init!r}")
        keys = bbr.split(rng_key, L)
        means = []
        for l, s in enumerate(net.weight_shapes()):
            lam = prior_diag(net, l, xp, X)
            means.append(bbr.normal(keys[l], (C,) + s, like=X) / xp.sqrt(lam))
        means = tuple(means)
    else:
        from ..model import chain_weights

        means = chain_weights(net, init, C, X)
    covs = []
    for l in range(L):
        lam = prior_diag(net, l, xp, X)
        covs.append(xp.broadcast_to(diag_embed(xp, 1.0 / lam), (C, lam.shape[0], lam.shape[0])))
    pre_a, post_m, post_c = [], [], []
    H = X
    for h in range(L - 1):
        a = affine(H, means[h])
        if a.ndim == 2:
            a = xp.broadcast_to(a, (C,) + tuple(a.shape))
        H = activate(xp, a, net.activation, net.slope)
        d = a.shape[-1]
        pre_a.append(a)
        post_m.append(H)
        post_c.append(xp.broadcast_to(net.delta_x[h] * eye(xp, d, X), (C, d, d)))
    return CAVIState(means, tuple(covs), tuple(post_m), tuple(post_c), tuple(pre_a), tuple(post_m))


def step(state: CAVIState, net: MLP, X, y, *, trace_blocks: bool = False) -> tuple[CAVIState, CAVIInfo]:
    """One CAVI sweep, output → input (pure: returns a new state; deterministic, no key).

    Order: for ``l = L..1``: rows of layer ``l`` (C.1); for hidden ``l``: ``X^l`` (C.2), then
    ``Z^l`` (C.3).

    Parameters
    ----------
    state : CAVIState
    net : MLP
    X : array, shape (n, d_in)
    y : array, shape (n, d_out)
    trace_blocks : bool
        Also return the ELBO after every block update (``info.block_elbo``, shape
        ``(C, num_blocks(net))``); costs one ELBO evaluation per block.

    Returns
    -------
    (CAVIState, CAVIInfo)
    """
    xp = namespace(X, y)
    L = net.num_layers
    moments: dict = {}
    trace = []
    for l in range(L - 1, -1, -1):
        state = update_rows(state, net, X, y, l, moments)
        if trace_blocks:
            trace.append(elbo(state, net, X, y, moments))
        if l >= 1:
            h = l - 1
            state = update_post(state, net, X, y, h, moments)
            if trace_blocks:
                trace.append(elbo(state, net, X, y, moments))
            state = update_pre(state, net, X, y, h, moments)
            if trace_blocks:
                trace.append(elbo(state, net, X, y, moments))
    value = trace[-1] if trace_blocks else elbo(state, net, X, y, moments)
    block = xp.stack(trace, axis=-1) if trace_blocks else None
    return state, CAVIInfo(elbo=value, block_elbo=block)


_init = init  # `run` has an argument called `init`


# --------------------------------------------------------------------------- run

@deprecated_names(num_iters="num_steps")
@one_blas_thread
def run(net: MLP, X, y, *, num_steps: int = 200, num_restarts: int = 1, tol: Optional[float] = None,
        seed=None, device=None, dtype=None, progress: bool = True, init="prior", check_every=None,
        checkpoint=None, checkpoint_every=None, resume=None) -> VIResult:
    """Block CAVI on the noisy MLP (Gaussian regression).

    Parameters
    ----------
    net : MLP
        ``likelihood="gaussian"``; any activation of :class:`~blockbayes.MLP`.
    X : array, shape (n, d_in)
    y : array, shape (n,) or (n, d_out)
    num_steps : int
        Maximum number of sweeps (deprecated spelling: ``num_iters``).
    num_restarts : int
        Independent restarts from different prior draws (a leading batch axis).
    tol : float, optional
        Stop when every restart's ELBO changed by less than ``tol · (1 + |ELBO|)`` in a sweep
        (a host sync per sweep). ``None``: run all sweeps.
    seed : None, int, SeedSequence or key
        Only the initialisation is random.
    device : None, "cpu", "cuda" or "cuda:N"
    dtype : None, "float32" or "float64"
    progress : bool
        tqdm progress bar over sweeps.
    init : see :func:`init`
    check_every : int, optional
        Check the row moments for non-finite values every this many sweeps (a device sync);
        ``None``: after the last sweep only.
    checkpoint, checkpoint_every, resume
        Checkpoints of the sweep loop (:func:`blockbayes.driver.run_kernel`).

    Returns
    -------
    VIResult
        ``method="cavi"``, ``cov_kind="shared"``, one component per restart, ``elbo`` (final, per
        restart) and ``trace["elbo"]`` of shape ``(num_restarts, num_sweeps)``; ``final_state``
        is the :class:`CAVIState`. The variances are *conditional* ones (MATH.md §C.5).
    """
    check_int("num_steps", num_steps)
    if tol is not None:
        check_pos("tol", tol)
    X, y = prepare(net, X, y, device=device, dtype=dtype, task="regression", method=NOISY_VI)
    xp = namespace(X, y)
    state = _init(bbr.key(seed), net, X, y, num_restarts=num_restarts, init=init)
    C = state.mean[0].shape[0]

    def stop(t, st, info, traces):
        if tol is None or t == 0:
            return False
        e, prev = info.elbo, traces["elbo"][:, t - 1]
        return bool(xp.all(xp.abs(e - prev) <= tol * (1.0 + xp.abs(e))))

    out = run_kernel(None, state, lambda _, st, t: step(st, net, X, y), num_steps=num_steps,
                     collect=lambda st, info, t: {"elbo": info.elbo}, stop=stop,
                     check=(lambda st, info: _nonfinite(xp, st)) if check_every is not None else None,
                     check_every=check_every, check_what="CAVI row moments", progress=progress,
                     desc="vi.cavi", unit="sweep", postfix=lambda st, info: {"elbo": f"{float(xp.max(info.elbo)):.4g}"},
                     checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                     config=dict(family="vi.cavi", widths=list(net.widths), num_restarts=C, tol=tol,
                                 dtype=str(X.dtype)))
    state = out.state
    _check_finite(xp, state)
    tr = out.traces["elbo"]
    dy = xp.full((C,), net.delta_y, dtype=X.dtype, device=device_of(X))
    cfg = dict(num_steps=num_steps, sweeps=out.num_kept, num_restarts=C, tol=tol,
               backend=backend_name(xp), dtype=str(X.dtype))
    if out.interrupted:
        cfg["interrupted"] = True
    return VIResult(net=net, method="cavi", means=state.mean, covs=state.cov, cov_kind="shared", delta_y=dy,
                    elbo=tr[:, -1], trace={"elbo": tr}, likelihood="gaussian", model="noisy", final_state=state,
                    config=cfg)


def _nonfinite(xp, state):
    return nonfinite_blocks(xp, {**{f"row means of layer {l + 1}": M for l, M in enumerate(state.mean)},
                                 **{f"row covariance of layer {l + 1}": S for l, S in enumerate(state.cov)}})


def _check_finite(xp, state):
    for l, (M, S) in enumerate(zip(state.mean, state.cov)):
        if not (bool(xp.all(xp.isfinite(M))) and bool(xp.all(xp.isfinite(S)))):
            raise FloatingPointError(f"CAVI produced non-finite row moments in layer {l + 1}; check the data "
                                     "scale and the Δ/prior settings (e.g. Δ too small for float32)")
