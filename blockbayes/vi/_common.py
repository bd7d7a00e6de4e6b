"""Small helpers shared by the VI family (no algorithm logic)."""
from __future__ import annotations

import math
from numbers import Real

from .._backend import device_of, namespace
from .._backend import linalg
from ..blocks import augmented_gram
from ..model import MLP

__all__ = ["NOISY_VI", "check_int", "check_pos", "eye", "diagonal",
           "chol_inverse", "logdet_spd", "prior_diag", "pad_cov", "expected_gram"]

LOG_2PI = math.log(2.0 * math.pi)


#: how :func:`blockbayes.inputs.prepare` names the noisy-network VI methods (Gaussian only)
NOISY_VI = ("the noisy-network VI family (CAVI, Rao-Blackwell, sampled, targets; for classification "
            "use blockbayes.vi.mean_field, ivon or vogn)")


def check_int(name, v, lo=1):
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    return v


def check_pos(name, v, *, allow_zero=False, upper=None):
    if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(float(v)) \
            or float(v) < 0 or (float(v) == 0 and not allow_zero) or (upper is not None and float(v) > upper):
        bound = f" and <= {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} finite number{bound}, got {v!r}")
    return float(v)


def eye(xp, d, like):
    return xp.eye(d, dtype=like.dtype, device=device_of(like))


def diagonal(xp, A):
    return xp.linalg.diagonal(A)


def chol_inverse(A):
    """``(R, A^{-1}, log|A|)`` for SPD ``A`` (batched), by Cholesky and triangular solves."""
    xp = namespace(A)
    R = linalg.cholesky(A)
    I = xp.broadcast_to(eye(xp, A.shape[-1], A), A.shape)
    Ainv = linalg.cho_solve(R, I)
    Ainv = 0.5 * (Ainv + xp.matrix_transpose(Ainv))
    logdet = 2.0 * xp.sum(xp.log(diagonal(xp, R)), axis=-1)
    return R, Ainv, logdet


def logdet_spd(A):
    xp = namespace(A)
    R = linalg.cholesky(A)
    return 2.0 * xp.sum(xp.log(diagonal(xp, R)), axis=-1)


def prior_diag(net: MLP, l: int, xp, like):
    """Diagonal of ``Λ_l`` (length ``d_l + 1``, bias last)."""
    return net.prior_precision_vector(l, xp, dtype=like.dtype, device=device_of(like))


def pad_cov(xp, Sig):
    """``Σ ⊕ 0``: ``(..., d, d)`` → ``(..., d+1, d+1)`` with a zero bias row/column (bias last)."""
    z_col = xp.zeros(Sig.shape[:-1] + (1,), dtype=Sig.dtype, device=device_of(Sig))
    top = xp.concat([Sig, z_col], axis=-1)
    z_row = xp.zeros(Sig.shape[:-2] + (1, Sig.shape[-1] + 1), dtype=Sig.dtype, device=device_of(Sig))
    return xp.concat([top, z_row], axis=-2)


def expected_gram(xp, Xi, Sig, n):
    """``E[G] = Ξ̃ᵀΞ̃ + n (Σ ⊕ 0)``; ``Sig=None`` means deterministic inputs."""
    G = augmented_gram(xp, Xi)
    if Sig is not None:
        G = G + n * pad_cov(xp, Sig)
    return G
