"""Block-Gibbs core: shapes, dtypes, backends, errors, reproducibility, and exactness on the linear model.

Statistical tests state their false-failure bound (DKW/Hoeffding, exact for i.i.d. draws; or a
z-test with Bonferroni, asymptotic) and each has a broken twin that the same test rejects.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import gibbs
from blockbayes import testing as bt
from blockbayes._backend import BackendUnavailableError

DELTA = 1e-6  # false-failure probability per statistical test function


def _data(n=40, d=3, seed=0, dtype=np.float64, d_out=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    W = rng.standard_normal((d, d_out))
    y = (np.tanh(X @ W) + 0.1 * rng.standard_normal((n, d_out))).astype(dtype)
    return X, (y[:, 0] if d_out == 1 else y)


NETS = [
    bb.MLP([3, 1], "identity", delta=0.05),
    bb.MLP([3, 4, 1], "relu", delta=0.05),
    bb.MLP([3, 5, 2, 1], "relu", delta=0.05),
    bb.MLP([3, 4, 2, 1], "leaky_relu", slope=0.1, delta={"Z": 0.05, "X": 0.02, "y": 0.1}),
    bb.MLP([3, 4, 6, 1], "identity", delta=0.05),
]


@pytest.mark.parametrize("net", NETS, ids=lambda n: f"{n.activation}-{'x'.join(map(str, n.widths))}")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_run_shapes_dtypes_and_no_mutation(net, dtype):
    X, y = _data(dtype=dtype)
    X0, y0 = X.copy(), y.copy()
    res = gibbs.run(net, X, y, num_samples=7, num_warmup=3, num_chains=2, thin=2, seed=0, progress=False, init="prior",
                    learn_noise=False)
    assert np.array_equal(X, X0) and np.array_equal(y, y0)
    assert len(res.weights) == net.num_layers
    for W, (do, di) in zip(res.weights, net.weight_shapes()):
        assert W.shape == (2, 7, do, di) and W.dtype == dtype
        assert np.all(np.isfinite(W))
    assert res.delta_y.shape == (2, 7) and res.log_joint.shape == (2, 7)
    mean, var = res.predict(X[:5])
    assert mean.shape == (5, 1) and var.shape == (5, 1) and mean.dtype == dtype
    assert np.all(var > 0)
    lpd = res.log_predictive_density(X, y)
    assert lpd.shape == () and np.isfinite(lpd)
    st = res.final_state
    for Z, H, d in zip(st.pre, st.post, net.widths[1:-1]):
        assert Z.shape == (2, X.shape[0], d) and H.shape == Z.shape and Z.dtype == dtype


def test_array_api_strict_backend_runs_the_same_code():
    xps = pytest.importorskip("array_api_strict")
    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu", delta=0.05)
    res = gibbs.run(net, xps.asarray(X), xps.asarray(y), num_samples=4, num_chains=2, seed=3, progress=False,
                    init="prior", num_warmup=0, learn_noise=False)
    assert bb._backend.namespace(res.weights[0]) is xps
    mean, var = res.predict(xps.asarray(X[:3]))
    assert bb._backend.namespace(mean) is xps and mean.shape == (3, 1)
    lpd = res.log_predictive_density(xps.asarray(X), xps.asarray(y))
    assert math.isfinite(float(lpd))


def test_same_seed_same_samples_and_different_seed_differs():
    X, y = _data()
    net = bb.MLP([3, 4, 2, 1], "relu", delta=0.05)
    kw = dict(num_samples=5, num_warmup=0, num_chains=2, progress=False, learn_noise=True, learn_prior=True,
              init="prior")
    a = gibbs.run(net, X, y, seed=11, **kw)
    b = gibbs.run(net, X, y, seed=11, **kw)
    c = gibbs.run(net, X, y, seed=12, **kw)
    for Wa, Wb, Wc in zip(a.weights, b.weights, c.weights):
        assert np.array_equal(Wa, Wb)
        assert not np.array_equal(Wa, Wc)
    assert np.array_equal(a.delta_y, b.delta_y)


def test_chains_are_independent_streams():
    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu", delta=0.05)
    res = gibbs.run(net, X, y, num_samples=3, num_chains=3, seed=0, progress=False, init="prior",
                    num_warmup=0, learn_noise=False)
    W = res.weights[0]
    assert not np.array_equal(W[0], W[1]) and not np.array_equal(W[1], W[2])


def test_step_is_pure():
    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu", delta=0.05)
    k = bb._backend.random.key(0)
    st = gibbs.init(k, net, X, y[:, None], num_chains=2)
    before = [a.copy() for a in (*st.weights, *st.pre, *st.post)]
    new1, _ = gibbs.step(bb._backend.random.key(1), st, net, X, y[:, None])
    new2, _ = gibbs.step(bb._backend.random.key(1), st, net, X, y[:, None])
    for a, b in zip(before, (*st.weights, *st.pre, *st.post)):
        assert np.array_equal(a, b)
    for a, b in zip(new1.weights, new2.weights):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("init", ["zero", "prior"])
def test_init_modes(init):
    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu", delta=0.05)
    st = gibbs.init(bb._backend.random.key(0), net, X, y[:, None], num_chains=2, init=init)
    if init == "zero":
        assert all(np.all(W == 0) for W in st.weights) and np.all(st.pre[0] == 0)
    else:
        assert not np.all(st.weights[0] == 0)


def test_init_from_given_weights_and_state_roundtrip(tmp_path):
    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu", delta=0.05)
    W = [np.ones((4, 4)), np.ones((1, 5))]
    st = gibbs.init(bb._backend.random.key(0), net, X, y[:, None], num_chains=2, init=W, noisy_aux=False)
    assert np.array_equal(st.weights[0][1], W[0])
    assert np.allclose(st.pre[0][0], X @ W[0][:, :3].T + 1.0)
    res = gibbs.run(net, X, y, num_samples=3, seed=0, progress=False, num_chains=2, init="prior",
                    num_warmup=0, learn_noise=False)
    path = tmp_path / "r.npz"
    res.save(path)
    back = bb.posterior.load(path)
    assert back.net == net
    for a, b in zip(res.weights, back.weights):
        assert np.array_equal(a, b)
    assert np.array_equal(back.log_joint, res.log_joint)
    # continue from the saved final state
    cont = gibbs.run(net, X, y, num_samples=2, seed=1, progress=False, num_chains=2, init=back.final_state,
                     num_warmup=0, learn_noise=False)
    assert cont.weights[0].shape == (2, 2, 4, 4)


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("case, exc, match", [
    ("nan_X", ValueError, "NaN"),
    ("inf_y", ValueError, "NaN or infinite"),
    ("int_X", TypeError, "float"),
    ("wrong_cols", ValueError, "d_in"),
    ("rows", ValueError, "rows"),
    ("y_rank", ValueError, "rank"),
    ("empty", ValueError, "n = 0"),
    ("X_1d", ValueError, "shape"),
])
def test_bad_data_raises(case, exc, match):
    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu")
    if case == "nan_X":
        X = X.copy(); X[2, 1] = np.nan
    elif case == "inf_y":
        y = y.copy(); y[0] = np.inf
    elif case == "int_X":
        X = X.astype(np.int64)
    elif case == "wrong_cols":
        X = X[:, :2]
    elif case == "rows":
        y = y[:-1]
    elif case == "y_rank":
        y = y[:, None, None, None]
    elif case == "empty":
        X, y = X[:0], y[:0]
    elif case == "X_1d":
        X = X[:, 0]
    with pytest.raises(exc, match=match):
        gibbs.run(net, X, y, num_samples=2, progress=False, init="prior", num_warmup=0, num_chains=1, learn_noise=False)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(widths=[3, 0, 1]), ValueError),
    (dict(widths=[3]), ValueError),
    (dict(widths=[3, 2.5, 1]), TypeError),
    (dict(widths=[3, 4, 1], delta=0.0), ValueError),
    (dict(widths=[3, 4, 1], delta=-1e-3), ValueError),
    (dict(widths=[3, 4, 1], delta={"Z": 1e-3, "q": 1.0}), ValueError),
    (dict(widths=[3, 4, 1], prior_prec=0.0), ValueError),
    (dict(widths=[3, 4, 1], prior_prec=[1.0]), ValueError),
    (dict(widths=[3, 4, 1], activation="tanh"), ValueError),
    (dict(widths=[3, 4, 1], activation="leaky_relu", slope=1.5), ValueError),
    (dict(widths=[3, 4, 1], prior_prec=float("nan")), ValueError),
])
def test_bad_model_spec_raises(kwargs, exc):
    with pytest.raises(exc):
        bb.MLP(**kwargs)


def test_bad_run_arguments():
    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu")
    with pytest.raises(ValueError, match="num_samples"):
        gibbs.run(net, X, y, num_samples=0, progress=False, init="prior", num_warmup=0, num_chains=1, learn_noise=False)
    with pytest.raises(ValueError, match="thin"):
        gibbs.run(net, X, y, num_samples=2, thin=0, progress=False, init="prior",
                  num_warmup=0, num_chains=1, learn_noise=False)
    with pytest.raises(ValueError, match="device"):
        gibbs.run(net, X, y, num_samples=2, device="tpu", progress=False, init="prior",
                  num_warmup=0, num_chains=1, learn_noise=False)
    with pytest.raises(ValueError, match="init"):
        gibbs.run(net, X, y, num_samples=2, init="ones", progress=False, num_warmup=0, num_chains=1, learn_noise=False)
    with pytest.raises(ValueError, match="shape"):
        gibbs.run(net, X, y, num_samples=2, init=[np.zeros((4, 3)), np.zeros((1, 5))], progress=False,
                  num_warmup=0, num_chains=1, learn_noise=False)
    with pytest.raises(TypeError, match="seed"):
        gibbs.run(net, X, y, num_samples=2, seed="abc", progress=False, init="prior",
                  num_warmup=0, num_chains=1, learn_noise=False)
    with pytest.raises(TypeError, match="MLP"):
        gibbs.run("net", X, y, num_samples=2, progress=False, init="prior",
                  num_warmup=0, num_chains=1, learn_noise=False)


def test_mixed_backends_raise():
    xps = pytest.importorskip("array_api_strict")
    X, y = _data()
    with pytest.raises(ValueError, match="different array libraries"):
        gibbs.run(bb.MLP([3, 4, 1]), X, xps.asarray(y), num_samples=2, progress=False, init="prior",
                  num_warmup=0, num_chains=1, learn_noise=False)


def test_cuda_without_cupy_is_a_clear_error():
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy present")
    except Exception:
        pass
    X, y = _data()
    with pytest.raises(BackendUnavailableError, match="CuPy"):
        gibbs.run(bb.MLP([3, 4, 1]), X, y, num_samples=2, device="cuda", progress=False, init="prior",
                  num_warmup=0, num_chains=1, learn_noise=False)


def test_nonfinite_state_names_block_and_sweep():
    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu", delta=0.05)
    st = gibbs.init(bb._backend.random.key(0), net, X, y[:, None], num_chains=1)
    bad = st._replace(post=(np.full_like(st.post[0], np.nan),))
    with pytest.raises(gibbs.NonFiniteStateError, match=r"sweep 1 .*weights of layer"):
        gibbs.run(net, X, y, num_samples=2, init=bad, progress=False, num_warmup=0, num_chains=1, learn_noise=False)


class _Flag:
    """Host stand-in for a device boolean: counts the reads that would sync a GPU."""
    reads = 0

    def __init__(self, v):
        self.v = bool(v)

    def __and__(self, other):
        return _Flag(self.v and other.v)

    def __bool__(self):
        _Flag.reads += 1
        return self.v


class _CountingXP:
    isfinite = staticmethod(np.isfinite)

    @staticmethod
    def all(a):
        return _Flag(np.all(a))


def test_finite_check_reads_the_device_once_and_names_every_bad_block():
    X, y = _data()
    net = bb.MLP([3, 4, 1], "relu", delta=0.05)
    st = gibbs.init(bb._backend.random.key(0), net, X, y[:, None], num_chains=2)
    _Flag.reads = 0
    assert gibbs.first_nonfinite(_CountingXP, st) == []
    assert _Flag.reads == 1
    bad = st._replace(pre=(np.full_like(st.pre[0], np.inf),), delta_y=np.full_like(st.delta_y, np.nan))
    names = gibbs.first_nonfinite(np, bad)
    assert names == ["pre-activations Z of hidden layer 2", "delta_y"]


def test_float32_tiny_delta_stays_finite():
    X, y = _data(dtype=np.float32, n=200)
    net = bb.MLP([3, 8, 1], "relu", delta=1e-5)
    res = gibbs.run(net, X, y, num_samples=20, seed=0, progress=False, init="prior",
                    num_warmup=0, num_chains=1, learn_noise=False)
    assert all(np.all(np.isfinite(W)) for W in res.weights)


# ----------------------------------------------------------------------------- exactness: linear model

def _linear_posterior(X, y, lam, delta):
    Xa = np.c_[X, np.ones(len(X))]
    P = np.diag(lam) + Xa.T @ Xa / delta
    m = np.linalg.solve(P, Xa.T @ y / delta)
    return m, P


def _linear_checks(sample_rows_impl=None, monkeypatch=None, N=20000, seed=5):
    X, y = _data(n=30, d=3, d_out=2, seed=seed)
    net = bb.MLP([3, 2], "identity", prior_prec=[(2.0, 0.5)], delta=0.2)
    if sample_rows_impl is not None:
        monkeypatch.setattr(gibbs.kernel, "sample_rows", sample_rows_impl)
    res = gibbs.run(net, X, y, num_samples=N // 4, num_chains=4, seed=seed, progress=False, init="prior",
                    num_warmup=0, learn_noise=False)
    W = res.weights[0].reshape(-1, 2, 4)
    lam = np.array([2.0, 2.0, 2.0, 0.5])
    checks = []
    for i in range(2):
        m, P = _linear_posterior(X, y[:, i], lam, 0.2)
        checks += bt.gaussian_checks(f"row {i}", W[:, i, :], m, P, DELTA / 2)
    return checks


def test_linear_model_matches_closed_form_posterior():
    """One-layer model: every sweep is an exact independent draw from N(m_i, P^{-1}).

    DKW on 4 whitened coordinates, the chi-square of the squared norm and one projection, for
    both rows: false failure ≤ 1e-6 (exact bound, Bonferroni). Detectable KS distance ≈ 0.04.
    """
    bt.assert_checks(_linear_checks())


def test_linear_model_broken_twin_is_caught(monkeypatch):
    """Broken twin: the row conditional built with a 30 % too large noise variance Δ."""
    orig = gibbs.sample_rows

    def broken(key, H, T, prior_diag, delta, **kw):
        return orig(key, H, T, prior_diag, delta * 1.3, **kw)

    bt.assert_checks(_linear_checks(broken, monkeypatch), expect_pass=False)


def test_linear_model_stale_mean_twin_is_caught(monkeypatch):
    """Broken twin: the prior term dropped from the precision (a wrong conditional mean/cov)."""
    orig = gibbs.sample_rows

    def broken(key, H, T, prior_diag, delta, **kw):
        return orig(key, H, T, prior_diag * 1e-12, delta, **kw)

    bt.assert_checks(_linear_checks(broken, monkeypatch), expect_pass=False)


def test_row_block_fixed_noise_identity():
    """Deterministic: sample_rows returns exactly R^{-T}(R^{-1} B + sqrt(Δ) E) for the drawn E
    (the counter-based normals E[c, i, m] = Φ⁻¹(u((c(d+1) + i)k + m)) of kernels.gaussian_rows)."""
    X, y = _data(n=25, d=3, d_out=2)
    C = 2
    T = np.stack([y, 2 * y])
    prior = np.tile([1.0, 2.0, 3.0, 0.5], (C, 1))
    delta = np.array([0.1, 0.3])
    key = bb._backend.random.key(9)
    W = gibbs.sample_rows(key, X, T, prior, delta)
    import scipy.special

    E = scipy.special.ndtri(bb.kernels.uniforms(key, (C, 4, 2), like=X))
    for c in range(C):
        m, P = _linear_posterior(X, T[c], prior[c], delta[c])
        R = np.linalg.cholesky(delta[c] * np.diag(prior[c]) + np.c_[X, np.ones(25)].T @ np.c_[X, np.ones(25)])
        expected = m + np.sqrt(delta[c]) * np.linalg.solve(R.T, E[c])
        np.testing.assert_allclose(W[c], expected.T, rtol=1e-10, atol=1e-12)


def test_post_activation_cholesky_and_matheron_agree_in_law():
    """Both X-conditional paths against the exact Gaussian (A.2), whitened; false failure ≤ 1e-6."""
    rng = np.random.default_rng(3)
    d, k, N = 3, 2, 20000
    F = np.abs(rng.standard_normal((1, 1, d)))
    Wn = rng.standard_normal((1, k, d + 1))
    t = rng.standard_normal((1, 1, k))
    dx, dn = 0.3, np.array([0.2])
    Q = np.eye(d) / dx + Wn[0, :, :d].T @ Wn[0, :, :d] / dn[0]
    r = F[0, 0] / dx + Wn[0, :, :d].T @ (t[0, 0] - Wn[0, :, d]) / dn[0]
    mean = np.linalg.solve(Q, r)
    checks = []
    for method in ("cholesky", "matheron"):
        Fb = np.broadcast_to(F, (1, N, d)).copy()
        tb = np.broadcast_to(t, (1, N, k)).copy()
        Xs = gibbs.sample_post(bb._backend.random.key(1), Fb, Wn, tb, dx, dn, method=method)[0]
        checks += bt.gaussian_checks(method, Xs, mean, Q, DELTA / 2)
    bt.assert_checks(checks)


def test_learned_noise_recovers_noise_level():
    """Linear-Gaussian data with known noise: the Δ_y samples concentrate near it.

    With n = 2000 the posterior sd of Δ_y is ≈ Δ√(2/n) ≈ 3 %; we assert the posterior mean lies
    within 15 % (≈ 5 sd) — a loose, consistency-level check.
    """
    rng = np.random.default_rng(0)
    n = 2000
    X = rng.standard_normal((n, 2))
    y = X @ np.array([1.0, -1.0]) + 0.5 + math.sqrt(0.04) * rng.standard_normal(n)
    net = bb.MLP([2, 1], "identity", prior_prec=1.0, delta=1.0)
    res = gibbs.run(net, X, y, num_samples=300, num_warmup=50, seed=1, progress=False, learn_noise=True, init="prior",
                    num_chains=1)
    assert abs(float(np.mean(res.delta_y)) / 0.04 - 1) < 0.15


def test_step_uses_the_states_prior_for_the_first_layer():
    """Regression: with learn_prior=False the cached first-layer Cholesky must not override a
    state whose λ differs from the net's (e.g. after a warm-up with learn_prior=True)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 2))
    y = rng.standard_normal((4, 1))
    net = bb.MLP([2, 3, 1], "relu", prior_prec=1.0, delta=0.1)
    st = gibbs.init(bb._backend.random.key(0), net, X, y, num_chains=2000)
    st = st._replace(lam_w=st.lam_w * 1e4, lam_b=st.lam_b * 1e4)
    new, _ = gibbs.step(bb._backend.random.key(1), st, net, X, y)
    # prior sd 0.01 dominates the conditional (4 data points, Δ = 0.1): sd must be ≈ 0.01, not ≈ 1
    assert float(np.std(new.weights[0])) < 0.05
    assert float(np.std(new.weights[1])) < 0.05


@pytest.mark.gpu
@pytest.mark.parametrize("likelihood", ["gaussian", "multinomial_probit"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_run_on_cuda_keeps_everything_on_the_gpu(likelihood, dtype):
    """``device="cuda"`` end to end: NumPy inputs moved once, samples, trace and final state on
    the GPU in the requested dtype, finite, and back on the host by ``to_numpy`` (the exactness of
    the GPU sweep is validation/'s job: ``pytest --device cuda validation/``)."""
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"no usable CUDA device ({exc})")
    X, y = _data(n=60)
    if likelihood == "gaussian":
        net = bb.MLP([3, 5, 1], "relu", delta=0.05)
    else:
        net = bb.MLP([3, 5, 3], "relu", delta=0.05, likelihood="multinomial_probit")
        y = np.digitize(y, [-0.3, 0.3])
    res = gibbs.run(net, X, y, num_samples=6, num_warmup=2, num_chains=3, seed=0, device="cuda",
                    dtype=dtype, progress=False, init="prior", learn_noise=False)
    for W in res.weights + (res.delta_y, res.log_joint) + res.final_state.pre + res.final_state.post:
        assert isinstance(W, cupy.ndarray) and W.dtype == np.dtype(dtype)
        assert bool(cupy.all(cupy.isfinite(W)))
    assert res.weights[1].shape == (3, 6) + net.weight_shapes()[1]
    h = res.to_numpy()
    assert isinstance(h.weights[0], np.ndarray) and h.weights[0].shape == res.weights[0].shape
    if likelihood != "gaussian":
        U = res.final_state.latent.get()
        assert np.all(np.argmax(U, axis=-1) == y[None, :])
