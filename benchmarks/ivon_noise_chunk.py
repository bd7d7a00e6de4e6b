"""IVON's fit time with the standard normals drawn per step vs for many steps at once.

Usage::

    python benchmarks/ivon_noise_chunk.py [--dataset yacht] [--steps 3000] [--repeats 3]

``bb.evaluate``'s ``vi_ivon`` on training split 0 of a UCI set, ``max_steps`` steps, with
``blockbayes.vi._natural.noise_chunk`` forced to 1 (since session 7: a key split, a fresh generator
and a shuffle draw at every step; session 5 also had one generator per layer) and at its default
(``NOISE_CHUNK_STEPS`` steps per draw), interleaved in
one process, one thread, normal priority. Prints wall and process CPU seconds per variant, their ratio
and the 1-minute load average.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import blockbayes as bb  # noqa: E402
from blockbayes.evaluate import get_method  # noqa: E402
from blockbayes.evaluate._methods import Arch  # noqa: E402
from blockbayes.vi import _natural  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="yacht")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    d = bb.datasets.uci(a.dataset, 0)
    arch = Arch(d.X_train.shape[1], (bb.datasets.uci_info(a.dataset).n_hidden,), "regression")
    m = get_method("vi_ivon")
    opts = m.options({"options": {"max_steps": a.steps}})
    default = _natural.noise_chunk
    variants = {"per step": lambda num_mc, mean: 1, "chunked": default}
    m.fit(arch, d.X_train[:64], d.y_train[:64], seed=0, **m.options({"options": {"max_steps": 20}}))  # warm-up
    tot = {k: [0.0, 0.0] for k in variants}
    print(f"| repeat | variant | wall (s) | CPU (s) | load (1 min) |\n|---|---|---|---|---|")
    try:
        for r in range(a.repeats):
            for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                _natural.noise_chunk = variants[name]
                t0, c0 = time.perf_counter(), time.process_time()
                m.fit(arch, d.X_train, d.y_train, seed=0, **opts)
                w, c = time.perf_counter() - t0, time.process_time() - c0
                tot[name][0] += w
                tot[name][1] += c
                print(f"| {r} | {name} | {w:.2f} | {c:.2f} | {os.getloadavg()[0]:.1f} |", flush=True)
    finally:
        _natural.noise_chunk = default
    print(f"\n{a.dataset}, {a.steps} steps x {a.repeats}: chunked / per step = "
          f"{tot['chunked'][0] / tot['per step'][0]:.2f} (wall), {tot['chunked'][1] / tot['per step'][1]:.2f} (CPU)")


if __name__ == "__main__":
    main()
