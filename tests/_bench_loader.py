"""Import a script of ``benchmarks/`` as a module, for the tests that exercise benchmark code paths
(``benchmarks/`` is put on ``sys.path`` first so that the script's own ``import _devtools`` works)."""
from __future__ import annotations

import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py``, executed afresh under the module name ``name``."""
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
