"""Permutation symmetry of one-hidden-layer posteriors: the invariance gap and collapsed units.

The likelihood and the prior of an MLP are invariant under permutations ``π`` of the hidden
units (rows of ``W^1``, columns of ``W^2`` except the bias), so the exact posterior is too. A
Gaussian ``q`` (mean-field or block) is not. Let ``q̄ = (1/H!) Σ_π q∘π`` be ``q`` symmetrised
over the group. Kurle et al. (2022) note that, since ``p(w, D)`` is invariant,

.. math::

    \\mathrm{ELBO}(\\bar q) = \\mathrm{ELBO}(q) + G(q),\\qquad
    G(q) = \\mathbb E_{q}\\big[\\log q(w) - \\log \\bar q(w)\\big] \\in [0, \\log H!],

the **invariance gap**: how much evidence bound ``q`` loses by not being invariant. ``G = 0``
when ``q`` is itself invariant (e.g. every unit collapsed to the same distribution) and
``G → log H!`` when the ``H!`` copies of ``q`` do not overlap. The predictive of ``q̄`` equals
that of ``q`` (``F_{πw} = F_w``), so symmetrising closes the gap in the bound without changing
a single prediction.

:func:`invariance_gap` enumerates the group exactly (``H ≤ 8``: 40320 permutations) and averages
over draws of ``q``: for ``w_s ~ q``,
``log q̄(w_s) = logsumexp_π log q(π w_s) − log H!``, with ``log q(π w)`` assembled from a
``H × H`` table of unit-to-slot log densities (mean-field rows) plus, for block posteriors, the
output rows' Gaussian log densities of the permuted vectors.
"""
from __future__ import annotations

import itertools
import math
from typing import NamedTuple

from .._backend import device_of, linalg

__all__ = ["GapEstimate", "invariance_gap", "unit_kl", "collapsed_share", "MAX_ENUMERATED_WIDTH"]

MAX_ENUMERATED_WIDTH = 8
_LOG2PI = math.log(2.0 * math.pi)


class GapEstimate(NamedTuple):
    """``gap`` (nats), its Monte Carlo standard error ``se``, ``log_group = log H!`` and ``num_samples``."""

    gap: float
    se: float
    log_group: float
    num_samples: int


def _row_logpdf(xp, W, M, R):
    """``log N(W[..., k]; M, R Rᵀ)`` for rows: ``W`` ``(..., k)``, ``M`` ``(k,)``, ``R`` Cholesky ``(k, k)``."""
    k = M.shape[-1]
    V = W - M
    flat = xp.reshape(V, (-1, k))
    Z = linalg.solve_triangular(R, xp.matrix_transpose(flat), lower=True)      # (k, N)
    quad = xp.sum(Z * Z, axis=0)
    logdet = 2.0 * xp.sum(xp.log(xp.linalg.diagonal(R)))
    return xp.reshape(-0.5 * (quad + logdet + k * _LOG2PI), V.shape[:-1])


def invariance_gap(result, *, num_samples: int = 200, seed=0, component: int | None = None,
                   chunk: int = 2048) -> GapEstimate:
    """The invariance gap ``G(q) = E_q[log q(w) − log q̄(w)]`` of a one-hidden-layer posterior.

    Parameters
    ----------
    result : VIResult
        Any covariance layout (``"diag"``, ``"row"``, ``"shared"``); ``net`` with one hidden layer
        of width ``H ≤ 8`` (the group is enumerated exactly).
    num_samples : int
        Draws ``w_s ~ q``.
    seed : int or key
    component : int, optional
        Which restart (default: ``result.best``).
    chunk : int
        Permutations per vectorised block (memory ``S · chunk · H``).

    Returns
    -------
    GapEstimate
        Cost ``O(S · H! · (H + d_out (H+1)²))``.
    """
    net = result.net
    if net.num_layers != 2:
        raise ValueError(f"invariance_gap handles one hidden layer; this net has {net.num_layers - 1}")
    H = net.widths[1]
    if H > MAX_ENUMERATED_WIDTH:
        raise ValueError(f"hidden width {H} > {MAX_ENUMERATED_WIDTH}: the group (H! = {math.factorial(H)}) "
                         "is too large to enumerate")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
    xp = result.xp
    c = result.best if component is None else int(component)
    W1, W2 = result.sample(num_samples, seed=seed, components=c)          # (S, H, d+1), (S, C, H+1)
    M1, M2 = result.means[0][c, ...], result.means[1][c, ...]
    S1 = result.row_covariances(0)[c, ...]                                 # (H, d+1, d+1)
    S2 = result.row_covariances(1)[c, ...]                                 # (C, H+1, H+1)
    R1 = linalg.cholesky(S1)
    R2 = linalg.cholesky(S2)
    S = num_samples
    # T[s, j, k] = log N(w1_k; m1_j, S1_j): unit k's incoming row in slot j
    T = xp.stack([_row_logpdf(xp, W1, M1[j, :], R1[j, ...]) for j in range(H)], axis=1)   # (S, j, k)
    diag_out = result.cov_kind == "diag"
    if diag_out:
        # mean-field output rows separate over hidden units: add slot-unit terms, bias apart
        V2 = result.covs[1][c, ...]                                        # (C, H+1) variances
        w = W2[:, :, :H]                                                   # (S, C, k)
        m = M2[:, :H]                                                      # (C, j)
        v = V2[:, :H]
        lp = -0.5 * ((w[:, :, None, :] - m[None, :, :, None]) ** 2 / v[None, :, :, None]
                     + xp.log(v)[None, :, :, None] + _LOG2PI)              # (S, C, j, k)
        T = T + xp.sum(lp, axis=1)
        b = W2[:, :, H]
        bias = xp.sum(-0.5 * ((b - M2[None, :, H]) ** 2 / V2[None, :, H] + xp.log(V2[None, :, H]) + _LOG2PI), axis=1)
    perms_all = list(itertools.permutations(range(H)))

    def logq_perm(P):
        """log q(π w_s) for a block of permutations ``P`` (p, H), slot j holding unit P[p, j] → (S, p)."""
        val = None
        for j in range(H):
            tj = xp.take(T[:, j, :], P[:, j], axis=1)                      # (S, p)
            val = tj if val is None else val + tj
        if diag_out:
            return val + bias[:, None]
        perm_idx = xp.concat([P, xp.full((P.shape[0], 1), H, dtype=P.dtype)], axis=1)   # bias stays last
        for r in range(W2.shape[1]):
            Wp = xp.take(W2[:, r, :], xp.reshape(perm_idx, (-1,)), axis=1)
            val = val + _row_logpdf(xp, xp.reshape(Wp, (S, P.shape[0], H + 1)), M2[r, :], R2[r, ...])
        return val

    base = logq_perm(xp.asarray([list(range(H))]))[:, 0]                 # log q(w_s)
    acc = None
    for s0 in range(0, len(perms_all), chunk):
        lv = logq_perm(xp.asarray(perms_all[s0:s0 + chunk]))
        mx = xp.max(lv, axis=1)
        part = mx + xp.log(xp.sum(xp.exp(lv - mx[:, None]), axis=1))
        acc = part if acc is None else xp.maximum(acc, part) + xp.log1p(xp.exp(-xp.abs(acc - part)))
    log_group = math.lgamma(H + 1)
    d = base - (acc - log_group)
    gap = float(xp.mean(d))
    se = float(xp.std(d, correction=1)) / math.sqrt(S)
    return GapEstimate(gap, se, log_group, S)


def unit_kl(result, *, component: int | None = None, part: str = "both"):
    """Per hidden unit, the mean over its parameters of the marginal
    ``KL(q_j ‖ p_j) = ½(λσ² + λm² − 1 − log λσ²)``, shape ``(H,)`` (nats per parameter).

    ``part``: ``"in"`` (incoming row incl. bias), ``"out"`` (outgoing weights) or ``"both"``."""
    if part not in ("in", "out", "both"):
        raise ValueError(f"part must be 'in', 'out' or 'both', got {part!r}")
    net = result.net
    if net.num_layers != 2:
        raise ValueError("unit_kl handles one hidden layer")
    xp = result.xp
    c = result.best if component is None else int(component)
    M1, M2 = result.means[0][c, ...], result.means[1][c, ...]
    V1, V2 = result.marginal_var()[0][c, ...], result.marginal_var()[1][c, ...]
    lam1 = net.prior_precision_vector(0, xp, dtype=M1.dtype, device=device_of(M1))[None, :]
    lam2 = float(net.lam_w[1])

    def kl(m, v, lam):
        a = lam * v
        return 0.5 * (a + lam * m * m - 1.0 - xp.log(a))

    k_in = xp.sum(kl(M1, V1, lam1), axis=1)                          # (H,)
    k_out = xp.sum(kl(M2[:, :-1], V2[:, :-1], lam2), axis=0)         # (H,)
    if part == "in":
        return k_in / M1.shape[1]
    if part == "out":
        return k_out / M2.shape[0]
    return (k_in + k_out) / (M1.shape[1] + M2.shape[0])


def collapsed_share(result, *, threshold: float = 0.1, component: int | None = None, part: str = "in") -> float:
    """Share of hidden units whose ``q`` has collapsed to the prior: :func:`unit_kl` of the incoming
    row (``part="in"``) below ``threshold`` nats per parameter. A pruned unit's incoming row returns
    to the prior while its outgoing weight is pinned near zero with a *small* variance (a
    non-zero outgoing weight would add output noise at every data point), so the incoming row is
    the part that shows the collapse; an active unit fitted to ``n`` points sits nats away."""
    k = unit_kl(result, component=component, part=part)
    xp = result.xp
    return float(xp.mean(xp.astype(k < threshold, k.dtype)))
