"""Per-cell budgets for :mod:`blockbayes.evaluate.scale`: cells run in worker processes that are
killed when a cell exceeds its wall-clock or memory budget.

A pool of ``jobs`` worker processes (``spawn`` start method, one BLAS/OpenMP/Numba thread each by
default, optionally ``os.nice``-d) takes cells one at a time. The parent process watches every
running cell:

* **wall clock**: a cell still running ``wall_s`` seconds after it started is killed (SIGKILL) and
  recorded as ``status="over_budget"``, ``reason="time"``; the worker is replaced;
* **memory**: the worker's resident set (``VmRSS`` in ``/proc/<pid>/status``, polled every
  ``poll_s``) may grow by at most ``mem_mb`` MiB over its size when the cell started; beyond that
  the worker is killed and the cell recorded with ``reason="memory"``. As a second line, the worker
  sets ``RLIMIT_AS`` to its current address-space size plus ``mem_mb`` (plus a slack for thread
  stacks), so an allocation far beyond the budget fails at once with :class:`MemoryError` (also
  recorded as ``reason="memory"``) instead of waiting for the next poll;
* a worker that dies for any other reason (a segfault, the kernel's OOM killer) gives
  ``status="error"`` with its exit code; the run goes on with a fresh worker.

The peak memory of a cell is measured in the worker: the kernel's resident high-water mark
``VmHWM`` is reset at the start of the cell (``/proc/self/clear_refs`` ← ``5``) and read at its end,
so ``peak_rss_mb`` covers every allocation (NumPy, BLAS, Numba, the interpreter) during the cell,
and ``peak_rss_growth_mb = peak_rss_mb − rss_at_start`` (pages the allocator reuses from earlier
cells of the same worker are not growth). Where the reset is not possible (not Linux) the
parent's polled maximum is used instead.
"""
from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import resource
import sys
import time
import traceback
from typing import Callable, Optional

__all__ = ["run_pool", "rss_mb", "peak_rss_mb", "reset_peak_rss", "OVER_BUDGET", "THREAD_ENV"]

OVER_BUDGET = "over_budget"
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
_AS_SLACK_MB = 1024          # thread stacks and allocator arenas reserve address space without using it


def _status_field(pid, field) -> Optional[float]:
    """A ``kB`` field of ``/proc/<pid>/status`` in MiB (``None`` where unavailable)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb(pid="self") -> Optional[float]:
    """Resident set size of a process in MiB (Linux ``/proc``; ``None`` elsewhere)."""
    return _status_field(pid, "VmRSS")


def peak_rss_mb(pid="self") -> Optional[float]:
    """Resident high-water mark ``VmHWM`` of a process in MiB (Linux ``/proc``; ``None`` elsewhere)."""
    return _status_field(pid, "VmHWM")


def reset_peak_rss() -> bool:
    """Reset this process's resident high-water mark to its current resident set.

    Writes ``5`` to ``/proc/self/clear_refs`` (Linux ≥ 4.0), after which ``VmHWM`` (see
    :func:`peak_rss_mb`) is the peak resident set *since this call*. Costs one system call and
    adds no hook to allocations. Returns ``False`` where it is not possible (not Linux, or
    ``/proc`` not writable); then ``VmHWM`` still holds the peak over the process's lifetime.
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _resolve(target: str) -> Callable:
    mod, _, name = target.partition(":")
    obj = importlib.import_module(mod)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _worker_main(conn, target: str, plugins, nice: int, mem_mb: Optional[float], log_path: Optional[str]):
    """Worker loop: ``("cell", key, payload)`` -> ``("start", key, rss)``, then ``("done", key, result)``."""
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    if nice:
        try:
            os.nice(int(nice))
        except OSError:
            pass
    for p in plugins or ():
        importlib.import_module(p)
    fn = _resolve(target)
    prepare = getattr(fn, "prepare", None)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        _, key, payload = msg
        try:
            if prepare is not None:
                prepare(payload)                      # warm-up (imports, JIT): not charged to the cell
        except Exception:   # noqa: BLE001 - a failed warm-up is not a result; the cell itself reports
            pass
        base = rss_mb()
        if mem_mb is not None:
            vm = _status_field("self", "VmSize")
            if vm is not None:
                lim = int((vm + float(mem_mb) + _AS_SLACK_MB) * 2 ** 20)
                try:
                    _, hard = resource.getrlimit(resource.RLIMIT_AS)
                    resource.setrlimit(resource.RLIMIT_AS, (lim if hard == resource.RLIM_INFINITY else min(lim, hard),
                                                            hard))
                except (ValueError, OSError):
                    pass
        reset = reset_peak_rss()
        conn.send(("start", key, base))
        t0 = time.perf_counter()
        try:
            result = fn(payload)
            result = dict(result)
            result.setdefault("status", "ok")
        except MemoryError as exc:
            result = {"status": OVER_BUDGET, "reason": "memory", "error": f"MemoryError: {exc}"}
        except Exception as exc:   # noqa: BLE001 - recorded; the run goes on
            tb = traceback.format_exc(limit=6)
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "traceback": tb}
        finally:
            try:
                resource.setrlimit(resource.RLIMIT_AS, resource.getrlimit(resource.RLIMIT_AS)[1:] * 2)
            except (ValueError, OSError):
                pass
        result["cell_wall_s"] = time.perf_counter() - t0
        hwm = _status_field("self", "VmHWM") if reset else None
        if hwm is not None and base is not None:
            result["peak_rss_mb"] = hwm
            result["peak_rss_growth_mb"] = max(0.0, hwm - base)
        result["rss_start_mb"] = base
        try:
            conn.send(("done", key, result))
        except (OSError, ValueError):
            return


class _Worker:
    def __init__(self, ctx, target, plugins, nice, mem_mb, log_path):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, target, plugins, nice, mem_mb, log_path),
                                daemon=True)
        self.proc.start()
        child.close()
        self.key = None
        self.sent_at = None      # when the cell was handed over (warm-up clock)
        self.started_at = None   # when the cell itself started (budget clock)
        self.base_rss = None
        self.max_rss = None

    def assign(self, key, payload, wall_s, mem_mb):
        self.key, self.sent_at, self.started_at, self.base_rss, self.max_rss = key, time.perf_counter(), None, None, None
        b = payload.get("_budget") if isinstance(payload, dict) else None
        self.wall_s = float((b or {}).get("wall_s") or wall_s)
        m = (b or {}).get("mem_mb", mem_mb) if b else mem_mb
        self.mem_mb = None if m is None else float(m)
        self.conn.send(("cell", key, payload))

    def kill(self):
        try:
            self.proc.kill()
        except Exception:   # noqa: BLE001
            pass
        self.proc.join(5)
        try:
            self.conn.close()
        except OSError:
            pass

    def stop(self):
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.kill()


def run_pool(next_cell: Callable, on_result: Callable, *, target: str, jobs: int = 1, wall_s: float = 600.0,
             mem_mb: Optional[float] = None, warmup_s: Optional[float] = None, plugins=(), nice: int = 0,
             threads: Optional[int] = 1, poll_s: float = 0.05, log_dir: Optional[str] = None) -> None:
    """Run cells in ``jobs`` worker processes under a wall-clock and memory budget.

    Parameters
    ----------
    next_cell : callable
        ``next_cell() -> (key, payload)``: the next cell to run; ``None`` when no cell can start
        now (e.g. it waits for a smaller size of the same method); the string ``"done"`` when
        nothing is left.
    on_result : callable
        ``on_result(key, result)`` with ``result`` a dict: ``status`` (``"ok"``, ``"error"`` or
        ``"over_budget"`` with ``reason`` ``"time"``/``"memory"``), ``cell_wall_s``,
        ``peak_rss_growth_mb`` and what the target returned.
    target : str
        ``"module:function"`` called in the worker as ``function(payload) -> dict``; an attribute
        ``function.prepare(payload)``, if present, runs first and is not charged to the cell.
    jobs : int
        Worker processes (cells in parallel).
    wall_s, mem_mb : float
        The per-cell budget (seconds of wall clock; MiB of resident-set growth, ``None``: none). A
        payload that is a dict with a ``"_budget"`` entry (``{"wall_s": ..., "mem_mb": ...}``)
        overrides them for that cell (the worker's ``RLIMIT_AS`` backstop uses the pool's
        ``mem_mb``).
    warmup_s : float, optional
        Limit of the uncharged ``prepare`` step (default ``max(wall_s, 120)``); a worker that
        exceeds it is killed and the cell recorded as an error.
    plugins : sequence of str
        Modules every worker imports first (e.g. ones that :func:`register_method` extra methods).
    nice : int
        ``os.nice`` increment of the workers.
    threads : int or None
        Threads of BLAS/OpenMP/Numba in the workers (environment variables set before they start);
        ``None`` leaves the environment alone.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if wall_s <= 0:
        raise ValueError(f"wall_s must be > 0, got {wall_s}")
    if mem_mb is not None and mem_mb <= 0:
        raise ValueError(f"mem_mb must be > 0 or None, got {mem_mb}")
    warmup_s = float(warmup_s) if warmup_s is not None else max(float(wall_s), 120.0)
    ctx = mp.get_context("spawn")
    saved = {k: os.environ.get(k) for k in THREAD_ENV}
    if threads is not None:
        for k in THREAD_ENV:
            os.environ[k] = str(int(threads))
    workers: list = []
    count = [0]

    def spawn():
        count[0] += 1
        log = os.path.join(log_dir, f"worker_{count[0]}.log") if log_dir else None
        return _Worker(ctx, target, list(plugins), nice, mem_mb, log)

    try:
        exhausted = False
        while True:
            # hand out cells to idle workers
            while not exhausted:
                idle = [w for w in workers if w.key is None]
                if not idle and len(workers) >= jobs:
                    break
                nxt = next_cell()
                if nxt == "done":
                    exhausted = True
                    break
                if nxt is None:
                    break
                w = idle[0] if idle else spawn()
                if not idle:
                    workers.append(w)
                w.assign(*nxt, wall_s, mem_mb)
            busy = [w for w in workers if w.key is not None]
            if not busy:
                if exhausted:
                    break
                nxt = next_cell()           # nothing running and nothing startable: ask once more
                if nxt == "done":
                    break
                if nxt is None:
                    raise RuntimeError("scheduler deadlock: no cell running and none can start")
                w = next((w for w in workers if w.key is None), None)
                if w is None:
                    w = spawn()
                    workers.append(w)
                w.assign(*nxt, wall_s, mem_mb)
                continue
            time.sleep(poll_s)
            now = time.perf_counter()
            for w in busy:
                result = None
                try:
                    while w.conn.poll():
                        kind, key, val = w.conn.recv()
                        if kind == "start":
                            w.started_at, w.base_rss = time.perf_counter(), val
                        elif kind == "done":
                            result = val
                            break
                except (EOFError, OSError):
                    pass
                if result is not None:
                    if "peak_rss_growth_mb" not in result and w.max_rss is not None and w.base_rss is not None:
                        result["peak_rss_growth_mb"] = max(0.0, w.max_rss - w.base_rss)
                    key = w.key
                    w.key = None
                    on_result(key, result)
                    continue
                if not w.proc.is_alive():
                    key = w.key
                    code = w.proc.exitcode
                    w.kill()
                    workers.remove(w)
                    reason = {"status": "error", "error": f"worker died (exit code {code})"}
                    if w.started_at is not None:
                        reason["cell_wall_s"] = now - w.started_at
                    on_result(key, reason)
                    continue
                if w.started_at is None:
                    if now - w.sent_at > warmup_s:
                        key = w.key
                        w.kill()
                        workers.remove(w)
                        on_result(key, {"status": "error", "error": f"warm-up exceeded {warmup_s:g} s"})
                    continue
                rss = rss_mb(w.proc.pid)
                if rss is not None:
                    w.max_rss = rss if w.max_rss is None else max(w.max_rss, rss)
                over = None
                if now - w.started_at > w.wall_s:
                    over = {"status": OVER_BUDGET, "reason": "time", "cell_wall_s": now - w.started_at,
                            "error": f"killed after {now - w.started_at:.1f} s (budget {w.wall_s:g} s)"}
                elif w.mem_mb is not None and rss is not None and w.base_rss is not None and rss - w.base_rss > w.mem_mb:
                    over = {"status": OVER_BUDGET, "reason": "memory", "cell_wall_s": now - w.started_at,
                            "peak_rss_growth_mb": rss - w.base_rss,
                            "error": f"killed at {rss - w.base_rss:.0f} MiB resident growth (budget {w.mem_mb:g} MiB)"}
                if over is not None:
                    key = w.key
                    w.kill()
                    workers.remove(w)
                    on_result(key, over)
    finally:
        for w in workers:
            if w.key is not None:
                w.kill()
            else:
                w.stop()
        for k, v in saved.items():
            if threads is None:
                break
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
