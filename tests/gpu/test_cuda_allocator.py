"""The CUDA caching allocator model, on hand-built storage tables (GIVEN / WHEN / THEN).
Expected figures follow the rules in c10/cuda/CUDACachingAllocator.cpp; on a machine with
CUDA the last test checks the model against the real allocator."""
import pandas as pd
import pytest
import torch

from gradmem.analysis import analyze
from gradmem.analysis.cuda_allocator import estimate, round_size, segment_size
from gradmem.capture import Capture

MiB = 1 << 20


def table(*storages, device="cuda:0") -> pd.DataFrame:
    """storages: (nbytes, alloc_seq, free_seq or None)."""
    return pd.DataFrame({
        "id": range(1, len(storages) + 1), "device": device,
        "nbytes": [s[0] for s in storages], "alloc_seq": [s[1] for s in storages],
        "free_seq": pd.array([s[2] for s in storages], dtype="Int64"),
    })


def test_rounding_rules():
    assert [round_size(n) for n in (1, 4, 512, 513, 1000)] == [512, 512, 512, 1024, 1024]
    assert segment_size(512) == segment_size(MiB) == 2 * MiB
    assert segment_size(MiB + 512) == segment_size(10 * MiB - 512) == 20 * MiB
    assert segment_size(10 * MiB) == 10 * MiB and segment_size(11 * MiB + 512) == 12 * MiB


def test_small_tensors_share_one_small_segment():
    est = estimate(table((4, 0, None), (8, 1, None), (1000, 2, None)))
    assert est == {"allocated_peak_bytes": 512 + 512 + 1024, "reserved_peak_bytes": 2 * MiB, "segments": 1}


def test_a_freed_block_is_reused_and_reserved_never_shrinks():
    est = estimate(table((3 * MiB, 0, 1), (3 * MiB, 2, None)))
    assert est == {"allocated_peak_bytes": 3 * MiB, "reserved_peak_bytes": 20 * MiB, "segments": 1}


def test_mid_size_requests_split_one_20_mib_segment_until_it_is_full():
    est = estimate(table(*[(6 * MiB, i, None) for i in range(4)]))
    # 20 MiB holds three 6 MiB blocks; the 2 MiB left is too small for the fourth
    assert est == {"allocated_peak_bytes": 24 * MiB, "reserved_peak_bytes": 40 * MiB, "segments": 2}


def test_large_block_not_split_when_the_rest_is_at_most_1_mib():
    # 11 MiB + 512 B reserves a 12 MiB segment; the rest (just under 1 MiB) stays in the block
    est = estimate(table((11 * MiB + 512, 0, None)))
    assert est["allocated_peak_bytes"] == 12 * MiB and est["reserved_peak_bytes"] == 12 * MiB


def test_freed_neighbours_merge():
    # two 8 MiB blocks and a 4 MiB rest in one 20 MiB segment; freeing both gives 16 MiB back
    est = estimate(table((8 * MiB, 0, 2), (8 * MiB, 1, 3), (16 * MiB, 4, None)))
    assert est == {"allocated_peak_bytes": 16 * MiB, "reserved_peak_bytes": 20 * MiB, "segments": 1}


def test_cpu_storages_get_no_estimate():
    assert estimate(table((4, 0, None), device="cpu")) is None


WORKSPACE = 64 * MiB   # kernel scratch (reductions, cuBLAS) goes through the allocator too, unseen by us


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_matches_the_real_allocator():
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_stats()
    base_alloc, base_reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    with Capture() as cap:
        x = torch.randn(20_000, 256, device="cuda")     # 20 MB: large pool
        w = torch.randn(256, device="cuda", requires_grad=True)
        ((torch.randn(20_000, 256, device="cuda") - x * w) ** 2).mean().backward()
    est = analyze(cap.trace).summary["cuda_allocator"]
    real_alloc = torch.cuda.max_memory_allocated() - base_alloc
    real_reserved = torch.cuda.max_memory_reserved() - base_reserved
    assert 0 <= real_alloc - est["allocated_peak_bytes"] <= WORKSPACE
    assert abs(real_reserved - est["reserved_peak_bytes"]) <= WORKSPACE
