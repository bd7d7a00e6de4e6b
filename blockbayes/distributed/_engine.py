"""Where the shards live: in this process (a list) or one Dask actor per worker.

Both engines expose the same calls; the run loop in :mod:`._run` does not know which it has.
"""
from __future__ import annotations

import time
import warnings

import numpy as np

from ._shard import Shard

__all__ = ["row_ranges", "live_workers", "tune_malloc", "InProcessEngine", "DaskEngine", "ShardLost"]


def live_workers(client) -> list:
    """Addresses of the workers the scheduler knows now, sorted.

    Asks the scheduler directly. ``client.scheduler_info(n_workers=-1)`` is not used: it refreshes
    the client's cached identity and then returns the cache, which the client's own periodic
    refresh (run with ``n_workers=0``, no per-worker entries) can overwrite in between, so it
    sometimes reports a running cluster as having no workers.
    """
    info = client.sync(client.scheduler.identity, n_workers=-1)
    return sorted(info.get("workers", {}))


class ShardLost(RuntimeError):
    """A shard's worker died and it could not be re-created."""


def row_ranges(N: int, num_shards: int, boundaries=None):
    """Contiguous, balanced row ranges ``[(r0, r1), ...]``; with ``boundaries`` (the chunk edges
    of an out-of-core array) the cuts move to the nearest chunk edge, unless that would leave
    fewer than ``num_shards`` shards (then a chunk is split between two shards)."""
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    num_shards = min(num_shards, N)
    cuts = [round(i * N / num_shards) for i in range(num_shards + 1)]
    if boundaries is not None:
        edges = np.asarray(sorted(set(int(b) for b in boundaries) | {0, N}))
        snapped = sorted(set([0] + [int(edges[np.argmin(np.abs(edges - c))]) for c in cuts[1:-1]] + [N]))
        if len(snapped) == len(cuts):
            cuts = snapped
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def rows_of(arr, a, b):
    """Rows ``a:b`` of data (axis 1 of per-chain targets ``(C, n, d)``, else axis 0)."""
    return arr[:, a:b] if len(arr.shape) == 3 else arr[a:b]


class InProcessEngine:
    """Shards as plain objects in this process (the single-process blocked scan)."""

    def __init__(self, net, X, y, ranges, shard_kw):
        self.ranges = ranges
        self.shards = [Shard(net, X[a:b], rows_of(y, a, b), a, X.shape[0], **shard_kw) for a, b in ranges]
        self.recovered = 0

    def call(self, method, *args, **kw):
        return [getattr(s, method)(*args, **kw) for s in self.shards]

    def call_each(self, method, args_per_shard):
        return [getattr(s, method)(*a) for s, a in zip(self.shards, args_per_shard)]

    def sweep(self, weights, delta_y, key, rec_key, learn_noise, recover_tries):
        return self.call("sweep", weights, delta_y, key, learn_noise)

    def comm_bytes(self):
        return 0

    def close(self):
        pass


# --------------------------------------------------------------------------- Dask

_COUNTER = {"bytes": 0}


def _install_comm_counter(dask_worker=None):
    """Count the bytes every TCP comm of this process writes (Dask's own frame count)."""
    from distributed.comm import tcp

    if getattr(tcp.TCP.write, "_bb_counted", False):
        return True
    orig = tcp.TCP.write

    async def write(self, msg, serializers=None, on_error="message"):
        n = await orig(self, msg, serializers=serializers, on_error=on_error)
        _COUNTER["bytes"] += int(n or 0)
        return n

    write._bb_counted = True
    tcp.TCP.write = write
    return True


#: glibc ``mallopt`` parameters and the values set on shard workers (see :func:`tune_malloc`)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_BYTES, _MMAP_BYTES = 256 << 20, 32 << 20


def tune_malloc(dask_worker=None) -> bool:
    """Give this (worker) process glibc's usual large-block behaviour back; True if applied.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536`` so that freed memory goes
    back to the system. Setting it also fixes glibc's mmap threshold at 128 kB (it no longer
    adapts), so every block above 128 kB — the latent pass's per-task scratch, each row block's
    arrays — is mapped afresh and its pages faulted in and zeroed on every use: a shard's sweep at
    n = 10⁶ then costs ~1.6× the same sweep in the driver process (427k page faults against 10.6k,
    docs/distributed.md). This sets the mmap threshold to 32 MiB and the trim threshold to
    256 MiB with ``mallopt`` (the values glibc's adaptive threshold reaches by itself), so such
    blocks are reused from the heap. Only the memory the process keeps between sweeps changes.
    A no-op (False) where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES))


def _comm_count(dask_worker=None):
    return _COUNTER["bytes"]


class _Lazy:
    """Hides a Dask collection from Dask's argument traversal (read lazily on the worker)."""

    def __init__(self, arr):
        self.arr = arr
        self.shape = arr.shape
        self.dtype = arr.dtype

    def __getitem__(self, sl):
        return self.arr[sl]


class DaskEngine:
    """One :class:`Shard` actor per worker; data read on the worker, latents never shipped.

    ``X``/``y`` may be NumPy (each shard's rows are scattered once to its worker) or Dask arrays
    (each worker computes its own rows from the source, e.g. ``.npy`` chunks on disk; nothing
    passes through the driver). A worker lost mid-run is detected by the failed actor call; its
    shard is re-created on a live (or replacement) worker and its latents redrawn exactly from
    their conditional given the current weights (:meth:`Shard.recover`).
    """

    def __init__(self, client, net, X, y, ranges, shard_kw, *, timeout=600.0, wait_workers=60.0,
                 worker_malloc="tuned"):
        if worker_malloc not in ("tuned", "as_is"):
            raise ValueError(f"worker_malloc must be 'tuned' or 'as_is', got {worker_malloc!r}")
        self.tune = worker_malloc == "tuned"
        self.client = client
        self.net, self.X, self.y = net, X, y
        self.ranges = ranges
        self.shard_kw = dict(shard_kw)
        self.timeout = timeout
        self.wait_workers = wait_workers
        self.N = X.shape[0]
        self.recovered = 0
        self.recovery_failed_rows = 0
        self.events = []
        client.run(_install_comm_counter)
        _install_comm_counter()
        self.malloc_tuned = client.run(tune_malloc) if self.tune else {}
        self.actors = [None] * len(ranges)
        self.where = [None] * len(ranges)
        workers = self._wait_for_workers("the Dask cluster has no workers")
        futs = [self._create(i, workers[i % len(workers)]) for i in range(len(ranges))]
        for i, f in enumerate(futs):
            self.actors[i] = f.result()

    # ------------------------------------------------------------------ setup
    def _workers(self):
        return live_workers(self.client)

    def _wait_for_workers(self, why: str) -> list:
        """Live workers, waiting up to ``wait_workers`` seconds for at least one to appear."""
        deadline = time.monotonic() + self.wait_workers
        while True:
            live = self._workers()
            if live:
                return live
            if time.monotonic() > deadline:
                raise ShardLost(f"{why}: none came within {self.wait_workers} s")
            time.sleep(0.2)

    def _source(self, arr, a, b, addr):
        part = rows_of(arr, a, b)
        if hasattr(part, "dask"):
            if self.shard_kw.get("in_memory", True):
                return self.client.compute(part, workers=[addr], allow_other_workers=False)
            return _Lazy(part)
        return self.client.scatter(np.ascontiguousarray(part), workers=[addr], direct=True)

    def _create(self, i, addr):
        a, b = self.ranges[i]
        Xs = self._source(self.X, a, b, addr)
        ys = self._source(self.y, a, b, addr)
        self.where[i] = addr
        return self.client.submit(Shard, self.net, Xs, ys, a, self.N, actor=True, workers=[addr],
                                  allow_other_workers=False, pure=False, **self.shard_kw)

    # ------------------------------------------------------------------ calls
    def _gather(self, futs):
        out, lost = [], []
        for i, f in enumerate(futs):
            try:
                out.append(f.result(timeout=self.timeout))
            except Exception as exc:  # worker died (CommClosedError, OSError, …) or timed out
                out.append(None)
                lost.append((i, exc))
        return out, lost

    def call(self, method, *args, **kw):
        futs = [getattr(a, method)(*args, **kw) for a in self.actors]
        out, lost = self._gather(futs)
        if lost:
            raise ShardLost(f"{len(lost)} shard(s) lost during {method!r}: {lost[0][1]!r}")
        return out

    def call_each(self, method, args_per_shard):
        futs = [getattr(a, method)(*args) for a, args in zip(self.actors, args_per_shard)]
        out, lost = self._gather(futs)
        if lost:
            raise ShardLost(f"{len(lost)} shard(s) lost during {method!r}: {lost[0][1]!r}")
        return out

    def sweep(self, weights, delta_y, key, rec_key, learn_noise, recover_tries):
        futs = [a.sweep(weights, delta_y, key, learn_noise) for a in self.actors]
        out, lost = self._gather(futs)
        for i, exc in lost:
            out[i] = self._recover(i, exc, weights, delta_y, rec_key, learn_noise, recover_tries)
        return out

    def _recover(self, i, exc, weights, delta_y, rec_key, learn_noise, recover_tries):
        """Re-create shard ``i`` and redraw its latents exactly given the current weights."""
        t0 = time.perf_counter()
        live = self._wait_for_workers(f"shard {i} lost ({exc!r}) and no worker is left")
        load = {w: sum(1 for x in self.where if x == w) for w in live}
        addr = min(live, key=lambda w: (load[w], w))
        if self.tune:       # a replacement worker starts with the nanny's allocator settings again
            self.malloc_tuned.update(self.client.run(tune_malloc, workers=[addr]))
        self.actors[i] = self._create(i, addr).result(timeout=self.timeout)
        failed = self.actors[i].recover(weights, delta_y, rec_key, recover_tries).result(timeout=self.timeout)
        stats = self.actors[i].stats(weights, learn_noise).result(timeout=self.timeout)
        self.recovered += 1
        self.recovery_failed_rows += int(failed)
        self.events.append(dict(shard=i, rows=self.ranges[i], worker=addr, error=repr(exc),
                                seconds=time.perf_counter() - t0, rows_not_exact=int(failed)))
        if failed:
            warnings.warn(f"recovery of shard {i}: {failed} (row, chain) pairs kept a forward draw "
                          f"after {recover_tries} rejection tries (not an exact conditional draw)")
        return stats

    def comm_bytes(self) -> int:
        """Bytes written by all Dask TCP comms of the driver and the live workers so far."""
        per = self.client.run(_comm_count)
        return int(sum(per.values())) + _COUNTER["bytes"]

    def close(self):
        self.actors = []
