"""Each Gibbs conditional, as the sampler calls it, against its analytic distribution
(MATH.md §A.1–A.5, §E.3), plus the whole sweep checked block by block.

False-failure bound: every ``stochastic`` test ≤ 1e-8 (``_stats.DELTA_ITEM``), split over the
Hypothesis examples of the active profile and, inside a check, over its statistics (Bonferroni);
all bounds are exact for the i.i.d. draws tested (DKW, empirical Bernstein, exact binomial).
Each family has a broken twin (``test_gibbs_twins.py``).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from blockbayes.testing import assert_checks

from . import gibbs_checks as G
from ._hyp import delta_example, log_uniform, seeds, vsettings

pytestmark = pytest.mark.usefixtures("single_thread_blas")
dtypes = st.sampled_from([np.float64, np.float32])
VS = vsettings()
N_EX = VS.max_examples


@pytest.mark.stochastic
@VS
@given(seed=seeds, d=st.integers(1, 4), n=st.integers(1, 8), delta_noise=log_uniform(1e-6, 1.0),
       lam_w=log_uniform(1e-2, 1e2), lam_b=log_uniform(1e-2, 1e2), h_scale=log_uniform(0.1, 10.0),
       path=st.sampled_from(["none", "gram", "chol"]), dtype=dtypes)
def test_rows_conditional(seed, d, n, delta_noise, lam_w, lam_b, h_scale, path, dtype):
    """(A.1): whitened rows are i.i.d. N(0, I) — shapes, Δ ∈ [1e-6, 1], λ ∈ [1e-2, 1e2], n < d+1
    included, all three call paths of ``sample_rows``. float32 only where the scaled precision
    ``ΔΛ + G`` has condition number ≤ 1e6 (float32 Cholesky fails near 1e10; measured fine at 6e7)."""
    kw = dict(d=d, n=n, delta_noise=delta_noise, lam_w=lam_w, lam_b=lam_b, h_scale=h_scale, path=path)
    if dtype == np.float32:
        assume(G.rows_condition(seed, C=3, **kw) <= 1e6)
    assert_checks(G.check_rows(seed, k=1000, C=3, dtype=dtype, delta=delta_example(N_EX), **kw))


@pytest.mark.stochastic
@VS
@given(seed=seeds, d=st.integers(1, 4), k=st.integers(1, 4), dx=log_uniform(1e-6, 1.0), dnext=log_uniform(1e-6, 1.0),
       w_scale=log_uniform(1e-3, 10.0), method=st.sampled_from(["cholesky", "matheron", "auto"]), dtype=dtypes)
def test_post_conditional(seed, d, k, dx, dnext, w_scale, method, dtype):
    """(A.2), Cholesky and Matheron forms: whitened post-activations are i.i.d. N(0, I), including
    tiny next-layer weights (the rank-one form's s → 0 limit) and Δ_X/Δ' from 1e-6 to 1e6.
    float32 where ``Δ_X‖W‖²/Δ'`` ≤ 1e5."""
    if dtype == np.float32:
        assume(dx * w_scale ** 2 * (d + 1) * 9 / dnext <= 1e5)
    assert_checks(G.check_post(seed, d=d, k=k, n=1500, C=2, dx=dx, dnext=dnext, w_scale=w_scale, method=method,
                               dtype=dtype, delta=delta_example(N_EX)))


@pytest.mark.stochastic
def test_pre_hard_regimes():
    """(A.3a) ReLU and leaky ReLU in 14 fixed hard regimes × 2 slopes × float32/float64:
    post-activations 8 and 30 noise sd below zero, truncation bounds at ±8 and ±40 sd, MATH's
    NaN case (a, x) = (40, −100), Δ from 1e-6 to 1 and Δ_X/Δ_Z = 1e±6. No NaN, exact-CDF KS
    (DKW), and the rarer branch's count against the 60-digit mpmath π (exact binomial test)."""
    assert_checks(G.check_pre_regimes(12345, N=20000, delta=1e-8))


@pytest.mark.stochastic
@VS
@given(seed=seeds, activation=st.sampled_from(["relu", "leaky_relu", "identity"]), slope=st.floats(0.01, 0.9),
       dz=log_uniform(1e-6, 1.0), dx=log_uniform(1e-6, 1.0), spread=log_uniform(0.5, 40.0), dtype=dtypes)
def test_pre_pooled(seed, activation, slope, dz, dx, spread, dtype):
    """(A.3) with a different (a, x) per element over a wide range (a fifth of the x's 8–30 noise
    sd below zero): PIT values i.i.d. U(0,1) and E[1(z>0) − π₊] = 0; identity: PIT of the
    Gaussian N(m₊, s₊²)."""
    s = {"relu": 0.0, "identity": 1.0}.get(activation, slope)
    assert_checks(G.check_pre_pooled(seed, activation=activation, slope=s, dz=dz, dx=dx, spread=spread, dtype=dtype,
                                     N=20000, delta=delta_example(N_EX)))


def test_log_odds_against_mpmath_and_quadrature():
    """Deterministic: branch log-odds of the library kernel (rtol 1e-10) and of this suite's
    float64 reference (1e-8) against 60-digit mpmath in every hard regime; mpmath's closed form
    against adaptive quadrature (1e-12)."""
    pytest.importorskip("mpmath")
    assert_checks(G.check_log_odds())


@pytest.mark.stochastic
@VS
@given(seed=seeds, hidden=st.lists(st.integers(1, 3), min_size=0, max_size=2), d_in=st.integers(1, 3),
       d_out=st.integers(1, 2), activation=st.sampled_from(["relu", "leaky_relu", "identity"]),
       dz=log_uniform(1e-3, 1.0), dx=log_uniform(1e-3, 1.0), dy=log_uniform(1e-3, 1.0),
       learn_noise=st.booleans(), learn_prior=st.booleans(), post_method=st.sampled_from(["auto", "cholesky", "matheron"]),
       dtype=dtypes)
def test_sweep_trace(seed, hidden, d_in, d_out, activation, dz, dx, dy, learn_noise, learn_prior, post_method, dtype):
    """One ``gibbs.step`` on 400 independent chains: every conditional call gets the current
    values (deterministic wiring checks), every draw is exact given them (rows incl. the output
    layer with per-chain Δ_y, X^l incl. X^L | y, Z^l, the Gamma updates), and the returned state
    is the sequence of draws."""
    widths = (d_in, *hidden, d_out)
    assert_checks(G.check_sweep_trace(seed, widths=widths, activation=activation, slope=0.15, dz=dz, dx=dx, dy=dy,
                                      n=4, C=400, dtype=dtype, learn_noise=learn_noise, learn_prior=learn_prior,
                                      post_method=post_method, delta=delta_example(N_EX)))
