"""Data-parallel block Gibbs: sharded latents, one reduction per sweep (docs/distributed.md).

The blocked scan alternates two blocks: (1) all weights and hyperparameters given all latents —
conditionally independent across layers and needing only the sums ``Σ x̃x̃ᵀ``, ``Σ x̃zᵀ`` (and
residual sums) — drawn on the driver; (2) all latents given all weights — row-local, drawn on
the shard that holds the rows. :func:`run` executes it in this process (``client=None``) or on
a Dask cluster (one actor per worker holding its rows of ``X``, ``y`` and their latents), with
randomness keyed by ``(seed, sweep, global row)`` so that every layout gives the same chain.

Dask is an optional extra: ``pip install "blockbayes[distributed]"``; the in-process path and
:mod:`.data` (chunked ``.npy`` files) need only NumPy, :func:`data.open_dataset` needs Dask.
"""
from __future__ import annotations

from . import data
from ._engine import row_ranges
from ._random import fold_in
from ._run import RunTimings, reduce_stats, run, step
from ._shard import Shard

__all__ = ["run", "step", "reduce_stats", "fold_in", "RunTimings", "Shard", "row_ranges", "data"]
