"""Function-space convergence diagnostics of block-Gibbs runs.

Weights are not identifiable (hidden units permute and, for ReLU, rescale), so R-hat of the
weights says little; what a user cares about is the network *function*. These diagnostics take
the noise-free network output ``f_s(x_p)`` of every kept sample at a fixed probe set
``{x_p}`` (by default up to 32 training inputs at evenly spaced indices, chosen in
:func:`blockbayes.gibbs.run` and stored as ``result.probe``), plus the output-noise variance
``Δ_y`` (when learned) and the log joint ``log p(W̃, Z, X, y)`` (when stored), and compute per
scalar: mean, sd, median, the 5% / 95% quantiles, bulk and tail ESS, rank-normalised split
R-hat (:mod:`blockbayes.diagnostics`, Vehtari et al. 2021) and bulk ESS per second of sampling.

A run has *mixed* when every R-hat is ``≤ 1.01`` (the threshold of Vehtari et al.); otherwise
:func:`blockbayes.gibbs.run` prints the worst rows at the end as a :class:`ConvergenceWarning`.
With a single chain, R-hat is computed on its two halves (4 split chains).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Optional

from .. import diagnostics
from .._backend import device_of, namespace, to_numpy
from .._backend.host import np

# The summary table is a host-side report: the probe outputs ``(C, S, P·d)`` are copied to the host
# once (``to_numpy``) and the table's columns (quantiles, medians, NaN-aware maxima, sorting of the
# worst rows) are computed there through ``_backend.host``, as ``print_summary`` tools do; the
# per-sweep algorithm never touches them.

__all__ = ["ConvergenceWarning", "FunctionSummary", "function_summary", "default_probe", "warn_if_unmixed",
           "RHAT_THRESHOLD"]

RHAT_THRESHOLD = 1.01
"""Rows with a rank-normalised split R-hat above this have not mixed (Vehtari et al. 2021)."""


class ConvergenceWarning(UserWarning):
    """The chains have not mixed in function space (some R-hat above 1.01)."""


def default_probe(X, size: int = 32):
    """Probe inputs: ``min(n, size)`` rows of ``X`` at evenly spaced indices (deterministic).

    Returns an array of shape ``(P, d_in)`` in ``X``'s namespace.
    """
    xp = namespace(X)
    n = X.shape[0]
    P = min(n, int(size))
    idx = [int(round(i * (n - 1) / max(P - 1, 1))) for i in range(P)]
    return xp.take(X, xp.asarray(idx, device=device_of(X)), axis=0)


class FunctionSummary:
    """A NumPyro ``print_summary``-style table (``str()`` / ``repr()`` render it).

    Attributes
    ----------
    names : list of str
        ``f[p]`` (``f[p, k]`` for several outputs) per probe point, then ``delta_y`` and
        ``log_joint`` when present.
    columns : dict of str -> host float arrays
        ``mean, std, median, 5.0%, 95.0%, n_eff`` (bulk ESS), ``ess_tail``, ``r_hat``,
        ``n_eff/s`` (bulk ESS per second of the run, NaN when the wall time is unknown).
    max_rhat : float
        Largest R-hat over all rows (NaN rows ignored).
    mixed : bool
        ``max_rhat <= 1.01``.
    wall_time_s : float or None
    """

    COLUMNS = ("mean", "std", "median", "5.0%", "95.0%", "n_eff", "ess_tail", "r_hat", "n_eff/s")

    def __init__(self, names, columns, wall_time_s, num_chains, num_samples):

        self.names = list(names)
        self.columns = columns
        self.wall_time_s = wall_time_s
        self.num_chains = num_chains
        self.num_samples = num_samples
        r = np.asarray(columns["r_hat"], dtype=float)
        self.max_rhat = float(np.nanmax(r)) if np.any(np.isfinite(r)) else math.nan
        self.mixed = bool(np.isfinite(self.max_rhat) and self.max_rhat <= RHAT_THRESHOLD)

    def row(self, name) -> dict:
        i = self.names.index(name)
        return {c: float(self.columns[c][i]) for c in self.COLUMNS}

    def function_stats(self) -> dict:
        """Over the probe-output rows (``f[...]``) only: ``max_rhat``, ``median_rhat`` and ``min_ess``
        (bulk), NaN rows ignored; ``Δ_y`` and the log joint are left out."""
        rows = [i for i, nm in enumerate(self.names) if nm.startswith("f[")]
        r = np.asarray(self.columns["r_hat"], dtype=float)[rows]
        e = np.asarray(self.columns["n_eff"], dtype=float)[rows]
        return {"max_rhat": float(np.nanmax(r)), "median_rhat": float(np.nanmedian(r)),
                "min_ess": float(np.nanmin(e))}

    def worst(self, k: int = 5) -> "FunctionSummary":
        """The ``k`` rows with the largest R-hat (a smaller table)."""

        r = np.nan_to_num(np.asarray(self.columns["r_hat"], dtype=float), nan=-np.inf)
        idx = list(np.argsort(-r, kind="stable")[:k])
        return FunctionSummary([self.names[i] for i in idx], {c: self.columns[c][idx] for c in self.COLUMNS},
                               self.wall_time_s, self.num_chains, self.num_samples)

    def format(self) -> str:

        def fmt(c, v):
            if not np.isfinite(v):
                return "nan"
            if c in ("n_eff", "ess_tail"):
                return f"{v:.2f}"
            return f"{v:.2f}" if c in ("r_hat", "n_eff/s") else f"{v:.4g}"

        w = max([len(n) for n in self.names] + [8])
        head = " " * w + "".join(c.rjust(11) for c in self.COLUMNS)
        lines = ["", head]
        for i, nm in enumerate(self.names):
            lines.append(nm.rjust(w) + "".join(fmt(c, float(self.columns[c][i])).rjust(11) for c in self.COLUMNS))
        wt = "unknown" if self.wall_time_s is None else f"{self.wall_time_s:.2f} s"
        lines.append("")
        lines.append(f"{self.num_chains} chains x {self.num_samples} samples, wall time {wt}; "
                     f"max r_hat {self.max_rhat:.3f} ({'mixed' if self.mixed else 'NOT mixed'}: threshold {RHAT_THRESHOLD})")
        return "\n".join(lines)

    __str__ = format

    def __repr__(self):
        return self.format()


def _chains_for_rhat(a):
    """``(C, S, P)`` host array → draws usable for R-hat (a single chain is cut in two halves)."""
    if a.shape[0] >= 2:
        return a
    S = a.shape[1] // 2
    return a[0, : 2 * S].reshape((2, S) + a.shape[2:])


def function_summary(result, X_probe=None, *, prob=(0.05, 0.95)) -> FunctionSummary:
    """Function-space summary of a :class:`~blockbayes.gibbs.GibbsResult`.

    Parameters
    ----------
    result : GibbsResult
    X_probe : array of shape (P, d_in), optional
        Probe inputs; default ``result.probe`` (set by ``gibbs.run``).
    prob : (float, float)
        Quantiles reported and used by the tail ESS.

    Returns
    -------
    FunctionSummary

    Raises
    ------
    ValueError
        No probe set given or stored, or fewer than 4 samples per chain.
    """

    if X_probe is None:
        X_probe = getattr(result, "probe", None)
    if X_probe is None:
        raise ValueError("no probe inputs: pass X_probe (shape (P, d_in))")
    C, S = result.num_chains, result.num_samples
    if S < 4 or (C == 1 and S < 8):
        raise ValueError(f"function diagnostics need >= 4 samples per chain (8 with one chain); got {C} x {S}")
    F = np.asarray(to_numpy(result.predict_samples(X_probe, chunk=256)), dtype=np.float64)   # (C, S, P, d_out)
    P, d = F.shape[2], F.shape[3]
    blocks = [F.reshape(C, S, P * d)]
    names = [f"f[{p}]" if d == 1 else f"f[{p}, {k}]" for p in range(P) for k in range(d)]
    dy = np.asarray(to_numpy(result.delta_y), dtype=np.float64)
    if result.config.get("learn_noise") and np.ptp(dy) > 0:
        blocks.append(dy[..., None])
        names.append("delta_y")
    if result.log_joint is not None:
        blocks.append(np.asarray(to_numpy(result.log_joint), dtype=np.float64)[..., None])
        names.append("log_joint")
    A = np.concatenate(blocks, axis=-1)           # (C, S, K)
    if not np.all(np.isfinite(A)):
        raise ValueError("non-finite draws in the function-space summary")
    pooled = A.reshape(C * S, -1)
    cols: dict[str, Any] = {
        "mean": pooled.mean(0), "std": pooled.std(0, ddof=1), "median": np.median(pooled, 0),
        f"{100 * prob[0]:.1f}%": np.quantile(pooled, prob[0], axis=0),
        f"{100 * prob[1]:.1f}%": np.quantile(pooled, prob[1], axis=0),
    }
    const = np.ptp(A, axis=(0, 1)) == 0
    Ar = A + 0.0
    Ar[..., const] = 0.0
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess_b = np.asarray(diagnostics.ess_bulk(Ar), dtype=float).reshape(-1)
        ess_t = np.asarray(diagnostics.ess_tail(Ar, prob=prob), dtype=float).reshape(-1)
        rh = np.asarray(diagnostics.rhat(_chains_for_rhat(Ar)), dtype=float).reshape(-1)
    ess_b[const] = ess_t[const] = np.nan
    rh[const] = np.nan
    cols["n_eff"] = ess_b
    cols["ess_tail"] = ess_t
    cols["r_hat"] = rh
    wall = result.config.get("wall_time_s")
    cols["n_eff/s"] = ess_b / wall if wall else np.full_like(ess_b, np.nan)
    if tuple(cols) != FunctionSummary.COLUMNS:   # custom prob: rename the quantile columns
        cols = dict(zip(FunctionSummary.COLUMNS, cols.values()))
    return FunctionSummary(names, cols, wall, C, S)


def _advice(result) -> str:
    """What to try next, for the warning: runs without extra moves are pointed at the joint HMC move
    (measured: the user path's max R-hat(f) 1.79–2.04 → 1.007–1.13 at 5–8× the wall-clock, the
    demo's 1.88 → 1.03; docs/gibbs-moves.md §6, session 16); a result that can be continued is
    pointed at :func:`blockbayes.gibbs.extend`."""
    config = getattr(result, "config", None) or {}
    more = ("; more sweeps of these chains, moves' adaptation kept, with bb.gibbs.extend(result, num_samples)"
            if getattr(result, "continuation", None) is not None else "")
    if config.get("moves") is not None:
        return f"run longer (more warm-up for the moves' adaptation, more kept sweeps{more})"
    auto = config.get("moves_auto") or {}
    if auto.get("requested") == "auto":
        reason = str(auto.get("reason", ""))
        remedy = "give more warm-up" if reason.startswith("num_warmup") else "pass moves='hmc' to add it anyway"
        return (f"run longer, start from MAP fits (init='map', gibbs.run's default); moves='auto' did not add "
                f"the joint non-centred HMC move (JointHMCMove: {reason}); {remedy} "
                f"(docs/gibbs-moves.md §3b, §6 sessions 16 and 18){more}")
    return ("run longer, start from MAP fits (init='map', gibbs.run's default) or add the joint non-centred "
            "HMC move (moves='hmc' or blockbayes.gibbs.hmc.JointHMCMove(), nets up to 4000 weights, with warm-up; "
            f"docs/gibbs-moves.md §3b, §6 session 16){more}")


def warn_if_unmixed(result, *, rows: int = 5, stacklevel: int = 3) -> Optional[FunctionSummary]:
    """Summarise ``result`` and, if some R-hat exceeds 1.01, issue a :class:`ConvergenceWarning`
    with the worst ``rows`` rows (printed on stderr by Python's default warning filter).

    Returns the summary (``None`` when there are too few samples to compute it).
    """
    try:
        s = function_summary(result)
    except ValueError:
        return None
    if not s.mixed:
        warnings.warn("the chains have not mixed in function space (R-hat > "
                      f"{RHAT_THRESHOLD} on some probe): {_advice(result)}; worst rows:" + s.worst(rows).format(),
                      ConvergenceWarning, stacklevel=stacklevel)
    return s
