"""Bitwise before/after check of every run loop: save the outputs of small seeded runs with one
checkout, compare them with another (a refactor of a loop must not change a single bit).

Usage::

    PYTHONPATH=/path/to/old python benchmarks/bitwise_runs.py save /tmp/old.npz
    PYTHONPATH=$PWD          python benchmarks/bitwise_runs.py compare /tmp/old.npz

Covers gibbs (float64/float32, thinning, learned noise and prior, NonCentredMove, AnnealedDelta,
multinomial probit), vi rao_blackwell/cavi (fixed and tol-stopped)/sampled/targets/ivon
(minibatches, learned noise)/vogn (classification) and laplace.block (mode, extrapolation,
convergence/stall stops, sample variant, classification), vi.mean_field (minibatches + learned
noise, float32, classification), laplace.map_fit (L-BFGS float64/float32 with restarts and learned
noise, Adam) and map_ensemble, and blockbayes.distributed.run in process. Old keyword spellings are used so that
checkouts before the vocabulary change run it too (their DeprecationWarnings are silenced).
"""
import sys
import warnings

import numpy as np

import blockbayes as bb
from blockbayes.gibbs.moves import NonCentredMove
from blockbayes.gibbs.anneal import AnnealedDelta
warnings.simplefilter("ignore")
if len(sys.argv) != 3 or sys.argv[1] not in ("save", "compare"):
    sys.exit(__doc__ + "\nerror: expected `save PATH` or `compare PATH`")
mode, path = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
n, d = 60, 3
X = rng.standard_normal((n, d))
y = np.sin(X[:, :1]) + 0.1 * rng.standard_normal((n, 1))
X32, y32 = X.astype(np.float32), y.astype(np.float32)
net = bb.MLP([d, 8, 8, 1], delta=1e-2)
net1 = bb.MLP([d, 8, 1], delta=1e-2)
netc = bb.MLP([d, 8, 3], likelihood="multinomial_probit", delta=1e-2)
yc = rng.integers(0, 3, n)
out = {}
def put(name, r, fields):
    for f in fields:
        v = getattr(r, f) if not isinstance(r, dict) else r[f]
        if isinstance(v, (tuple, list)):
            for i, a in enumerate(v):
                out[f"{name}.{f}.{i}"] = np.asarray(bb._backend.to_numpy(a))
        elif isinstance(v, dict):
            for k, a in v.items():
                out[f"{name}.{f}.{k}"] = np.asarray(bb._backend.to_numpy(a))
        elif v is not None:
            out[f"{name}.{f}"] = np.asarray(bb._backend.to_numpy(v))
G = ["weights", "delta_y", "lam_w", "lam_b", "log_joint"]
kw = dict(progress=False, diagnose=False, init="prior")
put("g64", bb.gibbs.run(net, X, y, num_samples=5, num_warmup=3, num_chains=2, thin=2, seed=3, **kw), G)
put("g32", bb.gibbs.run(net, X32, y32, num_samples=5, num_warmup=3, num_chains=2, seed=3, **kw), G)
put("g1", bb.gibbs.run(net1, X, y, num_samples=4, num_warmup=0, num_chains=2, seed=3, learn_noise=True,
                       learn_prior=True, **kw), G)
put("gmove", bb.gibbs.run(net, X, y, num_samples=4, num_warmup=4, num_chains=2, seed=4, moves=NonCentredMove(), **kw), G)
put("gsched", bb.gibbs.run(net, X, y, num_samples=4, num_warmup=4, num_chains=2, seed=4, schedule=AnnealedDelta(), **kw), G)
put("gclass", bb.gibbs.run(netc, X, yc, num_samples=4, num_warmup=0, num_chains=2, seed=5, **kw), G)
V = ["means", "covs", "delta_y", "elbo", "trace"]
put("rb", bb.vi.rao_blackwell.run(net, X, y, num_samples=4, num_warmup=2, num_chains=2, cavi_iters=3, cavi_restarts=2, seed=6, progress=False), V)
put("cavi", bb.vi.cavi.run(net, X, y, num_iters=5, num_restarts=2, seed=7, progress=False), V)
put("cavitol", bb.vi.cavi.run(net, X, y, num_iters=50, num_restarts=2, tol=1e-3, seed=7, progress=False), V)
put("sampled", bb.vi.sampled.run(net, X, y, num_iters=4, num_samples=3, cavi_iters=3, cavi_restarts=2, seed=8, progress=False), V)
put("targets", bb.vi.targets.run(net, X, y, num_iters=4, num_restarts=2, use="sample", seed=9, progress=False), V)
put("ivon", bb.vi.ivon.run(net, X, y, num_steps=7, batch_size=25, num_restarts=2, learn_noise=True, seed=10, progress=False), V)
put("vogn", bb.vi.vogn.run(netc, X, yc, num_steps=6, batch_size=20, seed=11, progress=False), V)
L = dict(progress=False)
LK = "num_sweeps"
put("la_mode", bb.laplace.block(net, X, y, seed=1, **{LK: 15}, **L), ["weights"])
put("la_extra", bb.laplace.block(net, X, y, seed=2, extrapolate=True, **{LK: 12}, **L), ["weights"])
put("la_conv", bb.laplace.block(net, X, y, seed=2, tol=5e-2, **{LK: 100}, **L), ["weights"])
put("la_stall", bb.laplace.block(net, X, y, seed=2, ftol=0.5, **{LK: 100}, **L), ["weights"])
put("la_samp", bb.laplace.block(net, X, y, seed=3, samples=3, sample_sweeps=4, **{LK: 5}, **L), ["weights"])
put("la_cls", bb.laplace.block(netc, X, yc, seed=4, **{LK: 10}, **L), ["weights"])
put("mf", bb.vi.mean_field.run(net, X, y, num_steps=12, num_mc=3, batch_size=25, num_restarts=2, learn_noise=True, seed=12, progress=False), V)
put("mf32", bb.vi.mean_field.run(net, X32, y32, num_steps=10, num_mc=2, seed=13, progress=False), V)
put("mfcls", bb.vi.mean_field.run(netc, X, yc, num_steps=8, num_mc=2, num_restarts=3, seed=14, progress=False), V)
M = dict(progress=False, return_info=True)
def put_map(name, r):
    W, info = r
    for i, a in enumerate(W):
        out[f"{name}.w.{i}"] = np.asarray(bb._backend.to_numpy(a))
    if "delta_y" in info:
        out[f"{name}.delta_y"] = np.asarray(info["delta_y"])
put_map("map64", bb.laplace.map_fit(net, X, y, seed=15, restarts=2, max_iter=40, learn_noise=True, **M))
put_map("map32", bb.laplace.map_fit(net, X32, y32, seed=15, max_iter=40, **M))
put_map("mapadam", bb.laplace.map_fit(netc, X, yc, method="adam", seed=16, num_epochs=5, batch_size=16, **M))
put_map("mapens", bb.laplace.map_ensemble(net, X32, y32, members=3, seed=17, max_iter=30, **M))
from blockbayes import distributed as dd
put("dist", dd.run(net, X, y, num_samples=3, num_warmup=2, num_chains=2, num_shards=2, seed=18, progress=False), G)
if mode == "save":
    np.savez(path, **out)
    print("saved", len(out))
else:
    ref = np.load(path)
    bad = [k for k in ref.files if k not in out or ref[k].shape != out[k].shape
           or not np.array_equal(ref[k], out[k], equal_nan=True)]
    extra = [k for k in out if k not in ref.files]
    print("compared", len(ref.files), "mismatch", bad, "extra", extra)
    sys.exit(1 if bad else 0)
