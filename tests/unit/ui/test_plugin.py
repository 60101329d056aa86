"""The plugin comes with the package: Airflow lists it once, whether providers are discovered lazily or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_batchcode.get_provider_info import get_provider_info
from airflow_batchcode.ui import charts
from airflow_batchcode.ui.codes import check_code, label_of


@pytest.mark.parametrize("lazy", ["True", "False"])
def test_airflow_plugins_lists_it_once(tmp_path: Path, lazy: str) -> None:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": lazy,
    }
    # from a folder outside the checkout, as an installed package is seen (the checkout's egg-info is a second copy)
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "plugins", "--output", "json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    plugins = [p for p in json.loads(done.stdout[done.stdout.index("[") :]) if p["name"] == "batchcode"]
    assert len(plugins) == 1
    [plugin] = plugins
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/batchcode"]
    views = {view["name"]: view for view in plugin["external_views"]}
    assert views["Coding report"]["destination"] == "dag_run" and "{RUN_ID}" in views["Coding report"]["href"]
    assert views["Coding review"]["destination"] == "nav"


def test_provider_info_names_the_plugin() -> None:
    assert get_provider_info()["plugins"] == [
        {"name": "batchcode", "plugin-class": "airflow_batchcode.ui.plugin.BatchCodeUIPlugin"}
    ]


def test_codes_are_checked_for_their_form_and_labelled_from_suggestions_or_the_sample() -> None:
    assert check_code("261313") is None and label_of("anzsco", "261313") == "Software Engineer"
    assert check_code("121311") is None, "a real ANZSCO code the shipped sample does not hold (Apiarist)"
    assert label_of("anzsco", "121311") is None
    offered = json.dumps([{"codeCategory": "121311", "codeLabel": "Apiarist"}, {"codeCategory": "1213"}])
    assert label_of("anzsco", "121311", offered) == "Apiarist", "the row's suggestion names it"
    assert label_of("anzsco", "261313", offered) == "Software Engineer"
    assert label_of("anzsco", "1213", offered) == label_of("anzsco", "1213", "not json") == "Livestock Farmers", (
        "a suggestion without a label, or unreadable suggestions: the sample's label"
    )
    assert check_code("12a") == check_code("1234567") == check_code("") == "a code is 1 to 6 digits"
    assert label_of("../etc", "123") is None


def test_charts_escape_labels_and_reference_nothing_outside() -> None:
    evil = "<script>alert(1)</script>'\""
    svg = charts.bars([(evil, 3.0), ("ok", 1.0)], title=evil)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count("http") == 1, "only the SVG namespace"
    assert "&#x27;" in svg and "&quot;" in svg, "quotes cannot end an attribute"
    long = "x" * 300
    assert f"<title>{long}: 1</title>" in charts.bars([(long, 1.0)], title="t"), "the full text stays in the tooltip"


def test_run_ids_cannot_break_out_of_links() -> None:
    from airflow_batchcode.ui import pages
    from airflow_batchcode.ui.queries import Night

    page = pages.dag_page(
        "d", "t", [Night("x'><script>alert(1)</script>", "2026-01-01 00:00", 3, 2)], "/batchcode/dags/d"
    )
    assert "<script>alert" not in page and "href='/batchcode/dags/d/runs/x%27%3E%3Cscript%3E" in page


def test_csv_downloads_open_formula_like_answers_as_text() -> None:
    from airflow_batchcode.ui.queries import spreadsheet_safe

    row = ("R1", 3, '=HYPERLINK("http://x","y")', "+61 nurse", "-cleaning", "@sum", 0.5, None, "nurse")
    assert spreadsheet_safe(row) == (
        "R1",
        3,
        '\'=HYPERLINK("http://x","y")',
        "'+61 nurse",
        "'-cleaning",
        "'@sum",
        0.5,
        None,
        "nurse",
    )
    plain = ("R2", 4, "nurse", "caring for patients", 0.93)
    assert spreadsheet_safe(plain) is plain


def test_the_report_says_first_whether_the_run_failed_and_which_tries() -> None:
    from datetime import datetime

    from airflow_batchcode.ui.pages import run_banner
    from airflow_batchcode.ui.runs import Span

    at = datetime(2026, 1, 6, 3)
    spans = [
        Span("extract", "extract", at, at, "success"),
        Span("chunk 0", "upload", at, at, "failed"),
        Span("chunk 0", "upload", at, at, "failed"),
        Span("chunk 1", "download", at, at, "success"),
    ]
    failed = run_banner("failed", spans, rows_out=0)
    assert "The run failed." in failed and "Failed: upload (chunk 0). No rows were loaded." in failed
    gate = run_banner("failed", [*spans[:1], Span("load", "load", at, at, "failed")], rows_out=80)
    assert "Failed: load. The load wrote its rows" in gate and "quality gate" in gate
    assert "is running" in run_banner("running", spans, rows_out=0) and "upload (chunk 0)" in run_banner(
        "running", spans, rows_out=0
    )
    assert run_banner("success", spans, rows_out=80) == "<div class='banner ok'>The run succeeded.</div>"
    assert run_banner(None, spans, rows_out=0) == ""
    drawn = charts.gantt(spans, title="t")
    assert drawn.count("stroke-dasharray") == 2, "the two failed tries are outlined"


def test_rejection_reasons_count_together_what_differs_only_in_the_specifics() -> None:
    from airflow_batchcode.ui.queries import reasons

    ascii_error = "tasks_text has a character outside printable ASCII {!r} at character {}"
    errors = [
        (ascii_error.format("é", 4), 3),
        (ascii_error.format("ü", 9), 2),
        ("texts are 412 characters; the service takes at most 300", 1),
        ("texts are 500 characters; the service takes at most 300", 4),
        ("both occp_text and tasks_text are empty (or only whitespace)", 7),
        ("occp_text has a character outside printable ASCII 'é' at character 4", 1),
        ("record R0000012 failed", 1),
    ]
    assert reasons(errors) == [
        ("both occp_text and tasks_text are empty (or only whitespace)", 7),
        ("tasks_text has a character outside printable ASCII '…' at character N", 5),
        ("texts are N characters; the service takes at most 300", 5),
        ("occp_text has a character outside printable ASCII 'é' at character 4", 1),
        ("record R0000012 failed", 1),
    ]
    assert len(reasons([(f"row {n} failed", 1) for n in range(100)], most=12)) == 1


def test_the_history_names_a_run_by_the_days_it_coded() -> None:
    from datetime import datetime

    from airflow_batchcode.ui.runs import _night_of

    interval = datetime(2026, 1, 2)
    assert _night_of(interval, {}) == _night_of(interval, None) == "2026-01-02"
    assert _night_of(interval, {"from_date": "2026-01-01", "to_date": "2026-01-01", "recode": True}) == (
        "2026-01-01 re-code"
    )
    assert _night_of(interval, {"from_date": "2025-12-01", "to_date": "2025-12-31"}) == "2025-12-01 to 2025-12-31"
    assert _night_of(None, {}) == ""
