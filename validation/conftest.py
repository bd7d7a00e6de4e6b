"""pytest configuration of the Gibbs exactness suite (validation/).

* Hypothesis: this suite's ``@given`` tests carry explicit settings from the profiles
  ``validation-ci`` (derandomised, 10 examples; default) and ``validation-nightly`` (random, 50
  examples; ``HYPOTHESIS_PROFILE=nightly``), registered in ``validation/_hyp.py``. The
  session-wide ``ci``/``nightly`` profiles of the root ``conftest.py`` are left untouched.
* Marker ``stochastic``: a test with false-failure probability ≤ ``DELTA_ITEM`` = 1e-8.
  Collection fails if one run selects more than ``SUITE_DELTA / DELTA_ITEM`` = 100 of them, so a
  run of the fast tier, or of the slow tier, falsely fails with probability ≤ 1e-6.
* Device (``--device`` / ``BLOCKBAYES_TEST_DEVICE``, ``validation/_device.py``): with ``cuda`` or
  ``array_api_strict`` the public entry points of ``blockbayes.gibbs`` run on that backend for the
  whole session (inputs moved once per call, results brought back for the host-side checks).
  Without CuPy or a GPU, ``cuda`` skips every test of this directory with the reason.
* Fixture ``single_thread_blas``: pins BLAS to one thread (threadpoolctl) for the Gibbs tests
  even when this directory is run on its own; on a loaded 2-core machine threaded OpenBLAS makes
  the sampler's tiny batched LAPACK calls ~100× slower. Results are unchanged.
"""
from __future__ import annotations

import pytest

from validation import _device
from validation import _hyp  # noqa: F401  (registers the validation Hypothesis profiles)


def pytest_configure(config):
    config.addinivalue_line("markers", "stochastic: statistical test with false-failure probability <= 1e-8 "
                                       "(validation/_stats.py DELTA_ITEM)")


@pytest.hookimpl(trylast=True)                     # after -m / -k deselection
def pytest_collection_modifyitems(config, items):
    from validation._stats import MAX_ITEMS

    reason = _device.unavailable_reason(_device.current())
    if reason is not None:
        skip = pytest.mark.skip(reason=f"{_device.ENV}={_device.current()}: {reason}")
        for it in items:
            if "validation" in it.nodeid.split("/")[0]:
                it.add_marker(skip)

    n = sum(1 for it in items if it.get_closest_marker("stochastic") is not None)
    if n > MAX_ITEMS:
        raise pytest.UsageError(
            f"{n} stochastic validation tests selected; the false-failure budget of one run "
            f"(1e-6 at 1e-8 per test) allows at most {MAX_ITEMS}: split the run or lower DELTA_ITEM")


@pytest.fixture(scope="module")
def single_thread_blas():
    import numpy  # noqa: F401  (load BLAS before limiting it)
    import scipy.linalg  # noqa: F401

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="session", autouse=True)
def sampler_device():
    """The device the sampler runs on in this session (``validation/_device.py``); patches
    ``blockbayes.gibbs`` for the session unless it is ``"cpu"``."""
    name = _device.current()
    if name != "cpu" and _device.unavailable_reason(name) is not None:
        yield name                  # every test is skipped (collection hook above)
        return
    with _device.Shim(name):
        yield name
