"""Backend layer: device resolution, keys, batched triangular solves, special functions."""
import numpy as np
import pytest
import scipy.linalg as sl

from blockbayes._backend import (BackendUnavailableError, linalg, namespace, random as bbr, resolve_device,
                                 special, to_numpy)


@pytest.mark.parametrize("k,batch", [(1, 100), (2, 3000), (5, 64), (16, 70), (3, 2), (20, 100)])
@pytest.mark.parametrize("lower,trans", [(True, False), (True, True), (False, False), (False, True)])
def test_batched_triangular_solve_matches_scipy(k, batch, lower, trans):
    rng = np.random.default_rng(k * 1000 + batch)
    A = rng.standard_normal((batch, k, k))
    R = np.linalg.cholesky(A @ np.swapaxes(A, -1, -2) + k * np.eye(k))
    if not lower:
        R = np.swapaxes(R, -1, -2)
    B = rng.standard_normal((batch, k, 3))
    X = linalg.solve_triangular(R, B, lower=lower, trans=trans)
    ref = sl.solve_triangular(R, B, lower=lower, trans=int(trans))
    np.testing.assert_allclose(X, ref, rtol=1e-12, atol=1e-12)


def test_cholesky_failure_is_a_clear_error():
    with pytest.raises(linalg.NotPositiveDefiniteError):
        linalg.cholesky(np.array([[1.0, 2.0], [2.0, 1.0]]))


def test_keys_are_deterministic_and_split_distinct():
    a, b = bbr.key(3), bbr.key(3)
    assert np.array_equal(a, b)
    k1, k2 = bbr.split(a)
    assert not np.array_equal(k1, k2)
    assert np.array_equal(bbr.split(b)[0], k1)
    x = bbr.normal(k1, (4,), like=np.zeros(1, np.float32))
    assert x.dtype == np.float32 and np.array_equal(x, bbr.normal(k1, (4,), like=np.zeros(1, np.float32)))
    with pytest.raises(ValueError):
        bbr.key(-1)
    with pytest.raises(TypeError):
        bbr.key(1.5)


@pytest.mark.parametrize("dev", ["tpu", "cuda:x", "cpu:1", 3])
def test_bad_device_strings(dev):
    with pytest.raises(ValueError):
        resolve_device(dev)


def test_cuda_request_names_what_is_missing():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy installed")
    except Exception:
        pass
    with pytest.raises(BackendUnavailableError, match="CuPy"):
        resolve_device("cuda")


def test_special_functions_on_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    x = xps.asarray([-40.0, -5.0, 0.0, 5.0])
    out = special.log_ndtr(x)
    assert namespace(out) is xps
    from scipy.special import log_ndtr

    np.testing.assert_allclose(to_numpy(out), log_ndtr(to_numpy(x)), rtol=1e-14)


@pytest.mark.gpu
@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_batched_solve_triangular_matches_numpy(trans, dtype):
    """The CuPy path solves a batch in one call (or per matrix on an older CuPy): same result as
    the NumPy path to rounding, batch shape kept, inputs untouched, broadcast factors accepted."""
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no usable CUDA device ({exc})")
    from blockbayes._backend import linalg

    rng = np.random.default_rng(7)
    G = rng.standard_normal((2, 3, 6, 12))
    P = (G @ np.swapaxes(G, -1, -2) + 6 * np.eye(6)).astype(dtype)
    B = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    R = np.linalg.cholesky(P)
    ref = linalg.solve_triangular(R, B, lower=True, trans=trans)
    Rg, Bg = cupy.asarray(R), cupy.asarray(B)
    out = linalg.solve_triangular(Rg, Bg, lower=True, trans=trans)
    assert isinstance(out, cupy.ndarray) and out.shape == B.shape and out.dtype == B.dtype
    rtol = 1e-4 if dtype == "float32" else 1e-11
    np.testing.assert_allclose(out.get(), ref, rtol=rtol, atol=rtol)
    np.testing.assert_array_equal(Bg.get(), B)
    R1 = cupy.broadcast_to(Rg[0, 0], (4, 6, 6))
    out1 = linalg.solve_triangular(R1, cupy.asarray(B[0, :1].repeat(4, axis=0)), lower=True, trans=trans)
    ref1 = linalg.solve_triangular(np.broadcast_to(R[0, 0], (4, 6, 6)), B[0, :1].repeat(4, axis=0),
                                   lower=True, trans=trans)
    np.testing.assert_allclose(out1.get(), ref1, rtol=rtol, atol=rtol)


# --- the backend x device x dtype matrix (fixture ``backend`` in tests/conftest.py) -------------

def _spd_factor(rng, shape):
    A = rng.standard_normal(shape)
    k = shape[-1]
    return np.linalg.cholesky(A @ np.swapaxes(A, -1, -2) + k * np.eye(k))


@pytest.mark.parametrize("shape", [(4, 4), (3, 5, 5), (70, 3, 3)])
@pytest.mark.parametrize("lower,trans", [(True, False), (True, True), (False, False), (False, True)])
def test_solve_triangular_follows_the_inputs(backend, shape, lower, trans):
    """Every backend (one CuPy/SciPy call or the Array-API substitution): SciPy's answer to the
    dtype's rounding, in B's namespace, device and dtype, inputs untouched."""
    rng = np.random.default_rng(sum(shape))
    R = _spd_factor(rng, shape)
    if not lower:
        R = np.swapaxes(R, -1, -2)
    B = rng.standard_normal(shape[:-1] + (3,))
    Rb, Bb = backend.asarray(R), backend.asarray(B)
    X = linalg.solve_triangular(Rb, Bb, lower=lower, trans=trans)
    assert namespace(X) is namespace(Bb) and X.dtype == backend.dtype and X.shape == Bb.shape
    assert X.device == Bb.device
    ref = sl.solve_triangular(backend.to_numpy(Rb).astype(np.float64), backend.to_numpy(Bb).astype(np.float64),
                              lower=lower, trans=int(trans))
    np.testing.assert_allclose(backend.to_numpy(X), ref, rtol=100 * backend.rtol, atol=100 * backend.rtol)
    np.testing.assert_array_equal(backend.to_numpy(Bb), B.astype(backend.dtype_name))


def test_substitution_is_the_textbook_solve(backend):
    """The Array-API substitution itself (used for batches on every backend), with a factor
    broadcast against a batch of right-hand sides; a broken twin (diagonal dropped) is caught."""
    rng = np.random.default_rng(5)
    R = _spd_factor(rng, (6, 6))
    B = rng.standard_normal((4, 6, 2))
    X = linalg.substitution(backend.asarray(R), backend.asarray(B), lower=True, trans=True)
    ref = np.stack([sl.solve_triangular(R, b, lower=True, trans=1) for b in B])
    np.testing.assert_allclose(backend.to_numpy(X), ref, rtol=100 * backend.rtol, atol=100 * backend.rtol)
    broken = R - np.diag(np.diag(R)) + np.eye(6)
    Xb = linalg.substitution(backend.asarray(broken), backend.asarray(B), lower=True, trans=True)
    assert np.abs(backend.to_numpy(Xb) - ref).max() > 1e-2


def test_cholesky_and_its_deferred_check(backend):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((3, 4, 4))
    P = A @ np.swapaxes(A, -1, -2) + 4 * np.eye(4)
    R = linalg.cholesky(backend.asarray(P))
    Rn = backend.to_numpy(R)
    tol = 100 * backend.rtol
    np.testing.assert_allclose(Rn @ np.swapaxes(Rn, -1, -2), P, rtol=tol, atol=tol)
    bad = backend.asarray(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(linalg.NotPositiveDefiniteError):
        linalg.cholesky(bad)
    with linalg.deferred_checks():
        with linalg.deferred_checks():
            pass
        if backend.name == "cupy":      # cuSOLVER: NaNs, no sync, no error while deferred
            assert not np.isfinite(backend.to_numpy(linalg.cholesky(bad))).all()
            with pytest.raises(linalg.NotPositiveDefiniteError):
                linalg.cholesky(bad, check=True)
        else:                           # LAPACK raises at the factorisation: nothing deferred
            with pytest.raises(linalg.NotPositiveDefiniteError):
                linalg.cholesky(bad)
    with pytest.raises(linalg.NotPositiveDefiniteError):   # restored after the block
        linalg.cholesky(bad)


def test_move_like_and_dtype_name(backend):
    from blockbayes._backend import dtype_name, move_like

    like = backend.asarray(np.zeros((2, 3)))
    assert dtype_name(like) == backend.dtype_name == dtype_name(backend.dtype)
    assert move_like(like, like) is like
    host = np.arange(6.0).reshape(2, 3)
    out = move_like(host, like)
    assert namespace(out) is namespace(like) and out.device == like.device and dtype_name(out) == "float64"
    np.testing.assert_array_equal(backend.to_numpy(out), host)
    out32 = move_like(host, like, dtype=like.dtype)
    assert out32.dtype == like.dtype and out32.device == like.device
    assert dtype_name(move_like([1.0, 2.0], like)) in ("float32", "float64")
    back = move_like(out, np.zeros(1))
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)


def test_ranks_match_scipy(backend):
    from scipy.stats import rankdata

    from blockbayes._backend.ranks import average_ranks, tie_bounds

    x = np.array([[3.0, 1.0], [1.0, 1.0], [2.0, 5.0], [1.0, 0.0], [3.0, 1.0]])
    r = average_ranks(backend.xp, backend.asarray(x))
    np.testing.assert_array_equal(backend.to_numpy(r), rankdata(x, axis=0))
    s = backend.asarray(np.sort(x, axis=0))
    first, last = tie_bounds(backend.xp, s)
    np.testing.assert_array_equal(backend.to_numpy(first)[:, 0], [0, 0, 2, 3, 3])   # sorted: 1 1 2 3 3
    np.testing.assert_array_equal(backend.to_numpy(last)[:, 0], [1, 1, 2, 4, 4])


@pytest.mark.parametrize("fname", ["ndtr", "log_ndtr", "erfcx", "log_expit"])
def test_special_functions_follow_the_inputs(backend, fname):
    import scipy.special as ss

    x = np.array([-30.0, -5.0, -0.5, 0.0, 0.5, 5.0, 30.0])
    xb = backend.asarray(x)
    out = getattr(special, fname)(xb)
    assert namespace(out) is namespace(xb) and out.dtype == xb.dtype and out.device == xb.device
    ref = getattr(ss, fname)(backend.to_numpy(xb).astype(np.float64)).astype(backend.dtype_name)
    np.testing.assert_allclose(backend.to_numpy(out), ref, rtol=100 * backend.rtol,
                               atol=np.finfo(backend.dtype_name).tiny)   # float32 underflow at ±30
