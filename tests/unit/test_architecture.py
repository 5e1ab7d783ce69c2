"""The central's shape, checked: no import cycles, imports only at module level, SQL only in adapters.

The layer order itself (domain <- application <- adapters <- web <- composition root) is the
import-linter contract in setup.cfg, which ``make test`` runs; these tests hold the rest.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import grimp

CENTRAL = Path(__file__).resolve().parents[2] / "central"
SQL = re.compile(r"\b(SELECT\s.+\sFROM|INSERT\s+(OR\s+\w+\s+)?INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b")
DB_CALLS = re.compile(r"\b(db|conn|self\.db)\.(query|execute|executemany|table)\(")


def sources() -> list[Path]:
    return sorted(CENTRAL.rglob("*.py"))


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_central_has_no_import_cycle():
    graph = grimp.build_graph("central")
    modules = set(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) & modules for m in modules}
    assert strongly_connected(edges) == []


def test_strongly_connected_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def function_level_imports(source: str) -> list[int]:
    """Line numbers of imports inside a function or class body (``TYPE_CHECKING`` blocks excepted)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    lines.append(inner.lineno)
    return sorted(lines)


def test_central_imports_only_at_module_level():
    found = {
        str(path.relative_to(CENTRAL.parent)): lines
        for path in sources()
        if (lines := function_level_imports(path.read_text()))
    }
    assert found == {}


def test_function_level_import_detector():
    assert function_level_imports("import os\ndef f():\n    import json\n    return json\n") == [3]


def test_sql_lives_only_in_adapters():
    offenders = []
    for path in sources():
        if "adapters" in path.relative_to(CENTRAL).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if SQL.search(line) or DB_CALLS.search(line):
                offenders.append(f"{path.relative_to(CENTRAL.parent)}:{number}: {line.strip()}")
    assert offenders == []


def test_sql_detector():
    assert SQL.search('"SELECT id FROM piles WHERE pile_no = ?"')
    assert SQL.search("INSERT OR IGNORE INTO ports (id) VALUES (?)")
    assert DB_CALLS.search('db.execute("PRAGMA x")')
    assert not SQL.search("select a pile from the list")
