"""Scenarios: plain Python scripts, run under a capture.

A scenario is any script (the learner's notebook code pasted works unchanged). If it
defines ``main(...)``, gradmem calls it after the module body, with ``-p name=value``
overrides converted by the parameter's annotation (or its default's type). Parameters are
checked against the source before anything runs, so a bad ``-p`` costs nothing.
"""
from __future__ import annotations

import ast
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType

from .errors import ScenarioError, UsageError, where
from .events import EventKind

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass
class MainSignature:
    params: dict[str, str] = field(default_factory=dict)   # name -> type name ("int", "float", ...)
    lineno: int = 0
    var_kw: bool = False


@dataclass
class Scenario:
    path: Path
    code: CodeType
    main: MainSignature | None

    @property
    def name(self) -> str:
        return self.path.stem


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such scenario file. Give the path of a Python script, e.g. scenarios/seed_two_rows.py.")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, not a scenario script.")
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not a Python script (not UTF-8 text: {exc.reason}).") from exc
    try:
        tree = ast.parse(source, filename=str(path))
        code = compile(tree, str(path), "exec")
    except SyntaxError as exc:
        raise ScenarioError(f"{where(str(path), exc.lineno)}: syntax error: {exc.msg}. Fix the script and run again.") from exc
    return Scenario(path, code, _main_signature(tree))


def _annotation(arg: ast.arg, default: ast.expr | None) -> str:
    if isinstance(arg.annotation, ast.Name):
        return arg.annotation.id
    if isinstance(arg.annotation, ast.Constant) and isinstance(arg.annotation.value, str):
        return arg.annotation.value
    if default is not None:
        try:
            return type(ast.literal_eval(default)).__name__
        except ValueError:
            pass
    return "str"


def _main_signature(tree: ast.Module) -> MainSignature | None:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.posonlyargs + node.args.args) - len(node.args.defaults))
            defaults += list(node.args.defaults) + list(node.args.kw_defaults)
            params = {a.arg: _annotation(a, d) for a, d in zip(args, defaults)}
            return MainSignature(params, node.lineno, node.args.kwarg is not None)
    return None


def _convert(name: str, text: str, kind: str, scenario: Scenario):
    try:
        if kind == "int":
            return int(text.replace("_", ""))
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() in _TRUE | _FALSE:
                return text.lower() in _TRUE
            raise ValueError(text)
    except ValueError:
        loc = where(str(scenario.path), scenario.main.lineno if scenario.main else None)
        raise UsageError(f"-p {name}={text}: {name} expects {kind} (main() at {loc}).") from None
    return text


def parse_params(pairs: list[str] | tuple[str, ...], scenario: Scenario) -> dict:
    """Check and convert ``name=value`` pairs against the scenario's ``main``."""
    raw = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"-p {pair!r}: expected NAME=VALUE, e.g. -p n=1000.")
        raw[name.strip()] = value
    if not raw:
        return {}
    main = scenario.main
    if main is None:
        raise UsageError(f"{scenario.path}: defines no main(), so it takes no -p parameters ({', '.join(raw)}).")
    unknown = [n for n in raw if n not in main.params and not main.var_kw]
    if unknown:
        known = ", ".join(main.params) or "none"
        raise UsageError(f"-p {unknown[0]}: main() at {where(str(scenario.path), main.lineno)} has no such parameter (it takes: {known}).")
    return {n: _convert(n, v, main.params.get(n, "str"), scenario) for n, v in raw.items()}


@contextlib.contextmanager
def default_device(device: str | None, fake: bool = False):
    if not device:
        yield
        return
    import torch
    if device.startswith("cuda") and not torch.cuda.is_available() and not fake:   # fake CUDA needs no GPU
        raise UsageError(f"--device {device}: CUDA is not available on this machine; use --device cpu.")
    with torch.device(device):
        yield


def run_scenario(scenario: Scenario, params: dict, device: str | None = None, retain_grad: str = "as-written",
                 on_progress=None, fake: bool = False, verify: bool = True, engine: str = "auto",
                 build_progress=None):
    """Run the scenario under a capture. Returns the session (``gradmem.session``), also
    when the scenario raised (then ``session.trace.meta.status == 'partial'``) together with
    the exception. ``fake=True`` runs it on fake tensors: the same trace, no data allocated
    (an estimate). ``on_progress(step, phase, events)`` is called as each step begins."""
    from .capture.fake import cuda_built, on_device
    from .session import Session

    # autograd aborts on fake CUDA tensors in a torch built without CUDA: run on CPU fake
    # tensors instead (same meta kernels, same sizes) and report the storages on the device
    stand_in = bool(fake and device and device.startswith("cuda") and not cuda_built())
    run_device = "cpu" if stand_in else device
    call = dict(params)
    if run_device and scenario.main and "device" in scenario.main.params and "device" not in call:
        call["device"] = run_device
    cap = Session(scenario.name, {**call, **({"device": device} if device else {})}, retain_grad,
                  fake=fake, verify=verify, on_progress=on_progress, engine=engine, build_progress=build_progress)
    namespace = {"__name__": "__gradmem__", "__file__": str(scenario.path), "__builtins__": __builtins__}
    failure = None
    with default_device(run_device, fake):
        try:
            with cap:
                try:
                    exec(scenario.code, namespace)
                    if callable(namespace.get("main")) and scenario.main is not None:
                        namespace["main"](**call)
                finally:   # also when the scenario failed: its names are read all the same
                    cap.name_variables(namespace)
        except SystemExit as exc:
            if exc.code not in (None, 0):
                failure = exc
        except (Exception, KeyboardInterrupt) as exc:   # reported, with what was recorded
            failure = exc
    if stand_in:
        cap.use_trace(on_device(cap.trace, device))
    if failure is None and cap.capture.fault is not None:
        failure = GradmemFault(cap.capture.fault)
    elif failure is None and not ran_backward(cap):
        failure = NoBackward()
        mark_no_backward(cap, str(scenario.path))
    return cap, failure


NO_BACKWARD = ("no backward pass ran: the scenario never called .backward() or torch.autograd.grad(), "
               "so nothing was saved for backward or freed by it")


class NoBackward(Exception):
    pass


class GradmemFault(Exception):
    """gradmem's own code failed in a hook; the scenario ran on to its end."""

    def __init__(self, failure: dict):
        super().__init__(failure["message"])
        self.failure = failure


def fault_message(failure: dict) -> str:
    return (f"gradmem's own code failed in a hook at step {failure['step']}, not in your scenario "
            "(which ran on to its end, as it does without gradmem). This is a bug in gradmem: please "
            "report it with the scenario and this traceback.\n" + failure["traceback"].rstrip())


def ran_backward(cap) -> bool:
    """From the trace's kinds (``Trace.shapes``), not a scan of every event."""
    return any(kind == EventKind.BACKWARD_BEGIN for kind, _names in cap.trace.shapes)


def mark_no_backward(cap, file: str = "<gradmem cell>") -> None:
    """A run that never called backward is not a complete answer: say so in its trace."""
    cap.use_trace(cap.trace.with_meta(status="partial", error={
        "type": "NoBackward", "message": NO_BACKWARD, "file": file, "line": None}))


_MEMORY_HINTS = ("can't allocate memory", "out of memory", "OutOfMemoryError")


def describe_failure(scenario: Scenario, cap, exc: BaseException) -> str:
    err = cap.trace.meta.error or {}
    loc = where(err.get("file") or str(scenario.path), err.get("line"))
    if isinstance(exc, GradmemFault):
        return fault_message(exc.failure)
    if isinstance(exc, SystemExit):
        return f"{loc}: the scenario called sys.exit({exc.code!r})."
    needed = _needs_data(cap, exc)
    if needed:
        return (f"{loc}: this line needs {needed}, and a --fake run has no data. Profile a "
                "smaller size for real (without --fake, with small -p values) to run this line.")
    if isinstance(exc, NoBackward):
        return f"{loc}: {NO_BACKWARD}. Add loss.backward() to the scenario, or define main() to run a step."
    if isinstance(exc, KeyboardInterrupt):
        return f"{loc}: interrupted (Ctrl-C)."
    text = f"{loc}: the scenario raised {type(exc).__name__}: {exc}"
    if any(h in text for h in _MEMORY_HINTS):
        text += "\nThe run asked for more memory than this machine has: try smaller -p values."
    return text


def _needs_data(cap, exc: BaseException) -> str | None:
    """For a fake run stopped by code that needs values: what it needed."""
    if not cap.fake:
        return None
    from .capture.fake import needs_data
    return needs_data(exc)
