"""IVON / VOGN on UCI next to the ensemble and the NUTS reference (the issue's figures).

Usage::

    python benchmarks/ivon_uci_summary.py [--out results/uci] [--uci-doc docs/uci.md]

Reads the finished ``vi_ivon`` / ``vi_vogn`` cells of ``benchmarks/uci_table.py`` and compares their
test log-likelihood with

* the ``ensemble`` column of the committed full-protocol table ``docs/uci.md`` (20 splits,
  protein 5) — over the splits both ran when the ensemble's cells are present under ``--out``,
  otherwise against the committed mean (stated per row);
* the NUTS reference of EVALUATION.md §1.7 (split by split: Boston 0–2, Concrete 0, Energy 0,
  Yacht 0–2; quoted from that table, float32 NumPyro NUTS, 4 chains);
* the NUTS reference of docs/uci_reference.md (method ``hmc``: float64 NUTS on the same BNN; Yacht
  0–2, Energy 0 when this was written; that page marks both as not mixed, R-hat(F) > 1.1).

and the fit time with the ensemble's (5 MAP fits) from the same table. Timings of the two come
from different runs on a shared machine under different load: indicative only.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHORT = {"yacht": "Yacht", "bostonHousing": "Boston", "energy": "Energy", "concrete": "Concrete",
         "wine-quality-red": "Wine (red)", "naval-propulsion-plant": "Naval", "protein-tertiary-structure": "Protein"}
# EVALUATION.md §1.7, test LL in original units (Yacht 0: the 1000 + 1000 run).
NUTS_LL = {("bostonHousing", 0): -2.298, ("bostonHousing", 1): -2.371, ("bostonHousing", 2): -2.303,
           ("concrete", 0): -3.062, ("energy", 0): 0.086, ("yacht", 0): 0.005, ("yacht", 1): -0.030,
           ("yacht", 2): -0.001}


def first_table(text: str, section: str, column: str) -> tuple[list, int]:
    """The rows of the first Markdown table after the heading ``section`` of ``text`` (header and rule
    included) and the index of its column ``column``."""
    lines = []
    for ln in text.split(section, 1)[1].splitlines():
        if ln.startswith("|"):
            lines.append(ln)
        elif lines:
            break
    head = [h.strip() for h in lines[0].strip("|").split("|")]
    return lines, head.index(column)


def committed_column(doc: Path, section: str, column: str) -> dict:
    """``{short name: (mean, se)}`` from a table of docs/uci.md."""
    lines, j = first_table(doc.read_text(), section, column)
    out = {}
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        m = re.match(r"([−\-]?[\d.e\-+]+)±([\d.e\-+]+)", cells[j].replace("−", "-"))
        if m:
            out[cells[0]] = (float(m.group(1)), float(m.group(2)))
    return out


def reference_hmc(doc: Path, ref_cells: Path | None) -> dict:
    """``{(dataset, split): LL}`` of the NUTS reference of docs/uci_reference.md (method ``hmc``).

    Split by split from its cells when ``ref_cells`` (the reference run's ``--out``) is given;
    otherwise the committed mean over its first ``k`` splits, assigned to each of those splits (so
    a paired mean over the same splits is still exact)."""
    if ref_cells is not None and ref_cells.exists():
        return {k: c["metrics"]["ll"] for k, c in cells(ref_cells, "hmc").items()}
    out = {}
    if not doc.exists():
        return out
    lines, j = first_table(doc.read_text(), "## Test log-likelihood", "hmc")
    inv = {v: k for k, v in SHORT.items()}
    for ln in lines[2:]:
        cellv = [c.strip() for c in ln.strip("|").split("|")]
        m = re.match(r"([−\-]?[\d.]+)(?:±[\d.]+)? \(k=(\d+)\)", cellv[j].replace("−", "-"))
        if m and cellv[0] in inv:
            for sp in range(int(m.group(2))):
                out[(inv[cellv[0]], sp)] = float(m.group(1))
    return out


def cells(out: Path, method: str) -> dict:
    res = {}
    for f in out.glob(f"cells/*/{method}/*.json"):
        c = json.loads(f.read_text())
        if c.get("status") == "ok" and c.get("size") in (None, "full"):
            res[(c["dataset"], c["split"])] = c
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "results" / "uci"))
    ap.add_argument("--uci-doc", default=str(ROOT / "docs" / "uci.md"))
    ap.add_argument("--methods", default="vi_ivon,vi_vogn")
    ap.add_argument("--ref-doc", default=str(ROOT / "docs" / "uci_reference.md"))
    ap.add_argument("--ref-cells", default=None, help="cells of the docs/uci_reference.md run (its --out), "
                    "for split-by-split NUTS values; default: its committed means")
    a = ap.parse_args(argv)
    ens_ll = committed_column(Path(a.uci_doc), "## Test log-likelihood", "ensemble")
    ens_t = committed_column(Path(a.uci_doc), "## Cost (ours)", "ensemble time (s)")
    ens_cells = cells(Path(a.out), "ensemble")
    ref = reference_hmc(Path(a.ref_doc), Path(a.ref_cells) if a.ref_cells else None)
    print("| dataset | method | k splits | test LL (ours) | ensemble LL | Δ to ensemble | within 0.05? | "
          "NUTS §1.7 splits | mean Δ to NUTS §1.7 (same splits) | NUTS ref. splits | mean Δ to NUTS ref. "
          "(docs/uci_reference.md, same splits) | fit time (s) | ensemble time (s, docs/uci.md) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for meth in a.methods.split(","):
        mine = cells(Path(a.out), meth)
        hits = total = 0
        for ds, short in SHORT.items():
            sp = sorted(s for (d, s) in mine if d == ds)
            if not sp:
                continue
            ll = np.array([mine[(ds, s)]["metrics"]["ll"] for s in sp])
            ft = np.mean([mine[(ds, s)].get("fit_time_s", np.nan) for s in sp])
            se = ll.std(ddof=1) / np.sqrt(len(ll)) if len(ll) > 1 else float("nan")
            same = [s for s in sp if (ds, s) in ens_cells]
            if len(same) == len(sp):
                e = float(np.mean([ens_cells[(ds, s)]["metrics"]["ll"] for s in sp]))
                etxt = f"{e:.3f} (same {len(sp)} splits)"
            elif short in ens_ll:
                e = ens_ll[short][0]
                etxt = f"{e:.2f}±{ens_ll[short][1]:.2f} (committed, all splits)"
            else:
                e, etxt = None, "–"
            d = None if e is None else float(ll.mean() - e)
            ok = None if d is None else d >= -0.05
            if ok is not None:
                total += 1
                hits += bool(ok)
            nuts = [(s, NUTS_LL[(ds, s)]) for s in sp if (ds, s) in NUTS_LL]
            ntxt = ", ".join(str(s) for s, _ in nuts) or "–"
            nd = f"{np.mean([mine[(ds, s)]['metrics']['ll'] - v for s, v in nuts]):+.3f}" if nuts else "–"
            rr = [(s, ref[(ds, s)]) for s in sp if (ds, s) in ref]
            rtxt = ", ".join(str(s) for s, _ in rr) or "–"
            rd = f"{np.mean([mine[(ds, s)]['metrics']['ll'] - v for s, v in rr]):+.3f}" if rr else "–"
            print(f"| {short} | {meth} | {len(sp)} | {ll.mean():.3f}±{se:.3f} | {etxt} | "
                  f"{'–' if d is None else f'{d:+.3f}'} | {'–' if ok is None else ('yes' if ok else 'no')} | {ntxt} | "
                  f"{nd} | {rtxt} | {rd} | {ft:.1f} | {ens_t.get(short, ('–',))[0]} |")
        print(f"\n{meth}: within 0.05 nats of (or better than) the ensemble on {hits} of {total} sets\n",
              file=sys.stderr)


if __name__ == "__main__":
    main()
