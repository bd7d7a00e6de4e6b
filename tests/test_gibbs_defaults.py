"""What ``gibbs.run(net, X, y)`` does when the caller sets nothing (design note 60).

The defaults: ``num_samples=1000``, ``num_warmup = num_samples · thin``, ``num_chains=4``, and
``learn_noise`` learned for a Gaussian likelihood whose ``Δ_y`` the caller did not set
(``MLP.delta_y_given``). The measured case for them is benchmarks/gibbs_defaults.py
(docs/gibbs-moves.md §6, "Session 21").
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import gibbs
from blockbayes.gibbs.diagnostics import ConvergenceWarning
from blockbayes.gibbs.sampler import resolve_defaults
from blockbayes.inputs import DataScaleWarning, warn_if_unscaled
from blockbayes.model import DEFAULT_DELTA, resolve_learn_noise
from blockbayes.posterior import net_from_dict, net_to_dict


def _data(n=120, d=2, noise_sd=0.5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] + noise_sd * rng.normal(size=n)
    return X, y


# ------------------------------------------------------------------ MLP.delta_y_given


@pytest.mark.parametrize("delta, given, dy", [
    (None, False, DEFAULT_DELTA),
    (1e-2, True, 1e-2),
    ({"Z": 1e-4, "X": 1e-4}, False, DEFAULT_DELTA),
    ({"y": 0.3}, True, 0.3),
    ({"Z": 1e-4, "y": DEFAULT_DELTA}, True, DEFAULT_DELTA),   # written down, even if equal to the default
])
def test_delta_y_given_records_whether_the_caller_set_the_noise(delta, given, dy):
    net = bb.MLP([3, 4, 1]) if delta is None else bb.MLP([3, 4, 1], delta=delta)
    assert net.delta_y_given is given
    assert net.delta_y == dy
    back = net_from_dict(net_to_dict(net))              # a saved result's net keeps it
    assert back.delta_y_given is given and back == net


def test_default_delta_is_the_same_model_as_the_explicit_value():
    """The flag only picks a sampler default; the model (and equality, hashing) is the same."""
    a, b = bb.MLP([3, 4, 1]), bb.MLP([3, 4, 1], delta=DEFAULT_DELTA)
    assert a == b and hash(a) == hash(b)
    assert (a.delta_z, a.delta_x, a.delta_y) == (b.delta_z, b.delta_x, b.delta_y)
    assert a.replace(prior_prec=2.0).delta_y_given is False      # replace keeps "not given"


@pytest.mark.parametrize("lik, widths", [("probit", [3, 4, 1]), ("multinomial_probit", [3, 4, 3])])
def test_probit_noise_counts_as_given(lik, widths):
    net = bb.MLP(widths, likelihood=lik)
    assert net.delta_y == 1.0 and net.delta_y_given
    assert resolve_learn_noise(net, None) is False


# ------------------------------------------------------------------ the resolution rules


def test_learn_noise_rule():
    assert resolve_learn_noise(bb.MLP([3, 4, 1]), None) is True
    assert resolve_learn_noise(bb.MLP([3, 4, 1], delta=0.1), None) is False
    assert resolve_learn_noise(bb.MLP([3, 4, 2], likelihood="onehot_gaussian"), None) is False
    assert resolve_learn_noise(bb.MLP([3, 4, 1]), False) is False
    assert resolve_learn_noise(bb.MLP([3, 4, 1], delta=0.1), np.bool_(True)) is True
    for bad in (1, 0, "yes", 1.0):
        with pytest.raises(TypeError, match="learn_noise"):
            resolve_learn_noise(bb.MLP([3, 4, 1]), bad)


@pytest.mark.parametrize("S, thin, W, expected", [(1000, 1, None, 1000), (50, 3, None, 150), (50, 3, 7, 7),
                                                  (50, 1, 0, 0)])
def test_num_warmup_rule(S, thin, W, expected):
    w, _ = resolve_defaults(bb.MLP([3, 4, 1]), num_samples=S, thin=thin, num_warmup=W, learn_noise=None)
    assert w == expected


def test_bad_learn_noise_raises_before_any_work():
    X, y = _data()
    with pytest.raises(TypeError, match="learn_noise"):
        gibbs.run(bb.MLP([2, 4, 1]), X, y, num_samples=2, learn_noise="auto", progress=False)


# ------------------------------------------------------------------ gibbs.run and vi.run


def _quiet_run(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gibbs.run(*args, progress=False, **kw)


def test_run_with_nothing_set_uses_the_documented_defaults():
    """``gibbs.run(net, X, y)`` literally: 4 chains x (1000 + 1000) sweeps, learned noise, the
    joint HMC move added by ``moves="auto"`` (tempering is off for this n: its ladder is long)."""
    X, y = _data(n=150)
    res = _quiet_run(bb.MLP([2, 4, 1]), X, y, seed=0)
    cfg = res.config
    assert (cfg["num_samples"], cfg["num_warmup"], cfg["num_chains"], cfg["thin"]) == (1000, 1000, 4, 1)
    assert cfg["learn_noise"] is True
    assert res.weights[0].shape == (4, 1000, 4, 3)
    assert cfg["moves_auto"]["chosen"] == "JointHMCMove"
    d = np.asarray(res.delta_y)
    assert d.shape == (4, 1000) and np.ptp(d) > 0                 # the noise moves


def test_explicit_values_are_kept():
    X, y = _data()
    res = _quiet_run(bb.MLP([2, 4, 1], delta=0.2), X, y, num_samples=5, num_warmup=3, num_chains=2, seed=0)
    cfg = res.config
    assert (cfg["num_samples"], cfg["num_warmup"], cfg["num_chains"], cfg["learn_noise"]) == (5, 3, 2, False)
    assert np.all(np.asarray(res.delta_y) == 0.2)                 # the written-down noise is kept
    res = _quiet_run(bb.MLP([2, 4, 1]), X, y, num_samples=5, num_warmup=3, num_chains=2, seed=0, learn_noise=False)
    assert np.all(np.asarray(res.delta_y) == DEFAULT_DELTA)


def test_default_noise_is_learned_from_the_data():
    """Data with noise variance 0.25 and ``bb.MLP(widths)`` (Δ_y left at 1e-3): the default run's
    posterior mean of Δ_y lands in [0.125, 0.5]. Measured: posterior mean 0.264–0.267 over seeds
    0–2, posterior sd 0.027–0.030 (relative ~ sqrt(2/n) with n = 300), so the band's edges are
    ≥ 4.9 posterior sds away, and the estimate's Monte Carlo spread over seeds (< 0.005) would
    have to be exceeded 25-fold for a reseeded run to fail (false-failure bound far below 1e-6).
    The broken variant — the old default, the noise fixed at the MLP's 1e-3 — is checked to land
    outside the band."""
    X, y = _data(n=300, noise_sd=0.5, seed=3)
    net = bb.MLP([2, 4, 1])
    res = _quiet_run(net, X, y, num_samples=100, seed=1)
    assert res.config["learn_noise"] is True and res.config["num_warmup"] == 100
    m = float(np.mean(np.asarray(res.delta_y)))
    assert 0.125 <= m <= 0.5, m
    twin = _quiet_run(net, X, y, num_samples=100, seed=1, learn_noise=False)     # the pre-note-60 default
    mt = float(np.mean(np.asarray(twin.delta_y)))
    assert not 0.125 <= mt <= 0.5, mt


def test_vi_run_follows_the_same_noise_rule():
    X, y = _data(n=80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = bb.vi.run(bb.MLP([2, 3, 1]), X, y, num_samples=5, num_warmup=5, num_chains=1, cavi_iters=5,
                      cavi_restarts=1, progress=False, seed=0)
        assert r.config["learn_noise"] is True
        r = bb.vi.run(bb.MLP([2, 3, 1], delta=0.1), X, y, num_samples=5, num_warmup=5, num_chains=1,
                      cavi_iters=5, cavi_restarts=1, progress=False, seed=0)
        assert r.config["learn_noise"] is False


# ------------------------------------------------------------------ the data-scale warning


def _scale_warnings(fn):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fn()
    return [w for w in rec if issubclass(w.category, DataScaleWarning)]


def test_unscaled_targets_warn_at_the_users_call():
    X, y = _data(n=60)
    kw = dict(num_samples=2, num_warmup=0, num_chains=1, progress=False, diagnose=False, init="prior")
    got = _scale_warnings(lambda: gibbs.run(bb.MLP([2, 3, 1]), X, 30.0 + 10.0 * y, **kw))
    assert len(got) == 1 and got[0].filename == __file__
    assert "y has root mean square" in str(got[0].message) and "standardise" in str(got[0].message)
    got = _scale_warnings(lambda: bb.vi.run(bb.MLP([2, 3, 1]), X, 30.0 + 10.0 * y, num_samples=2, num_warmup=0,
                                            num_chains=1, cavi_iters=2, cavi_restarts=1, progress=False))
    # the CAVI start checks the same data again: the same message from the same (user's) line, which the
    # default warning filter shows once
    assert got and {(w.filename, w.lineno, str(w.message)) for w in got} == {(__file__, got[0].lineno,
                                                                             str(got[0].message))}
    assert not _scale_warnings(lambda: gibbs.run(bb.MLP([2, 3, 1]), X, y, **kw))       # about unit scale


def test_every_family_warns_through_the_input_gate():
    """The check lives in ``inputs.prepare``: MAP fits (and so ensembles and Laplace) warn too."""
    X, y = _data(n=60)
    got = _scale_warnings(lambda: bb.laplace.map_fit(bb.MLP([2, 3, 1]), X, 30.0 + 10.0 * y, max_iter=3, seed=0))
    assert got and {(w.filename, str(w.message)) for w in got} == {(__file__, str(got[0].message))}
    lab = (y > 0).astype(np.int64)
    assert not _scale_warnings(lambda: bb.laplace.map_fit(bb.MLP([2, 3, 1], likelihood="probit"), X, lab,
                                                          max_iter=3, seed=0))


@pytest.mark.parametrize("case, warns", [("std", False), ("y_tiny", True), ("y_offset", True), ("x_column", True),
                                         ("x_small", False)])
def test_scale_rule(case, warns):
    X, y = _data(n=60)
    y = (y - y.mean()) / y.std()
    if case == "y_tiny":
        y = 0.01 * y                          # e.g. Naval's raw targets
    elif case == "y_offset":
        y = y + 20.0                          # unit spread, large mean: the output bias's prior cannot reach it
    elif case == "x_column":
        X = X.copy()
        X[:, 1] = 400.0 + 170.0 * X[:, 1]     # e.g. Boston's TAX column
    elif case == "x_small":
        X = 0.01 * X                          # small inputs are not flagged (the first layer scales up freely)
    net = bb.MLP([2, 3, 1])
    got = _scale_warnings(lambda: warn_if_unscaled(net, X, y[:, None]))
    assert bool(got) is warns
    if case == "x_column":
        assert "input column 1" in str(got[0].message)


def test_class_labels_are_not_checked():
    X, y = _data(n=60)
    lab = (y > 0).astype(np.int64) * 7          # labels are codes, not magnitudes
    net = bb.MLP([2, 3, 8], likelihood="multinomial_probit")
    assert not _scale_warnings(lambda: warn_if_unscaled(net, X, lab))


# ------------------------------------------------------------------ the hidden-Δ rule (design note 61)


@pytest.mark.parametrize("delta, given", [(None, False), (1e-2, True), ({"y": 0.1}, False), ({"Z": 1e-4}, True),
                                          ({"X": 1e-4, "y": 0.1}, True)])
def test_delta_hidden_given(delta, given):
    net = bb.MLP([3, 4, 1]) if delta is None else bb.MLP([3, 4, 1], delta=delta)
    assert net.delta_hidden_given is given
    assert net_from_dict(net_to_dict(net)).delta_hidden_given is given


def test_default_run_sets_the_hidden_noise_from_the_map_starts():
    """Low-noise data (noise sd 0.01): the MAP fits' Δ̂_y ~ 1e-4, so the hidden Δ becomes
    0.02 · median Δ̂_y — far below the MLP default 1e-3 — and the net sampled (``result.net``) has it."""
    from blockbayes.gibbs import starts
    from blockbayes.gibbs.presets import hidden_delta

    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 2))
    y = np.sin(X[:, 0]) + 0.01 * rng.normal(size=150)
    res = _quiet_run(bb.MLP([2, 8, 1]), X, y, num_samples=10, seed=0)
    hd = res.config["hidden_delta"]
    assert hd["rule"] == "map_noise"
    d = hd["value"][0]
    assert 1e-6 <= d < 1e-4 and res.net.delta_z == (d,) and res.net.delta_x == (d,)
    # the value is the rule applied to the run's own MAP starts (the same key as gibbs.run's)
    root = bb._backend.random.key(0)
    k_map = bb._backend.random.split(bb._backend.random.split(root, 2)[0], 2)[0]
    Xp, yp = bb.inputs.prepare(bb.MLP([2, 8, 1]), X, y, num_chains=4)
    _, dy, _ = starts.map_starts(k_map, bb.MLP([2, 8, 1]), Xp, yp, num_chains=4, kind="map", learn_noise=True,
                                 prefit=starts.JOINT_PREFIT_ITER)
    assert d == hidden_delta(dy)


@pytest.mark.parametrize("case", ["hidden_given", "noise_fixed", "prior_start", "no_hidden_layer"])
def test_hidden_rule_applies_only_to_a_hidden_noise_nobody_chose(case):
    X, y = _data(n=80, noise_sd=0.01)
    net = {"hidden_given": bb.MLP([2, 6, 1], delta={"Z": 1e-3, "X": 1e-3}),
           "noise_fixed": bb.MLP([2, 6, 1], delta={"y": 1e-4}),
           "prior_start": bb.MLP([2, 6, 1]),
           "no_hidden_layer": bb.MLP([2, 1], "identity")}[case]
    kw = dict(init="prior") if case == "prior_start" else {}
    res = _quiet_run(net, X, y, num_samples=3, num_warmup=0, num_chains=2, seed=0, **kw)
    assert res.config["hidden_delta"]["rule"] == "net"
    assert res.net.delta_z == net.delta_z and res.net == net


def test_distributed_run_follows_the_same_noise_rule():
    """``distributed.run`` keeps its explicit counts but resolves ``learn_noise`` as ``gibbs.run`` does."""
    from blockbayes import distributed as dd

    X, y = _data(n=40)
    r = dd.run(bb.MLP([2, 3, 1]), X, y, num_samples=3, seed=0, progress=False)
    assert r.config["learn_noise"] is True and np.ptp(np.asarray(r.delta_y)) > 0
    r = dd.run(bb.MLP([2, 3, 1], delta=0.1), X, y, num_samples=3, seed=0, progress=False)
    assert r.config["learn_noise"] is False and np.all(np.asarray(r.delta_y) == 0.1)


# ----------------------------------------------------------------- counts when replica exchange runs (note 62)

def _tiny():
    """The validation suite's [1, 1, 1] ReLU problem (n = 8, Δ = 0.2 / 0.1): tempering="auto" turns on."""
    from validation.gibbs_checks import tiny_problem

    net, _, x, y = tiny_problem("relu")[:4]
    return net, np.asarray(x)[:, None], np.asarray(y)[:, None]


def test_resolve_counts_rule():
    from blockbayes.gibbs import sampler as S
    from blockbayes.gibbs import tempering as T

    net, X, _ = _tiny()
    n = X.shape[0]
    assert T.plan(net, n, T.Tempering.coerce("auto"), output=True).active
    kw = dict(thin=1, learn_noise=False, tempering="auto", schedule=None)
    assert S.resolve_counts(net, n, num_samples=None, num_warmup=None, num_chains=None, **kw) == (1500, 500, 16)
    assert S.resolve_counts(net, n, num_samples=40, num_warmup=None, num_chains=None, **kw) == (40, 40, 16)
    assert S.resolve_counts(net, n, num_samples=None, num_warmup=7, num_chains=3, **kw) == (1500, 7, 3)
    assert S.resolve_counts(net, n, num_samples=9, num_warmup=None, num_chains=2, **kw) == (9, 9, 2)
    off = dict(kw, tempering="off")
    assert S.resolve_counts(net, n, num_samples=None, num_warmup=None, num_chains=None, **off) == (1000, 1000, 4)
    from blockbayes.gibbs.anneal import AnnealedDelta

    sched = dict(kw, schedule=AnnealedDelta(1.0))
    assert S.resolve_counts(net, n, num_samples=None, num_warmup=None, num_chains=None, **sched) == (1000, 1000, 4)
    big = bb.MLP([2, 50, 1])                       # default Δ = 1e-3 on 500 rows: the ladder is too long
    assert S.resolve_counts(big, 500, num_samples=None, num_warmup=None, num_chains=None,
                            **dict(kw, learn_noise=True)) == (1000, 1000, 4)


def test_tiny_run_with_counts_unset_gets_the_tempered_budget():
    """End to end, shortened by one given count: ``num_samples`` given, chains and warm-up from the rule
    (16 chains; warm-up = num_samples · thin, since a count was given)."""
    net, X, y = _tiny()
    res = _quiet_run(net, X, y, num_samples=6, seed=0)
    cfg = res.config
    assert (cfg["num_samples"], cfg["num_warmup"], cfg["num_chains"]) == (6, 6, 16)
    assert cfg["tempering"]["active"] and res.weights[0].shape[:2] == (16, 6)
    res = _quiet_run(net, X, y, num_samples=6, seed=0, tempering="off")
    assert res.config["num_chains"] == 4


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_counts_still_raise(bad):
    net, X, y = _tiny()
    for name in ("num_samples", "num_chains"):
        with pytest.raises((ValueError, TypeError)):
            gibbs.run(net, X, y, progress=False, **{name: bad})


# ----------------------------------------------------------------- joint MAP starts' fixed-noise pre-fit (note 63)

def _prefit_data():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(120, 2))
    y = np.sin(X[:, 0]) + 0.02 * rng.normal(size=120)
    net = bb.MLP([2, 6, 1])
    Xp, yp = bb.inputs.prepare(net, X, y, num_chains=2)
    return net, Xp, yp


def test_prefit_is_a_fixed_noise_fit_then_the_joint_fit_from_it():
    from blockbayes import laplace
    from blockbayes.gibbs import starts

    net, X, y = _prefit_data()
    key = bb._backend.random.key(3)
    w, dy, info = starts.map_starts(key, net, X, y, num_chains=2, learn_noise=True, max_iter=60, prefit=20)
    keys = bb._backend.random.split(key, 2)
    dy0 = starts.JOINT_PREFIT_NOISE * float(np.var(np.asarray(y)))
    for c in range(2):
        w0 = laplace.map_fit(net, X, y, seed=keys[c], max_iter=20, delta_y=dy0, progress=False)
        wc, ic = laplace.map_fit(net, X, y, init=w0, max_iter=40, learn_noise=True, noise_prior=(1.0, 1e-2),
                                 tol=1e-6, ftol=0.0, progress=False, return_info=True)
        for l in range(2):
            np.testing.assert_array_equal(np.asarray(w[l][c]), np.asarray(wc[l]))
        assert float(dy[c]) == max(float(ic["delta_y"]), 1e-6)
    plain = starts.map_starts(key, net, X, y, num_chains=2, learn_noise=True, max_iter=60)
    assert not np.array_equal(np.asarray(plain[0][0]), np.asarray(w[0]))     # the pre-fit changed the start
    assert info["map_iters"] <= 2 * 60


def test_prefit_applies_to_joint_fits_only_and_checks_its_value():
    from blockbayes.gibbs import starts

    net, X, y = _prefit_data()
    key = bb._backend.random.key(4)
    a = starts.map_starts(key, net, X, y, num_chains=2, max_iter=30, prefit=10)      # fixed noise: ignored
    b = starts.map_starts(key, net, X, y, num_chains=2, max_iter=30)
    np.testing.assert_array_equal(np.asarray(a[0][0]), np.asarray(b[0][0]))
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="prefit"):
            starts.map_starts(key, net, X, y, num_chains=2, max_iter=30, prefit=bad, learn_noise=True)


def test_gibbs_run_starts_with_the_prefit():
    """``gibbs.run``'s MAP starts are ``map_starts(..., prefit=JOINT_PREFIT_ITER)`` at the run's key: the hidden
    Δ it records is the rule applied to those fits' noise, and not to the fits without the pre-fit."""
    from blockbayes.gibbs import starts

    net, X, y = _prefit_data()
    Xr = np.asarray(X)
    yr = np.asarray(y)[:, 0]
    res = _quiet_run(net, Xr, yr, num_samples=1, num_warmup=0, num_chains=2, seed=7, moves="none")
    root = bb._backend.random.key(7)
    k_map = bb._backend.random.split(bb._backend.random.split(root, 2)[0], 2)[0]
    w, dy, _ = starts.map_starts(k_map, net, X, y, num_chains=2, kind="map", learn_noise=True,
                                 prefit=starts.JOINT_PREFIT_ITER)
    assert res.config["hidden_delta"]["value"][0] == starts.hidden_delta(dy)
    w_off, dy_off, _ = starts.map_starts(k_map, net, X, y, num_chains=2, kind="map", learn_noise=True)
    assert starts.hidden_delta(dy_off) != starts.hidden_delta(dy)      # a twin without the pre-fit is told apart
