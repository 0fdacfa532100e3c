"""The import graph of the jaxvx package: its units, their floors and the edges between them.

A unit is a top-level module (``jaxvx/flow.py`` -> ``flow``) or a subpackage (``jaxvx/lrp/*`` -> ``lrp``).
An edge ``a -> b`` is an ``import jaxvx.b...`` or ``from jaxvx.b... import`` (or ``from jaxvx import b``) anywhere
in ``a``'s files, at module level or inside a function; imports within one unit and the lazy facade
``jaxvx/__init__.py`` are left out. A unit's floor is 0 when it imports no other unit, else one more than the
highest floor it imports; units on a circle share the floor of the circle. Also prints the ten largest files'
line counts.

    python scripts/import_graph.py

tests/test_layering.py reads :func:`edges` and asserts the floors it declares.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxvx"


def unit_of(path: pathlib.Path) -> str:
    """``flow`` for ``jaxvx/flow.py``, ``lrp`` for ``jaxvx/lrp/_rules.py``."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def _imported_units(tree: ast.AST) -> set[str]:
    units = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if parts[0] != "jaxvx":
                continue
            if len(parts) > 1:
                units.add(parts[1])
            else:  # from jaxvx import io, pipeline
                units.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "jaxvx" and len(parts) > 1:
                    units.add(parts[1])
    return units


def edges() -> dict[tuple[str, str], list[str]]:
    """``{(importer, imported): [files of importer that import it]}`` over the package's ``.py`` files."""
    out: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue
        src = unit_of(path)
        for dst in _imported_units(ast.parse(path.read_text(), filename=str(path))):
            if dst != src and ((PACKAGE / dst).is_dir() or (PACKAGE / f"{dst}.py").exists()):
                out.setdefault((src, dst), []).append(str(path.relative_to(ROOT)))
    return out


def units() -> list[str]:
    return sorted({unit_of(p) for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py"})


def floors(graph) -> dict[str, int]:
    """Longest-path floors; the units of a circle are merged first (Tarjan's strongly connected components)."""
    names = units()
    succ = {u: sorted({b for (a, b) in graph if a == u}) for u in names}
    index, low, stack, on_stack, comp = {}, {}, [], set(), {}

    def visit(u):
        index[u] = low[u] = len(index)
        stack.append(u)
        on_stack.add(u)
        for v in succ[u]:
            if v not in index:
                visit(v)
                low[u] = min(low[u], low[v])
            elif v in on_stack:
                low[u] = min(low[u], index[v])
        if low[u] == index[u]:
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp[w] = u
                if w == u:
                    break

    for u in names:
        if u not in index:
            visit(u)
    level: dict[str, int] = {}

    def floor(c):
        if c not in level:
            members = [u for u in names if comp[u] == c]
            below = {comp[v] for u in members for v in succ[u]} - {c}
            level[c] = 1 + max((floor(b) for b in below), default=-1)
        return level[c]

    return {u: floor(comp[u]) for u in names}


def largest_files(n: int = 10) -> list[tuple[int, str]]:
    counts = [(len(p.read_text().splitlines()), str(p.relative_to(ROOT))) for p in PACKAGE.rglob("*.py")]
    return sorted(counts, reverse=True)[:n]


def main():
    graph = edges()
    level = floors(graph)
    print("floors (0 imports no other unit):")
    for f in range(max(level.values()) + 1):
        print(f"  {f}: {' '.join(u for u in sorted(level) if level[u] == f)}")
    print("edges (importer -> imported; '!' where the imported unit is not on a lower floor):")
    for (a, b), files in sorted(graph.items(), key=lambda e: (-level[e[0][0]], e[0])):
        mark = "!" if level[b] >= level[a] else " "
        print(f"  {mark} {a} [{level[a]}] -> {b} [{level[b]}]   ({', '.join(sorted(set(files)))})")
    print("largest files (lines):")
    for count, path in largest_files():
        print(f"  {count:5d} {path}")


if __name__ == "__main__":
    main()
