"""Classification in block-Gibbs: probit, multinomial probit, one-hot Gaussian (MATH.md §B).

Exactness of the latent conditionals (against their truncated-normal laws, with a broken twin)
is checked here for the multinomial two-step update, the piece that is new code in the sampler;
the truncated-normal kernel itself is tested in test_kernels.py and the Geweke tests in
validation/.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

import blockbayes as bb
from blockbayes import gibbs
from blockbayes import testing as bt
from blockbayes._backend import random as bbr

DELTA = 1e-6


def _blobs(n=120, K=3, d=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = 2.0 * rng.standard_normal((K, d))
    lab = rng.integers(0, K, n)
    X = centers[lab] + rng.standard_normal((n, d))
    return X, lab


@pytest.mark.parametrize("lik,K", [("probit", 2), ("multinomial_probit", 3), ("onehot_gaussian", 3)])
def test_classification_run_shapes_and_probabilities(lik, K):
    X, lab = _blobs(K=K)
    net = bb.MLP([4, 6, 1 if lik == "probit" else K], "relu", likelihood=lik, delta=0.05)
    lab0 = lab.copy()
    res = gibbs.run(net, X, lab, num_samples=20, num_warmup=60, num_chains=2, seed=0, progress=False, init="prior")
    assert np.array_equal(lab, lab0)
    p = res.predict_proba(X)
    assert p.shape == (len(X), K)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-10)
    assert np.all(p >= 0)
    acc = np.mean(np.argmax(p, axis=1) == lab)
    assert acc > 0.7, acc                     # well-separated blobs
    lpd = float(res.log_predictive_density(X, lab))
    assert math.isfinite(lpd) and lpd < 0
    lat = res.final_state.latent
    if lik == "probit":
        assert np.all((lat[..., 0] > 0) == (lab[None, :] == 1))
    elif lik == "multinomial_probit":
        assert np.all(np.argmax(lat, axis=-1) == lab[None, :])
    else:
        assert lat is None


@pytest.mark.parametrize("bad, exc, match", [
    (lambda y: y.astype(float), TypeError, "integer"),
    (lambda y: y + 5, ValueError, "0..2"),
    (lambda y: -y - 1, ValueError, "0..2"),
    (lambda y: y[:-3], ValueError, "labels"),
    (lambda y: y[:, None], ValueError, "shape"),
])
def test_bad_labels_are_clear_errors(bad, exc, match):
    X, lab = _blobs(K=3)
    net = bb.MLP([4, 5, 3], "relu", likelihood="multinomial_probit")
    with pytest.raises(exc, match=match):
        gibbs.run(net, X, bad(lab), num_samples=2, progress=False, init="prior", num_warmup=0, num_chains=1)


def test_probit_rejects_learn_noise_and_bad_widths():
    X, lab = _blobs(K=2)
    with pytest.raises(ValueError, match="one output"):
        bb.MLP([4, 5, 2], likelihood="probit")
    net = bb.MLP([4, 5, 1], likelihood="probit")
    with pytest.raises(ValueError, match="learn_noise"):
        gibbs.run(net, X, lab, num_samples=2, learn_noise=True, progress=False, init="prior",
                  num_warmup=0, num_chains=1)


def test_predict_proba_on_regression_net_is_an_error():
    X, lab = _blobs()
    res = gibbs.run(bb.MLP([4, 3, 1]), X, X[:, 0].copy(), num_samples=2, progress=False, init="prior",
                    num_warmup=0, num_chains=1, learn_noise=False)
    with pytest.raises(ValueError, match="regression"):
        res.predict_proba(X)


def test_multinomial_probit_predictive_matches_monte_carlo():
    """Gauss–Hermite class probabilities against brute-force argmax frequencies (1e6 draws).

    Hoeffding bound per class at δ = 1e-6/3: |p̂ − p| ≤ 0.0027.
    """
    rng = np.random.default_rng(0)
    a = np.array([0.3, -0.5, 1.1])
    N = 1_000_000
    u = a + rng.standard_normal((N, 3))
    freq = np.bincount(np.argmax(u, axis=1), minlength=3) / N
    net = bb.MLP([1, 3], "identity", likelihood="multinomial_probit")
    W = np.zeros((1, 1, 3, 2))
    W[..., -1] = a
    res = bb.gibbs.GibbsResult(net=net, weights=(W,), delta_y=np.ones((1, 1)),
                                   lam_w=np.ones((1, 1, 1)), lam_b=np.ones((1, 1, 1)))
    p = res.predict_proba(np.zeros((1, 1)))[0]
    checks = [bt.proportion_check(f"class {c}", freq[c] * N, N, p[c], DELTA / 3) for c in range(3)]
    bt.assert_checks(checks)


def _multinomial_invariance_checks(sampler):
    """Exact draws of U | a, y (rejection) → one two-step update → still the same law.

    Per coordinate and for the margin u_y − max_{c≠y} u_c: two-sample KS (DKW on each side),
    false failure ≤ 1e-6 overall (Bonferroni over 4 statistics).
    """
    rng = np.random.default_rng(1)
    a = np.array([0.2, -0.4, 0.9])
    y = 1
    M = 20000
    draws = []
    while sum(len(d) for d in draws) < 2 * M:
        u = a + rng.standard_normal((100000, 3))
        draws.append(u[np.argmax(u, axis=1) == y])
    exact = np.concatenate(draws)[: 2 * M]
    start, ref = exact[:M], exact[M:]
    A = np.broadcast_to(a, (1, M, 3)).copy()
    labels = np.full(M, y)
    new = sampler(bbr.key(3), A, labels, start[None], "multinomial_probit")[0]
    support = float(np.mean(np.argmax(new, axis=1) != y))
    margin = lambda U: U[:, y] - np.max(np.delete(U, y, axis=1), axis=1)
    checks = [bt.two_sample_ks_check(f"u[{c}]", new[:, c], ref[:, c], DELTA / 4) for c in range(3)]
    checks.append(bt.two_sample_ks_check("margin", margin(new), margin(ref), DELTA / 4))
    checks.append(bt.Check("support: argmax U == y", support, 0.0, support == 0.0))
    return checks


def test_multinomial_latent_update_preserves_the_exact_law():
    bt.assert_checks(_multinomial_invariance_checks(gibbs.sample_latent))


def test_multinomial_latent_update_broken_twin_is_caught():
    """Broken twin: the winning utility drawn with sd 1.2 instead of 1 (support kept, law wrong)."""
    from blockbayes import kernels

    def broken(key, A, labels, U_prev, likelihood):
        k1, k2 = bbr.split(key, 2)
        oh = labels[None, :, None] == np.arange(A.shape[-1])
        m = np.max(np.where(oh, -np.inf, U_prev), axis=-1)
        a_y = np.sum(A * oh, axis=-1)
        u_y = kernels.truncated_normal(k1, a_y, 1.2, m, False)
        others = kernels.truncated_normal(k2, A, 1.0, np.broadcast_to(u_y[..., None], A.shape), True)
        return np.where(oh, u_y[..., None], others)

    bt.assert_checks(_multinomial_invariance_checks(broken), expect_pass=False)


# ------------------------------------------------------------------------- fused utility kernel

def _utility_inputs(C, n, K, dtype, per_chain_labels, seed):
    """Pre-activations over several sd's (bounds in both tails, α ≥ 5 included) and valid
    previous utilities (argmax = label)."""
    rng = np.random.default_rng(seed)
    A = (rng.standard_normal((C, n, K)) * rng.choice([0.3, 3.0, 12.0], size=(C, n, 1))).astype(dtype)
    labels = rng.integers(0, K, (C, n) if per_chain_labels else n)
    oh = labels[..., None] == np.arange(K)
    if not per_chain_labels:
        oh = np.broadcast_to(oh[None], (C, n, K))
    U = np.where(oh, 1.0 + rng.random((C, n, K)), -8.0 * rng.random((C, n, K))).astype(dtype)
    return A, labels, U


def _composed(key, A, labels, U, impl):
    from blockbayes.kernels import _multinomial_composed

    k1, k2 = bbr.split(key, 2)
    return _multinomial_composed(np, k1, k2, A, labels, U, impl)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C,n,K,per_chain", [(1, 700, 10, False), (3, 301, 4, True), (2, 257, 2, False)])
def test_fused_multinomial_utilities_equal_the_two_truncated_normal_calls(dtype, C, n, K, per_chain):
    """The Numba kernel returns what the composed form (two cpu truncated_normal calls, the
    code it replaced) returns: bit for bit in float64; in float32 (its inversion in float32
    lanes, design note 47) within ``utility_tolerance`` of it, and of the reference; the
    support (argmax U = y) holds exactly. Deterministic: no false failures."""
    from blockbayes import kernels

    A, labels, U = _utility_inputs(C, n, K, dtype, per_chain, seed=C * n + K)
    key = bbr.key(11)
    fused = kernels.multinomial_utilities(key, A, labels, U, impl="cpu")
    assert fused.dtype == np.dtype(dtype) and fused.shape == A.shape
    composed = _composed(key, A, labels, U, "cpu")
    lab = labels if per_chain else np.broadcast_to(labels, (C, n))
    assert np.array_equal(np.argmax(fused, axis=-1), lab)
    ref = kernels.multinomial_utilities(key, A, labels, U, impl="reference")
    if dtype == np.float64:
        np.testing.assert_array_equal(fused, composed)
        tol = 1e-12 * (1 + np.abs(ref) + np.abs(A))
        assert np.all(np.abs(fused - ref) <= tol)
    else:
        assert not np.array_equal(fused, composed)      # the float32 lanes ran
        for other in (composed, ref):
            diff = np.abs(fused.astype(np.float64) - other.astype(np.float64))
            assert np.all(diff <= utility_tolerance(other, A, lab, U))


def utility_tolerance(ref, A, lab, U):
    """Tolerance of a float32 utility draw against the exact one (``ref``, float32-rounded):
    design note 47. Sub-step 1 (u_y): note 45's float32-lane bound
    ``(12 + 6·max(|T|, |α|))·2⁻²⁴`` (T = u_y − a_y, α = max_{c≠y} u_c − a_y; sd 1), two float32
    roundings, and 1e-12 for the float64 parts. Sub-step 2 (u_c, c ≠ y): its own such term
    (T = a_c − u_c, α = a_c − u_y) plus u_y's tolerance, since the draw moves by at most the
    move of its bound (∂z/∂b = uφ(β)/φ(t) ≤ 1: φ/Φ decreases). T and α from ``ref``: within
    1e-12 of the exact ones, far below the terms."""
    r, a, u = (np.asarray(v, np.float64) for v in (ref, A, U))
    oh = lab[..., None] == np.arange(A.shape[-1])
    a_y = np.sum(np.where(oh, a, 0.0), axis=-1)
    u_y = np.sum(np.where(oh, r, 0.0), axis=-1)
    mx = np.max(np.where(oh, -np.inf, u), axis=-1)
    eps = 2.0 ** -24
    with np.errstate(invalid="ignore"):
        big_y = np.maximum(np.abs(u_y - a_y), np.abs(mx - a_y))
    tol_y = ((12.0 + 6.0 * big_y) * eps + 2.0 * np.spacing(np.abs(u_y).astype(np.float32))
             + 1e-12 * (1 + np.abs(u_y) + np.abs(a_y)))
    big_c = np.maximum(np.abs(a - r), np.abs(a - u_y[..., None]))
    tol_c = ((12.0 + 6.0 * big_c) * eps + 2.0 * np.spacing(np.abs(r).astype(np.float32))
             + 1e-12 * (1 + np.abs(r) + np.abs(a)) + tol_y[..., None])
    return np.where(oh, tol_y[..., None], tol_c)


def _sloppy_mnp_range(twin):
    """A broken twin of ``cpu._mnp_range`` whose float32-lane ``T`` is 2⁻¹⁴ relative off (a few
    hundred float32 ulps), built with ``twin`` (``tests/_helpers.njit_twin`` or a variant);
    used in the subprocess scripts below."""
    from numba import njit

    from blockbayes.kernels import cpu

    lanes = cpu._rr_lanes32

    @njit
    def sloppy(m, al_buf, u_buf, pm_f, sg_f, t_f):
        lanes(m, al_buf, u_buf, pm_f, sg_f, t_f)
        for j in range(m):
            t_f[j] = t_f[j] * np.float32(1.0 + 2.0 ** -14)

    inv = twin(cpu._tn_invert32, _rr_lanes32=sloppy)
    return twin(cpu._mnp_range, _tn_block_unit32=twin(cpu._tn_block_unit32, _tn_invert32=inv))


_SLOPPY = """
import sys
import numpy as np
sys.path.insert(0, "tests")
from _helpers import njit_twin
from test_classification import _composed, _sloppy_mnp_range, _utility_inputs, utility_tolerance
from blockbayes import kernels
from blockbayes._backend import random as bbr
from blockbayes.kernels import cpu

A, labels, U = _utility_inputs(1, 700, 10, np.float32, False, seed=710)
key = bbr.key(11)
composed = _composed(key, A, labels, U, "cpu")
tol = utility_tolerance(composed, A, np.broadcast_to(labels, (1, 700)), U)
cpu.get_num_threads = lambda: 1
good = kernels.multinomial_utilities(key, A, labels, U, impl="cpu")
cpu._mnp_range = _sloppy_mnp_range(njit_twin)
bad = kernels.multinomial_utilities(key, A, labels, U, impl="cpu")
print(float(np.max(np.abs(good - composed.astype(np.float64)) / tol)),
      float(np.max(np.abs(bad - composed.astype(np.float64)) / tol)))
"""


def test_float32_utility_tolerance_catches_a_sloppy_float32_lane():
    """The float32 comparison above can fail: a kernel whose float32-lane T is 2⁻¹⁴ relative
    off (a few hundred float32 ulps: e.g. a too-short rational) is rejected by
    ``utility_tolerance``, while the kernel itself passes on the same inputs. (In a
    subprocess, so that the module-level patch of ``cpu._mnp_range`` cannot outlive the test.)"""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _SLOPPY], cwd=root, env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    good, bad = float(out[-2]), float(out[-1])
    assert good <= 1.0 < bad, (good, bad)


def test_fused_multinomial_utilities_equality_check_catches_a_broken_twin():
    """The bitwise comparison above rejects a kernel whose second sub-step is keyed one
    counter off (rows shifted by one): the check can fail."""
    from blockbayes import kernels
    from blockbayes.kernels import _multinomial_composed

    A, labels, U = _utility_inputs(1, 500, 10, np.float64, False, seed=3)
    key = bbr.key(12)

    def broken(key, A, labels, U):
        k1, k2 = bbr.split(key, 2)
        k2 = np.array([k2[0], k2[1] + np.uint64(1)], dtype=np.uint64)
        return _multinomial_composed(np, k1, k2, A, labels, U, "cpu")

    fused = kernels.multinomial_utilities(key, A, labels, U, impl="cpu")
    assert not np.array_equal(fused, broken(key, A, labels, U))
    assert np.array_equal(fused, _composed(key, A, labels, U, "cpu"))


def test_fused_multinomial_utilities_parallel_equals_serial(monkeypatch):
    """The threaded kernel (≥ 2**16 elements with > 1 thread) draws what the serial one draws."""
    from blockbayes import kernels
    from blockbayes.kernels import cpu

    A, labels, U = _utility_inputs(2, 4000, 10, np.float32, False, seed=4)
    key = bbr.key(13)
    monkeypatch.setattr(cpu, "get_num_threads", lambda: 2)
    par = kernels.multinomial_utilities(key, A, labels, U, impl="cpu")
    monkeypatch.setattr(cpu, "get_num_threads", lambda: 1)
    ser = kernels.multinomial_utilities(key, A, labels, U, impl="cpu")
    np.testing.assert_array_equal(par, ser)


def test_fused_multinomial_utilities_errors():
    from blockbayes import kernels

    A, labels, U = _utility_inputs(1, 20, 3, np.float64, False, seed=5)
    key = bbr.key(14)
    with pytest.raises(ValueError, match="labels must lie"):
        kernels.multinomial_utilities(key, A, labels + 3, U)
    with pytest.raises(ValueError, match="labels must have shape"):
        kernels.multinomial_utilities(key, A, labels[:5], U)
    with pytest.raises(TypeError, match="integers"):
        kernels.multinomial_utilities(key, A, labels.astype(np.float64), U)
    with pytest.raises(ValueError, match="one shape"):
        kernels.multinomial_utilities(key, A, labels, U[:, :5])


_TWIN_THEN_CACHED = """
import sys
import numpy as np
sys.path.insert(0, "tests")
from _helpers import njit_twin
from test_classification import _sloppy_mnp_range, _utility_inputs
from blockbayes._backend import random as bbr
from blockbayes import kernels
from blockbayes.kernels import cpu

if sys.argv[1] == "same_name":   # the broken helper: the twin keeps its original qualified name
    def njit_twin(fn, **g):
        import types
        from numba import njit
        py = fn.py_func
        gl = dict(py.__globals__); gl.update(g)
        return njit(nogil=True, error_model="numpy")(
            types.FunctionType(py.__code__, gl, py.__name__, py.__defaults__, py.__closure__))

A, labels, U = _utility_inputs(2, 4000, 10, np.float32, False, seed=4)
key = bbr.key(13)

def run(t):
    cpu.get_num_threads = lambda: t
    return kernels.multinomial_utilities(key, A, labels, U, impl="cpu")

serial = run(1)
if sys.argv[2] == "twin":
    orig = cpu._mnp_range
    cpu._mnp_range = _sloppy_mnp_range(njit_twin)
    run(1)
    cpu._mnp_range = orig
print(bool(np.array_equal(run(2), serial)))
"""


def test_njit_twin_never_leaks_into_a_kernel_loaded_from_the_disk_cache(tmp_path):
    """A broken twin built by ``tests/_helpers.njit_twin`` must not change any kernel compiled or
    loaded after it. A first process fills a fresh Numba cache with the serial and the threaded
    utility kernels; a second builds a broken twin of the serial kernel's inner functions, runs
    it, then loads the threaded kernel from the cache, which must still draw the serial kernel's
    numbers. Deterministic (no statistics). The check can fail: with the twin under its
    original qualified name (the helper before session 12) the cached threaded kernel links
    the twin's code and draws other numbers."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path),
               PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def equal(helper, mode):
        out = subprocess.run([sys.executable, "-c", _TWIN_THEN_CACHED, helper, mode], cwd=root,
                             env=env, check=True, capture_output=True, text=True).stdout.split()
        return out[-1] == "True"

    assert equal("ours", "warm")                 # fills the cache; threaded == serial
    assert equal("ours", "twin")
    assert not equal("same_name", "twin")        # the broken helper is caught
