"""Every command and sample output in README.md and docs/*.md runs against the current
code (issue 13, item 16), so the docs cannot drift from the CLI again.

- ```bash blocks: each `gradmem ...` command runs in-process through click's CliRunner, in
  a scratch folder, in the order written (a later `render` reads what an earlier `profile`
  wrote; a trace no command made is profiled from the two-rows seed first). Sizes given with
  `-p` are shrunk (n, d, batch, width) so the suite stays fast: the option names, the
  scenario's parameters and the files written are what is checked. `--device cuda` on a
  machine without CUDA must fail with exit 2 and say so. `gradmem compare` on a scenario
  starts two fresh processes (tests/test_compare.py runs those for real): here it is parsed
  and its -p values are checked against the scenario; comparing two traces runs.
- ```console blocks: `$ command`, then the output it prints. Every line must appear in the
  real output, in order; a line `...` stands for any number of lines.
- Inline `gradmem <command> --option` spans name a command and options that exist.
- `python -m gradmem ...` runs the same way; `python benchmarks/x.py` must name a file that
  exists; `pip install` lines are held to CI by test_readme.py.
"""
import re
import shlex
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from conftest import ROOT
from gradmem.cli import main
from gradmem.scenario import load_scenario, parse_params

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SMALL = {"n": "64", "d": "4", "batch": "8", "width": "4"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(lang: str) -> list[tuple[str, str]]:
    """[(where, text)] of the fenced blocks of one language in every doc."""
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m.group(1) == lang:
                out.append((f"{doc.name}:{text[:m.start()].count(chr(10)) + 1}", m.group(2)))
    return out


def commands_in(text: str) -> list[list[str]]:
    """The gradmem commands of a bash block, comments dropped, `a && b` split."""
    out = []
    for line in text.splitlines():
        for part in line.split("#")[0].split("&&"):
            words = shlex.split(part)
            if words[:3] == ["python", "-m", "gradmem"]:
                words = ["gradmem", *words[3:]]
            if words[:1] == ["gradmem"]:
                out.append(words[1:])
    return out


def shrink(args: list[str]) -> list[str]:
    out = []
    for a in args:
        name, sep, _ = a.partition("=")
        out.append(f"{name}={SMALL[name]}" if sep and name in SMALL and out and out[-1] == "-p" else a)
    return out


def invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def given_traces(args: list[str]) -> None:
    """A trace file a command reads that no earlier command wrote: profile the seed there."""
    for a in args:
        if a.endswith("trace.jsonl") and not Path(a).exists():
            folder = str(Path(a).parent)
            assert invoke(["profile", str(ROOT / "scenarios" / "seed_two_rows.py"), "-o", folder, "-q"]).exit_code == 0


def cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def scenario_params_ok(args: list[str]) -> None:
    """Parse a command with click and check its -p values against the scenario."""
    ctx = main.make_context("gradmem", list(args))
    sub = main.get_command(ctx, args[0])
    sub_ctx = sub.make_context(args[0], list(args[1:]))
    paths = sub_ctx.params.get("paths") or [sub_ctx.params.get("scenario")]
    parse_params(sub_ctx.params.get("params", ()), load_scenario(paths[0]))


def run_documented(args: list[str], where: str, ran_compare: list):
    args = [str(ROOT / a) if a.startswith("scenarios/") else a for a in shrink(args)]
    if args[0] == "compare" and args[1].endswith(".py"):   # two fresh processes: test_compare.py runs those
        scenario_params_ok(args)
        ran_compare.append(args)
        return None
    given_traces(args)
    result = invoke(args)
    if "--device" in args and args[args.index("--device") + 1] == "cuda" and "--fake" not in args and not cuda():
        assert result.exit_code == 2 and "CUDA is not available" in result.output, (where, args, result.output)
        return result
    assert result.exit_code == 0, f"{where}: gradmem {' '.join(args)} exited {result.exit_code}:\n{result.output}"
    return result


def test_every_bash_command_in_the_docs_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    found, ran_compare = [], []
    for where, text in blocks("bash"):
        for args in commands_in(text):
            found.append(args)
            result = run_documented(args, where, ran_compare)
            if result is not None and args[0] == "profile" and result.exit_code == 0 and "--help" not in args:
                out = Path(args[args.index("-o") + 1]) if "-o" in args else Path("reports") / Path(args[1]).stem
                # README: "report.html is the page to open first": every documented profile writes it
                assert (out / "report.html").exists(), f"{where}: gradmem {' '.join(args)} wrote no report.html"
    assert len(found) >= 10 and {a[0] for a in found} >= {"profile", "render", "export", "compare"}


def test_every_python_script_named_in_the_docs_exists():
    for where, text in blocks("bash"):
        for line in text.splitlines():
            words = shlex.split(line.split("#")[0]) if line.strip() else []
            if words[:1] == ["python"] and words[1:2] and words[1].endswith(".py"):
                assert (ROOT / words[1]).is_file(), f"{where}: {words[1]} does not exist"


def expected_lines(text: str) -> tuple[list[str], list[str]]:
    lines = text.rstrip("\n").splitlines()
    assert lines[0].startswith("$ "), f"a console block starts with its command: {lines[0]!r}"
    return shlex.split(lines[0][2:]), lines[1:]


def matches_in_order(expected: list[str], actual: list[str]) -> str | None:
    """None if every expected line is in `actual` in order (`...` skips lines), else the
    first line that is not."""
    i = 0
    for line in expected:
        if line.strip() == "...":
            continue
        while i < len(actual) and actual[i] != line:
            i += 1
        if i == len(actual):
            return line
        i += 1
    return None


CONSOLE = blocks("console")


@pytest.mark.parametrize("where,text", CONSOLE, ids=[w for w, _ in CONSOLE])
def test_sample_output_matches_the_current_code(where, text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command, expected = expected_lines(text)
    assert command[0] == "gradmem"
    args = [str(ROOT / a) if a.startswith("scenarios/") else a for a in command[1:]]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    actual = result.output.splitlines()
    missing = matches_in_order(expected, actual)
    assert missing is None, f"{where}: this line of the sample is not in the output:\n{missing}\n\nactual:\n{result.output}"


INLINE = re.compile(r"`gradmem (\w+)([^`]*)`")


def test_inline_commands_name_real_commands_and_options():
    for doc in DOCS:
        for m in INLINE.finditer(doc.read_text(encoding="utf-8")):
            command = main.commands.get(m.group(1))
            assert command is not None, f"{doc.name}: `gradmem {m.group(1)}` is not a command"
            known = {o for p in command.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}
            for opt in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", m.group(2)):
                assert opt in known, f"{doc.name}: `gradmem {m.group(1)}` has no option {opt}"


def test_docs_use_the_units_the_tool_prints():
    """gradmem prints KiB, MiB, GiB (units.human_bytes): the docs say the same."""
    for doc in DOCS:
        decimal = re.findall(r"\d [KMGT]B\b", doc.read_text(encoding="utf-8"))
        assert not decimal, f"{doc.name}: decimal units {decimal}; gradmem prints KiB, MiB, GiB"


def test_exit_codes_in_the_readme_match_the_cli(tmp_path):
    """Every exit code the CLI can return is in the README, and what it says of a scenario
    that fails to parse is what happens: no reports."""
    from gradmem.errors import GradmemError
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sentence = readme[readme.index("Exit codes:"):readme.index("Long runs print")]
    for cls in GradmemError.__subclasses__():
        assert f"{cls.exit_code} " in sentence, f"exit code {cls.exit_code} ({cls.__name__}) is not in the README"
    assert "fails to parse" in sentence or "failed to parse (nothing ran, so no reports are written" in sentence
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nx = (\n")
    result = invoke(["profile", str(broken), "-o", str(tmp_path / "out")])
    assert result.exit_code == 3 and f"{broken}:2" in result.output
    assert not (tmp_path / "out").exists()
