"""Driver side of the blocked scan: block 1 (all weights and hyperparameters | all latents)
from the reduced statistics, and the log joint from the same statistics.

Everything here is float64 NumPy on the driver; it touches ``O(Σ_l d_l (d_l + d_{l+1}))``
numbers per sweep, never a data row.
"""
from __future__ import annotations

import math

import numpy as np

from .._backend import linalg
from .._backend import random as bbr
from ..gibbs import Hyperprior, sample_precision
from ..model import MLP
from . import _random as rnd

__all__ = ["draw_block", "log_joint_from_stats", "prior_weights"]


def _prior_diag(lam_w, lam_b, d):
    C = lam_w.shape[0]
    return np.concatenate([np.broadcast_to(lam_w[:, None], (C, d)), lam_b[:, None]], axis=-1)


def prior_weights(key, net: MLP, C: int, dtype):
    """Prior draw of all weights, the same numbers as :func:`blockbayes.gibbs.init` with
    ``init="prior"`` gives for the same key and dtype."""
    k_w, _ = bbr.split(key, 2)
    keys = bbr.split(k_w, net.num_layers)
    like = np.zeros(1, dtype=dtype)
    out = []
    for l, s in enumerate(net.weight_shapes()):
        lam = net.prior_precision_vector(l, np, dtype=dtype, device="cpu")
        out.append(bbr.normal(keys[l], (C,) + s, like=like) / np.sqrt(lam))
    return out


def draw_block(key, net: MLP, stats, G0, weights, lam_w, lam_b, delta_y, n_total: int, *,
               learn_noise=False, learn_prior=False, hyperprior: Hyperprior = Hyperprior(), dtype="float64"):
    """Block 1 of the blocked scan: ``(λ, Δ_y, W̃^1..W̃^L) | latents``, as a sub-scan.

    1. ``λ_W^l, λ_b^l | W̃`` (A.5; if ``learn_prior``), with the current weights;
    2. ``1/Δ_y | W̃^L, latents ~ Gamma(a + n d_out/2, b + sse/2)`` (A.5; if ``learn_noise``),
       ``sse`` the reduced output residual with the current ``W̃^L``;
    3. every layer's rows ``W̃^l | λ, Δ, latents`` (A.1), independent across layers given the
       latents: ``W̃^⊤ = R^{-⊤}(R^{-1} B + √Δ E)``, ``R R^⊤ = G + Δ Λ``, from the reduced
       ``G = X̃^⊤X̃`` and ``B = X̃^⊤ T``.

    Each step is an exact conditional of the posterior, so the sub-scan leaves it invariant.
    Weights are rounded to ``dtype`` (what the shards compute with) before they are returned.

    Returns ``(weights, lam_w, lam_b, delta_y)`` (float64 arrays holding ``dtype`` values).
    """
    L = net.num_layers
    dt = np.dtype(dtype)
    like = np.zeros(1, dtype=np.float64)
    C = delta_y.shape[0]
    hp = hyperprior
    if learn_prior:
        kp = rnd.fold_in(key, 0)
        lw, lb = [], []
        for l, W in enumerate(weights):
            d_out, d_in = net.widths[l + 1], net.widths[l]
            Ww, b = W[..., :-1], W[..., -1]
            rate_w = hp.prior_rate + 0.5 * np.sum(Ww * Ww, axis=(-2, -1))
            rate_b = hp.prior_rate + 0.5 * np.sum(b * b, axis=-1)
            lw.append(sample_precision(rnd.fold_in(kp, l, 0), hp.prior_shape + 0.5 * d_in * d_out, rate_w, like))
            lb.append(sample_precision(rnd.fold_in(kp, l, 1), hp.prior_shape + 0.5 * d_out, rate_b, like))
        lam_w = np.stack(lw, axis=-1).astype(dt).astype(np.float64)
        lam_b = np.stack(lb, axis=-1).astype(dt).astype(np.float64)
    if learn_noise:
        rate = hp.noise_rate + 0.5 * stats["sse"]
        tau = sample_precision(rnd.fold_in(key, 1), hp.noise_shape + 0.5 * n_total * net.d_out, rate, like)
        delta_y = (1.0 / tau).astype(dt).astype(np.float64)
    new = []
    for l in range(L):
        d, k = net.widths[l], net.widths[l + 1]
        G = np.broadcast_to(G0, (C,) + G0.shape) if l == 0 else stats["G"][l - 1]
        B = stats["B"][l]
        delta = delta_y if l == L - 1 else np.full(C, net.delta_z[l])
        P = G + (delta[:, None] * _prior_diag(lam_w[:, l], lam_b[:, l], d))[:, :, None] * np.eye(d + 1)
        R = linalg.cholesky(P)
        E = bbr.normal(rnd.fold_in(key, 2, l), (C, d + 1, k), like=like)
        rhs = linalg.solve_triangular(R, B, lower=True) + np.sqrt(delta)[:, None, None] * E
        Wt = linalg.solve_triangular(R, rhs, lower=True, trans=True)
        new.append(np.swapaxes(Wt, -1, -2).astype(dt).astype(np.float64))
    return new, lam_w, lam_b, delta_y


def log_joint_from_stats(net: MLP, stats, G0, weights, lam_w, lam_b, delta_y, n_total: int):
    """``log p(W̃, Z, X, y | X^1, λ, Δ)`` of (A.0) per chain from the reduced statistics.

    Residual sums by the exact identity ``‖T − X̃W̃^⊤‖² = ‖T‖² − 2 tr(W̃ B) + tr(W̃ G W̃^⊤)``
    (float64), the hidden post-activation residuals ``‖X − f(Z)‖²`` reduced directly.
    """
    L = net.num_layers
    two_pi = 2.0 * math.pi
    C = delta_y.shape[0]
    total = np.zeros(C)
    for l, W in enumerate(weights):
        d_in, d_out = net.widths[l], net.widths[l + 1]
        lw, lb = lam_w[:, l], lam_b[:, l]
        Ww, b = W[..., :-1], W[..., -1]
        total += d_out * (-(d_in + 1) / 2 * math.log(two_pi) + 0.5 * (d_in * np.log(lw) + np.log(lb)))
        total -= 0.5 * (lw * np.sum(Ww * Ww, axis=(-2, -1)) + lb * np.sum(b * b, axis=-1))
        G = np.broadcast_to(G0, (C,) + G0.shape) if l == 0 else stats["G"][l - 1]
        B = stats["B"][l]
        rss = (stats["tt"][:, l] - 2.0 * np.einsum("cij,cji->c", W, B)
               + np.einsum("cij,cjk,cik->c", W, G, W))
        dl = delta_y if l == L - 1 else np.full(C, net.delta_z[l])
        total += -0.5 * n_total * d_out * np.log(two_pi * dl) - rss / (2 * dl)
        if l < L - 1:
            dx = net.delta_x[l]
            total += -0.5 * n_total * d_out * math.log(two_pi * dx) - stats["xr"][:, l] / (2 * dx)
    return total
