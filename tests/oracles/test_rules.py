"""The backward rules on file (gradmem/analysis/rules.py) against torch itself.

1. Each rule's copy of torch's formula is the text in the wheel's derivatives.yaml.
2. On the three seed examples and a small MLP, every node's rule, evaluated by gradmem on
   the recorded values, gives the gradient torch produced at that node, and the gradient
   plain torch (no gradmem) puts in ``.grad`` of the tensor of that name.
3. Small programs run every rule on file at least once; each evaluation matches torch.
"""
import os
import runpy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchgen
import yaml

from gradmem.analysis import analyze
from gradmem.analysis.derivation import parse_value
from gradmem.analysis.rules import RULES
from gradmem.capture import Capture

from conftest import SCENARIOS

YAML = os.path.join(os.path.dirname(torchgen.__file__), "packaged", "autograd", "derivatives.yaml")


def all_rules():
    for name, found in RULES.items():
        for rule in found if isinstance(found, tuple) else (found,):
            yield name, rule


@pytest.fixture(scope="module")
def derivatives():
    with open(YAML, encoding="utf-8") as f:
        entries = yaml.safe_load(f)
    return {e["name"].split("(")[0]: e for e in entries}


def test_each_rule_copies_torchs_formula(derivatives):
    for name, rule in all_rules():
        entry = derivatives[rule.op]
        formulas = entry.get("dispatch", {}).get("Default", entry)
        for arg, formula in rule.torch.items():
            assert formulas[arg] == formula, (name, arg)
        args = {a.strip() for key in rule.torch for a in key.split(",")}
        assert set(rule.inputs) <= args | {"self", "other"}, name


def run_scenario(path, **params):
    with Capture() as cap:
        ns = runpy.run_path(str(path))
        if "main" in ns:
            ns["main"](**params)
    return analyze(cap.trace)


def checked(analysis):
    """{target: Gradient} for every gradient the rules computed, asserting each matched."""
    out = {}
    for r in analysis.rules.values():
        if r.name == "AccumulateGrad":
            continue
        assert r.on_file, f"no rule on file for {r.name}"
        for g in r.gradients:
            assert g.match is True, (r.name, g.target, g.value, g.torch)
            out[g.target] = g
    return out


def plain_grads(path):
    """The seed under plain torch (it retains every non-leaf's grad itself): {name: .grad}."""
    ns = runpy.run_path(str(path))
    return {k: v.grad for k, v in ns.items() if isinstance(v, torch.Tensor) and v.grad is not None}


SEED_RULES = {
    "seed_one_weight": {"grad(w)": "grad(output) · x", "grad(output)": "−grad(error)",
                        "grad(error)": "grad(loss) · 2 · error"},
    "seed_two_weights": {"grad(w)": "grad(output) · x", "grad(output)": "−grad(error)",
                         "grad(error)": "grad(loss) · 2 · error"},
    "seed_two_rows": {"grad(w)": "xᵀ · grad(output)", "grad(output)": "−grad(error)",
                      "grad(error)": "grad(error_squared) · 2 · error",
                      "grad(error_squared)": "expand(grad(loss), (2,)) / 2"},
}


@pytest.mark.parametrize("seed", sorted(SEED_RULES))
def test_seed_rules_match_torch(seed):
    path = SCENARIOS / f"{seed}.py"
    grads = checked(run_scenario(path))
    assert {t: g.formula for t, g in grads.items()} == SEED_RULES[seed]
    oracle = plain_grads(path)
    for target, g in grads.items():
        name = target[len("grad("):-1]
        np.testing.assert_allclose(parse_value(g.value), oracle[name].numpy(), rtol=1e-5)


def test_two_rows_shows_the_hand_derivation():
    grads = checked(run_scenario(SCENARIOS / "seed_two_rows.py"))
    assert grads["grad(error)"].steps == [("2 · error", "[-240, -730]")]
    assert grads["grad(error)"].numbers == "[0.5, 0.5] · [-240, -730]"
    assert grads["grad(error)"].value == "[-120, -365]"
    assert grads["grad(w)"].numbers == "[[10, 30], [15, 40]] · [120, 365]"
    assert grads["grad(w)"].value == "[12150, 16400]"


def test_mlp_rules_match_torch():
    params = dict(batch=2, width=3, depth=2, features=2)
    analysis = run_scenario(SCENARIOS / "mlp.py", **params)
    grads = checked(analysis)
    names = {r.name for r in analysis.rules.values()}
    assert {"AddmmBackward0", "ReluBackward0", "TBackward0", "MseLossBackward0"} <= names
    ns = runpy.run_path(str(SCENARIOS / "mlp.py"))
    torch.manual_seed(0)
    model_grads = {}
    # the same model, same seed, under plain torch: its parameters' .grad
    orig = torch.nn.Sequential.__call__

    def keep(self, *a, **k):
        model_grads["model"] = self
        return orig(self, *a, **k)
    torch.nn.Sequential.__call__ = keep
    try:
        ns["main"](**params)
    finally:
        torch.nn.Sequential.__call__ = orig
    for pname, p in model_grads["model"].named_parameters(prefix="model"):
        np.testing.assert_allclose(parse_value(grads[f"grad({pname})"].value), p.grad.numpy(), rtol=1e-4, atol=1e-7)


def _r(*shape):
    return torch.randn(*shape, requires_grad=True)


def _pos(*shape):
    return (torch.rand(*shape) + 0.5).requires_grad_()


PROGRAMS = {
    "arithmetic": lambda: ((_r(2, 3) + _r(3)) * _r(2, 3) - _r(2, 3) / _pos(2, 3) + (1 - _r(2, 3)) * 3 - _r(2, 3) / 4).sum(),
    "neg_rsub": lambda: (-_r(3) + torch.rsub(_r(3), _r(3))).sum(),
    "powers": lambda: ((_r(3) ** 3).sum() + (_pos(3) ** _r(3)).sum()),
    "exp_log_sqrt": lambda: (_r(3).exp() + _pos(3).log() + _pos(3).sqrt()).sum(),
    "products": lambda: ((_r(2, 3) @ _r(3, 2)).sum() + (_r(2, 3) @ _r(3)).sum() + (_r(3) @ _r(3))
                         + torch.addmm(_r(2), _r(2, 3), _r(3, 2)).sum() + torch.bmm(_r(2, 2, 3), _r(2, 3, 2)).sum()
                         + (_r(2, 2, 3) @ _r(3, 2)).sum()),
    "reductions": lambda: (_r(2, 3).mean() + _r(2, 3).mean(1).sum() + (_r(2, 3).sum(0, keepdim=True) ** 2).sum()),
    "activations": lambda: (_r(2, 3).relu() + F.gelu(_r(2, 3)) + _r(2, 3).sigmoid() + _r(2, 3).tanh()
                            + F.threshold(_r(2, 3), 0.1, 0.0)).pow(2).sum(),
    "softmaxes": lambda: ((_r(2, 3).softmax(1) * torch.randn(2, 3)).sum() + (_r(2, 3).log_softmax(1) * torch.randn(2, 3)).sum()),
    "dropout": lambda: (torch.native_dropout(_r(2, 3), 0.5, True)[0] * torch.randn(2, 3)).sum(),
    "norms": lambda: ((F.layer_norm(_r(2, 4), (4,), _r(4), _r(4)) * torch.randn(2, 4)).sum()
                      + (F.batch_norm(_r(4, 2, 2), None, None, _r(2), _r(2), training=True) * torch.randn(4, 2, 2)).sum()),
    "embedding": lambda: (F.embedding(torch.tensor([0, 2, 0]), _r(3, 2)) * torch.randn(3, 2)).sum(),
    "losses": lambda: (F.cross_entropy(_r(3, 4), torch.tensor([0, 3, 1])) + F.mse_loss(_r(2, 3), torch.randn(2, 3))
                       + F.mse_loss(_r(2, 3), _r(2, 3), reduction="sum")),
    "views": lambda: ((_r(2, 3).view(6) * torch.arange(6.)).sum() + (_r(2, 3).t() * torch.randn(3, 2)).sum()
                      + (_r(2, 3).transpose(0, 1) * torch.randn(3, 2)).sum() + (_r(1, 3).expand(2, 3) * torch.randn(2, 3)).sum()
                      + (_r(2, 3).permute(1, 0) * torch.randn(3, 2)).sum() + (_r(2, 3).unsqueeze(0) * torch.randn(1, 2, 3)).sum()
                      + (_r(1, 3).squeeze(0) * torch.randn(3)).sum() + (_r(1, 3).squeeze() * torch.randn(3)).sum()
                      + (_r(1, 3, 1).squeeze((0, 2)) * torch.randn(3)).sum()
                      + (_r(2, 3).clone() * torch.randn(2, 3)).sum() + (_r(2, 3)[1] * torch.randn(3)).sum()
                      + (_r(2, 4)[:, 1:3] * torch.randn(2, 2)).sum() + (_r(2, 3).reshape(3, 2).contiguous() * 1.5).sum()),
    "conv": lambda: ((F.conv2d(_r(1, 1, 3, 3), _r(1, 1, 2, 2), _r(1)) * torch.randn(1, 1, 2, 2)).sum()
                     + (F.conv2d(_r(1, 1, 2, 2), _r(1, 1, 2, 2), padding=1) * torch.randn(1, 1, 3, 3)).sum()
                     + (F.conv1d(_r(1, 1, 4), _r(1, 1, 2), stride=2) * torch.randn(1, 1, 2)).sum()),
    "attention": lambda: (F.scaled_dot_product_attention(_r(1, 1, 2, 2), _r(1, 1, 3, 2), _r(1, 1, 3, 2))
                          * torch.randn(1, 1, 2, 2)).sum(),
    "causal_attention": lambda: (F.scaled_dot_product_attention(_r(1, 1, 3, 2), _r(1, 1, 3, 2), _r(1, 1, 3, 2), is_causal=True)
                                 * torch.randn(1, 1, 3, 2)).sum(),
}


@pytest.fixture(scope="module")
def program_rules():
    """{program: {node name: [Gradient]}} for every small program, captured once."""
    torch.manual_seed(0)
    out = {}
    for name, program in PROGRAMS.items():
        with Capture() as cap:
            program().backward()
        found = {}
        for r in analyze(cap.trace).rules.values():
            if r.on_file and r.name != "AccumulateGrad":
                found.setdefault(r.name, []).extend(r.gradients)
        out[name] = found
    return out


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_rule_matches_torch_on_small_program(program, program_rules):
    found = program_rules[program]
    assert found, program
    for node, grads in found.items():
        assert grads, node
        for g in grads:
            assert g.match is True, (node, g.target, g.formula, g.value, g.torch)


def test_every_rule_on_file_was_checked(program_rules):
    seen = {node for found in program_rules.values() for node in found}
    missing = {name for name, _ in all_rules()} - seen
    assert not missing, sorted(missing)


# -- real models through the whole report: the rules never break analysis (issue 15) ----------
ENCODER = """
import torch, torch.nn as nn
torch.manual_seed(0)
layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, dropout=0.1, batch_first=True)
encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
opt = torch.optim.SGD(encoder.parameters(), lr=0.1)
encoder(torch.randn({batch}, {seq}, 16)).pow(2).mean().backward()
opt.step()
"""

CHECKPOINT = """
import torch, torch.nn as nn
from torch.utils.checkpoint import checkpoint
torch.manual_seed(0)
block = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
x = torch.randn(1, 1, 4, requires_grad=True)
checkpoint(block, x, use_reentrant=False).pow(2).sum().backward()
"""


def profiled_nodes(tmp_path, source):
    """``gradmem profile`` on a program: the exit code and nodes.csv, the report every rule lands in."""
    import pandas as pd
    from click.testing import CliRunner
    from gradmem.cli import main
    script, out = tmp_path / "program.py", tmp_path / "report"
    script.write_text(source)
    result = CliRunner().invoke(main, ["profile", str(script), "-o", str(out), "-q"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (out / "report.html").exists() and (out / "summary.json").exists()
    return pd.read_csv(out / "nodes.csv", keep_default_na=False, dtype=str)


def _on_file(nodes, name):
    """The rows of one kind of node: nodes.csv numbers them (``TransposeBackward0#3``)."""
    return nodes[nodes["name"].str.fullmatch(name + r"(#\d+)?")]


@pytest.mark.parametrize("batch, seq", [(1, 1), (2, 5)])
def test_transformer_encoder_stack_goes_through_the_rules(tmp_path, batch, seq):
    """transpose(-2, -1) saves dims torch hands back as 2**64 - 2: recorded signed, the rule
    reads as the program wrote it and is evaluated (it crashed numpy with OverflowError)."""
    nodes = profiled_nodes(tmp_path, ENCODER.format(batch=batch, seq=seq))
    for name in ("TransposeBackward0", "AddmmBackward0", "NativeLayerNormBackward0", "MeanBackward0"):
        assert (_on_file(nodes, name)["rule"] != "no rule on file").all(), name
    transposes = set(_on_file(nodes, "TransposeBackward0")["rule"])
    assert any(", -2, -1)" in r for r in transposes), transposes
    assert not any("18446744073709551" in r for r in nodes["rule"])
    if batch * seq == 1:   # small enough for values: the negative-dim transposes are evaluated
        t = _on_file(nodes, "TransposeBackward0")
        assert set(t[t["rule"].str.contains(", -2, -1)", regex=False)]["rule_check"]) == {"matches torch"}
        # the final LayerNorm's input gradient is zero in exact arithmetic (the loss is the
        # squared norm of its output): float32 noise on both sides, not a difference
        assert not nodes["rule_check"].str.contains("differs").any(), \
            nodes.loc[nodes["rule_check"].str.contains("differs"), "name"].tolist()


def test_close_scales_with_the_incoming_gradient_and_still_catches_a_wrong_rule():
    from gradmem.analysis.derivation import close
    noise_here, noise_torch = [3e-7, -1e-7], [-2e-7, 4e-7]
    assert not close(noise_here, noise_torch)                  # judged on the result alone: "differs"
    assert close(noise_here, noise_torch, incoming=2.0)        # against the 2.0 that arrived: noise
    assert not close([0.5, -0.25], [0.25, -0.25], incoming=2.0)   # a real difference still is one


def test_non_reentrant_checkpoint_goes_through_the_rules(tmp_path):
    """checkpoint packs the block's saved tensors with its own hooks, so gradmem sees the
    field but never its value: the rule is written with torch's field name and gives no
    numbers there (it crashed on None.ndim), while the nodes outside the block are checked."""
    nodes = profiled_nodes(tmp_path, CHECKPOINT)
    tanh = _on_file(nodes, "TanhBackward0").iloc[0]
    assert tanh["rule"].endswith("· (1 − result^2)") and tanh["rule_values"] == "" and tanh["rule_check"] == ""
    for _, addmm in _on_file(nodes, "AddmmBackward0").iterrows():
        assert "mat2ᵀ" in addmm["rule"] and "grad(block." in addmm["rule"]
        assert "mat1" not in addmm["rule_values"] and "mat2" not in addmm["rule_values"]
    assert set(_on_file(nodes, "PowBackward0")["rule_check"]) == {"matches torch"}


def test_a_rule_the_values_do_not_fit_gives_no_numbers():
    """The numbers only illustrate a rule: values it cannot take leave its text and no numbers."""
    from gradmem.analysis.derivation import Env, gradient
    from gradmem.analysis.rules import RULES
    rule = RULES["TransposeBackward0"]
    env = Env([np.ones((2, 3))], {}, {"dim0": 0, "dim1": 2 ** 70})   # no int64 holds that dim
    g = gradient("grad(x)", ("test-bad-dim",), rule.grads[0], env, lambda kind, key: "grad(y)", np.ones((3, 2)))
    assert g.formula == f"transpose(grad(y), 0, {2 ** 70})"
    assert (g.value, g.numbers, g.steps, g.match) == ("", "", [], None)


def test_rules_on_large_tensors_keep_their_text_and_print_no_numbers():
    """The loss's gradient (1) is a small value, so a rule over a large tensor can be
    evaluated: the page would get a million numbers (seconds to print, nothing to read).
    Numbers are shown only where every value is small; the rule's text always is."""
    w = torch.randn(256, requires_grad=True)
    with Capture() as cap:
        x = torch.randn(4000, 256)
        ((x @ w - 1) ** 2).mean().backward()
    nodes = analyze(cap.trace).nodes.set_index("name")
    assert nodes.loc["MeanBackward0", "rule"] != "no rule on file"
    assert nodes["rule_values"].str.len().max() < 400, nodes["rule_values"].str.len().max()
