"""The files of ``gradmem fit``: fit.csv (one row per run), fit.json (the answer) and fit.html
(the peak against the value, the budget, the answer and the fitted curve, drawn as an SVG
here so the page needs no script; every text from the scenario is HTML-escaped).

It formats what the search measured and what analysis/fit.py fitted; it computes nothing.
"""
from __future__ import annotations

import csv
import html
import io
import json
import re
from pathlib import Path

from ..roles import ROLE_COLORS, ROLE_ORDER
from . import write_atomic
from .comparison import claim_folder
from .html import asset, json_island
from .units import human_bytes
from ..files import FIT_CSV, FIT_HTML, FIT_JSON

ROLES = [r for r in ROLE_ORDER if r != "unattributed"]
COLUMNS = ["run", "value", "peak_bytes", "fits", "tensor_peak_bytes", "allocated_peak_bytes",
           "reserved_peak_bytes", "calibration_bytes", "peak_op", "peak_phase", "seconds"] + ROLES
MARKER = re.compile(r"<!--gradmem:(\w+)-->")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 900, 420, 90, 45, 20, 50


def claim(out_dir: Path, force: bool) -> None:
    """The folder is new or gradmem's (else --force), checked before the first run."""
    claim_folder(out_dir, force)


def write_fit(s, out_dir: Path, version: str = "") -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [write_atomic(out_dir / FIT_CSV, fit_csv(s)),
            write_atomic(out_dir / FIT_JSON, json.dumps(fit_json(s), indent=2) + "\n"),
            write_atomic(out_dir / FIT_HTML, fit_html(s, version))]


# -- fit.csv, fit.json ---------------------------------------------------------------------------
def rows(s) -> list[dict]:
    out = []
    for i, p in enumerate(s.points, 1):
        row = {"run": i, "value": p.value, "peak_bytes": p.peak_bytes, "fits": p.fits,
               "tensor_peak_bytes": p.tensor_peak_bytes, "allocated_peak_bytes": p.allocated_peak_bytes,
               "reserved_peak_bytes": p.reserved_peak_bytes, "calibration_bytes": p.calibration_bytes, "peak_op": p.peak_op, "peak_phase": p.peak_phase,
               "seconds": round(p.seconds, 3)}
        out.append({**row, **{r: p.by_role.get(r, 0) for r in ROLES}})
    return out


def fit_csv(s) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in rows(s):
        w.writerow({k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v) for k, v in row.items()})
    return buf.getvalue()


def fit_json(s) -> dict:
    req = s.req
    return {
        "scenario": str(req.scenario.path), "param": req.name, "budget_bytes": req.budget, "device": req.device,
        "measure": req.measure, "fixed_params": req.fixed, "want": req.want,
        "answer": s.answer.value if s.answer else None,
        "answer_peak_bytes": s.answer.peak_bytes if s.answer else None,
        "margin_bytes": req.budget - s.answer.peak_bytes if s.answer else None,
        "next_peak_bytes": s.over.peak_bytes if s.over else None,
        "curve": {"kind": s.curve.kind, "coefs": list(s.curve.coefs), "max_error": s.curve.max_error, "fitted_from": s.curve.fitted_from} if s.curve else None,
        "calibration": {"values": list(s.calibration.values), "gaps_bytes": list(s.calibration.gaps)} if s.calibration else None,
        "runs": len(s.points), "seconds": round(s.seconds, 3),
        "suggestions": [sg.as_dict() for sg in s.suggestions],
        "error": str(s.error) if s.error else None,
    }


# -- the one-line answer -----------------------------------------------------------------------------
MEASURES = {"allocated": "allocated peak on fake tensors",
            "reserved": "reserved peak of the CUDA caching allocator model, on fake tensors"}


def _measure(s) -> str:
    text = MEASURES[s.req.measure]
    if s.calibration:
        (a, b), (ga, gb) = s.calibration.values, s.calibration.gaps
        text += f" plus what real CPU runs held beyond it ({ga:,} B at {a}, {gb:,} B at {b}, as a line)"
    return text


def _bytes(n: int) -> str:
    """'1.2 MiB (1,234,567 B)', or '56 B' where the two would say the same."""
    return f"{n:,} B" if abs(n) < 1024 else f"{human_bytes(n)} ({n:,} B)"


def answer_line(s) -> str:
    req = s.req
    if s.answer is None:
        return f"gradmem fit: no answer for {req.name} ({len(s.points)} runs)."
    a, o = s.answer, s.over
    return (f"gradmem fit: {req.name}={a.value:,} fits in {human_bytes(req.budget)}: peak {a.peak_bytes:,} B, "
            f"margin {_bytes(req.budget - a.peak_bytes)}; "
            f"{req.name}={o.value:,} needs {o.peak_bytes:,} B [{_measure(s)}; "
            f"{len(s.points)} runs, {s.seconds:.1f} s]")


def point_line(name: str, p) -> str:
    """The progress line of one run."""
    return (f"gradmem fit: {name}={p.value:,}: peak {human_bytes(p.peak_bytes)} ({p.peak_bytes:,} B), "
            f"{'fits' if p.fits else 'over budget'} ({p.seconds:.1f} s)")


def suggestion_lines(s) -> list[str]:
    """Each verified change, its measured peak, and the code to paste."""
    out = []
    for i, sg in enumerate(s.suggestions, 1):
        out.append(f"  {i}. {sg.title}: {sg.result_text()}")
        out.extend("       " + line for line in sg.code.splitlines())
    return out


def want_line(s) -> str | None:
    req, p = s.req, (s.at(s.req.want) if s.req.want else None)
    if req.want is None or s.answer is None:
        return None
    if req.want <= s.answer.value:
        return f"  the wanted {req.name}={req.want:,} fits."
    extra = f" (peak {human_bytes(p.peak_bytes)})" if p else ""
    return f"  the wanted {req.name}={req.want:,} does not fit{extra}."


# -- fit.html --------------------------------------------------------------------------------------
def _scales(s):
    values = [p.value for p in s.points] or [1]
    peaks = [p.peak_bytes for p in s.points] + [s.req.budget]
    xmax, ymax = max(values) * 1.05, max(peaks) * 1.1
    sx = lambda v: PAD_L + (W - PAD_L - PAD_R) * v / xmax            # noqa: E731
    sy = lambda b: H - PAD_B - (H - PAD_T - PAD_B) * b / ymax         # noqa: E731
    return xmax, ymax, sx, sy


def _ticks(top: float, n: int = 5) -> list[float]:
    step = top / n
    return [step * i for i in range(n + 1)]


def chart_svg(s) -> str:
    """Peak against value: one dot per run (green fits, red not), the budget, the answer,
    and the fitted curve when there is one."""
    req = s.req
    xmax, ymax, sx, sy = _scales(s)
    out = [f'<svg id="fit-chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
           f'aria-label="peak against {html.escape(req.name)}">']
    for t in _ticks(ymax):
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>'
                   f'<text x="{PAD_L - 6}" y="{sy(t) + 4:.1f}" text-anchor="end" font-size="11">{human_bytes(t)}</text>')
    for t in _ticks(xmax):
        out.append(f'<text x="{sx(t):.1f}" y="{H - PAD_B + 16}" text-anchor="middle" font-size="11">{t:,.0f}</text>')
    out.append(f'<text x="{(W + PAD_L) / 2}" y="{H - 8}" text-anchor="middle" font-size="12">{html.escape(req.name)}</text>')
    out.append(f'<line class="budget" x1="{PAD_L}" x2="{W - PAD_R}" y1="{sy(req.budget):.1f}" y2="{sy(req.budget):.1f}" '
               f'stroke="#d62728" stroke-dasharray="6 4"/><text x="{W - PAD_R}" y="{sy(req.budget) - 5:.1f}" '
               f'text-anchor="end" font-size="12" fill="#d62728">budget {human_bytes(req.budget)}</text>')
    if s.curve:
        lo = s.curve.fitted_from
        pts = " ".join(f"{sx(v):.1f},{sy(s.curve(v)):.1f}" for v in (lo + (xmax - lo) * i / 100 for i in range(101))
                       if 0 <= s.curve(v) <= ymax)
        out.append(f'<polyline class="curve" points="{pts}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>')
    if s.answer:
        x = sx(s.answer.value)
        out.append(f'<line class="answer" x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="#2ca02c" '
                   f'stroke-dasharray="3 3"/><text x="{x + 4:.1f}" y="{PAD_T + 12}" font-size="12" fill="#2ca02c">'
                   f'{html.escape(req.name)}={s.answer.value:,}</text>')
    for i, p in enumerate(s.points, 1):
        tip = html.escape(f"run {i}: {req.name}={p.value:,}, peak {human_bytes(p.peak_bytes)} "
                          f"({p.peak_bytes:,} B), {'fits' if p.fits else 'does not fit'}")
        out.append(f'<circle class="run {"fits" if p.fits else "over"}" cx="{sx(p.value):.1f}" cy="{sy(p.peak_bytes):.1f}" '
                   f'r="4" fill="{"#2ca02c" if p.fits else "#d62728"}"><title>{tip}</title></circle>')
    out.append(f'<line x1="{PAD_L}" x2="{PAD_L}" y1="{PAD_T}" y2="{H - PAD_B}" stroke="#999"/>'
               f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{H - PAD_B}" y2="{H - PAD_B}" stroke="#999"/></svg>')
    return "".join(out)


def _table(s) -> str:
    used = [r for r in ROLES if any(p.by_role.get(r) for p in s.points)]
    head = ["run", s.req.name, "peak", "fits", "peak op"] + used
    body = []
    for row in rows(s):
        cells = [str(row["run"]), f"{row['value']:,}", f"{human_bytes(row['peak_bytes'])} ({row['peak_bytes']:,} B)",
                 "yes" if row["fits"] else "no", f"{row['peak_op']} ({row['peak_phase']})"]
        cells += [human_bytes(row[r]) for r in used]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    swatch = lambda r: f'<span class="swatch" style="background:{ROLE_COLORS[r]}"></span>'  # noqa: E731
    heads = "".join(f"<th>{swatch(h) if h in ROLE_COLORS else ''}{html.escape(h)}</th>" for h in head)
    return f'<table id="runs"><tr>{heads}</tr>{"".join(body)}</table>'


def _suggestions(s) -> str:
    if not s.suggestions:
        return ""
    items = []
    for sg in s.suggestions:
        items.append(f"<li><b>{html.escape(sg.title)}</b>: {html.escape(sg.result_text())}"
                     f"<pre><code>{html.escape(sg.code)}</code></pre></li>")
    return f'<section id="suggestions"><h2>What would make {html.escape(s.req.name)}={s.req.want:,} fit</h2><ul>{"".join(items)}</ul></section>'


def _answer(s) -> str:
    lines = [answer_line(s).removeprefix("gradmem fit: ")]
    want = want_line(s)
    if want:
        lines.append(want.strip())
    if s.curve:
        lines.append(f"memory grows {s.curve.kind}ly: peak ≈ {s.curve.text(s.req.name)} "
                     f"(within {s.curve.max_error:.2%} of every run from {s.req.name}={s.curve.fitted_from:,})")
    else:
        lines.append("no linear or quadratic curve passes within 2% of every run (from 1/64 of the largest value), so none is drawn")
    if s.error:
        lines.append(f"stopped: {s.error}")
    return "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>"


CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 0; background: #fafafa; }
header, main, footer { max-width: 1000px; margin: 0 auto; padding: 0 20px; }
section { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 12px 16px; margin: 14px 0; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin: 0 0 8px; }
.meta, footer { color: #666; font-size: 13px; }
table { border-collapse: collapse; font-size: 12.5px; } td, th { border-bottom: 1px solid #eee; padding: 2px 8px; text-align: right; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 3px; }
pre { background: #f4f4f4; padding: 6px 8px; border-radius: 4px; overflow-x: auto; }
svg { max-width: 100%; height: auto; background: #fff; }
"""


def fit_html(s, version: str = "") -> str:
    req = s.req
    fixed = ", ".join(f"{k}={v}" for k, v in req.fixed.items())
    meta = (f"{req.scenario.path} · budget {human_bytes(req.budget)} ({req.budget:,} B) · device {req.device}: "
            f"{_measure(s)}" + (f" · other parameters {fixed}" if fixed else "")
            + f" · {len(s.points)} runs in {s.seconds:.1f} s")
    body = (f'<section id="answer"><h2>The answer</h2>{_answer(s)}</section>'
            f'<section id="chart"><h2>Peak against {html.escape(req.name)}</h2>{chart_svg(s)}</section>'
            f'{_suggestions(s)}<section><h2>Every run, in the order it ran</h2>{_table(s)}</section>')
    fill = {"heading": html.escape(f"gradmem fit: {req.scenario.name}, {req.name} for {human_bytes(req.budget)}"),
            "meta": html.escape(meta), "notes": "", "version": html.escape(version), "css": CSS, "js": "",
            "data": json_island(fit_json(s)), "body": body}
    return fill_page_text(fill)


def fill_page_text(fill: dict) -> str:
    """The shared page frame (assets/frame.html) around a body made here."""
    return MARKER.sub(lambda m: fill[m.group(1)], asset("frame.html"))
