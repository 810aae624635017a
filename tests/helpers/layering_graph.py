"""The import graph of the gradmem package, read from its source with ``ast``: every
import statement, those inside functions included (they are edges all the same)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gradmem"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def _base(name: str, path: Path, level: int) -> str:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return package


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The gradmem modules ``name`` imports (``from a import b`` counts a.b when b is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(name, path, node.level) if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            for a in node.names:   # `from pkg import mod` imports pkg.mod; else a name of pkg
                found.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]], skip: set[str]) -> list[list[str]]:
    """One path per cycle found by depth-first search (empty when the graph is acyclic)."""
    found, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if nxt in skip:
                continue
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state and node not in skip:
            visit(node, [node])
    return found
