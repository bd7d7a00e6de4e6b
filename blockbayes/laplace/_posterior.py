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

import math

from .._backend import device_of, namespace
from .._backend.linalg import cholesky, solve_triangular
from ._mlp_grad import jacobian, output_jacobian_factors, prior_vector

__all__ = ["StructuredGaussian"]


class StructuredGaussian:
    """Factorisation and covariance algebra of ``P = φ·GGN + Λ`` for the four structures.

    Base of :class:`~blockbayes.laplace.LaplaceResult`; expects the attributes ``net``, ``likelihood``,
    ``structure``, ``layers``, ``weights``, ``kfac_bias``, ``_curv``, ``_lam_w``, ``_lam_b``,
    ``_delta_y`` and ``_fac`` (the cached factorisation, ``None`` when stale).
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

    # ------------------------------------------------------------------ factorisation
    def _factor(self):
        """Factorise ``P`` for the current hyperparameters (cached)."""
        if self._fac is not None:
            return self._fac
        xp = self.xp
        phi = self._phi()
        s = self.structure
        fac = {}
        if s == "diag":
            fac["prec"] = {l: phi * self._curv["diag"][l] + self._lam(l)[None, :] for l in self.layers}
        elif s == "block":
            chol = {}
            for l in self.layers:
                d, k = self._shape(l)
                lam = self._lam(l)
                Pb = phi * self._curv["block"][l] + xp.eye(k, dtype=self.dtype, device=self.device)[None, :, :] * lam[None, None, :]
                chol[l] = cholesky(Pb)
            fac["chol"] = chol
        elif s == "full":
            lam = xp.concat([xp.reshape(xp.broadcast_to(self._lam(l)[None, :], self._shape(l)), (-1,))
                             for l in self.layers])
            P = phi * self._curv["full"] + xp.eye(lam.shape[0], dtype=self.dtype, device=self.device) * lam[None, :]
            fac["chol"] = cholesky(P)
        elif s == "kfac":
            fac["groups"] = self._kfac_groups(phi)
        else:  # pragma: no cover
            raise ValueError(f"unknown structure {s!r}")
        self._fac = fac
        return fac

    def _kfac_eigB(self, l):
        cache = self._curv.setdefault("_eigB", {})
        if l not in cache:
            xp = self.xp
            B = self._curv["B"][l]
            ev = xp.linalg.eigh((B + xp.matrix_transpose(B)) / 2)
            cache[l] = (xp.maximum(ev.eigenvalues, xp.zeros_like(ev.eigenvalues)), ev.eigenvectors)
        return cache[l]

    def _kfac_groups(self, phi):
        xp = self.xp
        groups = []
        for l in self.layers:
            d, k = self._shape(l)
            A = self._curv["A"][l]
            sB, UB = self._kfac_eigB(l)
            lam = self._lam(l)
            spans = [(0, k)] if self.kfac_bias == "joint" else [(0, k - 1), (k - 1, k)]
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
        return groups

    # ------------------------------------------------------------------ covariance primitives
    def _cov_apply(self, V: dict) -> dict:
        """``Σ v`` for a batch of active-layer vectors ``V[l]`` of shape ``(b, d, k)``."""
        xp = self.xp
        fac = self._factor()
        s = self.structure
        out = {}
        if s == "diag":
            for l in self.layers:
                out[l] = V[l] / fac["prec"][l][None, :, :]
        elif s == "block":
            for l in self.layers:
                R = fac["chol"][l]                                            # (d, k, k)
                Vt = xp.permute_dims(V[l], (1, 2, 0))                           # (d, k, b)
                Z = solve_triangular(R, Vt, lower=True)
                Z = solve_triangular(R, Z, lower=True, trans=True)
                out[l] = xp.permute_dims(Z, (2, 0, 1))
        elif s == "full":
            flat = self._flatten(V)                                            # (b, P)
            R = fac["chol"]
            Z = solve_triangular(R, xp.matrix_transpose(flat), lower=True)
            Z = solve_triangular(R, Z, lower=True, trans=True)
            out = self._unflatten(xp.matrix_transpose(Z))
        else:
            for l in self.layers:
                out[l] = xp.zeros_like(V[l])
            for g in fac["groups"]:
                l, c0, c1 = g["layer"], g["c0"], g["c1"]
                Vg = V[l][:, :, c0:c1] * g["rs"][None, None, :]
                Z = xp.matmul(xp.matmul(xp.matrix_transpose(g["UB"]), Vg), g["UA"]) * g["Dinv"][None, :, :]
                Z = xp.matmul(xp.matmul(g["UB"], Z), xp.matrix_transpose(g["UA"])) * g["rs"][None, None, :]
                out[l] = self._place(out[l], Z, c0, c1)
        return out

    def _cov_sqrt_apply(self, E: dict) -> dict:
        """``Σ^{1/2} ε`` (any square root with ``Σ^{1/2} Σ^{1/2 ⊤} = Σ``), ``E[l]`` of shape ``(b, d, k)``."""
        xp = self.xp
        fac = self._factor()
        s = self.structure
        out = {}
        if s == "diag":
            for l in self.layers:
                out[l] = E[l] / xp.sqrt(fac["prec"][l])[None, :, :]
        elif s == "block":
            for l in self.layers:
                R = fac["chol"][l]
                Z = solve_triangular(R, xp.permute_dims(E[l], (1, 2, 0)), lower=True, trans=True)
                out[l] = xp.permute_dims(Z, (2, 0, 1))
        elif s == "full":
            flat = self._flatten(E)
            Z = solve_triangular(fac["chol"], xp.matrix_transpose(flat), lower=True, trans=True)
            out = self._unflatten(xp.matrix_transpose(Z))
        else:
            for l in self.layers:
                out[l] = xp.zeros_like(E[l])
            for g in fac["groups"]:
                l, c0, c1 = g["layer"], g["c0"], g["c1"]
                Z = E[l][:, :, c0:c1] * xp.sqrt(g["Dinv"])[None, :, :]
                Z = xp.matmul(xp.matmul(g["UB"], Z), xp.matrix_transpose(g["UA"])) * g["rs"][None, None, :]
                out[l] = self._place(out[l], Z, c0, c1)
        return out

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

    def marginal_variance(self) -> tuple:
        """Posterior variances of the weights, per layer ``(d_{l+1}, d_l + 1)``.

        Inactive layers (``subset="last_layer"``) get zeros. ``diag`` reads them off ``P``;
        ``block``/``full`` use ``diag(P^{-1}) = column sums of (R^{-1})²`` with ``P = RRᵀ``
        (a triangular solve against ``I``); ``kfac`` uses the eigenbasis:
        ``Var_{ij} = [(U_B∘U_B) D (U_A∘U_A)ᵀ]_{ij} / λ_j``.
        """
        xp = self.xp
        fac = self._factor()
        s = self.structure
        out = {}
        if s == "diag":
            out = {l: 1.0 / fac["prec"][l] for l in self.layers}
        elif s == "block":
            for l in self.layers:
                d, k = self._shape(l)
                eye = xp.broadcast_to(xp.eye(k, dtype=self.dtype, device=self.device)[None, :, :], (d, k, k))
                Rinv = solve_triangular(fac["chol"][l], eye, lower=True)       # R^{-1}
                out[l] = xp.sum(Rinv * Rinv, axis=1)                            # diag(R^{-T}R^{-1})
        elif s == "full":
            R = fac["chol"]
            Pn = R.shape[0]
            Rinv = solve_triangular(R, xp.eye(Pn, dtype=self.dtype, device=self.device), lower=True)
            out = self._unflatten(xp.sum(Rinv * Rinv, axis=0)[None, :])
            out = {l: v[0, ...] for l, v in out.items()}
        else:
            for l in self.layers:
                out[l] = xp.zeros(self._shape(l), dtype=self.dtype, device=self.device)
            for g in fac["groups"]:
                l = g["layer"]
                v = xp.matmul(xp.matmul(g["UB"] ** 2, g["Dinv"]), xp.matrix_transpose(g["UA"] ** 2))
                v = v * (g["rs"] ** 2)[None, :]
                out[l] = self._place(out[l], v, g["c0"], g["c1"])
        return tuple(out[l] if l in out else xp.zeros(self._shape(l), dtype=self.dtype, device=self.device)
                     for l in range(self.net.num_layers))

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
        xp = self.xp
        phi = self._phi()
        Pn = self.num_params
        eye = xp.eye(Pn, dtype=self.dtype, device=self.device)
        V = self._unflatten(eye)
        out = {}
        s = self.structure
        for l in self.layers:
            lam = self._lam(l)
            prior_part = V[l] * lam[None, None, :]
            if s == "diag":
                out[l] = V[l] * (phi * self._curv["diag"][l])[None, :, :] + prior_part
            elif s == "block":
                # (b, d, k) -> per node G_i v_i
                Vi = xp.permute_dims(V[l], (1, 2, 0))                              # (d, k, b)
                out[l] = xp.permute_dims(phi * xp.matmul(self._curv["block"][l], Vi), (2, 0, 1)) + prior_part
            elif s == "kfac":
                d, k = self._shape(l)
                A = self._curv["A"][l]
                if self.kfac_bias == "separate":
                    idx = xp.arange(k, device=self.device)
                    same = xp.astype((idx[:, None] == k - 1) == (idx[None, :] == k - 1), self.dtype)
                    A = A * same
                out[l] = phi * xp.matmul(xp.matmul(self._curv["B"][l], V[l]), A) + prior_part
            else:
                out[l] = prior_part
        if s == "full":
            lamv = self._flatten({l: xp.broadcast_to(self._lam(l)[None, None, :], (1,) + self._shape(l)) for l in self.layers})[0]
            return phi * self._curv["full"] + eye * lamv[None, :]
        Pm = self._flatten(out)
        return (Pm + xp.matrix_transpose(Pm)) / 2

    def log_det_posterior_precision(self):
        """``log |P|`` over the active parameters (0-d array)."""
        xp = self.xp
        fac = self._factor()
        s = self.structure
        if s == "diag":
            return sum(xp.sum(xp.log(fac["prec"][l])) for l in self.layers)
        if s == "block":
            return sum(2.0 * xp.sum(xp.log(xp.linalg.diagonal(fac["chol"][l]))) for l in self.layers)
        if s == "full":
            return 2.0 * xp.sum(xp.log(xp.linalg.diagonal(fac["chol"])))
        tot = xp.zeros((), dtype=self.dtype, device=self.device)
        for g in fac["groups"]:
            d = g["UB"].shape[0]
            tot = tot + d * xp.sum(xp.log(g["lam"])) - xp.sum(xp.log(g["Dinv"]))
        return tot


    def _glm_chunk(self, Xc):
        xp = self.xp
        fac = self._factor()
        s = self.structure
        if s == "full":
            F, _, _ = output_jacobian_factors(self.net, self.weights, Xc, [self.net.num_layers - 1])
            J = jacobian(self.net, self.weights, Xc, self.layers)                 # (m, C, P)
            m, Cn, Pn = J.shape
            Jt = xp.reshape(xp.permute_dims(J, (2, 0, 1)), (Pn, m * Cn))
            Z = xp.reshape(solve_triangular(fac["chol"], Jt, lower=True), (Pn, m, Cn))
            V = xp.matmul(xp.permute_dims(Z, (1, 2, 0)), xp.permute_dims(Z, (1, 0, 2)))
            return F, V
        F, Ht, G = output_jacobian_factors(self.net, self.weights, Xc, self.layers)
        m, Cn = F.shape
        V = xp.zeros((m, Cn, Cn), dtype=self.dtype, device=self.device)
        for l in self.layers:
            Gl = G[l]                                                            # (m, d, C)
            Gp = xp.permute_dims(Gl, (0, 2, 1))                                  # (m, C, d)
            H = Ht[l]
            if s == "diag":
                T = xp.matmul(H * H, xp.matrix_transpose(1.0 / fac["prec"][l]))    # (m, d)
                V = V + xp.matmul(Gp * T[:, None, :], Gl)
            elif s == "block":
                R = fac["chol"][l]
                d, k = self._shape(l)
                Hb = xp.broadcast_to(xp.matrix_transpose(H)[None, :, :], (d, k, m))
                Z = solve_triangular(R, Hb, lower=True)                            # (d, k, m)
                T = xp.matrix_transpose(xp.sum(Z * Z, axis=1))                    # (m, d)
                V = V + xp.matmul(Gp * T[:, None, :], Gl)
        if s == "kfac":
            for g in fac["groups"]:
                l = g["layer"]
                Gp = xp.permute_dims(G[l], (0, 2, 1))
                Phi = xp.matmul(Gp, g["UB"])                                        # (m, C, d)
                psi = xp.matmul(Ht[l][:, g["c0"]:g["c1"]] * g["rs"][None, :], g["UA"])  # (m, kg)
                w = xp.matmul(psi * psi, xp.matrix_transpose(g["Dinv"]))            # (m, d)
                V = V + xp.matmul(Phi * w[:, None, :], xp.matrix_transpose(Phi))
        return F, V
