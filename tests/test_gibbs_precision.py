"""Float32 chains keep the row conditionals' products in float64 (design note 52).

A float32 Gram of collinear inputs, or of hidden units pinned by a small ``Δ`` above them, is
stored with an error larger than its smallest eigenvalue: the factor of ``G + ΔΛ`` is then wrong
or indefinite (the runner's float32 Naval cells diverged on 3 of 20 splits), and a float32
``H̃^⊤T`` moves the mean along the ill-conditioned direction by many posterior sds. These tests
pin the float64 accumulation down and show what the float32 products did.
"""
from __future__ import annotations

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import blocks
from blockbayes._backend import random as bbr
from blockbayes.gibbs import conditionals, kernel


def _collinear(n=10_000, seed=0):
    """One chain's layer inputs with a near-collinear pair at mean 10, and targets from known rows."""
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(n)
    H = np.stack([10 + u, 10 + u + 1e-3 * rng.standard_normal(n), rng.standard_normal(n)], axis=1)[None]
    w = np.array([1.0, -1.0, 0.5, 0.2])
    T = (H[0] @ w[:3] + w[3] + 0.01 * rng.standard_normal(n))[None, :, None]
    return H, T, np.full((1, 4), 3.0), np.array([1e-4])


def test_stats64_equal_float64_products_of_the_float32_values_in_any_blocking():
    rng = np.random.default_rng(1)
    H = rng.standard_normal((2, 1000, 5)).astype(np.float32) * 30 + 7
    T = rng.standard_normal((2, 1000, 3)).astype(np.float32)
    G, B = blocks.augmented_stats64(np, H, T)
    assert G.dtype == np.float64 and B.dtype == np.float64
    H64, T64 = H.astype(np.float64), T.astype(np.float64)
    np.testing.assert_allclose(G, blocks.augmented_gram(np, H64), rtol=1e-13)
    np.testing.assert_allclose(B, blocks.augmented_cross(np, H64, T64), rtol=1e-12, atol=1e-9)
    G7, B7 = blocks.augmented_stats64(np, H, T, block_rows=7)              # 143 blocks, a ragged last one
    np.testing.assert_allclose(G7, G, rtol=1e-13)
    np.testing.assert_allclose(B7, B, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(blocks.augmented_gram64(np, H, block_rows=7), G, rtol=1e-13)
    # float64 inputs: the plain products, bitwise (float64 runs are unchanged)
    G2, B2 = blocks.augmented_stats64(np, H64, T64)
    assert np.array_equal(G2, blocks.augmented_gram(np, H64)) and np.array_equal(B2, blocks.augmented_cross(np, H64, T64))
    assert blocks.augmented_stats64(np, H, None)[1] is None


def test_float32_rows_of_an_ill_conditioned_layer_match_float64():
    """The hidden/output-layer path (no gram given): the float32 draw equals the float64 draw on the
    float32-rounded inputs, to float32 resolution."""
    H, T, prior, delta = _collinear()
    H32, T32 = H.astype(np.float32), T.astype(np.float32)
    k = bbr.key(3)
    W32 = conditionals.sample_rows(k, H32, T32, prior.astype(np.float32), delta.astype(np.float32))
    W64 = conditionals.sample_rows(k, H32.astype(np.float64), T32.astype(np.float64), prior, delta)
    assert W32.dtype == np.float32
    np.testing.assert_allclose(W32, W64, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("twin,factor", [("gram_and_cross_float32", 3), ("cross_float32", 20)])
def test_float32_products_put_the_rows_far_off(monkeypatch, twin, factor):
    """The broken twins: the same draw with both products in float32 (the code before note 52), or
    with a float64 Gram but a float32 ``H̃^⊤T``, lands several (tens of) posterior sds away, so the
    test above can fail."""
    H, T, prior, delta = _collinear()
    H32, T32 = H.astype(np.float32), T.astype(np.float32)
    k = bbr.key(3)
    W64 = conditionals.sample_rows(k, H32.astype(np.float64), T32.astype(np.float64), prior, delta)

    def stats(xp, H, T, **kw):
        G = blocks.augmented_gram(xp, H if twin == "gram_and_cross_float32" else xp.astype(H, xp.float64))
        return G, blocks.augmented_cross(xp, H, T)

    monkeypatch.setattr(conditionals, "augmented_stats64", stats)
    W32 = conditionals.sample_rows(k, H32, T32, prior.astype(np.float32), delta.astype(np.float32))
    G = blocks.augmented_gram(np, H32.astype(np.float64))[0] + delta[0] * np.diag(prior[0])
    sd_min = np.sqrt(delta[0] / np.linalg.eigvalsh(G)[0])       # posterior sd along the worst direction
    assert np.abs(W32 - W64).max() > factor * sd_min


def test_precompute_keeps_the_data_gram_and_factor_in_float64():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 4)).astype(np.float32)
    net = bb.MLP([4, 6, 1], "relu", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})
    c = kernel.precompute(net, X)
    assert c.gram0.dtype == np.float64 and c.chol0.dtype == np.float64
    G = blocks.augmented_gram(np, X.astype(np.float64))
    np.testing.assert_allclose(c.gram0, G, rtol=1e-13)
    lam = np.asarray(net.prior_precision_vector(0, np, dtype=np.float64, device=None))
    np.testing.assert_allclose(c.chol0 @ c.chol0.T, G + 1e-3 * np.diag(lam), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(kernel.data_gram(np, X, block_rows=64), G, rtol=1e-13)
    c64 = kernel.precompute(net, X.astype(np.float64))
    assert np.array_equal(c64.gram0, G)                        # float64 data: as before, bitwise
    with pytest.raises(ValueError, match="augmented Gram"):
        kernel.precompute(net, X, gram=np.eye(3))


@pytest.mark.slow
def test_float32_naval_cell_that_diverged_now_runs():
    """The runner's float32 Naval cell of split 18 (its MAP starts, Δ = 1e-3, 200 + 50×4 sweeps)
    raised NonFiniteStateError at sweep 96 with float32 Grams; it now runs and learns the float64
    run's noise level (2.59e-4 standardised). ~30 s; skipped without the shared UCI data."""
    from blockbayes.evaluate import _methods as M
    from blockbayes.evaluate import _runner as R

    try:
        data = bb.datasets.uci("naval-propulsion-plant", 18)
    except (FileNotFoundError, OSError, ValueError) as e:
        pytest.skip(f"UCI Naval not available: {e}")
    X, y = np.asarray(data[0]), np.asarray(data[1])
    seed = int(np.random.SeedSequence([0, 18, R.PROTOCOL_VERSION]).generate_state(1)[0])
    g = M.get_method("gibbs")
    p = g.fit(M.Arch(X.shape[1], (50,), "regression"), X, y, seed=seed,
              **g.options(dict(num_warmup=200, num_samples=50, thin=4, dtype="float32", init={"map": {"max_iter": 300}})))
    assert 2.3e-4 < p.diagnostics["delta_y_mean"] < 2.9e-4
