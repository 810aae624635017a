"""Several training steps: the answer speaks of one step (the peak's) and never shows a sum
over the run as memory held at once (issue 12, item 5).

The program is a real training loop (three steps of forward, backward, SGD) that also
holds an intermediate and retains a gradient, as real code does. The oracle is the trace:
which backward call each step belongs to, and a brute-force count of the bytes alive after
every event.
"""
import re

import pytest
import torch
from torch import nn

from gradmem.analysis import analyze
from gradmem.capture import Capture
from gradmem.render.answer import answer
from gradmem.render.terminal import summary_text
from gradmem.render.units import human_bytes

STEPS, BATCH, WIDTH = 3, 64, 128


def train():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.Tanh(), nn.Linear(WIDTH, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(STEPS):
        x, y = torch.randn(BATCH, 16), torch.randn(BATCH, 1)
        hidden = model[1](model[0](x))        # the program holds this one across the step
        hidden.retain_grad()
        out = model[4](model[3](model[2](hidden)))
        nn.functional.mse_loss(out, y).backward()
        opt.step()
        opt.zero_grad()


@pytest.fixture(scope="module")
def run():
    with Capture() as cap:
        train()
    return analyze(cap.trace)


def sections(a) -> dict:
    return {s["head"]: s["lines"] for s in answer(a)}


def brute_most_at_once(rows) -> int:
    """After each allocation among ``rows``, the bytes of ``rows`` alive: the largest."""
    spans = [(int(r.alloc_seq), float("inf") if r.free_seq != r.free_seq or r.free_seq is None else int(r.free_seq),
              int(r.nbytes)) for r in rows.itertuples()]
    return max((sum(n for a, f, n in spans if a <= q < f) for q, _, _ in spans), default=0)


def peak_call(a) -> int:
    return int(a.steps.set_index("step").loc[a.summary.peak_step, "backward"])


def test_the_answer_speaks_of_the_peaks_training_step(run):
    a, k = run, peak_call(run)
    assert a.summary.backward_calls == STEPS
    heads = list(sections(a))
    lead = f"In training step {k} of {STEPS} (the peak's), "
    assert heads[0].startswith(lead + "forward saved "), heads[0]
    # the freed, kept and retained sections speak of the same step
    assert sum(h.startswith(lead) for h in heads) == 4, heads


def test_the_saved_bytes_are_those_of_one_step_and_each_step_is_listed(run):
    a, k = run, peak_call(run)
    t, steps = a.tensors, a.steps
    begins = steps[steps["phase"] == "backward"].groupby("backward")["step"].min()
    after_previous = begins.get(k - 1, 0)
    mine = t[(t["role"] == "activation") & (t["alloc_step"] > after_previous) & (t["alloc_step"] < begins[k])]
    # oracle: numel * element_size of what this model saves, per step: ReLU's and Tanh's
    # outputs (BATCH x WIDTH), the last Linear's input is the Tanh output (already counted),
    # the middle Linear's input is `hidden` (ReLU's output), and the prediction (MSE)
    assert int(mine["nbytes"].sum()) == 2 * BATCH * WIDTH * 4 + BATCH * 1 * 4
    head = next(iter(sections(a)))
    assert f"forward saved {human_bytes(int(mine['nbytes'].sum()))} of new memory" in head
    lines = sections(a)[head]
    per_step = next(ln for ln in lines if ln.startswith("New memory saved for backward, per training step: "))
    assert all(f"step {i} {human_bytes(int(mine['nbytes'].sum()))}" in per_step for i in range(1, STEPS + 1))


def test_held_intermediates_are_said_at_most_at_once_never_summed_over_the_run(run):
    a, k = run, peak_call(run)
    kept = next(lines for head, lines in sections(a).items() if "kept only because the program held" in head)
    line = next(ln for ln in kept if "never needed by backward" in ln)
    f = a.answer_facts
    inter = f.intermediates
    assert len(inter) >= 2
    most = brute_most_at_once(inter)
    assert f"at most {human_bytes(most)} of them alive at once" in line or f"{human_bytes(most)}, all alive at once" in line
    everything = a.tensors[a.tensors["role"] == "intermediate"]
    assert int(everything["nbytes"].sum()) > most                      # a sum over the run would say more
    assert human_bytes(int(everything["nbytes"].sum())) not in line
    assert all(c == k for c in set(inter["alloc_step"].map(lambda s: step_call(a, s))))


def step_call(a, step) -> int:
    """The training step an allocation step belongs to: the first backward call after it."""
    steps = a.steps
    later = steps[(steps["step"] >= step) & steps["backward"].notna()]
    return int(later["backward"].iloc[0])


def test_retain_grad_copies_are_those_of_one_step(run):
    a, k = run, peak_call(run)
    head = next(h for h in sections(a) if "retain_grad() kept" in h)
    f = a.answer_facts
    assert len(f.retained) == 1 and f"kept 1 extra copy ({human_bytes(BATCH * WIDTH * 4)})" in head, head
    assert len(a.tensors[a.tensors["role"] == "retained_grad"]) == STEPS    # one per step in the run


def test_terminal_names_the_step_of_its_saved_list(run):
    text = summary_text(run)
    k = peak_call(run)
    assert f"  saved for backward in training step {k} of {STEPS} (the peak's):" in text
    assert re.search(rf"backward: \d+ nodes in {STEPS} calls", text)


def test_one_backward_call_keeps_the_plain_words():
    with Capture() as cap:
        w = torch.randn(8, requires_grad=True)
        h = w * 2
        h.retain_grad()
        (h * h).sum().backward()
    heads = list(sections(analyze(cap.trace)))
    assert heads[0].startswith("Autograd saved ") and not any("training step" in h for h in heads)


def test_the_module_table_has_one_steps_activations_beside_the_runs_sum(run):
    """modules.csv keeps the run's sum (documented as such); the step columns, which the
    page's module tree shows, are one backward's: a third of it in three equal steps."""
    m = run.modules
    one_step = BATCH * WIDTH * 4 * 2 + BATCH * 4   # as in the saved-bytes test: ReLU, Tanh, the prediction
    assert int(m["step_activation_bytes"].sum()) == one_step
    assert int(m["activation_bytes"].sum()) == STEPS * one_step


def test_checkpoint_recompute_is_backwards_not_forwards_and_stays_in_its_step():
    """What checkpoint remakes in step k's backward belongs to step k (it was counted in
    the step after it) and is not "forward saved": it gets its own line."""
    from torch.utils.checkpoint import checkpoint
    torch.manual_seed(0)
    block = nn.Sequential(nn.Linear(16, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.Tanh())
    head = nn.Linear(WIDTH, 1)
    opt = torch.optim.SGD([*block.parameters(), *head.parameters()], lr=0.1)
    with Capture() as cap:
        for _ in range(2):
            x = torch.randn(BATCH, 16)
            head(checkpoint(block, x, use_reentrant=False)).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
    a = analyze(cap.trace)
    t, k = a.tensors, a.answer_facts.described.call
    by_module = a.summary.activations_by_module
    remade = t[t["recomputed"] & (t["role"] == "activation")]
    tops = {top["name"] for g in by_module["modules"] for top in g["top"]}
    assert len(remade) and not tops & set(remade["name"]), tops
    forward_act = t[(t["role"] == "activation") & ~t["recomputed"] & (t["phase"] != "backward")]
    per_step = int(forward_act["nbytes"].sum()) // 2
    assert by_module["bytes"] == per_step     # two equal steps; recomputed rows excluded
    lead = answer(a)[0]
    line = next(ln for ln in lead["lines"] if ln.startswith("Backward ran checkpointed forward passes again"))
    mine = remade[remade["alloc_step"].map(lambda s: step_call(a, s)) == k]
    assert f"kept {len(mine)} activation(s)" in line
