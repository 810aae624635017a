"""Multi-process runs: each rank's report folder, the launcher, and the merge of the ranks.

Under ``torchrun ... -m gradmem profile SCENARIO -o OUT`` every rank profiles itself and
writes ``OUT/rank<R>/`` (a complete report, atomically, also when the scenario raises or
the launcher stops the rank with SIGTERM); rank 0 then waits for the other ranks' folders
(``GRADMEM_MERGE_WAIT`` seconds, default 60; they must be on a file system rank 0 can
read), merges them into ``OUT/ranks.csv``, ``OUT/report.html`` and ``OUT/trace.chrome.json``,
and prints the merged summary; the other ranks print nothing.
``gradmem profile --nproc-per-node N SCENARIO`` starts the same through
``torch.distributed.run --standalone`` and merges in the launching process, once every
rank has ended, so a rank that was killed outright is reported missing without a wait.

Known limitations: a rank killed with SIGKILL (or stuck in a collective until the launcher
kills it) writes nothing, and the merge says so; ranks of one job are told apart from a
previous job's folders by the run id, so the merge never mixes two runs.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from .errors import Interrupted, ScenarioError, UsageError
from .files import TRACE

LAUNCHED = "GRADMEM_LAUNCHED"      # set for ranks started by --nproc-per-node: the launcher merges
RUN_ID = "GRADMEM_RUN_ID"          # the launcher's id for one job (torchrun --standalone makes its own)
MERGE_WAIT = "GRADMEM_MERGE_WAIT"  # seconds rank 0 waits for the others under plain torchrun
WAIT_S = 60.0
POLL_S = 0.2
STOP_ASKED = threading.Event()     # a SIGTERM came while the reports were being written


class RankStopped(Exception):
    """Raised in the scenario when the launcher stops this rank (SIGTERM), so that what
    was recorded is still written; torchrun stops every rank when one fails."""


def this_rank() -> dict | None:
    from .capture.ranks import rank_env
    return rank_env()


def rank_folder(out_dir: Path, rank: int) -> Path:
    return Path(out_dir) / f"rank{rank}"


def claim_folder(out_dir: Path, force: bool) -> None:
    """The job's folder: new, or one gradmem wrote (``--force`` for any other)."""
    from .render import MARKER, check_target
    check_target(out_dir, force)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by gradmem\n", encoding="utf-8")


@contextlib.contextmanager
def sigterm_guard(active: bool):
    """While the scenario runs, SIGTERM raises RankStopped in it; once ``done()`` is
    called (the reports are being written) a SIGTERM waits until they are, and rank 0
    stops waiting for the other ranks (``STOP_ASKED``). The previous handler comes back
    on exit."""
    state = {"running": True}
    STOP_ASKED.clear()
    if not active or threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def handler(signum, frame):
        STOP_ASKED.set()
        if state["running"]:
            state["running"] = False
            raise RankStopped("stopped by SIGTERM: the launcher stops every rank when one of them fails")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield lambda: state.update(running=False)
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- reading the ranks' folders ----------------------------------------------------------------
def _meta_of(trace_path: Path) -> dict | None:
    try:
        with open(trace_path, encoding="utf-8") as f:
            return json.loads(f.readline())
    except (OSError, ValueError):
        return None


def rank_status(out_dir: Path, rank: int, run_id: str | None) -> tuple[Path | None, str]:
    """(trace path or None, why it is missing)."""
    path = rank_folder(out_dir, rank) / TRACE
    if not path.is_file():
        return None, "missing: the rank wrote no report (killed, or it never started)"
    meta = _meta_of(path)
    if meta is None:
        return None, "missing: its trace file is unreadable"
    ran = (meta.get("distributed") or {}).get("run_id")
    if run_id and ran != run_id:
        return None, "missing: the folder is from another run"
    return path, ""


def wait_for_ranks(out_dir: Path, world: int, run_id: str | None, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not STOP_ASKED.is_set():   # the launcher wants us gone: merge now
        if all(rank_status(out_dir, r, run_id)[0] for r in range(world)):
            return
        time.sleep(POLL_S)


def read_ranks(out_dir: Path, world: int | None = None, run_id: str | None = None):
    """({rank: Trace}, {rank: why missing}, world size) from ``out_dir/rank*/``."""
    from .errors import TraceFileError
    from .trace import read_trace
    out_dir = Path(out_dir)
    if world is None:
        world = _world_from_folders(out_dir)
    traces, missing = {}, {}
    for r in range(world):
        path, why = rank_status(out_dir, r, run_id)
        if path is None:
            missing[r] = why
            continue
        try:
            traces[r] = read_trace(path)
        except TraceFileError as exc:
            missing[r] = f"missing: {exc}"
    return traces, missing, world


def _world_from_folders(out_dir: Path) -> int:
    world = 0
    for folder in out_dir.glob("rank*"):
        meta = _meta_of(folder / TRACE) or {}
        dist = meta.get("distributed") or {}
        tail = folder.name[4:]
        world = max(world, int(dist.get("world_size") or 0), int(tail) + 1 if tail.isdigit() else 0)
    if world == 0:
        raise UsageError(f"{out_dir}: no rank folders (rank0/, rank1/, ...) to merge. Run "
                         "gradmem profile --nproc-per-node N, or gradmem under torchrun, with -o this folder.")
    return world


def merge_folder(out_dir: Path, world: int | None = None, run_id: str | None = None):
    """Merge the ranks' reports in ``out_dir`` and write the merged files beside them."""
    from .analysis.ranks import merge
    from .render.ranks import write_merge
    if run_id is None:   # re-merging a folder: rank 0's job is the one to merge
        run_id = ((_meta_of(rank_folder(out_dir, 0) / TRACE) or {}).get("distributed") or {}).get("run_id")
    traces, missing, world = read_ranks(out_dir, world, run_id)
    result = merge(traces, world, missing)
    return result, write_merge(result, Path(out_dir))


# -- one rank of a job ------------------------------------------------------------------------
class RankJob:
    """This process as one rank of a torchrun job: its folder, and (rank 0 of a plain
    torchrun job) the merge once the other ranks have written."""

    def __init__(self, job_dir: Path, info: dict):
        self.job_dir, self.info = Path(job_dir), info
        self.folder = rank_folder(self.job_dir, info["rank"])

    @classmethod
    def here(cls, job_dir: Path, force: bool) -> "RankJob | None":
        info = this_rank()
        if info is None:
            return None
        claim_folder(Path(job_dir), force)
        return cls(job_dir, info)

    @property
    def quiet(self) -> bool:
        """Only rank 0 of a plain torchrun job speaks; under the launcher, the launcher does."""
        return self.info["rank"] != 0 or bool(os.environ.get(LAUNCHED))

    def finish(self):
        """Rank 0 of a plain torchrun job: (RankMerge, files) once the others wrote; else None."""
        if self.quiet:
            return None
        world, run_id = self.info["world_size"], self.info["run_id"]
        wait_for_ranks(self.job_dir, world, run_id, float(os.environ.get(MERGE_WAIT, WAIT_S)))
        return merge_folder(self.job_dir, world, run_id)


# -- the launcher -----------------------------------------------------------------------------
def launch(scenario: Path, out_dir: Path, nproc: int, forwarded: list[str], force: bool, env: dict | None = None):
    """``gradmem profile --nproc-per-node N``: N ranks through torch's own launcher, then
    the merge. Returns ((RankMerge, files), the error to raise after showing it or None)."""
    if nproc < 1:
        raise UsageError(f"--nproc-per-node {nproc}: give at least 1.")
    if "--fake" in forwarded:
        raise UsageError("--fake with --nproc-per-node: fake tensors have no process group to run collectives "
                         "in; profile the ranks for real, with small -p values.")
    if os.environ.get("RANK") is not None and os.environ.get("WORLD_SIZE") is not None:
        raise UsageError("--nproc-per-node inside a torchrun job: torchrun already started the ranks; drop the option.")
    claim_folder(out_dir, force)
    run_id = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "gradmem", "profile", str(scenario), "-o", str(out_dir), *forwarded]
    proc = subprocess.Popen(cmd, env={**(env or os.environ), LAUNCHED: "1", RUN_ID: run_id})
    interrupted = False
    try:
        code = proc.wait()
    except KeyboardInterrupt:    # the ranks get Ctrl-C too: they write partial reports
        interrupted = True
        code = proc.wait()
    result, files = merge_folder(out_dir, nproc, run_id)
    error = None
    if interrupted:
        error = Interrupted(f"interrupted (Ctrl-C); what every rank recorded is in {out_dir}/.")
    elif code != 0:
        bad = [f"rank {r.rank}: {r.status}" for r in result.ranks.itertuples() if r.status != "complete"]
        error = ScenarioError(f"{scenario}: the job failed (torch.distributed.run exit code {code}); "
                              + ("; ".join(bad) or "every rank wrote a complete report")
                              + f". Each rank's report is in {out_dir}/rank<R>/, the merge in {out_dir}/.")
    return (result, files), error


def forwarded_options(params, device, retain_grad, force, formats, verify, fake=False, engine=None) -> list[str]:
    """The profile options every rank gets from the launcher."""
    out = [a for p in params for a in ("-p", p)]
    out += ["--engine", engine] if engine else []
    out += ["--device", device] if device else []
    out += ["--retain-grad", retain_grad, "-q"]
    out += ["--force"] if force else []
    out += ["--format", formats] if formats else []
    out += [] if verify else ["--no-verify"]
    out += ["--fake"] if fake else []
    return out

