"""The ``blockbayes`` command.

``blockbayes demo``      Gibbs on a built-in teacher–student problem; prints test RMSE against the
                         teacher's noise floor.
``blockbayes validate``  The exactness report of the validation suite (``python -m validation``).
``blockbayes bench``     The sweep benchmark table (``benchmarks/gibbs_sweep.py``).
``blockbayes eval``      An evaluation grid from a TOML/JSON config (:mod:`blockbayes.evaluate`); a config
                         with a ``[budget]`` table is an evaluation at scale
                         (:mod:`blockbayes.evaluate.scale`: per-cell budgets, parallel
                         workers ``--jobs``, writes the Markdown report and plots).
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path


def _demo(args) -> int:
    methods = [m for m in (args.compare or "").split(",") if m]
    # With baselines to fit, the Gibbs kernels are compiled into Numba's on-disk cache by two
    # processes side by side before the Gibbs run: a background process (started first thing:
    # it needs nothing from this process) compiles the ReLU draw and then the whole fused pass,
    # while this one compiles the X draw's kernels and the node-row sampler and then fits the
    # baselines (their table is still printed after Gibbs's). On a first run the compilation
    # then occupies both cores and overlaps the baselines instead of adding to the Gibbs run.
    # The baselines do not depend on the Gibbs run (own seeds): every printed number is unchanged.
    warm = _start_kernel_warmup(args) if methods else None
    # one BLAS thread for the whole demo (the Gibbs run sets it too): the baselines' small
    # GEMMs and solves gain nothing from threads and stall behind busy cores (measured on the
    # shared 2-core machine: the MAP fit took 159 s with threaded OpenBLAS, 9 s without)
    from ._backend.threads import thread_limits

    restore = thread_limits(None, 1)
    try:
        return _demo_run(args, methods, warm)
    finally:
        restore()
        _finish_kernel_warmup(warm, stop=True)


def _demo_run(args, methods, warm) -> int:
    import numpy as np

    import blockbayes as bb
    from blockbayes import datasets, gibbs
    from blockbayes.model import forward

    net = bb.MLP([args.d, args.hidden, 1], "relu", delta=args.delta)
    data, teacher = datasets.teacher_student(net, args.n, args.n_test, seed=args.seed)
    X, y, Xt, yt = data.X_train, data.y_train, data.X_test, data.y_test
    print(f"blockbayes {bb.__version__} demo: teacher-student regression, noisy ReLU MLP {list(net.widths)}, "
          f"Δ_Z = Δ_X = Δ_y = {args.delta:g}, λ = fan-in")
    moves = _demo_moves(args.moves)
    print(f"  n_train = {args.n}, n_test = {args.n_test}, {args.chains} chains from zero, "
          f"{args.warmup} warm-up + {args.samples} kept sweeps, device = {args.device}"
          + ("" if moves is None else f", moves = {args.moves}"
             + ("" if isinstance(moves, str) else f" ({type(moves).__name__}, {moves.leapfrog} leapfrog steps)")))
    sys.stdout.flush()
    if warm is not None:
        _warm_x_and_rows(args.hidden, warm)
    if methods:
        from blockbayes import evaluate

        t1 = time.perf_counter()
        # memory="peak_rss" (evaluate's default): the peak resident set, no allocation hooks;
        # --memory tracemalloc hooks every allocation and slowed these baselines' fits 2-4x
        # (L-BFGS MAP: 14.5 vs 3.8 s CPU; mean-field VI: 8.4 vs 5.6 s)
        table = evaluate.compare(methods, data, seed=args.seed, memory=args.memory)
        t_cmp = time.perf_counter() - t1
    _finish_kernel_warmup(warm)
    t0 = time.perf_counter()
    res = gibbs.run(net, X, y, num_samples=args.samples, num_warmup=args.warmup, num_chains=args.chains,
                    seed=args.seed, init="zero", device=args.device, progress=not args.no_progress,
                    num_threads=args.threads, moves=moves)
    wall = time.perf_counter() - t0
    res = res.to_numpy()
    diag = _probe_mixing(res)
    mean, var = res.predict(Xt)
    yt2 = np.asarray(yt).reshape(-1, 1)
    rmse = float(np.sqrt(np.mean((mean - yt2) ** 2)))
    teach = forward(net, tuple(np.asarray(w) for w in teacher.weights), np.asarray(Xt))
    floor = float(np.sqrt(np.mean((teach - yt2) ** 2)))
    prior_rmse = float(np.std(yt2))
    lpd = float(res.log_predictive_density(Xt, yt))
    cover = float(np.mean(np.abs(mean - yt2) <= 1.96 * np.sqrt(var)))
    sweeps = args.chains * (args.warmup + args.samples)
    print()
    print("| quantity | value |")
    print("|---|---|")
    print(f"| test RMSE, Gibbs posterior mean | {rmse:.4f} |")
    print(f"| test RMSE, teacher network (noise floor) | {floor:.4f} |")
    print(f"| test RMSE, predicting 0 (sd of y) | {prior_rmse:.4f} |")
    print(f"| ratio Gibbs / floor | {rmse / floor:.3f} |")
    print(f"| test log predictive density (per point) | {lpd:.3f} |")
    print(f"| 95% interval coverage | {cover:.3f} |")
    if diag is not None:
        print(f"| max R-hat of the probe outputs (mixed: <= 1.01) | {diag[0]:.3f} |")
        print(f"| min bulk ESS of the probe outputs | {diag[1]:.1f} ({diag[1] / wall:.2f} per s) |")
    auto = res.config.get("moves_auto") or {}
    print(f"| moves after each sweep | {auto.get('chosen', 'none')} ({auto.get('reason', '')}) |")
    print(f"| wall time | {wall:.1f} s ({1e3 * wall / (args.warmup + args.samples):.2f} ms per sweep of {args.chains} chains) |")
    ok = math.isfinite(rmse) and rmse < prior_rmse
    if methods:
        print()
        print(f"Side by side on the same data and test set (standard-MLP baselines: {', '.join(methods)}):")
        print(table.to_markdown())
        print(f"| gibbs (above) | {args.n} | {rmse:.3f} | {lpd:.3f} | | {cover:.3f} | {wall:.3f} | | ok |")
        print(f"(compared in {t_cmp:.1f} s)")
    return 0 if ok else 1


def _demo_moves(name: str):
    """The demo's ``--moves``: ``"auto"`` (``gibbs.run``'s default: the joint non-centred HMC move
    where affordable, :mod:`blockbayes.gibbs.automove`), ``"none"`` (the sweep alone) or ``"hmc"``
    (the joint non-centred HMC move after every sweep, :class:`~blockbayes.gibbs.hmc.JointHMCMove`
    with 32 leapfrog steps)."""
    if name == "auto":
        return "auto"
    if name == "none":
        return None
    if name == "hmc":
        from .gibbs.hmc import JointHMCMove

        return JointHMCMove(leapfrog=32)
    raise ValueError(f"--moves must be 'auto', 'none' or 'hmc', got {name!r}")


def _probe_mixing(res):
    """``(max R-hat, min bulk ESS)`` of the noise-free outputs at the run's probe inputs
    (:meth:`FunctionSummary.function_stats`), or ``None`` with too few draws."""
    try:
        st = res.summary().function_stats()
    except ValueError:
        return None
    return st["max_rhat"], st["min_ess"]


def _start_kernel_warmup(args):
    """Start the background process of the demo's kernel warm-up (:func:`_kernel_warmup`; a
    no-op beyond the imports once the kernels are cached). ``None`` where it does not apply (a
    GPU run) or cannot start; the demo then compiles in the Gibbs run as before."""
    if args.device not in (None, "cpu"):
        return None
    import json

    spec = {k: getattr(args, k) for k in ("d", "hidden", "n", "delta", "chains", "seed", "threads")}
    root = str(Path(__file__).resolve().parents[1])        # this very package, first on the path
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from blockbayes.cli import _kernel_warmup; "
            "_kernel_warmup(sys.argv[2])")
    try:
        return subprocess.Popen([sys.executable, "-c", code, root, json.dumps(spec)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return None


def _finish_kernel_warmup(proc, stop: bool = False) -> None:
    """Wait for the warm-up process (the Gibbs run would otherwise compile the same kernels a
    second time), or with ``stop`` end it if it is still running (the demo is leaving)."""
    if proc is None:
        return
    try:
        if not stop:
            _release(proc)
            proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _release(proc)


def _release(proc) -> None:
    """Tell the warm-up process that this one's share of the kernels is in the cache (closing
    its standard input ends its wait; idempotent)."""
    stdin = getattr(proc, "stdin", None)
    try:
        if stdin is not None and not stdin.closed:
            stdin.close()
    except OSError:
        pass


def _warm_x_and_rows(hidden: int, proc) -> None:
    """This process's share of the warm-up: the X draw's kernels of the demo's fused latent pass
    (:func:`blockbayes.kernels.cpu.precompile_latent`) and the node-row sampler; then release
    the warm-up process, which waits for them before compiling the whole pass."""
    import numpy as np

    from blockbayes.kernels import cpu

    try:
        cpu.precompile_latent("x", hidden, 1, 0, _auto_method(hidden), np.float64)
        _warm_rows()
    finally:
        _release(proc)


def _kernel_warmup(spec_json: str, wait=None) -> None:
    """Body of the warm-up process: the kernels of the demo's sampler on the demo's shapes.
    Numba compiles a kernel's callees first, each loaded from the on-disk cache when it is
    there; the demo's process compiles the X draw's kernels meanwhile
    (:func:`_warm_x_and_rows`), and this one

    * compiles the ReLU draw (the heaviest part of the fused latent pass),
    * waits for the demo's process to close its standard input (its share is then cached;
      ``wait``, when given, is called instead),
    * compiles the whole fused pass (only its top two levels are left to compile),
    * runs three sweeps of the demo's sampler on the demo's problem (same net, data shapes,
      dtype, chains and threads, hence the same compiled kernels, whatever the sampler calls).

    The compilation's critical path is then the ReLU draw plus the top of the pass (measured,
    fresh cache, load ~5: 8.7 + 4.0 s of CPU, against 16.9 s for the whole in one process)."""
    import json
    import warnings

    import numpy as np

    import blockbayes as bb
    from blockbayes import datasets, gibbs, kernels
    from blockbayes._backend import random as bbr
    from blockbayes.kernels import cpu

    from ._backend.threads import default_kernel_threads, thread_limits

    spec = json.loads(spec_json)
    warnings.simplefilter("ignore")
    threads = default_kernel_threads() if spec["threads"] is None else spec["threads"]
    restore = thread_limits(threads)           # the kernel threads gibbs.run will set
    try:
        C, n, h = spec["chains"], spec["n"], spec["hidden"]
        cpu.precompile_latent("z", h, 1, 0, _auto_method(h), np.float64)
        if wait is None:
            sys.stdin.read()                   # until the demo's process closes it (or exits)
        else:
            wait()
        z = np.zeros((C, n, h))
        kernels.latent_pass(bbr.key(0), z, z, np.zeros((1, n, 1)), np.zeros((C, 1, h + 1)),
                            spec["delta"], spec["delta"], spec["delta"])
    finally:
        restore()
    net = bb.MLP([spec["d"], h, 1], "relu", delta=spec["delta"])
    data, _ = datasets.teacher_student(net, n, 1, seed=spec["seed"])
    gibbs.run(net, data.X_train, data.y_train, num_samples=2, num_warmup=1, num_chains=C,
              seed=spec["seed"], init="zero", progress=False, diagnose=False,
              num_threads=spec["threads"])


def _auto_method(h: int) -> int:
    """The latent pass's method for the demo's hidden layer (width ``h``, one output):
    ``method="auto"``, Matheron (0) when ``1 < h``, else Cholesky (1)."""
    return 0 if 1 < h else 1


def _warm_rows() -> None:
    """Compile (or load) the Numba node-row sampler: one call on a small problem (its
    compiled kernel does not depend on the sizes)."""
    import numpy as np

    from blockbayes import kernels
    from blockbayes._backend import random as bbr

    B = np.zeros((1, 2, 1))
    kernels.gaussian_rows(bbr.key(0), B, np.ones(1), gram=np.eye(2)[None], prior_diag=np.ones((1, 2)))


def _validate(args) -> int:
    root = Path(__file__).resolve().parents[1]
    if not (root / "validation").is_dir():
        print("the validation suite lives in the source checkout (validation/); run from there", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", "validation", *args.rest], cwd=root)


def _bench(args) -> int:
    root = Path(__file__).resolve().parents[1]
    script = root / "benchmarks" / "gibbs_sweep.py"
    if not script.exists():
        print("benchmarks/ lives in the source checkout; run from there", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), *args.rest], cwd=root)


def _eval(args) -> int:
    """``blockbayes eval CONFIG ...``: a scale config (with a ``budget`` table) goes to
    :func:`blockbayes.evaluate.scale.main`, any other to :func:`blockbayes.evaluate.main`."""
    from blockbayes.evaluate import scale

    config = next((a for a in args.rest if not a.startswith("-")), None)
    if config is not None and scale.is_scale_config(config):
        return scale.main(args.rest)
    from blockbayes import evaluate

    return evaluate.main(args.rest)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="blockbayes", description="Block-structured Bayesian deep learning")
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="Gibbs on a built-in teacher-student problem")
    d.add_argument("--d", type=int, default=20, help="input dimension")
    d.add_argument("--hidden", type=int, default=10, help="hidden ReLU units")
    d.add_argument("--n", type=int, default=2000, help="training points")
    d.add_argument("--n-test", type=int, default=2000, help="test points")
    d.add_argument("--delta", type=float, default=1e-2, help="all noise variances Δ")
    d.add_argument("--chains", type=int, default=4)
    d.add_argument("--warmup", type=int, default=1000)
    d.add_argument("--samples", type=int, default=500)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default=None, help="cpu (default) or cuda")
    d.add_argument("--moves", default="auto", choices=("auto", "none", "hmc"),
                   help="extra exact moves after every sweep: 'auto' (gibbs.run's default) adds the joint "
                        "non-centred HMC move (JointHMCMove, 32 leapfrog steps) where affordable, which it is "
                        "here: the chains mix in function space at ~5x the sweep's wall-clock; 'none': the "
                        "sweep alone; 'hmc': the move whatever the cost (docs/gibbs-moves.md §6, sessions 16, 18)")
    d.add_argument("--threads", type=int, default=None, help="CPU threads (default: the libraries' own)")
    d.add_argument("--compare", default="map,laplace_kfac,vi_mf",
                   help="comma-separated methods to run side by side after Gibbs ('' to skip); "
                        "see blockbayes.evaluate.method_names()")
    d.add_argument("--memory", default="peak_rss", choices=("peak_rss", "none", "tracemalloc", "rss"),
                   help="peak memory of the baselines (blockbayes.evaluate's memory=; default peak_rss: "
                        "the peak resident set, no cost; tracemalloc slows their fits 2-4x, which the "
                        "fit_time_s column would report)")
    d.add_argument("--no-progress", action="store_true")
    d.set_defaults(func=_demo)
    v = sub.add_parser("validate", help="run the exactness report (validation suite)")
    v.add_argument("rest", nargs=argparse.REMAINDER)
    v.set_defaults(func=_validate)
    b = sub.add_parser("bench", help="sweep timing table")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    b.set_defaults(func=_bench)
    e = sub.add_parser("eval", help="run an evaluation grid from a TOML/JSON config (blockbayes.evaluate)",
                       add_help=False)
    e.add_argument("rest", nargs=argparse.REMAINDER)
    e.set_defaults(func=_eval)
    args, extra = ap.parse_known_args(argv)
    if extra and args.cmd != "eval":
        ap.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.rest = extra + list(args.rest)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
