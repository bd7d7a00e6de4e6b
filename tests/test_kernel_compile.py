"""First-use compilation of the Numba kernels and the demo that hides it (issue 17, item 6).

* One compiled specialisation per kernel and dtype: the wrappers pass every input read-only and
  the other dtype's slots as dummies of the live arrays' types, so writeable vs read-only inputs
  (broadcast views, user arrays) do not compile a kernel twice, and a float64 call does not
  compile float32 code. Broken twin: passing the old float32 dummies in a float64 call (mixed
  signature) or a writeable input fails these checks (shown in the tests themselves).
* ``blockbayes demo`` fits the baselines while a background process compiles the Gibbs kernels,
  and prints what it printed before, in the same order.

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

    cli._kernel_warmup(json.dumps(dict(d=3, hidden=4, n=40, delta=1e-2, chains=2, seed=0, threads=1)))
    cli._warm_rows()


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
