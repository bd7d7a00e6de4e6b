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


def _dropped(terms, levels, net, n, what):
    """The part ``what`` of :func:`blockbayes.gibbs.tempering.replica_log_joint` (the twins drop
    exactly it): ``"output"`` the output term ``log N(T; F, Δ_y)``, ``"post"`` the post-activation
    densities ``log N(X; f(Z), Δ_X)``, ``"norm"`` the hidden layers' Gaussian normalising constants."""
    two_pi = 2 * np.pi
    if what == "output":
        dy = terms.delta_y if levels.y is None else levels.y
        return -0.5 * n * net.d_out * np.log(two_pi * dy) - terms.q_y / (2 * dy)
    total = 0.0
    for h in range(net.num_layers - 1):
        m = n * net.widths[h + 1]
        if what == "post":
            total = total - 0.5 * m * np.log(two_pi * levels.x[h]) - terms.q_x[h] / (2 * levels.x[h])
        else:
            total = total - 0.5 * m * (np.log(two_pi * levels.z[h]) + np.log(two_pi * levels.x[h]))
    return total


@contextlib.contextmanager
def install_swap_twin(name):
    """Patch swap twin (or control) ``name`` into :mod:`blockbayes.gibbs.tempering` (``None``: no-op)."""
    if name is None:
        yield
        return
    orig_lj = T.replica_log_joint
    attr = "replica_log_joint"
    if name == "swap_likelihood_only":
        new = lambda terms, levels, net, n: _dropped(terms, levels, net, n, "output")
    elif name == "swap_no_post_density":
        new = lambda terms, levels, net, n: orig_lj(terms, levels, net, n) - _dropped(terms, levels, net, n, "post")
    elif name == "swap_no_normalisers":
        new = lambda terms, levels, net, n: orig_lj(terms, levels, net, n) - _dropped(terms, levels, net, n, "norm")
    elif name == "swap_mixed_normalisers":
        attr = "pair_log_ratios"

        def new(terms, levels, net, n):
            M = terms.q_y.shape[0]
            rows = T._rows
            own = orig_lj(terms, levels, net, n)
            up_t, up_l = rows(terms, 0, M - 1), rows(levels, 1, M)
            dn_t, dn_l = rows(terms, 1, M), rows(levels, 0, M - 1)
            up = orig_lj(up_t, up_l, net, n) - _dropped(up_t, up_l, net, n, "norm")
            down = orig_lj(dn_t, dn_l, net, n) - _dropped(dn_t, dn_l, net, n, "norm")
            return (down - own[:M - 1]) + (up - own[1:])
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
    tst = T.TemperingState.from_replicas([G._make_state(d, np.float64) for d in start], np.zeros((M - 1, K)),
                                         np.zeros(M - 1), 0)
    lad = T.ladder(net, Xin, factors, K, output=output, learn_prior=learn_prior)
    key = bbr.key(seed)
    with install_swap_twin(twin):
        for _ in range(rounds):
            key, sub = bbr.split(key)
            tst, _ = T.step(sub, tst, lad, Xin, y, learn_prior=learn_prior, hyperprior=G.HP)
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
    tst = T.TemperingState.from_replicas(reps, np.zeros((M - 1, K)), np.zeros(M - 1), 0)
    lad = T.ladder(net, X, factors, K, output=output)
    key = bbr.key(seed)
    with install_swap_twin(twin):
        for _ in range(sweeps):
            key, sub = bbr.split(key)
            tst, _ = T.step(sub, tst, lad, X, Y)
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


BATCH_TWINS = ("replica_wrong_delta",)


def check_batched_equals_loop(seed, *, widths=(1, 2, 1), n=3, dz=0.3, dx=0.3, dy=0.5, factors=(1.0, 2.0, 4.0),
                              output=True, K=20000, delta=1e-8, twin=None) -> list[Check]:
    """The batched sweep of the replicas equals the per-replica loop in law.

    From one fixed state per replica (each tiled over ``K`` chains), one sweep of all replicas by
    :func:`blockbayes.gibbs.tempering.step`'s kernel part — one
    :func:`blockbayes.gibbs.kernel.step` of the ``M·K`` chains with per-chain ``Δ``
    (``delta_scale``) — and one sweep per replica by :func:`blockbayes.gibbs.kernel.step` under
    that replica's net (``K`` chains, its own key: the loop the tempered sweep was before it was
    batched). The two use different random streams (the fused kernels key their draws by the
    chain index among all chains), so they are compared in law: two-sample KS of every scalar of
    every replica's new state (weights, ``Z``, ``X``), Bonferroni over ``delta`` (false failure
    ≤ ``delta``). Twin ``"replica_wrong_delta"``: replica 1 swept with replica 2's factor in the
    batched call (its ``Δ_y`` still its own)."""
    from blockbayes.gibbs import kernel as K_

    net = bb.MLP(list(widths), "relu", slope=0.01, prior_prec=1.0, delta={"Z": dz, "X": dx, "y": dy})
    nets = T.replica_nets(net, factors, output)
    M = len(nets)
    rng = np.random.default_rng(seed)
    Xin = rng.standard_normal((n, widths[0]))
    y = rng.standard_normal((n, widths[-1]))
    reps = []
    for k, nk in enumerate(nets):
        s1 = K_.init(bbr.key(seed + 100 + k), nk, Xin, y, num_chains=1, init="prior")
        reps.append(T._map_state(lambda a: np.repeat(a, K, axis=0), s1))
    start = T.stack_replicas(reps)
    tf = tuple(factors)
    if twin == "replica_wrong_delta":
        tf = (tf[0], tf[2]) + tf[2:]
    elif twin is not None:
        raise ValueError(f"unknown twin {twin!r}; choose from {BATCH_TWINS}")
    lad = T.ladder(net, Xin, tf, K, output=output)
    kb, kl = bbr.split(bbr.key(seed), 2)
    batched, _ = K_.step(kb, start, net, Xin, y, cache=lad.cache, delta_scale=lad.scale, checked=True)
    keys = bbr.split(kl, M)
    tag = f"batched-vs-loop[relu {'x'.join(map(str, widths))} n={n} ladder {tuple(factors)}{' Δ_y tempered' if output else ''}]"
    pairs = []
    for k, nk in enumerate(nets):
        loop, _ = K_.step(keys[k], reps[k], nk, Xin, y, cache=K_.precompute(nk, Xin), checked=True)
        b = T.chain_slice(batched, k * K, (k + 1) * K)
        for name, u, v in ([(f"W{l + 1}", b.weights[l], loop.weights[l]) for l in range(len(widths) - 1)]
                           + [(f"Z{h + 2}", b.pre[h], loop.pre[h]) for h in range(len(widths) - 2)]
                           + [(f"X{h + 2}", b.post[h], loop.post[h]) for h in range(len(widths) - 2)]):
            u2, v2 = u.reshape(K, -1), v.reshape(K, -1)
            pairs += [(f"{tag} replica {k} {name}[{j}]", u2[:, j], v2[:, j]) for j in range(u2.shape[1])]
    d1 = S.split(delta, len(pairs))
    return [S.finite_check(f"{tag}: finite", *[a for _, a, _ in pairs])] + \
        [S.two_sample_ks(nm, u, v, d1) for nm, u, v in pairs]
