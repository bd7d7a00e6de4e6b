"""Block-Gibbs sampling of the noisy-MLP posterior (MATH.md §A).

The model (Piccioli, Troiani & Zdeborová 2023) adds Gaussian noise to every pre-activation
(``Δ_Z``) and post-activation (``Δ_X``) of the hidden layers, which makes every conditional
closed form:

* node rows ``w̃_{l,i} | X^l, Z^{l+1}`` — Bayesian linear regression with one precision
  ``P_l = Λ_l + G_l/Δ`` shared by all rows of a layer (A.1): one Cholesky per layer and sweep;
* post-activations ``x_μ^l | f(z_μ^l), z_μ^{l+1}, W^l`` — Gaussian with a shared precision (A.2),
  drawn in the Cholesky form or, when the next layer is narrower, in the perturb-and-correct
  (Matheron) form;
* pre-activations ``z^l_{μi} | a, x`` — the two-piece truncated-normal mixture of (A.3a) for ReLU
  and leaky ReLU (fused kernels in :mod:`blockbayes.kernels`), a Gaussian for the identity;
* optional conjugate Gamma updates of the output-noise precision ``1/Δ_y`` and of per-layer
  prior precisions ``λ_W, λ_b`` (A.5).

A sweep costs ``O(Σ_l [n d_l (d_l + d_{l+1}) + d_l^3])``: linear in the number of data points.
The scan goes from the output to the input: ``W^L, X^L, Z^L, W^{L-1}, X^{L-1}, …, W^1``.

The algorithm is written BlackJAX-style: pure :func:`init` and :func:`step` over a
:class:`GibbsState` (chains are a leading batch axis), and :func:`run`, the stateful
convenience layer that resolves the device, loops with a progress bar and returns a
:class:`~blockbayes.gibbs.GibbsResult`.

Modules: :mod:`~blockbayes.gibbs.conditionals` (the closed-form conditionals),
:mod:`~blockbayes.gibbs.kernel` (states, ``init``, ``step``, ``log_joint``; the validation
suite patches its twins there), :mod:`~blockbayes.gibbs.sampler` (``run``),
:mod:`~blockbayes.gibbs.starts` (MAP starts), :mod:`~blockbayes.gibbs.moves` (non-centred
moves), :mod:`~blockbayes.gibbs.hmc` (joint non-centred HMC on all layers), :mod:`~blockbayes.gibbs.automove` (``run``'s default ``moves="auto"``: that move where affordable), :mod:`~blockbayes.gibbs.redraw` (exact prior redraw of a hidden unit's input weights), :mod:`~blockbayes.gibbs.collapsed` (partially collapsed node rows), :mod:`~blockbayes.gibbs.anneal` (annealed warm-up), :mod:`~blockbayes.gibbs.tempering`
(replica exchange over Δ, ``run``'s ``tempering="auto"``), :mod:`~blockbayes.gibbs.presets`
(named settings: ``presets.gold()``), :mod:`~blockbayes.gibbs.diagnostics`
(function-space R-hat/ESS), :mod:`~blockbayes.gibbs.result` (``GibbsResult``).
"""
from __future__ import annotations

from ..inputs import num_classes, validate_data, validate_labels
from . import conditionals, kernel
from .conditionals import (output_targets, sample_latent, sample_post, sample_pre, sample_precision,
                           sample_rows)
from .kernel import (GibbsCache, GibbsInfo, GibbsState, Hyperprior, NonFiniteStateError, first_nonfinite,
                     init, log_joint, precompute, step)
from .result import GibbsResult
from .sampler import extend, run
from . import tempering
from .tempering import Tempering
from . import presets
from . import redraw
from .redraw import UnitRedrawMove
from . import collapsed
from .collapsed import CollapsedRowMove
from .moves import ComposedMove

__all__ = ["GibbsResult", "GibbsState", "GibbsInfo", "GibbsCache", "Hyperprior", "init", "step", "run", "extend",
           "precompute", "log_joint", "first_nonfinite", "NonFiniteStateError", "validate_data",
           "validate_labels", "num_classes", "sample_rows", "sample_post", "sample_pre",
           "sample_precision", "sample_latent", "output_targets", "conditionals", "kernel", "tempering",
           "Tempering", "presets", "redraw", "UnitRedrawMove", "collapsed", "CollapsedRowMove",
           "ComposedMove"]
