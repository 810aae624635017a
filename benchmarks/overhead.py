"""gradmem's overhead, measured side by side in one process: `python benchmarks/overhead.py`.

Every ratio is the median of ``--reps`` (at least 5) interleaved repetitions after a
warm-up: each repetition runs every variant once, in a rotating order, so a busy
neighbour slows all variants alike. Peaks come from the CPU allocator's own record
(torch.profiler, profile_memory=True). The report-writing figure runs in a fresh process
that reads a saved trace of at least ``--events`` events, so its memory is its own.
Prints a Markdown table; ``--quick`` shrinks the sizes for a smoke run.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "helpers")]   # oracles.py lives there

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from gradmem.analysis import analyze  # noqa: E402
from gradmem.capture import Capture  # noqa: E402
from gradmem.trace import write_trace  # noqa: E402
from oracles import allocator_record  # noqa: E402
from workloads import deep_mlp, two_rows_scaled  # noqa: E402


@contextlib.contextmanager
def trace_built(make):
    """The capture and then its Trace: leaving the block only stops recording, the Trace
    is built when first read, so this is the figure with that work counted."""
    with make() as cap:
        yield cap
    cap.trace


# "gradmem" is the Python engine (named: the default, auto, takes the native one)
VARIANTS = {
    "bare": contextlib.nullcontext,
    "gradmem": lambda: Capture(engine="python"),
    "gradmem --no-verify": lambda: Capture(verify=False, engine="python"),
    "gradmem --no-verify, no module/source attribution": lambda: Capture(verify=False, attribution=False,
                                                                          engine="python"),
    "gradmem --engine native": lambda: Capture(engine="native"),
    "gradmem --engine native, trace built": lambda: trace_built(lambda: Capture(engine="native")),
    "torch.profiler(profile_memory)": lambda: torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True),
}


def _once(step, make, steps: int) -> float:
    gc.collect()
    start = time.perf_counter()
    with make():
        for _ in range(steps):
            step()
    return time.perf_counter() - start


def interleaved(step, names: list[str], reps: int, steps: int = 1) -> dict[str, float]:
    """Median seconds per step of each variant."""
    for name in names:                       # warm-up
        _once(step, VARIANTS[name], steps)
    times = {n: [] for n in names}
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(_once(step, VARIANTS[name], steps) / steps)
    return {n: statistics.median(ts) for n, ts in times.items()}


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(step) -> int:
    with _Count() as c:
        step()
    return c.ops


def peak_in_record(allocations) -> int:
    """Highest net of the blocks allocated inside the record. Frees of blocks made before
    it are left out: the CPU allocator may report those with a stale size (a block freed
    while no profiler ran stays in its size table), which would bend ``allocator_peak``."""
    mine, running, peak = set(), 0, 0
    for _, ptr, nbytes, _ in allocations:
        if nbytes > 0:
            mine.add(ptr)
        elif ptr in mine:
            mine.discard(ptr)
        else:
            continue
        running += nbytes
        peak = max(peak, running)
    return peak


def peaks(step, engine: str = "python") -> dict:
    """Allocator peak of one step without gradmem, and with it (gradmem's own record).

    Each measured step follows an unrecorded one, so both start from the same state: the
    previous step's .grad was allocated outside any record, and its free is not reported."""
    step()
    _, bare = allocator_record(step)
    step()
    with Capture(engine=engine) as cap:
        step()
    a = analyze(cap.trace)
    s, before = a.summary, int(a.steps["allocator_bytes"].iloc[0])   # what existed before the step
    return {"bare": peak_in_record(bare), "with": s["allocator"]["peak_bytes"] - before,
            "gradmem": s["peak_bytes"] - before, "with_unattributed": s["allocator"]["peak_with_unattributed"] - before}


# -- whole processes: gradmem profile, torch.profiler with a Chrome export, a plain run ------
SCRIPT = r"""
import sys, torch
sys.path.insert(0, {bench!r})
from workloads import deep_mlp, two_rows_scaled
torch.set_num_threads(1)
KIND, STEPS = {kind!r}, {steps}

def main():
    if KIND == "mlp":
        step = deep_mlp(100, 64, 32)
    else:
        step = two_rows_scaled(*(int(v) for v in KIND.split("x")))
    if sys.argv[-1].endswith(".json"):   # torch.profiler, then a Chrome trace at that path
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            for _ in range(STEPS):
                step()
        prof.export_chrome_trace(sys.argv[-1])
    else:
        for _ in range(STEPS):
            step()

if __name__ == "__main__":
    main()
"""

TIME = r"""
import resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def _timed(cmd: list[str]) -> tuple[float, int]:
    out = subprocess.run([sys.executable, "-c", TIME, *cmd], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), int(out[1])


def whole_process(kind: str, steps: int, reps: int) -> dict:
    """Median seconds and peak RSS of whole processes: the script alone, under torch.profiler
    exporting a Chrome trace, and under ``gradmem profile`` with each engine."""
    import os
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    os.environ.update(env)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench_step.py"
        script.write_text(SCRIPT.format(bench=str(Path(__file__).resolve().parent), kind=kind, steps=steps))
        gm = [sys.executable, "-m", "gradmem", "profile", str(script), "-q", "--force", "-o", str(Path(tmp) / "r")]
        cmds = {"plain": [sys.executable, str(script)],
                "torch.profiler + chrome": [sys.executable, str(script), str(Path(tmp) / "t.json")],
                "gradmem": gm + ["--engine", "python"], "gradmem --engine native": gm + ["--engine", "native"]}
        runs = {k: [] for k in cmds}
        for _ in range(reps):
            for k, cmd in cmds.items():
                runs[k].append(_timed(cmd))
    return {k: (statistics.median(t for t, _ in v), max(m for _, m in v), [t for t, _ in v]) for k, v in runs.items()}


def paired(runs: dict, a: str, b: str) -> float:
    """The median of each repetition's ratio a / b: the two ran one after the other, so a
    machine that slows down for a while slows both (the ratio of medians mixes periods)."""
    return statistics.median(x / y for x, y in zip(runs[a][2], runs[b][2]))


# -- writing reports for a big trace --------------------------------------------------------
WRITE = r"""
import resource, sys, time
sys.path.insert(0, sys.argv[1])
t0 = time.perf_counter()
from gradmem.analysis import analyze
from gradmem.render import FORMATS, write_reports
from gradmem.trace import read_trace
trace = read_trace(sys.argv[2])
t1 = time.perf_counter()
formats = [f for f in ("csv", "json", "html") if f in FORMATS]
write_reports(analyze(trace), sys.argv[3], formats)
t2 = time.perf_counter()
print(t1 - t0, t2 - t1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "+".join(formats))
"""


def big_trace(path: Path, events: int) -> int:
    step = deep_mlp(100, 64, 32)
    with Capture(verify=False, engine="python") as cap:     # hook events only, so the count is what it says
        while len(cap.rec.events) < events:
            step()
    write_trace(cap.trace, path)
    return len(cap.trace.events)


def write_time(events: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        n = big_trace(Path(tmp) / "trace.jsonl", events)
        out = subprocess.run([sys.executable, "-c", WRITE, str(ROOT), str(Path(tmp) / "trace.jsonl"), str(Path(tmp) / "r")],
                             capture_output=True, text=True, check=True).stdout.split()
    return {"events": n, "read_s": float(out[0]), "write_s": float(out[1]), "max_rss": int(out[2]), "formats": out[3]}


# -- the table ---------------------------------------------------------------------------------
def rows(args) -> list[tuple[str, str, str]]:
    n, d = (100_000, 256) if args.quick else (1_000_000, 256)
    big, small = two_rows_scaled(n, d), deep_mlp(100, 64, 32)
    names = list(VARIANTS)
    if args.native_only:   # the variants the native rows compare
        names = ["bare", "gradmem", "gradmem --engine native", "gradmem --engine native, trace built",
                 "torch.profiler(profile_memory)"]
    tb = interleaved(big, names, args.reps)
    ts = interleaved(small, names, args.reps, steps=args.small_steps)
    ops = ops_per_step(small)
    pb, ps = peaks(big), peaks(small)
    nb, ns_ = peaks(big, "native"), peaks(small, "native")
    nat = "gradmem --engine native"
    r = [
        (f"native engine: step time / without, two rows {n:,} x {d}", f"{tb[nat] / tb['bare']:.2f}", "<= 1.10"),
        ("native engine: same, 100-layer MLP", f"{ts[nat] / ts['bare']:.2f} (Python engine {ts['gradmem'] / ts['bare']:.2f}; "
         f"torch.profiler {ts['torch.profiler(profile_memory)'] / ts['bare']:.2f})", "<= 2.5 and below torch.profiler"),
        ("  same, the Trace built too (two rows; MLP)", f"{tb[nat + ', trace built'] / tb['bare']:.2f}; "
         f"{ts[nat + ', trace built'] / ts['bare']:.2f}", "report"),
        ("native engine: microseconds of overhead per op (MLP)", f"{(ts[nat] - ts['bare']) / ops * 1e6:.1f}", "report"),
        ("native engine: allocator peak with / without (two rows; MLP)",
         f"{nb['with'] / nb['bare']:.4f}; {ns_['with'] / ns_['bare']:.4f}", "1.00"),
        ("native engine: gradmem peak / Python engine's (two rows; MLP)",
         f"{nb['gradmem'] / pb['gradmem']:.4f}; {ns_['gradmem'] / ps['gradmem']:.4f}", "1.00"),
    ]
    if not args.skip_process:
        reps = args.process_reps or max(3, args.reps // 3)
        wp = whole_process("mlp", 30, reps)
        wb = whole_process(f"{n}x{d}", 3, reps)
        tp = "torch.profiler + chrome"
        r += [
            ("whole process, 30 MLP steps: gradmem profile --engine native / torch.profiler + Chrome export",
             f"{wp[nat][0] / wp[tp][0]:.2f}, paired {paired(wp, nat, tp):.2f} ({wp[nat][0]:.1f} s vs {wp[tp][0]:.1f} s; "
             f"Python engine {wp['gradmem'][0] / wp[tp][0]:.2f}; plain {wp['plain'][0]:.1f} s)", "< 1"),
            (f"whole process, 3 steps of two rows {n:,} x {d}: gradmem profile --engine native / plain",
             f"{wb[nat][0] / wb['plain'][0]:.2f}, paired {paired(wb, nat, 'plain'):.2f} ({wb[nat][0]:.1f} s vs {wb['plain'][0]:.1f} s; Python engine "
             f"{wb['gradmem'][0] / wb['plain'][0]:.2f})", "<= 1.25"),
            ("  peak resident memory, same / plain", f"{wb[nat][1] / wb['plain'][1]:.2f} (Python engine "
             f"{wb['gradmem'][1] / wb['plain'][1]:.2f})", "<= 1.10"),
        ]
    if args.native_only:
        return r
    w = write_time(args.events)
    r += [
        (f"step time with gradmem / without, two rows scaled to {n:,} x {d}", f"{tb['gradmem'] / tb['bare']:.2f} "
         f"({tb['bare'] * 1e3:.0f} ms bare; --no-verify {tb['gradmem --no-verify'] / tb['bare']:.2f})", "<= 1.10"),
        ("same, 100-layer MLP width 64 batch 32", f"{ts['gradmem'] / ts['bare']:.2f} ({ts['bare'] * 1e3:.1f} ms bare; "
         f"--no-verify {ts['gradmem --no-verify'] / ts['bare']:.2f})", "<= 3.0"),
        ("  module and source attribution (--no-verify, with / without), same MLP",
         f"{ts['gradmem --no-verify'] / ts['gradmem --no-verify, no module/source attribution']:.3f} "
         f"({(ts['gradmem --no-verify'] - ts['gradmem --no-verify, no module/source attribution']) / ops * 1e6:.1f} "
         "us per op)", "report"),
        ("  torch.profiler(profile_memory=True) / without, same MLP",
         f"{ts['torch.profiler(profile_memory)'] / ts['bare']:.2f}", "above gradmem's"),
        ("microseconds of overhead per op (MLP)", f"{(ts['gradmem'] - ts['bare']) / ops * 1e6:.0f} "
         f"({ops} ops per step; --no-verify {(ts['gradmem --no-verify'] - ts['bare']) / ops * 1e6:.0f})", "report"),
        ("allocator peak with gradmem / without (two rows; MLP)",
         f"{pb['with'] / pb['bare']:.4f}; {ps['with'] / ps['bare']:.4f}", "1.00"),
        ("gradmem peak / allocator peak (two rows; MLP)", f"{pb['gradmem'] / pb['with']:.4f}; {ps['gradmem'] / ps['with']:.4f}",
         "1.00 with unattributed"),
        ("  same, unattributed counted", f"{pb['with_unattributed'] / pb['with']:.4f}; "
         f"{ps['with_unattributed'] / ps['with']:.4f}", "1.00"),
        (f"write {w['formats'].upper()} for a {w['events']:,}-event trace", f"{w['write_s']:.1f} s "
         f"(+ {w['read_s']:.1f} s to read the file); max RSS {w['max_rss'] / 2**30:.2f} GiB", "<= 20 s"),
    ]
    return r


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        import os
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = torch.get_num_threads()
    return f"{platform.system()} {cpu}, {cores} cores, Python {platform.python_version()}, torch {torch.__version__}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--small-steps", type=int, default=3, help="MLP steps per timed repetition")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--native-only", action="store_true", help="only the native engine's rows (and the variants they need)")
    p.add_argument("--skip-process", action="store_true", help="leave out the whole-process rows")
    p.add_argument("--process-reps", type=int, default=0,
                   help="repetitions of each whole process (default: a third of --reps, at least 3)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: steadier on a shared machine)")
    args = p.parse_args()
    args.reps = max(args.reps, 5)
    torch.set_num_threads(args.threads)
    table = rows(args)
    print(f"gradmem overhead ({machine()}, {args.threads} torch thread(s); median of {args.reps} interleaved repetitions)\n")
    print("| figure | measured | target |\n| --- | --- | --- |")
    for name, value, target in table:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    main()
