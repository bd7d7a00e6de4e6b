"""Invariance gap and collapsed units (blockbayes.vi.symmetry) against a brute-force oracle."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

import blockbayes as bb
from blockbayes.vi import VIResult, symmetry


def _result(M1, V1, M2, V2, kind="diag"):
    H, k = M1.shape
    net = bb.MLP([k - 1, H, M2.shape[0]])
    return VIResult(net=net, method="test", means=(M1[None], M2[None]), covs=(V1[None], V2[None]), cov_kind=kind,
                    delta_y=np.ones(1), model="standard")


def _oracle(res, W1, W2, permute_out=True):
    """log q(w) − log q̄(w) per draw by explicit permutation of the weights (scipy densities)."""
    H = res.net.widths[1]
    S1, S2 = res.row_covariances(0)[0], res.row_covariances(1)[0]
    M1, M2 = res.means[0][0], res.means[1][0]

    def logq(a, b):
        out = sum(stats.multivariate_normal(M1[j], S1[j]).logpdf(a[j]) for j in range(H))
        return out + sum(stats.multivariate_normal(M2[r], S2[r]).logpdf(b[r]) for r in range(b.shape[0]))

    gaps = []
    for a, b in zip(W1, W2):
        vals = []
        for p in itertools.permutations(range(H)):
            p = list(p)
            bp = b[:, p + [H]] if permute_out else b
            vals.append(logq(a[p], bp))
        gaps.append(logq(a, b) - (np.logaddexp.reduce(vals) - math.lgamma(H + 1)))
    return np.array(gaps)


def _random_q(rng, H=3, d=2, C=2, spread=1.0, kind="diag"):
    M1 = spread * rng.normal(size=(H, d + 1))
    M2 = spread * rng.normal(size=(C, H + 1))
    if kind == "diag":
        return _result(M1, rng.uniform(0.2, 1.0, (H, d + 1)), M2, rng.uniform(0.2, 1.0, (C, H + 1)))
    A1 = rng.normal(size=(H, d + 1, d + 1))
    A2 = rng.normal(size=(C, H + 1, H + 1))
    return _result(M1, A1 @ A1.transpose(0, 2, 1) / 3 + 0.2 * np.eye(d + 1), M2,
                   A2 @ A2.transpose(0, 2, 1) / 3 + 0.2 * np.eye(H + 1), kind="row")


@pytest.mark.parametrize("kind", ["diag", "row"])
def test_gap_matches_brute_force_oracle(kind):
    rng = np.random.default_rng(0)
    res = _random_q(rng, kind=kind)
    est = symmetry.invariance_gap(res, num_samples=30, seed=4)
    W1, W2 = res.sample(30, seed=4, components=0)
    np.testing.assert_allclose(est.gap, _oracle(res, W1, W2).mean(), rtol=1e-9)
    assert 0.0 <= est.gap <= est.log_group + 1e-12


def test_broken_twin_without_outgoing_permutation_is_caught():
    """Units with identical incoming rows but distinct outgoing weights: the correct gap is
    ≈ log 3!, a twin that forgets to permute the outgoing weights reports ≈ 0."""
    rng = np.random.default_rng(1)
    M1 = np.tile(rng.normal(size=(1, 3)), (3, 1))
    M2 = np.array([[-4.0, 0.0, 4.0, 0.0]])
    res = _result(M1, np.full((3, 3), 0.5), M2, np.full((1, 4), 0.01))
    est = symmetry.invariance_gap(res, num_samples=20, seed=0)
    W1, W2 = res.sample(20, seed=0, components=0)
    twin = _oracle(res, W1, W2, permute_out=False).mean()
    assert abs(est.gap - math.log(6)) < 1e-6
    assert abs(twin - est.gap) > 1.0


def test_invariant_q_has_zero_gap_and_separated_q_has_log_group():
    rng = np.random.default_rng(2)
    row = rng.normal(size=(1, 4))
    res = _result(np.tile(row, (4, 1)), np.full((4, 4), 0.3), np.array([[0.5, 0.5, 0.5, 0.5, 0.1]]),
                  np.full((1, 5), 0.2))
    assert abs(symmetry.invariance_gap(res, num_samples=10).gap) < 1e-10
    far = _random_q(rng, H=4, d=3, C=1, spread=50.0)
    est = symmetry.invariance_gap(far, num_samples=10)
    assert abs(est.gap - math.lgamma(5)) < 1e-6


def test_collapsed_share():
    net = bb.MLP([2, 3, 1])
    lam1, lam2 = net.lam_w
    M1 = np.array([[3.0, -2.0, 0.5], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    V1 = np.array([[1e-3] * 3, [1 / lam1] * 3, [1 / lam1] * 3])
    M2 = np.array([[2.0, 0.0, 0.0, 0.1]])
    V2 = np.array([[1e-3, 1 / lam2, 1 / lam2, 1e-3]])
    res = VIResult(net=net, method="t", means=(M1[None], M2[None]), covs=(V1[None], V2[None]), cov_kind="diag",
                   delta_y=np.ones(1), model="standard")
    assert symmetry.collapsed_share(res) == pytest.approx(2 / 3)
    assert symmetry.collapsed_share(res, part="both") == pytest.approx(2 / 3)
    k = symmetry.unit_kl(res)
    assert k[1] == pytest.approx(0.0, abs=1e-12) and k[0] > 1.0
    # a pruned unit: incoming row at the prior, outgoing weight pinned at 0 with a small variance
    V2b = V2.copy()
    V2b[0, 1] = 0.04 / lam2
    res2 = VIResult(net=net, method="t", means=(M1[None], M2[None]), covs=(V1[None], V2b[None]), cov_kind="diag",
                    delta_y=np.ones(1), model="standard")
    assert symmetry.collapsed_share(res2) == pytest.approx(2 / 3)
    assert symmetry.unit_kl(res2, part="out")[1] > 1.0
    with pytest.raises(ValueError, match="part"):
        symmetry.unit_kl(res2, part="rows")


def test_errors():
    rng = np.random.default_rng(3)
    with pytest.raises(ValueError, match="enumerate"):
        symmetry.invariance_gap(_random_q(rng, H=9))
    net = bb.MLP([2, 3, 3, 1])
    res = VIResult(net=net, method="t", means=tuple(np.zeros((1,) + s) for s in net.weight_shapes()),
                   covs=tuple(np.ones((1,) + s) for s in net.weight_shapes()), cov_kind="diag", delta_y=np.ones(1))
    with pytest.raises(ValueError, match="one hidden layer"):
        symmetry.invariance_gap(res)
