"""A gold-standard reference: NUTS (NumPyro, JAX on the CPU) on the same Bayesian MLPs as ours.

Optional engine (extra ``reference`` = ``numpyro`` + ``jax``); nothing else in the package
imports it. Two models, both with the priors of :class:`~blockbayes.MLP` (per-layer Gaussian
node rows, ``w ~ N(0, 1/λ_W)``, ``b ~ N(0, 1/λ_b)``; ``"fan_in"``: ``λ_W = λ_b = d_l``) and the
output-noise hyperprior of :class:`blockbayes.gibbs.Hyperprior`:

``noisy=False`` — the **standard** BNN (MATH.md §D.1)
    ``y = F(x; θ) + N(0, Δ_y)``; with ``learn_noise``, ``τ = 1/Δ_y ~ Gamma(a, b)`` (default
    ``Gamma(1, 1e-2)``), else ``Δ_y = net.delta_y``.

``noisy=True`` — the **noisy** network of MATH.md §A.0 at the net's ``Δ_Z, Δ_X, Δ_y``
    ``Z^l = X̃^{l-1} W̃^{l⊤} + √Δ_Z ξ``, ``X^l = f(Z^l) + √Δ_X η``, ``y = X̃^{L-1} W̃^{L⊤} + √Δ_y ε``.
    The post-activations ``X^l`` enter the next layer linearly, so they are integrated out in
    closed form: ``Z^{l+1} | Z^l ~ N(f(Z^l) W^⊤ + b, Δ_Z I + Δ_X W W^⊤)`` row-wise (and
    ``y | Z^{L-1} ~ N(f(Z^{L-1}) W^⊤ + b, Δ_y I + Δ_X W W^⊤)``). The pre-activations ``Z^l`` stay
    as latents, sampled non-centred (``Z = mean + chol(Σ) ξ``, ``ξ ~ N(0, I)``). This is exactly the
    marginal ``p(W̃, Z, y)`` of the joint that :func:`blockbayes.gibbs.run` samples, so the
    weight marginals of the two samplers must agree.

All weights are sampled non-centred (``w = ε/√λ``), which NUTS handles far better than the
centred form at these prior scales.
"""
from __future__ import annotations

import importlib.util
import math
import os
import time
from typing import NamedTuple, Optional

import numpy as np

__all__ = ["available", "nuts", "NUTSSamples", "forward_samples", "prediction_diagnostics", "PooledPredictive",
           "pooled_predictive"]


def available() -> bool:
    """Whether ``numpyro`` and ``jax`` are installed (looked up, not imported: importing JAX would
    fix its CPU thread pools before :func:`nuts` can apply its ``threads`` option)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("jax", "numpyro"))
    except (ImportError, ValueError):
        return False


def _import(threads: Optional[int] = 1):
    # XLA's CPU thread pools: one thread unless asked (must be set before jax is first imported).
    if threads is not None and "jax" not in __import__("sys").modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            os.environ["XLA_FLAGS"] = (flags + f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
                                       f" intra_op_parallelism_threads={int(threads)}").strip()
    try:
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist
        from numpyro.infer import MCMC, NUTS
    except ImportError as exc:   # pragma: no cover - exercised only without the extra
        raise ImportError("the NUTS reference needs the optional extra 'reference' "
                          "(pip install 'blockbayes[reference]': numpyro and jax)") from exc
    return jax, jnp, numpyro, dist, MCMC, NUTS


class NUTSSamples(NamedTuple):
    """Posterior draws of :func:`nuts` (host NumPy, float64).

    Attributes
    ----------
    weights : tuple of arrays
        Per layer ``(chains, draws, d_{l+1}, d_l + 1)``, bias last (the layout of
        :class:`blockbayes.gibbs.GibbsResult`).
    delta_y : array, shape (chains, draws)
    info : dict
        ``num_divergent``, ``frac_max_tree_depth`` (share of transitions that hit the maximum tree
        depth), ``mean_accept_prob``, ``mean_num_steps``, ``max_tree_depth``, ``sample_time_s``,
        ``num_warmup``, ``num_samples``, ``num_chains``, ``noisy``.
    """

    weights: tuple
    delta_y: np.ndarray
    info: dict


def _prior_scales(net):
    return [(1.0 / math.sqrt(net.lam_w[l]), 1.0 / math.sqrt(net.lam_b[l])) for l in range(net.num_layers)]


def _model_fn(net, *, noisy, learn_noise, hyperprior, jnp, numpyro, dist):
    widths = net.widths
    L = net.num_layers
    scales = _prior_scales(net)
    slope = float(getattr(net, "slope", 0.0) or 0.0)

    def act(z):
        if net.activation == "relu":
            return jnp.maximum(z, 0.0)
        if net.activation == "leaky_relu":
            return jnp.where(z >= 0, z, slope * z)
        return z

    a0, b0 = (float(v) for v in hyperprior)

    def model(X, y=None):
        n = X.shape[0]
        Ws, bs = [], []
        for l in range(L):
            d_in, d_out = widths[l], widths[l + 1]
            ew = numpyro.sample(f"ew{l}", dist.Normal(0.0, 1.0).expand([d_out, d_in]).to_event(2))
            eb = numpyro.sample(f"eb{l}", dist.Normal(0.0, 1.0).expand([d_out]).to_event(1))
            Ws.append(numpyro.deterministic(f"W{l}", ew * scales[l][0]))
            bs.append(numpyro.deterministic(f"b{l}", eb * scales[l][1]))
        if learn_noise:
            tau = numpyro.sample("tau", dist.Gamma(a0, b0))
            dy = numpyro.deterministic("delta_y", 1.0 / tau)
        else:
            dy = float(net.delta_y)
        H = X
        for l in range(L - 1):
            mean = H @ Ws[l].T + bs[l]
            if not noisy:
                H = act(mean)
                continue
            if l == 0:
                Z = mean + math.sqrt(net.delta_z[0]) * numpyro.sample(
                    f"xi{l}", dist.Normal(0.0, 1.0).expand([n, widths[l + 1]]).to_event(2))
            else:
                # X^{l} integrated out: Z^{l+1} | Z^l ~ N(f(Z^l) W^T + b, Δ_Z I + Δ_X W W^T)
                cov = net.delta_z[l] * jnp.eye(widths[l + 1]) + net.delta_x[l - 1] * Ws[l] @ Ws[l].T
                Lc = jnp.linalg.cholesky(cov)
                xi = numpyro.sample(f"xi{l}", dist.Normal(0.0, 1.0).expand([n, widths[l + 1]]).to_event(2))
                Z = mean + xi @ Lc.T
            H = act(Z)
        F = H @ Ws[L - 1].T + bs[L - 1]
        d_out = widths[-1]
        if noisy and L > 1:
            cov = dy * jnp.eye(d_out) + net.delta_x[L - 2] * Ws[L - 1] @ Ws[L - 1].T
            if d_out == 1:
                numpyro.sample("y", dist.Normal(F[:, 0], jnp.sqrt(cov[0, 0])).to_event(1), obs=y)
            else:
                numpyro.sample("y", dist.MultivariateNormal(F, scale_tril=jnp.linalg.cholesky(cov)).to_event(1), obs=y)
        else:
            sd = jnp.sqrt(dy)
            numpyro.sample("y", dist.Normal(F, sd).to_event(2), obs=y)

    return model


def nuts(net, X, y, *, noisy: bool = False, learn_noise: bool = True, hyperprior=(1.0, 1e-2),
         num_warmup: int = 1000, num_samples: int = 1000, num_chains: int = 4, thin: int = 1, seed=0,
         max_tree_depth: int = 10, target_accept: float = 0.8, dense_mass: bool = False,
         chain_method: str = "sequential", threads: Optional[int] = 1, progress: bool = False) -> NUTSSamples:
    """NUTS draws from the posterior of the (standard or noisy) Bayesian MLP ``net`` given ``X, y``.

    Parameters
    ----------
    net : MLP
        Widths, activation (``relu``, ``leaky_relu``, ``identity``), prior precisions and (noisy
        model, or fixed noise) the Δ's. Gaussian likelihood only.
    X : array, shape (n, d_in)
    y : array, shape (n,) or (n, d_out)
    noisy : bool
        The noisy network (latent pre-activations, post-activations integrated) instead of the
        standard one.
    learn_noise : bool
        ``τ = 1/Δ_y ~ Gamma(hyperprior)`` (else ``Δ_y = net.delta_y``).
    hyperprior : (float, float)
        Gamma ``(shape, rate)`` of the noise precision (default that of
        :class:`blockbayes.gibbs.Hyperprior`).
    num_warmup, num_samples, num_chains, thin : int
        Per chain: adaptation steps (step size and diagonal mass matrix), kept draws, thinning.
    seed : int
    max_tree_depth : int
        NUTS's maximum tree depth (``2^depth - 1`` leapfrog steps at most per transition).
    target_accept : float
        Dual-averaging target acceptance probability.
    dense_mass : bool
        Adapt a dense mass matrix (only sensible for small models).
    chain_method : {"sequential", "vectorized"}
    threads : int or None
        XLA CPU threads (only effective when JAX is first imported here). ``None`` leaves them.

    Returns
    -------
    NUTSSamples
    """
    if net.likelihood != "gaussian":
        raise ValueError(f"the NUTS reference supports the gaussian likelihood only, got {net.likelihood!r}")
    for name, v in (("num_warmup", num_warmup), ("num_samples", num_samples), ("num_chains", num_chains),
                    ("thin", thin), ("max_tree_depth", max_tree_depth)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if name == "num_warmup" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'num_warmup' else 'positive'} int, got {v!r}")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must lie in (0, 1), got {target_accept!r}")
    if chain_method not in ("sequential", "vectorized"):
        raise ValueError(f"chain_method must be 'sequential' or 'vectorized', got {chain_method!r}")
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != net.widths[0]:
        raise ValueError(f"X must have shape (n, {net.widths[0]}), got {X.shape}")
    d_out = net.widths[-1]
    if y.ndim == 1:
        y = y[:, None]
    if y.shape != (X.shape[0], d_out):
        raise ValueError(f"y must have shape ({X.shape[0]},) or ({X.shape[0]}, {d_out}), got {y.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise ValueError("X and y must be finite")
    jax, jnp, numpyro, dist, MCMC, NUTS = _import(threads)
    jax.config.update("jax_enable_x64", True)
    model = _model_fn(net, noisy=noisy, learn_noise=learn_noise, hyperprior=hyperprior, jnp=jnp, numpyro=numpyro,
                      dist=dist)
    kernel = NUTS(model, max_tree_depth=int(max_tree_depth), target_accept_prob=float(target_accept),
                  dense_mass=bool(dense_mass))
    mcmc = MCMC(kernel, num_warmup=int(num_warmup), num_samples=int(num_samples), num_chains=int(num_chains),
                thinning=int(thin), chain_method=chain_method, progress_bar=bool(progress))
    yy = y[:, 0] if (noisy and net.num_layers > 1 and d_out == 1) else y
    t0 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(int(np.random.SeedSequence(seed).generate_state(1)[0]) % (2 ** 31)),
             jnp.asarray(X), y=jnp.asarray(yy), extra_fields=("diverging", "num_steps", "accept_prob"))
    s = mcmc.get_samples(group_by_chain=True)
    ex = mcmc.get_extra_fields(group_by_chain=True)
    elapsed = time.perf_counter() - t0
    weights = []
    for l in range(net.num_layers):
        W = np.asarray(s[f"W{l}"], dtype=np.float64)
        b = np.asarray(s[f"b{l}"], dtype=np.float64)
        weights.append(np.concatenate([W, b[..., None]], axis=-1))
    C, S = weights[0].shape[:2]
    dy = np.asarray(s["delta_y"], dtype=np.float64) if learn_noise else np.full((C, S), float(net.delta_y))
    steps = np.asarray(ex["num_steps"])
    info = dict(num_divergent=int(np.sum(np.asarray(ex["diverging"]))),
                frac_max_tree_depth=float(np.mean(steps >= 2 ** int(max_tree_depth) - 1)),
                mean_num_steps=float(np.mean(steps)), mean_accept_prob=float(np.mean(np.asarray(ex["accept_prob"]))),
                max_tree_depth=int(max_tree_depth), sample_time_s=elapsed, num_warmup=int(num_warmup),
                num_samples=int(num_samples), num_chains=int(num_chains), noisy=bool(noisy))
    return NUTSSamples(tuple(weights), dy, info)


def forward_samples(net, weights, X, *, chunk: int = 256) -> np.ndarray:
    """Noise-free network outputs ``F(x; θ_s)`` of every draw: shape ``(chains, draws, n, d_out)``."""
    from ..model import activate

    X = np.asarray(X, dtype=np.float64)
    C, S = weights[0].shape[:2]
    out = np.empty((C, S, X.shape[0], net.widths[-1]))
    flat = [w.reshape(C * S, *w.shape[2:]) for w in weights]
    res = out.reshape(C * S, X.shape[0], net.widths[-1])
    for a in range(0, C * S, chunk):
        H = X[None]
        for l, W in enumerate(flat):
            Wc = W[a:a + chunk]
            H = np.matmul(H, np.swapaxes(Wc[:, :, :-1], 1, 2)) + Wc[:, None, :, -1]
            if l < len(flat) - 1:
                H = activate(np, H, net.activation, getattr(net, "slope", 0.0))
        res[a:a + chunk] = H
    return out


def prediction_diagnostics(F) -> dict:
    """Convergence of test predictions: rank-normalised split R-hat and bulk ESS of ``F(x_i)`` per
    test point (``F`` of shape ``(chains, draws, n)``), summarised as max / median R-hat, the share
    of points with R-hat ≤ 1.01 and ≤ 1.1, and min / median bulk ESS (:mod:`blockbayes.diagnostics`)."""
    from .. import diagnostics

    F = np.asarray(F, dtype=np.float64)
    if F.shape[0] < 2 or F.shape[1] < 4:
        return {}
    r = np.asarray(diagnostics.rhat(F), dtype=np.float64)
    e = np.asarray(diagnostics.ess_bulk(F), dtype=np.float64)
    r = r[np.isfinite(r)]
    e = e[np.isfinite(e)]
    if r.size == 0:
        return {}
    return {"rhat_pred_max": float(r.max()), "rhat_pred_median": float(np.median(r)),
            "rhat_pred_share_1.01": float(np.mean(r <= 1.01)), "rhat_pred_share_1.1": float(np.mean(r <= 1.1)),
            "ess_bulk_pred_min": float(e.min()) if e.size else None,
            "ess_bulk_pred_median": float(np.median(e)) if e.size else None}


class PooledPredictive(NamedTuple):
    """The Gaussian-mixture predictive of :func:`pooled_predictive` (the units of ``F``).

    Attributes
    ----------
    mean : array, shape (n,)
        ``μ(x_i) = (1/R) Σ_r μ_r(x_i)``, ``μ_r`` the mean of run ``r``'s draws' ``F``.
    lpd : array, shape (n,)
        ``log p(y_i) = log (1/R) Σ_r p_r(y_i)``; ``None`` when no ``y`` was given.
    run_mean : array, shape (R, n)
    run_lpd : array, shape (R, n)
        ``log p_r(y_i) = log (1/S_r) Σ_s N(y_i; F_s(x_i), Δ_y,s)`` over run ``r``'s ``S_r`` draws
        (all its chains); ``None`` without ``y``.
    """

    mean: np.ndarray
    lpd: Optional[np.ndarray]
    run_mean: np.ndarray
    run_lpd: Optional[np.ndarray]


def pooled_predictive(F_runs, delta_y_runs, y=None) -> PooledPredictive:
    """Predictive of several independent sampler runs pooled with equal weight per run.

    Run ``r`` gives draws ``(F_s(x_i), Δ_y,s)`` (noise-free network output and noise variance of
    every draw of every chain) and the per-run predictive ``p_r(y | x) = (1/S_r) Σ_s N(y; F_s(x),
    Δ_y,s)``. The pooled predictive is the equal-weight mixture ``p(y | x) = (1/R) Σ_r p_r(y | x)``;
    when every run has the same number of draws it is the mixture over all runs' draws.
    Computed with log-sum-exp (no underflow for far-off points).

    Parameters
    ----------
    F_runs : sequence of arrays, each (chains_r, draws_r, n) or (draws_r, n)
        Per run, the network outputs at the ``n`` test points (one output).
    delta_y_runs : sequence of arrays, each (chains_r, draws_r) or (draws_r,)
        Per run, the noise variance of every draw (same leading shape as its ``F``).
    y : array, shape (n,), optional
        Targets, for the log predictive densities.

    Returns
    -------
    PooledPredictive
    """
    F_runs, delta_y_runs = list(F_runs), list(delta_y_runs)
    if not F_runs or len(F_runs) != len(delta_y_runs):
        raise ValueError(f"need one delta_y per run and at least one run, got {len(F_runs)} F and "
                         f"{len(delta_y_runs)} delta_y")
    flat_F, flat_d = [], []
    for r, (F, d) in enumerate(zip(F_runs, delta_y_runs)):
        F = np.asarray(F, dtype=np.float64)
        d = np.asarray(d, dtype=np.float64)
        if F.ndim not in (2, 3) or d.shape != F.shape[:-1]:
            raise ValueError(f"run {r}: F must be (chains, draws, n) or (draws, n) and delta_y its leading "
                             f"shape, got {F.shape} and {d.shape}")
        if not (np.all(np.isfinite(F)) and np.all(np.isfinite(d)) and np.all(d > 0)):
            raise ValueError(f"run {r}: F must be finite and delta_y finite and positive")
        flat_F.append(F.reshape(-1, F.shape[-1]))
        flat_d.append(d.reshape(-1))
    n = flat_F[0].shape[1]
    if any(f.shape[1] != n for f in flat_F):
        raise ValueError(f"every run must predict the same {n} points, got {[f.shape[1] for f in flat_F]}")
    run_mean = np.stack([f.mean(axis=0) for f in flat_F])
    mean = run_mean.mean(axis=0)
    if y is None:
        return PooledPredictive(mean, None, run_mean, None)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape != (n,):
        raise ValueError(f"y must have {n} entries, got shape {y.shape}")

    from ..metrics import log_predictive_gaussian_mixture
    from ..predictive import mixture_log_density

    run_lpd = np.stack([np.asarray(log_predictive_gaussian_mixture(y, f, d[:, None], reduction="none"))
                        for f, d in zip(flat_F, flat_d)])
    return PooledPredictive(mean, mixture_log_density([run_lpd]), run_mean, run_lpd)
