r"""Fused kernels of the block-Gibbs sampler's elementwise steps.

Three implementations behind one dispatcher (by array type, or forced with ``impl=``):

========================  ====================  =============================================
arrays                    default ``impl``      module
========================  ====================  =============================================
NumPy                     ``"cpu"``             :mod:`.cpu` (Numba, parallel, imported lazily)
CuPy                      ``"cuda"``            :mod:`.cuda` (CuPy ``RawKernel``, lazily)
anything else             ``"reference"``       :mod:`.reference` (pure Array API, the oracle)
========================  ====================  =============================================

``impl="reference"`` runs on any namespace; ``"cpu"`` needs NumPy arrays and ``"cuda"`` CuPy
arrays (a ``ValueError`` otherwise: no silent device moves).

ReLU pre-activation conditional (MATH.md §A.3)
----------------------------------------------
For each element independently, with ``f(z) = z`` for ``z ≥ 0`` and ``s·z`` for ``z < 0``
(``s = slope``; ``s = 0`` is the ReLU)

.. math::

    p(z \mid a, x) \propto \exp\Big(-\frac{(z-a)^2}{2\Delta_Z} - \frac{(x-f(z))^2}{2\Delta_X}\Big),

a two-piece truncated-normal mixture. Piece ``k`` (slope ``α_k``: 1 on ``z ≥ 0``, ``s`` on
``z < 0``) has ``S_k = Δ_X + α_k² Δ_Z``, precision ``τ_k = S_k/(Δ_Z Δ_X)``, sd
``σ_k = τ_k^{-1/2}`` and mean ``m_k = (Δ_X a + α_k Δ_Z x)/S_k``. With the standardised
distances of the means inside their pieces, ``r₊ = m₊/σ₊`` and ``r₋ = −m₋/σ₋``, the branch
log-odds is

.. math::

    \ell = \log\frac{\pi_+}{\pi_-} = \tfrac12\log\frac{S_-}{S_+} + G(r_+) - G(r_-),
    \qquad G(r) = \tfrac{r^2}{2} + \log\Phi(r) = \log\tfrac12\operatorname{erfcx}(-r/\sqrt2).

This is MATH.md (A.3a) (and its general piecewise-linear form) with the common factor
``exp(−a²/2Δ_Z − x²/2Δ_X)`` (the exponent at the kink) cancelled exactly, so no large terms
cancel in the tails. ``G`` is evaluated in log space: for ``r ≤ 0`` (the piece's mean outside
it, the far-tail case) as ``log(erfcx(−r/√2)/2)``; for ``r > 0`` as ``r²/2 + log Φ(r)`` with
``Φ(r) ≥ ½`` (the reference calls ``log_ndtr``; the fused kernels form
``Φ(r) = 1 − erfc(r/√2)/2`` directly, which cannot cancel, and take a single ``log`` of the
ratio of the two pieces' ``erfcx``/``2Φ`` values). Nothing forms ``exp(t²)``, and no ``erf``
of a negative argument is ever added to 1. Then ``π₊ = σ(ℓ)`` (stable sigmoid) and

* positive branch (``u₁ < π₊``): ``z = σ₊ (T − α)`` with ``T ~ N(0,1) | T ≥ α``, ``α = −r₊``
  (so ``z = m₊ + σ₊T ≥ 0``);
* negative branch: ``z = −σ₋ (T − α)``, ``α = −r₋`` (so ``z = m₋ − σ₋T ≤ 0``).

The excess ``e = T − α ≥ 0`` is what the samplers compute, so the branch signs hold exactly,
also after the cast to float32 (and the result is clamped to the sign again after the cast).

Exact one-sided truncated normal ``T ~ N(0,1) | T ≥ α`` from one uniform ``u``
-----------------------------------------------------------------------------------
Inversion only, so every implementation is a deterministic function of ``u``:

* ``α < α₀ = 5``: ``T = −Φ⁻¹(u Φ(−α))``. When ``p = uΦ(−α) > ½`` the code inverts
  ``1 − p = Φ(α) + (1 − u)Φ(−α)`` instead (``T = Φ⁻¹(1 − p)``), which keeps the lower tail of
  ``T`` exact when the bound is in the bulk.
* ``α ≥ α₀``: solve ``log Φ(−α) − log Φ(−α−e) = −log u`` for the excess ``e`` by Newton's
  method, with ``log Φ(−t) = log(erfcx(t/√2)/2) − t²/2`` so the equation reads
  ``log(erfcx(t/√2)/erfcx(α/√2)) − e(α + e/2) + E = 0`` (``t = α + e``, ``E = −log u``) and the
  derivative is the inverse Mills ratio ``λ(t) = √(2/π)/erfcx(t/√2)``. The start
  ``e₀ = min(√(α² + 2E) − α, E/λ(α))`` is an upper bound of the root (``erfcx`` decreasing;
  convexity), the function is convex, so Newton decreases monotonically to the root: at most
  4 steps to rounding (5 are allowed). For ``α > 10¹⁰`` ``e = E/α`` to double precision.
* Finally ``T = max(T, α)`` (``e ≥ 0``).

The general truncation ``z ~ N(μ, σ²) | z ≥ b`` uses ``α = (b − μ)/σ`` and returns
``μ + σT`` when ``α < 0`` (bound in the lower half: no cancellation) and ``b + σe`` otherwise
(``z ≤ b``: mirror image with ``α = (μ − b)/σ``), then clamps to the bound, in float64 and
again after the cast.

Randomness: counter-based uniforms, no generator objects
--------------------------------------------------------
With the key's words ``(k0, k1)`` (:func:`blockbayes._backend.random.key_words`) and all
arithmetic modulo 2⁶⁴::

    mix64(z) = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB;
               z ^ (z >> 31)
    bits(c)  = mix64(mix64(c * 0x9E3779B97F4A7C15 + k0) ^ k1)
    u(c)     = ((bits(c) >> 11) + 0.5) * 2**-53          # in (0, 1) strictly, exact in float64

The element with C-order flat index ``i`` uses counters ``2i`` (branch choice, ``u₁``) and
``2i + 1`` (truncated-normal draw, ``u₂``) in :func:`relu_preact`, and counter ``i`` in
:func:`truncated_normal`. The reference, Numba and CUDA kernels therefore give the same draws
to rounding for the same key (a branch choice can differ only when ``u₁`` and ``π₊`` agree to
~1e-15, probability ~1e-15 per element). Never reuse a key: split it.

The fused latent pass (:func:`latent_pass`) keys its draws by the *global* row
---------------------------------------------------------------------------------
For chains ``c = 0..C−1`` and a data row with global index ``g_μ = row_offset + μ``, the row's
index is ``g = g_μ·C + c`` and its element ``j`` has counter ``i = g·d + j``: the ReLU draw uses
``2i`` and ``2i + 1`` (as above), the identity's Gaussian ``Φ⁻¹(u(2i))``, the post-activation
normals ``ξ_j = Φ⁻¹(u(STREAM_X + i))`` and the next layer's noise in the perturb-and-correct
form ``e_m = Φ⁻¹(u(STREAM_E + g·k + m))`` (``STREAM_X = 2⁶²``, ``STREAM_E = 2⁶² + 2⁶¹``: the
three ranges are disjoint, and ``bits`` is a bijection of the counter, so no uniform is used
twice). A data shard holding rows ``[a, b)`` and called with ``row_offset = a`` therefore draws
exactly what the full-data pass draws for those rows. ``Φ⁻¹`` is AS241 in the fused kernels and
the backend's ``ndtri`` in the reference (they agree to ~1e-16).
"""
from __future__ import annotations

import importlib

import numpy as np

from .._backend import backend_name, device_of, namespace, same_device
from . import _common

__all__ = ["relu_preact", "truncated_normal", "multinomial_utilities", "latent_pass", "gaussian_rows",
           "frozen_noise_target", "frozen_noise_gradient", "network_target", "symmetric_operator", "uniforms",
           "available_impls"]

_IMPLS = ("reference", "cpu", "cuda")


def _module(name: str):
    return importlib.import_module(f".{name}", __name__)


def _choose(xp, impl):
    kind = backend_name(xp)
    if impl is None:
        return {"numpy": "cpu", "cupy": "cuda"}.get(kind, "reference")
    if impl not in _IMPLS:
        raise ValueError(f"impl must be one of {_IMPLS} or None, got {impl!r}")
    if impl == "cpu" and kind != "numpy":
        raise ValueError(f"impl='cpu' needs NumPy arrays, got {kind} arrays")
    if impl == "cuda" and kind != "cupy":
        raise ValueError(f"impl='cuda' needs CuPy arrays, got {kind} arrays")
    return impl


def available_impls() -> tuple[str, ...]:
    """Implementations usable in this process (``"cuda"`` needs CuPy and a visible GPU)."""
    out = ["reference"]
    try:
        importlib.import_module("numba")
        out.append("cpu")
    except ImportError:
        pass
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            out.append("cuda")
    except Exception:
        pass
    return tuple(out)


def uniforms(key, shape, *, like):
    """Reference counter-based uniforms ``u(c)``, ``c = 0..N−1`` in C order.

    Parameters
    ----------
    key : numpy.ndarray, shape (2,), uint64
        A blockbayes key.
    shape : int or tuple of int
        Output shape; element with flat index ``i`` holds ``u(i)``.
    like : array
        Namespace and device of the result.

    Returns
    -------
    array of ``shape``, float64, values in (0, 1)
        ``u(c) = ((bits(c) >> 11) + 0.5)·2⁻⁵³`` as defined in the module docstring. The fused
        kernels draw exactly these numbers (counters ``2i``, ``2i+1`` in :func:`relu_preact`,
        ``i`` in :func:`truncated_normal`).
    """
    k0, k1 = _common.check_key(key)
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    return _module("reference").uniforms(k0, k1, tuple(shape), like)


def relu_preact(key, A, X, dz, dx, *, slope=0.0, impl=None):
    r"""Draw ReLU / leaky-ReLU pre-activations from their Gibbs conditional (MATH.md §A.3).

    Each element independently from
    ``p(z | a, x) ∝ exp(−(z − a)²/(2Δ_Z) − (x − f(z))²/(2Δ_X))``, ``f(z) = max(z, s·z)``:
    the two-piece truncated-normal mixture described in the module docstring.

    Parameters
    ----------
    key : numpy.ndarray, shape (2,), uint64
        A blockbayes key, used once (counters ``2i`` and ``2i+1`` for flat index ``i``).
    A : array, any shape (e.g. ``(chains, n, d)``), float32 or float64
        Pre-activation means ``a = x̃·w̃``.
    X : array, same shape, namespace and device as ``A``, float32 or float64
        Post-activations ``x``.
    dz, dx : float or array of shape (A.shape[0],)
        ``Δ_Z`` and ``Δ_X``, positive; shared, or one per index of ``A``'s leading (chain) axis
        (the element's counter stays its flat index). Per-chain values run the reference code
        on CuPy arrays.
    slope : float, optional
        Negative-side slope ``s ∈ [0, 1)``; 0 (default) is the ReLU.
    impl : {None, "reference", "cpu", "cuda"}, optional
        Force an implementation (default: by array type).

    Returns
    -------
    Z : array
        Same shape, namespace and device as ``A``; dtype ``result_type(A, X)``. A new array
        (inputs are never modified). Finite for finite inputs; ``Z ≥ 0`` exactly where the
        positive piece was drawn and ``Z ≤ 0`` elsewhere.
    """
    k0, k1 = _common.check_key(key)
    xp = namespace(A, X)
    same_device(A, X)
    if tuple(A.shape) != tuple(X.shape):
        raise ValueError(f"A and X must have the same shape, got {A.shape} and {X.shape}")
    _common.float_name(A.dtype)
    _common.float_name(X.dtype)
    out_dtype = xp.result_type(A.dtype, X.dtype)
    slope = _common.check_slope(slope)
    name = _choose(xp, impl)
    if _common.is_scalar(dz) and _common.is_scalar(dx):
        dz = _common.check_positive("dz", dz)
        dx = _common.check_positive("dx", dx)
        consts = _common.relu_constants(dz, dx, slope)
        return _module(name).relu_preact(k0, k1, A, X, consts, out_dtype)
    if A.ndim < 1:
        raise ValueError("per-chain dz, dx need arrays with a leading chain axis")
    nc = A.shape[0]
    dz = _common.check_chain_param(xp, "dz", dz, nc, device_of(A))
    dx = _common.check_chain_param(xp, "dx", dx, nc, device_of(A))
    dz = dz if not _common.is_scalar(dz) else xp.full((nc,), dz, dtype=xp.float64, device=device_of(A))
    dx = dx if not _common.is_scalar(dx) else xp.full((nc,), dx, dtype=xp.float64, device=device_of(A))
    consts = _common.relu_constants_array(xp, dz, dx, slope)
    if name == "cuda":      # per-chain constants: the reference code on the GPU
        name = "reference"
    return _module(name).relu_preact_chains(k0, k1, A, X, consts, out_dtype)


def truncated_normal(key, mean, sd, bound, upper, *, impl=None):
    r"""Draw ``z ~ N(mean, sd²)`` truncated to ``z ≥ bound`` (``upper=False``) or ``z ≤ bound``.

    Exact in both tails (inversion near the bulk, Newton in log space beyond 5 sd; module
    docstring), never beyond the bound, in float32 and float64.

    Parameters
    ----------
    key : numpy.ndarray, shape (2,), uint64
        A blockbayes key, used once (counter ``i`` for flat index ``i`` of the output).
    mean, sd, bound : array or float
        Broadcastable to one shape; at least one of ``mean, sd, bound, upper`` must be an
        array (it fixes namespace and device). ``sd`` must be positive; ``sd ≤ 0`` gives the
        ``sd → 0`` limit (``mean`` clamped to the bound).
    upper : bool or bool array
        ``True`` truncates from above (``z ≤ bound``), ``False`` from below (``z ≥ bound``);
        broadcastable.
    impl : {None, "reference", "cpu", "cuda"}, optional
        Force an implementation (default: by array type).

    Returns
    -------
    T : array
        Broadcast shape, in the arrays' namespace and device; dtype the result type of the
        float arrays among ``mean, sd, bound`` (Python floats adopt it; float64 if none). The
        bound is taken in that dtype and respected exactly.
    """
    k0, k1 = _common.check_key(key)
    args = (mean, sd, bound, upper)
    arrays = [v for v in args if not _common.is_scalar(v)]
    if not arrays:
        raise TypeError("truncated_normal needs at least one array argument (it fixes the "
                        "namespace and device); wrap a scalar with xp.asarray")
    xp = namespace(*arrays)
    same_device(*arrays)
    floats = [v for v in (mean, sd, bound) if not _common.is_scalar(v)]
    for v in floats:
        _common.float_name(v.dtype)
    out_dtype = xp.result_type(*[v.dtype for v in floats]) if floats else xp.float64
    if not _common.is_scalar(upper) and upper.dtype != xp.bool:
        raise TypeError(f"upper must be a bool or a bool array, got dtype {upper.dtype}")
    shape = _common.broadcast_shape(*[tuple(v.shape) for v in arrays])
    name = _choose(xp, impl)
    if name == "reference":
        return _module("reference").truncated_normal(k0, k1, mean, sd, bound, upper, shape,
                                                     out_dtype, xp, device_of(arrays[0]))
    return _module(name).truncated_normal(k0, k1, mean, sd, bound, upper, shape, out_dtype)


def multinomial_utilities(key, A, labels, U_prev, *, impl=None):
    r"""Draw the latent utilities of the multinomial probit (MATH.md §B, ``Δ_y = 1``).

    Two exact conditional sub-steps per row ``μ`` with label ``y = y_μ`` and ``K`` classes:

    .. math::

        u_{μy} \sim \mathrm{TN}\big(a_{μy}, 1; (\max_{c≠y} u^{\text{prev}}_{μc}, ∞)\big),
        \qquad u_{μc} \sim \mathrm{TN}(a_{μc}, 1; (−∞, u_{μy})) \quad (c ≠ y).

    The key is split in two (:func:`blockbayes._backend.random.split`); the first draws
    ``u_y`` with counter ``r`` (flat row ``r = c·n + μ`` of chain ``c``), the second draws a
    bounded-above normal for *every* element with counter ``r·K + c`` (the one at ``c = y`` is
    discarded): exactly two :func:`truncated_normal` calls, which is how the reference and
    CUDA implementations compute it; the Numba kernel fuses the two calls and the row maxima
    into one pass over the rows and returns the same numbers bit for bit.

    Parameters
    ----------
    key : numpy.ndarray, shape (2,), uint64
        A blockbayes key, used once.
    A : array, shape (C, n, K), float32 or float64
        Output pre-activations ``X̃^L W̃^{L⊤}``.
    labels : int array, shape (n,) or (C, n)
        Class labels in ``0..K−1``.
    U_prev : array, shape (C, n, K)
        Current utilities (``argmax U_prev = y`` row by row; the first sub-step reads their
        maxima over ``c ≠ y``).
    impl : {None, "reference", "cpu", "cuda"}

    Returns
    -------
    U : array, shape (C, n, K), dtype ``result_type(A, U_prev)``
        With ``argmax_c U_{μc} = y_μ`` (the bounds hold exactly in the output dtype).
    """
    from .._backend import random as bbr

    xp = namespace(A, U_prev, labels)
    same_device(A, U_prev, labels)
    if A.ndim != 3 or tuple(U_prev.shape) != tuple(A.shape):
        raise ValueError(f"A and U_prev must have one shape (C, n, K), got {tuple(A.shape)} and "
                         f"{tuple(U_prev.shape)}")
    nc, n, K = A.shape
    if tuple(labels.shape) not in ((n,), (nc, n)):
        raise ValueError(f"labels must have shape ({n},) or ({nc}, {n}), got {tuple(labels.shape)}")
    if not xp.isdtype(labels.dtype, "integral"):
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    _common.float_name(A.dtype)
    _common.float_name(U_prev.dtype)
    out_dtype = xp.result_type(A.dtype, U_prev.dtype)
    _common.check_key(key)
    k1, k2 = bbr.split(key, 2)
    name = _choose(xp, impl)
    if name == "cpu":
        if labels.size and (int(xp.min(labels)) < 0 or int(xp.max(labels)) >= K):
            raise ValueError(f"labels must lie in 0..{K - 1}")
        return _module("cpu").multinomial_utilities(_common.check_key(k1), _common.check_key(k2),
                                                    A, labels, U_prev, out_dtype)
    return _multinomial_composed(xp, k1, k2, A, labels, U_prev, name)


def _multinomial_composed(xp, k1, k2, A, labels, U_prev, impl):
    """:func:`multinomial_utilities` as two :func:`truncated_normal` calls on whole arrays
    (the reference and CUDA implementations, and the Numba kernel's oracle)."""
    from ..blocks import onehot

    K = A.shape[-1]
    oh = onehot(xp, labels, K, A.dtype)
    if oh.ndim < A.ndim:
        oh = xp.broadcast_to(oh[None, ...], A.shape)
    is_y = oh > 0
    neg_inf = xp.asarray(-xp.inf, dtype=A.dtype, device=device_of(A))
    m = xp.max(xp.where(is_y, neg_inf, U_prev), axis=-1)        # max over c != y, (C, n)
    a_y = xp.sum(A * oh, axis=-1)
    u_y = truncated_normal(k1, a_y, 1.0, m, False, impl=impl)
    others = truncated_normal(k2, A, 1.0, xp.broadcast_to(u_y[..., None], A.shape), True, impl=impl)
    return xp.where(is_y, xp.broadcast_to(u_y[..., None], A.shape), others)


def latent_pass(key, Z, A, T, W, delta_x, delta_z, delta_next, *, activation="relu", slope=0.0,
                method="auto", row_offset=0, impl=None):
    r"""Draw the post- and pre-activations of one hidden layer in one pass (MATH.md §A.2–A.3).

    Post-activations ``x_μ ~ N(Q⁻¹r_μ, Q⁻¹)`` with ``Q = I/Δ_X + Ŵ^⊤Ŵ/Δ'``,
    ``r_μ = f(z_μ)/Δ_X + Ŵ^⊤(t_μ − b)/Δ'`` (``[Ŵ b] = W``: the next layer's weights, ``t`` its
    targets, ``Δ'`` its noise), then pre-activations ``z ~ p(z | a, x)`` elementwise with the
    *new* ``x`` (the ReLU mixture of :func:`relu_preact`, or the identity's Gaussian
    ``N((Δ_X a + Δ_Z x)/S, Δ_XΔ_Z/S)``, ``S = Δ_X + Δ_Z``). ``method="matheron"`` draws
    ``x₀ = f(z) + √Δ_X ξ`` and corrects it, ``x = x₀ + Δ_X Ŵ^⊤(Δ_X ŴŴ^⊤ + Δ'I)⁻¹(t − b − Ŵx₀ − √Δ'e)``
    (cost ``O(dk + k²)`` per row); ``"cholesky"`` solves with the Cholesky factor of
    ``Δ_X Q`` (``O(d² + dk)`` per row); both exact, ``"auto"`` takes Matheron when ``k < d``.
    Each row is read once and ``X``, ``Z`` written once; the draws are keyed by the global row
    (module docstring), so shards agree with the full pass.

    Parameters
    ----------
    key : numpy.ndarray, shape (2,), uint64
        A blockbayes key, used once.
    Z : array, shape (C, n, d)
        Current pre-activations (for ``f(Z)``).
    A : array, shape (C, n, d)
        Pre-activation means ``X̃^{l-1} W̃^{l-1⊤}`` (with the layer below's current values).
    T : array, shape (C, n, k) or (1, n, k)
        The next layer's targets (``Z^{l+1}``, ``y`` or the latent utilities).
    W : array, shape (C, k, d + 1)
        The next layer's weights, bias last.
    delta_x, delta_z : float or array of shape (C,)
        ``Δ_X``, ``Δ_Z`` of this layer, shared or per chain (replica exchange runs its replicas
        as the chains of one pass, each with its own ``Δ``: chain ``c`` uses element ``c``).
    delta_next : float or array of shape (C,)
        The next layer's noise ``Δ'`` per chain.
    activation : {"relu", "leaky_relu", "identity"}
    slope : float
        Negative-side slope of the (leaky) ReLU, ``[0, 1)``; ignored for the identity.
    method : {"auto", "matheron", "cholesky"}
    row_offset : int
        Global index of the first row (data shards).
    impl : {None, "reference", "cpu", "cuda"}

    Returns
    -------
    X, Z : arrays of shape (C, n, d), in ``Z``'s namespace, device and dtype
    sums : array of shape (C, 3), float64
        ``[Σ(Z_old − A)², Σ‖T − X̃_new W^⊤‖², Σ(X_new − f(Z_new))²]`` per chain: the data terms
        of the log joint (MATH.md (A.0)) that this pass touches, at no extra pass over memory.
    """
    k0, k1 = _common.check_key(key)
    xp = namespace(Z, A, T, W)
    same_device(Z, A, T, W)
    if Z.ndim != 3 or tuple(A.shape) != tuple(Z.shape):
        raise ValueError(f"Z and A must have one shape (C, n, d), got {Z.shape} and {A.shape}")
    nc, n, d = Z.shape
    if T.ndim != 3 or T.shape[0] not in (1, nc) or T.shape[1] != n:
        raise ValueError(f"T must have shape (C, n, k) or (1, n, k) with C = {nc}, n = {n}; got {T.shape}")
    k = T.shape[-1]
    if tuple(W.shape) != (nc, k, d + 1):
        raise ValueError(f"W must have shape (C, k, d + 1) = {(nc, k, d + 1)}, got {tuple(W.shape)}")
    out_dtype = Z.dtype
    _common.float_name(out_dtype)
    dx = _common.check_chain_param(xp, "delta_x", delta_x, nc, device_of(Z))
    dz = _common.check_chain_param(xp, "delta_z", delta_z, nc, device_of(Z))
    if activation not in _common.ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(_common.ACTIVATIONS)}, got {activation!r}")
    act = _common.ACTIVATIONS[activation]
    slope = 1.0 if act == 1 else _common.check_slope(slope)
    if method == "auto":
        method = "matheron" if k < d else "cholesky"
    if method not in _common.METHODS:
        raise ValueError(f"method must be 'auto', 'matheron' or 'cholesky', got {method!r}")
    if isinstance(row_offset, bool) or not isinstance(row_offset, (int, np.integer)) or row_offset < 0:
        raise ValueError(f"row_offset must be a non-negative int, got {row_offset!r}")
    if _common.is_scalar(delta_next):
        dn = _common.check_positive("delta_next", delta_next)
        delta_next = xp.full((nc,), dn, dtype=xp.float64, device=device_of(Z))
    elif tuple(delta_next.shape) != (nc,):
        raise ValueError(f"delta_next must be a float or shape ({nc},), got {tuple(delta_next.shape)}")
    if _common.is_scalar(dx) and _common.is_scalar(dz):
        consts = _common.relu_constants(dz, dx, slope if act == 0 else 0.0)
    else:   # per chain: both as (C,) float64 arrays, the constants elementwise
        dx = dx if not _common.is_scalar(dx) else xp.full((nc,), dx, dtype=xp.float64, device=device_of(Z))
        dz = dz if not _common.is_scalar(dz) else xp.full((nc,), dz, dtype=xp.float64, device=device_of(Z))
        consts = _common.relu_constants_array(xp, dz, dx, slope if act == 0 else 0.0)
    name = _choose(xp, impl)
    return _module(name).latent_pass(k0, k1, Z, A, T, W, delta_next, dx, dz, consts, act, slope,
                                     _common.METHODS[method], int(row_offset), out_dtype)


def gaussian_rows(key, B, delta, *, gram=None, prior_diag=None, chol=None, impl=None):
    r"""Draw the node rows of one layer (MATH.md (A.1)) for every chain.

    ``W̃^⊤ = R^{-⊤}(R^{-1}B + √Δ E)`` with ``RR^⊤ = G + Δ diag(λ)`` (``ΔP``, the scaled precision)
    or ``R = chol`` when given, so that each column of ``W̃^⊤`` is ``N(P⁻¹B/Δ, P⁻¹)`` and
    ``E[c, i, m] = Φ⁻¹(u((c(d+1) + i)k + m))`` (counter-based normals). Computed in float64 and
    cast to ``B``'s dtype; Numba for ``d + 1 ≤ 128`` on NumPy arrays, LAPACK/BLAS (SciPy,
    cuSOLVER) otherwise.

    Parameters
    ----------
    key : numpy.ndarray, shape (2,), uint64
    B : array, shape (C, d + 1, k)
        ``H̃^⊤T`` (cross products of the layer's inputs and targets).
    delta : array, shape (C,)
        Noise variance ``Δ`` of the targets.
    gram : array, shape (C or 1, d + 1, d + 1)
        ``H̃^⊤H̃`` (unless ``chol``).
    prior_diag : array, shape (C, d + 1)
        Diagonal of ``Λ`` (unless ``chol``).
    chol : array, shape (d + 1, d + 1) or (C, d + 1, d + 1), optional
        Lower Cholesky factor of ``G + ΔΛ``, shared by all chains or one per chain.

    Returns
    -------
    W : array, shape (C, k, d + 1), ``B``'s dtype
    """
    k0, k1 = _common.check_key(key)
    xp = namespace(B)
    if B.ndim != 3:
        raise ValueError(f"B must have shape (C, d + 1, k), got {tuple(B.shape)}")
    if chol is None and (gram is None or prior_diag is None):
        raise ValueError("gaussian_rows needs gram and prior_diag, or chol")
    _common.float_name(B.dtype)
    name = _choose(xp, impl)
    return _module(name).gaussian_rows(k0, k1, B, delta, gram, prior_diag, chol, B.dtype)


def frozen_noise_target(X, T, xi, eta, delta_y, widths, *, activation="relu", slope=0.0, impl=None,
                        precision="float64"):
    r"""Data term and gradient of the joint non-centred HMC move's target, one pass per call.

    With the standardised noises of the hidden layers held fixed (``xi = √Δ_Z ξ``,
    ``eta = √Δ_X η``, the frozen noises of :func:`blockbayes.gibbs.moves.frozen_noises`), the
    network is a deterministic function of all its weights ``θ``:

    .. math::

        Z^{m+1} = \tilde X^m W^{m\top} + ξ^m,\quad X^{m+1} = f(Z^{m+1}) + η^m,\quad
        \mathrm{out} = \tilde X^{L-1} W^{L-1\top},

    and the move's log target is ``−sse/(2Δ_y) − ½ Σ_j λ_j θ_j²`` with
    ``sse = ‖T − out‖²``. The returned function maps ``θ`` to ``sse`` and
    ``∇_θ(−sse/(2Δ_y))`` (backpropagation: ``δ^L = (T − out)/Δ_y``,
    ``∇_{W^m} = δ^{m+1⊤}\tilde X^m``, ``δ^m = (δ^{m+1} W^m_{:, :−1}) ⊙ f'(Z^m)``); the caller
    adds the prior. Everything but ``θ`` is checked and converted once, here: a leapfrog
    trajectory calls the function at every step.

    The Numba kernel (``"cpu"``) runs each chain (in parallel) through the forward and backward
    pass one block of 64 rows at a time, so it reads the data and the noises once and writes
    nothing but the ``(C, P)`` gradient: no ``(C, n, width)`` temporaries (on NumPy those cost
    page faults as well as memory traffic). It needs ``X`` shared by the chains (2-D);
    otherwise, and for CuPy arrays, the whole-array reference runs (each of its operations is a
    device kernel).

    Parameters
    ----------
    X : array, shape (n, d_0) or (C, n, d_0)
        Inputs.
    T : array, shape (C, n, d_L) or (1, n, d_L)
        Output targets.
    xi, eta : arrays, shape (C, n, H)
        The frozen noises of all hidden layers side by side (hidden layer ``m`` in columns
        ``Σ_{m' < m} d_{m'+1}`` onwards), ``H`` = the hidden widths summed (0 without hidden
        layers).
    delta_y : array, shape (C,)
        Output noise ``Δ_y`` per chain, positive.
    widths : sequence of int
        ``(d_0, …, d_L)``.
    activation : {"relu", "leaky_relu", "identity"}
    slope : float
        Negative-side slope of the leaky ReLU, ``[0, 1)``.
    impl : {None, "reference", "cpu", "cuda"}
        ``"cuda"`` runs the reference on the GPU.
    precision : {"float64", "float32"}
        The arithmetic: ``"float32"`` rounds the data, the noises and ``theta`` to float32 and runs
        the passes in float32 (``sse`` is still summed in float64) — 1.14–1.32× faster per call at
        the UCI shapes on this repository's CPU (design note 58), with a relative error of ~1e-7
        in the gradient.
        What the HMC move's interior leapfrog kicks use (:class:`~blockbayes.gibbs.hmc.JointHMCMove`,
        ``precision="mixed"``): a force that is any deterministic function of the position keeps
        HMC exact, while the energies of the accept stay float64.

    Returns
    -------
    callable
        ``theta ↦ (sse, grad)``: ``theta`` of shape ``(C, P)`` (all weights, layer by layer,
        each layer's ``(d_{m+1}, d_m + 1)`` block row-major with the bias last, as
        :func:`blockbayes.gibbs.hmc.flatten_weights`); ``sse`` of shape ``(C,)`` and ``grad`` of
        shape ``(C, P)``, computed in ``precision`` (``sse`` summed in float64) and returned in
        ``theta``'s dtype, namespace and device.
    """
    xp = namespace(X, T, xi, eta, delta_y)
    same_device(X, T, xi, eta, delta_y)
    widths, P = _checked_widths(widths)
    if delta_y.ndim != 1:
        raise ValueError(f"delta_y must have shape (C,), got {tuple(delta_y.shape)}")
    nc = delta_y.shape[0]
    if X.ndim not in (2, 3) or X.shape[-1] != widths[0] or (X.ndim == 3 and X.shape[0] != nc):
        raise ValueError(f"X must have shape (n, {widths[0]}) or ({nc}, n, {widths[0]}), got {tuple(X.shape)}")
    n = X.shape[-2]
    if T.ndim != 3 or T.shape[0] not in (1, nc) or tuple(T.shape[1:]) != (n, widths[-1]):
        raise ValueError(f"T must have shape ({nc} or 1, {n}, {widths[-1]}), got {tuple(T.shape)}")
    Hw = sum(widths[1:-1])
    for name_, v in (("xi", xi), ("eta", eta)):
        if tuple(v.shape) != (nc, n, Hw):
            raise ValueError(f"{name_} must have shape ({nc}, {n}, {Hw}), got {tuple(v.shape)}")
    for v in (X, T, xi, eta, delta_y):
        _common.float_name(v.dtype)
    act, slope = _activation_code(activation, slope)
    _check_precision(precision)
    name = _choose(xp, impl)
    if name == "cuda" or (name == "cpu" and X.ndim == 3):
        name = "reference"
    inner = _module(name).frozen_noise_target(X, T, xi, eta, delta_y, widths, act, slope, precision)

    def target(theta):
        if theta.ndim != 2 or tuple(theta.shape) != (nc, P):
            raise ValueError(f"theta must have shape ({nc}, {P}) for widths {widths}, got {tuple(theta.shape)}")
        return _in_dtype(xp, name, inner(theta), theta.dtype)

    return target


def frozen_noise_gradient(theta, X, T, xi, eta, delta_y, widths, *, activation="relu", slope=0.0, impl=None,
                          precision="float64"):
    """``(sse, grad)`` at ``theta`` ``(C, P)``: :func:`frozen_noise_target` called once (same
    arguments and conventions; prepare the target instead when calling it repeatedly)."""
    _common.float_name(theta.dtype)
    return frozen_noise_target(X, T, xi, eta, delta_y, widths, activation=activation, slope=slope,
                               impl=impl, precision=precision)(theta)


def network_target(X, Y, widths, *, activation="relu", slope=0.0, impl=None):
    """The noise-free network's sum of squares and its gradient, prepared once (the Gaussian MAP
    objective's data term, :func:`blockbayes.laplace.map_fit`).

    ``F(x; θ)`` is the standard MLP (``Z^{m+1} = X̃^m W^{m⊤}``, ``X^{m+1} = f(Z^{m+1})``); the
    returned function maps ``θ`` of ``M`` members to ``sse_i = ‖Y − F(X; θ_i)‖²`` and
    ``G_i = Σ_μ (y_μ − F_μ)ᵀ ∂F_μ/∂θ_i = −∇_θ sse_i / 2`` — :func:`frozen_noise_target`'s pass with
    the noises zero and ``Δ_y = 1`` (the same Numba kernel, not reading any noise: one pass over the
    rows in blocks of 64, no ``(M, n, width)`` temporaries), for any number of members per call.

    Parameters
    ----------
    X : array, shape (n, d_0)
    Y : array, shape (n, d_L)
    widths : sequence of int
    activation : {"relu", "leaky_relu", "identity"}
    slope : float
    impl : {None, "reference", "cpu", "cuda"}

    Returns
    -------
    callable
        ``theta`` ``(M, P)`` (the layout of :func:`frozen_noise_target`) ↦ ``(sse, G)`` of shapes
        ``(M,)`` and ``(M, P)``, float64 on the Numba path, in ``theta``'s namespace and dtype.
    """
    xp = namespace(X, Y)
    same_device(X, Y)
    widths, P = _checked_widths(widths)
    if X.ndim != 2 or X.shape[1] != widths[0]:
        raise ValueError(f"X must have shape (n, {widths[0]}), got {tuple(X.shape)}")
    if Y.ndim != 2 or tuple(Y.shape) != (X.shape[0], widths[-1]):
        raise ValueError(f"Y must have shape ({X.shape[0]}, {widths[-1]}), got {tuple(Y.shape)}")
    for v in (X, Y):
        _common.float_name(v.dtype)
    act, slope = _activation_code(activation, slope)
    name = _choose(xp, impl)
    if name == "cuda":
        name = "reference"
    inner = _module(name).network_target(X, Y, widths, act, slope)

    def target(theta):
        if theta.ndim != 2 or theta.shape[1] != P:
            raise ValueError(f"theta must have shape (M, {P}) for widths {widths}, got {tuple(theta.shape)}")
        return _in_dtype(xp, name, inner(theta), theta.dtype)

    return target


def _checked_widths(widths):
    """``(widths, P)``: the layer widths as a tuple of ints (at least two, all positive) and the
    weight count ``P = Σ_m d_{m+1}(d_m + 1)`` of the frozen-noise kernels' ``theta``."""
    widths = tuple(int(w) for w in widths)
    if len(widths) < 2 or min(widths) < 1:
        raise ValueError(f"widths must hold at least two positive widths, got {widths}")
    return widths, sum(widths[m + 1] * (widths[m] + 1) for m in range(len(widths) - 1))


def _activation_code(activation, slope):
    """``(act, slope)`` of the frozen-noise kernels: ``act`` 0 for the (leaky) ReLU, 1 for the identity;
    the negative-side slope (0 for the ReLU, 1 for the identity, checked for the leaky ReLU)."""
    if activation not in _common.ACTIVATIONS:
        raise ValueError(f"activation must be one of {tuple(_common.ACTIVATIONS)}, got {activation!r}")
    s = {"identity": 1.0, "relu": 0.0}.get(activation) if activation != "leaky_relu" else _common.check_slope(slope)
    return _common.ACTIVATIONS[activation], s


def _in_dtype(xp, name, pair, dtype):
    """The pair ``(sse, grad)`` of an implementation ``name`` in ``dtype`` (the Numba path hands back host
    float arrays; the references arrays of ``xp``)."""
    a, b = pair
    if name == "cpu":
        return xp.asarray(a, dtype=dtype), xp.asarray(b, dtype=dtype)
    return xp.astype(a, dtype), xp.astype(b, dtype)


def _check_precision(precision):
    if precision not in ("float64", "float32"):
        raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")


def symmetric_operator(A, *, impl=None, precision="float64"):
    """``v ↦ A v`` for a batch of symmetric matrices, prepared once (the HMC mass product ``M⁻¹p``).

    The Numba kernel (``"cpu"``, the default on NumPy) reads only each ``A[c]``'s upper triangle,
    four rows at a time, using every stored ``a_ij`` for both ``y_i`` and ``y_j``: half the memory
    traffic of a dense product, which is what bounds it at mass-matrix sizes (``P`` in the
    hundreds to thousands). The reference (CuPy, or ``impl="reference"``) is the dense batched
    product.

    Parameters
    ----------
    A : array, shape (C, P, P)
        Symmetric matrices. The kernel reads the upper triangle only (for a matrix symmetric only
        to rounding it applies the matrix mirrored from its upper triangle); the reference reads
        both. The operator keeps a reference to ``A`` (no copy for C-contiguous float64 input):
        do not modify ``A`` while it is in use.
    impl : {None, "reference", "cpu", "cuda"}
        ``"cuda"`` runs the reference on the GPU.
    precision : {"float64", "float32"}
        ``"float32"``: ``A`` is held rounded to float32 — half the matrix bytes again, 1.11–1.44×
        faster at the UCI mass sizes (P = 401–751; design note 58). The kernel multiplies the float32 entries
        by the float64 ``v`` and sums in float64; the reference multiplies in float32. The HMC
        move's leapfrog drift uses it (``precision="mixed"``): any fixed linear drift keeps the
        integrator volume-preserving and reversible, and its kinetic energies stay float64.

    Returns
    -------
    callable
        ``v`` of shape ``(C, P)`` ↦ ``A v`` of shape ``(C, P)``, in ``A``'s namespace and device and
        the dtype of ``A`` and ``v`` promoted (the kernel computes in float64; a float32 ``A``
        already rounded, e.g. the HMC move's held drift matrix, applied to float64 ``v`` gives
        float64).
    """
    xp = namespace(A)
    if A.ndim != 3 or A.shape[1] != A.shape[2]:
        raise ValueError(f"A must have shape (C, P, P), got {tuple(A.shape)}")
    _common.float_name(A.dtype)
    shape = (A.shape[0], A.shape[1])
    _check_precision(precision)
    name = _choose(xp, impl)
    if name == "cuda":
        name = "reference"
    inner = _module(name).symmetric_operator(A, precision)

    def apply(v):
        if tuple(v.shape) != shape:
            raise ValueError(f"v must have shape {shape}, got {tuple(v.shape)}")
        out = inner(v)
        return xp.asarray(out, dtype=xp.result_type(A.dtype, v.dtype)) if name == "cpu" else out

    return apply
