"""``gradmem fit``: the largest value of a scenario parameter whose peak fits a budget.

Every run is a fake run (``FakeTensorMode``: shapes and storages, no data), so a size that
fits no machine here is measured exactly, in under a second a run. The search doubles the
value from 1 until the peak passes the budget, then narrows the bracket: each step tries
where the line through the bracket's two ends meets the budget (exact in one or two runs
when memory grows linearly), and falls back to the midpoint whenever that guess did not
halve the bracket, so it never takes more runs than plain bisection's twice.

On ``--device cuda`` the peak compared is what PyTorch's caching allocator would reserve
(``analysis/cuda_allocator.py``: blocks rounded up, whole segments kept cached), the
number ``torch.cuda.memory_reserved()`` reaches and the one that makes a GPU run out of
memory; on cpu it is the peak of allocated storage bytes.

Example::

    gradmem fit scenarios/mlp.py --param batch --budget 2GiB
    gradmem fit scenarios/mlp.py --param batch --budget 24GB --device cuda -p batch=65536 --suggest

Known limitations: only integer parameters; a peak that stops growing with the value
(the parameter is not a size) is refused; kernel workspaces (cuBLAS, cuDNN) and other
allocations no tensor explains are not in a fake run's peak, so leave them a margin.
"""
from __future__ import annotations

import ast
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .analysis.fit import Curve, Point, fit_curve, fixed_bytes, peak_facts, point
from .errors import ScenarioError, UsageError, where
from .scenario import Scenario, describe_failure, load_scenario, parse_params, run_scenario

LIMIT = 1 << 40            # doubling stops here: no bundled size comes near it
UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
         "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9][0-9_]*(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_budget(text: str) -> int:
    """'80GiB', '24GB', '1.5 GB', '1000000' -> bytes (GB = 10**9, GiB = 2**30)."""
    m = _SIZE.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in UNITS:
        raise UsageError(f"--budget {text!r}: expected a size such as 80GiB, 24GB, 512MiB or a number of bytes.")
    nbytes = int(float(m.group(1).replace("_", "")) * UNITS[unit])
    if nbytes <= 0:
        raise UsageError(f"--budget {text!r}: the budget must be more than 0 bytes.")
    return nbytes


@dataclass
class Calibration:
    """What a real CPU run's allocator held beyond the fake peak, at two small values, and
    the line through them: kernel scratch (``mse_loss``'s mean lives on its per-element
    buffer on CPU) and blocks no tensor explains, which fake tensors cannot show."""
    values: tuple
    gaps: tuple

    def extra(self, value: int) -> int:
        (a, b), (ga, gb) = self.values, self.gaps
        slope = (gb - ga) / (b - a) if b != a else 0.0
        return max(0, round(ga + slope * (value - a)))


@dataclass
class Request:
    """A checked ``gradmem fit`` command: nothing in it can fail once a run has started."""
    scenario: Scenario
    name: str
    budget: int
    fixed: dict                     # the other -p values, converted
    device: str
    want: int | None                # the value asked for (-p NAME=V, else main()'s default)
    measure: str                    # "allocated" (cpu) or "reserved" (cuda)
    calibrate: bool = False


def check_request(scenario_path, name: str, budget: str, params=(), device: str | None = None,
                  calibrate: bool = False) -> Request:
    """Every option of ``gradmem fit``, checked before any run."""
    nbytes = parse_budget(budget)
    sc = load_scenario(scenario_path)
    main = sc.main
    if main is None:
        raise UsageError(f"{sc.path}: defines no main(), so it has no parameter {name!r} to search. "
                         f"Put the step in def main({name}: int = ...): and run again.")
    if name not in main.params:
        known = ", ".join(main.params) or "none"
        raise UsageError(f"--param {name}: main() at {where(str(sc.path), main.lineno)} has no such parameter "
                         f"(it takes: {known}).")
    kind = main.params[name]
    if kind != "int":
        raise UsageError(f"--param {name}: main() at {where(str(sc.path), main.lineno)} takes {name} as {kind}; "
                         "fit searches whole numbers (annotate it `int` or give it an int default).")
    values = parse_params(params, sc)
    want = values.pop(name, None)
    if want is None:
        want = main_default(sc, name)
    if want is not None and (not isinstance(want, int) or want < 1):
        raise UsageError(f"-p {name}={want}: the wanted value must be a whole number of at least 1.")
    device = device or "cpu"
    if calibrate and device != "cpu":
        raise UsageError("--calibrate runs the scenario for real on the CPU; it applies to --device cpu only.")
    return Request(sc, name, nbytes, values, device, want, "reserved" if device.startswith("cuda") else "allocated",
                   calibrate)


def main_default(sc: Scenario, name: str):
    """The default of ``name`` in the scenario's ``main()``, read from its source (None when
    it has none or it is not a plain literal)."""
    tree = ast.parse(sc.path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
            pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, default in pairs:
                if arg.arg == name:
                    try:
                        return ast.literal_eval(default)
                    except ValueError:
                        return None
    return None


# -- one run -------------------------------------------------------------------------------------
class RunFailed(ScenarioError):
    """A fake run raised: the message names the scenario's line."""


def calibrated(p: Point, c: Calibration, budget: int) -> Point:
    extra = c.extra(p.value)
    return replace(p, peak_bytes=p.tensor_peak_bytes + extra, fits=p.tensor_peak_bytes + extra <= budget,
                   calibration_bytes=extra)


def real_allocator_peak(req: Request, value: int) -> int:
    """A real CPU run at ``value``: the highest total the allocator's own record reached."""
    from .analysis import analyze
    session, failure = run_scenario(req.scenario, {**req.fixed, req.name: value}, "cpu")
    if failure is not None:
        raise RunFailed(f"{describe_failure(req.scenario, session, failure)}\n(the real calibration run at {req.name}={value})")
    return int(analyze(session.trace).steps["allocator_peak_bytes"].max())


def measure(req: Request, value: int, retain_grad: str = "as-written", wrap=None, on_point=None,
            calibration: Calibration | None = None) -> Point:
    """One fake run at ``value``; ``wrap`` is a context manager factory around it (a change
    that --suggest verifies)."""
    import contextlib
    start = time.monotonic()
    with (wrap() if wrap else contextlib.nullcontext()):
        session, failure = run_scenario(req.scenario, {**req.fixed, req.name: value}, req.device, retain_grad,
                                        fake=True, verify=False)
    if failure is not None:
        raise RunFailed(f"{describe_failure(req.scenario, session, failure)}\n(the fake run at {req.name}={value})")
    p = point(value, peak_facts(session.trace), req.budget, req.measure, time.monotonic() - start)
    if calibration is not None:
        p = calibrated(p, calibration, req.budget)
    if on_point:
        on_point(p)
    return p


# -- the search --------------------------------------------------------------------------------
@dataclass
class Search:
    req: Request
    points: list = field(default_factory=list)     # every run, in the order it ran
    answer: Point | None = None                     # the largest value that fits
    over: Point | None = None                       # answer + 1: the smallest that does not
    curve: Curve | None = None
    suggestions: list = field(default_factory=list)
    calibration: Calibration | None = None
    error: Exception | None = None
    seconds: float = 0.0

    def at(self, value: int) -> Point | None:
        return next((p for p in self.points if p.value == value), None)


def search(req: Request, on_point=None) -> Search:
    """Doubling, then the bracket narrowed to two neighbours; errors land in ``.error``
    so that the runs made so far are still written."""
    s = Search(req)
    start = time.monotonic()
    try:
        _search(s, on_point)
    except (ScenarioError, UsageError) as exc:
        s.error = exc
    s.curve = fit_curve(s.points)
    s.seconds = time.monotonic() - start
    return s


def _run(s: Search, value: int, on_point) -> Point:
    p = s.at(value) or measure(s.req, value, on_point=on_point, calibration=s.calibration)
    if p not in s.points:
        s.points.append(p)
    return p


def _search(s: Search, on_point) -> None:
    first = _run(s, 1, on_point)
    if not first.fits:
        raise UsageError(too_small(s.req, first))
    lo, hi = first, None
    while hi is None:
        p = _run(s, lo.value * 2, on_point)
        if p.fits:
            _check_grows(s, p)
            lo = p
        else:
            hi = p
    lo, hi = _narrow(s, lo, hi, on_point)
    if s.req.calibrate:
        lo, hi = _recalibrate(s, lo, on_point)
    s.answer, s.over = lo, hi


CALIBRATE_AT = (8, 64)


def _recalibrate(s: Search, answer: Point, on_point) -> tuple[Point, Point]:
    """Real runs at two small values; every point so far gets the line of their gaps added,
    and the bracket is narrowed again on the calibrated peaks."""
    values = tuple(v for v in CALIBRATE_AT if v <= answer.value) or (1,)
    gaps = tuple(real_allocator_peak(s.req, v) - _run(s, v, on_point).tensor_peak_bytes for v in values)
    s.calibration = Calibration(values * (2 // len(values)), gaps * (2 // len(values)))
    s.points = [calibrated(p, s.calibration, s.req.budget) for p in s.points]
    fitting = [p for p in s.points if p.fits]
    if not fitting:
        raise UsageError(too_small(s.req, min(s.points, key=lambda p: p.value)))
    lo = max(fitting, key=lambda p: p.value)
    hi = min((p for p in s.points if not p.fits and p.value > lo.value), key=lambda p: p.value)
    return _narrow(s, lo, hi, on_point)


def _check_grows(s: Search, p: Point) -> None:
    if p.value >= 4 and s.at(1).tensor_peak_bytes == p.tensor_peak_bytes:   # reserved bytes grow in steps
        raise UsageError(f"--param {s.req.name}: the tensor peak is {p.tensor_peak_bytes:,} B at {s.req.name}=1 and at "
                         f"{s.req.name}={p.value}: it does not grow with {s.req.name}, so no budget bounds it.")
    if p.value >= LIMIT:
        raise UsageError(f"--param {s.req.name}: {s.req.name}={p.value:,} still fits in {s.req.budget:,} B "
                         f"(peak {p.peak_bytes:,} B); the search stops at {LIMIT:,}.")


def _narrow(s: Search, lo: Point, hi: Point, on_point) -> tuple[Point, Point]:
    bisect = False
    while hi.value - lo.value > 1:
        width = hi.value - lo.value
        guess = (lo.value + hi.value) // 2 if bisect else _secant(lo, hi, s.req.budget)
        p = _run(s, min(max(guess, lo.value + 1), hi.value - 1), on_point)
        lo, hi = (p, hi) if p.fits else (lo, p)
        bisect = not bisect and (hi.value - lo.value) * 2 > width
    return lo, hi


def _secant(lo: Point, hi: Point, budget: int) -> int:
    """Where the line through the bracket's ends reaches the budget."""
    rise = hi.peak_bytes - lo.peak_bytes
    if rise <= 0:
        return (lo.value + hi.value) // 2
    return lo.value + (budget - lo.peak_bytes) * (hi.value - lo.value) // rise


def too_small(req: Request, p: Point) -> str:
    from .render.units import human_bytes
    fixed = fixed_bytes(p)
    parts = ", ".join(f"{r} {human_bytes(b)}" for r, b in fixed.items())
    total = sum(fixed.values())
    what = (f"Of that, {human_bytes(total)} ({total:,} B) does not grow with {req.name}: {parts}."
            if fixed else f"None of it is parameters, their gradients or optimizer state: it is the data at {req.name}=1.")
    return (f"--budget {req.budget:,} B is too small for even {req.name}=1: its peak ({req.measure}) is "
            f"{human_bytes(p.peak_bytes)} ({p.peak_bytes:,} B) in {req.scenario.path}. {what} "
            f"Give a budget above {p.peak_bytes:,} B.")


# -- the whole command ---------------------------------------------------------------------------
def fit(scenario_path, name: str, budget: str, params=(), device: str | None = None, out_dir: Path | None = None,
        force: bool = False, suggest: bool = False, calibrate: bool = False, on_point=None,
        on_line=None) -> tuple[Search, list[Path]]:
    """Check, search, optionally suggest, write fit.csv / fit.json / fit.html. A failed run
    still writes what was measured; the error is in ``Search.error``."""
    from .render.fit_page import claim, write_fit
    req = check_request(scenario_path, name, budget, params, device, calibrate)
    if suggest and req.want is None:
        raise UsageError(f"--suggest: give the value you want with -p {name}=VALUE (main() has no default for {name}).")
    out_dir = Path(out_dir) if out_dir else Path("reports") / f"{req.scenario.name}-fit"
    claim(out_dir, force)
    s = search(req, on_point)
    if suggest and s.error is None:
        from .suggest import suggestions
        try:
            s.suggestions = suggestions(s, measure, on_line)
        except (ScenarioError, UsageError) as exc:
            s.error = exc
    from . import __version__
    return s, write_fit(s, out_dir, __version__)
