"""The point and ensemble baselines as posteriors: a MAP fit and a deep ensemble.

:class:`PointPosterior` is one weight setting ``θ*`` of the standard MLP (a point mass);
:class:`EnsemblePosterior` is ``M`` of them as an equal-weight mixture (Lakshminarayanan et al.
2017: the predictive of a deep ensemble is the mixture of its members' predictives). Both answer
the common result interface of :mod:`blockbayes.posterior` and predict through
:mod:`blockbayes.predictive`:

* regression: ``mean = (1/M) Σ_m F(x; θ_m)``, ``var = (1/M) Σ_m (F(x; θ_m) − mean)² + (1/M) Σ_m Δ_y^{(m)}``,
  ``lpd = log (1/M) Σ_m N(y; F(x; θ_m), Δ_y^{(m)} I)``;
* classification (``"bernoulli"``: one logistic output; ``"categorical"``: softmax):
  ``p(c | x) = (1/M) Σ_m p(c | x, θ_m)``.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from ._backend import backend_name, device_of, move_like, namespace, to_numpy
from ._backend import random as bbr
from .model import MLP
from .nn import resolve_likelihood
from ._backend.io import jsonable
from .posterior import Posterior, check_kind, net_from_dict, register_result
from . import predictive as P

__all__ = ["PointPosterior", "EnsemblePosterior"]


def _positive_count(name, value, upper=None):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (upper is not None and value > upper):
        rng = f"[1, {upper}]" if upper is not None else ">= 1"
        raise ValueError(f"{name} must be an int in {rng}, got {value!r}")
    return value


def _standard_likelihood(net, likelihood):
    return resolve_likelihood(net, likelihood)


class _MixtureOfPoints(Posterior):
    """Shared predictive of :class:`PointPosterior` and :class:`EnsemblePosterior`: an equal-weight
    mixture of the standard net at ``M`` weight settings (``M = 1`` for a point)."""

    model: ClassVar[str] = "standard"

    def _anchor(self):
        return self.weights[0]

    @abc.abstractmethod
    def _stack(self):
        """Weights per layer ``(M, d, k)`` and noise variances ``(M,)``."""

    def _check_weights(self, lead: tuple):
        """Resolve the likelihood; weights: one array per layer of shape ``lead + (d_{l+1}, d_l + 1)``."""
        self.likelihood = _standard_likelihood(self.net, self.likelihood)
        self.weights = tuple(self.weights)
        if len(self.weights) != self.net.num_layers:
            raise ValueError(f"weights must have {self.net.num_layers} layers, got {len(self.weights)}")
        for l, (W, shp) in enumerate(zip(self.weights, self.net.weight_shapes())):
            if not hasattr(W, "shape") or tuple(W.shape) != tuple(lead) + shp:
                raise ValueError(f"weights[{l}] must be an array of shape {tuple(lead) + shp}, "
                                 f"got {getattr(W, 'shape', type(W).__name__)}")

    def predict(self, X_new, *, kind: str = "network", num_samples=None, seed=0, chunk=None):
        """Predictive mean and variance of the observation.

        Regression: the mixture moments ``mean = (1/M) Σ_m F(x; θ_m)``,
        ``var = (1/M) Σ_m (F(x; θ_m) − mean)² + (1/M) Σ_m Δ_y^{(m)}`` (one member: ``F(x; θ*)`` and
        ``Δ_y``). Classification: ``(p, p(1 − p))`` with ``p`` from :meth:`predict_proba`
        (``"bernoulli"``: one column, ``P(y = 1)``). ``num_samples``/``seed`` are accepted for the
        common interface and ignored (the members are the samples).

        Returns
        -------
        mean, var : arrays, shape (n, d_out) (``(n, K)`` for a categorical classifier)
        """
        check_kind(kind, ("network",))
        if self.is_classifier:
            return self._label_moments(self.predict_proba(X_new, chunk=chunk))
        X_new = self._prepare_X(X_new)
        W, dy = self._stack()
        return self._draw_predict(X_new, W, dy, chunk=chunk)

    def predict_proba(self, X_new, *, num_samples=None, seed=0, chunk=None):
        """Class probabilities ``(1/M) Σ_m softmax/σ(F(x; θ_m))``, shape ``(n, K)``
        (``"bernoulli"``: columns ``[p(0), p(1)]``)."""
        self._require_classifier()
        X_new = self._prepare_X(X_new)
        W, dy = self._stack()
        return self._draw_proba(X_new, W, dy, chunk=chunk)

    def log_predictive_density(self, X_new, y_new, *, reduce=True, kind: str = "network", num_samples=None,
                               seed=0, chunk=None):
        """``log (1/M) Σ_m p(y | x, θ_m)``: Gaussian ``N(y; F(x; θ_m), Δ_y^{(m)} I)`` or the
        logistic/softmax probability of the label; mean over points if ``reduce``."""
        check_kind(kind, ("network",))
        X_new = self._prepare_X(X_new)
        Y = self._prepare_targets(y_new, X_new)
        W, dy = self._stack()
        return P.reduce_points(self._draw_lpd(X_new, Y, W, dy, chunk=chunk), reduce)


@register_result
@dataclass
class PointPosterior(_MixtureOfPoints):
    """A point estimate ``θ*`` (a MAP fit) of the standard MLP as a posterior (a point mass).

    Attributes
    ----------
    net : MLP
    weights : tuple of arrays
        Per layer ``(d_{l+1}, d_l + 1)``, bias last.
    delta_y : float, optional
        Gaussian noise variance of the predictive (default ``net.delta_y``; 1 for classifiers).
    likelihood : str, optional
        ``"gaussian"``, ``"bernoulli"`` (logistic) or ``"categorical"`` (softmax); ``None``
        derives it from ``net.likelihood`` (:func:`blockbayes.nn.resolve_likelihood`).
    config : dict
        Settings / diagnostics of the fit.
    """

    result_kind: ClassVar[str] = "PointPosterior"

    net: MLP
    weights: tuple
    delta_y: Optional[float] = None
    likelihood: Optional[str] = None
    config: dict = field(default_factory=dict)

    def __post_init__(self):
        self._check_weights(())
        if self.delta_y is None:
            self.delta_y = float(self.net.delta_y) if self.likelihood == "gaussian" else 1.0
        self.delta_y = float(self.delta_y)
        if not (math.isfinite(self.delta_y) and self.delta_y > 0):
            raise ValueError(f"delta_y must be positive and finite, got {self.delta_y!r}")

    def __repr__(self):
        return (f"PointPosterior(likelihood={self.likelihood!r}, delta_y={self.delta_y:.4g}, net={self.net!r}, "
                f"backend={backend_name(self.xp)})")

    def _stack(self):
        xp = self.xp
        W = tuple(w[None, ...] for w in self.weights)
        dy = xp.full((1,), self.delta_y, dtype=self.weights[0].dtype, device=device_of(self.weights[0]))
        return W, dy

    def sample(self, num_samples: Optional[int] = None, *, seed=None) -> tuple:
        """The point repeated: per layer ``(num_samples, d_{l+1}, d_l + 1)`` (default: its one draw)."""
        num_samples = 1 if num_samples is None else _positive_count("num_samples", num_samples)
        xp = self.xp
        return tuple(xp.broadcast_to(w[None, ...], (num_samples,) + tuple(w.shape)) + 0 for w in self.weights)

    def to_numpy(self) -> "PointPosterior":
        return PointPosterior(net=self.net, weights=tuple(to_numpy(w) for w in self.weights), delta_y=self.delta_y,
                              likelihood=self.likelihood, config=dict(self.config))

    def _payload(self):
        arrays = {f"weights_{l}": to_numpy(w) for l, w in enumerate(self.weights)}
        return arrays, dict(delta_y=self.delta_y, likelihood=self.likelihood, config=jsonable(self.config))

    @classmethod
    def _from_file(cls, f, meta, mv, path):
        net = net_from_dict(meta["net"])
        return cls(net=net, weights=tuple(mv(f[f"weights_{l}"]) for l in range(net.num_layers)),
                   delta_y=meta["delta_y"], likelihood=meta["likelihood"], config=meta.get("config", {}))

    def _arviz_draws(self, num_samples, seed):
        W, dy = self._stack()
        return tuple(w[None, ...] for w in W), dy[None, :], {}, {}


@register_result
@dataclass
class EnsemblePosterior(_MixtureOfPoints):
    """A deep ensemble: ``M`` point estimates of the standard MLP as an equal-weight mixture.

    Attributes
    ----------
    net : MLP
        The shared architecture (and default noise / likelihood).
    weights : tuple of arrays
        Per layer ``(M, d_{l+1}, d_l + 1)``, bias last.
    delta_y : array, shape (M,)
        Each member's Gaussian noise variance (ones for classifiers).
    likelihood : str, optional
        As for :class:`PointPosterior`.
    config : dict
    """

    result_kind: ClassVar[str] = "EnsemblePosterior"

    net: MLP
    weights: tuple
    delta_y: Any = None
    likelihood: Optional[str] = None
    config: dict = field(default_factory=dict)

    def __post_init__(self):
        M = int(self.weights[0].shape[0]) if len(self.weights) and hasattr(self.weights[0], "shape") else 0
        self._check_weights((M,))
        xp = self.xp
        dt, dev = self.weights[0].dtype, device_of(self.weights[0])
        if self.delta_y is None:
            dy0 = float(self.net.delta_y) if self.likelihood == "gaussian" else 1.0
            self.delta_y = xp.full((M,), dy0, dtype=dt, device=dev)
        elif not hasattr(self.delta_y, "shape") or namespace(self.delta_y) is not xp:
            dy = self.delta_y
            if not hasattr(dy, "shape"):
                dy = [float(v) for v in dy] if isinstance(dy, (list, tuple)) else float(dy)
            self.delta_y = move_like(dy, self.weights[0], dtype=dt)
        if tuple(self.delta_y.shape) != (M,):
            raise ValueError(f"delta_y must have shape ({M},), got {tuple(self.delta_y.shape)}")

    @classmethod
    def from_points(cls, points, *, config=None) -> "EnsemblePosterior":
        """The ensemble of :class:`PointPosterior` members (same architecture and likelihood)."""
        points = list(points)
        if not points:
            raise ValueError("an ensemble needs at least one member")
        first = points[0]
        for p in points[1:]:
            if list(p.net.widths) != list(first.net.widths) or p.likelihood != first.likelihood:
                raise ValueError("ensemble members must share the architecture and likelihood")
        xp = first.xp
        W = tuple(xp.stack([p.weights[l] for p in points]) for l in range(first.net.num_layers))
        dy = xp.asarray([p.delta_y for p in points], dtype=first.weights[0].dtype, device=device_of(first.weights[0]))
        return cls(net=first.net, weights=W, delta_y=dy, likelihood=first.likelihood, config=dict(config or {}))

    def __repr__(self):
        return (f"EnsemblePosterior(members={self.num_members}, likelihood={self.likelihood!r}, net={self.net!r}, "
                f"backend={backend_name(self.xp)})")

    @property
    def num_members(self) -> int:
        return int(self.weights[0].shape[0])

    def members(self) -> list:
        """The members as :class:`PointPosterior` objects."""
        dys = [float(v) for v in to_numpy(self.delta_y)]
        return [PointPosterior(net=self.net, weights=tuple(w[m, ...] for w in self.weights), delta_y=dys[m],
                               likelihood=self.likelihood) for m in range(self.num_members)]

    def _stack(self):
        return self.weights, self.delta_y

    def sample(self, num_samples: Optional[int] = None, *, seed=None) -> tuple:
        """Member weights, per layer ``(num_samples, d_{l+1}, d_l + 1)``: all ``M`` (default) or that many
        chosen uniformly without replacement (``seed``)."""
        if num_samples is None:
            return self.weights
        _positive_count("num_samples", num_samples, self.num_members)
        xp = self.xp
        idx = xp.asarray(bbr.choice(bbr.key(seed), self.num_members, num_samples), device=device_of(self.weights[0]))
        return tuple(xp.take(w, idx, axis=0) for w in self.weights)

    def to_numpy(self) -> "EnsemblePosterior":
        return EnsemblePosterior(net=self.net, weights=tuple(to_numpy(w) for w in self.weights),
                                 delta_y=to_numpy(self.delta_y), likelihood=self.likelihood, config=dict(self.config))

    def _payload(self):
        arrays = {f"weights_{l}": to_numpy(w) for l, w in enumerate(self.weights)}
        arrays["delta_y"] = to_numpy(self.delta_y)
        return arrays, dict(likelihood=self.likelihood, config=jsonable(self.config))

    @classmethod
    def _from_file(cls, f, meta, mv, path):
        net = net_from_dict(meta["net"])
        return cls(net=net, weights=tuple(mv(f[f"weights_{l}"]) for l in range(net.num_layers)),
                   delta_y=mv(f["delta_y"]), likelihood=meta["likelihood"], config=meta.get("config", {}))

    def _arviz_draws(self, num_samples, seed):
        return tuple(w[None, ...] for w in self.weights), self.delta_y[None, :], {}, {}
