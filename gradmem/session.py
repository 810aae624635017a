"""``gradmem.capture()``: a capture with its results beside it, for Python and notebooks.

The capture (``gradmem.capture.Capture``) only records and returns a ``Trace``; this wraps
it with what a user reads afterwards: the tables (``tensors``, ``steps``, ``nodes``,
``events``, ``summary``), the text summary as ``repr``, the report in Jupyter, and
``save``. It sits outside capture/ so data flows one way: capture -> trace -> analysis ->
render, joined here and in ``gradmem.pipeline``.

Example::

    import torch, gradmem
    x = torch.tensor([[10., 15.], [30., 40.]]); y = torch.tensor([20., 25.])
    w = torch.tensor([5., 6.], requires_grad=True)
    with gradmem.capture() as cap:
        error = y - x @ w
        loss = (error ** 2).mean()
        loss.backward()
    cap.tensors      # one row per storage: name, role, bytes, when allocated and freed
    cap.summary      # peak, when, what was live by role
    cap.save("reports/mine")
"""
from __future__ import annotations

from .trace import Trace


class Session:
    """Records a block (``with``), then answers questions about it."""

    def __init__(self, scenario: str = "", params: dict | None = None, retain_grad: str = "as-written",
                 fake: bool = False, verify: bool = True, on_progress=None, engine: str = "auto",
                 build_progress=None):
        from .capture import Capture   # torch is imported on first use, not with gradmem
        self._capture = Capture(scenario, params, retain_grad, fake, verify, on_progress, engine, build_progress)
        self._trace: Trace | None = None   # set when a pipeline adjusts the recorded trace
        self._analysis = None

    @property
    def scenario(self) -> str:
        return self._capture.settings.scenario

    @property
    def fake(self) -> bool:
        return self._capture.fake

    @property
    def capture(self):
        """The recording itself (``gradmem.capture.Capture``)."""
        return self._capture

    # -- recording -----------------------------------------------------------------------
    def __enter__(self) -> "Session":
        self._capture.__enter__()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self._capture.__exit__(exc_type, exc, tb)

    def name_variables(self, namespace) -> None:
        self._capture.name_variables(namespace)

    def finish(self) -> Trace:
        return self.trace if self._trace is not None else self._capture.finish()

    def use_trace(self, trace: Trace) -> None:
        """Read results from ``trace`` instead of the recorded one (a stand-in device's
        storages renamed, a run marked partial after the fact)."""
        self._trace, self._analysis = trace, None

    @property
    def trace(self) -> Trace | None:
        return self._trace if self._trace is not None else self._capture.trace

    # -- results ----------------------------------------------------------------------------
    @property
    def analysis(self):
        if self.trace is None:
            raise RuntimeError("the capture is still running: read results after the with block")
        if self._analysis is None:
            from .analysis import analyze
            self._analysis = analyze(self.trace)
        return self._analysis

    @property
    def tensors(self):
        return self.analysis.tensors

    @property
    def steps(self):
        return self.analysis.steps

    @property
    def events(self):
        return self.analysis.events

    @property
    def nodes(self):
        return self.analysis.nodes

    @property
    def summary(self) -> dict:
        return self.analysis.summary

    # -- display: the text summary in consoles, the report in Jupyter --------------------------
    def __repr__(self) -> str:
        if self.trace is None:
            return f"<gradmem capture of {self.scenario or 'a block'}: still running>"
        from .render.terminal import summary_text
        return summary_text(self.analysis)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        if self.trace is None:
            return {"text/plain": repr(self)}
        from .render.notebook import mimebundle
        return mimebundle(self.analysis)

    def _repr_html_(self) -> str | None:
        return self._repr_mimebundle_().get("text/html")

    def save(self, out_dir, formats=None, force: bool = False):
        """Write the reports (CSV, JSON, HTML and the trace by default) into ``out_dir``."""
        from .render import DEFAULT_FORMATS, write_reports
        return write_reports(self.analysis, out_dir, formats or DEFAULT_FORMATS, force=force)
