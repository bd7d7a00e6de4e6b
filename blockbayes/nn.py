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

Every function also accepts weights without the batch axis (``(d_{l+1}, d_l + 1)``, one
network) or with several leading axes: the forward loop is
:func:`blockbayes.model.forward_layers` (also behind :func:`blockbayes.model.forward`) and the
recursions broadcast over ``...``. This is the one forward/backward/GGN of the standard
network: the Laplace family's chunked curvature accumulations (``blockbayes.laplace``),
mean-field VI, IVON and VOGN all call it.

The module also holds the input gate of the standard network (:func:`resolve_likelihood`,
:func:`check_X`, :func:`encode_targets`).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

from ._backend import device_of, namespace
from .model import MLP, forward_layers

__all__ = ["LIKELIHOODS", "Pass", "forward", "output", "activation_derivative", "loss_derivatives",
           "hessian_sqrt", "backprop_errors", "backprop_factors", "backward", "value_and_grad",
           "resolve_likelihood", "check_X", "encode_targets", "log_softmax", "logsumexp", "softplus",
           "smoothed_activation", "SMOOTHABLE"]

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


def activation_derivative(xp, A, activation: str, slope: float = 0.0):
    """Elementwise ``f'(A)`` (``relu``: ``1[A > 0]``; ``leaky_relu``: ``1`` or ``slope``; ``identity``: 1)."""
    if activation == "identity":
        return xp.ones_like(A)
    if activation == "relu":
        return xp.astype(A > 0, A.dtype)
    if activation == "leaky_relu":
        one = xp.ones_like(A)
        return xp.where(A >= 0, one, slope * one)
    raise ValueError(f"unknown activation {activation!r}")


def forward(net: MLP, weights: Sequence, X, xp=None) -> Pass:
    """Forward pass of ``S`` networks on the same (or per-member) inputs.

    :func:`blockbayes.model.forward_layers` (the one forward loop, also behind
    :func:`blockbayes.model.forward`): ``A^l = H^l W_w^{l⊤} + b^l`` by
    :func:`blockbayes.model.affine`, ``H^{l+1} = f(A^l)``.

    Parameters
    ----------
    net : MLP
    weights : sequence of arrays
        ``weights[l]`` of shape ``(S, d_{l+1}, d_l + 1)`` (or ``(d_{l+1}, d_l + 1)``, or any
        leading axes), bias last.
    X : array, shape (m, d_in) or (S, m, d_in)

    Returns
    -------
    Pass
        Inputs ``H`` and pre-activations ``A`` of every layer. Cost ``O(S m P)``.
    """
    return Pass(*forward_layers(net, weights, X, xp))


def output(net: MLP, weights: Sequence, X):
    """Network outputs ``F``, shape ``(S, m, d_out)`` (see :func:`forward`)."""
    return forward(net, weights, X).F


def softplus(xp, x):
    """``log(1 + e^x)`` without overflow: ``max(x, 0) + log1p(e^{-|x|})``."""
    return xp.maximum(x, xp.zeros_like(x)) + xp.log1p(xp.exp(-xp.abs(x)))


#: Hidden activations that :func:`smoothed_activation` smooths (``"identity"`` is smooth already).
SMOOTHABLE = ("relu", "leaky_relu")


def smoothed_activation(xp, A, activation: str, slope: float, beta: float):
    """The softplus smoothing of a (leaky) ReLU and its derivative, ``(f_β(A), f_β'(A))``.

    .. math:: s_β(a) = \\frac{\\log(1 + e^{βa})}{β} = \\max(a, 0) + \\frac{\\log1p(e^{-β|a|})}{β},
              \\qquad s_β'(a) = σ(βa),

    ``relu``: ``f_β = s_β``, ``f_β' = σ(βA)``; ``leaky_relu`` (``f(a) = slope·a + (1 − slope)·max(a, 0)``):
    ``f_β = slope·A + (1 − slope)·s_β(A)``, ``f_β' = slope + (1 − slope)·σ(βA)``. Both tend to the
    activation and its derivative (away from 0) as ``β → ∞``: ``0 ≤ f_β − f ≤ (1 − slope)·log 2/β``.
    The sigmoid is ``1/(1 + e)`` for ``βA ≥ 0`` and ``e/(1 + e)`` otherwise, with ``e = e^{−β|A|} ∈ (0, 1]``:
    no exponential of a positive number, so nothing overflows in float32 or float64.

    Parameters
    ----------
    A : array, any shape (pre-activations)
    activation : {"relu", "leaky_relu"}
    slope : float
        Negative-side slope of ``"leaky_relu"`` (ignored for ``"relu"``).
    beta : float
        Sharpness ``β > 0``.

    Returns
    -------
    H, fp : arrays shaped like ``A``, in its dtype
    """
    if activation not in SMOOTHABLE:
        raise ValueError(f"only {SMOOTHABLE} hidden activations can be smoothed, got {activation!r}")
    z = beta * A
    e = xp.exp(-xp.abs(z))                                   # in (0, 1]
    s = xp.maximum(A, xp.zeros_like(A)) + xp.log1p(e) / beta
    one = 1.0 + e
    sig = xp.where(z >= 0, 1.0 / one, e / one)
    if activation == "relu":
        return s, sig
    return slope * A + (1.0 - slope) * s, slope + (1.0 - slope) * sig


def logsumexp(xp, x, axis=-1, keepdims=False):
    """Stable ``log Σ exp(x)`` along ``axis``."""
    m = xp.max(x, axis=axis, keepdims=True)
    out = m + xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else xp.squeeze(out, axis=axis)


def log_softmax(xp, F):
    """Row-wise ``log softmax`` along the last axis (stable)."""
    return F - logsumexp(xp, F, axis=-1, keepdims=True)


def _delta_cols(xp, delta_y, F):
    """``Δ_y`` for the loss ``(S, m)`` and for ``F`` ``(S, m, C)``: floats, or ``(S,)`` reshaped."""
    if hasattr(delta_y, "shape"):
        return xp.reshape(delta_y, (-1, 1)), xp.reshape(delta_y, (-1, 1, 1))
    return float(delta_y), float(delta_y)


def loss_derivatives(likelihood: str, F, Y, delta_y=1.0, xp=None):
    """Per-example loss ``ℓ`` and its output gradient ``∇_Fℓ``.

    Parameters
    ----------
    likelihood : {"gaussian", "categorical", "bernoulli"}
    F : array, shape (..., m, C)
    Y : array, shape (m, C)
        Targets (one-hot for ``"categorical"``, ``0/1`` for ``"bernoulli"``).
    delta_y : float or array of shape (S,)
        Gaussian noise variance (an array needs ``F`` of shape ``(S, m, C)``).

    Returns
    -------
    loss : array, shape (..., m)
        Gaussian: ``‖y − F‖²/(2Δ_y) + (C/2) log(2πΔ_y)``.
    dF : array, shape (..., m, C)
    """
    if xp is None:
        xp = namespace(F, Y)
    C = F.shape[-1]
    if likelihood == "gaussian":
        dl, dF_ = _delta_cols(xp, delta_y, F)
        r = F - Y
        log_norm = (0.5 * C * xp.log(2.0 * math.pi * dl) if hasattr(dl, "shape")
                    else 0.5 * C * math.log(2.0 * math.pi * dl))
        return xp.sum(r * r, axis=-1) / (2.0 * dl) + log_norm, r / dF_
    if likelihood == "categorical":
        logp = log_softmax(xp, F)
        return -xp.sum(Y * logp, axis=-1), xp.exp(logp) - Y
    if likelihood == "bernoulli":
        loss = xp.sum(softplus(xp, F) - Y * F, axis=-1)
        p = xp.exp(-softplus(xp, -F))                              # σ(F), stable
        return loss, p - Y
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")


def hessian_sqrt(likelihood: str, F, delta_y=1.0, *, unit_noise: bool = False, xp=None):
    """A square root ``S`` of the per-example loss Hessian, ``S Sᵀ = ∇²_Fℓ``.

    Parameters
    ----------
    F : array, shape (..., m, C)
    delta_y : float or array of shape (S,)
    unit_noise : bool
        Gaussian only: ``S = I`` (the curvature at ``Δ_y = 1``; scale by ``1/Δ_y`` afterwards).

    Returns
    -------
    array, shape (..., m, C, R)
        ``R = C`` (Gaussian: ``I/√Δ_y``; categorical: ``(δ_{cr} − p_c)√p_r``), ``R = 1`` (Bernoulli).
    """
    if xp is None:
        xp = namespace(F)
    C = F.shape[-1]
    if likelihood == "gaussian":
        eye = xp.eye(C, dtype=F.dtype, device=device_of(F))
        if unit_noise:
            return xp.broadcast_to(eye, tuple(F.shape) + (C,))
        if hasattr(delta_y, "shape"):
            inv = 1.0 / xp.sqrt(_delta_cols(xp, delta_y, F)[1])
            return xp.broadcast_to(eye * inv[..., None], tuple(F.shape) + (C,))
        return xp.broadcast_to(eye * (1.0 / math.sqrt(delta_y)), tuple(F.shape) + (C,))
    if likelihood == "categorical":
        p = xp.exp(log_softmax(xp, F))
        eye = xp.eye(C, dtype=F.dtype, device=device_of(F))
        return (eye - p[..., :, None]) * xp.sqrt(p)[..., None, :]
    if likelihood == "bernoulli":
        p = xp.exp(-softplus(xp, -F))
        return xp.sqrt(p * (1.0 - p))[..., None]
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")


def backprop_errors(net: MLP, weights: Sequence, fwd, dF, *, lowest: int = 0, xp=None):
    """Back-propagate ``∇_Fℓ`` to every layer's pre-activation.

    ``δ[L-1] = dF`` and ``δ[l-1] = f'(A[l-1]) ⊙ (δ[l] W_w[l])`` (``W_w`` = ``W`` without the bias
    column). Layers below ``lowest`` are skipped (their entries are ``None``).

    Parameters
    ----------
    fwd : Pass
        From :func:`forward` (only ``fwd.A`` is read).
    dF : array, shape (..., m, d_out)

    Returns
    -------
    list of arrays
        ``δ[l]`` of shape ``(..., m, d_{l+1})``. Cost ``O(S m P)``.
    """
    if xp is None:
        xp = namespace(dF)
    L = len(weights)
    deltas = [None] * L
    d = dF
    deltas[L - 1] = d
    for l in range(L - 1, lowest, -1):
        fp = activation_derivative(xp, fwd.A[l - 1], net.activation, net.slope)
        d = fp * xp.matmul(d, weights[l][..., :-1])
        deltas[l - 1] = d
    return deltas


def backprop_factors(net: MLP, weights: Sequence, fwd, V, layers: Sequence[int], xp=None):
    """Back-propagate a stack of output vectors ``V`` to the requested layers.

    ``Q[L-1] = V`` and ``Q[l-1] = f'(A[l-1])[..., None] ⊙ (W_w[l]ᵀ Q[l])``, i.e.
    ``Q[l]_{μ i r} = Σ_c (∂F_{μc}/∂A[l]_{μi}) V_{μ c r}``. With ``V = S`` (loss-Hessian square root,
    :func:`hessian_sqrt`) the node curvatures are ``c = Σ_r Q²``; with ``V = I`` ``Q`` is the
    Jacobian ``∂F/∂A[l]``.

    Parameters
    ----------
    fwd : Pass
        From :func:`forward` (only ``fwd.A`` is read).
    V : array, shape (..., m, d_out, R)
    layers : sequence of int
        Layers wanted (others are not stored; the recursion stops at the lowest one).

    Returns
    -------
    dict
        ``{l: Q[l]}`` with ``Q[l]`` of shape ``(..., m, d_{l+1}, R)``. Cost ``O(S m R P)``.
    """
    if xp is None:
        xp = namespace(V)
    L = len(weights)
    want = set(int(l) for l in layers)
    out = {}
    if not want:
        return out
    lowest = min(want)
    Q = V
    if L - 1 in want:
        out[L - 1] = Q
    for l in range(L - 1, lowest, -1):
        WwT = xp.expand_dims(_mT(xp, weights[l][..., :-1]), axis=-3)     # (..., 1, d_l, d_{l+1})
        fp = activation_derivative(xp, fwd.A[l - 1], net.activation, net.slope)
        Q = fp[..., None] * xp.matmul(WwT, Q)
        if l - 1 in want:
            out[l - 1] = Q
    return out


def _sum_rows(xp, a):
    """Sum over the example axis (``-2``) → ``(..., d, 1)``."""
    return xp.sum(a, axis=-2)[..., None]


def _layer_outer(xp, D, H):
    """``Dᵀ [H 1]`` batched: ``D`` ``(S, m, d_out)``, ``H`` ``(m, d_in)`` or ``(S, m, d_in)`` →
    ``(S, d_out, d_in + 1)``."""
    return xp.concat([xp.matmul(_mT(xp, D), H), _sum_rows(xp, D)], axis=-1)


def backward(net: MLP, weights: Sequence, fwd: Pass, dF, *, curvature: Optional[str] = None, Sq=None, xp=None):
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
    if curvature == "ggn" and Sq is None:
        raise ValueError("curvature='ggn' needs the loss-Hessian square root Sq")
    if xp is None:
        xp = namespace(dF, *weights)
    L = len(weights)
    deltas = backprop_errors(net, weights, fwd, dF, xp=xp)
    Q = backprop_factors(net, weights, fwd, Sq, range(L), xp) if curvature == "ggn" else None
    grads = [_layer_outer(xp, deltas[l], fwd.H[l]) for l in range(L)]
    curv = None
    if curvature is not None:
        curv = []
        for l in range(L):
            c = deltas[l] * deltas[l] if curvature == "ef" else xp.sum(Q[l] * Q[l], axis=-1)
            curv.append(_layer_outer(xp, c, fwd.H[l] * fwd.H[l]))
    return tuple(grads), (tuple(curv) if curv is not None else None)


def value_and_grad(net: MLP, weights: Sequence, X, Y, *, likelihood: str, delta_y=1.0,
                   curvature: Optional[str] = None, xp=None):
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
    xp : namespace, optional
        The arrays' namespace when the caller knows it already (hot loops of small steps, e.g.
        NumPy's own namespace, see :func:`blockbayes._backend.fast_namespace`); default: looked up.
        The same arithmetic either way.

    Returns
    -------
    E : array, shape (S,)
    grads : tuple of arrays ``(S, d_{l+1}, d_l + 1)``
    curv : tuple or None
    F : array, shape (S, m, C)
        The outputs (for residual-based noise updates).
    """
    if xp is None:
        xp = namespace(X, *weights)
    fwd = forward(net, weights, X, xp)
    loss, dF = loss_derivatives(likelihood, fwd.F, Y, delta_y, xp)
    Sq = hessian_sqrt(likelihood, fwd.F, delta_y, xp=xp) if curvature == "ggn" else None
    grads, curv = backward(net, weights, fwd, dF, curvature=curvature, Sq=Sq, xp=xp)
    return xp.sum(loss, axis=-1), grads, curv, fwd.F


# ---------------------------------------------------------------------------- input gate
# the standard net's input checks live in the input gate (blockbayes.inputs); re-exported here
from .inputs import check_X, encode_targets  # noqa: E402,F401
