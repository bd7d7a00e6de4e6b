"""The input gate: checking and normalising the data every family receives.

:func:`prepare` is the one entry of training data: it resolves ``device=``, moves ``X`` and
``y`` there once, converts to ``dtype=`` and validates them for the kind of model (``task``).
Below it: :func:`validate_data` (training data of the noisy net), :func:`validate_labels`
(class labels), :func:`check_X` / :func:`encode_targets` (the standard net's inputs and
targets); :func:`prepare_X` does the same for new inputs of a fitted posterior (moved to the
samples' device and dtype). A bad input raises ``TypeError``/``ValueError`` naming the
argument, never a NaN later; data far from unit scale, which the default priors are not meant
for, get a :class:`DataScaleWarning` (:func:`warn_if_unscaled`).
"""
from __future__ import annotations

import sys as _sys
import warnings

from ._backend import (device_of, dtype_name, float_dtype, move_like, namespace, resolve_device,
                       same_device, to_device)
from .model import MLP

__all__ = ["prepare", "validate_data", "validate_labels", "num_classes", "prepare_X", "check_X",
           "encode_targets", "resolve_likelihood", "warn_if_unscaled", "DataScaleWarning", "SCALE_LIMITS",
           "LIKELIHOODS", "TASKS"]

#: what :func:`prepare` checks the data for
TASKS = ("noisy", "regression", "standard")
LIKELIHOODS = ("gaussian", "categorical", "bernoulli")
_ALIASES = {"regression": "gaussian", "classification": "categorical", "softmax": "categorical",
            "logistic": "bernoulli", "binary": "bernoulli"}


def resolve_likelihood(net: MLP, likelihood=None, *, learn_noise: bool = False) -> str:
    """Likelihood of the *standard* network.

    ``None`` takes it from the net: ``"gaussian"`` → ``"gaussian"``; ``"multinomial_probit"`` /
    ``"onehot_gaussian"`` → ``"categorical"`` (softmax); ``"probit"`` → ``"bernoulli"`` (logistic).
    Aliases: ``"regression"``, ``"classification"``/``"softmax"``, ``"logistic"``/``"binary"``.
    ``learn_noise=True`` (a run that fits the Gaussian noise variance) is a ``ValueError`` for the
    classification likelihoods.
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
    if learn_noise and lik != "gaussian":
        raise ValueError("learn_noise applies to the Gaussian likelihood only")
    return lik



def prepare(net: MLP, X, y, *, device=None, dtype=None, task: str = "noisy", likelihood=None,
            num_chains=None, per_chain: bool = True, method: str = "this method"):
    """The input gate of training data: device, dtype and checks, once, for every family.

    Parameters
    ----------
    net : MLP
    X : array, shape (n, d_in)
        Any NumPy, CuPy or Array-API float array. Not modified.
    y : array
        Targets (see ``task``). Not modified.
    device : None, "cpu", "cuda" or "cuda:N"
        Where to compute: ``X`` and ``y`` are moved there once (``None`` keeps their device;
        ``"cuda"`` without CuPy or a GPU raises :class:`~blockbayes._backend.BackendUnavailableError`).
    dtype : None, "float32" or "float64"
        Compute dtype (default: ``X``'s); ``y`` follows it.
    task : {"noisy", "regression", "standard"}
        ``"noisy"``: data of the noisy net (:func:`validate_data`: regression targets
        ``(n, d_out)`` — or ``(num_chains, n, d_out)`` with ``per_chain`` — or int64 class labels
        ``(n,)`` for the classification likelihoods). ``"regression"``: the same, and the net
        must be Gaussian (``NotImplementedError`` otherwise, naming ``method``).
        ``"standard"``: data of the standard net (:func:`check_X`, :func:`encode_targets` for
        ``likelihood``, a name of :func:`blockbayes.nn.resolve_likelihood`): ``y`` becomes float
        targets ``(n, d_out)`` (one-hot for ``"categorical"``, ``(n, 1)`` 0/1 for ``"bernoulli"``).
    likelihood : str, optional
        ``task="standard"`` only; default from ``net.likelihood``.
    num_chains : int, optional
        Chains of the run (checks per-chain targets).
    per_chain : bool
        Accept per-chain targets (``task="noisy"``).

    Returns
    -------
    X, y : arrays on the compute device, in the compute dtype (``y`` as described above).

    Raises
    ------
    TypeError
        ``net`` is not an :class:`MLP`; ``X``/``y`` not arrays or of the wrong dtype.
    ValueError
        Wrong shapes, non-finite values, labels out of range, ``X``/``y`` on different devices
        (with ``device=None``), unknown ``task`` or ``device``.
    NotImplementedError
        ``task="regression"`` with a classification net.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a blockbayes.MLP, got {type(net).__name__}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "regression" and net.likelihood != "gaussian":
        raise NotImplementedError(
            f"likelihood={net.likelihood!r}: {method} implements Gaussian regression only")
    for name, arr in (("X", X), ("y", y)):
        if not hasattr(arr, "shape") or not hasattr(arr, "dtype"):
            raise TypeError(f"{name} must be an array (NumPy, CuPy or Array-API), got {type(arr).__name__}")
    kind, index = resolve_device(device)
    if kind is not None:
        X = to_device(X, kind, index)
        y = to_device(y, kind, index)
    if task != "standard":
        X, y = validate_data(net, X, y, dtype=dtype, per_chain=per_chain and task == "noisy",
                             num_chains=num_chains)
        warn_if_unscaled(net, X, y)
        return X, y
    lik = resolve_likelihood(net, likelihood)
    if dtype is not None:
        xp0 = namespace(X)
        if not xp0.isdtype(X.dtype, "real floating"):
            raise TypeError(f"X must be a float32/float64 array, got dtype {X.dtype}")
        X = xp0.astype(X, float_dtype(xp0, dtype))
    check_X(net, X)
    same_device(X, y)
    Y = encode_targets(net, lik, X, y)
    warn_if_unscaled(net, X, Y, regression=lik == "gaussian")
    return X, Y


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


def check_X(net: MLP, X, name="X"):
    """``X`` must be a finite float array ``(n, d_in)``, ``n ≥ 1``; returns its namespace."""
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
    """Targets as a float array ``(n, C)`` in ``X``'s namespace and dtype.

    Regression: ``(n,)`` (``d_out = 1``) or ``(n, d_out)``, finite. Categorical: integer labels in
    ``[0, d_out)`` → one-hot. Bernoulli: labels in ``{0, 1}``, ``(n,)`` or ``(n, 1)``.
    """
    xp = namespace(X)
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(y).__name__}")
    try:
        namespace(X, y)
    except ValueError as exc:
        raise TypeError(f"{name} must come from the same array library as X ({exc})") from None
    n, C = X.shape[0], net.d_out
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
    classes = xp.arange(C, dtype=xp.int64, device=device_of(X))
    return xp.astype(yi[:, None] == classes[None, :], X.dtype)


class DataScaleWarning(UserWarning):
    """Training data far from unit scale, for which the library's default priors are not meant."""


SCALE_LIMITS = (0.1, 10.0)
"""Root mean square outside which :func:`warn_if_unscaled` warns: ``(low, high)`` for regression
targets, ``high`` for each input column."""


def warn_if_unscaled(net: MLP, X, y, *, regression=None) -> bool:
    """Warn (:class:`DataScaleWarning`) when ``X`` or Gaussian ``y`` are far from standardised.

    The fan-in prior (``λ = d_in`` per layer: a unit's pre-activation has prior variance ~1 for
    unit-scale inputs), the output bias's prior and the default noise variances ``Δ = 1e-3``
    assume data of about zero mean and unit variance. Measured on raw UCI data (design note 60,
    docs/gibbs-moves.md §6 "Session 21"): ``gibbs.run``'s defaults gave Yacht a test RMSE of 15.4
    (the constant function; 0.51 standardised) and Boston and Concrete RMSEs 13% and 3% above
    their standardised runs. The check is the root mean square ``sqrt(mean(v²))`` — it sees an
    offset as well as a spread — of ``y`` (Gaussian likelihood; outside :data:`SCALE_LIMITS`) and
    of each column of ``X`` (above ``SCALE_LIMITS[1]``). One reduction over the data (a device
    sync on a GPU). :func:`prepare` calls it, so every family warns, at the user's call (the same
    data passed on inside a run give the same message from the same line, which Python shows
    once).

    Parameters
    ----------
    net : MLP
    X : array, shape (n, d_in)
    y : array
        Regression targets ``(n, d_out)`` or ``(C, n, d_out)``, or class labels / encoded class
        targets (not checked).
    regression : bool, optional
        Whether ``y`` holds regression targets; default ``net.likelihood == "gaussian"``.

    Returns
    -------
    bool
        Whether it warned.
    """
    xp = namespace(X)
    lo, hi = SCALE_LIMITS
    msgs = []
    rms_x = xp.sqrt(xp.mean(X * X, axis=0))
    wx = float(xp.max(rms_x))
    if wx > hi:
        msgs.append(f"input column {int(xp.argmax(rms_x))} has root mean square {wx:.3g}")
    if (net.likelihood == "gaussian") if regression is None else regression:
        yr = float(xp.sqrt(xp.mean(y * y)))
        if not lo <= yr <= hi:
            ym = float(xp.mean(y))
            msgs.append(f"y has root mean square {yr:.3g} (mean {ym:.3g})")
    if not msgs:
        return False
    warnings.warn(
        "the data are far from standardised: " + "; ".join(msgs) + ". The fan-in prior and the default noise "
        "variances assume inputs and targets of about zero mean and unit variance, and fit unscaled data "
        "poorly; standardise X and y with the training statistics (e.g. (y - y.mean()) / y.std()) and map "
        "predictions back (bb.datasets.uci(..., standardize=True) does this for the UCI sets).",
        DataScaleWarning, stacklevel=_caller_level())
    return True


def _caller_level() -> int:
    """``stacklevel`` (for a ``warnings.warn`` in the calling function) of the first frame outside
    this package: the user's call, however many wrappers lie between."""
    f, level = _sys._getframe(1), 1
    while f is not None and f.f_globals.get("__name__", "").partition(".")[0] == "blockbayes":
        f, level = f.f_back, level + 1
    return level
