"""Unit tests of the unit prior-redraw move (:mod:`blockbayes.gibbs.redraw`): frozen noises and
latent consistency after the move, the log acceptance against a direct forward pass, dead units
redrawn and pinned units kept, run integration and errors. Deterministic; exactness is tested in
validation/test_gibbs_moves.py (Geweke, tiny-net grid, broken twins)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import sine_data

import blockbayes as bb
from blockbayes import gibbs
from blockbayes._backend import random as bbr
from blockbayes.gibbs import redraw as R
from blockbayes.gibbs.diagnostics import ConvergenceWarning
from blockbayes.gibbs.moves import forward_with_noises, frozen_noises
from blockbayes.model import affine


@pytest.mark.parametrize("widths, activation, dy", [([3, 4, 1], "relu", 0.1), ([3, 4, 3, 2], "leaky_relu", 0.1),
                                                    ([3, 4, 3, 2], "leaky_relu", 1e3)])
def test_noises_stay_frozen_and_latents_follow(widths, activation, dy):
    """After the move the standardised noises of every hidden layer are those before it, rows of
    the redrawn layers changed only where accepted, and the other layers are untouched."""
    X, y = sine_data()
    y = np.repeat(y, widths[-1], axis=1)
    net = bb.MLP(widths, activation, slope=0.2, prior_prec=1.0, delta={"Z": 1e-2, "X": 1e-2, "y": dy})
    C = 3
    st = gibbs.init(bbr.key(1), net, X, y, num_chains=C, init="prior")
    mv = R.UnitRedrawMove(proposals=3)
    ms = mv.init(st, net, X, y)
    new, ms2 = mv.step(bbr.key(2), ms, st, net, X, y)
    xi0, eta0 = frozen_noises(st, net, X, 0)
    xi1, eta1 = frozen_noises(new, net, X, 0)
    for a, b in zip(xi0 + eta0, xi1 + eta1):
        np.testing.assert_allclose(a, b, atol=1e-10)
    np.testing.assert_array_equal(new.weights[-1], st.weights[-1])
    changed = [np.any(new.weights[l] != st.weights[l], axis=-1) for l in range(net.num_layers - 1)]
    assert any(np.any(c) for c in changed)          # at dy = 1e3 nearly everything is accepted
    for j, l in enumerate(ms2.layers):
        assert ms2.unit_accept[j].shape == (C, net.widths[l + 1])
        # a row that changed had an accepted proposal
        assert np.all(ms2.unit_accept[j][changed[l]] > 0)
    assert ms2.sweeps == 1 and ms2.sampled == 1


def test_log_accept_matches_direct_forward():
    """The incremental (rank-one) output update gives the same sum of squares as a full pass."""
    X, y = sine_data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta={"Z": 1e-2, "X": 1e-2, "y": 1e3})
    st = gibbs.init(bbr.key(1), net, X, y, num_chains=2, init="prior")
    new, rate = R.unit_redraws(bbr.key(5), st, net, X, np.broadcast_to(y, (2,) + y.shape), 0, 4)
    xi, eta = frozen_noises(new, net, X, 0)
    pre, post, out = forward_with_noises(X, new.weights, net, xi, eta)
    np.testing.assert_allclose(pre[0], new.pre[0], atol=1e-12)
    np.testing.assert_allclose(out, affine(new.post[0], new.weights[1]), atol=1e-12)
    assert rate.shape == (2, 4) and np.all((rate >= 0) & (rate <= 1))


def test_dead_unit_redrawn_pinned_unit_kept():
    """Output weight 0: the likelihood does not see the unit, every proposal is accepted. A unit
    that carries the fit at tiny Δ_y: every prior proposal is rejected."""
    rng = np.random.default_rng(0)
    n, d = 200, 3
    X = rng.standard_normal((n, d))
    w = np.array([1.0, -0.5, 0.3, 0.1])
    y = (np.maximum(X @ w[:-1] + w[-1], 0) * 2.0)[:, None]
    net = bb.MLP([d, 2, 1], "relu", prior_prec=1.0, delta={"Z": 1e-4, "X": 1e-4, "y": 1e-4})
    W1 = np.stack([w, np.array([0.2, 0.2, 0.2, 0.0])])[None]
    W2 = np.array([[[2.0, 0.0, 0.0]]])                   # unit 0 live, unit 1 dead
    st = gibbs.init(bbr.key(1), net, X, y, num_chains=1, init=(W1, W2))
    new, rate = R.unit_redraws(bbr.key(3), st, net, X, y[None], 0, 20)
    np.testing.assert_array_equal(rate, [[0.0, 1.0]])
    np.testing.assert_array_equal(new.weights[0][0, 0], W1[0, 0])
    assert np.all(new.weights[0][0, 1] != W1[0, 1])


def test_run_with_redraw_move():
    X, y = sine_data()
    net = bb.MLP([3, 4, 2, 1], "relu", prior_prec=1.0, delta=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = gibbs.run(net, X, y, num_samples=5, num_warmup=3, num_chains=2, seed=0, init="zero",
                        learn_noise=True, learn_prior=True, progress=False,
                        moves=R.UnitRedrawMove(proposals=2, layers=(1,)))
    s = res.config["moves"]
    assert s["move"] == "unit prior redraw" and s["layers"] == [1] and 0.0 <= s["accept"][0] <= 1.0
    assert np.all(np.isfinite(res.log_joint))


def test_errors():
    X, y = sine_data()
    net = bb.MLP([3, 4, 1], "relu", prior_prec=1.0, delta=1e-2)
    st = gibbs.init(bbr.key(1), net, X, y, num_chains=1, init="prior")
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="proposals"):
            R.UnitRedrawMove(proposals=bad).init(st, net, X, y)
    with pytest.raises(ValueError, match="redrawn layers"):
        R.UnitRedrawMove(layers=(1,)).init(st, net, X, y)
    with pytest.raises(ValueError, match="hidden layer"):
        R.UnitRedrawMove().validate(bb.MLP([3, 1], "relu", prior_prec=1.0, delta=1e-2))
    pnet = bb.MLP([3, 4, 1], "relu", likelihood="probit", prior_prec=1.0, delta=1e-2)
    with pytest.raises(ValueError, match="gaussian"):
        R.UnitRedrawMove().validate(pnet)
