"""Layout-independent randomness: keys folded by sweep, counters by global row.

Every random number of the blocked sweep that touches a data row is a function of
``(run key, sweep, purpose, chain, global row, column)`` only, never of which shard, block or
worker holds the row. Two mechanisms give that:

* :func:`fold_in` derives a sub-key from a key and integers (SeedSequence hashing, the same
  construction as :func:`blockbayes._backend.random.split`); the driver never carries a
  sequential RNG state, so a checkpoint needs only the run key and the sweep number.
* The fused kernels of :mod:`blockbayes.kernels` draw element ``i`` of their output from the
  counter-based uniform ``u(c)`` with ``bits(c) = mix64(mix64(c·γ + k0) ^ k1)``,
  ``γ = 0x9E3779B97F4A7C15`` (module docstring there). Since ``(c + o)·γ + k0 = c·γ + (k0 + o·γ)``
  (mod 2⁶⁴), the key ``(k0 + o·γ, k1)`` draws ``u(c + o)``: :func:`shift_key` turns a call on a
  row block into the same numbers the call on the whole array would give at those rows.

Counter layout for a latent array of ``d`` columns and ``C`` chains: element
``(chain c, global row r, column j)`` has counter ``(r·C + c)·d + j`` (the C-order index in an
``(N, C, d)`` array), so a block of rows ``r0 .. r0+m`` (all chains) is the contiguous counter
range starting at ``r0·C·d`` and takes one kernel call (:func:`normals`, the initial latents).
The sweep's latent update is :func:`blockbayes.kernels.latent_pass`, which keys its draws by the
same index through its ``row_offset`` argument (its own disjoint streams for the ReLU draw, the
post-activation normals and the next layer's noise), so it needs no shifted key.
"""
from __future__ import annotations

import numpy as np

from .. import kernels
from .._backend import special

__all__ = ["fold_in", "shift_key", "normals", "counter_uniforms", "counter_normals", "sweep_keys",
           "step_keys"]

GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def fold_in(key, *data: int) -> np.ndarray:
    """A new key from ``key`` and non-negative integers (deterministic, order-sensitive)."""
    ints = [int(key[0]), int(key[1])] + [int(v) for v in data]
    return np.random.SeedSequence(ints).generate_state(2, dtype=np.uint64)


def shift_key(key, offset: int) -> np.ndarray:
    """Key whose counter-based uniforms are those of ``key`` shifted by ``offset``:
    ``u_shift(c) = u_key(c + offset)``."""
    return np.array([(int(key[0]) + int(offset) * GOLDEN) & _MASK, int(key[1])], dtype=np.uint64)


def normals(key, C: int, N: int, r0: int, m: int, d: int, dtype) -> np.ndarray:
    """Standard normals of shape ``(C, m, d)`` for global rows ``r0 .. r0+m``.

    Inverse CDF of the counter uniforms (the fused one-sided truncated-normal kernel with the
    bound at −∞, i.e. ``Φ⁻¹(1 − u)``), counter ``(r·C + c)·d + j`` for chain ``c``, global row
    ``r``, column ``j`` — the C-order index of a ``(N, C, d)`` array, so a row block is one
    contiguous counter range and one kernel call.
    """
    zeros = np.zeros((m, C, d), dtype=dtype)
    out = kernels.truncated_normal(shift_key(key, r0 * C * d), zeros, 1.0, -np.inf, False)
    return np.swapaxes(out, 0, 1)


# ------------------------------------------------------------------ arbitrary counter sets

def counter_uniforms(key, counters) -> np.ndarray:
    """``u(c)`` (float64 in (0, 1)) for an arbitrary uint64 counter array: the same numbers as
    :func:`blockbayes.kernels.uniforms` at those counters."""
    k0, k1 = np.uint64(int(key[0])), np.uint64(int(key[1]))
    c = np.asarray(counters, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = c * np.uint64(GOLDEN) + k0
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        z = z ^ (z >> np.uint64(31))
        z = z ^ k1
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_M1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_M2)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * (2.0 ** -53)


def counter_normals(key, counters) -> np.ndarray:
    """Standard normals ``Φ⁻¹(u(c))`` (float64) at arbitrary counters."""
    return special.ndtri(counter_uniforms(key, counters))


def sweep_keys(run_key, sweep: int) -> tuple:
    """``(latent key, driver key, recovery key)`` of sweep ``sweep`` of a run."""
    return step_keys(fold_in(run_key, sweep))


def step_keys(key) -> tuple:
    """``(latent key, driver key, recovery key)`` of one step's key."""
    return fold_in(key, 0), fold_in(key, 1), fold_in(key, 2)

