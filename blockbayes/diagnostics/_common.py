"""Input handling and small Array-API helpers shared by the diagnostics (see the package docstring
for the conventions).
"""
from __future__ import annotations

import math

from .._backend import namespace
from .._backend import special as _special
from .._backend.ranks import average_ranks

def _as_float(xp, x):
    """``x`` as a real floating array (integers and booleans become ``float64``)."""
    if xp.isdtype(x.dtype, "real floating"):
        return x
    if xp.isdtype(x.dtype, "complex floating"):
        raise TypeError("complex input is not supported")
    return xp.astype(x, xp.float64)


def _check_finite(xp, x, what="input"):
    if not bool(xp.all(xp.isfinite(x))):
        if bool(xp.any(xp.isnan(x))):
            raise ValueError(f"{what} contains NaN")
        raise ValueError(f"{what} contains infinite values")


def _quantile_sorted(xp, s, q):
    """Quantile ``q`` (a Python float) of ``s`` sorted along axis 0, NumPy's "linear" method.

    Type 7 of Hyndman & Fan: virtual index ``h = (n − 1) q``, linear interpolation between the
    neighbours, evaluated exactly as :func:`numpy.quantile` does (``b − (b − a)(1 − γ)`` when
    ``γ ≥ 0.5``) so that results match NumPy bit for bit.
    """
    n = s.shape[0]
    h = n * q + (1.0 - q) - 1.0  # numpy's _compute_virtual_index with alpha = beta = 1
    if h >= n - 1:
        return s[n - 1, ...]
    if h < 0:
        return s[0, ...]
    lo = math.floor(h)
    g = h - lo
    a = s[lo, ...]
    b = s[lo + 1, ...]
    d = b - a
    if g >= 0.5:
        return b - d * (1.0 - g)
    return a + d * g


def _median_sorted(xp, s):
    """Median of ``s`` sorted along axis 0 (the mean of the two middle values for even n)."""
    n = s.shape[0]
    return (s[(n - 1) // 2, ...] + s[n // 2, ...]) / 2


def _resolution(xp, dtype) -> float:
    """NumPy's ``finfo(dtype).resolution`` (``10**-precision``; 1e-15 for float64, 1e-6 for
    float32), which the Array API's ``finfo`` lacks."""
    return 10.0 ** -math.floor(-math.log10(float(xp.finfo(dtype).eps)))


def _next_fast_len(n: int) -> int:
    """Smallest ``2^a 3^b 5^c >= n`` (an FFT-friendly length for every backend)."""
    m = max(int(n), 1)
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _prepare(draws, *, min_chains=1, what="draws"):
    """Validate ``(chains, draws, *param_shape)`` input; return ``xp, x (M, N, P), param_shape``."""
    xp = namespace(draws)
    if draws.ndim < 2:
        raise ValueError(
            f"{what} must have shape (chains, draws, *param_shape); got shape {tuple(draws.shape)}"
        )
    x = _as_float(xp, draws)
    m, n = int(x.shape[0]), int(x.shape[1])
    if m < min_chains:
        raise ValueError(f"{what}: this diagnostic needs at least {min_chains} chains, got {m}")
    if n < 4:
        raise ValueError(f"{what}: at least 4 draws per chain are needed, got {n}")
    param_shape = tuple(int(d) for d in x.shape[2:])
    p = math.prod(param_shape)
    if p == 0:
        raise ValueError(f"{what} has an empty parameter shape {param_shape}")
    _check_finite(xp, x, what)
    return xp, xp.reshape(x, (m, n, p)), param_shape


def _finish(xp, v, param_shape):
    return xp.reshape(v, param_shape)


def _split(xp, x):
    """(M, N, P) -> (2M, N//2, P): first and last halves of each chain."""
    half = x.shape[1] // 2
    return xp.concat([x[:, :half, ...], x[:, x.shape[1] - half:, ...]], axis=0)


def _z_scale(xp, x):
    """Rank-normalise (M, N, P) pooling the M*N draws of each parameter."""
    m, n, p = x.shape
    s = m * n
    r = average_ranks(xp, xp.reshape(x, (s, p)))
    u = (r - 0.375) / (s + 0.25)
    return xp.reshape(_special.ndtri(u), (m, n, p))


def _pooled_sorted(xp, x):
    m, n, p = x.shape
    return xp.sort(xp.reshape(x, (m * n, p)), axis=0)
