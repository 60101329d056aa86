"""The load's fill of reused rows on a real PostgreSQL database, at a size where the query plan matters.

PostgreSQL never analyses a temporary table by itself. Without statistics it planned the fill's joins
over ``batchcode_reused`` as nested loops: 15.7 s at 20,000 rows and over ten minutes at 100,000.
The fill analyses the table after its ``COPY``; this test checks that the planner has the table's
size when the joins run, and that every reused row gets the right outcome.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from airflow_batchcode.dedupe import TextReuse
from airflow_batchcode.result_cache import REUSED_TABLE, CacheKey, ResultCache, RunFill
from airflow_batchcode.rows import Row
from airflow_batchcode.staging import read_reused
from airflow_batchcode.summary import RunSummary
from airflow_batchcode.warehouse import TABLE_COLUMNS, prepare_table
from tests.support import postgres_database
from tests.unit.test_dedupe import fill_a_mixed_run

KEY = CacheKey("abs", "anzsco", "model-1")
DISTINCT = 20_000
"""Distinct texts in the run; each appears twice, so the fill joins 20,000 duplicates to their first rows."""


def _primary_row(position: int) -> tuple[Any, ...]:
    row = Row(
        *(f"r{position}", position, "successful", f"{position % 900_000 + 100_000}", None, 0.9),
        *(None, None, f"job {position}", "", None, "anzsco", "model-1"),
        *("op-1", 1, "abs", None, None, None, "batch", None),
    )
    return (*row, "dag", "run", "2026-01-01 00:00:00")


@contextmanager
def output_database() -> Iterator[tuple[Any, Any]]:
    """A connection and cursor to a fresh PostgreSQL database holding an empty output table ``out``."""
    with (
        postgres_database() as fields,
        psycopg.connect(
            host=fields["host"], port=fields["port"], user=fields["login"], dbname=fields["schema"]
        ) as conn,
    ):
        cursor = conn.cursor()
        prepare_table(cursor, "out")
        cursor.execute("CREATE INDEX ix_out_pos ON out (dag_id, dag_run_id, position)")
        yield conn, cursor


def test_the_fill_plans_its_joins_with_the_reused_table_analysed() -> None:
    with output_database() as (conn, cursor):
        cache = ResultCache(conn, "out_cache", KEY)
        with cursor.copy(f"COPY out ({', '.join(TABLE_COLUMNS)}) FROM STDIN") as stream:
            for position in range(1, DISTINCT + 1):
                stream.write_row(_primary_row(position))
        total = 2 * DISTINCT
        positions = range(1, total + 1)
        texts = [f"job {(p - 1) % DISTINCT + 1}" for p in positions]
        sink = io.BytesIO()
        TextReuse(sink, dedupe=True, cache=cache, list_sent=True).select(
            ([f"r{p}" for p in positions], texts, [""] * total, positions, {})
        )
        summary = RunSummary()
        filler = RunFill(conn, cursor, "out", "out_cache", KEY, "dag", "run", "2026-01-01 00:00:00")

        assert filler.run(read_reused(sink.getvalue().splitlines()), summary) == DISTINCT

        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", (REUSED_TABLE,))
        assert cursor.fetchone() == (total,), "the planner must know the reused table's size (ANALYZE after COPY)"
        cursor.execute(
            "SELECT COUNT(*) FROM out d JOIN out f ON f.occp_text = d.occp_text AND f.position <= %s "
            "WHERE d.position > %s AND d.code_category = f.code_category AND d.record_id = 'r' || d.position",
            (DISTINCT, DISTINCT),
        )
        assert cursor.fetchone() == (DISTINCT,), "each duplicate keeps its own record id and its first row's code"
        cursor.execute("SELECT COUNT(*) FROM out_cache")
        assert cursor.fetchone() == (DISTINCT,), "every sent outcome is cached once"
        assert summary.by_status == {"successful": DISTINCT}


def test_the_filled_rows_are_counted_as_counting_them_one_by_one_would() -> None:
    """As the SQLite test of the same name (``tests/unit/test_dedupe.py``), on PostgreSQL."""
    with output_database() as (conn, cursor):
        filled, aggregated, one_by_one = fill_a_mixed_run(conn, cursor, "%s")
    assert filled == one_by_one.total == 51
    assert aggregated.to_dict() == one_by_one.to_dict()
