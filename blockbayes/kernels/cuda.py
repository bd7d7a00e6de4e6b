"""CuPy launchers of the fused kernels (GPU); imported lazily by :mod:`blockbayes.kernels`.

The CUDA C source is :func:`blockbayes.kernels._csrc.source`: the same translation unit that
the test-suite compiles as host C (its "CPU twin", checked against :mod:`.reference` to
rounding) and with ``nvcc``. Kernels are grid-stride loops over the flat C-order index ``i``
(which is also the counter of the uniforms), compiled once per device by NVRTC through
:class:`cupy.RawKernel` (CuPy caches the binary on disk). Each element is computed in float64
whatever the array dtype; the store casts to the output dtype and clamps to the truncation
bound again.

This module imports CuPy only inside the launchers, so importing it (for example to read the
source) needs no GPU.
"""
from __future__ import annotations

import functools

import numpy as np

from . import _common as C
from . import _csrc

__all__ = ["relu_preact", "truncated_normal", "latent_pass", "gaussian_rows", "kernel"]

_THREADS = 256
#: no contraction of a*b + c into FMAs beyond the explicit ``fma`` calls of the source, so the
#: device rounds like the CPU kernels (only exp/log/sqrt differ, by an ulp)
_OPTIONS = ("--std=c++14", "--fmad=false")


@functools.lru_cache(maxsize=None)
def kernel(name: str):
    """The :class:`cupy.RawKernel` ``name`` (one of :data:`._csrc.KERNEL_NAMES`)."""
    import cupy

    if name not in _csrc.KERNEL_NAMES:
        raise ValueError(f"unknown kernel {name!r}")
    return cupy.RawKernel(_csrc.source(), name, options=_OPTIONS)


def _suffix(dtype) -> str:
    return _csrc.DTYPE_SUFFIX[np.dtype(dtype).name][1]


def _grid(n: int) -> int:
    # grid-stride loop: enough blocks to fill any current GPU, never more than needed
    return max(1, min((n + _THREADS - 1) // _THREADS, 65535))


def relu_preact(k0: int, k1: int, A, X, consts: C.ReluConstants, out_dtype):
    """CUDA ReLU / leaky-ReLU pre-activation draw (CuPy arrays, validated arguments)."""
    import cupy

    dt = np.dtype(out_dtype)
    with A.device:
        a = cupy.ascontiguousarray(A, dtype=dt).reshape(-1)
        x = cupy.ascontiguousarray(X, dtype=dt).reshape(-1)
        n = a.size
        out = cupy.empty(n, dtype=dt)
        if n:
            kern = kernel(f"bb_relu_preact_{_suffix(dt)}")
            args = (a, x, out, np.int64(n), np.uint64(k0), np.uint64(k1),
                    *(np.float64(v) for v in consts))
            kern((_grid(n),), (_THREADS,), args)
        return out.reshape(A.shape)


def _param(cupy, v, shape, n, dt):
    """(flat device array, step): step 0 for a broadcast scalar, 1 for a full array."""
    arr = cupy.asarray(v, dtype=dt)
    if arr.size == 1:
        return arr.reshape(1), 0
    if arr.shape != tuple(shape):
        arr = cupy.broadcast_to(arr, shape)
    return cupy.ascontiguousarray(arr).reshape(n), 1


def truncated_normal(k0: int, k1: int, mean, sd, bound, upper, shape, out_dtype):
    """CUDA one-sided truncated normal (validated arguments; CuPy arrays or scalars)."""
    import cupy

    dt = np.dtype(out_dtype)
    n = C.prod(shape)
    dev = next(v.device for v in (mean, sd, bound, upper) if not C.is_scalar(v))
    with dev:
        m, ms = _param(cupy, mean, shape, n, dt)
        s, ss = _param(cupy, sd, shape, n, dt)
        b, bs = _param(cupy, bound, shape, n, dt)
        u, us = _param(cupy, upper, shape, n, np.bool_)
        out = cupy.empty(n, dtype=dt)
        if n:
            kern = kernel(f"bb_truncated_normal_{_suffix(dt)}")
            args = (m, np.int64(ms), s, np.int64(ss), b, np.int64(bs), u, np.int64(us),
                    out, np.int64(n), np.uint64(k0), np.uint64(k1))
            kern((_grid(n),), (_THREADS,), args)
        return out.reshape(shape)


def _chain_params(xp, nc, dx, dz, consts):
    """``(C, 9)`` float64 in ``xp``: per chain ``(Δ_X, Δ_Z, *consts)`` (floats shared, arrays
    ``(C,)`` per chain), the kernel's ``par``."""
    cols = [xp.broadcast_to(xp.asarray(v, dtype=xp.float64), (nc,)) for v in (dx, dz, *consts)]
    return xp.stack(cols, axis=-1)


def _latent_factors(W, dnext, dx, method):
    """Per-chain Cholesky factors of the latent pass (float64, the arrays' namespace):
    ``Δ_X ŴŴ^⊤ + Δ'I`` (method 0) or ``I + (Δ_X/Δ')Ŵ^⊤Ŵ`` (method 1); ``dx`` shared or ``(C,)``."""
    from .._backend import linalg, namespace

    xp = namespace(W)
    Wd = xp.astype(W, xp.float64)
    d = W.shape[-1] - 1
    Wh = Wd[..., :d]
    dn = xp.astype(dnext, xp.float64)
    dxc = dx if C.is_scalar(dx) else xp.reshape(xp.astype(dx, xp.float64), (-1, 1, 1))
    if method == 0:
        M = dxc * xp.matmul(Wh, xp.matrix_transpose(Wh)) + dn[:, None, None] * xp.eye(W.shape[-2], dtype=xp.float64)
    else:
        M = xp.eye(d, dtype=xp.float64) + (dxc / dn[:, None, None]) * xp.matmul(xp.matrix_transpose(Wh), Wh)
    return Wd, linalg.cholesky(M)


def latent_pass(k0: int, k1: int, Z, A, T, W, dnext, dx, dz, consts: C.ReluConstants, act: int,
                slope: float, method: int, row_offset: int, out_dtype):
    """CUDA fused latent pass (CuPy arrays, validated arguments): ``(X, Z, sums)``; ``dx``, ``dz``
    and the fields of ``consts`` floats (shared) or ``(C,)`` arrays (per chain); layers wider
    than :data:`._csrc.LATENT_MAX` go through the reference code on the GPU."""
    nc, n, d = Z.shape
    k = T.shape[-1]
    if d > _csrc.LATENT_MAX or k > _csrc.LATENT_MAX:
        from . import reference

        return reference.latent_pass(k0, k1, Z, A, T, W, dnext, dx, dz, consts, act, slope, method,
                                     row_offset, out_dtype)
    import cupy

    dt = np.dtype(out_dtype)
    with Z.device:
        Wd, F = _latent_factors(W, dnext, dx, method)
        t_chains = 0 if T.shape[0] == 1 else 1
        z = cupy.ascontiguousarray(Z, dtype=dt).reshape(-1)
        a = cupy.ascontiguousarray(A, dtype=dt).reshape(-1)
        t = cupy.ascontiguousarray(T, dtype=dt).reshape(-1)
        wd = cupy.ascontiguousarray(Wd).reshape(-1)
        dn = cupy.ascontiguousarray(cupy.asarray(dnext, dtype=np.float64)).reshape(-1)
        f = cupy.ascontiguousarray(F).reshape(-1)
        from .._backend import namespace

        par = cupy.ascontiguousarray(_chain_params(namespace(W), nc, dx, dz, consts)).reshape(-1)
        xo = cupy.empty(nc * n * d, dtype=dt)
        zo = cupy.empty(nc * n * d, dtype=dt)
        rs = cupy.empty(nc * n * 3, dtype=np.float64)
        rows = nc * n
        if rows and d:
            kern = kernel(f"bb_latent_pass_{_suffix(dt)}")
            args = (z, a, t, np.int64(t_chains), wd, dn, f, xo, zo, rs, np.int64(nc), np.int64(n),
                    np.int64(d), np.int64(k), np.int64(row_offset), np.int64(method), np.int64(act),
                    np.float64(slope), par, np.uint64(k0), np.uint64(k1))
            kern((_grid(rows),), (_THREADS,), args)
        sums = rs.reshape(nc, n, 3).sum(axis=1)
        return xo.reshape(nc, n, d), zo.reshape(nc, n, d), sums


def gaussian_rows(k0: int, k1: int, B, delta, gram, prior_diag, chol, out_dtype):
    """Node rows on the GPU: the reference code on CuPy arrays (cuSOLVER/cuBLAS do the work)."""
    from . import reference

    return reference.gaussian_rows(k0, k1, B, delta, gram, prior_diag, chol, out_dtype)
