"""Structured Gaussian posteriors ``N(θ*, P^{-1})``: factorisation and covariance algebra.

``P = φ·GGN + Λ`` on the *active* layers (all, or the last one), where ``GGN`` is the
Gauss–Newton matrix of the data term at ``θ*`` in one of four structures, ``Λ`` the diagonal
prior precision and ``φ = 1/Δ_y`` for the Gaussian likelihood (1 otherwise). The curvature is
stored at unit noise so that the noise variance and the prior can be re-tuned without another
pass over the data (as laplace-torch does, the mode ``θ*`` is not refitted).

Structures (per active layer ``l``, ``d = d_{l+1}``, ``k = d_l + 1``; MATH.md §D.4–D.6):

``"diag"``
    ``P = diag(φ·diag(GGN) + λ)``: ``d·k`` numbers.
``"block"``
    Node blocks ``P_{l,i} = Λ_l + φ Σ_μ c_{μi} h̃_μ h̃_μᵀ`` (exact diagonal blocks of the GGN, one per
    node row), factorised by Cholesky: ``d·k²`` numbers. The posterior of the iterative
    block Laplace.
``"kfac"``
    ``P_l = φ B_l ⊗ A_l + I ⊗ Λ_l`` with ``A_l = (1/n) Σ h̃h̃ᵀ``, ``B_l = Σ_μ B_μ``; handled by the
    eigendecompositions of ``B_l`` and ``Λ^{-1/2} A_l Λ^{-1/2}`` (exact for any per-column prior).
    ``kfac_bias="separate"`` drops the weight–bias cross terms and uses factors ``(B, A_w)`` and
    ``(B, 1)``, the convention of laplace-torch/curvlinops.
``"full"``
    The dense ``P`` over all active parameters (layer by layer, each row-major), by Cholesky.

Linear algebra: Cholesky factors and triangular solves (``eigh`` for the Kronecker factors);
no explicit inverse anywhere.
"""
from __future__ import annotations

import abc
import math

from .._backend import device_of, namespace
from .._backend.linalg import cholesky, solve_triangular
from ._mlp_grad import jacobian, output_jacobian_factors, prior_vector

__all__ = ["StructuredGaussian", "Structure", "Diag", "Block", "KFAC", "Full", "STRATEGIES", "strategy_for"]


class StructuredGaussian:
    """Factorisation and covariance algebra of ``P = φ·GGN + Λ`` for the four structures.

    Base of :class:`~blockbayes.laplace.LaplaceResult`; expects the attributes ``net``, ``likelihood``,
    ``structure``, ``subset``, ``layers``, ``weights``, ``kfac_bias``, ``_curv``, ``_lam_w``, ``_lam_b``,
    ``_delta_y`` and ``_fac`` (the cached factorisation, ``None`` when stale). The algebra of each
    structure is a :class:`Structure` strategy (:class:`Diag`, :class:`Block`, :class:`KFAC`,
    :class:`Full`), chosen once from ``(subset, structure)`` by :func:`strategy_for`.
    """

    # ------------------------------------------------------------------ basic properties
    @property
    def mean(self):
        """The mode ``θ*`` (alias of ``weights``)."""
        return self.weights

    @property
    def xp(self):
        return namespace(self.weights[0])

    @property
    def dtype(self):
        return self.weights[0].dtype

    @property
    def device(self):
        return device_of(self.weights[0])

    @property
    def num_outputs(self) -> int:
        return self.net.d_out

    @property
    def delta_y(self) -> float:
        return self._delta_y

    @property
    def sigma_noise(self) -> float:
        return math.sqrt(self._delta_y)

    @property
    def prior_precision(self):
        return tuple(zip(self._lam_w, self._lam_b))

    @property
    def num_params(self) -> int:
        """Number of parameters in the active layers."""
        return sum(self._shape(l)[0] * self._shape(l)[1] for l in self.layers)

    def _shape(self, l):
        return int(self.weights[l].shape[0]), int(self.weights[l].shape[1])

    def _phi(self) -> float:
        return 1.0 / self._delta_y if self.likelihood == "gaussian" else 1.0

    def _lam(self, l):
        d, k = self._shape(l)
        return prior_vector(self.xp, self._lam_w[l], self._lam_b[l], k - 1, dtype=self.dtype, device=self.device)

    def _set_hyper(self, lam_w=None, lam_b=None, delta_y=None):
        if lam_w is not None:
            self._lam_w = tuple(float(v) for v in lam_w)
        if lam_b is not None:
            self._lam_b = tuple(float(v) for v in lam_b)
        if delta_y is not None:
            self._delta_y = float(delta_y)
        self._fac = None

    def __repr__(self):
        return (f"LaplaceResult(structure={self.structure!r}, subset={self.subset!r}, "
                f"likelihood={self.likelihood!r}, layers={self.layers}, n={self.n}, "
                f"num_params={self.num_params}, delta_y={self._delta_y:.4g}, "
                f"prior_precision={self.prior_precision})")

    @property
    def strategy(self) -> "Structure":
        """The :class:`Structure` strategy doing this posterior's linear algebra."""
        st = self.__dict__.get("_strategy")
        if st is None or st.owner is not self:
            st = strategy_for(self.subset, self.structure)(self)
            self.__dict__["_strategy"] = st
        return st

    # ------------------------------------------------------------------ factorisation
    def _factor(self):
        """Factorise ``P`` for the current hyperparameters (cached)."""
        if self._fac is None:
            self._fac = self.strategy.factor(self._phi())
        return self._fac

    # ------------------------------------------------------------------ covariance primitives
    def _cov_apply(self, V: dict) -> dict:
        """``Σ v`` for a batch of active-layer vectors ``V[l]`` of shape ``(b, d, k)``."""
        return self.strategy.cov_apply(self._factor(), V)

    def _cov_sqrt_apply(self, E: dict) -> dict:
        """``Σ^{1/2} ε`` (any square root with ``Σ^{1/2} Σ^{1/2 ⊤} = Σ``), ``E[l]`` of shape ``(b, d, k)``."""
        return self.strategy.sqrt_apply(self._factor(), E)

    def _place(self, base, Z, c0, c1):
        """``base`` with columns ``c0:c1`` replaced by ``Z`` (functional; no item assignment)."""
        xp = self.xp
        k = base.shape[-1]
        parts = []
        if c0 > 0:
            parts.append(base[..., :c0])
        parts.append(Z)
        if c1 < k:
            parts.append(base[..., c1:])
        return xp.concat(parts, axis=-1) if len(parts) > 1 else Z

    def _flatten(self, V: dict):
        xp = self.xp
        parts = [xp.reshape(V[l], (V[l].shape[0], -1)) for l in self.layers]
        return xp.concat(parts, axis=1) if len(parts) > 1 else parts[0]

    def _unflatten(self, flat) -> dict:
        xp = self.xp
        out, o = {}, 0
        for l in self.layers:
            d, k = self._shape(l)
            out[l] = xp.reshape(flat[:, o:o + d * k], (flat.shape[0], d, k))
            o += d * k
        return out

    def _zeros(self, l):
        return self.xp.zeros(self._shape(l), dtype=self.dtype, device=self.device)

    def marginal_variance(self) -> tuple:
        """Posterior variances of the weights, per layer ``(d_{l+1}, d_l + 1)``.

        Inactive layers (``subset="last_layer"``) get zeros. ``diag`` reads them off ``P``;
        ``block``/``full`` use ``diag(P^{-1}) = column sums of (R^{-1})²`` with ``P = RRᵀ``
        (a triangular solve against ``I``); ``kfac`` uses the eigenbasis:
        ``Var_{ij} = [(U_B∘U_B) D (U_A∘U_A)ᵀ]_{ij} / λ_j``.
        """
        out = self.strategy.marginal_variance(self._factor())
        return tuple(out[l] if l in out else self._zeros(l) for l in range(self.net.num_layers))

    def posterior_covariance(self):
        """Dense posterior covariance over the active parameters, shape ``(P, P)``.

        Parameter order: active layers ascending, each ``(d_{l+1}, d_l + 1)`` row-major (bias last
        in each row). Built by applying ``Σ`` to the identity: ``O(P²)`` memory, for small nets/tests.
        """
        xp = self.xp
        Pn = self.num_params
        eye = xp.eye(Pn, dtype=self.dtype, device=self.device)
        S = self._flatten(self._cov_apply(self._unflatten(eye)))
        return (S + xp.matrix_transpose(S)) / 2

    def posterior_precision(self):
        """Dense posterior precision ``P`` over the active parameters, shape ``(P, P)`` (small nets/tests)."""
        return self.strategy.dense_precision(self._phi())

    def log_det_posterior_precision(self):
        """``log |P|`` over the active parameters (0-d array)."""
        return self.strategy.log_det(self._factor())

    def _glm_chunk(self, Xc):
        """Output mean ``(m, C)`` and GLM covariance ``J Σ Jᵀ`` ``(m, C, C)`` at the inputs ``Xc``."""
        return self.strategy.glm_cov(self._factor(), Xc)


# ----------------------------------------------------------------------------------- strategies
class Structure(abc.ABC):
    """The linear algebra of one curvature structure (a strategy, as laplace-torch's
    ``DiagLaplace``/``KronLaplace``/``FullLaplace``).

    Bound to its owner (a :class:`StructuredGaussian`: weights, active layers, curvature
    ``_curv``, prior ``_lam(l)``); every method takes the factorisation returned by
    :meth:`factor` for the current ``φ`` and prior, so that hyperparameter changes only refactor.
    Vectors over the active parameters are dicts ``{l: (b, d, k)}``.

    Methods: :meth:`factor` (``P = φ·GGN + Λ`` → factorisation), :meth:`cov_apply` (``Σ v``),
    :meth:`sqrt_apply` (``Σ^{1/2} ε``), :meth:`log_det` (``log |P|``), :meth:`marginal_variance`
    (``diag Σ``), :meth:`glm_cov` (``F(x)`` and ``J Σ Jᵀ``), :meth:`dense_precision` (``P``, tests).
    """

    name = ""

    def __init__(self, owner):
        self.owner = owner

    # shortcuts
    @property
    def xp(self):
        return self.owner.xp

    def eye(self, k):
        o = self.owner
        return self.xp.eye(k, dtype=o.dtype, device=o.device)

    @abc.abstractmethod
    def factor(self, phi):
        """Implemented by each structure (Diag, Block, KFAC, Full)."""

    @abc.abstractmethod
    def cov_apply(self, fac, V):
        """Implemented by each structure (Diag, Block, KFAC, Full)."""

    @abc.abstractmethod
    def sqrt_apply(self, fac, E):
        """Implemented by each structure (Diag, Block, KFAC, Full)."""

    @abc.abstractmethod
    def log_det(self, fac):
        """Implemented by each structure (Diag, Block, KFAC, Full)."""

    @abc.abstractmethod
    def marginal_variance(self, fac) -> dict:
        """Implemented by each structure (Diag, Block, KFAC, Full)."""

    @abc.abstractmethod
    def dense_precision(self, phi):
        """``P = φ·GGN + Λ`` as a dense ``(p, p)`` matrix over the active parameters (tests)."""

    @abc.abstractmethod
    def glm_cov(self, fac, Xc):
        """``F(x)`` ``(m, C)`` and the linearised predictive covariance ``J Σ Jᵀ`` ``(m, C, C)``."""


class Layerwise(Structure):
    """A structure whose data precision acts layer by layer (Diag, Block, KFAC): the dense
    precision is assembled from :meth:`precision_apply_layer`."""

    @abc.abstractmethod
    def precision_apply_layer(self, phi, l, Vl):
        """``φ·GGN_l v`` (data part only) for ``Vl`` of shape ``(b, d, k)``."""

    def dense_precision(self, phi):
        o, xp = self.owner, self.xp
        eye = self.eye(o.num_params)
        V = o._unflatten(eye)
        out = {l: self.precision_apply_layer(phi, l, V[l]) + V[l] * o._lam(l)[None, None, :] for l in o.layers}
        Pm = o._flatten(out)
        return (Pm + xp.matrix_transpose(Pm)) / 2


class RowIndependent(Layerwise):
    """A structure whose covariance is independent across a layer's rows (Diag, Block): the
    predictive covariance needs only each node's ``h̃ᵀ Σ_{l,i} h̃`` (:meth:`row_var`)."""

    def glm_cov(self, fac, Xc):
        """``F(x)`` ``(m, C)`` and ``Σ_l G_l diag(h̃ᵀ Σ_{l,i} h̃) G_lᵀ`` ``(m, C, C)`` for the
        row-independent structures (``row_var`` gives ``h̃ᵀ Σ_{l,i} h̃`` per node)."""
        o, xp = self.owner, self.xp
        F, Ht, G = output_jacobian_factors(o.net, o.weights, Xc, o.layers)
        m, Cn = F.shape
        V = xp.zeros((m, Cn, Cn), dtype=o.dtype, device=o.device)
        for l in o.layers:
            Gl = G[l]                                                            # (m, d, C)
            Gp = xp.permute_dims(Gl, (0, 2, 1))                                  # (m, C, d)
            T = self.row_var(fac, l, Ht[l])                                      # (m, d)
            V = V + xp.matmul(Gp * T[:, None, :], Gl)
        return F, V

    @abc.abstractmethod
    def row_var(self, fac, l, H):
        """``h̃ᵀ Σ_{l,i} h̃`` ``(m, d)`` per node ``i`` of layer ``l``, for the layer's augmented
        inputs ``H`` (one row ``h̃`` per test point)."""


class Diag(RowIndependent):
    """``P = diag(φ·diag(GGN) + λ)``: ``d·k`` numbers per layer."""

    name = "diag"

    def factor(self, phi):
        o = self.owner
        return {"prec": {l: phi * o._curv["diag"][l] + o._lam(l)[None, :] for l in o.layers}}

    def cov_apply(self, fac, V):
        return {l: V[l] / fac["prec"][l][None, :, :] for l in self.owner.layers}

    def sqrt_apply(self, fac, E):
        xp = self.xp
        return {l: E[l] / xp.sqrt(fac["prec"][l])[None, :, :] for l in self.owner.layers}

    def log_det(self, fac):
        xp = self.xp
        return sum(xp.sum(xp.log(fac["prec"][l])) for l in self.owner.layers)

    def marginal_variance(self, fac):
        return {l: 1.0 / fac["prec"][l] for l in self.owner.layers}

    def precision_apply_layer(self, phi, l, Vl):
        return Vl * (phi * self.owner._curv["diag"][l])[None, :, :]

    def row_var(self, fac, l, H):
        xp = self.xp
        return xp.matmul(H * H, xp.matrix_transpose(1.0 / fac["prec"][l]))    # (m, d)


class Block(RowIndependent):
    """Node blocks ``P_{l,i} = Λ_l + φ Σ_μ c_{μi} h̃_μ h̃_μᵀ`` by Cholesky: ``d·k²`` numbers per layer."""

    name = "block"

    def factor(self, phi):
        o = self.owner
        chol = {}
        for l in o.layers:
            d, k = o._shape(l)
            lam = o._lam(l)
            Pb = phi * o._curv["block"][l] + self.eye(k)[None, :, :] * lam[None, None, :]
            chol[l] = cholesky(Pb)
        return {"chol": chol}

    def cov_apply(self, fac, V):
        xp = self.xp
        out = {}
        for l in self.owner.layers:
            R = fac["chol"][l]                                            # (d, k, k)
            Vt = xp.permute_dims(V[l], (1, 2, 0))                           # (d, k, b)
            Z = solve_triangular(R, Vt, lower=True)
            Z = solve_triangular(R, Z, lower=True, trans=True)
            out[l] = xp.permute_dims(Z, (2, 0, 1))
        return out

    def sqrt_apply(self, fac, E):
        xp = self.xp
        out = {}
        for l in self.owner.layers:
            Z = solve_triangular(fac["chol"][l], xp.permute_dims(E[l], (1, 2, 0)), lower=True, trans=True)
            out[l] = xp.permute_dims(Z, (2, 0, 1))
        return out

    def log_det(self, fac):
        xp = self.xp
        return sum(2.0 * xp.sum(xp.log(xp.linalg.diagonal(fac["chol"][l]))) for l in self.owner.layers)

    def marginal_variance(self, fac):
        xp, o = self.xp, self.owner
        out = {}
        for l in o.layers:
            d, k = o._shape(l)
            eye = xp.broadcast_to(self.eye(k)[None, :, :], (d, k, k))
            Rinv = solve_triangular(fac["chol"][l], eye, lower=True)       # R^{-1}
            out[l] = xp.sum(Rinv * Rinv, axis=1)                            # diag(R^{-T}R^{-1})
        return out

    def precision_apply_layer(self, phi, l, Vl):
        xp = self.xp
        Vi = xp.permute_dims(Vl, (1, 2, 0))                                  # (d, k, b)
        return xp.permute_dims(phi * xp.matmul(self.owner._curv["block"][l], Vi), (2, 0, 1))

    def row_var(self, fac, l, H):
        xp = self.xp
        R = fac["chol"][l]
        d, k = self.owner._shape(l)
        m = H.shape[0]
        Hb = xp.broadcast_to(xp.matrix_transpose(H)[None, :, :], (d, k, m))
        Z = solve_triangular(R, Hb, lower=True)                            # (d, k, m)
        return xp.matrix_transpose(xp.sum(Z * Z, axis=1))                 # (m, d)


class KFAC(Layerwise):
    """``P_l = φ B_l ⊗ A_l + I ⊗ Λ_l`` in the eigenbases of ``B_l`` and ``Λ^{-1/2} A_l Λ^{-1/2}``
    (``kfac_bias="separate"``: weight and bias column groups without cross terms)."""

    name = "kfac"

    def _eigB(self, l):
        o = self.owner
        cache = o._curv.setdefault("_eigB", {})
        if l not in cache:
            xp = self.xp
            B = o._curv["B"][l]
            ev = xp.linalg.eigh((B + xp.matrix_transpose(B)) / 2)
            cache[l] = (xp.maximum(ev.eigenvalues, xp.zeros_like(ev.eigenvalues)), ev.eigenvectors)
        return cache[l]

    def factor(self, phi):
        xp, o = self.xp, self.owner
        groups = []
        for l in o.layers:
            d, k = o._shape(l)
            A = o._curv["A"][l]
            sB, UB = self._eigB(l)
            lam = o._lam(l)
            spans = [(0, k)] if o.kfac_bias == "joint" else [(0, k - 1), (k - 1, k)]
            for c0, c1 in spans:
                if c1 <= c0:
                    continue
                lg = lam[c0:c1]
                rs = 1.0 / xp.sqrt(lg)
                At = A[c0:c1, c0:c1] * rs[:, None] * rs[None, :]
                ev = xp.linalg.eigh((At + xp.matrix_transpose(At)) / 2)
                tA = xp.maximum(ev.eigenvalues, xp.zeros_like(ev.eigenvalues))
                Dinv = 1.0 / (phi * sB[:, None] * tA[None, :] + 1.0)
                groups.append(dict(layer=l, c0=c0, c1=c1, UB=UB, sB=sB,
                                   UA=ev.eigenvectors, tA=tA, rs=rs, lam=lg, Dinv=Dinv, phi=phi))
        return {"groups": groups}

    def cov_apply(self, fac, V):
        xp, o = self.xp, self.owner
        out = {l: xp.zeros_like(V[l]) for l in o.layers}
        for g in fac["groups"]:
            l, c0, c1 = g["layer"], g["c0"], g["c1"]
            Vg = V[l][:, :, c0:c1] * g["rs"][None, None, :]
            Z = xp.matmul(xp.matmul(xp.matrix_transpose(g["UB"]), Vg), g["UA"]) * g["Dinv"][None, :, :]
            Z = xp.matmul(xp.matmul(g["UB"], Z), xp.matrix_transpose(g["UA"])) * g["rs"][None, None, :]
            out[l] = o._place(out[l], Z, c0, c1)
        return out

    def sqrt_apply(self, fac, E):
        xp, o = self.xp, self.owner
        out = {l: xp.zeros_like(E[l]) for l in o.layers}
        for g in fac["groups"]:
            l, c0, c1 = g["layer"], g["c0"], g["c1"]
            Z = E[l][:, :, c0:c1] * xp.sqrt(g["Dinv"])[None, :, :]
            Z = xp.matmul(xp.matmul(g["UB"], Z), xp.matrix_transpose(g["UA"])) * g["rs"][None, None, :]
            out[l] = o._place(out[l], Z, c0, c1)
        return out

    def log_det(self, fac):
        xp, o = self.xp, self.owner
        tot = xp.zeros((), dtype=o.dtype, device=o.device)
        for g in fac["groups"]:
            d = g["UB"].shape[0]
            tot = tot + d * xp.sum(xp.log(g["lam"])) - xp.sum(xp.log(g["Dinv"]))
        return tot

    def marginal_variance(self, fac):
        xp, o = self.xp, self.owner
        out = {l: o._zeros(l) for l in o.layers}
        for g in fac["groups"]:
            l = g["layer"]
            v = xp.matmul(xp.matmul(g["UB"] ** 2, g["Dinv"]), xp.matrix_transpose(g["UA"] ** 2))
            v = v * (g["rs"] ** 2)[None, :]
            out[l] = o._place(out[l], v, g["c0"], g["c1"])
        return out

    def precision_apply_layer(self, phi, l, Vl):
        xp, o = self.xp, self.owner
        d, k = o._shape(l)
        A = o._curv["A"][l]
        if o.kfac_bias == "separate":
            idx = xp.arange(k, device=o.device)
            same = xp.astype((idx[:, None] == k - 1) == (idx[None, :] == k - 1), o.dtype)
            A = A * same
        return phi * xp.matmul(xp.matmul(o._curv["B"][l], Vl), A)

    def glm_cov(self, fac, Xc):
        xp, o = self.xp, self.owner
        F, Ht, G = output_jacobian_factors(o.net, o.weights, Xc, o.layers)
        m, Cn = F.shape
        V = xp.zeros((m, Cn, Cn), dtype=o.dtype, device=o.device)
        for g in fac["groups"]:
            l = g["layer"]
            Gp = xp.permute_dims(G[l], (0, 2, 1))
            Phi = xp.matmul(Gp, g["UB"])                                        # (m, C, d)
            psi = xp.matmul(Ht[l][:, g["c0"]:g["c1"]] * g["rs"][None, :], g["UA"])  # (m, kg)
            w = xp.matmul(psi * psi, xp.matrix_transpose(g["Dinv"]))            # (m, d)
            V = V + xp.matmul(Phi * w[:, None, :], xp.matrix_transpose(Phi))
        return F, V


class Full(Structure):
    """The dense ``P`` over all active parameters (layer by layer, each row-major), by Cholesky."""

    name = "full"

    def _lam_flat(self):
        xp, o = self.xp, self.owner
        return xp.concat([xp.reshape(xp.broadcast_to(o._lam(l)[None, :], o._shape(l)), (-1,)) for l in o.layers])

    def factor(self, phi):
        o = self.owner
        lam = self._lam_flat()
        P = phi * o._curv["full"] + self.eye(lam.shape[0]) * lam[None, :]
        return {"chol": cholesky(P)}

    def cov_apply(self, fac, V):
        xp, o = self.xp, self.owner
        flat = o._flatten(V)                                            # (b, P)
        R = fac["chol"]
        Z = solve_triangular(R, xp.matrix_transpose(flat), lower=True)
        Z = solve_triangular(R, Z, lower=True, trans=True)
        return o._unflatten(xp.matrix_transpose(Z))

    def sqrt_apply(self, fac, E):
        xp, o = self.xp, self.owner
        flat = o._flatten(E)
        Z = solve_triangular(fac["chol"], xp.matrix_transpose(flat), lower=True, trans=True)
        return o._unflatten(xp.matrix_transpose(Z))

    def log_det(self, fac):
        xp = self.xp
        return 2.0 * xp.sum(xp.log(xp.linalg.diagonal(fac["chol"])))

    def marginal_variance(self, fac):
        xp, o = self.xp, self.owner
        R = fac["chol"]
        Rinv = solve_triangular(R, self.eye(R.shape[0]), lower=True)
        out = o._unflatten(xp.sum(Rinv * Rinv, axis=0)[None, :])
        return {l: v[0, ...] for l, v in out.items()}

    def dense_precision(self, phi):
        o = self.owner
        lamv = self._lam_flat()
        return phi * o._curv["full"] + self.eye(o.num_params) * lamv[None, :]

    def glm_cov(self, fac, Xc):
        xp, o = self.xp, self.owner
        F, _, _ = output_jacobian_factors(o.net, o.weights, Xc, [o.net.num_layers - 1])
        J = jacobian(o.net, o.weights, Xc, o.layers)                        # (m, C, P)
        m, Cn, Pn = J.shape
        Jt = xp.reshape(xp.permute_dims(J, (2, 0, 1)), (Pn, m * Cn))
        Z = xp.reshape(solve_triangular(fac["chol"], Jt, lower=True), (Pn, m, Cn))
        V = xp.matmul(xp.permute_dims(Z, (1, 2, 0)), xp.permute_dims(Z, (1, 0, 2)))
        return F, V


#: the strategy of each ``(subset, structure)``; a last-layer posterior is the same algebra on one layer
STRATEGIES = {(subset, cls.name): cls for subset in ("all", "last_layer") for cls in (Diag, Block, KFAC, Full)}


def strategy_for(subset: str, structure: str):
    """The :class:`Structure` class for ``(subset, structure)`` (a clear error for unknown names)."""
    try:
        return STRATEGIES[(subset, structure)]
    except KeyError:
        raise ValueError(f"no Laplace structure for subset={subset!r}, structure={structure!r}; "
                         f"known: {sorted(STRATEGIES)}") from None
