"""Multi-process runs on CPU with gloo: two real ranks per test, started through torch's
own launcher (``gradmem profile --nproc-per-node 2`` and plain ``torchrun -m gradmem``).
Each launch is bounded by a timeout that kills the whole process group. Oracles: the
CPU allocator's own record per rank, numel * element_size of the batches and of FSDP2's
shards (dim 0 split in world-size chunks, padded to equal size)."""
import json
import math
import os
import pickle
import signal
import subprocess
import sys

import pandas as pd
import pytest
from click.testing import CliRunner

from conftest import ROOT, SCENARIOS
from browser import assert_clean_offline, browser, open_page, screenshot  # noqa: F401 (fixture)
from gradmem.cli import main

DISTRIBUTED = SCENARIOS / "distributed"
LAUNCH_TIMEOUT_S = 240
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GRADMEM_MERGE_WAIT": "60"}


def launch(*args):
    """Run a command in its own session; on timeout kill every process of it (the ranks too)."""
    proc = subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc.returncode, out, err


def ranks_csv(folder):
    return pd.read_csv(folder / "ranks.csv").set_index("rank")


def tensors(folder, rank):
    return pd.read_csv(folder / f"rank{rank}" / "tensors.csv", keep_default_na=False)


def meta(folder, rank):
    with open(folder / f"rank{rank}" / "trace.jsonl") as f:
        return json.loads(f.readline())


@pytest.fixture(scope="module")
def ddp(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "job"
    code, stdout, stderr = launch("-m", "gradmem", "profile", "--nproc-per-node", "2", DISTRIBUTED / "ddp.py",
                                  "-o", out, "-p", "bucket_view=true")
    assert code == 0, stderr[-3000:]
    return out, stdout


def test_ddp_each_rank_writes_its_own_report_with_rank_metadata(ddp):
    out, stdout = ddp
    for r in (0, 1):
        assert (out / f"rank{r}" / "report.html").is_file()
        d = meta(out, r)["distributed"]
        assert (d["rank"], d["local_rank"], d["world_size"], d["backend"], d["device"]) == (r, r, 2, "gloo", "cpu")
        assert d["host"] and d["run_id"] == meta(out, 0)["distributed"]["run_id"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".rank")]   # no staging folders left
    assert "gradmem: ddp on 2 ranks (gloo, cpu)" in stdout and "worst rank: 1" in stdout


def test_ddp_rank_with_the_larger_batch_peaks_higher_and_the_report_says_why(ddp):
    out, stdout = ddp
    ranks = ranks_csv(out)
    assert ranks.loc[1, "peak_bytes"] > ranks.loc[0, "peak_bytes"]
    for r in (0, 1):   # each rank's peak is its allocator's, and gradmem's storages explain all of it
        assert ranks.loc[r, "tracked_peak_bytes"] == ranks.loc[r, "allocator_peak_bytes"] == ranks.loc[r, "peak_bytes"]
    # rank 1 has 64 more rows of batch: x (64 x 64 floats) and y (64 x 1), and at its peak
    # (the first layer's backward) the ReLU output saved for backward is 64 x 256 floats bigger
    assert ranks.loc[1, "diff_input"] == 64 * 64 * 4 + 64 * 4
    assert ranks.loc[1, "diff_activation"] == 64 * 256 * 4
    assert ranks.loc[1, "diff_comm_buffer"] == 0 and ranks.loc[1, "diff_parameter"] == 0
    page = (out / "report.html").read_text()
    # the ReLU's output, named by its module (DDP holds the model as .module)
    assert "Why rank 1 differs from the median rank (0)" in page and "<code>module.1: output</code> (128, 256)" in page
    assert "activation: +64.0 KiB on rank 1" in stdout


def test_ddp_buckets_are_comm_buffers_counted_once(ddp):
    out, _ = ddp
    param_bytes = (64 * 256 + 256 + 256 + 1) * 4
    for r in (0, 1):
        t = tensors(out, r)
        touched = t[t["collective"] != ""]
        assert len(touched) and (touched["role"] != "input").all()
        buckets = t[t["collective"].str.contains("allreduce_")]
        assert set(buckets["role"]) == {"comm_buffer"} and set(buckets["nbytes"]) == {param_bytes}
        # gradient_as_bucket_view: every .grad is a view of the bucket, so no grad storage of its own
        assert not (t["role"] == "param_grad").any()
        named = t[t["name"].str.endswith(".grad")]
        assert set(named["role"]) <= {"comm_buffer"}


def test_ddp_exports_have_one_process_and_one_device_trace_per_rank(ddp):
    out, _ = ddp
    events = json.loads((out / "trace.chrome.json").read_text())["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    assert sorted(names) == [1, 2] and names[1].startswith("rank 0:") and names[2].startswith("rank 1:")
    snap = pickle.loads((out / "memory_viz.pickle").read_bytes())
    assert len(snap["device_traces"]) == 2
    for r in (0, 1):   # every storage of the rank's own report is an allocation in its trace
        sizes = sorted(e["size"] for e in snap["device_traces"][r] if e["action"] == "alloc" and e["size"])
        t = tensors(out, r)
        assert sizes == sorted(t.loc[t["nbytes"] > 0, "nbytes"])


def test_merge_again_with_a_missing_rank(ddp, tmp_path):
    out, _ = ddp
    copy = tmp_path / "job"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    subprocess.run(["rm", "-r", str(copy / "rank1")], check=True)
    result = CliRunner().invoke(main, ["merge", str(copy)])
    assert result.exit_code == 0, result.output
    assert "rank 1: missing" in result.output
    ranks = ranks_csv(copy)
    assert ranks.loc[1, "status"].startswith("missing") and ranks.loc[0, "status"] == "complete"


def sharded_bytes(shape, world=2, itemsize=4):
    """FSDP2 splits dim 0 into ``world`` chunks, each padded to the largest one."""
    return math.ceil(shape[0] / world) * math.prod(shape[1:]) * itemsize


FSDP2_SHAPES = [(256, 64), (256,), (64, 256), (64,), (1, 64), (1,)]      # fsdp2.py's MLP parameters, as built


def test_fsdp2_sharded_and_unsharded_parameter_bytes(tmp_path):
    out = tmp_path / "job"
    code, stdout, stderr = launch("-m", "gradmem", "profile", "--nproc-per-node", "2", DISTRIBUTED / "fsdp2.py",
                                  "-o", out, "-p", "steps=1")
    assert code == 0, stderr[-3000:]
    shards = sorted(sharded_bytes(s) for s in FSDP2_SHAPES)
    ranks = ranks_csv(out)
    for r in (0, 1):
        t = tensors(out, r)
        assert sorted(t.loc[t["role"] == "sharded_param", "nbytes"]) == shards
        # each all-gathered parameter is every rank's padded shard side by side
        assert set(t.loc[t["role"] == "unsharded_param", "nbytes"]) == {2 * b for b in shards}
        assert set(t.loc[t["collective"] != "", "role"]) <= {"comm_buffer", "sharded_grad"}
        assert (t.loc[t["role"] == "sharded_grad", "collective"] == "_reduce_scatter_base_").all()
        assert not (t["created_by"] == "(before capture)").any()   # nothing counted as if made before the run
        # the rank's peak is its allocator's: gradmem's storages plus the few bytes kernels
        # allocated themselves at that moment, and the roles add up to it
        allocator = json.loads((out / f"rank{r}" / "summary.json").read_text())["allocator"]
        assert ranks.loc[r, "peak_bytes"] == ranks.loc[r, "allocator_peak_bytes"] == allocator["peak_bytes"]
        assert 0 <= ranks.loc[r, "peak_bytes"] - ranks.loc[r, "tracked_peak_bytes"] <= allocator["unattributed_at_peak"]
        roles = [c for c in ranks.columns if c.startswith("peak_") and c not in
                 ("peak_bytes", "peak_source", "peak_step", "peak_op", "peak_phase", "peak_x")]
        assert ranks.loc[r, roles].sum() == ranks.loc[r, "peak_bytes"]
        assert ranks.loc[r, "peak_sharded_param"] == sum(shards)


FAILING = """
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


def main():
    dist.init_process_group("gloo")
    model = DDP(nn.Linear(8, 4))
    model(torch.randn(4, 8)).sum().backward()
    if dist.get_rank() == 1:
        raise RuntimeError("rank 1 gives up")
    dist.destroy_process_group()
"""


def test_a_raising_rank_under_torchrun(tmp_path):
    scenario = tmp_path / "failing.py"
    scenario.write_text(FAILING)
    out = tmp_path / "job"
    code, stdout, stderr = launch("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                                  "-m", "gradmem", "profile", scenario, "-o", out)
    assert code != 0
    ranks = ranks_csv(out)
    assert ranks.loc[0, "status"] == "complete" and ranks.loc[1, "status"] == "partial"
    s1 = json.loads((out / "rank1" / "summary.json").read_text())
    assert s1["error"]["type"] == "RuntimeError" and s1["error"]["line"] == 13
    assert "rank 1 is partial" in stdout and "rank 1 gives up" in stdout   # rank 0 printed the merge
    assert stdout.count("gradmem:") == 1                                     # and rank 1 printed nothing
    assert (out / "report.html").is_file() and (out / "rank0" / "report.html").is_file()


# -- the merge's arithmetic, on hand-built frames (no launch) ------------------------------------
def test_logical_clock_puts_each_anchor_at_the_same_x_on_every_rank():
    from gradmem.analysis.ranks import logical_x
    # rank a: 2 steps, an all-reduce in step 2, 3 steps; rank b: 4 steps, the all-reduce in step 4, 1 step
    a = logical_x(pd.DataFrame({"step": [0, 1, 2, 3, 4, 5]}), pd.Series([2]))
    b = logical_x(pd.DataFrame({"step": [0, 1, 2, 3, 4, 5]}), pd.Series([4]))
    assert list(a) == [0, 0.5, 1, 1 + 1 / 4, 1 + 2 / 4, 1 + 3 / 4]
    assert list(b) == [0, 0.25, 0.5, 0.75, 1, 1.5]
    assert a[2] == b[4] == 1          # the step holding the collective: x = 1 on both


def test_median_rank_and_headroom():
    from gradmem.analysis.ranks import headroom, pick_median
    ranks = pd.DataFrame({"rank": [0, 1, 2, 3], "peak_bytes": [10.0, 40.0, 20.0, None],
                          "device": ["cpu", "cpu", "cuda:0", "cpu"], "host": ["a", "a", "b", "b"],
                          "capacity_bytes": [100.0, 100.0, 50.0, 100.0]})
    assert pick_median(ranks) == 2                       # peaks 10, 20, 40 (rank 3 has none): the middle one
    room = headroom(ranks)
    assert list(room[:3]) == [50.0, 50.0, 30.0]          # host a's CPU ranks share 100: 100 - 10 - 40


STOPPED = """
import os
import signal
import torch

w = torch.randn(8, requires_grad=True)
(w * 2).sum().backward()
os.kill(os.getpid(), signal.SIGTERM)     # what torchrun sends every rank when one fails
never = torch.ones(3)
"""


def test_a_rank_stopped_by_sigterm_writes_its_partial_report(tmp_path, monkeypatch):
    """In-process: the environment of rank 0 of a one-rank torchrun job, no process group."""
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "TORCHELASTIC_RUN_ID": "t1"}.items():
        monkeypatch.setenv(key, value)
    scenario = tmp_path / "stopped.py"
    scenario.write_text(STOPPED)
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(main, ["profile", str(scenario), "-o", str(tmp_path / "job")])
    assert result.exit_code == 3
    assert "RankStopped: stopped by SIGTERM" in result.output
    s = json.loads((tmp_path / "job" / "rank0" / "summary.json").read_text())
    assert s["status"] == "partial" and s["error"]["line"] == 8 and s["backward_nodes"] >= 1
    assert ranks_csv(tmp_path / "job").loc[0, "status"] == "partial"      # rank 0 merged its one-rank job
    assert signal.getsignal(signal.SIGTERM) is before                     # gradmem's handler is gone


@pytest.mark.parametrize("args, message", [
    (["--nproc-per-node", "0"], "give at least 1"),
    (["--nproc-per-node", "2", "--fake"], "--fake with --nproc-per-node"),
    (["--nproc-per-node", "2", "--format", "nope"], "unknown report format"),
])
def test_launcher_options_are_checked_before_anything_runs(tmp_path, args, message):
    result = CliRunner().invoke(main, ["profile", str(DISTRIBUTED / "ddp.py"), "-o", str(tmp_path / "job"), *args])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "job" / "rank0").exists()


def test_launcher_leaves_a_folder_it_did_not_write_alone(tmp_path):
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["profile", str(DISTRIBUTED / "ddp.py"), "-o", str(tmp_path / "job"),
                                       "--nproc-per-node", "2"])
    assert result.exit_code == 2 and "gradmem did not write" in result.output
    assert [p.name for p in (tmp_path / "job").iterdir()] == ["notes.txt"]


def test_ddp_merged_page_draws_every_rank_offline(ddp, browser):
    out, _ = ddp
    page = out / "report.html"
    open_page(browser, page)   # a fresh browser logs its own start-up (chrome:// pages) on the first load
    open_page(browser, page)
    assert_clean_offline(browser, page)
    lines = browser.execute_script("return document.querySelectorAll('#lanes-box path.lane-line').length")
    rows = browser.execute_script("return document.querySelectorAll('#ranks-table tbody tr').length")
    worst = browser.execute_script("return document.querySelector('#ranks-table tr.worst td').textContent")
    assert (lines, rows, worst) == (2, 2, "1")
    screenshot(browser, "ranks-ddp.png")


def test_fsdp2_ranks_run_the_engine_asked_for(tmp_path, native):
    """``--engine`` reaches every rank, and the native engine reads past the parameter
    storages FSDP2 frees by resizing them to nothing."""
    out = tmp_path / "job"
    code, stdout, stderr = launch("-m", "gradmem", "profile", "--nproc-per-node", "2", DISTRIBUTED / "fsdp2.py",
                                  "-o", out, "-p", "steps=1", "--engine", "native")
    assert code == 0, stderr[-3000:]
    for r in (0, 1):
        m = meta(out, r)
        assert (m["capture_engine"], m["status"]) == ("native", "complete"), m["engine_reason"]
        t = tensors(out, r)
        assert sorted(t.loc[t["role"] == "sharded_param", "nbytes"]) == sorted(sharded_bytes(s) for s in FSDP2_SHAPES)
