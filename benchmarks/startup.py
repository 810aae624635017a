"""gradmem's fixed start-up cost, whole processes side by side: `python benchmarks/startup.py`.

The one-weight seed does almost nothing, so what a run of it costs is start-up: importing
torch (both), then gradmem's capture, the allocator's record, the analysis (pandas) and
writing the reports. Each repetition runs `python scenarios/seed_one_weight.py` and
`python -m gradmem profile scenarios/seed_one_weight.py` once, in alternating order, so a
busy neighbour slows both alike; the figures are medians of ``--reps`` (at least 3).
``--no-verify`` profiles without the allocator's record as a third variant.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "seed_one_weight.py"


def _seconds(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def variants(out: Path) -> dict[str, list[str]]:
    profile = [sys.executable, "-m", "gradmem", "profile", str(SCENARIO), "-q", "--force"]
    return {
        "python": [sys.executable, str(SCENARIO)],
        "gradmem profile": profile + ["-o", str(out / "verify")],
        "gradmem profile --no-verify": profile + ["--no-verify", "-o", str(out / "no-verify")],
    }


def measure(reps: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cmds = variants(Path(tmp))
        names = list(cmds)
        _seconds(cmds["gradmem profile"], env)   # warm the file cache
        for i in range(reps):
            for name in names[i % len(names):] + names[:i % len(names)]:
                times.setdefault(name, []).append(_seconds(cmds[name], env))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    medians = measure(max(args.reps, 3))
    base = medians["python"]
    print(f"start-up, {SCENARIO.name}, whole process, median of {max(args.reps, 3)}:\n")
    print("| run | seconds | minus python | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for name, s in medians.items():
        print(f"| `{name}` | {s:.2f} | {s - base:+.2f} | {s / base:.2f}x |")


if __name__ == "__main__":
    main()
