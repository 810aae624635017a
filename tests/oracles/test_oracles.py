"""gradmem's numbers against independent oracles: the allocator's record of allocations
and frees, and numel * element_size sums."""
import pytest
import torch
from torch import nn

from gradmem.analysis import analyze
from gradmem.capture import Capture
from oracles import SavedStorages, allocator_peak, allocator_record


def linear_mse(n=20000, d=64):
    torch.manual_seed(0)
    x, y = torch.randn(n, d), torch.randn(n)
    w = torch.randn(d, requires_grad=True)
    error = y - x @ w
    loss = (error ** 2).mean()
    loss.backward()
    return w.grad.clone()


def mlp_step(batch=512, width=256, depth=3):
    torch.manual_seed(0)
    layers, size = [], 64
    for _ in range(depth):
        layers += [nn.Linear(size, width), nn.ReLU()]
        size = width
    model = nn.Sequential(*layers, nn.Linear(size, 1))
    x, y = torch.randn(batch, 64), torch.randn(batch, 1)
    loss = nn.functional.mse_loss(model(x), y)
    loss.backward()
    return model


def profiled(fn):
    with Capture() as cap:
        result = fn()
    return result, analyze(cap.trace)


@pytest.mark.parametrize("fn", [linear_mse, mlp_step], ids=["linear_mse", "mlp"])
def test_peak_agrees_with_allocator(fn):
    (_, analysis), allocs = allocator_record(lambda: profiled(fn))
    # the allocator also saw gradmem's own (tiny) pandas-free work: compare peaks only
    alloc_peak = allocator_peak(allocs)
    ours = analysis.summary["peak_bytes"]
    assert abs(ours - alloc_peak) <= 0.02 * alloc_peak, (ours, alloc_peak)


@pytest.mark.parametrize("fn", [linear_mse, mlp_step], ids=["linear_mse", "mlp"])
def test_allocator_peak_same_with_and_without_gradmem(fn):
    _, bare = allocator_record(fn)
    _, with_gradmem = allocator_record(lambda: profiled_capture_only(fn))
    assert allocator_peak(with_gradmem) == allocator_peak(bare)


def profiled_capture_only(fn):
    with Capture():
        return fn()


def test_role_totals_match_pack_hooks_and_storage_sizes():
    saved = SavedStorages()
    with saved.hooks():
        model = mlp_step()
    params = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    grads = {p.grad.untyped_storage().data_ptr(): p.grad.untyped_storage().nbytes() for p in model.parameters()}
    # gradmem, on the same step
    with Capture() as cap:
        model2 = mlp_step()
        del model2
    t = analyze(cap.trace).tensors
    by_role = t.groupby("role")["nbytes"].sum()
    assert by_role["parameter"] == sum(params.values())
    assert by_role["param_grad"] == sum(grads.values())
    activations = sum(b for ptr, b in saved.storages.items() if ptr not in params)
    # the batch x (saved by the first Linear) and target y (saved by MseLossBackward0)
    # are inputs, not activations
    x_bytes, y_bytes = 512 * 64 * 4, 512 * 4
    assert by_role["activation"] == activations - x_bytes - y_bytes
    assert t.loc[t["role"] == "input", "nbytes"].sum() == x_bytes + y_bytes
    assert t["nbytes"].sum() == sum(t["nbytes"])   # counted once per storage
    assert t["id"].is_unique


def test_views_counted_once():
    with Capture() as cap:
        base = torch.randn(1000, requires_grad=True)
        view = base[:10]
        (view * 2).sum().backward()
    t = analyze(cap.trace).tensors
    assert (t["name"] == "base").sum() == 1 and "view" not in set(t["name"])
