"""Evaluation metrics for Bayesian predictive distributions (EVALUATION.md §1.1–1.4, §1.6).

Conventions
-----------
* Written against the Python Array API: inputs may be NumPy, CuPy or array-api-strict arrays
  (one namespace per call); the normal CDF/quantile come from :mod:`blockbayes._backend.special`.
* **Results are arrays** in the inputs' namespace and device, with the inputs' floating dtype
  (``float64`` when no input is floating). Scalar metrics are **0-d arrays**: call ``float()``
  for a Python number. Per-point values are returned with ``reduction="none"``.
* ``n`` is the number of test points (the leading axis of ``y``/``labels``), ``K`` the number of
  classes, ``S`` the number of posterior samples or ensemble members (always the *leading* axis
  of sample-shaped arrays), ``d`` an optional number of regression outputs.
* Classification probabilities have shape ``(n, K)``; a 1-D array of shape ``(n,)`` means binary
  ``P(y = 1)`` and is expanded to ``[1 − p, p]`` (except by :func:`brier`, see there). Rows must
  lie in ``[0, 1]`` and sum to one within ``1e-6`` (``1e-4`` for ``float32``). Average
  *probabilities* (not logits) over samples: :func:`bma_probs`, :func:`bma_log_probs`.
* Argmax ties are broken towards the lowest class index.
* Invalid input raises ``ValueError`` with the reason: empty input, mismatched shapes, NaN (and,
  for regression quantities, infinite) values, non-positive variances, probabilities outside
  ``[0, 1]`` or not summing to one, labels outside ``0..K−1``.

Layout (as ``sklearn.metrics``; every public name is re-exported here)
---------------------------------------------------------------------
``_regression`` RMSE, Gaussian (mixture) log-likelihood, PIT, coverage, CRPS; ``_classification``
BMA, accuracy, NLL, Brier, entropy, mutual information; ``_calibration`` reliability diagram, ECE,
MCE; ``_ood`` AUROC, AUPR, FPR at TPR; ``_agreement`` agreement, total variation; ``_checks``
input validation shared by all of them.
"""
from ._regression import (
    rmse, gaussian_log_likelihood, log_predictive_gaussian_mixture, pit_gaussian,
    pit_gaussian_mixture, interval_coverage, coverage_gaussian, coverage_gaussian_mixture,
    crps_gaussian, crps_ensemble)
from ._classification import (
    bma_probs, bma_log_probs, accuracy, nll, nll_from_logits, brier, predictive_entropy,
    mutual_information)
from ._calibration import ece, mce, reliability_diagram
from ._ood import auroc, aupr, fpr_at_tpr, fpr_at_95_tpr
from ._agreement import agreement, total_variation

__all__ = [
    "rmse",
    "gaussian_log_likelihood",
    "log_predictive_gaussian_mixture",
    "pit_gaussian",
    "pit_gaussian_mixture",
    "interval_coverage",
    "coverage_gaussian",
    "coverage_gaussian_mixture",
    "crps_gaussian",
    "crps_ensemble",
    "bma_probs",
    "bma_log_probs",
    "accuracy",
    "nll",
    "nll_from_logits",
    "brier",
    "ece",
    "mce",
    "reliability_diagram",
    "predictive_entropy",
    "mutual_information",
    "auroc",
    "aupr",
    "fpr_at_tpr",
    "fpr_at_95_tpr",
    "agreement",
    "total_variation",
]
