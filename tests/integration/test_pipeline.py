"""The reusable pipeline end to end through ``dag.test()``: SQLite and PostgreSQL warehouses, the ABS emulator.

Every extracted record must appear exactly once in the output table with the right status,
nasty input included; several chunks; a re-run of the same run replaces its rows; a backfill
over three days selects three slices.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from airflow_batchcode.sample_data import survey_responses
from tests.support import admin, batchcode_connection, emulator, output, postgres_database, run_pipeline

DAY = "2026-01-01"
NASTY = [
    ("DUP", "software developer", "writing code", "successful", None),
    ("DUP", "software developer", "writing code", "successful", None),
    ("NULL-TITLE", None, "laying bricks", "successful", None),
    ("BOTH-NULL", None, None, "error", "both occp_text and tasks_text are empty"),
    ("EMPTY", "", "", "error", "both occp_text and tasks_text are empty"),
    ("NEWLINE", "waiter", "serving tables\nand more", "error", "outside printable ASCII '\\n'"),
    ("TAB", "cook", "cooking\tcleaning", "error", "outside printable ASCII '\\t'"),
    ("QUOTES", 'chef\'s "head" cook', "cooking; DROP TABLE survey_responses;--", None, None),
    ("BACKSLASH", "plumber", "fixing pipes \\ drains", "successful", None),
    ("NON-ASCII", "caf\u00e9 manager", "running the caf\u00e9", "error", "outside printable ASCII '\u00e9'"),
    ("EMOJI", "barista \u2615", "making coffee", "error", "outside printable ASCII"),
    ("LONG", "truck driver", "driving " * 50, "error", "the service takes at most 300"),
    ("JSON", '{"recordId": "evil", "codeStatus": "successful"}', "[1, 2]", None, None),
]


def seed(conn: Any, placeholder: str, days: tuple[str, ...] = (DAY,), sample: int = 400) -> int:
    """Create survey_responses with the nasty rows and ``sample`` realistic ones per day."""
    cursor = conn.cursor()
    cursor.execute("DROP TABLE IF EXISTS survey_responses")
    cursor.execute("CREATE TABLE survey_responses (respondent_id TEXT, answered_on TEXT, occupation TEXT, duties TEXT)")
    rows = [(rid, DAY, occp, tasks) for rid, occp, tasks, _, _ in NASTY]
    for day in days:
        rows += [
            (f"{day}-{r.respondent_id}", day, r.occp_text, r.tasks_text)
            for r in survey_responses(sample, seed=hash(day) % 1000, messy=False)
        ]
    cursor.executemany(f"INSERT INTO survey_responses VALUES ({', '.join([placeholder] * 4)})", rows)
    conn.commit()
    return len(rows)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """Yield (kind, a function opening a DB-API connection) with the warehouse connection in the environment."""
    if request.param == "sqlite":
        path = tmp_path / "warehouse.db"
        os.environ["AIRFLOW_CONN_TEST_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": str(path)})
        yield "sqlite", lambda: sqlite3.connect(path)
    else:
        import psycopg

        with postgres_database() as fields:
            os.environ["AIRFLOW_CONN_TEST_WAREHOUSE"] = json.dumps(fields)
            dsn = f"host={fields['host']} port={fields['port']} user={fields['login']} dbname={fields['schema']}"
            yield "postgres", lambda: psycopg.connect(dsn)
    os.environ.pop("AIRFLOW_CONN_TEST_WAREHOUSE", None)


@pytest.mark.parametrize("columnar", ["0", "1"], ids=["dbapi", "arrow"])
def test_every_record_exactly_once_with_the_right_status(
    airflow_db: Path, tmp_path: Path, warehouse: tuple[str, Any], columnar: str
) -> None:
    kind, connect = warehouse
    with closing(connect()) as conn:
        total = seed(conn, "?" if kind == "sqlite" else "%s")
    with emulator() as server, batchcode_connection(server):
        chunk = 50  # each distinct text is sent once: fewer records than rows
        dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK=str(chunk), BATCHCODE_TEST_COLUMNAR=columnar)
        stats = admin(server, "stats")
        created, sent = stats["operations_created"]["demo-client"], stats["records_coded"]["batch"]
    assert dag_run.state == "success"
    rows = output(connect)
    assert len(rows) == total
    assert sorted(r[1] for r in rows) == list(range(1, total + 1)), "each position exactly once"
    assert created == -(-sent // chunk) >= 3, f"{sent} records sent in chunks of {chunk}"
    by_id: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_id.setdefault(row[0], []).append(row)
    assert len(by_id["DUP"]) == 2
    for rid, _, _, status, error in NASTY:
        for row in by_id[rid]:
            if status:
                assert row[2] == status, (rid, row)
            else:
                assert row[2] in ("successful", "unsuccessful"), (rid, row)
            if error:
                assert error in row[3], (rid, row)
    unsuccessful = [r for r in rows if r[2] == "unsuccessful"]
    assert all(1 <= len(json.loads(r[6])) <= 3 for r in unsuccessful)
    successful = [r for r in rows if r[2] == "successful"]
    assert len(successful) > 0.8 * total and {len(r[5]) for r in successful} >= {6, 4}


def test_sanitize_repairs_and_reports_per_record(airflow_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "warehouse.db"
    os.environ["AIRFLOW_CONN_TEST_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": str(path)})
    with closing(sqlite3.connect(path)) as conn:
        total = seed(conn, "?", sample=20)
    with emulator() as server, batchcode_connection(server):
        dag_run = run_pipeline(tmp_path, BATCHCODE_TEST_SANITIZE="1")
    assert dag_run.state == "success"
    rows = {r[0]: r for r in output(lambda: sqlite3.connect(path))}
    assert len(output(lambda: sqlite3.connect(path))) == total
    assert rows["NON-ASCII"][2] == "successful" and "transliterated to ASCII" in rows["NON-ASCII"][4]
    assert "folded whitespace" in rows["NEWLINE"][4] and rows["NEWLINE"][2] != "error"
    assert "truncated from" in rows["LONG"][4] and rows["LONG"][2] != "error"
    assert rows["BOTH-NULL"][2] == "error", "nothing to sanitise into"


def test_rerunning_the_same_run_replaces_its_rows(airflow_db: Path, tmp_path: Path) -> None:
    """dag.test() with the same run id re-creates the run (and with it the task state store),
    so the operations are made afresh here; re-attaching on retry is covered in test_operators_dag."""
    path = tmp_path / "warehouse.db"
    os.environ["AIRFLOW_CONN_TEST_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": str(path)})
    with closing(sqlite3.connect(path)) as conn:
        total = seed(conn, "?", sample=100)
    with emulator() as server, batchcode_connection(server):
        first = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK="60")
        before = output(lambda: sqlite3.connect(path))
        second = run_pipeline(tmp_path, BATCHCODE_TEST_CHUNK="60")
        after = output(lambda: sqlite3.connect(path))
    assert first.run_id == second.run_id and second.state == "success"
    assert len(before) == len(after) == total
    assert [r[:7] for r in after] == [r[:7] for r in before]


def test_a_backfill_over_three_days_selects_three_slices(airflow_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "warehouse.db"
    os.environ["AIRFLOW_CONN_TEST_WAREHOUSE"] = json.dumps({"conn_type": "sqlite", "host": str(path)})
    days = ("2026-01-02", "2026-01-03", "2026-01-04")
    with closing(sqlite3.connect(path)) as conn:
        seed(conn, "?", days=days, sample=30)
    with emulator() as server, batchcode_connection(server):
        runs = [run_pipeline(tmp_path, day) for day in days]
    assert [r.state for r in runs] == ["success"] * 3
    for day, dag_run in zip(days, runs, strict=True):
        rows = output(lambda: sqlite3.connect(path), dag_run.run_id)
        assert len(rows) == 30 and all(r[0].startswith(day) for r in rows), day
