"""blockbayes IVON side by side with the authors' ``ivon-opt`` (PyTorch).

Usage::

    pip install ivon-opt torch==2.13.0          # the `bench` extra
    python benchmarks/ivon_vs_torch.py           # equivalence + distribution + step-time tables
    python benchmarks/ivon_vs_torch.py --quick   # smoke run

Three comparisons on the same ReLU MLP, data, hyperparameters and minibatch order:

1. **Same noise** — ``ivon-opt``'s Gaussian draws replaced by blockbayes' draws (``torch.randn``
   patched for the duration of each step): both trajectories must agree to rounding, which proves
   the update rules (sampling, Price Hessian estimate, positivity-preserving ``h`` update,
   debiased momentum, lr rescaling, weight decay) are the same.
2. **Own randomness** — each library with its own RNG, ``R`` seeds each: the posterior means and
   variances after ``T`` steps agree within Monte Carlo error (z-scores of the difference of the
   across-seed averages, per weight; reported as the largest |z| and the share above 3).
3. **Time per step** — one thread each (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``),
   float32 and float64, median over repeats, timed in the same process (ratios); the 1-minute
   load average is printed.
4. **Normal generators** — the exact standard-normal draws available to an algorithm module
   (``blockbayes._backend.random.normal``: NumPy's Philox + ziggurat, what IVON uses; the kernels'
   counter-based ``Φ⁻¹(u)`` normals via ``blockbayes.kernels.truncated_normal`` with bound −∞)
   next to ``torch.randn`` (what ``ivon-opt`` uses), for the weights of both nets, interleaved.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import contextlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import blockbayes as bb  # noqa: E402
from blockbayes import nn as bbnn  # noqa: E402
from blockbayes._backend import random as bbr  # noqa: E402
from blockbayes.vi import _natural, ivon as bivon  # noqa: E402


def make_problem(n=512, d=8, hidden=(50,), kind="regression", seed=0, classes=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    if kind == "regression":
        y = np.sin(X @ rng.normal(size=d)) + 0.3 * rng.normal(size=n)
        net = bb.MLP([d, *hidden, 1], "relu", prior_prec="fan_in", delta={"y": 0.25})
    else:
        y = np.argmax(X @ rng.normal(size=(d, classes)) + 0.5 * rng.normal(size=(n, classes)), axis=1)
        net = bb.MLP([d, *hidden, classes], "relu", likelihood="multinomial_probit", prior_prec="fan_in")
    return net, X, y


# ------------------------------------------------------------------------------- torch side
def torch_model(net, weights, dtype):
    import torch

    layers = []
    for l, W in enumerate(weights):
        lin = torch.nn.Linear(W.shape[1] - 1, W.shape[0]).to(dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(np.asarray(W[:, :-1])))
            lin.bias.copy_(torch.as_tensor(np.asarray(W[:, -1])))
        layers.append(lin)
        if l < len(weights) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def torch_to_layers(flat, net):
    """ivon-opt's flat parameter vector ([W1, b1, W2, b2, ...]) → our per-layer (d_out, d_in + 1)."""
    out, off = [], 0
    for (do, di1) in net.weight_shapes():
        di = di1 - 1
        W = flat[off:off + do * di].reshape(do, di)
        off += do * di
        b = flat[off:off + do]
        off += do
        out.append(np.concatenate([W, b[:, None]], axis=1))
    return out


def layers_to_torch(layers):
    return np.concatenate([np.concatenate([W[:, :-1].ravel(), W[:, -1]]) for W in layers])


def torch_loss(kind, out, yb, delta_y):
    import torch

    if kind == "regression":
        r = out[:, 0] - yb
        return torch.mean(r * r / (2 * delta_y) + 0.5 * np.log(2 * np.pi * delta_y))
    return torch.nn.functional.cross_entropy(out, yb)


@contextlib.contextmanager
def patched_randn(values):
    """Make the next ``torch.randn`` call return ``values`` (then restore it)."""
    import torch

    orig = torch.randn

    def fake(*args, **kw):
        return torch.as_tensor(values, dtype=kw.get("dtype"))

    torch.randn = fake
    try:
        yield
    finally:
        torch.randn = orig


def batches(n, batch_size, num_steps, seed):
    rng = np.random.default_rng(seed)
    per = n // batch_size
    out = []
    for t in range(num_steps):
        if t % per == 0:
            perm = rng.permutation(n)
        j = t % per
        out.append(perm[j * batch_size:(j + 1) * batch_size])
    return out


def run_pair(net, X, y, kind, *, hp, num_steps, batch_size, seed, same_noise, dtype=np.float64):
    """Run blockbayes' ivon.step and ivon-opt on the same batches; returns final (mean, var) of both
    as per-layer arrays ``(d_out, d_in + 1)``."""
    import ivon
    import torch

    tdt = torch.float64 if dtype == np.float64 else torch.float32
    Xd = np.asarray(X, dtype=dtype)
    lik = bbnn.resolve_likelihood(net)
    Y = bbnn.encode_targets(net, lik, Xd, np.asarray(y) if kind != "regression" else np.asarray(y, dtype=dtype))
    n = X.shape[0]
    key = bbr.key(seed)
    k_init, key = bbr.split(key, 2)
    state = bivon.init(k_init, net, Xd, hess_init=hp["hess_init"])
    wd = _natural.weight_decay(net, n, np, Xd, hp["weight_decay"])
    model = torch_model(net, [m[0] for m in state.mean], tdt)
    opt = ivon.IVON(model.parameters(), lr=hp["lr"], ess=hp["ess"], hess_init=hp["hess_init"], beta1=hp["beta1"],
                    beta2=hp["beta2"], weight_decay=hp["weight_decay"])
    Xt = torch.as_tensor(Xd)
    yt = torch.as_tensor(np.asarray(y, dtype=dtype) if kind == "regression" else np.asarray(y, dtype=np.int64))
    torch.manual_seed(seed)
    for idx in batches(n, batch_size, num_steps, seed):
        key, ks = bbr.split(key, 2)
        # the draws blockbayes' step will make (same key use as _natural.sample_gradients)
        keys = bbr.split(ks, net.num_layers)
        eps = [bbr.normal(keys[l], (1,) + tuple(M.shape), like=M)[0, 0] for l, M in enumerate(state.mean)]
        sd = [1.0 / np.sqrt(hp["ess"] * (h[0] + d[0])) for h, d in zip(state.hess, wd)]
        state, _ = bivon.step(ks, state, net, Xd[idx], Y[idx], likelihood=lik, lr=hp["lr"], ess=hp["ess"],
                              weight_decay=wd, beta1=hp["beta1"], beta2=hp["beta2"], hess_init=hp["hess_init"])
        ctx = patched_randn(layers_to_torch([e * s for e, s in zip(eps, sd)]) /
                            layers_to_torch(sd)) if same_noise else contextlib.nullcontext()
        with ctx:
            with opt.sampled_params(train=True):
                opt.zero_grad()
                loss = torch_loss(kind, model(Xt[idx]), yt[idx], net.delta_y)
                loss.backward()
        opt.step()
    flat_m = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()
    g = opt.param_groups[0]
    flat_v = (1.0 / (g["ess"] * (g["hess"] + g["weight_decay"]))).numpy()
    ours_m = [m[0] for m in state.mean]
    ours_v = [1.0 / (hp["ess"] * (h[0] + d[0])) for h, d in zip(state.hess, wd)]
    return (ours_m, ours_v), (torch_to_layers(flat_m, net), torch_to_layers(flat_v, net))


def default_hp(n):
    return dict(lr=0.05, ess=float(n), hess_init=0.5, beta1=0.9, beta2=0.999, weight_decay=1.0 / n)


def equivalence_table(quick):
    rows = []
    for kind in ("regression", "classification"):
        net, X, y = make_problem(n=256, kind=kind)
        hp = default_hp(256)
        T = 30 if quick else 200
        (om, ov), (tm, tv) = run_pair(net, X, y, kind, hp=hp, num_steps=T, batch_size=32, seed=3, same_noise=True)
        dm = max(float(np.max(np.abs(a - b))) for a, b in zip(om, tm))
        sm = max(float(np.max(np.abs(a))) for a in om)
        dv = max(float(np.max(np.abs(a - b) / b)) for a, b in zip(ov, tv))
        rows.append((kind, T, dm, sm, dv))
    print("\n## 1. Same noise: trajectories agree to rounding (float64)\n")
    print("| problem | steps | max abs diff of means | max abs mean | max rel diff of variances |")
    print("|---|---|---|---|---|")
    for kind, T, dm, sm, dv in rows:
        print(f"| {kind} | {T} | {dm:.2e} | {sm:.2f} | {dv:.2e} |")
    return rows


def distribution_table(quick):
    R = 4 if quick else 16
    T = 100 if quick else 600
    net, X, y = make_problem(n=256, kind="regression")
    hp = default_hp(256)
    ours_m, ours_v, th_m, th_v = [], [], [], []
    for r in range(R):
        (om, ov), (tm, tv) = run_pair(net, X, y, "regression", hp=hp, num_steps=T, batch_size=32, seed=100 + r,
                                      same_noise=False)
        # same start and batches within a pair; the draws differ (own RNGs)
        ours_m.append(np.concatenate([a.ravel() for a in om]))
        ours_v.append(np.concatenate([a.ravel() for a in ov]))
        th_m.append(np.concatenate([a.ravel() for a in tm]))
        th_v.append(np.concatenate([a.ravel() for a in tv]))
    out = []
    for name, a, b in (("means", ours_m, th_m), ("variances", ours_v, th_v)):
        a, b = np.array(a), np.array(b)
        d = a - b                                            # paired by seed (same start, same batches)
        se = d.std(axis=0, ddof=1) / np.sqrt(R)
        z = np.where(se > 0, d.mean(axis=0) / np.where(se > 0, se, 1), 0.0)
        rel = np.abs(d.mean(axis=0)) / np.maximum(np.abs(b.mean(axis=0)), 1e-12)
        out.append((name, float(np.max(np.abs(z))), float(np.mean(np.abs(z) > 3)), float(np.median(rel)), a.shape[1]))
    print(f"\n## 2. Own randomness: {R} seeds per library, {T} steps, batch 32 (regression, n=256, 50 hidden)\n")
    print("| quantity | weights | max abs z (paired by seed) | share abs z > 3 | median rel. diff of averages |")
    print("|---|---|---|---|---|")
    for name, zmax, share, rel, P in out:
        print(f"| {name} | {P} | {zmax:.2f} | {share:.3f} | {rel:.2e} |")
    print(f"\n(With {out[0][4]} weights, a correct pair gives max |z| ≈ 3–4 from chance; share |z| > 3 ≈ 0.003.)")
    return out


def time_steps(quick):
    import ivon
    import torch

    torch.set_num_threads(1)
    rows = []
    configs = [("UCI-size", 512, 8, (50,), 1, 32), ("UCI-size", 512, 8, (50,), 1, 128),
               ("MNIST-size", 1024, 784, (100,), 10, 128)]
    reps = 50 if quick else 300
    for name, n, d, hidden, C, B in configs:
        for dtype in (np.float32, np.float64):
            kind = "regression" if C == 1 else "classification"
            net, X, y = make_problem(n=n, d=d, hidden=hidden, kind=kind, classes=max(C, 2))
            X = X.astype(dtype)
            lik = bbnn.resolve_likelihood(net)
            Y = bbnn.encode_targets(net, lik, X, y.astype(dtype) if kind == "regression" else y)
            hp = default_hp(n)
            state = bivon.init(bbr.key(0), net, X, hess_init=hp["hess_init"])
            wd = _natural.weight_decay(net, n, np, X, hp["weight_decay"])
            idx = np.arange(B)
            Xb, Yb = X[idx], Y[idx]
            key = bbr.key(1)

            def ours():
                nonlocal state, key
                key, ks = bbr.split(key, 2)
                state, _ = bivon.step(ks, state, net, Xb, Yb, likelihood=lik, lr=1e-3, ess=hp["ess"], weight_decay=wd,
                                      hess_init=hp["hess_init"])

            tdt = torch.float32 if dtype == np.float32 else torch.float64
            model = torch_model(net, [m[0] for m in state.mean], tdt)
            opt = ivon.IVON(model.parameters(), lr=1e-3, ess=hp["ess"], hess_init=hp["hess_init"],
                            weight_decay=hp["weight_decay"])
            Xt, yt = torch.as_tensor(Xb), torch.as_tensor(y[idx].astype(dtype) if kind == "regression" else y[idx])

            def theirs():
                with opt.sampled_params(train=True):
                    opt.zero_grad()
                    loss = torch_loss(kind, model(Xt), yt, net.delta_y)
                    loss.backward()
                opt.step()

            t_o, t_t, c_o, c_t = [], [], [], []
            for _ in range(10):
                ours(); theirs()   # noqa: E702  warm-up
            for _ in range(reps):            # interleaved, so load changes hit both
                c0, t0 = time.thread_time(), time.perf_counter()
                ours()
                t_o.append(time.perf_counter() - t0); c_o.append(time.thread_time() - c0)   # noqa: E702
                c0, t0 = time.thread_time(), time.perf_counter()
                theirs()
                t_t.append(time.perf_counter() - t0); c_t.append(time.thread_time() - c0)   # noqa: E702
            mo, mt = statistics.median(t_o), statistics.median(t_t)
            co, ct = statistics.median(c_o), statistics.median(c_t)
            rows.append((name, f"{d}-{'-'.join(map(str, hidden))}-{C}", B, np.dtype(dtype).name, mo * 1e6, mt * 1e6, mo / mt,
                         co * 1e6, ct * 1e6, co / ct))
    print(f"\n## 3. Time per step (1 thread each, median of {reps}; 1-min load average {os.getloadavg()[0]:.2f})\n")
    print("(wall: perf_counter; CPU: this thread's CPU time, which a loaded machine inflates less)\n")
    print("| problem | net | batch | dtype | blockbayes µs | ivon-opt µs | ratio (ours / theirs) | "
          "blockbayes CPU µs | ivon-opt CPU µs | CPU ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.0f} | {r[5]:.0f} | {r[6]:.2f} | "
              f"{r[7]:.0f} | {r[8]:.0f} | {r[9]:.2f} |")
    return rows


def rng_table(quick):
    import torch

    from blockbayes import kernels

    torch.set_num_threads(1)
    reps = 30 if quick else 200
    rows = []
    for P in (501, 79510):                     # weights of 8-50-1 and 784-100-10
        for dtype in (np.float32, np.float64):
            like = np.zeros(P, dtype)
            ones = np.ones(P, dtype)
            tdt = torch.float32 if dtype == np.float32 else torch.float64
            gen = torch.Generator().manual_seed(0)
            ks = bbr.key(0)                    # the cost of a draw does not depend on the key

            def ours():
                return bbr.normal(ks, (P,), like=like)

            def counter():
                return kernels.truncated_normal(ks, like, ones, -np.inf, False)

            def theirs():
                return torch.randn(P, dtype=tdt, generator=gen)

            fns = (ours, counter, theirs)
            ts = [[] for _ in fns]
            for f in fns:
                f()
            for _ in range(reps):
                for f, t in zip(fns, ts):
                    t0 = time.perf_counter(); f(); t.append(time.perf_counter() - t0)   # noqa: E702
            med = [statistics.median(t) * 1e6 for t in ts]
            rows.append((P, np.dtype(dtype).name, *med))
    print(f"\n## 4. Standard-normal draws (1 thread, median of {reps}, interleaved; "
          f"1-min load average {os.getloadavg()[0]:.2f})\n")
    print("| weights | dtype | bb random.normal (Philox, ziggurat) µs | kernels counter-based Φ⁻¹(u) µs | "
          "torch.randn µs | ratio bb / torch |")
    print("|---|---|---|---|---|---|")
    for P, dt, a, b, c in rows:
        print(f"| {P} | {dt} | {a:.0f} | {b:.0f} | {c:.0f} | {a / c:.2f} |")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=["equivalence", "distribution", "timing", "rng"], default=None)
    a = ap.parse_args(argv)
    import ivon
    import torch

    print(f"# blockbayes IVON vs ivon-opt {getattr(ivon, '__version__', '0.1.x')} (torch {torch.__version__})")
    if a.only in (None, "equivalence"):
        equivalence_table(a.quick)
    if a.only in (None, "distribution"):
        distribution_table(a.quick)
    if a.only in (None, "timing"):
        time_steps(a.quick)
    if a.only in (None, "rng"):
        rng_table(a.quick)


if __name__ == "__main__":
    main()
