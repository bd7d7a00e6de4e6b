"""Side by side with laplace-torch: same MLP weights, same data, same hyperparameters.

Usage::

    pip install torch==2.13.0 laplace-torch      # optional peers (CPU torch)
    python benchmarks/laplace_vs_torch.py         # regression + 3-class classification table
    python benchmarks/laplace_vs_torch.py --quick # tiny sizes, one repeat (smoke run)

For each problem a ReLU MLP is trained once to its MAP with ``blockbayes.laplace.map_fit``
(L-BFGS); the weights are copied into an ``nn.Sequential`` (float64). Then, for each matching
pair of structures — blockbayes ``full``/``kfac`` (``kfac_bias="separate"``, the curvlinops
convention)/``diag`` and laplace-torch ``full``/``kron``/``diag``, on all weights and on the last
layer — both libraries fit the Laplace approximation at the same prior precision and noise, and
we report

* the largest relative difference of the GLM predictive mean and variance (regression: ``f``
  variance; classification: probit-link probabilities) on the test set,
* the Laplace log marginal likelihood of both,
* test NLL (regression: Gaussian with ``f``-variance + σ²; classification: −mean log p(y)),
* fit + predict wall time (median of repeats; MAP training excluded).

blockbayes-only rows: the node-block structure (``block``) and the iterative block Laplace
(``bb.laplace.block`` started at the MAP, 20 sweeps), and ``kfac`` with the joint bias.
Threads: one BLAS/torch thread each (set below, before NumPy/torch load). The 1-minute load
average is printed: timings on shared 2-core machines are noisy.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import blockbayes as bb  # noqa: E402


def make_problem(kind, n, n_test, d, hidden, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + n_test, d))
    if kind == "regression":
        f = np.sin(X @ rng.normal(size=d)) + 0.5 * np.cos(2 * X[:, 0])
        y = (f + 0.2 * rng.normal(size=n + n_test))[:, None]
        net = bb.MLP([d, *hidden, 1], "relu", prior_prec=1.0, delta=0.04)
    else:
        C = 3
        logits = np.tanh(X @ rng.normal(size=(d, C))) * 3 + 0.5 * rng.normal(size=(n + n_test, C))
        y = np.argmax(logits, axis=1).astype(np.int64)
        net = bb.MLP([d, *hidden, C], "relu", likelihood="multinomial_probit", prior_prec=1.0)
    return net, X[:n], y[:n], X[n:], y[n:]


def to_torch_model(W):
    import torch
    from torch import nn

    layers = []
    for l, w in enumerate(W):
        lin = nn.Linear(w.shape[1] - 1, w.shape[0]).double()
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(w[:, :-1]))
            lin.bias.copy_(torch.as_tensor(w[:, -1]))
        layers.append(lin)
        if l < len(W) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double().eval()


def timed(fn, repeats):
    out, ts = None, []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return out, statistics.median(ts)


def nll_reg(y, mean, var):
    return float(np.mean(0.5 * np.log(2 * np.pi * var) + 0.5 * (y - mean) ** 2 / var))


def nll_cls(y, p):
    return float(-np.mean(np.log(np.maximum(p[np.arange(len(y)), y], 1e-300))))


def run_problem(kind, sizes, repeats, rows):
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from laplace import Laplace

    n, n_test, d, hidden = sizes
    net, X, y, Xt, yt = make_problem(kind, n, n_test, d, hidden)
    W = bb.laplace.map_fit(net, X, y, seed=0, progress=False, max_iter=3000)
    lam = 1.0
    sigma2 = net.delta_y if kind == "regression" else None
    model = to_torch_model(W)
    Xtt = torch.as_tensor(Xt)
    ytr = torch.as_tensor(y) if kind == "regression" else torch.as_tensor(y)
    loader = DataLoader(TensorDataset(torch.as_tensor(X), ytr), batch_size=n)
    lt_kind = "regression" if kind == "regression" else "classification"
    P = net.num_params
    print(f"\n## {kind}: n={n}, n_test={n_test}, widths={list(net.widths)}, P={P}, "
          f"prior precision {lam}" + (f", noise variance {sigma2}" if sigma2 else ""))

    def ours(structure, subset, kfac_bias="joint"):
        def go():
            la = bb.laplace.fit(net, W, X, y, subset=subset, structure=structure, kfac_bias=kfac_bias)
            if kind == "regression":
                m, v = la.predict(Xt, include_noise=False)
                return la, m[:, 0], v[:, 0]
            return la, la.predict_proba(Xt), None
        return go

    def theirs(structure, subset):
        def go():
            la = Laplace(model, lt_kind, subset_of_weights=subset, hessian_structure=structure,
                         prior_precision=lam, sigma_noise=(sigma2 ** 0.5 if sigma2 else 1.0))
            la.fit(loader)
            with torch.no_grad():
                if kind == "regression":
                    m, v = la(Xtt, pred_type="glm")
                    return la, m.numpy()[:, 0], v.reshape(len(Xt), -1).numpy()[:, 0]
                p = la(Xtt, pred_type="glm", link_approx="probit")
            return la, p.numpy(), None
        return go

    # warm-up (imports, first-call dispatch) outside the timings
    theirs("diag", "all")()
    ours("diag", "all")()
    pairs = [("full", "full", "all"), ("kfac", "kron", "all"), ("diag", "diag", "all"),
             ("full", "full", "last_layer"), ("kfac", "kron", "last_layer"), ("diag", "diag", "last_layer")]
    for ours_s, their_s, subset in pairs:
        kb = "separate" if ours_s == "kfac" else "joint"
        (la_o, m_o, v_o), t_o = timed(ours(ours_s, subset, kb), repeats)
        try:
            (la_t, m_t, v_t), t_t = timed(theirs(their_s, subset), repeats)
            lml_t = float(la_t.log_marginal_likelihood())
        except Exception as exc:  # report, don't hide
            print(f"  laplace-torch {their_s}/{subset} failed: {type(exc).__name__}: {exc}")
            la_t = m_t = v_t = t_t = lml_t = None
        lml_o = float(la_o.log_marginal_likelihood())
        if kind == "regression":
            nll_o = nll_reg(yt[:, 0], m_o, v_o + sigma2)
            nll_t = nll_reg(yt[:, 0], m_t, v_t + sigma2) if m_t is not None else float("nan")
            dm = float(np.max(np.abs(m_o - m_t) / np.maximum(np.abs(m_t), 1e-12))) if m_t is not None else float("nan")
            dv = float(np.max(np.abs(v_o - v_t) / v_t)) if v_t is not None else float("nan")
        else:
            nll_o = nll_cls(yt, m_o)
            nll_t = nll_cls(yt, m_t) if m_t is not None else float("nan")
            dm = float(np.max(np.abs(m_o - m_t) / m_t)) if m_t is not None else float("nan")
            dv = float("nan")
        rows.append(dict(problem=kind, structure=f"{ours_s}{'(sep. bias)' if kb == 'separate' else ''} vs {their_s}",
                         subset=subset, rel_mean=dm, rel_var=dv, lml_bb=lml_o, lml_lt=lml_t, nll_bb=nll_o,
                         nll_lt=nll_t, t_bb=t_o, t_lt=t_t))
    # blockbayes-only rows
    for label, fn in [("kfac (joint bias)", ours("kfac", "all")), ("block (node blocks)", ours("block", "all")),
                      ("block, last layer", ours("block", "last_layer"))]:
        (la_o, m_o, v_o), t_o = timed(fn, repeats)
        nll_o = nll_reg(yt[:, 0], m_o, v_o + sigma2) if kind == "regression" else nll_cls(yt, m_o)
        rows.append(dict(problem=kind, structure=label, subset="all" if "last" not in label else "last_layer",
                         rel_mean=float("nan"), rel_var=float("nan"), lml_bb=float(la_o.log_marginal_likelihood()),
                         lml_lt=None, nll_bb=nll_o, nll_lt=float("nan"), t_bb=t_o, t_lt=None))

    def iterative():
        bl = bb.laplace.block(net, X, y, init=W, num_steps=20, progress=False)
        if kind == "regression":
            m, v = bl.predict(Xt, include_noise=False)
            return bl, m[:, 0], v[:, 0]
        return bl, bl.predict_proba(Xt), None

    (bl, m_o, v_o), t_o = timed(iterative, repeats)
    nll_o = nll_reg(yt[:, 0], m_o, v_o + sigma2) if kind == "regression" else nll_cls(yt, m_o)
    rows.append(dict(problem=kind, structure=f"iterative block Laplace ({bl.info['num_sweeps']} sweeps from MAP)",
                     subset="all", rel_mean=float("nan"), rel_var=float("nan"),
                     lml_bb=float(bl.log_marginal_likelihood()), lml_lt=None, nll_bb=nll_o, nll_lt=float("nan"),
                     t_bb=t_o, t_lt=None))
    # MAP baseline NLL
    F = bb.model.forward(net, W, Xt)
    if kind == "regression":
        map_nll = nll_reg(yt[:, 0], F[:, 0], np.full(len(Xt), sigma2))
    else:
        p = np.exp(F - F.max(1, keepdims=True))
        map_nll = nll_cls(yt, p / p.sum(1, keepdims=True))
    print(f"  MAP (no posterior) test NLL: {map_nll:.4f}")


def fmt(x, spec):
    if x is None or (isinstance(x, float) and np.isnan(x)):
        return "–"
    return format(x, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repeat")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    try:
        import torch
        import laplace  # noqa: F401
    except Exception as exc:
        print(f"laplace-torch / torch not importable ({type(exc).__name__}: {exc}); "
              "install with `pip install torch==2.13.0 laplace-torch`")
        return 1
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    from importlib.metadata import version

    repeats = 1 if args.quick else args.repeats
    reg_sizes = (60, 40, 3, (8,)) if args.quick else (300, 200, 4, (20, 20))
    cls_sizes = (60, 40, 3, (8,)) if args.quick else (300, 200, 4, (20, 20))
    print(f"torch {torch.__version__} ({torch.get_num_threads()} thread), laplace-torch "
          f"{version('laplace-torch')}, numpy {np.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load avg (1 min) {os.getloadavg()[0]:.2f}, "
          f"repeats {repeats} (median)")
    rows = []
    run_problem("regression", reg_sizes, repeats, rows)
    run_problem("classification", cls_sizes, repeats, rows)
    print("\n| problem | structure | subset | max rel. Δ mean | max rel. Δ var | log marglik bb | log marglik lt "
          "| test NLL bb | test NLL lt | fit+predict bb [ms] | fit+predict lt [ms] |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['problem']} | {r['structure']} | {r['subset']} | {fmt(r['rel_mean'], '.1e')} | "
              f"{fmt(r['rel_var'], '.1e')} | {fmt(r['lml_bb'], '.3f')} | {fmt(r['lml_lt'], '.3f')} | "
              f"{fmt(r['nll_bb'], '.4f')} | {fmt(r['nll_lt'], '.4f')} | {fmt(1e3 * r['t_bb'], '.1f')} | "
              f"{fmt(None if r['t_lt'] is None else 1e3 * r['t_lt'], '.1f')} |")
    print("\nclassification 'max rel. Δ mean' compares the probit-link predictive probabilities.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
