"""The analysis of this checkout against a git revision's, side by side in one process:
`python benchmarks/analysis_vs.py --rev HEAD~3`.

This machine's speed moves by a fifth from one minute to the next, so two runs of
``analyze()`` minutes apart cannot tell a 5 % change (and cProfile, which makes every
small Python call dearer, overstates what element-by-element pandas costs). Here the
revision's ``gradmem`` package is extracted (``git archive``) under another name, both
analyse the same trace in alternating order, and the figure is the median of each
repetition's ratio of CPU times. The trace: ``--trace`` (a saved ``trace.jsonl``), or a
30-step run of the 100-layer MLP, captured here with the native engine where it is built.
"""
from __future__ import annotations

import argparse
import gc
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
OLD = "gradmem_rev"


def extract(rev: str, into: Path) -> None:
    """The revision's gradmem/ as ``into/gradmem_rev`` (it imports itself relatively)."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "gradmem"], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        try:
            tar.extractall(into, filter="data")
        except TypeError:   # a Python before extraction filters (3.11.4): git's own archive
            tar.extractall(into)
    (into / "gradmem").rename(into / OLD)


def captured_trace(steps: int):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from gradmem.capture import Capture
    from workloads import deep_mlp
    torch.set_num_threads(1)
    step = deep_mlp(100, 64, 32)
    with Capture() as cap:
        for _ in range(steps):
            step()
    return cap.trace


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rev", required=True, help="the git revision to compare with (HEAD~1, a tag, a hash)")
    p.add_argument("--trace", type=Path, help="a saved trace.jsonl (default: capture 30 MLP steps here)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--reps", type=int, default=9)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        extract(args.rev, Path(tmp))
        sys.path.insert(0, tmp)
        import gradmem.analysis as here
        import gradmem_rev.analysis as there
        from gradmem.trace import read_trace, write_trace
        from gradmem_rev.trace import read_trace as read_there
        path = args.trace
        if path is None:
            path = Path(tmp) / "trace.jsonl"
            write_trace(captured_trace(args.steps), path)
        traces = {"here": (here, read_trace(path)), "rev": (there, read_there(path))}
        print(f"{len(traces['here'][1].events):,} events; {args.reps} repetitions", flush=True)
        seconds = compare(traces, args.reps)
    ratio = statistics.median(h / r for h, r in zip(seconds["here"], seconds["rev"]))
    print(f"analyze() CPU seconds, best of {args.reps}: this checkout {min(seconds['here']):.3f}, "
          f"{args.rev} {min(seconds['rev']):.3f}; median paired ratio {ratio:.3f}")


def compare(traces: dict, reps: int) -> dict[str, list[float]]:
    for module, trace in traces.values():   # warm-up, and the trace's columns built once
        module.analyze(trace)
    gc.collect()
    gc.freeze()   # the traces' objects: out of every collection, for both alike
    seconds = {name: [] for name in traces}
    for r in range(reps):
        for name in (list(traces) if r % 2 else list(traces)[::-1]):
            module, trace = traces[name]
            start = time.process_time()
            module.analyze(trace)
            seconds[name].append(time.process_time() - start)
    return seconds


if __name__ == "__main__":
    main()
