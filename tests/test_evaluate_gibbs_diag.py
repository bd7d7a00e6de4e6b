"""Function-space convergence in the evaluation runner (issue 15, item 5): the ``gibbs`` and
``gibbs_gold`` cells record the R-hat / bulk ESS of their test predictions when scored, and
``gibbs_gold`` is exactly the preset's run."""
from __future__ import annotations

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import gibbs
from blockbayes.evaluate import _methods as M
from blockbayes.evaluate import reference


def _teacher(n=120, seed=3):
    d, _ = bb.datasets.teacher_student(bb.MLP([3, 6, 1], "relu", delta=1e-3), n, 40, seed=seed, return_aux=False)
    return d


class _Fake:
    """A posterior that records what it was asked."""

    def __init__(self):
        self.calls = []

    def predict(self, Xn, **kw):
        self.calls.append(("predict", kw))
        return np.zeros(len(Xn)), np.ones(len(Xn))

    def log_predictive_density(self, Xn, yn, **kw):
        self.calls.append(("lpd", kw))
        return np.zeros(len(Xn))


def test_scored_predictions_pass_through_and_record_once_per_input():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(3, 50, 7))
    seen = []

    def forward(Xn):
        seen.append(Xn)
        return F

    diag = {"other": 1}
    post = _Fake()
    s = M._ScoredPredictions(post, forward, diag)
    X = np.zeros((7, 2))
    s.predict(X, kind="network")
    s.log_predictive_density(X, np.zeros(7), reduce=False)
    assert post.calls == [("predict", {"kind": "network"}), ("lpd", {"reduce": False})]
    assert len(seen) == 1                                    # one forward pass per scored input
    want = reference.prediction_diagnostics(F)
    assert {k: diag[k] for k in want} == want and diag["other"] == 1
    s.predict(np.ones((7, 2)))                               # a new input is diagnosed again
    assert len(seen) == 2


def test_scored_predictions_flag_chains_apart():
    """The broken-twin check of the recorded figure: chains shifted apart must read as unmixed."""
    rng = np.random.default_rng(1)
    F = rng.normal(size=(4, 100, 5))
    good, bad = {}, {}
    M._ScoredPredictions(_Fake(), lambda Xn: F, good).predict(np.zeros((5, 1)))
    M._ScoredPredictions(_Fake(), lambda Xn: F + 3 * np.arange(4)[:, None, None], bad).predict(np.zeros((5, 1)))
    assert good["rhat_pred_max"] < 1.05 and good["rhat_pred_share_1.1"] == 1.0
    assert bad["rhat_pred_median"] > 1.5 and bad["rhat_pred_share_1.1"] == 0.0


def test_gibbs_cell_records_test_prediction_convergence():
    d = _teacher()
    g = M.get_method("gibbs")
    p = g.fit(M.Arch(3, (6,), "regression"), d.X_train, d.y_train, seed=0,
              **g.options(dict(num_warmup=10, num_samples=12, thin=1, num_chains=2)))
    assert "rhat_pred_max" not in p.diagnostics               # recorded when scored, on the scored rows
    m, v = p.predict(d.X_test)
    assert m.shape == (40,) and np.all(v > 0)
    dg = p.diagnostics
    assert 1.0 - 0.2 < dg["rhat_pred_median"] <= dg["rhat_pred_max"] and np.isfinite(dg["rhat_pred_max"])
    assert 0.0 <= dg["rhat_pred_share_1.1"] <= 1.0 and dg["ess_bulk_pred_min"] > 0


def test_gibbs_gold_cell_is_the_preset_run():
    """``gibbs_gold`` through the runner = ``presets.<preset>(...).run`` at the derived seed, bitwise."""
    d = _teacher()
    g = M.get_method("gibbs_gold")
    arch = M.Arch(3, (6,), "regression")
    opts = g.options(dict(preset="gold", num_warmup=8, num_samples=6, num_chains=2))
    p = g.fit(arch, d.X_train, d.y_train, seed=5, **opts)
    m, v = p.predict(d.X_test)
    net = bb.MLP([3, 6, 1], "relu", likelihood="gaussian", prior_prec="fan_in")
    r = gibbs.presets.gold(num_warmup=8, num_samples=6, num_chains=2).run(
        net, d.X_train, d.y_train, seed=M._int_seed([5, 21]), dtype="float64")
    m2, v2 = r.predict(d.X_test, kind="network")
    np.testing.assert_array_equal(m, np.asarray(m2).reshape(-1))
    np.testing.assert_array_equal(v, np.asarray(v2).reshape(-1))
    dg = p.diagnostics
    assert dg["preset"] == "gold" and dg["hidden_delta"] == r.config["preset"]["hidden_delta"]
    assert dg["sweeps_per_chain"] == 14 and dg["samples"] == 12 and "rhat_pred_max" in dg
    assert np.isfinite(p.lpd(d.X_test, d.y_test)).all()


def test_gibbs_gold_default_is_the_long_hmc_recipe_and_rejects_bad_input():
    g = M.get_method("gibbs_gold")
    assert g.defaults["preset"] == "gold_hmc_long"
    d = _teacher(n=40)
    arch = M.Arch(3, (6,), "regression")
    p = g.fit(arch, d.X_train, d.y_train, seed=0, **g.options(dict(num_warmup=4, num_samples=4, num_chains=2)))
    p.predict(d.X_test)
    assert p.diagnostics["preset"] == "gold_hmc_long" and "move_accept" in p.diagnostics
    with pytest.raises(ValueError, match="preset must be one of"):
        g.fit(arch, d.X_train, d.y_train, seed=0, **g.options(dict(preset="fast")))
    with pytest.raises(ValueError, match="regression only"):
        g.fit(M.Arch(3, (6,), "classification", n_classes=2), d.X_train, (d.y_train > 0).astype(int), seed=0,
              **g.options({}))


def _cell(method, ds, split, ll, t, rmax=None, rmed=None, name=None):
    diag = {} if rmax is None else {"rhat_pred_max": rmax, "rhat_pred_median": rmed, "ess_bulk_pred_min": 40.0}
    return dict(method=method, method_name=name or method, dataset=ds, split=split, seed=0, status="ok",
                metrics={"ll": ll, "rmse": 1.0}, fit_time_s=t, diagnostics=diag)


def test_uci_table_renders_the_issue_15_figure_per_set():
    """benchmarks/uci_table.py ``sampler_figure_section``: per set the median over splits of the per-split
    max R-hat(F), the splits ≤ 1.1, ΔLL against the ensemble paired by split, and the time ratio."""
    from types import SimpleNamespace

    from tests._helpers import load_benchmark

    ut = load_benchmark("uci_table")
    cells = [_cell("ensemble", "yacht", s, -1.0, 2.0) for s in (0, 1, 2)]
    cells += [_cell("gibbs", "yacht", 0, -0.5, 3.0, 1.02, 1.00), _cell("gibbs", "yacht", 1, -1.2, 3.0, 1.30, 1.05),
              _cell("gibbs", "yacht", 2, -0.9, 3.0, 1.04, 1.01)]
    cells += [_cell("ensemble", "energy", 0, -1.0, 1.0), _cell("gibbs", "energy", 0, -1.5, 5.0, 1.2, 1.1)]
    cells += [_cell("gibbs", "energy", 1, -9.0, 5.0, 1.0, 1.0) | {"status": "error"}]
    lines = ut.sampler_figure_section(SimpleNamespace(cells=cells), ["ensemble", "gibbs"], ["yacht", "energy"])
    text = "\n".join(lines)
    assert "| Yacht | gibbs | 0, 1, 2 | 1.040 | 1.300 | 2 of 3 | 1.010 | 40 |" in text
    assert "| 2 of 3 | 1.50 |" in text                      # LL ≥ ensemble on splits 0 and 2; 9 s / 6 s
    assert "| Energy | gibbs | 0 | 1.200 | 1.200 | 0 of 1 |" in text and "| 0 of 1 | 5.00 |" in text
    assert ("**gibbs**: LL ≥ the ensemble's (mean over paired splits) on 1 of 2 sets; time ratio ≤ 2 on 1 of 2; "
            "median over splits of max R-hat(F) ≤ 1.05 on 1 of 2 sets; splits with max R-hat(F) ≤ 1.1: 2 of 4.") in text
    assert ut.sampler_figure_section(SimpleNamespace(cells=cells[:3]), ["ensemble"], ["yacht"]) == []


def test_uci_table_describes_every_row_and_the_smoothing_rows():
    """Every row of benchmarks/uci_table.py renders its settings line from the method's own options; the
    smoothing rows (opt-in) state the β schedule and their predictive noise, the plain joint rows do not."""
    from tests._helpers import load_benchmark

    ut = load_benchmark("uci_table")
    for name, cfg in ut.METHODS.items():
        assert ut.describe(cfg), name
    for name in ("map_joint_smooth", "ensemble_joint_smooth"):
        assert name not in ut.DEFAULT_METHODS
        text = ut.describe(ut.METHODS[name])
        assert "softplus smoothing continuation (β = 8, 32, 128, 512" in text, text
    assert "held-out MSE" in ut.describe(ut.METHODS["map_joint_smooth"])
    assert "MacKay evidence update" in ut.describe(ut.METHODS["ensemble_joint_smooth"])
    plain = ut.describe(ut.METHODS["ensemble_joint"])
    assert "smoothing" not in plain and "MacKay" not in plain


def test_uci_table_renders_every_split_against_nuts():
    """``per_split_reference_section``: per split the RMSE ratio to NUTS, met at ≤ 1.25 (issue 16's figure),
    ΔLL, NUTS's own max R-hat(F) in brackets, a split a method lacks shown as '–', error cells ignored, and a
    tally per method over the splits where both ran."""
    from types import SimpleNamespace

    from tests._helpers import load_benchmark

    ut = load_benchmark("uci_table")

    def c(method, split, rmse, ll, status="ok", rmax=None):
        return dict(method=method, dataset="yacht", split=split, seed=0, status=status,
                    metrics={"rmse": rmse, "ll": ll}, diagnostics={} if rmax is None else {"rhat_pred_max": rmax})

    cells = [c("hmc", 0, 0.2, 0.0, rmax=1.34), c("hmc", 1, 0.4, -1.0),
             c("map", 0, 0.25, -0.5), c("map", 1, 0.51, -1.2),          # ×1.25 met, ×1.275 short
             c("ensemble", 0, 0.3, -9.0, status="error"), c("ensemble", 1, 0.3, -0.7)]
    text = "\n".join(ut.per_split_reference_section(SimpleNamespace(cells=cells), ["map", "ensemble", "hmc"],
                                                    ["yacht"]))
    assert "| Yacht 0 | 0.2 / 0.000 (1.34) | 0.25 / -0.500: ×1.25 met, ΔLL -0.50 | – |" in text
    assert "| Yacht 1 | 0.4 / -1.000 | 0.51 / -1.200: ×1.27 **short**, ΔLL -0.20 | 0.3 / -0.700: ×0.75 met, ΔLL +0.30 |" in text
    assert "Within 1.25× NUTS's RMSE: map 1 of 2; ensemble 1 of 1." in text
    assert ut.per_split_reference_section(SimpleNamespace(cells=cells), ["map", "ensemble"], ["yacht"]) == []


def test_uci_table_describes_the_calibrated_joint_rows():
    """The plain joint rows with a calibrated predictive noise (opt-in) say which noise, without a smoothing
    schedule; their options are map_joint's / ensemble_joint's plus ``predictive_noise`` only."""
    from tests._helpers import load_benchmark

    ut = load_benchmark("uci_table")
    for name, base, pn, words in (("map_joint_mackay", "map_joint", "evidence", "MacKay evidence update"),
                                  ("ensemble_joint_mackay", "ensemble_joint", "evidence", "MacKay evidence update"),
                                  ("map_joint_holdout", "map_joint", "holdout", "held-out MSE of a joint fit"),
                                  ("ensemble_joint_holdout", "ensemble_joint", "holdout", "held-out MSE of a joint fit")):
        assert name not in ut.DEFAULT_METHODS
        text = ut.describe(ut.METHODS[name])
        assert words in text and "smoothing" not in text and "smooth joint" not in text, text
        o, j = M.get_method(name).options({}), M.get_method(base).options({})
        assert o.pop("predictive_noise") == pn and "predictive_noise" not in j and o == j


def test_uci_table_no_regression_section_pairs_each_opt_in_row_with_its_default():
    """``baseline_section``: ``map_*`` rows against ``map`` and ``ensemble_*`` rows against ``ensemble``, paired
    by split (a split the default lacks is left out, error cells ignored); a regression is a paired mean worse by
    more than two standard errors, in LL or in RMSE."""
    from types import SimpleNamespace

    from tests._helpers import load_benchmark

    ut = load_benchmark("uci_table")

    def c(method, split, rmse, ll, t=1.0, status="ok"):
        return dict(method=method, dataset="yacht", split=split, seed=0, status=status, fit_time_s=t,
                    metrics={"rmse": rmse, "ll": ll}, diagnostics={})

    cells = [c("map", s, 1.0, -1.0) for s in (0, 1, 2)]
    cells += [c("map_joint", 0, 1.0, -1.5, 4.0), c("map_joint", 1, 1.1, -1.6, 4.0), c("map_joint", 2, 1.0, -1.4, 4.0),
              c("map_joint", 3, 0.1, 9.0)]                                     # split 3: no default cell
    cells += [c("ensemble", 0, 1.0, -1.0), c("ensemble", 1, 1.0, -1.0), c("ensemble", 2, 1.0, -1.0, status="error")]
    cells += [c("ensemble_joint", 0, 0.9, -0.9), c("ensemble_joint", 1, 1.04, -1.2)]
    labels = ["map", "map_joint", "ensemble", "ensemble_joint", "hmc"]
    text = "\n".join(ut.baseline_section(SimpleNamespace(cells=cells), labels, ["yacht"]))
    assert "| Yacht | map_joint vs map | 3 | -0.50±0.06 (k=3) | 0 of 3 | 1.03±0.03 (k=3) | 2 of 3 | 4.0 | **LL** |" in text
    assert "| Yacht | ensemble_joint vs ensemble | 2 | -0.05±0.15 (k=2) | 1 of 2 | 0.97±0.07 (k=2) | 1 of 2 | 1.0 | no |" in text
    assert "- **map_joint**: regresses on 1 of 1 sets: Yacht (LL)." in text
    assert "- **ensemble_joint**: no regression on any of the 1 sets." in text
    assert "hmc vs" not in text and "map vs" not in text
    assert ut.baseline_section(SimpleNamespace(cells=cells), ["map_joint", "ensemble_joint"], ["yacht"]) == []
    assert ut._default_row("ensemble_joint_mackay") == "ensemble" and ut._default_row("gibbs") is None


def test_uci_table_writes_the_repository_page_only_for_the_default_out(tmp_path):
    """A run into another --out writes OUT/page.md, never docs/uci.md, unless --doc says so."""
    from tests._helpers import load_benchmark

    ut = load_benchmark("uci_table")
    assert ut.doc_path(ut.DEFAULT_OUT) == ut.ROOT / "docs" / "uci.md"
    assert ut.doc_path(tmp_path) == tmp_path / "page.md"
    assert ut.doc_path(tmp_path, str(tmp_path / "x.md")) == tmp_path / "x.md"
    assert "gibbs_auto" in ut.SAMPLERS and "gibbs_auto" not in ut.DEFAULT_METHODS


def test_gibbs_default_cell_is_the_literal_call():
    """``gibbs_default`` = ``gibbs.run(MLP(widths), X, y, seed=…)`` with nothing else set (bitwise at the
    derived seed), its convergence warning recorded rather than printed, the hidden Δ and the move choice in
    the cell; a net given a Δ by hand would differ, so the cell must be built from the default net."""
    import warnings

    d = _teacher()
    g = M.get_method("gibbs_default")
    arch = M.Arch(3, (6,), "regression")
    opts = g.options(dict(num_samples=15, num_chains=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", gibbs.diagnostics.ConvergenceWarning)   # recorded, not raised
        p = g.fit(arch, d.X_train, d.y_train, seed=4, **opts)
    m, v = p.predict(d.X_test)
    r = gibbs.run(bb.MLP([3, 6, 1]), d.X_train, d.y_train, seed=M._int_seed([4, 60]), num_samples=15,
                  num_chains=2, progress=False, diagnose=False)
    m2, v2 = r.predict(d.X_test)
    np.testing.assert_array_equal(m, np.asarray(m2).reshape(-1))
    np.testing.assert_array_equal(v, np.asarray(v2).reshape(-1))
    dg = p.diagnostics
    assert dg["sweeps_per_chain"] == 30 and dg["samples"] == 30 and "rhat_pred_max" in dg
    assert dg["hidden_delta"] == float(np.max(r.net.delta_z)) < 1e-3        # the rule applied, not the 1e-3 default
    assert dg["moves_chosen"] == "none" and isinstance(dg["convergence_warning"], bool)
    assert "rhat_delta_y" in dg and np.isfinite(p.lpd(d.X_test, d.y_test)).all()
    r_hand = gibbs.run(bb.MLP([3, 6, 1], delta=1e-3), d.X_train, d.y_train, seed=M._int_seed([4, 60]),
                       num_samples=15, num_chains=2, progress=False, diagnose=False)
    assert not np.array_equal(np.asarray(r_hand.predict(d.X_test)[0]).reshape(-1), m)


def test_gibbs_default_extended_cell_is_run_then_extend():
    """``extend=K``: the literal call, then ``gibbs.extend(result, K)`` — bitwise the same samples as the
    literal call followed by the same extension by hand; the extension is recorded in the cell."""
    d = _teacher()
    g = M.get_method("gibbs_default")
    arch = M.Arch(3, (6,), "regression")
    p = g.fit(arch, d.X_train, d.y_train, seed=4, **g.options(dict(num_samples=15, num_chains=2, extend=7)))
    r = gibbs.run(bb.MLP([3, 6, 1]), d.X_train, d.y_train, seed=M._int_seed([4, 60]), num_samples=15,
                  num_chains=2, progress=False, diagnose=False)
    r = gibbs.extend(r, 7, progress=False, diagnose=False)
    np.testing.assert_array_equal(p.predict(d.X_test)[0], np.asarray(r.predict(d.X_test)[0]).reshape(-1))
    dg = p.diagnostics
    assert dg["samples"] == 2 * 22 and [e["num_samples"] for e in dg["extended"]] == [7]


def test_gibbs_default_is_opt_in_in_the_uci_table():
    from tests._helpers import load_benchmark

    ut = load_benchmark("uci_table")
    assert "gibbs_default" in ut.SAMPLERS and "gibbs_default" not in ut.DEFAULT_METHODS
    assert "gibbs.run(MLP(widths), X, y" in ut.describe(ut.METHODS["gibbs_default"])
    assert "gibbs_default_ext" not in ut.DEFAULT_METHODS
    assert "gibbs.extend(result, 1000)" in ut.describe(ut.METHODS["gibbs_default_ext"])


def test_gibbs_default_cell_classifies():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(90, 3))
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    g = M.get_method("gibbs_default")
    p = g.fit(M.Arch(3, (6,), "classification", n_classes=3), X, y, seed=1,
              **g.options(dict(num_samples=10, num_chains=2, nodes=8)))
    P = p.predict_proba(X[:7])
    assert P.shape == (7, 3) and np.allclose(P.sum(1), 1.0) and (P >= 0).all()
    assert p.diagnostics["samples"] == 20 and "rhat_delta_y" not in p.diagnostics     # probit: Δ_y fixed
