"""MAP training of the standard (noise-free) MLP: full-batch L-BFGS and minibatch Adam.

The objective is the negative log posterior of MATH.md §D.1,

.. math::

    E(\\theta) = \\sum_{\\mu=1}^n \\ell(y_\\mu, F(x_\\mu;\\theta))
               + \\tfrac12 \\sum_{l,i} \\tilde w_{l,i}^\\top \\Lambda_l \\tilde w_{l,i},

i.e. the Gaussian prior acts as weight decay with per-layer coefficients ``λ_W`` (weights) and
``λ_b`` (biases). Gradients come from the hand-written backward pass of
:mod:`blockbayes.laplace._mlp_grad` (no autograd).

Optionally the Gaussian noise variance is a parameter too (``learn_noise``: the joint MAP of
``(θ, log Δ_y)`` under a Gamma prior on ``1/Δ_y``, profiled in closed form, see
:func:`batched_objective`). Several fits (restarts, ensemble members) run as one batched problem:
:func:`lbfgs_batched` keeps each member's L-BFGS state separate and shares only the objective
evaluations (:func:`map_ensemble`).
"""
from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

from .._backend.host import c_einsum as _einsum, np
from .._backend.host import stacked_solve as _solve_gufunc

from .._backend import device_of, is_numpy, namespace, to_numpy
from .._backend import random as bbr
from ..driver import nonfinite_blocks, nonfinite_fields, one_blas_thread, run_kernel
from ..inputs import prepare
from ..model import MLP, forward
from . import _common as C
from ..model import activate as _activate_model
from ..nn import loss_derivatives as _loss_and_grad
from .iterative import _isatty
from ._mlp_grad import (activation_derivative, auto_chunk, chunks, loss_derivatives, objective,
                        prior_vector)
from ..nn import SMOOTHABLE, smoothed_activation

__all__ = ["map_fit", "map_ensemble", "member_keys", "neg_log_posterior", "init_weights", "batched_objective", "anchor_draw",
           "lbfgs_batched", "lbfgs_step", "LBFGSState", "AdamState", "check_smoothing"]

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


def _flatten_batch(weights) -> np.ndarray:
    """Host float64 ``(M, P)`` from per-layer ``(M, d, k)`` arrays."""
    return np.concatenate([np.asarray(to_numpy(W), dtype=np.float64).reshape(W.shape[0], -1)
                           for W in weights], axis=1)


def _unflatten_batch(vec: np.ndarray, net: MLP, like, *, xp=None, shapes=None, device=None):
    """Per-layer ``(M, d, k)`` arrays like ``like`` from the host ``(M, P)`` rows (``xp``, ``shapes``
    = ``net.weight_shapes()`` and ``device`` may be passed in when known)."""
    xp = namespace(like) if xp is None else xp
    dev = device_of(like) if device is None else device
    out, o = [], 0
    M = vec.shape[0]
    for d, k in (net.weight_shapes() if shapes is None else shapes):
        out.append(xp.asarray(np.ascontiguousarray(vec[:, o:o + d * k]).reshape(M, d, k), dtype=like.dtype,
                              device=dev))
        o += d * k
    return tuple(out)


def batched_objective(net: MLP, weights, X, Y, *, likelihood: str, lam_w, lam_b, delta_y: float = 1.0,
                      noise_prior=None, chunk_size=None, prior_mean=None, member_targets=None, smoothing=None):
    """Negative log posteriors of ``M`` independent weight sets in one pass, and their gradients.

    Member ``m`` has weights ``weights[l][m]`` (shape ``(M, d_{l+1}, d_l + 1)``, bias last). With
    ``noise_prior = None``:

    .. math:: E_m = \\sum_\\mu \\ell(y_\\mu, F_\\mu(\\theta_m)) + \\tfrac12 \\sum_l \\sum_i
              \\tilde w_{l,i}^\\top \\Lambda_l \\tilde w_{l,i}

    (the objective of :func:`neg_log_posterior`, noise variance ``delta_y``). With a Gaussian
    likelihood and ``noise_prior = (a, b)`` — a ``Gamma(a, b)`` (shape, rate) prior on the noise
    precision ``τ = 1/Δ_y`` — the noise variance is a parameter too, ``s = log Δ_y``, and the
    objective is the joint negative log posterior of ``(θ, s)`` *minimised over s in closed form*:

    .. math:: E_m(\\theta) = \\min_s \\Big[\\frac{\\mathrm{SSE}}{2e^s} + \\frac{nC}{2}(s + \\log 2\\pi)
              + a s + b e^{-s}\\Big] + \\tfrac12 \\theta^\\top\\Lambda\\theta
              = k \\log D + k - k\\log k + \\frac{nC}{2}\\log 2\\pi + \\tfrac12\\theta^\\top\\Lambda\\theta,

    ``k = nC/2 + a``, ``D = SSE/2 + b``, attained at ``Δ̂_y = e^{ŝ} = D/k``. Its gradient in ``θ`` is
    the joint gradient at ``ŝ`` (``∇SSE/(2Δ̂_y) + Λθ``), so a minimiser of it is the joint MAP of
    ``(θ, log Δ_y)`` (the Gamma density transformed to ``s``, Jacobian included).

    **Anchored** (randomize-then-optimize) members: with ``prior_mean`` (per layer ``(M, d_{l+1},
    d_l + 1)``, the anchors ``θ₀ᵐ``) the prior term is centred there, ``½ (θ_m − θ₀ᵐ)ᵀΛ(θ_m − θ₀ᵐ)``
    (gradient ``Λ(θ_m − θ₀ᵐ)``); with ``member_targets`` (Gaussian only, ``(M, n, C)``) member ``m``
    fits its own targets ``yᵐ`` (e.g. ``y + εᵐ``) in the data term (SSE and the profiled noise
    included). Both ``None``: the objective above, computed exactly as before.

    **Smoothed** hidden activations: with ``smoothing = β`` (a float ``> 0``) every hidden (leaky)
    ReLU is replaced by its softplus smoothing ``f_β`` (:func:`blockbayes.nn.smoothed_activation`:
    ``s_β(a) = log(1 + e^{βa})/β``, derivative ``σ(βa)``) in the forward and the hand-written
    backward pass — the objective of one stage of the smoothing continuation of :func:`map_fit`.
    It tends to the ReLU objective as ``β → ∞``. ``None``: the objective above, computed exactly as
    before.

    Returns
    -------
    E : array, shape (M,)
    grads : tuple of arrays shaped like ``weights``
    delta_y : array, shape (M,)
        ``Δ̂_y`` per member (learned noise) or ``delta_y`` repeated.

    Cost ``O(M n P)``: the layers' products are batched matmuls over the members; the data are
    processed in chunks of ``chunk_size`` points (default: ~16k elements per member and array).
    """
    namespace(X, *weights)                           # one array library (ValueError otherwise)
    return _Objective(net, X, Y, likelihood=likelihood, lam_w=lam_w, lam_b=lam_b, delta_y=delta_y,
                      noise_prior=noise_prior, chunk_size=chunk_size, prior_mean=prior_mean,
                      member_targets=member_targets, smoothing=smoothing)(weights)


class _Objective:
    """:func:`batched_objective` on fixed data and settings: ``obj(weights) -> (E, grads, Δ_y)``.

    What does not change between the evaluations of one fit (namespace, chunk views of the data,
    the prior diagonals, the noise arrays) is set up once here; each call does exactly the
    arithmetic of :func:`batched_objective` in the same order (the same bits), with the weight
    blocks optionally given already split (``Ww``, ``WwT``: the ``(M, d_{l+1}, d_l)`` blocks and
    their transposes, contiguous), so that L-BFGS's objective calls pay only for the arithmetic.
    """

    def __init__(self, net: MLP, X, Y, *, likelihood: str, lam_w, lam_b, delta_y: float = 1.0,
                 noise_prior=None, chunk_size=None, prior_mean=None, member_targets=None, smoothing=None):
        if noise_prior is not None and likelihood != "gaussian":
            raise ValueError("a learned noise variance needs the gaussian likelihood")
        # smoothed hidden activations (a continuation stage; None: the plain objective, untouched)
        self.beta = None if smoothing is None else _check_beta(smoothing, net)
        # anchored members (None: the plain objective, untouched): per-layer prior means (M, d, k)
        # and per-member targets (M, n, C); __call__(rows=...) takes the rows of the members evaluated
        self.anchor = None if prior_mean is None else _check_anchor(net, prior_mean, X)
        self.Ym = None if member_targets is None else _check_member_targets(member_targets, X, Y, likelihood)
        if self.anchor is not None and self.Ym is not None and int(self.anchor[0].shape[0]) != int(self.Ym.shape[0]):
            raise ValueError(f"prior_mean has {int(self.anchor[0].shape[0])} members, member_targets "
                             f"{int(self.Ym.shape[0])}")
        xp = self.xp = namespace(X)
        if is_numpy(xp) and hasattr(np, "astype"):
            # NumPy >= 2.1 implements these functions itself: the same calls without
            # array_api_compat's wrappers (the same results; ~2-5 us less per call)
            xp = self.xp = np
        self.dtype, self.dev = X.dtype, device_of(X)
        self.net, self.X, self.Y, self.likelihood = net, X, Y, likelihood
        self.delta_y, self.noise_prior, self.chunk_size = delta_y, noise_prior, chunk_size
        self.n, self.C = int(Y.shape[0]), int(Y.shape[1])
        self.lam = [prior_vector(xp, lam_w[l], lam_b[l], k - 1, dtype=self.dtype, device=self.dev)
                    for l, (_, k) in enumerate(net.weight_shapes())]
        self.zero = xp.zeros((), dtype=self.dtype, device=self.dev)
        self._chunks = {}
        self._full = {}
        # NumPy: the same arithmetic through the ufuncs themselves, in place where an operand is a
        # temporary of this call (:meth:`_host_call`)
        self.host = xp is np
        self.L = net.num_layers
        self.maxw = max(d for d, _ in net.weight_shapes())
        self.relu = net.activation == "relu" and self.beta is None
        # the fixed noise variance's normaliser (n C / 2) log(2π Δ_y), as __call__ computes it
        self._log_norm = (0.5 * (self.n * self.C) * math.log(2 * math.pi * delta_y)
                          if likelihood == "gaussian" and noise_prior is None else None)
        self.shapes = tuple(net.weight_shapes())
        self.offsets = np.cumsum([0] + [d * k for d, k in self.shapes]).tolist()

    def _data_chunks(self, step):
        """``[(X[s:e], Y[s:e], s, e)]`` for chunk length ``step`` (cached)."""
        out = self._chunks.get(step)
        if out is None:
            out = self._chunks[step] = [(self.X[s:e, :], self.Y[s:e, :], s, e) for s, e in chunks(self.n, step)]
        return out

    def _member_chunks(self, step, rows):
        """:meth:`_data_chunks` with the per-member targets ``Ym[rows, s:e]`` ``(M, m, C)`` as the
        targets (every member when ``rows`` is ``None``)."""
        Ym = self.Ym if rows is None else self.xp.take(self.Ym, self._rows(rows), axis=0)
        return [(Xc, Ym[:, s:e, :], s, e) for Xc, _, s, e in self._data_chunks(step)]

    def _rows(self, rows):
        return self.xp.asarray(np.asarray(rows, dtype=np.int64), device=self.dev)

    def _anchor_rows(self, rows):
        """The anchors of members ``rows`` (all when ``None``), per layer ``(M, d, k)``."""
        if rows is None:
            return self.anchor
        idx = self._rows(rows)
        return tuple(self.xp.take(A, idx, axis=0) for A in self.anchor)

    def _gaussian_terms(self, xp, data, M, nC):
        """Noise part of the Gaussian objective for the ``(M,)`` halved residual sums ``data``.

        Returns ``(E, dy, scale)``: the data term of ``E`` (weights' prior not included), the
        noise variance ``Δ_y`` per member and the factor ``1/Δ_y`` of the data gradient. With a
        noise hyperprior ``Gamma(a, b)`` on ``1/Δ_y`` the noise is profiled out at its mode,
        ``Δ_y = (data + b)/k`` with ``k = nC/2 + a``, giving ``E = k log(data + b) + k − k log k +
        (nC/2) log 2π``; with a fixed ``Δ_y``, ``E = data/Δ_y + (nC/2) log(2πΔ_y)``.
        """
        if self.noise_prior is not None:
            a, b = float(self.noise_prior[0]), float(self.noise_prior[1])
            k = 0.5 * nC + a
            D = data + b
            dy = D / k
            E = k * xp.log(D) + (k - k * math.log(k) + 0.5 * nC * math.log(2 * math.pi))
            return E, dy, 1.0 / dy
        delta_y = self.delta_y
        E = data / delta_y + self._log_norm
        return E, self._filled(M, float(delta_y)), self._filled(M, 1.0 / delta_y)

    def _filled(self, M, value):
        key = (M, value)
        out = self._full.get(key)
        if out is None:
            out = self._full[key] = self.xp.full((M,), value, dtype=self.dtype, device=self.dev)
        return out

    def _zeros(self, M, shape):
        """A cached zero array ``(M, *shape)`` (read only: every use adds to it into a new array)."""
        key = (M,) + tuple(shape)
        out = self._full.get(key)
        if out is None:
            out = self._full[key] = self.xp.zeros(key, dtype=self.dtype, device=self.dev)
        return out

    def _host_zeros(self, M):
        """Cached zero starts ``(data (M,), accW, accb)`` of :meth:`_host_call`'s sums (read only)."""
        out = self._full.get(("acc", M))
        if out is None:
            shapes = self.net.weight_shapes()
            out = self._full[("acc", M)] = (self._zeros(M, ()), tuple(self._zeros(M, (d, k - 1)) for d, k in shapes),
                                            tuple(self._zeros(M, (d, 1)) for d, _ in shapes))
        return out

    def _host_work(self, M, m):
        """Cached work arrays of :meth:`_host_call` for ``M`` members and a chunk of ``m`` rows
        (ReLU path): per layer ``l`` the pre-activations ``A_l (M, m, d_{l+1})``, the activations
        ``H_{l+1}`` and the back-propagated ``δ_l (M, m, d_l)`` (float), and the ReLU derivative
        masks ``1[A_l > 0]`` (bool). Overwritten by every call; nothing returned aliases them.
        Fresh temporaries of this size (a 5-member boston chunk: 5 × 327 × 50 doubles, 654 kB)
        come from the C allocator as new pages each time (mmap, or a heap trimmed back to the
        system): ~40% of the batched call was page faults (system time)."""
        key = ("work", M, m)
        out = self._full.get(key)
        if out is None:
            dt, outs = self.dtype, [k for k, _ in self.shapes]
            A = [np.empty((M, m, k), dtype=dt) for k in outs]
            H = [None] + [np.empty((M, m, k), dtype=dt) for k in outs[:-1]]
            D = [None] + [np.empty((M, m, k), dtype=dt) for k in outs[:-1]]
            F = [None] + [np.empty((M, m, k), dtype=bool) for k in outs[:-1]]
            out = self._full[key] = (A, H, D, F)
        return out

    def member_rows(self, rows):
        """``rows`` (the anchored members evaluated), or ``None`` for all of them in order (and always
        for the plain objective, which has no per-member data)."""
        if rows is None or (self.anchor is None and self.Ym is None):
            return None
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (rows.size and (rows.min() < 0 or rows.max() >= self._members())):
            raise ValueError(f"rows must index the {self._members()} anchored members, got {rows!r}")
        return None if rows.size == self._members() and np.array_equal(rows, np.arange(rows.size)) else rows

    def __call__(self, weights, Ww=None, WwT=None, rows=None):
        rows = self.member_rows(rows)
        if self.host:
            return self._host_call(weights, Ww, WwT, rows=rows)
        xp, dtype, dev, net = self.xp, self.dtype, self.dev, self.net
        likelihood, n, C = self.likelihood, self.n, self.C
        M = int(weights[0].shape[0])
        L = len(weights)
        # chunks of ~16k elements per member (~80k for 5 members): the elementwise passes then stay in
        # the cache (Energy-sized 8-50-1 net, 5 members: 2.0-2.6 ms per pass unchunked, 1.2 ms chunked).
        # The chunk length does not depend on M, so a member's sums (and iterates) do not depend on the
        # other members of the batch.
        maxw = max(int(W.shape[1]) for W in weights)
        chunk_size = self.chunk_size
        step = auto_chunk(n, M * maxw, chunk_size) if chunk_size is not None else max(16, (1 << 14) // maxw)
        data = xp.zeros((M,), dtype=dtype, device=dev)
        # gradient accumulators of the weight blocks and the biases (concatenated at the end: the
        # same sums, element by element, as accumulating the concatenation)
        accW = [xp.zeros((M, W.shape[1], W.shape[2] - 1), dtype=W.dtype, device=dev) for W in weights]
        accb = [xp.zeros((M, W.shape[1], 1), dtype=W.dtype, device=dev) for W in weights]
        # contiguous copies of the weight blocks: NumPy's batched matmul leaves BLAS for strided operands
        if Ww is None:
            Ww = [xp.asarray(W[:, :, :-1], copy=True) for W in weights]                    # (M, d_{l+1}, d_l)
        if WwT is None:
            WwT = [xp.asarray(xp.matrix_transpose(W[:, :, :-1]), copy=True) for W in weights]  # (M, d_l, d_{l+1})
        bias = [W[:, None, :, -1] for W in weights]                                     # (M, 1, d_{l+1})
        relu = net.activation == "relu"           # f(A) = max(A, 0) with a 0-d zero of A's dtype
        beta = self.beta                          # a smoothing stage's β (None: the activation itself)
        data_chunks = self._data_chunks(step) if self.Ym is None else self._member_chunks(step, rows)
        for H, Yc, s, e in data_chunks:
            Hs, As, fps = [], [], []                                        # fps: f_β'(A_l), smoothing only
            for l in range(L):
                A = H @ WwT[l] + bias[l]                                    # (M, m, d_{l+1})
                Hs.append(H)
                As.append(A)
                if l < L - 1:
                    if beta is not None:
                        H, fp = smoothed_activation(xp, A, net.activation, net.slope, beta)
                        fps.append(fp)
                        continue
                    H = (xp.maximum(A, self.zero) if relu and A.dtype == dtype else
                         _activate_model(xp, A, net.activation, net.slope))
            F = As[-1]
            if likelihood == "gaussian":
                r = F - (Yc[None, :, :] if Yc.ndim == 2 else Yc)
                data = data + 0.5 * xp.sum(xp.reshape(r * r, (M, -1)), axis=1)
                d = r
            else:
                m = e - s
                Yt = xp.reshape(xp.broadcast_to(Yc[None, :, :], (M, m, C)), (M * m, C))
                loss, dF, _ = loss_derivatives(likelihood, xp.reshape(F, (M * m, C)), Yt, hessian_sqrt=False)
                data = data + xp.sum(xp.reshape(loss, (M, m)), axis=1)
                d = xp.reshape(dF, (M, m, C))
            for l in range(L - 1, -1, -1):
                accW[l] = accW[l] + xp.matrix_transpose(d) @ Hs[l]          # (M, d_{l+1}, d_l)
                accb[l] = accb[l] + xp.sum(d, axis=1)[:, :, None]
                if l > 0:
                    fp = (activation_derivative(xp, As[l - 1], net.activation, net.slope) if beta is None
                          else fps[l - 1])
                    if d.shape[2] == 1:                    # outer product: a broadcast multiply, not a K=1 matmul
                        d = fp * (d * Ww[l])
                    else:
                        d = fp * (d @ Ww[l])
        grads = [xp.concat([a, b], axis=2) for a, b in zip(accW, accb)]
        if likelihood == "gaussian":
            E, dy, scale = self._gaussian_terms(xp, data, M, n * C)
            grads = [g * scale[:, None, None] for g in grads]
        else:
            E = data
            dy = self._filled(M, 1.0)
        if self.anchor is not None:                  # ½ (θ − θ₀)ᵀΛ(θ − θ₀), gradient Λ(θ − θ₀)
            for l, (W, W0) in enumerate(zip(weights, self._anchor_rows(rows))):
                lam, D = self.lam[l], W - W0
                E = E + 0.5 * xp.sum(xp.reshape(lam * D * D, (M, -1)), axis=1)
                grads[l] = grads[l] + lam * D
            return E, tuple(grads), dy
        for l, W in enumerate(weights):
            lam = self.lam[l]
            E = E + 0.5 * xp.sum(xp.reshape(lam * W * W, (M, -1)), axis=1)
            grads[l] = grads[l] + lam * W
        return E, tuple(grads), dy

    def _members(self):
        return int(self.anchor[0].shape[0]) if self.anchor is not None else int(self.Ym.shape[0])


    def _host_call(self, weights, Ww=None, WwT=None, gout=None, rows=None):
        """:meth:`__call__` for NumPy arrays: each value computed by the same operations in the same
        order (so the same bits), but through the ufuncs and methods themselves (``np.add.reduce``
        is what ``np.sum`` calls), in place into the temporaries of this call, with cached zero
        accumulators and no re-derivation of per-fit constants — a small net's evaluation is mostly
        per-call Python cost (yacht-sized 6-50-1, n = 277: ~65 of ~125 us). The last chunk's sums go
        straight into the gradient blocks (no joining copy); ``gout``, a float64 ``(M, P)`` array
        (float64 weights only), receives the gradient as the rows of :func:`_flatten_batch` (the
        returned blocks are views of it)."""
        net, likelihood, n, C, L = self.net, self.likelihood, self.n, self.C, self.L
        M = int(weights[0].shape[0])
        chunk_size = self.chunk_size
        step = (auto_chunk(n, M * self.maxw, chunk_size) if chunk_size is not None
                else max(16, (1 << 14) // self.maxw))
        add, mul, reduce = np.add, np.multiply, np.add.reduce
        data, accW, accb = self._host_zeros(M)
        accW, accb = list(accW), list(accb)
        if Ww is None:                  # (M, d_{l+1}, d_l); the first layer's is not used
            Ww = [None] + [np.array(W[:, :, :-1]) for W in weights[1:]]
        if WwT is None:
            WwT = [np.array(W[:, :, :-1].transpose(0, 2, 1)) for W in weights]              # (M, d_l, d_{l+1})
        relu = self.relu and all(W.dtype == self.dtype for W in weights)
        zero = self.zero
        beta = self.beta
        if gout is None:
            grads = [np.empty((M, d, k), dtype=self.dtype) for d, k in self.shapes]
        else:
            grads = [gout[:, o:o + d * k].reshape(M, d, k) for o, (d, k) in zip(self.offsets, self.shapes)]
        data_chunks = self._data_chunks(step) if self.Ym is None else self._member_chunks(step, rows)
        last = data_chunks[-1][2]
        for H, Yc, s, e in data_chunks:
            Hs, As, fps = [], [], []
            if relu:                     # cached work arrays (no fresh pages per call)
                wA, wH, wD, wF = self._host_work(M, e - s)
            for l in range(L):
                A = np.matmul(H, WwT[l], out=wA[l]) if relu else np.matmul(H, WwT[l])
                add(A, weights[l][:, None, :, -1], out=A)                    # + bias, (M, m, d_{l+1})
                Hs.append(H)
                As.append(A)
                if l < L - 1:
                    if beta is not None:        # a smoothing stage: f_β(A) and f_β'(A) (kept for the backward pass)
                        H, fp = smoothed_activation(np, A, net.activation, net.slope, beta)
                        fps.append(fp)
                        continue
                    H = (np.maximum(A, zero, out=wH[l + 1]) if relu else
                         _activate_model(np, A, net.activation, net.slope))
            F = As[-1]
            if likelihood == "gaussian":
                d = np.subtract(F, Yc, out=F)                               # r = F − y (F is not needed again)
                data = data + 0.5 * reduce(mul(d, d).reshape(M, -1), axis=1)
            else:
                m = e - s
                Yt = Yc if M == 1 else np.broadcast_to(Yc[None, :, :], (M, m, C)).reshape(M * m, C)
                # the loss of loss_derivatives(..., hessian_sqrt=False), in NumPy's own namespace
                loss, dF = _loss_and_grad(likelihood, F.reshape(M * m, C), Yt, xp=np)
                data = data + reduce(loss.reshape(M, m), axis=1)
                d = dF.reshape(M, m, C)
            for l in range(L - 1, -1, -1):
                if s == last:                    # the final sums, written into the gradient blocks
                    add(accW[l], np.matmul(d.transpose(0, 2, 1), Hs[l]), out=grads[l][:, :, :-1])
                    add(accb[l], reduce(d, axis=1)[:, :, None], out=grads[l][:, :, -1:])
                else:
                    accW[l] = accW[l] + np.matmul(d.transpose(0, 2, 1), Hs[l])     # (M, d_{l+1}, d_l)
                    accb[l] = accb[l] + reduce(d, axis=1)[:, :, None]
                if l > 0:
                    if relu:
                        fp = np.greater(As[l - 1], 0, out=wF[l])              # f' = 1[A > 0] (cast on use)
                        d = (mul(d, Ww[l], out=wD[l]) if d.shape[2] == 1 else
                             np.matmul(d, Ww[l], out=wD[l]))
                    else:
                        fp = (activation_derivative(np, As[l - 1], net.activation, net.slope) if beta is None
                              else fps[l - 1])
                        d = mul(d, Ww[l]) if d.shape[2] == 1 else np.matmul(d, Ww[l])
                    d = mul(fp, d, out=d)
        if likelihood == "gaussian":
            E, dy, scale = self._gaussian_terms(np, data, M, n * C)
            for g in grads:
                mul(g, scale[:, None, None], out=g)
        else:
            E = data
            dy = self._filled(M, 1.0)
        if self.anchor is not None:                  # ½ (θ − θ₀)ᵀΛ(θ − θ₀), gradient Λ(θ − θ₀)
            for l, (W, W0) in enumerate(zip(weights, self._anchor_rows(rows))):
                D = np.subtract(W, W0)
                lD = mul(self.lam[l], D)
                E = E + 0.5 * reduce(mul(lD, D).reshape(M, -1), axis=1)
                add(grads[l], lD, out=grads[l])
            return E, tuple(grads), dy
        for l, W in enumerate(weights):
            lW = mul(self.lam[l], W)
            E = E + 0.5 * reduce(mul(lW, W).reshape(M, -1), axis=1)
            add(grads[l], lW, out=grads[l])
        return E, tuple(grads), dy


class LBFGSState(NamedTuple):
    """State of ``M`` lock-step L-BFGS minimisations (:func:`lbfgs_batched`; host NumPy).

    Attributes
    ----------
    x, g : arrays, shape (M, P)
        Iterates and their gradients.
    f : array, shape (M,)
        Objective values.
    S, Yh : arrays, shape (M, history, P)
        Curvature pairs ``s_i = x_{i+1} − x_i``, ``y_i = g_{i+1} − g_i``, newest last.
    cnt : int array, shape (M,)
        Valid pairs per member.
    nit, nfev : int arrays, shape (M,)
        Iterations and objective evaluations per member.
    status : int array, shape (M,)
        ``-1`` while running, else the stopping reason (see :func:`lbfgs_batched`).
    """

    x: Any
    f: Any
    g: Any
    S: Any
    Yh: Any
    cnt: Any
    nit: Any
    nfev: Any
    status: Any


_LBFGS_MESSAGES = {2: "iteration limit reached", 3: "line search found no decrease (numerical floor of f)",
                   4: "interrupted (Ctrl-C)", 0: "gradient tolerance reached"}


@functools.lru_cache(maxsize=8)
def _pair_masks(m: int):
    """``(I_m, upper-triangle mask, the mask with a leading axis)`` for :func:`lbfgs_step` (read
    only; cached per ``m``)."""
    tri = np.triu(np.ones((m, m), dtype=bool))
    return np.eye(m), tri, tri[None]


def _solve_errstate():
    """The floating-point error state of ``np.linalg.solve`` (a singular matrix raises
    ``LinAlgError``), for calling its LAPACK gufunc ``_solve_gufunc(a, b, signature="dd->d")`` on
    stacked float64 ``a (k, m, m)``, ``b (k, m, 1)`` without the wrapper's type and shape checks."""
    return np.errstate(call=_raise_singular, invalid="call", over="ignore", divide="ignore", under="ignore")


def _raise_singular(err, flag):
    raise np.linalg.LinAlgError("Singular matrix")


def _usual_step(fun, st: LBFGSState, gtol: float, ftol: float, c1: float, max_linesearch: int = 30):
    """:func:`lbfgs_step` in its usual case, with the fewest array operations: every member running
    and holding at least one pair, a descent direction for each, and every member accepting the
    unit step. The operations that make the values are those of :func:`lbfgs_step` (the same bits);
    the ones that only test for the other cases are cheaper equivalent (or stricter) tests, on
    Python floats where they are per-member scalars (the same IEEE operations). Returns the new
    state; ``None`` (nothing changed, ``fun`` not called) when the direction is not a finite descent
    for every member; ``(xt, ft, gt, d, gd)``, the unit-step trial and the direction, when some
    member of several rejects the unit step (``lbfgs_step`` then goes on from that trial). A single
    member backtracks here (:func:`_backtrack_one`)."""
    S, Yh, x, f, g, cnt = st.S, st.Yh, st.x, st.f, st.g, st.cnt
    M, m, _ = S.shape
    YT = Yh.transpose(0, 2, 1)
    SY = np.matmul(S, YT)                                           # (M, m, m): s_i . y_j
    YY = np.matmul(Yh, YT)
    sy_new = SY[:, -1, -1]
    yy_new = YY[:, -1, -1]
    eye, tri, tri1 = _pair_masks(m)
    if cnt.min() == m and yy_new.min() > 0:      # lbfgs_step's "steady" branch
        gamma = sy_new / yy_new
        R = np.where(tri1, SY, 0.0)
        R += 0.0
        Dg = SY.diagonal(0, 1, 2)
    else:                                        # fewer than m pairs (zero pairs masked out)
        valid = np.arange(m)[None, :] >= (m - cnt)[:, None]
        gamma = np.where(cnt > 0, sy_new / np.where(yy_new > 0, yy_new, 1.0), 0.0)
        R = np.where(tri1, SY, 0.0)
        R = np.where(valid[:, :, None] & valid[:, None, :], R, 0.0) + eye[None] * (~valid)[:, :, None]
        Dg = np.where(valid, np.diagonal(SY, axis1=1, axis2=2), 0.0)
    gam = gamma[:, None]
    p1 = _einsum("kip,kp->ki", S, g)
    p2 = gam * _einsum("kip,kp->ki", Yh, g)
    with _solve_errstate():
        Rinv_p1 = _solve_gufunc(R, p1[..., None], signature="dd->d")[..., 0]
        b_ = -Rinv_p1
        inner = Dg * Rinv_p1 + gam * _einsum("kij,kj->ki", YY, Rinv_p1) - p2
        a_ = _solve_gufunc(R.transpose(0, 2, 1), inner[..., None], signature="dd->d")[..., 0]
    Hg = gam * g + _einsum("ki,kip->kp", a_, S) + gam * _einsum("ki,kip->kp", b_, Yh)
    d = -Hg
    gd = _einsum("kp,kp->k", g, d)
    gdl = gd.tolist()
    # finite negative g.d for every member: descent, and d finite (a non-finite entry of d makes g.d
    # non-finite); anything else goes the general way
    if not all(-math.inf < v < 0 for v in gdl):
        return None
    xt = x + d                                                      # t = 1: the same values as x + t d
    ft, gt = fun(xt, np.arange(M))
    ft = np.asarray(ft, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    fl, ftl = f.tolist(), ft.tolist()
    # Armijo with t = 1 (f + c1·1·g.d), finite f and g; a finite sum of g means every entry finite
    nfev = st.nfev + 1
    if not (all(a <= b + c1 * v for a, b, v in zip(ftl, fl, gdl)) and all(map(math.isfinite, ftl))
            and math.isfinite(gt.sum())):
        if M > 1:
            return xt, ft, gt, d, gd
        trial = _backtrack_one(fun, x, d, fl[0], gdl[0], ftl[0], gt, c1, max_linesearch)
        if trial is None:                        # the unit step was accepted after all (a sum overflowed)
            return xt, ft, gt, d, gd
        xt, ft, gt, k = trial
        nfev = nfev + k
        if xt is None:                           # no acceptable step: stalled (status 3), nothing else changes
            return LBFGSState(x.copy(), f.copy(), g.copy(), S, Yh, cnt.copy(), st.nit.copy(), nfev,
                              np.full_like(st.status, 3))
        ftl = ft.tolist()
    s = xt - x
    yv = gt - g
    sy = _einsum("kp,kp->k", s, yv).tolist()
    yy = _einsum("kp,kp->k", yv, yv).tolist()
    upd = [a > 1e-10 * b for a, b in zip(sy, yy)]
    cnt = cnt.copy()
    if all(upd):                             # every member takes its pair: shift by slices
        S[:, :-1] = S[:, 1:]
        Yh[:, :-1] = Yh[:, 1:]
        S[:, -1] = s
        Yh[:, -1] = yv
        np.minimum(cnt + 1, m, out=cnt)
    elif any(upd):
        u = np.flatnonzero(upd)
        S[u, :-1] = S[u, 1:]
        Yh[u, :-1] = Yh[u, 1:]
        S[u, -1] = s[u]
        Yh[u, -1] = yv[u]
        cnt[u] = np.minimum(cnt[u] + 1, m)
    # stopping tests (on finite values)
    gmax = np.abs(gt).max(axis=1).tolist()
    status = [0 if gm <= gtol else 1 if (a - b) <= ftol * max(abs(a), abs(b), 1.0) else -1
              for gm, a, b in zip(gmax, fl, ftl)]
    status = np.array(status, dtype=np.int64) if any(v >= 0 for v in status) else st.status.copy()
    return LBFGSState(xt, ft.copy(), gt.copy(), S, Yh, cnt, st.nit + 1, nfev, status)


def _backtrack_one(fun, x, d, fa: float, gd: float, f0: float, g0, c1: float, max_linesearch: int):
    """:func:`lbfgs_step`'s backtracking for one member (``M = 1``) after the unit step ``t = 1``
    gave ``f0``, ``g0``, on Python floats: the same trial steps ``t`` (safeguarded quadratic
    interpolation, clipped to ``[0.1 t, 0.5 t]``), the same Armijo tests and trial points
    ``x + t d``. Returns ``None`` if the unit step is in fact acceptable, else ``(xt, ft, gt,
    trials after the first)``, with ``xt = ft = gt = None`` when no trial within
    ``max_linesearch`` is acceptable."""
    fin = math.isfinite(f0) and bool(np.isfinite(g0).all())
    if fin and f0 <= fa + c1 * 1.0 * gd:
        return None
    fr, t, k = (f0 if fin else math.inf), 1.0, 0
    idx = np.arange(1)
    for _ in range(1, max_linesearch):
        tr = t
        denom = 2.0 * (fr - fa - gd * tr)
        tq = -gd * tr * tr / denom if (math.isfinite(denom) and denom > 0) else 0.1 * tr
        t = min(max(tq, 0.1 * tr), 0.5 * tr)
        xt = x + t * d
        ft, gt = fun(xt, idx)
        ft = np.asarray(ft, dtype=np.float64)
        gt = np.asarray(gt, dtype=np.float64)
        k += 1
        fv = ft.item()
        fin = math.isfinite(fv) and bool(np.isfinite(gt).all())
        if fin and fv <= fa + c1 * t * gd:
            return xt, ft, gt, k
        fr = fv if fin else math.inf
    return None, None, None, k


def lbfgs_step(fun, st: LBFGSState, *, gtol: float, ftol: float, max_linesearch: int = 30,
               c1: float = 1e-4) -> LBFGSState:
    """One L-BFGS iteration of every running member (``status < 0``) of ``st`` (see
    :func:`lbfgs_batched`); stopped members are left as they are. Returns the new state: fresh
    arrays, except the curvature-pair buffers ``S``, ``Yh``, which are updated in place (copying
    them every iteration tripled the cost of an iteration on a cheap objective).

    The usual iteration (every member running with at least one pair and accepting the unit step)
    takes :func:`_usual_step`'s shorter way to the same values."""
    S, Yh = st.S, st.Yh
    trial0 = None
    if st.status.max() < 0 and st.cnt.min() > 0:
        out = _usual_step(fun, st, gtol, ftol, c1, max_linesearch)
        if isinstance(out, LBFGSState):
            return out
        trial0 = out      # None, or the direction and its unit-step trial, evaluated there (the same values)
    x, f, g = st.x.copy(), st.f.copy(), st.g.copy()
    cnt, nit, nfev, status = st.cnt.copy(), st.nit.copy(), st.nfev.copy(), st.status.copy()
    M, m, P = S.shape
    eye, tri, _ = _pair_masks(m)
    act = (status < 0).nonzero()[0]
    if act.size == 0:
        return LBFGSState(x, f, g, S, Yh, cnt, nit, nfev, status)
    every = act.size == M                        # all running (the usual case): views, no gathers
    ga = g if every else g[act]                  # (g is this step's copy; read before it is updated)
    if trial0 is not None:                       # from _usual_step (every member running): its direction, t = 1
        d, gd = trial0[3], trial0[4]
        t = np.ones(act.size)
    else:
        cnt_a = cnt.copy() if every else cnt[act]
        # ---- direction: compact L-BFGS form (zero pairs for members with fewer than m pairs)
        Sa, Ya = (S, Yh) if every else (S[act], Yh[act])
        SY = np.matmul(Sa, np.swapaxes(Ya, 1, 2))                     # (k, m, m): s_i . y_j
        YY = np.matmul(Ya, np.swapaxes(Ya, 1, 2))
        sy_new = SY[:, -1, -1]
        yy_new = YY[:, -1, -1]
        steady = bool((cnt_a == m).all()) and bool((yy_new > 0).all())
        if steady:
            # every member has its m pairs (the usual case after m iterations): the masks below are
            # all true, so the same values come from fewer array operations (R + 0.0 as there)
            gamma = sy_new / yy_new
            R = np.where(tri[None], SY, 0.0)
            R += 0.0
            Dg = np.diagonal(SY, axis1=1, axis2=2)
        else:
            valid = np.arange(m)[None, :] >= (m - cnt_a)[:, None]      # newest pairs at the end
            gamma = np.where(cnt_a > 0, sy_new / np.where(yy_new > 0, yy_new, 1.0), 0.0)
            R = np.where(tri[None], SY, 0.0)
            R = np.where(valid[:, :, None] & valid[:, None, :], R, 0.0) + eye[None] * (~valid)[:, :, None]
            Dg = np.where(valid, np.diagonal(SY, axis1=1, axis2=2), 0.0)
        p1 = np.einsum("kip,kp->ki", Sa, ga)
        p2 = gamma[:, None] * np.einsum("kip,kp->ki", Ya, ga)
        Rinv_p1 = np.linalg.solve(R, p1[..., None])[..., 0]
        b_ = -Rinv_p1
        inner = Dg * Rinv_p1 + gamma[:, None] * np.einsum("kij,kj->ki", YY, Rinv_p1) - p2
        a_ = np.linalg.solve(np.swapaxes(R, 1, 2), inner[..., None])[..., 0]
        Hg = gamma[:, None] * ga + np.einsum("ki,kip->kp", a_, Sa) + gamma[:, None] * np.einsum("ki,kip->kp", b_, Ya)
        first = cnt_a == 0
        if not steady:
            Hg[first] = ga[first]
        d = -Hg
        gd = np.einsum("kp,kp->k", ga, d)
        bad = ~(gd < 0) | ~np.isfinite(d).all(axis=1)
        if bad.any():                                                # lost descent: forget the pairs
            d[bad] = -ga[bad]
            gd[bad] = -np.einsum("kp,kp->k", ga[bad], ga[bad])
            cnt[act[bad]] = 0
            first = first | bad
        if first.any():
            t = np.where(first, np.minimum(1.0, 1.0 / np.maximum(np.linalg.norm(ga, axis=1), 1e-300)), 1.0)
        else:
            t = np.ones(act.size)
    # ---- backtracking line search, members independently
    x_new = np.empty((act.size, P))
    f_new = np.empty(act.size)
    g_new = np.empty((act.size, P))
    pend = np.arange(act.size)
    ok = np.zeros(act.size, dtype=bool)
    fa = f[act]
    whole = False                                # every member running and accepting its first trial
    for trial in range(max_linesearch):
        if trial == 0 and every:
            if trial0 is not None:           # evaluated by _usual_step (there t = 1, x + d = x + t d)
                xt, ft, gt = trial0[:3]
            else:
                xt = x + t[:, None] * d
                ft, gt = fun(xt, act)
            ft = np.asarray(ft, dtype=np.float64)
            gt = np.asarray(gt, dtype=np.float64)
            nfev += 1
            fin = np.isfinite(ft) & np.isfinite(gt).all(axis=1)
            acc = fin & (ft <= fa + c1 * t * gd)
            if acc.all():
                whole = True
                break
        else:
            xt = x[act[pend]] + t[pend, None] * d[pend]
            ft, gt = fun(xt, act[pend])
            ft = np.asarray(ft, dtype=np.float64)
            gt = np.asarray(gt, dtype=np.float64)
            nfev[act[pend]] += 1
            fin = np.isfinite(ft) & np.all(np.isfinite(gt), axis=1)
            acc = fin & (ft <= fa[pend] + c1 * t[pend] * gd[pend])
        i_acc = pend[acc]
        x_new[i_acc], f_new[i_acc], g_new[i_acc] = xt[acc], ft[acc], gt[acc]
        ok[i_acc] = True
        rej = pend[~acc]
        if rej.size == 0:
            pend = rej
            break
        tr, fr = t[rej], np.where(fin[~acc], ft[~acc], np.inf)
        denom = 2.0 * (fr - fa[rej] - gd[rej] * tr)
        tq = np.where(np.isfinite(denom) & (denom > 0), -gd[rej] * tr * tr / np.where(denom > 0, denom, 1.0), 0.1 * tr)
        t[rej] = np.clip(tq, 0.1 * tr, 0.5 * tr)
        pend = rej
    if whole:
        acc_m, xn, fn, gn = act, xt, ft, gt
        s, yv = xn - x, gn - g
    else:
        status[act[~ok]] = 3                     # stalled
        acc_m = act[ok]
        if acc_m.size:
            xn, fn, gn = x_new[ok], f_new[ok], g_new[ok]
            s = xn - x[acc_m]
            yv = gn - g[acc_m]
    if acc_m.size:
        sy = np.einsum("kp,kp->k", s, yv)
        yy = np.einsum("kp,kp->k", yv, yv)
        upd = sy > 1e-10 * yy
        u = acc_m[upd]
        if u.size == M:                          # every member takes its pair: shift by slices
            S[:, :-1] = S[:, 1:]
            Yh[:, :-1] = Yh[:, 1:]
            S[:, -1] = s
            Yh[:, -1] = yv
            np.minimum(cnt + 1, m, out=cnt)
        elif u.size:
            S[u, :-1] = S[u, 1:]
            Yh[u, :-1] = Yh[u, 1:]
            S[u, -1] = s[upd]
            Yh[u, -1] = yv[upd]
            cnt[u] = np.minimum(cnt[u] + 1, m)
        f_old = f[acc_m]
        x[acc_m], f[acc_m], g[acc_m] = xn, fn, gn
        nit[acc_m] += 1
        conv_g = np.abs(gn).max(axis=1) <= gtol
        conv_f = (f_old - fn) <= ftol * np.maximum(np.maximum(np.abs(f_old), np.abs(fn)), 1.0)
        status[acc_m[conv_f]] = 1
        status[acc_m[conv_g]] = 0
    return LBFGSState(x, f, g, S, Yh, cnt, nit, nfev, status)


def lbfgs_batched(fun, x0, *, max_iter: int = 1000, gtol: float = 1e-5, ftol: float = 0.0, history: int = 10,
                  max_linesearch: int = 30, c1: float = 1e-4, callback=None, progress=False,
                  desc: str = "L-BFGS", check_every=None):
    """``M`` independent L-BFGS minimisations run in lock step (host NumPy, float64).

    Each member keeps its own curvature pairs, step and stopping state, so its iterates are exactly
    those of a single-member run: batching only shares the objective evaluations (one batched pass
    for all active members instead of ``M`` passes).

    Direction: the compact inverse-Hessian form of Byrd, Nocedal & Schnabel (1994),
    ``H = γI + [S γY] [[R⁻ᵀ(D + γYᵀY)R⁻¹, −R⁻ᵀ], [−R⁻¹, 0]] [S γY]ᵀ`` with the last ``history``
    pairs ``(s_i, y_i)`` (``R`` the upper triangle of ``SᵀY``, ``D`` its diagonal, ``γ = sᵀy/yᵀy``
    of the newest pair); a pair with ``sᵀy ≤ 1e-10 yᵀy`` is skipped. Step: backtracking from
    ``t = 1`` (first iteration ``1/‖g‖``) on the Armijo condition ``f(x + td) ≤ f + c₁ t gᵀd``,
    shrinking by safeguarded quadratic interpolation (factor in ``[0.1, 0.5]``).

    Stopping, per member: ``max_i |g_i| ≤ gtol`` (converged), ``f_old − f_new ≤ ftol·max(|f_old|,
    |f_new|, 1)`` (converged in f; never with ``ftol = 0``), ``max_iter`` iterations, or no
    Armijo step within ``max_linesearch`` trials (stalled at the numerical floor of ``f``).

    The iterations run on :func:`blockbayes.driver.run_kernel` (one :func:`lbfgs_step` a step, the
    run stopped early once no member is running): progress bar, ``check_every`` finite checks of
    the iterates, Ctrl-C (the members still running then get status 4 and the iterates so far).

    Parameters
    ----------
    fun : callable
        ``fun(x, idx) -> (f, g)`` for rows ``idx`` of the batch: ``x`` of shape ``(k, P)``, ``f``
        ``(k,)``, ``g`` ``(k, P)``. Non-finite ``f`` counts as a failed trial step.
    x0 : array, shape (M, P)
    callback : callable ``(x, f, g, nit)``, optional
        Called after each iteration with the state's arrays.
    progress : bool
        tqdm bar over the iterations (``desc``).
    check_every : int, optional
        Check the iterates for non-finite values every this many iterations (and after the last).

    Returns
    -------
    dict
        ``x (M, P)``, ``f (M,)``, ``g (M, P)``, ``num_iter (M,)``, ``num_fev (M,)``, ``status (M,)``
        (0 gradient tolerance, 1 f tolerance, 2 iteration limit, 3 line search stalled,
        4 interrupted), ``message`` and ``history`` (``f`` after each iteration) per member.
    """
    x = np.array(x0, dtype=np.float64, copy=True)
    if x.ndim != 2:
        raise ValueError(f"x0 must have shape (M, P), got {x.shape}")
    M, P = x.shape
    m = int(history)
    f, g = fun(x, np.arange(M))
    f = np.asarray(f, dtype=np.float64).copy()
    g = np.asarray(g, dtype=np.float64).copy()
    if not np.all(np.isfinite(f)) or not np.all(np.isfinite(g)):
        raise FloatingPointError("the objective is not finite at the starting point")
    status = np.full(M, -1, dtype=np.int64)
    status[np.max(np.abs(g), axis=1) <= gtol] = 0
    st = LBFGSState(x=x, f=f, g=g, S=np.zeros((M, m, P)), Yh=np.zeros((M, m, P)), cnt=np.zeros(M, dtype=np.int64),
                    nit=np.zeros(M, dtype=np.int64), nfev=np.ones(M, dtype=np.int64), status=status)
    f_trace = np.zeros((M, 0))
    if np.any(status < 0) and max_iter >= 1:
        out = run_kernel(
            None, st, lambda _, s, t: (lbfgs_step(fun, s, gtol=gtol, ftol=ftol, max_linesearch=max_linesearch,
                                                  c1=c1), None),
            num_steps=max_iter, collect=lambda s, info, t: {"f": s.f},
            stop=lambda t, s, info, traces: s.status.min() >= 0,            # no member running
            on_step=None if callback is None else (lambda t, s, info, traces, kept: callback(s.x, s.f, s.g, s.nit)),
            check=lambda s, info: nonfinite_blocks(np, {"iterate": s.x}), check_every=check_every,
            check_what="L-BFGS iterate", progress=progress, desc=desc, unit="it")
        st = out.state
        f_trace = out.traces["f"] if out.num_kept else f_trace
        status = st.status.copy()
        status[status < 0] = 4 if out.interrupted else 2
    msgs = {**_LBFGS_MESSAGES, 1: ("relative reduction of f below ftol" if ftol > 0 else
                                   "no decrease of f (a kink of the objective or the float64 resolution of f)")}
    return dict(x=st.x, f=st.f, g=st.g, num_iter=st.nit, num_fev=st.nfev, status=status,
                message=[msgs[int(s_)] for s_ in status],
                history=[[float(v) for v in f_trace[i, :int(st.nit[i])]] for i in range(M)])


def _fit_lbfgs_batch(net, inits, X, Y, *, lik, lam_w, lam_b, dy, noise_prior, max_iter, tol, ftol, history,
                     chunk_size, progress, desc="MAP (L-BFGS)", prior_mean=None, member_targets=None,
                     smoothing=None, smoothing_iter=5000, smoothing_tol=1e-6):
    """Run :func:`lbfgs_batched` on ``E/n`` from the stacked starts ``inits`` (per layer ``(M, d, k)``);
    ``prior_mean`` / ``member_targets``: anchored members (:func:`batched_objective`), one row of each
    per start. ``smoothing``: the checked β schedule of the continuation (:func:`_continuation`) run
    before the fit on the objective itself, which starts where the last stage ended; its record is
    ``res["smoothing"]``."""
    n = X.shape[0]
    okw = dict(likelihood=lik, lam_w=lam_w, lam_b=lam_b, delta_y=dy, noise_prior=noise_prior, chunk_size=chunk_size,
               prior_mean=prior_mean, member_targets=member_targets)
    obj = _Objective(net, X, Y, **okw)
    fun = _flat_objective(obj, net, X, n)
    x0 = _flatten_batch(inits)
    stages = None
    if smoothing is not None:
        x0, stages = _continuation(net, X, Y, okw, fun, x0, smoothing, max_iter=smoothing_iter, tol=smoothing_tol,
                                   history=history, progress=progress, desc=desc)
    res = lbfgs_batched(fun, x0, max_iter=max_iter, gtol=tol, ftol=ftol, history=history,
                        progress=_isatty() if progress is None else bool(progress), desc=desc)
    W = _unflatten_batch(res["x"], net, X)
    _, _, dys = obj(W)
    res["delta_y"] = np.array(to_numpy(dys), dtype=np.float64)
    if stages is not None:
        res["smoothing"] = stages
    return W, res


def _flat_objective(obj, net, X, n):
    """``fun(v, idx) -> (E/n, ∇E/n)`` of :func:`lbfgs_batched` for :class:`_Objective` ``obj``: host
    float64 rows ``v (k, P)`` of the members ``idx`` (anchored members: each evaluation passes the rows
    of the members it evaluates, since the line search evaluates subsets; the plain objective ignores
    them)."""
    anch = obj.anchor is not None or obj.Ym is not None
    xpX, shapes, dev = namespace(X), tuple(net.weight_shapes()), device_of(X)
    fused = _fused_gaussian_objective(obj, net, X, n)
    if fused is not None:
        return fused
    if obj.host:
        # NumPy: the layers are views of the host vector (float64) or cast copies, and the gradient
        # is joined straight into float64 — the values of the general path below
        offs, dtype, P = obj.offsets, X.dtype, obj.offsets[-1]
        f64 = dtype == np.float64

        def fun(v, idx):
            M = v.shape[0]
            W = tuple(v[:, o:o + d * k].reshape(M, d, k).astype(dtype, copy=False)
                      for o, (d, k) in zip(offs, shapes))
            rows = obj.member_rows(idx) if anch else None
            if f64:
                G = np.empty((M, P))
                E, _, _ = obj._host_call(W, gout=G, rows=rows)
            else:
                E, g, _ = obj._host_call(W, rows=rows)
                G = np.concatenate([gl.reshape(M, -1) for gl in g], axis=1, dtype=np.float64)
            G /= n
            return np.asarray(E, dtype=np.float64) / n, G
    else:
        def fun(v, idx):
            E, g, _ = obj(_unflatten_batch(v, net, X, xp=xpX, shapes=shapes, device=dev),
                          rows=idx if anch else None)
            return np.asarray(to_numpy(E), dtype=np.float64) / n, _flatten_batch(g) / n
    return fun


FUSED_ACTIVATIONS = ("relu", "leaky_relu", "identity")


def _fused_gaussian_objective(obj, net, X, n):
    """``fun`` of :func:`_flat_objective` through :func:`blockbayes.kernels.network_target` (one
    fused Numba pass over the rows per evaluation; design note 59), or ``None`` where it does not
    apply: it covers the plain Gaussian objective on NumPy float64 — fixed or profiled noise, no
    smoothing stage, no anchors or per-member targets, (leaky) ReLU or identity hidden units —
    which is every regression MAP fit, ensemble member and MAP start of the library's defaults.

    ``E = E_noise(½ sse) + ½ Σ_j λ_j θ_j²`` with ``E_noise`` of :meth:`_Objective._gaussian_terms`
    and ``∇E = −G/Δ_y + λ ⊙ θ`` (``G = −∇ sse / 2`` from the kernel); returns ``(E/n, ∇E/n)``. The
    same values as the NumPy path to rounding (the tests bound the difference), not the same bits.
    """
    from ..kernels import network_target

    if not (obj.host and obj.likelihood == "gaussian" and obj.beta is None and obj.anchor is None
            and obj.Ym is None and X.dtype == np.float64 and X.ndim == 2 and net.activation in FUSED_ACTIVATIONS):
        return None
    data = network_target(X, obj.Y, net.widths, activation=net.activation, slope=net.slope)
    lam = np.concatenate([np.tile(np.asarray(lv, dtype=np.float64), d) for lv, (d, _) in zip(obj.lam, obj.shapes)])
    nC = obj.n * obj.C

    def fun(v, idx):
        sse, G = data(v)
        E, _, scale = obj._gaussian_terms(np, 0.5 * sse, v.shape[0], nC)
        grad = lam * v
        grad -= np.asarray(scale, dtype=np.float64)[:, None] * G
        E = E + 0.5 * np.sum(lam * v * v, axis=1)      # row by row: a member's E does not depend on M
        grad /= n
        return np.asarray(E, dtype=np.float64) / n, grad

    return fun


def _continuation(net, X, Y, okw, fun, x0, betas, *, max_iter, tol, history, progress, desc):
    """The smoothing continuation: for each ``β`` of ``betas`` (increasing), :func:`lbfgs_batched` on
    the smoothed ``E_β/n`` (:func:`batched_objective` with ``smoothing=β``; hidden (leaky) ReLUs
    replaced by ``log(1 + e^{βa})/β``), started where the previous stage ended (the first at ``x0``),
    with fresh curvature pairs, at most ``max_iter`` iterations, ``max|∇E_β/n| ≤ tol`` or no decrease
    (``ftol = 0``). Returns the last stage's iterates ``(M, P)`` and the record: per stage ``beta``,
    ``num_iter``, ``num_fev``, ``status`` (``(M,)`` arrays), ``f`` (``E_β/n`` at its end) and
    ``f_relu`` (the unsmoothed ``E/n`` there, through ``fun``)."""
    n = X.shape[0]
    x = x0
    out = []
    for beta in betas:
        sfun = _flat_objective(_Objective(net, X, Y, smoothing=beta, **okw), net, X, n)
        r = lbfgs_batched(sfun, x, max_iter=max_iter, gtol=tol, ftol=0.0, history=history,
                          progress=_isatty() if progress is None else bool(progress), desc=f"{desc} β={beta:g}")
        x = r["x"]
        f_relu, _ = fun(x, np.arange(x.shape[0]))
        out.append(dict(beta=float(beta), num_iter=r["num_iter"], num_fev=r["num_fev"], status=r["status"],
                        message=r["message"], f=r["f"], f_relu=np.asarray(f_relu, dtype=np.float64)))
    return x, out


def _check_beta(beta, net) -> float:
    """One smoothing sharpness ``β``: a finite positive real, for a net whose hidden activation can be
    smoothed (:data:`blockbayes.nn.SMOOTHABLE`)."""
    if net.activation not in SMOOTHABLE:
        raise ValueError(f"smoothing needs a {' or '.join(SMOOTHABLE)} hidden activation, got {net.activation!r} "
                         "(only the kinked activations are smoothed)")
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.integer, np.floating)):
        raise TypeError(f"a smoothing beta must be a real number, got {type(beta).__name__}")
    b = float(beta)
    if not (math.isfinite(b) and b > 0):
        raise ValueError(f"a smoothing beta must be finite and > 0, got {beta!r}")
    return b


def check_smoothing(smoothing, net):
    """The β schedule of a smoothing continuation as a tuple of floats (``None`` passes through).

    ``smoothing``: a real ``β`` or a non-empty sequence of them, each finite and ``> 0``, strictly
    increasing (the continuation sharpens towards the ReLU); the net's hidden activation must be
    ``"relu"`` or ``"leaky_relu"``. Raises ``ValueError`` / ``TypeError`` otherwise."""
    if smoothing is None:
        return None
    if isinstance(smoothing, (str, bytes)) or isinstance(smoothing, bool):
        raise TypeError(f"smoothing must be None, a real beta or a sequence of them, got {smoothing!r}")
    seq = (smoothing,) if np.ndim(smoothing) == 0 else tuple(np.asarray(smoothing, dtype=object).reshape(-1))
    if not seq:
        raise ValueError("smoothing must hold at least one beta (None: no continuation)")
    betas = tuple(_check_beta(b, net) for b in seq)
    if any(b1 <= b0 for b0, b1 in zip(betas, betas[1:])):
        raise ValueError(f"smoothing betas must increase strictly, got {betas}")
    return betas


def _stage_info(stages, i, n) -> list:
    """Member ``i``'s record of the continuation stages (objectives in units of ``E``)."""
    return [dict(beta=s["beta"], num_iter=int(s["num_iter"][i]), num_fev=int(s["num_fev"][i]),
                 message=s["message"][i], objective_smoothed=float(s["f"][i]) * n,
                 objective=float(s["f_relu"][i]) * n) for s in stages]


def _check_anchor(net, prior_mean, X):
    """Per-layer anchors ``(M, d_{l+1}, d_l + 1)``: finite, of one member count, in ``X``'s namespace and dtype."""
    if isinstance(prior_mean, (str, bytes)) or not hasattr(prior_mean, "__len__"):
        raise TypeError(f"prior_mean must be a tuple of per-layer (M, d, k) arrays, got {type(prior_mean).__name__}")
    shapes = net.weight_shapes()
    if len(prior_mean) != len(shapes):
        raise ValueError(f"prior_mean must have {len(shapes)} layers, got {len(prior_mean)}")
    xp = namespace(X)
    out, M = [], None
    for l, (A, shp) in enumerate(zip(prior_mean, shapes)):
        if not hasattr(A, "shape") or A.ndim != 3 or tuple(A.shape[1:]) != shp:
            raise ValueError(f"prior_mean[{l}] must have shape (M,) + {shp}, got {getattr(A, 'shape', None)}")
        if M is None:
            M = int(A.shape[0])
        elif int(A.shape[0]) != M:
            raise ValueError(f"prior_mean layers disagree on the member count ({M} and {int(A.shape[0])})")
        A = xp.astype(C.as_namespace_of(A, X), X.dtype)
        if not bool(xp.all(xp.isfinite(A))):
            raise ValueError(f"prior_mean[{l}] contains NaN or infinite values")
        out.append(A)
    return tuple(out)


def _check_member_targets(member_targets, X, Y, likelihood):
    """Per-member targets ``(M, n, C)`` (Gaussian only), finite, in ``X``'s namespace and dtype."""
    if likelihood != "gaussian":
        raise ValueError(f"per-member targets need the gaussian likelihood, got {likelihood!r}")
    xp = namespace(X)
    T = xp.astype(C.as_namespace_of(member_targets, X), X.dtype)
    if T.ndim != 3 or tuple(T.shape[1:]) != tuple(Y.shape):
        raise ValueError(f"member_targets must have shape (M,) + {tuple(Y.shape)}, got {tuple(T.shape)}")
    if not bool(xp.all(xp.isfinite(T))):
        raise ValueError("member_targets contains NaN or infinite values")
    return T


def anchor_draw(net: MLP, key, *, like, prior_precision=None):
    """One anchor ``θ₀ ~ N(0, Λ⁻¹)`` of the weight prior (randomize-then-optimize ensembles).

    Row ``i`` of layer ``l`` is ``w̃_{l,i} ~ N(0, diag(λ_W, …, λ_W, λ_b)⁻¹)`` (bias last): with
    ``prior_prec="fan_in"`` every weight and bias of layer ``l`` has variance ``1/d_l``. Layer ``l``
    draws with ``split(key(key), L)[l]``.

    Parameters
    ----------
    net : MLP
    key : int, SeedSequence or key
    like : array
        Namespace, device and dtype of the result.
    prior_precision : None, float or per-layer sequence
        Overrides the net's ``(λ_W, λ_b)`` (as in :func:`map_fit`).

    Returns
    -------
    tuple of arrays
        Per layer ``(d_{l+1}, d_l + 1)``.
    """
    lam_w, lam_b = C.resolve_prior(net, prior_precision)
    xp = namespace(like)
    keys = bbr.split(bbr.key(key), net.num_layers)
    out = []
    for l, (d, k) in enumerate(net.weight_shapes()):
        Z = xp.asarray(bbr.normal(keys[l], (d, k), like=like), dtype=like.dtype, device=device_of(like))
        sd = prior_vector(xp, 1.0 / math.sqrt(lam_w[l]), 1.0 / math.sqrt(lam_b[l]), k - 1, dtype=like.dtype,
                          device=device_of(like))
        out.append(Z * sd)
    return tuple(out)


def _check_noise_prior(noise_prior):
    try:
        a, b = (float(v) for v in noise_prior)
    except (TypeError, ValueError):
        raise ValueError(f"noise_prior must be a pair (shape, rate), got {noise_prior!r}") from None
    if not (a >= 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"noise_prior needs shape >= 0 and rate > 0, got {noise_prior!r}")
    return a, b


def _restart_inits(net, X, key, count, first=None):
    """``count`` random starts (the first may be given), stacked per layer as ``(count, d, k)``."""
    xp = namespace(X)
    keys = bbr.split(key, count)
    starts = [first if (first is not None and r == 0) else C.init_weights(net, seed=keys[r], like=X)
              for r in range(count)]
    return tuple(xp.stack([s[l] for s in starts]) for l in range(net.num_layers))


@one_blas_thread
def map_fit(net: MLP, X, y, *, likelihood=None, method: str = "lbfgs", seed=None, init=None,
            prior_precision=None, delta_y=None, sigma_noise=None, learn_noise: bool = False,
            noise_prior=(1.0, 1e-2), restarts: int = 1, max_iter: int = 2000, tol: float = 1e-7,
            ftol=None, history: int = 10, num_epochs: int = 200, batch_size: int = 128, lr: float = 1e-2,
            betas=(0.9, 0.999), eps: float = 1e-8, chunk_size=None, progress=True,
            return_info: bool = False, device=None, dtype=None, noise=None, holdout: float = 0.1,
            split_seed=None, smoothing=None, smoothing_iter: int = 5000, smoothing_tol: float = 1e-6):
    """MAP weights of the standard MLP (and, optionally, of its noise variance).

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
        ``"lbfgs"``: full-batch L-BFGS (:func:`lbfgs_batched`) on ``E(θ)/n``. The optimiser's
        iterate is a float64 **host** vector (a documented host step); objective and gradient are
        evaluated on the input's namespace/device/dtype and copied back each call.
        ``"adam"``: minibatch Adam on ``E(θ)/n`` with the unbiased estimate
        ``(1/|B|) Σ_{μ∈B} ℓ_μ + ½θᵀΛθ/n``, entirely on the device.
    seed : None, int, SeedSequence or key
        Initialisation (when ``init`` is None) and minibatch order.
    init : sequence of arrays, optional
        Starting weights (default :func:`init_weights`: ``N(0, 1/d_in)`` weights, zero biases).
        Never modified. With ``restarts > 1`` it is the first start.
    prior_precision : None, float or per-layer sequence
        Overrides the net's prior precisions.
    delta_y, sigma_noise : float, optional
        Gaussian noise variance (or standard deviation); default ``net.delta_y``. Ignored with
        ``learn_noise``.
    learn_noise : bool
        Gaussian likelihood, ``"lbfgs"`` only: fit the noise variance jointly — the MAP of
        ``(θ, log Δ_y)`` under ``τ = 1/Δ_y ~ Gamma(noise_prior)`` (see :func:`batched_objective`;
        the noise is profiled out in closed form, ``Δ̂_y = (SSE/2 + b)/(nC/2 + a)``). The learned
        ``Δ_y`` is ``info["delta_y"]``.
    noise_prior : (float, float)
        ``(shape a, rate b)`` of the Gamma prior on the noise precision; default ``(1, 1e-2)``,
        the hyperprior of :class:`blockbayes.gibbs.Hyperprior`.
    restarts : int
        Number of L-BFGS runs from different random starts (fitted as one batched problem); the
        one with the lowest final objective is returned.
    max_iter : int
        L-BFGS iterations (per restart).
    tol : float
        L-BFGS stops when the largest gradient component of ``E/n`` is at most ``tol``.
    ftol : float, optional
        Also stop when an iteration lowers ``E/n`` by at most ``ftol`` relative to ``max(|E/n|, 1)``;
        default ``tol·1e-3``; ``0`` stops on the gradient tolerance (or ``max_iter``) only.
    history : int
        L-BFGS memory (pairs kept).
    num_epochs, batch_size, lr, betas, eps :
        Adam settings (``lr`` for the ``E/n`` scale).
    chunk_size : int, optional
        Data points per chunk of the full-batch passes (memory bound).
    progress : bool or None
        tqdm progress bar (default on; ``None``: only on a terminal).
    return_info : bool
        Also return a dict (``objective``, ``grad_norm`` (largest gradient component of ``E``),
        ``num_iter``, ``num_fev``, ``converged`` (gradient tolerance reached), ``message``, ``history``,
        ``delta_y`` (the noise variance of the fit), and with restarts ``restart_objectives``,
        ``restart_iters``, ``best_restart``).
    device : None, "cpu", "cuda" or "cuda:N"
        Where to compute (``X``, ``y`` and ``init`` are moved there once; ``None`` keeps
        ``X``'s device); the weights are returned there.
    dtype : None, "float32" or "float64"
        Compute dtype (default ``X``'s); the weights have it.
    noise : None, float or {"fixed", "joint", "holdout", "train"}
        How the Gaussian noise variance ``Δ_y`` is chosen (without test data). ``None``: as
        ``delta_y``/``learn_noise`` say. A float: that ``Δ_y``. ``"fixed"``: ``delta_y`` (or
        ``net.delta_y``). ``"joint"``: ``learn_noise=True``. ``"holdout"``: fit on a random
        ``1 − holdout`` part of the data (rows ``perm[n_val:]`` of ``perm =
        default_rng(split_seed).permutation(n)``, ``n_val = max(1, round(holdout·n))``), take
        ``Δ_y = max(mean((F(x; θ₀) − y)²), 1e-6)`` over the held-out rows, and refit on all points
        from ``θ₀`` with that ``Δ_y``. ``"train"``: ``Δ_y = max(mean((F(x; θ*) − y)²), 1e-6)`` on the
        training points (no refit). Anything but ``None`` needs the gaussian likelihood; the chosen
        ``Δ_y`` is ``info["delta_y"]``, and ``"holdout"`` adds ``info["holdout_fit"]`` (``num_iter``,
        ``converged`` and ``num_val`` of the first fit).
    holdout : float in (0, 1)
        Held-out fraction for ``noise="holdout"``.
    split_seed : None, int or SeedSequence
        Seed of the holdout split (NumPy ``default_rng``); ``None``: fresh entropy.
    smoothing : None, float or sequence of floats
        ``"lbfgs"`` only: a **smoothing continuation** before the fit. For each ``β`` of the schedule
        (finite, ``> 0``, strictly increasing; e.g. ``(8, 32, 128, 512)``) L-BFGS minimises the
        objective with every hidden (leaky) ReLU replaced by ``s_β(a) = log(1 + e^{βa})/β``
        (:func:`batched_objective` with ``smoothing=β``), started where the previous stage ended
        (fresh curvature pairs, ``ftol = 0``); the fit of the objective itself then starts where the
        last stage ended (every restart goes through the stages). ``None``: no continuation (the
        fit exactly as without the option). Only ``"relu"`` and ``"leaky_relu"`` nets.
    smoothing_iter : int
        L-BFGS iterations per stage (at most).
    smoothing_tol : float
        A stage stops when ``max|∇E_β/n| ≤ smoothing_tol`` (or on no decrease).

    Returns
    -------
    params : tuple of arrays
        Per layer ``(d_{l+1}, d_l + 1)``, bias last, in ``X``'s namespace/device/dtype.
    info : dict
        Only with ``return_info``; with ``smoothing`` also ``smoothing_stages`` (per stage ``beta``,
        ``num_iter``, ``num_fev``, ``message``, ``objective_smoothed`` (``E_β``) and ``objective`` (the
        unsmoothed ``E``) at its end) and ``smoothing_iters`` (their iterations in all); with
        restarts ``restart_smoothing_iters`` (per restart, per stage). ``num_iter`` counts the final
        fit's iterations only.
    """
    lik = C.resolve_likelihood(net, likelihood)
    X, Y = prepare(net, X, y, device=device, dtype=dtype, task="standard", likelihood=lik)
    if noise is not None:
        mode, fixed = _noise_mode(noise, lik, learn_noise)
        kw = dict(likelihood=lik, method=method, seed=seed, init=init, prior_precision=prior_precision,
                  noise_prior=noise_prior, restarts=restarts, max_iter=max_iter, tol=tol, ftol=ftol, history=history,
                  num_epochs=num_epochs, batch_size=batch_size, lr=lr, betas=betas, eps=eps, chunk_size=chunk_size,
                  progress=progress, smoothing=smoothing, smoothing_iter=smoothing_iter, smoothing_tol=smoothing_tol)
        if mode == "fixed":
            dy = fixed if fixed is not None else delta_y
            return map_fit(net, X, Y, delta_y=dy, sigma_noise=None if fixed is not None else sigma_noise,
                           return_info=return_info, **kw)
        if mode == "joint":
            return map_fit(net, X, Y, learn_noise=True, return_info=return_info, **kw)
        W, info = _map_fit_selected_noise(net, X, Y, mode, kw, delta_y=delta_y, sigma_noise=sigma_noise,
                                          holdout=holdout, split_seed=split_seed)
        return (W, info) if return_info else W
    lam_w, lam_b = C.resolve_prior(net, prior_precision)
    dy = C.resolve_noise(net, lik, delta_y, sigma_noise)
    if method not in ("lbfgs", "adam"):
        raise ValueError(f"method must be 'lbfgs' or 'adam', got {method!r}")
    restarts = C.positive_int("restarts", restarts)
    npr = None
    if learn_noise:
        if lik != "gaussian":
            raise ValueError("learn_noise needs the gaussian likelihood")
        if method != "lbfgs":
            raise ValueError("learn_noise needs method='lbfgs'")
        npr = _check_noise_prior(noise_prior)
    if restarts > 1 and method != "lbfgs":
        raise ValueError("restarts need method='lbfgs'")
    smoothing = check_smoothing(smoothing, net)
    if smoothing is not None:
        if method != "lbfgs":
            raise ValueError("smoothing needs method='lbfgs'")
        smoothing_iter = C.positive_int("smoothing_iter", smoothing_iter)
        smoothing_tol = C.positive("smoothing_tol", smoothing_tol)
    k_init, k_data = bbr.split(bbr.key(seed), 2)
    if init is None:
        W0 = C.init_weights(net, seed=k_init, like=X)
    else:
        W0 = C.check_weights(net, init, X, name="init", move=device is not None or dtype is not None)
    n = X.shape[0]
    if method == "lbfgs":
        tol = C.positive("tol", tol)
        ftol = tol * 1e-3 if ftol is None else float(ftol)
        if not (ftol >= 0 and math.isfinite(ftol)):
            raise ValueError(f"ftol must be >= 0, got {ftol!r}")
        inits = _restart_inits(net, X, k_data, restarts, first=W0)
        W, res = _fit_lbfgs_batch(net, inits, X, Y, lik=lik, lam_w=lam_w, lam_b=lam_b, dy=dy, noise_prior=npr,
                                  max_iter=C.positive_int("max_iter", max_iter), tol=tol, ftol=ftol,
                                  history=C.positive_int("history", history), chunk_size=chunk_size,
                                  progress=progress, smoothing=smoothing, smoothing_iter=smoothing_iter,
                                  smoothing_tol=smoothing_tol)
        best = int(np.argmin(np.where(np.isfinite(res["f"]), res["f"], np.inf)))
        Wb = tuple(w[best, ...] for w in W)
        if not return_info:
            return Wb
        info = _member_info(res, best, n)
        if restarts > 1:
            info.update(restart_objectives=[float(v) * n for v in res["f"]],
                        restart_iters=[int(v) for v in res["num_iter"]], best_restart=best)
            if smoothing is not None:
                info["restart_smoothing_iters"] = [[int(s["num_iter"][r]) for s in res["smoothing"]]
                                                   for r in range(restarts)]
        return Wb, info
    kw = dict(likelihood=lik, lam_w=lam_w, lam_b=lam_b, delta_y=dy)
    return _adam(net, W0, X, Y, kw, n, key=k_data, num_epochs=C.positive_int("num_epochs", num_epochs),
                 batch_size=C.positive_int("batch_size", batch_size), lr=C.positive("lr", lr),
                 betas=betas, eps=C.positive("eps", eps), progress=progress, return_info=return_info)


_NOISE_MODES = ("fixed", "joint", "holdout", "train")


def _noise_mode(noise, lik, learn_noise):
    """``(mode, fixed Δ_y or None)`` of :func:`map_fit`'s ``noise`` option (checked)."""
    if lik != "gaussian":
        raise ValueError(f"noise={noise!r} needs the gaussian likelihood (got {lik!r})")
    if learn_noise:
        raise ValueError("give noise=... or learn_noise=True, not both")
    if isinstance(noise, str):
        if noise not in _NOISE_MODES:
            raise ValueError(f"noise must be a positive float or one of {_NOISE_MODES}, got {noise!r}")
        return noise, None
    return "fixed", C.positive("noise", noise)


def _host_mse(net, W, X, Y) -> float:
    """``max(mean((F(X; W) − Y)²), 1e-6)``, computed on the host in float64."""
    F = np.asarray(to_numpy(forward(net, tuple(W), X)), dtype=np.float64).reshape(-1)
    T = np.asarray(to_numpy(Y), dtype=np.float64).reshape(-1)
    return float(max(np.mean((F - T) ** 2), 1e-6))


def _map_fit_selected_noise(net, X, Y, mode, kw, *, delta_y, sigma_noise, holdout, split_seed):
    """``noise="holdout"`` / ``"train"`` of :func:`map_fit` (``X``, ``Y`` already prepared)."""
    if mode == "train":
        W, info = map_fit(net, X, Y, delta_y=delta_y, sigma_noise=sigma_noise, return_info=True, **kw)
        dy = _host_mse(net, W, X, Y)
        return W, dict(info, delta_y=dy)
    frac = float(holdout)
    if not 0.0 < frac < 1.0:
        raise ValueError(f"holdout must lie in (0, 1), got {holdout!r}")
    n = int(X.shape[0])
    n_val = max(1, int(round(frac * n)))
    if n - n_val < 2:
        raise ValueError(f"noise='holdout' needs more training points than {n}")
    perm = np.random.default_rng(split_seed).permutation(n)
    xp, dev = namespace(X), device_of(X)
    tr, va = xp.asarray(perm[n_val:], device=dev), xp.asarray(perm[:n_val], device=dev)
    W0, i0 = map_fit(net, xp.take(X, tr, axis=0), xp.take(Y, tr, axis=0), delta_y=delta_y, sigma_noise=sigma_noise,
                     return_info=True, **kw)
    dy = _host_mse(net, W0, xp.take(X, va, axis=0), xp.take(Y, va, axis=0))
    W, info = map_fit(net, X, Y, delta_y=dy, return_info=True, **dict(kw, init=W0))
    info["holdout_fit"] = dict(num_iter=int(i0.get("num_iter", 0)), converged=bool(i0.get("converged", True)),
                               num_val=n_val, delta_y=dy)
    return W, info


def _member_info(res, i, n) -> dict:
    out = dict(objective=float(res["f"][i]) * n, grad_norm=float(np.max(np.abs(res["g"][i]))) * n,
               num_iter=int(res["num_iter"][i]), num_fev=int(res["num_fev"][i]),
               converged=bool(res["status"][i] == 0), message=res["message"][i],
               delta_y=float(res["delta_y"][i]), history=[v * n for v in res["history"][i]])
    if "smoothing" in res:
        out["smoothing_stages"] = _stage_info(res["smoothing"], i, n)
        out["smoothing_iters"] = sum(s["num_iter"] for s in out["smoothing_stages"])
    return out


@one_blas_thread
def map_ensemble(net: MLP, X, y, *, members: int = 5, restarts: int = 1, seed=None, likelihood=None,
                 prior_precision=None, delta_y=None, sigma_noise=None, learn_noise: bool = False,
                 noise_prior=(1.0, 1e-2), max_iter: int = 2000, tol: float = 1e-7, ftol=None, history: int = 10,
                 chunk_size=None, progress=True, return_info: bool = False, device=None, dtype=None, noise=None,
                 anchored: bool = False, target_noise=None, smoothing=None, smoothing_iter: int = 5000,
                 smoothing_tol: float = 1e-6):
    """``members`` independent MAP fits (a deep ensemble), all fitted as **one batched problem**.

    Member ``k`` is exactly ``map_fit(net, X, y, seed=seeds[k], restarts=restarts, ...)`` with
    ``seeds = split(key(seed), members)`` (the same starts, the same L-BFGS iterates: the batched
    optimiser keeps each member's state separate and only shares the objective evaluations, one
    batched matmul per layer for all ``members × restarts`` weight sets).

    **Anchored ensemble** (randomize-then-optimize; Pearce et al. 2020, Osband et al. 2018): with
    ``anchored=True`` and/or ``target_noise`` member ``k`` instead splits its seed into
    ``(k_anchor, k_target, k_data) = split(key(seeds[k]), 3)``, draws an anchor
    ``θ₀ᵏ ~ N(0, Λ⁻¹)`` (:func:`anchor_draw` with ``k_anchor``; ``anchored=False``: ``θ₀ᵏ = 0``)
    and perturbed targets ``yᵏ = y + εᵏ``, ``εᵏ ~ N(0, target_noise·I)`` (``normal(k_target, (n, C))``;
    ``target_noise=None``: ``εᵏ = 0``), and minimises

    .. math:: E_k(\\theta) = \\sum_\\mu \\ell(y^k_\\mu, F_\\mu(\\theta))
              + \\tfrac12 (\\theta - \\theta_0^k)^\\top\\Lambda(\\theta - \\theta_0^k)

    (``ℓ`` Gaussian at the fixed ``Δ_y``, or the profiled joint noise with ``noise="joint"``, as in
    :func:`batched_objective`), starting from ``θ₀ᵏ`` (further restarts from ``k_data``, as
    ``_restart_inits``). For a model linear in ``θ`` with fixed ``Δ_y = target_noise`` the minimiser is
    an exact draw from the posterior ``N(A⁻¹Jᵀy/Δ_y, A⁻¹)``, ``A = JᵀJ/Δ_y + Λ``: it is
    ``A⁻¹(Jᵀ(y + ε)/Δ_y + Λθ₀)``, Gaussian with that mean and covariance
    ``A⁻¹(JᵀJ/Δ_y + Λ)A⁻¹ = A⁻¹``. For the MLP it is an approximation.

    Parameters are those of :func:`map_fit` (L-BFGS only; ``device=``/``dtype=`` included);
    ``noise`` takes ``None``, a float, ``"fixed"`` or ``"joint"`` (the holdout and training-MSE
    choices refit per member: :func:`blockbayes.point_fit.ensemble_posterior`).
    anchored : bool
        Centre each member's prior at its own draw ``θ₀ᵏ ~ N(0, Λ⁻¹)`` (and start there).
    target_noise : None or float
        Variance of the members' target perturbations (Gaussian likelihood only; in the units of
        ``y``); ``None``: the targets are not perturbed.
    smoothing, smoothing_iter, smoothing_tol :
        The smoothing continuation of :func:`map_fit`, run for all members in the same batched
        problem (each member's stages are its own; the batch only shares the evaluations).

    Returns
    -------
    params : tuple of arrays
        Per layer ``(members, d_{l+1}, d_l + 1)``.
    info : dict
        Only with ``return_info``: ``members`` (a list of the per-member dicts of :func:`map_fit`)
        and ``delta_y`` (array ``(members,)``); anchored ensembles add ``anchors`` (per layer
        ``(members, d_{l+1}, d_l + 1)``).
    """
    lik = C.resolve_likelihood(net, likelihood)
    X, Y = prepare(net, X, y, device=device, dtype=dtype, task="standard", likelihood=lik)
    if noise is not None:
        mode, fixed = _noise_mode(noise, lik, learn_noise)
        if mode not in ("fixed", "joint"):
            raise ValueError(f"map_ensemble takes noise=None, a float, 'fixed' or 'joint', got {noise!r} "
                             "(per-member holdout fits: blockbayes.point_fit.ensemble_posterior)")
        learn_noise = mode == "joint"
        if fixed is not None:
            delta_y, sigma_noise = fixed, None
    lam_w, lam_b = C.resolve_prior(net, prior_precision)
    dy = C.resolve_noise(net, lik, delta_y, sigma_noise)
    members = C.positive_int("members", members)
    restarts = C.positive_int("restarts", restarts)
    npr = None
    if learn_noise:
        if lik != "gaussian":
            raise ValueError("learn_noise needs the gaussian likelihood")
        npr = _check_noise_prior(noise_prior)
    tol = C.positive("tol", tol)
    ftol = tol * 1e-3 if ftol is None else float(ftol)
    if not isinstance(anchored, bool):
        raise TypeError(f"anchored must be a bool, got {type(anchored).__name__}")
    if target_noise is not None:
        if lik != "gaussian":
            raise ValueError(f"target_noise needs the gaussian likelihood (got {lik!r})")
        target_noise = C.positive("target_noise", target_noise)
    smoothing = check_smoothing(smoothing, net)
    if smoothing is not None:
        smoothing_iter = C.positive_int("smoothing_iter", smoothing_iter)
        smoothing_tol = C.positive("smoothing_tol", smoothing_tol)
    xp = namespace(X)
    parts = []
    randomized = anchored or target_noise is not None
    anchors, targets = [], []
    for k in member_keys(seed, members):
        if randomized:
            k_anchor, k_target, k_data = bbr.split(bbr.key(k), 3)
            A0, Yk = _anchored_member(net, X, Y, k_anchor, k_target, anchored=anchored, target_noise=target_noise,
                                      prior_precision=prior_precision)
            anchors.append(tuple(xp.stack([a] * restarts) for a in A0))
            if Yk is not None:
                targets.append(xp.stack([Yk] * restarts))
            parts.append(_restart_inits(net, X, k_data, restarts, first=A0))
            continue
        k_init, k_data = bbr.split(bbr.key(k), 2)
        W0 = C.init_weights(net, seed=k_init, like=X)
        parts.append(_restart_inits(net, X, k_data, restarts, first=W0))
    inits = tuple(xp.concat([p[l] for p in parts], axis=0) for l in range(net.num_layers))
    extra = {}
    if randomized:
        extra["prior_mean"] = tuple(xp.concat([a[l] for a in anchors], axis=0) for l in range(net.num_layers))
        if targets:
            extra["member_targets"] = xp.concat(targets, axis=0)
    W, res = _fit_lbfgs_batch(net, inits, X, Y, lik=lik, lam_w=lam_w, lam_b=lam_b, dy=dy, noise_prior=npr,
                              max_iter=C.positive_int("max_iter", max_iter), tol=tol, ftol=ftol,
                              history=C.positive_int("history", history), chunk_size=chunk_size,
                              progress=progress, desc=f"MAP ensemble ({members}x{restarts}, L-BFGS)",
                              smoothing=smoothing, smoothing_iter=smoothing_iter, smoothing_tol=smoothing_tol, **extra)
    f = np.where(np.isfinite(res["f"]), res["f"], np.inf).reshape(members, restarts)
    best = np.arange(members) * restarts + np.argmin(f, axis=1)
    Wm = tuple(xp.take(w, xp.asarray(best, device=device_of(X)), axis=0) for w in W)
    if not return_info:
        return Wm
    n = X.shape[0]
    infos = []
    for k, b in enumerate(best):
        i = _member_info(res, int(b), n)
        if restarts > 1:
            sl = slice(k * restarts, (k + 1) * restarts)
            i.update(restart_objectives=[float(v) * n for v in res["f"][sl]],
                     restart_iters=[int(v) for v in res["num_iter"][sl]], best_restart=int(b - k * restarts))
            if smoothing is not None:
                i["restart_smoothing_iters"] = [[int(s["num_iter"][r]) for s in res["smoothing"]]
                                                for r in range(k * restarts, (k + 1) * restarts)]
        infos.append(i)
    out = dict(members=infos, delta_y=np.array([i["delta_y"] for i in infos]))
    if randomized:
        out["anchors"] = tuple(xp.stack([a[l][0] for a in anchors]) for l in range(net.num_layers))
    return Wm, out


def _anchored_member(net, X, Y, k_anchor, k_target, *, anchored, target_noise, prior_precision):
    """An anchored member's prior mean ``θ₀`` (:func:`anchor_draw`, or zeros when not ``anchored``) and
    its targets ``Y + ε``, ``ε ~ N(0, target_noise)`` (``None`` without ``target_noise``)."""
    xp = namespace(X)
    if anchored:
        A0 = anchor_draw(net, k_anchor, like=X, prior_precision=prior_precision)
    else:
        A0 = tuple(xp.zeros((d, k), dtype=X.dtype, device=device_of(X)) for d, k in net.weight_shapes())
    Yk = None
    if target_noise is not None:
        eps = xp.asarray(bbr.normal(k_target, tuple(Y.shape), like=X), dtype=X.dtype, device=device_of(X))
        Yk = Y + math.sqrt(target_noise) * eps
    return A0, Yk


def member_keys(seed, members: int) -> list:
    """The seeds of the ensemble's members: ``split(key(seed), members)`` (see :func:`map_ensemble`)."""
    return list(bbr.split(bbr.key(seed), members))


class AdamState(NamedTuple):
    """State of the minibatch Adam MAP fit: weights ``W``, moments ``m1``, ``m2`` (tuples of per-layer
    arrays), ``t`` (updates done) and ``loss`` (the last minibatch's scaled objective, 0-d)."""

    W: tuple
    m1: tuple
    m2: tuple
    t: int
    loss: Any


def _adam(net, W0, X, Y, kw, n, *, key, num_epochs, batch_size, lr, betas, eps, progress, return_info):
    """Minibatch Adam on ``E/n``, one epoch a step of :func:`blockbayes.driver.run_kernel` (epoch
    ``ep`` permutes the data with ``split(key, num_epochs)[ep]``; the weights are checked for
    non-finite values after every epoch)."""
    xp = namespace(X)
    b1, b2 = (float(b) for b in betas)
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
    bs = min(batch_size, n)
    keys = bbr.split(key, num_epochs)

    def epoch(_, st, ep):
        W, m1, m2, t = st.W, list(st.m1), list(st.m2), st.t
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
        return AdamState(W, tuple(m1), tuple(m2), t, ep_loss), None

    st = AdamState(tuple(W0), tuple(xp.zeros_like(w) for w in W0), tuple(xp.zeros_like(w) for w in W0), 0, None)
    out = run_kernel(None, st, epoch, num_steps=num_epochs, collect=lambda s, info, ep: {"loss": s.loss},
                     check=lambda s, info: nonfinite_fields(xp, s, ("W",)), check_every=1,
                     check_what="Adam weights", check_hint="Adam diverged: lower lr",
                     progress=_isatty() if progress is None else bool(progress),
                     desc="MAP (Adam)", unit="epoch", postfix=lambda s, info: {"E": f"{float(to_numpy(s.loss)):.4g}"},
                     postfix_every=1)
    W = out.state.W
    if not return_info:
        return W
    hist = [float(v) for v in to_numpy(out.traces["loss"])] if out.num_kept else []
    E, g = objective(net, W, X, Y, grad=True, **kw)
    info = dict(objective=float(to_numpy(E)), grad_norm=max(float(to_numpy(xp.max(xp.abs(x)))) for x in g),
                num_iter=out.state.t, converged=not out.interrupted,
                message="interrupted (Ctrl-C)" if out.interrupted else "completed all epochs", history=hist)
    return W, info
