"""Hand-written MLP derivatives of blockbayes.laplace._mlp_grad against finite differences and
against explicit (dense) Jacobian algebra."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import blockbayes as bb
from blockbayes.laplace import _common as cm
from blockbayes.laplace import _mlp_grad as mg

ACTS = ["relu", "identity", "leaky_relu"]
LIKS = [("gaussian", 2), ("categorical", 3), ("bernoulli", 1)]


pytestmark = pytest.mark.usefixtures("one_blas_thread")   # BLAS on one thread (conftest.py)


def _problem(widths, act, lik, n, seed, jitter=0.4):
    rng = np.random.default_rng(seed)
    net = bb.MLP(list(widths), act, slope=0.1, prior_prec=[(0.7, 0.3)] * (len(widths) - 1), delta=0.3)
    C = widths[-1]
    X = rng.normal(size=(n, widths[0]))
    if lik == "gaussian":
        y = rng.normal(size=(n, C))
    elif lik == "categorical":
        y = rng.integers(0, C, size=n)
    else:
        y = rng.integers(0, 2, size=n)
    W = tuple(w + jitter * rng.normal(size=w.shape) for w in bb.laplace.init_weights(net, seed=seed, like=X))
    return net, X, y, W


def _fd_grad(net, W, X, y, lik, h=1e-6):
    out = []
    for l in range(len(W)):
        g = np.zeros_like(W[l])
        for idx in np.ndindex(W[l].shape):
            Wp = [w.copy() for w in W]
            Wm = [w.copy() for w in W]
            Wp[l][idx] += h
            Wm[l][idx] -= h
            ep = bb.laplace.neg_log_posterior(net, Wp, X, y, likelihood=lik, grad=False)
            em = bb.laplace.neg_log_posterior(net, Wm, X, y, likelihood=lik, grad=False)
            g[idx] = (ep - em) / (2 * h)
        out.append(g)
    return out


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("lik,C", LIKS)
def test_gradient_matches_finite_differences(act, lik, C):
    net, X, y, W = _problem([3, 4, 3, C], act, lik, n=9, seed=1)
    E, g = bb.laplace.neg_log_posterior(net, W, X, y, likelihood=lik)
    fd = _fd_grad(net, W, X, y, lik)
    scale = max(1.0, max(np.abs(x).max() for x in fd))
    for l in range(len(W)):
        np.testing.assert_allclose(g[l], fd[l], atol=1e-6 * scale, rtol=0)


def test_gradient_check_catches_a_broken_backward(monkeypatch):
    """Mutation twin: drop f'(A) from the backward pass; the FD comparison must fail."""
    net, X, y, W = _problem([3, 4, 3, 2], "relu", "gaussian", n=9, seed=2)
    # the backward pass is blockbayes.nn's (shared by every family); patch it where it is looked up
    orig = bb.nn.activation_derivative
    monkeypatch.setattr(bb.nn, "activation_derivative", lambda xp, A, act, slope=0.0: xp.ones_like(A))
    _, g = bb.laplace.neg_log_posterior(net, W, X, y)
    monkeypatch.setattr(bb.nn, "activation_derivative", orig)
    fd = _fd_grad(net, W, X, y, "gaussian")
    assert max(np.abs(a - b).max() for a, b in zip(g, fd)) > 1e-3


def test_objective_value_is_the_negative_log_posterior():
    net, X, y, W = _problem([2, 3, 2], "relu", "gaussian", n=7, seed=3)
    E = bb.laplace.neg_log_posterior(net, W, X, y, grad=False)
    F = bb.model.forward(net, W, X)
    dy = net.delta_y
    ref = (np.sum((y - F) ** 2) / (2 * dy) + 0.5 * y.size * np.log(2 * np.pi * dy)
           + sum(0.5 * (0.7 * np.sum(w[:, :-1] ** 2) + 0.3 * np.sum(w[:, -1] ** 2)) for w in W))
    np.testing.assert_allclose(float(E), ref, rtol=1e-12)
    # categorical: cross entropy
    net, X, y, W = _problem([2, 3, 3], "relu", "categorical", n=7, seed=3)
    F = bb.model.forward(net, W, X)
    logp = F - np.log(np.exp(F).sum(1, keepdims=True))
    ref = -logp[np.arange(7), y].sum() + sum(0.5 * (0.7 * np.sum(w[:, :-1] ** 2) + 0.3 * np.sum(w[:, -1] ** 2)) for w in W)
    np.testing.assert_allclose(float(bb.laplace.neg_log_posterior(net, W, X, y, likelihood="categorical", grad=False)), ref, rtol=1e-12)


def test_weighted_gram_is_the_three_way_einsum():
    rng = np.random.default_rng(0)
    H = rng.normal(size=(17, 5))
    c = rng.random(size=(17, 4))
    np.testing.assert_allclose(mg.weighted_gram(H, c), np.einsum("mi,mj,mk->ijk", c, H, H), rtol=1e-12)


def _dense_ggn(net, W, X, y, lik, layers):
    Y = cm.encode_targets(net, lik, X, y)
    J = mg.jacobian(net, W, X, layers)
    F = mg.forward_cache(net, W, X).F
    _, _, S = mg.loss_derivatives(lik, F, Y, net.delta_y)
    Hl = S @ np.swapaxes(S, 1, 2)
    return np.einsum("ncp,ncd,ndq->pq", J, Hl, J), J


def test_jacobian_matches_finite_differences():
    net, X, y, W = _problem([2, 4, 3, 2], "leaky_relu", "gaussian", n=5, seed=4)
    J = mg.jacobian(net, W, X, range(3))
    h = 1e-6
    col = 0
    for l in range(3):
        for idx in np.ndindex(W[l].shape):
            Wp = [w.copy() for w in W]
            Wm = [w.copy() for w in W]
            Wp[l][idx] += h
            Wm[l][idx] -= h
            fd = (bb.model.forward(net, Wp, X) - bb.model.forward(net, Wm, X)) / (2 * h)
            np.testing.assert_allclose(J[:, :, col], fd, atol=1e-7)
            col += 1


def test_loss_hessian_square_roots():
    rng = np.random.default_rng(5)
    F = rng.normal(size=(6, 4))
    Y = np.eye(4)[rng.integers(0, 4, 6)]
    _, _, S = mg.loss_derivatives("categorical", F, Y)
    p = np.exp(F) / np.exp(F).sum(1, keepdims=True)
    H = np.stack([np.diag(q) - np.outer(q, q) for q in p])
    np.testing.assert_allclose(S @ np.swapaxes(S, 1, 2), H, atol=1e-14)
    F1 = rng.normal(size=(6, 1)) * 30            # far tails stay finite
    _, dF, S = mg.loss_derivatives("bernoulli", F1, (F1 > 0).astype(float))
    assert np.all(np.isfinite(S)) and np.all(np.isfinite(dF))
    s = 1 / (1 + np.exp(-F1))
    np.testing.assert_allclose(S[:, :, 0] ** 2, s * (1 - s), atol=1e-15)


@settings(max_examples=20, deadline=None)
@given(widths=st.lists(st.integers(1, 4), min_size=2, max_size=4),
       act=st.sampled_from(ACTS), lik=st.sampled_from(["gaussian", "categorical", "bernoulli"]),
       n=st.integers(1, 8), seed=st.integers(0, 2**31 - 1))
def test_hypothesis_gradient_and_curvature_shapes(widths, act, lik, n, seed):
    """Over random shapes: FD gradient, and every curvature kind equals the dense J^T H J pieces."""
    widths = list(widths)
    if lik == "categorical":
        widths[-1] = max(2, widths[-1])
    elif lik == "bernoulli":
        widths[-1] = 1
    net, X, y, W = _problem(widths, act, lik, n=n, seed=seed)
    _, g = bb.laplace.neg_log_posterior(net, W, X, y, likelihood=lik)
    fd = _fd_grad(net, W, X, y, lik)
    scale = max(1.0, max(np.abs(x).max() for x in fd))
    for a, b in zip(g, fd):
        np.testing.assert_allclose(a, b, atol=2e-6 * scale, rtol=0)
    L = len(W)
    layers = list(range(L))
    Y = cm.encode_targets(net, lik, X, y)
    cur = mg.curvature(net, W, X, Y, likelihood=lik, layers=layers, kinds=["block", "diag", "kfac", "full"],
                       delta_y=net.delta_y, unit_noise=False, chunk_size=3)
    G, _ = _dense_ggn(net, W, X, y, lik, layers)
    np.testing.assert_allclose(cur["full"], G, atol=1e-10 * max(1, np.abs(G).max()))
    o = 0
    for l in layers:
        d, k = W[l].shape
        Gl = G[o:o + d * k, o:o + d * k].reshape(d, k, d, k)
        o += d * k
        np.testing.assert_allclose(cur["block"][l], np.stack([Gl[i, :, i, :] for i in range(d)]), atol=1e-10 * max(1, np.abs(G).max()))
        np.testing.assert_allclose(cur["diag"][l], np.einsum("ijij->ij", Gl), atol=1e-10 * max(1, np.abs(G).max()))
        # KFAC factors: B = Σ_μ B_μ is the bias–bias block of the exact GGN (h̃ has a 1 there),
        # A = (1/n) Σ_μ h̃_μ h̃_μᵀ
        np.testing.assert_allclose(cur["B"][l], Gl[:, k - 1, :, k - 1], atol=1e-10 * max(1, np.abs(G).max()))
        Ht = mg.forward_cache(net, W, X).Ht[l]
        np.testing.assert_allclose(cur["A"][l], Ht.T @ Ht / n, atol=1e-12)


def test_chunking_does_not_change_results():
    net, X, y, W = _problem([3, 5, 2], "relu", "categorical", n=23, seed=7)
    Y = cm.encode_targets(net, "categorical", X, y)
    kinds = ["block", "diag", "kfac", "full"]
    a = mg.curvature(net, W, X, Y, likelihood="categorical", layers=[0, 1], kinds=kinds, gradient=True)
    b = mg.curvature(net, W, X, Y, likelihood="categorical", layers=[0, 1], kinds=kinds, gradient=True, chunk_size=4)
    for key in ("block", "diag", "A", "B", "grad"):
        for l in (0, 1):
            np.testing.assert_allclose(a[key][l], b[key][l], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(a["full"], b["full"], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-12)
