"""Exactness of the blocked (data-parallel) scan of blockbayes.distributed, with broken twins.

Fast tier: Geweke through the blocked sweep on 2 in-process shards (hyperparameters learned),
and the exact fault-recovery redraw against the closed-form tiny-net conditional; each with a
twin that must be caught (a shard counted twice in the reduction; recovery without the
rejection step). Slow tier: the tiny-net grid through the blocked sweep, and Geweke through the
Dask actors of a LocalCluster. False failure ≤ 1e-8 per test (validation/_stats.py).
"""
from __future__ import annotations

import pytest

from blockbayes.testing import assert_checks

from . import distributed_checks as D
from .gibbs_checks import Config

pytestmark = [pytest.mark.usefixtures("single_thread_blas")]
CFG = Config((2, 3, 1), "relu", n=3, learn_noise=True, learn_prior=True)


@pytest.mark.stochastic
def test_geweke_blocked():
    assert_checks(D.check_geweke_blocked(12, CFG, num_shards=2, delta=1e-8))


@pytest.mark.stochastic
def test_geweke_blocked_twin_shard_counted_twice_is_caught():
    assert_checks(D.check_geweke_blocked(12, CFG, num_shards=2, delta=1e-8, twin="shard_twice"), expect_pass=False)


@pytest.mark.stochastic
def test_recover_is_exact_conditional():
    assert_checks(D.check_recover_exact(21, delta=1e-8))


@pytest.mark.stochastic
def test_recover_twin_without_rejection_is_caught():
    assert_checks(D.check_recover_exact(21, max_tries=1, delta=1e-8), expect_pass=False)


@pytest.mark.slow
@pytest.mark.stochastic
def test_tiny_grid_blocked():
    assert_checks(D.check_tiny_grid_blocked(11, sweeps=30, num_shards=2, delta=1e-8))


@pytest.mark.slow
@pytest.mark.stochastic
def test_tiny_grid_blocked_twin_is_caught():
    assert_checks(D.check_tiny_grid_blocked(11, sweeps=30, num_shards=2, delta=1e-8, twin="shard_twice"),
                  expect_pass=False)


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit=0) as cl, distributed.Client(cl) as c:
        yield c


@pytest.mark.slow
@pytest.mark.stochastic
def test_geweke_through_dask_actors(client):
    assert_checks(D.check_geweke_blocked(13, CFG, K=3000, sweeps=15, num_shards=2, client=client, delta=1e-8))


@pytest.mark.slow
@pytest.mark.stochastic
def test_geweke_through_dask_actors_twin_is_caught(client):
    assert_checks(D.check_geweke_blocked(13, CFG, K=3000, sweeps=15, num_shards=2, client=client, delta=1e-8,
                                         twin="shard_twice"), expect_pass=False)


DEEP = [Config((2, 3, 2, 1), "relu", n=3, learn_noise=True),
        Config((1, 2, 2, 2), "leaky_relu", n=2, learn_prior=True),
        Config((2, 2, 1), "identity", n=3)]


@pytest.mark.slow
@pytest.mark.stochastic
@pytest.mark.parametrize("cfg", DEEP, ids=[c.label for c in DEEP])
def test_geweke_blocked_deeper_and_other_activations(cfg):
    assert_checks(D.check_geweke_blocked(31, cfg, num_shards=2, delta=1e-8))
