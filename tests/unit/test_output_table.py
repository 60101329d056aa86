"""The output table's DDL: one index serves a run's rows and the review queue."""

from __future__ import annotations

import sqlite3

from airflow_batchcode.ui.reviews import review_ddl
from airflow_batchcode.warehouse import create_table_sql


def indexes(conn: sqlite3.Connection, table: str) -> dict[str, list[str]]:
    names = [row[1] for row in conn.execute(f"PRAGMA index_list({table})")]
    return {name: [row[2] for row in conn.execute(f"PRAGMA index_info({name})")] for name in names}


def test_a_new_output_table_has_one_index_for_runs_and_the_review_queue() -> None:
    conn = sqlite3.connect(":memory:")
    for statement in (*create_table_sql("coded"), *review_ddl("coded")):
        conn.execute(statement)
    assert indexes(conn, "coded") == {"ix_coded_queue": ["dag_id", "dag_run_id", "position"]}


def test_a_table_made_by_an_earlier_version_gets_the_queue_index_and_keeps_its_own() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(create_table_sql("coded")[0])
    conn.execute("CREATE INDEX ix_coded_run ON coded (dag_id, dag_run_id)")  # what earlier versions made
    for statement in (*create_table_sql("coded"), *review_ddl("coded")):
        conn.execute(statement)
    assert indexes(conn, "coded") == {
        "ix_coded_queue": ["dag_id", "dag_run_id", "position"],
        "ix_coded_run": ["dag_id", "dag_run_id"],
    }
