"""Forward, backward and diagonal curvature of the standard MLP, batched over a leading sample axis.

The shared floor of every family that differentiates the *standard* (noise-free) network of
MATH.md §D.1 — IVON and VOGN in :mod:`blockbayes.vi` today — written once on the Python Array
API, with **no autograd**. Every function takes weights with a leading batch axis ``S`` (Monte
Carlo draws × restarts × chains, flattened by the caller):

.. math::

    A^{1} = X W_w^{1\\top} + b^1,\\quad H^{l+1} = f(A^{l}),\\quad A^{l+1} = H^{l+1} W_w^{l+1\\top} + b^{l+1},
    \\quad F = A^{L},

``weights[l]`` of shape ``(S, d_{l+1}, d_l + 1)`` with the **bias in the last column** (the layout
of :mod:`blockbayes.model`). ``X`` is ``(m, d_in)`` (shared by every batch member) or
``(S, m, d_in)``.

For the per-example loss ``ℓ(y_μ, F_μ)`` (likelihoods as in :data:`LIKELIHOODS`), the
back-propagated errors are ``δ^L = ∇_Fℓ`` and ``δ^{l-1} = f'(A^{l-1}) ⊙ (δ^l W_w^l)``; then

.. math::

    ∇_{W^l} \\textstyle\\sum_μ ℓ_μ = δ^{l\\top} \\tilde H^l,\\qquad
    \\underbrace{\\textstyle\\sum_μ (∇_{W^l}ℓ_μ)^2}_{\\text{"ef": squared per-example gradients}}
      = (δ^l ⊙ δ^l)^\\top (\\tilde H^l ⊙ \\tilde H^l),\\qquad
    \\underbrace{\\operatorname{diag} \\textstyle\\sum_μ J_μ^\\top ∇^2_Fℓ_μ J_μ}_{\\text{"ggn"}}
      = c^{l\\top} (\\tilde H^l ⊙ \\tilde H^l),

with ``\\tilde H^l = [H^l\\ 1]`` (never materialised), ``c^l_{μi} = Σ_r (Q^l_{μir})^2`` and
``Q^l`` the back-propagation of a square root ``S_μ`` of the loss Hessian (``S S^⊤ = ∇²_Fℓ``):
``Q^L = S``, ``Q^{l-1}_{:,:,r} = f'(A^{l-1}) ⊙ (Q^l_{:,:,r} W_w^l)``. Both diagonals are closed
form per layer, ``O(m P)`` for ``"ef"`` and ``O(m R P)`` for ``"ggn"`` (``R`` = rank of ``S``:
1 for Gaussian regression with one output and for Bernoulli, ``C`` for softmax).

Likelihoods (per example, targets ``Y`` a float array ``(m, C)``):

``"gaussian"``
    ``ℓ = ‖y − F‖²/(2Δ_y) + (C/2) log(2πΔ_y)``, ``∇_Fℓ = (F − y)/Δ_y``, ``S = I/√Δ_y``.
    ``Δ_y`` a float or one value per batch member (shape ``(S,)``).
``"categorical"``
    softmax, ``Y`` one-hot, ``∇_Fℓ = p − Y``, ``S_{cr} = (δ_{cr} − p_c)√p_r``.
``"bernoulli"``
    one logit, ``∇_Fℓ = σ(F) − Y``, ``S = √(σ(F)(1 − σ(F)))``.

The module also holds the input gate of the standard network (:func:`resolve_likelihood`,
:func:`check_X`, :func:`encode_targets`). The Laplace family keeps its own unbatched twin
(``blockbayes.laplace._mlp_grad``); tests check the two agree.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

from ._backend import device_of, namespace
from .model import MLP, activate

__all__ = ["LIKELIHOODS", "Pass", "forward", "output", "loss_derivatives", "hessian_sqrt", "backward",
           "value_and_grad", "resolve_likelihood", "check_X", "encode_targets", "log_softmax"]

# the likelihood names of the standard net and their resolution live in the input gate
from .inputs import LIKELIHOODS, resolve_likelihood  # noqa: E402,F401

CURVATURES = (None, "ggn", "ef")


class Pass(NamedTuple):
    """Forward pass of a batch of networks.

    Attributes
    ----------
    H : tuple of arrays
        ``H[l]`` the input of layer ``l`` (without the ones column): ``H[0] = X`` (``(m, d_in)`` or
        ``(S, m, d_in)``), ``H[l]`` ``(S, m, d_l)`` for ``l ≥ 1``.
    A : tuple of arrays
        ``A[l]`` the pre-activation output of layer ``l``, ``(S, m, d_{l+1})``; ``A[-1] = F``.
    """

    H: tuple
    A: tuple

    @property
    def F(self):
        """Network outputs, ``(S, m, d_out)``."""
        return self.A[-1]


def _mT(xp, a):
    return xp.matrix_transpose(a)


def _act_deriv(xp, A, activation: str, slope: float):
    if activation == "identity":
        return xp.ones_like(A)
    if activation == "relu":
        return xp.astype(A > 0, A.dtype)
    if activation == "leaky_relu":
        one = xp.ones_like(A)
        return xp.where(A >= 0, one, slope * one)
    raise ValueError(f"unknown activation {activation!r}")


def forward(net: MLP, weights: Sequence, X) -> Pass:
    """Forward pass of ``S`` networks on the same (or per-member) inputs.

    Parameters
    ----------
    net : MLP
    weights : sequence of arrays
        ``weights[l]`` of shape ``(S, d_{l+1}, d_l + 1)``, bias last.
    X : array, shape (m, d_in) or (S, m, d_in)

    Returns
    -------
    Pass
        Inputs ``H`` and pre-activations ``A`` of every layer. Cost ``O(S m P)``.
    """
    xp = namespace(X, *weights)
    H, Hs, As = X, [], []
    L = len(weights)
    for l, W in enumerate(weights):
        a = xp.matmul(H, _mT(xp, W[..., :-1])) + W[..., None, :, -1]
        Hs.append(H)
        As.append(a)
        if l < L - 1:
            H = activate(xp, a, net.activation, net.slope)
    return Pass(tuple(Hs), tuple(As))


def output(net: MLP, weights: Sequence, X):
    """Network outputs ``F``, shape ``(S, m, d_out)`` (see :func:`forward`)."""
    return forward(net, weights, X).F


def log_softmax(xp, F):
    """Row-wise ``log softmax`` along the last axis (stable)."""
    mx = xp.max(F, axis=-1, keepdims=True)
    Z = F - mx
    return Z - xp.log(xp.sum(xp.exp(Z), axis=-1, keepdims=True))


def _softplus(xp, x):
    return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


def _delta_col(xp, delta_y, F):
    """``Δ_y`` broadcastable against ``F`` ``(S, m, C)``: a float, or ``(S,)`` → ``(S, 1, 1)``."""
    if hasattr(delta_y, "shape"):
        return xp.reshape(delta_y, (-1, 1, 1))
    return float(delta_y)


def loss_derivatives(likelihood: str, F, Y, delta_y=1.0):
    """Per-example loss ``ℓ`` and its output gradient ``∇_Fℓ``.

    Parameters
    ----------
    likelihood : {"gaussian", "categorical", "bernoulli"}
    F : array, shape (S, m, C)
    Y : array, shape (m, C)
        Targets (one-hot for ``"categorical"``, ``0/1`` for ``"bernoulli"``).
    delta_y : float or array of shape (S,)
        Gaussian noise variance.

    Returns
    -------
    loss : array, shape (S, m)
    dF : array, shape (S, m, C)
    """
    xp = namespace(F, Y)
    C = F.shape[-1]
    if likelihood == "gaussian":
        dy = _delta_col(xp, delta_y, F)
        r = F - Y
        log_term = 0.5 * C * (xp.log(2.0 * math.pi * dy) if hasattr(dy, "shape") else math.log(2.0 * math.pi * dy))
        loss = xp.sum(r * r / (2.0 * dy) + log_term / C, axis=-1)
        return loss, r / dy
    if likelihood == "categorical":
        logp = log_softmax(xp, F)
        return -xp.sum(Y * logp, axis=-1), xp.exp(logp) - Y
    if likelihood == "bernoulli":
        loss = xp.sum(_softplus(xp, F) - Y * F, axis=-1)
        p = xp.exp(-_softplus(xp, -F))
        return loss, p - Y
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")


def hessian_sqrt(likelihood: str, F, delta_y=1.0):
    """A square root ``S`` of the per-example loss Hessian, ``S Sᵀ = ∇²_Fℓ``.

    Returns
    -------
    array, shape (S, m, C, R)
        ``R = C`` (Gaussian: ``I/√Δ_y``; categorical: ``(δ_{cr} − p_c)√p_r``), ``R = 1`` (Bernoulli).
    """
    xp = namespace(F)
    Sb, m, C = F.shape
    if likelihood == "gaussian":
        eye = xp.eye(C, dtype=F.dtype, device=device_of(F))
        inv = 1.0 / xp.sqrt(_delta_col(xp, delta_y, F)) if hasattr(delta_y, "shape") else 1.0 / math.sqrt(delta_y)
        if hasattr(inv, "shape"):
            return xp.broadcast_to(eye[None, None, :, :] * inv[..., None], (Sb, m, C, C))
        return xp.broadcast_to(eye[None, None, :, :] * inv, (Sb, m, C, C))
    if likelihood == "categorical":
        p = xp.exp(log_softmax(xp, F))
        eye = xp.eye(C, dtype=F.dtype, device=device_of(F))
        return (eye[None, None, :, :] - p[..., :, None]) * xp.sqrt(p)[..., None, :]
    if likelihood == "bernoulli":
        p = xp.exp(-_softplus(xp, -F))
        return xp.sqrt(p * (1.0 - p))[..., None]
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")


def _sum_rows(xp, a):
    """Sum over the example axis (``-2``) → ``(..., d, 1)``."""
    return xp.sum(a, axis=-2)[..., None]


def _layer_outer(xp, D, H):
    """``Dᵀ [H 1]`` batched: ``D`` ``(S, m, d_out)``, ``H`` ``(m, d_in)`` or ``(S, m, d_in)`` →
    ``(S, d_out, d_in + 1)``."""
    return xp.concat([xp.matmul(_mT(xp, D), H), _sum_rows(xp, D)], axis=-1)


def backward(net: MLP, weights: Sequence, fwd: Pass, dF, *, curvature: Optional[str] = None, Sq=None):
    """Gradients of ``Σ_μ ℓ_μ`` and (optionally) a diagonal curvature, per layer.

    Parameters
    ----------
    weights : sequence of arrays ``(S, d_{l+1}, d_l + 1)``
    fwd : Pass
        From :func:`forward` with the same weights.
    dF : array, shape (S, m, C)
        ``∇_Fℓ`` per example.
    curvature : {None, "ggn", "ef"}
        ``"ggn"``: diagonal of the Gauss–Newton matrix ``Σ_μ J_μᵀ ∇²_Fℓ_μ J_μ`` (needs ``Sq``);
        ``"ef"``: sum of squared per-example gradients (the empirical Fisher's diagonal).
    Sq : array, shape (S, m, C, R)
        Loss-Hessian square root (:func:`hessian_sqrt`), for ``"ggn"``.

    Returns
    -------
    grads : tuple of arrays ``(S, d_{l+1}, d_l + 1)``
    curv : tuple of arrays (same shapes) or None
    """
    if curvature not in CURVATURES:
        raise ValueError(f"curvature must be one of {CURVATURES}, got {curvature!r}")
    xp = namespace(dF, *weights)
    L = len(weights)
    grads = [None] * L
    curv = [None] * L if curvature else None
    d = dF
    Q = None
    if curvature == "ggn":
        if Sq is None:
            raise ValueError("curvature='ggn' needs the loss-Hessian square root Sq")
        Q = [Sq[..., r] for r in range(Sq.shape[-1])]                 # R arrays (S, m, C)
    for l in range(L - 1, -1, -1):
        H = fwd.H[l]
        grads[l] = _layer_outer(xp, d, H)
        if curvature is not None:
            H2 = H * H
            c = d * d if curvature == "ef" else sum(q * q for q in Q)
            curv[l] = _layer_outer(xp, c, H2)
        if l > 0:
            fp = _act_deriv(xp, fwd.A[l - 1], net.activation, net.slope)
            Ww = weights[l][..., :-1]
            d = fp * xp.matmul(d, Ww)
            if Q is not None:
                Q = [fp * xp.matmul(q, Ww) for q in Q]
    return tuple(grads), (tuple(curv) if curv is not None else None)


def value_and_grad(net: MLP, weights: Sequence, X, Y, *, likelihood: str, delta_y=1.0,
                   curvature: Optional[str] = None):
    """Summed loss, its gradient and optional diagonal curvature of ``S`` networks on one batch.

    ``E_s = Σ_μ ℓ(y_μ, F_s(x_μ))`` for each batch member ``s``; one forward and one backward pass,
    ``O(S m P)`` (``O(S m R P)`` with ``curvature="ggn"``).

    Parameters
    ----------
    weights : sequence of arrays ``(S, d_{l+1}, d_l + 1)``
    X : array, shape (m, d_in)
    Y : array, shape (m, C)
    likelihood : {"gaussian", "categorical", "bernoulli"}
    delta_y : float or array (S,)
    curvature : {None, "ggn", "ef"}

    Returns
    -------
    E : array, shape (S,)
    grads : tuple of arrays ``(S, d_{l+1}, d_l + 1)``
    curv : tuple or None
    F : array, shape (S, m, C)
        The outputs (for residual-based noise updates).
    """
    xp = namespace(X, *weights)
    fwd = forward(net, weights, X)
    loss, dF = loss_derivatives(likelihood, fwd.F, Y, delta_y)
    Sq = hessian_sqrt(likelihood, fwd.F, delta_y) if curvature == "ggn" else None
    grads, curv = backward(net, weights, fwd, dF, curvature=curvature, Sq=Sq)
    return xp.sum(loss, axis=-1), grads, curv, fwd.F


# ---------------------------------------------------------------------------- input gate
# the standard net's input checks live in the input gate (blockbayes.inputs); re-exported here
from .inputs import check_X, encode_targets  # noqa: E402,F401
