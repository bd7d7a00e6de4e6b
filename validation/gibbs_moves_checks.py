"""Exactness checks of the non-centred layer move (:mod:`blockbayes.gibbs.moves`) and its twins.

Same machinery as :mod:`validation.gibbs_checks` (Geweke joint-distribution test and the tiny-net
grid of MATH.md §E.2), with the move switched on. The move's kernel parameters (Gauss–Newton
preconditioner, step size) must not depend on the chain they are applied to — otherwise a chain
started at an exact draw is no longer moved by a fixed kernel — so they are computed from an
*independent* set of exact draws (the Geweke pilot; for the grid, the draws of the next chain,
which are i.i.d.) and held fixed, as ``gibbs.run`` holds them fixed after warm-up.

Twins (patched into :mod:`blockbayes.gibbs.moves` by :func:`install_move_twin`):

=====================  ==========================================================================
twin                   planted bug
=====================  ==========================================================================
``mala_no_q``          acceptance ratio without ``log q(W|W') − log q(W'|W)`` (the proposal's drift
                       treated as symmetric: a dropped term)
``move_no_prior``      acceptance ratio without the prior term ``−½λ‖W‖²`` of the moved layer
``move_stale_latents`` the latents above the moved layer do not follow the weights (``Z, X`` kept,
                       as if the move were centred)
=====================  ==========================================================================

Twins of the joint HMC move (:mod:`blockbayes.gibbs.hmc`, patched by the same function):

=====================  ==========================================================================
``hmc_no_kinetic``     acceptance ratio without the kinetic-energy change ``K(p) − K(p')``
``hmc_no_prior``       acceptance ratio without the prior terms ``−½λ‖W‖²`` of the weights (the
                       gradient still has them)
``hmc_adapted_mass``   the mass matrix recomputed at the chain's current state before every
                       trajectory (adaptation that never stops: a state-dependent kernel)
=====================  ==========================================================================

Twins of the unit redraw move (:mod:`blockbayes.gibbs.redraw`, patched by the same function):

=====================  ==========================================================================
``redraw_wide``        the row proposed at 2× the prior sd, the ratio not corrected for it
``redraw_prior_ratio`` the row's prior ratio ``−½λ(‖w'‖² − ‖w‖²)`` added to the likelihood ratio
                       (it already cancels against the proposal)
=====================  ==========================================================================

Twins of the partially collapsed row move (:mod:`blockbayes.gibbs.collapsed`, patched by the same function):

=============================  ==================================================================
``collapsed_branch_weight``    the collapsed density's off-branch weight ``Φ(−√τ₋ m₋)`` (ReLU:
                               ``Φ(−a/√Δ_Z)``) with the wrong sign, ``Φ(+√τ₋ m₋)``
``collapsed_no_prior``         the acceptance ratio without the row's prior term ``−½Σλw²``
``collapsed_z_prior``          ``Z`` redrawn after the rows from ``N(a, Δ_Z)`` (its prior given the
                               row) instead of its full conditional (A.3)
=============================  ==================================================================

Twin of the mixed-precision rule (:func:`blockbayes.gibbs.hmc.prepare_dynamics`):

=========================  ======================================================================
``hmc_asymmetric_force``   the interior kicks with half the gradient, and the start's kick with
                           another force than the end's (the negated gradient): the proposal is
                           no longer an involution with the momentum flip
=========================  ======================================================================

Controls (must PASS — not bugs for exactness): ``hmc_interior_force`` (the interior kicks with half
the gradient, the exact force at both ends: the mixed-precision rule with a grossly wrong interior
force in place of the float32 one) and ``hmc_wrong_gradient`` (the backprop drops the
``f'(Z)`` factor). Leapfrog is a composition of shears whatever the force field, volume preserving
and reversible, so HMC with any position-dependent force is exact; a wrong gradient only lowers
the acceptance. It is caught by the finite-difference unit test (tests/test_gibbs_hmc.py), not by
an exactness test.
"""
from __future__ import annotations

import contextlib

import numpy as np
from scipy.special import log_ndtr

import blockbayes as bb
from blockbayes import gibbs
from blockbayes.gibbs import moves as gibbs_moves
from blockbayes._backend import random as bbr
from blockbayes.testing import Check

from . import _refs as R
from . import _stats as S
from . import gibbs_checks as G

from blockbayes.gibbs import hmc as gibbs_hmc
from blockbayes.gibbs import collapsed as gibbs_collapsed
from blockbayes.kernels import reference as kernels_reference
from blockbayes.gibbs import redraw as gibbs_redraw

MOVE_TWINS = ("mala_no_q", "move_no_prior", "move_stale_latents", "hmc_no_kinetic", "hmc_no_prior",
              "hmc_adapted_mass", "hmc_wrong_gradient", "hmc_interior_force", "hmc_asymmetric_force", "redraw_wide",
              "redraw_prior_ratio", "collapsed_branch_weight", "collapsed_no_prior", "collapsed_z_prior")


@contextlib.contextmanager
def install_move_twin(name):
    """Patch move twin ``name`` into :mod:`blockbayes.gibbs.moves` (``None``: no-op)."""
    if name is None:
        yield
        return
    module = gibbs_moves
    if name == "hmc_no_kinetic":
        module, attr = gibbs_hmc, "hmc_log_accept"
        new = lambda lp0, lp1, k0, k1: lp1 - lp0
    elif name == "hmc_no_prior":
        module, attr = gibbs_hmc, "log_target_from_sse"
        new = lambda theta, sse, lam, dy: -sse / (2.0 * dy)
    elif name == "hmc_adapted_mass":
        module, attr = gibbs_hmc, "hmc_trajectories"
        orig = gibbs_hmc.hmc_trajectories

        def new(key, state, net, X, T, R_, inv_mass, h, steps, trajectories, jitter, precision="float64", drift=None):
            Rn, Mn = gibbs_hmc._mass(state, net, X, 256, 1.0)     # (the held float32 drift is of the old mass)
            return orig(key, state, net, X, T, Rn, Mn, h, steps, trajectories, jitter, precision)
    elif name == "hmc_wrong_gradient":
        # the data term from the reference kernel with f'(Z) = 1 in its backprop (the forward
        # pass, and so log π, unchanged)
        module, attr = gibbs_hmc, "frozen_noise_target"
        orig = gibbs_hmc.frozen_noise_target

        def new(*a, **k):
            k["impl"] = "reference"
            inner = orig(*a, **k)

            def target(theta):
                saved = kernels_reference._frozen_dact
                kernels_reference._frozen_dact = lambda xp, Z, act, slope: xp.ones_like(Z)
                try:
                    return inner(theta)
                finally:
                    kernels_reference._frozen_dact = saved

            return target
    elif name in ("hmc_interior_force", "hmc_asymmetric_force"):
        # the mixed-precision rule of prepare_dynamics amplified: the interior kicks use HALF the
        # gradient (a grossly wrong force instead of a float32-rounded one). The control keeps the
        # exact force at both ends (symmetric under reversal: must stay exact); the twin gives the
        # start's kick another force than the end's (the negated gradient: the ends' rule is not
        # symmetric, the proposal not an involution with the momentum flip; must be caught)
        module, attr = gibbs_hmc, "prepare_dynamics"
        orig = gibbs_hmc.prepare_dynamics
        asym = name == "hmc_asymmetric_force"

        def new(*a, **k):
            dyn = orig(*a, **k)

            def half(theta):
                lp, g, sse = dyn.target(theta)
                return lp, 0.5 * g, sse

            if not asym:
                return dyn._replace(interior=half)

            def target(theta):                  # the start's force is read from the first target call
                new.calls += 1
                if new.calls == 1:
                    lp, g, sse = dyn.target(theta)
                    return lp, -g, sse
                return dyn.target(theta)

            new.calls = 0
            return dyn._replace(interior=half, target=target)
    elif name == "redraw_wide":
        module, attr = gibbs_redraw, "prior_row_draw"
        new = lambda E, lam_row: 2.0 * E / np.sqrt(lam_row)
    elif name == "redraw_prior_ratio":
        module, attr = gibbs_redraw, "redraw_log_accept"
        new = lambda sse_new, sse_old, w_new, w_old, lam_row, dy: (sse_old - sse_new) / (2.0 * dy) - \
            0.5 * np.sum(lam_row * (w_new ** 2 - w_old ** 2), axis=-1)
    elif name == "collapsed_branch_weight":
        module, attr = gibbs_collapsed, "collapsed_log_lik"

        def new(A, Xp, dz, dx, activation, slope=0.0):
            al = float(slope) if activation == "leaky_relu" else 0.0
            s_pos, s_neg = dx + dz, dx + al * al * dz
            t_pos, t_neg = 1.0 / dz + 1.0 / dx, 1.0 / dz + al * al / dx
            pos = (-0.5 * np.log(2 * np.pi * s_pos) - (Xp - A) ** 2 / (2 * s_pos)
                   + log_ndtr((A / dz + Xp / dx) / np.sqrt(t_pos)))
            neg = (-0.5 * np.log(2 * np.pi * s_neg) - (Xp - al * A) ** 2 / (2 * s_neg)
                   + log_ndtr(+(A / dz + al * Xp / dx) / np.sqrt(t_neg)))      # planted: sign of the weight
            return np.logaddexp(neg, pos)
    elif name == "collapsed_no_prior":
        module, attr = gibbs_collapsed, "collapsed_row_log_target"

        def new(W, H, Xp, lam_row, dz, dx, activation, slope=0.0):
            return np.sum(gibbs_collapsed.collapsed_log_lik(R.affine(H, W), Xp, dz, dx, activation, slope), axis=-2)
    elif name == "collapsed_z_prior":
        module, attr = gibbs_collapsed, "sample_pre"

        def new(key, A, Xp, dz, dx, activation, slope):
            return A + np.sqrt(dz) * bbr.normal(key, A.shape, like=A)
    elif name == "mala_no_q":
        attr = "log_proposal_ratio"
        new = lambda R_, W, Wp, g, gp, h: np.zeros(W.shape[0], dtype=W.dtype)
    elif name == "move_no_prior":
        attr = "log_target"
        new = lambda Wl, out, T, lam_w, lam_b, dy: -np.sum((T - out) ** 2, axis=(-2, -1)) / (2.0 * dy)
    elif name == "move_stale_latents":
        attr = "frozen_noise_forward"
        orig = gibbs_moves.frozen_noise_forward

        def new(Wl, state, net, X, l, xi, eta):
            pre, post, out = orig(Wl, state, net, X, l, xi, eta)
            return [state.pre[m] for m in range(l, net.num_layers - 1)], \
                   [state.post[m] for m in range(l, net.num_layers - 1)], out
    else:
        raise ValueError(f"unknown move twin {name!r}; choose from {MOVE_TWINS}")
    old = getattr(module, attr)
    setattr(module, attr, new)
    try:
        yield
    finally:
        setattr(module, attr, old)


def _noise_stats(net, Xin, W, Z, Xh):
    """Mean squared standardised noises ``ξ²``, ``η²`` per hidden layer (what ties latents to weights)."""
    out = {}
    H = np.broadcast_to(Xin, (W[0].shape[0],) + Xin.shape)
    for h in range(len(Z)):
        xi = (Z[h] - R.affine(H, W[h])) / np.sqrt(net.delta_z[h])
        eta = (Xh[h] - R.act(Z[h], net.activation, net.slope if net.activation == "leaky_relu" else 0.0)) / np.sqrt(net.delta_x[h])
        out[f"mean xi{h + 2}^2"] = np.mean(xi ** 2, axis=(-2, -1))
        out[f"mean eta{h + 2}^2"] = np.mean(eta ** 2, axis=(-2, -1))
        H = Xh[h]
    return out


def _fixed_kernel(move, pilot_state, net, X, y, step):
    """Move state with preconditioners (mass matrices) from ``pilot_state`` and a fixed step ``h``."""
    ms = move.init(pilot_state, net, X, y)
    C = pilot_state.delta_y.shape[0]
    if isinstance(ms, gibbs_redraw.RedrawState):        # nothing tuned
        return ms
    if isinstance(ms, gibbs_hmc.JointHMCState):
        return ms._replace(log_step=np.full(C, np.log(step)))
    # non-centred and collapsed row moves: log h per layer; the collapsed move's proposal
    # precision is computed from the layer's inputs at every call (not the moved block)
    return ms._replace(log_step=tuple(np.full(C, np.log(step)) for _ in ms.layers))


def _accept(ms):
    return float(np.mean(ms.accept if isinstance(ms, gibbs_hmc.JointHMCState) else ms.accept[0]))


def unit_redraw(proposals=2):
    """The unit redraw move as the checks run it."""
    return gibbs_redraw.UnitRedrawMove(proposals=proposals)


def collapsed_rows(proposals=3):
    """The partially collapsed row move as the checks run it."""
    return gibbs_collapsed.CollapsedRowMove(proposals=proposals)


def _move_name(move):
    if move is None:
        return "NC-MALA"
    if isinstance(move, gibbs_collapsed.CollapsedRowMove):
        return "collapsed rows"
    return "unit redraw" if isinstance(move, gibbs_redraw.UnitRedrawMove) else "joint HMC"


def joint_hmc(leapfrog=5, prior_mass=1.0, precision="mixed"):
    """The joint HMC move as the checks run it (no jitter-free special case: jitter 0.2)."""
    return gibbs_hmc.JointHMCMove(leapfrog=leapfrog, prior_mass=prior_mass, precision=precision)


def check_geweke_move(seed, *, widths=(2, 3, 1), activation="relu", n=4, dz=0.05, dx=0.05, dy=0.5,
                      learn_noise=False, learn_prior=False, with_sweep=True, K=3000, rounds=30, steps=3,
                      step=0.8, precond="auto", delta=1e-8, twin=None, move=None) -> list[Check]:
    """Geweke test (§E.4, parallel-chain form) of ``[gibbs.step +] move.step`` with ``y`` redrawn.

    ``K`` chains start at exact joint draws; each round applies (optionally) one Gibbs sweep and
    ``steps`` non-centred MALA steps on every hidden layer's input weights, then redraws
    ``y ~ p(y | X^L, W^L, Δ_y)``. Final states are compared with ``K`` independent joint draws on
    every statistic of :func:`validation.gibbs_checks._stats_of` (KS and empirical Bernstein,
    Bonferroni over ``delta``). ``with_sweep=False`` tests the move alone (invariant though not
    ergodic: the noises stay fixed), which gives the most power against a broken move.
    """
    net = bb.MLP(list(widths), activation, slope=0.2 if activation == "leaky_relu" else 0.01, prior_prec=1.0,
                 delta={"Z": dz, "X": dx, "y": dy})
    rng = np.random.default_rng(seed)
    Xin = rng.standard_normal((n, widths[0]))
    kw = dict(learn_prior=learn_prior, learn_noise=learn_noise, hyperprior=G.HP)
    pilot = R.prior_joint_draw(rng, net, Xin, K, **kw)
    marg = R.prior_joint_draw(rng, net, Xin, K, **kw)
    start = R.prior_joint_draw(rng, net, Xin, K, **kw)
    name = _move_name(move)
    move = gibbs_moves.NonCentredMove(steps=steps, precond=precond) if move is None else move
    ms = _fixed_kernel(move, G._make_state(pilot, np.float64), net, Xin, pilot.y, step)
    st = G._make_state(start, np.float64)
    y = start.y
    cache = gibbs.precompute(net, Xin, learn_prior=learn_prior)
    key = bbr.key(seed)
    acc = []
    with install_move_twin(twin):
        for _ in range(rounds):
            key, k1, k2 = bbr.split(key, 3)
            if with_sweep:
                st, _ = gibbs.step(k1, st, net, Xin, y, learn_noise=learn_noise, learn_prior=learn_prior,
                                   hyperprior=G.HP, cache=cache)
            st, ms = move.step(k2, ms, st, net, Xin, y, warmup=False)
            acc.append(_accept(ms))
            y = R.affine(st.post[-1], st.weights[-1]) + np.sqrt(st.delta_y)[:, None, None] * rng.standard_normal(y.shape)
    def f(D, y_=None):
        out = G._stats_of(net, Xin, D.weights, D.pre, D.post, D.y if y_ is None else y_, D.lam_w, D.lam_b,
                          D.delta_y, learn_noise, learn_prior)
        out.update(_noise_stats(net, Xin, D.weights, D.pre, D.post))
        return out

    A = f(marg)
    B = f(st, y)
    tag = (f"geweke-move[{name} {activation} {'x'.join(map(str, widths))} n={n}{' +sweep' if with_sweep else ' move only'}"
           f"{' +noise' if learn_noise else ''}{' +prior' if learn_prior else ''} precond={precond}; accept {np.mean(acc):.2f}]")
    return [S.finite_check(f"{tag}: finite", *st.weights, *st.pre, *st.post, y)] + G._compare(tag, A, B, G._scales(f(pilot)), delta)


def check_tiny_grid_move(seed, *, activation="relu", K=2000, sweeps=10, steps=5, step=0.8, with_sweep=True,
                         delta=1e-8, twin=None, move=None) -> list[Check]:
    """§E.2 tiny-net grid with the move on: ``K`` chains started at exact posterior draws of the
    ``[1, 1, 1]`` net run ``sweeps`` rounds of [sweep +] ``steps`` MALA steps on ``(w, b₁)``; the
    end states must match the grid marginals (KS with the grid-error inflation, empirical
    Bernstein of ``E tanh((θ − μ)/sd)``; Bonferroni over ``delta``). Preconditioner of chain ``c``:
    the Gauss–Newton matrix at chain ``c + 1``'s exact start (independent of chain ``c``)."""
    net, s, x, y, (dz, dx, dy), prec, fine, coarse, outside = G.tiny_reference(activation)
    rng = np.random.default_rng(seed)
    theta, worst_ratio, _ = R.tiny_exact_draws(rng, fine, K)
    Zs, Hs = R.tiny_aux_draws(rng, theta, x, y, dz, dx, dy, s)
    C = K
    st = gibbs.GibbsState((theta[:, None, 0:2].copy(), theta[:, None, 2:4].copy()), (Zs[..., None],), (Hs[..., None],),
                          np.tile(np.asarray(net.lam_w), (C, 1)), np.tile(np.asarray(net.lam_b), (C, 1)),
                          np.full(C, dy))
    other = gibbs.GibbsState(tuple(np.roll(W, 1, axis=0) for W in st.weights), tuple(np.roll(Z, 1, axis=0) for Z in st.pre),
                             tuple(np.roll(H, 1, axis=0) for H in st.post), st.lam_w, st.lam_b, st.delta_y)
    X, Y = x[:, None], y[:, None]
    name = _move_name(move)
    move = gibbs_moves.NonCentredMove(steps=steps) if move is None else move
    ms = _fixed_kernel(move, other, net, X, Y, step)
    cache = gibbs.precompute(net, X)
    key = bbr.key(seed)
    acc = []
    with install_move_twin(twin):
        for _ in range(sweeps):
            key, k1, k2 = bbr.split(key, 3)
            if with_sweep:
                st, _ = gibbs.step(k1, st, net, X, Y, cache=cache)
            st, ms = move.step(k2, ms, st, net, X, Y, warmup=False)
            acc.append(_accept(ms))
    end = np.stack([st.weights[0][:, 0, 0], st.weights[0][:, 0, 1], st.weights[1][:, 0, 0], st.weights[1][:, 0, 1]], axis=1)
    tag = f"tiny-move[{name} {activation}{' +sweep' if with_sweep else ' move only'}; accept {np.mean(acc):.2f}]"
    out = [S.exact_check(f"{tag}: rejection envelope valid (max p/q)", worst_ratio, 1.0),
           S.finite_check(f"{tag}: finite", end, st.pre[0], st.post[0])]
    d1 = delta / (4 * 2)
    for j, p in enumerate(G.PARAMS):
        t = end[:, j]
        e_grid = float(np.max(np.abs(fine.cdf(j, t) - coarse.cdf(j, t)))) + outside
        out.append(S.ks_check(f"{tag} {p}: KS vs grid (+{e_grid:.1e} grid)", t, lambda u, j=j: fine.cdf(j, u), d1,
                              inflate=e_grid))
        mu, sd = fine.mean[j], fine.sd[j]
        g = lambda u, mu=mu, sd=sd: np.tanh((u - mu) / sd)
        e_mean = abs(fine.expect(j, g) - coarse.expect(j, g)) + 2 * outside
        out.append(S.eb_mean_check(f"{tag} {p}: E tanh((θ-μ)/sd) vs grid", g(t), fine.expect(j, g), -1.0, 1.0, d1,
                                   inflate=e_mean))
    return out
