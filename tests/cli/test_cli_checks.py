"""Options are checked before anything runs, and no file gradmem did not write is lost
(issue 13, items 8-14). In-process through click's CliRunner: the point is the CLI's
checks, not a fresh interpreter."""
import json

import pytest
from click.testing import CliRunner

from conftest import SCENARIOS
from gradmem.cli import main

# a scenario that leaves a file behind when it runs: proof that it ran
RAN_MARK = """\
import pathlib, torch
pathlib.Path({mark!r}).write_text("ran")
w = torch.tensor([5., 6.], requires_grad=True)
(w * 2).sum().backward()
"""


def gradmem(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def marked(tmp_path):
    mark = tmp_path / "ran.txt"
    path = tmp_path / "marked.py"
    path.write_text(RAN_MARK.format(mark=str(mark)))
    return path, mark


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One real report folder of the two-rows seed, profiled in this process."""
    out = tmp_path_factory.mktemp("r") / "seed"
    result = gradmem("profile", SCENARIOS / "seed_two_rows.py", "-o", out, "-q")
    assert result.exit_code == 0, result.output
    return out


# -- item 8: every option and the output folder are checked before the scenario runs -------------
def test_unknown_format_is_rejected_before_the_scenario_runs(marked, tmp_path):
    path, mark = marked
    result = gradmem("profile", path, "--format", "nope", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "unknown report format 'nope'" in result.output
    assert not mark.exists(), "the scenario ran before --format was checked"


def test_foreign_folder_is_rejected_before_the_scenario_runs(marked, tmp_path):
    path, mark = marked
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my notes")
    result = gradmem("profile", path, "-o", foreign)
    assert result.exit_code == 2 and "holds files gradmem did not write" in result.output
    assert not mark.exists(), "the scenario ran before the output folder was checked"
    assert (foreign / "notes.txt").read_text() == "my notes"


# -- item 9: render accepts the --force it suggests ----------------------------------------------
def test_render_accepts_the_force_it_suggests(report, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    result = gradmem("render", report / "trace.jsonl", "-o", foreign, "-q")
    assert result.exit_code == 2 and "--force" in result.output
    result = gradmem("render", report / "trace.jsonl", "-o", foreign, "-q", "--force")
    assert result.exit_code == 0, result.output
    assert (foreign / "report.html").exists()


# -- item 10: a file the user added to a report folder survives the next run ---------------------
def test_a_users_file_in_a_report_folder_is_never_deleted_without_force(report, tmp_path, marked):
    path, mark = marked
    out = tmp_path / "r"
    assert gradmem("profile", path, "-o", out, "-q").exit_code == 0
    (out / "junk.txt").write_text("mine")
    result = gradmem("profile", path, "-o", out, "-q")
    assert result.exit_code == 2 and "junk.txt" in result.output and "--force" in result.output
    assert (out / "junk.txt").read_text() == "mine"
    assert gradmem("profile", path, "-o", out, "-q", "--force").exit_code == 0
    assert not (out / "junk.txt").exists()


def test_an_export_is_gradmems_and_its_replacement_is_said(tmp_path, marked):
    path, mark = marked
    out = tmp_path / "r"
    assert gradmem("profile", path, "-o", out, "-q").exit_code == 0
    assert gradmem("export", out / "trace.jsonl", "--format", "chrome").exit_code == 0
    assert (out / "trace.chrome.json").exists()
    result = gradmem("profile", path, "-o", out, "-q")
    assert result.exit_code == 0, result.output
    assert "trace.chrome.json" in result.output and "gradmem export" in result.output


# -- item 13: render of a folder reads the folder's trace.jsonl ----------------------------------
def test_render_a_folder_reads_its_trace(report):
    result = gradmem("render", report, "-q")
    assert result.exit_code == 0, result.output
    assert "is a folder: reading" in result.output


def test_render_a_folder_without_a_trace_says_so(tmp_path):
    result = gradmem("render", tmp_path)
    assert result.exit_code == 4
    assert f"{tmp_path}: is a folder with no trace.jsonl in it" in result.output


# -- item 14: a truncated trace renders, with one line saying where it stops ---------------------
def test_truncated_trace_says_it_is_partial(report, tmp_path):
    lines = (report / "trace.jsonl").read_text().splitlines()
    cut = tmp_path / "cut" / "trace.jsonl"
    cut.parent.mkdir()
    keep = len(lines) // 2                     # the meta line and half the events: no end line
    cut.write_text("\n".join(lines[:keep]) + "\n")
    last = json.loads(lines[keep - 1])
    result = gradmem("render", cut, "-q")
    assert result.exit_code == 0
    warning = [line for line in result.output.splitlines() if "partial" in line]
    assert len(warning) == 1, result.output
    assert f"ends early after {keep - 1} events (step {last['step']})" in warning[0], warning


# -- item 11: compare keeps no file silently, leaves no stale run, overwrites nothing ------------
def test_compare_refuses_a_folder_holding_a_users_file(report, tmp_path):
    out = tmp_path / "cmp"
    args = ["compare", report / "trace.jsonl", report / "trace.jsonl", "-o", out, "-q"]
    assert gradmem(*args).exit_code == 0
    (out / "junk.txt").write_text("mine")
    result = gradmem(*args)
    assert result.exit_code == 2 and "junk.txt" in result.output and "--force" in result.output
    assert (out / "junk.txt").read_text() == "mine"


def test_two_traces_do_not_overwrite_a_scenario_comparison(report, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scenario_folder = tmp_path / "reports" / "seed_two_rows-compare"
    scenario_folder.mkdir(parents=True)
    (scenario_folder / "comparison.csv").write_text("the scenario's comparison")
    copy = tmp_path / "b" / "trace.jsonl"
    copy.parent.mkdir()
    copy.write_text((report / "trace.jsonl").read_text())
    result = gradmem("compare", report / "trace.jsonl", copy, "-q")
    assert result.exit_code == 0, result.output
    assert (scenario_folder / "comparison.csv").read_text() == "the scenario's comparison"
    assert (tmp_path / "reports" / "seed_two_rows-compare-seed-vs-b" / "comparison.csv").exists()


def test_compare_says_when_a_trace_is_partial(report, tmp_path):
    lines = (report / "trace.jsonl").read_text().splitlines()
    cut = tmp_path / "cut" / "trace.jsonl"
    cut.parent.mkdir()
    cut.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    result = gradmem("compare", report / "trace.jsonl", cut, "-o", tmp_path / "cmp", "-q")
    assert result.exit_code == 0
    assert f"{cut} is partial: the trace file ends early" in result.output


def test_a_plain_compare_removes_an_earlier_as_written_run_and_says_so(tmp_path):
    from gradmem.pipeline import clear_stale_runs
    out = tmp_path / "cmp"
    for mode in ("off", "on", "as-written"):
        (out / mode).mkdir(parents=True)
        (out / mode / ".gradmem-report").write_text("written by gradmem\n")
    said = []
    clear_stale_runs(out, ("off", "on"), said.append)
    assert not (out / "as-written").exists() and (out / "off").exists()
    assert said and "as-written/" in said[0]
