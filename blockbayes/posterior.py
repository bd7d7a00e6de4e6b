"""Result objects and the one result interface every family answers.

Every posterior of blockbayes — :class:`GibbsResult` (samples of the noisy MLP),
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

:func:`load` reads any result file: the saved ``kind`` names the class in a registry that each
result module fills when imported (:func:`register_result`); the built-in families are imported
on demand, so this module imports no family at import time.
"""
from __future__ import annotations

import importlib
import json
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np

from . import predictive as P
from ._backend import device_of, namespace, resolve_device, to_device, to_numpy
from ._backend import random as bbr
from .inputs import prepare_X, validate_labels
from .model import MLP

__all__ = ["Posterior", "GibbsResult", "load", "register_result",
           "read_result_file", "renamed_keywords", "check_kind", "jsonable", "net_to_dict", "net_from_dict",
           "NotAClassifierError"]



class NotAClassifierError(ValueError, NotImplementedError):
    """``predict_proba`` on a regression posterior."""


def net_to_dict(net: MLP) -> dict:
    """JSON-able description of an :class:`MLP` (round-trips through :func:`net_from_dict`)."""
    return dict(widths=list(net.widths), activation=net.activation,
                slope=net.slope if net.activation == "leaky_relu" else 0.01,
                likelihood=net.likelihood,
                prior_prec=[[lw, lb] for lw, lb in zip(net.lam_w, net.lam_b)],
                delta={"Z": list(net.delta_z), "X": list(net.delta_x), "y": net.delta_y})


def net_from_dict(d: dict) -> MLP:
    return MLP(d["widths"], d["activation"], slope=d["slope"], likelihood=d["likelihood"],
               prior_prec=[tuple(p) for p in d["prior_prec"]], delta=d["delta"])


def jsonable(obj):
    """``obj`` with tuples as lists and anything not JSON-able as its ``repr``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return jsonable(np.asarray(to_numpy(obj)).tolist())
    return repr(obj)


# ----------------------------------------------------------------------------------- registry / files
_REGISTRY: dict = {}
# built-in kinds whose module is imported on demand by load() (no family import at module level)
_BUILTIN = {"VIResult": "blockbayes.vi.result", "LaplaceResult": "blockbayes.laplace.result",
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
    def bad(why):
        return ValueError(f"{path} is not a blockbayes result file ({why})")

    try:
        f = np.load(path, allow_pickle=False)
        if not hasattr(f, "files"):                       # an .npy file: a plain array
            raise bad("not an .npz archive")
        with f:
            if "meta" not in f.files:
                raise bad("no 'meta' entry")
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:
        if "not a blockbayes result file" in str(exc):
            raise
        raise bad(f"{type(exc).__name__}: {exc}") from None
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise bad(f"{type(exc).__name__}: {exc}") from None
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (TypeError, ValueError) as exc:
        raise bad(f"unreadable metadata: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("kind"), str) or "net" not in meta:
        raise bad("metadata without 'kind' and 'net'")
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
class Posterior:
    """The interface every blockbayes result answers (see the module docstring).

    Subclasses set ``result_kind`` (the name saved in files and looked up by :func:`load`),
    ``net`` and ``likelihood``, and implement the prediction methods, :meth:`sample`,
    :meth:`to_numpy`, ``_payload`` (arrays and metadata to save), ``_from_file`` (the inverse)
    and ``_arviz_draws``.
    """

    result_kind: ClassVar[str] = ""

    # -------------------------------------------------------------- common properties
    @property
    def xp(self):
        return namespace(self._anchor())

    def _anchor(self):
        raise NotImplementedError

    @property
    def is_classifier(self) -> bool:
        return self.likelihood != "gaussian"

    @property
    def num_classes(self) -> int:
        """Number of classes ``K`` of a classifier (``2`` for the one-output links)."""
        if self.likelihood in ("probit", "bernoulli"):
            return 2
        return self.net.d_out

    def _require_classifier(self):
        if not self.is_classifier:
            raise NotAClassifierError(
                f"predict_proba needs a classification likelihood; this posterior is a regression "
                f"(likelihood={self.likelihood!r}): use predict / log_predictive_density with real targets")

    # -------------------------------------------------------------- the protocol (each result implements it)
    def predict(self, X_new, *, kind=None, num_samples=None, seed=None):
        """Predictive mean and variance, each ``(n, d_out)``."""
        raise NotImplementedError(f"{type(self).__name__}.predict")

    def predict_proba(self, X_new, *, num_samples=None, seed=None):
        """Predictive class probabilities ``(n, K)`` (classifiers; :class:`NotAClassifierError` otherwise)."""
        raise NotImplementedError(f"{type(self).__name__}.predict_proba")

    def log_predictive_density(self, X_new, y_new, *, reduce=True, kind=None, num_samples=None, seed=None):
        """``log p(y_i | x_i, data)`` per point ``(n,)`` or reduced (``reduce``: True = mean, "sum", "none")."""
        raise NotImplementedError(f"{type(self).__name__}.log_predictive_density")

    def sample(self, num_samples=None, *, seed=None):
        """Weight draws, per layer ``(num_samples, d_{l+1}, d_l + 1)``, bias last."""
        raise NotImplementedError(f"{type(self).__name__}.sample")

    def to_numpy(self):
        """A copy with every array on the host as NumPy."""
        raise NotImplementedError(f"{type(self).__name__}.to_numpy")

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
    def _payload(self):
        """``(arrays, meta)`` of the host copy: NumPy arrays by name and JSON-able settings."""
        raise NotImplementedError

    @classmethod
    def _from_file(cls, arrays, meta, mv, path):
        raise NotImplementedError

    def save(self, path) -> None:
        """Save to a ``.npz`` file (NumPy arrays and JSON metadata; no pickle). :func:`load` reads it back
        bit for bit."""
        arrays, meta = self._payload()
        meta = dict(meta, kind=self.result_kind, format=FORMAT, net=net_to_dict(self.net))
        arrays = dict(arrays)
        arrays["meta"] = np.asarray(json.dumps(meta))
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path, *, device=None):
        """Load a result saved by :meth:`save` (NumPy arrays, or moved to ``device``)."""
        arrays, meta = read_result_file(path)
        if meta["kind"] != cls.result_kind:
            raise ValueError(f"{path} does not hold a {cls.result_kind} (it holds a {meta['kind']})")
        return cls._from_file(arrays, meta, _mover(device), path)

    # -------------------------------------------------------------- ArviZ
    def _arviz_draws(self, num_samples, seed):
        """``(weights per layer (chains, draws, d, k), delta_y (chains, draws) or None,
        extra posterior variables, sample_stats)``, NumPy or backend arrays."""
        raise NotImplementedError

    def to_arviz(self, X=None, y=None, *, num_samples: int = 1000, seed=0):
        """The posterior as an :class:`arviz.InferenceData` (needs the optional ``arviz``).

        Groups: ``posterior`` (weights ``W_l`` of shape ``(chain, draw, d_{l+1}, d_l + 1)``, bias last;
        ``delta_y`` for regression; further hyperparameters a result stores), ``sample_stats``
        (what the result has per draw: the Gibbs log joint as ``lp``) and, given data ``(X, y)``,
        ``log_likelihood`` (``log p(y_i | x_i, W_s)`` per draw and point, ``y`` of shape
        ``(chain, draw, n)``) with ``observed_data``. Results that hold a distribution rather than
        draws (VI, Laplace) contribute ``num_samples`` draws (``seed``) as one chain; a point fit
        is one draw, an ensemble one chain of its members.
        """
        try:
            import arviz as az
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise ImportError("to_arviz needs the optional package arviz: pip install 'blockbayes[arviz]'") from exc
        W, dy, extra, stats = self._arviz_draws(num_samples, seed)
        post, dims = {}, {}
        for l, w in enumerate(W):
            name = f"W_{l + 1}"
            post[name] = np.asarray(to_numpy(w))
            dims[name] = [f"{name}_out", f"{name}_in"]
        if dy is not None and not self.is_classifier:
            post["delta_y"] = np.asarray(to_numpy(dy))
        for k, v in extra.items():
            post[k] = np.asarray(to_numpy(v))
        groups = dict(posterior=post)
        if stats:
            groups["sample_stats"] = {k: np.asarray(to_numpy(v)) for k, v in stats.items()}
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
            groups["log_likelihood"] = {"y": np.reshape(np.asarray(to_numpy(ll)), (C, S, -1))}
            yo = np.asarray(to_numpy(y))
            groups["observed_data"] = {"y": yo}
        return az.from_dict(**groups, dims=dims)


def check_kind(kind, allowed=("network", "generative")):
    """``kind`` must name one of the result's predictives (a clear ``ValueError`` otherwise)."""
    if kind not in allowed:
        raise ValueError(f"kind must be one of {allowed}, got {kind!r}")


# ----------------------------------------------------------------------------------- Gibbs samples
@register_result
@dataclass
class GibbsResult(Posterior):
    """Samples of the noisy-MLP posterior from :func:`blockbayes.gibbs.run`.

    Attributes
    ----------
    net : MLP
    weights : tuple of arrays
        Per layer, shape ``(num_chains, num_samples, d_{l+1}, d_l + 1)``, bias last.
    delta_y : array, shape (num_chains, num_samples)
        Output-noise variance of each sample (constant unless ``learn_noise``).
    lam_w, lam_b : arrays, shape (num_chains, num_samples, L)
        Prior precisions of each sample (constant unless ``learn_prior``).
    log_joint : array of shape (num_chains, num_samples), or None
        ``log p(W̃, Z, X, y | X^1, λ, Δ)`` at each kept sweep.
    final_state : GibbsState or None
        The chains' last state: pass ``init=result.final_state`` to continue sampling.
    config : dict
        The run's settings (``wall_time_s``: seconds spent in the sampling loop).
    probe : array of shape (P, d_in), or None
        Fixed probe inputs of the function-space diagnostics (:meth:`summary`).
    """

    result_kind: ClassVar[str] = "GibbsResult"

    net: MLP
    weights: tuple
    delta_y: Any
    lam_w: Any
    lam_b: Any
    log_joint: Optional[Any] = None
    final_state: Optional[Any] = None
    config: dict = field(default_factory=dict)
    probe: Optional[Any] = None

    model: ClassVar[str] = "noisy"

    def summary(self, X_probe=None, *, prob=(0.05, 0.95)):
        """Function-space convergence summary in NumPyro ``print_summary`` style.

        Rows: the network output at each probe input (``X_probe``, default :attr:`probe`), then
        ``delta_y`` (if learned) and ``log_joint`` (if stored); columns mean, std, median, the
        ``prob`` quantiles, bulk ESS (``n_eff``), tail ESS, rank-normalised split R-hat and bulk
        ESS per second. ``print(result.summary())`` shows the table; see
        :func:`blockbayes.gibbs.diagnostics.function_summary`.
        """
        from .gibbs.diagnostics import function_summary

        return function_summary(self, X_probe, prob=prob)

    # ------------------------------------------------------------------ shape helpers
    def _anchor(self):
        return self.weights[0]

    @property
    def likelihood(self) -> str:
        return self.net.likelihood

    @property
    def num_chains(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.weights[0].shape[1])

    def flat_weights(self) -> tuple:
        """Weights with chains and samples merged: per layer ``(C·S, d_{l+1}, d_l + 1)``."""
        xp = self.xp
        return tuple(xp.reshape(W, (-1,) + tuple(W.shape[2:])) for W in self.weights)

    def sample(self, num_samples: Optional[int] = None, *, seed=None, **deprecated) -> tuple:
        """Stored posterior samples of the weights, per layer ``(num_samples, d_{l+1}, d_l + 1)``.

        ``num_samples=None`` returns all ``C·S``; otherwise that many chosen uniformly without
        replacement (reproducible with ``seed``). (``num=`` is the deprecated spelling.)
        """
        num_samples = renamed_keywords("GibbsResult.sample", deprecated, {"num": "num_samples"}).get(
            "num_samples", num_samples)
        return self._pick(num_samples, seed)[0]

    def _pick(self, num, seed):
        flat = self.flat_weights()
        dy = self.xp.reshape(self.delta_y, (-1,))
        total = int(flat[0].shape[0])
        if num is None:
            return flat, dy
        if not isinstance(num, int) or isinstance(num, bool) or not 1 <= num <= total:
            raise ValueError(f"num must be an int in [1, {total}], got {num!r}")
        idx = bbr.choice(bbr.key(seed), total, num)
        xp = self.xp
        idx_x = xp.asarray(idx, device=device_of(flat[0]))
        return tuple(xp.take(W, idx_x, axis=0) for W in flat), xp.take(dy, idx_x, axis=0)

    def predict_samples(self, X_new, *, chunk: Optional[int] = None):
        """Network outputs of every sample, shape ``(C, S, n, d_out)`` (noise-free forward pass).

        ``chunk``: samples per forward batch (default all at once; memory ``chunk · n · max width``).
        """
        X_new = self._prepare_X(X_new)
        xp = self.xp
        outs = [F for F, _ in P.forward_chunks(self.net, self.flat_weights(), X_new, chunk=chunk)]
        F = outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)
        return xp.reshape(F, (self.num_chains, self.num_samples) + tuple(F.shape[1:]))

    def predict(self, X_new, *, kind: str = "network", num_samples: Optional[int] = None, seed=None,
                chunk: int = 256):
        """Posterior predictive mean and variance at ``X_new``.

        ``mean = (1/S) Σ_s f_s(x)`` and ``var = (1/S) Σ_s (f_s(x)² + Δ_y^{(s)}) − mean²`` over the
        ``S`` samples (the mixture's moments, :func:`blockbayes.predictive.mixture_moments`).

        Parameters
        ----------
        X_new : array, shape (n, d_in)
        kind : {"network", "generative"}
            ``"network"``: ``f_s`` is the noise-free network with sample ``s``'s weights (what
            Piccioli et al. report). ``"generative"``: the noisy network's own predictive, one
            draw of the hidden-layer noise ``Δ_Z, Δ_X`` per sample (needs ``seed`` for
            reproducibility; adds the intermediate-noise variance, MATH.md §A.0).
        num_samples : int, optional
            Use a random subset of this many stored samples (``seed``); default all ``C·S``.
        chunk : int
            Samples per forward batch (memory ``chunk · n · max width``).

        Returns
        -------
        mean, var : arrays, shape (n, d_out)
        """
        check_kind(kind)
        X_new = self._prepare_X(X_new)
        W, dy = self._pick(num_samples, seed)
        noise_key = bbr.key(seed) if kind == "generative" else None
        return self._draw_predict(X_new, W, dy, noise_key=noise_key, chunk=chunk)

    def log_predictive_density(self, X_new, y_new, *, reduce=True, kind: str = "network",
                               num_samples: Optional[int] = None, seed=None, chunk: int = 256):
        """Log posterior predictive density of test targets.

        ``lpd_i = log (1/S) Σ_s p(y_i | x_i, W_s)`` (a logsumexp over samples) with
        ``p = N(y; f_s(x), Δ_y^{(s)} I)`` for regression and the probit class probability of
        :meth:`predict_proba` for classifiers; the mean over points when ``reduce`` (the UCI
        "test log-likelihood" convention, in the units of ``y``; subtract ``log σ_y`` to undo a
        standardisation of the targets). ``reduce`` may also be ``"mean"``, ``"sum"``, ``"none"``.

        Returns
        -------
        array, shape () if ``reduce`` else (n,)
        """
        X_new = self._prepare_X(X_new)
        Y = self._prepare_targets(y_new, X_new)
        if self.is_classifier:
            W, dy = self._pick(num_samples, seed)
            return P.reduce_points(self._draw_lpd(X_new, Y, W, dy, chunk=chunk), reduce)
        check_kind(kind)
        W, dy = self._pick(num_samples, seed)
        noise_key = bbr.key(seed) if kind == "generative" else None
        return P.reduce_points(self._draw_lpd(X_new, Y, W, dy, noise_key=noise_key, chunk=chunk), reduce)

    def predict_proba(self, X_new, *, num_samples: Optional[int] = None, seed=None, chunk: int = 64,
                      nodes: int = 32):
        """Posterior predictive class probabilities, shape ``(n, K)``.

        The probit link is integrated for each sample, then averaged over samples:
        ``"probit"``: ``p(y=1|x) = (1/S) Σ_s Φ(f_s(x))`` (columns ``[p(0), p(1)]``);
        ``"multinomial_probit"`` (``Δ = 1``) and ``"onehot_gaussian"`` (``Δ = Δ_y^{(s)}``, the
        argmax rule of MATH.md §B.3): ``p(c|a) = ∫ φ(t) Π_{c'≠c} Φ((a_c − a_{c'})/√Δ + t) dt`` by
        ``nodes``-point Gauss–Hermite quadrature (renormalised over classes). Cost
        ``O(S n K² nodes)``.
        """
        self._require_classifier()
        X_new = self._prepare_X(X_new)
        W, dy = self._pick(num_samples, seed)
        return self._draw_proba(X_new, W, dy, chunk=chunk, nodes=nodes)

    # ------------------------------------------------------------------ host / disk
    def to_numpy(self) -> "GibbsResult":
        """A copy with every array on the host as NumPy."""
        st = self.final_state
        if st is not None:
            st = type(st)(tuple(to_numpy(w) for w in st.weights), tuple(to_numpy(z) for z in st.pre),
                          tuple(to_numpy(x) for x in st.post), to_numpy(st.lam_w), to_numpy(st.lam_b),
                          to_numpy(st.delta_y), None if st.latent is None else to_numpy(st.latent))
        return GibbsResult(net=self.net, weights=tuple(to_numpy(w) for w in self.weights),
                           delta_y=to_numpy(self.delta_y), lam_w=to_numpy(self.lam_w),
                           lam_b=to_numpy(self.lam_b),
                           log_joint=None if self.log_joint is None else to_numpy(self.log_joint),
                           final_state=st, config=dict(self.config),
                           probe=None if self.probe is None else to_numpy(self.probe))

    def _payload(self):
        h = self.to_numpy()
        arrays = {f"weights_{l}": w for l, w in enumerate(h.weights)}
        arrays.update(delta_y=h.delta_y, lam_w=h.lam_w, lam_b=h.lam_b)
        if h.log_joint is not None:
            arrays["log_joint"] = h.log_joint
        if h.probe is not None:
            arrays["probe"] = h.probe
        if h.final_state is not None:
            st = h.final_state
            for l, w in enumerate(st.weights):
                arrays[f"state_weights_{l}"] = w
            for i, (z, x) in enumerate(zip(st.pre, st.post)):
                arrays[f"state_pre_{i}"] = z
                arrays[f"state_post_{i}"] = x
            arrays.update(state_lam_w=st.lam_w, state_lam_b=st.lam_b, state_delta_y=st.delta_y)
            if st.latent is not None:
                arrays["state_latent"] = st.latent
        return arrays, dict(config=self.config)

    @classmethod
    def _from_file(cls, f, meta, mv, path):
        net = net_from_dict(meta["net"])
        L = net.num_layers
        weights = tuple(mv(f[f"weights_{l}"]) for l in range(L))
        st = None
        if "state_weights_0" in f:
            from .gibbs import GibbsState

            st = GibbsState(tuple(mv(f[f"state_weights_{l}"]) for l in range(L)),
                            tuple(mv(f[f"state_pre_{i}"]) for i in range(L - 1)),
                            tuple(mv(f[f"state_post_{i}"]) for i in range(L - 1)),
                            mv(f["state_lam_w"]), mv(f["state_lam_b"]), mv(f["state_delta_y"]),
                            mv(f["state_latent"]) if "state_latent" in f else None)
        return cls(net=net, weights=weights, delta_y=mv(f["delta_y"]), lam_w=mv(f["lam_w"]),
                   lam_b=mv(f["lam_b"]), log_joint=mv(f["log_joint"]) if "log_joint" in f else None,
                   final_state=st, config=meta.get("config", {}),
                   probe=mv(f["probe"]) if "probe" in f else None)

    def _arviz_draws(self, num_samples, seed):
        extra = {}
        if self.config.get("learn_prior"):
            extra = {"lam_w": self.lam_w, "lam_b": self.lam_b}
        stats = {} if self.log_joint is None else {"lp": self.log_joint}
        return self.weights, self.delta_y, extra, stats
