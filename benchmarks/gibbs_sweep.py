"""Milliseconds per block-Gibbs sweep: ours against the published sampler in the same run, the
sweep's floor, scaling in n, and the sweep under load.

Usage::

    python benchmarks/gibbs_sweep.py                  # every table (about 10 minutes idle)
    python benchmarks/gibbs_sweep.py --quick          # fewer repeats, no n = 1e6
    python benchmarks/gibbs_sweep.py --only peer,load # some tables
    python benchmarks/gibbs_sweep.py --device cuda    # our sweep on a GPU (no peer, no floor)

The published sampler (``gibbs_mcmc_nn.py`` of Piccioli et al., Apache-2.0) is *loaded* from
``--peer-dir`` (default ``../shared/peer``, with its ``bench_peer.py`` driver), never copied
into the project; it needs PyTorch (the ``bench`` extra). Each configuration runs in a fresh
subprocess with ``NUMBA_NUM_THREADS``/``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS`` set and
``torch.set_num_threads`` equal, and that one process times both samplers in *interleaved*
repeats (ours, peer, ours, peer, …) on the same problem (teacher–student data of the published
notebook, ``Δ = 1e-3``, zero start for the peer, prior start for ours, 2 % of the sweeps as
warm-up). Reported: medians over repeats and the median of the per-repeat ratios — the only
figure that means anything on a shared machine; the 1-minute load average is printed with each
table.

The *floor* of a sweep (per configuration, same process, same threads, same dtype) is
``GEMM + bytes / bandwidth + RNG``: the sweep's matrix products timed alone; one read and one
write of every latent array (``Z``, ``X`` of each hidden layer, the output targets) at the
memory bandwidth measured by a large copy; and the counter-based random numbers the sweep
needs (two uniforms per pre-activation, one normal per post-activation) generated alone.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# ../shared/peer beside the checkout; a git worktree one level deeper (wt/<name>) looks one up
PEER_DEFAULT = next((p for p in (os.path.join(ROOT, "..", "shared", "peer"),
                                 os.path.join(ROOT, "..", "..", "shared", "peer"))
                     if os.path.isdir(p)), os.path.join(ROOT, "..", "shared", "peer"))

SIZES = [(50, 50, 10_000), (50, 10, 2084), (20, 10, 1000), (50, 10, 10_000)]
if os.environ.get("BB_BENCH_SIZES"):
    SIZES = [tuple(int(v) for v in s.split(",")) for s in os.environ["BB_BENCH_SIZES"].split(";")]


# ----------------------------------------------------------------------------- workers

def _problem(d, K, n, dtype, classes, delta):
    import numpy as np

    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)).astype(dtype)
    W1 = rng.standard_normal((K, d)) / np.sqrt(d)
    H = np.maximum(X @ W1.T, 0)
    if classes:
        V = rng.standard_normal((K, classes)) / np.sqrt(K)
        y = np.argmax(H @ V + rng.standard_normal((n, classes)), axis=1)
    else:
        v = rng.standard_normal(K) / np.sqrt(K)
        y = (H @ v + np.sqrt(delta) * rng.standard_normal(n)).astype(dtype).reshape(n, 1)
    return X, y


class Ours:
    def __init__(self, d, K, n, dtype, device, classes, delta, chains=1):
        import blockbayes as bb
        from blockbayes import gibbs
        from blockbayes._backend import random as bbr, resolve_device, to_device

        X, y = _problem(d, K, n, dtype, classes, delta)
        kind, idx = resolve_device(device)
        if kind is not None:
            X, y = to_device(X, kind, idx), to_device(y, kind, idx)
        lik = "multinomial_probit" if classes else "gaussian"
        self.net = bb.MLP([d, K, classes or 1], "relu", delta=delta, likelihood=lik)
        self.X, self.y = X, y
        self.gibbs, self.bbr = gibbs, bbr
        self.state = gibbs.init(bbr.key(0), self.net, X, y, num_chains=chains)
        self.cache = gibbs.precompute(self.net, X)
        self.key = bbr.key(1)
        self.sync = (lambda: __import__("cupy").cuda.Device().synchronize()) if kind == "cuda" else (lambda: None)

    def sweep(self):
        self.key, sub = self.bbr.split(self.key)
        self.state, _ = self.gibbs.step(sub, self.state, self.net, self.X, self.y, cache=self.cache,
                                        checked=True)


class Peer:
    def __init__(self, d, K, n, dtype, classes, delta, peer_dir):
        import importlib.util

        import torch

        spec = importlib.util.spec_from_file_location("bench_peer", os.path.join(peer_dir, "bench_peer.py"))
        bp = importlib.util.module_from_spec(spec)
        sys.modules["bench_peer"] = bp
        spec.loader.exec_module(bp)
        mc, _, _ = bp.load_peer(peer_dir)
        torch.set_grad_enabled(False)
        tdt = getattr(torch, dtype)
        self.torch = torch
        if classes:
            # the peer driver's MNIST-shaped sweep, one sweep per call
            args = argparse.Namespace(seed=0, class_delta=delta, warmup=0, sweeps=0, repeats=0)
            self._cls = (bp, mc, d, K, classes, n, args, tdt)
            self._sweep = self._make_cls_sweep()
        else:
            X, y, _, _, _, teacher, lams = bp.make_problem(d, K, n, 10, delta, 0)
            torch.set_default_dtype(tdt)
            torch.manual_seed(1)
            self.S = bp.PeerSweep(mc, X, y, lams, delta, "fast", "zero", teacher, tdt)
            self._sweep = self.S.sweep

    def _make_cls_sweep(self):
        # mirrors bench_peer.bench_classification's sweep (same calls, same order)
        bp, mc, d, K, C, n, args, dtype = self._cls
        torch = self.torch
        g = torch.Generator().manual_seed(0)
        X = torch.randn(n, d, generator=g)
        W0 = torch.randn(K, d, generator=g) / d ** 0.5
        b0 = torch.randn(K, generator=g) / d ** 0.5
        W20 = torch.randn(C, K, generator=g) / K ** 0.5
        b20 = torch.randn(C, generator=g) / K ** 0.5
        y = torch.argmax(torch.clamp(X @ W0.T + b0, min=0) @ W20.T + b20, 1)
        torch.set_default_dtype(dtype)
        X = X.to(dtype)
        t = lambda v: torch.tensor(float(v), dtype=dtype)
        D = t(args.class_delta)
        lW, lb, lW2, lb2 = t(d), t(d), t(K), t(K)
        st = dict(W=torch.zeros(K, d), b=torch.zeros(K), Z=torch.zeros(n, K), X2=torch.zeros(n, K),
                  W2=torch.zeros(C, K), b2=torch.zeros(C), Z3=torch.zeros(n, C))
        Xd = X.double()
        sum_X = Xd.sum(0)[None, :]
        up = torch.cat((torch.tensor([[float(lb) * float(D) + n]], dtype=torch.float64), sum_X), 1)
        down = torch.cat((sum_X.T, Xd.T @ Xd + float(D) * float(lW) * torch.eye(d, dtype=torch.float64)), 1)
        cov = torch.linalg.inv(torch.cat((up, down), 0))
        chol = torch.linalg.cholesky(cov).to(dtype)
        covXT = (cov @ torch.cat((torch.ones(n, 1, dtype=torch.float64), Xd), 1).T).to(dtype)
        torch.manual_seed(1)

        def sweep():
            s = st
            s["Z3"] = mc.sample_Z_Lp1_multinomial_probit(s["X2"] @ s["W2"].T + s["b2"][None, :], s["Z3"], y, D, precise=True)
            s["W2"] = mc.sample_W_l_fcl(s["X2"], s["b2"], s["Z3"], lW2, D)
            s["b2"] = mc.sample_b_l_fcl(s["W2"], s["Z3"], s["X2"], D, lb2)
            s["X2"] = mc.sample_X_l_fcl(mc.ReLU(s["Z"]), s["W2"], s["b2"], s["Z3"], D, D)
            s["Z"] = mc.sample_Z_lp1_relu(X @ s["W"].T + s["b"][None, :], s["X2"], D, D, precise=True)
            s["W"], s["b"] = mc.sample_W_b_1_fcl(chol, covXT, s["Z"], D)
        return sweep

    def sweep(self):
        self._sweep()

    def sync(self):
        pass


def _time_block(obj, sweeps):
    t = time.perf_counter()
    for _ in range(sweeps):
        obj.sweep()
    obj.sync()
    return (time.perf_counter() - t) / sweeps * 1e3


def _floor(d, K, n, dtype, classes, repeats):
    """GEMM + latent bytes at measured bandwidth + RNG (ms), and its parts."""
    import numpy as np

    from blockbayes.kernels import cpu

    rng = np.random.default_rng(0)
    k = classes or 1
    X = rng.standard_normal((n, d)).astype(dtype)
    H = rng.standard_normal((n, K)).astype(dtype)
    Z = rng.standard_normal((n, K)).astype(dtype)
    T = rng.standard_normal((n, k)).astype(dtype)
    W1 = rng.standard_normal((K, d)).astype(dtype)
    W2 = rng.standard_normal((k, K)).astype(dtype)
    G = (H.T @ H).astype(np.float64) + np.eye(K)

    def gemms():
        H.T @ H                 # output-layer Gram         n K²
        H.T @ T                 # output-layer cross        n K k
        H @ W2.T                # latent pass residual      n K k
        X @ W1.T                # A = X W1^T                n d K
        (Z.T @ X) if d >= 4 * K else X.T @ Z   # first-layer cross (as blocks.augmented_cross)  n d K
        np.linalg.cholesky(G)   # (K+1)³ (the first layer's is cached per run)
        if classes:
            H @ W2.T            # latent utilities' means  n K k

    def best(f, reps):
        f()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        return float(np.median(ts)) * 1e3

    t_gemm = best(gemms, repeats * 3)
    big = np.empty(16 * 2 ** 20 // 8)
    big2 = np.empty_like(big)
    big[:] = 1.0
    t_copy = best(lambda: np.copyto(big2, big), repeats * 3)
    bw = 2 * big.nbytes / (t_copy / 1e3)                           # bytes/s (read + write)
    item = np.dtype(dtype).itemsize
    nbytes = 2 * (2 * n * K + n * k) * item                       # Z, X, targets: read + write
    t_mem = nbytes / bw * 1e3
    m = n * K
    u = np.empty(2 * m)
    nb = np.empty(m)
    tb = np.empty(m)
    idx = np.empty(m, dtype=np.uint64)
    k0, k1 = np.uint64(1), np.uint64(2)
    t_rng = best(lambda: (cpu._row_uniforms(u, 2 * m, k0, k1),
                          cpu._row_normals(nb, tb, idx, n, K, k0, k1, np.uint64(7), K)), repeats * 3)
    return dict(floor=t_gemm + t_mem + t_rng, gemm=t_gemm, mem=t_mem, rng=t_rng, bw_gbs=bw / 1e9)


def worker(cfg):
    import numpy as np

    d, K, n, dtype, device = cfg["d"], cfg["K"], cfg["n"], cfg["dtype"], cfg["device"]
    classes, delta, repeats, sweeps = cfg["classes"], cfg["delta"], cfg["repeats"], cfg["sweeps"]
    out = dict(load=os.getloadavg()[0])
    ours = Ours(d, K, n, dtype, device, classes, delta, chains=cfg.get("chains", 1))
    peer = None
    if cfg.get("peer"):
        peer = Peer(d, K, n, dtype, classes, delta, cfg["peer_dir"])
        peer.torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    warm = max(3, sweeps // 50)
    for obj in (ours, peer):
        if obj is not None:
            for _ in range(warm):
                obj.sweep()
    t_ours, t_peer, ratios = [], [], []
    for _ in range(repeats):
        a = _time_block(ours, sweeps)
        t_ours.append(a)
        if peer is not None:
            b = _time_block(peer, sweeps)
            t_peer.append(b)
            ratios.append(b / a)
    out.update(ms=float(np.median(t_ours)), ms_min=float(np.min(t_ours)))
    if peer is not None:
        out.update(peer_ms=float(np.median(t_peer)), ratio=float(np.median(ratios)))
    if cfg.get("floor") and device == "cpu":
        out.update(_floor(d, K, n, dtype, classes, repeats))
    out["load_end"] = os.getloadavg()[0]
    return out


def load_worker(cfg):
    """Sweep time of ``gibbs.run``'s default settings idle, then beside one busy-loop process."""
    import numpy as np

    import blockbayes as bb
    from blockbayes import gibbs

    d, K, n, C = cfg["d"], cfg["K"], cfg["n"], cfg["chains"]
    X, y = _problem(d, K, n, "float64", 0, cfg["delta"])
    net = bb.MLP([d, K, 1], "relu", delta=cfg["delta"])
    S = cfg["sweeps"]

    def timed():
        t = time.perf_counter()
        gibbs.run(net, X, y, num_samples=S, num_chains=C, seed=0, progress=False,
                  num_threads=cfg.get("threads"), init="prior", num_warmup=0, learn_noise=False)
        return (time.perf_counter() - t) / S * 1e3

    timed()
    idle, busy = [], []
    for _ in range(cfg["repeats"]):
        idle.append(timed())
        # its own session: a competing process from elsewhere, not a member of this one's
        # scheduling group (with autogroup scheduling a child would share this group's slice)
        p = subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        try:
            time.sleep(0.2)
            busy.append(timed())
        finally:
            p.kill()
            p.wait()
    return dict(idle=float(np.median(idle)), busy=float(np.median(busy)),
                ratio=float(np.median(np.array(busy) / np.array(idle))), load=os.getloadavg()[0])


def run_sub(cfg, threads):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if threads is not None:
        env["NUMBA_NUM_THREADS"] = str(threads)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads if os.environ.get("BLOCKBAYES_BENCH_BLAS_THREADS") == "same" else 1)
        env["OMP_NUM_THREADS"] = str(threads)     # torch's intra-op threads (peer)
    cmd = [sys.executable, __file__, "--worker", json.dumps(cfg)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _peer_available(peer_dir):
    try:
        import importlib.util

        return (importlib.util.find_spec("torch") is not None
                and os.path.exists(os.path.join(peer_dir, "gibbs_mcmc_nn.py"))
                and os.path.exists(os.path.join(peer_dir, "bench_peer.py")))
    except Exception:
        return False


def main():
    from blockbayes._backend import recycle

    # one buffer-recycling scope for the whole benchmark, as gibbs.run holds one for its loop
    # (the timed loops below call gibbs.step directly)
    recycle.enter()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--only", default="peer,mnist,scaling,load", help="comma-separated tables to run")
    ap.add_argument("--peer-dir", default=PEER_DEFAULT)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        cfg = json.loads(args.worker)
        print(json.dumps(load_worker(cfg) if cfg.get("kind") == "load" else worker(cfg)))
        return
    only = set(args.only.split(","))
    threads = [int(t) for t in args.threads.split(",")] if args.device == "cpu" else [None]
    repeats = 3 if args.quick else 7
    peer = args.device == "cpu" and _peer_available(args.peer_dir)
    if args.device == "cpu" and not peer:
        print(f"# published sampler not run: needs torch (pip install -e '.[bench]') and "
              f"{args.peer_dir}/gibbs_mcmc_nn.py + bench_peer.py")
    print(f"# blockbayes Gibbs sweep, device={args.device}, load average {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} CPUs")
    base = dict(device=args.device, delta=1e-3, classes=0, peer_dir=os.path.abspath(args.peer_dir))
    if "peer" in only:
        print("\n## one ReLU hidden layer, scalar output, Δ = 1e-3, 1 chain: ours and the published "
              "sampler in the same process (interleaved repeats)")
        print("| d | K | n | dtype | threads | ours ms (median) | published ms (median) | published/ours | "
              "floor ms (GEMM + mem + RNG) | ours/floor | load |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for d, K, n in SIZES:
            for dtype in ("float32", "float64"):
                for th in threads:
                    with_peer = peer and th in (1, None)
                    sweeps = max(5, int(2e6 / (n * K)))
                    r = run_sub(dict(base, d=d, K=K, n=n, dtype=dtype, repeats=repeats, sweeps=sweeps,
                                     peer=with_peer, floor=True), th)
                    pub = f"{r['peer_ms']:.2f} | {r['ratio']:.2f}x" if "peer_ms" in r else " | "
                    fl = (f"{r['floor']:.2f} ({r['gemm']:.2f} + {r['mem']:.2f} + {r['rng']:.2f}) | "
                          f"{r['ms'] / r['floor']:.2f}") if "floor" in r else " | "
                    print(f"| {d} | {K} | {n} | {dtype} | {th} | {r['ms']:.2f} | {pub} | {fl} | {r['load']:.1f} |",
                          flush=True)
    if "mnist" in only:
        print("\n## MNIST-shaped multinomial probit (784 inputs, 12 ReLU units, 10 classes, Gaussian "
              "inputs, Δ = 2 as the published MNIST runs), same process")
        print("| n | dtype | threads | ours ms | published ms | published/ours | floor ms (GEMM + mem + RNG) | "
              "ours/floor | ours/GEMM | load |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for n in (60_000,) if args.quick else (10_000, 60_000):
            for th in threads:
                r = run_sub(dict(base, d=784, K=12, n=n, dtype="float32", classes=10, delta=2.0,
                                 repeats=repeats, sweeps=max(3, int(3e6 / (n * 12))),
                                 peer=peer and th in (1, None), floor=True), th)
                pub = f"{r['peer_ms']:.2f} | {r['ratio']:.2f}x" if "peer_ms" in r else " | "
                fl = (f"{r['floor']:.2f} ({r['gemm']:.2f} + {r['mem']:.2f} + {r['rng']:.2f}) | "
                      f"{r['ms'] / r['floor']:.2f} | {r['ms'] / r['gemm']:.2f}") if "floor" in r else " | | "
                print(f"| {n} | float32 | {th} | {r['ms']:.2f} | {pub} | {fl} | {r['load']:.1f} |", flush=True)
    if "scaling" in only:
        print("\n## scaling in n at (d, K) = (50, 50), float32")
        print("| n | threads | ms/sweep | t(n)/t(n/10) | load |")
        print("|---|---|---|---|---|")
        ns = [10_000, 100_000] + ([] if args.quick else [1_000_000])
        for th in threads:
            prev = None
            for n in ns:
                r = run_sub(dict(base, d=50, K=50, n=n, dtype="float32", repeats=3,
                                 sweeps=max(2, int(1e6 / n))), th)
                ratio = f"{r['ms'] / prev:.2f}" if prev else ""
                print(f"| {n} | {th} | {r['ms']:.2f} | {ratio} | {r['load']:.1f} |", flush=True)
                prev = r["ms"]
    if "load" in only and args.device == "cpu":
        print("\n## under load: `gibbs.run` defaults, idle vs beside one busy-loop process "
              "(float64, the demo's problem and a larger one)")
        print("| d | K | n | chains | kernel threads | idle ms/sweep | busy ms/sweep | busy/idle (median) | load |")
        print("|---|---|---|---|---|---|---|---|---|")
        for d, K, n, C, S in ((20, 10, 2000, 4, 200), (50, 50, 10_000, 1, 40)):
            for th in (None, os.cpu_count()):
                r = run_sub(dict(kind="load", d=d, K=K, n=n, chains=C, delta=1e-3, sweeps=S, threads=th,
                                 repeats=3 if args.quick else 5), None)
                print(f"| {d} | {K} | {n} | {C} | {'default' if th is None else th} | {r['idle']:.2f} | "
                      f"{r['busy']:.2f} | {r['ratio']:.2f} | {r['load']:.1f} |", flush=True)
    print(f"\n# load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
