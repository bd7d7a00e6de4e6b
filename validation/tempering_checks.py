"""Exactness of replica exchange over ``Δ`` (:mod:`blockbayes.gibbs.tempering`) and its broken twins.

Two experiments, both with the whole tempered kernel (a sweep per replica, then the even/odd swaps):

* :func:`check_geweke_tempered` — a Geweke joint-distribution test on the *product* joint
  ``π(y, s_0, …, s_{M−1}) ∝ Π_k p_k(s_k, y)`` (``p_k`` the generative model with hidden ``Δ``
  times ``t_k``; ``y`` shared). Its conditional ``π(s | y) ∝ Π_k p_k(s_k | y)`` is exactly what the
  tempered kernel targets, and ``π(y | s) ∝ Π_k N(y; F_k, Δ_y^{(k)})`` is Gaussian
  (``Δ_y^{(k)} = t_k Δ_y`` when ``Δ_y`` is tempered; mean ``m`` = the precision-weighted mean of
  the ``F_k``, variance ``V = 1/Σ_k 1/Δ_y^{(k)}``), so the successive-conditional chain is
  kernel, then ``y`` redrawn. Exact joint draws: ``s_k ~ p_k`` forward (weights, latents) and
  accept with probability ``exp(−½ Σ_k ‖F_k − m‖² / Δ_y^{(k)})`` (the state-dependent part of
  the ``y``-marginal of the product, ≤ 1), then ``y ~ N(m, V)``. Statistics of every replica, KS and empirical
  Bernstein, Bonferroni over ``delta``.
* :func:`check_tiny_grid_tempered` (slow tier) — the §E.2 tiny net: ``K`` chains start every replica at
  an exact posterior draw of *that replica's* posterior (a quadrature grid per replica on the
  same data), run ``sweeps`` tempered sweeps; replica 0 and the hottest replica must still
  match their grid marginals.

Twins (patched into :mod:`blockbayes.gibbs.tempering` by :func:`install_swap_twin`):

===========================  ======================================================================
twin                         planted bug
===========================  ======================================================================
``swap_likelihood_only``     the swap ratio from the output term ``log N(y; F, Δ_y)`` alone (the
                             same at every replica: ``log α = 0``, every swap accepted)
``swap_no_post_density``     the log joints without the post-activation densities
                             ``log N(X; f(Z), t_k Δ_X)`` (a latent term dropped)
``swap_mixed_normalisers``   the replica's own log joints with the Gaussian normalising constants,
                             the cross evaluations (a state under the neighbour's net) without
                             them: ``log α`` off by ``(N/2) log(4π² t_a t_b Δ²)``
===========================  ======================================================================

and one *control* that must pass: ``swap_no_normalisers`` drops every Gaussian normalising
constant ``−(m/2) log(2π t_k Δ)`` of the hidden layers from all four evaluations. They do not
depend on the state, so they cancel in ``log α`` — a correct sampler; a test that failed it would
be a false failure.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

import blockbayes as bb
from blockbayes import gibbs
from blockbayes.gibbs import kernel as gibbs_kernel
from blockbayes.gibbs import tempering as T
from blockbayes._backend import random as bbr
from blockbayes.testing import Check

from . import _refs as R
from . import _stats as S
from . import gibbs_checks as G
from .gibbs_moves_checks import _noise_stats

SWAP_TWINS = ("swap_likelihood_only", "swap_no_post_density", "swap_mixed_normalisers")
SWAP_CONTROLS = ("swap_no_normalisers",)


def _terms(state, net, X, y):
    """Per chain: (output term, post-activation densities, hidden normalising constants) of the
    log joint (A.0), so that the twins can drop exactly one of them."""
    n = X.shape[0]
    out_T = gibbs.output_targets(net, y, state.latent, state.delta_y.shape[0], X)
    H = state.post[-1] if state.post else np.broadcast_to(X, (state.delta_y.shape[0],) + X.shape)
    Rr = out_T - R.affine(H, state.weights[-1])
    out = -0.5 * n * net.d_out * np.log(2 * np.pi * state.delta_y) - np.sum(Rr ** 2, axis=(-2, -1)) / (2 * state.delta_y)
    post = np.zeros_like(out)
    norm = 0.0
    for h in range(net.num_layers - 1):
        d = net.widths[h + 1]
        Rx = state.post[h] - R.act(state.pre[h], net.activation, net.slope if net.activation == "leaky_relu" else 0.0)
        post = post - 0.5 * n * d * math.log(2 * math.pi * net.delta_x[h]) - np.sum(Rx ** 2, axis=(-2, -1)) / (2 * net.delta_x[h])
        norm = norm - 0.5 * n * d * (math.log(2 * math.pi * net.delta_x[h]) + math.log(2 * math.pi * net.delta_z[h]))
    return out, post, norm


@contextlib.contextmanager
def install_swap_twin(name):
    """Patch swap twin (or control) ``name`` into :mod:`blockbayes.gibbs.tempering` (``None``: no-op)."""
    if name is None:
        yield
        return
    orig_lj = T.replica_log_joint
    attr = "replica_log_joint"
    if name == "swap_likelihood_only":
        new = lambda state, net, X, y: _terms(state, net, X, y)[0]
    elif name == "swap_no_post_density":
        new = lambda state, net, X, y: gibbs_kernel.log_joint(state, net, X, y) - _terms(state, net, X, y)[1]
    elif name == "swap_no_normalisers":
        new = lambda state, net, X, y: gibbs_kernel.log_joint(state, net, X, y) - _terms(state, net, X, y)[2]
    elif name == "swap_mixed_normalisers":
        attr = "swap_log_ratio"

        def new(a, b, net_a, net_b, X, y, output=False):
            u = T.under
            own = orig_lj(u(a, net_a, output), net_a, X, y) + orig_lj(u(b, net_b, output), net_b, X, y)
            ba, ab = u(b, net_a, output), u(a, net_b, output)
            cross = (orig_lj(ba, net_a, X, y) - _terms(ba, net_a, X, y)[2]
                     + orig_lj(ab, net_b, X, y) - _terms(ab, net_b, X, y)[2])
            return cross - own
    else:
        raise ValueError(f"unknown swap twin {name!r}; choose from {SWAP_TWINS + SWAP_CONTROLS}")
    old = getattr(T, attr)
    setattr(T, attr, new)
    try:
        yield
    finally:
        setattr(T, attr, old)


def _y_given(F, nets):
    """Mean and variance of ``π(y | s) ∝ Π_k N(y; F_k, Δ_y^{(k)})`` (``F`` of shape ``(M, ...)``)."""
    prec = np.array([1.0 / nk.delta_y for nk in nets])
    V = 1.0 / prec.sum()
    m = np.tensordot(prec, F, axes=(0, 0)) * V
    return m, V


def _product_joint_draws(rng, nets, Xin, K, *, learn_prior, batch=20000):
    """``K`` exact draws of ``π(y, s_0..s_{M−1}) ∝ Π_k p_k(s_k, y)`` by rejection (see module doc).
    Returns ``(per-replica JointDraw list, y, acceptance rate)``; ``Δ_y`` fixed (each net's)."""
    M = len(nets)
    got, tried = [], 0
    while sum(len(g[1]) for g in got) < K:
        draws = [R.prior_joint_draw(rng, nk, Xin, batch, learn_prior=learn_prior, hyperprior=G.HP) for nk in nets]
        F = np.stack([R.affine(d.post[-1] if d.post else np.broadcast_to(Xin, (batch,) + Xin.shape), d.weights[-1])
                      for d in draws])                                         # (M, B, n, d_out)
        Fb, V = _y_given(F, nets)
        dys = np.array([nk.delta_y for nk in nets])[:, None, None, None]
        logw = -np.sum((F - Fb) ** 2 / dys, axis=(0, -2, -1)) / 2
        acc = np.log(rng.random(batch)) < logw
        y = Fb[acc] + math.sqrt(V) * rng.standard_normal(Fb[acc].shape)
        got.append(([_take(d, acc) for d in draws], y))
        tried += batch
    reps = [_concat([g[0][k] for g in got], K) for k in range(M)]
    y = np.concatenate([g[1] for g in got])[:K]
    for d in reps:
        d.y = y
    return reps, y, K / tried


def _take(d, idx):
    return R.JointDraw([W[idx] for W in d.weights], [Z[idx] for Z in d.pre], [H[idx] for H in d.post], d.y[idx],
                       d.lam_w[idx], d.lam_b[idx], d.delta_y[idx])


def _concat(ds, K):
    c = lambda arrs: np.concatenate(arrs)[:K]
    return R.JointDraw([c([d.weights[l] for d in ds]) for l in range(len(ds[0].weights))],
                       [c([d.pre[h] for d in ds]) for h in range(len(ds[0].pre))],
                       [c([d.post[h] for d in ds]) for h in range(len(ds[0].post))],
                       c([d.y for d in ds]), c([d.lam_w for d in ds]), c([d.lam_b for d in ds]),
                       c([d.delta_y for d in ds]))


def check_geweke_tempered(seed, *, widths=(1, 2, 1), activation="relu", n=3, dz=0.3, dx=0.3, dy=1.0,
                          factors=(1.0, 3.0), learn_prior=False, output=True, K=5000, rounds=21, delta=1e-8,
                          twin=None) -> list[Check]:
    """Geweke test of the tempered kernel on the product joint (module doc): ``K`` chains start
    at exact draws of ``π``, alternate one tempered sweep (:func:`blockbayes.gibbs.tempering.step`)
    with ``y ~ π(y | s)`` (precision-weighted mean of the replicas' outputs; ``output``: ``Δ_y``
    tempered as in ``gibbs.run`` with a fixed ``Δ_y``) for ``rounds`` rounds; the statistics of every replica
    (:func:`validation.gibbs_checks._stats_of`) are compared with ``K`` independent exact draws."""
    net = bb.MLP(list(widths), activation, slope=0.2 if activation == "leaky_relu" else 0.01, prior_prec=1.0,
                 delta={"Z": dz, "X": dx, "y": dy})
    nets = T.replica_nets(net, factors, output)
    M = len(nets)
    rng = np.random.default_rng(seed)
    Xin = rng.standard_normal((n, widths[0]))
    pilot, _, rate = _product_joint_draws(rng, nets, Xin, K, learn_prior=learn_prior)
    marg, _, _ = _product_joint_draws(rng, nets, Xin, K, learn_prior=learn_prior)
    start, y, _ = _product_joint_draws(rng, nets, Xin, K, learn_prior=learn_prior)
    tst = T.TemperingState(tuple(G._make_state(d, np.float64) for d in start), np.zeros((M - 1, K)),
                           np.zeros(M - 1), 0)
    caches = tuple(gibbs.precompute(nk, Xin, learn_prior=learn_prior) for nk in nets)
    key = bbr.key(seed)
    with install_swap_twin(twin):
        for _ in range(rounds):
            key, sub = bbr.split(key)
            tst, _ = T.step(sub, tst, nets, caches, Xin, y, output=output, learn_prior=learn_prior, hyperprior=G.HP)
            F = np.stack([R.affine(r.post[-1], r.weights[-1]) for r in tst.replicas])
            m, V = _y_given(F, nets)
            y = m + math.sqrt(V) * rng.standard_normal(y.shape)
    acc = tst.accept_sum.mean(axis=1) / np.maximum(tst.proposed, 1)

    def stats(k, st, yy):
        s = G._stats_of(nets[k], Xin, st.weights, st.pre, st.post, yy, st.lam_w, st.lam_b, st.delta_y, False,
                        learn_prior)
        s.update(_noise_stats(nets[k], Xin, st.weights, st.pre, st.post))
        return {f"replica {k} {nm}": v for nm, v in s.items()}

    A, B, P = {}, {}, {}
    for k in range(M):
        A.update(stats(k, marg[k], marg[k].y))
        B.update(stats(k, tst.replicas[k], y))
        P.update(stats(k, pilot[k], pilot[k].y))
    tag = (f"geweke-tempered[{activation} {'x'.join(map(str, widths))} n={n} ladder {tuple(factors)}"
           f"{' Δ_y tempered' if output else ''}"
           f"{' +prior' if learn_prior else ''}; swap accept {np.round(acc, 2).tolist()}, rejection rate {rate:.3f}]")
    out = [S.finite_check(f"{tag}: finite", *[a for r in tst.replicas for a in (*r.weights, *r.pre, *r.post)], y)]
    return out + G._compare(tag, A, B, G._scales(P), delta)


_REPLICA_GRIDS = {}


def _replica_grid(activation, t, output=True, G_fine=41, G_coarse=31):
    """Grids of the suite's tiny problem (its data) with hidden ``Δ`` (and ``Δ_y`` if ``output``) times ``t``."""
    key = (activation, t, output, G_fine, G_coarse)
    if key not in _REPLICA_GRIDS:
        net, s, x, y, (dz, dx, dy), prec, fine, coarse, outside = G.tiny_reference(activation)
        if t == 1.0:
            _REPLICA_GRIDS[key] = (fine, coarse, outside)
        else:
            ty = t * dy if output else dy
            f, (lo, hi), o = R.tiny_grid(x, y, prec, t * dz, t * dx, ty, s, G=G_fine)
            _REPLICA_GRIDS[key] = (f, R.TinyGrid(x, y, prec, t * dz, t * dx, ty, s, lo, hi, G_coarse), o)
    return _REPLICA_GRIDS[key]


def check_tiny_grid_tempered(seed, *, activation="relu", factors=(1.0, 3.0), output=True, K=2000, sweeps=11,
                             delta=1e-8, twin=None) -> list[Check]:
    """§E.2 with replica exchange: every replica of ``K`` chains starts at an exact draw of its own
    posterior (grid per replica, same data), ``sweeps`` tempered sweeps; the end states of replica
    0 and of the hottest replica are tested against their grid marginals (KS with the grid-error
    inflation and empirical Bernstein of ``E tanh((θ − μ)/sd)``, as
    :func:`validation.gibbs_checks.check_tiny_grid`; Bonferroni over ``delta``)."""
    net, s, x, y, (dz, dx, dy), prec, *_ = G.tiny_reference(activation)
    nets = T.replica_nets(net, factors, output)
    M = len(nets)
    rng = np.random.default_rng(seed)
    X, Y = x[:, None], y[:, None]
    reps, worst = [], 0.0
    for k, t in enumerate(factors):
        fine, coarse, outside = _replica_grid(activation, float(t), output)
        theta, wr, _ = R.tiny_exact_draws(rng, fine, K)
        worst = max(worst, wr)
        ty = t * dy if output else dy
        Zs, Hs = R.tiny_aux_draws(rng, theta, x, y, t * dz, t * dx, ty, s)
        reps.append(gibbs.GibbsState((theta[:, None, 0:2].copy(), theta[:, None, 2:4].copy()), (Zs[..., None],),
                                     (Hs[..., None],), np.tile(np.asarray(net.lam_w), (K, 1)),
                                     np.tile(np.asarray(net.lam_b), (K, 1)), np.full(K, ty)))
    tst = T.TemperingState(tuple(reps), np.zeros((M - 1, K)), np.zeros(M - 1), 0)
    caches = tuple(gibbs.precompute(nk, X) for nk in nets)
    key = bbr.key(seed)
    with install_swap_twin(twin):
        for _ in range(sweeps):
            key, sub = bbr.split(key)
            tst, _ = T.step(sub, tst, nets, caches, X, Y, output=output)
    acc = tst.accept_sum.mean(axis=1) / np.maximum(tst.proposed, 1)
    tag = f"tiny-tempered[{activation} ladder {tuple(factors)}{' Δ_y tempered' if output else ''}; swap accept {np.round(acc, 2).tolist()}]"
    out = [S.exact_check(f"{tag}: rejection envelopes valid (max p/q)", worst, 1.0)]
    tested = sorted({0, M - 1})
    d1 = delta / (len(tested) * 4 * 2)
    for k in tested:
        st = tst.replicas[k]
        fine, coarse, outside = _replica_grid(activation, float(factors[k]), output)
        end = np.stack([st.weights[0][:, 0, 0], st.weights[0][:, 0, 1], st.weights[1][:, 0, 0],
                        st.weights[1][:, 0, 1]], axis=1)
        out.append(S.finite_check(f"{tag} replica {k}: finite", end, st.pre[0], st.post[0]))
        for j, p in enumerate(G.PARAMS):
            t_ = end[:, j]
            e_grid = float(np.max(np.abs(fine.cdf(j, t_) - coarse.cdf(j, t_)))) + outside
            out.append(S.ks_check(f"{tag} replica {k} {p}: KS vs grid (+{e_grid:.1e} grid)", t_,
                                  lambda u, j=j, f=fine: f.cdf(j, u), d1, inflate=e_grid))
            mu, sd = fine.mean[j], fine.sd[j]
            g = lambda u, mu=mu, sd=sd: np.tanh((u - mu) / sd)
            e_mean = abs(fine.expect(j, g) - coarse.expect(j, g)) + 2 * outside
            out.append(S.eb_mean_check(f"{tag} replica {k} {p}: E tanh((θ-μ)/sd) vs grid", g(t_), fine.expect(j, g),
                                       -1.0, 1.0, d1, inflate=e_mean))
    return out
