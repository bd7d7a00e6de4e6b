"""Tests for blockbayes.datasets (fast; nothing is downloaded)."""
from __future__ import annotations

import math
import os
import random
from pathlib import Path

import numpy as np
import pytest

from blockbayes import MLP
from blockbayes.model import activate, affine, forward
from blockbayes.datasets import (Dataset, DataFormatError, TEACHER_BLOCK, Teacher, download_uci,
                                 gal_split, mnist1d, nested_order, sklearn_dataset, teacher_student,
                                 uci, uci_info, uci_names)



@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Nothing in these tests may reach the network (file:// URLs stand in for downloads)."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


# --------------------------------------------------------------------------------- teacher-student


def _net2(**kw):
    kw.setdefault("delta", {"Z": [0.04, 0.01], "X": [0.09, 0.0625], "y": 0.25})
    return MLP([3, 6, 5, 1], "relu", **kw)


@pytest.mark.parametrize("widths,likelihood", [
    ([4, 1], "gaussian"),
    ([4, 7, 1], "gaussian"),
    ([4, 7, 5, 3], "gaussian"),
    ([4, 7, 1], "probit"),
    ([4, 7, 5, 3], "multinomial_probit"),
    ([4, 7, 3], "onehot_gaussian"),
])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_teacher_shapes_dtypes(widths, likelihood, dtype):
    net = MLP(widths, "relu", likelihood=likelihood)
    data, teacher = teacher_student(net, 37, 11, seed=1, dtype=dtype)
    assert isinstance(data, Dataset) and isinstance(teacher, Teacher)
    d, dout, hidden = widths[0], widths[-1], widths[1:-1]
    assert data.X_train.shape == (37, d) and data.X_test.shape == (11, d)
    assert data.X_train.dtype == np.dtype(dtype) and isinstance(data.X_train, np.ndarray)
    assert len(teacher.weights) == len(widths) - 1
    for l, W in enumerate(teacher.weights):
        assert W.shape == (widths[l + 1], widths[l] + 1) and W.dtype == np.dtype(dtype)
    assert [p.shape for p in teacher.pre] == [(37, h) for h in hidden]
    assert [p.shape for p in teacher.post] == [(37, h) for h in hidden]
    assert all(p.dtype == np.dtype(dtype) for p in teacher.pre + teacher.post)
    if likelihood == "gaussian":
        assert data.task == "regression" and data.n_classes is None
        assert data.y_train.shape == ((37,) if dout == 1 else (37, dout))
        assert data.y_train.dtype == np.dtype(dtype)
        assert teacher.utilities is None
        assert (data.y_mean, data.y_std) == (0.0, 1.0)
    else:
        assert data.task == "classification"
        assert data.y_train.shape == (37,) and data.y_test.shape == (11,)
        assert data.y_train.dtype == np.int64
        assert teacher.utilities.shape == (37, dout)
        assert data.n_classes == (2 if likelihood == "probit" else dout)
    np.testing.assert_array_equal(data.x_mean, np.zeros(d))
    np.testing.assert_array_equal(data.x_std, np.ones(d))


def test_teacher_without_aux_and_empty_sets():
    net = MLP([3, 4, 4, 2], likelihood="multinomial_probit")
    data, teacher = teacher_student(net, 20, 0, seed=0, return_aux=False)
    assert teacher.pre == () and teacher.post == () and teacher.utilities is None
    assert data.X_test.shape == (0, 3) and data.y_test.shape == (0,)
    data, teacher = teacher_student(net, 0, 5, seed=0)
    assert data.X_train.shape == (0, 3) and teacher.pre[0].shape == (0, 4)


def test_teacher_deterministic_and_seed_dependent():
    net = _net2()
    a, ta = teacher_student(net, 50, 20, seed=7)
    b, tb = teacher_student(net, 50, 20, seed=7)
    c, tc = teacher_student(net, 50, 20, seed=8)
    for x, y in zip(a[:4], b[:4]):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(ta.weights + ta.pre + ta.post, tb.weights + tb.pre + tb.post):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a.X_train, c.X_train)
    assert not np.array_equal(ta.weights[0], tc.weights[0])
    # the seed can also be a SeedSequence or a key
    s, _ = teacher_student(net, 5, 0, seed=np.random.SeedSequence(7))
    np.testing.assert_array_equal(s.X_train, a.X_train[:5])


def test_teacher_chunk_size_independent_and_prefix_stable():
    net = _net2(likelihood="gaussian")
    n = TEACHER_BLOCK * 2 + 123  # three blocks, the last one partial
    ref, tref = teacher_student(net, n, 10, seed=3)
    for chunk in (1, 1000, TEACHER_BLOCK, 3 * TEACHER_BLOCK + 1):
        d, t = teacher_student(net, n, 10, seed=3, chunk_size=chunk)
        for x, y in zip(ref[:4], d[:4]):
            np.testing.assert_array_equal(x, y)
        for x, y in zip(tref.pre + tref.post, t.pre + t.post):
            np.testing.assert_array_equal(x, y)
    # row i depends only on (seed, i): a smaller set is a prefix of a larger one
    small, tsmall = teacher_student(net, 1000, 10, seed=3)
    np.testing.assert_array_equal(small.X_train, ref.X_train[:1000])
    np.testing.assert_array_equal(small.y_train, ref.y_train[:1000])
    np.testing.assert_array_equal(tsmall.pre[1], tref.pre[1][:1000])
    np.testing.assert_array_equal(small.X_test, ref.X_test)
    # without auxiliaries the data are unchanged
    noaux, _ = teacher_student(net, n, 10, seed=3, return_aux=False, chunk_size=100)
    np.testing.assert_array_equal(noaux.y_train, ref.y_train)


def test_teacher_float32_is_rounded_float64():
    net = _net2()
    d64, t64 = teacher_student(net, 300, 30, seed=5)
    d32, t32 = teacher_student(net, 300, 30, seed=5, dtype="float32")
    np.testing.assert_array_equal(d32.X_train, d64.X_train.astype(np.float32))
    np.testing.assert_array_equal(d32.y_test, d64.y_test.astype(np.float32))
    np.testing.assert_array_equal(t32.post[1], t64.post[1].astype(np.float32))


def _var_close(resid, target, n_sigma=5.0):
    """Sample variance of i.i.d. N(0, target) residuals within n_sigma standard errors."""
    r = np.asarray(resid, dtype=np.float64).ravel()
    m = r.size
    assert abs(r.mean()) < n_sigma * math.sqrt(target / m), (r.mean(), target)
    assert abs(r.var() / target - 1.0) < n_sigma * math.sqrt(2.0 / m), (r.var(), target)


def test_teacher_noise_statistics_noisy():
    # Each residual of MATH.md §A.0 must be N(0, Δ) with its own Δ. Bound: 5 standard errors of
    # the sample variance (sqrt(2/m) relative), i.e. a false-failure rate below 1e-6 per check.
    net = _net2()
    data, t = teacher_student(net, 20000, 0, seed=11)
    W = t.weights
    X = data.X_train
    _var_close(X, 1.0)
    _var_close(t.pre[0] - affine(X, W[0]), 0.04)
    _var_close(t.post[0] - activate(np, t.pre[0], "relu"), 0.09)
    _var_close(t.pre[1] - affine(t.post[0], W[1]), 0.01)
    _var_close(t.post[1] - activate(np, t.pre[1], "relu"), 0.0625)
    _var_close(data.y_train - affine(t.post[1], W[2])[:, 0], 0.25)


def test_teacher_noise_statistics_noise_free_hidden():
    net = _net2()
    data, t = teacher_student(net, 20000, 20000, seed=12, noisy=False)
    W = t.weights
    np.testing.assert_allclose(t.pre[0], affine(data.X_train, W[0]), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(t.post[0], np.maximum(t.pre[0], 0.0))
    F_tr = forward(net, W, data.X_train)[:, 0]
    F_te = forward(net, W, data.X_test)[:, 0]
    _var_close(data.y_train - F_tr, 0.25)
    _var_close(data.y_test - F_te, 0.25)
    # noisy hidden layers add output variance (MATH.md §A.0): the noise-free fit is worse
    noisy, tn = teacher_student(net, 20000, 0, seed=12)
    assert np.var(noisy.y_train - forward(net, tn.weights, noisy.X_train)[:, 0]) > 0.25 * 1.05


def test_teacher_prior_scale():
    net = MLP([100, 50, 1], prior_prec=[(4.0, 0.25), (2.0, 0.5)])
    Ws, bs = [], []
    for s in range(40):
        _, t = teacher_student(net, 0, 0, seed=s)
        Ws.append(t.weights[0][:, :-1])
        bs.append(t.weights[0][:, -1])
    _var_close(np.concatenate([w.ravel() for w in Ws]), 1 / 4.0)
    _var_close(np.concatenate(bs), 1 / 0.25)


@pytest.mark.parametrize("likelihood,K", [("probit", 1), ("multinomial_probit", 4), ("onehot_gaussian", 4)])
def test_teacher_classification_labels(likelihood, K):
    delta = {"Z": 0.01, "X": 0.01, "y": 0.09}
    net = MLP([5, 8, K], "leaky_relu", slope=0.1, likelihood=likelihood, delta=delta)
    data, t = teacher_student(net, 20000, 500, seed=2)
    y, U = data.y_train, t.utilities
    n_classes = 2 if K == 1 else K
    assert y.min() >= 0 and y.max() == n_classes - 1
    assert np.bincount(y, minlength=n_classes).min() > 0
    assert set(np.unique(data.y_test)) <= set(range(n_classes))
    if likelihood == "probit":
        np.testing.assert_array_equal(y, (U[:, 0] > 0).astype(np.int64))
    else:
        np.testing.assert_array_equal(y, np.argmax(U, axis=1))
    # utilities = last affine + N(0, Δ_y), with Δ_y fixed to 1 for the probit likelihoods
    _var_close(U - affine(t.post[0], t.weights[1]), 1.0 if "probit" in likelihood else 0.09)


def test_teacher_argument_errors():
    net = MLP([2, 3, 1])
    with pytest.raises(TypeError, match="MLP"):
        teacher_student([2, 3, 1], 5, 5, seed=0)
    with pytest.raises(ValueError, match="n_train"):
        teacher_student(net, -1, 5, seed=0)
    with pytest.raises(TypeError, match="n_test"):
        teacher_student(net, 5, 2.5, seed=0)
    with pytest.raises(TypeError, match="dtype"):
        teacher_student(net, 5, 5, seed=0, dtype="int32")
    with pytest.raises(ValueError, match="chunk_size"):
        teacher_student(net, 5, 5, seed=0, chunk_size=0)
    with pytest.raises(ValueError, match="device"):
        teacher_student(net, 5, 5, seed=0, device="tpu")


def test_teacher_device_cpu_and_cuda_error():
    net = MLP([2, 3, 1])
    d, t = teacher_student(net, 5, 5, seed=0, device="cpu")
    assert isinstance(d.X_train, np.ndarray) and isinstance(t.weights[0], np.ndarray)
    try:
        import cupy  # noqa: F401
        has_gpu = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        has_gpu = False
    if has_gpu:
        d, t = teacher_student(net, 5000, 5, seed=0, device="cuda", chunk_size=1)
        ref, tref = teacher_student(net, 5000, 5, seed=0)
        np.testing.assert_array_equal(d.X_train.get(), ref.X_train)
        np.testing.assert_array_equal(t.pre[0].get(), tref.pre[0])
    else:
        from blockbayes._backend import BackendUnavailableError
        with pytest.raises(BackendUnavailableError):
            teacher_student(net, 5, 5, seed=0, device="cuda")


# -------------------------------------------------------------------------------------------- UCI

# EVALUATION.md §1.1: N, D, target column, splits, hidden units
UCI_TABLE = {
    "bostonHousing": (506, 13, 13, 20, 50),
    "concrete": (1030, 8, 8, 20, 50),
    "energy": (768, 8, 8, 20, 50),
    "kin8nm": (8192, 8, 8, 20, 50),
    "naval-propulsion-plant": (11934, 16, 16, 20, 50),
    "power-plant": (9568, 4, 4, 20, 50),
    "protein-tertiary-structure": (45730, 9, 9, 5, 100),
    "wine-quality-red": (1599, 11, 11, 20, 50),
    "yacht": (308, 6, 6, 20, 50),
}


def _uci_root() -> Path:
    env = os.environ.get("BLOCKBAYES_UCI_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data" / "uci"


def _available():
    root = _uci_root()
    return [n for n in UCI_TABLE if (root / n / "data.txt").is_file()]


needs_uci = pytest.mark.skipif(not _available(), reason=f"UCI files not found under {_uci_root()}")


def _gal_recipe(N, split):
    """The split recipe of EVALUATION.md §1.1, verbatim."""
    rs = np.random.RandomState(1)
    end = round(0.9 * N)
    for i in range(split + 1):
        perm = rs.choice(range(N), N, replace=False)
        train, test = perm[:end], perm[end:]
    return train, test


def test_uci_names_and_registry_info(tmp_path):
    assert set(uci_names()) == set(UCI_TABLE)
    for name, (N, D, _, n_splits, n_hidden) in UCI_TABLE.items():
        info = uci_info(name, root=tmp_path)  # nothing there: the built-in table
        assert (info.N, info.D, info.n_splits, info.n_hidden, info.path) == (N, D, n_splits, n_hidden, None)
    assert uci_names(available=True, root=tmp_path) == ()


@needs_uci
@pytest.mark.parametrize("name", list(UCI_TABLE))
def test_uci_real_sets(name):
    root = _uci_root()
    if not (root / name / "data.txt").is_file():
        pytest.skip(f"{name} not available under {root}")
    N, D, target, n_splits, n_hidden = UCI_TABLE[name]
    info = uci_info(name, root=root)
    assert (info.N, info.D, info.n_splits, info.n_hidden) == (N, D, n_splits, n_hidden)
    raw = np.loadtxt(root / name / "data.txt")
    feats = np.loadtxt(root / name / "index_features.txt").astype(int)
    assert raw.shape[0] == N and int(np.loadtxt(root / name / "index_target.txt")) == target
    n_train = round(0.9 * N)
    for split in (0, n_splits - 1):
        data = uci(name, split, root=root)
        assert data.name == name and data.task == "regression" and data.split == split
        assert data.info["split_source"] == "gal recipe"
        assert (data.n_train, data.n_test, data.n_features) == (n_train, N - n_train, D)
        assert data.y_train.shape == (n_train,) and data.X_train.dtype == np.float64
        # training statistics: mean 0, std 1 (constant columns exactly 0)
        const = np.array(data.info["constant_features"], dtype=int)
        keep = np.setdiff1d(np.arange(D), const)
        np.testing.assert_allclose(data.X_train.mean(0), 0.0, atol=1e-9)
        np.testing.assert_allclose(data.X_train[:, keep].std(0), 1.0, rtol=1e-9)
        assert np.all(data.X_train[:, const] == 0) and np.all(data.X_test[:, const] == 0)
        assert abs(data.y_train.mean()) < 1e-9 and abs(data.y_train.std() - 1) < 1e-9
        # the split is Gal's recipe and the values are the file's, in original units
        tr, te = _gal_recipe(N, split)
        ytol = 1e-12 * np.abs(raw[:, target]).max()
        xtol = 1e-12 * np.abs(raw[:, feats]).max(0)
        np.testing.assert_allclose(data.unstandardize_y(data.y_train), raw[tr, target], rtol=1e-12, atol=ytol)
        np.testing.assert_allclose(data.unstandardize_y(data.y_test), raw[te, target], rtol=1e-12, atol=ytol)
        assert np.all(np.abs(data.X_test * data.x_std + data.x_mean - raw[te][:, feats]) <= xtol)
        np.testing.assert_allclose(data.y_std, raw[tr, target].std(), rtol=1e-12)
    if name == "naval-propulsion-plant":
        assert data.info["constant_features"] == [8, 11]


@needs_uci
def test_uci_options_on_real_set():
    root = _uci_root()
    name = _available()[0]
    N = UCI_TABLE[name][0]
    raw = uci(name, 1, root=root, standardize=False, dtype="float32")
    assert raw.X_train.dtype == np.float32 and raw.y_mean == 0.0 and raw.y_std == 1.0
    val = uci(name, 1, root=root, validation=True)
    n_inner = int(0.8 * round(0.9 * N))
    assert val.n_train == n_inner and val.n_test == round(0.9 * N) - n_inner
    full = uci(name, 1, root=root, standardize=False)
    np.testing.assert_allclose(val.X_test * val.x_std + val.x_mean, full.X_train[n_inner:], atol=1e-10)


def test_gal_split_matches_recipe():
    for N, split in ((308, 0), (308, 19), (1030, 7), (11934, 3)):
        tr, te = gal_split(N, split)
        rtr, rte = _gal_recipe(N, split)
        np.testing.assert_array_equal(tr, rtr)
        np.testing.assert_array_equal(te, rte)
        assert np.array_equal(np.sort(np.concatenate([tr, te])), np.arange(N))
    state = np.random.get_state()[1].copy()
    gal_split(50, 2)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def _write_set(folder: Path, data: np.ndarray, n_splits=3, target=None, fmt="%.6f"):
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "data.txt", data, fmt=fmt)
    D = data.shape[1] - 1
    target = D if target is None else target
    np.savetxt(folder / "index_features.txt", np.arange(D), fmt="%d")
    (folder / "index_target.txt").write_text(f"{target}\n")
    (folder / "n_splits.txt").write_text(f"{n_splits}\n")
    (folder / "n_hidden.txt").write_text("50\n")
    return folder


def _toy(N=40, D=3, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(N, D + 1)) * [1.0, 5.0, 0.1, 2.0][: D + 1] + 3.0
    data[:, 1] = 7.0  # a constant column
    return data


def test_uci_custom_folder_and_standardisation(tmp_path):
    data = _toy()
    _write_set(tmp_path / "toy", data)
    d = uci("toy", 2, root=tmp_path)
    assert d.info["split_source"] == "gal recipe" and d.info["n_splits"] == 3
    tr, te = _gal_recipe(40, 2)
    assert d.info["constant_features"] == [1]
    assert np.all(d.X_train[:, 1] == 0.0) and d.x_std[1] == 1.0
    Xtr = np.round(data[tr, :3], 6)
    np.testing.assert_allclose(d.x_mean[[0, 2]], Xtr[:, [0, 2]].mean(0), rtol=1e-12)
    np.testing.assert_allclose(d.X_train[:, [0, 2]].std(0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(d.y_mean, np.round(data[tr, 3], 6).mean(), rtol=1e-12)
    with pytest.raises(ValueError, match="out of range"):
        uci("toy", 3, root=tmp_path)
    with pytest.raises(ValueError, match="out of range"):
        uci("toy", -1, root=tmp_path)


def test_uci_uses_index_files(tmp_path):
    folder = _write_set(tmp_path / "toy", _toy())
    rng = np.random.default_rng(5)
    perm = rng.permutation(40)
    # Gal's split script writes the indices with np.savetxt's default float format
    np.savetxt(folder / "index_train_1.txt", perm[:30])
    np.savetxt(folder / "index_test_1.txt", perm[30:])
    d = uci("toy", 1, root=tmp_path, standardize=False)
    assert d.info["split_source"] == "index files"
    raw = np.loadtxt(folder / "data.txt")
    np.testing.assert_array_equal(d.y_train, raw[perm[:30], 3])
    np.testing.assert_array_equal(d.X_test, raw[perm[30:], :3])
    # other splits still follow the recipe
    assert uci("toy", 0, root=tmp_path).info["split_source"] == "gal recipe"
    # index files that reproduce the recipe give the recipe's data
    tr, te = _gal_recipe(40, 2)
    np.savetxt(folder / "index_train_2.txt", tr)
    np.savetxt(folder / "index_test_2.txt", te)
    a = uci("toy", 2, root=tmp_path)
    (folder / "index_train_2.txt").unlink()
    (folder / "index_test_2.txt").unlink()
    b = uci("toy", 2, root=tmp_path)
    np.testing.assert_array_equal(a.X_train, b.X_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    # bad index files are reported
    np.savetxt(folder / "index_train_0.txt", [0, 1, 2, 99])
    with pytest.raises(DataFormatError, match="out of range"):
        uci("toy", 0, root=tmp_path)
    np.savetxt(folder / "index_train_0.txt", [0, 1, 2])
    np.savetxt(folder / "index_test_0.txt", [2, 3])
    with pytest.raises(DataFormatError, match="both"):
        uci("toy", 0, root=tmp_path)


def test_uci_env_var_root(tmp_path, monkeypatch):
    _write_set(tmp_path / "envset", _toy())
    monkeypatch.setenv("BLOCKBAYES_UCI_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    d = uci("envset", 0)
    assert d.info["path"] == tmp_path / "envset"
    assert uci_info("envset").N == 40


def test_uci_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOCKBAYES_UCI_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="bostonHousing") as exc:
        uci("no_such_set", root=tmp_path)
    assert "unknown UCI dataset" in str(exc.value)
    with pytest.raises(FileNotFoundError) as exc:
        uci("yacht", root=tmp_path)
    msg = str(exc.value)
    assert str(tmp_path) in msg and "root=" in msg and "BLOCKBAYES_UCI_ROOT" in msg
    with pytest.raises(ValueError, match="invalid"):
        uci("../etc", root=tmp_path)
    with pytest.raises(TypeError):
        uci(3, root=tmp_path)


@pytest.mark.parametrize("problem,exc,match", [
    ("non_numeric", DataFormatError, "malformed data"),
    ("ragged", DataFormatError, "malformed data"),
    ("nan", DataFormatError, "non-finite"),
    ("target_range", DataFormatError, "out of range"),
    ("target_is_feature", DataFormatError, "also listed"),
    ("no_target_file", FileNotFoundError, "index_target.txt"),
    ("bad_n_splits", DataFormatError, "n_splits"),
    ("empty", DataFormatError, "no data"),
])
def test_uci_malformed_files(tmp_path, problem, exc, match):
    folder = _write_set(tmp_path / "bad", _toy(N=12))
    lines = (folder / "data.txt").read_text().splitlines()
    if problem == "non_numeric":
        lines[4] = lines[4].replace(lines[4].split()[1], "abc", 1)
        (folder / "data.txt").write_text("\n".join(lines) + "\n")
    elif problem == "ragged":
        lines[5] = " ".join(lines[5].split()[:-1])
        (folder / "data.txt").write_text("\n".join(lines) + "\n")
    elif problem == "nan":
        lines[3] = "nan " + " ".join(lines[3].split()[1:])
        (folder / "data.txt").write_text("\n".join(lines) + "\n")
    elif problem == "target_range":
        (folder / "index_target.txt").write_text("4\n")
    elif problem == "target_is_feature":
        (folder / "index_target.txt").write_text("2\n")
    elif problem == "no_target_file":
        (folder / "index_target.txt").unlink()
    elif problem == "bad_n_splits":
        (folder / "n_splits.txt").write_text("2.5\n")
    elif problem == "empty":
        (folder / "data.txt").write_text("\n")
    with pytest.raises(exc, match=match):
        uci("bad", root=tmp_path)
    if exc is DataFormatError:
        assert issubclass(DataFormatError, ValueError)


def _mirror(src_root: Path, name: str, data: np.ndarray) -> str:
    """A local mirror in the layout of Gal's repository, served through file:// URLs."""
    _write_set(src_root / name / "data", data, n_splits=20)
    return src_root.as_uri()


def test_download_uci_from_file_url(tmp_path):
    N, D = 308, 6  # yacht's shape (download_uci checks it)
    data = np.random.default_rng(0).normal(size=(N, D + 1))
    base = _mirror(tmp_path / "mirror", "yacht", data)
    dest = download_uci("yacht", root=tmp_path / "cache", base_url=base)
    assert dest == tmp_path / "cache" / "yacht"
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["data.txt", "index_features.txt", "index_target.txt", "n_splits.txt", "n_hidden.txt"])
    d = uci("yacht", 4, root=tmp_path / "cache")
    assert d.n_train == round(0.9 * N)
    # a download of the wrong shape is rejected and leaves nothing behind
    base_bad = _mirror(tmp_path / "mirror_bad", "concrete", data)
    with pytest.raises(DataFormatError, match="expected"):
        download_uci("concrete", root=tmp_path / "cache", base_url=base_bad)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["yacht"]
    with pytest.raises(OSError):
        download_uci("energy", root=tmp_path / "cache", base_url=(tmp_path / "empty").as_uri())
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["yacht"]
    with pytest.raises(ValueError, match="unknown"):
        download_uci("nope", root=tmp_path / "cache", base_url=base)


def test_uci_download_flag_uses_download_path(tmp_path, monkeypatch):
    import blockbayes.datasets._uci as U
    data = np.random.default_rng(1).normal(size=(308, 7))
    base = _mirror(tmp_path / "mirror", "yacht", data)
    monkeypatch.setattr(U, "GAL_BASE_URL", base)
    with pytest.raises(FileNotFoundError):
        uci("yacht", root=tmp_path / "c")
    d = uci("yacht", 0, root=tmp_path / "c", download=True)
    assert d.n_train + d.n_test == 308


# ---------------------------------------------------------------------------------------- sklearn

SK = {"digits": (1797, 64, 10), "breast_cancer": (569, 30, 2), "iris": (150, 4, 3), "wine": (178, 13, 3),
      "diabetes": (442, 10, None)}


@pytest.mark.parametrize("name", list(SK))
def test_sklearn_datasets(name):
    pytest.importorskip("sklearn")
    N, D, K = SK[name]
    d = sklearn_dataset(name, seed=3)
    n_test = math.ceil(0.2 * N)
    assert (d.n_train, d.n_test, d.n_features) == (N - n_test, n_test, D)
    assert d.n_classes == K
    np.testing.assert_allclose(d.X_train.mean(0), 0.0, atol=1e-10)
    stds = d.X_train.std(0)
    assert np.all((np.abs(stds - 1) < 1e-10) | (stds == 0))
    if K is None:
        assert d.task == "regression" and d.y_train.dtype == np.float64
        assert abs(d.y_train.mean()) < 1e-10 and abs(d.y_train.std() - 1) < 1e-10
        assert 25 <= d.unstandardize_y(d.y_train).min() and d.unstandardize_y(d.y_test).max() <= 346
    else:
        assert d.task == "classification" and d.y_train.dtype == np.int64
        assert set(np.unique(d.y_train)) == set(range(K))
        # stratified: class proportions of the test set match the whole set to within one point
        y_all = np.concatenate([d.y_train, d.y_test])
        expected = np.bincount(y_all, minlength=K) * n_test / N
        assert np.all(np.abs(np.bincount(d.y_test, minlength=K) - expected) <= 1.0)
        with pytest.raises(TypeError):
            d.unstandardize_y(d.y_train)
    again = sklearn_dataset(name, seed=3)
    np.testing.assert_array_equal(again.X_test, d.X_test)
    other = sklearn_dataset(name, seed=4)
    assert not np.array_equal(other.X_test, d.X_test)


def test_sklearn_options_and_errors():
    pytest.importorskip("sklearn")
    raw = sklearn_dataset("iris", standardize=False, dtype="float32", test_fraction=0.5)
    assert raw.X_train.dtype == np.float32 and raw.n_test == 75
    assert 4.0 <= raw.X_train[:, 0].min() and raw.X_train[:, 0].max() <= 8.0
    with pytest.raises(ValueError, match="digits"):
        sklearn_dataset("mnist")
    with pytest.raises(ValueError, match="test_fraction"):
        sklearn_dataset("iris", test_fraction=1.0)


# --------------------------------------------------------------------------------------- MNIST-1D


def test_mnist1d_small_and_global_rng_untouched():
    pytest.importorskip("mnist1d")
    np.random.seed(123)
    random.seed(456)
    np_state, py_state = np.random.get_state(), random.getstate()
    d = mnist1d(num_samples=500, generation_seed=7)
    after = np.random.get_state()
    assert np.array_equal(after[1], np_state[1]) and after[2] == np_state[2]
    assert random.getstate() == py_state
    assert d.X_train.shape == (400, 40) and d.X_test.shape == (100, 40)
    assert d.n_classes == 10 and d.y_train.dtype == np.int64
    assert set(np.unique(np.concatenate([d.y_train, d.y_test]))) == set(range(10))
    # the package centres the whole set and scales it to unit std; we leave that alone by default
    allx = np.concatenate([d.X_train, d.X_test])
    assert abs(allx.mean()) < 1e-10 and abs(allx.std() - 1) < 1e-10
    again = mnist1d(num_samples=500, generation_seed=7)
    np.testing.assert_array_equal(again.X_train, d.X_train)
    assert not np.array_equal(mnist1d(num_samples=500, generation_seed=8).X_train, d.X_train)
    # nested stratified subsets
    s50 = mnist1d(num_samples=500, generation_seed=7, n_train=50, seed=1)
    s100 = mnist1d(num_samples=500, generation_seed=7, n_train=100, seed=1)
    assert np.array_equal(s100.info["train_index"][:50], s50.info["train_index"])
    assert np.bincount(s100.y_train, minlength=10).min() >= 8
    np.testing.assert_array_equal(s50.X_train, d.X_train[s50.info["train_index"]])
    np.testing.assert_array_equal(s50.X_test, d.X_test)
    st = mnist1d(num_samples=500, generation_seed=7, standardize=True, dtype="float32")
    assert st.X_train.dtype == np.float32
    np.testing.assert_allclose(st.X_train.mean(0), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="n_train"):
        mnist1d(num_samples=500, generation_seed=7, n_train=401)


def test_mnist1d_missing_package_message(monkeypatch):
    import importlib as il
    import blockbayes.datasets._bundled as B
    real = il.import_module

    def fake(name, *a, **k):
        if name.startswith("mnist1d"):
            raise ModuleNotFoundError("No module named 'mnist1d'")
        return real(name, *a, **k)

    monkeypatch.setattr(B.importlib, "import_module", fake)
    B._mnist1d_raw.cache_clear()
    with pytest.raises(ImportError, match="pip install mnist1d"):
        mnist1d(num_samples=20, generation_seed=99)


# ------------------------------------------------------------------------------------------ helpers


def test_nested_order_balanced_prefixes():
    y = np.repeat(np.arange(3), [60, 30, 10])
    order = nested_order(y, seed=0)
    assert np.array_equal(np.sort(order), np.arange(100))
    for m in (10, 20, 50, 100):
        counts = np.bincount(y[order[:m]], minlength=3)
        assert np.all(np.abs(counts - m * np.array([0.6, 0.3, 0.1])) <= 1.0), (m, counts)
    assert not np.array_equal(order, nested_order(y, seed=1))
    np.testing.assert_array_equal(np.sort(nested_order(n=7, seed=0)), np.arange(7))
