"""Replica exchange (parallel tempering) over the hidden-layer noise ``Δ`` for block-Gibbs.

``gibbs.run(..., tempering=...)``; the proof and the measured table are in docs/gibbs-moves.md.

Target
------
Replica ``k = 0 … M−1`` runs the block-Gibbs sweep of the noisy network with every hidden
layer's noise — and the output noise ``Δ_y`` when it is fixed — scaled by ``t_k``
(``1 = t_0 < t_1 < … < t_{M−1}``)::

    π_k(W̃, Z, X, Λ | y) ∝ p(W̃ | Λ) p(Λ) · Π_l N(Z^{l+1}; X̃^l W̃^{l⊤}, t_k Δ_Z^l)
                           · N(X^{l+1}; f(Z^{l+1}), t_k Δ_X^l) · N(y; X̃^L W̃^{L⊤}, t_k Δ_y),

so replica 0 is exactly the user's model. Why ``Δ_y`` too: the hidden noise alone loosens the
latents' pin on the weights, but not the barriers the *data* put between modes — measured on the
suite's tiny net (docs/gibbs-moves.md §4b), with hidden ``Δ`` tempered up to 1 and ``Δ_y = 0.1``
held, chains started in the mirror mode (``w, v < 0``: the unit active on the other side) kept
the pooled sd of ``v`` +236% off; with ``Δ_y`` in the ladder, +0% (crossing ``v = 0`` costs about
``Σ(y − c)²/(2Δ_y) ≈ 24`` nats on every replica whose ``Δ_y`` is held). With ``learn_noise``, ``Δ_y`` is a random
variable of the model (its conditional is the conjugate Gamma update), not a parameter one may
scale, so only the hidden noise is tempered; likewise for the probit likelihoods (``Δ_y = 1``
fixed by identifiability). The product ``Π_k π_k`` is sampled by the
per-replica sweeps (each exact for its own ``π_k``) and by swaps: for an adjacent pair
``(k, k+1)`` of one chain with states ``(s, s')``, exchange them with probability
``min(1, α)``,

    log α = log π_k(s') + log π_{k+1}(s) − log π_k(s) − log π_{k+1}(s'),

the exact Metropolis ratio of the two joint densities (:func:`blockbayes.gibbs.kernel.log_joint`,
(A.0) under each replica's net; the evidences and the Gaussian normalising constants
``−(m/2) log(2π t_k Δ)`` do not depend on the state and cancel). Swaps alternate between the
even pairs and the odd pairs from sweep to sweep (the non-reversible "deterministic even–odd"
scheme of Syed et al. 2019: a state can travel the whole ladder in ``M`` sweeps instead of a
random walk's ``M²``). Only replica 0 is kept.

Ladder
------
With ``N = n (2 Σ_hidden d_l + d_out)`` noisy variables (``d_out`` only when ``Δ_y`` is
tempered), at equilibrium the quadratic forms ``Q_k = Σ‖Z − X̃W̃^⊤‖²/Δ_Z + Σ‖X − f(Z)‖²/Δ_X
[+ Σ‖y − F‖²/Δ_y] ≈ t_k χ²_N``, so for ``t_{k+1} = r t_k``

    log α ≈ (r − 1)/(2r) · (χ²_a − r χ²_b),   E log α ≈ −N (r − 1)²/(2r),

and with ``log α ~ N(−m, 2m)`` the mean acceptance is ``2Φ(−√(m/2))``. :func:`ladder_ratio`
solves ``N (r−1)²/(2r) = m`` for the ``m`` of a target swap acceptance (default 0.4:
``m ≈ 1.42``; the issue's ``r ≈ 1 + √(2/N)`` is ``m = 1``, acceptance 0.48). The ladder runs
geometrically from ``t = 1`` to the factor that lifts the smallest tempered ``Δ`` to ``top``
(default 1: the scale of a standardised hidden unit, where the latents no longer pin the
weights), so it needs ``M = 1 + ⌈log(top/Δ*_min) / log r⌉`` replicas — ~11 for the tiny
``[1, 1, 1]`` net at ``Δ = 0.01``, ~5000 for a (50, 50, 1e4) net at ``Δ = 1e-3``. Each replica
costs one sweep plus four forward passes per swap, so a tempered sweep costs about ``M``
plain sweeps: ``tempering="auto"`` uses the ladder only when ``M ≤ max_replicas``
(default 16) and the run's ``Δ*`` is below ``top``, and is "off" (no cost) otherwise.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

from .._backend import device_of, namespace
from .._backend import random as bbr
from ..model import MLP
from . import kernel as _k

__all__ = ["Tempering", "TemperingPlan", "TemperingState", "noisy_count", "ladder_ratio", "plan",
           "replica_nets", "replica_log_joint", "under", "swap_log_ratio", "init", "swap", "step", "summary"]


class Tempering(NamedTuple):
    """Settings of replica exchange over ``Δ`` (``gibbs.run(..., tempering=Tempering(...))``).

    Attributes
    ----------
    mode : {"auto", "on", "off"}
        ``"auto"``: temper only when the computed ladder has at most ``max_replicas`` replicas;
        ``"on"``: always (with the computed ladder, or ``factors`` when given); ``"off"``: never.
    factors : tuple of float or None
        An explicit ladder ``(1, t_1, …)`` of factors on every hidden ``Δ_Z, Δ_X`` (strictly
        increasing, first 1); ``None``: computed by :func:`plan`.
    top : float
        The smallest hidden ``Δ`` of the hottest replica (the ladder's end).
    swap_accept : float
        Target mean swap acceptance of the computed ladder (sets the spacing ``r``).
    max_replicas : int
        The replica budget of ``"auto"`` (cost ≈ this many sweeps per sweep at most).
    """

    mode: str = "auto"
    factors: Optional[tuple] = None
    top: float = 1.0
    swap_accept: float = 0.4
    max_replicas: int = 16

    def validate(self):
        if self.mode not in ("auto", "on", "off"):
            raise ValueError(f"tempering mode must be 'auto', 'on' or 'off', got {self.mode!r}")
        if not (self.top > 0 and math.isfinite(self.top)):
            raise ValueError(f"top must be a positive float, got {self.top!r}")
        if not 0.0 < self.swap_accept < 1.0:
            raise ValueError(f"swap_accept must lie in (0, 1), got {self.swap_accept!r}")
        if isinstance(self.max_replicas, bool) or not isinstance(self.max_replicas, int) or self.max_replicas < 1:
            raise ValueError(f"max_replicas must be an int >= 1, got {self.max_replicas!r}")
        if self.factors is not None:
            f = [float(v) for v in self.factors]
            if len(f) < 1 or f[0] != 1.0 or any(not math.isfinite(v) for v in f) \
                    or any(b <= a for a, b in zip(f, f[1:])):
                raise ValueError("factors must be a strictly increasing sequence of finite floats starting "
                                 f"at 1.0 (replica 0 is the user's model), got {self.factors!r}")

    @classmethod
    def coerce(cls, spec) -> "Tempering":
        """``None``/``"auto"``/``"on"``/``"off"``/``True``/``False``, a ladder (sequence of factors)
        or a :class:`Tempering`."""
        if isinstance(spec, Tempering):
            t = spec
        elif spec is None or spec is True or spec is False or isinstance(spec, str):
            mode = {None: "auto", True: "on", False: "off"}.get(spec, spec) if not isinstance(spec, str) else spec
            t = cls(mode=mode)
        else:
            try:
                factors = tuple(float(v) for v in spec)
            except TypeError:
                raise ValueError(f"tempering must be 'auto', 'on', 'off', a ladder of factors or a Tempering, "
                                 f"got {spec!r}") from None
            t = cls(mode="on", factors=factors)
        t.validate()
        return t


class TemperingPlan(NamedTuple):
    """What :func:`plan` decided (stored in ``result.config["tempering"]`` by :func:`summary`).

    ``active``: whether replicas run; ``factors``: the ladder (``(1.0,)`` when off);
    ``noisy``: ``N``; ``ratio``: the spacing ``r`` of the computed ladder; ``needed``: the
    replica count the rule asks for (``None`` when it does not apply); ``reason``: why;
    ``output``: whether ``Δ_y`` is tempered too.
    """

    active: bool
    factors: tuple
    noisy: int
    ratio: Optional[float]
    needed: Optional[int]
    reason: str
    output: bool = True


def noisy_count(net: MLP, n: int, output: bool = True) -> int:
    """``N = n (2 Σ_{hidden l} d_l + d_out)``: the pre- and post-activations the hidden noise acts
    on, plus the outputs when ``Δ_y`` is tempered (``output``)."""
    return int(n) * (2 * sum(net.widths[1:-1]) + (net.widths[-1] if output else 0))


def ladder_ratio(noisy: int, swap_accept: float = 0.4) -> float:
    """Spacing ``r > 1`` of a geometric ladder with mean swap acceptance ≈ ``swap_accept``.

    ``m = 2 Φ^{-1}(a/2)²`` (the mean of ``−log α ~ N(m, 2m)`` giving acceptance ``a``), then
    ``N (r − 1)² / (2r) = m``: ``r = 1 + c + √(c² + 2c)``, ``c = m/N``.
    """
    from statistics import NormalDist

    if noisy < 1:
        raise ValueError(f"the ladder needs at least one noisy variable, got N={noisy}")
    m = 2.0 * NormalDist().inv_cdf(swap_accept / 2.0) ** 2
    c = m / noisy
    return 1.0 + c + math.sqrt(c * c + 2.0 * c)


def plan(net: MLP, n: int, tempering: Tempering = Tempering(), *, output: bool = True) -> TemperingPlan:
    """The ladder for ``net`` on ``n`` data points, and whether to use it.

    Rule: ``r = ladder_ratio(N, swap_accept)``, ``t_max = top / min_l min(Δ_Z^l, Δ_X^l)``,
    ``M = 1 + ⌈log t_max / log r⌉`` and ``t_k = t_max^{k/(M−1)}`` (spacing ``≤ r``). ``"auto"``
    tempers when ``1 < M ≤ max_replicas``; ``"on"`` always (``factors`` if given); nets without
    hidden layers, or whose ``Δ`` already reach ``top``, are never tempered. ``output``: temper
    ``Δ_y`` as well (``gibbs.run`` does when ``Δ_y`` is fixed and the likelihood Gaussian); then
    ``Δ_y`` enters ``N`` and the minimum.
    """
    tempering.validate()
    output = bool(output) and net.likelihood == "gaussian"
    N = noisy_count(net, n, output)
    if tempering.mode == "off":
        return TemperingPlan(False, (1.0,), N, None, None, "off", output)
    if net.num_layers < 2:
        return TemperingPlan(False, (1.0,), N, None, None, "no hidden layer: no Δ to temper", output)
    if tempering.factors is not None:
        f = tuple(float(v) for v in tempering.factors)
        if len(f) < 2:
            return TemperingPlan(False, f, N, None, None, "ladder of one replica", output)
        return TemperingPlan(True, f, N, None, len(f), "explicit ladder", output)
    r = ladder_ratio(N, tempering.swap_accept)
    dmin = min(min(net.delta_z), min(net.delta_x), *((net.delta_y,) if output else ()))
    t_max = tempering.top / dmin
    if t_max <= 1.0:
        return TemperingPlan(False, (1.0,), N, r, 1, f"Δ* = {dmin:g} already at or above top = {tempering.top:g}",
                             output)
    M = 1 + math.ceil(math.log(t_max) / math.log(r) - 1e-9)
    if tempering.mode == "auto" and M > tempering.max_replicas:
        return TemperingPlan(False, (1.0,), N, r, M,
                             f"auto: ladder needs {M} replicas > max_replicas = {tempering.max_replicas} (N = {N})",
                             output)
    factors = tuple(float(t_max ** (k / (M - 1))) for k in range(M))
    factors = (1.0,) + factors[1:-1] + (float(t_max),)
    return TemperingPlan(True, factors, N, r, M, f"{tempering.mode}: {M} replicas, r = {r:.3f}, N = {N}"
                         + (", Δ_y tempered" if output else ", Δ_y not tempered"), output)


def replica_nets(net: MLP, factors, output: bool = False) -> tuple:
    """``net`` with every hidden ``Δ_Z, Δ_X`` (and ``Δ_y`` if ``output``) multiplied by each factor
    (``net`` itself for 1)."""
    from ..posterior import net_from_dict, net_to_dict

    out = []
    for t in factors:
        if float(t) == 1.0:
            out.append(net)
            continue
        d = net_to_dict(net)
        d["delta"] = {"Z": [float(t) * v for v in net.delta_z], "X": [float(t) * v for v in net.delta_x],
                      "y": float(t) * net.delta_y if output else net.delta_y}
        out.append(net_from_dict(d))
    return tuple(out)


class TemperingState(NamedTuple):
    """``M`` replicas of ``C`` chains.

    Attributes
    ----------
    replicas : tuple of GibbsState
        Replica ``k`` targets ``π_k`` (hidden ``Δ`` times ``factors[k]``); replica 0 is kept.
    accept_sum : array, shape (M − 1, C)
        Per adjacent pair and chain, the summed swap acceptance probabilities ``min(1, α)`` of the
        proposals after warm-up.
    proposed : array, shape (M − 1,)
        Swap proposals per pair after warm-up.
    sweeps : int
        Tempered sweeps done (sets the even/odd parity).
    """

    replicas: tuple
    accept_sum: Any
    proposed: Any
    sweeps: int


def init(rng_key, net: MLP, X, y, factors, *, num_chains: int, init="prior", output: bool = False) -> TemperingState:
    """Replica states: replica ``k`` from :func:`blockbayes.gibbs.kernel.init` under its own net
    (:func:`replica_nets`; same ``init``; a random one, such as ``"prior"``, independently per
    replica)."""
    xp = namespace(X)
    nets = replica_nets(net, factors, output)
    keys = bbr.split(rng_key, len(nets))
    reps = tuple(_k.init(keys[k], nk, X, y, num_chains=num_chains, init=init) for k, nk in enumerate(nets))
    M = len(nets)
    acc = xp.zeros((max(M - 1, 0), num_chains), dtype=X.dtype, device=device_of(X))
    prop = xp.zeros((max(M - 1, 0),), dtype=X.dtype, device=device_of(X))
    return TemperingState(reps, acc, prop, 0)


def replica_log_joint(state, net: MLP, X, y):
    """``log π_k`` up to the evidence: the joint density (A.0) of ``state`` under replica ``k``'s
    net (:func:`blockbayes.gibbs.kernel.log_joint`), shape ``(C,)``. Looked up at call time, so
    the validation suite patches its twins here."""
    return _k.log_joint(state, net, X, y)


def under(state, net: MLP, output: bool):
    """``state`` as a state of ``net``'s replica: with ``output`` (``Δ_y`` tempered, a parameter
    of the replica, not part of the state) its ``delta_y`` is the net's."""
    if not output:
        return state
    xp = namespace(state.delta_y)
    return state._replace(delta_y=xp.full(state.delta_y.shape, net.delta_y, dtype=state.delta_y.dtype,
                                          device=device_of(state.delta_y)))


def swap_log_ratio(state_a, state_b, net_a: MLP, net_b: MLP, X, y, output: bool = False):
    """``log α`` of exchanging ``state_a`` (replica ``a``) and ``state_b`` (replica ``b``), per chain:
    ``log π_a(s_b) + log π_b(s_a) − log π_a(s_a) − log π_b(s_b)``, shape ``(C,)`` (with
    ``output``, each state is evaluated with the evaluating replica's ``Δ_y``: :func:`under`)."""
    lj = replica_log_joint
    return ((lj(under(state_b, net_a, output), net_a, X, y) - lj(under(state_a, net_a, output), net_a, X, y))
            + (lj(under(state_a, net_b, output), net_b, X, y) - lj(under(state_b, net_b, output), net_b, X, y)))


def _select(xp, ok, a, b):
    """Per chain: ``b``'s value where ``ok``, else ``a``'s (``ok`` shape ``(C,)``)."""
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(_select(xp, ok, u, v) for u, v in zip(a, b))
    m = xp.reshape(ok, (ok.shape[0],) + (1,) * (a.ndim - 1))
    return xp.where(m, b, a)


def swap(rng_key, replicas: tuple, nets: tuple, X, y, parity: int, output: bool = False):
    """Propose the swaps of the pairs ``(k, k+1)`` with ``k ≡ parity (mod 2)``, every chain
    independently; returns ``(replicas, probs)`` with ``probs`` ``(M − 1, C)`` the acceptance
    probabilities ``min(1, α)`` of the pairs proposed (0 elsewhere). Everything of the state is
    exchanged (weights, latents, ``λ``, probit utilities, and ``Δ_y`` when it is learned); with
    ``output`` each replica keeps its own tempered ``Δ_y``."""
    xp = namespace(X)
    M = len(replicas)
    C = replicas[0].delta_y.shape[0]
    reps = list(replicas)
    probs = [xp.zeros((C,), dtype=X.dtype, device=device_of(X)) for _ in range(max(M - 1, 0))]
    pairs = list(range(parity % 2, M - 1, 2))
    if not pairs:
        return tuple(reps), (xp.stack(probs) if probs else xp.zeros((0, C), dtype=X.dtype, device=device_of(X)))
    U = bbr.uniform(rng_key, (len(pairs), C), like=X)
    for j, k in enumerate(pairs):
        la = swap_log_ratio(reps[k], reps[k + 1], nets[k], nets[k + 1], X, y, output)
        la = xp.where(xp.isnan(la), xp.asarray(-math.inf, dtype=la.dtype, device=device_of(la)), la)
        ok = xp.log(U[j, :]) < la
        probs[k] = xp.exp(xp.minimum(la, xp.zeros_like(la)))
        a = tuple(reps[k])
        b = tuple(reps[k + 1])
        reps[k] = under(type(reps[k])(*(_select(xp, ok, u, v) for u, v in zip(a, b))), nets[k], output)
        reps[k + 1] = under(type(reps[k + 1])(*(_select(xp, ok, v, u) for u, v in zip(a, b))), nets[k + 1], output)
    return tuple(reps), xp.stack(probs)


def step(rng_key, tstate: TemperingState, nets: tuple, caches: tuple, X, y, *, warmup: bool = False,
         output: bool = False, **step_kwargs):
    """One tempered sweep: a :func:`blockbayes.gibbs.kernel.step` per replica (under its net and
    cache), then the even or odd swaps. Returns ``(tstate, info)`` with ``info`` the cold
    replica's :class:`~blockbayes.gibbs.kernel.GibbsInfo` (pure)."""
    M = len(nets)
    keys = bbr.split(rng_key, M + 1)
    reps, info0 = [], None
    for k in range(M):
        st, info = _k.step(keys[k], tstate.replicas[k], nets[k], X, y, cache=caches[k], **step_kwargs)
        reps.append(st)
        if k == 0:
            info0 = info
    reps, probs = swap(keys[M], tuple(reps), nets, X, y, tstate.sweeps, output)
    acc, prop = tstate.accept_sum, tstate.proposed
    if not warmup and M > 1:
        xp = namespace(X)
        acc = acc + probs
        pr = [1.0 if (k % 2) == (tstate.sweeps % 2) else 0.0 for k in range(M - 1)]
        prop = prop + xp.asarray(pr, dtype=X.dtype, device=device_of(X))
    return TemperingState(reps, acc, prop, tstate.sweeps + 1), info0


def summary(tplan: TemperingPlan, tstate: Optional[TemperingState] = None) -> dict:
    """JSON-able report for ``result.config["tempering"]``: the decision, the ladder, its cost
    (``replicas`` sweeps per sweep) and the measured swap acceptance per adjacent pair."""
    from .._backend import to_numpy

    out = dict(active=bool(tplan.active), reason=tplan.reason, noisy_variables=int(tplan.noisy),
               delta_y_tempered=bool(tplan.output and tplan.active),
               ratio=None if tplan.ratio is None else float(tplan.ratio),
               replicas_needed=None if tplan.needed is None else int(tplan.needed),
               replicas=len(tplan.factors) if tplan.active else 1,
               factors=[float(v) for v in tplan.factors])
    if tstate is not None and tplan.active:
        acc = to_numpy(tstate.accept_sum)
        prop = to_numpy(tstate.proposed)
        out["swap_accept"] = [float(acc[k].mean() / prop[k]) if prop[k] > 0 else None for k in range(acc.shape[0])]
    return out

