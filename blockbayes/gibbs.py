"""Block-Gibbs sampling of the noisy-MLP posterior (MATH.md §A).

The model (Piccioli, Troiani & Zdeborová 2023) adds Gaussian noise to every pre-activation
(``Δ_Z``) and post-activation (``Δ_X``) of the hidden layers, which makes every conditional
closed form:

* node rows ``w̃_{l,i} | X^l, Z^{l+1}`` — Bayesian linear regression with one precision
  ``P_l = Λ_l + G_l/Δ`` shared by all rows of a layer (A.1): one Cholesky per layer and sweep;
* post-activations ``x_μ^l | f(z_μ^l), z_μ^{l+1}, W^l`` — Gaussian with a shared precision (A.2),
  drawn in the Cholesky form or, when the next layer is narrower, in the perturb-and-correct
  (Matheron) form;
* pre-activations ``z^l_{μi} | a, x`` — the two-piece truncated-normal mixture of (A.3a) for ReLU
  and leaky ReLU (fused kernels in :mod:`blockbayes.kernels`), a Gaussian for the identity;
* optional conjugate Gamma updates of the output-noise precision ``1/Δ_y`` and of per-layer
  prior precisions ``λ_W, λ_b`` (A.5).

A sweep costs ``O(Σ_l [n d_l (d_l + d_{l+1}) + d_l^3])``: linear in the number of data points.
The scan goes from the output to the input: ``W^L, X^L, Z^L, W^{L-1}, X^{L-1}, …, W^1``.

The algorithm is written BlackJAX-style: pure :func:`init` and :func:`step` over a
:class:`GibbsState` (chains are a leading batch axis), and :func:`run`, the stateful
convenience layer that resolves the device, loops with a progress bar and returns a
:class:`~blockbayes.posterior.GibbsResult`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

from . import kernels
from ._backend import (BackendUnavailableError, backend_name, device_of, namespace, resolve_device,
                       same_device, to_device, to_numpy)
from ._backend import linalg
from ._backend.threads import default_kernel_threads, thread_limits
from ._backend import random as bbr
from .model import MLP, activate, affine, chain_weights
from .posterior import GibbsResult

__all__ = ["GibbsState", "GibbsInfo", "GibbsCache", "Hyperprior", "init", "step", "run",
           "precompute", "log_joint", "NonFiniteStateError", "validate_data"]


#: How :func:`step` draws each hidden layer's ``X^l, Z^l``: ``"fused"`` (default) in one pass of
#: :func:`blockbayes.kernels.latent_pass`; ``"separate"`` by :func:`sample_post` then
#: :func:`sample_pre` (the module attributes, looked up at call time: the validation suite patches
#: its broken twins and their controls in there and switches this to ``"separate"``). Both exact.
LATENT_PASS = "fused"


class NonFiniteStateError(FloatingPointError):
    """The sampler state became non-finite; the message names the block and the sweep."""


class GibbsState(NamedTuple):
    """State of ``C`` parallel chains (all arrays on one device, in the data's dtype).

    Attributes
    ----------
    weights : tuple of arrays
        Per layer ``l = 1..L``, shape ``(C, d_{l+1}, d_l + 1)``, bias in the last column.
    pre : tuple of arrays
        Pre-activations ``Z^l`` of the hidden layers ``l = 2..L``, shape ``(C, n, d_l)``.
    post : tuple of arrays
        Post-activations ``X^l`` of the hidden layers, shape ``(C, n, d_l)``.
    lam_w, lam_b : arrays, shape (C, L)
        Prior precisions of weights and biases per chain and layer (fixed unless learned).
    delta_y : array, shape (C,)
        Output noise variance ``Δ_y`` per chain (fixed unless learned).
    latent : array of shape (C, n, d_out), or None
        Probit likelihoods: the latent utilities ``U`` (MATH.md §B); ``None`` otherwise.
    """

    weights: tuple
    pre: tuple
    post: tuple
    lam_w: Any
    lam_b: Any
    delta_y: Any
    latent: Any = None


class GibbsInfo(NamedTuple):
    """Per-sweep diagnostics (never read by the next step).

    Attributes
    ----------
    log_joint : array of shape (C,) or None
        ``log p(W̃, Z, X, y | X^1, λ, Δ)`` of (A.0) after the sweep (``None`` unless requested).
    output_sse : array, shape (C,)
        ``‖y − X̃^L W̃^{L⊤}‖²`` with the sweep's post-activations and the *previous* output
        weights (the residual the ``Δ_y`` update uses; computed when ``learn_noise``), else ``None``.
    log_joint_partial : array of shape (C,) or None
        Nets with hidden layers: ``log_joint`` of the new state *except* the first layer's data
        term ``−‖Z^2 − X̃^1 W̃^{1⊤}‖²/(2Δ_Z)``, assembled from sums the fused latent passes
        return (no extra pass over the data).
    first_term_prev : array of shape (C,) or None
        That first-layer data term of the *input* state (the first hidden layer's pass reads
        ``Z^2`` and ``X̃^1 W̃^{1⊤}`` before redrawing them), so
        ``log_joint(state_t) = info_t.log_joint_partial + info_{t+1}.first_term_prev``
        exactly (:func:`run` stores the log joint this way, one sweep late).
    """

    log_joint: Any
    output_sse: Any
    log_joint_partial: Any = None
    first_term_prev: Any = None


class Hyperprior(NamedTuple):
    """Gamma(shape, rate) hyperpriors of the conjugate precision updates (MATH.md §A.5).

    Defaults: ``Gamma(1, 1e-2)`` for the output-noise precision ``1/Δ_y`` and for each prior
    precision ``λ_W^l, λ_b^l`` — proper, mean 100, and weak against any data set of more than a
    handful of points (the posterior shapes grow as ``n d_out / 2`` and ``d_l d_{l+1} / 2``).
    """

    noise_shape: float = 1.0
    noise_rate: float = 1e-2
    prior_shape: float = 1.0
    prior_rate: float = 1e-2


class GibbsCache(NamedTuple):
    """Per-data-set constants of a sweep (see :func:`precompute`).

    ``gram0``: the augmented Gram ``X̃^{1⊤} X̃^1``, shape ``(d_1 + 1, d_1 + 1)``;
    ``chol0``: the Cholesky factor of ``Δ_Z^2 Λ_1 + G_1`` when it is the same for all chains and
    sweeps (fixed hyperparameters, at least one hidden layer), else ``None``.
    """

    gram0: Any
    chol0: Any


# --------------------------------------------------------------------------- validation

def validate_data(net: MLP, X, y, *, dtype=None, per_chain=True, num_chains=None):
    """Check and normalise training data.

    Returns ``(X, y)`` with ``y`` of shape ``(n, d_out)`` in ``X``'s namespace, device and dtype
    (regression), or int64 labels of shape ``(n,)`` (classification likelihoods).
    With ``per_chain``, ``y`` may also have shape ``(C, n, d_out)``: one target set per chain,
    sharing ``X`` (simulation-based tests run many data sets at once this way).

    Raises
    ------
    TypeError
        ``net`` is not an :class:`MLP`, ``X`` or ``y`` is not a float array, unsupported dtype.
    ValueError
        Wrong rank or shape, ``n < 1``, non-finite values, arrays on different devices.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a blockbayes.MLP, got {type(net).__name__}")
    for name, arr in (("X", X), ("y", y)):
        if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
            raise TypeError(f"{name} must be an array (NumPy, CuPy or Array-API), got {type(arr).__name__}")
    xp = namespace(X, y)
    same_device(X, y)
    if not xp.isdtype(X.dtype, "real floating"):
        raise TypeError(f"X must have a float dtype (float32 or float64), got {X.dtype}")
    classify = net.likelihood != "gaussian"
    if not classify and not xp.isdtype(y.dtype, "real floating"):
        raise TypeError(f"y must have a float dtype (float32 or float64) for regression, got {y.dtype}")
    if dtype is not None:
        from ._backend import float_dtype

        X = xp.astype(X, float_dtype(xp, dtype))
    if str(X.dtype).split(".")[-1].strip("'>") not in ("float32", "float64"):
        raise TypeError(f"X must be float32 or float64, got {X.dtype}")
    if not classify and y.dtype != X.dtype:
        y = xp.astype(y, X.dtype)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d_in), got shape {tuple(X.shape)}")
    n = X.shape[0]
    if n < 1:
        raise ValueError("X has no rows (n = 0); need at least one data point")
    if X.shape[1] != net.d_in:
        raise ValueError(f"X has {X.shape[1]} columns but the net expects d_in = {net.d_in}")
    if not bool(xp.all(xp.isfinite(X))):
        raise ValueError("X contains NaN or infinite values")
    if classify:
        return X, validate_labels(net, y, n, num_chains=num_chains if per_chain else 1)
    if y.ndim == 1:
        if net.d_out != 1:
            raise ValueError(f"y has shape ({y.shape[0]},) but the net has {net.d_out} outputs; pass y of shape (n, {net.d_out})")
        y = xp.reshape(y, (y.shape[0], 1))
    elif y.ndim == 3 and per_chain:
        if num_chains is not None and y.shape[0] != num_chains:
            raise ValueError(f"per-chain targets y of shape {tuple(y.shape)} need y.shape[0] == num_chains = {num_chains}")
    elif y.ndim != 2:
        raise ValueError(f"y must have shape (n,) or (n, d_out), got rank {y.ndim} shape {tuple(y.shape)}")
    if y.shape[-2] != n:
        raise ValueError(f"X has {n} rows but y has {y.shape[-2]}")
    if y.shape[-1] != net.d_out:
        raise ValueError(f"y has {y.shape[-1]} columns but the net has d_out = {net.d_out}")
    if not bool(xp.all(xp.isfinite(y))):
        raise ValueError("y contains NaN or infinite values")
    return X, y


def num_classes(net: MLP) -> int:
    """Number of classes of a classification net (2 for ``"probit"``, ``d_out`` otherwise)."""
    return 2 if net.likelihood == "probit" else net.d_out


def validate_labels(net: MLP, y, n, *, num_chains=None):
    """Integer class labels ``0..K-1`` of shape ``(n,)`` (or ``(C, n)``, one set per chain) → int64.

    Raises ``TypeError`` for non-integer labels (floats included: pass ``y.astype(int)`` if the
    values are whole numbers) and ``ValueError`` for a wrong shape or labels out of range.
    """
    xp = namespace(y)
    K = num_classes(net)
    if xp.isdtype(y.dtype, "bool"):
        y = xp.astype(y, xp.int64)
    if not xp.isdtype(y.dtype, "integral"):
        raise TypeError(f"likelihood={net.likelihood!r} needs integer class labels 0..{K - 1}, got dtype {y.dtype}")
    if y.ndim == 2 and num_chains is not None and y.shape[0] == num_chains and num_chains > 1:
        pass
    elif y.ndim != 1:
        raise ValueError(f"class labels must have shape (n,), got shape {tuple(y.shape)}")
    if y.shape[-1] != n:
        raise ValueError(f"X has {n} rows but y has {y.shape[-1]} labels")
    if bool(xp.any(y < 0)) or bool(xp.any(y >= K)):
        raise ValueError(f"class labels must lie in 0..{K - 1} for {net.likelihood!r} with {K} classes; "
                         f"got values in [{int(xp.min(y))}, {int(xp.max(y))}]")
    return xp.astype(y, xp.int64)


def _onehot(xp, labels, K, dtype):
    """``(…, n)`` int labels → ``(…, n, K)`` float one-hot."""
    cls = xp.arange(K, device=device_of(labels))
    return xp.astype(labels[..., None] == cls, dtype)


# --------------------------------------------------------------------------- small helpers

def _eye(xp, d, like):
    return xp.eye(d, dtype=like.dtype, device=device_of(like))


def _augmented_gram(xp, H):
    """``[H 1]^T [H 1]`` without forming ``[H 1]``. ``H``: ``(..., n, d)`` → ``(..., d+1, d+1)``."""
    n = H.shape[-2]
    HtH = xp.matmul(xp.matrix_transpose(H), H)
    s = xp.sum(H, axis=-2)  # (..., d)
    top = xp.concat([HtH, s[..., :, None]], axis=-1)
    nn = xp.full(s.shape[:-1] + (1, 1), float(n), dtype=H.dtype, device=device_of(H))
    bottom = xp.concat([s[..., None, :], nn], axis=-1)
    return xp.concat([top, bottom], axis=-2)


def _augmented_cross(xp, H, T):
    """``[H 1]^T T``: ``H`` ``(..., n, d)``, ``T`` ``(..., n, k)`` → ``(..., d+1, k)``."""
    HtT = xp.matmul(xp.matrix_transpose(H), T)
    s = xp.sum(T, axis=-2)[..., None, :]
    if s.ndim < HtT.ndim:
        s = xp.broadcast_to(s, HtT.shape[:-2] + s.shape[-2:])
    elif HtT.ndim < s.ndim:
        HtT = xp.broadcast_to(HtT, s.shape[:-2] + HtT.shape[-2:])
    return xp.concat([HtT, s], axis=-2)


def _diag_embed(xp, v):
    """``(..., k)`` → ``(..., k, k)`` diagonal matrices."""
    k = v.shape[-1]
    eye = xp.eye(k, dtype=v.dtype, device=device_of(v))
    return v[..., :, None] * eye


def _prior_diag(xp, lam_w, lam_b, d):
    """Diagonal of ``Λ`` per chain: ``(C,)`` weight and bias precisions → ``(C, d + 1)``."""
    C = lam_w.shape[0]
    w = xp.broadcast_to(lam_w[:, None], (C, d))
    return xp.concat([w, lam_b[:, None]], axis=-1)


# --------------------------------------------------------------------------- the conditionals

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
    W : array, shape (C, k, d + 1)
    """
    xp = namespace(T)
    C, k = T.shape[0], T.shape[-1]
    d1 = H.shape[-1] + 1
    B = _augmented_cross(xp, H, T)  # (C, d+1, k)
    if chol is None:
        G = _augmented_gram(xp, H) if gram is None else gram
        return kernels.gaussian_rows(key, B, delta, gram=G, prior_diag=prior_diag)
    return kernels.gaussian_rows(key, B, delta, chol=chol)


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
    delta_x : float
        ``Δ_X^l``.
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
    sx = math.sqrt(delta_x)
    if method == "matheron":
        X0 = F + sx * bbr.normal(k1, (C, n, d), like=F)
        Res = (T_next - b[:, None, :] - xp.matmul(X0, xp.matrix_transpose(Wh))
               - xp.sqrt(delta_next)[:, None, None] * bbr.normal(k2, (C, n, k), like=F))
        S = delta_x * xp.matmul(Wh, xp.matrix_transpose(Wh)) + _diag_embed(
            xp, xp.broadcast_to(delta_next[:, None], (C, k)))
        Rs = linalg.cholesky(S)
        Yt = linalg.cho_solve(Rs, xp.matrix_transpose(Res))   # (C, k, n)
        return X0 + delta_x * xp.matmul(xp.matrix_transpose(Yt), Wh)
    if method != "cholesky":
        raise ValueError(f"method must be 'auto', 'cholesky' or 'matheron', got {method!r}")
    ratio = delta_x / delta_next    # (C,)
    Q = _eye(xp, d, F) + ratio[:, None, None] * xp.matmul(xp.matrix_transpose(Wh), Wh)
    R = linalg.cholesky(Q)
    rhs = F + ratio[:, None, None] * xp.matmul(T_next - b[:, None, :], Wh)     # Δ_X r, (C, n, d)
    E = bbr.normal(k1, (C, d, n), like=F)
    Y = linalg.solve_triangular(R, xp.matrix_transpose(rhs), lower=True) + sx * E
    Xt = linalg.solve_triangular(R, Y, lower=True, trans=True)
    return xp.matrix_transpose(Xt)


def sample_pre(key, A, Xpost, delta_z, delta_x, activation, slope):
    """Draw the pre-activations ``Z^l`` (A.3) given ``A = X̃^{l-1} W̃^{l-1⊤}`` and ``X^l``.

    ``p(z | a, x) ∝ exp(−(z − a)²/(2Δ_Z) − (x − f(z))²/(2Δ_X))`` elementwise: Gaussian for the
    identity, the two-piece truncated-normal mixture for ReLU / leaky ReLU (fused kernel).
    """
    if activation == "identity":
        xp = namespace(A)
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
    K = A.shape[-1]
    oh = _onehot(xp, labels, K, A.dtype)
    if oh.ndim < A.ndim:
        oh = xp.broadcast_to(oh[None, ...], A.shape)
    is_y = oh > 0
    k1, k2 = bbr.split(key, 2)
    neg_inf = xp.asarray(-xp.inf, dtype=A.dtype, device=device_of(A))
    m = xp.max(xp.where(is_y, neg_inf, U_prev), axis=-1)        # max over c != y, (C, n)
    a_y = xp.sum(A * oh, axis=-1)
    u_y = kernels.truncated_normal(k1, a_y, one, m, False)
    others = kernels.truncated_normal(k2, A, one, xp.broadcast_to(u_y[..., None], A.shape), True)
    return xp.where(is_y, xp.broadcast_to(u_y[..., None], A.shape), others)


def _initial_latent(xp, labels, K, likelihood, shape, like):
    """A valid starting ``U`` (``argmax U = y``; signs matching binary labels)."""
    oh = _onehot(xp, labels, K, like.dtype)
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
        oh = _onehot(xp, y, net.d_out, like.dtype)
        return oh if oh.ndim == 3 else xp.broadcast_to(oh[None, ...], (C,) + tuple(oh.shape))
    return state_latent


# --------------------------------------------------------------------------- init / step

def precompute(net: MLP, X, *, learn_prior=False, dtype=None) -> GibbsCache:
    """Constants of the sweep for data ``X`` (the input Gram and, if fixed, its Cholesky)."""
    xp = namespace(X)
    G0 = _augmented_gram(xp, X)
    chol0 = None
    if net.num_layers > 1 and not learn_prior:
        d = net.widths[0]
        lam = net.prior_precision_vector(0, xp, dtype=X.dtype, device=device_of(X))
        chol0 = linalg.cholesky(G0 + _diag_embed(xp, net.delta_z[0] * lam))
    return GibbsCache(gram0=G0, chol0=chol0)


def init(rng_key, net: MLP, X, y, *, num_chains=1, init="prior", noisy_aux=True) -> GibbsState:
    """Initial state of ``num_chains`` chains.

    Parameters
    ----------
    rng_key : key
    net : MLP
    X : array, shape (n, d_in)
    y : array, shape (n, d_out)
    num_chains : int
    init : {"prior", "zero"}, sequence of arrays, mapping or GibbsState
        ``"prior"``: weights drawn from the prior, auxiliaries from the noisy forward pass
        (``Z = X̃W̃^⊤ + √Δ_Z ξ``, ``X = f(Z) + √Δ_X η``). ``"zero"``: all weights zero and
        ``Z = X = 0`` (the zero-initialised chain of Piccioli et al.). A sequence of per-layer
        weights (shape ``(d_out, d_in + 1)`` or ``(C, d_out, d_in + 1)``): those weights, with
        auxiliaries from the forward pass (noisy if ``noisy_aux``). A mapping with keys
        ``"weights"`` and optionally ``"pre"``, ``"post"`` (per hidden layer, ``(n, d)`` or
        ``(C, n, d)``): a fully given state, e.g. a teacher with its own auxiliaries (the
        *informed* start of the planted-teacher experiments). A :class:`GibbsState` (e.g.
        ``result.final_state``) continues those chains (hyperparameters restart from ``net``).
    noisy_aux : bool
        Whether auxiliaries derived from weights include the model's noise.
    """
    xp = namespace(X, y)
    if not isinstance(num_chains, int) or num_chains < 1:
        raise ValueError(f"num_chains must be a positive int, got {num_chains!r}")
    C, n, L = num_chains, X.shape[0], net.num_layers
    dev, dt = device_of(X), X.dtype
    k_w, k_aux = bbr.split(rng_key, 2)
    given_pre = given_post = None
    if isinstance(init, str):
        if init == "zero":
            weights = tuple(xp.zeros((C,) + s, dtype=dt, device=dev) for s in net.weight_shapes())
        elif init == "prior":
            keys = bbr.split(k_w, L)
            ws = []
            for l, s in enumerate(net.weight_shapes()):
                lam = net.prior_precision_vector(l, xp, dtype=dt, device=dev)
                ws.append(bbr.normal(keys[l], (C,) + s, like=X) / xp.sqrt(lam))
            weights = tuple(ws)
        else:
            raise ValueError(f"init must be 'prior', 'zero', a sequence of weights or a mapping; got {init!r}")
    elif isinstance(init, GibbsState):
        weights = chain_weights(net, init.weights, C, X)
        given_pre, given_post = init.pre, init.post
    elif isinstance(init, Mapping):
        if "weights" not in init:
            raise ValueError("an init mapping needs a 'weights' entry")
        weights = chain_weights(net, init["weights"], C, X)
        given_pre, given_post = init.get("pre"), init.get("post")
    else:
        weights = chain_weights(net, init, C, X)
    pre, post = [], []
    H = X
    keys = bbr.split(k_aux, 2 * max(L - 1, 1))
    for l in range(L - 1):
        d = net.widths[l + 1]
        if given_pre is not None and given_post is not None:
            Zl = _as_chain_aux(xp, given_pre[l], C, n, d, X, f"pre[{l}]")
            Xl = _as_chain_aux(xp, given_post[l], C, n, d, X, f"post[{l}]")
        elif isinstance(init, str) and init == "zero":
            Zl = xp.zeros((C, n, d), dtype=dt, device=dev)
            Xl = xp.zeros((C, n, d), dtype=dt, device=dev)
        else:
            Zl = affine(H, weights[l])
            if noisy_aux:
                Zl = Zl + math.sqrt(net.delta_z[l]) * bbr.normal(keys[2 * l], Zl.shape, like=X)
            Xl = activate(xp, Zl, net.activation, net.slope)
            if noisy_aux:
                Xl = Xl + math.sqrt(net.delta_x[l]) * bbr.normal(keys[2 * l + 1], Xl.shape, like=X)
        pre.append(Zl)
        post.append(Xl)
        H = Xl
    lam_w = xp.asarray([[float(v) for v in net.lam_w]] * C, dtype=dt, device=dev)
    lam_b = xp.asarray([[float(v) for v in net.lam_b]] * C, dtype=dt, device=dev)
    delta_y = xp.full((C,), net.delta_y, dtype=dt, device=dev)
    latent = None
    if net.likelihood in ("probit", "multinomial_probit"):
        given_latent = init.latent if isinstance(init, GibbsState) else (
            init.get("latent") if isinstance(init, Mapping) else None)
        shape = (C, n, net.d_out)
        if given_latent is not None:
            latent = _as_chain_aux(xp, given_latent, C, n, net.d_out, X, "latent")
        else:
            latent = _initial_latent(xp, y, num_classes(net), net.likelihood, shape, X)
    return GibbsState(weights, tuple(pre), tuple(post), lam_w, lam_b, delta_y, latent)


_init_state = init  # `run` has an argument called `init`


def _as_chain_aux(xp, A, C, n, d, like, name):
    A = xp.asarray(A, dtype=like.dtype, device=device_of(like)) if namespace(A) is not xp else xp.astype(A, like.dtype)
    if tuple(A.shape) == (n, d):
        A = xp.broadcast_to(A[None, ...], (C, n, d))
    elif tuple(A.shape) != (C, n, d):
        raise ValueError(f"init {name} must have shape {(n, d)} or {(C, n, d)}, got {tuple(A.shape)}")
    return xp.asarray(A, copy=True)


def step(rng_key, state: GibbsState, net: MLP, X, y, *, learn_noise=False, learn_prior=False,
         hyperprior: Hyperprior = Hyperprior(), cache: Optional[GibbsCache] = None,
         compute_log_joint=False, post_method="auto", row_offset=0,
         checked=False) -> tuple[GibbsState, GibbsInfo]:
    """One systematic-scan sweep, output → input (pure: returns a new state).

    Order: ``[λ's if learned]``, then for ``l = L..1``: ``W̃^l | X^l, Z^{l+1}`` (A.1)
    [``Δ_y`` (A.5) before the output rows, if learned], then for hidden ``l``: ``X^l`` (A.2),
    ``Z^l`` (A.3).

    Parameters
    ----------
    rng_key : key
    state : GibbsState
    net : MLP
    X : array, shape (n, d_in)
    y : array, shape (n, d_out)
    learn_noise : bool
        Resample the output noise precision ``1/Δ_y ~ Gamma(a + n d_out/2, b + ‖y − X̃^L W̃^{L⊤}‖²/2)``.
    learn_prior : bool
        Resample ``λ_W^l ~ Gamma(a + d_l d_{l+1}/2, b + ‖W^l‖²/2)`` and
        ``λ_b^l ~ Gamma(a + d_{l+1}/2, b + ‖b^l‖²/2)`` per layer.
    hyperprior : Hyperprior
    cache : GibbsCache, optional
        From :func:`precompute` (computed here if omitted).
    compute_log_joint : bool
        Fill ``info.log_joint`` (one extra forward pass over the auxiliaries).
    post_method : {"auto", "cholesky", "matheron"}
        How to draw the post-activations (both exact, see :func:`sample_post`).
    row_offset : int
        Global index of ``X``'s first row: the fused latent passes key their draws by the
        global row (:func:`blockbayes.kernels.latent_pass`), so a data shard draws what the
        full data set draws for its rows.
    checked : bool
        The caller guarantees the state's first-layer prior precisions equal the net's whenever
        ``cache.chol0`` is given and ``learn_prior`` is off (:func:`run` does: its states start
        from the net's hyperparameters), so ``step`` skips that device-synchronising check.

    The post- and pre-activations of each hidden layer are drawn in one fused pass
    (:func:`blockbayes.kernels.latent_pass`): ``X^l`` from (A.2) and then ``Z^l`` from (A.3)
    given the new ``X^l``, in the same order as the scan above.

    Returns
    -------
    (GibbsState, GibbsInfo)
    """
    xp = namespace(X, y)
    L = net.num_layers
    C = state.delta_y.shape[0]
    if cache is None:
        cache = precompute(net, X, learn_prior=learn_prior)
    keys = list(bbr.split(rng_key, 3 * L + 3))
    weights = list(state.weights)
    pre, post = list(state.pre), list(state.post)
    sums = [None] * (L - 1)
    lam_w, lam_b, delta_y = state.lam_w, state.lam_b, state.delta_y
    if learn_prior:
        lam_w, lam_b = _sample_prior_precisions(keys.pop(), net, weights, hyperprior, like=X)
    output_sse = None
    latent = state.latent
    if learn_noise and net.likelihood in ("probit", "multinomial_probit"):
        raise ValueError(f"learn_noise is not available for likelihood={net.likelihood!r}: "
                         "Δ_y = 1 is fixed (not identifiable jointly with the weight scale)")
    for l in range(L - 1, -1, -1):
        H = X if l == 0 else post[l - 1]
        if l == L - 1:
            if latent is not None:
                latent = sample_latent(keys.pop(), affine(H, weights[l]), y, latent, net.likelihood)
            T = output_targets(net, y, latent, C, X)
            if learn_noise:
                R = T - affine(H, weights[l])
                output_sse = xp.sum(R * R, axis=(-2, -1))
                rate = hyperprior.noise_rate + 0.5 * output_sse
                tau = sample_precision(keys.pop(), hyperprior.noise_shape + 0.5 * T.shape[-2] * T.shape[-1], rate, like=X)
                delta_y = 1.0 / tau
            delta = delta_y
        else:
            T = pre[l]
            delta = xp.full((C,), net.delta_z[l], dtype=X.dtype, device=device_of(X))
        prior = _prior_diag(xp, lam_w[:, l], lam_b[:, l], net.widths[l])
        if l == 0:
            chol = cache.chol0 if (L > 1 and not learn_prior and (checked or _prior_matches_net(xp, net, lam_w, lam_b))) else None
            weights[l] = sample_rows(keys.pop(), X, T, prior, delta, gram=cache.gram0[None, ...], chol=chol)
        else:
            weights[l] = sample_rows(keys.pop(), H, T, prior, delta)
            h = l - 1  # index of hidden layer l+1 in pre/post lists (Z^l, X^l in 1-based notation)
            Hprev = X if h == 0 else post[h - 1]
            A = affine(Hprev, weights[l - 1])
            if LATENT_PASS == "fused":
                post[h], pre[h], sums[h] = kernels.latent_pass(
                    keys.pop(), pre[h], A, T, weights[l], net.delta_x[h], net.delta_z[h], delta,
                    activation=net.activation, slope=net.slope, method=post_method,
                    row_offset=row_offset)
            else:
                F = activate(xp, pre[h], net.activation, net.slope)
                z_old = pre[h]
                post[h] = sample_post(keys.pop(), F, weights[l], T, net.delta_x[h], delta, method=post_method)
                pre[h] = sample_pre(keys.pop(), A, post[h], net.delta_z[h], net.delta_x[h], net.activation, net.slope)
                sums[h] = _latent_sums(xp, z_old, A, T, weights[l], post[h], pre[h], net)
    new = GibbsState(tuple(weights), tuple(pre), tuple(post), lam_w, lam_b, delta_y, latent)
    lj = log_joint(new, net, X, y) if compute_log_joint else None
    partial = first = None
    if L > 1:
        partial, first = _fused_log_joint(xp, new, net, X.shape[0], sums)
    return new, GibbsInfo(log_joint=lj, output_sse=output_sse, log_joint_partial=partial,
                          first_term_prev=first)


def _latent_sums(xp, z_old, A, T, W, Xn, Zn, net):
    """The sums :func:`blockbayes.kernels.latent_pass` returns, computed from whole arrays
    (the ``"separate"`` path), shape ``(C, 3)``."""
    R = T - affine(Xn, W)
    Rx = Xn - activate(xp, Zn, net.activation, net.slope)
    D = z_old - A
    return xp.stack([xp.sum(D * D, axis=(-2, -1)), xp.sum(R * R, axis=(-2, -1)),
                     xp.sum(Rx * Rx, axis=(-2, -1))], axis=-1)


def _fused_log_joint(xp, state: GibbsState, net: MLP, n: int, sums):
    """(log joint of ``state`` without the first layer's data term, that term of the input
    state) from the latent passes' sums (see :class:`GibbsInfo`); terms as :func:`log_joint`."""
    two_pi = 2.0 * math.pi
    L = net.num_layers
    dt = state.delta_y.dtype
    total = xp.zeros(state.delta_y.shape, dtype=dt, device=device_of(state.delta_y))
    for l, W in enumerate(state.weights):
        d_in, d_out = net.widths[l], net.widths[l + 1]
        lw, lb = state.lam_w[:, l], state.lam_b[:, l]
        Ww, b = W[..., :-1], W[..., -1]
        total = total + d_out * (-(d_in + 1) / 2 * math.log(two_pi) + 0.5 * (d_in * xp.log(lw) + xp.log(lb)))
        total = total - 0.5 * (lw * xp.sum(Ww * Ww, axis=(-2, -1)) + lb * xp.sum(b * b, axis=-1))
        if l == L - 1:
            total = total - 0.5 * n * d_out * xp.log(two_pi * state.delta_y)
        else:
            total = total - 0.5 * n * d_out * math.log(two_pi * net.delta_z[l])
    for h in range(L - 1):
        s = xp.astype(sums[h], dt)
        d = net.widths[h + 1]
        dx = net.delta_x[h]
        d_next = state.delta_y if h == L - 2 else net.delta_z[h + 1]
        total = total - s[:, 1] / (2 * d_next) - s[:, 2] / (2 * dx) - 0.5 * n * d * math.log(two_pi * dx)
    first = -xp.astype(sums[0], dt)[:, 0] / (2 * net.delta_z[0])
    return total, first


def _prior_matches_net(xp, net, lam_w, lam_b) -> bool:
    """Whether every chain's first-layer prior equals the net's (the cached Cholesky's)."""
    return bool(xp.all(lam_w[:, 0] == net.lam_w[0]) & xp.all(lam_b[:, 0] == net.lam_b[0]))


def _sample_prior_precisions(key, net, weights, hp: Hyperprior, like):
    xp = namespace(like)
    keys = bbr.split(key, 2 * net.num_layers)
    lw, lb = [], []
    for l, W in enumerate(weights):
        d_out, d_in = net.widths[l + 1], net.widths[l]
        Ww = W[..., :-1]
        b = W[..., -1]
        rate_w = hp.prior_rate + 0.5 * xp.sum(Ww * Ww, axis=(-2, -1))
        rate_b = hp.prior_rate + 0.5 * xp.sum(b * b, axis=-1)
        lw.append(sample_precision(keys[2 * l], hp.prior_shape + 0.5 * d_in * d_out, rate_w, like))
        lb.append(sample_precision(keys[2 * l + 1], hp.prior_shape + 0.5 * d_out, rate_b, like))
    return xp.stack(lw, axis=-1), xp.stack(lb, axis=-1)


def log_joint(state: GibbsState, net: MLP, X, y):
    """``log p(W̃, Z, X, y | X^1, λ, Δ)`` of (A.0) per chain, shape ``(C,)``.

    For the probit likelihoods the output term is the density of the latent utilities
    ``N(U; X̃^L W̃^{L⊤}, I)`` (the label indicator is 1 on the sampler's support); for
    ``"onehot_gaussian"`` the one-hot labels are the Gaussian targets.
    """
    xp = namespace(X, y)
    L = net.num_layers
    n = X.shape[0]
    two_pi = 2.0 * math.pi
    total = xp.zeros(state.delta_y.shape, dtype=X.dtype, device=device_of(X))
    H = X
    for l, W in enumerate(state.weights):
        d_in, d_out = net.widths[l], net.widths[l + 1]
        lw, lb = state.lam_w[:, l], state.lam_b[:, l]
        Ww, b = W[..., :-1], W[..., -1]
        total = total + d_out * (-(d_in + 1) / 2 * math.log(two_pi) + 0.5 * (d_in * xp.log(lw) + xp.log(lb)))
        total = total - 0.5 * (lw * xp.sum(Ww * Ww, axis=(-2, -1)) + lb * xp.sum(b * b, axis=-1))
        A = affine(H, W)
        if l == L - 1:
            T, dl = output_targets(net, y, state.latent, state.delta_y.shape[0], X), state.delta_y
        else:
            T, dl = state.pre[l], xp.full(state.delta_y.shape, net.delta_z[l], dtype=X.dtype, device=device_of(X))
        R = T - A
        total = total - 0.5 * n * d_out * xp.log(two_pi * dl) - xp.sum(R * R, axis=(-2, -1)) / (2 * dl)
        if l < L - 1:
            Fz = activate(xp, state.pre[l], net.activation, net.slope)
            Rx = state.post[l] - Fz
            dx = net.delta_x[l]
            total = total - 0.5 * n * d_out * math.log(two_pi * dx) - xp.sum(Rx * Rx, axis=(-2, -1)) / (2 * dx)
            H = state.post[l]
    return total


# --------------------------------------------------------------------------- run

def _first_nonfinite(xp, state: GibbsState):
    """Names of the state's blocks holding a NaN or an infinity (empty when all are finite).

    The common all-finite case costs one device-to-host read (one sync on a GPU): the per-block
    flags are combined on the device first and read block by block only when one is off."""
    blocks = [*state.weights, *state.pre, *state.post, state.lam_w, state.lam_b, state.delta_y]
    if state.latent is not None:
        blocks.append(state.latent)
    ok = xp.all(xp.isfinite(blocks[0]))
    for B in blocks[1:]:
        ok = ok & xp.all(xp.isfinite(B))
    if bool(ok):
        return []
    bad = []
    for l, W in enumerate(state.weights):
        if not bool(xp.all(xp.isfinite(W))):
            bad.append(f"weights of layer {l + 1} (rows into layer {l + 2})")
    for h, (Z, Xh) in enumerate(zip(state.pre, state.post)):
        if not bool(xp.all(xp.isfinite(Z))):
            bad.append(f"pre-activations Z of hidden layer {h + 2}")
        if not bool(xp.all(xp.isfinite(Xh))):
            bad.append(f"post-activations X of hidden layer {h + 2}")
    for name in ("lam_w", "lam_b", "delta_y"):
        if not bool(xp.all(xp.isfinite(getattr(state, name)))):
            bad.append(name)
    if state.latent is not None and not bool(xp.all(xp.isfinite(state.latent))):
        bad.append("latent utilities U of the output layer")
    return bad


def run(net: MLP, X, y, *, num_samples: int, num_warmup: int = 0, num_chains: int = 1, thin: int = 1,
        seed=None, device=None, dtype=None, progress: bool = True, init="prior",
        learn_noise: bool = False, learn_prior: bool = False, hyperprior: Hyperprior = Hyperprior(),
        store_log_joint: bool = True, post_method: str = "auto", check_every: int = 1,
        num_threads: Optional[int] = None, blas_threads: Optional[int] = 1, moves=None, schedule=None,
        diagnose: bool = True, probe=None) -> GibbsResult:
    """Run block-Gibbs chains on the noisy-MLP posterior and collect weight samples.

    Parameters
    ----------
    net : MLP
    X : array, shape (n, d_in)
        Inputs (NumPy, CuPy or any Array-API array). Not modified.
    y : array, shape (n,), (n, d_out) or (num_chains, n, d_out)
        Regression targets (the last form gives each chain its own targets), or integer class
        labels ``0..K-1`` of shape ``(n,)`` for ``likelihood="probit"`` (K = 2),
        ``"multinomial_probit"`` and ``"onehot_gaussian"`` (K = d_out). Not modified.
    num_samples : int
        Samples kept per chain (after thinning).
    num_warmup : int
        Sweeps discarded first.
    num_chains : int
        Independent chains, run in parallel as a leading batch axis.
    thin : int
        Keep every ``thin``-th sweep after warm-up.
    seed : None, int, SeedSequence or key
        Same seed (and backend, library version) ⇒ same samples.
    device : None, "cpu", "cuda" or "cuda:N"
        Where to compute; ``None`` keeps the inputs' device. ``"cuda"`` moves ``X`` and ``y`` once
        (needs CuPy and a GPU; otherwise :class:`~blockbayes._backend.BackendUnavailableError`).
        Results stay on the compute device (``result.to_numpy()`` brings them to the host).
    dtype : None, "float32" or "float64"
        Compute dtype; default: ``X``'s.
    progress : bool
        Show a tqdm progress bar.
    init : see :func:`init`; also ``"map"`` / ``"ensemble"`` (each chain from its own MAP fit of
        the standard net, auxiliaries by the noisy forward pass; with ``learn_noise`` the starting
        ``Δ_y`` is the fit's training MSE) and ``"map_shared"`` (one fit for all chains); see
        :mod:`blockbayes.gibbs_starts`.
    learn_noise, learn_prior, hyperprior : see :func:`step`
    store_log_joint : bool
        Record ``log p(W̃, Z, X, y)`` at every kept sample.
    post_method : {"auto", "cholesky", "matheron"}
    check_every : int
        Check the state for non-finite values every this many sweeps (a device sync on GPUs).
    num_threads : int, optional
        Threads of the fused Numba kernels (``None``: all usable cores but one, at least one —
        :func:`blockbayes._backend.threads.default_kernel_threads`; a parallel pass that needs
        every core stalls behind any other busy process). Small passes run on one thread anyway.
    blas_threads : int, optional
        BLAS/LAPACK threads during the run (default 1; ``None`` leaves the library's setting).
        The sweep's matrix products have one small dimension, where threaded BLAS gains little
        and, measured here (2 cores, OpenBLAS), made a (50, 50, 1e4) sweep 2.4× slower
        (40.7 vs 16.8 ms) and stalls ~20× when the cores are busy.
    moves : optional
        Extra exact moves after every sweep, e.g. :class:`blockbayes.gibbs_moves.NonCentredMove`
        (non-centred layer moves that mix at small ``Δ_Z, Δ_X``; adapted during warm-up only).
    schedule : optional
        A warm-up schedule of the hidden-layer noise, e.g.
        :class:`blockbayes.gibbs_anneal.AnnealedDelta` (``Δ`` lowered to the net's values during
        warm-up; every kept sample is drawn at the net's ``Δ``).
    diagnose : bool
        After the run, compute the function-space diagnostics (:meth:`GibbsResult.summary`) and
        warn with the worst rows when some R-hat exceeds 1.01
        (:class:`blockbayes.gibbs_diagnostics.ConvergenceWarning`).
    probe : None, int or array of shape (P, d_in)
        Probe inputs of the diagnostics (stored as ``result.probe``): an array, or the number of
        training inputs to take at evenly spaced indices (default 32).

    Returns
    -------
    GibbsResult
        ``weights[l]`` of shape ``(num_chains, num_samples, d_{l+1}, d_l + 1)`` (bias last), the
        per-sample ``delta_y``, ``lam_w``, ``lam_b`` and ``log_joint``.

    Raises
    ------
    NonFiniteStateError
        If the state turns non-finite; the message names the block(s) and the sweep.
    """
    for name, v, lo in (("num_samples", num_samples, 1), ("num_warmup", num_warmup, 0),
                        ("num_chains", num_chains, 1), ("thin", thin, 1), ("check_every", check_every, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if learn_noise and net.likelihood in ("probit", "multinomial_probit"):
        raise ValueError(f"learn_noise is not available for likelihood={net.likelihood!r}: Δ_y = 1 is fixed")
    kind, index = resolve_device(device)
    if kind is not None:
        X = to_device(X, kind, index)
        y = to_device(y, kind, index)
    X, y = validate_data(net, X, y, dtype=dtype, num_chains=num_chains)
    xp = namespace(X, y)
    root = bbr.key(seed)
    k_init, k_run = bbr.split(root, 2)
    map_dy = None
    if isinstance(init, str) and init in ("map", "ensemble", "map_shared"):
        from .gibbs_starts import map_starts

        k_map, k_init = bbr.split(k_init, 2)
        init, map_dy, _ = map_starts(k_map, net, X, y, num_chains=num_chains, kind=init, learn_noise=learn_noise)
    state = _init_state(k_init, net, X, y, num_chains=num_chains, init=init)
    if map_dy is not None:
        state = state._replace(delta_y=map_dy)
    cache = precompute(net, X, learn_prior=learn_prior)
    C, S, L = num_chains, num_samples, net.num_layers
    dev, dt = device_of(X), X.dtype
    tr_w = [xp.zeros((C, S) + s, dtype=dt, device=dev) for s in net.weight_shapes()]
    tr_dy = xp.zeros((C, S), dtype=dt, device=dev)
    tr_lw = xp.zeros((C, S, L), dtype=dt, device=dev)
    tr_lb = xp.zeros((C, S, L), dtype=dt, device=dev)
    tr_lj = xp.zeros((C, S), dtype=dt, device=dev) if store_log_joint else None
    total = num_warmup + S * thin
    probe_X = probe if hasattr(probe, "shape") else None
    if probe_X is None:
        from .gibbs_diagnostics import default_probe

        probe_X = default_probe(X, 32 if probe is None else int(probe))
    mstate = moves.init(state, net, X, y) if moves is not None else None
    net_s, cache_s = net, cache
    import time as _time

    t_start = _time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc="gibbs", unit="sweep", leave=False)
    key = k_run
    kept = 0
    # log joint from the latent passes' sums, completed one sweep later; a move after the sweep
    # changes the state those sums describe, so with moves it is computed directly
    fused_lj = L > 1 and moves is None
    pending = None      # (trace index, partial log joint) awaiting the next sweep's first term
    limits = thread_limits(default_kernel_threads() if num_threads is None else num_threads, blas_threads)
    try:
        for sweep in range(total):
            key, sub = bbr.split(key, 2)
            keep = sweep >= num_warmup and (sweep - num_warmup) % thin == thin - 1
            if schedule is not None:
                net_s = schedule.net_at(net, sweep, num_warmup)
                cache_s = cache if net_s is net else precompute(net_s, X, learn_prior=learn_prior)
            state, info = step(sub, state, net_s, X, y, learn_noise=learn_noise, learn_prior=learn_prior,
                               hyperprior=hyperprior, cache=cache_s,
                               compute_log_joint=keep and store_log_joint and not fused_lj and moves is None,
                               post_method=post_method, checked=True)
            if pending is not None:
                tr_lj[:, pending[0]] = pending[1] + info.first_term_prev
                pending = None
            if moves is not None:
                key, sub = bbr.split(key, 2)
                state, mstate = moves.step(sub, mstate, state, net_s, X, y, warmup=sweep < num_warmup,
                                           final_warmup=sweep == num_warmup - 1)
                if keep and store_log_joint:
                    info = info._replace(log_joint=log_joint(state, net, X, y))
            if (sweep + 1) % check_every == 0 or sweep == total - 1:
                # one reduction (one device sync): the partial log joint sums every weight,
                # precision and latent array of the new state, so it is finite iff they are
                witness = (info.log_joint_partial + info.first_term_prev) if fused_lj else None
                bad = ([] if witness is not None and bool(xp.all(xp.isfinite(witness)))
                       else _first_nonfinite(xp, state))
                if bad:
                    raise NonFiniteStateError(
                        f"the sampler state became non-finite at sweep {sweep + 1} (of {total}) in: "
                        + "; ".join(bad) + ". Check the data scale and Δ/prior settings "
                        "(e.g. Δ too small for float32).")
            if keep:
                for l in range(L):
                    tr_w[l][:, kept, ...] = state.weights[l]
                tr_dy[:, kept] = state.delta_y
                tr_lw[:, kept, ...] = state.lam_w
                tr_lb[:, kept, ...] = state.lam_b
                if tr_lj is not None:
                    if fused_lj:
                        pending = (kept, info.log_joint_partial)
                    else:
                        tr_lj[:, kept] = info.log_joint
                kept += 1
            if bar is not None:
                bar.update(1)
        if pending is not None:
            tr_lj[:, pending[0]] = log_joint(state, net, X, y)
    finally:
        if bar is not None:
            bar.close()
        limits()
    result = GibbsResult(net=net, weights=tuple(tr_w), delta_y=tr_dy, lam_w=tr_lw, lam_b=tr_lb,
                         log_joint=tr_lj, final_state=state,
                         config=dict(num_samples=S, num_warmup=num_warmup, num_chains=C, thin=thin,
                                     learn_noise=learn_noise, learn_prior=learn_prior,
                                     backend=backend_name(xp), dtype=str(dt),
                                     wall_time_s=_time.perf_counter() - t_start),
                         probe=probe_X)
    if moves is not None and hasattr(moves, "summary"):
        result.config["moves"] = moves.summary(mstate)
    if diagnose:
        from .gibbs_diagnostics import warn_if_unmixed

        warn_if_unmixed(result)
    return result
