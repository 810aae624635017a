"""Estimate the two-rows example at 1,000,000,000 rows x 256 features with --fake.

Runs `gradmem profile scenarios/linear_mse.py --fake -p n=1000000000 -p d=256` in a fresh
process and prints the peak it reports (about 1 TB), the wall time, and the process's own
peak resident memory (from the kernel, via wait4). Targets: under 30 s, under 1 GB.

    python benchmarks/fake_estimate.py [-p n=... -p d=...]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["-p", "n=1000000000", "-p", "d=256"]


def run(params: list[str]) -> tuple[dict, float, int]:
    """(summary, wall seconds, peak RSS bytes) of one fake profile in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report"
        cmd = [sys.executable, "-m", "gradmem", "profile", str(ROOT / "scenarios" / "linear_mse.py"),
               "--fake", *params, "-o", str(out), "-q"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"gradmem failed: {' '.join(cmd)}")
        summary = json.loads((out / "summary.json").read_text())
    return summary, wall, usage.ru_maxrss * 1024     # ru_maxrss is in KiB on Linux


def main() -> None:
    params = sys.argv[1:] or DEFAULT
    summary, wall, rss = run(params)
    x = next(t for t in summary["largest"] if t["name"] == "x")
    print(f"scenario: linear_mse {' '.join(params)} --fake (estimate: {summary['estimate']})")
    print(f"estimated peak: {summary['peak_bytes']:,} B = {summary['peak_bytes'] / 1e12:.3f} TB "
          f"at step {summary['peak_step']}, {summary['peak_op']} ({summary['peak_phase']})")
    print(f"x: {x['shape']} {x['nbytes']:,} B")
    print(f"wall time: {wall:.1f} s (target < 30 s)")
    print(f"peak resident memory of the gradmem process: {rss / 1e6:.0f} MB (target < 1000 MB)")


if __name__ == "__main__":
    main()
