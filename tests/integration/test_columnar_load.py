"""Arrow record batches load the output table as the DB-API loader does (real SQLite and PostgreSQL).

SQLite through ADBC ingest and a staging table, PostgreSQL through CSV ``COPY`` (texts that CSV
and ``COPY`` treat specially among the values). Same values and types, the run's earlier rows replaced, other runs' rows kept, reviewers'
decisions re-applied, and nothing changed when the rows fail part way; no staging table is left.
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

from airflow_batchcode.columnar.load import (
    STAGING_PREFIX,
    ingest_run_rows,
    row_batches,
    stage,
    staging_table,
)
from airflow_batchcode.rows import Row
from airflow_batchcode.ui.reviews import Decision, record_decision
from airflow_batchcode.ui.store import Database
from airflow_batchcode.warehouse import TABLE_COLUMNS, replace_run_rows
from tests.support import postgres_database

NASTY = ['quote "', "back\\slash", "tab\tnew\nline\r", "caf\u00e9 \u2615", "", "\\N", "NULL", "\\.\n\\.", "a,b", '""']


def _rows(count: int, run: int = 0) -> list[Row]:
    rows = []
    for i in range(1, count + 1):
        text = NASTY[i % len(NASTY)]
        coded = i % 3 != 0
        rows.append(
            Row(
                *(None if i % 5 == 0 else f"r{run}-{i}", i, "successful" if coded else "error"),
                *(("1234", "Cook", 0.25 * (i % 4)) if coded else (None, None, None)),
                *(None, None if coded else f"bad {text}", text, f"duties {text}", None if i % 2 else "sanitized"),
                *("topic", "model", "op-1", i // 100 + 1, "abs", None, 1 / i if i % 7 == 0 else None, '{"k": 1}'),
            )
        )
    return rows


@pytest.fixture(params=["sqlite", "postgres"])
def output_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A DB-API connection opener, with the connection ``test_columnar_out`` in the environment."""
    if request.param == "sqlite":
        path = tmp_path / "out.db"
        os.environ["AIRFLOW_CONN_TEST_COLUMNAR_OUT"] = json.dumps({"conn_type": "sqlite", "host": str(path)})
        yield lambda: sqlite3.connect(path)
    else:
        import psycopg

        with postgres_database() as fields:
            os.environ["AIRFLOW_CONN_TEST_COLUMNAR_OUT"] = json.dumps(fields)
            dsn = f"host={fields['host']} port={fields['port']} user={fields['login']} dbname={fields['schema']}"
            yield lambda: psycopg.connect(dsn)
    os.environ.pop("AIRFLOW_CONN_TEST_COLUMNAR_OUT", None)


def _table(connect: Any, table: str) -> list[tuple[Any, ...]]:
    names = ", ".join(name for name in TABLE_COLUMNS if name != "loaded_at")
    with closing(connect()) as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT {names}, loaded_at FROM {table} ORDER BY dag_run_id, position")
        return [(*row[:-1], type(row[-1]).__name__) for row in cursor.fetchall()]


def test_ingest_loads_what_the_db_api_loader_loads(output_db: Any) -> None:
    conn_id = "test_columnar_out"
    for table, load in (("out_adbc", ingest_run_rows), ("out_dbapi", replace_run_rows)):
        assert load(conn_id, table, _rows(120_000, 1), dag_id="d", run_id="other") == 120_000
        assert load(conn_id, table, _rows(300), dag_id="d", run_id="r") == 300
        assert load(conn_id, table, _rows(250, 2), dag_id="d", run_id="r") == 250  # a re-run replaces
    ingested, inserted = _table(output_db, "out_adbc"), _table(output_db, "out_dbapi")
    assert len(ingested) == 120_250
    assert ingested == inserted


def test_a_failure_part_way_changes_nothing(output_db: Any) -> None:
    conn_id = "test_columnar_out"
    ingest_run_rows(conn_id, "out", _rows(10), dag_id="d", run_id="r")
    before = _table(output_db, "out")

    def failing() -> Iterator[Row]:
        yield from _rows(60_000, 3)
        raise RuntimeError("the results ran out")

    with pytest.raises(RuntimeError):
        ingest_run_rows(conn_id, "out", failing(), dag_id="d", run_id="r")
    assert _table(output_db, "out") == before


def _staging_tables(connect: Any) -> list[str]:
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if "sqlite" in type(connect()).__module__
        else "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    )
    with closing(connect()) as conn:
        cursor = conn.cursor()
        cursor.execute(query)
        return [name for (name,) in cursor.fetchall() if name.startswith(STAGING_PREFIX)]


def test_a_reload_through_ingest_keeps_the_reviewers_decisions(output_db: Any) -> None:
    conn_id = "test_columnar_out"
    ingest_run_rows(conn_id, "out", _rows(30), dag_id="d", run_id="r")
    error_row = next(row for row in _rows(30) if row.code_status == "error" and row.record_id)
    with closing(output_db()) as conn:
        decision = Decision("d", "r", error_row.position, error_row.record_id, "2613", "reviewer")
        record_decision(Database(conn), "out", decision)
    assert ingest_run_rows(conn_id, "out", _rows(30), dag_id="d", run_id="r") == 30  # the night is loaded again
    with closing(output_db()) as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT code_category FROM out WHERE position = {error_row.position}")
        assert cursor.fetchall() == [("2613",)]
    assert _staging_tables(output_db) == []


def test_a_staging_table_left_by_a_killed_attempt_is_replaced(output_db: Any) -> None:
    if "sqlite" not in type(output_db()).__module__:
        pytest.skip("PostgreSQL's rows go by CSV COPY inside the replacing transaction: nothing is staged")
    conn_id = "test_columnar_out"
    # killed between staging its rows and moving them: the staging table stays, the output has nothing
    staged = stage(conn_id, staging_table("out", "d", "r"), row_batches(_rows(20)), dag_id="d", run_id="r")
    assert _staging_tables(output_db) == [staged.table]
    assert ingest_run_rows(conn_id, "out", _rows(40), dag_id="d", run_id="r") == 40
    assert len(_table(output_db, "out")) == 40
    assert _staging_tables(output_db) == []


def test_rows_interrupted_part_way_raise_their_own_error_and_stage_nothing(output_db: Any) -> None:
    def interrupted() -> Iterator[Row]:
        yield from _rows(20)
        raise KeyboardInterrupt  # as a task told to stop unwinds

    with pytest.raises(KeyboardInterrupt):
        ingest_run_rows("test_columnar_out", "out", interrupted(), dag_id="d", run_id="r")
    assert _staging_tables(output_db) == []


def test_a_failure_inside_the_replacing_transaction_changes_nothing_and_drops_the_staged_rows(
    output_db: Any,
) -> None:
    conn_id = "test_columnar_out"
    ingest_run_rows(conn_id, "out", _rows(10), dag_id="d", run_id="r")
    before = _table(output_db, "out")

    def after(conn: Any, cursor: Any, loaded_at: Any) -> int:
        raise RuntimeError("the reused rows are missing")

    with pytest.raises(RuntimeError, match="reused rows"):
        ingest_run_rows(conn_id, "out", _rows(50, 4), dag_id="d", run_id="r", after=after)
    assert _table(output_db, "out") == before
    assert _staging_tables(output_db) == []


def test_the_rows_the_loads_joins_fill_are_counted_through_ingest(output_db: Any) -> None:
    conn_id = "test_columnar_out"

    def after(conn: Any, cursor: Any, loaded_at: Any) -> int:
        names = ", ".join(TABLE_COLUMNS)
        cursor.execute(
            f"INSERT INTO out ({names}) SELECT {names.replace('position', 'position + 1000')} FROM out "
            "WHERE dag_run_id = 'r'"
        )
        return 5

    assert ingest_run_rows(conn_id, "out", _rows(5), dag_id="d", run_id="r", after=after) == 10
    assert len(_table(output_db, "out")) == 10


@pytest.mark.parametrize("reorder", [None, "seed-1"], ids=["in-order", "reordered"])
def test_downloaded_abs_chunks_load_the_same_rows_and_counts_through_arrow(
    output_db: Any, tmp_path: Path, reorder: str | None
) -> None:
    """The load task's two paths over emulator output: ``chunk_batches`` + ``ingest_run_batches`` against
    ``chunk_results`` + ``replace_run_rows`` (the same rows in the table, the same run summary)."""
    import threading

    from airflow_batchcode.chunks import Chunk
    from airflow_batchcode.columnar.load import ingest_run_batches
    from airflow_batchcode.emulator.coding_model import load_models
    from airflow_batchcode.emulator.processing import code_file, reorder_lines
    from airflow_batchcode.results import chunk_batches, chunk_results, columnar_load
    from airflow_batchcode.sample_data import survey_responses
    from airflow_batchcode.staging import METADATA_FILE, OPERATION_FILE
    from airflow_batchcode.summary import RunSummary

    assert columnar_load("abs", "test_columnar_out")
    model = load_models()["anzsco"][-1]
    chunks = []
    for index in (1, 2):
        folder = tmp_path / f"chunk-{index}"
        folder.mkdir()
        answers = list(survey_responses(3_000, seed=index))
        manifest, positions = folder / "manifest.jsonl", folder / "chunk.positions"
        manifest.write_text(
            "".join(
                json.dumps({"recordId": a.respondent_id, "occp_text": a.occp_text, "tasks_text": a.tasks_text}) + "\n"
                for a in answers
            )
        )
        positions.write_text("".join(f"{index * 10_000 + i}\t{'n' if i % 9 == 0 else ''}\n" for i in range(3_000)))
        code_file(manifest, folder / "output.jsonl", model, threading.Event())
        if reorder is not None:
            reorder_lines(folder / "output.jsonl", reorder)
        (folder / METADATA_FILE).write_text("{}")
        operation = {
            "service": "abs",
            "operation_id": f"op-{index}",
            "topic": "anzsco",
            "model": "m",
            "output": "output.jsonl",
        }
        (folder / OPERATION_FILE).write_text(json.dumps(operation))
        chunks.append(
            Chunk(
                index=index,
                manifest=str(manifest),
                positions=str(positions),
                results=str(folder),
                records=3_000,
                bytes=0,
            )
        )

    by_rows, by_batches = RunSummary(), RunSummary()
    rows = (row for chunk in chunks for row in chunk_results(chunk, "anzsco", by_rows))
    batches = (batch for chunk in chunks for batch in chunk_batches(chunk, "anzsco", by_batches))
    assert replace_run_rows("test_columnar_out", "out_rows", rows, dag_id="d", run_id="r") == 6_000
    assert ingest_run_batches("test_columnar_out", "out_arrow", batches, dag_id="d", run_id="r") == 6_000
    assert _table(output_db, "out_arrow") == _table(output_db, "out_rows")
    assert by_batches.to_dict() == by_rows.to_dict()
    assert by_rows.operation_ids == by_batches.operation_ids == ["op-1", "op-2"]


KILLED_LOAD = """
import time
from airflow_batchcode.columnar.load import ingest_run_batches, row_batches
from tests.integration.test_columnar_load import _rows

def batches():
    for index, batch in enumerate(row_batches(_rows(60_000, 3))):
        yield batch
        if index == 2:  # three batches sent or staged, the transaction open
            print("mid-load", flush=True)
            time.sleep(120)

ingest_run_batches("test_columnar_out", "out", batches(), dag_id="d", run_id="r")
"""


def test_a_load_killed_mid_write_changes_nothing_and_the_next_load_is_whole(output_db: Any) -> None:
    """SIGKILL part way through the bulk write (CSV ``COPY`` on PostgreSQL, staging on SQLite): the output
    table keeps the run's earlier rows, and the retried load replaces them whole."""
    import signal
    import subprocess
    import sys

    conn_id = "test_columnar_out"
    ingest_run_rows(conn_id, "out", _rows(10), dag_id="d", run_id="r")
    before = _table(output_db, "out")
    root = Path(__file__).resolve().parents[2]
    with subprocess.Popen(
        [sys.executable, "-c", KILLED_LOAD], cwd=root, stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    ) as load:
        assert load.stdout is not None
        assert load.stdout.readline().strip() == "mid-load"
        load.send_signal(signal.SIGKILL)
        load.wait(30)
    assert load.returncode == -signal.SIGKILL
    assert _table(output_db, "out") == before
    assert ingest_run_rows(conn_id, "out", _rows(60_000, 3), dag_id="d", run_id="r") == 60_000
    after = _table(output_db, "out")
    assert len(after) == 60_000 and {row[TABLE_COLUMNS.index("dag_run_id")] for row in after} == {"r"}
    assert _staging_tables(output_db) == []
