"""CPU mode of the GPU benchmark scripts (benchmarks/backend_swap.py, gpu_scale.py, _devtools.py).

The scripts run once on a lent GPU (benchmarks/gpu_check.sh); these tests run their code path on
NumPy at small sizes so that run does not fail on a bug a CPU could have found: the memory-floor
arithmetic, the memory-fit n, the peak-memory meter, the kernel and distribution comparisons
(with a planted error the distribution comparison must catch), the speed worker, and the shell
script's syntax (its whole dry run is in the slow tier). No timing is asserted. Seconds.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from _helpers import BENCH, ROOT, load_benchmark


_load = load_benchmark


D = _load("_devtools")


def test_sweep_bytes_by_hand():
    # [d, K, 1] regression: rows L (K + 1), X-update (2K + 1), Z-update (d + 2K), rows 1 (d + K)
    d, K = 10, 50
    assert D.sweep_bytes([d, K, 1], 1, 4) == 4 * ((K + 1) + (2 * K + 1) + (d + 2 * K) + (d + K))
    assert D.sweep_bytes([d, K, 1], 1000, 4) == 1000 * D.sweep_bytes([d, K, 1], 1, 4)
    # multinomial probit adds the latents (K + 2C) and the labels
    C = 10
    base = (K + C) + (2 * K + C) + (784 + 2 * K) + (784 + K)
    assert D.sweep_bytes([784, K, C], 1, 4, "multinomial_probit") == 4 * (base + K + 2 * C) + 8
    # a one-layer net has no auxiliaries: read X and y once
    assert D.sweep_bytes([3, 2], 5, 8) == 5 * 8 * 5


def test_fit_rows():
    assert D.fit_rows(1000, 10, fraction=1.0) == 100
    assert D.fit_rows(1000, 10, 100, fraction=0.5) == 40
    assert D.fit_rows(1000, 10, fraction=1.0, cap=7) == 7
    assert D.fit_rows(10, 100) == 0
    with pytest.raises(ValueError):
        D.fit_rows(10, 0)


def test_memory_meter_sees_numpy_buffers():
    be = D.backend("cpu")
    with D.MemoryMeter(be) as mm:
        a = np.ones(1_000_000)
        del a
    assert 8_000_000 <= mm.peak < 9_000_000


def test_copy_bandwidth_and_free_memory_on_the_cpu():
    be = D.backend("cpu")
    assert D.copy_bandwidth(be, 8 << 20, repeats=3) > 1e8
    free, total = D.free_memory(be)
    assert 0 < free <= total


def test_bytes_per_row_grows_linearly_and_gives_a_fit():
    gs = _load("gpu_scale")
    be = D.backend("cpu")
    per_row, fixed, peaks = gs.measure_bytes_per_row(be, 10, 50, 1000)
    # at least the state (X, Z, X^post, y: 4 (10 + 50 + 50 + 1) bytes) is held per row
    assert per_row >= 4 * (10 + 50 + 50 + 1) and peaks[1] > peaks[0]
    assert D.fit_rows(10 ** 9, per_row, fixed) < 10 ** 9 / per_row


def test_gpu_scale_cpu_mode_writes_its_tables(tmp_path, capsys):
    gs = _load("gpu_scale")
    rc = gs.main(["--device", "cpu", "--small", "--points", "10-50-1 n=1e8", "--max-n", "3000",
                  "--out", str(tmp_path), "--no-latency"])
    assert rc == 0
    recs = [json.loads(line) for line in open(tmp_path / "gpu_scale.jsonl")]
    kinds = [r["table"] for r in recs]
    assert kinds[0] == "device" and recs[0]["bandwidth"] > 0
    fit = next(r for r in recs if r["table"] == "fit")
    assert fit["n"] == min(3000, fit["fit"]) and fit["bytes_per_row"] > 0
    scale = [r for r in recs if r["table"] == "scale"]
    assert len(scale) == 1 and all(r["finite"] and r["ms"] > 0 and r["floor_ms"] > 0 for r in scale)
    assert scale[0]["n"] == fit["n"]
    text = capsys.readouterr().out
    assert "| 10-50-1 n=1e8 |" in text and "B/row measured" in text


def test_latency_table_runs_on_the_cpu(capsys):
    gs = _load("gpu_scale")
    gs.latency_table(D.backend("cpu"), None, repeats=1, inner=1)
    text = capsys.readouterr().out
    assert "linalg.solve_triangular" in text and "failed" not in text


def test_backend_swap_cpu_mode_kernels_and_distribution(tmp_path, capsys):
    """``main`` in its dry-run mode (the speed table's subprocesses are the slow dry run's)."""
    bs = _load("backend_swap")
    assert bs.main(["--device", "cpu", "--small", "--only", "kernels,distribution", "--out", str(tmp_path)]) == 0
    recs = [json.loads(line) for line in open(tmp_path / "backend_swap.jsonl")]
    kern = [r for r in recs if r["table"] == "kernels"]
    dist = [r for r in recs if r["table"] == "distribution"]
    assert len(kern) == 6 and all(r["ok"] and r["sign_disagreements"] == 0 for r in kern)
    assert len(dist) == 7 and all(r["passed"] for r in dist)
    assert "equality checks passed" in capsys.readouterr().out


def test_backend_swap_distribution_catches_a_planted_error():
    """The KS comparison (false failure ≤ 1e-3) must flag a device side whose output bias is off by
    0.5 (a posterior sd of about 0.1 here)."""
    bs = _load("backend_swap")

    def broken(st):
        W2 = st.weights[1].copy()
        W2[..., -1] += 0.5
        return st._replace(weights=(st.weights[0], W2))

    assert not bs.distribution_table(D.backend("cpu"), None, 200, 3, broken=broken)


def test_backend_swap_speed_worker():
    bs = _load("backend_swap")
    r = bs.worker("cpu", 5, 4, 200, 3, 1)
    assert r["ms"] > 0 and r["ms_min"] <= r["ms"]


def test_gpu_check_script_syntax():
    path = os.path.join(BENCH, "gpu_check.sh")
    subprocess.run(["bash", "-n", path], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-S", "warning", path], check=True)


@pytest.mark.slow
def test_gpu_check_script_dry_run(tmp_path):
    """The whole script in its CPU dry-run mode with the long steps cut to their smallest form
    (about 50 s on the 2-core machine: slow tier)."""
    env = dict(os.environ, OUT=str(tmp_path), GPU_CHECK_DRY_RUN="1", PYTHONPATH=ROOT)
    res = subprocess.run(["bash", os.path.join(BENCH, "gpu_check.sh")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    files = sorted(os.listdir(tmp_path))
    assert "summary.md" in files and len(files) <= 8, files
    summary = (tmp_path / "summary.md").read_text()
    assert "backend swap" in summary and "scale points" in summary
