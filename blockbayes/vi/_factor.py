"""Closed-form moments and entropy of the pre-activation factor ``q(z)`` (MATH.md §C.3).

Under block CAVI the optimal factor of one pre-activation is

.. math::

    q(z) = \\frac{1}{\\mathcal Z_q}\\exp\\Big(-\\frac{(z-a)^2}{2\\Delta_Z}-\\frac{(x-f(z))^2}{2\\Delta_X}\\Big),

with ``(a, x) = (ā, x̄)`` the factor's parameters (C.3). For a two-piece linear ``f`` —
``f(z) = α₊ z`` on ``z ≥ 0`` and ``α₋ z`` on ``z < 0``: ReLU ``(1, 0)``, leaky ReLU ``(1, s)``,
identity ``(1, 1)`` — each piece is a truncated Gaussian: on piece ``k``

.. math::

    τ_k = \\frac1{Δ_Z}+\\frac{α_k^2}{Δ_X},\\quad
    m_k = \\frac{a/Δ_Z + α_k x/Δ_X}{τ_k},\\quad
    c_k = -\\frac{(x-α_k a)^2}{2(Δ_X+α_k^2Δ_Z)},\\quad
    \\log M_k = c_k + \\tfrac12\\log\\frac{2π}{τ_k} + \\log Φ(t_k),

with ``s_k = τ_k^{-1/2}``, ``t₊ = m₊/s₊`` and ``t₋ = −m₋/s₋``; ``log 𝒵_q = logaddexp(log M₋, log M₊)``
and ``π_k = M_k/𝒵_q``. With the inverse Mills ratio ``r(t) = φ(t)/Φ(t)``

.. math::

    E_± = m_± ± s_± r(t_±),\\qquad V_± = s_±^2\\,(1 - t_± r(t_±) - r(t_±)^2),

and the factor's moments are mixtures of these. The entropy is
``H = log 𝒵_q + E(z−a)²/(2Δ_Z) + E(x−f(z))²/(2Δ_X)`` (C.3); it is evaluated in the equal form
``H = Σ_k π_k (H_k − log π_k)`` over the disjoint pieces, with the truncated-Gaussian entropies
``H_k = ½ log(2πe s_k²) + log Φ(t_k) − t_k r(t_k)/2``, which has no large cancelling terms.

Numerics: ``r`` is ``√(2/π)/erfcx(−t/√2)`` for ``t < 0`` and ``exp(−t²/2 − log Φ(t))/√(2π)`` for
``t ≥ 0`` (no overflow anywhere); ``log Φ`` is ``log_ndtr``; the variances are formed as
within-piece plus between-piece terms, so no large terms cancel. The only residual cancellation is in ``1 − t r − r²`` for a deeply
truncated piece (``t → −∞``), whose relative error grows like ``ε t²`` (≈1e-12 at ``t = −70`` in
float64); the result is clipped at zero.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

from .._backend import device_of, namespace
from .._backend.special import erfcx, log_ndtr

__all__ = ["FactorMoments", "relu_factor", "inverse_mills"]

_LOG_2PI = math.log(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class FactorMoments(NamedTuple):
    """Moments of ``q(z)`` elementwise (all arrays of the input's shape).

    Attributes
    ----------
    mean, var : arrays
        ``E z`` and ``Var z``.
    f_mean, f_var : arrays
        ``E f(z)`` and ``Var f(z)``.
    log_norm : array
        ``log 𝒵_q`` (the normaliser of the unnormalised density above).
    entropy : array
        ``H[q(z)]``.
    prob_pos : array
        ``π₊ = q(z ≥ 0)``.
    """

    mean: Any
    var: Any
    f_mean: Any
    f_var: Any
    log_norm: Any
    entropy: Any
    prob_pos: Any


def inverse_mills(t):
    """``r(t) = φ(t)/Φ(t)``, stable for all real ``t`` (≈ ``−t`` as ``t → −∞``, → 0 as ``t → ∞``)."""
    xp = namespace(t)
    zero = xp.zeros((), dtype=t.dtype, device=device_of(t))
    tn = xp.minimum(t, zero)
    tp = xp.maximum(t, zero)
    neg = _SQRT_2_OVER_PI / erfcx(-tn / math.sqrt(2.0))
    pos = xp.exp(-0.5 * tp * tp - 0.5 * _LOG_2PI - log_ndtr(tp))
    return xp.where(t < 0, neg, pos)


def _piece(xp, a, x, dz, dx, alpha, side):
    """Truncated-Gaussian piece with slope ``alpha`` on ``z ≥ 0`` (side=+1) or ``z < 0`` (side=−1).

    Returns ``(log_mass, V, E, H)`` with ``H`` the entropy of the normalised piece,
    ``½ log(2πe s²) + log Φ(t) − t r(t)/2``.
    """
    tau = 1.0 / dz + alpha * alpha / dx
    s = 1.0 / math.sqrt(tau)
    u = x - alpha * a                                       # x − α a
    m_minus_a = (alpha / (dx * tau)) * u                    # m − a
    m = a + m_minus_a
    t = side * m / s
    r = inverse_mills(t)
    log_mass = -(u * u) / (2.0 * (dx + alpha * alpha * dz)) + 0.5 * (_LOG_2PI - math.log(tau)) + log_ndtr(t)
    shift = side * s * r                                    # E − m
    zero = xp.zeros((), dtype=a.dtype, device=device_of(a))
    V = (s * s) * xp.maximum(1.0 - t * r - r * r, zero)
    H = 0.5 * (_LOG_2PI + 1.0 - math.log(tau)) + log_ndtr(t) - 0.5 * t * r
    return log_mass, V, m + shift, H


def relu_factor(a, x, delta_z: float, delta_x: float, slope: float = 0.0) -> FactorMoments:
    """Moments, log-normaliser and entropy of the CAVI pre-activation factor (MATH.md §C.3).

    Parameters
    ----------
    a : array
        ``ā``: expected pre-activation from below, ``ξ̃^{l−1}_μ · m_{l−1,i}``.
    x : array
        ``x̄``: expected post-activation, ``ξ^l_{μi}`` (same shape as ``a``).
    delta_z, delta_x : float
        ``Δ_Z^l`` and ``Δ_X^l``.
    slope : float
        Negative-side slope ``α₋`` of ``f`` (0 for ReLU, ``s`` for leaky ReLU, 1 for the identity).

    Returns
    -------
    FactorMoments
        Elementwise arrays of ``a``'s shape, namespace, device and dtype.

    Notes
    -----
    Cost ``O(1)`` per element (four special-function calls). For the identity (``slope = 1``)
    both pieces are truncations of one Gaussian ``N(m₊, s₊²)`` and the mixture reproduces it.
    """
    xp = namespace(a, x)
    dz, dx, sl = float(delta_z), float(delta_x), float(slope)
    lp, V_p, E_p, H_p = _piece(xp, a, x, dz, dx, 1.0, +1.0)
    lm, V_m, E_m, H_m = _piece(xp, a, x, dz, dx, sl, -1.0)
    log_norm = xp.logaddexp(lp, lm)
    lpp, lpm = lp - log_norm, lm - log_norm
    pp = xp.exp(lpp)
    pm = xp.exp(lpm)
    pq = pp * pm
    mean = pp * E_p + pm * E_m
    var = pp * V_p + pm * V_m + pq * (E_p - E_m) ** 2
    f_mean = pp * E_p + pm * (sl * E_m)
    f_var = pp * V_p + pm * (sl * sl) * V_m + pq * (E_p - sl * E_m) ** 2
    # disjoint pieces: H = Σ_k π_k (H_k − log π_k); equal to the C.3 form
    # log 𝒵 + E(z−a)²/(2Δ_Z) + E(x−f)²/(2Δ_X) without its large cancelling terms
    entropy = pp * (H_p - lpp) + pm * (H_m - lpm)
    return FactorMoments(mean, var, f_mean, f_var, log_norm, entropy, pp)
