"""Which backward node consumed each gradient: the one place this is worked out (the page's
"why alive", the answer's "freed right after the node that consumed it" and the comparison
all read it)."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from .tables import each_row


@dataclass(frozen=True)
class Consumer:
    node: int       # the node's id
    name: str       # its display name
    step: int       # the step it ran in
    end_seq: int    # the event that ended its run: after it, the gradient was used


def gradient_consumers(node_end: pd.DataFrame, node_name: dict[int, str]) -> dict[int, Consumer]:
    """{gradient storage: the first backward node, in event order, that took it as input}."""
    out: dict[int, Consumer] = {}
    for node, grads, step, seq in each_row(node_end, "node", "grads_in", "step", "seq"):
        for g in grads or []:
            if g is not None and int(g) not in out:
                out[int(g)] = Consumer(int(node), node_name.get(int(node), str(node)), int(step), int(seq))
    return out
