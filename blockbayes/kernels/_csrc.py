"""C source of the fused kernels, shared by the CUDA launcher and its host-compiled twin.

One element-math source (:data:`ELEMENT_SRC`) compiles both as CUDA device code (NVRTC through
CuPy, or ``nvcc``) and as host C99 (``gcc``/``clang``): under ``__CUDACC__`` the helpers are
``__device__`` functions and the kernels ``__global__`` grid-stride loops; otherwise they are
plain C and the kernels are serial loops exported from a shared library. The test-suite
compiles the host flavour with the system C compiler and calls it through :mod:`ctypes` (the
"CPU twin" of the GPU kernel), so the exact code that runs on the GPU is checked against
:mod:`.reference` on machines without one; it also compiles the CUDA flavour with ``nvcc``
when that is installed.

The element math is the scalar path of :mod:`.cpu` (``_relu_elem``, ``_std_tn``) written in
C: same constants, same rationals (Estrin's scheme with ``fma``), same branches and shortcuts,
same order of operations. It calls the platform's ``exp``/``log``/``sqrt`` (CUDA's device
library on the GPU, libm in the twin) where the Numba kernels inline their own, so the two
agree to an ulp of those functions, not bit for bit; see :mod:`blockbayes.kernels` for the
formulas. Kernel entry points, for
``T`` = ``float`` (suffix ``f32``) or ``double`` (``f64``)::

    bb_relu_preact_<sfx>(const T* A, const T* X, T* Z, long long n,
                         unsigned long long k0, unsigned long long k1,
                         double p1, double p2, double n1, double n2,
                         double sd_pos, double sd_neg, double half_log)
    bb_truncated_normal_<sfx>(const T* mean, long long mean_step,
                              const T* sd, long long sd_step,
                              const T* bound, long long bound_step,
                              const unsigned char* upper, long long upper_step,
                              T* out, long long n,
                              unsigned long long k0, unsigned long long k1)

    bb_latent_pass_<sfx>(const T* Z, const T* A, const T* Tt, long long t_chains,
                         const double* W, const double* dnext, const double* F,
                         T* X, T* Zout, double* rowsums,
                         long long C, long long n, long long d, long long k,
                         long long row_offset, long long method, long long act, double slope,
                         const double* par, unsigned long long k0, unsigned long long k1)

``*_step`` is 1 for a full flat array and 0 for a broadcast scalar (element ``i`` reads
``x[i * step]``). ``bb_latent_pass`` is the fused latent pass of
:func:`blockbayes.kernels.latent_pass` with one thread per row (chain ``c``, row ``μ``), the
mathematics of :func:`blockbayes.kernels.cpu._latent_group` (``F``: the per-chain Cholesky
factors, computed by the launcher; ``t_chains`` 0 when the targets are shared by the chains;
``rowsums``: the three sums per row, reduced by the launcher; ``par``: per chain ``c`` the nine values ``par[9c..9c+8]`` =
``(Δ_X, Δ_Z, p1, p2, n1, n2, sd_pos, sd_neg, half_log)``, so every chain may have its own
``Δ``); ``d, k ≤ LATENT_MAX``.
"""
from __future__ import annotations

from . import _common as C

__all__ = ["ELEMENT_SRC", "source", "KERNEL_NAMES", "DTYPE_SUFFIX"]

DTYPE_SUFFIX = {"float32": ("float", "f32"), "float64": ("double", "f64")}
KERNEL_NAMES = tuple(f"bb_{k}_{s}" for k in ("relu_preact", "truncated_normal", "latent_pass")
                     for s in ("f32", "f64"))
#: widest layer (``d``) and next layer (``k``) the fused latent-pass kernel takes (per-thread
#: row buffers); wider layers go through the reference path on the GPU
LATENT_MAX = 64

_PRELUDE = r"""
#if defined(__CUDACC__)
#  define BB_FN static __device__ __forceinline__
#  define BB_KERNEL extern "C" __global__ void
#  define BB_RESTRICT __restrict__
#else
#  include <math.h>
#  define BB_FN static inline
#  if defined(_WIN32)
#    define BB_KERNEL __declspec(dllexport) void
#  else
#    define BB_KERNEL __attribute__((visibility("default"))) void
#  endif
#  define BB_RESTRICT restrict
#endif
typedef unsigned long long bb_u64;
"""

ELEMENT_SRC = r"""
#define BB_INV_SQRT2   0.70710678118654752440
#define BB_SQRT_PI_2   1.2533141373155002512
#define BB_SQRT_2_PI   0.79788456080286535588
#define BB_INV_SQRT_PI 0.56418958354775628695
#define BB_TWO_M53     1.1102230246251565404e-16
#define BB_ALPHA0      %(ALPHA0)r
#define BB_ALPHA_EXP   %(ALPHA_EXP)r
#define BB_NEWTON_ITERS %(NEWTON_ITERS)d
#define BB_NEWTON_STOP %(NEWTON_STOP)r

/* ---- counter-based uniforms ---------------------------------------------------------- */
BB_FN bb_u64 bb_mix64(bb_u64 z)
{
    z = (z ^ (z >> 30)) * 0x%(MIX_M1)XULL;
    z = (z ^ (z >> 27)) * 0x%(MIX_M2)XULL;
    return z ^ (z >> 31);
}

BB_FN double bb_uniform(bb_u64 k0, bb_u64 k1, bb_u64 c)
{
    bb_u64 b = bb_mix64(bb_mix64(c * 0x%(GOLDEN)XULL + k0) ^ k1);
    return ((double)(b >> 11) + 0.5) * BB_TWO_M53;
}

/* ---- special functions: Cody's CALERF and Wichura's AS241 rationals, evaluated by -------
   Estrin's scheme with fused multiply-adds (mirrors blockbayes.kernels.cpu) ------------- */
BB_FN double bb_poly4(double y, double a0, double a1, double a2, double a3, double a4)
{
    double y2 = y * y;
    return fma(fma(a4, y2, fma(a3, y, a2)), y2, fma(a1, y, a0));
}

BB_FN double bb_poly5(double y, double a0, double a1, double a2, double a3, double a4,
                      double a5)
{
    double y2 = y * y;
    return fma(fma(a5, y, a4), y2 * y2, fma(fma(a3, y, a2), y2, fma(a1, y, a0)));
}

BB_FN double bb_poly7(double y, double a0, double a1, double a2, double a3, double a4,
                      double a5, double a6, double a7)
{
    double y2 = y * y;
    double lo = fma(fma(a3, y, a2), y2, fma(a1, y, a0));
    double hi = fma(fma(a7, y, a6), y2, fma(a5, y, a4));
    return fma(hi, y2 * y2, lo);
}

BB_FN double bb_poly8(double y, double a0, double a1, double a2, double a3, double a4,
                      double a5, double a6, double a7, double a8)
{
    double y2 = y * y, y4 = y2 * y2;
    double lo = fma(fma(a3, y, a2), y2, fma(a1, y, a0));
    double hi = fma(fma(a7, y, a6), y2, fma(a5, y, a4));
    return fma(a8, y4 * y4, fma(hi, y4, lo));
}

BB_FN double bb_erf_small(double y)          /* erf(y), 0 <= y <= 0.46875 */
{
    double z = y * y;
    double num = bb_poly4(z, 3.20937758913846947e3, 3.77485237685302021e2, 1.13864154151050156e2,
                          3.16112374387056560e0, 1.85777706184603153e-1);
    double den = bb_poly4(z, 2.84423683343917062e3, 1.28261652607737228e3, 2.44024637934444173e2,
                          2.36012909523441209e1, 1.0);
    return y * num / den;
}

BB_FN double bb_erfcx(double y)              /* exp(y^2) erfc(y), y >= 0 */
{
    double num, den, v, z;
    if (y <= 0.46875) return exp(y * y) * (1.0 - bb_erf_small(y));
    if (y <= 4.0) {
        num = bb_poly8(y, 1.23033935479799725e3, 2.05107837782607147e3, 1.71204761263407058e3,
                       8.81952221241769090e2, 2.98635138197400131e2, 6.61191906371416295e1,
                       8.88314979438837594e0, 5.64188496988670089e-1, 2.15311535474403846e-8);
        den = bb_poly8(y, 1.23033935480374942e3, 3.43936767414372164e3, 4.36261909014324716e3,
                       3.29079923573345963e3, 1.62138957456669019e3, 5.37181101862009858e2,
                       1.17693950891312499e2, 1.57449261107098347e1, 1.0);
        return num / den;
    }
    v = 1.0 / y;
    z = v * v;
    num = bb_poly5(z, 6.58749161529837803e-4, 1.60837851487422766e-2, 1.25781726111229246e-1,
                   3.60344899949804439e-1, 3.05326634961232344e-1, 1.63153871373020978e-2);
    den = bb_poly5(z, 2.33520497626869185e-3, 6.05183413124413191e-2, 5.27905102951428412e-1,
                   1.87295284992346047e0, 2.56852019228982242e0, 1.0);
    return (BB_INV_SQRT_PI - z * num / den) * v;
}

BB_FN double bb_exp_neg_sq(double y)         /* exp(-y^2), y^2 = hi + lo exactly */
{
    double hi = y * y;
    double lo = fma(y, y, -hi);
    return exp(-hi) * (1.0 - lo);
}

BB_FN double bb_erfc_given(double y, double rx)  /* erfc(y), y >= 0, given rx = erfcx(y) */
{
    if (y <= 0.46875) return 1.0 - bb_erf_small(y);
    if (y >= 27.3) return 0.0;
    return rx * bb_exp_neg_sq(y);
}

BB_FN double bb_erfc_pos(double y)           /* erfc(y), y >= 0 */
{
    if (y <= 0.46875) return 1.0 - bb_erf_small(y);
    if (y >= 27.3) return 0.0;
    return bb_erfcx(y) * bb_exp_neg_sq(y);
}

BB_FN double bb_ndtri(double p)              /* inverse normal CDF, 0 < p < 1 (AS241) */
{
    double q = p - 0.5, r, num, den, x;
    if (fabs(q) <= 0.425) {
        r = 0.180625 - q * q;
        num = bb_poly7(r, 3.3871328727963666080e+0, 1.3314166789178437745e+2,
                       1.9715909503065514427e+3, 1.3731693765509461125e+4,
                       4.5921953931549871457e+4, 6.7265770927008700853e+4,
                       3.3430575583588128105e+4, 2.5090809287301226727e+3);
        den = bb_poly7(r, 1.0, 4.2313330701600911252e+1, 6.8718700749205790830e+2,
                       5.3941960214247511077e+3, 2.1213794301586595867e+4,
                       3.9307895800092710610e+4, 2.8729085735721942674e+4,
                       5.2264952788528545610e+3);
        return q * num / den;
    }
    r = (q <= 0.0) ? p : 1.0 - p;
    r = sqrt(-log(r));
    if (r <= 5.0) {
        r = r - 1.6;
        num = bb_poly7(r, 1.42343711074968357734e+0, 4.63033784615654529590e+0,
                       5.76949722146069140550e+0, 3.64784832476320460504e+0,
                       1.27045825245236838258e+0, 2.41780725177450611770e-1,
                       2.27238449892691845833e-2, 7.74545014278341407640e-4);
        den = bb_poly7(r, 1.0, 2.05319162663775882187e+0, 1.67638483018380384940e+0,
                       6.89767334985100004550e-1, 1.48103976427480074590e-1,
                       1.51986665636164571966e-2, 5.47593808499534494600e-4,
                       1.05075007164441684324e-9);
    } else {
        r = r - 5.0;
        num = bb_poly7(r, 6.65790464350110377720e+0, 5.46378491116411436990e+0,
                       1.78482653991729133580e+0, 2.96560571828504891230e-1,
                       2.65321895265761230930e-2, 1.24266094738807843860e-3,
                       2.71155556874348757815e-5, 2.01033439929228813265e-7);
        den = bb_poly7(r, 1.0, 5.99832206555887937690e-1, 1.36929880922735805310e-1,
                       1.48753612908506148525e-2, 7.86869131145613259100e-4,
                       1.84631831751005468180e-5, 1.42151175831644588870e-7,
                       2.04426310338993978564e-15);
    }
    x = num / den;
    return (q < 0.0) ? -x : x;
}

/* ---- ReLU branch choice and the standardised truncated normal ------------------------- */
#define BB_ELL_SURE 38.0
#define BB_R_ONE    8.5

/* one piece: G(r) = q + log(R/2); *hint = erfc (r > 0) or erfcx (r <= 0) value, or -1 */
BB_FN double bb_piece(double r, double *q, double *hint)
{
    double y = fabs(r) * BB_INV_SQRT2, ec;
    if (r <= 0.0) {
        double rx = bb_erfcx(y);
        *q = 0.0;
        *hint = rx;
        return rx;
    }
    *q = 0.5 * r * r;
    if (r >= BB_R_ONE) { *hint = -1.0; return 2.0; }
    ec = bb_erfc_pos(y);
    *hint = ec;
    return 2.0 - ec;
}

/* ell = half_log + (q+ - q-) + log(R+/R-), hints of both pieces */
BB_FN double bb_log_odds(double rp, double rm, double half_log, double *hp, double *hm)
{
    double qp, qm;
    double big_rp = bb_piece(rp, &qp, hp);
    double big_rm = bb_piece(rm, &qm, hm);
    return half_log + (qp - qm) + log(big_rp / big_rm);
}

/* positive branch iff u1 < sigmoid(ell); *hint for the chosen piece's draw */
BB_FN int bb_branch(double rp, double rm, double half_log, bb_u64 k0, bb_u64 k1, bb_u64 c,
                    double *hint)
{
    int sure_pos = (rm <= 0.0) & (rp > 0.0) & (half_log + 0.5 * rp * rp >= BB_ELL_SURE);
    int sure_neg = (rp <= 0.0) & (rm > 0.0) & (half_log - 0.5 * rm * rm <= -BB_ELL_SURE);
    double hp, hm, ell;
    int pos;
    if (sure_pos | sure_neg) { *hint = -1.0; return sure_pos; }
    ell = bb_log_odds(rp, rm, half_log, &hp, &hm);
    if (ell >= BB_ELL_SURE) pos = 1;
    else if (ell <= -BB_ELL_SURE) pos = 0;
    else {
        double t = exp(-fabs(ell));
        double pi = (ell >= 0.0) ? 1.0 / (1.0 + t) : t / (1.0 + t);
        pos = bb_uniform(k0, k1, c) < pi;
    }
    *hint = pos ? hp : hm;
    return pos;
}

/* T ~ N(0,1) | T >= alpha by inversion of u; returns e = T - alpha >= 0 and *t_out = T.
   hint (>= 0 if known): erfc(|alpha|/sqrt2) for alpha < 0, erfcx(alpha/sqrt2) for alpha >= 0 */
BB_FN double bb_std_tn(double alpha, double u, double hint, double *t_out)
{
    double y = fabs(alpha) * BB_INV_SQRT2;
    if (alpha < BB_ALPHA0) {
        double pm, nd, t;
        int lo;
        if (alpha < -8.3) {
            lo = (u <= 0.5);
            pm = lo ? u : 1.0 - u;
            if (!lo && alpha >= -12.0) {
                double ec = (hint >= 0.0) ? hint : bb_erfc_pos(y);
                pm = 0.5 * ec + pm;
            }
        } else {
            double ec, w, c, d, p;
            if (hint < 0.0) ec = bb_erfc_pos(y);
            else if (alpha < 0.0) ec = hint;
            else ec = bb_erfc_given(y, hint);
            w = 0.5 * ec;
            c = (alpha >= 0.0) ? w : 1.0 - w;
            d = (alpha >= 0.0) ? 1.0 - w : w;
            p = u * c;
            lo = (p <= 0.5);
            pm = lo ? p : d + (1.0 - u) * c;
        }
        nd = bb_ndtri(pm);
        t = lo ? -nd : nd;
        if (t < alpha) t = alpha;
        *t_out = t;
        return t - alpha;
    }
    {
        double big = -log(u), e;
        if (alpha > BB_ALPHA_EXP) {
            e = big / alpha;
            *t_out = BB_ALPHA_EXP + e;
            return e;
        }
        {
            double e0 = (hint >= 0.0) ? hint : bb_erfcx(y);
            double lam = BB_SQRT_2_PI / e0;
            double g = 2.0 * big / alpha;
            double ea = g / (1.0 + sqrt(1.0 + g / alpha)), eb = big / lam;
            int it;
            e = (ea < eb) ? ea : eb;
            for (it = 0; it < BB_NEWTON_ITERS; ++it) {
                double ey = bb_erfcx((alpha + e) * BB_INV_SQRT2);
                double de = (log(ey / e0) - e * (alpha + 0.5 * e) + big) * ey * BB_SQRT_PI_2;
                e += de;
                if (fabs(de) <= BB_NEWTON_STOP * (e + 1.0 / alpha)) break;
            }
        }
        if (e < 0.0) e = 0.0;
        *t_out = alpha + e;
        return e;
    }
}

/* one ReLU / leaky-ReLU element (flat index i); *pos receives the branch */
BB_FN double bb_relu_elem(double a, double x, bb_u64 k0, bb_u64 k1, bb_u64 i,
                          double p1, double p2, double n1, double n2,
                          double sdp, double sdm, double half_log, int *pos)
{
    bb_u64 c = i * 2ULL;
    double u2 = bb_uniform(k0, k1, c + 1ULL);
    double rp = a * p1 + x * p2;
    double rm = -(a * n1 + x * n2);
    double hint, t, e;
    int ps = bb_branch(rp, rm, half_log, k0, k1, c, &hint);
    e = bb_std_tn(ps ? -rp : -rm, u2, hint, &t);
    *pos = ps;
    return (ps ? sdp : -sdm) * e;
}

/* one truncated-normal element (flat index i), before the cast */
BB_FN double bb_tn_elem(double m, double s, double b, int up, bb_u64 k0, bb_u64 k1, bb_u64 i)
{
    double z;
    if (s > 0.0) {
        double u = bb_uniform(k0, k1, i);
        double alpha = up ? (m - b) / s : (b - m) / s;
        double t, e = bb_std_tn(alpha, u, -1.0, &t);
        if (alpha < 0.0) z = up ? m - s * t : m + s * t;
        else z = up ? b - s * e : b + s * e;
    } else {
        z = m;                                  /* sd <= 0: the sd -> 0 limit */
    }
    if (up) { if (z > b) z = b; } else { if (z < b) z = b; }
    return z;
}
""" % dict(ALPHA0=C.ALPHA0, ALPHA_EXP=C.ALPHA_EXP, NEWTON_ITERS=C.NEWTON_ITERS,
           NEWTON_STOP=C.NEWTON_STOP, MIX_M1=C.MIX_M1, MIX_M2=C.MIX_M2, GOLDEN=C.GOLDEN)

_KERNELS_TEMPLATE = r"""
BB_KERNEL bb_relu_preact_%(sfx)s(const %(T)s* BB_RESTRICT A, const %(T)s* BB_RESTRICT X,
                               %(T)s* BB_RESTRICT Z, long long n, bb_u64 k0, bb_u64 k1,
                               double p1, double p2, double n1, double n2,
                               double sdp, double sdm, double half_log)
{
    BB_LOOP(i, n) {
        int pos;
        double z = bb_relu_elem((double)A[i], (double)X[i], k0, k1, (bb_u64)i,
                                p1, p2, n1, n2, sdp, sdm, half_log, &pos);
        %(T)s zc = (%(T)s)z;
        if (pos) { if (zc < (%(T)s)0) zc = (%(T)s)0; }
        else if (zc > (%(T)s)0) zc = (%(T)s)(-0.0);
        Z[i] = zc;
    }
}

BB_KERNEL bb_truncated_normal_%(sfx)s(const %(T)s* BB_RESTRICT mean, long long ms,
                                    const %(T)s* BB_RESTRICT sd, long long ss,
                                    const %(T)s* BB_RESTRICT bound, long long bs,
                                    const unsigned char* BB_RESTRICT upper, long long us,
                                    %(T)s* BB_RESTRICT out, long long n, bb_u64 k0, bb_u64 k1)
{
    BB_LOOP(i, n) {
        %(T)s bo = bound[i * bs];
        int up = upper[i * us] != 0;
        double z = bb_tn_elem((double)mean[i * ms], (double)sd[i * ss], (double)bo, up,
                              k0, k1, (bb_u64)i);
        %(T)s zc = (%(T)s)z;
        if (up) { if (zc > bo) zc = bo; }
        else if (zc < bo) zc = bo;
        out[i] = zc;
    }
}
"""

_LATENT_TEMPLATE = r"""
BB_KERNEL bb_latent_pass_%(sfx)s(const %(T)s* BB_RESTRICT Z, const %(T)s* BB_RESTRICT A,
                               const %(T)s* BB_RESTRICT Tt, long long t_chains,
                               const double* BB_RESTRICT W, const double* BB_RESTRICT dnext,
                               const double* BB_RESTRICT F, %(T)s* BB_RESTRICT Xo,
                               %(T)s* BB_RESTRICT Zo, double* BB_RESTRICT rs,
                               long long nc, long long n, long long d, long long k,
                               long long row_offset, long long method, long long act, double slope,
                               const double* BB_RESTRICT par, bb_u64 k0, bb_u64 k1)
{
    BB_LOOP(r, nc * n) {
        double xb[BB_LATENT_MAX], nb[BB_LATENT_MAX], rb[BB_LATENT_MAX], eb[BB_LATENT_MAX];
        long long c = r / n, mu = r - c * n, j, m, p;
        long long fm = method == 0 ? k : d;
        const double* Wc = W + c * k * (d + 1);
        const double* L = F + c * fm * fm;
        const double* pc = par + 9 * c;
        double dx = pc[0], dz = pc[1], p1 = pc[2], p2 = pc[3], n1 = pc[4], n2 = pc[5];
        double sdp = pc[6], sdm = pc[7], half_log = pc[8];
        double dn = dnext[c], se = sqrt(dn), sx = sqrt(dx), ratio = dx / dn;
        bb_u64 g = (bb_u64)(row_offset + mu) * (bb_u64)nc + (bb_u64)c;
        bb_u64 base = g * (bb_u64)d;
        long long row = (c * n + mu) * d;
        long long trow = ((t_chains ? c : 0) * n + mu) * k;
        double s_in = 0.0, s_next = 0.0, s_x = 0.0, s;
        for (j = 0; j < d; ++j) {
            double zo = (double)Z[row + j], a = (double)A[row + j];
            s_in += (zo - a) * (zo - a);
            xb[j] = zo >= 0.0 ? zo : slope * zo;
            nb[j] = bb_ndtri(bb_uniform(k0, k1, BB_STREAM_X + base + (bb_u64)j));
        }
        if (method == 0) {
            for (j = 0; j < d; ++j) xb[j] += sx * nb[j];
            for (m = 0; m < k; ++m) {
                double e = bb_ndtri(bb_uniform(k0, k1, BB_STREAM_E + g * (bb_u64)k + (bb_u64)m));
                eb[m] = e;
                s = (double)Tt[trow + m] - Wc[m * (d + 1) + d];
                for (j = 0; j < d; ++j) s -= Wc[m * (d + 1) + j] * xb[j];
                rb[m] = s - se * e;
            }
            for (m = 0; m < k; ++m) {
                s = rb[m];
                for (p = 0; p < m; ++p) s -= L[m * k + p] * rb[p];
                rb[m] = s / L[m * k + m];
            }
            for (m = k - 1; m >= 0; --m) {
                s = rb[m];
                for (p = m + 1; p < k; ++p) s -= L[p * k + m] * rb[p];
                rb[m] = s / L[m * k + m];
            }
            for (m = 0; m < k; ++m) {
                double res = dn * rb[m] + se * eb[m];
                s_next += res * res;
            }
            for (m = 0; m < k; ++m) {
                double ym = dx * rb[m];
                for (j = 0; j < d; ++j) xb[j] += Wc[m * (d + 1) + j] * ym;
            }
        } else {
            for (m = 0; m < k; ++m) eb[m] = (double)Tt[trow + m] - Wc[m * (d + 1) + d];
            for (m = 0; m < k; ++m) {
                double em = ratio * eb[m];
                for (j = 0; j < d; ++j) xb[j] += em * Wc[m * (d + 1) + j];
            }
            for (j = 0; j < d; ++j) {
                s = xb[j];
                for (p = 0; p < j; ++p) s -= L[j * d + p] * xb[p];
                xb[j] = s / L[j * d + j];
            }
            for (j = 0; j < d; ++j) xb[j] += sx * nb[j];
            for (j = d - 1; j >= 0; --j) {
                s = xb[j];
                for (p = j + 1; p < d; ++p) s -= L[p * d + j] * xb[p];
                xb[j] = s / L[j * d + j];
            }
            for (m = 0; m < k; ++m) {
                s = eb[m];
                for (j = 0; j < d; ++j) s -= Wc[m * (d + 1) + j] * xb[j];
                s_next += s * s;
            }
        }
        for (j = 0; j < d; ++j) {
            %(T)s xc = (%(T)s)xb[j];
            double xs = (double)xc, a = (double)A[row + j], zn, fz;
            %(T)s zc;
            Xo[row + j] = xc;
            if (act == 0) {
                int pos;
                zn = bb_relu_elem(a, xs, k0, k1, base + (bb_u64)j, p1, p2, n1, n2, sdp, sdm,
                                  half_log, &pos);
                zc = (%(T)s)zn;
                if (pos) { if (zc < (%(T)s)0) zc = (%(T)s)0; }
                else if (zc > (%(T)s)0) zc = (%(T)s)(-0.0);
            } else {
                double su = dx + dz;
                double u = bb_uniform(k0, k1, (base + (bb_u64)j) * 2ULL);
                zc = (%(T)s)((dx * a + dz * xs) / su + sqrt(dx * dz / su) * bb_ndtri(u));
            }
            Zo[row + j] = zc;
            zn = (double)zc;
            fz = zn >= 0.0 ? zn : slope * zn;
            s_x += (xs - fz) * (xs - fz);
        }
        rs[3 * r] = s_in;
        rs[3 * r + 1] = s_next;
        rs[3 * r + 2] = s_x;
    }
}
"""

_LOOP = r"""
#if defined(__CUDACC__)
#  define BB_LOOP(i, n) for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; \
                             i < (n); i += (long long)blockDim.x * gridDim.x)
#else
#  define BB_LOOP(i, n) for (long long i = 0; i < (n); ++i)
#endif
"""


def source() -> str:
    """The complete translation unit: prelude, element math and the four kernels.

    Compiles as CUDA (``__CUDACC__`` defined by NVRTC and nvcc: ``__global__`` grid-stride
    kernels, ``extern "C"`` names) and as host C99 (serial loops, exported names).
    """
    kernels = "".join((_KERNELS_TEMPLATE + _LATENT_TEMPLATE) % dict(T=T, sfx=sfx)
                      for T, sfx in DTYPE_SUFFIX.values())
    consts = (f"#define BB_LATENT_MAX {LATENT_MAX}\n#define BB_STREAM_X {C.STREAM_X}ULL\n"
              f"#define BB_STREAM_E {C.STREAM_E}ULL\n")
    return _PRELUDE + ELEMENT_SRC + consts + _LOOP + kernels
