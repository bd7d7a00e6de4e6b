"""Hypothesis settings and per-example false-failure budget of the Gibbs exactness suite.

Profiles (registered here, applied explicitly to this suite's ``@given`` tests through
:func:`vsettings`, so loading them never changes other tests' settings):

* ``validation-ci`` — derandomised, 10 examples, no example database: the same cases on every run
  (a correct sampler always passes or always fails); used unless ``HYPOTHESIS_PROFILE=nightly``.
* ``validation-nightly`` — random, 50 examples, no database.

Budget: ``DELTA_ITEM`` split evenly over ``max_examples + 1`` examples (a derandomised,
database-free run generates at most ``max_examples`` examples and shrinks only after a failure).
"""
from __future__ import annotations

import math
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from ._stats import DELTA_ITEM

_HC = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("validation-ci", max_examples=10, derandomize=True, deadline=None, database=None,
                          print_blob=True, suppress_health_check=_HC)
settings.register_profile("validation-nightly", max_examples=50, derandomize=False, deadline=None, database=None,
                          print_blob=True, suppress_health_check=_HC)


def profile_name() -> str:
    return "validation-nightly" if os.environ.get("HYPOTHESIS_PROFILE") == "nightly" else "validation-ci"


def vsettings(scale: float = 1.0) -> settings:
    """The active validation profile (``scale`` multiplies its ``max_examples``)."""
    base = settings.get_profile(profile_name())
    return settings(base, max_examples=max(1, int(round(base.max_examples * scale))))


def delta_example(n_examples: int, delta_item: float = DELTA_ITEM) -> float:
    """Per-example share of ``delta_item`` for a test running at most ``n_examples`` examples."""
    return delta_item / (n_examples + 1)


def log_uniform(lo, hi):
    """Floats ``exp(U(log lo, log hi))``."""
    return st.floats(math.log(lo), math.log(hi)).map(math.exp)


seeds = st.integers(0, 2 ** 32 - 1)
