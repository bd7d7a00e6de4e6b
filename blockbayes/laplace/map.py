"""MAP training of the standard (noise-free) MLP: full-batch L-BFGS and minibatch Adam.

The objective is the negative log posterior of MATH.md §D.1,

.. math::

    E(\\theta) = \\sum_{\\mu=1}^n \\ell(y_\\mu, F(x_\\mu;\\theta))
               + \\tfrac12 \\sum_{l,i} \\tilde w_{l,i}^\\top \\Lambda_l \\tilde w_{l,i},

i.e. the Gaussian prior acts as weight decay with per-layer coefficients ``λ_W`` (weights) and
``λ_b`` (biases). Gradients come from the hand-written backward pass of
:mod:`blockbayes.laplace._mlp_grad` (no autograd).
"""
from __future__ import annotations

import math

import numpy as np

from .._backend import device_of, namespace, to_numpy
from .._backend import random as bbr
from ..model import MLP
from . import _common as C
from ._mlp_grad import objective

__all__ = ["map_fit", "neg_log_posterior", "init_weights"]

init_weights = C.init_weights


def neg_log_posterior(net: MLP, weights, X, y, *, likelihood=None, prior_precision=None,
                      delta_y=None, sigma_noise=None, grad=True, chunk_size=None):
    """Negative log posterior ``E(θ)`` of the standard MLP and its gradient.

    ``E = Σ_μ ℓ(y_μ, F_μ) + ½ Σ_l Σ_i w̃_{l,i}ᵀ Λ_l w̃_{l,i}`` (the Gaussian likelihood includes its
    normaliser ``(C/2) log 2πΔ_y`` per point; the prior's normaliser is left out).

    Parameters
    ----------
    net : MLP
    weights : sequence of arrays
        Per layer ``(d_{l+1}, d_l + 1)``, bias last.
    X : array, shape (n, d_in)
    y : array
        Targets (see :func:`map_fit`).
    likelihood : {None, "gaussian", "categorical", "bernoulli"}
        ``None`` derives it from ``net.likelihood`` (see :func:`blockbayes.laplace.fit`).
    prior_precision : None, float or per-layer sequence
        Overrides the net's ``(λ_W, λ_b)``.
    delta_y, sigma_noise : float, optional
        Gaussian noise variance (or its square root); default ``net.delta_y``.
    grad : bool
        Also return the gradient.

    Returns
    -------
    E : 0-d array
    grads : tuple of arrays shaped like ``weights`` (only if ``grad``)
    """
    lik = C.resolve_likelihood(net, likelihood)
    C.check_X(net, X)
    Y = C.encode_targets(net, lik, X, y)
    W = C.check_weights(net, weights, X, name="weights")
    lam_w, lam_b = C.resolve_prior(net, prior_precision)
    dy = C.resolve_noise(net, lik, delta_y, sigma_noise)
    E, g = objective(net, W, X, Y, likelihood=lik, lam_w=lam_w, lam_b=lam_b, delta_y=dy,
                     grad=grad, chunk_size=chunk_size)
    return (E, g) if grad else E


def _flatten_host(weights) -> np.ndarray:
    return np.concatenate([np.asarray(to_numpy(W), dtype=np.float64).ravel() for W in weights])


def _unflatten(vec: np.ndarray, net: MLP, like):
    xp = namespace(like)
    out, o = [], 0
    for d, k in net.weight_shapes():
        out.append(xp.asarray(vec[o:o + d * k].reshape(d, k), dtype=like.dtype, device=device_of(like)))
        o += d * k
    return tuple(out)


def map_fit(net: MLP, X, y, *, likelihood=None, method: str = "lbfgs", seed=None, init=None,
            prior_precision=None, delta_y=None, sigma_noise=None, max_iter: int = 2000,
            tol: float = 1e-7, num_epochs: int = 200, batch_size: int = 128, lr: float = 1e-2,
            betas=(0.9, 0.999), eps: float = 1e-8, chunk_size=None, progress=None,
            return_info: bool = False):
    """MAP weights of the standard MLP.

    Parameters
    ----------
    net : MLP
        Architecture, activation and prior precisions ``(λ_W, λ_b)`` per layer.
    X : array, shape (n, d_in)
    y : array
        ``"gaussian"``: shape ``(n,)`` (``d_out = 1``) or ``(n, d_out)``; ``"categorical"``: integer
        labels in ``[0, d_out)``; ``"bernoulli"``: labels in ``{0, 1}``.
    likelihood : {None, "gaussian", "categorical", "bernoulli"}
        ``None`` derives it from ``net.likelihood`` (gaussian → gaussian with variance
        ``net.delta_y``; multinomial_probit / onehot_gaussian → categorical (softmax);
        probit → bernoulli (logistic)).
    method : {"lbfgs", "adam"}
        ``"lbfgs"``: full-batch L-BFGS-B of :func:`scipy.optimize.minimize` on ``E(θ)``. The
        optimiser's iterate is a float64 **host** vector (a documented host step); objective and
        gradient are evaluated on the input's namespace/device/dtype and copied back each call.
        ``"adam"``: minibatch Adam on ``E(θ)/n`` with the unbiased estimate
        ``(1/|B|) Σ_{μ∈B} ℓ_μ + ½θᵀΛθ/n``, entirely on the device.
    seed : None, int, SeedSequence or key
        Initialisation (when ``init`` is None) and minibatch order.
    init : sequence of arrays, optional
        Starting weights (default :func:`init_weights`: ``N(0, 1/d_in)`` weights, zero biases).
        Never modified.
    prior_precision : None, float or per-layer sequence
        Overrides the net's prior precisions.
    delta_y, sigma_noise : float, optional
        Gaussian noise variance (or standard deviation); default ``net.delta_y``.
    max_iter : int
        L-BFGS iterations.
    tol : float
        L-BFGS ``gtol`` on the largest gradient component of ``E/n`` (and ``ftol = tol·1e-3``).
    num_epochs, batch_size, lr, betas, eps :
        Adam settings (``lr`` for the ``E/n`` scale).
    chunk_size : int, optional
        Data points per chunk of the full-batch passes (memory bound).
    progress : bool or None
        tqdm progress bar (None: only on a terminal).
    return_info : bool
        Also return a dict (``objective``, ``grad_norm``, ``num_iter``, ``converged``, ``message``).

    Returns
    -------
    params : tuple of arrays
        Per layer ``(d_{l+1}, d_l + 1)``, bias last, in ``X``'s namespace/device/dtype.
    info : dict
        Only with ``return_info``.
    """
    lik = C.resolve_likelihood(net, likelihood)
    C.check_X(net, X)
    Y = C.encode_targets(net, lik, X, y)
    lam_w, lam_b = C.resolve_prior(net, prior_precision)
    dy = C.resolve_noise(net, lik, delta_y, sigma_noise)
    if method not in ("lbfgs", "adam"):
        raise ValueError(f"method must be 'lbfgs' or 'adam', got {method!r}")
    k_init, k_data = bbr.split(bbr.key(seed), 2)
    if init is None:
        W0 = C.init_weights(net, seed=k_init, like=X)
    else:
        W0 = C.check_weights(net, init, X, name="init")
    n = X.shape[0]
    kw = dict(likelihood=lik, lam_w=lam_w, lam_b=lam_b, delta_y=dy)
    if method == "lbfgs":
        return _lbfgs(net, W0, X, Y, kw, n, max_iter=C.positive_int("max_iter", max_iter),
                      tol=C.positive("tol", tol), chunk_size=chunk_size, progress=progress,
                      return_info=return_info)
    return _adam(net, W0, X, Y, kw, n, key=k_data, num_epochs=C.positive_int("num_epochs", num_epochs),
                 batch_size=C.positive_int("batch_size", batch_size), lr=C.positive("lr", lr),
                 betas=betas, eps=C.positive("eps", eps), progress=progress, return_info=return_info)


def _lbfgs(net, W0, X, Y, kw, n, *, max_iter, tol, chunk_size, progress, return_info):
    from scipy.optimize import minimize

    hist = {"objective": [], "grad_norm": []}
    bar = C.progress_bar(max_iter, "MAP (L-BFGS)", progress)

    def fun(v):
        W = _unflatten(v, net, X)
        E, g = objective(net, W, X, Y, grad=True, chunk_size=chunk_size, **kw)
        e = float(to_numpy(E)) / n
        gv = _flatten_host(g) / n
        if not math.isfinite(e):
            e = math.inf
        return e, gv

    def callback(intermediate_result):
        if hasattr(intermediate_result, "fun"):
            hist["objective"].append(float(intermediate_result.fun) * n)
        if bar is not None:
            bar.update(1)

    x0 = _flatten_host(W0)
    try:
        res = minimize(fun, x0, jac=True, method="L-BFGS-B", callback=callback,
                       options=dict(maxiter=max_iter, gtol=tol, ftol=tol * 1e-3, maxcor=20))
    finally:
        if bar is not None:
            bar.close()
    W = _unflatten(res.x, net, X)
    if not return_info:
        return W
    info = dict(objective=float(res.fun) * n, grad_norm=float(np.max(np.abs(res.jac))) * n,
                num_iter=int(res.nit), converged=bool(res.success), message=str(res.message),
                history=hist["objective"])
    return W, info


def _adam(net, W0, X, Y, kw, n, *, key, num_epochs, batch_size, lr, betas, eps, progress, return_info):
    xp = namespace(X)
    b1, b2 = (float(b) for b in betas)
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
    bs = min(batch_size, n)
    W = tuple(W0)
    m1 = [xp.zeros_like(w) for w in W]
    m2 = [xp.zeros_like(w) for w in W]
    t = 0
    hist = []
    keys = bbr.split(key, num_epochs)
    bar = C.progress_bar(num_epochs, "MAP (Adam)", progress)
    try:
        for ep in range(num_epochs):
            u = bbr.uniform(keys[ep], (n,), like=X)
            perm = xp.argsort(u)
            ep_loss = 0.0
            for s in range(0, n, bs):
                idx = perm[s:s + bs]
                Xb = xp.take(X, idx, axis=0)
                Yb = xp.take(Y, idx, axis=0)
                m = Xb.shape[0]
                E, g = objective(net, W, Xb, Yb, grad=True, scale=n / m, **kw)
                t += 1
                newW = []
                for l in range(len(W)):
                    gl = g[l] / n
                    m1[l] = b1 * m1[l] + (1 - b1) * gl
                    m2[l] = b2 * m2[l] + (1 - b2) * gl * gl
                    mh = m1[l] / (1 - b1 ** t)
                    vh = m2[l] / (1 - b2 ** t)
                    newW.append(W[l] - lr * mh / (xp.sqrt(vh) + eps))
                W = tuple(newW)
                ep_loss = E
            if return_info or bar is not None:
                hist.append(float(to_numpy(ep_loss)))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(E=f"{hist[-1]:.4g}")
            if not all(bool(xp.all(xp.isfinite(w))) for w in W):
                raise FloatingPointError(f"Adam diverged (non-finite weights) in epoch {ep}; lower lr")
    finally:
        if bar is not None:
            bar.close()
    if not return_info:
        return W
    E, g = objective(net, W, X, Y, grad=True, **kw)
    info = dict(objective=float(to_numpy(E)), grad_norm=max(float(to_numpy(xp.max(xp.abs(x)))) for x in g),
                num_iter=t, converged=True, message="completed all epochs", history=hist)
    return W, info
