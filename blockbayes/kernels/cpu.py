"""Fused Numba kernels (CPU): parallel loops over the elements, no array temporaries.

Imported lazily by :mod:`blockbayes.kernels` (the first call compiles, later processes load the
on-disk cache). Each element is computed in float64 whatever the array dtype and cast to the
output dtype at the store; the cast is monotone and keeps the sign, and the truncation bound is
representable in the output dtype, so the results respect the bound in float32 too (the scalar
paths clamp once more after the cast as a safeguard).

Special functions are implemented here, as inlined polynomial code (Numba has no ``ndtri`` or
``erfcx``, its ``math.erfc`` is a slow series, and calls to libm ``exp``/``log`` keep loops
from vectorising):

* ``_erfcx``: W. J. Cody's rational Chebyshev approximations (CALERF, Math. Comp. 1969) for
  ``y ≥ 0``: ``exp(y²)(1 − erf(y))`` with Cody's ``erf`` rational for ``y ≤ 0.46875``, the
  ``erfcx`` rational on ``(0.46875, 4]`` and the asymptotic rational in ``1/y²`` above 4;
  ``_erfc_pos = erfcx(y)·exp(−y²)`` with ``y²`` split exactly by an FMA.
* ``_ndtri``: Wichura's AS241 (PPND16).
* ``_exp``, ``_log``: Cody–Waite reduction plus Taylor polynomials (fdlibm's arrangement for
  ``log``), within 1 ulp of the correctly rounded value.

All rationals are evaluated by Estrin's scheme with fused multiply-adds; the tests check every
function against mpmath (relative error ≲ 5e-16).

The ReLU kernel works in blocks of ``_CHUNK`` (2048) elements organised as short branch-free
passes (see :func:`_relu_range`): the common case of a Gibbs sweep — branch decided by a bound of ``ℓ``,
plain inversion of ``u₂`` — is vectorised, and the elements that need ``ℓ`` go through
vectorised passes of their own. Shortcuts that leave every result unchanged: the branch is
decided without evaluating ``ℓ``, ``σ(ℓ)`` or ``u₁`` whenever a bound puts ``|ℓ| ≥ 38``
(``σ(ℓ)`` then rounds to 0 or 1 beyond every possible ``u₁``); the other elements' branch is
taken from a bracket of ``ℓ`` (no special function) wherever ``u₁`` lies outside ``σ`` of the
bracket with a margin (:func:`_rr_bounds`; in blocks where pass 1 decides nothing, as at
Δ ~ 1, a sharper bracket from a table of ``log Φ``: :func:`_rr_bounds_open`); and ``Φ(α)``
is not evaluated where it is below half
an ulp of everything it is added to. Every element gets exactly the
arithmetic of the scalar path :func:`_relu_elem` (the tests check this bit for bit).

The mathematics is that of :mod:`.reference` and of the C source of :mod:`.cuda` (which calls
the platform's ``exp``/``log``, so the two agree to an ulp, not bit for bit); see
:mod:`blockbayes.kernels` for the formulas and the uniforms.
"""
from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import cgutils, types
from numba.extending import intrinsic

from .._backend import recycle
from . import _common as C
from ._vec import LANES, transpose4, transpose4_x0, vload, vsplat, vstore

__all__ = ["relu_preact", "truncated_normal", "multinomial_utilities", "latent_pass", "gaussian_rows", "frozen_noise_target", "symmetric_operator",
           "set_num_threads",
           "get_num_threads"]

_JIT = dict(cache=True, nogil=True, error_model="numpy")   # IEEE division: no zero checks

_M1 = np.uint64(C.MIX_M1)
_M2 = np.uint64(C.MIX_M2)
_GOLD = np.uint64(C.GOLDEN)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_ONE = np.uint64(1)
_TWO = np.uint64(2)
_TWO_M53 = 2.0 ** -53

_ALPHA0 = C.ALPHA0
_ALPHA_EXP = C.ALPHA_EXP
_NEWTON_ITERS = C.NEWTON_ITERS
_NEWTON_STOP = C.NEWTON_STOP

_INV_SQRT2 = 0.70710678118654752440
_SQRT_PI_2 = 1.2533141373155002512      # sqrt(pi/2)
_SQRT_2_PI = 0.79788456080286535588     # sqrt(2/pi)
_INV_SQRT_PI = 5.6418958354775628695e-1  # 1/sqrt(pi)


def _fma_intrinsic(nb_type, ir_type, name):
    """An intrinsic ``(a, b, c) -> a*b + c`` with one rounding (LLVM ``llvm.fma.<name>``)."""
    @intrinsic
    def fma(typingctx, a, b, c):
        def codegen(context, builder, signature, args):
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir_type, [ir_type] * 3), f"llvm.fma.{name}")
            return builder.call(fn, args)

        return nb_type(nb_type, nb_type, nb_type), codegen

    return fma


def _bitcast_intrinsic(nb_from, nb_to, ir_to):
    """An intrinsic reinterpreting the bits of a ``nb_from`` as a ``nb_to`` of the same width."""
    @intrinsic
    def bitcast(typingctx, x):
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir_to)

        return nb_to(nb_from), codegen

    return bitcast


#: Fused multiply-add in float64; the bits of an int64 as a float64 and back.
_fma = _fma_intrinsic(types.float64, ir.DoubleType(), "f64")
_i2f = _bitcast_intrinsic(types.int64, types.float64, ir.DoubleType())
_f2i = _bitcast_intrinsic(types.float64, types.int64, ir.IntType(64))


@intrinsic
def _cttz(typingctx, x):
    """Index of the lowest set bit of a non-zero uint64 (LLVM ``llvm.cttz.i64``: one
    ``tzcnt``)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = cgutils.get_or_insert_function(builder.module,
                                            ir.FunctionType(i64, [i64, ir.IntType(1)]),
                                            "llvm.cttz.i64")
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])

    return sig, codegen


#: _MASK_NOTE: a compaction ``idx[n] = j; n += flag(j)`` over every element is a serial chain
#: through ``n`` (a store and an add per element, ~0.6 ns, whatever the density). The masked
#: form builds the flags of 64 elements as the bits of one ``uint64`` (an OR of shifted flags: a
#: vectorised reduction) and appends the set bits' positions, lowest first (``tzcnt``, clear
#: the lowest bit): the same indices in the same (ascending) order, ~0.2 ns per element plus
#: ~1 ns per index appended, so the cheaper form wherever under ~half the elements are flagged.


@njit(inline="always", **_JIT)
def _push_bits(mask, base, idx, n):
    """Append ``base + b`` for every set bit ``b`` of ``mask`` (uint64), lowest first, to
    ``idx[n:]``; returns the new count (see _MASK_NOTE)."""
    while mask != np.uint64(0):
        idx[n] = base + _cttz(mask)
        n += 1
        mask &= mask - np.uint64(1)
    return n


# --------------------------------------------------------------------------------------------
# exp and log without libm calls (so that loops containing them vectorise); ≤ 1 ulp from the
# correctly rounded value, like glibc (checked against mpmath in the tests)
# --------------------------------------------------------------------------------------------

_LN2_HI = 6.93147180369123816490e-01     # 32 significant bits: k·LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_LOG2E = 1.4426950408889634074


@njit(inline="always", **_JIT)
def _exp(x):
    """exp(x) for finite x (0 below −745.2, inf above 709.8, subnormals exact to 1 ulp).

    x = k·ln 2 + r with |r| ≤ ln2/2 (Cody–Waite), e^r − 1 by its Taylor polynomial to r¹³
    (Estrin, truncation < 5e-18), 2^k applied in two halves so subnormal results are right.
    """
    x = min(max(x, -746.0), 710.0)
    kf = math.floor(_fma(x, _LOG2E, 0.5))
    r = _fma(-kf, _LN2_LO, _fma(-kf, _LN2_HI, x))
    r2 = r * r
    r4 = r2 * r2
    m0 = _fma(_fma(1.0 / 120.0, r, 1.0 / 24.0), r2, _fma(1.0 / 6.0, r, 0.5))
    m1 = _fma(_fma(1.0 / 362880.0, r, 1.0 / 40320.0), r2, _fma(1.0 / 5040.0, r, 1.0 / 720.0))
    m2 = _fma(_fma(1.0 / 6227020800.0, r, 1.0 / 479001600.0), r2,
              _fma(1.0 / 39916800.0, r, 1.0 / 3628800.0))
    p = _fma(m2, r4 * r4, _fma(m1, r4, m0))
    q = _fma(r2, p, r)                     # e^r − 1
    k = np.int64(kf)
    k1 = k >> 1
    s1 = _i2f((k1 + 1023) << 52)
    s2 = _i2f((k - k1 + 1023) << 52)
    return ((1.0 + q) * s1) * s2


@njit(inline="always", **_JIT)
def _log(x):
    """log(x) for finite x > 0 (subnormals included).

    x = 2^e·m with m ∈ [√½, √2), f = m − 1, s = f/(2 + f): log m = f − s(f − R) with
    R = Σ 2z^k/(2k+1), z = s² ≤ 0.0295 (fdlibm's arrangement, Taylor coefficients to z¹⁰,
    truncation < 2e-18).
    """
    sub = x < 2.2250738585072014e-308
    xs = x * 18014398509481984.0 if sub else x          # 2**54
    bits = _f2i(xs)
    e = ((bits >> 52) & 0x7FF) - (1077 if sub else 1023)
    m = _i2f((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > 1.4142135623730951
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    z2 = z * z
    z4 = z2 * z2
    l0 = _fma(2.0 / 5.0, z, 2.0 / 3.0)
    l1 = _fma(2.0 / 9.0, z, 2.0 / 7.0)
    l2 = _fma(2.0 / 13.0, z, 2.0 / 11.0)
    l3 = _fma(2.0 / 17.0, z, 2.0 / 15.0)
    l4 = _fma(2.0 / 21.0, z, 2.0 / 19.0)
    big_r = z * _fma(l4, z4 * z4, _fma(_fma(l3, z2, l2), z4, _fma(l1, z2, l0)))
    lf = f - s * (f - big_r)
    ef = np.float64(e)
    return _fma(ef, _LN2_HI, lf + ef * _LN2_LO)


# --------------------------------------------------------------------------------------------
# uniforms
# --------------------------------------------------------------------------------------------

@njit(**_JIT)
def _mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(inline='always', **_JIT)
def _uniform(k0, k1, c):
    b = _mix64(_mix64(c * _GOLD + k0) ^ k1)
    return (np.float64(b >> _S11) + 0.5) * _TWO_M53


# --------------------------------------------------------------------------------------------
# special functions: rationals evaluated by Estrin's scheme with fused multiply-adds (short
# dependency chains: the loop is latency bound)
# --------------------------------------------------------------------------------------------

@njit(**_JIT)
def _poly4(y, a0, a1, a2, a3, a4):
    y2 = y * y
    return _fma(_fma(a4, y2, _fma(a3, y, a2)), y2, _fma(a1, y, a0))


@njit(**_JIT)
def _poly5(y, a0, a1, a2, a3, a4, a5):
    y2 = y * y
    return _fma(_fma(a5, y, a4), y2 * y2, _fma(_fma(a3, y, a2), y2, _fma(a1, y, a0)))


@njit(**_JIT)
def _poly7(y, a0, a1, a2, a3, a4, a5, a6, a7):
    y2 = y * y
    lo = _fma(_fma(a3, y, a2), y2, _fma(a1, y, a0))
    hi = _fma(_fma(a7, y, a6), y2, _fma(a5, y, a4))
    return _fma(hi, y2 * y2, lo)


@njit(**_JIT)
def _poly8(y, a0, a1, a2, a3, a4, a5, a6, a7, a8):
    y2 = y * y
    y4 = y2 * y2
    lo = _fma(_fma(a3, y, a2), y2, _fma(a1, y, a0))
    hi = _fma(_fma(a7, y, a6), y2, _fma(a5, y, a4))
    return _fma(a8, y4 * y4, _fma(hi, y4, lo))


@njit(inline='always', **_JIT)
def _erf_small(y):
    """erf(y) for 0 ≤ y ≤ 0.46875 (Cody)."""
    z = y * y
    num = _poly4(z, 3.20937758913846947e3, 3.77485237685302021e2, 1.13864154151050156e2,
                 3.16112374387056560e0, 1.85777706184603153e-1)
    den = _poly4(z, 2.84423683343917062e3, 1.28261652607737228e3, 2.44024637934444173e2,
                 2.36012909523441209e1, 1.0)
    return y * num / den


@njit(**_JIT)
def _erfcx(y):
    """exp(y²) erfc(y) for y ≥ 0 (Cody's CALERF, jint = 2)."""
    if y <= 0.46875:
        return _exp(y * y) * (1.0 - _erf_small(y))
    if y <= 4.0:
        return _erfcx_mid(y)
    return _erfcx_big(y)


@njit(inline='always', **_JIT)
def _erfcx_mid(y):
    """erfcx(y) for 0.46875 < y ≤ 4 (Cody)."""
    num = _poly8(y, 1.23033935479799725e3, 2.05107837782607147e3, 1.71204761263407058e3,
                 8.81952221241769090e2, 2.98635138197400131e2, 6.61191906371416295e1,
                 8.88314979438837594e0, 5.64188496988670089e-1, 2.15311535474403846e-8)
    den = _poly8(y, 1.23033935480374942e3, 3.43936767414372164e3, 4.36261909014324716e3,
                 3.29079923573345963e3, 1.62138957456669019e3, 5.37181101862009858e2,
                 1.17693950891312499e2, 1.57449261107098347e1, 1.0)
    return num / den


@njit(inline='always', **_JIT)
def _erfcx_big(y):
    """erfcx(y) for y > 4 (Cody's asymptotic rational in 1/y²)."""
    v = 1.0 / y
    z = v * v
    num = _poly5(z, 6.58749161529837803e-4, 1.60837851487422766e-2, 1.25781726111229246e-1,
                 3.60344899949804439e-1, 3.05326634961232344e-1, 1.63153871373020978e-2)
    den = _poly5(z, 2.33520497626869185e-3, 6.05183413124413191e-2, 5.27905102951428412e-1,
                 1.87295284992346047e0, 2.56852019228982242e0, 1.0)
    return (_INV_SQRT_PI - z * num / den) * v


@njit(**_JIT)
def _exp_neg_sq(y):
    """exp(-y²) accurate to a few ulp: y² = hi + lo exactly (fma), exp(-hi)(1 - lo)."""
    hi = y * y
    lo = _fma(y, y, -hi)
    return _exp(-hi) * (1.0 - lo)


@njit(**_JIT)
def _erfc_given(y, rx):
    """erfc(y) for y ≥ 0, given rx = erfcx(y) (ignored for y ≤ 0.46875)."""
    if y <= 0.46875:
        return 1.0 - _erf_small(y)
    if y >= 27.3:          # exp(-y²) underflows
        return 0.0
    return rx * _exp_neg_sq(y)


@njit(**_JIT)
def _erfc_pos(y):
    """erfc(y) for y ≥ 0 (Numba's math.erfc is a slow series / continued fraction)."""
    if y <= 0.46875:
        return 1.0 - _erf_small(y)
    if y >= 27.3:
        return 0.0
    return _erfcx(y) * _exp_neg_sq(y)


@njit(inline='always', **_JIT)
def _ndtri_central(q):
    """Φ⁻¹(q + ½) for |q| ≤ 0.425 (AS241's central rational)."""
    r = 0.180625 - q * q
    num = _poly7(r, 3.3871328727963666080e+0, 1.3314166789178437745e+2,
                 1.9715909503065514427e+3, 1.3731693765509461125e+4,
                 4.5921953931549871457e+4, 6.7265770927008700853e+4,
                 3.3430575583588128105e+4, 2.5090809287301226727e+3)
    den = _poly7(r, 1.0, 4.2313330701600911252e+1, 6.8718700749205790830e+2,
                 5.3941960214247511077e+3, 2.1213794301586595867e+4,
                 3.9307895800092710610e+4, 2.8729085735721942674e+4,
                 5.2264952788528545610e+3)
    return q * num / den


@njit(inline="always", **_JIT)
def _ndtri_tail(p):
    """Φ⁻¹(p) for 0 < p < 0.075 or 0.925 < p < 1 (AS241's two tail rationals, branch-free)."""
    q = p - 0.5
    r = math.sqrt(-_log(p if q <= 0.0 else 1.0 - p))
    r1 = r - 1.6
    num1 = _poly7(r1, 1.42343711074968357734e+0, 4.63033784615654529590e+0,
                  5.76949722146069140550e+0, 3.64784832476320460504e+0,
                  1.27045825245236838258e+0, 2.41780725177450611770e-1,
                  2.27238449892691845833e-2, 7.74545014278341407640e-4)
    den1 = _poly7(r1, 1.0, 2.05319162663775882187e+0, 1.67638483018380384940e+0,
                  6.89767334985100004550e-1, 1.48103976427480074590e-1,
                  1.51986665636164571966e-2, 5.47593808499534494600e-4,
                  1.05075007164441684324e-9)
    r2 = r - 5.0
    num2 = _poly7(r2, 6.65790464350110377720e+0, 5.46378491116411436990e+0,
                  1.78482653991729133580e+0, 2.96560571828504891230e-1,
                  2.65321895265761230930e-2, 1.24266094738807843860e-3,
                  2.71155556874348757815e-5, 2.01033439929228813265e-7)
    den2 = _poly7(r2, 1.0, 5.99832206555887937690e-1, 1.36929880922735805310e-1,
                  1.48753612908506148525e-2, 7.86869131145613259100e-4,
                  1.84631831751005468180e-5, 1.42151175831644588870e-7,
                  2.04426310338993978564e-15)
    x = num1 / den1 if r <= 5.0 else num2 / den2
    return -x if q < 0.0 else x


#: min(p, 1 − p) ≥ this puts AS241's r = √(−log min(p, 1 − p)) ≤ 4.97, inside its first tail
#: range (r ≤ 5) with a margin far beyond rounding
_TAIL_NEAR = 2e-11


@njit(inline="always", **_JIT)
def _ndtri_tail_near(p):
    """:func:`_ndtri_tail` for ``min(p, 1 − p) ≥ _TAIL_NEAR``: the first tail rational only (the
    same arithmetic as :func:`_ndtri_tail` there, without evaluating the second)."""
    q = p - 0.5
    r = math.sqrt(-_log(p if q <= 0.0 else 1.0 - p))
    r1 = r - 1.6
    num1 = _poly7(r1, 1.42343711074968357734e+0, 4.63033784615654529590e+0,
                  5.76949722146069140550e+0, 3.64784832476320460504e+0,
                  1.27045825245236838258e+0, 2.41780725177450611770e-1,
                  2.27238449892691845833e-2, 7.74545014278341407640e-4)
    den1 = _poly7(r1, 1.0, 2.05319162663775882187e+0, 1.67638483018380384940e+0,
                  6.89767334985100004550e-1, 1.48103976427480074590e-1,
                  1.51986665636164571966e-2, 5.47593808499534494600e-4,
                  1.05075007164441684324e-9)
    x = num1 / den1
    return -x if q < 0.0 else x


@njit(**_JIT)
def _ndtri_tails(t, n):
    """``t[i] ← _ndtri_tail(t[i])`` for ``i < n`` (gathered tail arguments): the first tail
    rational alone (:func:`_ndtri_tail_near`) unless some ``min(p, 1 − p) < _TAIL_NEAR``
    (probability ~4e-11 per element), then the full function for all."""
    far = False
    for i in range(n):
        p = t[i]
        far |= (p if p - 0.5 <= 0.0 else 1.0 - p) < _TAIL_NEAR
    if far:
        for i in range(n):
            t[i] = _ndtri_tail(t[i])
    else:
        for i in range(n):
            t[i] = _ndtri_tail_near(t[i])


@njit(inline='always', **_JIT)
def _ndtri_gathered(src, dst, idx, tb, cnt):
    """``dst[j] = Φ⁻¹(src[j])`` for ``j < cnt`` (AS241): the elements outside the central region
    (``|p − ½| > 0.425``, ~15 %) are gathered into ``tb`` through ``idx`` and go through the tail
    rational contiguously (:func:`_ndtri_tails`), the central rational runs on every element
    (vectorised), and the tails are scattered back. ``dst`` may be ``src``; ``idx`` (best
    ``uint64``, see _NONNEG_NOTE) and ``tb`` are scratch of ``cnt``."""
    nt = np.int64(0)            # not a literal 0: one specialisation of _ndtri_tails
    for b0 in range(0, cnt, 64):        # the compaction by 64-bit masks (see _MASK_NOTE)
        nb = min(64, cnt - b0)
        blk = src[b0:b0 + nb]           # a view indexed from 0 (see _NONNEG_NOTE)
        mask = np.uint64(0)
        for j in range(nb):
            mask |= np.uint64(abs(blk[j] - 0.5) > 0.425) << np.uint64(j)
        nt = _push_bits(mask, np.uint64(b0), idx, nt)
    for jj in range(nt):
        tb[jj] = src[idx[jj]]
    _ndtri_tails(tb, nt)
    for j in range(cnt):
        dst[j] = _ndtri_central(src[j] - 0.5)
    for jj in range(nt):
        dst[idx[jj]] = tb[jj]


@njit(inline="always", **_JIT)
def _ndtri(p):
    """Φ⁻¹(p) for 0 < p < 1 (Wichura's AS241, PPND16); branch-free, so loops vectorise."""
    q = p - 0.5
    central = _ndtri_central(q)
    tail = _ndtri_tail(p)
    return central if abs(q) <= 0.425 else tail


# --------------------------------------------------------------------------------------------
# the ReLU branch choice and the standardised truncated normal
# --------------------------------------------------------------------------------------------

#: |ℓ| ≥ this decides the branch for every possible u₁ ∈ [2⁻⁵⁴, 1 − 2⁻⁵⁴] exactly as the full
#: comparison u₁ < σ(ℓ) does: σ(38) rounds to 1 and σ(−38) = 3.1e-17 < 2⁻⁵⁴ = 5.6e-17
_ELL_SURE = 38.0
#: r ≥ this: Φ(r) = 1 − erfc(r/√2)/2 rounds to 1 (erfc(r/√2) < 2.2e-16, half an ulp of 2)
_R_ONE = 8.5


@njit(**_JIT)
def _piece(r):
    """(q, R, hint) for one piece with standardised distance r (mean inside iff r > 0).

    ``G(r) = r²/2 + log Φ(r) = q + log(R/2)`` with ``q = r²/2, R = 2Φ(r) = 2 − erfc(r/√2)``
    for r > 0 and ``q = 0, R = erfcx(−r/√2)`` for r ≤ 0; ``hint`` is the erfc (r > 0) or
    erfcx (r ≤ 0) value, handed to the truncated-normal draw of this piece (-1: none).
    """
    y = abs(r) * _INV_SQRT2
    if r <= 0.0:
        rx = _erfcx(y)
        return 0.0, rx, rx
    if r >= _R_ONE:
        return 0.5 * r * r, 2.0, -1.0
    ec = _erfc_pos(y)
    return 0.5 * r * r, 2.0 - ec, ec


@njit(**_JIT)
def _log_odds(rp, rm, half_log):
    """(ℓ, hint₊, hint₋): ``ℓ = ½log(S₋/S₊) + (q₊ − q₋) + log(R₊/R₋)`` (see :func:`_piece`)."""
    qp, big_rp, hp = _piece(rp)
    qm, big_rm, hm = _piece(rm)
    return half_log + (qp - qm) + _log(big_rp / big_rm), hp, hm


@njit(**_JIT)
def _branch(rp, rm, half_log, k0, k1, c):
    """(positive?, hint): ``u₁ < σ(ℓ)``, ``ℓ = ½log(S₋/S₊) + G(r₊) − G(r₋)``.

    One log per element (:func:`_log_odds`). Shortcuts with the same decision: for r ≤ 0,
    G(r) ≤ −log 2; for r > 0, G(r) ≥ r²/2 − log 2, so a bound alone may put |ℓ| ≥ 38, and then
    neither special function nor u₁ (counter c) is evaluated.
    """
    sure_pos = (rm <= 0.0) & (rp > 0.0) & (half_log + 0.5 * rp * rp >= _ELL_SURE)
    sure_neg = (rp <= 0.0) & (rm > 0.0) & (half_log - 0.5 * rm * rm <= -_ELL_SURE)
    if sure_pos | sure_neg:
        return sure_pos, -1.0
    ell, hp, hm = _log_odds(rp, rm, half_log)
    if ell >= _ELL_SURE:
        pos = True
    elif ell <= -_ELL_SURE:
        pos = False
    else:
        t = _exp(-abs(ell))
        pi = 1.0 / (1.0 + t) if ell >= 0.0 else t / (1.0 + t)
        pos = _uniform(k0, k1, c) < pi
    return pos, (hp if pos else hm)


@njit(inline="always", **_JIT)
def _tn_bulk_pm(alpha, u, ec):
    """(pm, sign) of the inversion for α < α₀: T = sign·Φ⁻¹(pm).

    ``ec = erfc(|α|/√2)`` (read only where needed: α ≥ −8.3, or α ≥ −12 with u > ½).
    p = u Φ(−α); T = −Φ⁻¹(p) if p ≤ ½, else T = Φ⁻¹(1 − p) with 1 − p = Φ(α) + (1 − u)Φ(−α)
    (no cancellation). For α < −8.3, Φ(α) < 2⁻⁵⁴: Φ(−α) rounds to 1 and p = u exactly, and
    Φ(α) is below half an ulp of 1 − u for α < −12.
    """
    w = 0.5 * ec                                     # Φ(-|α|)
    nonneg = alpha >= 0.0
    c = w if nonneg else 1.0 - w
    d = 1.0 - w if nonneg else w
    p = u * c
    lo_mid = p <= 0.5
    pm_mid = p if lo_mid else d + (1.0 - u) * c
    lo_far = u <= 0.5
    v = 1.0 - u
    pm_far = u if lo_far else (w + v if alpha >= -12.0 else v)
    far = alpha < -8.3
    lo = lo_far if far else lo_mid
    return (pm_far if far else pm_mid), (-1.0 if lo else 1.0)


@njit(inline="always", **_JIT)
def _tn_needs_ec(alpha, u):
    return (alpha < _ALPHA0) & ((alpha >= -8.3) | ((alpha >= -12.0) & (u > 0.5)))


@njit(inline="always", **_JIT)
def _ec_from_hint(alpha, hint):
    """erfc(|α|/√2) from the hint of the chosen piece (valid only for hint ≥ 0)."""
    return hint if alpha < 0.0 else _erfc_given(abs(alpha) * _INV_SQRT2, hint)


@njit(inline="always", **_JIT)
def _ec_from_hint_sel(alpha, hint):
    """:func:`_ec_from_hint` with :func:`_erfc_given`'s ranges side by side (the same
    arithmetic; no call, so the loop around it vectorises)."""
    y = abs(alpha) * _INV_SQRT2
    hi = y * y
    lo = _fma(y, y, -hi)
    big = hint * (_exp(-hi) * (1.0 - lo))
    small = 1.0 - _erf_small(y)
    ec = small if y <= 0.46875 else (0.0 if y >= 27.3 else big)
    return hint if alpha < 0.0 else ec


@njit(**_JIT)
def _std_tn(alpha, u, hint):
    """(T, e): T ~ N(0,1) | T ≥ α by inversion of the uniform u; e = T − α ≥ 0.

    ``hint`` (≥ 0 if known): erfc(|α|/√2) for α < 0, erfcx(α/√2) for α ≥ 0.
    """
    y = abs(alpha) * _INV_SQRT2
    if alpha < _ALPHA0:
        ec = 0.0
        if _tn_needs_ec(alpha, u):
            ec = _ec_from_hint(alpha, hint) if hint >= 0.0 else _erfc_pos(y)
        pm, sign = _tn_bulk_pm(alpha, u, ec)
        t = sign * _ndtri(pm)
        if t < alpha:
            t = alpha
        return t, t - alpha
    big = -_log(u)
    if alpha > _ALPHA_EXP:
        e = big / alpha
        return _ALPHA_EXP + e, e
    e0 = hint if hint >= 0.0 else _erfcx(y)
    lam = _SQRT_2_PI / e0
    g = 2.0 * big / alpha
    e = min(g / (1.0 + math.sqrt(1.0 + g / alpha)), big / lam)
    for _ in range(_NEWTON_ITERS):
        ey = _erfcx((alpha + e) * _INV_SQRT2)
        de = (_log(ey / e0) - e * (alpha + 0.5 * e) + big) * ey * _SQRT_PI_2
        e += de
        if abs(de) <= _NEWTON_STOP * (e + 1.0 / alpha):
            break   # Newton is quadratic: the remaining error is ~1e-2·Δe², below rounding
    if e < 0.0:
        e = 0.0
    return alpha + e, e


# --------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------

@njit(**_JIT)
def _relu_elem(a, x, i, k0, k1, p1, p2, n1, n2, sdp, sdm, half_log):
    """One element, full scalar path: (z, positive?)."""
    c = np.uint64(i) * _TWO
    u2 = _uniform(k0, k1, c + _ONE)
    rp = a * p1 + x * p2
    rm = -(a * n1 + x * n2)
    pos, hint = _branch(rp, rm, half_log, k0, k1, c)
    alpha = -rp if pos else -rm
    scale = sdp if pos else -sdm
    t, e = _std_tn(alpha, u2, hint)
    return scale * e, pos


#: elements per block of the blocked loop (its scratch buffers, ~0.6 MB, stay in L2): the
#: passes' fixed costs (calls, the vector loops' scalar remainders) are paid per block, and the
#: rest path sees ~20 % of a block, so larger blocks keep its vectors full (128 → 2048: the
#: fused latent pass ~20 % faster at (50, 50, 1e4), same arithmetic)
_CHUNK = 2048


# Each pass of the blocked ReLU loop is a function of its own: compiled inside one large
# function the passes vectorised badly (one of them, the branch pass, ran ~10× slower than alone).

@njit(**_JIT)
def _rr_pass1(m, cn_b, a_b, x_b, k0, k1, p1, p2, n1, n2, sdp, sdm, half_log, u_buf, pm_buf, al_buf,
              sc_buf, sg_buf, fl_buf, sure_buf):
    """Pass 1: u₂, the branch bounds, α and the class of every element of the block."""
    for j in range(m):
        u = _uniform(k0, k1, cn_b[j] * _TWO + _ONE)
        a = a_b[j]
        x = x_b[j]
        rp = a * p1 + x * p2
        rm = -(a * n1 + x * n2)
        sure_pos = (rm <= 0.0) & (rp > 0.0) & (half_log + 0.5 * rp * rp >= _ELL_SURE)
        sure_neg = (rp <= 0.0) & (rm > 0.0) & (half_log - 0.5 * rm * rm <= -_ELL_SURE)
        alpha = -rp if sure_pos else -rm
        lo_u = u <= 0.5
        pm = u if lo_u else 1.0 - u
        simple = (sure_pos | sure_neg) & ((alpha < -12.0) | ((alpha < -8.3) & lo_u))
        u_buf[j] = u
        pm_buf[j] = pm
        al_buf[j] = alpha
        sc_buf[j] = sdp if sure_pos else -sdm
        sg_buf[j] = -1.0 if lo_u else 1.0
        fl_buf[j] = (2 if abs(pm - 0.5) > 0.425 else 1) if simple else (3 if sure_pos | sure_neg else 0)
        sure_buf[j] = (1 if sure_pos else -1) if (sure_pos | sure_neg) else 0


@njit(**_JIT)
def _rr_nsure(m, a_b, x_b, p1, p2, n1, n2, half_log):
    """The number of elements of ``a_b[:m], x_b[:m]`` that pass 1 would find sure (the same
    arithmetic as :func:`_rr_pass1`'s ``sure_pos | sure_neg``; a vectorised count)."""
    ns = np.int64(0)
    for j in range(m):
        a = a_b[j]
        x = x_b[j]
        rp = a * p1 + x * p2
        rm = -(a * n1 + x * n2)
        sure_pos = (rm <= 0.0) & (rp > 0.0) & (half_log + 0.5 * rp * rp >= _ELL_SURE)
        sure_neg = (rp <= 0.0) & (rm > 0.0) & (half_log - 0.5 * rm * rm <= -_ELL_SURE)
        ns += sure_pos | sure_neg
    return ns


@njit(**_JIT)
def _rr_u2(m, cn_b, k0, k1, u_buf, sure_buf):
    """u₂ of every element and a zero sure flag: what the in-place path uses of pass 1 in a
    block without sure elements (pass 1 skipped)."""
    for j in range(m):
        u_buf[j] = _uniform(k0, k1, cn_b[j] * _TWO + _ONE)
        sure_buf[j] = 0


@njit(**_JIT)
def _rr_central(m, pm_buf, al_buf, sc_buf, sg_buf, z_b):
    """Pass 2: AS241's central rational for the whole block, the final value of the simple
    elements in AS241's central region (the others' ``z_b`` are overwritten by later passes;
    a block without such elements — every element's branch undecided, as at Δ ~ 1 — skips
    it)."""
    for j in range(m):
        t = sg_buf[j] * _ndtri_central(pm_buf[j] - 0.5)
        alpha = al_buf[j]
        if t < alpha:
            t = alpha
        z_b[j] = sc_buf[j] * (t - alpha)


@njit(**_JIT)
def _rr_tails(ntail, idx_tail, pm_buf, sc_buf, al_buf, sg_buf, ct_b, cs_b, ca_b, cg_b, res_b, z_b):
    """Pass 3: AS241's tails of the simple elements (gather, compute contiguously, scatter)."""
    for jj in range(ntail):
        j = idx_tail[jj]
        ct_b[jj] = pm_buf[j]
        cs_b[jj] = sc_buf[j]
        ca_b[jj] = al_buf[j]
        cg_b[jj] = sg_buf[j]
    _ndtri_tails(ct_b, ntail)
    for jj in range(ntail):
        t = cg_b[jj] * ct_b[jj]
        alpha = ca_b[jj]
        if t < alpha:
            t = alpha
        res_b[jj] = cs_b[jj] * (t - alpha)
    for jj in range(ntail):
        z_b[idx_tail[jj]] = res_b[jj]


#: the branch bound of the rest elements (:func:`_rr_bounds`): ℓ is bracketed with an absolute
#: margin ``_BOUND_ABS + _BOUND_REL·(q₊ + q₋)`` (far above the ~1e-15·(1 + q₊ + q₋) rounding of
#: the computed ℓ) and σ of the bracket with a relative margin ``_BOUND_SIG`` (far above the
#: ~1e-15 relative rounding of σ(ℓ) as :func:`_rr_branch` computes it)
_BOUND_ABS = 1e-9
_BOUND_REL = 1e-9
_BOUND_SIG = 1e-12
#: G(r) ≥ this stands for "no lower bound" (r ≤ 0): ℓ's bracket then ends below −38
_G_NONE = 1e4
_LN2 = 0.69314718055994530942
#: σ on the grid t_i = −40 + i/8, i = 0..640, with the relative margin: ``_SIG_LO[i] ≤ σ(t_i)``
#: for the positive test (0 where t_i ≤ −38: ℓ ≤ −38 decides against every u₁) and
#: ``_SIG_HI[i] ≥ σ(t_i)`` for the negative one (2 where t_i ≥ 38); a bracket end between grid
#: points is taken at the grid point below (ℓ_lo) or above (ℓ_hi): no exp per element
_SIG_STEP = 8.0
_SIG_OFF = 40.0
_SIG_N = 640


def _sigma_tables():
    lo = np.empty(_SIG_N + 1)
    hi = np.empty(_SIG_N + 1)
    for i in range(_SIG_N + 1):
        t = -_SIG_OFF + i / _SIG_STEP
        s = 1.0 / (1.0 + math.exp(-t)) if t >= 0.0 else math.exp(t) / (1.0 + math.exp(t))
        lo[i] = 0.0 if t <= -_ELL_SURE else s * (1.0 - _BOUND_SIG)
        hi[i] = 2.0 if t >= _ELL_SURE else s * (1.0 + _BOUND_SIG)
    return lo, hi


_SIG_LO, _SIG_HI = _sigma_tables()

#: the sharp bracket of ℓ (:func:`_bound_elem_sharp`): ``h(r) = G(r) − q(r)`` (``q = r²/2`` for
#: ``r > 0``, else 0; so ``h = log Φ(r)`` for r > 0 and ``r²/2 + log Φ(r)`` for r ≤ 0) on the
#: grid ``r_i = −_H_OFF + i/_H_STEP``, ``i = 0.._H_N`` (``r_N = 8.5``). ``h`` is increasing
#: with ``0 < h' ≤ √(2/π)`` (for r > 0, ``h' = φ/Φ``, decreasing by log-concavity; for
#: r ≤ 0, ``h' = G' = r + φ/Φ``, increasing as ``G'' ≥ 0``; both ``√(2/π)`` at 0), so for
#: ``r_i ≤ r < r_{i+1}``: ``h(r_i) ≤ h(r) ≤ h(r_i) + √(2/π)/_H_STEP``. Above the grid
#: ``h(r_N) ≤ h(r) < 0``; below it ``h(r) < h(r_0)`` and no lower bound is used. ``_H_ERR``
#: covers the table's rounding (≲ 3e-14: r²/2 + log Φ(r) cancels at r = −16) and an index
#: one off at a grid point (h' ≤ 0.8 times ~4e-15 in r).
_H_STEP = 64.0
_H_OFF = 16.0
_H_N = 1568
_H_WIDTH = 0.79788456080286535588 / _H_STEP * (1.0 + 1e-9)
_H_ERR = 1e-12


def _h_table():
    """h(r_i) on the grid of ``_H_STEP`` (``math.erfc``, ``math.log1p``; the tests check the
    values against mpmath and the bracket against SciPy's ``log_ndtr``)."""
    h = np.empty(_H_N + 1)
    for i in range(_H_N + 1):
        r = -_H_OFF + i / _H_STEP
        if r > 0.0:
            h[i] = math.log1p(-0.5 * math.erfc(r * _INV_SQRT2))
        else:
            h[i] = 0.5 * r * r + math.log(0.5 * math.erfc(-r * _INV_SQRT2))
    return h


_H_TAB = _h_table()


@njit(inline="always", **_JIT)
def _h_bracket(r):
    """(q, h_lo, h_hi): ``q(r)`` and a bracket of ``h(r) = G(r) − q(r)`` from the table
    (``_H_TAB``; ``h_lo = −_G_NONE`` below the grid). A NaN or infinite r gives a NaN q."""
    t = (r + _H_OFF) * _H_STEP
    t = t if t > 0.0 else 0.0
    t = t if t < _H_N else np.float64(_H_N)
    h = _H_TAB[np.int64(t)]
    q = 0.5 * r * r if r > 0.0 else 0.0 * r
    return q, (h - _H_ERR if r >= -_H_OFF else -_G_NONE), h + (_H_WIDTH + _H_ERR)


#: relative margin of the sharp bracket's σ tests: covers :func:`_exp_dec`'s relative error
#: (< 3e-10), the few roundings of the tests and of σ(ℓ) as :func:`_rr_branch` computes it
_DEC_SIG = 1e-8


@njit(inline="always", **_JIT)
def _exp_dec(x):
    """e^x for x ≤ 0 to a relative error < 3e-10 (for the bracket's decisions only), 0 is not
    returned: x is clamped at −700 (e^x ≥ e^−700 > 0 then; the callers' tests are decided
    there whatever the value). ``x = k ln 2 + r``, ``|r| ≤ ln 2/2 + 1e-13``; ``e^r`` by its
    Taylor polynomial to r⁸ (truncation ≤ |r|⁹/9!·e^|r| < 2.8e-10), 2^k by the exponent bits."""
    x = x if x > -700.0 else -700.0
    kf = math.floor(x * _LOG2E + 0.5)
    r = _fma(kf, -_LN2_HI, x)
    r = _fma(kf, -_LN2_LO, r)
    p = _poly8(r, 1.0, 1.0, 0.5, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0,
               1.0 / 40320.0)
    return p * _i2f((np.int64(kf) + 1023) << 52)


@njit(inline="always", **_JIT)
def _bound_elem_sharp(a, x, cn, k0, k1, p1, p2, n1, n2, sdp, sdm, half_log):
    """One element of :func:`_rr_bounds_open`: (decision ±1 or 0, α and scale of the piece)."""
    rp = a * p1 + x * p2
    rm = -(a * n1 + x * n2)
    q_p, hl_p, hh_p = _h_bracket(rp)
    q_m, hl_m, hh_m = _h_bracket(rm)
    dl = _BOUND_ABS + _BOUND_REL * (q_p + q_m)
    base = half_log + (q_p - q_m)
    lo = base + (hl_p - hh_m) - dl
    hi = base + (hh_p - hl_m) + dl
    u1 = _uniform(k0, k1, cn * _TWO)
    # u₁ < σ(s)(1 − ε) as u₁(1 + e) < (1 or e)(1 − ε), e = e^{−|s|}: σ = 1/(1 + e) for s ≥ 0,
    # e/(1 + e) below (no division)
    e_lo = _exp_dec(-abs(lo))
    e_hi = _exp_dec(-abs(hi))
    pos = (lo > -_ELL_SURE) & (u1 * (1.0 + e_lo) < (1.0 if lo >= 0.0 else e_lo) * (1.0 - _DEC_SIG))
    neg = (hi < _ELL_SURE) & (u1 * (1.0 + e_hi) >= (1.0 if hi >= 0.0 else e_hi) * (1.0 + _DEC_SIG))
    return (1 if pos else (-1 if neg else 0)), (-rp if pos else -rm), (sdp if pos else -sdm)


@njit(inline="always", **_JIT)
def _bound_elem(a, x, cn, k0, k1, p1, p2, n1, n2, sdp, sdm, half_log):
    """One element of :func:`_rr_bounds`: (decision ±1 or 0, α and scale of the piece)."""
    rp = a * p1 + x * p2
    rm = -(a * n1 + x * n2)
    qp = 0.5 * rp * rp
    qm = 0.5 * rm * rm
    pp = rp > 0.0
    pm_ = rm > 0.0
    g_lo_p = qp - _LN2 if pp else -_G_NONE
    g_hi_p = qp if pp else -_LN2
    g_lo_m = qm - _LN2 if pm_ else -_G_NONE
    g_hi_m = qm if pm_ else -_LN2
    dl = _BOUND_ABS + _BOUND_REL * ((qp if pp else 0.0) + (qm if pm_ else 0.0))
    lo = half_log + (g_lo_p - g_hi_m) - dl
    hi = half_log + (g_hi_p - g_lo_m) + dl
    # grid index below ℓ_lo and above ℓ_hi, clamped (NaN → an entry that decides nothing)
    t_lo = (lo + _SIG_OFF) * _SIG_STEP
    t_lo = t_lo if t_lo > 0.0 else 0.0
    t_lo = t_lo if t_lo < _SIG_N else np.float64(_SIG_N)
    t_hi = (hi + _SIG_OFF) * _SIG_STEP
    t_hi = t_hi if t_hi < _SIG_N else np.float64(_SIG_N)
    t_hi = t_hi if t_hi > 0.0 else 0.0
    u1 = _uniform(k0, k1, cn * _TWO)
    pos = u1 < _SIG_LO[np.int64(math.floor(t_lo))]
    neg = u1 >= _SIG_HI[np.int64(math.ceil(t_hi))]
    return (1 if pos else (-1 if neg else 0)), (-rp if pos else -rm), (sdp if pos else -sdm)


@njit(**_JIT)
def _rr_bounds(k, idx_rest, a_b, x_b, cn_b, k0, k1, p1, p2, n1, n2, sdp, sdm, half_log, dec_b,
               al_buf, sc_buf, ga_b, gx_b, gc_b, gal_b, gsc_b):
    """The rest elements' branch from a bracket of ℓ where it decides (no special function).

    ``G(r) = r²/2 + log Φ(r)`` lies in ``[r²/2 − log 2, r²/2)`` for ``r > 0`` (``½ ≤ Φ(r) < 1``)
    and below ``−log 2`` for ``r ≤ 0`` (``Φ(r) ≤ ½``), so ``ℓ = ½log(S₋/S₊) + G(r₊) − G(r₋)``
    (the same computed ``r₊, r₋`` as pass 1) lies in ``[ℓ_lo, ℓ_hi]``. With the margins above,
    ``u₁ < σ(t)(1 − ε)`` for a grid point ``t ≤ ℓ_lo − δ`` (table ``_SIG_LO``, exact to
    ~1e-16 relative, the margin ``ε = 1e-12``) implies that the exact comparison of
    :func:`_rr_branch` (``ℓ ≥ 38``, or ``ℓ > −38`` and ``u₁ < σ(ℓ)``, both as computed there:
    ``ℓ ≥ t`` and the computed ``σ(ℓ) ≥ σ(t)(1 − 1e-15)``) picks the positive piece, and
    ``u₁ ≥ σ(t')(1 + ε)`` for a grid point ``t' ≥ ℓ_hi + δ`` below 38 that it picks the negative
    one (``ℓ < 38`` and the computed ``σ(ℓ) ≤ σ(t')(1 + 1e-15)``); the element then gets
    ``dec_b[jj] = ±1`` and its piece's ``α`` and scale in ``al_buf``, ``sc_buf`` and goes on as
    a sure element (:func:`_rr_sure`: the erfc of its own piece only). Else ``dec_b[jj] = 0``
    (the exact ℓ: :func:`_rr_pieces`, :func:`_rr_branch`). The draw of an element depends only
    on its branch (the hints are caches of values the inversion would compute anyway), so the
    results are those of :func:`_relu_elem` bit for bit. ~91 % of the rest elements of a sweep
    at Δ = 1e-3 are decided here.
    """
    if idx_rest[k - 1] == np.uint64(k - 1):     # all of 0..k-1 (indices ascending): no
        for jj in range(k):                     # gather, no scatter (every element at Δ ~ 1)
            d_, al, sc = _bound_elem(a_b[jj], x_b[jj], cn_b[jj], k0, k1, p1, p2, n1, n2, sdp,
                                     sdm, half_log)
            dec_b[jj] = d_
            al_buf[jj] = al
            sc_buf[jj] = sc
        return
    for jj in range(k):             # gather, compute contiguously, scatter (vectorises)
        j = idx_rest[jj]
        ga_b[jj] = a_b[j]
        gx_b[jj] = x_b[j]
        gc_b[jj] = cn_b[j]
    for jj in range(k):
        d_, al, sc = _bound_elem(ga_b[jj], gx_b[jj], gc_b[jj], k0, k1, p1, p2, n1, n2, sdp, sdm,
                                 half_log)
        dec_b[jj] = d_
        gal_b[jj] = al
        gsc_b[jj] = sc
    for jj in range(k):
        j = idx_rest[jj]
        al_buf[j] = gal_b[jj]
        sc_buf[j] = gsc_b[jj]


@njit(**_JIT)
def _rr_bounds_open(m, a_b, x_b, cn_b, k0, k1, p1, p2, n1, n2, sdp, sdm, half_log, dec_b, al_buf,
                    sc_buf):
    """A block whose branches are all open (:func:`_relu_range`'s in-place path, every
    element at Δ ~ 1): each element's branch from a sharp bracket of ℓ where it decides (a
    table of h, two short exps; no erfc, no log).

    ``ℓ = ½log(S₋/S₊) + G(r₊) − G(r₋)`` (the same computed ``r₊, r₋`` as pass 1) with
    ``G = q + h``: ``q(r) = r²/2`` for r > 0 (else 0) exactly as :func:`_piece` has it, and
    ``h`` bracketed from its table (``_H_TAB``: ``h(r_i) ≤ h(r) ≤ h(r_i) + √(2/π)/64`` on the
    grid, see there), so ``ℓ ∈ [ℓ_lo, ℓ_hi]`` with the absolute margin ``δ = _BOUND_ABS +
    _BOUND_REL·(q₊ + q₋)`` on both ends (width ~0.025 inside the grid). The exact comparison
    of :func:`_rr_branch` picks the positive piece iff ``ℓ ≥ 38`` or (``ℓ > −38`` and
    ``u₁ < σ(ℓ)``), both as computed there (the computed ℓ within ~1e-15·(1 + q₊ + q₋) < δ of
    the true one, the computed σ(ℓ) within ~1e-15 relative). So ``ℓ_lo > −38`` and
    ``u₁ < σ(ℓ_lo)(1 − ε)`` imply the positive piece, ``ℓ_hi < 38`` and
    ``u₁ ≥ σ(ℓ_hi)(1 + ε)`` the negative one (σ increasing), with ``ε = _DEC_SIG = 1e-8``
    covering :func:`_exp_dec`'s relative error (< 3e-10) and the roundings of the tests
    (written as ``u₁(1 + e) < (1 or e)(1 − ε)``, ``e = e^{−|ℓ_lo|}``: no division). The
    element then gets ``dec_b[jj] = ±1`` and its piece's ``α`` and scale in ``al_buf``,
    ``sc_buf`` and goes on as a sure element (:func:`_rr_erfc`: the erfc of its own piece
    only). Else ``dec_b[jj] = 0`` (the exact ℓ: :func:`_rr_pieces`, :func:`_rr_branch`): u₁
    within the bracket's σ, ~0.5 % of the elements at Δ = 2; a NaN or infinite r decides
    nothing. The draw of an element depends only on its branch (the hints are caches of
    values the inversion would compute anyway), so the results are those of
    :func:`_relu_elem` bit for bit.
    """
    for j in range(m):
        d_, al, sc = _bound_elem_sharp(a_b[j], x_b[j], cn_b[j], k0, k1, p1, p2, n1, n2, sdp, sdm,
                                       half_log)
        dec_b[j] = d_
        al_buf[j] = al
        sc_buf[j] = sc


@njit(**_JIT)
def _rr_pieces(k, idx_rest, a_b, x_b, sure_buf, u_buf, cn_b, p1, p2, n1, n2, r_b, sr_b, ur_b, ir_b,
               es_b, xn_b, ex_b, big_b, h_b, q_b):
    """R0 (gather the rest: r₊ in [0, k), r₋ in [k, 2k)), R1 (Cody's rationals for all three
    ranges of y = |r|/√2 and the exp factor) and R2 (the pieces' R, hint and q as _piece)."""
    rm_b = r_b[k:2 * k]                 # r₋ as a view from 0 (see _NONNEG_NOTE)
    for jj in range(k):
        j = idx_rest[jj]
        a = a_b[j]
        x = x_b[j]
        r_b[jj] = a * p1 + x * p2
        rm_b[jj] = -(a * n1 + x * n2)
        sr_b[jj] = sure_buf[j]
        ur_b[jj] = u_buf[j]
        ir_b[jj] = cn_b[j]
    nbig = np.int64(0)                  # y > 4 (none in most blocks at Δ ~ 1)
    for jj in range(2 * k):
        nbig += not (abs(r_b[jj]) * _INV_SQRT2 <= 4.0)     # (NaN: the full form)
    if nbig > 0:
        for jj in range(2 * k):
            r = r_b[jj]
            y = abs(r) * _INV_SQRT2
            es_b[jj] = _erf_small(y)
            xn_b[jj] = _erfcx_mid(y) if y <= 4.0 else _erfcx_big(y)
            yy = y * y
            ex_b[jj] = _exp(yy if r <= 0.0 else -yy)
    else:                               # the same without the y > 4 rational
        for jj in range(2 * k):
            r = r_b[jj]
            y = abs(r) * _INV_SQRT2
            es_b[jj] = _erf_small(y)
            xn_b[jj] = _erfcx_mid(y)
            yy = y * y
            ex_b[jj] = _exp(yy if r <= 0.0 else -yy)
    for jj in range(2 * k):
        r = r_b[jj]
        y = abs(r) * _INV_SQRT2
        small = y <= 0.46875
        rx = ex_b[jj] * (1.0 - es_b[jj]) if small else xn_b[jj]
        hi2 = y * y
        lo2 = _fma(y, y, -hi2)
        ec = 1.0 - es_b[jj] if small else (0.0 if y >= 27.3 else
                                           xn_b[jj] * (ex_b[jj] * (1.0 - lo2)))
        one = r >= _R_ONE
        neg = r <= 0.0
        big_b[jj] = rx if neg else (2.0 if one else 2.0 - ec)
        h_b[jj] = rx if neg else (-1.0 if one else ec)
        q_b[jj] = 0.0 if neg else 0.5 * r * r


@njit(**_JIT)
def _rr_erfc(k, ar_v, hr_v, ec_v):
    """erfc(|α|/√2) of entries ``0 .. k − 1`` (:func:`_erfc_pos`, ranges side by side) into
    ``ec_v``, handed on as the hint ``hr_v`` where α < 0 (−1 elsewhere)."""
    nbig = np.int64(0)                  # y > 4 (none in most blocks at Δ ~ 1)
    for jj in range(k):
        nbig += not (abs(ar_v[jj]) * _INV_SQRT2 <= 4.0)    # (NaN: the full form)
    if nbig > 0:
        for jj in range(k):
            alpha = ar_v[jj]
            ec = _erfc_pos_sel(abs(alpha) * _INV_SQRT2)
            ec_v[jj] = ec
            hr_v[jj] = ec if alpha < 0.0 else -1.0
    else:                               # the same without the y > 4 rational
        for jj in range(k):
            alpha = ar_v[jj]
            ec = _erfc_pos_mid(abs(alpha) * _INV_SQRT2)
            ec_v[jj] = ec
            hr_v[jj] = ec if alpha < 0.0 else -1.0


@njit(**_JIT)
def _rr_sure(k0_, k, idx_rest, al_buf, u_buf, sc_buf, ar_b, ur_b, sc_r, hr_b, ec_b):
    """The elements whose branch the bounds decided but whose inversion needs erfc(|α|/√2)
    (entries ``k0_ .. k0_ + k − 1`` of the rest buffers): no pieces, no ℓ; gathered, then
    :func:`_rr_erfc`."""
    e = k0_ + k                 # views from entry k0_ (see _NONNEG_NOTE)
    idx_v, ar_v, ur_v, sc_v, hr_v, ec_v = (idx_rest[k0_:e], ar_b[k0_:e], ur_b[k0_:e], sc_r[k0_:e],
                                           hr_b[k0_:e], ec_b[k0_:e])
    for jj in range(k):
        j = idx_v[jj]
        ar_v[jj] = al_buf[j]
        ur_v[jj] = u_buf[j]
        sc_v[jj] = sc_buf[j]
    _rr_erfc(k, ar_v, hr_v, ec_v)


@njit(**_JIT)
def _rr_branch(k, k0, k1, q_b, big_b, h_b, r_b, sr_b, ir_b, half_log, sdp, sdm, ar_b, sc_r, hr_b,
               ec_b):
    """R3: ℓ, σ(ℓ), u₁, the branch; α, scale and hint of the chosen piece, erfc(|α|/√2)
    (:func:`_ec_from_hint`: the hint itself for α < 0, computed only for the few α ≥ 0)."""
    q_m, big_m, r_m, h_m = q_b[k:2 * k], big_b[k:2 * k], r_b[k:2 * k], h_b[k:2 * k]   # r₋'s piece
    na = np.int64(0)                    # elements with α ≥ 0
    for jj in range(k):
        ell = half_log + (q_b[jj] - q_m[jj]) + _log(big_b[jj] / big_m[jj])
        t = _exp(-abs(ell))
        pi = 1.0 / (1.0 + t) if ell >= 0.0 else t / (1.0 + t)
        u1 = _uniform(k0, k1, ir_b[jj] * _TWO)
        dec = (ell >= _ELL_SURE) | ((ell > -_ELL_SURE) & (u1 < pi))
        sure = sr_b[jj]
        pos = (sure > 0.0) | ((sure == 0.0) & dec)
        alpha = -r_b[jj] if pos else -r_m[jj]
        hint = -1.0 if sure != 0.0 else (h_b[jj] if pos else h_m[jj])
        ar_b[jj] = alpha
        sc_r[jj] = sdp if pos else -sdm
        hr_b[jj] = hint
        ec_b[jj] = hint
        na += alpha >= 0.0
    # α ≥ 0: erfc(α/√2) from the erfcx hint. A few % of the elements at small Δ (a loop with a
    # call where needed), over half at Δ ~ 1 (the vectorised form for all: same arithmetic)
    if 8 * na >= k:
        for jj in range(k):
            alpha = ar_b[jj]
            ec = _ec_from_hint_sel(alpha, hr_b[jj])
            ec_b[jj] = ec if alpha >= 0.0 else ec_b[jj]
    elif na > 0:
        for jj in range(k):
            if ar_b[jj] >= 0.0:
                ec_b[jj] = _ec_from_hint(ar_b[jj], hr_b[jj])


@njit(**_JIT)
def _rr_invert_core(k, ar_b, ur_b, hr_b, ec_b, sc_r, res_b, pm_r, sg_r, it_r, ct_r):
    """R4 (erfc(|α|/√2) where the chosen piece left no hint: rare), R5 (the inversion for
    α < α₀: ``sign·Φ⁻¹(pm)`` as :func:`_ndtri` — AS241's central rational for every element,
    the tail rational only for the gathered ``|pm − ½| > 0.425``), R6 (α ≥ α₀: Newton in log
    space, rare), into ``res_b``."""
    n4 = np.int64(0)            # counted first (vectorised): the loop with the call is rare
    for jj in range(k):         # (ec_b < 0: not computed; _rr_sure computes it for all)
        n4 += (ec_b[jj] < 0.0) & _tn_needs_ec(ar_b[jj], ur_b[jj])
    if n4 > 0:
        for jj in range(k):
            if ec_b[jj] < 0.0 and _tn_needs_ec(ar_b[jj], ur_b[jj]):
                ec_b[jj] = _erfc_pos(abs(ar_b[jj]) * _INV_SQRT2)
    for jj in range(k):
        pm, sign = _tn_bulk_pm(ar_b[jj], ur_b[jj], ec_b[jj])
        pm_r[jj] = pm
        sg_r[jj] = sign
    _ndtri_gathered(pm_r, res_b, it_r, ct_r, k)
    for jj in range(k):
        alpha = ar_b[jj]
        t = sg_r[jj] * res_b[jj]
        if t < alpha:
            t = alpha
        res_b[jj] = sc_r[jj] * (t - alpha)
    n6 = np.int64(0)            # α ≥ α₀: Newton's tail (rare), counted first
    for jj in range(k):
        n6 += ar_b[jj] >= _ALPHA0
    if n6 > 0:
        for jj in range(k):
            if ar_b[jj] >= _ALPHA0:
                t, e = _std_tn(ar_b[jj], ur_b[jj], hr_b[jj])
                res_b[jj] = sc_r[jj] * e


@njit(**_JIT)
def _rr_invert(k, idx_rest, ar_b, ur_b, hr_b, ec_b, sc_r, res_b, z_b, pm_r, sg_r, it_r, ct_r):
    """:func:`_rr_invert_core`, then the scatter of the results into ``z_b``."""
    _rr_invert_core(k, ar_b, ur_b, hr_b, ec_b, sc_r, res_b, pm_r, sg_r, it_r, ct_r)
    for jj in range(k):
        z_b[idx_rest[jj]] = res_b[jj]


# --------------------------------------------------------------------------------------------
# float32 lanes for the inversion of a float32 sweep's ReLU draw (design note 45)
# --------------------------------------------------------------------------------------------

#: The same in float32 / int32 (design note 45).
_fma32 = _fma_intrinsic(types.float32, ir.FloatType(), "f32")
_i2f32 = _bitcast_intrinsic(types.int32, types.float32, ir.FloatType())
_f2i32 = _bitcast_intrinsic(types.float32, types.int32, ir.IntType(32))


_F32 = np.float32
_I32 = np.int32


@njit(inline="always", **_JIT)
def _p4_32(y, a0, a1, a2, a3, a4):
    y2 = y * y
    return _fma32(_fma32(a4, y2, _fma32(a3, y, a2)), y2, _fma32(a1, y, a0))


@njit(inline="always", **_JIT)
def _p8_32(y, a0, a1, a2, a3, a4, a5, a6, a7, a8):
    y2 = y * y
    y4 = y2 * y2
    lo = _fma32(_fma32(a3, y, a2), y2, _fma32(a1, y, a0))
    hi = _fma32(_fma32(a7, y, a6), y2, _fma32(a5, y, a4))
    return _fma32(a8, y4 * y4, _fma32(hi, y4, lo))


@njit(inline="always", **_JIT)
def _exp32(x):
    """e^x in float32 for −87 ≤ x ≤ 0 (the callers': x = −y², y² ≤ 12.5): Cody–Waite with
    ``ln 2 = 0.693359375 − 2.12194440e-4`` (k·hi exact for |k| < 2¹⁵), e^r by its Taylor
    polynomial to r⁷ on |r| ≤ ln 2/2 (truncation < 5.3e-9 relative), 2^k by the exponent bits."""
    x = x if x > _F32(-87.0) else _F32(-87.0)
    kf = math.floor(_fma32(x, _F32(1.44269504088896341), _F32(0.5)))
    r = _fma32(kf, _F32(-0.693359375), x)
    r = _fma32(kf, _F32(2.12194440e-4), r)
    r2 = r * r
    lo = _fma32(_fma32(_F32(1.0 / 6.0), r, _F32(0.5)), r2, _fma32(_F32(1.0), r, _F32(1.0)))
    hi = _fma32(_fma32(_F32(1.0 / 5040.0), r, _F32(1.0 / 720.0)), r2,
                _fma32(_F32(1.0 / 120.0), r, _F32(1.0 / 24.0)))
    p = _fma32(hi, r2 * r2, lo)
    return p * _i2f32((_I32(kf) + _I32(127)) << _I32(23))


@njit(inline="always", **_JIT)
def _log32(x):
    """log(x) in float32 for normal x > 0: fdlibm's arrangement (as :func:`_log`) with the
    series to z⁵ (z = s² ≤ 0.0295: truncation < 1e-10)."""
    bits = _f2i32(x)
    e = ((bits >> _I32(23)) & _I32(0xFF)) - _I32(127)
    m = _i2f32((bits & _I32(0x007FFFFF)) | _I32(0x3F800000))
    big = m > _F32(1.41421356)
    m = m * _F32(0.5) if big else m
    e = e + _I32(1) if big else e
    f = m - _F32(1.0)
    s = f / (_F32(2.0) + f)
    z = s * s
    z2 = z * z
    big_r = z * _fma32(_fma32(_F32(2.0 / 11.0), z, _F32(2.0 / 9.0)), z2 * z,
                       _fma32(_fma32(_F32(2.0 / 7.0), z, _F32(2.0 / 5.0)), z, _F32(2.0 / 3.0)))
    lf = f - s * (f - big_r)
    return _fma32(_F32(e), _F32(0.693147180559945309), lf)


@njit(inline="always", **_JIT)
def _erfc32(y, hi, lo):
    """erfc(y) in float32 for 0 ≤ y ≤ 4 (Cody's small-y erf and middle erfcx rationals, the
    coefficients rounded to float32), ``hi + lo = y²`` exactly (``lo = fma(y, y, −hi)``)."""
    z = y * y
    num = _p4_32(z, _F32(3.20937758913846947e3), _F32(3.77485237685302021e2),
                 _F32(1.13864154151050156e2), _F32(3.16112374387056560e0),
                 _F32(1.85777706184603153e-1))
    den = _p4_32(z, _F32(2.84423683343917062e3), _F32(1.28261652607737228e3),
                 _F32(2.44024637934444173e2), _F32(2.36012909523441209e1), _F32(1.0))
    num_s = den - y * num       # 1 − erf(y) = (den − y·num)/den
    den_s = den
    num = _p8_32(y, _F32(1.23033935479799725e3), _F32(2.05107837782607147e3),
                 _F32(1.71204761263407058e3), _F32(8.81952221241769090e2),
                 _F32(2.98635138197400131e2), _F32(6.61191906371416295e1),
                 _F32(8.88314979438837594e0), _F32(5.64188496988670089e-1),
                 _F32(2.15311535474403846e-8))
    den = _p8_32(y, _F32(1.23033935480374942e3), _F32(3.43936767414372164e3),
                 _F32(4.36261909014324716e3), _F32(3.29079923573345963e3),
                 _F32(1.62138957456669019e3), _F32(5.37181101862009858e2),
                 _F32(1.17693950891312499e2), _F32(1.57449261107098347e1), _F32(1.0))
    small = y <= _F32(0.46875)  # one division for both ranges
    num = num_s if small else num * (_exp32(-hi) * (_F32(1.0) - lo))
    return num / (den_s if small else den)


@njit(inline="always", **_JIT)
def _ndtri32(q, p, far):
    """Φ⁻¹(½ + q) in float32, ``p = min(½ + q, ½ − q)`` (normal): PPND7's central rational
    where |q| ≤ 0.425, else its tail rational of p (the second range r > 5 only when
    ``far``); both for every element (branch-free) and one division, of the selected
    numerator and denominator. Coefficients: Wichura (1988), AS241 PPND7 (relative error
    ~1e-7 as fitted; with the float32 roundings ≤ 5 float32 ulps, tested)."""
    r = _F32(0.180625) - q * q
    r2 = r * r
    num_c = q * _fma32(_fma32(_F32(59.109374720), r, _F32(159.29113202)), r2,
                       _fma32(_F32(50.434271938), r, _F32(3.3871327179)))
    den_c = _fma32(_fma32(_F32(67.187563600), r, _F32(78.757757664)), r2,
                   _fma32(_F32(17.895169469), r, _F32(1.0)))
    rt = math.sqrt(-_log32(p))
    r1 = rt - _F32(1.6)
    num_t = _fma32(_fma32(_F32(0.17023821103), r1, _F32(1.3067284816)), r1 * r1,
                   _fma32(_F32(2.7568153900), r1, _F32(1.4234372777)))
    den_t = _fma32(_fma32(_F32(0.12021132975), r1, _F32(0.73700164250)), r1, _F32(1.0))
    if far:
        r2_ = rt - _F32(5.0)
        num_f = _fma32(_fma32(_F32(0.017337203997), r2_, _F32(0.42868294337)), r2_ * r2_,
                       _fma32(_F32(3.0812263860), r2_, _F32(6.6579051150)))
        den_f = _fma32(_fma32(_F32(0.012258202635), r2_, _F32(0.24197894225)), r2_, _F32(1.0))
        near = rt <= _F32(5.0)
        num_t = num_t if near else num_f
        den_t = den_t if near else den_f
    num_t = -num_t if q < _F32(0.0) else num_t
    central = abs(q) <= _F32(0.425)
    return (num_c if central else num_t) / (den_c if central else den_t)


#: the float32-lane inversion (:func:`_rr_invert32`) takes elements with |α| < this (α < α₀:
#: no Newton tail; |α|/√2 < 3.6: erfc's small and middle ranges only; α ≥ −8.3: p's middle
#: form only); the rest go to the float64 inversion
_A32_MAX = 5.0
#: an element whose float32-lane draw has ``κ·e ≤ |T|`` (the cancellation in T − α) goes to
#: the float64 inversion: for the others the bound of note 45 reads ``|e − e*| ≤ (12 +
#: 6(κ + 1)·e*)·2⁻²⁴`` (max(|T|, |α|) < (κ + 1)·e)
_KAPPA32 = 16.0


@njit(**_JIT)
def _rr_pm32(m, al_buf, u_buf, pm_f, sg_f):
    """p of the inversion and its sign in float32 lanes: :func:`_tn_bulk_pm`'s middle form
    with ``w = erfc(|α|/√2)/2`` from :func:`_erfc32`, its inputs correctly rounded casts of
    the float64 ``|α|/√2``, u₂ and 1 − u₂ (exact in float64). Every term of p is positive, so p
    keeps a relative error of a few float32 ulps beyond that of erfc's rounded argument
    (note 45)."""
    for j in range(m):
        alpha = al_buf[j]
        u64 = u_buf[j]
        y = np.float32(abs(alpha) * _INV_SQRT2)
        hi = y * y
        lo = _fma32(y, y, -hi)
        w = _F32(0.5) * _erfc32(y, hi, lo)
        u = np.float32(u64)
        v = np.float32(1.0 - u64)
        nonneg = alpha >= 0.0
        c = w if nonneg else _F32(1.0) - w
        d = _F32(1.0) - w if nonneg else w
        p = u * c
        lo_mid = p <= _F32(0.5)
        pm_f[j] = p if lo_mid else d + v * c
        sg_f[j] = _F32(-1.0) if lo_mid else _F32(1.0)


@njit(**_JIT)
def _rr_t32(m, pm_f, sg_f, t_f, far):
    """``t_f[j] ← sign·Φ⁻¹(p)`` in float32 lanes: both rationals for every element,
    branch-free (the tails gathered, as :func:`_ndtri_gathered` does, measured no faster)."""
    for j in range(m):
        pm = pm_f[j]
        t_f[j] = sg_f[j] * _ndtri32(pm - _F32(0.5), pm, far)


@njit(**_JIT)
def _rr_invert32(m, al_buf, u_buf, sc_buf, z_b, kappa, pm_f, sg_f, t_f, idx):
    """The inversion of a float32 sweep's in-place ReLU block in float32 lanes.

    ``z_b[j] ← scale·(T − α)``, T ~ N(0, 1) | T ≥ α by inversion of u₂ (as
    :func:`_rr_invert_core`): erfc and p in float32 lanes (:func:`_rr_pm32`), Φ⁻¹(p) in float32
    (:func:`_ndtri32`: AS241's PPND7, branch-free), then
    ``T = sign·Φ⁻¹(p)`` widened to float64, clamped at α, and ``e = T − α`` in float64 (α
    exact). Elements with |α| ≥ ``_A32_MAX``, a NaN, or ``κ·e ≤ |T|`` (the cancellation in
    T − α; ``kappa = _KAPPA32``) are listed in ``idx[:n]`` for the float64 inversion (their
    ``z_b`` is then overwritten); returns n. Error against the exact quantile T* of the same
    u₂ for the others: ``|e − e*| ≤ (12 + 6·max(|T*|, |α|))·2⁻²⁴`` (design note 45). ``pm_f``,
    ``sg_f``, ``t_f`` (float32) and ``idx`` are scratch of m.
    """
    _rr_lanes32(m, al_buf, u_buf, pm_f, sg_f, t_f)
    for j in range(m):          # e = T − α in float64; the elements for float64 flagged
        t = np.float64(t_f[j])
        alpha = al_buf[j]
        t = alpha if t < alpha else t
        e = t - alpha
        z_b[j] = sc_buf[j] * e
        pm_f[j] = _F32(0.0) if (abs(alpha) < _A32_MAX) & (kappa * e > abs(t)) else _F32(1.0)
    return _flagged32(m, pm_f, idx)


@njit(**_JIT)
def _rr_lanes32(m, al_buf, u_buf, pm_f, sg_f, t_f):
    """``t_f[j] ← T = sign·Φ⁻¹(p)`` (float32) of the inversion for α = ``al_buf[j]``, u =
    ``u_buf[j]`` (float64, |α| < ``_A32_MAX``): :func:`_rr_pm32`, then :func:`_rr_t32` with
    AS241's second tail compiled in only if some p needs it."""
    _rr_pm32(m, al_buf, u_buf, pm_f, sg_f)
    far = False                 # some p below _TAIL_NEAR (r > 5: AS241's second tail)?
    for j in range(m):
        far |= pm_f[j] < _F32(_TAIL_NEAR)
    if far:
        _rr_t32(m, pm_f, sg_f, t_f, True)
    else:
        _rr_t32(m, pm_f, sg_f, t_f, False)


@njit(**_JIT)
def _flagged32(m, fl_f, idx):
    """``idx[:n] ←`` the j < m with ``fl_f[j] ≠ 0`` (float32 flags, by 64-bit masks), in
    order; returns n."""
    nf = np.int64(0)
    for b0 in range(0, m, 64):
        nb = min(64, m - b0)
        blk = fl_f[b0:b0 + nb]
        mask = np.uint64(0)
        for j in range(nb):
            mask |= np.uint64(blk[j] != _F32(0.0)) << np.uint64(j)
        nf = _push_bits(mask, np.uint64(b0), idx, nf)
    return nf


@njit(**_JIT)
def _relu_range(a64, x64, o64, a32, x32, o32, is32, lo, hi, k0, k1, p1, p2, n1, n2, sdp, sdm,
                half_log, row_len=0, row_stride=0, ctr_base=0, slope=0.0):
    """Elements lo..hi-1 in blocks of _CHUNK, organised as short branch-free passes; returns
    ``Σ(x − f(z))²`` over them (``f`` the leaky ReLU of ``slope``, ``z`` the stored draws),
    summed exactly as :func:`_sq_diff_sum` sums it (the fused latent pass's third sum, without
    a pass of its own).

    The arrays come in both dtypes (``is32`` picks ``a32, x32, o32`` over ``a64, x64, o64``;
    the others are dummies), so the function is compiled once for float32 and float64 data:
    each block is loaded into float64 buffers, processed, and stored back with the cast.

    Every element gets exactly the arithmetic of :func:`_relu_elem` (same functions, same
    operations in the same order; except the inversion of a float32 block in place, below);
    only the order in which the work is done differs. The
    element-by-element loop is latency bound and mispredicts its data-dependent branches; the
    passes below have no branches and no calls (exp and log are inlined polynomials), so LLVM
    vectorises them, and the few data-dependent steps are compact gathers/scatters.

    Counters: element ``p`` (flat, ``lo ≤ p < hi``) uses ``i = p`` when ``row_len == 0``, else
    ``i = ⌊q/row_len⌋·row_stride + (q mod row_len) + ctr_base`` with ``q = p − lo`` (``lo`` at a
    row start): the layout of the fused latent pass, keyed by the global row
    (:func:`_latent_group`).

    * Pass 1: u₂, r₊, r₋, the branches decided by the bounds of G alone ("sure": |ℓ| ≥ 38),
      α and a class per element. "Simple" elements — sure, and the chosen piece's bound so far
      out (α < −12, or α < −8.3 with u₂ ≤ ½) that the draw is the plain inversion
      T = ∓Φ⁻¹(min(u₂, 1 − u₂)) — are ~78 % of a realistic sweep (Δ = 1e-3).
    * Pass 2 (:func:`_rr_central`, in blocks that have such elements): AS241's central
      rational for the whole block, the final value of the simple elements in AS241's central
      region; pass 3: AS241's tails for the other simple ones.
    * The rest, branch not decided by the bounds: Cody's three erfcx/erf rationals side by
      side for both pieces, exp(±y²), the pieces' (q, R, hint) as :func:`_piece`, ℓ, σ(ℓ) and
      u₁, the branch (:func:`_rr_pieces`, :func:`_rr_branch`). The rest whose branch the bounds
      decided (sure, −12 ≤ α, u₂ > ½: ~3 %) skips all that and only gets erfc(|α|/√2)
      (:func:`_rr_sure`), and so do the rest elements whose branch a bracket of ℓ decides
      against u₁ (:func:`_rr_bounds`: ~91 % of them at Δ = 1e-3). Then the inversion for both (AS241's tails on the gathered elements
      that need them); Newton's tail (α ≥ 5) element by element (:func:`_rr_invert`).
    * A block without simple elements (every block at Δ ~ 1, where pass 1 decides nothing) is
      done in place: the sharp bracket of ℓ for every element (:func:`_rr_bounds_open`: a
      table of h and two short exps; it leaves ~0.5 % undecided at Δ = 2, against ~43 % for
      the grid bracket), erfc(|α|/√2) of every element (:func:`_rr_erfc`), the exact ℓ
      (:func:`_rr_pieces`, :func:`_rr_branch`) for the undecided only, their results put back
      in place, and the inversion over the block (:func:`_rr_invert_core`): no compaction,
      gather or scatter of the decided elements. For float32 data the inversion of such a block
      runs in float32 lanes (:func:`_rr_invert32`, no :func:`_rr_erfc`; the same branches,
      draws within the bound of design note 45), the elements it leaves (|α| ≥ 5, NaN,
      cancellations in T − α: ~2 % at Δ = 2) through :func:`_rr_invert` as before.
    """
    c2 = 2 * _CHUNK
    u_buf = np.empty(_CHUNK)
    pm_buf = np.empty(_CHUNK)
    al_buf = np.empty(_CHUNK)
    sc_buf = np.empty(_CHUNK)
    sg_buf = np.empty(_CHUNK)
    fl_buf = np.empty(_CHUNK, dtype=np.int8)
    sure_buf = np.empty(_CHUNK, dtype=np.int8)
    dec_b = np.empty(_CHUNK, dtype=np.int8)   # rest: branch by ℓ's bracket (±1) or 0
    a_r = np.empty(_CHUNK)      # rest: a, x gathered (_rr_bounds)
    x_r = np.empty(_CHUNK)
    idx_tail = np.empty(_CHUNK, dtype=np.uint64)    # unsigned: gathers by them need no
    idx_rest = np.empty(_CHUNK, dtype=np.uint64)    # negative-index wrap (_NONNEG_NOTE)
    idx_sure = np.empty(_CHUNK, dtype=np.uint64)
    pm_r = np.empty(_CHUNK)     # rest: pm and sign of the inversion
    sg_r = np.empty(_CHUNK)
    ct_b = np.empty(_CHUNK)     # compact buffers of the tails: pm, scale, α, sign
    cs_b = np.empty(_CHUNK)
    ca_b = np.empty(_CHUNK)
    cg_b = np.empty(_CHUNK)
    r_b = np.empty(c2)          # rest: r₊ in [0, k), r₋ in [k, 2k)
    es_b = np.empty(c2)         # erf(y), Cody's small-y rational
    xn_b = np.empty(c2)         # erfcx(y), Cody's y > 0.46875 rationals
    ex_b = np.empty(c2)         # exp(±y²)
    big_b = np.empty(c2)        # R of the piece
    h_b = np.empty(c2)          # hint of the piece
    q_b = np.empty(c2)          # q of the piece
    sr_b = np.empty(_CHUNK)     # rest: sure flag, u₂, counter, α, scale, hint, erfc(|α|/√2)
    ur_b = np.empty(_CHUNK)
    ir_b = np.empty(_CHUNK, dtype=np.uint64)
    ar_b = np.empty(_CHUNK)
    sc_r = np.empty(_CHUNK)
    hr_b = np.empty(_CHUNK)
    ec_b = np.empty(_CHUNK)
    res_b = np.empty(_CHUNK)
    hf_b = np.empty(_CHUNK)     # a block in place: hint, erfc(|α|/√2) of every element
    ef_b = np.empty(_CHUNK)
    a_b = np.empty(_CHUNK)
    x_b = np.empty(_CHUNK)
    z_b = np.empty(_CHUNK)
    cn_b = np.empty(_CHUNK, dtype=np.uint64)
    e_b = np.empty(_CHUNK)      # x − f(z) of the stored draws
    f32_b = np.empty((3, _CHUNK), dtype=np.float32)    # float32 lanes (_rr_invert32)
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    m8 = ((hi - lo) // 8) * 8   # the elements _sq_diff_sum sums in its eight lanes
    m = 0
    jm = 0
    row = 0
    col = 0
    contiguous = row_len == 0 or row_stride == row_len
    base = 0 if row_len == 0 else ctr_base - lo
    for start in range(lo, hi, _CHUNK):
        m = min(_CHUNK, hi - start)
        ks = np.int64(0)        # sure-but-not-simple elements of the block (_rr_sure)
        if contiguous:          # consecutive counters (one chain, or the plain ReLU kernel)
            for j in range(m):
                cn_b[j] = np.uint64(base + start + j)
        else:
            for j in range(m):
                cn_b[j] = np.uint64(row * row_stride + col + ctr_base)
                col += 1
                if col == row_len:
                    col = 0
                    row += 1
        if is32:                # views indexed from 0 (see _NONNEG_NOTE)
            a_v = a32[start:start + m]
            x_v = x32[start:start + m]
            for j in range(m):
                a_b[j] = a_v[j]
                x_b[j] = x_v[j]
        else:
            a_v = a64[start:start + m]
            x_v = x64[start:start + m]
            for j in range(m):
                a_b[j] = a_v[j]
                x_b[j] = x_v[j]
        # no element sure by the bounds of G (hence none simple: every block at Δ ~ 1)? The
        # first 64 counted first: blocks at small Δ have sure elements among them
        m0 = min(m, 64)
        ns = _rr_nsure(m0, a_b, x_b, p1, p2, n1, n2, half_log)
        if ns == 0 and m > m0:
            ns = _rr_nsure(m - m0, a_b[m0:m], x_b[m0:m], p1, p2, n1, n2, half_log)
        nsimple = np.int64(0)
        if ns == 0:             # pass 1 would only give u₂ and zero flags
            _rr_u2(m, cn_b, k0, k1, u_buf, sure_buf)
        else:
            _rr_pass1(m, cn_b, a_b, x_b, k0, k1, p1, p2, n1, n2, sdp, sdm, half_log, u_buf,
                      pm_buf, al_buf, sc_buf, sg_buf, fl_buf, sure_buf)
            for j in range(m):  # counted first (vectorised): no simple element?
                nsimple += (fl_buf[j] == 1) | (fl_buf[j] == 2)
        if nsimple == 0:        # the block in place: no compaction, gather or scatter (pass 1's
            #                     sure elements are decided alike by the sharp bracket, or go
            #                     on to _rr_branch with their sure flag)
            _rr_bounds_open(m, a_b, x_b, cn_b, k0, k1, p1, p2, n1, n2, sdp, sdm, half_log, dec_b,
                            al_buf, sc_buf)
            if not is32:            # (float32: erfc in float32 lanes, _rr_invert32)
                _rr_erfc(m, al_buf, hf_b, ef_b)     # (the undecided ones' are replaced below)
            ku = np.int64(0)
            for j in range(m):
                if dec_b[j] == 0:   # rare (~0.5 % at Δ = 2): a well-predicted branch
                    idx_rest[ku] = j
                    ku += 1
            if ku > 0:              # the exact ℓ for the undecided, results put in place
                _rr_pieces(ku, idx_rest, a_b, x_b, sure_buf, u_buf, cn_b, p1, p2, n1, n2, r_b,
                           sr_b, ur_b, ir_b, es_b, xn_b, ex_b, big_b, h_b, q_b)
                _rr_branch(ku, k0, k1, q_b, big_b, h_b, r_b, sr_b, ir_b, half_log, sdp, sdm,
                           ar_b, sc_r, hr_b, ec_b)
                for jj in range(ku):
                    j = idx_rest[jj]
                    al_buf[j] = ar_b[jj]
                    sc_buf[j] = sc_r[jj]
                    hf_b[j] = hr_b[jj]
                    ef_b[j] = ec_b[jj]
            if is32:                # float32 lanes; the elements they leave: float64 (note 45)
                nf = _rr_invert32(m, al_buf, u_buf, sc_buf, z_b, _KAPPA32, f32_b[0], f32_b[1],
                                  f32_b[2], idx_tail)
                if nf > 0:          # hint and erfc recomputed (-1): the same values
                    for jj in range(nf):
                        j = idx_tail[jj]
                        ar_b[jj] = al_buf[j]
                        ur_b[jj] = u_buf[j]
                        sc_r[jj] = sc_buf[j]
                        hr_b[jj] = -1.0
                        ec_b[jj] = -1.0
                    _rr_invert(nf, idx_tail, ar_b, ur_b, hr_b, ec_b, sc_r, res_b, z_b, pm_r, sg_r,
                               idx_sure, ct_b)
            else:
                _rr_invert_core(m, al_buf, u_buf, hf_b, ef_b, sc_buf, z_b, pm_r, sg_r, idx_tail,
                                ct_b)
        else:
            ntail = np.int64(0)     # not the literal 0: typing a call with a Literal[int](0) count
            k = np.int64(0)         # compiles the callee once more for that literal type
            for j in range(m):
                f = fl_buf[j]
                idx_tail[ntail] = j
                ntail += f == 2
                idx_rest[k] = j
                k += f == 0
                idx_sure[ks] = j
                ks += f == 3
            if ntail + k + ks < m:  # simple elements in AS241's central region
                _rr_central(m, pm_buf, al_buf, sc_buf, sg_buf, z_b)
            if ntail > 0:
                _rr_tails(ntail, idx_tail, pm_buf, sc_buf, al_buf, sg_buf, ct_b, cs_b, ca_b, cg_b,
                          res_b, z_b)
            if k > 0:               # the rest: branch by ℓ's bracket where it decides
                _rr_bounds(k, idx_rest, a_b, x_b, cn_b, k0, k1, p1, p2, n1, n2, sdp, sdm, half_log,
                           dec_b, al_buf, sc_buf, a_r, x_r, ir_b, ar_b, sc_r)
                ku = np.int64(0)
                for jj in range(k):
                    j = idx_rest[jj]
                    dj = dec_b[jj]
                    idx_rest[ku] = j        # ku ≤ jj: compaction in place
                    ku += dj == 0
                    idx_sure[ks] = j
                    ks += dj != 0
                k = ku
            if k > 0:
                _rr_pieces(k, idx_rest, a_b, x_b, sure_buf, u_buf, cn_b, p1, p2, n1, n2, r_b, sr_b,
                           ur_b, ir_b, es_b, xn_b, ex_b, big_b, h_b, q_b)
                _rr_branch(k, k0, k1, q_b, big_b, h_b, r_b, sr_b, ir_b, half_log, sdp, sdm, ar_b,
                           sc_r, hr_b, ec_b)
            if ks > 0:
                for jj in range(ks):
                    idx_rest[k + jj] = idx_sure[jj]
                _rr_sure(k, ks, idx_rest, al_buf, u_buf, sc_buf, ar_b, ur_b, sc_r, hr_b, ec_b)
                k += ks
            if k > 0:
                _rr_invert(k, idx_rest, ar_b, ur_b, hr_b, ec_b, sc_r, res_b, z_b, pm_r, sg_r, idx_tail,
                           ct_b)
        # store; the float32 cast keeps the sign of every draw (+0.0 for the positive piece,
        # -0.0 for the negative one), and is clamped to it again all the same (selects, no
        # branches: the sign is data-dependent, so a branch would mispredict half the time);
        # with x − f(z) of the stored draw, for Σ(x − f(z))²
        if is32:
            o_v = o32[start:start + m]
            for j in range(m):
                z = z_b[j]
                zc = np.float32(z)
                zp = np.float32(0.0) if zc < 0.0 else zc
                zn = np.float32(-0.0) if zc > 0.0 else zc
                zs = zp if math.copysign(1.0, z) > 0.0 else zn
                o_v[j] = zs
                zd = np.float64(zs)
                e_b[j] = x_b[j] - (zd if zd >= 0.0 else slope * zd)
        else:
            o_v = o64[start:start + m]
            for j in range(m):
                z = z_b[j]
                o_v[j] = z
                e_b[j] = x_b[j] - (z if z >= 0.0 else slope * z)
        # Σ(x − f(z))²: lane q mod 8 for q = start − lo + j < m8 (blocks start at multiples of
        # 8 from lo), in order; the last < 8 elements after the lanes are joined
        jm = min(m, m8 - (start - lo))
        j = 0
        while j + 8 <= jm:
            s0 += e_b[j] * e_b[j]
            s1 += e_b[j + 1] * e_b[j + 1]
            s2 += e_b[j + 2] * e_b[j + 2]
            s3 += e_b[j + 3] * e_b[j + 3]
            s4 += e_b[j + 4] * e_b[j + 4]
            s5 += e_b[j + 5] * e_b[j + 5]
            s6 += e_b[j + 6] * e_b[j + 6]
            s7 += e_b[j + 7] * e_b[j + 7]
            j += 8
    s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    for j in range(jm, m):              # the last block's remainder
        s += e_b[j] * e_b[j]
    return s


@njit(parallel=True, **_JIT)
def _relu_kernel(a64, x64, o64, a32, x32, o32, is32, k0, k1, p1, p2, n1, n2, sdp, sdm, half_log,
                 ngroups):
    n = o32.shape[0] if is32 else o64.shape[0]
    nchunks = (n + _CHUNK - 1) // _CHUNK
    ngroups = max(1, min(nchunks, ngroups))
    for g in prange(ngroups):
        lo = (g * nchunks // ngroups) * _CHUNK
        hi = min(((g + 1) * nchunks // ngroups) * _CHUNK, n)
        _relu_range(a64, x64, o64, a32, x32, o32, is32, lo, hi, k0, k1, p1, p2, n1, n2, sdp, sdm,
                    half_log)


@njit(inline="always", **_JIT)
def _erfc_pos_sel(y):
    """erfc(y), y ≥ 0: :func:`_erfc_pos` with its ranges side by side (vectorisable)."""
    small = 1.0 - _erf_small(y)
    xn = _erfcx_mid(y) if y <= 4.0 else _erfcx_big(y)
    big = xn * _exp_neg_sq(y)
    return small if y <= 0.46875 else (0.0 if y >= 27.3 else big)


@njit(inline="always", **_JIT)
def _erfc_pos_mid(y):
    """:func:`_erfc_pos_sel` for y ≤ 4 (its y > 4 rational left out: the same value there)."""
    small = 1.0 - _erf_small(y)
    big = _erfcx_mid(y) * _exp_neg_sq(y)
    return small if y <= 0.46875 else (0.0 if y >= 27.3 else big)


@njit(inline="always", **_JIT)
def _tn_core(al_b, u_b, z_b, cnt, ec_b, pm_b, idx, t_b):
    """The inversion of :func:`_tn_block` for ``α = al_b[j]``, ``u = u_b[j]`` (``j < cnt``):
    ``z_b[j] ← Φ⁻¹(pm)`` and ``ec_b[j] ←`` its sign (:func:`_tn_bulk_pm`, with
    erfc(|α|/√2) of :func:`_erfc_pos_sel`): erfc's middle range for every element and its
    other ranges on the gathered rest, AS241's central rational for every element and its
    tails on the gathered ~15 % (:func:`_ndtri_gathered`)."""
    # erfc(|α|/√2): the middle range for all, the small and large ranges gathered
    for j in range(cnt):        # (the heavy loops apart from the compactions: they vectorise)
        y = abs(al_b[j]) * _INV_SQRT2
        ec_b[j] = _erfcx_mid(y) * _exp_neg_sq(y)
    ne = np.int64(0)            # not a literal 0 (see _rr_invert)
    for j in range(cnt):
        y = abs(al_b[j]) * _INV_SQRT2
        idx[ne] = np.uint64(j)
        ne += (y <= 0.46875) | (y > 4.0)
    for jj in range(ne):
        j = idx[jj]
        ec_b[j] = _erfc_pos_sel(abs(al_b[j]) * _INV_SQRT2)
    # p of the inversion, its sign, and Φ⁻¹(p): central rational for all, tails gathered
    for j in range(cnt):
        pm, sign = _tn_bulk_pm(al_b[j], u_b[j], ec_b[j])
        pm_b[j] = pm
        ec_b[j] = sign
    _ndtri_gathered(pm_b, z_b, idx, t_b, cnt)


@njit(inline="always", **_JIT)
def _tn_block(m_b, s_b, b_b, g_b, al_b, u_b, z_b, cnt, c0, k0, k1, ec_b, pm_b, idx, t_b):
    """Passes 2–5 of :func:`_tn_range` on one block already loaded into float64 buffers
    (mean ``m_b``, sd ``s_b``, bound ``b_b``, side ``g_b``: −1 from above, +1 from below):
    ``z_b[j]`` ← the draw with counter ``c0 + j``, clamped to the bound in float64.

    Each element gets the arithmetic of :func:`_erfc_pos_sel`, :func:`_tn_bulk_pm` and
    :func:`_ndtri`, but each range's formula is evaluated only where it is used: erfc's middle
    range (``0.46875 < y ≤ 4``, most elements) for every element, the others on the gathered
    remainder; AS241's central rational for every element and its tail rationals on the
    gathered ~15 % outside it (as :func:`_row_normals`). Scratch: ``ec_b``, ``pm_b``, ``t_b``
    (float64) and ``idx`` (``uint64``: no negative-index wrap on the gathers, see
    _NONNEG_NOTE), each of at least ``cnt``.
    """
    for j in range(cnt):
        u_b[j] = _uniform(k0, k1, c0 + np.uint64(j))
        s = s_b[j]
        diff = b_b[j] - m_b[j]
        al_b[j] = (-diff if g_b[j] < 0.0 else diff) / s
    _tn_core(al_b, u_b, z_b, cnt, ec_b, pm_b, idx, t_b)
    for j in range(cnt):
        alpha = al_b[j]
        m = m_b[j]
        s = s_b[j]
        b = b_b[j]
        g = g_b[j]
        t = ec_b[j] * z_b[j]
        if t < alpha:
            t = alpha
        gs = g * s
        z = m + gs * t if alpha < 0.0 else b + gs * (t - alpha)
        z_b[j] = z
    nx = np.int64(0)            # counted first (vectorised): the loop with the call is rare
    for j in range(cnt):
        nx += (not (s_b[j] > 0.0)) | (al_b[j] >= _ALPHA0)
    if nx > 0:
        for j in range(cnt):
            s = s_b[j]
            if not (s > 0.0):            # sd ≤ 0 (or NaN): the sd → 0 limit
                z_b[j] = m_b[j]
            elif al_b[j] >= _ALPHA0:
                t, e = _std_tn(al_b[j], u_b[j], -1.0)
                z_b[j] = b_b[j] + (g_b[j] * s) * e
    for j in range(cnt):
        z = z_b[j]
        b = b_b[j]
        z_b[j] = min(z, b) if g_b[j] < 0.0 else max(z, b)


@njit(inline="always", **_JIT)
def _tn_unit_alpha(m_b, b_b, g, al_b, u_b, cnt, c0, k0, k1):
    """Pass 1 of :func:`_tn_block_unit`: ``u_b[j]`` (counter ``c0 + j``) and
    ``al_b[j] = ±(b − m)`` (``g`` = ±1.0)."""
    for j in range(cnt):
        u_b[j] = _uniform(k0, k1, c0 + np.uint64(j))
        diff = b_b[j] - m_b[j]
        al_b[j] = -diff if g < 0.0 else diff


@njit(inline="always", **_JIT)
def _tn_unit_finish(m_b, b_b, g, al_b, u_b, z_b, cnt, ec_b):
    """The last passes of :func:`_tn_block_unit`: T = ``ec_b[j]·z_b[j]`` clamped at α, the draw
    ``m + g·T`` (α < 0) or ``b + g·(T − α)``, Newton's tail for α ≥ α₀, clamped to the bound."""
    for j in range(cnt):
        alpha = al_b[j]
        t = ec_b[j] * z_b[j]
        if t < alpha:
            t = alpha
        z_b[j] = m_b[j] + g * t if alpha < 0.0 else b_b[j] + g * (t - alpha)
    nx = np.int64(0)            # counted first (vectorised): the loop with the call is rare
    for j in range(cnt):
        nx += al_b[j] >= _ALPHA0
    if nx > 0:
        for j in range(cnt):
            if al_b[j] >= _ALPHA0:
                t, e = _std_tn(al_b[j], u_b[j], -1.0)
                z_b[j] = b_b[j] + g * e
    for j in range(cnt):
        z = z_b[j]
        b = b_b[j]
        z_b[j] = min(z, b) if g < 0.0 else max(z, b)


@njit(inline="always", **_JIT)
def _tn_block_unit(m_b, b_b, g, al_b, u_b, z_b, cnt, c0, k0, k1, ec_b, pm_b, idx, t_b):
    """:func:`_tn_block` for sd 1 and one side ``g`` (±1.0) for the whole block (the
    multinomial-probit utilities): no sd or side buffers, no division. The same values bit for
    bit: with ``s = 1`` and ``g = ±1`` its ``(±diff)/s``, ``g·s`` and ``(g·s)·e`` are exact
    (division by 1, multiplication by ±1), so each element gets the same numbers in the same
    operations otherwise."""
    _tn_unit_alpha(m_b, b_b, g, al_b, u_b, cnt, c0, k0, k1)
    _tn_core(al_b, u_b, z_b, cnt, ec_b, pm_b, idx, t_b)
    _tn_unit_finish(m_b, b_b, g, al_b, u_b, z_b, cnt, ec_b)


@njit(**_JIT)
def _tn_invert32(cnt, al_b, u_b, z_b, ec_b, kappa, pm_f, sg_f, t_f, idx):
    """The inversion of :func:`_tn_block_unit` in float32 lanes (a float32 sweep's
    utilities; design note 47): ``z_b[j] ← T``, ``ec_b[j] ← 1`` with T = sign·Φ⁻¹(p) from
    :func:`_rr_lanes32` (note 45's erfc, p and Φ⁻¹ in float32 lanes) widened to float64 and
    clamped at α. Elements with |α| ≥ ``_A32_MAX``, a NaN, or ``κ·(T − α) ≤ |T|`` (the
    cancellation in T − α, ``kappa = _KAPPA32``; float64) are listed in ``idx[:n]`` for the
    float64 inversion; returns n. For the others, against the exact quantile T* of the same u:
    ``|T − T*| ≤ (12 + 6·max(|T*|, |α|))·2⁻²⁴`` and ``≤ (12 + 6(κ + 1)·(T* − α))·2⁻²⁴``
    (note 45's bound: the same T). ``pm_f``, ``sg_f``, ``t_f`` (float32) and ``idx`` are
    scratch of cnt."""
    _rr_lanes32(cnt, al_b, u_b, pm_f, sg_f, t_f)
    for j in range(cnt):
        t = np.float64(t_f[j])
        alpha = al_b[j]
        t = alpha if t < alpha else t
        z_b[j] = t
        ec_b[j] = 1.0
        pm_f[j] = (_F32(0.0) if (abs(alpha) < _A32_MAX) & (kappa * (t - alpha) > abs(t))
                   else _F32(1.0))
    return _flagged32(cnt, pm_f, idx)


@njit(inline="always", **_JIT)
def _tn_block_unit32(m_b, b_b, g, al_b, u_b, z_b, cnt, c0, k0, k1, ec_b, pm_b, idx, t_b, f32_b,
                     ar_b, ur_b, zr_b, er_b, ir_b):
    """:func:`_tn_block_unit` for a float32 sweep (design note 47): the inversion in float32
    lanes (:func:`_tn_invert32`); the elements it flags (|α| ≥ 5, NaN, the cancellation in
    T − α) through :func:`_tn_core` on their gathered α, u (``ar_b``, ``ur_b``; results
    ``zr_b``, ``er_b``; ``ir_b`` its index scratch): the same values as the float64 block, bit
    for bit, for those. Every other step is :func:`_tn_block_unit`'s. ``f32_b``: (3, ≥ cnt)
    float32 scratch."""
    _tn_unit_alpha(m_b, b_b, g, al_b, u_b, cnt, c0, k0, k1)
    nf = _tn_invert32(cnt, al_b, u_b, z_b, ec_b, _KAPPA32, f32_b[0], f32_b[1], f32_b[2], idx)
    if nf > 0:
        for jj in range(nf):
            j = idx[jj]
            ar_b[jj] = al_b[j]
            ur_b[jj] = u_b[j]
        _tn_core(ar_b, ur_b, zr_b, nf, er_b, pm_b, ir_b, t_b)
        for jj in range(nf):
            j = idx[jj]
            z_b[j] = zr_b[jj]
            ec_b[j] = er_b[jj]
    _tn_unit_finish(m_b, b_b, g, al_b, u_b, z_b, cnt, ec_b)


@njit(inline="always", **_JIT)
def _tn_load(dst, src, start, cnt, step):
    """``dst[j] = src[(start + j)·step]`` for ``j < cnt``, ``step`` 0 (a broadcast scalar) or 1,
    through a view indexed from 0 (see _NONNEG_NOTE)."""
    if step:
        v = src[start:start + cnt]
        for j in range(cnt):
            dst[j] = v[j]
    else:
        v0 = src[0]
        for j in range(cnt):
            dst[j] = v0


@njit(**_JIT)
def _tn_range(m64, s64, b64, o64, m32, s32, b32, o32, is32, ms, ss, bs, upper, us, lo, hi, k0, k1):
    """Truncated normals lo..hi-1 in blocks of _CHUNK (both dtypes, as :func:`_relu_range`).

    Pass 1 loads a block into float64 buffers; then (:func:`_tn_block`) α is formed, pass 2
    (vectorised) does the inversion for every element (erfc and AS241's ranges side by side)
    with exactly the arithmetic of :func:`_std_tn`; Newton's tail (α ≥ 5) and sd ≤ 0 then run
    element by element; the store casts and clamps to the bound in the output dtype.
    """
    m_b = np.empty(_CHUNK)
    s_b = np.empty(_CHUNK)
    b_b = np.empty(_CHUNK)
    g_b = np.empty(_CHUNK)      # -1 truncated from above, +1 from below
    al_b = np.empty(_CHUNK)
    u_b = np.empty(_CHUNK)
    z_b = np.empty(_CHUNK)
    ec_b = np.empty(_CHUNK)
    pm_b = np.empty(_CHUNK)
    t_b = np.empty(_CHUNK)
    idx = np.empty(_CHUNK, dtype=np.uint64)
    for start in range(lo, hi, _CHUNK):
        cnt = min(_CHUNK, hi - start)
        if is32:
            _tn_load(m_b, m32, start, cnt, ms)
            _tn_load(s_b, s32, start, cnt, ss)
            _tn_load(b_b, b32, start, cnt, bs)
        else:
            _tn_load(m_b, m64, start, cnt, ms)
            _tn_load(s_b, s64, start, cnt, ss)
            _tn_load(b_b, b64, start, cnt, bs)
        if us:
            up_v = upper[start:start + cnt]     # views indexed from 0 (see _NONNEG_NOTE)
            for j in range(cnt):
                g_b[j] = -1.0 if up_v[j] else 1.0
        else:
            g0 = -1.0 if upper[0] else 1.0
            for j in range(cnt):
                g_b[j] = g0
        _tn_block(m_b, s_b, b_b, g_b, al_b, u_b, z_b, cnt, np.uint64(start), k0, k1, ec_b, pm_b,
                  idx, t_b)
        if is32:
            o_v = o32[start:start + cnt]
            if bs:
                b_v = b32[start:start + cnt]
                for j in range(cnt):
                    bo = b_v[j]
                    zc = np.float32(z_b[j])
                    o_v[j] = min(zc, bo) if g_b[j] < 0.0 else max(zc, bo)
            else:
                bo = b32[0]
                for j in range(cnt):
                    zc = np.float32(z_b[j])
                    o_v[j] = min(zc, bo) if g_b[j] < 0.0 else max(zc, bo)
        else:
            o_v64 = o64[start:start + cnt]
            for j in range(cnt):
                o_v64[j] = z_b[j]


@njit(parallel=True, **_JIT)
def _tn_kernel(m64, s64, b64, o64, m32, s32, b32, o32, is32, ms, ss, bs, upper, us, k0, k1,
               ngroups):
    n = o32.shape[0] if is32 else o64.shape[0]
    nchunks = (n + _CHUNK - 1) // _CHUNK
    ngroups = max(1, min(nchunks, ngroups))
    for g in prange(ngroups):
        lo = (g * nchunks // ngroups) * _CHUNK
        hi = min(((g + 1) * nchunks // ngroups) * _CHUNK, n)
        _tn_range(m64, s64, b64, o64, m32, s32, b32, o32, is32, ms, ss, bs, upper, us, lo, hi,
                  k0, k1)


#: rows per block of the multinomial-probit utility kernel (its 10-class blocks fill _CHUNK)
_MNP_ROWS = 256


@njit(**_JIT)
def _mnp_range(a64, u64, o64, a32, u32, o32, is32, lab, lab_cs, n, K, lo, hi, ky0, ky1, ko0, ko1):
    """Multinomial-probit utilities of the flat rows ``lo..hi-1`` (row ``r`` = chain ``r // n``,
    data row ``r % n``; ``K`` classes; labels ``lab[r]`` if ``lab_cs`` else ``lab[r % n]``).

    The two exact sub-steps of :func:`blockbayes.kernels.multinomial_utilities`, per block of
    rows: ``u_y ~ TN(a_y, 1; (max_{c≠y} u_c, ∞))`` with counter ``r`` of key ``(ky0, ky1)``,
    then ``u_c ~ TN(a_c, 1; (−∞, u_y))`` with counter ``r·K + c`` of key ``(ko0, ko1)`` for
    every ``c`` (the draw at ``c = y`` is made and discarded, as by the composed form), each
    through :func:`_tn_block_unit` (:func:`_tn_block` at sd 1 and one side) with the loads and
    stores of :func:`_tn_range`: the results are those of two :func:`truncated_normal` calls
    bit for bit.
    """
    R = _MNP_ROWS
    m_b = np.empty(R * K)
    b_b = np.empty(R * K)
    al_b = np.empty(R * K)
    u_b = np.empty(R * K)
    z_b = np.empty(R * K)
    ec_b = np.empty(R * K)
    pm_b = np.empty(R * K)
    t_b = np.empty(R * K)
    idx = np.empty(R * K, dtype=np.uint64)
    f32_b = np.empty((3, R * K), dtype=np.float32)   # float32 lanes (_tn_block_unit32)
    ar_b = np.empty(R * K)
    ur_b = np.empty(R * K)
    zr_b = np.empty(R * K)
    er_b = np.empty(R * K)
    ir_b = np.empty(R * K, dtype=np.uint64)
    y_b = np.empty(R, dtype=np.int64)
    uy64 = np.empty(R)
    uy32 = np.empty(R, dtype=np.float32)
    for start in range(lo, hi, R):
        cnt = min(R, hi - start)
        e0, e1 = start * K, (start + cnt) * K     # the block's rows as 2-D views indexed from
        if is32:                                  # 0 (see _NONNEG_NOTE)
            a2_32 = a32[e0:e1].reshape((cnt, K))
            u2_32 = u32[e0:e1].reshape((cnt, K))
        else:
            a2_64 = a64[e0:e1].reshape((cnt, K))
            u2_64 = u64[e0:e1].reshape((cnt, K))
        lab_v = lab[start:start + cnt] if lab_cs else lab
        # sub-step 1: the label's utility above the largest other one
        for q in range(cnt):
            y = lab_v[q] if lab_cs else lab[(start + q) % n]
            y_b[q] = y
            if is32:
                ur32 = u2_32[q]
                mx32 = np.float32(-np.inf)
                for c in range(K):
                    if c != y:
                        v = ur32[c]
                        mx32 = v if (v > mx32 or v != v) else mx32
                m_b[q] = a2_32[q, y]
                b_b[q] = mx32
            else:
                ur64 = u2_64[q]
                mx = -np.inf
                for c in range(K):
                    if c != y:
                        v = ur64[c]
                        mx = v if (v > mx or v != v) else mx
                m_b[q] = a2_64[q, y]
                b_b[q] = mx
        if is32:
            _tn_block_unit32(m_b, b_b, 1.0, al_b, u_b, z_b, cnt, np.uint64(start), ky0, ky1, ec_b,
                             pm_b, idx, t_b, f32_b, ar_b, ur_b, zr_b, er_b, ir_b)
        else:
            _tn_block_unit(m_b, b_b, 1.0, al_b, u_b, z_b, cnt, np.uint64(start), ky0, ky1, ec_b,
                           pm_b, idx, t_b)
        for q in range(cnt):
            if is32:
                zc = np.float32(z_b[q])
                bo = np.float32(b_b[q])
                uy32[q] = max(zc, bo)
                uy64[q] = uy32[q]
            else:
                uy64[q] = z_b[q]
        # sub-step 2: every class below the label's new utility
        ck = cnt * K
        if is32:
            av32 = a32[e0:e1]
            for j in range(ck):
                m_b[j] = av32[j]
        else:
            av64 = a64[e0:e1]
            for j in range(ck):
                m_b[j] = av64[j]
        b2 = b_b[:ck].reshape((cnt, K))
        for q in range(cnt):
            bq = uy64[q]
            b2q = b2[q]
            for c in range(K):
                b2q[c] = bq
        if is32:
            _tn_block_unit32(m_b, b_b, -1.0, al_b, u_b, z_b, ck, np.uint64(e0), ko0, ko1, ec_b,
                             pm_b, idx, t_b, f32_b, ar_b, ur_b, zr_b, er_b, ir_b)
        else:
            _tn_block_unit(m_b, b_b, -1.0, al_b, u_b, z_b, ck, np.uint64(e0), ko0, ko1, ec_b,
                           pm_b, idx, t_b)
        z2 = z_b[:ck].reshape((cnt, K))
        if is32:
            o2_32 = o32[e0:e1].reshape((cnt, K))
            for q in range(cnt):
                y = y_b[q]
                bo = uy32[q]
                zq = z2[q]
                oq = o2_32[q]
                for c in range(K):
                    zc = np.float32(zq[c])
                    oq[c] = bo if c == y else min(zc, bo)
        else:
            o2_64 = o64[e0:e1].reshape((cnt, K))
            for q in range(cnt):
                y = y_b[q]
                bq = uy64[q]
                zq = z2[q]
                oq = o2_64[q]
                for c in range(K):
                    oq[c] = bq if c == y else zq[c]


@njit(parallel=True, **_JIT)
def _mnp_kernel(a64, u64, o64, a32, u32, o32, is32, lab, lab_cs, n, K, rows, ky0, ky1, ko0, ko1,
                ngroups):
    nblocks = (rows + _MNP_ROWS - 1) // _MNP_ROWS
    ngroups = max(1, min(nblocks, ngroups))
    for g in prange(ngroups):
        lo = (g * nblocks // ngroups) * _MNP_ROWS
        hi = min(((g + 1) * nblocks // ngroups) * _MNP_ROWS, rows)
        _mnp_range(a64, u64, o64, a32, u32, o32, is32, lab, lab_cs, n, K, lo, hi, ky0, ky1, ko0,
                   ko1)


# --------------------------------------------------------------------------------------------
# the fused latent pass of one hidden layer: X^l and Z^l in one pass over the rows
# --------------------------------------------------------------------------------------------

_XS = np.uint64(C.STREAM_X)
_ES = np.uint64(C.STREAM_E)


@njit(**_JIT)
def _chol_lower(M, L):
    """``L`` ← lower Cholesky factor of the SPD matrix ``M`` (float64); NaN if not PD."""
    m = M.shape[0]
    for j in range(m):
        s = M[j, j]
        for p in range(j):
            s -= L[j, p] * L[j, p]
        if not (s > 0.0):
            L[:, :] = np.nan            # propagates into the state; the run's check names it
            return
        ljj = math.sqrt(s)
        L[j, j] = ljj
        for i in range(j + 1, m):
            t = M[i, j]
            for p in range(j):
                t -= L[i, p] * L[j, p]
            L[i, j] = t / ljj
        for i in range(j):
            L[i, j] = 0.0


@njit(**_JIT)
def _latent_factors(W, dnext, dxs, method):
    """Per chain: Cholesky of ``S = Δ_X Ŵ Ŵ^⊤ + Δ' I`` (method 0, k × k) or of
    ``Q = I + (Δ_X/Δ') Ŵ^⊤ Ŵ`` (method 1, d × d). ``W``: (C, k, d + 1) float64; ``dnext``,
    ``dxs``: (C,) the chains' ``Δ'`` and ``Δ_X``."""
    nc, k, d1 = W.shape
    d = d1 - 1
    m = k if method == 0 else d
    F = np.zeros((nc, m, m))
    M = np.empty((m, m))
    for c in range(nc):
        dx = dxs[c]
        if method == 0:
            for a in range(k):
                for b in range(a + 1):
                    s = 0.0
                    for j in range(d):
                        s += W[c, a, j] * W[c, b, j]
                    s *= dx
                    if a == b:
                        s += dnext[c]
                    M[a, b] = s
                    M[b, a] = s
        else:
            ratio = dx / dnext[c]
            for a in range(d):
                for b in range(a + 1):
                    s = 0.0
                    for q in range(k):
                        s += W[c, q, a] * W[c, q, b]
                    s *= ratio
                    if a == b:
                        s += 1.0
                    M[a, b] = s
                    M[b, a] = s
        _chol_lower(M, F[c])
    return F


@njit(**_JIT)
def _row_uniforms(u, m, k0, k1):
    """``u[i] = u(i)`` for ``i < m`` (the counter hash alone: the benchmarks' RNG floor)."""
    for i in range(m):
        u[i] = _uniform(k0, k1, np.uint64(i))


@njit(**_JIT)
def _row_normals(nb, tb, idx, nrows, d, k0, k1, cb0, row_stride):
    """``nb[r·d + j] = Φ⁻¹(u(cb0 + r·row_stride + j))`` (AS241 as :func:`_ndtri`: the ~15 %
    of uniforms outside the central region are gathered into ``tb`` and go through the tail
    rational there, contiguously (vectorised); then the central rational for every element in
    place, and the tails scattered back). ``tb`` (float64) and ``idx`` (``uint64``: the gathers
    through it need no negative-index wrap, see _NONNEG_NOTE) are scratch of ``nrows·d``."""
    m = nrows * d
    if row_stride == d:         # consecutive counters (one chain): one long vectorised loop
        for q in range(m):
            nb[q] = _uniform(k0, k1, cb0 + np.uint64(q))
    else:
        n2 = nb[:m].reshape((nrows, d))     # row views indexed from 0 (see _NONNEG_NOTE)
        for r in range(nrows):
            cb = cb0 + np.uint64(r * row_stride)
            nr = n2[r]
            for j in range(d):
                nr[j] = _uniform(k0, k1, cb + np.uint64(j))
    _ndtri_gathered(nb, nb, idx, tb, m)


@njit(inline="always", **_JIT)
def _sq_diff_sum(u, iu, v, iv, m):
    """``Σ_q (u[iu + q] − v[iv + q])²`` in float64 with eight interleaved partial sums (a single
    accumulator is a serial chain of dependent adds, ~4 cycles per element, that LLVM may not
    reorder without fast-math; the eight lanes vectorise)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    q = 0
    while q + 8 <= m:
        e0 = np.float64(u[iu + q]) - np.float64(v[iv + q])
        e1 = np.float64(u[iu + q + 1]) - np.float64(v[iv + q + 1])
        e2 = np.float64(u[iu + q + 2]) - np.float64(v[iv + q + 2])
        e3 = np.float64(u[iu + q + 3]) - np.float64(v[iv + q + 3])
        e4 = np.float64(u[iu + q + 4]) - np.float64(v[iv + q + 4])
        e5 = np.float64(u[iu + q + 5]) - np.float64(v[iv + q + 5])
        e6 = np.float64(u[iu + q + 6]) - np.float64(v[iv + q + 6])
        e7 = np.float64(u[iu + q + 7]) - np.float64(v[iv + q + 7])
        s0 += e0 * e0
        s1 += e1 * e1
        s2 += e2 * e2
        s3 += e3 * e3
        s4 += e4 * e4
        s5 += e5 * e5
        s6 += e6 * e6
        s7 += e7 * e7
        q += 8
    s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
    while q < m:
        e = np.float64(u[iu + q]) - np.float64(v[iv + q])
        s += e * e
        q += 1
    return s


@njit(inline="always", **_JIT)
def _dot_row(W, m, x, o, d):
    """``Σ_j W[m, j]·x[o + j]`` with four interleaved partial sums (see :func:`_sq_diff_sum`)."""
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= d:
        s0 += W[m, j] * x[o + j]
        s1 += W[m, j + 1] * x[o + j + 1]
        s2 += W[m, j + 2] * x[o + j + 2]
        s3 += W[m, j + 3] * x[o + j + 3]
        j += 4
    s = (s0 + s1) + (s2 + s3)
    while j < d:
        s += W[m, j] * x[o + j]
        j += 1
    return s


#: _NONNEG_NOTE: the element loops index views that start at the task's or block's first
#: element (``a[lo:hi]`` then ``v[q]``, no allocation) rather than ``a[lo + q]``: Numba wraps
#: negative indices, and LLVM cannot prove ``lo + q ≥ 0`` for an argument ``lo``, so every
#: access carried a select on its index and the loops did not vectorise (``_lg_fz`` 0.63 →
#: 0.35 ms and ``_lg_store`` 0.22 → 0.08 ms per (50, 50, 1e4) sweep). Same arithmetic.

# The latent pass of one task is split into small functions (each specialised on the array
# dtype by Numba) for the same reason as the ReLU passes: the vectoriser does better on them.

@njit(**_JIT)
def _lg_fz(zo, a, lo, m_all, slope, xb):
    """``xb ← f(z_old)``; returns ``Σ(z_old − a)²``."""
    zs = zo[lo:lo + m_all]          # views indexed from 0 (see _NONNEG_NOTE)
    As = a[lo:lo + m_all]
    for q in range(m_all):
        z = np.float64(zs[q])
        xb[q] = z if z >= 0.0 else slope * z
    return _sq_diff_sum(zs, 0, As, 0, m_all)


@njit(**_JIT)
def _lg_zsum(zo, a, lo, m_all):
    """``Σ(z_old − a)²`` of :func:`_lg_fz` alone (the same sum)."""
    return _sq_diff_sum(zo[lo:lo + m_all], 0, a[lo:lo + m_all], 0, m_all)


#: _JAM_NOTE: ``dst[r] ∓= c_p·S[p, r]`` for p = p0, p0 + 1, … is one pass over the columns
#: ``r`` per ``p`` (a load and a store of ``dst`` for every multiply: the loops are bound by
#: the stores). :func:`_axpy_rows` (:func:`_sub_rows`) takes four ``p`` per pass,
#: ``dst[r] = (((dst[r] − c₀S₀) − c₁S₁) − c₂S₂) − c₃S₃`` (the remainder one at a time): each
#: element gets the same operations in the same order (one rounding per multiply and per
#: subtraction, ascending p), so the same bits, with a quarter of the loads and stores of
#: ``dst`` (the Matheron rows' products ~20 % faster alone, in a loaded process).


@njit(inline="always", **_JIT)
def _axpy_rows(dst, S, c, p0, p1, nrows, sign):
    """``dst[r] ← dst[r] + Σ_p (sign·c[p − p0])·S[p, r]`` for ``p0 ≤ p < p1``, one ``p`` at a time
    in ascending ``p``, for every ``r < nrows``; ``sign`` is ±1, so ``sign·c`` is exact and
    ``dst + (−c)·s`` rounds as ``dst − c·s`` (no fast-math: nothing is contracted) — see _JAM_NOTE."""
    p = p0
    while p + 4 <= p1:
        c0 = sign * c[p - p0]
        c1 = sign * c[p - p0 + 1]
        c2 = sign * c[p - p0 + 2]
        c3 = sign * c[p - p0 + 3]
        s0 = S[p]
        s1 = S[p + 1]
        s2 = S[p + 2]
        s3 = S[p + 3]
        for r in range(nrows):
            dst[r] = (((dst[r] + c0 * s0[r]) + c1 * s1[r]) + c2 * s2[r]) + c3 * s3[r]
        p += 4
    while p < p1:
        cp = sign * c[p - p0]
        sp = S[p]
        for r in range(nrows):
            dst[r] += cp * sp[r]
        p += 1


@njit(inline="always", **_JIT)
def _sub_rows(dst, S, c, p0, p1, nrows):
    """``dst[r] ← dst[r] − Σ_p c[p − p0]·S[p, r]``, subtracted one ``p`` at a time (_axpy_rows)."""
    _axpy_rows(dst, S, c, p0, p1, nrows, -1.0)


@njit(inline="always", **_JIT)
def _forward_columns(R, L, k, nrows):
    """``R[:, r] ← L⁻¹ R[:, r]`` for every column ``r < nrows`` in place (``L``: k × k lower
    triangular), the columns innermost (independent, so the loops vectorise); each column gets
    the operations of a column-by-column forward substitution, in the same order (four terms
    per pass over the columns, see _JAM_NOTE)."""
    for m in range(k):
        Rm = R[m]
        _sub_rows(Rm, R, L[m], 0, m, nrows)
        lmm = L[m, m]
        for r in range(nrows):
            Rm[r] = Rm[r] / lmm


@njit(inline="always", **_JIT)
def _backward_columns(R, L, k, nrows):
    """``R[:, r] ← L⁻ᵀ R[:, r]`` for every column ``r < nrows`` in place (``L`` as in
    :func:`_forward_columns`), the columns innermost (four terms per pass, see _JAM_NOTE)."""
    for m in range(k - 1, -1, -1):
        Rm = R[m]
        _sub_rows(Rm, R, L[m + 1:k, m], m + 1, k, nrows)
        lmm = L[m, m]
        for r in range(nrows):
            Rm[r] = Rm[r] / lmm


@njit(inline="always", **_JIT)
def _solve_llt_columns(R, L, k, nrows):
    """``R[:, r] ← (L Lᵀ)⁻¹ R[:, r]`` for every column ``r < nrows`` in place (``L``: k × k lower
    Cholesky factor): forward then backward substitution, the columns innermost."""
    _forward_columns(R, L, k, nrows)        # L v = s
    _backward_columns(R, L, k, nrows)       # L^T y = v


#: _VEC_NOTE: the Matheron rows in blocks of ``LANES`` (32) rows held as vector values
#: (:mod:`._vec`): per block, ``r = t − b − Ŵx₀ − √Δ' e``, both substitutions, the residual
#: sum and ``x₀ + Ŵ^⊤(Δ_X y)`` run with the block's accumulators in registers (two ``m`` or
#: two ``j`` per pass share the loads), reading the block's ``x₀``, ``e`` and ``y`` from L1
#: (the column passes of _JAM_NOTE re-read and re-wrote every row of ``R`` or ``x`` once per
#: four terms). Each lane gets the scalar operations in the same order, so the same bits
#: (design note 44).


@njit(**_JIT)
def _row_normals_t(nT, tb, idx, npad, d, k0, k1, cb0, row_stride):
    """``nT[j·npad + r] = Φ⁻¹(u(cb0 + r·row_stride + j))``: :func:`_row_normals` for rows
    ``r < npad`` written transposed (each element the same function of its counter, so the same
    bits wherever it is stored). ``tb``, ``idx``: scratch of at least ``npad·d``."""
    for j in range(d):
        nj = nT[j * npad:(j + 1) * npad]    # views indexed from 0 (see _NONNEG_NOTE)
        cj = cb0 + np.uint64(j)
        for r in range(npad):
            nj[r] = _uniform(k0, k1, cj + np.uint64(r) * np.uint64(row_stride))
    _ndtri_gathered(nT, nT, idx, tb, npad * d)


@njit(inline="always", **_JIT)
def _transpose(src, s0, sstride, na, nb, dst, d0, dstride):
    """``dst[d0 + b·dstride + a] = src[s0 + a·sstride + b]`` for ``a < na``, ``b < nb`` (a copy,
    cast to ``dst``'s dtype): 4 × 4 tiles through :func:`._vec.transpose4`, the edges one element
    at a time."""
    a4 = na // 4 * 4
    b4 = nb // 4 * 4
    for a in range(0, a4, 4):
        for b in range(0, b4, 4):
            transpose4(src, s0 + a * sstride + b, sstride, dst, d0 + b * dstride + a, dstride)
        for b in range(b4, nb):
            for i in range(a, a + 4):
                dst[d0 + b * dstride + i] = src[s0 + i * sstride + b]
    for a in range(a4, na):
        for b in range(nb):
            dst[d0 + b * dstride + a] = src[s0 + a * sstride + b]


@njit(inline="always", **_JIT)
def _x0(zv, xv, slope, sx):
    """``f(z) + sx·ξ`` (``f(z) = z`` if ``z ≥ 0`` else ``slope·z``, in float64), as
    :func:`_lg_fz` then ``xb += sx·nb`` compute it."""
    zz = np.float64(zv)
    f = zz if zz >= 0.0 else slope * zz
    return f + sx * xv


@njit(inline="always", **_JIT)
def _transpose_x0(z, zlo, xi, slope, sx, na, nb, dst, dstride):
    """``dst[b·dstride + a] = f(z[zlo + a·nb + b]) + sx·xi[a·nb + b]`` (:func:`_x0`) for
    ``a < na``, ``b < nb``: 4 × 4 tiles through :func:`._vec.transpose4_x0`, the edges one
    element at a time."""
    a4 = na // 4 * 4
    b4 = nb // 4 * 4
    for a in range(0, a4, 4):
        for b in range(0, b4, 4):
            transpose4_x0(z, zlo + a * nb + b, xi, a * nb + b, nb, slope, sx, dst,
                          b * dstride + a, dstride)
        for b in range(b4, nb):
            for i in range(a, a + 4):
                dst[b * dstride + i] = _x0(z[zlo + i * nb + b], xi[i * nb + b], slope, sx)
    for a in range(a4, na):
        for b in range(nb):
            dst[b * dstride + a] = _x0(z[zlo + a * nb + b], xi[a * nb + b], slope, sx)


@njit(inline="always", **_JIT)
def _vsub_terms(acc, c, p0, p1, S, stride, b):
    """``acc − c[0]·S_{p0} − c[1]·S_{p0+1} − …`` for ``p0 ≤ p < p1``, one term at a time in
    ascending ``p`` (``S_p = S[p·stride + b : + LANES]``)."""
    for p in range(p0, p1):
        acc = acc - vsplat(c[p - p0]) * vload(S, p * stride + b)
    return acc


@njit(inline="always", **_JIT)
def _vadd_terms(acc, c, p0, p1, S, stride, b):
    """``acc + c[0]·S_{p0} + c[1]·S_{p0+1} + …``, ascending ``p`` (as :func:`_vsub_terms`)."""
    for p in range(p0, p1):
        acc = acc + vsplat(c[p - p0]) * vload(S, p * stride + b)
    return acc


@njit(inline="always", **_JIT)
def _vsub_terms2(a0, a1, c0, c1, p1, S, stride, b):
    """:func:`_vsub_terms` for two accumulators over the same ``S_p`` (``p0 = 0``), each
    one term at a time in ascending ``p`` (one load of ``S_p`` for both)."""
    for p in range(p1):
        s = vload(S, p * stride + b)
        a0 = a0 - vsplat(c0[p]) * s
        a1 = a1 - vsplat(c1[p]) * s
    return a0, a1


@njit(inline="always", **_JIT)
def _vadd_terms2(a0, a1, c0, c1, p1, S, stride, b):
    """:func:`_vadd_terms` for two accumulators over the same ``S_p`` (``p0 = 0``)."""
    for p in range(p1):
        s = vload(S, p * stride + b)
        a0 = a0 + vsplat(c0[p]) * s
        a1 = a1 + vsplat(c1[p]) * s
    return a0, a1


@njit(inline="always", **_JIT)
def _sum_rows_into(racc, sq, k, nlive):
    """``racc[m] += sq[m·LANES + i]`` for ``i < nlive`` in ascending ``i`` (each ``racc[m]`` a
    plain loop's sum over the rows), five chains at a time in registers: one chain of ``LANES``
    adds alone waits on the adder's latency, and chains kept in ``racc`` on the store."""
    m = 0
    while m + 5 <= k:
        s0 = racc[m]
        s1 = racc[m + 1]
        s2 = racc[m + 2]
        s3 = racc[m + 3]
        s4 = racc[m + 4]
        q = m * LANES
        for i in range(nlive):
            s0 += sq[q + i]
            s1 += sq[q + LANES + i]
            s2 += sq[q + 2 * LANES + i]
            s3 += sq[q + 3 * LANES + i]
            s4 += sq[q + 4 * LANES + i]
        racc[m] = s0
        racc[m + 1] = s1
        racc[m + 2] = s2
        racc[m + 3] = s3
        racc[m + 4] = s4
        m += 5
    for i in range(nlive):
        for mm in range(m, k):
            racc[mm] += sq[mm * LANES + i]


@njit(inline="always", **_JIT)
def _matheron_block(xT, eT, RT, yb, sq, racc, Wc, L, d, k, npad, b, nlive, vse, vdn, vdx):
    """Rows ``b..b+LANES−1`` of :func:`_lg_rows_matheron` (``RT`` holds ``t − b``; the first
    ``nlive`` rows are real, the others padding kept out of ``racc``, the per-``m`` residual
    sums; ``yb``, ``sq``: scratch of ``k·LANES``)."""
    m = 0
    while m < k:                                    # r = t − b − Ŵx₀ − √Δ' e, two m at once
        o = m * npad + b
        if m + 1 < k:
            a0, a1 = _vsub_terms2(vload(RT, o), vload(RT, o + npad), Wc[m], Wc[m + 1], d, xT,
                                  npad, b)
            vstore(RT, o, a0 - vse * vload(eT, o))
            vstore(RT, o + npad, a1 - vse * vload(eT, o + npad))
            m += 2
        else:
            acc = _vsub_terms(vload(RT, o), Wc[m], 0, d, xT, npad, b)
            vstore(RT, o, acc - vse * vload(eT, o))
            m += 1
    for m in range(k):                              # L v = r
        o = m * npad + b
        acc = _vsub_terms(vload(RT, o), L[m], 0, m, RT, npad, b)
        vstore(RT, o, acc / vsplat(L[m, m]))
    for m in range(k - 1, -1, -1):                  # L^T y = v
        o = m * npad + b
        acc = _vsub_terms(vload(RT, o), L[m + 1:k, m], m + 1, k, RT, npad, b)
        y = acc / vsplat(L[m, m])
        vstore(RT, o, y)
        res = vdn * y + vse * vload(eT, o)          # t − b − Ŵx = Δ'y + √Δ' e
        vstore(sq, m * LANES, res * res)
        vstore(yb, m * LANES, vdx * y)
    _sum_rows_into(racc, sq, k, nlive)
    j = 0
    while j < d:                                    # x = x₀ + Ŵ^⊤(Δ_X y), ascending m
        o = j * npad + b
        if j + 1 < d:
            a0, a1 = _vadd_terms2(vload(xT, o), vload(xT, o + npad), Wc[:, j], Wc[:, j + 1], k,
                                  yb, LANES, 0)
            vstore(xT, o, a0)
            vstore(xT, o + npad, a1)
            j += 2
        else:
            vstore(xT, o, _vadd_terms(vload(xT, o), Wc[:, j], 0, k, yb, LANES, 0))
            j += 1


@njit(**_JIT)
def _lg_rows_matheron(z, slope, nb, t, trow0, t_rstride, nrows, d, k, Wc, L, dx, dn, k0, k1, g0,
                      nc, xo, lo):
    """Perturb and correct for all rows of the task at once (``z[lo:lo + nrows·d]`` the rows'
    ``z_old``, ``f(z) = z`` if ``z ≥ 0`` else ``slope·z``; ``nb`` the ξ; ``x`` is stored into
    ``xo[lo:lo + nrows·d]``, cast to its dtype); returns ``Σ‖t − b − Ŵx‖²``.

    Row ``r``: ``x₀ = f(z) + √Δ_X ξ``, ``s_m = t_m − b_m − Σ_j Ŵ_{mj} x₀_j − √Δ' e_m`` (the sum
    in ascending ``j``), ``L v = s``, ``L^⊤ y = v`` (substitutions in the usual order),
    ``x = x₀ + Σ_m Ŵ_{m·} (Δ_X y_m)`` (ascending ``m``); the sum is ``Σ_m Σ_r (Δ'y_m + √Δ' e_m)²``
    (rows in order, then ``m`` ascending). The rows go ``LANES`` at a time as vector values
    (transposed, padded scratch; see _VEC_NOTE): every row gets exactly the operations, in the
    same order, of the row-by-row form.
    """
    sx = math.sqrt(dx)
    se = math.sqrt(dn)
    npad = (nrows + LANES - 1) // LANES * LANES
    xT = np.empty(d * npad)                 # xT[j·npad + r] = x₀[r, j]; rows ≥ nrows are 0
    eT = np.empty(k * npad)                 # eT[m·npad + r] = e[r, m] (rows ≥ nrows: unused)
    RT = np.empty(k * npad)                 # t − b, then r, v, y in place
    _row_normals_t(eT, RT, np.empty(k * npad, dtype=np.uint64), npad, k, k0, k1,
                   _ES + np.uint64(g0 * k), nc * k)      # e[r, m] = Φ⁻¹(u(STREAM_E + g_r·k + m))
    _transpose_x0(z, lo, nb, slope, sx, nrows, d, xT, npad)     # x₀ = f(z) + √Δ_X ξ
    _transpose(t, trow0, t_rstride, nrows, k, RT, 0, npad)
    for m in range(k):
        Rm = RT[m * npad:m * npad + nrows]  # views indexed from 0 (see _NONNEG_NOTE)
        b = Wc[m, d]
        for r in range(nrows):
            Rm[r] = Rm[r] - b               # t − b (t widened exactly by the transposition)
    for r in range(nrows, npad):
        for j in range(d):
            xT[j * npad + r] = 0.0
        for m in range(k):
            RT[m * npad + r] = 0.0
    yb = np.empty(k * LANES)
    sq = np.empty(k * LANES)
    racc = np.zeros(k)
    vse = vsplat(se)
    vdn = vsplat(dn)
    vdx = vsplat(dx)
    for b in range(0, npad, LANES):
        _matheron_block(xT, eT, RT, yb, sq, racc, Wc, L, d, k, npad, b, min(LANES, nrows - b), vse,
                        vdn, vdx)
    s_next = 0.0
    for m in range(k):
        s_next += racc[m]
    _transpose(xT, 0, npad, d, nrows, xo, lo, d)      # x, stored (the cast of _lg_store)
    return s_next


@njit(**_JIT)
def _lg_rows_matheron_rowwise(xb, nb, t, trow0, t_rstride, nrows, d, k, Wc, L, dx, dn, k0, k1,
                              g0, nc):
    """:func:`_lg_rows_matheron` for narrow next layers (``k < 4``) without its transposes:
    every row gets the same operations in the same order, and ``Σ‖t − b − Ŵx‖²`` is summed
    row by row (``m`` innermost), as a row-by-row loop would.

    The dot products ``Σ_j Ŵ_{mj} x₀_j`` run over the rows innermost (a strided read of ``xb``:
    independent rows, so the loop vectorises; one row's sum alone is a serial chain of
    dependent subtractions), and so do the substitutions; the ``e`` normals come from
    :func:`_row_normals` (AS241 as :func:`_ndtri`, vectorised)."""
    sx = math.sqrt(dx)
    se = math.sqrt(dn)
    for q in range(nrows * d):
        xb[q] += sx * nb[q]
    ek = np.empty(nrows * k)                # e[r, m] = Φ⁻¹(u(STREAM_E + g_r·k + m))
    tk = np.empty(nrows * k)
    ik = np.empty(nrows * k, dtype=np.uint64)
    _row_normals(ek, tk, ik, nrows, k, k0, k1, _ES + np.uint64(g0 * k), nc * k)
    x2 = xb[:nrows * d].reshape((nrows, d))     # views indexed from 0 (see _NONNEG_NOTE)
    t2 = t[trow0:trow0 + nrows * t_rstride].reshape((nrows, t_rstride))
    R = np.empty((k, nrows))
    for m in range(k):
        b = Wc[m, d]
        for r in range(nrows):
            R[m, r] = np.float64(t2[r, m]) - b
        for j in range(d):
            w = Wc[m, j]
            for r in range(nrows):
                R[m, r] -= w * x2[r, j]
        for r in range(nrows):
            R[m, r] = R[m, r] - se * ek[r * k + m]
    _solve_llt_columns(R, L, k, nrows)       # R ← (L Lᵀ)⁻¹ R, column by column
    s_next = 0.0
    for r in range(nrows):
        for m in range(k):
            res = dn * R[m, r] + se * ek[r * k + m]
            s_next += res * res
    for r in range(nrows):
        for m in range(k):
            ym = dx * R[m, r]
            for j in range(d):
                x2[r, j] += Wc[m, j] * ym
    return s_next


@njit(**_JIT)
def _lg_rows_cholesky(xb, nb, t, trow0, t_rstride, nrows, d, k, Wc, L, dx, dn, eb):
    """The Cholesky form, row by row (``xb`` holds ``f(z)``, ``nb`` the ξ); returns
    ``Σ‖t − b − Ŵx‖²``."""
    sx = math.sqrt(dx)
    ratio = dx / dn
    s_next = 0.0
    x2 = xb[:nrows * d].reshape((nrows, d))     # views indexed from 0 (see _NONNEG_NOTE)
    n2 = nb[:nrows * d].reshape((nrows, d))
    t2 = t[trow0:trow0 + nrows * t_rstride].reshape((nrows, t_rstride))
    for r in range(nrows):
        xr = x2[r]
        nr = n2[r]
        for m in range(k):
            eb[m] = np.float64(t2[r, m]) - Wc[m, d]
        for m in range(k):
            em = ratio * eb[m]
            for j in range(d):
                xr[j] += em * Wc[m, j]
        for j in range(d):                      # R v = rhs
            xr[j] = (xr[j] - _dot_row(L, j, xr, 0, j)) / L[j, j]
        for j in range(d):                      # v += √Δ_X ξ
            xr[j] += sx * nr[j]
        for j in range(d - 1, -1, -1):          # R^T x = v
            s = xr[j]
            for p in range(j + 1, d):
                s -= L[p, j] * xr[p]
            xr[j] = s / L[j, j]
        for m in range(k):
            s = eb[m] - _dot_row(Wc, m, xr, 0, d)
            s_next += s * s
    return s_next


@njit(**_JIT)
def _lg_store(xb, x, lo, m_all):
    xs = x[lo:lo + m_all]           # a view indexed from 0 (see _NONNEG_NOTE)
    for q in range(m_all):
        xs[q] = xb[q]


@njit(**_JIT)
def _lg_identity(nb, a, x, out, lo, nrows, d, nc, g0, dx, dz, k0, k1):
    """The identity's Gaussian ``z | a, x`` (counter ``2i``)."""
    ident_s = dx + dz
    ident_sd = math.sqrt(dx * dz / ident_s)
    q = 0
    for r in range(nrows):
        cb = np.uint64((g0 + r * nc) * d)
        for j in range(d):
            nb[q + j] = _uniform(k0, k1, (cb + np.uint64(j)) * _TWO)
        q += d
    m_all = nrows * d
    xv = x[lo:lo + m_all]           # views indexed from 0 (see _NONNEG_NOTE)
    av_ = a[lo:lo + m_all]
    ov = out[lo:lo + m_all]
    for q in range(m_all):
        xs = np.float64(xv[q])
        av = np.float64(av_[q])
        ov[q] = (dx * av + dz * xs) / ident_s + ident_sd * _ndtri(nb[q])


@njit(**_JIT)
def _lg_sx(x, zn, lo, m_all, slope, nb):
    """``Σ(x − f(z_new))²`` (``nb``: scratch)."""
    zs = zn[lo:lo + m_all]          # views indexed from 0 (see _NONNEG_NOTE)
    for q in range(m_all):
        z = np.float64(zs[q])
        nb[q] = z if z >= 0.0 else slope * z
    return _sq_diff_sum(x[lo:lo + m_all], 0, nb, 0, m_all)


@njit(**_JIT)
def _latent_group(z64, a64, t64, x64, o64, z32, a32, t32, x32, o32, is32, W, dnext, F, c, r0, r1,
                  n, d, k, nc, t_cs, row_offset, x_rowwise, x_block, x_chol, z_relu, z_ident,
                  slope, dx, dz, k0, k1, p1, p2, n1, n2, sdp, sdm, half_log, out):
    """Rows ``r0..r1-1`` of chain ``c``: X (row by row), then Z (blocked ReLU kernel), sums.

    Row ``μ`` (global row ``g_μ = row_offset + μ``, ``g = g_μ·C + c``) with ``x̃ = [x, 1]``,
    ``Ŵ, b`` the next layer's weights, ``t`` its targets, ``Δ'`` its noise:

    * method 0 (perturb and correct): ``x₀ = f(z) + √Δ_X ξ``, ``r = t − b − Ŵx₀ − √Δ' e``,
      ``y = S⁻¹r`` (``S = Δ_X ŴŴ^⊤ + Δ'I = LL^⊤``), ``x = x₀ + Δ_X Ŵ^⊤y``; then
      ``t − b − Ŵx = Δ'y + √Δ' e``.
    * method 1 (Cholesky): ``x = R^{-⊤}(R^{-1}(f(z) + (Δ_X/Δ')Ŵ^⊤(t − b)) + √Δ_X ξ)``,
      ``RR^⊤ = I + (Δ_X/Δ')Ŵ^⊤Ŵ``.

    ``ξ_j = Φ⁻¹(u(STREAM_X + g·d + j))``, ``e_m = Φ⁻¹(u(STREAM_E + g·k + m))``; the ReLU draw of
    element ``(μ, j)`` uses counters ``2i, 2i + 1`` with ``i = g·d + j``, the identity's
    Gaussian ``Φ⁻¹(u(2i))``. ``out``: ``[Σ(z_old − a)², Σ‖t − b − Ŵx‖², Σ(x − f(z_new))²]``.

    The form is chosen by the selector arguments (:func:`_selectors`): of ``x_rowwise``
    (method 0, ``k < 4``), ``x_block`` (method 0, ``k ≥ 4``), ``x_chol`` (method 1) exactly one
    is ``0`` and the others ``None``, and likewise of ``z_relu``, ``z_ident``. A ``None``
    argument is typed ``none``, and Numba's dead-branch pruning removes the ``is not None``
    branches on it before typing, so each specialisation compiles only the code it runs (the
    demo's ReLU net with ``k = 1``: the row-wise Matheron and the ReLU draw, not the other
    two row forms nor the identity's Gaussian).
    """
    dn = dnext[c]
    nrows = r1 - r0
    lo = (c * n + r0) * d
    hi = (c * n + r1) * d
    m_all = hi - lo
    xb = np.empty(m_all)
    nb = np.empty(m_all)
    tb = np.empty(m_all)
    idx = np.empty(m_all, dtype=np.uint64)
    eb = np.empty(k)
    Wc = W[c]
    L = F[c]
    tc = c if t_cs else 0
    row_stride = nc * d
    g0 = (row_offset + r0) * nc + c                   # g of the first row
    trow0 = (tc * n + r0) * k
    # f(z_old) and Σ(z_old − a)² (the block form makes f(z_old) inside its transposition)
    if x_block is not None:
        s_in = _lg_zsum(z32, a32, lo, m_all) if is32 else _lg_zsum(z64, a64, lo, m_all)
    else:
        s_in = (_lg_fz(z32, a32, lo, m_all, slope, xb) if is32
                else _lg_fz(z64, a64, lo, m_all, slope, xb))
    # ξ for every element of the rows
    _row_normals(nb, tb, idx, nrows, d, k0, k1, _XS + np.uint64(g0 * d), row_stride)
    s_next = 0.0
    if x_rowwise is not None:                       # (each test on an argument alone: pruned
        if is32:                                    # when the argument is None)
            s_next = _lg_rows_matheron_rowwise(xb, nb, t32, trow0, k, nrows, d, k, Wc, L, dx, dn,
                                               k0, k1, g0, nc)
        else:
            s_next = _lg_rows_matheron_rowwise(xb, nb, t64, trow0, k, nrows, d, k, Wc, L, dx, dn,
                                               k0, k1, g0, nc)
    if x_block is not None:                         # stores x itself (with its transposition)
        if is32:
            s_next = _lg_rows_matheron(z32, slope, nb, t32, trow0, k, nrows, d, k, Wc, L, dx, dn,
                                       k0, k1, g0, nc, x32, lo)
        else:
            s_next = _lg_rows_matheron(z64, slope, nb, t64, trow0, k, nrows, d, k, Wc, L, dx, dn,
                                       k0, k1, g0, nc, x64, lo)
    if x_chol is not None:
        if is32:
            s_next = _lg_rows_cholesky(xb, nb, t32, trow0, k, nrows, d, k, Wc, L, dx, dn, eb)
        else:
            s_next = _lg_rows_cholesky(xb, nb, t64, trow0, k, nrows, d, k, Wc, L, dx, dn, eb)
    if x_block is None:
        if is32:
            _lg_store(xb, x32, lo, m_all)
        else:
            _lg_store(xb, x64, lo, m_all)
    s_x = 0.0
    if z_relu is not None:                          # the ReLU draw returns Σ(x − f(z_new))²
        s_x = _relu_range(a64, x64, o64, a32, x32, o32, is32, lo, hi, k0, k1, p1, p2, n1, n2,
                          sdp, sdm, half_log, d, row_stride, g0 * d, slope)
    if z_ident is not None:                         # identity: Gaussian z | a, x
        if is32:
            _lg_identity(nb, a32, x32, o32, lo, nrows, d, nc, g0, dx, dz, k0, k1)
            s_x = _lg_sx(x32, o32, lo, m_all, slope, nb)
        else:
            _lg_identity(nb, a64, x64, o64, lo, nrows, d, nc, g0, dx, dz, k0, k1)
            s_x = _lg_sx(x64, o64, lo, m_all, slope, nb)
    out[0] = s_in
    out[1] = s_next
    out[2] = s_x


@njit(**_JIT)
def _latent_kernel_serial(z64, a64, t64, x64, o64, z32, a32, t32, x32, o32, is32, W, dnext, F, n, d,
                          k, nc, t_cs, row_offset, x_rowwise, x_block, x_chol, z_relu, z_ident,
                          slope, par, k0, k1, ngroups, out):
    """:func:`_latent_kernel` on the calling thread (small passes: no thread wake-ups, which
    stall behind busy cores)."""
    for gi in range(nc * ngroups):
        c = gi // ngroups
        g = gi - c * ngroups
        r0 = g * n // ngroups
        r1 = (g + 1) * n // ngroups
        if r1 > r0:
            _latent_group(z64, a64, t64, x64, o64, z32, a32, t32, x32, o32, is32, W, dnext, F,
                          c, r0, r1, n, d, k, nc, t_cs, row_offset, x_rowwise, x_block, x_chol,
                          z_relu, z_ident, slope, par[c, 0],
                          par[c, 1], k0, k1, par[c, 2], par[c, 3], par[c, 4], par[c, 5], par[c, 6],
                          par[c, 7], par[c, 8], out[gi])


@njit(**_JIT)
def _rows_kernel(G, pd, B, delta, R0, use_r0, k0, k1, out):
    """Gaussian node rows (A.1) of every chain: ``W̃^⊤ = R^{-⊤}(R^{-1}B + √Δ E)`` with
    ``RR^⊤ = G + Δ diag(pd)`` (or ``R = R0[c]``, ``R0`` per chain or shared), ``E[c, i, m] = Φ⁻¹(u((c(d+1) + i)k + m))``."""
    nc, d1, k = B.shape
    R = np.empty((d1, d1))
    M = np.empty((d1, d1))
    V = np.empty((d1, k))       # the k columns of W̃^⊤ being solved for
    U = np.empty((d1, k))       # their uniforms
    for c in range(nc):
        if use_r0:
            r0 = R0[c if R0.shape[0] > 1 else 0]
            for a in range(d1):     # element loops: a slice assignment compiles Numba's
                for b in range(d1):  # broadcasting and error-message code (~3 s at first use)
                    R[a, b] = r0[a, b]
        else:
            g = G[c if G.shape[0] > 1 else 0]
            for a in range(d1):
                for b in range(d1):
                    M[a, b] = g[a, b]
            for a in range(d1):
                M[a, a] += delta[c] * pd[c, a]
            _chol_lower(M, R)
        sd = math.sqrt(delta[c])
        # all k columns at once, the columns innermost (independent: the loops vectorise); each
        # column gets the operations of a column-by-column substitution, in the same order
        for i in range(d1):
            for m in range(k):
                V[i, m] = B[c, i, m]
        _forward_columns(V, R, d1, k)           # R⁻¹ B
        for i in range(d1):
            cb = np.uint64((c * d1 + i) * k)
            for m in range(k):
                U[i, m] = _uniform(k0, k1, cb + np.uint64(m))
            for m in range(k):
                V[i, m] += sd * _ndtri(U[i, m])
        _backward_columns(V, R, d1, k)          # R^{-⊤}(R⁻¹B + √Δ E)
        for m in range(k):
            for i in range(d1):
                out[c, m, i] = V[i, m]


@njit(parallel=True, **_JIT)
def _latent_kernel(z64, a64, t64, x64, o64, z32, a32, t32, x32, o32, is32, W, dnext, F, n, d, k,
                   nc, t_cs, row_offset, x_rowwise, x_block, x_chol, z_relu, z_ident, slope, par,
                   k0, k1, ngroups, out):
    """Every chain's rows in parallel tasks; ``par[c]`` = chain ``c``'s ``(Δ_X, Δ_Z, p1, p2, n1,
    n2, sd_pos, sd_neg, half_log)`` (:class:`._common.ReluConstants`)."""
    for gi in prange(nc * ngroups):
        c = gi // ngroups
        g = gi - c * ngroups
        r0 = g * n // ngroups
        r1 = (g + 1) * n // ngroups
        if r1 > r0:
            _latent_group(z64, a64, t64, x64, o64, z32, a32, t32, x32, o32, is32, W, dnext, F,
                          c, r0, r1, n, d, k, nc, t_cs, row_offset, x_rowwise, x_block, x_chol,
                          z_relu, z_ident, slope, par[c, 0],
                          par[c, 1], k0, k1, par[c, 2], par[c, 3], par[c, 4], par[c, 5], par[c, 6],
                          par[c, 7], par[c, 8], out[gi])


# --------------------------------------------------------------------------------------------
# wrappers (arguments validated by blockbayes.kernels)
# --------------------------------------------------------------------------------------------

def set_num_threads(n: int) -> None:
    """Number of threads of the parallel loops (``numba.set_num_threads``)."""
    import numba

    numba.set_num_threads(int(n))


def get_num_threads() -> int:
    import numba

    return numba.get_num_threads()


def _flat(arr, dtype):
    return np.ascontiguousarray(arr, dtype=dtype).reshape(-1)


def _ro(arr):
    """``arr`` as a read-only view (no copy). Numba compiles one specialisation per argument
    type, and the writeable flag is part of the type: every kernel input is passed read-only
    (the kernels never write their inputs), so user arrays, broadcast views and the sampler's own
    arrays all reuse one compiled kernel."""
    if arr.flags.writeable:
        arr = arr.view()
        arr.flags.writeable = False
    return arr


_DUMMY64 = np.empty(1, dtype=np.float64)
_DUMMY32 = np.empty(1, dtype=np.float32)
# The kernels take their arrays in both dtypes and pick one set with ``is32``; the other set is
# dummies of the SAME types as the live arrays, so that the branches of the other dtype call
# the very specialisations of the live one: a float64 run compiles float64 code only (and a
# float32 run float32 code only) instead of both, at first use.
_RO64 = _ro(np.empty(1, dtype=np.float64))      # stand-ins for read-only inputs
_RO32 = _ro(np.empty(1, dtype=np.float32))
_RW64 = _DUMMY64                                # stand-ins for outputs (never written)
_RW32 = _DUMMY32


def _groups() -> int:
    # a few blocks of contiguous chunks per thread (each block allocates its scratch once)
    return 8 * get_num_threads()


def relu_preact(k0: int, k1: int, A, X, consts: C.ReluConstants, out_dtype):
    """Numba ReLU / leaky-ReLU pre-activation draw (NumPy arrays, validated arguments)."""
    dt = np.dtype(out_dtype)
    a = _ro(_flat(A, dt))
    x = _ro(_flat(X, dt))
    out = np.empty(a.shape[0], dtype=dt)
    if out.shape[0]:
        is32 = dt == np.float32
        arrays = ((_RO32, _RO32, _RW32, a, x, out) if is32
                  else (a, x, out, _RO64, _RO64, _RW64))
        if get_num_threads() > 1 and out.shape[0] >= _PARALLEL_MIN:
            _relu_kernel(*arrays, is32, np.uint64(k0), np.uint64(k1), *(float(v) for v in consts),
                         _groups())
        else:
            _relu_range(*arrays, is32, 0, out.shape[0], np.uint64(k0), np.uint64(k1),
                        *(float(v) for v in consts))
    return out.reshape(A.shape)


def relu_preact_chains(k0: int, k1: int, A, X, consts: C.ReluConstants, out_dtype):
    """:func:`relu_preact` with per-chain constants (``(C,)`` arrays, ``C = A.shape[0]``): each
    run of chains with equal constants is one range of the serial kernel (counters: the flat
    indices, as with shared constants)."""
    dt = np.dtype(out_dtype)
    a = _flat(A, dt)
    x = _flat(X, dt)
    out = np.empty(a.shape[0], dtype=dt)
    nc = A.shape[0]
    par = chain_params(nc, 0.0, 0.0, consts)[:, 2:]
    m = a.shape[0] // nc if nc else 0
    if out.shape[0]:
        is32 = dt == np.float32
        arrays = ((_DUMMY64, _DUMMY64, _DUMMY64, a, x, out) if is32
                  else (a, x, out, _DUMMY32, _DUMMY32, _DUMMY32))
        c0 = 0
        for c in range(1, nc + 1):
            if c == nc or not np.array_equal(par[c], par[c0]):
                _relu_range(*arrays, is32, c0 * m, c * m, np.uint64(k0), np.uint64(k1),
                            *(float(v) for v in par[c0]))
                c0 = c
    return out.reshape(A.shape)


def _param(v, shape, n, dt):
    """(flat array, step): step 0 for a broadcast scalar, 1 for a full array."""
    arr = np.asarray(v, dtype=dt)
    if arr.size == 1:
        return arr.reshape(1), 0
    if arr.shape != tuple(shape):
        arr = np.broadcast_to(arr, shape)
    return np.ascontiguousarray(arr).reshape(n), 1


def truncated_normal(k0: int, k1: int, mean, sd, bound, upper, shape, out_dtype):
    """Numba one-sided truncated normal (validated arguments; NumPy arrays or scalars)."""
    dt = np.dtype(out_dtype)
    n = C.prod(shape)
    m, ms = _param(mean, shape, n, dt)
    s, ss = _param(sd, shape, n, dt)
    b, bs = _param(bound, shape, n, dt)
    u, us = _param(upper, shape, n, np.bool_)
    m, s, b, u = _ro(m), _ro(s), _ro(b), _ro(u)
    out = np.empty(n, dtype=dt)
    if n:
        is32 = dt == np.float32
        arrays = ((_RO32,) * 3 + (_RW32, m, s, b, out) if is32
                  else (m, s, b, out) + (_RO64,) * 3 + (_RW64,))
        if get_num_threads() > 1 and n >= _PARALLEL_MIN:
            _tn_kernel(*arrays, is32, ms, ss, bs, u, us, np.uint64(k0), np.uint64(k1), _groups())
        else:
            _tn_range(*arrays, is32, ms, ss, bs, u, us, 0, n, np.uint64(k0), np.uint64(k1))
    return out.reshape(shape)


def multinomial_utilities(ky, ko, A, labels, U, out_dtype):
    """Numba multinomial-probit utilities (NumPy arrays, validated arguments): ``A``, ``U`` of
    shape ``(C, n, K)``, ``labels`` int ``(n,)`` or ``(C, n)``; ``ky``, ``ko``: the key words of
    the two sub-steps."""
    dt = np.dtype(out_dtype)
    nc, n, K = A.shape
    a = _ro(_flat(A, dt))
    u = _ro(_flat(U, dt))
    lab_cs = labels.ndim == 2
    lab = _ro(np.ascontiguousarray(labels, dtype=np.int64).reshape(-1))
    out = np.empty(a.shape[0], dtype=dt)
    rows = nc * n
    if rows and K:
        is32 = dt == np.float32
        arrays = ((_RO32, _RO32, _RW32, a, u, out) if is32 else (a, u, out, _RO32, _RO32, _RW32))
        words = (np.uint64(ky[0]), np.uint64(ky[1]), np.uint64(ko[0]), np.uint64(ko[1]))
        if get_num_threads() > 1 and rows * K >= _PARALLEL_MIN:
            _mnp_kernel(*arrays, is32, lab, lab_cs, n, K, rows, *words, _groups())
        else:
            _mnp_range(*arrays, is32, lab, lab_cs, n, K, 0, rows, *words)
    return out.reshape(A.shape)


#: elements per task of the fused latent pass (rows of one chain; scratch stays in L2)
_LATENT_TASK = 8192
#: below this many elements a pass runs on the calling thread: waking the pool costs more than
#: it saves, and a woken thread that lands on a busy core stalls the whole pass
_PARALLEL_MIN = 1 << 16
#: widest row block (``d + 1``) the Numba row sampler takes; wider ones use LAPACK/BLAS
#: (:func:`blockbayes.kernels.reference.gaussian_rows`)
_ROWS_MAX = 128


def _selectors(method: int, k: int, act: int) -> tuple:
    """The selector arguments ``(x_rowwise, x_block, x_chol, z_relu, z_ident)`` of the latent
    kernels (:func:`_latent_group`): ``0`` for the form used, ``None`` for the others. A
    specialisation per form, each compiling only its own code (at first use of a form)."""
    on = (method == 0 and k < 4, method == 0 and k >= 4, method == 1, act == 0, act == 1)
    return tuple(0 if v else None for v in on)


def chain_params(nc: int, dx, dz, consts) -> np.ndarray:
    """Per-chain parameters of the latent pass, ``(C, 9)`` float64: ``(Δ_X, Δ_Z, *consts)`` of
    chain ``c`` in row ``c`` (each value a float, shared, or a ``(C,)`` array)."""
    par = np.empty((nc, 9))
    for j, v in enumerate((dx, dz, *consts)):
        par[:, j] = v
    return par


def latent_pass(k0: int, k1: int, Z, A, T, W, dnext, dx, dz, consts: C.ReluConstants, act: int,
                slope: float, method: int, row_offset: int, out_dtype, *, draw_z: bool = True):
    """Numba fused latent pass (NumPy arrays, validated arguments): ``(X, Z, sums)``; ``dx``,
    ``dz`` and the fields of ``consts`` floats (shared) or ``(C,)`` arrays (per chain).
    ``draw_z=False`` (:func:`precompile_latent` only) calls :func:`_latent_group` directly on
    chain 0's rows and draws X alone: only chain 0's X and first two sums are set."""
    dt = np.dtype(out_dtype)
    nc, n, d = Z.shape
    k = T.shape[-1]
    is32 = dt == np.float32
    t_cs = not (T.shape[0] == 1 or (T.ndim == 3 and T.strides[0] == 0))
    Tc = _ro(np.ascontiguousarray(T if t_cs else T[:1], dtype=dt).reshape(-1))
    z = _ro(_flat(Z, dt))
    a = _ro(_flat(A, dt))
    W64 = _ro(np.ascontiguousarray(W, dtype=np.float64))
    dn = _ro(np.ascontiguousarray(np.broadcast_to(np.asarray(dnext, dtype=np.float64).reshape(-1), (nc,))))
    par = _ro(chain_params(nc, dx, dz, consts))
    F = _ro(_latent_factors(W64, dn, par[:, 0], method))
    xo = recycle.empty((nc * n * d,), dt)     # large: recycled buffers (no fresh page faults)
    zo = recycle.empty((nc * n * d,), dt)
    threads = get_num_threads()
    ngroups = max(1, min(n, max(-(-n * d // _LATENT_TASK), -(-2 * threads // nc))))
    out = np.zeros((nc * ngroups, 3))
    if n and d:
        arrs = (((_RO32,) * 3 + (_RW32,) * 2 + (z, a, Tc, xo, zo)) if is32
                else ((z, a, Tc, xo, zo) + (_RO64,) * 3 + (_RW64,) * 2))
        kern = _latent_kernel if (threads > 1 and nc * n * d >= _PARALLEL_MIN) else _latent_kernel_serial
        sel = _selectors(method, k, act)
        if draw_z:
            kern(*arrs, is32, W64, dn, F, n, d, k, nc, t_cs, int(row_offset), *sel,
                 float(slope), par, np.uint64(k0), np.uint64(k1), ngroups, out)
        else:       # the group's callees with the kernels' argument types, no kernel compiled
            _latent_group(*arrs, is32, W64, dn, F, 0, 0, n, n, d, k, nc, t_cs, int(row_offset), *sel[:3], None,
                          None, float(slope), par[0, 0], par[0, 1], np.uint64(k0), np.uint64(k1), *par[0, 2:],
                          out[0])
    sums = out.reshape(nc, ngroups, 3).sum(axis=1)
    return xo.reshape(nc, n, d), zo.reshape(nc, n, d), sums


def precompile_latent(part: str, d: int, k: int, act: int, method: int, out_dtype) -> None:
    """Compile (or load from Numba's on-disk cache) one part of the kernels of
    :func:`latent_pass` for a hidden layer of width ``d`` under a next layer of width ``k``
    (``act``, ``method``: as :func:`latent_pass` takes them), in the specialisations the pass
    uses, without the rest:

    * ``"z"``: the ReLU draw :func:`_relu_range` with the argument types :func:`_latent_group`
      passes it (a call on one element; nothing for the identity, whose Z draw is small);
    * ``"x"``: :func:`_latent_factors` and the X draw's kernels (:func:`_lg_fz` and
      :func:`_lg_store`, or :func:`_lg_zsum` for the block Matheron form, which makes f(z) and
      stores x itself; :func:`_row_normals`, the row sampler of the form), through an X-only
      specialisation of :func:`_latent_group` called directly on two rows of two chains (two,
      as one chain would make the chains' parameter column contiguous: another argument type).

    Numba compiles a kernel's callees first and takes each from the cache when it is there, so
    two processes compiling the two parts side by side leave a first :func:`latent_pass` only
    :func:`_latent_group` and the kernel around it to compile (the ReLU draw, the heaviest part,
    is ~40 % of the whole)."""
    dt = np.dtype(out_dtype)
    if part == "z":
        if act != 0:
            return
        is32 = dt == np.float32
        a, x, o = _ro(np.zeros(1, dt)), np.zeros(1, dt), np.empty(1, dt)
        arrs = (_RO32, _RW32, _RW32, a, x, o) if is32 else (a, x, o, _RO64, _RW64, _RW64)
        consts = C.relu_constants(1.0, 1.0, 0.0)
        _relu_range(*arrs, bool(is32), 0, 1, np.uint64(0), np.uint64(0), *(float(v) for v in consts),
                    1, 1, 0, 0.0)
    elif part == "x":
        Z = np.zeros((2, 2, d), dt)
        latent_pass(0, 0, Z, Z, np.zeros((1, 2, k), dt), np.zeros((2, k, d + 1)), 1.0, 1.0, 1.0,
                    C.relu_constants(1.0, 1.0, 0.0), act, 0.0, method, 0, dt, draw_z=False)
    else:
        raise ValueError(f"part must be 'x' or 'z', got {part!r}")


def gaussian_rows(k0: int, k1: int, B, delta, gram, prior_diag, chol, out_dtype):
    """Numba node-row sampler (NumPy arrays, validated arguments) for ``d + 1 ≤ 128``; wider
    blocks go through the reference code (LAPACK and BLAS do the factorisation and solves)."""
    nc, d1, k = B.shape
    if d1 > _ROWS_MAX:
        from . import reference

        return reference.gaussian_rows(k0, k1, B, delta, gram, prior_diag, chol, out_dtype)
    Bd = _ro(np.ascontiguousarray(B, dtype=np.float64))
    dl = _ro(np.ascontiguousarray(np.broadcast_to(np.asarray(delta, dtype=np.float64), (nc,))))
    out = np.empty((nc, k, d1))
    if chol is not None:
        R0 = _ro(np.ascontiguousarray(chol, dtype=np.float64).reshape(-1, d1, d1))
        _rows_kernel(_ro(np.empty((1, 1, 1))), _ro(np.empty((1, 1))), Bd, dl, R0, True,
                     np.uint64(k0), np.uint64(k1), out)
    else:
        G = _ro(np.ascontiguousarray(gram, dtype=np.float64).reshape(-1, d1, d1))
        pd = _ro(np.ascontiguousarray(np.broadcast_to(np.asarray(prior_diag, dtype=np.float64), (nc, d1))))
        _rows_kernel(G, pd, Bd, dl, _ro(np.empty((1, 1, 1))), False, np.uint64(k0), np.uint64(k1),
                     out)
    return out.astype(out_dtype, copy=False)


# --------------------------------------------------------------------------------------------
# the joint non-centred HMC move: log-target data term and gradient, one pass over the rows
# --------------------------------------------------------------------------------------------

#: rows per block of the frozen-noise gradient kernel (its working set stays in L1/L2)
_FNG_BLOCK = 64


@njit(parallel=True, fastmath={"contract", "reassoc"}, **_JIT)
def _fng_kernel(X, T, tstride, W, offs, widths, xi, eta, hoff, inv_dy, act, slope, zero, noisy, sse, G):
    """Per chain (parallel) and per block of ``_FNG_BLOCK`` data rows: the frozen-noise forward
    pass through every layer, the residual, and the backward pass accumulating the gradient.

    The block's activations are held unit-major, ``(width, rows)``, so every inner loop runs over
    the block's rows, contiguous, with loop variables as indices (no index wrap-around: see
    _NONNEG_NOTE); the weights ``W[c]`` and the gradient ``G[c]`` keep the flat layout of
    ``theta`` (each layer's ``(k, d + 1)`` block row-major). ``contract`` and ``reassoc`` let
    LLVM use FMAs and vectorise the sums over rows: each chain's arithmetic is still one fixed
    sequence (the same numbers for any thread count).

    Compute dtype: that of the arrays (all float64, or all float32 with ``slope`` and ``zero`` of
    that type — the mixed-precision interior of the HMC move); ``zero`` seeds the sums, so their
    type is the arrays'; ``inv_dy = 1/Δ_y`` per chain. ``sse`` is accumulated in float64 either
    way. ``noisy=False``: the noise-free network (``xi``, ``eta`` are not read; the MAP objective of
    :func:`network_target`).
    """
    nc = W.shape[0]
    n = X.shape[0]
    L = widths.shape[0] - 1
    wmax = 1
    for m in range(L + 1):
        wmax = max(wmax, widths[m])
    BK = _FNG_BLOCK
    for c in prange(nc):
        Hb = np.empty((L, wmax, BK), dtype=W.dtype)     # Hb[m]: the block's inputs of layer m, unit-major
        Zb = np.empty((L, wmax, BK), dtype=W.dtype)     # Zb[m]: pre-activations of layer m (the output for m = L - 1)
        D1 = np.empty((wmax, BK), dtype=W.dtype)
        D2 = np.empty((wmax, BK), dtype=W.dtype)
        g = G[c]
        for p in range(g.shape[0]):
            g[p] = zero
        s = 0.0
        idy = inv_dy[c]
        tc = c * tstride
        d0 = widths[0]
        for r0 in range(0, n, BK):
            B = min(BK, n - r0)
            for r in range(B):
                for q in range(d0):
                    Hb[0, q, r] = X[r0 + r, q]
            for m in range(L):
                d = widths[m]
                k = widths[m + 1]
                o = offs[m]
                for j in range(k):
                    row = o + j * (d + 1)
                    bj = W[c, row + d]
                    for r in range(B):
                        Zb[m, j, r] = bj
                    q = 0
                    while q + 4 <= d:           # four inputs per pass: one load/store of Zb per four FMAs
                        w0 = W[c, row + q]
                        w1 = W[c, row + q + 1]
                        w2 = W[c, row + q + 2]
                        w3 = W[c, row + q + 3]
                        for r in range(B):
                            Zb[m, j, r] += ((w0 * Hb[m, q, r] + w1 * Hb[m, q + 1, r])
                                            + (w2 * Hb[m, q + 2, r] + w3 * Hb[m, q + 3, r]))
                        q += 4
                    while q < d:
                        wjq = W[c, row + q]
                        for r in range(B):
                            Zb[m, j, r] += wjq * Hb[m, q, r]
                        q += 1
                if m < L - 1 and noisy:
                    ho = hoff[m]
                    for j in range(k):
                        for r in range(B):
                            zz = Zb[m, j, r] + xi[c, r0 + r, ho + j]
                            Zb[m, j, r] = zz
                            fz = zz if (act == 1 or zz > zero) else slope * zz
                            Hb[m + 1, j, r] = fz + eta[c, r0 + r, ho + j]
                elif m < L - 1:
                    for j in range(k):
                        for r in range(B):
                            zz = Zb[m, j, r]
                            Hb[m + 1, j, r] = zz if (act == 1 or zz > zero) else slope * zz
            dout = widths[L]
            for j in range(dout):
                for r in range(B):
                    res = T[tc, r0 + r, j] - Zb[L - 1, j, r]
                    s += res * res
                    D1[j, r] = res * idy
            Dl = D1
            Dn = D2
            for m in range(L - 1, -1, -1):
                d = widths[m]
                k = widths[m + 1]
                o = offs[m]
                for j in range(k):
                    row = o + j * (d + 1)
                    acc = zero
                    for r in range(B):
                        acc += Dl[j, r]
                    g[row + d] += acc
                    q = 0
                    while q + 4 <= d:               # four inputs per pass: Dl[j] loaded once
                        a0 = zero
                        a1 = zero
                        a2 = zero
                        a3 = zero
                        for r in range(B):
                            dr = Dl[j, r]
                            a0 += dr * Hb[m, q, r]
                            a1 += dr * Hb[m, q + 1, r]
                            a2 += dr * Hb[m, q + 2, r]
                            a3 += dr * Hb[m, q + 3, r]
                        g[row + q] += a0
                        g[row + q + 1] += a1
                        g[row + q + 2] += a2
                        g[row + q + 3] += a3
                        q += 4
                    while q < d:
                        acc = zero
                        for r in range(B):
                            acc += Dl[j, r] * Hb[m, q, r]
                        g[row + q] += acc
                        q += 1
                if m > 0:
                    for q in range(d):
                        for r in range(B):
                            Dn[q, r] = zero
                    for j in range(k):
                        row = o + j * (d + 1)
                        for q in range(d):
                            wjq = W[c, row + q]
                            for r in range(B):
                                Dn[q, r] += wjq * Dl[j, r]
                    for q in range(d):
                        for r in range(B):
                            if act != 1 and Zb[m - 1, q, r] <= zero:
                                Dn[q, r] = slope * Dn[q, r]
                    Dl, Dn = Dn, Dl
        sse[c] = s


def frozen_noise_target(X, T, xi, eta, dy, widths, act, slope, compute="float64"):
    """Numba :func:`blockbayes.kernels.frozen_noise_target` (NumPy arrays, validated arguments,
    ``X`` 2-D): the inputs converted once to the compute dtype (``"float64"`` or ``"float32"``);
    returns ``theta ↦ (sse, grad)``, ``sse`` float64 (accumulated in float64 either way), ``grad``
    in the compute dtype."""
    ft = np.dtype(compute).type
    wd, offs, hoff = _layer_offsets(widths)
    # a target shared by the chains (a broadcast view) is read from its first chain
    tstride = 0 if (T.shape[0] == 1 or T.strides[0] == 0) else 1
    Tk = _ro(np.ascontiguousarray(T[:1] if tstride == 0 else T, dtype=ft))
    Xk = _ro(np.ascontiguousarray(X, dtype=ft))
    xk = _ro(np.ascontiguousarray(xi, dtype=ft))
    ek = _ro(np.ascontiguousarray(eta, dtype=ft))
    idy = _ro((1.0 / np.asarray(dy, dtype=np.float64)).astype(ft))      # 1/Δ_y in float64, then rounded
    act, slope, zero = int(act), ft(slope), ft(0.0)

    def target(theta):
        nc = theta.shape[0]
        sse = np.empty(nc)
        G = np.empty((nc, theta.shape[1]), dtype=ft)
        _fng_kernel(Xk, Tk, tstride, _ro(np.ascontiguousarray(theta, dtype=ft)), offs, wd, xk, ek, hoff, idy,
                    act, slope, zero, True, sse, G)
        return sse, G

    return target


def _layer_offsets(widths):
    """``(widths, offs, hoff)`` int64 arrays of :func:`_fng_kernel`: each layer's first weight in
    ``theta`` and each hidden layer's first column in the stacked noises."""
    wd = np.asarray(widths, dtype=np.int64)
    offs = np.zeros(len(widths) - 1, dtype=np.int64)
    hoff = np.zeros(max(len(widths) - 2, 1), dtype=np.int64)
    for m in range(1, len(widths) - 1):
        offs[m] = offs[m - 1] + wd[m] * (wd[m - 1] + 1)
    for m in range(1, len(widths) - 2):
        hoff[m] = hoff[m - 1] + wd[m]
    return _ro(wd), _ro(offs), _ro(hoff)


def network_target(X, Y, widths, act, slope):
    """Numba :func:`blockbayes.kernels.network_target` (NumPy, validated, float64): returns
    ``theta (M, P) ↦ (sse (M,), G (M, P))`` with ``G = Σ_μ (y_μ − F_μ)ᵀ ∂F_μ/∂θ`` for any ``M``."""
    wd, offs, hoff = _layer_offsets(widths)
    Tk = _ro(np.ascontiguousarray(Y, dtype=np.float64)[None])
    Xk = _ro(np.ascontiguousarray(X, dtype=np.float64))
    none = _ro(np.zeros((1, 1, 1)))
    act, slope = int(act), float(slope)
    ones = {}

    def target(theta):
        M, P = theta.shape
        idy = ones.get(M)
        if idy is None:
            idy = ones[M] = _ro(np.ones(M))
        sse = np.empty(M)
        G = np.empty((M, P))
        _fng_kernel(Xk, Tk, 0, _ro(np.ascontiguousarray(theta, dtype=np.float64)), offs, wd, none, none, hoff, idy,
                    act, slope, 0.0, False, sse, G)
        return sse, G

    return target


# --------------------------------------------------------------------------------------------
# symmetric matrix-vector products from the upper triangle (the HMC mass product M⁻¹p)
# --------------------------------------------------------------------------------------------

@njit(parallel=True, fastmath={"contract", "reassoc"}, **_JIT)
def _symv_upper_kernel(A, V, Y):
    """``Y[c] = A[c] V[c]`` for symmetric ``A[c]``, reading only its upper triangle, four rows at a time.

    Each stored ``a_ij`` (``j > i``) is read once and used twice (``y_i += a_ij v_j`` and
    ``y_j += a_ij v_i``), and a block of four rows shares every load and store of ``v_j`` and
    ``y_j``: half the matrix traffic of a dense product, which bounds it at HMC mass-matrix sizes.
    ``contract``/``reassoc`` as in :func:`_fng_kernel` (one fixed sequence per chain)."""
    nc, P = V.shape
    for c in prange(nc):
        x = V[c]
        y = Y[c]
        for i in range(P):
            y[i] = 0.0
        i = 0
        while i + 4 <= P:
            r0 = A[c, i]
            r1 = A[c, i + 1]
            r2 = A[c, i + 2]
            r3 = A[c, i + 3]
            x0 = x[i]
            x1 = x[i + 1]
            x2 = x[i + 2]
            x3 = x[i + 3]
            # the 4 x 4 diagonal block (upper part, mirrored)
            d0 = r0[i] * x0 + r0[i + 1] * x1 + r0[i + 2] * x2 + r0[i + 3] * x3
            d1 = r0[i + 1] * x0 + r1[i + 1] * x1 + r1[i + 2] * x2 + r1[i + 3] * x3
            d2 = r0[i + 2] * x0 + r1[i + 2] * x1 + r2[i + 2] * x2 + r2[i + 3] * x3
            d3 = r0[i + 3] * x0 + r1[i + 3] * x1 + r2[i + 3] * x2 + r3[i + 3] * x3
            s0 = r0[i + 4:]
            s1 = r1[i + 4:]
            s2 = r2[i + 4:]
            s3 = r3[i + 4:]
            xs = x[i + 4:]
            ys = y[i + 4:]
            a0 = 0.0
            a1 = 0.0
            a2 = 0.0
            a3 = 0.0
            for j in range(P - i - 4):
                xj = xs[j]
                a0 += s0[j] * xj
                a1 += s1[j] * xj
                a2 += s2[j] * xj
                a3 += s3[j] * xj
                ys[j] += s0[j] * x0 + s1[j] * x1 + s2[j] * x2 + s3[j] * x3
            y[i] += d0 + a0
            y[i + 1] += d1 + a1
            y[i + 2] += d2 + a2
            y[i + 3] += d3 + a3
            i += 4
        while i < P:                       # the last rows
            r = A[c, i]
            xi = x[i]
            acc = r[i] * xi
            for j in range(i + 1, P):
                acc += r[j] * x[j]
                y[j] += r[j] * xi
            y[i] += acc
            i += 1


def symmetric_operator(A, store="float64"):
    """Numba :func:`blockbayes.kernels.symmetric_operator` (NumPy ``(C, P, P)``, validated):
    returns ``v ↦ A v`` for ``v`` of shape ``(C, P)``, float64, reading ``A``'s upper triangles,
    held in the ``store`` dtype (``"float32"``: half the traffic; products and sums in float64)."""
    Ak = _ro(np.ascontiguousarray(A, dtype=np.dtype(store)))
    nc, P = A.shape[0], A.shape[1]

    def apply(v):
        Y = np.empty((nc, P))
        _symv_upper_kernel(Ak, _ro(np.ascontiguousarray(v, dtype=np.float64)), Y)
        return Y

    return apply
