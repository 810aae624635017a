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
    event tables (``analysis.frames``): every fact it shows was computed in analysis."""
    for path in sorted((ROOT / "gradmem" / "render").glob("*.py")):
        for module, level in _imports(path):
            assert not (level == 2 and module in ("", "analysis") or module.startswith("analysis")
                        or module.startswith("gradmem.analysis") or module == "gradmem"), (path.name, module)
        reads = {n.attr for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Attribute)}
        assert not reads & {"frames", "node_names"}, (path.name, reads & {"frames", "node_names"})
