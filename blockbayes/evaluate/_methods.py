"""The method registry of :mod:`blockbayes.evaluate`: adapters that fit one inference family on a
training set and return a :class:`Predictor`.

A method is a :class:`Method`: a name, default options, the optional module it needs and a
``fit(arch, X, y, *, seed, **options) -> Predictor`` function. ``arch`` is an :class:`Arch`
(input width, hidden widths, output width, task, classes); each adapter builds its own
:class:`~blockbayes.MLP` from it, because the families parameterise the network differently
(the noisy network's Δ for Gibbs and block VI, weight decay and noise for MAP / Laplace).

Register your own with :func:`register_method`; the runner treats built-in and user methods alike.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

__all__ = ["Arch", "Predictor", "Method", "register_method", "get_method", "method_names",
           "available_methods", "MethodUnavailableError"]


class MethodUnavailableError(RuntimeError):
    """A registered method needs a module (or function) that this installation lacks."""


@dataclass(frozen=True)
class Arch:
    """Architecture handed to a method: ``widths = [d_in, *hidden, d_out]``.

    ``task`` is ``"regression"`` (``d_out = 1``, targets standardised floats of shape ``(n,)``)
    or ``"classification"`` (integer labels ``0..n_classes-1``).
    """

    d_in: int
    hidden: tuple
    task: str
    n_classes: Optional[int] = None
    activation: str = "relu"

    @property
    def d_out(self) -> int:
        if self.task == "regression":
            return 1
        return 1 if self.n_classes == 2 else int(self.n_classes)

    @property
    def widths(self) -> list:
        return [self.d_in, *self.hidden, self.d_out]


@dataclass
class Predictor:
    """What a fitted method exposes to the runner (host NumPy in, host NumPy out).

    Regression (standardised units): ``predict(X) -> (mean (n,), var (n,))`` — the predictive
    mean and total predictive variance — and ``lpd(X, y) -> (n,)``, the per-point log predictive
    density. Classification: ``predict_proba(X) -> (n, K)``.
    ``diagnostics``: JSON-able scalars (R-hat, converged flags, learned noise, ...);
    ``traces``: name -> list of per-chain lists of floats (plotted as trace plots).
    ``extra_time_s``: fitting time spent outside this call but owed to it (a MAP fit reused from
    the memo of another method), added to the cell's ``fit_time_s``.
    """

    predict: Optional[Callable] = None
    lpd: Optional[Callable] = None
    predict_proba: Optional[Callable] = None
    diagnostics: dict = field(default_factory=dict)
    traces: dict = field(default_factory=dict)
    extra_time_s: float = 0.0


@dataclass(frozen=True)
class Method:
    """A registered inference method.

    Attributes
    ----------
    name : str
        Registry name (``"gibbs"``, ``"map"``, ``"laplace_kfac"``, ...).
    fit : callable
        ``fit(arch, X, y, *, seed, **options) -> Predictor``.
    defaults : dict
        Default options; a run's options are ``{**defaults, **user_options}`` and enter the
        cell's config hash, so changing any option recomputes.
    requires : str or None
        ``"module"`` or ``"module:attribute"`` the method needs (checked by :func:`available_methods`).
    tasks : tuple of str
        Tasks the method supports.
    description : str
        One line for tables and ``--help``.
    """

    name: str
    fit: Callable
    defaults: dict = field(default_factory=dict)
    requires: Optional[str] = None
    tasks: tuple = ("regression", "classification")
    description: str = ""

    def available(self) -> bool:
        return _requirement_met(self.requires)

    def options(self, user: Optional[dict] = None) -> dict:
        user = dict(user or {})
        unknown = sorted(set(user) - set(self.defaults))
        if unknown:
            raise ValueError(f"method {self.name!r} has no option(s) {unknown}; "
                             f"its options are {sorted(self.defaults)}")
        return {**self.defaults, **user}


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method, *, overwrite: bool = False) -> Method:
    """Add a :class:`Method` to the registry (``overwrite=True`` to replace one)."""
    if not isinstance(method, Method):
        raise TypeError(f"register_method needs a Method, got {type(method).__name__}")
    if method.name in _REGISTRY and not overwrite:
        raise ValueError(f"method {method.name!r} is already registered (pass overwrite=True)")
    _REGISTRY[method.name] = method
    return method


def method_names() -> tuple:
    """All registered names (available or not)."""
    return tuple(_REGISTRY)


def available_methods(task: Optional[str] = None) -> tuple:
    """Registered names whose required modules are importable (optionally for one task)."""
    return tuple(n for n, m in _REGISTRY.items() if m.available() and (task is None or task in m.tasks))


def get_method(name: str) -> Method:
    """The registered :class:`Method` ``name``; a clear error for unknown or unavailable ones."""
    if isinstance(name, Method):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a method name must be a str, got {type(name).__name__}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; registered methods: {', '.join(_REGISTRY)}")
    m = _REGISTRY[name]
    if not m.available():
        raise MethodUnavailableError(f"method {name!r} needs {m.requires}, which this installation lacks; "
                                     f"available methods: {', '.join(available_methods())}")
    return m


def _requirement_met(req: Optional[str]) -> bool:
    if not req:
        return True
    mod, _, attr = req.partition(":")
    try:
        obj = importlib.import_module(mod)
    except Exception:
        return False
    for part in filter(None, attr.split(".")):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


# ----------------------------------------------------------------------------------- helpers

def _np(a) -> np.ndarray:
    from .._backend import to_numpy

    return np.asarray(to_numpy(a), dtype=np.float64)


def _col(a) -> np.ndarray:
    a = _np(a)
    return a[:, 0] if a.ndim == 2 else a


def _proba2(p) -> np.ndarray:
    p = _np(p)
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)
    return p


def _int_seed(seed) -> int:
    return int(np.random.SeedSequence(seed).generate_state(1)[0])


def _thin_trace(a, max_points=200) -> list:
    a = _np(a)
    step = max(1, math.ceil(a.shape[1] / max_points))
    return [[float(v) for v in row[::step]] for row in a]


def _chain_diagnostics(name, draws) -> dict:
    """R-hat and bulk ESS of a (chains, draws) array (skipped when too short or constant)."""
    from .. import diagnostics

    out = {}
    d = _np(draws)
    if d.ndim != 2 or d.shape[0] < 2 or d.shape[1] < 4 or not np.all(np.isfinite(d)):
        return out
    if np.ptp(d) == 0:
        return out
    try:
        out[f"rhat_{name}"] = float(diagnostics.rhat(d))
        out[f"ess_bulk_{name}"] = float(diagnostics.ess_bulk(d))
    except Exception:  # diagnostics are a report, never a reason to lose a cell
        pass
    return out


def _gibbs_likelihood(arch: Arch) -> str:
    if arch.task == "regression":
        return "gaussian"
    return "probit" if arch.n_classes == 2 else "multinomial_probit"


def _predictor(arch: Arch, post, *, predict_kw=None, proba_kw=None, diagnostics=None, traces=None,
               extra_time_s: float = 0.0, lpd_kw=None) -> Predictor:
    """The :class:`Predictor` of a fitted posterior: every method predicts through its result object
    (:mod:`blockbayes.posterior`'s common interface), host NumPy in and out.

    Regression: ``predict(X) -> (mean, var)`` from ``post.predict(X, **predict_kw)`` and
    ``lpd(X, y)`` from ``post.log_predictive_density(X, y, reduce=False, **lpd_kw)`` (``lpd_kw``
    defaults to ``predict_kw``). Classification: ``post.predict_proba(X, **proba_kw)``.
    """
    pkw = dict(predict_kw or {})
    lkw = dict(pkw if lpd_kw is None else lpd_kw)
    common = dict(diagnostics=diagnostics if diagnostics is not None else {}, traces=dict(traces or {}),
                  extra_time_s=extra_time_s)
    if arch.task == "regression":
        def predict(Xn):
            m, v = post.predict(Xn, **pkw)
            return _col(m), _col(v)

        def lpd(Xn, yn):
            return _np(post.log_predictive_density(Xn, yn, reduce=False, **lkw))

        return Predictor(predict=predict, lpd=lpd, **common)
    qkw = dict(proba_kw or {})
    return Predictor(predict_proba=lambda Xn: _proba2(post.predict_proba(Xn, **qkw)), **common)


# ----------------------------------------------------------------------------------- gibbs

# Logistic and probit links agree best when the logit is scaled by 1/1.702 (Camilli 1994); a MAP
# start for the probit models divides the output layer of a logistic MAP fit by this factor.
_LOGIT_TO_PROBIT = 1.702


def _map_starts(arch: Arch, X, y, *, seed, num_chains, prior_prec, map_options):
    """One MAP fit per chain, stacked as chain-batched start weights for the noisy-network samplers.

    Chain ``c`` starts from the MAP fit with seed ``[seed, 100 + c]`` — the same fits as the members
    of the ``ensemble`` method (shared through the MAP memo when both run in one process), so that
    the chains start in different modes and R-hat can see it. Returns ``(weights, delta_y, info)``:
    ``weights[l]`` of shape ``(C, d_{l+1}, d_l + 1)``, the mean holdout noise variance of the fits
    (regression; the starting ``Δ_y``) and ``info`` with the MAP time owed to the caller.
    For classification the output layer is divided by 1.702 (logistic → probit scale).
    """
    fits = _member_fits(arch, X, y, seed=seed, count=num_chains, prior_prec=prior_prec, **map_options)
    L = len(arch.widths) - 1
    weights = [np.stack([_np(f[1][l]) for f in fits]) for l in range(L)]
    if arch.task != "regression":
        weights[-1] = weights[-1] / _LOGIT_TO_PROBIT
    owed = sum(_owed(f[3]) for f in fits)
    fresh = sum(float(f[3].get("map_time_s", 0.0)) for f in fits if not f[3].get("map_reused"))
    info = {"map_starts": num_chains, "map_time_s": owed + fresh, "map_owed_s": owed,
            "map_starts_converged": all(f[3].get("map_converged", True) for f in fits)}
    return weights, float(np.mean([f[2] for f in fits])), info


_MAP_INITS = ("map", "map_shared")
_MAP_START_OPTIONS = ("max_iter", "holdout", "noise", "delta_y", "optimizer")


def _map_init_kind(init):
    """``("map" | "map_shared", MAP option overrides)`` for a MAP start, ``(None, {})`` otherwise."""
    if isinstance(init, str):
        return (init, {}) if init in _MAP_INITS else (None, {})
    if isinstance(init, dict) and len(init) == 1 and next(iter(init)) in _MAP_INITS:
        kind, over = next(iter(init.items()))
        over = dict(over or {})
        bad = sorted(set(over) - set(_MAP_START_OPTIONS))
        if bad:
            raise ValueError(f"MAP start options {bad} unknown; choose from {list(_MAP_START_OPTIONS)}")
        return kind, over
    return None, {}


def _resolve_start(arch, X, y, *, seed, init, num_chains, prior_prec, delta_y):
    """MAP starts for the noisy-network samplers; any other ``init`` passes through unchanged.

    ``init="map"``: chain ``c`` starts from its own MAP fit (distinct modes, honest R-hat).
    ``init="map_shared"``: every chain starts from the first of those fits (one mode; what a
    Rao–Blackwellised block posterior needs, since it averages natural parameters over chains and
    averaging over different modes — permuted hidden units — gives a meaningless posterior).
    ``init={"map": {...}}`` (or ``{"map_shared": {...}}``) overrides the MAP settings of the starts
    (``max_iter``, ``holdout``, ``noise``, ``delta_y``, ``optimizer``; defaults as for ``map``).
    Returns ``(start, delta_y, info)``; ``delta_y`` is the MAP holdout noise for regression.
    """
    kind, over = _map_init_kind(init)
    if kind is None:
        return init, delta_y, {}
    mopts = {k: v for k, v in {**_MAP_DEFAULTS, **over}.items() if k != "prior_prec"}
    mopts["method"] = mopts.pop("optimizer")
    fits = num_chains if kind == "map" else 1
    weights, dy, info = _map_starts(arch, X, y, seed=seed, num_chains=fits, prior_prec=prior_prec,
                                    map_options=mopts)
    if fits != num_chains:
        weights = [np.repeat(w, num_chains, axis=0) for w in weights]
    return weights, (dy if arch.task == "regression" else delta_y), info


def _fit_gibbs(arch: Arch, X, y, *, seed, num_warmup, num_samples, num_chains, thin, delta_z, delta_x,
               delta_y, learn_noise, learn_prior, prior_prec, init, predictive, dtype):
    from .. import gibbs
    from ..model import MLP

    lik = _gibbs_likelihood(arch)
    start, delta_y, start_info = _resolve_start(arch, X, y, seed=seed, init=init, num_chains=num_chains,
                                                prior_prec=prior_prec, delta_y=delta_y)
    net = MLP(arch.widths, arch.activation, likelihood=lik, prior_prec=prior_prec,
              delta={"Z": delta_z, "X": delta_x, "y": delta_y})
    reg = arch.task == "regression"
    res = gibbs.run(net, X, y, num_samples=num_samples, num_warmup=num_warmup, num_chains=num_chains,
                    thin=thin, seed=seed, learn_noise=bool(learn_noise and reg), learn_prior=learn_prior,
                    init=start, dtype=dtype, progress=False).to_numpy()
    diag = {"sweeps_per_chain": num_warmup + num_samples * thin, "samples": num_chains * num_samples,
            **start_info}
    traces = {}
    if res.log_joint is not None:
        traces["log_joint"] = _thin_trace(res.log_joint)
        diag.update(_chain_diagnostics("log_joint", res.log_joint))
    if reg and learn_noise:
        traces["delta_y"] = _thin_trace(res.delta_y)
        diag.update(_chain_diagnostics("delta_y", res.delta_y))
        diag["delta_y_mean"] = float(np.mean(res.delta_y))
    if learn_prior:
        for l in range(net.num_layers):
            traces[f"lam_w{l + 1}"] = _thin_trace(res.lam_w[..., l])
    return _predictor(arch, res, predict_kw=dict(kind=predictive, seed=_int_seed([seed, 1])), diagnostics=diag,
                      traces=traces, extra_time_s=start_info.get("map_owed_s", 0.0))


register_method(Method(
    "gibbs", _fit_gibbs,
    defaults=dict(num_warmup=1000, num_samples=100, num_chains=4, thin=10, delta_z=1e-3, delta_x=1e-3,
                  delta_y=0.1, learn_noise=True, learn_prior=False, prior_prec="fan_in", init="map",
                  predictive="network", dtype="float64"),
    requires="blockbayes.gibbs",
    description="block-Gibbs on the noisy MLP (Δ_Z = Δ_X = 1e-3, learned Δ_y, fan-in prior, 4 chains from "
                "4 MAP fits)"))


# ----------------------------------------------------------------------------------- MAP family

def _std_net(arch: Arch, prior_prec, delta_y):
    from ..model import MLP

    lik = _gibbs_likelihood(arch)   # the laplace module maps probit -> bernoulli, multi -> categorical
    return MLP(arch.widths, arch.activation, likelihood=lik, prior_prec=prior_prec, delta={"y": delta_y})


_MAP_CACHE: dict = {}
_MAP_CACHE_SIZE = 16


def _map_with_noise(arch: Arch, X, y, **kw):
    """Memoised :func:`_map_fit_noise`: ``map``, ``laplace_*`` and ``laplace_iterative`` with the same
    MAP settings on the same data and seed share one fit. The fit's wall time is returned in
    ``info["map_time_s"]`` so that every method is charged for it (``Predictor.extra_time_s``)."""
    import hashlib
    import time

    h = hashlib.sha1()
    for a in (X, y):
        a = np.ascontiguousarray(_np(a))
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    key = (h.hexdigest(), repr(arch), repr(sorted(kw.items())))
    hit = _MAP_CACHE.get(key)
    if hit is not None:
        net, w, dy, info = hit
        return net, w, dy, dict(info, map_reused=True)
    t0 = time.perf_counter()
    net, w, dy, info = _map_fit_noise(arch, X, y, **kw)
    info = dict(info, map_time_s=time.perf_counter() - t0)
    if len(_MAP_CACHE) >= _MAP_CACHE_SIZE:
        _MAP_CACHE.pop(next(iter(_MAP_CACHE)))
    _MAP_CACHE[key] = (net, w, dy, info)
    return net, w, dy, info


def _map_fit_noise(arch: Arch, X, y, *, seed, prior_prec, delta_y, noise, holdout, max_iter, method,
                   restarts=1, tol=None, ftol=None, noise_prior=(1.0, 1e-2)):
    """MAP weights and (regression) a noise variance chosen without test data.

    ``noise="joint"``: the MAP of ``(θ, log Δ_y)`` with ``1/Δ_y ~ Gamma(noise_prior)`` (the noise
    learned jointly, :func:`blockbayes.laplace.map_fit` with ``learn_noise=True``), L-BFGS to the
    gradient tolerance ``tol``, best of ``restarts`` starts.
    ``noise="holdout"``: fit on a random ``1 - holdout`` part of the training set, take the mean
    squared error on the held-out part as ``Δ_y``, refit on all points (warm start) with that
    ``Δ_y``. ``noise="train"``: ``Δ_y`` = training MSE of the fit. ``noise="fixed"``: ``delta_y``.
    """
    from .. import laplace

    reg = arch.task == "regression"
    net = _std_net(arch, prior_prec, delta_y)
    kw = dict(method=method, max_iter=max_iter, progress=False, return_info=True)
    if tol is not None:
        kw["tol"] = tol
    if ftol is not None:
        kw["ftol"] = ftol
    if restarts != 1:
        kw["restarts"] = restarts
    info = {}
    if noise == "joint":
        w, i1 = laplace.map_fit(net, X, y, seed=_int_seed([seed, 0]), learn_noise=reg,
                                noise_prior=tuple(noise_prior), **kw)
        dy = float(i1["delta_y"]) if reg else float(delta_y)
        if reg:
            net = _std_net(arch, prior_prec, dy)
        info = {"map_converged": bool(i1["converged"]), "map_iters": int(i1["num_iter"]),
                "map_fev": int(i1["num_fev"]), "map_grad_norm": float(i1["grad_norm"]),
                "map_stop": i1["message"]}
        if "restart_objectives" in i1:
            info.update(map_restart_objectives=i1["restart_objectives"], map_restart_iters=i1["restart_iters"],
                        map_best_restart=i1["best_restart"])
        if reg:
            info["delta_y"] = dy
        return net, w, dy, info
    if reg and noise == "holdout":
        n = X.shape[0]
        n_val = max(1, int(round(holdout * n)))
        if n - n_val < 2:
            raise ValueError(f"noise='holdout' needs more training points than {n}")
        perm = np.random.default_rng(_int_seed([seed, 7])).permutation(n)
        tr, va = perm[n_val:], perm[:n_val]
        w0, i0 = laplace.map_fit(net, X[tr], y[tr], seed=_int_seed([seed, 0]), **kw)
        F = _map_forward(net, w0, X[va])
        dy = float(max(np.mean((F - _np(y[va])) ** 2), 1e-6))
        net = _std_net(arch, prior_prec, dy)
        w, i1 = laplace.map_fit(net, X, y, seed=_int_seed([seed, 0]), init=w0, **kw)
        info = {"map_converged": bool(i0.get("converged", True) and i1.get("converged", True)),
                "map_iters": int(i0.get("num_iter", 0)) + int(i1.get("num_iter", 0))}
    else:
        w, i1 = laplace.map_fit(net, X, y, seed=_int_seed([seed, 0]), **kw)
        info = {"map_converged": bool(i1.get("converged", True)), "map_iters": int(i1.get("num_iter", 0))}
        dy = float(delta_y)
        if reg and noise == "train":
            dy = float(max(np.mean((_map_forward(net, w, X) - _np(y)) ** 2), 1e-6))
            net = _std_net(arch, prior_prec, dy)
        elif reg and noise != "fixed":
            raise ValueError(f"noise must be 'joint', 'holdout', 'train' or 'fixed', got {noise!r}")
    if reg:
        info["delta_y"] = dy
    return net, w, dy, info


def _map_forward(net, weights, X) -> np.ndarray:
    from ..model import forward

    return _col(forward(net, tuple(weights), X))


def _point(arch: Arch, net, weights, delta_y, info=None):
    """A MAP fit as a :class:`~blockbayes.point.PointPosterior` of the standard net (the MLP's
    probit likelihoods become the logistic / softmax links of the standard net)."""
    from .._backend import to_numpy
    from ..point import PointPosterior

    return PointPosterior(net=net, weights=tuple(np.asarray(to_numpy(w)) for w in weights),
                          delta_y=float(delta_y) if arch.task == "regression" else None, config=dict(info or {}))


def _fit_map(arch, X, y, *, seed, prior_prec, delta_y, noise, holdout, max_iter, optimizer, restarts=1, tol=None,
             ftol=None, noise_prior=(1.0, 1e-2)):
    extra = {} if noise != "joint" else dict(restarts=restarts, tol=tol, ftol=ftol, noise_prior=tuple(noise_prior))
    net, w, dy, info = _map_with_noise(arch, X, y, seed=seed, prior_prec=prior_prec, delta_y=delta_y,
                                       noise=noise, holdout=holdout, max_iter=max_iter, method=optimizer, **extra)
    return _predictor(arch, _point(arch, net, w, dy), diagnostics=info, extra_time_s=_owed(info))


def _owed(info) -> float:
    return float(info.get("map_time_s", 0.0)) if info.get("map_reused") else 0.0


_MAP_DEFAULTS = dict(prior_prec="fan_in", delta_y=0.1, noise="holdout", holdout=0.1, max_iter=1000,
                     optimizer="lbfgs")

# The strong point estimates (issue 16): the noise variance learned jointly with the weights (MAP of
# (θ, log Δ_y) under the Gamma(1, 1e-2) hyperprior that gibbs and hmc use), L-BFGS run until its
# largest gradient component of E/n is below 1e-6 or it can no longer decrease E (ftol = 0: never
# stopped on a small relative decrease, which on these ill-conditioned low-noise problems stopped
# far from the optimum), at most 20000 iterations. MAP: best objective of 3 random starts (fitted
# as one batched problem). Ensemble: 5 such fits, one start each (the members are the restarts).
# The Laplace family and the MAP starts of gibbs / vi_block keep _MAP_DEFAULTS.
_STRONG_MAP_DEFAULTS = dict(_MAP_DEFAULTS, noise="joint", max_iter=20000, restarts=3, tol=1e-6, ftol=0.0,
                            noise_prior=(1.0, 1e-2))

# `map` and `ensemble` keep the holdout-noise defaults the UCI table and the demo were measured with;
# the strong variants are opt-in (`map_joint`, `ensemble_joint`) until they show no regression on
# every set: on the demo's teacher data the joint MAP overfits its noise (test LL -3.04 against
# +0.46 for the holdout MAP's KFAC-Laplace, 95% coverage 0.47) and costs 81 s instead of ~10 s.
register_method(Method(
    "map", _fit_map, defaults=dict(_MAP_DEFAULTS), requires="blockbayes.laplace:map_fit",
    description="MAP of the standard MLP (L-BFGS; regression noise from a 10% holdout)"))

register_method(Method(
    "map_joint", _fit_map, defaults=dict(_STRONG_MAP_DEFAULTS), requires="blockbayes.laplace:map_fit",
    description="MAP of the standard MLP and its noise variance (joint MAP under the Gamma(1, 1e-2) "
                "hyperprior; L-BFGS to |grad|_inf <= 1e-6 per point, best of 3 starts)"))


def _member_fits(arch: Arch, X, y, *, seed, count, **map_kw) -> list:
    """The first ``count`` holdout-noise MAP fits with seeds ``[seed, 100 + k]`` (memoised).

    The MAP starts of the noisy-network samplers (and the members of ``ensemble`` when it is run
    with ``noise="holdout"``). The default ``ensemble`` learns its noise jointly
    (:func:`_joint_member_fits`) and no longer shares these fits.
    """
    return [_map_with_noise(arch, X, y, seed=_int_seed([seed, 100 + k]), **map_kw) for k in range(count)]


def _joint_member_fits(arch, X, y, *, seed, members, prior_prec, delta_y, max_iter, restarts, tol, ftol,
                       noise_prior) -> list:
    """``members`` joint-noise MAP fits as one batched problem (:func:`blockbayes.laplace.map_ensemble`),
    in the ``(net, weights, Δ_y, info)`` form of :func:`_member_fits`."""
    from .. import laplace

    reg = arch.task == "regression"
    net = _std_net(arch, prior_prec, delta_y)
    W, info = laplace.map_ensemble(net, X, y, members=members, restarts=restarts, seed=_int_seed([seed, 100]),
                                   learn_noise=reg, noise_prior=tuple(noise_prior), max_iter=max_iter, tol=tol,
                                   ftol=ftol, progress=False, return_info=True)
    out = []
    for k, mi in enumerate(info["members"]):
        dy = float(mi["delta_y"]) if reg else float(delta_y)
        out.append((_std_net(arch, prior_prec, dy), tuple(_np(w)[k] for w in W), dy,
                    {"map_converged": bool(mi["converged"]), "map_iters": int(mi["num_iter"]),
                     "map_stop": mi["message"]}))
    return out


def _fit_ensemble(arch, X, y, *, seed, members, prior_prec, delta_y, noise, holdout, max_iter, optimizer, restarts=1,
                  tol=None, ftol=None, noise_prior=(1.0, 1e-2)):
    from ..point import EnsemblePosterior

    if noise == "joint":
        if optimizer != "lbfgs":
            raise ValueError("noise='joint' needs optimizer='lbfgs'")
        fits = _joint_member_fits(arch, X, y, seed=seed, members=members, prior_prec=prior_prec, delta_y=delta_y,
                                  max_iter=max_iter, restarts=restarts, tol=1e-7 if tol is None else tol,
                                  ftol=ftol, noise_prior=noise_prior)
    else:
        fits = _member_fits(arch, X, y, seed=seed, count=members, prior_prec=prior_prec, delta_y=delta_y,
                            noise=noise, holdout=holdout, max_iter=max_iter, method=optimizer)
    diag = {"members": members, "map_converged": all(f[3].get("map_converged", True) for f in fits)}
    its = [f[3].get("map_iters") for f in fits if f[3].get("map_iters") is not None]
    if its:
        diag["map_iters_max"] = int(max(its))
        diag["map_iters_mean"] = float(np.mean(its))
        diag["map_converged_count"] = int(sum(bool(f[3].get("map_converged")) for f in fits))
    ens = EnsemblePosterior.from_points([_point(arch, f[0], f[1], f[2]) for f in fits])
    if arch.task == "regression":
        diag["delta_y_mean"] = float(np.mean([f[2] for f in fits]))
    return _predictor(arch, ens, diagnostics=diag)


register_method(Method(
    "ensemble", _fit_ensemble, defaults=dict(members=5, **_MAP_DEFAULTS), requires="blockbayes.laplace:map_fit",
    description="deep ensemble of MAP fits from different seeds (Gaussian-mixture predictive)"))

register_method(Method(
    "ensemble_joint", _fit_ensemble, defaults=dict(_STRONG_MAP_DEFAULTS, members=5, restarts=1),
    requires="blockbayes.laplace:map_ensemble",
    description="deep ensemble of 5 joint-noise MAP fits from different seeds, fitted as one batched problem "
                "(Gaussian-mixture predictive)"))


def _fit_laplace(arch, X, y, *, seed, structure, subset, prior_prec, delta_y, noise, holdout, max_iter,
                 optimizer, tune, prior_structure, pred_type, link, n_samples):
    from .. import laplace

    net, w, dy, info = _map_with_noise(arch, X, y, seed=seed, prior_prec=prior_prec, delta_y=delta_y,
                                       noise=noise, holdout=holdout, max_iter=max_iter, method=optimizer)
    la = laplace.fit(net, w, X, y, subset=subset, structure=structure)
    if tune:
        la.optimize_prior_precision(method=tune, prior_structure=prior_structure)
    info = dict(info)
    info["prior_precision"] = [list(map(float, p)) for p in la.prior_precision]
    pseed = _int_seed([seed, 3])
    if arch.task == "regression":
        info["delta_y"] = float(la.delta_y)
    lk = link if pred_type == "glm" else "mc"
    return _predictor(arch, la, predict_kw=dict(kind=pred_type, num_samples=n_samples, seed=pseed),
                      proba_kw=dict(kind=pred_type, link=lk, num_samples=n_samples, seed=pseed),
                      diagnostics=info, extra_time_s=_owed(info))


_LAPLACE_DEFAULTS = dict(structure="kfac", subset="all", tune="marglik", prior_structure="layerwise",
                         pred_type="glm", link="probit", n_samples=100, **_MAP_DEFAULTS)


def _laplace_variant(name, structure, subset, desc):
    d = dict(_LAPLACE_DEFAULTS, structure=structure, subset=subset)
    register_method(Method(name, _fit_laplace, defaults=d, requires="blockbayes.laplace:fit", description=desc))


_laplace_variant("laplace", "kfac", "all", "Laplace at the MAP (structure/subset options; evidence-tuned λ, Δ_y)")
_laplace_variant("laplace_diag", "diag", "all", "diagonal GGN Laplace, all layers, evidence-tuned λ and Δ_y")
_laplace_variant("laplace_kfac", "kfac", "all", "KFAC GGN Laplace, all layers, evidence-tuned λ and Δ_y")
_laplace_variant("laplace_full", "full", "all", "full GGN Laplace, all layers, evidence-tuned λ and Δ_y")
_laplace_variant("laplace_block", "block", "all", "node-block GGN Laplace, all layers, evidence-tuned λ and Δ_y")
_laplace_variant("laplace_ll", "full", "last_layer", "last-layer full Laplace, evidence-tuned λ and Δ_y")


def _fit_laplace_iterative(arch, X, y, *, seed, prior_prec, delta_y, noise, holdout, max_iter, optimizer,
                           num_sweeps, options):
    from .. import laplace

    net, w, dy, info = _map_with_noise(arch, X, y, seed=seed, prior_prec=prior_prec, delta_y=delta_y,
                                       noise=noise, holdout=holdout, max_iter=max_iter, method=optimizer)
    la = laplace.block(net, X, y, init=w, num_steps=num_sweeps, seed=_int_seed([seed, 5]),
                      **{"progress": False, **dict(options or {})})
    return _predictor(arch, la, diagnostics=dict(info), extra_time_s=_owed(info))


register_method(Method(
    "laplace_iterative", _fit_laplace_iterative,
    defaults=dict(num_sweeps=100, options={}, **_MAP_DEFAULTS), requires="blockbayes.laplace:block",
    description="iterative block Laplace started at the MAP"))


# ----------------------------------------------------------------------------------- VI family

def _vi_predictor(arch, res, seed, num_pred_samples, diag, **select):
    kw = dict(num_samples=num_pred_samples, seed=_int_seed([seed, 4]), **select)
    return _predictor(arch, res, predict_kw=kw, proba_kw=kw, diagnostics=diag)


def _vi_diag(res) -> dict:
    diag = {}
    elbo = getattr(res, "elbo", None)
    if elbo is not None:
        try:
            diag["elbo"] = float(np.max(_np(elbo)))
        except Exception:
            pass
    cfg = getattr(res, "config", None) or {}
    for k in ("sweeps", "num_steps", "num_samples", "num_warmup"):
        if k in cfg and isinstance(cfg[k], (int, float)):
            diag[k] = cfg[k]
    return diag


def _fit_vi(arch, X, y, *, seed, vi_method, delta_z, delta_x, delta_y, prior_prec, learn_noise, learn_prior,
            num_pred_samples, init, options):
    from .. import vi
    from ..model import MLP

    reg = arch.task == "regression"
    kw = dict(options or {})
    start_info = {}
    if init is not None:
        if vi_method == "mean_field":
            raise ValueError("vi_mf has no 'init' option (it starts from its own random initialisation)")
        if "init" in kw:
            raise ValueError("give the start either as init=... or in options, not both")
        num_chains = int(kw.get("num_chains", 4)) if vi_method in ("rao_blackwell", "sampled") else 1
        kw["init"], delta_y, start_info = _resolve_start(arch, X, y, seed=seed, init=init, num_chains=num_chains,
                                                         prior_prec=prior_prec, delta_y=delta_y)
        if num_chains == 1 and _map_init_kind(init)[0] is not None:
            kw["init"] = [w[0] for w in kw["init"]]           # single-state methods take unbatched weights
    net = MLP(arch.widths, arch.activation, likelihood=_gibbs_likelihood(arch), prior_prec=prior_prec,
              delta={"Z": delta_z, "X": delta_x, "y": delta_y})
    if vi_method == "mean_field":
        kw.setdefault("learn_noise", bool(learn_noise and reg))
    elif vi_method == "rao_blackwell":
        kw.setdefault("learn_noise", bool(learn_noise and reg))
        kw.setdefault("learn_prior", bool(learn_prior))
    res = vi.run(net, X, y, method=vi_method, seed=seed, progress=False, **kw)
    if hasattr(res, "to_numpy"):
        res = res.to_numpy()
    diag = {**_vi_diag(res), **start_info}
    if reg:
        try:
            diag["delta_y_mean"] = float(np.mean(_np(res.delta_y)))
        except Exception:
            pass
    pred = _vi_predictor(arch, res, seed, num_pred_samples, diag)
    pred.extra_time_s = start_info.get("map_owed_s", 0.0)
    return pred


_VI_DEFAULTS = dict(delta_z=1e-2, delta_x=1e-2, delta_y=0.1, prior_prec="fan_in", learn_noise=True,
                    learn_prior=False, num_pred_samples=500, init=None, options={})


def _vi_variant(name, vi_method, desc, tasks=("regression",), **extra):
    register_method(Method(name, _fit_vi, defaults=dict(_VI_DEFAULTS, vi_method=vi_method, **extra),
                           requires="blockbayes.vi:run", tasks=tasks, description=desc))


_vi_variant("vi_block", "rao_blackwell", "block-Gaussian VI of the noisy MLP, Rao-Blackwellised, 4 chains from "
            "one MAP fit (Δ_Z = Δ_X = 1e-3)", delta_z=1e-3, delta_x=1e-3, init="map_shared")
_vi_variant("vi_cavi", "cavi", "block CAVI of the noisy MLP (conditional variances, MATH.md §C.5)")
_vi_variant("vi_mf", "mean_field", "mean-field Gaussian VI of the standard MLP (Bayes by backprop)",
            tasks=("regression", "classification"))


# ----------------------------------------------------------------------------------- IVON / VOGN

def _fit_vi_natural(arch, X, y, *, seed, vi_method, epochs, batch_size, lr, hess_init, beta1, beta2, tempering,
                    prior_prec, delta_y, learn_noise, noise_rate, num_restarts, components, num_pred_samples,
                    options):
    """IVON / VOGN on the standard MLP (:mod:`blockbayes.vi.ivon`, :mod:`blockbayes.vi.vogn`).

    ``epochs`` passes over the training set in minibatches of ``batch_size`` (cosine step-size
    decay), ``ess = n / tempering``, weight decay = prior precision / n, regression noise learned
    from the residuals at the sampled weights (starting at ``delta_y``). ``components``:
    ``"best"`` (largest ELBO estimate) or ``"mixture"`` of the restarts."""
    from .. import vi

    reg = arch.task == "regression"
    net = _std_net(arch, prior_prec, delta_y)
    n = int(np.shape(X)[0])
    bs = min(int(batch_size), n)
    steps = max(1, int(round(epochs * (n // bs))))
    kw = dict(options or {})
    res = vi.run(net, X, y, method=vi_method, num_steps=steps, batch_size=bs, lr=lr, hess_init=hess_init,
                 beta1=beta1, beta2=beta2, ess=n / float(tempering), num_restarts=num_restarts,
                 learn_noise=bool(learn_noise and reg), noise_rate=noise_rate, seed=_int_seed([seed, 11]),
                 progress=False, **kw).to_numpy()
    diag = {"steps": steps, "batch_size": bs, "elbo": float(np.max(_np(res.elbo)))}
    if reg:
        diag["delta_y_mean"] = float(np.mean(_np(res.delta_y)))
    pred = _vi_predictor(arch, res, seed, num_pred_samples, diag, components=components)
    pred.traces = {"loss": _thin_trace(res.trace["loss"])}
    return pred


# Defaults chosen on validation splits carved out of training data only (benchmarks/vi_natural_tuning.py).
_IVON_DEFAULTS = dict(vi_method="ivon", epochs=5000, batch_size=32, lr=0.01, hess_init=10.0, beta1=0.9, beta2=0.9999,
                      tempering=1.0, prior_prec="fan_in", delta_y=1.0, learn_noise=True, noise_rate=0.01,
                      num_restarts=1, components="best", num_pred_samples=500, options={"max_steps": 20000})
_VOGN_DEFAULTS = dict(_IVON_DEFAULTS, vi_method="vogn", epochs=500, lr=0.03, hess_init=1.0, beta2=0.999, options={})

register_method(Method(
    "vi_ivon", _fit_vi_natural, defaults=dict(_IVON_DEFAULTS), requires="blockbayes.vi.ivon:run",
    description="IVON (Shen et al. 2024): natural-gradient mean-field VI, Price Hessian estimate, minibatches"))
register_method(Method(
    "vi_vogn", _fit_vi_natural, defaults=dict(_VOGN_DEFAULTS), requires="blockbayes.vi.vogn:run",
    description="VOGN (Osawa et al. 2019): natural-gradient mean-field VI with the Gauss-Newton diagonal"))

# ----------------------------------------------------------------------------------- NUTS reference

def _fit_hmc(arch, X, y, *, seed, num_warmup, num_samples, num_chains, thin, max_tree_depth, target_accept,
             prior_prec, learn_noise, noise_prior, delta_y, noisy, delta_z, delta_x, threads):
    """NUTS (NumPyro) on the standard — or, ``noisy=True``, the noisy — BNN: the reference method.

    Same architecture and fan-in prior as every method here and the noise hyperprior of ``gibbs``
    (``1/Δ_y ~ Gamma(noise_prior)``). Predictive: the mixture over all draws of ``N(F(x; θ_s), Δ_y,s)``
    (noise-free network output per draw, as ``gibbs``'s ``predictive="network"``). The test
    predictions' R-hat / ESS are added to ``diagnostics`` when the predictor is scored.
    """
    from ..model import MLP
    from ..gibbs.result import GibbsResult
    from . import reference

    if arch.task != "regression":
        raise ValueError("hmc supports regression only")
    net = MLP(arch.widths, arch.activation, likelihood="gaussian", prior_prec=prior_prec,
              delta={"Z": delta_z, "X": delta_x, "y": delta_y})
    res = reference.nuts(net, X, y, noisy=bool(noisy), learn_noise=bool(learn_noise), hyperprior=tuple(noise_prior),
                         num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains, thin=thin,
                         seed=_int_seed([seed, 11]), max_tree_depth=max_tree_depth, target_accept=target_accept,
                         threads=threads)
    diag = dict(res.info)
    diag.update(_chain_diagnostics("delta_y", res.delta_y))
    diag["delta_y_mean"] = float(np.mean(res.delta_y))
    traces = {"delta_y": _thin_trace(res.delta_y)}
    C, S = res.delta_y.shape
    L = net.num_layers
    samples = GibbsResult(net=net, weights=tuple(np.asarray(w, dtype=np.float64) for w in res.weights),
                          delta_y=np.asarray(res.delta_y, dtype=np.float64),
                          lam_w=np.broadcast_to(np.asarray(net.lam_w, dtype=np.float64), (C, S, L)),
                          lam_b=np.broadcast_to(np.asarray(net.lam_b, dtype=np.float64), (C, S, L)),
                          config=dict(source="evaluate.reference.nuts"))

    class _Scored:
        """The NUTS draws' predictive; scoring also records the test predictions' R-hat / ESS."""

        def _note(self, Xn):
            F = reference.forward_samples(net, res.weights, Xn)[..., 0]            # (C, S, n)
            diag.update(reference.prediction_diagnostics(F))

        def predict(self, Xn, **kw):
            self._note(Xn)
            return samples.predict(Xn, **kw)

        def log_predictive_density(self, Xn, yn, **kw):
            self._note(Xn)
            return samples.log_predictive_density(Xn, yn, **kw)

    return _predictor(arch, _Scored(), diagnostics=diag, traces=traces)


register_method(Method(
    "hmc", _fit_hmc,
    defaults=dict(num_warmup=1000, num_samples=1000, num_chains=4, thin=1, max_tree_depth=10, target_accept=0.8,
                  prior_prec="fan_in", learn_noise=True, noise_prior=(1.0, 1e-2), delta_y=0.1, noisy=False,
                  delta_z=1e-3, delta_x=1e-3, threads=1),
    requires="numpyro", tasks=("regression",),
    description="reference: NUTS (NumPyro) on the standard BNN (fan-in prior, 1/Δ_y ~ Gamma(1, 1e-2)); "
                "noisy=True: the noisy network at the given Δ_Z, Δ_X"))
