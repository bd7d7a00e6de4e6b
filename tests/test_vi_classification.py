"""Rao–Blackwellised block VI with the probit likelihoods (docs/block_vi_probit.md).

The output rows are Rao–Blackwellised over the Gibbs chain's latent utilities ``U``. The check is
exact, not asymptotic: at the end of a sweep a layer's weights were drawn from the very conditional
``N(m^{(s)}, P^{(s)-1})`` whose mean ``m^{(s)}`` the Rao–Blackwell statistics accumulate, whenever no
block that conditional depends on was redrawn after them (the output layer of a net without hidden
layers; the first layer of any net). Then ``d_s = w_s − m^{(s)}`` is a martingale difference with
conditional law ``N(0, P^{-1})``; ``P`` depends on ``X`` only for these layers, so
``Σ_s d_s ~ N(0, N P^{-1})`` exactly and ``z = (mean_s w_s − m̄) / sqrt(diag(P^{-1}) / N)`` is
standard normal per coordinate, however well the chain mixes. Threshold ``max |z| < 4.5`` over
``k`` coordinates: false-failure probability ``≤ k · 6.8e-6`` (k ≤ 12 here: ≤ 1e-4).
The broken twin Rao–Blackwellises the output rows against the one-hot labels instead of ``U``
(what ``onehot_gaussian`` would do): caught with ``max |z|`` in the tens.
"""
from __future__ import annotations

import numpy as np
import pytest

import blockbayes as bb
from blockbayes.vi import rao_blackwell

Z_MAX = 4.5


pytestmark = pytest.mark.usefixtures("one_blas_thread")   # BLAS on one thread (conftest.py)


def _data(n=40, d=2, K=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    W = rng.standard_normal((d, K)) * 2.0
    y = np.argmax(X @ W + rng.standard_normal((n, K)), axis=1).astype(np.int64)
    return X, y


def _z(res, layer):
    g = res.extras["samples"].weights[layer]                  # (C, S, d_out, k)
    N = g.shape[0] * g.shape[1]
    emp = g.reshape((N,) + g.shape[2:]).mean(0)
    m = res.means[layer][0]
    var = np.diagonal(res.extras["conditional_covs"][layer][0])  # (k,): P^{-1} is shared by the rows
    return (emp - m) / np.sqrt(var[None, :] / N)


def _run(net, X, y, **kw):
    return rao_blackwell.run(net, X, y, num_samples=150, num_warmup=10, num_chains=2, seed=3, progress=False,
                             tempering="off", **kw)


@pytest.mark.parametrize("lik, K", [("multinomial_probit", 3), ("probit", 2)])
def test_output_rows_are_rao_blackwellised_over_the_utilities(lik, K):
    X, y = _data(K=K)
    net = bb.MLP([2, 1 if lik == "probit" else K], "identity", likelihood=lik, prior_prec=[(1.0, 1.0)])
    res = _run(net, X, y)
    z = _z(res, 0)
    print(lik, "max |z|", np.max(np.abs(z)))
    assert np.max(np.abs(z)) < Z_MAX, z
    assert res.likelihood == lik and res.is_classifier
    p = res.predict_proba(X[:5], num_samples=20)
    assert p.shape == (5, K) and np.allclose(p.sum(1), 1.0)
    # the covariance is at least the conditional one (Rao–Blackwell adds Cov_s(m) >= 0)
    diff = res.covs[0][0] - res.extras["conditional_covs"][0][0][None]
    assert np.all(np.linalg.eigvalsh(diff) > -1e-12)


def test_first_layer_of_a_hidden_net_and_the_predictive():
    X, y = _data(n=50, K=3, seed=1)
    net = bb.MLP([2, 4, 3], "relu", likelihood="multinomial_probit", delta={"Z": 0.05, "X": 0.05})
    res = _run(net, X, y)
    z = _z(res, 0)
    assert np.max(np.abs(z)) < Z_MAX, z
    p = res.predict_proba(X[:5], num_samples=20)
    assert p.shape == (5, 3) and np.allclose(p.sum(1), 1.0)


def test_broken_twin_onehot_targets_is_caught(monkeypatch):
    """Rao–Blackwellising the output rows against the one-hot labels, not ``U``: caught."""
    from blockbayes.gibbs import conditionals as C
    from blockbayes.predictive import onehot

    def wrong_targets(net, y, latent, Cn, like):
        if latent is None:
            return C.output_targets(net, y, latent, Cn, like)
        oh = onehot(y, net.d_out, like.dtype)
        return np.broadcast_to(oh[None], (Cn,) + oh.shape)

    monkeypatch.setattr(rao_blackwell, "output_targets", wrong_targets)
    X, y = _data(K=3)
    net = bb.MLP([2, 3], "identity", likelihood="multinomial_probit", prior_prec=[(1.0, 1.0)])
    z = _z(_run(net, X, y), 0)
    print("broken twin max |z|", np.max(np.abs(z)))
    assert np.max(np.abs(z)) > 2 * Z_MAX, z


def test_classifier_options_are_checked():
    X, y = _data(K=3)
    net = bb.MLP([2, 3], "identity", likelihood="multinomial_probit")
    with pytest.raises(ValueError, match="CAVI is Gaussian-only"):
        rao_blackwell.run(net, X, y, init="cavi", progress=False)
    with pytest.raises(ValueError, match="learn_noise"):
        rao_blackwell.run(net, X, y, learn_noise=True, progress=False)
    with pytest.raises(TypeError, match="label"):
        rao_blackwell.run(net, X, y.astype(np.float64) + 0.5, progress=False)


@pytest.mark.parametrize("name", ["vi_block", "gibbs"])
def test_evaluate_adapters_classify_with_fewer_nodes(name):
    """vi_block runs on classification through the evaluate registry; both adapters take ``nodes``."""
    from blockbayes import evaluate as ev
    from blockbayes.evaluate import Arch

    X, y = _data(n=60, K=3, seed=2)
    m = ev.get_method(name)
    assert "classification" in m.tasks
    arch = Arch(d_in=2, hidden=(4,), task="classification", n_classes=3)
    small = dict(init={"map_shared": {"max_iter": 20}}, nodes=8)
    small.update(dict(options={"num_warmup": 5, "num_samples": 5, "num_chains": 1}, num_pred_samples=5)
                 if name == "vi_block" else dict(num_warmup=5, num_samples=5, num_chains=1, thin=1))
    pred = m.fit(arch, X, y, seed=0, **m.options(small))
    p = pred.predict_proba(X[:7])
    assert p.shape == (7, 3) and np.all(p > 0) and np.allclose(p.sum(1), 1.0)
    with pytest.raises(ValueError, match="nodes"):
        m.fit(arch, X, y, seed=0, **m.options({**small, "nodes": 0}))
