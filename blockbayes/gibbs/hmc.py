"""Joint non-centred HMC move on ALL weight matrices (issue 15; docs/gibbs-moves.md §3b).

:class:`~blockbayes.gibbs.moves.NonCentredMove` moves one hidden layer's input weights with the
latents above it following, and leaves the output layer to the centred sweep. At
``Δ_Z, Δ_X ≪ Δ_y`` the layers are strongly coupled (ReLU rescaling: a hidden unit's input
weights and its output weight move together), so per-layer moves alternate slowly. This move
holds the standardised noises of *every* hidden layer fixed,

    ξ^m = (Z^{m+1} − X̃^m W^{m⊤}) / √Δ_Z,   η^m = (X^{m+1} − f(Z^{m+1})) / √Δ_X,   m = 0, …, L−2,

and moves ``θ = (W^0, …, W^{L−1})`` — the output layer included — jointly, with the latents
following deterministically. The map ``(θ, ξ, η) ↦ (θ, Z, X)`` is block-triangular with constant
Jacobian ``∏ √Δ`` (the proof of docs/gibbs-moves.md §3 with ``l = 0`` and the output weights
added to the moved block: they enter no latent), so the conditional of ``θ`` given ``(ξ, η)``, the
output targets ``T`` (``y``, one-hot labels, or probit utilities), ``λ`` and ``Δ_y`` is

    π(θ) ∝ ∏_l N(W^l; 0, Λ_l^{-1}) · N(T; F(θ; ξ, η), Δ_y I),

the standard network's posterior with the noise realisations frozen — at ``Δ → 0`` the standard
BNN posterior that NUTS samples.

The kernel is Hamiltonian Monte Carlo with a dense mass matrix ``M = Λ + GN`` (the Gauss–Newton
matrix ``GN = Σ_μ J_μ^⊤ J_μ / Δ_y`` of the frozen-noise network over all ``P = Σ_l d_{l+1}(d_l+1)``
weights, plus the prior precision), momentum ``p ~ N(0, M)``, ``K`` leapfrog steps of size
``ε = h · u``, ``u ~ U(1 − j, 1 + j)`` (jitter, drawn independently of the state):

    p ← p + (ε/2) ∇log π(θ);   θ ← θ + ε M^{-1} p;   p ← p + (ε/2) ∇log π(θ)      (K times),
    log α = log π(θ') − ½ p'^⊤ M^{-1} p' − log π(θ) + ½ p^⊤ M^{-1} p.

Leapfrog is a composition of shears (volume preserving whatever the gradient field, so ReLU kinks
do not matter) and reversible under momentum flip, hence exact with the MH accept. ``M`` and
``h`` are per chain; during warm-up ``M`` is recomputed at the chain's state every
``refresh_every`` sweeps (except at the last warm-up sweep), and ``log h`` follows Robbins–Monro
towards ``target_accept`` (on the mean of ``min(1, α)``); both are frozen after warm-up, so every
kept sample comes from a fixed, exact kernel.

Cost per leapfrog step: one forward and one backward pass through the whole frozen-noise network,
``O(n Σ_l d_l d_{l+1})``, plus one product with ``M^{-1}`` (``O(P²)`` per chain); a refresh costs
``O(n d_out P² + P³)``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

from .._backend import device_of, namespace
from .._backend import random as bbr
from .._backend.host import np as _np     # only for np.errstate: divergent trajectories overflow
from .conditionals import output_targets
from .kernel import GibbsState
from .moves import _dact, _factor, forward_with_noises, frozen_noises
from ..kernels import frozen_noise_target, symmetric_operator
from ..model import MLP

__all__ = ["JointHMCMove", "JointHMCState", "WarmupSchedule", "joint_forward", "joint_log_target_and_grad",
           "log_target_from_sse", "stack_noises", "joint_target", "Dynamics", "PRECISIONS", "prepare_dynamics",
           "leapfrog",
           "joint_gauss_newton_precision", "prior_precision_vector", "hmc_log_accept", "kinetic", "hmc_trajectories",
           "flatten_weights", "unflatten_weights", "num_params"]


DIVERGENCE = 1000.0
"""Energy excess (nats) above which a trajectory counts as divergent and is rejected."""


class JointHMCState(NamedTuple):
    """Kernel parameters of the joint HMC move (``C`` chains, ``P`` weights in all).

    Attributes
    ----------
    chol : array, shape (C, P, P)
        Lower Cholesky factor ``R`` of the mass matrix ``M = R R^⊤ = Λ + GN``.
    inv_mass : array, shape (C, P, P)
        ``M^{-1} = R^{-⊤} R^{-1}``.
    log_step : array, shape (C,)
        ``log h``.
    sweeps : int
        Sweeps done so far (drives the warm-up refresh and adaptation).
    accept : array, shape (C,)
        Mean ``min(1, α)`` of the last call.
    accept_sum : array, shape (C,) or None
        Sum of ``accept`` over the calls after warm-up.
    sampled : int
        Calls after warm-up.
    num_warmup : int or None
        Warm-up sweeps of the run (``None``: unknown — single-state refreshes only, no averaged
        mass, no terminal window; see :meth:`JointHMCMove.schedule`).
    gn_sum : array, shape (C, P, P) or None
        Sum of the Gauss–Newton matrices accumulated in the averaging window.
    gn_count : int
        How many were accumulated.
    log_step_sum : array, shape (C,) or None
        Sum of ``log h`` over the second half of the terminal window.
    log_step_count : int
        How many were summed.
    drift : array, shape (C, P, P), or None
        ``M^{-1}`` rounded to float32, the drifts' matrix of ``precision="mixed"`` (derived from
        ``inv_mass`` whenever the mass changes, so a trajectory call does not round it again);
        ``None`` for ``precision="float64"``.
    """

    chol: object
    inv_mass: object
    log_step: object
    sweeps: int
    accept: object
    accept_sum: object = None
    sampled: int = 0
    num_warmup: object = None
    gn_sum: object = None
    gn_count: int = 0
    log_step_sum: object = None
    log_step_count: int = 0
    drift: object = None


def flatten_weights(Ws):
    """``θ = concat_l vec(W^l)`` (row-major), shape ``(C, P)``, from ``(C, d_{l+1}, d_l + 1)`` arrays."""
    xp = namespace(Ws[0])
    C = Ws[0].shape[0]
    return xp.concat([xp.reshape(W, (C, -1)) for W in Ws], axis=-1)


def unflatten_weights(theta, shapes):
    """Inverse of :func:`flatten_weights`; ``shapes`` = per-layer ``(d_{l+1}, d_l + 1)``."""
    xp = namespace(theta)
    C = theta.shape[0]
    out, s = [], 0
    for k, b in shapes:
        out.append(xp.reshape(theta[:, s:s + k * b], (C, k, b)))
        s += k * b
    return tuple(out)


def joint_forward(Ws, net: MLP, X, xi, eta):
    """The whole network with weights ``Ws`` (all layers) and frozen unscaled noises.

    ``xi, eta``: per hidden layer ``√Δ_Z ξ^m``, ``√Δ_X η^m`` of shape ``(C, n, d_{m+1})``
    (:func:`blockbayes.gibbs.moves.frozen_noises` with ``l = 0``). Returns ``(pre, post, out)``:
    the lists of ``Z^{m+1}``, ``X^{m+1}`` and the output ``X̃^{L-1} W^{L-1⊤}``, ``(C, n, d_out)``.
    """
    return forward_with_noises(X, Ws, net, xi, eta)


def prior_precision_vector(state: GibbsState, net: MLP):
    """``λ`` of every weight in the order of :func:`flatten_weights`: ``(C, P)``."""
    xp = namespace(state.lam_w)
    C = state.lam_w.shape[0]
    out = []
    for l in range(net.num_layers):
        k, d = net.widths[l + 1], net.widths[l]
        row = xp.concat([xp.broadcast_to(state.lam_w[:, l:l + 1], (C, d)), state.lam_b[:, l:l + 1]], axis=-1)
        out.append(xp.reshape(xp.broadcast_to(row[:, None, :], (C, k, d + 1)), (C, k * (d + 1))))
    return xp.concat(out, axis=-1)


def log_target_from_sse(theta, sse, lam, delta_y):
    """``log π(θ)`` up to a constant, shape ``(C,)``: ``−sse/(2Δ_y) − ½ Σ_j λ_j θ_j²``.

    ``theta``, ``lam``: ``(C, P)`` (:func:`flatten_weights`, :func:`prior_precision_vector`);
    ``sse = ‖T − out‖²`` and ``delta_y``: ``(C,)``.
    """
    xp = namespace(theta)
    return -sse / (2.0 * delta_y) - 0.5 * xp.sum(lam * theta * theta, axis=-1)


def stack_noises(xi, eta, like, X):
    """The frozen noises as the two ``(C, n, H)`` arrays of :func:`blockbayes.kernels.frozen_noise_target`
    (hidden layers side by side, ``H`` = their widths summed; ``(C, n, 0)`` without hidden layers),
    from the per-layer lists of :func:`frozen_noises`; arrays are returned as given. ``like``: a
    ``(C,)`` array of the state's dtype and device (the state's ``delta_y``)."""
    if not isinstance(xi, (list, tuple)):
        return xi, eta
    xp = namespace(like)
    if len(xi) == 0:
        z = xp.zeros((like.shape[0], X.shape[-2], 0), dtype=like.dtype, device=device_of(like))
        return z, z
    if len(xi) == 1:
        return xi[0], eta[0]
    return xp.concat(list(xi), axis=-1), xp.concat(list(eta), axis=-1)


def joint_target(net: MLP, X, T, xi, eta, lam, delta_y, precision: str = "float64"):
    """The move's target, prepared once: ``theta ↦ (log π, ∇log π, sse)`` for flat weights ``(C, P)``.

    ``log π = −sse/(2Δ_y) − ½ Σ_j λ_j θ_j²`` (:func:`log_target_from_sse`) and
    ``∇_{W^m} log π = δ^{m+1⊤} X̃^m − Λ_m W^m`` with ``δ^L = (T − out)/Δ_y`` and
    ``δ^{m} = (δ^{m+1} W^m_{:, :-1}) ⊙ f'(Z^m)``; the data term is
    :func:`blockbayes.kernels.frozen_noise_target` (the fused Numba pass on NumPy arrays), whose
    inputs are checked and converted here, once per trajectory call. ``xi, eta``: per-layer lists
    (:func:`frozen_noises`) or already stacked (:func:`stack_noises`); ``lam`` ``(C, P)``;
    ``precision`` that of the data term's passes (``"float32"``: the interior kicks of
    :func:`prepare_dynamics`; the result is returned in ``theta``'s dtype either way).
    """
    xs, es = stack_noises(xi, eta, delta_y, X)
    data = frozen_noise_target(X, T, xs, es, delta_y, net.widths, activation=net.activation, slope=net.slope,
                               precision=precision)

    def target(theta):
        sse, gdata = data(theta)
        return log_target_from_sse(theta, sse, lam, delta_y), gdata - lam * theta, sse

    return target


def joint_log_target_and_grad(theta, shapes, net: MLP, X, T, xi, eta, lam, delta_y):
    """``(log π, ∇log π, sse)`` at the flat weights ``theta`` ``(C, P)``: :func:`joint_target`
    prepared and called once (``shapes`` is accepted for the callers' convenience; the widths
    come from ``net``)."""
    return joint_target(net, X, T, xi, eta, lam, delta_y)(theta)


def joint_gauss_newton_precision(state: GibbsState, net: MLP, X, *, chunk: int = 256, prior_scale: float = 1.0):
    """``s Λ + Σ_μ J_μ^⊤ J_μ / Δ_y`` over all weights ``θ`` (ordering of :func:`flatten_weights`), ``(C, P, P)``.

    ``s = prior_scale`` (1: the Gauss–Newton approximation of the posterior precision).

    ``J_μ = ∂out_μ/∂θ``; its layer-``m`` block is ``J^z_{μ,m} ⊗ x̃^m_μ{}^⊤`` with
    ``J^z_{μ,m} = ∂out_μ/∂z^{m+1}_μ`` (``I`` for the output layer, then
    ``J^z_{m-1} = J^z_m W^m_{:, :-1} diag f'(z^m)``), at the state's latents. Cost
    ``O(n d_out P²)``, accumulated over chunks of ``chunk`` data points.
    """
    xp = namespace(X)
    C = state.delta_y.shape[0]
    L = net.num_layers
    dev = device_of(X)
    d_out = net.widths[-1]
    P = sum(net.widths[l + 1] * (net.widths[l] + 1) for l in range(L))
    n = X.shape[-2]
    GN = xp.zeros((C, P, P), dtype=X.dtype, device=dev)
    eye_out = xp.eye(d_out, dtype=X.dtype, device=dev)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        c = e - s
        blocks = [None] * L
        Jz = xp.broadcast_to(eye_out, (C, c, d_out, d_out))             # ∂out/∂z^L
        for m in range(L - 1, -1, -1):
            H = X[s:e, :] if m == 0 else state.post[m - 1][:, s:e, :]
            if H.ndim == 2:
                H = xp.broadcast_to(H, (C,) + tuple(H.shape))
            Ht = xp.concat([H, xp.ones(H.shape[:-1] + (1,), dtype=X.dtype, device=dev)], axis=-1)
            blk = Jz[..., :, None] * Ht[:, :, None, None, :]                 # (C, c, d_out, k, d+1)
            blocks[m] = xp.reshape(blk, (C, c, d_out, -1))
            if m > 0:
                Jz = xp.matmul(Jz, state.weights[m][:, None, :, :-1]) * \
                    _dact(xp, state.pre[m - 1][:, s:e, :], net.activation, net.slope)[:, :, None, :]
        J = xp.reshape(xp.concat(blocks, axis=-1), (C, c * d_out, P))
        GN = GN + xp.matmul(xp.matrix_transpose(J), J)
    GN = GN / state.delta_y[:, None, None]
    lam = prior_precision_vector(state, net)
    return GN + (prior_scale * lam)[..., :, None] * xp.eye(P, dtype=X.dtype, device=dev)


def _mv(A, v):
    """``A v``, shape ``(C, P)``: ``A`` a ``(C, P, P)`` array (batched product) or an operator
    ``v ↦ A v`` (:func:`blockbayes.kernels.symmetric_operator`, what :func:`hmc_trajectories` uses)."""
    if callable(A):
        return A(v)
    xp = namespace(v)
    return xp.matmul(A, v[..., None])[..., 0]


def kinetic(p, inv_mass):
    """``K(p) = ½ p^⊤ M^{-1} p``, shape ``(C,)`` (``inv_mass``: the matrices or their operator, :func:`_mv`)."""
    xp = namespace(p)
    return 0.5 * xp.sum(p * _mv(inv_mass, p), axis=-1)


def hmc_log_accept(lp0, lp1, k0, k1):
    """``log α = log π(θ') − K(p') − log π(θ) + K(p)``, shape ``(C,)``, from the log targets and the
    kinetic energies ``k0 = K(p)``, ``k1 = K(p')`` (:func:`kinetic`, computed once by the caller)."""
    return lp1 - k1 - lp0 + k0


class WarmupSchedule(NamedTuple):
    """Sweep indices of the joint HMC move's warm-up windows (``W`` warm-up sweeps).

    Attributes
    ----------
    average_start : int
        First sweep count at which a Gauss–Newton matrix enters the averaged mass.
    terminal_start : int
        Sweep index from which the mass is frozen and only ``h`` adapts (Stan's terminal window).
    mean_start : int
        Sweep index from which ``log h`` enters the final step size's mean.
    """

    average_start: float
    terminal_start: float
    mean_start: float


class JointHMCMove(NamedTuple):
    """Configuration of the joint non-centred HMC move (pass as ``gibbs.run(..., moves=...)``).

    Warm-up (``W`` sweeps, known from :func:`blockbayes.gibbs.run`; see :meth:`schedule`):

    1. sweeps ``[0, a)``, ``a = round(average_from · W)``: every ``refresh_every`` sweeps the mass
       is recomputed at the chain's state (it follows the chain out of its MAP start);
    2. sweeps ``[a, t)``, ``t = W − round(terminal · W)``: every ``average_every`` sweeps the
       Gauss–Newton matrix at the chain's state is added to a running sum, and every
       ``refresh_every`` sweeps (and at the last addition) the mass becomes
       ``M = s Λ + mean(GN)`` — the Gauss–Newton matrix averaged over the visited states;
    3. sweeps ``[t, W)`` (terminal window): ``M`` frozen, ``log h`` adapted with a restarted
       Robbins–Monro gain; the kept ``h`` is ``exp`` of the mean ``log h`` over the window's
       second half.

    Why (docs/gibbs-moves.md §6, design note 38): at ``Δ_y ~ 10⁻⁴`` the data directions of
    the posterior are ~10³ times stiffer than the prior ones and they rotate as the chain moves;
    a mass from ONE state goes stale within ~25 sweeps (Yacht 0, warm-up: mean ``min(1, α)``
    0.87 right after a refresh, 0.71 25 sweeps later), and after warm-up the acceptance fell from
    0.8 to 0.2–0.7 on Yacht and to ~0 (chains stuck for hundreds of sweeps) on Energy. The
    averaged mass covers the stiff directions of many states. After warm-up everything is fixed.

    With ``explore_leapfrog = K_e`` the sweeps of phases 1 and 2 (sweep index ``< t``) run
    trajectories of ``K_e`` leapfrog steps instead of ``leapfrog``; the terminal window and every
    kept sweep use ``leapfrog``, so the step size is last adapted, and the samples are drawn, with
    the kept trajectory length (the kept kernel is the same fixed, exact kernel; only the warm-up
    path that reaches its start differs). Why (docs/gibbs-moves.md §6, session 14, design note
    51): from joint-MAP starts the chains inflate the weakly determined directions but stay in
    the MAP fits' function basins, while NUTS, from a random start, reaches better-fitting basins
    by spending ~1000 warm-up iterations × ~1023 leapfrog steps per chain; longer warm-up
    trajectories travel further per accept. The exploration stops at ``t``, not at the averaging
    start ``a``: the averaged mass then covers the states the long trajectories reach, and the
    terminal window (``W − t`` sweeps, which must be non-empty) re-adapts ``h`` for ``leapfrog``.
    Cost: ``t · (K_e − leapfrog)`` more gradient evaluations per chain (``gold_hmc_long``, W = 500,
    t = 425: the run's 64 000 leapfrog steps per chain become 145 600 at ``K_e = 256`` (2.3×) and
    472 000 at ``K_e = 1024`` (7.4×)). Measured (session 16, design note 53; inner validation
    splits Energy 0, 2 and Yacht 0, seed 0, against the default rerun on the same machine): mean
    held-out ΔLL +0.004 nats at ``K_e = 256`` and +0.014 at 1024 (Energy 0 +0.066 at seed 0,
    −0.060 at seed 1), at 1.6–2.0× and 4.4–6.4× the CPU time — below the +0.02 adoption rule, so
    off by default.

    Attributes
    ----------
    leapfrog : int
        Leapfrog steps per trajectory ``K``.
    trajectories : int
        Trajectories (each with its own MH accept) per sweep.
    target_accept : float
        Warm-up target of the mean ``min(1, α)``.
    refresh_every : int
        During warm-up, recompute (phase 1) or re-average (phase 2) the mass every this many sweeps.
    init_step : float
        Initial ``h`` (in units of the mass matrix: ``h ≈ 1`` is the leapfrog stability limit's
        half on an exactly preconditioned Gaussian).
    jitter : float
        ``ε = h · U(1 − jitter, 1 + jitter)``, in ``[0, 1)``.
    max_params : int
        Largest total weight count ``P`` accepted (the mass matrix is dense: ``O(P²)`` memory per
        chain, ``O(P²)`` per leapfrog step); larger nets raise — use
        :class:`~blockbayes.gibbs.moves.NonCentredMove` (per-layer, per-row blocks) there.
    chunk : int
        Data points per chunk of the Gauss–Newton accumulation.
    prior_mass : float
        ``s`` in ``M = s Λ + GN``. With ``s = 1`` the mass is the Gauss–Newton posterior
        precision; but at small ``Δ_y`` the ReLU kinks make the directions the data do not pin
        (dead units, the null space of ``J``) far stiffer than the prior says, and they limit the
        step size (measured on Yacht split 0 at the MAP start, one leapfrog step at ``h = 0.1``:
        median energy error 62 nats with ``s = 1``, 0.9 with ``s = 100``, 0.15 with ``s = 1000``).
        Any fixed ``M`` keeps the move exact; ``s`` only trades speed along those directions
        for a larger step along the data-determined ones.
    average_from : float
        Fraction of warm-up after which the mass is the averaged Gauss–Newton matrix, in
        ``[0, 1]`` (1: single-state refreshes throughout, session 9's rule).
    average_every : int
        Sweeps between the Gauss–Newton matrices averaged.
    terminal : float
        Fraction of warm-up at its end with the mass frozen and only ``h`` adapted, in
        ``[0, 1)`` (0 and ``average_from = 1``: session 9's rule, the last iterate's ``h`` kept).
    explore_leapfrog : int or None
        Leapfrog steps per trajectory of the warm-up sweeps before the terminal window (see
        above); ``None`` (default): ``leapfrog`` throughout. Needs ``num_warmup`` (the window's
        place) and a non-empty terminal window.
    precision : {"mixed", "float64"}
        ``"mixed"`` (default): the interior leapfrog kicks use the float32 forward/backward pass
        and every drift ``M⁻¹`` held in float32, while the force at a trajectory's ends and the
        energies of the accept stay float64 — exact, like any deterministic force and fixed drift
        (:func:`prepare_dynamics`; design note 58): per leapfrog step the pass is 1.14–1.32× and the
        mass product 1.11–1.44× faster on this repository's CPU, whole runs 1.04–1.08×.
        ``"float64"``: everything in float64 (session 19's kernel).
    """

    leapfrog: int = 32
    trajectories: int = 1
    target_accept: float = 0.8
    refresh_every: int = 25
    init_step: float = 0.3
    jitter: float = 0.2
    max_params: int = 4000
    chunk: int = 256
    prior_mass: float = 100.0
    average_from: float = 0.5
    average_every: int = 5
    terminal: float = 0.15
    explore_leapfrog: Optional[int] = None
    precision: str = "mixed"

    def validate(self, net: MLP = None):
        for name in ("leapfrog", "trajectories", "refresh_every", "max_params", "chunk", "average_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not 0.0 < self.target_accept < 1.0:
            raise ValueError(f"target_accept must lie in (0, 1), got {self.target_accept!r}")
        for name in ("init_step", "prior_mass"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be positive and finite, got {v!r}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"jitter must lie in [0, 1), got {self.jitter!r}")
        if not 0.0 <= self.average_from <= 1.0:
            raise ValueError(f"average_from must lie in [0, 1], got {self.average_from!r}")
        if not 0.0 <= self.terminal < 1.0:
            raise ValueError(f"terminal must lie in [0, 1), got {self.terminal!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        v = self.explore_leapfrog
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"explore_leapfrog must be an int >= 1 or None, got {v!r}")
        if net is not None:
            P = num_params(net)
            if P > self.max_params:
                raise ValueError(f"the joint HMC move's mass matrix is dense ({P} x {P} per chain for widths "
                                 f"{list(net.widths)}), above max_params={self.max_params}; raise max_params if "
                                 "memory and O(P^2) per leapfrog step are affordable, or use NonCentredMove")

    def schedule(self, num_warmup) -> WarmupSchedule:
        """The warm-up windows for ``num_warmup`` sweeps (``None``: phase 1 only, no final mean).

        ``terminal_start = W − round(terminal · W)``, ``average_start = min(round(average_from · W),
        terminal_start)``, ``mean_start = terminal_start + (W − terminal_start) // 2``.
        """
        if num_warmup is None:
            return WarmupSchedule(math.inf, math.inf, math.inf)
        W = int(num_warmup)
        t = W - int(round(self.terminal * W))
        a = min(int(round(self.average_from * W)), t)
        return WarmupSchedule(a, t, t + (W - t) // 2 if t < W else math.inf)

    def init(self, state: GibbsState, net: MLP, X, y, *, num_warmup=None) -> JointHMCState:
        """Kernel parameters at ``state`` (mass matrix from its joint Gauss–Newton matrix).

        ``num_warmup``: the run's warm-up sweeps (:func:`blockbayes.gibbs.run` passes it), which
        place the averaging and terminal windows; ``None``: single-state refreshes only.
        """
        self.validate(net)
        if num_warmup is not None and (isinstance(num_warmup, bool) or not isinstance(num_warmup, int)
                                       or num_warmup < 0):
            raise ValueError(f"num_warmup must be an int >= 0 or None, got {num_warmup!r}")
        if self.explore_leapfrog is not None:
            if num_warmup is None:
                raise ValueError("explore_leapfrog needs num_warmup (the exploratory sweeps end where the terminal "
                                 "window starts); gibbs.run passes it")
            if num_warmup > 0 and self.schedule(num_warmup).terminal_start >= num_warmup:
                raise ValueError(f"explore_leapfrog needs a non-empty terminal window (the step size must be adapted "
                                 f"with the kept leapfrog={self.leapfrog}); terminal={self.terminal!r} gives none "
                                 f"at num_warmup={num_warmup}")
        xp = namespace(X)
        C = state.delta_y.shape[0]
        R, Minv = _mass(state, net, X, self.chunk, self.prior_mass)
        ls = xp.full((C,), math.log(self.init_step), dtype=X.dtype, device=device_of(X))
        acc = xp.zeros((C,), dtype=X.dtype, device=device_of(X))
        return JointHMCState(R, Minv, ls, 0, acc, None, 0, num_warmup, drift=self._drift_matrix(Minv))

    def _drift_matrix(self, inv_mass):
        """:attr:`JointHMCState.drift` for ``inv_mass``: float32 for ``"mixed"``, ``None`` otherwise."""
        if self.precision == "float64":
            return None
        xp = namespace(inv_mass)
        return xp.astype(inv_mass, xp.float32)

    def step(self, key, mstate: JointHMCState, state: GibbsState, net: MLP, X, y, *, warmup: bool = False,
             final_warmup: bool = False):
        """``trajectories`` HMC trajectories on all weights; returns ``(state, mstate)``.

        With ``warmup`` the kernel adapts by the windows of :meth:`schedule` (the mass is never
        changed at the last warm-up sweep, so the kept samples use the mass the step size was
        last adapted with); otherwise the kernel parameters are fixed and ``mstate`` only records
        the acceptance. ``final_warmup`` marks the last warm-up sweep (without ``num_warmup``
        the mass is not refreshed there either).
        """
        xp = namespace(X)
        C = state.delta_y.shape[0]
        T = output_targets(net, y, state.latent, C, X)
        h = xp.exp(mstate.log_step)
        state, rate = hmc_trajectories(key, state, net, X, T, mstate.chol, mstate.inv_mass, h,
                                       self.trajectory_length(mstate, warmup), self.trajectories, self.jitter,
                                       self.precision, mstate.drift)
        if not warmup:
            acc_sum = rate if mstate.accept_sum is None else mstate.accept_sum + rate
            return state, mstate._replace(sweeps=mstate.sweeps + 1, accept=rate, accept_sum=acc_sum,
                                          sampled=mstate.sampled + 1)
        return state, self._adapt(mstate, state, net, X, rate, final_warmup)

    def trajectory_length(self, mstate: JointHMCState, warmup: bool) -> int:
        """Leapfrog steps of the next call: ``explore_leapfrog`` for a warm-up sweep with index
        ``mstate.sweeps < schedule(num_warmup).terminal_start``, else ``leapfrog``."""
        if (self.explore_leapfrog is not None and warmup
                and mstate.sweeps < self.schedule(mstate.num_warmup).terminal_start):
            return self.explore_leapfrog
        return self.leapfrog

    def _adapt(self, mstate: JointHMCState, state: GibbsState, net: MLP, X, rate, final_warmup: bool):
        """One warm-up sweep's adaptation (sweep index ``mstate.sweeps``): ``h``, then the mass."""
        sch = self.schedule(mstate.num_warmup)
        s = mstate.sweeps
        t0 = sch.terminal_start if s >= sch.terminal_start else 0        # the terminal window restarts the gain
        gamma = 1.0 / math.sqrt(1.0 + (s - t0) / 10.0)
        log_step = mstate.log_step + gamma * (rate - self.target_accept)
        ls_sum, ls_n = mstate.log_step_sum, mstate.log_step_count
        if s >= sch.mean_start:
            ls_sum, ls_n = (log_step if ls_sum is None else ls_sum + log_step), ls_n + 1
        sweeps = s + 1
        R, Minv = mstate.chol, mstate.inv_mass
        gn_sum, gn_n = mstate.gn_sum, mstate.gn_count
        last = final_warmup or (mstate.num_warmup is not None and sweeps >= mstate.num_warmup)
        if not last and sweeps < sch.terminal_start:
            if sweeps >= sch.average_start:
                if (sweeps - sch.average_start) % self.average_every == 0:
                    G = joint_gauss_newton_precision(state, net, X, chunk=self.chunk, prior_scale=0.0)
                    gn_sum, gn_n = (G if gn_sum is None else gn_sum + G), gn_n + 1
                    if sweeps % self.refresh_every == 0 or sweeps + self.average_every >= sch.terminal_start:
                        R, Minv = _mass_from(gn_sum / gn_n, state, net, self.prior_mass)
            elif sweeps % self.refresh_every == 0:
                R, Minv = _mass(state, net, X, self.chunk, self.prior_mass)
        if last and ls_n:
            log_step = ls_sum / ls_n                     # the kept h: mean log h of the window's second half
        drift = mstate.drift if Minv is mstate.inv_mass else self._drift_matrix(Minv)
        return mstate._replace(chol=R, inv_mass=Minv, log_step=log_step, sweeps=sweeps, accept=rate,
                               gn_sum=None if last else gn_sum, gn_count=gn_n, log_step_sum=ls_sum,
                               log_step_count=ls_n, drift=drift)

    def summary(self, mstate: JointHMCState) -> dict:
        """JSON-able report: mean ``min(1, α)`` after warm-up, final step sizes, settings."""
        from .._backend import to_numpy

        out = {"move": "joint non-centred HMC", "layers": "all", "leapfrog": self.leapfrog,
               "trajectories": self.trajectories, "average_from": self.average_from, "terminal": self.terminal,
               "averaged_gn": mstate.gn_count, "precision": self.precision}
        if self.explore_leapfrog is not None:
            out["explore_leapfrog"] = self.explore_leapfrog
        if mstate.sampled:
            out["accept"] = [float(to_numpy(mstate.accept_sum).mean()) / mstate.sampled]
        out["step_size"] = [float(math.exp(float(to_numpy(mstate.log_step).mean())))]
        return out


def num_params(net: MLP) -> int:
    """``P = Σ_l d_{l+1}(d_l + 1)``: all weights and biases of the net."""
    return sum(net.widths[l + 1] * (net.widths[l] + 1) for l in range(net.num_layers))


def _mass(state, net, X, chunk, prior_scale):
    """``(R, M^{-1})`` of the mass matrix ``M = s Λ + GN`` at ``state``."""
    xp = namespace(X)
    R, Rinv = _factor(joint_gauss_newton_precision(state, net, X, chunk=chunk, prior_scale=prior_scale))
    return R, xp.matmul(xp.matrix_transpose(Rinv), Rinv)


def _mass_from(gn, state, net, prior_scale):
    """``(R, M^{-1})`` of ``M = s Λ + GN`` for a given (averaged) Gauss–Newton matrix ``gn`` ``(C, P, P)``."""
    xp = namespace(gn)
    lam = prior_precision_vector(state, net)
    M = gn + (prior_scale * lam)[..., :, None] * xp.eye(gn.shape[-1], dtype=gn.dtype, device=device_of(gn))
    R, Rinv = _factor(M)
    return R, xp.matmul(xp.matrix_transpose(Rinv), Rinv)


class Dynamics(NamedTuple):
    """The functions one HMC call integrates with, prepared once (:func:`prepare_dynamics`).

    Attributes
    ----------
    target : callable
        ``θ ↦ (log π, ∇log π, sse)`` in float64 (:func:`joint_target`): the energies of the accept,
        and the force at a trajectory's two ends.
    interior : callable
        The same for the interior kicks (``θ_1 … θ_{K−1}``): ``target`` itself, or its float32
        twin with ``precision="mixed"``.
    drift : callable
        ``p ↦ A p`` of the position updates: ``M⁻¹`` (float64), or ``M⁻¹`` held in float32.
    inv_mass : callable
        ``p ↦ M⁻¹ p`` in float64: the kinetic energies of the accept.
    """

    target: object
    interior: object
    drift: object
    inv_mass: object


PRECISIONS = ("mixed", "float64")


def prepare_dynamics(net: MLP, X, T, xi, eta, lam, delta_y, inv_mass, precision: str = "float64",
                     drift=None) -> Dynamics:
    """:class:`Dynamics` for one :func:`hmc_trajectories` call.

    ``precision="float64"``: every force and drift in float64. ``"mixed"``: the interior kicks use
    the float32 pass (:func:`blockbayes.kernels.frozen_noise_target` with ``precision="float32"``)
    and every drift uses ``M⁻¹`` rounded to float32, while the force at both ends of a trajectory,
    ``log π`` and the kinetic energies of the accept stay float64. Why this keeps the move exact
    (design note 58): a leapfrog step is a composition of shears — ``p += (ε/2) g(θ)`` and
    ``θ += ε A p`` are volume preserving for any function ``g`` of the position and any fixed
    matrix ``A`` — and the rule "float64 force at the two ends, float32 inside" is symmetric under
    reversal (the reversed trajectory visits the same interior points), so the proposal is a
    volume-preserving involution with the momentum flip; the accept uses the exact
    ``H = −log π + ½ pᵀM⁻¹p`` with ``p ~ N(0, M)``. Rounding only perturbs the dynamics
    (relative ~1e-7), i.e. the acceptance, not the target. ``drift``: ``M⁻¹`` already rounded to
    float32 (:attr:`JointHMCState.drift`; ``None``: rounded here).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    target = joint_target(net, X, T, xi, eta, lam, delta_y)
    inv = symmetric_operator(inv_mass)                      # M⁻¹p reading M⁻¹'s upper triangle
    if precision == "float64":
        return Dynamics(target, target, inv, inv)
    interior = joint_target(net, X, T, xi, eta, lam, delta_y, precision="float32")
    lo = symmetric_operator(inv_mass if drift is None else drift, precision="float32")
    return Dynamics(target, interior, lo, inv)


def leapfrog(dyn: Dynamics, theta, lp, grad, p, eps, steps: int, H0):
    """``steps`` leapfrog steps from ``(θ, p)`` with step sizes ``eps`` ``(C,)``; ``(lp, grad)`` at ``θ``.

    The first half kick uses the given ``grad``; positions ``θ_1 … θ_{K−1}`` get full kicks from
    ``dyn.interior``, the last position ``θ_K`` a half kick from ``dyn.target`` (so ``log π`` there is
    exact). A chain whose ``−log π(θ_k) − H0`` exceeds :data:`DIVERGENCE` (or is not finite) is frozen
    from there on. Returns ``(θ_K, log π(θ_K), ∇log π(θ_K), p_K, max_k −log π(θ_k), divergent)``.
    """
    xp = namespace(theta)
    zero = xp.zeros((), dtype=theta.dtype, device=device_of(theta))
    max_u = -lp
    div = xp.zeros(lp.shape, dtype=xp.bool, device=device_of(theta))
    p = p + (0.5 * eps)[:, None] * grad
    th, lpp, gpf = theta, lp, grad
    frozen = False                  # has any chain diverged yet (then the masked updates below)
    for s in range(steps):
        last = s == steps - 1
        half = 0.5 if last else 1.0
        e_eff = xp.where(div, zero, eps)[:, None] if frozen else eps[:, None]
        cand = th + e_eff * dyn.drift(p)
        lpc, gc, _ = (dyn.target if last else dyn.interior)(cand)
        div = div | ~xp.isfinite(lpc) | (-lpc - H0 > DIVERGENCE)
        if not frozen and not bool(xp.any(div)):
            # the usual step, no chain frozen: the masked updates below with every mask true (same values)
            th, lpp, gpf = cand, lpc, gc
            max_u = xp.maximum(max_u, -lpc)
            p = p + half * eps[:, None] * gpf
            continue
        frozen = True
        keep = ~div
        kv = keep[:, None]
        th = xp.where(kv, cand, th)
        lpp = xp.where(keep, lpc, lpp)
        gpf = xp.where(kv, gc, gpf)
        max_u = xp.where(keep, xp.maximum(max_u, -lpc), max_u)
        p = p + xp.where(kv, half * eps[:, None] * gpf, zero)
    return th, lpp, gpf, p, max_u, div


def hmc_trajectories(key, state: GibbsState, net: MLP, X, T, R, inv_mass, h, leapfrog_steps, trajectories, jitter,
                     precision: str = "float64", drift=None):
    """``trajectories`` HMC transitions of all weights with frozen noises; returns ``(state, rate)``.

    ``rate``: mean over trajectories of ``min(1, α)`` (0 for a divergent one), shape ``(C,)``.
    The latents of the new state are those of the frozen-noise forward pass at the accepted
    weights. ``precision``: ``"float64"`` or ``"mixed"``; ``drift``: ``inv_mass`` rounded to
    float32 if the caller holds it (:func:`prepare_dynamics`).

    Divergence (Stan's and NumPyro's rule, made symmetric): a trajectory ``θ_0 … θ_K`` is
    rejected when ``max_k U(θ_k) − min(H_0, H_K) > DIVERGENCE`` (``U = −log π``, ``H = U + K``) or
    a ``U(θ_k)`` is not finite. The criterion is a symmetric function of the visited states
    (``H_0 ↔ H_K`` under reversal), so the MH kernel stays reversible; once ``U(θ_k) − H_0``
    exceeds the threshold the trajectory is rejected whatever follows, so the chain is frozen
    there (no further overflow).
    """
    xp = namespace(X)
    C = state.delta_y.shape[0]
    shapes = [tuple(W.shape[1:]) for W in state.weights]
    xi, eta = frozen_noises(state, net, X, 0)
    lam = prior_precision_vector(state, net)
    theta = flatten_weights(state.weights)
    dyn = prepare_dynamics(net, X, T, xi, eta, lam, state.delta_y, inv_mass, precision, drift)   # prepared once
    lp, gf, _ = dyn.target(theta)
    P = theta.shape[-1]
    k1, k2, k3 = bbr.split(key, 3)
    E = bbr.normal(k1, (trajectories, C, P, 1), like=X)
    Uj = bbr.uniform(k2, (trajectories, C), like=X)
    Ua = bbr.uniform(k3, (trajectories, C), like=X)
    rate = xp.zeros((C,), dtype=X.dtype, device=device_of(X))
    zero = xp.zeros((), dtype=X.dtype, device=device_of(X))
    moved = xp.zeros((C,), dtype=xp.bool, device=device_of(X))
    with _np.errstate(over="ignore", invalid="ignore"):
        for t in range(trajectories):
            eps = h * (1.0 + jitter * (2.0 * Uj[t] - 1.0))
            p0 = xp.matmul(R, E[t])[..., 0]                                # p ~ N(0, M)
            k0 = kinetic(p0, dyn.inv_mass)
            H0 = k0 - lp
            th, lpp, gpf, p, max_u, div = leapfrog(dyn, theta, lp, gf, p0, eps, leapfrog_steps, H0)
            kK = kinetic(p, dyn.inv_mass)
            HK = kK - lpp
            div = div | ~xp.isfinite(HK) | (max_u - xp.minimum(H0, HK) > DIVERGENCE)
            log_alpha = hmc_log_accept(lp, lpp, k0, kK)
            la = xp.where(div | ~xp.isfinite(log_alpha), xp.full_like(log_alpha, -math.inf), log_alpha)
            rate = rate + xp.exp(xp.minimum(la, zero))
            ok = xp.log(Ua[t]) < la
            okv = ok[:, None]
            theta = xp.where(okv, th, theta)
            gf = xp.where(okv, gpf, gf)
            lp = xp.where(ok, lpp, lp)
            moved = moved | ok
    Ws = unflatten_weights(theta, shapes)
    pre, post, _ = joint_forward(Ws, net, X, xi, eta)          # the latents follow the weights
    mw = moved[:, None, None]
    pre = tuple(xp.where(mw, a, b) for a, b in zip(pre, state.pre))
    post = tuple(xp.where(mw, a, b) for a, b in zip(post, state.post))
    new = state._replace(weights=tuple(xp.where(mw, a, b) for a, b in zip(Ws, state.weights)), pre=pre, post=post)
    return new, rate / trajectories
