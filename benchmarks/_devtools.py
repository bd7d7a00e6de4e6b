"""Shared helpers of the device benchmarks (``backend_swap.py``, ``gpu_scale.py``).

Everything here works on the CPU (NumPy) and on a GPU (CuPy) through the same calls, so the
scripts' CPU mode exercises the code path that a lent GPU will run:

* :func:`backend` — namespace, a ``sync()`` that waits for the device, a ``like`` array;
* :func:`time_ms` — median / min milliseconds of a callable, device synchronised;
* :func:`copy_bandwidth` — bytes read + written per second by a large array copy;
* :func:`free_memory`, :class:`MemoryMeter` — free memory, and peak bytes held while a block runs
  (``tracemalloc`` for NumPy on the host; CuPy's memory pool on the GPU);
* :func:`sweep_bytes` — the least memory traffic of one Gibbs sweep (formula in its docstring);
* :func:`fit_rows` — the largest ``n`` whose arrays fit in a memory budget;
* :func:`make_problem`, :func:`sweep_timer` — teacher data generated *on* the device and
  ``gibbs.step`` timed there;
* :func:`uci_available` — the UCI sets of a list found under the UCI root (the others reported).
"""
from __future__ import annotations

import math
import os
import statistics
import time
import tracemalloc
from typing import NamedTuple

import numpy as np


class Backend(NamedTuple):
    kind: str            # "cpu" or "cuda"
    xp: object           # the array module (numpy or cupy)
    sync: object         # callable: wait for all device work
    like: object         # a float64 1-element array on the device (namespace/device carrier)


def backend(device: str) -> Backend:
    """``device`` in {"cpu", "cuda", "cuda:N"} → :class:`Backend` (CuPy imported only for cuda)."""
    from blockbayes._backend import resolve_device, to_device

    kind, idx = resolve_device(device)
    if kind == "cuda":
        import cupy

        cupy.cuda.Device(idx or 0).use()
        return Backend("cuda", cupy, lambda: cupy.cuda.Device().synchronize(),
                       to_device(np.zeros(1), "cuda", idx))
    return Backend("cpu", np, lambda: None, np.zeros(1))


def time_ms(fn, sync, *, repeats=5, inner=1, warmup=1):
    """Median and min of ``repeats`` timings of ``inner`` calls of ``fn`` (ms per call)."""
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        out.append((time.perf_counter() - t) / inner * 1e3)
    return statistics.median(out), min(out)


def copy_bandwidth(be: Backend, nbytes: int, repeats: int = 10) -> float:
    """Bytes per second moved by ``dst[...] = src`` of ``nbytes`` (read + written: 2·nbytes).

    The best of ``repeats`` (after one warm-up copy) on arrays filled with random data; on a GPU
    this is the device-memory bandwidth the floors below are measured against (METHOD.md).
    """
    xp = be.xp
    m = max(1, nbytes // 4)
    src = xp.asarray(np.random.default_rng(0).random(min(m, 1 << 20), dtype=np.float32))
    src = xp.tile(src, -(-m // src.shape[0]))[:m]
    dst = xp.empty_like(src)
    best = math.inf
    dst[...] = src
    be.sync()
    for _ in range(repeats):
        t = time.perf_counter()
        dst[...] = src
        be.sync()
        best = min(best, time.perf_counter() - t)
    ok = bool(xp.all(dst[:: max(1, m // 4096)] == src[:: max(1, m // 4096)]))
    if not ok:
        raise RuntimeError("copy check failed: destination differs from source")
    del src, dst
    return 2.0 * 4 * m / best


def free_memory(be: Backend) -> tuple[int, int]:
    """``(free, total)`` bytes of the device (GPU: ``cudaMemGetInfo`` plus what CuPy's pool holds
    free; CPU: MemAvailable / MemTotal from ``/proc/meminfo``)."""
    if be.kind == "cuda":
        free, total = be.xp.cuda.runtime.memGetInfo()
        pool = be.xp.get_default_memory_pool()
        return int(free + pool.free_bytes()), int(total)
    info = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                k, v = line.split(":", 1)
                info[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return info.get("MemAvailable", 0), info.get("MemTotal", 0)


class MemoryMeter:
    """Peak bytes of arrays held while the ``with`` block runs, above what was held at entry.

    CPU: ``tracemalloc`` (NumPy reports its data buffers to it). GPU: CuPy's default memory pool
    is emptied of cached blocks at entry, and its ``total_bytes()`` at exit is its high-water
    mark (freed blocks are kept for reuse, never returned inside the block), rounded up to the
    pool's 512-byte granularity.
    """

    def __init__(self, be: Backend):
        self.be = be
        self.peak = 0

    def __enter__(self):
        if self.be.kind == "cuda":
            pool = self.be.xp.get_default_memory_pool()
            self.be.sync()
            pool.free_all_blocks()
            self._base = pool.used_bytes()
        else:
            self._was = tracemalloc.is_tracing()
            if not self._was:
                tracemalloc.start()
            tracemalloc.reset_peak()
            self._base = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc):
        if self.be.kind == "cuda":
            self.be.sync()
            self.peak = self.be.xp.get_default_memory_pool().total_bytes() - self._base
        else:
            self.peak = tracemalloc.get_traced_memory()[1] - self._base
            if not self._was:
                tracemalloc.stop()
        return False


def device_memory_used(be: Backend) -> dict:
    """Bytes in use now: CuPy pool (used / held) and the device's total − free (GPU only)."""
    if be.kind != "cuda":
        cur = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else -1
        return dict(pool_used=cur, pool_held=cur, device_used=-1)
    pool = be.xp.get_default_memory_pool()
    free, total = be.xp.cuda.runtime.memGetInfo()
    return dict(pool_used=int(pool.used_bytes()), pool_held=int(pool.total_bytes()), device_used=int(total - free))


def sweep_bytes(widths, n, itemsize, likelihood="gaussian", label_itemsize=8) -> int:
    r"""Least bytes one Gibbs sweep must read and write in device memory (the floor's traffic).

    For the net ``widths = [d_0, …, d_L]`` on ``n`` rows, each ``n``-sized array touched once per
    use, every small (``d × d``) object and every random number free (generated in registers):

    * rows of layer ``l`` (``W^l``, inputs ``H_l``: ``n × d_{l-1}``, targets ``T_l``:
      ``n × d_l``): read ``H_l`` and ``T_l`` once for the Gram and cross products
      → ``n (d_{l-1} + d_l)``;
    * post-activations ``X^h`` of each hidden layer (width ``d_h``, next targets width
      ``d_{h+1}``): read ``Z^h`` (for ``f(Z)``) and the next targets, write ``X^h``
      → ``n (2 d_h + d_{h+1})``;
    * pre-activations ``Z^h``: read the layer input (width ``d_{h-1}``) for ``A`` and ``X^h``,
      write ``Z^h`` → ``n (d_{h-1} + 2 d_h)``;
    * probit latents ``U`` (``n × d_L``): read the last hidden layer (``d_{L-1}``), the labels
      and ``U``, write ``U`` → ``n (d_{L-1} + 2 d_L)`` plus ``n`` labels.

    All times ``itemsize`` (labels ``label_itemsize``). Returns the byte count; divided by the
    measured copy bandwidth it is the sweep's memory floor.
    """
    w = [int(v) for v in widths]
    L = len(w) - 1
    elems = 0
    for l in range(1, L + 1):                         # rows of every layer
        elems += w[l - 1] + w[l]
    for h in range(1, L):                             # hidden layers 1..L-1 (0-based widths)
        elems += 2 * w[h] + w[h + 1]                  # X^h
        elems += w[h - 1] + 2 * w[h]                  # Z^h
    extra = 0
    if likelihood in ("probit", "multinomial_probit"):
        elems += w[L - 1] + 2 * w[L]
        extra = label_itemsize
    return int(n) * (elems * int(itemsize) + extra)


def fit_rows(free_bytes: int, bytes_per_row: float, fixed_bytes: float = 0.0, *, fraction=0.85, cap=None) -> int:
    """Largest ``n`` with ``fixed + n · bytes_per_row ≤ fraction · free`` (``cap`` at most)."""
    if bytes_per_row <= 0:
        raise ValueError(f"bytes_per_row must be positive, got {bytes_per_row}")
    n = int((fraction * free_bytes - fixed_bytes) // bytes_per_row)
    n = max(n, 0)
    return n if cap is None else min(n, int(cap))


class Problem(NamedTuple):
    net: object
    X: object
    y: object            # (n, 1) targets or (n,) int labels
    state: object
    cache: object


def make_problem(be: Backend, d, K, n, *, classes=0, dtype="float32", seed=0, delta=1e-3) -> Problem:
    """Teacher–student data of BENCHMARKS.md drawn directly on the device (one ReLU hidden layer of
    width ``K``; scalar Gaussian output, or ``classes``-way multinomial probit labels), the
    sampler's initial state (prior draw) and its per-data cache."""
    import blockbayes as bb
    from blockbayes import gibbs
    from blockbayes._backend import random as bbr

    xp = be.xp
    like = be.like.astype(dtype)
    keys = bbr.split(bbr.key(seed), 5)
    X = bbr.normal(keys[0], (n, d), like=like)
    W1 = bbr.normal(keys[1], (d, K), like=like) / math.sqrt(d)
    H = xp.maximum(xp.matmul(X, W1), 0)
    if classes:
        V = bbr.normal(keys[2], (K, classes), like=like) / math.sqrt(K)
        y = xp.argmax(xp.matmul(H, V) + bbr.normal(keys[3], (n, classes), like=like), axis=1)
        y = y.astype(np.int64)
        net = bb.MLP([d, K, classes], "relu", delta=delta, likelihood="multinomial_probit")
    else:
        v = bbr.normal(keys[2], (K, 1), like=like) / math.sqrt(K)
        y = xp.matmul(H, v) + math.sqrt(delta) * bbr.normal(keys[3], (n, 1), like=like)
        net = bb.MLP([d, K, 1], "relu", delta=delta)
    del H
    state = gibbs.init(keys[4], net, X, y, num_chains=1)
    cache = gibbs.precompute(net, X)
    be.sync()
    return Problem(net, X, y, state, cache)


def sweep_timer(be: Backend, prob: Problem, seed=1):
    """A callable doing one ``gibbs.step`` (keys split per call, state carried)."""
    from blockbayes import gibbs
    from blockbayes._backend import random as bbr

    box = {"key": bbr.key(seed), "state": prob.state}

    def one():
        box["key"], sub = bbr.split(box["key"])
        box["state"], _ = gibbs.step(sub, box["state"], prob.net, prob.X, prob.y, cache=prob.cache)

    one.box = box
    return one


def load() -> str:
    """The 1-minute load average, formatted (or "n/a")."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "n/a"


def uci_available(names) -> list:
    """The names among ``names`` whose split 0 loads (:func:`blockbayes.datasets.uci`); the others are
    reported as skipped (a benchmark runs on whatever data the machine has)."""
    import blockbayes as bb

    found = []
    for name in names:
        try:
            bb.datasets.uci(name, 0)
            found.append(name)
        except (FileNotFoundError, OSError, ValueError) as exc:
            print(f"skipping {name}: {exc}")
    return found
