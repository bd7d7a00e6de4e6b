"""The one run driver of every sampler and optimiser family: :func:`run_kernel`.

Modelled on BlackJAX's ``run_inference_algorithm``: an algorithm is a *pure* step function
``step_fn(key, state, t) -> (state, info)`` (``t`` the 0-based step index, for schedules and
warm-up flags); the driver owns everything stateful around it —

* the RNG stream: ``key, sub = split(key, 2)`` at the top of each step (``keys_per_step`` such
  splits in a row, or one ``split(key, k + 1)`` with ``key_mode="fan"``), so a family's draws are
  the same as those of its hand-written loop;
* warm-up, thinning and traces: at every kept step ``collect(state, info, t)`` returns a dict of
  arrays, written into traces preallocated on the arrays' device, of shape
  ``(lead, num_samples, *rest)`` for a value of shape ``(lead, *rest)`` (``(num_samples,)`` for a
  scalar);
* ``check_every`` finite checks (``check(state, info) -> names of non-finite blocks``; one
  device sync each), raising :class:`NonFiniteStateError` naming the blocks and the step;
* the progress bar (tqdm), with an optional ``postfix(state, info)``;
* an ``on_step`` hook (diagnostics, or a trace value completed one step later) and an early
  ``stop`` rule;
* **checkpoints**: ``checkpoint=path, checkpoint_every=k`` writes the state, the RNG key, the
  step counters and the traces so far every ``k`` steps (atomically: a temporary file renamed
  over the old one); ``resume=path`` continues such a run bit-exactly (the same samples as the
  uninterrupted run);
* **Ctrl-C**: a :class:`KeyboardInterrupt` inside the loop ends it; the driver warns
  (:class:`RunInterrupted`) and returns the samples so far, the traces truncated to them.

A checkpoint stores the state as a tree of tuples/NamedTuples/arrays/scalars/``None`` (host
NumPy copies; no pickle); :func:`run_kernel` rebuilds it in the structure and on the device of
the ``state`` it is given, so a resumed run builds its initial state as usual and passes it in.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable, NamedTuple, Optional

from ._backend.host import np

from ._backend import backend_name, device_of, namespace, to_device, to_numpy
from ._backend import random as bbr
from ._backend import recycle
from ._backend.io import host_copy, load_npz, save_npz

__all__ = ["run_kernel", "deprecated_names", "one_blas_thread", "nonfinite_fields", "RunOutput",
           "RunInterrupted", "NonFiniteStateError", "nonfinite_blocks",
           "is_kept", "num_steps_of", "check_count", "load_checkpoint"]

_FORMAT = "blockbayes-checkpoint-1"


class NonFiniteStateError(FloatingPointError):
    """A run's state became non-finite; the message names the block(s) and the step."""


class RunInterrupted(UserWarning):
    """A run was interrupted (Ctrl-C); the result holds the samples drawn so far."""


class RunOutput(NamedTuple):
    """What :func:`run_kernel` returns.

    Attributes
    ----------
    state : the final state (after the last completed step)
    key : the RNG key after the last completed step (``None`` for key-free algorithms)
    traces : dict of arrays, each ``(lead, num_kept, *rest)`` (``(num_kept,)`` for scalars)
    num_kept : int
        Kept steps (samples per chain) in the traces.
    num_done : int
        Steps done in total (warm-up included).
    interrupted : bool
        The loop ended early by a ``KeyboardInterrupt``.
    stopped : bool
        The loop ended early by the ``stop`` rule.
    """

    state: Any
    key: Any
    traces: dict
    num_kept: int
    num_done: int
    interrupted: bool
    stopped: bool


def check_count(name: str, v, lo: int = 1) -> int:
    """``v`` as an int ``>= lo``, else ``ValueError`` naming it (bools rejected)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    return int(v)


def is_kept(t: int, num_warmup: int, thin: int) -> bool:
    """Whether step ``t`` (0-based) is kept: after warm-up, every ``thin``-th step."""
    return t >= num_warmup and (t - num_warmup) % thin == thin - 1


def num_steps_of(num_samples: int, num_warmup: int = 0, thin: int = 1) -> int:
    """Total steps of a run: ``num_warmup + num_samples * thin``."""
    return num_warmup + num_samples * thin


def nonfinite_blocks(xp, blocks: dict) -> list:
    """Names of the arrays in ``blocks`` (name → array) holding a NaN or an infinity.

    The all-finite case costs one device-to-host read: the flags are combined on the device
    first and read one by one only when the combination is off."""
    items = [(k, v) for k, v in blocks.items() if v is not None]
    if not items:
        return []
    ok = None
    for _, B in items:
        f = xp.all(xp.isfinite(B))
        ok = f if ok is None else ok & f
    if bool(ok):
        return []
    return [k for k, B in items if not bool(xp.all(xp.isfinite(B)))]


def deprecated_names(**renames):
    """Decorator: keyword ``old=`` still works as the canonical ``new=`` (``renames[old] = new``),
    with a :class:`DeprecationWarning`; passing both is a ``TypeError``.

    The run-side vocabulary is ``num_samples``, ``num_warmup``, ``num_steps`` (optimiser
    iterations, CAVI sweeps), ``num_chains``, ``thin``, ``seed``, ``progress``, ``device``,
    ``dtype``, ``check_every``."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__module__}.{fn.__name__}() got both {new!r} and its deprecated "
                                        f"spelling {old!r}")
                    warnings.warn(f"{fn.__module__}.{fn.__name__}(): {old!r} is deprecated, use {new!r}",
                                  DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        inner.deprecated_names = dict(renames)
        return inner

    return wrap


def one_blas_thread(fn):
    """Decorator: run ``fn`` with one BLAS/LAPACK thread (restored afterwards).

    Float32 results of the families depend on the BLAS thread count (measured: Gibbs weights
    moved by 5e-5 after 20 sweeps with 2 threads instead of 1), so a run must not inherit
    whatever thread setting earlier code left in the process; one thread is also the fast
    setting for these small-block products on a shared machine."""
    import functools

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        from ._backend.threads import thread_limits

        restore = thread_limits(None, 1)
        try:
            return fn(*args, **kwargs)
        finally:
            restore()

    return inner


def nonfinite_fields(xp, state, fields) -> list:
    """:func:`nonfinite_blocks` over a NamedTuple's per-layer fields: names like
    ``"mean of layer 2"`` for ``fields=("mean",)`` holding tuples of per-layer arrays (a field
    holding one array is named as is)."""
    blocks = {}
    for f in fields:
        v = getattr(state, f)
        if isinstance(v, (tuple, list)):
            blocks.update({f"{f} of layer {l + 1}": a for l, a in enumerate(v)})
        else:
            blocks[f] = v
    return nonfinite_blocks(xp, blocks)


# ------------------------------------------------------------------------------- tree codec

def _is_array(x) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (np.generic,))


def _flatten(node, leaves: list):
    """A JSON spec of ``node`` with its arrays appended to ``leaves`` (host NumPy copies)."""
    if node is None:
        return {"t": "none"}
    if isinstance(node, bool):
        return {"t": "bool", "v": node}
    if isinstance(node, (int, np.integer)) and not _is_array(node):
        return {"t": "int", "v": int(node)}
    if isinstance(node, (float, np.floating)) and not _is_array(node):
        return {"t": "float", "v": float(node).hex()}
    if isinstance(node, str):
        return {"t": "str", "v": node}
    if _is_array(node):
        leaves.append(np.array(to_numpy(node), copy=True))
        return {"t": "array", "i": len(leaves) - 1}
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return {"t": "nt", "name": type(node).__name__,
                "items": {f: _flatten(getattr(node, f), leaves) for f in node._fields}}
    if isinstance(node, (tuple, list)):
        return {"t": "tuple" if isinstance(node, tuple) else "list",
                "items": [_flatten(v, leaves) for v in node]}
    if isinstance(node, dict):
        return {"t": "dict", "items": {str(k): _flatten(v, leaves) for k, v in node.items()}}
    raise TypeError(f"cannot checkpoint a state holding a {type(node).__name__}; states must be trees "
                    "of tuples, NamedTuples, dicts, arrays, numbers and None")


def _place(arr: np.ndarray, like):
    """Host array → ``like``'s namespace and device (dtype kept)."""
    if like is None or isinstance(like, np.ndarray):
        return arr
    name = backend_name(namespace(like))
    if name == "cupy":
        return to_device(arr, "cuda", like.device.id)
    xp = namespace(like)
    return xp.asarray(arr, device=device_of(like))


def _first_array(node):
    if _is_array(node):
        return node
    if isinstance(node, dict):
        node = tuple(node.values())
    if isinstance(node, (tuple, list)):
        for v in node:
            a = _first_array(v)
            if a is not None:
                return a
    return None


def _unflatten(spec, template, leaves, like):
    t = spec["t"]
    if t == "none":
        return None
    if t in ("bool", "str"):
        return spec["v"]
    if t == "int":
        return int(spec["v"])
    if t == "float":
        return float.fromhex(spec["v"])
    if t == "array":
        return _place(leaves[spec["i"]], like if template is None else template)
    if t == "nt":
        if template is None or type(template).__name__ != spec["name"]:
            raise ValueError(f"the checkpoint holds a {spec['name']} where this run has "
                             f"{type(template).__name__}: it belongs to another kind of run")
        return type(template)(**{f: _unflatten(s, getattr(template, f, None), leaves, like)
                                 for f, s in spec["items"].items()})
    if t in ("tuple", "list"):
        tmpl = template if isinstance(template, (tuple, list)) and len(template) == len(spec["items"]) else None
        out = [_unflatten(s, None if tmpl is None else tmpl[i], leaves, like) for i, s in enumerate(spec["items"])]
        return tuple(out) if t == "tuple" else out
    if t == "dict":
        tmpl = template if isinstance(template, dict) else {}
        return {k: _unflatten(s, tmpl.get(k), leaves, like) for k, s in spec["items"].items()}
    raise ValueError(f"unknown checkpoint node {t!r}")


def _save_checkpoint(path, *, state, key, traces, num_kept, num_done, config):
    leaves: list = []
    spec = _flatten(state, leaves)
    meta = dict(format=_FORMAT, spec=spec, num_kept=int(num_kept), num_done=int(num_done),
                config=config, traces=sorted(traces), key=None if key is None else [int(key[0]), int(key[1])])
    arrays = {f"leaf_{i}": a for i, a in enumerate(leaves)}
    for name, tr in traces.items():
        # trace layout (lead, S, ...): keep the filled samples only
        filled = tr[:num_kept] if tr.ndim == 1 else tr[:, :num_kept, ...]
        arrays[f"trace_{name}"] = host_copy(filled)
    save_npz(path, arrays, meta, meta_key="__meta__", atomic=True)


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`run_kernel` (host arrays; no pickle).

    Returns a dict with ``meta`` (counters, run configuration, the state's structure),
    ``leaves`` (the state's arrays) and ``traces`` (name → filled part of each trace).

    Raises
    ------
    ValueError
        The file is not a blockbayes checkpoint.
    """
    what = "blockbayes checkpoint file"
    arrays, meta = load_npz(path, meta_key="__meta__", what=what)
    try:
        if meta.get("format") != _FORMAT:
            raise ValueError(f"format {meta.get('format')!r}")
        leaves = [arrays[f"leaf_{i}"] for i in range(sum(1 for k in arrays if k.startswith("leaf_")))]
        traces = {name: arrays[f"trace_{name}"] for name in meta["traces"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{os.fspath(path)!r} is not a {what} ({exc})") from None
    return dict(meta=meta, leaves=leaves, traces=traces)


# ------------------------------------------------------------------------------- the driver

def _next_keys(key, keys_per_step: int, key_mode: str):
    if key is None:
        return None, None
    if key_mode == "fan":
        ks = bbr.split(key, keys_per_step + 1)
        subs = ks[1:]
        key = ks[0]
    else:
        subs = []
        for _ in range(keys_per_step):
            key, sub = bbr.split(key, 2)
            subs.append(sub)
    return key, (subs[0] if keys_per_step == 1 else tuple(subs))


def _alloc(value, S):
    xp = namespace(value)
    shape = (S,) if value.ndim == 0 else (value.shape[0], S) + tuple(value.shape[1:])
    return xp.zeros(shape, dtype=value.dtype, device=device_of(value))


def _trim(tr, k):
    return tr[:k] if tr.ndim == 1 else tr[:, :k, ...]


def run_kernel(key, state, step_fn: Callable, *, num_samples: Optional[int] = None, num_warmup: int = 0,
               thin: int = 1, num_steps: Optional[int] = None, collect: Optional[Callable] = None,
               check: Optional[Callable] = None, check_every: Optional[int] = None,
               check_what: str = "state", check_hint: str = "", progress: bool = True, desc: str = "run",
               unit: str = "step", postfix: Optional[Callable] = None, postfix_every: int = 10,
               on_step: Optional[Callable] = None, stop: Optional[Callable] = None,
               keys_per_step: int = 1, key_mode: str = "chain", key_every: int = 1, checkpoint=None,
               checkpoint_every: Optional[int] = None, resume=None, config: Optional[dict] = None,
               first_step: int = 0) -> RunOutput:
    """Run ``step_fn`` from ``state``: warm-up, thinning, traces, checks, progress, checkpoints.

    Parameters
    ----------
    key : key or None
        The run's RNG key (:func:`blockbayes._backend.random.key`); ``None`` for deterministic
        algorithms (``step_fn`` then gets ``None``).
    state : any tree of NamedTuples/tuples/arrays/numbers/None
        The initial state.
    step_fn : callable ``(key, state, t) -> (state, info)``
        One pure step; ``key`` is one fresh sub-key (a tuple of ``keys_per_step`` of them when
        ``keys_per_step > 1``).
    num_samples, num_warmup, thin : int
        Sampling runs: ``num_warmup + num_samples * thin`` steps; step ``t`` is kept when
        :func:`is_kept`. ``num_steps`` instead: an optimiser run of ``num_steps`` steps, each kept.
    collect : callable ``(state, info, t) -> dict``, optional
        The values to trace at a kept step (arrays of shape ``(lead, *rest)`` or scalars).
    check : callable ``(state, info) -> list of str``, optional
        Names of the non-finite blocks (empty when all finite); called every ``check_every``
        steps and after the last one (``check_every=None``: only after the last).
    check_what, check_hint : str
        Words of the :class:`NonFiniteStateError` message.
    progress : bool
        tqdm progress bar (``desc``, ``unit``); ``postfix(state, info) -> dict`` every
        ``postfix_every`` steps and at the last.
    on_step : callable ``(t, state, info, traces, num_kept)``, optional
        Called after each step, before its values are collected (diagnostics; a trace value
        that completes one step later may be written into ``traces[name]`` here).
    stop : callable ``(t, state, info, traces) -> bool``, optional
        End the loop after step ``t`` (``traces`` holds the steps kept so far, ``t``'s included).
    keys_per_step, key_mode : int, {"chain", "fan"}
        How the step's keys are split off: ``"chain"``: ``key, sub = split(key, 2)``,
        ``keys_per_step`` times; ``"fan"``: ``key, *subs = split(key, keys_per_step + 1)``.
    key_every : int
        Split keys only at the steps ``t`` with ``t % key_every == 0``; the other steps get ``None``
        for a key. For algorithms that draw their randomness for ``key_every`` steps at once and
        carry it in the state (one key split costs about as much as a small net's step). The key
        stream of ``key_every = 1`` (every step) is the default.
    checkpoint : path, optional
        Write a checkpoint every ``checkpoint_every`` steps (atomically) and at the end.
    resume : path, optional
        Continue from a checkpoint of the same run (same ``config``, counts and structure).
    config : dict, optional
        JSON-able description of the run (family, settings), stored in checkpoints and compared
        on resume.
    first_step : int
        Index of the first step (default 0). A run that continues a finished one (``state`` and
        ``key`` as that run left them after ``first_step`` steps, warm-up done: ``first_step >=
        num_warmup``) runs steps ``first_step, …, first_step + num_samples · thin − 1`` and keeps
        ``num_samples`` new samples, the same steps, keys and samples as the longer uninterrupted
        run (``step_fn`` sees the true step index, so its warm-up flags stay off).

    Returns
    -------
    RunOutput

    Raises
    ------
    NonFiniteStateError
        A check found non-finite blocks; the message names them and the step.
    ValueError
        Bad counts, or ``resume`` does not match this run.
    """
    if num_steps is not None:
        if num_samples is not None:
            raise ValueError("pass num_samples (sampling) or num_steps (optimising), not both")
        S = check_count("num_steps", num_steps)
        num_warmup, thin = 0, 1
    else:
        S = check_count("num_samples", num_samples)
        num_warmup = check_count("num_warmup", num_warmup, 0)
        thin = check_count("thin", thin)
    if check_every is not None:
        check_count("check_every", check_every)
    if checkpoint is not None:
        checkpoint_every = check_count("checkpoint_every", 1 if checkpoint_every is None else checkpoint_every)
    if key_mode not in ("chain", "fan"):
        raise ValueError(f"key_mode must be 'chain' or 'fan', got {key_mode!r}")
    key_every = check_count("key_every", key_every)
    first_step = check_count("first_step", first_step, 0)
    if 0 < first_step < num_warmup:
        raise ValueError(f"first_step ({first_step}) must be 0 or at least num_warmup ({num_warmup}): a run "
                         "continues a finished run's sampling phase, not its warm-up")
    total = (first_step if first_step else num_warmup) + S * thin
    cfg = dict(config or {}, num_samples=S, num_warmup=num_warmup, thin=thin, total=total,
               keys_per_step=keys_per_step, key_mode=key_mode)
    if key_every != 1:
        cfg["key_every"] = key_every
    if first_step:
        cfg["first_step"] = first_step
    cfg = json.loads(json.dumps(cfg, default=str))
    traces: dict = {}
    kept = 0
    start = first_step
    if resume is not None:
        ck = load_checkpoint(resume)
        meta = ck["meta"]
        if meta["config"] != cfg:
            diff = sorted(k for k in set(meta["config"]) | set(cfg) if meta["config"].get(k) != cfg.get(k))
            raise ValueError(f"the checkpoint {os.fspath(resume)!r} belongs to another run (differs in: "
                             f"{', '.join(diff)})")
        like = _first_array(state)
        state = _unflatten(meta["spec"], state, ck["leaves"], like)
        key = None if meta["key"] is None else np.array(meta["key"], dtype=np.uint64)
        kept, start = int(meta["num_kept"]), int(meta["num_done"])
        for name, host in ck["traces"].items():
            shape = (S,) if host.ndim == 1 else (host.shape[0], S) + tuple(host.shape[2:])
            full = np.zeros(shape, dtype=host.dtype)
            if host.ndim == 1:
                full[:kept] = host
            else:
                full[:, :kept, ...] = host
            traces[name] = _place(full, like)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total - first_step, initial=start - first_step, desc=desc, unit=unit, leave=False)
    interrupted = stopped = False
    t = start
    info = None
    recycle.enter()         # large per-step arrays come from recycled buffers inside the loop
    try:
        while t < total:
            # the step is committed (state, key and counters together) only once it is complete,
            # so that an interrupt anywhere leaves them consistent (and a checkpoint resumable)
            if key_every == 1 or t % key_every == 0:
                new_key, sub = _next_keys(key, keys_per_step, key_mode)
            else:
                new_key, sub = key, None
            new_state, info = step_fn(sub, state, t)
            if on_step is not None:
                on_step(t, new_state, info, traces, kept)
            if check is not None and ((check_every is not None and (t + 1) % check_every == 0) or t == total - 1):
                bad = check(new_state, info)
                if bad:
                    raise NonFiniteStateError(
                        f"the {check_what} became non-finite at {unit} {t + 1} (of {total}) in: "
                        + "; ".join(bad) + (". " + check_hint if check_hint else ""))
            new_kept = kept
            if t >= num_warmup and (t - num_warmup) % thin == thin - 1:
                if collect is not None:
                    for name, value in collect(new_state, info, t).items():
                        tr = traces.get(name)
                        if tr is None:
                            tr = traces[name] = _alloc(value if _is_array(value) else np.asarray(value), S)
                        if tr.ndim == 1:
                            tr[kept] = value
                        else:
                            tr[:, kept, ...] = value
                new_kept = kept + 1
            state, key, kept, t = new_state, new_key, new_kept, t + 1
            if bar is not None:
                bar.update(1)
                if postfix is not None and (t % postfix_every == 0 or t == total):
                    bar.set_postfix(**postfix(state, info))
            if stop is not None and stop(t - 1, state, info, traces):
                stopped = True
                break
            if checkpoint is not None and t % checkpoint_every == 0 and t < total:
                _save_checkpoint(checkpoint, state=state, key=key, traces=traces, num_kept=kept,
                                 num_done=t, config=cfg)
    except KeyboardInterrupt:
        if kept == 0 and collect is not None:
            raise
        interrupted = True
        warnings.warn(f"{desc}: interrupted at {unit} {t + 1} of {total}; returning the {kept} kept "
                      f"{'sample' if kept == 1 else 'samples'} so far", RunInterrupted, stacklevel=2)
    finally:
        if bar is not None:
            bar.close()
        recycle.exit()      # leaving the outermost scope returns the spare buffers to the allocator
    if checkpoint is not None:
        _save_checkpoint(checkpoint, state=state, key=key, traces=traces, num_kept=kept, num_done=t, config=cfg)
    traces = {k: _trim(v, kept) for k, v in traces.items()}
    return RunOutput(state=state, key=key, traces=traces, num_kept=kept, num_done=t,
                     interrupted=interrupted, stopped=stopped)
