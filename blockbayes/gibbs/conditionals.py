"""The closed-form conditionals of the noisy MLP (MATH.md §A, §B), batched over chains.

Each function draws one block given everything else: the node rows of a layer (A.1), the
post-activations (A.2), the pre-activations (A.3), Gamma precisions (A.5) and the probit
utilities (§B). :func:`blockbayes.gibbs.kernel.step` composes them into a sweep.
"""
from __future__ import annotations

import math

from .. import kernels
from .._backend import device_of, namespace
from .._backend import linalg
from .._backend import random as bbr
from ..blocks import augmented_cross, augmented_stats64, diag_embed, eye, onehot
from ..model import MLP

__all__ = ["sample_rows", "sample_post", "sample_pre", "sample_precision", "sample_latent",
           "initial_latent", "output_targets"]


def sample_rows(key, H, T, prior_diag, delta, *, gram=None, chol=None):
    """Draw all node rows of one layer (A.1), batched over chains.

    ``w̃_i ~ N(m_i, P^{-1})`` independently for every output node ``i``, with
    ``P = Λ + G/Δ``, ``G = H̃^⊤ H̃``, ``m_i = P^{-1} H̃^⊤ T_{:,i} / Δ``. Computed as
    ``W̃^⊤ = R^{-⊤}(R^{-1} H̃^⊤ T + √Δ E)`` with ``R R^⊤ = ΔΛ + G`` (the Cholesky of the scaled
    precision, never an inverse) and ``E`` standard normal.

    Parameters
    ----------
    key : key
    H : array, shape (C, n, d) or (n, d)
        Inputs of the layer (post-activations of the layer below, or the data).
    T : array, shape (C, n, k)
        Targets (pre-activations of the layer above, or ``y``).
    prior_diag : array, shape (C, d + 1)
        Diagonal of ``Λ`` (bias last).
    delta : array, shape (C,)
        Noise variance ``Δ`` of the targets.
    gram : array, shape (C or 1, d + 1, d + 1), optional
        Precomputed ``H̃^⊤ H̃``.
    chol : array, shape (d + 1, d + 1), optional
        Precomputed Cholesky of ``ΔΛ + G`` (valid only if it is the same for all chains).

    Returns
    -------
    W : array, shape (C, k, d + 1), ``T``'s dtype

    Precision (design note 52): the factorisation and solves run in float64 whatever the chain's
    dtype, and so do the products they are given when neither ``gram`` nor ``chol`` is (the hidden
    and output layers: :func:`blockbayes.blocks.augmented_stats64`, one float64 cast of each row
    block for both ``G`` and ``H̃^⊤T``). A float32 Gram made the output layer's ``G + ΔΛ``
    indefinite on Naval; a float32 ``H̃^⊤T`` moves the mean along ill-conditioned directions by
    many posterior sds. With ``gram``/``chol`` given (the data layer: a float64 Gram from
    :func:`blockbayes.gibbs.kernel.precompute`), ``H̃^⊤T`` is taken in the data's dtype — recasting
    the data every sweep would cost more than the sweep on wide inputs; pass float64 data where
    the inputs are collinear and that rounding matters.
    """
    xp = namespace(T)
    if chol is None and gram is None:
        G, B = augmented_stats64(xp, H, T)
    else:
        G, B = gram, augmented_cross(xp, H, T)
    if chol is None:
        W = kernels.gaussian_rows(key, B, delta, gram=G, prior_diag=prior_diag)
    else:
        W = kernels.gaussian_rows(key, B, delta, chol=chol)
    return W if W.dtype == T.dtype else xp.astype(W, T.dtype)


def sample_post(key, F, W_next, T_next, delta_x, delta_next, *, method="auto"):
    """Draw the post-activations ``X^l`` of one hidden layer (A.2), batched over chains and data.

    ``x_μ ~ N(Q^{-1} r_μ, Q^{-1})`` with ``Q = I/Δ_X + W^⊤W/Δ'`` and
    ``r_μ = f(z_μ)/Δ_X + W^⊤(t_μ − b)/Δ'`` where ``(W, b)`` are the next layer's weights and
    ``t_μ`` its targets with noise ``Δ'``.

    ``method="cholesky"`` factorises ``Δ_X Q = I + (Δ_X/Δ') W^⊤W`` and solves with ``n``
    right-hand sides (cost ``O(n d² + d³)``); ``method="matheron"`` draws
    ``x₀ ~ N(f(z), Δ_X I)``, ``e ~ N(0, Δ' I)`` and returns
    ``x₀ + Δ_X W^⊤ (Δ_X W W^⊤ + Δ' I)^{-1} (t − b − W x₀ − e)`` (cost ``O(n d k + k³)``), exact
    too and cheaper when the next layer is narrower (``k < d``); ``"auto"`` picks that rule.

    Parameters
    ----------
    key : key
    F : array, shape (C, n, d)
        ``f(Z^l)``.
    W_next : array, shape (C, k, d + 1)
        Weights of the next layer (bias last).
    T_next : array, shape (C, n, k)
        Next layer's targets (``Z^{l+1}`` or ``y``).
    delta_x : float or array of shape (C,)
        ``Δ_X^l``, shared or per chain.
    delta_next : array, shape (C,)
        ``Δ_Z^{l+1}`` (or ``Δ_y``) per chain.
    """
    xp = namespace(F)
    C, n, d = F.shape
    k = W_next.shape[-2]
    Wh = W_next[..., :-1]            # (C, k, d)
    b = W_next[..., -1]              # (C, k)
    if method == "auto":
        method = "matheron" if k < d else "cholesky"
    k1, k2 = bbr.split(key, 2)
    if isinstance(delta_x, (int, float)):
        sx = math.sqrt(delta_x)
    else:                                        # per chain, as (C, 1, 1)
        delta_x = xp.reshape(xp.astype(delta_x, F.dtype), (C, 1, 1))
        sx = xp.sqrt(delta_x)
    if method == "matheron":
        X0 = F + sx * bbr.normal(k1, (C, n, d), like=F)
        Res = (T_next - b[:, None, :] - xp.matmul(X0, xp.matrix_transpose(Wh))
               - xp.sqrt(delta_next)[:, None, None] * bbr.normal(k2, (C, n, k), like=F))
        S = delta_x * xp.matmul(Wh, xp.matrix_transpose(Wh)) + diag_embed(
            xp, xp.broadcast_to(delta_next[:, None], (C, k)))
        Rs = linalg.cholesky(S)
        Yt = linalg.cho_solve(Rs, xp.matrix_transpose(Res))   # (C, k, n)
        return X0 + delta_x * xp.matmul(xp.matrix_transpose(Yt), Wh)
    if method != "cholesky":
        raise ValueError(f"method must be 'auto', 'cholesky' or 'matheron', got {method!r}")
    ratio = delta_x / delta_next[:, None, None]    # (C, 1, 1)
    Q = eye(xp, d, F) + ratio * xp.matmul(xp.matrix_transpose(Wh), Wh)
    R = linalg.cholesky(Q)
    rhs = F + ratio * xp.matmul(T_next - b[:, None, :], Wh)     # Δ_X r, (C, n, d)
    E = bbr.normal(k1, (C, d, n), like=F)
    Y = linalg.solve_triangular(R, xp.matrix_transpose(rhs), lower=True) + sx * E
    Xt = linalg.solve_triangular(R, Y, lower=True, trans=True)
    return xp.matrix_transpose(Xt)


def sample_pre(key, A, Xpost, delta_z, delta_x, activation, slope):
    """Draw the pre-activations ``Z^l`` (A.3) given ``A = X̃^{l-1} W̃^{l-1⊤}`` and ``X^l``.

    ``p(z | a, x) ∝ exp(−(z − a)²/(2Δ_Z) − (x − f(z))²/(2Δ_X))`` elementwise: Gaussian for the
    identity, the two-piece truncated-normal mixture for ReLU / leaky ReLU (fused kernel).
    ``delta_z``, ``delta_x``: floats, or arrays of shape ``(C,)`` (one per chain, ``A`` of shape
    ``(C, n, d)``).
    """
    if activation == "identity":
        xp = namespace(A)
        if not isinstance(delta_z, (int, float)) or not isinstance(delta_x, (int, float)):
            shp = (A.shape[0],) + (1,) * (A.ndim - 1)
            dz = xp.reshape(xp.astype(xp.asarray(delta_z) * xp.ones((A.shape[0],), dtype=A.dtype, device=device_of(A)), A.dtype), shp)
            dx = xp.reshape(xp.astype(xp.asarray(delta_x) * xp.ones((A.shape[0],), dtype=A.dtype, device=device_of(A)), A.dtype), shp)
            s = dx + dz
            return (dx * A + dz * Xpost) / s + xp.sqrt(dx * dz / s) * bbr.normal(key, A.shape, like=A)
        s = delta_x + delta_z
        mean = (delta_x * A + delta_z * Xpost) / s
        return mean + math.sqrt(delta_x * delta_z / s) * bbr.normal(key, A.shape, like=A)
    return kernels.relu_preact(key, A, Xpost, delta_z, delta_x, slope=slope)


def sample_precision(key, shape0, rate, like):
    """``Gamma(shape0, rate)`` draws (rate parametrisation), ``rate`` an array."""
    xp = namespace(rate)
    shp = xp.full(rate.shape, float(shape0), dtype=rate.dtype, device=device_of(rate))
    return bbr.standard_gamma(key, shp, like=like) / rate


def sample_latent(key, A, labels, U_prev, likelihood):
    """Latent utilities of the probit likelihoods (MATH.md §B), ``Δ_y = 1``.

    * ``"probit"`` (Albert & Chib): ``u_μ ~ TN(a_μ, 1; (0, ∞))`` if ``y_μ = 1`` and
      ``TN(a_μ, 1; (−∞, 0])`` if ``y_μ = 0``.
    * ``"multinomial_probit"``: two exact conditional sub-steps,
      ``u_{μy} ~ TN(a_{μy}, 1; (max_{c≠y} u_{μc}, ∞))`` with the previous ``u_{μ,−y}``, then
      ``u_{μc} ~ TN(a_{μc}, 1; (−∞, u_{μy}))`` independently for ``c ≠ y``.

    Parameters
    ----------
    key : key
    A : array, shape (C, n, d_out)
        Output pre-activations ``X̃^L W̃^{L⊤}``.
    labels : int array, shape (n,) or (C, n)
    U_prev : array, shape (C, n, d_out)
        Current utilities (used by the multinomial sub-step; must satisfy ``argmax = y``).
    likelihood : {"probit", "multinomial_probit"}
    """
    xp = namespace(A)
    one = 1.0
    if likelihood == "probit":
        upper = (labels == 0)
        upper = xp.broadcast_to(upper[..., None] if upper.ndim == A.ndim - 1 else upper[None, :, None], A.shape)
        return kernels.truncated_normal(key, A, one, 0.0, upper)
    # both sub-steps in one kernel (one pass over the rows on the CPU; the same numbers as the
    # two truncated_normal calls it replaces: blockbayes.kernels.multinomial_utilities)
    return kernels.multinomial_utilities(key, A, labels, U_prev)


def initial_latent(xp, labels, K, likelihood, shape, like):
    """A valid starting ``U`` (``argmax U = y``; signs matching binary labels)."""
    oh = onehot(xp, labels, K, like.dtype)
    if likelihood == "probit":
        u = 2.0 * xp.astype(labels, like.dtype) - 1.0
        u = u[..., None]
    else:
        u = 2.0 * oh - 1.0
    if u.ndim < len(shape):
        u = u[None, ...]
    return xp.asarray(xp.broadcast_to(u, shape), copy=True)


def output_targets(net: MLP, y, state_latent, C, like):
    """The output layer's regression targets: ``y``, one-hot labels, or the latent utilities."""
    xp = namespace(like)
    if net.likelihood == "gaussian":
        return y if y.ndim == 3 else xp.broadcast_to(y[None, ...], (C,) + tuple(y.shape))
    if net.likelihood == "onehot_gaussian":
        oh = onehot(xp, y, net.d_out, like.dtype)
        return oh if oh.ndim == 3 else xp.broadcast_to(oh[None, ...], (C,) + tuple(oh.shape))
    return state_latent
