"""The rooms of ``docs/architecture.md`` as import rules: every module's imports in
``ports/``, ``conformance/`` and ``devtools/``, read with :mod:`ast` (module-level and inside
functions, relative and absolute), form a graph without a cycle, cross between rooms only
as the architecture allows, and keep the converter's rules; the same walker finds each
defect planted in a tiny package.

Edges go between modules.  ``from .x import y`` is an edge to ``.x``; ``from . import x``
to the submodule ``x`` when there is one, else to the package (its ``__init__``); ``import
a.b`` to ``a.b``.  Importing a submodule also runs its package's ``__init__``, but that is
not counted as an edge: a package whose ``__init__`` imports its submodules is no circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

Edges = dict[str, dict[str, str]]  # module -> {imported module: "file:line" of the import}


def modules(package_dir: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under ``package_dir`` (a package is its
    ``__init__.py``), named from the folder that holds ``package_dir``."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _base(name: str, path: Path, node: ast.ImportFrom) -> str | None:
    """The module a ``from ... import`` names before its ``import``: ``node.module`` for an
    absolute import, else resolved against ``name`` (None when it climbs above the top)."""
    if not node.level:
        return node.module
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    if node.level - 1 >= len(package):
        return None
    package = package[:len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imports(name: str, path: Path, known: set[str], shown: str) -> dict[str, str]:
    """The modules of ``known`` that module ``name`` (file ``path``, ``shown`` in reports)
    imports anywhere in its code, each with the ``file:line`` of its first import; itself
    left out."""
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, path, node)
            if base is None:
                continue
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        for target in targets:
            if target in known and target != name:
                out.setdefault(target, f"{shown}:{node.lineno}")
    return out


def graph(*package_dirs: Path) -> Edges:
    """The import graph of every module under the ``package_dirs`` (edges between them
    included)."""
    found = {name: (path, path.relative_to(d.parent).as_posix())
             for d in package_dirs for name, path in modules(d).items()}
    return {name: imports(name, path, set(found), shown) for name, (path, shown) in found.items()}


def groups(edges: Edges) -> list[list[str]]:
    """Each group (sorted) of two or more modules that import each other, directly or
    through the others (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, {})):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def circles(edges: Edges) -> list[list[str]]:
    """One shortest circle ``[a, b, ..., a]`` through the first module (by name) of each
    of the :func:`groups`."""
    return [_shortest_circle(edges, group) for group in groups(edges)]


def _shortest_circle(edges: Edges, group: list[str]) -> list[str]:
    """The shortest path from ``group[0]`` back to itself within ``group`` (breadth first)."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges[v]):
            if w == start:
                return paths[v] + [start]
            if w in members and w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no circle through {start} in {group}")  # pragma: no cover


def describe(edges: Edges, circle: list[str]) -> str:
    """``a -> b (pkg/a.py:3) -> a (pkg/b.py:7)``: a circle with where each import is."""
    return circle[0] + "".join(f" -> {b} ({edges[a][b]})" for a, b in zip(circle, circle[1:]))


ROOMS = (ROOT / "ports", ROOT / "conformance", ROOT / "devtools")


def test_the_code_has_no_import_circles():
    edges = graph(*ROOMS)
    found = groups(edges)
    assert not found, "import circles:\n" + "\n".join(
        f"{describe(edges, _shortest_circle(edges, g))}\n  (all of {', '.join(g)} import "
        f"each other)" for g in found)


def test_the_walker_reads_the_code_as_it_is():
    """The real tree's imports resolve as the rules say: function-level imports count,
    ``from . import x`` is the submodule ``x`` or else the package, absolute imports too."""
    edges = graph(*ROOMS)
    assert len(edges) > 100 and "ports.fuzz.outcome" in edges
    assert "conformance.training" in edges["conformance.golden"]  # inside a function
    assert "conformance.collect" in edges["conformance.matrix"]  # inside a function
    assert "devtools.bench.peak" in edges["devtools.bench"]  # from . import peak
    assert "conformance.toxenv" in edges["devtools.bench"]  # from conformance import toxenv
    assert "conformance.trace" in edges["devtools.trace.cli"]  # absolute, another room
    assert "devtools.bench" in edges["devtools.bench.__main__"]  # from . import main
    assert "ports._data" in edges["ports.fuzz.seeds"]  # from .._data import
    assert "conformance.suite" in edges["conformance.conftest"]  # from conformance import


def room_problems(edges: Edges) -> list[str]:
    """What breaks the rooms of ``docs/architecture.md`` (test modules, which may test
    anything, left out): the package ``ports`` imports neither the suite nor the developer
    tools; the suite imports no developer tool; nothing in the package imports its fuzzer
    (``ports.fuzz``, which drives the package from outside, as a test does); a port imports
    no other port, and of the converter only ``canonical`` and its own codec; the converter
    (``ports.formats``) imports no port, nor the ports' common API or commands."""
    rules = [("ports", ("conformance", "devtools")), ("conformance", ("devtools",)),
             ("ports.formats", ("ports._api", "ports.numpy", "ports.torch", "ports.keras",
                                "ports.flax", "ports.mxnet", "ports.chainer", "ports.cli"))]
    frameworks = ("numpy", "torch", "keras", "flax", "mxnet", "chainer")
    for fw in frameworks:  # a port: no other port, and of the converter only its own codec
        rules.append((f"ports.{fw}", tuple(f"ports.{other}" for other in frameworks
                                           if other != fw) + ("ports.cli",)))
    found = []
    for module, targets in sorted(edges.items()):
        if module.rsplit(".", 1)[-1].startswith(("test_", "conftest")):
            continue
        for room, never in rules:
            if module != room and not module.startswith(room + "."):
                continue
            for target, where in targets.items():
                if any(target == n or target.startswith(n + ".") for n in never):
                    found.append(f"{module} imports {target} ({where})")
        if module.startswith("ports.") and not module.startswith("ports.fuzz"):
            found += [f"{module} imports {target} ({where})" for target, where in targets.items()
                      if target == "ports.fuzz" or target.startswith("ports.fuzz.")]
        fw = module.split(".")[1] if module.startswith("ports.") else ""
        if fw in frameworks:
            found += [f"{module} imports {target} ({where})" for target, where in targets.items()
                      if target.startswith("ports.formats.")
                      and target not in ("ports.formats.canonical", f"ports.formats.{fw}")]
    return found


def test_each_room_imports_only_what_the_architecture_allows():
    assert room_problems(graph(*ROOMS)) == []


def test_a_room_importing_across_the_rules_is_found(tmp_path):
    """The smallest defects, planted: the package reaching into the suite inside a function,
    the suite into a developer tool, a codec into a port, a port into another port and into
    a codec not its own."""
    for name, text in {"ports/__init__.py": "", "ports/formats/__init__.py": "",
                       "ports/formats/x.py": "from ..torch import y\nfrom ..fuzz import q\n",
                       "ports/fuzz/__init__.py": "from ..torch import y\n",
                       "ports/torch/__init__.py": "", "ports/torch/y.py": "",
                       "ports/torch/z.py": "from ..formats import x, torch\nimport ports.keras\n",
                       "ports/formats/torch.py": "", "ports/keras/__init__.py": "",
                       "ports/a.py": "def f():\n    import conformance.b\n",
                       "conformance/__init__.py": "", "conformance/b.py": "import devtools\n",
                       "conformance/test_b.py": "import devtools\n",
                       "devtools/__init__.py": "import conformance.b\n"}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    edges = graph(*(tmp_path / d for d in ("ports", "conformance", "devtools")))
    assert sorted(room_problems(edges)) == [
        "conformance.b imports devtools (conformance/b.py:1)",
        "ports.a imports conformance.b (ports/a.py:2)",
        "ports.formats.x imports ports.fuzz (ports/formats/x.py:2)",
        "ports.formats.x imports ports.torch.y (ports/formats/x.py:1)",
        "ports.torch.z imports ports.formats.x (ports/torch/z.py:1)",
        "ports.torch.z imports ports.keras (ports/torch/z.py:2)"]


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root / "pkg"


def test_a_planted_circle_is_found(tmp_path):
    """a -> b at module level, b -> a inside a function: one circle, named with where each
    import is; the package ``__init__`` importing both, and a subpackage importing itself,
    add none."""
    pkg = _package(tmp_path, {
        "pkg/__init__.py": "from . import a, b\n",
        "pkg/a.py": "from . import b\n\nX = 1\n",
        "pkg/b.py": "def f():\n    from .a import X\n    return X\n",
        "pkg/sub/__init__.py": "def helper():\n    return 1\n",
        "pkg/sub/c.py": "from . import helper\nfrom .. import b\nimport pkg.sub\n",
    })
    edges = graph(pkg)
    assert edges["pkg.sub.c"] == {"pkg.sub": "pkg/sub/c.py:1", "pkg.b": "pkg/sub/c.py:2"}
    assert groups(edges) == [["pkg.a", "pkg.b"]]
    found = circles(edges)
    assert found == [["pkg.a", "pkg.b", "pkg.a"]]
    assert describe(edges, found[0]) == "pkg.a -> pkg.b (pkg/a.py:1) -> pkg.a (pkg/b.py:2)"


def test_an_absolute_circle_through_a_subpackage_is_found(tmp_path):
    pkg = _package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "import pkg.sub.c\n",
        "pkg/sub/__init__.py": "from .c import go\n",
        "pkg/sub/c.py": "def go():\n    from pkg import a\n    return a\n",
    })
    assert circles(graph(pkg)) == [["pkg.a", "pkg.sub.c", "pkg.a"]]


def codecs(registry_file: Path, registry: str) -> set[str]:
    """The codec modules a registry loads: the first argument of every ``Format("module",
    ...)`` in its ``__init__.py``."""
    return {f"{registry}.{node.args[0].value}"
            for node in ast.walk(ast.parse(registry_file.read_text()))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Format"
            and node.args and isinstance(node.args[0], ast.Constant)}


def converter_problems(package_dir: Path) -> list[str]:
    """What breaks issue 28's converter rules under ``package_dir`` (a ``ports``-shaped
    package): an import circle; a codec, or a module a codec imports, importing its registry
    ``<pkg>.formats`` back (the registry loads codecs by name, so that is a circle the graph
    does not show); a function taking a ``fail`` callback.  Modules that only use the
    registry (the manifest) may import it."""
    edges = graph(package_dir)
    found = [describe(edges, c) for c in circles(edges)]
    registry = f"{package_dir.name}.formats"
    loaded = codecs(package_dir / "formats" / "__init__.py", registry) & set(edges)
    todo = list(loaded)
    while todo:
        for target in edges[todo.pop()]:
            if target.startswith(registry + ".") and target not in loaded:
                loaded.add(target)
                todo.append(target)
    found += [f"{m} imports its registry ({edges[m][registry]})" for m in sorted(loaded)
              if registry in edges[m]]
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.Lambda)):
                if "fail" in [a.arg for a in node.args.args + node.args.kwonlyargs]:
                    found.append(f"{path.relative_to(package_dir.parent)}:{node.lineno} "
                                 "takes a fail callback")
    return found


def test_the_package_has_no_import_circles_and_no_codec_imports_its_registry():
    """Issue 28: ``ports`` (networks, converter) has no import circles either, and no codec
    imports the registry that imports it (``ports.formats``: what codecs share is
    ``ports.formats._library``), nor takes a ``fail`` callback: a codec raises
    ``WeightsError(reason)`` and ``ports.formats.read``/``write`` name the file."""
    assert len([m for m in graph(ROOT / "ports") if m.startswith("ports.formats.")]) >= 14
    assert converter_problems(ROOT / "ports") == []


def test_a_codec_importing_its_registry_or_taking_fail_is_found(tmp_path):
    """The smallest defects the converter rules must catch, planted in a tiny package: a
    codec's ``from . import FORMATS``, a helper a codec imports doing the same, and a
    ``fail=`` parameter; a module that only uses the registry is no defect."""
    formats = tmp_path / "pkg" / "formats"
    formats.mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (formats / "__init__.py").write_text(
        "def Format(module):\n    return module\n\n\n"
        "FORMATS = {'good': Format('good'), 'bad': Format('bad'), 'uses': Format('uses')}\n")
    for name in ("good", "bad", "uses"):
        (formats / f"{name}.py").write_text("def read(path):\n    return path\n")
    (formats / "helper.py").write_text("X = 1\n")
    (formats / "manifest.py").write_text("from . import FORMATS\n")
    assert converter_problems(tmp_path / "pkg") == []
    (formats / "bad.py").write_text("from . import FORMATS\n\n\n"
                                    "def read(path, fail=None):\n    return path\n")
    (formats / "uses.py").write_text("from .helper import X\n")
    (formats / "helper.py").write_text("from . import FORMATS\n")
    found = converter_problems(tmp_path / "pkg")
    assert any("pkg.formats.bad imports its registry (pkg/formats/bad.py:1)" in f
               for f in found), found
    assert any("pkg.formats.helper imports its registry (pkg/formats/helper.py:1)" in f
               for f in found), found
    assert not any("manifest" in f for f in found), found
    assert any("pkg/formats/bad.py:4 takes a fail callback" in f for f in found), found
