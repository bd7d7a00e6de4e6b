"""Exactness of the non-centred layer move (:mod:`blockbayes.gibbs.moves`) and its broken twins.

* ``test_move_family`` — the library passes (stochastic: false failure ≤ 1e-8 = ``DELTA_ITEM``
  each, Bonferroni over every statistic of the check).
* ``test_move_twin_is_caught`` — the same experiment with one planted bug in the move (an
  acceptance ratio with a dropped term, or latents that do not follow) fails.

Sizes: 3000 Geweke chains × 30 rounds (move alone: most power against a broken move; with the
sweep, hyperparameters learned: the composition ``run`` uses), 2000 exact starts of the tiny net.
"""
from __future__ import annotations

import pytest

from blockbayes.testing import assert_checks

from . import gibbs_moves_checks as M
from ._stats import DELTA_ITEM

pytestmark = pytest.mark.usefixtures("single_thread_blas")

FAMILIES = {
    "geweke relu 2x3x1, move only": (lambda twin: M.check_geweke_move(1, with_sweep=False, delta=DELTA_ITEM, twin=twin),
                                     ("mala_no_q", "move_stale_latents")),
    "geweke relu 2x3x1, move only, per-row preconditioner": (
        lambda twin: M.check_geweke_move(5, with_sweep=False, precond="rows", delta=DELTA_ITEM, twin=twin),
        ("mala_no_q",)),
    "geweke leaky 2x3x2x1 +sweep +noise +prior": (
        lambda twin: M.check_geweke_move(2, widths=(2, 3, 2, 1), activation="leaky_relu", learn_noise=True,
                                         learn_prior=True, delta=DELTA_ITEM, twin=twin), ("mala_no_q",)),
    "tiny relu net vs grid, move only": (
        lambda twin: M.check_tiny_grid_move(3, with_sweep=False, step=1.5, sweeps=20, delta=DELTA_ITEM, twin=twin),
        ("move_no_prior",)),
}


@pytest.mark.stochastic
@pytest.mark.parametrize("name", list(FAMILIES))
def test_move_family(name):
    assert_checks(FAMILIES[name][0](None))


@pytest.mark.parametrize("name, twin", [(n, t) for n, (_, ts) in FAMILIES.items() for t in ts])
def test_move_twin_is_caught(name, twin):
    assert_checks(FAMILIES[name][0](twin), expect_pass=False)
