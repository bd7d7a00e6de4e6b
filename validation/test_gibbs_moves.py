"""Exactness of the non-centred layer move (:mod:`blockbayes.gibbs.moves`) and its broken twins.

* ``test_move_family`` — the library passes (stochastic: false failure ≤ 1e-8 = ``DELTA_ITEM``
  each, Bonferroni over every statistic of the check).
* ``test_move_twin_is_caught`` — the same experiment with one planted bug in the move (an
  acceptance ratio with a dropped term, latents that do not follow, an HMC mass matrix that keeps
  adapting to the current state, a redraw proposal wider than the prior or a redraw ratio with the
  prior added; for the collapsed row move a collapsed density with the wrong branch weight, a
  ratio without the prior, or ``Z`` redrawn from its prior instead of its conditional) fails.
* ``test_hmc_wrong_gradient_stays_exact`` — controls: HMC with a wrong gradient, or with the
  mixed-precision rule's interior force replaced by half the gradient, is still exact and must pass
  (stochastic, same bound); the same rule with another force at the start than at the end
  (``hmc_asymmetric_force``) is a twin and must be caught.

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
    # joint non-centred HMC on all layers (blockbayes.gibbs.hmc), GN mass from independent draws
    "joint hmc: geweke relu 2x3x1, move only": (
        lambda twin: M.check_geweke_move(11, with_sweep=False, move=M.joint_hmc(), step=0.3, delta=DELTA_ITEM,
                                         twin=twin), ("hmc_no_kinetic", "hmc_no_prior", "hmc_asymmetric_force")),
    "joint hmc, precision float64: geweke relu 2x3x1, move only": (
        lambda twin: M.check_geweke_move(14, with_sweep=False, move=M.joint_hmc(precision="float64"), step=0.3,
                                         delta=DELTA_ITEM, twin=twin), ("hmc_no_kinetic",)),
    "joint hmc: geweke leaky 2x3x2x1 +sweep +noise +prior": (
        lambda twin: M.check_geweke_move(12, widths=(2, 3, 2, 1), activation="leaky_relu", learn_noise=True,
                                         learn_prior=True, move=M.joint_hmc(), step=0.3, delta=DELTA_ITEM, twin=twin),
        ("hmc_no_kinetic", "hmc_no_prior", "hmc_adapted_mass")),
    "joint hmc: tiny relu net vs grid, move only": (
        lambda twin: M.check_tiny_grid_move(13, with_sweep=False, sweeps=20, move=M.joint_hmc(), step=0.3,
                                            delta=DELTA_ITEM, twin=twin), ("hmc_no_prior", "hmc_adapted_mass")),
    # exact prior redraw of each hidden unit's input row (blockbayes.gibbs.redraw)
    "unit redraw: geweke relu 2x3x1, move only": (
        lambda twin: M.check_geweke_move(21, with_sweep=False, move=M.unit_redraw(), delta=DELTA_ITEM, twin=twin),
        ("redraw_wide", "redraw_prior_ratio")),
    "unit redraw: geweke leaky 2x3x2x1, move only": (
        lambda twin: M.check_geweke_move(22, widths=(2, 3, 2, 1), activation="leaky_relu", with_sweep=False,
                                         move=M.unit_redraw(), delta=DELTA_ITEM, twin=twin),
        ("redraw_wide", "redraw_prior_ratio")),
    "unit redraw: geweke leaky 2x3x2x1 +sweep +noise +prior": (
        lambda twin: M.check_geweke_move(23, widths=(2, 3, 2, 1), activation="leaky_relu", learn_noise=True,
                                         learn_prior=True, move=M.unit_redraw(), delta=DELTA_ITEM, twin=twin),
        ("redraw_wide",)),
    "unit redraw: tiny relu net vs grid, move only": (
        lambda twin: M.check_tiny_grid_move(24, with_sweep=False, sweeps=20, move=M.unit_redraw(), delta=DELTA_ITEM,
                                            twin=twin), ("redraw_wide", "redraw_prior_ratio")),
    # partially collapsed node rows (blockbayes.gibbs.collapsed): Z^{l+1} integrated out of the rows' MH
    "collapsed rows: geweke relu 2x3x1, move only": (
        lambda twin: M.check_geweke_move(31, with_sweep=False, move=M.collapsed_rows(), step=2.0, delta=DELTA_ITEM,
                                         twin=twin), ("collapsed_branch_weight", "collapsed_no_prior", "collapsed_z_prior")),
    "collapsed rows: geweke leaky 2x3x2x1 +sweep +noise +prior": (
        lambda twin: M.check_geweke_move(32, widths=(2, 3, 2, 1), activation="leaky_relu", learn_noise=True,
                                         learn_prior=True, move=M.collapsed_rows(), step=2.0, delta=DELTA_ITEM,
                                         twin=twin), ("collapsed_branch_weight", "collapsed_z_prior")),
    "collapsed rows: tiny relu net vs grid, move only": (
        lambda twin: M.check_tiny_grid_move(33, with_sweep=False, sweeps=20, move=M.collapsed_rows(), step=2.0,
                                            delta=DELTA_ITEM, twin=twin),
        ("collapsed_branch_weight", "collapsed_no_prior")),   # Z is not among the grid's statistics
}

# controls: planted changes that are NOT exactness bugs; the family must still pass
CONTROLS = [("joint hmc: geweke relu 2x3x1, move only", "hmc_wrong_gradient"),
            ("joint hmc: tiny relu net vs grid, move only", "hmc_wrong_gradient"),
            ("joint hmc: geweke relu 2x3x1, move only", "hmc_interior_force"),
            ("joint hmc: tiny relu net vs grid, move only", "hmc_interior_force")]


@pytest.mark.stochastic
@pytest.mark.parametrize("name", list(FAMILIES))
def test_move_family(name):
    assert_checks(FAMILIES[name][0](None))


@pytest.mark.parametrize("name, twin", [(n, t) for n, (_, ts) in FAMILIES.items() for t in ts])
def test_move_twin_is_caught(name, twin):
    assert_checks(FAMILIES[name][0](twin), expect_pass=False)


@pytest.mark.stochastic
@pytest.mark.parametrize("name, control", CONTROLS)
def test_hmc_wrong_gradient_stays_exact(name, control):
    """HMC with a wrong force field is still exact (leapfrog = shears: volume preserving and
    reversible whatever the force); only its acceptance drops. The wrong gradient is caught by
    the finite-difference test in tests/test_gibbs_hmc.py. ``hmc_interior_force`` is the mixed-
    precision rule (exact force at both ends, another one inside) with half the gradient inside:
    the claim that lets the interior kicks run in float32."""
    assert_checks(FAMILIES[name][0](control))
