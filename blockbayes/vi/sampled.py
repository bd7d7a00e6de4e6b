"""Sample-based block VI: row updates with the other weights held at samples (MATH.md §C.6a).

The Gibbs conditional of a node row has natural parameters that are *linear* in the sufficient
statistics of its Markov blanket ``(X^l, Z^{l+1})``:

.. math::

    η_{l,i}(X, Z) = \\Big(\\tilde X^{l⊤}Z^{l+1}_{:,i}/Δ,\\; -\\tfrac12\\big(Λ_l + \\tilde X^{l⊤}\\tilde X^l/Δ\\big)\\Big).

Each iteration of this variant

1. draws ``S`` weight sets ``W^{(s)} ~ q(W)`` per restart (rows independent, ``q`` Gaussian);
2. holds them fixed and moves ``S`` persistent auxiliary states ``(X, Z)^{(s)}`` by
   ``aux_sweeps`` exact block-Gibbs sweeps of ``p(X, Z | W^{(s)}, y)`` (A.2, A.3) — the
   auxiliaries are drawn *conditionally on* sampled weights, not from a factorised ``q(X, Z)``;
3. averages the natural parameters over the draws, ``η̂ = (1/S) Σ_s η(X^{(s)}, Z^{(s)})`` (the
   Monte Carlo CAVI / SVI estimate; averaging natural parameters keeps every precision positive
   definite and is unbiased, averaging ``(m, S)`` would not be);
4. moves ``η ← (1 − ρ_t) η + ρ_t η̂`` with Robbins–Monro steps ``ρ_t = (t + 1)^{−κ}``
   (natural-gradient SVI, Hoffman et al. 2013).

The fixed point has row precision ``Λ_l + E[G_l]/Δ``: an *average conditional precision*. Like
block CAVI (§C.5) it therefore reports conditional variances and collapses; it is provided to
show this (see ``validation/test_vi_exact.py``), and as the minibatch-ready route of §C.6a.
For honest variances use :mod:`blockbayes.vi.rao_blackwell`, which moment-matches the mixture of
conditionals (mean of the covariances *plus* the covariance of the means) instead.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .._backend import backend_name, device_of, namespace
from .._backend import linalg
from .._backend import random as bbr
from .. import gibbs as _gibbs
from ..model import MLP, activate, affine
from ..blocks import augmented_cross, augmented_gram, diag_embed
from ..driver import deprecated_names, nonfinite_fields, one_blas_thread, run_kernel
from ..inputs import prepare
from ._common import NOISY_VI, check_int, check_pos, expected_gram, eye, prior_diag
from .result import VIResult

__all__ = ["SampledState", "SampledInfo", "init", "step", "run", "moments"]


class SampledState(NamedTuple):
    """State of ``C`` restarts with ``S`` persistent auxiliary slots each.

    Attributes
    ----------
    prec : tuple of arrays
        Row precision ``Λ_l + Ḡ_l/Δ`` per layer (shared by the rows), ``(C, d_l + 1, d_l + 1)``.
    lin : tuple of arrays
        Linear natural parameter ``X̃^⊤Z/Δ`` averaged, ``(C, d_l + 1, d_{l+1})``.
    pre, post : tuple of arrays
        Persistent auxiliaries per hidden layer, ``(C·S, n, d_l)`` (restart-major).
    t : int
        Iterations done (sets ``ρ_t``).
    """

    prec: tuple
    lin: tuple
    pre: tuple
    post: tuple
    t: int


class SampledInfo(NamedTuple):
    """``rho``: the step size used; ``change``: max |Δ mean| over all rows, shape ``(C,)``."""

    rho: float
    change: Any


def moments(state: SampledState, *, covariances: bool = True):
    """Row means ``(C, d_{l+1}, d_l + 1)`` and shared covariances ``(C, d_l+1, d_l+1)`` of ``q``
    (``covs`` is ``None`` unless ``covariances``)."""
    means, covs = [], []
    for P, b in zip(state.prec, state.lin):
        xp = namespace(P)
        R = linalg.cholesky(P)
        k = b.shape[-1]
        rhs = xp.concat([b, xp.broadcast_to(eye(xp, P.shape[-1], P), P.shape)], axis=-1) if covariances else b
        sol = linalg.cho_solve(R, rhs)
        means.append(xp.matrix_transpose(sol[..., :k]))
        if covariances:
            S = sol[..., k:]
            covs.append(0.5 * (S + xp.matrix_transpose(S)))
    return tuple(means), (tuple(covs) if covariances else None)


def _natural(net, l, H, T, delta, like):
    """Per-slot natural parameters of layer ``l``: ``(Λ + G/Δ, X̃^⊤T/Δ)``."""
    xp = namespace(like)
    lam = prior_diag(net, l, xp, like)
    G = augmented_gram(xp, H)
    B = augmented_cross(xp, H, T)
    return diag_embed(xp, lam) + G / delta, B / delta


@deprecated_names(num_samples="num_draws")
def init(rng_key, net: MLP, X, y, *, num_restarts: int = 1, num_draws: int = 8, init="cavi",
         cavi_iters: int = 50, cavi_restarts: int = 8) -> SampledState:
    """Initial natural parameters and ``num_draws`` auxiliary slots per restart.

    ``init="cavi"``: ``η`` from the ``num_restarts`` best (by ELBO) of
    ``max(num_restarts, cavi_restarts)`` block-CAVI restarts of ``cavi_iters`` sweeps;
    ``"prior"``: means drawn from the prior and precision ``Λ`` (the first step has ``ρ_0 = 1``
    and replaces ``η`` entirely). Auxiliary slots start at the noisy forward pass of draws from
    ``q``.
    """
    xp = namespace(X, y)
    C, S, L = num_restarts, num_draws, net.num_layers
    k_c, k_w, k_aux = bbr.split(rng_key, 3)
    if init == "cavi":
        from . import cavi as _cavi

        st = _cavi.init(k_c, net, X, y, num_restarts=max(C, cavi_restarts))
        for _ in range(cavi_iters):
            st, info = _cavi.step(st, net, X, y)
        idx = xp.argsort(-info.elbo)[:C]                                   # the C best restarts
        moms = {h: _cavi.factor_moments(st, net, h) for h in range(L - 1)}
        n = X.shape[0]
        prec, lin = [], []
        for l in range(L):
            # the CAVI natural parameters of the rows: (Λ + E[G]/Δ, Ξ̃^⊤ Z̄/Δ)
            Xi, Sig = _cavi._inputs(st, X, l)
            T, _, delta = _cavi._targets(st, net, y, l, moms)
            P = diag_embed(xp, prior_diag(net, l, xp, X)) + expected_gram(xp, Xi, Sig, n) / delta
            b = augmented_cross(xp, Xi, T) / delta
            Ct = st.mean[0].shape[0]
            P = xp.take(xp.broadcast_to(P, (Ct,) + tuple(P.shape[-2:])), idx, axis=0)
            b = xp.take(xp.broadcast_to(b, (Ct,) + tuple(b.shape[-2:])), idx, axis=0)
            prec.append(P)
            lin.append(b)
    elif init == "prior":
        keys = bbr.split(k_c, L)
        prec, lin = [], []
        for l, s in enumerate(net.weight_shapes()):
            lam = prior_diag(net, l, xp, X)
            M = bbr.normal(keys[l], (C,) + s, like=X) / xp.sqrt(lam)
            P = xp.broadcast_to(diag_embed(xp, lam), (C, s[1], s[1]))
            prec.append(P)
            lin.append(xp.matmul(P, xp.matrix_transpose(M)))
    else:
        raise ValueError(f"init must be 'cavi' or 'prior', got {init!r}")
    state = SampledState(tuple(prec), tuple(lin), (), (), 0)
    W = _draw_weights(k_w, state, S)
    gst = _gibbs.init(k_aux, net, X, y, num_chains=C * S, init=W)
    return state._replace(pre=gst.pre, post=gst.post)


def _draw_weights(key, state: SampledState, S: int):
    """``S`` draws per restart from ``q``: per layer ``(C·S, d_{l+1}, d_l + 1)`` (restart-major).

    ``W^⊤ = P^{-1} b + R^{-⊤} ε`` with ``P = R R^⊤`` (exact draw of ``N(P^{-1}b, P^{-1})``)."""
    out = []
    keys = bbr.split(key, len(state.prec))
    for l, (P, b) in enumerate(zip(state.prec, state.lin)):
        xp = namespace(P)
        C, k1, k = b.shape
        R = linalg.cholesky(P)
        mt = linalg.cho_solve(R, b)                                        # (C, k1, k)
        E = bbr.normal(keys[l], (C, k1, S * k), like=P)                    # S draws side by side
        Z = linalg.solve_triangular(R, E, lower=True, trans=True)          # R^{-T} E, (C, k1, S k)
        Z = xp.permute_dims(xp.reshape(Z, (C, k1, S, k)), (0, 2, 3, 1))   # (C, S, k, k1)
        W = xp.matrix_transpose(mt)[:, None, :, :] + Z
        out.append(xp.reshape(W, (C * S, k, k1)))
    return tuple(out)


@deprecated_names(num_samples="num_draws")
def step(rng_key, state: SampledState, net: MLP, X, y, *, num_draws: int = 8, aux_sweeps: int = 2,
         kappa: float = 0.7) -> tuple[SampledState, SampledInfo]:
    """One iteration: draw weights, move the auxiliaries given them, average, step (pure).

    Parameters
    ----------
    rng_key : key
    state : SampledState
    num_draws : int
        ``S`` weight draws (must equal the number of auxiliary slots per restart; ``num_samples`` is
        the deprecated spelling).
    aux_sweeps : int
        Block-Gibbs sweeps of ``(X, Z) | W^{(s)}, y`` per iteration (``X^l`` by (A.2), ``Z^l``
        by (A.3), output to input).
    kappa : float in (0.5, 1]
        Robbins–Monro exponent: ``ρ_t = (t + 1)^{−κ}`` (``ρ_0 = 1``).
    """
    xp = namespace(X, y)
    L = net.num_layers
    C = state.prec[0].shape[0]
    S = num_draws
    k_w, k_aux = bbr.split(rng_key, 2)
    W = _draw_weights(k_w, state, S)
    pre, post = list(state.pre), list(state.post)
    dev, dt = device_of(X), X.dtype
    dy = xp.full((C * S,), net.delta_y, dtype=dt, device=dev)
    keys = bbr.split(k_aux, max(1, 2 * aux_sweeps * (L - 1)))
    kk = 0
    Yb = xp.broadcast_to(y[None, ...], (C * S,) + tuple(y.shape))
    for _ in range(aux_sweeps):
        for h in range(L - 2, -1, -1):
            T = Yb if h == L - 2 else pre[h + 1]
            dn = dy if h == L - 2 else xp.full((C * S,), net.delta_z[h + 1], dtype=dt, device=dev)
            F = activate(xp, pre[h], net.activation, net.slope)
            post[h] = _gibbs.sample_post(keys[kk], F, W[h + 1], T, net.delta_x[h], dn)
            Hb = X if h == 0 else post[h - 1]
            A = affine(Hb, W[h])
            pre[h] = _gibbs.sample_pre(keys[kk + 1], A, post[h], net.delta_z[h], net.delta_x[h],
                                       net.activation, net.slope)
            kk += 2
    rho = float((state.t + 1) ** (-kappa))
    old_means, _ = moments(state, covariances=False)
    prec, lin = [], []
    for l in range(L):
        H = X if l == 0 else post[l - 1]
        T = Yb if l == L - 1 else pre[l]
        delta = net.delta_y if l == L - 1 else net.delta_z[l]
        Pn, bn = _natural(net, l, H, T, delta, X)
        k1 = Pn.shape[-1]
        Pn = xp.mean(xp.reshape(xp.broadcast_to(Pn, (C * S, k1, k1)), (C, S, k1, k1)), axis=1)
        bn = xp.mean(xp.reshape(bn, (C, S) + tuple(bn.shape[-2:])), axis=1)
        prec.append((1.0 - rho) * state.prec[l] + rho * Pn)
        lin.append((1.0 - rho) * state.lin[l] + rho * bn)
    new = SampledState(tuple(prec), tuple(lin), tuple(pre), tuple(post), state.t + 1)
    new_means, _ = moments(new, covariances=False)
    change = None
    for a, b in zip(old_means, new_means):
        c = xp.max(xp.abs(a - b), axis=(-2, -1))
        change = c if change is None else xp.maximum(change, c)
    return new, SampledInfo(rho=rho, change=change)


_init = init  # `run` has an argument called `init`


@deprecated_names(num_iters="num_steps", num_samples="num_draws")
@one_blas_thread
def run(net: MLP, X, y, *, num_steps: int = 300, num_draws: int = 8, aux_sweeps: int = 2,
        kappa: float = 0.7, num_restarts: int = 1, init="cavi", cavi_iters: int = 50, cavi_restarts: int = 8,
        seed=None, device=None, dtype=None, progress: bool = True, check_every=None, checkpoint=None,
        checkpoint_every=None, resume=None) -> VIResult:
    """Sample-based block VI with natural-parameter averaging (MATH.md §C.6a).

    Parameters
    ----------
    net : MLP
        ``likelihood="gaussian"``.
    X : array, shape (n, d_in)
    y : array, shape (n,) or (n, d_out)
    num_steps : int
        SVI iterations (deprecated spelling: ``num_iters``).
    num_draws : int
        Weight draws ``S`` per iteration and restart (and persistent auxiliary slots). The deprecated
        spelling ``num_samples`` still works (with a :class:`DeprecationWarning`): everywhere else
        ``num_samples`` means samples *kept*.
    aux_sweeps : int
        Gibbs sweeps of the auxiliaries given the drawn weights, per iteration.
    kappa : float in (0.5, 1]
        Robbins–Monro exponent.
    num_restarts : int
        Independent restarts (a batch axis). There is no closed-form ELBO for this ``q``;
        ``result.best`` is therefore component 0 — use ``components="mixture"`` to pool restarts.
    init : {"cavi", "prior"}
    cavi_iters, cavi_restarts : int
        CAVI sweeps and restarts of the ``"cavi"`` initialisation (the best restarts are used).
    seed, device, dtype, progress, check_every, checkpoint, checkpoint_every, resume
        As in :func:`blockbayes.vi.cavi.run`.

    Returns
    -------
    VIResult
        ``method="sampled"``, ``cov_kind="shared"``; ``trace["change"]`` ``(C, T)`` is the max
        absolute change of the row means per iteration, ``trace["rho"]`` the step sizes.
    """
    for name, v, lo in (("num_steps", num_steps, 1), ("num_draws", num_draws, 1),
                        ("aux_sweeps", aux_sweeps, 1), ("num_restarts", num_restarts, 1),
                        ("cavi_iters", cavi_iters, 1), ("cavi_restarts", cavi_restarts, 1)):
        check_int(name, v, lo)
    kappa = check_pos("kappa", kappa, upper=1.0)
    if kappa <= 0.5:
        raise ValueError(f"kappa must lie in (0.5, 1] for Robbins–Monro convergence, got {kappa}")
    X, y = prepare(net, X, y, device=device, dtype=dtype, task="regression", method=NOISY_VI)
    xp = namespace(X, y)
    k_init, k_run = bbr.split(bbr.key(seed), 2)
    state = _init(k_init, net, X, y, num_restarts=num_restarts, num_draws=num_draws, init=init,
                  cavi_iters=cavi_iters, cavi_restarts=cavi_restarts)
    dev, dt = device_of(X), X.dtype
    out = run_kernel(k_run, state,
                     lambda sub, st, t: step(sub, st, net, X, y, num_draws=num_draws, aux_sweeps=aux_sweeps,
                                             kappa=kappa),
                     num_steps=num_steps,
                     collect=lambda st, info, t: {"change": info.change,
                                                  "rho": xp.asarray(info.rho, dtype=dt, device=dev)},
                     check=(lambda st, info: nonfinite_fields(xp, st, ("prec", "lin"))) if check_every else None,
                     check_every=check_every, check_what="natural parameters",
                     progress=progress, desc="vi.sampled", unit="step", checkpoint=checkpoint,
                     checkpoint_every=checkpoint_every, resume=resume,
                     config=dict(family="vi.sampled", widths=list(net.widths), num_restarts=num_restarts,
                                 num_draws=num_draws, aux_sweeps=aux_sweeps, kappa=kappa, dtype=str(dt)))
    state = out.state
    changes, rhos = out.traces["change"], out.traces["rho"]
    means, covs = moments(state)
    for l, (M, Sc) in enumerate(zip(means, covs)):
        if not (bool(xp.all(xp.isfinite(M))) and bool(xp.all(xp.isfinite(Sc)))):
            raise FloatingPointError(f"sampled VI produced non-finite row moments in layer {l + 1}")
    C = num_restarts
    trace = {"change": changes, "rho": xp.broadcast_to(rhos[None, :], (C, rhos.shape[0]))}
    return VIResult(net=net, method="sampled", means=means, covs=covs, cov_kind="shared",
                    delta_y=xp.full((C,), net.delta_y, dtype=dt, device=dev), elbo=None, trace=trace,
                    likelihood="gaussian", model="noisy", final_state=state,
                    config=dict(num_steps=num_steps, num_draws=num_draws, aux_sweeps=aux_sweeps,
                                kappa=kappa, num_restarts=C, init=init if isinstance(init, str) else "given",
                                cavi_iters=cavi_iters, cavi_restarts=cavi_restarts,
                                backend=backend_name(xp), dtype=str(dt)))
