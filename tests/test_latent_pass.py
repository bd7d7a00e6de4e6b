"""The fused latent pass (kernels.latent_pass): equivalence of the Numba kernel, the Array-API
reference and the host-compiled twin of the CUDA source; global-row keying (shards draw what
the full pass draws); the exact conditional distribution of X and Z with a broken twin; and the
log joint the sampler assembles from the pass's sums.

Distribution tests use the DKW inequality with δ = 1e-6 per comparison (Bonferroni over the
comparisons of a test keeps each test below 1e-4) and state their broken twin.
"""
from __future__ import annotations

import ctypes
import math
import sys

import numpy as np
import pytest
import scipy.special as sc
from _helpers import njit_twin

import blockbayes as bb
from blockbayes import gibbs, kernels
from blockbayes._backend import random as bbr
from blockbayes.kernels import _common, _csrc
from blockbayes.kernels._vec import vload, vsplat

DELTA = 1e-6

CASES = [  # C, n, d, k, method, activation, slope, dtype
    (2, 37, 5, 2, "matheron", "relu", 0.0, "float64"),
    (3, 29, 3, 4, "cholesky", "relu", 0.0, "float64"),
    (2, 41, 4, 1, "auto", "identity", 1.0, "float64"),
    (2, 33, 6, 2, "auto", "leaky_relu", 0.1, "float32"),
    (1, 50, 2, 3, "cholesky", "identity", 1.0, "float32"),
    (4, 300, 7, 3, "matheron", "leaky_relu", 0.2, "float32"),
]


def _inputs(C, n, d, k, dtype, seed=0, shared_t=False, dz=0.05, dx=0.02):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((C, n, d)).astype(dtype)
    A = (Z + math.sqrt(dz) * rng.standard_normal((C, n, d))).astype(dtype)
    T = rng.standard_normal((1 if shared_t else C, n, k)).astype(dtype)
    W = (rng.standard_normal((C, k, d + 1)) / math.sqrt(d)).astype(dtype)
    dn = 0.05 + rng.random(C)
    return Z, A, T, W, dn


def _tol(ref, dtype):
    ref = np.asarray(ref, np.float64)
    if dtype == "float32":
        return 1e-4 * (np.abs(ref) + 1.0)
    return 1e-9 * (np.abs(ref) + 1.0)


def _assert_twin_matches_reference(calls, dtype, twin, ref):
    """The CUDA launcher ran the one fused kernel through its host twin, and its ``(X, Z, sums)``
    match the reference: X within rounding, Z within 10× rounding on ≥ 99.8% of the entries, the
    sums to 1e-3 (float32) / 1e-9 (float64)."""
    Xt, Zt, st = twin
    Xr, Zr, sr = ref
    assert calls == [f"bb_latent_pass_{_csrc.DTYPE_SUFFIX[dtype][1]}"]
    np.testing.assert_array_less(np.abs(np.asarray(Xt, float) - Xr.astype(float)), _tol(Xr, dtype))
    bad = np.abs(np.asarray(Zt, float) - Zr.astype(float)) > _tol(Zr, dtype) * 10
    assert bad.mean() <= 0.002
    np.testing.assert_allclose(np.asarray(st), sr, rtol=1e-3 if dtype == "float32" else 1e-9)


@pytest.mark.parametrize("case", CASES, ids=[f"{c[4]}-{c[5]}-{c[7]}" for c in CASES])
def test_cpu_equals_reference(case):
    C, n, d, k, method, act, slope, dtype = case
    Z, A, T, W, dn = _inputs(C, n, d, k, dtype)
    key = bbr.key(11)
    kw = dict(activation=act, slope=slope, method=method)
    Xr, Zr, sr = kernels.latent_pass(key, Z, A, T, W, 0.02, 0.05, dn, impl="reference", **kw)
    Xc, Zc, sc_ = kernels.latent_pass(key, Z, A, T, W, 0.02, 0.05, dn, impl="cpu", **kw)
    assert Xc.shape == Zc.shape == Z.shape and Xc.dtype == Zc.dtype == np.dtype(dtype)
    assert sc_.shape == (C, 3) and sc_.dtype == np.float64
    np.testing.assert_array_less(np.abs(Xc.astype(float) - Xr.astype(float)), _tol(Xr, dtype))
    # Z given (nearly) the same X: equal to rounding (a branch may flip only where u₁ ≈ π₊)
    bad = np.abs(Zc.astype(float) - Zr.astype(float)) > _tol(Zr, dtype) * 10
    assert bad.mean() <= 0.002, bad.mean()
    np.testing.assert_allclose(sc_, sr, rtol=1e-3 if dtype == "float32" else 1e-9)
    if act != "identity":
        # the pass's Z is the ReLU kernel's draw given the new X (same arithmetic, bit for bit)
        assert np.all((Zc >= 0) == ~np.signbit(Zc))


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_row_offset_shards_draw_the_full_pass(impl):
    C, n, d, k = 3, 60, 4, 2
    Z, A, T, W, dn = _inputs(C, n, d, k, "float64", seed=2)
    key = bbr.key(5)
    full = kernels.latent_pass(key, Z, A, T, W, 0.02, 0.05, dn, impl=impl)
    parts = [kernels.latent_pass(key, Z[:, a:b], A[:, a:b], T[:, a:b], W, 0.02, 0.05, dn,
                                 row_offset=a, impl=impl) for a, b in ((0, 17), (17, 18), (18, 60))]
    # the same draws; the Numba kernel's row arithmetic is the same bit for bit, the reference's
    # matrix products may round differently for other row counts (BLAS blocking)
    eq = (np.testing.assert_array_equal if impl == "cpu"
          else lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15))
    eq(np.concatenate([p[0] for p in parts], axis=1), full[0])
    eq(np.concatenate([p[1] for p in parts], axis=1), full[1])
    np.testing.assert_allclose(sum(p[2] for p in parts), full[2], rtol=1e-12)
    # the other chain layout is a different stream: the keying is not just the flat index
    other = kernels.latent_pass(key, Z[:, 1:], A[:, 1:], T[:, 1:], W, 0.02, 0.05, dn, impl=impl)
    assert not np.array_equal(other[0], full[0][:, 1:])


def test_shared_targets_broadcast():
    C, n, d, k = 3, 20, 4, 2
    Z, A, T, W, dn = _inputs(C, n, d, k, "float64", seed=3, shared_t=True)
    key = bbr.key(6)
    a = kernels.latent_pass(key, Z, A, T, W, 0.02, 0.05, dn)
    b = kernels.latent_pass(key, Z, A, np.broadcast_to(T, (C, n, k)), W, 0.02, 0.05, dn)
    c = kernels.latent_pass(key, Z, A, np.ascontiguousarray(np.broadcast_to(T, (C, n, k))), W, 0.02, 0.05, dn,
                            impl="reference")
    for u, v, w in zip(a, b, c):
        np.testing.assert_array_equal(u, v)
        np.testing.assert_allclose(u, w, rtol=1e-9, atol=1e-12)


def test_errors():
    Z, A, T, W, dn = _inputs(2, 5, 3, 1, "float64")
    key = bbr.key(0)
    with pytest.raises(ValueError, match="shape"):
        kernels.latent_pass(key, Z, A[:, :4], T, W, 0.1, 0.1, dn)
    with pytest.raises(ValueError, match="W must have shape"):
        kernels.latent_pass(key, Z, A, T, W[:, :, :3], 0.1, 0.1, dn)
    with pytest.raises(ValueError, match="positive"):
        kernels.latent_pass(key, Z, A, T, W, -0.1, 0.1, dn)
    with pytest.raises(ValueError, match="method"):
        kernels.latent_pass(key, Z, A, T, W, 0.1, 0.1, dn, method="qr")
    with pytest.raises(ValueError, match="row_offset"):
        kernels.latent_pass(key, Z, A, T, W, 0.1, 0.1, dn, row_offset=-1)
    with pytest.raises(ValueError, match="activation"):
        kernels.latent_pass(key, Z, A, T, W, 0.1, 0.1, dn, activation="tanh")
    with pytest.raises(TypeError, match="key"):
        kernels.latent_pass(0, Z, A, T, W, 0.1, 0.1, dn)


def test_array_api_strict_goes_through_reference():
    xs = pytest.importorskip("array_api_strict")
    Z, A, T, W, dn = _inputs(2, 9, 3, 2, "float64", seed=4)
    key = bbr.key(8)
    out = kernels.latent_pass(key, xs.asarray(Z), xs.asarray(A), xs.asarray(T), xs.asarray(W), 0.02, 0.05,
                              xs.asarray(dn))
    ref = kernels.latent_pass(key, Z, A, T, W, 0.02, 0.05, dn, impl="reference")
    for u, v in zip(out, ref):
        np.testing.assert_allclose(np.asarray(u), v, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------- exact distribution

def _ks_normal(w):
    x = np.sort(w)
    f = sc.ndtr(x)
    i = np.arange(1, x.size + 1)
    return float(max(np.max(i / x.size - f), np.max(f - (i - 1) / x.size)))


def _whitened_x(X, z, t, W, dx, dn, slope):
    """Whiten the draws with the exact conditional (A.2): x ~ N(Q⁻¹r, Q⁻¹)."""
    d = z.size
    Wh, b = W[:, :d], W[:, d]
    fz = np.where(z >= 0, z, slope * z)
    Q = np.eye(d) / dx + Wh.T @ Wh / dn
    r = fz / dx + Wh.T @ (t - b) / dn
    mean = np.linalg.solve(Q, r)
    R = np.linalg.cholesky(Q)                      # Q = R Rᵀ: Rᵀ(x − μ) ~ N(0, I)
    return (X - mean) @ R


@pytest.mark.parametrize("method", ["matheron", "cholesky"])
def test_post_activations_are_exact_draws_and_twin_is_caught(method):
    """n rows sharing one (z, t): the whitened X components are N(0, 1) (KS, DKW bound at δ per
    component); the broken twin — the next layer's noise taken 1.5× too large — is rejected."""
    n, d, k = 20000, 3, 2
    rng = np.random.default_rng(1)
    z = rng.standard_normal(d)
    t = rng.standard_normal(k)
    W = rng.standard_normal((k, d + 1))
    dx, dz, dn, slope = 0.3, 0.2, 0.15, 0.1
    Z = np.broadcast_to(z, (1, n, d)).copy()
    A = np.zeros((1, n, d))
    T = np.broadcast_to(t, (1, n, k)).copy()
    eps = math.sqrt(math.log(2 * d / DELTA) / (2 * n))
    for bug, expect_ok in ((1.0, True), (1.5, False)):
        X, _, _ = kernels.latent_pass(bbr.key(3), Z, A, T, W[None], dx, dz, np.array([dn * bug]),
                                      activation="leaky_relu", slope=slope, method=method)
        w = _whitened_x(X[0], z, t, W, dx, dn, slope)
        stats = [_ks_normal(w[:, j]) for j in range(d)]
        assert (max(stats) <= eps) == expect_ok, (bug, stats, eps)


def test_identity_pre_activations_are_exact_draws_and_twin_is_caught():
    """Z | a, x_new for the identity: N((Δ_X a + Δ_Z x)/S, Δ_XΔ_Z/S) by its PIT; the twin
    (Δ_Z and Δ_X swapped in the mean) is rejected."""
    n, d, k = 20000, 2, 1
    rng = np.random.default_rng(2)
    Z = rng.standard_normal((1, n, d))
    A = rng.standard_normal((1, n, d))
    T = rng.standard_normal((1, n, k))
    W = rng.standard_normal((1, k, d + 1))
    dx, dz = 0.3, 0.1
    X, Zn, _ = kernels.latent_pass(bbr.key(4), Z, A, T, W, dx, dz, 0.2, activation="identity")
    s = dx + dz
    eps = math.sqrt(math.log(4 / DELTA) / (2 * n * d))
    for mean, expect_ok in (((dx * A + dz * X) / s, True), ((dz * A + dx * X) / s, False)):
        u = ((Zn - mean) / math.sqrt(dx * dz / s)).ravel()
        assert (_ks_normal(u) <= eps) == expect_ok


# ------------------------------------------------------------------------- the CUDA source's twin

@pytest.fixture(scope="module")
def c_twin(tmp_path_factory):
    import shutil
    import subprocess

    cc = next((c for c in ("cc", "gcc", "clang") if shutil.which(c)), None)
    if cc is None:
        pytest.skip("no C compiler")
    d = tmp_path_factory.mktemp("latent_twin")
    src = d / "kernels.c"
    src.write_text(_csrc.source())
    lib = d / "libbblatent.so"
    res = subprocess.run([cc, "-std=c99", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-Wall",
                          "-Werror", str(src), "-o", str(lib), "-lm"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return ctypes.CDLL(str(lib))


class _HostArray(np.ndarray):
    @property
    def device(self):
        import contextlib

        return contextlib.nullcontext()


class _FakeCupy:
    """Enough of CuPy for cuda.latent_pass, launching the host-compiled twin."""

    def __init__(self, dll, calls):
        self._dll, self._calls = dll, calls
        self.float64 = np.float64

    def _w(self, a):
        return np.asarray(a).view(_HostArray)

    def ascontiguousarray(self, a, dtype=None):
        return self._w(np.ascontiguousarray(a, dtype=dtype))

    def asarray(self, a, dtype=None):
        return self._w(np.asarray(a, dtype=dtype))

    def empty(self, shape, dtype=float):
        return self._w(np.empty(shape, dtype=dtype))

    def RawKernel(self, code, name, options=()):
        assert code == _csrc.source()
        fn = getattr(self._dll, name)
        conv = {np.dtype(np.int64): ctypes.c_longlong, np.dtype(np.uint64): ctypes.c_ulonglong,
                np.dtype(np.float64): ctypes.c_double}

        def launch(grid, block, args):
            cargs = []
            for a in args:
                if isinstance(a, np.ndarray) and a.ndim >= 1:
                    assert a.flags.c_contiguous
                    cargs.append(ctypes.c_void_p(a.ctypes.data))
                else:
                    assert isinstance(a, np.generic), type(a)
                    cargs.append(conv[a.dtype](a))
            self._calls.append(name)
            fn(*cargs)

        return launch


@pytest.mark.parametrize("case", CASES, ids=[f"{c[4]}-{c[5]}-{c[7]}" for c in CASES])
def test_cuda_launcher_with_host_twin_matches_reference(c_twin, monkeypatch, case):
    from blockbayes.kernels import cuda

    C, n, d, k, method, act, slope, dtype = case
    calls = []
    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy(c_twin, calls))
    cuda.kernel.cache_clear()
    try:
        Z, A, T, W, dn = _inputs(C, n, d, k, dtype, seed=7, shared_t=(C == 3))
        key = bbr.key(21)
        mth = _common.METHODS["matheron" if method == "auto" and k < d else
                              ("cholesky" if method == "auto" else method)]
        a = _common.ACTIVATIONS[act]
        consts = _common.relu_constants(0.05, 0.02, slope if a == 0 else 0.0)
        v = lambda x: np.asarray(x).view(_HostArray)
        Xt, Zt, st = cuda.latent_pass(int(key[0]), int(key[1]), v(Z), v(A), v(T), v(W), v(dn), 0.02, 0.05,
                                      consts, a, slope, mth, 3, np.dtype(dtype))
        Xr, Zr, sr = kernels.latent_pass(key, Z, A, T, W, 0.02, 0.05, dn, activation=act, slope=slope,
                                         method=method, row_offset=3, impl="reference")
        _assert_twin_matches_reference(calls, dtype, (Xt, Zt, st), (Xr, Zr, sr))
    finally:
        cuda.kernel.cache_clear()


# ------------------------------------------------------------------------- the sampler's log joint

@pytest.mark.parametrize("widths,act,lik", [((3, 4, 1), "relu", "gaussian"), ((2, 3, 2, 2), "leaky_relu", "gaussian"),
                                            ((3, 4, 3), "identity", "multinomial_probit")])
def test_fused_log_joint_equals_direct(widths, act, lik):
    """info_t.log_joint_partial + info_{t+1}.first_term_prev == log_joint(state_t), exactly up to
    rounding; and run()'s stored trace equals the direct log joint of each kept state."""
    rng = np.random.default_rng(0)
    n = 30
    net = bb.MLP(list(widths), act, delta=0.1, likelihood=lik)
    X = rng.standard_normal((n, widths[0]))
    y = rng.integers(0, widths[-1], n) if lik != "gaussian" else rng.standard_normal((n, widths[-1]))
    Xv, yv = gibbs.validate_data(net, X, y)
    state = gibbs.init(bbr.key(1), net, Xv, yv, num_chains=3)
    key = bbr.key(2)
    prev = None
    for _ in range(4):
        key, sub = bbr.split(key)
        new, info = gibbs.step(sub, state, net, Xv, yv, learn_prior=True)
        if prev is not None:
            np.testing.assert_allclose(prev + info.first_term_prev, gibbs.log_joint(state, net, Xv, yv),
                                       rtol=1e-10)
        prev, state = info.log_joint_partial, new
    res = gibbs.run(net, X, y, num_samples=5, num_warmup=2, thin=2, num_chains=2, seed=3, progress=False,
                    learn_prior=True, init="prior", learn_noise=False)
    last = gibbs.log_joint(res.final_state, net, Xv, yv)
    np.testing.assert_allclose(res.log_joint[:, -1], last, rtol=1e-10)
    assert np.all(np.isfinite(res.log_joint))


# ------------------------------------------------------------------------- node rows

@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("use_chol", [False, True])
def test_gaussian_rows_cpu_equals_reference(dtype, use_chol):
    rng = np.random.default_rng(5)
    C, d1, k = 3, 6, 4
    H = rng.standard_normal((C, 40, d1 - 1))
    Ht = np.concatenate([H, np.ones((C, 40, 1))], axis=-1)
    G = (np.swapaxes(Ht, -1, -2) @ Ht).astype(dtype)
    B = (np.swapaxes(Ht, -1, -2) @ rng.standard_normal((C, 40, k))).astype(dtype)
    pd = 1.0 + rng.random((C, d1))
    dl = 0.1 + rng.random(C)
    key = bbr.key(9)
    if use_chol:
        pd[:] = pd[0]
        dl[:] = dl[0]
        R = np.linalg.cholesky(G[0].astype(float) + np.diag(dl[0] * pd[0])).astype(dtype)
        kw = dict(chol=R)
    else:
        kw = dict(gram=G, prior_diag=pd)
    Wc = kernels.gaussian_rows(key, B, dl, impl="cpu", **kw)
    Wr = kernels.gaussian_rows(key, B, dl, impl="reference", **kw)
    assert Wc.shape == (C, k, d1) and Wc.dtype == np.dtype(dtype)
    np.testing.assert_allclose(Wc, Wr, rtol=1e-5 if dtype == "float32" else 1e-10, atol=1e-6 if dtype == "float32" else 1e-12)
    # the mean: with the noise removed (Δ → 0 in the noise only) the rows solve (G + ΔΛ) w = B
    P = G[0].astype(float) + np.diag(dl[0] * pd[0])
    mean = np.linalg.solve(P, B[0].astype(float)).T
    resid = (Wc[0].astype(float) - mean) @ np.linalg.cholesky(P)    # Rᵀ(w − m) ~ N(0, Δ I)
    assert np.all(np.abs(resid) / math.sqrt(dl[0]) < 6.0)


def test_gaussian_rows_wide_block_goes_through_lapack():
    rng = np.random.default_rng(6)
    C, d1, k = 2, 140, 3
    A = rng.standard_normal((C, 300, d1))
    G = np.swapaxes(A, -1, -2) @ A
    B = rng.standard_normal((C, d1, k))
    pd = np.ones((C, d1))
    dl = np.array([0.2, 0.3])
    key = bbr.key(10)
    np.testing.assert_allclose(kernels.gaussian_rows(key, B, dl, gram=G, prior_diag=pd),
                               kernels.gaussian_rows(key, B, dl, gram=G, prior_diag=pd, impl="reference"),
                               rtol=1e-12)


def test_parallel_and_serial_paths_agree(monkeypatch):
    """The threaded kernel (passes of ≥ 2**16 elements with > 1 thread) draws what the serial
    one draws, bit for bit (same groups, same counters)."""
    from blockbayes.kernels import cpu

    Z, A, T, W, dn = _inputs(2, 9000, 4, 2, "float32", seed=8)
    key = bbr.key(31)
    monkeypatch.setattr(cpu, "get_num_threads", lambda: 2)
    par = kernels.latent_pass(key, Z, A, T, W, 0.02, 0.05, dn, impl="cpu")
    monkeypatch.setattr(cpu, "get_num_threads", lambda: 1)
    ser = kernels.latent_pass(key, Z, A, T, W, 0.02, 0.05, dn, impl="cpu")
    for u, v in zip(par[:2], ser[:2]):
        np.testing.assert_array_equal(u, v)
    np.testing.assert_allclose(par[2], ser[2], rtol=1e-12)


# ------------------------------------------------------------------------- per-chain Δ (replica exchange)

def _chain_deltas(C, groups):
    """Per-chain (Δ_X, Δ_Z): chains split into ``groups`` contiguous blocks, block k with Δ × 3^k."""
    f = np.repeat(3.0 ** np.arange(groups), -(-C // groups))[:C]
    return 0.02 * f, 0.05 * f, f


@pytest.mark.parametrize("impl", ["reference", "cpu"])
@pytest.mark.parametrize("case", CASES[:4], ids=[f"{c[4]}-{c[5]}-{c[7]}" for c in CASES[:4]])
def test_per_chain_deltas_equal_the_shared_calls(impl, case):
    """A pass with per-chain Δ_X, Δ_Z gives each chain what the pass with that chain's Δ as the
    shared value gives it (same key, same arrays: the counters do not depend on Δ) — bit for bit
    (measured; asserted to 1e-13 relative, the per-chain constants being formed by NumPy rather
    than by Python's math module)."""
    C, n, d, k, method, act, slope, dtype = case
    C = max(C, 3)
    Z, A, T, W, dn = _inputs(C, n, d, k, dtype, seed=3)
    dxs, dzs, f = _chain_deltas(C, 3)
    key = bbr.key(17)
    kw = dict(activation=act, slope=slope, method=method, impl=impl)
    Xp, Zp, sp_ = kernels.latent_pass(key, Z, A, T, W, dxs, dzs, dn, **kw)
    for c in range(C):
        Xs, Zs, ss = kernels.latent_pass(key, Z, A, T, W, float(dxs[c]), float(dzs[c]), dn, **kw)
        np.testing.assert_allclose(Xp[c], Xs[c], rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(Zp[c], Zs[c], rtol=1e-13, atol=1e-300)
        np.testing.assert_allclose(sp_[c], ss[c], rtol=1e-13)
    # arrays of one value are the shared call
    Xa, Za, sa = kernels.latent_pass(key, Z, A, T, W, np.full(C, 0.02), np.full(C, 0.05), dn, **kw)
    Xb, Zb, sb = kernels.latent_pass(key, Z, A, T, W, 0.02, 0.05, dn, **kw)
    np.testing.assert_allclose(Xa, Xb, rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(Za, Zb, rtol=1e-13, atol=1e-300)
    with pytest.raises(ValueError):
        kernels.latent_pass(key, Z, A, T, W, dxs[:-1], dzs, dn, **kw)
    with pytest.raises(ValueError):
        kernels.latent_pass(key, Z, A, T, W, -dxs, dzs, dn, **kw)


@pytest.mark.parametrize("case", CASES[:4], ids=[f"{c[4]}-{c[5]}-{c[7]}" for c in CASES[:4]])
def test_cuda_launcher_with_host_twin_per_chain_deltas(c_twin, monkeypatch, case):
    """The CUDA source (host twin) with per-chain Δ equals the reference with per-chain Δ."""
    from blockbayes.kernels import cuda

    C, n, d, k, method, act, slope, dtype = case
    C = max(C, 3)
    calls = []
    monkeypatch.setitem(sys.modules, "cupy", _FakeCupy(c_twin, calls))
    cuda.kernel.cache_clear()
    try:
        Z, A, T, W, dn = _inputs(C, n, d, k, dtype, seed=8)
        dxs, dzs, _ = _chain_deltas(C, 3)
        key = bbr.key(23)
        mth = _common.METHODS["matheron" if method == "auto" and k < d else
                              ("cholesky" if method == "auto" else method)]
        a = _common.ACTIVATIONS[act]
        consts = _common.relu_constants_array(np, dzs, dxs, slope if a == 0 else 0.0)
        v = lambda x: np.asarray(x).view(_HostArray)
        Xt, Zt, st = cuda.latent_pass(int(key[0]), int(key[1]), v(Z), v(A), v(T), v(W), v(dn), dxs, dzs,
                                      consts, a, slope, mth, 0, np.dtype(dtype))
        Xr, Zr, sr = kernels.latent_pass(key, Z, A, T, W, dxs, dzs, dn, activation=act, slope=slope,
                                         method=method, impl="reference")
        _assert_twin_matches_reference(calls, dtype, (Xt, Zt, st), (Xr, Zr, sr))
    finally:
        cuda.kernel.cache_clear()


@pytest.mark.parametrize("impl", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_relu_preact_per_chain_deltas(impl, dtype):
    """relu_preact with per-chain Δ_Z, Δ_X (one per index of the leading axis) equals the shared
    calls chain by chain (counters are flat indices either way)."""
    rng = np.random.default_rng(4)
    C, n, d = 6, 9, 3
    A = rng.standard_normal((C, n, d)).astype(dtype)
    X = np.maximum(A + 0.2 * rng.standard_normal((C, n, d)), 0).astype(dtype)
    dxs, dzs, _ = _chain_deltas(C, 3)
    key = bbr.key(9)
    Zp = kernels.relu_preact(key, A, X, dzs, dxs, slope=0.1, impl=impl)
    for c in range(C):
        Zs = kernels.relu_preact(key, A, X, float(dzs[c]), float(dxs[c]), slope=0.1, impl=impl)
        np.testing.assert_allclose(Zp[c], Zs[c], rtol=1e-13 if dtype == "float64" else 1e-6, atol=1e-300)


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_gaussian_rows_per_chain_cholesky(impl):
    """A per-chain Cholesky factor (C, d+1, d+1) gives chain c what the shared factor R_c gives it."""
    rng = np.random.default_rng(5)
    C, d1, k = 4, 3, 2
    B = rng.standard_normal((C, d1, k))
    Rs = []
    for c in range(C):
        M = rng.standard_normal((d1, d1))
        Rs.append(np.linalg.cholesky(M @ M.T + d1 * np.eye(d1)))
    Rs = np.stack(Rs)
    delta = 0.1 + rng.random(C)
    key = bbr.key(3)
    Wp = kernels.gaussian_rows(key, B, delta, chol=Rs, impl=impl)
    for c in range(C):
        Ws = kernels.gaussian_rows(key, B, delta, chol=Rs[c], impl=impl)
        np.testing.assert_allclose(Wp[c], Ws[c], rtol=1e-13, atol=1e-300)


def _sub_rows_sum_first(dst, S, c, p0, p1, nrows):
    """A broken twin of ``cpu._sub_rows``: the products summed first, then one subtraction
    (the same value in exact arithmetic, other roundings)."""
    for r in range(nrows):
        acc = 0.0
        for p in range(p0, p1):
            acc += c[p - p0] * S[p, r]
        dst[r] = dst[r] - acc


def test_jammed_row_updates_are_the_one_term_passes_bit_for_bit():
    """``cpu._axpy_rows`` with sign −1 (``_sub_rows``) and +1 (four terms per pass over the
    columns) give every column
    the one-term-per-pass updates ``dst[r] ∓= c_p S[p, r]`` in ascending p bit for bit, for 0–11
    terms (remainders of the groups of four), an offset ``p0``, a strided coefficient column, and
    1–700 columns; the sum-first twin is caught."""
    from blockbayes.kernels import cpu

    rng = np.random.default_rng(5)
    S = rng.standard_normal((14, 700)) * 10.0 ** rng.uniform(-3, 3, (14, 700))
    C2 = rng.standard_normal((14, 14))
    caught = False
    for nrows in (1, 7, 64, 700):
        for p0, p1 in [(0, 0), (0, 1), (0, 3), (0, 4), (0, 5), (0, 8), (0, 11), (2, 12), (3, 14)]:
            for add, f in ((False, cpu._sub_rows),
                           (True, lambda *a: cpu._axpy_rows(*a, 1.0))):
                c = C2[:, 5][p0:p1]                      # a strided column, as the solves pass
                d0 = rng.standard_normal(nrows)
                want = d0.copy()
                for p in range(p0, p1):
                    want = want + c[p - p0] * S[p, :nrows] if add else want - c[p - p0] * S[p, :nrows]
                got = d0.copy()
                f(got, S, c, p0, p1, nrows)
                assert np.array_equal(got.view(np.uint64), want.view(np.uint64)), (nrows, p0, p1, add)
                if not add and p1 - p0 >= 3:
                    tw = d0.copy()
                    _sub_rows_sum_first(tw, S, c, p0, p1, nrows)
                    caught |= not np.array_equal(tw.view(np.uint64), want.view(np.uint64))
    assert caught


def _matheron_rows_python(xb, nb, ek, t, nrows, d, k, W, L, dx, dn):
    """The perturb-and-correct X draw row by row in Python floats (IEEE doubles), in the order
    ``cpu._lg_rows_matheron``'s docstring states; returns (x, Σ‖t − b − Ŵx‖²)."""
    sx, se = math.sqrt(dx), math.sqrt(dn)
    X = np.empty((nrows, d))
    res = np.empty((k, nrows))
    for r in range(nrows):
        x0 = [float(xb[r * d + j]) + sx * float(nb[r * d + j]) for j in range(d)]
        v = []
        for m in range(k):
            s = float(np.float64(t[r * k + m])) - float(W[m, d])
            for j in range(d):
                s = s - float(W[m, j]) * x0[j]
            v.append(s - se * float(ek[r * k + m]))
        for m in range(k):
            for p in range(m):
                v[m] = v[m] - float(L[m, p]) * v[p]
            v[m] = v[m] / float(L[m, m])
        for m in range(k - 1, -1, -1):
            for p in range(m + 1, k):
                v[m] = v[m] - float(L[p, m]) * v[p]
            v[m] = v[m] / float(L[m, m])
        for m in range(k):
            res[m, r] = dn * v[m] + se * float(ek[r * k + m])
        y = [dx * v[m] for m in range(k)]
        for j in range(d):
            xj = x0[j]
            for m in range(k):
                xj = xj + float(W[m, j]) * y[m]
            X[r, j] = xj
    s_next = 0.0
    for m in range(k):
        acc = 0.0
        for r in range(nrows):
            acc = acc + res[m, r] * res[m, r]
        s_next = s_next + acc
    return X.reshape(-1), s_next


def _vsub_terms_sum_first(acc, c, p0, p1, S, stride, b):
    """A broken twin of ``cpu._vsub_terms``: the products summed first, then one subtraction."""
    s = vsplat(0.0)
    for p in range(p0, p1):
        s = s + vsplat(c[p - p0]) * vload(S, p * stride + b)
    return acc - s


def _sum_rows_into_pairwise(racc, sq, k, nlive):
    """A broken twin of ``cpu._sum_rows_into``: the block's rows summed in pairs first."""
    for m in range(k):
        i = 0
        while i + 2 <= nlive:
            racc[m] += sq[m * 32 + i] + sq[m * 32 + i + 1]
            i += 2
        if i < nlive:
            racc[m] += sq[m * 32 + i]


def _transpose4_x0_f_last(z, zs0, xi, xs0, sstride, slope, sx, dst, d0, dstride):
    """A broken twin of ``_vec.transpose4_x0``: ``f(z + sx·ξ)`` instead of ``f(z) + sx·ξ``."""
    for a in range(4):
        for b in range(4):
            v = np.float64(z[zs0 + a * sstride + b]) + sx * xi[xs0 + a * sstride + b]
            dst[d0 + b * dstride + a] = v if v >= 0.0 else slope * v


@pytest.mark.parametrize("d,k,nrows,zdt", [(12, 10, 683, np.float32), (12, 10, 83, np.float32),
                                           (12, 10, 2, np.float32), (6, 5, 40, np.float32),
                                           (9, 4, 17, np.float64)])
def test_matheron_rows_are_the_row_by_row_form_bit_for_bit(d, k, nrows, zdt):
    """``cpu._lg_rows_matheron`` (rows 32 at a time as vector values, padded to whole vectors:
    nrows % 4 = 3, 3, 2, 0, 1 here for the 4 × 4 transposition tiles; 683 is the 784-12-10
    sweep's task; ``x₀ = f(z) + √Δ_X ξ`` formed in the transposition from a leaky ReLU's z, at
    an offset into z and x) is the row-by-row perturb-and-correct draw bit for bit (X and the
    residual sum). Three twins are caught: products summed before they are subtracted (X),
    ``f`` applied after adding ξ (X), and a block's residual terms summed pairwise (the sum;
    checked at 683 rows, where its roundings show: at 17–83 rows they may all coincide)."""
    from numba import njit

    from blockbayes.kernels import _vec, cpu

    assert _vec.LANES == 32                 # the pairwise twin's stride
    rng = np.random.default_rng(d * 100 + k)
    lo, slope = 5, 0.1
    z = np.full(nrows * d + 9, np.nan, dtype=zdt)
    z[lo:lo + nrows * d] = rng.standard_normal(nrows * d)
    zr = z[lo:lo + nrows * d].astype(np.float64)
    xb = np.where(zr >= 0.0, zr, slope * zr)          # f(z), as cpu._lg_fz
    nb = rng.standard_normal(nrows * d)
    t = rng.standard_normal(nrows * k).astype(np.float32)
    W = rng.standard_normal((k, d + 1)) / math.sqrt(d)
    dx, dn = 0.7, 1.3
    L = np.linalg.cholesky(dx * W[:, :d] @ W[:, :d].T + dn * np.eye(k))
    k0, k1, g0 = np.uint64(3), np.uint64(4), 11
    ek = np.empty(nrows * k)
    cpu._row_normals(ek, np.empty(nrows * k), np.empty(nrows * k, np.uint64), nrows, k, k0, k1,
                     cpu._ES + np.uint64(g0 * k), k)
    want_x, want_s = _matheron_rows_python(xb, nb, ek, t, nrows, d, k, W, L, dx, dn)

    def run(f):
        x = np.full(nrows * d + 9, np.nan)
        s = f(z, slope, nb, t, 0, k, nrows, d, k, W, L, dx, dn, k0, k1, g0, 1, x, lo)
        assert np.isnan(x[:lo]).all() and np.isnan(x[lo + nrows * d:]).all()
        return x[lo:lo + nrows * d], s

    x, s = run(cpu._lg_rows_matheron)
    assert np.array_equal(x.view(np.uint64), want_x.view(np.uint64))
    assert np.float64(s).view(np.uint64) == np.float64(want_s).view(np.uint64)

    block = njit_twin(cpu._matheron_block, _vsub_terms=njit(_vsub_terms_sum_first))
    xt, _ = run(njit_twin(cpu._lg_rows_matheron, _matheron_block=block))
    assert not np.array_equal(xt.view(np.uint64), want_x.view(np.uint64))
    if nrows >= 4 and d >= 4:
        tx = njit_twin(cpu._transpose_x0, transpose4_x0=njit(_transpose4_x0_f_last))
        xt, _ = run(njit_twin(cpu._lg_rows_matheron, _transpose_x0=tx))
        assert not np.array_equal(xt.view(np.uint64), want_x.view(np.uint64))
    if nrows >= 600:
        block = njit_twin(cpu._matheron_block, _sum_rows_into=njit(_sum_rows_into_pairwise))
        xt, st = run(njit_twin(cpu._lg_rows_matheron, _matheron_block=block))
        assert np.array_equal(xt.view(np.uint64), want_x.view(np.uint64))
        assert np.float64(st).view(np.uint64) != np.float64(want_s).view(np.uint64)


def _transpose4_straight(src, s0, sstride, dst, d0, dstride):
    """A broken twin of ``_vec.transpose4``: the tile copied without transposing it."""
    for a in range(4):
        for b in range(4):
            dst[d0 + a * dstride + b] = src[s0 + a * sstride + b]


@pytest.mark.parametrize("dtype,otype", [(np.float32, np.float64), (np.float64, np.float64),
                                         (np.float64, np.float32)])
def test_tiled_transposition_is_the_element_copy(dtype, otype):
    """``cpu._transpose`` (4 × 4 tiles through ``_vec.transpose4``, the edges element by
    element) writes ``dst[d0 + b·dstride + a] = src[s0 + a·sstride + b]`` cast to ``dst``'s dtype
    and nothing else, for shapes with and without edges, a source offset and row stride wider
    than the rows (as the targets' rows), float32 widened exactly and float64 stored as float32
    rounded as NumPy's cast; the untransposed-tile twin is caught."""
    from numba import njit

    from blockbayes.kernels import cpu

    rng = np.random.default_rng(3)
    caught = False
    for na, nb, extra, s0, d0 in [(4, 4, 0, 0, 0), (83, 12, 0, 0, 0), (683, 10, 0, 20, 0),
                                  (12, 83, 5, 3, 7), (3, 2, 1, 1, 0), (9, 7, 0, 0, 64)]:
        sstride = nb + extra
        dstride = na + 9
        src = (rng.standard_normal(s0 + na * sstride + 8) * 1e3).astype(dtype)
        want = np.full(d0 + nb * dstride + 4, -7.5, dtype=otype)
        for a in range(na):
            for b in range(nb):
                want[d0 + b * dstride + a] = otype(src[s0 + a * sstride + b])
        got = np.full_like(want, -7.5)
        cpu._transpose(src, s0, sstride, na, nb, got, d0, dstride)
        assert np.array_equal(got.view(np.uint8), want.view(np.uint8)), (na, nb)
        twin = njit_twin(cpu._transpose, transpose4=njit(_transpose4_straight))
        tw = np.full_like(want, -7.5)
        twin(src, s0, sstride, na, nb, tw, d0, dstride)
        caught |= not np.array_equal(tw.view(np.uint8), want.view(np.uint8))
    assert caught

