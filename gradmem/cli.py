"""The command line: parses, calls the library, maps errors to exit codes. Nothing else."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from . import __version__
from .errors import GradmemError, ScenarioError

EXAMPLES = """
\b
Examples:
  gradmem profile scenarios/seed_two_rows.py
  gradmem profile scenarios/linear_mse.py -p n=1000000 -p d=256 -o reports/big
  gradmem profile scenarios/mlp.py --device cuda
\b
Exit codes: 0 ok, 2 bad input (missing file, bad -p), 3 the scenario failed
(reports of what ran are still written), 4 unreadable trace file.
"""


class Progress:
    """Prints a line to stderr every few seconds of a long run."""

    def __init__(self, every_s: float = 2.0):
        self.every_s = every_s
        self.start = self.last = time.monotonic()

    def __call__(self, rec) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            where = "backward" if rec.in_backward else "forward"
            click.echo(f"gradmem: {now - self.start:.0f} s, step {rec.step:,} ({where}), {len(rec.events):,} events", err=True)


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
@click.option("-q", "--quiet", is_flag=True, help="No summary on stdout.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Record the CPU allocator's own allocations and frees beside the hooks, to report unattributed bytes.")
def profile(scenario, out_dir, params, device, retain_grad, force, quiet, verify):
    """Run SCENARIO (a Python script) under gradmem and write its reports."""
    from .analysis import analyze
    from .render import write_reports
    from .render.terminal import summary_text
    from .scenario import describe_failure, load_scenario, parse_params, run_scenario

    try:
        sc = load_scenario(scenario)
        values = parse_params(params, sc)
        out_dir = out_dir or Path("reports") / sc.name
        cap, failure = run_scenario(sc, values, device, retain_grad, on_progress=Progress(), verify=verify)
        analysis = analyze(cap.trace)
        files = write_reports(analysis, out_dir, force=force)
        if not quiet:
            click.echo(summary_text(analysis, files))
        if failure is not None:
            raise ScenarioError(f"{describe_failure(sc, cap, failure)}\n"
                                f"The events recorded before the failure are in {out_dir}/ (marked partial).")
    except GradmemError as exc:
        _fail(exc)


@main.command()
@click.argument("trace_file", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(path_type=Path), help="Report folder [default: the trace's folder].")
@click.option("-q", "--quiet", is_flag=True, help="No summary on stdout.")
def render(trace_file, out_dir, quiet):
    """Redraw every report from a saved TRACE_FILE without re-running the scenario."""
    from .analysis import analyze
    from .render import write_reports
    from .render.terminal import summary_text
    from .trace import read_trace

    try:
        analysis = analyze(read_trace(trace_file))
        files = write_reports(analysis, out_dir or trace_file.parent)
        if not quiet:
            click.echo(summary_text(analysis, files))
    except GradmemError as exc:
        _fail(exc)


if __name__ == "__main__":  # pragma: no cover
    main()
