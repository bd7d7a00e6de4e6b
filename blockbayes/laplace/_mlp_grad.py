"""Hand-written forward, backward and per-example Gauss–Newton pieces of the standard MLP.

No autograd. The forward pass, the back-propagation recursions and the likelihood derivatives
are those of :mod:`blockbayes.nn` (one implementation, batched over leading axes; here called
with the weights of one network); this module adds the Laplace family's chunked accumulations
(GGN blocks, diagonals, Kronecker factors, dense Jacobians) for the noise-free MLP of MATH.md §D.1

.. math::

    \\tilde H^l = [H^l\\ \\mathbf 1],\\quad A^{l+1} = \\tilde H^l \\tilde W^{l\\top},\\quad
    H^{l+1} = f(A^{l+1}),\\quad F = A^{L+1},

with weights ``W[l]`` of shape ``(d_{l+1}, d_l + 1)``, **bias in the last column** (the layout of
:mod:`blockbayes.model`), and the negative log posterior

.. math::

    E(\\theta) = \\sum_\\mu \\ell(y_\\mu, F_\\mu) + \\tfrac12 \\sum_{l,i}
    \\tilde w_{l,i}^\\top \\Lambda_l \\tilde w_{l,i}.

Conventions (0-based layer index ``l = 0..L-1``; ``W[l]`` maps ``\\tilde H^l`` to ``A^{l+1}``):

* ``Ht[l]`` — augmented input of layer ``l``, shape ``(m, d_l + 1)`` (ones last).
* ``A[l]`` — pre-activation *output* of layer ``l``, shape ``(m, d_{l+1})`` (``A[L-1] = F``).
* ``delta[l]`` — back-propagated error ``∂ℓ_μ/∂A[l]_{μi} = g_{μi}^\\top ∇_Fℓ_μ``, shape ``(m, d_{l+1})``.
* ``Q[l]`` — per-example Jacobian factor ``Q[l]_{μ,i,r} = (g_{μi}^\\top S_μ)_r`` with
  ``g_{μi} = ∂F_μ/∂A[l]_{μi}`` and ``S_μ S_μ^\\top = ∇²_F ℓ_μ`` (a square root of the loss Hessian),
  shape ``(m, d_{l+1}, R)``. With ``S = I`` it is the output Jacobian itself.

From these, the per-node quantities of (D.1) are

.. math::

    c_{μi} = \\lVert Q_{μ i :} \\rVert^2 = g_{μi}^\\top ∇²_Fℓ_μ\\, g_{μi},\\qquad
    \\nabla_{\\tilde w_{l,i}}E = \\tilde H^{l\\top} δ_{:,i} + Λ_l \\tilde w_{l,i},\\qquad
    \\mathcal G_{l,i} = Λ_l + \\sum_μ c_{μi}\\, \\tilde h_μ \\tilde h_μ^\\top,

and the layer Gauss–Newton matrix is ``Σ_μ (h̃_μ h̃_μᵀ) ⊗ B_μ`` with ``B_μ = Q_μ Q_μᵀ``
(MATH.md §D.6). Nothing here materialises the full ``(n, C, P)`` Jacobian except
:func:`jacobian` (used by the dense "full" structure and by tests), and every data-dependent
accumulation is chunked over the ``n`` axis (:func:`chunks`).

Likelihoods (``ℓ`` per example, targets ``Y`` always a float array of shape ``(m, C)``):

``"gaussian"``
    ``ℓ = ‖y − F‖²/(2Δ_y) + (C/2) log(2πΔ_y)``; ``∇_Fℓ = (F − y)/Δ_y``; ``S = I/√Δ_y``.
``"categorical"``
    softmax over the ``C`` logits, ``Y`` one-hot; ``ℓ = −Σ_c Y_c log p_c``; ``∇_Fℓ = p − Y``;
    ``∇²_Fℓ = diag(p) − ppᵀ`` with square root ``S_{cr} = (δ_{cr} − p_c)√p_r``.
``"bernoulli"``
    one logit, ``Y ∈ {0, 1}``; ``ℓ = softplus(F) − Y F``; ``∇_Fℓ = σ(F) − Y``;
    ``S = √(σ(F)(1 − σ(F)))``.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

from .._backend import device_of, namespace
from ..model import MLP, augment
from ..nn import (LIKELIHOODS, activation_derivative, backprop_errors, backprop_factors, backward, forward,
                  hessian_sqrt as _hessian_sqrt, logsumexp, softplus)
from ..nn import loss_derivatives as _loss_and_grad

__all__ = [
    "LIKELIHOODS",
    "Cache",
    "chunks",
    "auto_chunk",
    "activation_derivative",
    "forward_cache",
    "loss_derivatives",
    "backprop_errors",
    "backprop_factors",
    "node_weights",
    "weighted_gram",
    "layer_gradient",
    "prior_vector",
    "objective",
    "curvature",
    "jacobian",
    "output_jacobian_factors",
    "softplus",
    "logsumexp",
    "data_misfit",
]

#: Elements of scratch memory (per chunk) that the chunked loops aim for (~32 MiB in float64).
CHUNK_BUDGET = 1 << 22


class Cache(NamedTuple):
    """Forward-pass cache of one chunk of data.

    Attributes
    ----------
    Ht : tuple of arrays
        ``Ht[l]`` augmented input of layer ``l``, shape ``(m, d_l + 1)``, ones last.
    A : tuple of arrays
        ``A[l]`` pre-activation output of layer ``l``, shape ``(m, d_{l+1})``; ``A[-1] = F``.
    """

    Ht: tuple
    A: tuple

    @property
    def F(self):
        """Network output, shape ``(m, d_out)``."""
        return self.A[-1]


# ---------------------------------------------------------------------------- small utilities
def chunks(n: int, size: int):
    """``(start, stop)`` pairs covering ``range(n)`` in blocks of ``size``."""
    size = max(1, int(size))
    for s in range(0, n, size):
        yield s, min(n, s + size)


def auto_chunk(n: int, per_example: int, chunk_size=None) -> int:
    """Chunk length: ``chunk_size`` if given, else ``CHUNK_BUDGET // per_example`` (at least 1)."""
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        return min(n, chunk_size) if n > 0 else 1
    return max(1, min(n, CHUNK_BUDGET // max(1, int(per_example))))


def prior_vector(xp, lam_w: float, lam_b: float, d_in: int, *, dtype, device):
    """Diagonal of ``Λ_l`` for one row: ``(λ_W, …, λ_W, λ_b)``, shape ``(d_in + 1,)`` (bias last)."""
    w = xp.full((d_in,), float(lam_w), dtype=dtype, device=device)
    b = xp.full((1,), float(lam_b), dtype=dtype, device=device)
    return xp.concat([w, b])


# ---------------------------------------------------------------------------- forward / backward
def forward_cache(net: MLP, weights: Sequence, X) -> Cache:
    """Forward pass keeping what the backward pass needs.

    Parameters
    ----------
    net : MLP
    weights : sequence of arrays
        ``weights[l]`` of shape ``(d_{l+1}, d_l + 1)``, bias last.
    X : array, shape (m, d_in)

    Returns
    -------
    Cache
        ``Ht[l]`` of shape ``(m, d_l + 1)`` and ``A[l]`` of shape ``(m, d_{l+1})``.
        Cost ``O(m P)``.
    """
    fwd = forward(net, weights, X)
    return Cache(tuple(augment(H) for H in fwd.H), fwd.A)


def node_weights(Q):
    """``c_{μi} = Σ_r Q_{μir}²`` (the (D.1) weight of data point ``μ`` for node ``i``), shape ``(m, d)``."""
    xp = namespace(Q)
    return xp.sum(Q * Q, axis=-1)


def weighted_gram(Ht, c):
    """Per-node weighted Gram matrices ``G_i = Σ_μ c_{μi} h̃_μ h̃_μᵀ``.

    The einsum ``'mi,mj,mk->ijk'`` written as one batched matmul (the Array API has no einsum).

    Parameters
    ----------
    Ht : array, shape (m, k)
    c : array, shape (m, d)

    Returns
    -------
    array, shape (d, k, k)
        Memory of the intermediate ``m·d·k``; callers chunk over ``m``.
    """
    xp = namespace(Ht, c)
    Hc = c[:, :, None] * Ht[:, None, :]                       # (m, d, k)
    return xp.matmul(xp.permute_dims(Hc, (1, 2, 0)), Ht)       # (d, k, m) @ (m, k)


def layer_gradient(delta, Ht):
    """Data part of the gradient of one layer, ``δᵀ H̃``, shape ``(d_{l+1}, d_l + 1)``."""
    xp = namespace(delta, Ht)
    return xp.matmul(xp.matrix_transpose(delta), Ht)


# ---------------------------------------------------------------------------- likelihoods
def loss_derivatives(likelihood: str, F, Y, delta_y: float = 1.0, *, hessian_sqrt: bool = True,
                     unit_noise: bool = False):
    """Per-example loss, its gradient and a square root of its Hessian in ``F``.

    :func:`blockbayes.nn.loss_derivatives` and :func:`blockbayes.nn.hessian_sqrt` in one call.

    Parameters
    ----------
    likelihood : {"gaussian", "categorical", "bernoulli"}
    F : array, shape (m, C)
    Y : array, shape (m, C)
        Targets (one-hot for ``"categorical"``; ``0/1`` for ``"bernoulli"``).
    delta_y : float
        Gaussian noise variance ``Δ_y``.
    hessian_sqrt : bool
        Also return ``S`` with ``S Sᵀ = ∇²_F ℓ``.
    unit_noise : bool
        Gaussian only: return ``S = I`` (the curvature at ``Δ_y = 1``; multiply by ``1/Δ_y``
        afterwards). Lets hyperparameter optimisation rescale one stored curvature.

    Returns
    -------
    loss : array, shape (m,)
    dF : array, shape (m, C)
    S : array, shape (m, C, R) or None
    """
    loss, dF = _loss_and_grad(likelihood, F, Y, delta_y)
    S = _hessian_sqrt(likelihood, F, delta_y, unit_noise=unit_noise) if hessian_sqrt else None
    return loss, dF, S


# ---------------------------------------------------------------------------- full-data passes
def objective(net: MLP, weights: Sequence, X, Y, *, likelihood: str, lam_w, lam_b,
              delta_y: float = 1.0, grad: bool = True, chunk_size=None, scale: float = 1.0):
    """Negative log posterior ``E(θ)`` (up to the prior's normaliser) and its gradient.

    ``E = scale · Σ_μ ℓ(y_μ, F_μ) + ½ Σ_l Σ_i w̃_{l,i}ᵀ Λ_l w̃_{l,i}``; ``scale = n/|B|`` gives the
    unbiased minibatch estimate. One chunked forward/backward pass, ``O(n P)``.

    Parameters
    ----------
    weights : sequence of arrays ``(d_{l+1}, d_l + 1)``
    X : array, shape (n, d_in)
    Y : array, shape (n, C)
    lam_w, lam_b : sequence of float
        Per-layer prior precisions of weights and biases.

    Returns
    -------
    E : 0-d array
    grads : tuple of arrays (same shapes as ``weights``) or None
    """
    xp = namespace(X, *weights)
    n = X.shape[0]
    per_ex = sum(int(W.shape[0]) * 3 for W in weights) + 2 * int(X.shape[1])
    step = auto_chunk(n, per_ex, chunk_size)
    dtype, dev = X.dtype, device_of(X)
    total = xp.zeros((), dtype=dtype, device=dev)
    grads = [xp.zeros_like(W) for W in weights] if grad else None
    for s, e in chunks(n, step):
        fwd = forward(net, weights, X[s:e, :])
        loss, dF = _loss_and_grad(likelihood, fwd.F, Y[s:e, :], delta_y)
        total = total + xp.sum(loss)
        if grad:
            g, _ = backward(net, weights, fwd, dF)
            grads = [a + b for a, b in zip(grads, g)]
    total = total * scale
    for l, W in enumerate(weights):
        lam = prior_vector(xp, lam_w[l], lam_b[l], W.shape[1] - 1, dtype=dtype, device=dev)
        total = total + 0.5 * xp.sum(lam[None, :] * W * W)
        if grad:
            grads[l] = grads[l] * scale + lam[None, :] * W
    return total, (tuple(grads) if grad else None)


def curvature(net: MLP, weights: Sequence, X, Y, *, likelihood: str, layers: Sequence[int],
              kinds: Sequence[str], delta_y: float = 1.0, unit_noise: bool = True,
              gradient: bool = False, chunk_size=None):
    """Gauss–Newton curvature of the data term (no prior), accumulated in one chunked pass.

    For each requested layer ``l`` (``k = d_l + 1``, ``d = d_{l+1}``):

    ``"block"``  node blocks ``G[l]_i = Σ_μ c_{μi} h̃_μ h̃_μᵀ``, shape ``(d, k, k)`` (MATH (D.1)).
    ``"diag"``   exact GGN diagonal ``D[l]_{ij} = Σ_μ c_{μi} h̃_{μj}²``, shape ``(d, k)``.
    ``"kfac"``   Kronecker factors ``A[l] = (1/n) Σ_μ h̃_μ h̃_μᵀ`` ``(k, k)`` and
                 ``B[l] = Σ_μ Q_μ Q_μᵀ`` ``(d, d)``, so that the layer GGN ``≈ B ⊗ A`` (row-major
                 parameter order ``(i, j) → i·k + j``; MATH §D.6).
    ``"full"``   the dense GGN over the requested layers, ``Σ_μ J_μᵀ ∇²ℓ_μ J_μ``, shape ``(P, P)``,
                 parameters ordered layer by layer, each row-major.

    Parameters
    ----------
    layers : sequence of int
        Active layers (sorted ascending in the output).
    kinds : sequence of {"block", "diag", "kfac", "full"}
    unit_noise : bool
        Gaussian likelihood: the curvature at ``Δ_y = 1`` (scale by ``1/Δ_y`` to use).
    gradient : bool
        Also accumulate the data part of the gradient of the requested layers and the loss sum.

    Returns
    -------
    dict
        Keys among ``"block"``, ``"diag"``, ``"A"``, ``"B"`` (dicts by layer), ``"full"``,
        ``"loss"`` (0-d), ``"grad"`` (dict by layer) and ``"n"``.
    """
    xp = namespace(X, *weights)
    layers = sorted(set(int(l) for l in layers))
    kinds = set(kinds)
    bad = kinds - {"block", "diag", "kfac", "full"}
    if bad:
        raise ValueError(f"unknown curvature kinds {sorted(bad)}")
    n = X.shape[0]
    C = int(weights[-1].shape[0])
    shapes = {l: (int(weights[l].shape[0]), int(weights[l].shape[1])) for l in layers}
    P = sum(d * k for d, k in shapes.values())
    per_ex = C * sum(int(W.shape[0]) for W in weights) + sum(int(W.shape[1]) for W in weights)
    if "block" in kinds:
        per_ex += max(d * k for d, k in shapes.values())
    if "full" in kinds:
        per_ex += P * C
    step = auto_chunk(n, per_ex, chunk_size)
    dtype, dev = X.dtype, device_of(X)
    out = {"n": n}
    blk = {l: xp.zeros((d, k, k), dtype=dtype, device=dev) for l, (d, k) in shapes.items()} if "block" in kinds else None
    dg = {l: xp.zeros((d, k), dtype=dtype, device=dev) for l, (d, k) in shapes.items()} if "diag" in kinds else None
    KA = {l: xp.zeros((k, k), dtype=dtype, device=dev) for l, (d, k) in shapes.items()} if "kfac" in kinds else None
    KB = {l: xp.zeros((d, d), dtype=dtype, device=dev) for l, (d, k) in shapes.items()} if "kfac" in kinds else None
    full = xp.zeros((P, P), dtype=dtype, device=dev) if "full" in kinds else None
    grads = {l: xp.zeros((d, k), dtype=dtype, device=dev) for l, (d, k) in shapes.items()} if gradient else None
    loss_sum = xp.zeros((), dtype=dtype, device=dev)
    for s, e in chunks(n, step):
        m = e - s
        cache = forward_cache(net, weights, X[s:e, :])
        loss, dF, S = loss_derivatives(likelihood, cache.F, Y[s:e, :], delta_y, unit_noise=unit_noise)
        Q = backprop_factors(net, weights, cache, S, layers)
        if gradient:
            loss_sum = loss_sum + xp.sum(loss)
            deltas = backprop_errors(net, weights, cache, dF, lowest=layers[0])
        phis = []
        for l in layers:
            Ht, Ql = cache.Ht[l], Q[l]
            d, k = shapes[l]
            if blk is not None or dg is not None:
                c = node_weights(Ql)
                if blk is not None:
                    blk[l] = blk[l] + weighted_gram(Ht, c)
                if dg is not None:
                    dg[l] = dg[l] + xp.matmul(xp.matrix_transpose(c), Ht * Ht)
            if KA is not None:
                KA[l] = KA[l] + xp.matmul(xp.matrix_transpose(Ht), Ht)
                M = xp.reshape(xp.permute_dims(Ql, (1, 0, 2)), (d, -1))
                KB[l] = KB[l] + xp.matmul(M, xp.matrix_transpose(M))
            if full is not None:
                R = Ql.shape[2]
                phis.append(xp.reshape(Ql[:, :, None, :] * Ht[:, None, :, None], (m, d * k, R)))
            if gradient:
                grads[l] = grads[l] + layer_gradient(deltas[l], Ht)
        if full is not None:
            Phi = xp.concat(phis, axis=1) if len(phis) > 1 else phis[0]           # (m, P, R)
            M = xp.reshape(xp.permute_dims(Phi, (1, 0, 2)), (P, -1))
            full = full + xp.matmul(M, xp.matrix_transpose(M))
    if blk is not None:
        out["block"] = blk
    if dg is not None:
        out["diag"] = dg
    if KA is not None:
        out["A"] = {l: KA[l] / n for l in layers}
        out["B"] = KB
    if full is not None:
        out["full"] = (full + xp.matrix_transpose(full)) / 2
    if gradient:
        out["grad"] = grads
        out["loss"] = loss_sum
    return out


def output_jacobian_factors(net: MLP, weights: Sequence, X, layers: Sequence[int]):
    """Output and per-layer output Jacobians at ``X`` (``V = I`` in :func:`backprop_factors`).

    Returns
    -------
    F : array, shape (m, C)
    Ht : dict
        ``{l: H̃[l]}``, shape ``(m, d_l + 1)``.
    G : dict
        ``{l: ∂F/∂A[l]}`` stored as ``(m, d_{l+1}, C)`` (``G[l]_{μ i c} = ∂F_{μc}/∂A[l]_{μi}``).
        The Jacobian of ``F_{μc}`` in row ``i`` of layer ``l`` is ``G[l]_{μic} h̃_μ``.
    """
    xp = namespace(X, *weights)
    cache = forward_cache(net, weights, X)
    m = X.shape[0]
    C = int(weights[-1].shape[0])
    eye = xp.eye(C, dtype=X.dtype, device=device_of(X))
    V = xp.broadcast_to(eye[None, :, :], (m, C, C))
    G = backprop_factors(net, weights, cache, V, layers)
    return cache.F, {l: cache.Ht[l] for l in layers}, G


def jacobian(net: MLP, weights: Sequence, X, layers: Sequence[int]):
    """Dense per-example Jacobian ``∂F_{μc}/∂θ`` over the given layers, shape ``(m, C, P)``.

    Parameter order: layer by layer (ascending), each ``(d_{l+1}, d_l + 1)`` row-major. Memory
    ``m·C·P``: meant for the dense "full" structure and tests, not for large nets.
    """
    xp = namespace(X, *weights)
    layers = sorted(set(int(l) for l in layers))
    F, Ht, G = output_jacobian_factors(net, weights, X, layers)
    m, C = F.shape
    parts = []
    for l in layers:
        d, k = int(weights[l].shape[0]), int(weights[l].shape[1])
        Gl = xp.permute_dims(G[l], (0, 2, 1))                                   # (m, C, d)
        parts.append(xp.reshape(Gl[:, :, :, None] * Ht[l][:, None, None, :], (m, C, d * k)))
    return xp.concat(parts, axis=2) if len(parts) > 1 else parts[0]


def data_misfit(net: MLP, weights: Sequence, X, Y, *, likelihood: str, chunk_size=None):
    """Data-fit statistic at ``weights``: ``Σ_μ ‖y_μ − F_μ‖²`` (gaussian) or ``Σ_μ ℓ_μ`` (others), 0-d.

    The Gaussian log likelihood at any noise variance is then
    ``−SSE/(2Δ_y) − (nC/2) log(2πΔ_y)``.
    """
    xp = namespace(X, *weights)
    n = X.shape[0]
    per_ex = sum(int(W.shape[0]) + int(W.shape[1]) for W in weights)
    total = xp.zeros((), dtype=X.dtype, device=device_of(X))
    for s, e in chunks(n, auto_chunk(n, per_ex, chunk_size)):
        cache = forward_cache(net, weights, X[s:e, :])
        if likelihood == "gaussian":
            r = cache.F - Y[s:e, :]
            total = total + xp.sum(r * r)
        else:
            loss, _, _ = loss_derivatives(likelihood, cache.F, Y[s:e, :], hessian_sqrt=False)
            total = total + xp.sum(loss)
    return total
