"""Broken twins: conditionals with one planted bug each, and the machinery to install them.

Each twin is a drop-in replacement for a function of :mod:`blockbayes.gibbs` (same signature),
written here independently in NumPy (the library code is never edited). ``install(name)``
patches it into ``blockbayes.gibbs`` for the duration of a ``with`` block, so that ``gibbs.step``
— and every check that calls the conditionals through ``gibbs`` — uses it (twins of
``sample_pre``/``sample_post`` also switch ``gibbs.kernel.LATENT_PASS`` to ``"separate"``, the path that
draws ``X`` and ``Z`` through those two functions instead of the fused kernel). Every twin with
``bug=None`` is a *correct* re-implementation; the suite's control tests run those through the same
checks (they must pass), which shows that a caught twin is caught because of its one bug.

=====================  ===================  ==========================================================
twin                   replaces             planted bug
=====================  ===================  ==========================================================
``relu_halflog``       ``sample_pre``       ReLU / leaky log-odds without the ``½ log(S₋/S₊)`` term
                                            (``½ log(Δ_X/S)`` of (A.3a))
``leaky_sign``         ``sample_pre``       leaky ReLU: sign of the ``s·x/Δ_X`` term in the negative
                                            piece's mean flipped
``identity_var``       ``sample_pre``       identity: sd ``√(Δ_XΔ_Z)/(Δ_X+Δ_Z)`` (a missing square root)
``rows_var``           ``sample_rows``      row noise × 1.1 (wrong variance)
``rows_sign``          ``sample_rows``      the bias component of ``H̃ᵀT/Δ`` with the wrong sign
``rows_stale``         ``sample_rows``      the Gram/cross products use the layer input of the *previous*
                                            call for that layer (a stale cache)
``post_sign``          ``sample_post``      ``(t + b)`` instead of ``(t − b)`` in the mean (a sign)
``post_transpose``     ``sample_post``      noise ``R^{-1}E`` instead of ``R^{-⊤}E`` (covariance
                                            ``R^{-1}R^{-⊤} ≠ Q^{-1}`` for ``d ≥ 2``)
``gamma_shape``        ``sample_precision`` output-noise precision shape ``a₀ + n d`` instead of
                                            ``a₀ + n d/2``
=====================  ===================  ==========================================================
"""
from __future__ import annotations

import contextlib
import math
import sys

import numpy as np
from scipy import special

from blockbayes import gibbs
from blockbayes._backend import random as bbr

from ._device import host_call

__all__ = ["TWINS", "install", "make"]


def _rng(key):
    return np.random.default_rng([int(key[0]), int(key[1])])


# ------------------------------------------------------------------------------ pre-activations

def _std_tn_upper(alpha, u):
    """``T ~ N(0,1) | T ≥ α`` by inversion, log space in the upper tail."""
    alpha = np.asarray(alpha, dtype=np.float64)
    lo = special.ndtri(np.clip(special.ndtr(np.minimum(alpha, 0.0)) + u * special.ndtr(-np.minimum(alpha, 0.0)),
                               1e-300, 1 - 1e-16))
    hi = -special.ndtri_exp(np.log(u) + special.log_ndtr(-np.maximum(alpha, 0.0)))
    return np.maximum(np.where(alpha <= 0.0, lo, hi), alpha)


def make_pre(bug=None):
    """Independent NumPy sampler of (A.3) for identity / ReLU / leaky ReLU, with an optional bug."""
    orig = gibbs.sample_pre

    def sample_pre(key, A, Xpost, delta_z, delta_x, activation, slope):
        a = np.asarray(A, dtype=np.float64)
        x = np.asarray(Xpost, dtype=np.float64)
        dz, dx = float(delta_z), float(delta_x)
        rng = _rng(key)
        if activation == "identity":
            if bug not in (None, "identity_var"):
                return orig(key, A, Xpost, delta_z, delta_x, activation, slope)
            mean = (dx * a + dz * x) / (dx + dz)
            sd = math.sqrt(dx * dz / (dx + dz)) if bug is None else math.sqrt(dx * dz) / (dx + dz)
            return (mean + sd * rng.standard_normal(a.shape)).astype(A.dtype)
        if bug in ("identity_var",) or (bug == "leaky_sign" and activation != "leaky_relu"):
            return orig(key, A, Xpost, delta_z, delta_x, activation, slope)
        s = float(slope)
        tau_p, tau_n = 1 / dz + 1 / dx, 1 / dz + s * s / dx
        m_p = (a / dz + x / dx) / tau_p
        m_n = (a / dz + (-1 if bug == "leaky_sign" else 1) * s * x / dx) / tau_n
        sd_p, sd_n = 1 / math.sqrt(tau_p), 1 / math.sqrt(tau_n)
        c_p = -(x - a) ** 2 / (2 * (dx + dz))
        c_n = -(x - s * a) ** 2 / (2 * (dx + s * s * dz))
        half = 0.0 if bug == "relu_halflog" else -0.5 * math.log(tau_p) + 0.5 * math.log(tau_n)
        ell = half + c_p - c_n + special.log_ndtr(m_p / sd_p) - special.log_ndtr(-m_n / sd_n)
        pos = rng.random(a.shape) < special.expit(ell)
        u = rng.random(a.shape)
        zp = m_p + sd_p * _std_tn_upper(-m_p / sd_p, u)            # ≥ 0
        zn = m_n - sd_n * _std_tn_upper(m_n / sd_n, u)             # ≤ 0
        z = np.where(pos, np.maximum(zp, 0.0), np.minimum(zn, 0.0))
        return z.astype(A.dtype)

    return "sample_pre", sample_pre


# ------------------------------------------------------------------------------ rows

def make_rows(bug=None):
    """Independent NumPy sampler of (A.1) (batched over chains), with an optional bug."""
    memory = {}

    def sample_rows(key, H, T, prior_diag, delta, *, gram=None, chol=None):
        Tn = np.asarray(T, dtype=np.float64)
        C, n, k = Tn.shape
        Hn = np.asarray(H, dtype=np.float64)
        if Hn.ndim == 2:
            Hn = np.broadcast_to(Hn, (C,) + Hn.shape)
        slot = (Hn.shape[-1], k)                      # identifies the layer in the suite's nets
        Huse = Hn
        if bug == "rows_stale":
            Huse = memory.get(slot, Hn)
            memory[slot] = Hn.copy()
        pd = np.asarray(prior_diag, dtype=np.float64)
        dl = np.asarray(delta, dtype=np.float64)
        rng = _rng(key)
        Ht = np.concatenate([Huse, np.ones((C, n, 1))], axis=-1)
        P = pd[:, :, None] * np.eye(pd.shape[1]) + np.swapaxes(Ht, -1, -2) @ Ht / dl[:, None, None]
        R = np.linalg.cholesky(P)
        B = np.swapaxes(Ht, -1, -2) @ Tn / dl[:, None, None]                           # (C, d+1, k)
        if bug == "rows_sign":
            B[:, -1, :] *= -1.0
        mean = np.linalg.solve(P, B)
        E = rng.standard_normal(mean.shape) * (1.1 if bug == "rows_var" else 1.0)
        out = mean + np.linalg.solve(np.swapaxes(R, -1, -2), E)                        # R^{-T} E
        return np.swapaxes(out, -1, -2).astype(T.dtype)

    return "sample_rows", sample_rows


# ------------------------------------------------------------------------------ post-activations

def make_post(bug=None):
    """Independent NumPy sampler of (A.2) (precision form, batched over chains), with an optional bug."""

    def sample_post(key, F, W_next, T_next, delta_x, delta_next, *, method="auto"):
        Fn = np.asarray(F, dtype=np.float64)
        Wn = np.asarray(W_next, dtype=np.float64)
        Tn = np.asarray(T_next, dtype=np.float64)
        dn = np.asarray(delta_next, dtype=np.float64)[:, None, None]
        C, n, d = Fn.shape
        rng = _rng(key)
        Wh, b = Wn[:, :, :-1], Wn[:, None, :, -1]
        Q = np.eye(d) / delta_x + np.swapaxes(Wh, -1, -2) @ Wh / dn
        R = np.linalg.cholesky(Q)
        sgn = 1.0 if bug == "post_sign" else -1.0
        rhs = Fn / delta_x + (Tn + sgn * b) @ Wh / dn                                  # (C, n, d)
        mean = np.linalg.solve(Q, np.swapaxes(rhs, -1, -2))                           # (C, d, n)
        E = rng.standard_normal(mean.shape)
        Rop = R if bug == "post_transpose" else np.swapaxes(R, -1, -2)
        out = mean + np.linalg.solve(Rop, E)
        return np.swapaxes(out, -1, -2).astype(F.dtype)

    return "sample_post", sample_post


# ------------------------------------------------------------------------------ Gamma updates

def _called_from_step_directly():
    """Whether the innermost library caller is ``gibbs.step`` itself (the output-noise update)
    rather than ``gibbs._sample_prior_precisions`` (spies in between are skipped)."""
    f = sys._getframe(2)
    while f is not None:
        name = f.f_code.co_name
        if name == "_sample_prior_precisions":
            return False
        if name == "step":
            return True
        f = f.f_back
    return False


def make_gamma(bug=None, a0=None):
    """``sample_precision`` with the output-noise shape doubled in its data part.

    ``step`` calls ``sample_precision(key, a₀ + n d/2, rate, like)`` for ``1/Δ_y`` directly and
    ``a₀ + d_l d_{l+1}/2`` (resp. ``a₀ + d_{l+1}/2``) for the prior precisions through
    ``_sample_prior_precisions``; the twin turns the first into ``a₀ + n d``. ``a₀`` is read from the
    ``hyperprior`` argument of the calling ``step``.
    """
    orig = gibbs.kernel.sample_precision

    def sample_precision(key, shape0, rate, like):
        if bug == "gamma_shape" and _called_from_step_directly():
            f = sys._getframe(1)
            while f is not None and f.f_code.co_name != "step":
                f = f.f_back
            base = f.f_locals["hyperprior"].noise_shape if a0 is None else a0
            shape0 = base + 2.0 * (shape0 - base)
        return orig(key, shape0, rate, like)

    return "sample_precision", sample_precision


_FACTORIES = {
    "relu_halflog": make_pre, "leaky_sign": make_pre, "identity_var": make_pre,
    "rows_var": make_rows, "rows_sign": make_rows, "rows_stale": make_rows,
    "post_sign": make_post, "post_transpose": make_post,
    "gamma_shape": make_gamma,
}
TWINS = tuple(_FACTORIES)
CONTROLS = {"pre": make_pre, "rows": make_rows, "post": make_post}


def make(name):
    """``(attribute, function)`` of twin ``name`` (or of a control ``"control:pre"`` etc.)."""
    if name.startswith("control:"):
        return CONTROLS[name.split(":", 1)[1]](None)
    return _FACTORIES[name](name)


@contextlib.contextmanager
def install(name):
    """Patch twin ``name`` into :mod:`blockbayes.gibbs.kernel` (where ``step`` looks its
    conditionals up) and into the :mod:`blockbayes.gibbs` package namespace (where the
    conditional checks call them directly). ``None``: no-op."""
    if name is None:
        yield
        return
    attr, fn = make(name)
    spaces = (gibbs.kernel, gibbs)
    olds = [getattr(ns, attr) for ns in spaces]
    old_pass = gibbs.kernel.LATENT_PASS
    twin = host_call(fn)    # NumPy code: host round trip when the sweep runs on a device
    for ns in spaces:
        setattr(ns, attr, twin)
    if attr in ("sample_pre", "sample_post"):
        gibbs.kernel.LATENT_PASS = "separate"   # step draws X, Z through the (patched) conditionals
    try:
        yield
    finally:
        for ns, o in zip(spaces, olds):
            setattr(ns, attr, o)
        gibbs.kernel.LATENT_PASS = old_pass
