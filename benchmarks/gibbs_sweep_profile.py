"""Where the time of one block-Gibbs sweep goes (float32, one thread): the pieces of
``gibbs.step`` timed in place, and the latent pass's parts timed alone on the same arrays.

Usage::

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
        python benchmarks/gibbs_sweep_profile.py [d K n] [--sweeps 30]
    ... python benchmarks/gibbs_sweep_profile.py 784 12 60000 --classes 10 --delta 2

The problem is ``benchmarks/gibbs_sweep.py``'s (teacher–student data, Δ = 1e-3, prior start,
one chain; with ``--classes`` its MNIST-shaped multinomial probit, Δ = 2 there); the state is
taken after ``--sweeps`` sweeps. The in-place timers list every product and kernel of the
sweep: ``affine`` (the GEMM ``X̃W̃^⊤`` of each layer), ``augmented_cross`` (``H̃^⊤T``, the first
layer's as ``(Z^⊤X)^⊤``), ``augmented_gram`` (the output layer's; the first layer's Gram and
Cholesky are cached per run), ``gaussian_rows``, ``latent_pass``, ``multinomial_utilities``. Wall-clock medians; print the 1-minute
load with the figures (on a shared machine only same-process comparisons mean much).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dims", nargs="*", type=int, default=[50, 50, 10_000])
    ap.add_argument("--sweeps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--classes", type=int, default=0, help="multinomial probit with this many classes")
    ap.add_argument("--delta", type=float, default=None, help="Δ (default 1e-3, or 2 with --classes)")
    args = ap.parse_args()
    d, K, n = args.dims

    import numpy as np

    import gibbs_sweep as gs
    from blockbayes import kernels, model
    from blockbayes.gibbs import conditionals as gc
    from blockbayes.gibbs import kernel as gk
    from blockbayes.kernels import _common as C
    from blockbayes.kernels import cpu

    delta = args.delta if args.delta is not None else (2.0 if args.classes else 1e-3)
    o = gs.Ours(d, K, n, "float32", "cpu", args.classes, delta)
    for _ in range(args.sweeps):
        o.sweep()

    def med(f, reps=args.repeats):
        f()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return float(np.median(ts)) * 1e3

    print(f"# ({d}, {K}, {n}) float32, classes {args.classes}, Δ = {delta}, load {os.getloadavg()[0]:.2f}")
    print(f"sweep: {med(o.sweep):.3f} ms")
    timers = {}

    def wrap(mod, name):
        f = getattr(mod, name)

        def g(*a, **k):
            t = time.perf_counter()
            r = f(*a, **k)
            timers[name] = timers.get(name, 0.0) + time.perf_counter() - t
            return r

        setattr(mod, name, g)
        return f

    saved = [(gk, "sample_rows", wrap(gk, "sample_rows")), (gk, "affine", wrap(gk, "affine")),
             (gk, "_fused_log_joint", wrap(gk, "_fused_log_joint")),
             (gk.kernels, "latent_pass", wrap(gk.kernels, "latent_pass")),
             (gc.kernels, "gaussian_rows", wrap(gc.kernels, "gaussian_rows")),
             (gc, "augmented_cross", wrap(gc, "augmented_cross")),
             (gc, "augmented_gram", wrap(gc, "augmented_gram")),
             (gc.kernels, "multinomial_utilities", wrap(gc.kernels, "multinomial_utilities"))]
    R = args.repeats
    t0 = time.perf_counter()
    for _ in range(R):
        o.sweep()
    tot = (time.perf_counter() - t0) / R * 1e3
    for mod, name, f in saved:
        setattr(mod, name, f)
    print(f"sweep with timers: {tot:.3f} ms")
    for name, v in timers.items():
        print(f"  {name}: {v / R * 1e3:.3f} ms")
    inner = sum(v for k, v in timers.items() if k not in ("sample_rows", "augmented_cross", "augmented_gram",
                                                          "gaussian_rows"))
    inner += sum(timers.get(k, 0.0) for k in ("augmented_cross", "augmented_gram", "gaussian_rows"))
    print(f"  rest (Python, small ops): {tot - inner / R * 1e3:.3f} ms")
    if args.classes:
        return
    st, X = o.state, o.X
    A = model.affine(X, st.weights[0])
    T = gc.output_targets(o.net, o.y, None, 1, X)
    key = np.array([1, 2], dtype=np.uint64)
    dn = np.full((1,), 1e-3)
    xs, _, _ = kernels.latent_pass(key, st.pre[0], A, T, st.weights[1], 1e-3, 1e-3, dn)
    c = C.relu_constants(1e-3, 1e-3, 0.0)
    a, x = A.reshape(-1), xs.reshape(-1)
    out = np.empty_like(a)
    D64 = cpu._DUMMY64
    k0, k1 = np.uint64(1), np.uint64(2)
    m = a.size
    print("latent pass parts, alone on the same arrays:")
    print(f"  latent_pass: {med(lambda: kernels.latent_pass(key, st.pre[0], A, T, st.weights[1], 1e-3, 1e-3, dn)):.3f} ms")
    print(f"  ReLU draw (_relu_range): {med(lambda: cpu._relu_range(D64, D64, D64, a, x, out, True, 0, m, k0, k1, *c, K, K, 0)):.3f} ms")
    nb, tb, idx = np.empty(m), np.empty(m), np.empty(m, dtype=np.uint64)
    print(f"  X normals (_row_normals, {m}): {med(lambda: cpu._row_normals(nb, tb, idx, n, K, k0, k1, np.uint64(7), K)):.3f} ms")
    u = np.empty(2 * m)
    print(f"  counter hash alone ({2 * m} uniforms): {med(lambda: cpu._row_uniforms(u, 2 * m, k0, k1)):.3f} ms")
    rp = a * c.p1 + x * c.p2
    rm = -(a * c.n1 + x * c.n2)
    sure = (((rm <= 0) & (rp > 0) & (c.half_log + 0.5 * rp * rp >= 38))
            | ((rp <= 0) & (rm > 0) & (c.half_log - 0.5 * rm * rm <= -38)))
    print(f"  ReLU elements decided by the bounds ('sure'): {sure.mean():.3f}")


if __name__ == "__main__":
    main()
