"""Exactness checks of the blocked (data-parallel) scan of :mod:`blockbayes.distributed`.

The blocked sweep (docs/distributed.md) — all latents | weights on row shards, one reduction,
all weights and hyperparameters | latents on the driver — must leave the posterior invariant,
whatever the shard layout. Two experiments, both with i.i.d. chains started at exact draws (so
the bounds of :mod:`validation._stats` are exact, Bonferroni over the statistics):

* :func:`check_tiny_grid_blocked` — one-hidden-unit net, chains started at exact posterior draws
  (grid rejection), ``sweeps`` blocked sweeps on ``num_shards`` shards, states compared with the
  quadrature marginals (the §E.2 experiment of :func:`validation.gibbs_checks.check_tiny_grid`).
* :func:`check_geweke_blocked` — the §E.4 Geweke joint-distribution test through the blocked
  sweep, hyperparameters learned.

Broken twin ``"shard_twice"``: the reduction adds shard 0's statistics twice (as a reduction
that re-counts a retried or duplicated shard would), i.e. the weights see a data set with those
rows duplicated. The experiments must catch it.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from blockbayes import distributed as dd
from blockbayes import gibbs
from blockbayes._backend import random as bbr
from blockbayes.distributed import _run
from blockbayes.distributed._shard import tree_sum

from . import _refs as R
from . import _stats as S
from .gibbs_checks import HP, PARAMS, Config, _compare, _make_state, _scales, _stats_of, tiny_reference

TWINS = ("shard_twice",)


@contextmanager
def install(twin):
    """Patch the blocked sweep's reduction with the named bug (``None``: no change)."""
    if twin is None:
        yield
        return
    if twin != "shard_twice":
        raise ValueError(f"unknown twin {twin!r}; known: {TWINS}")
    orig = _run.reduce_stats
    _run.reduce_stats = lambda parts: tree_sum(list(parts) + list(parts[:1]))
    try:
        yield
    finally:
        _run.reduce_stats = orig


def check_tiny_grid_blocked(seed, *, K=2000, sweeps=10, num_shards=2, activation="relu", G=41, delta=1e-8,
                            twin=None):
    """Chains started at exact posterior draws of the tiny net must match the grid marginals
    after ``sweeps`` blocked sweeps on ``num_shards`` row shards (KS with the DKW bound inflated
    by the grid error, and empirical-Bernstein on ``E tanh((θ − μ)/sd)``; see
    :func:`validation.gibbs_checks.check_tiny_grid` for the reference)."""
    net, s, x, y, (dz, dx, dy), prec, fine, coarse, outside = tiny_reference(activation, G=G)
    rng = np.random.default_rng(seed)
    theta, worst_ratio, _ = R.tiny_exact_draws(rng, fine, K)
    Zs, Hs = R.tiny_aux_draws(rng, theta, x, y, dz, dx, dy, s)
    st = gibbs.GibbsState((theta[:, None, 0:2].copy(), theta[:, None, 2:4].copy()), (Zs[..., None],), (Hs[..., None],),
                          np.tile(np.asarray(net.lam_w), (K, 1)), np.tile(np.asarray(net.lam_b), (K, 1)),
                          np.full(K, dy))
    X, Y = x[:, None], y[:, None]
    key = bbr.key(seed)
    with install(twin):
        for t in range(sweeps):
            st, _ = dd.step(dd.fold_in(key, t), st, net, X, Y, num_shards=num_shards)
    end = np.stack([st.weights[0][:, 0, 0], st.weights[0][:, 0, 1], st.weights[1][:, 0, 0], st.weights[1][:, 0, 1]],
                   axis=1)
    tag = f"tiny-blocked[{activation}, {num_shards} shards]"
    out = [S.exact_check(f"{tag}: rejection envelope valid (max p/q)", worst_ratio, 1.0),
           S.finite_check(f"{tag}: finite", end, st.pre[0], st.post[0])]
    m = 4 * 2 + 4
    d1 = delta / m
    for j, p in enumerate(PARAMS):
        t = end[:, j]
        e_grid = float(np.max(np.abs(fine.cdf(j, t) - coarse.cdf(j, t)))) + outside
        out.append(S.ks_check(f"{tag} after {sweeps} sweeps {p}: KS vs grid (+{e_grid:.1e} grid)", t,
                              lambda u, j=j: fine.cdf(j, u), d1, inflate=e_grid))
        mu, sd = fine.mean[j], fine.sd[j]
        g = lambda u, mu=mu, sd=sd: np.tanh((u - mu) / sd)
        e_mean = abs(fine.expect(j, g) - coarse.expect(j, g)) + 2 * outside
        out.append(S.eb_mean_check(f"{tag} {p}: E tanh((θ-μ)/sd) vs grid", g(t), fine.expect(j, g), -1.0, 1.0, d1,
                                   inflate=e_mean))
        out.append(S.eb_paired_check(f"{tag} {p}: E tanh((θ-μ)/sd) start vs end", np.tanh((theta[:, j] - mu) / sd),
                                     g(t), -1, 1, d1))
    return out


def check_geweke_blocked(seed, cfg: Config, *, K=4000, sweeps=20, num_shards=2, delta=1e-8, twin=None,
                         client=None):
    """§E.4 Geweke test of the blocked sweep: ``K`` successive-conditional chains from exact joint
    draws alternate one blocked sweep (on ``num_shards`` shards) with ``y ~ p(y | X^L, W^L, Δ_y)``;
    their final states against ``K`` marginal-conditional draws (two-sample KS and
    empirical-Bernstein tests, as :func:`validation.gibbs_checks.check_geweke`). With ``client`` the
    half sweeps run on Dask actors (one per shard) through :class:`DaskEngine`."""
    net = cfg.net()
    rng = np.random.default_rng(seed)
    Xin = rng.standard_normal((cfg.n, cfg.widths[0]))
    kw = dict(learn_prior=cfg.learn_prior, learn_noise=cfg.learn_noise, hyperprior=HP)
    pilot = R.prior_joint_draw(rng, net, Xin, K, **kw)
    marg = R.prior_joint_draw(rng, net, Xin, K, **kw)
    start = R.prior_joint_draw(rng, net, Xin, K, **kw)
    st = _make_state(start, np.float64)
    y = start.y
    key = bbr.key(seed)
    with install(twin):
        for t in range(sweeps):
            st, _ = dd.step(dd.fold_in(key, t), st, net, Xin, y, num_shards=num_shards, client=client, **kw)
            last = st.post[-1] if st.post else np.broadcast_to(Xin, (K,) + Xin.shape)
            y = R.affine(last, st.weights[-1]) + np.sqrt(st.delta_y)[:, None, None] * rng.standard_normal(y.shape)
    f = lambda D: _stats_of(net, Xin, D.weights, D.pre, D.post, D.y, D.lam_w, D.lam_b, D.delta_y, cfg.learn_noise,
                            cfg.learn_prior)
    A = f(marg)
    B = _stats_of(net, Xin, st.weights, st.pre, st.post, y, st.lam_w, st.lam_b, st.delta_y, cfg.learn_noise,
                  cfg.learn_prior)
    tag = f"geweke-blocked[{cfg.label}, {num_shards} shards{', dask' if client is not None else ''}]"
    return [S.finite_check(f"{tag}: finite", *st.weights, *st.pre, *st.post, y)] + _compare(tag, A, B, _scales(f(pilot)), delta)


def check_recover_exact(seed, *, K=4000, activation="relu", max_tries=1000, delta=1e-8):
    """A lost shard's latents redrawn by :meth:`blockbayes.distributed.Shard.recover` must be
    exact draws of ``p(z, h | θ, x, y)``: for the tiny net with ``K`` chains (``θ`` per chain
    from the exact posterior), each data row's recovered ``z_μ`` and ``h_μ`` against the same
    number of draws of the closed-form reference sampler
    (:func:`validation._refs.tiny_aux_draws`), two-sample KS (DKW) per row and variable.

    With ``max_tries=1`` every row keeps its first forward proposal (the prior conditional,
    ignoring ``y``): the broken twin, which must fail.
    """
    net, s, x, y, (dz, dx, dy), prec, fine, coarse, outside = tiny_reference(activation)
    rng = np.random.default_rng(seed)
    theta, _, _ = R.tiny_exact_draws(rng, fine, K)
    Zr, Hr = R.tiny_aux_draws(rng, theta, x, y, dz, dx, dy, s)
    W = [theta[:, None, 0:2].copy(), theta[:, None, 2:4].copy()]
    sh = dd.Shard(net, x[:, None], y[:, None], 0, x.size, num_chains=K)
    sh.recover(W, np.full(K, dy), bbr.key(seed), max_tries=max_tries)
    pre, post = sh.get_latents()
    Z, H = pre[0][..., 0], post[0][..., 0]
    tag = f"recover[{activation}{', 1 try (twin)' if max_tries == 1 else ''}]"
    d1 = delta / (2 * x.size)
    out = [S.finite_check(f"{tag}: finite", Z, H)]
    for mu in range(x.size):
        out.append(S.two_sample_ks(f"{tag} z[{mu}]: KS vs exact", Z[:, mu], Zr[:, mu], d1))
        out.append(S.two_sample_ks(f"{tag} h[{mu}]: KS vs exact", H[:, mu], Hr[:, mu], d1))
    return out
