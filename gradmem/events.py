"""The event vocabulary and each kind's fields, declared once.

Capture emits events as ``(kind, **fields)``; the trace file stores them as JSON objects;
analysis turns each kind into a DataFrame with exactly these columns. One frozen
dataclass per kind names its fields here, so adding a field is one edit: the analysis
columns (``analysis.tables.KIND_COLUMNS``) and the synthetic traces in tests are derived
from ``FIELDS``. The capture's hot path does not build these objects (a dataclass per
event would cost microseconds per op); they are the schema, not the carrier.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum


class EventKind(str, Enum):
    STEP = "step"                      # a forward op, an engine op or a backward node begins
    ALLOC = "alloc"                    # a storage first seen (an op output, or pre-existing)
    FREE = "free"                      # a storage's memory was released
    TENSOR = "tensor"                  # facts about a tensor on a storage (requires_grad, leaf)
    NODE = "node"                      # a backward node discovered in the graph
    SAVED = "saved"                    # autograd packed a tensor into a saved slot
    SLOT = "slot"                      # which node and field own a saved slot
    HIDDEN_SLOT = "hidden_slot"        # a saved slot packed by someone else's hooks
    UNPACKED = "unpacked"              # a backward node used a saved slot
    RELEASED = "released"              # a saved slot was released by the engine
    NODE_END = "node_end"              # a backward node finished; what gradients it produced
    GRAD = "grad"                      # a gradient arrived for a tensor (register_hook)
    LEAF_GRAD = "leaf_grad"            # a leaf's .grad was set (post-accumulate hook)
    RETAINED = "retained"              # retain_grad() kept a copy as a non-leaf's .grad
    NAME = "name"                      # a program variable names a storage
    BACKWARD_BEGIN = "backward_begin"  # .backward() / autograd.grad() called
    BACKWARD_END = "backward_end"
    ERROR = "error"                    # the profiled program raised
    NOTE = "note"                      # a caveat the capture noticed (text)
    ALLOCATOR = "allocator"            # the allocator's own record: one allocation (+) or free (-)
    CLOCK = "clock"                    # how the allocator's clock was aligned with the hooks' clock
    RSS = "rss"                        # the process's resident memory, sampled every few ms
    DEVICE_MEMORY = "device_memory"    # a CUDA allocator reading (allocated, reserved) after a step
    MODULE = "module"                  # an nn.Module named: its dotted path and class
    MODULE_ENTER = "module_enter"      # a module's forward began
    MODULE_EXIT = "module_exit"        # a module's forward ended (and the storages it returned)
    SOURCE = "source"                  # the user's file:line behind the ops from here on changed
    COLLECTIVE = "collective"          # a c10d collective (all-reduce, all-gather...) and the storages it touched
    WRAPPED = "wrapped"                # a storage is the inside of a wrapper subclass (DTensor's local shard)

    def __str__(self) -> str:
        return self.value


SCHEMA: dict[EventKind, type] = {}


def _kind(kind: EventKind):
    def register(cls):
        cls = dataclass(frozen=True)(cls)
        cls.kind = kind
        SCHEMA[kind] = cls
        return cls
    return register


@_kind(EventKind.STEP)
class Step:
    phase: str                  # a Phase (gradmem.roles)
    op: str
    node: int | None = None     # the backward node this step runs, if any
    backward: int | None = None  # which backward call (1, 2, ...) a backward step belongs to


@_kind(EventKind.ALLOC)
class Alloc:
    storage: int
    nbytes: int
    device: str
    dtype: str
    shape: tuple
    op: str = ""
    preexisting: bool = False   # alive before the op that first showed it
    factory: bool = False       # made by an op with no tensor inputs
    value: object = None        # a preview of small values
    recompute: bool | None = None   # made while a backward node recomputed forward (checkpoint)
    grad_args: bool | None = None   # made by an op with an input that requires grad
    ptr: int | None = None      # the block's address, to match the allocator's record
    lineage: int | None = None  # op "resize_": the first generation of a storage grown in place (FSDP2)
    line: tuple | None = None   # torch.tensor(...): the program's (file, line) that called it


@_kind(EventKind.FREE)
class Free:
    storage: int
    resized: bool | None = None     # freed by resize_(0), the storage object living on (FSDP2)


@_kind(EventKind.TENSOR)
class Tensor:
    storage: int
    requires_grad: bool
    leaf: bool
    node: int | None = None
    output_nr: int | None = None


@_kind(EventKind.NODE)
class Node:
    node: int
    name: str
    next: tuple                 # (node id or None, input nr) per next function
    leaf: int | None = None     # AccumulateGrad: the leaf's storage
    attrs: dict | None = None   # saved values that are not tensors (exponent, self_sym_sizes, dim)


@_kind(EventKind.SAVED)
class Saved:
    pack: int
    storage: int | None
    shape: tuple
    dtype: str
    numel: int
    element_size: int
    stride: tuple | None = None  # tells a transposed view (weight.T) from its base
    value: object = None        # every float32 digit, for at most 16 elements: what rules evaluate
    kept_for: str = ""          # "checkpoint": torch.utils.checkpoint kept it to recompute the forward


@_kind(EventKind.SLOT)
class Slot:
    pack: int
    node: int
    field: str


@_kind(EventKind.HIDDEN_SLOT)
class HiddenSlot:
    node: int
    field: str
    hook: str | None = None
    storage: int | None = None
    value: object = None        # saved without hooks (a wrapped number, the 3 of x * 3): its value


@_kind(EventKind.UNPACKED)
class Unpacked:
    pack: int
    node: int | None = None


@_kind(EventKind.RELEASED)
class Released:
    pack: int


@_kind(EventKind.NODE_END)
class NodeEnd:
    node: int
    grads_in: tuple
    grads_out: tuple
    values_in: tuple = ()       # those gradients' values, for at most 16 elements
    values_out: tuple = ()


@_kind(EventKind.GRAD)
class Grad:
    target: int | None
    grad: int | None
    shape: tuple | None = None  # the gradient's own shape as it arrived


@_kind(EventKind.LEAF_GRAD)
class LeafGrad:
    target: int | None
    grad: int | None
    value: object = None
    shape: tuple | None = None  # the .grad's shape as it landed


@_kind(EventKind.RETAINED)
class Retained:
    target: int | None
    grad: int | None
    value: object = None
    shape: tuple | None = None


@_kind(EventKind.NAME)
class Name:
    storage: int
    name: str
    source: str                 # variable | parameter | buffer | grad | optimizer_state
    shape: tuple | None = None  # the named tensor's shape (a storage may be seen through several)


@_kind(EventKind.BACKWARD_BEGIN)
class BackwardBegin:
    index: int
    call: str                   # backward | grad
    roots: tuple
    retain_graph: bool
    create_graph: bool


@_kind(EventKind.BACKWARD_END)
class BackwardEnd:
    index: int


@_kind(EventKind.ERROR)
class Error:
    type: str
    message: str
    file: str | None = None
    line: int | None = None


@_kind(EventKind.NOTE)
class Note:
    text: str


@_kind(EventKind.ALLOCATOR)
class Allocator:
    ptr: int | None
    nbytes: int
    total: int
    device: str | None = None


@_kind(EventKind.CLOCK)
class Clock:
    method: str
    offset_ns: int
    error_ns: int | None
    markers: int


@_kind(EventKind.RSS)
class Rss:
    rss: int


@_kind(EventKind.DEVICE_MEMORY)
class DeviceMemory:
    device: str
    allocated: int
    reserved: int


@_kind(EventKind.MODULE)
class Module:
    module: str                 # dotted path, the root named by the program's variable
    type: str                   # class name


@_kind(EventKind.MODULE_ENTER)
class ModuleEnter:
    module: str


@_kind(EventKind.MODULE_EXIT)
class ModuleExit:
    module: str
    outputs: tuple = ()         # storages the forward returned


@_kind(EventKind.SOURCE)
class Source:
    file: str | None            # None: no frame outside torch and gradmem
    line: int | None
    function: str | None = None


@_kind(EventKind.COLLECTIVE)
class Collective:
    op: str                     # the c10d op: allreduce_, broadcast_, _allgather_base_, ...
    index: int                  # its place in this process's order of collectives
    storages: tuple             # the storages it read or wrote
    nbytes: int                 # bytes of the tensors passed to it


@_kind(EventKind.WRAPPED)
class Wrapped:
    storage: int                # the inner (local) tensor's storage
    wrapper: str                # the subclass, e.g. DTensor
    requires_grad: bool         # of the wrapper
    leaf: bool


FIELDS: dict[str, tuple[str, ...]] = {k.value: tuple(f.name for f in fields(cls)) for k, cls in SCHEMA.items()}
"""Each kind's field names, in declaration order (plain strings, for tables)."""

assert set(SCHEMA) == set(EventKind), "every event kind declares its fields"
