"""The value column of a small .grad shows what .grad holds: not the uninitialized memory
AccumulateGrad copies into, and not the first of several accumulated gradients."""
import torch

from gradmem.analysis import analyze
from gradmem.capture import Capture


def value(tensors, name: str) -> str:
    rows = tensors[tensors["name"] == name]
    assert len(rows) == 1, list(tensors["name"])
    return rows.iloc[0]["value"]


def test_grad_copied_into_empty_storage_shows_its_values():
    # sum's backward expands the gradient (stride 0): AccumulateGrad cannot steal it, so it
    # makes w.grad with empty_strided and copies into it; the preview at creation read garbage
    with Capture() as cap:
        w = torch.randn(2, 3, requires_grad=True)
        w.sum().backward()
    t = analyze(cap.trace).tensors
    assert value(t, "w.grad") == "[[1, 1, 1], [1, 1, 1]]"
    assert t.loc[t["created_by"] == "empty_strided", "value"].isna().all()


def test_grad_accumulated_over_two_backward_calls_shows_the_sum():
    with Capture() as cap:
        w = torch.tensor([1.0, 2.0], requires_grad=True)
        h = w * w
        h.retain_grad()
        loss = (h * 3).sum()
        loss.backward(retain_graph=True)
        loss.backward()                  # w.grad += 2w * 3 in place; h.grad = 3 + 3, a new copy
    t = analyze(cap.trace).tensors
    assert value(t, "w.grad") == "[12, 24]"
    kept = t[t["name"] == "h.grad"].sort_values("alloc_seq")
    assert list(kept["value"]) == ["[3, 3]", "[6, 6]"]
