"""gradmem fit: the answer N fits and N+1 does not (checked by independent fake runs with the
full analysis), a real CPU run at N stays within the budget by the allocator's own record,
every bad input fails before (or at) the first run with a clear message, and every
--suggest claim is re-measured by pasting its code into a copy of the scenario."""
import csv
import json
import re

import pytest
from click.testing import CliRunner

from conftest import SCENARIOS
from gradmem.analysis import analyze
from gradmem.cli import main
from gradmem.fit import parse_budget
from gradmem.scenario import load_scenario, run_scenario

MLP_SMALL = ["-p", "width=64", "-p", "features=32", "-p", "depth=2"]
MLP_BUDGET = 2_000_000


def fit(*args):
    return CliRunner().invoke(main, ["fit", *map(str, args)], catch_exceptions=False)


def fake_peak(path, **params) -> int:
    """The oracle: one fake run and the whole analysis, not the search's short path."""
    session, failure = run_scenario(load_scenario(path), params, fake=True, verify=False)
    assert failure is None
    return int(analyze(session.trace).summary["peak_bytes"])


def read_rows(folder):
    with open(folder / "fit.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def mlp_fit(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "mlp"
    r = fit(SCENARIOS / "mlp.py", "--param", "batch", "--budget", f"{MLP_BUDGET}", *MLP_SMALL,
            "-p", "batch=4096", "--suggest", "-o", out)
    assert r.exit_code == 0, r.output
    return out, r.output, json.loads((out / "fit.json").read_text())


def test_mlp_answer_fits_and_the_next_value_does_not(mlp_fit):
    out, text, answer = mlp_fit
    n = answer["answer"]
    small = dict(width=64, features=32, depth=2)
    assert fake_peak(SCENARIOS / "mlp.py", batch=n, **small) <= MLP_BUDGET
    assert fake_peak(SCENARIOS / "mlp.py", batch=n + 1, **small) > MLP_BUDGET
    rows = {int(r["value"]): r for r in read_rows(out)}
    assert rows[n]["fits"] == "true" and rows[n + 1]["fits"] == "false"
    assert int(rows[n]["peak_bytes"]) == fake_peak(SCENARIOS / "mlp.py", batch=n, **small)
    assert f"batch={n:,} fits in" in text and f"margin" in text
    assert answer["margin_bytes"] == MLP_BUDGET - int(rows[n]["peak_bytes"])


def test_mlp_search_starts_at_the_wanted_value_then_narrows(mlp_fit):
    out, text, answer = mlp_fit
    values = [int(r["value"]) for r in read_rows(out)]
    n = answer["answer"]
    assert values[:2] == [4096, 1]                 # the wanted value does not fit: then 1, then narrowing
    assert n in values and n + 1 in values
    assert len(set(values[:-1])) == len(values) - 1 and values[-1] == 4096   # the wanted value, for --suggest
    # one progress line per run of the search
    assert len(re.findall(r"^gradmem fit: batch=[\d,]+: peak", text, re.M)) == len(values) - 1


def test_mlp_breakdown_by_role_adds_up(mlp_fit):
    out, _, _ = mlp_fit
    from gradmem.render.fit_page import ROLES as roles
    assert "parameter" in roles and "unattributed" not in roles
    for row in read_rows(out):
        assert sum(int(row[r]) for r in roles) == int(row["tensor_peak_bytes"]) == int(row["peak_bytes"])


def test_fake_answer_is_over_budget_for_real_by_mse_losss_buffer(mlp_fit):
    """Known limit (README): on CPU mse_loss keeps its mean on the batch * 4 B buffer of
    per-element losses, which fake tensors do not show; the fake answer is off by it."""
    _, _, answer = mlp_fit
    n = answer["answer"]
    real = _real_peak(SCENARIOS / "mlp.py", batch=n, width=64, features=32, depth=2)
    assert real - answer["answer_peak_bytes"] == 4 * n - 4


def _real_peak(path, **params) -> int:
    session, failure = run_scenario(load_scenario(path), params)
    assert failure is None
    a = analyze(session.trace)
    assert a.summary["allocator"]["source"]                       # the allocator's own record was read
    return int(a.steps["allocator_peak_bytes"].max())


def test_calibrated_mlp_real_run_at_the_answer_stays_within_budget(tmp_path):
    r = fit(SCENARIOS / "mlp.py", "--param", "batch", "--budget", f"{MLP_BUDGET}", *MLP_SMALL, "--calibrate",
            "-p", "batch=8", "-o", tmp_path / "c", "-q")
    assert r.exit_code == 0, r.output
    answer = json.loads((tmp_path / "c" / "fit.json").read_text())
    values = [int(row["value"]) for row in read_rows(tmp_path / "c")]
    assert values[:9] == [8 * 2 ** i for i in range(9)]     # 8 fits: doubling until 2048 does not
    n, (a, b), (ga, gb) = answer["answer"], answer["calibration"]["values"], answer["calibration"]["gaps_bytes"]
    small = dict(width=64, features=32, depth=2)
    for v in (a, b):                                        # each gap is a real run's, measured again here
        assert _real_peak(SCENARIOS / "mlp.py", batch=v, **small) - fake_peak(SCENARIOS / "mlp.py", batch=v, **small) == (ga, gb)[(a, b).index(v)]
    extra = lambda v: max(0, round(ga + (gb - ga) / (b - a) * (v - a)))  # noqa: E731
    assert fake_peak(SCENARIOS / "mlp.py", batch=n, **small) + extra(n) <= MLP_BUDGET
    assert fake_peak(SCENARIOS / "mlp.py", batch=n + 1, **small) + extra(n + 1) > MLP_BUDGET
    assert _real_peak(SCENARIOS / "mlp.py", batch=n, **small) <= MLP_BUDGET
    assert "plus what real CPU runs held beyond it" in r.output


def test_linear_answer(tmp_path):
    r = fit(SCENARIOS / "linear_mse.py", "--param", "n", "--budget", "1MB", "-p", "d=16", "-o", tmp_path / "lin", "-q")
    assert r.exit_code == 0, r.output
    n = json.loads((tmp_path / "lin" / "fit.json").read_text())["answer"]
    assert fake_peak(SCENARIOS / "linear_mse.py", n=n, d=16) <= 10 ** 6 < fake_peak(SCENARIOS / "linear_mse.py", n=n + 1, d=16)
    session, failure = run_scenario(load_scenario(SCENARIOS / "linear_mse.py"), dict(n=n, d=16))
    assert failure is None
    assert int(analyze(session.trace).steps["allocator_peak_bytes"].max()) <= 10 ** 6
    curve = json.loads((tmp_path / "lin" / "fit.json").read_text())["curve"]
    assert curve["kind"] == "linear" and curve["max_error"] < 0.02
    page = (tmp_path / "lin" / "fit.html").read_text()
    assert 'class="curve"' in page and "http" not in page.split("<footer>")[0].replace("http-equiv", "")


# -- suggestions, each re-measured from the printed code -------------------------------------
def _paste(tmp_path, code: str, after: str, source=SCENARIOS / "mlp.py"):
    lines = source.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if after in line)
    indent = re.match(r"\s*", lines[i]).group(0)
    pasted = lines[:i + 1] + [indent + c for c in code.splitlines()] + lines[i + 1:]
    path = tmp_path / "pasted.py"
    path.write_text("\n".join(pasted) + "\n")
    return path


def test_each_suggestion_peak_is_what_it_claims(mlp_fit, tmp_path):
    _, text, answer = mlp_fit
    suggestions = answer["suggestions"]
    assert [s["title"].split(" ")[0] for s in suggestions] == ["use", "bf16", "checkpoint", "checkpoint_sequential"]
    small = dict(width=64, features=32, depth=2)
    base = fake_peak(SCENARIOS / "mlp.py", batch=4096, **small)
    for s in suggestions:
        if s["title"].startswith("use"):
            measured = fake_peak(SCENARIOS / "mlp.py", batch=s["value"], **small)
        else:
            pasted = _paste(tmp_path, s["code"], "model = nn.Sequential")
            measured = fake_peak(pasted, batch=4096, **small)
        assert measured == s["peak_bytes"], s["title"]
        assert s["saves_bytes"] == base - measured
        assert s["fits"] == (measured <= MLP_BUDGET)
        assert s["code"].splitlines()[0] in text
    assert suggestions[1]["saves_bytes"] > 0          # bf16 halves the activations


def test_drop_retain_grad_suggestion(tmp_path):
    r = fit(SCENARIOS / "linear_mse.py", "--param", "n", "--budget", "1MB", "-p", "d=16", "-p", "retain=true",
            "-p", "n=20000", "--suggest", "-o", tmp_path / "lin", "-q")
    assert r.exit_code == 0, r.output
    s = next(x for x in json.loads((tmp_path / "lin" / "fit.json").read_text())["suggestions"]
             if x["title"] == "drop retain_grad()")
    line = int(re.search(r"linear_mse\.py:(\d+)", s["code"]).group(1))
    lines = (SCENARIOS / "linear_mse.py").read_text().splitlines()
    assert "retain_grad()" in lines[line - 1]
    lines[line - 1] = re.sub(r"\S.*", "pass", lines[line - 1])          # the line deleted
    (tmp_path / "no_retain.py").write_text("\n".join(lines) + "\n")
    measured = fake_peak(tmp_path / "no_retain.py", n=20000, d=16, retain=True)
    assert measured == s["peak_bytes"] < fake_peak(SCENARIOS / "linear_mse.py", n=20000, d=16, retain=True)


# -- errors: each before anything runs, or at the first run ---------------------------------
@pytest.mark.parametrize("args, words", [
    (["--param", "nope", "--budget", "1GB"], ["--param nope", "mlp.py:", "has no such parameter", "batch, width"]),
    (["--param", "batch", "--budget", "lots"], ["--budget 'lots'", "80GiB"]),
    (["--param", "batch", "--budget", "0"], ["more than 0 bytes"]),
    (["--param", "device", "--budget", "1GB"], ["takes device as str", "whole numbers"]),
    (["--param", "batch", "--budget", "1GB", "-p", "widht=3"], ["-p widht", "no such parameter"]),
    (["--param", "batch", "--budget", "1GB", "-p", "batch=0", "--suggest"], ["at least 1"]),
])
def test_bad_options_fail_before_any_run(tmp_path, args, words):
    r = CliRunner().invoke(main, ["fit", str(SCENARIOS / "mlp.py"), *args, "-o", str(tmp_path / "o")])
    assert r.exit_code == 2, r.output
    for w in words:
        assert w in r.output
    assert not (tmp_path / "o").exists()          # nothing ran, nothing written


def test_no_main(tmp_path):
    r = fit(SCENARIOS / "seed_two_rows.py", "--param", "n", "--budget", "1GB", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "defines no main()" in r.output


def test_budget_below_the_fixed_part_says_what_it_is(tmp_path):
    r = fit(SCENARIOS / "mlp.py", "--param", "batch", "--budget", "40000", *MLP_SMALL, "-o", tmp_path / "o", "-q")
    assert r.exit_code == 2, r.output
    params = 4 * (32 * 64 + 64 + 64 * 64 + 64 + 64 + 1)
    assert "too small for even batch=1" in r.output
    assert f"parameter {params / 1024:.1f} KiB" in r.output and f"param_grad {params / 1024:.1f} KiB" in r.output
    assert f"{2 * params:,} B" in r.output
    assert [r["value"] for r in read_rows(tmp_path / "o")] == ["4096", "1"]   # what ran is written


def test_data_dependent_code_names_the_line(tmp_path):
    script = tmp_path / "item.py"
    script.write_text("import torch\n\n\ndef main(n: int = 4):\n    x = torch.randn(n, requires_grad=True)\n"
                      "    if x.sum().item() > 0:\n        pass\n    (x * 2).sum().backward()\n")
    r = fit(script, "--param", "n", "--budget", "1GB", "-o", tmp_path / "o")
    assert r.exit_code == 3, r.output
    assert "item.py:6" in r.output and "needs a tensor's value" in r.output


def test_folder_not_gradmems(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    r = fit(SCENARIOS / "mlp.py", "--param", "batch", "--budget", "1GB", "-o", tmp_path)
    assert r.exit_code == 2 and "--force" in r.output and (tmp_path / "mine.txt").exists()


def test_budget_units():
    assert parse_budget("80GiB") == 80 * 2 ** 30
    assert parse_budget("24GB") == 24 * 10 ** 9
    assert parse_budget("1.5 MB") == 1_500_000
    assert parse_budget("1_000") == 1000


def test_cuda_compares_the_reserved_bytes_of_the_allocator_model(tmp_path):
    r = fit(SCENARIOS / "linear_mse.py", "--param", "n", "--budget", "5MiB", "-p", "d=16", "--device", "cuda",
            "-o", tmp_path / "cu", "-q")
    assert r.exit_code == 0, r.output
    assert "reserved peak of the CUDA caching allocator model" in r.output
    n = json.loads((tmp_path / "cu" / "fit.json").read_text())["answer"]

    def reserved(v):
        session, failure = run_scenario(load_scenario(SCENARIOS / "linear_mse.py"), dict(n=v, d=16), "cuda",
                                        fake=True, verify=False)
        assert failure is None
        return analyze(session.trace).summary["cuda_allocator"]["reserved_peak_bytes"]
    assert reserved(n) <= 5 * 2 ** 20 < reserved(n + 1)
    rows = {int(r["value"]): r for r in read_rows(tmp_path / "cu")}
    assert int(rows[n]["peak_bytes"]) == int(rows[n]["reserved_peak_bytes"]) > int(rows[n]["tensor_peak_bytes"])


# -- the curve, on hand-made points (no torch) -----------------------------------------------
def _points(peaks):
    from gradmem.analysis.fit import Point
    return [Point(v, b, True, b, {}) for v, b in peaks.items()]


def test_curve_linear_quadratic_or_none():
    from gradmem.analysis.fit import fit_curve
    line = fit_curve(_points({v: 1000 + 96 * v for v in (1, 2, 4, 8, 16, 32)}))
    assert line.kind == "linear" and abs(line.coefs[1] - 96) < 1e-6 and abs(line(100) - 10600) < 1e-6
    square = fit_curve(_points({v: 5000 + 10 * v + 3 * v * v for v in (1, 2, 4, 8, 16, 32, 64)}))
    assert square.kind == "quadratic" and abs(square.coefs[2] - 3) < 1e-6
    stairs = fit_curve(_points({1: 2 << 20, 2: 2 << 20, 4: 2 << 20, 8: 22 << 20, 16: 22 << 20}))
    assert stairs is None


def test_checkpointing_blocks_saves_what_it_claims(tmp_path):
    blocks = SCENARIOS.parent / "tests" / "fit_programs" / "blocks.py"
    r = fit(blocks, "--param", "batch", "--budget", "3MB", "--suggest", "-o", tmp_path / "b", "-q")
    assert r.exit_code == 0, r.output
    s = next(x for x in json.loads((tmp_path / "b" / "fit.json").read_text())["suggestions"]
             if x["title"].startswith("checkpoint"))
    assert "'layers.0', 'layers.1', 'layers.2', 'layers.3'" in s["code"]
    measured = fake_peak(_paste(tmp_path, s["code"], "net = Net(d, depth)", blocks), batch=512)
    assert measured == s["peak_bytes"] and s["saves_bytes"] == fake_peak(blocks, batch=512) - measured > 0
