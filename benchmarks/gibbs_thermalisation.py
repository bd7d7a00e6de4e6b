"""Planted teacher from zero init: fraction of seeds thermalised within a fixed wall-clock budget,
plain Gibbs vs Gibbs + non-centred layer moves, side by side in one process.

Piccioli et al.'s setting (BENCHMARKS.md): input d = 50, K = 10 ReLU units, scalar output,
n = 2084, n_test = 2000, fan-in prior (λ = 50 for layer 1, 10 for layer 2), all Δ equal. Every
seed is its own teacher, drawn from the prior, with its own noisy targets; the seeds share the
inputs and run as the chains of ONE vectorised sampler (per-chain targets ``y`` of shape
``(C, n, 1)``). A chain has *thermalised* once the test MSE of its noise-free network against the
teacher's noise-free network, on 2000 fresh inputs, is ≤ 3Δ (checked every ``--every`` sweeps).
The move runs in warm-up mode throughout (step size and preconditioner adapting): everything in
this experiment is warm-up. The ``hmc`` arm adds the joint all-layer non-centred HMC move
(:class:`~blockbayes.gibbs.hmc.JointHMCMove`, one trajectory after every sweep; its per-chain
mass matrix and step size adapt throughout, and the mass refreshes are charged to the budget),
optionally after ``--hmc-delay`` plain sweeps and with an annealed warm-up ``--hmc-anneal Δ_0``:
all of ``Δ_Z, Δ_X, Δ_y`` fall geometrically in wall-clock time, ``Δ(t) = max(Δ*, Δ_0 (Δ*/Δ_0)^{t/T})``
with ``T = --anneal-frac × budget``, then stay at ``Δ*``; every sweep and move is exact for the
posterior at that instant's ``Δ`` (the seeds are the chains of one sampler, so the move batches
them: per-chain mass matrices ``(C, P, P)``, ``P = 521``). A hit counts only at ``Δ = Δ*``
(test MSE ≤ 3Δ* checked once the annealing is over), and the ``end`` column counts the chains
with test MSE ≤ 3Δ at the budget's end. The optional ``map`` arm is not a zero start: each seed's chain starts
from the best of ``--map-restarts`` L-BFGS MAP fits of the standard network, and the fits' wall
time is charged to the arm's budget (what a user of ``gibbs.run(init="map")`` would pay); the
optional ``maphmc`` arm adds the ``hmc`` arm's move to those starts (no annealing, no delay).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/gibbs_thermalisation.py --delta 1e-3 1e-4 --seeds 32 --budget 150
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/gibbs_thermalisation.py --delta 1e-4 --seeds 32 --budget 300 --arms plain map
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/gibbs_thermalisation.py --delta 1e-4 --seeds 32 --budget 300 --arms plain hmc
    ... --arms plain hmc --leapfrog 8 --hmc-anneal 1e-1 --anneal-frac 0.6 --redraw 1   # + unit prior redraw
    ... --delta 1e-3 1e-4 --arms plain collapsed --collapsed-proposals 4   # partially collapsed rows (note 65)

``--redraw R`` adds the exact unit prior-redraw move (:class:`~blockbayes.gibbs.redraw.UnitRedrawMove`,
``R`` independent prior proposals of every hidden unit's input row per sweep, noises frozen) to
the hmc/maphmc arms, after the HMC move; its mean acceptance is printed as ``rd``.

The ``run`` arm is the same recipe as ``gibbs.run`` calls, what a user runs (session 11): one call
per seed (``--run-batched``: one call, seeds as chains), from zero, on a *sweep* budget
``--run-sweeps`` (default 925, the sweeps the vectorised ``hmc`` arm did in 300 s in session 10's
figure run), with ``schedule=AnnealedDelta(--hmc-anneal, fraction, output=True)`` annealing every
Δ (``Δ_y`` included) over the first ``--anneal-frac`` of the sweeps, then ``--run-settle`` warm-up
sweeps at ``Δ*`` (the HMC move's averaged-mass window, then its step-size window), then kept samples
every ``--run-thin`` sweeps; ``moves = ComposedMove((JointHMCMove(...), UnitRedrawMove(--redraw)))``.
A seed counts as thermalised when some kept sample (exact draws at ``Δ*``) has test MSE ≤ 3Δ*.
Wall and CPU time are printed for every arm.

    ... --arms plain hmc run --leapfrog 8 --hmc-anneal 1e-1 --anneal-frac 0.6 --redraw 1
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

import blockbayes as bb
from blockbayes import gibbs
from blockbayes._backend import random as bbr
from blockbayes.gibbs.anneal import AnnealedDelta
from blockbayes.gibbs.collapsed import CollapsedRowMove
from blockbayes.gibbs.hmc import JointHMCMove
from blockbayes.gibbs.moves import NonCentredMove
from blockbayes.gibbs.redraw import UnitRedrawMove


def teachers(seed, C, delta, d=50, K=10, n=2084, n_test=2000):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Xt = rng.standard_normal((n_test, d))
    W1 = rng.standard_normal((C, K, d + 1)) / np.sqrt(d)
    W2 = rng.standard_normal((C, 1, K + 1)) / np.sqrt(K)
    s = np.sqrt(delta)
    Z = np.einsum("nd,ckd->cnk", X, W1[..., :-1]) + W1[:, None, :, -1] + s * rng.standard_normal((C, n, K))
    H = np.maximum(Z, 0) + s * rng.standard_normal((C, n, K))
    y = np.einsum("cnk,cok->cno", H, W2[..., :-1]) + W2[:, None, :, -1] + s * rng.standard_normal((C, n, 1))
    Zt = np.einsum("nd,ckd->cnk", Xt, W1[..., :-1]) + W1[:, None, :, -1]
    ft = np.einsum("cnk,cok->cno", np.maximum(Zt, 0), W2[..., :-1]) + W2[:, None, :, -1]
    return X, y, Xt, ft


def test_mse(weights, Xt, ft):
    """Per-chain test MSE of the noise-free network ``weights = (W1, W2)`` (leading chain axis)."""
    W1, W2 = weights
    Z = np.einsum("nd,ckd->cnk", Xt, W1[..., :-1]) + W1[:, None, :, -1]
    f = np.einsum("cnk,cok->cno", np.maximum(Z, 0), W2[..., :-1]) + W2[:, None, :, -1]
    return np.mean((f - ft) ** 2, axis=(1, 2))


def map_start_weights(net, X, y, *, restarts, max_iter, seed):
    """Per-seed MAP weights of the standard network (best of ``restarts`` L-BFGS fits each)."""
    from blockbayes import laplace

    per = [laplace.map_fit(net, X, y[c], seed=seed * 1000 + c, restarts=restarts, max_iter=max_iter,
                           progress=False) for c in range(y.shape[0])]
    return tuple(np.stack([w[l] for w in per]) for l in range(net.num_layers))


def annealed_delta(delta, start, elapsed, duration):
    """``max(Δ*, Δ_0 (Δ*/Δ_0)^{t/T})`` at elapsed wall time ``t`` (``Δ*`` once ``t ≥ T`` or
    ``start`` is None or ``≤ Δ*``)."""
    if start is None or start <= delta or duration <= 0 or elapsed >= duration:
        return float(delta)
    return max(float(delta), float(start) * (delta / start) ** (elapsed / duration))


def planted_net(delta):
    """Piccioli's 50-10-1 ReLU net, fan-in prior, all Δ equal to ``delta``."""
    return bb.MLP([50, 10, 1], "relu", prior_prec="fan_in", delta=delta)


def jit_warmup(net, X, y):
    """One untimed sweep on one chain, so that no arm pays the kernels' first-call (numba cache
    load or compile) cost inside its budget."""
    state = gibbs.init(bbr.key(0), net, X, y[:1], num_chains=1, init="zero")
    gibbs.step(bbr.key(1), state, net, X, y[:1], cache=gibbs.precompute(net, X))


def run_arm(net, X, y, Xt, ft, delta, *, moves, budget, every, seed, start=None, delay=0, anneal=None,
            anneal_duration=0.0, start_weights=None, max_sweeps=None, redraw=None):
    """One arm. ``start``: None (zero init) or ``(restarts, max_iter)`` for MAP starts, whose
    fitting time is charged to the arm's budget. ``delay``: plain sweeps before ``moves`` start
    (their ``init`` is then done at that state, inside the budget). ``anneal``: ``Δ_0`` of a
    wall-clock annealing of every ``Δ`` (hidden and ``Δ_y``) down to ``delta`` over
    ``anneal_duration`` seconds; hits are counted only once ``Δ = delta``. ``start_weights``: given
    per-layer ``(C, d_{l+1}, d_l + 1)`` weights instead of zero (tests); ``max_sweeps``: stop there
    even inside the budget (tests). ``redraw``: a :class:`~blockbayes.gibbs.redraw.UnitRedrawMove`
    run after ``moves`` (same delay)."""
    xp = np
    C = y.shape[0]
    key = bbr.key(seed)
    k0, key = bbr.split(key)
    t0, c0 = time.perf_counter(), time.process_time()
    if start_weights is not None:
        state = gibbs.init(k0, net, X, y, num_chains=C, init=tuple(start_weights))
    elif start is None:
        state = gibbs.init(k0, net, X, y, num_chains=C, init="zero")
    else:
        w = map_start_weights(net, X, y, restarts=start[0], max_iter=start[1], seed=seed)
        state = gibbs.init(k0, net, X, y, num_chains=C, init=w)
    cache = gibbs.precompute(net, X)
    gram = cache.gram0
    cur_delta = float(delta)
    net_t = net
    mstate = rstate = None
    rd_acc = []
    hit_sweep = np.full(C, -1)
    hit_time = np.full(C, np.nan)
    fit_s = time.perf_counter() - t0
    sweeps = 0
    while (time.perf_counter() - t0 < budget or sweeps == 0) and (max_sweeps is None or sweeps < max_sweeps):
        if anneal is not None:
            d_t = annealed_delta(delta, anneal, time.perf_counter() - t0, anneal_duration)
            if d_t != cur_delta:
                cur_delta = d_t
                net_t = net if d_t == delta else planted_net(d_t)
                cache = gibbs.precompute(net_t, X, gram=gram)
                state = state._replace(delta_y=xp.full((C,), d_t, dtype=state.delta_y.dtype))
        key, k1, k2 = bbr.split(key, 3)
        state, _ = gibbs.step(k1, state, net_t, X, y, cache=cache)
        if moves is not None and sweeps >= delay:
            if mstate is None:
                mstate = moves.init(state, net_t, X, y)
            state, mstate = moves.step(k2, mstate, state, net_t, X, y, warmup=True)
        if redraw is not None and sweeps >= delay:
            if rstate is None:
                rstate = redraw.init(state, net_t, X, y)
            key, k3 = bbr.split(key)
            state, rstate = redraw.step(k3, rstate, state, net_t, X, y, warmup=True)
            rd_acc.append(float(np.mean(np.asarray(rstate.accept[0]))))
        sweeps += 1
        if sweeps % every == 0 and cur_delta == delta:
            mse = test_mse(state.weights, Xt, ft)
            new = (hit_sweep < 0) & (mse <= 3 * delta)
            hit_sweep[new] = sweeps
            hit_time[new] = time.perf_counter() - t0
    mse = test_mse(state.weights, Xt, ft)
    acc = float("nan")
    if mstate is not None:
        acc = float(np.mean(mstate.accept[0] if isinstance(moves, (NonCentredMove, CollapsedRowMove)) else mstate.accept))
    return dict(sweeps=sweeps, frac=float(np.mean(hit_sweep >= 0)), hits=int(np.sum(hit_sweep >= 0)), fit_s=fit_s,
                t_med=float(np.nanmedian(hit_time)) if np.any(hit_sweep >= 0) else float("nan"),
                mse_med=float(np.median(mse)), wall=time.perf_counter() - t0, cpu=time.process_time() - c0, accept=acc,
                end=int(np.sum(mse <= 3 * delta)), mse=mse, delta_end=cur_delta, weights=tuple(state.weights),
                redraw_accept=float(np.mean(rd_acc)) if rd_acc else float("nan"),
                step=(float(np.exp(np.mean(np.asarray(mstate.log_step))))
                      if mstate is not None and hasattr(mstate, "log_step") else float("nan")))


def run_plan(total, anneal_frac, settle, thin):
    """Sweep counts of the ``run`` arm: ``(num_warmup, fraction, num_samples, average_from, terminal)``.

    ``T_a = round(anneal_frac · total)`` annealed sweeps (the wall-clock recipe's 60% of its budget,
    in sweeps), then ``settle`` warm-up sweeps at ``Δ*`` — the first half the joint HMC move's
    averaged-mass window, the second half its step-size-only terminal window — so ``num_warmup =
    T_a + settle``, ``fraction = T_a / num_warmup``, ``average_from = fraction`` (averaging starts
    when the annealing ends), ``terminal = ⌊settle/2⌋ / num_warmup``; the rest of ``total`` is kept
    every ``thin`` sweeps."""
    Ta = int(round(anneal_frac * total))
    W = Ta + int(settle)
    S = (int(total) - W) // int(thin)
    if Ta < 1 or S < 1:
        raise ValueError(f"total={total} leaves no annealing or no kept sample (T_a={Ta}, warm-up {W}, thin {thin})")
    return W, Ta / W, S, Ta / W, (int(settle) // 2) / W


def recipe_moves(leapfrog, redraw, *, average_from, terminal, prior_mass=100.0, refresh_every=25, init_step=0.3):
    """The recipe's moves for ``gibbs.run``: the joint HMC move, then (``redraw > 0``) the unit redraw."""
    hmc = JointHMCMove(leapfrog=leapfrog, prior_mass=prior_mass, refresh_every=refresh_every, init_step=init_step,
                       average_from=average_from, terminal=terminal)
    return gibbs.ComposedMove((hmc, UnitRedrawMove(proposals=redraw))) if redraw else hmc


def run_recipe_arm(net, X, y, Xt, ft, delta, *, total, anneal, anneal_frac, settle, thin, leapfrog, redraw, seed,
                   batched=False, prior_mass=100.0, refresh_every=25, init_step=0.3, progress=False,
                   start_weights=None):
    """The recipe through ``gibbs.run`` itself: one call per seed (one chain on that seed's
    targets; ``batched``: one call with the seeds as chains, per-chain targets), from zero, every Δ
    annealed from ``anneal`` by :class:`~blockbayes.gibbs.anneal.AnnealedDelta` ``(output=True)``
    over the first ``anneal_frac`` of ``total`` sweeps, the moves of :func:`recipe_moves`. A seed is
    thermalised when some kept sample (all at ``Δ*``, exact) has test MSE ≤ 3Δ*; ``end``: the last one.
    ``start_weights``: per-layer ``(C, d_{l+1}, d_l + 1)`` starts instead of zero (tests)."""
    W, frac, S, avg, term = run_plan(total, anneal_frac, settle, thin)
    C = y.shape[0]
    sch = AnnealedDelta(start=anneal, fraction=frac, output=True)
    mv = recipe_moves(leapfrog, redraw, average_from=avg, terminal=term, prior_mass=prior_mass,
                      refresh_every=refresh_every, init_step=init_step)
    kw = dict(num_warmup=W, num_samples=S, thin=thin, init="zero", schedule=sch, moves=mv, progress=progress,
              diagnose=False, store_log_joint=False)
    groups = [list(range(C))] if batched else [[c] for c in range(C)]
    hit = np.zeros(C, bool)
    end_mse = np.zeros(C)
    first = np.full(C, -1)
    last_W = []
    acc, walls, cpus = [], [], []
    for g in groups:
        t0, c0 = time.perf_counter(), time.process_time()
        if start_weights is not None:
            kw["init"] = tuple(np.asarray(w)[g] for w in start_weights)
        r = gibbs.run(net, X, y[g] if batched else y[g[0]], num_chains=len(g),
                      seed=1000 * seed + (0 if batched else g[0]), **kw)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        W1, W2 = r.weights                                   # (len(g), S, ...)
        for j, c in enumerate(g):
            mses = np.array([test_mse((W1[j:j + 1, s], W2[j:j + 1, s]), Xt, ft[c:c + 1])[0]
                             for s in range(S)])
            ok = mses <= 3 * delta
            hit[c] = bool(ok.any())
            first[c] = int(np.argmax(ok)) if ok.any() else -1
            end_mse[c] = mses[-1]
            last_W.append((W1[j, -1], W2[j, -1]))
        m = r.config.get("moves", {})
        m = m["components"][0] if "components" in m else m          # the HMC move's summary
        if "accept" in m:
            acc.append(float(np.mean(m["accept"])))
    weights = (np.stack([w[0] for w in last_W]), np.stack([w[1] for w in last_W]))
    return dict(sweeps=W + S * thin, warmup=W, samples=S, frac=float(np.mean(hit)), hits=int(hit.sum()),
                first_kept=first, mse=end_mse, mse_med=float(np.median(end_mse)), end=int(np.sum(end_mse <= 3 * delta)),
                wall=float(np.sum(walls)), cpu=float(np.sum(cpus)), wall_per_call=float(np.median(walls)),
                calls=len(groups), accept=float(np.mean(acc)) if acc else float("nan"), weights=weights)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--delta", type=float, nargs="+", default=[1e-3, 1e-4])
    ap.add_argument("--seeds", type=int, default=32)
    ap.add_argument("--budget", type=float, default=150.0, help="wall-clock seconds per arm")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", nargs="+", default=["plain", "nc"], choices=["plain", "nc", "hmc", "map", "maphmc", "run", "collapsed"],
                    help="plain: Gibbs from zero; nc: Gibbs + non-centred moves from zero; hmc: Gibbs + joint "
                         "all-layer HMC move from zero; map: Gibbs from per-seed MAP fits (fit time charged "
                         "to the budget; not a zero start); maphmc: the map arm's starts + the hmc arm's move, no "
                         "annealing (not a zero start); run: the hmc arm's recipe (--leapfrog, --hmc-anneal, "
                         "--anneal-frac, --redraw) as gibbs.run calls, one per seed, on a sweep budget "
                         "(--run-sweeps; not wall-clock)")
    ap.add_argument("--run-sweeps", type=int, default=925,
                    help="run arm: total sweeps per chain (warm-up + kept); 925 = what the vectorised hmc arm "
                         "reached in 300 s in session 10's figure run")
    ap.add_argument("--run-settle", type=int, default=100,
                    help="run arm: warm-up sweeps at Δ* after the annealing (mass averaging, then step-size window)")
    ap.add_argument("--run-thin", type=int, default=10, help="run arm: kept every this many sweeps (hits checked there)")
    ap.add_argument("--run-batched", action="store_true",
                    help="run arm: one gibbs.run call with the seeds as its chains instead of one call per seed")
    ap.add_argument("--leapfrog", type=int, default=32, help="hmc arm: leapfrog steps per trajectory")
    ap.add_argument("--prior-mass", type=float, default=100.0, help="hmc arm: s in M = s Λ + GN")
    ap.add_argument("--refresh-every", type=int, default=25, help="hmc arm: sweeps between mass refreshes")
    ap.add_argument("--init-step", type=float, default=0.3, help="hmc arm: initial step size h")
    ap.add_argument("--hmc-delay", type=int, default=0, help="hmc arm: plain sweeps before the move starts")
    ap.add_argument("--hmc-anneal", type=float, default=None,
                    help="hmc arm: Δ_0 of an annealed warm-up of every Δ (Δ_y included) down to Δ*")
    ap.add_argument("--anneal-frac", type=float, default=0.5,
                    help="part of the budget (wall-clock) over which --hmc-anneal falls to Δ*")
    ap.add_argument("--redraw", type=int, default=0,
                    help="hmc/maphmc arms: also run the exact unit prior-redraw move (UnitRedrawMove) after the "
                         "HMC move, this many proposals per hidden unit per sweep (0: off)")
    ap.add_argument("--dump", default=None,
                    help="write each arm's final per-seed test MSE/Δ and final weights (key suffix _W<l>) to this .npz")
    ap.add_argument("--collapsed-proposals", type=int, default=4,
                    help="collapsed arm: proposals per row and sweep of CollapsedRowMove (design note 65)")
    ap.add_argument("--map-restarts", type=int, default=8)
    ap.add_argument("--map-iter", type=int, default=1000)
    a = ap.parse_args(argv)
    print(f"planted teacher d=50 K=10 n=2084, {a.seeds} seeds (one vectorised sampler), from zero, "
          f"budget {a.budget:.0f} s per arm; thermalised = test MSE <= 3Δ; load avg (1 min) {os.getloadavg()[0]:.2f}")
    if "hmc" in a.arms:
        print(f"hmc arm: JointHMCMove(leapfrog={a.leapfrog}, prior_mass={a.prior_mass:g}, refresh_every="
              f"{a.refresh_every}, init_step={a.init_step:g}), delay {a.hmc_delay} sweeps, anneal "
              + (f"Δ_0={a.hmc_anneal:g} over {a.anneal_frac:g} of the budget" if a.hmc_anneal else "off")
              + (f", unit redraw {a.redraw} proposals/unit/sweep" if a.redraw else "")
              + f"; teachers/inputs seed {a.seed}")
    print(f"{'Δ':>7} {'sampler':>22} {'sweeps':>7} {'thermalised':>12} {'median t_hit s':>15} {'median MSE/Δ':>13} "
          f"{'end':>4} {'accept':>7}")
    dump = {}
    for delta in a.delta:
        net = planted_net(delta)
        X, y, Xt, ft = teachers(a.seed, a.seeds, delta)
        jit_warmup(net, X, y)
        hmc_name = f"Gibbs + joint HMC x{a.leapfrog}" + (" +ann" if a.hmc_anneal else "") + \
            (f" +rd{a.redraw}" if a.redraw else "")
        rd = dict(redraw=UnitRedrawMove(proposals=a.redraw)) if a.redraw else {}
        arms = {"plain": ("plain Gibbs", None, None, {}),
                "nc": (f"Gibbs + NC-MALA x{a.steps}", NonCentredMove(steps=a.steps, refresh_every=50), None, {}),
                "hmc": (hmc_name, JointHMCMove(leapfrog=a.leapfrog, prior_mass=a.prior_mass,
                                               refresh_every=a.refresh_every, init_step=a.init_step), None,
                        dict(delay=a.hmc_delay, anneal=a.hmc_anneal, anneal_duration=a.anneal_frac * a.budget, **rd)),
                "collapsed": (f"Gibbs + collapsed x{a.collapsed_proposals}",
                              CollapsedRowMove(proposals=a.collapsed_proposals), None, {}),
                "map": (f"Gibbs from MAP (best of {a.map_restarts})", None, (a.map_restarts, a.map_iter), {}),
                "maphmc": (f"MAP (best of {a.map_restarts}) + HMC x{a.leapfrog}",
                           JointHMCMove(leapfrog=a.leapfrog, prior_mass=a.prior_mass, refresh_every=a.refresh_every,
                                        init_step=a.init_step), (a.map_restarts, a.map_iter), rd)}
        for arm in a.arms:
            if arm == "run":
                if not a.hmc_anneal:
                    raise SystemExit("the run arm needs --hmc-anneal Δ_0")
                W, frac, S, _, _ = run_plan(a.run_sweeps, a.anneal_frac, a.run_settle, a.run_thin)
                print(f"run arm: gibbs.run(num_warmup={W}, num_samples={S}, thin={a.run_thin}, init='zero', "
                      f"schedule=AnnealedDelta(start={a.hmc_anneal:g}, fraction={frac:.4f}, output=True), "
                      f"moves=JointHMCMove(leapfrog={a.leapfrog}, average_from={frac:.4f}, terminal="
                      f"{(a.run_settle // 2) / W:.4f})" + (f" + UnitRedrawMove({a.redraw})" if a.redraw else "")
                      + f"), {'one call, seeds as chains' if a.run_batched else 'one call per seed'}", flush=True)
                r = run_recipe_arm(net, X, y, Xt, ft, delta, total=a.run_sweeps, anneal=a.hmc_anneal,
                                   anneal_frac=a.anneal_frac, settle=a.run_settle, thin=a.run_thin,
                                   leapfrog=a.leapfrog, redraw=a.redraw, seed=a.seed, batched=a.run_batched,
                                   prior_mass=a.prior_mass, refresh_every=a.refresh_every, init_step=a.init_step)
                name = "gibbs.run recipe" + (" batched" if a.run_batched else "")
                print(f"{delta:7.0e} {name:>22} {r['sweeps']:7d} {r['hits']:>5d}/{a.seeds:<3d}({r['frac']:.2f}) "
                      f"{'-':>15} {r['mse_med'] / delta:13.2f} {r['end']:4d} {r['accept']:7.2f}  wall {r['wall']:.1f} s "
                      f"cpu {r['cpu']:.1f} s ({r['calls']} calls, median {r['wall_per_call']:.1f} s)  "
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
                dump[f"run_{delta:g}"] = r["mse"] / delta
                dump[f"run_{delta:g}_first_kept"] = r["first_kept"]
                for l, Wl in enumerate(r["weights"]):
                    dump[f"run_{delta:g}_W{l}"] = Wl
                continue
            name, mv, start, extra = arms[arm]
            r = run_arm(net, X, y, Xt, ft, delta, moves=mv, budget=a.budget, every=a.every, seed=a.seed, start=start,
                        **extra)
            acc = "" if mv is None else f"{r['accept']:.2f}"
            if start is not None:
                acc = f"fit {r['fit_s']:.0f}s" + ("" if mv is None else f" acc {r['accept']:.2f}")
            if extra.get("redraw") is not None:
                acc += f" rd {r['redraw_accept']:.3f}"
            print(f"{delta:7.0e} {name:>22} {r['sweeps']:7d} {r['hits']:>5d}/{a.seeds:<3d}({r['frac']:.2f}) "
                  f"{r['t_med']:15.1f} {r['mse_med'] / delta:13.2f} {r['end']:4d} {acc:>7}  "
                  f"wall {r['wall']:.1f} s cpu {r['cpu']:.1f} s  (load {os.getloadavg()[0]:.2f})", flush=True)
            dump[f"{arm}_{delta:g}"] = r["mse"] / delta
            for l, W in enumerate(r["weights"]):
                dump[f"{arm}_{delta:g}_W{l}"] = W
    if a.dump:
        np.savez(a.dump, **dump)


if __name__ == "__main__":
    main()
