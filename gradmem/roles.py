"""The vocabulary of memory roles, with the tables that go with it (see design.md)."""
from __future__ import annotations

from enum import Enum


class Role(str, Enum):
    PARAMETER = "parameter"
    INPUT = "input"
    ACTIVATION = "activation"
    INTERMEDIATE = "intermediate"
    GRADIENT = "gradient"
    PARAM_GRAD = "param_grad"
    RETAINED_GRAD = "retained_grad"
    TEMPORARY = "temporary"
    BUFFER = "buffer"
    OPTIMIZER_STATE = "optimizer_state"
    COMM_BUFFER = "comm_buffer"
    SHARDED_PARAM = "sharded_param"
    UNSHARDED_PARAM = "unsharded_param"
    SHARDED_GRAD = "sharded_grad"
    UNSHARDED_GRAD = "unsharded_grad"
    UNATTRIBUTED = "unattributed"

    def __str__(self) -> str:
        return self.value


ROLE_ORDER = [r.value for r in Role]

ROLE_COLORS = {
    "parameter": "#4e79a7",
    "input": "#a0cbe8",
    "activation": "#f28e2b",
    "intermediate": "#ffbe7d",
    "gradient": "#59a14f",
    "param_grad": "#8cd17d",
    "retained_grad": "#e15759",
    "temporary": "#bab0ac",
    "buffer": "#76b7b2",
    "optimizer_state": "#b07aa1",
    "comm_buffer": "#edc948",
    "sharded_param": "#2f4b7c",
    "unsharded_param": "#9c755f",
    "sharded_grad": "#3a7d44",
    "unsharded_grad": "#b6992d",
    "unattributed": "#79706e",
}

ROLE_MEANINGS = {
    "parameter": "leaf tensor that requires grad (a weight)",
    "input": "data that requires no grad, alive before the forward pass",
    "activation": "created in forward and saved by autograd for backward",
    "intermediate": "created in forward, not saved: alive only while the program holds it",
    "gradient": "created in backward and handed between backward nodes",
    "param_grad": "a leaf's .grad",
    "retained_grad": "the .grad copy kept for a non-leaf by retain_grad()",
    "temporary": "scratch created and freed inside one op or one backward node",
    "buffer": "a module buffer (batch norm running statistics)",
    "optimizer_state": "an optimizer's state (momentum, Adam's moments, step counts)",
    "comm_buffer": "a buffer a collective reads or writes: DDP's gradient buckets (and .grad views of them), "
                   "broadcast, all-reduce, all-gather and reduce-scatter buffers",
    "sharded_param": "this rank's shard of a parameter (the local tensor of an FSDP2 DTensor parameter)",
    "unsharded_param": "a whole parameter all-gathered from the shards for a layer's forward or backward, "
                       "freed again (resized to 0) when FSDP2 reshards",
    "sharded_grad": "this rank's shard of a parameter's gradient, after the reduce-scatter (the DTensor .grad)",
    "unsharded_grad": "the whole gradient of an unsharded parameter, before it is reduce-scattered",
    "unattributed": "allocator bytes that no tracked storage explains",
}


class Phase(str, Enum):
    """Which part of the run a step belongs to. Capture records forward and backward;
    analysis names the forward steps before the first tensor that requires grad setup."""

    SETUP = "setup"
    FORWARD = "forward"
    BACKWARD = "backward"
    AFTER_BACKWARD = "after_backward"

    def __str__(self) -> str:
        return self.value


PHASE_ORDER = [p.value for p in Phase]

# the page's background bands behind each phase (render/assets/common.js reads these)
PHASE_COLORS = {
    "setup": "rgba(0,0,0,0.035)",
    "forward": "rgba(78,121,167,0.09)",
    "backward": "rgba(242,142,43,0.11)",
    "after_backward": "rgba(89,161,79,0.08)",
}

PHASE_MEANINGS = {
    "setup": "before the first op on a tensor that requires grad: inputs and weights being made",
    "forward": "ops the program runs, building the graph",
    "backward": "the autograd engine running backward nodes",
    "after_backward": "the program's own code once backward() returned, until its next op",
}
