"""Shared constants and host-side helpers of the fused kernels.

Everything here runs on the host with Python scalars: the per-call constants of the ReLU
conditional, argument checks, and the definitions that every implementation (reference, Numba,
CUDA) must agree on. The elementwise mathematics lives in :mod:`.reference` (Array API),
:mod:`.cpu` (Numba) and :mod:`._csrc` (C for CUDA and its host-compiled twin).
"""
from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np

from .._backend import dtype_name

# --- counter-based uniforms ---------------------------------------------------------------
MIX_M1 = 0xBF58476D1CE4E5B9
MIX_M2 = 0x94D049BB133111EB
GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1

# --- counter streams of the fused latent pass (disjoint from the ReLU counters 2i, 2i + 1) --
#: normals of the post-activation draw: counter STREAM_X + i, i the element's global counter
STREAM_X = 1 << 62
#: normals of the next layer's noise in the perturb-and-correct draw: STREAM_E + g·k + m
STREAM_E = (1 << 62) + (1 << 61)
#: post-activation draws by form: perturb-and-correct (next layer narrower) or Cholesky
METHODS = {"matheron": 0, "cholesky": 1}
#: activations of the fused latent pass (0: ReLU / leaky ReLU, 1: identity)
ACTIVATIONS = {"relu": 0, "leaky_relu": 0, "identity": 1}

# --- one-sided truncated normal -----------------------------------------------------------
#: switch from inversion of Φ to Newton's method in log space (standardised bound)
ALPHA0 = 5.0
#: above this standardised bound the excess is Exp(α) to double precision: e = -log(u)/α
ALPHA_EXP = 1e10
#: Newton iterations: the CPU/CUDA loops stop early (at most this many); the reference runs
#: exactly this many. Four always suffice from the starting point used (see cpu._std_tn).
NEWTON_ITERS = 5
#: stopping rule of the early-exit loops: stop after a step |Δe| ≤ NEWTON_STOP (e + 1/α); the
#: error after it is ≲ 1e-2 Δe² (quadratic convergence, measured), far below rounding
NEWTON_STOP = 1e-8


def mix64(z: int) -> int:
    """SplitMix64 finaliser on a Python int (mod 2**64); for documentation and tests."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * MIX_M1) & MASK64
    z = ((z ^ (z >> 27)) * MIX_M2) & MASK64
    return z ^ (z >> 31)


def bits(k0: int, k1: int, c: int) -> int:
    """``mix64(mix64(c * GOLDEN + k0) ^ k1)`` (all mod 2**64)."""
    return mix64(mix64((c * GOLDEN + k0) & MASK64) ^ k1)


def uniform_scalar(k0: int, k1: int, c: int) -> float:
    """The uniform with counter ``c``: ``((bits >> 11) + 0.5) * 2**-53``, in (0, 1)."""
    return ((bits(k0, k1, c) >> 11) + 0.5) * 2.0 ** -53


class ReluConstants(NamedTuple):
    """Per-call constants of the ReLU / leaky-ReLU pre-activation conditional.

    With ``S₊ = Δ_X + Δ_Z`` and ``S₋ = Δ_X + s² Δ_Z`` (piece slopes 1 and ``s``):

    * ``r₊ = m₊/σ₊ = a·p1 + x·p2`` (standardised distance of the positive piece's mean
      inside ``z ≥ 0``), ``σ₊ = sd_pos = sqrt(Δ_Z Δ_X / S₊)``;
    * ``r₋ = -m₋/σ₋ = -(a·n1 + x·n2)``, ``σ₋ = sd_neg = sqrt(Δ_Z Δ_X / S₋)``;
    * ``half_log = ½ log(S₋/S₊)`` (for ReLU ``½ log(Δ_X/S)`` of MATH.md (A.3a)).
    """

    p1: float
    p2: float
    n1: float
    n2: float
    sd_pos: float
    sd_neg: float
    half_log: float


def relu_constants(dz: float, dx: float, slope: float) -> ReluConstants:
    """Constants of :class:`ReluConstants` for ``Δ_Z = dz``, ``Δ_X = dx``, slope ``s`` (floats;
    the formulas of :func:`relu_constants_array`, evaluated with :mod:`math`)."""
    return relu_constants_array(math, dz, dx, slope)


def relu_constants_array(xp, dz, dx, slope: float) -> ReluConstants:
    """The constants of :class:`ReluConstants`, elementwise: ``dz``, ``dx`` float64 arrays of
    one shape in namespace ``xp`` (any device; a :class:`ReluConstants` of arrays), or floats
    with ``xp = math`` (:func:`relu_constants`)."""
    s_pos = dx + dz
    s_neg = dx + slope * slope * dz
    p1 = xp.sqrt(dx / (s_pos * dz))
    p2 = xp.sqrt(dz / (s_pos * dx))
    n1 = xp.sqrt(dx / (s_neg * dz))
    n2 = slope * xp.sqrt(dz / (s_neg * dx))
    sd_pos = xp.sqrt(dz * dx / s_pos)
    sd_neg = xp.sqrt(dz * dx / s_neg)
    ratio = dz / dx
    half_log = 0.5 * (xp.log1p(slope * slope * ratio) - xp.log1p(ratio))
    return ReluConstants(p1, p2, n1, n2, sd_pos, sd_neg, half_log)


# --- argument checks ------------------------------------------------------------------------

def check_key(key) -> tuple[int, int]:
    """The key's two words; ``TypeError`` unless ``key`` is a blockbayes key."""
    if not (isinstance(key, np.ndarray) and key.dtype == np.uint64 and key.shape == (2,)):
        raise TypeError("key must be a blockbayes key (numpy uint64 array of shape (2,)); "
                        "make one with blockbayes._backend.random.key(seed)")
    return int(key[0]), int(key[1])


def check_positive(name: str, value) -> float:
    """``value`` as a positive finite Python float."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a positive float, got {type(value).__name__}") from exc
    if not (math.isfinite(v) and v > 0.0):
        raise ValueError(f"{name} must be positive and finite, got {v!r}")
    return v


def check_chain_param(xp, name: str, value, nc: int, device):
    """A per-chain noise parameter: a positive float (returned as a Python float) or an array of
    shape ``(nc,)`` (returned as float64 in ``xp`` on ``device``). Arrays on the host (NumPy) are
    checked to be positive and finite; device arrays are not (that check would synchronise the
    device on every call; the samplers pass products of validated positive floats)."""
    if is_scalar(value):
        return check_positive(name, value)
    if tuple(value.shape) != (nc,):
        raise ValueError(f"{name} must be a float or an array of shape ({nc},), got shape {tuple(value.shape)}")
    arr = xp.astype(value, xp.float64)
    if isinstance(arr, np.ndarray) and not bool(np.all(np.isfinite(arr) & (arr > 0.0))):
        raise ValueError(f"{name} must be positive and finite, got {arr!r}")
    return arr


def check_slope(slope) -> float:
    try:
        s = float(slope)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"slope must be a float in [0, 1), got {type(slope).__name__}") from exc
    if not (0.0 <= s < 1.0):
        raise ValueError(f"slope must lie in [0, 1) (0 = ReLU), got {s!r}")
    return s


def float_name(dtype) -> str:
    """``"float32"``/``"float64"`` for a floating dtype of any namespace, else ``TypeError``."""
    name = dtype_name(dtype)
    if name not in ("float32", "float64"):
        raise TypeError(f"the kernels take float32 or float64 arrays, got dtype {name}")
    return name


def is_scalar(v) -> bool:
    return isinstance(v, (numbers.Real, np.generic)) and not isinstance(v, np.ndarray)


def broadcast_shape(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """NumPy broadcasting of ``shapes`` (``ValueError`` if incompatible)."""
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(ndim):
        size = 1
        for s in shapes:
            k = axis - (ndim - len(s))
            if k < 0:
                continue
            d = s[k]
            if d == 1:
                continue
            if size not in (1, d):
                raise ValueError(f"shapes {shapes} cannot be broadcast together")
            size = d
        out.append(size)
    return tuple(out)


def prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
