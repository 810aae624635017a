"""Common layers and model patterns, built from torch alone, run under plain python and
under gradmem: the same result, gradients equal to the byte and no exception that plain
python does not raise (issue 12). Under --fake each must run too (shapes only).

Sizes are drawn by Hypothesis: by default one derandomized size per pattern, so the
shared suite stays fast and cannot flake; GRADMEM_HYPOTHESIS=explore (10 per pattern) or
=thorough (50) search further.
"""
from __future__ import annotations

import copy
import math
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.checkpoint import checkpoint

import gradmem

COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
settings.register_profile("patterns-ci", max_examples=1, derandomize=True, database=None, **COMMON)
settings.register_profile("patterns-explore", max_examples=10, **COMMON)
settings.register_profile("patterns-thorough", max_examples=50, **COMMON)
PROFILE = "patterns-" + os.environ.get("GRADMEM_HYPOTHESIS", "ci")
sizes = st.fixed_dictionaries({"batch": st.integers(1, 3), "seq": st.integers(1, 4), "width": st.sampled_from([4, 8])})


# -- the patterns: each builds its model and runs one step; returns what the step made -------
def embedding_padding(batch, seq, width):
    emb = nn.Embedding(10, width, padding_idx=0)
    ids = torch.arange(batch * seq).reshape(batch, seq) % 10
    return emb(ids).sum()


def deepcopied_stack(batch, seq, width):
    layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    return encoder(torch.randn(batch, seq, width)).pow(2).mean()


def weight_tying(batch, seq, width):
    emb = nn.Embedding(12, width)
    head = nn.Linear(width, 12, bias=False)
    head.weight = emb.weight
    logits = head(emb(torch.arange(batch * seq).reshape(batch, seq) % 12))
    return F.cross_entropy(logits.reshape(-1, 12), torch.arange(batch * seq) % 12)


class Masked(nn.Module):
    def __init__(self, seq, width):
        super().__init__()
        self.proj = nn.Linear(width, width)
        self.register_buffer("mask", torch.tril(torch.ones(seq, seq, dtype=torch.bool)))

    def forward(self, x):
        scores = self.proj(x) @ x.transpose(-1, -2)
        scores = torch.where(self.mask, scores, torch.full_like(scores, -1e4))
        return scores.softmax(-1) @ x


def buffer_and_where_mask(batch, seq, width):
    return Masked(seq, width)(torch.randn(batch, seq, width)).sum()


def sdpa(batch, seq, width):
    q, k, v = (nn.Linear(width, width)(torch.randn(batch, 2, seq, width)) for _ in range(3))
    return F.scaled_dot_product_attention(q, k, v, is_causal=True).sum()


def gelu_python_float(batch, seq, width):
    x = nn.Linear(width, width)(torch.randn(batch, seq, width))
    y = 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    return (y + F.gelu(x, approximate="tanh")).sum()


def lstm(batch, seq, width):
    out, (h, c) = nn.LSTM(width, width, num_layers=2, batch_first=True)(torch.randn(batch, seq, width))
    return out.sum() + h.sum() + c.sum()


def gru(batch, seq, width):
    out, h = nn.GRU(width, width, batch_first=True, bidirectional=True)(torch.randn(batch, seq, width))
    return out.sum() + h.sum()


def conv_batchnorm(batch, seq, width):
    net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                        nn.Conv2d(width, 2, 1))
    return net(torch.randn(batch + 1, 3, seq + 2, seq + 2)).mean()


def multihead_attention(batch, seq, width):
    mha = nn.MultiheadAttention(width, 2, batch_first=True)
    x = torch.randn(batch, seq, width)
    mask = torch.triu(torch.ones(seq, seq, dtype=torch.bool), 1)
    out, weights = mha(x, x, x, attn_mask=mask)
    return out.sum() + weights.sum()


def inplace_on_views(batch, seq, width):
    w = nn.Parameter(torch.randn(batch, seq, width))
    x = w * 2
    x[:, 0].mul_(3)
    x.view(-1)[:width].add_(1)
    x.transpose(0, 1).relu_()
    return x.sum()


def checkpoint_non_reentrant(batch, seq, width):
    block = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))
    x = torch.randn(batch, seq, width, requires_grad=True)
    return checkpoint(block, x, use_reentrant=False).pow(2).sum()


def checkpoint_reentrant(batch, seq, width):
    block = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, width))
    x = torch.randn(batch, seq, width, requires_grad=True)
    return checkpoint(block, x, use_reentrant=True).pow(2).sum()


def bf16_autocast(batch, seq, width):
    net = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(batch, seq, width))
    return out.float().pow(2).mean()


PATTERNS = [embedding_padding, deepcopied_stack, weight_tying, buffer_and_where_mask, sdpa, gelu_python_float,
            lstm, gru, conv_batchnorm, multihead_attention, inplace_on_views, checkpoint_non_reentrant,
            checkpoint_reentrant, bf16_autocast]


# -- running one -------------------------------------------------------------------------------
def leaf_grads(pattern, size) -> tuple[str | None, list]:
    """Run the step, backward included: (exception type or None, every leaf's .grad in the
    order they were made). Leaves are found from the loss's graph, so nothing is missed."""
    torch.manual_seed(0)
    try:
        loss = pattern(**size)
        leaves = _leaves(loss)
        loss.backward()
    except Exception as exc:   # what plain python raises, gradmem must raise too
        return type(exc).__name__, []
    return None, [leaf.grad for leaf in leaves]


def _leaves(loss) -> list:
    seen, out, stack = set(), [], [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            out.append(node.variable)
        stack.extend(n for n, _ in node.next_functions)
    return out   # graph order: the same graph gives the same order, with or without gradmem


@pytest.mark.parametrize("pattern", PATTERNS, ids=[p.__name__ for p in PATTERNS])
@settings(settings.get_profile(PROFILE))
@given(size=sizes)
def test_pattern_runs_the_same_under_gradmem(pattern, size):
    plain_error, plain = leaf_grads(pattern, size)
    with gradmem.capture(verify=False) as cap:
        error, grads = leaf_grads(pattern, size)
    assert error == plain_error
    assert len(grads) == len(plain)
    for ours, theirs in zip(grads, plain):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert torch.equal(ours, theirs)
    assert cap.trace.meta.status == "complete" and not (cap.summary["error"] or {}).get("gradmem")
    assert cap.summary["backward_calls"] >= 1


@pytest.mark.parametrize("pattern", PATTERNS, ids=[p.__name__ for p in PATTERNS])
def test_pattern_runs_under_fake_tensors(pattern):
    size = {"batch": 2, "seq": 3, "width": 4}
    with gradmem.capture(fake=True) as cap:
        error, _ = leaf_grads(pattern, size)
    assert error is None
    assert cap.summary["backward_calls"] >= 1 and cap.summary["tracked_peak_bytes"] > 0
