"""One shard: rows ``r0 .. r0+n_s`` of the data, their latents, and the row-local half sweep.

A :class:`Shard` is what one Dask actor holds (and what the in-process path holds a list of).
Its methods are the worker side of the blocked scan (docs/distributed.md):

* :meth:`Shard.sweep` — block 2, all latents given all weights, row-local, output → input:
  for hidden ``l = L..2``: ``X^l | f(Z^l), Z^{l+1}, W^l`` (A.2), then ``Z^l | X̃^{l-1}W̃^{l-1⊤}, X^l``
  (A.3), both in one fused pass over the rows (:func:`blockbayes.kernels.latent_pass`, the kernel
  ``gibbs.step`` uses); then the sufficient statistics of block 1 for the new latents.
* :meth:`Shard.recover` — a lost shard's latents drawn exactly from ``p(latents | W, x, y)``
  (rejection from the noisy forward pass, see the method).

Rows are processed in blocks of ``block_rows`` so working memory is bounded whatever the
shard size; latents can live in ``.npy`` memory maps (``latent_dir``) for out-of-core runs.
Randomness is keyed by global row (:mod:`._random`; the fused pass through its ``row_offset``),
so the result does not depend on the shard or block boundaries.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import numpy as np

from .. import kernels
from .._backend import linalg
from ..model import MLP
from . import _random as rnd

__all__ = ["Shard", "latent_post_draw", "latent_layer_draw", "block_stats"]


def _act(Z, activation, slope):
    if activation == "identity":
        return Z
    if activation == "relu":
        return np.maximum(Z, 0)
    return np.where(Z >= 0, Z, Z.dtype.type(slope) * Z)


def _affine(H, W):
    """``H W_w^T + b``: ``H`` (C|1, m, d), ``W`` (C, k, d+1) → (C, m, k)."""
    return np.matmul(H, np.swapaxes(W[..., :-1], -1, -2)) + W[:, None, :, -1]


def _rows(src, b0, b1, dtype):
    """Rows ``b0:b1`` of a NumPy / memmap / Dask array, as NumPy in ``dtype``."""
    part = src[b0:b1]
    if hasattr(part, "compute") and not isinstance(part, np.ndarray):
        part = part.compute(scheduler="synchronous")
    return np.asarray(part, dtype=dtype)


# --------------------------------------------------------------------------- latent draws

def post_factors(W_next, delta_x, delta_next, method="auto"):
    """Per-sweep constants of the post-activation draw (A.2) for one hidden layer.

    ``W_next``: (C, k, d + 1); ``delta_next``: (C,). Returns ``(method, factor)``: the lower
    Cholesky factor of ``S = Δ_X W W^⊤ + Δ' I`` (C, k, k) for ``"matheron"``, of
    ``Q' = I + (Δ_X/Δ') W^⊤W`` (C, d, d) for ``"cholesky"``.
    """
    C, k, d1 = W_next.shape
    d = d1 - 1
    Wh = W_next[..., :-1]
    if method == "auto":
        method = "matheron" if k < d else "cholesky"
    if method == "matheron":
        S = delta_x * np.matmul(Wh, np.swapaxes(Wh, -1, -2)) + delta_next[:, None, None] * np.eye(k, dtype=Wh.dtype)
        return method, linalg.cholesky(S)
    if method != "cholesky":
        raise ValueError(f"post_method must be 'auto', 'cholesky' or 'matheron', got {method!r}")
    ratio = (delta_x / delta_next)[:, None, None]
    Q = np.eye(d, dtype=Wh.dtype) + ratio * np.matmul(np.swapaxes(Wh, -1, -2), Wh)
    return method, linalg.cholesky(Q)


def latent_post_draw(factors, F, W_next, T_next, delta_x, delta_next, E1, E2):
    """Draw ``X^l`` rows given the standard normals (A.2; same formulas as
    :func:`blockbayes.gibbs.sample_post`).

    ``"matheron"``: ``x₀ = f(z) + √Δ_X E1``, ``X = x₀ + Δ_X S^{-1}(t − b − W x₀ − √Δ' E2) W``;
    ``"cholesky"``: ``X = R^{-⊤}(R^{-1} r + √Δ_X E1)`` with ``R R^⊤ = Q'``, ``r = f(z) + (Δ_X/Δ')(t − b)W``.
    ``F``, ``E1``: (C, m, d); ``T_next``, ``E2``: (C, m, k).
    """
    method, R = factors
    Wh = W_next[..., :-1]
    b = W_next[..., -1]
    sx = math.sqrt(delta_x)
    if method == "matheron":
        X0 = F + sx * E1
        Res = T_next - b[:, None, :] - np.matmul(X0, np.swapaxes(Wh, -1, -2)) - np.sqrt(delta_next)[:, None, None] * E2
        Yt = linalg.cho_solve(R, np.swapaxes(Res, -1, -2))          # (C, k, m)
        return X0 + delta_x * np.matmul(np.swapaxes(Yt, -1, -2), Wh)
    ratio = (delta_x / delta_next)[:, None, None]
    rhs = F + ratio * np.matmul(T_next - b[:, None, :], Wh)
    Y = linalg.solve_triangular(R, np.swapaxes(rhs, -1, -2), lower=True) + sx * np.swapaxes(E1, -1, -2)
    return np.swapaxes(linalg.solve_triangular(R, Y, lower=True, trans=True), -1, -2)


def latent_layer_draw(key, Z, A, T, W_next, delta_x, delta_z, delta_next, activation, slope, method, r0):
    """Draw one hidden layer's ``X^l`` (A.2) and then ``Z^l`` (A.3) for the global rows ``r0..``
    in one fused pass: :func:`blockbayes.kernels.latent_pass` (the dispatcher; Numba on NumPy
    arrays), the kernel ``gibbs.step`` uses, with ``row_offset=r0``.

    ``X ~ N(Q⁻¹r, Q⁻¹)``, ``Q = I/Δ_X + Ŵ^⊤Ŵ/Δ'``, ``r = f(z)/Δ_X + Ŵ^⊤(t − b)/Δ'`` (``[Ŵ b] = W_next``),
    then ``z ~ p(z | a, x_new)`` elementwise. ``Z``, ``A``: (C, m, d) (current pre-activations and
    their means ``X̃^{l-1}W̃^{l-1⊤}``); ``T``: (C, m, k) (the next layer's targets); ``W_next``:
    (C, k, d + 1); ``delta_next``: (C,). Every draw is keyed by ``(key, global row, chain,
    column)`` (counter ``(r·C + c)·d + j`` and its disjoint streams, :mod:`blockbayes.kernels`),
    so the result does not depend on the shard or block boundaries.

    Returns ``(X, Z, sums)``: (C, m, d) each in ``Z``'s dtype, and (C, 3) float64
    ``[Σ(Z_old − A)², Σ‖T − X̃W^⊤‖², Σ(X − f(Z))²]`` of the new latents.
    """
    return kernels.latent_pass(key, Z, A, T, W_next, delta_x, delta_z, delta_next, activation=activation,
                               slope=slope, method=method, row_offset=int(r0))


def _aug_gram(H):
    """``[H 1]^⊤[H 1]`` of one row block: H (C|1, m, d) → (C|1, d+1, d+1), float64.

    The block's products run in float64 whatever ``H``'s dtype (as the single-process sweep's,
    :func:`blockbayes.blocks.augmented_gram64`: a float32 Gram can be indefinite where a small
    ``Δ`` pins some directions; design note 52) and are accumulated across blocks and shards."""
    m = H.shape[-2]
    H = np.asarray(H, dtype=np.float64)
    HtH = np.matmul(np.swapaxes(H, -1, -2), H)
    s = H.sum(axis=-2, dtype=np.float64)
    top = np.concatenate([HtH, s[..., :, None]], axis=-1)
    bot = np.concatenate([s[..., None, :], np.full(s.shape[:-1] + (1, 1), float(m))], axis=-1)
    return np.concatenate([top, bot], axis=-2)


def _aug_cross(H, T, f64=False):
    """``[H 1]^⊤ T`` of one row block: (C|1, m, d), (C, m, k) → (C, d+1, k), float64. The block's
    products run in ``H``'s dtype for the data layer and in float64 for the others (``f64``), as
    the single-process sweep's (:func:`blockbayes.gibbs.conditionals.sample_rows`)."""
    if f64:
        H, T = np.asarray(H, dtype=np.float64), np.asarray(T, dtype=np.float64)
    HtT = np.matmul(np.swapaxes(H, -1, -2), T).astype(np.float64)
    s = T.sum(axis=-2, dtype=np.float64)[..., None, :]
    HtT = np.broadcast_to(HtT, s.shape[:-2] + HtT.shape[-2:])
    return np.concatenate([HtT, s], axis=-2)


def _sumsq(R):
    """``Σ_{m,k} R²`` per chain, float64 (block products in ``R``'s dtype)."""
    C = R.shape[0]
    R2 = R.reshape(C, -1)
    return np.einsum("ci,ci->c", R2, R2).astype(np.float64)


def block_stats(net: MLP, Xb, Tout, pre, post, weights=None, learn_noise=False, latent_sums=None):
    """Sufficient statistics of block 1 over a row block, float64 (summed over rows).

    Returns a dict: ``G`` list over layers ``l ≥ 2`` of ``X̃^{l⊤}X̃^l`` (C, d_l+1, d_l+1) (the
    data Gram of layer 1 is constant and kept apart); ``B`` list over all layers of
    ``X̃^{l⊤}T^l`` (C, d_l+1, d_{l+1}); ``tt`` (C, L) ``‖T^l‖²``; ``xr`` (C, L−1)
    ``‖X^l − f(Z^l)‖²``; ``sse`` (C,) ``‖T^L − X̃^L W̃^{L⊤}‖²`` with ``weights`` (only if
    ``learn_noise``, else None).

    ``latent_sums``: the (C, 3) sums the fused latent passes that drew ``pre``/``post`` returned,
    one per hidden layer (:func:`latent_layer_draw`); ``xr`` is then their third column and
    ``sse`` the second column of the last hidden layer's pass (the pass's ``W^⊤`` is
    ``weights[L-1]``), instead of another pass over the rows.
    """
    L = net.num_layers
    G, B, tt, xr = [], [], [], []
    for l in range(L):
        H = Xb[None] if l == 0 else post[l - 1]
        T = Tout if l == L - 1 else pre[l]
        if l > 0:
            G.append(_aug_gram(H))
        B.append(_aug_cross(H, T, f64=l > 0))
        tt.append(_sumsq(np.ascontiguousarray(T)))
        if l < L - 1:
            xr.append(latent_sums[l][:, 2] if latent_sums is not None else
                      _sumsq(post[l] - _act(pre[l], net.activation, net.slope)))
    C = tt[0].shape[0]
    out = dict(G=G, B=B, tt=np.stack(tt, axis=-1), xr=np.stack(xr, axis=-1) if xr else np.zeros((C, 0)), sse=None)
    if learn_noise:
        if latent_sums is not None and L > 1:
            out["sse"] = np.asarray(latent_sums[L - 2][:, 1], dtype=np.float64)
        else:
            H = Xb[None] if L == 1 else post[L - 2]
            out["sse"] = _sumsq(Tout - _affine(H, weights[L - 1]))
    return out


def add_stats(a, b):
    """Sum of two statistics dicts (``None`` entries stay ``None``)."""
    if a is None:
        return b
    return dict(G=[x + y for x, y in zip(a["G"], b["G"])], B=[x + y for x, y in zip(a["B"], b["B"])],
                tt=a["tt"] + b["tt"], xr=a["xr"] + b["xr"],
                sse=None if a["sse"] is None else a["sse"] + b["sse"])


def tree_sum(parts):
    """Pairwise (tree) sum of a list of statistics in list order (deterministic rounding)."""
    parts = list(parts)
    if not parts:
        raise ValueError("no statistics to sum")
    while len(parts) > 1:
        nxt = [add_stats(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return parts[0]


# --------------------------------------------------------------------------- the shard

class Shard:
    """Rows ``r0 .. r0 + n_s`` of ``N`` global rows with their latents (``C`` chains).

    Parameters
    ----------
    net : MLP
        Gaussian likelihood.
    X : array-like, shape (n_s, d_in)
        NumPy array, memory map or Dask array (read block by block; Dask blocks are computed
        synchronously in this process, never sent anywhere).
    y : array-like, shape (n_s, d_out) or (n_s,), or NumPy (C, n_s, d_out)
        The last form: one target set per chain (simulation-based tests).
    r0, N : int
        Global index of the first row; global number of rows.
    num_chains : int
    dtype : numpy dtype of the latents and the arithmetic (float32 or float64).
    block_rows : int
        Rows per block of the row-local loop (bounds working memory).
    latent_dir : str, optional
        Keep the latents in ``.npy`` memory maps in this directory (out of core).
    in_memory : bool
        Copy ``X``/``y`` into process memory once (default); else re-read each sweep.
    """

    def __init__(self, net: MLP, X, y, r0: int, N: int, *, num_chains: int, dtype="float64",
                 block_rows: int = 65536, latent_dir: Optional[str] = None, in_memory: bool = True,
                 post_method: str = "auto"):
        self.net = net
        self.dtype = np.dtype(dtype)
        self.n = int(X.shape[0])
        self.per_chain_y = len(y.shape) == 3
        if int(y.shape[1 if self.per_chain_y else 0]) != self.n:
            raise ValueError(f"shard X has {self.n} rows but y has shape {tuple(y.shape)}")
        self.r0, self.N, self.C = int(r0), int(N), int(num_chains)
        self.block_rows = int(block_rows)
        self.post_method = post_method
        if in_memory or self.per_chain_y:
            X = _rows(X, 0, self.n, self.dtype)
            y = np.asarray(y, dtype=self.dtype) if self.per_chain_y else _rows(y, 0, self.n, self.dtype)
            if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
                raise ValueError(f"the data rows {self.r0}..{self.r0 + self.n} contain NaN or infinite values")
        self.X, self.y = X, y
        self.latent_dir = latent_dir
        self.pre, self.post = [], []
        for h in range(net.num_layers - 1):
            d = net.widths[h + 1]
            self.pre.append(self._alloc(f"pre{h}", (self.C, self.n, d)))
            self.post.append(self._alloc(f"post{h}", (self.C, self.n, d)))

    # ------------------------------------------------------------------ storage
    def _alloc(self, name, shape):
        if self.latent_dir is None:
            return np.zeros(shape, dtype=self.dtype)
        os.makedirs(self.latent_dir, exist_ok=True)
        path = os.path.join(self.latent_dir, f"{name}_{self.r0}_{self.r0 + self.n}.npy")
        return np.lib.format.open_memmap(path, mode="w+", dtype=self.dtype, shape=shape)

    def _blocks(self):
        for b0 in range(0, self.n, self.block_rows):
            yield b0, min(b0 + self.block_rows, self.n)

    def _data(self, b0, b1):
        Xb = _rows(self.X, b0, b1, self.dtype)
        if self.per_chain_y:
            return Xb, self.y[:, b0:b1]
        yb = _rows(self.y, b0, b1, self.dtype)
        if yb.ndim == 1:
            yb = yb[:, None]
        return Xb, np.broadcast_to(yb[None], (self.C,) + yb.shape)

    def info(self):
        """``(r0, n_s)``."""
        return self.r0, self.n

    def nbytes(self):
        """Bytes held by the latents."""
        return int(sum(a.nbytes for a in self.pre + self.post))

    # ------------------------------------------------------------------ statistics
    def data_gram(self):
        """``X̃^{1⊤} X̃^1`` over the shard's rows (float64, (d_in+1, d_in+1)); constant. The products
        run in float64 whatever the data's dtype, as in the single-process sweep
        (:func:`blockbayes.gibbs.kernel.data_gram`: collinear inputs make the first layer's factor
        ill-conditioned)."""
        G = None
        for b0, b1 in self._blocks():
            Xb, _ = self._data(b0, b1)
            g = _aug_gram(Xb)
            G = g if G is None else G + g
        return G

    def stats(self, weights, learn_noise=False):
        """:func:`block_stats` over the shard with the current latents."""
        weights = [np.asarray(W, dtype=self.dtype) for W in weights]
        acc = None
        for b0, b1 in self._blocks():
            Xb, Tb = self._data(b0, b1)
            pre = [Z[:, b0:b1] for Z in self.pre]
            post = [Xh[:, b0:b1] for Xh in self.post]
            acc = add_stats(acc, block_stats(self.net, Xb, Tb, pre, post, weights, learn_noise))
        return acc

    # ------------------------------------------------------------------ init
    def init_latents(self, weights, key, noisy=True, zero=False):
        """Auxiliaries from the (noisy) forward pass of ``weights`` (or zeros), keyed by row."""
        net = self.net
        weights = [np.asarray(W, dtype=self.dtype) for W in weights]
        for b0, b1 in self._blocks():
            Xb, _ = self._data(b0, b1)
            H = Xb[None]
            for h in range(net.num_layers - 1):
                if zero:
                    self.pre[h][:, b0:b1] = 0
                    self.post[h][:, b0:b1] = 0
                    continue
                d = net.widths[h + 1]
                Z = _affine(H, weights[h])
                if noisy:
                    Z = Z + math.sqrt(net.delta_z[h]) * rnd.normals(rnd.fold_in(key, h, 0), self.C, self.N,
                                                                     self.r0 + b0, b1 - b0, d, self.dtype)
                Xh = _act(Z, net.activation, net.slope)
                if noisy:
                    Xh = Xh + math.sqrt(net.delta_x[h]) * rnd.normals(rnd.fold_in(key, h, 1), self.C, self.N,
                                                                       self.r0 + b0, b1 - b0, d, self.dtype)
                self.pre[h][:, b0:b1] = Z
                self.post[h][:, b0:b1] = Xh
                H = Xh
        return self.n

    def set_latents(self, pre, post):
        """Overwrite the latents with given arrays (global-state slices, (C, n_s, d))."""
        for h in range(len(self.pre)):
            self.pre[h][...] = pre[h]
            self.post[h][...] = post[h]
        return self.n

    def get_latents(self):
        """The latents as NumPy arrays (copies)."""
        return [np.array(Z) for Z in self.pre], [np.array(Xh) for Xh in self.post]

    # ------------------------------------------------------------------ block 2
    def sweep(self, weights, delta_y, key, learn_noise=False, return_stats=True):
        """All latents | all weights (row-local), then block-1 statistics.

        Per block of rows and hidden layer ``l = L..2`` (``h = l − 2`` in the lists): one
        :func:`latent_layer_draw` (``X^l`` then ``Z^l``) with key ``fold_in(key, h)`` and the
        block's global first row as ``row_offset``, given the new ``Z^{l+1}`` (or ``y``) and the
        not yet updated ``X^{l-1}`` — the order of ``gibbs.step``'s latent updates.

        ``weights``: per layer (C, d_{l+1}, d_l + 1); ``delta_y``: (C,); ``key``: the sweep's
        latent key. Returns the statistics dict of the new latents (and, for ``sse``, the
        given output weights); ``xr`` and ``sse`` come from the fused passes' sums.
        """
        net = self.net
        L = net.num_layers
        dt = self.dtype
        weights = [np.asarray(W, dtype=dt) for W in weights]
        delta_y = np.asarray(delta_y, dtype=np.float64)
        dnext = {l: delta_y if l == L - 1 else np.full(self.C, net.delta_z[l]) for l in range(1, L)}
        acc = None
        for b0, b1 in self._blocks():
            Xb, Tout = self._data(b0, b1)
            pre = [Z[:, b0:b1] for Z in self.pre]
            post = [Xh[:, b0:b1] for Xh in self.post]
            sums = [None] * (L - 1)
            for l in range(L - 1, 0, -1):
                h = l - 1
                T = Tout if l == L - 1 else pre[l]
                Hprev = Xb[None] if h == 0 else post[h - 1]
                A = _affine(Hprev, weights[h])
                post[h], pre[h], sums[h] = latent_layer_draw(
                    rnd.fold_in(key, h), pre[h], A, T, weights[l], net.delta_x[h], net.delta_z[h], dnext[l],
                    net.activation, net.slope, self.post_method, self.r0 + b0)
            for h in range(L - 1):
                self.pre[h][:, b0:b1] = pre[h]
                self.post[h][:, b0:b1] = post[h]
            if return_stats:
                acc = add_stats(acc, block_stats(net, Xb, Tout, pre, post, weights, learn_noise, sums))
        return acc

    # ------------------------------------------------------------------ fault recovery
    def recover(self, weights, delta_y, key, max_tries=1000):
        """Draw every latent of the shard exactly from ``p(Z, X | W, x, y)`` (Gaussian output).

        Per row and chain independently: propose the hidden layers by the noisy forward pass
        ``Z^2, X^2, …, Z^L`` (``X^L`` left out) and accept with probability
        ``exp(−½ rᵀS^{-1}r)``, ``r = y − b − W f(Z^L)``, ``S = Δ_y I + Δ_X W W^⊤`` — the
        likelihood ``p(y | Z^L, W) = N(y; b + W f(Z^L), S)`` (``X^L`` integrated out) over its
        maximum, so accepted proposals are exact draws of ``p(Z^{2..L}, X^{2..L-1} | W, x, y)``;
        then ``X^L | Z^L, y`` from its Gaussian conditional (A.2). Rows not accepted after
        ``max_tries`` proposals keep their last proposal (then an ordinary latent update), and
        are counted. Randomness keyed by ``(key, try, global row)``.

        Returns the number of (row, chain) pairs that hit ``max_tries``.
        """
        net = self.net
        L = net.num_layers
        if L == 1:
            return 0
        dt = self.dtype
        weights = [np.asarray(W, dtype=np.float64) for W in weights]
        delta_y = np.asarray(delta_y, dtype=np.float64)
        hl = L - 2
        Wl = weights[L - 1]
        Wh, bl = Wl[..., :-1], Wl[..., -1]
        k = net.widths[-1]
        S = np.eye(k) * delta_y[:, None, None] + net.delta_x[hl] * np.matmul(Wh, np.swapaxes(Wh, -1, -2))
        RS = linalg.cholesky(S)
        failed = 0
        cidx = np.arange(self.C, dtype=np.uint64)[:, None]
        for b0, b1 in self._blocks():
            Xb, Tout = self._data(b0, b1)
            m = b1 - b0
            rows = np.arange(self.r0 + b0, self.r0 + b1, dtype=np.uint64)[None, :]
            base = cidx * np.uint64(self.N) + rows          # (C, m)
            pending = np.ones((self.C, m), dtype=bool)
            pre = [np.zeros((self.C, m, net.widths[h + 1])) for h in range(L - 1)]
            post = [np.zeros((self.C, m, net.widths[h + 1])) for h in range(L - 1)]
            for t in range(max_tries):
                kt = rnd.fold_in(key, t)
                H = Xb[None].astype(np.float64)
                for h in range(L - 1):
                    d = net.widths[h + 1]
                    cnt = base[..., None] * np.uint64(d) + np.arange(d, dtype=np.uint64)
                    Z = _affine(H, weights[h]) + math.sqrt(net.delta_z[h]) * rnd.counter_normals(rnd.fold_in(kt, h, 0), cnt)
                    sel = pending[..., None]
                    pre[h] = np.where(sel, Z, pre[h])
                    if h < hl:
                        Xh = _act(Z, net.activation, net.slope) + math.sqrt(net.delta_x[h]) * rnd.counter_normals(
                            rnd.fold_in(kt, h, 1), cnt)
                        post[h] = np.where(sel, Xh, post[h])
                        H = Xh
                r = Tout.astype(np.float64) - bl[:, None, :] - np.matmul(_act(pre[hl], net.activation, net.slope),
                                                                         np.swapaxes(Wh, -1, -2))
                v = linalg.solve_triangular(RS, np.swapaxes(r, -1, -2), lower=True)   # (C, k, m)
                logacc = -0.5 * np.sum(v * v, axis=-2)
                u = rnd.counter_uniforms(rnd.fold_in(kt, L, 0), base)
                pending &= ~(np.log(u) < logacc)
                if not pending.any():
                    break
            failed += int(pending.sum())
            d = net.widths[hl + 1]
            cnt = base[..., None] * np.uint64(d) + np.arange(d, dtype=np.uint64)
            kx = rnd.fold_in(key, max_tries + 1)
            E1 = rnd.counter_normals(rnd.fold_in(kx, 0), cnt)
            cntk = base[..., None] * np.uint64(k) + np.arange(k, dtype=np.uint64)
            E2 = rnd.counter_normals(rnd.fold_in(kx, 1), cntk)
            fac = post_factors(Wl, net.delta_x[hl], delta_y, "matheron")
            post[hl] = latent_post_draw(fac, _act(pre[hl], net.activation, net.slope), Wl, Tout.astype(np.float64),
                                        net.delta_x[hl], delta_y, E1, E2)
            for h in range(L - 1):
                self.pre[h][:, b0:b1] = pre[h].astype(dt)
                self.post[h][:, b0:b1] = post[h].astype(dt)
        return failed

    # ------------------------------------------------------------------ checkpoints
    def save(self, directory, tag):
        """Write the latents to ``directory/latents_{tag}_{r0}_{r1}.npz`` (atomically)."""
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"latents_{tag}_{self.r0}_{self.r0 + self.n}.npz")
        tmp = path + ".tmp.npz"
        np.savez(tmp, **{f"pre{h}": np.asarray(Z) for h, Z in enumerate(self.pre)},
                 **{f"post{h}": np.asarray(Xh) for h, Xh in enumerate(self.post)})
        os.replace(tmp, path)
        return path

    def load(self, directory, tag):
        """Read the latents written by :meth:`save` for this row range."""
        path = os.path.join(directory, f"latents_{tag}_{self.r0}_{self.r0 + self.n}.npz")
        if not os.path.exists(path):
            raise FileNotFoundError(f"no checkpointed latents for rows {self.r0}..{self.r0 + self.n} "
                                    f"({path}); resume needs the same shard layout")
        with np.load(path) as f:
            for h in range(len(self.pre)):
                self.pre[h][...] = f[f"pre{h}"]
                self.post[h][...] = f[f"post{h}"]
        return path
