"""No module of ``unison_stream/`` or ``sdk/unison_sdk/`` imports another in a circle.

The graph is built with ``ast`` from every import statement of a module: at module level,
under ``if TYPE_CHECKING`` / ``try``, and inside functions too. A lazy import inside a function
(ray, playwright, torch behind a CLI flag) defers the loading, not the dependency: a circle
through one is still two modules that each need the other, and was how the benchmarks and the
server's command line used to be tied. ``from pkg import name`` is an edge to ``pkg.name`` when
that is a module, else to ``pkg``; a module's parent packages, imported implicitly on the way,
are not edges. Modules named by string (the command lists of ``unison_stream.cli`` and
``unison_stream.benchmarks.cli``, loaded with ``importlib``) are not edges either.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (ROOT / "unison_stream", ROOT / "sdk" / "unison_sdk")


def _module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the packages: dotted name → file."""
    return {
        _module_name(p, pkg): p
        for pkg in PACKAGES
        for p in sorted(pkg.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, wherever it is."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of ``from … import`` (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    """Module → the modules of the packages it imports."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
                continue
            src = _resolve(node, name, path.name == "__init__.py")
            for a in node.names:
                sub = f"{src}.{a.name}"
                deps.add(sub if sub in mods else src)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, …, a]``, or None (depth-first, three colours)."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(m: str) -> list[str] | None:
        path.append(m)
        on_path.add(m)
        for d in sorted(graph[m]):
            if d in on_path:
                return [*path[path.index(d) :], d]
            if d not in done and (cycle := visit(d)) is not None:
                return cycle
        path.pop()
        on_path.discard(m)
        done.add(m)
        return None

    for m in sorted(graph):
        if m not in done and (cycle := visit(m)) is not None:
            return cycle
    return None


def test_the_graph_is_built_from_the_real_imports() -> None:
    """The builder sees what the files say (a broken builder would find no cycle either)."""
    graph = import_graph()
    assert "unison_stream.server.app" in graph and "unison_sdk.client" in graph
    assert "unison_stream.server.protocol" in graph["unison_stream.server.session"]
    assert "unison_sdk.errors" in graph["unison_sdk"]
    assert "unison_stream.benchmarks.harness" in graph["unison_stream.benchmarks.serve"]
    # imported inside a function (lazily): an edge all the same
    assert "unison_stream.mqtt" in graph["unison_stream.server.cli"]
    # the benchmarks lean on the server, never the other way
    server = {m for m in graph if m.startswith("unison_stream.server.")}
    assert not {d for m in server for d in graph[m] if d.startswith("unison_stream.benchmarks")}


def test_the_cycle_finder_names_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_module_imports_another_in_a_circle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])
