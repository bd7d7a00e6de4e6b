"""The MLP specification shared by every inference family.

An :class:`MLP` is a static, hashable description: widths, activation, likelihood, Gaussian
priors on each node row, and the noisy-network variances Δ of MATH.md §A.0. Weights are never
stored on it; they travel as tuples of arrays, one per layer, of shape ``(..., d_out, d_in + 1)``
with the **bias in the last column** (leading axes are chains / samples).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Mapping, Sequence

from ._backend import backend_name, device_of, move_like, namespace, recycle

__all__ = [
    "MLP", "forward", "forward_layers", "activate", "augment", "chain_weights",
    "ACTIVATIONS", "LIKELIHOODS", "DEFAULT_DELTA", "resolve_learn_noise"
]

ACTIVATIONS = ("relu", "identity", "leaky_relu")
LIKELIHOODS = ("gaussian", "probit", "multinomial_probit", "onehot_gaussian")
DEFAULT_DELTA = 1e-3
"""Every noise variance ``Δ_Z``, ``Δ_X``, ``Δ_y`` of an :class:`MLP` the caller did not set (Piccioli et al.)."""


def _positive(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return v


def _per_layer(name, value, count) -> tuple[float, ...]:
    """A float (broadcast) or a sequence of ``count`` floats."""
    if isinstance(value, Real) and not isinstance(value, bool):
        return (_positive(name, value),) * count
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != count:
            raise ValueError(f"{name} needs {count} per-layer values, got {len(value)}")
        return tuple(_positive(f"{name}[{i}]", v) for i, v in enumerate(value))
    raise TypeError(f"{name} must be a number or a sequence of {count} numbers, got {type(value).__name__}")


@dataclass(frozen=True)
class MLP:
    """Specification of a (noisy) multilayer perceptron.

    Parameters
    ----------
    widths : sequence of int
        ``[d_in, h_1, ..., h_{L-1}, d_out]``: ``L = len(widths) - 1`` weight layers. Each ≥ 1.
    activation : {"relu", "identity", "leaky_relu"}
        Hidden-layer activation ``f``; the output layer is linear.
    slope : float
        Negative-side slope of ``"leaky_relu"`` (``f(z) = z`` for ``z ≥ 0``, ``slope·z`` else).
    likelihood : {"gaussian", "probit", "multinomial_probit", "onehot_gaussian"}
        Output model. ``"gaussian"``: regression ``y = F + N(0, Δ_y)``.
    prior_prec : "fan_in", float, or sequence
        Prior precision ``λ`` of each node row ``w̃ ~ N(0, diag(λ_W, ..., λ_W, λ_b)^{-1})``.
        ``"fan_in"`` sets ``λ_W = λ_b = d_l`` for layer ``l`` (Piccioli et al.); a float sets all;
        a sequence gives one value per layer, each a float or a pair ``(λ_W, λ_b)``.
    delta : float or mapping
        Noise variances of the noisy network: a float sets every ``Δ_Z``, ``Δ_X`` and ``Δ_y``;
        a mapping with keys among ``"Z"``, ``"X"``, ``"y"`` sets them separately (``"Z"``/``"X"``
        a float or one value per hidden layer; a missing key means ``1e-3``). Default (``None``):
        ``1e-3`` everywhere, the value of Piccioli et al.'s benchmarks. Whether ``Δ_y`` was given
        (a float, or a mapping with ``"y"``) is kept as :attr:`delta_y_given`, whether the hidden
        ``Δ`` were as :attr:`delta_hidden_given`: :func:`blockbayes.gibbs.run` learns the noise by
        default only when ``Δ_y`` was not given (design note 60), and then sets hidden ``Δ`` that
        were not given from its MAP starts' noise level (note 61).

    Attributes
    ----------
    num_layers : int
        ``L``.
    lam_w, lam_b : tuple of float
        Per-layer prior precisions of weights and biases.
    delta_z, delta_x : tuple of float
        ``Δ_Z^l`` and ``Δ_X^l`` for the hidden layers ``l = 2..L`` (length ``L - 1``).
    delta_y : float
        Output noise variance (fixed to 1 for the probit likelihoods).
    delta_y_given : bool
        ``Δ_y`` was set by the caller (``delta`` a float or a mapping with ``"y"``) rather than
        left at its default; always ``True`` for the probit likelihoods (``Δ_y = 1`` is part of
        the model there).
    delta_hidden_given : bool
        ``Δ_Z`` or ``Δ_X`` was set by the caller (``delta`` a float, or a mapping with ``"Z"`` or
        ``"X"``). When not, :func:`blockbayes.gibbs.run` with learned noise and MAP starts sets
        the hidden noise from the fits' noise level (design note 61).
    """

    widths: tuple[int, ...]
    activation: str = "relu"
    slope: float = 0.01
    likelihood: str = "gaussian"
    prior_prec: object = "fan_in"
    delta: object = None
    lam_w: tuple[float, ...] = field(init=False)
    lam_b: tuple[float, ...] = field(init=False)
    delta_z: tuple[float, ...] = field(init=False)
    delta_x: tuple[float, ...] = field(init=False)
    delta_y: float = field(init=False)

    def __init__(self, widths, activation="relu", *, slope=0.01, likelihood="gaussian",
                 prior_prec="fan_in", delta=None):
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
            raise TypeError("widths must be a sequence of positive ints, e.g. [d_in, 50, 1]")
        ws = []
        for i, w in enumerate(widths):
            if isinstance(w, bool) or not isinstance(w, int) and not (hasattr(w, "__index__")):
                raise TypeError(f"widths[{i}] must be an int, got {type(w).__name__}")
            w = int(w)
            if w < 1:
                raise ValueError(f"widths[{i}] must be >= 1, got {w}")
            ws.append(w)
        if len(ws) < 2:
            raise ValueError("widths needs at least an input and an output width")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        slope = float(slope)
        if not math.isfinite(slope) or (activation == "leaky_relu" and not 0.0 <= slope < 1.0):
            raise ValueError(f"leaky_relu slope must lie in [0, 1), got {slope}")
        L = len(ws) - 1
        # priors
        if isinstance(prior_prec, str):
            if prior_prec != "fan_in":
                raise ValueError(f"prior_prec must be 'fan_in', a float or a sequence, got {prior_prec!r}")
            lam_w = tuple(float(ws[l]) for l in range(L))
            lam_b = lam_w
        elif isinstance(prior_prec, Real) and not isinstance(prior_prec, bool):
            lam_w = lam_b = (_positive("prior_prec", prior_prec),) * L
        elif isinstance(prior_prec, Sequence):
            if len(prior_prec) != L:
                raise ValueError(f"prior_prec needs {L} per-layer values, got {len(prior_prec)}")
            lw, lb = [], []
            for i, p in enumerate(prior_prec):
                if isinstance(p, Sequence) and not isinstance(p, str):
                    if len(p) != 2:
                        raise ValueError(f"prior_prec[{i}] must be a float or a pair (lam_w, lam_b)")
                    lw.append(_positive(f"prior_prec[{i}][0]", p[0]))
                    lb.append(_positive(f"prior_prec[{i}][1]", p[1]))
                else:
                    lw.append(_positive(f"prior_prec[{i}]", p))
                    lb.append(lw[-1])
            lam_w, lam_b = tuple(lw), tuple(lb)
        else:
            raise TypeError(f"prior_prec must be 'fan_in', a number or a sequence, got {type(prior_prec).__name__}")
        # noise variances
        if delta is None:
            dz, dx, dy = (DEFAULT_DELTA,) * (L - 1), (DEFAULT_DELTA,) * (L - 1), DEFAULT_DELTA
        elif isinstance(delta, Mapping):
            bad = set(delta) - {"Z", "X", "y"}
            if bad:
                raise ValueError(f"delta mapping keys must be among 'Z', 'X', 'y'; got {sorted(bad)}")
            dz = _per_layer("delta['Z']", delta.get("Z", DEFAULT_DELTA), L - 1)
            dx = _per_layer("delta['X']", delta.get("X", DEFAULT_DELTA), L - 1)
            dy = _positive("delta['y']", delta.get("y", DEFAULT_DELTA))
        else:
            d = _positive("delta", delta)
            dz, dx, dy = (d,) * (L - 1), (d,) * (L - 1), d
        if likelihood in ("probit", "multinomial_probit"):
            dy = 1.0  # not identifiable jointly with the weight scale (MATH.md §B.1)
        if likelihood == "probit" and ws[-1] != 1:
            raise ValueError(f"likelihood='probit' needs one output unit, got widths[-1]={ws[-1]}")
        if likelihood == "multinomial_probit" and ws[-1] < 2:
            raise ValueError("likelihood='multinomial_probit' needs at least 2 output units (classes)")
        set_ = object.__setattr__
        set_(self, "widths", tuple(ws))
        set_(self, "activation", activation)
        set_(self, "slope", slope if activation == "leaky_relu" else (0.0 if activation == "relu" else 1.0))
        set_(self, "likelihood", likelihood)
        set_(self, "prior_prec", prior_prec if isinstance(prior_prec, (str, Real)) else tuple(
            tuple(p) if isinstance(p, Sequence) else p for p in prior_prec))
        set_(self, "delta", dict(delta) if isinstance(delta, Mapping) else delta)
        set_(self, "lam_w", lam_w)
        set_(self, "lam_b", lam_b)
        set_(self, "delta_z", dz)
        set_(self, "delta_x", dx)
        set_(self, "delta_y", dy)

    def __hash__(self):
        return hash((self.widths, self.activation, self.slope, self.likelihood, self.lam_w,
                     self.lam_b, self.delta_z, self.delta_x, self.delta_y))

    def __eq__(self, other):
        return isinstance(other, MLP) and hash(self) == hash(other) and self.widths == other.widths

    @property
    def delta_y_given(self) -> bool:
        """Whether the caller set ``Δ_y`` (see the class docstring)."""
        if self.likelihood in ("probit", "multinomial_probit"):
            return True
        return self.delta is not None and (not isinstance(self.delta, Mapping) or "y" in self.delta)

    @property
    def delta_hidden_given(self) -> bool:
        """Whether the caller set ``Δ_Z`` or ``Δ_X`` (see the class docstring)."""
        return self.delta is not None and (not isinstance(self.delta, Mapping) or "Z" in self.delta
                                           or "X" in self.delta)

    @property
    def num_layers(self) -> int:
        return len(self.widths) - 1

    @property
    def d_in(self) -> int:
        return self.widths[0]

    @property
    def d_out(self) -> int:
        return self.widths[-1]

    @property
    def num_params(self) -> int:
        return sum(self.widths[l + 1] * (self.widths[l] + 1) for l in range(self.num_layers))

    def weight_shapes(self) -> tuple[tuple[int, int], ...]:
        """``(d_out, d_in + 1)`` per layer (bias last)."""
        return tuple((self.widths[l + 1], self.widths[l] + 1) for l in range(self.num_layers))

    def prior_precision_vector(self, layer: int, xp, *, dtype, device):
        """Diagonal of ``Λ_l`` (length ``d_l + 1``, bias last)."""
        d = self.widths[layer]
        lam = xp.full((d + 1,), self.lam_w[layer], dtype=dtype, device=device)
        return xp.concat([lam[:d], xp.full((1,), self.lam_b[layer], dtype=dtype, device=device)])

    def replace(self, **changes) -> "MLP":
        """A copy with some constructor arguments changed."""
        args = dict(widths=self.widths, activation=self.activation,
                    slope=self.slope if self.activation == "leaky_relu" else 0.01,
                    likelihood=self.likelihood, prior_prec=self.prior_prec, delta=self.delta)
        args.update(changes)
        widths = args.pop("widths")
        activation = args.pop("activation")
        return MLP(widths, activation, **args)

    def __repr__(self):
        return (f"MLP(widths={list(self.widths)}, activation={self.activation!r}"
                + (f", slope={self.slope}" if self.activation == "leaky_relu" else "")
                + f", likelihood={self.likelihood!r}, lam_w={self.lam_w}, lam_b={self.lam_b}, "
                f"delta_z={self.delta_z}, delta_x={self.delta_x}, delta_y={self.delta_y})")


def _is_bool(v) -> bool:
    """A Python bool or a 0-d boolean array scalar (NumPy's ``np.True_``; no array import here)."""
    return isinstance(v, bool) or (getattr(v, "shape", None) == () and getattr(getattr(v, "dtype", None), "kind", "")
                                   == "b")


def resolve_learn_noise(net: MLP, learn_noise) -> bool:
    """The ``learn_noise`` a sampler uses for ``net`` (design note 60).

    ``None`` (the samplers' default): ``True`` for a Gaussian likelihood whose ``Δ_y`` the caller
    did not set (``net.delta_y_given`` false, e.g. ``MLP([d, 50, 1])``), else ``False`` — a noise
    the user did not choose is learned, one the user wrote down is kept. A bool passes through.

    Raises
    ------
    TypeError
        ``net`` not an :class:`MLP`; ``learn_noise`` neither ``None`` nor a bool.
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a blockbayes.MLP, got {type(net).__name__}")
    if learn_noise is None:
        return net.likelihood == "gaussian" and not net.delta_y_given
    if not _is_bool(learn_noise):
        raise TypeError(f"learn_noise must be True, False or None (the default rule), got {learn_noise!r}")
    return bool(learn_noise)


def activate(xp, Z, activation: str, slope: float = 0.0):
    """Elementwise ``f(Z)`` for ``"relu"``, ``"identity"`` or ``"leaky_relu"``."""
    if activation == "identity":
        return Z
    if activation == "relu":
        return xp.maximum(Z, xp.zeros((), dtype=Z.dtype, device=device_of(Z)))
    if activation == "leaky_relu":
        return xp.where(Z >= 0, Z, slope * Z)
    raise ValueError(f"unknown activation {activation!r}")


def augment(X):
    """``[X 1]``: append a column of ones (bias last). ``X`` has shape ``(..., n, d)``."""
    xp = namespace(X)
    ones = xp.ones(X.shape[:-1] + (1,), dtype=X.dtype, device=device_of(X))
    return xp.concat([X, ones], axis=-1)


def affine(H, W, xp=None):
    """``H W_w^T + b`` for ``W = [W_w b]`` of shape ``(..., d_out, d_in + 1)``, ``H`` of shape ``(..., n, d_in)``.

    ``xp``: the arrays' namespace when the caller already knows it (hot loops; default: looked up)."""
    if xp is None:
        xp = namespace(H, W)
    Wt = xp.matrix_transpose(W[..., :-1])
    if H.ndim == 2 and W.ndim == 3 and backend_name(xp) == "numpy":
        # shared inputs, per-chain weights: ONE BLAS GEMM for all chains, H (n, d) times the
        # chains' W^T side by side (d, C·k) (NumPy's broadcast matmul of a 2-D by a 3-D operand
        # takes a slow non-BLAS loop: 28 vs 3 ms at n = 1e4, 4 chains; a GEMM per chain costs a
        # call per chain, which dominates small problems with many chains)
        C, k = W.shape[0], W.shape[-2]
        if C == 1:
            # a recycled buffer when large (its pages are not faulted in afresh every sweep)
            out = recycle.empty((1, H.shape[0], k), xp.result_type(H.dtype, W.dtype))
            xp.matmul(H, Wt[0], out=out[0])
        else:
            Wm = xp.reshape(xp.permute_dims(Wt, (1, 0, 2)), (H.shape[-1], C * k))
            P = xp.reshape(xp.matmul(H, Wm), (H.shape[0], C, k))
            out = recycle.empty((C, H.shape[0], k), xp.result_type(H.dtype, W.dtype))
            out[...] = xp.permute_dims(P, (1, 0, 2))
    else:
        out = xp.matmul(H, Wt)
    # in place on the fresh product: no second (C, n, d_out) array; the bias column copied to a
    # contiguous row first (the add's inner loop then runs over contiguous memory, SIMD on NumPy:
    # 0.19 -> 0.11 ms at n = 1e4, d_out = 50; the same sums)
    out += xp.asarray(W[..., -1], copy=True)[..., None, :]
    return out


def forward(net: MLP, weights, X, *, return_hidden=False):
    """Noise-free forward pass ``F = f(...f(X W_1^T + b_1)...) W_L^T + b_L``.

    Parameters
    ----------
    net : MLP
    weights : sequence of arrays
        Per layer, shape ``(..., d_{l+1}, d_l + 1)`` (bias last); leading axes broadcast.
    X : array, shape (n, d_in) or (..., n, d_in)
    return_hidden : bool
        Also return the list of post-activations ``[X, H^2, ..., H^L]``.

    Returns
    -------
    F : array, shape (..., n, d_out)
    """
    hidden, pre = forward_layers(net, weights, X)
    return (pre[-1], list(hidden)) if return_hidden else pre[-1]


def forward_layers(net: MLP, weights, X, xp=None):
    """The one noise-free forward loop: every layer's input and pre-activation.

    ``A^l = affine(H^l, W^l)``, ``H^{l+1} = f(A^l)`` with ``H^0 = X``; used by :func:`forward`
    and by :func:`blockbayes.nn.forward` (which adds the backward pass). Arguments as
    :func:`forward`.

    Returns
    -------
    H : tuple of arrays
        ``H[l]`` the input of layer ``l`` (``H[0] = X``), shape ``(..., n, d_l)``.
    A : tuple of arrays
        ``A[l]`` the pre-activation output of layer ``l``, ``(..., n, d_{l+1})``; ``A[-1] = F``.

    ``xp`` (optional): the arrays' namespace, when the caller already knows it (a hot loop's saving of
    the look-up; the same arithmetic).
    """
    if xp is None:
        xp = namespace(X, *weights)
    H, Hs, As = X, [], []
    L = len(weights)
    for l, W in enumerate(weights):
        A = affine(H, W, xp)
        Hs.append(H)
        As.append(A)
        if l < L - 1:
            H = activate(xp, A, net.activation, net.slope)
    return tuple(Hs), tuple(As)


def chain_weights(net: MLP, weights, num_chains: int, like) -> tuple:
    """Per-layer weights as independent chain (or restart) copies: the chain weight layout.

    Parameters
    ----------
    net : MLP
    weights : sequence of ``L`` arrays
        Layer ``l`` of shape ``(d_{l+1}, d_l + 1)`` (shared by every chain) or
        ``(num_chains, d_{l+1}, d_l + 1)``; any array library (moved to ``like``'s).
    num_chains : int
    like : array
        Gives the namespace, device and dtype of the result.

    Returns
    -------
    tuple of ``L`` arrays of shape ``(num_chains, d_{l+1}, d_l + 1)``, fresh copies.

    Raises
    ------
    ValueError
        Wrong number of layers, a wrong shape, or a non-finite entry.
    """
    xp = namespace(like)
    C = num_chains
    shapes = net.weight_shapes()
    if isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence) or len(weights) != net.num_layers:
        raise ValueError(f"init weights must be a sequence of {net.num_layers} arrays (one per layer)")
    out = []
    for l, (W, shp) in enumerate(zip(weights, shapes)):
        W = move_like(W, like, dtype=like.dtype)
        if tuple(W.shape) == shp:
            W = xp.broadcast_to(W[None, ...], (C,) + shp)
        elif tuple(W.shape) != (C,) + shp:
            raise ValueError(f"init weights[{l}] must have shape {shp} or {(C,) + shp}, got {tuple(W.shape)}")
        if not bool(xp.all(xp.isfinite(W))):
            raise ValueError(f"init weights[{l}] contains NaN or infinite values")
        out.append(xp.asarray(W, copy=True))
    return tuple(out)
