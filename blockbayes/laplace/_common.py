"""Input checking and small shared helpers of the Laplace family (no numerics)."""
from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

from .._backend import device_of, move_like, namespace, to_numpy
from .._backend import random as bbr
from ..model import MLP
# the standard net's input gate has one definition, public in blockbayes.nn
from ..nn import check_X, encode_targets, resolve_likelihood  # noqa: F401


def check_weights(net: MLP, weights, X, name="params", move: bool = False):
    """A tuple of ``L`` finite arrays of shapes ``net.weight_shapes()`` in ``X``'s namespace, cast to ``X.dtype``
    (``move``: arrays of another namespace/device are moved to ``X``'s first, as after ``device=``)."""
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
        if move:
            W = as_namespace_of(W, X)
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
    return x if namespace(x) is namespace(like) else move_like(x, like)


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
