"""Special functions missing from the Array API: ``ndtr``, ``log_ndtr``, ``ndtri``, ``ndtri_exp``, ``erfcx``.

NumPy arrays use :mod:`scipy.special`, CuPy arrays :mod:`cupyx.scipy.special`; other namespaces
(array-api-strict) are evaluated on the host and returned in their namespace and device.
"""
from __future__ import annotations

from . import backend_name, device_of, namespace, to_numpy

__all__ = ["ndtr", "log_ndtr", "ndtri", "ndtri_exp", "erfcx", "log_expit", "gauss_hermite_normal"]


def _call(fname, x):
    xp = namespace(x)
    name = backend_name(xp)
    if name == "numpy":
        import scipy.special as ss

        return getattr(ss, fname)(x)
    if name == "cupy":
        import cupyx.scipy.special as cs

        if not hasattr(cs, fname):
            # ndtri_exp is missing from some cupyx versions: evaluate on the host
            import cupy
            import scipy.special as ss

            return cupy.asarray(getattr(ss, fname)(x.get())).astype(x.dtype, copy=False)
        return getattr(cs, fname)(x)
    import scipy.special as ss

    out = getattr(ss, fname)(to_numpy(x))
    return xp.asarray(out, dtype=x.dtype, device=device_of(x))


def ndtr(x):
    """Standard normal CDF Φ(x)."""
    return _call("ndtr", x)


def log_ndtr(x):
    """log Φ(x), accurate in both tails."""
    return _call("log_ndtr", x)


def ndtri(p):
    """Inverse standard normal CDF Φ⁻¹(p)."""
    return _call("ndtri", p)


def ndtri_exp(y):
    """Φ⁻¹(exp(y)) for y ≤ 0, accurate for very negative y."""
    return _call("ndtri_exp", y)


def erfcx(x):
    """Scaled complementary error function exp(x²) erfc(x)."""
    return _call("erfcx", x)


def log_expit(x):
    """log σ(x) = -log(1 + exp(-x)), stable."""
    return _call("log_expit", x)


def gauss_hermite_normal(nodes: int):
    """Nodes ``t_g`` and weights ``w_g`` (host floats) with ``∫ φ(t) g(t) dt ≈ Σ_g w_g g(t_g)``."""
    import math

    import numpy as np

    t, w = np.polynomial.hermite.hermgauss(nodes)
    return [float(v) * math.sqrt(2.0) for v in t], [float(v) / math.sqrt(math.pi) for v in w]
