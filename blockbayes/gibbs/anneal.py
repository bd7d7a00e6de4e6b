"""Annealed warm-up of the noise for block-Gibbs (``gibbs.run(..., schedule=...)``).

At large ``Δ`` the latents pin the weights loosely and the chains move fast; at the small ``Δ*``
one wants to sample, they move by ``O(√Δ*)`` per sweep. :class:`AnnealedDelta` runs the first
part of the warm-up at a larger ``Δ`` and lowers it geometrically to the net's own values:

    Δ(t) = max(Δ*, Δ_0 · (Δ* / Δ_0)^{t / T_a}),   t = 0 … T_a − 1,   T_a = ⌈fraction · num_warmup⌉,

and ``Δ(t) = Δ*`` afterwards — for every hidden ``Δ_Z^l, Δ_X^l`` separately and, with
``output=True``, for the output noise ``Δ_y`` too (a ``Δ*`` already at or above ``Δ_0`` is left
alone). Each sweep, and each move after it, is an exact kernel for the posterior at that sweep's
``Δ``; from sweep ``T_a ≤ num_warmup`` on the target is the net's (``Δ_y`` is put back to the net's
value in the chains' state at sweep ``T_a``), so every kept sample is drawn by the unmodified
sampler and the annealing only changes where the chains start the sampling phase.

``Δ_y`` matters for the moves: the joint HMC move's and the unit redraw's targets
(:mod:`blockbayes.gibbs.hmc`, :mod:`blockbayes.gibbs.redraw`) are the standard network with the
hidden noises frozen, which depends on ``Δ_y`` and ``λ`` alone (design note 37), so annealing only
``Δ_Z, Δ_X`` leaves them at the cold target. ``output=True`` needs a fixed ``Δ_y``: with
``learn_noise=True`` ``Δ_y`` is a sampled variable (annealing it would mean tempering its
hyperprior, not defined here) and the probit likelihoods fix ``Δ_y = 1``; both raise.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .._backend import device_of, namespace
from ..model import MLP
from ..posterior import net_from_dict, net_to_dict

__all__ = ["AnnealedDelta"]


class AnnealedDelta(NamedTuple):
    """Geometric warm-up schedule of ``Δ_Z, Δ_X`` (and ``Δ_y`` with ``output``) from ``start``
    to the net's values.

    Attributes
    ----------
    start : float
        ``Δ_0``, the noise variance at the first sweep.
    fraction : float
        Part of the warm-up over which ``Δ`` falls (the rest runs at the net's ``Δ``, so the
        chains — and any move's adaptation — settle at the target before samples are kept).
    output : bool
        Anneal the output noise ``Δ_y`` too (the chains' ``state.delta_y``; ``learn_noise=False``
        and a Gaussian or one-hot Gaussian likelihood only — :meth:`check`). Default ``False``
        (hidden noise only, the schedule of sessions 6–10).

    Usage (the planted-teacher recipe of docs/gibbs-moves.md §6, one call)::

        gibbs.run(net, X, y, num_warmup=700, num_samples=45, thin=5, init="zero",
                  schedule=AnnealedDelta(start=0.1, fraction=0.8, output=True),
                  moves=ComposedMove((JointHMCMove(leapfrog=8, average_from=0.8, terminal=0.1),
                                      UnitRedrawMove(proposals=1))))
    """

    start: float = 1e-1
    fraction: float = 0.5
    output: bool = False

    def validate(self):
        if not (self.start > 0 and math.isfinite(self.start)):
            raise ValueError(f"start must be a positive float, got {self.start!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must lie in (0, 1], got {self.fraction!r}")
        if not isinstance(self.output, bool):
            raise ValueError(f"output must be a bool, got {self.output!r}")

    def check(self, net: MLP, *, learn_noise: bool = False):
        """Raise ``ValueError`` where the schedule cannot apply (``output`` with ``learn_noise``
        or a probit likelihood, whose ``Δ_y = 1`` is fixed)."""
        self.validate()
        if self.output and learn_noise:
            raise ValueError("AnnealedDelta(output=True) anneals a fixed Δ_y; with learn_noise=True Δ_y is "
                             "sampled (a tempered noise hyperprior is not defined here): use output=False "
                             "or learn_noise=False")
        if self.output and net.likelihood in ("probit", "multinomial_probit"):
            raise ValueError(f"AnnealedDelta(output=True) is not available for likelihood={net.likelihood!r}: "
                             "Δ_y = 1 is fixed there")

    def annealing_sweeps(self, num_warmup: int) -> int:
        """``T_a = ⌈fraction · num_warmup⌉``: the sweeps ``0 … T_a − 1`` run at an annealed ``Δ``."""
        return math.ceil(self.fraction * num_warmup)

    def _value(self, target, sweep: int, num_warmup: int) -> float:
        Ta = self.annealing_sweeps(num_warmup)
        if sweep >= Ta or Ta == 0 or target >= self.start:
            return float(target)
        return max(float(target), self.start * (target / self.start) ** (sweep / Ta))

    def deltas_at(self, net: MLP, sweep: int, num_warmup: int):
        """``(Δ_Z, Δ_X)`` tuples (per hidden layer) at ``sweep``."""
        self.validate()
        return (tuple(self._value(v, sweep, num_warmup) for v in net.delta_z),
                tuple(self._value(v, sweep, num_warmup) for v in net.delta_x))

    def delta_y_at(self, net: MLP, sweep: int, num_warmup: int) -> float:
        """``Δ_y`` at ``sweep`` (the net's own value throughout when ``output`` is off)."""
        self.validate()
        if not self.output:
            return float(net.delta_y)
        return self._value(net.delta_y, sweep, num_warmup)

    def net_at(self, net: MLP, sweep: int, num_warmup: int) -> MLP:
        """The net to sweep with at ``sweep`` (``net`` itself once annealing is over); its
        ``delta_y`` is :meth:`delta_y_at` (what the sweep reads is the state's ``delta_y``,
        which :func:`blockbayes.gibbs.run` sets from the same value)."""
        dz, dx = self.deltas_at(net, sweep, num_warmup)
        dy = self.delta_y_at(net, sweep, num_warmup)
        if dz == tuple(net.delta_z) and dx == tuple(net.delta_x) and dy == float(net.delta_y):
            return net
        d = net_to_dict(net)
        d["delta"] = {"Z": list(dz), "X": list(dx), "y": dy}
        return net_from_dict(d)

    def state_at(self, state, net: MLP, sweep: int, num_warmup: int):
        """``state`` with ``delta_y`` set to :meth:`delta_y_at` for every chain, at the sweeps where
        ``output`` changes it or puts it back (``0 … T_a``); ``state`` itself otherwise.

        At sweep ``T_a`` the value is the net's ``Δ_y``, written exactly as
        :func:`blockbayes.gibbs.init` writes it (``full((C,), net.delta_y)``), so the state of the
        first sweep at the target is bitwise the unannealed sampler's.
        """
        if not self.output or sweep > self.annealing_sweeps(num_warmup):
            return state
        dy = state.delta_y
        xp = namespace(dy)
        return state._replace(delta_y=xp.full(dy.shape, self.delta_y_at(net, sweep, num_warmup),
                                              dtype=dy.dtype, device=device_of(dy)))
