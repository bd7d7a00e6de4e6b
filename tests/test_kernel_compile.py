"""First-use compilation of the Numba kernels and the demo that hides it (issue 17, item 6).

* One compiled specialisation per kernel and dtype: the wrappers pass every input read-only and
  the other dtype's slots as dummies of the live arrays' types, so writeable vs read-only inputs
  (broadcast views, user arrays) do not compile a kernel twice, and a float64 call does not
  compile float32 code. Broken twin: passing the old float32 dummies in a float64 call (mixed
  signature) or a writeable input fails these checks (shown in the tests themselves).
* ``blockbayes demo`` compiles the Gibbs kernels in two processes side by side (the demo's own:
  the X draw and the row sampler, then the baselines; a background one: the ReLU draw, then the
  whole pass once the demo's process releases it) and prints what it printed before, in the same
  order.
* Each form of the fused latent pass compiles only its own callees (None selectors pruned).

No timing assertions (speed figures live in benchmarks/ and the notes).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from blockbayes import kernels  # noqa: E402
from blockbayes._backend import random as bbr  # noqa: E402


def _array_args(sig):
    return [a for a in sig if getattr(a, "ndim", None) is not None]


def _homogeneous(sig, n_arrays):
    """The first ``n_arrays`` array arguments (the two dtype slots) share one dtype."""
    return len({a.dtype for a in _array_args(sig)[:n_arrays]}) == 1


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_latent_pass_compiles_one_dtype_per_call(dtype):
    from blockbayes.kernels import cpu

    rng = np.random.default_rng(0)
    C, n, d, k = 2, 30, 4, 1
    Z = rng.standard_normal((C, n, d)).astype(dtype)
    T = np.broadcast_to(rng.standard_normal((1, n, k)).astype(dtype), (C, n, k))   # read-only view
    W = rng.standard_normal((C, k, d + 1)).astype(dtype)
    Zro = Z.copy()
    Zro.flags.writeable = False
    a = kernels.latent_pass(bbr.key(1), Z, Z, T, W, 0.02, 0.05, 0.1, impl="cpu")
    b = kernels.latent_pass(bbr.key(1), Zro, Zro, T, W, 0.02, 0.05, 0.1, impl="cpu")
    for u, v in zip(a, b):                       # read-only inputs: the same draws
        np.testing.assert_array_equal(u, v)
    form = tuple(numba.typeof(v) for v in cpu._selectors(0, k, 0))      # Matheron k < 4, ReLU
    sigs = [s for s in cpu._latent_kernel_serial.signatures
            if str(_array_args(s)[0].dtype) == dtype and tuple(s[20:25]) == form]
    assert len(sigs) == 1                        # writeable and read-only Z: one specialisation
    assert all(_homogeneous(s, 10) for s in cpu._latent_kernel_serial.signatures)
    # broken twin: the previous float32 dummies in a float64 call give a mixed signature
    mixed = (cpu._RO64,) * 5 + (cpu._DUMMY32,) * 5
    assert not _homogeneous(tuple(numba.typeof(v) for v in mixed), 10)


def _group_callees(selectors):
    """Names of the jitted functions :func:`cpu._latent_group`'s IR still calls once Numba's
    dead-branch pruning has run for these selector types (the pass Numba runs before typing)."""
    from numba.core import ir
    from numba.core.analysis import dead_branch_prune
    from numba.core.compiler import run_frontend

    from blockbayes.kernels import cpu

    func_ir = run_frontend(cpu._latent_group.py_func)
    args = [numba.types.int64] * func_ir.arg_count
    first = func_ir.arg_names.index("x_rowwise")
    args[first:first + 5] = selectors
    dead_branch_prune(func_ir, args)
    used = set()
    for blk in func_ir.blocks.values():
        for stmt in blk.body:
            if isinstance(stmt, ir.Assign) and isinstance(stmt.value, ir.Global) and stmt.value.name.startswith("_"):
                used.add(stmt.value.name)
    return used


@pytest.mark.parametrize("method, k, act, keep", [
    (0, 1, 0, {"_lg_rows_matheron_rowwise", "_relu_range"}),
    (0, 5, 0, {"_lg_rows_matheron", "_relu_range"}),
    (1, 1, 1, {"_lg_rows_cholesky", "_lg_identity", "_lg_sx"}),
])
def test_latent_group_compiles_only_its_form(method, k, act, keep):
    """Each form of the latent pass (row sampler × activation) types only its own callees: the
    others' branches are pruned before typing, so first use compiles no unused kernel. Broken
    twin: int selectors everywhere (no None) keep every branch."""
    from blockbayes.kernels import cpu

    forms = {"_lg_rows_matheron_rowwise", "_lg_rows_matheron", "_lg_rows_cholesky", "_relu_range",
             "_lg_identity", "_lg_sx"}
    sel = [numba.typeof(v) for v in cpu._selectors(method, k, act)]
    assert _group_callees(sel) & forms == keep
    assert _group_callees([numba.types.int64] * 5) & forms == forms


def test_gaussian_rows_one_specialisation_for_any_input_flags():
    from blockbayes.kernels import cpu

    rng = np.random.default_rng(1)
    C, d1, k = 3, 4, 2
    H = rng.standard_normal((20, d1))
    G = (H.T @ H)[None]
    B = rng.standard_normal((C, d1, k))
    dl = np.array([0.2, 0.3, 0.4])
    pd_full = np.ones((C, d1))                                   # writeable
    pd_bcast = np.broadcast_to(np.ones(d1), (C, d1))             # read-only view
    key = bbr.key(2)
    a = kernels.gaussian_rows(key, B, dl, gram=G, prior_diag=pd_full)
    b = kernels.gaussian_rows(key, B, np.broadcast_to(dl, (C,)), gram=G, prior_diag=pd_bcast)
    np.testing.assert_array_equal(a, b)
    assert len(cpu._rows_kernel.signatures) == 1
    # broken twin: without the read-only views, the wrapper's broadcast of a full (C, d + 1)
    # prior diagonal is a read-only array and a copied one writeable: two argument types
    old_wrapper = np.ascontiguousarray(np.broadcast_to(pd_full, (C, d1)))
    assert numba.typeof(old_wrapper) != numba.typeof(np.ascontiguousarray(pd_bcast))


def test_kernel_warmup_runs_the_demo_problem():
    from blockbayes import cli

    done = []
    cli._warm_x_and_rows(4, None)
    cli._kernel_warmup(json.dumps(dict(d=3, hidden=4, n=40, delta=1e-2, chains=2, seed=0, threads=1)),
                       wait=lambda: done.append(1))
    assert done == [1]


def test_demo_prints_gibbs_then_baselines(capsys, monkeypatch):
    from blockbayes import cli

    procs = []
    start = cli._start_kernel_warmup
    monkeypatch.setattr(cli, "_start_kernel_warmup", lambda args: procs.append(start(args)) or procs[-1])
    rc = cli.main(["demo", "--d", "3", "--hidden", "4", "--n", "60", "--n-test", "30", "--chains", "2",
                   "--warmup", "3", "--samples", "4", "--threads", "1", "--compare", "map", "--no-progress"])
    out = capsys.readouterr().out
    assert rc in (0, 1)                          # 1: RMSE not below sd(y) after 7 sweeps
    assert len(procs) == 1 and procs[0] is not None and procs[0].returncode == 0
    i_head, i_gibbs = out.index("demo: teacher-student"), out.index("| test RMSE, Gibbs posterior mean |")
    i_side, i_map = out.index("Side by side"), out.index("| map | 60 |")
    assert i_head < i_gibbs < i_side < i_map < out.index("| gibbs (above) |") < out.index("(compared in")


def test_demo_without_baselines_starts_no_process(capsys, monkeypatch):
    from blockbayes import cli

    monkeypatch.setattr(cli, "_start_kernel_warmup", lambda args: pytest.fail("no warm-up without baselines"))
    cli.main(["demo", "--d", "3", "--hidden", "4", "--n", "40", "--n-test", "20", "--chains", "2",
              "--warmup", "2", "--samples", "2", "--threads", "1", "--compare", "", "--no-progress"])
    out = capsys.readouterr().out
    assert "| test RMSE, Gibbs posterior mean |" in out and "Side by side" not in out


_PARTS_SCRIPT = r"""
import sys
import numpy as np
import numba
from numba.core import event
from blockbayes import kernels
from blockbayes._backend import random as bbr
from blockbayes.kernels import cpu

numba.set_num_threads(1)
parts = sys.argv[1].split(",") if sys.argv[1] else []
for p in parts:
    cpu.precompile_latent(p, 10, 1, 0, 0, np.float64)
names = []
class Rec(event.Listener):
    def on_start(self, ev):
        names.append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Rec())
z = np.zeros((4, 300, 10))
kernels.latent_pass(bbr.key(0), z, z, np.zeros((1, 300, 1)), np.zeros((4, 1, 11)), 1e-2, 1e-2, 1e-2)
print(",".join(sorted({n for n in names if n.startswith("_")})))
"""


@pytest.mark.slow          # compiles the latent pass from scratch (~20 s of CPU)
def test_precompiled_parts_leave_only_the_top_of_the_pass(tmp_path):
    """After ``precompile_latent("x")`` and ``("z")`` (the demo's warm-up split, here in one
    process with a fresh cache), a first latent pass of the demo's form compiles only
    :func:`_latent_group` and the kernel around it: the parts' specialisations are the ones the
    pass calls. Broken twin: without the parts, the pass compiles the ReLU draw and the X draw's
    kernels itself."""
    import os
    import subprocess
    import sys

    def compiled(parts, cache):
        env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / cache))
        out = subprocess.run([sys.executable, "-c", _PARTS_SCRIPT, parts], env=env, check=True,
                             capture_output=True, text=True, cwd=os.getcwd()).stdout
        return set(out.strip().split(","))

    assert compiled("x,z", "a") == {"_latent_group", "_latent_kernel_serial"}
    twin = compiled("", "b")
    assert {"_relu_range", "_lg_fz", "_row_normals", "_lg_rows_matheron_rowwise"} <= twin


def test_demo_moves_hmc_reaches_gibbs_run_and_prints_mixing(capsys, monkeypatch):
    """``--moves hmc`` hands a JointHMCMove to ``gibbs.run`` and the table reports function-space
    mixing (max R-hat and min bulk ESS of the probe outputs); ``--moves none`` passes no move."""
    from blockbayes import cli, gibbs
    from blockbayes.gibbs.hmc import JointHMCMove

    seen = []
    run = gibbs.run
    monkeypatch.setattr(gibbs, "run", lambda *a, **k: seen.append(k.get("moves")) or run(*a, **k))
    base = ["demo", "--d", "3", "--hidden", "4", "--n", "40", "--n-test", "20", "--chains", "2",
            "--warmup", "4", "--samples", "6", "--threads", "1", "--compare", "", "--no-progress"]
    cli.main(base + ["--moves", "hmc"])
    out = capsys.readouterr().out
    assert isinstance(seen[-1], JointHMCMove) and seen[-1].leapfrog == 32
    assert "moves = hmc (JointHMCMove, 32 leapfrog steps)" in out
    assert "| max R-hat of the probe outputs (mixed: <= 1.01) |" in out
    assert "| min bulk ESS of the probe outputs |" in out
    cli.main(base + ["--moves", "none"])
    out = capsys.readouterr().out
    assert seen[-1] is None and "moves =" not in out and "| max R-hat of the probe outputs" in out
    assert "| moves after each sweep | none (given by the caller) |" in out
    # the default is gibbs.run's own "auto" (here: 4 warm-up sweeps, too few for the move to adapt)
    cli.main(base)
    out = capsys.readouterr().out
    assert seen[-1] == "auto" and "moves = auto" in out
    assert "| moves after each sweep | none (num_warmup=4 < 200" in out
    with pytest.raises(SystemExit):
        cli.main(base + ["--moves", "nuts"])
    with pytest.raises(ValueError, match="--moves"):
        cli._demo_moves("nuts")
