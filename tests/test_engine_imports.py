"""No file of ``unison_stream/engine/`` imports another in a circle, counting every
import statement, those under ``TYPE_CHECKING`` and inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "unison_stream" / "engine"
PREFIX = "unison_stream.engine."


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out |= {n[len(PREFIX) :].split(".")[0] for n in names if n.startswith(PREFIX)}
    return out


def test_engine_modules_import_each_other_without_a_cycle() -> None:
    graph = {p.stem: _imports(p) - {p.stem} for p in ENGINE.glob("*.py") if p.stem != "__init__"}
    graph = {m: {d for d in deps if d in graph} for m, deps in graph.items()}
    assert "session" in graph and "session" in graph["engine"]  # the builder sees real edges
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import cycle: {' → '.join((*path, m))}"
        if m in done:
            return
        for d in sorted(graph[m]):
            visit(d, (*path, m))
        done.add(m)

    for m in sorted(graph):
        visit(m, ())
