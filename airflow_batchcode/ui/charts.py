"""Charts drawn on the server as inline SVG: no script, no CDN, readable in an air-gapped deployment.

Each function returns one ``<svg>`` element as text; every label passes through
:func:`html.escape`, and long labels are shortened with the full text kept in a ``<title>``
tooltip, so nothing is cut off at the edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from html import escape

from airflow_batchcode.ui.runs import Span

PALETTE = {
    "successful": "#2e7d32",
    "reviewed": "#1565c0",
    "unsuccessful": "#ef6c00",
    "error": "#c62828",
    "create": "#6a1b9a",
    "upload": "#00838f",
    "wait": "#9e9e9e",
    "download": "#1565c0",
    "extract": "#5d4037",
    "load": "#2e7d32",
}
DEFAULT_COLOUR = "#455a64"
FAILED_OUTLINE = f" stroke='{PALETTE['error']}' stroke-width='3' stroke-dasharray='4 2'"
"""How the timeline marks a task try that failed (its fill stays its step's colour)."""
FONT = "font-family='system-ui, sans-serif' font-size='12'"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' role='img' aria-label='{escape(title)}' "
        f"width='{width}' height='{height}' viewBox='0 0 {width} {height}' {FONT}>"
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def bars(
    items: Sequence[tuple[str, float]],
    *,
    title: str,
    width: int = 560,
    label_width: int = 220,
    colours: dict[str, str] | None = None,
) -> str:
    """Horizontal bars, one per ``(label, value)``, with the value printed after each bar."""
    row = 22
    height = max(1, len(items)) * row + 8
    peak = max((value for _, value in items), default=0) or 1
    room = width - label_width - 70
    body = []
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        length = max(1.0, room * value / peak) if value else 0.0
        colour = (colours or PALETTE).get(label, DEFAULT_COLOUR)
        body.append(
            f"<g><title>{escape(label)}: {value:,.0f}</title>"
            f"<text x='{label_width - 6}' y='{y + 15}' text-anchor='end'>"
            f"{escape(_short(label, label_width // 7))}</text>"
            f"<rect x='{label_width}' y='{y + 3}' width='{length:.1f}' height='{row - 6}' fill='{colour}'/>"
            f"<text x='{label_width + length + 5:.1f}' y='{y + 15}'>{value:,.0f}</text></g>"
        )
    if not items:
        body.append(f"<text x='4' y='18'>{escape('nothing to show')}</text>")
    return _svg(width, height, body, title)


def columns(items: Sequence[tuple[str, float]], *, title: str, width: int = 560, height: int = 200) -> str:
    """Vertical columns (a histogram): ``(label, value)`` left to right, labels under the axis."""
    bottom, top = height - 24, 16
    peak = max((value for _, value in items), default=0) or 1
    slot = (width - 20) / max(1, len(items))
    body = [f"<line x1='10' y1='{bottom}' x2='{width - 10}' y2='{bottom}' stroke='#999'/>"]
    for i, (label, value) in enumerate(items):
        x = 10 + i * slot
        tall = (bottom - top) * value / peak
        body.append(
            f"<g><title>{escape(label)}: {value:,.0f}</title>"
            f"<rect x='{x + 3:.1f}' y='{bottom - tall:.1f}' width='{slot - 6:.1f}' height='{tall:.1f}' fill='#1565c0'/>"
            f"<text x='{x + slot / 2:.1f}' y='{bottom - tall - 3:.1f}' text-anchor='middle'>{value:,.0f}</text>"
            f"<text x='{x + slot / 2:.1f}' y='{bottom + 15}' text-anchor='middle'>{escape(label)}</text></g>"
        )
    return _svg(width, height, body, title)


def trend(points: Sequence[tuple[str, int, float]], *, title: str, width: int = 900, height: int = 240) -> str:
    """Volume bars with the success rate as a line, one point per ``(label, rows, rate)``, oldest first."""
    left, right, bottom, top = 50, 50, height - 40, 16
    peak = max((rows for _, rows, _ in points), default=0) or 1
    slot = (width - left - right) / max(1, len(points))
    body = [
        f"<line x1='{left}' y1='{bottom}' x2='{width - right}' y2='{bottom}' stroke='#999'/>",
        f"<text x='4' y='{top}'>{peak:,}</text><text x='4' y='{bottom}'>0</text>",
        f"<text x='{width - right + 4}' y='{top}'>100%</text><text x='{width - right + 4}' y='{bottom}'>0%</text>",
    ]
    line = []
    every = max(1, len(points) // 12)
    for i, (label, rows, rate) in enumerate(points):
        x = left + i * slot
        tall = (bottom - top) * rows / peak
        body.append(
            f"<g><title>{escape(label)}: {rows:,} rows, {rate:.1%} coded</title>"
            f"<rect x='{x + 2:.1f}' y='{bottom - tall:.1f}' width='{max(1.0, slot - 4):.1f}' height='{tall:.1f}' "
            "fill='#b0bec5'/></g>"
        )
        line.append(f"{x + slot / 2:.1f},{bottom - (bottom - top) * rate:.1f}")
        if i % every == 0:
            body.append(
                f"<text x='{x + slot / 2:.1f}' y='{bottom + 16}' text-anchor='middle'>{escape(label[5:10])}</text>"
            )
    if line:
        body.append(f"<polyline points='{' '.join(line)}' fill='none' stroke='#2e7d32' stroke-width='2'/>")
        body += [f"<circle cx='{p.split(',')[0]}' cy='{p.split(',')[1]}' r='3' fill='#2e7d32'/>" for p in line]
    return _svg(width, height, body, title)


def gantt(spans: Sequence[Span], *, title: str, width: int = 900) -> str:
    """A timeline: one lane per chunk (and extract, load), one bar per task try, coloured by step; a failed
    try outlined in red."""
    lanes = list(dict.fromkeys(span.lane for span in spans))
    row, left = 22, 80
    height = max(1, len(lanes)) * row + 30
    if not spans:
        return _svg(width, 30, ["<text x='4' y='18'>no task has started yet</text>"], title)
    start = min(span.start for span in spans)
    end = max((span.end or span.start) for span in spans)
    total = max((end - start).total_seconds(), 1.0)
    scale = (width - left - 10) / total
    body = [
        f"<text x='{left}' y='{height - 8}'>0 s</text>",
        f"<text x='{width - 10}' y='{height - 8}' text-anchor='end'>{total:,.0f} s</text>",
    ]
    for i, lane in enumerate(lanes):
        body.append(f"<text x='{left - 6}' y='{i * row + 15}' text-anchor='end'>{escape(lane)}</text>")
    for span in spans:
        y = lanes.index(span.lane) * row
        x = left + (span.start - start).total_seconds() * scale
        length = max(2.0, ((span.end or end) - span.start).total_seconds() * scale)
        seconds = ((span.end or end) - span.start).total_seconds()
        body.append(
            f"<g><title>{escape(span.lane)} {escape(span.step)}: {seconds:,.1f} s ({escape(span.state)})</title>"
            f"<rect x='{x:.1f}' y='{y + 3}' width='{length:.1f}' height='{row - 6}' "
            f"fill='{PALETTE.get(span.step, DEFAULT_COLOUR)}'{FAILED_OUTLINE if span.state == 'failed' else ''}/></g>"
        )
    return _svg(width, height, body, title)


def legend(names: Sequence[str]) -> str:
    """A one-line colour key for :func:`gantt` (HTML, not SVG)."""
    return " ".join(
        f"<span class='key'><i style='background:{PALETTE.get(n, DEFAULT_COLOUR)}'></i>{escape(n)}</span>"
        for n in names
    )


def when(moment: datetime | None) -> str:
    """A timestamp as the pages print it."""
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")
