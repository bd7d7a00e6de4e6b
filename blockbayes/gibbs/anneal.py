"""Annealed warm-up of the hidden-layer noise for block-Gibbs (``gibbs.run(..., schedule=...)``).

At large ``Δ_Z, Δ_X`` the latents pin the weights loosely and the chains move fast; at the small
``Δ*`` one wants to sample, they move by ``O(√Δ*)`` per sweep. :class:`AnnealedDelta` runs the
first part of the warm-up at a larger ``Δ`` and lowers it geometrically to the net's own values:

    Δ_l(t) = max(Δ*_l, Δ_0 · (Δ*_l / Δ_0)^{t / T_a}),   t = 0 … T_a − 1,   T_a = ⌈fraction · num_warmup⌉,

and ``Δ_l(t) = Δ*_l`` afterwards (for every ``l`` separately, ``Δ_Z`` and ``Δ_X`` alike; a
layer whose ``Δ*`` is already above ``Δ_0`` is left alone). Each sweep is an exact Gibbs sweep
for the posterior at that sweep's ``Δ``; from the end of warm-up on the target is the net's, so
every kept sample is drawn by the unmodified sampler and the annealing only changes where the
chains start the sampling phase.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from ..model import MLP
from ..posterior import net_from_dict, net_to_dict

__all__ = ["AnnealedDelta"]


class AnnealedDelta(NamedTuple):
    """Geometric warm-up schedule of ``Δ_Z, Δ_X`` from ``start`` to the net's values.

    Attributes
    ----------
    start : float
        ``Δ_0``, the hidden-layer noise variance at the first sweep.
    fraction : float
        Part of the warm-up over which ``Δ`` falls (the rest runs at the net's ``Δ``, so the
        chains settle at the target before samples are kept).
    """

    start: float = 1e-1
    fraction: float = 0.5

    def validate(self):
        if not (self.start > 0 and math.isfinite(self.start)):
            raise ValueError(f"start must be a positive float, got {self.start!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must lie in (0, 1], got {self.fraction!r}")

    def deltas_at(self, net: MLP, sweep: int, num_warmup: int):
        """``(Δ_Z, Δ_X)`` tuples (per hidden layer) at ``sweep``."""
        self.validate()
        Ta = math.ceil(self.fraction * num_warmup)
        if sweep >= Ta or Ta == 0:
            return tuple(net.delta_z), tuple(net.delta_x)
        t = sweep / Ta

        def one(target):
            if target >= self.start:
                return float(target)
            return max(float(target), self.start * (target / self.start) ** t)

        return tuple(one(v) for v in net.delta_z), tuple(one(v) for v in net.delta_x)

    def net_at(self, net: MLP, sweep: int, num_warmup: int) -> MLP:
        """The net to sweep with at ``sweep`` (``net`` itself once annealing is over)."""
        dz, dx = self.deltas_at(net, sweep, num_warmup)
        if dz == tuple(net.delta_z) and dx == tuple(net.delta_x):
            return net
        d = net_to_dict(net)
        d["delta"] = {"Z": list(dz), "X": list(dx), "y": net.delta_y}
        return net_from_dict(d)
