"""Test-session settings shared by tests/ and validation/.

* BLAS/LAPACK limited to one thread: the tests call many tiny factorisations, which threaded BLAS
  makes ~100x slower on small shared machines (numerics are unchanged).
* ``--device {cpu,cuda,array_api_strict}`` (or ``BLOCKBAYES_TEST_DEVICE``): where the exactness
  suite (validation/) runs the sampler; see ``validation/_device.py``. The option sets the
  environment variable for the session, so subprocesses and the suite read one setting.
* Hypothesis profiles: "ci" (derandomized, no deadline — the default, so every run tests the same
  cases and a correct sampler cannot flake) and "nightly" (random, more examples). Choose with
  HYPOTHESIS_PROFILE=nightly.
"""
import os

import pytest

try:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:  # threadpoolctl comes with scikit-learn (test extra)
    pass

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("nightly", derandomize=False, deadline=None, max_examples=200,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:
    pass


def pytest_addoption(parser):
    parser.addoption("--device", action="store", default=None, choices=("cpu", "cuda", "gpu", "array_api_strict"),
                     help="where validation/ runs the Gibbs sampler (default: $BLOCKBAYES_TEST_DEVICE or cpu)")


def pytest_configure(config):
    dev = config.getoption("--device", default=None)
    if dev is not None:
        os.environ["BLOCKBAYES_TEST_DEVICE"] = dev


@pytest.fixture(scope="module")
def one_blas_thread():
    """BLAS limited to one thread for a module, re-applied after the module's imports (threadpoolctl
    limits only the libraries loaded when it is called: SciPy's OpenBLAS may load later than this
    file's session-wide limit). Use with ``pytestmark = pytest.mark.usefixtures("one_blas_thread")``."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(1):
        yield
