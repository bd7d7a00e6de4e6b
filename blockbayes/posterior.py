"""Result objects and the one result interface every family answers.

Every posterior of blockbayes — :class:`~blockbayes.gibbs.GibbsResult` (samples of the noisy MLP),
:class:`~blockbayes.vi.result.VIResult` (block-Gaussian ``q``), :class:`~blockbayes.laplace.LaplaceResult`
(``N(θ*, P^{-1})``), :class:`~blockbayes.point.PointPosterior` (one MAP fit) and
:class:`~blockbayes.point.EnsemblePosterior` (a set of MAP fits, an equal-weight mixture) — derives
from :class:`Posterior` and offers

``predict(X, *, kind, num_samples, seed)``           predictive mean and variance ``(n, d_out)``
``predict_proba(X, *, num_samples, seed)``           class probabilities ``(n, K)``
``log_predictive_density(X, y, *, reduce, ...)``     ``log p(y | x, data)``, mean or per point
``sample(num_samples, *, seed)``                     weight draws, per layer ``(S, d_{l+1}, d_l + 1)``
``to_numpy()`` / ``save(path)`` / ``load(path)``     host copy, ``.npz`` round trip (bitwise)
``to_arviz(X, y)``                                   :class:`arviz.InferenceData` (optional ``arviz``)

with one keyword vocabulary: ``num_samples`` (Monte Carlo draws), ``seed``, ``kind`` (which
predictive: ``"network"``/``"generative"`` for the noisy net, ``"glm"``/``"nn"`` for Laplace),
``chunk`` (samples per forward batch), ``reduce``. The old spellings (``n_samples``,
``pred_type``, ``num``/``n`` of ``sample``) still work and raise a :class:`DeprecationWarning`.
The prediction maths is :mod:`blockbayes.predictive`'s.

Conventions (the same for every result; ``tests/test_posterior_contract.py`` enforces them):

* ``predict`` returns the moments of the *observation*, each ``(n, d_out)``: for regression the
  predictive mean and variance of ``y``; for a classifier the moments of the one-hot label,
  ``(p, p(1 − p))`` with ``p`` from ``predict_proba`` — one column ``P(y = 1)`` for the
  one-output links (``"bernoulli"``, ``"probit"``), ``K`` columns otherwise. The latent output's
  moments are ``LaplaceResult.predict_f`` and ``GibbsResult.predict(latent=True)``.
* ``num_samples=None`` (the default everywhere) means :attr:`Posterior.default_num_samples`:
  every stored draw for results made of draws (Gibbs samples, ensemble members, the point), and a
  fixed number of draws for distribution-valued results (VI: 1000; Laplace: 100,
  laplace-torch's). ``sample()`` follows the same rule.
* Predictions are reproducible: ``predict``, ``predict_proba``, ``log_predictive_density`` and
  ``to_arviz`` default to ``seed=0`` (a result whose predictive draws nothing ignores it);
  ``sample`` is a draw and defaults to ``seed=None`` (fresh entropy, like NumPy's generators).

:func:`load` reads any result file: the saved ``kind`` names the class in a registry that each
result module fills when imported (:func:`register_result`); the built-in families are imported
on demand, so this module imports no family at import time.
"""
from __future__ import annotations

import abc
import importlib
import warnings
from typing import ClassVar

from . import predictive as P
from ._backend import device_of, namespace, resolve_device, to_device, to_numpy
from ._backend.io import NotABlockbayesFile, jsonable, load_npz, save_npz
from .inputs import prepare_X, validate_labels
from .model import MLP

__all__ = ["Posterior", "load", "register_result",
           "read_result_file", "renamed_keywords", "check_kind", "jsonable", "net_to_dict", "net_from_dict",
           "NotAClassifierError"]



#: classification likelihoods with one network output (``P(y = 1)``; ``K = 2``)
ONE_OUTPUT_LINKS = ("bernoulli", "probit")


class NotAClassifierError(ValueError, NotImplementedError):
    """``predict_proba`` on a regression posterior."""


def net_to_dict(net: MLP) -> dict:
    """JSON-able description of an :class:`MLP` (round-trips through :func:`net_from_dict`)."""
    return dict(widths=list(net.widths), activation=net.activation,
                slope=net.slope if net.activation == "leaky_relu" else 0.01,
                likelihood=net.likelihood,
                prior_prec=[[lw, lb] for lw, lb in zip(net.lam_w, net.lam_b)],
                delta={**({"Z": list(net.delta_z), "X": list(net.delta_x)} if net.delta_hidden_given else {}),
                       **({"y": net.delta_y} if net.delta_y_given else {})})   # a default Δ stays default


def net_from_dict(d: dict) -> MLP:
    return MLP(d["widths"], d["activation"], slope=d["slope"], likelihood=d["likelihood"],
               prior_prec=[tuple(p) for p in d["prior_prec"]], delta=d["delta"])


# ----------------------------------------------------------------------------------- registry / files
_REGISTRY: dict = {}
# built-in kinds whose module is imported on demand by load() (no family import at module level)
_BUILTIN = {"GibbsResult": "blockbayes.gibbs.result", "VIResult": "blockbayes.vi.result", "LaplaceResult": "blockbayes.laplace.result",
            "PointPosterior": "blockbayes.point", "EnsemblePosterior": "blockbayes.point"}
FORMAT = 1


def register_result(cls):
    """Class decorator: make ``cls`` loadable by :func:`load` under ``cls.result_kind``."""
    kind = getattr(cls, "result_kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls.__name__} needs a non-empty class attribute result_kind")
    _REGISTRY[kind] = cls
    return cls


def read_result_file(path):
    """Arrays and metadata of a saved result: ``(dict name -> ndarray, meta dict)``.

    Raises
    ------
    ValueError
        ``"... is not a blockbayes result file"`` for anything that is not an ``.npz`` written by
        a result's ``save`` (a corrupt archive, pickled data, a foreign ``.npz`` or ``.npy``).
    """
    arrays, meta = load_npz(path, meta_key="meta", what="blockbayes result file")
    if not isinstance(meta.get("kind"), str) or "net" not in meta:
        raise NotABlockbayesFile(f"{path} is not a blockbayes result file (metadata without 'kind' and 'net')")
    return arrays, meta


def _mover(device):
    kind, index = resolve_device(device)
    return (lambda a: a) if kind is None else (lambda a: to_device(a, kind, index))


def load(path, *, device=None):
    """Load any blockbayes result saved with ``.save`` (the class comes from the saved kind).

    Parameters
    ----------
    path : str or path-like
    device : None, "cpu", "cuda" or "cuda:k"
        ``None`` keeps NumPy arrays; otherwise the arrays are moved there.

    Raises
    ------
    ValueError
        A file that is not a blockbayes result, or one of an unknown kind.
    """
    arrays, meta = read_result_file(path)
    kind = meta["kind"]
    if kind not in _REGISTRY and kind in _BUILTIN:
        importlib.import_module(_BUILTIN[kind])
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise ValueError(f"{path} is not a blockbayes result file (unknown kind {kind!r}; "
                         f"known: {sorted(set(_REGISTRY) | set(_BUILTIN))})")
    return cls._from_file(arrays, meta, _mover(device), path)


def renamed_keywords(owner: str, given: dict, aliases: dict) -> dict:
    """Canonical values of deprecated keyword spellings.

    ``given``: the extra keywords a method received (its ``**deprecated``); ``aliases``: old name
    → canonical name. Each old name found warns (:class:`DeprecationWarning`) and is returned
    under its canonical name; an unknown keyword is the ``TypeError`` Python would raise.
    """
    out = {}
    for old, val in given.items():
        if old not in aliases:
            raise TypeError(f"{owner}() got an unexpected keyword argument {old!r}")
        new = aliases[old]
        warnings.warn(f"{owner}: the keyword {old!r} is deprecated; use {new!r}", DeprecationWarning,
                      stacklevel=3)
        out[new] = val
    return out


# ----------------------------------------------------------------------------------- the interface
class Posterior(abc.ABC):
    """The interface every blockbayes result answers (see the module docstring).

    Subclasses set ``result_kind`` (the name saved in files and looked up by :func:`load`),
    ``net`` and ``likelihood``, and implement the prediction methods, :meth:`sample`,
    :meth:`to_numpy`, ``_payload`` (arrays and metadata to save), ``_from_file`` (the inverse)
    and ``_arviz_draws``.
    """

    result_kind: ClassVar[str] = ""
    #: predictive draws used when ``num_samples=None``: ``None`` = every stored draw (Gibbs samples,
    #: ensemble members, the point); distribution-valued results (VI, Laplace) set a number
    default_num_samples: ClassVar = None

    # -------------------------------------------------------------- common properties
    @property
    def xp(self):
        return namespace(self._anchor())

    @property
    def is_classifier(self) -> bool:
        return self.likelihood != "gaussian"

    @property
    def num_classes(self) -> int:
        """Number of classes ``K`` of a classifier (``2`` for the one-output links)."""
        if self.likelihood in ONE_OUTPUT_LINKS:
            return 2
        return self.net.d_out

    def _require_classifier(self):
        if not self.is_classifier:
            raise NotAClassifierError(
                f"predict_proba needs a classification likelihood; this posterior is a regression "
                f"(likelihood={self.likelihood!r}): use predict / log_predictive_density with real targets")

    # -------------------------------------------------------------- the protocol (each result implements it)
    @abc.abstractmethod
    def predict(self, X_new, *, kind=None, num_samples=None, seed=0):
        """Predictive mean and variance of the observation, each ``(n, d_out)`` (see the module docstring
        for classifiers: the moments of the one-hot label)."""

    @abc.abstractmethod
    def predict_proba(self, X_new, *, num_samples=None, seed=0):
        """Predictive class probabilities ``(n, K)`` (classifiers; :class:`NotAClassifierError` otherwise)."""

    @abc.abstractmethod
    def log_predictive_density(self, X_new, y_new, *, reduce=True, kind=None, num_samples=None, seed=0):
        """``log p(y_i | x_i, data)`` per point ``(n,)`` or reduced (``reduce``: True = mean, "sum", "none")."""

    @abc.abstractmethod
    def sample(self, num_samples=None, *, seed=None):
        """Weight draws, per layer ``(num_samples, d_{l+1}, d_l + 1)``, bias last."""

    @abc.abstractmethod
    def to_numpy(self):
        """A copy with every array on the host as NumPy."""

    @abc.abstractmethod
    def _anchor(self):
        """An array of the result (its namespace, device and dtype are the result's)."""

    # -------------------------------------------------------------- the conventions
    def _num_draws(self, num_samples):
        """``num_samples`` resolved by the convention: ``None`` is :attr:`default_num_samples` (``None`` there:
        every stored draw, returned as ``None``); otherwise a positive int (``ValueError``)."""
        if num_samples is None:
            num_samples = self.default_num_samples
            if num_samples is None:
                return None
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        return num_samples

    def _label_moments(self, proba):
        """Moments of the one-hot label from class probabilities ``(n, K)``: ``(p, p(1 − p))``; the
        one-output links (``"bernoulli"``, ``"probit"``) give one column, ``p = P(y = 1)``, so the shape
        is ``(n, d_out)`` for every classifier."""
        if self.likelihood in ONE_OUTPUT_LINKS:
            proba = proba[:, 1:]
        return proba, proba * (1.0 - proba)

    # -------------------------------------------------------------- inputs
    def _prepare_X(self, X_new):
        """``X_new`` validated ``(n, d_in)``, finite, moved into this result's namespace/device and dtype
        (the input gate's :func:`blockbayes.inputs.prepare_X`)."""
        return prepare_X(X_new, like=self._anchor(), d_in=self.net.d_in)

    def _prepare_targets(self, y_new, X_new):
        """Regression targets ``(n, d_out)`` or classification one-hot labels ``(n, K)``."""
        xp = namespace(X_new)
        if not hasattr(y_new, "shape"):
            raise TypeError("y_new must be an array")
        if namespace(y_new) is not xp:
            y_new = xp.asarray(to_numpy(y_new), device=device_of(X_new))
        n = X_new.shape[0]
        if not self.is_classifier:
            y_new = xp.astype(y_new, X_new.dtype)
            if y_new.ndim == 1:
                y_new = xp.reshape(y_new, (-1, 1))
            if tuple(y_new.shape) != (n, self.net.d_out):
                raise ValueError(f"y_new must have shape ({n},) or ({n}, {self.net.d_out}), got {tuple(y_new.shape)}")
            if not bool(xp.all(xp.isfinite(y_new))):
                raise ValueError("y_new contains NaN or infinite values")
            return y_new
        K = self.num_classes
        if self.likelihood in P.STANDARD_LIKELIHOODS:
            lab = y_new
            if lab.ndim == 2 and lab.shape[1] == 1:
                lab = xp.reshape(lab, (-1,))
            if lab.ndim != 1 or lab.shape[0] != n:
                raise ValueError(f"labels must have shape ({n},), got {tuple(y_new.shape)}")
            if xp.isdtype(lab.dtype, "bool"):
                lab = xp.astype(lab, xp.int64)
            lf = xp.astype(lab, xp.float64) if xp.isdtype(lab.dtype, "integral") else lab
            if (not bool(xp.all(xp.isfinite(lf))) or bool(xp.any(lf != xp.round(lf)))
                    or bool(xp.any(lf < 0)) or bool(xp.any(lf >= K))):
                raise ValueError(f"labels must be integers in [0, {K})")
            return P.onehot(xp.astype(lf, xp.int64), K, X_new.dtype)
        return P.onehot(validate_labels(self.net, y_new, n), K, X_new.dtype)

    # -------------------------------------------------------------- sample-based predictive (shared)
    def _draw_predict(self, X_new, weights, delta_y, *, noise_key=None, chunk=None):
        return P.predictive_from_draws(self.net, weights, X_new, likelihood=self.likelihood, delta_y=delta_y,
                                       chunk=chunk, noise_key=noise_key, what="moments")

    def _draw_proba(self, X_new, weights, delta_y, *, chunk=None, nodes=32):
        return P.predictive_from_draws(self.net, weights, X_new, likelihood=self.likelihood, delta_y=delta_y,
                                       chunk=chunk, what="proba", nodes=nodes)

    def _draw_lpd(self, X_new, Y, weights, delta_y, *, noise_key=None, chunk=None, nodes=32):
        return P.predictive_from_draws(self.net, weights, X_new, likelihood=self.likelihood, delta_y=delta_y,
                                       chunk=chunk, noise_key=noise_key, targets=Y, what="lpd", nodes=nodes)

    # -------------------------------------------------------------- disk
    @abc.abstractmethod
    def _payload(self):
        """``(arrays, meta)`` of the host copy: arrays by name and JSON-able settings."""

    @classmethod
    @abc.abstractmethod
    def _from_file(cls, arrays, meta, mv, path):
        """The result from :meth:`_payload`'s ``(arrays, meta)`` (``mv`` moves an array to the target device)."""

    def save(self, path) -> None:
        """Save to a ``.npz`` file (NumPy arrays and JSON metadata; no pickle). :func:`load` reads it back
        bit for bit."""
        arrays, meta = self._payload()
        meta = dict(meta, kind=self.result_kind, format=FORMAT, net=net_to_dict(self.net))
        save_npz(path, arrays, meta, meta_key="meta")

    @classmethod
    def load(cls, path, *, device=None):
        """Load a result saved by :meth:`save` (NumPy arrays, or moved to ``device``)."""
        arrays, meta = read_result_file(path)
        if meta["kind"] != cls.result_kind:
            raise ValueError(f"{path} does not hold a {cls.result_kind} (it holds a {meta['kind']})")
        return cls._from_file(arrays, meta, _mover(device), path)

    # -------------------------------------------------------------- ArviZ
    @abc.abstractmethod
    def _arviz_draws(self, num_samples, seed):
        """``(weights per layer (chains, draws, d, k), delta_y (chains, draws) or None,
        extra posterior variables, sample_stats)``, NumPy or backend arrays."""

    def to_arviz(self, X=None, y=None, *, num_samples=None, seed=0):
        """The posterior as an :class:`arviz.InferenceData` (needs the optional ``arviz``).

        Groups: ``posterior`` (weights ``W_l`` of shape ``(chain, draw, d_{l+1}, d_l + 1)``, bias last;
        ``delta_y`` for regression; further hyperparameters a result stores), ``sample_stats``
        (what the result has per draw: the Gibbs log joint as ``lp``) and, given data ``(X, y)``,
        ``log_likelihood`` (``log p(y_i | x_i, W_s)`` per draw and point, ``y`` of shape
        ``(chain, draw, n)``) with ``observed_data``. Results that hold a distribution rather than
        draws (VI, Laplace) contribute ``num_samples`` draws (``seed``; default
        :attr:`default_num_samples`) as one chain; a point fit is one draw, an ensemble one chain of
        its members.
        """
        try:
            import arviz as az
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError("to_arviz needs the optional package arviz: pip install 'blockbayes[arviz]'") from exc
        W, dy, extra, stats = self._arviz_draws(self._num_draws(num_samples), seed)
        post, dims = {}, {}
        for l, w in enumerate(W):
            name = f"W_{l + 1}"
            post[name] = to_numpy(w)
            dims[name] = [f"{name}_out", f"{name}_in"]
        if dy is not None and not self.is_classifier:
            post["delta_y"] = to_numpy(dy)
        for k, v in extra.items():
            post[k] = to_numpy(v)
        groups = dict(posterior=post)
        if stats:
            groups["sample_stats"] = {k: to_numpy(v) for k, v in stats.items()}
        if X is not None and y is not None:
            Xp = self._prepare_X(X)
            Y = self._prepare_targets(y, Xp)
            xp = namespace(Xp)
            C, S = int(W[0].shape[0]), int(W[0].shape[1])
            flat = tuple(xp.reshape(xp.asarray(w, device=device_of(Xp)) if namespace(w) is xp else
                                    xp.asarray(to_numpy(w), device=device_of(Xp)), (C * S,) + tuple(w.shape[2:]))
                         for w in W)
            flat = tuple(xp.astype(w, Xp.dtype) for w in flat)
            if dy is None:
                dyf = xp.ones((C * S,), dtype=Xp.dtype, device=device_of(Xp))
            else:
                dyf = xp.reshape(xp.astype(xp.asarray(to_numpy(dy), device=device_of(Xp)) if namespace(dy) is not xp
                                           else dy, Xp.dtype), (-1,))
            parts = [P.log_density_per_sample(self.likelihood, F, d, Y)
                     for F, d in P.forward_chunks(self.net, flat, Xp, delta_y=dyf, chunk=256)]
            ll = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
            groups["log_likelihood"] = {"y": to_numpy(ll).reshape((C, S, -1))}
            groups["observed_data"] = {"y": to_numpy(y)}
        return az.from_dict(**groups, dims=dims)


def check_kind(kind, allowed=("network", "generative")):
    """``kind`` must name one of the result's predictives (a clear ``ValueError`` otherwise)."""
    if kind not in allowed:
        raise ValueError(f"kind must be one of {allowed}, got {kind!r}")
