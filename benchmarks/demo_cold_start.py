"""``blockbayes demo`` from a fresh copy of a checkout: the first run (every Numba kernel compiled,
no cache) and the second (kernels loaded from the cache), wall and CPU time (issue 17: the first
run under 30 s on the shared 2-core machine, with the same table).

Each round copies the checkout's tracked and untracked-not-ignored files into a new temporary
directory (no ``__pycache__``, no Numba cache; ``NUMBA_CACHE_DIR`` unset, so the kernels are
cached in the copy) and runs ``python -m blockbayes.cli demo --no-progress`` there twice. CPU
time is the demo's with its warm-up process (user + sys of the reaped children), less
sensitive to the machine's load than the wall time; both load averages are printed beside.
The printed tables are compared without their timing columns: every run of every checkout must
print the same numbers.

Usage::

    python benchmarks/demo_cold_start.py                      # this checkout
    python benchmarks/demo_cold_start.py --compare /work/main # and another, interleaved
"""
from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _copy_tree(src: str, dst: str) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=src, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for f in filter(None, files):
        if "__pycache__" in f or not os.path.isfile(os.path.join(src, f)):
            continue
        os.makedirs(os.path.dirname(os.path.join(dst, f)) or dst, exist_ok=True)
        shutil.copy2(os.path.join(src, f), os.path.join(dst, f))


def _table_numbers(out: str) -> str:
    """The demo's output without its timing figures (wall time row, fit_time_s, peak memory,
    'compared in')."""
    keep = []
    for line in out.splitlines():
        if line.startswith("| wall time") or line.startswith("(compared in"):
            continue
        if line.startswith("| ") and line.count("|") >= 9:       # side-by-side rows: drop time, memory
            cells = line.split("|")
            line = "|".join(cells[:7] + cells[9:])
        keep.append(line)
    return "\n".join(keep)


def _run_demo(cwd: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env["OPENBLAS_NUM_THREADS"] = "1"
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "blockbayes.cli", "demo", "--no-progress", *args], cwd=cwd, env=env,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(f"demo failed in {cwd}:\n{p.stdout}\n{p.stderr}")
    gw = re.search(r"\| wall time \| ([0-9.]+) s", p.stdout)
    cmp_ = re.search(r"compared in ([0-9.]+) s", p.stdout)
    return dict(wall=wall, cpu=(r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime), load0=load0,
                load1=os.getloadavg()[0], gibbs=float(gw.group(1)) if gw else float("nan"),
                compare=float(cmp_.group(1)) if cmp_ else float("nan"), table=_table_numbers(p.stdout))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--compare", default=None, help="another checkout, run in the same rounds")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("demo_args", nargs="*", help="extra arguments of the demo (after --)")
    a = ap.parse_args(argv)
    sides = [("this", ROOT)] + ([("compare", os.path.abspath(a.compare))] if a.compare else [])
    rows, tables = [], set()
    for r in range(a.rounds):
        for name, path in sides:
            with tempfile.TemporaryDirectory(prefix="bb_cold_") as tmp:
                _copy_tree(path, tmp)
                check = subprocess.run([sys.executable, "-c", "import blockbayes; print(blockbayes.__file__)"],
                                       cwd=tmp, capture_output=True, text=True,
                                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
                if not check.stdout.strip().startswith(tmp):
                    raise RuntimeError(f"the copy does not import its own blockbayes: {check.stdout}")
                for run in (1, 2):
                    res = _run_demo(tmp, a.demo_args)
                    tables.add(res.pop("table"))
                    rows.append((name, path, r, run, res))
    print(f"# blockbayes demo from a fresh copy (no Numba cache): run 1 compiles, run 2 loads; "
          f"{os.cpu_count()} CPUs")
    print("| checkout | round | run | wall s | CPU s (user+sys, with warm-up) | Gibbs wall s | baselines s "
          "| load before → after |")
    print("|---|---|---|---|---|---|---|---|")
    for name, path, r, run, x in rows:
        print(f"| {name} ({path}) | {r} | {run} | {x['wall']:.1f} | {x['cpu']:.1f} | {x['gibbs']:.1f} | "
              f"{x['compare']:.1f} | {x['load0']:.2f} → {x['load1']:.2f} |")
    print(f"# tables identical (timing columns aside) across all runs: {len(tables) == 1}")


if __name__ == "__main__":
    main()
