"""The result of :func:`blockbayes.gibbs.run`: samples of the noisy-MLP posterior.

:class:`GibbsResult` answers the one result interface of :class:`blockbayes.posterior.Posterior`
(``predict``, ``predict_proba``, ``log_predictive_density``, ``sample``, ``to_numpy``,
``save``/``load``, ``to_arviz``) plus the Gibbs-specific :meth:`GibbsResult.summary`
(function-space R-hat/ESS), ``final_state`` (restart chains there with ``init=``) and the in-memory
``continuation`` that :func:`blockbayes.gibbs.extend` continues the chains from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from .. import predictive as P
from .._backend import device_of, to_numpy
from .._backend import random as bbr
from ..model import MLP
from ..posterior import Posterior, check_kind, net_from_dict, register_result, renamed_keywords
from .diagnostics import function_summary
from .kernel import GibbsState

__all__ = ["GibbsResult"]


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
        The chains' last state: ``init=result.final_state`` restarts chains there (with a new
        warm-up); :func:`blockbayes.gibbs.extend` continues the same chains instead.
    config : dict
        The run's settings (``wall_time_s``: seconds spent in the run, MAP starts included).
    probe : array of shape (P, d_in), or None
        Fixed probe inputs of the function-space diagnostics (:meth:`summary`).
    continuation : Continuation or None
        What :func:`blockbayes.gibbs.extend` needs to continue the chains (the sweep, the moves'
        adapted state, the RNG key; the data it ran on). In memory only: not saved, dropped by
        :meth:`to_numpy`.
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
    continuation: Optional[Any] = field(default=None, repr=False, compare=False)

    model: ClassVar[str] = "noisy"

    def __getstate__(self):
        # pickling (multiprocessing, joblib) keeps the samples; the continuation holds closures over
        # the run's data and is in-memory only, as for save() and to_numpy()
        state = dict(self.__dict__)
        state["continuation"] = None
        return state

    def summary(self, X_probe=None, *, prob=(0.05, 0.95)):
        """Function-space convergence summary in NumPyro ``print_summary`` style.

        Rows: the network output at each probe input (``X_probe``, default :attr:`probe`), then
        ``delta_y`` (if learned) and ``log_joint`` (if stored); columns mean, std, median, the
        ``prob`` quantiles, bulk ESS (``n_eff``), tail ESS, rank-normalised split R-hat and bulk
        ESS per second. ``print(result.summary())`` shows the table; see
        :func:`blockbayes.gibbs.diagnostics.function_summary`.
        """
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
        """All stored draws (``num=None``) or ``num`` of them chosen uniformly without replacement."""
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

        ``chunk``: samples per forward batch (memory ``chunk · n · max width``); default
        :func:`blockbayes.predictive.memory_chunk` (at most 256 samples and 256 MiB per batch — was all
        samples at once, 1.7 GB for 4000 samples on Naval's test split). The outputs depend on it only
        through float rounding.
        """
        X_new = self._prepare_X(X_new)
        xp = self.xp
        if chunk is None:
            chunk = P.memory_chunk(self.net, X_new)
        outs = [F for F, _ in P.forward_chunks(self.net, self.flat_weights(), X_new, chunk=chunk)]
        F = outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)
        return xp.reshape(F, (self.num_chains, self.num_samples) + tuple(F.shape[1:]))

    def predict(self, X_new, *, kind: str = "network", num_samples: Optional[int] = None, seed=0,
                chunk: int = 256, latent: bool = False):
        """Posterior predictive mean and variance at ``X_new``.

        Regression: ``mean = (1/S) Σ_s f_s(x)`` and ``var = (1/S) Σ_s (f_s(x)² + Δ_y^{(s)}) − mean²``
        over the ``S`` samples (the mixture's moments, :func:`blockbayes.predictive.mixture_moments`).
        Classifiers (the common convention of :mod:`blockbayes.posterior`): the moments of the one-hot
        label, ``(p, p(1 − p))`` with ``p`` from :meth:`predict_proba` (``"probit"``: one column,
        ``P(y = 1)``); ``latent=True`` gives instead the mixture moments above of the latent Gaussian
        output ``f_s(x) + ε``, ``ε ~ N(0, Δ_y^{(s)})`` that the probit links threshold (what this
        method returned for classifiers before the convention).

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
        seed : int, SeedSequence or key
            Default 0: predictions are reproducible.
        chunk : int
            Samples per forward batch (memory ``chunk · n · max width``).
        latent : bool
            Classifiers only: the latent output's moments instead of the label's.

        Returns
        -------
        mean, var : arrays, shape (n, d_out)
        """
        check_kind(kind)
        if self.is_classifier and not latent:
            return self._label_moments(self.predict_proba(X_new, num_samples=num_samples, seed=seed))
        X_new = self._prepare_X(X_new)
        W, dy = self._pick(num_samples, seed)
        noise_key = bbr.key(seed) if kind == "generative" else None
        return self._draw_predict(X_new, W, dy, noise_key=noise_key, chunk=chunk)

    def log_predictive_density(self, X_new, y_new, *, reduce=True, kind: str = "network",
                               num_samples: Optional[int] = None, seed=0, chunk: int = 256):
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

    def predict_proba(self, X_new, *, num_samples: Optional[int] = None, seed=0, chunk: int = 64,
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
