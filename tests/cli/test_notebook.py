"""The IPython extension in a real InteractiveShell, and how a capture displays."""
import gc
import json
import weakref
from html.parser import HTMLParser

import pytest
import torch
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import gradmem
from gradmem.render.notebook import iframe
from gradmem.render.terminal import summary_text

TWO_ROWS = """\
x = torch.tensor([[10, 15], [30, 40]], dtype=torch.float32)
y = torch.tensor([20, 25], dtype=torch.float32)
w = torch.tensor([5, 6], dtype=torch.float32, requires_grad=True)
output = x @ w
error = y - output
loss = torch.mean(error ** 2)
error.retain_grad()
loss.backward()
w.grad
"""


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "gradmem")
    sh.run_cell("import torch")
    return sh


def run(shell, cell, line=""):
    with capture_output() as out:
        value = shell.run_cell_magic("gradmem", line, cell)
    return value, out.outputs


def value_of(cap, name):
    return json.loads(cap.tensors.set_index("name").at[name, "value"])


def test_magic_profiles_the_cell_in_the_users_namespace(shell):
    value, outputs = run(shell, TWO_ROWS)
    ns, cap = shell.user_ns, shell.user_ns["_gradmem"]
    assert torch.equal(value, ns["w"].grad)
    assert value_of(cap, "w.grad") == ns["w"].grad.tolist()
    assert value_of(cap, "error.grad") == ns["error"].grad.tolist()
    assert "PowBackward0.self" in set(cap.tensors["saved_by"])
    (shown,) = outputs
    assert shown.data["text/plain"] == summary_text(cap.analysis)
    assert "PowBackward0" in shown.data["text/html"]


def test_rerunning_a_cell_replaces_its_report(shell):
    _, first = run(shell, TWO_ROWS)
    _, again = run(shell, TWO_ROWS)
    _, other = run(shell, TWO_ROWS.replace("w.grad\n", "loss\n"))
    key = first[0].transient["display_id"]
    assert [o.transient["display_id"] for o in again] == [key, key]
    assert [o.update for o in again] == [False, True]    # shown anew, and any old copy updated
    assert other[0].transient["display_id"] != key


def test_retain_grad_option_and_saving(shell, tmp_path):
    run(shell, TWO_ROWS, f"--retain-grad off -o {tmp_path / 'r'} --name off_run")
    off = shell.user_ns["off_run"]
    assert "retained_grad" not in set(off.tensors["role"])
    assert (tmp_path / "r" / "tensors.csv").exists()
    run(shell, TWO_ROWS, "--retain-grad on --name on_run")
    retained = shell.user_ns["on_run"].tensors.query("role == 'retained_grad'")["name"]
    assert {"output.grad", "error.grad", "loss.grad"} <= set(retained)


def test_the_capture_keeps_no_tensor_of_the_cell_alive(shell):
    run(shell, "big = torch.randn(1_000_000, requires_grad=True)\n(big * 3).sum().backward()\n")
    assert shell.user_ns["_gradmem"].tensors.set_index("name").at["big", "nbytes"] == 4_000_000
    alive = weakref.ref(shell.user_ns["big"])
    del shell.user_ns["big"]
    gc.collect()
    assert alive() is None


def test_a_failing_cell_shows_its_partial_report_then_raises(shell):
    with pytest.raises(ZeroDivisionError):
        run(shell, "a = torch.ones(3, requires_grad=True)\nb = (a * 2).sum()\n1 / 0\n")
    cap = shell.user_ns["_gradmem"]
    assert cap.summary["status"] == "partial"
    assert cap.summary["error"]["type"] == "ZeroDivisionError"


def test_a_capture_prints_its_summary_and_says_when_still_running():
    with gradmem.capture() as cap:
        assert "still running" in repr(cap)
        w = torch.ones(2, requires_grad=True)
        (w * 2).sum().backward()
    assert repr(cap) == summary_text(cap.analysis)
    assert cap._repr_html_() == cap._repr_mimebundle_()["text/html"]


class Frames(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_report_page_stays_inside_its_iframe():
    page = '<html><body><script>alert("</iframe><b>x")</script>&amp;</body></html>'
    parser = Frames()
    parser.feed(iframe(page))
    assert [t for t, _ in parser.tags] == ["iframe"]
    assert parser.tags[0][1]["srcdoc"] == page


def test_a_cell_without_backward_is_partial_and_says_so(shell):
    """As the CLI does: a cell that never calls backward answers nothing about backward."""
    with capture_output() as out:
        shell.run_cell_magic("gradmem", "", "a = torch.ones(3, requires_grad=True)\nb = (a * 2).sum()\n")
    assert "gradmem: warning: no backward pass ran" in out.stdout, out.stdout
    cap = shell.user_ns["_gradmem"]
    assert cap.summary["status"] == "partial" and cap.summary["error"]["type"] == "NoBackward"
    assert "None" not in summary_text(cap.analysis)


def test_a_syntax_error_names_the_cells_line_not_gradmem(shell, capsys):
    with capture_output() as out:
        value = shell.run_cell_magic("gradmem", "", "a = 1\nb = (a +\n")
    assert value is None
    assert "gradmem: error: line 2 of the cell: syntax error" in out.stdout, out.stdout
    assert "magic.py" not in out.stdout + out.stderr


@pytest.mark.parametrize("engine", ["python", "native"])
def test_the_magic_takes_an_engine_and_both_give_the_seed_s_numbers(shell, request, engine):
    if engine == "native":
        request.getfixturevalue("native")
    value, _ = run(shell, TWO_ROWS, f"--engine {engine} --name _cap_{engine}")
    cap = shell.user_ns[f"_cap_{engine}"]
    assert cap.capture.trace.meta.capture_engine == engine
    assert value_of(cap, "w.grad") == [12150, 16400] == value.tolist()
    assert value_of(cap, "error.grad") == [-120, -365]
