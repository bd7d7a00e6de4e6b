"""Iterative block Laplace (MATH.md §D.3): block coordinate descent over node rows.

A *block* is a node row ``w̃_{l,i}`` (bias and all weights into node ``i`` of layer ``l+1``).
With the other weights held fixed, the row's gradient and Gauss–Newton block are (D.1)

.. math::

    \\nabla_{\\tilde w_{l,i}}E = \\tilde H^{l\\top}\\delta_{:,i} + \\Lambda_l\\tilde w_{l,i},\\qquad
    \\mathcal G_{l,i} = \\Lambda_l + \\sum_\\mu c_{\\mu i}\\,\\tilde h_\\mu\\tilde h_\\mu^\\top .

One **sweep** visits the layers from the output down (Gauss–Seidel across layers); within a layer
all rows take a damped Newton step at once (Jacobi):
``s_i = −(𝒢_{l,i} + ρ_l I)^{-1} ∇_i E``, ``W̃^l ← W̃^l + α[s_i]_i`` with Armijo backtracking on ``E``
over ``α ∈ {1, ½, ¼, …}`` and Levenberg–Marquardt adaptation of ``ρ_l`` (shrunk after a full step,
grown after a backtrack). ``E`` never increases. On a Gaussian output layer the undamped step is
the exact block minimiser, so for a linear model (``L = 1``) one sweep gives the MAP.

At the fixed point ``θ*`` the posterior is block diagonal over nodes,
``q(θ) = Π_{l,i} N(w̃*_{l,i}, 𝒢_{l,i}(θ*)^{-1})`` (§D.4): the :class:`LaplaceResult` with
``structure="block"``.

**Sample-based variant** (``samples=S``). After the mode phase, the other layers are held at
draws from the current block posterior instead of at the mode (§C.6c, block-wise VOGN): for layer
``l`` (Gauss–Seidel order), draw ``θ^{(s)} ~ q`` for the other layers (layer ``l`` at its mean),
average ``ḡ_i = (1/S) Σ_s ∇_i E(θ^{(s)})`` and ``𝒢̄_i``, and update

.. math::

    P_{l,i} \\leftarrow (1-\\rho)P_{l,i} + \\rho\\,\\bar{\\mathcal G}_{l,i},\\qquad
    m_{l,i} \\leftarrow m_{l,i} - \\rho\\,P_{l,i}^{-1}\\bar g_i .

Rows of the *same* layer stay at their means (Jacobi), so each row's update sees the other layers'
uncertainty but not its siblings'.

Memory: per layer ``d_{l+1}(d_l+1)²`` for the blocks plus chunked per-example factors; the full
Jacobian is never formed. Cost per sweep ``O(L n C P + Σ_l [n d_{l+1} d_l² + d_{l+1} d_l³])``.
"""
from __future__ import annotations

import math

from .._backend import device_of, namespace, to_numpy
from .._backend import random as bbr
from .._backend.linalg import NotPositiveDefiniteError, cho_solve, cholesky, solve_triangular
from typing import Any, NamedTuple

from ..driver import deprecated_names, run_kernel
from ..inputs import prepare
from ..model import MLP
from . import _common as C
from ._mlp_grad import curvature, data_misfit, objective, prior_vector
from .result import LaplaceResult

__all__ = ["block"]


def _f(x) -> float:
    return float(to_numpy(x))


def _prior_energy(xp, W, lam_w, lam_b):
    tot = 0.0
    for l, w in enumerate(W):
        lam = prior_vector(xp, lam_w[l], lam_b[l], w.shape[1] - 1, dtype=w.dtype, device=device_of(w))
        tot = tot + 0.5 * xp.sum(lam[None, :] * w * w)
    return tot


def _replace(W, l, new):
    return tuple(new if j == l else w for j, w in enumerate(W))


def _isatty() -> bool:
    import sys

    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class _ModeState(NamedTuple):
    """Carry of the mode phase: weights, per-layer damping ``ρ``, the last ``E``, the stall
    count, counters, and the stop reason (empty while running)."""

    weights: tuple
    damping: tuple
    E_prev: Any
    stall: int
    backtracks: int
    extrapolations: int
    converged: bool
    message: str


@deprecated_names(num_sweeps="num_steps")
def block(net: MLP, X, y, *, likelihood=None, init=None, num_steps: int = 100,
          damping: float = 0.0, tol: float = 1e-8, ftol: float = 0.0, armijo: float = 1e-4,
          max_backtracks: int = 20, model_step: bool = True, extrapolate: bool = False, max_extrapolation: float = 16.0,
          samples=None, sample_sweeps: int = 20, step_size: float = 0.5,
          prior_precision=None, delta_y=None, sigma_noise=None, seed=None, chunk_size=None,
          progress=True, device=None, dtype=None, checkpoint=None, checkpoint_every=None,
          resume=None) -> LaplaceResult:
    """Iterative block Laplace of the standard MLP and its sample-based variant.

    Parameters
    ----------
    net : MLP
    X : array, shape (n, d_in)
    y : array
        As for :func:`blockbayes.laplace.fit`.
    likelihood : {None, "gaussian", "categorical", "bernoulli"}
        ``None`` derives it from ``net.likelihood`` (see :func:`blockbayes.laplace.fit`).
    init : sequence of arrays or LaplaceResult, optional
        Starting weights (a MAP from :func:`map_fit` is a good warm start for deep nets).
        Default: :func:`init_weights` with ``seed``. Never modified.
    num_steps : int
        Maximum number of mode-phase sweeps (each visits every layer once, output first;
        deprecated spelling: ``num_sweeps``).
    damping : float
        Initial and minimum Levenberg–Marquardt damping ``ρ`` added to every block.
    tol : float
        Stop when, during a sweep, every layer's largest gradient component of ``E/n`` is below ``tol``.
    ftol : float
        Also stop (``converged=False``) after 3 consecutive sweeps that lower ``E`` by at most
        ``ftol·max(1, |E|)`` (default 0: no decrease at all), or by at most ``1e-10·max(1, |E|)``
        while some layer's line search failed. This happens when the minimiser sits on a ReLU kink: ``E`` is then
        not differentiable there and the gradient cannot reach ``tol``.
    armijo : float
        Sufficient-decrease constant ``c₁`` of the line search.
    max_backtracks : int
        Step halvings before a layer's update is skipped for this sweep (and ``ρ`` grown).
    model_step : bool
        Scale each hidden layer's Jacobi direction ``s`` by the minimiser of the Gauss–Newton
        model along it, ``α = −∇Eᵀs / sᵀ(GGN_l + Λ_l)s`` (capped at 2), before the Armijo test.
        ``sᵀ GGN_l s = Σ_μ ‖Σ_i Q_{μi}(h̃_μ·s_i)‖²`` costs one more chunked forward/backward pass;
        it corrects the over-shoot of Jacobi steps whose rows are coupled through the layers
        above. The output layer always starts from ``α = 1`` (exact for a Gaussian likelihood).
    extrapolate : bool
        After each sweep (from the second on), try ``θ ← θ + β(θ − θ_prev)`` for
        ``β = 1, 2, 4, …, max_extrapolation``, keeping each move only while ``E`` decreases
        (line-search over-relaxation, as used to accelerate alternating least squares). ``E``
        stays monotone; the fixed points are unchanged. Block coordinate descent otherwise
        zig-zags slowly along the weight-scaling valleys of deep nets.
    max_extrapolation : float
        Largest ``β`` tried.
    samples : int, optional
        Run the sample-based variant with ``S = samples`` draws per layer update after the mode phase.
    sample_sweeps : int
        Sweeps of the sample-based variant.
    step_size : float
        ``ρ`` of the sample-based update, in ``(0, 1]``.
    prior_precision : None, float or per-layer sequence
        Overrides the net's ``(λ_W, λ_b)``.
    delta_y, sigma_noise : float, optional
        Regression noise variance / standard deviation (default ``net.delta_y``).
    seed : None, int, SeedSequence or key
        Initialisation and (sample-based variant) posterior draws.
    chunk_size : int, optional
        Data points per chunk (memory bound).
    progress : bool or None
        tqdm bar over sweeps (default on; ``None``: only on a terminal).
    device : None, "cpu", "cuda" or "cuda:N"
        Where to compute (``X``, ``y`` and ``init`` are moved there once); the result lives there.
    dtype : None, "float32" or "float64"
        Compute dtype (default ``X``'s); the result has it.
    checkpoint, checkpoint_every, resume
        Checkpoints of the mode phase (:func:`blockbayes.driver.run_kernel`); Ctrl-C during
        the mode phase ends it with the weights so far (``info["message"]`` says so).

    Returns
    -------
    LaplaceResult
        ``structure="block"``, ``subset="all"``; ``mean`` the fixed point. ``info`` holds
        ``objective`` (E after each sweep), ``grad_norm`` (largest ``|∇E|/n`` met in each sweep),
        ``num_sweeps``, ``converged``, ``message``, ``damping`` (final ρ per layer), ``backtracks``,
        ``variant`` ("mode" or "sample") and, for the sample-based variant,
        ``sample_objective`` (E at the mean after each sample sweep).
    """
    lik = C.resolve_likelihood(net, likelihood)
    X, Y = prepare(net, X, y, device=device, dtype=dtype, task="standard", likelihood=lik)
    xp = namespace(X)
    lam_w, lam_b = C.resolve_prior(net, prior_precision)
    dy = C.resolve_noise(net, lik, delta_y, sigma_noise)
    num_sweeps = C.positive_int("num_steps", num_steps, minimum=0)
    max_backtracks = C.positive_int("max_backtracks", max_backtracks, minimum=0)
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not (damping >= 0 and math.isfinite(damping)):
        raise ValueError(f"damping must be a finite number >= 0, got {damping!r}")
    tol = C.positive("tol", tol)
    if not (0 <= float(ftol) < 1):
        raise ValueError(f"ftol must lie in [0, 1), got {ftol!r}")
    if not (0 < float(armijo) < 1):
        raise ValueError(f"armijo must lie in (0, 1), got {armijo!r}")
    if samples is not None:
        samples = C.positive_int("samples", samples)
        sample_sweeps = C.positive_int("sample_sweeps", sample_sweeps)
        step_size = C.positive("step_size", step_size)
        if step_size > 1:
            raise ValueError(f"step_size must lie in (0, 1], got {step_size}")
    k_init, k_samp = bbr.split(bbr.key(seed), 2)
    moved = device is not None or dtype is not None
    W = (C.init_weights(net, seed=k_init, like=X) if init is None
         else C.check_weights(net, init, X, name="init", move=moved))
    n = X.shape[0]
    L = net.num_layers
    dtype, dev = X.dtype, device_of(X)
    lams = [prior_vector(xp, lam_w[l], lam_b[l], net.widths[l], dtype=dtype, device=dev) for l in range(L)]
    eyes = [xp.eye(net.widths[l] + 1, dtype=dtype, device=dev) for l in range(L)]

    def sweep_fn(_, it: _ModeState, sweep):
        """One mode-phase sweep (output layer first): damped Newton steps on the node blocks."""
        W, rho, backtracks = it.weights, list(it.damping), it.backtracks
        gmax = 0.0
        E_now = None
        W_start = W
        failed = False
        for l in reversed(range(L)):
            st = curvature(net, W, X, Y, likelihood=lik, layers=[l], kinds=["block"], delta_y=dy,
                           unit_noise=False, gradient=True, chunk_size=chunk_size)
            g = st["grad"][l] + lams[l][None, :] * W[l]
            E0 = _f(st["loss"] + _prior_energy(xp, W, lam_w, lam_b))
            gmax = max(gmax, _f(xp.max(xp.abs(g))) / n)
            Gb = st["block"][l] + eyes[l][None, :, :] * lams[l][None, None, :]
            accepted = False
            for attempt in range(8):
                try:
                    R = cholesky(Gb + rho[l] * eyes[l][None, :, :])
                    break
                except NotPositiveDefiniteError:   # only from round-off; grow the damping
                    rho[l] = max(10.0 * rho[l], 1e-8 * _f(xp.max(xp.linalg.diagonal(Gb))))
            else:
                raise NotPositiveDefiniteError(f"layer {l}: node blocks not positive definite")
            step = -cho_solve(R, g[:, :, None])[..., 0]
            slope = _f(xp.sum(g * step))
            if slope < 0:
                alpha = 1.0
                if model_step and l < L - 1:
                    kap = _f(_curvature_along(net, W, X, Y, lik, dy, l, step, chunk_size)
                             + xp.sum(lams[l][None, :] * step * step))
                    if kap > 0:
                        alpha = min(2.0, max(1e-8, -slope / kap))
                for bt in range(max_backtracks + 1):
                    Wt = _replace(W, l, W[l] + alpha * step)
                    E1 = _f(objective(net, Wt, X, Y, likelihood=lik, lam_w=lam_w, lam_b=lam_b,
                                      delta_y=dy, grad=False, chunk_size=chunk_size)[0])
                    if math.isfinite(E1) and E1 <= E0 + armijo * alpha * slope + slack * abs(E0):
                        accepted = True
                        break
                    alpha *= 0.5
                    backtracks += 1
            if accepted:
                W = Wt
                E_now = E1
                if bt == 0:
                    rho[l] = max(float(damping), rho[l] / 3.0)
                else:
                    rho[l] = 3.0 * rho[l] + 1e-6 * _f(xp.mean(xp.linalg.diagonal(Gb)))
            else:
                E_now = E0
                failed = True
                rho[l] = 3.0 * rho[l] + 1e-4 * _f(xp.mean(xp.linalg.diagonal(Gb)))
        extrapolations = it.extrapolations
        if extrapolate and L > 1 and sweep > 0:
            # over-relaxation along the sweep's displacement, kept only if E decreases
            D = tuple(a - b for a, b in zip(W, W_start))
            beta = 1.0
            while beta <= max_extrapolation:
                Wt = tuple(a + beta * d for a, d in zip(W, D))
                E1 = _f(objective(net, Wt, X, Y, likelihood=lik, lam_w=lam_w, lam_b=lam_b,
                                  delta_y=dy, grad=False, chunk_size=chunk_size)[0])
                if not (math.isfinite(E1) and E1 < E_now):
                    break
                W, E_now = Wt, E1
                extrapolations += 1
                beta *= 2.0
        stall, message = it.stall, ""
        if gmax < tol:
            message = f"converged: max |grad E|/n = {gmax:.3g} < tol"
        else:
            dec = math.inf if it.E_prev is None else it.E_prev - E_now
            scale = max(1.0, abs(E_now))
            if dec <= ftol * scale or (failed and dec <= 1e-10 * scale):
                stall += 1
                if stall >= patience:
                    message = (f"stalled: E (almost) unchanged for {patience} sweeps"
                               + (" with failed line searches" if failed else "")
                               + f", max |grad E|/n = {gmax:.3g} (typical when the minimiser sits on a "
                               "ReLU kink, where E is not differentiable)")
            else:
                stall = 0
        new = _ModeState(W, tuple(rho), E_now, stall, backtracks, extrapolations, gmax < tol, message)
        return new, (E_now, gmax)

    patience = 3
    slack = 8.0 * float(xp.finfo(dtype).eps)     # round-off allowance in the Armijo test
    start = _ModeState(W, tuple([float(damping)] * L), None, 0, 0, 0, False, "")
    if num_sweeps > 0:
        out = run_kernel(None, start, sweep_fn, num_steps=num_sweeps,
                         collect=lambda it, info, t: {"E": float(info[0]), "grad": float(info[1])},
                         stop=lambda t, it, info, traces: bool(it.message),
                         progress=_isatty() if progress is None else bool(progress),
                         desc="block Laplace", unit="sweep",
                         postfix=lambda it, info: {"E": f"{info[0]:.6g}", "grad": f"{info[1]:.2e}"}, postfix_every=1,
                         checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                         config=dict(family="laplace.block", widths=list(net.widths), likelihood=lik,
                                     dtype=str(X.dtype), extrapolate=extrapolate, model_step=model_step))
        it, hist_E, hist_g = out.state, [float(v) for v in out.traces["E"]], [float(v) for v in out.traces["grad"]]
        if out.interrupted:
            it = it._replace(message=f"interrupted after {len(hist_E)} sweeps (Ctrl-C)")
    else:
        it, hist_E, hist_g = start, [], []
    W = it.weights
    message = it.message or (f"stopped after num_steps={num_sweeps}; max |grad E|/n = "
                             f"{hist_g[-1] if hist_g else float('nan'):.3g}")
    info = dict(variant="mode", objective=hist_E, grad_norm=hist_g, num_sweeps=len(hist_E),
                converged=it.converged, message=message, damping=it.damping, backtracks=it.backtracks,
                extrapolations=it.extrapolations)
    if samples:
        bar = C.progress_bar(sample_sweeps, "block Laplace (samples)", progress)
        try:
            W, Gcur, sinfo = _sample_phase(net, W, X, Y, lik, lams, eyes, dy, lam_w, lam_b, k_samp,
                                           samples, sample_sweeps, step_size, chunk_size, bar)
        finally:
            if bar is not None:
                bar.close()
        info.update(sinfo)
        info["variant"] = "sample"
        unit = dy if lik == "gaussian" else 1.0
        curv = {"block": {l: Gcur[l] * unit for l in range(L)}}
    else:
        st = curvature(net, W, X, Y, likelihood=lik, layers=range(L), kinds=["block"], delta_y=dy,
                       unit_noise=True, chunk_size=chunk_size)
        curv = {"block": st["block"]}
    misfit = data_misfit(net, W, X, Y, likelihood=lik, chunk_size=chunk_size)
    return LaplaceResult(net=net, likelihood=lik, structure="block", subset="all", layers=range(L),
                         weights=W, curv=curv, n=n, misfit=misfit, lam_w=lam_w, lam_b=lam_b, delta_y=dy,
                         info=info, chunk_size=chunk_size)


def _curvature_along(net, W, X, Y, lik, dy, l, step, chunk_size):
    """``sᵀ GGN_l s`` for a step ``s`` of layer ``l`` (all rows): ``Σ_μ ‖Σ_i Q_{μi:} (h̃_μ·s_i)‖²``,
    one chunked forward/backward pass (no Jacobian)."""
    from ._mlp_grad import auto_chunk, backprop_factors, chunks, forward_cache, loss_derivatives

    xp = namespace(X)
    n = X.shape[0]
    per_ex = net.d_out * sum(net.widths) + sum(net.widths)
    tot = xp.zeros((), dtype=X.dtype, device=device_of(X))
    for s0, s1 in chunks(n, auto_chunk(n, per_ex, chunk_size)):
        cache = forward_cache(net, W, X[s0:s1, :])
        _, _, S = loss_derivatives(lik, cache.F, Y[s0:s1, :], dy)
        Q = backprop_factors(net, W, cache, S, [l])[l]                 # (m, d, R)
        a = xp.matmul(cache.Ht[l], xp.matrix_transpose(step))          # (m, d)
        u = xp.sum(Q * a[:, :, None], axis=1)                          # (m, R)
        tot = tot + xp.sum(u * u)
    return tot


def _sample_phase(net, W, X, Y, lik, lams, eyes, dy, lam_w, lam_b, key, S, sweeps, rho, chunk_size, bar):
    """Sample-based block updates (other layers at posterior draws); returns (mean, data GGN blocks, info)."""
    xp = namespace(X)
    L = net.num_layers
    st = curvature(net, W, X, Y, likelihood=lik, layers=range(L), kinds=["block"], delta_y=dy,
                   unit_noise=False, chunk_size=chunk_size)
    Gcur = dict(st["block"])
    chol = {l: cholesky(Gcur[l] + eyes[l][None, :, :] * lams[l][None, None, :]) for l in range(L)}
    m = list(W)
    keys = bbr.split(key, sweeps * L)
    hist = []
    for t in range(sweeps):
        for j, l in enumerate(reversed(range(L))):
            kd = bbr.split(keys[t * L + j], L)
            eps = {}
            for o in range(L):
                if o != l:
                    d, k = m[o].shape
                    eps[o] = xp.asarray(bbr.normal(kd[o], (S, d, k), like=X), dtype=X.dtype, device=device_of(X))
            gbar = xp.zeros_like(m[l])
            Gbar = xp.zeros_like(Gcur[l])
            for s in range(S):
                Ws = []
                for o in range(L):
                    if o == l:
                        Ws.append(m[o])
                    else:
                        Z = solve_triangular(chol[o], xp.permute_dims(eps[o][s:s + 1, ...], (1, 2, 0)),
                                             lower=True, trans=True)                       # (d, k, 1)
                        Ws.append(m[o] + Z[..., 0])
                cs = curvature(net, tuple(Ws), X, Y, likelihood=lik, layers=[l], kinds=["block"],
                               delta_y=dy, unit_noise=False, gradient=True, chunk_size=chunk_size)
                gbar = gbar + cs["grad"][l] / S
                Gbar = Gbar + cs["block"][l] / S
            gbar = gbar + lams[l][None, :] * m[l]
            Gcur[l] = (1.0 - rho) * Gcur[l] + rho * Gbar
            chol[l] = cholesky(Gcur[l] + eyes[l][None, :, :] * lams[l][None, None, :])
            m[l] = m[l] - rho * cho_solve(chol[l], gbar[:, :, None])[..., 0]
        E = _f(objective(net, tuple(m), X, Y, likelihood=lik, lam_w=lam_w, lam_b=lam_b, delta_y=dy,
                         grad=False, chunk_size=chunk_size)[0])
        hist.append(E)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(E=f"{E:.6g}", phase="sample")
    return tuple(m), Gcur, dict(sample_objective=hist, samples=S, sample_sweeps=sweeps, step_size=rho)
