"""IVON and VOGN (blockbayes.vi.ivon / .vogn): exactness on a linear-Gaussian model, broken twins,
equivalence with the authors' ivon-opt, and the result interface."""
import math

import numpy as np
import pytest
from _helpers import load_benchmark

import blockbayes as bb
from blockbayes import nn
from blockbayes.vi import _natural, ivon, vogn


# ------------------------------------------------------------------------- linear-Gaussian model
def _linear_problem(seed=1, n=40, d=3, lam=2.0, dy=0.25):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.3 + math.sqrt(dy) * rng.normal(size=n)
    net = bb.MLP([d, 1], "identity", prior_prec=lam, delta={"y": dy})
    Phi = np.c_[X, np.ones(n)]
    P = lam * np.eye(d + 1) + Phi.T @ Phi / dy                 # exact posterior precision (bias last)
    mu = np.linalg.solve(P, Phi.T @ y / dy)
    return net, X, y, mu, 1.0 / np.diag(P)


C, T, Z = 16, 4000, 6.0


def _linear_checks(res, mu, v, *, deterministic_var=False):
    """(ok_mean, ok_var, detail). Means: across-restart z-test, |z| ≤ 6 on t_{15}: P(|t| > 6) ≈ 2.4e-5
    per coordinate, ≤ 1e-4 over the 4 coordinates. Variances: IVON's are random (an average of the
    Price estimates): z-test likewise. β2 = 0.995 over T = 4000 steps leaves β2^T ≈ 2e-9 of h_0
    (with β2 = 0.999 the leftover 1.8% of h_0 biases the variances by ≈ 1.4%, visible as z ≈ 4);
    the O(1 − β2) biases of the retraction term and of 1/h are ≈ 0.5%, far inside 6 se. VOGN's GGN
    is constant on a linear model, so its variance is deterministic: rtol 1e-9 (β2^T ≈ 1e-17)."""
    M = res.means[0][:, 0, :]
    V = res.covs[0][:, 0, :]
    se_m = M.std(axis=0, ddof=1) / math.sqrt(M.shape[0])
    zm = (M.mean(axis=0) - mu) / se_m
    r = V / v
    if deterministic_var:
        ok_v = bool(np.allclose(r, 1.0, rtol=1e-9, atol=0))
        zv = np.abs(r.mean(axis=0) - 1.0)
    else:
        zv = (r.mean(axis=0) - 1.0) / (r.std(axis=0, ddof=1) / math.sqrt(r.shape[0]))
        ok_v = bool(np.all(np.abs(zv) <= Z))
    return bool(np.all(np.abs(zm) <= Z)), ok_v, (zm, zv, r.mean(axis=0))


def _fit_ivon(net, X, y):
    return bb.vi.run(net, X, y, method="ivon", num_steps=T, lr=0.05, beta2=0.995, hess_init=1.0,
                     num_restarts=C, seed=0, progress=False)


def _fit_vogn(net, X, y):
    return bb.vi.run(net, X, y, method="vogn", num_steps=T, lr=0.05, beta2=0.99, num_restarts=C, seed=0,
                     progress=False)


def test_ivon_linear_gaussian_exact_mean_and_meanfield_variance():
    net, X, y, mu, v = _linear_problem()
    ok_m, ok_v, detail = _linear_checks(_fit_ivon(net, X, y), mu, v)
    assert ok_m and ok_v, detail


def test_vogn_linear_gaussian_exact_mean_and_ggn_fixed_point():
    net, X, y, mu, v = _linear_problem()
    ok_m, ok_v, detail = _linear_checks(_fit_vogn(net, X, y), mu, v, deterministic_var=True)
    assert ok_m and ok_v, detail


def test_broken_twin_ivon_missing_ess_is_caught(monkeypatch):
    """Twin: the Price estimate without the ``ess`` factor (ĥ = ĝ·noise·(h + δ)); h then settles
    at diag(H̄)/ess and the variances come out ``ess`` times too large."""
    net, X, y, mu, v = _linear_problem()

    def broken(g, noise, hess, wd, ess):
        return np.mean(g * noise, axis=0) * (hess + wd)

    monkeypatch.setattr(ivon, "hessian_estimate", broken)
    ok_m, ok_v, detail = _linear_checks(_fit_ivon(net, X, y), mu, v)
    assert not ok_v, detail


def test_broken_twin_vogn_summed_curvature_is_caught(monkeypatch):
    """Twin: the curvature summed over the minibatch instead of averaged (data-size scaling applied
    twice): variances ``n`` times too small."""
    net, X, y, mu, v = _linear_problem()
    orig = _natural.sample_gradients

    def broken(*a, **k):
        g, noise, curv, loss, F = orig(*a, **k)
        m = a[3].shape[0]
        return g, noise, tuple(c * m for c in curv), loss, F

    monkeypatch.setattr(vogn, "sample_gradients", broken)
    ok_m, ok_v, detail = _linear_checks(_fit_vogn(net, X, y), mu, v, deterministic_var=True)
    assert not ok_v, detail


def test_tempering_scales_variance():
    """ess = n/τ with δ fixed at λ/n: the linear model's mean-field variance becomes τ/P_jj (VOGN)."""
    net, X, y, mu, v = _linear_problem()
    res = bb.vi.run(net, X, y, method="vogn", num_steps=T, lr=0.05, beta2=0.99, ess=40 / 4.0, seed=0,
                    progress=False)
    np.testing.assert_allclose(res.covs[0][0, 0], 4.0 * v, rtol=1e-9)


# ------------------------------------------------------------------------- ivon-opt equivalence
def _bench_module():
    return load_benchmark("ivon_vs_torch")


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_same_noise_same_trajectory_as_ivon_opt(kind):
    pytest.importorskip("torch")
    pytest.importorskip("ivon")
    b = _bench_module()
    net, X, y = b.make_problem(n=128, kind=kind)
    (om, ov), (tm, tv) = b.run_pair(net, X, y, kind, hp=b.default_hp(128), num_steps=25, batch_size=32, seed=5,
                                    same_noise=True)
    for a, c in zip(om + ov, tm + tv):
        np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-12)


def test_same_noise_twin_without_debias_differs():
    """The comparison can fail: ivon-opt with debias=False drifts away from our (debiased) step."""
    pytest.importorskip("torch")
    ivon_opt = pytest.importorskip("ivon")
    b = _bench_module()
    net, X, y = b.make_problem(n=128, kind="regression")
    orig = ivon_opt.IVON.__init__

    def no_debias(self, *a, **k):
        k["debias"] = False
        orig(self, *a, **k)

    ivon_opt.IVON.__init__ = no_debias
    try:
        (om, _), (tm, _) = b.run_pair(net, X, y, "regression", hp=b.default_hp(128), num_steps=25, batch_size=32,
                                      seed=5, same_noise=True)
    finally:
        ivon_opt.IVON.__init__ = orig
    assert max(float(np.max(np.abs(a - c))) for a, c in zip(om, tm)) > 1e-6


# ------------------------------------------------------------------------- API
def _toy_classification(seed=0, n=120, classes=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = np.argmax(X @ rng.normal(size=(4, classes)), axis=1)
    return X, y


@pytest.mark.parametrize("method", ["ivon", "vogn"])
def test_classifier_result_interface(method, tmp_path):
    X, y = _toy_classification()
    net = bb.MLP([4, 8, 3], likelihood="multinomial_probit")
    res = bb.vi.run(net, X, y, method=method, num_steps=150, batch_size=32, num_restarts=2, seed=1,
                    progress=False, lr=0.1 if method == "ivon" else 0.05)
    assert res.method == method and res.cov_kind == "diag" and res.model == "standard"
    assert res.trace["loss"].shape == (2, 150) and res.elbo.shape == (2,)
    p = res.predict_proba(X[:10], num_samples=50)
    assert p.shape == (10, 3) and np.allclose(p.sum(axis=1), 1.0)
    acc = np.mean(np.argmax(res.predict_proba(X, num_samples=50), axis=1) == y)
    assert acc > 0.8
    lpd = res.log_predictive_density(X, y, num_samples=50)
    assert np.isfinite(lpd) and lpd < 0
    W = res.sample(7, seed=2)
    assert W[0].shape == (7, 8, 5)
    res.save(tmp_path / "r.npz")
    back = bb.vi.load(tmp_path / "r.npz")
    np.testing.assert_allclose(back.predict_proba(X[:5], num_samples=20, seed=3),
                               res.predict_proba(X[:5], num_samples=20, seed=3))
    assert back.config["method"] == method


@pytest.mark.parametrize("method", ["ivon", "vogn"])
def test_regression_learned_noise(method):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 2))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] + 0.3 * rng.normal(size=300)
    net = bb.MLP([2, 20, 1], delta={"y": 1.0})
    res = bb.vi.run(net, X, y, method=method, num_steps=1500, batch_size=50, learn_noise=True, seed=0,
                    progress=False, lr=0.1 if method == "ivon" else 0.05)
    dy = float(res.delta_y[0])
    assert 0.3 ** 2 / 2 < dy < 0.3 ** 2 * 2, dy          # true noise variance 0.09
    m, var = res.predict(X[:20], num_samples=100)
    assert m.shape == (20, 1) and np.all(var >= dy * 0.999)
    assert res.trace["delta_y"].shape == (1, 1500)


@pytest.mark.parametrize("method", ["ivon", "vogn"])
def test_max_steps_caps_the_run(method):
    """``max_steps`` gives exactly the run of ``num_steps = min(num_steps, max_steps)`` (same schedule,
    same draws); a cap above ``num_steps`` changes nothing; a bad cap is a ValueError."""
    X, y = _toy_classification()
    net = bb.MLP([4, 8, 3], likelihood="multinomial_probit")
    kw = dict(method=method, batch_size=32, seed=4, progress=False, lr=0.05)
    capped = bb.vi.run(net, X, y, num_steps=500, max_steps=12, **kw)
    plain = bb.vi.run(net, X, y, num_steps=12, **kw)
    loose = bb.vi.run(net, X, y, num_steps=12, max_steps=1000, **kw)
    assert capped.trace["loss"].shape == (1, 12) and capped.config["num_steps"] == 12
    for r in (capped, loose):
        for a, b in zip(r.means + r.covs, plain.means + plain.covs):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="max_steps"):
        bb.vi.run(net, X, y, num_steps=12, max_steps=0, **kw)


def test_step_is_pure_and_reproducible():
    X, y = _toy_classification()
    net = bb.MLP([4, 6, 3], likelihood="multinomial_probit")
    lik = nn.resolve_likelihood(net)
    Y = nn.encode_targets(net, lik, X, y)
    wd = _natural.weight_decay(net, X.shape[0], np, X)
    s0 = ivon.init(bb._backend.random.key(0), net, X, num_restarts=3, hess_init=0.5)
    copies = [a.copy() for a in s0.mean + s0.hess + s0.momentum]
    k = bb._backend.random.key(1)
    s1, info = ivon.step(k, s0, net, X, Y, likelihood=lik, lr=0.1, ess=120.0, weight_decay=wd, hess_init=0.5)
    s2, _ = ivon.step(k, s0, net, X, Y, likelihood=lik, lr=0.1, ess=120.0, weight_decay=wd, hess_init=0.5)
    for a, b in zip(copies, s0.mean + s0.hess + s0.momentum):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(s1.mean + s1.hess, s2.mean + s2.hess):
        np.testing.assert_array_equal(a, b)
    assert s1.t == 1 and info.loss.shape == (3,)
    assert all(m.shape == (3,) + s for m, s in zip(s1.mean, net.weight_shapes()))
    # positivity of h + δ survives even a huge negative Price estimate
    assert all(bool(np.all(h + d > 0)) for h, d in zip(s1.hess, wd))


def test_positivity_preserving_update_keeps_h_positive():
    """h' = β2 h + (1 − β2) ĥ + ½(1 − β2)²(h − ĥ)²/(h + δ) > −δ for any ĥ (it is ≥ the minimum over ĥ)."""
    h, d, b2 = 0.3, 0.01, 0.9
    hh = np.linspace(-1e6, 1e6, 200001)
    new = b2 * h + (1 - b2) * hh + 0.5 * (1 - b2) ** 2 * (h - hh) ** 2 / (h + d)
    assert np.all(new + d > 0)


def test_bad_options():
    X, y = _toy_classification()
    net = bb.MLP([4, 6, 3], likelihood="multinomial_probit")
    with pytest.raises(ValueError, match="curvature"):
        bb.vi.run(net, X, y, method="vogn", curvature="hessian", progress=False)
    with pytest.raises(ValueError, match="beta2"):
        bb.vi.run(net, X, y, method="ivon", beta2=1.0, progress=False)
    with pytest.raises(ValueError, match="ess"):
        bb.vi.run(net, X, y, method="ivon", ess=-1.0, progress=False)
    with pytest.raises(ValueError, match="learn_noise"):
        bb.vi.run(net, X, y, method="ivon", learn_noise=True, progress=False)
    with pytest.raises(ValueError, match="hess_init"):
        bb.vi.run(net, X, y, method="ivon", hess_init=0.0, progress=False)


def test_float32_and_array_api_strict():
    X, y = _toy_classification(n=60)
    net = bb.MLP([4, 5, 3], likelihood="multinomial_probit")
    r32 = bb.vi.run(net, X, y, method="ivon", num_steps=20, dtype="float32", seed=0, progress=False)
    assert r32.means[0].dtype == np.float32 and np.all(np.isfinite(r32.covs[0]))
    xps = pytest.importorskip("array_api_strict")
    rs = bb.vi.run(net, xps.asarray(X), xps.asarray(y), method="vogn", num_steps=10, batch_size=20, seed=0,
                   progress=False)
    assert np.all(np.isfinite(np.asarray(rs.covs[1])))


@pytest.mark.parametrize("method", ["ivon", "vogn"])
def test_fast_namespace_changes_no_bit(method, monkeypatch):
    """The run loop hands the steps NumPy's own namespace (``fast_namespace``); with the
    array_api_compat namespace instead the fit is bit for bit the same (regression with learned
    noise, several restarts and draws; classification)."""
    X, y = _toy_classification(n=70)
    cases = [(bb.MLP([4, 6, 1], delta={"y": 0.5}), X[:, 0] - X[:, 1] ** 2, dict(learn_noise=True, num_mc=2)),
             (bb.MLP([4, 6, 3], likelihood="multinomial_probit"), y, {})]
    for net, yy, extra in cases:
        kw = dict(method=method, num_steps=25, batch_size=16, num_restarts=2, seed=3, progress=False, lr=0.05,
                  **extra)
        fast = bb.vi.run(net, X, yy, **kw)
        monkeypatch.setattr(_natural, "fast_namespace", bb._backend.namespace)
        slow = bb.vi.run(net, X, yy, **kw)
        monkeypatch.undo()
        for a, b in zip(fast.means + fast.covs, slow.means + slow.covs):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(fast.trace["loss"], slow.trace["loss"])


@pytest.mark.parametrize("method", ["ivon", "vogn"])
def test_flat_layout_step_equals_the_per_layer_step(method):
    """``step(layout=...)`` on the flat state (what ``run_loop`` carries) gives, bit for bit, the
    per-layer step's state (3 layers, 2 restarts, 2 draws, learned noise); a twin whose flat
    normals are in another order (reversed) differs."""
    mod = ivon if method == "ivon" else vogn
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = X[:, 0] - X[:, 2] ** 2
    net = bb.MLP([3, 5, 4, 1], delta={"y": 0.5})
    lik = nn.resolve_likelihood(net)
    Y = nn.encode_targets(net, lik, X, y)
    wd = _natural.weight_decay(net, 20, np, X)
    lay = _natural.FlatLayout(net.weight_shapes())
    st = mod.init(bb._backend.random.key(0), net, X, num_restarts=2)
    st = st._replace(momentum=tuple(rng.normal(size=m.shape) for m in st.mean))
    eps = tuple(rng.normal(size=(2,) + m.shape) for m in st.mean)
    kw = dict(likelihood=lik, lr=0.05, ess=20.0, learn_noise=True, num_mc=2)
    if method == "ivon":
        kw["hess_init"] = 1.0
    ref, info = mod.step(None, st, net, X, Y, weight_decay=wd, eps=eps, **kw)
    flat, info_f = mod.step(None, lay.flatten_state(st, np), net, X, Y, weight_decay=(lay.join(wd, np),),
                            eps=(lay.join(eps, np),), xp=np, layout=lay, **kw)
    got = lay.unflatten_state(flat, np)
    for a, b in zip(ref.mean + ref.hess + ref.momentum, got.mean + got.hess + got.momentum):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ref.delta_y, got.delta_y)
    np.testing.assert_array_equal(info.loss, info_f.loss)
    e_flat = lay.join(eps, np)
    twin, _ = mod.step(None, lay.flatten_state(st, np), net, X, Y, weight_decay=(lay.join(wd, np),),
                       eps=(e_flat[..., ::-1].copy(),), xp=np, layout=lay, **kw)
    assert not np.array_equal(lay.unflatten_state(twin, np).mean[0], ref.mean[0])


def test_minibatches_partition_each_epoch_across_noise_chunks(monkeypatch):
    """Every epoch's minibatches are disjoint rows of one shuffle (``per_epoch · batch`` distinct rows),
    the shuffles differ between epochs, and the normals of consecutive steps differ — also when the
    draws come in chunks of 5 steps, which cut epochs (of 4 steps) in the middle. Twin: the rows of a
    run whose shuffle is the identity are caught as unshuffled."""
    monkeypatch.setattr(_natural, "NOISE_CHUNK_STEPS", 5)
    n, bs = 37, 9                                            # 4 steps per epoch, one row dropped
    X = np.arange(n, dtype=float)[:, None] * np.ones((1, 2))
    y = np.zeros(n)
    net = bb.MLP([2, 3, 1], delta={"y": 1.0})
    seen = []
    real = ivon.step

    def spy(key, st, net_, Xb, Yb, **k):
        seen.append((Xb[:, 0].astype(int).tolist(), [e.copy() for e in k["eps"]]))
        return real(key, st, net_, Xb, Yb, **k)

    monkeypatch.setattr(ivon, "step", spy)
    res = bb.vi.run(net, X, y, method="ivon", num_steps=16, batch_size=bs, seed=1, progress=False)
    assert res.config["noise_chunk"] == 5 and len(seen) == 16
    epochs = [sum((rows for rows, _ in seen[e * 4:(e + 1) * 4]), []) for e in range(4)]
    for rows in epochs:
        assert len(rows) == 36 and len(set(rows)) == 36
    assert len({tuple(r) for r in epochs}) == 4
    assert all(sorted(r) != r for r in epochs)                 # the twin (no shuffle) would be sorted
    for (_, e1), (_, e2) in zip(seen[:-1], seen[1:]):
        assert not np.array_equal(e1[0], e2[0])


def test_resume_across_noise_chunks(tmp_path, monkeypatch):
    """A run checkpointed inside a chunk of draws (chunks of 3 steps, checkpoint every 4) and resumed
    gives the uninterrupted run bit for bit."""
    monkeypatch.setattr(_natural, "NOISE_CHUNK_STEPS", 3)
    X, y = _toy_classification(n=50)
    net = bb.MLP([4, 5, 1], delta={"y": 0.5})
    yy = X[:, 0] + 0.1 * y
    kw = dict(num_steps=14, batch_size=12, seed=2, progress=False, learn_noise=True, num_restarts=2)
    full = ivon.run(net, X, yy, **kw)
    calls = [0]
    real = ivon.step

    def crashing(*a, **k):
        calls[0] += 1
        if calls[0] == 11:
            raise RuntimeError("crash")
        return real(*a, **k)

    monkeypatch.setattr(ivon, "step", crashing)
    path = tmp_path / "ivon.ckpt"
    with pytest.raises(RuntimeError, match="crash"):
        ivon.run(net, X, yy, checkpoint=path, checkpoint_every=4, **kw)
    monkeypatch.setattr(ivon, "step", real)
    res = ivon.run(net, X, yy, resume=path, **kw)
    for a, b in zip(res.means + res.covs, full.means + full.covs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(res.trace["loss"], full.trace["loss"])


# ------------------------------------------------------------------------- bb.evaluate methods
@pytest.mark.parametrize("name", ["vi_ivon", "vi_vogn"])
def test_evaluate_methods_regression_and_classification(name):
    from blockbayes.evaluate._methods import Arch, get_method

    m = get_method(name)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 3))
    y = np.sin(X[:, 0]) + 0.2 * rng.normal(size=150)
    p = m.fit(Arch(3, (10,), "regression"), X, y, seed=0, **m.options({"epochs": 20, "num_pred_samples": 50}))
    mu, var = p.predict(X[:7])
    assert mu.shape == (7,) and np.all(var > 0)
    assert p.lpd(X[:7], y[:7]).shape == (7,) and p.diagnostics["steps"] == 20 * (150 // 32)
    lab = (X[:, 0] > 0).astype(int)
    pc = m.fit(Arch(3, (10,), "classification", n_classes=2), X, lab, seed=0,
               **m.options({"epochs": 20, "num_pred_samples": 50}))
    P = pc.predict_proba(X[:7])
    assert P.shape == (7, 2) and np.allclose(P.sum(axis=1), 1.0)
    with pytest.raises(ValueError, match="no option"):
        m.options({"num_steps": 3})


@pytest.mark.parametrize("name", ["vi_ivon", "vi_vogn"])
def test_evaluate_diagnostics_steps_after_the_cap(name):
    """``diagnostics["steps"]`` is the number of steps the run did: ``min(epochs·⌊n/bs⌋, max_steps)``
    (it used to record the uncapped epoch count)."""
    from blockbayes.evaluate._methods import Arch, get_method

    m = get_method(name)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 2))
    y = X[:, 0] + 0.1 * rng.normal(size=100)
    arch = Arch(2, (5,), "regression")
    p = m.fit(arch, X, y, seed=0, **m.options({"epochs": 10, "num_pred_samples": 20, "options": {"max_steps": 7}}))
    assert p.diagnostics["steps"] == 7                      # 10 · ⌊100/32⌋ = 30 capped at 7
    q = m.fit(arch, X, y, seed=0, **m.options({"epochs": 2, "num_pred_samples": 20, "options": {"max_steps": 7}}))
    assert q.diagnostics["steps"] == 6                      # 2 · 3 = 6 below the cap
