"""Input checking and small shared helpers of the Laplace family (no numerics)."""
from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

from .._backend import backend_name, device_of, namespace, to_device, to_numpy
from .._backend import random as bbr
from ..model import MLP
from ._mlp_grad import LIKELIHOODS

_ALIASES = {"regression": "gaussian", "classification": "categorical", "softmax": "categorical",
            "logistic": "bernoulli", "binary": "bernoulli"}


def resolve_likelihood(net: MLP, likelihood) -> str:
    """Likelihood of the *standard* network.

    ``None`` takes it from the net: ``"gaussian"`` → ``"gaussian"`` (regression with variance
    ``net.delta_y``); ``"multinomial_probit"`` / ``"onehot_gaussian"`` → ``"categorical"``
    (softmax over the ``d_out`` logits); ``"probit"`` → ``"bernoulli"`` (one logistic logit).
    Aliases: ``"regression"``, ``"classification"``/``"softmax"``, ``"logistic"``/``"binary"``.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a blockbayes.MLP, got {type(net).__name__}")
    if likelihood is None:
        likelihood = {"gaussian": "gaussian", "multinomial_probit": "categorical",
                      "onehot_gaussian": "categorical", "probit": "bernoulli"}[net.likelihood]
    if not isinstance(likelihood, str):
        raise TypeError(f"likelihood must be a string or None, got {type(likelihood).__name__}")
    lik = _ALIASES.get(likelihood, likelihood)
    if lik not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {LIKELIHOODS} (or None), got {likelihood!r}")
    if lik == "categorical" and net.d_out < 2:
        raise ValueError("likelihood='categorical' needs d_out >= 2 logits")
    if lik == "bernoulli" and net.d_out != 1:
        raise ValueError(f"likelihood='bernoulli' needs d_out = 1, got {net.d_out}")
    return lik


def check_X(net: MLP, X, name="X"):
    """``X`` must be a finite float array of shape ``(n, d_in)`` with ``n ≥ 1``."""
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(X).__name__}")
    xp = namespace(X)
    if not xp.isdtype(X.dtype, "real floating"):
        raise TypeError(f"{name} must be a float32/float64 array, got dtype {X.dtype}")
    if X.ndim != 2 or X.shape[1] != net.d_in:
        raise ValueError(f"{name} must have shape (n, {net.d_in}), got {tuple(X.shape)}")
    if X.shape[0] < 1:
        raise ValueError(f"{name} has no rows")
    if not bool(xp.all(xp.isfinite(X))):
        raise ValueError(f"{name} contains NaN or infinite values")
    return xp


def encode_targets(net: MLP, likelihood: str, X, y, name="y"):
    """Targets as a float array ``Y`` of shape ``(n, C)`` in ``X``'s namespace/dtype.

    Regression: ``y`` of shape ``(n,)`` (``d_out = 1``) or ``(n, d_out)``, finite.
    Categorical: integer labels in ``[0, d_out)``, shape ``(n,)`` (integral floats accepted) → one-hot.
    Bernoulli: labels in ``{0, 1}``, shape ``(n,)`` or ``(n, 1)``.
    """
    xp = namespace(X)
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(y).__name__}")
    try:
        namespace(X, y)
    except ValueError as exc:
        raise TypeError(f"{name} must come from the same array library as X ({exc})") from None
    n = X.shape[0]
    C = net.d_out
    dev = device_of(X)
    if y.shape[0:1] != (n,):
        raise ValueError(f"{name} must have {n} rows (as X), got shape {tuple(y.shape)}")
    if likelihood == "gaussian":
        if not (xp.isdtype(y.dtype, "real floating") or xp.isdtype(y.dtype, "integral")):
            raise TypeError(f"{name} must be a real array, got dtype {y.dtype}")
        if y.ndim == 1:
            if C != 1:
                raise ValueError(f"{name} must have shape ({n}, {C}) for d_out = {C}, got {tuple(y.shape)}")
            y = xp.reshape(y, (n, 1))
        if y.ndim != 2 or y.shape[1] != C:
            raise ValueError(f"{name} must have shape ({n},) or ({n}, {C}), got {tuple(y.shape)}")
        Y = xp.astype(y, X.dtype)
        if not bool(xp.all(xp.isfinite(Y))):
            raise ValueError(f"{name} contains NaN or infinite values")
        return Y
    # classification labels
    if y.ndim == 2 and y.shape[1] == 1:
        y = xp.reshape(y, (n,))
    if y.ndim != 1:
        raise ValueError(f"{name} must be a vector of integer class labels of shape ({n},), got {tuple(y.shape)}")
    if xp.isdtype(y.dtype, "real floating"):
        if not bool(xp.all(xp.isfinite(y))):
            raise ValueError(f"{name} contains NaN or infinite values")
        if not bool(xp.all(y == xp.round(y))):
            raise ValueError(f"{name} must hold integer class labels")
    elif not xp.isdtype(y.dtype, "integral") and y.dtype != xp.bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}")
    yi = xp.astype(y, xp.int64)
    K = 2 if likelihood == "bernoulli" else C
    if bool(xp.any(yi < 0)) or bool(xp.any(yi >= K)):
        raise ValueError(f"{name} labels must lie in [0, {K - 1}] for likelihood={likelihood!r}")
    if likelihood == "bernoulli":
        return xp.reshape(xp.astype(yi, X.dtype), (n, 1))
    classes = xp.arange(C, dtype=xp.int64, device=dev)
    return xp.astype(yi[:, None] == classes[None, :], X.dtype)


def check_weights(net: MLP, weights, X, name="params"):
    """A tuple of ``L`` finite arrays of shapes ``net.weight_shapes()`` in ``X``'s namespace, cast to ``X.dtype``."""
    if hasattr(weights, "weights") and not hasattr(weights, "shape"):
        weights = weights.weights          # a result object
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence):
        raise TypeError(f"{name} must be a tuple of per-layer weight arrays, got {type(weights).__name__}")
    shapes = net.weight_shapes()
    if len(weights) != len(shapes):
        raise ValueError(f"{name} must have {len(shapes)} layers, got {len(weights)}")
    xp = namespace(X)
    out = []
    for l, (W, shp) in enumerate(zip(weights, shapes)):
        if not hasattr(W, "shape"):
            raise TypeError(f"{name}[{l}] must be an array, got {type(W).__name__}")
        try:
            namespace(X, W)
        except ValueError as exc:
            raise TypeError(f"{name}[{l}] must come from the same array library as X ({exc})") from None
        if tuple(W.shape) != shp:
            raise ValueError(f"{name}[{l}] must have shape {shp} (d_out, d_in + 1; bias last), got {tuple(W.shape)}")
        if not xp.isdtype(W.dtype, "real floating"):
            raise TypeError(f"{name}[{l}] must be a float array, got dtype {W.dtype}")
        W = xp.astype(W, X.dtype, copy=True)
        if not bool(xp.all(xp.isfinite(W))):
            raise ValueError(f"{name}[{l}] contains NaN or infinite values")
        out.append(W)
    return tuple(out)


def resolve_prior(net: MLP, prior_precision):
    """Per-layer ``(lam_w, lam_b)`` tuples from ``None`` (the net's), a float, or a per-layer sequence
    of floats or ``(λ_W, λ_b)`` pairs (the :class:`~blockbayes.MLP` ``prior_prec`` forms)."""
    if prior_precision is None:
        return tuple(net.lam_w), tuple(net.lam_b)
    if isinstance(prior_precision, str):
        if prior_precision != "fan_in":
            raise ValueError(f"prior_precision must be None, 'fan_in', a float or a per-layer sequence, got {prior_precision!r}")
    try:
        tmp = net.replace(prior_prec=prior_precision)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"prior_precision: {exc}") from None
    return tuple(tmp.lam_w), tuple(tmp.lam_b)


def resolve_noise(net: MLP, likelihood: str, delta_y, sigma_noise) -> float:
    """Gaussian noise variance: ``delta_y`` (variance) or ``sigma_noise`` (standard deviation), else ``net.delta_y``."""
    if delta_y is not None and sigma_noise is not None:
        raise ValueError("give delta_y (variance) or sigma_noise (standard deviation), not both")
    if likelihood != "gaussian":
        if delta_y is not None or sigma_noise is not None:
            raise ValueError("the noise variance only exists for the gaussian likelihood")
        return 1.0
    if sigma_noise is not None:
        s = positive("sigma_noise", sigma_noise)
        return s * s
    if delta_y is not None:
        return positive("delta_y", delta_y)
    return float(net.delta_y)


def positive(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        if hasattr(value, "shape") and getattr(value, "ndim", 1) == 0:
            value = float(to_numpy(value))
        else:
            raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return v


def positive_int(name, value, minimum=1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) and not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    v = int(value)
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def as_namespace_of(x, like):
    """``x`` moved into ``like``'s namespace/device (no copy when already there)."""
    xp = namespace(like)
    if namespace(x) is xp:
        return x
    name = backend_name(xp)
    if name == "numpy":
        return to_numpy(x)
    if name == "cupy":
        return to_device(x, "cuda", like.device.id)
    return xp.asarray(to_numpy(x), device=device_of(like))


def init_weights(net: MLP, *, seed=None, like, scale: float = 1.0):
    """Random initial weights: ``W ~ N(0, scale²/d_in)`` (LeCun), biases 0, in ``like``'s namespace/dtype.

    Returns
    -------
    tuple of arrays
        Per layer ``(d_{l+1}, d_l + 1)``, bias last.
    """
    xp = namespace(like)
    keys = bbr.split(bbr.key(seed), net.num_layers)
    out = []
    for l, (d, k) in enumerate(net.weight_shapes()):
        Z = bbr.normal(keys[l], (d, k - 1), like=like)
        Z = xp.asarray(Z, dtype=like.dtype, device=device_of(like)) * (scale / math.sqrt(k - 1))
        out.append(xp.concat([Z, xp.zeros((d, 1), dtype=like.dtype, device=device_of(like))], axis=1))
    return tuple(out)


def progress_bar(total, desc, progress):
    """A tqdm bar (``progress``: True always, False never, None only on a terminal)."""
    try:
        from tqdm.auto import tqdm
    except Exception:  # pragma: no cover - tqdm is a dependency
        return None
    disable = (not progress) if progress is not None else None
    return tqdm(total=total, desc=desc, disable=disable, leave=False)
