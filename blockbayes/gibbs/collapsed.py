"""Partially collapsed node-row move (issue 15 item 1, second candidate; van Dyk & Park 2008).

Why: in the centred sweep a hidden node row ``w̃ = w̃_{l,i}`` (the weights and bias into unit ``i``
of hidden layer ``l + 1``) is drawn given its pre-activations ``z_μ = Z^{l+1}_{μi}``, which pin it
with precision ``G/Δ_Z`` (MATH.md A.1); ``z`` is in turn pinned to the row within ``√Δ_Z``. This
move integrates the pre-activation column out of the row's conditional. Per datum (MATH.md §E.2,
one unit; ``a = x̃_μ·w̃``, ``x = X^{l+1}_{μi}``, ``f`` piecewise linear with slope ``α`` below 0 and 1
above: ReLU ``α = 0``, leaky ReLU, the identity)

    p(x | a) = ∫ N(z; a, Δ_Z) N(x; f(z), Δ_X) dz
             = N(x; αa, S₋) Φ(−√τ₋ m₋) + N(x; a, S₊) Φ(√τ₊ m₊),

    S₋ = Δ_X + α²Δ_Z,  τ₋ = 1/Δ_Z + α²/Δ_X,  m₋ = (a/Δ_Z + αx/Δ_X)/τ₋,
    S₊ = Δ_X + Δ_Z,    τ₊ = 1/Δ_Z + 1/Δ_X,   m₊ = (a/Δ_Z + x/Δ_X)/τ₊

(ReLU: the first term is ``N(x; 0, Δ_X) Φ(−a/√Δ_Z)``; identity: ``N(x; a, S₊)``). Given the layer's
inputs ``X̃^l`` and outputs ``X^{l+1}``, the rows of ``W^l`` are then independent with

    π(w̃_i) ∝ N(w̃_i; 0, Λ_l^{-1}) ∏_μ p(X^{l+1}_{μi} | x̃_μ·w̃_i)

and the move is a *blocked* Gibbs update of ``(W^l, Z^{l+1})``: random-walk Metropolis on each row
for ``π`` (``Z^{l+1}`` integrated out), then ``Z^{l+1}`` drawn from its full conditional (A.3) given
the new rows. If ``(W, Z) ~ p(W, Z | rest)`` before, ``W`` keeps its marginal ``π`` under the MH
kernel and the fresh ``Z`` restores the joint, so the posterior is invariant; the old ``Z`` is not
used (the order "reduced conditional, then the removed variable" is what keeps a partially
collapsed sampler exact). This loosens the pin from ``Δ_Z`` to ``Δ_Z + Δ_X`` on the points where the
unit is active and frees the row where it is off (there only ``a < 0`` matters).

Proposal: ``w̃' = w̃ + h R^{-⊤} e``, ``e ~ N(0, I)``, ``R R^⊤ = P = Λ_l + X̃^{l⊤} X̃^l / (Δ_Z + Δ_X)`` —
the row precision with every point active, computed from ``X̃^l`` (which this move does not change),
so the proposal is symmetric and ``log α = log π(w̃') − log π(w̃)``. ``h`` per chain and layer adapts
towards ``target_accept`` in warm-up (Robbins–Monro on ``log h``) and is frozen after it.

Cost per proposal: ``O(n d_l d_{l+1})`` for ``X̃^l W'^⊤`` and ``O(n d_{l+1})`` log-normal-CDF
evaluations — about one centred row update; plus one ``(d_l + 1)²`` Gram and Cholesky per call.
Output rows (``l = L − 1``) have no pre-activation to integrate and are never moved.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

from .._backend import device_of, namespace
from .._backend import linalg
from .._backend import random as bbr
from .._backend.host import np as _np     # only for np.errstate: a far proposal may overflow
from .._backend.special import log_ndtr
from ..blocks import prior_diag
from ..model import MLP, affine
from .conditionals import sample_pre
from .kernel import GibbsState
from .moves import accumulate_accept, hidden_row_layers, mean_accept

__all__ = ["CollapsedRowMove", "CollapsedState", "collapsed_log_lik", "collapsed_row_log_target",
           "collapsed_rows", "COLLAPSIBLE"]

#: activations with a closed-form collapsed density (two linear pieces split at 0, or one)
COLLAPSIBLE = ("relu", "leaky_relu", "identity")

_LOG_2PI = math.log(2.0 * math.pi)


class CollapsedState(NamedTuple):
    """Per-layer kernel parameters and bookkeeping of the collapsed row move (``C`` chains).

    Attributes
    ----------
    layers : tuple of int
        Weight indices ``l`` (input weights of hidden layer ``l + 1``) that are moved.
    sweeps : int
        Calls so far.
    log_step : tuple of arrays
        Per layer, ``log h``, shape ``(C,)`` (adapted in warm-up only).
    accept : tuple of arrays
        Per layer, the acceptance rate of the last call (over rows and proposals), ``(C,)``.
    accept_sum : tuple of arrays
        Per layer, the sum of ``accept`` over the calls after warm-up, ``(C,)``.
    sampled : int
        Calls after warm-up.
    """

    layers: tuple
    sweeps: int
    log_step: tuple
    accept: tuple
    accept_sum: tuple = ()
    sampled: int = 0


def collapsed_log_lik(A, Xpost, delta_z: float, delta_x: float, activation: str, slope: float = 0.0):
    """``log p(x | a) = log ∫ N(z; a, Δ_Z) N(x; f(z), Δ_X) dz`` elementwise (module docstring).

    Parameters
    ----------
    A : array, any shape
        ``a = x̃·w̃``, the noise-free pre-activations.
    Xpost : array, same shape
        The post-activations ``x``.
    delta_z, delta_x : float
    activation : {"relu", "leaky_relu", "identity"}
    slope : float
        Slope below 0 for ``"leaky_relu"`` (ignored otherwise).
    """
    xp = namespace(A, Xpost)
    dz, dx = float(delta_z), float(delta_x)
    s_pos = dx + dz
    pos = -0.5 * (_LOG_2PI + math.log(s_pos)) - (Xpost - A) ** 2 / (2.0 * s_pos)
    if activation == "identity":
        return pos
    if activation not in COLLAPSIBLE:
        raise ValueError(f"no collapsed density for activation {activation!r}; supported: {COLLAPSIBLE}")
    al = float(slope) if activation == "leaky_relu" else 0.0
    tau_pos = 1.0 / dz + 1.0 / dx
    pos = pos + log_ndtr((A / dz + Xpost / dx) / math.sqrt(tau_pos))
    s_neg = dx + al * al * dz
    tau_neg = 1.0 / dz + al * al / dx
    neg = (-0.5 * (_LOG_2PI + math.log(s_neg)) - (Xpost - al * A) ** 2 / (2.0 * s_neg)
           + log_ndtr(-(A / dz + al * Xpost / dx) / math.sqrt(tau_neg)))
    return xp.logaddexp(neg, pos)


def collapsed_row_log_target(W, H, Xpost, lam_row, delta_z, delta_x, activation, slope=0.0):
    """``log π`` of every row of ``W`` (up to a constant), shape ``(C, d_{l+1})``.

    ``W`` ``(C, K, d+1)`` (bias last), ``H`` the layer's inputs ``(n, d)`` or ``(C, n, d)``, ``Xpost``
    its outputs ``(C, n, K)``, ``lam_row`` the prior precisions ``(C, d+1)``:
    ``−½ Σ_j λ_j w_j² + Σ_μ log p(x_μ | x̃_μ·w̃)``.
    """
    xp = namespace(W)
    ll = xp.sum(collapsed_log_lik(affine(H, W, xp), Xpost, delta_z, delta_x, activation, slope), axis=-2)
    return ll - 0.5 * xp.sum(lam_row[:, None, :] * W * W, axis=-1)


def _row_precision_factor(xp, H, lam_row, s):
    """Lower Cholesky factor of ``Λ + X̃ᵀX̃ / s`` per chain, ``(C, d+1, d+1)``."""
    C = lam_row.shape[0]
    ones = xp.ones(H.shape[:-1] + (1,), dtype=H.dtype, device=device_of(H))
    Ht = xp.concat([H, ones], axis=-1)
    G = xp.matmul(xp.matrix_transpose(Ht), Ht)
    if G.ndim == 2:
        G = xp.broadcast_to(G[None, ...], (C,) + tuple(G.shape))
    k = lam_row.shape[-1]
    eye = xp.eye(k, dtype=H.dtype, device=device_of(H))
    return linalg.cholesky(G / s + lam_row[:, :, None] * eye)


def collapsed_rows(key, state: GibbsState, net: MLP, X, l: int, proposals: int, step):
    """``proposals`` random-walk MH steps on every row of ``W^l`` with ``Z^{l+1}`` integrated out,
    then ``Z^{l+1}`` from its full conditional (A.3). ``step``: ``h`` per chain, ``(C,)``.

    Returns ``(state, rate)``: the new state (``W^l`` and ``Z^{l+1}`` changed, nothing else) and the
    acceptance rate per chain over rows and proposals, ``(C,)``.
    """
    xp = namespace(X)
    C = state.delta_y.shape[0]
    d, K = net.widths[l], net.widths[l + 1]
    dz, dx = float(net.delta_z[l]), float(net.delta_x[l])
    act, slope = net.activation, net.slope
    H = X if l == 0 else state.post[l - 1]
    Xp = state.post[l]
    lam_row = prior_diag(xp, state.lam_w[:, l], state.lam_b[:, l], d)
    R = _row_precision_factor(xp, H, lam_row, dz + dx)
    W = state.weights[l]
    lt = collapsed_row_log_target(W, H, Xp, lam_row, dz, dx, act, slope)
    keys = bbr.split(key, 3)
    E = bbr.normal(keys[0], (proposals, C, d + 1, K), like=X)
    U = bbr.uniform(keys[1], (proposals, C, K), like=X)
    acc = xp.zeros((C, K), dtype=X.dtype, device=device_of(X))
    h = step[:, None, None]
    with _np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for r in range(proposals):
            D = linalg.solve_triangular(R, E[r], lower=True, trans=True)        # R^{-T} e, (C, d+1, K)
            Wp = W + h * xp.matrix_transpose(D)
            ltp = collapsed_row_log_target(Wp, H, Xp, lam_row, dz, dx, act, slope)
            ok = (xp.log(U[r]) < ltp - lt) & xp.isfinite(ltp)
            W = xp.where(ok[..., None], Wp, W)
            lt = xp.where(ok, ltp, lt)
            acc = acc + xp.astype(ok, X.dtype)
    Z = sample_pre(keys[2], affine(H, W, xp), Xp, dz, dx, act, slope)
    Ws, pre = list(state.weights), list(state.pre)
    Ws[l], pre[l] = W, Z
    return state._replace(weights=tuple(Ws), pre=tuple(pre)), xp.mean(acc, axis=-1) / proposals


class CollapsedRowMove(NamedTuple):
    """Configuration of the partially collapsed node-row move (pass as ``gibbs.run(..., moves=...)``).

    Attributes
    ----------
    proposals : int
        Random-walk proposals per row and call (each with its own accept).
    layers : tuple of int or None
        Weight layers ``l < L − 1`` whose rows are moved (input weights of hidden layer ``l + 1``);
        ``None``: every hidden layer.
    target_accept : float
        Acceptance the step ``h`` adapts towards in warm-up.
    init_step : float
        Initial ``h`` relative to ``2.38/√(d_l + 1)`` (the random-walk scale for a Gaussian target
        whose precision is the proposal's ``P``).
    """

    proposals: int = 4
    layers: Optional[tuple] = None
    target_accept: float = 0.3
    init_step: float = 1.0

    def chosen_layers(self, net: MLP) -> tuple:
        return hidden_row_layers(net, self.layers, move="the collapsed row move")

    def validate(self, net: MLP = None):
        """Raise ``ValueError`` for a bad setting (or one ``net`` cannot use)."""
        p = self.proposals
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ValueError(f"proposals must be an int >= 1, got {p!r}")
        if not 0.0 < float(self.target_accept) < 1.0:
            raise ValueError(f"target_accept must be in (0, 1), got {self.target_accept!r}")
        v = self.init_step
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0.0):
            raise ValueError(f"init_step must be a positive float, got {v!r}")
        if net is not None:
            if net.activation not in COLLAPSIBLE:
                raise ValueError(f"the collapsed row move needs activation in {COLLAPSIBLE} (a closed-form "
                                 f"collapsed density), got {net.activation!r}")
            self.chosen_layers(net)

    def init(self, state: GibbsState, net: MLP, X, y, *, num_warmup=None) -> CollapsedState:
        """Initial ``h = init_step · 2.38/√(d_l + 1)`` per chain and layer (``num_warmup`` unused)."""
        self.validate(net)
        xp = namespace(X)
        C = state.delta_y.shape[0]
        layers = self.chosen_layers(net)
        full = lambda v: xp.full((C,), v, dtype=X.dtype, device=device_of(X))
        log_step = tuple(full(math.log(float(self.init_step) * 2.38 / math.sqrt(net.widths[l] + 1))) for l in layers)
        return CollapsedState(layers, 0, log_step, tuple(full(0.0) for _ in layers), (), 0)

    def step(self, key, mstate: CollapsedState, state: GibbsState, net: MLP, X, y, *, warmup: bool = False,
             final_warmup: bool = False):
        """One call: every chosen layer's rows, in order; returns ``(state, mstate)``.

        In warm-up ``log h ← log h + (accept − target_accept)/√(t + 1)`` (``t`` = calls so far);
        afterwards ``h`` is fixed.
        """
        xp = namespace(X)
        keys = bbr.split(key, max(1, len(mstate.layers)))
        log_step, acc = list(mstate.log_step), list(mstate.accept)
        rate = 1.0 / math.sqrt(mstate.sweeps + 1.0)
        for j, l in enumerate(mstate.layers):
            state, acc[j] = collapsed_rows(keys[j], state, net, X, l, self.proposals, xp.exp(log_step[j]))
            if warmup:
                log_step[j] = log_step[j] + rate * (acc[j] - float(self.target_accept))
        acc_sum, sampled = accumulate_accept(mstate.accept_sum, mstate.sampled, acc, warmup)
        return state, CollapsedState(mstate.layers, mstate.sweeps + 1, tuple(log_step), tuple(acc), acc_sum,
                                     sampled)

    def summary(self, mstate: CollapsedState) -> dict:
        """JSON-able report: moved layers, proposals, final step sizes and mean acceptance after warm-up."""
        from .._backend import to_numpy

        out = {"move": "collapsed rows", "layers": list(mstate.layers), "proposals": self.proposals,
               "step": [to_numpy(namespace(v).exp(v)).tolist() for v in mstate.log_step]}
        if mstate.sampled:
            out["accept"] = mean_accept(mstate.accept_sum, mstate.sampled)
        return out
