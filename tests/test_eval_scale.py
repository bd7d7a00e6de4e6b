"""Evaluation at scale (blockbayes.evaluate.scale): summaries on hand-computed cases, config
parsing, per-cell budgets (a method past its time or memory budget is recorded, the run goes on),
resume, the offline MNIST-1D stream and its shifted OOD variant, and the ``blockbayes eval`` command.

The budget tests start worker processes (spawn); this module is their plugin: importing it
registers the test methods ``_scale_const``, ``_scale_sleep`` and ``_scale_alloc``.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from blockbayes.evaluate import Method, Predictor, register_method
from blockbayes.evaluate import scale


# ----------------------------------------------------------------------------------- plugin methods

def _const_predictor(task):
    if task == "regression":
        return Predictor(predict=lambda X: (np.zeros(len(X)), np.ones(len(X))),
                         lpd=lambda X, y: -0.5 * (np.log(2 * np.pi) + np.asarray(y, float).reshape(-1) ** 2))
    return Predictor(predict_proba=lambda X: np.full((len(X), 3), 1 / 3))


def _fit_const(arch, X, y, *, seed, offset):
    return _const_predictor(arch.task)


def _fit_sleep(arch, X, y, *, seed, from_n, seconds):
    if len(X) >= from_n:
        time.sleep(seconds)
    return _const_predictor(arch.task)


def _fit_alloc(arch, X, y, *, seed, from_n, mb, hold_s):
    if len(X) >= from_n:
        a = np.ones(int(mb * 2 ** 20 // 8))        # touched: resident, not just reserved
        time.sleep(hold_s)
        del a
    return _const_predictor(arch.task)


for _m in (Method("_scale_const", _fit_const, defaults={"offset": 0.0}, description="test: constant predictive"),
           Method("_scale_sleep", _fit_sleep, defaults={"from_n": 10 ** 9, "seconds": 0.0},
                  description="test: sleeps from a size on"),
           Method("_scale_alloc", _fit_alloc, defaults={"from_n": 10 ** 9, "mb": 0.0, "hold_s": 0.0},
                  description="test: allocates from a size on")):
    register_method(_m, overwrite=True)

_PLUGIN = __name__


def _config(tmp_path, methods, *, wall_s=20.0, mem_mb=None, sizes=(20, 40, 80), jobs=1, **extra):
    cfg = {"title": "test", "out_dir": str(tmp_path / "out"), "doc": str(tmp_path / "doc" / "evaluation.md"),
           "img_dir": str(tmp_path / "doc" / "img"), "sizes": list(sizes), "jobs": jobs, "plugins": [_PLUGIN],
           "budget": {"wall_s": wall_s, "warmup_s": 60.0, **({"mem_mb": mem_mb} if mem_mb else {})},
           "datasets": [{"name": "teacher_student", "d": 3, "teacher_hidden": 4, "n_test": 50, "hidden": [4]}],
           "methods": methods}
    cfg.update(extra)
    return cfg


def _by(res):
    return {(c["method"], c["size"]): c for c in res["cells"]}


# ----------------------------------------------------------------------------------- summaries

def test_log_grid():
    assert scale.log_grid(1000, 100000, 2) == [1000, 3162, 10000, 31623, 100000]
    assert scale.log_grid(10, 1000) == [10, 100, 1000]
    with pytest.raises(ValueError):
        scale.log_grid(100, 10)


def test_aulc_hand_computed():
    # equal log spacing: trapezoids (1+2)/2 and (2+4)/2, averaged -> 2.25
    assert scale.aulc([10, 100, 1000], [1.0, 2.0, 4.0]) == pytest.approx(2.25, rel=1e-12)
    # unequal spacing (given unsorted): widths log 10 and log 100 (1 : 2): (1.5 * 1 + 3 * 2) / 3 = 2.5
    assert scale.aulc([10000, 10, 100], [4.0, 1.0, 2.0]) == pytest.approx(2.5, rel=1e-12)
    assert scale.aulc([5, 50], [3.0, 3.0]) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        scale.aulc([10], [1.0])
    with pytest.raises(ValueError):
        scale.aulc([10, 100], [1.0, float("nan")])


def test_effective_data_ratio_hand_computed():
    base_n, base_acc = [100, 1000, 10000], [0.5, 0.6, 0.7]
    out = scale.effective_data_ratio([100, 1000], [0.6, 0.65], base_n, base_acc, higher_is_better=True)
    # 0.6 is the baseline at 1000 -> 1000/100; 0.65 is halfway on log n between 1e3 and 1e4 -> 10^3.5/1000
    assert out[0][0] == 100 and out[0][1] == pytest.approx(10.0) and out[0][2] == "="
    assert out[1][1] == pytest.approx(10 ** 0.5) and out[1][2] == "="
    # worse than the baseline's smallest size: at most n_B,1 / n; better than its best: more than n_B,K / n
    lo, hi = scale.effective_data_ratio([1000, 1000 * 10], [0.4, 0.8], base_n, base_acc, higher_is_better=True)
    assert lo[1:] == (pytest.approx(0.1), "<=")
    assert hi[1:] == (pytest.approx(1.0), ">")
    # lower-is-better metrics flip the direction: NLL 1.5 is reached by the baseline at 10^2.5
    nll = scale.effective_data_ratio([10], [1.5], [100, 1000], [2.0, 1.0], higher_is_better=False)
    assert nll[0][1] == pytest.approx(10 ** 2.5 / 10) and nll[0][2] == "="
    # a broken twin that interpolated linearly in n (not log n) would give 550/1000 for the midpoint
    assert out[1][1] != pytest.approx(5.5)


def test_one_effective_data_ratio_definition_for_both_reports():
    """Issue 13 (c): the scale report and the data-efficiency report use one function; the older
    n*/n_full figure is that function with the roles swapped, read at the baseline's full size."""
    from blockbayes import evaluate as ev
    from blockbayes.evaluate import _report

    assert scale.effective_data_ratio is ev.effective_data_ratio_curve is _report.effective_data_ratio_curve

    def row(m, n, rmse):
        return {"dataset": "d", "method": m, "n_train": n, "rmse": {"mean": rmse, "se": None}}

    summ = [row("a", 10, 4.0), row("a", 100, 2.0), row("a", 1000, 1.0),
            row("map", 10, 5.0), row("map", 100, 3.0), row("map", 1000, 2.0)]
    per_n = ev.effective_data_ratios(summ, "rmse", "a", "map", "d")
    direct = ev.effective_data_ratio_curve([10, 100, 1000], [4.0, 2.0, 1.0], [10, 100, 1000], [5.0, 3.0, 2.0],
                                           higher_is_better=False)
    assert per_n == direct
    # a's 4.0 at 10: MAP reaches 4.0 halfway (log n) between 10 and 100 -> sqrt(10*100)/10; a's 2.0 at 100 is
    # MAP's at 1000 -> 10; a's 1.0 at 1000: MAP never -> > 1
    assert per_n[0][1] == pytest.approx(math.sqrt(1000) / 10) and per_n[1][1:] == (pytest.approx(10.0), "=")
    assert per_n[2][1:] == (pytest.approx(1.0), ">")
    # n*/n_full (docs/data_efficiency.md before): the swapped ratio at MAP's full size
    swapped = ev.effective_data_ratio_curve([10, 100, 1000], [5.0, 3.0, 2.0], [10, 100, 1000], [4.0, 2.0, 1.0],
                                            higher_is_better=False)[-1]
    assert ev.effective_data_ratio(summ, "rmse", "a", "map", "d") == pytest.approx(swapped[1]) == pytest.approx(0.1)


def test_cost_slope_hand_computed():
    n = np.array([1e3, 1e4, 1e5, 1e6])
    b, a = scale.cost_slope(n, 3.0 * n ** 1.5)
    assert b == pytest.approx(1.5, abs=1e-10) and a == pytest.approx(math.log(3.0), abs=1e-8)
    b, _ = scale.cost_slope([10, 100], [2.0, 2.0])
    assert b == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        scale.cost_slope([10, 100], [1.0, 0.0])
    with pytest.raises(ValueError):
        scale.cost_slope([10], [1.0])


# ----------------------------------------------------------------------------------- config

def test_config_parsing(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("""
sizes = {min = 1000, max = 1000000, per_decade = 2}
[budget]
wall_s = 60
mem_mb = 500
[[datasets]]
name = "teacher_student"
d = 3
hidden = [8]
[[methods]]
method = "map"
max_iter = 50
[[methods]]
method = "map"
label = "map_long"
""")
    cfg = scale.load_scale_config(p)
    assert cfg["sizes"] == [1000, 3162, 10000, 31623, 100000, 316228, 1000000]
    assert cfg["budget"]["wall_s"] == 60 and cfg["budget"]["mem_mb"] == 500 and cfg["budget"]["predict_factor"] is None
    assert [m["label"] for m in cfg["methods"]] == ["map", "map_long"]
    assert cfg["methods"][0]["options"]["max_iter"] == 50 and cfg["methods"][1]["options"]["max_iter"] == 1000
    assert cfg["datasets"][0].hidden == (8,) and cfg["datasets"][0].task == "regression"
    assert scale.is_scale_config(p)
    base = {"sizes": [10], "datasets": ["teacher_student"], "methods": ["map"]}
    for bad, msg in [({"sizez": 1}, "unknown config key"), ({"methods": ["nope"]}, "unknown method"),
                     ({"methods": [{"method": "map", "bogus": 1}]}, "no option"),
                     ({"budget": {"wall_s": -1}}, "positive"), ({"budget": {"walls": 1}}, "unknown budget"),
                     ({"sizes": [0]}, "sizes"), ({"sizes": {"min": 10}}, "min and max"),
                     ({"methods": ["map", "map"]}, "distinct"), ({"datasets": [{"name": "mnist1d", "foo": 1}]}, "mnist1d")]:
        with pytest.raises(ValueError, match=msg):
            scale.load_scale_config({**base, **bad})


# ----------------------------------------------------------------------------------- budgets, resume

def test_budget_time_and_memory_recorded_run_continues(tmp_path):
    methods = [{"method": "_scale_const"},
               {"method": "_scale_sleep", "from_n": 40, "seconds": 60.0},
               {"method": "_scale_alloc", "label": "alloc_rss", "from_n": 40, "mb": 400.0, "hold_s": 30.0},
               {"method": "_scale_alloc", "label": "alloc_rlimit", "from_n": 80, "mb": 6000.0, "hold_s": 0.0}]
    cfg = _config(tmp_path, methods, wall_s=8.0, mem_mb=150.0, jobs=2)
    t0 = time.perf_counter()
    res = scale.run_scale(cfg, progress=False)
    took = time.perf_counter() - t0
    by = _by(res)
    assert all(by[("_scale_const", n)]["status"] == "ok" for n in (20, 40, 80))   # the run went on
    assert by[("_scale_sleep", 20)]["status"] == "ok"
    assert by[("_scale_sleep", 40)]["status"] == "over_budget" and by[("_scale_sleep", 40)]["reason"] == "time"
    assert by[("_scale_sleep", 80)]["status"] == "skipped" and by[("_scale_sleep", 80)]["over_budget_at"] == 40
    assert by[("alloc_rss", 40)]["status"] == "over_budget" and by[("alloc_rss", 40)]["reason"] == "memory"
    assert by[("alloc_rlimit", 40)]["status"] == "ok"
    assert by[("alloc_rlimit", 80)]["status"] == "over_budget" and by[("alloc_rlimit", 80)]["reason"] == "memory"
    assert res["failed"] == 0 and res["missing"] == 0
    assert took < 55                          # the sleeper (60 s) and the holder (30 s) were killed, not awaited
    # the report names the first size over budget
    paths = scale.write_report(res)
    text = open(paths["doc"]).read()
    assert "over budget at n = 40 (time)" in text and "over budget at n = 40 (memory)" in text
    # resume: nothing is recomputed, over-budget records included (same budget)
    res2 = scale.run_scale(cfg, progress=False)
    assert res2["computed"] == 0 and res2["over_budget"] == 0 and res2["cached"] == 3 + 2 + 2 + 3     # const, sleep, alloc_rss, alloc_rlimit
    assert _by(res2)[("_scale_sleep", 80)]["status"] == "skipped"
    # a larger time budget retries the time-killed cell (and only cells that could change)
    cfg3 = dict(cfg, budget={**cfg["budget"], "wall_s": 9.0})
    res3 = scale.run_scale(cfg3, progress=False, compute=False)
    assert res3["missing"] == 2               # sleep n=40 (time) and, behind it, sleep n=80


def test_resume_recomputes_nothing_and_cli(tmp_path):
    from blockbayes import cli

    cfg = _config(tmp_path, ["_scale_const", {"method": "_scale_const", "label": "c2", "offset": 1.0}])
    p = tmp_path / "scale.json"
    p.write_text(json.dumps(cfg))
    assert cli.main(["eval", str(p), "--quiet"]) == 0
    files = sorted((tmp_path / "out" / "cells").rglob("*.json"))
    assert len(files) == 6
    stamp = {f: f.stat().st_mtime_ns for f in files}
    res = scale.run_scale(str(p), progress=False)
    assert res["computed"] == 0 and res["cached"] == 6
    assert {f: f.stat().st_mtime_ns for f in files} == stamp
    doc = tmp_path / "doc" / "evaluation.md"
    assert doc.is_file() and "| _scale_const | 80 |" in doc.read_text()
    assert (tmp_path / "doc" / "img" / "eval_teacher_student_cost.png").is_file()
    # a changed option is a new cell
    cfg["methods"][1]["offset"] = 2.0
    assert scale.run_scale(cfg, progress=False, compute=False)["missing"] == 3


# ----------------------------------------------------------------------------------- data

def test_mnist1d_stream_offline_nested_and_shifted(monkeypatch, tmp_path):
    pytest.importorskip("mnist1d")
    import socket

    def no_network(*a, **k):
        raise AssertionError("the MNIST-1D stream touched the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    state = np.random.get_state()
    X, y = scale.mnist1d_stream(250, seed=3, chunk_size=100, cache_dir=tmp_path)
    assert np.array_equal(np.random.get_state()[1], state[1])          # global RNG restored
    assert X.shape == (250, 40) and X.dtype == np.float64 and set(np.unique(y)) == set(range(10))
    X2, y2 = scale.mnist1d_stream(120, seed=3, chunk_size=100)             # no cache: same stream (float32-rounded)
    np.testing.assert_allclose(X2, X[:120], atol=1e-5)
    assert np.array_equal(y2, y[:120])
    Xt, _ = scale.mnist1d_stream(250, seed=3, stream="test", chunk_size=100, cache_dir=tmp_path)
    assert not np.allclose(Xt, X)                                          # independent streams
    Xo, _ = scale.mnist1d_stream(250, seed=3, stream="ood", chunk_size=100, cache_dir=tmp_path)
    Xs, _ = scale.mnist1d_stream(250, seed=3, stream="ood", shift={}, chunk_size=100, cache_dir=tmp_path)

    def rough(Z):                   # iid noise x10 and stronger shear/scale -> rougher, larger signals
        return float(np.mean(np.abs(np.diff(Z, 2, axis=1))))

    assert rough(Xo) > 2 * rough(Xt)
    assert rough(Xs) < 1.5 * rough(Xt)       # shift={} is the training distribution (broken-twin check)
    assert abs(X.mean()) < 0.2 and 0.8 < X.std() < 1.2                     # the fixed normalisation
    with pytest.raises(ValueError):
        scale.mnist1d_stream(10, stream="bogus")
    with pytest.raises(ValueError):
        scale.mnist1d_stream(10, shift={"not_an_arg": 2.0}, chunk_size=100)


def test_heldout_classes_source():
    pytest.importorskip("sklearn")
    src = scale.Source.from_config({"name": "digits", "heldout": [5, 6, 7, 8, 9], "hidden": 8})
    assert src.task == "classification"
    data, ood = src.load(0, 0, 200, None)
    assert data.n_classes == 5 and data.n_train == 200
    assert set(np.unique(data.y_train)) <= set(range(5)) and set(np.unique(data.y_test)) <= set(range(5))
    assert ood.shape[0] > 100 and ood.shape[1] == data.n_features
    # the held-out test inputs are standardised like the subset's own test inputs
    full, ood_full = src.load(0, 0, 10 ** 6, None)
    assert full.n_train > 700 and ood_full.shape == ood.shape
