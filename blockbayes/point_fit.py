"""Builders of the point and ensemble baselines: MAP fits with a chosen noise variance, returned
as :class:`~blockbayes.point.PointPosterior` / :class:`~blockbayes.point.EnsemblePosterior`.

The fitting is :func:`blockbayes.laplace.map_fit` / :func:`~blockbayes.laplace.map_ensemble`
(their ``noise=`` option chooses the Gaussian noise variance ``Δ_y`` without test data:
``"holdout"``, ``"joint"``, ``"train"``, ``"fixed"`` or a float); this module adds the seed
layout, the posterior objects and an optional in-process memo, so that callers that need the
same fit several times (the evaluation runner: ``map``, every ``laplace_*`` method, the MAP
starts of the noisy-network samplers) fit it once.

Seeds. ``seed`` is :class:`numpy.random.SeedSequence` entropy (an int, or ``None`` for fresh
entropy). A MAP fit initialises from ``[seed, 0]`` and splits its holdout with ``[seed, 7]``;
ensemble member ``k`` is the MAP fit with seed ``[seed, 100 + k]``; the batched joint-noise
ensemble (one :func:`~blockbayes.laplace.map_ensemble` problem) is seeded with ``[seed, 100]``.

>>> import blockbayes as bb                                                          # doctest: +SKIP
>>> net = bb.MLP([d, 50, 1], prior_prec="fan_in", delta={"y": 0.1})                  # doctest: +SKIP
>>> point = bb.point_fit.map_posterior(net, X, y, seed=0, noise="holdout")          # doctest: +SKIP
>>> ens = bb.point_fit.ensemble_posterior(net, X, y, members=5, seed=0, noise="joint")  # doctest: +SKIP
>>> mean, var = ens.predict(X_test)                                                 # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import time
from typing import Optional

from ._backend.host import np

from ._backend import namespace, to_numpy
from .laplace import evidence_fit, map_ensemble, map_fit
from .model import MLP
from .nn import resolve_likelihood
from .point import EnsemblePosterior, PointPosterior

__all__ = ["map_posterior", "ensemble_posterior", "chain_starts", "derived_seed", "clear_cache"]

_CACHE: dict = {}
_CACHE_SIZE = 16


def derived_seed(seed, *path: int) -> int:
    """``int(SeedSequence([seed, *path]).generate_state(1)[0])`` (``seed=None``: fresh entropy first)."""
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    return int(np.random.SeedSequence([seed, *path] if path else seed).generate_state(1)[0])


def clear_cache() -> None:
    """Forget every memoised fit (see ``cache=`` of :func:`map_posterior`)."""
    _CACHE.clear()


def with_noise(net: MLP, delta_y: float) -> MLP:
    """``net`` with Gaussian noise variance ``delta_y`` (the other settings kept)."""
    if isinstance(net.delta, dict):
        delta = {**net.delta, "y": delta_y}
    else:
        delta = {"Z": net.delta_z, "X": net.delta_x, "y": delta_y}
    return net.replace(delta=delta)


def _fingerprint(X, y) -> str:
    h = hashlib.sha1()
    for a in (X, y):
        a = np.ascontiguousarray(np.asarray(to_numpy(a)))
        h.update(f"{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def map_posterior(net: MLP, X, y, *, seed=None, noise="holdout", holdout: float = 0.1, method: str = "lbfgs",
                  max_iter: int = 1000, restarts: int = 1, tol: Optional[float] = None, ftol: Optional[float] = None,
                  noise_prior=(1.0, 1e-2), likelihood=None, cache: bool = False, evidence=None) -> PointPosterior:
    """A MAP fit of the standard MLP with its noise variance chosen by ``noise``, as a point posterior.

    ``θ* = argmin_θ E(θ)`` (:func:`blockbayes.laplace.map_fit`, initialised from seed ``[seed, 0]``)
    and, for the gaussian likelihood, ``Δ_y`` by ``noise``:

    * ``"holdout"``: MSE on a held-out ``holdout`` fraction (split seed ``[seed, 7]``) of a fit to
      the rest, then a refit on all points (warm start) at that ``Δ_y``;
    * ``"joint"``: the joint MAP of ``(θ, log Δ_y)`` under ``1/Δ_y ~ Gamma(noise_prior)``
      (best of ``restarts`` starts, L-BFGS to the gradient tolerance ``tol``);
    * ``"evidence"``: type-II ``Δ_y`` from the Laplace evidence (MacKay's fixed point,
      :func:`blockbayes.laplace.evidence_fit`; starts at ``net.delta_y``; ``max_iter`` bounds its
      final fit, ``restarts`` its first; ``evidence``: its further options ``learn_prior``,
      ``structure``, ``max_outer``, ``rtol``, ``max_iter`` of the inner fits), the weights the MAP at
      that ``Δ_y``;
    * ``"train"``: the training MSE of the fit;  ``"fixed"``: ``net.delta_y``;  a float: that value.

    Classifiers have no noise variance (``noise`` is ignored; ``Δ_y = 1``).

    Parameters
    ----------
    net : MLP
        Architecture, activation, prior precisions and (``"fixed"``, starting) ``Δ_y``.
    X : array, shape (n, d_in)
    y : array, shape (n,) or (n, d_out), or integer labels (n,)
    seed : None or int
        SeedSequence entropy (see the module docstring).
    method, max_iter, restarts, tol, ftol, noise_prior :
        As for :func:`blockbayes.laplace.map_fit` (``tol``/``ftol`` ``None``: its defaults).
    cache : bool
        Memoise the fit in this process (16 fits at most, oldest dropped first), keyed by the data,
        the net and every setting: a repeated call returns the same fit with ``config["map_reused"]``.

    Returns
    -------
    PointPosterior
        ``net`` carries the chosen ``Δ_y``; ``weights`` per layer ``(d_{l+1}, d_l + 1)`` in ``X``'s
        namespace; ``config``: ``map_converged``, ``map_iters`` (both fits for ``"holdout"``),
        ``delta_y`` (gaussian), ``map_time_s`` (the fit's wall time), ``map_reused`` (memo hit);
        ``"joint"`` adds ``map_fev``, ``map_grad_norm``, ``map_stop`` and, with restarts,
        ``map_restart_objectives``, ``map_restart_iters``, ``map_best_restart``; ``"evidence"`` adds
        ``map_stop``, ``evidence_gamma``, ``evidence_outer``, ``evidence_converged``,
        ``evidence_prior_precision``, ``evidence_log_marglik``.
    """
    lik = resolve_likelihood(net, likelihood)
    settings = dict(seed=seed, noise=noise, holdout=holdout, method=method, max_iter=max_iter, restarts=restarts,
                    tol=tol, ftol=ftol, noise_prior=tuple(noise_prior), likelihood=lik,
                    evidence=tuple(sorted(dict(evidence or {}).items())))
    key = None
    if cache:
        key = (_fingerprint(X, y), repr(net), repr(sorted(settings.items())))
        hit = _CACHE.get(key)
        if hit is not None:
            fnet, w, dy, info = hit
            return PointPosterior(net=fnet, weights=w, delta_y=dy, likelihood=lik, config=dict(info, map_reused=True))
    t0 = time.perf_counter()
    fnet, w, dy, info = _fit_point(net, X, y, lik=lik, **settings)
    info["map_time_s"] = time.perf_counter() - t0
    if cache:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = (fnet, w, dy, dict(info))
    return PointPosterior(net=fnet, weights=w, delta_y=dy, likelihood=lik, config=info)


def _fit_point(net, X, y, *, lik, seed, noise, holdout, method, max_iter, restarts, tol, ftol, noise_prior,
               likelihood, evidence=()):
    reg = lik == "gaussian"
    if reg and isinstance(noise, str) and noise not in ("joint", "holdout", "train", "fixed", "evidence"):
        raise ValueError(f"noise must be 'joint', 'holdout', 'train', 'fixed', 'evidence' or a float, got {noise!r}")
    kw = dict(likelihood=lik, method=method, max_iter=max_iter, progress=False, return_info=True)
    if tol is not None:
        kw["tol"] = tol
    if ftol is not None:
        kw["ftol"] = ftol
    if restarts != 1:
        kw["restarts"] = restarts
    s0 = derived_seed(seed, 0)
    if noise == "joint":
        if reg:
            kw.update(noise="joint", noise_prior=tuple(noise_prior))
        w, i1 = map_fit(net, X, y, seed=s0, **kw)
        info = {"map_converged": bool(i1["converged"]), "map_iters": int(i1["num_iter"]),
                "map_fev": int(i1["num_fev"]), "map_grad_norm": float(i1["grad_norm"]), "map_stop": i1["message"]}
        if "restart_objectives" in i1:
            info.update(map_restart_objectives=i1["restart_objectives"], map_restart_iters=i1["restart_iters"],
                        map_best_restart=i1["best_restart"])
    elif reg and noise == "evidence":
        if method != "lbfgs":
            raise ValueError("noise='evidence' needs method='lbfgs'")
        w, e = evidence_fit(net, X, y, seed=s0, noise_prior=tuple(noise_prior), restarts=restarts,
                            final_max_iter=max_iter, tol=1e-7 if tol is None else tol, ftol=ftol, progress=False,
                            **dict(evidence))
        i1 = {"delta_y": e["delta_y"]}
        info = {"map_converged": bool(e["map_info"]["converged"]), "map_iters": int(e["num_iter"]),
                "map_stop": e["map_info"]["message"], "evidence_gamma": e["gamma"], "evidence_outer": e["num_outer"],
                "evidence_converged": e["converged"], "evidence_prior_precision": [list(p) for p in e["prior_precision"]],
                "evidence_log_marglik": e["log_marglik"]}
    elif reg and noise == "holdout":
        w, i1 = map_fit(net, X, y, seed=s0, noise="holdout", holdout=holdout, split_seed=derived_seed(seed, 7), **kw)
        h = i1["holdout_fit"]
        info = {"map_converged": bool(h["converged"] and i1.get("converged", True)),
                "map_iters": int(h["num_iter"]) + int(i1.get("num_iter", 0))}
    else:                                            # "fixed", "train" or a float (or a classifier)
        if reg and noise != "fixed":
            kw["noise"] = noise
        w, i1 = map_fit(net, X, y, seed=s0, **kw)
        info = {"map_converged": bool(i1.get("converged", True)), "map_iters": int(i1.get("num_iter", 0))}
    if not reg:
        return net, w, None, info
    dy = float(i1["delta_y"])
    info["delta_y"] = dy
    return (net if dy == net.delta_y else with_noise(net, dy)), w, dy, info


def ensemble_posterior(net: MLP, X, y, *, members: int = 5, seed=None, noise="holdout", batched=None,
                       holdout: float = 0.1, method: str = "lbfgs", max_iter: int = 1000, restarts: int = 1,
                       tol: Optional[float] = None, ftol: Optional[float] = None, noise_prior=(1.0, 1e-2),
                       likelihood=None, cache: bool = False, evidence=None) -> EnsemblePosterior:
    """A deep ensemble of ``members`` MAP fits (Lakshminarayanan et al. 2017) as a mixture posterior.

    ``batched=False``: member ``k`` is ``map_posterior(net, X, y, seed=derived_seed(seed, 100 + k),
    noise=noise, ...)`` (fitted one after another, each memoised with ``cache``).
    ``batched=True`` (default when ``noise="joint"``): all members as one batched L-BFGS problem,
    :func:`blockbayes.laplace.map_ensemble` seeded with ``[seed, 100]`` (``noise`` ``"joint"``,
    ``"fixed"`` or a float; ``tol`` default ``1e-7``; ``restarts`` per member).
    ``noise="evidence"`` (batched by default): the type-II ``Δ_y`` (and prior, with
    ``evidence={"learn_prior": True}``) of ``map_posterior(net, X, y, seed=seed, noise="evidence", ...)``
    (the ``map`` fit of the same seed, shared through ``cache``), then every member a MAP fit at those
    fixed hyperparameters, batched as above; ``batched=False``: one evidence fit per member.

    Returns
    -------
    EnsemblePosterior
        ``weights`` per layer ``(members, d_{l+1}, d_l + 1)``, ``delta_y`` ``(members,)``;
        ``config["members"]``: each member's fit diagnostics (as :func:`map_posterior`'s config).
    """
    lik = resolve_likelihood(net, likelihood)
    if batched is None:
        batched = noise in ("joint", "evidence")
    if not batched:
        points = [map_posterior(net, X, y, seed=derived_seed(seed, 100 + k), noise=noise, holdout=holdout,
                                method=method, max_iter=max_iter, restarts=restarts, tol=tol, ftol=ftol,
                                noise_prior=noise_prior, likelihood=lik, cache=cache, evidence=evidence)
                  for k in range(members)]
        return EnsemblePosterior.from_points(points, config={"members": [dict(p.config) for p in points]})
    if method != "lbfgs":
        raise ValueError(f"a batched ensemble (noise='joint') needs method='lbfgs', got {method!r}")
    reg = lik == "gaussian"
    hyper, prior = {}, None
    if reg and noise == "evidence":
        p = map_posterior(net, X, y, seed=seed, noise="evidence", method=method, max_iter=max_iter, restarts=restarts,
                          tol=tol, ftol=ftol, noise_prior=noise_prior, likelihood=lik, cache=cache, evidence=evidence)
        noise, prior = float(p.delta_y), [tuple(v) for v in p.config["evidence_prior_precision"]]
        hyper = {k: v for k, v in p.config.items() if k.startswith("evidence_") or k in ("map_time_s", "map_reused")}
    W, info = map_ensemble(net, X, y, members=members, restarts=restarts, seed=derived_seed(seed, 100),
                           likelihood=lik, noise=noise if reg else None, noise_prior=tuple(noise_prior),
                           prior_precision=prior,
                           max_iter=max_iter, tol=1e-7 if tol is None else tol, ftol=ftol, progress=False,
                           return_info=True)
    cfg = []
    for mi in info["members"]:
        c = {"map_converged": bool(mi["converged"]), "map_iters": int(mi["num_iter"]), "map_stop": mi["message"]}
        if reg:
            c["delta_y"] = float(mi["delta_y"])
        cfg.append(c)
    dy = np.array([c["delta_y"] for c in cfg]) if reg else None
    config = {"members": cfg, **({"hyper_fit": hyper} if hyper else {})}
    return EnsemblePosterior(net=net, weights=tuple(W), delta_y=dy, likelihood=lik, config=config)


def chain_starts(members, num_chains: int, *, output_scale: float = 1.0, like=None) -> list:
    """Chain-batched start weights from MAP fits (the MAP starts of the noisy-network samplers).

    ``members``: an :class:`~blockbayes.point.EnsemblePosterior`, or its per-layer stacked weights
    ``(M, d_{l+1}, d_l + 1)``. Chain ``c`` starts at member ``c``; a one-member ensemble starts
    every chain there. The output layer is divided by ``output_scale``
    (:data:`blockbayes.gibbs.starts.LOGIT_TO_PROBIT` turns a logistic fit into a probit start).

    Returns
    -------
    list of arrays
        Per layer ``(num_chains, d_{l+1}, d_l + 1)``: host float64 NumPy (``like=None``) or in
        ``like``'s namespace, device and dtype (the cast comes before the division).
    """
    weights = members.weights if isinstance(members, EnsemblePosterior) else tuple(members)
    M = int(weights[0].shape[0])
    if M not in (1, num_chains):
        raise ValueError(f"{M} members cannot start {num_chains} chains (give 1 or {num_chains})")
    if like is None:
        weights = [np.asarray(to_numpy(w), dtype=np.float64) for w in weights]
    else:
        xp = namespace(like)
        weights = [xp.astype(w, like.dtype) for w in weights]
    if output_scale != 1.0:
        weights[-1] = weights[-1] / output_scale
    if like is None:
        return [np.repeat(w, num_chains, axis=0) for w in weights] if M != num_chains else weights
    return [xp.asarray(xp.broadcast_to(w, (num_chains,) + tuple(w.shape[1:])) if M != num_chains else w, copy=True)
            for w in weights]
