"""``gibbs.run(..., moves="auto")``: add the joint non-centred HMC move where it is affordable.

Why (docs/gibbs-moves.md §6, sessions 16 and 18; design note 56): the centred sweep alone does not
mix in function space in the budgets people run — the issue-15 user path (50 ReLU units, 2 chains,
1500 + 500 sweeps) ended with max R-hat of the probe outputs 1.79–2.04 on all five small UCI sets —
while the same runs with :class:`~blockbayes.gibbs.hmc.JointHMCMove` (32 leapfrog steps) ended at
1.007–1.13, at 5–8× the wall-clock. The move costs one forward and one backward pass over all ``n``
rows per leapfrog step, so on large data it is the whole run (the user path on Naval, ``n = 10741``,
and Protein, ``n ≈ 41000``, would take an estimated 10–40 minutes), and it needs warm-up to adapt
its mass and step size (unadapted it accepts nothing). The rule here decides from the call alone —
no timing, so the same call always resolves the same way and the same seed gives the same samples:

1. explicit moves (an object) or ``None`` / ``"none"`` are used as given; ``"hmc"`` is
   ``JointHMCMove()`` whatever the cost;
2. ``"auto"`` adds ``JointHMCMove()`` (its defaults: 32 leapfrog steps, one trajectory per sweep)
   when all of these hold, and nothing otherwise:

   * the likelihood is Gaussian (regression, where the rule was measured; on digits, a
     ``[64, 32, 10]`` multinomial-probit net, 2 chains, 300 + 200 sweeps, the move left the chains
     unmixed — max R-hat 1.93 — at 30× the wall-clock: 254 against 8.6 s, accuracy 0.963 against
     0.967);
   * replica exchange is not running (``tempering`` resolved off — the tiny problems, where the
     ladder is what unsticks the chains) and no ``schedule`` is given (a warm-up schedule asks for
     its own move settings, :class:`~blockbayes.gibbs.anneal.AnnealedDelta`);
   * ``num_warmup >= AUTO_MIN_WARMUP`` (the move's mass refreshes, averaging window and terminal
     step-size window all live in the warm-up);
   * the net has at most ``JointHMCMove().max_params`` weights (its mass matrix is dense);
   * the estimated work (:func:`move_work`: leapfrog steps over all rows and the dense mass
     products, plus the warm-up's mass computations) is at most ``AUTO_MAX_WORK`` (~3 minutes of
     move on one core here) **either** for the run as called **or** for the default run on the same
     data (:data:`REFERENCE_RUN`: ``gibbs.run``'s 4 chains × (1000 + 1000) sweeps).

   The second branch (design note 64) makes the decision monotone in the budget: where the default
   call gets the move, a call asking for more samples, warm-up or chains keeps it and pays for it in
   proportion, instead of silently losing the move that makes the chains mix. Measured before the
   change (Energy split 0, ``bb.MLP([8, 50, 1])``, seed 0): the default call, with the move, test
   RMSE / LL 0.257 / −0.059; the same call with ``num_samples=4000`` (so 4000 + 4000 sweeps, over the
   cap) had no move and gave 0.298 / −0.224 — four times the sweeps for a worse answer. The first
   branch keeps short runs on large data: a run whose own move fits the cap gets it.

``result.config["moves_auto"]`` records the decision and its reason; when ``"auto"`` added
nothing because of the cost, the end-of-run convergence warning says so and how to add the move
anyway.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

from ..model import MLP

__all__ = ["AUTO_MIN_WARMUP", "AUTO_MAX_WORK", "GN_UNIT_WEIGHT", "MOVE_NAMES", "REFERENCE_RUN", "AutoMoves",
           "check_moves_name", "gauss_newton_count", "move_work", "resolve_moves"]

AUTO_MIN_WARMUP = 200
"""Fewest warm-up sweeps with which ``moves="auto"`` adds the joint HMC move (its adaptation windows)."""

AUTO_MAX_WORK = 4e11
"""Largest estimated work (:func:`move_work`) for which ``moves="auto"`` adds the move: about three
minutes of move on one core.

Recalibrated in session 21 (design note 60), when ``gibbs.run``'s defaults became 4 chains of
1000 + 1000 sweeps: on Wine (split 0, standardised, ``bb.MLP([11, 50, 1])``, work 3.59e11) the
default call took 183.0 s with the move (``moves="hmc"``) and 34.8 s without, MAP fits in both
(one thread, load 1.9–2.2 beside another process): 0.41 ns per unit, so the old cap of 3e11 was
about 2 minutes and the new one is ~2.8 minutes. With the defaults, Yacht (7.1e10), Energy
(1.6e11), Concrete (1.9e11), Boston (2.4e11) and Wine (3.6e11) get the move; Naval (2.8e12) and
Protein (1.3e13) do not. (Was 3e11, which left Wine's default call unmixed: max R-hat of the
probe outputs 1.78 without the move, 1.002 with it; docs/gibbs-moves.md §6 "Session 21".)

Session 18's calibration, kept for the record:
Measured (session 18, one thread, NumPy/OpenBLAS, this repository's 2-core EPYC, load ~2): 0.52 ns
per unit on Boston and 0.62 on Wine (user path, 2 chains, 2000 sweeps; the sweep's own time
taken off), 0.58 on digits (``[64, 32, 10]``, 2 chains, 500 sweeps; 254 s), so the cap is ~3
minutes of move on one core. The issue-15 user path is under it on Yacht (3.6e10), Energy
(7.9e10), Boston (1.2e11), Concrete (9.5e10) and Wine (1.8e11), and over it on Naval (1.4e12) and
Protein (3.1e12); the demo (4 chains, 1500 sweeps, ``[20, 10, 1]``, n = 2000) is at 9.6e10.
Since session 19 the move's forward/backward pass is one fused kernel (design note 57), and since
session 20 its interior steps run in float32 (note 58), hence the recalibration above. The cap is a
count of units, not a timing, so that the same call always makes the same decision."""

REFERENCE_RUN = dict(num_chains=4, num_warmup=1000, sweeps=2000)
"""The default run of :func:`blockbayes.gibbs.run` (``DEFAULT_COUNTS``: 4 chains, 1000 kept sweeps and as
many warm-up), whose estimated work on the same data is the second test of ``moves="auto"``: a problem
on which the default call gets the move keeps it whatever budget is asked (design note 64)."""

GN_UNIT_WEIGHT = 1.0 / 30.0
"""Cost of one multiply-add of the Gauss–Newton accumulation (a large matrix product) relative to
one of a leapfrog step (small products and a memory-bound mass product): measured 0.027–0.04 ns
against ~1 ns per unit (Boston, digits; session 18)."""


class AutoMoves(NamedTuple):
    """What ``moves`` resolved to.

    Attributes
    ----------
    moves : object or None
        The move object passed to the sampler (``None``: the sweep alone).
    requested : str
        ``"auto"``, ``"hmc"``, ``"none"`` or ``"given"`` (an object or ``None`` from the caller).
    reason : str
        Why (for ``"auto"``: which condition decided).
    work : float or None
        The estimated work ``C · sweeps · K · n · P`` of the joint HMC move (``None`` when not
        estimated).
    reference_work : float or None
        The same estimate for the default run on the same data (:data:`REFERENCE_RUN`).
    """

    moves: object
    requested: str
    reason: str
    work: Optional[float] = None
    reference_work: Optional[float] = None

    def summary(self) -> dict:
        """JSON-able record for ``result.config["moves_auto"]``."""
        out = {"requested": self.requested, "chosen": "none" if self.moves is None else type(self.moves).__name__,
               "reason": self.reason}
        if self.work is not None:
            out.update(work=float(self.work), max_work=AUTO_MAX_WORK)
        if self.reference_work is not None:
            out.update(reference_work=float(self.reference_work))
        return out

    @property
    def declined_for_cost(self) -> bool:
        """``"auto"`` added nothing because the estimated work or the net's size was too large."""
        return self.requested == "auto" and self.moves is None and self.reason.startswith("cost")


MOVE_NAMES = ("auto", "hmc", "none")
"""The strings ``gibbs.run``'s ``moves`` accepts."""


def check_moves_name(moves) -> None:
    """Raise ``ValueError`` for a string ``moves`` other than :data:`MOVE_NAMES` (objects and ``None`` pass)."""
    if isinstance(moves, str) and moves not in MOVE_NAMES:
        raise ValueError(f"moves must be 'auto', 'hmc', 'none', None or a move object, got {moves!r}")


def gauss_newton_count(move, num_warmup: int) -> int:
    """Gauss–Newton matrices the joint HMC move computes in ``num_warmup`` warm-up sweeps: one at
    ``init``, one per refresh of phase 1 and one per averaging point of phase 2
    (:meth:`~blockbayes.gibbs.hmc.JointHMCMove.schedule`; none after warm-up)."""
    W = int(num_warmup)
    if W <= 0:
        return 1
    sch = move.schedule(W)
    a, t = int(sch.average_start), int(sch.terminal_start)
    # after warm-up sweep k (1-based) with k < t: phase 1 (k < a) refreshes when k % refresh_every == 0,
    # phase 2 (k >= a) adds a matrix when (k - a) % average_every == 0
    phase1 = (min(a, t) - 1) // move.refresh_every if min(a, t) >= 1 else 0
    k_min = 0 if a >= 1 else 1
    k_max = (t - 1 - a) // move.average_every if t - 1 >= a else -1
    phase2 = max(0, k_max - k_min + 1)
    return 1 + phase1 + phase2


def move_work(net: MLP, n: int, *, num_chains: int, num_warmup: int, sweeps: int, move=None) -> float:
    """Estimated work of the joint HMC move, in leapfrog units (``move``: default ``JointHMCMove()``):

        C · sweeps · K · (n P + P²)  +  GN_UNIT_WEIGHT · C · G · (n d_out P² + P³),

    ``C`` chains, ``K`` leapfrog steps, ``n`` rows, ``P`` weights and biases, ``G``
    (:func:`gauss_newton_count`) mass computations. A leapfrog step is one forward and one backward
    pass over the rows (``n P``) and one product with the dense inverse mass (``P²``, memory-bound);
    a mass computation accumulates ``J^T J`` over ``n d_out`` rows of the Jacobian and factors it.
    """
    from .hmc import JointHMCMove, num_params

    mv = JointHMCMove() if move is None else move
    P, d_out, C = float(num_params(net)), float(net.widths[-1]), float(num_chains)
    K = float(mv.leapfrog * mv.trajectories)
    G = float(gauss_newton_count(mv, num_warmup))
    return C * float(sweeps) * K * (n * P + P * P) + GN_UNIT_WEIGHT * C * G * (n * d_out * P * P + P ** 3)


def resolve_moves(moves, net: MLP, n: int, *, num_chains: int, num_warmup: int, num_samples: int, thin: int,
                  tempering_active: bool, schedule) -> AutoMoves:
    """Resolve ``gibbs.run``'s ``moves`` argument by the rule of this module's docstring.

    Parameters
    ----------
    moves : "auto", "hmc", "none", None or a move object
    net : MLP
    n : int
        Training rows.
    num_chains, num_warmup, num_samples, thin : int
        As given to :func:`blockbayes.gibbs.run`.
    tempering_active : bool
        Whether replica exchange runs (``tempering`` resolved).
    schedule : object or None
        ``gibbs.run``'s ``schedule``.

    Returns
    -------
    AutoMoves

    Raises
    ------
    ValueError
        For a string other than ``"auto"``, ``"hmc"``, ``"none"``.
    """
    from .hmc import JointHMCMove, num_params

    if moves is None or not isinstance(moves, str):
        return AutoMoves(moves, "given", "given by the caller")
    check_moves_name(moves)
    if moves == "none":
        return AutoMoves(None, "none", "moves='none'")
    if moves == "hmc":
        return AutoMoves(JointHMCMove(), "hmc", "moves='hmc'")
    cand = JointHMCMove()
    sweeps = int(num_warmup) + int(num_samples) * int(thin)
    work = move_work(net, n, num_chains=num_chains, num_warmup=num_warmup, sweeps=sweeps, move=cand)
    ref = move_work(net, n, move=cand, **REFERENCE_RUN)
    if net.likelihood != "gaussian":
        return AutoMoves(None, "auto", f"likelihood={net.likelihood!r} (the rule was measured on regression)",
                         work, ref)
    if tempering_active:
        return AutoMoves(None, "auto", "replica exchange is running (tempering)", work, ref)
    if schedule is not None:
        return AutoMoves(None, "auto", "a warm-up schedule is given", work, ref)
    if num_warmup < AUTO_MIN_WARMUP:
        return AutoMoves(None, "auto", f"num_warmup={num_warmup} < {AUTO_MIN_WARMUP} (the move adapts in warm-up)",
                         work, ref)
    P = num_params(net)
    if P > cand.max_params:
        return AutoMoves(None, "auto", f"cost: {P} weights > max_params={cand.max_params} (dense mass matrix)",
                         work, ref)
    if work <= AUTO_MAX_WORK:
        return AutoMoves(cand, "auto", f"estimated work {work:.3g} <= {AUTO_MAX_WORK:.3g}", work, ref)
    if ref <= AUTO_MAX_WORK:
        return AutoMoves(cand, "auto", f"estimated work {work:.3g} > {AUTO_MAX_WORK:.3g}, but the default run on "
                                       f"this data is {ref:.3g} <= {AUTO_MAX_WORK:.3g}: the budget asked for "
                                       "keeps the move (design note 64)", work, ref)
    return AutoMoves(None, "auto", f"cost: estimated work {work:.3g} > {AUTO_MAX_WORK:.3g}, and "
                                   f"{ref:.3g} for the default run on this data "
                                   "(blockbayes.gibbs.automove.move_work)", work, ref)
