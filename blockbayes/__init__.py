"""blockbayes: Bayesian deep learning that exploits network structure.

Block-Gibbs sampling of noisy-MLP posteriors, block variational inference and iterative block
Laplace, written once against the Python Array API (NumPy on the CPU, CuPy on the GPU), with
fused Numba and CuPy kernels for the inner-node sampling loop.

>>> import blockbayes as bb
>>> net = bb.MLP([d_in, 50, 1], activation="relu")          # doctest: +SKIP
>>> res = bb.gibbs.run(net, X, y, num_samples=1000, seed=0)  # doctest: +SKIP
>>> mean, var = res.predict(X_test)                          # doctest: +SKIP
"""
from __future__ import annotations

import importlib

from .model import MLP

__version__ = "0.1.0"

_SUBMODULES = ("gibbs", "vi", "laplace", "datasets", "metrics", "diagnostics", "evaluate",
               "posterior", "kernels", "distributed", "nn", "point", "predictive")

__all__ = ["MLP", "__version__", *_SUBMODULES]


def __getattr__(name):
    # submodules are imported lazily so that `import blockbayes` stays cheap (no Numba compile)
    if name in _SUBMODULES:
        mod = importlib.import_module(f".{name}", __name__)
        globals()[name] = mod
        return mod
    raise AttributeError(f"module 'blockbayes' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
