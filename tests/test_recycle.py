"""Recycled large host buffers (blockbayes._backend.recycle): a buffer is handed out again only
when nothing else refers to it, and sweeps drawn into recycled buffers are the plain ones bit
for bit, kept states included. Deterministic: no false failures."""
from __future__ import annotations

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import gibbs
from blockbayes._backend import random as bbr
from blockbayes._backend import recycle


def _addr(a):
    return a.__array_interface__["data"][0]


@pytest.fixture
def pool_everything(monkeypatch):
    """Every array through the pool (MIN_BYTES = 1), the pool emptied before and after."""
    recycle.release()
    monkeypatch.setattr(recycle, "MIN_BYTES", 1)
    with recycle.scope():
        yield
    recycle.release()


def test_buffer_reused_only_when_unreferenced(pool_everything):
    a = recycle.empty((4, 8), np.float32)
    b = recycle.empty((4, 8), np.float32)
    assert a.flags.c_contiguous and a.flags.writeable and a.shape == (4, 8) and a.dtype == np.float32
    pa = _addr(a)
    assert pa != _addr(b)
    view = a[1:].T                      # a view of a view keeps the buffer
    del a
    c = recycle.empty((4, 8), np.float32)
    assert _addr(c) not in (pa, _addr(b))
    mv = memoryview(view)               # an exported buffer keeps it too
    del view
    e = recycle.empty((4, 8), np.float32)
    assert _addr(e) != pa
    del mv
    d = recycle.empty((2, 16), np.float32)      # same bytes, other shape: reused
    assert _addr(d) == pa
    assert _addr(recycle.empty((4, 8), np.float32)) not in (pa, _addr(b), _addr(c), _addr(e))


def test_small_arrays_bypass_the_pool(monkeypatch):
    recycle.release()
    a = recycle.empty((10,), np.float64)
    assert a.flags.owndata and recycle.release() == 0


def test_free_buffers_capped(pool_everything, monkeypatch):
    monkeypatch.setattr(recycle, "_MAX_FREE", 2)
    held = [recycle.empty((k + 1,), np.float64) for k in range(6)]   # six sizes
    del held
    recycle.empty((100,), np.float64)        # the scan drops free buffers beyond the cap
    assert recycle.release() <= 2 + 1


def test_sweeps_in_recycled_buffers_are_bitwise_plain(monkeypatch):
    """Kept states of 12 sweeps drawn with every array pooled equal, bit for bit, those drawn
    with plain arrays (a buffer reused while a kept state still referred to it would change
    them). A broken pool that ignores the references fails this (checked below)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 6)).astype(np.float32)
    y = (np.maximum(X[:, :3], 0).sum(1, keepdims=True)).astype(np.float32)
    net = bb.MLP([6, 8, 5, 1], "relu", delta=1e-2)

    def chain():
        st = gibbs.init(bbr.key(0), net, X, y, num_chains=1)
        cache = gibbs.precompute(net, X)
        key = bbr.key(1)
        kept = []
        for _ in range(12):
            key, sub = bbr.split(key)
            st, _ = gibbs.step(sub, st, net, X, y, cache=cache, checked=True)
            kept.append(st)
        return [np.concatenate([np.ravel(a) for a in (*s.weights, *s.pre, *s.post)]) for s in kept]

    recycle.release()
    plain = chain()
    monkeypatch.setattr(recycle, "MIN_BYTES", 1)
    with recycle.scope():
        pooled = chain()
    for p, q in zip(plain, pooled):
        np.testing.assert_array_equal(p, q)
    # the broken twin: every pooled buffer counts as free
    monkeypatch.setattr(recycle, "_FREE_REFS", 1 << 30)
    with recycle.scope():
        broken = chain()
    assert any(not np.array_equal(p, q) for p, q in zip(plain, broken))
    recycle.release()


def test_run_returns_spare_buffers_to_the_allocator(monkeypatch):
    """Pooling is scoped: inside ``run_kernel``'s loop large arrays are recycled, and once the
    run returns no spare buffer is held (the outermost scope released them) and arrays made
    outside every scope are plain ``np.empty`` ones. A scope that never releases is caught."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 3))
    y = X[:, :1] ** 2
    net = bb.MLP([3, 4, 1], "relu", delta=1e-2)
    recycle.release()
    monkeypatch.setattr(recycle, "MIN_BYTES", 1)

    def spare():
        import sys
        return sum(1 for b in recycle._pool if sys.getrefcount(b) <= recycle._FREE_REFS)

    def run():
        return gibbs.run(net, X, y, num_samples=5, num_warmup=5, num_chains=2, seed=0, progress=False,
                         init="prior", tempering="off", diagnose=False, learn_noise=False)

    res = run()
    assert res.weights[0].shape[:2] == (2, 5)
    assert recycle._depth == 0 and spare() == 0
    assert recycle.empty((8,), np.float64).flags.owndata           # outside any scope: plain
    with pytest.raises(RuntimeError):
        recycle.exit()
    # the broken twin: leaving the outermost scope does not release
    monkeypatch.setattr(recycle, "release", lambda: 0)
    run()
    assert spare() > 0
