"""Type-II (evidence) estimation of the noise variance and prior precisions of a MAP fit.

The joint MAP of ``(θ, log Δ_y)`` (:func:`blockbayes.laplace.map_fit` with ``learn_noise=True``)
profiles the noise as ``Δ̂_y = (SSE/2 + b)/(nC/2 + a)``: it charges no price for the parameters the
fit spends on the data, so a network that can interpolate its training set drives ``Δ̂_y`` towards
zero (measured: ``Δ̂_y ≈ 1e-4`` on Yacht, test LL −9.8). MacKay's evidence framework replaces ``nC``
by ``nC − γ``, where ``γ`` is the effective number of well-determined parameters of the Laplace
(Gauss–Newton) posterior at the mode:

.. math::

    \\gamma_g = |g| - \\lambda_g \\operatorname{tr}\\Sigma_{gg}, \\qquad \\gamma = \\sum_g \\gamma_g,
    \\qquad \\Sigma = (\\mathrm{GGN}/\\Delta_y + \\Lambda)^{-1},

    \\Delta_y \\leftarrow \\frac{\\mathrm{SSE}/2 + b}{(nC - \\gamma)/2 + a}, \\qquad
    \\lambda_g \\leftarrow \\frac{\\gamma_g}{\\lVert\\theta^*_g\\rVert^2}\\ \\ (\\text{optional}),

the stationarity conditions of the Laplace log evidence ``log p(y | Δ_y, Λ)`` (MATH.md §D.4; the
gradient :meth:`blockbayes.laplace.LaplaceResult.optimize_prior_precision` uses) plus the log
density of the Gamma(a, b) hyperprior on ``τ = 1/Δ_y`` in ``log τ`` (the parametrisation of the
joint MAP, so that ``γ = 0`` gives back exactly its profile). The weights and the
hyperparameters are updated in turn: a MAP fit at the current ``(Δ_y, Λ)`` (L-BFGS warm-started
from the previous weights), a Laplace fit at that mode (:func:`blockbayes.laplace.fit`, its
public ``marginal_variance``), one fixed-point step, until the hyperparameters stop moving.

For a linear-Gaussian model (a net without hidden layers) the Laplace evidence is exact and the
fixed point is the closed-form type-II (maximum marginal likelihood / MAP-II) estimate.
"""
from __future__ import annotations

import math

from .._backend.host import np

from .._backend import to_numpy
from ..driver import one_blas_thread
from ..inputs import prepare
from ..model import MLP
from . import _common as C
from ._mlp_grad import data_misfit
from .map import map_fit
from .standard import fit as laplace_fit

__all__ = ["evidence_fit", "evidence_step", "evidence_noise"]

_STRUCTURES = ("auto", "full", "kfac", "block", "diag")


def _auto_structure(net: MLP, structure: str) -> str:
    if structure != "auto":
        return structure
    P = sum(int(a + 1) * int(b) for a, b in zip(net.widths[:-1], net.widths[1:]))
    return "full" if P <= 2000 else "kfac"


def evidence_step(la, sse: float, *, noise_prior=(1.0, 1e-2), learn_prior: bool = False) -> dict:
    """One MacKay fixed-point update of ``Δ_y`` (and optionally the layerwise ``λ``) at a Laplace fit.

    Parameters
    ----------
    la : LaplaceResult
        A Gaussian-likelihood Laplace fit at the MAP ``θ*`` (:func:`blockbayes.laplace.fit`), with
        the current ``Δ_y`` and prior precisions.
    sse : float
        ``Σ_μ ‖y_μ − F(x_μ; θ*)‖²`` on the training data.
    noise_prior : (float, float) or None
        ``(a, b)`` of the Gamma prior on ``τ = 1/Δ_y`` (density in ``log τ``); ``None``: flat in
        ``log Δ_y`` (pure type-II maximum likelihood, ``a = b = 0``).
    learn_prior : bool
        Also update the prior precision of each weight matrix and each bias vector of the active
        layers, ``λ_g ← γ_g/‖θ*_g‖²`` (laplace-torch's "layerwise").

    Returns
    -------
    dict
        ``delta_y`` (new ``Δ_y``), ``prior_precision`` (per layer ``(λ_W, λ_b)``: new if
        ``learn_prior``, else the current), ``gamma`` (``γ`` at the *current* hyperparameters),
        ``gamma_groups`` (per layer ``(γ_W, γ_b)``), ``num_params`` and ``n_out`` (``nC``).

    Notes
    -----
    ``γ_g = |g| − λ_g tr Σ_gg`` with ``tr Σ_gg`` from ``la.marginal_variance()`` (exact for
    ``"full"``/``"block"`` structures within their blocks; the structure's approximation otherwise).
    ``Δ_y ← (SSE/2 + b)/((nC − γ)/2 + a)``. A group with ``γ_g ≤ 0`` or ``θ_g = 0`` keeps its ``λ``.
    """
    if la.likelihood != "gaussian":
        raise ValueError("evidence_step needs the gaussian likelihood")
    a, b = (0.0, 0.0) if noise_prior is None else _noise_prior(noise_prior)
    sse = float(sse)
    if not (sse >= 0 and math.isfinite(sse)):
        raise ValueError(f"sse must be finite and >= 0, got {sse!r}")
    mv = [np.asarray(to_numpy(v), dtype=np.float64) for v in la.marginal_variance()]
    Ws = [np.asarray(to_numpy(w), dtype=np.float64) for w in la.weights]
    lam = la.prior_precision
    gamma, groups, new_prior = 0.0, [], []
    for l in range(la.net.num_layers):
        lw, lb = lam[l]
        if l not in la.layers:
            groups.append((0.0, 0.0))
            new_prior.append((lw, lb))
            continue
        gw = mv[l][:, :-1].size - lw * float(np.sum(mv[l][:, :-1]))
        gb = mv[l][:, -1].size - lb * float(np.sum(mv[l][:, -1]))
        groups.append((gw, gb))
        gamma += gw + gb
        if learn_prior:
            tw, tb = float(np.sum(Ws[l][:, :-1] ** 2)), float(np.sum(Ws[l][:, -1] ** 2))
            lw = gw / tw if (gw > 0 and tw > 0) else lw
            lb = gb / tb if (gb > 0 and tb > 0) else lb
        new_prior.append((float(lw), float(lb)))
    nC = la.n * la.num_outputs
    denom = 0.5 * (nC - gamma) + a
    num = 0.5 * sse + b
    if not (denom > 0 and num > 0):
        raise ValueError(f"evidence update undefined: SSE/2 + b = {num:.3g}, (nC - γ)/2 + a = {denom:.3g}")
    return dict(delta_y=num / denom, prior_precision=tuple(new_prior), gamma=float(gamma),
                gamma_groups=tuple(groups), num_params=int(la.num_params), n_out=int(nC))


def _noise_prior(noise_prior):
    try:
        a, b = (float(v) for v in noise_prior)
    except (TypeError, ValueError):
        raise ValueError(f"noise_prior must be None or a pair (shape, rate), got {noise_prior!r}") from None
    if not (a >= 0 and b >= 0 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"noise_prior needs shape >= 0 and rate >= 0, got {noise_prior!r}")
    return a, b


def _regression_structure(net: MLP, structure: str, caller: str):
    """``(likelihood, structure)`` of a type-II noise computation: the net must be a regression
    (Gaussian likelihood) network and ``structure`` one of :data:`_STRUCTURES` (``"auto"``
    resolved by :func:`_auto_structure`); ``ValueError`` naming ``caller`` otherwise."""
    lik = C.resolve_likelihood(net, None)
    if lik != "gaussian":
        raise ValueError(f"{caller} needs a regression (gaussian likelihood) network")
    if structure not in _STRUCTURES:
        raise ValueError(f"structure must be one of {_STRUCTURES}, got {structure!r}")
    return lik, _auto_structure(net, structure)


@one_blas_thread
def evidence_fit(net: MLP, X, y, *, seed=None, init=None, delta_y=None, prior_precision=None,
                 noise_prior=(1.0, 1e-2), learn_prior: bool = False, structure: str = "auto",
                 max_outer: int = 30, rtol: float = 1e-2, max_iter: int = 2000, final_max_iter=None,
                 tol: float = 1e-6, ftol=None, restarts: int = 1, chunk_size=None, progress=True,
                 return_info: bool = True, device=None, dtype=None):
    """MAP weights with the noise variance (and optionally the prior) set by the Laplace evidence.

    MacKay's iteration (module docstring): MAP fit → GGN Laplace at the mode → one fixed-point
    update of ``Δ_y ← (SSE/2 + b)/((nC − γ)/2 + a)`` (and ``λ_g ← γ_g/‖θ*_g‖²``) → warm-started MAP
    fit → … until every updated hyperparameter changes by at most ``rtol`` in log, then a final
    MAP fit at the last hyperparameters (so the returned weights are the mode at the returned
    ``Δ_y``, ``Λ``).

    Parameters
    ----------
    net : MLP
        Gaussian-likelihood (regression) network; its ``(λ_W, λ_b)`` are the starting prior.
    X : array, shape (n, d_in)
    y : array, shape (n,) or (n, d_out)
    seed : None, int, SeedSequence or key
        Initialisation of the first MAP fit (and its restarts).
    init : sequence of arrays, optional
        Starting weights of the first fit (per layer ``(d_{l+1}, d_l + 1)``).
    delta_y : float, optional
        Starting noise variance (default ``net.delta_y``). Start above the expected noise:
        the first fit is then well regularised, and the iteration lowers ``Δ_y`` towards the
        evidence's fixed point rather than starting inside an interpolating mode.
    prior_precision : None, float or per-layer sequence
        Starting prior precision (default the net's).
    noise_prior : (float, float) or None
        Gamma ``(a, b)`` prior on ``1/Δ_y`` (default ``(1, 1e-2)``, the hyperprior of ``gibbs`` and
        of the joint MAP); ``None`` for pure type-II maximum likelihood.
    learn_prior : bool
        Also estimate one ``λ`` per weight matrix and per bias vector (default False: the prior
        stays the one every method of the comparison uses).
    structure : {"auto", "full", "kfac", "block", "diag"}
        Curvature structure of the Laplace fit that supplies ``γ``. ``"auto"``: ``"full"`` up to
        2000 parameters, else ``"kfac"``.
    max_outer : int
        Maximum number of hyperparameter updates.
    rtol : float
        Stop when ``max |Δ log hyper| ≤ rtol``.
    max_iter : int
        L-BFGS iterations of each warm-started MAP fit inside the loop.
    final_max_iter : int, optional
        L-BFGS iterations of the final fit (default ``max_iter``).
    tol, ftol :
        L-BFGS tolerances (:func:`blockbayes.laplace.map_fit`).
    restarts : int
        Random restarts of the *first* fit only (best objective kept).
    chunk_size : int, optional
    progress : bool or None
        Progress bars of the MAP fits (default on; ``None``: only on a terminal).
    return_info : bool
        Also return the info dict (default True).
    device : None, "cpu", "cuda" or "cuda:N"
        Where to compute (``X``, ``y`` are moved there once; ``None`` keeps ``X``'s device).
    dtype : None, "float32" or "float64"
        Compute dtype (default ``X``'s). The hyperparameter updates are host floats.

    Returns
    -------
    params : tuple of arrays
        Per layer ``(d_{l+1}, d_l + 1)``, bias last: the MAP at the returned hyperparameters.
    info : dict
        ``delta_y``, ``prior_precision`` (per layer ``(λ_W, λ_b)``), ``gamma``, ``num_outer``,
        ``converged`` (``rtol`` reached), ``log_marglik`` (Laplace log evidence at the last
        Laplace fit, without the hyperprior), ``structure``, ``history`` (per outer step:
        ``delta_y``, ``gamma``, ``sse``, ``log_marglik``, ``num_iter``), ``map_info`` (the final
        fit's :func:`map_fit` info).

    Raises
    ------
    ValueError
        Non-Gaussian likelihood, bad structure or counts, non-finite input.
    """
    lik, structure = _regression_structure(net, structure, "evidence_fit")
    max_outer = C.positive_int("max_outer", max_outer)
    rtol = C.positive("rtol", rtol)
    if noise_prior is not None:
        _noise_prior(noise_prior)
    Xp, Yp = prepare(net, X, y, device=device, dtype=dtype, task="standard", likelihood=lik)
    dy = C.resolve_noise(net, lik, delta_y, None)
    prior = tuple(zip(*C.resolve_prior(net, prior_precision)))
    fit_kw = dict(tol=tol, ftol=ftol, chunk_size=chunk_size, progress=progress, return_info=True)
    if init is not None:
        init = C.check_weights(net, init, Xp, name="init", move=True)
    W, minfo = map_fit(net, Xp, Yp, seed=seed, init=init, prior_precision=prior, delta_y=dy,
                       max_iter=max_iter, restarts=restarts, **fit_kw)
    history, converged, step, lml = [], False, None, float("nan")
    for it in range(max_outer):
        sse = float(to_numpy(data_misfit(net, W, Xp, Yp, likelihood=lik, chunk_size=chunk_size)))
        la = laplace_fit(net, W, Xp, Yp, subset="all", structure=structure, prior_precision=prior,
                         delta_y=dy, chunk_size=chunk_size)
        lml = float(to_numpy(la.log_marginal_likelihood()))
        step = evidence_step(la, sse, noise_prior=noise_prior, learn_prior=learn_prior)
        history.append(dict(delta_y=dy, gamma=step["gamma"], sse=sse, log_marglik=lml,
                            num_iter=int(minfo["num_iter"]), prior_precision=prior))
        old = [math.log(dy)] + ([math.log(v) for p in prior for v in p] if learn_prior else [])
        dy, prior = step["delta_y"], step["prior_precision"]
        new = [math.log(dy)] + ([math.log(v) for p in prior for v in p] if learn_prior else [])
        change = max(abs(u - v) for u, v in zip(old, new))
        last = change <= rtol or it == max_outer - 1
        W, minfo = map_fit(net, Xp, Yp, init=W, prior_precision=prior, delta_y=dy,
                           max_iter=(final_max_iter or max_iter) if last else max_iter, **fit_kw)
        if change <= rtol:
            converged = True
            break
    info = dict(delta_y=float(dy), prior_precision=tuple(tuple(float(v) for v in p) for p in prior),
                gamma=float(step["gamma"]), num_outer=len(history), converged=converged, log_marglik=lml,
                structure=structure, noise_prior=None if noise_prior is None else tuple(noise_prior),
                learn_prior=bool(learn_prior), history=history, map_info=minfo,
                num_iter=int(sum(h["num_iter"] for h in history) + minfo["num_iter"]))
    return (W, info) if return_info else W


@one_blas_thread
def evidence_noise(net: MLP, weights, X, y, *, delta_y: float, noise_prior=(1.0, 1e-2), structure: str = "auto",
                   chunk_size=None) -> dict:
    """One MacKay update of the noise variance at given weights (no refit): a predictive ``Δ_y``.

    A GGN Laplace fit at ``weights`` with noise variance ``delta_y`` and the net's prior
    (:func:`blockbayes.laplace.fit`, every layer), then :func:`evidence_step`,

    ``Δ_y = (SSE/2 + b)/((nC − γ)/2 + a)``, ``γ = Σ_g (|g| − λ_g tr Σ_gg)``.

    At a joint-noise MAP (``delta_y`` = its ``Δ̂_y = (SSE/2 + b)/(nC/2 + a)``) this divides the
    same residual sum by ``nC − γ`` instead of ``nC``: the noise with the parameters' degrees of
    freedom taken off (the joint ``Δ̂_y`` of an interpolating fit is ``γ``-blind and too small).

    Parameters
    ----------
    net : MLP
        Gaussian-likelihood network (its prior precisions are used).
    weights : sequence of arrays ``(d_{l+1}, d_l + 1)``
    X : array, shape (n, d_in)
    y : array, shape (n,) or (n, d_out)
    delta_y : float
        Noise variance of the Laplace fit (the GGN is scaled by ``1/delta_y``).
    noise_prior : (float, float) or None
        ``(a, b)`` of the Gamma prior on ``1/Δ_y``.
    structure : {"auto", "full", "kfac", "block", "diag"}
        ``"auto"``: ``"full"`` up to 2000 parameters, else ``"kfac"``.

    Returns
    -------
    dict
        ``delta_y`` (the update), ``gamma``, ``sse``, ``structure``.
    """
    lik, structure = _regression_structure(net, structure, "evidence_noise")
    dy = C.positive("delta_y", delta_y)
    Xp, Yp = prepare(net, X, y, task="standard", likelihood=lik)
    W = C.check_weights(net, weights, Xp, name="weights")
    sse = float(to_numpy(data_misfit(net, W, Xp, Yp, likelihood=lik, chunk_size=chunk_size)))
    la = laplace_fit(net, W, Xp, Yp, subset="all", structure=structure, delta_y=dy, chunk_size=chunk_size)
    step = evidence_step(la, sse, noise_prior=noise_prior)
    return dict(delta_y=float(step["delta_y"]), gamma=float(step["gamma"]), sse=sse, structure=structure)
