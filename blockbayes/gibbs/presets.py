"""Named, documented settings of :func:`blockbayes.gibbs.run` (issue 15).

:func:`gold` — the setting measured against NUTS on the UCI gold-standard splits (docs/gibbs-moves.md
§6, "Gold standard"): regression with a learned output noise, every chain from its own joint
(weights, ``Δ_y``) MAP fit, and the hidden-layer noise set from the data's noise level,

    Δ_Z = Δ_X = clip(ratio · median_c Δ̂_y,c,  floor,  cap)      (ratio 0.02, floor 1e-6, cap 1e-3),

where ``Δ̂_y,c`` is chain ``c``'s MAP noise variance (in the units of the ``y`` given). Why: the
noisy network's per-point latents carry the signal the network should when ``Δ_Z, Δ_X`` are not
well below the output noise (issue 15: Yacht's standardised noise variance ~2e-4 is below the MLP
default ``Δ = 1e-3``), so ``Δ`` must scale with the noise; below it the centred sweep barely moves
the weights (the chains stay near their starts — which is why each chain starts at its own MAP
mode and the chain-averaged predictive is a mixture over modes). The ratio was chosen on an inner
validation split (20% of the training rows) of Yacht and Energy split 0, from the same MAP starts
(docs/gibbs-moves.md §6, "Gold standard"): Energy's held-out LL was −1.108 at ``Δ = 5.4e-5``
(ratio 0.1), −0.991 at ``1e-5``, −0.979 at ``5.4e-6`` (ratio 0.01), −0.970 at ``1e-6``; Yacht's
−0.404 at ``1.1e-5`` and −0.438 at ``1e-6``. Ratio 0.02 puts Yacht (``Δ̂_y ≈ 1e-4``) near ``2e-6``
and Energy (``≈ 5e-4``) near ``1e-5``, and caps high-noise data (Boston, Concrete: ``Δ̂_y``
0.02–0.06 standardised) near the MLP default ``1e-3``, where those sets matched NUTS before.

The preset changes only the model's hidden noise and the run's settings; what is sampled is the
noisy-MLP posterior at that ``Δ`` (exact, as every ``gibbs.run``).
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple, Optional

from .._backend import device_of, namespace, to_numpy
from .._backend import random as bbr
from ..inputs import prepare
from ..model import MLP
from .kernel import Hyperprior
from .starts import HIDDEN_RULE, hidden_delta   # the rule lives with the starts it reads (gibbs.run uses it too)

__all__ = ["GoldPreset", "gold", "gold_hmc", "gold_hmc_long", "given_start", "hidden_delta", "select_fits"]


class GoldPreset(NamedTuple):
    """Settings of the gold-standard recipe (see the module docstring); :meth:`run` applies them.

    Attributes
    ----------
    num_chains, num_warmup, num_samples : int
        Chains (each from its own MAP fit) and sweeps.
    ratio, floor, cap : float
        The hidden-noise rule of :func:`hidden_delta`.
    map_max_iter : int or None
        L-BFGS iterations per MAP start (``None``: :data:`blockbayes.gibbs.starts.JOINT_MAX_ITER`).
    moves : optional
        Extra moves passed to :func:`blockbayes.gibbs.run` (none by default: measured, the
        non-centred move did not improve the held-out fit at these budgets).
    map_fits : int or None
        MAP fits to choose the starts from (``None``: ``num_chains``, one fit per chain). With
        ``K = map_fits > num_chains``, fits ``0 … K−1`` are made (fit ``c < num_chains`` is the
        one ``map_fits=None`` would start chain ``c`` from) and the chains start from the
        ``num_chains`` fits with the lowest final MAP objective (:func:`select_fits`). Only the
        starts change: every chain is the same exact sampler of the noisy-MLP posterior.
    map_smoothing : None or sequence of floats
        A softplus smoothing continuation before each MAP fit (:func:`blockbayes.laplace.map_fit`'s
        ``smoothing``, e.g. ``(8, 32, 128, 512)``), with ``map_smoothing_iter`` L-BFGS iterations
        per stage. ``None`` (default): the fits as without it. Only the starts change.
    map_smoothing_iter : int
    """

    num_chains: int = 4
    num_warmup: int = 1000
    num_samples: int = 1000
    ratio: float = HIDDEN_RULE["ratio"]
    floor: float = HIDDEN_RULE["floor"]
    cap: float = HIDDEN_RULE["cap"]
    map_max_iter: Optional[int] = None
    moves: object = None
    map_fits: Optional[int] = None
    map_smoothing: Optional[tuple] = None
    map_smoothing_iter: int = 5000

    def run(self, net: MLP, X, y, *, seed=None, hyperprior: Hyperprior = Hyperprior(), progress: bool = False,
            start=None, **run_kw):
        """Fit the MAP starts, set ``Δ_Z = Δ_X`` by the rule, and run the chains.

        Parameters
        ----------
        net : MLP
            Gaussian likelihood; its ``Δ_Z, Δ_X, Δ_y`` are replaced (the returned
            ``result.net`` has the ones used).
        X : array, shape (n, d_in)
        y : array, shape (n,) or (n, d_out)
        seed : None, int, SeedSequence or key
            Same seed ⇒ the same MAP starts and samples; the MAP fits are those of
            ``gibbs.run(net, X, y, init="map", learn_noise=True, seed=seed)``.
        hyperprior : Hyperprior
            Noise hyperprior of the MAP fits and of the sampler.
        start : None or (weights, delta_y)
            Given starts instead of the MAP fits (e.g. draws of another sampler): ``weights`` a
            sequence of per-layer arrays of shape ``(C, d_{l+1}, d_l + 1)`` (bias last; chain
            ``c`` starts at ``weights[l][c]``), ``delta_y`` shape ``(C,)`` (positive; the units of
            ``y``) in the role of the fits' ``Δ̂_y``: the rule sets ``Δ_Z = Δ_X`` from it and the
            chains start at its mean, as from MAP fits. The seed's sampler stream is the same, so
            starts equal to the MAP fits give the default run bitwise. Not with ``map_fits``.
        **run_kw
            Further :func:`blockbayes.gibbs.run` arguments (``device``, ``dtype``, ``thin``, …);
            not ``init``, ``learn_noise`` or the counts the preset sets.

        Returns
        -------
        GibbsResult
            ``config["preset"]``: ``name``, ``hidden_delta``, ``delta_y_hat`` (per chain),
            ``map_time_s``; ``config["total_wall_time_s"]`` includes the MAP fits.
        """
        from .sampler import run
        from .starts import map_starts

        if net.likelihood != "gaussian":
            raise ValueError(f"the gold preset is for regression (likelihood='gaussian'), got {net.likelihood!r}")
        clash = {"init", "learn_noise", "num_chains", "num_warmup", "num_samples", "moves"} & set(run_kw)
        if clash:
            raise ValueError(f"the gold preset sets {sorted(clash)}; change them on the preset (gold(...)) instead")
        C = self.num_chains
        K = C if self.map_fits is None else self.map_fits
        if isinstance(K, bool) or not isinstance(K, int) or K < C:
            raise ValueError(f"map_fits must be None or an int >= num_chains={C}, got {self.map_fits!r}")
        if start is not None and (self.map_fits is not None or self.map_smoothing is not None):
            raise ValueError("start= replaces the MAP fits; it cannot be combined with map_fits or map_smoothing")
        t0 = time.perf_counter()
        Xp, yp = prepare(net, X, y, device=run_kw.get("device"), dtype=run_kw.get("dtype"),
                         num_chains=C)
        root = bbr.key(seed)
        xp = namespace(Xp)
        if start is not None:
            weights, dy = given_start(start, net, C, Xp)
            info = dict(map_converged=None, map_objectives=[])
            chosen = tuple(range(C))
        else:
            # the same fits as gibbs.run(init="map", seed=seed): its MAP key is split(split(root, 2)[0], 2)[0]
            # (split(key, K)[:C] == split(key, C), so fits 0 … C−1 are those fits whatever K is)
            k_map = bbr.split(bbr.split(root, 2)[0], 2)[0]
            weights, dy, info = map_starts(k_map, net, Xp, yp, num_chains=K, kind="map",
                                           max_iter=self.map_max_iter, learn_noise=True,
                                           noise_prior=(hyperprior.noise_shape, hyperprior.noise_rate),
                                           smoothing=self.map_smoothing, smoothing_iter=self.map_smoothing_iter)
            chosen = select_fits(info["map_objectives"], C)
        if K > C:
            idx = xp.asarray(chosen, device=device_of(Xp))
            weights = tuple(xp.take(W, idx, axis=0) for W in weights)
            dy = xp.take(dy, idx, axis=0)
        d = hidden_delta(dy, ratio=self.ratio, floor=self.floor, cap=self.cap)
        dy_start = float(xp.mean(dy))
        net_d = net.replace(delta={"Z": d, "X": d, "y": dy_start})
        t_map = time.perf_counter() - t0
        res = run(net_d, Xp, yp, num_samples=self.num_samples, num_warmup=self.num_warmup,
                  num_chains=self.num_chains, seed=root, init=weights, learn_noise=True, hyperprior=hyperprior,
                  moves=self.moves, progress=progress, **run_kw)
        name = "gold" if self.moves is None else f"gold+{type(self.moves).__name__}"
        res.config["preset"] = dict(name=name, start="map" if start is None else "given", hidden_delta=d,
                                    delta_y_hat=[float(v) for v in to_numpy(dy)],
                                    map_time_s=t_map, map_converged=info["map_converged"],
                                    map_objectives=list(info["map_objectives"]), chosen_fits=list(chosen))
        res.config["total_wall_time_s"] = time.perf_counter() - t0
        return res


def given_start(start, net: MLP, num_chains: int, X):
    """Validate ``GoldPreset.run``'s ``start=(weights, delta_y)``; returns them as arrays like ``X``.

    ``weights[l]``: shape ``(C, d_{l+1}, d_l + 1)``, finite; ``delta_y``: shape ``(C,)``, positive
    and finite (``C = num_chains``).
    """
    xp = namespace(X)
    dev, dt = device_of(X), X.dtype
    try:
        weights, dy = start
    except (TypeError, ValueError):
        raise ValueError("start must be a pair (weights, delta_y)") from None
    shapes = net.weight_shapes()
    if len(weights) != len(shapes):
        raise ValueError(f"start needs {len(shapes)} weight arrays (one per layer), got {len(weights)}")
    out = []
    for l, (w, s) in enumerate(zip(weights, shapes)):
        w = to_numpy(w)
        if tuple(w.shape) != (num_chains,) + tuple(s):
            raise ValueError(f"start weights[{l}] must have shape {(num_chains,) + tuple(s)}, got {tuple(w.shape)}")
        if not bool((abs(w) < math.inf).all()):
            raise ValueError(f"start weights[{l}] must be finite")
        out.append(xp.asarray(w, dtype=dt, device=dev))
    d = to_numpy(dy).reshape(-1) if hasattr(dy, "shape") else [float(v) for v in dy]
    if len(d) != num_chains or not all(float(v) > 0 and math.isfinite(float(v)) for v in d):
        raise ValueError(f"start delta_y must hold {num_chains} positive finite values, got {list(d)!r}")
    return tuple(out), xp.asarray([float(v) for v in d], dtype=dt, device=dev)


def select_fits(objectives, num_chains: int) -> tuple:
    """Indices of the ``num_chains`` lowest objectives, in increasing index order.

    Ties keep the lower index (a stable sort). ``objectives``: one final MAP objective per fit
    (``len >= num_chains``; lower is better). With ``len == num_chains`` this is
    ``(0, …, num_chains − 1)``.
    """
    obj = [float(v) for v in objectives]
    if isinstance(num_chains, bool) or not isinstance(num_chains, int) or not 1 <= num_chains <= len(obj):
        raise ValueError(f"num_chains must be an int in [1, {len(obj)}], got {num_chains!r}")
    if any(math.isnan(v) for v in obj):
        raise ValueError(f"objectives must not be NaN, got {obj!r}")
    order = sorted(range(len(obj)), key=lambda i: (obj[i], i))
    return tuple(sorted(order[:num_chains]))


def gold(**overrides) -> GoldPreset:
    """The gold-standard recipe of issue 15 (defaults of :class:`GoldPreset`, with ``overrides``).

    Usage::

        r = bb.gibbs.presets.gold().run(bb.MLP([d, 50, 1]), X, y, seed=0)

    Measured against NUTS in docs/gibbs-moves.md §6 ("Gold standard").
    """
    return GoldPreset(**overrides)


def gold_hmc(**overrides) -> GoldPreset:
    """The gold recipe with the joint non-centred HMC move after every sweep (session 9).

    ``GoldPreset(moves=JointHMCMove(), **overrides)``: the same MAP starts, hidden-noise rule and
    counts as :func:`gold`, plus :class:`~blockbayes.gibbs.hmc.JointHMCMove` (32 leapfrog steps,
    mass ``100 Λ + GN``, since session 10 with the Gauss–Newton matrix averaged over the second
    half of warm-up and a terminal step-size window — design note 38) on all weight matrices.
    The figures below are session 9's (single-state mass); session 10's are in docs/gibbs-moves.md
    §6 ("Acceptance after warm-up"). Measured against NUTS and against :func:`gold`
    in docs/gibbs-moves.md §6 ("Joint HMC move on the gold cells"): the chains leave their MAP
    modes (function-space R-hat 1.14–1.64 instead of 1.77–2.58 on Yacht and Energy splits 0–2;
    1.01 / 1.03 on Boston / Concrete split 0, where it matches NUTS's RMSE and LL), RMSE lower on
    all six Yacht/Energy cells, at 5–17× the wall-clock of :func:`gold` (86–261 s per split at
    load 1.7–4.7). ``gold_hmc(num_warmup=500, num_samples=500)``: 25–88 s per split at load
    1.6–2.9, below NUTS's 100–210 s on all eight cells, figure met on four (seed 0) and six
    (seed 1) of them.

    Session 11 (docs/gibbs-moves.md §6, "Spending the wall-clock headroom"): on the inner
    validation split of Yacht and Energy splits 0–1 (seed 0, 500 + 500 unless stated), neither
    more chains (8 × 500 + 500: mean ΔLL −0.03 nats against this setting; 8 × 250 + 250: −0.05),
    longer chains (4 × 1000 + 1000: −0.02 on three cells), the unit prior redraw after the move
    (+0.015 / −0.025 on Yacht 0 / Energy 0) nor starts from the best 4 of 8 or 12 MAP fits
    (``map_fits``: +0.01 / −0.01) beat it beyond the spread of these variants (RMSE ±5%,
    LL ±0.05 nats per cell); the defaults were kept.
    """
    from .hmc import JointHMCMove

    overrides.setdefault("moves", JointHMCMove())
    return GoldPreset(**overrides)


def gold_hmc_long(**overrides) -> GoldPreset:
    """:func:`gold_hmc` at 500 + 500 sweeps with trajectories twice as long (64 leapfrog steps).

    ``GoldPreset(num_warmup=500, num_samples=500, moves=JointHMCMove(leapfrog=64), **overrides)``
    (session 11, docs/gibbs-moves.md §6, "Spending the wall-clock headroom"). Chosen on the inner
    validation split (20% of the training rows; Yacht and Energy splits 0–1, seed 0) among seven
    ways of spending the wall-clock that Yacht and Energy have below NUTS's: against
    ``gold_hmc(num_warmup=500, num_samples=500)`` its held-out LL was +0.024, +0.041, +0.049 and
    −0.016 nats (mean +0.025) and its RMSE ×0.987, ×1.007, ×0.935, ×1.016 (Yacht 0, Yacht 1,
    Energy 0, Energy 1) — the only variant ahead on three of the four cells, though each gap is
    within the ±0.05-nat spread of the variants on a cell. NUTS (4 × 1000 + 1000, the issue's
    reference model) on the same inner splits, run after the choice: Yacht 0 0.533 / −0.482,
    Yacht 1 0.558 / −0.520, against this preset's 0.519 / −0.483 and 0.580 / −0.598 (the 32-step
    setting: 0.526 / −0.507 and 0.576 / −0.639). Cost: 1.6–1.8× the CPU time of the 32-step setting (Yacht ~45 s, Energy
    ~100 s per split on an idle core). Test split (docs/gibbs-moves.md §6): the gold figure met on
    11 of 12 cells at seed 0 and 10 of 12 at seed 1 (32 steps: 8 and 10), 4 of 6 Yacht/Energy
    cells at seed 2 (32 steps: 3); short on Energy 0 at every seed (LL −0.11 … −0.15), Energy 1
    at seed 1, Yacht 1 at seed 2. Boston/Concrete cost 110–147 s CPU per split with it, inside
    NUTS's 100–210 s rather than below; ``gold_hmc(num_warmup=500, num_samples=500)`` (67–96 s)
    meets the figure there too.
    """
    from .hmc import JointHMCMove

    overrides.setdefault("moves", JointHMCMove(leapfrog=64))
    overrides.setdefault("num_warmup", 500)
    overrides.setdefault("num_samples", 500)
    return GoldPreset(**overrides)
