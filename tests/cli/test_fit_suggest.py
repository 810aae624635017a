"""gradmem fit --suggest: save_on_cpu and checkpoint_sequential, each claim checked against
an independent oracle.

save_on_cpu cannot run for what it is on a CPU-only torch (a fake "CUDA" run is a CPU run
relabelled there, so the host copy would stay on the "device"). gradmem measures it with a
hook pair that has its effect on device memory (gradmem/suggest.py). The tests hold that
pair to three oracles: a re-run of the printed code with the test's own hooks put where
save_on_cpu is; the bytes the original run's tensors table says were saved inside the
wrapped blocks (numel * element_size, one host copy per slot); and, for the pack side, the
real save_on_cpu on a real CPU run, where the allocator sees the copies."""
import json
import re

import pytest
import torch
from click.testing import CliRunner

from conftest import ROOT, SCENARIOS
from gradmem.analysis import analyze
from gradmem.cli import main
from gradmem.scenario import load_scenario, run_scenario
from gradmem.suggest import HostCopies, save_on_cpu_wrap

BLOCKS = ROOT / "tests" / "fit_programs" / "blocks.py"
BATCH, D = 512, 64                                   # blocks.py's defaults: 4 blocks of d -> 4d -> d
BUDGET = 5_000_000                                   # batch=512 does not fit (6 MiB reserved)
WRAPPED = ["layers.0", "layers.1", "layers.2", "layers.3", "head"]
SAVE_ON_CPU = "torch.autograd.graph.save_on_cpu(pin_memory=True)"

# the test's own stand-in for save_on_cpu, written apart from gradmem's: the saved tensor is
# dropped (only its shape is kept) and a new tensor of that shape is made when backward reads it
TEST_HOOKS = '''
import torch as _t


def _pack(tensor):
    return tuple(tensor.shape), tensor.dtype, tensor.device


def _unpack(packed):
    shape, dtype, device = packed
    return _t.empty(shape, dtype=dtype, device=device)


def _to_host():
    return _t.autograd.graph.saved_tensors_hooks(_pack, _unpack)


def _on_host(forward):
    def run(*args):
        with _to_host():
            return forward(*args)
    return run
'''


def fit(*args):
    return CliRunner().invoke(main, ["fit", *map(str, args)], catch_exceptions=False)


def suggestions(folder) -> list[dict]:
    return json.loads((folder / "fit.json").read_text())["suggestions"]


def paste(tmp_path, code: str, after: str, source, header: str = "", name: str = "pasted.py"):
    """The scenario with ``code`` pasted after the line containing ``after`` (indented to it)."""
    lines = source.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if after in line)
    indent = re.match(r"\s*", lines[i]).group(0)
    path = tmp_path / name
    path.write_text(header + "\n".join(lines[:i + 1] + [indent + c for c in code.splitlines()] + lines[i + 1:]) + "\n")
    return path


def fake(path, device="cpu", **params):
    session, failure = run_scenario(load_scenario(path), params, device, fake=True, verify=False)
    assert failure is None, failure
    return analyze(session.trace)


def reserved_peak(a) -> int:
    return a.summary["cuda_allocator"]["reserved_peak_bytes"]


def end_of_forward(a):
    """The last forward step (blocks.py's ``mean``): every saved slot is still held."""
    steps = a.steps
    return steps[steps["phase"] == "forward"].iloc[-1]


@pytest.fixture(scope="module")
def blocks_cuda(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit") / "blocks-cuda"
    r = fit(BLOCKS, "--param", "batch", "--budget", BUDGET, "--device", "cuda", "--suggest", "-o", out, "-q")
    assert r.exit_code == 0, r.output
    found = [s for s in suggestions(out) if s["title"].startswith("save_on_cpu")]
    assert len(found) == 1, [s["title"] for s in suggestions(out)]
    BLOCKS_CUDA_SUGGESTIONS[:] = suggestions(out)
    return found[0], r.output, fake(BLOCKS, "cuda", batch=BATCH)


BLOCKS_CUDA_SUGGESTIONS: list = []   # every suggestion of the blocks_cuda run


def test_save_on_cpu_code_is_the_real_thing_and_printed(blocks_cuda):
    s, text, _ = blocks_cuda
    assert SAVE_ON_CPU in s["code"] and repr(WRAPPED) in s["code"]
    assert s["title"] == f"save_on_cpu of net's children {', '.join(WRAPPED)}"
    assert SAVE_ON_CPU in text and "of device memory" in text
    assert "host memory for the copies: 5.1 MiB (5,308,672 B) held at once" in text


def test_save_on_cpu_peak_is_a_rerun_of_the_pasted_code(blocks_cuda, tmp_path):
    """The printed code, pasted, with the test's hooks where save_on_cpu is: same peak."""
    s, _, base = blocks_cuda
    code = s["code"].replace(SAVE_ON_CPU, "_to_host()")
    rerun = fake(paste(tmp_path, code, "net = Net(d, depth)", BLOCKS, TEST_HOOKS), "cuda", batch=BATCH)
    assert s["peak_bytes"] == reserved_peak(rerun)               # --device cuda compares reserved bytes
    assert s["saves_bytes"] == reserved_peak(base) - reserved_peak(rerun) > 0
    assert s["fits"] is (reserved_peak(rerun) <= BUDGET)


def _slots_inside(a, tensors, names) -> list[tuple[int, int, int]]:
    """(nbytes, saved slots of nodes made inside the named modules, all saved slots) of each
    storage; a node's module is the nodes table's (the module its forward op ran in)."""
    inside = {n for n, m in zip(a.nodes["name"], a.nodes["module"])
              if any(m == f"net.{w}" or str(m).startswith(f"net.{w}.") for w in names)}
    out = []
    for nbytes, saved_by in zip(tensors["nbytes"], tensors["saved_by"].fillna("")):
        slots = [f.rsplit(".", 1)[0] for f in saved_by.split(";") if f]
        out.append((int(nbytes), sum(n in inside for n in slots), len(slots)))
    return out


def test_save_on_cpu_host_bytes_are_one_copy_per_slot_inside_the_blocks(blocks_cuda):
    """Oracle from the original run's tensors table: every slot inside the blocks is one
    host copy of numel * element_size bytes (all its tensors are whole storages), all held
    at once at the end of forward; and by hand for blocks.py."""
    s, _, base = blocks_cuda
    from_table = sum(nbytes * n for nbytes, n, _ in _slots_inside(base, base.tensors, WRAPPED))
    b, d = BATCH, D
    by_hand = (b * d * 4                                   # layers.0.up's input x (x needs no grad: no weight saved)
               + 4 * 2 * b * 4 * d * 4                     # each block's relu output, saved by relu and by down
               + 7 * 4 * d * d * 4                         # the weights saved by the other seven Linears of the blocks
               + 3 * b * d * 4 + b * d * 4                 # the inputs of layers.1-3 and of head
               + d * 4)                                    # head's weight
    assert s["host_bytes"] == from_table == by_hand == 5_308_672
    assert s["host_pinned_bytes"] == by_hand               # every copy here is a power of two already


def test_save_on_cpu_frees_exactly_the_activations_saved_only_inside_the_blocks(blocks_cuda):
    """At the end of forward the device holds what the original run held, less every
    storage alive then whose slots were all inside the blocks and that the program does not
    hold itself (x, the parameters); head's output (saved by pow, outside) stays."""
    _, _, base = blocks_cuda
    copies = HostCopies()
    with save_on_cpu_wrap(WRAPPED, copies)():
        moved = fake(BLOCKS, "cuda", batch=BATCH)
    t = base.tensors
    alive = t[~(t["free_step"] <= end_of_forward(base)["step"])]
    held = alive["role"].isin(["input", "parameter"])
    rows = _slots_inside(base, alive[~held], WRAPPED)
    off_device = sum(nbytes for nbytes, n, total in rows if total and n == total)
    assert off_device == 4 * BATCH * 4 * D * 4 + 4 * BATCH * D * 4 == 2_621_440   # relu outputs, block outputs
    assert end_of_forward(base)["live_bytes"] - end_of_forward(moved)["live_bytes"] == off_device
    assert copies.peak == 5_308_672


def test_the_hooks_free_and_hold_what_real_save_on_cpu_does_on_a_real_cpu_run(blocks_cuda, tmp_path):
    """The pack side, against the real thing: on a real CPU run the host copies are on the
    same allocator, so at the end of forward the real save_on_cpu holds what gradmem's hooks
    leave on the device plus the host bytes they counted, by the allocator's own record."""
    s, _, _ = blocks_cuda
    # the Python engine: the native one sees save_on_cpu's copies (ops inside the program's
    # own pack hook) only as unattributed bytes in the op that saved (README: known differences)
    session, failure = run_scenario(load_scenario(paste(tmp_path, s["code"], "net = Net(d, depth)", BLOCKS)),
                                    dict(batch=BATCH), engine="python")
    assert failure is None, failure
    real = end_of_forward(analyze(session.trace))
    copies = HostCopies()
    with save_on_cpu_wrap(WRAPPED, copies)():
        hooked = end_of_forward(fake(BLOCKS, batch=BATCH))
    assert real["op"] == hooked["op"] == "mean"
    assert real["allocator_bytes"] == real["live_bytes"] == hooked["live_bytes"] + copies.peak
    assert copies.peak == s["host_bytes"]


def test_save_on_cpu_is_not_offered_on_cpu(tmp_path):
    """On --device cpu the copy is more memory on the same device: not offered."""
    r = fit(BLOCKS, "--param", "batch", "--budget", "3MB", "--suggest", "-o", tmp_path / "b", "-q")
    assert r.exit_code == 0, r.output
    titles = [s["title"] for s in suggestions(tmp_path / "b")]
    assert titles and not any("save_on_cpu" in t for t in titles) and SAVE_ON_CPU not in r.output


ONE_LINEAR = '''import torch
from torch import nn


def main(batch: int = 4096, d: int = 256):
    model = nn.Sequential(nn.Linear(d, 1))
    x = torch.randn(batch, d)
    model(x).sum().backward()
'''


def test_save_on_cpu_is_not_offered_where_it_saves_nothing(tmp_path):
    """One Linear saves only x (the program holds it) and its weight: nothing leaves the
    device, and backward's copies only add. The re-run of the code agrees it saves nothing."""
    program = tmp_path / "one_linear.py"
    program.write_text(ONE_LINEAR)
    r = fit(program, "--param", "batch", "--budget", "2MiB", "--device", "cuda", "--suggest", "-o", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert not any("save_on_cpu" in s["title"] for s in suggestions(tmp_path / "o"))
    assert "save_on_cpu of model's children does not lower the device peak" in r.output and SAVE_ON_CPU not in r.output
    code = "model[0].forward = _on_host(model[0].forward)"
    hooked = fake(paste(tmp_path, code, "model = nn.Sequential", program, TEST_HOOKS, "hooked.py"), "cuda", batch=4096)
    assert reserved_peak(hooked) >= reserved_peak(fake(program, "cuda", batch=4096))


# -- checkpoint_sequential ----------------------------------------------------------------------
MLP = dict(width=64, features=32, depth=4)


def test_checkpoint_sequential_peak_is_the_pasted_codes_and_the_lowest_tried(tmp_path):
    fixed = [a for k, v in MLP.items() for a in ("-p", f"{k}={v}")]
    r = fit(SCENARIOS / "mlp.py", "--param", "batch", "--budget", "4MiB", *fixed, "-p", "batch=8192", "--suggest",
            "-o", tmp_path / "m", "-q")
    assert r.exit_code == 0, r.output
    s = next(x for x in suggestions(tmp_path / "m") if x["title"].startswith("checkpoint_sequential"))
    assert "checkpoint_sequential(model, " in s["code"] and "use_reentrant=False" in s["code"]
    tried = [int(k) for k in re.search(r"lowest peak of ([\d, ]+) segments tried", s["title"]).group(1).split(", ")]
    assert tried == [2, 3, 4]                                   # 9 layers: 2 and around sqrt(9)
    base = int(fake(SCENARIOS / "mlp.py", batch=8192, **MLP).summary["peak_bytes"])
    peaks = {}
    for k in tried:
        code = re.sub(r"model, \d+, use_reentrant", f"model, {k}, use_reentrant", s["code"])
        pasted = paste(tmp_path, code, "model = nn.Sequential", SCENARIOS / "mlp.py", name=f"seq{k}.py")
        peaks[k] = int(fake(pasted, batch=8192, **MLP).summary["peak_bytes"])
    chosen = int(re.search(r"in (\d+) segments", s["title"]).group(1))
    assert s["peak_bytes"] == peaks[chosen] == min(peaks.values())
    assert s["saves_bytes"] == base - peaks[chosen] > 0


def test_bf16_on_cuda_without_cuda_is_measured_with_cpu_autocast_and_says_so(blocks_cuda, tmp_path):
    """torch.autocast("cuda") turns itself off on a torch without CUDA: measured that way
    it "saved" 0 B. The fake CUDA run is a CPU run relabelled, so CPU autocast stands in,
    and the title says so. Oracle: the pasted code with "cpu" for "cuda", re-run."""
    if torch.cuda.is_available():
        pytest.skip("with CUDA, autocast('cuda') is what gets measured")
    _, _, base = blocks_cuda
    s = next(x for x in BLOCKS_CUDA_SUGGESTIONS if x["title"].startswith("bf16 autocast"))
    assert "measured with CPU autocast: this torch has no CUDA" in s["title"]
    assert 'torch.autocast("cuda", dtype=torch.bfloat16)' in s["code"]     # the code is for the user's GPU
    rerun = fake(paste(tmp_path, s["code"].replace('"cuda"', '"cpu"'), "net = Net(d, depth)", BLOCKS), "cuda", batch=BATCH)
    assert s["peak_bytes"] == reserved_peak(rerun)
    assert s["saves_bytes"] == reserved_peak(base) - reserved_peak(rerun) > 0
