"""Memory by module and by source line, on real torch models built here (tiny sizes).

Oracles: the model's own ``named_modules()`` (paths must exist), the structure of the
model (layer N's dropout mask belongs to layer N's dropout), and tensors.csv itself (the
per-module sums in modules.csv add up to its activation bytes).
"""
from __future__ import annotations

import inspect
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import read_tensors
from gradmem import Capture

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"


class Custom(nn.Module):
    """A module whose forward calls functional ops directly."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 4))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = F.gelu(x @ self.w)           # the line the gelu activation must point at
        h = F.dropout(h, 0.2, training=True)
        return self.head(h * torch.sigmoid(h))


def transformer():
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), torch.randn(2, 3, 8)


class LSTMModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 5, batch_first=True)
        self.out = nn.Linear(5, 1)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.out(y[:, -1])


MODELS = {
    "transformer": transformer,
    "cnn_bn": lambda: (nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(3 * 4 * 4, 2)), torch.randn(2, 1, 6, 6)),
    "lstm": lambda: (LSTMModel(), torch.randn(2, 3, 4)),
    "mlp": lambda: (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)),
                    torch.randn(3, 4)),
    "custom": lambda: (Custom(), torch.randn(3, 6)),
}


def profile(name: str):
    torch.manual_seed(0)
    model, x = MODELS[name]()
    model.train()
    with Capture(verify=False) as cap:
        out = model(x)
        out.sum().backward()
    return cap, model


@pytest.fixture(scope="module", params=sorted(MODELS))
def run(request):
    cap, model = profile(request.param)
    return request.param, cap, model


def existing_paths(model) -> set[str]:
    return {f"model.{n}" if n else "model" for n, _ in model.named_modules()}


def test_activation_bytes_carry_a_module_of_the_model(run):
    name, cap, model = run
    t = cap.tensors
    act = t[t["role"] == "activation"]
    assert act["nbytes"].sum() > 0
    covered = act[act["module"].isin(existing_paths(model))]["nbytes"].sum()
    assert covered >= 0.95 * act["nbytes"].sum(), act[["name", "module", "nbytes"]]


def test_module_sums_match_tensors_table(run):
    name, cap, model = run
    t, m = cap.tensors, cap.analysis.modules
    act = t[t["role"] == "activation"]
    with_module = act[act["module"] != ""]["nbytes"].sum()
    assert m["activation_bytes"].sum() == with_module
    root = m.set_index("module").loc["model"]
    assert root["activation_bytes_total"] == act["nbytes"].sum()
    assert set(m["module"]) == existing_paths(model)
    assert m.set_index("module")["type"].to_dict()["model"] == type(model).__name__
    params = t[t["role"] == "parameter"]["nbytes"].sum()
    assert m["parameter_bytes"].sum() == params == sum(p.numel() * p.element_size() for p in model.parameters())


def test_gradients_get_the_module_of_their_forward_op(run):
    name, cap, model = run
    t = cap.tensors
    grads = t[t["role"].isin(["gradient", "param_grad"])]
    # every parameter's .grad is made by the backward of an op inside the model
    pg = t[t["role"] == "param_grad"]
    assert len(pg) and pg["module"].isin(existing_paths(model)).all(), pg[["name", "module"]]
    assert grads[grads["module"] != ""]["module"].isin(existing_paths(model)).all()
    # outside the model: only the loss's seed gradient and the gradient out of `.sum()`
    assert len(grads[grads["module"] == ""]) <= 2, grads[["name", "module", "created_by"]]


def test_dropout_mask_of_layer_n_is_layer_n_dropout():
    cap, model = profile("transformer")
    t = cap.tensors
    for n in range(2):
        for drop in ("dropout", "dropout1", "dropout2"):
            path = f"model.layers.{n}.{drop}"
            masks = t[(t["module"] == path) & (t["name"] == f"layers.{n}.{drop}: mask")]
            assert len(masks) == 1, t[t["module"] == path][["name", "created_by", "role"]]
            assert masks.iloc[0]["role"] == "activation" and masks.iloc[0]["saved_by"].startswith("MulBackward0")
    out = t[t["name"] == "layers.0.linear1: output"]
    assert len(out) == 1 and out.iloc[0]["op_name"].startswith("addmm#")


def test_source_is_the_user_line_inside_a_custom_module():
    cap, _ = profile("custom")
    t = cap.tensors
    lines, start = inspect.getsourcelines(Custom.forward)
    gelu_line = start + next(i for i, s in enumerate(lines) if "F.gelu" in s)
    gelu = t[t["created_by"] == "gelu"].iloc[0]
    assert gelu["module"] == "model"
    assert gelu["source"] == f"{__file__}:{gelu_line}"
    head = t[(t["module"] == "model.head") & (t["created_by"] == "addmm")].iloc[0]
    assert head["name"] == "out"      # the program's variable wins over the module's label
    sig = t[(t["module"] == "model") & (t["created_by"] == "sigmoid")].iloc[0]
    assert sig["name"] == "model: sigmoid"


def test_module_spans_nest_and_close():
    cap, _ = profile("transformer")
    from gradmem.analysis.modules import spans
    s = spans(cap.analysis.tables)
    assert [x["module"] for x in s if x["depth"] == 0] == ["model"]
    assert all(x["t1_ns"] is not None and x["t1_ns"] >= x["t0_ns"] for x in s)


def test_no_module_no_attribution_but_source():
    x, w = torch.randn(3), torch.randn(3, requires_grad=True)
    with Capture(verify=False) as cap:
        loss = (x * w).sum()      # noqa: F841
        loss.backward()
    t = cap.tensors
    assert (t["module"] == "").all() and len(cap.analysis.modules) == 0
    assert t[t["name"] == "loss"].iloc[0]["source"].endswith(f"{Path(__file__).name}:{inspect.currentframe().f_lineno - 4}")


def test_seed_two_rows_error_source(seed_reports):
    t = read_tensors(seed_reports["seed_two_rows"])
    path = SCENARIOS / "seed_two_rows.py"
    line = 1 + next(i for i, s in enumerate(path.read_text().splitlines()) if s.strip() == "error = y - output")
    file, _, lineno = t[t["name"] == "error"].iloc[0]["source"].rpartition(":")
    assert Path(file).resolve() == path.resolve() and int(lineno) == line
    modules = pd.read_csv(seed_reports["seed_two_rows"] / "modules.csv")
    assert list(modules.columns)[:7] == ["module", "type", "parent", "depth", "calls", "parameter_bytes",
                                         "activation_bytes"] and len(modules) == 0


def test_chrome_trace_has_nested_module_spans_and_memory_viz_the_source():
    import json

    from gradmem.render.chrome import ChromeTraceWriter
    from gradmem.render.memory_viz import snapshot
    from trace_event_format import problems
    cap, model = profile("custom")
    doc = json.loads(ChromeTraceWriter().render(cap.analysis))
    assert problems(doc) == []
    track = next(e["tid"] for e in doc["traceEvents"] if e["ph"] == "M" and e["args"].get("name") == "modules")
    spans = sorted((e for e in doc["traceEvents"] if e["ph"] == "X" and e["tid"] == track), key=lambda e: e["ts"])
    assert [e["name"] for e in spans] == ["model", "model.head"]
    outer, inner = spans
    assert outer["ts"] <= inner["ts"] and inner["ts"] + inner["dur"] <= outer["ts"] + outer["dur"] + 1e-6
    gelu = cap.tensors[cap.tensors["created_by"] == "gelu"].iloc[0]
    allocs = [r for tr in snapshot(cap.analysis)["device_traces"] for r in tr if r["action"] == "alloc"]
    frames = next(r["frames"] for r in allocs if r["frames"][0]["name"].startswith(gelu["name"] + " ["))
    file, _, line = gelu["source"].rpartition(":")
    assert frames[1] == {"filename": file, "line": int(line), "name": "model"}


def test_terminal_lists_the_modules_holding_the_peak():
    from gradmem.render.terminal import summary_text
    cap, _ = profile("mlp")
    text = summary_text(cap.analysis)
    top = cap.summary["modules_at_peak"][0]
    assert "modules holding the peak" in text and f"    {top['module']} ({top['type']})" in text


def test_parameters_made_inside_the_capture_belong_to_their_module():
    """Scenarios build their model inside the run (mlp.py): its parameters are made by
    `empty` with no module running, yet modules.csv's parameter_bytes must count them."""
    with Capture() as cap:
        model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 1))
        model(torch.randn(4, 6)).sum().backward()
    m = cap.analysis.modules.set_index("module")
    for path, layer in (("model.0", model[0]), ("model.2", model[2])):
        assert m.loc[path, "parameter_bytes"] == sum(p.numel() * p.element_size() for p in layer.parameters())
    t = cap.tensors
    assert set(t[t["role"] == "parameter"]["module"]) == {"model.0", "model.2"}


def test_a_child_called_on_its_own_is_named_by_its_path_and_no_two_modules_share_a_name():
    """``model[0](x)``: the root the hooks see is the child, held by no variable; it is
    ``model.0`` (the parameters' own names say so), not its class. Two modules held by no
    variable at all get their class, made unique, never one row for both."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    x = torch.randn(2, 4)
    with Capture(verify=False) as cap:
        out = model[2](model[1](model[0](x)))
        (nn.Linear(1, 3)(out) + nn.Linear(1, 3)(out)).sum().backward()
    m = set(cap.analysis.modules["module"])
    assert {"model.0", "model.1", "model.2", "Linear", "Linear#2"} <= m, m
    t = cap.tensors.set_index("name")
    assert t.loc["model.0.weight", "module"] == "model.0" and t.loc["model.2.bias", "module"] == "model.2"
