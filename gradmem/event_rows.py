"""Events as JSON text, a column at a time: the bytes ``json.dumps`` writes, faster.

The trace file and events.csv each write one JSON object per event, about 200,000 for a
30-step run of a 100-layer MLP; ``json.dumps`` per event (a dict built for each line, an
encoder set up for each call) took 1.7 s of a 9.5 s analysis and writing. Events of one
kind with the same fields share one line template, so their values are encoded column
by column (ints, strings, None and lists of ints through C functions, anything else
through json's own C encoder, one value at a time) and the lines are filled in by ``%``
without a Python call per event.
"""
from __future__ import annotations

import json
from itertools import chain
from json import encoder as _json

escape = _json.encode_basestring_ascii   # a str as json.dumps writes it (ensure_ascii)
_CONSTANTS = {None: "null", True: "true", False: "false"}


def value_encoder(item_separator: str, key_separator: str):
    """A function that returns ``json.dumps(v, separators=...)`` for one value; json's C
    encoder built once, where ``json.dumps`` with arguments builds one per call."""
    make = _json.c_make_encoder
    if make is None:   # no C speedups (another interpreter): json.dumps itself
        return json.JSONEncoder(separators=(item_separator, key_separator)).encode
    default = json.JSONEncoder().default
    encode = make({}, default, escape, None, key_separator, item_separator, False, False, True)
    return lambda v: "".join(encode(v, 0))


def encode_column(values: list, encode, separator: str = ", ") -> list[str]:
    """Each value as JSON text: the common column types without a Python call per value
    (exact ints, strings, None and bools; tuples of ints, such as shapes, once per distinct
    tuple, joined by ``separator``), the rest through ``encode``."""
    types = set(map(type, values))
    if types == {tuple} and set(map(type, chain.from_iterable(values))) <= {int, type(None)}:
        # exact ints only: (True,) == (1,) would share an entry, but no bool gets here
        text = {v: "[" + separator.join(["null" if x is None else str(x) for x in v]) + "]" for v in set(values)}
        return list(map(text.__getitem__, values))
    if types == {list} and _ints_inside(values):
        return _int_lists(values, separator)
    if types <= {int}:
        return list(map(str, values))   # str(int) is its repr
    if types <= {str}:
        return list(map(escape, values))
    if types <= {int, type(None)}:
        return ["null" if v is None else str(v) for v in values]
    if types <= {bool, type(None)}:
        return list(map(_CONSTANTS.__getitem__, values))
    if types <= {str, type(None)}:
        return ["null" if v is None else escape(v) for v in values]
    return list(map(encode, values))


_INT_OR_NONE = frozenset({int, type(None)})


def _ints_inside(lists: list) -> bool:
    """Lists holding only exact ints and None, or lists of those (a node's ``next``):
    ``str`` spells them as JSON does, but for None and the separator."""
    inner = set(map(type, chain.from_iterable(lists)))
    if inner <= _INT_OR_NONE:
        return True
    return inner <= {list, type(None)} and \
        set(map(type, chain.from_iterable(v for v in chain.from_iterable(lists) if v is not None))) <= _INT_OR_NONE


def _int_lists(lists: list, separator: str) -> list[str]:
    """``json.dumps`` of each list ``_ints_inside`` accepts, from its ``str`` (a C call)."""
    out = list(map(str, lists))
    if separator != ", ":
        out = [s.replace(", ", separator) for s in out]
    if any("None" in s for s in out):
        out = [s.replace("None", "null") for s in out]
    return out


def shapes(events) -> dict:
    """{(kind, field names): columns} of the events that share a line template, in order
    of first appearance. The columns: each event's index in ``events``, seq, t_ns, step,
    then one per field. Each event is read once, then its group turned into columns
    (``Trace.shapes`` keeps them: the trace file, events.csv and the tables read them)."""
    groups: dict = {}
    for i, (seq, t_ns, kind, step, data) in enumerate(events):
        groups.setdefault((kind, tuple(data)), []).append((i, seq, t_ns, step, *data.values()))
    return {shape: list(zip(*rows)) for shape, rows in groups.items()}


def events(shapes: dict, make) -> tuple:
    """The events back from their columns (``shapes``), in trace order, each a ``make``
    (trace.Event: a NamedTuple, filled without its Python ``__new__``)."""
    new = tuple.__new__
    out: list = [None] * sum(len(columns[0]) for columns in shapes.values())
    for (kind, names), (indexes, seq, t_ns, step, *values) in shapes.items():
        for i, s, t, st, *vals in zip(indexes, seq, t_ns, step, *values):
            out[i] = new(make, (s, t, kind, st, dict(zip(names, vals))))
    return tuple(out)


def lines_by_shape(trace, make) -> list[str]:
    """One line per event of ``trace``, in its order: ``make(kind, names, indexes, columns)``
    returns the lines of each of its shapes (``Trace.shapes``) at once."""
    lines: list = [None] * len(trace)
    for (kind, names), (indexes, *columns) in trace.shapes.items():
        for i, line in zip(indexes, make(kind, names, indexes, columns)):
            lines[i] = line
    return lines


def literal(text: str) -> str:
    """``text`` as part of a ``%`` template."""
    return text.replace("%", "%%")
