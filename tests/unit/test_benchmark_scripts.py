"""The benchmark scripts that hold logic of their own run (their figures are not checked:
speed targets live in benchmarks/, never in timed tests)."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_analysis_vs_a_revision_runs_both_packages(seed_reports):
    """benchmarks/analysis_vs.py extracts a revision's gradmem under another name and
    analyses the same trace with both; on HEAD the two are the same code."""
    trace = seed_reports["seed_two_rows"] / "trace.jsonl"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "analysis_vs.py"), "--rev", "HEAD",
                          "--trace", str(trace), "--reps", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "this checkout" in out.stdout and "median paired ratio" in out.stdout
