"""Result objects of the sample-based families: predictions, log predictive density, save/load.

:class:`GibbsResult` holds weight samples of ``C`` chains × ``S`` kept sweeps, per layer of shape
``(C, S, d_{l+1}, d_l + 1)`` (bias last), with each sample's own output-noise variance ``Δ_y``.
All methods run on the samples' namespace/device and return arrays there.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ._backend import backend_name, device_of, namespace, resolve_device, to_device, to_numpy
from ._backend import random as bbr
from .model import MLP, activate, affine

__all__ = ["GibbsResult", "load", "net_to_dict", "net_from_dict"]


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


def _logsumexp_update(xp, acc, new):
    """Running ``log(exp(acc) + sum(exp(new), axis=0))``; ``acc`` may be ``None``."""
    m = xp.max(new, axis=0)
    if acc is not None:
        m = xp.maximum(m, acc)
    s = xp.sum(xp.exp(new - m), axis=0)
    if acc is not None:
        s = s + xp.exp(acc - m)
    return m + xp.log(s)


@dataclass
class GibbsResult:
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

    net: MLP
    weights: tuple
    delta_y: Any
    lam_w: Any
    lam_b: Any
    log_joint: Optional[Any] = None
    final_state: Optional[Any] = None
    config: dict = field(default_factory=dict)
    probe: Optional[Any] = None

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
    @property
    def num_chains(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def num_samples(self) -> int:
        return int(self.weights[0].shape[1])

    @property
    def xp(self):
        return namespace(self.weights[0])

    def flat_weights(self) -> tuple:
        """Weights with chains and samples merged: per layer ``(C·S, d_{l+1}, d_l + 1)``."""
        xp = self.xp
        return tuple(xp.reshape(W, (-1,) + tuple(W.shape[2:])) for W in self.weights)

    def sample(self, num: Optional[int] = None, *, seed=None) -> tuple:
        """Stored posterior samples of the weights, per layer ``(num, d_{l+1}, d_l + 1)``.

        ``num=None`` returns all ``C·S``; otherwise ``num`` of them chosen uniformly without
        replacement (reproducible with ``seed``).
        """
        flat = self.flat_weights()
        total = int(flat[0].shape[0])
        if num is None:
            return flat
        if not isinstance(num, int) or not 1 <= num <= total:
            raise ValueError(f"num must be an int in [1, {total}], got {num!r}")
        idx = bbr.choice(bbr.key(seed), total, num)
        xp = self.xp
        idx_x = xp.asarray(idx, device=device_of(flat[0]))
        return tuple(xp.take(W, idx_x, axis=0) for W in flat)

    def _prepare_X(self, X_new):
        xp = self.xp
        if not hasattr(X_new, "shape"):
            raise TypeError("X_new must be an array")
        if namespace(X_new) is not xp:
            name = backend_name(xp)
            if name == "cupy":
                X_new = to_device(X_new, "cuda", self.weights[0].device.id)
            elif name == "numpy":
                X_new = to_numpy(X_new)
            else:
                X_new = xp.asarray(to_numpy(X_new), device=device_of(self.weights[0]))
        if not xp.isdtype(X_new.dtype, "real floating"):
            raise TypeError(f"X_new must be a float array, got dtype {X_new.dtype}")
        if X_new.ndim != 2 or X_new.shape[1] != self.net.d_in:
            raise ValueError(f"X_new must have shape (n, {self.net.d_in}), got {tuple(X_new.shape)}")
        if not bool(xp.all(xp.isfinite(X_new))):
            raise ValueError("X_new contains NaN or infinite values")
        return xp.astype(X_new, self.weights[0].dtype)

    def _forward_chunks(self, X_new, chunk, noise_key=None):
        """Yield ``(F, delta_y)`` for chunks of samples: ``F`` ``(s, n, d_out)``, ``delta_y`` ``(s,)``.

        With ``noise_key`` the hidden layers get the model's noise (generative predictive).
        """
        xp = self.xp
        net = self.net
        flat = self.flat_weights()
        dy = xp.reshape(self.delta_y, (-1,))
        total = int(flat[0].shape[0])
        keys = bbr.split(noise_key, max(1, math.ceil(total / chunk))) if noise_key is not None else None
        for j, start in enumerate(range(0, total, chunk)):
            stop = min(start + chunk, total)
            H = X_new
            lkeys = bbr.split(keys[j], 2 * net.num_layers) if keys is not None else None
            for l, W in enumerate(flat):
                A = affine(H, W[start:stop, ...])
                if l < net.num_layers - 1:
                    if lkeys is not None:
                        A = A + math.sqrt(net.delta_z[l]) * bbr.normal(lkeys[2 * l], A.shape, like=A)
                    H = activate(xp, A, net.activation, net.slope)
                    if lkeys is not None:
                        H = H + math.sqrt(net.delta_x[l]) * bbr.normal(lkeys[2 * l + 1], H.shape, like=H)
                else:
                    H = A
            yield H, dy[start:stop]

    def predict_samples(self, X_new, *, chunk: Optional[int] = None):
        """Network outputs of every sample, shape ``(C, S, n, d_out)`` (noise-free forward pass).

        ``chunk``: samples per forward batch (default all at once; memory ``chunk · n · max width``).
        """
        X_new = self._prepare_X(X_new)
        xp = self.xp
        total = max(1, self.num_chains * self.num_samples)
        outs = [F for F, _ in self._forward_chunks(X_new, chunk=total if chunk is None else max(1, int(chunk)))]
        F = outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)
        return xp.reshape(F, (self.num_chains, self.num_samples) + tuple(F.shape[1:]))

    def predict(self, X_new, *, kind: str = "network", seed=None, chunk: int = 256):
        """Posterior predictive mean and variance at ``X_new``.

        ``mean = (1/S) Σ_s f_s(x)`` and ``var = (1/S) Σ_s (f_s(x)² + Δ_y^{(s)}) − mean²`` over all
        ``S = C·num_samples`` samples (the mixture's moments).

        Parameters
        ----------
        X_new : array, shape (n, d_in)
        kind : {"network", "generative"}
            ``"network"``: ``f_s`` is the noise-free network with sample ``s``'s weights (what
            Piccioli et al. report). ``"generative"``: the noisy network's own predictive, one
            draw of the hidden-layer noise ``Δ_Z, Δ_X`` per sample (needs ``seed`` for
            reproducibility; adds the intermediate-noise variance, MATH.md §A.0).
        chunk : int
            Samples per forward batch (memory ``chunk · n · max width``).

        Returns
        -------
        mean, var : arrays, shape (n, d_out)
        """
        if kind not in ("network", "generative"):
            raise ValueError(f"kind must be 'network' or 'generative', got {kind!r}")
        X_new = self._prepare_X(X_new)
        xp = self.xp
        noise_key = bbr.key(seed) if kind == "generative" else None
        count = 0
        mean = m2 = None
        dsum = 0.0
        for F, dy in self._forward_chunks(X_new, chunk, noise_key):
            s = F.shape[0]
            cm = xp.mean(F, axis=0)
            cm2 = xp.sum((F - cm) ** 2, axis=0)
            if mean is None:
                mean, m2 = cm, cm2
            else:
                tot = count + s
                delta = cm - mean
                mean = mean + delta * (s / tot)
                m2 = m2 + cm2 + delta * delta * (count * s / tot)
            count += s
            dsum = dsum + xp.sum(dy)
        var = m2 / count + dsum / count
        return mean, var

    def log_predictive_density(self, X_new, y_new, *, reduce: bool = True, kind: str = "network",
                               seed=None, chunk: int = 256):
        """Log posterior predictive density of test targets.

        ``lpd_i = log (1/S) Σ_s N(y_i; f_s(x_i), Δ_y^{(s)} I)`` (a logsumexp over samples), and the
        mean over points when ``reduce`` (the UCI "test log-likelihood" convention, in the units
        of ``y``; subtract ``log σ_y`` to undo a standardisation of the targets).

        Returns
        -------
        array, shape () if ``reduce`` else (n,)
        """
        X_new = self._prepare_X(X_new)
        xp = self.xp
        if not hasattr(y_new, "shape"):
            raise TypeError("y_new must be an array")
        if self.is_classifier:
            return self._lpd_labels(X_new, y_new, reduce, chunk, nodes=32)
        if namespace(y_new) is not xp:
            y_new = xp.asarray(to_numpy(y_new), device=device_of(X_new))
        y_new = xp.astype(y_new, X_new.dtype)
        if y_new.ndim == 1:
            y_new = xp.reshape(y_new, (-1, 1))
        if tuple(y_new.shape) != (X_new.shape[0], self.net.d_out):
            raise ValueError(f"y_new must have shape ({X_new.shape[0]},) or ({X_new.shape[0]}, {self.net.d_out}), got {tuple(y_new.shape)}")
        if not bool(xp.all(xp.isfinite(y_new))):
            raise ValueError("y_new contains NaN or infinite values")
        if kind not in ("network", "generative"):
            raise ValueError(f"kind must be 'network' or 'generative', got {kind!r}")
        noise_key = bbr.key(seed) if kind == "generative" else None
        acc = None
        total = 0
        d = self.net.d_out
        for F, dy in self._forward_chunks(X_new, chunk, noise_key):
            R = y_new[None, ...] - F
            dyb = dy[:, None]
            lp = -0.5 * xp.sum(R * R, axis=-1) / dyb - 0.5 * d * xp.log(2 * math.pi * dyb)   # (s, n)
            acc = _logsumexp_update(xp, acc, lp)
            total += F.shape[0]
        lpd = acc - math.log(total)
        return xp.mean(lpd) if reduce else lpd

    @property
    def is_classifier(self) -> bool:
        return self.net.likelihood != "gaussian"

    @property
    def num_classes(self) -> int:
        return 2 if self.net.likelihood == "probit" else self.net.d_out

    def _require_classifier(self):
        if not self.is_classifier:
            raise ValueError(f"this net has likelihood={self.net.likelihood!r} (regression): "
                             "use predict / log_predictive_density with real targets")

    def _class_probs(self, F, dy, nodes):
        """Per-sample class probabilities ``(s, n, K)`` from outputs ``F`` ``(s, n, d_out)``."""
        xp = self.xp
        from ._backend.special import gauss_hermite_normal, log_ndtr, ndtr

        if self.net.likelihood == "probit":
            return xp.concat([ndtr(-F), ndtr(F)], axis=-1)
        # p(c | a) = ∫ φ(t) Π_{c'≠c} Φ((a_c − a_c')/√Δ + t) dt, Gauss–Hermite in t
        t, w = gauss_hermite_normal(nodes)
        scale = 1.0 / xp.sqrt(dy)[:, None, None, None]
        D = (F[..., :, None] - F[..., None, :]) * scale      # (s, n, c, c')
        out = xp.zeros(F.shape, dtype=F.dtype, device=device_of(F))
        for tg, wg in zip(t, w):
            tg_arr = xp.asarray(tg, dtype=F.dtype, device=device_of(F))
            lg = xp.sum(log_ndtr(D + tg_arr), axis=-1) - log_ndtr(tg_arr)
            out = out + wg * xp.exp(lg)
        return out / xp.sum(out, axis=-1, keepdims=True)

    def predict_proba(self, X_new, *, chunk: int = 64, nodes: int = 32):
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
        acc, total = None, 0
        for F, dy in self._forward_chunks(X_new, chunk):
            p = self.xp.sum(self._class_probs(F, dy, nodes), axis=0)
            acc = p if acc is None else acc + p
            total += F.shape[0]
        return acc / total

    def _lpd_labels(self, X_new, labels, reduce, chunk, nodes):
        xp = self.xp
        from .gibbs import validate_labels

        labels = validate_labels(self.net, labels if namespace(labels) is xp else xp.asarray(to_numpy(labels), device=device_of(X_new)), X_new.shape[0])
        oh = xp.astype(labels[:, None] == xp.arange(self.num_classes, device=device_of(labels)), X_new.dtype)
        acc, total = None, 0
        tiny = xp.asarray(xp.finfo(X_new.dtype).smallest_normal, dtype=X_new.dtype, device=device_of(X_new))
        for F, dy in self._forward_chunks(X_new, chunk):
            p = xp.sum(self._class_probs(F, dy, nodes) * oh, axis=-1)      # (s, n)
            acc = _logsumexp_update(xp, acc, xp.log(xp.maximum(p, tiny)))
            total += F.shape[0]
        lpd = acc - math.log(total)
        return xp.mean(lpd) if reduce else lpd

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

    def save(self, path) -> None:
        """Save to a ``.npz`` file (samples, hyperparameters, final state, net and settings)."""
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
        meta = dict(kind="GibbsResult", format=1, net=net_to_dict(self.net), config=self.config)
        arrays["meta"] = np.asarray(json.dumps(meta))
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path, *, device=None) -> "GibbsResult":
        """Load a result saved by :meth:`save` (NumPy arrays, or moved to ``device``)."""
        from .gibbs import GibbsState

        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            if meta.get("kind") != "GibbsResult":
                raise ValueError(f"{path} does not hold a GibbsResult")
            net = net_from_dict(meta["net"])
            L = net.num_layers
            kind, index = resolve_device(device)
            mv = (lambda a: a) if kind is None else (lambda a: to_device(a, kind, index))
            weights = tuple(mv(f[f"weights_{l}"]) for l in range(L))
            st = None
            if "state_weights_0" in f.files:
                st = GibbsState(tuple(mv(f[f"state_weights_{l}"]) for l in range(L)),
                                tuple(mv(f[f"state_pre_{i}"]) for i in range(L - 1)),
                                tuple(mv(f[f"state_post_{i}"]) for i in range(L - 1)),
                                mv(f["state_lam_w"]), mv(f["state_lam_b"]), mv(f["state_delta_y"]),
                                mv(f["state_latent"]) if "state_latent" in f.files else None)
            return cls(net=net, weights=weights, delta_y=mv(f["delta_y"]), lam_w=mv(f["lam_w"]),
                       lam_b=mv(f["lam_b"]), log_joint=mv(f["log_joint"]) if "log_joint" in f.files else None,
                       final_state=st, config=meta.get("config", {}),
                       probe=mv(f["probe"]) if "probe" in f.files else None)


def load(path, *, device=None):
    """Load any blockbayes result saved with ``.save`` (:class:`GibbsResult` or a VI result)."""
    with np.load(path, allow_pickle=False) as f:
        kind = json.loads(str(f["meta"])).get("kind") if "meta" in f.files else None
    if kind == "GibbsResult":
        return GibbsResult.load(path, device=device)
    if kind == "VIResult":
        from .vi.result import load as vi_load

        return vi_load(path, device=device)
    raise ValueError(f"{path} is not a blockbayes result file (kind={kind!r})")
