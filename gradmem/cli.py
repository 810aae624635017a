"""The command line: parses, calls the library, maps errors to exit codes. Nothing else."""
from __future__ import annotations

import gc
import os
import sys
import time
from pathlib import Path

import click

from . import __version__, gc_pause
from .errors import GradmemError

ENGINES = ("auto", "python", "native")   # as gradmem/capture/native/choose.py (kept torch-free here)
DEFAULT_ENGINE = "auto"

EXAMPLES = """
\b
Examples:
  gradmem profile scenarios/seed_two_rows.py
  gradmem profile scenarios/linear_mse.py -p n=1000000 -p d=256 -o reports/big
  gradmem profile scenarios/mlp.py --device cuda
  gradmem profile scenarios/linear_mse.py --fake -p n=1000000000 -p d=256
  gradmem profile --nproc-per-node 2 scenarios/distributed/ddp.py -o reports/ddp
  torchrun --nproc-per-node 2 -m gradmem profile scenarios/distributed/ddp.py -o reports/ddp
\b
Exit codes: 0 ok, 2 bad input (missing file, bad -p), 3 the scenario failed or
ran no backward pass (reports of what ran are still written, marked partial),
4 unreadable trace file, 5 gradmem's own code failed (a bug in gradmem: the scenario
ran on; reports cover the run up to the failure), 130 interrupted.
"""


class Progress:
    """Prints a line to stderr every few seconds of a long run (GRADMEM_PROGRESS_EVERY
    seconds, default 2). The clock starts at the run's first step, not at start-up."""

    def __init__(self, every_s: float | None = None):
        self.every_s = float(os.environ.get("GRADMEM_PROGRESS_EVERY", 2.0)) if every_s is None else every_s
        self.start = self.last = None

    def __call__(self, step: int, phase: str, events: int) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start = self.last = now
        if now - self.last >= self.every_s:
            self.last = now
            click.echo(f"gradmem: {now - self.start:.0f} s, step {step:,} ({str(phase)}), {events:,} events", err=True)


FORMAT_HELP = "Comma-separated report formats, e.g. csv,chrome,memory_viz [default: the standard reports, see docs/reports.md]. trace.jsonl is always written."


def _formats(text: str | None) -> tuple | None:
    """--format csv,chrome -> ("csv", "chrome"); None when not given (the defaults)."""
    if not text:
        return None
    return tuple(f.strip() for f in text.split(",") if f.strip())


def _say(line: str) -> None:
    """A line for the user that is not the summary: stderr."""
    click.echo(line, err=True)


def _fail(exc: GradmemError) -> None:
    click.echo(f"gradmem: error: {exc}", err=True)
    sys.exit(exc.exit_code)


def entry() -> None:
    """The process's entry point (the ``gradmem`` script, ``python -m gradmem``). The
    collector is frozen as the command ends: the process is about to exit, and a last full
    collection would walk, and free one by one, the millions of objects a trace and its
    tables made (half a second on a 30-step MLP); the OS takes the memory back at once.
    Objects still reachable are torn down at exit as in any process; only cyclic garbage
    left at the very end is not collected, which Python itself does not promise to do."""
    gc_pause.ending_process()
    try:
        main(prog_name="gradmem")
    finally:
        gc.freeze()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradmem")
def main() -> None:
    """gradmem: which tensors backprop needs, and when they are allocated and freed."""


@main.command(epilog=EXAMPLES)
@click.argument("scenario", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), help="Report folder [default: reports/<scenario name>].")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Argument for the scenario's main(); repeatable.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default device for the run (also passed to main(device=...)).")
@click.option("--retain-grad", type=click.Choice(["as-written", "off", "on"]), default="as-written", show_default=True,
              help="off: retain_grad() does nothing; on: every non-leaf that requires grad retains its grad.")
@click.option("--force", is_flag=True, help="Replace an output folder that holds files gradmem did not write.")
@click.option("--format", "formats", metavar="LIST", help=FORMAT_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No summary on stdout.")
@click.option("--fake", is_flag=True, help="Estimate: run on fake tensors (shapes, no data), so any size fits; "
              "--device cuda needs no GPU.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Record the CPU allocator's own allocations and frees beside the hooks, to report unattributed bytes.")
@click.option("--nproc-per-node", "nproc", type=int, metavar="N",
              help="Start N ranks through torch.distributed.run (each writes OUT/rank<R>/), then merge them into OUT/.")
@click.option("--engine", type=click.Choice(ENGINES), default=DEFAULT_ENGINE, show_default=True,
              help="Capture engine: python (dispatch mode), native (C++ extension, built on first use; "
              "falls back to python when it cannot run) or auto. See `gradmem doctor`.")
def profile(scenario, out_dir, params, device, retain_grad, force, formats, quiet, fake, verify, nproc, engine):
    """Run SCENARIO (a Python script) under gradmem and write its reports."""
    with gc_pause.paused():   # torch's and pandas' modules: nothing for a collection to find
        from . import pipeline
    from .render.ranks import summary_text as ranks_summary
    from .render.terminal import summary_text

    try:
        if nproc is not None:
            done = pipeline.profile_ranks(scenario, nproc, params, device, retain_grad, out_dir, force,
                                          _formats(formats), verify, fake, engine)
        else:
            done = pipeline.profile(scenario, params, device, retain_grad, out_dir, force, _formats(formats),
                                    fake, verify, on_progress=Progress(), say=_say, engine=engine,
                                    build_progress=_echo_err)
        if not quiet and done.merged is not None:
            click.echo(ranks_summary(*done.merged))
        elif not quiet and done.speaks:
            click.echo(summary_text(done.analysis, done.files))
        if done.error is not None:
            raise done.error
    except GradmemError as exc:
        _fail(exc)


@main.command()
@click.argument("trace_file", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), help="Report folder [default: the trace's folder].")
@click.option("--format", "formats", metavar="LIST", help=FORMAT_HELP)
@click.option("--force", is_flag=True, help="Replace an output folder that holds files gradmem did not write.")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stdout.")
def render(trace_file, out_dir, formats, force, quiet):
    """Redraw every report from a saved TRACE_FILE (or a report folder) without re-running the scenario."""
    from . import pipeline
    from .render.terminal import summary_text

    try:
        analysis, files = pipeline.render(trace_file, out_dir, _formats(formats), force, say=_say)
        if not quiet:
            click.echo(summary_text(analysis, files))
    except GradmemError as exc:
        _fail(exc)


@main.command()
@click.argument("trace_file", type=click.Path(path_type=Path))
@click.option("--format", "formats", metavar="LIST", default="chrome", show_default=True,
              help="Comma-separated formats to write, e.g. chrome,memory_viz.")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), help="Folder [default: the trace's folder].")
def export(trace_file, formats, out_dir):
    """Add files of other formats beside a saved TRACE_FILE (or in a report folder); the folder's other files stay."""
    from . import pipeline

    try:
        for path in pipeline.export(trace_file, _formats(formats) or (), out_dir, say=_say):
            click.echo(str(path))
    except GradmemError as exc:
        _fail(exc)


@main.command()
@click.argument("job_dir", type=click.Path(path_type=Path))
@click.option("-q", "--quiet", is_flag=True, help="No summary on stdout.")
def merge(job_dir, quiet):
    """Merge the rank<R>/ reports of a multi-process run in JOB_DIR again: ranks.csv,
    report.html and trace.chrome.json (a missing or partial rank is said so)."""
    from .ranks import merge_folder
    from .render.ranks import summary_text

    try:
        merged = merge_folder(job_dir)
        if not quiet:
            click.echo(summary_text(*merged))
    except GradmemError as exc:
        _fail(exc)


COMPARE_EXAMPLES = """
\b
Examples:
  gradmem compare scenarios/seed_two_rows.py                  # retain_grad off vs on
  gradmem compare scenarios/linear_mse.py -p n=1000000 -o reports/retain
  gradmem compare reports/a/trace.jsonl reports/b/trace.jsonl   # any two saved runs
\b
Exit codes: as for profile (a failing run's code is passed on); 4 a file that is
not a trace.
"""


@main.command(epilog=COMPARE_EXAMPLES)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), help="Folder [default: reports/<scenario>-compare].")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help="Argument for the scenario's main(); repeatable.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), help="Default device for the runs.")
@click.option("--as-written", "as_written", is_flag=True, help="Also run the scenario as written (a third report folder).")
@click.option("--force", is_flag=True, help="Replace an output folder that holds files gradmem did not write.")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stdout.")
def compare(paths, out_dir, params, device, as_written, force, quiet):
    """Run SCENARIO with retain_grad off and on and compare the two runs, or compare two
    saved TRACE files: comparison.csv, comparison.html and a summary."""
    from . import pipeline
    from .render.comparison import signed, summary_text

    try:
        done = pipeline.compare(paths, out_dir, params, device, as_written, force, say=_say)
        if not quiet:
            click.echo(summary_text(done.comparison, done.files))
            w = done.as_written
            if w is not None:
                click.echo(f"  as written: peak {w.headline['peak_b']:,} B, after backward {signed(w.headline['end_diff'])} "
                           f"vs off ({w.headline['kept_count']} storages kept); report in {done.out_dir / 'as-written'}/")
    except GradmemError as exc:
        _fail(exc)


@main.command()
@click.option("--build/--no-build", default=True, show_default=True,
              help="Build the native extension now if it is not built yet (about 30 s of CPU, once).")
def doctor(build):
    """Say which capture engine a run will use and why; build the native engine ahead."""
    from .capture.native import choose, loader

    click.echo(f"compiler: {loader.compiler() or '(none on PATH)'}")
    click.echo(f"native extension: {loader.cache_dir()} ({'built' if loader.built() else 'not built'})")
    if build or loader.built():
        c = choose.choose("auto", progress=_echo_err)
    else:
        c = choose.Choice("python", None, "not built yet (run `gradmem doctor` to build it)")
    click.echo(f"--engine auto uses: {c.engine} ({c.reason})")
    click.echo(f"--engine python uses: python; the default is --engine {DEFAULT_ENGINE}")


def _echo_err(line: str) -> None:
    click.echo(line, err=True)


FIT_EXAMPLES = """
\b
Examples:
  gradmem fit scenarios/mlp.py --param batch --budget 2GiB
  gradmem fit scenarios/linear_mse.py --param n --budget 24GB -p d=256
  gradmem fit scenarios/mlp.py --param batch --budget 80GiB --device cuda -p batch=1000000 --suggest
\b
Exit codes: 0 ok, 2 bad input (unknown --param, bad --budget, a budget below even
value 1), 3 a run failed (e.g. code that needs data on fake tensors; the line is named).
What was measured is written either way.
"""


@main.command(epilog=FIT_EXAMPLES)
@click.argument("scenario", type=click.Path(path_type=Path))
@click.option("--param", "name", required=True, metavar="NAME", help="The integer parameter of main() to search (batch size, sequence length).")
@click.option("--budget", required=True, metavar="SIZE", help="Memory budget: 80GiB, 24GB, 512MiB or bytes.")
@click.option("-p", "--param-value", "params", multiple=True, metavar="NAME=VALUE",
              help="Other arguments for main(), held fixed; -p NAME=V for the searched one is the value you want (for --suggest).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda compares the caching-allocator model's reserved bytes (no GPU needed); cpu the allocated peak.")
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), help="Folder [default: reports/<scenario>-fit].")
@click.option("--force", is_flag=True, help="Replace an output folder that holds files gradmem did not write.")
@click.option("--suggest", is_flag=True, help="If the wanted value does not fit: changes that would, each verified by a fake run.")
@click.option("--calibrate", is_flag=True, help="cpu: also run for real at NAME=8 and 64 and add what the allocator held "
              "beyond the fake peak (kernel scratch), as a line in NAME.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def fit(scenario, name, budget, params, device, out_dir, force, suggest, calibrate, quiet):
    """The largest integer NAME whose peak, on fake tensors, stays within --budget."""
    from .fit import fit as run_fit
    from .render.fit_page import answer_line, point_line, suggestion_lines, want_line

    say = (lambda line: None) if quiet else (lambda line: click.echo(line, err=True))
    try:
        s, files = run_fit(scenario, name, budget, params, device, out_dir, force, suggest, calibrate,
                           on_point=lambda p: say(point_line(name, p)), on_line=say)
        click.echo(answer_line(s))
        for line in [want_line(s)] + suggestion_lines(s):
            if line:
                click.echo(line)
        click.echo(f"  wrote {files[0].parent}/: " + " ".join(f.name for f in files))
        if s.error is not None:
            raise s.error
    except GradmemError as exc:
        _fail(exc)


if __name__ == "__main__":  # pragma: no cover
    main()
