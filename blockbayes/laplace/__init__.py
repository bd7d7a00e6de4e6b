"""The Laplace family for the standard (noise-free) MLP: MAP training, standard Laplace
(diag / KFAC / full / node-block, all or last layer) and the iterative block Laplace.

Everything is written by hand on the Python Array API (no autograd): forward, backward and the
per-example Gauss–Newton pieces are :mod:`blockbayes.nn`'s (shared with mean-field VI, IVON and
VOGN); :mod:`blockbayes.laplace._mlp_grad` adds the chunked curvature accumulations.

>>> import blockbayes as bb                                                   # doctest: +SKIP
>>> net = bb.MLP([d_in, 50, 1], "relu", prior_prec=1.0, delta=0.1)           # doctest: +SKIP
>>> params = bb.laplace.map_fit(net, X, y, method="lbfgs", seed=0)           # doctest: +SKIP
>>> la = bb.laplace.fit(net, params, X, y, subset="all", structure="kfac")   # doctest: +SKIP
>>> la.optimize_prior_precision(method="marglik", prior_structure="layerwise")  # doctest: +SKIP
>>> mean, var = la.predict(X_test)                                            # doctest: +SKIP
>>> bl = bb.laplace.block(net, X, y, init=params, seed=0)                     # iterative block Laplace; doctest: +SKIP

Public API
----------
:func:`map_fit`            MAP weights (full-batch L-BFGS or minibatch Adam; prior = weight decay).
:func:`map_ensemble`       several MAP fits (a deep ensemble) as one batched problem.
:func:`evidence_fit`       MAP with the noise (and optionally the prior) set by the Laplace evidence (MacKay).
:func:`neg_log_posterior`  ``E(θ)`` and its hand-written gradient.
:func:`fit`                standard Laplace at given weights → :class:`LaplaceResult`.
:func:`block`              iterative block Laplace (mode or sample-based) → :class:`LaplaceResult`.
:class:`LaplaceResult`     ``predict``, ``predict_proba``, ``predict_f``, ``log_predictive_density``,
                           ``sample``, ``log_marginal_likelihood``, ``optimize_prior_precision``,
                           ``marginal_variance``, ``posterior_covariance``, ``to_numpy``.
:func:`init_weights`       the default random initialisation.

Likelihoods of the standard net (keyword ``likelihood=``; ``None`` derives it from the MLP spec):
``"gaussian"`` (regression, variance ``net.delta_y``), ``"categorical"`` (softmax over ``d_out``
logits; from ``"multinomial_probit"``/``"onehot_gaussian"`` nets) and ``"bernoulli"``
(one logistic logit; from ``"probit"`` nets).
"""
from __future__ import annotations

from .iterative import block
from .map import anchor_draw, batched_objective, init_weights, lbfgs_batched, map_ensemble, map_fit, member_keys, neg_log_posterior
from .result import STRUCTURES, SUBSETS, LaplaceResult
from .standard import fit
from .evidence import evidence_fit, evidence_noise, evidence_step

__all__ = ["map_fit", "map_ensemble", "evidence_fit", "evidence_step", "evidence_noise", "member_keys", "batched_objective", "anchor_draw", "lbfgs_batched", "neg_log_posterior", "init_weights", "fit", "block", "LaplaceResult",
           "STRUCTURES", "SUBSETS"]
