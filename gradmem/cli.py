"""The command line: parses, calls the library, maps errors to exit codes. Nothing else."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from . import __version__
from .errors import GradmemError, Interrupted, ScenarioError

ENGINES = ("auto", "python", "native")   # as gradmem/capture/native/choose.py (kept torch-free here)
DEFAULT_ENGINE = "python"

EXAMPLES = """
\b
Examples:
  gradmem profile scenarios/seed_two_rows.py
  gradmem profile scenarios/linear_mse.py -p n=1000000 -p d=256 -o reports/big
  gradmem profile scenarios/mlp.py --device cuda
  gradmem profile scenarios/linear_mse.py --fake -p n=1000000000 -p d=256
\b
Exit codes: 0 ok, 2 bad input (missing file, bad -p), 3 the scenario failed or
ran no backward pass (reports of what ran are still written, marked partial),
4 unreadable trace file, 130 interrupted.
"""


class Progress:
    """Prints a line to stderr every few seconds of a long run (GRADMEM_PROGRESS_EVERY
    seconds, default 2). The clock starts at the run's first step, not at start-up."""

    def __init__(self, every_s: float | None = None):
        self.every_s = float(os.environ.get("GRADMEM_PROGRESS_EVERY", 2.0)) if every_s is None else every_s
        self.start = self.last = None

    def __call__(self, rec) -> None:
        now = time.monotonic()
        if self.start is None:
            self.start = self.last = now
        if now - self.last >= self.every_s:
            self.last = now
            where = "backward" if rec.in_backward else "forward"
            click.echo(f"gradmem: {now - self.start:.0f} s, step {rec.step:,} ({where}), {len(rec.events):,} events", err=True)


def _engine_progress(line: str) -> None:
    click.echo(line, err=True)


FORMAT_HELP = "Comma-separated report formats, e.g. csv,chrome,memory_viz [default: the standard reports, see docs/reports.md]. trace.jsonl is always written."


def _formats(text: str | None) -> dict:
    """--format csv,chrome -> write_reports' keyword (none when not given: its defaults)."""
    if not text:
        return {}
    names = [f.strip() for f in text.split(",") if f.strip()]
    return {"formats": tuple(dict.fromkeys(names + ["trace"]))}


def _fail(exc: GradmemError) -> None:
    click.echo(f"gradmem: error: {exc}", err=True)
    sys.exit(exc.exit_code)


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
@click.option("--engine", type=click.Choice(ENGINES), default=DEFAULT_ENGINE, show_default=True,
              help="Capture engine: python (dispatch mode), native (C++ extension, built on first use; "
              "falls back to python when it cannot run) or auto. See `gradmem doctor`.")
def profile(scenario, out_dir, params, device, retain_grad, force, formats, quiet, fake, verify, engine):
    """Run SCENARIO (a Python script) under gradmem and write its reports."""
    from .analysis import analyze
    from .render import write_reports
    from .render.terminal import summary_text
    from .scenario import describe_failure, load_scenario, parse_params, run_scenario

    try:
        sc = load_scenario(scenario)
        values = parse_params(params, sc)
        out_dir = out_dir or Path("reports") / sc.name
        cap, failure = run_scenario(sc, values, device, retain_grad, on_progress=Progress(), fake=fake,
                                    verify=verify, engine=engine, engine_progress=_engine_progress)
        analysis = analyze(cap.trace)
        files = write_reports(analysis, out_dir, force=force, **_formats(formats))
        if not quiet:
            click.echo(summary_text(analysis, files))
        if failure is not None:
            error = Interrupted if isinstance(failure, KeyboardInterrupt) else ScenarioError
            raise error(f"{describe_failure(sc, cap, failure)}\n"
                        f"The events recorded before the failure are in {out_dir}/ (marked partial).")
    except GradmemError as exc:
        _fail(exc)


@main.command()
@click.argument("trace_file", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), help="Report folder [default: the trace's folder].")
@click.option("--format", "formats", metavar="LIST", help=FORMAT_HELP)
@click.option("-q", "--quiet", is_flag=True, help="No summary on stdout.")
def render(trace_file, out_dir, formats, quiet):
    """Redraw every report from a saved TRACE_FILE without re-running the scenario."""
    from .analysis import analyze
    from .render import write_reports
    from .render.terminal import summary_text
    from .trace import read_trace

    try:
        analysis = analyze(read_trace(trace_file))
        files = write_reports(analysis, out_dir or trace_file.parent, **_formats(formats))
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
    """Add files of other formats beside a saved TRACE_FILE; the folder's other files stay."""
    from .analysis import analyze
    from .render import write_files
    from .trace import read_trace

    try:
        names = [f.strip() for f in formats.split(",") if f.strip() and f.strip() != "trace"]
        for path in write_files(analyze(read_trace(trace_file)), out_dir or trace_file.parent, names):
            click.echo(str(path))
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
    from .compare import compare_traces, default_folder, labels_for, run_mode
    from .errors import UsageError
    from .render.comparison import claim_folder, summary_text, write_comparison
    from .scenario import load_scenario, parse_params

    try:
        if len(paths) == 2:
            if params or device or as_written:
                raise UsageError("-p, --device and --as-written apply to a scenario; two trace files are compared as they are.")
            c = compare_traces(paths[0], paths[1], labels_for(*paths))
            out_dir = out_dir or default_folder(c.a.summary["scenario"], c.b.summary["scenario"])
        elif len(paths) == 1:
            sc = load_scenario(paths[0])
            parse_params(params, sc)   # a bad -p fails before anything runs
            out_dir = out_dir or default_folder(sc.name, sc.name)
            claim_folder(out_dir, force)
            modes = ("off", "on", "as-written") if as_written else ("off", "on")
            traces = {m: run_mode(sc.path, params, device, m, out_dir / m, force) for m in modes}
            c = compare_traces(traces["off"], traces["on"], ("off", "on"))
        else:
            raise UsageError(f"give one scenario, or two trace files to compare (got {len(paths)} paths).")
        files = write_comparison(c, out_dir, force=force)
        if not quiet:
            click.echo(summary_text(c, files))
            if len(paths) == 1 and as_written:
                w = compare_traces(traces["off"], traces["as-written"], ("off", "as-written"))
                click.echo(f"  as written: peak {w.headline['peak_b']:,} B, after backward {signed_bytes(w.headline['end_diff'])} "
                           f"vs off ({w.headline['kept_count']} storages kept); report in {out_dir / 'as-written'}/")
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
        c = choose.choose("auto", progress=_engine_progress)
    else:
        c = choose.Choice("python", None, "not built yet (run `gradmem doctor` to build it)")
    click.echo(f"--engine auto uses: {c.engine} ({c.reason})")
    click.echo(f"--engine python uses: python; the default is --engine {DEFAULT_ENGINE}")


def signed_bytes(n: int) -> str:
    from .render.comparison import signed
    return signed(n)


if __name__ == "__main__":  # pragma: no cover
    main()
