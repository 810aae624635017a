"""The IPython extension: ``%load_ext gradmem``, then ``%%gradmem`` profiles a cell.

Example::

    %load_ext gradmem

    %%gradmem --retain-grad on
    w = torch.tensor([5., 6.], requires_grad=True)
    loss = ((torch.tensor([20., 25.]) - x @ w) ** 2).mean()
    loss.backward()

The cell runs in the notebook's namespace, as it would without the magic; its report is
shown below it, and the capture is kept in the variable ``_gradmem`` (``--name`` picks
another) for its DataFrames: ``_gradmem.tensors``, ``.steps``, ``.events``, ``.nodes``.
Re-running a cell replaces its report.

Known limitations:
    - The value of the cell's last expression is shown (and kept in ``Out``) after the
      report, so formatting it is not profiled.
    - A cell is known by its Jupyter cell id when the front end sends one, else by its
      source: two cells with the same source share one report.
"""
from __future__ import annotations

import ast
import hashlib

from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display, update_display

from .errors import GradmemError
from .scenario import NO_BACKWARD, mark_no_backward, ran_backward


def split_last_expression(source: str, filename: str):
    """(code for the statements, code for a last bare expression or None)."""
    tree = ast.parse(source, filename=filename)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, filename, "exec")
    return body, compile(last, filename, "eval") if last is not None else None


def cell_key(shell, source: str) -> str:
    """The display id of a cell's report: its Jupyter cell id, else a hash of its source."""
    parent = getattr(shell, "parent_header", None) or {}
    cell_id = (parent.get("metadata") or {}).get("cellId")
    return f"gradmem-{cell_id or hashlib.sha1(source.strip().encode()).hexdigest()[:16]}"


def run_cell(shell, source: str, retain_grad: str, device: str | None, engine: str = "auto"):
    """Run the cell under a capture in the user's namespace: (capture, value, error)."""
    from .scenario import default_device
    from .session import Session

    body, last = split_last_expression(shell.transform_cell(source), "<gradmem cell>")
    cap = Session("cell", {"device": device} if device else {}, retain_grad, engine=engine)
    value = error = None
    with default_device(device):
        try:
            with cap:
                exec(body, shell.user_ns)
                value = eval(last, shell.user_ns) if last is not None else None
                cap.name_variables(shell.user_ns)
        except Exception as exc:   # the cell's own error: shown after its partial report
            error = exc
    return cap, value, error


@magics_class
class GradmemMagics(Magics):
    def __init__(self, shell):
        super().__init__(shell)
        self.shown: set[str] = set()

    @magic_arguments()
    @argument("--retain-grad", choices=["as-written", "off", "on"], default="as-written",
              help="off: retain_grad() does nothing; on: every non-leaf that requires grad retains its grad.")
    @argument("--device", choices=["cpu", "cuda"], default=None, help="Default device for the cell.")
    @argument("-o", "--out", default=None, help="Also save the reports to this folder.")
    @argument("--name", default="_gradmem", help="Variable that receives the capture [default: _gradmem].")
    @argument("--engine", choices=["auto", "python", "native"], default="auto",
              help="Capture engine, as `gradmem profile --engine` [default: auto].")
    @cell_magic
    def gradmem(self, line: str, cell: str):
        """Profile this cell with gradmem and show its report below it."""
        args = parse_argstring(self.gradmem, line)
        try:
            cap, value, error = run_cell(self.shell, cell, args.retain_grad, args.device, args.engine)
        except SyntaxError as exc:   # the cell's own mistake: its line, not gradmem's traceback
            print(f"gradmem: error: line {exc.lineno} of the cell: syntax error: {exc.msg}. Nothing ran; "
                  "fix the cell and run it again.")
            return None
        try:
            if error is None and not ran_backward(cap):
                mark_no_backward(cap)
                print(f"gradmem: warning: {NO_BACKWARD}. The report shows the cell's forward pass only "
                      "(marked partial): add loss.backward() to the cell.")
            self.shell.user_ns[args.name] = cap
            self.show(cap, cell_key(self.shell, cell))
            if args.out:
                print(f"gradmem: wrote {args.out}/: " + " ".join(p.name for p in cap.save(args.out)))
        except GradmemError as exc:
            print(f"gradmem: error: {exc}")
            return None
        if error is not None:
            raise error
        return value

    def show(self, cap, key: str) -> None:
        display(cap, display_id=key)
        if key in self.shown:      # an earlier output of this cell, if still on screen
            update_display(cap, display_id=key)
        self.shown.add(key)


def load_ipython_extension(shell) -> None:
    shell.register_magics(GradmemMagics)
