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
  GPU path and the test oracle, not a CPU baseline);
* ``float32`` — the fused pass with ``precision="float32"`` (session 20, design note 58): what
  the move's interior leapfrog kicks use with ``JointHMCMove(precision="mixed")``, the default.

Table 1 times one call at the shapes of the UCI sets' training splits (split 0, 50 ReLU units,
``C`` chains, the noises of a prior draw). Table 2 times whole runs, ``gibbs.run(...,
moves="hmc")`` (MAP starts, Gibbs sweeps and the joint HMC move: what ``moves="auto"`` adds on the
small UCI sets), with ``blockbayes.gibbs.hmc.joint_target`` and ``symmetric_operator`` (the mass
product ``M⁻¹p``: since session 19 a Numba kernel reading the upper triangle, before it the dense
BLAS product) swapped for the previous ones in the ``previous`` arm; the same seed gives the same
chains up to rounding. Its arms (``--arms``): ``mixed`` (``JointHMCMove(precision="mixed")``, the
default since session 20: float32 interior kicks and drift, float64 ends and energies), ``float64``
(``precision="float64"``: session 19's move) and ``previous`` (float64 with the a1358ea NumPy
target and dense mass product). Table 1b times the mass product alone, float64 and float32-held.

    PYTHONPATH=$PWD BLOCKBAYES_UCI_ROOT=../shared/data/uci OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
        NUMBA_NUM_THREADS=1 python benchmarks/hmc_gradient.py [--datasets boston wine-quality-red] \
        [--chains 2 4] [--runs W S] [--reps 3] [--arms mixed float64 previous]

Sets missing under the UCI root are skipped. No assertions: a table.
"""
from __future__ import annotations

import argparse
import functools
import time
import warnings

import numpy as np

import blockbayes as bb
from _devtools import uci_available
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
    """µs per ``M⁻¹p``: the symmetric kernel (upper triangle; float64, and the matrix held in float32)
    and the dense product, one SPD ``(C, P, P)``."""
    rng = np.random.default_rng(0)
    B = rng.standard_normal((C, P, P))
    A = B @ np.swapaxes(B, 1, 2) / P + np.eye(P)
    v = rng.standard_normal((C, P))
    ops = {"symmetric": kernels.symmetric_operator(A), "dense": previous_mass_operator(A),
           "float32": kernels.symmetric_operator(A, precision="float32")}
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
               "float32": H.joint_target(net, X, T, xs, es, lam, st.delta_y, precision="float32"),
               "previous": previous_target(net, X, T, xi, eta, lam, st.delta_y),
               "reference": functools.partial(_reference_joint, net, X, T, xs, es, lam, st.delta_y)()}
    out = {k: [] for k in targets}
    for _ in range(reps):
        for k, tgt in targets.items():
            out[k].append(_median_time(lambda: tgt(theta)))
    g = {k: tgt(theta)[1] for k, tgt in targets.items()}
    rel = max(float(np.max(np.abs(g["fused"] - g[k])) / np.max(np.abs(g[k]))) for k in ("previous", "reference"))
    rel32 = float(np.max(np.abs(g["float32"] - g["fused"])) / np.max(np.abs(g["fused"])))
    return X.shape[0], theta.shape[1], out, rel, rel32


ARMS = ("mixed", "float64", "previous")


def whole_run(name, C, W, S, arm):
    """One ``gibbs.run`` with the joint HMC move of ``arm``; returns ``(wall s, test RMSE, mean accept)``."""
    data = bb.datasets.uci(name, 0)
    Xtr, ytr, Xte, yte = data[:4]
    net = _net(Xtr.shape[1])
    orig, orig_op = H.joint_target, H.symmetric_operator
    if arm == "previous":
        H.joint_target = lambda *a, precision="float64": previous_target(*a)
        H.symmetric_operator = lambda A, precision="float64": previous_mass_operator(A)
    try:
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            r = gibbs.run(net, Xtr, ytr, num_samples=S, num_warmup=W, num_chains=C, seed=0, learn_noise=True,
                          progress=False, moves=H.JointHMCMove(precision="mixed" if arm == "mixed" else "float64"))
        wall = time.perf_counter() - t
    finally:
        H.joint_target, H.symmetric_operator = orig, orig_op
    m, _ = r.predict(Xte)
    rmse = float(np.sqrt(np.mean((np.asarray(m)[:, 0] - np.asarray(yte).reshape(-1)) ** 2))) * data.y_std
    return wall, rmse, float(r.config["moves"]["accept"][0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["boston", "concrete", "wine-quality-red"])
    ap.add_argument("--chains", nargs="+", type=int, default=[2, 4])
    ap.add_argument("--runs", nargs=2, type=int, default=[300, 200], metavar=("WARMUP", "SAMPLES"),
                    help="sweeps of the whole-run table (0 0: skip it)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=["mixed", "float64"],
                    help="whole-run arms; the first is the one the others are divided by")
    a = ap.parse_args(argv)
    names = uci_available(a.datasets)
    from blockbayes.kernels import cpu
    print(f"numba threads {cpu.get_num_threads()}")
    print("\n| set | n | P | C | fused µs | float32 µs | previous µs | reference µs | previous / fused "
          "| fused / float32 | max rel. diff of ∇ (float64 arms) | float32 vs fused |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        for C in a.chains:
            n, P, t, rel, rel32 = per_call(name, C, a.reps)
            tf, t32, tp, tr = (min(t[k]) * 1e6 for k in ("fused", "float32", "previous", "reference"))
            print(f"| {name} | {n} | {P} | {C} | {tf:.0f} | {t32:.0f} | {tp:.0f} | {tr:.0f} | {tp / tf:.2f} | "
                  f"{tf / t32:.2f} | {rel:.1e} | {rel32:.1e} |", flush=True)
    print("\n| P | C | symmetric kernel µs | float32-held µs | dense µs | dense / symmetric | symmetric / float32 |")
    print("|---|---|---|---|---|---|---|")
    for P in sorted({H.num_params(_net(bb.datasets.uci(name, 0)[0].shape[1])) for name in names}):
        for C in a.chains:
            t = mass_per_call(P, C, a.reps)
            print(f"| {P} | {C} | {t['symmetric']:.0f} | {t['float32']:.0f} | {t['dense']:.0f} | "
                  f"{t['dense'] / t['symmetric']:.2f} | {t['symmetric'] / t['float32']:.2f} |", flush=True)
    W, S = a.runs
    if W + S == 0:
        return
    arms = a.arms
    base = arms[0]
    for arm in arms:                     # compile every arm's kernels before timing (a fresh cache takes ~1 min)
        whole_run(names[0], a.chains[0], 3, 2, arm)
    print("\n| set | C | sweeps | " + " | ".join(f"{k}: wall s (each rep)" for k in arms) + " | "
          + " | ".join(f"{k} / {base}" for k in arms[1:]) + " | RMSE " + " / ".join(arms) + " | accept "
          + " / ".join(arms) + " |")
    print("|---|---|---|" + "---|" * (2 * len(arms) + 1))
    for name in names:
        for C in a.chains:
            walls = {k: [] for k in arms}
            rm, acc = {}, {}
            for _ in range(a.reps):
                for arm in arms:
                    w, rm[arm], acc[arm] = whole_run(name, C, W, S, arm)
                    walls[arm].append(w)
            fmt = lambda v: " / ".join(f"{x:.1f}" for x in v)
            ratios = " | ".join(f"{np.median(walls[k]) / np.median(walls[base]):.2f}" for k in arms[1:])
            print(f"| {name} | {C} | {W} + {S} | " + " | ".join(fmt(walls[k]) for k in arms) + f" | {ratios} | "
                  + " / ".join(f"{rm[k]:.4f}" for k in arms) + " | " + " / ".join(f"{acc[k]:.3f}" for k in arms)
                  + " |", flush=True)


if __name__ == "__main__":
    main()
