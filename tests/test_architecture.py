"""The import rules of the architecture (DESIGN.md, issue 11), checked by walking the source.

Three rules, all read from the code with :mod:`ast` (nothing is imported or run):

(a) **No cross-family private import.** A module may import a private name (``_x``) or from a
    private module (``pkg._x``) only inside its own family. Families are the packages
    ``gibbs``, ``vi``, ``laplace``, ``distributed``, ``evaluate``, ``datasets``, ``kernels``;
    every other top-level module (``blocks``, ``inputs``, ``model``, ``nn``, ``metrics``,
    ``diagnostics``, ``posterior``, ...) is a family of its own, so ``metrics`` may not reach
    into ``diagnostics._x`` either. ``blockbayes._backend`` is the one private-named package that
    everyone may import, through its public names (``_backend.linalg.cholesky`` is fine,
    ``_backend.linalg._helper`` is not). Caught forms: ``from pkg.fam import _x``,
    ``from pkg.fam._mod import x``, ``import pkg.fam._mod`` and attribute access
    ``alias._x`` on a name bound by such an import (``from blockbayes import gibbs;
    gibbs._first_nonfinite``). Private attributes of *instances* (``result._prepare_X``) are
    rule (c). NamedTuple's public API (``_replace``, ``_fields``,
    ``_asdict``, ``_make``) is not private.

(b) **No import cycle between modules.** Every import counts, module-level AND function-level
    (lazy) ones: a lazy import that closes a loop is still a loop in the layering (issue 11's
    own example, gibbs -> posterior -> vi.result -> posterior, is closed by lazy imports), and
    a lazy import is only a way to postpone, not remove, the dependency. Imports under
    ``if TYPE_CHECKING:`` do not count (they never run). ``from pkg import sub`` where ``sub``
    is a submodule is an edge to the submodule; importing ``pkg.a.b`` from outside ``pkg.a``
    also runs ``pkg/a/__init__.py``, so it adds an edge to ``pkg.a`` as well.

(c) **No use of another family's private attributes on objects** (``result._prepare_X(...)`` in
    ``vi`` on a Gibbs result). Without type inference the check works on names: every private
    attribute a family *defines* (a ``def _x`` or ``_x = ...`` in a class body, an assignment to
    ``self._x``/``cls._x``) belongs to that family (top-level modules such as ``posterior`` are
    families of their own, as in (a)); ``obj._x`` with ``obj`` not ``self``/``cls``/``super()`` and
    not an imported module is a violation when ``_x`` is defined by some other family and by none
    of the module's own. A name several families define (``_anchor``) is not caught: the check is
    cheap, not complete.

(d) **No array library imported by algorithm code** (DESIGN.md: "algorithm modules never import
    numpy, cupy, scipy or numba directly"). Only the edge packages in ``ARRAY_EDGES`` may import
    ``numpy``, ``scipy``, ``numba``, ``cupy``, ``cupyx``, ``torch`` or ``jax`` (module-level or
    lazily): ``_backend`` (whose ``host`` module is the door for deliberate host-side maths),
    ``kernels``, ``datasets``, ``evaluate``, ``distributed``, ``diagnostics``, ``cli`` and
    ``testing``. Everything else (``gibbs``, ``vi``, ``laplace``, ``driver``, ``point_fit``, ...)
    goes through ``blockbayes._backend``.

``KNOWN`` lists the violations that other helpers of issue 11 are removing at the same time
(post11: the predictive layer and the result registry in ``posterior.load``). The coordinator
deletes each entry when those branches are merged; the test fails if an entry is no longer
needed, so the allowlist cannot go stale silently.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

import blockbayes

FAMILIES = frozenset({"gibbs", "vi", "laplace", "distributed", "evaluate", "datasets", "kernels"})
PUBLIC_PRIVATE_PACKAGES = frozenset({"_backend"})
NAMEDTUPLE_API = frozenset({"_replace", "_fields", "_asdict", "_make", "_field_defaults"})

# --- allowlist: known violations being removed elsewhere (empty: none left) ---------------------
KNOWN_EDGES = frozenset()
KNOWN_PRIVATE = frozenset()
KNOWN_PRIVATE_ATTRS = frozenset()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _modules(root: Path, pkg: str) -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = [pkg, *path.relative_to(root).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (path, is_pkg)
    return out


def _family(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _private_part(target: str) -> bool:
    """True when the dotted target (below the top package) passes through a private name."""
    return any(_is_private(c) and c not in PUBLIC_PRIVATE_PACKAGES for c in target.split(".")[1:])


def _walk(tree: ast.AST):
    """Yield every node with a flag telling whether it sits inside a function body; skip
    ``if TYPE_CHECKING:`` blocks."""
    stack = [(tree, False)]
    while stack:
        node, in_func = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend((c, in_func) for c in child.orelse)
                continue
            flag = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield child, flag
            stack.append((child, flag))


def scan(root: Path, pkg: str):
    """Import graph and private-import violations of the package at ``root``.

    Returns ``(modules, edges, private)``: ``edges[m]`` is the set of ``(target, lazy, line,
    via)`` of module ``m`` (``via`` is the imported module when ``target`` is a package whose
    ``__init__`` runs on the way to it, else ``target``); ``private`` lists
    ``(module, line, dotted name)`` of every cross-family private import.
    """
    mods = _modules(root, pkg)
    edges: dict[str, set] = {m: set() for m in mods}
    private = []

    def resolve(dotted):
        while dotted not in mods and "." in dotted:
            dotted = dotted.rsplit(".", 1)[0]
        return dotted

    for mod, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        here = mod if is_pkg else mod.rsplit(".", 1)[0]
        fam = _family(mod)
        bound: dict[str, str] = {}        # local name -> dotted blockbayes path it stands for
        attr_nodes = []
        for node, lazy in _walk(tree):
            pairs = []                    # (dotted path imported, local name or None)
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.split(".")[0] == pkg:
                        pairs.append((a.name, a.asname or None))
                        if a.asname is None:
                            bound[pkg] = pkg
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                if src.split(".")[0] != pkg:
                    continue
                pairs = [(f"{src}.{a.name}", a.asname or a.name) for a in node.names]
            elif isinstance(node, ast.Attribute):
                attr_nodes.append(node)
                continue
            else:
                continue
            for dotted, local in pairs:
                if local is not None:
                    bound[local] = dotted
                target = resolve(dotted)
                edges[mod].add((target, lazy, node.lineno, target))
                # importing pkg.a.b from outside pkg.a also runs pkg/a/__init__.py
                parent = target.rsplit(".", 1)[0]
                while parent.count(".") >= 1 and not mod.startswith(parent + "."):
                    if parent in mods and parent != mod:
                        edges[mod].add((parent, lazy, node.lineno, target))
                    parent = parent.rsplit(".", 1)[0]
                if _family(target) != fam and _private_part(dotted):
                    private.append((mod, node.lineno, dotted))
        for node in attr_nodes:           # alias._x on a name bound to another family
            if not (_is_private(node.attr) and node.attr not in NAMEDTUPLE_API):
                continue
            chain, v = [node.attr], node.value
            while isinstance(v, ast.Attribute):
                chain.append(v.attr)
                v = v.value
            if isinstance(v, ast.Name) and v.id in bound:
                dotted = ".".join([bound[v.id], *reversed(chain)])
                if _family(resolve(dotted)) != fam and _private_part(dotted):
                    private.append((mod, node.lineno, dotted))
    for mod in edges:
        edges[mod] = {e for e in edges[mod] if e[0] != mod}
    return mods, edges, sorted(set(private))


def _self_like(v) -> bool:
    return ((isinstance(v, ast.Name) and v.id in ("self", "cls"))
            or (isinstance(v, ast.Call) and isinstance(v.func, ast.Name) and v.func.id == "super"))


def private_attrs(root: Path, pkg: str):
    """``(module, line, name)`` of every ``obj._name`` whose ``_name`` only other families define
    (rule (c) of the module docstring)."""
    mods = _modules(root, pkg)
    trees = {m: ast.parse(path.read_text(), filename=str(path)) for m, (path, _) in mods.items()}
    owners: dict[str, set] = {}
    for mod, tree in trees.items():
        fam = _family(mod)
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        names.append(item.name)
                    elif isinstance(item, ast.Assign):
                        names += [t.id for t in item.targets if isinstance(t, ast.Name)]
                    elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        names.append(item.target.id)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names += [t.attr for t in targets if isinstance(t, ast.Attribute) and _self_like(t.value)]
            for n in names:
                if _is_private(n):
                    owners.setdefault(n, set()).add(fam)
    out = []
    for mod, tree in trees.items():
        fam = _family(mod)
        aliases = set()                   # names bound to imported modules (rule (a) covers those)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                aliases.update((a.asname or a.name).split(".")[0] for a in node.names)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr not in NAMEDTUPLE_API):
                continue
            if _self_like(node.value) or (isinstance(node.value, ast.Name) and node.value.id in aliases):
                continue
            fams = owners.get(node.attr, set())
            if fams and fam not in fams:
                out.append((mod, node.lineno, node.attr))
    return sorted(set(out))


def cycles(edges: dict[str, set], skip=frozenset()) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), ignoring the
    ``(source, target)`` edges in ``skip`` (with the parent-package edges that import makes)."""
    graph = {m: sorted({t for t, _, _, via in es if (m, via) not in skip})
             for m, es in edges.items()}
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _describe(comp, edges):
    inside = set(comp)
    return "; ".join(f"{m} -> {t} (line {ln}{', lazy' if lazy else ''})"
                     for m in comp for t, lazy, ln, _ in sorted(edges[m]) if t in inside)


ARRAY_LIBRARIES = frozenset({"numpy", "scipy", "numba", "cupy", "cupyx", "torch", "jax", "jaxlib"})
ARRAY_EDGES = frozenset({"_backend", "kernels", "datasets", "evaluate", "distributed", "diagnostics",
                         "cli", "testing"})


def array_imports(root: Path, pkg: str):
    """``(module, line, library)`` of every import of an array library outside ``ARRAY_EDGES``
    (rule (d) of the module docstring); lazy imports count, ``TYPE_CHECKING`` ones do not."""
    out = []
    for mod, (path, _) in _modules(root, pkg).items():
        if _family(mod) in ARRAY_EDGES:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, _lazy in _walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            out += [(mod, node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in ARRAY_LIBRARIES]
    return sorted(out)


ROOT = Path(blockbayes.__file__).parent


@pytest.fixture(scope="module")
def graph():
    return scan(ROOT, "blockbayes")


def test_no_cross_family_private_import(graph):
    _, _, private = graph
    bad = [p for p in private if (p[0], p[2]) not in KNOWN_PRIVATE]
    assert not bad, "cross-family private imports:\n" + "\n".join(
        f"  {m}:{ln} imports {d}" for m, ln, d in bad)


def test_no_private_attribute_of_another_family():
    bad = [p for p in private_attrs(ROOT, "blockbayes") if (p[0], p[2]) not in KNOWN_PRIVATE_ATTRS]
    assert not bad, "private attributes of another family used on objects:\n" + "\n".join(
        f"  {m}:{ln} uses .{a}" for m, ln, a in bad)


def test_no_array_library_in_algorithm_code():
    bad = array_imports(ROOT, "blockbayes")
    assert not bad, "array libraries imported outside _backend and the edge packages:\n" + "\n".join(
        f"  {m}:{ln} imports {lib}" for m, ln, lib in bad)


def test_no_import_cycle(graph):
    _, edges, _ = graph
    found = cycles(edges, skip=KNOWN_EDGES)
    assert not found, "import cycles:\n" + "\n".join("  " + _describe(c, edges) for c in found)


def test_allowlist_is_still_needed(graph):
    """Each KNOWN entry must still name a real edge/import; delete it once it is gone."""
    _, edges, private = graph
    real_edges = {(m, t) for m, es in edges.items() for t, _, _, _ in es}
    assert KNOWN_EDGES <= real_edges, f"stale KNOWN_EDGES: {sorted(KNOWN_EDGES - real_edges)}"
    real_private = {(m, d) for m, _, d in private}
    assert KNOWN_PRIVATE <= real_private, \
        f"stale KNOWN_PRIVATE: {sorted(KNOWN_PRIVATE - real_private)}"
    real_attrs = {(m, a) for m, _, a in private_attrs(ROOT, "blockbayes")}
    assert KNOWN_PRIVATE_ATTRS <= real_attrs, \
        f"stale KNOWN_PRIVATE_ATTRS: {sorted(KNOWN_PRIVATE_ATTRS - real_attrs)}"


# --- the checker catches planted violations (a synthetic package in tmp_path) -------------------

def _plant(tmp_path, files):
    root = tmp_path / "fakepkg"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return root


CLEAN = {
    "__init__.py": "from . import gibbs, vi\n",
    "_backend/__init__.py": "def namespace(x):\n    return x\n",
    "_backend/linalg.py": "def cholesky(a):\n    return a\ndef _helper():\n    pass\n",
    "model.py": "from ._backend import namespace\nfrom ._backend.linalg import cholesky\n",
    "gibbs/__init__.py": "from .kernel import step\n",
    "gibbs/kernel.py": "from ..model import namespace\nfrom ._util import _helper\ndef step():\n    pass\n",
    "gibbs/_util.py": "def _helper():\n    pass\n",
    "vi/__init__.py": "from .cavi import run\n",
    "vi/cavi.py": ("from fakepkg.gibbs import step\nfrom typing import NamedTuple\n"
                   "def run(s):\n    return s._replace(a=1)\n"),
}


def test_checker_passes_a_clean_package(tmp_path):
    mods, edges, private = scan(_plant(tmp_path, CLEAN), "fakepkg")
    assert "fakepkg.gibbs._util" in mods
    assert private == []
    assert cycles(edges) == []


@pytest.mark.parametrize("name, text, expect", [
    ("from-private-name", "from ..gibbs.kernel import _x\n", "fakepkg.gibbs.kernel._x"),
    ("from-private-module", "from fakepkg.gibbs._util import _helper\n", "fakepkg.gibbs._util"),
    ("import-private-module", "import fakepkg.gibbs._util\n", "fakepkg.gibbs._util"),
    ("private-of-backend", "from .._backend.linalg import _helper\n", "fakepkg._backend.linalg._helper"),
    ("lazy", "def f():\n    from ..gibbs._util import _helper\n", "fakepkg.gibbs._util"),
    ("attribute", "from .. import gibbs\ndef f():\n    return gibbs._util._helper()\n",
     "fakepkg.gibbs._util"),
])
def test_checker_catches_a_planted_private_import(tmp_path, name, text, expect):
    files = dict(CLEAN)
    files["vi/planted.py"] = text
    _, _, private = scan(_plant(tmp_path, files), "fakepkg")
    assert any(m == "fakepkg.vi.planted" and d.startswith(expect) for m, _, d in private), private


def test_checker_catches_private_import_between_shared_modules(tmp_path):
    files = dict(CLEAN)
    files["diagnostics.py"] = "def _ranks():\n    pass\n"
    files["metrics.py"] = "from .diagnostics import _ranks\n"
    _, _, private = scan(_plant(tmp_path, files), "fakepkg")
    assert ("fakepkg.metrics", 1, "fakepkg.diagnostics._ranks") in private


@pytest.mark.parametrize("lazy", [False, True])
def test_checker_catches_a_planted_cycle(tmp_path, lazy):
    files = dict(CLEAN)
    files["posterior.py"] = "def load():\n    from .vi import cavi\n" if lazy else "from .vi import cavi\n"
    files["vi/cavi.py"] = CLEAN["vi/cavi.py"] + "from ..posterior import load\n"
    _, edges, _ = scan(_plant(tmp_path, files), "fakepkg")
    found = cycles(edges)
    assert any({"fakepkg.posterior", "fakepkg.vi.cavi"} <= set(c) for c in found), found
    # the allowlist removes exactly the named edge
    assert cycles(edges, skip={("fakepkg.posterior", "fakepkg.vi.cavi")}) == []


def test_checker_ignores_type_checking_imports(tmp_path):
    files = dict(CLEAN)
    files["posterior.py"] = ("from typing import TYPE_CHECKING\n"
                             "if TYPE_CHECKING:\n    from .vi.cavi import run\n")
    files["vi/cavi.py"] = CLEAN["vi/cavi.py"] + "from ..posterior import TYPE_CHECKING\n"
    _, edges, _ = scan(_plant(tmp_path, files), "fakepkg")
    assert cycles(edges) == []


def test_checker_counts_the_parent_package_init(tmp_path):
    """Importing gibbs.kernel from outside runs gibbs/__init__, which may close a cycle."""
    files = dict(CLEAN)
    files["gibbs/__init__.py"] = "from .kernel import step\nfrom ..posterior import P\n"
    files["posterior.py"] = "P = 1\ndef f():\n    from .gibbs.kernel import step\n"
    _, edges, _ = scan(_plant(tmp_path, files), "fakepkg")
    assert any("fakepkg.gibbs" in c and "fakepkg.posterior" in c for c in cycles(edges))


def test_checker_catches_another_familys_private_attribute(tmp_path):
    """vi calling a Gibbs result's private method is caught; its own privates, ``self._x`` and
    foreign-library privates (defined by no family) are not."""
    files = dict(CLEAN)
    files["gibbs/result.py"] = ("class GibbsResult:\n    def _prepare(self, X):\n        return X\n"
                                "    def predict(self, X):\n        self._cache = 1\n        return self._prepare(X)\n")
    files["vi/result.py"] = ("class VIResult:\n    def _own(self):\n        return 1\n"
                             "def f(g, other, arr):\n    other._own()\n    arr._array\n    return g._prepare(1)\n"
                             "def h(g):\n    return g._cache\n")
    found = private_attrs(_plant(tmp_path, files), "fakepkg")
    assert found == [("fakepkg.vi.result", 7, "_prepare"), ("fakepkg.vi.result", 9, "_cache")], found


@pytest.mark.parametrize("text", ["import numpy as np\n", "def f():\n    from scipy.optimize import minimize\n",
                                  "import numba.cuda\n"])
def test_checker_catches_a_planted_array_import(tmp_path, text):
    root = _plant(tmp_path, {**CLEAN, "gibbs/conditionals.py": text})
    assert [(m, lib) for m, _, lib in array_imports(root, "fakepkg")] == \
        [("fakepkg.gibbs.conditionals", text.split("import ")[-1].split()[0].split(".")[0]
          if text.startswith("import") else "scipy")]


def test_checker_allows_array_imports_at_the_edges_and_through_the_host_door(tmp_path):
    root = _plant(tmp_path, {**CLEAN, "_backend/host.py": "import numpy as np\n",
                             "kernels/cpu.py": "import numba\n",
                             "gibbs/kernel.py": "from .._backend.host import np\n",
                             "vi/cavi.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                            "    import numpy\n")})
    assert array_imports(root, "fakepkg") == []
