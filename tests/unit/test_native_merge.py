"""capture/native/merge.py's grouping: rows of several shapes, added out of time order and
with ties in time, come out as one sort of every event by (time, order added) would put
them: each shape's rows in that order, and seq their place among all."""
import random

from gradmem.capture.native.merge import Shapes


def test_columns_are_the_order_of_one_sort_of_every_row():
    rng = random.Random(0)
    shapes, added = Shapes(), []
    adders = {shape: shapes.adder(*shape) for shape in [("alloc", ("storage",)), ("free", ("storage",)),
                                                        ("step", ("op", "node"))]}
    for i in range(500):
        shape = rng.choice(list(adders))
        t = rng.randrange(40)   # many ties in time
        row = (t, shapes.n(), rng.randrange(5)) + tuple(f"{shape[0]}{i}:{k}" for k in shape[1])
        adders[shape](row)
        added.append((shape, row))
    everything = sorted(added, key=lambda a: (a[1][0], a[1][1]))
    columns = shapes.columns()
    for shape, (indexes, seq, t_ns, step, *values) in columns.items():
        assert list(indexes) == list(seq) == sorted(seq)
        expected = [(i, row) for i, (s, row) in enumerate(everything) if s == shape]
        assert list(seq) == [i for i, _ in expected]
        assert list(zip(t_ns, step, *values)) == [(row[0], row[2], *row[3:]) for _, row in expected]
    assert sorted(s for c in columns.values() for s in c[1]) == list(range(500))


def test_no_rows_no_columns():
    shapes = Shapes()
    shapes.adder("alloc", ("storage",))
    assert shapes.columns() == {}
