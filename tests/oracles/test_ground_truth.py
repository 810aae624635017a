"""gradmem against the CPU allocator's own record, after every step, and the RSS track."""
import json

import pytest
import torch
from torch import nn

from conftest import SCENARIOS, run_cli
from gradmem.analysis import analyze
from gradmem.capture import Capture
from gradmem.trace import EventKind, read_trace, write_trace
from oracles import allocator_peak, allocator_record
from test_oracles import linear_mse, mlp_step


def conv_bn_step(batch=8):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 30 * 30, 1))
    x, y = torch.randn(batch, 3, 32, 32), torch.randn(batch, 1)
    nn.functional.mse_loss(model(x), y).backward()
    return model


MODELS = [linear_mse, mlp_step, conv_bn_step]
IDS = ["linear_mse", "mlp", "conv_bn"]


def captured(fn, engine: str = "python"):
    with Capture(engine=engine) as cap:
        fn()
    return cap.trace, analyze(cap.trace)


@pytest.mark.parametrize("fn", MODELS, ids=IDS)
def test_tracked_plus_unattributed_is_the_allocator_total_after_every_step(fn):
    trace, a = captured(fn)
    s = a.steps
    assert s["allocator_bytes"].notna().all()
    off = s[s["live_bytes"] + s["live_unattributed"] != s["allocator_bytes"]]
    assert off.empty, off[["step", "op", "live_bytes", "live_unattributed", "allocator_bytes"]].to_string()
    assert a.summary["allocator"]["agrees"]
    # the last step's total is the allocator's own running total, net of the capture
    ev = sorted((e for e in trace.events if e.kind == EventKind.ALLOCATOR), key=lambda e: e.t_ns)
    before = ev[0].get("total") - ev[0].get("nbytes")
    assert s["allocator_bytes"].iloc[-1] == ev[-1].get("total") - before


@pytest.mark.parametrize("fn", MODELS, ids=IDS)
def test_allocator_peak_is_the_same_as_in_a_run_without_gradmem(fn):
    _, bare = allocator_record(fn)
    _, a = captured(fn)
    assert a.summary["allocator"]["peak_bytes"] == allocator_peak(bare)


def test_convolution_buffers_are_unattributed_and_named_by_their_op():
    _, a = captured(conv_bn_step)
    al, steps = a.summary["allocator"], a.steps
    blocks = al["unattributed_blocks"]
    conv_ops = {"convolution", "ConvolutionBackward0", "native_batch_norm", "NativeBatchNormBackward0"}
    assert blocks and blocks[0]["op"] in conv_ops, blocks
    # scratch inside the kernel: taken and given back within the op that made it
    assert blocks[0]["free_step"] == blocks[0]["step"]
    # the hooks never see it, the allocator does; counting it closes the gap exactly
    assert al["peak_bytes"] == a.summary["peak_bytes"] > a.summary["tracked_peak_bytes"]
    assert al["peak_with_unattributed"] == al["peak_bytes"]
    row = steps[steps["step"] == blocks[0]["step"]].iloc[0]
    assert row["allocator_peak_bytes"] >= row["live_bytes"] + blocks[0]["nbytes"]


def test_plain_linear_model_leaves_nothing_unattributed_between_steps():
    _, a = captured(linear_mse)
    assert a.summary["allocator"]["unattributed_at_end"] == 0
    assert a.summary["allocator"]["blocks_matched"] > 0


def test_reconciliation_is_redone_from_the_trace_file(tmp_path):
    trace, a = captured(conv_bn_step)
    again = analyze(read_trace(write_trace(trace, tmp_path / "trace.jsonl")))
    cols = ["step", "live_bytes", "live_unattributed", "allocator_bytes", "allocator_peak_bytes", "rss_bytes"]
    assert again.steps[cols].equals(a.steps[cols])
    assert again.summary["allocator"] == a.summary["allocator"]


def test_clock_alignment_is_recorded_and_tight():
    trace, _ = captured(linear_mse)
    clock = [e for e in trace.events if e.kind == EventKind.CLOCK]
    assert len(clock) == 1 and clock[0].get("method") == "markers"
    assert clock[0].get("markers") == 6
    assert 0 <= clock[0].get("error_ns") < 1_000_000   # well under a millisecond


def test_the_native_record_needs_no_alignment(native):
    """The extension stamps allocations with the clock the hooks read: said so, error 0."""
    trace, a = captured(linear_mse, engine="native")
    clock = [e for e in trace.events if e.kind == EventKind.CLOCK]
    assert len(clock) == 1 and clock[0].get("method") == "same clock" and clock[0].get("error_ns") == 0
    assert a.summary["allocator"]["agrees"] is True


def test_rss_is_sampled_by_time_not_per_op():
    trace, a = captured(mlp_step)
    samples = [e for e in trace.events if e.kind == EventKind.RSS]
    steps = [e for e in trace.events if e.kind == EventKind.STEP]
    span_s = (max(e.t_ns for e in trace.events if e.kind == EventKind.STEP) - steps[0].t_ns) / 1e9
    assert 2 <= len(samples) <= span_s / 0.01 + 3
    assert (a.steps["rss_bytes"] > 0).all()
    rss = a.summary["rss"]
    assert rss["peak_bytes"] >= max(rss["start_bytes"], rss["end_bytes"])


def test_inside_another_profiler_the_capture_says_it_has_no_allocator_record():
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True):
        with Capture() as cap:
            linear_mse(n=100, d=4)
    a = analyze(cap.trace)
    assert a.steps["allocator_bytes"].isna().all()
    assert any("another torch profiler" in n for n in a.summary["notes"])


def test_cli_reports_allocator_and_rss_and_no_verify_turns_it_off(tmp_path):
    proc = run_cli("profile", SCENARIOS / "mlp.py", "-p", "batch=64", "-p", "width=32", "-o", tmp_path / "on", check=True)
    assert "as the allocator counts it" in proc.stdout and "resident memory (RSS)" in proc.stdout
    summary = json.loads((tmp_path / "on" / "summary.json").read_text())
    assert summary["allocator"]["agrees"] is True and summary["rss"]["peak_bytes"] > 0
    run_cli("profile", SCENARIOS / "mlp.py", "-p", "batch=64", "-p", "width=32", "-o", tmp_path / "off", "--no-verify", "-q",
            check=True)
    summary = json.loads((tmp_path / "off" / "summary.json").read_text())
    assert summary["allocator"] == {"source": None}


def test_cuda_readings_become_allocator_reserved_and_unattributed_columns():
    """Hand-built CUDA events (runs without a GPU): readings after each step."""
    from gradmem.trace import Event, Meta, Trace
    mib = 1 << 20

    def alloc(seq, step, sid, nbytes):
        return Event(seq, seq, "alloc", step, {"storage": sid, "nbytes": nbytes, "device": "cuda:0", "dtype": "float32",
                                               "shape": [nbytes // 4], "op": "empty", "preexisting": False,
                                               "factory": True, "value": None, "ptr": 4096 * sid})

    def reading(seq, step, allocated):
        return Event(seq, seq, "device_memory", step, {"device": "cuda:0", "allocated": allocated, "reserved": 2 * mib})

    events = (reading(0, 0, 0), Event(1, 1, "step", 1, {"phase": "forward", "op": "empty"}), alloc(2, 1, 1, 1000),
              reading(3, 1, 1024 + 4096), Event(4, 4, "step", 2, {"phase": "forward", "op": "empty"}),
              alloc(5, 2, 2, 512), Event(6, 6, "free", 2, {"storage": 1}), reading(7, 2, 512))
    a = analyze(Trace(Meta(device="cuda"), events))
    s = a.steps.set_index("step")
    assert list(s["allocator_bytes"]) == [0, 5120, 512]
    assert list(s["reserved_bytes"]) == [2 * mib] * 3
    assert list(s["live_unattributed"]) == [0, 5120 - 1000, 0]   # rounding and a cuBLAS-like workspace
    al = a.summary["allocator"]
    assert al["source"].startswith("cuda") and al["agrees"]
    assert al["peak_bytes"] == 5120 and al["reserved_gap_at_peak"] == 2 * mib - 5120


def test_conv_scenario_names_its_kernel_buffers_in_summary_and_terminal(tmp_path):
    proc = run_cli("profile", SCENARIOS / "conv_bn.py", "-p", "batch=4", "-o", tmp_path, check=True)
    al = json.loads((tmp_path / "summary.json").read_text())["allocator"]
    assert al["agrees"] and al["unattributed_blocks"][0]["op"] in {"convolution", "ConvolutionBackward0"}
    assert al["peak_with_unattributed"] == al["peak_bytes"]
    assert "largest unattributed block" in proc.stdout


def test_under_fake_tensors_the_allocator_record_is_left_out_and_said_so():
    import warnings
    from torch._subclasses.fake_tensor import FakeTensorMode
    with warnings.catch_warnings(record=True) as caught, FakeTensorMode():
        warnings.simplefilter("always")
        with Capture() as cap:
            w = torch.randn(1000, 100, requires_grad=True)
            (w * 2).sum().backward()
    a = analyze(cap.trace)
    assert a.summary["allocator"] == {"source": None}
    assert any("could not be aligned" in n for n in a.summary["notes"])
    assert not [w for w in caught if "data pointer of FakeTensor" in str(w.message)]


def test_a_native_capture_inside_the_program_s_fake_mode_records_on_the_python_engine(native):
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        with Capture(engine="native") as cap:
            w = torch.randn(1000, 100, requires_grad=True)
            (w * 2).sum().backward()
    assert cap.trace.meta.capture_engine == "python" and "fake tensors" in cap.trace.meta.engine_reason
    assert analyze(cap.trace).tensors["nbytes"].max() == 1000 * 100 * 4
