"""Block variational inference for MLPs (MATH.md §C) and a mean-field VI baseline.

Methods (all return a :class:`VIResult`: a product of Gaussian node-row blocks with
``predict`` / ``predict_proba`` / ``log_predictive_density`` / ``sample`` / ``save``):

``"rao_blackwell"`` (default of :func:`run`) — :mod:`.rao_blackwell`
    Block-Gibbs draws of the noisy MLP, each row's conditional ``N(m^{(s)}, P^{(s)-1})``
    moment-matched over the draws: ``cov = mean(P^{-1}) + Cov(m)`` (§C.6b). Converges to the
    exact marginal moments of each row: **honest variances**.
``"cavi"`` — :mod:`.cavi`
    Block coordinate-ascent VI with closed-form updates and closed-form ELBO (§C.1–C.4). Fast,
    monotone, a good point estimate; its variances are conditional on the auxiliaries and
    **collapse** (§C.5: in the one-unit test net of validation/test_vi_exact.py the sd of ``w``
    is 0.057 against an exact 0.349).
``"sampled"`` — :mod:`.sampled`
    Row updates with the other weights held at samples and natural-parameter averaging
    (SVI, §C.6a). Also collapses — shown, not recommended for uncertainty.
``"targets"`` — :mod:`.targets`
    Bayesian target propagation (§C.7): per-layer targets projected from the outputs, each
    node's local objective a Bayesian linear regression.
``"mean_field"`` — :mod:`.mean_field`
    Diagonal Gaussian VI of the *standard* (noise-free) MLP, reparameterised gradients written by
    hand (Bayes-by-backprop): the "existing VI" baseline.
``"ivon"`` — :mod:`.ivon`
    IVON (Shen et al. 2024): natural-gradient mean-field VI with the reparameterisation Hessian
    estimate, the optimiser practitioners run (``ivon-opt``), on the standard MLP.
``"vogn"`` — :mod:`.vogn`
    VOGN (Osawa et al. 2019): the same family with a closed-form Gauss–Newton diagonal.

The noisy-network methods implement Gaussian regression; ``"rao_blackwell"`` also the probit and
multinomial-probit classifiers (output rows Rao–Blackwellised over the Gibbs chain's utilities,
docs/block_vi_probit.md). The mean-field baseline also fits logistic and softmax classifiers.
"""
from __future__ import annotations

from . import cavi, ivon, mean_field, rao_blackwell, sampled, symmetry, targets, vogn
from ._factor import FactorMoments, inverse_mills, relu_factor
from .result import NotAClassifierError, VIResult, load

__all__ = ["run", "METHODS", "VIResult", "load", "relu_factor", "inverse_mills", "FactorMoments",
           "NotAClassifierError", "cavi", "rao_blackwell", "sampled", "targets", "mean_field", "ivon", "vogn", "symmetry"]

METHODS = {
    "rao_blackwell": rao_blackwell.run,
    "cavi": cavi.run,
    "sampled": sampled.run,
    "targets": targets.run,
    "mean_field": mean_field.run,
    "ivon": ivon.run,
    "vogn": vogn.run,
}


def run(net, X, y, *, method: str = "rao_blackwell", **options) -> VIResult:
    """Fit a block-Gaussian posterior approximation.

    Parameters
    ----------
    net : MLP
    X : array, shape (n, d_in)
    y : array, shape (n,) or (n, d_out)
    method : {"rao_blackwell", "cavi", "sampled", "targets", "mean_field", "ivon", "vogn"}
        ``"rao_blackwell"`` (default) gives honest marginal variances (see the module docstring);
        ``"cavi"`` is block CAVI whose variances collapse (MATH.md §C.5).
    **options
        Passed to the method's ``run`` (e.g. ``num_steps``, ``num_restarts``, ``seed``,
        ``device``, ``dtype``, ``progress``; see each module).

    Returns
    -------
    VIResult
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    # one BLAS thread, as gibbs.run: the blocks are small, and threaded BLAS on small solves
    # stalls behind any busy core (measured: the [1,1,1] net's default run went from 46 s to
    # a second or two on the shared 2-core machine)
    from .._backend.threads import thread_limits

    restore = thread_limits(None, 1)
    try:
        return METHODS[method](net, X, y, **options)
    finally:
        restore()
