"""blockbayes.distributed: the blocked scan in process and on Dask, layout independence,
checkpoint/resume, fault recovery, out-of-core data.

The statistical exactness of the blocked sweep is in validation/test_distributed_exact.py.
"""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import distributed as dd
from blockbayes import gibbs, kernels
from blockbayes._backend import random as bbr
from blockbayes.distributed import _random as rnd

NET = bb.MLP([3, 6, 4, 2], "relu", delta=0.1)
KW = dict(num_samples=4, num_warmup=2, num_chains=2, seed=4, learn_noise=True, learn_prior=True)


def _data(n=120, seed=0, net=NET):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, net.d_in)), rng.standard_normal((n, net.d_out))


def _same(r1, r2, tol):
    for a, b in zip(r1.weights, r2.weights):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    np.testing.assert_allclose(r1.delta_y, r2.delta_y, rtol=tol)
    np.testing.assert_allclose(r1.lam_w, r2.lam_w, rtol=tol)
    np.testing.assert_allclose(r1.log_joint, r2.log_joint, rtol=tol)


# --------------------------------------------------------------------------- randomness

def test_counter_shift_and_uniforms_match_kernels():
    k = bbr.key(5)
    u = kernels.uniforms(k, (40,), like=np.zeros(1))
    np.testing.assert_array_equal(kernels.uniforms(rnd.shift_key(k, 13), (27,), like=np.zeros(1)), u[13:])
    np.testing.assert_array_equal(rnd.counter_uniforms(k, np.arange(40, dtype=np.uint64)), u)
    a = rnd.normals(k, 3, 10, 0, 10, 4, np.float64)
    b = rnd.normals(k, 3, 10, 4, 6, 4, np.float64)
    np.testing.assert_array_equal(a[:, 4:], b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_shard_sweep_is_the_fused_latent_pass_at_its_rows(dtype):
    """Two shards (blocks of 7 rows) draw, at their rows, what kernels.latent_pass draws on all
    rows (row_offset 0) with the same keys, layer by layer output → input; the statistics they
    return (xr, sse from the passes' sums) equal those recomputed from the new latents."""
    X, y = _data(n=50)
    X, y = X.astype(dtype), y.astype(dtype)
    C, N = 2, 50
    W = [w.astype(dtype) for w in dd._driver.prior_weights(bbr.key(1), NET, C, np.float64)]
    dy = np.array([0.05, 0.2])
    rng = np.random.default_rng(3)
    pre = [rng.standard_normal((C, N, d)).astype(dtype) for d in NET.widths[1:-1]]
    post = [rng.standard_normal((C, N, d)).astype(dtype) for d in NET.widths[1:-1]]
    key = bbr.key(7)
    shards = [dd.Shard(NET, X[a:b], y[a:b], a, N, num_chains=C, dtype=dtype, block_rows=7) for a, b in [(0, 20), (20, 50)]]
    stats = []
    for sh, (a, b) in zip(shards, [(0, 20), (20, 50)]):
        sh.set_latents([Z[:, a:b] for Z in pre], [Xh[:, a:b] for Xh in post])
        stats.append(sh.sweep(W, dy, key, learn_noise=True))
    L = NET.num_layers
    for l in range(L - 1, 0, -1):
        h = l - 1
        T = np.broadcast_to(y[None], (C, N, NET.d_out)) if l == L - 1 else pre[l]
        H = X[None] if h == 0 else post[h - 1]
        A = np.matmul(H, np.swapaxes(W[h][..., :-1], -1, -2)) + W[h][:, None, :, -1]
        dn = dy if l == L - 1 else np.full(C, NET.delta_z[l])
        post[h], pre[h], _ = kernels.latent_pass(rnd.fold_in(key, h), pre[h], A, T, W[l], NET.delta_x[h],
                                                 NET.delta_z[h], dn, activation=NET.activation, slope=NET.slope)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    got_pre = [np.concatenate(z, axis=1) for z in zip(*[sh.get_latents()[0] for sh in shards])]
    got_post = [np.concatenate(x, axis=1) for x in zip(*[sh.get_latents()[1] for sh in shards])]
    for a, b in zip(got_pre + got_post, pre + post):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    for sh, st in zip(shards, stats):
        ref = sh.stats(W, learn_noise=True)
        np.testing.assert_allclose(st["xr"], ref["xr"], rtol=1e-9 if dtype == np.float64 else 1e-4)
        np.testing.assert_allclose(st["sse"], ref["sse"], rtol=1e-9 if dtype == np.float64 else 1e-4)
        for a, b in zip(st["B"] + st["G"], ref["B"] + ref["G"]):
            np.testing.assert_array_equal(a, b)


def test_row_ranges():
    assert dd.row_ranges(10, 3) == [(0, 3), (3, 7), (7, 10)]
    assert dd.row_ranges(2, 5) == [(0, 1), (1, 2)]
    assert dd.row_ranges(1000, 2, boundaries=[0, 300, 600, 1000]) == [(0, 600), (600, 1000)]
    assert dd.row_ranges(1000, 2, boundaries=[0, 1000]) == [(0, 500), (500, 1000)]   # one chunk: split it
    with pytest.raises(ValueError):
        dd.row_ranges(10, 0)


# --------------------------------------------------------------------------- in process

@pytest.mark.parametrize("shards,block_rows", [(3, 65536), (4, 17)])
def test_in_process_layouts_give_the_same_chain(shards, block_rows):
    X, y = _data()
    r1 = dd.run(NET, X, y, **KW)
    r2 = dd.run(NET, X, y, num_shards=shards, block_rows=block_rows, **KW)
    _same(r1, r2, 1e-9)
    assert r1.config["scan"] == "blocked" and r1.config["distributed"]["engine"] == "in-process"


def test_float32_layouts_agree_to_rounding():
    X, y = _data()
    kw = dict(KW, learn_prior=False)
    r1 = dd.run(NET, X.astype(np.float32), y.astype(np.float32), **kw)
    r2 = dd.run(NET, X.astype(np.float32), y.astype(np.float32), num_shards=3, block_rows=23, **kw)
    assert r1.weights[0].dtype == np.float32
    for a, b in zip(r1.weights, r2.weights):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_result_like_gibbs_run_and_log_joint():
    X, y = _data()
    r = dd.run(NET, X, y, **KW)
    g = gibbs.run(NET, X, y, progress=False, init="prior", **KW)
    for a, b in zip(r.weights, g.weights):
        assert a.shape == b.shape
    assert r.delta_y.shape == g.delta_y.shape and r.lam_w.shape == g.lam_w.shape
    np.testing.assert_allclose(gibbs.log_joint(r.final_state, NET, X, y), r.log_joint[:, -1], rtol=1e-10)
    # the same prior start as gibbs.run
    k_init = bbr.split(bbr.key(3), 2)[0]
    g0 = gibbs.init(k_init, NET, X, y, num_chains=2)
    for a, b in zip(dd._driver.prior_weights(k_init, NET, 2, np.float64), g0.weights):
        np.testing.assert_array_equal(a, b)
    # predictions work on the result
    mean, var = r.predict(X[:5])
    assert np.all(np.isfinite(mean)) and np.all(var > 0)


def test_step_matches_run_sweep():
    X, y = _data(n=50)
    r = dd.run(NET, X, y, num_samples=2, num_chains=2, seed=9)
    k_init, k_run = bbr.split(bbr.key(9), 2)
    r1 = dd.run(NET, X, y, num_samples=1, num_chains=2, seed=9)
    st, _ = dd.step(rnd.fold_in(k_run, 1), r1.final_state, NET, X, y, num_shards=2)
    for l in range(NET.num_layers):
        np.testing.assert_allclose(st.weights[l], r.weights[l][:, 1], rtol=1e-10, atol=1e-12)


def test_checkpoint_resume_is_bit_exact(tmp_path):
    X, y = _data()
    full = dd.run(NET, X, y, **KW)

    class Stop(Exception):
        pass

    def boom(s):
        if s == 3:
            raise Stop

    with pytest.raises(Stop):
        dd.run(NET, X, y, checkpoint_dir=str(tmp_path), checkpoint_every=2, _after_sweep=boom, **KW)
    with pytest.warns(DeprecationWarning, match="resume=True is deprecated"):
        res = dd.run(NET, X, y, checkpoint_dir=str(tmp_path), checkpoint_every=2, resume=True, **KW)
    assert res.config["distributed"]["resumed_from"] == 4
    for a, b in zip(full.weights, res.weights):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(full.log_joint, res.log_joint)
    np.testing.assert_array_equal(full.delta_y, res.delta_y)


def test_resume_takes_the_checkpoint_path(tmp_path):
    X, y = _data()
    full = dd.run(NET, X, y, **KW)

    class Stop(Exception):
        pass

    def boom(s):
        if s == 3:
            raise Stop

    ck = tmp_path / "ck"
    with pytest.raises(Stop):
        dd.run(NET, X, y, checkpoint_dir=ck, checkpoint_every=2, _after_sweep=boom, **KW)
    # the directory (as a path object, no checkpoint_dir: nothing more is written) or its driver.npz
    for where in (ck, str(ck / "driver.npz")):
        res = dd.run(NET, X, y, resume=where, **KW)
        assert res.config["distributed"]["resumed_from"] == 4
        for a, b in zip(full.weights, res.weights):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(full.log_joint, res.log_joint)
        np.testing.assert_array_equal(full.delta_y, res.delta_y)
    # resume from one directory while checkpointing into another
    res = dd.run(NET, X, y, resume=ck, checkpoint_dir=tmp_path / "next", checkpoint_every=2, **KW)
    np.testing.assert_array_equal(full.weights[0], res.weights[0])
    assert os.path.exists(tmp_path / "next" / "driver.npz")
    with pytest.raises(FileNotFoundError, match="no blockbayes.distributed checkpoint"):
        dd.run(NET, X, y, resume=tmp_path / "nothing", **KW)
    with pytest.raises(TypeError, match="resume must be"):
        dd.run(NET, X, y, resume=1, **KW)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    np.savez(foreign / "driver.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a blockbayes.distributed checkpoint"):
        dd.run(NET, X, y, resume=foreign, **KW)


def test_progress_bar_is_on_by_default(capsys):
    import inspect

    p = inspect.signature(dd.run).parameters
    assert p["progress"].default is True and p["resume"].default is None
    X, y = _data(n=40)
    dd.run(NET, X, y, num_samples=2, seed=0)
    assert "gibbs[blocked]" in capsys.readouterr().err
    dd.run(NET, X, y, num_samples=2, seed=0, progress=False)
    assert "gibbs[blocked]" not in capsys.readouterr().err


def test_out_of_core_latents(tmp_path):
    X, y = _data()
    r1 = dd.run(NET, X, y, **KW)
    r2 = dd.run(NET, X, y, latent_dir=str(tmp_path / "lat"), block_rows=31, num_shards=2, **KW)
    _same(r1, r2, 1e-9)
    assert any(f.endswith(".npy") for f in os.listdir(tmp_path / "lat"))


def test_input_errors():
    X, y = _data()
    with pytest.raises(ValueError, match="gaussian"):
        dd.run(bb.MLP([3, 4, 1], likelihood="probit"), X, (y[:, 0] > 0).astype(int), num_samples=1)
    with pytest.raises(ValueError, match="shape"):
        dd.run(NET, X[:, :2], y, num_samples=1)
    with pytest.raises(ValueError, match="shape"):
        dd.run(NET, X, y[:-1], num_samples=1)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dd.run(NET, Xn, y, num_samples=1)
    with pytest.raises(ValueError, match="num_samples"):
        dd.run(NET, X, y, num_samples=0)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        dd.run(NET, X, y, num_samples=1, resume=True)
    with pytest.raises(ValueError, match="num_shards"):
        dd.run(NET, X, y, num_samples=1, num_shards=0)


def test_recover_fallback_counts_and_stays_finite():
    X, y = _data(n=40)
    sh = dd.Shard(NET, X, y, 0, 40, num_chains=2)
    W = [w.astype(np.float64) for w in dd._driver.prior_weights(bbr.key(1), NET, 2, np.float64)]
    failed = sh.recover(W, np.full(2, 0.1), bbr.key(2), max_tries=1)
    assert 0 <= failed <= 80
    pre, post = sh.get_latents()
    assert all(np.isfinite(a).all() for a in pre + post)


def test_live_workers_asks_the_scheduler_not_the_stale_cache():
    """Regression (CI, stop 23): ``client.scheduler_info`` returned a cache that the client's
    periodic refresh had just overwritten without per-worker entries, so a running LocalCluster
    looked empty. ``live_workers`` must read the scheduler's own answer."""
    from blockbayes.distributed._engine import live_workers

    class Scheduler:
        @staticmethod
        def identity(n_workers=0):
            assert n_workers == -1
            return {"workers": {"tcp://b:2": {}, "tcp://a:1": {}}}

    class StaleClient:
        scheduler = Scheduler()

        def scheduler_info(self, n_workers=5):  # what the periodic refresh leaves behind
            return {"workers": {}}

        def sync(self, fn, *a, **kw):
            return fn(*a, **kw)

    assert live_workers(StaleClient()) == ["tcp://a:1", "tcp://b:2"]


def test_data_generator_is_chunk_deterministic(tmp_path):
    net = bb.MLP([4, 5, 1], delta=0.01)
    p1 = dd.data.write_teacher_student(str(tmp_path / "a"), net, 2500, seed=3, chunk_rows=1000)
    p2 = dd.data.write_teacher_student(str(tmp_path / "b"), net, 1000, seed=3, chunk_rows=1000)
    np.testing.assert_array_equal(np.load(os.path.join(p1, "X_00000.npy")), np.load(os.path.join(p2, "X_00000.npy")))
    assert np.load(os.path.join(p1, "X_00002.npy")).shape == (500, 4)
    assert np.load(os.path.join(p1, "y_00001.npy")).dtype == np.float32


# --------------------------------------------------------------------------- Dask

@pytest.fixture(scope="module")
def client4():
    pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=4, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit=0) as cl, distributed.Client(cl) as c:
        yield c


def test_dask_same_chain_on_1_2_4_workers(client4):
    X, y = _data()
    ref = dd.run(NET, X, y, **KW)
    for shards in (1, 2, 4):
        r = dd.run(NET, X, y, client=client4, num_shards=shards, **KW)
        _same(ref, r, 1e-9)
        info = r.config["distributed"]
        assert info["engine"] == "dask" and len(info["ranges"]) == shards
        assert info["timings"]["comm_bytes"] > 0


def test_dask_workers_get_the_large_block_allocator(client4):
    """``worker_malloc="tuned"`` (default) applies glibc's mallopt on every worker (Dask's
    nanny fixes the mmap threshold at 128 kB, so every block above it was faulted in afresh);
    ``"as_is"`` leaves the workers alone; the chain is the same either way."""
    import platform

    X, y = _data()
    r = dd.run(NET, X, y, client=client4, num_shards=2, **KW)
    tuned = r.config["distributed"]["worker_malloc_tuned"]
    assert len(tuned) == 4
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert all(tuned.values())
    r2 = dd.run(NET, X, y, client=client4, num_shards=2, worker_malloc="as_is", **KW)
    assert r2.config["distributed"]["worker_malloc_tuned"] == {}
    _same(r, r2, 0.0)
    with pytest.raises(ValueError, match="worker_malloc"):
        dd.run(NET, X, y, client=client4, worker_malloc="fast", **KW)


def test_dask_out_of_core_arrays_from_disk(client4, tmp_path):
    pytest.importorskip("dask")
    net = bb.MLP([4, 6, 1], delta=0.05)
    path = dd.data.write_teacher_student(str(tmp_path / "ts"), net, 900, seed=1, chunk_rows=200, dtype="float64")
    Xd, yd, meta = dd.data.open_dataset(path)
    assert Xd.shape == (900, 4) and Xd.chunks[0][0] == 200
    kw = dict(num_samples=3, num_chains=1, seed=2)
    r = dd.run(net, Xd, yd, client=client4, **kw)
    assert r.config["distributed"]["ranges"][1][0] % 200 == 0          # cuts at chunk edges
    ref = dd.run(net, np.asarray(Xd), np.asarray(yd), **kw)
    _same(ref, r, 1e-9)
    r2 = dd.run(net, Xd, yd, client=client4, in_memory=False, block_rows=128, **kw)
    _same(ref, r2, 1e-9)


def test_dask_checkpoint_resume(client4, tmp_path):
    X, y = _data()
    full = dd.run(NET, X, y, client=client4, num_shards=2, **KW)

    class Stop(Exception):
        pass

    def boom(s):
        if s == 2:
            raise Stop

    with pytest.raises(Stop):
        dd.run(NET, X, y, client=client4, num_shards=2, checkpoint_dir=str(tmp_path), checkpoint_every=2,
               _after_sweep=boom, **KW)
    res = dd.run(NET, X, y, client=client4, num_shards=2, checkpoint_dir=str(tmp_path), checkpoint_every=2,
                 resume=str(tmp_path), **KW)
    for a, b in zip(full.weights, res.weights):
        np.testing.assert_array_equal(a, b)


def test_dask_killed_worker_is_replaced_and_run_continues():
    pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    net = bb.MLP([3, 6, 1], "relu", delta=0.3)
    X, y = _data(n=200, net=net)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  memory_limit=0) as cl, distributed.Client(cl) as c:
        pids = c.run(os.getpid)
        victim = sorted(pids)[1]

        def kill(s):
            if s == 1:
                os.kill(pids[victim], signal.SIGKILL)

        r = dd.run(net, X, y, client=c, num_samples=5, num_chains=2, seed=1, timeout=60, _after_sweep=kill)
    info = r.config["distributed"]
    assert info["recovered_shards"] == 1
    ev = info["recovery_events"][0]
    assert ev["shard"] == 1 and ev["worker"] != victim
    assert all(np.isfinite(W).all() for W in r.weights) and np.isfinite(r.log_joint).all()
