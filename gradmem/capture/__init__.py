"""Capture: run code under hooks that record when each tensor's memory comes and goes.

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

Known limitations:
    - Buffers that kernels allocate internally (convolution workspaces) are not seen by
      the hooks; compare with the allocator for those.
    - Tensors saved under someone else's saved-tensor hooks entered *inside* the capture
      (``torch.utils.checkpoint``, ``save_on_cpu``) are reported as hidden slots.
    - ``torch.compile`` collapses the graph into one node with no saved fields.
    - ``verify=True`` (the default) records the CPU allocator's own allocations beside the
      hooks (``ground.py``); it cannot run inside another ``torch.profiler`` session, and
      then the summary says so. Resident memory is sampled every 10 ms on a thread.
"""
from __future__ import annotations

import contextlib
import datetime
import platform
import sys
import traceback
import types

import torch

from ..trace import KIND, Meta, Trace
from .calls import CallWatcher
from .fake import fake_modes
from .graph import Graph
from .grads import GradWatcher
from .native.choose import DEFAULT as DEFAULT_ENGINE, choose as choose_engine
from .ground import GroundTruth
from .names import SKIP_DIRS, Namer
from .ops import OpWatcher
from .recorder import Recorder
from .saved import SavedTensorWatcher
from .storages import Storages


LIFT_OPS = frozenset({"lift_fresh", "lift_fresh_copy", "lift"})
AFTER_BACKWARD = "(after backward)"
FAKE_NOTE = ("estimate: run on fake tensors (shapes, no data); bytes and lifetimes are what a real run "
             "would record, values are absent")


class Capture:
    """Context manager that records one run; afterwards exposes the trace and tables."""

    def __init__(self, scenario: str = "", params: dict | None = None, retain_grad: str = "as-written",
                 fake: bool = False, verify: bool = True, engine: str = DEFAULT_ENGINE, progress=None):
        self.scenario = scenario
        self.fake = fake
        self.params = dict(params or {})
        self.retain_grad = retain_grad
        self.trace: Trace | None = None
        self._analysis = None
        self.engine = choose_engine(engine, fake, progress)
        self._engine_asked = engine
        self.native = self.engine.ext      # the native extension, or None on the Python engine
        self._native_raw = None
        if self.native is not None:
            from .native.engine import NativeRecorder, NativeStorages
            self.rec = NativeRecorder(self.native)
            self.storages = NativeStorages(self.rec)
        else:
            self.rec = Recorder()
            self.storages = Storages(self.rec)
        self.graph = Graph(self.rec, self.storages)
        self.grads = GradWatcher(self.rec, self.storages)
        self.namer = Namer(self.rec, self.storages)
        self.ops_paused = False   # set while gradmem runs an op of its own (see paused_ops)
        self.saved = SavedTensorWatcher(self.rec, self.storages, self._current_node, self.paused_ops)
        self._modes = []
        self._started = ""
        self._facts_seen: set[tuple] = set()
        self._create_graph = False
        self._in_node = False
        self._error: dict | None = None
        # fake tensors allocate nothing: there is no allocator record to compare with
        # the native engine records the allocator itself; fake tensors allocate nothing
        self.ground = GroundTruth(self.rec, "cpu" if fake else _device(self.params),
                                  verify and not fake and self.native is None)

    # -- entering and leaving -------------------------------------------------------------
    def __enter__(self) -> "Capture":
        self._started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        self.namer.entry = sys._getframe(1)
        self._modes = fake_modes() if self.fake else []   # below our modes: they see fake outputs
        self._modes += [self.saved, CallWatcher(self, self.retain_grad)]
        if self.native is None:
            self._modes.append(OpWatcher(self))
        self.ground.start()
        if self.native is not None:
            self.native.start(1)
        entered = []
        try:
            for mode in self._modes:
                mode.__enter__()
                entered.append(mode)
        except BaseException:
            for mode in reversed(entered):
                mode.__exit__(None, None, None)
            self._stop_native()
            self.ground.stop()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.namer.scan_stack(sys._getframe(1))
        finally:
            for mode in reversed(self._modes):
                mode.__exit__(None, None, None)
            self._stop_native()
            self.namer.entry = None
        if exc is not None and not (isinstance(exc, SystemExit) and exc.code in (None, 0)):
            self.record_error(exc)
        self.finish()
        return False

    def record_error(self, exc: BaseException) -> None:
        file, line = _failing_line(exc)
        self.rec.emit(KIND.ERROR, type=type(exc).__name__, message=str(exc), file=file, line=line)
        self._error = {"type": type(exc).__name__, "message": str(exc), "file": file, "line": line}

    def _stop_native(self) -> None:
        if self.native is not None and self._native_raw is None and self.native.running():
            self._native_raw = self.native.stop()

    def finish(self) -> Trace:
        if self.trace is None:
            self._stop_native()
            self.ground.stop()
            self.rec.active = False
            self.storages.close()
            if self._native_raw is not None:
                from .native.engine import merge
                merge(self.rec, self._native_raw, self.graph._ids)
                self._native_raw = None
            error = self._error
            meta = Meta(
                scenario=self.scenario, params=self.params, device=_device(self.params),
                torch_version=torch.__version__, gradmem_version=_version(),
                python_version=platform.python_version(), started_at=self._started,
                status="partial" if error else "complete", error=error,
                notes=(FAKE_NOTE,) * self.fake + self._notes(), mode="fake" if self.fake else "real",
                retain_grad=self.retain_grad, capture_engine=self.engine.engine, engine_reason=self.engine.reason,
            )
            self.trace = Trace(meta, self.rec.sorted_events())
        return self.trace

    def _notes(self) -> tuple:
        notes = dict.fromkeys(e.data["text"] for e in self.rec.of_kind(KIND.NOTE))
        hidden = len(self.rec.of_kind(KIND.HIDDEN_SLOT))
        notes.update(dict.fromkeys(self.ground.notes))
        if self._engine_asked != "python" and self.engine.engine == "python":   # asked for native: say why not
            notes[f"captured by the Python engine: {self.engine.reason}"] = None
        if hidden:
            notes[f"{hidden} saved tensors were packed by other saved-tensor hooks "
                  "(checkpoint, save_on_cpu or the program's own): their bytes are not attributed"] = None
        return tuple(notes)

    # -- called by the watchers -----------------------------------------------------------
    @contextlib.contextmanager
    def paused_ops(self):
        """Run an op of gradmem's own without recording it. Other modes (FakeTensorMode)
        still see it, so under fake tensors its result is fake too."""
        self.ops_paused = True
        try:
            with torch._C.DisableTorchFunction():
                yield
        finally:
            self.ops_paused = False

    def _current_node(self) -> int | None:
        node = torch._C._current_autograd_node()
        return self.graph.node_id(node) if node is not None else None

    def begin_op(self, name: str, inputs) -> tuple[bool, bool]:
        """Start the op's step; returns (has tensor inputs, any input requires grad)."""
        rec = self.rec
        self.saved.fresh_call = False
        self._in_node = False
        if rec.in_backward:
            nid = self._current_node()
            self._in_node = nid is not None
            if nid is None:
                rec.begin_step("backward", name)
            elif nid != rec.node:
                self._node_step(nid)
        else:
            rec.begin_step("forward", name)
        if name in LIFT_OPS:   # torch.tensor(data): the input is the new tensor itself
            return False, False
        has_inputs = grad_args = False
        for t in inputs:
            has_inputs = True
            grad_args = grad_args or t.requires_grad
            self.storages.see(t)
        return has_inputs, grad_args

    def _node_step(self, nid: int) -> None:
        self.rec.begin_step("backward", self.graph.name_of(nid), node=nid)

    def op_outputs(self, name: str, out, factory: bool, grad_args: bool) -> None:
        # grad mode on inside a running backward node (without create_graph) means a
        # forward pass is being recomputed, as torch.utils.checkpoint does
        recompute = self._in_node and torch.is_grad_enabled() and not self._create_graph
        see = self.storages.see
        for t in (out if isinstance(out, (list, tuple)) else (out,)):
            if isinstance(t, torch.Tensor):
                see(t, name, preexisting=False, factory=factory, recompute=recompute, grad_args=grad_args)

    def tensor_facts(self, t: torch.Tensor, track: bool = True) -> None:
        """Record once per (storage, node) that ``t`` requires grad, and which node made it.
        With ``track=False`` only storages already seen by an op are considered."""
        grad_fn = t.grad_fn
        sid = self.storages.see(t) if track else self.storages.lookup(t)
        nid = self.graph.node_id(grad_fn) if grad_fn is not None else None
        if sid is None or (sid, nid) in self._facts_seen:
            return
        self._facts_seen.add((sid, nid))
        if nid is None:
            self.rec.emit(KIND.TENSOR, storage=sid, requires_grad=True, leaf=True)
            return
        self.rec.emit(KIND.TENSOR, storage=sid, requires_grad=True, leaf=False, node=nid, output_nr=t.output_nr)
        self.grads.forward_output(t)

    def run_backward(self, kind: str, func, args, kwargs, caller):
        rec = self.rec
        roots = _roots_of(args, kwargs)
        grad_fns = [t.grad_fn for t in roots]
        self.graph.discover(grad_fns)
        self.namer.scan_stack(caller)
        leaves = [n.variable for n in self.graph.reachable(grad_fns) if hasattr(n, "variable")]
        for leaf in leaves:
            self.tensor_facts(leaf)
        # node steps and ends come from the native recorder when it runs
        node_hooks = self.graph.hook_nodes(grad_fns) if self.native is None else []
        handles = node_hooks + self.grads.hook_tensors() + self.grads.hook_leaves(leaves)
        del leaves, grad_fns
        rec.backward_index += 1
        rec.emit(KIND.BACKWARD_BEGIN, index=rec.backward_index, call=kind,
                 roots=tuple(self.storages.see(t) for t in roots),
                 retain_graph=bool(kwargs.get("retain_graph")), create_graph=bool(kwargs.get("create_graph")))
        del roots
        rec.in_backward += 1
        if self.native is not None:
            self.native.set_backward(rec.backward_index)
        outer_create_graph, self._create_graph = self._create_graph, bool(kwargs.get("create_graph"))
        try:
            return func(*args, **kwargs)
        finally:
            rec.in_backward -= 1
            if self.native is not None:
                self.native.set_backward(rec.backward_index if rec.in_backward else 0)
            self._create_graph = outer_create_graph
            for h in handles:
                h.remove()
            rec.node = None
            rec.emit(KIND.BACKWARD_END, index=rec.backward_index)
            self.grads.record_retained()
            self.namer.scan_stack(caller)
            if not rec.in_backward:   # frees from here on are the program's, not the engine's
                rec.begin_step("forward", AFTER_BACKWARD)

    # -- results ----------------------------------------------------------------------------
    @property
    def analysis(self):
        if self.trace is None:
            raise RuntimeError("the capture is still running: read results after the with block")
        if self._analysis is None:
            from ..analysis import analyze
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
        from ..render.terminal import summary_text
        return summary_text(self.analysis)

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        if self.trace is None:
            return {"text/plain": repr(self)}
        from ..render.notebook import mimebundle
        return mimebundle(self.analysis)

    def _repr_html_(self) -> str | None:
        return self._repr_mimebundle_().get("text/html")

    def save(self, out_dir, formats=None, force: bool = False):
        """Write the reports (CSV, JSON, HTML and the trace by default) into ``out_dir``."""
        from ..render import DEFAULT_FORMATS, write_reports
        return write_reports(self.analysis, out_dir, formats or DEFAULT_FORMATS, force=force)


def _roots_of(args, kwargs) -> list:
    first = args[0] if args else kwargs.get("tensors", kwargs.get("outputs"))
    items = first if isinstance(first, (list, tuple)) else [first]
    return [t for t in items if isinstance(t, torch.Tensor) and t.grad_fn is not None]


def _failing_line(exc: BaseException) -> tuple[str | None, int | None]:
    """The innermost traceback frame in the profiled program (not in torch or gradmem)."""
    found = (None, None)
    for fs in traceback.extract_tb(exc.__traceback__):
        if not fs.filename.startswith(SKIP_DIRS):
            found = (fs.filename, fs.lineno)
    return found


def _device(params: dict) -> str:
    return str(params.get("device", "cpu"))


def _version() -> str:
    from .. import __version__
    return __version__


def capture(scenario: str = "", params: dict | None = None, retain_grad: str = "as-written",
            fake: bool = False, verify: bool = True, engine: str = DEFAULT_ENGINE) -> Capture:
    """Record what a block of PyTorch code allocates, saves and frees; see ``Capture``.
    ``fake=True`` runs the block on fake tensors: an estimate, with no data allocated.
    ``verify=False`` skips the allocator's own record (see GroundTruth).
    ``engine``: ``python`` (dispatch mode), ``native`` (C++ extension, built on first use)
    or ``auto`` (native where it can run); see ``native/choose.py``."""
    return Capture(scenario, params, retain_grad, fake, verify, engine)


class _CallableModule(types.ModuleType):
    """Importing this package makes ``gradmem.capture`` this module, not the function
    above, so the module itself answers ``gradmem.capture(...)``."""

    def __call__(self, *args, **kwargs) -> Capture:
        return capture(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
