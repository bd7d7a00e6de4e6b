"""The input gate: checking and normalising the data every family receives.

:func:`validate_data` (training data for a net), :func:`validate_labels` (class labels) and
:func:`prepare_X` (new inputs for a fitted posterior, moved to the samples' device and dtype)
are the one place where inputs are checked; a bad input raises ``TypeError``/``ValueError``
naming the argument, never a NaN later.
"""
from __future__ import annotations

from ._backend import dtype_name, move_like, namespace, same_device
from .model import MLP

__all__ = ["validate_data", "validate_labels", "num_classes", "prepare_X"]


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
    if dtype_name(X) not in ("float32", "float64"):
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


def prepare_X(X_new, *, like, d_in: int, name: str = "X_new"):
    """New inputs for a fitted posterior: on ``like``'s namespace, device and dtype.

    Parameters
    ----------
    X_new : array, shape (n, d_in)
        Any NumPy, CuPy or Array-API float array.
    like : array
        An array of the posterior (its samples): gives the namespace, device and dtype.
    d_in : int
        The net's input width.

    Raises
    ------
    TypeError
        ``X_new`` is not an array, or not a float array.
    ValueError
        Wrong shape, or non-finite values.
    """
    xp = namespace(like)
    if not hasattr(X_new, "shape"):
        raise TypeError(f"{name} must be an array")
    if namespace(X_new) is not xp:
        X_new = move_like(X_new, like)
    if not xp.isdtype(X_new.dtype, "real floating"):
        raise TypeError(f"{name} must be a float array, got dtype {X_new.dtype}")
    if X_new.ndim != 2 or X_new.shape[1] != d_in:
        raise ValueError(f"{name} must have shape (n, {d_in}), got {tuple(X_new.shape)}")
    if not bool(xp.all(xp.isfinite(X_new))):
        raise ValueError(f"{name} contains NaN or infinite values")
    return xp.astype(X_new, like.dtype)
