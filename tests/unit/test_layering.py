"""Analysis and rendering import no torch: a saved trace re-renders anywhere."""
import ast
import subprocess
import sys

from conftest import ROOT, SCENARIOS, run_cli


def test_render_without_torch(tmp_path):
    run_cli("profile", SCENARIOS / "seed_two_rows.py", "-o", tmp_path / "r", "-q", check=True)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from gradmem.cli import main\n"
        f"main(['render', r'{tmp_path / 'r' / 'trace.jsonl'}', '-o', r'{tmp_path / 'again'}', '-q'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "again" / "tensors.csv").read_text() == (tmp_path / "r" / "tensors.csv").read_text()


# -- the import graph, read from the source (imports inside functions included) -------------
from layering_graph import cycles, graph  # noqa: E402

# every gradmem module imports the package root first (Python imports a parent before its
# child), and the root is the public facade that re-exports the stages on first use: its
# edges are not part of the one-way flow, so it is left out of the cycle search
ROOT_PACKAGE = "gradmem"


def test_the_graph_is_read():
    edges = graph()
    assert "gradmem.capture.ops" in edges["gradmem.capture"]
    assert "gradmem.analysis" in edges["gradmem.session"]   # an import inside a method counts


def test_capture_imports_nothing_from_analysis_or_render():
    later = ("gradmem.analysis", "gradmem.render", "gradmem.session", "gradmem.pipeline")
    bad = {m: sorted(e for e in edges if e.startswith(later))
           for m, edges in graph().items() if m.startswith("gradmem.capture")}
    assert {m: e for m, e in bad.items() if e} == {}


def test_analysis_imports_nothing_from_render_or_capture():
    bad = {m: sorted(e for e in edges if e.startswith(("gradmem.render", "gradmem.capture")))
           for m, edges in graph().items() if m.startswith("gradmem.analysis")}
    assert {m: e for m, e in bad.items() if e} == {}


def test_no_import_cycle():
    assert cycles(graph(), skip={ROOT_PACKAGE}) == []


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}, skip=set()) == [["a", "b", "c", "a"]]


def _attributes(cls) -> set[str]:
    import ast
    return {t.attr for node in ast.walk(cls) if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}


def test_capture_stays_small():
    """The capture package's entry is a short file and no class holds more than a dozen
    attributes (the split that keeps each piece's job plain)."""
    import ast
    from layering_graph import PACKAGE
    assert len((PACKAGE / "capture" / "__init__.py").read_text().splitlines()) < 150
    big = {}
    for path in PACKAGE.rglob("*.py"):
        for cls in ast.walk(ast.parse(path.read_text())):
            if isinstance(cls, ast.ClassDef) and len(_attributes(cls)) > 12:
                big[f"{path.name}:{cls.name}"] = sorted(_attributes(cls))
    assert big == {}


def _imports(path):
    """(module, level) of every import in a file, inside functions too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level
        elif isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)


def test_render_only_formats_what_analysis_computed():
    """Render imports neither analysis nor the package root, and never reads the per-kind
    event tables (``analysis.tables``): every fact it shows was computed in analysis."""
    for path in sorted((ROOT / "gradmem" / "render").glob("*.py")):
        for module, level in _imports(path):
            assert not (level == 2 and module in ("", "analysis") or module.startswith("analysis")
                        or module.startswith("gradmem.analysis") or module == "gradmem"), (path.name, module)
        reads = {n.attr for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Attribute)}
        assert not reads & {"tables", "node_names"}, (path.name, reads & {"tables", "node_names"})
