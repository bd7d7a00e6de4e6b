"""Teacher–student data drawn from the noisy MLP of MATH.md §A.0."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .._backend import namespace, resolve_device, to_device
from .._backend import random as _random
from ..model import MLP, activate
from ._base import Dataset, check_count, check_float_dtype

__all__ = ["Teacher", "teacher_student", "TEACHER_BLOCK"]

#: Rows per random-number block in :func:`teacher_student`. Every block of ``TEACHER_BLOCK``
#: consecutive rows draws its noise from its own keys, so the data do not depend on
#: ``chunk_size``. Changing this constant changes the data for every seed.
TEACHER_BLOCK = 4096

_HOST = np.empty(0)  # a NumPy array to make host draws with blockbayes._backend.random


class Teacher(NamedTuple):
    """The planted network behind :func:`teacher_student` data.

    Attributes
    ----------
    weights : tuple of arrays
        One per layer, shape ``(d_{l+1}, d_l + 1)`` with the bias in the last column (the layout
        of :mod:`blockbayes.model`), in the dataset's dtype and device.
    pre, post : tuple of arrays
        Auxiliaries of the **training** set, one per hidden layer ``l = 2..L``, each of shape
        ``(n_train, d_l)``: the pre-activations ``Z^l`` and post-activations ``X^l`` that generated
        the data (with ``noisy=False``: ``Z^l = X̃^{l-1} W̃^{l-1 T}`` and ``X^l = f(Z^l)``).
        Empty tuples when ``return_aux=False`` (or for a network without hidden layers).
    utilities : array or None
        Classification only (and ``return_aux=True``): the latent utilities
        ``U = X̃^L W̃^{L T} + √Δ_y E`` of the training set, shape ``(n_train, d_out)``, from which
        the labels were read (MATH.md §B). ``None`` for regression, where ``y`` plays this role.
    """

    weights: tuple
    pre: tuple
    post: tuple
    utilities: Any = None


def _subkey(k, *path: int) -> np.ndarray:
    """A key for the node ``path`` of a spawn tree rooted at key ``k`` (O(1), order-free)."""
    entropy = (int(k[0]) << 64) | int(k[1])
    return _random.key(np.random.SeedSequence(entropy, spawn_key=tuple(int(p) for p in path)))


def _normal(k, shape):
    return _random.normal(k, shape, like=_HOST, dtype=np.float64)


def _draw_teacher(net: MLP, k) -> list[np.ndarray]:
    """Teacher rows ``w̃ ~ N(0, diag(λ_W, ..., λ_W, λ_b)^{-1})``, float64 on the host."""
    weights = []
    for l in range(net.num_layers):
        d_in, d_out = net.widths[l], net.widths[l + 1]
        scale = np.full(d_in + 1, 1.0 / math.sqrt(net.lam_w[l]))
        scale[-1] = 1.0 / math.sqrt(net.lam_b[l])
        weights.append(_normal(_subkey(k, l), (d_out, d_in + 1)) * scale)
    return weights


def _block(net: MLP, weights, k, b: int, m: int, noisy: bool):
    """Generate the ``m`` rows of block ``b``: inputs, hidden auxiliaries and output utilities.

    Key layout inside a block (spawn path ``(b, v)``): ``v = 0`` inputs; ``v = 1 + l`` the noise
    added to the pre-activations of weight layer ``l`` (``ξ`` for hidden layers, ``ε`` for the
    output); ``v = L + 1 + j`` the post-activation noise ``η`` of hidden layer ``j``. ``noisy=False``
    skips ``ξ`` and ``η`` but keeps the inputs and output noise identical.
    """
    L = net.num_layers
    xp = namespace(_HOST)
    X = _normal(_subkey(k, b, 0), (m, net.d_in))
    H = X
    pre, post = [], []
    for l, W in enumerate(weights):
        A = H @ W[:, :-1].T
        A += W[:, -1]
        noise = _normal(_subkey(k, b, 1 + l), (m, net.widths[l + 1]))
        if l < L - 1:
            if noisy:
                A += math.sqrt(net.delta_z[l]) * noise
            H = np.asarray(activate(xp, A, net.activation, net.slope))
            if noisy:
                H = H + math.sqrt(net.delta_x[l]) * _normal(_subkey(k, b, L + 1 + l), H.shape)
            pre.append(A)
            post.append(H)
        else:
            A += math.sqrt(net.delta_y) * noise
            U = A
    return X, pre, post, U


def _labels(net: MLP, U: np.ndarray) -> np.ndarray:
    if net.likelihood == "probit":
        return (U[:, 0] > 0).astype(np.int64)
    return np.argmax(U, axis=1).astype(np.int64)


class _Sink:
    """Output arrays on the target device, filled chunk by chunk from host buffers."""

    def __init__(self, shapes_dtypes, kind, index, rows):
        self.kind, self.index = kind, index
        self.host = kind in (None, "cpu")
        if self.host:
            self.out = [np.empty(s, dtype=dt) for s, dt in shapes_dtypes]
        else:
            probe = to_device(np.zeros(1), kind, index)
            xp = namespace(probe)
            dev = probe.device
            self.out = [xp.empty(s, dtype=getattr(xp, np.dtype(dt).name), device=dev) for s, dt in shapes_dtypes]
            self.buf = [np.empty((min(rows, s[0]),) + tuple(s[1:]), dtype=dt) for s, dt in shapes_dtypes]

    def views(self, c0, c1):
        """Host arrays to write rows ``c0:c1`` into (direct views of the output on the CPU)."""
        if self.host:
            return [o[c0:c1] for o in self.out]
        return [b[: c1 - c0] for b in self.buf]

    def commit(self, c0, c1):
        if not self.host:
            for o, b in zip(self.out, self.buf):
                o[c0:c1] = to_device(b[: c1 - c0], self.kind, self.index)


def _generate(net, weights, n, k, noisy, return_aux, chunk_rows, dtype, kind, index):
    classification = net.likelihood != "gaussian"
    d_out = net.d_out
    hidden = net.widths[1:-1]
    specs = [((n, net.d_in), dtype)]
    if classification:
        specs.append(((n,), np.int64))
    else:
        specs.append(((n,) if d_out == 1 else (n, d_out), dtype))
    if return_aux:
        specs += [((n, h), dtype) for h in hidden] * 2
        if classification:
            specs.append(((n, d_out), dtype))
    sink = _Sink(specs, kind, index, chunk_rows)
    nh = len(hidden)
    for c0 in range(0, n, chunk_rows):
        c1 = min(n, c0 + chunk_rows)
        views = sink.views(c0, c1)
        for b0 in range(c0, c1, TEACHER_BLOCK):
            m = min(TEACHER_BLOCK, n - b0)
            X, pre, post, U = _block(net, weights, k, b0 // TEACHER_BLOCK, m, noisy)
            r = slice(b0 - c0, b0 - c0 + m)
            views[0][r] = X
            if classification:
                views[1][r] = _labels(net, U)
            else:
                views[1][r] = U[:, 0] if d_out == 1 else U
            if return_aux:
                for j in range(nh):
                    views[2 + j][r] = pre[j]
                    views[2 + nh + j][r] = post[j]
                if classification:
                    views[2 + 2 * nh][r] = U
        sink.commit(c0, c1)
    out = sink.out
    X, y = out[0], out[1]
    if not return_aux:
        return X, y, (), (), None
    pre = tuple(out[2:2 + nh])
    post = tuple(out[2 + nh:2 + 2 * nh])
    U = out[2 + 2 * nh] if classification else None
    return X, y, pre, post, U


def teacher_student(net: MLP, n_train: int, n_test: int, *, seed, noisy: bool = True,
                    return_aux: bool = True, dtype="float64", device=None,
                    chunk_size: int = 65536) -> tuple[Dataset, Teacher]:
    """Data from a teacher network drawn from the prior of ``net`` (MATH.md §A.0).

    The teacher's node rows are drawn as ``w̃_{l,i} ~ N(0, diag(λ_W, ..., λ_W, λ_b)^{-1})`` with
    ``net.lam_w``/``net.lam_b``; inputs are ``x ~ N(0, I_d)``; then, for every hidden layer,
    ``Z = X̃ W̃ᵀ + √Δ_Z Ξ`` and ``X = f(Z) + √Δ_X H`` (all noise i.i.d. standard normal), and the
    output layer gives ``U = X̃^L W̃^{L T} + √Δ_y E``. With ``noisy=False`` the hidden layers are
    noise-free (``Z = X̃ W̃ᵀ``, ``X = f(Z)``) and only the output noise remains, i.e. the standard
    MLP with Gaussian output noise.

    Targets by ``net.likelihood``:

    * ``"gaussian"``: regression, ``y = U`` (shape ``(n,)`` when ``d_out == 1``, else ``(n, d_out)``).
    * ``"probit"``: ``y = 1[u > 0]`` (``Δ_y = 1``, MATH.md §B.1).
    * ``"multinomial_probit"``: ``y = argmax_c u_c`` (``Δ_y = 1``, §B.2).
    * ``"onehot_gaussian"``: the same argmax rule with the net's ``Δ_y`` (§B.3); labels are
      returned as integers, one-hot encoding is left to the model.

    Parameters
    ----------
    net : MLP
        Architecture, activation, priors and noise variances of the teacher. Any depth.
    n_train, n_test : int
        Numbers of training and test points (``>= 0``). The test set comes from the same teacher
        with the same noise model and its own random stream.
    seed : int, numpy.random.SeedSequence or key
        Everything is a deterministic function of ``seed`` (see Notes).
    noisy : bool
        Generate through the noisy network of §A.0 (default) or with noise-free hidden layers.
    return_aux : bool
        Store the training set's hidden auxiliaries (and classification utilities) in the returned
        :class:`Teacher`. They need ``n_train · Σ_l 2 d_l`` numbers; with ``False`` the working memory
        beyond the outputs themselves is ``O(chunk_size · max width)``.
    dtype : {"float64", "float32"}
        Floating dtype of inputs, regression targets, weights and auxiliaries. Generation is
        always done in float64 and rounded at the end, so float32 data equal the float64 data
        rounded.
    device : None, "cpu", "cuda" or "cuda:N"
        ``None``/``"cpu"`` returns NumPy arrays; ``"cuda"`` returns CuPy arrays, filled chunk by
        chunk (the host never holds more than one chunk).
    chunk_size : int
        Rows per working chunk (rounded up to a multiple of :data:`TEACHER_BLOCK`). Affects memory
        and transfer granularity only, never the values.

    Returns
    -------
    data : Dataset
        ``task="regression"`` (``y_mean=0``, ``y_std=1``) or ``"classification"`` (``n_classes`` 2
        for probit, ``d_out`` otherwise); ``x_mean=0``, ``x_std=1``; ``info`` holds ``seed``,
        ``noisy`` and ``net``.
    teacher : Teacher
        Teacher weights and the training-set auxiliaries (the planted state for an informed
        sampler start, MATH.md §E.4).

    Notes
    -----
    Keys: ``key(seed)`` is split into (teacher, train, test) keys. Teacher layer ``l`` draws from
    the spawn child ``l`` of the teacher key. Rows are grouped into blocks of
    :data:`TEACHER_BLOCK`; block ``b`` of a set draws each of its noise arrays from the spawn child
    ``(b, v)`` of that set's key (``v`` numbers the inputs and the noise of each layer). Every
    block computes its own matrix products, so the result is bit-identical for any ``chunk_size``,
    and row ``i`` depends only on ``(seed, i)``: the first ``m`` rows of a larger set equal the set
    of size ``m``. Reproducible for a given NumPy version; draws are made on the host even for
    ``device="cuda"``, so CPU and GPU data are identical.

    Examples
    --------
    >>> from blockbayes import MLP
    >>> from blockbayes.datasets import teacher_student
    >>> net = MLP([5, 10, 1], "relu", delta=1e-2)
    >>> data, teacher = teacher_student(net, 100, 50, seed=0)
    >>> data.X_train.shape, data.y_train.shape, teacher.pre[0].shape
    ((100, 5), (100,), (100, 10))
    """
    if not isinstance(net, MLP):
        raise TypeError(f"net must be a blockbayes.MLP, got {type(net).__name__}")
    n_train = check_count("n_train", n_train)
    n_test = check_count("n_test", n_test)
    chunk_size = check_count("chunk_size", chunk_size, minimum=1)
    dt = check_float_dtype(dtype)
    kind, index = resolve_device(device)
    chunk_rows = -(-chunk_size // TEACHER_BLOCK) * TEACHER_BLOCK
    k_teacher, k_train, k_test = _random.split(_random.key(seed), 3)
    W = _draw_teacher(net, k_teacher)
    Xtr, ytr, pre, post, U = _generate(net, W, n_train, k_train, bool(noisy), bool(return_aux),
                                       chunk_rows, dt, kind, index)
    Xte, yte, _, _, _ = _generate(net, W, n_test, k_test, bool(noisy), False, chunk_rows, dt, kind, index)
    weights = tuple(w.astype(dt) if kind in (None, "cpu") else to_device(w, kind, index, dt) for w in W)
    classification = net.likelihood != "gaussian"
    d = net.d_in
    data = Dataset(
        X_train=Xtr, y_train=ytr, X_test=Xte, y_test=yte,
        name="teacher_student",
        task="classification" if classification else "regression",
        n_classes=(2 if net.likelihood == "probit" else net.d_out) if classification else None,
        x_mean=np.zeros(d), x_std=np.ones(d),
        y_mean=None if classification else 0.0, y_std=None if classification else 1.0,
        info={"seed": seed if isinstance(seed, (int, np.integer)) else None, "noisy": bool(noisy),
              "net": net, "block": TEACHER_BLOCK},
    )
    return data, Teacher(weights=weights, pre=pre, post=post, utilities=U)
