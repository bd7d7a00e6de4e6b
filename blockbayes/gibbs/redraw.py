"""Exact prior-redraw move of one hidden unit's input weights (issue 15; docs/gibbs-moves.md §6).

Why: from a zero start at small ``Δ`` a chain can end with a *dead* hidden unit (output weight
``≈ 0``) while one teacher direction is missing. A dead unit's input weights get no data
gradient, so neither the centred sweep (``O(√Δ_Z)`` steps) nor the joint HMC move
(:class:`~blockbayes.gibbs.hmc.JointHMCMove`, prior-mass scale) carries them to the missing
direction. This move redraws them from the prior.

In the non-centred frame of the joint HMC move — the standardised hidden noises

    ξ^m = (Z^{m+1} − X̃^m W^{m⊤}) / √Δ_Z,   η^m = (X^{m+1} − f(Z^{m+1})) / √Δ_X

held fixed, the latents following the weights — the conditional of the weights given
``(ξ, η)``, the output targets ``T``, ``λ`` and ``Δ_y`` is

    π(θ) ∝ ∏_l N(W^l; 0, Λ_l^{-1}) · N(T; F(θ; ξ, η), Δ_y I)

(the map ``(θ, ξ, η) ↦ (θ, Z, X)`` has the constant Jacobian ``∏ √Δ``; proof in
docs/gibbs-moves.md §3). For hidden unit ``k`` of layer ``l + 1`` the move proposes its incoming
row (weights and bias) from its prior, independently of the current row,

    w̃'_k ~ N(0, diag(λ_W^l, …, λ_W^l, λ_b^l)^{-1}),

recomputes the latents above (``z'_k = X̃^l w̃'_k + √Δ_Z ξ_k``, ``x'_k = f(z'_k) + √Δ_X η_k``, then
the layers above with their noises) and accepts with

    log α = log N(T; F', Δ_y I) − log N(T; F, Δ_y I) = (‖T − F‖² − ‖T − F'‖²) / (2Δ_y):

an independence Metropolis–Hastings step on one block whose proposal is the block's prior, so
the prior and the proposal cancel — exact for ``π`` and hence for the joint posterior. A unit the
likelihood barely sees (dead: output weight ``≈ 0``) is redrawn almost always; a live unit is
almost always kept. The chains accept independently (vectorised over the leading chain axis).

Cost per proposal: ``O(n d_l)`` for the unit's new column, then ``O(n d_out)`` when ``l + 1`` is
the last hidden layer (the output changes by the rank-one term ``(x'_k − x_k) W^{L}_{:, k}``), else
one frozen-noise forward pass through the layers above.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from .._backend import device_of, namespace
from .._backend import random as bbr
from .._backend.host import np as _np     # only for np.errstate: a far proposal may overflow
from .conditionals import output_targets
from .kernel import GibbsState
from .moves import accumulate_accept, forward_with_noises, frozen_noises, hidden_row_layers, mean_accept
from ..model import MLP, activate

__all__ = ["UnitRedrawMove", "RedrawState", "prior_row_draw", "redraw_log_accept", "unit_redraws"]


class RedrawState(NamedTuple):
    """Bookkeeping of the unit redraw move (no tuned parameters: the kernel is fixed).

    Attributes
    ----------
    layers : tuple of int
        Weight indices ``l`` whose rows (the input weights of hidden layer ``l + 1``) are redrawn.
    sweeps : int
        Calls so far.
    accept : tuple of arrays
        Per layer, the acceptance rate of the last call (over units and proposals), shape ``(C,)``.
    unit_accept : tuple of arrays
        Per layer, the acceptance rate of the last call per unit, shape ``(C, d_{l+1})``.
    accept_sum : tuple of arrays
        Per layer, the sum of ``accept`` over the calls after warm-up, ``(C,)``.
    sampled : int
        Calls after warm-up.
    """

    layers: tuple
    sweeps: int
    accept: tuple
    unit_accept: tuple
    accept_sum: tuple = ()
    sampled: int = 0


def prior_row_draw(E, lam_row):
    """A row from its prior: ``E / √λ``, ``E`` ``(C, d+1)`` standard normal, ``lam_row`` ``(C, d+1)``."""
    xp = namespace(E)
    return E / xp.sqrt(lam_row)


def redraw_log_accept(sse_new, sse_old, w_new, w_old, lam_row, delta_y):
    """``log α = (‖T − F‖² − ‖T − F'‖²) / (2Δ_y)``, shape ``(C,)``.

    The prior of the row and the proposal (the same prior) cancel, so ``w_new, w_old, lam_row``
    do not enter; they are arguments so that a broken variant can use them (validation twins).
    """
    return (sse_old - sse_new) / (2.0 * delta_y)


class UnitRedrawMove(NamedTuple):
    """Configuration of the exact unit prior-redraw move (pass as ``gibbs.run(..., moves=...)``).

    Attributes
    ----------
    proposals : int
        Independent prior proposals per hidden unit and call (each with its own MH accept).
    layers : tuple of int or None
        Weight layers ``l < L − 1`` whose rows are redrawn (the input weights of hidden layer
        ``l + 1``); ``None``: every hidden layer.
    """

    proposals: int = 1
    layers: Optional[tuple] = None

    def chosen_layers(self, net: MLP) -> tuple:
        return hidden_row_layers(net, self.layers, move="the unit redraw move", noun="redrawn")

    def validate(self, net: MLP = None):
        v = self.proposals
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"proposals must be an int >= 1, got {v!r}")
        if net is not None:
            if net.likelihood != "gaussian":
                raise ValueError(f"the unit redraw move supports likelihood='gaussian' only (validated there), "
                                 f"got {net.likelihood!r}")
            self.chosen_layers(net)

    def init(self, state: GibbsState, net: MLP, X, y, *, num_warmup=None) -> RedrawState:
        """Bookkeeping at ``state`` (nothing to tune).

        ``num_warmup`` (the run's warm-up sweeps, passed by :func:`blockbayes.gibbs.run` to every
        move) is not used: this kernel adapts nothing.
        """
        self.validate(net)
        xp = namespace(X)
        C = state.delta_y.shape[0]
        layers = self.chosen_layers(net)
        z = lambda *s: xp.zeros((C,) + s, dtype=X.dtype, device=device_of(X))
        return RedrawState(layers, 0, tuple(z() for _ in layers), tuple(z(net.widths[l + 1]) for l in layers), (), 0)

    def step(self, key, mstate: RedrawState, state: GibbsState, net: MLP, X, y, *, warmup: bool = False,
             final_warmup: bool = False):
        """``proposals`` prior redraws of every unit of each chosen layer; returns ``(state, mstate)``.

        The kernel has no adapted parameters: ``warmup`` only decides whether the acceptance is
        added to the post-warm-up sums.
        """
        xp = namespace(X)
        C = state.delta_y.shape[0]
        T = output_targets(net, y, state.latent, C, X)
        keys = bbr.split(key, max(1, len(mstate.layers)))
        acc, uacc = list(mstate.accept), list(mstate.unit_accept)
        for j, l in enumerate(mstate.layers):
            state, uacc[j] = unit_redraws(keys[j], state, net, X, T, l, self.proposals)
            acc[j] = xp.mean(uacc[j], axis=-1)
        acc_sum, sampled = accumulate_accept(mstate.accept_sum, mstate.sampled, acc, warmup)
        return state, RedrawState(mstate.layers, mstate.sweeps + 1, tuple(acc), tuple(uacc), acc_sum, sampled)

    def summary(self, mstate: RedrawState) -> dict:
        """JSON-able report: redrawn layers, proposals, mean acceptance after warm-up."""
        out = {"move": "unit prior redraw", "layers": list(mstate.layers), "proposals": self.proposals}
        if mstate.sampled:
            out["accept"] = mean_accept(mstate.accept_sum, mstate.sampled)
        return out


def _sse(xp, T, out):
    R = T - out
    return xp.sum(R * R, axis=(-2, -1))


def _columns(xp, A):
    """``(C, n, K)`` → list of ``K`` contiguous ``(C, n)`` columns (one copy: strided columns are slow)."""
    C, n, K = A.shape
    At = xp.reshape(xp.reshape(xp.permute_dims(A, (2, 0, 1)), (K, C * n)), (K, C, n))
    return [At[k] for k in range(K)]


def unit_redraws(key, state: GibbsState, net: MLP, X, T, l, proposals):
    """``proposals`` independence-MH prior redraws of each row of ``W^l`` in turn, noises frozen.

    Returns ``(state, rate)``: the new state (weights of layer ``l``, latents of layers ``≥ l + 1``
    following) and the acceptance rate per unit, shape ``(C, d_{l+1})``.
    """
    xp = namespace(X)
    dev = device_of(X)
    C = state.delta_y.shape[0]
    L = net.num_layers
    k_units, d = net.widths[l + 1], net.widths[l]
    xi, eta = frozen_noises(state, net, X, 0)          # unscaled noises of every hidden layer
    H = X if l == 0 else state.post[l - 1]              # (n, d) or (C, n, d): unchanged by this move
    Ws = list(state.weights)
    pre, post = list(state.pre), list(state.post)
    out = forward_with_noises(post[L - 2], Ws[-1:], net, [], [])[2]
    sse = _sse(xp, T, out)
    lam_row = xp.concat([xp.broadcast_to(state.lam_w[:, l:l + 1], (C, d)), state.lam_b[:, l:l + 1]], axis=-1)
    k1, k2 = bbr.split(key, 2)
    E = bbr.normal(k1, (proposals, k_units, C, d + 1), like=X)
    U = bbr.uniform(k2, (proposals, k_units, C), like=X)
    eye = xp.eye(k_units, dtype=X.dtype, device=dev)
    last = l == L - 2
    # the layer's latents as per-unit columns (C, n): a proposal touches one column only
    zc, xc, xic, etac = (_columns(xp, A) for A in (pre[l], post[l], xi[l], eta[l]))
    rate = []
    with _np.errstate(over="ignore", invalid="ignore"):
        for k in range(k_units):
            e_k = eye[k]                                                       # (K,)
            acc_k = xp.zeros((C,), dtype=X.dtype, device=dev)
            for r in range(proposals):
                w_old = Ws[l][:, k, :]                                         # (C, d+1)
                w_new = prior_row_draw(E[r, k], lam_row)
                if H.ndim == 2:
                    a = xp.matrix_transpose(xp.matmul(H, xp.matrix_transpose(w_new[:, :-1])))   # (C, n)
                else:
                    a = xp.matmul(H, w_new[:, :-1, None])[..., 0]
                z_new = a + w_new[:, -1:] + xic[k]
                x_new = activate(xp, z_new, net.activation, net.slope) + etac[k]
                dx = x_new - xc[k]
                if last:
                    out_p = out + dx[..., None] * Ws[-1][:, None, :, k]         # rank one: (C, n, d_out)
                    up_pre, up_post = [], []
                else:
                    X_p = xp.stack(xc[:k] + [x_new] + xc[k + 1:], axis=-1)
                    up_pre, up_post, out_p = forward_with_noises(X_p, Ws[l + 1:], net, xi[l + 1:], eta[l + 1:])
                sse_p = _sse(xp, T, out_p)
                la = redraw_log_accept(sse_p, sse, w_new, w_old, lam_row, state.delta_y)
                ok = (xp.log(U[r, k]) < la) & xp.isfinite(sse_p)
                o2, o3 = ok[:, None], ok[:, None, None]
                Ws[l] = xp.where(o3 & (e_k[None, :, None] > 0), w_new[:, None, :], Ws[l])
                zc[k] = xp.where(o2, z_new, zc[k])
                xc[k] = xp.where(o2, x_new, xc[k])
                for j, (a_, b_) in enumerate(zip(up_pre, up_post)):
                    pre[l + 1 + j] = xp.where(o3, a_, pre[l + 1 + j])
                    post[l + 1 + j] = xp.where(o3, b_, post[l + 1 + j])
                out = xp.where(o3, out_p, out)
                sse = xp.where(ok, sse_p, sse)
                acc_k = acc_k + xp.astype(ok, X.dtype)
            rate.append(acc_k / proposals)
    pre[l] = xp.stack(zc, axis=-1)
    post[l] = xp.stack(xc, axis=-1)
    new = state._replace(weights=tuple(Ws), pre=tuple(pre), post=tuple(post))
    return new, xp.stack(rate, axis=-1)
