"""The Gibbs exactness checks: each function runs one experiment and returns ``list[Check]``.

Shared by the pytest files (``test_gibbs_*.py``) and the report (``python -m validation``).
Every function takes ``delta`` (its false-failure budget, split here over its statistics by
Bonferroni) and, where it matters, ``twin`` (a name from :mod:`validation._twins`: the experiment
then runs with that broken conditional patched into ``blockbayes.gibbs`` and is expected to
fail). Draws are i.i.d. by construction in every experiment — independent calls, independent
chains, or independent chains each started at an *exact* draw of the target — so all bounds are
the exact ones of :mod:`validation._stats`.
"""
from __future__ import annotations

import math
from contextlib import ExitStack
from typing import NamedTuple

import numpy as np
from scipy import special, stats

import blockbayes as bb
from blockbayes import gibbs
from blockbayes._backend import random as bbr
from blockbayes.testing import Check

from . import _refs as R
from . import _stats as S
from ._device import follow, to_host
from ._twins import install

HP = gibbs.Hyperprior(noise_shape=6.0, noise_rate=1.8, prior_shape=6.0, prior_rate=6.0)
"""Hyperprior used when ``learn_noise`` / ``learn_prior`` are on in the whole-sweep checks:
``1/Δ_y ~ Gamma(6, rate 1.8)`` (``Δ_y ≈ 0.3``), ``λ ~ Gamma(6, rate 6)`` (``λ ≈ 1``). Proper and
tight, so the tiny nets stay well scaled (the library default ``Gamma(1, 1e-2)`` is valid too but
puts mass on precisions of ``1e-4``)."""


def _tol(dtype):
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-10


def _rel_err(a, b):
    a = _f64(a)
    b = _f64(b)
    if a.shape != b.shape:
        try:
            a, b = np.broadcast_arrays(a, b)
        except ValueError:
            return math.inf
    return float(np.max(np.abs(a - b)) / (1.0 + np.max(np.abs(b)))) if a.size else 0.0


def _f64(a):
    return np.asarray(to_host(a), dtype=np.float64)   # host copy also of device arrays (_device)


# ============================================================================ 1. conditionals

def check_rows(seed, *, d=2, n=5, k=500, C=4, delta_noise=0.1, lam_w=1.0, lam_b=1.0,
               dtype=np.float64, path="none", h_scale=1.0, delta=1e-8, twin=None) -> list[Check]:
    """(A.1) as called by the sampler: ``gibbs.sample_rows`` on ``C`` chains × ``k`` output rows,
    whitened with the exact mean and Cholesky of ``P = Λ + G/Δ`` (per chain).

    ``path``: ``"none"`` (Gram formed inside), ``"gram"`` (precomputed Gram, as ``step`` passes for
    layer 1) or ``"chol"`` (precomputed Cholesky of ``ΔΛ + G`` shared by all chains, as ``step``
    passes for layer 1 with fixed hyperparameters). Per-chain ``Δ`` and ``λ`` differ unless
    ``path == "chol"``. ``N = C·k`` i.i.d. ``N(0, I_{d+1})`` whitened vectors.
    """
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    shared = path == "chol"
    H = (h_scale * rng.standard_normal((n, d) if shared else (C, n, d))).astype(dt)
    Hc = np.broadcast_to(_f64(H), (C, n, d))
    T = (rng.standard_normal((C, n, k)) + 0.5).astype(dt)
    spread = (lambda: 1.0) if shared else (lambda: math.exp(rng.uniform(-0.5, 0.5)))
    pd = np.array([[lam_w * spread()] * d + [lam_b * spread()] for _ in range(C)])
    if shared:
        pd = np.broadcast_to(pd[:1], (C, d + 1)).copy()
    dl = np.array([delta_noise * (1.0 if shared else math.exp(rng.uniform(-0.5, 0.5))) for _ in range(C)])
    pd, dl = pd.astype(dt), dl.astype(dt)
    kw = {}
    if path in ("gram", "chol"):
        Ht = R.augment(_f64(H))
        G = np.swapaxes(Ht, -1, -2) @ Ht
        kw["gram"] = (G[None] if shared else G).astype(dt)
    if path == "chol":
        kw["chol"] = np.linalg.cholesky(G + np.diag(_f64(dl[0]) * _f64(pd[0]))).astype(dt)
    with install(twin):
        W = gibbs.sample_rows(bbr.key(seed), H, T, pd, dl, **kw)
    checks = [S.finite_check("rows: finite", W),
              S.exact_check("rows: shape and dtype kept", 0.0 if (W.shape == (C, k, d + 1) and W.dtype == dt) else 1.0, 0.0)]
    eps = []
    for c in range(C):
        P, M = R.rows_reference(Hc[c], _f64(T[c]), _f64(pd[c]), float(dl[c]))
        eps.append(R.whiten(_f64(W[c]), M, P))
    return checks + S.whitened_checks("rows", np.concatenate(eps), delta)


def check_post(seed, *, d=2, k=1, n=2000, C=2, dx=0.1, dnext=0.1, w_scale=1.0, method="auto",
               dtype=np.float64, delta=1e-8, twin=None) -> list[Check]:
    """(A.2) as called by the sampler: ``gibbs.sample_post`` (Cholesky / Matheron / auto) on
    ``C`` chains × ``n`` data points, whitened against ``N(Q^{-1} r_μ, Q^{-1})``."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    F = np.maximum(rng.standard_normal((C, n, d)), 0.0).astype(dt)
    W = (w_scale * rng.standard_normal((C, k, d + 1))).astype(dt)
    T = (R.affine(_f64(F), _f64(W)) + rng.standard_normal((C, n, k))).astype(dt)
    dn = np.array([dnext * math.exp(rng.uniform(-0.3, 0.3)) for _ in range(C)]).astype(dt)
    with install(twin):
        Xp = gibbs.sample_post(bbr.key(seed), F, W, T, float(dx), dn, method=method)
    checks = [S.finite_check("post: finite", Xp),
              S.exact_check("post: shape and dtype kept", 0.0 if (Xp.shape == F.shape and Xp.dtype == dt) else 1.0, 0.0)]
    eps = []
    for c in range(C):
        Q, means = R.post_reference(_f64(F[c]), _f64(W[c]), _f64(T[c]), float(dx), float(dn[c]))
        eps.append(R.whiten(_f64(Xp[c]), means, Q))
    return checks + S.whitened_checks(f"post[{method}]", np.concatenate(eps), delta)


class Regime(NamedTuple):
    """A pre-activation regime: ``a = a_std·√Δ_Z``, ``x = x_std·√Δ_X`` unless ``raw``."""
    a_std: float
    x_std: float
    dz: float
    dx: float
    raw: bool = False

    def values(self):
        if self.raw:
            return self.a_std, self.x_std
        return self.a_std * math.sqrt(self.dz), self.x_std * math.sqrt(self.dx)


HARD_REGIMES = (
    Regime(0.0, 0.0, 0.3, 0.3),                    # bulk, Δ_X = Δ_Z: the ½log(Δ_X/S) term matters
    Regime(1.5, -0.5, 0.1, 0.05),
    Regime(0.0, -8.0, 1e-3, 1e-3),                 # post-activation 8 noise sd below zero
    Regime(2.0, -30.0, 1e-2, 1e-4),                # ... 30 noise sd below zero
    Regime(-3.0, -30.0, 1e-4, 1e-2),
    Regime(40.0, 5.0, 1e-3, 1e-3),                 # truncation bounds in the far tails
    Regime(-40.0, 5.0, 1e-3, 1e-3),
    Regime(-8.0, 8.0, 1e-2, 1e-2),
    Regime(8.0, -8.0, 1e-2, 1e-2),
    Regime(40.0, -100.0, 1e-3, 1e-3, raw=True),    # MATH §A.3: the reference code's NaN, π₊ = 0.40
    Regime(0.5, 1.0, 1e-6, 1e-6),                  # Δ = 1e-6
    Regime(-1.0, 2.0, 1e-6, 1.0),                  # Δ_X/Δ_Z = 1e6
    Regime(1.0, -2.0, 1.0, 1e-6),                  # Δ_X/Δ_Z = 1e-6
    Regime(0.3, 0.3, 1.0, 1.0),
)


def preact_regime_checks(z, a, x, dz, dx, slope, delta, name) -> list[Check]:
    """KS against the exact mixture CDF (DKW), exact binomial test of the rarer branch against
    the mpmath probability (float64 formula if mpmath is missing), finiteness."""
    z = _f64(z).ravel()
    N = z.size
    checks = [S.finite_check(f"{name}: finite", z)]
    checks.append(S.ks_check(f"{name}: KS vs exact mixture CDF", z,
                             lambda t: R.preact_cdf(t, a, x, dz, dx, slope), delta / 2))
    try:
        ell = R.preact_log_odds_mp(a, x, dz, dx, slope)
        pi_pos, p_rare, rare_pos = R.pi_minor(ell)
    except ImportError:  # pragma: no cover
        e = float(R.preact_params(a, x, dz, dx, slope)["ell"])
        pi_pos = float(special.expit(e))
        rare_pos = pi_pos <= 0.5
        p_rare = pi_pos if rare_pos else float(special.expit(-e))
    positive = (z > 0) | ((z == 0) & ~np.signbit(z))
    hits = int(np.count_nonzero(positive if rare_pos else ~positive))
    checks.append(S.binomial_check(f"{name}: branch {'+' if rare_pos else '-'} count vs pi (p={p_rare:.3g})",
                                   hits, N, p_rare, delta / 2))
    return checks


def check_pre_regimes(seed, *, regimes=HARD_REGIMES, slopes=(0.0, 0.1), dtypes=(np.float64, np.float32),
                      N=20000, delta=1e-8, twin=None) -> list[Check]:
    """(A.3) ReLU / leaky ReLU through ``gibbs.sample_pre`` in fixed hard regimes: ``N`` draws
    per regime × slope × dtype, each tested by :func:`preact_regime_checks`."""
    cases = [(r, s, dt) for r in regimes for s in slopes for dt in dtypes]
    d_case = delta / len(cases)
    out = []
    for i, (reg, s, dt) in enumerate(cases):
        a, x = reg.values()
        A = np.full((1, N, 1), a, dtype=dt)
        X = np.full((1, N, 1), x, dtype=dt)
        act = "relu" if s == 0.0 else "leaky_relu"
        with install(twin):
            Z = gibbs.sample_pre(bbr.key(seed * 1000 + i), A, X, reg.dz, reg.dx, act, s)
        name = f"pre[{act} s={s:g} {np.dtype(dt).name} a={a:.3g} x={x:.3g} dz={reg.dz:g} dx={reg.dx:g}]"
        checks = preact_regime_checks(Z, float(A.flat[0]), float(X.flat[0]), reg.dz, reg.dx, s, d_case, name)
        checks.append(S.exact_check(f"{name}: dtype kept", 0.0 if Z.dtype == np.dtype(dt) else 1.0, 0.0))
        out += checks
    return out


def check_pre_pooled(seed, *, activation="relu", slope=0.0, dz=0.1, dx=0.1, dtype=np.float64, N=20000,
                     spread=10.0, far=0.2, delta=1e-8, twin=None) -> list[Check]:
    """(A.3) with a different ``(a, x)`` for every element (drawn i.i.d.: ``a/√Δ_Z`` and
    ``x/√Δ_X`` normal with sd ``spread``, a fraction ``far`` of ``x`` placed 8–30 noise sd below
    zero): the PIT values ``F(z | a, x)`` are i.i.d. U(0,1) (KS, DKW) and
    ``1[z>0] − π₊(a, x)`` has mean 0 (empirical Bernstein)."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    a = (spread * rng.standard_normal(N) * math.sqrt(dz)).astype(dt)
    xs = spread * rng.standard_normal(N)
    farm = rng.random(N) < far
    xs[farm] = -rng.uniform(8, 30, size=int(farm.sum()))
    x = (xs * math.sqrt(dx)).astype(dt)
    with install(twin):
        Z = gibbs.sample_pre(bbr.key(seed), a.reshape(1, N, 1), x.reshape(1, N, 1), dz, dx, activation, slope)
    z = _f64(Z).ravel()
    af, xf = _f64(a), _f64(x)
    name = f"pre[{activation} s={slope:g} {dt.name} dz={dz:.2g} dx={dx:.2g}] pooled"
    checks = [S.finite_check(f"{name}: finite", z)]
    if activation == "identity":
        m = (dx * af + dz * xf) / (dx + dz)
        sd = math.sqrt(dx * dz / (dx + dz))
        u = special.ndtr((z - m) / sd)
        checks.append(S.ks_check(f"{name}: PIT ~ U(0,1)", u, lambda t: np.clip(t, 0, 1), delta / 2))
        checks.append(S.eb_mean_check(f"{name}: E tanh((z-m)/sd) = 0", np.tanh((z - m) / sd), 0.0, -1, 1, delta / 2))
        return checks
    u = R.preact_cdf(z, af, xf, dz, dx, slope)
    pi = special.expit(R.preact_params(af, xf, dz, dx, slope)["ell"])
    checks.append(S.ks_check(f"{name}: PIT ~ U(0,1)", u, lambda t: np.clip(t, 0, 1), delta / 2))
    checks.append(S.eb_mean_check(f"{name}: E[1(z>0) - pi+] = 0", (z > 0).astype(float) - pi, 0.0, -1, 1, delta / 2))
    return checks


def check_log_odds(regimes=HARD_REGIMES, slopes=(0.0, 0.1, 0.5)) -> list[Check]:
    """Deterministic: the branch log-odds against 60-digit mpmath in every hard regime — the
    library's ``kernels.reference.relu_log_odds`` (rtol 1e-10) and this suite's own float64
    reference (used for the KS CDFs; rtol 1e-8) — and mpmath's closed form against adaptive
    quadrature in the moderate regimes (rtol 1e-12)."""
    out = []
    try:
        from blockbayes.kernels import _common as KC
        from blockbayes.kernels import reference as KR
    except ImportError:  # pragma: no cover
        KR = None
    for reg in regimes:
        a, x = reg.values()
        for s in slopes:
            ref = R.preact_log_odds_mp(a, x, reg.dz, reg.dx, s)
            lr = float(ref)
            scale = max(1.0, abs(lr))
            name = f"log-odds[a={a:.3g} x={x:.3g} dz={reg.dz:g} dx={reg.dx:g} s={s:g}]"
            mine = float(R.preact_params(np.float64(a), np.float64(x), reg.dz, reg.dx, s)["ell"])
            out.append(S.exact_check(f"{name}: suite float64 vs mpmath", abs(mine - lr) / scale, 1e-8))
            if KR is not None:
                ell, _, _ = KR.relu_log_odds(np, np.array([a]), np.array([x]), KC.relu_constants(reg.dz, reg.dx, s))
                out.append(S.exact_check(f"{name}: kernels.reference vs mpmath", abs(float(ell[0]) - lr) / scale, 1e-10))
            if not reg.raw and abs(reg.a_std) <= 8 and abs(reg.x_std) <= 8 and s in (0.0, 0.5):
                q = float(R.preact_log_odds_quad(a, x, reg.dz, reg.dx, s))
                out.append(S.exact_check(f"{name}: mpmath closed form vs quad", abs(q - lr) / scale, 1e-12))
    return out


# ============================================================================ whole sweep, block by block

def _make_state(draw: R.JointDraw, dtype):
    dt = np.dtype(dtype)
    return gibbs.GibbsState(tuple(np.ascontiguousarray(W, dtype=dt) for W in draw.weights),
                            tuple(np.ascontiguousarray(Z, dtype=dt) for Z in draw.pre),
                            tuple(np.ascontiguousarray(Xh, dtype=dt) for Xh in draw.post),
                            np.ascontiguousarray(draw.lam_w, dtype=dt), np.ascontiguousarray(draw.lam_b, dtype=dt),
                            np.ascontiguousarray(draw.delta_y, dtype=dt))


class _Spy:
    NAMES = ("sample_rows", "sample_post", "sample_pre", "sample_precision")

    def __init__(self):
        self.calls = []
        self._old = {}

    def __enter__(self):
        # the block-by-block replay needs X and Z drawn by their own calls: the "separate" path
        # (the fused kernel draws both in one pass; it is checked against the same conditionals
        # by the kernel tests and, through step, by the Geweke / grid / teacher families)
        self._old_pass = gibbs.kernel.LATENT_PASS
        gibbs.kernel.LATENT_PASS = "separate"
        for nm in self.NAMES:
            fn = getattr(gibbs.kernel, nm)
            self._old[nm] = fn

            def wrap(*a, _fn=fn, _nm=nm, **k):
                out = _fn(*a, **k)
                self.calls.append((_nm, a, k, out))
                return out
            setattr(gibbs.kernel, nm, wrap)
        return self

    def __exit__(self, *exc):
        for nm, fn in self._old.items():
            setattr(gibbs.kernel, nm, fn)
        gibbs.kernel.LATENT_PASS = self._old_pass


def check_sweep_trace(seed, *, widths=(2, 3, 1), activation="relu", slope=0.1, dz=0.1, dx=0.1, dy=0.1,
                      n=4, C=500, dtype=np.float64, learn_noise=False, learn_prior=False, post_method="auto",
                      delta=1e-8, twin=None) -> list[Check]:
    """One ``gibbs.step`` on ``C`` independent chains, every conditional draw checked *as the
    sampler made it*.

    Each call of ``sample_rows`` / ``sample_post`` / ``sample_pre`` / ``sample_precision`` inside
    ``step`` is recorded. Replaying the scan on an independent copy of the state, the suite
    checks (i) deterministically that every call got the *current* values (inputs, deltas,
    precisions; this catches stale values and wrong wiring), (ii) statistically that every output
    is an exact draw from its conditional given the current state — rows (A.1, including the
    output layer with per-chain ``Δ_y``) and post-activations (A.2, including ``X^L | y``)
    whitened, pre-activations by their PIT under the exact mixture / Gaussian CDF, Gamma updates
    (A.5) by their PIT — and (iii) that the returned state is the sequence of draws.
    """
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    net = bb.MLP(list(widths), activation, slope=slope if activation == "leaky_relu" else 0.01,
                 prior_prec=1.0, delta={"Z": dz, "X": dx, "y": dy})
    L = net.num_layers
    Xin = rng.standard_normal((n, widths[0])).astype(dt)
    draw = R.prior_joint_draw(rng, net, _f64(Xin), C, learn_prior=learn_prior, learn_noise=learn_noise, hyperprior=HP)
    state = _make_state(draw, dt)
    y = draw.y.astype(dt)
    with install(twin), _Spy() as spy:
        new, _ = gibbs.step(bbr.key(seed), state, net, Xin, y, learn_noise=learn_noise, learn_prior=learn_prior,
                            hyperprior=HP, post_method=post_method)
    tol = _tol(dt)
    Wc = [_f64(W) for W in state.weights]
    Zc = [_f64(Z) for Z in state.pre]
    Xc = [_f64(Xh) for Xh in state.post]
    lam_w, lam_b, dyc = _f64(state.lam_w).copy(), _f64(state.lam_b).copy(), _f64(state.delta_y).copy()
    Xf, yf = _f64(Xin), _f64(y)
    calls = list(spy.calls)
    wiring, blocks = [], []            # (name, err) ; (name, kind, payload)
    pos = 0

    def take(expected):
        nonlocal pos
        if pos >= len(calls):
            wiring.append((f"call #{pos}: expected {expected}, none made", math.inf))
            return None
        c = calls[pos]
        pos += 1
        if c[0] != expected:
            wiring.append((f"call #{pos - 1}: expected {expected}, got {c[0]}", math.inf))
            return None
        return c

    def gamma_block(name, c, shape, rate):
        _, a, _, out = c
        wiring.append((f"{name}: shape", abs(float(a[1]) - shape) / (1 + shape)))
        wiring.append((f"{name}: rate", _rel_err(a[2], rate)))
        blocks.append((name, "pit", stats.gamma.cdf(_f64(out) * rate, shape)))
        return _f64(out)

    if learn_prior:
        for l in range(L):
            din, dout = net.widths[l], net.widths[l + 1]
            for part in ("w", "b"):
                c = take("sample_precision")
                if c is None:
                    break
                if part == "w":
                    q = np.sum(Wc[l][..., :-1] ** 2, axis=(-2, -1))
                    lam_w[:, l] = gamma_block(f"lambda_W[{l + 1}]", c, HP.prior_shape + 0.5 * din * dout, HP.prior_rate + 0.5 * q)
                else:
                    q = np.sum(Wc[l][..., -1] ** 2, axis=-1)
                    lam_b[:, l] = gamma_block(f"lambda_b[{l + 1}]", c, HP.prior_shape + 0.5 * dout, HP.prior_rate + 0.5 * q)
    for l in range(L - 1, -1, -1):
        H = np.broadcast_to(Xf, (C,) + Xf.shape) if l == 0 else Xc[l - 1]
        if l == L - 1:
            T = yf
            if learn_noise:
                c = take("sample_precision")
                if c is not None:
                    sse = np.sum((T - R.affine(H, Wc[l])) ** 2, axis=(-2, -1))
                    tau = gamma_block("1/delta_y", c, HP.noise_shape + 0.5 * n * net.d_out, HP.noise_rate + 0.5 * sse)
                    dyc = 1.0 / tau
            dl = dyc.copy()
        else:
            T = Zc[l]
            dl = np.full(C, net.delta_z[l])
        pdiag = np.concatenate([np.repeat(lam_w[:, l:l + 1], net.widths[l], axis=1), lam_b[:, l:l + 1]], axis=1)
        c = take("sample_rows")
        if c is not None:
            _, a, kw, out = c
            nm = f"W[{l + 1}]"
            wiring += [(f"{nm}: input H", _rel_err(np.broadcast_to(_f64(a[1]), H.shape), H)),
                       (f"{nm}: target T", _rel_err(a[2], T)), (f"{nm}: prior diag", _rel_err(a[3], pdiag)),
                       (f"{nm}: delta", _rel_err(a[4], dl))]
            out = _f64(out)
            eps = []
            for ch in range(C):
                P, M = R.rows_reference(H[ch], T[ch], pdiag[ch], float(dl[ch]))
                eps.append(R.whiten(out[ch], M, P))
            blocks.append((nm, "white", np.concatenate(eps)))
            Wc[l] = out
        if l == 0:
            continue
        h = l - 1
        F = R.act(Zc[h], net.activation, net.slope)
        c = take("sample_post")
        if c is not None:
            _, a, kw, out = c
            nm = f"X[{h + 2}]"
            wiring += [(f"{nm}: f(Z)", _rel_err(a[1], F)), (f"{nm}: W next", _rel_err(a[2], Wc[l])),
                       (f"{nm}: target", _rel_err(a[3], T)), (f"{nm}: delta_x", abs(float(a[4]) - net.delta_x[h])),
                       (f"{nm}: delta next", _rel_err(a[5], dl))]
            out = _f64(out)
            eps = []
            for ch in range(C):
                Q, means = R.post_reference(F[ch], Wc[l][ch], T[ch], net.delta_x[h], float(dl[ch]))
                eps.append(R.whiten(out[ch], means, Q))
            blocks.append((nm, "white", np.concatenate(eps)))
            Xc[h] = out
        Hprev = np.broadcast_to(Xf, (C,) + Xf.shape) if h == 0 else Xc[h - 1]
        A = R.affine(Hprev, Wc[h])
        c = take("sample_pre")
        if c is not None:
            _, a, kw, out = c
            nm = f"Z[{h + 2}]"
            wiring += [(f"{nm}: A", _rel_err(a[1], A)), (f"{nm}: X", _rel_err(a[2], Xc[h])),
                       (f"{nm}: deltas", abs(float(a[3]) - net.delta_z[h]) + abs(float(a[4]) - net.delta_x[h])),
                       (f"{nm}: activation", 0.0 if (a[5] == net.activation and float(a[6]) == net.slope) else math.inf)]
            out = _f64(out)
            if net.activation == "identity":
                dzh, dxh = net.delta_z[h], net.delta_x[h]
                m = (dxh * A + dzh * Xc[h]) / (dxh + dzh)
                u = special.ndtr((out - m) / math.sqrt(dxh * dzh / (dxh + dzh)))
            else:
                u = R.preact_cdf(out, A, Xc[h], net.delta_z[h], net.delta_x[h], net.slope)
            blocks.append((nm, "pit", u.ravel()))
            Zc[h] = out
    if pos != len(calls):
        wiring.append((f"{len(calls) - pos} unexpected extra conditional calls", math.inf))
    # the returned state is the sequence of draws
    ret_err = max([_rel_err(a, b) for a, b in zip(new.weights, Wc)] + [_rel_err(a, b) for a, b in zip(new.pre, Zc)]
                  + [_rel_err(a, b) for a, b in zip(new.post, Xc)] + [_rel_err(new.delta_y, dyc)]
                  + [_rel_err(new.lam_w, lam_w), _rel_err(new.lam_b, lam_b)])
    tag = f"sweep[{activation} {'x'.join(map(str, widths))} {dt.name} noise={int(learn_noise)} prior={int(learn_prior)} {post_method}]"
    out = [S.exact_check(f"{tag} wiring: {nm}", err, tol) for nm, err in wiring]
    out.append(S.exact_check(f"{tag}: returned state = draws", ret_err, tol))
    out.append(S.finite_check(f"{tag}: finite", *new.weights, *new.pre, *new.post))
    m = sum(2 * b[2].shape[1] + 4 if b[1] == "white" else 1 for b in blocks) or 1
    for nm, kind, payload in blocks:
        if kind == "white":
            k = payload.shape[1]
            out += S.whitened_checks(f"{tag} {nm}", payload, delta * (2 * k + 4) / m)
        else:
            out.append(S.ks_check(f"{tag} {nm}: PIT ~ U(0,1)", payload, lambda t: np.clip(t, 0, 1), delta / m))
    return out


# ============================================================================ 2. linear references

def check_linear_model(seed, *, d=3, k=2, n=20, lam_w=0.5, lam_b=2.0, dy=0.2, num_samples=2000,
                       num_chains=2, dtype=np.float64, delta=1e-8, twin=None) -> list[Check]:
    """§E.1: one-layer identity net. ``gibbs.run`` draws i.i.d. from the closed-form posterior
    ``N(m_i, P^{-1})`` (each sweep is an independent exact draw); ``num_samples·num_chains·k``
    whitened vectors."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    net = bb.MLP([d, k], "identity", prior_prec=[(lam_w, lam_b)], delta={"y": dy})
    X = rng.standard_normal((n, d)).astype(dt)
    y = (_f64(X) @ rng.standard_normal((d, k)) + 0.3 + math.sqrt(dy) * rng.standard_normal((n, k))).astype(dt)
    with install(twin):
        res = gibbs.run(net, X, y, num_samples=num_samples, num_chains=num_chains, seed=seed, progress=False,
                        store_log_joint=False, init="prior", num_warmup=0, learn_noise=False)
    W = _f64(res.weights[0]).reshape(-1, k, d + 1)
    P, M = R.rows_reference(_f64(X), _f64(y), [lam_w] * d + [lam_b], dy)
    eps = ((W - M[None]) @ np.linalg.cholesky(P)).reshape(-1, d + 1)
    tag = f"linear[{d}->{k} {dt.name}]"
    return [S.finite_check(f"{tag}: finite", W)] + S.whitened_checks(tag, eps, delta)


class _Frozen:
    """``sample_rows`` replacement that returns the current weights of the layer (weights frozen);
    ``step`` calls it for layers ``L..1`` in turn."""

    def __init__(self, L):
        self.L = L
        self.count = 0
        self.weights = None

    def __call__(self, key, H, T, prior_diag, delta, *, gram=None, chol=None):
        l = self.L - 1 - (self.count % self.L)
        self.count += 1
        return follow(self.weights[l], T)


def check_frozen_linear(seed, *, widths=(2, 3, 1), dz=0.2, dx=0.1, dy=0.15, n=2000, C=2, sweeps=4,
                        post_method="auto", dtype=np.float64, delta=1e-8, twin=None) -> list[Check]:
    """§E.1 last bullet: deep linear noisy net with frozen weights. ``(Z, X) | W, y`` is Gaussian
    (precision built from (A.0) term by term, per data point). Chains start at an exact draw and
    run ``sweeps`` sweeps of ``gibbs.step`` with ``sample_rows`` replaced by "return the current
    weights" (so ``step`` composes the X (A.2) and identity-Z (A.3) updates as in production); the
    end states, whitened per data point, must be i.i.d. ``N(0, I)``."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    net = bb.MLP(list(widths), "identity", prior_prec=1.0, delta={"Z": dz, "X": dx, "y": dy})
    L = net.num_layers
    Xin = rng.standard_normal((n, widths[0]))
    draw = R.prior_joint_draw(rng, net, Xin, 1)
    weights = [np.broadcast_to(W, (C,) + W.shape[1:]).copy() for W in draw.weights]
    y = draw.y[0]
    J, means, slices = R.frozen_linear_joint(net, [W[:1] for W in weights], Xin, y)
    Rj = np.linalg.cholesky(J)
    D = J.shape[0]
    V = means[None] + np.linalg.solve(Rj.T, rng.standard_normal((D, C * n))).T.reshape(C, n, D)
    pre = [V[..., zs] for zs, _ in slices]
    post = [V[..., xs] for _, xs in slices]
    st = gibbs.GibbsState(tuple(W.astype(dt) for W in weights), tuple(Z.astype(dt) for Z in pre),
                          tuple(Xh.astype(dt) for Xh in post), np.ones((C, L), dt), np.ones((C, L), dt),
                          np.full(C, dy, dt))
    Xd, yd = Xin.astype(dt), y.astype(dt)
    frozen = _Frozen(L)
    frozen.weights = st.weights
    key = bbr.key(seed)
    with install(twin):
        old = gibbs.kernel.sample_rows
        gibbs.kernel.sample_rows = frozen
        try:
            for _ in range(sweeps):
                key, sub = bbr.split(key)
                st, _ = gibbs.step(sub, st, net, Xd, yd, post_method=post_method)
        finally:
            gibbs.kernel.sample_rows = old
    V2 = np.concatenate([np.concatenate([_f64(st.pre[h]), _f64(st.post[h])], axis=-1) for h in range(L - 1)], axis=-1)
    eps = ((V2 - means[None]) @ Rj).reshape(-1, D)
    tag = f"frozen-linear[{'x'.join(map(str, widths))} {dt.name} {post_method}]"
    wt = max(_rel_err(a, b) for a, b in zip(st.weights, weights))
    return [S.exact_check(f"{tag}: weights stayed frozen", wt, _tol(dt)), S.finite_check(f"{tag}: finite", V2)] \
        + S.whitened_checks(tag, eps, delta)


# ============================================================================ 3. tiny nets on a grid

TINY_DATA_X = np.array([-1.6, -1.1, -0.6, -0.2, 0.2, 0.6, 1.1, 1.6])


def tiny_problem(activation="relu", slope=0.2, seed=7, dz=0.2, dx=0.2, dy=0.1, prec=(1.0, 1.0, 1.0, 1.0)):
    """One-hidden-unit net ``[1, 1, 1]`` with parameters ``θ = (w, b₁, v, c)`` and data from a
    fixed teacher ``(1.2, 0.3, 1.0, −0.2)`` with the model's noise."""
    s = {"relu": 0.0, "identity": 1.0}.get(activation, slope)
    net = bb.MLP([1, 1, 1], activation, slope=slope if activation == "leaky_relu" else 0.01,
                 prior_prec=[(prec[0], prec[1]), (prec[2], prec[3])], delta={"Z": dz, "X": dx, "y": dy})
    rng = np.random.default_rng(seed)
    w, b1, v, c = 1.2, 0.3, 1.0, -0.2
    z = w * TINY_DATA_X + b1 + math.sqrt(dz) * rng.standard_normal(TINY_DATA_X.size)
    h = R.act(z, activation, s) + math.sqrt(dx) * rng.standard_normal(z.size)
    y = v * h + c + math.sqrt(dy) * rng.standard_normal(z.size)
    return net, s, TINY_DATA_X.copy(), y, (dz, dx, dy), np.asarray(prec, dtype=np.float64)


_GRID_CACHE = {}


def tiny_reference(activation="relu", G=41, G_coarse=31, **kw):
    """Cached ``(net, slope, x, y, deltas, prec, fine grid, coarse grid, outside-mass estimate)``."""
    key = (activation, G, G_coarse, tuple(sorted(kw.items())))
    if key not in _GRID_CACHE:
        net, s, x, y, (dz, dx, dy), prec = tiny_problem(activation, **kw)
        fine, (lo, hi), outside = R.tiny_grid(x, y, prec, dz, dx, dy, s, G=G)
        coarse = R.TinyGrid(x, y, prec, dz, dx, dy, s, lo, hi, G_coarse)
        _GRID_CACHE[key] = (net, s, x, y, (dz, dx, dy), prec, fine, coarse, outside)
    return _GRID_CACHE[key]


PARAMS = ("w", "b1", "v", "c")


def check_tiny_grid(seed, *, activation="relu", K=2000, sweeps=10, G=41, delta=1e-8, twin=None,
                    check_start=True) -> list[Check]:
    """§E.2: chains started at exact posterior draws of a one-hidden-unit net must match the grid
    marginals after ``sweeps`` sweeps.

    Reference: trapezoid quadrature of the closed-form per-datum marginal likelihood on a ``G⁴``
    grid over ``(w, b₁, v, c)`` (box from a pilot grid on the prior box). Exact starts: rejection
    from the grid's cell-maximum envelope (validity asserted: no proposal exceeded it),
    auxiliaries ``(z, h)`` from their exact conditional given ``θ`` and ``y``.

    Checks per parameter, at the start (validating the reference sampler) and after the sweeps:
    KS of the ``K`` states against the grid marginal CDF with threshold ``ε_DKW + e_grid``, where
    ``e_grid = sup_t |F_G(t) − F_{G'}(t)| + m_out`` (``G' = 31``: the fine-minus-coarse difference
    bounds the fine grid's error when the coarse error dominates, as it does for a converging
    quadrature; ``m_out`` the pilot's estimate of the mass outside the box), and
    ``E tanh((θ − μ)/sd)`` against the grid value (empirical Bernstein, inflated by
    ``|E_G − E_{G'}| + 2 m_out``). Start-vs-end pairs (each chain) add paired empirical-Bernstein
    tests of ``tanh`` of each parameter and of the auxiliaries' ``P(z > 0)``, mean ``z`` and mean
    ``h``: under a correct kernel both ends are exact posterior draws.
    """
    net, s, x, y, (dz, dx, dy), prec, fine, coarse, outside = tiny_reference(activation, G=G)
    rng = np.random.default_rng(seed)
    theta, worst_ratio, acc = R.tiny_exact_draws(rng, fine, K)
    Zs, Hs = R.tiny_aux_draws(rng, theta, x, y, dz, dx, dy, s)
    C = K
    st = gibbs.GibbsState((theta[:, None, 0:2].copy(), theta[:, None, 2:4].copy()), (Zs[..., None],), (Hs[..., None],),
                          np.tile(np.asarray(net.lam_w), (C, 1)), np.tile(np.asarray(net.lam_b), (C, 1)),
                          np.full(C, dy))
    X = x[:, None]
    Y = y[:, None]
    cache = gibbs.precompute(net, X)
    key = bbr.key(seed)
    with install(twin):
        for _ in range(sweeps):
            key, sub = bbr.split(key)
            st, _ = gibbs.step(sub, st, net, X, Y, cache=cache)
    end = np.stack([st.weights[0][:, 0, 0], st.weights[0][:, 0, 1], st.weights[1][:, 0, 0], st.weights[1][:, 0, 1]], axis=1)
    tag = f"tiny[{activation}]"
    out = [S.exact_check(f"{tag}: grid boundary-shell mass", fine.boundary_mass, 1e-4),
           S.exact_check(f"{tag}: rejection envelope valid (max p/q)", worst_ratio, 1.0),
           S.finite_check(f"{tag}: finite", end, st.pre[0], st.post[0])]
    samples = [("start", theta)] if check_start else []
    samples.append((f"after {sweeps} sweeps", end))
    aux0 = {"P(z>0)": np.mean(Zs > 0, axis=1), "mean z": np.mean(Zs, axis=1), "mean h": np.mean(Hs, axis=1)}
    aux1 = {"P(z>0)": np.mean(st.pre[0][..., 0] > 0, axis=1), "mean z": np.mean(st.pre[0][..., 0], axis=1),
            "mean h": np.mean(st.post[0][..., 0], axis=1)}
    m = len(samples) * 4 * 2 + 4 + 3
    d1 = delta / m
    for label, th in samples:
        for j, p in enumerate(PARAMS):
            t = th[:, j]
            e_grid = float(np.max(np.abs(fine.cdf(j, t) - coarse.cdf(j, t)))) + outside
            out.append(S.ks_check(f"{tag} {label} {p}: KS vs grid (+{e_grid:.1e} grid)", t,
                                  lambda u, j=j: fine.cdf(j, u), d1, inflate=e_grid))
            mu, sd = fine.mean[j], fine.sd[j]
            g = lambda u, mu=mu, sd=sd: np.tanh((u - mu) / sd)
            e_mean = abs(fine.expect(j, g) - coarse.expect(j, g)) + 2 * outside
            out.append(S.eb_mean_check(f"{tag} {label} {p}: E tanh((θ-μ)/sd) vs grid", g(t), fine.expect(j, g),
                                       -1.0, 1.0, d1, inflate=e_mean))
    for j, p in enumerate(PARAMS):
        mu, sd = fine.mean[j], fine.sd[j]
        out.append(S.eb_paired_check(f"{tag} {p}: E tanh((θ-μ)/sd) start vs end", np.tanh((theta[:, j] - mu) / sd),
                                     np.tanh((end[:, j] - mu) / sd), -1, 1, d1))
    for nm in aux0:
        a, b = aux0[nm], aux1[nm]
        if nm.startswith("P("):
            out.append(S.eb_paired_check(f"{tag} {nm}: start vs end", a, b, 0, 1, d1))
        else:
            out.append(S.eb_paired_check(f"{tag} tanh({nm}): start vs end", np.tanh(a), np.tanh(b), -1, 1, d1))
    return out


def check_tiny_likelihood() -> list[Check]:
    """Deterministic: the closed-form per-datum marginal likelihood of §E.2 (with hidden bias and
    leaky slope) against 2-D numerical integration over ``(z, h)`` (scipy ``dblquad``)."""
    from scipy import integrate

    out = []
    for (w, b1, v, c, xm, ym, dz, dx, dy, s) in [(1.2, 0.3, 1.0, -0.2, 0.7, 0.9, 0.2, 0.2, 0.1, 0.0),
                                                 (-0.5, 0.1, -1.5, 0.4, 1.3, -0.6, 0.05, 0.3, 0.2, 0.0),
                                                 (0.8, -0.4, 0.7, 0.1, -1.0, 0.2, 0.2, 0.1, 0.1, 0.3),
                                                 (0.8, -0.4, 0.7, 0.1, -1.0, 0.2, 0.2, 0.1, 0.1, 1.0)]:
        closed = math.exp(float(R.tiny_loglik(w, b1, v, c, np.array([xm]), np.array([ym]), dz, dx, dy, s)))
        a = w * xm + b1

        def integrand(h, z):
            f = z if z >= 0 else s * z
            return (math.exp(-(z - a) ** 2 / (2 * dz) - (h - f) ** 2 / (2 * dx) - (ym - v * h - c) ** 2 / (2 * dy))
                    / math.sqrt((2 * math.pi) ** 3 * dz * dx * dy))
        zlo, zhi = a - 12 * math.sqrt(dz), a + 12 * math.sqrt(dz)
        tot = 0.0
        for lo_, hi_ in ((zlo, min(0.0, zhi)), (max(0.0, zlo), zhi)):
            if hi_ > lo_:
                tot += integrate.dblquad(integrand, lo_, hi_, lambda z: min(0, s * z, z) - 3.0, lambda z: max(0, z) + 3.0,
                                         epsabs=1e-13, epsrel=1e-11)[0]
        out.append(S.exact_check(f"tiny likelihood closed form vs dblquad (w={w}, s={s})", abs(closed - tot) / closed, 1e-7))
    return out


# ============================================================================ 4. Geweke; 5. planted teacher

def _stats_of(net, Xin, W, Z, Xh, y, lam_w, lam_b, dy, learn_noise, learn_prior, entries=True):
    """Per-chain scalar test functions ``g(θ, Z, X, y)`` → dict name → (K,) array."""
    out = {}
    for l, Wl in enumerate(W):
        do, di1 = Wl.shape[1:]
        for i in range(do if entries else 0):
            for j in range(di1):
                out[f"W{l + 1}[{i},{j}]"] = Wl[:, i, j]
        out[f"|W{l + 1}|^2"] = np.sum(Wl ** 2, axis=(-2, -1))
    for h, (Zh, Hh) in enumerate(zip(Z, Xh)):
        out[f"P(Z{h + 2}>0)"] = np.mean(Zh > 0, axis=(-2, -1))
        out[f"mean Z{h + 2}"] = np.mean(Zh, axis=(-2, -1))
        out[f"mean Z{h + 2}^2"] = np.mean(Zh ** 2, axis=(-2, -1))
        out[f"mean X{h + 2}"] = np.mean(Hh, axis=(-2, -1))
        out[f"mean X{h + 2}^2"] = np.mean(Hh ** 2, axis=(-2, -1))
    out["mean y"] = np.mean(y, axis=(-2, -1))
    out["mean y^2"] = np.mean(y ** 2, axis=(-2, -1))
    last = Xh[-1] if Xh else np.broadcast_to(Xin, (y.shape[0],) + Xin.shape)
    out["mean y*X^L"] = np.mean(y * np.mean(last, axis=-1, keepdims=True), axis=(-2, -1))
    F = R.affine(last, W[-1])
    out["train mse"] = np.mean((y - F) ** 2, axis=(-2, -1))
    if learn_noise:
        out["log delta_y"] = np.log(dy)
    if learn_prior:
        for l in range(lam_w.shape[1]):
            out[f"log lambda_W{l + 1}"] = np.log(lam_w[:, l])
            out[f"log lambda_b{l + 1}"] = np.log(lam_b[:, l])
    return out


def _scales(pilot):
    """Centre (median) and robust scale (IQR/1.349) of each statistic, from an independent pilot
    draw (so the bounded transforms are fixed functions, not data-dependent)."""
    sc = {}
    for k, v in pilot.items():
        q1, q2, q3 = np.percentile(v, [25, 50, 75])
        sc[k] = (q2, max((q3 - q1) / 1.349, 1e-12))
    return sc


def _compare(tag, A, B, sc, delta, *, paired_label="") -> list[Check]:
    """Two-sample comparison of every statistic: KS (DKW) and empirical Bernstein on
    ``tanh(u)`` and ``tanh(u²/2)``, ``u = (g − centre)/scale`` (pairs i.i.d. by construction)."""
    names = list(A)
    m = sum(2 if nm.startswith("P(") else 3 for nm in names)
    d1 = delta / m
    out = []
    for nm in names:
        a, b = A[nm], B[nm]
        out.append(S.two_sample_ks(f"{tag} {nm}: KS", a, b, d1))
        if nm.startswith("P("):        # already in [0, 1]: test the mean itself
            out.append(S.eb_paired_check(f"{tag} {nm}: mean{paired_label}", a, b, 0, 1, d1))
            continue
        c0, s0 = sc[nm]
        ua, ub = (a - c0) / s0, (b - c0) / s0
        out.append(S.eb_paired_check(f"{tag} {nm}: E tanh(u){paired_label}", np.tanh(ua), np.tanh(ub), -1, 1, d1))
        out.append(S.eb_paired_check(f"{tag} {nm}: E tanh(u^2/2){paired_label}", np.tanh(ua ** 2 / 2), np.tanh(ub ** 2 / 2), 0, 1, d1))
    return out


class Config(NamedTuple):
    widths: tuple
    activation: str
    n: int = 3
    learn_noise: bool = False
    learn_prior: bool = False
    slope: float = 0.2
    delta: float = 0.3

    def net(self):
        return bb.MLP(list(self.widths), self.activation, slope=self.slope if self.activation == "leaky_relu" else 0.01,
                      prior_prec=1.0, delta=self.delta)

    @property
    def label(self):
        return (f"{self.activation} {'x'.join(map(str, self.widths))} n={self.n}"
                + (" +noise" if self.learn_noise else "") + (" +prior" if self.learn_prior else ""))


def check_geweke(seed, cfg: Config, *, K=5000, sweeps=30, delta=1e-8, twin=None) -> list[Check]:
    """§E.4 Geweke joint-distribution test, parallel-chain form.

    ``K`` successive-conditional chains, each started at an exact joint draw ``(θ, Z, X, y)`` of
    the generative model (hyperparameters from their Gamma hyperpriors when learned), alternate
    one ``gibbs.step`` (``θ, Z, X | y``) with ``y ~ p(y | X^L, W^L, Δ_y)`` (per-chain ``y``) for
    ``sweeps`` rounds. Their final states are i.i.d. exact joint draws for a correct kernel and are
    compared with ``K`` independent draws of the marginal-conditional simulator: per test
    function, two-sample KS (DKW) and empirical-Bernstein tests of ``E tanh(u)``,
    ``E tanh(u²/2)`` (``u`` standardised by an independent pilot draw).
    """
    net = cfg.net()
    rng = np.random.default_rng(seed)
    Xin = rng.standard_normal((cfg.n, cfg.widths[0]))
    kw = dict(learn_prior=cfg.learn_prior, learn_noise=cfg.learn_noise, hyperprior=HP)
    pilot = R.prior_joint_draw(rng, net, Xin, K, **kw)
    marg = R.prior_joint_draw(rng, net, Xin, K, **kw)
    start = R.prior_joint_draw(rng, net, Xin, K, **kw)
    st = _make_state(start, np.float64)
    y = start.y
    cache = gibbs.precompute(net, Xin, learn_prior=cfg.learn_prior)
    key = bbr.key(seed)
    with install(twin):
        for _ in range(sweeps):
            key, sub = bbr.split(key)
            st, _ = gibbs.step(sub, st, net, Xin, y, learn_noise=cfg.learn_noise, learn_prior=cfg.learn_prior,
                               hyperprior=HP, cache=cache)
            last = st.post[-1] if st.post else np.broadcast_to(Xin, (K,) + Xin.shape)
            y = R.affine(last, st.weights[-1]) + np.sqrt(st.delta_y)[:, None, None] * rng.standard_normal(y.shape)
    f = lambda D: _stats_of(net, Xin, D.weights, D.pre, D.post, D.y, D.lam_w, D.lam_b, D.delta_y, cfg.learn_noise, cfg.learn_prior)
    A = f(marg)
    B = _stats_of(net, Xin, st.weights, st.pre, st.post, y, st.lam_w, st.lam_b, st.delta_y, cfg.learn_noise, cfg.learn_prior)
    tag = f"geweke[{cfg.label}]"
    return [S.finite_check(f"{tag}: finite", *st.weights, *st.pre, *st.post, y)] + _compare(tag, A, B, _scales(f(pilot)), delta)


def check_teacher(seed, cfg: Config, *, K=2000, sweeps=10, n_test=6, delta=1e-8, twin=None) -> list[Check]:
    """Planted-teacher stationarity. ``K`` independent teachers drawn from the prior, each with its
    own data set (per-chain ``y``, shared inputs) generated with the model's noise; a teacher with
    its auxiliaries is an exact posterior draw for its data, so chains started there (weights AND
    ``Z, X``) stay at the posterior. Statistics of ``(θ, Z, X, y)`` at sweep 0 and at sweep
    ``sweeps`` are compared: paired empirical Bernstein over chains (sweep-0 and sweep-T values of
    one chain form an i.i.d. pair across chains) and KS between the sweep-0 values of the first
    half of the chains and the sweep-T values of the second half (independent samples).

    Statistics: weights, ``‖W^l‖²``, train MSE of the noise-free net, its predictions at
    ``n_test`` fixed test inputs, activity ``P(Z > 0)``, means of ``Z, X``, log joint.
    (The test MSE *against the teacher* is not one of them: it is 0 at sweep 0 and is a
    function of the pair (chain, teacher), whose law is not invariant.)
    """
    net = cfg.net()
    rng = np.random.default_rng(seed)
    Xin = rng.standard_normal((cfg.n, cfg.widths[0]))
    Xt = rng.standard_normal((n_test, cfg.widths[0]))
    teach = R.prior_joint_draw(rng, net, Xin, K, learn_prior=cfg.learn_prior, learn_noise=cfg.learn_noise, hyperprior=HP)
    st0 = _make_state(teach, np.float64)
    y = teach.y

    def stats_of(st, y):
        d = _stats_of(net, Xin, st.weights, st.pre, st.post, y, st.lam_w, st.lam_b, st.delta_y,
                      cfg.learn_noise, cfg.learn_prior, entries=False)
        del d["mean y"], d["mean y^2"]                     # y fixed: identical at both ends
        pred = bb.model.forward(net, st.weights, Xt)
        for t in range(n_test):
            d[f"f(x_test[{t}])"] = pred[:, t, 0]
        d["log joint"] = gibbs.log_joint(st, net, Xin, y)
        return d

    A = stats_of(st0, y)
    cache = gibbs.precompute(net, Xin, learn_prior=cfg.learn_prior)
    key = bbr.key(seed)
    st = st0
    with install(twin):
        for _ in range(sweeps):
            key, sub = bbr.split(key)
            st, _ = gibbs.step(sub, st, net, Xin, y, learn_noise=cfg.learn_noise, learn_prior=cfg.learn_prior,
                               hyperprior=HP, cache=cache)
    B = stats_of(st, y)
    tag = f"teacher[{cfg.label}]"
    # centre/scale of the bounded transforms from an independent pilot of teachers (fixed functions)
    pilot = R.prior_joint_draw(rng, net, Xin, K, learn_prior=cfg.learn_prior, learn_noise=cfg.learn_noise, hyperprior=HP)
    sc = _scales(stats_of(_make_state(pilot, np.float64), pilot.y))
    half = K // 2
    out = [S.finite_check(f"{tag}: finite", *st.weights, *st.pre, *st.post)]
    names = list(A)
    m = sum(2 if nm.startswith("P(") else 3 for nm in names)
    d1 = delta / m
    for nm in names:
        a, b = A[nm], B[nm]
        out.append(S.two_sample_ks(f"{tag} {nm}: KS (sweep 0 first half vs sweep T second half)", a[:half], b[half:], d1))
        if nm.startswith("P("):
            out.append(S.eb_paired_check(f"{tag} {nm}: mean paired", a, b, 0, 1, d1))
            continue
        c0, s0 = sc[nm]
        ua, ub = (a - c0) / s0, (b - c0) / s0
        out.append(S.eb_paired_check(f"{tag} {nm}: E tanh(u) paired", np.tanh(ua), np.tanh(ub), -1, 1, d1))
        out.append(S.eb_paired_check(f"{tag} {nm}: E tanh(u^2/2) paired", np.tanh(ua ** 2 / 2), np.tanh(ub ** 2 / 2), 0, 1, d1))
    return out


def rows_condition(seed, *, d=2, n=5, C=4, delta_noise=0.1, lam_w=1.0, lam_b=1.0, path="none", h_scale=1.0, **_):
    """Largest condition number of the scaled precision ``ΔΛ + G`` that :func:`check_rows` builds
    (same random stream), for restricting float32 examples to a range float32 can factorise."""
    rng = np.random.default_rng(seed)
    shared = path == "chol"
    H = h_scale * rng.standard_normal((n, d) if shared else (C, n, d))
    Hc = np.broadcast_to(H, (C, n, d))
    Ht = R.augment(Hc)
    G_ = np.swapaxes(Ht, -1, -2) @ Ht
    lam = np.array([lam_w] * d + [lam_b])
    # per-chain Δ and λ of check_rows vary by factors within e^{±0.5}: take the worst corner
    conds = [np.linalg.cond(G_[c] + delta_noise * f * np.diag(lam)) for c in range(C) for f in (math.exp(-1.0), 1.0)]
    return float(max(conds))
