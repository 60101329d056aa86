"""The UI plugin inside Airflow's own api-server app: a real pipeline run, SimpleAuthManager users, its JWTs.

One pipeline run (SQLite warehouse, ABS emulator) fills the metadata DB (outlet Asset, XComs,
task instances) and the output table; the api-server app built by ``airflow.api_fastapi.app``
mounts the plugin like in production. ``admin`` may edit, ``viewer`` may only read, and a
request without a token is anonymous.
"""

from __future__ import annotations

import html
import json
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from airflow_batchcode.warehouse import TABLE_COLUMNS, replace_run_rows
from tests.support import batchcode_connection, emulator, run_pipeline, sqlite_warehouse

DAG_ID = "pipeline_test"
TABLE = "coded_responses"
CLIENT_ID, SECRET = "ui-client", f"ui-secret-{uuid.uuid4().hex}"
"""The run's credentials: unique, so that finding them on a page could only mean a leak."""


@pytest.fixture(scope="module")
def pipeline_run(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(run id, warehouse path) of one finished pipeline run over 80 answers."""
    tmp_path = tmp_path_factory.mktemp("ui")
    path = sqlite_warehouse(tmp_path, 80)
    with (
        emulator(clients={CLIENT_ID: SECRET}) as server,
        batchcode_connection(server, client_id=CLIENT_ID, secret=SECRET),
    ):
        dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK="50")
    assert dag_run.state == "success"
    yield dag_run.run_id, path
    os.environ.pop("AIRFLOW_CONN_TEST_WAREHOUSE", None)


@pytest.fixture(scope="module")
def api(pipeline_run: tuple[str, Path]) -> Iterator[dict[str, Any]]:
    """The api-server app with two users; yields the client and each user's headers."""
    os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin,viewer:viewer"
    os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "False"
    os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", "ui-test-secret-" + "0123456789abcdef" * 4)
    from airflow.api_fastapi.app import create_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    app = create_app("core")
    manager = app.state.auth_manager
    headers = {
        role: {"Authorization": f"Bearer {manager.generate_jwt(SimpleAuthManagerUser(username=role, role=role))}"}
        for role in ("admin", "viewer")
    }
    with TestClient(app) as client:
        yield {"client": client, "headers": headers, "run_id": pipeline_run[0], "path": pipeline_run[1]}
    for name in ("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"):
        os.environ.pop(name, None)


def rows_of(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def reviews_count(path: Path) -> int:
    try:
        return int(rows_of(path, f"SELECT COUNT(*) FROM {TABLE}_reviews")[0][0])
    except sqlite3.OperationalError:
        return 0


def routes(run_id: str) -> list[str]:
    base = f"/batchcode/dags/{DAG_ID}"
    return [
        f"{base}/runs/{run_id}",
        f"{base}/runs/{run_id}/rows.csv",
        f"{base}/runs/{run_id}/rows.parquet",
        base,
        "/batchcode/review",
    ]


def test_anonymous_is_refused_everywhere(api: dict[str, Any]) -> None:
    client = api["client"]
    for route in routes(api["run_id"]):
        assert client.get(route).status_code == 401, route
    answer = client.post(
        f"/batchcode/dags/{DAG_ID}/reviews", json={"run_id": api["run_id"], "position": 1, "code": "1"}
    )
    assert answer.status_code == 401
    assert client.get(routes(api["run_id"])[0], headers={"Authorization": "Bearer not-a-token"}).status_code in (
        401,
        403,
    )
    assert reviews_count(api["path"]) == 0


def test_no_page_or_download_shows_the_connection_secret(api: dict[str, Any]) -> None:
    for route in routes(api["run_id"]):
        answer = api["client"].get(route, headers=api["headers"]["admin"])
        assert answer.status_code == 200, route
        assert SECRET.encode() not in answer.content and CLIENT_ID.encode() not in answer.content, route


def test_report_shows_counts_and_charts_drawn_on_the_server(api: dict[str, Any]) -> None:
    client, run_id = api["client"], api["run_id"]
    page = client.get(f"/batchcode/dags/{DAG_ID}/runs/{run_id}", headers=api["headers"]["viewer"])
    assert page.status_code == 200, page.text
    html = page.text
    total = rows_of(api["path"], f"SELECT COUNT(*) FROM {TABLE} WHERE dag_run_id = ?", run_id)[0][0]
    assert total == 80
    assert "Records in" in html and "Rows out" in html and f">{total}<" in html
    assert "The run succeeded." in html, "the run's state, read from Airflow's metadata database"
    for chart in (
        "Status mix",
        "Confidence histogram",
        "Code length mix",
        "Top 20 codes",
        "Rejection reasons",
        "Per-chunk timeline",
    ):
        assert f"aria-label='{chart}'" in html, chart
    assert html.count("<svg") >= 6
    assert "<script src" not in html and "cdn" not in html.lower(), "no external script: works air-gapped"
    top_code, label = rows_of(
        api["path"],
        f"SELECT code_category, code_label FROM {TABLE} WHERE code_category IS NOT NULL "
        "GROUP BY code_category, code_label ORDER BY COUNT(*) DESC, code_category LIMIT 1",
    )[0]
    assert f"{top_code} " in html and label.split()[0] in html, "the top code is shown with its label"
    assert "chunk 0" in html and "chunk 1" in html, "80 records in chunks of 50: two chunk lanes"
    assert "API requests used" in html and "Requests left in window" in html, "the request budget's account"
    # what de-duplication saved: the 80 records' distinct texts, and the repeats among them coded once
    sent = f"SELECT s.occupation, s.duties FROM survey_responses s JOIN {TABLE} o ON o.record_id = s.respondent_id "
    sent += "WHERE o.dag_run_id = ? AND o.chunk IS NOT NULL"  # not rejected by the input rules
    accepted = len(rows_of(api["path"], sent, run_id))
    distinct = len(set(rows_of(api["path"], sent, run_id)))
    assert distinct < accepted, "the sample answers repeat"
    for label, number in (("Distinct texts", distinct), ("Repeats coded once", accepted - distinct)):
        assert re.search(rf"{label}</div><div class='num'>{number}<", html), (label, number)


def test_csv_download_has_every_row_and_parquet_is_a_clear_501_without_pyarrow(api: dict[str, Any]) -> None:
    client, run_id, viewer = api["client"], api["run_id"], api["headers"]["viewer"]
    answer = client.get(f"/batchcode/dags/{DAG_ID}/runs/{run_id}/rows.csv", headers=viewer)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    lines = answer.text.strip().splitlines()
    assert lines[0].split(",")[: len(TABLE_COLUMNS)] == list(TABLE_COLUMNS)
    assert len(lines) == 81
    # an answer a spreadsheet would run as a formula opens as the text it is
    change = f"UPDATE {TABLE} SET tasks_text = ? WHERE dag_run_id = ? AND position = 1"
    with closing(sqlite3.connect(api["path"])) as conn:
        (before,) = conn.execute(f"SELECT tasks_text FROM {TABLE} WHERE dag_run_id = ? AND position = 1", (run_id,))
        conn.execute(change, ("=HYPERLINK(1)", run_id))
        conn.commit()
        try:
            text = client.get(f"/batchcode/dags/{DAG_ID}/runs/{run_id}/rows.csv", headers=viewer).text
        finally:
            conn.execute(change, (before[0], run_id))
            conn.commit()
    assert ",'=HYPERLINK(1)," in text and ",=HYPERLINK" not in text
    parquet = client.get(f"/batchcode/dags/{DAG_ID}/runs/{run_id}/rows.parquet", headers=viewer)
    try:
        import pyarrow.parquet as pq
    except ImportError:
        assert parquet.status_code == 501 and "pyarrow" in parquet.json()["detail"]
    else:
        import io

        assert parquet.status_code == 200
        assert pq.read_table(io.BytesIO(parquet.content)).num_rows == 80


def test_dag_page_shows_each_night_by_the_day_it_coded_failed_nights_too(api: dict[str, Any], tmp_path: Path) -> None:
    warehouse = os.environ.pop("AIRFLOW_CONN_TEST_WAREHOUSE")
    try:  # a night whose extract cannot reach the warehouse: it fails before loading a row
        failed = run_pipeline(tmp_path, "2026-01-03")
    finally:
        os.environ["AIRFLOW_CONN_TEST_WAREHOUSE"] = warehouse
    assert failed.state == "failed"
    page = api["client"].get(f"/batchcode/dags/{DAG_ID}", headers=api["headers"]["viewer"])
    assert page.status_code == 200
    assert "aria-label='Success rate and volume per night'" in page.text and api["run_id"] in page.text
    assert f">{failed.run_id}</a></td><td>2026-01-03</td><td class='bad'>failed</td><td>-</td><td>0</td>" in page.text
    assert "<td>2026-01-01</td><td class=''>success</td>" in page.text, "the loaded night, named by its day"


def test_unknown_dag_is_404(api: dict[str, Any]) -> None:
    answer = api["client"].get("/batchcode/dags/no_such_dag", headers=api["headers"]["admin"])
    assert answer.status_code in (403, 404)


def candidate(api: dict[str, Any]) -> tuple[int, str, str]:
    """(position, record id, topic) of an unsuccessful row, else the row of lowest confidence."""
    return rows_of(
        api["path"],
        f"SELECT position, record_id, topic FROM {TABLE} WHERE dag_run_id = ? AND code_status IN ('unsuccessful', 'successful') "
        "ORDER BY code_status DESC, code_confidence LIMIT 1",
        api["run_id"],
    )[0]


def test_viewer_reads_the_queue_but_cannot_decide(api: dict[str, Any]) -> None:
    client, viewer = api["client"], api["headers"]["viewer"]
    page = client.get("/batchcode/review", params={"dag_id": DAG_ID, "threshold": "1"}, headers=viewer)
    assert page.status_code == 200 and "Records to review" in page.text
    position, record_id, _ = candidate(api)
    body = {"run_id": api["run_id"], "position": position, "record_id": record_id, "code": "261313"}
    answer = client.post(f"/batchcode/dags/{DAG_ID}/reviews", json=body, headers=viewer)
    assert answer.status_code == 403
    assert reviews_count(api["path"]) == 0


def test_bad_decisions_are_4xx_and_write_nothing(api: dict[str, Any]) -> None:
    client, admin = api["client"], api["headers"]["admin"]
    position, record_id, _ = candidate(api)
    url = f"/batchcode/dags/{DAG_ID}/reviews"
    good = {"run_id": api["run_id"], "position": position, "record_id": record_id}
    other_run_id = rows_of(
        api["path"], f"SELECT record_id FROM {TABLE} WHERE position != ? AND record_id IS NOT NULL LIMIT 1", position
    )[0][0]
    cases = [
        ({**good, "code": "12a"}, 400),
        ({**good, "code": "1234567"}, 400),
        ({**good, "code": ""}, 400),
        ({**good, "code": "261313", "run_id": "manual__other"}, 404),
        ({**good, "code": "261313", "record_id": other_run_id}, 404),
        ({**good, "code": "261313", "position": "1; DROP TABLE x"}, 400),
        ({"code": "261313"}, 400),
    ]
    for body, status in cases:
        answer = client.post(url, json=body, headers=admin)
        assert answer.status_code == status, (body, answer.text)
    assert (
        client.post(
            url,
            content=json.dumps({**good, "code": "261313", "pad": "x" * 10_000}),
            headers={**admin, "Content-Type": "application/json"},
        ).status_code
        == 413
    )
    assert client.post(url, data={"code": "261313"}, headers=admin).status_code == 415
    assert reviews_count(api["path"]) == 0
    assert rows_of(api["path"], f"SELECT COUNT(*) FROM {TABLE} WHERE code_status = 'reviewed'")[0][0] == 0


def test_a_decision_is_stored_shown_and_survives_a_reload(api: dict[str, Any]) -> None:
    client, admin, run_id, path = api["client"], api["headers"]["admin"], api["run_id"], api["path"]
    position, record_id, topic = candidate(api)
    assert topic == "anzsco"
    before = rows_of(
        path, f"SELECT code_status, code_category FROM {TABLE} WHERE dag_run_id = ? AND position = ?", run_id, position
    )[0]
    body = {"run_id": run_id, "position": position, "record_id": record_id, "code": "261313"}
    answer = client.post(f"/batchcode/dags/{DAG_ID}/reviews", json=body, headers=admin)
    assert answer.status_code == 200, answer.text
    assert answer.json()["new_label"] == "Software Engineer"
    stored = rows_of(path, f"SELECT reviewer, old_status, old_code, new_code, reviewed_at FROM {TABLE}_reviews")
    assert stored == [("admin", before[0], before[1], "261313", stored[0][4])] and stored[0][4]
    reviewed = "SELECT code_status, code_category, code_label FROM {} WHERE dag_run_id = ? AND position = ?"
    assert rows_of(path, reviewed.format(TABLE), run_id, position) == [("reviewed", "261313", "Software Engineer")]
    assert rows_of(path, reviewed.format(f"{TABLE}_latest"), run_id, position) == [
        ("reviewed", "261313", "Software Engineer")
    ]
    page = client.get("/batchcode/review", params={"dag_id": DAG_ID}, headers=admin).text
    assert "Recent decisions" in page and "261313" in page.split("Recent decisions", 1)[1]

    # reload the run's rows as the load task does (service outcome restored): the decision is applied again
    columns = [c for c in TABLE_COLUMNS if c not in ("dag_id", "dag_run_id", "loaded_at")]
    original = [
        tuple(
            before[0] if c == "code_status" else before[1] if c == "code_category" else v
            for c, v in zip(columns, row, strict=True)
        )
        if row[1] == position
        else row
        for row in rows_of(
            path, f"SELECT {', '.join(columns)} FROM {TABLE} WHERE dag_run_id = ? ORDER BY position", run_id
        )
    ]
    assert replace_run_rows("test_warehouse", TABLE, original, dag_id=DAG_ID, run_id=run_id) == 80
    assert rows_of(path, reviewed.format(TABLE), run_id, position) == [("reviewed", "261313", "Software Engineer")]
    assert rows_of(path, f"SELECT COUNT(*) FROM {TABLE} WHERE dag_run_id = ?", run_id) == [(80,)]


def test_the_queue_lists_refused_records_with_their_error_when_asked(api: dict[str, Any]) -> None:
    client, viewer = api["client"], api["headers"]["viewer"]
    refused = rows_of(
        api["path"],
        f"SELECT record_id, error FROM {TABLE} WHERE dag_run_id = ? AND code_status = 'error'",
        api["run_id"],
    )
    assert refused, "the run's messy answers include records the input rules refused"
    plain = client.get("/batchcode/review", params={"dag_id": DAG_ID}, headers=viewer).text
    with_errors = client.get("/batchcode/review", params={"dag_id": DAG_ID, "errors": "1"}, headers=viewer).text
    assert "error: " not in plain and "name='errors' type='checkbox' value='1'>" in plain
    assert html.escape(f"error: {refused[0][1]}") in with_errors
    assert "value='1' checked>" in with_errors, "the filter stays on for the next page"


def test_the_queue_finds_a_record_to_correct_a_decision_and_readers_get_no_save_buttons(api: dict[str, Any]) -> None:
    client, admin, viewer = api["client"], api["headers"]["admin"], api["headers"]["viewer"]
    _, record_id, _ = candidate(api)
    found = client.get("/batchcode/review", params={"dag_id": DAG_ID, "record": record_id}, headers=admin).text
    assert found.count("<tr data-dag=") == 1 and f"&quot;record_id&quot;: &quot;{record_id}&quot;" in found
    assert "class='save'" in found, "an editor decides from the page"
    as_reader = client.get("/batchcode/review", params={"dag_id": DAG_ID, "record": record_id}, headers=viewer).text
    assert "class='save'" not in as_reader and "class='pick'" not in as_reader and "read-only" in as_reader
    assert "deciding needs edit permission" in as_reader

    for params, message in (
        ({"threshold": "60"}, "Confidence below must be a number from 0 to 1 (0.6 for 60 %), not &#x27;60&#x27;"),
        ({"date": "yesterday"}, "Loaded on must be a date (YYYY-MM-DD), not &#x27;yesterday&#x27;"),
    ):
        page = client.get("/batchcode/review", params={"dag_id": DAG_ID, **params}, headers=viewer)
        assert page.status_code == 200 and message in page.text, page.text[:300]
        assert "Nothing to review." in page.text, "no rows under a filter that could not be read"
