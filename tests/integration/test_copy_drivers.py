"""Both psycopg drivers load the output table alike: ``COPY`` of Python rows as text and of Arrow batches as CSV.

The Airflow PostgreSQL hook hands out psycopg 3 connections under SQLAlchemy 2 and psycopg2 ones
elsewhere; the loader has a branch for each (real PostgreSQL, rows with the texts ``COPY`` and CSV
treat specially).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from typing import Any

import pytest

from airflow_batchcode.columnar.load import csv_blocks, row_batches
from airflow_batchcode.warehouse import TABLE_COLUMNS, _copy_csv, _copy_loader, prepare_table
from tests.integration.test_columnar_load import _rows
from tests.support import postgres_database

LOADED_AT = datetime(2026, 12, 6, 21, 0, 0, 123456)


def _connectors(fields: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    import psycopg
    import psycopg2

    dsn = f"host={fields['host']} port={fields['port']} user={fields['login']} dbname={fields['schema']}"
    return {"psycopg": lambda: psycopg.connect(dsn), "psycopg2": lambda: psycopg2.connect(dsn)}


def _load(connect: Callable[[], Any], table: str, how: str, count: int) -> int:
    rows = _rows(count)
    with closing(connect()) as conn:
        cursor = conn.cursor()
        prepare_table(cursor, table)
        if how == "text":
            loader = _copy_loader(conn, cursor, table)
            assert loader is not None
            loaded = loader((*row, "d", "r", LOADED_AT) for row in rows)
        else:
            loaded = _copy_csv(conn, cursor, table, csv_blocks(row_batches(rows), "d", "r", LOADED_AT))
        conn.commit()
    return loaded


@pytest.mark.postgres
def test_both_drivers_copy_rows_and_arrow_batches_to_the_same_table_contents() -> None:
    count = 25_000  # three record batches, two of them full
    with postgres_database() as fields:
        connectors = _connectors(fields)
        tables = {}
        for driver, connect in connectors.items():
            for how in ("text", "csv"):
                table = f"out_{driver}_{how}"
                assert _load(connect, table, how, count) == count
                with closing(connect()) as conn:
                    cursor = conn.cursor()
                    cursor.execute(f"SELECT {', '.join(TABLE_COLUMNS)} FROM {table} ORDER BY position")
                    tables[table] = cursor.fetchall()
    first, *others = tables.values()
    assert len(first) == count
    assert all(other == first for other in others)
    assert {row[-1] for row in first} == {LOADED_AT}
