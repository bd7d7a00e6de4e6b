"""The shared predictive layer: what every posterior's predictions are made of.

Family-neutral and below every family (it imports only :mod:`blockbayes.model` and
:mod:`blockbayes._backend`): a posterior that can hand over weight draws — stored samples
(Gibbs), draws from ``q`` (VI), draws from ``N(θ*, Σ)`` (Laplace), one MAP fit or the members of
an ensemble — gets its predictive mean/variance, log predictive density and class probabilities
from the functions here, so the families' numbers are comparable by construction.

Weights carry a leading *sample* axis: per layer ``(S, d_{l+1}, d_l + 1)``, bias last, with one
output-noise variance ``Δ_y^{(s)}`` per sample, shape ``(S,)``. Every function runs in the
arrays' own namespace and device (Array API; NumPy, CuPy, array-api-strict).

Formulas (``s = 1..S`` samples, equal weights; MATH.md §A.0):

* mixture moments: ``mean = (1/S) Σ_s f_s``, ``var = (1/S) Σ_s (f_s − mean)² + (1/S) Σ_s Δ_y^{(s)}``
  (mean of the variances plus variance of the means);
* log predictive density: ``lpd = log (1/S) Σ_s p(y | x, W_s)``, a log-sum-exp over samples run
  across chunks of samples (:func:`logsumexp_update`);
* class probabilities per sample: logistic / softmax of the logits (standard net), ``Φ(f)``
  (probit) or the Gauss–Hermite integral of the multinomial probit (noisy net, MATH.md §B.3),
  then averaged over samples.
"""
from __future__ import annotations

import math
from typing import Iterable, Iterator, Optional

from ._backend import device_of, namespace
from ._backend import random as bbr
from .model import MLP, activate, affine
from .nn import logsumexp, softplus  # noqa: F401  (re-exported: the one stable log-sum-exp / softplus)

__all__ = ["STANDARD_LIKELIHOODS", "NOISY_LIKELIHOODS", "logsumexp_update", "logsumexp", "forward_chunks",
           "memory_chunk", "mixture_moments", "gaussian_log_density", "mixture_log_density", "log_class_probs",
           "class_probs", "probit_approx_probs", "onehot", "reduce_points", "log_density_per_sample",
           "predictive_from_draws"]

#: likelihoods of the standard (noise-free) MLP: logits through a logistic / softmax link
STANDARD_LIKELIHOODS = ("gaussian", "bernoulli", "categorical")
#: likelihoods of the noisy MLP (MATH.md §B): probit links on the network output
NOISY_LIKELIHOODS = ("gaussian", "probit", "multinomial_probit", "onehot_gaussian")


def logsumexp_update(xp, acc, new):
    """Running ``log(exp(acc) + Σ_s exp(new_s))`` over the leading axis of ``new``.

    Parameters
    ----------
    xp : namespace
    acc : array of shape (...) or None
        The value so far (``None`` before the first chunk).
    new : array, shape (s, ...)

    Returns
    -------
    array, shape (...)
    """
    m = xp.max(new, axis=0)
    if acc is not None:
        m = xp.maximum(m, acc)
    s = xp.sum(xp.exp(new - m), axis=0)
    if acc is not None:
        s = s + xp.exp(acc - m)
    return m + xp.log(s)


CHUNK_BYTES = 2 ** 28
"""Default memory of one forward batch's widest activation in :func:`memory_chunk` (256 MiB)."""


def memory_chunk(net: MLP, X, *, budget: Optional[int] = None, cap: int = 256) -> int:
    """Samples per forward batch over the rows of ``X`` (shape ``(n, d_in)``) so that one batch's widest
    activation, ``chunk · n · max width`` elements of ``X``'s item size, stays within ``budget`` bytes
    (default :data:`CHUNK_BYTES`): ``clip(budget // (n · w · itemsize), 1, cap)``.

    Why: a forward pass of every sample at once holds ``S · n · width`` numbers — on Protein's test split
    (``n = 9146``, 100 units) 4000 samples would need 29 GB; on Naval's (``n = 1074``, 50 units) it made the
    runner's `gibbs_default` cell peak at 3.6 GB.
    """
    w = max(int(v) for v in net.widths)
    itemsize = int(getattr(X.dtype, "itemsize", 8))
    per_sample = max(1, int(X.shape[0]) * w * itemsize)
    budget = CHUNK_BYTES if budget is None else int(budget)
    return int(min(int(cap), max(1, budget // per_sample)))


def forward_chunks(net: MLP, weights, X, *, delta_y=None, chunk: Optional[int] = None,
                   noise_key=None) -> Iterator:
    """Chunked forward pass over samples.

    Parameters
    ----------
    net : MLP
    weights : sequence of arrays
        Per layer ``(S, d_{l+1}, d_l + 1)``, bias last.
    X : array, shape (n, d_in)
        Already validated, in the weights' namespace, device and dtype.
    delta_y : array of shape (S,), optional
        Output-noise variance of each sample (yielded alongside; ``None`` yields ``None``).
    chunk : int, optional
        Samples per forward batch (default all at once; memory ``chunk · n · max width``).
    noise_key : key, optional
        Add the noisy network's hidden-layer noise ``Δ_Z``, ``Δ_X`` (one draw per sample: the
        generative predictive of MATH.md §A.0).

    Yields
    ------
    F : array, shape (s, n, d_out)
        Network outputs of ``s ≤ chunk`` consecutive samples.
    delta_y : array of shape (s,) or None
    """
    xp = namespace(weights[0])
    total = int(weights[0].shape[0])
    chunk = total if chunk is None else max(1, int(chunk))
    keys = bbr.split(noise_key, max(1, math.ceil(total / chunk))) if noise_key is not None else None
    L = len(weights)
    for j, start in enumerate(range(0, total, chunk)):
        stop = min(start + chunk, total)
        H = X
        lkeys = bbr.split(keys[j], 2 * L) if keys is not None else None
        for l, W in enumerate(weights):
            A = affine(H, W[start:stop, ...])
            if l < L - 1:
                if lkeys is not None:
                    A = A + math.sqrt(net.delta_z[l]) * bbr.normal(lkeys[2 * l], A.shape, like=A)
                H = activate(xp, A, net.activation, net.slope)
                if lkeys is not None:
                    H = H + math.sqrt(net.delta_x[l]) * bbr.normal(lkeys[2 * l + 1], H.shape, like=H)
            else:
                H = A
        yield H, (None if delta_y is None else delta_y[start:stop])


def mixture_moments(chunks: Iterable):
    """Mean and total variance of an equal-weight mixture of Gaussians, streamed over chunks.

    ``mean = (1/S) Σ_s f_s``, ``var = (1/S) Σ_s (f_s − mean)² + (1/S) Σ_s Δ_y^{(s)}``: the
    variance of the means plus the mean of the variances. Chunks are merged with Chan et al.'s
    pairwise update (numerically stable, one pass).

    Parameters
    ----------
    chunks : iterable of (F, delta_y)
        ``F`` of shape ``(s, n, d)``; ``delta_y`` of shape ``(s,)`` (or ``None`` for no noise term).

    Returns
    -------
    mean, var : arrays, shape (n, d)
    """
    count = 0
    mean = m2 = None
    dsum = 0.0
    xp = None
    for F, dy in chunks:
        xp = namespace(F)
        s = F.shape[0]
        cm = xp.mean(F, axis=0)
        cm2 = xp.sum((F - cm) ** 2, axis=0)
        if mean is None:
            mean, m2 = cm, cm2
        else:
            tot = count + s
            delta = cm - mean
            mean = mean + delta * (s / tot)
            m2 = m2 + cm2 + delta * delta * (count * s / tot)
        count += s
        if dy is not None:
            dsum = dsum + xp.sum(dy)
    if xp is None:
        raise ValueError("mixture_moments needs at least one sample")
    return mean, m2 / count + dsum / count


def gaussian_log_density(Y, F, delta_y):
    """Per-sample Gaussian log density ``log N(y_i; f_s(x_i), Δ_y^{(s)} I)``.

    Parameters
    ----------
    Y : array, shape (n, d)
    F : array, shape (s, n, d)
    delta_y : array, shape (s,)

    Returns
    -------
    array, shape (s, n)
    """
    xp = namespace(F)
    d = F.shape[-1]
    R = Y[None, ...] - F
    dyb = delta_y[:, None]
    return -0.5 * xp.sum(R * R, axis=-1) / dyb - 0.5 * d * xp.log(2 * math.pi * dyb)


def mixture_log_density(log_densities: Iterable):
    """``log (1/S) Σ_s exp(ℓ_s)`` from chunks of per-sample log densities ``ℓ`` of shape ``(s, n)``.

    Returns
    -------
    array, shape (n,)
    """
    acc, total, xp = None, 0, None
    for lp in log_densities:
        xp = namespace(lp)
        acc = logsumexp_update(xp, acc, lp)
        total += lp.shape[0]
    if xp is None:
        raise ValueError("mixture_log_density needs at least one sample")
    return acc - math.log(total)


def log_class_probs(likelihood: str, F):
    """Log class probabilities of the standard net's logits ``F`` ``(..., d_out)`` → ``(..., K)``.

    ``"bernoulli"``: ``[log σ(−f), log σ(f)]`` (one logit, ``K = 2``); ``"categorical"``:
    ``log softmax(F)``. Overflow-free.
    """
    xp = namespace(F)
    if likelihood == "bernoulli":
        sp = softplus(xp, F)
        return xp.concat([-sp, F - sp], axis=-1)
    if likelihood == "categorical":
        m = xp.max(F, axis=-1, keepdims=True)
        return F - m - xp.log(xp.sum(xp.exp(F - m), axis=-1, keepdims=True))
    raise ValueError(f"log_class_probs needs 'bernoulli' or 'categorical', got {likelihood!r}")


def class_probs(likelihood: str, F, delta_y=None, *, nodes: int = 32):
    """Per-sample class probabilities ``p(c | x, W_s)``, shape ``(s, n, K)`` from outputs ``(s, n, d_out)``.

    Standard net: ``"bernoulli"`` (logistic, columns ``[p(0), p(1)]``) and ``"categorical"``
    (softmax). Noisy net: ``"probit"`` (``[Φ(−f), Φ(f)]``) and ``"multinomial_probit"`` /
    ``"onehot_gaussian"``: ``p(c|a) = ∫ φ(t) Π_{c'≠c} Φ((a_c − a_{c'})/√Δ + t) dt`` with ``Δ = Δ_y^{(s)}``
    (``delta_y`` of shape ``(s,)``, ones for the multinomial probit) by ``nodes``-point
    Gauss–Hermite quadrature, renormalised over classes. Cost ``O(s n K² nodes)``.
    """
    xp = namespace(F)
    if likelihood in ("bernoulli", "categorical"):
        return xp.exp(log_class_probs(likelihood, F))
    from ._backend.special import gauss_hermite_normal, log_ndtr, ndtr

    if likelihood == "probit":
        return xp.concat([ndtr(-F), ndtr(F)], axis=-1)
    if likelihood not in ("multinomial_probit", "onehot_gaussian"):
        raise ValueError(f"class_probs: unknown classification likelihood {likelihood!r}")
    if delta_y is None:
        raise ValueError(f"class_probs({likelihood!r}) needs delta_y of shape (s,)")
    t, w = gauss_hermite_normal(nodes)
    scale = 1.0 / xp.sqrt(delta_y)[:, None, None, None]
    D = (F[..., :, None] - F[..., None, :]) * scale      # (s, n, c, c')
    out = xp.zeros(F.shape, dtype=F.dtype, device=device_of(F))
    for tg, wg in zip(t, w):
        tg_arr = xp.asarray(tg, dtype=F.dtype, device=device_of(F))
        lg = xp.sum(log_ndtr(D + tg_arr), axis=-1) - log_ndtr(tg_arr)
        out = out + wg * xp.exp(lg)
    return out / xp.sum(out, axis=-1, keepdims=True)


def probit_approx_probs(likelihood: str, mu, var):
    """The probit (MacKay) approximation of the logit integral, shape ``(n, K)``.

    ``E[softmax(f)] ≈ softmax(μ / √(1 + π/8 · v))`` (categorical) or ``σ(μ / √(1 + π v/8))``
    (bernoulli, columns ``[p(0), p(1)]``) for ``f ~ N(μ, diag v)``; ``mu``, ``var`` of shape ``(n, d_out)``.
    """
    xp = namespace(mu)
    return xp.exp(log_class_probs(likelihood, mu / xp.sqrt(1.0 + (math.pi / 8.0) * var)))


def onehot(labels, K: int, dtype):
    """Integer labels ``(n,)`` → float one-hot ``(n, K)`` in ``labels``' namespace."""
    xp = namespace(labels)
    return xp.astype(labels[:, None] == xp.arange(K, device=device_of(labels)), dtype)


def reduce_points(lpd, reduce):
    """The per-point values ``(n,)`` (``reduce=False``) or their mean (``reduce=True``)."""
    if isinstance(reduce, str):
        if reduce not in ("mean", "sum", "none"):
            raise ValueError(f"reduce must be True/False or 'mean', 'sum', 'none', got {reduce!r}")
        xp = namespace(lpd)
        return {"mean": xp.mean, "sum": xp.sum}.get(reduce, lambda a: a)(lpd)
    return namespace(lpd).mean(lpd) if reduce else lpd


def log_density_per_sample(likelihood: str, F, delta_y, targets, *, nodes: int = 32):
    """``log p(y_i | x_i, W_s)`` per sample and point, shape ``(s, n)``.

    ``targets``: regression targets ``(n, d_out)`` (``"gaussian"``: :func:`gaussian_log_density`)
    or one-hot labels ``(n, K)`` (classifiers: the log of the labelled class's probability,
    floored at the smallest normal number for the probit links).
    """
    xp = namespace(F)
    if likelihood == "gaussian":
        return gaussian_log_density(targets, F, delta_y)
    if likelihood in ("bernoulli", "categorical"):
        return xp.sum(log_class_probs(likelihood, F) * targets[None, ...], axis=-1)
    tiny = xp.asarray(xp.finfo(F.dtype).smallest_normal, dtype=F.dtype, device=device_of(F))
    return xp.log(xp.maximum(xp.sum(class_probs(likelihood, F, delta_y, nodes=nodes) * targets, axis=-1), tiny))


def predictive_from_draws(net: MLP, weights, X, *, likelihood: str, delta_y, what: str, chunk=None,
                          noise_key=None, targets=None, nodes: int = 32):
    """One entry point for the sample-based predictive of any family.

    Parameters
    ----------
    net : MLP
    weights : sequence of arrays
        Per layer ``(S, d_{l+1}, d_l + 1)``.
    X : array, shape (n, d_in)
    likelihood : str
        The link (see :func:`class_probs`; ``"gaussian"`` for regression).
    delta_y : array, shape (S,)
    what : {"moments", "proba", "lpd"}
        ``"moments"``: ``(mean, var)`` of shape ``(n, d_out)`` (:func:`mixture_moments`);
        ``"proba"``: the sample-averaged class probabilities ``(n, K)``; ``"lpd"``: the per-point
        log predictive density ``(n,)`` of ``targets`` (:func:`log_density_per_sample`).
    chunk, noise_key : see :func:`forward_chunks`
    targets : array, optional
        Regression targets ``(n, d_out)`` or one-hot labels ``(n, K)`` (``what="lpd"``).
    nodes : int
        Gauss–Hermite nodes of the multinomial probit.
    """
    xp = namespace(X)
    it = forward_chunks(net, weights, X, delta_y=delta_y, chunk=chunk, noise_key=noise_key)
    if what == "moments":
        return mixture_moments(it)
    if what == "proba":
        acc, total = None, 0
        for F, dy in it:
            p = xp.sum(class_probs(likelihood, F, dy, nodes=nodes), axis=0)
            acc = p if acc is None else acc + p
            total += F.shape[0]
        return acc / total
    if what != "lpd":
        raise ValueError(f"what must be 'moments', 'proba' or 'lpd', got {what!r}")
    return mixture_log_density(log_density_per_sample(likelihood, F, dy, targets, nodes=nodes) for F, dy in it)
