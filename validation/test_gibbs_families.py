"""Fixed-configuration exactness families (``gibbs_suite.FAMILIES``) and their broken twins.

* ``test_family`` — the library passes (stochastic: false failure ≤ 1e-8 each).
* ``test_twin_is_caught`` — the same experiment with one planted bug patched into
  ``blockbayes.gibbs`` fails (the suite proves it has power against that bug).
* ``test_control_reimplementation_passes`` — the twins' bug-free re-implementations pass the
  checks their twins fail, so a caught twin is caught because of its one bug.

Fast tier: families with ``"fast"`` in their tiers; slow tier (``-m slow``): all families at the
larger ``SLOW`` sizes.
"""
from __future__ import annotations

import pytest

from blockbayes.testing import assert_checks

from . import gibbs_checks as G
from . import gibbs_suite as GS

pytestmark = pytest.mark.usefixtures("single_thread_blas")

FAST = GS.families("fast")
SLOW = GS.families("slow")
ids = lambda f: f.name  # noqa: E731


@pytest.mark.stochastic
@pytest.mark.parametrize("fam", FAST, ids=ids)
def test_family(fam):
    assert_checks(fam.checks("fast"))


@pytest.mark.parametrize("fam", [f for f in FAST if "fast" in f.twin_tiers], ids=ids)
def test_twin_is_caught(fam):
    assert_checks(fam.twin_checks("fast"), expect_pass=False)


@pytest.mark.stochastic
@pytest.mark.parametrize("control, run", [
    ("control:rows", lambda tw: G.check_rows(201, d=3, k=1000, C=4, path="chol", delta_noise=0.05, twin=tw, delta=1e-8)),
    ("control:post", lambda tw: G.check_post(202, d=3, k=2, n=2000, method="cholesky", w_scale=2.0, twin=tw, delta=1e-8)),
    ("control:pre", lambda tw: G.check_pre_regimes(203, regimes=G.HARD_REGIMES[:2] + G.HARD_REGIMES[7:9], N=20000,
                                                   dtypes=(__import__("numpy").float64,), twin=tw, delta=1e-8)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_control_reimplementation_passes(control, run):
    assert_checks(run(control))


@pytest.mark.slow
@pytest.mark.stochastic
@pytest.mark.parametrize("fam", SLOW, ids=ids)
def test_family_slow(fam):
    assert_checks(fam.checks("slow"))


@pytest.mark.slow
@pytest.mark.parametrize("fam", SLOW, ids=ids)
def test_twin_is_caught_slow(fam):
    assert_checks(fam.twin_checks("slow"), expect_pass=False)


def test_tiny_likelihood_closed_form():
    """Deterministic: the per-datum marginal likelihood of §E.2 (hidden bias, leaky slope,
    identity) equals 2-D adaptive quadrature over (z, h) to 1e-7."""
    assert_checks(G.check_tiny_likelihood())


def test_budget_and_twins_registry():
    """Every family names a known twin; every twin is caught by at least one fast family."""
    from ._twins import TWINS

    assert all(f.twin in TWINS for f in GS.FAMILIES)
    assert set(TWINS) <= {f.twin for f in FAST}, set(TWINS) - {f.twin for f in FAST}
