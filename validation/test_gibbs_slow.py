"""Slow tier of the Hypothesis-driven conditional tests: 10× the draws, more examples.

Run with ``pytest validation -m slow``. False failure ≤ 1e-8 per test (DELTA_ITEM split over
the examples), as in the fast tier.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from blockbayes.testing import assert_checks

from . import gibbs_checks as G
from ._hyp import delta_example, log_uniform, seeds, vsettings

pytestmark = [pytest.mark.slow, pytest.mark.stochastic, pytest.mark.usefixtures("single_thread_blas")]
VS = vsettings(scale=2.0)
N_EX = VS.max_examples
dtypes = st.sampled_from([np.float64, np.float32])


@VS
@given(seed=seeds, d=st.integers(1, 4), n=st.integers(1, 8), delta_noise=log_uniform(1e-6, 1.0),
       lam_w=log_uniform(1e-2, 1e2), lam_b=log_uniform(1e-2, 1e2), h_scale=log_uniform(0.1, 10.0),
       path=st.sampled_from(["none", "gram", "chol"]), dtype=dtypes)
def test_rows_conditional_slow(seed, d, n, delta_noise, lam_w, lam_b, h_scale, path, dtype):
    kw = dict(d=d, n=n, delta_noise=delta_noise, lam_w=lam_w, lam_b=lam_b, h_scale=h_scale, path=path)
    if dtype == np.float32:
        assume(G.rows_condition(seed, C=4, **kw) <= 1e6)
    assert_checks(G.check_rows(seed, k=10000, C=4, dtype=dtype, delta=delta_example(N_EX), **kw))


@VS
@given(seed=seeds, d=st.integers(1, 4), k=st.integers(1, 4), dx=log_uniform(1e-6, 1.0), dnext=log_uniform(1e-6, 1.0),
       w_scale=log_uniform(1e-3, 10.0), method=st.sampled_from(["cholesky", "matheron", "auto"]), dtype=dtypes)
def test_post_conditional_slow(seed, d, k, dx, dnext, w_scale, method, dtype):
    if dtype == np.float32:
        assume(dx * w_scale ** 2 * (d + 1) * 9 / dnext <= 1e5)
    assert_checks(G.check_post(seed, d=d, k=k, n=20000, C=2, dx=dx, dnext=dnext, w_scale=w_scale, method=method,
                               dtype=dtype, delta=delta_example(N_EX)))


@VS
@given(seed=seeds, activation=st.sampled_from(["relu", "leaky_relu", "identity"]), slope=st.floats(0.01, 0.9),
       dz=log_uniform(1e-6, 1.0), dx=log_uniform(1e-6, 1.0), spread=log_uniform(0.5, 40.0), dtype=dtypes)
def test_pre_pooled_slow(seed, activation, slope, dz, dx, spread, dtype):
    s = {"relu": 0.0, "identity": 1.0}.get(activation, slope)
    assert_checks(G.check_pre_pooled(seed, activation=activation, slope=s, dz=dz, dx=dx, spread=spread, dtype=dtype,
                                     N=200000, delta=delta_example(N_EX)))


def test_pre_hard_regimes_slow():
    assert_checks(G.check_pre_regimes(54321, N=200000, slopes=(0.0, 0.1, 0.5), delta=1e-8))


@VS
@given(seed=seeds, hidden=st.lists(st.integers(1, 3), min_size=0, max_size=3), d_in=st.integers(1, 3),
       d_out=st.integers(1, 3), activation=st.sampled_from(["relu", "leaky_relu", "identity"]),
       dz=log_uniform(1e-4, 1.0), dx=log_uniform(1e-4, 1.0), dy=log_uniform(1e-4, 1.0),
       learn_noise=st.booleans(), learn_prior=st.booleans(), post_method=st.sampled_from(["auto", "cholesky", "matheron"]),
       dtype=dtypes)
def test_sweep_trace_slow(seed, hidden, d_in, d_out, activation, dz, dx, dy, learn_noise, learn_prior, post_method, dtype):
    widths = (d_in, *hidden, d_out)
    assert_checks(G.check_sweep_trace(seed, widths=widths, activation=activation, slope=0.15, dz=dz, dx=dx, dy=dy,
                                      n=5, C=2000, dtype=dtype, learn_noise=learn_noise, learn_prior=learn_prior,
                                      post_method=post_method, delta=delta_example(N_EX)))
