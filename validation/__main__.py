"""``python -m validation``: the Gibbs exactness report.

Runs every fixed-configuration family of :mod:`validation.gibbs_suite` (and the deterministic
reference cross-checks), then its broken twin, and prints one row per family: the check with the
largest statistic/threshold ratio, whether all checks passed, and the same for the twin (which must
be caught: at least one check fails). Exit status 0 iff every family passed and every twin was
caught.

Options: ``--tier fast|slow`` (sizes; default fast), ``--only TEXT`` (families whose name contains
TEXT), ``--no-twins``, ``--all-checks`` (print every check of every family, not only the worst).
"""
from __future__ import annotations

import argparse
import sys
import time


def _short(name, width):
    return name if len(name) <= width else name[: width - 1] + "…"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m validation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tier", choices=("fast", "slow"), default="fast")
    ap.add_argument("--only", default=None)
    ap.add_argument("--no-twins", action="store_true")
    ap.add_argument("--all-checks", action="store_true")
    args = ap.parse_args(argv)

    import numpy  # noqa: F401
    import scipy.linalg  # noqa: F401
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover
        pass

    from . import gibbs_suite as GS
    from ._stats import DELTA_ITEM, SUITE_DELTA, ratio, worst

    fams = [f for f in GS.families(args.tier) if args.only is None or args.only.lower() in f.name.lower()]
    print(f"blockbayes Gibbs exactness report — tier {args.tier}; false-failure bound {DELTA_ITEM:g} per family "
          f"(≤ {SUITE_DELTA:g} for the run); a twin must FAIL (be caught).")
    hdr = (f"{'family':<44} {'worst check':<58} {'stat':>9} {'thresh':>9} {'ratio':>6} {'ok':>4} | "
           f"{'twin':<15} {'stat':>9} {'thresh':>9} {'ratio':>6} {'caught':>6} {'time':>6}")
    print(hdr)
    print("-" * len(hdr))
    all_ok = True
    t_total = time.time()

    rows = []
    if args.only is None or "reference" in args.only.lower():
        t0 = time.time()
        det = GS.deterministic_checks()
        rows.append(("reference cross-checks (deterministic)", det, None, None, time.time() - t0))
    for f in fams:
        t0 = time.time()
        cs = f.checks(args.tier)
        tw = None if (args.no_twins or args.tier not in f.twin_tiers) else f.twin_checks(args.tier)
        rows.append((f.name, cs, f.twin, tw, time.time() - t0))
        _print_row(*rows[-1], ratio, worst)
        if args.all_checks:
            for c in cs:
                print(f"    {'ok ' if c.passed else 'BAD'} {c.name}: {c.statistic:.4g} vs {c.threshold:.4g}")
        sys.stdout.flush()
    if rows and rows[0][0].startswith("reference"):
        _print_row(*rows[0], ratio, worst)
    for name, cs, twin, tw, _ in rows:
        all_ok &= all(c.passed for c in cs)
        if tw is not None:
            all_ok &= not all(c.passed for c in tw)
    n_checks = sum(len(r[1]) for r in rows)
    print("-" * len(hdr))
    print(f"{len(rows)} families, {n_checks} checks, {time.time() - t_total:.0f} s: "
          + ("ALL PASSED, ALL TWINS CAUGHT" if all_ok else "FAILURES (see rows marked BAD / MISSED)"))
    return 0 if all_ok else 1


def _print_row(name, cs, twin, tw, dt, ratio, worst):
    w = worst(cs, 1)[0]
    ok = all(c.passed for c in cs)
    line = (f"{_short(name, 44):<44} {_short(w.name, 58):<58} {w.statistic:9.4g} {w.threshold:9.4g} "
            f"{ratio(w):6.2f} {'ok' if ok else 'BAD':>4} | ")
    if tw is None:
        line += f"{'-':<15} {'':>9} {'':>9} {'':>6} {'':>6}"
    else:
        v = worst(tw, 1)[0]
        caught = not all(c.passed for c in tw)
        line += (f"{_short(twin, 15):<15} {v.statistic:9.4g} {v.threshold:9.4g} {ratio(v):6.2f} "
                 f"{'yes' if caught else 'MISSED':>6}")
    print(line + f" {dt:5.0f}s")


if __name__ == "__main__":
    sys.exit(main())
