"""Autograd features that change what is saved or freed, each on real torch, with the
peak checked against the CPU allocator's own record."""
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from gradmem.analysis import analyze
from gradmem.capture import Capture
from oracles import allocator_peak, allocator_record

N = 4096


def block(h, w1, w2):
    return torch.relu(h @ w1) @ w2


def weights():
    torch.manual_seed(0)
    return torch.randn(N, 64), torch.randn(64, 128, requires_grad=True), torch.randn(128, 64, requires_grad=True)


def plain():
    x, w1, w2 = weights()
    block(x, w1, w2).pow(2).mean().backward()


def checkpointed(reentrant):
    def run():
        x, w1, w2 = weights()
        checkpoint(block, x, w1, w2, use_reentrant=reentrant).pow(2).mean().backward()
    return run


def on_cpu_saved():
    x, w1, w2 = weights()
    with torch.autograd.graph.save_on_cpu():
        out = block(x, w1, w2)
    out.pow(2).mean().backward()


def retain_graph_twice():
    w = torch.randn(N, requires_grad=True)
    loss = (w.sin() ** 2).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    return w


def double_backward():
    w = torch.randn(N, requires_grad=True)
    g, = torch.autograd.grad(w.exp().sum(), [w], create_graph=True)
    g.sum().backward()


def autograd_grad():
    w = torch.randn(N, requires_grad=True)
    return torch.autograd.grad((w * w).sum(), [w])


def accumulate(set_to_none):
    def run():
        model = nn.Linear(64, 32)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(2):
            for _ in range(2):   # two micro-batches, gradients accumulate in .grad
                nn.functional.mse_loss(model(torch.randn(256, 64)), torch.randn(256, 32)).backward()
            opt.step()
            opt.zero_grad(set_to_none=set_to_none)
    return run


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


def custom_function():
    w = torch.randn(N, requires_grad=True)
    Square.apply(w * 3).sum().backward()


def inplace_and_views():
    w = torch.randn(N, requires_grad=True)
    h = w * 2
    h.relu_()                         # in place: same storage, version bumped
    v = h.view(64, -1)[:, :8]         # a view: counted with its base
    d = h.detach()                    # shares storage too
    s = h.as_strided((N // 2,), (2,))  # every other element, same storage
    (v.sum() + (h * d).sum() + s.sum()).backward()


def no_grad_and_inference():
    w = torch.randn(N, requires_grad=True)
    with torch.no_grad():
        scale = w.abs().mean()
    with torch.inference_mode():
        _ = torch.randn(N) * 2
    (w * scale).sum().backward()


def mixed_and_autocast():
    w = torch.randn(64, 64, requires_grad=True)
    x = torch.randn(N, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = x @ w
    out.float().pow(2).mean().backward()


NAMES = ["plain", "checkpoint_nonreentrant", "checkpoint_reentrant", "save_on_cpu", "retain_graph_twice",
         "double_backward", "autograd_grad", "accumulate_set_to_none", "accumulate_zero_in_place",
         "custom_function", "inplace_and_views", "no_grad_and_inference", "mixed_and_autocast"]
RUNS = dict(zip(NAMES, [plain, checkpointed(False), checkpointed(True), on_cpu_saved, retain_graph_twice,
                        double_backward, autograd_grad, accumulate(True), accumulate(False), custom_function,
                        inplace_and_views, no_grad_and_inference, mixed_and_autocast]))


def profile(fn, engine: str = "python"):
    with Capture(engine=engine) as cap:
        fn()
    return analyze(cap.trace)


def on_engine(request, engine: str) -> str:
    if engine == "native":
        request.getfixturevalue("native")
    return engine


@pytest.mark.parametrize("name", NAMES)
def test_peak_agrees_with_allocator(name):
    analysis, allocs = allocator_record(lambda: profile(RUNS[name]))
    ours, theirs = analysis.summary["peak_bytes"], allocator_peak(allocs)
    assert abs(ours - theirs) <= 0.02 * theirs, (ours, theirs)


def tensors(name, engine: str = "python"):
    return profile(RUNS[name], engine).tensors


def test_checkpoint_keeps_no_activation_of_the_block():
    plain_t, ck = tensors("plain"), tensors("checkpoint_nonreentrant")
    relu_plain = plain_t[plain_t["created_by"] == "relu"].iloc[0]
    assert relu_plain["role"] == "activation"
    forward_relu = ck[(ck["created_by"] == "relu") & ~ck["recomputed"]].iloc[0]
    assert forward_relu["role"] == "intermediate" and forward_relu["saved_by"] == ""
    again = ck[ck["recomputed"] & (ck["created_by"] == "relu")].iloc[0]
    assert again["role"] == "activation" and again["phase"] == "backward"


def test_checkpoint_peaks_lower_and_notes_hidden_slots():
    a_plain, a_ck = profile(RUNS["plain"]), profile(RUNS["checkpoint_nonreentrant"])
    assert a_ck.summary["peak_bytes"] < a_plain.summary["peak_bytes"]
    notes = a_ck.summary["notes"]
    # x (for w1.grad), relu's result, both sides of the second matmul: 4 slots checkpoint packed
    assert any(n.startswith("4 saved slot(s) were packed by torch.utils.checkpoint, which keeps no tensor") for n in notes)
    assert a_ck.tensors["recomputed"].any()          # what the note points at is there
    assert not any("other saved-tensor hooks" in n for n in notes)   # no other hook ran
    assert a_plain.summary["notes"] == [] or not any("saved slot" in n for n in a_plain.summary["notes"])


def test_checkpoint_inputs_are_named_as_kept_by_checkpoint():
    """Non-reentrant checkpoint keeps the block's inputs in slots no backward node owns: they
    are checkpoint's, for running the forward again, not "a node outside the loss's graph"."""
    t = tensors("checkpoint_nonreentrant").set_index("name")
    for name in ("w1", "w2"):
        assert t.loc[name, "saved_by"].startswith("torch.utils.checkpoint (an input it keeps"), t.loc[name, "saved_by"]
    assert not t["saved_by"].str.contains("outside the loss").any()


def test_other_hooks_are_named_in_the_note():
    notes = profile(RUNS["save_on_cpu"]).summary["notes"]
    hidden = [n for n in notes if "saved slot" in n]
    assert len(hidden) == 1 and "other saved-tensor hooks (save_on_cpu)" in hidden[0], notes
    assert "checkpoint" not in hidden[0]


def test_wrapped_python_numbers_are_named_and_not_blamed_on_the_capture_or_an_op():
    """``0.5 * x`` (GPT-2's tanh GELU): torch wraps the number as an 8-byte tensor that
    MulBackward0 saves. No hook of another kind ran, so no note; each number is made by
    the program's python number, in no op, and is new memory saved for backward."""
    def gelu():
        x = torch.randn(4, 8, requires_grad=True)
        (0.5 * x * (1.0 + torch.tanh(0.7978845608 * (x + 0.044715 * torch.pow(x, 3.0))))).sum().backward()
    a = profile(gelu)
    numbers = a.tensors[a.tensors["name"].str.startswith("python scalar")]
    assert sorted(numbers["name"]) == ["python scalar 0.044715", "python scalar 0.5", "python scalar 0.797885"]
    assert set(numbers["created_by"]) == {"(a python number)"}
    assert set(numbers["role"]) == {"activation"} and (numbers["nbytes"] == 8).all()
    assert not any("saved slot" in n for n in a.summary["notes"])


def test_reentrant_checkpoint_recomputes_in_backward():
    t = tensors("checkpoint_reentrant")
    assert t["recomputed"].sum() >= 2
    assert set(t.loc[t["recomputed"], "role"]) <= {"activation", "temporary"}
    assert "CheckpointFunctionBackward.tensors[0]" in ";".join(t["saved_by"])


def test_retain_graph_keeps_slots_until_the_last_backward():
    a = profile(RUNS["retain_graph_twice"])
    sin = a.tensors[a.tensors["created_by"] == "sin"].iloc[0]
    second = a.steps[a.steps["backward"] == 2]["step"]
    assert sin["released_step"] in set(second) and sin["free_step"] in set(second)
    assert sin["unpacked_by"] == "PowBackward0"
    assert a.summary["backward_calls"] == 2
    # the second gradient is added into w.grad in place, then freed
    grads = a.tensors[a.tensors["name"] == "grad(w)"]
    assert len(grads) == 1 and grads.iloc[0]["free_step"] in set(second)


@pytest.mark.parametrize("engine", ["python", "native"])
def test_autograd_grad_returns_a_gradient_that_outlives_backward(request, engine):
    a = profile(RUNS["autograd_grad"], on_engine(request, engine))
    g = a.tensors[a.tensors["name"] == "grad(w)"].sort_values("id")
    # w * w sends w two partial gradients; the engine adds them and returns the sum: the
    # partials die inside backward, the sum lives until the caller drops it. Plain torch
    # (the native engine) adds the second into the first; while a dispatch mode is on (the
    # Python engine) autograd adds out of place, into a third storage (README: known differences)
    partials = 2 if engine == "python" else 1
    assert len(g) == partials + 1 and set(g["role"]) == {"gradient"} and (g["nbytes"] == N * 4).all()
    backward = set(a.steps.loc[a.steps["phase"] == "backward", "step"])
    after = a.steps.loc[a.steps["op"] == "(after backward)", "step"].iloc[0]
    assert sorted(s in backward for s in g["free_step"]) == [False] + [True] * partials
    assert g["free_step"].max() == after


def test_double_backward_saves_gradients():
    t = tensors("double_backward")
    assert t.loc[t["name"] == "g", "role"].iloc[0] == "gradient"
    assert (t["saved_by"].str.contains("MulBackward0")).any()


@pytest.mark.parametrize("engine", ["python", "native"])
def test_zero_grad_modes(request, engine):
    engine = on_engine(request, engine)
    none_t, zero_t = tensors("accumulate_set_to_none", engine), tensors("accumulate_zero_in_place", engine)
    grads_none = none_t[none_t["role"] == "param_grad"].sort_values("alloc_step")
    grads_zero = zero_t[zero_t["role"] == "param_grad"]
    last = max(none_t["free_step"].max(), zero_t["free_step"].max())
    # set_to_none=True: each zero_grad frees the grads, so each step makes new ones (the
    # last zero_grad's frees may share the program's last step with the model's)
    assert len(grads_none) == 4 and grads_none["free_step"].iloc[:2].max() < grads_none["alloc_step"].iloc[2:].min()
    # set_to_none=False: the same two storages are zeroed and reused until the model dies
    assert len(grads_zero) == 2 and (grads_zero["free_step"] == zero_t["free_step"].max()).all()
    assert last > 0
    assert (none_t["role"] == "optimizer_state").sum() == 2                      # momentum buffers


def test_custom_function_saved_tensors():
    t = tensors("custom_function")
    saved = t[t["saved_by"].str.contains("SquareBackward.tensors")]
    assert len(saved) == 1 and saved.iloc[0]["role"] == "activation" and saved.iloc[0]["nbytes"] == N * 4


def test_inplace_and_views_share_one_storage():
    t = tensors("inplace_and_views")
    h = t[t["created_by"] == "mul"].iloc[0]
    assert h["nbytes"] == N * 4 and (t["created_by"] == "relu_").sum() == 0
    assert not t["created_by"].isin(["view", "slice", "detach", "as_strided"]).any()
    assert "ReluBackward0.result" in h["saved_by"]


def test_no_grad_regions_make_no_activations():
    t = tensors("no_grad_and_inference")
    assert not t["saved_by"].str.contains("AbsBackward").any()


def test_autocast_sizes():
    t = tensors("mixed_and_autocast")
    assert (t["dtype"] == "bfloat16").any()
    casted = t[(t["dtype"] == "bfloat16") & (t["created_by"] == "_to_copy")]
    assert (casted["nbytes"] == casted["shape"].map(lambda s: eval(s)).map(lambda s: 2 * __import__("math").prod(s))).all()


def test_torch_compile_runs_eagerly_and_says_so():
    def f(x, w):
        return torch.relu(x @ w).pow(2).mean()

    compiled = torch.compile(f, backend="aot_eager")
    with Capture(engine="python") as cap:   # the native engine runs it compiled: the next test
        x, w = torch.randn(256, 64), torch.randn(64, 32, requires_grad=True)
        compiled(x, w).backward()
    a = analyze(cap.trace)
    assert any("`compiled` is made by torch.compile" in n for n in a.summary["notes"])
    # eager attributions, not one collapsed node
    assert "ReluBackward0" in set(a.nodes["name"]) and "CompiledFunctionBackward" not in set(a.nodes["name"])


def test_torch_compile_runs_compiled_on_the_native_engine_and_says_so(native):
    """A sequence number past INT64_MAX (the compiled function's node) once stopped the
    native recording at its first backward; now the compiled run is recorded whole."""
    def f(x, w):
        return torch.relu(x @ w).pow(2).mean()

    compiled = torch.compile(f, backend="aot_eager")
    with Capture(engine="native") as cap:
        x, w = torch.randn(256, 64), torch.randn(64, 32, requires_grad=True)
        compiled(x, w).backward()
    a = analyze(cap.trace)
    assert cap.fault is None and not cap.trace.partial
    assert any("`compiled` is made by torch.compile and runs compiled" in n for n in a.summary["notes"])
    assert "CompiledFunctionBackward" in set(a.nodes["name"]) and a.summary["allocator"]["agrees"] is True
    assert (a.tensors["name"] == "w.grad").sum() == 1


def test_users_own_hooks_inside_the_capture_are_reported_as_hidden():
    seen = []
    with Capture() as cap:
        w = torch.randn(N, requires_grad=True)
        with torch.autograd.graph.saved_tensors_hooks(lambda t: seen.append(1) or t, lambda t: t):
            loss = w.exp().sum()
        loss.backward()
    assert seen and w.grad is not None
    a = analyze(cap.trace)
    assert any(n.startswith("1 saved slot(s) were packed by other saved-tensor hooks "
                            "(test_users_own_hooks_inside_the_capture_are_reported_as_hidden)") for n in a.summary["notes"])
