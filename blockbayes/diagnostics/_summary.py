"""Per-parameter summary table (mean, sd, MCSE, bulk/tail ESS, R-hat) and its text rendering."""
from __future__ import annotations

import math
from typing import Any, Mapping

from .._backend import device_of, namespace, to_numpy
from ._common import _median_sorted, _pooled_sorted, _prepare, _split, _z_scale
from ._ess import _ess_core, _ess_quantile, _nanmax2
from ._rhat import _rhat_core

__all__ = ["summary", "format_summary"]


_SUMMARY_COLUMNS = ("mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "rhat")


def _labels(name, shape):
    if not shape:
        return [name]
    import itertools

    return [f"{name}[{', '.join(str(i) for i in idx)}]"
            for idx in itertools.product(*(range(d) for d in shape))]


def summary(draws, *, prob=(0.05, 0.95)):
    """Posterior summary table: mean, sd, mcse_mean, ess_bulk, ess_tail, rhat per scalar.

    Parameters
    ----------
    draws : array or mapping of str to array
        One array of shape ``(M, N, *param_shape)`` (named ``"x"``) or a mapping
        ``name -> array`` of such arrays (same namespace and chain/draw counts not required
        across entries). Every scalar component becomes one row, labelled ``name[i, j]``
        (row-major order).
    prob : (float, float)
        Quantile levels for ``ess_tail``.

    Returns
    -------
    dict
        ``"name"``: list of ``P`` row labels; ``"mean"``, ``"sd"`` (pooled, ddof 1),
        ``"mcse_mean"``, ``"ess_bulk"``, ``"ess_tail"``, ``"rhat"`` (rank-normalised split
        R-hat): arrays of shape ``(P,)`` in the inputs' namespace and device (a common floating
        dtype). ``rhat`` is NaN for entries with a single chain (R-hat needs ``M >= 2``).

    See Also
    --------
    format_summary : the table as text.
    """
    items = list(draws.items()) if isinstance(draws, Mapping) else [("x", draws)]
    if not items:
        raise ValueError("summary() needs at least one array of draws")
    names: list[str] = []
    cols: dict[str, list[Any]] = {c: [] for c in _SUMMARY_COLUMNS}
    xp = None
    for name, arr in items:
        xp_i, x, ps = _prepare(arr, what=f"draws[{name!r}]")
        if xp is None:
            xp = xp_i
        elif xp_i is not xp:
            namespace(items[0][1], arr)  # raises a clear ValueError for mixed libraries
        m, n, p = x.shape
        pooled = xp.reshape(x, (m * n, p))
        sx = _split(xp, x)
        cols["mean"].append(xp.mean(pooled, axis=0))
        cols["sd"].append(xp.std(pooled, axis=0, correction=1))
        cols["mcse_mean"].append(cols["sd"][-1] / xp.sqrt(_ess_core(xp, sx)))
        cols["ess_bulk"].append(_ess_core(xp, _z_scale(xp, sx)))
        cols["ess_tail"].append(xp.minimum(_ess_quantile(xp, x, float(prob[0])),
                                           _ess_quantile(xp, x, float(prob[1]))))
        if m >= 2:
            bulk = _rhat_core(xp, _z_scale(xp, sx))
            med = _median_sorted(xp, _pooled_sorted(xp, sx))
            cols["rhat"].append(_nanmax2(xp, bulk, _rhat_core(xp, _z_scale(xp, xp.abs(sx - med)))))
        else:
            cols["rhat"].append(xp.full((p,), math.nan, dtype=x.dtype, device=device_of(x)))
        names.extend(_labels(str(name), ps))
    dt = xp.result_type(*[c.dtype for c in cols["mean"]])
    table: dict[str, Any] = {"name": names}
    for c in _SUMMARY_COLUMNS:
        table[c] = xp.concat([xp.astype(a, dt) for a in cols[c]], axis=0)
    return table


def format_summary(table, *, digits=3):
    """Render a :func:`summary` table as fixed-width text.

    Parameters
    ----------
    table : dict
        Output of :func:`summary`.
    digits : int
        Significant digits for mean, sd and mcse_mean; ESS is printed as an integer and R-hat
        with 3 decimals.

    Returns
    -------
    str
    """
    from .._backend.host import np

    names = list(table["name"])
    cols = {c: np.asarray(to_numpy(table[c]), dtype=np.float64) for c in _SUMMARY_COLUMNS}

    def fmt(c, v):
        if not np.isfinite(v):
            return "nan"
        if c in ("ess_bulk", "ess_tail"):
            return f"{v:.0f}"
        if c == "rhat":
            return f"{v:.3f}"
        return f"{v:.{digits}g}"

    rows = [[fmt(c, cols[c][i]) for c in _SUMMARY_COLUMNS] for i in range(len(names))]
    w_name = max([len(n) for n in names] + [4])
    widths = [max([len(c)] + [len(r[j]) for r in rows]) for j, c in enumerate(_SUMMARY_COLUMNS)]
    head = " " * w_name + "  " + "  ".join(c.rjust(w) for c, w in zip(_SUMMARY_COLUMNS, widths))
    lines = [head]
    for nm, r in zip(names, rows):
        lines.append(nm.ljust(w_name) + "  " + "  ".join(v.rjust(w) for v, w in zip(r, widths)))
    return "\n".join(lines)
