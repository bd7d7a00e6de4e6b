"""Pure Array-API reference kernels: the oracle for :mod:`.cpu` and :mod:`.cuda`.

Written against the Python Array API only (namespace from :func:`blockbayes._backend.namespace`,
special functions from :mod:`blockbayes._backend.special`), so it runs unchanged on NumPy,
array-api-strict and CuPy arrays. It evaluates every branch on whole arrays and selects with
``where``; the masked-out lanes are fed safe arguments so that no NaN/inf (and no NumPy
``RuntimeWarning``) is ever produced for finite inputs.

All arithmetic is float64 whatever the input dtype; the result is cast to the output dtype and
clamped again to the truncation bound after the cast. The mathematics, the counter-based
uniforms and the standardised truncated-normal sampler are documented in
:mod:`blockbayes.kernels`; this module follows them literally, with the Newton iteration run a
fixed :data:`~._common.NEWTON_ITERS` times (the fused kernels may stop earlier, after
convergence to rounding).
"""
from __future__ import annotations

from .._backend import device_of, namespace
from .._backend import linalg
from .._backend import special as sp
from . import _common as C

__all__ = ["uniforms", "relu_preact", "truncated_normal", "relu_log_odds", "std_truncated_normal",
           "latent_pass", "gaussian_rows", "frozen_noise_target",
           "symmetric_operator"]

_INV_SQRT2 = 0.70710678118654752440
_SQRT_PI_2 = 1.2533141373155002512       # sqrt(pi/2)
_SQRT_2_PI = 0.79788456080286535588      # sqrt(2/pi)


# --------------------------------------------------------------------------------------------
# counter-based uniforms
# --------------------------------------------------------------------------------------------

def _u64(xp, value: int, device):
    """A 0-d uint64 array (so every namespace does the arithmetic in uint64, mod 2**64)."""
    return xp.asarray(value, dtype=xp.uint64, device=device)


def _mix64(xp, z, device):
    z = (z ^ (z >> 30)) * _u64(xp, C.MIX_M1, device)
    z = (z ^ (z >> 27)) * _u64(xp, C.MIX_M2, device)
    return z ^ (z >> 31)


def _uniform_from_counters(xp, k0: int, k1: int, c, device):
    """Uniforms in (0, 1), float64, for a uint64 counter array ``c`` (arithmetic mod 2**64)."""
    h = _mix64(xp, c * _u64(xp, C.GOLDEN, device) + _u64(xp, k0, device), device)
    b = _mix64(xp, h ^ _u64(xp, k1, device), device)
    return (xp.astype(b >> 11, xp.float64) + 0.5) * (2.0 ** -53)


def _counters(xp, n: int, device):
    return xp.arange(n, dtype=xp.uint64, device=device)


def uniforms(k0: int, k1: int, shape, like):
    """Reference uniforms ``u(c)`` for counters ``c = 0..N-1`` (C order), float64, in ``like``'s
    namespace and device, reshaped to ``shape``."""
    xp = namespace(like)
    shape = tuple(int(d) for d in shape)
    c = _counters(xp, C.prod(shape), device_of(like))
    return xp.reshape(_uniform_from_counters(xp, k0, k1, c, device_of(like)), shape)


# --------------------------------------------------------------------------------------------
# scalar building blocks, vectorised
# --------------------------------------------------------------------------------------------

def _G(xp, r):
    """``G(r) = r²/2 + log Φ(r) = log(erfcx(-r/√2)/2)``, stable for all real ``r``."""
    rn = xp.minimum(r, 0.0)
    rp = xp.maximum(r, 0.0)
    neg = xp.log(0.5 * sp.erfcx(-rn * _INV_SQRT2))
    pos = 0.5 * rp * rp + sp.log_ndtr(rp)
    return xp.where(r <= 0.0, neg, pos)


def _sigmoid(xp, ell):
    t = xp.exp(-xp.abs(ell))
    return xp.where(ell >= 0.0, 1.0 / (1.0 + t), t / (1.0 + t))


def std_truncated_normal(xp, alpha, u):
    """Standardised one-sided truncated normal by inversion.

    ``T ~ N(0, 1) | T ≥ α`` from one uniform ``u``; returns ``(T, e)`` with the excess
    ``e = T − α ≥ 0`` (computed directly in the tail, where ``T − α`` would cancel).
    ``alpha``, ``u`` float64 arrays of one shape.
    """
    # bulk, α < ALPHA0: T = -Φ⁻¹(u Φ(-α)), inverting whichever of p, 1-p is below 1/2
    ab = xp.minimum(alpha, C.ALPHA0)
    w = sp.ndtr(-xp.abs(ab))                     # Φ(-|α|)
    nonneg = ab >= 0.0
    c = xp.where(nonneg, w, 1.0 - w)             # Φ(-α), mass above the bound
    d = xp.where(nonneg, 1.0 - w, w)             # Φ(α)
    p = u * c
    q = d + (1.0 - u) * c                        # 1 - p without cancellation
    lo = p <= 0.5
    nd = sp.ndtri(xp.where(lo, p, q))
    t_bulk = xp.maximum(xp.where(lo, -nd, nd), ab)     # T = max(T, α)
    e_bulk = t_bulk - ab

    # tail, α ≥ ALPHA0: Newton on D(e) = log Φ(-α) - log Φ(-α-e) = -log u, in erfcx form
    at = xp.minimum(xp.maximum(alpha, C.ALPHA0), C.ALPHA_EXP)
    big = -xp.log(u)                             # Exp(1) variate E
    e0 = sp.erfcx(at * _INV_SQRT2)
    lam = _SQRT_2_PI / e0                        # inverse Mills ratio λ(α)
    g = 2.0 * big / at
    e = xp.minimum(g / (1.0 + xp.sqrt(1.0 + g / at)), big / lam)
    for _ in range(C.NEWTON_ITERS):
        ey = sp.erfcx((at + e) * _INV_SQRT2)
        h = xp.log(ey / e0) - e * (at + 0.5 * e) + big
        e = e + h * ey * _SQRT_PI_2
    e = xp.maximum(e, 0.0)
    alpha_hi = xp.maximum(alpha, C.ALPHA_EXP)
    e_tail = xp.where(alpha > C.ALPHA_EXP, big / alpha_hi, e)

    bulk = alpha < C.ALPHA0
    e_all = xp.where(bulk, e_bulk, e_tail)
    t_all = xp.where(bulk, t_bulk, xp.minimum(alpha, C.ALPHA_EXP) + e_tail)
    return t_all, e_all


def relu_log_odds(xp, a, x, consts: C.ReluConstants):
    """``ℓ = log(π₊/π₋)`` of the ReLU / leaky-ReLU conditional (float64 arrays ``a``, ``x``).

    ``ℓ = ½ log(S₋/S₊) + G(r₊) − G(r₋)`` with ``G(r) = log(erfcx(−r/√2)/2)``: the general
    piecewise-linear masses of MATH.md §A.3 with the common factor ``exp(−a²/2Δ_Z − x²/2Δ_X)``
    (the exponent at the kink) cancelled exactly. Returns ``(ℓ, r₊, r₋)``.
    """
    rp = a * consts.p1 + x * consts.p2
    rm = -(a * consts.n1 + x * consts.n2)
    ell = consts.half_log + _G(xp, rp) - _G(xp, rm)
    return ell, rp, rm


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------

def relu_preact(k0: int, k1: int, A, X, consts: C.ReluConstants, out_dtype):
    """Reference ReLU / leaky-ReLU pre-activation draw (arguments already validated)."""
    xp = namespace(A, X)
    dev = device_of(A)
    shape = A.shape
    n = C.prod(shape)
    a = xp.reshape(xp.astype(A, xp.float64), (n,))
    x = xp.reshape(xp.astype(X, xp.float64), (n,))
    return xp.reshape(_relu_counters(xp, k0, k1, a, x, _counters(xp, n, dev), consts, out_dtype),
                      shape)


def _chain_shaped(xp, v, nc, ndim):
    """A per-chain float64 array ``(C,)`` reshaped to ``(C, 1, …)`` (``ndim`` axes) to broadcast
    against ``(C, …)`` arrays; a Python float unchanged."""
    return v if C.is_scalar(v) else xp.reshape(v, (nc,) + (1,) * (ndim - 1))


def _chain_consts(xp, consts, nc, ndim):
    return C.ReluConstants(*(_chain_shaped(xp, v, nc, ndim) for v in consts))


def relu_preact_chains(k0: int, k1: int, A, X, consts: C.ReluConstants, out_dtype):
    """:func:`relu_preact` with per-chain constants (each a ``(C,)`` array for ``A.shape[0] = C``);
    element counters are the flat indices, as with shared constants."""
    xp = namespace(A, X)
    dev = device_of(A)
    shape = A.shape
    nc = shape[0]
    n = C.prod(shape)
    m = n // nc if nc else 0
    a = xp.reshape(xp.astype(A, xp.float64), (nc, m))
    x = xp.reshape(xp.astype(X, xp.float64), (nc, m))
    i = xp.reshape(_counters(xp, n, dev), (nc, m))
    return xp.reshape(_relu_counters(xp, k0, k1, a, x, i, _chain_consts(xp, consts, nc, 2), out_dtype),
                      shape)


def _relu_counters(xp, k0, k1, a, x, i, consts, out_dtype):
    """ReLU draws for float64 ``a, x`` with element counters ``i`` (uniforms ``2i``, ``2i+1``)."""
    dev = device_of(a)
    cnt = i * _u64(xp, 2, dev)
    u1 = _uniform_from_counters(xp, k0, k1, cnt, dev)
    u2 = _uniform_from_counters(xp, k0, k1, cnt + _u64(xp, 1, dev), dev)

    ell, rp, rm = relu_log_odds(xp, a, x, consts)
    pos = u1 < _sigmoid(xp, ell)
    alpha = xp.where(pos, -rp, -rm)
    _, e = std_truncated_normal(xp, alpha, u2)
    z = xp.where(pos, consts.sd_pos * e, -(consts.sd_neg * e))
    zc = xp.astype(z, out_dtype)
    # clamp to the branch's sign after the cast (where, not maximum: keeps the -0.0 of the
    # negative branch, so signbit(z) tells the branch in every implementation)
    zc = xp.where(pos, xp.where(zc < 0.0, 0.0, zc), xp.where(zc > 0.0, -0.0, zc))
    return zc


def _flat(xp, v, shape, n, dtype, dev):
    arr = xp.asarray(v, dtype=dtype, device=dev) if C.is_scalar(v) else xp.astype(v, dtype)
    return xp.reshape(xp.broadcast_to(arr, shape), (n,))


def truncated_normal(k0: int, k1: int, mean, sd, bound, upper, shape, out_dtype, xp, dev):
    """Reference one-sided truncated normal (arguments already validated and typed)."""
    n = C.prod(shape)
    m_o = _flat(xp, mean, shape, n, out_dtype, dev)
    s_o = _flat(xp, sd, shape, n, out_dtype, dev)
    b_o = _flat(xp, bound, shape, n, out_dtype, dev)
    if C.is_scalar(upper):
        up = xp.asarray(bool(upper), dtype=xp.bool, device=dev)
    else:
        up = upper
    up = xp.reshape(xp.broadcast_to(up, shape), (n,))
    m = xp.astype(m_o, xp.float64)
    s = xp.astype(s_o, xp.float64)
    b = xp.astype(b_o, xp.float64)

    u = _uniform_from_counters(xp, k0, k1, _counters(xp, n, dev), dev)
    ok = s > 0.0
    s_safe = xp.where(ok, s, 1.0)
    sign = 1.0 - 2.0 * xp.astype(up, xp.float64)        # -1 truncates from above
    alpha = sign * (b - m) / s_safe
    t, e = std_truncated_normal(xp, alpha, u)
    bulk = alpha < 0.0
    z = xp.where(bulk, m + sign * s_safe * xp.where(bulk, t, 0.0), b + sign * s_safe * e)
    degenerate = xp.where(up, xp.minimum(m, b), xp.maximum(m, b))   # sd ≤ 0: the sd → 0 limit
    z = xp.where(ok, z, degenerate)
    z = xp.where(up, xp.minimum(z, b), xp.maximum(z, b))
    zc = xp.astype(z, out_dtype)
    zc = xp.where(up, xp.minimum(zc, b_o), xp.maximum(zc, b_o))
    return xp.reshape(zc, shape)


def latent_pass(k0: int, k1: int, Z, A, T, W, dnext, dx, dz, consts: C.ReluConstants, act: int,
                slope: float, method: int, row_offset: int, out_dtype):
    """Reference fused latent pass (arguments validated): ``(X, Z, sums)``, see
    :func:`blockbayes.kernels.latent_pass`. Whole-array Array-API code: the uniforms of every
    element from its global counter, the post-activations by matrix products and triangular
    solves, the pre-activations by :func:`relu_preact`'s mathematics (or the identity's
    Gaussian)."""
    xp = namespace(Z, A, T, W)
    dev = device_of(Z)
    f64 = xp.float64
    nc, n, d = Z.shape
    k = T.shape[-1]
    z = xp.astype(Z, f64)
    a = xp.astype(A, f64)
    t = xp.astype(T, f64)
    Wd = xp.astype(W, f64)
    dn = xp.astype(dnext, f64)
    Wh = Wd[..., :d]
    b = Wd[..., d]
    # Δ_X, Δ_Z shared (floats) or per chain (arrays, as (C, 1, 1))
    dx = _chain_shaped(xp, dx, nc, 3)
    dz = _chain_shaped(xp, dz, nc, 3)
    rows = xp.arange(n, dtype=xp.uint64, device=dev) + _u64(xp, int(row_offset), dev)
    ch = xp.arange(nc, dtype=xp.uint64, device=dev)
    g = rows[None, :, None] * _u64(xp, nc, dev) + ch[:, None, None]          # (C, n, 1)
    i = g * _u64(xp, d, dev) + xp.arange(d, dtype=xp.uint64, device=dev)      # (C, n, d)
    xi = sp.ndtri(_uniform_from_counters(xp, k0, k1, i + _u64(xp, C.STREAM_X, dev), dev))
    fz = xp.where(z >= 0.0, z, slope * z)
    sx = dx ** 0.5
    WhT = xp.matrix_transpose(Wh)
    if method == 0:
        ie = g * _u64(xp, k, dev) + xp.arange(k, dtype=xp.uint64, device=dev)
        e = sp.ndtri(_uniform_from_counters(xp, k0, k1, ie + _u64(xp, C.STREAM_E, dev), dev))
        x0 = fz + sx * xi
        se = xp.sqrt(dn)[:, None, None]
        res = t - b[:, None, :] - xp.matmul(x0, WhT) - se * e
        eye = xp.eye(k, dtype=f64, device=dev)
        S = dx * xp.matmul(Wh, WhT) + dn[:, None, None] * eye
        L = linalg.cholesky(S)
        V = linalg.solve_triangular(L, xp.matrix_transpose(res), lower=True)
        Y = xp.matrix_transpose(linalg.solve_triangular(L, V, lower=True, trans=True))
        x = x0 + dx * xp.matmul(Y, Wh)
        r = dn[:, None, None] * Y + se * e
    else:
        ratio = dx / dn[:, None, None]
        eye = xp.eye(d, dtype=f64, device=dev)
        R = linalg.cholesky(eye + ratio * xp.matmul(WhT, Wh))
        tb = t - b[:, None, :]
        rhs = fz + ratio * xp.matmul(tb, Wh)
        V = linalg.solve_triangular(R, xp.matrix_transpose(rhs), lower=True)
        V = V + sx * xp.matrix_transpose(xi)
        x = xp.matrix_transpose(linalg.solve_triangular(R, V, lower=True, trans=True))
        r = tb - xp.matmul(x, WhT)
    Xo = xp.astype(x, out_dtype)
    xs = xp.astype(Xo, f64)
    if act == 0:
        Zo = xp.reshape(_relu_counters(xp, k0, k1, xp.reshape(a, (nc, -1)), xp.reshape(xs, (nc, -1)),
                                       xp.reshape(i, (nc, -1)), _chain_consts(xp, consts, nc, 2), out_dtype),
                        (nc, n, d))
    else:
        s = dx + dz
        u = _uniform_from_counters(xp, k0, k1, i * _u64(xp, 2, dev), dev)
        Zo = xp.astype((dx * a + dz * xs) / s + (dx * dz / s) ** 0.5 * sp.ndtri(u), out_dtype)
    zn = xp.astype(Zo, f64)
    rx = xs - xp.where(zn >= 0.0, zn, slope * zn)
    sums = xp.stack([xp.sum((z - a) ** 2, axis=(-2, -1)), xp.sum(r * r, axis=(-2, -1)),
                     xp.sum(rx * rx, axis=(-2, -1))], axis=-1)
    return Xo, Zo, sums


def gaussian_rows(k0: int, k1: int, B, delta, gram, prior_diag, chol, out_dtype):
    """Reference node-row sampler (arguments validated), see
    :func:`blockbayes.kernels.gaussian_rows`: float64 Cholesky and triangular solves."""
    xp = namespace(B)
    dev = device_of(B)
    f64 = xp.float64
    nc, d1, k = B.shape
    Bd = xp.astype(B, f64)
    dl = xp.astype(delta, f64)
    if chol is not None:
        R = xp.broadcast_to(xp.astype(xp.reshape(chol, (-1, d1, d1)), f64), (nc, d1, d1))
    else:
        eye = xp.eye(d1, dtype=f64, device=dev)
        M = xp.astype(gram, f64) + (dl[:, None] * xp.astype(prior_diag, f64))[:, :, None] * eye
        R = linalg.cholesky(M)
    cnt = xp.reshape(xp.arange(nc * d1 * k, dtype=xp.uint64, device=dev), (nc, d1, k))
    E = sp.ndtri(_uniform_from_counters(xp, k0, k1, cnt, dev))
    V = linalg.solve_triangular(R, Bd, lower=True) + xp.sqrt(dl)[:, None, None] * E
    Wt = linalg.solve_triangular(R, V, lower=True, trans=True)
    return xp.astype(xp.matrix_transpose(Wt), out_dtype)


# --------------------------------------------------------------------------------------------
# the joint non-centred HMC move's target and gradient (frozen noises)
# --------------------------------------------------------------------------------------------

def _frozen_act(xp, Z, act: int, slope: float):
    """``f(Z)``: the (leaky) ReLU ``max(z, s·z)`` (``act = 0``) or the identity (``act = 1``)."""
    return Z if act == 1 else xp.where(Z > 0, Z, slope * Z)


def _frozen_dact(xp, Z, act: int, slope: float):
    """``f'(Z)``: 1 above 0 and ``s`` below for the (leaky) ReLU; 1 for the identity."""
    if act == 1:
        return xp.ones_like(Z)
    return xp.where(Z > 0, xp.ones_like(Z), xp.full_like(Z, slope))


def frozen_noise_target(X, T, xi, eta, dy, widths, act: int, slope: float, compute="float64"):
    """Reference :func:`blockbayes.kernels.frozen_noise_target` (arguments validated): returns
    ``theta ↦ (sse, grad)`` of the data term in the ``compute`` dtype (``sse`` summed in float64),
    whole-array Array-API code."""
    return lambda theta: _frozen_noise_gradient(theta, X, T, xi, eta, dy, widths, act, slope, compute)


def _frozen_noise_gradient(theta, X, T, xi, eta, dy, widths, act: int, slope: float, compute="float64"):
    """``(sse, grad)`` of the data term at ``theta`` in the ``compute`` dtype (:func:`frozen_noise_target`;
    ``sse``: the float64 sum of the squared residuals).

    Forward: ``Z^{m+1} = X̃^m W^{m⊤} + ξ^m``, ``X^{m+1} = f(Z^{m+1}) + η^m``, ``out = X̃^{L−1} W^{L−1⊤}``;
    ``sse_c = ‖T_c − out_c‖²``; backward: ``δ^L = (T − out)/Δ_y``,
    ``∇_{W^m} = δ^{m+1⊤} X̃^m``, ``δ^m = (δ^{m+1} W^m_{:, :−1}) ⊙ f'(Z^m)``.
    """
    xp = namespace(theta, X, T, xi, eta)
    f64 = getattr(xp, compute)
    nc = theta.shape[0]
    L = len(widths) - 1
    th = xp.astype(theta, f64)
    H = xp.astype(X, f64)
    xs, es = xp.astype(xi, f64), xp.astype(eta, f64)
    Ws, s = [], 0
    for m in range(L):
        k, b = widths[m + 1], widths[m] + 1
        Ws.append(xp.reshape(th[:, s:s + k * b], (nc, k, b)))
        s += k * b
    ins, pres, ho = [H], [], 0
    for m in range(L - 1):
        k = widths[m + 1]
        Z = xp.matmul(H, xp.matrix_transpose(Ws[m][..., :-1])) + Ws[m][:, None, :, -1] + xs[..., ho:ho + k]
        H = _frozen_act(xp, Z, act, slope) + es[..., ho:ho + k]
        pres.append(Z)
        ins.append(H)
        ho += k
    out = xp.matmul(H, xp.matrix_transpose(Ws[-1][..., :-1])) + Ws[-1][:, None, :, -1]
    R = xp.astype(T, f64) - out
    R64 = R if compute == "float64" else xp.astype(R, xp.float64)
    sse = xp.sum(R64 * R64, axis=(-2, -1))
    delta = R / xp.reshape(xp.astype(dy, f64), (nc, 1, 1))
    grads = [None] * L
    for m in range(L - 1, -1, -1):
        Hm = ins[m]
        if Hm.ndim == 2:
            Hm = xp.broadcast_to(Hm, (nc,) + tuple(Hm.shape))
        gw = xp.matmul(xp.matrix_transpose(delta), Hm)
        gb = xp.sum(delta, axis=-2)
        grads[m] = xp.reshape(xp.concat([gw, gb[..., None]], axis=-1), (nc, -1))
        if m > 0:
            delta = xp.matmul(delta, Ws[m][..., :-1]) * _frozen_dact(xp, pres[m - 1], act, slope)
    return sse, xp.concat(grads, axis=-1)


def network_target(X, Y, widths, act: int, slope: float):
    """Reference :func:`blockbayes.kernels.network_target`: :func:`_frozen_noise_gradient` with zero
    noises and ``Δ_y = 1`` (float64)."""
    xp = namespace(X, Y)
    H = sum(widths[1:-1])

    def target(theta):
        M, dev = theta.shape[0], device_of(X)
        z = xp.zeros((M, X.shape[0], H), dtype=xp.float64, device=dev)
        return _frozen_noise_gradient(theta, X, Y[None, ...], z, z, xp.ones((M,), dtype=xp.float64, device=dev),
                                      widths, act, slope)

    return target


def symmetric_operator(A, store="float64"):
    """Reference :func:`blockbayes.kernels.symmetric_operator`: ``v ↦ A v`` by a dense batched
    matrix product (both triangles read), in ``A``'s namespace and dtype; ``store="float32"``:
    ``A`` held and multiplied in float32 (on a GPU, the fast path)."""
    xp = namespace(A)
    if store == "float64":
        return lambda v: xp.matmul(A, v[..., None])[..., 0]
    As = A if A.dtype == xp.float32 else xp.astype(A, xp.float32)
    return lambda v: xp.astype(xp.matmul(As, xp.astype(v, xp.float32)[..., None])[..., 0], v.dtype)
