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
ensemble (one :func:`~blockbayes.laplace.map_ensemble` problem) is seeded with ``[seed, 100]``; a
joint-noise MAP with ``restart_seeds="ensemble"`` takes its starts from that same problem (the best
member by objective: one fit serves both, :func:`joint_members`).
``noise="joint_select"``: candidate start ``k`` of the holdout-selected joint fits is seeded with
``[seed, 200 + k]``, its holdout split with ``[seed, 7]`` (shared by the MAP and the ensemble).
Anchored ensembles (``ensemble_posterior(anchored=True)``): one batched problem seeded with
``[seed, 100]`` (member ``k``'s anchor, target perturbation and restarts from its own key, see
:func:`~blockbayes.laplace.map_ensemble`); ``noise="joint_holdout"``'s pilot fit is seeded with
``[seed, 200]`` and split with ``[seed, 7]`` (:func:`joint_holdout_noise`).

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
from .laplace import evidence_fit, evidence_noise, map_ensemble, map_fit
from .laplace.map import check_smoothing
from .model import MLP, forward
from .nn import resolve_likelihood
from .point import EnsemblePosterior, PointPosterior

__all__ = ["map_posterior", "ensemble_posterior", "joint_members", "joint_select_candidates", "joint_holdout_noise", "chain_starts", "derived_seed",
           "clear_cache"]

_CACHE: dict = {}
_CACHE_SIZE = 16


def derived_seed(seed, *path: int) -> int:
    """``int(SeedSequence([seed, *path]).generate_state(1)[0])`` (``seed=None``: fresh entropy first)."""
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    return int(np.random.SeedSequence([seed, *path] if path else seed).generate_state(1)[0])


def _memo_store(key, value) -> None:
    """Memoise ``value`` under ``key`` in :data:`_CACHE`, dropping the oldest entry when it holds
    :data:`_CACHE_SIZE` already."""
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = value


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
                  noise_prior=(1.0, 1e-2), likelihood=None, cache: bool = False, evidence=None,
                  starts: int = 8, refit_iter: int = 5000, restart_seeds: str = "map", smoothing=None,
                  smoothing_iter: int = 5000, smoothing_tol: float = 1e-6,
                  predictive_noise: str = "joint") -> PointPosterior:
    """A MAP fit of the standard MLP with its noise variance chosen by ``noise``, as a point posterior.

    ``θ* = argmin_θ E(θ)`` (:func:`blockbayes.laplace.map_fit`, initialised from seed ``[seed, 0]``)
    and, for the gaussian likelihood, ``Δ_y`` by ``noise``:

    * ``"holdout"``: MSE on a held-out ``holdout`` fraction (split seed ``[seed, 7]``) of a fit to
      the rest, then a refit on all points (warm start) at that ``Δ_y``;
    * ``"joint"``: the joint MAP of ``(θ, log Δ_y)`` under ``1/Δ_y ~ Gamma(noise_prior)``
      (best of ``restarts`` starts by the objective ``E``, L-BFGS to the gradient tolerance ``tol``;
      ``restart_seeds`` says where the starts come from);
    * ``"evidence"``: type-II ``Δ_y`` from the Laplace evidence (MacKay's fixed point,
      :func:`blockbayes.laplace.evidence_fit`; starts at ``net.delta_y``; ``max_iter`` bounds its
      final fit, ``restarts`` its first; ``evidence``: its further options ``learn_prior``,
      ``structure``, ``max_outer``, ``rtol``, ``max_iter`` of the inner fits), the weights the MAP at
      that ``Δ_y``;
    * ``"joint_select"``: ``starts`` joint-noise MAP fits (as ``"joint"``, from different random
      starts) on the ``1 − holdout`` part of the data, each scored by its MSE on the held-out rest
      and refitted on all points (joint noise, warm start, at most ``refit_iter`` L-BFGS
      iterations; :func:`joint_select_candidates`); the refit with the lowest objective on all
      points is kept, and ``Δ_y`` is its held-out MSE (the joint ``Δ̂_y`` of a net that interpolates
      its training data sits near the hyperprior's floor ``b/(nC/2 + a)`` and is far too small for
      prediction; it is kept as ``delta_y_joint``);
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
    starts, refit_iter : int
        ``noise="joint_select"`` only: candidate starts, and L-BFGS iterations of the refit on all
        points (``max_iter`` bounds each candidate's fit).
    restart_seeds : {"map", "ensemble"}
        ``noise="joint"`` only. ``"map"``: :func:`~blockbayes.laplace.map_fit`'s restarts from seed
        ``[seed, 0]``. ``"ensemble"``: the ``restarts`` starts are the members of
        ``ensemble_posterior(net, X, y, members=restarts, seed=seed, noise="joint")`` (one batched
        problem, :func:`joint_members`; with ``cache`` the MAP and the ensemble of one seed share
        it), and the MAP is the member with the lowest objective.
    smoothing, smoothing_iter, smoothing_tol :
        ``noise="joint"`` only: the smoothing continuation of :func:`blockbayes.laplace.map_fit`
        (β schedule, e.g. ``(8, 32, 128, 512)``; iterations and gradient tolerance per stage) before
        each start's fit of the joint objective. ``None``: none.
    predictive_noise : {"joint", "holdout", "evidence"}
        ``noise="joint"`` only: the ``Δ_y`` the posterior predicts with (the weights are the joint
        MAP's in every case). ``"joint"``: the fit's own ``Δ̂_y``. ``"holdout"``: the held-out MSE of
        one fit of the same kind on ``1 − holdout`` of the data (:func:`joint_holdout_noise`, with the
        same smoothing; memoised with ``cache``). ``"evidence"``: one MacKay update at the fitted
        weights, ``(SSE/2 + b)/((nC − γ)/2 + a)`` (:func:`blockbayes.laplace.evidence_noise`). The
        joint ``Δ̂_y`` is kept as ``config["delta_y_joint"]``.

    Returns
    -------
    PointPosterior
        ``net`` carries the chosen ``Δ_y``; ``weights`` per layer ``(d_{l+1}, d_l + 1)`` in ``X``'s
        namespace; ``config``: ``map_converged``, ``map_iters`` (both fits for ``"holdout"``),
        ``delta_y`` (gaussian), ``map_time_s`` (the fit's wall time), ``map_reused`` (memo hit);
        ``"joint"`` adds ``map_fev``, ``map_grad_norm`` (largest gradient component of ``E`` at the
        end; ``tol`` bounds that of ``E/n``), ``map_stop`` and, with restarts, ``map_restart_objectives``, ``map_restart_iters``,
        ``map_best_restart`` (``restart_seeds="ensemble"`` also ``map_restart_grad_norms``,
        ``map_restart_stops`` and ``members_owed_s``: the shared fit's wall time when it was reused); ``"evidence"`` adds
        ``map_stop``, ``evidence_gamma``, ``evidence_outer``, ``evidence_converged``,
        ``evidence_prior_precision``, ``evidence_log_marglik``; ``"joint_select"`` adds ``map_stop``,
        ``delta_y_joint``, ``select_holdout_mse``, ``select_objectives`` and ``select_iters`` (per start),
        ``select_best``, ``select_time_s`` (the candidates' wall time, 0 when shared with the ensemble's
        fit), ``select_owed_s`` (their wall time when they were shared); ``smoothing`` adds
        ``map_smoothing_betas``, ``map_smoothing_iters``, ``map_smoothing_stops``, ``map_smoothing_objectives``
        (per stage, the returned start) and with restarts ``map_restart_smoothing_iters``; ``predictive_noise``
        other than ``"joint"`` adds ``predictive_noise``, ``delta_y_joint``, ``map_owed_s`` (the joint fit's wall
        time when ``cache`` reused it from a call with ``predictive_noise="joint"``) and ``pilot_delta_y_joint``,
        ``pilot_iters``, ``pilot_time_s``, ``pilot_owed_s`` (``"holdout"``) or ``evidence_gamma``
        (``"evidence"``).
    """
    lik = resolve_likelihood(net, likelihood)
    settings = dict(seed=seed, noise=noise, holdout=holdout, method=method, max_iter=max_iter, restarts=restarts,
                    tol=tol, ftol=ftol, noise_prior=tuple(noise_prior), likelihood=lik,
                    evidence=tuple(sorted(dict(evidence or {}).items())))
    if noise == "joint_select":
        settings.update(starts=int(starts), refit_iter=int(refit_iter))
    if restart_seeds not in ("map", "ensemble"):
        raise ValueError(f"restart_seeds must be 'map' or 'ensemble', got {restart_seeds!r}")
    if restart_seeds == "ensemble":
        if noise != "joint" or lik != "gaussian" or method != "lbfgs":
            raise ValueError("restart_seeds='ensemble' needs noise='joint', the gaussian likelihood and "
                             f"method='lbfgs' (got noise={noise!r}, likelihood={lik!r}, method={method!r})")
        settings["restart_seeds"] = "ensemble"
    settings.update(_smoothing_settings(net, lik, noise, method, smoothing, smoothing_iter, smoothing_tol,
                                        predictive_noise))
    key = None
    if cache:
        key = (_fingerprint(X, y), repr(net), repr(sorted(settings.items())))
        hit = _CACHE.get(key)
        if hit is not None:
            fnet, w, dy, info = hit
            return PointPosterior(net=fnet, weights=w, delta_y=dy, likelihood=lik, config=dict(info, map_reused=True))
    t0 = time.perf_counter()
    fnet, w, dy, info = _fit_point(net, X, y, lik=lik, cache=cache, **settings)
    info["map_time_s"] = time.perf_counter() - t0
    if cache:
        _memo_store(key, (fnet, w, dy, dict(info)))
    return PointPosterior(net=fnet, weights=w, delta_y=dy, likelihood=lik, config=info)


_NOISE = ("joint", "holdout", "train", "fixed", "evidence", "joint_select")


_PREDICTIVE_NOISE = ("joint", "holdout", "evidence")


def _smoothing_settings(net, lik, noise, method, smoothing, smoothing_iter, smoothing_tol, predictive_noise) -> dict:
    """The checked smoothing / predictive-noise settings of :func:`map_posterior` and
    :func:`ensemble_posterior` (empty for the defaults, so the other settings' memo keys stay)."""
    if predictive_noise not in _PREDICTIVE_NOISE:
        raise ValueError(f"predictive_noise must be one of {_PREDICTIVE_NOISE}, got {predictive_noise!r}")
    out = {}
    betas = check_smoothing(smoothing, net)
    joint = noise == "joint" and lik == "gaussian" and method == "lbfgs"
    if betas is not None:
        if not joint:
            raise ValueError("smoothing needs noise='joint', the gaussian likelihood and method='lbfgs' "
                             f"(got noise={noise!r}, likelihood={lik!r}, method={method!r})")
        si, st = int(smoothing_iter), float(smoothing_tol)
        if si < 1 or not (st > 0 and np.isfinite(st)):
            raise ValueError(f"smoothing_iter must be >= 1 and smoothing_tol > 0, got {smoothing_iter!r}, "
                             f"{smoothing_tol!r}")
        out.update(smoothing=betas, smoothing_iter=si, smoothing_tol=st)
    if predictive_noise != "joint":
        if not joint:
            raise ValueError(f"predictive_noise={predictive_noise!r} needs noise='joint' and the gaussian "
                             f"likelihood (got noise={noise!r}, likelihood={lik!r})")
        out["predictive_noise"] = predictive_noise
    return out


def _smooth_kw(smoothing=None, smoothing_iter=5000, smoothing_tol=1e-6) -> dict:
    """``map_fit`` / ``map_ensemble`` keywords of the continuation (none without one)."""
    return {} if smoothing is None else dict(smoothing=smoothing, smoothing_iter=smoothing_iter,
                                             smoothing_tol=smoothing_tol)


def _predictive_dy(net, X, y, w, dy_joint, *, mode, seed, holdout, max_iter, tol, ftol, noise_prior, smooth,
                   cache) -> tuple:
    """``(Δ_y, info)``: the predictive noise of a joint-noise fit ``w`` by ``mode`` (see ``predictive_noise``
    of :func:`map_posterior`)."""
    if mode == "holdout":
        p = joint_holdout_noise(net, X, y, seed=seed, holdout=holdout, max_iter=max_iter, tol=tol, ftol=ftol,
                                noise_prior=noise_prior, cache=cache, **smooth)
        return p["delta_y"], {"pilot_delta_y_joint": p["delta_y_joint"], "pilot_iters": p["iters"],
                              "pilot_time_s": p["time_s"], "pilot_owed_s": p["fit_time_s"] if p["reused"] else 0.0}
    e = evidence_noise(net, w, X, y, delta_y=dy_joint, noise_prior=tuple(noise_prior))
    return e["delta_y"], {"evidence_gamma": e["gamma"]}


def _fit_point(net, X, y, *, lik, seed, noise, holdout, method, max_iter, restarts, tol, ftol, noise_prior,
               likelihood, evidence=(), starts=8, refit_iter=5000, cache=False, restart_seeds="map", smoothing=None,
               smoothing_iter=5000, smoothing_tol=1e-6, predictive_noise="joint"):
    reg = lik == "gaussian"
    if reg and isinstance(noise, str) and noise not in _NOISE:
        raise ValueError(f"noise must be one of {_NOISE} or a float, got {noise!r}")
    smooth = _smooth_kw(smoothing, smoothing_iter, smoothing_tol)
    if predictive_noise != "joint":
        # the weights are the joint fit's: through map_posterior's memo, so that with ``cache`` a method
        # predicting with its own Δ̂_y and one predicting with another noise share one fit (its wall time
        # owed as ``map_owed_s`` when reused)
        inner = map_posterior(net, X, y, seed=seed, noise=noise, holdout=holdout, method=method, max_iter=max_iter,
                              restarts=restarts, tol=tol, ftol=ftol, noise_prior=noise_prior, likelihood=lik,
                              cache=cache, restart_seeds=restart_seeds, **smooth)
        w, dy0, info = inner.weights, float(inner.delta_y), dict(inner.config)
        fit_s = float(info.pop("map_time_s"))
        if info.pop("map_reused", False):
            info["map_owed_s"] = fit_s
        dy, extra = _predictive_dy(net, X, y, w, dy0, mode=predictive_noise, seed=seed, holdout=holdout,
                                   max_iter=max_iter, tol=tol, ftol=ftol, noise_prior=noise_prior, smooth=smooth,
                                   cache=cache)
        info.update(extra, delta_y_joint=dy0, delta_y=dy, predictive_noise=predictive_noise)
        return with_noise(net, dy), w, dy, info
    if restart_seeds == "ensemble":
        return _best_member(net, X, y, seed=seed, members=restarts, max_iter=max_iter, tol=tol, ftol=ftol,
                            noise_prior=noise_prior, cache=cache, **smooth)
    if noise == "joint_select":
        if not reg:
            raise ValueError("noise='joint_select' needs the gaussian likelihood")
        cand = joint_select_candidates(net, X, y, seed=seed, starts=starts, holdout=holdout, max_iter=max_iter,
                                       tol=tol, ftol=ftol, noise_prior=noise_prior, method=method, cache=cache,
                                       refit_iter=refit_iter)
        k = int(np.argmin(np.where(np.isfinite(cand["objective"]), cand["objective"], np.inf)))
        w, i1 = cand["weights"][k], cand["refit_info"][k]
        dy = float(cand["holdout_mse"][k])
        info = {"map_converged": bool(i1["converged"]), "map_iters": int(cand["iters"][k]) + int(i1["num_iter"]),
                "map_stop": i1["message"], "delta_y_joint": float(i1["delta_y"]),
                "select_holdout_mse": [float(v) for v in cand["holdout_mse"]],
                "select_objectives": [float(v) for v in cand["objective"]],
                "select_iters": [int(v) for v in cand["iters"]], "select_best": k, "select_time_s": cand["time_s"],
                "select_owed_s": cand["fit_time_s"] if cand["reused"] else 0.0, "delta_y": dy}
        return with_noise(net, dy), w, dy, info
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
            kw.update(noise="joint", noise_prior=tuple(noise_prior), **smooth)
        w, i1 = map_fit(net, X, y, seed=s0, **kw)
        info = {"map_converged": bool(i1["converged"]), "map_iters": int(i1["num_iter"]),
                "map_fev": int(i1["num_fev"]), "map_grad_norm": float(i1["grad_norm"]), "map_stop": i1["message"]}
        if "restart_objectives" in i1:
            info.update(map_restart_objectives=i1["restart_objectives"], map_restart_iters=i1["restart_iters"],
                        map_best_restart=i1["best_restart"])
        if smooth:
            info.update(_stages_config(i1))
            if "restart_smoothing_iters" in i1:
                info["map_restart_smoothing_iters"] = i1["restart_smoothing_iters"]
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


def _stages_config(i1) -> dict:
    """The continuation's record of a ``map_fit`` info for a posterior's config: ``map_smoothing_iters``
    (per stage), ``map_smoothing_stops``, ``map_smoothing_objectives`` (the unsmoothed ``E`` after each
    stage)."""
    st = i1["smoothing_stages"]
    return {"map_smoothing_betas": [s["beta"] for s in st], "map_smoothing_iters": [s["num_iter"] for s in st],
            "map_smoothing_stops": [s["message"] for s in st],
            "map_smoothing_objectives": [s["objective"] for s in st]}


def joint_members(net: MLP, X, y, *, seed=None, members: int = 5, restarts: int = 1, max_iter: int = 1000,
                  tol: Optional[float] = None, ftol: Optional[float] = None, noise_prior=(1.0, 1e-2),
                  cache: bool = False, smoothing=None, smoothing_iter: int = 5000,
                  smoothing_tol: float = 1e-6) -> dict:
    """The joint-noise MAP fits of the batched ensemble: ``members`` starts, one L-BFGS problem.

    Exactly :func:`blockbayes.laplace.map_ensemble` with ``noise="joint"`` (MAP of ``(θ, log Δ_y)``
    under ``1/Δ_y ~ Gamma(noise_prior)``), seed ``derived_seed(seed, 100)``, ``tol`` default
    ``1e-7``: member ``k`` is ``map_fit(..., seed=member_keys(derived_seed(seed, 100), members)[k])``.
    It is the fit of ``ensemble_posterior(noise="joint")``, and of ``map_posterior(noise="joint",
    restart_seeds="ensemble")``, which keeps its lowest-objective member; ``cache`` (with an integer
    ``seed``) memoises it in this process so that the two share one fit. ``smoothing``: the smoothing
    continuation of ``map_ensemble`` (``None``: none).

    Returns
    -------
    dict
        ``weights`` (per layer ``(members, d_{l+1}, d_l + 1)``), ``info`` (``map_ensemble``'s:
        ``members``, a list of per-member dicts with ``objective``, ``grad_norm``, ``num_iter``,
        ``converged``, ``message``, ``delta_y``), ``time_s`` (wall time; 0 on a memo hit),
        ``reused``, ``fit_time_s`` (wall time of the fit when it was computed).
    """
    members = int(members)
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members!r}")
    if seed is None:
        seed = derived_seed(None)
        cache = False
    tol = 1e-7 if tol is None else tol
    smooth = _smooth_kw(smoothing, smoothing_iter, smoothing_tol)
    key = ("joint_members", _fingerprint(X, y), repr(net), seed, members, int(restarts), max_iter, tol, ftol,
           tuple(noise_prior)) + ((tuple(sorted(smooth.items())),) if smooth else ())
    hit = _CACHE.get(key) if cache else None
    if hit is not None:
        return dict(hit, time_s=0.0, reused=True)
    t0 = time.perf_counter()
    W, info = map_ensemble(net, X, y, members=members, restarts=restarts, seed=derived_seed(seed, 100),
                           likelihood="gaussian", noise="joint", noise_prior=tuple(noise_prior), max_iter=max_iter,
                           tol=tol, ftol=ftol, progress=False, return_info=True, **smooth)
    dt = time.perf_counter() - t0
    out = dict(weights=tuple(W), info=info, time_s=dt, fit_time_s=dt, reused=False)
    if cache:
        _memo_store(key, out)
    return out


def _best_member(net, X, y, *, seed, members, max_iter, tol, ftol, noise_prior, cache, **smooth):
    """``map_posterior(noise="joint", restart_seeds="ensemble")``: the lowest-objective member of
    :func:`joint_members` (``(net with Δ_y, weights, Δ_y, info)``)."""
    fit = joint_members(net, X, y, seed=seed, members=members, max_iter=max_iter, tol=tol, ftol=ftol,
                        noise_prior=noise_prior, cache=cache, **smooth)
    mi = fit["info"]["members"]
    obj = np.array([m["objective"] for m in mi], dtype=np.float64)
    k = int(np.argmin(np.where(np.isfinite(obj), obj, np.inf)))
    w = tuple(W[k, ...] for W in fit["weights"])
    b = mi[k]
    dy = float(b["delta_y"])
    info = {"map_converged": bool(b["converged"]), "map_iters": int(b["num_iter"]), "map_fev": int(b["num_fev"]),
            "map_grad_norm": float(b["grad_norm"]), "map_stop": b["message"],
            "map_restart_objectives": [float(v) for v in obj],
            "map_restart_iters": [int(m["num_iter"]) for m in mi], "map_best_restart": k,
            "map_restart_grad_norms": [float(m["grad_norm"]) for m in mi],
            "map_restart_stops": [m["message"] for m in mi],
            "members_owed_s": float(fit["fit_time_s"]) if fit["reused"] else 0.0, "delta_y": dy}
    if smooth:
        info.update(_stages_config(b))
    return with_noise(net, dy), w, dy, info


def _joint_fit_kw(max_iter, tol, ftol, noise_prior) -> dict:
    """``map_fit`` keywords of a joint-noise (θ, log Δ_y) fit; ``tol``/``ftol`` ``None``: ``map_fit``'s own."""
    kw = dict(noise="joint", noise_prior=tuple(noise_prior), max_iter=max_iter, progress=False, return_info=True)
    if tol is not None:
        kw["tol"] = tol
    if ftol is not None:
        kw["ftol"] = ftol
    return kw


def _holdout_split(X, y, seed, frac, what):
    """``(y as (n, C), X_fit, y_fit, X_val, y_val)``: rows ``perm[n_val:]`` fit, rows ``perm[:n_val]``
    score, ``perm = default_rng(derived_seed(seed, 7)).permutation(n)``, ``n_val = max(1, round(frac·n))``."""
    xp = namespace(X)
    n = int(X.shape[0])
    n_val = max(1, int(round(frac * n)))
    if n - n_val < 2:
        raise ValueError(f"{what} needs more training points than {n}")
    perm = np.random.default_rng(derived_seed(seed, 7)).permutation(n)
    yy = xp.reshape(y, (n, -1)) if getattr(y, "ndim", 1) == 1 else y
    tr, va = xp.asarray(perm[n_val:]), xp.asarray(perm[:n_val])
    return yy, xp.take(X, tr, axis=0), xp.take(yy, tr, axis=0), xp.take(X, va, axis=0), xp.take(yy, va, axis=0)


def joint_holdout_noise(net: MLP, X, y, *, seed=None, holdout: float = 0.1, max_iter: int = 20000,
                        tol: Optional[float] = 1e-6, ftol: Optional[float] = 0.0, noise_prior=(1.0, 1e-2),
                        cache: bool = False, smoothing=None, smoothing_iter: int = 5000,
                        smoothing_tol: float = 1e-6) -> dict:
    """A noise variance for fixed-noise fits: the held-out MSE of one joint-noise MAP fit.

    The split of ``noise="joint_select"`` (rows ``perm[n_val:]`` fit, ``perm[:n_val]`` score, split seed
    ``[seed, 7]``); the fit is :func:`blockbayes.laplace.map_fit` with ``noise="joint"`` (MAP of
    ``(θ, log Δ_y)``, ``1/Δ_y ~ Gamma(noise_prior)``), seed ``derived_seed(seed, 200)`` — candidate 0 of
    :func:`joint_select_candidates`, without its refit — and

    ``Δ_y = max(mean over held-out rows of (F(x; θ̂) − y)², 1e-6)``  (units of ``y``).

    ``smoothing``: the fit runs the smoothing continuation of ``map_fit`` first (``None``: none).
    ``cache`` (with an integer ``seed``): memoise the result in this process (a MAP and an ensemble of
    one seed share it).

    Returns
    -------
    dict
        ``delta_y``, ``delta_y_joint`` (the fit's own ``Δ̂_y``), ``iters``, ``stop``, ``time_s`` (0 on a
        memo hit), ``reused``, ``fit_time_s`` (the fit's wall time when it was computed).
    """
    frac = float(holdout)
    if not 0.0 < frac < 1.0:
        raise ValueError(f"holdout must lie in (0, 1), got {holdout!r}")
    smooth = _smooth_kw(smoothing, smoothing_iter, smoothing_tol)
    if seed is None:
        cache = False
    key = ("joint_holdout", _fingerprint(X, y), repr(net), seed, frac, max_iter, tol, ftol, tuple(noise_prior),
           tuple(sorted(smooth.items())))
    hit = _CACHE.get(key) if cache else None
    if hit is not None:
        return dict(hit, time_s=0.0, reused=True)
    _, Xt, yt, Xv, yv = _holdout_split(X, y, seed, frac, "noise='joint_holdout'")
    kw = _joint_fit_kw(max_iter, tol, ftol, noise_prior)
    t0 = time.perf_counter()
    w, info = map_fit(net, Xt, yt, seed=derived_seed(seed, 200), **kw, **smooth)
    F = np.asarray(to_numpy(forward(net, tuple(w), Xv)), dtype=np.float64).reshape(-1)
    yv_h = np.asarray(to_numpy(yv), dtype=np.float64).reshape(-1)
    dt = time.perf_counter() - t0
    out = dict(delta_y=float(max(np.mean((F - yv_h) ** 2), 1e-6)), delta_y_joint=float(info["delta_y"]),
               iters=int(info["num_iter"]), stop=info["message"], time_s=dt, fit_time_s=dt, reused=False)
    if cache:
        _memo_store(key, out)
    return out


def joint_select_candidates(net: MLP, X, y, *, seed=None, starts: int = 8, holdout: float = 0.1,
                            max_iter: int = 20000, tol: Optional[float] = 1e-6, ftol: Optional[float] = 0.0,
                            noise_prior=(1.0, 1e-2), method: str = "lbfgs", cache: bool = False,
                            refit_iter: int = 5000) -> dict:
    """Joint-noise MAP fits from ``starts`` random starts on a ``1 − holdout`` part of the data,
    scored on the held-out rest, then refitted on all points (the candidates of
    ``noise="joint_select"``).

    Rows ``perm[n_val:]`` fit and rows ``perm[:n_val]`` score, ``perm =
    default_rng(derived_seed(seed, 7)).permutation(n)``, ``n_val = max(1, round(holdout·n))`` (the
    split of ``noise="holdout"``). Start ``k`` is :func:`blockbayes.laplace.map_fit` with
    ``noise="joint"`` (MAP of ``(θ, log Δ_y)``, ``1/Δ_y ~ Gamma(noise_prior)``) and seed
    ``derived_seed(seed, 200 + k)``, L-BFGS until ``max|∇E/n| ≤ tol``, no decrease, or ``max_iter``;
    its refit is ``map_fit`` on all points from those weights (``noise="joint"``, ``refit_iter``
    iterations).
    ``cache``: memoise the candidates in this process (with an integer ``seed``), so that the MAP and
    the ensemble of one seed share them.

    Returns
    -------
    dict
        ``weights`` (list over starts of the refits' per-layer ``(d_{l+1}, d_l + 1)`` arrays),
        ``holdout_mse`` (``(starts,)``, ``max(mean((F(x) − y)²), 1e-6)`` of the fit on the
        ``1 − holdout`` part over the held-out rows, in the units of ``y``), ``objective`` (the
        refits' ``E`` on all points), ``iters`` (of the first fits), ``refit_info`` (the refits'
        :func:`~blockbayes.laplace.map_fit` infos), ``time_s`` (wall time; 0 on a memo hit),
        ``reused``, ``fit_time_s`` (wall time of the fits when they were computed).
    """
    starts = int(starts)
    if starts < 1:
        raise ValueError(f"starts must be >= 1, got {starts!r}")
    frac = float(holdout)
    if not 0.0 < frac < 1.0:
        raise ValueError(f"holdout must lie in (0, 1), got {holdout!r}")
    if method != "lbfgs":
        raise ValueError(f"noise='joint_select' needs method='lbfgs', got {method!r}")
    if seed is None:
        seed = derived_seed(None)
        cache = False
    key = ("joint_select", _fingerprint(X, y), repr(net), seed, starts, frac, max_iter, tol, ftol,
           tuple(noise_prior), int(refit_iter))
    hit = _CACHE.get(key) if cache else None
    if hit is not None:
        return dict(hit, time_s=0.0, reused=True)
    yy, Xt, yt, Xv, yv = _holdout_split(X, y, seed, frac, "noise='joint_select'")
    kw = _joint_fit_kw(max_iter, tol, ftol, noise_prior)
    t0 = time.perf_counter()
    weights, mse, obj, its, rinfo = [], [], [], [], []
    yv_h = np.asarray(to_numpy(yv), dtype=np.float64).reshape(-1)
    for k in range(starts):
        w, info = map_fit(net, Xt, yt, seed=derived_seed(seed, 200 + k), **kw)
        F = np.asarray(to_numpy(forward(net, tuple(w), Xv)), dtype=np.float64).reshape(-1)
        mse.append(float(max(np.mean((F - yv_h) ** 2), 1e-6)))
        its.append(int(info["num_iter"]))
        wr, ir = map_fit(net, X, yy, init=w, **dict(kw, max_iter=int(refit_iter)))
        weights.append(tuple(wr))
        obj.append(float(ir["objective"]))
        rinfo.append({k_: v for k_, v in ir.items() if k_ != "history"})
    dt = time.perf_counter() - t0
    out = dict(weights=weights, holdout_mse=np.array(mse), objective=np.array(obj), iters=np.array(its),
               refit_info=rinfo, time_s=dt, fit_time_s=dt, reused=False)
    if cache:
        _memo_store(key, out)
    return out


def ensemble_posterior(net: MLP, X, y, *, members: int = 5, seed=None, noise="holdout", batched=None,
                       holdout: float = 0.1, method: str = "lbfgs", max_iter: int = 1000, restarts: int = 1,
                       tol: Optional[float] = None, ftol: Optional[float] = None, noise_prior=(1.0, 1e-2),
                       likelihood=None, cache: bool = False, evidence=None, starts: int = 8,
                       refit_iter: int = 5000, anchored: bool = False, target_noise=None, smoothing=None,
                       smoothing_iter: int = 5000, smoothing_tol: float = 1e-6,
                       predictive_noise: str = "joint") -> EnsemblePosterior:
    """A deep ensemble of ``members`` MAP fits (Lakshminarayanan et al. 2017) as a mixture posterior.

    ``batched=False``: member ``k`` is ``map_posterior(net, X, y, seed=derived_seed(seed, 100 + k),
    noise=noise, ...)`` (fitted one after another, each memoised with ``cache``).
    ``batched=True`` (default when ``noise="joint"``): all members as one batched L-BFGS problem,
    :func:`blockbayes.laplace.map_ensemble` seeded with ``[seed, 100]`` (``noise`` ``"joint"``,
    ``"fixed"`` or a float; ``tol`` default ``1e-7``; ``restarts`` per member); with ``"joint"``
    through :func:`joint_members`, memoised with ``cache`` and shared with ``map_posterior(noise=
    "joint", restart_seeds="ensemble", restarts=members)`` of the same seed (``config["hyper_fit"]``:
    ``members_time_s``, ``members_reused``, ``members_owed_s``).
    ``noise="evidence"`` (batched by default): the type-II ``Δ_y`` (and prior, with
    ``evidence={"learn_prior": True}``) of ``map_posterior(net, X, y, seed=seed, noise="evidence", ...)``
    (the ``map`` fit of the same seed, shared through ``cache``), then every member a MAP fit at those
    fixed hyperparameters, batched as above; ``batched=False``: one evidence fit per member.
    ``noise="joint_select"``: the refits of the ``members`` of the ``starts`` candidates of
    :func:`joint_select_candidates` with the smallest held-out MSE (the candidates of the ``map``
    fit of the same seed, shared in-process with ``cache``); member ``Δ_y`` = its held-out MSE
    (chosen on validation splits, docs/reference.md).

    **Anchored** (randomize-then-optimize) ensembles, ``anchored=True`` and/or ``target_noise``: one
    batched :func:`blockbayes.laplace.map_ensemble` problem seeded with ``[seed, 100]`` in which member
    ``k`` minimises ``E_k(θ) = Σ_μ ℓ(yᵏ_μ, F_μ(θ)) + ½(θ − θ₀ᵏ)ᵀΛ(θ − θ₀ᵏ)`` with its own prior draw
    ``θ₀ᵏ ~ N(0, Λ⁻¹)`` and targets ``yᵏ = y + εᵏ``, ``εᵏ ~ N(0, Δ_ε)`` (see ``map_ensemble``). The
    noise, by ``noise``: ``"joint"`` (profiled per member, as ``ensemble_joint``; member ``Δ_y`` = its
    ``Δ̂_y``), ``"joint_holdout"`` (fixed at the held-out MSE of one joint-noise fit on ``1 − holdout``
    of the data, :func:`joint_holdout_noise`), ``"fixed"`` (``net.delta_y``) or a float.
    ``target_noise``: ``None`` (targets not perturbed), a float ``Δ_ε``, or ``"noise"``: ``Δ_ε`` = the
    fixed ``Δ_y`` (the exact-sampling recipe for a linear-Gaussian model; not with ``"joint"``).
    ``config["anchored"]``: the settings, ``target_noise`` used and the noise fit's diagnostics.

    **Smoothing continuation** (``noise="joint"``, batched): ``smoothing``, ``smoothing_iter``,
    ``smoothing_tol`` as for :func:`map_posterior`, run by every member inside the one batched problem
    (:func:`joint_members`). ``predictive_noise`` (``noise="joint"`` only): the members' predictive
    ``Δ_y`` — ``"joint"``: each member's ``Δ̂_y``; ``"holdout"``: for every member the held-out MSE of
    :func:`joint_holdout_noise` (the same smoothing; shared with the MAP of the same seed through
    ``cache``); ``"evidence"``: per member one MacKay update at its weights
    (:func:`blockbayes.laplace.evidence_noise`). Member configs keep ``delta_y_joint``.

    Returns
    -------
    EnsemblePosterior
        ``weights`` per layer ``(members, d_{l+1}, d_l + 1)``, ``delta_y`` ``(members,)``;
        ``config["members"]``: each member's fit diagnostics (as :func:`map_posterior`'s config; the
        batched fits add ``map_objective`` and ``map_grad_norm``).
    """
    lik = resolve_likelihood(net, likelihood)
    smooth_set = _smoothing_settings(net, lik, noise, method, smoothing, smoothing_iter, smoothing_tol,
                                     predictive_noise)
    if smooth_set and (anchored or target_noise is not None or batched is False):
        raise ValueError("smoothing / predictive_noise are options of the batched joint-noise ensemble "
                         "(not anchored, not batched=False)")
    if anchored or target_noise is not None:
        return _ensemble_anchored(net, X, y, lik=lik, members=members, seed=seed, noise=noise, holdout=holdout,
                                  method=method, max_iter=max_iter, restarts=restarts, tol=tol, ftol=ftol,
                                  noise_prior=noise_prior, anchored=anchored, target_noise=target_noise)
    if noise == "joint_select":
        return _ensemble_select(net, X, y, lik=lik, members=members, seed=seed, starts=starts, holdout=holdout,
                                method=method, max_iter=max_iter, tol=tol, ftol=ftol, noise_prior=noise_prior,
                                refit_iter=refit_iter, cache=cache)
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
    if reg and noise == "joint":
        smooth = _smooth_kw(*(smooth_set[k] for k in ("smoothing", "smoothing_iter", "smoothing_tol"))) \
            if "smoothing" in smooth_set else {}
        fit = joint_members(net, X, y, seed=seed, members=members, restarts=restarts, max_iter=max_iter, tol=tol,
                            ftol=ftol, noise_prior=noise_prior, cache=cache, **smooth)
        W, info = fit["weights"], fit["info"]
        hyper = {"members_time_s": float(fit["time_s"]), "members_reused": bool(fit["reused"]),
                 "members_owed_s": float(fit["fit_time_s"]) if fit["reused"] else 0.0}
        if predictive_noise != "joint" or smooth:
            cfg, dy = _members_config(info, reg)
            if smooth:
                for c, mi in zip(cfg, info["members"]):
                    c.update(_stages_config(mi))
            if predictive_noise != "joint":
                t0 = time.perf_counter()
                pkw = dict(mode=predictive_noise, seed=seed, holdout=holdout, max_iter=max_iter, tol=tol, ftol=ftol,
                           noise_prior=noise_prior, smooth=smooth, cache=cache)
                if predictive_noise == "holdout":          # one pilot fit, every member's Δ_y
                    d, extra = _predictive_dy(net, X, y, None, None, **pkw)
                    hyper.update(extra)
                for k, c in enumerate(cfg):
                    if predictive_noise == "evidence":
                        d, extra = _predictive_dy(net, X, y, tuple(Wl[k, ...] for Wl in W), c["delta_y"], **pkw)
                        c.update(extra)
                    c.update(delta_y_joint=c["delta_y"], delta_y=float(d))
                hyper.update(predictive_noise=predictive_noise, predictive_noise_time_s=time.perf_counter() - t0)
                dy = np.array([c["delta_y"] for c in cfg])
            return EnsemblePosterior(net=net, weights=tuple(W), delta_y=dy, likelihood=lik,
                                     config={"members": cfg, "hyper_fit": hyper})
    else:
        W, info = map_ensemble(net, X, y, members=members, restarts=restarts, seed=derived_seed(seed, 100),
                               likelihood=lik, noise=noise if reg else None, noise_prior=tuple(noise_prior),
                               prior_precision=prior,
                               max_iter=max_iter, tol=1e-7 if tol is None else tol, ftol=ftol, progress=False,
                               return_info=True)
    cfg, dy = _members_config(info, reg)
    config = {"members": cfg, **({"hyper_fit": hyper} if hyper else {})}
    return EnsemblePosterior(net=net, weights=tuple(W), delta_y=dy, likelihood=lik, config=config)


def _members_config(info, reg: bool):
    """Per-member fit records of a batched ``map_ensemble`` and, for regression, the members' ``Δ_y``
    (``(M,)`` array; ``None`` otherwise)."""
    cfg = []
    for mi in info["members"]:
        c = {"map_converged": bool(mi["converged"]), "map_iters": int(mi["num_iter"]), "map_stop": mi["message"],
             "map_objective": float(mi["objective"]), "map_grad_norm": float(mi["grad_norm"])}
        if reg:
            c["delta_y"] = float(mi["delta_y"])
        cfg.append(c)
    return cfg, (np.array([c["delta_y"] for c in cfg]) if reg else None)


_ANCHORED_NOISE = ("joint", "joint_holdout", "fixed")


def _ensemble_anchored(net, X, y, *, lik, members, seed, noise, holdout, method, max_iter, restarts, tol, ftol,
                       noise_prior, anchored, target_noise):
    """``ensemble_posterior(anchored=True / target_noise=...)``: one batched anchored ``map_ensemble``."""
    if method != "lbfgs":
        raise ValueError(f"an anchored ensemble needs method='lbfgs', got {method!r}")
    if not isinstance(anchored, bool):
        raise TypeError(f"anchored must be a bool, got {type(anchored).__name__}")
    reg = lik == "gaussian"
    if reg and isinstance(noise, str) and noise not in _ANCHORED_NOISE:
        raise ValueError(f"an anchored ensemble takes noise in {_ANCHORED_NOISE} or a float, got {noise!r}")
    if isinstance(target_noise, str) and target_noise != "noise":
        raise ValueError(f"target_noise must be None, a positive float or 'noise', got {target_noise!r}")
    if target_noise == "noise" and noise == "joint":
        raise ValueError("target_noise='noise' needs a fixed noise variance (noise='joint_holdout', 'fixed' or a "
                         "float), not noise='joint'")
    hyper = {"anchored": bool(anchored), "noise": noise if isinstance(noise, str) else float(noise)}
    kw = dict(members=members, restarts=restarts, seed=derived_seed(seed, 100), likelihood=lik, max_iter=max_iter,
              tol=1e-7 if tol is None else tol, ftol=ftol, progress=False, return_info=True, anchored=anchored)
    t0 = time.perf_counter()
    if reg:
        if noise == "joint":
            kw.update(noise="joint", noise_prior=tuple(noise_prior))
        else:
            if noise == "joint_holdout":
                pilot = joint_holdout_noise(net, X, y, seed=seed, holdout=holdout, max_iter=max_iter, tol=tol,
                                            ftol=ftol, noise_prior=noise_prior)
                dy = pilot["delta_y"]
                hyper["pilot"] = pilot
            else:
                dy = float(net.delta_y) if noise == "fixed" else float(noise)
            kw["noise"] = dy
            if target_noise == "noise":
                target_noise = dy
    elif target_noise is not None:
        raise ValueError(f"target_noise needs the gaussian likelihood (got {lik!r})")
    W, info = map_ensemble(net, X, y, target_noise=target_noise, **kw)
    hyper.update(target_noise=None if target_noise is None else float(target_noise),
                 members_time_s=time.perf_counter() - t0)
    cfg, dy = _members_config(info, reg)
    return EnsemblePosterior(net=net, weights=tuple(W), delta_y=dy, likelihood=lik,
                             config={"members": cfg, "anchored": hyper})


def _ensemble_select(net, X, y, *, lik, members, seed, starts, holdout, method, max_iter, tol, ftol, noise_prior,
                     refit_iter, cache):
    if lik != "gaussian":
        raise ValueError("noise='joint_select' needs the gaussian likelihood")
    members = int(members)
    if not 1 <= members <= int(starts):
        raise ValueError(f"noise='joint_select' keeps members <= starts, got members={members}, starts={starts}")
    cand = joint_select_candidates(net, X, y, seed=seed, starts=starts, holdout=holdout, max_iter=max_iter, tol=tol,
                                   ftol=ftol, noise_prior=noise_prior, method=method, cache=cache,
                                   refit_iter=refit_iter)
    keep = [int(k) for k in np.argsort(cand["holdout_mse"], kind="stable")[:members]]
    Ws, cfg = [], []
    for k in keep:
        i1 = cand["refit_info"][k]
        Ws.append(cand["weights"][k])
        cfg.append({"map_converged": bool(i1["converged"]), "map_iters": int(cand["iters"][k]) + int(i1["num_iter"]),
                    "map_stop": i1["message"], "delta_y": float(cand["holdout_mse"][k]), "candidate": k,
                    "delta_y_joint": float(i1["delta_y"])})
    xp = namespace(Ws[0][0])
    W = tuple(xp.stack([w[l] for w in Ws]) for l in range(len(Ws[0])))
    dy = np.array([c["delta_y"] for c in cfg])
    hyper = {"select_time_s": float(cand["time_s"]), "select_reused": bool(cand["reused"]),
             "select_owed_s": float(cand["fit_time_s"]) if cand["reused"] else 0.0,
             "select_holdout_mse": [float(v) for v in cand["holdout_mse"]]}
    return EnsemblePosterior(net=net, weights=W, delta_y=dy, likelihood=lik, config={"members": cfg, "select": hyper})


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
