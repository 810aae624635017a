"""A synthetic trace of any size, built from gradmem.trace.Event directly: a chain of
`layers` ops, each saving its output for its backward node, then the backward pass that
unpacks, releases and frees them in reverse. About 13 events per layer. Each event is
built through its kind's schema (gradmem/events.py): a field the schema does not declare,
or a missing one, fails here; fields left out take the schema's defaults."""
from dataclasses import MISSING, fields

from gradmem.events import SCHEMA
from gradmem.trace import Event, Meta, Trace

# per kind: (required field names, every field name, the defaults), from the schema
_FIELDS = {str(k): ({f.name for f in fields(c) if f.default is MISSING}, {f.name for f in fields(c)},
                    {f.name: f.default for f in fields(c) if f.default is not MISSING}) for k, c in SCHEMA.items()}


def _checked(kind: str, data: dict) -> dict:
    required, known, defaults = _FIELDS[kind]
    assert required <= data.keys() <= known, (kind, sorted(data), sorted(known))
    return {**defaults, **data}


class _Log:
    def __init__(self):
        self.events, self.t = [], 1_000_000

    def add(self, kind, step, **data):
        self.t += 1000
        self.events.append(Event(len(self.events) + 1, self.t, kind, step, _checked(kind, data)))


def _alloc(log, step, sid, nbytes, op, preexisting=False):
    log.add("alloc", step, storage=sid, nbytes=nbytes, device="cpu", dtype="float32", shape=[nbytes // 4],
            op=op, preexisting=preexisting, factory=False, value=None)


def _forward(log, layers, size):
    log.add("step", 1, phase="forward", op="lift_fresh", node=None, backward=None)
    _alloc(log, 1, 1, size, "lift_fresh")
    log.add("tensor", 1, storage=1, requires_grad=True, leaf=True)
    log.add("node", 1, node=1, name="AccumulateGrad", next=[], leaf=1)
    for i in range(1, layers + 1):
        step, sid, nid = i + 1, i + 1, i + 1
        log.add("step", step, phase="forward", op="mul", node=None, backward=None)
        _alloc(log, step, sid, size + (i % 7) * 4, "mul")
        log.add("tensor", step, storage=sid, requires_grad=True, leaf=False, node=nid, output_nr=0)
        log.add("node", step, node=nid, name="MulBackward0", next=[[nid - 1, 0]], leaf=None)
        log.add("saved", step, pack=i, storage=sid, shape=[size // 4], dtype="float32", numel=size // 4, element_size=4)
        log.add("slot", step, pack=i, node=nid, field="self")


def _backward(log, layers, size):
    first = layers + 2
    log.add("backward_begin", first, index=1, call="backward", roots=[layers + 1], retain_graph=False, create_graph=False)
    prev = None
    for k, i in enumerate(range(layers, 0, -1)):
        step, nid, grad = first + k, i + 1, 10 * layers + i
        log.add("step", step, phase="backward", op="MulBackward0", node=nid, backward=1)
        log.add("unpacked", step, pack=i, node=nid)
        _alloc(log, step, grad, size, "mul")
        log.add("node_end", step, node=nid, grads_in=[prev] if prev else [], grads_out=[grad])
        log.add("released", step, pack=i)
        if prev:
            log.add("free", step, storage=prev)
        log.add("free", step, storage=i + 1)
        prev = grad
    log.add("backward_end", first + layers - 1, index=1)


def big_trace(events: int = 1_000_000, size: int = 4096) -> Trace:
    log = _Log()
    layers = events // 13
    _forward(log, layers, size)
    _backward(log, layers, size)
    return Trace(Meta(scenario="synthetic", params={"events": events}), tuple(log.events))
