"""Block algebra shared by the node-block families (Gibbs, block VI, block Laplace).

A *block* is every weight (and the bias) pointing into one node; a layer's blocks share the
layer's inputs ``H`` (``(…, n, d)``), so every family works with the same augmented products
``H̃ = [H 1]``: the Gram matrix ``H̃^⊤H̃``, the cross product ``H̃^⊤T`` with the layer's targets,
and the diagonal prior precision ``Λ`` with the bias last (MATH.md §A.1, §C, §D). Written
against the Array API: ``xp`` is the arrays' namespace (:func:`blockbayes._backend.namespace`).
"""
from __future__ import annotations

from ._backend import device_of

__all__ = ["eye", "augmented_gram", "augmented_cross", "diag_embed", "prior_diag", "onehot"]


def eye(xp, d, like):
    """``(d, d)`` identity in ``like``'s dtype and device."""
    return xp.eye(d, dtype=like.dtype, device=device_of(like))


def _column_sums(xp, H):
    """``1^⊤H`` over the rows, ``(..., n, d)`` → ``(..., d)``, as a matrix–vector product (a
    BLAS call on NumPy: 4–10× faster than the strided reduction ``sum(axis=-2)``)."""
    ones = xp.ones((1, H.shape[-2]), dtype=H.dtype, device=device_of(H))
    return xp.matmul(ones, H)[..., 0, :]


def augmented_gram(xp, H):
    """``[H 1]^T [H 1]`` without forming ``[H 1]``. ``H``: ``(..., n, d)`` → ``(..., d+1, d+1)``."""
    n = H.shape[-2]
    HtH = xp.matmul(xp.matrix_transpose(H), H)
    s = _column_sums(xp, H)  # (..., d)
    top = xp.concat([HtH, s[..., :, None]], axis=-1)
    nn = xp.full(s.shape[:-1] + (1, 1), float(n), dtype=H.dtype, device=device_of(H))
    bottom = xp.concat([s[..., None, :], nn], axis=-1)
    return xp.concat([top, bottom], axis=-2)


def augmented_cross(xp, H, T):
    """``[H 1]^T T``: ``H`` ``(..., n, d)``, ``T`` ``(..., n, k)`` → ``(..., d+1, k)``.

    Shared inputs (``H`` 2-D) much wider than the targets (``d ≥ 4k``) take the product as
    ``(T^⊤H)^⊤``: BLAS runs the skinny product faster that way round (784 × 6·10⁴ by 6·10⁴ × 12:
    58 vs 84 ms, one thread).
    """
    if H.ndim == 2 and T.ndim == 3 and H.shape[-1] >= 4 * T.shape[-1]:
        HtT = xp.matrix_transpose(xp.matmul(xp.matrix_transpose(T), H))
    else:
        HtT = xp.matmul(xp.matrix_transpose(H), T)
    s = _column_sums(xp, T)[..., None, :]
    if s.ndim < HtT.ndim:
        s = xp.broadcast_to(s, HtT.shape[:-2] + s.shape[-2:])
    elif HtT.ndim < s.ndim:
        HtT = xp.broadcast_to(HtT, s.shape[:-2] + HtT.shape[-2:])
    return xp.concat([HtT, s], axis=-2)


#: Rows per block of the float64 products on lower-precision inputs (memory: ``rows × width``
#: float64 values per chain).
F64_BLOCK_ROWS = 16384


def augmented_gram64(xp, H, *, block_rows: int = F64_BLOCK_ROWS):
    """:func:`augmented_gram` accumulated in float64: ``(..., n, d)`` → ``(..., d+1, d+1)`` float64.

    Float64 ``H``: ``augmented_gram(H)`` itself. Lower precision: the Grams of ``block_rows``-row
    blocks cast to float64, summed (memory bounded by the block, not by ``n``). Why: the row
    conditionals of the Gibbs sweep factor ``G + ΔΛ`` in float64 (:func:`blockbayes.kernels.gaussian_rows`),
    but a Gram *stored* in float32 already carries an error of ``~ε₃₂ |G_ij|`` per entry, which on
    collinear inputs, or on hidden units pinned by a small ``Δ`` above them, exceeds ``G``'s smallest
    eigenvalue (design note 52: Naval's output-layer Gram, eigenvalues 0.12 … 1.9·10⁶, was
    indefinite in float32).
    """
    return augmented_stats64(xp, H, None, block_rows=block_rows)[0]


def augmented_stats64(xp, H, T, *, block_rows: int = F64_BLOCK_ROWS):
    """``(G, B) = ([H 1]^⊤[H 1], [H 1]^⊤T)`` accumulated in float64 (``B`` is ``None`` without ``T``).

    ``H`` ``(..., n, d)``, ``T`` ``(..., n, k)``. Float64 inputs: :func:`augmented_gram` and
    :func:`augmented_cross` themselves. Lower precision: each ``block_rows``-row block of ``H`` (and
    ``T``) is cast to float64 once and both products are taken from it, summed over the blocks. The
    mean ``P⁻¹B/Δ`` of a row conditional amplifies an error in ``B`` by ``1/λ_min(G + ΔΛ)``, so on an
    ill-conditioned ``G`` the cross products need float64 as much as ``G`` does (a float32 ``B`` put a
    synthetic collinear pair 35 posterior sds off; tests/test_gibbs_precision.py).
    """
    f64 = xp.float64
    if H.dtype == f64 and (T is None or T.dtype == f64):
        return augmented_gram(xp, H), (None if T is None else augmented_cross(xp, H, T))
    G = B = None
    b = int(block_rows)
    for a in range(0, H.shape[-2], b):
        Hb = xp.astype(H[..., a:a + b, :], f64)
        g = augmented_gram(xp, Hb)
        G = g if G is None else G + g
        if T is not None:
            c = augmented_cross(xp, Hb, xp.astype(T[..., a:a + b, :], f64))
            B = c if B is None else B + c
    return G, B


def diag_embed(xp, v):
    """``(..., k)`` → ``(..., k, k)`` diagonal matrices."""
    k = v.shape[-1]
    eye = xp.eye(k, dtype=v.dtype, device=device_of(v))
    return v[..., :, None] * eye


def prior_diag(xp, lam_w, lam_b, d):
    """Diagonal of ``Λ`` per chain: ``(C,)`` weight and bias precisions → ``(C, d + 1)``."""
    C = lam_w.shape[0]
    w = xp.broadcast_to(lam_w[:, None], (C, d))
    return xp.concat([w, lam_b[:, None]], axis=-1)


def onehot(xp, labels, K, dtype):
    """``(…, n)`` int labels → ``(…, n, K)`` float one-hot."""
    cls = xp.arange(K, device=device_of(labels))
    return xp.astype(labels[..., None] == cls, dtype)
