"""Fixed-configuration families of the Gibbs exactness suite, per tier, with their broken twins.

One :class:`Family` is one experiment at a fixed configuration and seed: ``run(tier)`` returns the
checks of the correct library, ``run_twin(tier)`` the same checks with the family's twin patched in
(expected to fail). The pytest files parametrise over :data:`FAMILIES` and the report
(``python -m validation``) prints them; the Hypothesis-driven tests live in the test files.

Sizes (``FAST`` / ``SLOW``) are chosen so that the fast tier stays within ~5 minutes on 2 cores
and every fast twin is caught with statistic/threshold ≥ ~1.3 (measured; see the report).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np

from . import gibbs_checks as G
from ._stats import DELTA_ITEM

FAST = dict(rows_k=1000, post_n=2000, pre_N=20000, trace_C=500, lin_S=2000, frozen_n=2000, frozen_sweeps=4,
            tiny_K=2000, tiny_T=10, gew_K=3000, gew_T=30, teach_K=3000, teach_T=30)
SLOW = dict(rows_k=10000, post_n=20000, pre_N=200000, trace_C=3000, lin_S=20000, frozen_n=20000, frozen_sweeps=10,
            tiny_K=6000, tiny_T=30, gew_K=5000, gew_T=30, teach_K=5000, teach_T=30)


def sizes(tier):
    return FAST if tier == "fast" else SLOW


class Family(NamedTuple):
    name: str
    tiers: tuple                                  # tiers in which the family runs
    run: Callable                                 # (tier, delta, twin) -> list[Check]
    twin: Optional[str]                           # twin this family must catch
    twin_tiers: tuple = ("fast",)

    def checks(self, tier, delta=DELTA_ITEM):
        return self.run(tier, delta, None)

    def twin_checks(self, tier, delta=DELTA_ITEM):
        return self.run(tier, delta, self.twin)


def _f(fn, **fixed):
    return lambda tier, delta, twin: fn(tier=tier, delta=delta, twin=twin, **fixed)


def _rows(tier, delta, twin, **kw):
    return G.check_rows(101, k=sizes(tier)["rows_k"], C=4, delta=delta, twin=twin, **kw)


def _post(tier, delta, twin, **kw):
    return G.check_post(102, n=sizes(tier)["post_n"], delta=delta, twin=twin, **kw)


def _pre_regimes(tier, delta, twin, **kw):
    return G.check_pre_regimes(103, N=sizes(tier)["pre_N"], delta=delta, twin=twin, **kw)


def _pre_pooled(tier, delta, twin, **kw):
    return G.check_pre_pooled(104, N=sizes(tier)["pre_N"], delta=delta, twin=twin, **kw)


def _trace(tier, delta, twin, **kw):
    return G.check_sweep_trace(105, C=sizes(tier)["trace_C"], delta=delta, twin=twin, **kw)


def _linear(tier, delta, twin, **kw):
    return G.check_linear_model(106, num_samples=sizes(tier)["lin_S"], delta=delta, twin=twin, **kw)


def _frozen(tier, delta, twin, **kw):
    s = sizes(tier)
    return G.check_frozen_linear(107, n=s["frozen_n"], sweeps=s["frozen_sweeps"], delta=delta, twin=twin, **kw)


def _tiny(tier, delta, twin, **kw):
    s = sizes(tier)
    return G.check_tiny_grid(108, K=s["tiny_K"], sweeps=s["tiny_T"], delta=delta, twin=twin, **kw)


def _geweke(tier, delta, twin, cfg):
    s = sizes(tier)
    return G.check_geweke(109, cfg, K=s["gew_K"], sweeps=s["gew_T"], delta=delta, twin=twin)


def _teacher(tier, delta, twin, cfg):
    s = sizes(tier)
    return G.check_teacher(110, cfg, K=s["teach_K"], sweeps=s["teach_T"], delta=delta, twin=twin)


C = G.Config
BOTH = ("fast", "slow")
# A family that runs in both tiers asserts its twin in the fast tier only (the slow tier re-runs it
# with more power for the correct library); slow-only families assert their twins in the slow tier.
FAMILIES = [
    # 1. conditionals as the sampler calls them
    Family("rows (A.1), precomputed Cholesky", BOTH, _f(_rows, d=3, path="chol", delta_noise=0.05), "rows_var"),
    Family("post (A.2), Cholesky form", BOTH, _f(_post, d=3, k=2, method="cholesky", w_scale=2.0), "post_transpose"),
    Family("post (A.2), Matheron form", BOTH, _f(_post, d=3, k=2, method="matheron"), "post_sign"),
    Family("pre (A.3) ReLU/leaky, hard regimes", BOTH, _f(_pre_regimes), "relu_halflog"),
    Family("pre (A.3) leaky, pooled PIT", BOTH, _f(_pre_pooled, activation="leaky_relu", slope=0.2), "leaky_sign"),
    Family("pre (A.3) identity, pooled PIT", BOTH, _f(_pre_pooled, activation="identity", slope=1.0, dz=0.1, dx=0.3),
           "identity_var"),
    Family("sweep trace, relu 2x3x1 +noise", BOTH, _f(_trace, widths=(2, 3, 1), learn_noise=True, dz=0.3, dx=0.3, dy=0.3),
           "gamma_shape"),
    Family("sweep trace, leaky 2x3x2x1 +noise +prior", BOTH,
           _f(_trace, widths=(2, 3, 2, 1), activation="leaky_relu", learn_noise=True, learn_prior=True), "post_sign"),
    # 2. linear references
    Family("linear model (E.1) via run()", BOTH, _f(_linear), "rows_sign"),
    Family("frozen deep linear (E.1) 2x3x2x1", BOTH, _f(_frozen, widths=(2, 3, 2, 1)), "identity_var"),
    Family("frozen deep linear (E.1) 1x2x3x2 Matheron", BOTH, _f(_frozen, widths=(1, 2, 3, 2), post_method="matheron"),
           "post_sign"),
    # 3. tiny nets on a grid
    Family("tiny ReLU net vs 4-D grid (E.2)", BOTH, _f(_tiny, activation="relu"), "rows_stale"),
    Family("tiny leaky net vs 4-D grid (E.2)", BOTH, _f(_tiny, activation="leaky_relu"), "leaky_sign"),
    # 4. Geweke
    Family("Geweke relu 1x1x1", BOTH, _f(_geweke, cfg=C((1, 1, 1), "relu", n=8, delta=1.0)), "relu_halflog"),
    Family("Geweke leaky 2x2x1 +noise +prior", BOTH,
           _f(_geweke, cfg=C((2, 2, 1), "leaky_relu", n=4, delta=0.5, learn_noise=True, learn_prior=True)), "gamma_shape"),
    Family("Geweke identity 1x2x2x1", BOTH, _f(_geweke, cfg=C((1, 2, 2, 1), "identity", n=3, delta=0.3)), "post_sign"),
    Family("Geweke identity 2x1 (linear regression)", ("slow",), _f(_geweke, cfg=C((2, 1), "identity", n=5)), "rows_sign", ("slow",)),
    Family("Geweke identity 2x1 +noise +prior", ("slow",),
           _f(_geweke, cfg=C((2, 1), "identity", n=5, learn_noise=True, learn_prior=True)), "gamma_shape", ("slow",)),
    Family("Geweke relu 2x2x1 +noise +prior", ("slow",),
           _f(_geweke, cfg=C((2, 2, 1), "relu", n=4, delta=0.5, learn_noise=True, learn_prior=True)), "relu_halflog", ("slow",)),
    Family("Geweke relu 1x2x2x1", ("slow",), _f(_geweke, cfg=C((1, 2, 2, 1), "relu", n=3, delta=0.5)), "relu_halflog", ("slow",)),
    Family("Geweke leaky 1x2x2x1 +noise", ("slow",),
           _f(_geweke, cfg=C((1, 2, 2, 1), "leaky_relu", n=3, delta=0.5, learn_noise=True)), "leaky_sign", ("slow",)),
    Family("Geweke identity 1x2x1 +prior", ("slow",),
           _f(_geweke, cfg=C((1, 2, 1), "identity", n=4, learn_prior=True)), "post_sign", ("slow",)),
    # 5. planted teacher
    Family("planted teacher relu 3x4x1", BOTH, _f(_teacher, cfg=C((3, 4, 1), "relu", n=8, delta=0.3)), "relu_halflog"),
    Family("planted teacher leaky 2x3x2x1 +noise +prior", ("slow",),
           _f(_teacher, cfg=C((2, 3, 2, 1), "leaky_relu", n=8, delta=0.3, learn_noise=True, learn_prior=True)),
           "leaky_sign", ("slow",)),
]


def families(tier):
    return [f for f in FAMILIES if tier in f.tiers]


def deterministic_checks():
    """Reference cross-checks with no randomness (log-odds vs mpmath/quadrature, closed-form tiny
    likelihood vs 2-D quadrature)."""
    return G.check_log_odds() + G.check_tiny_likelihood()
