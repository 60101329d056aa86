"""HTML of the plugin's pages: one self-contained document each (inline CSS, no external asset).

Every value is escaped here; the chart SVG comes from :mod:`~airflow_batchcode.ui.charts`,
which escapes its own labels. The review page's script is inline and talks only to this app.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from airflow_batchcode.ui import charts
from airflow_batchcode.ui.queries import Night, RunReport
from airflow_batchcode.ui.runs import STEPS, Span

STYLE = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222;background:#fff}
h1{font-size:20px;margin:0 0 8px} h2{font-size:15px;margin:18px 0 6px}
.grid{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start;margin-bottom:14px}
.card{border:1px solid #ddd;border-radius:6px;padding:10px;min-width:260px}
.num{font-size:22px;font-weight:600} table{border-collapse:collapse;font-size:13px}
td,th{border-bottom:1px solid #eee;padding:4px 8px;text-align:left;vertical-align:top}
.key{margin-right:10px;font-size:12px} .key i{display:inline-block;width:10px;height:10px;margin-right:4px}
a{color:#1565c0} .muted{color:#777;font-size:12px} button{cursor:pointer}
.msg{padding:6px;border-radius:4px} .ok{background:#e8f5e9} .bad{background:#ffebee}
.banner{padding:8px 10px;border-radius:4px;margin-bottom:12px;background:#fff8e1}
.banner.bad{border-left:4px solid #c62828} .banner.ok{border-left:4px solid #2e7d32}
"""


def document(title: str, body: str) -> str:
    """A whole page."""
    return (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>"
    )


def _card(title: str, content: str) -> str:
    return f"<div class='card'><h2>{escape(title)}</h2>{content}</div>"


def _number(label: str, value: Any) -> str:
    shown = f"{value:,}" if isinstance(value, int) else escape(str(value))
    return f"<div class='card'><div class='muted'>{escape(label)}</div><div class='num'>{shown}</div></div>"


_TEXT_CARDS = (
    ("distinct_texts", "Distinct texts"),
    ("duplicates", "Repeats coded once"),
    ("from_cache", "Served from the cache"),
    ("sent_batch", "Sent in batch"),
    ("sent_realtime", "Sent in real time"),
)
"""The run summary's text counts (:meth:`airflow_batchcode.summary.RunSummary.count_texts`) the report shows."""


def run_banner(state: str | None, spans: list[Span], rows_out: int) -> str:
    """What a reader must know before the numbers: whether the run failed, which tasks, and what to do."""
    if state is None:
        return ""
    if state == "success":
        return "<div class='banner ok'>The run succeeded.</div>"
    failed = list(dict.fromkeys(_task_name(span) for span in spans if span.state == "failed"))
    if state != "failed":
        return (
            f"<div class='banner'>The run is {escape(state)}: the numbers below are what it has loaded so far."
            + (f" Failed tries so far: {escape(', '.join(failed))}." if failed else "")
            + "</div>"
        )
    loaded = any(span.step == "load" and span.state == "success" for span in spans)
    advice = (
        "The load wrote its rows before the run failed (a quality gate below its rate fails the load after "
        "writing them)."
        if loaded or rows_out
        else "No rows were loaded."
    )
    return (
        "<div class='banner bad'><b>The run failed.</b> "
        + (f"Failed: {escape(', '.join(failed))}. " if failed else "")
        + f"{advice} Each failed task's log says why. Clearing the failed tasks carries the run on: tasks that "
        "succeeded are not run again, and a remote operation already created is picked up, not created again.</div>"
    )


def _task_name(span: Span) -> str:
    return span.step if span.lane in ("extract", "load") else f"{span.step} ({span.lane})"


def report_page(
    dag_id: str,
    run_id: str,
    table: str,
    report: RunReport,
    xcoms: dict[str, Any],
    spans: list[Span],
    base: str,
    *,
    state: str | None = None,
) -> str:
    """The run report: the run's state (and its failed tasks), counts, status mix, confidence, code lengths,
    top codes, rejections, timeline, usage, the API requests the run used and left in the quota window, and
    what de-duplication and the result cache saved (the texts the run sent against its records)."""
    extract = xcoms.get("extract") or {}
    summary = xcoms.get("load") or {}
    records_in = extract.get("rows", "unknown") if isinstance(extract, dict) else "unknown"
    usage = summary.get("usage") or {} if isinstance(summary, dict) else {}
    requests = summary.get("requests") or {} if isinstance(summary, dict) else {}
    texts = summary.get("texts") or {} if isinstance(summary, dict) else {}
    coded = report.status.get("successful", 0) + report.status.get("reviewed", 0)
    rate = f"{coded / report.rows_out:.1%}" if report.rows_out else "-"
    numbers = "".join(
        [
            _number("Records in", records_in),
            _number("Rows out", report.rows_out),
            _number("Coded", rate),
            _number("Operations", summary.get("operations", "-") if isinstance(summary, dict) else "-"),
            _number("Service", summary.get("service", "-") if isinstance(summary, dict) else "-"),
            *(_number(name.replace("_", " "), value) for name, value in usage.items()),
            *(_number(label, texts[key]) for key, label in _TEXT_CARDS if key in texts),
            *([_number("API requests used", requests["used"])] if "used" in requests else []),
            *(
                [
                    _number(
                        f"Requests left in window (resets {requests.get('window_resets')})", requests["left_in_window"]
                    )
                ]
                if requests.get("left_in_window") is not None
                else []
            ),
        ]
    )
    bins = [(f"{i / 10:.1f}", float(n)) for i, n in enumerate(report.confidence)]
    top = [(f"{code} {label}", float(n)) for code, label, n in report.top_codes]
    downloads = (
        f"<a href='{base}/rows.csv'>CSV</a> · <a href='{base}/rows.parquet'>Parquet</a> · "
        f"<a href='{base.rsplit('/runs/', 1)[0]}'>all runs</a> · "
        f"<a href='{base.split('/dags/', 1)[0]}/review?{escape(urlencode({'dag_id': dag_id, 'run_id': run_id}))}'>"
        "review queue</a>"
    )
    body = [
        f"<h1>Coding report · {escape(dag_id)} · {escape(run_id)}</h1>",
        f"<div class='muted'>Output table {escape(table)} · download {downloads}</div>",
        run_banner(state, spans, report.rows_out),
        f"<div class='grid'>{numbers}</div><div class='grid'>",
        _card(
            "Status mix",
            charts.bars(
                sorted(((s, float(n)) for s, n in report.status.items()), key=lambda i: -i[1]),
                title="Status mix",
                width=420,
                label_width=110,
            ),
        ),
        _card("Confidence of coded records", charts.columns(bins, title="Confidence histogram", width=460)),
        _card(
            "Code length (digits)",
            charts.bars(
                [(f"{n} digits", float(c)) for n, c in sorted(report.code_lengths.items(), reverse=True)],
                title="Code length mix",
                width=380,
                label_width=90,
            ),
        ),
        _card("Top 20 codes", charts.bars(top, title="Top 20 codes", width=760, label_width=400)),
        _card(
            "Why records were rejected",
            charts.bars(
                [(r, float(n)) for r, n in report.rejections], title="Rejection reasons", width=1000, label_width=640
            ),
        ),
        "</div>",
        _card(
            "Per-chunk timeline",
            charts.legend([*STEPS, "extract", "load"])
            + " <span class='key'>a failed try: outlined in red</span>"
            + charts.gantt(spans, title="Per-chunk timeline"),
        ),
    ]
    return document(f"Coding report {run_id}", "".join(body))


def _state_class(state: str) -> str:
    return "bad" if state == "failed" else ""


def dag_page(dag_id: str, table: str, nights: list[Night], base: str) -> str:
    """Success rate and volume night by night, with links to each run's report."""
    points = [(f"{night.night} {night.state}".strip(), night.rows, night.success_rate) for night in nights]
    rows = "".join(
        f"<tr><td><a href='{base}/runs/{escape(quote(n.run_id, safe=''), quote=True)}'>{escape(n.run_id)}</a></td>"
        f"<td>{escape(n.night)}</td><td class='{_state_class(n.state)}'>{escape(n.state or '-')}</td>"
        f"<td>{escape(n.loaded or '-')}</td><td>{n.rows:,}</td><td>{n.success_rate:.1%}</td></tr>"
        for n in reversed(nights)
    )
    body = (
        f"<h1>Coding history · {escape(dag_id)}</h1><div class='muted'>Output table {escape(table)}</div>"
        + _card(
            "Volume (bars) and share coded (line), night by night",
            charts.trend(points, title="Success rate and volume per night"),
        )
        + f"<h2>Runs</h2><table><tr><th>Run</th><th>Night</th><th>State</th><th>Loaded</th><th>Rows</th>"
        f"<th>Coded</th></tr>{rows}</table>"
    )
    return document(f"Coding history {dag_id}", body)


def _suggestions(value: Any) -> list[dict[str, Any]]:
    try:
        parsed = json.loads(value) if isinstance(value, str) else []
    except ValueError:
        return []
    return [s for s in parsed if isinstance(s, dict)] if isinstance(parsed, list) else []


def review_page(
    dag_ids: list[str],
    filters: dict[str, str],
    rows: list[dict[str, Any]],
    recent: list[tuple[Any, ...]],
    next_url: str | None,
    post_base: str,
    *,
    editable: bool = True,
    problem: str | None = None,
) -> str:
    """The review queue: filters, one row per record with its suggestions and a code box (read-only users see
    the outcomes without them), recent decisions; ``problem`` says what is wrong with the filters."""
    options = "".join(
        f"<option value='{escape(d, quote=True)}'{' selected' if d == filters.get('dag_id') else ''}>"
        f"{escape(d)}</option>"
        for d in dag_ids
    )
    form = (
        "<form method='get' class='grid' style='align-items:end'>"
        f"<label>DAG<br><select name='dag_id'>{options}</select></label>"
        + "".join(
            f"<label>{label}<br><input name='{name}' type='{kind}' "
            f"value='{escape(filters.get(name, ''), quote=True)}'></label>"
            for label, name, kind in (
                ("Run", "run_id", "text"),
                ("Loaded on", "date", "date"),
                ("Topic", "topic", "text"),
                ("Confidence below", "threshold", "text"),
                ("Record id", "record", "text"),
            )
        )
        + "<label><input name='errors' type='checkbox' value='1'"
        + (" checked" if filters.get("errors") else "")
        + "> with errors<br><span class='muted'>records refused by the rules or the service</span></label>"
        + "<button type='submit'>Filter</button></form>"
    )
    lines = []
    for row in rows:
        picks = "".join(
            f"<button class='pick' data-code='{escape(str(s.get('codeCategory', '')), quote=True)}'>"
            f"{escape(str(s.get('codeCategory', '')))} {escape(str(s.get('codeLabel', '')))} "
            f"({escape(str(s.get('codeConfidence', '')))})</button> "
            for s in _suggestions(row["suggestions"])
        )
        if row["code_status"] == "successful" and row["code_category"]:
            picks += (
                f"<button class='pick' data-code='{escape(str(row['code_category']), quote=True)}'>"
                f"keep {escape(str(row['code_category']))}</button> "
            )
        key = json.dumps({"run_id": row["dag_run_id"], "position": row["position"], "record_id": row["record_id"]})
        conf = "" if row["code_confidence"] is None else f"{row['code_confidence']:.2f}"
        lines.append(
            f"<tr data-dag='{escape(row['dag_id'], quote=True)}' data-key='{escape(key, quote=True)}'>"
            f"<td>{escape(str(row['record_id']))}<div class='muted'>{escape(row['dag_run_id'])}</div></td>"
            f"<td>{escape(str(row['occp_text'] or ''))}"
            f"<div class='muted'>{escape(str(row['tasks_text'] or ''))}</div>"
            + (f"<div class='muted'>error: {escape(str(row['error']))}</div>" if row.get("error") else "")
            + "</td>"
            f"<td>{escape(str(row['topic'] or ''))}</td>"
            f"<td>{escape(row['code_status'])} {escape(str(row['code_category'] or ''))} {conf}</td>"
            + (
                f"<td>{picks}<input class='code' size='7' maxlength='6' placeholder='code'> "
                "<button class='save'>Save</button><div class='out'></div></td></tr>"
                if editable
                else "<td class='muted'>read-only</td></tr>"
            )
        )
    recent_rows = "".join(
        "<tr>"
        + "".join(f"<td>{escape('' if v is None else str(v))}</td>" for v in (str(r[0])[:19], *r[1:4]))
        + _record_link(r[2], r[4])
        + "".join(f"<td>{escape('' if v is None else str(v))}</td>" for v in r[5:])
        + "</tr>"
        for r in recent
    )  # when, to the second (stored to the microsecond to keep two decisions in order)
    more = f"<p><a href='{escape(next_url, quote=True)}'>Next page</a></p>" if next_url else ""
    decisions = (
        "<h2>Recent decisions</h2><table id='decisions'><tr><th>When</th><th>Who</th><th>DAG</th>"
        "<th>Run</th><th>Record</th><th>Old status</th><th>Old code</th><th>New code</th><th>Label</th></tr>"
        + (recent_rows or "<tr><td colspan='9'>None yet.</td></tr>")
        + "</table>"
    )
    queue = (
        "<h2>Records to review</h2><table id='queue'><tr><th>Record</th><th>Answer</th><th>Topic</th>"
        "<th>Outcome</th><th>Decision</th></tr>"
        + ("".join(lines) or "<tr><td colspan='5'>Nothing to review.</td></tr>")
        + "</table>"
        + more
    )
    script = f"<script>{_SCRIPT % json.dumps(post_base)}</script>"
    notice = f"<div class='msg bad'>{escape(problem)}</div>" if problem else ""
    if not editable and dag_ids:
        notice += "<div class='muted'>You can read this queue; deciding needs edit permission on the DAG.</div>"
    body = "<h1>Coding review</h1>" + form + notice + decisions + queue + script
    return document("Coding review", body)


def _record_link(dag_id: str, record_id: Any) -> str:
    """A decision's record, linked to the queue showing that record's rows (to see or correct it)."""
    if not record_id:
        return "<td></td>"
    query = urlencode({"dag_id": dag_id, "record": str(record_id)})
    return f"<td><a href='?{escape(query, quote=True)}'>{escape(str(record_id))}</a></td>"


_SCRIPT = """
const base = %s;
async function decide(row, code) {
  const out = row.querySelector('.out');
  const body = Object.assign(JSON.parse(row.dataset.key), {code: code});
  const reply = await fetch(base + '/dags/' + encodeURIComponent(row.dataset.dag) + '/reviews',
    {method: 'POST', headers: {'Content-Type': 'application/json'}, credentials: 'same-origin',
     body: JSON.stringify(body)});
  const answer = await reply.json().catch(() => ({detail: reply.statusText}));
  out.className = 'out msg ' + (reply.ok ? 'ok' : 'bad');
  out.textContent = reply.ok ? 'Saved: ' + answer.new_code + ' ' + (answer.new_label || '')
                             : (answer.detail || 'refused');
  if (reply.ok) setTimeout(() => location.reload(), 800);
}
document.querySelectorAll('#queue tr[data-key]').forEach(row => {
  row.querySelectorAll('.pick').forEach(b => b.addEventListener('click', () => decide(row, b.dataset.code)));
  const save = row.querySelector('.save');
  if (save) save.addEventListener('click', () => decide(row, row.querySelector('.code').value.trim()));
});
"""
