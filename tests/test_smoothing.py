"""The smoothing continuation of the batched MAP path (issue 16, design note 50): the softplus
activation, the smoothed objective and its hand-written gradient, the stages of the continuation,
the predictive-noise options, the runner methods, and broken twins that the checks catch."""
from __future__ import annotations

import math

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import point_fit
from blockbayes.laplace import batched_objective, evidence_noise, lbfgs_batched, map_ensemble, map_fit
from blockbayes.laplace import map as map_mod
from blockbayes.nn import smoothed_activation

from _helpers import small_regression as _data


pytestmark = pytest.mark.usefixtures("one_blas_thread")   # BLAS on one thread (conftest.py)

BETAS = (8.0, 32.0, 128.0, 512.0)


def _stack(ws):
    return tuple(np.stack([w[l] for w in ws]) for l in range(len(ws[0])))


def _deep(activation="relu", seed=0, n=30):
    """A two-hidden-layer net ``[3, 6, 5, 1]`` (every hidden layer smoothed) and sine data."""
    rng = np.random.default_rng(seed)
    kw = dict(slope=0.2) if activation == "leaky_relu" else {}
    net = bb.MLP([3, 6, 5, 1], activation, prior_prec="fan_in", delta=0.3, **kw)
    X = rng.normal(size=(n, 3))
    y = np.sin(X[:, :1]) + 0.1 * rng.normal(size=(n, 1))
    return net, X, y


def _weights(net, X, M=3, seed=0):
    return _stack([bb.laplace.init_weights(net, seed=seed + s, like=X) for s in range(M)])


# ------------------------------------------------------------------------- the activation

@pytest.mark.parametrize("dtype, rtol", [(np.float64, 4e-15), (np.float32, 1e-6)])
@pytest.mark.parametrize("beta", [0.5, 8.0, 512.0])
def test_smoothed_activation_against_the_direct_formula(dtype, rtol, beta):
    """``s_β(a) = log(1 + e^{βa})/β`` and ``σ(βa)`` against the naive formulas (evaluated in float64 where
    ``|βa| ≤ 30``: no overflow, each a few float64 roundings, ≤ 4e-15 relative with margin; float32
    results carry ≤ ~8 float32 ulps = 5e-7, bound 1e-6); beyond, the asymptotes."""
    z = np.linspace(-30, 30, 2001)
    a = (z / beta).astype(dtype)
    s, fp = smoothed_activation(np, a, "relu", 0.0, beta)
    assert s.dtype == dtype and fp.dtype == dtype
    a64 = a.astype(np.float64)
    ref_s = np.log1p(np.exp(beta * a64)) / beta
    ref_fp = 1.0 / (1.0 + np.exp(-beta * a64))
    np.testing.assert_allclose(s, ref_s, rtol=rtol, atol=0)
    np.testing.assert_allclose(fp, ref_fp, rtol=rtol, atol=0)
    # far out: no overflow, the ReLU and its derivative (e^{-β|a|} underflows to 0)
    big = np.array([-1e30, -1e4 / beta, 1e4 / beta, 1e30], dtype=dtype)       # β|a| ≥ 1e4
    s, fp = smoothed_activation(np, big, "relu", 0.0, beta)
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(fp))
    np.testing.assert_array_equal(s, np.maximum(big, 0))
    np.testing.assert_array_equal(fp, (big > 0).astype(dtype))


def test_smoothed_leaky_relu_and_the_limit():
    """leaky: ``slope·a + (1 − slope)s_β(a)``, derivative ``slope + (1 − slope)σ(βa)``; both activations lie
    within ``(1 − slope)·log 2/β`` above the kinked one (exact inequality, plus float rounding)."""
    a = np.linspace(-3, 3, 601)
    for beta in (1.0, 8.0, 512.0):
        s, fp = smoothed_activation(np, a, "relu", 0.0, beta)
        ls, lfp = smoothed_activation(np, a, "leaky_relu", 0.2, beta)
        np.testing.assert_allclose(ls, 0.2 * a + 0.8 * s, rtol=1e-15, atol=1e-15)
        np.testing.assert_allclose(lfp, 0.2 + 0.8 * fp, rtol=1e-15, atol=1e-15)
        gap = s - np.maximum(a, 0)
        assert gap.min() >= 0 and gap.max() <= math.log(2) / beta * (1 + 1e-12)
        lgap = ls - np.where(a >= 0, a, 0.2 * a)
        assert lgap.min() >= -1e-15 and lgap.max() <= 0.8 * math.log(2) / beta * (1 + 1e-12) + 1e-15
    with pytest.raises(ValueError, match="smoothed"):
        smoothed_activation(np, a, "identity", 1.0, 8.0)


# ------------------------------------------------------------------------- the objective

def _direct_objective(net, W, X, Y, beta, *, delta_y=None, noise_prior=None):
    """An independent forward of the smoothed objective in plain NumPy (one member): ``np.logaddexp``
    for the softplus, the profiled or fixed Gaussian noise written out."""
    H = X
    L = len(W)
    for l, Wl in enumerate(W):
        A = H @ Wl[:, :-1].T + Wl[:, -1]
        if l < L - 1:
            s = np.logaddexp(0.0, beta * A) / beta
            H = s if net.activation == "relu" else net.slope * A + (1 - net.slope) * s
        else:
            H = A
    r = H - Y
    n, C = Y.shape
    prior = 0.0
    for l, Wl in enumerate(W):
        lam = np.r_[[net.lam_w[l]] * (Wl.shape[1] - 1), net.lam_b[l]]
        prior += 0.5 * float(np.sum(lam * Wl ** 2))
    sse = float(np.sum(r * r))
    if noise_prior is None:
        return sse / (2 * delta_y) + 0.5 * n * C * math.log(2 * math.pi * delta_y) + prior
    a, b = noise_prior
    k = 0.5 * n * C + a
    D = 0.5 * sse + b
    # min over s of SSE/(2e^s) + nC/2 (s + log 2π) + a s + b e^{-s}, at e^s = D/k
    return k * math.log(D) + k - k * math.log(k) + 0.5 * n * C * math.log(2 * math.pi) + prior


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("noise_prior", [None, (1.0, 1e-2)])
def test_smoothed_objective_against_a_direct_forward(activation, noise_prior):
    """``batched_objective(smoothing=β)`` per member against :func:`_direct_objective` (relative 1e-12: the two
    sum the same terms in different orders, ~1e-15 each)."""
    net, X, y = _deep(activation)
    W = _weights(net, X)
    for beta in (2.0, 40.0):
        E, _, _ = batched_objective(net, W, X, y, likelihood="gaussian", lam_w=net.lam_w, lam_b=net.lam_b,
                                    delta_y=0.3, noise_prior=noise_prior, smoothing=beta)
        for m in range(3):
            ref = _direct_objective(net, [w[m] for w in W], X, y, beta, delta_y=0.3, noise_prior=noise_prior)
            assert float(E[m]) == pytest.approx(ref, rel=1e-12)


def _fd_check(net, W, X, y, beta, noise_prior, h=1e-6):
    """``(finite difference, analytic)`` directional derivatives of ``E_β`` along a random direction, per member."""
    kw = dict(likelihood="gaussian", lam_w=net.lam_w, lam_b=net.lam_b, delta_y=0.3, noise_prior=noise_prior,
              smoothing=beta)
    _, g, _ = batched_objective(net, W, X, y, **kw)
    v = [np.random.default_rng(3).normal(size=x.shape) for x in W]
    Ep = batched_objective(net, tuple(x + h * u for x, u in zip(W, v)), X, y, **kw)[0]
    Em = batched_objective(net, tuple(x - h * u for x, u in zip(W, v)), X, y, **kw)[0]
    M = W[0].shape[0]
    return (Ep - Em) / (2 * h), sum(np.sum((gl * u).reshape(M, -1), axis=1) for gl, u in zip(g, v))


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("noise_prior", [None, (1.0, 1e-2)])
def test_smoothed_gradient_against_finite_differences(activation, noise_prior):
    """The hand-written gradient of ``E_β`` (both hidden layers smoothed) against central differences,
    ``h = 1e-6``: truncation ``h²|E'''|/6`` and rounding ``ε|E|/h`` are both ≲ 1e-9 relative here (β ≤ 8 keeps
    ``E'''`` moderate); bound 1e-6 relative."""
    net, X, y = _deep(activation)
    W = _weights(net, X)
    for beta in (1.0, 8.0):
        fd, an = _fd_check(net, W, X, y, beta, noise_prior)
        np.testing.assert_allclose(fd, an, rtol=1e-6)


def _sigmoid_of_a(xp, A, activation, slope, beta):
    """Broken twin: the softplus derivative written as σ(a) instead of σ(βa)."""
    s, _ = smoothed_activation(xp, A, activation, slope, beta)
    sig = 1.0 / (1.0 + xp.exp(-A))
    return s, (sig if activation == "relu" else slope + (1 - slope) * sig)


def test_twin_sigmoid_of_a_fails_the_gradient_check(monkeypatch):
    """The finite-difference check catches a derivative σ(a) in place of σ(βa) (the value stays right)."""
    net, X, y = _deep("relu")
    W = _weights(net, X)
    monkeypatch.setattr(map_mod, "smoothed_activation", _sigmoid_of_a)
    fd, an = _fd_check(net, W, X, y, 8.0, (1.0, 1e-2))
    rel = np.abs(fd - an) / np.abs(fd)
    assert rel.min() > 1e-3, rel


def test_huge_beta_is_the_relu_objective():
    """At ``β = 1e12`` the smoothed objective is the ReLU objective: the hidden activations move by at most
    ``log 2/β``, so ``|E_β − E| ≤ 2·(log 2/β)·Σ_{μ,j} |∂E/∂H_{μj}|`` (first order, doubled for the rest; one
    hidden layer: ``∂E/∂H_{μj} = r_μ v_j/Δ``); the gradients agree to 1e-9 relative (``σ(βa) = 1[a > 0]``
    in float64 once ``β|a| > 37``: every pre-activation here is farther than 4e-11 from its kink)."""
    net, X, y = _data(1, n=40, widths=(2, 8, 1))
    W = _weights(net, X)
    kw = dict(likelihood="gaussian", lam_w=net.lam_w, lam_b=net.lam_b, delta_y=0.3)
    beta = 1e12
    E, g, _ = batched_objective(net, W, X, y, **kw)
    Eb, gb, _ = batched_objective(net, W, X, y, smoothing=beta, **kw)
    for m in range(3):
        A = X @ W[0][m][:, :-1].T + W[0][m][:, -1]
        assert np.abs(A).min() > 4e-11
        F = np.maximum(A, 0) @ W[1][m][0, :-1] + W[1][m][0, -1]
        r = F - y[:, 0]
        bound = 2 * math.log(2) / beta * float(np.sum(np.abs(np.outer(r, W[1][m][0, :-1])))) / 0.3
        assert abs(float(Eb[m]) - float(E[m])) <= bound
    for a, b in zip(gb, g):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_smoothed_objective_float32_and_array_api_paths():
    """Float32 evaluates in float32 within float32 rounding of the float64 value (relative 1e-5: ~100 terms of
    ~1e-7 relative error each, with margin; gradient entries within 1e-3 of the largest, as sums of 30 products
    that cancel lose up to ~30·6e-8 of the largest term per step, with wide margin); the array-API path (torch)
    equals the NumPy path to rounding (1e-12 / 1e-10: the same operations in another order)."""
    net, X, y = _deep("relu")
    W = _weights(net, X)
    kw = dict(likelihood="gaussian", lam_w=net.lam_w, lam_b=net.lam_b, noise_prior=(1.0, 1e-2), smoothing=32.0)
    E, g, _ = batched_objective(net, W, X, y, **kw)
    E32, g32, _ = batched_objective(net, tuple(w.astype(np.float32) for w in W), X.astype(np.float32),
                                    y.astype(np.float32), **kw)
    assert E32.dtype == np.float32 and g32[0].dtype == np.float32
    np.testing.assert_allclose(E32, E, rtol=1e-5)
    for a, b in zip(g32, g):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3 * float(np.abs(b).max()))
    torch = pytest.importorskip("torch")
    T = torch.as_tensor
    Et, gt, _ = batched_objective(net, tuple(map(T, W)), T(X), T(y), **kw)
    np.testing.assert_allclose(Et.numpy(), E, rtol=1e-12)
    for a, b in zip(gt, g):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------- the continuation

def _replay(net, X, y, info, *, seed, betas, stage_iter, noise_prior=(1.0, 1e-2)):
    """Replay ``map_fit``'s continuation by hand: stage ``k`` is ``lbfgs_batched`` on ``E_β/n`` from where stage
    ``k − 1`` ended (the first from the start of ``seed``). True when every recorded stage (iterations, the
    smoothed and the ReLU objective at its end) is reproduced bit for bit."""
    n = X.shape[0]
    k_init, _ = bb._backend.random.split(bb._backend.random.key(seed), 2)
    x = map_mod._flatten_batch(tuple(w[None] for w in bb.laplace.init_weights(net, seed=k_init, like=X)))
    kw = dict(likelihood="gaussian", lam_w=net.lam_w, lam_b=net.lam_b, delta_y=net.delta_y, noise_prior=noise_prior,
              chunk_size=None, prior_mean=None, member_targets=None)
    relu = map_mod._flat_objective(map_mod._Objective(net, X, y, **kw), net, X, n)
    for st, beta in zip(info["smoothing_stages"], betas):
        fun = map_mod._flat_objective(map_mod._Objective(net, X, y, smoothing=beta, **kw), net, X, n)
        r = lbfgs_batched(fun, x, max_iter=stage_iter, gtol=1e-6, ftol=0.0)
        x = r["x"]
        if not (st["beta"] == beta and st["num_iter"] == int(r["num_iter"][0])
                and st["objective_smoothed"] == float(r["f"][0]) * n
                and st["objective"] == float(relu(x, np.arange(1))[0][0]) * n):
            return False
    return True


def _cold_continuation(net, X, Y, okw, fun, x0, betas, **kw):
    """Broken twin: every stage restarts from the start ``x0`` (the warm start dropped)."""
    x_last, out = None, []
    for beta in betas:
        x_last, o = _real_continuation(net, X, Y, okw, fun, x0, (beta,), **kw)
        out += o
    return x_last, out


_real_continuation = map_mod._continuation


def _fit(net, X, y, **kw):
    return map_fit(net, X, y, seed=3, noise="joint", max_iter=300, tol=1e-6, ftol=0.0, progress=False,
                   return_info=True, **kw)


def test_continuation_stages_are_warm_started_and_reported():
    """The stages chain (each starts where the previous ended: the hand replay reproduces every record bit for
    bit), report their iterations, and the ReLU fit starts where the last stage ended."""
    net, X, y = _data(2, n=40, widths=(2, 8, 1))
    betas = (4.0, 16.0, 64.0)
    W, info = _fit(net, X, y, smoothing=betas, smoothing_iter=60)
    st = info["smoothing_stages"]
    assert [s["beta"] for s in st] == list(betas)
    assert all(1 <= s["num_iter"] <= 60 for s in st)
    assert info["smoothing_iters"] == sum(s["num_iter"] for s in st)
    assert _replay(net, X, y, info, seed=3, betas=betas, stage_iter=60)
    # the ReLU fit from the last stage: its first history value is below the stage's end (a descent step)
    assert info["history"][0] <= st[-1]["objective"] + 1e-9 * abs(st[-1]["objective"])
    # one stage only, a scalar beta
    _, i1 = _fit(net, X, y, smoothing=4.0, smoothing_iter=60)
    assert len(i1["smoothing_stages"]) == 1 and i1["smoothing_stages"][0] == st[0]


def test_twin_without_warm_start_fails_the_replay(monkeypatch):
    """The replay check catches a continuation whose stages all start from the initial weights."""
    net, X, y = _data(2, n=40, widths=(2, 8, 1))
    betas = (4.0, 16.0, 64.0)
    monkeypatch.setattr(map_mod, "_continuation", _cold_continuation)
    _, info = _fit(net, X, y, smoothing=betas, smoothing_iter=60)
    assert not _replay(net, X, y, info, seed=3, betas=betas, stage_iter=60)


def test_option_none_is_the_plain_fit_bit_for_bit():
    """``smoothing=None`` is the fit without the option, bit for bit (map_fit with restarts, map_ensemble,
    float32), and a smoothed fit differs from it."""
    net, X, y = _data(4, n=40, widths=(2, 8, 1))
    a, ia = map_fit(net, X, y, seed=1, noise="joint", restarts=2, max_iter=200, progress=False, return_info=True)
    b, ib = map_fit(net, X, y, seed=1, noise="joint", restarts=2, max_iter=200, progress=False, return_info=True,
                    smoothing=None)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert ia["history"] == ib["history"] and "smoothing_stages" not in ib
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    e1 = map_ensemble(net, X32, y32, seed=2, members=3, noise="joint", max_iter=150, progress=False)
    e2 = map_ensemble(net, X32, y32, seed=2, members=3, noise="joint", max_iter=150, progress=False, smoothing=None)
    for u, v in zip(e1, e2):
        np.testing.assert_array_equal(u, v)
    c = map_fit(net, X, y, seed=1, noise="joint", restarts=2, max_iter=200, progress=False, smoothing=(8.0,),
                smoothing_iter=20)
    assert not np.array_equal(a[0], c[0])


def test_ensemble_members_are_their_own_fits_float32():
    """In a batched ensemble each member runs its own stages: member ``k`` equals ``map_fit`` with its seed
    (float64, bit for bit), and a float32 ensemble with smoothing stays float32 and finite."""
    net, X, y = _data(5, n=40, widths=(2, 8, 1))
    kw = dict(noise="joint", max_iter=120, tol=1e-6, ftol=0.0, progress=False, return_info=True,
              smoothing=(4.0, 32.0), smoothing_iter=40)
    W, info = map_ensemble(net, X, y, seed=9, members=3, **kw)
    keys = map_mod.member_keys(9, 3)
    for k in range(3):
        w, i = map_fit(net, X, y, seed=keys[k], **kw)
        for l in range(2):
            np.testing.assert_array_equal(W[l][k], w[l])
        assert info["members"][k]["smoothing_stages"] == i["smoothing_stages"]
    W32, i32 = map_ensemble(net, X.astype(np.float32), y.astype(np.float32), seed=9, members=3, **kw)
    assert W32[0].dtype == np.float32 and all(np.isfinite(w).all() for w in W32)
    assert all(len(m["smoothing_stages"]) == 2 for m in i32["members"])


def test_leaky_relu_continuation_runs_and_lowers_the_smoothed_objective():
    """Leaky ReLU nets are smoothed too; each stage ends no higher than it started (L-BFGS with Armijo
    steps never increases its objective) — checked on the first stage from the start."""
    net, X, y = _deep("leaky_relu", n=40)
    W, info = map_fit(net, X, y, seed=0, noise="joint", max_iter=100, progress=False, return_info=True,
                      smoothing=(4.0,), smoothing_iter=50)
    W0 = bb.laplace.init_weights(net, seed=bb._backend.random.split(bb._backend.random.key(0), 2)[0], like=X)
    E0 = batched_objective(net, tuple(w[None] for w in W0), X, y, likelihood="gaussian", lam_w=net.lam_w,
                           lam_b=net.lam_b, noise_prior=(1.0, 1e-2), smoothing=4.0)[0][0]
    assert info["smoothing_stages"][0]["objective_smoothed"] <= float(E0)


@pytest.mark.parametrize("bad, err", [
    ((0.0, 8.0), ValueError), ((-1.0,), ValueError), ((8.0, 8.0), ValueError), ((32.0, 8.0), ValueError),
    ((8.0, math.inf), ValueError), ((math.nan,), ValueError), ((), ValueError), ("8", TypeError),
    (True, TypeError), ((8.0, "x"), TypeError), (0, ValueError)])
def test_bad_betas_raise(bad, err):
    net, X, y = _data(0, n=20, widths=(2, 4, 1))
    with pytest.raises(err):
        map_fit(net, X, y, seed=0, noise="joint", max_iter=5, progress=False, smoothing=bad)
    with pytest.raises(err):
        map_ensemble(net, X, y, seed=0, members=2, noise="joint", max_iter=5, progress=False, smoothing=bad)


def test_bad_smoothing_settings_raise():
    net, X, y = _data(0, n=20, widths=(2, 4, 1))
    with pytest.raises(ValueError, match="relu"):
        map_fit(net.replace(activation="identity"), X, y, seed=0, max_iter=5, progress=False, smoothing=8.0)
    with pytest.raises(ValueError, match="lbfgs"):
        map_fit(net, X, y, seed=0, method="adam", num_epochs=1, progress=False, smoothing=8.0)
    with pytest.raises(ValueError, match="smoothing_iter"):
        map_fit(net, X, y, seed=0, max_iter=5, progress=False, smoothing=8.0, smoothing_iter=0)
    with pytest.raises(ValueError, match="smoothing_tol"):
        map_fit(net, X, y, seed=0, max_iter=5, progress=False, smoothing=8.0, smoothing_tol=-1.0)
    with pytest.raises(ValueError, match="relu"):
        batched_objective(net.replace(activation="identity"), _weights(net, X), X, y, likelihood="gaussian",
                          lam_w=net.lam_w, lam_b=net.lam_b, smoothing=8.0)
    with pytest.raises(ValueError, match="noise='joint'"):
        point_fit.map_posterior(net, X, y, seed=0, noise="holdout", max_iter=5, smoothing=BETAS)
    with pytest.raises(ValueError, match="predictive_noise"):
        point_fit.map_posterior(net, X, y, seed=0, noise="joint", max_iter=5, predictive_noise="test")
    with pytest.raises(ValueError, match="noise='joint'"):
        point_fit.map_posterior(net, X, y, seed=0, noise="holdout", max_iter=5, predictive_noise="evidence")
    with pytest.raises(ValueError, match="batched"):
        point_fit.ensemble_posterior(net, X, y, seed=0, noise="joint", max_iter=5, anchored=True, smoothing=BETAS)


# ------------------------------------------------------------------------- predictive noise, runner

def test_predictive_noise_options():
    """``predictive_noise`` changes only ``Δ_y``: the weights are the joint fit's; ``"holdout"`` is
    ``joint_holdout_noise`` with the same continuation (shared by the MAP and the ensemble through the memo),
    ``"evidence"`` is ``evidence_noise`` at the weights and the joint ``Δ̂_y``."""
    point_fit.clear_cache()
    net, X, y = _data(6, n=40, widths=(2, 8, 1))
    kw = dict(seed=4, noise="joint", max_iter=150, tol=1e-6, ftol=0.0, smoothing=(4.0, 16.0), smoothing_iter=30,
              cache=True)
    pj = point_fit.map_posterior(net, X, y, **kw)
    ph = point_fit.map_posterior(net, X, y, predictive_noise="holdout", **kw)
    pe = point_fit.map_posterior(net, X, y, predictive_noise="evidence", **kw)
    for p in (ph, pe):
        for a, b in zip(p.weights, pj.weights):
            np.testing.assert_array_equal(a, b)
        assert p.config["delta_y_joint"] == pj.delta_y
        assert p.config["map_owed_s"] == pj.config["map_time_s"]      # one joint fit, shared through the memo
    pilot = point_fit.joint_holdout_noise(net, X, y, seed=4, max_iter=150, tol=1e-6, ftol=0.0,
                                          smoothing=(4.0, 16.0), smoothing_iter=30)
    assert ph.delta_y == pilot["delta_y"] and pilot["reused"] is False
    ev = evidence_noise(net, pj.weights, X, y, delta_y=pj.delta_y)
    assert pe.delta_y == ev["delta_y"] and 0 < ev["gamma"] < X.shape[0]
    assert pe.delta_y > pj.delta_y        # (SSE/2 + b)/((n − γ)/2 + a) > (SSE/2 + b)/(n/2 + a) for γ > 0
    assert pj.config["map_smoothing_iters"] and len(pj.config["map_smoothing_iters"]) == 2
    ekw = dict(kw, members=3)
    eh = point_fit.ensemble_posterior(net, X, y, predictive_noise="holdout", **ekw)
    assert eh.config["hyper_fit"]["pilot_owed_s"] > 0         # the MAP's pilot, reused
    np.testing.assert_array_equal(eh.delta_y, np.full(3, pilot["delta_y"]))
    ee = point_fit.ensemble_posterior(net, X, y, predictive_noise="evidence", **ekw)
    for k, c in enumerate(ee.config["members"]):
        w = tuple(W[k] for W in ee.weights)
        assert c["delta_y"] == evidence_noise(net, w, X, y, delta_y=c["delta_y_joint"])["delta_y"]
        assert len(c["map_smoothing_iters"]) == 2
    point_fit.clear_cache()


def test_predictive_noise_without_smoothing_shares_the_plain_joint_fit():
    """Without the continuation (``map_joint``'s settings) ``predictive_noise`` keeps the plain joint fit's
    weights: with ``cache`` it is the same fit (owed, not refitted); without, a refit equal to it bitwise."""
    point_fit.clear_cache()
    net, X, y = _data(8, n=40, widths=(2, 8, 1))
    kw = dict(seed=5, noise="joint", max_iter=200, tol=1e-6, ftol=0.0, restarts=2)
    pj = point_fit.map_posterior(net, X, y, cache=True, **kw)
    pe = point_fit.map_posterior(net, X, y, cache=True, predictive_noise="evidence", **kw)
    pn = point_fit.map_posterior(net, X, y, cache=False, predictive_noise="evidence", **kw)
    assert pe.config["map_owed_s"] == pj.config["map_time_s"] and "map_owed_s" not in pn.config
    for p in (pe, pn):
        for a, b in zip(p.weights, pj.weights):
            np.testing.assert_array_equal(a, b)
        assert p.delta_y == evidence_noise(net, pj.weights, X, y, delta_y=pj.delta_y)["delta_y"]
        assert p.config["map_restart_objectives"] == pj.config["map_restart_objectives"]
    point_fit.clear_cache()


def test_evidence_noise_with_a_dominant_prior_is_the_joint_profile():
    """With a prior precision of 1e9 every parameter is prior-determined (``γ`` of order ``GGN/λ`` ≈ 1e-6), so
    the MacKay update is the joint profile ``(SSE/2 + b)/(nC/2 + a)`` to ~1e-6 relative (bound 1e-5)."""
    net, X, y = _data(7, n=40, widths=(2, 8, 1))
    strong = net.replace(prior_prec=1e9)
    W = bb.laplace.init_weights(strong, seed=0, like=X)
    W = tuple(w * 1e-4 for w in W)
    F = bb.model.forward(strong, W, X)
    sse = float(np.sum((np.asarray(F).reshape(-1) - y[:, 0]) ** 2))
    ev = evidence_noise(strong, W, X, y, delta_y=0.5)
    assert ev["gamma"] < 1e-4
    assert ev["delta_y"] == pytest.approx((0.5 * sse + 1e-2) / (0.5 * 40 + 1.0), rel=1e-5)
    with pytest.raises(ValueError, match="regression"):
        evidence_noise(bb.MLP([2, 4, 2], likelihood="multinomial_probit"), _weights(bb.MLP([2, 4, 2]), X, M=1),
                       X, np.zeros(40, dtype=int), delta_y=1.0)


def test_runner_methods():
    """``map_joint_smooth`` / ``ensemble_joint_smooth``: map_joint's / ensemble_joint's defaults plus the
    continuation (β = 8, 32, 128, 512, ≤ 5000 iterations per stage) and a predictive noise; one cell each end
    to end, whose fit is point_fit's of the same settings (the runner adds nothing)."""
    from blockbayes import evaluate as ev
    from blockbayes.datasets import Dataset

    for name, base in (("map_joint_smooth", "map_joint"), ("ensemble_joint_smooth", "ensemble_joint")):
        o = ev.get_method(name).options({})
        j = ev.get_method(base).options({})
        assert tuple(o["smoothing"]) == BETAS and o["smoothing_iter"] == 5000 and o["smoothing_tol"] == 1e-6
        assert o["predictive_noise"] in ("joint", "holdout", "evidence")
        extra = ("smoothing", "smoothing_iter", "smoothing_tol", "predictive_noise")
        assert {k: v for k, v in o.items() if k not in extra} == j
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 2))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(50)
    ds = Dataset(X[:35], y[:35], X[35:], y[35:], name="toy", task="regression", x_mean=np.zeros(2),
                 x_std=np.ones(2), y_mean=0.0, y_std=1.0, info={"standardized": True})
    res = ev.evaluate([{"method": "map_joint_smooth", "max_iter": 100, "smoothing_iter": 20},
                       {"method": "ensemble_joint_smooth", "max_iter": 100, "smoothing_iter": 20}], [ds],
                      progress=False, plots=False, memory="none")
    for cell in res.cells:
        assert cell["status"] == "ok", cell.get("error")
        assert math.isfinite(cell["metrics"]["rmse"]) and math.isfinite(cell["metrics"]["ll"])
    dm = res.cells[0]["diagnostics"]
    assert len(dm["map_smoothing_iters"]) == 4 and all(1 <= v <= 20 for v in dm["map_smoothing_iters"])
    de = res.cells[1]["diagnostics"]
    assert len(de["member_smoothing_iters"]) == 5 and all(len(v) == 4 for v in de["member_smoothing_iters"])


def test_runner_calibrated_joint_rows_share_and_charge_the_joint_fit():
    """``map_joint_mackay`` run after ``map_joint`` on the same split reuses its fit (same weights, so the same
    RMSE) and is charged its wall time (``map_owed_s``, added to the cell's fit time); the ensemble row likewise
    through ``members_owed_s``; the LL differs only through Δ_y."""
    from blockbayes import evaluate as ev
    from blockbayes.datasets import Dataset

    point_fit.clear_cache()
    rng = np.random.default_rng(1)
    X = rng.standard_normal((50, 2))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(50)
    ds = Dataset(X[:35], y[:35], X[35:], y[35:], name="toy", task="regression", x_mean=np.zeros(2),
                 x_std=np.ones(2), y_mean=0.0, y_std=1.0, info={"standardized": True})
    res = ev.evaluate([{"method": m, "max_iter": 150} for m in ("map_joint", "map_joint_mackay", "ensemble_joint",
                                                                "ensemble_joint_mackay")],
                      [ds], progress=False, plots=False, memory="none")
    c = {cell["method"]: cell for cell in res.cells}
    for m in c.values():
        assert m["status"] == "ok", m.get("error")
    for base, row in (("map_joint", "map_joint_mackay"), ("ensemble_joint", "ensemble_joint_mackay")):
        assert c[row]["metrics"]["rmse"] == c[base]["metrics"]["rmse"]
        assert c[row]["metrics"]["ll"] != c[base]["metrics"]["ll"]
    d = c["map_joint_mackay"]["diagnostics"]
    assert d["predictive_noise"] == "evidence" and d["map_owed_s"] > 0
    assert d["delta_y"] > d["delta_y_joint"]
    assert c["map_joint_mackay"]["fit_time_s"] >= d["map_owed_s"]
    de = c["ensemble_joint_mackay"]["diagnostics"]
    assert de["members_reused"] and de["members_owed_s"] > 0 and de["predictive_noise"] == "evidence"
    assert c["ensemble_joint_mackay"]["fit_time_s"] >= de["members_owed_s"]
    point_fit.clear_cache()
