"""Geweke joint-distribution tests for the probit likelihoods (MATH.md §B, §E.4).

Parallel-chain form: ``K`` chains, each started at an exact joint draw ``(θ, Z, X, U, y)`` of the
generative model (weights from the prior, noisy forward pass, utilities ``U = X̃^L W̃^{L⊤} + ε``,
labels ``y = 1[U > 0]`` or ``argmax U``), alternate one ``gibbs.step`` (which first redraws ``U``
given ``y``, then the weights and auxiliaries) with a joint redraw of ``(U, y) | θ`` (so ``y`` is
never frozen by ``U``). For a correct kernel the final states are i.i.d. exact joint draws and are
compared with ``K`` fresh draws of the generative model.

False-failure bound: two-sample KS with DKW on each side (exact for i.i.d. samples); per test
function ``δ = 1e-7 / m`` (Bonferroni over the ``m`` functions of one configuration), so ≤ 1e-7
per configuration and ≤ 4e-7 for this file's four correct-kernel runs. Each configuration has a
broken twin that the same checks must reject.
"""
from __future__ import annotations

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import gibbs, kernels
from blockbayes import testing as bt
from blockbayes._backend import random as bbr
from blockbayes.model import activate, affine

from ._device import host_call

DELTA = 1e-7


def _joint_draw(rng, net, Xin, K):
    """``K`` exact draws of (weights, Z, X, U, y) from the generative model."""
    W = []
    for l, (do, di1) in enumerate(net.weight_shapes()):
        lam = np.r_[[net.lam_w[l]] * (di1 - 1), net.lam_b[l]]
        W.append(rng.standard_normal((K, do, di1)) / np.sqrt(lam))
    pre, post = [], []
    H = Xin
    for l in range(net.num_layers - 1):
        Z = affine(H, W[l]) + np.sqrt(net.delta_z[l]) * rng.standard_normal((K, Xin.shape[0], net.widths[l + 1]))
        Xh = activate(np, Z, net.activation, net.slope) + np.sqrt(net.delta_x[l]) * rng.standard_normal(Z.shape)
        pre.append(Z)
        post.append(Xh)
        H = Xh
    U = affine(H, W[-1]) + rng.standard_normal((K, Xin.shape[0], net.d_out))
    y = _labels(net, U)
    return tuple(W), tuple(pre), tuple(post), U, y


def _labels(net, U):
    return (U[..., 0] > 0).astype(np.int64) if net.likelihood == "probit" else np.argmax(U, axis=-1)


def _stats(net, W, pre, post, U, y):
    out = {}
    for l, Wl in enumerate(W):
        for i in range(Wl.shape[1]):
            for j in range(Wl.shape[2]):
                out[f"W{l + 1}[{i},{j}]"] = Wl[:, i, j]
        out[f"|W{l + 1}|^2"] = np.sum(Wl ** 2, axis=(-2, -1))
    for h, (Z, Xh) in enumerate(zip(pre, post)):
        out[f"mean Z{h + 2}"] = np.mean(Z, axis=(-2, -1))
        out[f"mean X{h + 2}"] = np.mean(Xh, axis=(-2, -1))
    out["mean U"] = np.mean(U, axis=(-2, -1))
    out["mean U^2"] = np.mean(U ** 2, axis=(-2, -1))
    Umax = np.max(U, axis=-1)
    out["mean max U"] = np.mean(Umax, axis=-1)
    out["mean y"] = np.mean(y, axis=-1).astype(float)
    out["mean U_y"] = np.mean(np.take_along_axis(U, y[..., None], axis=-1)[..., 0] if net.likelihood != "probit"
                              else U[..., 0] * (2 * y - 1), axis=-1)
    return out


def geweke_checks(net, *, seed=0, n=3, K=3000, sweeps=15, sampler=None, monkeypatch=None):
    rng = np.random.default_rng(seed)
    Xin = rng.standard_normal((n, net.d_in))
    marg = _joint_draw(rng, net, Xin, K)
    W, pre, post, U, y = _joint_draw(rng, net, Xin, K)
    C = K
    st = gibbs.GibbsState(W, pre, post, np.tile(np.asarray(net.lam_w), (C, 1)), np.tile(np.asarray(net.lam_b), (C, 1)),
                          np.full(C, net.delta_y), U)
    if sampler is not None:
        monkeypatch.setattr(gibbs.kernel, "sample_latent", host_call(sampler))
    cache = gibbs.precompute(net, Xin)
    key = bbr.key(seed)
    for _ in range(sweeps):
        key, sub = bbr.split(key)
        st, _ = gibbs.step(sub, st, net, Xin, y, cache=cache)
        last = st.post[-1] if st.post else np.broadcast_to(Xin, (C,) + Xin.shape)
        U = affine(last, st.weights[-1]) + rng.standard_normal(st.latent.shape)
        y = _labels(net, U)
        st = st._replace(latent=U)
    A = _stats(net, *marg)
    B = _stats(net, st.weights, st.pre, st.post, st.latent, y)
    d = DELTA / len(A)
    tag = f"geweke[{net.likelihood} {'x'.join(map(str, net.widths))}]"
    checks = [bt.two_sample_ks_check(f"{tag} {k}", A[k], B[k], d) for k in A]
    finite = all(np.all(np.isfinite(a)) for a in (*st.weights, *st.pre, *st.post, st.latent))
    checks.append(bt.Check(f"{tag} finite", 0.0 if finite else 1.0, 0.0, finite))
    return checks


NETS = {
    "probit": bb.MLP([2, 3, 1], "relu", likelihood="probit", prior_prec=1.0, delta=0.3),
    "multinomial": bb.MLP([2, 3, 3], "relu", likelihood="multinomial_probit", prior_prec=1.0, delta=0.3),
}


@pytest.mark.parametrize("name", list(NETS))
def test_geweke_probit_likelihoods(name):
    bt.assert_checks(geweke_checks(NETS[name]))


def _broken_probit(key, A, labels, U_prev, likelihood):
    """Twin: binary utilities drawn with sd 1.5 (the Δ_y = 1 of the model violated)."""
    upper = np.broadcast_to((labels == 0)[..., None] if labels.ndim == A.ndim - 1 else (labels == 0)[None, :, None], A.shape)
    return kernels.truncated_normal(key, A, 1.5, 0.0, upper)


def _broken_multinomial(key, A, labels, U_prev, likelihood):
    """Twin: the winner's lower bound is the *mean* of the other utilities instead of their max
    (support still valid — the others are then drawn below the winner — but the law is wrong)."""
    k1, k2 = bbr.split(key, 2)
    K = A.shape[-1]
    oh = labels[..., None] == np.arange(K)
    if oh.ndim < A.ndim:
        oh = np.broadcast_to(oh[None], A.shape)
    m = np.sum(np.where(oh, 0.0, U_prev), axis=-1) / (K - 1)
    a_y = np.sum(A * oh, axis=-1)
    u_y = kernels.truncated_normal(k1, a_y, 1.0, m, False)
    others = kernels.truncated_normal(k2, A, 1.0, np.broadcast_to(u_y[..., None], A.shape), True)
    return np.where(oh, u_y[..., None], others)


@pytest.mark.parametrize("name,twin", [("probit", _broken_probit), ("multinomial", _broken_multinomial)])
def test_geweke_probit_broken_twins_are_caught(name, twin, monkeypatch):
    bt.assert_checks(geweke_checks(NETS[name], sampler=twin, monkeypatch=monkeypatch), expect_pass=False)
