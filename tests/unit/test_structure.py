"""The code's own structure: no first-party module imports itself back through others (no import cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "tokenpulse": ROOT / "tokenpulse",
    "tokenpulse_shared": ROOT / "shared" / "tokenpulse_shared",
    "tokenpulse_ingest": ROOT / "services" / "ingest" / "tokenpulse_ingest",
    "tokenpulse_scoring": ROOT / "services" / "scoring" / "tokenpulse_scoring",
    "tokenpulse_alerts": ROOT / "services" / "alerts" / "tokenpulse_alerts",
    "tokenpulse_gateway": ROOT / "services" / "gateway" / "tokenpulse_gateway",
}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the first-party modules it imports, at the top or inside a function alike."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            graph[name] |= {t for t in targets if t in known and t != name}
    return graph


def cycle_through(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as the path that closes it, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_no_first_party_import_cycle() -> None:
    cycle = cycle_through(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycle_through({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert cycle_through({"a": {"b"}, "b": set()}) is None


MAX_FUNCTION_LINES = 80
PRODUCTION = [ROOT / "services", ROOT / "shared", ROOT / "tokenpulse", ROOT / "clients"]


def function_lengths(source: str) -> dict[str, int]:
    """Qualified name -> line count (decorators to last line) of every function and method in ``source``."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                    lengths[name] = (child.end_lineno or child.lineno) - first + 1
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return lengths


def production_function_lengths() -> dict[str, int]:
    found = {}
    for folder in PRODUCTION:
        for path in folder.rglob("*.py"):
            if ".venv" in path.parts or "node_modules" in path.parts:
                continue
            where = path.relative_to(ROOT)
            found |= {f"{where}:{name}": n for name, n in function_lengths(path.read_text()).items()}
    return found


def test_no_production_function_over_80_lines() -> None:
    lengths = production_function_lengths()
    assert len(lengths) > 500  # the walk reached the packages
    too_long = {name: n for name, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert not too_long, too_long


def test_function_lengths_counts_nested_functions_and_decorators() -> None:
    source = "class A:\n    @staticmethod\n    def f():\n        x = 1\n        def g():\n            pass\n"
    assert function_lengths(source) == {"A.f": 5, "A.f.g": 2}


def imported_roots(folder: Path) -> dict[str, set[str]]:
    """File -> the top-level names it imports (absolute imports, at the top or inside a function)."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_bench_and_testkit_never_import_tests() -> None:
    """tests -> bench -> testkit, one way: the helpers both use live in testkit/, and nothing edits sys.path."""
    wrong = {f: n & {"tests"} for f, n in imported_roots(ROOT / "bench").items() if "tests" in n}
    wrong |= {f: n & {"tests", "bench"} for f, n in imported_roots(ROOT / "testkit").items() if n & {"tests", "bench"}}
    assert not wrong, wrong
    assert not [p for p in (ROOT / "bench").rglob("*.py") if "sys.path.insert" in p.read_text()]
