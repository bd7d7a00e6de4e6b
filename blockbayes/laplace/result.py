"""The Laplace result object: Gaussian posterior ``N(θ*, P^{-1})`` with a structured precision,
its evidence and hyperparameter tuning, sampling and predictions.

The factorisation and covariance algebra of the four structures live in
:mod:`blockbayes.laplace._posterior` (see its docstring for the structures).
"""
from __future__ import annotations

import math
from typing import ClassVar, Optional

# host maths only for the evidence optimiser's vector of at most 2L + 1 log hyperparameters (the
# interface of scipy's L-BFGS-B); files and host copies go through blockbayes._backend.io
from .._backend.host import minimize, np

from .. import predictive as P
from .._backend import to_numpy
from .._backend import random as bbr
from .._backend.io import host_copy, jsonable
from .._backend.linalg import cholesky, solve_triangular
from ..model import MLP, forward
from ..posterior import Posterior, net_from_dict, register_result, renamed_keywords
from . import _common as C
from ._mlp_grad import auto_chunk, chunks
from ._posterior import StructuredGaussian

__all__ = ["LaplaceResult", "STRUCTURES", "SUBSETS"]

STRUCTURES = ("diag", "kfac", "full", "block")
SUBSETS = ("all", "last_layer")
PRED_TYPES = ("glm", "nn")
LINKS = ("probit", "mc")
# deprecated spellings of the predictive keywords (the common result vocabulary is kind / num_samples)
_ALIASES = {"pred_type": "kind", "n_samples": "num_samples"}


def _float(x) -> float:
    return float(to_numpy(x))


@register_result
class LaplaceResult(StructuredGaussian, Posterior):
    """Gaussian (Laplace) posterior of the standard MLP's weights.

    Built by :func:`blockbayes.laplace.fit` (standard Laplace at given weights) and
    :func:`blockbayes.laplace.block` (iterative block Laplace); not meant to be constructed by hand.

    Attributes
    ----------
    net : MLP
    likelihood : {"gaussian", "categorical", "bernoulli"}
    structure : {"diag", "kfac", "full", "block"}
    subset : {"all", "last_layer"}
    layers : tuple of int
        Active layers (0-based); the others stay at the mode.
    weights, mean : tuple of arrays
        The mode ``θ*``, per layer ``(d_{l+1}, d_l + 1)``, bias last.
    n : int
        Number of training points.
    delta_y : float
        Gaussian noise variance (1.0 for classification); ``sigma_noise = √delta_y``.
    prior_precision : tuple of (float, float)
        ``(λ_W, λ_b)`` per layer (only the active layers enter the posterior).
    info : dict
        Diagnostics of the algorithm that produced the result (may be empty).

    Notes
    -----
    Arrays live in the training data's namespace/device/dtype; :meth:`to_numpy` gives a host copy.
    Hyperparameter setters (:meth:`optimize_prior_precision`, ``log_marginal_likelihood(prior_prec=…)``)
    update the object in place, like laplace-torch.
    Predictions take the common result keywords (:mod:`blockbayes.posterior`): ``kind``
    (``"glm"`` or ``"nn"``; laplace-torch's ``pred_type`` is its deprecated spelling),
    ``num_samples`` (was ``n_samples``), ``seed``.
    """

    result_kind: ClassVar[str] = "LaplaceResult"
    model: ClassVar[str] = "standard"
    #: Monte Carlo draws (``kind="nn"``, ``link="mc"``, :meth:`sample`) when ``num_samples=None``:
    #: laplace-torch's ``n_samples=100``
    default_num_samples: ClassVar[int] = 100

    def __init__(self, *, net: MLP, likelihood: str, structure: str, subset: str, layers, weights,
                 curv: dict, n: int, misfit, lam_w, lam_b, delta_y: float, kfac_bias: str = "joint",
                 info: Optional[dict] = None, chunk_size=None):
        self.net = net
        self.likelihood = likelihood
        self.structure = structure
        self.subset = subset
        self.layers = tuple(int(l) for l in layers)
        self.weights = tuple(weights)
        self._curv = curv
        self.n = int(n)
        self._misfit = misfit
        self._lam_w = tuple(float(v) for v in lam_w)
        self._lam_b = tuple(float(v) for v in lam_b)
        self._delta_y = float(delta_y)
        self.kfac_bias = kfac_bias
        self.info = dict(info or {})
        self.chunk_size = chunk_size
        self._fac = None

    # ------------------------------------------------------------------ evidence
    def log_likelihood(self):
        """``log p(y | θ*)`` on the training data at the current noise variance (0-d array)."""
        if self.likelihood == "gaussian":
            dy = self._delta_y
            return -self._misfit / (2 * dy) - 0.5 * self.n * self.num_outputs * math.log(2 * math.pi * dy)
        return -self._misfit

    def _scatter_terms(self):
        """Per active layer: (Σ θ_w², Σ θ_b², #w, #b) as host floats."""
        out = {}
        xp = self.xp
        for l in self.layers:
            W = self.weights[l]
            out[l] = (_float(xp.sum(W[:, :-1] ** 2)), _float(xp.sum(W[:, -1] ** 2)),
                      int(W.shape[0]) * (int(W.shape[1]) - 1), int(W.shape[0]))
        return out

    def log_marginal_likelihood(self, prior_prec=None, sigma_noise=None, *, delta_y=None):
        """Laplace approximation of the log evidence (MATH.md §D.4).

        .. math::

            \\log p(y) \\approx \\log p(y\\mid\\theta^*) - \\tfrac12 \\theta^{*\\top}\\Lambda\\theta^*
            + \\tfrac12 \\log|\\Lambda| - \\tfrac12 \\log|P|

        over the active parameters (the ``2π`` factors cancel). ``log|P|`` follows the structure
        (block-diagonal structures decompose it over blocks).

        Parameters
        ----------
        prior_prec : None, float or per-layer sequence (floats or ``(λ_W, λ_b)`` pairs)
            If given, **replaces** the current prior precision (as in laplace-torch).
        sigma_noise : float, optional
            Gaussian only: new noise standard deviation (replaces the current one).
        delta_y : float, optional
            Gaussian only: new noise variance (alternative to ``sigma_noise``).

        Returns
        -------
        0-d array
        """
        if prior_prec is not None:
            lw, lb = C.resolve_prior(self.net, prior_prec)
            self._set_hyper(lam_w=lw, lam_b=lb)
        if sigma_noise is not None or delta_y is not None:
            if self.likelihood != "gaussian":
                raise ValueError("sigma_noise/delta_y can only be changed for the gaussian likelihood")
            self._set_hyper(delta_y=C.resolve_noise(self.net, "gaussian", delta_y, sigma_noise))
        xp = self.xp
        lml = self.log_likelihood()
        for l in self.layers:
            lam = self._lam(l)
            W = self.weights[l]
            lml = lml - 0.5 * xp.sum(lam[None, :] * W * W) + 0.5 * W.shape[0] * xp.sum(xp.log(lam))
        return lml - 0.5 * self.log_det_posterior_precision()

    def _groups(self, prior_structure):
        if prior_structure == "scalar":
            return [[(l, p) for l in self.layers for p in ("w", "b")]]
        if prior_structure == "layerwise":
            return [[(l, p)] for l in self.layers for p in ("w", "b")]
        raise ValueError(f"prior_structure must be 'scalar' or 'layerwise', got {prior_structure!r}")

    def optimize_prior_precision(self, method: str = "marglik", prior_structure: str = "scalar", *,
                                 optimize_noise: Optional[bool] = None, max_iter: int = 200,
                                 tol: float = 1e-8, init_prior_prec=None, verbose: bool = False):
        """Tune the prior precision (and, for regression, the noise variance) by the evidence.

        Maximises :meth:`log_marginal_likelihood` at the fixed mode ``θ*`` over the log
        hyperparameters. Its gradient is analytic: for a group ``g`` of parameters sharing ``λ_g``,

        .. math::

            \\frac{\\partial \\log p(y)}{\\partial \\log\\lambda_g}
              = \\tfrac12 |g| - \\tfrac12\\lambda_g\\lVert\\theta^*_g\\rVert^2
                - \\tfrac12 \\lambda_g \\operatorname{tr}\\Sigma_{gg},\\qquad
            \\frac{\\partial \\log p(y)}{\\partial \\log\\Delta_y}
              = \\frac{\\mathrm{SSE}}{2\\Delta_y} - \\frac{nC}{2} + \\tfrac12\\gamma,

        with ``γ = P − Σ_g λ_g tr Σ_gg`` the effective number of parameters and ``Σ = P^{-1}`` in the
        chosen structure (its diagonal, :meth:`marginal_variance`).

        Parameters
        ----------
        method : {"marglik", "mackay"}
            ``"marglik"``: L-BFGS-B (scipy, on the host: a vector of at most ``2L + 1`` numbers)
            with the analytic gradient; it only accepts ascent steps, so the evidence never
            decreases. ``"mackay"``: MacKay's fixed point ``λ_g ← γ_g/‖θ*_g‖²``,
            ``Δ_y ← SSE/(nC − γ)`` with ``γ_g = |g| − λ_g tr Σ_gg``.
        prior_structure : {"scalar", "layerwise"}
            One ``λ`` for all active parameters, or one per weight matrix and one per bias vector
            of each active layer (laplace-torch's per-parameter-tensor "layerwise").
        optimize_noise : bool, optional
            Also tune ``Δ_y``; default True for the gaussian likelihood (ignored otherwise).
        max_iter : int
        tol : float
            Convergence tolerance (projected gradient for L-BFGS; relative change for MacKay).
        init_prior_prec : float, optional
            Starting ``λ`` for every group (default: the current values; geometric mean for
            "scalar").
        verbose : bool

        Returns
        -------
        self
            Updated in place (``prior_precision``, ``delta_y``), with ``info["prior_optimization"]``.
        """
        if method not in ("marglik", "mackay"):
            raise ValueError(f"method must be 'marglik' or 'mackay', got {method!r}")
        groups = self._groups(prior_structure)
        max_iter = C.positive_int("max_iter", max_iter)
        tol = C.positive("tol", tol)
        noise = (self.likelihood == "gaussian") if optimize_noise is None else bool(optimize_noise)
        if noise and self.likelihood != "gaussian":
            raise ValueError("optimize_noise=True needs the gaussian likelihood")
        sc = self._scatter_terms()
        lam = {(l, "w"): self._lam_w[l] for l in self.layers}
        lam.update({(l, "b"): self._lam_b[l] for l in self.layers})
        start = []
        for g in groups:
            if init_prior_prec is not None:
                start.append(math.log(C.positive("init_prior_prec", init_prior_prec)))
            else:
                cnt = [sc[l][2] if p == "w" else sc[l][3] for l, p in g]
                start.append(sum(c * math.log(lam[m]) for c, m in zip(cnt, g)) / sum(cnt))
        if noise:
            start.append(math.log(self._delta_y))
        lml0 = _float(self.log_marginal_likelihood())
        Pn = self.num_params
        nC = self.n * self.num_outputs

        def apply(v):
            lw, lb = list(self._lam_w), list(self._lam_b)
            for gi, g in enumerate(groups):
                for l, p in g:
                    (lw if p == "w" else lb)[l] = math.exp(v[gi])
            self._set_hyper(lam_w=lw, lam_b=lb, delta_y=math.exp(v[-1]) if noise else None)

        def stats():
            mv = self.marginal_variance()
            xp = self.xp
            tr = {}
            for l in self.layers:
                tr[(l, "w")] = _float(xp.sum(mv[l][:, :-1]))
                tr[(l, "b")] = _float(xp.sum(mv[l][:, -1]))
            return tr

        def per_group(v, tr):
            """``(λ_g, |g|, ‖θ*_g‖², tr Σ_gg)`` of each prior group at the log precisions ``v``."""
            for gi, grp in enumerate(groups):
                yield (gi, math.exp(v[gi]), sum(sc[l][2] if p == "w" else sc[l][3] for l, p in grp),
                       sum(sc[l][0] if p == "w" else sc[l][1] for l, p in grp), sum(tr[m] for m in grp))

        def value_grad(v):
            apply(v)
            try:
                val = _float(self.log_marginal_likelihood())
                tr = stats()
            except np.linalg.LinAlgError:
                return math.inf, np.zeros_like(v)
            if not math.isfinite(val):
                return math.inf, np.zeros_like(v)
            g = np.zeros_like(v)
            lamtr = 0.0
            for gi, lg, cnt, th2, t in per_group(v, tr):
                g[gi] = 0.5 * cnt - 0.5 * lg * th2 - 0.5 * lg * t
                lamtr += lg * t
            if noise:
                sse = _float(self._misfit)
                g[-1] = sse / (2 * self._delta_y) - 0.5 * nC + 0.5 * (Pn - lamtr)
            return -val, -g

        v = np.asarray(start, dtype=np.float64)
        if method == "marglik":
            lo, hi = math.log(1e-12), math.log(1e12)
            res = minimize(value_grad, v, jac=True, method="L-BFGS-B", bounds=[(lo, hi)] * len(v),
                           options=dict(maxiter=max_iter, gtol=tol, ftol=tol * 1e-3))
            v_best = res.x
            nit, conv = int(res.nit), bool(res.success)
        else:
            conv, nit = False, 0
            for nit in range(1, max_iter + 1):
                apply(v)
                tr = stats()
                newv = v.copy()
                lamtr = 0.0
                for gi, lg, cnt, th2, t in per_group(v, tr):
                    gamma = cnt - lg * t
                    lamtr += lg * t
                    if th2 > 0 and gamma > 0:
                        newv[gi] = math.log(gamma / th2)
                if noise:
                    gamma_tot = Pn - lamtr
                    sse = _float(self._misfit)
                    if nC - gamma_tot > 0 and sse > 0:
                        newv[-1] = math.log(sse / (nC - gamma_tot))
                newv = np.clip(newv, math.log(1e-12), math.log(1e12))
                if np.max(np.abs(newv - v)) < tol:
                    v = newv
                    conv = True
                    break
                v = newv
            v_best = v
        apply(v_best)
        lml1 = _float(self.log_marginal_likelihood())
        if method == "marglik" and lml1 < lml0:   # never worse than the start (safety net)
            apply(np.asarray(start))
            lml1 = lml0
        self.info["prior_optimization"] = dict(method=method, prior_structure=prior_structure,
                                               num_iter=nit, converged=conv, log_marglik_before=lml0,
                                               log_marglik_after=lml1)
        if verbose:
            print(f"[blockbayes.laplace] {method}: log marglik {lml0:.6g} -> {lml1:.6g}; "
                  f"prior {self.prior_precision}; delta_y {self._delta_y:.4g}")
        return self

    # ------------------------------------------------------------------ sampling
    def sample(self, num_samples: Optional[int] = None, *, seed=None, **deprecated) -> tuple:
        """Draws ``θ ~ N(θ*, P^{-1})`` of all layers (inactive layers repeat the mode).

        Parameters
        ----------
        num_samples : int, optional
            Number of draws (default :attr:`default_num_samples`, 100; ``n=`` is the deprecated spelling).
        seed : None, int, SeedSequence or key

        Returns
        -------
        tuple of arrays
            Per layer ``(num_samples, d_{l+1}, d_l + 1)``, bias last.
        """
        n = renamed_keywords("LaplaceResult.sample", deprecated, {"n": "num_samples"}).get("num_samples", num_samples)
        n = C.positive_int("num_samples", self.default_num_samples if n is None else n)
        xp = self.xp
        keys = bbr.split(bbr.key(seed), len(self.layers))
        E = {}
        for key, l in zip(keys, self.layers):
            d, k = self._shape(l)
            z = bbr.normal(key, (n, d, k), like=self.weights[0])
            E[l] = xp.asarray(z, dtype=self.dtype, device=self.device)
        dev = self._cov_sqrt_apply(E)
        out = []
        for l, W in enumerate(self.weights):
            if l in dev:
                out.append(W[None, :, :] + dev[l])
            else:
                out.append(xp.broadcast_to(W[None, :, :], (n,) + tuple(W.shape)) + 0)
        return tuple(out)

    # ------------------------------------------------------------------ prediction
    def _chunk(self, m, per_ex):
        return auto_chunk(m, per_ex, self.chunk_size)

    def predict_f(self, X_new, *, full_cov: bool = True):
        """Linearised (GLM) predictive of the network output ``f(x) = F(x; θ)``.

        ``f(x_*) ≈ N(F(x_*; θ*), J_* Σ J_*ᵀ)`` with ``J_* = ∂F(x_*)/∂θ`` (MATH.md §D.4), computed per
        structure without materialising ``J_*`` (except for ``"full"``, chunked):

        * ``diag``/``block``: ``Σ_{l,i} g_{*,li} (h̃_*ᵀ Σ_{l,i} h̃_*) g_{*,li}ᵀ`` with ``g = ∂F/∂a``;
        * ``kfac``: the same in the Kronecker eigenbasis;
        * ``full``: ``‖R^{-1} J_*ᵀ‖²`` with ``P = RRᵀ``.

        Parameters
        ----------
        X_new : array, shape (m, d_in)
        full_cov : bool
            Return the ``(m, C, C)`` output covariance (else its diagonal ``(m, C)``).

        Returns
        -------
        mean : array, shape (m, C)
        cov : array, shape (m, C, C) or (m, C)
        """
        X_new = self._prepare_X(X_new)
        xp = self.xp
        m = X_new.shape[0]
        Cn = self.num_outputs
        Pn = self.num_params
        widths = self.net.widths
        per_ex = Cn * sum(widths) + (Pn * Cn if self.structure == "full" else 0) + max(
            self._shape(l)[0] * self._shape(l)[1] for l in self.layers)
        means, covs = [], []
        for s, e in chunks(m, self._chunk(m, per_ex)):
            F, V = self._glm_chunk(X_new[s:e, :])
            means.append(F)
            covs.append(V)
        F = xp.concat(means, axis=0) if len(means) > 1 else means[0]
        V = xp.concat(covs, axis=0) if len(covs) > 1 else covs[0]
        V = (V + xp.matrix_transpose(V)) / 2
        if not full_cov:
            V = xp.linalg.diagonal(V)
        return F, V

    def _check_pred(self, kind, link):
        if kind not in PRED_TYPES:
            raise ValueError(f"kind (pred_type) must be one of {PRED_TYPES}, got {kind!r}")
        if link not in LINKS:
            raise ValueError(f"link must be one of {LINKS}, got {link!r}")
        if kind == "nn" and link != "mc":
            raise ValueError("kind='nn' (pred_type) only supports link='mc'")

    def _nn_outputs(self, X_new, num_samples, seed):
        """Network outputs under posterior draws, shape ``(S, m, C)``."""
        draws = self.sample(num_samples, seed=seed)
        return forward(self.net, draws, X_new)

    def _noise_vector(self, S):
        xp = self.xp
        return xp.full((S,), self._delta_y, dtype=self.dtype, device=self.device)

    def predict(self, X_new, *, kind: str = "glm", link=None, num_samples: Optional[int] = None, seed=0,
                include_noise: bool = True, full_cov: bool = False, **deprecated):
        """Posterior predictive mean and variance of the observation ``y``.

        Regression (gaussian): ``kind="glm"`` gives ``mean = F(x; θ*)`` and
        ``var = diag(J Σ Jᵀ) + Δ_y`` (:meth:`predict_f`); ``kind="nn"`` samples
        ``θ_s ~ N(θ*, Σ)`` and returns the sample mean and variance of ``F(x; θ_s)`` (plus ``Δ_y``).

        Classification: the moments of the one-hot label, ``mean = p`` (:meth:`predict_proba` with
        ``link``, default ``"probit"`` for GLM and ``"mc"`` for NN) and ``var = p(1 − p)``; for
        ``"bernoulli"`` one column, ``p = P(y = 1)``. The latent logits' moments are
        :meth:`predict_f`.

        Parameters
        ----------
        X_new : array, shape (m, d_in)
        kind : {"glm", "nn"}
            The linearised (GLM) or the sampled-network (NN) predictive (``pred_type=`` is the
            deprecated laplace-torch spelling).
        link : {None, "probit", "mc"}
            Classification only (see :meth:`predict_proba`).
        num_samples : int, optional
            Monte Carlo draws (``kind="nn"`` or ``link="mc"``; default :attr:`default_num_samples`, 100;
            ``n_samples=`` is deprecated).
        seed : None, int, SeedSequence or key
            Default 0 (reproducible predictions, the common convention).
        include_noise : bool
            Add the observation noise ``Δ_y`` (regression only).
        full_cov : bool
            Regression only: return ``(m, C, C)`` output covariances instead of variances.

        Returns
        -------
        mean : array, shape (m, C)
        var : array, shape (m, C) (or (m, C, C) with ``full_cov``)
        """
        ren = renamed_keywords("LaplaceResult.predict", deprecated, _ALIASES)
        kind, num_samples = ren.get("kind", kind), ren.get("num_samples", num_samples)
        num_samples = self.default_num_samples if num_samples is None else num_samples
        xp = self.xp
        if self.likelihood != "gaussian":
            if full_cov:
                raise ValueError("full_cov is only available for regression; use predict_f for logits")
            if link is None:
                link = "probit" if kind == "glm" else "mc"
            return self._label_moments(self.predict_proba(X_new, kind=kind, link=link, num_samples=num_samples,
                                                          seed=seed))
        if link is not None:
            raise ValueError("link only applies to classification likelihoods")
        self._check_pred(kind, "probit" if kind == "glm" else "mc")
        X_new = self._prepare_X(X_new)
        Cn = self.num_outputs
        noise = self._delta_y if include_noise else 0.0
        if kind == "glm":
            F, V = self.predict_f(X_new, full_cov=True)
        else:
            Fs = self._nn_outputs(X_new, C.positive_int("num_samples", num_samples), seed)
            F = xp.mean(Fs, axis=0)
            D = Fs - F[None, ...]
            V = xp.mean(D[:, :, :, None] * D[:, :, None, :], axis=0)
        eye = xp.eye(Cn, dtype=self.dtype, device=self.device)
        V = V + noise * eye[None, :, :]
        return (F, V) if full_cov else (F, xp.linalg.diagonal(V))

    def predict_proba(self, X_new, *, kind: str = "glm", link=None, num_samples: Optional[int] = None,
                      seed=0, **deprecated):
        """Posterior predictive class probabilities.

        ``link`` defaults to ``"probit"`` for GLM and ``"mc"`` for NN.
        ``link="probit"`` (GLM only): ``softmax(μ / √(1 + π/8 · diag V))`` (categorical) or
        ``σ(μ / √(1 + π v/8))`` (bernoulli), with ``(μ, V)`` from :meth:`predict_f`
        (:func:`blockbayes.predictive.probit_approx_probs`).
        ``link="mc"``: average of ``softmax``/``σ`` over ``num_samples`` draws of the logits, from
        ``N(μ, V)`` (``kind="glm"``, Cholesky of ``V``) or from the network under weight
        draws (``kind="nn"``).

        Returns
        -------
        array, shape (m, C)
            Rows sum to one. For ``"bernoulli"`` ``C = 2``: columns ``(P(y=0), P(y=1))``.
        """
        ren = renamed_keywords("LaplaceResult.predict_proba", deprecated, _ALIASES)
        kind, num_samples = ren.get("kind", kind), ren.get("num_samples", num_samples)
        num_samples = self.default_num_samples if num_samples is None else num_samples
        self._require_classifier()   # NotAClassifierError (a ValueError) for regression
        if link is None:
            link = "probit" if kind == "glm" else "mc"
        self._check_pred(kind, link)
        xp = self.xp
        X_new = self._prepare_X(X_new)
        if kind == "nn":
            Fs = self._nn_outputs(X_new, C.positive_int("num_samples", num_samples), seed)
            return xp.mean(P.class_probs(self.likelihood, Fs), axis=0)
        mu, V = self.predict_f(X_new, full_cov=True)
        if link == "probit":
            return P.probit_approx_probs(self.likelihood, mu, xp.linalg.diagonal(V))
        S = C.positive_int("num_samples", num_samples)
        Cn = self.num_outputs
        eye = xp.eye(Cn, dtype=self.dtype, device=self.device)
        scale = xp.max(xp.linalg.diagonal(V), axis=1)
        jitter = (1e-10 * scale + 1e-300 if self.dtype == xp.float64 else 1e-6 * scale + 1e-30)
        Lc = cholesky(V + jitter[:, None, None] * eye[None, :, :])
        z = xp.asarray(bbr.normal(bbr.key(seed), (S, mu.shape[0], Cn), like=mu), dtype=self.dtype, device=self.device)
        Fs = mu[None, :, :] + xp.squeeze(xp.matmul(Lc[None, ...], z[..., None]), axis=-1)
        return xp.mean(P.class_probs(self.likelihood, Fs), axis=0)

    def __call__(self, X_new, pred_type: str = "glm", link_approx: str = "probit", n_samples: int = 100,
                 seed=0):
        """laplace-torch style (its argument names): probabilities for classification, ``(mean, f_var)``
        for regression (``f_var`` **without** the noise, as laplace-torch returns it)."""
        if self.likelihood == "gaussian":
            return self.predict(X_new, kind=pred_type, num_samples=n_samples, seed=seed, include_noise=False)
        return self.predict_proba(X_new, kind=pred_type, link=link_approx, num_samples=n_samples, seed=seed)

    def log_predictive_density(self, X_new, y_new, *, reduce=True, kind: str = "glm",
                               link=None, num_samples: Optional[int] = None, seed=0, **deprecated):
        """Log posterior predictive density of test targets.

        Regression, ``"glm"``: ``log N(y; μ, J Σ Jᵀ + Δ_y I)`` (full ``C×C`` covariance, by Cholesky).
        Regression, ``"nn"``: ``log (1/S) Σ_s N(y; F(x; θ_s), Δ_y I)`` (logsumexp,
        :func:`blockbayes.predictive.mixture_log_density`).
        Classification: ``log p(y | x)`` from :meth:`predict_proba` (``link`` as there).

        Parameters
        ----------
        X_new : array, shape (m, d_in)
        y_new : array
            Targets as for training (regression ``(m,)``/``(m, C)``; integer labels otherwise).
        reduce : bool or {"mean", "sum", "none"}
            Return the mean over points (default, the "test log-likelihood") or per point ``(m,)``.

        Returns
        -------
        array, shape () or (m,)
        """
        ren = renamed_keywords("LaplaceResult.log_predictive_density", deprecated, _ALIASES)
        kind, num_samples = ren.get("kind", kind), ren.get("num_samples", num_samples)
        num_samples = self.default_num_samples if num_samples is None else num_samples
        xp = self.xp
        X_new = self._prepare_X(X_new)
        if not hasattr(y_new, "shape"):
            raise TypeError("y_new must be an array")
        y_new = C.as_namespace_of(y_new, X_new)
        Y = C.encode_targets(self.net, self.likelihood, X_new, y_new, name="y_new")
        Cn = self.num_outputs
        if self.likelihood == "gaussian":
            if kind == "glm":
                self._check_pred(kind, "probit" if link is None else link)
                mu, V = self.predict(X_new, kind="glm", full_cov=True)
                Lc = cholesky(V)
                r = solve_triangular(Lc, (Y - mu)[:, :, None], lower=True)[..., 0]
                lpd = (-0.5 * xp.sum(r * r, axis=1) - xp.sum(xp.log(xp.linalg.diagonal(Lc)), axis=1)
                       - 0.5 * Cn * math.log(2 * math.pi))
            else:
                self._check_pred(kind, "mc")
                S = C.positive_int("num_samples", num_samples)
                Fs = self._nn_outputs(X_new, S, seed)
                lpd = P.mixture_log_density([P.gaussian_log_density(Y, Fs, self._noise_vector(S))])
        else:
            p = self.predict_proba(X_new, kind=kind, link=link, num_samples=num_samples, seed=seed)
            if self.likelihood == "bernoulli":
                onehot = xp.concat([1.0 - Y, Y], axis=1)
            else:
                onehot = Y
            tiny = xp.finfo(self.dtype).smallest_normal
            lpd = xp.log(xp.maximum(xp.sum(p * onehot, axis=1), xp.asarray(tiny, dtype=self.dtype, device=self.device)))
        return P.reduce_points(lpd, reduce)

    # ------------------------------------------------------------------ host copy
    def to_numpy(self) -> "LaplaceResult":
        """A copy with every array on the host as NumPy (hyperparameters and info kept)."""
        def conv(obj):
            if isinstance(obj, dict):
                return {k: conv(v) for k, v in obj.items()}
            if isinstance(obj, (tuple, list)):
                return type(obj)(conv(v) for v in obj)
            if hasattr(obj, "shape") and hasattr(obj, "dtype"):
                return host_copy(obj)
            return obj

        curv = {k: v for k, v in self._curv.items() if not k.startswith("_")}
        return LaplaceResult(net=self.net, likelihood=self.likelihood, structure=self.structure,
                             subset=self.subset, layers=self.layers, weights=conv(self.weights),
                             curv=conv(curv), n=self.n, misfit=conv(self._misfit), lam_w=self._lam_w,
                             lam_b=self._lam_b, delta_y=self._delta_y, kfac_bias=self.kfac_bias,
                             info=dict(self.info), chunk_size=self.chunk_size)

    # ------------------------------------------------------------------ disk / ArviZ
    def _anchor(self):
        return self.weights[0]

    def _payload(self):
        h = self.to_numpy()
        arrays = {f"weights_{l}": w for l, w in enumerate(h.weights)}
        curv_layout = {}
        for k, v in h._curv.items():
            if isinstance(v, dict):
                curv_layout[k] = sorted(int(l) for l in v)
                for l, a in v.items():
                    arrays[f"curv_{k}_{int(l)}"] = a
            else:
                curv_layout[k] = None
                arrays[f"curv_{k}"] = v
        arrays["misfit"] = h._misfit
        meta = dict(likelihood=self.likelihood, structure=self.structure, subset=self.subset,
                    layers=list(self.layers), n=self.n, lam_w=list(self._lam_w), lam_b=list(self._lam_b),
                    delta_y=self._delta_y, kfac_bias=self.kfac_bias, chunk_size=self.chunk_size,
                    curv=curv_layout, info=jsonable(self.info))
        return arrays, meta

    @classmethod
    def _from_file(cls, f, meta, mv, path):
        net = net_from_dict(meta["net"])
        curv = {}
        for k, ls in meta["curv"].items():
            curv[k] = mv(f[f"curv_{k}"]) if ls is None else {int(l): mv(f[f"curv_{k}_{int(l)}"]) for l in ls}
        return cls(net=net, likelihood=meta["likelihood"], structure=meta["structure"], subset=meta["subset"],
                   layers=meta["layers"], weights=tuple(mv(f[f"weights_{l}"]) for l in range(net.num_layers)),
                   curv=curv, n=meta["n"], misfit=mv(f["misfit"]), lam_w=meta["lam_w"], lam_b=meta["lam_b"],
                   delta_y=meta["delta_y"], kfac_bias=meta["kfac_bias"], info=meta.get("info", {}),
                   chunk_size=meta.get("chunk_size"))

    def _arviz_draws(self, num_samples, seed):
        W = self.sample(num_samples, seed=seed)
        return tuple(w[None, ...] for w in W), self._noise_vector(num_samples)[None, :], {}, {}
