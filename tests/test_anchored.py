"""Anchored (randomize-then-optimize) ensembles: the anchored MAP objective, its exactness on a
linear-Gaussian model, and the broken twins that the exactness check catches (issue 16, design note 49)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import blockbayes as bb
from blockbayes import point_fit
from blockbayes.laplace import anchor_draw, batched_objective, map_ensemble
from blockbayes.laplace import map as map_mod

from _helpers import small_regression as _data


pytestmark = pytest.mark.usefixtures("one_blas_thread")   # BLAS on one thread (conftest.py)




def _stack(ws):
    return tuple(np.stack([w[l] for w in ws]) for l in range(len(ws[0])))


# ------------------------------------------------------------------------- the objective

@pytest.mark.parametrize("noise_prior", [None, (1.0, 1e-2)])
def test_anchored_objective_value_and_gradient(noise_prior):
    """E_m = Σ_μ ℓ(yᵐ_μ, F_μ(θ_m)) + ½(θ_m − θ₀ᵐ)ᵀΛ(θ_m − θ₀ᵐ): the value against the plain objective on
    the member's own targets plus the shifted prior, the gradient against central finite differences."""
    net, X, y = _data(1)
    M = 3
    rng = np.random.default_rng(5)
    W = _stack([bb.laplace.init_weights(net, seed=s, like=X) for s in range(M)])
    A0 = _stack([anchor_draw(net, 10 + s, like=X) for s in range(M)])
    Ym = y[None] + 0.2 * rng.normal(size=(M,) + y.shape)
    kw = dict(likelihood="gaussian", lam_w=net.lam_w, lam_b=net.lam_b, delta_y=0.3, noise_prior=noise_prior)
    E, g, dy = batched_objective(net, W, X, y, prior_mean=A0, member_targets=Ym, **kw)
    lam = [np.r_[[net.lam_w[l]] * (W[l].shape[2] - 1), net.lam_b[l]] for l in range(2)]
    for m in range(M):
        Em, _, dym = batched_objective(net, tuple(w[m:m + 1] for w in W), X, Ym[m], **kw)
        plain_prior = sum(0.5 * float(np.sum(lam[l] * W[l][m] ** 2)) for l in range(2))
        anchored_prior = sum(0.5 * float(np.sum(lam[l] * (W[l][m] - A0[l][m]) ** 2)) for l in range(2))
        assert float(E[m]) == pytest.approx(float(Em[0]) - plain_prior + anchored_prior, rel=1e-12)
        assert float(dy[m]) == pytest.approx(float(dym[0]), rel=1e-12)
    v = [rng.normal(size=x.shape) for x in W]
    h = 1e-6
    Ep = batched_objective(net, tuple(x + h * u for x, u in zip(W, v)), X, y, prior_mean=A0, member_targets=Ym,
                           **kw)[0]
    Em = batched_objective(net, tuple(x - h * u for x, u in zip(W, v)), X, y, prior_mean=A0, member_targets=Ym,
                           **kw)[0]
    fd = (Ep - Em) / (2 * h)
    an = sum(np.sum((gl * u).reshape(M, -1), axis=1) for gl, u in zip(g, v))
    np.testing.assert_allclose(fd, an, rtol=1e-6)
    # the check fails for a gradient without the anchor (Λθ instead of Λ(θ − θ₀))
    g_plain = batched_objective(net, W, X, y, member_targets=Ym, **dict(kw, noise_prior=noise_prior))
    an_wrong = sum(np.sum((gl * u).reshape(M, -1), axis=1) for gl, u in zip(g_plain[1], v))
    assert np.all(np.abs(fd - an_wrong) > 1e-3 * np.abs(fd))


def test_anchored_objective_rows_and_the_plain_limit():
    """Rows: evaluating a subset of members uses their own anchors and targets; zero anchors and the
    shared targets give the plain objective bit for bit."""
    net, X, y = _data(2)
    M = 4
    W = _stack([bb.laplace.init_weights(net, seed=s, like=X) for s in range(M)])
    A0 = _stack([anchor_draw(net, 20 + s, like=X) for s in range(M)])
    Ym = y[None] + 0.1 * np.random.default_rng(1).normal(size=(M,) + y.shape)
    obj = map_mod._Objective(net, X, y, likelihood="gaussian", lam_w=net.lam_w, lam_b=net.lam_b, delta_y=0.3,
                             prior_mean=A0, member_targets=Ym)
    E, g, _ = obj(W)
    rows = np.array([3, 1])
    Er, gr, _ = obj(tuple(w[rows] for w in W), rows=rows)
    np.testing.assert_allclose(Er, E[rows], rtol=1e-14)
    for l in range(2):
        np.testing.assert_allclose(gr[l], g[l][rows], rtol=1e-13, atol=1e-14)
    with pytest.raises(ValueError, match="rows must index"):
        obj(W, rows=np.array([0, 4]))
    zero = tuple(np.zeros_like(w) for w in W)
    kw = dict(likelihood="gaussian", lam_w=net.lam_w, lam_b=net.lam_b, delta_y=0.3)
    E0, g0, _ = batched_objective(net, W, X, y, prior_mean=zero, **kw)
    E1, g1, _ = batched_objective(net, W, X, y, **kw)
    np.testing.assert_array_equal(E0, E1)
    for a, b in zip(g0, g1):
        np.testing.assert_array_equal(a, b)


def test_anchor_draw_has_the_prior_scale():
    """θ₀ ~ N(0, Λ⁻¹): with the fan-in prior every weight and bias of layer l has variance 1/d_l.
    Two-sided χ² test of Σ θ₀² λ over 400 draws per layer (false-failure ≤ 2·10⁻⁴ per layer)."""
    net = bb.MLP([5, 8, 1], "relu", prior_prec="fan_in")
    like = np.zeros((1, 5))
    draws = [anchor_draw(net, s, like=like) for s in range(400)]
    for l, (d, k) in enumerate(net.weight_shapes()):
        s2 = sum(float(np.sum(w[l] ** 2)) for w in draws) * (k - 1)       # λ_W = λ_b = d_l = k − 1
        dof = 400 * d * k
        lo, hi = stats.chi2.ppf([1e-4, 1 - 1e-4], dof)
        assert lo < s2 < hi, (l, s2 / dof)
    np.testing.assert_array_equal(anchor_draw(net, 3, like=like)[0], anchor_draw(net, 3, like=like)[0])


# ------------------------------------------------------------ exactness: linear-Gaussian model

def _linear_posterior(net, X, y, dy):
    """Closed-form posterior of the one-layer (linear) net: mean A⁻¹Jᵀy/Δ_y, covariance A⁻¹,
    A = JᵀJ/Δ_y + Λ, J = [X 1]."""
    J = np.concatenate([X, np.ones((X.shape[0], 1))], axis=1)
    lam = np.r_[[net.lam_w[0]] * X.shape[1], net.lam_b[0]]
    A = J.T @ J / dy + np.diag(lam)
    cov = np.linalg.inv(A)
    return cov @ J.T @ y.reshape(-1) / dy, cov


def _whitened_tests(theta, mean, cov, alpha=1e-3):
    """Exact tests that the rows of ``theta`` are i.i.d. N(mean, cov): whitened z = L⁻¹(θ − mean) are
    N(0, I) rows; M‖z̄‖² ~ χ²_p (the mean), and for each direction u in {e_i} ∪ {(e_i + e_j)/√2}
    Σ_m (uᵀz_m)² ~ χ²_M (the covariance), two-sided. Bonferroni over the 1 + p(p+1)/2 tests: the
    probability that exact draws fail is at most ``alpha``. Returns the list of failed tests."""
    M, p = theta.shape
    L = np.linalg.cholesky(cov)
    z = np.linalg.solve(L, (theta - mean).T).T
    k = 1 + p * (p + 1) // 2
    a = alpha / k
    fails = []
    t_mean = M * float(np.sum(z.mean(axis=0) ** 2))
    if t_mean > stats.chi2.ppf(1 - a, p):
        fails.append(("mean", t_mean))
    lo, hi = stats.chi2.ppf([a / 2, 1 - a / 2], M)
    dirs = [np.eye(p)[i] for i in range(p)]
    dirs += [(np.eye(p)[i] + np.eye(p)[j]) / math.sqrt(2) for i in range(p) for j in range(i + 1, p)]
    for u in dirs:
        t = float(np.sum((z @ u) ** 2))
        if not lo < t < hi:
            fails.append((tuple(np.round(u, 3)), t / M))
    return fails


def _linear_case():
    rng = np.random.default_rng(11)
    n, d, dy = 6, 3, 0.5            # few noisy points: the prior and the data both shape the posterior
    net = bb.MLP([d, 1], "identity", prior_prec="fan_in", delta={"y": dy})
    X = rng.normal(size=(n, d))
    y = X @ np.array([0.5, -1.0, 0.3]) + 0.2 + math.sqrt(dy) * rng.normal(size=n)
    return net, X, y, dy


def _members(net, X, y, dy, **kw):
    W, info = map_ensemble(net, X, y, members=600, seed=3, noise=dy, max_iter=500, tol=1e-11, ftol=0.0,
                           progress=False, return_info=True, **kw)
    # the minimisers of convex quadratics: L-BFGS ends at the float64 floor of E ("no decrease"), with
    # |∇E/n| ≤ 1e-7 — a distance ≤ ~1e-7 from the exact minimiser, against posterior sds ~0.3
    assert max(m["grad_norm"] for m in info["members"]) / X.shape[0] <= 1e-7
    return np.asarray(W[0]).reshape(600, -1)                  # (M, d + 1): weights then bias


def test_anchored_perturbed_members_are_exact_posterior_draws():
    """For a model linear in θ with fixed Δ_y, anchored + target-perturbed members are exact posterior
    draws (RTO). 600 members of a 4-parameter linear regression (6 points) against the closed-form
    posterior: mean and covariance by :func:`_whitened_tests` (false-failure ≤ 10⁻³, exact: the
    members are the minimisers of convex quadratics to |∇E/n| ≤ 10⁻⁷). Also through
    ``ensemble_posterior(anchored=True, target_noise="noise")``, the runner's path."""
    net, X, y, dy = _linear_case()
    mean, cov = _linear_posterior(net, X, y, dy)
    theta = _members(net, X, y, dy, anchored=True, target_noise=dy)
    assert _whitened_tests(theta, mean, cov) == []
    ens = point_fit.ensemble_posterior(net, X, y, members=600, seed=4, noise=dy, anchored=True, target_noise="noise",
                                       max_iter=500, tol=1e-11, ftol=0.0)
    assert ens.config["anchored"]["target_noise"] == dy
    np.testing.assert_array_equal(np.asarray(ens.delta_y), dy)
    assert _whitened_tests(np.asarray(ens.weights[0]).reshape(600, -1), mean, cov) == []


@pytest.mark.parametrize("twin", ["anchor not drawn", "no target perturbation", "anchor sd 1/λ", "plain ensemble"])
def test_exactness_check_catches_broken_twins(twin, monkeypatch):
    """The same check rejects each broken variant: anchors at 0 (only the targets perturbed), anchors
    without target perturbation, anchors drawn with standard deviation 1/λ instead of 1/√λ, and the
    plain (unanchored, unperturbed) ensemble — whose members all sit at the posterior mean."""
    net, X, y, dy = _linear_case()
    mean, cov = _linear_posterior(net, X, y, dy)
    if twin == "anchor not drawn":
        theta = _members(net, X, y, dy, anchored=False, target_noise=dy)
    elif twin == "no target perturbation":
        theta = _members(net, X, y, dy, anchored=True)
    elif twin == "anchor sd 1/λ":
        real = map_mod.anchor_draw

        def wrong_scale(net_, key, *, like, prior_precision=None):
            lam_w, lam_b = bb.laplace._common.resolve_prior(net_, prior_precision)
            return tuple(a / np.r_[[math.sqrt(lam_w[l])] * (a.shape[1] - 1), math.sqrt(lam_b[l])]
                         for l, a in enumerate(real(net_, key, like=like, prior_precision=prior_precision)))

        monkeypatch.setattr(map_mod, "anchor_draw", wrong_scale)
        theta = _members(net, X, y, dy, anchored=True, target_noise=dy)
    else:
        theta = _members(net, X, y, dy)
    assert _whitened_tests(theta, mean, cov) != []


# ------------------------------------------------------------------------- API and errors

def test_anchored_ensemble_errors():
    net, X, y = _data()
    A_bad = (np.zeros((2, 6, 3)), np.zeros((3, 1, 7)))
    kw = dict(likelihood="gaussian", lam_w=net.lam_w, lam_b=net.lam_b)
    W = _stack([bb.laplace.init_weights(net, seed=s, like=X) for s in range(2)])
    with pytest.raises(ValueError, match="disagree on the member count"):
        batched_objective(net, W, X, y, prior_mean=A_bad, **kw)
    with pytest.raises(ValueError, match="prior_mean\\[0\\] must have shape"):
        batched_objective(net, W, X, y, prior_mean=(np.zeros((2, 6, 2)), np.zeros((2, 1, 7))), **kw)
    with pytest.raises(ValueError, match="member_targets must have shape"):
        batched_objective(net, W, X, y, member_targets=np.zeros((2, 3, 1)), **kw)
    with pytest.raises(ValueError, match="NaN"):
        batched_objective(net, W, X, y, prior_mean=(np.full((2, 6, 3), np.nan), np.zeros((2, 1, 7))), **kw)
    with pytest.raises(ValueError, match="target_noise must be positive"):
        map_ensemble(net, X, y, members=2, seed=0, anchored=True, target_noise=-1.0, progress=False)
    with pytest.raises(TypeError, match="anchored must be a bool"):
        map_ensemble(net, X, y, members=2, seed=0, anchored="yes", progress=False)
    with pytest.raises(ValueError, match="fixed noise variance"):
        point_fit.ensemble_posterior(net, X, y, members=2, seed=0, noise="joint", anchored=True, target_noise="noise")
    with pytest.raises(ValueError, match="anchored ensemble takes noise"):
        point_fit.ensemble_posterior(net, X, y, members=2, seed=0, noise="holdout", anchored=True)
    with pytest.raises(ValueError, match="target_noise must be None"):
        point_fit.ensemble_posterior(net, X, y, members=2, seed=0, noise=0.1, anchored=True, target_noise="y")
    clf = bb.MLP([2, 6, 1], "relu", likelihood="probit", prior_prec="fan_in")
    with pytest.raises(ValueError, match="gaussian likelihood"):
        map_ensemble(clf, X, (y[:, 0] > 0).astype(int), members=2, seed=0, target_noise=0.1, progress=False)


def test_anchored_ensemble_is_seeded_and_its_members_differ():
    """The same seed gives the same members; anchors are per member and recorded; the joint-noise
    anchored fit reports its Δ̂_y per member; joint_holdout_noise is candidate 0 of joint_select."""
    net, X, y = _data(3)
    kw = dict(members=3, seed=7, noise="joint", anchored=True, max_iter=300, tol=1e-6, ftol=0.0)
    a = point_fit.ensemble_posterior(net, X, y, **kw)
    b = point_fit.ensemble_posterior(net, X, y, **kw)
    for wa, wb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(wa, wb)
    W, info = map_ensemble(net, X, y, members=3, seed=point_fit.derived_seed(7, 100), noise="joint", anchored=True,
                           max_iter=300, tol=1e-6, ftol=0.0, progress=False, return_info=True)
    np.testing.assert_array_equal(W[0], a.weights[0])
    assert not np.allclose(info["anchors"][0][0], info["anchors"][0][1])
    np.testing.assert_allclose(np.asarray(a.delta_y), info["delta_y"])
    pilot = point_fit.joint_holdout_noise(net, X, y, seed=5, max_iter=300)
    cand = point_fit.joint_select_candidates(net, X, y, seed=5, starts=1, max_iter=300, refit_iter=1)
    assert pilot["delta_y"] == float(cand["holdout_mse"][0])


def test_runner_method_ensemble_anchored():
    """The registered method: its defaults (ensemble_joint's, plus the anchor), and one cell end to end
    whose ensemble is ensemble_posterior's anchored fit of the same seed (the runner adds nothing)."""
    from blockbayes import evaluate as ev
    from blockbayes.datasets import Dataset

    o = ev.get_method("ensemble_anchored").options({})
    j = ev.get_method("ensemble_joint").options({})
    assert o["anchored"] is True and o["target_noise"] is None
    assert {k: v for k, v in o.items() if k not in ("anchored", "target_noise")} == j
    rng = np.random.default_rng(0)
    X = rng.standard_normal((50, 2))
    y = np.sin(X[:, 0]) + 0.1 * rng.standard_normal(50)
    ds = Dataset(X[:35], y[:35], X[35:], y[35:], name="toy", task="regression", x_mean=np.zeros(2),
                 x_std=np.ones(2), y_mean=0.0, y_std=1.0, info={"standardized": True})
    cell = ev.evaluate([{"method": "ensemble_anchored", "max_iter": 200}], [ds], progress=False,
                       plots=False, memory="none").cells[0]
    assert cell["status"] == "ok", cell.get("error")
    assert cell["diagnostics"]["anchored"] is True and cell["diagnostics"]["members"] == 5
    assert math.isfinite(cell["metrics"]["rmse"])


def test_anchored_objective_array_api_path_matches_numpy():
    """The array-API path of the anchored objective (torch) equals the NumPy fast path to rounding."""
    torch = pytest.importorskip("torch")
    net, X, y = _data(4)
    M = 3
    W = _stack([bb.laplace.init_weights(net, seed=s, like=X) for s in range(M)])
    A0 = _stack([anchor_draw(net, 30 + s, like=X) for s in range(M)])
    Ym = y[None] + 0.1 * np.random.default_rng(2).normal(size=(M,) + y.shape)
    kw = dict(likelihood="gaussian", lam_w=net.lam_w, lam_b=net.lam_b, noise_prior=(1.0, 1e-2))
    E, g, _ = batched_objective(net, W, X, y, prior_mean=A0, member_targets=Ym, **kw)
    T = torch.as_tensor
    Et, gt, _ = batched_objective(net, tuple(map(T, W)), T(X), T(y), prior_mean=tuple(map(T, A0)),
                                  member_targets=T(Ym), **kw)
    np.testing.assert_allclose(Et.numpy(), E, rtol=1e-12)
    for a, b in zip(gt, g):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-10, atol=1e-12)
