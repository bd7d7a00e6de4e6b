"""The joint HMC move's data term (:func:`blockbayes.kernels.frozen_noise_target`): the Numba kernel
against the Array-API reference and against finite differences, on every backend of the matrix
(the reference runs there; the kernel on NumPy), shared and per-chain targets, argument errors,
and the validation twins that patch it. Deterministic."""
from __future__ import annotations

import numpy as np
import pytest

from blockbayes import kernels

CASES = [((3, 4, 1), "relu"), ((3, 4, 3, 2), "leaky_relu"), ((3, 2, 2), "identity"), ((3, 2), "relu"),
         ((5, 70, 1), "relu"),           # wider than one 64-row block's units, n not a block multiple
         ((2, 3, 5, 4, 1), "relu")]     # three hidden layers


def _problem(widths, C=3, n=137, seed=0, shared_T=False):
    rng = np.random.default_rng(seed)
    P = sum(widths[m + 1] * (widths[m] + 1) for m in range(len(widths) - 1))
    H = sum(widths[1:-1])
    theta = rng.standard_normal((C, P))
    X = rng.standard_normal((n, widths[0]))
    T = rng.standard_normal((1 if shared_T else C, n, widths[-1]))
    if shared_T:
        T = np.broadcast_to(T, (C, n, widths[-1]))        # what output_targets hands the move
    xi = 0.1 * rng.standard_normal((C, n, H))
    eta = 0.1 * rng.standard_normal((C, n, H))
    dy = rng.uniform(0.1, 1.0, C)
    return theta, X, T, xi, eta, dy


def _sse_direct(theta, X, T, xi, eta, dy, widths, activation, slope):
    """sse by a plain NumPy forward pass written from the formula (an independent oracle)."""
    C = theta.shape[0]
    H, s, ho = np.broadcast_to(X, (C,) + X.shape), 0, 0
    f = {"relu": lambda z: np.maximum(z, 0.0), "leaky_relu": lambda z: np.where(z > 0, z, slope * z),
         "identity": lambda z: z}[activation]
    for m in range(len(widths) - 1):
        k, b = widths[m + 1], widths[m] + 1
        W = theta[:, s:s + k * b].reshape(C, k, b)
        s += k * b
        A = np.einsum("cnd,ckd->cnk", H, W[..., :-1]) + W[:, None, :, -1]
        if m == len(widths) - 2:
            return np.sum((T - A) ** 2, axis=(1, 2))
        H = f(A + xi[..., ho:ho + k]) + eta[..., ho:ho + k]
        ho += k


@pytest.mark.parametrize("widths, activation", CASES)
@pytest.mark.parametrize("shared_T", [False, True])
def test_cpu_kernel_matches_reference_and_finite_differences(widths, activation, shared_T):
    theta, X, T, xi, eta, dy = _problem(widths, shared_T=shared_T)
    args = (X, T, xi, eta, dy, widths)
    kw = dict(activation=activation, slope=0.2)
    sse_c, g_c = kernels.frozen_noise_gradient(theta, *args, impl="cpu", **kw)
    sse_r, g_r = kernels.frozen_noise_gradient(theta, *args, impl="reference", **kw)
    np.testing.assert_allclose(sse_c, sse_r, rtol=1e-12)
    np.testing.assert_allclose(g_c, g_r, rtol=1e-11, atol=1e-12 * np.abs(g_r).max())
    np.testing.assert_allclose(sse_c, _sse_direct(theta, *args, activation, 0.2), rtol=1e-12)
    # the gradient of −sse/(2Δ_y) by central differences along random directions
    f = lambda th: -kernels.frozen_noise_gradient(th, *args, impl="cpu", **kw)[0] / (2 * dy)
    rng = np.random.default_rng(1)
    for _ in range(3):
        E = rng.standard_normal(theta.shape)
        fd = (f(theta + 1e-6 * E) - f(theta - 1e-6 * E)) / 2e-6
        np.testing.assert_allclose(np.sum(g_c * E, axis=1), fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_prepared_target_is_reusable_and_per_chain():
    """One prepared target, called at several θ, gives what one-shot calls give; each chain's
    result depends only on its own θ, Δ_y, noises and target (chains are independent)."""
    widths = (4, 6, 2)
    theta, X, T, xi, eta, dy = _problem(widths, C=4)
    tgt = kernels.frozen_noise_target(X, T, xi, eta, dy, widths, impl="cpu")
    for s in (0.0, 0.3, -1.1):
        th = theta + s
        a, b = tgt(th)
        a1, b1 = kernels.frozen_noise_gradient(th, X, T, xi, eta, dy, widths, impl="cpu")
        np.testing.assert_array_equal(a, a1)
        np.testing.assert_array_equal(b, b1)
        a2, b2 = kernels.frozen_noise_gradient(th[2:3], X, T[2:3], xi[2:3], eta[2:3], dy[2:3], widths, impl="cpu")
        np.testing.assert_array_equal(a[2:3], a2)
        np.testing.assert_array_equal(b[2:3], b2)


def test_reference_on_every_backend(backend):
    """The dispatcher on the backend matrix (NumPy → the kernel, others → the reference), results in
    θ's namespace, device and dtype, equal to the float64 reference to the dtype's rounding."""
    widths = (3, 5, 4, 2)
    theta, X, T, xi, eta, dy = _problem(widths, C=2, n=40)
    want_sse, want_g = kernels.frozen_noise_gradient(theta, X, T, xi, eta, dy, widths, activation="leaky_relu",
                                                     slope=0.1, impl="reference")
    arr = [backend.asarray(a) for a in (theta, X, T, xi, eta, dy)]
    sse, g = kernels.frozen_noise_gradient(*arr, widths, activation="leaky_relu", slope=0.1)
    assert sse.dtype == backend.dtype and g.dtype == backend.dtype
    if backend.name != "cupy":
        assert sse.device == arr[0].device and g.device == arr[0].device
    tol = 1e-4 if backend.dtype_name == "float32" else 1e-11
    np.testing.assert_allclose(backend.to_numpy(sse), want_sse, rtol=tol)
    np.testing.assert_allclose(backend.to_numpy(g), want_g, rtol=tol, atol=tol * np.abs(want_g).max())


def test_per_chain_inputs_run_the_reference():
    """``X`` of shape (C, n, d) (inputs per chain) is not the kernel's layout: the dispatcher runs the
    reference, and the answer is the shared-input answer when the chains' inputs are equal."""
    widths = (3, 4, 1)
    theta, X, T, xi, eta, dy = _problem(widths, C=2, n=30)
    X3 = np.broadcast_to(X, (2,) + X.shape)
    a = kernels.frozen_noise_gradient(theta, X3, T, xi, eta, dy, widths)
    b = kernels.frozen_noise_gradient(theta, X, T, xi, eta, dy, widths, impl="cpu")
    np.testing.assert_allclose(a[0], b[0], rtol=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-11, atol=1e-12 * np.abs(b[1]).max())


@pytest.mark.parametrize("change, match", [
    (dict(widths=(3,)), "at least two"),
    (dict(theta=np.zeros((3, 5))), "theta must have shape"),
    (dict(X=np.zeros((137, 2))), "X must have shape"),
    (dict(T=np.zeros((3, 136, 1))), "T must have shape"),
    (dict(xi=np.zeros((3, 137, 5))), "xi must have shape"),
    (dict(delta_y=np.ones((3, 1))), "delta_y must have shape"),
    (dict(activation="tanh"), "activation must be one of"),
    (dict(activation="leaky_relu", slope=1.5), "slope"),
    (dict(impl="gpu"), "impl must be one of"),
])
def test_bad_arguments_raise(change, match):
    widths = (3, 4, 1)
    theta, X, T, xi, eta, dy = _problem(widths)
    kw = dict(theta=theta, X=X, T=T, xi=xi, eta=eta, delta_y=dy, widths=widths, activation="relu", slope=0.0,
              impl=None)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        kernels.frozen_noise_gradient(**kw)


def test_validation_twins_patch_the_production_path():
    """The HMC twins of the validation suite act on the code the move runs: ``hmc_no_prior``
    drops the prior from log π (not from the gradient), ``hmc_wrong_gradient`` changes the
    gradient but not log π. (Their catching is asserted in validation/test_gibbs_moves.py.)"""
    from _helpers import sine_data

    import blockbayes as bb
    from blockbayes import gibbs
    from blockbayes._backend import random as bbr
    from blockbayes.gibbs import hmc as H
    from blockbayes.gibbs.moves import frozen_noises
    from validation.gibbs_moves_checks import install_move_twin

    X, y = sine_data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta={"Z": 1e-2, "X": 1e-2, "y": 0.1})
    st = gibbs.init(bbr.key(1), net, X, y, num_chains=2, init="prior")
    T = gibbs.output_targets(net, y, None, 2, X)
    xi, eta = frozen_noises(st, net, X, 0)
    lam = H.prior_precision_vector(st, net)
    theta = H.flatten_weights(st.weights)

    def evaluate():
        return H.joint_target(net, X, T, xi, eta, lam, st.delta_y)(theta)

    lp, g, _ = evaluate()
    with install_move_twin("hmc_no_prior"):
        lp1, g1, _ = evaluate()
    np.testing.assert_allclose(lp1 - lp, 0.5 * np.sum(lam * theta ** 2, axis=1), rtol=1e-10)
    np.testing.assert_array_equal(g1, g)
    with install_move_twin("hmc_wrong_gradient"):
        lp2, g2, _ = evaluate()
    np.testing.assert_allclose(lp2, lp, rtol=1e-12)
    assert np.max(np.abs(g2 - g)) > 1e-3 * np.max(np.abs(g))
    lp3, g3, _ = evaluate()                     # and both twins are gone afterwards
    np.testing.assert_array_equal(g3, g)


# ---------------------------------------------------------------------------------------------
# the HMC mass product M⁻¹p: kernels.symmetric_operator
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("C, P", [(1, 1), (2, 3), (3, 4), (2, 7), (4, 9), (2, 131)])
def test_symmetric_operator_matches_the_dense_product(C, P):
    """Every row-block remainder (P mod 4 = 0..3) and the 4 × 4 diagonal blocks: the kernel, reading
    the upper triangle only, equals the dense product of the symmetric matrix to rounding; for a
    matrix whose lower triangle is garbage it applies the matrix mirrored from the upper one."""
    rng = np.random.default_rng(P)
    B = rng.standard_normal((C, P, P))
    A = B @ np.swapaxes(B, 1, 2) / P + np.eye(P)
    v = rng.standard_normal((C, P))
    want = np.einsum("cij,cj->ci", A, v)
    got = kernels.symmetric_operator(A, impl="cpu")(v)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13 * np.abs(want).max())
    np.testing.assert_allclose(kernels.symmetric_operator(A, impl="reference")(v), want, rtol=1e-13)
    U = np.triu(A) + np.tril(rng.standard_normal((C, P, P)), -1)          # lower triangle never read
    np.testing.assert_allclose(kernels.symmetric_operator(U, impl="cpu")(v), got, rtol=1e-13,
                               atol=1e-14 * np.abs(want).max())


def test_symmetric_operator_on_every_backend(backend):
    rng = np.random.default_rng(0)
    B = rng.standard_normal((2, 6, 6))
    A = B @ np.swapaxes(B, 1, 2)
    v = rng.standard_normal((2, 6))
    want = np.einsum("cij,cj->ci", A, v)
    op = kernels.symmetric_operator(backend.asarray(A))
    out = op(backend.asarray(v))
    assert out.dtype == backend.dtype
    tol = 1e-5 if backend.dtype_name == "float32" else 1e-12
    np.testing.assert_allclose(backend.to_numpy(out), want, rtol=tol, atol=tol * np.abs(want).max())


def test_symmetric_operator_bad_arguments():
    with pytest.raises(ValueError, match="A must have shape"):
        kernels.symmetric_operator(np.zeros((2, 3, 4)))
    op = kernels.symmetric_operator(np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="v must have shape"):
        op(np.zeros((2, 4)))


# ---------------------------------------------------------------------------------------------
# precision="float32": the interior kicks and drifts of the HMC move's mixed precision
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("widths, activation", CASES)
@pytest.mark.parametrize("impl", ["cpu", "reference"])
def test_float32_target_is_the_float64_one_to_float32_rounding(widths, activation, impl):
    """The float32 pass (data, noises and theta rounded once) against the float64 reference:
    gradient to ~1e-6 of its scale (float32 rounding grows like sqrt(n) over the row sums, n = 137),
    sse to ~1e-6 relative; returned in theta's dtype. A float64 pass read as float32 would also pass
    this, so the speed path is checked to really compute in float32 (its errors are not zero)."""
    theta, X, T, xi, eta, dy = _problem(widths)
    args = (X, T, xi, eta, dy, widths)
    kw = dict(activation=activation, slope=0.2)
    sse64, g64 = kernels.frozen_noise_gradient(theta, *args, impl="reference", **kw)
    sse32, g32 = kernels.frozen_noise_gradient(theta, *args, impl=impl, precision="float32", **kw)
    assert g32.dtype == np.float64 and sse32.dtype == np.float64
    scale = np.abs(g64).max()
    np.testing.assert_allclose(g32, g64, rtol=0, atol=2e-5 * scale)
    np.testing.assert_allclose(sse32, sse64, rtol=2e-5)
    assert np.abs(g32 - g64).max() > 1e-12 * scale                 # it did round to float32


def test_precision_argument_is_checked():
    theta, X, T, xi, eta, dy = _problem((3, 4, 1))
    with pytest.raises(ValueError, match="precision must be"):
        kernels.frozen_noise_target(X, T, xi, eta, dy, (3, 4, 1), precision="half")
    with pytest.raises(ValueError, match="precision must be"):
        kernels.symmetric_operator(np.eye(3)[None], precision=np.float32)


@pytest.mark.parametrize("impl", ["cpu", "reference"])
@pytest.mark.parametrize("P", [3, 9, 131])
def test_symmetric_operator_float32_storage(impl, P):
    """``precision="float32"``: the product of the matrix rounded to float32 (the kernel multiplies
    its entries by the float64 ``v`` and sums in float64, so it equals the float64 product of the
    rounded matrix to float64 rounding); returned in ``A``'s dtype."""
    rng = np.random.default_rng(P)
    B = rng.standard_normal((2, P, P))
    A = B @ np.swapaxes(B, 1, 2) / P + np.eye(P)
    v = rng.standard_normal((2, P))
    got = kernels.symmetric_operator(A, impl=impl, precision="float32")(v)
    assert got.dtype == np.float64
    want = np.einsum("cij,cj->ci", A, v)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
    if impl == "cpu":
        rounded = np.einsum("cij,cj->ci", A.astype(np.float32).astype(np.float64), v)
        np.testing.assert_allclose(got, rounded, rtol=1e-12, atol=1e-13 * np.abs(want).max())


# ---------------------------------------------------------------------------------------------
# the noise-free network: kernels.network_target (the Gaussian MAP objective's data term)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("widths, activation", CASES)
def test_network_target_is_the_noise_free_pass(widths, activation):
    """sse against the direct NumPy forward pass with zero noises, G = −∇sse/2 against the frozen-noise
    reference at zero noises and Δ_y = 1 and against central differences; any member count per
    call (the line search evaluates subsets), each member's numbers independent of the others."""
    theta, X, T, xi, eta, dy = _problem(widths, C=4)
    Y = T[0]
    z = np.zeros_like(xi)
    tgt = kernels.network_target(X, Y, widths, activation=activation, slope=0.2)
    sse, G = tgt(theta)
    want = _sse_direct(theta, X, np.broadcast_to(Y, T.shape), z, z, dy, widths, activation, 0.2)
    np.testing.assert_allclose(sse, want, rtol=1e-12)
    _, g_ref = kernels.frozen_noise_gradient(theta, X, np.broadcast_to(Y, T.shape), z, z, np.ones(4), widths,
                                             activation=activation, slope=0.2, impl="reference")
    np.testing.assert_allclose(G, g_ref, rtol=1e-11, atol=1e-12 * np.abs(g_ref).max())
    sse_r, G_r = kernels.network_target(X, Y, widths, activation=activation, slope=0.2, impl="reference")(theta)
    np.testing.assert_allclose(sse_r, sse, rtol=1e-12)
    np.testing.assert_allclose(G_r, G, rtol=1e-11, atol=1e-12 * np.abs(G).max())
    s1, G1 = tgt(theta[1:3])
    np.testing.assert_array_equal(s1, sse[1:3])
    np.testing.assert_array_equal(G1, G[1:3])
    rng = np.random.default_rng(5)
    u = rng.standard_normal(theta.shape)
    h = 1e-6
    fd = (tgt(theta + h * u)[0] - tgt(theta - h * u)[0]) / (2 * h)
    np.testing.assert_allclose(-2.0 * np.sum(G * u, axis=1), fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())


def test_network_target_bad_arguments():
    theta, X, T, xi, eta, dy = _problem((3, 4, 1))
    with pytest.raises(ValueError, match="Y must have shape"):
        kernels.network_target(X, T, (3, 4, 1))
    with pytest.raises(ValueError, match="X must have shape"):
        kernels.network_target(X[:, :2], T[0], (3, 4, 1))
    with pytest.raises(ValueError, match="theta must have shape"):
        kernels.network_target(X, T[0], (3, 4, 1))(theta[:, :-1])
