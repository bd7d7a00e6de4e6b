"""MAP / ensemble starts of the block-Gibbs chains (``gibbs.run(init="map")``).

Each chain starts from its own MAP fit of the *standard* (noise-free) network with the same
architecture, activation and prior precisions (:func:`blockbayes.laplace.map_fit`, full-batch
L-BFGS from its own random initialisation), with the auxiliaries ``Z, X`` set by the noisy forward
pass (``Z = X̃W̃^⊤ + √Δ_Z ξ``, ``X = f(Z) + √Δ_X η``), exactly as for any given start weights.

* ``"map"`` / ``"ensemble"`` (synonyms): chain ``c`` from the fit with key ``split(key, C)[c]`` —
  ``C`` different fits, i.e. the members of a deep ensemble, so that the chains start in different
  modes and the between-chain R-hat can see it.
* ``"map_shared"``: one fit, every chain starts there (one mode).
* ``"map_evidence"`` (regression with ``learn_noise`` only): as ``"map"``, then each fit is carried
  on by :func:`blockbayes.laplace.evidence_fit` (MacKay's type-II noise, warm-started at the joint
  MAP weights, ``Δ_y`` started at the targets' variance, at most 10 outer steps of ≤ 500 L-BFGS
  its) and the chain starts at its weights and evidence ``Δ_y``. Why an option: the joint MAP
  under-estimates the noise where the net can fit the training set (Boston split 0: ``Δ̂_y`` 2.09
  against a test MSE ~6.8; the evidence gives 7.29, for ~5 s more per fit); see
  docs/gibbs-moves.md §6 for where it helps and where it does not.

Regression with ``learn_noise``: each fit is the *joint* MAP of the weights and the noise
variance under the sampler's own noise hyperprior (``1/Δ_y ~ Gamma(a, b)``, Δ_y profiled out:
:func:`blockbayes.laplace.map_fit` with ``learn_noise=True``), run to a gradient tolerance or
``max_iter`` (3000) iterations, and the chain's starting ``Δ_y`` is that fit's ``Δ̂_y`` (floored at
``1e-6``). ``gibbs.run`` begins each such fit with a short fit at a fixed, moderate noise (``prefit``,
:data:`JOINT_PREFIT_ITER`, design note 63), which on large data keeps a start from ending far from
any good fit. A fit at the fixed ``net.delta_y`` instead (the start before) weights the data by a
noise level the chain is about to learn away: on low-noise data (Yacht, Energy) its weight decay is
far too strong, the start underfits, and at small ``Δ_Z, Δ_X`` the chains cannot leave it in the
budgets people run (measured in docs/gibbs-moves.md, "Default start": Yacht split 0 at
``Δ_Z = Δ_X = 1e-5``, test RMSE 1.19 from the fixed-noise start vs 0.29 from the joint one).
Without ``learn_noise`` the fit uses the model's fixed ``Δ_y``, which is the right objective. For the probit likelihoods the
MAP fit is logistic (softmax); its output layer is divided by 1.702, the scale at which the
logistic and probit links agree best (Camilli 1994).

Nothing here changes what is sampled: the start only decides how far the chains have to travel.
"""
from __future__ import annotations

import math
from typing import Optional

from .._backend import device_of, namespace, to_numpy
from .._backend import random as bbr
from ..model import MLP

__all__ = ["MAP_INITS", "LOGIT_TO_PROBIT", "map_starts", "hidden_delta", "HIDDEN_RULE", "JOINT_MAX_ITER",
           "JOINT_PREFIT_ITER", "JOINT_PREFIT_NOISE"]

MAP_INITS = ("map", "ensemble", "map_shared", "map_evidence")
"""The string ``init`` values of :func:`blockbayes.gibbs.run` that start from MAP fits."""

LOGIT_TO_PROBIT = 1.702
"""Logit ≈ 1.702 × probit (Camilli 1994): a logistic MAP fit's output layer is divided by this."""


JOINT_MAX_ITER = 3000
"""L-BFGS iterations of a joint (weights, noise) MAP start: on the ReLU objective at small noise
the fits end on kinks rather than at the gradient tolerance; 3000 gave the same test RMSE as 20000
on Yacht split 0 (0.291 vs 0.296 after Gibbs at Δ = 1e-5) at a fifth of the cost."""


JOINT_PREFIT_ITER = 300
"""L-BFGS iterations of the fixed-noise fit that ``gibbs.run``'s joint MAP starts begin with (the first
part of :data:`JOINT_MAX_ITER`, not added to it; 0 turns it off; :func:`map_starts`' ``prefit``).

Why (design note 63): at small learned noise the joint objective is badly conditioned (the weight
decay relative to the data is ``λ Δ_y``), and on large data 3000 iterations from a random start do not
reach a good fit every time: on Naval split 0 one of the four default starts ended at ``Δ̂_y = 1.8e-3``
and test RMSE 6.5e-4 against 1.8–4.1e-4 and 2.1–3.2e-4 for the other three, and the chains cannot leave
it. Fitting first at a fixed, moderate noise (:data:`JOINT_PREFIT_NOISE` × the targets' variance) and
then jointly from there, at the same total iterations, gave 2.2–4.2e-4 and 2.2–3.2e-4 (mean of the four
fits' predictions 2.20e-4 against 2.94e-4)."""

JOINT_PREFIT_NOISE = 1e-2
"""The pre-fit's fixed ``Δ_y`` as a fraction of the targets' variance (1 % of it unexplained)."""


HIDDEN_RULE = dict(ratio=0.02, floor=1e-6, cap=1e-3)
"""The constants of :func:`hidden_delta` used by ``gibbs.run`` and the gold recipes (chosen in session 6)."""


def hidden_delta(delta_y_hat, *, ratio: float = HIDDEN_RULE["ratio"], floor: float = HIDDEN_RULE["floor"],
                 cap: float = HIDDEN_RULE["cap"]) -> float:
    """The preset's hidden-layer noise ``clip(ratio · median(Δ̂_y), floor, cap)``.

    Parameters
    ----------
    delta_y_hat : array of shape (C,) or sequence of float
        MAP output-noise variances (one per chain), ``> 0``.
    ratio, floor, cap : float
        ``0 < floor <= cap``, ``ratio > 0``.

    Returns
    -------
    float
    """
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"ratio must be positive and finite, got {ratio!r}")
    if not (0 < floor <= cap and math.isfinite(cap)):
        raise ValueError(f"need 0 < floor <= cap < inf, got floor={floor!r}, cap={cap!r}")
    vals = sorted(float(v) for v in to_numpy(delta_y_hat).reshape(-1)) if hasattr(delta_y_hat, "shape") \
        else sorted(float(v) for v in delta_y_hat)
    if not vals or not all(v > 0 and math.isfinite(v) for v in vals):
        raise ValueError(f"delta_y_hat must be non-empty, positive and finite, got {vals!r}")
    k = len(vals)
    med = vals[k // 2] if k % 2 else 0.5 * (vals[k // 2 - 1] + vals[k // 2])
    return min(cap, max(floor, ratio * med))


def map_starts(key, net: MLP, X, y, *, num_chains: int, kind: str = "map", max_iter: Optional[int] = None,
               learn_noise: bool = False, noise_prior=(1.0, 1e-2), smoothing=None, smoothing_iter: int = 5000,
               prefit: int = 0):
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
    kind : {"map", "ensemble", "map_shared", "map_evidence"}
    max_iter : int or None
        L-BFGS iterations per fit; ``None``: 1000 at a fixed ``Δ_y``, :data:`JOINT_MAX_ITER` for a
        joint noise fit.
    learn_noise : bool
        Regression: fit the weights and ``Δ_y`` jointly (MAP under ``noise_prior``) and return each
        fit's ``Δ̂_y`` as the chain's starting ``Δ_y``.
    noise_prior : (float, float)
        Shape and rate ``(a, b)`` of the Gamma hyperprior on ``1/Δ_y`` (the sampler's
        ``Hyperprior.noise_shape``, ``noise_rate``).
    smoothing : None or sequence of floats
        A softplus smoothing continuation before each fit (:func:`blockbayes.laplace.map_fit`'s
        ``smoothing``, e.g. ``(8, 32, 128, 512)``; ``None``: the fits exactly as without it).
    smoothing_iter : int
        L-BFGS iterations per smoothing stage (``map_fit``'s ``smoothing_iter``).
    prefit : int
        Joint fits only: begin each with this many L-BFGS iterations at the fixed noise
        ``Δ_y = JOINT_PREFIT_NOISE · mean_j var(y_j)``, then fit jointly from there for the rest of
        ``max_iter`` (0, the default here: the joint fit from the random start; ``gibbs.run`` passes
        :data:`JOINT_PREFIT_ITER`). Ignored for fixed-noise fits and with ``smoothing``.

    Returns
    -------
    weights : tuple of arrays
        Per layer ``(C, d_{l+1}, d_l + 1)`` in ``X``'s namespace, device and dtype.
    delta_y : array of shape (C,), or None
        Starting ``Δ_y`` per chain (only for regression with ``learn_noise``).
    info : dict
        ``map_fits`` (number of fits), ``map_converged`` (all fits), ``map_iters`` (total),
        ``map_objectives`` (each fit's final MAP objective ``E`` of :func:`blockbayes.laplace.map_fit`,
        in fit order; for ``"map_evidence"`` the joint fit's, before the evidence step).
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
    joint = net.likelihood == "gaussian" and learn_noise
    evidence = kind == "map_evidence"
    if evidence and not joint:
        raise ValueError("init='map_evidence' needs a Gaussian likelihood and learn_noise=True")
    if max_iter is None:
        max_iter = JOINT_MAX_ITER if joint else 1000
    fit_kw = dict(learn_noise=True, noise_prior=tuple(float(v) for v in noise_prior), tol=1e-6, ftol=0.0) if joint else {}
    if smoothing is not None:
        fit_kw.update(smoothing=smoothing, smoothing_iter=smoothing_iter)
    if isinstance(prefit, bool) or not isinstance(prefit, int) or prefit < 0:
        raise ValueError(f"prefit must be a non-negative int, got {prefit!r}")
    pre = prefit if (joint and smoothing is None and 0 < prefit < max_iter) else 0
    keys = bbr.split(key, fits)
    all_w, sse, converged, iters, objectives = [], [], True, 0, []
    for c in range(fits):
        yc = y[c] if per_chain_y else y
        start = dict(seed=keys[c])
        if pre:
            dy0 = JOINT_PREFIT_NOISE * max(float(xp.mean(xp.var(yc, axis=0))), 1e-12)
            w0, info0 = laplace.map_fit(net, X, yc, seed=keys[c], max_iter=pre, delta_y=dy0, progress=False,
                                        return_info=True)
            iters += int(info0.get("num_iter", 0))
            start = dict(init=w0)
        w, info = laplace.map_fit(net, X, yc, max_iter=max_iter - pre, progress=False,
                                  return_info=True, **start, **fit_kw)
        converged = converged and bool(info.get("converged", True))
        iters += int(info.get("num_iter", 0))
        objectives.append(float(info["objective"]))
        if evidence:
            w, info = laplace.evidence_fit(net, X, yc, init=w, delta_y=max(float(xp.mean(xp.var(yc, axis=0))), 1e-6),
                                           noise_prior=fit_kw["noise_prior"], max_outer=10, max_iter=500,
                                           progress=False)
        w = [xp.astype(W, X.dtype) for W in w]
        all_w.append(w)
        if joint:
            sse.append(xp.asarray(float(info["delta_y"]), dtype=X.dtype, device=device_of(X)))
    stacked = [xp.stack([w[l] for w in all_w], axis=0) for l in range(net.num_layers)]
    probit = net.likelihood in ("probit", "multinomial_probit")
    weights = chain_starts(stacked, C, output_scale=LOGIT_TO_PROBIT if probit else 1.0, like=X)
    delta_y: Optional[object] = None
    if sse:
        dy = xp.maximum(xp.stack(sse), xp.asarray(1e-6, dtype=X.dtype, device=device_of(X)))
        delta_y = xp.asarray(xp.broadcast_to(dy, (C,)) if fits != C else dy, copy=True)
    return tuple(weights), delta_y, {"map_fits": fits, "map_converged": converged, "map_iters": iters,
                                     "map_objectives": objectives}
