"""Analysis on hand-built events (no torch): GIVEN a few events, WHEN analysed, THEN the
roles, lifetimes and live bytes are what the vocabulary says."""
from gradmem.analysis import analyze
from gradmem.trace import Event, Meta, Trace


class Events:
    def __init__(self):
        self.events = []

    def add(self, kind, step, **data):
        self.events.append(Event(len(self.events), len(self.events) * 10, kind, step, data))
        return self

    def step(self, step, op, phase="forward", node=None):
        return self.add("step", step, phase=phase, op=op, node=node, backward=1 if phase == "backward" else None)

    def alloc(self, step, sid, nbytes, op, **flags):
        return self.add("alloc", step, storage=sid, nbytes=nbytes, device="cpu", dtype="float32",
                        shape=[nbytes // 4], op=op, preexisting=False, factory=flags.pop("factory", False), value=None,
                        **flags)

    def trace(self):
        return Trace(Meta(scenario="unit"), tuple(self.events))


def roles(ev):
    t = analyze(ev.trace()).tensors
    return dict(zip(t["name"], t["role"]))


def forward_with_weight():
    """x (input) and w (parameter), then y = x * w saved by MulBackward0."""
    ev = Events()
    ev.step(1, "randn").alloc(1, 1, 16, "randn", factory=True).add("name", 1, storage=1, name="x", source="variable")
    ev.step(2, "randn").alloc(2, 2, 16, "randn", factory=True).add("name", 2, storage=2, name="w", source="variable")
    ev.add("tensor", 2, storage=2, requires_grad=True, leaf=True)
    ev.add("saved", 3, pack=1, storage=1, shape=[4], dtype="float32", numel=4, element_size=4)
    ev.step(3, "mul").alloc(3, 3, 16, "mul", grad_args=True).add("name", 3, storage=3, name="y", source="variable")
    ev.add("node", 3, node=1, name="MulBackward0", next=[[None, 0], [2, 0]], leaf=None)
    ev.add("node", 3, node=2, name="AccumulateGrad", next=[], leaf=2)
    ev.add("slot", 3, pack=1, node=1, field="other")
    ev.add("tensor", 3, storage=3, requires_grad=True, leaf=False, node=1, output_nr=0)
    return ev


def test_saved_input_stays_an_input_and_costs_nothing():
    ev = forward_with_weight()
    a = analyze(ev.trace())
    t = a.tensors.set_index("name")
    assert t.loc["x", "role"] == "input" and t.loc["x", "saved_by"] == "MulBackward0.other"
    assert t.loc["w", "role"] == "parameter" and t.loc["y", "role"] == "intermediate"
    assert a.steps.set_index("step").loc[3, "live_bytes"] == 48


def test_backward_scratch_is_temporary_and_handed_on_gradient_is_gradient():
    ev = forward_with_weight()
    ev.add("backward_begin", 3, index=1, call="backward", roots=[3], retain_graph=False, create_graph=False)
    ev.step(4, "MulBackward0", "backward", node=1)
    ev.add("unpacked", 4, pack=1, node=1)
    ev.alloc(4, 4, 64, "mul").add("free", 4, storage=4)        # scratch, freed inside the node
    ev.alloc(4, 5, 16, "mul")                                   # the gradient for w
    ev.add("node_end", 4, node=1, grads_in=[None], grads_out=[None, 5]).add("released", 4, pack=1)
    ev.step(5, "AccumulateGrad", "backward", node=2).add("leaf_grad", 5, target=2, grad=5)
    ev.add("backward_end", 5, index=1)
    a = analyze(ev.trace())
    t = a.tensors.set_index("id")
    assert t.loc[4, "role"] == "temporary" and t.loc[5, "role"] == "param_grad"
    assert t.loc[5, "name"] == "grad(w)" and t.loc[1, "released_step"] == 4
    step4 = a.steps.set_index("step").loc[4]
    assert step4["peak_bytes"] == 48 + 64 + 0 and step4["live_bytes"] == 48 + 16   # the scratch shows in the peak only
    assert a.summary["peak_bytes"] == 112 and a.summary["peak_op"] == "MulBackward0"
    assert list(a.nodes["name"]) == ["MulBackward0", "AccumulateGrad(w)"]
    assert a.nodes.iloc[0]["unpacked"] == "x" and a.nodes.iloc[0]["unpacked_bytes"] == 16


def test_preexisting_storage_counts_from_the_start():
    ev = Events()
    ev.step(1, "mul")
    ev.add("alloc", 1, storage=1, nbytes=100, device="cpu", dtype="float32", shape=[25], op="",
           preexisting=True, factory=False, value=None)
    ev.alloc(1, 2, 8, "mul", grad_args=True)
    a = analyze(ev.trace())
    assert a.steps.set_index("step").loc[0, "live_bytes"] == 100
    assert a.tensors.set_index("id").loc[1, "created_by"] == "(before capture)"
    assert a.tensors.set_index("id").loc[1, "role"] == "input"


def test_recomputed_tensors_are_activations_or_temporaries():
    ev = forward_with_weight()
    ev.add("backward_begin", 3, index=1, call="backward", roots=[3], retain_graph=False, create_graph=False)
    ev.step(4, "MulBackward0", "backward", node=1)
    ev.alloc(4, 6, 32, "relu", recompute=True)
    ev.alloc(4, 7, 32, "mm", recompute=True).add("free", 4, storage=7)
    t = analyze(ev.trace()).tensors.set_index("id")
    assert t.loc[6, "role"] == "activation" and t.loc[7, "role"] == "temporary" and t.loc[6, "recomputed"]


def test_buffer_and_optimizer_state_by_name_source():
    ev = Events()
    ev.step(1, "zeros").alloc(1, 1, 8, "zeros", factory=True)
    ev.add("name", 1, storage=1, name="bn.running_mean", source="buffer")
    ev.step(2, "zeros_like").alloc(2, 2, 8, "zeros_like")
    ev.add("name", 2, storage=2, name="opt.state[w].exp_avg", source="optimizer_state")
    assert roles(ev) == {"bn.running_mean": "buffer", "opt.state[w].exp_avg": "optimizer_state"}


def test_event_frames_are_what_pandas_infers_from_the_events():
    """by_kind builds integer columns straight as int64; each frame must equal the one
    pandas infers from the same values, here with a None among integers, a number past
    int64 and a kind with no events."""
    import pandas as pd
    from pandas.testing import assert_frame_equal

    from gradmem.analysis.tables import KIND_COLUMNS, by_kind

    ev = forward_with_weight()
    ev.add("node", 3, node=2**70, name="AddBackward0", next=[], leaf=None)   # past int64
    ev.add("tensor", 3, storage=3, requires_grad=True, leaf=False, node=None, output_nr=0)   # a None
    trace = ev.trace()
    frames = by_kind(trace)
    assert frames["alloc"]["storage"].dtype == "int64" and len(frames["error"]) == 0
    for kind, columns in KIND_COLUMNS.items():
        rows = [{"seq": e.seq, "t_ns": e.t_ns, "step": e.step, **e.data} for e in trace.events if str(e.kind) == kind]
        inferred = pd.DataFrame({c: [r.get(c) for r in rows] for c in ["seq", "t_ns", "step", *columns]})
        assert_frame_equal(frames[kind], inferred, check_dtype=True)
