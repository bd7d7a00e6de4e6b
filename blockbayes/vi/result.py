"""Result object of the VI family: a product of Gaussian node-row blocks.

:class:`VIResult` holds, per layer ``l``, the row means ``(K, d_{l+1}, d_l + 1)`` (bias last) and
their covariances in one of three layouts:

* ``"shared"`` — one covariance per layer, shared by all rows: ``(K, d_l + 1, d_l + 1)``
  (block CAVI, the sample-based variant, the target scheme: ``S_l = (Λ_l + E[G_l]/Δ)^{-1}``);
* ``"row"`` — one covariance per row: ``(K, d_{l+1}, d_l + 1, d_l + 1)`` (Rao–Blackwell);
* ``"diag"`` — one variance per weight: ``(K, d_{l+1}, d_l + 1)`` (the mean-field baseline).

``K`` is the number of *components*: independent restarts of the optimiser (block CAVI,
mean-field) or 1 (Rao–Blackwell pools its chains). Predictions use the component with the
largest ELBO by default (``components="best"``), an equal-weight mixture of all of them
(``"mixture"``), or one given by index. The posterior is ``q(W) = Π_{l,i} N(w̃_{l,i}; m_{l,i}, S_{l,i})``:
rows are independent, so cross-row and cross-layer correlations are absent by construction.

Predictions are Monte Carlo: ``num_samples`` weight draws (reproducible with ``seed``), pushed
through the network exactly as :class:`blockbayes.gibbs.GibbsResult` does (the same code), so
the predictive summaries of every family are comparable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from .. import predictive as P
from .._backend import backend_name, device_of, namespace, to_numpy
from .._backend import linalg
from .._backend import random as bbr
from .._backend.io import jsonable
from ..model import MLP
from ..gibbs.result import GibbsResult
from ..posterior import NotAClassifierError, Posterior, net_from_dict, register_result, renamed_keywords

__all__ = ["VIResult", "load", "NotAClassifierError"]

COV_KINDS = ("shared", "row", "diag")


@register_result
@dataclass
class VIResult(Posterior):
    """Block-Gaussian posterior approximation from :mod:`blockbayes.vi`.

    Attributes
    ----------
    net : MLP
    method : str
        ``"cavi"``, ``"rao_blackwell"``, ``"sampled"``, ``"targets"`` or ``"mean_field"``.
    means : tuple of arrays
        Per layer ``(K, d_{l+1}, d_l + 1)``, bias last.
    covs : tuple of arrays
        Per layer, in the layout ``cov_kind`` (see the module docstring).
    cov_kind : {"shared", "row", "diag"}
    delta_y : array, shape (K,)
        Output-noise variance used by the predictive (regression).
    elbo : array of shape (K,) or None
        Final ELBO of each component (``None`` where the method has none).
    trace : dict of arrays
        Per-iteration diagnostics, each ``(K, T)`` (e.g. ``"elbo"``).
    likelihood : str
        ``"gaussian"`` for regression; ``"bernoulli"`` / ``"categorical"`` for the mean-field
        baseline's classifiers (logistic / softmax link).
    model : {"noisy", "standard"}
        Which network the posterior belongs to: the noisy MLP of MATH.md §A (``kind="generative"``
        predictions allowed) or the standard noise-free MLP (mean-field baseline).
    final_state : object or None
        The algorithm's last state (pass it as ``init=`` to continue where supported).
    config : dict
        Settings of the run.
    extras : dict
        Method-specific extras (e.g. the Rao–Blackwell result's raw Gibbs draws and the
        uncorrected conditional covariances); not saved by :meth:`save`.
    """

    result_kind: ClassVar[str] = "VIResult"
    #: Monte Carlo draws from ``q`` of the predictions and of :meth:`sample` when ``num_samples=None``
    default_num_samples: ClassVar[int] = 1000

    net: MLP
    method: str
    means: tuple
    covs: tuple
    cov_kind: str
    delta_y: Any
    elbo: Optional[Any] = None
    trace: dict = field(default_factory=dict)
    likelihood: str = "gaussian"
    model: str = "noisy"
    final_state: Optional[Any] = None
    config: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.cov_kind not in COV_KINDS:
            raise ValueError(f"cov_kind must be one of {COV_KINDS}, got {self.cov_kind!r}")
        if len(self.means) != self.net.num_layers or len(self.covs) != self.net.num_layers:
            raise ValueError("means and covs need one entry per layer")

    # ------------------------------------------------------------------ basic properties
    def _anchor(self):
        return self.means[0]

    @property
    def num_components(self) -> int:
        return int(self.means[0].shape[0])

    @property
    def best(self) -> int:
        """Index of the component with the largest final ELBO; without an ELBO, the largest final
        ``trace["score"]`` (e.g. the target scheme's log joint); else 0."""
        if self.num_components == 1:
            return 0
        if self.elbo is not None:
            e = self.elbo
        elif "score" in self.trace:
            e = self.trace["score"][:, -1]
        else:
            return 0
        xp = namespace(e)
        e = xp.where(xp.isfinite(e), e, xp.full_like(e, -math.inf))
        return int(xp.argmax(e))

    def _select(self, components):
        K = self.num_components
        if isinstance(components, str):
            if components == "best":
                return [self.best]
            if components == "mixture":
                return list(range(K))
            raise ValueError(f"components must be 'best', 'mixture' or an int, got {components!r}")
        if isinstance(components, bool) or not isinstance(components, int) or not -K <= components < K:
            raise ValueError(f"components must be 'best', 'mixture' or an int in [0, {K}), got {components!r}")
        return [components % K]

    def row_covariances(self, layer: int):
        """Covariance of every row of ``layer``, shape ``(K, d_{l+1}, d_l + 1, d_l + 1)``."""
        xp = self.xp
        M, S = self.means[layer], self.covs[layer]
        if self.cov_kind == "row":
            return S
        if self.cov_kind == "shared":
            return xp.broadcast_to(S[:, None, :, :], M.shape + (M.shape[-1],))
        eye = xp.eye(M.shape[-1], dtype=M.dtype, device=device_of(M))
        return S[..., :, None] * eye

    def marginal_var(self) -> tuple:
        """Marginal variance of every weight, per layer ``(K, d_{l+1}, d_l + 1)``."""
        xp = self.xp
        out = []
        for M, S in zip(self.means, self.covs):
            if self.cov_kind == "diag":
                v = S
            elif self.cov_kind == "shared":
                v = xp.broadcast_to(xp.linalg.diagonal(S)[:, None, :], M.shape)
            else:
                v = xp.linalg.diagonal(S)
            out.append(v)
        return tuple(out)

    def marginal_sd(self) -> tuple:
        """Marginal standard deviation of every weight, per layer ``(K, d_{l+1}, d_l + 1)``."""
        return tuple(self.xp.sqrt(v) for v in self.marginal_var())

    # ------------------------------------------------------------------ sampling
    def sample(self, num_samples: Optional[int] = None, *, seed=None, components="best", **deprecated) -> tuple:
        """Draw weights from ``q``: per layer an array ``(num_samples, d_{l+1}, d_l + 1)``.

        ``w̃_{l,i} = m_{l,i} + L_{l,i} ε`` with ``L L^⊤`` the row covariance (Cholesky) and
        ``ε ~ N(0, I)``; rows independent. With ``components="mixture"`` the draws are split
        evenly over the components (in order). ``num_samples=None``: :attr:`default_num_samples` (1000).
        (``num=`` is the deprecated spelling.)
        """
        num = renamed_keywords("VIResult.sample", deprecated, {"num": "num_samples"}).get("num_samples", num_samples)
        if num is None:
            num = self.default_num_samples
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}")
        comps = self._select(components)
        return self._draw(num, bbr.key(seed), comps)[0]

    def _draw(self, num, key, comps):
        xp = self.xp
        K = len(comps)
        counts = [num // K + (1 if j < num % K else 0) for j in range(K)]
        keys = bbr.split(key, len(self.means) * K)
        layers = []
        for l, (M, S) in enumerate(zip(self.means, self.covs)):
            parts = []
            for j, (c, cnt) in enumerate(zip(comps, counts)):
                if cnt == 0:
                    continue
                E = bbr.normal(keys[l * K + j], (cnt,) + tuple(M.shape[1:]), like=M)
                if self.cov_kind == "diag":
                    W = M[c, ...] + xp.sqrt(S[c, ...]) * E
                elif self.cov_kind == "shared":
                    Lc = linalg.cholesky(S[c, ...])
                    W = M[c, ...] + xp.matmul(E, xp.matrix_transpose(Lc))
                else:
                    Lc = linalg.cholesky(S[c, ...])                                   # (d_out, k, k)
                    W = M[c, ...] + xp.matmul(Lc[None, ...], E[..., None])[..., 0]
                parts.append(W)
            layers.append(parts[0] if len(parts) == 1 else xp.concat(parts, axis=0))
        dy = xp.concat([xp.broadcast_to(self.delta_y[c:c + 1], (cnt,)) for c, cnt in zip(comps, counts) if cnt],
                       axis=0)
        return tuple(layers), dy

    def as_samples(self, num_samples: Optional[int] = None, *, seed=0, components="best") -> GibbsResult:
        """``num_samples`` draws from ``q`` (default :attr:`default_num_samples`) wrapped as a
        :class:`~blockbayes.gibbs.GibbsResult` (one chain), which supplies the Monte Carlo predictive."""
        num_samples = self._num_draws(num_samples)
        xp = self.xp
        comps = self._select(components)
        W, dy = self._draw(num_samples, bbr.key(seed), comps)
        L = self.net.num_layers
        dt, dev = self.means[0].dtype, device_of(self.means[0])
        lam_w = xp.broadcast_to(xp.asarray([list(self.net.lam_w)], dtype=dt, device=dev)[None, ...], (1, num_samples, L))
        lam_b = xp.broadcast_to(xp.asarray([list(self.net.lam_b)], dtype=dt, device=dev)[None, ...], (1, num_samples, L))
        return GibbsResult(net=self.net, weights=tuple(w[None, ...] for w in W), delta_y=dy[None, :],
                           lam_w=lam_w, lam_b=lam_b, config=dict(source=f"vi.{self.method}"))

    # ------------------------------------------------------------------ predictive
    def _check_kind(self, kind):
        if kind not in ("network", "generative"):
            raise ValueError(f"kind must be 'network' or 'generative', got {kind!r}")
        if kind == "generative" and self.model == "standard":
            raise ValueError("kind='generative' adds the noisy network's hidden-layer noise; this "
                             "posterior belongs to the standard (noise-free) MLP: use kind='network'")

    def _draws(self, num_samples, seed, components):
        return self._draw(self._num_draws(num_samples), bbr.key(seed), self._select(components))

    def predict(self, X_new, *, kind: str = "network", num_samples: Optional[int] = None, seed=0,
                components="best", chunk: int = 256):
        """Posterior predictive mean and variance at ``X_new`` (Monte Carlo over ``q``).

        ``mean = (1/S) Σ_s f_s(x)``, ``var = (1/S) Σ_s (f_s(x)² + Δ_y) − mean²`` over ``S =
        num_samples`` draws ``W_s ~ q`` (default :attr:`default_num_samples`, 1000; ``seed`` default 0;
        see :meth:`GibbsResult.predict` for ``kind``). Classifiers (the mean-field baseline's): the
        moments of the one-hot label, ``(p, p(1 − p))`` with ``p`` from :meth:`predict_proba`
        (``"bernoulli"``: one column, ``P(y = 1)``).

        Returns
        -------
        mean, var : arrays, shape (n, d_out)
        """
        self._check_kind(kind)
        if self.is_classifier:
            return self._label_moments(self.predict_proba(X_new, num_samples=num_samples, seed=seed,
                                                          components=components, chunk=chunk))
        W, dy = self._draws(num_samples, seed, components)
        X_new = self._prepare_X(X_new)
        noise_key = bbr.key(seed) if kind == "generative" else None
        return self._draw_predict(X_new, W, dy, noise_key=noise_key, chunk=chunk)

    def predict_samples(self, X_new, *, num_samples: Optional[int] = None, seed=0, components="best"):
        """Network outputs of ``num_samples`` draws, shape ``(num_samples, n, d_out)``."""
        W, _ = self._draws(num_samples, seed, components)
        X_new = self._prepare_X(X_new)
        return next(P.forward_chunks(self.net, W, X_new))[0]

    def log_predictive_density(self, X_new, y_new, *, reduce=True, kind: str = "network",
                               num_samples: Optional[int] = None, seed=0, components="best", chunk: int = 256):
        """Log predictive density ``log (1/S) Σ_s p(y | x, W_s)`` (mean over points if ``reduce``).

        Regression: ``p = N(y; f_s(x), Δ_y I)``. Classifiers of the mean-field baseline: the
        Bernoulli-logistic or softmax probability of the integer label ``y``.
        """
        self._check_kind(kind)
        W, dy = self._draws(num_samples, seed, components)
        X_new = self._prepare_X(X_new)
        Y = self._prepare_targets(y_new, X_new)
        noise_key = bbr.key(seed) if kind == "generative" and not self.is_classifier else None
        return P.reduce_points(self._draw_lpd(X_new, Y, W, dy, noise_key=noise_key, chunk=chunk), reduce)

    def predict_proba(self, X_new, *, num_samples: Optional[int] = None, seed=0, components="best",
                      chunk: int = 256):
        """Predictive class probabilities ``(1/S) Σ_s p(c | x, W_s)``, shape ``(n, K)``.

        Only for the mean-field baseline's classifiers (``likelihood`` ``"bernoulli"``: columns
        ``[p(0), p(1)]`` with the logistic link; ``"categorical"``: softmax). The noisy-network VI
        family implements Gaussian regression only.

        Raises
        ------
        NotAClassifierError
            For regression posteriors.
        """
        self._require_classifier()
        W, dy = self._draws(num_samples, seed, components)
        X_new = self._prepare_X(X_new)
        return self._draw_proba(X_new, W, dy, chunk=chunk)

    # ------------------------------------------------------------------ host / disk
    def to_numpy(self) -> "VIResult":
        """A copy with every array on the host as NumPy (``final_state`` dropped)."""
        return VIResult(net=self.net, method=self.method, means=tuple(to_numpy(m) for m in self.means),
                        covs=tuple(to_numpy(c) for c in self.covs), cov_kind=self.cov_kind,
                        delta_y=to_numpy(self.delta_y),
                        elbo=None if self.elbo is None else to_numpy(self.elbo),
                        trace={k: to_numpy(v) for k, v in self.trace.items()}, likelihood=self.likelihood,
                        model=self.model, final_state=None, config=dict(self.config))

    def _payload(self):
        h = self.to_numpy()
        arrays = {f"means_{l}": m for l, m in enumerate(h.means)}
        arrays.update({f"covs_{l}": c for l, c in enumerate(h.covs)})
        arrays["delta_y"] = h.delta_y
        if h.elbo is not None:
            arrays["elbo"] = h.elbo
        for k, v in h.trace.items():
            arrays[f"trace_{k}"] = v
        meta = dict(method=self.method, cov_kind=self.cov_kind, likelihood=self.likelihood, model=self.model,
                    config=jsonable(self.config))
        return arrays, meta

    @classmethod
    def _from_file(cls, f, meta, mv, path):
        net = net_from_dict(meta["net"])
        L = net.num_layers
        trace = {k[len("trace_"):]: mv(f[k]) for k in f if k.startswith("trace_")}
        return cls(net=net, method=meta["method"], means=tuple(mv(f[f"means_{l}"]) for l in range(L)),
                   covs=tuple(mv(f[f"covs_{l}"]) for l in range(L)), cov_kind=meta["cov_kind"],
                   delta_y=mv(f["delta_y"]), elbo=mv(f["elbo"]) if "elbo" in f else None,
                   trace=trace, likelihood=meta["likelihood"], model=meta["model"],
                   config=meta.get("config", {}))

    def _arviz_draws(self, num_samples, seed):
        W, dy = self._draws(num_samples, seed, "best")
        return tuple(w[None, ...] for w in W), dy[None, :], {}, {}

    def __repr__(self):
        return (f"VIResult(method={self.method!r}, components={self.num_components}, cov_kind={self.cov_kind!r}, "
                f"model={self.model!r}, net={self.net!r}, backend={backend_name(self.xp)})")


def load(path, *, device=None) -> VIResult:
    """Load a :class:`VIResult` saved with :meth:`VIResult.save`."""
    return VIResult.load(path, device=device)
