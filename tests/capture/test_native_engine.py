"""The native capture engine against the Python one: the same storages, bytes, roles,
saved_by, frees and peak on every bundled scenario and on the property-test programs.

The extension is built once per torch version and source into gradmem's cache (about 30 s
of CPU the first time, shared by every later test run); without a C++ compiler these tests
skip with that reason, and one test checks that the run then falls back to the Python
engine and says so.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from gradmem.analysis import analyze
from gradmem.capture import Capture
from gradmem.capture.native import choose, loader
from gradmem.cli import main
from gradmem.scenario import load_scenario, run_scenario
from oracles import allocator_peak, allocator_record
from programs import KINDS, SMALL, build

ROOT = Path(__file__).resolve().parents[2]
SMALL_PARAMS = {
    "seed_one_weight": {}, "seed_two_weights": {}, "seed_two_rows": {},
    "linear_mse": {"n": 1000, "d": 16}, "one_weight_scaled": {"n": 1000}, "two_weights_scaled": {"d": 1000},
    "mlp": {"batch": 8, "width": 16, "depth": 3, "features": 8}, "conv_bn": {"batch": 2, "channels": 4, "size": 8},
}


def facts(a) -> dict:
    """What both engines must agree on, without gradmem's ids (drawn in different orders).
    Zero-byte storages never reach an allocator, so only the Python engine lists them."""
    t = a.tensors[a.tensors["nbytes"] > 0]
    rows = sorted(zip(t["role"], t["nbytes"], t["created_by"], t["saved_by"], t["free_step"].isna(),
                      t["dtype"], t["shape"], t["value"].astype(str), t["unpacked_by"], t["source"].astype(str),
                      t["made_at"]))
    s, n = a.summary, a.nodes   # each node's rule on the recorded numbers, checked against torch's gradient
    rules = sorted(zip(n["name"], n["rule"], n["rule_values"], n["rule_check"], n["saved_for"]))
    return {"storages": rows, "peak_bytes": s["peak_bytes"], "peak_by_role": s["peak_by_role"],
            "at_end": s["bytes_by_role_at_end"], "rules": rules}


def run(path: Path, params: dict, engine: str):
    cap, failure = run_scenario(load_scenario(path), params, engine=engine)
    assert failure is None, failure
    return cap


@pytest.mark.parametrize("name", sorted(SMALL_PARAMS))
def test_scenario_same_on_both_engines(native, name):
    path = ROOT / "scenarios" / f"{name}.py"
    py, nat = run(path, SMALL_PARAMS[name], "python"), run(path, SMALL_PARAMS[name], "native")
    assert py.trace.meta.capture_engine == "python"
    assert nat.trace.meta.capture_engine == "native", nat.trace.meta.engine_reason
    assert facts(analyze(nat.trace)) == facts(analyze(py.trace))
    if name.startswith("seed_"):   # the learner's hand derivations, worked on the recorded numbers
        checks = [c for *_, c, _s in facts(analyze(nat.trace))["rules"] if c]
        assert checks and set(checks) == {"matches torch"}
        # and the same steps: none for gradmem's own reads (a retained grad's values, a
        # wrapped scalar's), torch.tensor(...) as the one lift_fresh step the Python engine sees
        ops = {e: analyze(c.trace).steps[["phase", "op"]].values.tolist() for e, c in (("python", py), ("native", nat))}
        assert ops["native"] == ops["python"]


@pytest.mark.parametrize("name", ["mlp", "conv_bn"])
def test_module_attribution_same_on_both_engines(native, name):
    """Every storage's module and source line, also the gradients backward makes: the
    native engine discovers nodes at the backward call and puts each back at the op that
    made it, inside its module's span; it reads the user's line from Python's frames in C++
    at each top-level op."""
    path = ROOT / "scenarios" / f"{name}.py"

    def modules(engine):
        t = analyze(run(path, SMALL_PARAMS[name], engine).trace).tensors
        t = t[t["nbytes"] > 0]
        return sorted(zip(t["role"], t["nbytes"], t["created_by"], t["module"].astype(str), t["source"].astype(str)))
    nat = modules("native")
    assert nat == modules("python")
    assert sum(m.startswith("model.") for *_, m, _s in nat) > len(nat) // 2
    assert sum(s.startswith(f"{path}:") for *_, s in nat) > len(nat) // 2


def test_the_module_wrapper_in_c_records_what_the_python_one_does(native, monkeypatch):
    """The native engine wraps ``Module._call_impl`` in C (recorder.cpp, ModuleCall): the
    same spans as modules.py's Python wrapper, also when a forward raises (its span closes,
    the exception reaches the program unchanged) and for modules called after it."""
    from gradmem.capture.native import engine as native_engine

    class Fails(torch.nn.Module):
        def forward(self, x):
            raise ValueError("the program's own error")

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    fails, x = Fails(), torch.randn(2, 4)

    def spans():
        model.zero_grad(set_to_none=True)
        with Capture(engine="native") as cap:
            wrapper = type(torch.nn.Module.__dict__["_call_impl"]).__name__
            with pytest.raises(ValueError, match="the program's own error"):
                fails(model(x))
            model(x).sum().backward()
        a = analyze(cap.trace)
        t = a.tensors[a.tensors["nbytes"] > 0]
        return wrapper, a.modules.to_dict("records"), sorted(zip(t["role"], t["nbytes"], t["module"].astype(str)))
    in_c, modules, tensors = spans()
    monkeypatch.setattr(native_engine.NativeRecorder, "module_call", None)
    in_python, *same = spans()
    assert (in_c, in_python) == ("ModuleCall", "function")
    assert same == [modules, tensors]
    assert {m for *_, m in tensors} >= {"model.0", "model.1"}


@pytest.mark.parametrize("raised", [RuntimeError, KeyboardInterrupt])
def test_the_c_module_wrapper_says_its_own_failure_and_lets_an_interrupt_through(native, monkeypatch, raised):
    """A failure inside the C wrapper's own calls (here the progress tick at a module's
    start) is gradmem's: noted once, and the program runs on. A KeyboardInterrupt there is
    the program's, as in modules.py (which catches Exception only): it propagates, and the
    module's forward does not run."""
    from gradmem.capture.native import engine as native_engine
    torch.manual_seed(0)
    lin, x = torch.nn.Linear(3, 3), torch.randn(2, 3)
    forwards = []
    lin.register_forward_pre_hook(lambda *_: forwards.append(1))

    armed = []

    def tick(self, phase=None, now=False):
        if armed:
            raise raised("a failure of gradmem's")
    monkeypatch.setattr(native_engine.NativeRecorder, "progress", tick)
    with Capture(engine="native", on_progress=lambda *_: None) as cap:
        lin(x)   # named here, through Python
        armed.append(1)
        forwards.clear()
        if raised is KeyboardInterrupt:
            with pytest.raises(KeyboardInterrupt):
                lin(x)
            assert forwards == []
        else:
            out = lin(x).sum()
            assert forwards == [1] and torch.isfinite(out)
        armed.clear()
    notes = analyze(cap.trace).summary["notes"]
    failed = [n for n in notes if "module hook failed" in n]
    assert len(failed) == (raised is RuntimeError), notes
    assert all("gradmem's fault" in n for n in failed)


def _grads_program(engine: str):
    """A leaf whose .grad was made before the capture (accumulated into in place), one made
    inside it, ``autograd.grad`` (which accumulates nothing) and ``retain_grad``."""
    torch.manual_seed(0)
    w, v, x = torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True), torch.randn(2, 4)
    (x @ w).sum().backward()
    with Capture(engine=engine) as cap:
        h = x @ w
        h.retain_grad()
        (h * v).sum().backward()
        (g,) = torch.autograd.grad((x @ w).pow(2).sum(), w)
        del g
    return cap


def test_leaf_gradients_same_on_both_engines(native):
    """The native recorder reads leaf gradients when AccumulateGrad ends (no Python hook per
    leaf); the events, the roles and the landed values are the Python engine's."""
    py, nat = _grads_program("python"), _grads_program("native")
    assert nat.trace.meta.capture_engine == "native"

    def grads(trace):
        return sorted((e.kind, tuple(e.data["shape"]), e.data.get("value")) for e in trace.events
                      if e.kind in ("grad", "leaf_grad", "retained"))
    assert grads(nat.trace) == grads(py.trace)
    assert len([e for e in nat.trace.events if e.kind == "leaf_grad"]) == 2   # w and v, once each
    assert all(e.data["grad"] is not None for e in nat.trace.events if e.kind in ("grad", "leaf_grad"))
    assert facts(analyze(nat.trace)) == facts(analyze(py.trace))


def _renamed_program(engine: str):
    """Four steps: in the third a parameter is replaced, in the fourth one gets new storage
    (``.data =``), and in the last a module is added."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    with Capture(engine=engine) as cap:
        x = torch.randn(5, 4)
        for step in range(5):
            if step == 2:
                model[0].weight = torch.nn.Parameter(torch.randn(3, 4))
            if step == 3:
                model[2].weight.data = torch.randn(1, 3)
            if step == 4:
                model.append(torch.nn.Linear(1, 2))
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()
    return cap


def test_gradient_names_same_on_both_engines(native):
    """After each backward call the native engine names the new ``.grad``s in C++ from the
    parameters a first walk kept, and walks a module again only when its parameters or
    children changed: the names are the Python engine's, step by step."""
    def names(cap):
        by_sid = {e.data["storage"]: e.data["nbytes"] for e in cap.trace.events if e.kind == "alloc"}
        return sorted((e.step, e.data["name"], e.data["source"], tuple(e.data["shape"]), by_sid.get(e.data["storage"]))
                      for e in cap.trace.events if e.kind == "name")

    py, nat = names(_renamed_program("python")), names(_renamed_program("native"))
    grads = [n for n in nat if n[2] == "grad"]
    assert {n[1] for n in grads} >= {"model.0.weight.grad", "model.2.weight.grad", "model.3.weight.grad"}
    assert len([n for n in grads if n[1] == "model.0.weight.grad"]) == 5   # a new .grad each step
    assert [(n[1], n[2], n[3], n[4]) for n in nat] == [(n[1], n[2], n[3], n[4]) for n in py]


def test_native_rss_sampled_in_cpp_as_psutil_reads_it(native):
    """On the native engine resident memory is sampled by the recorder's own thread, which
    never takes the GIL: by time (every 10 ms, plus the first and last), stamped with the
    step in progress, in psutil's bytes, and with no Python sampler thread running."""
    import threading

    import psutil
    with Capture(engine="native") as cap:
        assert not any(t.name == "gradmem-rss" for t in threading.enumerate())
        lin = torch.nn.Linear(256, 256)
        for _ in range(20):
            lin(torch.randn(512, 256)).sum().backward()
        now = psutil.Process().memory_info().rss
    samples = [e for e in cap.trace.events if e.kind == "rss"]
    steps = [e for e in cap.trace.events if e.kind == "step"]
    span_s = (samples[-1].t_ns - samples[0].t_ns) / 1e9
    assert 2 <= len(samples) <= span_s / 0.01 + 3
    assert abs(samples[-1].data["rss"] - now) < 16 * 2**20   # the same reading, moments apart
    assert {e.step for e in samples} <= {0} | {e.step for e in steps}
    assert (analyze(cap.trace).steps["rss_bytes"] > 0).any()


def _checkpoint_program(engine: str, reentrant: bool = False):
    """A checkpointed block and its backward; reentrant: then a forward after the backward
    call, whose saves are recorded as usual."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 8)
    with Capture(engine=engine) as cap:
        x = torch.randn(4, 8, requires_grad=True)
        y = torch.utils.checkpoint.checkpoint(lambda a: torch.relu(lin(a)).exp(), x, use_reentrant=reentrant)
        y.sum().backward()
        if reentrant:
            (x * 3).sin().sum().backward()
    return cap


def test_checkpoint_same_on_both_engines(native):
    """What checkpoint keeps (its block's input, packed by its own frame) and what backward
    runs again (recomputed: an activation when kept, a temporary when not) read as on the
    Python engine. Known difference: the op at which checkpoint stops recomputing raises
    out of its autograd wrapper, so its output never reaches the native recorder as an
    output (the Python engine sees it below autograd), and that temporary is not listed."""
    py, nat = analyze(_checkpoint_program("python").trace), analyze(_checkpoint_program("native").trace)

    def rows(a):
        t = a.tensors[a.tensors["nbytes"] > 0]
        t = t[~(t["recomputed"].astype(bool) & (t["role"] == "temporary") & (t["created_by"] == "exp"))]
        return sorted(zip(t["role"], t["nbytes"], t["created_by"], t["saved_by"], t["recomputed"].astype(bool)))
    assert rows(nat) == rows(py)
    kept = nat.tensors[nat.tensors["saved_by"].str.startswith("torch.utils.checkpoint")]
    assert len(kept) == 1 and kept["nbytes"].iloc[0] == 4 * 8 * 4   # x, kept to run the block again
    assert ((nat.tensors["role"] == "activation") & nat.tensors["recomputed"].astype(bool)).sum() == 1   # relu's


def test_reentrant_checkpoint_saves_recorded_while_hooks_are_paused(native):
    """During a backward call that builds no graph the native engine takes its saved-tensor
    hooks off torch's stack (each node's thread-local state copies that stack otherwise).
    A reentrant checkpoint runs its block again inside backward, with grad on and no hooks
    of its own: the recorder puts the hooks back for those ops, so what they save is
    recorded as on the Python engine, and the hooks are on again for the next forward.
    (The recomputed block's nodes belong to the nested backward checkpoint runs, which no
    walk meets on the native engine: its saved_by reads differently, a known difference.)"""
    py, nat = _checkpoint_program("python", reentrant=True), _checkpoint_program("native", reentrant=True)

    def saved(cap, after_first_backward=False):
        start = next(e.seq for e in cap.trace.events if e.kind == "backward_end") if after_first_backward else -1
        return sorted((tuple(e.data["shape"]), e.data["dtype"]) for e in cap.trace.events
                      if e.kind == "saved" and e.seq > start)
    assert saved(nat) == saved(py)
    assert len(saved(nat)) >= 5   # the first forward's, the block's again, and x * 3's and sin's
    assert saved(nat, after_first_backward=True) == saved(py, after_first_backward=True) != []
    analyze(nat.trace)   # a node ending that no walk met is left out, as the Python engine leaves it
    assert torch._C._autograd._top_saved_tensors_default_hooks(True) is None   # nothing left behind


def test_modified_saved_tensor_fails_as_on_the_python_engine(native):
    """The C++ unpack hook checks the version as the Python one does: same error, same words."""
    def message(engine):
        with pytest.raises(RuntimeError) as err:
            with Capture(engine=engine):
                w = torch.randn(3, requires_grad=True)
                e = (w * 2).exp()
                e.add_(1)
                e.sum().backward()
        return str(err.value)
    assert message("native") == message("python")
    assert "is at version 1; expected version 0" in message("native")


def test_native_allocator_record_is_torch_profilers(native):
    """The native engine records the allocator itself (the Python engine asks
    torch.profiler): the same blocks, peak and unattributed kernel scratch."""
    def allocator(engine):
        al = analyze(run(ROOT / "scenarios" / "seed_two_rows.py", {}, engine).trace).summary["allocator"]
        scratch = sorted((b["nbytes"], b["op"]) for b in al["unattributed_blocks"])
        return al["peak_bytes"], al["peak_with_unattributed"], al["blocks"], al["blocks_matched"], al["agrees"], scratch
    assert allocator("native") == allocator("python")


programs = st.builds(build, st.lists(st.integers(0, 3), min_size=1, max_size=3), st.booleans(),
                     st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 15), st.integers(0, 15)),
                              min_size=1, max_size=8), st.sampled_from([1, 1, 2]))


def _profile(program, engine: str):
    ns = {"torch": torch, **SMALL}
    code = compile(program.source, "<program>", "exec")
    torch.manual_seed(0)
    try:
        with Capture(engine=engine) as cap:
            exec(code, ns)
            ns.clear()
    except RuntimeError:
        return None
    return analyze(cap.trace)


@settings(max_examples=15, derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(programs)
def test_property_programs_same_on_both_engines(native, program):
    py = _profile(program, "python")
    nat = _profile(program, "native")
    assert (py is None) == (nat is None), program.source
    if py is not None and facts(nat) != facts(py):
        perturbed_by_dispatch_mode(program, nat, py)


def _bare(program):
    ns = {"torch": torch, **SMALL}
    torch.manual_seed(0)
    exec(compile(program.source, "<program>", "exec"), ns)
    ns.clear()


def perturbed_by_dispatch_mode(program, nat, py) -> None:
    """The one known difference: under any TorchDispatchMode (the Python engine's) autograd
    adds a gradient arriving from two paths out of place (see test_properties). Then the
    native engine, which runs no mode, must record the program as it runs without gradmem:
    its peak, unattributed blocks counted, is the bare run's allocator peak."""
    differ = set(facts(nat)["storages"]) ^ set(facts(py)["storages"])
    assert {row[0] for row in differ} <= {"gradient", "param_grad", "retained_grad"}, program.source
    _, bare = allocator_record(lambda: _bare(program))
    assert nat.summary["allocator"]["peak_with_unattributed"] == allocator_peak(bare), program.source


def test_no_compiler_falls_back_to_python(tmp_path, monkeypatch):
    """No C++ compiler on PATH and nothing built: the run works on the Python engine and
    the trace says why."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(loader.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(loader, "_module", None)
    monkeypatch.setattr(loader, "_error", None)
    cap = run(ROOT / "scenarios" / "seed_two_rows.py", {}, "auto")
    assert cap.trace.meta.capture_engine == "python"
    assert "no C++ compiler" in cap.trace.meta.engine_reason
    s = analyze(cap.trace).summary
    assert s["capture_engine"] == "python"
    assert any(n.startswith("captured by the Python engine: no C++ compiler") for n in s["notes"])
    assert s["peak_bytes"] > 0


def test_fake_mode_keeps_the_python_engine():
    c = choose.choose("native", fake=True)
    assert c.engine == "python" and "fake" in c.reason


def test_inside_torch_profiler_the_python_engine_runs(native):
    with torch.profiler.profile():
        c = choose.choose("auto")
    assert c.engine == "python" and "profiler" in c.reason


def test_torch_profiler_inside_a_native_capture_is_refused_cleanly(native):
    x = torch.ones(3, requires_grad=True)
    with Capture(engine="native") as cap:
        with pytest.raises(RuntimeError):
            with torch.profiler.profile():
                pass
        (x * 2).sum().backward()
    assert cap.trace.meta.capture_engine == "native"
    assert analyze(cap.trace).summary["peak_bytes"] > 0


def test_native_seams_are_restored_after_a_failing_run(native):
    """The functions the native engine swaps in for the capture are torch's own again when
    it ends, also when the program raised inside it."""
    before = (torch.autograd.backward, torch.autograd.grad, torch.autograd._engine_run_backward,
              torch.autograd.graph._engine_run_backward, torch.Tensor.retain_grad)
    x = torch.ones(3, requires_grad=True)
    with pytest.raises(ValueError):
        with Capture(engine="native") as cap:
            assert torch.autograd.backward is not before[0]
            (x * 2).sum().backward()
            raise ValueError("the program's own")
    after = (torch.autograd.backward, torch.autograd.grad, torch.autograd._engine_run_backward,
             torch.autograd.graph._engine_run_backward, torch.Tensor.retain_grad)
    assert after == before and "retain_grad" not in torch.Tensor.__dict__
    assert cap.trace.meta.capture_engine == "native"
    assert [e.data["call"] for e in cap.trace.events if e.kind == "backward_begin"] == ["backward"]


def test_cli_profile_on_the_native_engine(native, tmp_path):
    """``gradmem profile --engine native`` writes the reports and says which engine ran."""
    import json
    out = CliRunner().invoke(main, ["profile", str(ROOT / "scenarios" / "seed_two_rows.py"), "-q", "--engine",
                                    "native", "-o", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["capture_engine"] == "native"
    assert summary["peak_bytes"] > 0


def test_doctor_says_which_engine(native):
    out = CliRunner().invoke(main, ["doctor", "--no-build"])
    assert out.exit_code == 0, out.output
    assert "--engine auto uses: native" in out.output and "the default is --engine auto" in out.output


def test_the_default_run_takes_the_native_engine_and_says_why(native, tmp_path):
    out = CliRunner().invoke(main, ["profile", str(ROOT / "scenarios" / "seed_two_rows.py"), "-o", str(tmp_path / "r"),
                                    "--format", "json"])
    assert out.exit_code == 0, out.output
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["capture_engine"] == "native" and s["engine_reason"] == "the native extension is built"
    assert "  captured by the native engine (the native extension is built)" in out.output.splitlines()


def test_auto_takes_the_python_engine_on_a_torchrun_rank(native, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with Capture() as cap:
        (torch.ones(3, requires_grad=True) * 2).sum().backward()
    assert cap.trace.meta.capture_engine == "python" and "collectives" in cap.trace.meta.engine_reason
    with Capture(engine="native") as cap:   # asked for by name: taken
        (torch.ones(3, requires_grad=True) * 2).sum().backward()
    assert cap.trace.meta.capture_engine == "native"


def test_a_model_from_before_the_capture_that_it_never_uses_stays_out(native):
    """Naming the program's variables must not add their storages to the trace: a model
    made (and trained a step) before the capture and not used in it is in neither engine's."""
    old = torch.nn.Linear(64, 32)
    old(torch.randn(2, 64)).sum().backward()   # it has .grads too
    found = {}
    for engine in ("python", "native"):   # the capture in this frame, which holds `old`
        torch.manual_seed(0)
        with Capture(engine=engine) as cap:
            new = torch.nn.Linear(4, 2)
            new(torch.randn(3, 4)).sum().backward()
        found[engine] = facts(analyze(cap.trace))
    assert found["native"] == found["python"]
    assert not [row for row in found["native"]["storages"] if row[1] in (64 * 32 * 4, 32 * 4)], old


def test_inputs_from_before_the_capture_are_tracked_as_on_the_python_engine(native):
    """Tensors an earlier notebook cell made, used by the capture's ops without needing
    grad: the extension hands their storages over at the next backward call."""
    data = (torch.tensor([[10., 15.], [30., 40.]]), torch.tensor([20., 25.]))   # no variable of their own
    w = torch.tensor([5., 6.], requires_grad=True)
    found = {}
    for engine in ("python", "native"):
        w.grad = None
        with Capture(engine=engine) as cap:
            loss = ((data[1] - data[0] @ w) ** 2).mean()
            loss.backward()
        found[engine] = facts(analyze(cap.trace))
    assert found["native"] == found["python"]
    inputs = sorted((nbytes, value) for role, nbytes, *_, value, _u, _s, _m in found["native"]["storages"] if role == "input")
    assert inputs == [(8, "[20, 25]"), (16, "[[10, 15], [30, 40]]")]


@pytest.mark.parametrize("inner_engine", ["python", "native"])
def test_a_capture_inside_a_native_capture_records_on_the_python_engine(native, inner_engine):
    """The native recorder holds torch's one profiler state: an inner capture must not start
    torch's profiler for its allocator record (it raised 'already enabled' into the
    program) nor a second native recorder; it runs on the Python engine and says why."""
    with Capture(engine="native") as outer:
        with Capture(engine=inner_engine) as inner:
            x = torch.randn(4, requires_grad=True)
            x.exp().sum().backward()
    assert (outer.trace.meta.capture_engine, inner.trace.meta.capture_engine) == ("native", "python")
    for cap in (outer, inner):
        assert "ExpBackward0.result" in set(analyze(cap.trace).tensors["saved_by"])
    assert any("allocator's record was not taken" in n for n in inner.trace.meta.notes)


def test_a_build_killed_midway_does_not_block_the_next(tmp_path):
    """torch's build lock is a plain file a killed build leaves behind (seen here: the next
    run waited for ever). Holding gradmem's own lock, the leftover is removed."""
    (tmp_path / "lock").write_text("")
    with loader.build_lock(tmp_path):
        assert not (tmp_path / "lock").exists()


def test_a_build_in_progress_keeps_its_lock(tmp_path):
    """A live build elsewhere holds gradmem's lock: the next waits for it, and never removes
    the lock of a build that is running."""
    import subprocess
    import threading
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys, pathlib; d = pathlib.Path(sys.argv[1]); f = open(d / 'gradmem-build.lock', 'w');"
         "fcntl.flock(f, fcntl.LOCK_EX); (d / 'lock').write_text(''); print('ready', flush=True); sys.stdin.read();"
         "(d / 'lock').unlink()", str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        entered = threading.Event()

        def build():
            with loader.build_lock(tmp_path):
                entered.set()
        waiter = threading.Thread(target=build, daemon=True)
        waiter.start()
        assert not entered.wait(1.0)           # the live build holds it
        assert (tmp_path / "lock").exists()    # and its lock file is left alone
        child.stdin.close()                     # the build finishes
        assert entered.wait(30)
    finally:
        child.kill()
        child.wait(10)
