"""blockbayes.nn: batched forward/backward and diagonal curvatures of the standard MLP.

Checked against the Laplace family's chunked accumulations (unbatched calls), brute-force per-example
gradients, and the dense Jacobian (GGN diagonal). All exact (rounding only).
"""
import numpy as np
import pytest

import blockbayes as bb
from blockbayes import nn
from blockbayes.laplace import _mlp_grad as ref   # tests may reach into any family

LIKS = [("gaussian", 2, "gaussian"), ("categorical", 3, "multinomial_probit"), ("bernoulli", 1, "probit")]


def _problem(lik, d_out, mlp_lik, activation="relu", S=3, m=7, seed=0):
    rng = np.random.default_rng(seed)
    net = bb.MLP([4, 5, 3, d_out], activation, likelihood=mlp_lik)
    W = [rng.normal(size=(S,) + s) for s in net.weight_shapes()]
    X = rng.normal(size=(m, 4))
    if lik == "gaussian":
        Y = rng.normal(size=(m, d_out))
    elif lik == "categorical":
        Y = np.eye(d_out)[rng.integers(0, d_out, m)]
    else:
        Y = rng.integers(0, 2, (m, 1)).astype(float)
    return net, W, X, Y


@pytest.mark.parametrize("lik,d_out,mlp_lik", LIKS)
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "identity"])
def test_loss_and_gradient_match_laplace_twin(lik, d_out, mlp_lik, activation):
    net, W, X, Y = _problem(lik, d_out, mlp_lik, activation)
    E, grads, _, F = nn.value_and_grad(net, W, X, Y, likelihood=lik, delta_y=0.7)
    assert E.shape == (3,) and F.shape == (3, 7, d_out)
    for s in range(3):
        Ws = [w[s] for w in W]
        E2, g2 = ref.objective(net, Ws, X, Y, likelihood=lik, lam_w=[0] * 3, lam_b=[0] * 3, delta_y=0.7)
        np.testing.assert_allclose(E[s], E2, rtol=1e-12)
        for a, b in zip(grads, g2):
            np.testing.assert_allclose(a[s], b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lik,d_out,mlp_lik", LIKS)
def test_curvatures_against_brute_force(lik, d_out, mlp_lik):
    net, W, X, Y = _problem(lik, d_out, mlp_lik)
    _, _, ef, _ = nn.value_and_grad(net, W, X, Y, likelihood=lik, delta_y=0.7, curvature="ef")
    _, _, ggn, _ = nn.value_and_grad(net, W, X, Y, likelihood=lik, delta_y=0.7, curvature="ggn")
    for s in range(3):
        Ws = [w[s] for w in W]
        # squared per-example gradients
        acc = [np.zeros_like(w) for w in Ws]
        for mu in range(X.shape[0]):
            _, gm = ref.objective(net, Ws, X[mu:mu + 1], Y[mu:mu + 1], likelihood=lik, lam_w=[0] * 3,
                                  lam_b=[0] * 3, delta_y=0.7)
            for l in range(3):
                acc[l] += gm[l] ** 2
        for a, b in zip(ef, acc):
            np.testing.assert_allclose(a[s], b, rtol=1e-10, atol=1e-12)
        # GGN diagonal from the dense Jacobian and the loss Hessian
        J = ref.jacobian(net, Ws, X, [0, 1, 2])                             # (m, C, P)
        F = nn.output(net, [w[s:s + 1] for w in W], X)[0]
        Sq = nn.hessian_sqrt(lik, F[None], 0.7)[0]                          # (m, C, R)
        Hl = np.einsum("mcr,mdr->mcd", Sq, Sq)
        diag = np.einsum("mcp,mcd,mdp->p", J, Hl, J)
        flat = np.concatenate([g[s].ravel() for g in ggn])
        np.testing.assert_allclose(flat, diag, rtol=1e-10, atol=1e-12)


def test_per_member_noise_and_shared_inputs():
    net, W, X, Y = _problem("gaussian", 2, "gaussian")
    dy = np.array([0.5, 1.0, 2.0])
    E, g, c, _ = nn.value_and_grad(net, W, X, Y, likelihood="gaussian", delta_y=dy, curvature="ggn")
    for s in range(3):
        E1, g1, c1, _ = nn.value_and_grad(net, [w[s:s + 1] for w in W], X, Y, likelihood="gaussian",
                                          delta_y=float(dy[s]), curvature="ggn")
        np.testing.assert_allclose(E[s], E1[0])
        for a, b in zip(g + c, g1 + c1):
            np.testing.assert_allclose(a[s], b[0])


def test_bad_curvature_and_inputs():
    net, W, X, Y = _problem("gaussian", 2, "gaussian")
    with pytest.raises(ValueError, match="curvature"):
        nn.value_and_grad(net, W, X, Y, likelihood="gaussian", curvature="fisher")
    with pytest.raises(ValueError, match="likelihood"):
        nn.value_and_grad(net, W, X, Y, likelihood="poisson")
    with pytest.raises(ValueError, match="shape"):
        nn.check_X(net, X[:, :3])
    with pytest.raises(ValueError, match="labels"):
        nn.encode_targets(bb.MLP([4, 3], likelihood="multinomial_probit"), "categorical", X, np.full(7, 5))


def test_array_api_strict():
    xps = pytest.importorskip("array_api_strict")
    net, W, X, Y = _problem("categorical", 3, "multinomial_probit")
    E, g, c, _ = nn.value_and_grad(net, [xps.asarray(w) for w in W], xps.asarray(X), xps.asarray(Y),
                                   likelihood="categorical", curvature="ggn")
    E0, g0, c0, _ = nn.value_and_grad(net, W, X, Y, likelihood="categorical", curvature="ggn")
    np.testing.assert_allclose(np.asarray(E), E0)
    for a, b in zip(g + c, g0 + c0):
        np.testing.assert_allclose(np.asarray(a), b, rtol=1e-12, atol=1e-14)
