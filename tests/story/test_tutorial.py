"""docs/tutorial.ipynb runs top to bottom, and its numbers are the learner's hand derivation."""
import json

import pytest

from conftest import ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", str(ROOT))      # the kernel imports this checkout's gradmem
    try:
        nb = nbformat.read(ROOT / "docs" / "tutorial.ipynb", as_version=4)
        nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                resources={"metadata": {"path": str(ROOT / "docs")}}).execute()
    finally:
        mp.undo()
    return nb


def cell(nb, tag):
    (found,) = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    return found


def test_tutorial_runs_without_errors(executed):
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    reports = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "display_data"]
    assert len(reports) == 3 and all("text/html" in o.data for o in reports)


def test_two_rows_gradients_match_the_hand_derivation(executed):
    """The learner's third example: 0.5 * ([2400, 3600] + [21900, 29200]) = [12150, 16400]."""
    text = "".join(o.text for o in cell(executed, "two-rows").outputs if o.output_type == "stream")
    measured = json.loads(text)
    x, y, w = [[10, 15], [30, 40]], [20, 25], [5, 6]
    errors = [t - sum(a * b for a, b in zip(row, w)) for row, t in zip(x, y)]
    by_hand = [sum(-2 * e * row[j] for row, e in zip(x, errors)) / len(x) for j in range(2)]
    assert measured["w.grad"] == by_hand
    assert measured["error.grad"] == errors
