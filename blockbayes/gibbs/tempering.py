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
``[1, 1, 1]`` net at ``Δ = 0.01``, ~5000 for a (50, 50, 1e4) net at ``Δ = 1e-3``. The
arithmetic of a tempered sweep is ``M`` sweeps' plus a forward pass of every replica for the
swaps: ``tempering="auto"`` uses the ladder only when ``M ≤ max_replicas`` (default 16) and the
run's ``Δ*`` is below ``top``, and is "off" (no cost) otherwise.

Batched replicas
----------------
The ``M`` replicas of ``C`` chains are held as the ``M·C`` chains of one state (replica-major,
:class:`TemperingState`) and swept by ONE :func:`blockbayes.gibbs.kernel.step` with a per-chain
factor on the hidden ``Δ`` (``delta_scale``; every kernel takes per-chain ``Δ_Z, Δ_X``, and the
replica's tempered ``Δ_y`` is the state's per-chain ``delta_y``). Chain ``c`` of replica ``k``
gets exactly what :func:`~blockbayes.gibbs.kernel.step` under replica ``k``'s net gives it on
the same chains and key (tests/test_tempering.py, bit for bit as measured); the random streams
differ from a loop of per-replica calls (the fused kernels key their draws by the chain's index
among all chains), which it equals in law (validation/test_tempering.py). The swap ratios of all
pairs come from one pass of array operations over all chains (:func:`replica_terms`,
:func:`pair_log_ratios`) and an accepted swap is one gather per array. The number of calls per
sweep therefore does not grow with ``M``: on the tiny nets where ``"auto"`` tempers, the sweep
is call-bound, and a tempered sweep costs ~3 untempered ones rather than ``M``
(benchmarks/run_overhead.py).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

from .._backend import device_of, fast_namespace, namespace
from .._backend import random as bbr
from ..model import MLP
from . import kernel as _k

__all__ = ["Tempering", "TemperingPlan", "TemperingState", "Ladder", "SwapArrays", "NoiseLevels", "ReplicaTerms",
           "noisy_count", "swap_arrays",
           "ladder_ratio", "plan", "replica_nets", "ladder", "noise_levels", "replica_terms", "replica_log_joint",
           "pair_log_ratios", "state_log_joint", "under", "swap_log_ratio", "chain_slice", "stack_replicas",
           "replica_targets", "init",
           "swap", "step", "summary"]


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
    """``M`` replicas of ``C`` chains, held as the ``M·C`` chains of one Gibbs state.

    Attributes
    ----------
    state : GibbsState
        ``M·C`` chains, replica-major: chain ``k·C + c`` is chain ``c`` of replica ``k``, which
        targets ``π_k`` (hidden ``Δ`` times ``factors[k]``); replica 0 is kept. One
        :func:`blockbayes.gibbs.kernel.step` sweeps them all (a per-chain ``delta_scale``).
    accept_sum : array, shape (M − 1, C)
        Per adjacent pair and chain, the summed swap acceptance probabilities ``min(1, α)`` of the
        proposals after warm-up.
    proposed : array, shape (M − 1,)
        Swap proposals per pair after warm-up.
    sweeps : int
        Tempered sweeps done (sets the even/odd parity).
    """

    state: Any
    accept_sum: Any
    proposed: Any
    sweeps: int

    @property
    def num_replicas(self) -> int:
        return int(self.accept_sum.shape[0]) + 1

    @property
    def num_chains(self) -> int:
        return int(self.state.delta_y.shape[0]) // self.num_replicas

    def replica(self, k: int):
        """Replica ``k``'s ``C`` chains as a :class:`~blockbayes.gibbs.kernel.GibbsState` (views)."""
        C = self.num_chains
        return chain_slice(self.state, k * C, (k + 1) * C)

    @property
    def replicas(self) -> tuple:
        """Every replica's chains (:meth:`replica` for ``k = 0 … M−1``)."""
        return tuple(self.replica(k) for k in range(self.num_replicas))

    def with_replica(self, k: int, state) -> "TemperingState":
        """A copy with replica ``k``'s chains replaced by ``state`` (``C`` chains)."""
        reps = list(self.replicas)
        reps[k] = state
        return self._replace(state=stack_replicas(reps))

    @classmethod
    def from_replicas(cls, replicas, accept_sum, proposed, sweeps: int = 0) -> "TemperingState":
        """From a sequence of per-replica states of ``C`` chains each."""
        return cls(stack_replicas(replicas), accept_sum, proposed, sweeps)


def _map_state(fn, *states):
    """Apply ``fn`` to every array of one or more GibbsStates, field by field (``None`` kept)."""
    s0 = states[0]
    out = []
    for f in s0._fields:
        vals = [getattr(s, f) for s in states]
        if vals[0] is None:
            out.append(None)
        elif isinstance(vals[0], tuple):
            out.append(tuple(fn(*parts) for parts in zip(*vals)))
        else:
            out.append(fn(*vals))
    return type(s0)(*out)


def chain_slice(state, lo: int, hi: int):
    """Chains ``lo … hi−1`` of a Gibbs state (views)."""
    return _map_state(lambda a: a[lo:hi, ...], state)


def stack_replicas(replicas):
    """Per-replica states of ``C`` chains → one state of ``M·C`` chains (replica-major)."""
    replicas = tuple(replicas)
    xp = namespace(replicas[0].delta_y)
    return _map_state(lambda *parts: xp.concat(parts, axis=0), *replicas)


class NoiseLevels(NamedTuple):
    """The noise variances a log density is evaluated under, one row per evaluating replica.

    ``z``, ``x``: per hidden layer, arrays of shape ``(R, 1)`` (``Δ_Z^l``, ``Δ_X^l``); ``y``:
    shape ``(R, 1)`` (tempered ``Δ_y``), or ``None`` (the state's own ``Δ_y``: learned noise,
    probit). ``log_z``, ``log_x``, ``log_y``: ``log 2πΔ`` of the same (computed once per run
    by :func:`noise_levels`; ``None``: computed where needed, as for a ``None`` ``y``)."""

    z: tuple
    x: tuple
    y: Any
    log_z: Any = None
    log_x: Any = None
    log_y: Any = None


def noise_levels(nets, output: bool, like) -> NoiseLevels:
    """:class:`NoiseLevels` of the replica nets ``nets`` (one row each)."""
    xp = namespace(like)
    col = lambda vals: xp.asarray([[float(v)] for v in vals], dtype=like.dtype, device=device_of(like))
    H = nets[0].num_layers - 1
    z = tuple(col([nk.delta_z[h] for nk in nets]) for h in range(H))
    x = tuple(col([nk.delta_x[h] for nk in nets]) for h in range(H))
    y = col([nk.delta_y for nk in nets]) if output else None
    log = lambda d: xp.log(2.0 * math.pi * d)
    return NoiseLevels(z, x, y, tuple(log(d) for d in z), tuple(log(d) for d in x), None if y is None else log(y))


def _rows(v, lo, hi):
    """Rows ``lo:hi`` of every array of a :class:`NoiseLevels` or :class:`ReplicaTerms` (fields:
    arrays, ``None`` or tuples of arrays; a swap slices six of them, so the two levels are
    written out rather than recursed into)."""
    if v is None:
        return None
    if not isinstance(v, tuple):
        return v[lo:hi, ...]
    out = [u if u is None else (tuple(_rows(w, lo, hi) for w in u) if isinstance(u, tuple) else u[lo:hi, ...])
           for u in v]
    return type(v)(*out) if hasattr(v, "_fields") else tuple(out)


class ReplicaTerms(NamedTuple):
    """The quadratic forms of the noisy variables of a state, per chain (shape ``(M, C)`` for the
    replicas' chains, or ``(C,)``): everything the replica densities depend on besides the prior.

    ``q_z[h] = ‖Z − X̃W̃^⊤‖²`` and ``q_x[h] = ‖X − f(Z)‖²`` of hidden layer ``h``;
    ``q_y = ‖T − X̃^L W̃^{L⊤}‖²`` of the output (targets ``y``, one-hot labels or utilities);
    ``delta_y`` the state's own ``Δ_y``."""

    q_z: tuple
    q_x: tuple
    q_y: Any
    delta_y: Any


def replica_terms(state, net: MLP, X, y) -> ReplicaTerms:
    """:class:`ReplicaTerms` of every chain of ``state`` (all replicas at once: one pass of
    array operations over the ``M·C`` chains, whatever ``M``)."""
    qz, qx, qy = _k.residual_sums(state, net, X, y)
    return ReplicaTerms(qz, qx, qy, state.delta_y)


def replica_log_joint(terms: ReplicaTerms, levels: NoiseLevels, net: MLP, n: int):
    """``log π`` of the states whose :class:`ReplicaTerms` are ``terms`` under the noise
    ``levels`` (rows broadcast against ``terms``' rows), *without the prior* ``log p(W̃ | λ) p(λ)``
    (it does not depend on the replica, so it cancels in every swap ratio)::

        − Σ_h [ (n d_h/2)(log 2πΔ_Z^h + log 2πΔ_X^h) + q_z^h/(2Δ_Z^h) + q_x^h/(2Δ_X^h) ]
        − (n d_out/2) log 2πΔ_y − q_y/(2Δ_y)

    (:func:`blockbayes.gibbs.kernel.log_joint` minus the prior). Looked up at call time, so the
    validation suite patches its twins here."""
    xp = fast_namespace(terms.q_y)
    two_pi = 2.0 * math.pi
    total = 0.0
    cached = levels.log_z is not None
    for h in range(net.num_layers - 1):
        m = n * net.widths[h + 1]
        dz, dx = levels.z[h], levels.x[h]
        lz, lx = (levels.log_z[h], levels.log_x[h]) if cached else (xp.log(two_pi * dz), xp.log(two_pi * dx))
        total = total - 0.5 * m * (lz + lx) - terms.q_z[h] / (2 * dz) - terms.q_x[h] / (2 * dx)
    dy = terms.delta_y if levels.y is None else levels.y
    ly = levels.log_y if (cached and levels.y is not None) else xp.log(two_pi * dy)
    return total - 0.5 * n * net.d_out * ly - terms.q_y / (2 * dy)


def pair_log_ratios(terms: ReplicaTerms, levels: NoiseLevels, net: MLP, n: int):
    """``log α`` of swapping replicas ``k`` and ``k+1`` for every adjacent pair and chain, shape
    ``(M − 1, C)``: ``log π_k(s_{k+1}) + log π_{k+1}(s_k) − log π_k(s_k) − log π_{k+1}(s_{k+1})``
    (``terms`` of shape ``(M, C)``, ``levels`` of ``M`` rows; :func:`replica_log_joint`).
    Looked up at call time (validation twins)."""
    M = terms.q_y.shape[0]
    lj = replica_log_joint
    own = lj(terms, levels, net, n)                                        # log π_k(s_k)
    up = lj(_rows(terms, 0, M - 1), _rows(levels, 1, M), net, n)           # log π_{k+1}(s_k)
    down = lj(_rows(terms, 1, M), _rows(levels, 0, M - 1), net, n)         # log π_k(s_{k+1})
    return (down - own[:M - 1, ...]) + (up - own[1:, ...])


def state_log_joint(state, net: MLP, X, y):
    """``log π_k(state)`` for the replica whose net is ``net``: the joint density (A.0),
    :func:`blockbayes.gibbs.kernel.log_joint` (the definition the batched
    :func:`pair_log_ratios` is tested against)."""
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
    ``output``, each state is evaluated with the evaluating replica's ``Δ_y``: :func:`under`).
    The definition from four full log joints; the sampler computes the same numbers for all
    pairs at once by :func:`pair_log_ratios`."""
    lj = state_log_joint
    return ((lj(under(state_b, net_a, output), net_a, X, y) - lj(under(state_a, net_a, output), net_a, X, y))
            + (lj(under(state_a, net_b, output), net_b, X, y) - lj(under(state_b, net_b, output), net_b, X, y)))


class Ladder(NamedTuple):
    """What a tempered sweep needs besides the state (built once per run by :func:`ladder`).

    Attributes
    ----------
    nets : tuple of MLP
        The replica nets (:func:`replica_nets`; ``nets[0]`` is the user's).
    factors : tuple of float
    output : bool
        Whether ``Δ_y`` is tempered.
    num_chains : int
        ``C`` (chains per replica).
    scale : array, shape (M·C,)
        Per chain the factor ``t_k`` of its replica (the sweep's ``delta_scale``).
    delta_y : array of shape (M·C,), or None
        With ``output``, per chain its replica's ``Δ_y`` (restored after every swap).
    levels : NoiseLevels
        The replicas' noise, one row each (:func:`noise_levels`).
    cache : GibbsCache
        :func:`blockbayes.gibbs.kernel.precompute` of the ``M·C`` chains (a first-layer
        Cholesky factor per chain when the hyperparameters are fixed).
    swap_arrays : SwapArrays or None
        The constant arrays of a swap (:func:`swap_arrays`), made once per run; ``None``: made
        at every swap.
    """

    nets: tuple
    factors: tuple
    output: bool
    num_chains: int
    scale: Any
    delta_y: Any
    levels: Any
    cache: Any
    swap_arrays: Any = None


class SwapArrays(NamedTuple):
    """The arrays a swap of ``M`` replicas of ``C`` chains uses that do not change from sweep to
    sweep (:func:`swap_arrays`): ``proposed[p]`` ``(M − 1, 1)`` bool, pair ``k`` proposed at
    parity ``p`` (``k ≡ p mod 2``); ``counts[p]`` ``(M − 1,)`` the same as 0/1 in the data
    dtype; ``index`` ``arange(M·C)``; ``none`` ``(1, C)`` int64 zeros; ``neg_inf`` a scalar."""

    proposed: tuple
    counts: tuple
    index: Any
    none: Any
    neg_inf: Any


def swap_arrays(M: int, C: int, like) -> SwapArrays:
    """:class:`SwapArrays` for ``M`` replicas of ``C`` chains on ``like``'s device and dtype."""
    xp = namespace(like)
    dt, dev = like.dtype, device_of(like)
    proposed = tuple(xp.asarray([[(k % 2) == p] for k in range(M - 1)], dtype=xp.bool, device=dev) for p in (0, 1))
    counts = tuple(xp.asarray([1.0 if (k % 2) == p else 0.0 for k in range(M - 1)], dtype=dt, device=dev)
                   for p in (0, 1))
    return SwapArrays(proposed, counts, xp.arange(M * C, dtype=xp.int64, device=dev),
                      xp.zeros((1, C), dtype=xp.int64, device=dev), xp.asarray(-math.inf, dtype=dt, device=dev))


def ladder(net: MLP, X, factors, num_chains: int, *, output: bool = False, learn_prior: bool = False) -> Ladder:
    """The :class:`Ladder` of ``net`` on data ``X`` for ``num_chains`` chains per replica."""
    xp = namespace(X)
    nets = replica_nets(net, factors, output)
    M, C = len(nets), int(num_chains)
    dev = device_of(X)
    scale = xp.asarray([float(t) for t in factors for _ in range(C)], dtype=X.dtype, device=dev)
    dy = xp.asarray([nk.delta_y for nk in nets for _ in range(C)], dtype=X.dtype, device=dev) if output else None
    cache = _k.precompute(net, X, learn_prior=learn_prior, delta_scale=scale)
    return Ladder(nets, tuple(float(t) for t in factors), bool(output), C, scale, dy,
                  noise_levels(nets, output, X), cache, swap_arrays(M, C, X))


def init(rng_key, net: MLP, X, y, factors, *, num_chains: int, init="prior", output: bool = False) -> TemperingState:
    """Replica states: replica ``k`` from :func:`blockbayes.gibbs.kernel.init` under its own net
    (:func:`replica_nets`; same ``init``; a random one, such as ``"prior"``, independently per
    replica), stacked into one state of ``M·C`` chains."""
    xp = namespace(X)
    nets = replica_nets(net, factors, output)
    keys = bbr.split(rng_key, len(nets))
    reps = tuple(_k.init(keys[k], nk, X, y, num_chains=num_chains, init=init) for k, nk in enumerate(nets))
    M = len(nets)
    acc = xp.zeros((max(M - 1, 0), num_chains), dtype=X.dtype, device=device_of(X))
    prop = xp.zeros((max(M - 1, 0),), dtype=X.dtype, device=device_of(X))
    return TemperingState.from_replicas(reps, acc, prop, 0)


def swap(rng_key, state, lad: Ladder, X, y, parity: int):
    """Propose the swaps of the pairs ``(k, k+1)`` with ``k ≡ parity (mod 2)``, every chain
    independently, on the ``M·C`` chains of ``state``; returns ``(state, probs)`` with ``probs``
    ``(M − 1, C)`` the acceptance probabilities ``min(1, α)`` of the pairs proposed (0 elsewhere).

    ``log α`` of every pair from one :func:`replica_terms` pass over all chains
    (:func:`pair_log_ratios`); a swap exchanges everything of the two chains' states (weights,
    latents, ``λ``, probit utilities, and ``Δ_y`` when it is learned) by one gather per array;
    with ``output`` each replica keeps its own tempered ``Δ_y``."""
    new, probs, _, _ = _swap(rng_key, state, lad, X, y, parity)
    return new, probs


def _swap(rng_key, state, lad: Ladder, X, y, parity: int):
    """:func:`swap`, returning ``(state, probs, terms, src)`` besides: ``terms`` the
    :class:`ReplicaTerms` of the input chains (flat, ``(M·C,)`` each) and ``src`` the gather
    (new chain ``i`` is input chain ``src[i]``); ``terms = src = None`` when ``M < 2``."""
    xp = fast_namespace(X)
    M, C = len(lad.nets), lad.num_chains
    dt, dev = X.dtype, device_of(X)
    if M < 2:
        return state, xp.zeros((0, C), dtype=dt, device=dev), None, None
    n = X.shape[0]
    flat = terms = replica_terms(state, lad.nets[0], X, y)
    terms = ReplicaTerms(tuple(xp.reshape(v, (M, C)) for v in terms.q_z), tuple(xp.reshape(v, (M, C)) for v in terms.q_x),
                         xp.reshape(terms.q_y, (M, C)), xp.reshape(terms.delta_y, (M, C)))
    la = pair_log_ratios(terms, lad.levels, lad.nets[0], n)                              # (M − 1, C)
    sa = lad.swap_arrays if lad.swap_arrays is not None else swap_arrays(M, C, X)
    la = xp.where(xp.isnan(la), xp.astype(sa.neg_inf, la.dtype), la)
    proposed = sa.proposed[parity % 2]
    U = bbr.uniform(rng_key, (M - 1, C), like=X)
    ok = proposed & (xp.log(U) < la)
    zero = xp.zeros_like(la)
    probs = xp.where(proposed, xp.exp(xp.minimum(la, zero)), zero)
    # new chain (k, c) takes the state of (k + 1, c) if pair k swapped, of (k − 1, c) if pair k − 1 did
    oki = xp.astype(ok, xp.int64)
    none = sa.none
    src = sa.index + C * xp.reshape(xp.concat([oki, none], axis=0) - xp.concat([none, oki], axis=0), (M * C,))
    new = _map_state(lambda a: xp.take(a, src, axis=0), state)
    if lad.output:
        new = new._replace(delta_y=lad.delta_y)
    return new, probs, flat, src


def replica_targets(y, M: int, C: int, net: MLP):
    """Per-chain targets ``y`` — shape ``(C, n, d_out)``, or labels ``(C, n)`` for the
    classification likelihoods — repeated for the ``M`` replicas (the same data for every
    replica); shared targets unchanged."""
    per_chain = y.ndim == (3 if net.likelihood == "gaussian" else 2)
    if not per_chain or y.shape[0] == M * C or M == 1:
        return y
    xp = namespace(y)
    return xp.concat([y] * M, axis=0)


def _info_rows(info, C: int):
    """Replica 0's rows of a :class:`~blockbayes.gibbs.kernel.GibbsInfo` of the ``M·C`` chains."""
    return type(info)(*(None if v is None else v[:C, ...] for v in info))


def step(rng_key, tstate: TemperingState, lad: Ladder, X, y, *, warmup: bool = False, log_joint: bool = False,
         **step_kwargs):
    """One tempered sweep: one :func:`blockbayes.gibbs.kernel.step` of all ``M·C`` chains (replica
    ``k``'s under its hidden ``Δ``: ``delta_scale = lad.scale``, and its ``Δ_y`` in the state),
    then the even or odd swaps (:func:`swap`). Returns ``(tstate, info)`` with ``info`` the cold
    replica's rows of the sweep's :class:`~blockbayes.gibbs.kernel.GibbsInfo` (pure); with
    ``log_joint``, ``info.log_joint`` is the cold replica's :func:`~blockbayes.gibbs.kernel.log_joint`
    after the swaps, assembled from the residual sums the swap ratios were computed from (a new
    cold chain is an old chain of some replica, whose sums those are) — the same numbers, bit
    for bit, without a second pass over the latents."""
    M, C = len(lad.nets), lad.num_chains
    k_step, k_swap = bbr.split(rng_key, 2)
    y = replica_targets(y, M, C, lad.nets[0])
    step_kwargs.setdefault("fused_log_joint", False)     # a swap changes the states those sums describe
    st, info = _k.step(k_step, tstate.state, lad.nets[0], X, y, cache=lad.cache, delta_scale=lad.scale,
                       **step_kwargs)
    st, probs, terms, src = _swap(k_swap, st, lad, X, y, tstate.sweeps)
    lj = None
    if log_joint:
        # the fields log_joint_from_sums reads (weights, precisions, Δ_y), of the cold chains
        cold = st._replace(weights=tuple(w[:C, ...] for w in st.weights), lam_w=st.lam_w[:C, ...],
                           lam_b=st.lam_b[:C, ...], delta_y=st.delta_y[:C, ...])
        if terms is None:
            lj = _k.log_joint(chain_slice(st, 0, C), lad.nets[0], X, y)
        else:
            xp = fast_namespace(X)
            src0 = src[:C]
            take = lambda v: xp.take(v, src0, axis=0)
            sums = (tuple(take(v) for v in terms.q_z), tuple(take(v) for v in terms.q_x), take(terms.q_y))
            lj = _k.log_joint_from_sums(cold, lad.nets[0], X, sums)
    acc, prop = tstate.accept_sum, tstate.proposed
    if not warmup and M > 1:
        acc = acc + probs
        sa = lad.swap_arrays if lad.swap_arrays is not None else swap_arrays(M, C, X)
        prop = prop + sa.counts[tstate.sweeps % 2]
    info = _info_rows(info, C)
    if lj is not None:
        info = info._replace(log_joint=lj)
    return TemperingState(st, acc, prop, tstate.sweeps + 1), info


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

