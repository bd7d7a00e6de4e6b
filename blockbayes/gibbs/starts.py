"""MAP / ensemble starts of the block-Gibbs chains (``gibbs.run(init="map")``).

Each chain starts from its own MAP fit of the *standard* (noise-free) network with the same
architecture, activation and prior precisions (:func:`blockbayes.laplace.map_fit`, full-batch
L-BFGS from its own random initialisation), with the auxiliaries ``Z, X`` set by the noisy forward
pass (``Z = X̃W̃^⊤ + √Δ_Z ξ``, ``X = f(Z) + √Δ_X η``), exactly as for any given start weights.

* ``"map"`` / ``"ensemble"`` (synonyms): chain ``c`` from the fit with key ``split(key, C)[c]`` —
  ``C`` different fits, i.e. the members of a deep ensemble, so that the chains start in different
  modes and the between-chain R-hat can see it.
* ``"map_shared"``: one fit, every chain starts there (one mode).

Regression with ``learn_noise``: the starting ``Δ_y`` of each chain is that fit's training mean
squared error (floored at ``1e-6``) instead of ``net.delta_y``. For the probit likelihoods the
MAP fit is logistic (softmax); its output layer is divided by 1.702, the scale at which the
logistic and probit links agree best (Camilli 1994).

Nothing here changes what is sampled: the start only decides how far the chains have to travel.
"""
from __future__ import annotations

from typing import Optional

from .._backend import device_of, namespace
from .._backend import random as bbr
from ..model import MLP, forward

__all__ = ["MAP_INITS", "LOGIT_TO_PROBIT", "map_starts"]

MAP_INITS = ("map", "ensemble", "map_shared")
"""The string ``init`` values of :func:`blockbayes.gibbs.run` that start from MAP fits."""

LOGIT_TO_PROBIT = 1.702
"""Logit ≈ 1.702 × probit (Camilli 1994): a logistic MAP fit's output layer is divided by this."""


def map_starts(key, net: MLP, X, y, *, num_chains: int, kind: str = "map", max_iter: int = 1000,
               learn_noise: bool = False):
    """Start weights for ``num_chains`` chains from MAP fits of the standard network.

    Parameters
    ----------
    key : key
        Random key; chain ``c``'s fit is initialised with ``split(key, C)[c]``.
    net : MLP
        The noisy network (its widths, activation, prior precisions and ``Δ_y`` define the MAP
        objective ``½Σ_l (λ_W‖W^l‖² + λ_b‖b^l‖²) + ‖y − f(X)‖²/(2Δ_y)``, or the logistic /
        softmax negative log likelihood for classification).
    X : array, shape (n, d_in)
    y : array, shape (n, d_out) or (C, n, d_out), or int labels (n,) / (C, n)
        Validated data as :func:`blockbayes.gibbs.validate_data` returns it; per-chain targets
        give each chain a fit to its own targets.
    num_chains : int
    kind : {"map", "ensemble", "map_shared"}
    max_iter : int
        L-BFGS iterations per fit.
    learn_noise : bool
        Also return each fit's training MSE as the starting ``Δ_y`` (regression only).

    Returns
    -------
    weights : tuple of arrays
        Per layer ``(C, d_{l+1}, d_l + 1)`` in ``X``'s namespace, device and dtype.
    delta_y : array of shape (C,), or None
        Starting ``Δ_y`` per chain (only for regression with ``learn_noise``).
    info : dict
        ``map_fits`` (number of fits), ``map_converged`` (all fits), ``map_iters`` (total).
    """
    from .. import laplace
    from ..point_fit import chain_starts

    if kind not in MAP_INITS:
        raise ValueError(f"kind must be one of {MAP_INITS}, got {kind!r}")
    if not isinstance(num_chains, int) or num_chains < 1:
        raise ValueError(f"num_chains must be a positive int, got {num_chains!r}")
    xp = namespace(X)
    C = num_chains
    fits = 1 if kind == "map_shared" else C
    per_chain_y = (y.ndim == 3) if net.likelihood == "gaussian" else (y.ndim == 2)
    if per_chain_y and fits == 1:
        fits = C       # one data set per chain: each chain needs its own fit
    keys = bbr.split(key, fits)
    all_w, sse, converged, iters = [], [], True, 0
    for c in range(fits):
        yc = y[c] if per_chain_y else y
        w, info = laplace.map_fit(net, X, yc, seed=keys[c], max_iter=max_iter, progress=False,
                                  return_info=True)
        converged = converged and bool(info.get("converged", True))
        iters += int(info.get("num_iter", 0))
        w = [xp.astype(W, X.dtype) for W in w]
        all_w.append(w)
        if net.likelihood == "gaussian" and learn_noise:
            F = forward(net, tuple(w), X)
            R = yc - F
            sse.append(xp.mean(R * R))
    stacked = [xp.stack([w[l] for w in all_w], axis=0) for l in range(net.num_layers)]
    probit = net.likelihood in ("probit", "multinomial_probit")
    weights = chain_starts(stacked, C, output_scale=LOGIT_TO_PROBIT if probit else 1.0, like=X)
    delta_y: Optional[object] = None
    if sse:
        dy = xp.maximum(xp.stack(sse), xp.asarray(1e-6, dtype=X.dtype, device=device_of(X)))
        delta_y = xp.asarray(xp.broadcast_to(dy, (C,)) if fits != C else dy, copy=True)
    return tuple(weights), delta_y, {"map_fits": fits, "map_converged": converged, "map_iters": iters}
