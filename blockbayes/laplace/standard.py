"""Standard (post-hoc) Laplace at given weights, with a laplace-torch-like surface.

``fit(net, params, X, y, subset=..., structure=...)`` computes the Gauss–Newton curvature of the
data term at ``params`` (one chunked pass over the data, no autograd) and returns a
:class:`~blockbayes.laplace.LaplaceResult` whose posterior is ``N(params, (φ·GGN + Λ)^{-1})``.
"""
from __future__ import annotations

from ..model import MLP
from ..inputs import prepare
from . import _common as C
from ._mlp_grad import curvature, data_misfit
from .result import STRUCTURES, SUBSETS, LaplaceResult

__all__ = ["fit"]


def fit(net: MLP, params, X, y, *, subset: str = "last_layer", structure: str = "kfac",
        likelihood=None, prior_precision=None, delta_y=None, sigma_noise=None,
        kfac_bias: str = "joint", chunk_size=None, device=None, dtype=None) -> LaplaceResult:
    """Laplace approximation of the standard MLP's posterior around ``params`` (usually the MAP).

    The posterior precision over the active parameters is ``P = φ·GGN + Λ`` with
    ``GGN = Σ_μ J_μᵀ ∇²_F ℓ_μ J_μ`` in the chosen structure, ``Λ`` the diagonal prior precision and
    ``φ = 1/Δ_y`` for regression (1 for classification). See :mod:`blockbayes.laplace.result`
    for the four structures and MATH.md §D.4–D.6 for how they relate.

    Parameters
    ----------
    net : MLP
        Architecture, activation and default priors ``(λ_W, λ_b)``, noise ``Δ_y = net.delta_y``.
    params : sequence of arrays
        Per layer ``(d_{l+1}, d_l + 1)``, bias last (e.g. from :func:`map_fit`). Not modified.
    X : array, shape (n, d_in)
    y : array
        Regression targets ``(n,)``/``(n, d_out)``; integer class labels ``(n,)`` for classification.
    subset : {"last_layer", "all"}
        Which weights get a posterior: only the output layer (laplace-torch's default, "LA") or
        all of them. Others are held at ``params``.
    structure : {"kfac", "diag", "full", "block"}
        Curvature structure (default ``"kfac"`` as in laplace-torch). ``"block"`` is the node-block
        (per-node exact GGN block) structure of MATH.md §D.4.
    likelihood : {None, "gaussian", "categorical", "bernoulli"}
        ``None`` derives it from ``net.likelihood``: ``"gaussian"`` → regression with variance
        ``Δ_y``; ``"multinomial_probit"``/``"onehot_gaussian"`` → ``"categorical"`` (softmax over
        ``d_out`` logits); ``"probit"`` → ``"bernoulli"`` (logistic, ``d_out = 1``).
    prior_precision : None, float or per-layer sequence
        Overrides the net's ``(λ_W, λ_b)`` (a float for all, or per layer a float or a pair).
    delta_y, sigma_noise : float, optional
        Regression noise variance or standard deviation (default ``net.delta_y``).
    kfac_bias : {"joint", "separate"}
        KFAC treatment of the bias: ``"joint"`` (augmented input ``[h 1]``: one Kronecker product
        per layer, exact on a Gaussian output layer, MATH §D.6 iii) or ``"separate"`` (weights
        ``B ⊗ A_w`` and bias ``B`` as separate blocks, the laplace-torch/curvlinops convention).
    chunk_size : int, optional
        Data points per chunk of the curvature pass (memory bound).
    device : None, "cpu", "cuda" or "cuda:N"
        Where to compute (``X``, ``y`` and given weights are moved there once; ``None`` keeps
        ``X``'s device); the result lives there.
    dtype : None, "float32" or "float64"
        Compute dtype (default ``X``'s); the result has it.

    Returns
    -------
    LaplaceResult

    Raises
    ------
    ValueError, TypeError
        Unknown names, wrong shapes, non-finite values, labels out of range.

    Notes
    -----
    Cost for ``n`` points, ``C`` outputs: one forward pass plus a backward pass of ``C`` vectors,
    ``O(n C P)``, plus per structure ``diag`` ``O(n Σ d_{l+1} d_l)``, ``block``
    ``O(n Σ d_{l+1} d_l²)``, ``kfac`` ``O(n Σ (d_l² + d_{l+1}²))``, ``full`` ``O(n C P²)``.
    """
    lik = C.resolve_likelihood(net, likelihood)
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {STRUCTURES}, got {structure!r}")
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    if kfac_bias not in ("joint", "separate"):
        raise ValueError(f"kfac_bias must be 'joint' or 'separate', got {kfac_bias!r}")
    X, Y = prepare(net, X, y, device=device, dtype=dtype, task="standard", likelihood=lik)
    W = C.check_weights(net, params, X, move=device is not None or dtype is not None)
    lam_w, lam_b = C.resolve_prior(net, prior_precision)
    dy = C.resolve_noise(net, lik, delta_y, sigma_noise)
    L = net.num_layers
    layers = tuple(range(L)) if subset == "all" else (L - 1,)
    curv = compute_curvature(net, W, X, Y, lik, layers, structure, dy, chunk_size)
    misfit = data_misfit(net, W, X, Y, likelihood=lik, chunk_size=chunk_size)
    return LaplaceResult(net=net, likelihood=lik, structure=structure, subset=subset, layers=layers,
                         weights=W, curv=curv, n=X.shape[0], misfit=misfit, lam_w=lam_w, lam_b=lam_b,
                         delta_y=dy, kfac_bias=kfac_bias, chunk_size=chunk_size)


def compute_curvature(net, W, X, Y, lik, layers, structure, delta_y, chunk_size):
    """Unit-noise curvature dict in the layout :class:`LaplaceResult` expects."""
    kind = {"diag": "diag", "block": "block", "kfac": "kfac", "full": "full"}[structure]
    out = curvature(net, W, X, Y, likelihood=lik, layers=layers, kinds=[kind], delta_y=delta_y,
                    unit_noise=True, chunk_size=chunk_size)
    if structure == "kfac":
        return {"A": out["A"], "B": out["B"]}
    return {structure: out[kind]}
