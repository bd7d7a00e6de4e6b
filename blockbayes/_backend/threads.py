"""CPU thread settings of a run: Numba kernel threads and BLAS/LAPACK threads.

The only place that talks to Numba's and the BLAS libraries' thread pools (``threadpoolctl``).
"""
from __future__ import annotations

__all__ = ["thread_limits", "default_kernel_threads"]


def default_kernel_threads() -> int:
    """Kernel threads a run uses by default: all usable cores but one (at least one).

    A parallel pass waits for its slowest thread; with every core in use, one busy process
    beside the run puts some thread behind it for whole scheduler slices, and the sweep
    collapses (measured here, 2 cores: 2 threads went from ~70 to ~6 sweeps/s with two other
    processes running). Leaving a core free bounds the loss to that core's share.
    """
    import os

    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    return max(1, n - 1)


_controller = None          # threadpoolctl's view of the loaded libraries, and the import count it was taken at
_controller_key = None


def _blas_controller():
    """A cached ``threadpoolctl.ThreadpoolController`` (``None`` without threadpoolctl).

    Building one scans every loaded shared library (~1.6 ms here, with torch loaded: more than a
    small MAP fit's 20 L-BFGS iterations, and :func:`blockbayes.driver.one_blas_thread` pays it on
    every call); limiting through a built one takes ~12 us. It is rebuilt whenever the number of
    imported modules has changed since (a newly loaded BLAS comes with an import: NumPy, SciPy,
    torch, ... load theirs at import time)."""
    global _controller, _controller_key
    import sys

    key = len(sys.modules)
    if _controller is None or key != _controller_key:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return None
        _controller, _controller_key = ThreadpoolController(), key
    return _controller


def thread_limits(num_threads=None, blas_threads=None):
    """Set Numba and BLAS threads for a run; returns a function that restores the settings."""
    for name, v in (("num_threads", num_threads), ("blas_threads", blas_threads)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be a positive int or None, got {v!r}")
    restore = []
    if blas_threads is not None:
        try:
            import scipy.linalg  # noqa: F401  (load SciPy's own OpenBLAS now: threadpoolctl
            #                      limits only the libraries already loaded)
        except ImportError:
            pass
        ctl = _blas_controller()
        if ctl is not None:
            lim = ctl.limit(limits=blas_threads, user_api="blas")
            restore.append(lim.restore_original_limits)
    if num_threads is not None:
        try:
            import numba

            old = numba.get_num_threads()
            numba.set_num_threads(min(num_threads, numba.config.NUMBA_NUM_THREADS))
            restore.append(lambda: numba.set_num_threads(old))
        except ImportError:
            pass
    return lambda: [r() for r in restore]
