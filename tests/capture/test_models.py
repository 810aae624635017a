"""Real model code nobody here wrote, built from torch alone: what broke under gradmem
(issue 12) and what its reports must say about it. Sizes are tiny; each test is quick."""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from conftest import ROOT, SCENARIOS

import gradmem
from gradmem.capture import storages as storages_module
from gradmem.capture.native.engine import NativeStorages
from gradmem.cli import main
from gradmem.render.units import human_bytes
from oracles import allocator_peak, allocator_record


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def profile(path, out, *args):
    result = CliRunner().invoke(main, ["profile", str(path), "-o", str(out), "-q", *args])
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else None
    return result, summary


EMBEDDING = """\
import torch
emb = torch.nn.Embedding(10, 4, padding_idx=0)
loss = emb(torch.tensor([[0, 1, 2]])).sum()
loss.backward()
"""


# -- 1. never fail a program that runs under plain python -------------------------------------
def test_embedding_with_padding_idx_runs(tmp_path):
    """nn.Embedding(padding_idx=k) zeroes row k under no_grad; reading that view's grad_fn
    raises in torch, which gradmem's hooks did and then blamed the scenario for."""
    result, summary = profile(write(tmp_path, "emb.py", EMBEDDING), tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert summary["status"] == "complete"
    grad = gradmem.capture  # the padding row gets no gradient, as without gradmem
    with grad(verify=False) as cap:
        emb = torch.nn.Embedding(10, 4, padding_idx=0)
        emb(torch.tensor([[0, 1, 2]])).sum().backward()
    assert emb.weight.grad[0].abs().sum() == 0 and emb.weight.grad[1].abs().sum() == 4
    assert "emb.weight" in set(cap.tensors["name"])


# the Python code each engine runs from its hooks: a storage registered; a storage looked up
FAULT_AT = {"python": (storages_module.Storages, "_track"), "native": (NativeStorages, "_native_id")}


@pytest.mark.parametrize("engine", ["python", "native"])
def test_gradmem_fault_in_a_hook_is_gradmem_s_not_the_scenario_s(tmp_path, monkeypatch, request, engine):
    """A bug in gradmem's own hook code (injected here into gradmem, not torch): the program
    still runs to its end with its own results, and the message says whose fault it is."""
    if engine == "native":
        request.getfixturevalue("native")
    owner, name = FAULT_AT[engine]
    real_track = getattr(owner, name)
    calls = {"n": 0}

    def failing_track(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyError("injected gradmem bug")
        return real_track(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, failing_track)
    path = write(tmp_path, "prog.py", "import torch\nw = torch.ones(3, requires_grad=True)\n"
                 "loss = (w * 2).sum()\nloss.backward()\nopen(__file__ + '.done', 'w').write(str(w.grad.tolist()))\n")
    result, summary = profile(path, tmp_path / "out", "--engine", engine)
    assert (tmp_path / "prog.py.done").read_text() == "[2.0, 2.0, 2.0]"   # the program ran to its end
    assert result.exit_code == 5, result.output
    assert "gradmem's own code failed" in result.output and "not in your scenario" in result.output
    assert "KeyError: 'injected gradmem bug'" in result.output and "failing_track" in result.output
    assert "please report" in result.output.lower()
    assert "the scenario raised" not in result.output
    assert summary["status"] == "partial" and summary["error"]["gradmem"] is True


# -- 8. names survive a failing run -----------------------------------------------------------
def test_a_run_failing_before_backward_keeps_program_names(tmp_path):
    module_level = write(tmp_path, "top.py", "import torch\nweights = torch.randn(4, 3)\n"
                         "scratch = torch.empty(5)\nraise ValueError('stop')\n")
    in_main = write(tmp_path, "inmain.py", "import torch\ndef main():\n    weights = torch.randn(4, 3)\n"
                    "    scratch = torch.empty(5)\n    raise ValueError('stop')\n")
    for path in (module_level, in_main):
        out = tmp_path / path.stem
        result, summary = profile(path, out)
        assert result.exit_code == 3 and summary["status"] == "partial"
        names = (out / "tensors.csv").read_text()
        assert "weights," in names and "scratch," in names, names


# -- 2. --fake on modules built with copy.deepcopy ------------------------------------------
DEEPCOPIED = """\
import copy
import torch
layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
encoder = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)   # clones layer with deepcopy
head = copy.deepcopy(torch.nn.Linear(8, 8))
x = torch.randn(2, 3, 8)
head(encoder(x)).sum().backward()
"""


def test_fake_run_of_deepcopied_modules_matches_the_real_run(tmp_path):
    """TransformerEncoder deep-copies its layer; under --fake the copies used to carry a new
    FakeTensorMode of their own ("Mixing fake modes NYI")."""
    path = write(tmp_path, "deep.py", DEEPCOPIED)
    # --fake records on the Python engine; so does the real run held to it (on the native
    # engine autograd sums select_backward's gradients in place, as plain torch: 256 B lower)
    real, real_summary = profile(path, tmp_path / "real", "--no-verify", "--engine", "python")
    fake, fake_summary = profile(path, tmp_path / "fake", "--fake")
    assert real.exit_code == 0, real.output
    assert fake.exit_code == 0, fake.output
    assert fake_summary["tracked_peak_bytes"] == real_summary["tracked_peak_bytes"]
    assert fake_summary["storages"] == real_summary["storages"]
    # not yet equal: deep-copying a fake parameter clones it with grad on (a real one clones
    # .data), so the fake run's forward phase starts there and one input reads as activation


def test_fake_capture_of_a_model_made_before_it(tmp_path):
    """Parameters made before a --fake capture (real tensors) are used as fake ones inside
    it, deep-copied or not; afterwards the real parameters carry no fake .grad."""
    lin = torch.nn.Linear(4, 4)
    with gradmem.capture(fake=True) as cap:
        copied = copy.deepcopy(lin)
        copied(lin(torch.randn(2, 4))).sum().backward()
    assert lin.weight.grad is None and lin.bias.grad is None
    rows = cap.tensors.set_index("name")
    assert rows.at["copied.weight", "role"] == "parameter" and rows.at["lin.weight.grad", "role"] == "param_grad"
    assert rows.at["lin.weight.grad", "nbytes"] == 64 and rows.at["copied.weight.grad", "nbytes"] == 64


# -- 4. the headline peak is the allocator's true peak -----------------------------------------
def conv_bn_lstm_step():
    torch.manual_seed(0)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
    lstm = torch.nn.LSTM(8, 8, batch_first=True)
    image = torch.randn(4, 3, 16, 16)
    features = conv(image).mean(dim=(2, 3)).unsqueeze(1).expand(4, 5, 8)
    out, _ = lstm(features)
    out.sum().backward()


def test_peak_bytes_is_the_allocators_peak_with_kernel_scratch(tmp_path):
    """Convolution backward and the LSTM kernels allocate buffers of their own: the first
    line's peak counts them (it is the allocator's, as in a run without gradmem); the
    hooks-only figure is tracked_peak_bytes, and the scratch is named by node."""
    _, bare = allocator_record(conv_bn_lstm_step)
    with gradmem.capture() as cap:
        conv_bn_lstm_step()
    s = cap.summary
    assert s["peak_bytes"] == allocator_peak(bare) == s["allocator"]["peak_bytes"]
    assert s["peak_source"] == "allocator"
    assert s["tracked_peak_bytes"] < s["peak_bytes"]
    assert s["peak_step"] == s["allocator"]["peak_step"]
    assert sum(s["peak_by_role"].values()) == s["peak_bytes"] and s["peak_by_role"]["unattributed"] > 0
    scratch = s["unattributed_by_node"]
    assert scratch and all(r["max_bytes"] > 0 and r["calls"] >= 1 for r in scratch)
    assert scratch[0]["max_bytes"] >= s["allocator"]["unattributed_blocks"][0]["nbytes"]
    first = repr(cap).splitlines()[1]
    assert first.startswith(f"  peak: {human_bytes(s['peak_bytes'])} at step {s['peak_step']}")
    assert "kernel scratch" in first and human_bytes(s["peak_by_role"]["unattributed"]) in first


@pytest.mark.parametrize("engine", ["python", "native"])
def test_peak_bytes_without_the_record_is_the_tracked_peak(request, engine):
    if engine == "native":
        request.getfixturevalue("native")
    with gradmem.capture(verify=False, engine=engine) as cap:
        conv_bn_lstm_step()
    s = cap.summary
    assert s["peak_source"] == "tracked" and s["peak_bytes"] == s["tracked_peak_bytes"]
    assert "unattributed" not in s["peak_by_role"]


# -- 7. each tensor's own shape ----------------------------------------------------------------
def test_rows_carry_the_shape_the_user_knows():
    """A bias's .grad is made as a (1, 10) sum and handed on as (10,); a linear layer's 3-D
    output is made by a 2-D matmul and viewed back to 3-D. The rows show (10,) and 3-D."""
    torch.manual_seed(0)
    with gradmem.capture(verify=False) as cap:
        lin = torch.nn.Linear(6, 10)
        x = torch.randn(2, 3, 6)
        hidden = lin(x)
        loss = hidden.pow(2).sum()
        loss.backward()
    rows = cap.tensors.set_index("name")
    assert rows.at["lin.bias.grad", "shape"] == "(10,)"
    assert rows.at["lin.weight.grad", "shape"] == "(10, 6)"
    assert rows.at["hidden", "shape"] == "(2, 3, 10)"
    assert rows.at["x", "shape"] == "(2, 3, 6)"
    assert rows.at["lin.bias.grad", "nbytes"] == 10 * 4


# -- 9. start-up: no torch._dynamo import ------------------------------------------------------
def test_a_profile_does_not_import_torch_dynamo(tmp_path):
    """Torch wraps a dispatch mode in torch._dynamo.disable, which imports torch._dynamo at
    the first op: seconds of every run's start-up (benchmarks/startup.py). A fresh process,
    since this suite imports torch._dynamo elsewhere."""
    code = ("import sys\nfrom gradmem.scenario import load_scenario, run_scenario\nfrom gradmem.analysis import analyze\n"
            f"cap, failure = run_scenario(load_scenario({str(SCENARIOS / 'seed_one_weight.py')!r}), {{}})\n"
            "assert failure is None\nanalyze(cap.trace)\nprint(sorted(m for m in sys.modules if m.startswith('torch._dynamo')))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- 6. the hidden-slot note only when true; wrapped python scalars named as such ---------------
NOTE = "saved slot(s) were packed by"


def test_python_float_times_a_tensor_is_a_wrapped_scalar_not_a_hidden_slot():
    """GPT-2's tanh GELU multiplies by python floats: autograd saves each as a wrapped 0-dim
    tensor without calling any hook. Those are not someone else's hooks, and their bytes
    are attributed: no note, and the rows say what they are."""
    with gradmem.capture(verify=False) as cap:
        x = torch.randn(3, requires_grad=True)
        loss = (0.5 * x * (1.0 + torch.tanh(0.79788 * x))).sum()
        loss.backward()
    assert not any(NOTE in n for n in cap.summary["notes"]), cap.summary["notes"]
    scalars = cap.tensors[cap.tensors["name"].str.startswith("python scalar")]
    assert len(scalars) >= 2 and set(scalars["nbytes"]) == {8}
    assert "python scalar 0.5" in set(scalars["name"])


def test_checkpoint_slots_still_get_the_note():
    block = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
    with gradmem.capture(verify=False) as cap:
        x = torch.randn(2, 4, requires_grad=True)
        checkpoint_ = __import__("torch.utils.checkpoint", fromlist=["checkpoint"]).checkpoint
        checkpoint_(block, x, use_reentrant=False).sum().backward()
    # the trace's notes: summary.json's; checkpoint's own hooks, said as such
    assert any(NOTE + " torch.utils.checkpoint" in n for n in cap.trace.meta.notes), cap.trace.meta.notes
