"""The joint HMC move's gradient: the fused Numba pass against the NumPy path it replaced.

Three implementations of the move's target ``θ ↦ (log π, ∇log π)``, timed in the same process on
the same machine, alternating:

* ``fused`` — :func:`blockbayes.kernels.frozen_noise_target` with ``impl="cpu"`` (the library's
  default on NumPy since session 19): each chain's rows in blocks of 64 through the forward and
  backward pass, nothing written but the ``(C, P)`` gradient;
* ``previous`` — the NumPy path of ``blockbayes.gibbs.hmc`` up to commit a1358ea, kept here as
  the baseline (:func:`previous_target`): the library's ``affine`` (one BLAS GEMM for all chains),
  whole-array elementwise passes over ``(C, n, width)`` and a GEMM per layer for the gradient;
* ``reference`` — ``impl="reference"``, the Array-API oracle (per-call table only: it is the
  GPU path and the test oracle, not a CPU baseline).

Table 1 times one call at the shapes of the UCI sets' training splits (split 0, 50 ReLU units,
``C`` chains, the noises of a prior draw). Table 2 times whole runs, ``gibbs.run(...,
moves="hmc")`` (MAP starts, Gibbs sweeps and the joint HMC move: what ``moves="auto"`` adds on the
small UCI sets), with ``blockbayes.gibbs.hmc.joint_target`` and ``symmetric_operator`` (the mass
product ``M⁻¹p``: since session 19 a Numba kernel reading the upper triangle, before it the dense
BLAS product) swapped for the previous ones in the ``previous`` arm; the same seed gives the same
chains up to rounding. Table 1b times the mass product alone.

    PYTHONPATH=$PWD BLOCKBAYES_UCI_ROOT=../shared/data/uci OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        NUMBA_NUM_THREADS=1 python benchmarks/hmc_gradient.py [--datasets boston wine-quality-red] \
        [--chains 2 4] [--runs W S] [--reps 3]

Sets missing under the UCI root are skipped. No assertions: a table.
"""
from __future__ import annotations

import argparse
import functools
import time
import warnings

import numpy as np

import blockbayes as bb
from blockbayes import gibbs, kernels
from blockbayes._backend import random as bbr
from blockbayes.gibbs import hmc as H
from blockbayes.gibbs.diagnostics import ConvergenceWarning
from blockbayes.gibbs.moves import _dact, forward_with_noises, frozen_noises


def previous_target(net, X, T, xi, eta, lam, delta_y):
    """The NumPy path of the move's target up to a1358ea (the baseline): ``θ ↦ (log π, ∇log π, sse)``.

    ``xi, eta``: per-layer lists. Forward with the library's ``forward_with_noises``; backward
    ``δ^m = (δ^{m+1} W^m_{:, :-1}) ⊙ f'(Z^m)`` as whole arrays, ``δ^⊤X̃`` by a GEMM per layer.
    """
    import array_api_compat.numpy as xp

    shapes = [(net.widths[m + 1], net.widths[m] + 1) for m in range(net.num_layers)]

    def target(theta):
        Ws = H.unflatten_weights(theta, shapes)
        pre, post, out = forward_with_noises(X, Ws, net, xi, eta)
        R = T - out
        sse = xp.sum(R * R, axis=(-2, -1))
        lp = H.log_target_from_sse(theta, sse, lam, delta_y)
        delta = R / delta_y[:, None, None]
        grads = [None] * net.num_layers
        for m in range(net.num_layers - 1, -1, -1):
            Hm = X if m == 0 else post[m - 1]
            gw = xp.matmul(xp.matrix_transpose(delta), Hm)
            gb = xp.sum(delta, axis=-2)
            grads[m] = xp.reshape(xp.concat([gw, gb[..., None]], axis=-1), (theta.shape[0], -1))
            if m > 0:
                Wk = Ws[m][..., :-1]
                D = delta * Wk if delta.shape[-1] == 1 else xp.matmul(delta, Wk)
                delta = D if net.activation == "identity" else _dact(xp, pre[m - 1], net.activation, net.slope) * D
        return lp, xp.concat(grads, axis=-1) - lam * theta, sse

    return target


def _net(d):
    return bb.MLP([d, 50, 1], "relu", prior_prec="fan_in", delta={"Z": 1e-3, "X": 1e-3, "y": 0.1})


def _median_time(fn, min_time=0.5):
    fn()
    times = []
    t_end = time.perf_counter() + min_time
    while time.perf_counter() < t_end or len(times) < 5:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def previous_mass_operator(A):
    """The mass product up to a1358ea: the dense batched product ``M⁻¹p`` (NumPy/BLAS)."""
    return lambda v: np.matmul(A, v[..., None])[..., 0]


def mass_per_call(P, C, reps):
    """µs per ``M⁻¹p``: the symmetric kernel (upper triangle) and the dense product, one SPD ``(C, P, P)``."""
    rng = np.random.default_rng(0)
    B = rng.standard_normal((C, P, P))
    A = B @ np.swapaxes(B, 1, 2) / P + np.eye(P)
    v = rng.standard_normal((C, P))
    ops = {"symmetric": kernels.symmetric_operator(A), "dense": previous_mass_operator(A)}
    out = {k: [] for k in ops}
    for _ in range(reps):
        for k, op in ops.items():
            out[k].append(_median_time(lambda: op(v)))
    return {k: min(t) * 1e6 for k, t in out.items()}


def _reference_joint(net, X, T, xs, es, lam, dy):
    """``joint_target`` with the data term of the Array-API reference."""
    data = kernels.frozen_noise_target(X, T, xs, es, dy, net.widths, impl="reference")

    def target(theta):
        sse, g = data(theta)
        return H.log_target_from_sse(theta, sse, lam, dy), g - lam * theta, sse

    return target


def per_call(name, C, reps):
    data = bb.datasets.uci(name, 0)
    X, y = np.asarray(data[0], dtype=np.float64), np.asarray(data[1], dtype=np.float64).reshape(-1, 1)
    net = _net(X.shape[1])
    st = gibbs.init(bbr.key(0), net, X, y, num_chains=C, init="prior")
    T = gibbs.output_targets(net, y, None, C, X)
    xi, eta = frozen_noises(st, net, X, 0)
    xs, es = H.stack_noises(xi, eta, st.delta_y, X)
    theta = H.flatten_weights(st.weights)
    lam = H.prior_precision_vector(st, net)
    targets = {"fused": H.joint_target(net, X, T, xs, es, lam, st.delta_y),
               "previous": previous_target(net, X, T, xi, eta, lam, st.delta_y),
               "reference": functools.partial(_reference_joint, net, X, T, xs, es, lam, st.delta_y)()}
    out = {k: [] for k in targets}
    for _ in range(reps):
        for k, tgt in targets.items():
            out[k].append(_median_time(lambda: tgt(theta)))
    g = {k: tgt(theta)[1] for k, tgt in targets.items()}
    rel = max(float(np.max(np.abs(g["fused"] - g[k])) / np.max(np.abs(g[k]))) for k in ("previous", "reference"))
    return X.shape[0], theta.shape[1], out, rel


def whole_run(name, C, W, S, impl):
    data = bb.datasets.uci(name, 0)
    Xtr, ytr, Xte, yte = data[:4]
    net = _net(Xtr.shape[1])
    orig, orig_op = H.joint_target, H.symmetric_operator
    if impl == "previous":
        H.joint_target = previous_target
        H.symmetric_operator = previous_mass_operator
    try:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            r = gibbs.run(net, Xtr, ytr, num_samples=S, num_warmup=W, num_chains=C, seed=0, learn_noise=True,
                          progress=False, moves="hmc")
        wall = time.perf_counter() - t
    finally:
        H.joint_target, H.symmetric_operator = orig, orig_op
    m, _ = r.predict(Xte)
    rmse = float(np.sqrt(np.mean((np.asarray(m)[:, 0] - np.asarray(yte).reshape(-1)) ** 2))) * data.y_std
    return wall, rmse


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["boston", "concrete", "wine-quality-red"])
    ap.add_argument("--chains", nargs="+", type=int, default=[2, 4])
    ap.add_argument("--runs", nargs=2, type=int, default=[300, 200], metavar=("WARMUP", "SAMPLES"),
                    help="sweeps of the whole-run table (0 0: skip it)")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args(argv)
    names = []
    for name in a.datasets:
        try:
            bb.datasets.uci(name, 0)
            names.append(name)
        except (FileNotFoundError, OSError, ValueError) as exc:
            print(f"skipping {name}: {exc}")
    from blockbayes.kernels import cpu
    print(f"numba threads {cpu.get_num_threads()}")
    print("\n| set | n | P | C | fused µs | previous µs | reference µs | previous / fused | max rel. diff of ∇ |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        for C in a.chains:
            n, P, t, rel = per_call(name, C, a.reps)
            tf, tp, tr = (min(t[k]) * 1e6 for k in ("fused", "previous", "reference"))
            print(f"| {name} | {n} | {P} | {C} | {tf:.0f} | {tp:.0f} | {tr:.0f} | {tp / tf:.2f} | {rel:.1e} |", flush=True)
    print("\n| P | C | symmetric kernel µs | dense µs | dense / symmetric |")
    print("|---|---|---|---|---|")
    for P in sorted({H.num_params(_net(bb.datasets.uci(name, 0)[0].shape[1])) for name in names}):
        for C in a.chains:
            t = mass_per_call(P, C, a.reps)
            print(f"| {P} | {C} | {t['symmetric']:.0f} | {t['dense']:.0f} | {t['dense'] / t['symmetric']:.2f} |",
                  flush=True)
    W, S = a.runs
    if W + S == 0:
        return
    print("\n| set | C | sweeps | fused: wall s (each rep) | previous: wall s (each rep) | median ratio | RMSE fused / previous |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for C in a.chains:
            walls = {"fused": [], "previous": []}
            rm = {}
            for _ in range(a.reps):
                for impl in ("fused", "previous"):
                    w, rmse = whole_run(name, C, W, S, impl)
                    walls[impl].append(w)
                    rm[impl] = rmse
            ratio = np.median(walls["previous"]) / np.median(walls["fused"])
            fmt = lambda v: " / ".join(f"{x:.1f}" for x in v)
            print(f"| {name} | {C} | {W} + {S} | {fmt(walls['fused'])} | {fmt(walls['previous'])} | {ratio:.2f} | "
                  f"{rm['fused']:.4f} / {rm['previous']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
