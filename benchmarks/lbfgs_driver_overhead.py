"""Per-iteration cost of laplace.map's L-BFGS on the run driver against an older checkout's
hand-written while loop, on a near-free objective (a quadratic, M = 5 members, P = 401) so that
the loop's own overhead is not hidden by the objective; the same process times both, alternating,
best of the repetitions. The outputs of both are first compared exactly.

Usage::

    PYTHONPATH=$PWD python benchmarks/lbfgs_driver_overhead.py /path/to/old/blockbayes/laplace/map.py [reps]
"""
import ast, sys, time, os
import numpy as np
from blockbayes.laplace import map as mm
from blockbayes.laplace.map import LBFGSState
src = open(sys.argv[1]).read()
fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == "lbfgs_batched")
ns = {"np": np}; exec(compile(ast.Module([fn], []), "old", "exec"), ns); old = ns["lbfgs_batched"]
M, P = 5, 401
sc = np.logspace(0, 6, P)[None, :].repeat(M, 0)
def fun(x, idx):
    s = sc[idx]; return 0.5 * np.sum(s * x * x, axis=1), s * x
x0 = np.random.default_rng(0).normal(size=(M, P))
N = 300
a, b = old(fun, x0, max_iter=N, gtol=1e-30, ftol=0.0), mm.lbfgs_batched(fun, x0, max_iter=N, gtol=1e-30, ftol=0.0)
print("outputs identical:", all(np.array_equal(a[k], b[k]) for k in ("x", "f", "g", "num_iter", "num_fev", "status"))
      and a["history"] == b["history"] and a["message"] == b["message"])
def bare():
    f, g = fun(x0, np.arange(M))
    st = LBFGSState(x=x0.copy(), f=f, g=g, S=np.zeros((M, 10, P)), Yh=np.zeros((M, 10, P)), cnt=np.zeros(M, dtype=np.int64), nit=np.zeros(M, dtype=np.int64), nfev=np.ones(M, dtype=np.int64), status=np.full(M, -1))
    for i in range(N):
        st = mm.lbfgs_step(fun, st, gtol=1e-30, ftol=0.0)
runs = {"old loop": lambda: old(fun, x0, max_iter=N, gtol=1e-30, ftol=0.0), "bare lbfgs_step loop": bare,
        "lbfgs_batched (run_kernel)": lambda: mm.lbfgs_batched(fun, x0, max_iter=N, gtol=1e-30, ftol=0.0)}
best = {k: 1e9 for k in runs}
for r in range(int(sys.argv[2]) if len(sys.argv) > 2 else 15):
    for k, f_ in runs.items():
        t0 = time.perf_counter(); f_(); best[k] = min(best[k], (time.perf_counter() - t0) / N * 1e6)
print("  ".join(f"{k}: {v:.0f} us/it" for k, v in best.items()), f"(best of reps; load {os.getloadavg()[0]:.2f})")
