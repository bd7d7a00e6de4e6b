"""The pure block-Gibbs kernel: states, :func:`init`, :func:`step`, :func:`log_joint`.

One sweep (:func:`step`) is a systematic scan from the output to the input; every block is drawn
from its exact conditional (:mod:`blockbayes.gibbs.conditionals`). The conditionals are looked up
in *this* module's namespace at call time, so the validation suite patches its broken twins (and
:data:`LATENT_PASS`) here: ``blockbayes.gibbs.kernel``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

from .. import kernels
from .._backend import device_of, fast_namespace, namespace
from .._backend import linalg
from .._backend import random as bbr
from ..blocks import F64_BLOCK_ROWS, augmented_gram64, diag_embed, prior_diag
from ..inputs import num_classes
from ..model import MLP, activate, affine, chain_weights
from .conditionals import (initial_latent, output_targets, sample_latent, sample_post, sample_pre,
                           sample_precision, sample_rows)

__all__ = ["GibbsState", "GibbsInfo", "GibbsCache", "Hyperprior", "init", "step", "precompute",
           "log_joint", "residual_sums", "log_joint_from_sums", "first_nonfinite", "NonFiniteStateError",
           "LATENT_PASS", "data_gram"]


#: How :func:`step` draws each hidden layer's ``X^l, Z^l``: ``"fused"`` (default) in one pass of
#: :func:`blockbayes.kernels.latent_pass`; ``"separate"`` by :func:`sample_post` then
#: :func:`sample_pre` (the module attributes, looked up at call time: the validation suite patches
#: its broken twins and their controls in there and switches this to ``"separate"``). Both exact.
LATENT_PASS = "fused"


# one error type for every family's non-finite state (raised by the run driver's checks)
from ..driver import NonFiniteStateError  # noqa: E402


class GibbsState(NamedTuple):
    """State of ``C`` parallel chains (all arrays on one device, in the data's dtype).

    Attributes
    ----------
    weights : tuple of arrays
        Per layer ``l = 1..L``, shape ``(C, d_{l+1}, d_l + 1)``, bias in the last column.
    pre : tuple of arrays
        Pre-activations ``Z^l`` of the hidden layers ``l = 2..L``, shape ``(C, n, d_l)``.
    post : tuple of arrays
        Post-activations ``X^l`` of the hidden layers, shape ``(C, n, d_l)``.
    lam_w, lam_b : arrays, shape (C, L)
        Prior precisions of weights and biases per chain and layer (fixed unless learned).
    delta_y : array, shape (C,)
        Output noise variance ``Δ_y`` per chain (fixed unless learned).
    latent : array of shape (C, n, d_out), or None
        Probit likelihoods: the latent utilities ``U`` (MATH.md §B); ``None`` otherwise.
    """

    weights: tuple
    pre: tuple
    post: tuple
    lam_w: Any
    lam_b: Any
    delta_y: Any
    latent: Any = None


class GibbsInfo(NamedTuple):
    """Per-sweep diagnostics (never read by the next step).

    Attributes
    ----------
    log_joint : array of shape (C,) or None
        ``log p(W̃, Z, X, y | X^1, λ, Δ)`` of (A.0) after the sweep (``None`` unless requested).
    output_sse : array, shape (C,)
        ``‖y − X̃^L W̃^{L⊤}‖²`` with the sweep's post-activations and the *previous* output
        weights (the residual the ``Δ_y`` update uses; computed when ``learn_noise``), else ``None``.
    log_joint_partial : array of shape (C,) or None
        Nets with hidden layers: ``log_joint`` of the new state *except* the first layer's data
        term ``−‖Z^2 − X̃^1 W̃^{1⊤}‖²/(2Δ_Z)``, assembled from sums the fused latent passes
        return (no extra pass over the data).
    first_term_prev : array of shape (C,) or None
        That first-layer data term of the *input* state (the first hidden layer's pass reads
        ``Z^2`` and ``X̃^1 W̃^{1⊤}`` before redrawing them), so
        ``log_joint(state_t) = info_t.log_joint_partial + info_{t+1}.first_term_prev``
        exactly (:func:`run` stores the log joint this way, one sweep late).
    """

    log_joint: Any
    output_sse: Any
    log_joint_partial: Any = None
    first_term_prev: Any = None


class Hyperprior(NamedTuple):
    """Gamma(shape, rate) hyperpriors of the conjugate precision updates (MATH.md §A.5).

    Defaults: ``Gamma(1, 1e-2)`` for the output-noise precision ``1/Δ_y`` and for each prior
    precision ``λ_W^l, λ_b^l`` — proper, mean 100, and weak against any data set of more than a
    handful of points (the posterior shapes grow as ``n d_out / 2`` and ``d_l d_{l+1} / 2``).
    """

    noise_shape: float = 1.0
    noise_rate: float = 1e-2
    prior_shape: float = 1.0
    prior_rate: float = 1e-2


class GibbsCache(NamedTuple):
    """Per-data-set constants of a sweep (see :func:`precompute`).

    ``gram0``: the augmented Gram ``X̃^{1⊤} X̃^1``, shape ``(d_1 + 1, d_1 + 1)``;
    ``chol0``: the Cholesky factor of ``Δ_Z^2 Λ_1 + G_1`` when it is fixed for all sweeps (fixed
    hyperparameters, at least one hidden layer), else ``None``: shape ``(d_1 + 1, d_1 + 1)``
    (shared by the chains) or ``(C, d_1 + 1, d_1 + 1)`` (per chain, with a ``delta_scale``).
    Both are float64 whatever the data's dtype (:func:`data_gram`).
    """

    gram0: Any
    chol0: Any


def precompute(net: MLP, X, *, learn_prior=False, dtype=None, delta_scale=None, gram=None) -> GibbsCache:
    """Constants of the sweep for data ``X`` (the input Gram and, if fixed, its Cholesky).

    ``delta_scale``: the per-chain factors on the hidden ``Δ`` that :func:`step` will be given
    (shape ``(C,)``); the Cholesky factor is then one per chain, of ``G_1 + t_c Δ_Z^2 Λ_1``.
    ``gram``: ``X``'s augmented Gram ``X̃^⊤X̃`` from an earlier call on the *same* ``X`` (it
    depends on the data alone, not on ``Δ`` or ``λ``): reused instead of recomputed, so a
    schedule that changes ``Δ`` re-factors ``G_1 + Δ_Z Λ_1`` (``O(d_1³)``) without redoing the
    ``O(n d_1²)`` product.
    """
    xp = namespace(X)
    if gram is None:
        G0 = data_gram(xp, X)
    else:
        d1 = X.shape[-1] + 1
        if tuple(gram.shape) != (d1, d1):
            raise ValueError(f"gram must be X's augmented Gram, shape {(d1, d1)}; got {tuple(gram.shape)}")
        G0 = xp.astype(gram, xp.float64, copy=False)   # sampler.run passes the float64 cache.gram0
    chol0 = None
    if net.num_layers > 1 and not learn_prior:
        lam = net.prior_precision_vector(0, xp, dtype=xp.float64, device=device_of(X))
        if delta_scale is None:
            chol0 = linalg.cholesky(G0 + diag_embed(xp, net.delta_z[0] * lam))
        else:
            t = xp.astype(delta_scale, xp.float64)
            chol0 = linalg.cholesky(G0[None, ...] + diag_embed(xp, (net.delta_z[0] * t)[:, None] * lam[None, :]))
    return GibbsCache(gram0=G0, chol0=chol0)


def data_gram(xp, X, *, block_rows: int = F64_BLOCK_ROWS):
    """The input layer's augmented Gram ``X̃^⊤X̃`` in float64, shape ``(d + 1, d + 1)``.

    Float64 data: ``augmented_gram(X)`` as it is. Float32 (or lower) data: the products of
    ``block_rows``-row blocks cast to float64, summed. Why: the first layer's row conditional
    factors ``G + Δ_Z Λ`` once per run and reuses it every sweep, and on collinear inputs its
    condition number reaches ``‖G‖ / (Δ_Z λ)`` — about 10⁷ on Naval (n = 10741, eigenvalues of
    ``G`` from 0.13 to 1.5·10⁵, ``Δ_Z λ = 0.016``). A float32 Gram and factor then carry a relative
    error of order ``κ ε₃₂`` ≈ 0.06: the drawn rows' covariance was up to 30 % off along the
    collinear directions, and the error in the factor leaked the mean's large components into
    them every sweep until the weights diverged (Naval split 18 in float32: NonFiniteStateError at
    sweep 96; float64 ran it). The hidden layers' inputs carry their own
    noise ``Δ_X`` per point, but a small ``Δ`` above them pins some directions just as hard, so
    :func:`~blockbayes.gibbs.conditionals.sample_rows` accumulates every layer's Gram in float64
    too (design note 52). Cost here: one ``O(n d²)`` float64 pass per run.
    """
    return augmented_gram64(xp, X, block_rows=block_rows)


def init(rng_key, net: MLP, X, y, *, num_chains=1, init="prior", noisy_aux=True) -> GibbsState:
    """Initial state of ``num_chains`` chains.

    Parameters
    ----------
    rng_key : key
    net : MLP
    X : array, shape (n, d_in)
    y : array, shape (n, d_out)
    num_chains : int
    init : {"prior", "zero"}, sequence of arrays, mapping or GibbsState
        ``"prior"``: weights drawn from the prior, auxiliaries from the noisy forward pass
        (``Z = X̃W̃^⊤ + √Δ_Z ξ``, ``X = f(Z) + √Δ_X η``). ``"zero"``: all weights zero and
        ``Z = X = 0`` (the zero-initialised chain of Piccioli et al.). A sequence of per-layer
        weights (shape ``(d_out, d_in + 1)`` or ``(C, d_out, d_in + 1)``): those weights, with
        auxiliaries from the forward pass (noisy if ``noisy_aux``). A mapping with keys
        ``"weights"`` and optionally ``"pre"``, ``"post"`` (per hidden layer, ``(n, d)`` or
        ``(C, n, d)``): a fully given state, e.g. a teacher with its own auxiliaries (the
        *informed* start of the planted-teacher experiments). A :class:`GibbsState` (e.g.
        ``result.final_state``) continues those chains (hyperparameters restart from ``net``).
    noisy_aux : bool
        Whether auxiliaries derived from weights include the model's noise.
    """
    xp = namespace(X, y)
    if not isinstance(num_chains, int) or num_chains < 1:
        raise ValueError(f"num_chains must be a positive int, got {num_chains!r}")
    C, n, L = num_chains, X.shape[0], net.num_layers
    dev, dt = device_of(X), X.dtype
    k_w, k_aux = bbr.split(rng_key, 2)
    given_pre = given_post = None
    if isinstance(init, str):
        if init == "zero":
            weights = tuple(xp.zeros((C,) + s, dtype=dt, device=dev) for s in net.weight_shapes())
        elif init == "prior":
            keys = bbr.split(k_w, L)
            ws = []
            for l, s in enumerate(net.weight_shapes()):
                lam = net.prior_precision_vector(l, xp, dtype=dt, device=dev)
                ws.append(bbr.normal(keys[l], (C,) + s, like=X) / xp.sqrt(lam))
            weights = tuple(ws)
        else:
            raise ValueError(f"init must be 'prior', 'zero', a sequence of weights or a mapping; got {init!r}")
    elif isinstance(init, GibbsState):
        weights = chain_weights(net, init.weights, C, X)
        given_pre, given_post = init.pre, init.post
    elif isinstance(init, Mapping):
        if "weights" not in init:
            raise ValueError("an init mapping needs a 'weights' entry")
        weights = chain_weights(net, init["weights"], C, X)
        given_pre, given_post = init.get("pre"), init.get("post")
    else:
        weights = chain_weights(net, init, C, X)
    pre, post = [], []
    H = X
    keys = bbr.split(k_aux, 2 * max(L - 1, 1))
    for l in range(L - 1):
        d = net.widths[l + 1]
        if given_pre is not None and given_post is not None:
            Zl = _as_chain_aux(xp, given_pre[l], C, n, d, X, f"pre[{l}]")
            Xl = _as_chain_aux(xp, given_post[l], C, n, d, X, f"post[{l}]")
        elif isinstance(init, str) and init == "zero":
            Zl = xp.zeros((C, n, d), dtype=dt, device=dev)
            Xl = xp.zeros((C, n, d), dtype=dt, device=dev)
        else:
            Zl = affine(H, weights[l])
            if noisy_aux:
                Zl = Zl + math.sqrt(net.delta_z[l]) * bbr.normal(keys[2 * l], Zl.shape, like=X)
            Xl = activate(xp, Zl, net.activation, net.slope)
            if noisy_aux:
                Xl = Xl + math.sqrt(net.delta_x[l]) * bbr.normal(keys[2 * l + 1], Xl.shape, like=X)
        pre.append(Zl)
        post.append(Xl)
        H = Xl
    lam_w = xp.asarray([[float(v) for v in net.lam_w]] * C, dtype=dt, device=dev)
    lam_b = xp.asarray([[float(v) for v in net.lam_b]] * C, dtype=dt, device=dev)
    delta_y = xp.full((C,), net.delta_y, dtype=dt, device=dev)
    latent = None
    if net.likelihood in ("probit", "multinomial_probit"):
        given_latent = init.latent if isinstance(init, GibbsState) else (
            init.get("latent") if isinstance(init, Mapping) else None)
        shape = (C, n, net.d_out)
        if given_latent is not None:
            latent = _as_chain_aux(xp, given_latent, C, n, net.d_out, X, "latent")
        else:
            latent = initial_latent(xp, y, num_classes(net), net.likelihood, shape, X)
    return GibbsState(weights, tuple(pre), tuple(post), lam_w, lam_b, delta_y, latent)


def _as_chain_aux(xp, A, C, n, d, like, name):
    A = xp.asarray(A, dtype=like.dtype, device=device_of(like)) if namespace(A) is not xp else xp.astype(A, like.dtype)
    if tuple(A.shape) == (n, d):
        A = xp.broadcast_to(A[None, ...], (C, n, d))
    elif tuple(A.shape) != (C, n, d):
        raise ValueError(f"init {name} must have shape {(n, d)} or {(C, n, d)}, got {tuple(A.shape)}")
    return xp.asarray(A, copy=True)


def step(rng_key, state: GibbsState, net: MLP, X, y, *, learn_noise=False, learn_prior=False,
         hyperprior: Hyperprior = Hyperprior(), cache: Optional[GibbsCache] = None,
         compute_log_joint=False, post_method="auto", row_offset=0,
         checked=False, delta_scale=None, fused_log_joint=True) -> tuple[GibbsState, GibbsInfo]:
    """One systematic-scan sweep, output → input (pure: returns a new state).

    Order: ``[λ's if learned]``, then for ``l = L..1``: ``W̃^l | X^l, Z^{l+1}`` (A.1)
    [``Δ_y`` (A.5) before the output rows, if learned], then for hidden ``l``: ``X^l`` (A.2),
    ``Z^l`` (A.3).

    Parameters
    ----------
    rng_key : key
    state : GibbsState
    net : MLP
    X : array, shape (n, d_in)
    y : array, shape (n, d_out)
    learn_noise : bool
        Resample the output noise precision ``1/Δ_y ~ Gamma(a + n d_out/2, b + ‖y − X̃^L W̃^{L⊤}‖²/2)``.
    learn_prior : bool
        Resample ``λ_W^l ~ Gamma(a + d_l d_{l+1}/2, b + ‖W^l‖²/2)`` and
        ``λ_b^l ~ Gamma(a + d_{l+1}/2, b + ‖b^l‖²/2)`` per layer.
    hyperprior : Hyperprior
    cache : GibbsCache, optional
        From :func:`precompute` (computed here if omitted).
    compute_log_joint : bool
        Fill ``info.log_joint`` (one extra forward pass over the auxiliaries).
    post_method : {"auto", "cholesky", "matheron"}
        How to draw the post-activations (both exact, see :func:`sample_post`).
    row_offset : int
        Global index of ``X``'s first row: the fused latent passes key their draws by the
        global row (:func:`blockbayes.kernels.latent_pass`), so a data shard draws what the
        full data set draws for its rows.
    checked : bool
        The caller guarantees the state's first-layer prior precisions equal the net's whenever
        ``cache.chol0`` is given and ``learn_prior`` is off (:func:`run` does: its states start
        from the net's hyperparameters), so ``step`` skips that device-synchronising check.
    delta_scale : array of shape (C,), optional
        Per-chain factors ``t_c > 0`` on every hidden ``Δ_Z^l, Δ_X^l``: chain ``c`` is swept
        under the net with hidden noise ``t_c Δ`` (its ``Δ_y`` is the state's ``delta_y``).
        Replica exchange (:mod:`blockbayes.gibbs.tempering`) runs all replicas of all chains
        as the chains of one call this way. ``cache`` must then come from
        :func:`precompute` with the same ``delta_scale``. ``None``: the net's ``Δ`` (``t = 1``).
    fused_log_joint : bool
        Assemble ``info.log_joint_partial`` and ``info.first_term_prev`` from the latent passes'
        sums (default); ``False`` leaves them ``None`` (callers that do not read them).

    The post- and pre-activations of each hidden layer are drawn in one fused pass
    (:func:`blockbayes.kernels.latent_pass`): ``X^l`` from (A.2) and then ``Z^l`` from (A.3)
    given the new ``X^l``, in the same order as the scan above.

    Returns
    -------
    (GibbsState, GibbsInfo)
    """
    xp = namespace(X, y)
    L = net.num_layers
    C = state.delta_y.shape[0]
    if cache is None:
        cache = precompute(net, X, learn_prior=learn_prior)
    keys = list(bbr.split(rng_key, 3 * L + 3))
    if delta_scale is None:
        dz_l, dx_l = list(net.delta_z), list(net.delta_x)
    else:   # per-chain hidden Δ (float64, for the kernels' per-chain parameters)
        if tuple(delta_scale.shape) != (C,):
            raise ValueError(f"delta_scale must have shape ({C},), got {tuple(delta_scale.shape)}")
        t64 = xp.astype(delta_scale, xp.float64)
        dz_l = [v * t64 for v in net.delta_z]
        dx_l = [v * t64 for v in net.delta_x]
    weights = list(state.weights)
    pre, post = list(state.pre), list(state.post)
    sums = [None] * (L - 1)
    lam_w, lam_b, delta_y = state.lam_w, state.lam_b, state.delta_y
    if learn_prior:
        lam_w, lam_b = _sample_prior_precisions(keys.pop(), net, weights, hyperprior, like=X)
    output_sse = None
    latent = state.latent
    if learn_noise and net.likelihood in ("probit", "multinomial_probit"):
        raise ValueError(f"learn_noise is not available for likelihood={net.likelihood!r}: "
                         "Δ_y = 1 is fixed (not identifiable jointly with the weight scale)")
    for l in range(L - 1, -1, -1):
        H = X if l == 0 else post[l - 1]
        if l == L - 1:
            if latent is not None:
                latent = sample_latent(keys.pop(), affine(H, weights[l]), y, latent, net.likelihood)
            T = output_targets(net, y, latent, C, X)
            if learn_noise:
                R = T - affine(H, weights[l])
                output_sse = xp.sum(R * R, axis=(-2, -1))
                rate = hyperprior.noise_rate + 0.5 * output_sse
                tau = sample_precision(keys.pop(), hyperprior.noise_shape + 0.5 * T.shape[-2] * T.shape[-1], rate, like=X)
                delta_y = 1.0 / tau
            delta = delta_y
        else:
            T = pre[l]
            delta = (xp.full((C,), net.delta_z[l], dtype=X.dtype, device=device_of(X)) if delta_scale is None
                     else xp.astype(dz_l[l], X.dtype))
        prior = prior_diag(xp, lam_w[:, l], lam_b[:, l], net.widths[l])
        if l == 0:
            chol = cache.chol0 if (L > 1 and not learn_prior and (checked or _prior_matches_net(xp, net, lam_w, lam_b))) else None
            weights[l] = sample_rows(keys.pop(), X, T, prior, delta, gram=cache.gram0[None, ...], chol=chol)
        else:
            weights[l] = sample_rows(keys.pop(), H, T, prior, delta)
            h = l - 1  # index of hidden layer l+1 in pre/post lists (Z^l, X^l in 1-based notation)
            Hprev = X if h == 0 else post[h - 1]
            A = affine(Hprev, weights[l - 1])
            if LATENT_PASS == "fused":
                post[h], pre[h], sums[h] = kernels.latent_pass(
                    keys.pop(), pre[h], A, T, weights[l], dx_l[h], dz_l[h], delta,
                    activation=net.activation, slope=net.slope, method=post_method,
                    row_offset=row_offset)
            else:
                F = activate(xp, pre[h], net.activation, net.slope)
                z_old = pre[h]
                post[h] = sample_post(keys.pop(), F, weights[l], T, dx_l[h], delta, method=post_method)
                pre[h] = sample_pre(keys.pop(), A, post[h], dz_l[h], dx_l[h], net.activation, net.slope)
                sums[h] = _latent_sums(xp, z_old, A, T, weights[l], post[h], pre[h], net)
    new = GibbsState(tuple(weights), tuple(pre), tuple(post), lam_w, lam_b, delta_y, latent)
    lj = log_joint(new, net, X, y) if compute_log_joint else None
    partial = first = None
    if L > 1 and fused_log_joint:
        partial, first = _fused_log_joint(xp, new, net, X.shape[0], sums, delta_scale)
    return new, GibbsInfo(log_joint=lj, output_sse=output_sse, log_joint_partial=partial,
                          first_term_prev=first)


def _latent_sums(xp, z_old, A, T, W, Xn, Zn, net):
    """The sums :func:`blockbayes.kernels.latent_pass` returns, computed from whole arrays
    (the ``"separate"`` path), shape ``(C, 3)``."""
    R = T - affine(Xn, W)
    Rx = Xn - activate(xp, Zn, net.activation, net.slope)
    D = z_old - A
    return xp.stack([xp.sum(D * D, axis=(-2, -1)), xp.sum(R * R, axis=(-2, -1)),
                     xp.sum(Rx * Rx, axis=(-2, -1))], axis=-1)


def _add_log_prior(xp, total, W, lw, lb, d_in, d_out):
    """``total + log N(W̃; 0, Λ^{-1})`` per chain for one layer's weights ``W`` ``(C, d_out, d_in + 1)``
    (precisions ``lw`` of the weights and ``lb`` of the biases, shape ``(C,)``)."""
    Ww, b = W[..., :-1], W[..., -1]
    total = total + d_out * (-(d_in + 1) / 2 * math.log(2.0 * math.pi) + 0.5 * (d_in * xp.log(lw) + xp.log(lb)))
    return total - 0.5 * (lw * xp.sum(Ww * Ww, axis=(-2, -1)) + lb * xp.sum(b * b, axis=-1))


def _fused_log_joint(xp, state: GibbsState, net: MLP, n: int, sums, delta_scale=None):
    """(log joint of ``state`` without the first layer's data term, that term of the input
    state) from the latent passes' sums (see :class:`GibbsInfo`); terms as :func:`log_joint`
    (hidden ``Δ`` times ``delta_scale`` per chain when given)."""
    two_pi = 2.0 * math.pi
    L = net.num_layers
    dt = state.delta_y.dtype
    if delta_scale is None:
        t, log_t = 1.0, 0.0
    else:
        t = xp.astype(delta_scale, dt)
        log_t = xp.log(t)
    total = xp.zeros(state.delta_y.shape, dtype=dt, device=device_of(state.delta_y))
    for l, W in enumerate(state.weights):
        d_in, d_out = net.widths[l], net.widths[l + 1]
        total = _add_log_prior(xp, total, W, state.lam_w[:, l], state.lam_b[:, l], d_in, d_out)
        if l == L - 1:
            total = total - 0.5 * n * d_out * xp.log(two_pi * state.delta_y)
        else:
            total = total - 0.5 * n * d_out * (math.log(two_pi * net.delta_z[l]) + log_t)
    for h in range(L - 1):
        s = xp.astype(sums[h], dt)
        d = net.widths[h + 1]
        dx = net.delta_x[h] * t
        d_next = state.delta_y if h == L - 2 else net.delta_z[h + 1] * t
        total = total - s[:, 1] / (2 * d_next) - s[:, 2] / (2 * dx) - 0.5 * n * d * (math.log(two_pi * net.delta_x[h]) + log_t)
    first = -xp.astype(sums[0], dt)[:, 0] / (2 * (net.delta_z[0] * t))
    return total, first


def _prior_matches_net(xp, net, lam_w, lam_b) -> bool:
    """Whether every chain's first-layer prior equals the net's (the cached Cholesky's)."""
    return bool(xp.all(lam_w[:, 0] == net.lam_w[0]) & xp.all(lam_b[:, 0] == net.lam_b[0]))


def _sample_prior_precisions(key, net, weights, hp: Hyperprior, like):
    xp = namespace(like)
    keys = bbr.split(key, 2 * net.num_layers)
    lw, lb = [], []
    for l, W in enumerate(weights):
        d_out, d_in = net.widths[l + 1], net.widths[l]
        Ww = W[..., :-1]
        b = W[..., -1]
        rate_w = hp.prior_rate + 0.5 * xp.sum(Ww * Ww, axis=(-2, -1))
        rate_b = hp.prior_rate + 0.5 * xp.sum(b * b, axis=-1)
        lw.append(sample_precision(keys[2 * l], hp.prior_shape + 0.5 * d_in * d_out, rate_w, like))
        lb.append(sample_precision(keys[2 * l + 1], hp.prior_shape + 0.5 * d_out, rate_b, like))
    return xp.stack(lw, axis=-1), xp.stack(lb, axis=-1)


def log_joint(state: GibbsState, net: MLP, X, y, delta_scale=None):
    """``log p(W̃, Z, X, y | X^1, λ, Δ)`` of (A.0) per chain, shape ``(C,)``.

    ``delta_scale`` (shape ``(C,)``, optional): chain ``c`` under hidden noise ``t_c Δ`` (as
    :func:`step`'s argument of that name).

    For the probit likelihoods the output term is the density of the latent utilities
    ``N(U; X̃^L W̃^{L⊤}, I)`` (the label indicator is 1 on the sampler's support); for
    ``"onehot_gaussian"`` the one-hot labels are the Gaussian targets.

    :func:`log_joint_from_sums` of :func:`residual_sums` (the replica-exchange step passes the
    sums its swap ratios already hold, and gets the same numbers bit for bit).
    """
    return log_joint_from_sums(state, net, X, residual_sums(state, net, X, y), delta_scale)


def residual_sums(state: GibbsState, net: MLP, X, y) -> tuple:
    """``(q_z, q_x, q_y)`` per chain: ``q_z[h] = ‖Z^h − X̃^{h−1}W̃^{h⊤}‖²`` and
    ``q_x[h] = ‖X^h − f(Z^h)‖²`` for each hidden layer (tuples), ``q_y = ‖T − X̃^L W̃^{L⊤}‖²``
    (targets ``T``: ``y``, one-hot labels or the probit utilities); each of shape ``(C,)``."""
    xp = fast_namespace(X, y)
    H = X
    qz, qx = [], []
    L = net.num_layers
    for l in range(L - 1):
        R = state.pre[l] - affine(H, state.weights[l], xp)
        qz.append(xp.sum(R * R, axis=(-2, -1)))
        Rx = state.post[l] - activate(xp, state.pre[l], net.activation, net.slope)
        qx.append(xp.sum(Rx * Rx, axis=(-2, -1)))
        H = state.post[l]
    # Gaussian targets broadcast in the subtraction itself (the same numbers as against
    # output_targets' explicit broadcast, without building it)
    T = y if net.likelihood == "gaussian" else output_targets(net, y, state.latent, state.delta_y.shape[0], X)
    R = T - affine(H, state.weights[L - 1], xp)
    return tuple(qz), tuple(qx), xp.sum(R * R, axis=(-2, -1))


def log_joint_from_sums(state: GibbsState, net: MLP, X, sums, delta_scale=None):
    """:func:`log_joint` from the state's :func:`residual_sums` ``sums = (q_z, q_x, q_y)``::

        Σ_l log N(W̃^l; 0, Λ_l^{-1}) − Σ_h [ (n d_h/2)(log 2πΔ_Z^h + log 2πΔ_X^h)
            + q_z^h/(2Δ_Z^h) + q_x^h/(2Δ_X^h) ] − (n d_out/2) log 2πΔ_y − q_y/(2Δ_y)

    (``Δ_y`` the state's, per chain; hidden ``Δ`` times ``delta_scale`` when given), the terms
    added layer by layer in this order. ``X``: the data (``n``, dtype, device)."""
    xp = fast_namespace(X)
    q_z, q_x, q_y = sums
    L = net.num_layers
    n = X.shape[0]
    two_pi = 2.0 * math.pi
    total = xp.zeros(state.delta_y.shape, dtype=X.dtype, device=device_of(X))
    for l, W in enumerate(state.weights):
        d_in, d_out = net.widths[l], net.widths[l + 1]
        total = _add_log_prior(xp, total, W, state.lam_w[:, l], state.lam_b[:, l], d_in, d_out)
        if l == L - 1:
            q, dl = q_y, state.delta_y
        else:
            q, dl = q_z[l], xp.full(state.delta_y.shape, net.delta_z[l], dtype=X.dtype, device=device_of(X))
            if delta_scale is not None:
                dl = dl * xp.astype(delta_scale, X.dtype)
        total = total - 0.5 * n * d_out * xp.log(two_pi * dl) - q / (2 * dl)
        if l < L - 1:
            if delta_scale is None:
                dx = net.delta_x[l]
                total = total - 0.5 * n * d_out * math.log(two_pi * dx) - q_x[l] / (2 * dx)
            else:
                dx = net.delta_x[l] * xp.astype(delta_scale, X.dtype)
                total = total - 0.5 * n * d_out * xp.log(two_pi * dx) - q_x[l] / (2 * dx)
    return total


def first_nonfinite(xp, state: GibbsState):
    """Names of the state's blocks holding a NaN or an infinity (empty when all are finite).

    The common all-finite case costs one device-to-host read (one sync on a GPU): the per-block
    flags are combined on the device first and read block by block only when one is off."""
    blocks = [*state.weights, *state.pre, *state.post, state.lam_w, state.lam_b, state.delta_y]
    if state.latent is not None:
        blocks.append(state.latent)
    ok = xp.all(xp.isfinite(blocks[0]))
    for B in blocks[1:]:
        ok = ok & xp.all(xp.isfinite(B))
    if bool(ok):
        return []
    bad = []
    for l, W in enumerate(state.weights):
        if not bool(xp.all(xp.isfinite(W))):
            bad.append(f"weights of layer {l + 1} (rows into layer {l + 2})")
    for h, (Z, Xh) in enumerate(zip(state.pre, state.post)):
        if not bool(xp.all(xp.isfinite(Z))):
            bad.append(f"pre-activations Z of hidden layer {h + 2}")
        if not bool(xp.all(xp.isfinite(Xh))):
            bad.append(f"post-activations X of hidden layer {h + 2}")
    for name in ("lam_w", "lam_b", "delta_y"):
        if not bool(xp.all(xp.isfinite(getattr(state, name)))):
            bad.append(name)
    if state.latent is not None and not bool(xp.all(xp.isfinite(state.latent))):
        bad.append("latent utilities U of the output layer")
    return bad


