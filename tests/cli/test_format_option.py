"""--format on profile and render, and gradmem export: which files each writes."""
import pytest

from conftest import SCENARIOS, run_cli

SCENARIO = SCENARIOS / "seed_one_weight.py"


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fmt") / "r"
    run_cli("profile", SCENARIO, "-o", folder, "--format", "chrome, memory_viz", "-q", check=True)
    return folder


def names(folder) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_profile_writes_the_chosen_formats_and_the_trace(profiled):
    assert names(profiled) == {"trace.chrome.json", "memory_viz.pickle", "memory_viz.json", "trace.jsonl", ".gradmem-report"}


def test_unknown_format_is_bad_input(tmp_path):
    proc = run_cli("profile", SCENARIO, "-o", tmp_path / "r", "--format", "csv,pdf", "-q")
    assert proc.returncode == 2
    assert "'pdf'" in proc.stderr and "chrome" in proc.stderr and "memory_viz" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_render_with_formats_keeps_the_trace(profiled, tmp_path):
    out = tmp_path / "again"
    run_cli("render", profiled / "trace.jsonl", "-o", out, "--format", "csv", "-q", check=True)
    assert names(out) == {"tensors.csv", "steps.csv", "nodes.csv", "modules.csv", "events.csv", "trace.jsonl", ".gradmem-report"}


def test_export_adds_files_beside_the_trace(profiled, tmp_path):
    folder = tmp_path / "r"
    run_cli("render", profiled / "trace.jsonl", "-o", folder, "--format", "csv", "-q", check=True)
    before = {n: (folder / n).read_bytes() for n in names(folder)}
    proc = run_cli("export", folder / "trace.jsonl", check=True)
    assert proc.stdout.strip() == str(folder / "trace.chrome.json")
    assert names(folder) == set(before) | {"trace.chrome.json"}
    # the reports stay as they were; the marker now also lists the export as gradmem's
    assert all((folder / n).read_bytes() == data for n, data in before.items() if n != ".gradmem-report")
    assert "export trace.chrome.json" in (folder / ".gradmem-report").read_text()


def test_exports_render_without_torch(profiled, tmp_path):
    """The new writers are render code: a saved trace exports where torch is missing."""
    import subprocess
    import sys

    from conftest import ROOT
    code = ("import sys; sys.modules['torch'] = None\n"
            "from gradmem.cli import main\n"
            f"main(['export', r'{profiled / 'trace.jsonl'}', '--format', 'chrome,memory_viz', '-o', r'{tmp_path}'])\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in ("trace.chrome.json", "memory_viz.json", "memory_viz.pickle"):
        assert (tmp_path / name).read_bytes() == (profiled / name).read_bytes()
