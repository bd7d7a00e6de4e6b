"""Tests of blockbayes.kernels: unit, equivalence (Hypothesis), exactness and distribution tests.

Stochastic tests state their false-failure probability. Each distribution test uses the DKW
inequality P(sup|F_n − F| > ε) ≤ 2 exp(−2nε²) with δ = 1e-6 per comparison (Bonferroni over
the comparisons of a test keeps every test below 1e-5), and binomial tests use the exact
two-sided p-value against 1e-6. Every distribution test also runs a deliberately broken twin
and asserts that the same check rejects it.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest
import scipy.special as sc
import scipy.stats as st
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from _helpers import njit_twin

from blockbayes import kernels
from blockbayes._backend.random import key as make_key
from blockbayes._backend.random import split
from blockbayes.kernels import _common, _csrc, reference

xs = pytest.importorskip("array_api_strict")
mp = pytest.importorskip("mpmath")

DELTA = 1e-6
HYP = settings(derandomize=True, deadline=None, max_examples=40,
               suppress_health_check=[HealthCheck.too_slow])


def dkw_eps(n: int, delta: float = DELTA) -> float:
    """ε with P(sup|F_n − F| > ε) ≤ delta (Massart's tight DKW constant)."""
    return math.sqrt(math.log(2.0 / delta) / (2.0 * n))


def ks_stat(samples, cdf) -> float:
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = x.size
    f = cdf(x)
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - f), np.max(f - (i - 1) / n)))


# --------------------------------------------------------------------------------------------
# independent oracles (mpmath, original MATH.md §A.3 formulas)
# --------------------------------------------------------------------------------------------

def pieces(a, x, dz, dx, slope):
    """Per piece (slope α_k): τ_k, m_k, c_k of MATH.md §A.3 (float64, NumPy arrays)."""
    out = {}
    for name, al in (("pos", 1.0), ("neg", slope)):
        tau = 1.0 / dz + al * al / dx
        m = (a / dz + al * x / dx) / tau
        out[name] = (tau, m, 1.0 / np.sqrt(tau))
    return out


def log_odds_mp(a, x, dz, dx, slope, dps=60):
    """log(π₊/π₋) from the masses log M_k = c_k − ½ log τ_k + log Φ(±√τ_k m_k), in mpmath."""
    with mp.workdps(dps):
        a, x, dz, dx, s = (mp.mpf(float(v)) for v in (a, x, dz, dx, slope))
        out = []
        for al, sign in ((mp.mpf(1), 1), (s, -1)):
            tau = 1 / dz + al * al / dx
            m = (a / dz + al * x / dx) / tau
            c = -(x - al * a) ** 2 / (2 * (dx + al * al * dz))
            out.append(c - mp.log(tau) / 2 + mp.log(mp.ncdf(sign * mp.sqrt(tau) * m)))
        return float(out[0] - out[1])


def mixture_cdf(t, a, x, dz, dx, slope, pi_pos):
    """Exact CDF of the ReLU / leaky-ReLU conditional (MATH.md §E.3), log-space pieces."""
    pc = pieces(a, x, dz, dx, slope)
    _, mp_, sp_ = pc["pos"]
    _, mn, sn = pc["neg"]
    t = np.asarray(t, dtype=np.float64)
    tn = np.minimum(t, 0.0)
    f_neg = np.exp(sc.log_ndtr((tn - mn) / sn) - sc.log_ndtr(-mn / sn))
    tp = np.maximum(t, 0.0)
    f_pos = -np.expm1(sc.log_ndtr((mp_ - tp) / sp_) - sc.log_ndtr(mp_ / sp_))
    return (1.0 - pi_pos) * f_neg + pi_pos * f_pos


def tn_cdf(t, alpha):
    """CDF of N(0,1) | T ≥ α: 1 − Φ(−t)/Φ(−α) in log space."""
    t = np.maximum(np.asarray(t, dtype=np.float64), alpha)
    return -np.expm1(sc.log_ndtr(-t) - sc.log_ndtr(-alpha))


# --------------------------------------------------------------------------------------------
# uniforms
# --------------------------------------------------------------------------------------------

def test_uniforms_definition_bit_exact():
    k = make_key(7)
    k0, k1 = int(k[0]), int(k[1])
    u = kernels.uniforms(k, 64, like=np.zeros(1))
    assert u.dtype == np.float64 and u.shape == (64,)
    expected = np.array([_common.uniform_scalar(k0, k1, c) for c in range(64)])
    np.testing.assert_array_equal(u, expected)
    # the definition in the docstring, written out once more with Python ints
    M = (1 << 64) - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
        return z ^ (z >> 31)

    b = mix(mix((5 * 0x9E3779B97F4A7C15 + k0) & M) ^ k1)
    assert u[5] == ((b >> 11) + 0.5) * 2.0 ** -53


def test_uniforms_sanity_and_keys():
    n = 200_000
    k1, k2 = split(make_key(3))
    u = kernels.uniforms(k1, (400, 500), like=np.zeros(1))
    assert u.shape == (400, 500)
    v = u.ravel()
    assert v.min() > 0.0 and v.max() < 1.0
    # mean and variance: 5-sigma bounds (false alarm < 1e-6 each, CLT)
    assert abs(v.mean() - 0.5) < 5.0 * math.sqrt(1 / 12 / n)
    assert abs(v.var() - 1 / 12) < 5.0 * math.sqrt(1 / 180 / n)
    assert ks_stat(v, lambda t: t) < dkw_eps(n)
    # lag-1 correlation of consecutive counters (|r| < 5/sqrt(n))
    assert abs(np.corrcoef(v[:-1], v[1:])[0, 1]) < 5.0 / math.sqrt(n)
    w = kernels.uniforms(k2, (400, 500), like=np.zeros(1)).ravel()
    assert np.mean(v == w) < 1e-3
    assert ks_stat(w, lambda t: t) < dkw_eps(n)
    # the same key gives the same numbers in every namespace
    us = kernels.uniforms(k1, (400, 500), like=xs.zeros(1))
    np.testing.assert_array_equal(np.asarray(us), u)


# --------------------------------------------------------------------------------------------
# unit tests: API, dispatch, dtype / shape / namespace, no mutation, errors
# --------------------------------------------------------------------------------------------

def _relu_inputs(shape, dtype, seed=0, delta=1e-3):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape)
    x = np.maximum(a, 0.0) + math.sqrt(delta) * rng.standard_normal(shape)
    return a.astype(dtype), x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("impl", [None, "cpu", "reference"])
def test_relu_preact_contract(dtype, impl):
    A, X = _relu_inputs((2, 3, 5), dtype)
    A0, X0 = A.copy(), X.copy()
    k = make_key(11)
    k_copy = k.copy()
    Z = kernels.relu_preact(k, A, X, 1e-3, 2e-3, slope=0.0, impl=impl)
    assert isinstance(Z, np.ndarray) and Z.shape == A.shape and Z.dtype == dtype
    assert Z is not A and Z is not X
    np.testing.assert_array_equal(A, A0)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(k, k_copy)
    assert np.all(np.isfinite(Z))
    # deterministic given the key
    np.testing.assert_array_equal(Z, kernels.relu_preact(k, A, X, 1e-3, 2e-3, impl=impl))


def test_relu_preact_zero_d_and_empty():
    k = make_key(1)
    z = kernels.relu_preact(k, np.asarray(0.3), np.asarray(0.2), 1e-2, 1e-2)
    assert z.shape == () and np.isfinite(z)
    e = kernels.relu_preact(k, np.zeros((0, 3)), np.zeros((0, 3)), 1e-2, 1e-2)
    assert e.shape == (0, 3)
    zr = kernels.relu_preact(k, np.asarray(0.3), np.asarray(0.2), 1e-2, 1e-2, impl="reference")
    np.testing.assert_allclose(z, zr, rtol=1e-12)


def test_relu_preact_non_contiguous_input():
    A, X = _relu_inputs((6, 8), np.float64)
    k = make_key(5)
    Zt = kernels.relu_preact(k, A.T, X.T, 1e-3, 1e-3)
    Zc = kernels.relu_preact(k, np.ascontiguousarray(A.T), np.ascontiguousarray(X.T), 1e-3, 1e-3)
    np.testing.assert_array_equal(Zt, Zc)   # counters follow the C order of the logical array


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_array_api_strict_goes_through_reference(dtype):
    A, X = _relu_inputs((4, 7), dtype)
    k = make_key(2)
    As = xs.asarray(A)
    Xs = xs.asarray(X)
    Z = kernels.relu_preact(k, As, Xs, 1e-3, 1e-3, slope=0.1)
    assert type(Z) is type(As) and Z.dtype == getattr(xs, dtype) and Z.shape == (4, 7)
    np.testing.assert_array_equal(
        np.asarray(Z), kernels.relu_preact(k, A, X, 1e-3, 1e-3, slope=0.1, impl="reference"))
    T = kernels.truncated_normal(k, As, 0.5, 0.0, Xs > 0.0)
    assert type(T) is type(As) and T.dtype == getattr(xs, dtype)
    np.testing.assert_array_equal(
        np.asarray(T), kernels.truncated_normal(k, A, 0.5, 0.0, X > 0.0, impl="reference"))
    with pytest.raises(ValueError, match="NumPy"):
        kernels.relu_preact(k, As, Xs, 1e-3, 1e-3, impl="cpu")


def test_dispatch_by_array_type(monkeypatch):
    used = []
    real = kernels._module
    monkeypatch.setattr(kernels, "_module", lambda name: used.append(name) or real(name))
    A, X = _relu_inputs((3, 4), np.float64)
    k = make_key(0)
    kernels.relu_preact(k, A, X, 1e-3, 1e-3)
    kernels.relu_preact(k, xs.asarray(A), xs.asarray(X), 1e-3, 1e-3)
    kernels.relu_preact(k, A, X, 1e-3, 1e-3, impl="reference")
    kernels.truncated_normal(k, A, 1.0, 0.0, False)
    kernels.truncated_normal(k, xs.asarray(A), 1.0, 0.0, False)
    assert used == ["cpu", "reference", "reference", "cpu", "reference"]
    assert "reference" in kernels.available_impls() and "cpu" in kernels.available_impls()


def test_relu_preact_errors():
    A, X = _relu_inputs((3,), np.float64)
    k = make_key(0)
    with pytest.raises(TypeError, match="key"):
        kernels.relu_preact(np.array([1, 2]), A, X, 1e-3, 1e-3)
    with pytest.raises(ValueError, match="shape"):
        kernels.relu_preact(k, A, X[:2], 1e-3, 1e-3)
    with pytest.raises(ValueError, match="positive"):
        kernels.relu_preact(k, A, X, 0.0, 1e-3)
    with pytest.raises(ValueError, match="positive"):
        kernels.relu_preact(k, A, X, 1e-3, float("nan"))
    with pytest.raises(ValueError, match="slope"):
        kernels.relu_preact(k, A, X, 1e-3, 1e-3, slope=1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        kernels.relu_preact(k, A.astype(np.int64), X, 1e-3, 1e-3)
    with pytest.raises(ValueError, match="impl"):
        kernels.relu_preact(k, A, X, 1e-3, 1e-3, impl="gpu")
    with pytest.raises(ValueError, match="CuPy"):
        kernels.relu_preact(k, A, X, 1e-3, 1e-3, impl="cuda")
    with pytest.raises(ValueError, match="different array libraries"):
        kernels.relu_preact(k, A, xs.asarray(X), 1e-3, 1e-3)


def test_relu_preact_mixed_dtypes_promote():
    A, X = _relu_inputs((5,), np.float64)
    Z = kernels.relu_preact(make_key(0), A.astype(np.float32), X, 1e-3, 1e-3)
    assert Z.dtype == np.float64


@pytest.mark.parametrize("impl", ["cpu", "reference"])
def test_truncated_normal_contract(impl):
    k = make_key(4)
    mean = np.linspace(-3, 3, 12).reshape(3, 4)
    mean0 = mean.copy()
    up = np.array([True, False, True, False])
    T = kernels.truncated_normal(k, mean, 0.7, 0.0, up, impl=impl)
    assert T.shape == (3, 4) and T.dtype == np.float64
    np.testing.assert_array_equal(mean, mean0)
    assert np.all(T[:, up] <= 0.0) and np.all(T[:, ~up] >= 0.0)
    # float32 result type, Python-float parameters adopt it
    T32 = kernels.truncated_normal(k, mean.astype(np.float32), 0.7, 0.1, False, impl=impl)
    assert T32.dtype == np.float32 and np.all(T32 >= np.float32(0.1))
    # broadcasting of all four arguments
    T3 = kernels.truncated_normal(k, np.zeros((3, 1)), np.ones((1, 4)), 0.5,
                                  np.array([False, True, False, True]), impl=impl)
    assert T3.shape == (3, 4)
    assert np.all(T3[:, [0, 2]] >= 0.5) and np.all(T3[:, [1, 3]] <= 0.5)
    # sd = 0: the sd -> 0 limit (mean clamped to the bound)
    T0 = kernels.truncated_normal(k, np.array([-1.0, 2.0]), 0.0, 0.5, False, impl=impl)
    np.testing.assert_array_equal(T0, [0.5, 2.0])


def test_truncated_normal_errors():
    k = make_key(0)
    with pytest.raises(TypeError, match="array"):
        kernels.truncated_normal(k, 0.0, 1.0, 0.0, False)
    with pytest.raises(TypeError, match="bool"):
        kernels.truncated_normal(k, np.zeros(3), 1.0, 0.0, np.zeros(3))
    with pytest.raises(ValueError, match="broadcast"):
        kernels.truncated_normal(k, np.zeros(3), np.ones(4), 0.0, False)


# --------------------------------------------------------------------------------------------
# exactness of the branch log-odds (deterministic)
# --------------------------------------------------------------------------------------------

REGIMES = [  # (a, x, dz, dx, slope)
    (0.01, 0.02, 1e-3, 1e-3, 0.0),
    (-0.3, 0.5, 1e-2, 1e-3, 0.0),
    (0.2, 0.25, 1e-4, 1e-2, 0.0),
    (40.0, -100.0, 1e-3, 1e-3, 0.0),   # MATH.md: the erf form gives NaN here; truth π₊ = 0.40
    (-40.0, 5.0, 1e-3, 1e-3, 0.0),
    (40.0, -5.0, 1e-3, 1e-3, 0.0),
    (0.0, -30 * math.sqrt(1e-3), 1e-3, 1e-3, 0.0),
    (1e-3, -8 * math.sqrt(1e-6), 1e-6, 1e-6, 0.0),
    (0.5, 0.0, 1e-3, 1e-3, 0.0),
    (-0.5, -0.05, 1e-3, 1e-3, 0.1),
    (0.3, -2.0, 1e-2, 1e-1, 0.5),
    (2.0, -1.0, 1.0, 1.0, 0.01),
    (-1e-3, 1e-3, 1e-6, 1e-2, 0.0),
]


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_log_odds_against_mpmath(impl):
    for a, x, dz, dx, s in REGIMES:
        consts = _common.relu_constants(dz, dx, s)
        if impl == "reference":
            ell, rp, rm = reference.relu_log_odds(np, np.array([a]), np.array([x]), consts)
            ell, rp, rm = float(ell[0]), float(rp[0]), float(rm[0])
        else:
            from blockbayes.kernels import cpu
            rp = a * consts.p1 + x * consts.p2
            rm = -(a * consts.n1 + x * consts.n2)
            ell = cpu._log_odds(rp, rm, consts.half_log)[0]
        truth = log_odds_mp(a, x, dz, dx, s)
        # rounding-level tolerance on the scale of the terms of ℓ (observed ≤ 3e-16 of it)
        tol = 1e-14 * (1.0 + abs(truth) + 0.5 * (rp * rp + rm * rm))
        assert abs(ell - truth) <= tol, (a, x, dz, dx, s, ell, truth)
        assert math.isfinite(ell)
    ell40 = log_odds_mp(40.0, -100.0, 1e-3, 1e-3, 0.0)
    assert abs(ell40 - (-0.405)) < 5e-3


TN_ALPHAS = [-40.0, -12.5, -12.0, -10.0, -8.3, -8.29, -5.0, -1e-3, 0.0, 2.0, 4.99, 5.0, 5.01,
             8.0, 20.0, 40.0, 1e3, 1e6]
TN_US = [2.0 ** -54, 1e-10, 0.01, 0.3, 0.5, 0.5 + 2.0 ** -53, 0.7, 0.99, 1 - 1e-10, 1 - 2.0 ** -53]


def _exact_quantile(alpha, u):
    """T with Φ(−T) = u Φ(−α), in mpmath (the inversion both samplers implement)."""
    with mp.workdps(60):
        a = mp.mpf(alpha)
        log_target = mp.log(mp.mpf(u)) + mp.log(mp.ncdf(-a))
        guess = -sc.ndtri(math.exp(float(log_target))) if float(log_target) > -700 else alpha
        if not math.isfinite(guess) or guess <= alpha:
            guess = alpha + (-math.log(u)) / max(alpha, 1.0)
        return mp.findroot(lambda t: mp.log(mp.ncdf(-t)) - log_target, mp.mpf(guess))


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_std_truncated_normal_is_exact_inversion(impl):
    """The standardised sampler returns the exact quantile of u, in both tails and at the
    switches (α = −12, −8.3, 5), to rounding: |e − e*| ≤ 1e-14 (1 + |T|) and
    ≤ 1e-13 (e* + 1/max(|α|, 1)) (observed 1e-15 and 5e-15)."""
    from blockbayes.kernels import cpu

    for alpha in TN_ALPHAS:
        for u in TN_US:
            t_exact = _exact_quantile(alpha, u)
            e_exact = float(t_exact - alpha)
            if impl == "cpu":
                t, e = cpu._std_tn(alpha, u, -1.0)
            else:
                t, e = reference.std_truncated_normal(np, np.array([alpha]), np.array([u]))
                t, e = float(t[0]), float(e[0])
            assert e >= 0.0 and t >= alpha
            err = abs(e - e_exact)
            assert err <= 1e-14 * (1.0 + abs(float(t_exact))), (alpha, u, e, e_exact)
            assert err <= 1e-13 * (e_exact + 1.0 / max(abs(alpha), 1.0)), (alpha, u, e, e_exact)


def test_cpu_special_functions_against_mpmath():
    """The Numba kernels' own exp, log, erfcx, erfc and ndtri (inlined polynomial code)."""
    from blockbayes.kernels import cpu

    funcs = (cpu._exp, cpu._log, cpu._erfcx, cpu._erfc_pos, cpu._ndtri)

    def apply(which, xs):
        f = funcs[which]
        return np.array([f(float(x)) for x in xs])

    rng = np.random.default_rng(0)
    cases = [
        (0, np.concatenate([rng.uniform(-745, 709, 600), rng.uniform(-1, 1, 200),
                            [0.0, -744.4, -708.4, 709.7, 1e-300]]), mp.exp),
        (1, np.concatenate([10.0 ** rng.uniform(-320, 308, 600), rng.uniform(0.5, 2, 200),
                            1 + rng.uniform(-1e-8, 1e-8, 50), [1.0, 5e-324, 1.7e308]]), mp.log),
        (2, np.concatenate([rng.uniform(0, 8, 400), 10.0 ** rng.uniform(0, 8, 200),
                            [0.0, 0.46875, 4.0]]), lambda y: mp.exp(y * y) * mp.erfc(y)),
        (3, np.concatenate([rng.uniform(0, 27, 400), [0.0, 0.46875, 4.0, 26.5]]), mp.erfc),
        (4, np.concatenate([10.0 ** rng.uniform(-300, -0.31, 120), rng.uniform(0.01, 0.99, 120),
                            [0.075, 0.925, 0.5, 1 - 2.0 ** -53]]), None),
    ]
    with mp.workdps(40):
        for which, xs, fn in cases:
            got = apply(which, xs)
            if fn is None:   # Φ⁻¹ by root finding from scipy's value
                exact = np.array([float(mp.findroot(lambda t, p=p: mp.ncdf(t) - p,
                                                    float(sc.ndtri(p)))) for p in xs])
            else:
                exact = np.array([float(fn(mp.mpf(float(v)))) for v in xs])
            ok = np.abs(exact) > 1e-300
            rel = np.abs(got[ok] - exact[ok]) / np.abs(exact[ok])
            assert rel.max() < 5e-16 if which < 2 else rel.max() < 1e-15, (which, rel.max())
            assert np.all(np.abs(got[~ok] - exact[~ok]) < 1e-310)   # subnormal results


def test_masked_compaction_keeps_the_gathered_ndtri_bit_for_bit():
    """``_ndtri_gathered`` compacts its tail elements through 64-bit masks (``_push_bits``):
    the result is the scalar ``_ndtri`` of every element bit for bit, for lengths around the
    64-element masks, tails at the masks' first and last bits, none, all, and NaN; the set
    bits come out as ``np.flatnonzero`` has them. A twin whose ``_push_bits`` drops bit 63 of
    each mask is caught (those tail elements would keep the central rational)."""
    from numba import njit

    from blockbayes.kernels import cpu

    rng = np.random.default_rng(3)
    for _ in range(200):
        bits = rng.random(64) < rng.choice([0.0, 0.15, 0.5, 1.0])
        mask = np.uint64(sum(1 << int(b) for b in np.flatnonzero(bits)))
        idx = np.zeros(70, np.uint64)
        n = cpu._push_bits(mask, np.uint64(128), idx, 3)
        assert n == 3 + bits.sum()
        assert np.array_equal(idx[3:n], 128 + np.flatnonzero(bits))

    def cases():
        for cnt in (0, 1, 5, 63, 64, 65, 127, 128, 129, 1000, 2048):
            yield rng.random(cnt)                                   # ~15 % in the tails
            yield rng.uniform(0.1, 0.9, cnt)                        # none
            yield np.where(rng.random(cnt) < 0.5, rng.uniform(1e-300, 0.07, cnt), 0.95)   # all
        p = rng.uniform(0.1, 0.9, 256)
        p[[0, 63, 64, 127, 128, 255]] = [0.01, 0.99, 1e-20, 0.5 + 0.426, 0.074, 1 - 1e-12]
        p[10] = np.nan
        yield p

    def gathered(f, p):
        out = np.empty_like(p)
        f(p, out, np.empty(p.size, np.uint64), np.empty(p.size), p.size)
        return out

    def same(got, want):    # bit for bit; a NaN input gives a NaN (its sign bit differs
        nan = np.isnan(want)  # between the scalar and the gathered form, as before the masks)
        return (np.array_equal(np.isnan(got), nan)
                and np.array_equal(got[~nan].view(np.uint64), want[~nan].view(np.uint64)))

    for p in cases():
        want = np.array([cpu._ndtri(float(v)) for v in p])
        assert same(gathered(cpu._ndtri_gathered, p), want), p.size
        got_inplace = p.copy()          # dst = src, as _row_normals calls it
        cpu._ndtri_gathered(got_inplace, got_inplace, np.empty(p.size, np.uint64), np.empty(p.size), p.size)
        assert same(got_inplace, want)

    push = cpu._push_bits

    @njit
    def push_without_bit63(mask, base, idx, n):
        return push(mask & np.uint64(0x7FFFFFFFFFFFFFFF), base, idx, n)

    twin = njit_twin(cpu._ndtri_gathered, _push_bits=push_without_bit63)
    p = rng.uniform(0.1, 0.9, 256)
    p[63] = 0.01
    want = np.array([cpu._ndtri(float(v)) for v in p])
    assert same(gathered(cpu._ndtri_gathered, p), want)
    assert not same(gathered(twin, p), want)


def test_unit_truncated_normal_block_is_the_general_block_bit_for_bit():
    """``_tn_block_unit`` (sd 1, one side for the block: the multinomial-probit utilities) is
    ``_tn_block`` with ``s_b = 1`` and ``g_b = ±1`` bit for bit, over α from −40 to 45 (erfc's
    three ranges, AS241's tails, Newton's tail α ≥ 5), bounds at ±inf and NaN, both sides,
    block lengths around the 64-element masks. A twin without Newton's tail (``_ALPHA0 = 50``)
    is caught."""
    from blockbayes.kernels import cpu

    rng = np.random.default_rng(4)

    def run(f, m, b, g, cnt, unit):
        al, u, z, ec, pm, t = (np.empty(cnt) for _ in range(6))
        idx = np.empty(cnt, np.uint64)
        if unit:
            f(m, b, g, al, u, z, cnt, np.uint64(7), np.uint64(11), np.uint64(13), ec, pm, idx, t)
        else:
            f(m, np.ones(cnt), b, np.full(cnt, g), al, u, z, cnt, np.uint64(7), np.uint64(11),
              np.uint64(13), ec, pm, idx, t)
        return z

    def same(a, b):
        return np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(
            a[~np.isnan(a)].view(np.uint64), b[~np.isnan(b)].view(np.uint64))

    for cnt in (1, 63, 64, 65, 300, 2048):
        m = rng.normal(0, 3, cnt)
        b = m + rng.choice([-1, 1], cnt) * np.concatenate([rng.uniform(0, 45, cnt // 2),
                                                            rng.uniform(0, 2, cnt - cnt // 2)])
        if cnt > 8:
            b[:4] = [np.inf, -np.inf, np.nan, m[3]]
        for g in (1.0, -1.0):
            want = run(cpu._tn_block, m, b, g, cnt, False)
            assert same(run(cpu._tn_block_unit, m, b, g, cnt, True), want), (cnt, g)
    m = np.zeros(64)
    b = np.linspace(5.0, 30.0, 64)      # α ≥ 5 from below: Newton's tail
    want = run(cpu._tn_block, m, b, 1.0, 64, False)
    assert same(run(cpu._tn_block_unit, m, b, 1.0, 64, True), want)
    no_tail = njit_twin(cpu._tn_unit_finish, _ALPHA0=50.0)
    twin = njit_twin(cpu._tn_block_unit, _tn_unit_finish=no_tail)
    assert not same(run(twin, m, b, 1.0, 64, True), want)


def test_cpu_blocked_kernel_is_the_scalar_path_bit_for_bit():
    """The blocked, vectorised ReLU kernel gives exactly the scalar per-element arithmetic."""
    from blockbayes.kernels import cpu

    for seed, (dz, dx, slope) in enumerate(((1e-3, 1e-3, 0.0), (1e-6, 1e-2, 0.0),
                                            (1e-2, 1e-5, 0.2), (0.5, 1.0, 0.0))):
        a, x = relu_arrays((700,), dz, dx, seed)
        k = make_key(seed)
        z = kernels.relu_preact(k, a, x, dz, dx, slope=slope, impl="cpu")
        c = _common.relu_constants(dz, dx, slope)
        k0, k1 = np.uint64(k[0]), np.uint64(k[1])
        zs = np.array([cpu._relu_elem(a[i], x[i], i, k0, k1, *c)[0] for i in range(a.size)])
        np.testing.assert_array_equal(z, zs)


def _bound_cases():
    """(a, x, dz, dx, slope) arrays whose elements mostly need ℓ (the 'rest' of the blocked
    kernel): both pieces' means inside (huge r too), one inside with |ℓ| < 38, both outside,
    at Δ from 1e-12 to 10."""
    rng = np.random.default_rng(7)
    out = []
    for dz, dx, slope in ((1e-3, 1e-3, 0.0), (1e-12, 1e-12, 0.0), (1e-12, 1e-3, 0.0),
                          (10.0, 10.0, 0.0), (1e-3, 1e-6, 0.2), (0.5, 1.0, 0.9)):
        n = 6000
        sz, sx = math.sqrt(dz), math.sqrt(dx)
        kind = rng.integers(0, 4, n)
        a = sz * rng.uniform(-12, 12, n)
        x = np.maximum(a, 0) + sx * rng.uniform(-12, 12, n)
        a = np.where(kind == 1, sz * rng.uniform(50, 5000, n), a)        # huge r₊, r₋ > 0
        x = np.where(kind == 1, a * rng.uniform(0.0, 2.0, n), x)
        a = np.where(kind == 2, sz * rng.uniform(-1, 1, n), a)          # near the kink
        x = np.where(kind == 2, sx * rng.uniform(-1, 1, n), x)
        x = np.where(kind == 3, -sx * rng.uniform(0, 12, n), x)          # x below zero
        out.append((a, x, dz, dx, slope))
    return out


def test_relu_branch_bounds_decide_as_the_exact_comparison():
    """The bracket of ℓ (``_rr_bounds``) decides a branch only where the exact comparison
    ``u₁ < σ(ℓ)`` (scalar :func:`_branch`, the same computed ``r₊, r₋``) picks the same one; it
    decides most of these elements; and the blocked kernel stays the scalar path bit for bit.

    Deterministic (fixed inputs and keys): no false failures. A bracket shifted by one unit of
    ℓ (a wrong bound) fails the check (asserted below on the same elements)."""
    from blockbayes.kernels import cpu

    decided = total = 0
    for ci, (a, x, dz, dx, slope) in enumerate(_bound_cases()):
        c = _common.relu_constants(dz, dx, slope)
        p1, p2, n1, n2, sdp, sdm, hl = c
        k0, k1 = np.uint64(ci + 11), np.uint64(3)
        m = a.size
        idx = np.arange(m, dtype=np.int64)
        cn = np.arange(m, dtype=np.uint64)
        dec = np.empty(m, dtype=np.int8)
        al, sc_ = np.empty(m), np.empty(m)
        scratch = [np.empty(m), np.empty(m), np.empty(m, dtype=np.uint64), np.empty(m), np.empty(m)]
        cpu._rr_bounds(m, idx, a, x, cn, k0, k1, p1, p2, n1, n2, sdp, sdm, hl, dec, al, sc_, *scratch)
        rp = a * p1 + x * p2
        rm = -(a * n1 + x * n2)
        exact = np.array([cpu._branch(rp[i], rm[i], hl, k0, k1, np.uint64(2 * i))[0] for i in range(m)])
        d = dec != 0
        np.testing.assert_array_equal(dec[d] > 0, exact[d])
        np.testing.assert_array_equal(al[d], np.where(exact[d], -rp[d], -rm[d]))
        np.testing.assert_array_equal(sc_[d], np.where(exact[d], sdp, -sdm))
        decided += int(d.sum())
        total += m
        # a bracket one unit of ℓ too high decides against the exact comparison somewhere
        u1 = np.array([cpu._uniform(k0, k1, np.uint64(2 * i)) for i in range(m)])
        ell = np.array([cpu._log_odds(rp[i], rm[i], hl)[0] for i in range(m)])
        broken = u1 < 1.0 / (1.0 + np.exp(-(ell + 1.0)))
        if ci == 0:
            assert np.any(broken != exact)
        # blocked kernel == scalar path, bit for bit
        key = np.array([ci + 11, 3], dtype=np.uint64)
        z = kernels.relu_preact(key, a, x, dz, dx, slope=slope, impl="cpu")
        zs = np.array([cpu._relu_elem(a[i], x[i], i, k0, k1, *c)[0] for i in range(m)])
        np.testing.assert_array_equal(z, zs)
    assert decided > 0.3 * total, (decided, total)


def test_sigma_tables_bracket_sigma():
    """The grid tables of ``_rr_bounds``: ``_SIG_LO ≤ σ ≤ _SIG_HI`` at every grid point with
    the stated relative margin (mpmath), and the entries beyond ±38 decide nothing."""
    import mpmath as mp

    from blockbayes.kernels import cpu

    mp.mp.dps = 40
    for i in range(0, cpu._SIG_N + 1):
        t = -cpu._SIG_OFF + i / cpu._SIG_STEP
        s = 1 / (1 + mp.e ** (-mp.mpf(t)))
        if t <= -38:
            assert cpu._SIG_LO[i] == 0.0
        else:
            assert mp.mpf(cpu._SIG_LO[i]) <= s * (1 - mp.mpf(cpu._BOUND_SIG) / 2)
        if t >= 38:
            assert cpu._SIG_HI[i] == 2.0
        else:
            assert mp.mpf(cpu._SIG_HI[i]) >= s * (1 + mp.mpf(cpu._BOUND_SIG) / 2)


def _h_exact(r):
    """h(r) = G(r) − q(r): SciPy's ``log_ndtr`` for r > 0, ``log(erfcx(−r/√2)/2)`` for r ≤ 0
    (no cancellation; relative error ~1e-16)."""
    r = np.asarray(r, dtype=np.float64)
    return np.where(r > 0.0, sc.log_ndtr(np.abs(r)), np.log(sc.erfcx(np.abs(r) / math.sqrt(2)) / 2))


def test_h_table_brackets_h():
    """The table of the sharp bracket (``cpu._H_TAB``) against mpmath at every grid point
    (|error| ≤ 1e-13: r²/2 + log Φ(r) cancels to ~3e-14 at r = −16; the bracket allows
    ``_H_ERR = 1e-12``), and ``_h_bracket``'s
    ``h_lo ≤ h(r) ≤ h_hi`` on 2·10⁵ points in and beyond the grid (dense near grid points and
    at 0, where h' is largest), with the width stated (√(2/π)/64 + 2e-12). Deterministic. The
    twin without the width (``h_hi = h(r_i)``) fails the containment."""
    from blockbayes.kernels import cpu

    grid = -cpu._H_OFF + np.arange(cpu._H_N + 1) / cpu._H_STEP
    assert abs(grid[-1] - 8.5) < 1e-15
    with mp.workdps(40):
        hm = np.array([float(mp.log(mp.ncdf(mp.mpf(v))) + (0 if v > 0 else mp.mpf(v) ** 2 / 2))
                       for v in grid])
    np.testing.assert_allclose(cpu._H_TAB, hm, rtol=0, atol=1e-13)      # stated: _H_ERR = 1e-12
    rng = np.random.default_rng(3)
    r = np.concatenate([rng.uniform(-20.0, 12.0, 100_000), rng.uniform(-1e-3, 1e-3, 20_000),
                        (grid[:, None] + np.array([-1e-13, 0.0, 1e-13, 0.5 / 64, 1 / 64 - 1e-13])
                         ).ravel(), -10.0 ** rng.uniform(1.2, 300, 1000),
                        10.0 ** rng.uniform(0.9, 300, 1000)])
    with np.errstate(over="ignore", invalid="ignore"):      # r² beyond the float range
        h = _h_exact(r)
        qx = np.where(r > 0, 0.5 * r * r, 0.0)
    fin = np.isfinite(h)

    def check(fn):
        out = np.array([fn(v) for v in r])
        q, lo, hi = out[:, 0], out[:, 1], out[:, 2]
        np.testing.assert_array_equal(q, qx)
        return bool(np.all(lo[fin] <= h[fin]) and np.all(h[fin] <= hi[fin])), hi - lo

    ok, width = check(cpu._h_bracket)
    assert ok
    on = (r >= -cpu._H_OFF)
    assert np.all(width[on] <= math.sqrt(2 / math.pi) / 64 * (1 + 1e-9) + 2.1e-12)
    assert not check(njit_twin(cpu._h_bracket, _H_WIDTH=0.0))[0]
    q, lo, hi = cpu._h_bracket(np.nan)
    assert math.isnan(q)


def test_exp_dec_relative_error():
    """``_exp_dec`` (the sharp bracket's σ tests) within its stated relative error 3e-10 of
    e^x (mpmath, 40 digits) on x ∈ [−700, 0] (and x below, clamped at −700); a degree-6 twin
    (truncation ~1e-7) is caught. Deterministic."""
    from blockbayes.kernels import cpu

    rng = np.random.default_rng(4)
    x = np.concatenate([-rng.uniform(0, 700, 3000), -rng.uniform(0, 2, 3000),
                        -np.log(2) * (np.arange(0, 1000) + 0.5), [0.0, -700.0]])
    with mp.workdps(40):
        exact = np.array([float(mp.e ** mp.mpf(float(v))) for v in x])

    def rel(fn):
        return np.max(np.abs(np.array([fn(v) for v in x]) - exact) / exact)

    assert rel(cpu._exp_dec) < 3e-10
    assert cpu._exp_dec(-1e5) == cpu._exp_dec(-700.0) > 0.0

    def poly6(y, a0, a1, a2, a3, a4, a5, a6, a7, a8):     # the Taylor polynomial to r⁶ only
        return cpu._poly8(y, a0, a1, a2, a3, a4, a5, a6, 0.0, 0.0)
    from numba import njit
    assert rel(njit_twin(cpu._exp_dec, _poly8=njit(poly6))) > 3e-10


def _open_bounds(fn, a, x, dz, dx, slope, k0, k1, kernel=False):
    """(dec, α, scale) of ``_rr_bounds_open``'s element function ``fn`` over a, x (with
    ``kernel``: checked equal to ``_rr_bounds_open``'s own decisions)."""
    from blockbayes.kernels import cpu

    p1, p2, n1, n2, sdp, sdm, hl = _common.relu_constants(dz, dx, slope)
    m = a.size
    out = np.array([fn(a[i], x[i], np.uint64(i), k0, k1, p1, p2, n1, n2, sdp, sdm, hl)
                    for i in range(m)])
    dec, al, sc_ = out[:, 0], out[:, 1], out[:, 2]
    if kernel:
        d2 = np.empty(m, dtype=np.int8)
        al2, sc2 = np.empty(m), np.empty(m)
        cpu._rr_bounds_open(m, a, x, np.arange(m, dtype=np.uint64), k0, k1, p1, p2, n1, n2, sdp,
                            sdm, hl, d2, al2, sc2)
        np.testing.assert_array_equal(d2, dec)
        np.testing.assert_array_equal(al2, al)
        np.testing.assert_array_equal(sc2, sc_)
    return dec, al, sc_


def _probit_like_cases():
    """(a, x, Δ_Z, Δ_X, slope): pre-activations as in the probit sweep (a ~ N(0, 1),
    x = relu(a) + noise) at Δ ~ 1, plus the bound cases of every regime."""
    rng = np.random.default_rng(17)
    out = []
    for dz, dx, slope in ((2.0, 2.0, 0.0), (1.0, 0.5, 0.0), (2.0, 2.0, 0.2), (0.3, 3.0, 0.0)):
        a = rng.standard_normal(20_000) * 1.5
        x = np.maximum(a, 0) + math.sqrt(dx) * rng.standard_normal(a.size)
        out.append((a, x, dz, dx, slope))
    return out + _bound_cases()


def test_relu_sharp_bounds_decide_as_the_exact_comparison():
    """The sharp bracket of ℓ (``_rr_bounds_open``, the in-place path of blocks whose branches
    are all open) decides a branch only where the exact comparison ``u₁ < σ(ℓ)`` (scalar
    :func:`_branch`, the same computed ``r₊, r₋``) picks the same one, with the same α and
    scale; it decides > 98 % of the Δ ~ 1 elements. Deterministic (fixed inputs and keys): no
    false failures. Twins — the bracket without h's width, and σ's margin cut to −1e-3 (a
    bracket that decides against the rounding) — decide against the exact comparison somewhere
    on the same elements."""
    from blockbayes.kernels import cpu

    twins = [njit_twin(cpu._bound_elem_sharp, _h_bracket=njit_twin(cpu._h_bracket, _H_WIDTH=0.0)),
             njit_twin(cpu._bound_elem_sharp, _DEC_SIG=-1e-3)]
    caught = [False] * len(twins)
    for ci, (a, x, dz, dx, slope) in enumerate(_probit_like_cases()):
        p1, p2, n1, n2, sdp, sdm, hl = _common.relu_constants(dz, dx, slope)
        k0, k1 = np.uint64(ci + 5), np.uint64(9)
        rp = a * p1 + x * p2
        rm = -(a * n1 + x * n2)
        exact = np.array([cpu._branch(rp[i], rm[i], hl, k0, k1, np.uint64(2 * i))[0]
                          for i in range(a.size)])
        dec, al, sc_ = _open_bounds(cpu._bound_elem_sharp, a, x, dz, dx, slope, k0, k1, True)
        d = dec != 0
        np.testing.assert_array_equal(dec[d] > 0, exact[d])
        np.testing.assert_array_equal(al[d], np.where(exact[d], -rp[d], -rm[d]))
        np.testing.assert_array_equal(sc_[d], np.where(exact[d], sdp, -sdm))
        if ci < 4:
            assert d.mean() > 0.98, (ci, d.mean())
        for t, tw in enumerate(twins):
            dt, _, _ = _open_bounds(tw, a, x, dz, dx, slope, k0, k1)
            caught[t] |= bool(np.any((dt > 0)[dt != 0] != exact[dt != 0]))
    assert all(caught), caught


#: the float32-lane inversion's error bound (design note 45): |e − e*| ≤ (A + B·max(|T*|, |α|))·2⁻²⁴
#: for the elements it keeps, from its parts' bounds below (p: ≤ 9 float32 ulps relative, times
#: the Mills ratio ≤ 1.2533; Φ⁻¹: ≤ 5 ulps relative; the argument's rounding: ≤ |α|)
F32_A, F32_B = 12.0, 6.0


def _f32_lanes(alpha, u, kappa=None, invert=None):
    """``_rr_invert32`` over blocks of 2048: (e, kept) with e = z/scale (scale 1)."""
    from blockbayes.kernels import cpu

    invert = invert or cpu._rr_invert32
    kappa = cpu._KAPPA32 if kappa is None else kappa
    m = 2048
    f = np.empty((3, m), np.float32)
    idx = np.empty(m, np.uint64)
    e = np.empty(alpha.size)
    kept = np.ones(alpha.size, bool)
    for b in range(0, alpha.size, m):
        mm = min(m, alpha.size - b)
        zb = np.empty(mm)
        nf = invert(mm, alpha[b:b + mm].copy(), u[b:b + mm].copy(), np.ones(mm), zb, kappa, *f,
                    idx)
        e[b:b + mm] = zb
        kept[b + idx[:nf].astype(np.int64)] = False
    return e, kept


def test_float32_lane_parts_against_scipy():
    """The parts of the float32-lane inversion, on dense grids, within the ulp bounds the error
    argument of note 45 uses: erfc(y) ≤ 6 float32 ulps for y ∈ [0, 3.6] (y float32, y² split
    exactly), Φ⁻¹ ≤ 5 ulps (``_ndtri32``, PPND7 in float32: central |q| ≤ 0.425, tails
    p ∈ [1e-24, 0.075] with both ranges),
    e^x ≤ 2 ulps on [−16, 0], log ≤ 1 ulp. Reference: SciPy in float64 (~1e-16, far below)."""
    from numba import njit

    from blockbayes.kernels import cpu

    @njit
    def apply(which, x):
        o = np.empty(x.size, np.float32)
        for i in range(x.size):
            v = x[i]
            if which == 0:
                hi = v * v
                o[i] = cpu._erfc32(v, hi, cpu._fma32(v, v, -hi))
            elif which == 1:
                o[i] = cpu._ndtri32(v, np.float32(0.5) - abs(v), False)
            elif which == 2:
                o[i] = cpu._ndtri32(v - np.float32(0.5), v, True)
            elif which == 3:
                o[i] = cpu._exp32(v)
            else:
                o[i] = cpu._log32(v)
        return o

    def ulps(got, exact):
        return np.abs(got.astype(np.float64) - exact) / np.spacing(
            np.abs(exact).astype(np.float32)).astype(np.float64)

    y = np.linspace(0.0, 3.6, 300001).astype(np.float32)
    q = np.linspace(-0.425, 0.425, 300001).astype(np.float32)
    p = np.exp(-np.linspace(2.59, 55.0, 300001)).astype(np.float32)
    x = -np.linspace(0.0, 16.0, 100001).astype(np.float32)
    pl = np.exp(-np.linspace(0.0, 55.0, 100001)).astype(np.float32)
    f64 = np.float64
    assert ulps(apply(0, y), sc.erfc(y.astype(f64))).max() <= 6.0
    assert ulps(apply(1, q), math.sqrt(2.0) * sc.erfinv(2.0 * q.astype(f64))).max() <= 5.0
    assert ulps(apply(2, p), sc.ndtri(p.astype(f64))).max() <= 5.0
    assert ulps(apply(3, x), np.exp(x.astype(f64))).max() <= 2.0
    assert ulps(apply(4, pl), np.log(pl.astype(f64))).max() <= 1.0


def test_float32_lane_inversion_is_the_exact_draw_within_its_bound():
    """``_rr_invert32`` (a float32 sweep's ReLU inversion in float32 lanes) against the exact
    quantile T* of the same u₂ (the float64 ``_std_tn``, itself within 1e-14·(1 + |T|) of
    mpmath: ``test_std_truncated_normal_is_exact_inversion``; spot-checked here), on adversarial
    inputs: α uniform on (−5, 5), near 0 and near ±5, ±0 and ±1e-300; u₂ near 0, near 1 (down
    to 2⁻⁵³ away), near ½ and uniform. The elements it keeps satisfy the bound of note 45,
    ``|e − e*| ≤ (12 + 6·max(|T*|, |α|))·2⁻²⁴``, and, as it keeps only ``16·e > |T|``, the
    relative form ``|e − e*| ≤ (12 + 6·17·e*)·2⁻²⁴``; it passes every |α| ≥ 5 and NaN to
    float64. Twins: without the cancellation test (κ = 1e30) the relative form fails; with the
    |α| limit lifted to 50 as well (α ≥ 5 through float32 erfc, which underflows beyond
    α ≈ 13, instead of the float64 Newton tail) the absolute bound fails."""
    from blockbayes.kernels import cpu

    alpha, u, t_ref, e_ref = _f32_lane_cases()
    for a in (-4.99, -1e-3, 0.0, 2.0, 4.99):        # the float64 reference against mpmath
        for v in TN_US:
            t_exact = float(_exact_quantile(a, v))
            assert abs(cpu._std_tn(a, v, -1.0)[0] - t_exact) <= 1e-14 * (1 + abs(t_exact))

    def violations(e, kept):
        return _f32_lane_violations(e, kept, alpha, t_ref, e_ref)

    e, kept = _f32_lanes(alpha, u)
    assert not np.any(kept & ~(np.abs(alpha) < 5.0)), "|α| ≥ 5 or NaN kept in float32"
    assert kept.mean() > 0.5          # (adversarial inputs: ~1/3 are cancellations)
    assert violations(e, kept) == (0, 0)
    e0, kept0 = _f32_lanes(alpha, u, kappa=1e30)       # every |α| < 5 kept
    assert violations(e0, kept0)[1] > 0
    wide = njit_twin(cpu._rr_invert32, _A32_MAX=50.0)
    assert violations(*_f32_lanes(alpha, u, kappa=1e30, invert=wide))[0] > 0


def _f32_lane_cases():
    """Adversarial (α, u) for the float32-lane inversions and the exact (T*, e* = T* − α) of
    the float64 ``_std_tn``: α uniform on (−5, 5), near 0 and near ±5, ±0 and ±1e-300, some
    |α| ≥ 5 and a NaN; u near 0, near 1 (down to 2⁻⁵³ away), near ½ and uniform."""
    from blockbayes.kernels import cpu

    rng = np.random.default_rng(45)
    n = 60000
    alpha = np.concatenate([rng.uniform(-5, 5, n), rng.uniform(-0.05, 0.05, n // 4),
                            5 - rng.uniform(0, 0.05, n // 4), -5 + rng.uniform(0, 0.05, n // 4),
                            rng.uniform(5, 20, 400), rng.uniform(-12, -5, 200),
                            [0.0, -0.0, 4.999999, -4.999999, 1e-300, -1e-300, 5.0, -5.0, np.nan]])
    k = alpha.size
    kind = rng.integers(0, 5, k)
    u = rng.random(k)
    u = np.where(kind == 1, rng.random(k) * 2.0 ** rng.uniform(-53, -1, k), u)
    u = np.where(kind == 2, 1 - rng.random(k) * 2.0 ** rng.uniform(-53, -1, k), u)
    u = np.where(kind == 3, 0.5 + rng.uniform(-1e-6, 1e-6, k), u)
    u = np.clip(u, 2.0 ** -54, 1 - 2.0 ** -53)
    ref = np.array([cpu._std_tn(a, v, -1.0) if a == a else (np.nan, np.nan)
                    for a, v in zip(alpha, u)])
    return alpha, u, ref[:, 0], ref[:, 1]


def _f32_lane_violations(e, kept, alpha, t_ref, e_ref):
    """(absolute, relative): how many kept elements break note 45's bound
    ``|e − e*| ≤ (12 + 6·max(|T*|, |α|))·2⁻²⁴``, and its relative form
    ``≤ (12 + 6(κ + 1)·e*)·2⁻²⁴``."""
    from blockbayes.kernels import cpu

    err = np.abs(e - e_ref)[kept] / 2.0 ** -24
    big = np.maximum(np.abs(t_ref), np.abs(alpha))[kept]
    absolute = err > F32_A + F32_B * big
    relative = err > F32_A + F32_B * (cpu._KAPPA32 + 1.0) * e_ref[kept]
    return int(absolute.sum()), int(relative.sum())


def _tn_lanes(alpha, u, kappa=None, invert=None):
    """``_tn_invert32`` (the utilities' float32-lane inversion) over blocks of 2560:
    (T, e = T − α, kept)."""
    from blockbayes.kernels import cpu

    invert = invert or cpu._tn_invert32
    kappa = cpu._KAPPA32 if kappa is None else kappa
    m = 2560
    f = np.empty((3, m), np.float32)
    idx = np.empty(m, np.uint64)
    t = np.empty(alpha.size)
    kept = np.ones(alpha.size, bool)
    for b in range(0, alpha.size, m):
        mm = min(m, alpha.size - b)
        zb, ec = np.empty(mm), np.empty(mm)
        nf = invert(mm, alpha[b:b + mm].copy(), u[b:b + mm].copy(), zb, ec, kappa, *f, idx)
        assert np.all(ec == 1.0)
        t[b:b + mm] = zb
        kept[b + idx[:nf].astype(np.int64)] = False
    return t, t - alpha, kept


def test_float32_lane_utilities_inversion_is_the_exact_draw_within_its_bound():
    """``_tn_invert32`` (a float32 sweep's multinomial-probit utilities: note 45's float32
    lanes, design note 47) on the adversarial (α, u) of ``_f32_lane_cases``: for the elements
    it keeps, T within ``(12 + 6·max(|T*|, |α|))·2⁻²⁴`` of the exact T*, and e = T − α within
    the relative form ``(12 + 6(κ + 1)·e*)·2⁻²⁴``; every |α| ≥ 5 and NaN is left to float64.
    Twins: without the cancellation test (κ = 1e30) the relative form fails; with the |α|
    limit lifted to 50 as well the absolute one fails."""
    from blockbayes.kernels import cpu

    alpha, u, t_ref, e_ref = _f32_lane_cases()
    t, e, kept = _tn_lanes(alpha, u)
    assert not np.any(kept & ~(np.abs(alpha) < 5.0)), "|α| ≥ 5 or NaN kept in float32"
    assert kept.mean() > 0.5
    assert np.all(t[kept] >= alpha[kept])
    assert _f32_lane_violations(t, kept, alpha, t_ref, t_ref)[0] == 0
    assert _f32_lane_violations(e, kept, alpha, t_ref, e_ref) == (0, 0)
    _, e0, kept0 = _tn_lanes(alpha, u, kappa=1e30)
    assert _f32_lane_violations(e0, kept0, alpha, t_ref, e_ref)[1] > 0
    wide = njit_twin(cpu._tn_invert32, _A32_MAX=50.0)
    t1, _, kept1 = _tn_lanes(alpha, u, kappa=1e30, invert=wide)
    assert _f32_lane_violations(t1, kept1, alpha, t_ref, t_ref)[0] > 0


def test_float32_lane_utilities_block_against_the_float64_block():
    """``_tn_block_unit32`` (the utilities' block of a float32 sweep) against
    ``_tn_block_unit`` (float64, the exact inversion to ~1e-14) on the same counters, α from
    −40 to 45, bounds ±inf and NaN, both sides: elements with |α| ≥ 5 or a NaN bit for bit;
    the others within note 45's bound of the draw z = m + g·T (α < 0) or b + g·e (α ≥ 0):
    ``(12 + 6·max(|T|, |α|))·2⁻²⁴``, and for α ≥ 0 also the relative form
    ``(12 + 102·e)·2⁻²⁴`` (e = |z − b|), each + 4·2⁻⁵³·(|m| + |b| + |z|) for the float64
    roundings; > 1000 draws from the float32 lanes. Twin: no cancellation fallback
    (``_KAPPA32 = 1e30``) breaks the relative form."""
    from blockbayes.kernels import cpu

    rng = np.random.default_rng(47)

    def run(f, m, b, g, cnt, lanes):
        al, u, z, ec, pm, t, ar, ur, zr, er = (np.empty(cnt) for _ in range(10))
        idx, ir = np.empty(cnt, np.uint64), np.empty(cnt, np.uint64)
        args = (m, b, g, al, u, z, cnt, np.uint64(7), np.uint64(11), np.uint64(13), ec, pm, idx, t)
        if lanes:
            f(*args, np.empty((3, cnt), np.float32), ar, ur, zr, er, ir)
        else:
            f(*args)
        return z, al

    blk32 = njit_twin(cpu._tn_block_unit32)     # (inline="always": a callable copy)
    no_fallback = njit_twin(cpu._tn_block_unit32, _KAPPA32=1e30)
    counts = [0, 0]
    for cnt in (1, 63, 64, 65, 300, 2560):
        for g in (1.0, -1.0):
            m = rng.normal(0, 3, cnt)
            spread = np.concatenate([rng.uniform(0, 45, cnt // 4), rng.uniform(0, 2, cnt // 4),
                                     rng.uniform(0, 1e-3, cnt - 2 * (cnt // 4))])
            b = m + rng.choice([-1, 1], cnt) * spread
            if cnt > 8:
                b[:4] = [np.inf, -np.inf, np.nan, m[3]]
            with np.errstate(invalid="ignore"):     # (±inf bounds: compared bit for bit)
                _block_unit_case(run, blk32, no_fallback, m, b, g, cnt, counts)
    assert counts[0] > 1000
    assert counts[1] > 0


def _block_unit_case(run, blk32, no_fallback, m, b, g, cnt, counts):
    """One case of the test above; counts ← [draws from the lanes, twin violations]."""
    from blockbayes.kernels import cpu

    want, alpha = run(cpu._tn_block_unit, m, b, g, cnt, False)
    got, _ = run(blk32, m, b, g, cnt, True)
    f64 = ~(np.abs(alpha) < 5.0)
    gf, wf = got[f64], want[f64]
    assert np.array_equal(np.isnan(gf), np.isnan(wf))
    assert np.array_equal(gf[~np.isnan(wf)].view(np.uint64), wf[~np.isnan(wf)].view(np.uint64))
    ok = ~f64
    t = np.where(alpha < 0, g * (want - m), alpha + g * (want - b))
    e = np.abs(want - b)
    err = np.abs(got - want)[ok] / 2.0 ** -24
    rnd = 4.0 * 2.0 ** -53 * (np.abs(m) + np.abs(b) + np.abs(want))[ok] / 2.0 ** -24
    big = np.maximum(np.abs(t), np.abs(alpha))[ok]
    assert np.all(err <= F32_A + F32_B * big + rnd)
    pos = alpha[ok] >= 0
    rel = F32_A + F32_B * (cpu._KAPPA32 + 1.0) * e[ok] + rnd
    assert np.all((err <= rel)[pos])
    counts[0] += int(np.sum(got[ok] != want[ok]))
    zt, _ = run(no_fallback, m, b, g, cnt, True)
    errt = np.abs(zt - want)[ok] / 2.0 ** -24
    counts[1] += int(np.sum((errt > rel)[pos]))


def _assert_f32_lane_draws(z, zs, A, X, c):
    """A float32 ReLU draw ``z`` against the scalar float64 path's ``zs`` of the same counters:
    the same branch (sign bit), and within ``½ ulp + s·(12 + 6·max(|T|, |α|))·2⁻²⁴`` (note 45;
    s, α of the chosen piece, T = α + |zs|/s); bit for bit where |α| ≥ 5 or a NaN."""
    p1, p2, n1, n2, sdp, sdm, _ = c
    a, x = np.asarray(A, np.float64), np.asarray(X, np.float64)
    zs32 = zs.astype(np.float32)
    np.testing.assert_array_equal(np.signbit(z), np.signbit(zs32))
    pos = ~np.signbit(zs)
    alpha = np.where(pos, -(a * p1 + x * p2), a * n1 + x * n2)
    s = np.where(pos, sdp, sdm)
    big = np.maximum(np.abs(alpha) + np.abs(zs) / s, np.abs(alpha))
    tol = (0.5 * np.spacing(np.abs(zs32)).astype(np.float64)
           + s * (F32_A + F32_B * big) * 2.0 ** -24)
    f64 = ~(np.abs(alpha) < 5.0)
    np.testing.assert_array_equal(z[f64].view(np.uint32), zs32[f64].view(np.uint32))
    assert np.all(np.abs(z[~f64].astype(np.float64) - zs[~f64]) <= tol[~f64])
    return int(np.sum(z.view(np.uint32) != zs32.view(np.uint32)))


def test_relu_open_blocks_are_the_scalar_path_bit_for_bit():
    """Blocks without simple elements (Δ ~ 1: the in-place path of ``_relu_range`` —
    sharp bracket, erfc of every element, the exact ℓ for the undecided, inversion in place)
    give exactly the scalar per-element arithmetic in float64, with a partial last
    block, NaN inputs, pass 1's sure elements among them, a mixed block before them, and under the fused latent
    pass's row layout of counters (``row_len < row_stride``). In float32 the same branches
    (signs) bit for bit, and the draws within the float32-lane bound of note 45 (bit for bit
    where |α| ≥ 5 or NaN: those take the float64 inversion; see ``_assert_f32_lane_draws``)."""
    from blockbayes.kernels import cpu

    nsure, nblocks, nlane = 0, [0, 0], 0
    for ci, (a, x, dz, dx, slope) in enumerate(_probit_like_cases()[:4]):
        a, x = a[:7000].copy(), x[:7000].copy()
        a[:100] = np.linspace(-300, 300, 100)       # block 0: some branches sure in pass 1
        a[5000], x[5001] = np.nan, np.nan
        c = _common.relu_constants(dz, dx, slope)
        k0, k1 = np.uint64(ci + 21), np.uint64(4)
        fl = np.empty(a.size, dtype=np.int8)
        scratch = [np.empty(a.size) for _ in range(5)]
        cpu._rr_pass1(a.size, np.arange(a.size, dtype=np.uint64), a, x, k0, k1, *c, *scratch, fl,
                      np.empty(a.size, dtype=np.int8))
        for b in range(0, a.size, 2048):            # blocks without simple elements: in place
            f = fl[b:b + 2048]
            inplace = not np.any((f == 1) | (f == 2))
            nblocks[inplace] += 1
            nsure += int(np.sum(f == 3)) if inplace else 0
        for dt in (np.float64, np.float32):
            A, X = a.astype(dt), x.astype(dt)
            key = np.array([ci + 21, 4], dtype=np.uint64)
            z = kernels.relu_preact(key, A, X, dz, dx, slope=slope, impl="cpu")
            zs = np.array([cpu._relu_elem(np.float64(A[i]), np.float64(X[i]), i, k0, k1, *c)[0]
                           for i in range(a.size)])
            if dt == np.float32:
                nlane += _assert_f32_lane_draws(z, zs, A, X, c)
            else:
                np.testing.assert_array_equal(z.view(np.uint8), zs.view(np.uint8))
        # rows of 12 in a stride of 36 (three chains' rows interleaved), counters from 1000
        m = 12 * 400
        o32 = np.empty(m, np.float32)
        A32, X32 = a[2048:2048 + m].astype(np.float32), x[2048:2048 + m].astype(np.float32)
        D = cpu._DUMMY64
        cpu._relu_range(D, D, D, A32, X32, o32, True, 0, m, k0, k1, *c, 12, 36, 1000, slope)
        ctr = (np.arange(m) // 12) * 36 + np.arange(m) % 12 + 1000
        zs = np.array([cpu._relu_elem(np.float64(A32[i]), np.float64(X32[i]), ctr[i], k0, k1, *c)[0]
                       for i in range(m)])
        nlane += _assert_f32_lane_draws(o32, zs, A32, X32, c)
    assert nblocks[True] >= 6 and nblocks[False] >= 4 and nsure > 0, (nblocks, nsure)
    assert nlane > 1000, nlane          # the float32 lanes ran (their draws differ in the last bits)


# --------------------------------------------------------------------------------------------
# equivalence: same key => cpu == reference to rounding (Hypothesis)
# --------------------------------------------------------------------------------------------

SHAPES = [(), (1,), (17,), (4, 9), (2, 3, 5)]


@hs.composite
def relu_cases(draw):
    dtype = draw(hs.sampled_from(["float64", "float32"]))
    shape = draw(hs.sampled_from(SHAPES))
    dz = 10.0 ** draw(hs.floats(-6.0, 0.0))
    dx = 10.0 ** draw(hs.floats(-6.0, 0.0))
    slope = draw(hs.sampled_from([0.0, 0.0, 0.01, 0.2, 0.9]))
    seed = draw(hs.integers(0, 2 ** 32 - 1))
    return dtype, shape, dz, dx, slope, seed


def relu_arrays(shape, dz, dx, seed):
    """Mixed regimes per element: bulk, far tails (|a|/√Δ_Z ≤ 40), x far below zero."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape, dtype=np.int64))
    kind = rng.integers(0, 4, size=n)
    ta = rng.uniform(-40, 40, size=n)
    a = math.sqrt(dz) * ta
    x = np.where(kind == 0, np.maximum(a, 0) + math.sqrt(dx) * rng.standard_normal(n),
                 math.sqrt(dx) * rng.uniform(-40, 40, size=n))
    x = np.where(kind == 2, -math.sqrt(dx) * rng.uniform(8, 60, size=n), x)
    a = np.where(kind == 3, rng.standard_normal(n), a)            # realistic a ~ N(0, 1)
    return a.reshape(shape), x.reshape(shape)


def relu_tolerance(zr, a, x, dz, dx, slope, dtype):
    """Rounding-level tolerance: relative to the scale σ_k(1 + e) + 2|m_k| of the draw."""
    pc = pieces(np.asarray(a, np.float64), np.asarray(x, np.float64), dz, dx, slope)
    scale = np.abs(zr)
    for name in ("pos", "neg"):
        _, m, s = pc[name]
        scale = np.maximum(scale, np.abs(zr) + s + 2.0 * np.abs(m))
    tol = 1e-12 * scale      # observed worst case 4e-16
    if dtype == "float32":
        # two float32 roundings, and the CPU's float32-lane inversion (note 45): within
        # s(12 + 6·max(|T|, |α|))·2⁻²⁴ of the exact draw z = m + sT (α = −m/s), and
        # s(12 + 6·max(|T|, |α|)) ≤ 12s + 6|z| + 6|m| ≤ 12·scale
        tol = (tol + 2.0 * np.spacing(np.abs(zr).astype(np.float32)).astype(np.float64)
               + F32_A * 2.0 ** -24 * scale)
    return tol


@HYP
@given(relu_cases())
def test_relu_cpu_equals_reference(case):
    dtype, shape, dz, dx, slope, seed = case
    a, x = relu_arrays(shape, dz, dx, seed)
    A, X = a.astype(dtype), x.astype(dtype)
    k = make_key(seed)
    zc = kernels.relu_preact(k, A, X, dz, dx, slope=slope, impl="cpu")
    zr = kernels.relu_preact(k, A, X, dz, dx, slope=slope, impl="reference")
    assert zc.dtype == zr.dtype == np.dtype(dtype) and zc.shape == zr.shape == shape
    assert np.all(np.isfinite(zc)) and np.all(np.isfinite(zr))
    # same branch everywhere (signbit: +0 positive branch, -0 negative branch)
    np.testing.assert_array_equal(np.signbit(zc), np.signbit(zr))
    tol = relu_tolerance(zr, A, X, dz, dx, slope, dtype)
    diff = np.abs(zc.astype(np.float64) - zr.astype(np.float64))
    assert np.all(diff <= tol), float(np.max(diff / np.maximum(tol, 1e-300)))


@hs.composite
def tn_cases(draw):
    dtype = draw(hs.sampled_from(["float64", "float32"]))
    shape = draw(hs.sampled_from(SHAPES[1:]))
    seed = draw(hs.integers(0, 2 ** 32 - 1))
    scalar_sd = draw(hs.booleans())
    scalar_upper = draw(hs.booleans())
    return dtype, shape, seed, scalar_sd, scalar_upper


@HYP
@given(tn_cases())
def test_truncated_normal_cpu_equals_reference(case):
    dtype, shape, seed, scalar_sd, scalar_upper = case
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    sd = 10.0 ** rng.uniform(-3, 1) if scalar_sd else 10.0 ** rng.uniform(-3, 1, size=shape)
    # standardised bounds in both tails and around the switch at 5
    alpha = np.where(rng.random(n) < 0.5, rng.uniform(-45, 45, n), rng.uniform(3, 8, n))
    mean = rng.standard_normal(shape)
    upper = bool(rng.random() < 0.5) if scalar_upper else rng.random(shape) < 0.5
    sign = np.where(upper, -1.0, 1.0)
    bound = mean + sign * alpha.reshape(shape) * sd
    args = (mean.astype(dtype), (sd if scalar_sd else sd.astype(dtype)), bound.astype(dtype))
    k = make_key(seed)
    tc = kernels.truncated_normal(k, *args, upper, impl="cpu")
    tr = kernels.truncated_normal(k, *args, upper, impl="reference")
    assert tc.dtype == tr.dtype == np.dtype(dtype) and tc.shape == tr.shape == shape
    assert np.all(np.isfinite(tc))
    b = args[2]
    assert np.all(np.where(upper, tc <= b, tc >= b)), "draw beyond the bound"
    assert np.all(np.where(upper, tr <= b, tr >= b)), "draw beyond the bound"
    scale = (np.abs(tr.astype(np.float64)) + np.abs(mean) + np.abs(bound)
             + sd * (1 + np.abs(alpha.reshape(shape))))
    tol = 1e-12 * scale      # observed worst case ~5e-16
    if dtype == "float32":
        tol = tol + 2.0 * np.spacing(np.abs(tr)).astype(np.float64)
    diff = np.abs(tc.astype(np.float64) - tr.astype(np.float64))
    assert np.all(diff <= tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_support_against_independent_branch(dtype):
    """Branch = [u₁ < π₊] with u₁ from `uniforms` and π₊ from mpmath; z ≥ 0 iff positive.

    Far tails and the published failure modes: x ≥ 8 and ≥ 30 noise s.d. below zero (where the
    linear-space erf form collapses or gives NaN), |a|/√Δ_Z up to 40, Δ down to 1e-6.
    """
    rng = np.random.default_rng(0)
    cases = []
    for dz, dx in ((1e-3, 1e-3), (1e-6, 1e-6), (1e-6, 1e-2), (1e-1, 1e-5)):
        for ta in (-40.0, -8.0, -1.0, 0.0, 0.5, 8.0, 40.0):
            for tx in (-60.0, -30.0, -8.0, 0.0, 3.0, 40.0):
                cases.append((ta * math.sqrt(dz), tx * math.sqrt(dx), dz, dx))
    k = make_key(99)
    for dz, dx in {(c[2], c[3]) for c in cases}:
        sel = [c for c in cases if (c[2], c[3]) == (dz, dx)]
        a = np.repeat([c[0] for c in sel], 30)
        x = np.repeat([c[1] for c in sel], 30)
        for impl in ("cpu", "reference"):
            z = kernels.relu_preact(k, a.astype(dtype), x.astype(dtype), dz, dx, impl=impl)
            assert np.all(np.isfinite(z))
            u1 = kernels.uniforms(k, 2 * a.size, like=a)[0::2]
            pi = {}
            for ai, xi in set(zip(a.astype(dtype).astype(float), x.astype(dtype).astype(float))):
                pi[(ai, xi)] = sc.expit(log_odds_mp(ai, xi, dz, dx, 0.0))
            p = np.array([pi[(ai, xi)] for ai, xi in zip(a.astype(dtype).astype(float),
                                                          x.astype(dtype).astype(float))])
            clear = np.abs(u1 - p) > 1e-9          # ties within rounding are undecidable
            pos = u1 < p
            assert np.all(z[clear & pos] >= 0) and np.all(~np.signbit(z[clear & pos]))
            assert np.all(z[clear & ~pos] <= 0) and np.all(np.signbit(z[clear & ~pos]))
    del rng


# --------------------------------------------------------------------------------------------
# distribution tests (exact CDFs; DKW; broken twins)
# --------------------------------------------------------------------------------------------

ALPHAS = [-5.0, 0.0, 2.0, 4.9, 5.1, 8.0, 20.0, 40.0]


def _tn_standardised(k, alpha, n, upper, sd_factor=1.0, impl="cpu"):
    """T = (z − μ)/σ (or its mirror) for z ~ N(μ, σ²) | bound at α sd, with μ = 1.5, σ = 0.3."""
    mu, sd = 1.5, 0.3
    bound = mu - alpha * sd if upper else mu + alpha * sd
    z = kernels.truncated_normal(k, np.full(n, mu), sd * sd_factor, bound, upper, impl=impl)
    return (mu - z) / sd if upper else (z - mu) / sd


def test_truncated_normal_distribution_and_twin():
    """KS/DKW against 1 − Φ(−t)/Φ(−α) at n = 20000 per α (ε = 0.0190, δ = 1e-6 each: the
    test's false-failure probability is ≤ 8e-6). Twin: σ inflated by 20 % must be rejected
    (its KS distance is ≥ 0.05 at every α here, > 2.5 ε)."""
    n = 20_000
    eps = dkw_eps(n)
    keys = split(make_key(2024), 2 * len(ALPHAS))
    for j, alpha in enumerate(ALPHAS):
        upper = bool(j % 2)
        t = _tn_standardised(keys[2 * j], alpha, n, upper)
        assert np.all(t >= alpha)
        d = ks_stat(t, lambda v: tn_cdf(v, alpha))
        assert d < eps, (alpha, d, eps)
        twin = _tn_standardised(keys[2 * j + 1], alpha, n, upper, sd_factor=1.2)
        d_twin = ks_stat(np.maximum(twin, alpha), lambda v: tn_cdf(v, alpha))
        assert d_twin > eps, ("broken twin not rejected", alpha, d_twin)


MIX_REGIMES = [  # (a, x, dz, dx, slope): π₊ away from 0 and 1 unless stated
    (0.01, 0.02, 1e-3, 1e-3, 0.0),
    (-0.005, 0.03, 1e-4, 1e-3, 0.0),
    (40.0, -100.0, 1e-3, 1e-3, 0.0),                 # both pieces in their far tails, π₊ = 0.40
    (0.0, -30 * math.sqrt(1e-3), 1e-3, 1e-3, 0.0),   # x 30 noise s.d. below zero, π₊ ≈ 0.026
    (0.0, 0.01, 1e-3, 1e-3, 0.2),                    # leaky ReLU
]


def _relu_draws(k, regime, n, dz_factor=1.0, impl="cpu"):
    a, x, dz, dx, s = regime
    return kernels.relu_preact(k, np.full(n, a), np.full(n, x), dz * dz_factor, dx, slope=s,
                               impl=impl)


def test_relu_mixture_distribution():
    """Exact mixture CDF (MATH.md §E.3; π₊ from mpmath) by DKW, n = 20000 per regime
    (ε = 0.0190, δ = 1e-6), and the positive fraction by an exact binomial test (p ≥ 1e-6):
    false-failure probability ≤ 1e-5 for the whole test."""
    n = 20_000
    eps = dkw_eps(n)
    keys = split(make_key(77), len(MIX_REGIMES))
    for kk, regime in zip(keys, MIX_REGIMES):
        pi = float(sc.expit(log_odds_mp(*regime)))
        z = _relu_draws(kk, regime, n)
        d = ks_stat(z, lambda t: mixture_cdf(t, *regime, pi))
        assert d < eps, (regime, d)
        npos = int(np.sum(~np.signbit(z)))
        assert st.binomtest(npos, n, pi).pvalue > DELTA, (regime, npos / n, pi)


def test_relu_mixture_broken_twins(monkeypatch):
    """The same checks reject (i) the ½log(S₋/S₊) term of (A.3a) dropped and (ii) Δ_Z 30 % too
    large in the sampler. Power: (i) moves π₊ by ≥ 0.04 at n = 20000 (binomial |z| ≥ 8);
    (ii) moves the CDF by ≥ 0.04 > 2 ε in the regimes used."""
    n = 20_000
    eps = dkw_eps(n)
    regimes = [MIX_REGIMES[0], MIX_REGIMES[2]]
    keys = split(make_key(78), 2 * len(regimes))
    for j, regime in enumerate(regimes):
        pi = float(sc.expit(log_odds_mp(*regime)))
        z = _relu_draws(keys[2 * j], regime, n, dz_factor=1.3)
        assert ks_stat(z, lambda t: mixture_cdf(t, *regime, pi)) > eps, ("twin ii", regime)

    real = _common.relu_constants
    monkeypatch.setattr(_common, "relu_constants",
                        lambda dz, dx, s: real(dz, dx, s)._replace(half_log=0.0))
    for j, regime in enumerate(regimes):
        pi = float(sc.expit(log_odds_mp(*regime)))
        for impl in ("cpu", "reference"):
            z = _relu_draws(keys[2 * j + 1], regime, n, impl=impl)
            npos = int(np.sum(~np.signbit(z)))
            assert st.binomtest(npos, n, pi).pvalue < DELTA, ("twin i", regime, impl)


@pytest.mark.slow
def test_relu_mixture_distribution_large():
    """As test_relu_mixture_distribution at n = 10⁶ (ε = 0.0027) in more regimes."""
    n = 1_000_000
    eps = dkw_eps(n)
    regimes = MIX_REGIMES + [(0.1, 0.0, 1e-3, 1e-3, 0.0),
                             (-40 * math.sqrt(1e-6), 5e-3, 1e-6, 1e-6, 0.0)]
    keys = split(make_key(79), len(regimes))
    for kk, regime in zip(keys, regimes):
        pi = float(sc.expit(log_odds_mp(*regime)))
        z = _relu_draws(kk, regime, n)
        assert ks_stat(z, lambda t: mixture_cdf(t, *regime, pi)) < eps, regime
        npos = int(np.sum(~np.signbit(z)))
        assert st.binomtest(npos, n, pi).pvalue > DELTA, regime


# --------------------------------------------------------------------------------------------
# the CUDA C source: nvcc compile, and its host-compiled twin against the reference
# --------------------------------------------------------------------------------------------

def _c_compiler():
    for cc in ("cc", "gcc", "clang"):
        if shutil.which(cc):
            return cc
    return None


@pytest.fixture(scope="module")
def c_twin(tmp_path_factory):
    cc = _c_compiler()
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("cuda_twin")
    src = d / "kernels.c"
    src.write_text(_csrc.source())
    lib = d / "libbbkernels.so"
    cmd = [cc, "-std=c99", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-Wall", "-Werror",
           str(src), "-o", str(lib), "-lm"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    dll = ctypes.CDLL(str(lib))
    u64, i64, dbl = ctypes.c_ulonglong, ctypes.c_longlong, ctypes.c_double
    for sfx in ("f32", "f64"):
        f = getattr(dll, f"bb_relu_preact_{sfx}")
        f.argtypes = [ctypes.c_void_p] * 3 + [i64, u64, u64] + [dbl] * 7
        f.restype = None
        g = getattr(dll, f"bb_truncated_normal_{sfx}")
        g.argtypes = [ctypes.c_void_p, i64] * 4 + [ctypes.c_void_p, i64, u64, u64]
        g.restype = None
    return dll


def _twin_relu(dll, k, A, X, dz, dx, slope):
    dt = A.dtype
    a = np.ascontiguousarray(A).ravel()
    x = np.ascontiguousarray(X).ravel()
    out = np.empty_like(a)
    f = getattr(dll, f"bb_relu_preact_{_csrc.DTYPE_SUFFIX[dt.name][1]}")
    f(a.ctypes.data, x.ctypes.data, out.ctypes.data, a.size, int(k[0]), int(k[1]),
      *_common.relu_constants(dz, dx, slope))
    return out.reshape(A.shape)


def _twin_tn(dll, k, mean, sd, bound, upper):
    dt = mean.dtype
    n = mean.size
    m = np.ascontiguousarray(mean).ravel()
    s = np.ascontiguousarray(np.broadcast_to(np.asarray(sd, dt), mean.shape)).ravel()
    b = np.ascontiguousarray(np.broadcast_to(np.asarray(bound, dt), mean.shape)).ravel()
    u = np.ascontiguousarray(np.broadcast_to(np.asarray(upper, np.bool_), mean.shape)).ravel()
    out = np.empty(n, dt)
    g = getattr(dll, f"bb_truncated_normal_{_csrc.DTYPE_SUFFIX[dt.name][1]}")
    g(m.ctypes.data, 1, s.ctypes.data, 1, b.ctypes.data, 1, u.ctypes.data, 1,
      out.ctypes.data, n, int(k[0]), int(k[1]))
    return out.reshape(mean.shape)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_cuda_source_host_twin_matches_reference(c_twin, dtype, slope):
    for seed, (dz, dx) in enumerate(((1e-3, 1e-3), (1e-6, 1e-2), (1e-2, 1e-6), (1.0, 0.5))):
        a, x = relu_arrays((3000,), dz, dx, seed)
        A, X = a.astype(dtype), x.astype(dtype)
        k = make_key(seed + 100)
        zt = _twin_relu(c_twin, k, A, X, dz, dx, slope)
        zr = kernels.relu_preact(k, A, X, dz, dx, slope=slope, impl="reference")
        zc = kernels.relu_preact(k, A, X, dz, dx, slope=slope, impl="cpu")
        np.testing.assert_array_equal(np.signbit(zt), np.signbit(zr))
        tol = relu_tolerance(zr, A, X, dz, dx, slope, dtype)
        assert np.all(np.abs(zt.astype(float) - zr.astype(float)) <= tol)
        # the same C-level arithmetic as the Numba kernel: equal up to libm's last bit
        assert np.all(np.abs(zt.astype(float) - zc.astype(float)) <= tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_source_host_twin_truncated_normal(c_twin, dtype):
    rng = np.random.default_rng(5)
    n = 4000
    alpha = np.concatenate([rng.uniform(-45, 45, n // 2), rng.uniform(3, 8, n // 2)])
    mean = rng.standard_normal(n)
    sd = 10.0 ** rng.uniform(-3, 1, n)
    upper = rng.random(n) < 0.5
    bound = mean + np.where(upper, -1.0, 1.0) * alpha * sd
    k = make_key(8)
    args = (mean.astype(dtype), sd.astype(dtype), bound.astype(dtype))
    tt = _twin_tn(c_twin, k, *args, upper)
    tr = kernels.truncated_normal(k, *args, upper, impl="reference")
    b = args[2]
    assert np.all(np.where(upper, tt <= b, tt >= b))
    scale = np.abs(tr.astype(float)) + np.abs(mean) + np.abs(bound) + sd * (1 + np.abs(alpha))
    tol = 1e-12 * scale
    if dtype == "float32":
        tol = tol + 2.0 * np.spacing(np.abs(tr)).astype(np.float64)
    assert np.all(np.abs(tt.astype(float) - tr.astype(float)) <= tol)


def test_cuda_source_compiles_with_nvcc(tmp_path):
    """The translation unit compiles as CUDA C++ (warnings are errors) to PTX with the four
    unmangled ``extern "C"`` entry points that :mod:`blockbayes.kernels.cuda` looks up, and
    assembles for Hopper (sm_90)."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not installed")
    src = tmp_path / "kernels.cu"
    src.write_text(_csrc.source())
    ptx = tmp_path / "kernels.ptx"
    common = [nvcc, "--std=c++14", "--fmad=false", "-Werror", "all-warnings"]
    res = subprocess.run(common + ["-arch=sm_80", "-ptx", str(src), "-o", str(ptx)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = ptx.read_text()
    for name in _csrc.KERNEL_NAMES:
        assert f".entry {name}(" in text, name
    res = subprocess.run(common + ["-arch=sm_90", "-cubin", str(src), "-o",
                                   str(tmp_path / "kernels.cubin")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


class _HostArray(np.ndarray):
    """NumPy array with a CuPy-like ``.device`` context manager (for the fake CuPy below)."""

    @property
    def device(self):
        return contextlib.nullcontext()


class _FakeCupy(types.ModuleType):
    """Just enough of CuPy for blockbayes.kernels.cuda, with ``RawKernel`` calling the
    host-compiled twin of the CUDA source: checks the launchers' argument marshalling (names,
    order and C types of the kernel arguments, dtypes, broadcasting, reshaping) end to end."""

    def __init__(self, dll, calls):
        super().__init__("cupy")
        self._dll = dll
        self._calls = calls

    @staticmethod
    def _wrap(a):
        return np.asarray(a).view(_HostArray)

    def ascontiguousarray(self, a, dtype=None):
        return self._wrap(np.ascontiguousarray(a, dtype=dtype))

    def asarray(self, a, dtype=None):
        return self._wrap(np.asarray(a, dtype=dtype))

    def empty(self, shape, dtype=float):
        return self._wrap(np.empty(shape, dtype=dtype))

    def broadcast_to(self, a, shape):
        return self._wrap(np.broadcast_to(a, shape))

    def RawKernel(self, code, name, options=()):
        assert code == _csrc.source()
        fn = getattr(self._dll, name)
        conv = {np.dtype(np.int64): ctypes.c_longlong, np.dtype(np.uint64): ctypes.c_ulonglong,
                np.dtype(np.float64): ctypes.c_double}

        def launch(grid, block, args):
            assert len(grid) == 1 and len(block) == 1 and grid[0] >= 1 and block[0] >= 1
            cargs = []
            for a in args:
                if isinstance(a, np.ndarray) and a.ndim >= 1:
                    assert a.flags.c_contiguous
                    cargs.append(ctypes.c_void_p(a.ctypes.data))
                else:
                    assert isinstance(a, np.generic), type(a)   # never a bare Python number
                    cargs.append(conv[a.dtype](a))
            self._calls.append(name)
            fn(*cargs)

        return launch


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cuda_launchers_with_host_twin(c_twin, monkeypatch, dtype):
    from blockbayes.kernels import cuda

    calls = []
    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy(c_twin, calls))
    cuda.kernel.cache_clear()
    try:
        a, x = relu_arrays((6, 7, 5), 1e-4, 1e-3, 3)
        A = np.asarray(a, dtype).view(_HostArray)
        X = np.asarray(x, dtype).view(_HostArray)
        k = make_key(12)
        consts = _common.relu_constants(1e-4, 1e-3, 0.05)
        z = cuda.relu_preact(int(k[0]), int(k[1]), A, X, consts, np.dtype(dtype))
        zr = kernels.relu_preact(k, np.asarray(A), np.asarray(X), 1e-4, 1e-3, slope=0.05,
                                 impl="reference")
        assert z.shape == A.shape and z.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(np.signbit(z), np.signbit(zr))
        tol = relu_tolerance(zr, np.asarray(A), np.asarray(X), 1e-4, 1e-3, 0.05, dtype)
        assert np.all(np.abs(np.asarray(z, float) - zr.astype(float)) <= tol)
        # truncated normal with a full mean, scalar sd, (3, 1) bound and a (7,)-broadcast upper
        mean = np.asarray(a.reshape(6, 7, 5)[0], dtype).view(_HostArray)            # (7, 5)
        bound = np.asarray(np.linspace(-1, 1, 7).reshape(7, 1), dtype).view(_HostArray)
        upper = np.asarray([True, False, True, True, False]).view(_HostArray)
        t = cuda.truncated_normal(int(k[0]), int(k[1]), mean, 0.3, bound, upper, (7, 5),
                                  np.dtype(dtype))
        tr = kernels.truncated_normal(k, np.asarray(mean), 0.3, np.asarray(bound),
                                      np.asarray(upper), impl="reference")
        assert t.shape == (7, 5) and t.dtype == np.dtype(dtype)
        tol = 1e-12 * (np.abs(tr.astype(float)) + 10.0)
        if dtype == "float32":
            tol = tol + 2.0 * np.spacing(np.abs(tr)).astype(np.float64)
        assert np.all(np.abs(np.asarray(t, float) - tr.astype(float)) <= tol)
        sfx = _csrc.DTYPE_SUFFIX[dtype][1]
        assert calls == [f"bb_relu_preact_{sfx}", f"bb_truncated_normal_{sfx}"]
    finally:
        cuda.kernel.cache_clear()


# --------------------------------------------------------------------------------------------
# CuPy (GPU only)
# --------------------------------------------------------------------------------------------

def _cupy_or_skip():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no usable CUDA device ({exc})")
    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_cuda_relu_matches_reference(dtype, slope):
    cupy = _cupy_or_skip()
    for seed, (dz, dx) in enumerate(((1e-3, 1e-3), (1e-6, 1e-2))):
        a, x = relu_arrays((50, 40), dz, dx, seed)
        A, X = a.astype(dtype), x.astype(dtype)
        k = make_key(seed)
        Ag, Xg = cupy.asarray(A), cupy.asarray(X)
        zg = kernels.relu_preact(k, Ag, Xg, dz, dx, slope=slope)
        assert isinstance(zg, cupy.ndarray) and zg.dtype == A.dtype and zg.shape == A.shape
        assert zg.device == Ag.device
        zr_dev = kernels.relu_preact(k, Ag, Xg, dz, dx, slope=slope, impl="reference")
        zr = kernels.relu_preact(k, A, X, dz, dx, slope=slope, impl="reference")
        z = zg.get()
        np.testing.assert_array_equal(np.signbit(z), np.signbit(zr))
        tol = relu_tolerance(zr, A, X, dz, dx, slope, dtype)
        assert np.all(np.abs(z.astype(float) - zr.astype(float)) <= tol)
        assert np.all(np.abs(zr_dev.get().astype(float) - zr.astype(float)) <= tol)
        np.testing.assert_array_equal(Ag.get(), A)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cuda_truncated_normal_matches_reference(dtype):
    cupy = _cupy_or_skip()
    rng = np.random.default_rng(3)
    mean = rng.standard_normal((30, 20)).astype(dtype)
    upper = rng.random((30, 20)) < 0.5
    k = make_key(4)
    tg = kernels.truncated_normal(k, cupy.asarray(mean), 0.05, 0.0, cupy.asarray(upper))
    tr = kernels.truncated_normal(k, mean, 0.05, 0.0, upper, impl="reference")
    t = tg.get()
    assert t.dtype == np.dtype(dtype)
    assert np.all(np.where(upper, t <= 0, t >= 0))
    tol = 1e-10 * (np.abs(tr.astype(float)) + np.abs(mean) + 0.05 * 50)
    if dtype == "float32":
        tol = tol + 2.0 * np.spacing(np.abs(tr)).astype(np.float64)
    assert np.all(np.abs(t.astype(float) - tr.astype(float)) <= tol)
