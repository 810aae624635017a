"""Analysis and rendering import no torch: a saved trace re-renders anywhere."""
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
