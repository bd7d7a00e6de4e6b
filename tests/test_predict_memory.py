"""Forward passes over many samples are chunked to a memory budget (``predictive.memory_chunk``)."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import blockbayes as bb
from blockbayes import predictive as P
from blockbayes.gibbs.diagnostics import ConvergenceWarning


def _rows(n, dtype=np.float64):
    return np.broadcast_to(np.zeros((), dtype=dtype), (n, 9))   # shape and dtype only, no memory


def test_memory_chunk_bounds_the_batch():
    net = bb.MLP([9, 100, 1])
    # Protein's test split: 9146 rows, 100 units, float64 -> 256 MiB // (9146 * 100 * 8) = 36 samples
    assert P.memory_chunk(net, _rows(9146)) == 36
    assert 36 * 9146 * 100 * 8 <= P.CHUNK_BYTES < 37 * 9146 * 100 * 8
    assert P.memory_chunk(net, _rows(10)) == 256                       # capped
    assert P.memory_chunk(net, _rows(10 ** 9)) == 1                    # at least one sample
    assert P.memory_chunk(net, _rows(9146, np.float32)) == 73          # float32: 2^28 // (9146 * 100 * 4)
    assert P.memory_chunk(net, _rows(9146), budget=2 ** 20, cap=1000) == 1


def test_gibbs_predict_samples_default_is_chunked_and_equal(monkeypatch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = np.sin(X[:, 0]) + 0.1 * rng.normal(size=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = bb.gibbs.run(bb.MLP([3, 5, 1], "relu", delta=1e-2), X, y, num_samples=30, num_warmup=5,
                           num_chains=2, seed=1, progress=False, init="prior", moves=None, tempering="off")
    seen = []
    real = P.forward_chunks
    monkeypatch.setattr(P, "forward_chunks", lambda *a, **k: seen.append(k.get("chunk")) or real(*a, **k))
    monkeypatch.setattr(P, "CHUNK_BYTES", 7 * 40 * 5 * 8)     # budget of 7 samples on these 40 rows
    F = np.asarray(res.predict_samples(X))
    assert seen == [7]
    F_all = np.asarray(res.predict_samples(X, chunk=60))
    assert F.shape == (2, 30, 40, 1)
    # the same products in other batch shapes: equal up to float rounding (one ulp seen), not bit for bit
    np.testing.assert_allclose(F, F_all, rtol=1e-13, atol=1e-15)
