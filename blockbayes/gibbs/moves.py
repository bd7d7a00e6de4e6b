"""Non-centred (ASIS) weight moves for the block-Gibbs sampler (MATH.md §A.8, docs/gibbs-moves.md).

Why: once ``Δ_Z, Δ_X ≪ Δ_y`` a centred Gibbs sweep moves a layer's weights only by
``O(√Δ_Z)`` — the latents ``Z, X`` pin them — while the posterior of the network function is set
by ``Δ_y`` and ``n``. The move here holds the *standardised noises* fixed instead,

    ξ^m = (Z^{m+1} − X̃^m W^{m⊤}) / √Δ_Z,   η^m = (X^{m+1} − f(Z^{m+1})) / √Δ_X,   m ≥ l,

and moves the weights ``W^l`` of one hidden layer with all latents above it following
deterministically (``Z^{m+1} = X̃^m W^{m⊤} + √Δ_Z ξ^m``, ``X^{m+1} = f(Z^{m+1}) + √Δ_X η^m``).
For fixed weights this map is a shift followed by a triangular map with constant Jacobian
``∏ √Δ``, so the conditional of ``W^l`` given ``(ξ, η)``, the other weights and the
hyperparameters is

    π(W^l) ∝ p(W^l) · N(T; F(W^l; ξ, η), Δ_y I),

the standard network's posterior with the noise realisations frozen (``T`` = the output layer's
targets: ``y``, the one-hot labels or the probit utilities). Any Metropolis–Hastings kernel for
``π`` keeps the joint posterior; alternated with the centred sweep it is an interweaving
strategy (Yu & Meng 2011). The proof is in docs/gibbs-moves.md.

The kernel is preconditioned MALA on the whole layer (``P = d_{l+1}(d_l + 1)`` parameters):

    W' = W + (h²/2) M ∇log π(W) + h M^{1/2} e,   e ~ N(0, I),   M = (Λ + GN)^{-1},

with ``GN = Σ_μ J_μ^⊤ J_μ / Δ_y`` the Gauss–Newton matrix of the frozen-noise network at a
reference state — the whole matrix for layers with at most ``max_params`` weights, else its
per-node-row diagonal blocks (``M`` block-diagonal) — accepted with

    log α = log π(W') − log π(W) + log q(W | W') − log q(W' | W),
    log q(W' | W) = −‖R^⊤(W' − W − (h²/2) M ∇log π(W))‖² / (2h²),   R R^⊤ = Λ + GN.

``M`` and ``h`` are per chain. During warm-up ``M`` is recomputed every ``refresh_every`` sweeps at
the chain's current state and ``h`` adapts towards ``target_accept`` (Robbins–Monro on ``log h``);
both are frozen when warm-up ends, so every kept sample comes from a fixed, exact kernel.
One MALA step costs one forward and one backward pass through the layers above ``l``
(``O(n Σ_{m≥l} d_m d_{m+1})``) plus ``O(P b)`` for the preconditioner products (``b`` its block
size); a refresh costs ``O(n d_out P b + P b²)``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

from .._backend import device_of, namespace
from .._backend import linalg
from .._backend import random as bbr
from .conditionals import output_targets
from .kernel import GibbsState
from ..model import MLP, activate, affine

__all__ = ["NonCentredMove", "ComposedMove", "MoveState", "hidden_row_layers", "accumulate_accept", "mean_accept", "frozen_noises", "forward_with_noises", "frozen_noise_forward", "log_target",
           "log_target_and_grad", "gauss_newton_precision", "log_proposal_ratio"]


def hidden_row_layers(net: MLP, layers, *, move: Optional[str] = None, noun: str = "moved") -> tuple:
    """Weight indices ``l`` whose rows are the input weights of a hidden layer (``0 ≤ l ≤ L − 2``).

    ``layers``: the caller's choice (each checked: an int in range, not a bool) or ``None`` for all
    of them. ``move``: the move's name, to raise when ``net`` has no hidden layer (``None``: return
    the empty tuple then); ``noun`` words the error (``"moved"``, ``"redrawn"``). Shared by the row
    moves (non-centred, unit redraw, collapsed).
    """
    if move is not None and net.num_layers < 2:
        raise ValueError(f"{move} needs a hidden layer (widths of length >= 3)")
    if layers is None:
        return tuple(range(net.num_layers - 1))
    for l in layers:
        if isinstance(l, bool) or not isinstance(l, int) or not 0 <= l < net.num_layers - 1:
            raise ValueError(f"{noun} layers must be ints in [0, {net.num_layers - 2}] "
                             f"(input weights of a hidden layer), got {l!r}")
    return tuple(layers)


def accumulate_accept(accept_sum: tuple, sampled: int, accept, warmup: bool) -> tuple:
    """``(accept_sum, sampled)`` after one call of a per-layer move: the call's acceptance rates
    (one ``(C,)`` array per layer) added to the sums after warm-up, the sums unchanged in warm-up."""
    if warmup:
        return accept_sum, sampled
    acc = tuple(accept)
    return (tuple(a + b for a, b in zip(accept_sum, acc)) if accept_sum else acc), sampled + 1


def mean_accept(accept_sum: tuple, sampled: int) -> list:
    """Mean acceptance after warm-up per layer (over calls and chains), for a move's ``summary``."""
    from .._backend import to_numpy

    return [float(to_numpy(a).mean()) / sampled for a in accept_sum]


class MoveState(NamedTuple):
    """Per-layer kernel parameters of the non-centred move (``C`` chains).

    Attributes
    ----------
    layers : tuple of int
        Weight indices ``l`` (0-based; ``W^l`` maps layer ``l`` to the hidden layer ``l + 1``).
    chol : tuple of (array, array)
        Per moved layer, the lower Cholesky factor ``R`` of ``Λ + GN`` and its inverse
        ``R^{-1}``, each of shape ``(C, P, P)``.
    log_step : tuple of arrays
        Per moved layer, ``log h``, shape ``(C,)``.
    sweeps : int
        Sweeps done so far (drives the warm-up refresh and adaptation).
    accept : tuple of arrays
        Per moved layer, the acceptance rate of the last call, shape ``(C,)``.
    accept_sum : tuple of arrays
        Per moved layer, the sum of the acceptance rates of the calls after warm-up, ``(C,)``.
    sampled : int
        Calls after warm-up.
    """

    layers: tuple
    chol: tuple
    log_step: tuple
    sweeps: int
    accept: tuple
    accept_sum: tuple = ()
    sampled: int = 0


def _dact(xp, Z, activation, slope):
    """``f'(Z)`` (ReLU: ``1[Z > 0]``; leaky: ``slope`` below 0; identity: 1)."""
    if activation == "identity":
        return xp.ones_like(Z)
    pos = xp.astype(Z > 0, Z.dtype)
    if activation == "leaky_relu":
        return slope + (1.0 - slope) * pos
    return pos


def _input_of(state: GibbsState, X, l):
    return X if l == 0 else state.post[l - 1]


def frozen_noises(state: GibbsState, net: MLP, X, l):
    """The unscaled noises ``(√Δ_Z ξ^m, √Δ_X η^m)`` of the hidden layers ``m ≥ l``, per chain."""
    xp = namespace(X)
    H = _input_of(state, X, l)
    xi, eta = [], []
    for m in range(l, net.num_layers - 1):
        xi.append(state.pre[m] - affine(H, state.weights[m]))
        eta.append(state.post[m] - activate(xp, state.pre[m], net.activation, net.slope))
        H = state.post[m]
    return xi, eta


def forward_with_noises(H, Ws, net: MLP, xi, eta):
    """The layers ``m, m+1, …, L−1`` of the network on input ``H`` with weights ``Ws`` (one per
    layer, the output layer last) and the frozen unscaled noises ``xi[j] = √Δ_Z ξ``,
    ``eta[j] = √Δ_X η`` of its hidden layers: ``Z = X̃ W̃^⊤ + xi[j]``, ``X = f(Z) + eta[j]``.

    Returns ``(pre, post, out)``: lists of the ``Z`` and ``X`` of the hidden layers and the
    output pre-activation, shape ``(C, n, d_out)``.
    """
    xp = namespace(H)
    pre, post = [], []
    for j, W in enumerate(Ws[:-1]):
        Z = affine(H, W, xp)
        Z += xi[j]
        H = activate(xp, Z, net.activation, net.slope)
        if H is Z:                       # identity: activate returns Z itself
            H = Z + eta[j]
        else:
            H += eta[j]
        pre.append(Z)
        post.append(H)
    return pre, post, affine(H, Ws[-1], xp)


def frozen_noise_forward(Wl, state: GibbsState, net: MLP, X, l, xi, eta):
    """Run the network above ``H^l`` with weights ``Wl`` for layer ``l`` and frozen noises.

    Returns ``(pre, post, out)``: lists of ``Z^{m+1}``, ``X^{m+1}`` for ``m ≥ l`` and the output
    pre-activation ``X̃^L W̃^{L⊤}``, shape ``(C, n, d_out)`` (:func:`forward_with_noises`).
    """
    return forward_with_noises(_input_of(state, X, l), (Wl,) + tuple(state.weights[l + 1:]), net, xi, eta)


def log_target(Wl, out, T, lam_w, lam_b, delta_y):
    """``log π(W^l)`` up to a constant: ``−½λ_W‖W‖² − ½λ_b‖b‖² − ‖T − out‖²/(2Δ_y)``, shape ``(C,)``."""
    xp = namespace(Wl)
    Ww, b = Wl[..., :-1], Wl[..., -1]
    R = T - out
    return (-0.5 * (lam_w * xp.sum(Ww * Ww, axis=(-2, -1)) + lam_b * xp.sum(b * b, axis=-1))
            - xp.sum(R * R, axis=(-2, -1)) / (2.0 * delta_y))


def log_target_and_grad(Wl, state: GibbsState, net: MLP, X, T, l, xi, eta):
    """``(log π, ∇log π, pre, post, out)`` at ``Wl`` (hand-written backprop, one forward/backward).

    ``∇log π = Σ_μ δ_μ x̃_μ^⊤ − Λ W`` with ``δ = ∂/∂Z^{l+1}`` of ``−‖T − out‖²/(2Δ_y)``:
    ``δ^L = (T − out)/Δ_y``, then ``δ ← (δ W̃^m_{:, :-1}) ⊙ f'(Z^m)`` down to layer ``l + 1``.
    Shapes: ``Wl`` and the gradient ``(C, d_{l+1}, d_l + 1)``.
    """
    xp = namespace(X)
    lam_w, lam_b, dy = state.lam_w[:, l], state.lam_b[:, l], state.delta_y
    pre, post, out = frozen_noise_forward(Wl, state, net, X, l, xi, eta)
    lp = log_target(Wl, out, T, lam_w, lam_b, dy)
    delta = (T - out) / dy[:, None, None]
    L = net.num_layers
    for m in range(L - 1, l, -1):
        W = state.weights[m]
        delta = xp.matmul(delta, W[..., :-1]) * _dact(xp, pre[m - 1 - l], net.activation, net.slope)
    H = _input_of(state, X, l)
    gw = xp.matmul(xp.matrix_transpose(delta), H if H.ndim == 3 else xp.broadcast_to(H, (delta.shape[0],) + tuple(H.shape)))
    gb = xp.sum(delta, axis=-2)
    g = xp.concat([gw - lam_w[:, None, None] * Wl[..., :-1], (gb - lam_b[:, None] * Wl[..., -1])[..., None]], axis=-1)
    return lp, g, pre, post, out


def gauss_newton_precision(state: GibbsState, net: MLP, X, l, *, blocks: str = "full", chunk: int = 256):
    """``Λ + Σ_μ J_μ^⊤ J_μ / Δ_y`` for the layer-``l`` weights, ``(C, B, b, b)``.

    ``J_μ = ∂out_μ/∂vec W^l = J^z_μ ⊗ x̃_μ^⊤`` with ``J^z_μ = ∂out_μ/∂z^{l+1}_μ`` of shape
    ``(d_out, d_{l+1})`` (``W^L_{:, :-1} diag f'(z^L) W^{L-1}_{:, :-1} ⋯ diag f'(z^{l+1})``), at the
    state's latents. ``blocks="full"``: the whole matrix over the row-major ``vec W^l``
    (``B = 1``, ``b = P = d_{l+1}(d_l + 1)``; cost ``O(n d_out P²)``); ``blocks="rows"``: its
    diagonal blocks, one per node row (``B = d_{l+1}``, ``b = d_l + 1``),
    ``G_i = X̃^⊤ diag(Σ_o (J^z_{μ o i})²) X̃ / Δ_y`` (cost ``O(n d_{l+1} d_l²)``).
    Accumulated over chunks of ``chunk`` data points.
    """
    if blocks not in ("full", "rows"):
        raise ValueError(f"blocks must be 'full' or 'rows', got {blocks!r}")
    xp = namespace(X)
    C = state.delta_y.shape[0]
    L = net.num_layers
    k, d = net.widths[l + 1], net.widths[l]
    P = k * (d + 1)
    H = _input_of(state, X, l)
    n = H.shape[-2]
    B, b = (1, P) if blocks == "full" else (k, d + 1)
    GN = xp.zeros((C, B, b, b), dtype=X.dtype, device=device_of(X))
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        J = xp.broadcast_to(state.weights[-1][:, None, :, :-1], (C, e - s) + tuple(state.weights[-1][..., :-1].shape[1:]))
        for m in range(L - 2, l - 1, -1):
            J = J * _dact(xp, state.pre[m][:, s:e, :], net.activation, net.slope)[:, :, None, :]
            if m > l:
                J = xp.matmul(J, state.weights[m][:, None, :, :-1])
        Hc = H[..., s:e, :]
        if Hc.ndim == 2:
            Hc = xp.broadcast_to(Hc, (C,) + tuple(Hc.shape))
        ones = xp.ones(Hc.shape[:-1] + (1,), dtype=X.dtype, device=device_of(X))
        Ht = xp.concat([Hc, ones], axis=-1)                       # (C, c, d+1)
        d_out = J.shape[-2]
        if blocks == "full":
            Jf = J[..., :, None] * Ht[:, :, None, None, :]             # (C, c, d_out, k, d+1)
            Jf = xp.reshape(Jf, (C, 1, (e - s) * d_out, P))
            GN = GN + xp.matmul(xp.matrix_transpose(Jf), Jf)
        else:
            w = xp.sum(J * J, axis=-2)                                  # (C, c, k)
            Hw = xp.matrix_transpose(w)[..., :, :, None] * Ht[:, None, :, :]   # (C, k, c, d+1)
            GN = GN + xp.matmul(xp.matrix_transpose(Hw), Ht[:, None, :, :])
    GN = GN / state.delta_y[:, None, None, None]
    lam = xp.concat([xp.broadcast_to(state.lam_w[:, l:l + 1], (C, d)), state.lam_b[:, l:l + 1]], axis=-1)  # (C, d+1)
    lam = xp.reshape(xp.broadcast_to(lam[:, None, :], (C, k, d + 1)), (C, B, b))
    return GN + lam[..., :, None] * xp.eye(b, dtype=X.dtype, device=device_of(X))


def log_proposal_ratio(R, W, Wp, Mg, Mgp, h):
    """``log q(W | W') − log q(W' | W)`` of preconditioned MALA, shape ``(C,)``.

    ``log q(b | a) = −‖R^⊤(b − a − (h²/2) M g(a))‖²/(2h²)`` with ``M = (R R^⊤)^{-1}``.
    ``W, Wp``: ``(C, B, b)`` (the layer in ``B`` blocks of ``b``); ``Mg, Mgp``: the preconditioned
    gradients ``M ∇log π`` at ``W`` and ``W'``, same shape; ``R``: ``(C, B, b, b)`` (block-diagonal
    ``M``); ``h``: ``(C,)``.
    """
    return _log_q(R, Wp, W, Mgp, h) - _log_q(R, W, Wp, Mg, h)


def _log_q(R, a, b, Mga, h):
    xp = namespace(a)
    r = b - a - 0.5 * (h * h)[:, None, None] * Mga
    v = xp.matmul(xp.matrix_transpose(R), r[..., None])[..., 0]
    return -xp.sum(v * v, axis=(-2, -1)) / (2.0 * h * h)


def _precondition(Rinv, g):
    """``M g = R^{-⊤} R^{-1} g`` with the explicit inverse factor ``Rinv = R^{-1}`` (two matmuls)."""
    xp = namespace(g)
    v = xp.matmul(Rinv, g[..., None])
    return xp.matmul(xp.matrix_transpose(Rinv), v)[..., 0]


def _factor(P):
    """``(R, R^{-1})`` of a batch of SPD matrices (lower Cholesky and its inverse)."""
    xp = namespace(P)
    R = linalg.cholesky(P)
    I = xp.broadcast_to(xp.eye(P.shape[-1], dtype=P.dtype, device=device_of(P)), P.shape)
    return R, linalg.solve_triangular(R, I, lower=True)


class NonCentredMove(NamedTuple):
    """Configuration of the non-centred layer move (pass as ``gibbs.run(..., moves=...)``).

    Attributes
    ----------
    layers : tuple of int or None
        Weight layers to move (0-based ``l`` with ``l < L − 1``: the input weights of a hidden
        layer). ``None``: every such layer.
    steps : int
        MALA steps per layer and sweep.
    target_accept : float
        Warm-up target of the acceptance rate (0.574 is optimal for MALA in high dimension).
    refresh_every : int
        During warm-up, recompute the preconditioner every this many sweeps.
    init_step : float
        Initial ``h`` (the proposal sd is ``h`` along the preconditioner's axes).
    max_params : int
        Largest layer ``P = d_{l+1}(d_l + 1)`` given the full Gauss–Newton preconditioner when
        ``precond="auto"``; larger layers get the per-row blocks.
    precond : {"auto", "full", "rows"}
        Preconditioner structure (:func:`gauss_newton_precision`'s ``blocks``).
    """

    layers: Optional[tuple] = None
    steps: int = 10
    target_accept: float = 0.574
    refresh_every: int = 25
    init_step: float = 0.5
    max_params: int = 300
    precond: str = "auto"

    def blocks(self, net: MLP, l: int) -> str:
        if self.precond == "auto":
            return "full" if net.widths[l + 1] * (net.widths[l] + 1) <= self.max_params else "rows"
        return self.precond

    def chosen_layers(self, net: MLP) -> tuple:
        return hidden_row_layers(net, self.layers)

    def validate(self):
        for name in ("steps", "refresh_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not 0.0 < self.target_accept < 1.0:
            raise ValueError(f"target_accept must lie in (0, 1), got {self.target_accept!r}")
        if self.precond not in ("auto", "full", "rows"):
            raise ValueError(f"precond must be 'auto', 'full' or 'rows', got {self.precond!r}")
        if not (self.init_step > 0 and math.isfinite(self.init_step)):
            raise ValueError(f"init_step must be positive, got {self.init_step!r}")

    def init(self, state: GibbsState, net: MLP, X, y, *, num_warmup=None) -> MoveState:
        """Kernel parameters at ``state`` (preconditioners from its Gauss–Newton matrices).

        ``num_warmup`` (the run's warm-up sweeps, passed by :func:`blockbayes.gibbs.run`) is
        not used: this move's warm-up rule needs only the ``final_warmup`` flag.
        """
        self.validate()
        xp = namespace(X)
        layers = self.chosen_layers(net)
        C = state.delta_y.shape[0]
        chol = tuple(_factor(gauss_newton_precision(state, net, X, l, blocks=self.blocks(net, l))) for l in layers)
        ls = tuple(xp.full((C,), math.log(self.init_step), dtype=X.dtype, device=device_of(X)) for _ in layers)
        acc = tuple(xp.zeros((C,), dtype=X.dtype, device=device_of(X)) for _ in layers)
        return MoveState(layers, chol, ls, 0, acc, acc, 0)

    def step(self, key, mstate: MoveState, state: GibbsState, net: MLP, X, y, *, warmup: bool = False,
             final_warmup: bool = False):
        """``steps`` MALA steps on each moved layer; returns ``(state, mstate)``.

        With ``warmup`` the step sizes adapt (and every ``refresh_every`` sweeps, and at
        ``final_warmup``, the preconditioners are recomputed at the current state); otherwise
        ``mstate`` is only advanced (its kernel parameters are fixed).
        """
        xp = namespace(X)
        C = state.delta_y.shape[0]
        T = output_targets(net, y, state.latent, C, X)
        keys = bbr.split(key, max(1, len(mstate.layers)))
        chol, log_step, acc = list(mstate.chol), list(mstate.log_step), list(mstate.accept)
        for j, l in enumerate(mstate.layers):
            state, rate = _mala_layer(keys[j], state, net, X, T, l, chol[j], xp.exp(log_step[j]), self.steps)
            acc[j] = rate
            if warmup:
                gamma = 1.0 / math.sqrt(1.0 + mstate.sweeps / 10.0)
                log_step[j] = log_step[j] + gamma * (rate - self.target_accept)
        sweeps = mstate.sweeps + 1
        if warmup and (sweeps % self.refresh_every == 0 or final_warmup):
            chol = [_factor(gauss_newton_precision(state, net, X, l, blocks=self.blocks(net, l))) for l in mstate.layers]
        acc_sum, sampled = accumulate_accept(mstate.accept_sum, mstate.sampled, acc, warmup)
        return state, MoveState(mstate.layers, tuple(chol), tuple(log_step), sweeps, tuple(acc), acc_sum, sampled)

    def summary(self, mstate: MoveState) -> dict:
        """JSON-able report: moved layers, mean acceptance after warm-up, final step sizes."""
        from .._backend import to_numpy

        out = {"move": "non-centred MALA", "layers": list(mstate.layers), "steps": self.steps}
        if mstate.sampled:
            out["accept"] = mean_accept(mstate.accept_sum, mstate.sampled)
        out["step_size"] = [float(math.exp(float(to_numpy(v).mean()))) for v in mstate.log_step]
        return out


def _mala_layer(key, state: GibbsState, net: MLP, X, T, l, factors, h, steps):
    """``steps`` preconditioned-MALA steps on ``W^l`` with frozen noises; returns ``(state, rate)``."""
    xp = namespace(X)
    R, Rinv = factors
    C = state.delta_y.shape[0]
    shp = tuple(state.weights[l].shape)
    xi, eta = frozen_noises(state, net, X, l)
    W = state.weights[l]
    lp, g, pre, post, _ = log_target_and_grad(W, state, net, X, T, l, xi, eta)
    Bk, bk = R.shape[-3], R.shape[-1]
    flat = lambda A: xp.reshape(A, (C, Bk, bk))
    accepted = xp.zeros((C,), dtype=X.dtype, device=device_of(X))
    h2 = (h * h)[:, None]
    k1, k2 = bbr.split(key, 2)
    E = bbr.normal(k1, (steps, C, Bk, bk, 1), like=X)
    U = bbr.uniform(k2, (steps, C), like=X)
    Mg = _precondition(Rinv, flat(g))
    for t in range(steps):
        Wf = flat(W)
        mean = Wf + 0.5 * h2[..., None] * Mg
        noise = xp.matmul(xp.matrix_transpose(Rinv), E[t])[..., 0]              # R^{-⊤} e
        Wpf = mean + h[:, None, None] * noise
        Wp = xp.reshape(Wpf, shp)
        lpp, gp, prep, postp, _ = log_target_and_grad(Wp, state, net, X, T, l, xi, eta)
        Mgp = _precondition(Rinv, flat(gp))
        log_alpha = lpp - lp + log_proposal_ratio(R, Wf, Wpf, Mg, Mgp, h)
        ok = xp.log(U[t]) < log_alpha
        ok = ok & xp.isfinite(lpp)
        okw = ok[:, None, None]
        W = xp.where(okw, Wp, W)
        Mg = xp.where(okw, Mgp, Mg)
        lp = xp.where(ok, lpp, lp)
        pre = [xp.where(okw, a, b) for a, b in zip(prep, pre)]
        post = [xp.where(okw, a, b) for a, b in zip(postp, post)]
        accepted = accepted + xp.astype(ok, X.dtype)
    weights = list(state.weights)
    weights[l] = W
    pre_all, post_all = list(state.pre), list(state.post)
    for j, m in enumerate(range(l, net.num_layers - 1)):
        pre_all[m] = pre[j]
        post_all[m] = post[j]
    new = state._replace(weights=tuple(weights), pre=tuple(pre_all), post=tuple(post_all))
    return new, accepted / steps


class ComposedMove(NamedTuple):
    """Several exact moves applied in order after every sweep: ``moves=ComposedMove((m1, m2))``.

    Each component leaves the noisy-MLP posterior invariant, so their composition does too (a
    product of π-invariant kernels is π-invariant); nothing is adapted here — every component keeps
    its own warm-up rule. Component ``i`` gets key ``split(key, k)[i]`` of the sweep's move key.

    Typical use (the planted-teacher recipe of docs/gibbs-moves.md §6): the joint HMC move followed
    by the unit prior redraw, ``ComposedMove((JointHMCMove(leapfrog=8), UnitRedrawMove(proposals=1)))``.

    Parameters
    ----------
    moves : tuple
        Two or more moves with the protocol of :class:`NonCentredMove` (``init``, ``step``,
        ``summary``).
    """

    moves: tuple

    def validate(self):
        """Raise ``ValueError`` unless ``moves`` is a tuple/list of ≥ 2 objects with the move protocol."""
        if not isinstance(self.moves, (tuple, list)) or len(self.moves) < 2:
            raise ValueError(f"ComposedMove needs a tuple of two or more moves, got {self.moves!r}")
        for i, m in enumerate(self.moves):
            if isinstance(m, ComposedMove) or not all(callable(getattr(m, a, None)) for a in ("init", "step", "summary")):
                raise ValueError(f"moves[{i}] is not a move (needs init, step and summary, not nested): {m!r}")

    def init(self, state: GibbsState, net: MLP, X, y, *, num_warmup=None) -> tuple:
        """The components' states, in order (``num_warmup`` passed on to each)."""
        self.validate()
        return tuple(m.init(state, net, X, y, num_warmup=num_warmup) for m in self.moves)

    def step(self, key, mstate: tuple, state: GibbsState, net: MLP, X, y, *, warmup: bool = False,
             final_warmup: bool = False):
        """Apply the components in order; returns ``(state, mstate)``."""
        keys = bbr.split(key, len(self.moves))
        out = []
        for i, (m, ms) in enumerate(zip(self.moves, mstate)):
            state, ms = m.step(keys[i], ms, state, net, X, y, warmup=warmup, final_warmup=final_warmup)
            out.append(ms)
        return state, tuple(out)

    def summary(self, mstate: tuple) -> dict:
        """JSON-able report: the components' summaries, in order."""
        return {"move": "composed", "components": [m.summary(ms) for m, ms in zip(self.moves, mstate)]}
